//! Shape and data movement: Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split,
//! Slice, Expand, Tile, Pad, Shape, Size, ConstantOfShape, Constant, Identity, Range, EyeLike,
//! DepthToSpace, SpaceToDepth, Trilu, CenterCropPad and ReverseSequence.
//!
//! Shapes are static after import, so most of these ops become one or two core ops with
//! attributes computed here (reshape, transpose, slice, broadcast, pad, concat). Shape-valued
//! inputs (the target shape of Reshape, the pads of Pad, ...) must be known at import time; they
//! usually are, because shape arithmetic on constants is folded.

use terafab_ir::shape::broadcast_static;
use terafab_ir::{BinaryOp, CompareOp, DType, Op, Shape, Tensor, ValueId};

use super::*;
use crate::onnx::tensor::dtype_of;

/// The importers' result: one value per ONNX output.
pub(crate) type Outs = Result<Vec<ValueId>, ImportError>;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("Reshape", reshape),
    ("Flatten", flatten),
    ("Squeeze", squeeze),
    ("Unsqueeze", unsqueeze),
    ("Transpose", transpose),
    ("Concat", concat),
    ("Split", split),
    ("Slice", slice),
    ("Expand", expand),
    ("Tile", tile),
    ("Pad", pad),
    ("Shape", shape),
    ("Size", size),
    ("ConstantOfShape", constant_of_shape),
    ("Constant", constant),
    ("Identity", identity),
    ("Range", range),
    ("EyeLike", eye_like),
    ("DepthToSpace", depth_to_space),
    ("SpaceToDepth", space_to_depth),
    ("Trilu", trilu),
    ("CenterCropPad", center_crop_pad),
    ("ReverseSequence", reverse_sequence),
];

// ---- shared helpers (also used by `index.rs`) -------------------------------------------------

/// An integer list given by attribute `attr` (older opsets) or by constant input `input`
/// (newer opsets); `None` when neither is given. Reading the attribute first also marks it used.
pub(crate) fn ints_arg(
    c: &NodeCtx,
    attr: &str,
    input: usize,
) -> Result<Option<Vec<i64>>, ImportError> {
    match c.attr_ints(attr)? {
        Some(v) => Ok(Some(v)),
        None => c.const_ints(input),
    }
}

/// Normalize a list of ONNX axes against `rank`, rejecting duplicates.
pub(crate) fn norm_axes(c: &NodeCtx, axes: &[i64], rank: usize) -> Result<Vec<usize>, ImportError> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = c.axis(a, rank)?;
        if out.contains(&a) {
            return Err(c.invalid(format!("axis {a} is repeated")));
        }
        out.push(a);
    }
    Ok(out)
}

/// A non-negative dim count from model data, or an "invalid" error.
pub(crate) fn to_dim(c: &NodeCtx, v: i64, what: &str) -> Result<usize, ImportError> {
    usize::try_from(v).map_err(|_| c.invalid(format!("{what} must be non-negative, got {v}")))
}

/// An i64 tensor of `dims` whose element at index `i` is `i[axis]` (folded to a constant).
pub(crate) fn iota(c: &mut NodeCtx, dims: &[usize], axis: usize) -> Result<ValueId, ImportError> {
    c.op(
        Op::Iota {
            dtype: DType::I64,
            shape: Shape::from_static(dims),
            axis,
        },
        &[],
    )
}

/// A constant i64 tensor of shape `dims`.
pub(crate) fn const_i64_tensor(
    c: &mut NodeCtx,
    dims: &[usize],
    v: Vec<i64>,
) -> Result<ValueId, ImportError> {
    let t = Tensor::from_vec(dims.to_vec(), v).map_err(|e| c.invalid(e.to_string()))?;
    Ok(c.constant(t))
}

/// Gather the entries `idx` (in range, constant) of `x` along `axis`.
pub(crate) fn gather_const(
    c: &mut NodeCtx,
    x: ValueId,
    axis: usize,
    idx: &[i64],
) -> Result<ValueId, ImportError> {
    let i = c.const_i64s(idx)?;
    c.op(Op::Gather { axis }, &[x, i])
}

/// The most entries of an index or weight table built at import time (pads, resize plans,
/// ranges); larger ones come from a broken or hostile model.
pub(crate) const MAX_TABLE: usize = 1 << 26;

