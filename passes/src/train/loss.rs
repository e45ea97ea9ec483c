//! Losses as core ops, with ONNX's semantics: [`nll`] is `NegativeLogLikelihoodLoss` (the
//! ONNX importer builds both `NegativeLogLikelihoodLoss` and `SoftmaxCrossEntropyLoss` with
//! it), [`log_softmax`] the log-probabilities `SoftmaxCrossEntropyLoss` feeds it, [`mse`] the
//! mean squared error, and [`correct`] the count of argmax hits for the accuracy.

use terafab_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, Tensor, UnaryOp, ValueId};

use super::emit::Emit;

/// How per-element losses are combined (ONNX's `reduction` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    None,
    Sum,
    Mean,
}

impl Reduction {
    /// `none`, `sum` or `mean`.
    pub fn parse(s: &str) -> Option<Reduction> {
        match s {
            "none" => Some(Reduction::None),
            "sum" => Some(Reduction::Sum),
            "mean" => Some(Reduction::Mean),
            _ => None,
        }
    }
}

/// `x - max - log(sum(exp(x - max)))` along `axes` (kept stable by the max).
pub fn log_softmax<E: Emit>(e: &mut E, x: ValueId, axes: &[usize]) -> Result<ValueId, E::Error> {
    let m = e.reduce_axes(ReduceKind::Max, x, axes, true)?;
    let d = e.bin(BinaryOp::Sub, x, m)?;
    let ex = e.un(UnaryOp::Exp, d)?;
    let s = e.reduce_axes(ReduceKind::Sum, ex, axes, true)?;
    let ls = e.un(UnaryOp::Log, s)?;
    e.bin(BinaryOp::Sub, d, ls)
}

/// The negative log-likelihood loss of log-probabilities `x` `[N, C, d...]` for class indices
/// `t` `[N, d...]`, with optional per-class `weight` `[C]`. Targets equal to `ignore` contribute
/// neither loss nor weight; the picked log-probability is selected with a one-hot mask. `mean`
/// divides by the summed weights (the count of targets not ignored without weights, as ONNX's
/// reference: by the number of targets when nothing is ignored).
pub fn nll<E: Emit>(
    e: &mut E,
    x: ValueId,
    t: ValueId,
    weight: Option<ValueId>,
    reduction: Reduction,
    ignore: Option<i64>,
) -> Result<ValueId, E::Error> {
    let (dims, tdims) = (e.static_dims(x)?, e.static_dims(t)?);
    let mut want = dims.clone();
    if dims.len() >= 2 {
        want.remove(1);
    }
    if dims.len() < 2 || tdims != want {
        return Err(e.fail(format!(
            "loss input {dims:?} and target {tdims:?} do not match ([N, C, d...] and [N, d...])"
        )));
    }
    if !e.dtype_of(t).is_int() {
        return Err(e.fail("the target must be integers".into()));
    }
    let dt = e.dtype_of(x);
    let t = e.conv(t, DType::I64)?;
    let valid = match ignore {
        Some(ii) => {
            let k = e.emit_constant(Tensor::scalar(ii));
            Some(e.cmp(CompareOp::Ne, t, k)?)
        }
        None => None,
    };
    let t_safe = match valid {
        Some(v) => {
            let zero_i = e.splat(0.0, DType::I64)?;
            e.sel(v, t, zero_i)?
        }
        None => t,
    };
    // Pick x[n, t[n, d...], d...] with a one-hot mask over the class axis.
    let mut tshape = tdims.clone();
    tshape.insert(1, 1);
    let t1 = e.reshape_to(t_safe, &tshape)?;
    let cls = e.iota_along(DType::I64, &dims, 1)?;
    let hot = e.cmp(CompareOp::Eq, cls, t1)?;
    let zero = e.splat(0.0, dt)?;
    let picked = e.sel(hot, x, zero)?;
    let mut picked = e.reduce_axes(ReduceKind::Sum, picked, &[1], false)?;
    if let Some(v) = valid {
        picked = e.sel(v, picked, zero)?;
    }
    let mut loss = e.un(UnaryOp::Neg, picked)?;
    let w = match weight {
        Some(w) => {
            if e.static_dims(w)? != [dims[1]] {
                return Err(e.fail("the weight must have shape [C]".into()));
            }
            let w = e.emit(Op::Gather { axis: 0 }, &[w, t_safe])?;
            match valid {
                Some(v) => Some(e.sel(v, w, zero)?),
                None => Some(w),
            }
        }
        None => match valid {
            Some(v) => Some(e.conv(v, dt)?),
            None => None,
        },
    };
    if let (Some(w), Some(_)) = (w, weight) {
        loss = e.bin(BinaryOp::Mul, loss, w)?;
    }
    let all: Vec<usize> = (0..tdims.len()).collect();
    match reduction {
        Reduction::None => Ok(loss),
        Reduction::Sum => e.reduce_axes(ReduceKind::Sum, loss, &all, false),
        Reduction::Mean => {
            let s = e.reduce_axes(ReduceKind::Sum, loss, &all, false)?;
            let d = match w {
                Some(w) => e.reduce_axes(ReduceKind::Sum, w, &all, false)?,
                None => e.splat(tdims.iter().product::<usize>() as f64, dt)?,
            };
            e.bin(BinaryOp::Div, s, d)
        }
    }
}

/// The squared error `(y - target)²`, summed or averaged over every element.
pub fn mse<E: Emit>(
    e: &mut E,
    y: ValueId,
    target: ValueId,
    reduction: Reduction,
) -> Result<ValueId, E::Error> {
    if e.type_of(y) != e.type_of(target) {
        return Err(e.fail(format!(
            "the output {} and the target {} must have the same type",
            e.type_of(y),
            e.type_of(target)
        )));
    }
    let d = e.bin(BinaryOp::Sub, y, target)?;
    let sq = e.bin(BinaryOp::Mul, d, d)?;
    let all: Vec<usize> = (0..e.type_of(y).shape.rank()).collect();
    match reduction {
        Reduction::None => Ok(sq),
        Reduction::Sum => e.reduce_axes(ReduceKind::Sum, sq, &all, false),
        Reduction::Mean => {
            let n = e.static_dims(y)?.iter().product::<usize>();
            let s = e.reduce_axes(ReduceKind::Sum, sq, &all, false)?;
            let k = e.splat(n as f64, e.dtype_of(y))?;
            e.bin(BinaryOp::Div, s, k)
        }
    }
}

/// How many of the targets `t` `[N, d...]` (other than `ignore`) are the argmax of the scores
/// `x` `[N, C, d...]` along the class axis, as a scalar of `x`'s type.
pub fn correct<E: Emit>(
    e: &mut E,
    x: ValueId,
    t: ValueId,
    ignore: Option<i64>,
) -> Result<ValueId, E::Error> {
    let dt = e.dtype_of(x);
    let am = e.emit(
        Op::ArgReduce {
            is_max: true,
            axis: 1,
            keep_dims: false,
            select_last: false,
        },
        &[x],
    )?;
    let am = e.conv(am, DType::I64)?;
    let t = e.conv(t, DType::I64)?;
    let mut hit = e.cmp(CompareOp::Eq, am, t)?;
    if let Some(ii) = ignore {
        let k = e.emit_constant(Tensor::scalar(ii));
        let valid = e.cmp(CompareOp::Ne, t, k)?;
        hit = e.bin(BinaryOp::And, hit, valid)?;
    }
    let hit = e.conv(hit, dt)?;
    let all: Vec<usize> = (0..e.type_of(hit).shape.rank()).collect();
    e.reduce_axes(ReduceKind::Sum, hit, &all, false)
}
