//! The training step against hand computations in f64: loss values, correct counts and
//! gradients (through an SGD step), each optimizer over a few steps, and the typed errors.

use terafab_frontend::onnx::text::parse_model_text;
use terafab_frontend::onnx::{ImportOptions, import_model};
use terafab_ir::Tensor;
use terafab_ir::interp::run_function;

use super::*;

/// A linear model `y = x W + b`, `x: [4, 3]`, `W: [3, 3]`, `b: [3]`.
const LINEAR: &str = r#"
<ir_version: 8, opset_import: ["" : 18]>
lin (float[4,3] x) => (float[4,3] y)
  <float[3,3] W = {0.5, -0.2, 0.1, 0.3, 0.8, -0.5, -0.4, 0.2, 0.6}, float[3] b = {0.1, -0.1, 0.05}> {
  m = MatMul (x, W)
  y = Add (m, b)
}
"#;

const X: [f64; 12] = [
    0.2, -1.0, 0.5, 1.5, 0.3, -0.7, -0.6, 0.9, 1.1, 0.0, -0.4, 0.8,
];

fn forward() -> Function {
    let m = parse_model_text(LINEAR).unwrap();
    let opts = ImportOptions {
        fold_limit: 0,
        ..Default::default()
    };
    import_model(&m, None, &opts).unwrap().functions.remove(0)
}

fn cfg(loss: LossKind, optimizer: Optimizer) -> StepConfig {
    StepConfig {
        output: 0,
        loss,
        reduction: Reduction::Mean,
        ignore_index: None,
        params: vec!["W".into(), "b".into()],
        optimizer,
        lr: 0.1,
        loss_scaling: false,
    }
}

/// The labels of `X`'s rows.
fn labels() -> Tensor {
    Tensor::from_vec(vec![4], vec![2i64, 0, 1, 0]).unwrap()
}

fn f32s(dims: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_fn(DType::F32, dims, |i| v[i]).unwrap()
}

/// The model's output in f64.
fn lin(w: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; 12];
    for i in 0..4 {
        for j in 0..3 {
            y[i * 3 + j] = b[j] + (0..3).map(|k| X[i * 3 + k] * w[k * 3 + j]).sum::<f64>();
        }
    }
    y
}

/// The gradients of `W` and `b` for the output adjoint `dy`.
fn back(dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut gw = vec![0.0; 9];
    let mut gb = vec![0.0; 3];
    for i in 0..4 {
        for j in 0..3 {
            gb[j] += dy[i * 3 + j];
            for k in 0..3 {
                gw[k * 3 + j] += X[i * 3 + k] * dy[i * 3 + j];
            }
        }
    }
    (gw, gb)
}

/// Softmax cross-entropy (mean over the targets not ignored): loss, dy, correct count.
fn ce(y: &[f64], t: &[i64], ignore: Option<i64>) -> (f64, Vec<f64>, f64) {
    let valid: Vec<bool> = t.iter().map(|&c| Some(c) != ignore).collect();
    let n = valid.iter().filter(|&&v| v).count() as f64;
    let (mut loss, mut dy, mut correct) = (0.0, vec![0.0; 12], 0.0);
    for i in 0..4 {
        if !valid[i] {
            continue;
        }
        let row = &y[i * 3..i * 3 + 3];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
        let c = t[i] as usize;
        loss += -(row[c] - m - s.ln()) / n;
        for j in 0..3 {
            let p = (row[j] - m).exp() / s;
            dy[i * 3 + j] = (p - f64::from(j == c)) / n;
        }
        let am = (0..3).fold(0, |a, j| if row[j] > row[a] { j } else { a });
        correct += f64::from(am == c);
    }
    (loss, dy, correct)
}

fn close(got: &Tensor, want: &[f64], tol: f64) {
    let got = got.to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{got:?} vs {want:?}"
        );
    }
}

const W0: [f64; 9] = [0.5, -0.2, 0.1, 0.3, 0.8, -0.5, -0.4, 0.2, 0.6];
const B0: [f64; 3] = [0.1, -0.1, 0.05];

#[test]
fn cross_entropy_loss_gradient_and_count_by_hand() {
    for ignore in [None, Some(-100), Some(2)] {
        let mut c = cfg(LossKind::CrossEntropy, Optimizer::Sgd { weight_decay: 0.0 });
        c.ignore_index = ignore;
        let step = build_step(&forward(), &c).unwrap();
        assert!(step.counts_correct);
        let t = [2i64, -100, 1, 0];
        let ins = vec![
            f32s(&[4, 3], &X),
            Tensor::from_vec(vec![4], t.to_vec()).unwrap(),
            f32s(&[3, 3], &W0),
            f32s(&[3], &B0),
            Tensor::scalar(1i64),
        ];
        // Unless it is the ignore_index, -100 is not a class (ONNX's reference would index out
        // of range), so those cases use valid targets only.
        let t_used: Vec<i64> = if ignore == Some(-100) {
            t.to_vec()
        } else {
            vec![2, 0, 1, 0]
        };
        let mut ins = ins;
        ins[1] = Tensor::from_vec(vec![4], t_used.clone()).unwrap();
        let out = run_function(&step.func, &ins).unwrap();
        let (loss, dy, correct) = ce(&lin(&W0, &B0), &t_used, ignore);
        close(&out[0], &[loss], 1e-5);
        close(&out[1], &[correct], 0.0);
        let (gw, gb) = back(&dy);
        let w1: Vec<f64> = W0.iter().zip(&gw).map(|(w, g)| w - 0.1 * g).collect();
        let b1: Vec<f64> = B0.iter().zip(&gb).map(|(w, g)| w - 0.1 * g).collect();
        close(&out[2], &w1, 1e-5);
        close(&out[3], &b1, 1e-5);
    }
}

