//! Elementwise arithmetic, activations, logic and casts.
//!
//! Every op here maps to the core elementwise ops (`unary`, `binary`, `compare`, `select`,
//! `convert`) with numpy (multidirectional) broadcasting. Composite activations on f16, bf16 and
//! float8 are computed in f32 and rounded once at the end, so intermediate roundings do not pile up.

use terafab_ir::float8::Overflow;
use terafab_ir::{BinaryOp, CompareOp, DType, UnaryOp, ValueId};

use super::*;
use crate::onnx::tensor::{dtype_of, from_le_bytes};

/// An importer's result: the node's outputs.
type Outs = Result<Vec<ValueId>, ImportError>;
/// One value or an import error.
type Val = Result<ValueId, ImportError>;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    // Unary functions that map one-to-one to a core op.
    ("Abs", |c| unary(c, UnaryOp::Abs)),
    ("Neg", |c| unary(c, UnaryOp::Neg)),
    ("Sign", |c| unary(c, UnaryOp::Sign)),
    ("Exp", |c| unary(c, UnaryOp::Exp)),
    ("Log", |c| unary(c, UnaryOp::Log)),
    ("Sqrt", |c| unary(c, UnaryOp::Sqrt)),
    ("Sin", |c| unary(c, UnaryOp::Sin)),
    ("Cos", |c| unary(c, UnaryOp::Cos)),
    ("Tan", |c| unary(c, UnaryOp::Tan)),
    ("Asin", |c| unary(c, UnaryOp::Asin)),
    ("Acos", |c| unary(c, UnaryOp::Acos)),
    ("Atan", |c| unary(c, UnaryOp::Atan)),
    ("Sinh", |c| unary(c, UnaryOp::Sinh)),
    ("Cosh", |c| unary(c, UnaryOp::Cosh)),
    ("Tanh", |c| unary(c, UnaryOp::Tanh)),
    ("Asinh", |c| unary(c, UnaryOp::Asinh)),
    ("Acosh", |c| unary(c, UnaryOp::Acosh)),
    ("Atanh", |c| unary(c, UnaryOp::Atanh)),
    ("Erf", |c| unary(c, UnaryOp::Erf)),
    ("Sigmoid", |c| unary(c, UnaryOp::Logistic)),
    ("Floor", |c| unary(c, UnaryOp::Floor)),
    ("Ceil", |c| unary(c, UnaryOp::Ceil)),
    ("Round", |c| unary(c, UnaryOp::Round)),
    ("IsNaN", |c| unary(c, UnaryOp::IsNan)),
    ("IsInf", is_inf),
    ("Not", |c| {
        typed_unary(c, UnaryOp::Not, DType::is_bool, "bool")
    }),
    ("BitwiseNot", |c| {
        typed_unary(c, UnaryOp::Not, DType::is_int, "integer")
    }),
    ("Reciprocal", reciprocal),
    // Binary arithmetic, logic and comparisons.
    ("Add", |c| binary(c, BinaryOp::Add)),
    ("Sub", |c| binary(c, BinaryOp::Sub)),
    ("Mul", |c| binary(c, BinaryOp::Mul)),
    ("Div", |c| binary(c, BinaryOp::Div)),
    ("Pow", pow),
    ("Mod", modulo),
    ("And", |c| {
        typed_binary(c, BinaryOp::And, DType::is_bool, "bool")
    }),
    ("Or", |c| {
        typed_binary(c, BinaryOp::Or, DType::is_bool, "bool")
    }),
    ("Xor", |c| {
        typed_binary(c, BinaryOp::Xor, DType::is_bool, "bool")
    }),
    ("BitwiseAnd", |c| {
        typed_binary(c, BinaryOp::And, DType::is_int, "integer")
    }),
    ("BitwiseOr", |c| {
        typed_binary(c, BinaryOp::Or, DType::is_int, "integer")
    }),
    ("BitwiseXor", |c| {
        typed_binary(c, BinaryOp::Xor, DType::is_int, "integer")
    }),
    ("BitShift", bit_shift),
    ("Equal", |c| compare(c, CompareOp::Eq)),
    ("Greater", |c| compare(c, CompareOp::Gt)),
    ("GreaterOrEqual", |c| compare(c, CompareOp::Ge)),
    ("Less", |c| compare(c, CompareOp::Lt)),
    ("LessOrEqual", |c| compare(c, CompareOp::Le)),
    ("Where", where_),
    // Variadic ops.
    ("Max", |c| variadic(c, BinaryOp::Max)),
    ("Min", |c| variadic(c, BinaryOp::Min)),
    ("Sum", |c| variadic(c, BinaryOp::Add)),
    ("Mean", mean),
    // Casts.
    ("Cast", cast),
    ("CastLike", cast_like),
    // Activations.
    ("Relu", relu),
    ("Clip", clip),
    ("PRelu", prelu),
    ("LeakyRelu", leaky_relu),
    ("ThresholdedRelu", thresholded_relu),
    ("Elu", elu),
    ("Celu", celu),
    ("Selu", selu),
    ("HardSigmoid", hard_sigmoid),
    ("HardSwish", hard_swish),
    ("Softplus", |c| float_activation(c, softplus)),
    ("Softsign", |c| float_activation(c, softsign)),
    ("Mish", |c| float_activation(c, mish)),
    ("Gelu", gelu),
    ("Swish", swish),
    ("Shrink", shrink),
];

