//! Data-movement kernels: broadcast, reshape, transpose, slice, reverse, concat, pad, gather, scatter.
//!
//! Broadcast, transpose, slice and reverse are all *strided views*: the result's element at
//! index `i` is the operand's element at offset `base + Σ i[d] * strides[d]` (negative strides
//! reverse), copied out by [`for_each_offset`], which the elementwise kernels share. Concat,
//! gather and scatter copy contiguous row blocks; pad writes the operand through a strided view
//! of the (pre-filled) result.

use super::elementwise::{Scalar, Value, same_dtype};
use super::{InterpError, invalid};
use crate::dtype::DType;
use crate::op::{BinaryOp, ScatterMode};
use crate::shape::{broadcast_static, broadcast_strides, row_major_strides};
use crate::tensor::{Tensor, try_filled_vec};
use crate::{with_data, with_dtype};

/// Visits every index of `dims` in row-major order, calling `f` with, for each of `N` operands,
/// the linear offset `base[k] + Σ_d index[d] * strides[k][d]`.
///
/// Nothing is visited when some dim is 0; a rank-0 shape is visited once (at `base`). The
/// innermost dim is a tight loop and the outer dims advance like an odometer, so the cost is a
/// few adds per element and one small allocation per call. A dim of extent 1 never uses its
/// stride, so it may hold any value. The caller guarantees that every visited offset is in
/// range (and so non-negative) for its operand.
///
/// Dims are first [coalesced](coalesce) (extent-1 dims dropped, adjacent dims that every operand
/// walks contiguously merged), so a broadcast over trailing dims runs as one long inner loop.
pub(crate) fn for_each_offset<const N: usize>(
    dims: &[usize],
    strides: [&[isize]; N],
    base: [isize; N],
    f: impl FnMut([usize; N]),
) {
    if dims.contains(&0) {
        return;
    }
    let (dims, strides) = coalesce(dims, strides);
    walk(
        &dims,
        std::array::from_fn(|k| strides[k].as_slice()),
        base,
        f,
    );
}

/// The same walk as `dims` with `strides` (every dim nonzero) over fewer dims: extent-1 dims
/// are dropped (they never move an offset), and dim `d` is merged into dim `d + 1` when, for
/// every operand, a step of `d` equals a full sweep of `d + 1` (`strides[d] == strides[d + 1]
/// * dims[d + 1]`), which visits the same offsets in the same order.
fn coalesce<const N: usize>(
    dims: &[usize],
    strides: [&[isize]; N],
) -> (Vec<usize>, [Vec<isize>; N]) {
    let mut out_dims: Vec<usize> = Vec::with_capacity(dims.len());
    let mut out_strides: [Vec<isize>; N] = std::array::from_fn(|_| Vec::with_capacity(dims.len()));
    for (d, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        if let Some(last) = out_dims.last_mut() {
            let merges = (0..N).all(|k| {
                out_strides[k]
                    .last()
                    .is_some_and(|&outer| strides[k][d].checked_mul(n as isize) == Some(outer))
            });
            if merges {
                *last *= n;
                for k in 0..N {
                    if let Some(s) = out_strides[k].last_mut() {
                        *s = strides[k][d];
                    }
                }
                continue;
            }
        }
        out_dims.push(n);
        for k in 0..N {
            out_strides[k].push(strides[k][d]);
        }
    }
    (out_dims, out_strides)
}

/// [`for_each_offset`] without coalescing (every dim nonzero).
fn walk<const N: usize>(
    dims: &[usize],
    strides: [&[isize]; N],
    base: [isize; N],
    mut f: impl FnMut([usize; N]),
) {
    let Some((&inner, outer)) = dims.split_last() else {
        f(base.map(|b| b as usize));
        return;
    };
    let last = outer.len();
    let inner_stride: [isize; N] =
        std::array::from_fn(|k| if inner > 1 { strides[k][last] } else { 0 });
    let mut index = vec![0usize; outer.len()];
    let mut row = base;
    loop {
        let mut off = row;
        for _ in 0..inner {
            f(off.map(|o| o as usize));
            for k in 0..N {
                off[k] += inner_stride[k];
            }
        }
        // Advance the outer index by one, carrying into the dims on the left.
        let mut d = outer.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            if index[d] + 1 < outer[d] {
                index[d] += 1;
                for k in 0..N {
                    row[k] += strides[k][d];
                }
                break;
            }
            // Wrap this dim back to 0 (a no-op for extent 1, whatever its stride).
            let back = index[d] as isize;
            index[d] = 0;
            for k in 0..N {
                row[k] -= strides[k][d] * back;
            }
        }
    }
}

/// Row-major strides of `dims` as signed element offsets (for [`for_each_offset`]).
pub(crate) fn signed_strides(dims: &[usize]) -> Vec<isize> {
    to_isize(&row_major_strides(dims))
}

fn to_isize(strides: &[usize]) -> Vec<isize> {
    // Strides of an existing (or allocated) tensor are below isize::MAX elements.
    strides.iter().map(|&s| s as isize).collect()
}

/// The strided view of `x` with shape `dims`: element `i` is `x[base + Σ i[d] * strides[d]]`.
fn view(x: &Tensor, dims: &[usize], strides: &[isize], base: isize) -> Result<Tensor, InterpError> {
    with_data!(x.data(), v, T => {
        let mut out = try_filled_vec::<T>(dims, T::default())?;
        let out_strides = signed_strides(dims);
        for_each_offset(dims, [&out_strides, strides], [0, base], |[o, i]| out[o] = v[i]);
        Ok(Tensor::from_vec(dims.to_vec(), out)?)
    })
}

/// Checks that `axes` are distinct and below `rank`.
fn check_axes(op: &str, what: &str, axes: &[usize], rank: usize) -> Result<(), InterpError> {
    let mut seen = vec![false; rank];
    for &a in axes {
        if a >= rank {
            return Err(invalid(format!(
                "`{op}`: {what} {a} is out of range for rank {rank}"
            )));
        }
        if std::mem::replace(&mut seen[a], true) {
            return Err(invalid(format!("`{op}`: {what} {a} is repeated")));
        }
    }
    Ok(())
}