/// Reject a table of `n` entries above [`MAX_TABLE`].
pub(crate) fn check_table(c: &NodeCtx, n: usize) -> Result<(), ImportError> {
    if n > MAX_TABLE {
        return Err(c.unsupported(format!(
            "an import-time table of {n} entries is too large (limit {MAX_TABLE})"
        )));
    }
    Ok(())
}

/// A general static slice: `start`/`limit`/`stride` per dim.
fn slice_op(
    c: &mut NodeCtx,
    x: ValueId,
    start: Vec<usize>,
    limit: Vec<usize>,
    stride: Vec<usize>,
) -> Result<ValueId, ImportError> {
    c.op(
        Op::Slice {
            start,
            limit,
            stride,
        },
        &[x],
    )
}

/// The product of dims, or an "invalid" error on overflow.
fn product(c: &NodeCtx, dims: &[usize]) -> Result<usize, ImportError> {
    dims.iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| c.invalid(format!("the element count of {dims:?} overflows")))
}

/// A scalar input (shape `[]` or `[1]`) reshaped to rank 0.
fn scalar_input(c: &mut NodeCtx, i: usize) -> Result<ValueId, ImportError> {
    let v = c.input(i)?;
    let n = product(c, &c.dims(v)?)?;
    if n != 1 {
        return Err(c.invalid(format!("input {i} must hold one element, found {n}")));
    }
    c.reshape(v, &[])
}

// ---- reshaping ------------------------------------------------------------------------------

/// Reshape: `0` copies the input dim (unless `allowzero`), `-1` is inferred.
fn reshape(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let allowzero = c.attr_int_or("allowzero", 0)? != 0;
    let spec = c
        .const_ints(1)?
        .ok_or_else(|| c.invalid("the target shape (input 1) is required"))?;
    let total = product(c, &dims)?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        match s {
            0 if !allowzero => out.push(
                *dims
                    .get(i)
                    .ok_or_else(|| c.invalid(format!("shape entry {i} copies a missing dim")))?,
            ),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            _ => out.push(to_dim(c, s, "a shape entry")?),
        }
    }
    if let Some(i) = infer {
        let known = product(c, &out)?;
        if known == 0 || total % known != 0 {
            return Err(c.invalid(format!(
                "cannot infer dim {i} of {spec:?} for {total} elements"
            )));
        }
        out[i] = total / known;
    }
    if product(c, &out)? != total {
        return Err(c.invalid(format!("cannot reshape {dims:?} to {spec:?}")));
    }
    Ok(vec![c.reshape(x, &out)?])
}

/// Flatten to 2-D around `axis` (in `-r..=r`).
fn flatten(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let r = dims.len() as i64;
    let a = c.attr_int_or("axis", 1)?;
    let a = if a < 0 { a + r } else { a };
    if !(0..=r).contains(&a) {
        return Err(c.invalid(format!("axis {a} is out of range for rank {r}")));
    }
    let (lo, hi) = dims.split_at(a as usize);
    let out = [product(c, lo)?, product(c, hi)?];
    Ok(vec![c.reshape(x, &out)?])
}

/// Squeeze the given axes (attribute before opset 13, input after), or every dim of extent 1.
fn squeeze(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axes = match ints_arg(c, "axes", 1)? {
        Some(a) => norm_axes(c, &a, dims.len())?,
        None => (0..dims.len()).filter(|&d| dims[d] == 1).collect(),
    };
    for &a in &axes {
        if dims[a] != 1 {
            return Err(c.invalid(format!("cannot squeeze dim {a} of extent {}", dims[a])));
        }
    }
    let out: Vec<usize> = (0..dims.len())
        .filter(|d| !axes.contains(d))
        .map(|d| dims[d])
        .collect();
    Ok(vec![c.reshape(x, &out)?])
}

/// Insert dims of extent 1 at the given axes of the result.
fn unsqueeze(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axes = ints_arg(c, "axes", 1)?.ok_or_else(|| c.invalid("axes are required"))?;
    let rank = dims.len() + axes.len();
    let axes = norm_axes(c, &axes, rank)?;
    let mut rest = dims.iter();
    let out: Vec<usize> = (0..rank)
        .map(|d| {
            if axes.contains(&d) {
                1
            } else {
                rest.next().copied().unwrap_or(1)
            }
        })
        .collect();
    Ok(vec![c.reshape(x, &out)?])
}

