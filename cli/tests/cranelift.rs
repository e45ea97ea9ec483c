//! End-to-end tests of the Cranelift backend through the `terafab` binary: `run`, `compile
//! --emit clif`, `bench --profile`, and the misuses of `--backend cranelift`.

mod common;

use std::path::Path;

use common::*;
use terafab_ir::Tensor;
use terafab_ir::npy::{read_npy, write_npy};

fn example(name: &str) -> String {
    arg(&repo().join("examples").join(name))
}

/// The MLP on an input file, on 1 and 2 threads: the same bits either way, and within f32
/// summation error of the interpreter.
#[test]
fn runs_the_mlp_like_the_interpreter() {
    let dir = scratch("cranelift_mlp");
    let model = example("mlp.tfir");
    let values: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 40.0).collect();
    let x = Tensor::from_vec(vec![4, 16], values).unwrap();
    let x_path = dir.join("x.npy");
    write_npy(&x_path, &x).unwrap();
    let mut outs = Vec::new();
    for threads in ["1", "2"] {
        let out_dir = dir.join(format!("out{threads}"));
        let text = success(&terafab(&[
            "run",
            &model,
            "--input",
            &format!("x={}", x_path.display()),
            "--backend",
            "cranelift",
            "--threads",
            threads,
            "--output-dir",
            &arg(&out_dir),
        ]));
        assert!(text.contains("output y: f32[4,3]"), "{text}");
        outs.push(read_npy(&out_dir.join("y.npy")).unwrap());
    }
    assert!(outs[0].bit_eq(&outs[1]), "1 and 2 threads differ");
    let module = terafab_frontend::load_model(Path::new(&model)).unwrap();
    let want = terafab_ir::interp::run_function(module.entry().unwrap(), &[x]).unwrap();
    for (a, b) in want[0].to_f64_vec().iter().zip(outs[0].to_f64_vec()) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
}

/// `--emit clif` prints one function per compiled kernel (the default backend with it is
/// cranelift); the other backends refuse it, and cranelift builds no libraries.
#[test]
fn emits_clif_and_refuses_what_it_cannot_do() {
    let model = example("mlp.tfir");
    let text = success(&terafab(&["compile", &model, "--emit", "clif"]));
    let kernels = text.matches("; kernel @").count();
    let functions = text.matches("\nfunction ").count();
    assert!(kernels >= 2 && kernels == functions, "{text}");
    assert!(text.contains("system_v") || text.contains("fast"), "{text}");
    let err = user_error(&terafab(&[
        "compile",
        &model,
        "--backend",
        "llvm",
        "--emit",
        "clif",
    ]));
    assert!(err.contains("--backend cranelift"), "{err}");
    let dir = scratch("cranelift_compile");
    let err = user_error(&terafab(&[
        "compile",
        &model,
        "--backend",
        "cranelift",
        "-o",
        &arg(&dir.join("m.so")),
    ]));
    assert!(err.contains("--emit clif"), "{err}");
}

/// `bench --backend cranelift --profile`: the compile stages, one line per kernel, the table.
#[test]
fn benches_compile_time_and_kernels() {
    let model = example("mlp.tfir");
    let text = success(&terafab(&[
        "bench",
        &model,
        "--backend",
        "cranelift",
        "--threads",
        "1",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--profile",
    ]));
    assert!(text.contains("Cranelift codegen"), "{text}");
    assert!(text.contains("backend cranelift, 1 thread(s)"), "{text}");
    assert!(text.contains("compile ms"), "{text}");
    assert!(text.contains("@k0 "), "{text}");
}
