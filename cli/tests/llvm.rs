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
