//! End-to-end tests of the LLVM backend through the `terafab` binary: `run` (the default
//! backend) against the interpreter, `compile` to a shared library and to an object file that
//! the C example (examples/c/mlp_main.c) links and runs with the system C compiler, `--emit`,
//! and `bench --backend llvm --json`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{arg, repo, scratch, stderr, success, terafab, user_error};

fn example(name: &str) -> String {
    arg(&repo().join("examples").join(name))
}

/// The outputs printed by `run` (the `output ...` lines).
fn outputs(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("output ")).collect()
}

#[test]
fn llvm_is_the_default_and_agrees_with_the_interpreter() {
    let x = format!("x={}", example("x.npy"));
    let default = success(&terafab(&["run", &example("mlp.onnx"), "--input", &x]));
    let llvm1 = success(&terafab(&[
        "run",
        &example("mlp.onnx"),
        "--input",
        &x,
        "--backend",
        "llvm",
        "--threads",
        "1",
    ]));
    let interp = success(&terafab(&[
        "run",
        &example("mlp.onnx"),
        "--input",
        &x,
        "--backend",
        "interp",
    ]));
    // The summaries (4 significant digits) agree.
    assert_eq!(outputs(&default), outputs(&interp));
    assert_eq!(outputs(&llvm1), outputs(&interp));
}