// ---- small expression helpers ------------------------------------------------------------------

/// A scalar constant `v` with the element type of `like`.
fn k(c: &mut NodeCtx, v: f64, like: ValueId) -> Val {
    c.scalar(v, c.dtype(like))
}

fn add(c: &mut NodeCtx, a: ValueId, b: ValueId) -> Val {
    c.binary(BinaryOp::Add, a, b)
}

fn sub(c: &mut NodeCtx, a: ValueId, b: ValueId) -> Val {
    c.binary(BinaryOp::Sub, a, b)
}

fn mul(c: &mut NodeCtx, a: ValueId, b: ValueId) -> Val {
    c.binary(BinaryOp::Mul, a, b)
}

/// `x * v` for a scalar `v` of `x`'s type.
fn mul_k(c: &mut NodeCtx, x: ValueId, v: f64) -> Val {
    let s = k(c, v, x)?;
    mul(c, x, s)
}

/// `x + v` for a scalar `v` of `x`'s type.
fn add_k(c: &mut NodeCtx, x: ValueId, v: f64) -> Val {
    let s = k(c, v, x)?;
    add(c, x, s)
}

/// Compare `x` with the scalar `v` of `x`'s type.
fn cmp_k(c: &mut NodeCtx, op: CompareOp, x: ValueId, v: f64) -> Val {
    let s = k(c, v, x)?;
    c.compare(op, x, s)
}

/// `min(max(x, lo), hi)` with scalar bounds of `x`'s type.
fn clamp_k(c: &mut NodeCtx, x: ValueId, lo: f64, hi: f64) -> Val {
    let lo = k(c, lo, x)?;
    let hi = k(c, hi, x)?;
    let y = c.binary(BinaryOp::Max, x, lo)?;
    c.binary(BinaryOp::Min, y, hi)
}

/// Fails unless `x`'s element type satisfies `ok` (`what` names the accepted types).
fn expect_type(
    c: &NodeCtx,
    x: ValueId,
    ok: fn(DType) -> bool,
    what: &str,
) -> Result<(), ImportError> {
    let d = c.dtype(x);
    if ok(d) {
        Ok(())
    } else {
        Err(c.invalid(format!("expects {what} inputs, found {d}")))
    }
}

/// Runs `f` on `x`, in f32 when `x` is f16, bf16 or a float8 type (converting back at the end).
fn in_f32(c: &mut NodeCtx, x: ValueId, f: impl FnOnce(&mut NodeCtx, ValueId) -> Val) -> Val {
    let d = c.dtype(x);
    if matches!(d, DType::F16 | DType::BF16) || d.is_float8() {
        let w = c.convert(x, DType::F32)?;
        let y = f(c, w)?;
        c.convert(y, d)
    } else {
        f(c, x)
    }
}

/// An activation of input 0 defined on floats only, computed by `f` (in f32 for f16, bf16 and
/// float8).
fn float_activation(c: &mut NodeCtx, f: fn(&mut NodeCtx, ValueId) -> Val) -> Outs {
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    Ok(vec![in_f32(c, x, f)?])
}

// ---- unary and binary ops ----------------------------------------------------------------------

/// A core unary function of input 0 (the core op's type rule checks the element type).
fn unary(c: &mut NodeCtx, op: UnaryOp) -> Outs {
    let x = c.input(0)?;
    Ok(vec![c.unary(op, x)?])
}

/// A core unary function restricted to the element types `ok` accepts.
fn typed_unary(c: &mut NodeCtx, op: UnaryOp, ok: fn(DType) -> bool, what: &str) -> Outs {
    let x = c.input(0)?;
    expect_type(c, x, ok, what)?;
    Ok(vec![c.unary(op, x)?])
}

/// Inputs 0 and 1 of a binary op, with the legacy broadcast of opsets before 7 applied: there
/// `broadcast = 1` aligns B with A's dims starting at `axis` (default: B's dims are A's
/// trailing dims), and B is reshaped so numpy broadcasting does the same. From opset 7 on,
/// broadcasting is numpy's and the attributes no longer exist.
fn operands(c: &mut NodeCtx) -> Result<(ValueId, ValueId), ImportError> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    if c.opset >= 7 {
        return Ok((a, b));
    }
    let broadcast = c.attr_int_or("broadcast", 0)?;
    let axis = c.attr_int("axis")?;
    if broadcast == 0 {
        return Ok((a, b));
    }
    let (ad, bd) = (c.dims(a)?, c.dims(b)?);
    if bd.len() > ad.len() {
        return Err(c.invalid(format!(
            "B (shape {bd:?}) has a higher rank than A (shape {ad:?})"
        )));
    }
    let start = match axis {
        Some(axis) => c.axis(axis, ad.len())?,
        None => ad.len() - bd.len(),
    };
    let fits = start + bd.len() <= ad.len()
        && bd.iter().zip(&ad[start..]).all(|(&x, &y)| x == y || x == 1);
    if !fits {
        return Err(c.invalid(format!(
            "B (shape {bd:?}) does not broadcast to A (shape {ad:?}) at axis {start}"
        )));
    }
    let mut dims = vec![1; ad.len()];
    dims[start..start + bd.len()].copy_from_slice(&bd);
    Ok((a, c.reshape(b, &dims)?))
}

