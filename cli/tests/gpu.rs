//! The GPU backend through the `terafab` binary: `compile --emit ptx` (no GPU needed), and
//! `run --backend gpu`: with a GPU it agrees with the interpreter, without one it says so.

mod common;

use common::*;

fn mlp() -> String {
    arg(&repo().join("examples").join("mlp.onnx"))
}

#[test]
fn emits_ptx_for_both_architectures() {
    for arch in ["sm_80", "sm_90"] {
        let text = success(&terafab(&[
            "compile",
            &mlp(),
            "--dim",
            "batch=4",
            "--emit",
            "ptx",
            "--gpu-arch",
            arch,
        ]));
        assert!(text.contains(&format!(".target {arch}")), "{text}");
        assert!(text.contains(".visible .entry"), "{text}");
    }
}

#[test]
fn ptx_misuses_are_usage_errors() {
    let e = user_error(&terafab(&[
        "compile",
        &mlp(),
        "--dim",
        "batch=4",
        "--emit",
        "ptx",
        "--gpu-arch",
        "sm_70",
    ]));
    assert!(e.contains("unknown GPU architecture `sm_70`"), "{e}");
    let e = user_error(&terafab(&[
        "compile",
        &mlp(),
        "--dim",
        "batch=4",
        "--backend",
        "gpu",
        "--emit",
        "asm",
    ]));
    assert!(e.contains("--emit ptx or kernels"), "{e}");
}

/// With a GPU the outputs match the interpreter's; without one the error says that no CUDA
/// driver or no GPU was found.
#[test]
fn run_on_the_gpu_or_a_clear_error() {
    let dir = scratch("gpu_run");
    let run = |backend: &str| {
        let out = dir.join(backend);
        let o = terafab(&[
            "run",
            &mlp(),
            "--random-inputs",
            "--dim",
            "batch=3",
            "--backend",
            backend,
            "--output-dir",
            &arg(&out),
        ]);
        (o, out)
    };
    let (o, gpu_dir) = run("gpu");
    if o.status.success() {
        let got = stdout(&o);
        assert!(got.contains("gpu: "), "{got}");
        let (i, interp_dir) = run("interp");
        success(&i);
        for entry in std::fs::read_dir(&interp_dir).unwrap() {
            let path = entry.unwrap().path();
            let want = terafab_ir::npy::read_npy(&path).unwrap().to_f64_vec();
            let have = terafab_ir::npy::read_npy(&gpu_dir.join(path.file_name().unwrap()))
                .unwrap()
                .to_f64_vec();
            assert_eq!(want.len(), have.len());
            for (w, h) in want.iter().zip(&have) {
                assert!((w - h).abs() <= 1e-4 + 1e-4 * w.abs(), "{w} vs {h}");
            }
        }
    } else {
        let e = user_error(&o);
        eprintln!("SKIPPED the GPU run (no GPU here): {e}");
        assert!(
            e.contains("no GPU: no CUDA driver (libcuda.so.1) found")
                || e.contains("the CUDA driver finds no GPU"),
            "{e}"
        );
    }
}
