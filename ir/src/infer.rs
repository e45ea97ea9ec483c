//! The type rule of every op: from operand types (and attributes) to result types.
//!
//! Used by the verifier (declared types must equal inferred ones) and by builders such as the
//! ONNX frontend (which take the inferred types as the node's result types). Symbolic dims pass
//! through ops that do not compute with them; an op that must do arithmetic on a dim (slice,
//! pad, concat axis, conv/window spatial dims) needs it static and says so otherwise.

use crate::dtype::DType;
use crate::graph::TensorType;
use crate::op::{BinaryOp, Op, UnaryOp};
use crate::shape::{Dim, Shape, broadcast_shapes};

/// Why an op's operands or attributes are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InferError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, InferError> {
    Err(InferError(msg.into()))
}

/// Result types of a region-free op applied to operands of the given types.
/// For `if` and `loop` use [`infer_with_regions`].
pub fn infer(op: &Op, inputs: &[&TensorType]) -> Result<Vec<TensorType>, InferError> {
    infer_with_regions(op, inputs, &[])
}

/// Result types of any op; `regions` holds the result types of each region (for `if`/`loop`).
pub fn infer_with_regions(
    op: &Op,
    inputs: &[&TensorType],
    regions: &[Vec<TensorType>],
) -> Result<Vec<TensorType>, InferError> {
    let arity = |n: usize| {
        if inputs.len() == n {
            Ok(())
        } else {
            err(format!("takes {n} operand(s), got {}", inputs.len()))
        }
    };
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Constant { value } => {
            arity(0)?;
            one(TensorType::from_static(value.dtype(), value.shape()))
        }
        Op::Iota { dtype, shape, axis } => {
            arity(0)?;
            if *dtype == DType::Bool {
                return err("iota of bool is not defined");
            }
            check_axis(*axis, shape.rank())?;
            one(TensorType::new(*dtype, shape.clone()))
        }
        Op::Unary(u) => {
            arity(1)?;
            unary(*u, inputs[0])
        }
        Op::Binary(b) => {
            arity(2)?;
            same_dtype(inputs[0], inputs[1])?;
            check_binary_dtype(*b, inputs[0].dtype)?;
            one(TensorType::new(
                inputs[0].dtype,
                bcast(&inputs[0].shape, &inputs[1].shape)?,
            ))
        }
        Op::Compare(_) => {
            arity(2)?;
            same_dtype(inputs[0], inputs[1])?;
            one(TensorType::new(
                DType::Bool,
                bcast(&inputs[0].shape, &inputs[1].shape)?,
            ))
        }
        Op::Select => {
            arity(3)?;
            if inputs[0].dtype != DType::Bool {
                return err(format!("condition must be bool, found {}", inputs[0].dtype));
            }
            same_dtype(inputs[1], inputs[2])?;
            let s = bcast(
                &bcast(&inputs[0].shape, &inputs[1].shape)?,
                &inputs[2].shape,
            )?;
            one(TensorType::new(inputs[1].dtype, s))
        }
        Op::Convert { to } => {
            arity(1)?;
            one(TensorType::new(*to, inputs[0].shape.clone()))
        }
        Op::Broadcast { shape } => {
            arity(1)?;
            let b = bcast(&inputs[0].shape, shape)?;
            if &b != shape {
                return err(format!("cannot broadcast {} to {shape}", inputs[0].shape));
            }
            one(TensorType::new(inputs[0].dtype, shape.clone()))
        }
        Op::Reshape { shape } => {
            arity(1)?;
            if !same_element_count(&inputs[0].shape, shape) {
                return err(format!(
                    "cannot reshape {} to {shape}: element counts differ",
                    inputs[0].shape
                ));
            }
            one(TensorType::new(inputs[0].dtype, shape.clone()))
        }
        Op::Transpose { perm } => {
            arity(1)?;
            let x = inputs[0];
            check_permutation(perm, x.shape.rank())?;
            let dims = perm.iter().map(|&p| x.shape.0[p].clone()).collect();
            one(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Slice {
            start,
            limit,
            stride,
        } => {
            arity(1)?;
            let x = inputs[0];
            let r = x.shape.rank();
            if start.len() != r || limit.len() != r || stride.len() != r {
                return err(format!("start, limit and stride need {r} entries each"));
            }
            let mut dims = Vec::with_capacity(r);
            for d in 0..r {
                let n = static_dim(&x.shape, d, "slice")?;
                if stride[d] == 0 {
                    return err(format!("stride of dim {d} is 0"));
                }
                if !(start[d] <= limit[d] && limit[d] <= n) {
                    return err(format!(
                        "dim {d}: need start <= limit <= {n}, got start {} limit {}",
                        start[d], limit[d]
                    ));
                }
                dims.push(Dim::Static((limit[d] - start[d]).div_ceil(stride[d])));
            }
            one(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Reverse { axes } => {
            arity(1)?;
            check_axes(axes, inputs[0].shape.rank())?;
            one(inputs[0].clone())
        }
        Op::Concat { axis } => concat(inputs, *axis).map(|t| vec![t]),
        Op::Pad {
            low,
            high,
            interior,
        } => {
            arity(2)?;
            let (x, v) = (inputs[0], inputs[1]);
            same_dtype(x, v)?;
            if v.shape.rank() != 0 {
                return err(format!("padding value must be a scalar, found {}", v.shape));
            }
            let r = x.shape.rank();
            if low.len() != r || high.len() != r || interior.len() != r {
                return err(format!("low, high and interior need {r} entries each"));
            }
            let mut dims = Vec::with_capacity(r);
            for d in 0..r {
                if low[d] == 0 && high[d] == 0 && interior[d] == 0 {
                    dims.push(x.shape.0[d].clone());
                    continue;
                }
                let n = static_dim(&x.shape, d, "pad")? as i128;
                let size =
                    low[d] as i128 + high[d] as i128 + n + (n - 1).max(0) * interior[d] as i128;
                if size < 0 {
                    return err(format!("dim {d} would have negative size {size}"));
                }
                dims.push(Dim::Static(to_usize(size)?));
            }
            one(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Gather { axis } => {
            arity(2)?;
            let (x, idx) = (inputs[0], inputs[1]);
            check_index_dtype(idx.dtype, "indices")?;
            check_axis(*axis, x.shape.rank())?;
            let mut dims = x.shape.0[..*axis].to_vec();
            dims.extend(idx.shape.0.iter().cloned());
            dims.extend(x.shape.0[axis + 1..].iter().cloned());
            one(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::Scatter { mode } => {
            arity(3)?;
            let (x, idx, upd) = (inputs[0], inputs[1], inputs[2]);
            same_dtype(x, upd)?;
            check_index_dtype(idx.dtype, "indices")?;
            if x.shape.rank() == 0 {
                return err("scatter destination must have rank >= 1");
            }
            if idx.shape.rank() != 1 {
                return err(format!(
                    "scatter indices must be a vector, found {}",
                    idx.shape
                ));
            }
            let mut want = vec![idx.shape.0[0].clone()];
            want.extend(x.shape.0[1..].iter().cloned());
            if upd.shape.0 != want {
                return err(format!(
                    "updates must have shape {}, found {}",
                    Shape(want),
                    upd.shape
                ));
            }
            if x.dtype == DType::Bool && *mode != crate::op::ScatterMode::Replace {
                return err(format!(
                    "scatter mode {} is not defined on bool",
                    mode.name()
                ));
            }
            one(x.clone())
        }
        Op::Reduce {
            axes, keep_dims, ..
        } => {
            arity(1)?;
            let x = inputs[0];
            check_axes(axes, x.shape.rank())?;
            one(TensorType::new(
                x.dtype,
                reduced_shape(&x.shape, axes, *keep_dims),
            ))
        }
        Op::ArgReduce {
            axis, keep_dims, ..
        } => {
            arity(1)?;
            let x = inputs[0];
            check_axis(*axis, x.shape.rank())?;
            if x.shape.0[*axis] == Dim::Static(0) {
                return err(format!("{} over an empty axis", op.name()));
            }
            one(TensorType::new(
                DType::I64,
                reduced_shape(&x.shape, &[*axis], *keep_dims),
            ))
        }
        Op::Cumulative { axis, .. } => {
            arity(1)?;
            check_axis(*axis, inputs[0].shape.rank())?;
            one(inputs[0].clone())
        }
        Op::Sort { axis, .. } => {
            arity(1)?;
            let x = inputs[0];
            check_axis(*axis, x.shape.rank())?;
            Ok(vec![
                x.clone(),
                TensorType::new(DType::I64, x.shape.clone()),
            ])
        }
        Op::DotGeneral {
            lhs_batch,
            rhs_batch,
            lhs_contract,
            rhs_contract,
        } => {
            arity(2)?;
            dot_general(
                inputs[0],
                inputs[1],
                lhs_batch,
                rhs_batch,
                lhs_contract,
                rhs_contract,
            )
            .map(|t| vec![t])
        }
        Op::Conv {
            stride,
            pad_low,
            pad_high,
            lhs_dilation,
            rhs_dilation,
            groups,
        } => {
            arity(2)?;
            let (x, w) = (inputs[0], inputs[1]);
            same_dtype(x, w)?;
            let r = x.shape.rank();
            if r < 3 || w.shape.rank() != r {
                return err(format!(
                    "conv needs x [N,C,spatial...] and w [O,C/groups,k...] of equal rank >= 3, found {} and {}",
                    x.shape, w.shape
                ));
            }
            let ns = r - 2;
            for (name, len) in [
                ("stride", stride.len()),
                ("pad_low", pad_low.len()),
                ("pad_high", pad_high.len()),
                ("lhs_dilation", lhs_dilation.len()),
                ("rhs_dilation", rhs_dilation.len()),
            ] {
                if len != ns {
                    return err(format!("{name} needs {ns} entries, found {len}"));
                }
            }
            if *groups == 0 {
                return err("groups must be >= 1");
            }
            let c = static_dim(&x.shape, 1, "conv channel")?;
            let wc = static_dim(&w.shape, 1, "conv channel")?;
            let o = static_dim(&w.shape, 0, "conv output channel")?;
            if c != wc * groups {
                return err(format!(
                    "input has {c} channels but the kernel expects {wc} x {groups} groups"
                ));
            }
            if o % groups != 0 {
                return err(format!(
                    "{o} output channels are not divisible by {groups} groups"
                ));
            }
            let mut dims = vec![x.shape.0[0].clone(), Dim::Static(o)];
            for d in 0..ns {
                let s = static_dim(&x.shape, d + 2, "conv spatial")?;
                let k = static_dim(&w.shape, d + 2, "conv kernel")?;
                dims.push(Dim::Static(window_out(
                    d,
                    s,
                    k,
                    stride[d],
                    pad_low[d],
                    pad_high[d],
                    lhs_dilation[d],
                    rhs_dilation[d],
                )?));
            }
            one(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::ReduceWindow {
            window,
            stride,
            dilation,
            pad_low,
            pad_high,
            ..
        } => {
            arity(1)?;
            let x = inputs[0];
            let r = x.shape.rank();
            for (name, len) in [
                ("window", window.len()),
                ("stride", stride.len()),
                ("dilation", dilation.len()),
                ("pad_low", pad_low.len()),
                ("pad_high", pad_high.len()),
            ] {
                if len != r {
                    return err(format!("{name} needs {r} entries, found {len}"));
                }
            }
            let mut dims = Vec::with_capacity(r);
            for d in 0..r {
                let trivial =
                    window[d] == 1 && stride[d] == 1 && pad_low[d] == 0 && pad_high[d] == 0;
                if trivial && dilation[d] >= 1 {
                    dims.push(x.shape.0[d].clone());
                    continue;
                }
                let s = static_dim(&x.shape, d, "window")?;
                let lo = i64::try_from(pad_low[d])
                    .map_err(|_| InferError("padding too large".into()))?;
                let hi = i64::try_from(pad_high[d])
                    .map_err(|_| InferError("padding too large".into()))?;
                dims.push(Dim::Static(window_out(
                    d,
                    s,
                    window[d],
                    stride[d],
                    lo,
                    hi,
                    1,
                    dilation[d],
                )?));
            }
            one(TensorType::new(x.dtype, Shape(dims)))
        }
        Op::If => {
            arity(1)?;
            if inputs[0].dtype != DType::Bool || inputs[0].shape.num_elements() != Some(1) {
                return err(format!(
                    "condition must be a one-element bool, found {}",
                    inputs[0]
                ));
            }
            let [then_t, else_t] = regions else {
                return err("needs two regions");
            };
            if then_t != else_t {
                return err(format!(
                    "branches yield different types: ({}) vs ({})",
                    list(then_t),
                    list(else_t)
                ));
            }
            Ok(then_t.clone())
        }
        Op::Composite(c) => one(c.infer(inputs)?),
        Op::Loop => {
            if inputs.len() < 2 {
                return err("takes a trip count, a condition and the carried values");
            }
            if !inputs[0].dtype.is_int() || inputs[0].shape.num_elements() != Some(1) {
                return err(format!(
                    "trip count must be a one-element integer, found {}",
                    inputs[0]
                ));
            }
            if inputs[1].dtype != DType::Bool || inputs[1].shape.num_elements() != Some(1) {
                return err(format!(
                    "condition must be a one-element bool, found {}",
                    inputs[1]
                ));
            }
            let [body] = regions else {
                return err("needs one region");
            };
            let carried = &inputs[2..];
            if body.len() < 1 + carried.len() {
                return err("body yields fewer values than the loop carries");
            }
            let mut out: Vec<TensorType> = carried.iter().map(|t| (*t).clone()).collect();
            for (i, t) in body[1 + carried.len()..].iter().enumerate() {
                let mut dims = vec![Dim::Sym(format!("loop_trips_{i}"))];
                dims.extend(t.shape.0.iter().cloned());
                out.push(TensorType::new(t.dtype, Shape(dims)));
            }
            Ok(out)
        }
    }
}

fn list(ts: &[TensorType]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unary(u: UnaryOp, x: &TensorType) -> Result<Vec<TensorType>, InferError> {
    use UnaryOp::*;
    let d = x.dtype;
    let ok = match u {
        Neg | Abs | Sign => d.is_numeric(),
        Not => d.is_bool() || d.is_int(),
        IsNan | IsInf => d.is_numeric(),
        _ => d.is_float(),
    };
    if !ok {
        return err(format!("`{}` is not defined on {d}", u.name()));
    }
    let out = if matches!(u, IsNan | IsInf) {
        DType::Bool
    } else {
        d
    };
    Ok(vec![TensorType::new(out, x.shape.clone())])
}

fn check_binary_dtype(b: BinaryOp, d: DType) -> Result<(), InferError> {
    use BinaryOp::*;
    let ok = match b {
        Add | Sub | Mul | Div | Rem | Pow => d.is_numeric(),
        Max | Min => true,
        And | Or | Xor => d.is_bool() || d.is_int(),
        ShiftLeft | ShiftRight => d.is_int(),
    };
    if ok {
        Ok(())
    } else {
        err(format!("`{}` is not defined on {d}", b.name()))
    }
}

fn same_dtype(a: &TensorType, b: &TensorType) -> Result<(), InferError> {
    if a.dtype == b.dtype {
        Ok(())
    } else {
        err(format!(
            "operand element types differ: {} vs {}",
            a.dtype, b.dtype
        ))
    }
}

fn check_index_dtype(d: DType, what: &str) -> Result<(), InferError> {
    if d.is_int() {
        Ok(())
    } else {
        err(format!("{what} must be integers, found {d}"))
    }
}

fn bcast(a: &Shape, b: &Shape) -> Result<Shape, InferError> {
    broadcast_shapes(a, b).map_err(|e| InferError(e.to_string()))
}

fn check_axis(axis: usize, rank: usize) -> Result<(), InferError> {
    if axis < rank {
        Ok(())
    } else {
        err(format!("axis {axis} out of range for rank {rank}"))
    }
}

fn check_axes(axes: &[usize], rank: usize) -> Result<(), InferError> {
    let mut seen = vec![false; rank];
    for &a in axes {
        check_axis(a, rank)?;
        if std::mem::replace(&mut seen[a], true) {
            return err(format!("axis {a} repeated"));
        }
    }
    Ok(())
}

fn check_permutation(perm: &[usize], rank: usize) -> Result<(), InferError> {
    if perm.len() != rank {
        return err(format!(
            "perm {perm:?} has {} entries for rank {rank}",
            perm.len()
        ));
    }
    check_axes(perm, rank).map_err(|_| InferError(format!("perm {perm:?} is not a permutation")))
}

fn static_dim(s: &Shape, d: usize, what: &str) -> Result<usize, InferError> {
    s.0[d]
        .as_static()
        .ok_or_else(|| InferError(format!("{what} dim {d} of {s} must be static")))
}

fn to_usize(v: i128) -> Result<usize, InferError> {
    usize::try_from(v).map_err(|_| InferError(format!("dim {v} out of range")))
}

fn reduced_shape(s: &Shape, axes: &[usize], keep_dims: bool) -> Shape {
    let mut dims = Vec::new();
    for (i, d) in s.0.iter().enumerate() {
        if axes.contains(&i) {
            if keep_dims {
                dims.push(Dim::Static(1));
            }
        } else {
            dims.push(d.clone());
        }
    }
    Shape(dims)
}

/// Element counts equal: exactly for static shapes; for symbolic ones the static products and
/// the multisets of symbols must match (`[N,4]` -> `[2,N,2]` is fine, `[N]` -> `[M]` is not).
fn same_element_count(a: &Shape, b: &Shape) -> bool {
    fn split(s: &Shape) -> (Option<usize>, Vec<&str>) {
        let mut prod = Some(1usize);
        let mut syms = Vec::new();
        for d in &s.0 {
            match d {
                Dim::Static(n) => prod = prod.and_then(|p| p.checked_mul(*n)),
                Dim::Sym(s) => syms.push(s.as_str()),
            }
        }
        syms.sort_unstable();
        (prod, syms)
    }
    let (pa, sa) = split(a);
    let (pb, sb) = split(b);
    pa.is_some() && pa == pb && (sa == sb || pa == Some(0))
}

fn concat(inputs: &[&TensorType], axis: usize) -> Result<TensorType, InferError> {
    let Some(first) = inputs.first() else {
        return err("concat needs at least one operand");
    };
    let r = first.shape.rank();
    check_axis(axis, r)?;
    let mut total = 0usize;
    for t in inputs {
        same_dtype(first, t)?;
        if t.shape.rank() != r {
            return err(format!(
                "operand ranks differ: {} vs {}",
                first.shape, t.shape
            ));
        }
        for d in 0..r {
            if d != axis && t.shape.0[d] != first.shape.0[d] {
                return err(format!(
                    "operand shapes differ off the axis: {} vs {}",
                    first.shape, t.shape
                ));
            }
        }
        if inputs.len() > 1 {
            total = total
                .checked_add(static_dim(&t.shape, axis, "concat axis")?)
                .ok_or_else(|| InferError("concat size overflows".into()))?;
        }
    }
    let mut dims = first.shape.0.clone();
    if inputs.len() > 1 {
        dims[axis] = Dim::Static(total);
    }
    Ok(TensorType::new(first.dtype, Shape(dims)))
}

fn dot_general(
    l: &TensorType,
    r: &TensorType,
    lb: &[usize],
    rb: &[usize],
    lc: &[usize],
    rc: &[usize],
) -> Result<TensorType, InferError> {
    same_dtype(l, r)?;
    if lb.len() != rb.len() || lc.len() != rc.len() {
        return err("batch and contracting dims must pair up");
    }
    let (lr, rr) = (l.shape.rank(), r.shape.rank());
    let lall: Vec<usize> = lb.iter().chain(lc).copied().collect();
    let rall: Vec<usize> = rb.iter().chain(rc).copied().collect();
    check_axes(&lall, lr).map_err(|e| InferError(format!("lhs: {e}")))?;
    check_axes(&rall, rr).map_err(|e| InferError(format!("rhs: {e}")))?;
    for (&a, &b) in lall.iter().zip(&rall) {
        if l.shape.0[a] != r.shape.0[b] {
            return err(format!(
                "lhs dim {a} ({}) does not match rhs dim {b} ({})",
                l.shape.0[a], r.shape.0[b]
            ));
        }
    }
    let mut dims: Vec<Dim> = lb.iter().map(|&a| l.shape.0[a].clone()).collect();
    dims.extend(
        (0..lr)
            .filter(|a| !lall.contains(a))
            .map(|a| l.shape.0[a].clone()),
    );
    dims.extend(
        (0..rr)
            .filter(|a| !rall.contains(a))
            .map(|a| r.shape.0[a].clone()),
    );
    Ok(TensorType::new(l.dtype, Shape(dims)))
}

/// Output extent of a window of size `k` over `s` elements (conv and reduce_window).
#[allow(clippy::too_many_arguments)]
fn window_out(
    d: usize,
    s: usize,
    k: usize,
    stride: usize,
    lo: i64,
    hi: i64,
    lhs_dil: usize,
    rhs_dil: usize,
) -> Result<usize, InferError> {
    if stride == 0 || lhs_dil == 0 || rhs_dil == 0 || k == 0 {
        return err(format!(
            "dim {d}: window, stride and dilations must be >= 1"
        ));
    }
    let s = s as i128;
    // An empty input has dilated extent 0 (not `(0-1)*d + 1`).
    let dilated_in = if s == 0 {
        0
    } else {
        (s - 1) * lhs_dil as i128 + 1
    };
    let padded = dilated_in + lo as i128 + hi as i128;
    let span = (k as i128 - 1) * rhs_dil as i128 + 1;
    // floor((padded - span) / stride) + 1, with floor division: 0 outputs when the window
    // overhangs by less than a stride (as the interpreter computes), an error below that.
    let out = (padded - span).div_euclid(stride as i128) + 1;
    if out < 0 || padded < 0 {
        return err(format!(
            "dim {d}: window of extent {span} does not fit in the padded input of extent {padded}"
        ));
    }
    to_usize(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(d: DType, dims: &[usize]) -> TensorType {
        TensorType::from_static(d, dims)
    }

    #[test]
    fn elementwise_rules() {
        let a = t(DType::F32, &[2, 1, 3]);
        let b = t(DType::F32, &[4, 1]);
        let r = infer(&Op::Binary(BinaryOp::Add), &[&a, &b]).unwrap();
        assert_eq!(r[0], t(DType::F32, &[2, 4, 3]));
        let i = t(DType::I32, &[3]);
        assert!(infer(&Op::Binary(BinaryOp::Add), &[&a, &i]).is_err());
        assert!(infer(&Op::Unary(UnaryOp::Exp), &[&i]).is_err());
        assert!(infer(&Op::Binary(BinaryOp::ShiftLeft), &[&a, &a]).is_err());
        let c = infer(&Op::Compare(crate::op::CompareOp::Lt), &[&a, &a]).unwrap();
        assert_eq!(c[0].dtype, DType::Bool);
    }

    #[test]
    fn dot_general_rule() {
        let l = t(DType::F32, &[8, 2, 3]);
        let r = t(DType::F32, &[8, 3, 5]);
        let op = Op::DotGeneral {
            lhs_batch: vec![0],
            rhs_batch: vec![0],
            lhs_contract: vec![2],
            rhs_contract: vec![1],
        };
        assert_eq!(infer(&op, &[&l, &r]).unwrap()[0], t(DType::F32, &[8, 2, 5]));
        let bad = t(DType::F32, &[8, 4, 5]);
        assert!(infer(&op, &[&l, &bad]).is_err());
    }

    #[test]
    fn conv_rule() {
        let x = t(DType::F32, &[1, 4, 7, 7]);
        let w = t(DType::F32, &[8, 2, 3, 3]);
        let op = Op::Conv {
            stride: vec![2, 2],
            pad_low: vec![1, 1],
            pad_high: vec![1, 1],
            lhs_dilation: vec![1, 1],
            rhs_dilation: vec![1, 1],
            groups: 2,
        };
        assert_eq!(
            infer(&op, &[&x, &w]).unwrap()[0],
            t(DType::F32, &[1, 8, 4, 4])
        );
        let w3 = t(DType::F32, &[8, 3, 3, 3]);
        assert!(infer(&op, &[&x, &w3]).is_err());
    }

    #[test]
    fn symbolic_dims() {
        let n = Dim::Sym("N".into());
        let x = TensorType::new(DType::F32, Shape(vec![n.clone(), Dim::Static(4)]));
        let ok = Op::Reshape {
            shape: Shape(vec![Dim::Static(2), n.clone(), Dim::Static(2)]),
        };
        assert!(infer(&ok, &[&x]).is_ok());
        let bad = Op::Reshape {
            shape: Shape(vec![Dim::Sym("M".into()), Dim::Static(4)]),
        };
        assert!(infer(&bad, &[&x]).is_err());
        let s = Op::Slice {
            start: vec![0, 0],
            limit: vec![1, 4],
            stride: vec![1, 1],
        };
        assert!(infer(&s, &[&x]).unwrap_err().0.contains("must be static"));
    }

    #[test]
    fn slice_pad_concat() {
        let x = t(DType::I64, &[10]);
        let s = Op::Slice {
            start: vec![1],
            limit: vec![8],
            stride: vec![3],
        };
        assert_eq!(infer(&s, &[&x]).unwrap()[0], t(DType::I64, &[3]));
        let v = t(DType::I64, &[]);
        let p = Op::Pad {
            low: vec![-2],
            high: vec![1],
            interior: vec![1],
        };
        assert_eq!(infer(&p, &[&x, &v]).unwrap()[0], t(DType::I64, &[18]));
        let c = Op::Concat { axis: 0 };
        assert_eq!(infer(&c, &[&x, &x]).unwrap()[0], t(DType::I64, &[20]));
    }
}