/// Checks that every per-dim attribute list has one entry per dim of a rank-`rank` operand.
fn check_lengths(op: &str, rank: usize, lists: &[(&str, usize)]) -> Result<(), InterpError> {
    match lists.iter().find(|(_, len)| *len != rank) {
        Some((name, len)) => Err(invalid(format!(
            "`{op}`: `{name}` has {len} entries for an operand of rank {rank}"
        ))),
        None => Ok(()),
    }
}

/// `broadcast`: numpy broadcast of `x` to `shape` (which must be the broadcast of both).
pub fn broadcast(x: &Tensor, shape: &[usize]) -> Result<Tensor, InterpError> {
    if !broadcast_static(x.shape(), shape).is_ok_and(|b| b == shape) {
        return Err(invalid(format!(
            "`broadcast`: cannot broadcast {:?} to {shape:?}",
            x.shape()
        )));
    }
    view(x, shape, &to_isize(&broadcast_strides(x.shape(), shape)), 0)
}

/// `reshape`: the same elements (shared, not copied) under a shape with the same count.
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor, InterpError> {
    let count = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if count != Some(x.len()) {
        return Err(invalid(format!(
            "`reshape`: cannot reshape {:?} ({} elements) to {shape:?}",
            x.shape(),
            x.len()
        )));
    }
    Ok(x.reshaped(shape.to_vec())?)
}

/// `transpose`: result dim `i` is operand dim `perm[i]`.
pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor, InterpError> {
    check_lengths("transpose", x.rank(), &[("perm", perm.len())])?;
    check_axes("transpose", "perm entry", perm, x.rank())?;
    let strides = signed_strides(x.shape());
    let dims: Vec<usize> = perm.iter().map(|&p| x.shape()[p]).collect();
    let perm_strides: Vec<isize> = perm.iter().map(|&p| strides[p]).collect();
    view(x, &dims, &perm_strides, 0)
}

/// `slice`: elements `start[d] <= i < limit[d]` with step `stride[d]` on every dim.
pub fn slice(
    x: &Tensor,
    start: &[usize],
    limit: &[usize],
    stride: &[usize],
) -> Result<Tensor, InterpError> {
    let r = x.rank();
    check_lengths(
        "slice",
        r,
        &[
            ("start", start.len()),
            ("limit", limit.len()),
            ("stride", stride.len()),
        ],
    )?;
    let mut dims = Vec::with_capacity(r);
    for d in 0..r {
        let n = x.shape()[d];
        if stride[d] == 0 {
            return Err(invalid(format!("`slice`: stride of dim {d} is 0")));
        }
        if !(start[d] <= limit[d] && limit[d] <= n) {
            return Err(invalid(format!(
                "`slice`: dim {d} of extent {n} needs start <= limit <= {n}, got start {} limit {}",
                start[d], limit[d]
            )));
        }
        dims.push((limit[d] - start[d]).div_ceil(stride[d]));
    }
    if x.is_empty() {
        // Some limit is 0, so the result is empty too (and `x`'s strides may not be representable).
        return Ok(Tensor::zeros(x.dtype(), &dims)?);
    }
    let x_strides = signed_strides(x.shape());
    let mut base = 0isize;
    for d in 0..r {
        base += start[d] as isize * x_strides[d];
    }
    // A stride too large to represent only occurs where the result dim has extent <= 1, where it
    // is never used.
    let strides: Vec<isize> = (0..r)
        .map(|d| x_strides[d].saturating_mul(isize::try_from(stride[d]).unwrap_or(isize::MAX)))
        .collect();
    view(x, &dims, &strides, base)
}

/// `reverse`: reverses the order of elements along each of `axes`.
pub fn reverse(x: &Tensor, axes: &[usize]) -> Result<Tensor, InterpError> {
    check_axes("reverse", "axis", axes, x.rank())?;
    if x.is_empty() {
        return Ok(x.clone());
    }
    let mut strides = signed_strides(x.shape());
    let mut base = 0isize;
    for &a in axes {
        base += x.shape()[a].saturating_sub(1) as isize * strides[a];
        strides[a] = -strides[a];
    }
    view(x, x.shape(), &strides, base)
}

/// `concat`: the operands joined along `axis`; all other dims must agree.
pub fn concat(xs: &[Tensor], axis: usize) -> Result<Tensor, InterpError> {
    let Some(first) = xs.first() else {
        return Err(invalid("`concat` needs at least one operand"));
    };
    let r = first.rank();
    if axis >= r {
        return Err(invalid(format!(
            "`concat`: axis {axis} is out of range for rank {r}"
        )));
    }
    let mut dims = first.shape().to_vec();
    dims[axis] = 0;
    for x in xs {
        same_dtype("concat", first, x)?;
        let compatible =
            x.rank() == r && (0..r).all(|d| d == axis || x.shape()[d] == first.shape()[d]);
        if !compatible {
            return Err(invalid(format!(
                "`concat`: operand shapes {:?} and {:?} differ off axis {axis}",
                first.shape(),
                x.shape()
            )));
        }
        dims[axis] = dims[axis]
            .checked_add(x.shape()[axis])
            .ok_or_else(|| invalid("`concat`: result dim overflows"))?;
    }
    with_dtype!(first.dtype(), T => {
        let mut out = try_filled_vec::<T>(&dims, T::default())?;
        // Each operand contributes one contiguous block (its dims from `axis` on) per index of
        // the dims before `axis`. Products of dims are only formed for a non-empty result, where
        // they are bounded by its element count (an empty tensor's other dims may multiply past
        // usize::MAX).
        if !out.is_empty() {
            let outer: usize = dims[..axis].iter().product();
            let parts = xs
                .iter()
                .map(|x| Ok((x.typed::<T>()?, x.shape()[axis..].iter().product::<usize>())))
                .collect::<Result<Vec<_>, InterpError>>()?;
            let mut pos = 0;
            for o in 0..outer {
                for &(v, block) in &parts {
                    out[pos..pos + block].copy_from_slice(&v[o * block..(o + 1) * block]);
                    pos += block;
                }
            }
        }
        Ok(Tensor::from_vec(dims, out)?)
    })
}

