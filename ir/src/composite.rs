//! Composite ops: common subgraphs (softmax, normalizations, activations, attention) that a
//! backend can lower as one unit, carried in the graph as [`Op::Composite`].
//!
//! Every composite has a [`CompositeOp::decompose`] into core ops, which is the single
//! definition of its semantics: [`crate::infer`] types a composite by typing its
//! decomposition (after checking the operands itself, for clear errors), and the interpreter
//! evaluates a composite by evaluating its decomposition, so a composite and its decomposition
//! are bitwise equal there. A backend without a fused lowering uses the decomposition too.
//!
//! Composites are defined on the float types f16, bf16, f32 and f64 only; they compute in their
//! operand type (a frontend that wants f32 statistics for f16 data converts around the op).
//! Float attributes (`epsilon`, `scale`) must be finite.
//!
//! | text form | operands | semantics |
//! |---|---|---|
//! | `softmax(%x) {axes}` | x | `exp(x - max) / sum(exp(x - max))` over `axes` |
//! | `log_softmax(%x) {axes}` | x | `(x - max) - log(sum(exp(x - max)))` over `axes` |
//! | `layer_norm(%x) {axes, epsilon}` | x | `(x - mean) * rsqrt(var + epsilon)` over `axes`, biased variance, no affine |
//! | `rms_norm(%x) {axes, epsilon}` | x | `x * rsqrt(mean(x * x) + epsilon)` over `axes` |
//! | `gelu(%x) {approximate}` | x | `none`: `x/2 * (1 + erf(x / sqrt 2))`; `tanh`: `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))` |
//! | `silu(%x)` | x | `x * logistic(x)` |
//! | `attention(%q, %k, %v[, %mask]) {scale}` | q `[B..., Lq, D]`, k `[B..., Lk, D]`, v `[B..., Lk, Dv]`, mask broadcastable to `[B..., Lq, Lk]` | `softmax(q·kᵀ * scale + mask) · v` over the last axis: `[B..., Lq, Dv]` |
//!
//! Normalized axes (softmax, norms) must be distinct and in range; the norms need the extents
//! of their axes static (the mean divides by their product).

use std::fmt;

use crate::dtype::DType;
use crate::graph::TensorType;
use crate::infer::{InferError, infer};
use crate::op::{Attr, AttrReader, BinaryOp, Op, OpError, ReduceKind, UnaryOp};
use crate::tensor::Tensor;

/// The `approximate` attribute of `gelu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GeluApprox {
    /// The exact form with `erf`.
    None,
    /// The tanh approximation.
    Tanh,
}

impl GeluApprox {
    pub fn name(self) -> &'static str {
        match self {
            GeluApprox::None => "none",
            GeluApprox::Tanh => "tanh",
        }
    }

    pub fn from_name(s: &str) -> Option<GeluApprox> {
        match s {
            "none" => Some(GeluApprox::None),
            "tanh" => Some(GeluApprox::Tanh),
            _ => None,
        }
    }
}

/// A composite op with its attributes. See the module doc for the semantics of each.
#[derive(Debug, Clone, PartialEq)]
pub enum CompositeOp {
    Softmax { axes: Vec<usize> },
    LogSoftmax { axes: Vec<usize> },
    LayerNorm { axes: Vec<usize>, epsilon: f64 },
    RmsNorm { axes: Vec<usize>, epsilon: f64 },
    Gelu { approximate: GeluApprox },
    Silu,
    Attention { scale: f64 },
}

/// An operand of a decomposition node: an operand of the composite, or an earlier node's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operand {
    Input(usize),
    Node(usize),
}

/// A composite expressed in core ops: nodes in order, each a single-result core op applied to
/// operands; the composite's result is the last node's.
#[derive(Debug, Clone, PartialEq)]
pub struct Decomposition {
    pub nodes: Vec<(Op, Vec<Operand>)>,
}

