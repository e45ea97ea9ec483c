//! `terafab train` end to end on the datasets and models of `scripts/make_train_data.py`
//! (`testsuite/models/train/`): the loss curves of the MLP and the small CNN on the
//! interpreter, LLVM and tile (f32 and bf16), the transformer encoder block's falling loss,
//! the written ONNX model, and the typed errors.
//!
//! Tolerances: LLVM and tile in f32 run the same step graph as the interpreter with other
//! summation orders (vectorized and blocked reductions), so per-step losses agree to rounding
//! that grows slowly over the steps: 1e-4 relative per step, as the issue asks. Tile in bf16
//! rounds the contraction operands to 8 significant bits (relative error 2^-9 per operand),
//! so its curve follows the f32 one within 5% relative per step plus 0.02 absolute (losses
//! near 0 late in training), and its final accuracy within 1 point.

mod common;

use std::path::PathBuf;

use common::{arg, repo, scratch, success, terafab, user_error};

fn data(name: &str) -> String {
    arg(&repo().join("testsuite/models/train").join(name))
}

/// (model, data, labels)
const MLP: (&str, &str, &str) = ("mlp.onnx", "blobs_x.npy", "blobs_y.npy");
const CNN: (&str, &str, &str) = ("cnn.onnx", "images_x.npy", "images_y.npy");
const ENCODER: (&str, &str, &str) = ("encoder.onnx", "seq_x.npy", "seq_y.npy");

/// Per-step (loss, correct) of a training run.
fn train(test: &str, model: (&str, &str, &str), steps: usize, extra: &[&str]) -> Vec<(f64, f64)> {
    train_with_output(test, model, steps, extra).0
}

/// Per-step (loss, correct) of a training run, and what it printed.
fn train_with_output(
    test: &str,
    model: (&str, &str, &str),
    steps: usize,
    extra: &[&str],
) -> (Vec<(f64, f64)>, String) {
    let dir = scratch(test);
    let log: PathBuf = dir.join("log.json");
    let (m, x, y) = (data(model.0), data(model.1), data(model.2));
    let steps_s = steps.to_string();
    let log_s = arg(&log);
    let mut args = vec![
        "train",
        &m,
        "--data",
        &x,
        "--labels",
        &y,
        "--optimizer",
        "adam",
        "--lr",
        "0.01",
        "--batch",
        "32",
        "--epochs",
        "1000",
        "--steps",
        &steps_s,
        "--log-json",
        &log_s,
    ];
    args.extend_from_slice(extra);
    let printed = success(&terafab(&args));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
    let out: Vec<(f64, f64)> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["loss"].as_f64().unwrap(), s["correct"].as_f64().unwrap()))
        .collect();
    assert_eq!(out.len(), steps);
    (out, printed)
}

#[track_caller]
fn same_curve(a: &[(f64, f64)], b: &[(f64, f64)], rtol: f64, atol: f64, what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x.0 - y.0).abs() <= rtol * x.0.abs() + atol,
            "{what}: step {}: loss {} vs {}",
            i + 1,
            x.0,
            y.0
        );
    }
}

/// Accuracy (percent) over the last `n` steps of batches of 32.
fn accuracy(c: &[(f64, f64)], n: usize) -> f64 {
    let s: f64 = c[c.len() - n..].iter().map(|x| x.1).sum();
    100.0 * s / (32 * n) as f64
}

#[test]
fn mlp_and_cnn_curves_agree_on_interp_and_llvm() {
    for (name, model) in [("mlp", MLP), ("cnn", CNN)] {
        let interp = train(
            &format!("curve_{name}_interp"),
            model,
            200,
            &["--backend", "interp"],
        );
        let llvm = train(
            &format!("curve_{name}_llvm"),
            model,
            200,
            &["--backend", "llvm", "--threads", "2"],
        );
        same_curve(&interp, &llvm, 1e-4, 0.0, name);
        assert!(interp[199].0 < 0.5 * interp[0].0, "{name}: the loss falls");
    }
}

/// Tile in the test: 60 steps on a 2x2 chip (simulating every step's kernels is the slow
/// part of the test); `scripts/train-curves.sh` runs the full 200 steps on 4x4.
#[test]
fn mlp_and_cnn_curves_on_tile_f32_and_bf16() {
    const STEPS: usize = 60;
    for (name, model, per_epoch) in [("mlp", MLP, 16), ("cnn", CNN, 8)] {
        let interp = train(
            &format!("tile_{name}_interp"),
            model,
            STEPS,
            &["--backend", "interp"],
        );
        let tile = |p: &str| {
            train(
                &format!("tile_{name}_{p}"),
                model,
                STEPS,
                &["--backend", "tile", "--config", "2x2", "--precision", p],
            )
        };
        let f32 = tile("f32");
        same_curve(&interp, &f32, 1e-4, 0.0, name);
        let bf16 = tile("bf16");
        same_curve(&interp, &bf16, 0.05, 0.02, name);
        let (a, b) = (accuracy(&f32, per_epoch), accuracy(&bf16, per_epoch));
        assert!((a - b).abs() <= 1.0, "{name}: accuracy f32 {a}% bf16 {b}%");
    }
}

#[test]
fn the_encoder_block_learns_on_every_cpu_backend() {
    for backend in ["interp", "llvm", "cranelift"] {
        let c = train(
            &format!("encoder_{backend}"),
            ENCODER,
            64,
            &["--backend", backend],
        );
        let first: f64 = c[..8].iter().map(|x| x.0).sum();
        let last: f64 = c[56..].iter().map(|x| x.0).sum();
        assert!(last < 0.6 * first, "{backend}: {first} -> {last}");
    }
}

