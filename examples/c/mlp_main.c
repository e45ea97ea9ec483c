/*
 * Runs the bundled MLP (examples/mlp.onnx) compiled ahead of time by terafab, from C:
 *
 *   terafab compile examples/mlp.onnx --dim batch=4 -o mlp.so     # writes mlp.so and mlp.h
 *   cc -I. examples/c/mlp_main.c mlp.so -Wl,-rpath,'$ORIGIN' -o mlp_main
 *   ./mlp_main examples/x.npy examples/mlp_expected_probs.npy [THREADS]
 *
 * (or link the object: `terafab compile ... -o mlp.o` and `cc ... mlp.o -lm -lpthread`).
 * It reads the input and the expected output from .npy files (little-endian f32, C order),
 * runs the model twice (the second run reuses the arena), and compares with the expected
 * probabilities: exit code 0 and "ok" when every element is within 1e-5 + 1e-4 * |expected|.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"

/* The f32 data of a version 1 or 2 .npy file, exactly `bytes` long; NULL on error. */
static float *read_npy_f32(const char *path, size_t bytes) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return NULL;
    }
    unsigned char pre[12];
    float *data = NULL;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        fprintf(stderr, "%s: not a .npy file\n", path);
        goto out;
    }
    size_t hlen = pre[8] | (size_t)pre[9] << 8;
    if (pre[6] >= 2) { /* version 2: a 4-byte header length */
        if (fread(pre + 10, 1, 2, f) != 2)
            goto out;
        hlen |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
    }
    char *header = malloc(hlen + 1);
    if (!header || fread(header, 1, hlen, f) != hlen) {
        free(header);
        goto out;
    }
    header[hlen] = 0;
    if (!strstr(header, "'<f4'") || strstr(header, "'fortran_order': True")) {
        fprintf(stderr, "%s: expected little-endian f32 in C order: %s\n", path, header);
        free(header);
        goto out;
    }
    free(header);
    data = malloc(bytes);
    if (data && fread(data, 1, bytes, f) != bytes) {
        fprintf(stderr, "%s: expected %zu bytes of data\n", path, bytes);
        free(data);
        data = NULL;
    }
out:
    fclose(f);
    return data;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s X.npy EXPECTED.npy [THREADS]\n", argv[0]);
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    float *x = read_npy_f32(argv[1], MLP_INPUT0_BYTES);
    float *want = read_npy_f32(argv[2], MLP_OUTPUT0_BYTES);
    float *got = malloc(MLP_OUTPUT0_BYTES);
    if (!x || !want || !got)
        return 1;
    mlp_model *m = mlp_create(threads);
    if (!m) {
        fprintf(stderr, "mlp_create failed\n");
        return 1;
    }
    const void *inputs[MLP_NUM_INPUTS] = {x};
    void *outputs[MLP_NUM_OUTPUTS] = {got};
    double worst = 0;
    for (int run = 0; run < 2; run++) {
        memset(got, 0, MLP_OUTPUT0_BYTES);
        int rc = mlp_run(m, inputs, outputs);
        if (rc != 0) {
            fprintf(stderr, "mlp_run failed: %d\n", rc);
            return 1;
        }
        for (size_t i = 0; i < MLP_OUTPUT0_BYTES / sizeof(float); i++) {
            double err = fabs((double)got[i] - want[i]);
            if (!(err <= 1e-5 + 1e-4 * fabs(want[i]))) {
                fprintf(stderr, "run %d: element %zu is %g, expected %g\n", run, i, got[i], want[i]);
                return 1;
            }
            if (err > worst)
                worst = err;
        }
    }
    mlp_destroy(m);
    printf("ok: %zu outputs match, max abs error %.3g\n", MLP_OUTPUT0_BYTES / sizeof(float), worst);
    free(x);
    free(want);
    free(got);
    return 0;
}