/// `pad`: `value` added `low[d]`/`high[d]` times before/after dim `d` (negative crops) and
/// `interior[d]` times between neighbouring elements.
pub fn pad(
    x: &Tensor,
    value: &Tensor,
    low: &[i64],
    high: &[i64],
    interior: &[usize],
) -> Result<Tensor, InterpError> {
    if value.rank() != 0 {
        return Err(invalid(format!(
            "`pad`: padding value must be a scalar, got shape {:?}",
            value.shape()
        )));
    }
    same_dtype("pad", x, value)?;
    let r = x.rank();
    check_lengths(
        "pad",
        r,
        &[
            ("low", low.len()),
            ("high", high.len()),
            ("interior", interior.len()),
        ],
    )?;
    // Per dim: the result extent, and the run of operand elements that land inside the result
    // (operand element `i` goes to `low + i * (interior + 1)`; cropping drops the others).
    let (mut dims, mut first, mut count) = (Vec::new(), Vec::new(), Vec::new());
    for d in 0..r {
        let n = x.shape()[d] as i128;
        let step = interior[d] as i128 + 1;
        let (lo, hi) = (low[d] as i128, high[d] as i128);
        let size = (n - 1)
            .max(0)
            .checked_mul(step - 1)
            .and_then(|gaps| gaps.checked_add(n + lo + hi))
            .filter(|&s| s >= 0 && s <= usize::MAX as i128)
            .ok_or_else(|| {
                invalid(format!(
                    "`pad`: dim {d} of extent {n} with low {lo}, high {hi}, interior {} \
                     has no valid size",
                    step - 1
                ))
            })?;
        // First operand index with `lo + i*step >= 0`, and one past the last with `< size`.
        let start = if lo >= 0 { 0 } else { (-lo + step - 1) / step };
        let end = if size > lo {
            n.min((size - lo + step - 1) / step)
        } else {
            0
        };
        dims.push(size as usize);
        first.push(start);
        count.push((end - start).max(0) as usize);
    }
    with_dtype!(x.dtype(), T => {
        let fill = value.typed::<T>()?[0];
        let mut out = try_filled_vec::<T>(&dims, fill)?;
        if count.contains(&0) {
            return Ok(Tensor::from_vec(dims, out)?);
        }
        // Every index below is now inside both tensors, so the isize arithmetic cannot overflow
        // except for the destination stride of a dim copying a single element (never used).
        let x_strides = signed_strides(x.shape());
        let out_strides = signed_strides(&dims);
        let (mut src_base, mut dst_base) = (0isize, 0isize);
        let mut dst_strides = Vec::with_capacity(r);
        for d in 0..r {
            let step = interior[d] as i128 + 1;
            src_base += first[d] as isize * x_strides[d];
            dst_base += (low[d] as i128 + first[d] * step) as isize * out_strides[d];
            let step = isize::try_from(step).unwrap_or(isize::MAX);
            dst_strides.push(out_strides[d].saturating_mul(step));
        }
        let v = x.typed::<T>()?;
        for_each_offset(&count, [&dst_strides, &x_strides], [dst_base, src_base], |[o, i]| {
            out[o] = v[i]
        });
        Ok(Tensor::from_vec(dims, out)?)
    })
}

/// `indices` (any integer type) as positions along dim `axis` of extent `dim`: a negative index
/// counts from the end, anything else outside `0..dim` is a run-time error.
fn normalize_indices(
    op: &str,
    indices: &Tensor,
    axis: usize,
    dim: usize,
) -> Result<Vec<u64>, InterpError> {
    let not_int = || {
        invalid(format!(
            "`{op}`: indices must be integers, got {}",
            indices.dtype()
        ))
    };
    if !indices.dtype().is_int() {
        return Err(not_int());
    }
    with_data!(indices.data(), v, I => {
        let mut out = try_filled_vec::<u64>(indices.shape(), 0)?;
        for (o, &raw) in out.iter_mut().zip(v.iter()) {
            let Value::Int(i) = raw.value() else {
                return Err(not_int());
            };
            let k = if i < 0 { i + dim as i128 } else { i };
            if !(0..dim as i128).contains(&k) {
                return Err(InterpError::Runtime(format!(
                    "`{op}`: index {i} is out of range for dim {axis} of extent {dim}"
                )));
            }
            *o = k as u64;
        }
        Ok(out)
    })
}

/// `gather`: ONNX Gather along `axis`; the result shape is
/// `x.shape[..axis] ++ indices.shape ++ x.shape[axis+1..]`.
pub fn gather(x: &Tensor, indices: &Tensor, axis: usize) -> Result<Tensor, InterpError> {
    let r = x.rank();
    if axis >= r {
        return Err(invalid(format!(
            "`gather`: axis {axis} is out of range for rank {r}"
        )));
    }
    let (before, rest) = x.shape().split_at(axis);
    let (dim, after) = (rest[0], &rest[1..]);
    let idx = normalize_indices("gather", indices, axis, dim)?;
    let dims: Vec<usize> = [before, indices.shape(), after].concat();
    with_data!(x.data(), v, T => {
        let mut out = try_filled_vec::<T>(&dims, T::default())?;
        // Result block (o, j) is operand block (o, idx[j]), each `inner` elements long. (Products
        // of dims only for a non-empty result, as in `concat`.)
        if !out.is_empty() {
            let (outer, inner) = (before.iter().product(), after.iter().product::<usize>());
            let mut pos = 0;
            for o in 0..outer {
                for &k in &idx {
                    let src = (o * dim + k as usize) * inner;
                    out[pos..pos + inner].copy_from_slice(&v[src..src + inner]);
                    pos += inner;
                }
            }
        }
        Ok(Tensor::from_vec(dims, out)?)
    })
}