impl Decomposition {
    /// Walk the nodes in order: `apply(k, op, operands)` gets node `k`'s op and its operands
    /// (from `inputs` or earlier nodes' results) and returns the node's result. Returns the
    /// last node's result, or `empty()` when there are no nodes. The interpreter evaluates
    /// composites with it, the type rule types them, fusion expands them into graph nodes.
    pub fn walk<T: Clone, E>(
        &self,
        inputs: &[T],
        mut apply: impl FnMut(usize, &Op, Vec<T>) -> Result<T, E>,
        empty: impl FnOnce() -> E,
    ) -> Result<T, E> {
        let mut results: Vec<T> = Vec::with_capacity(self.nodes.len());
        for (k, (op, operands)) in self.nodes.iter().enumerate() {
            let args = operands
                .iter()
                .map(|o| match *o {
                    Operand::Input(i) => inputs[i].clone(),
                    Operand::Node(i) => results[i].clone(),
                })
                .collect();
            results.push(apply(k, op, args)?);
        }
        results.pop().ok_or_else(empty)
    }
}

/// The text-form names of every composite kind.
pub const NAMES: &[&str] = &[
    "softmax",
    "log_softmax",
    "layer_norm",
    "rms_norm",
    "gelu",
    "silu",
    "attention",
];

/// `1 / sqrt(2)`, the erf argument scale of exact GELU.
pub const GELU_ERF_SCALE: f64 = std::f64::consts::FRAC_1_SQRT_2;
/// The cubic coefficient of the tanh GELU.
pub const GELU_TANH_CUBIC: f64 = 0.044715;
/// `sqrt(2 / pi)`, the tanh argument scale of the tanh GELU.
pub fn gelu_tanh_scale() -> f64 {
    (2.0 / std::f64::consts::PI).sqrt()
}