/// A broadcasting binary op of two inputs of the same type.
fn binary(c: &mut NodeCtx, op: BinaryOp) -> Outs {
    let (a, b) = operands(c)?;
    Ok(vec![c.binary(op, a, b)?])
}

/// A binary op restricted to the element types `ok` accepts.
fn typed_binary(c: &mut NodeCtx, op: BinaryOp, ok: fn(DType) -> bool, what: &str) -> Outs {
    let (a, b) = operands(c)?;
    expect_type(c, a, ok, what)?;
    Ok(vec![c.binary(op, a, b)?])
}

/// A broadcasting comparison; bool result.
fn compare(c: &mut NodeCtx, op: CompareOp) -> Outs {
    let (a, b) = operands(c)?;
    Ok(vec![c.compare(op, a, b)?])
}

/// `1 / x`.
fn reciprocal(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    let one = k(c, 1.0, x)?;
    Ok(vec![c.binary(BinaryOp::Div, one, x)?])
}

/// IsInf with `detect_negative` / `detect_positive` (both default 1).
fn is_inf(c: &mut NodeCtx) -> Outs {
    let neg = c.attr_int_or("detect_negative", 1)? != 0;
    let pos = c.attr_int_or("detect_positive", 1)? != 0;
    let x = c.input(0)?;
    let inf = c.unary(UnaryOp::IsInf, x)?;
    let y = match (neg, pos) {
        (true, true) => inf,
        _ => {
            // Keep only the infinities of the requested signs.
            let want_neg = cmp_k(c, CompareOp::Lt, x, 0.0)?;
            let want_pos = cmp_k(c, CompareOp::Gt, x, 0.0)?;
            let sign_ok = match (neg, pos) {
                (true, _) => want_neg,
                (_, true) => want_pos,
                _ => {
                    let f = c.scalar(0.0, DType::Bool)?;
                    c.binary(BinaryOp::And, want_neg, f)?
                }
            };
            c.binary(BinaryOp::And, inf, sign_ok)?
        }
    };
    Ok(vec![y])
}

/// Pow: the exponent may have another type than the base (opset 12+); the result has the
/// base's type. Mixed types are computed in a common wide type (f64 when either side is a
/// float, else i64/u64) and converted back, as numpy's `power(a, b).astype(a.dtype)` does.
fn pow(c: &mut NodeCtx) -> Outs {
    let (x, y) = operands(c)?;
    let (dx, dy) = (c.dtype(x), c.dtype(y));
    if dx.is_bool() || dy.is_bool() {
        return Err(c.invalid("Pow is not defined on bool"));
    }
    if dx == dy {
        return Ok(vec![c.binary(BinaryOp::Pow, x, y)?]);
    }
    let work = if dx.is_float() || dy.is_float() {
        DType::F64
    } else if dx == DType::U64 {
        DType::U64
    } else {
        DType::I64
    };
    let xw = c.convert(x, work)?;
    let yw = c.convert(y, work)?;
    let r = c.binary(BinaryOp::Pow, xw, yw)?;
    Ok(vec![c.convert(r, dx)?])
}

/// Mod: `fmod = 1` is C's fmod (sign of the dividend, the core `rem`); `fmod = 0` is numpy's
/// `mod` (sign of the divisor: a non-zero remainder whose sign differs from the divisor's gets
/// the divisor added; a zero float remainder takes the divisor's sign).
fn modulo(c: &mut NodeCtx) -> Outs {
    let fmod = c.attr_int_or("fmod", 0)?;
    let (x, y) = (c.input(0)?, c.input(1)?);
    let d = c.dtype(x);
    if d.is_bool() {
        return Err(c.invalid("Mod is not defined on bool"));
    }
    let r = c.binary(BinaryOp::Rem, x, y)?;
    match fmod {
        1 => return Ok(vec![r]),
        0 => {}
        v => return Err(c.invalid(format!("fmod must be 0 or 1, found {v}"))),
    }
    if d.is_unsigned_int() {
        return Ok(vec![r]);
    }
    let nonzero = cmp_k(c, CompareOp::Ne, r, 0.0)?;
    let r_neg = cmp_k(c, CompareOp::Lt, r, 0.0)?;
    let y_neg = cmp_k(c, CompareOp::Lt, y, 0.0)?;
    let signs_differ = c.binary(BinaryOp::Xor, r_neg, y_neg)?;
    let fix = c.binary(BinaryOp::And, nonzero, signs_differ)?;
    let shifted = add(c, r, y)?;
    let mut out = c.select(fix, shifted, r)?;
    if d.is_float() {
        // numpy gives a zero remainder the sign of the divisor: +0 * sign(y).
        let is_zero = cmp_k(c, CompareOp::Eq, out, 0.0)?;
        let zero = k(c, 0.0, x)?;
        let sign = c.unary(UnaryOp::Sign, y)?;
        let signed_zero = mul(c, zero, sign)?;
        out = c.select(is_zero, signed_zero, out)?;
    }
    Ok(vec![out])
}