/// Compile the MLP with `-o out`, build the C example against it, run it on the bundled input
/// and expected output.
fn build_and_run_c_example(dir: &Path, out: &str, link: &[&str], threads: &str) {
    let lib = dir.join(out);
    let text = success(&terafab(&[
        "compile",
        &example("mlp.onnx"),
        "--dim",
        "batch=4",
        "-o",
        &arg(&lib),
        "--name",
        "mlp",
    ]));
    assert!(text.contains("wrote"), "{text}");
    let header = std::fs::read_to_string(dir.join("mlp.h")).unwrap();
    assert!(
        header.contains("mlp_model *mlp_create(int num_threads);"),
        "{header}"
    );
    assert!(header.contains("#define MLP_INPUT0_BYTES 256"), "{header}");
    let exe = dir.join("mlp_main");
    let cc = terafab_llvm::aot::c_compiler();
    let mut args = vec![
        format!("-I{}", arg(dir)),
        arg(&repo().join("examples/c/mlp_main.c")),
        arg(&lib),
        "-o".into(),
        arg(&exe),
    ];
    args.extend(link.iter().map(|s| s.to_string()));
    let built = Command::new(&cc).args(&args).output().expect("cc runs");
    assert!(built.status.success(), "{}", stderr(&built));
    let run = Command::new(&exe)
        .args([
            &example("x.npy"),
            &example("mlp_expected_probs.npy"),
            threads,
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        common::stdout(&run),
        stderr(&run)
    );
    assert!(common::stdout(&run).starts_with("ok: 40 outputs match"));
}

#[test]
fn compiles_a_shared_library_that_the_c_example_runs() {
    let dir = scratch("aot_so");
    let rpath = format!("-Wl,-rpath,{}", arg(&dir));
    build_and_run_c_example(&dir, "mlp.so", &[&rpath], "2");
}

#[test]
fn compiles_an_object_file_that_the_c_example_links() {
    let dir = scratch("aot_o");
    build_and_run_c_example(&dir, "mlp.o", &["-lm", "-lpthread"], "1");
}

#[test]
fn emits_kernels_llvm_ir_and_assembly() {
    let model = example("mlp.onnx");
    let emit = |form: &str| {
        success(&terafab(&[
            "compile",
            &model,
            "--dim",
            "batch=4",
            "--emit",
            form,
            "--cpu",
            "x86-64-v3",
        ]))
    };
    assert!(emit("kernels").contains("kernels @main"));
    let ir = emit("llvm");
    assert!(
        ir.contains("define i32 @tf_run(ptr %bufs, ptr %rt)"),
        "{ir}"
    );
    assert!(ir.contains("\"target-cpu\"=\"x86-64-v3\""));
    let opt = emit("llvm-opt");
    assert!(opt.contains("<8 x float>"), "optimized IR is vectorized");
    let asm = emit("asm");
    assert!(asm.contains("tf_run:") && asm.contains("ymm"), "AVX2 code");
}

#[test]
fn compile_errors_are_reported() {
    let dir = scratch("aot_errors");
    let model = example("mlp.onnx");
    // A symbolic dim without a value.
    let err = user_error(&terafab(&[
        "compile",
        &model,
        "-o",
        &arg(&dir.join("m.so")),
    ]));
    assert!(err.contains("batch"), "{err}");
    // Neither an output nor a text form.
    let err = user_error(&terafab(&["compile", &model, "--dim", "batch=4"]));
    assert!(err.contains("-o"), "{err}");
    // An output that is neither a library nor an object.
    let err = user_error(&terafab(&[
        "compile",
        &model,
        "--dim",
        "batch=4",
        "-o",
        &arg(&dir.join("m.exe")),
    ]));
    assert!(err.contains(".so"), "{err}");
}

#[test]
fn bench_reports_compile_time_and_latency_as_json() {
    let text = success(&terafab(&[
        "bench",
        &example("mlp.onnx"),
        "--dim",
        "batch=4",
        "--backend",
        "llvm",
        "--threads",
        "2",
        "--iters",
        "3",
        "--json",
    ]));
    let last = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(v["backend"], "llvm");
    assert_eq!(v["threads"], 2);
    assert_eq!(v["iters"], 3);
    for key in ["compile_ms", "median_ms", "min_ms", "max_ms"] {
        assert!(v[key].as_f64().is_some_and(|x| x >= 0.0), "{key}: {last}");
    }
    assert!(text.contains("median ms"), "{text}");
}

/// A model that takes the GEMM schedule (constant weights packed in `create`, activations
/// packed into the scratch region on every run), built as a shared library and run from C on
/// 2 threads, against the reference interpreter.
#[test]
fn aot_gemm_model_matches_the_interpreter() {
    use terafab_ir::Tensor;
    let dir = scratch("aot_gemm");
    let vals = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    };
    let dense = |shape: &str, v: &[f32]| {
        let s: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        format!("dense<f32[{shape}]>[{}]", s.join(", "))
    };
    let src = format!(
        "func @main(%x: f32[20,64]) -> (y: f32[20,24]) {{
  %w1 = constant() {{value={}}} : f32[64,48]
  %h = dot_general(%x, %w1) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : f32[20,48]
  %zero = constant() {{value=dense<f32[]>[0.0]}} : f32[]
  %r = max(%h, %zero) : f32[20,48]
  %w2 = constant() {{value={}}} : f32[24,48]
  %y = dot_general(%r, %w2) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[1]}} : f32[20,24]
  return %y
}}
",
        dense("64,48", &vals(64 * 48, 1)),
        dense("24,48", &vals(24 * 48, 2))
    );
    let model = dir.join("m.tfir");
    std::fs::write(&model, &src).unwrap();
    let lib = dir.join("m.so");
    success(&terafab(&["compile", &arg(&model), "-o", &arg(&lib)]));
    let harness = dir.join("h.c");
    std::fs::write(
        &harness,
        r#"#include <stdio.h>
#include "m.h"
int main(int argc, char **argv) {
    static float x[M_INPUT0_BYTES / 4], y[M_OUTPUT0_BYTES / 4];
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(x, 1, sizeof x, f) != sizeof x) return 2;
    fclose(f);
    m_model *m = m_create(2);
    const void *in[1] = {x};
    void *out[1] = {y};
    if (!m || m_run(m, in, out) != 0) return 3;
    m_destroy(m);
    f = fopen(argv[2], "wb");
    if (!f || fwrite(y, 1, sizeof y, f) != sizeof y) return 4;
    fclose(f);
    return 0;
}
"#,
    )
    .unwrap();
    let exe = dir.join("h");
    let built = Command::new(terafab_llvm::aot::c_compiler())
        .args([
            format!("-I{}", arg(&dir)),
            arg(&harness),
            arg(&lib),
            format!("-Wl,-rpath,{}", arg(&dir)),
            "-o".into(),
            arg(&exe),
        ])
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let x = vals(20 * 64, 3);
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("x.bin"), xb).unwrap();
    let run = Command::new(&exe)
        .args([arg(&dir.join("x.bin")), arg(&dir.join("y.bin"))])
        .output()
        .unwrap();
    assert!(run.status.success(), "exit {:?}", run.status.code());
    let yb = std::fs::read(dir.join("y.bin")).unwrap();
    let got: Vec<f32> = yb
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let m = terafab_ir::parse::parse_module(&src).unwrap();
    let want = terafab_ir::interp::run_function(
        m.entry().unwrap(),
        &[Tensor::from_vec(vec![20, 64], x).unwrap()],
    )
    .unwrap();
    let want = want[0].to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (*g as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
            "element {i}: {g} vs {w}"
        );
    }
}
