//! Recognition of composite patterns (softmax, layer-norm, RMS-norm, GELU, SiLU, attention) as
//! single [`Op::Composite`] ops, which a backend can lower as one unit.
//!
//! A rule's pattern anchors the root of the subgraph; its builder reads the rest from the
//! e-classes (a pattern never has a subterm holding an op with attributes whose variables all
//! occur earlier in it: egg looks such a ground subterm up by its exact e-node, and a pattern's
//! attributes are wildcards, so the lookup never matches), accepting the usual operand orders and spellings (a mean as `reduce_sum / n` or
//! `reduce_sum * (1/n)`, a square as `d * d` or `pow(d, 2)`, `x * (1/sqrt 2)` or `x / sqrt 2`).
//!
//! **Exactness.** A rule is exact ([`rule`]) when every subgraph it accepts is literally the
//! composite's decomposition ([`terafab_ir::composite`]), constants bitwise included, so the
//! interpreter's results do not change: those are the frontend's own decompositions (of ONNX
//! Softmax, LogSoftmax, LayerNormalization, RMSNormalization, Gelu, Swish). The other forms
//! differ from the decomposition by rounding: other operand orders (float `add`/`mul` differ in
//! the NaN payload they return), `/ c` for `* (1/c)`, `sqrt` and a division for `rsqrt`, and
//! constants that are the composite's within [`const_tol`] (relative `1e-6` for f32 and f64,
//! 2 ulps for f16 and bf16) rather than bitwise. Those rules are [`inexact`] with the result
//! tolerance [`RTOL`] (or `0` where only NaN payloads can differ).

use egg::{Id, Symbol};
use terafab_ir::composite::{
    CompositeOp, GELU_ERF_SCALE, GELU_TANH_CUBIC, GeluApprox, gelu_tanh_scale,
};
use terafab_ir::{DType, Op, Tensor};

use super::rules::{Expr, Match, RuleDef, inexact, rule};

/// The result tolerance of the inexact recognitions, relative to the result's magnitude (see
/// [`super::rules::Accuracy::Inexact`]): a few f32 roundings (about `6e-8` each) re-associated,
/// plus the constants' own tolerance of `1e-6`, amplified by at most a small factor in these
/// well-conditioned functions (for inputs of moderate magnitude: a layer-norm of values whose
/// mean dwarfs their spread loses relative precision in any evaluation order).
pub const RTOL: f64 = 1e-5;