/// `scatter`: row `indices[m]` of the result is `mode(x[indices[m]], updates[m])`, in order of `m`.
pub fn scatter(
    x: &Tensor,
    indices: &Tensor,
    updates: &Tensor,
    mode: ScatterMode,
) -> Result<Tensor, InterpError> {
    let Some((&rows, row_dims)) = x.shape().split_first() else {
        return Err(invalid("`scatter`: the destination must have rank >= 1"));
    };
    same_dtype("scatter", x, updates)?;
    if indices.rank() != 1 {
        return Err(invalid(format!(
            "`scatter`: indices must be a vector, got shape {:?}",
            indices.shape()
        )));
    }
    let expected: Vec<usize> = [indices.shape(), row_dims].concat();
    if updates.shape() != expected {
        return Err(invalid(format!(
            "`scatter`: updates must have shape {expected:?}, got {:?}",
            updates.shape()
        )));
    }
    let combine = match mode {
        ScatterMode::Replace => None,
        ScatterMode::Add => Some(BinaryOp::Add),
        ScatterMode::Mul => Some(BinaryOp::Mul),
        ScatterMode::Max => Some(BinaryOp::Max),
        ScatterMode::Min => Some(BinaryOp::Min),
    };
    if combine.is_some() && x.dtype() == DType::Bool {
        return Err(invalid(format!(
            "`scatter`: mode {} is not defined on bool",
            mode.name()
        )));
    }
    let idx = normalize_indices("scatter", indices, 0, rows)?;
    with_dtype!(x.dtype(), T => match combine {
        None => scatter_rows::<T>(x, &idx, updates, |_, u| u),
        Some(op) => {
            let f = T::binary_fn(op).ok_or_else(|| {
                invalid(format!("`scatter`: mode {} is not defined on {}", mode.name(), x.dtype()))
            })?;
            scatter_rows::<T>(x, &idx, updates, f)
        }
    })
}

/// A copy of `x` with row `idx[m]` replaced by `f(row, updates[m])` elementwise, for each `m` in
/// order.
fn scatter_rows<T: Scalar>(
    x: &Tensor,
    idx: &[u64],
    updates: &Tensor,
    f: impl Fn(T, T) -> T,
) -> Result<Tensor, InterpError> {
    if x.is_empty() {
        // No rows (so no valid indices) or empty rows; the dims may not multiply (see `concat`).
        return Ok(x.clone());
    }
    let mut out = try_filled_vec::<T>(x.shape(), T::default())?;
    out.copy_from_slice(x.typed::<T>()?);
    let upd = updates.typed::<T>()?;
    let row: usize = x.shape()[1..].iter().product();
    for (m, &k) in idx.iter().enumerate() {
        let dst = &mut out[k as usize * row..][..row];
        for (d, &u) in dst.iter_mut().zip(&upd[m * row..][..row]) {
            *d = f(*d, u);
        }
    }
    Ok(Tensor::from_vec(x.shape().to_vec(), out)?)
}

#[cfg(test)]
mod tests {
    use half::bf16;

    use super::*;
    use crate::tensor::{Element, TensorError};

    fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    /// `0, 1, 2, ...` as i32 in the given shape.
    fn seq(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        t(shape, (0..n as i32).collect())
    }

    /// The result's shape and i32 elements.
    fn get(r: Result<Tensor, InterpError>) -> (Vec<usize>, Vec<i32>) {
        let r = r.unwrap();
        (r.shape().to_vec(), r.as_slice::<i32>().unwrap().to_vec())
    }

    fn is_invalid(r: Result<Tensor, InterpError>) -> bool {
        matches!(r, Err(InterpError::Invalid(_)))
    }

    fn message(r: Result<Tensor, InterpError>) -> String {
        r.unwrap_err().to_string()
    }

    // ---- for_each_offset ----

    #[test]
    fn for_each_offset_walks_row_major() {
        let mut seen = Vec::new();
        for_each_offset(&[2, 3], [&[3, 1], &[1, 2]], [0, 10], |[a, b]| {
            seen.push((a, b))
        });
        assert_eq!(
            seen,
            vec![(0, 10), (1, 12), (2, 14), (3, 11), (4, 13), (5, 15)]
        );
        let mut n = 0;
        for_each_offset::<1>(&[], [&[]], [7], |[o]| {
            assert_eq!(o, 7);
            n += 1
        });
        for_each_offset(&[3, 0, 2], [&[0, 0, 0]], [0], |_| n += 100);
        assert_eq!(n, 1);
        // Extent-1 dims ignore their strides, however large.
        let mut one = Vec::new();
        for_each_offset(&[1, 2, 1], [&[isize::MAX, 5, isize::MIN]], [1], |[o]| {
            one.push(o)
        });
        assert_eq!(one, vec![1, 6]);
    }

    #[test]
    fn coalescing_keeps_the_walk() {
        // A per-row scale over [4, 3, 1, 5]: the trailing dims of the matrix merge, the scale's
        // stay apart from its rows.
        let dims = [4, 3, 1, 5];
        let so = signed_strides(&dims);
        let sb: Vec<isize> = vec![1, 0, 99, 0];
        let (d, [o, b]) = coalesce(&dims, [&so, &sb]);
        assert_eq!(d, vec![4, 15]);
        assert_eq!((o, b), (vec![15, 1], vec![1, 0]));
        // Every walk visits what the plain odometer visits, in the same order.
        let cases: Vec<(Vec<usize>, Vec<isize>, isize)> = vec![
            (vec![2, 3, 4], vec![12, 4, 1], 0),
            (vec![2, 3, 4], vec![0, 4, 1], 0),
            (vec![2, 3, 4], vec![1, 0, 0], 0),
            (vec![2, 1, 3, 4], vec![12, 7, -4, -1], 23),
            (vec![3, 2], vec![1, 3], 0),
            (vec![1, 1], vec![5, 6], 2),
            (vec![], vec![], 4),
        ];
        for (dims, s, base) in cases {
            let so = signed_strides(&dims);
            let mut fast = Vec::new();
            for_each_offset(&dims, [&so, &s], [0, base], |[a, b]| fast.push((a, b)));
            let mut plain = Vec::new();
            walk(&dims, [&so, &s], [0, base], |[a, b]| plain.push((a, b)));
            assert_eq!(fast, plain, "{dims:?} {s:?}");
        }
    }

