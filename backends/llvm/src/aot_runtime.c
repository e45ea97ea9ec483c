/*
 * The runtime of a terafab ahead-of-time build (backends/llvm/src/aot.rs writes it out after a
 * generated prelude that defines TF_PREFIX, the buffer tables and the symbols of the generated
 * code). It implements the C interface of the generated header:
 *
 *   PREFIX_model *PREFIX_create(int num_threads);
 *   int PREFIX_run(PREFIX_model *m, const void *const *inputs, void *const *outputs);
 *   void PREFIX_destroy(PREFIX_model *m);
 *
 * A model owns its arena (the memory plan's peak), its packed weights, a scratch region for
 * the activation operands its GEMMs pack on every run, and a pool of worker
 * threads; the caller's thread takes part in every parallel loop. A model runs one call at a
 * time (PREFIX_run is not reentrant on one model; separate models are independent).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TF_CAT2(a, b) a##b
#define TF_CAT(a, b) TF_CAT2(a, b)
#define TF_NAME(x) TF_CAT(TF_PREFIX, x)

typedef void (*tf_task_fn)(void **bufs, int64_t task);

struct tf_rt {
    void (*parallel_for)(void *pool, tf_task_fn fn, void **bufs, int64_t ntasks);
    void *pool;
    int (*call)(void *ctx, int64_t kernel, void **bufs);
    void *call_ctx;
};

struct tf_pool {
    pthread_mutex_t mu;
    pthread_cond_t work;
    pthread_cond_t done;
    pthread_t *threads;
    int nthreads; /* workers, besides the caller */
    int stop;
    uint64_t generation;
    /* the current job */
    tf_task_fn fn;
    void **bufs;
    int64_t ntasks;
    int64_t next;     /* next task to take, under mu */
    int64_t finished; /* tasks done, under mu */
};

/* Take and run tasks of the current job until none is left. Called with mu held; returns
 * with mu held. */
static void tf_drain(struct tf_pool *p) {
    while (p->next < p->ntasks) {
        int64_t t = p->next++;
        tf_task_fn fn = p->fn;
        void **bufs = p->bufs;
        pthread_mutex_unlock(&p->mu);
        fn(bufs, t);
        pthread_mutex_lock(&p->mu);
        if (++p->finished == p->ntasks)
            pthread_cond_broadcast(&p->done);
    }
}

static void *tf_worker(void *arg) {
    struct tf_pool *p = arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        tf_drain(p);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static void tf_parallel_for(void *pool, tf_task_fn fn, void **bufs, int64_t ntasks) {
    struct tf_pool *p = pool;
    if (ntasks <= 1 || p->nthreads == 0) {
        for (int64_t t = 0; t < ntasks; t++)
            fn(bufs, t);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->bufs = bufs;
    p->ntasks = ntasks;
    p->next = 0;
    p->finished = 0;
    p->generation++;
    pthread_cond_broadcast(&p->work);
    tf_drain(p);
    while (p->finished < p->ntasks)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static int tf_no_call(void *ctx, int64_t kernel, void **bufs) {
    (void)ctx;
    (void)kernel;
    (void)bufs;
    return 1;
}

struct TF_NAME(_model) {
    void **bufs;
    unsigned char *arena;
    unsigned char *packed;
    unsigned char *scratch;
    struct tf_pool pool;
    struct tf_rt rt;
};

static void *tf_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        return NULL;
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

static void tf_stop_pool(struct tf_pool *p, int started) {
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < started; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
}

void TF_NAME(_destroy)(struct TF_NAME(_model) *m) {
    if (!m)
        return;
    tf_stop_pool(&m->pool, m->pool.nthreads);
    free(m->bufs);
    free(m->arena);
    free(m->packed);
    free(m->scratch);
    free(m);
}

struct TF_NAME(_model) *TF_NAME(_create)(int num_threads) {
    struct TF_NAME(_model) *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (num_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        num_threads = n > 0 ? (int)n : 1;
    }
    m->bufs = calloc(TF_NUM_SLOTS ? TF_NUM_SLOTS : 1, sizeof(void *));
    m->arena = tf_alloc(TF_ARENA_BYTES);
    m->packed = tf_alloc(TF_PACKED_BYTES);
    m->scratch = tf_alloc(TF_SCRATCH_BYTES);
    struct tf_pool *p = &m->pool;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)num_threads, sizeof(pthread_t));
    if (!m->bufs || !m->arena || !m->packed || !m->scratch || !p->threads) {
        TF_NAME(_destroy)(m);
        return NULL;
    }
    for (int i = 0; i < num_threads - 1; i++) {
        if (pthread_create(&p->threads[i], NULL, tf_worker, p) != 0)
            break;
        p->nthreads++;
    }
    for (int64_t s = 0; s < TF_NUM_SLOTS; s++) {
        switch (tf_kind[s]) {
        case TF_CONST:
            m->bufs[s] = (void *)(TF_WEIGHTS + tf_where[s]);
            break;
        case TF_TEMP:
            m->bufs[s] = m->arena + tf_where[s];
            break;
        case TF_PACKED:
            m->bufs[s] = m->packed + tf_where[s];
            break;
        case TF_SCRATCH:
            m->bufs[s] = m->scratch + tf_where[s];
            break;
        default:
            break;
        }
    }
    m->rt.parallel_for = tf_parallel_for;
    m->rt.pool = p;
    m->rt.call = tf_no_call;
    m->rt.call_ctx = NULL;
    TF_INIT(m->bufs, &m->rt);
    return m;
}

int TF_NAME(_run)(struct TF_NAME(_model) *m, const void *const *inputs, void *const *outputs) {
    if (!m || (TF_NUM_INPUTS && !inputs) || (TF_NUM_OUTPUTS && !outputs))
        return -1;
    for (int64_t s = 0; s < TF_NUM_SLOTS; s++)
        if (tf_kind[s] == TF_INPUT)
            m->bufs[s] = (void *)inputs[tf_where[s]];
    int rc = TF_RUN(m->bufs, &m->rt);
    if (rc != 0)
        return rc;
    for (int i = 0; i < TF_NUM_OUTPUTS; i++)
        if (tf_output_bytes[i])
            memcpy(outputs[i], m->bufs[tf_output_slot[i]], (size_t)tf_output_bytes[i]);
    return 0;
}