/// Transpose by `perm` (default: reverse the dims).
fn transpose(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let r = c.rank(x);
    let perm = match c.attr_ints("perm")? {
        Some(p) => {
            let p = norm_axes(c, &p, r)?;
            if p.len() != r {
                return Err(c.invalid(format!("perm {p:?} does not match rank {r}")));
            }
            p
        }
        None => (0..r).rev().collect(),
    };
    Ok(vec![c.transpose(x, &perm)?])
}

/// Concatenate along `axis`.
fn concat(c: &mut NodeCtx) -> Outs {
    let xs = c.inputs()?;
    let first = *xs
        .first()
        .ok_or_else(|| c.invalid("needs at least one input"))?;
    // `axis` is required from opset 4; before it defaulted to 1.
    let a = match c.attr_int("axis")? {
        Some(a) => a,
        None if c.opset < 4 => 1,
        None => return Err(c.invalid("attribute `axis` is required")),
    };
    let a = c.axis(a, c.rank(first))?;
    Ok(vec![c.concat(&xs, a)?])
}

/// Split along `axis` into parts given by `split` (attribute before opset 13, input after),
/// into `num_outputs` parts (opset 18; the last part may be smaller), or into equal parts, one
/// per output.
fn split(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axis = c.axis(c.attr_int_or("axis", 0)?, dims.len())?;
    let n = dims[axis];
    let num_outputs = c.attr_int("num_outputs")?;
    let sizes: Vec<usize> = match ints_arg(c, "split", 1)? {
        Some(s) => s
            .iter()
            .map(|&v| to_dim(c, v, "a split size"))
            .collect::<Result<_, _>>()?,
        None => {
            let k = match num_outputs {
                Some(k) => to_dim(c, k, "num_outputs")?,
                None => c.num_outputs(),
            };
            if k == 0 {
                return Err(c.invalid("cannot split into 0 parts"));
            }
            if n % k == 0 {
                vec![n / k; k]
            } else if num_outputs.is_none() && c.opset < 18 {
                return Err(c.invalid(format!("cannot split {n} evenly into {k} parts")));
            } else {
                // Parts of ceil(n / k); the last one takes what remains.
                let part = n / k + 1;
                let last = n
                    .checked_sub(part * (k - 1))
                    .ok_or_else(|| c.invalid(format!("cannot split {n} into {k} parts")))?;
                let mut v = vec![part; k - 1];
                v.push(last);
                v
            }
        }
    };
    if sizes.iter().sum::<usize>() != n {
        return Err(c.invalid(format!("split sizes {sizes:?} do not add up to {n}")));
    }
    let mut outs = Vec::with_capacity(sizes.len());
    let mut pos = 0;
    for s in sizes {
        outs.push(c.slice_axis(x, axis, pos, pos + s)?);
        pos += s;
    }
    Ok(outs)
}

/// Slice: attributes `starts`/`ends`/`axes` before opset 10, inputs `starts`, `ends`, `axes`,
/// `steps` after. Out-of-range bounds are clamped as the spec says; negative steps reverse the
/// axis and slice it forward.
fn slice(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let r = dims.len();
    let (starts, ends, axes, steps) = if c.opset < 10 {
        (
            c.attr_ints("starts")?,
            c.attr_ints("ends")?,
            c.attr_ints("axes")?,
            None,
        )
    } else {
        (
            c.const_ints(1)?,
            c.const_ints(2)?,
            c.const_ints(3)?,
            c.const_ints(4)?,
        )
    };
    let starts = starts.ok_or_else(|| c.invalid("starts are required"))?;
    let ends = ends.ok_or_else(|| c.invalid("ends are required"))?;
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(c.invalid("starts, ends, axes and steps must have the same length"));
    }
    let axes = norm_axes(c, &axes, r)?;
    let mut start = vec![0; r];
    let mut limit = dims.clone();
    let mut stride = vec![1; r];
    let mut reversed = Vec::new();
    for (i, &a) in axes.iter().enumerate() {
        let n = dims[a] as i128;
        let (st, en, sp) = (starts[i] as i128, ends[i] as i128, steps[i] as i128);
        let wrap = |v: i128| if v < 0 { v + n } else { v };
        let (s, e) = if sp > 0 {
            (wrap(st).clamp(0, n), wrap(en).clamp(0, n))
        } else if sp < 0 {
            // Elements s, s+sp, ... > e; in the reversed axis (i' = n-1-i) they run forward
            // from n-1-s to n-1-e.
            reversed.push(a);
            if n == 0 {
                (0, 0)
            } else {
                let s = wrap(st).clamp(0, n - 1);
                let e = wrap(en).clamp(-1, n - 1);
                (n - 1 - s, n - 1 - e)
            }
        } else {
            return Err(c.invalid(format!("step {i} is 0")));
        };
        start[a] = s as usize;
        limit[a] = s.max(e) as usize;
        stride[a] = usize::try_from(sp.unsigned_abs()).unwrap_or(usize::MAX);
    }
    let x = if reversed.is_empty() {
        x
    } else {
        c.op(Op::Reverse { axes: reversed }, &[x])?
    };
    Ok(vec![slice_op(c, x, start, limit, stride)?])
}