    #[test]
    fn empty_tensors_with_huge_dims_do_not_overflow() {
        // A valid tensor (0 elements) whose other dims multiply past usize::MAX.
        let big = 1usize << 62;
        let x = t(&[0, big, big], Vec::<i32>::new());
        let empty = |r: Result<Tensor, InterpError>| r.unwrap().is_empty();
        assert!(empty(slice(&x, &[0, 1, 2], &[0, big, big], &[1, 3, 5])));
        assert!(empty(reverse(&x, &[0, 1, 2])));
        assert!(empty(transpose(&x, &[0, 2, 1])));
        assert!(empty(transpose(&x, &[2, 1, 0])));
        assert!(empty(concat(&[x.clone(), x.clone()], 1)));
        assert!(empty(gather(&x, &t(&[0], Vec::<i64>::new()), 0)));
        assert!(empty(gather(&x, &t(&[2], vec![0i64, -1]), 1)));
        let no_rows = t(&[0, big, big], Vec::<i32>::new());
        assert!(empty(scatter(
            &x,
            &t(&[0], Vec::<i64>::new()),
            &no_rows,
            ScatterMode::Add
        )));
        assert!(empty(pad(
            &x,
            &Tensor::scalar(0i32),
            &[0, 0, 0],
            &[0, 0, 0],
            &[0, 0, 0]
        )));
        assert!(empty(broadcast(&Tensor::scalar(1i32), &[0, big, big])));
    }

    // ---- broadcast ----

    #[test]
    fn broadcast_repeats_size_one_dims() {
        assert_eq!(
            get(broadcast(&seq(&[3]), &[2, 3])),
            (vec![2, 3], vec![0, 1, 2, 0, 1, 2])
        );
        assert_eq!(
            get(broadcast(&seq(&[2, 1, 3]), &[2, 2, 3])),
            (vec![2, 2, 3], vec![0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5])
        );
        assert_eq!(
            get(broadcast(&seq(&[2, 1]), &[2, 3])),
            (vec![2, 3], vec![0, 0, 0, 1, 1, 1])
        );
        let s = broadcast(&Tensor::scalar(true), &[2, 2]).unwrap();
        assert_eq!(s.as_slice::<bool>().unwrap(), &[true; 4]);
    }

    #[test]
    fn broadcast_identity_and_empty() {
        assert_eq!(
            get(broadcast(&seq(&[2, 2]), &[2, 2])),
            (vec![2, 2], vec![0, 1, 2, 3])
        );
        assert_eq!(
            get(broadcast(&seq(&[0, 1]), &[3, 0, 5])),
            (vec![3, 0, 5], vec![])
        );
        assert_eq!(get(broadcast(&seq(&[1]), &[0])), (vec![0], vec![]));
    }

    #[test]
    fn broadcast_errors() {
        assert!(is_invalid(broadcast(&seq(&[3]), &[4])));
        assert!(is_invalid(broadcast(&seq(&[2, 3]), &[3])));
        // The max rule is not applied: [3] cannot broadcast "to" [1].
        assert!(is_invalid(broadcast(&seq(&[3]), &[1])));
        assert!(matches!(
            broadcast(&seq(&[1]), &[1 << 40, 1 << 40]),
            Err(InterpError::Tensor(TensorError::Alloc { .. }))
        ));
    }

    // ---- reshape ----

    #[test]
    fn reshape_keeps_row_major_order() {
        assert_eq!(
            get(reshape(&seq(&[2, 3]), &[3, 2])),
            (vec![3, 2], vec![0, 1, 2, 3, 4, 5])
        );
        assert_eq!(
            get(reshape(&seq(&[2, 3]), &[6])),
            (vec![6], vec![0, 1, 2, 3, 4, 5])
        );
        assert_eq!(get(reshape(&seq(&[1, 1]), &[])), (vec![], vec![0]));
    }

    #[test]
    fn reshape_shares_data_and_handles_empty() {
        let x = seq(&[4]);
        let y = reshape(&x, &[2, 2]).unwrap();
        assert!(std::ptr::eq(
            x.as_slice::<i32>().unwrap().as_ptr(),
            y.as_slice::<i32>().unwrap().as_ptr()
        ));
        assert_eq!(
            get(reshape(&seq(&[0, 3]), &[3, 0, 7])),
            (vec![3, 0, 7], vec![])
        );
    }

    #[test]
    fn reshape_errors() {
        assert!(is_invalid(reshape(&seq(&[2, 3]), &[4])));
        assert!(is_invalid(reshape(&seq(&[2]), &[usize::MAX, 2])));
        // Element counts are computed left to right, as for tensors: this one overflows.
        assert!(is_invalid(reshape(&seq(&[0]), &[usize::MAX, 2, 0, 3])));
    }

    // ---- transpose ----

    #[test]
    fn transpose_matrix() {
        assert_eq!(
            get(transpose(&seq(&[2, 3]), &[1, 0])),
            (vec![3, 2], vec![0, 3, 1, 4, 2, 5])
        );
        assert_eq!(
            get(transpose(&seq(&[2, 3]), &[0, 1])),
            (vec![2, 3], vec![0, 1, 2, 3, 4, 5])
        );
        assert_eq!(get(transpose(&seq(&[0, 2]), &[1, 0])), (vec![2, 0], vec![]));
    }

    #[test]
    fn transpose_rank3() {
        // y[i, j, k] = x[j, k, i] for perm [2, 0, 1]; x[a, b, c] = 12a + 4b + c.
        let (shape, y) = get(transpose(&seq(&[2, 3, 4]), &[2, 0, 1]));
        assert_eq!(shape, vec![4, 2, 3]);
        for i in 0..4 {
            for j in 0..2 {
                for k in 0..3 {
                    assert_eq!(y[i * 6 + j * 3 + k], (12 * j + 4 * k + i) as i32);
                }
            }
        }
        let s = transpose(&Tensor::scalar(1.5f32), &[]).unwrap();
        assert_eq!(s.as_slice::<f32>().unwrap(), &[1.5]);
    }

    #[test]
    fn transpose_errors() {
        assert!(is_invalid(transpose(&seq(&[2, 3]), &[0])));
        assert!(is_invalid(transpose(&seq(&[2, 3]), &[1, 1])));
        assert!(is_invalid(transpose(&seq(&[2, 3]), &[0, 2])));
    }

    // ---- slice ----