/// The recognition rules.
pub const RULES: &[RuleDef] = &[
    // e / sum(e) with e = exp(x - max(x)) over the same axes: the softmax decomposition.
    rule("softmax", "(div ?e ?s)", softmax),
    // d - log(sum(exp(d))) with d = x - max(x) over the same axes: the log-softmax decomposition.
    rule("log-softmax", "(sub ?d (log ?s))", log_softmax),
    // (x - mean) * rsqrt(mean((x - mean)^2) + eps), means as sum / n: the frontend's form.
    rule("layer-norm", "(mul ?d (rsqrt ?s))", layer_norm_exact),
    // The same with other mean, square and operand-order spellings.
    inexact("layer-norm-rsqrt", "(mul ?a ?b)", layer_norm_rsqrt, RTOL),
    // (x - mean) / sqrt(var + eps): PyTorch's export (ReduceMean, Sub, Pow 2, Add, Sqrt, Div).
    inexact(
        "layer-norm-div-sqrt",
        "(div ?d (sqrt ?s))",
        layer_norm_div_sqrt,
        RTOL,
    ),
    // x * rsqrt(mean(x * x) + eps), the mean as sum / n: the frontend's form.
    rule("rms-norm", "(mul ?x (rsqrt ?s))", rms_norm_exact),
    // The same with other mean, square and operand-order spellings.
    inexact("rms-norm-rsqrt", "(mul ?a ?b)", rms_norm_rsqrt, RTOL),
    // x / sqrt(mean(x^2) + eps).
    inexact(
        "rms-norm-div-sqrt",
        "(div ?x (sqrt ?s))",
        rms_norm_div_sqrt,
        RTOL,
    ),
    // x * (1 / sqrt(mean(x^2) + eps)): ONNX Reciprocal of the root.
    inexact(
        "rms-norm-recip-sqrt",
        "(mul ?a ?b)",
        rms_norm_recip_sqrt,
        RTOL,
    ),
    // (x * 0.5) * (erf(x * (1/sqrt 2)) + 1) with the decomposition's constants: the frontend's form.
    rule("gelu-erf", "(mul ?a ?b)", gelu_erf_exact),
    // (0.5 x) * (1 + erf(x / sqrt 2)) in any operand order and spelling.
    inexact(
        "gelu-erf-half-first",
        "(mul ?a ?b)",
        gelu_erf_half_first,
        RTOL,
    ),
    // (x * (1 + erf(x / sqrt 2))) * 0.5: the half multiplied last (as exporters write it).
    inexact(
        "gelu-erf-half-last",
        "(mul ?a ?b)",
        gelu_erf_half_last,
        RTOL,
    ),
    // x * (0.5 * (1 + erf(x / sqrt 2))).
    inexact(
        "gelu-erf-half-inner",
        "(mul ?a ?b)",
        gelu_erf_half_inner,
        RTOL,
    ),
    // (x * 0.5) * (tanh(sqrt(2/pi) (x + 0.044715 x^3)) + 1) in the frontend's form.
    rule("gelu-tanh", "(mul ?a ?b)", gelu_tanh_exact),
    // (0.5 x) * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in any operand order and spelling.
    inexact(
        "gelu-tanh-half-first",
        "(mul ?a ?b)",
        gelu_tanh_half_first,
        RTOL,
    ),
    // (x * (1 + tanh(...))) * 0.5.
    inexact(
        "gelu-tanh-half-last",
        "(mul ?a ?b)",
        gelu_tanh_half_last,
        RTOL,
    ),
    // x * (0.5 * (1 + tanh(...))).
    inexact(
        "gelu-tanh-half-inner",
        "(mul ?a ?b)",
        gelu_tanh_half_inner,
        RTOL,
    ),
    // x * logistic(x): the SiLU decomposition.
    rule("silu", "(mul ?x (logistic ?x))", silu),
    // logistic(x) * x (only a NaN's payload can differ).
    inexact("silu-swapped", "(mul (logistic ?x) ?x)", silu, 0.0),
    // softmax(q·kᵀ * scale [+ mask]) · v over the last axis (k transposed by the dot or a
    // transpose; the scale as `* c` or `/ c`, or absent).
    inexact(
        "attention",
        "(dot_general (softmax ?s) ?v)",
        attention,
        RTOL,
    ),
];

// ---- reading e-classes ------------------------------------------------------------------------

/// The ops of kind `kind` in e-class `id`, with their operands.
fn ops(m: &Match<'_>, id: Id, kind: &str) -> Vec<(Op, Vec<Id>)> {
    m.ops(id, Symbol::from(kind))
}

/// The operand pairs of the binary ops of kind `kind` in e-class `id`.
fn pairs(m: &Match<'_>, id: Id, kind: &str) -> Vec<(Id, Id)> {
    ops(m, id, kind)
        .into_iter()
        .filter_map(|(_, c)| match c.as_slice() {
            &[a, b] => Some((a, b)),
            _ => None,
        })
        .collect()
}

/// The operands of the unary ops of kind `kind` in e-class `id`.
fn unaries(m: &Match<'_>, id: Id, kind: &str) -> Vec<Id> {
    ops(m, id, kind)
        .into_iter()
        .filter_map(|(_, c)| match c.as_slice() {
            &[a] => Some(a),
            _ => None,
        })
        .collect()
}

/// `(a, b)` and, unless `exact`, `(b, a)`: the operand orders a commutative pattern accepts.
fn orders(a: Id, b: Id, exact: bool) -> Vec<(Id, Id)> {
    if exact {
        vec![(a, b)]
    } else {
        vec![(a, b), (b, a)]
    }
}