/// Expand: bidirectional broadcast with the constant `shape` input.
fn expand(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let spec = c
        .const_ints(1)?
        .ok_or_else(|| c.invalid("the shape (input 1) is required"))?;
    let spec: Vec<usize> = spec
        .iter()
        .map(|&v| to_dim(c, v, "a shape entry"))
        .collect::<Result<_, _>>()?;
    let out = broadcast_static(&dims, &spec).map_err(|e| c.invalid(e.to_string()))?;
    Ok(vec![c.broadcast(x, &out)?])
}

/// Tile: `[d...]` becomes `[1, d0, 1, d1, ...]`, broadcast to `[r0, d0, r1, d1, ...]`, then
/// merged pairwise.
fn tile(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let reps = c
        .const_ints(1)?
        .ok_or_else(|| c.invalid("repeats (input 1) are required"))?;
    if reps.len() != dims.len() {
        return Err(c.invalid(format!("{} repeats for rank {}", reps.len(), dims.len())));
    }
    let mut split = Vec::with_capacity(2 * dims.len());
    let mut big = Vec::with_capacity(2 * dims.len());
    let mut out = Vec::with_capacity(dims.len());
    for (&d, &r) in dims.iter().zip(&reps) {
        let r = to_dim(c, r, "a repeat count")?;
        split.extend([1, d]);
        big.extend([r, d]);
        out.push(
            r.checked_mul(d)
                .ok_or_else(|| c.invalid("the tiled shape overflows"))?,
        );
    }
    product(c, &big)?;
    let y = c.reshape(x, &split)?;
    let y = c.broadcast(y, &big)?;
    Ok(vec![c.reshape(y, &out)?])
}

/// How Pad fills the new border.
#[derive(Clone, Copy, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// Pad: `pads` (attribute before opset 11, input after) as `[begin..., end...]` over `axes`
/// (input 3, opset 18) or all dims; negative pads crop. Constant mode is a core `pad`; the
/// other modes gather each axis with constant source indices.
fn pad(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let r = dims.len();
    let mode = match c.attr_string_or("mode", "constant")?.as_str() {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        m => return Err(c.unsupported(format!("mode `{m}` is not supported"))),
    };
    let attr_value = c.attr_float("value")?;
    let pads = ints_arg(c, "pads", 1)?.ok_or_else(|| c.invalid("pads are required"))?;
    let axes = match c.const_ints(3)? {
        Some(a) => norm_axes(c, &a, r)?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(c.invalid(format!("{} pads for {} axes", pads.len(), axes.len())));
    }
    let (mut low, mut high) = (vec![0i64; r], vec![0i64; r]);
    for (i, &a) in axes.iter().enumerate() {
        low[a] = pads[i];
        high[a] = pads[axes.len() + i];
        if dims[a] as i128 + low[a] as i128 + high[a] as i128 <= -1 {
            return Err(c.invalid(format!("pads {pads:?} crop more than dim {a} holds")));
        }
    }
    if mode == PadMode::Constant {
        let dt = c.dtype(x);
        let value = match (c.opt_input(2)?, attr_value) {
            (Some(_), _) => {
                let v = scalar_input(c, 2)?;
                c.convert(v, dt)?
            }
            (None, Some(f)) => c.scalar(f as f64, dt)?,
            (None, None) => c.scalar(0.0, dt)?,
        };
        let interior = vec![0; r];
        return Ok(vec![c.op(
            Op::Pad {
                low,
                high,
                interior,
            },
            &[x, value],
        )?]);
    }
    let mut y = x;
    for a in 0..r {
        if low[a] == 0 && high[a] == 0 {
            continue;
        }
        let n = dims[a] as i64;
        let len = n + low[a] + high[a];
        check_table(c, len as usize)?;
        if n == 0 {
            return Err(c.invalid(format!("cannot pad the empty dim {a} in this mode")));
        }
        let idx: Vec<i64> = (0..len)
            .map(|j| {
                let i = j - low[a];
                match mode {
                    PadMode::Edge => i.clamp(0, n - 1),
                    PadMode::Wrap => i.rem_euclid(n),
                    _ if n == 1 => 0,
                    _ => {
                        let p = 2 * (n - 1);
                        let m = i.rem_euclid(p);
                        if m < n { m } else { p - m }
                    }
                }
            })
            .collect();
        y = gather_const(c, y, a, &idx)?;
    }
    Ok(vec![y])
}