#[test]
fn the_trained_model_carries_the_trained_weights() {
    // SGD has no state: 17 steps of batches 0..15 then 0 again give at step 17 the loss that
    // the model written after 16 steps gives at its first step (batch 0).
    let dir = scratch("trained_onnx");
    let out = dir.join("trained.onnx");
    let sgd = ["--optimizer", "sgd", "--backend", "llvm"];
    let (m, x, y) = (data(MLP.0), data(MLP.1), data(MLP.2));
    let run = |model: &str, steps: &str, extra: &[&str]| {
        let log = dir.join(format!("log_{steps}.json"));
        let log_s = arg(&log);
        let mut args = vec![
            "train",
            model,
            "--data",
            &x,
            "--labels",
            &y,
            "--batch",
            "32",
            "--epochs",
            "2",
            "--steps",
            steps,
            "--lr",
            "0.05",
            "--log-json",
            &log_s,
        ];
        args.extend_from_slice(&sgd);
        args.extend_from_slice(extra);
        success(&terafab(&args));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&log).unwrap()).unwrap();
        json["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["loss"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let out_s = arg(&out);
    let a = run(&m, "16", &["--out", &out_s]);
    let b = run(&m, "17", &[]);
    assert_eq!(a[..], b[..16]);
    let c = run(&out_s, "1", &[]);
    assert!(
        (c[0] - b[16]).abs() <= 1e-6 * b[16].abs(),
        "{} vs {}",
        c[0],
        b[16]
    );
    // And it runs as a model.
    let xin = format!("x={x}");
    let text = success(&terafab(&[
        "run",
        &out_s,
        "--input",
        &xin,
        "--backend",
        "interp",
    ]));
    assert!(text.contains("output logits: f32[512,4]"), "{text}");
}

/// `--recompute`: the cheap activations recomputed in the backward pass compute the same bits
/// (every core op is deterministic, and the contractions are unchanged), in a smaller arena.
#[test]
fn recompute_keeps_the_curve_in_less_memory() {
    let arena = |printed: &str| -> f64 {
        let line = printed
            .lines()
            .find_map(|l| l.strip_prefix("step memory: "))
            .unwrap_or_else(|| panic!("no memory line in {printed}"));
        line.split(' ').next().unwrap().parse().unwrap()
    };
    for backend in ["llvm", "cranelift"] {
        for (name, model) in [("cnn", CNN), ("encoder", ENCODER)] {
            let args = ["--backend", backend, "--threads", "1"];
            let (plain, p) = train_with_output(&format!("remat_{name}_{backend}"), model, 8, &args);
            let mut more = args.to_vec();
            more.push("--recompute");
            let (remat, r) =
                train_with_output(&format!("remat_{name}_{backend}_on"), model, 8, &more);
            assert_eq!(plain, remat, "{name} on {backend}");
            let (a, b) = (arena(&p), arena(&r));
            assert!(
                b < 0.95 * a,
                "{name} on {backend}: arena {a} KiB -> {b} KiB"
            );
        }
    }
}

#[test]
fn static_loss_scaling_by_a_power_of_two_changes_nothing() {
    let plain = train("scale_plain", MLP, 20, &["--backend", "interp"]);
    let scaled = train(
        "scale_1024",
        MLP,
        20,
        &["--backend", "interp", "--loss-scale", "1024"],
    );
    same_curve(&plain, &scaled, 1e-6, 0.0, "loss scale 1024");
    let dynamic = train(
        "scale_dynamic",
        CNN,
        20,
        &[
            "--backend",
            "tile",
            "--config",
            "2x2",
            "--precision",
            "cfp8",
            "--loss-scale",
            "dynamic",
        ],
    );
    assert!(dynamic[19].0 < dynamic[0].0, "{dynamic:?}");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let (m, x, y) = (data(MLP.0), data(MLP.1), data(MLP.2));
    let (_, cx, cy) = (data(CNN.0), data(CNN.1), data(CNN.2));
    let base = |extra: &[&str], x: &str, y: &str| {
        let mut args = vec!["train", &m, "--data", x, "--labels", y];
        args.extend_from_slice(extra);
        user_error(&terafab(&args.iter().map(|s| &**s).collect::<Vec<_>>()))
    };
    let e = base(&["--loss", "hinge"], &x, &y);
    assert!(e.contains("unknown loss `hinge`"), "{e}");
    let e = base(&["--optimizer", "lion"], &x, &y);
    assert!(e.contains("unknown optimizer `lion`"), "{e}");
    let e = base(&[], &x, &cy);
    assert!(e.contains("same number of rows"), "{e}");
    let e = base(&[], &cx, &cy);
    assert!(e.contains("has rank 2 but a shape of rank 4"), "{e}");
    let e = base(&[], &x, &x);
    assert!(e.contains("--labels rows"), "{e}");
    let e = base(&["--params", "w1,nope"], &x, &y);
    assert!(e.contains("no value named `nope`"), "{e}");
    let e = base(&["--loss-scale", "1e39"], &x, &y);
    assert!(e.contains("positive f32 number"), "{e}");
    let e = base(&["--reduction", "none"], &x, &y);
    assert!(e.contains("mean or sum"), "{e}");
}