fn same(m: &Match<'_>, a: Id, b: Id) -> bool {
    m.egraph.find(a) == m.egraph.find(b)
}

fn dtype(m: &Match<'_>, id: Id) -> Option<DType> {
    m.class_ty(id).map(|t| t.dtype)
}

/// The value of a constant in e-class `id` whose elements are all equal (bitwise).
fn splat(m: &Match<'_>, id: Id) -> Option<f64> {
    m.constants(id).into_iter().find_map(|t| splat_value(&t))
}

fn splat_value(t: &Tensor) -> Option<f64> {
    if t.is_empty() || t.len() > 4096 || !t.dtype().is_float() {
        return None;
    }
    let v = t.to_f64_vec();
    let first = v[0];
    v.iter()
        .all(|x| x.to_bits() == first.to_bits())
        .then_some(first)
}

/// The relative tolerance for a constant of type `d` standing for an exact value: `1e-6` for
/// f32 and f64 (f32 rounding is below `6e-8`, so `0.70710677` passes and `0.7071` does not),
/// two ulps for f16 (`2e-3`) and bf16 (`1.6e-2`).
pub fn const_tol(d: DType) -> f64 {
    match d {
        DType::F16 => 2.0 * 9.765625e-4,
        DType::BF16 => 2.0 * 7.8125e-3,
        _ => 1e-6,
    }
}

/// Whether e-class `id` holds a float splat constant equal to `want` rounded to its type.
fn exactly(m: &Match<'_>, id: Id, want: f64) -> bool {
    dtype(m, id).is_some_and(|d| d.is_float()) && m.splat(id, want)
}

/// Whether e-class `id` holds a float splat constant within [`const_tol`] of `want`.
fn near(m: &Match<'_>, id: Id, want: f64) -> bool {
    let (Some(d), Some(v)) = (dtype(m, id), splat(m, id)) else {
        return false;
    };
    (v - want).abs() <= const_tol(d) * want.abs()
}

/// A constant accepted for `want`: bitwise in exact mode, within tolerance otherwise.
fn constant(m: &Match<'_>, id: Id, want: f64, exact: bool) -> bool {
    if exact {
        exactly(m, id, want)
    } else {
        near(m, id, want)
    }
}

/// The keep-dims reductions of kind `kind` in e-class `id`: `(axes, operand)`.
fn reductions(m: &Match<'_>, id: Id, kind: &str) -> Vec<(Vec<usize>, Id)> {
    ops(m, id, kind)
        .into_iter()
        .filter_map(|(op, c)| match (op, c.as_slice()) {
            (
                Op::Reduce {
                    axes,
                    keep_dims: true,
                    ..
                },
                &[x],
            ) => Some((axes, x)),
            _ => None,
        })
        .collect()
}

/// The number of elements a reduction of e-class `x` over `axes` combines.
fn count(m: &Match<'_>, x: Id, axes: &[usize]) -> Option<usize> {
    let dims = m.class_ty(x)?.shape.as_static()?;
    axes.iter()
        .try_fold(1usize, |n, &a| n.checked_mul(*dims.get(a)?))
}

