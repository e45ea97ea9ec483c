//! End-to-end tests of tiered compilation through the `terafab` binary: `run --backend auto`
//! (Cranelift's code runs, LLVM's compilation is reported), `bench --backend auto` (runs switch
//! to LLVM's code) and the commands that refuse it.

mod common;

use std::path::Path;

use common::*;
use terafab_ir::Tensor;
use terafab_ir::npy::{read_npy, write_npy};

fn example(name: &str) -> String {
    arg(&repo().join("examples").join(name))
}

/// The MLP on an input file, on 1 and 2 threads: the tier that ran and LLVM's background
/// compilation are reported, the outputs match the interpreter within f32 summation error.
#[test]
fn runs_the_mlp_and_reports_the_tiers() {
    let dir = scratch("auto_mlp");
    let model = example("mlp.tfir");
    let values: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 40.0).collect();
    let x = Tensor::from_vec(vec![4, 16], values).unwrap();
    let x_path = dir.join("x.npy");
    write_npy(&x_path, &x).unwrap();
    let module = terafab_frontend::load_model(Path::new(&model)).unwrap();
    let want = terafab_ir::interp::run_function(module.entry().unwrap(), &[x]).unwrap();
    for threads in ["1", "2"] {
        let out_dir = dir.join(format!("out{threads}"));
        let text = success(&terafab(&[
            "run",
            &model,
            "--input",
            &format!("x={}", x_path.display()),
            "--backend",
            "auto",
            "--threads",
            threads,
            "--output-dir",
            &arg(&out_dir),
        ]));
        assert!(text.contains("output y: f32[4,3]"), "{text}");
        assert!(text.contains("tier: "), "{text}");
        assert!(text.contains("LLVM"), "{text}");
        let got = read_npy(&out_dir.join("y.npy")).unwrap();
        for (a, b) in want[0].to_f64_vec().iter().zip(got.to_f64_vec()) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}

/// `bench --backend auto --json`: the first result, runs on both tiers as they come, then
/// `--iters` on LLVM's code once it is ready.
#[test]
fn benches_the_switch_to_llvm() {
    let model = example("mlp.tfir");
    let text = success(&terafab(&[
        "bench",
        &model,
        "--backend",
        "auto",
        "--threads",
        "1",
        "--iters",
        "3",
        "--json",
    ]));
    assert!(text.contains("first result"), "{text}");
    let line = text.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["backend"], "auto");
    assert_eq!(v["llvm_runs"], 3, "{line}");
    assert_eq!(v["llvm_error"], "", "{line}");
    let ready = |k: &str| v[k].as_f64().unwrap();
    assert!(
        ready("cranelift_ready_ms") <= ready("first_result_ms"),
        "{line}"
    );
    assert!(ready("llvm_ready_ms") > 0.0, "{line}");
}

/// Conformance and `compile` need one compiler.
#[test]
fn refuses_where_one_compiler_is_needed() {
    let err = user_error(&terafab(&["conformance", "--backend", "auto"]));
    assert!(err.contains("--backend cranelift or llvm"), "{err}");
    let err = user_error(&terafab(&[
        "compile",
        &example("mlp.tfir"),
        "--backend",
        "auto",
        "--emit",
        "kernels",
    ]));
    assert!(err.contains("supports --backend"), "{err}");
}
