//! `terafab sim` end to end: the bundled tile matmul with inputs from .npy files (exact result
//! checked), the same program in its binary form, a Perfetto trace, config overrides, and
//! user errors (unknown preset, unknown input, wrong shape, a deadlocked program).

mod common;

use std::path::Path;

use common::{arg, repo, scratch, success, terafab, user_error};
use terafab_ir::Tensor;
use terafab_ir::npy::{read_npy, write_npy};

fn matmul_example() -> String {
    arg(&repo().join("backends/tile/examples/matmul.tasm"))
}

/// A (8x8, small integers, exact in bf16) and B (8x8) as f32 .npy files; returns C = A·B.
fn write_inputs(dir: &Path) -> Vec<f32> {
    let a: Vec<f32> = (0..64).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
    let b: Vec<f32> = (0..64).map(|i| ((i * 5) % 9) as f32 - 4.0).collect();
    write_npy(
        &dir.join("a.npy"),
        &Tensor::from_vec(vec![8, 8], a.clone()).unwrap(),
    )
    .unwrap();
    write_npy(
        &dir.join("b.npy"),
        &Tensor::from_vec(vec![8, 8], b.clone()).unwrap(),
    )
    .unwrap();
    let mut c = vec![0f32; 64];
    for i in 0..8 {
        for j in 0..8 {
            c[i * 8 + j] = (0..8).map(|k| a[i * 8 + k] * b[k * 8 + j]).sum();
        }
    }
    c
}

fn run_matmul(program: &str, dir: &Path, extra: &[&str]) -> String {
    let a = format!("A={}", arg(&dir.join("a.npy")));
    let b = format!("B={}", arg(&dir.join("b.npy")));
    let out = arg(&dir.join("out"));
    let mut args = vec!["sim", program];
    if !extra.contains(&"--config") {
        args.extend_from_slice(&["--config", "1x1"]);
    }
    args.extend_from_slice(&["--input", &a, "--input", &b, "--output-dir", &out]);
    args.extend_from_slice(extra);
    success(&terafab(&args))
}

fn output_c(dir: &Path) -> Vec<f32> {
    let t = read_npy(&dir.join("out").join("C.npy")).unwrap();
    assert_eq!(t.shape(), &[8, 8]);
    t.as_slice::<f32>().unwrap().to_vec()
}

#[test]
fn matmul_from_npy_inputs_is_exact_and_reports_cycles() {
    let dir = scratch("sim_matmul");
    let want = write_inputs(&dir);
    let trace = arg(&dir.join("trace.json"));
    let text = run_matmul(&matmul_example(), &dir, &["--trace", &trace]);
    assert!(text.contains("cycles: "), "{text}");
    assert!(text.contains("roofline: "), "{text}");
    assert!(text.lines().any(|l| l.starts_with("C: ")), "{text}");
    // Small integers: bf16 inputs and f32 accumulation are exact.
    assert_eq!(output_c(&dir), want);
    // The trace is JSON with one named track per engine of the node.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trace.json")).unwrap()).unwrap();
    let events = json["traceEvents"].as_array().unwrap();
    let tracks: Vec<&str> = events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .filter_map(|e| e["args"]["name"].as_str())
        .collect();
    for engine in ["dma", "mx", "vx", "net"] {
        assert!(tracks.contains(&engine), "{tracks:?}");
    }
    assert!(events.iter().any(|e| e["ph"] == "X"), "no duration events");
}

#[test]
fn binary_programs_run_like_their_text() {
    let dir = scratch("sim_binary");
    let want = write_inputs(&dir);
    let text = std::fs::read_to_string(repo().join("backends/tile/examples/matmul.tasm")).unwrap();
    let bytes = terafab_tile::Program::parse(&text)
        .unwrap()
        .encode()
        .unwrap();
    let bin = dir.join("matmul.tbin");
    std::fs::write(&bin, bytes).unwrap();
    let from_text = run_matmul(&matmul_example(), &dir, &[]);
    let from_binary = run_matmul(&arg(&bin), &dir, &[]);
    assert_eq!(output_c(&dir), want);
    let cycles = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("cycles: "))
            .map(str::to_string)
    };
    assert_eq!(cycles(&from_text), cycles(&from_binary));
}

#[test]
fn config_overrides_change_the_timing() {
    let dir = scratch("sim_config");
    write_inputs(&dir);
    let cycles = |t: &str| -> u64 {
        let line = t.lines().find(|l| l.starts_with("cycles: ")).unwrap();
        line["cycles: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let base = cycles(&run_matmul(&matmul_example(), &dir, &[]));
    let slow = cycles(&run_matmul(
        &matmul_example(),
        &dir,
        &["--set", "hbm_latency=1000"],
    ));
    assert!(slow >= base + 1000, "{base} -> {slow}");
    // The same through a config file.
    let cfg = dir.join("machine.cfg");
    std::fs::write(&cfg, "preset = \"1x1\"\nhbm_latency = 1000\n").unwrap();
    let from_file = run_matmul(&matmul_example(), &dir, &["--config", &arg(&cfg)]);
    assert_eq!(cycles(&from_file), slow);
}

#[test]
fn bad_machines_inputs_and_programs_are_user_errors() {
    let dir = scratch("sim_errors");
    write_inputs(&dir);
    let err = user_error(&terafab(&["sim", &matmul_example(), "--config", "9x9"]));
    assert!(err.contains("neither a preset nor a file"), "{err}");
    let err = user_error(&terafab(&[
        "sim",
        &matmul_example(),
        "--set",
        "no_such_key=1",
    ]));
    assert!(err.contains("no_such_key"), "{err}");
    let a = format!("Q={}", arg(&dir.join("a.npy")));
    let err = user_error(&terafab(&["sim", &matmul_example(), "--input", &a]));
    assert!(err.contains("`Q`") && err.contains("A, B"), "{err}");
    let wrong = dir.join("wrong.npy");
    write_npy(
        &wrong,
        &Tensor::from_vec(vec![4, 16], vec![0f32; 64]).unwrap(),
    )
    .unwrap();
    let a = format!("A={}", arg(&wrong));
    let err = user_error(&terafab(&["sim", &matmul_example(), "--input", &a]));
    assert!(err.contains("[4, 16]"), "{err}");
    // Two engines waiting on each other's tokens: a deadlock naming node, engine and pc.
    let dead = dir.join("dead.tasm");
    std::fs::write(
        &dead,
        ".node 0,0\n  sem.wait engine=mx, sem=1, count=1 signal=2\n  sem.wait engine=vx, sem=2, count=1 signal=1\n  end\n",
    )
    .unwrap();
    let err = user_error(&terafab(&["sim", &arg(&dead)]));
    assert!(err.contains("deadlock"), "{err}");
    assert!(err.contains("(0,0)") && err.contains("pc"), "{err}");
}
