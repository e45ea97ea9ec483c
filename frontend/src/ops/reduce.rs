//! Reductions (`Reduce*`), arg-reductions (`ArgMax`, `ArgMin`), cumulative ops (`CumSum`,
//! `CumProd`) and `TopK`.
//!
//! Every `Reduce*` op is a core `reduce` wrapped in elementwise steps: an optional map before
//! the reduction (`abs` for L1, a square for L2 and SumSquare, `exp` for LogSumExp) and an
//! optional finish after it (`sqrt`, `log`, the division of the mean). The axes come from the
//! `axes` attribute up to opset 12 (ReduceSum) or 17 (the others) and from the optional second
//! input since; an empty axes list reduces over every axis unless `noop_with_empty_axes` is
//! set, in which case only the elementwise steps run.

use terafab_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, UnaryOp, ValueId};

use super::*;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("ReduceSum", |c| reduce(c, Reduction::Sum)),
    ("ReduceMean", |c| reduce(c, Reduction::Mean)),
    ("ReduceMax", |c| reduce(c, Reduction::Max)),
    ("ReduceMin", |c| reduce(c, Reduction::Min)),
    ("ReduceProd", |c| reduce(c, Reduction::Prod)),
    ("ReduceL1", |c| reduce(c, Reduction::L1)),
    ("ReduceL2", |c| reduce(c, Reduction::L2)),
    ("ReduceLogSum", |c| reduce(c, Reduction::LogSum)),
    ("ReduceLogSumExp", |c| reduce(c, Reduction::LogSumExp)),
    ("ReduceSumSquare", |c| reduce(c, Reduction::SumSquare)),
    ("ArgMax", |c| arg_reduce(c, true)),
    ("ArgMin", |c| arg_reduce(c, false)),
    ("CumSum", |c| cumulative(c, ReduceKind::Sum)),
    ("CumProd", |c| cumulative(c, ReduceKind::Prod)),
    ("TopK", top_k),
];

/// The ONNX `Reduce*` ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl Reduction {
    /// The first opset in which `axes` is an input rather than an attribute.
    fn axes_input_since(self) -> i64 {
        if self == Reduction::Sum { 13 } else { 18 }
    }
}

/// The normalized axes a `Reduce*` node reduces over (empty: no reduction, only the
/// elementwise steps). Reads `axes` (attribute or input, per opset) and `noop_with_empty_axes`.
fn reduce_axes(c: &NodeCtx, r: Reduction, rank: usize) -> Result<Vec<usize>, ImportError> {
    let noop = c.attr_int_or("noop_with_empty_axes", 0)? != 0;
    let raw = if c.opset >= r.axes_input_since() {
        match c.opt_input(1)? {
            // An axes tensor with no elements needs no value: its shape says it is empty.
            Some(a) if c.ty(a).shape.num_elements() == Some(0) => vec![],
            Some(_) => c.const_ints(1)?.unwrap_or_default(),
            None => vec![],
        }
    } else {
        c.attr_ints("axes")?.unwrap_or_default()
    };
    if raw.is_empty() {
        return Ok(if noop { vec![] } else { (0..rank).collect() });
    }
    let mut axes = Vec::with_capacity(raw.len());
    for &a in &raw {
        let a = c.axis(a, rank)?;
        if axes.contains(&a) {
            return Err(c.invalid(format!("axis {a} appears twice in `axes`")));
        }
        axes.push(a);
    }
    Ok(axes)
}

