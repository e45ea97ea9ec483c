//! `terafab run --backend tile` end to end: the bundled MLP on the simulated accelerator (f32
//! operands agree with the interpreter's summaries; bf16 and CFP8 operands run), the report
//! and the trace, and `--precision` misuse.

mod common;

use common::{arg, repo, scratch, success, terafab, user_error};

fn example(name: &str) -> String {
    arg(&repo().join("examples").join(name))
}

fn outputs(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with("output ")).collect()
}

fn run_tile(extra: &[&str]) -> String {
    let x = format!("x={}", example("x.npy"));
    let model = example("mlp.onnx");
    let mut args = vec!["run", &model, "--input", &x, "--backend", "tile"];
    args.extend_from_slice(extra);
    success(&terafab(&args))
}

#[test]
fn the_mlp_runs_on_the_accelerator_in_every_precision() {
    let x = format!("x={}", example("x.npy"));
    let interp = success(&terafab(&[
        "run",
        &example("mlp.onnx"),
        "--input",
        &x,
        "--backend",
        "interp",
    ]));
    let f32 = run_tile(&["--config", "2x2", "--precision", "f32"]);
    assert_eq!(outputs(&f32), outputs(&interp), "{f32}");
    assert!(f32.contains("tile backend on a 2x2 mesh"), "{f32}");
    assert!(f32.contains("total: "), "{f32}");
    for precision in ["bf16", "cf8e4m3", "cf8e5m2"] {
        let text = run_tile(&["--config", "4x4", "--precision", precision]);
        assert_eq!(outputs(&text).len(), 1, "{text}");
        assert!(text.contains("on the accelerator"), "{text}");
    }
    // `cfp8` names CFP8 1-4-3.
    assert_eq!(
        outputs(&run_tile(&["--config", "4x4", "--precision", "cfp8"])),
        outputs(&run_tile(&["--config", "4x4", "--precision", "cf8e4m3"]))
    );
    // The default is bf16.
    assert_eq!(
        outputs(&run_tile(&["--config", "4x4"])),
        outputs(&run_tile(&["--config", "4x4", "--precision", "bf16"]))
    );
}

#[test]
fn the_trace_covers_the_accelerator_kernels() {
    let dir = scratch("tile_trace");
    let trace = arg(&dir.join("trace.json"));
    let text = run_tile(&["--config", "2x2", "--trace", &trace]);
    assert!(text.contains("trace: "), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trace.json")).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    assert!(events.iter().any(|e| e["ph"] == "X"), "no engine events");
}

#[test]
fn precision_is_for_the_tile_backend() {
    let x = format!("x={}", example("x.npy"));
    let err = user_error(&terafab(&[
        "run",
        &example("mlp.onnx"),
        "--input",
        &x,
        "--precision",
        "bf16",
    ]));
    assert!(err.contains("--backend tile"), "{err}");
}

/// `compile --emit tile-asm`: one complete program per kernel, each of which `terafab sim`
/// assembles and simulates; `--emit tile-kernels` shows the placements; misuse is a usage
/// error.
#[test]
fn compile_emits_tile_programs_that_simulate() {
    let dir = scratch("tile_compile");
    let model = example("mlp.onnx");
    let out = dir.join("mlp.tasm");
    let text = success(&terafab(&[
        "compile",
        &model,
        "--dim",
        "batch=4",
        "--backend",
        "tile",
        "--config",
        "2x2",
        "--emit",
        "tile-asm",
        "-o",
        &arg(&out),
    ]));
    assert!(text.is_empty(), "{text}");
    let asm = std::fs::read_to_string(&out).unwrap();
    assert!(asm.starts_with("# @main for a 2x2 mesh"), "{asm}");
    let sections: Vec<&str> = asm.split("\n# ==== ").skip(1).collect();
    assert!(!sections.is_empty(), "{asm}");
    let mut simulated = 0;
    for (i, section) in sections.iter().enumerate() {
        if !section.contains(".hbm ") {
            continue;
        }
        let path = dir.join(format!("kernel{i}.tasm"));
        std::fs::write(&path, section.split_once('\n').unwrap().1).unwrap();
        let report = success(&terafab(&[
            "sim",
            &arg(&path),
            "--config",
            "2x2",
            "--timing-only",
        ]));
        assert!(report.contains("cycles"), "{report}");
        simulated += 1;
    }
    assert!(simulated > 0, "{asm}");

    // The default backend with a tile form is tile; the kernels form names the placements.
    let kernels = success(&terafab(&[
        "compile",
        &model,
        "--dim",
        "batch=4",
        "--emit",
        "tile-kernels",
        "--precision",
        "bf16",
    ]));
    assert!(kernels.contains("on the accelerator"), "{kernels}");
    assert!(kernels.contains("kernels @main"), "{kernels}");

    let err = user_error(&terafab(&[
        "compile",
        &model,
        "--dim",
        "batch=4",
        "--backend",
        "llvm",
        "--emit",
        "tile-asm",
    ]));
    assert!(err.contains("--backend tile"), "{err}");
    let err = user_error(&terafab(&[
        "compile",
        &model,
        "--dim",
        "batch=4",
        "--backend",
        "tile",
        "-o",
        "x.so",
    ]));
    assert!(err.contains("--emit"), "{err}");
}
