//! Training steps: a forward function, a loss, its gradient and an optimizer update as ONE
//! function ([`build_step`]), which then goes through the normal pass pipeline and fusion and
//! runs on every backend like any other function.
//!
//! The step function's inputs are, in order: the forward function's inputs (the batch), the
//! labels (`labels`: class indices `[N, d...]` of an integer type for `cross-entropy` and `nll`,
//! the output's type for `mse`), the trainable parameters (the chosen float constants of the
//! forward function, typically imported initializers, by name), the optimizer states (one group
//! per state kind, each with one tensor per parameter: momentum's `v`, Adam's `v` then `h`,
//! Adagrad's `h`) and the step count `t` (an i64 scalar; callers pass the 1-based step number,
//! so Adam is bias-corrected from the first step on as in PyTorch; ONNX's `t = 0` form is the
//! `t > 0` select's other branch). Its outputs: the loss (a float scalar), for the
//! classification losses the number of correctly classified targets (argmax over the class
//! axis, in the loss's type), then the new parameters and the new states in the input order.
//! The learning rate is a constant of the step. With [`StepConfig::loss_scaling`], a loss scale
//! input follows `t` and a `finite` output follows the count.
//!
//! The formulas: [`loss`] (ONNX's `NegativeLogLikelihoodLoss` / `SoftmaxCrossEntropyLoss`
//! semantics with `reduction` and `ignore_index`, and MSE) and [`optim`] (ONNX's
//! `ai.onnx.preview.training` `Momentum`, `Adam`, `Adagrad`, plus SGD and AdamW); the ONNX
//! importer builds those ops with the same functions through the [`Emit`] trait. The backward
//! pass is [`crate::autodiff::grad`].

pub mod emit;
pub mod loss;
pub mod optim;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use emit::{Emit, EmitError, FnEmitter};
pub use loss::Reduction;
pub use optim::{AdamParams, MomentumParams};

use terafab_ir::verify::{VerifyError, verify_function};
use terafab_ir::{DType, Function, Op, Shape, Tensor, TensorError, TensorType, ValueId};

use crate::autodiff::{self, AutodiffError};

/// The loss of a training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// Mean (or summed) squared error against a float target of the output's type.
    Mse,
    /// Softmax cross-entropy over axis 1 against integer class indices (ONNX
    /// `SoftmaxCrossEntropyLoss`).
    CrossEntropy,
    /// Negative log-likelihood of log-probabilities (ONNX `NegativeLogLikelihoodLoss`).
    Nll,
}

impl LossKind {
    /// `mse`, `cross-entropy` (or `ce`), `nll`.
    pub fn parse(s: &str) -> Option<LossKind> {
        match s {
            "mse" => Some(LossKind::Mse),
            "cross-entropy" | "ce" => Some(LossKind::CrossEntropy),
            "nll" => Some(LossKind::Nll),
            _ => None,
        }
    }

    /// Whether the step also counts correct classifications.
    pub fn classifies(self) -> bool {
        self != LossKind::Mse
    }
}

/// The optimizer of a training step and its hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// `x' = x - lr (g + weight_decay x)`.
    Sgd { weight_decay: f64 },
    /// ONNX `Momentum` (standard or Nesterov).
    Momentum(MomentumParams),
    /// ONNX `Adam`; AdamW when `decoupled` is not 0.
    Adam(AdamParams),
    /// ONNX `Adagrad`.
    Adagrad {
        decay_factor: f64,
        epsilon: f64,
        norm_coefficient: f64,
    },
}

impl Optimizer {
    /// The names of the state kinds, one group of tensors (one per parameter) each.
    pub fn state_kinds(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd { .. } => &[],
            Optimizer::Momentum(_) => &["v"],
            Optimizer::Adam(_) => &["v", "h"],
            Optimizer::Adagrad { .. } => &["h"],
        }
    }
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct StepConfig {
    /// Which output of the forward function the loss is taken of.
    pub output: usize,
    pub loss: LossKind,
    /// `sum` or `mean` (a step needs a scalar loss).
    pub reduction: Reduction,
    /// Targets equal to this contribute nothing (classification losses).
    pub ignore_index: Option<i64>,
    /// The names of the trainable constants.
    pub params: Vec<String>,
    pub optimizer: Optimizer,
    pub lr: f64,
    /// Loss scaling (for narrow-precision compute): the step takes one more input after `t`,
    /// the scale `s` (an f32 scalar), differentiates `s · loss`, divides the gradients by `s`,
    /// and outputs after the loss (and the count) `finite` (1 when every gradient is finite,
    /// else 0); when they are not, the parameters and states come out unchanged (the step is
    /// skipped). The caller keeps `s` fixed (static scaling) or adapts it (dynamic).
    pub loss_scaling: bool,
}