/// BitShift with `direction` LEFT or RIGHT. Shift counts outside `0..bits` give 0 (or -1 for
/// a right shift of a negative signed value), as the core shifts define.
fn bit_shift(c: &mut NodeCtx) -> Outs {
    let dir = c
        .attr_string("direction")?
        .ok_or_else(|| c.invalid("attribute `direction` is required"))?;
    let op = match dir.as_str() {
        "LEFT" => BinaryOp::ShiftLeft,
        "RIGHT" => BinaryOp::ShiftRight,
        other => {
            return Err(c.invalid(format!("direction must be LEFT or RIGHT, found `{other}`")));
        }
    };
    typed_binary(c, op, DType::is_int, "integer")
}

/// Where: `cond ? x : y` with three-way broadcasting.
fn where_(c: &mut NodeCtx) -> Outs {
    let (cond, x, y) = (c.input(0)?, c.input(1)?, c.input(2)?);
    if !c.dtype(cond).is_bool() {
        return Err(c.invalid(format!("condition must be bool, found {}", c.dtype(cond))));
    }
    Ok(vec![c.select(cond, x, y)?])
}

/// Max / Min / Sum of one or more inputs with multidirectional broadcasting.
fn variadic(c: &mut NodeCtx, op: BinaryOp) -> Outs {
    Ok(vec![fold_inputs(c, op)?])
}

/// Folds all present inputs with `op` (left to right); at least one is required.
fn fold_inputs(c: &mut NodeCtx, op: BinaryOp) -> Val {
    let xs = c.inputs()?;
    let (&first, rest) = xs
        .split_first()
        .ok_or_else(|| c.invalid("needs at least one input"))?;
    let mut acc = first;
    for &x in rest {
        acc = c.binary(op, acc, x)?;
    }
    Ok(acc)
}

/// Mean: the broadcast sum of the inputs divided by their count.
fn mean(c: &mut NodeCtx) -> Outs {
    let n = c.inputs()?.len();
    let sum = fold_inputs(c, BinaryOp::Add)?;
    expect_type(c, sum, DType::is_float, "floating-point")?;
    let count = k(c, n as f64, sum)?;
    Ok(vec![c.binary(BinaryOp::Div, sum, count)?])
}

// ---- casts ---------------------------------------------------------------------------------------

/// Reads Cast's float8-only attributes: `saturate` (opset 19+, default 1), returned, which only
/// changes conversions to float8 types, and `round_mode` (opset 24+), which only applies to
/// float8e8m0 (refused), so it is only checked for validity.
fn read_float8_attrs(c: &NodeCtx) -> Result<bool, ImportError> {
    let saturate = c.attr_int_or("saturate", 1)?;
    if saturate != 0 && saturate != 1 {
        return Err(c.invalid(format!("saturate must be 0 or 1, found {saturate}")));
    }
    if let Some(m) = c.attr_string("round_mode")?
        && !matches!(m.as_str(), "up" | "down" | "nearest")
    {
        return Err(c.invalid(format!(
            "round_mode must be up, down or nearest, found `{m}`"
        )));
    }
    Ok(saturate == 1)
}

/// `x` converted to `to` as ONNX Cast does. Only conversions into a float8 type differ from the
/// IR's `convert` (which rounds to nearest even, saturates finite overflow to ±max, and keeps
/// ±inf where the type has infinities, f8e5m2); they are decomposed:
///
/// - `saturate=1` also maps ±inf to ±max: when both types have infinities, `x` is first clamped
///   to ±max in its own type (max and min let NaN through).
/// - `saturate=0`: magnitudes that round past ±max, and ±inf, become ±inf in f8e5m2 and NaN in
///   the other types: `select(|x| beyond the bound, special, convert(x))`. The comparison is made
///   in f32, where every bound is exact and rounding `x` is monotone, so it is unchanged.
fn cast_to(c: &mut NodeCtx, x: ValueId, to: DType, saturate: bool) -> Val {
    let from = c.dtype(x);
    let format = match to.float8_format() {
        Some(f) if from != to && !from.is_bool() => f,
        _ => return c.convert(x, to),
    };
    if saturate {
        if !(from.has_inf() && format.has_inf()) {
            return c.convert(x, to);
        }
        let max = format.max() as f64;
        let (lo, hi) = (k(c, -max, x)?, k(c, max, x)?);
        let y = c.binary(BinaryOp::Max, x, lo)?;
        let y = c.binary(BinaryOp::Min, y, hi)?;
        return c.convert(y, to);
    }
    let wide = c.convert(x, DType::F32)?;
    let magnitude = c.unary(UnaryOp::Abs, wide)?;
    let bound = c.scalar(format.overflow_bound(), DType::F32)?;
    let beyond = if format.overflow_at_bound() {
        CompareOp::Ge
    } else {
        CompareOp::Gt
    };
    let over = c.compare(beyond, magnitude, bound)?;
    let special = |c: &mut NodeCtx, v: f64| -> Val {
        let bits = format.encode(v, Overflow::Special);
        let t = from_le_bytes(to, vec![], &[bits]).map_err(|e| c.invalid(e.to_string()))?;
        Ok(c.constant(t))
    };
    let (pos, neg) = (special(c, f64::INFINITY)?, special(c, f64::NEG_INFINITY)?);
    let zero = c.scalar(0.0, DType::F32)?;
    let negative = c.compare(CompareOp::Lt, wide, zero)?;
    let special = c.select(negative, neg, pos)?;
    let y = c.convert(x, to)?;
    c.select(over, special, y)
}