#[test]
fn nll_takes_log_probabilities_as_given() {
    let c = cfg(LossKind::Nll, Optimizer::Sgd { weight_decay: 0.0 });
    let step = build_step(&forward(), &c).unwrap();
    let t = [0i64, 2, 2, 1];
    let ins = vec![
        f32s(&[4, 3], &X),
        Tensor::from_vec(vec![4], t.to_vec()).unwrap(),
        f32s(&[3, 3], &W0),
        f32s(&[3], &B0),
        Tensor::scalar(1i64),
    ];
    let out = run_function(&step.func, &ins).unwrap();
    let y = lin(&W0, &B0);
    let loss: f64 = (0..4).map(|i| -y[i * 3 + t[i] as usize] / 4.0).sum();
    close(&out[0], &[loss], 1e-6);
    let mut dy = vec![0.0; 12];
    for i in 0..4 {
        dy[i * 3 + t[i] as usize] = -0.25;
    }
    let (_, gb) = back(&dy);
    let b1: Vec<f64> = B0.iter().zip(&gb).map(|(w, g)| w - 0.1 * g).collect();
    close(&out[3], &b1, 1e-6);
}

/// One f64 optimizer step on a flat parameter vector; `s` holds the states.
fn reference_update(
    opt: &Optimizer,
    lr: f64,
    t: i64,
    x: &mut [f64],
    g: &[f64],
    s: &mut [Vec<f64>],
) {
    for i in 0..x.len() {
        match *opt {
            Optimizer::Sgd { weight_decay } => x[i] -= lr * (g[i] + weight_decay * x[i]),
            Optimizer::Momentum(p) => {
                let gi = g[i] + p.norm * x[i];
                let b = if t > 0 { p.beta } else { 1.0 };
                s[0][i] = p.alpha * s[0][i] + b * gi;
                let dir = if p.nesterov {
                    gi + p.alpha * s[0][i]
                } else {
                    s[0][i]
                };
                x[i] -= lr * dir;
            }
            Optimizer::Adam(p) => {
                let gi = g[i] + p.norm * x[i];
                s[0][i] = p.alpha * s[0][i] + (1.0 - p.alpha) * gi;
                s[1][i] = p.beta * s[1][i] + (1.0 - p.beta) * gi * gi;
                let tt = t as i32;
                let r = if t > 0 {
                    lr * (1.0 - p.beta.powi(tt)).sqrt() / (1.0 - p.alpha.powi(tt))
                } else {
                    lr
                };
                let x0 = x[i] - lr * p.decoupled * x[i];
                x[i] = (1.0 - p.post) * (x0 - r * s[0][i] / (s[1][i].sqrt() + p.eps));
            }
            Optimizer::Adagrad {
                decay_factor,
                epsilon,
                norm_coefficient,
            } => {
                let gi = g[i] + norm_coefficient * x[i];
                s[0][i] += gi * gi;
                let r = lr / (1.0 + t as f64 * decay_factor);
                x[i] -= r * gi / (s[0][i].sqrt() + epsilon);
            }
        }
    }
}

#[test]
fn every_optimizer_matches_a_reference_over_steps() {
    let mom = |nesterov| MomentumParams {
        alpha: 0.9,
        beta: 0.5,
        norm: 0.01,
        nesterov,
    };
    let opts = [
        Optimizer::Sgd { weight_decay: 0.01 },
        Optimizer::Momentum(mom(false)),
        Optimizer::Momentum(mom(true)),
        Optimizer::Adam(AdamParams::default()),
        Optimizer::Adam(AdamParams {
            norm: 0.02,
            post: 0.01,
            ..Default::default()
        }),
        Optimizer::Adam(AdamParams {
            decoupled: 0.05,
            ..Default::default()
        }),
        Optimizer::Adagrad {
            decay_factor: 0.1,
            epsilon: 1e-7,
            norm_coefficient: 0.01,
        },
    ];
    let target: Vec<f64> = (0..12).map(|i| (i as f64 * 0.7).sin()).collect();
    for opt in opts {
        let step = build_step(&forward(), &cfg(LossKind::Mse, opt)).unwrap();
        assert!(!step.counts_correct);
        let kinds = opt.state_kinds().len();
        let mut params: Vec<Tensor> = step.params.iter().map(|(_, t)| t.clone()).collect();
        let mut states = step.initial_states().unwrap();
        assert_eq!(states.len(), 2 * kinds);
        // The reference: W and b flattened into one vector (the update is elementwise).
        let mut x: Vec<f64> = W0.iter().chain(&B0).copied().collect();
        let mut s = vec![vec![0.0; 12]; kinds];
        for t in 1..=4i64 {
            let mut ins = vec![f32s(&[4, 3], &X), f32s(&[4, 3], &target)];
            ins.extend(params.iter().cloned());
            ins.extend(states.iter().cloned());
            ins.push(Tensor::scalar(t));
            let out = run_function(&step.func, &ins).unwrap();
            let y = lin(&x[..9], &x[9..]);
            let loss: f64 = y
                .iter()
                .zip(&target)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / 12.0;
            let dy: Vec<f64> = y
                .iter()
                .zip(&target)
                .map(|(a, b)| 2.0 * (a - b) / 12.0)
                .collect();
            let (gw, gb) = back(&dy);
            let g: Vec<f64> = gw.into_iter().chain(gb).collect();
            close(&out[0], &[loss], 1e-5);
            reference_update(&opt, 0.1, t, &mut x, &g, &mut s);
            close(&out[1], &x[..9], 1e-5);
            close(&out[2], &x[9..], 1e-5);
            for k in 0..kinds {
                close(&out[3 + 2 * k], &s[k][..9], 1e-5);
                close(&out[4 + 2 * k], &s[k][9..], 1e-5);
            }
            params = out[1..3].to_vec();
            states = out[3..].to_vec();
        }
    }
}