/// A `Reduce*` op: `finish(reduce(map(x)))`.
fn reduce(c: &mut NodeCtx, r: Reduction) -> Result<Vec<ValueId>, ImportError> {
    let x = c.input(0)?;
    let keep = c.attr_int_or("keepdims", 1)? != 0;
    let dims = c.dims(x)?;
    let axes = reduce_axes(c, r, dims.len())?;
    let dtype = c.dtype(x);
    let y = match r {
        Reduction::Sum => c.reduce(ReduceKind::Sum, x, &axes, keep)?,
        Reduction::Prod => c.reduce(ReduceKind::Prod, x, &axes, keep)?,
        Reduction::Max => c.reduce(ReduceKind::Max, x, &axes, keep)?,
        Reduction::Min => c.reduce(ReduceKind::Min, x, &axes, keep)?,
        Reduction::L1 => {
            let a = c.unary(UnaryOp::Abs, x)?;
            c.reduce(ReduceKind::Sum, a, &axes, keep)?
        }
        Reduction::SumSquare => {
            let sq = c.binary(BinaryOp::Mul, x, x)?;
            c.reduce(ReduceKind::Sum, sq, &axes, keep)?
        }
        Reduction::L2 => {
            let sq = c.binary(BinaryOp::Mul, x, x)?;
            let s = c.reduce(ReduceKind::Sum, sq, &axes, keep)?;
            float_unary(c, UnaryOp::Sqrt, s)?
        }
        Reduction::LogSum => {
            let s = c.reduce(ReduceKind::Sum, x, &axes, keep)?;
            float_unary(c, UnaryOp::Log, s)?
        }
        Reduction::Mean => {
            let s = c.reduce(ReduceKind::Sum, x, &axes, keep)?;
            let count: usize = axes.iter().filter_map(|&a| dims.get(a)).product();
            // Integer means truncate, as numpy's `mean(dtype=int)` does; an empty set gives
            // NaN for floats (0 / 0) and 0 for integers.
            let n = c.scalar(count as f64, dtype)?;
            c.binary(BinaryOp::Div, s, n)?
        }
        Reduction::LogSumExp => log_sum_exp(c, x, &axes, keep)?,
    };
    Ok(vec![y])
}

/// `f(x)` for a float function `f`; integer operands go through f64 and back (the
/// conversion back truncates, as numpy's `astype` does).
fn float_unary(c: &mut NodeCtx, f: UnaryOp, x: ValueId) -> Result<ValueId, ImportError> {
    let dtype = c.dtype(x);
    if dtype.is_float() {
        return c.unary(f, x);
    }
    let xf = c.convert(x, DType::F64)?;
    let y = c.unary(f, xf)?;
    c.convert(y, dtype)
}

/// `log(sum(exp(x - m))) + m` with `m` the maximum over the axes (0 where that maximum is
/// infinite, which keeps empty sets at -inf and infinities exact).
fn log_sum_exp(
    c: &mut NodeCtx,
    x: ValueId,
    axes: &[usize],
    keep: bool,
) -> Result<ValueId, ImportError> {
    let dtype = c.dtype(x);
    let xf = if dtype.is_float() {
        x
    } else {
        c.convert(x, DType::F64)?
    };
    let fdt = c.dtype(xf);
    let m = c.reduce(ReduceKind::Max, xf, axes, true)?;
    let inf = c.unary(UnaryOp::IsInf, m)?;
    let zero = c.scalar(0.0, fdt)?;
    let m = c.select(inf, zero, m)?;
    let shifted = c.binary(BinaryOp::Sub, xf, m)?;
    let e = c.unary(UnaryOp::Exp, shifted)?;
    let s = c.reduce(ReduceKind::Sum, e, axes, keep)?;
    let l = c.unary(UnaryOp::Log, s)?;
    let out_dims = c.dims(l)?;
    let m = c.reshape(m, &out_dims)?;
    let y = c.binary(BinaryOp::Add, l, m)?;
    c.convert(y, dtype)
}

/// `ArgMax` / `ArgMin`: `axis` (default 0), `keepdims` (default 1), `select_last_index`
/// (opset 12+, default 0).
fn arg_reduce(c: &mut NodeCtx, is_max: bool) -> Result<Vec<ValueId>, ImportError> {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axis = c.axis(c.attr_int_or("axis", 0)?, dims.len())?;
    let keep_dims = c.attr_int_or("keepdims", 1)? != 0;
    let select_last = c.attr_int_or("select_last_index", 0)? != 0;
    if dims.get(axis) == Some(&0) {
        return Err(c.invalid(format!(
            "cannot take the arg-reduction of empty axis {axis}"
        )));
    }
    let y = c.op(
        Op::ArgReduce {
            is_max,
            axis,
            keep_dims,
            select_last,
        },
        &[x],
    )?;
    Ok(vec![y])
}