/// Cast to the element type named by `to` (an ONNX `DataType` code). String, float8e8m0,
/// 4-bit, 2-bit and complex types are unsupported.
fn cast(c: &mut NodeCtx) -> Outs {
    let code = c
        .attr_int("to")?
        .ok_or_else(|| c.invalid("attribute `to` is required"))?;
    let saturate = read_float8_attrs(c)?;
    let to = i32::try_from(code)
        .map_err(|_| c.invalid(format!("`to` = {code} is not an ONNX data type")))
        .and_then(|code| {
            dtype_of(code).map_err(|e| c.unsupported(format!("cast to this type: {e}")))
        })?;
    let x = c.input(0)?;
    Ok(vec![cast_to(c, x, to, saturate)?])
}

/// CastLike: cast input 0 to the element type of input 1.
fn cast_like(c: &mut NodeCtx) -> Outs {
    let saturate = read_float8_attrs(c)?;
    let (x, like) = (c.input(0)?, c.input(1)?);
    let to = c.dtype(like);
    Ok(vec![cast_to(c, x, to, saturate)?])
}

// ---- activations ---------------------------------------------------------------------------------

/// `max(x, 0)`.
fn relu(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let zero = k(c, 0.0, x)?;
    Ok(vec![c.binary(BinaryOp::Max, x, zero)?])
}

/// A Clip bound given as an input (opset 11+): a one-element tensor of `x`'s type, made a
/// scalar so it never changes the result's shape.
fn clip_bound(c: &mut NodeCtx, i: usize, x: ValueId) -> Result<Option<ValueId>, ImportError> {
    let Some(b) = c.opt_input(i)? else {
        return Ok(None);
    };
    if c.dtype(b) != c.dtype(x) {
        return Err(c.invalid(format!(
            "bound {i} has type {}, the input {}",
            c.dtype(b),
            c.dtype(x)
        )));
    }
    let n: usize = c.dims(b)?.iter().product();
    if n != 1 {
        return Err(c.invalid(format!("bound {i} must be a scalar, found {n} elements")));
    }
    Ok(Some(c.reshape(b, &[])?))
}

/// Clip: `min(max(x, lo), hi)` (so `lo > hi` gives `hi`); bounds are attributes before
/// opset 11 and optional inputs after.
fn clip(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let (lo, hi) = if c.opset < 11 {
        let lo = c.attr_float("min")?;
        let hi = c.attr_float("max")?;
        let lo = lo.map(|v| k(c, v as f64, x)).transpose()?;
        let hi = hi.map(|v| k(c, v as f64, x)).transpose()?;
        (lo, hi)
    } else {
        (clip_bound(c, 1, x)?, clip_bound(c, 2, x)?)
    };
    let mut y = x;
    if let Some(lo) = lo {
        y = c.binary(BinaryOp::Max, y, lo)?;
    }
    if let Some(hi) = hi {
        y = c.binary(BinaryOp::Min, y, hi)?;
    }
    Ok(vec![y])
}

/// PRelu: `x < 0 ? slope * x : x`. The slope broadcasts unidirectionally to `x` (opset 7+);
/// before opset 7 a 1-D slope of length C applies per channel (dim 1).
fn prelu(c: &mut NodeCtx) -> Outs {
    let (x, mut slope) = (c.input(0)?, c.input(1)?);
    let xd = c.dims(x)?;
    let sd = c.dims(slope)?;
    if c.opset < 7 && sd.len() == 1 && xd.len() >= 2 && sd[0] == xd[1] && sd[0] != 1 {
        let mut per_channel = vec![1; xd.len() - 1];
        per_channel[0] = sd[0];
        slope = c.reshape(slope, &per_channel)?;
    }
    let unidirectional = sd.len() <= xd.len()
        && sd
            .iter()
            .rev()
            .zip(xd.iter().rev())
            .all(|(&s, &d)| s == d || s == 1);
    if c.opset >= 7 && !unidirectional {
        return Err(c.invalid(format!(
            "slope of shape {sd:?} does not broadcast to the input's shape {xd:?}"
        )));
    }
    let neg = cmp_k(c, CompareOp::Lt, x, 0.0)?;
    let scaled = mul(c, x, slope)?;
    Ok(vec![c.select(neg, scaled, x)?])
}

/// LeakyRelu: `x < 0 ? alpha * x : x` (alpha 0.01).
fn leaky_relu(c: &mut NodeCtx) -> Outs {
    let alpha = c.attr_float_or("alpha", 0.01)? as f64;
    let x = c.input(0)?;
    let neg = cmp_k(c, CompareOp::Lt, x, 0.0)?;
    let scaled = mul_k(c, x, alpha)?;
    Ok(vec![c.select(neg, scaled, x)?])
}

/// ThresholdedRelu: `x > alpha ? x : 0` (alpha 1).
fn thresholded_relu(c: &mut NodeCtx) -> Outs {
    let alpha = c.attr_float_or("alpha", 1.0)? as f64;
    let x = c.input(0)?;
    let keep = cmp_k(c, CompareOp::Gt, x, alpha)?;
    let zero = k(c, 0.0, x)?;
    Ok(vec![c.select(keep, x, zero)?])
}