    #[test]
    fn slice_contiguous_and_strided() {
        assert_eq!(
            get(slice(&seq(&[5]), &[1], &[4], &[1])),
            (vec![3], vec![1, 2, 3])
        );
        assert_eq!(
            get(slice(&seq(&[7]), &[1], &[6], &[2])),
            (vec![3], vec![1, 3, 5])
        );
        // Stride 3 over 0..8 from 0: ceil(8/3) = 3 elements.
        assert_eq!(
            get(slice(&seq(&[8]), &[0], &[8], &[3])),
            (vec![3], vec![0, 3, 6])
        );
    }

    #[test]
    fn slice_rank2_and_empty() {
        // Rows 1..3, columns 0..4 step 2 of a 3x4 matrix.
        assert_eq!(
            get(slice(&seq(&[3, 4]), &[1, 0], &[3, 4], &[1, 2])),
            (vec![2, 2], vec![4, 6, 8, 10])
        );
        assert_eq!(
            get(slice(&seq(&[3, 4]), &[2, 1], &[2, 3], &[1, 1])),
            (vec![0, 2], vec![])
        );
        assert_eq!(get(slice(&seq(&[3]), &[3], &[3], &[1])), (vec![0], vec![]));
        // A stride too large to represent takes one element.
        assert_eq!(
            get(slice(
                &seq(&[2, 3]),
                &[1, 1],
                &[2, 3],
                &[usize::MAX, usize::MAX]
            )),
            (vec![1, 1], vec![4])
        );
    }

    #[test]
    fn slice_matches_the_definition_exhaustively() {
        let x = seq(&[3, 5]);
        for (r0, r1) in [(0, 3), (1, 3), (2, 2), (0, 1)] {
            for c0 in 0..=5 {
                for c1 in c0..=5 {
                    for (s0, s1) in [(1, 1), (2, 3), (1, 4), (5, 2)] {
                        let want: Vec<i32> = (r0..r1)
                            .step_by(s0)
                            .flat_map(|i| (c0..c1).step_by(s1).map(move |j| (5 * i + j) as i32))
                            .collect();
                        let (shape, got) = get(slice(&x, &[r0, c0], &[r1, c1], &[s0, s1]));
                        assert_eq!(shape, [(r1 - r0).div_ceil(s0), (c1 - c0).div_ceil(s1)]);
                        assert_eq!(got, want);
                    }
                }
            }
        }
    }

    #[test]
    fn slice_errors() {
        assert!(is_invalid(slice(&seq(&[5]), &[0], &[6], &[1])));
        assert!(is_invalid(slice(&seq(&[5]), &[3], &[2], &[1])));
        assert!(is_invalid(slice(&seq(&[5]), &[0], &[5], &[0])));
        assert!(is_invalid(slice(&seq(&[5]), &[0, 0], &[5, 5], &[1, 1])));
    }

    // ---- reverse ----

    #[test]
    fn reverse_one_axis() {
        assert_eq!(get(reverse(&seq(&[4]), &[0])), (vec![4], vec![3, 2, 1, 0]));
        assert_eq!(
            get(reverse(&seq(&[2, 3]), &[0])),
            (vec![2, 3], vec![3, 4, 5, 0, 1, 2])
        );
        assert_eq!(
            get(reverse(&seq(&[2, 3]), &[1])),
            (vec![2, 3], vec![2, 1, 0, 5, 4, 3])
        );
    }

    #[test]
    fn reverse_several_or_no_axes() {
        assert_eq!(
            get(reverse(&seq(&[2, 3]), &[1, 0])),
            (vec![2, 3], vec![5, 4, 3, 2, 1, 0])
        );
        assert_eq!(
            get(reverse(&seq(&[2, 3]), &[])),
            (vec![2, 3], vec![0, 1, 2, 3, 4, 5])
        );
        assert_eq!(get(reverse(&seq(&[0, 3]), &[0, 1])), (vec![0, 3], vec![]));
    }

    #[test]
    fn reverse_errors() {
        assert!(is_invalid(reverse(&seq(&[2, 3]), &[2])));
        assert!(is_invalid(reverse(&seq(&[2, 3]), &[1, 1])));
        assert!(is_invalid(reverse(&Tensor::scalar(1i32), &[0])));
    }

    // ---- concat ----

    #[test]
    fn concat_along_each_axis() {
        let (a, b) = (seq(&[2, 2]), t(&[1, 2], vec![10, 11]));
        assert_eq!(
            get(concat(&[a.clone(), b], 0)),
            (vec![3, 2], vec![0, 1, 2, 3, 10, 11])
        );
        let c = t(&[2, 1], vec![10, 11]);
        assert_eq!(
            get(concat(&[a, c], 1)),
            (vec![2, 3], vec![0, 1, 10, 2, 3, 11])
        );
        assert_eq!(get(concat(&[seq(&[2])], 0)), (vec![2], vec![0, 1]));
    }

    #[test]
    fn concat_many_and_empty() {
        let parts = [
            t(&[2, 1], vec![0, 1]),
            t(&[2, 0], Vec::<i32>::new()),
            t(&[2, 2], vec![2, 3, 4, 5]),
        ];
        assert_eq!(get(concat(&parts, 1)), (vec![2, 3], vec![0, 2, 3, 1, 4, 5]));
        assert_eq!(
            get(concat(&[seq(&[0, 2]), seq(&[0, 3])], 1)),
            (vec![0, 5], vec![])
        );
        let b = concat(&[t(&[1], vec![true]), t(&[2], vec![false, true])], 0).unwrap();
        assert_eq!(b.as_slice::<bool>().unwrap(), &[true, false, true]);
    }

    #[test]
    fn concat_errors() {
        assert!(is_invalid(concat(&[], 0)));
        let msg = message(concat(&[seq(&[2]), t(&[2], vec![0i64, 1])], 0));
        assert!(msg.contains("i32") && msg.contains("i64"), "{msg}");
        assert!(is_invalid(concat(&[seq(&[2, 2]), seq(&[2, 3])], 0)));
        assert!(is_invalid(concat(&[seq(&[2, 2]), seq(&[2])], 0)));
        assert!(is_invalid(concat(&[seq(&[2])], 1)));
        assert!(is_invalid(concat(&[Tensor::scalar(1i32)], 0)));
    }