impl fmt::Display for CompositeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl CompositeOp {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            CompositeOp::Softmax { .. } => "softmax",
            CompositeOp::LogSoftmax { .. } => "log_softmax",
            CompositeOp::LayerNorm { .. } => "layer_norm",
            CompositeOp::RmsNorm { .. } => "rms_norm",
            CompositeOp::Gelu { .. } => "gelu",
            CompositeOp::Silu => "silu",
            CompositeOp::Attention { .. } => "attention",
        }
    }

    /// The attributes in their text-form order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        let ints = |v: &[usize]| Attr::Ints(v.iter().map(|&a| a as i64).collect());
        match self {
            CompositeOp::Softmax { axes } | CompositeOp::LogSoftmax { axes } => {
                vec![("axes", ints(axes))]
            }
            CompositeOp::LayerNorm { axes, epsilon } | CompositeOp::RmsNorm { axes, epsilon } => {
                vec![("axes", ints(axes)), ("epsilon", Attr::Float(*epsilon))]
            }
            CompositeOp::Gelu { approximate } => {
                vec![("approximate", Attr::Ident(approximate.name().into()))]
            }
            CompositeOp::Silu => vec![],
            CompositeOp::Attention { scale } => vec![("scale", Attr::Float(*scale))],
        }
    }

    /// The composite named `name`, reading its attributes from `a`; `None` when `name` is not
    /// a composite.
    pub(crate) fn from_attrs(
        name: &str,
        a: &mut AttrReader<'_>,
    ) -> Option<Result<CompositeOp, OpError>> {
        let finite = |a: &mut AttrReader<'_>, attr: &'static str| -> Result<f64, OpError> {
            let v = a.float(attr)?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(a.bad(attr, "must be finite"))
            }
        };
        let op = match name {
            "softmax" => a.usizes("axes").map(|axes| CompositeOp::Softmax { axes }),
            "log_softmax" => a
                .usizes("axes")
                .map(|axes| CompositeOp::LogSoftmax { axes }),
            "layer_norm" => a.usizes("axes").and_then(|axes| {
                let epsilon = finite(a, "epsilon")?;
                Ok(CompositeOp::LayerNorm { axes, epsilon })
            }),
            "rms_norm" => a.usizes("axes").and_then(|axes| {
                let epsilon = finite(a, "epsilon")?;
                Ok(CompositeOp::RmsNorm { axes, epsilon })
            }),
            "gelu" => a.ident("approximate").and_then(|s| {
                GeluApprox::from_name(&s)
                    .map(|approximate| CompositeOp::Gelu { approximate })
                    .ok_or_else(|| a.bad("approximate", "is not one of none, tanh"))
            }),
            "silu" => Ok(CompositeOp::Silu),
            "attention" => finite(a, "scale").map(|scale| CompositeOp::Attention { scale }),
            _ => return None,
        };
        Some(op)
    }

    /// The number of operands the op takes: `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            CompositeOp::Attention { .. } => (3, 4),
            _ => (1, 1),
        }
    }

    /// Checks the operands (count, element types, ranks, axes, attributes) with errors that
    /// name the problem; the decomposition's own type rules check the rest.
    fn check(&self, inputs: &[&TensorType]) -> Result<(), InferError> {
        let bad = |m: String| Err(InferError(m));
        let (lo, hi) = self.arity();
        if inputs.len() < lo || inputs.len() > hi {
            let want = if lo == hi {
                lo.to_string()
            } else {
                format!("{lo} to {hi}")
            };
            return bad(format!("takes {want} operand(s), got {}", inputs.len()));
        }
        let dt = inputs[0].dtype;
        if !matches!(dt, DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
            return bad(format!(
                "`{}` is defined on f16, bf16, f32 and f64 only, found {dt}",
                self.name()
            ));
        }
        if let Some(t) = inputs.iter().find(|t| t.dtype != dt) {
            return bad(format!("operand element types differ: {dt} vs {}", t.dtype));
        }
        let rank = inputs[0].shape.rank();
        match self {
            CompositeOp::Softmax { axes }
            | CompositeOp::LogSoftmax { axes }
            | CompositeOp::LayerNorm { axes, .. }
            | CompositeOp::RmsNorm { axes, .. } => {
                let mut seen = vec![false; rank];
                for &a in axes {
                    if a >= rank {
                        return bad(format!("axis {a} out of range for rank {rank}"));
                    }
                    if std::mem::replace(&mut seen[a], true) {
                        return bad(format!("axis {a} repeated"));
                    }
                }
                if let CompositeOp::LayerNorm { axes, epsilon }
                | CompositeOp::RmsNorm { axes, epsilon } = self
                {
                    if !epsilon.is_finite() {
                        return bad(format!("epsilon {epsilon} is not finite"));
                    }
                    if let Some(&a) = axes
                        .iter()
                        .find(|&&a| inputs[0].shape.0[a].as_static().is_none())
                    {
                        return bad(format!(
                            "normalized dim {a} of {} must be static",
                            inputs[0].shape
                        ));
                    }
                }
            }
            CompositeOp::Gelu { .. } | CompositeOp::Silu => {}
            CompositeOp::Attention { scale } => {
                if !scale.is_finite() {
                    return bad(format!("scale {scale} is not finite"));
                }
                let (q, k, v) = (inputs[0], inputs[1], inputs[2]);
                if rank < 2 || k.shape.rank() != rank || v.shape.rank() != rank {
                    return bad(format!(
                        "q, k and v must have the same rank >= 2, found {q}, {k}, {v}"
                    ));
                }
                let (qd, kd, vd) = (&q.shape.0, &k.shape.0, &v.shape.0);
                if qd[..rank - 2] != kd[..rank - 2] || qd[..rank - 2] != vd[..rank - 2] {
                    return bad(format!(
                        "q, k and v must have the same batch dims, found {q}, {k}, {v}"
                    ));
                }
                if qd[rank - 1] != kd[rank - 1] {
                    return bad(format!("q {q} and k {k} differ in their last dim"));
                }
                if kd[rank - 2] != vd[rank - 2] {
                    return bad(format!("k {k} and v {v} differ in their key count"));
                }
            }
        }
        Ok(())
    }

    /// The op in core ops for operands of the given types (which must be valid: see
    /// [`crate::infer`]).
    pub fn decompose(&self, inputs: &[&TensorType]) -> Result<Decomposition, InferError> {
        self.check(inputs)?;
        let x = inputs[0];
        let mut b = Builder {
            dtype: x.dtype,
            nodes: Vec::new(),
        };
        let xi = Operand::Input(0);
        match self {
            CompositeOp::Softmax { axes } => {
                softmax(&mut b, xi, axes, false)?;
            }
            CompositeOp::LogSoftmax { axes } => {
                softmax(&mut b, xi, axes, true)?;
            }
            CompositeOp::LayerNorm { axes, epsilon } => {
                let n = count(x, axes)?;
                let m = mean(&mut b, xi, axes, n)?;
                let d = b.binary(BinaryOp::Sub, xi, m);
                let sq = b.binary(BinaryOp::Mul, d, d);
                let var = mean(&mut b, sq, axes, n)?;
                let r = rsqrt_plus(&mut b, var, *epsilon)?;
                b.binary(BinaryOp::Mul, d, r);
            }
            CompositeOp::RmsNorm { axes, epsilon } => {
                let n = count(x, axes)?;
                let sq = b.binary(BinaryOp::Mul, xi, xi);
                let ms = mean(&mut b, sq, axes, n)?;
                let r = rsqrt_plus(&mut b, ms, *epsilon)?;
                b.binary(BinaryOp::Mul, xi, r);
            }
            CompositeOp::Gelu { approximate } => {
                let inner = match approximate {
                    GeluApprox::None => {
                        let s = b.mul_k(xi, GELU_ERF_SCALE)?;
                        b.unary(UnaryOp::Erf, s)
                    }
                    GeluApprox::Tanh => {
                        let x2 = b.binary(BinaryOp::Mul, xi, xi);
                        let x3 = b.binary(BinaryOp::Mul, x2, xi);
                        let c3 = b.mul_k(x3, GELU_TANH_CUBIC)?;
                        let s = b.binary(BinaryOp::Add, xi, c3);
                        let s = b.mul_k(s, gelu_tanh_scale())?;
                        b.unary(UnaryOp::Tanh, s)
                    }
                };
                let one = b.constant(1.0)?;
                let one_plus = b.binary(BinaryOp::Add, inner, one);
                let half = b.mul_k(xi, 0.5)?;
                b.binary(BinaryOp::Mul, half, one_plus);
            }
            CompositeOp::Silu => {
                let l = b.unary(UnaryOp::Logistic, xi);
                b.binary(BinaryOp::Mul, xi, l);
            }
            CompositeOp::Attention { scale } => {
                let r = x.shape.rank();
                let batch: Vec<usize> = (0..r - 2).collect();
                let s = b.node(
                    Op::DotGeneral {
                        lhs_batch: batch.clone(),
                        rhs_batch: batch.clone(),
                        lhs_contract: vec![r - 1],
                        rhs_contract: vec![r - 1],
                    },
                    vec![xi, Operand::Input(1)],
                );
                let mut s = b.mul_k(s, *scale)?;
                if inputs.len() == 4 {
                    s = b.binary(BinaryOp::Add, s, Operand::Input(3));
                }
                let p = softmax(&mut b, s, &[r - 1], false)?;
                b.node(
                    Op::DotGeneral {
                        lhs_batch: batch.clone(),
                        rhs_batch: batch,
                        lhs_contract: vec![r - 1],
                        rhs_contract: vec![r - 2],
                    },
                    vec![p, Operand::Input(2)],
                );
            }
        }
        Ok(Decomposition { nodes: b.nodes })
    }

    /// The result type: the operands are checked, then the decomposition is typed node by node
    /// (so the type rule and the semantics cannot disagree).
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<TensorType, InferError> {
        let d = self.decompose(inputs)?;
        let owned: Vec<TensorType> = inputs.iter().map(|&t| t.clone()).collect();
        d.walk(
            &owned,
            |_, op, tys| {
                let tys: Vec<&TensorType> = tys.iter().collect();
                let mut out = infer(op, &tys).map_err(|e| {
                    InferError(format!("`{}` of {}: {}", op.name(), list(&tys), e.0))
                })?;
                match out.pop() {
                    Some(t) if out.is_empty() => Ok(t),
                    _ => Err(InferError(format!("`{}` is not single-result", op.name()))),
                }
            },
            || InferError("empty decomposition".into()),
        )
    }
}