/// `exp(x) - 1`.
fn exp_m1(c: &mut NodeCtx, x: ValueId) -> Val {
    let e = c.unary(UnaryOp::Exp, x)?;
    add_k(c, e, -1.0)
}

/// Elu: `x < 0 ? alpha * (exp(x) - 1) : x` (alpha 1).
fn elu(c: &mut NodeCtx) -> Outs {
    let alpha = c.attr_float_or("alpha", 1.0)? as f64;
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    let y = in_f32(c, x, |c, x| {
        let neg = cmp_k(c, CompareOp::Lt, x, 0.0)?;
        let e = exp_m1(c, x)?;
        let e = mul_k(c, e, alpha)?;
        c.select(neg, e, x)
    })?;
    Ok(vec![y])
}

/// Celu: `max(0, x) + min(0, alpha * (exp(x / alpha) - 1))` (alpha 1).
fn celu(c: &mut NodeCtx) -> Outs {
    let alpha = c.attr_float_or("alpha", 1.0)? as f64;
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    if alpha == 0.0 {
        return Err(c.invalid("alpha must not be 0"));
    }
    let y = in_f32(c, x, |c, x| {
        let zero = k(c, 0.0, x)?;
        let pos = c.binary(BinaryOp::Max, x, zero)?;
        let a = k(c, alpha, x)?;
        let scaled = c.binary(BinaryOp::Div, x, a)?;
        let e = exp_m1(c, scaled)?;
        let e = mul(c, e, a)?;
        let neg = c.binary(BinaryOp::Min, e, zero)?;
        add(c, pos, neg)
    })?;
    Ok(vec![y])
}

/// Selu: `gamma * (x > 0 ? x : alpha * exp(x) - alpha)`.
fn selu(c: &mut NodeCtx) -> Outs {
    let alpha = c.attr_float_or("alpha", 1.673_263_2)? as f64;
    let gamma = c.attr_float_or("gamma", 1.050_701)? as f64;
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    let y = in_f32(c, x, |c, x| {
        let pos = cmp_k(c, CompareOp::Gt, x, 0.0)?;
        let e = exp_m1(c, x)?;
        let e = mul_k(c, e, alpha)?;
        let v = c.select(pos, x, e)?;
        mul_k(c, v, gamma)
    })?;
    Ok(vec![y])
}

/// `max(0, min(1, alpha * x + beta))`.
fn hard_sigmoid_of(c: &mut NodeCtx, x: ValueId, alpha: f64, beta: f64) -> Val {
    let y = mul_k(c, x, alpha)?;
    let y = add_k(c, y, beta)?;
    clamp_k(c, y, 0.0, 1.0)
}

/// HardSigmoid (alpha 0.2, beta 0.5).
fn hard_sigmoid(c: &mut NodeCtx) -> Outs {
    let alpha = c.attr_float_or("alpha", 0.2)? as f64;
    let beta = c.attr_float_or("beta", 0.5)? as f64;
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    Ok(vec![in_f32(c, x, |c, x| {
        hard_sigmoid_of(c, x, alpha, beta)
    })?])
}

/// HardSwish: `x * hard_sigmoid(x)` with alpha 1/6, beta 0.5.
fn hard_swish(c: &mut NodeCtx) -> Outs {
    float_activation(c, |c, x| {
        let h = hard_sigmoid_of(c, x, 1.0 / 6.0, 0.5)?;
        mul(c, x, h)
    })
}

/// `log(exp(x) + 1)`.
fn softplus(c: &mut NodeCtx, x: ValueId) -> Val {
    let e = c.unary(UnaryOp::Exp, x)?;
    let e = add_k(c, e, 1.0)?;
    c.unary(UnaryOp::Log, e)
}

/// `x / (1 + |x|)`.
fn softsign(c: &mut NodeCtx, x: ValueId) -> Val {
    let a = c.unary(UnaryOp::Abs, x)?;
    let d = add_k(c, a, 1.0)?;
    c.binary(BinaryOp::Div, x, d)
}

/// `x * tanh(softplus(x))`.
fn mish(c: &mut NodeCtx, x: ValueId) -> Val {
    let s = softplus(c, x)?;
    let t = c.unary(UnaryOp::Tanh, s)?;
    mul(c, x, t)
}

/// Gelu (opset 20): `approximate = "none"`: `x/2 * (1 + erf(x / sqrt(2)))`;
/// `"tanh"`: `x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`.
fn gelu(c: &mut NodeCtx) -> Outs {
    let approx = c.attr_string_or("approximate", "none")?;
    let tanh = match approx.as_str() {
        "none" => false,
        "tanh" => true,
        other => {
            return Err(c.invalid(format!("approximate must be none or tanh, found `{other}`")));
        }
    };
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    let y = in_f32(c, x, |c, x| {
        let inner = if tanh {
            let x2 = mul(c, x, x)?;
            let x3 = mul(c, x2, x)?;
            let x3 = mul_k(c, x3, 0.044715)?;
            let s = add(c, x, x3)?;
            let s = mul_k(c, s, (2.0 / std::f64::consts::PI).sqrt())?;
            c.unary(UnaryOp::Tanh, s)?
        } else {
            let s = mul_k(c, x, std::f64::consts::FRAC_1_SQRT_2)?;
            c.unary(UnaryOp::Erf, s)?
        };
        let one_plus = add_k(c, inner, 1.0)?;
        let half = mul_k(c, x, 0.5)?;
        mul(c, half, one_plus)
    })?;
    Ok(vec![y])
}