// ---- shapes and constants ---------------------------------------------------------------------

/// Shape: the dims `start..end` (opset 15 attributes, clamped) as an i64 constant.
fn shape(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let r = dims.len() as i64;
    let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clamp(c.attr_int_or("start", 0)?);
    let end = clamp(c.attr_int_or("end", r)?).max(start);
    let v: Vec<i64> = dims[start..end].iter().map(|&d| d as i64).collect();
    Ok(vec![c.const_i64s(&v)?])
}

/// Size: the element count as an i64 scalar constant.
fn size(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let n = product(c, &c.dims(x)?)?;
    Ok(vec![c.constant(Tensor::scalar(n as i64))])
}

/// ConstantOfShape: `value` (one element, default f32 0) broadcast to the constant shape.
fn constant_of_shape(c: &mut NodeCtx) -> Outs {
    let spec = c
        .const_ints(0)?
        .ok_or_else(|| c.invalid("the shape (input 0) is required"))?;
    let dims: Vec<usize> = spec
        .iter()
        .map(|&v| to_dim(c, v, "a shape entry"))
        .collect::<Result<_, _>>()?;
    let value = match c.attr_tensor("value")? {
        Some(t) if t.len() == 1 => t.reshaped(vec![]).map_err(|e| c.invalid(e.to_string()))?,
        Some(t) => {
            return Err(c.invalid(format!("value must hold one element, found {}", t.len())));
        }
        None => Tensor::scalar(0f32),
    };
    let v = c.constant(value);
    Ok(vec![c.broadcast(v, &dims)?])
}

/// Constant: exactly one of the `value*` attributes.
fn constant(c: &mut NodeCtx) -> Outs {
    let bad = |c: &NodeCtx, e: terafab_ir::TensorError| c.invalid(e.to_string());
    let t = if let Some(t) = c.attr_tensor("value")? {
        t
    } else if let Some(f) = c.attr_float("value_float")? {
        Tensor::scalar(f)
    } else if let Some(v) = c.attr_floats("value_floats")? {
        Tensor::from_vec(vec![v.len()], v).map_err(|e| bad(c, e))?
    } else if let Some(i) = c.attr_int("value_int")? {
        Tensor::scalar(i)
    } else if let Some(v) = c.attr_ints("value_ints")? {
        Tensor::from_vec(vec![v.len()], v).map_err(|e| bad(c, e))?
    } else if c.has_attr("value_string") || c.has_attr("value_strings") {
        return Err(c.unsupported("string tensors are not supported"));
    } else if c.has_attr("sparse_value") {
        return Err(c.unsupported("sparse tensors are not supported"));
    } else {
        return Err(c.invalid("no value attribute"));
    };
    Ok(vec![c.constant(t)])
}

/// Identity: the input itself.
fn identity(c: &mut NodeCtx) -> Outs {
    Ok(vec![c.input(0)?])
}