fn list(ts: &[&TensorType]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The number of elements each reduction over `axes` of `x` combines (static dims only).
fn count(x: &TensorType, axes: &[usize]) -> Result<usize, InferError> {
    axes.iter().try_fold(1usize, |n, &a| {
        let d = x.shape.0.get(a).and_then(|d| d.as_static());
        d.and_then(|d| n.checked_mul(d))
            .ok_or_else(|| InferError(format!("normalized dim {a} of {} must be static", x.shape)))
    })
}

/// Appends decomposition nodes.
struct Builder {
    dtype: DType,
    nodes: Vec<(Op, Vec<Operand>)>,
}

impl Builder {
    fn node(&mut self, op: Op, operands: Vec<Operand>) -> Operand {
        self.nodes.push((op, operands));
        Operand::Node(self.nodes.len() - 1)
    }

    fn unary(&mut self, u: UnaryOp, x: Operand) -> Operand {
        self.node(Op::Unary(u), vec![x])
    }

    fn binary(&mut self, op: BinaryOp, a: Operand, b: Operand) -> Operand {
        self.node(Op::Binary(op), vec![a, b])
    }

    /// A scalar constant `v` rounded to the element type.
    fn constant(&mut self, v: f64) -> Result<Operand, InferError> {
        let t = Tensor::from_fn(self.dtype, &[], |_| v).map_err(|e| InferError(e.to_string()))?;
        Ok(self.node(Op::Constant { value: t }, vec![]))
    }

    /// `x * v` for a scalar constant `v`.
    fn mul_k(&mut self, x: Operand, v: f64) -> Result<Operand, InferError> {
        let k = self.constant(v)?;
        Ok(self.binary(BinaryOp::Mul, x, k))
    }

    fn reduce(&mut self, kind: ReduceKind, x: Operand, axes: &[usize]) -> Operand {
        self.node(
            Op::Reduce {
                kind,
                axes: axes.to_vec(),
                keep_dims: true,
            },
            vec![x],
        )
    }
}

/// `reduce_sum(x) / n` over `axes`, keeping the reduced dims.
fn mean(b: &mut Builder, x: Operand, axes: &[usize], n: usize) -> Result<Operand, InferError> {
    let s = b.reduce(ReduceKind::Sum, x, axes);
    let n = b.constant(n as f64)?;
    Ok(b.binary(BinaryOp::Div, s, n))
}

/// `rsqrt(v + eps)`.
fn rsqrt_plus(b: &mut Builder, v: Operand, eps: f64) -> Result<Operand, InferError> {
    let e = b.constant(eps)?;
    let s = b.binary(BinaryOp::Add, v, e);
    Ok(b.unary(UnaryOp::Rsqrt, s))
}

/// Softmax (or log-softmax) of `x` over `axes`.
fn softmax(b: &mut Builder, x: Operand, axes: &[usize], log: bool) -> Result<Operand, InferError> {
    let m = b.reduce(ReduceKind::Max, x, axes);
    let d = b.binary(BinaryOp::Sub, x, m);
    let e = b.unary(UnaryOp::Exp, d);
    let s = b.reduce(ReduceKind::Sum, e, axes);
    Ok(if log {
        let l = b.unary(UnaryOp::Log, s);
        b.binary(BinaryOp::Sub, d, l)
    } else {
        b.binary(BinaryOp::Div, e, s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interp::{Bindings, eval_op, run_function};
    use crate::parse::parse_function;
    use crate::print::print_function;
    use crate::shape::{Dim, Shape};
    use crate::verify::verify_function;

    fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn eval(c: CompositeOp, inputs: &[Tensor]) -> Vec<f64> {
        let out = eval_op(&Op::Composite(c), inputs, &Bindings::new()).unwrap();
        out[0].to_f64_vec()
    }

    fn close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn hand_computed_values() {
        let x = f32s(&[2, 2], &[0.0, 1.0, 2.0, 2.0]);
        let e = std::f64::consts::E;
        close(
            &eval(
                CompositeOp::Softmax { axes: vec![1] },
                std::slice::from_ref(&x),
            ),
            &[1.0 / (1.0 + e), e / (1.0 + e), 0.5, 0.5],
            1e-6,
        );
        close(
            &eval(
                CompositeOp::LogSoftmax { axes: vec![1] },
                std::slice::from_ref(&x),
            ),
            &[
                -(1.0 + e).ln(),
                1.0 - (1.0 + e).ln(),
                -2f64.ln(),
                -2f64.ln(),
            ],
            1e-6,
        );
        // Mean 0.5, variance 0.25 in row 0; a constant row normalizes to 0 with eps > 0.
        close(
            &eval(
                CompositeOp::LayerNorm {
                    axes: vec![1],
                    epsilon: 0.0,
                },
                std::slice::from_ref(&x),
            )[..2],
            &[-1.0, 1.0],
            1e-6,
        );
        close(
            &eval(
                CompositeOp::LayerNorm {
                    axes: vec![1],
                    epsilon: 0.75,
                },
                std::slice::from_ref(&x),
            ),
            &[-0.5, 0.5, 0.0, 0.0],
            1e-6,
        );
        // rms of [0, 1] is sqrt(0.5); of [2, 2] is 2 (+ eps 1 under the root: sqrt(5)).
        close(
            &eval(
                CompositeOp::RmsNorm {
                    axes: vec![1],
                    epsilon: 1.0,
                },
                std::slice::from_ref(&x),
            ),
            &[
                0.0,
                1.0 / 1.5f64.sqrt(),
                2.0 / 5f64.sqrt(),
                2.0 / 5f64.sqrt(),
            ],
            1e-6,
        );
        let g = f32s(&[3], &[-1.0, 0.0, 1.0]);
        // gelu(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.841344746...
        close(
            &eval(
                CompositeOp::Gelu {
                    approximate: GeluApprox::None,
                },
                std::slice::from_ref(&g),
            ),
            &[-0.15865525393145707, 0.0, 0.8413447460685429],
            1e-6,
        );
        close(
            &eval(
                CompositeOp::Gelu {
                    approximate: GeluApprox::Tanh,
                },
                std::slice::from_ref(&g),
            ),
            &[-0.15880800939172324, 0.0, 0.8411919906082768],
            1e-6,
        );
        close(
            &eval(CompositeOp::Silu, &[g]),
            &[-1.0 / (1.0 + e), 0.0, 1.0 / (1.0 + 1.0 / e)],
            1e-6,
        );
    }

    #[test]
    fn attention_by_hand() {
        // One query against two keys with scores 0 and ln 3 (scale 1): weights 1/4 and 3/4.
        let q = f32s(&[1, 1, 1], &[1.0]);
        let k = f32s(&[1, 2, 1], &[0.0, 3f32.ln()]);
        let v = f32s(&[1, 2, 2], &[4.0, 0.0, 0.0, 8.0]);
        let a = CompositeOp::Attention { scale: 1.0 };
        close(
            &eval(a.clone(), &[q.clone(), k.clone(), v.clone()]),
            &[1.0, 6.0],
            1e-6,
        );
        // A mask of -inf on the second key leaves the first alone.
        let mask = f32s(&[1, 2], &[0.0, f32::NEG_INFINITY]);
        close(&eval(a, &[q, k, v, mask]), &[4.0, 0.0], 1e-6);
    }

    #[test]
    fn types_and_errors() {
        let t = |d: DType, dims: &[usize]| TensorType::from_static(d, dims);
        let x = t(DType::F32, &[2, 3]);
        let sm = CompositeOp::Softmax { axes: vec![1] };
        assert_eq!(sm.infer(&[&x]).unwrap(), x);
        assert!(sm.infer(&[&t(DType::I32, &[2, 3])]).is_err());
        assert!(sm.infer(&[&t(DType::F8E4M3FN, &[2, 3])]).is_err());
        assert!(sm.infer(&[&x, &x]).is_err());
        assert!(CompositeOp::Softmax { axes: vec![2] }.infer(&[&x]).is_err());
        assert!(
            CompositeOp::Softmax { axes: vec![1, 1] }
                .infer(&[&x])
                .is_err()
        );
        // Norms need their normalized dims static; other dims may be symbolic.
        let sym = TensorType::new(
            DType::BF16,
            Shape::new(vec![Dim::Sym("N".into()), Dim::Static(4)]),
        );
        let ln = |axes: Vec<usize>| CompositeOp::LayerNorm {
            axes,
            epsilon: 1e-5,
        };
        assert_eq!(ln(vec![1]).infer(&[&sym]).unwrap(), sym);
        assert!(ln(vec![0]).infer(&[&sym]).is_err());
        let bad_eps = CompositeOp::RmsNorm {
            axes: vec![1],
            epsilon: f64::NAN,
        };
        assert!(bad_eps.infer(&[&x]).is_err());
        let a = CompositeOp::Attention { scale: 0.5 };
        let (q, k, v) = (
            t(DType::F16, &[2, 5, 4]),
            t(DType::F16, &[2, 7, 4]),
            t(DType::F16, &[2, 7, 3]),
        );
        assert_eq!(a.infer(&[&q, &k, &v]).unwrap(), t(DType::F16, &[2, 5, 3]));
        let m = t(DType::F16, &[5, 7]);
        assert_eq!(
            a.infer(&[&q, &k, &v, &m]).unwrap(),
            t(DType::F16, &[2, 5, 3])
        );
        // The mask may not enlarge the scores.
        assert!(a.infer(&[&q, &k, &v, &t(DType::F16, &[3, 5, 7])]).is_err());
        assert!(a.infer(&[&q, &k]).is_err());
        assert!(a.infer(&[&q, &t(DType::F16, &[2, 7, 5]), &v]).is_err());
        assert!(a.infer(&[&q, &k, &t(DType::F16, &[2, 6, 3])]).is_err());
        assert!(a.infer(&[&q, &t(DType::F16, &[3, 7, 4]), &v]).is_err());
        assert!(a.infer(&[&q, &k, &t(DType::F32, &[2, 7, 3])]).is_err());
        assert!(
            a.infer(&[
                &t(DType::F16, &[4]),
                &t(DType::F16, &[4]),
                &t(DType::F16, &[4])
            ])
            .is_err()
        );
    }

    #[test]
    fn bad_operands_are_errors_not_panics() {
        let i = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        for c in [
            CompositeOp::Silu,
            CompositeOp::Softmax { axes: vec![0] },
            CompositeOp::Attention { scale: 1.0 },
        ] {
            assert!(
                eval_op(
                    &Op::Composite(c),
                    std::slice::from_ref(&i),
                    &Bindings::new()
                )
                .is_err()
            );
        }
    }

    #[test]
    fn text_form_round_trips_and_verifies() {
        let src = "func @f(%x: f32[2,4], %q: f32[3,5,4], %k: f32[3,6,4], %v: f32[3,6,2], %m: f32[5,6]) -> (a: f32[2,4], b: f32[2,4], c: f32[2,4], d: f32[2,4], e: f32[2,4], f: f32[2,4], g: f32[3,5,2], h: f32[3,5,2]) {
  %a = softmax(%x) {axes=[1]} : f32[2,4]
  %b = log_softmax(%x) {axes=[0, 1]} : f32[2,4]
  %c = layer_norm(%x) {axes=[1], epsilon=1e-5} : f32[2,4]
  %d = rms_norm(%x) {axes=[1], epsilon=1.0000000000000001e-6} : f32[2,4]
  %e = gelu(%x) {approximate=tanh} : f32[2,4]
  %f = silu(%x) : f32[2,4]
  %g = attention(%q, %k, %v) {scale=0.5} : f32[3,5,2]
  %h = attention(%q, %k, %v, %m) {scale=-0.0} : f32[3,5,2]
  return %a, %b, %c, %d, %e, %f, %g, %h
}
";
        let f = parse_function(src).unwrap();
        verify_function(&f).unwrap();
        let text = print_function(&f);
        assert_eq!(print_function(&parse_function(&text).unwrap()), text);
        assert!(text.contains("epsilon=1e-5"), "{text}");
        assert!(text.contains("scale=-0.0"), "{text}");
        // A declared type that disagrees with the composite's rule is a verifier error.
        let wrong = src.replace(
            "%g = attention(%q, %k, %v) {scale=0.5} : f32[3,5,2]",
            "%g = attention(%q, %k, %v) {scale=0.5} : f32[3,5,4]",
        );
        assert!(parse_function(&wrong).map_or(true, |f| verify_function(&f).is_err()));
        // Bad attributes are parse errors.
        for bad in [
            "%a = softmax(%x) {axes=[1], epsilon=0.5} : f32[2,4]",
            "%a = gelu(%x) {approximate=erf} : f32[2,4]",
            "%a = layer_norm(%x) {axes=[1], epsilon=inf} : f32[2,4]",
            "%a = layer_norm(%x) {axes=[1], epsilon=nan} : f32[2,4]",
            "%a = layer_norm(%x) {axes=[1]} : f32[2,4]",
        ] {
            let s = src.replace("%a = softmax(%x) {axes=[1]} : f32[2,4]", bad);
            assert!(parse_function(&s).is_err(), "{bad}");
        }
        // And the interpreter runs them.
        let ins: Vec<Tensor> = f
            .inputs()
            .iter()
            .map(|&v| {
                let ty = f.values.ty(v);
                let dims: Vec<usize> = ty
                    .shape
                    .dims()
                    .iter()
                    .map(|d| d.as_static().unwrap())
                    .collect();
                Tensor::from_fn(DType::F32, &dims, |i| (i as f64 * 0.37).sin()).unwrap()
            })
            .collect();
        let outs = run_function(&f, &ins).unwrap();
        assert!(
            outs.iter()
                .all(|t| t.to_f64_vec().iter().all(|v| v.is_finite()))
        );
    }

    #[test]
    fn float_attrs_round_trip() {
        for v in [0.1, -2.5e-300, 1e300, 3.0, 5e-324, -0.0, f64::MAX] {
            let op = Op::Composite(CompositeOp::Attention { scale: v });
            let text = format!(
                "func @f(%q: f32[1,1], %k: f32[1,1], %v: f32[1,1]) -> (y: f32[1,1]) {{\n  %y = attention(%q, %k, %v) {{scale={}}} : f32[1,1]\n  return %y\n}}\n",
                match &op.attrs()[0].1 {
                    Attr::Float(_) => format!("{v:?}"),
                    _ => unreachable!(),
                }
            );
            let f = parse_function(&text).unwrap();
            assert_eq!(f.body.nodes[0].op, op);
            assert_eq!(print_function(&f), text);
        }
    }
}