/// Swish (opset 24): `x * sigmoid(alpha * x)` (alpha 1).
fn swish(c: &mut NodeCtx) -> Outs {
    let alpha = c.attr_float_or("alpha", 1.0)? as f64;
    let x = c.input(0)?;
    expect_type(c, x, DType::is_float, "floating-point")?;
    let y = in_f32(c, x, |c, x| {
        let ax = mul_k(c, x, alpha)?;
        let s = c.unary(UnaryOp::Logistic, ax)?;
        mul(c, x, s)
    })?;
    Ok(vec![y])
}

/// Shrink: `x < -lambd ? x + bias : x > lambd ? x - bias : 0` (lambd 0.5, bias 0).
/// Integer inputs compare against the thresholds rounded inward (exact for integers); a
/// fractional bias on integers is applied in f64 and truncated, as numpy's reference does.
fn shrink(c: &mut NodeCtx) -> Outs {
    let lambd = c.attr_float_or("lambd", 0.5)? as f64;
    let bias = c.attr_float_or("bias", 0.0)? as f64;
    let x = c.input(0)?;
    let d = c.dtype(x);
    if d.is_bool() {
        return Err(c.invalid("Shrink is not defined on bool"));
    }
    if d.is_int() && bias.fract() != 0.0 {
        let w = c.convert(x, DType::F64)?;
        let y = shrink_of(c, w, lambd, lambd, bias)?;
        return Ok(vec![c.convert(y, d)?]);
    }
    // For integer x: x < -l <=> x < ceil(-l), and x > l <=> x > floor(l).
    let (lo, hi) = if d.is_int() {
        ((-lambd).ceil(), lambd.floor())
    } else {
        (-lambd, lambd)
    };
    let y = in_f32(c, x, |c, x| shrink_of(c, x, -lo, hi, bias))?;
    Ok(vec![y])
}

/// The Shrink formula with lower threshold `-neg_l`, upper threshold `pos_l`.
fn shrink_of(c: &mut NodeCtx, x: ValueId, neg_l: f64, pos_l: f64, bias: f64) -> Val {
    let below = cmp_k(c, CompareOp::Lt, x, -neg_l)?;
    let above = cmp_k(c, CompareOp::Gt, x, pos_l)?;
    let b = k(c, bias, x)?;
    let plus = add(c, x, b)?;
    let minus = sub(c, x, b)?;
    let zero = k(c, 0.0, x)?;
    let upper = c.select(above, minus, zero)?;
    c.select(below, plus, upper)
}

#[cfg(test)]
mod tests {
    use terafab_ir::Tensor;

    use crate::onnx::import::{ImportOptions, import_model};
    use crate::onnx::text::parse_model_text;

    /// Imports `graph` (ONNX text syntax, default-domain opset `opset`) and runs it.
    fn run(opset: i64, graph: &str, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let text = format!("<ir_version: 8, opset_import: [\"\" : {opset}]>\n{graph}");
        let model = parse_model_text(&text).map_err(|e| e.to_string())?;
        let m = import_model(&model, None, &ImportOptions::default()).map_err(|e| e.to_string())?;
        let f = m.function("main").ok_or("no main function")?;
        terafab_ir::interp::run_function(f, &inputs).map_err(|e| e.to_string())
    }