/// Range with constant scalar inputs: folded to a constant. With run-time inputs the length is
/// data-dependent, which static shapes cannot express.
fn range(c: &mut NodeCtx) -> Outs {
    let mut vals = [0f64; 3];
    let mut dt = DType::F32;
    for (i, slot) in vals.iter_mut().enumerate() {
        let t = c.const_input(i)?.ok_or_else(|| {
            c.unsupported("Range with run-time inputs has a data-dependent length")
        })?;
        if t.len() != 1 {
            return Err(c.invalid(format!("input {i} must be a scalar")));
        }
        dt = t.dtype();
        *slot = t.to_f64_vec()[0];
    }
    let [start, limit, delta] = vals;
    if delta == 0.0 || !delta.is_finite() || !start.is_finite() || !limit.is_finite() {
        return Err(c.invalid(format!("bad range {start}..{limit} step {delta}")));
    }
    let n = ((limit - start) / delta).ceil().max(0.0);
    check_table(c, n.min(usize::MAX as f64) as usize)?;
    let t = Tensor::from_fn(dt, &[n as usize], |i| start + i as f64 * delta)
        .map_err(|e| c.invalid(e.to_string()))?;
    Ok(vec![c.constant(t)])
}

/// EyeLike: ones on diagonal `k` of a 2-D tensor of the input's shape, in `dtype`
/// (default: the input's type).
fn eye_like(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    if dims.len() != 2 {
        return Err(c.invalid(format!("the input must be 2-D, found {dims:?}")));
    }
    let k = c.attr_int_or("k", 0)?;
    let dt = match c.attr_int("dtype")? {
        Some(code) => dtype_of(code as i32).map_err(|e| c.unsupported(e.to_string()))?,
        None => c.dtype(x),
    };
    let diff = diagonal_offsets(c, &dims)?;
    let k = c.constant(Tensor::scalar(k));
    let mask = c.compare(CompareOp::Eq, diff, k)?;
    Ok(vec![c.convert(mask, dt)?])
}

/// The i64 matrix `col - row` of shape `dims` (2-D), folded to a constant.
fn diagonal_offsets(c: &mut NodeCtx, dims: &[usize]) -> Result<ValueId, ImportError> {
    let row = iota(c, dims, 0)?;
    let col = iota(c, dims, 1)?;
    c.binary(BinaryOp::Sub, col, row)
}

/// Trilu: keep the upper (`col - row >= k`) or lower (`col - row <= k`) triangle of the last
/// two dims, zero the rest; `k` (input 1) may be a run-time scalar.
fn trilu(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let upper = c.attr_int_or("upper", 1)? != 0;
    if dims.len() < 2 {
        return Err(c.invalid("the input must have rank >= 2"));
    }
    let diff = diagonal_offsets(c, &dims[dims.len() - 2..])?;
    let k = match c.opt_input(1)? {
        Some(_) => {
            let k = scalar_input(c, 1)?;
            c.convert(k, DType::I64)?
        }
        None => c.constant(Tensor::scalar(0i64)),
    };
    let cmp = if upper { CompareOp::Ge } else { CompareOp::Le };
    let keep = c.compare(cmp, diff, k)?;
    let zero = c.scalar(0.0, c.dtype(x))?;
    Ok(vec![c.select(keep, x, zero)?])
}

/// The attributes of DepthToSpace/SpaceToDepth (block size; whether `mode` is CRD rather than
/// the default DCR) and the 4-D input's dims.
fn block_args(c: &NodeCtx, x: ValueId) -> Result<(usize, bool, [usize; 4]), ImportError> {
    let dims = c.dims(x)?;
    let bs = c
        .attr_int("blocksize")?
        .ok_or_else(|| c.invalid("attribute `blocksize` is required"))?;
    let bs = to_dim(c, bs, "blocksize")?;
    let crd = match c.attr_string_or("mode", "DCR")?.as_str() {
        "DCR" => false,
        "CRD" => true,
        m => return Err(c.invalid(format!("unknown mode `{m}`"))),
    };
    let d: [usize; 4] = dims
        .try_into()
        .map_err(|d| c.invalid(format!("the input must be 4-D, found {d:?}")))?;
    if bs == 0 {
        return Err(c.invalid("blocksize must be positive"));
    }
    Ok((bs, crd, d))
}