    // ---- pad ----

    #[test]
    fn pad_low_high_and_interior() {
        let v = Tensor::scalar(9i32);
        let x = t(&[3], vec![1, 2, 3]);
        assert_eq!(
            get(pad(&x, &v, &[2], &[1], &[0])),
            (vec![6], vec![9, 9, 1, 2, 3, 9])
        );
        assert_eq!(
            get(pad(&x, &v, &[1], &[2], &[1])),
            (vec![8], vec![9, 1, 9, 2, 9, 3, 9, 9])
        );
        // Rank 2: one row before, one column after, one column between.
        let m = t(&[2, 2], vec![1, 2, 3, 4]);
        assert_eq!(
            get(pad(&m, &v, &[1, 0], &[0, 1], &[0, 1])),
            (vec![3, 4], vec![9, 9, 9, 9, 1, 9, 2, 9, 3, 9, 4, 9])
        );
    }

    #[test]
    fn pad_negative_crops() {
        let v = Tensor::scalar(0i32);
        let x = t(&[3], vec![1, 2, 3]);
        assert_eq!(get(pad(&x, &v, &[-1], &[0], &[0])), (vec![2], vec![2, 3]));
        // Dilated [1,0,2,0,3], cropped by one on each side.
        assert_eq!(
            get(pad(&x, &v, &[-1], &[-1], &[1])),
            (vec![3], vec![0, 2, 0])
        );
        // Dilated [1,0,0,2,0,0,3], two cropped from the left, one added on the right.
        assert_eq!(
            get(pad(&x, &v, &[-2], &[1], &[2])),
            (vec![6], vec![0, 2, 0, 0, 3, 0])
        );
        // Crop everything, and crop with padding on the other side.
        assert_eq!(get(pad(&x, &v, &[-3], &[0], &[0])), (vec![0], vec![]));
        assert_eq!(get(pad(&x, &v, &[-5], &[4], &[0])), (vec![2], vec![0, 0]));
        let m = seq(&[3, 3]);
        assert_eq!(
            get(pad(&m, &v, &[-1, 1], &[-1, -2], &[0, 0])),
            (vec![1, 2], vec![0, 3])
        );
    }

    #[test]
    fn pad_empty_scalar_and_float() {
        let v = Tensor::scalar(7i32);
        assert_eq!(
            get(pad(&t(&[0], Vec::<i32>::new()), &v, &[1], &[1], &[3])),
            (vec![2], vec![7, 7])
        );
        assert_eq!(
            get(pad(&Tensor::scalar(1i32), &v, &[], &[], &[])),
            (vec![], vec![1])
        );
        let f = pad(
            &t(&[1], vec![bf16::ONE]),
            &Tensor::scalar(bf16::NAN),
            &[0],
            &[1],
            &[0],
        )
        .unwrap();
        assert!(f.as_slice::<bf16>().unwrap()[1].is_nan());
    }