    fn i32s(v: &[i32]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    fn f32s(v: &[f32]) -> Tensor {
        Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
    }

    fn ints(t: &Tensor) -> Vec<i64> {
        t.to_i64_vec().unwrap()
    }

    #[test]
    fn shrink_on_integers() {
        let g =
            |attrs: &str| format!("g (int32[5] x) => (int32[5] y) {{ y = Shrink <{attrs}> (x) }}");
        let x = || vec![i32s(&[-3, -2, 0, 2, 3])];
        // Thresholds round inward for integers; an integral bias stays exact.
        let y = run(18, &g("lambd = 1.5, bias = 1.0"), x()).unwrap();
        assert_eq!(ints(&y[0]), [-2, -1, 0, 1, 2]);
        // A fractional bias is applied in f64 and truncated, as numpy's astype does.
        let y = run(18, &g("lambd = 1.5, bias = 0.5"), x()).unwrap();
        assert_eq!(ints(&y[0]), [-2, -1, 0, 1, 2]);
        let y = run(18, &g("lambd = 2.0, bias = 0.5"), x()).unwrap();
        assert_eq!(ints(&y[0]), [-2, 0, 0, 0, 2]);
    }

    #[test]
    fn mod_follows_python_and_c() {
        let g = |fmod: i64| {
            format!(
                "g (int32[4] a, int32[4] b) => (int32[4] y) {{ y = Mod <fmod = {fmod}> (a, b) }}"
            )
        };
        let ab = || vec![i32s(&[-7, 7, -7, 7]), i32s(&[3, -3, -3, 3])];
        assert_eq!(ints(&run(13, &g(0), ab()).unwrap()[0]), [2, -2, -1, 1]);
        assert_eq!(ints(&run(13, &g(1), ab()).unwrap()[0]), [-1, 1, -1, 1]);
        let g = "g (float[4] a, float[4] b) => (float[4] y) { y = Mod (a, b) }";
        let y = run(
            13,
            g,
            vec![
                f32s(&[0.0, -3.0, 1.0, 5.5]),
                f32s(&[-2.0, f32::INFINITY, -f32::INFINITY, -2.0]),
            ],
        )
        .unwrap()[0]
            .to_f64_vec();
        assert!(
            y[0] == 0.0 && y[0].is_sign_negative(),
            "0 mod -2 is -0, got {}",
            y[0]
        );
        assert_eq!(&y[1..], [f64::INFINITY, f64::NEG_INFINITY, -0.5]);
    }

    #[test]
    fn pow_with_mixed_types() {
        let g = "g (int32[2] a, int64[2] b) => (int32[2] y) { y = Pow (a, b) }";
        let b = Tensor::from_vec(vec![2], vec![3i64, 2]).unwrap();
        assert_eq!(
            ints(&run(15, g, vec![i32s(&[2, -3]), b]).unwrap()[0]),
            [8, 9]
        );
        let g = "g (int32[2] a, float[2] b) => (int32[2] y) { y = Pow (a, b) }";
        let y = run(15, g, vec![i32s(&[2, 9]), f32s(&[0.5, 0.5])]).unwrap();
        assert_eq!(ints(&y[0]), [1, 3]);
        let g = "g (float[1] a, int64[1] b) => (float[1] y) { y = Pow (a, b) }";
        let b = Tensor::from_vec(vec![1], vec![-1i64]).unwrap();
        assert_eq!(
            run(15, g, vec![f32s(&[4.0]), b]).unwrap()[0].to_f64_vec(),
            [0.25]
        );
    }

    #[test]
    fn is_inf_by_sign() {
        let x = || vec![f32s(&[f32::INFINITY, f32::NEG_INFINITY, 1.0, f32::NAN])];
        let g =
            |attrs: &str| format!("g (float[4] x) => (bool[4] y) {{ y = IsInf <{attrs}> (x) }}");
        let y = run(20, &g("detect_negative = 0"), x()).unwrap();
        assert_eq!(y[0].to_f64_vec(), [1.0, 0.0, 0.0, 0.0]);
        let y = run(20, &g("detect_positive = 0"), x()).unwrap();
        assert_eq!(y[0].to_f64_vec(), [0.0, 1.0, 0.0, 0.0]);
        let y = run(20, &g("detect_positive = 0, detect_negative = 0"), x()).unwrap();
        assert_eq!(y[0].to_f64_vec(), [0.0; 4]);
    }

    #[test]
    fn variadic_ops_broadcast() {
        let g = "g (float[2, 1] a, float[3] b, float c) => (float[2, 3] y) { y = Mean (a, b, c) }";
        let a = Tensor::from_vec(vec![2, 1], vec![0.0f32, 3.0]).unwrap();
        let c = Tensor::scalar(3.0f32);
        let y = run(13, g, vec![a, f32s(&[0.0, 3.0, 6.0]), c]).unwrap();
        assert_eq!(y[0].to_f64_vec(), [1.0, 2.0, 3.0, 2.0, 3.0, 4.0]);
        let g = "g (float[2] a) => (float[2] y) { y = Max (a) }";
        assert_eq!(
            run(13, g, vec![f32s(&[1.0, -1.0])]).unwrap()[0].to_f64_vec(),
            [1.0, -1.0]
        );
    }

    #[test]
    fn clip_bounds() {
        let g = "g (int8[3] x, int8 hi) => (int8[3] y) { y = Clip (x, , hi) }";
        let x = Tensor::from_vec(vec![3], vec![-100i8, 5, 100]).unwrap();
        let y = run(13, g, vec![x, Tensor::scalar(7i8)]).unwrap();
        assert_eq!(ints(&y[0]), [-100, 5, 7]);
        let g = "g (float[3] x) => (float[3] y) { y = Clip <min = -1.0, max = 1.0> (x) }";
        let y = run(9, g, vec![f32s(&[-5.0, 0.5, 5.0])]).unwrap();
        assert_eq!(y[0].to_f64_vec(), [-1.0, 0.5, 1.0]);
    }

    #[test]
    fn errors_are_reported_not_panics() {
        // A slope that only broadcasts multidirectionally is invalid for PRelu.
        let g = "g (float[3] x, float[2, 3] s) => (float[2, 3] y) { y = PRelu (x, s) }";
        let s = Tensor::from_vec(vec![2, 3], vec![0.5f32; 6]).unwrap();
        let e = run(16, g, vec![f32s(&[1.0, -1.0, 2.0]), s]).unwrap_err();
        assert!(e.contains("slope"), "{e}");
        let g = "g (float[1] x) => (string[1] y) { y = Cast <to = 8> (x) }";
        let e = run(13, g, vec![f32s(&[1.0])]).unwrap_err();
        assert!(e.contains("STRING") || e.contains("string"), "{e}");
        let g = "g (int32[1] x, int32[1] s) => (int32[1] y) { y = BitShift <direction = \"UP\"> (x, s) }";
        let e = run(13, g, vec![i32s(&[1]), i32s(&[1])]).unwrap_err();
        assert!(e.contains("direction"), "{e}");
        let g = "g () => (float y) { y = Sum () }";
        assert!(run(13, g, vec![]).is_err());
    }
}