/// DepthToSpace in DCR (default) or CRD mode: reshape, transpose, reshape.
fn depth_to_space(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let (bs, crd, [n, ch, h, w]) = block_args(c, x)?;
    if ch % (bs * bs) != 0 {
        return Err(c.invalid(format!("{ch} channels are not divisible by {bs}^2")));
    }
    let co = ch / (bs * bs);
    let (split, perm) = if crd {
        ([n, co, bs, bs, h, w], [0, 1, 4, 2, 5, 3])
    } else {
        ([n, bs, bs, co, h, w], [0, 3, 4, 1, 5, 2])
    };
    let y = c.reshape(x, &split)?;
    let y = c.transpose(y, &perm)?;
    Ok(vec![c.reshape(y, &[n, co, h * bs, w * bs])?])
}

/// SpaceToDepth in DCR (default) or CRD mode (opset 28): reshape, transpose, reshape.
fn space_to_depth(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let (bs, crd, [n, ch, h, w]) = block_args(c, x)?;
    if h % bs != 0 || w % bs != 0 {
        return Err(c.invalid(format!("{h}x{w} is not divisible by blocksize {bs}")));
    }
    let perm = if crd {
        [0, 1, 3, 5, 2, 4]
    } else {
        [0, 3, 5, 1, 2, 4]
    };
    let y = c.reshape(x, &[n, ch, h / bs, bs, w / bs, bs])?;
    let y = c.transpose(y, &perm)?;
    Ok(vec![c.reshape(y, &[n, ch * bs * bs, h / bs, w / bs])?])
}

/// CenterCropPad: per axis, crop or zero-pad symmetrically to the target size (the odd
/// element goes to the end).
fn center_crop_pad(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let r = dims.len();
    let target = c
        .const_ints(1)?
        .ok_or_else(|| c.invalid("the shape (input 1) is required"))?;
    let axes = match c.attr_ints("axes")? {
        Some(a) => norm_axes(c, &a, r)?,
        None => (0..r).collect(),
    };
    if target.len() != axes.len() {
        return Err(c.invalid(format!(
            "{} target sizes for {} axes",
            target.len(),
            axes.len()
        )));
    }
    let (mut low, mut high) = (vec![0i64; r], vec![0i64; r]);
    for (&a, &t) in axes.iter().zip(&target) {
        let t = to_dim(c, t, "a target size")? as i64;
        let d = dims[a] as i64;
        // Padding is positive, cropping negative; the smaller half goes first.
        let diff = t - d;
        low[a] = if diff >= 0 { diff / 2 } else { -((-diff) / 2) };
        high[a] = diff - low[a];
    }
    let zero = c.scalar(0.0, c.dtype(x))?;
    let interior = vec![0; r];
    Ok(vec![c.op(
        Op::Pad {
            low,
            high,
            interior,
        },
        &[x, zero],
    )?])
}

/// ReverseSequence: along `time_axis`, reverse the first `sequence_lens[b]` entries of every
/// batch entry `b` (along `batch_axis`). The source time index is
/// `t < len ? len - 1 - t : t`, gathered elementwise.
fn reverse_sequence(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let r = dims.len();
    let batch = c.axis(c.attr_int_or("batch_axis", 1)?, r)?;
    let time = c.axis(c.attr_int_or("time_axis", 0)?, r)?;
    if batch == time || r < 2 {
        return Err(c.invalid("batch_axis and time_axis must be two different axes"));
    }
    let lens = c.input(1)?;
    if c.dims(lens)? != [dims[batch]] {
        return Err(c.invalid("sequence_lens must have one entry per batch entry"));
    }
    let lens = c.convert(lens, DType::I64)?;
    // `lens` along the batch axis, 1 elsewhere, so it broadcasts against an iota of `dims`.
    let mut ldims = vec![1; r];
    ldims[batch] = dims[batch];
    let lens = c.reshape(lens, &ldims)?;
    let t = iota(c, &dims, time)?;
    let inside = c.compare(CompareOp::Lt, t, lens)?;
    let one = c.constant(Tensor::scalar(1i64));
    let last = c.binary(BinaryOp::Sub, lens, one)?;
    let flipped = c.binary(BinaryOp::Sub, last, t)?;
    let src = c.select(inside, flipped, t)?;
    Ok(vec![super::index::gather_elements_static(c, x, src, time)?])
}