/// A built step and its input layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub func: Function,
    /// How many inputs the forward function had (the batch comes first).
    pub data_inputs: usize,
    /// The labels' type.
    pub labels: TensorType,
    /// The parameters, in input order, with their initial values.
    pub params: Vec<(String, Tensor)>,
    /// The state kinds (see [`Optimizer::state_kinds`]).
    pub state_kinds: Vec<&'static str>,
    /// Whether the second output counts correct classifications.
    pub counts_correct: bool,
    /// Whether the step takes a loss scale and outputs `finite` (see
    /// [`StepConfig::loss_scaling`]).
    pub loss_scaling: bool,
}

impl Step {
    /// The initial optimizer states: zeros of each parameter's type, per state kind.
    pub fn initial_states(&self) -> Result<Vec<Tensor>, TensorError> {
        self.state_kinds
            .iter()
            .flat_map(|_| {
                self.params
                    .iter()
                    .map(|(_, t)| Tensor::zeros(t.dtype(), t.shape()))
            })
            .collect()
    }

    /// The inputs of the first step (step count 1) on one batch: `data` (the forward
    /// function's inputs), `labels`, the initial parameters and the initial states. A step
    /// with loss scaling takes the scale after these.
    pub fn first_inputs(
        &self,
        data: Vec<Tensor>,
        labels: Tensor,
    ) -> Result<Vec<Tensor>, TensorError> {
        let mut ins = data;
        ins.push(labels);
        ins.extend(self.params.iter().map(|(_, t)| t.clone()));
        ins.extend(self.initial_states()?);
        ins.push(Tensor::scalar(1i64));
        Ok(ins)
    }

    /// Index of the first new parameter among the outputs.
    pub fn params_output(&self) -> usize {
        1 + usize::from(self.counts_correct) + usize::from(self.loss_scaling)
    }
}

/// Why a step could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TrainError {
    #[error("the model has {count} output(s); output {index} does not exist")]
    NoOutput { index: usize, count: usize },
    #[error("no value named `{0}` in the model")]
    UnknownParam(String),
    #[error("`{0}` is not a constant (an initializer) of the model's top level")]
    NotAConstant(String),
    #[error("parameter `{name}` has type {ty}: only float tensors can be trained")]
    NotFloat { name: String, ty: TensorType },
    #[error("parameter `{0}` is listed twice")]
    Duplicate(String),
    #[error("no trainable parameters")]
    NoParams,
    #[error("the loss needs a scalar: reduction `none` cannot train")]
    NoneReduction,
    #[error("the loss: {0}")]
    Loss(String),
    #[error("the optimizer update: {0}")]
    Update(String),
    #[error("the backward pass: {0}")]
    Autodiff(#[from] AutodiffError),
    #[error("the step function does not verify: {0}")]
    Verify(Box<VerifyError>),
}

/// The float constants of `f`'s top level, by name (the candidates for training).
pub fn float_constants(f: &Function) -> Vec<String> {
    f.body
        .nodes
        .iter()
        .filter(|n| matches!(&n.op, Op::Constant { value } if value.dtype().is_float()))
        .map(|n| f.values.name(n.outputs[0]).to_string())
        .collect()
}