fn same_set(a: &[usize], b: &[usize]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// A mean found in an e-class: of `x` over `axes`; `exact` when it is `reduce_sum(x) / n`
/// with `n` bitwise the count, as the decompositions compute it.
struct Mean {
    x: Id,
    axes: Vec<usize>,
    exact: bool,
}

/// The means in e-class `id`: `reduce_sum(x) / n`, and (inexact) `reduce_sum(x) * (1/n)` in
/// either order, with keep-dims reductions.
fn means(m: &Match<'_>, id: Id) -> Vec<Mean> {
    let mut out = Vec::new();
    for (s, n) in pairs(m, id, "div") {
        for (axes, x) in reductions(m, s, "reduce_sum") {
            let Some(c) = count(m, x, &axes) else {
                continue;
            };
            if exactly(m, n, c as f64) {
                out.push(Mean {
                    x,
                    axes,
                    exact: true,
                });
            } else if near(m, n, c as f64) {
                out.push(Mean {
                    x,
                    axes,
                    exact: false,
                });
            }
        }
    }
    for (a, b) in pairs(m, id, "mul") {
        for (s, r) in orders(a, b, false) {
            for (axes, x) in reductions(m, s, "reduce_sum") {
                let Some(c) = count(m, x, &axes) else {
                    continue;
                };
                if c > 0 && near(m, r, 1.0 / c as f64) {
                    out.push(Mean {
                        x,
                        axes,
                        exact: false,
                    });
                }
            }
        }
    }
    out
}

/// The values `d` whose square e-class `id` holds: `d * d` (exact) and `pow(d, 2)`.
fn squares(m: &Match<'_>, id: Id) -> Vec<(Id, bool)> {
    let mut out: Vec<(Id, bool)> = pairs(m, id, "mul")
        .into_iter()
        .filter(|&(a, b)| same(m, a, b))
        .map(|(a, _)| (a, true))
        .collect();
    for (d, e) in pairs(m, id, "pow") {
        if exactly(m, e, 2.0) {
            out.push((d, false));
        }
    }
    out
}

/// `v + eps` in e-class `id` for a finite splat constant `eps`: `(v, eps, exact)`, exact for
/// the decomposition's order `add(v, eps)`.
fn plus_eps(m: &Match<'_>, id: Id) -> Vec<(Id, f64, bool)> {
    let mut out = Vec::new();
    for (a, b) in pairs(m, id, "add") {
        for (v, e) in orders(a, b, false) {
            if let Some(eps) = splat(m, e).filter(|e| e.is_finite()) {
                out.push((v, eps, v == a));
            }
        }
    }
    out
}

fn composite(c: CompositeOp, operands: Vec<Expr>) -> Expr {
    Expr::Node(Op::Composite(c), operands)
}

// ---- softmax --------------------------------------------------------------------------------

/// `(x, axes)` for every `x - reduce_max(x)` (keep-dims, over `axes`) in e-class `d`.
fn max_shifted(m: &Match<'_>, d: Id) -> Vec<(Id, Vec<usize>)> {
    let mut out = Vec::new();
    for (x, mx) in pairs(m, d, "sub") {
        for (axes, xm) in reductions(m, mx, "reduce_max") {
            if same(m, xm, x) {
                out.push((x, axes));
            }
        }
    }
    out
}

/// `div(e, reduce_sum(e))` with `e = exp(x - reduce_max(x))`.
fn softmax(m: &Match<'_>) -> Vec<Expr> {
    let Some(e) = m.var("?e") else { return vec![] };
    let mut out = Vec::new();
    for (e2, s) in pairs(m, m.eclass, "div") {
        if !same(m, e2, e) {
            continue;
        }
        for (sum_axes, es) in reductions(m, s, "reduce_sum") {
            if !same(m, es, e) {
                continue;
            }
            for d in unaries(m, e, "exp") {
                for (x, max_axes) in max_shifted(m, d) {
                    if max_axes == sum_axes {
                        out.push(composite(
                            CompositeOp::Softmax {
                                axes: sum_axes.clone(),
                            },
                            vec![Expr::Class(x)],
                        ));
                    }
                }
            }
        }
    }
    out
}

/// `sub(d, log(reduce_sum(exp(d))))` with `d = x - reduce_max(x)`.
fn log_softmax(m: &Match<'_>) -> Vec<Expr> {
    let Some(d) = m.var("?d") else { return vec![] };
    let mut out = Vec::new();
    for (d2, l) in pairs(m, m.eclass, "sub") {
        if !same(m, d2, d) {
            continue;
        }
        for s in unaries(m, l, "log") {
            for (sum_axes, e) in reductions(m, s, "reduce_sum") {
                if !unaries(m, e, "exp").into_iter().any(|dd| same(m, dd, d)) {
                    continue;
                }
                for (x, max_axes) in max_shifted(m, d) {
                    if max_axes == sum_axes {
                        out.push(composite(
                            CompositeOp::LogSoftmax {
                                axes: sum_axes.clone(),
                            },
                            vec![Expr::Class(x)],
                        ));
                    }
                }
            }
        }
    }
    out
}

// ---- layer-norm and RMS-norm -------------------------------------------------------------------

/// How a norm pattern spells the inverse standard deviation.
#[derive(Clone, Copy, PartialEq)]
enum InvStd {
    /// `num * rsqrt(s)` (exact mode: in this order only).
    Rsqrt,
    /// `num / sqrt(s)`.
    DivSqrt,
    /// `num * (1 / sqrt(s))`, either order.
    RecipSqrt,
}

/// `(num, s)` for the matched e-class `num ∘ invstd(s)`.
fn inv_std(m: &Match<'_>, form: InvStd, exact: bool) -> Vec<(Id, Id)> {
    let mut out = Vec::new();
    match form {
        InvStd::Rsqrt => {
            for (a, b) in pairs(m, m.eclass, "mul") {
                for (num, r) in orders(a, b, exact) {
                    out.extend(unaries(m, r, "rsqrt").into_iter().map(|s| (num, s)));
                }
            }
        }
        InvStd::DivSqrt => {
            for (num, r) in pairs(m, m.eclass, "div") {
                out.extend(unaries(m, r, "sqrt").into_iter().map(|s| (num, s)));
            }
        }
        InvStd::RecipSqrt => {
            for (a, b) in pairs(m, m.eclass, "mul") {
                for (num, r) in orders(a, b, false) {
                    for (one, q) in pairs(m, r, "div") {
                        if exactly(m, one, 1.0) {
                            out.extend(unaries(m, q, "sqrt").into_iter().map(|s| (num, s)));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Layer-norms `(x - mean(x)) ∘ invstd(mean((x - mean(x))^2) + eps)`. In exact mode every
/// piece is the decomposition's (means as `sum / n`, the square as `d * d`, `add(var, eps)`,
/// `d * rsqrt`, all reductions over the same axes in the same order).
fn layer_norm(m: &Match<'_>, form: InvStd, exact: bool) -> Vec<Expr> {
    let mut out = Vec::new();
    for (d, s) in inv_std(m, form, exact) {
        for (v, eps, eps_exact) in plus_eps(m, s) {
            if exact && !eps_exact {
                continue;
            }
            for (x, mc) in pairs(m, d, "sub") {
                for mean in means(m, mc) {
                    if !same(m, mean.x, x) || (exact && !mean.exact) {
                        continue;
                    }
                    for var in means(m, v) {
                        if exact && !(var.exact && var.axes == mean.axes) {
                            continue;
                        }
                        if !same_set(&var.axes, &mean.axes) {
                            continue;
                        }
                        let squared = squares(m, var.x)
                            .into_iter()
                            .any(|(dd, sq_exact)| same(m, dd, d) && (sq_exact || !exact));
                        if squared {
                            out.push(composite(
                                CompositeOp::LayerNorm {
                                    axes: mean.axes.clone(),
                                    epsilon: eps,
                                },
                                vec![Expr::Class(x)],
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

fn layer_norm_exact(m: &Match<'_>) -> Vec<Expr> {
    layer_norm(m, InvStd::Rsqrt, true)
}

fn layer_norm_rsqrt(m: &Match<'_>) -> Vec<Expr> {
    layer_norm(m, InvStd::Rsqrt, false)
}

fn layer_norm_div_sqrt(m: &Match<'_>) -> Vec<Expr> {
    layer_norm(m, InvStd::DivSqrt, false)
}

/// RMS-norms `x ∘ invstd(mean(x^2) + eps)`; exact mode as for [`layer_norm`].
fn rms_norm(m: &Match<'_>, form: InvStd, exact: bool) -> Vec<Expr> {
    let mut out = Vec::new();
    for (x, s) in inv_std(m, form, exact) {
        for (v, eps, eps_exact) in plus_eps(m, s) {
            if exact && !eps_exact {
                continue;
            }
            for ms in means(m, v) {
                if exact && !ms.exact {
                    continue;
                }
                let squared = squares(m, ms.x)
                    .into_iter()
                    .any(|(xx, sq_exact)| same(m, xx, x) && (sq_exact || !exact));
                if squared {
                    out.push(composite(
                        CompositeOp::RmsNorm {
                            axes: ms.axes.clone(),
                            epsilon: eps,
                        },
                        vec![Expr::Class(x)],
                    ));
                }
            }
        }
    }
    out
}

fn rms_norm_exact(m: &Match<'_>) -> Vec<Expr> {
    rms_norm(m, InvStd::Rsqrt, true)
}

fn rms_norm_rsqrt(m: &Match<'_>) -> Vec<Expr> {
    rms_norm(m, InvStd::Rsqrt, false)
}

fn rms_norm_div_sqrt(m: &Match<'_>) -> Vec<Expr> {
    rms_norm(m, InvStd::DivSqrt, false)
}

fn rms_norm_recip_sqrt(m: &Match<'_>) -> Vec<Expr> {
    rms_norm(m, InvStd::RecipSqrt, false)
}

// ---- GELU ---------------------------------------------------------------------------------------

/// `x * c` in e-class `id` for a constant `c` standing for `k` (either order unless exact).
fn times_const(m: &Match<'_>, id: Id, k: f64, exact: bool) -> Vec<Id> {
    let mut out = Vec::new();
    for (a, b) in pairs(m, id, "mul") {
        for (x, c) in orders(a, b, exact) {
            if constant(m, c, k, exact) {
                out.push(x);
            }
        }
    }
    out
}

/// The `x` of `x / sqrt 2` or `x * (1/sqrt 2)` in e-class `id` (exact: the decomposition's
/// `x * c` with `c` the rounded `1/sqrt 2`).
fn erf_arg(m: &Match<'_>, id: Id, exact: bool) -> Vec<Id> {
    let mut out = times_const(m, id, GELU_ERF_SCALE, exact);
    if !exact {
        for (x, c) in pairs(m, id, "div") {
            if near(m, c, std::f64::consts::SQRT_2) {
                out.push(x);
            }
        }
    }
    out
}

/// The `x` of `x^3` in e-class `id`: `(x * x) * x` (exact), `x * (x * x)`, `pow(x, 3)`.
fn cube(m: &Match<'_>, id: Id, exact: bool) -> Vec<Id> {
    let mut out = Vec::new();
    for (a, b) in pairs(m, id, "mul") {
        for (sq, x) in orders(a, b, exact) {
            if squares(m, sq)
                .into_iter()
                .any(|(xx, sq_exact)| same(m, xx, x) && (sq_exact || !exact))
            {
                out.push(x);
            }
        }
    }
    if !exact {
        for (x, e) in pairs(m, id, "pow") {
            if exactly(m, e, 3.0) {
                out.push(x);
            }
        }
    }
    out
}

/// The `x` of `sqrt(2/pi) * (x + 0.044715 * x^3)` in e-class `id` (exact: the decomposition's
/// `((x + (x*x*x) * c3) * c)`).
fn tanh_arg(m: &Match<'_>, id: Id, exact: bool) -> Vec<Id> {
    let mut out = Vec::new();
    for u in times_const(m, id, gelu_tanh_scale(), exact) {
        for (a, b) in pairs(m, u, "add") {
            for (x, w) in orders(a, b, exact) {
                for x3 in times_const(m, w, GELU_TANH_CUBIC, exact) {
                    if cube(m, x3, exact).into_iter().any(|xx| same(m, xx, x)) {
                        out.push(x);
                    }
                }
            }
        }
    }
    out
}

/// The `x` of `1 + erf(x / sqrt 2)` (or `1 + tanh(...)`) in e-class `id` (exact: `add(inner, 1)`).
fn one_plus(m: &Match<'_>, id: Id, approx: GeluApprox, exact: bool) -> Vec<Id> {
    let mut out = Vec::new();
    for (a, b) in pairs(m, id, "add") {
        for (inner, one) in orders(a, b, exact) {
            if !constant(m, one, 1.0, true) {
                continue;
            }
            match approx {
                GeluApprox::None => {
                    for s in unaries(m, inner, "erf") {
                        out.extend(erf_arg(m, s, exact));
                    }
                }
                GeluApprox::Tanh => {
                    for s in unaries(m, inner, "tanh") {
                        out.extend(tanh_arg(m, s, exact));
                    }
                }
            }
        }
    }
    out
}

/// The `x` of `x * 0.5` (exact), `0.5 * x` or `x / 2` in e-class `id`.
fn half(m: &Match<'_>, id: Id, exact: bool) -> Vec<Id> {
    let mut out = times_const(m, id, 0.5, true);
    if !exact {
        for (a, b) in pairs(m, id, "mul") {
            if exactly(m, a, 0.5) {
                out.push(b);
            }
        }
        for (x, two) in pairs(m, id, "div") {
            if exactly(m, two, 2.0) {
                out.push(x);
            }
        }
    }
    out
}

/// Where a GELU pattern multiplies by one half.
#[derive(Clone, Copy)]
enum Half {
    /// `(x/2) * (1 + inner)`.
    First,
    /// `(x * (1 + inner)) * 0.5`.
    Last,
    /// `x * ((1 + inner) * 0.5)`.
    Inner,
}

fn gelu(m: &Match<'_>, approx: GeluApprox, at: Half, exact: bool) -> Vec<Expr> {
    let mut xs: Vec<Id> = Vec::new();
    for (a, b) in pairs(m, m.eclass, "mul") {
        for (p, q) in orders(a, b, exact) {
            match at {
                Half::First => {
                    for x in half(m, p, exact) {
                        if one_plus(m, q, approx, exact)
                            .into_iter()
                            .any(|xx| same(m, xx, x))
                        {
                            xs.push(x);
                        }
                    }
                }
                Half::Last | Half::Inner => {
                    if !exactly(m, q, 0.5) && !matches!(at, Half::Inner) {
                        continue;
                    }
                    let (x_side, rest) = match at {
                        Half::Last => (None, p),
                        _ => (Some(p), q),
                    };
                    for (c, d) in pairs(m, rest, "mul") {
                        for (u, w) in orders(c, d, false) {
                            match x_side {
                                // (u * w) * 0.5 with {u, w} = {x, 1 + inner}.
                                None => {
                                    if one_plus(m, w, approx, false)
                                        .into_iter()
                                        .any(|xx| same(m, xx, u))
                                    {
                                        xs.push(u);
                                    }
                                }
                                // x * (u * w) with {u, w} = {0.5, 1 + inner}.
                                Some(x) => {
                                    if exactly(m, u, 0.5)
                                        && one_plus(m, w, approx, false)
                                            .into_iter()
                                            .any(|xx| same(m, xx, x))
                                    {
                                        xs.push(x);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    xs.sort();
    xs.dedup();
    xs.into_iter()
        .map(|x| {
            composite(
                CompositeOp::Gelu {
                    approximate: approx,
                },
                vec![Expr::Class(x)],
            )
        })
        .collect()
}

fn gelu_erf_exact(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::None, Half::First, true)
}

fn gelu_erf_half_first(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::None, Half::First, false)
}

fn gelu_erf_half_last(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::None, Half::Last, false)
}

fn gelu_erf_half_inner(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::None, Half::Inner, false)
}

fn gelu_tanh_exact(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::Tanh, Half::First, true)
}

fn gelu_tanh_half_first(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::Tanh, Half::First, false)
}

fn gelu_tanh_half_last(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::Tanh, Half::Last, false)
}

fn gelu_tanh_half_inner(m: &Match<'_>) -> Vec<Expr> {
    gelu(m, GeluApprox::Tanh, Half::Inner, false)
}

// ---- SiLU -----------------------------------------------------------------------------------------

/// `x * logistic(x)` (or swapped): `silu(x)`.
fn silu(m: &Match<'_>) -> Vec<Expr> {
    m.var("?x")
        .map(|x| composite(CompositeOp::Silu, vec![Expr::Class(x)]))
        .into_iter()
        .collect()
}

// ---- attention --------------------------------------------------------------------------------

/// `(q, k, scale)` for the scaled scores in e-class `id`: `dot(q, k') * c` (either order),
/// `dot(q, k') / c` or `dot(q, k')`, with `dot` contracting the last dim of `q` with the last
/// (or, for a transposed `k'`, the second to last) dim of `k'` over batch dims `0..rank-2`.
fn scaled_scores(m: &Match<'_>, id: Id, rank: usize) -> Vec<(Id, Expr, f64)> {
    let mut out = Vec::new();
    let mut scaled: Vec<(Id, f64)> = vec![(id, 1.0)];
    for (a, b) in pairs(m, id, "mul") {
        for (s, c) in orders(a, b, false) {
            if let Some(v) = splat(m, c) {
                scaled.push((s, v));
            }
        }
    }
    for (s, c) in pairs(m, id, "div") {
        if let Some(v) = splat(m, c).filter(|v| *v != 0.0) {
            scaled.push((s, 1.0 / v));
        }
    }
    let batch: Vec<usize> = (0..rank - 2).collect();
    for (s, scale) in scaled {
        if !scale.is_finite() {
            continue;
        }
        for (op, c) in ops(m, s, "dot_general") {
            let (
                Op::DotGeneral {
                    lhs_batch,
                    rhs_batch,
                    lhs_contract,
                    rhs_contract,
                },
                &[q, kk],
            ) = (op, c.as_slice())
            else {
                continue;
            };
            if lhs_batch != batch || rhs_batch != batch || lhs_contract != [rank - 1] {
                continue;
            }
            let k = if rhs_contract == [rank - 1] {
                Expr::Class(kk)
            } else if rhs_contract == [rank - 2] {
                let mut perm: Vec<usize> = (0..rank).collect();
                perm.swap(rank - 2, rank - 1);
                Expr::Node(Op::Transpose { perm }, vec![Expr::Class(kk)])
            } else {
                continue;
            };
            out.push((q, k, scale));
        }
    }
    out
}

/// `dot(softmax(s), v)` over batch dims `0..rank-2`, contracting the last dim of the
/// probabilities with the second to last of `v`, where `s` is the scaled scores, plus a mask.
fn attention(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (op, c) in ops(m, m.eclass, "dot_general") {
        let (
            Op::DotGeneral {
                lhs_batch,
                rhs_batch,
                lhs_contract,
                rhs_contract,
            },
            &[p, v],
        ) = (op, c.as_slice())
        else {
            continue;
        };
        let Some(rank) = m.class_ty(p).map(|t| t.shape.rank()) else {
            continue;
        };
        let batch: Vec<usize> = (0..rank.saturating_sub(2)).collect();
        if rank < 2
            || lhs_batch != batch
            || rhs_batch != batch
            || lhs_contract != [rank - 1]
            || rhs_contract != [rank - 2]
        {
            continue;
        }
        for (sop, sc) in ops(m, p, "softmax") {
            let (Op::Composite(CompositeOp::Softmax { axes }), &[s]) = (sop, sc.as_slice()) else {
                continue;
            };
            if axes != [rank - 1] {
                continue;
            }
            let mut found: Vec<(Id, Expr, f64, Option<Id>)> = scaled_scores(m, s, rank)
                .into_iter()
                .map(|(q, k, scale)| (q, k, scale, None))
                .collect();
            for (a, b) in pairs(m, s, "add") {
                for (sc, mask) in orders(a, b, false) {
                    found.extend(
                        scaled_scores(m, sc, rank)
                            .into_iter()
                            .map(|(q, k, scale)| (q, k, scale, Some(mask))),
                    );
                }
            }
            for (q, k, scale, mask) in found {
                let mut operands = vec![Expr::Class(q), k, Expr::Class(v)];
                operands.extend(mask.map(Expr::Class));
                out.push(composite(CompositeOp::Attention { scale }, operands));
            }
        }
    }
    out
}