/// `CumSum` / `CumProd`: the axis is a (0-D or one-element) input; `exclusive`, `reverse`.
/// A run-time axis computes the running reduction along every axis and selects the one the
/// axis names (an out-of-range axis then gives the result along the last axis).
fn cumulative(c: &mut NodeCtx, kind: ReduceKind) -> Result<Vec<ValueId>, ImportError> {
    let x = c.input(0)?;
    let a = c.input(1)?;
    let exclusive = c.attr_int_or("exclusive", 0)? != 0;
    let reverse = c.attr_int_or("reverse", 0)? != 0;
    let rank = c.rank(x);
    if rank == 0 {
        return Err(c.invalid("the input must have rank >= 1"));
    }
    if c.ty(a).shape.num_elements() != Some(1) || !c.dtype(a).is_int() {
        return Err(c.invalid("the axis must be a single integer"));
    }
    let along = |c: &mut NodeCtx, axis: usize| {
        c.op(
            Op::Cumulative {
                kind,
                axis,
                exclusive,
                reverse,
            },
            &[x],
        )
    };
    if let Some(v) = c.const_ints(1).ok().flatten() {
        let Some(&axis) = v.first() else {
            return Err(c.invalid("the axis must be a single integer"));
        };
        let axis = c.axis(axis, rank)?;
        return Ok(vec![along(c, axis)?]);
    }
    // Run-time axis: normalize a negative axis, then select among the candidates.
    let a = c.convert(a, DType::I64)?;
    let a = c.reshape(a, &[])?;
    let zero = c.scalar(0.0, DType::I64)?;
    let r = c.scalar(rank as f64, DType::I64)?;
    let neg = c.compare(CompareOp::Lt, a, zero)?;
    let wrapped = c.binary(BinaryOp::Add, a, r)?;
    let a = c.select(neg, wrapped, a)?;
    let mut y = along(c, rank - 1)?;
    for axis in (0..rank - 1).rev() {
        let candidate = along(c, axis)?;
        let ax = c.scalar(axis as f64, DType::I64)?;
        let is = c.compare(CompareOp::Eq, a, ax)?;
        y = c.select(is, candidate, y)?;
    }
    Ok(vec![y])
}

/// `TopK`: `k` is an attribute before opset 10 and a (constant) input since; `axis` (default
/// -1), `largest` and `sorted` (opset 11+, default 1). A stable sort keeps equal values in
/// index order, so ties put the lower index first as ONNX requires; the result is always
/// sorted, which `sorted = 0` allows.
fn top_k(c: &mut NodeCtx) -> Result<Vec<ValueId>, ImportError> {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axis = c.axis(c.attr_int_or("axis", -1)?, dims.len())?;
    let largest = c.attr_int_or("largest", 1)? != 0;
    // Sorted output is one of the orders `sorted = 0` allows.
    let _sorted = c.attr_int_or("sorted", 1)?;
    let k = if c.opset < 10 {
        c.attr_int("k")?
            .ok_or_else(|| c.invalid("attribute `k` is required"))?
    } else {
        let v = c
            .const_ints(1)?
            .ok_or_else(|| c.invalid("input `K` is required"))?;
        match v[..] {
            [k] => k,
            _ => return Err(c.invalid("`K` must hold a single value")),
        }
    };
    let n = dims.get(axis).copied().unwrap_or(0);
    let k = usize::try_from(k)
        .ok()
        .filter(|&k| k <= n)
        .ok_or_else(|| c.invalid(format!("k = {k} is outside 0..={n}")))?;
    let sorted = c.op_n(
        Op::Sort {
            axis,
            descending: largest,
        },
        &[x],
    )?;
    let [values, indices] = sorted[..] else {
        return Err(c.invalid("`sort` must give two results"));
    };
    if k == n {
        return Ok(vec![values, indices]);
    }
    Ok(vec![
        c.slice_axis(values, axis, 0, k)?,
        c.slice_axis(indices, axis, 0, k)?,
    ])
}