/// Build the training step of `forward` (see the module doc for its layout).
pub fn build_step(forward: &Function, cfg: &StepConfig) -> Result<Step, TrainError> {
    if cfg.reduction == Reduction::None {
        return Err(TrainError::NoneReduction);
    }
    if cfg.params.is_empty() {
        return Err(TrainError::NoParams);
    }
    let mut f = forward.clone();
    f.name = format!("{}_train_step", forward.name);
    let &out = f.outputs().get(cfg.output).ok_or(TrainError::NoOutput {
        index: cfg.output,
        count: f.outputs().len(),
    })?;

    // The chosen constants become inputs.
    let mut params: Vec<(String, Tensor)> = Vec::new();
    let mut param_ids: Vec<ValueId> = Vec::new();
    for name in &cfg.params {
        let v = f
            .values
            .lookup(name)
            .ok_or_else(|| TrainError::UnknownParam(name.clone()))?;
        if param_ids.contains(&v) {
            return Err(TrainError::Duplicate(name.clone()));
        }
        let pos = f
            .body
            .nodes
            .iter()
            .position(|n| n.outputs == [v] && matches!(n.op, Op::Constant { .. }))
            .ok_or_else(|| TrainError::NotAConstant(name.clone()))?;
        let ty = f.values.ty(v).clone();
        if !ty.dtype.is_float() {
            return Err(TrainError::NotFloat {
                name: name.clone(),
                ty,
            });
        }
        let node = f.body.nodes.remove(pos);
        let Op::Constant { value } = node.op else {
            unreachable!("checked above")
        };
        params.push((name.clone(), value));
        param_ids.push(v);
    }

    let out_ty = f.values.ty(out).clone();
    let labels_ty = if cfg.loss.classifies() {
        let mut dims = out_ty.shape.dims().to_vec();
        if dims.len() < 2 {
            return Err(TrainError::Loss(format!(
                "a classification loss needs scores [N, C, ...], the output is {out_ty}"
            )));
        }
        dims.remove(1);
        TensorType::new(DType::I64, Shape::new(dims))
    } else {
        out_ty.clone()
    };
    let labels = f.values.add("labels", labels_ty.clone());
    let kinds = cfg.optimizer.state_kinds();
    let mut states: Vec<ValueId> = Vec::new();
    for k in kinds {
        for (name, t) in &params {
            let ty = TensorType::from_static(t.dtype(), t.shape());
            states.push(f.values.add(&format!("{k}_{name}"), ty));
        }
    }
    let t = f.values.add("t", TensorType::scalar(DType::I64));
    let scale = cfg
        .loss_scaling
        .then(|| f.values.add("loss_scale", TensorType::scalar(DType::F32)));
    let data_inputs = f.body.params.len();
    f.body.params.push(labels);
    f.body.params.extend(&param_ids);
    f.body.params.extend(&states);
    f.body.params.push(t);
    f.body.params.extend(scale);

    // The loss (and the correct count).
    let (loss, correct) = {
        let mut e = FnEmitter {
            f: &mut f,
            hint: "loss".into(),
        };
        let res = (|| -> Result<(ValueId, Option<ValueId>), EmitError> {
            Ok(match cfg.loss {
                LossKind::Mse => (loss::mse(&mut e, out, labels, cfg.reduction)?, None),
                LossKind::CrossEntropy | LossKind::Nll => {
                    let lp = if cfg.loss == LossKind::CrossEntropy {
                        loss::log_softmax(&mut e, out, &[1])?
                    } else {
                        out
                    };
                    let l = loss::nll(&mut e, lp, labels, None, cfg.reduction, cfg.ignore_index)?;
                    e.hint = "correct".into();
                    let c = loss::correct(&mut e, out, labels, cfg.ignore_index)?;
                    (l, Some(c))
                }
            })
        })();
        res.map_err(|e| TrainError::Loss(e.0))?
    };
    f.body.results.clear();
    f.output_names.clear();
    f.add_output("loss", loss);
    if let Some(c) = correct {
        f.add_output("correct", c);
    }
    // The differentiated output: the loss, or the scaled loss (dropped after the backward).
    let target = match scale {
        Some(sc) => {
            let mut e = FnEmitter {
                f: &mut f,
                hint: "scaled_loss".into(),
            };
            let res = (|| -> Result<ValueId, EmitError> {
                let sc = e.conv(sc, e.dtype_of(loss))?;
                e.bin(terafab_ir::BinaryOp::Mul, loss, sc)
            })();
            let v = res.map_err(|e| TrainError::Loss(e.0))?;
            f.add_output("scaled_loss", v);
            f.outputs().len() - 1
        }
        None => 0,
    };

    // The backward pass: outputs become [loss, correct?, scaled_loss?, grads...].
    let mut g = autodiff::grad(&f, &param_ids, target)?;
    let mut grads: Vec<ValueId> = g.outputs()[g.outputs().len() - param_ids.len()..].to_vec();
    let mut finite = None;
    if let Some(sc) = scale {
        let mut e = FnEmitter {
            f: &mut g,
            hint: "unscale".into(),
        };
        let res = (|| -> Result<ValueId, EmitError> {
            use terafab_ir::{BinaryOp, CompareOp, ReduceKind};
            // Gradients divided by the scale; `sum(g * 0)` is 0 unless some element is NaN or
            // infinite, and then NaN, which is the only value not equal to itself.
            let mut total = None;
            for gr in grads.iter_mut() {
                let dt = e.dtype_of(*gr);
                let s = e.conv(sc, dt)?;
                *gr = e.bin(BinaryOp::Div, *gr, s)?;
                let zero = e.splat(0.0, dt)?;
                let z = e.bin(BinaryOp::Mul, *gr, zero)?;
                let rank = e.type_of(z).shape.rank();
                let axes: Vec<usize> = (0..rank).collect();
                let z = e.reduce_axes(ReduceKind::Sum, z, &axes, false)?;
                let z = e.conv(z, DType::F32)?;
                total = Some(match total {
                    Some(t) => e.bin(BinaryOp::Add, t, z)?,
                    None => z,
                });
            }
            let total = total.expect("at least one parameter");
            e.cmp(CompareOp::Eq, total, total)
        })();
        finite = Some(res.map_err(|e| TrainError::Update(e.0))?);
    }

    // The update.
    let n = param_ids.len();
    let (new_params, new_states) = {
        let mut e = FnEmitter {
            f: &mut g,
            hint: "update".into(),
        };
        let res = (|| -> Result<(Vec<ValueId>, Vec<ValueId>), EmitError> {
            let r = e.emit_constant(Tensor::scalar(cfg.lr as f32));
            let mut xs = Vec::with_capacity(n);
            let mut ss = vec![Vec::new(); kinds.len()];
            let pos = optim::t_positive(&mut e, t)?;
            for i in 0..n {
                let (x, gr) = (param_ids[i], grads[i]);
                let st = |k: usize| states[k * n + i];
                match cfg.optimizer {
                    Optimizer::Sgd { weight_decay } => {
                        xs.push(optim::sgd(&mut e, r, x, gr, weight_decay)?);
                    }
                    Optimizer::Momentum(p) => {
                        let (x2, v2) = optim::momentum(&mut e, r, pos, x, gr, st(0), p)?;
                        xs.push(x2);
                        ss[0].push(v2);
                    }
                    Optimizer::Adam(p) => {
                        let (x2, v2, h2) = optim::adam(&mut e, r, t, pos, x, gr, st(0), st(1), p)?;
                        xs.push(x2);
                        ss[0].push(v2);
                        ss[1].push(h2);
                    }
                    Optimizer::Adagrad {
                        decay_factor,
                        epsilon,
                        norm_coefficient,
                    } => {
                        let (x2, h2) = optim::adagrad(
                            &mut e,
                            r,
                            t,
                            x,
                            gr,
                            st(0),
                            decay_factor,
                            epsilon,
                            norm_coefficient,
                        )?;
                        xs.push(x2);
                        ss[0].push(h2);
                    }
                }
            }
            Ok((xs, ss.into_iter().flatten().collect()))
        })();
        res.map_err(|e| TrainError::Update(e.0))?
    };
    // Skipped when a gradient overflowed: the old parameters and states.
    let (new_params, new_states) = match finite {
        Some(ok) => {
            let mut e = FnEmitter {
                f: &mut g,
                hint: "skip".into(),
            };
            let old: Vec<ValueId> = param_ids.iter().chain(&states).copied().collect();
            let mut res = Vec::new();
            for (&new, &old) in new_params.iter().chain(&new_states).zip(&old) {
                res.push(e.sel(ok, new, old).map_err(|e| TrainError::Update(e.0))?);
            }
            let states_new = res.split_off(n);
            (res, states_new)
        }
        None => (new_params, new_states),
    };
    g.body.results.truncate(1 + usize::from(correct.is_some()));
    g.output_names.truncate(g.body.results.len());
    if let Some(ok) = finite {
        let mut e = FnEmitter {
            f: &mut g,
            hint: "finite".into(),
        };
        let v = e
            .conv(ok, DType::F32)
            .map_err(|e| TrainError::Update(e.0))?;
        g.add_output("finite", v);
    }
    for (i, &v) in new_params.iter().enumerate() {
        let name = format!("new_{}", params[i].0);
        g.add_output(&name, v);
    }
    for (j, &v) in new_states.iter().enumerate() {
        let name = format!("new_{}_{}", kinds[j / n], params[j % n].0);
        g.add_output(&name, v);
    }
    verify_function(&g).map_err(|e| TrainError::Verify(Box::new(e)))?;
    Ok(Step {
        func: g,
        data_inputs,
        labels: labels_ty,
        params,
        state_kinds: kinds.to_vec(),
        counts_correct: correct.is_some(),
        loss_scaling: cfg.loss_scaling,
    })
}
