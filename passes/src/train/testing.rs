//! Test models shared by the passes' tests: small training steps.

use terafab_frontend::onnx::text::parse_model_text;
use terafab_frontend::onnx::{ImportOptions, import_model};
use terafab_ir::{DType, Function, Tensor};

use super::{AdamParams, LossKind, Optimizer, Reduction, StepConfig, build_step};

/// Deterministic values in [-0.5, 0.5], different for each seed.
fn values(n: usize, seed: u64) -> Vec<f64> {
    (0..n)
        .map(|i| 0.5 * ((i as f64 + 1.0) * (0.7 + seed as f64 * 0.013)).sin())
        .collect()
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.4}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An MLP with `layers` hidden `dense → add → relu` layers of width `w` on `[batch, w]`
/// inputs, and its training step (cross-entropy, Adam) after the default pipeline.
pub(crate) fn mlp_step(layers: usize, w: usize, batch: usize) -> (Function, Vec<Tensor>) {
    let mut inits = Vec::new();
    let mut body = String::new();
    let mut prev = "x".to_string();
    for l in 0..layers {
        inits.push(format!(
            "float[{w},{w}] W{l} = {{{}}}",
            list(&values(w * w, 10 + l as u64))
        ));
        inits.push(format!(
            "float[{w}] b{l} = {{{}}}",
            list(&values(w, 50 + l as u64))
        ));
        body += &format!("  m{l} = MatMul ({prev}, W{l})\n  a{l} = Add (m{l}, b{l})\n");
        body += &format!("  h{l} = Relu (a{l})\n");
        prev = format!("h{l}");
    }
    inits.push(format!(
        "float[{w},4] Wo = {{{}}}",
        list(&values(w * 4, 99))
    ));
    body += &format!("  y = MatMul ({prev}, Wo)\n");
    let text = format!(
        "<ir_version: 8, opset_import: [\"\" : 18]>\nmlp (float[{batch},{w}] x) => (float[{batch},4] y)\n  <{}> {{\n{body}}}\n",
        inits.join(", ")
    );
    let m = parse_model_text(&text).unwrap();
    let opts = ImportOptions {
        fold_limit: 0,
        ..Default::default()
    };
    let forward = import_model(&m, None, &opts).unwrap().functions.remove(0);
    let mut params: Vec<String> = (0..layers)
        .flat_map(|l| [format!("W{l}"), format!("b{l}")])
        .collect();
    params.push("Wo".into());
    let cfg = StepConfig {
        output: 0,
        loss: LossKind::CrossEntropy,
        reduction: Reduction::Mean,
        ignore_index: None,
        params,
        optimizer: Optimizer::Adam(AdamParams::default()),
        lr: 0.01,
        loss_scaling: false,
    };
    let step = build_step(&forward, &cfg).unwrap();
    let xs = values(batch * w, 7);
    let x = Tensor::from_fn(DType::F32, &[batch, w], |i| xs[i]).unwrap();
    let labels = Tensor::from_vec(vec![batch], (0..batch as i64).map(|i| i % 4).collect());
    let ins = step.first_inputs(vec![x], labels.unwrap()).unwrap();
    let mut module = terafab_ir::Module::new(vec![step.func]);
    crate::run_pipeline(&mut module, "default", Default::default()).unwrap();
    (module.functions.remove(0), ins)
}