    #[test]
    fn pad_matches_the_definition_exhaustively() {
        // Result element j is operand element (j - low) / (interior + 1) when that divides
        // exactly and lands in the operand, else the padding value.
        for n in 0..4usize {
            let x = t(&[n], (1..=n as i32).collect());
            for interior in 0..3usize {
                let step = interior as i64 + 1;
                for low in -5..4i64 {
                    for high in -5..4i64 {
                        let size = low + high + n as i64 + (n as i64 - 1).max(0) * interior as i64;
                        let r = pad(&x, &Tensor::scalar(0i32), &[low], &[high], &[interior]);
                        if size < 0 {
                            assert!(is_invalid(r));
                            continue;
                        }
                        let want: Vec<i32> = (0..size)
                            .map(|j| {
                                let p = j - low;
                                let hit = p >= 0 && p % step == 0 && p / step < n as i64;
                                if hit { (p / step + 1) as i32 } else { 0 }
                            })
                            .collect();
                        assert_eq!(
                            get(r),
                            (vec![size as usize], want),
                            "{n} {low} {high} {interior}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn pad_errors() {
        let x = seq(&[3]);
        assert!(is_invalid(pad(&x, &t(&[1], vec![0]), &[0], &[0], &[0])));
        let msg = message(pad(&x, &Tensor::scalar(0.0f32), &[0], &[0], &[0]));
        assert!(msg.contains("i32") && msg.contains("f32"), "{msg}");
        assert!(is_invalid(pad(
            &x,
            &Tensor::scalar(0i32),
            &[0, 0],
            &[0],
            &[0]
        )));
        assert!(is_invalid(pad(
            &x,
            &Tensor::scalar(0i32),
            &[-2],
            &[-2],
            &[0]
        )));
        assert!(is_invalid(pad(
            &x,
            &Tensor::scalar(0i32),
            &[0],
            &[0],
            &[usize::MAX]
        )));
        assert!(matches!(
            pad(&x, &Tensor::scalar(0i32), &[i64::MAX], &[0], &[0]),
            Err(InterpError::Tensor(TensorError::Alloc { .. }))
        ));
    }

    // ---- gather ----

    #[test]
    fn gather_rows_and_columns() {
        let x = seq(&[3, 2]);
        assert_eq!(
            get(gather(&x, &t(&[2], vec![2i64, 0]), 0)),
            (vec![2, 2], vec![4, 5, 0, 1])
        );
        assert_eq!(
            get(gather(&x, &t(&[3], vec![1u8, 1, 0]), 1)),
            (vec![3, 3], vec![1, 1, 0, 3, 3, 2, 5, 5, 4])
        );
        // A scalar index removes the dim.
        assert_eq!(
            get(gather(&x, &Tensor::scalar(1i32), 0)),
            (vec![2], vec![2, 3])
        );
    }

    #[test]
    fn gather_negative_and_nd_indices() {
        let x = seq(&[4]);
        assert_eq!(
            get(gather(&x, &t(&[3], vec![-1i32, -4, 0]), 0)),
            (vec![3], vec![3, 0, 0])
        );
        // Result shape: x[..axis] ++ indices.shape ++ x[axis+1..].
        let y = seq(&[2, 3, 2]);
        let (shape, v) = get(gather(&y, &t(&[2, 2], vec![2i16, 0, -2, 1]), 1));
        assert_eq!(shape, vec![2, 2, 2, 2]);
        assert_eq!(v, vec![4, 5, 0, 1, 2, 3, 2, 3, 10, 11, 6, 7, 8, 9, 8, 9]);
        assert_eq!(
            get(gather(&seq(&[3, 2]), &t(&[0], Vec::<i64>::new()), 0)),
            (vec![0, 2], vec![])
        );
    }

    #[test]
    fn gather_errors() {
        let x = seq(&[3, 2]);
        let r = gather(&x, &t(&[2], vec![0i64, 3]), 0);
        let msg = message(r.clone());
        assert!(matches!(r, Err(InterpError::Runtime(_))));
        assert!(
            msg.contains("index 3") && msg.contains("dim 0") && msg.contains("extent 3"),
            "{msg}"
        );
        assert!(matches!(
            gather(&x, &Tensor::scalar(-3i8), 1),
            Err(InterpError::Runtime(_))
        ));
        // u64 indices beyond i64::MAX are out of range, not negative.
        assert!(matches!(
            gather(&x, &Tensor::scalar(u64::MAX), 0),
            Err(InterpError::Runtime(_))
        ));
        assert!(matches!(
            gather(&seq(&[0]), &Tensor::scalar(0i32), 0),
            Err(InterpError::Runtime(_))
        ));
        assert!(is_invalid(gather(&x, &Tensor::scalar(0.0f32), 0)));
        assert!(is_invalid(gather(&x, &Tensor::scalar(true), 0)));
        assert!(is_invalid(gather(&x, &Tensor::scalar(0i32), 2)));
    }

    // ---- scatter ----

    fn scat(mode: ScatterMode, idx: Vec<i64>, upd: Vec<i32>) -> Result<Tensor, InterpError> {
        let m = idx.len();
        scatter(&seq(&[3, 2]), &t(&[m], idx), &t(&[m, 2], upd), mode)
    }

    #[test]
    fn scatter_replace_last_wins() {
        assert_eq!(
            get(scat(ScatterMode::Replace, vec![2, 0], vec![10, 11, 20, 21])),
            (vec![3, 2], vec![20, 21, 2, 3, 10, 11])
        );
        assert_eq!(
            get(scat(
                ScatterMode::Replace,
                vec![1, -2],
                vec![10, 11, 20, 21]
            )),
            (vec![3, 2], vec![0, 1, 20, 21, 4, 5])
        );
        assert_eq!(
            get(scat(ScatterMode::Replace, vec![], vec![])),
            (vec![3, 2], vec![0, 1, 2, 3, 4, 5])
        );
        let b = scatter(
            &t(&[2], vec![false, false]),
            &t(&[1], vec![1u8]),
            &t(&[1], vec![true]),
            ScatterMode::Replace,
        );
        assert_eq!(b.unwrap().as_slice::<bool>().unwrap(), &[false, true]);
    }

    #[test]
    fn scatter_combining_modes() {
        // Duplicates accumulate in order.
        assert_eq!(
            get(scat(
                ScatterMode::Add,
                vec![0, 0, -1],
                vec![10, 10, 5, 5, 1, 1]
            )),
            (vec![3, 2], vec![15, 16, 2, 3, 5, 6])
        );
        assert_eq!(
            get(scat(ScatterMode::Mul, vec![1, 1], vec![2, 3, 4, 5])),
            (vec![3, 2], vec![0, 1, 16, 45, 4, 5])
        );
        assert_eq!(
            get(scat(ScatterMode::Max, vec![2, 0], vec![0, 9, 1, -1])),
            (vec![3, 2], vec![1, 1, 2, 3, 4, 9])
        );
        assert_eq!(
            get(scat(ScatterMode::Min, vec![2, 0], vec![0, 9, 1, -1])),
            (vec![3, 2], vec![0, -1, 2, 3, 0, 5])
        );
        // Integer adds wrap; float max propagates NaN.
        let w = scatter(
            &t(&[1], vec![i8::MAX]),
            &t(&[1], vec![0i32]),
            &t(&[1], vec![1i8]),
            ScatterMode::Add,
        )
        .unwrap();
        assert_eq!(w.as_slice::<i8>().unwrap(), &[i8::MIN]);
        let n = scatter(
            &t(&[2], vec![1.0f32, 2.0]),
            &t(&[1], vec![1u32]),
            &t(&[1], vec![f32::NAN]),
            ScatterMode::Max,
        )
        .unwrap();
        assert!(n.as_slice::<f32>().unwrap()[1].is_nan());
    }

    #[test]
    fn scatter_errors() {
        let r = scat(ScatterMode::Replace, vec![3], vec![0, 0]);
        let msg = message(r.clone());
        assert!(matches!(r, Err(InterpError::Runtime(_))));
        assert!(msg.contains("index 3") && msg.contains("dim 0"), "{msg}");
        assert!(matches!(
            scat(ScatterMode::Add, vec![-4], vec![0, 0]),
            Err(InterpError::Runtime(_))
        ));
        assert!(is_invalid(scatter(
            &seq(&[3, 2]),
            &t(&[1], vec![0i64]),
            &t(&[1, 3], vec![0, 0, 0]),
            ScatterMode::Add
        )));
        assert!(is_invalid(scatter(
            &seq(&[3, 2]),
            &t(&[1, 1], vec![0i64]),
            &t(&[1, 1, 2], vec![0, 0]),
            ScatterMode::Add
        )));
        assert!(is_invalid(scatter(
            &seq(&[3, 2]),
            &t(&[1], vec![0i64]),
            &t(&[1, 2], vec![0i64, 0]),
            ScatterMode::Add
        )));
        assert!(is_invalid(scatter(
            &Tensor::scalar(1i32),
            &t(&[1], vec![0i64]),
            &t(&[1], vec![0]),
            ScatterMode::Add
        )));
        let b = t(&[1], vec![true]);
        assert!(is_invalid(scatter(
            &b,
            &t(&[1], vec![0i64]),
            &b,
            ScatterMode::Add
        )));
    }
}