#[test]
fn the_step_goes_through_the_pipeline_and_the_kernels() {
    let c = cfg(
        LossKind::CrossEntropy,
        Optimizer::Adam(AdamParams::default()),
    );
    let step = build_step(&forward(), &c).unwrap();
    let ins = step
        .first_inputs(vec![f32s(&[4, 3], &X)], labels())
        .unwrap();
    let want = run_function(&step.func, &ins).unwrap();
    let mut m = terafab_ir::Module::new(vec![step.func.clone()]);
    crate::run_pipeline(&mut m, "default,eqsat,default", Default::default()).unwrap();
    let f = m.entry().unwrap();
    let got = crate::fuse::run_kernels(f, &ins).unwrap();
    for (g, w) in got.iter().zip(&want) {
        close(g, &w.to_f64_vec(), 1e-5);
    }
}

#[test]
fn typed_errors() {
    let f = forward();
    let sgd = Optimizer::Sgd { weight_decay: 0.0 };
    let mut c = cfg(LossKind::Mse, sgd);
    c.params = vec!["nope".into()];
    assert_eq!(
        build_step(&f, &c).unwrap_err(),
        TrainError::UnknownParam("nope".into())
    );
    c.params = vec!["x".into()];
    assert_eq!(
        build_step(&f, &c).unwrap_err(),
        TrainError::NotAConstant("x".into())
    );
    c.params = vec!["W".into(), "W".into()];
    assert_eq!(
        build_step(&f, &c).unwrap_err(),
        TrainError::Duplicate("W".into())
    );
    c.params = vec![];
    assert_eq!(build_step(&f, &c).unwrap_err(), TrainError::NoParams);
    let mut c = cfg(LossKind::Mse, sgd);
    c.reduction = Reduction::None;
    assert_eq!(build_step(&f, &c).unwrap_err(), TrainError::NoneReduction);
    let mut c = cfg(LossKind::Mse, sgd);
    c.output = 3;
    assert!(matches!(
        build_step(&f, &c).unwrap_err(),
        TrainError::NoOutput { index: 3, count: 1 }
    ));
    assert_eq!(float_constants(&f), ["W", "b"]);
}

#[test]
fn loss_scaling_unscales_and_skips_overflowing_steps() {
    let opt = Optimizer::Adam(AdamParams::default());
    let plain = build_step(&forward(), &cfg(LossKind::CrossEntropy, opt)).unwrap();
    let mut c = cfg(LossKind::CrossEntropy, opt);
    c.loss_scaling = true;
    let scaled = build_step(&forward(), &c).unwrap();
    assert_eq!(scaled.params_output(), 3);
    let ins = plain
        .first_inputs(vec![f32s(&[4, 3], &X)], labels())
        .unwrap();
    let want = run_function(&plain.func, &ins).unwrap();
    // A power of two scales exactly: the same step.
    let mut ins_s = ins.clone();
    ins_s.push(Tensor::scalar(1024.0f32));
    let got = run_function(&scaled.func, &ins_s).unwrap();
    assert_eq!(got[2].to_f64_vec(), [1.0]);
    assert_eq!(got[0], want[0]);
    for (g, w) in got[3..].iter().zip(&want[2..]) {
        close(g, &w.to_f64_vec(), 1e-6);
    }
    // An overflowing scale (infinite here, to be certain): the step is skipped, parameters and states unchanged.
    let mut ins_o = ins.clone();
    ins_o.push(Tensor::scalar(f32::INFINITY));
    let got = run_function(&scaled.func, &ins_o).unwrap();
    assert_eq!(got[2].to_f64_vec(), [0.0]);
    for (g, w) in got[3..].iter().zip(&ins[2..8]) {
        assert_eq!(g, w);
    }
}
