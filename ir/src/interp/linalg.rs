//! Contractions and windows: dot_general, conv, reduce_window.
//!
//! # Numerics
//!
//! As in [`super::reduce`]: sums of products accumulate in `Arith::Acc`, which is f64 for every
//! float type (f64, f32, f16, bf16, float8) with one rounding to the element type at the end, the
//! element type itself with wrapping for integers, and or/and for bool (a bool `dot_general` is
//! "any `a && b`"). This makes the oracle more exact than any backend; backends compare with a
//! tolerance. Unlike `reduce_sum` (which starts from its first element, as numpy), a sum of
//! products starts from `+0.0`, as BLAS and cuDNN do, and an empty contraction gives zero.
//! `reduce_window` uses the reducers of [`super::reduce`] unchanged.
//!
//! # Evaluation plan
//!
//! All index arithmetic is precomputed. `dot_general` builds offset tables for the batch, free
//! and contracted indices of each operand (`offsets`); the inner loop walks the contracted
//! table. `conv` and `reduce_window` build, per spatial dim and output coordinate, the list of
//! window taps that land on real input (`AxisTaps`); padding and the holes of `lhs_dilation`
//! simply have no tap. The taps of one output position are the cartesian product of its per-dim
//! lists (`combine_taps`), gathered into a buffer allocated once.

use super::reduce::{Accum, Arith, Reducer, advance, linear, offsets, try_vec, with_reducer};
use super::{InterpError, invalid};
use crate::op::ReduceKind;
use crate::shape::row_major_strides;
use crate::tensor::{Tensor, try_filled_vec};
use crate::with_data;

/// The attributes of a `conv`.
pub struct ConvParams<'a> {
    pub stride: &'a [usize],
    pub pad_low: &'a [i64],
    pub pad_high: &'a [i64],
    pub lhs_dilation: &'a [usize],
    pub rhs_dilation: &'a [usize],
    pub groups: usize,
}

/// The attributes of a `reduce_window`.
pub struct WindowParams<'a> {
    pub window: &'a [usize],
    pub stride: &'a [usize],
    pub dilation: &'a [usize],
    pub pad_low: &'a [usize],
    pub pad_high: &'a [usize],
}

/// `acc + a * b` in the accumulator.
fn mac<T: Arith>(acc: T::Acc, a: T, b: T) -> T::Acc {
    acc.add(a.to_acc().mul(b.to_acc()))
}

// ---------------------------------------------------------------------------------------------
// dot_general
// ---------------------------------------------------------------------------------------------

/// `dot_general(lhs, rhs) {lhs_batch, rhs_batch, lhs_contract, rhs_contract}`: see
/// [`crate::op::Op::DotGeneral`]. Result dims: batch, then lhs free, then rhs free dims.
pub fn dot_general(
    lhs: &Tensor,
    rhs: &Tensor,
    lhs_batch: &[usize],
    rhs_batch: &[usize],
    lhs_contract: &[usize],
    rhs_contract: &[usize],
) -> Result<Tensor, InterpError> {
    if lhs.dtype() != rhs.dtype() {
        return Err(invalid(format!(
            "dot_general: lhs is {} but rhs is {}",
            lhs.dtype(),
            rhs.dtype()
        )));
    }
    for (what, l, r) in [
        ("batch", lhs_batch, rhs_batch),
        ("contract", lhs_contract, rhs_contract),
    ] {
        if l.len() != r.len() {
            return Err(invalid(format!(
                "dot_general: lhs_{what} names {} dims but rhs_{what} names {}",
                l.len(),
                r.len()
            )));
        }
        for (&a, &b) in l.iter().zip(r) {
            // Out-of-range dims are reported by `free_dims` below; only compare real ones here.
            let (Some(&ea), Some(&eb)) = (lhs.shape().get(a), rhs.shape().get(b)) else {
                continue;
            };
            if ea != eb {
                return Err(invalid(format!(
                    "dot_general: {what} dims differ: lhs dim {a} has extent {ea} but rhs dim {b} has {eb}"
                )));
            }
        }
    }
    let lhs_free = free_dims("lhs", lhs.rank(), lhs_batch, lhs_contract)?;
    let rhs_free = free_dims("rhs", rhs.rank(), rhs_batch, rhs_contract)?;
    let extents =
        |t: &Tensor, dims: &[usize]| dims.iter().map(|&d| t.shape()[d]).collect::<Vec<_>>();
    let out_shape = [
        extents(lhs, lhs_batch),
        extents(lhs, &lhs_free),
        extents(rhs, &rhs_free),
    ]
    .concat();
    if out_shape.contains(&0) {
        return Ok(Tensor::zeros(lhs.dtype(), &out_shape)?);
    }
    let l = DotOperand::new(lhs, lhs_batch, lhs_contract, &lhs_free)?;
    let r = DotOperand::new(rhs, rhs_batch, rhs_contract, &rhs_free)?;
    with_data!(lhs.data(), lv, T => dot_typed::<T>(lv, rhs.typed()?, &l, &r, out_shape))
}

/// The dims of one operand that are neither batch nor contracting dims, after checking that
/// those are in range and distinct.
fn free_dims(
    side: &str,
    rank: usize,
    batch: &[usize],
    contract: &[usize],
) -> Result<Vec<usize>, InterpError> {
    let mut used = vec![false; rank];
    for (attr, dims) in [("batch", batch), ("contract", contract)] {
        for &d in dims {
            if d >= rank {
                return Err(invalid(format!(
                    "dot_general: {side}_{attr} names dim {d} but {side} has rank {rank}"
                )));
            }
            if std::mem::replace(&mut used[d], true) {
                return Err(invalid(format!(
                    "dot_general: {side} dim {d} appears twice among the batch and contracting dims"
                )));
            }
        }
    }
    Ok((0..rank).filter(|&d| !used[d]).collect())
}

/// Where the batch, free and contracted indices of one `dot_general` operand live: the offset
/// of every multi-index over those dims, in row-major order.
struct DotOperand {
    batch: Vec<usize>,
    free: Vec<usize>,
    contract: Vec<usize>,
}

impl DotOperand {
    fn new(
        t: &Tensor,
        batch: &[usize],
        contract: &[usize],
        free: &[usize],
    ) -> Result<Self, InterpError> {
        let strides = row_major_strides(t.shape());
        let table = |dims: &[usize]| {
            let ext: Vec<usize> = dims.iter().map(|&d| t.shape()[d]).collect();
            let str: Vec<usize> = dims.iter().map(|&d| strides[d]).collect();
            offsets(&ext, &str)
        };
        Ok(DotOperand {
            batch: table(batch)?,
            free: table(free)?,
            contract: table(contract)?,
        })
    }
}

fn dot_typed<T: Arith>(
    lhs: &[T],
    rhs: &[T],
    l: &DotOperand,
    r: &DotOperand,
    out_shape: Vec<usize>,
) -> Result<Tensor, InterpError> {
    let mut out = try_filled_vec(&out_shape, T::default())?;
    let mut k = 0;
    for (&lb, &rb) in l.batch.iter().zip(&r.batch) {
        for &lf in &l.free {
            for &rf in &r.free {
                let (l0, r0) = (lb + lf, rb + rf);
                let sum = l
                    .contract
                    .iter()
                    .zip(&r.contract)
                    .fold(T::Acc::ZERO, |acc, (&lc, &rc)| {
                        mac(acc, lhs[l0 + lc], rhs[r0 + rc])
                    });
                out[k] = T::from_acc(sum);
                k += 1;
            }
        }
    }
    Ok(Tensor::from_vec(out_shape, out)?)
}

// ---------------------------------------------------------------------------------------------
// Window geometry shared by conv and reduce_window
// ---------------------------------------------------------------------------------------------

/// One dim of a sliding window: a spatial dim of `conv`, any dim of `reduce_window`.
struct WindowAxis {
    /// Extent of the input along this dim.
    input: usize,
    /// Extent of the window (kernel) along this dim.
    window: usize,
    stride: usize,
    pad_low: i64,
    pad_high: i64,
    /// Input dilation: `lhs_dilation - 1` zeros between input elements.
    lhs_dilation: usize,
    /// Window dilation: `rhs_dilation - 1` skipped elements between window taps.
    rhs_dilation: usize,
}

impl WindowAxis {
    /// The output extent (op.rs):
    /// `floor((dilated input + pad_low + pad_high - dilated window) / stride) + 1`, where the
    /// dilated input of an empty input is 0. It may be 0 (the formula gives 0, or an empty input
    /// is too small for the window); a negative value, a negative padded extent or a zero
    /// window, stride or dilation is an error.
    fn out_extent(&self) -> Result<usize, String> {
        if self.window == 0 || self.stride == 0 || self.lhs_dilation == 0 || self.rhs_dilation == 0
        {
            return Err("window, stride and dilations must be >= 1".into());
        }
        let wide = |v: usize| v as i128; // Lossless: usize has at most 64 bits.
        let overflow = || "extents overflow".to_string();
        let dilated = match self.input {
            0 => 0,
            s => {
                wide(s - 1)
                    .checked_mul(wide(self.lhs_dilation))
                    .ok_or_else(overflow)?
                    + 1
            }
        };
        let padded = dilated
            .checked_add(i128::from(self.pad_low) + i128::from(self.pad_high))
            .ok_or_else(overflow)?;
        if padded < 0 {
            return Err(format!(
                "padding crops the input of extent {dilated} to {padded}"
            ));
        }
        let span = wide(self.window - 1)
            .checked_mul(wide(self.rhs_dilation))
            .and_then(|v| v.checked_add(1))
            .ok_or_else(overflow)?;
        if self.input == 0 && padded < span {
            return Ok(0);
        }
        let out = (padded - span).div_euclid(wide(self.stride)) + 1;
        if out < 0 {
            return Err(format!(
                "the window of extent {span} does not fit in the padded input of extent {padded}"
            ));
        }
        usize::try_from(out).map_err(|_| overflow())
    }

    /// The input coordinate that window tap `k` reads at output coordinate `o`, or `None` when
    /// the tap falls on padding or on a zero inserted by lhs dilation. `o` must be below
    /// [`Self::out_extent`], which bounds the arithmetic.
    fn source(&self, o: usize, k: usize) -> Option<usize> {
        let wide = |v: usize| v as i128;
        // The tap's coordinate in the dilated input (before padding).
        let q = wide(o) * wide(self.stride) + wide(k) * wide(self.rhs_dilation)
            - i128::from(self.pad_low);
        let lhs = wide(self.lhs_dilation);
        if q < 0 || q % lhs != 0 {
            return None;
        }
        usize::try_from(q / lhs).ok().filter(|&i| i < self.input)
    }
}

/// A window tap: (offset into the input, offset into the kernel).
type Tap = (usize, usize);

/// The taps of one window dim that read real input, per output coordinate, with offsets already
/// multiplied by the strides of the input and the kernel: those of output coordinate `o` are
/// `taps[start[o]..start[o + 1]]`.
struct AxisTaps {
    start: Vec<usize>,
    taps: Vec<Tap>,
}

impl AxisTaps {
    fn new(
        axis: &WindowAxis,
        out: usize,
        x_stride: usize,
        w_stride: usize,
    ) -> Result<Self, InterpError> {
        let taps_of = |o: usize| {
            (0..axis.window)
                .filter_map(move |k| axis.source(o, k).map(|i| (i * x_stride, k * w_stride)))
        };
        // Allocate the index first, so that an absurd extent fails before any counting.
        let mut start = try_vec(out + 1)?;
        start.push(0);
        for o in 0..out {
            start.push(start[o] + taps_of(o).count());
        }
        let mut taps = try_vec(start[out])?;
        for o in 0..out {
            taps.extend(taps_of(o));
        }
        Ok(AxisTaps { start, taps })
    }

    fn at(&self, o: usize) -> &[Tap] {
        &self.taps[self.start[o]..self.start[o + 1]]
    }

    /// The most taps any output coordinate has.
    fn max_len(&self) -> usize {
        self.start
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0)
    }
}

/// Push onto `out` the combined tap of every choice of one tap per dim at output position `pos`
/// (offsets summed onto `base`), in row-major order of the window.
fn combine_taps(tables: &[AxisTaps], pos: &[usize], base: Tap, out: &mut Vec<Tap>) {
    match (tables.split_first(), pos.split_first()) {
        (Some((table, tables)), Some((&o, pos))) => {
            for &(x, w) in table.at(o) {
                combine_taps(tables, pos, (base.0 + x, base.1 + w), out);
            }
        }
        _ => out.push(base),
    }
}

/// A buffer that holds the combined taps of any output position without growing. Its size is
/// at most the input's (each tap reads a distinct element) and the kernel's element count.
fn tap_buffer(tables: &[AxisTaps]) -> Result<Vec<Tap>, InterpError> {
    let n = tables
        .iter()
        .try_fold(1usize, |acc, t| acc.checked_mul(t.max_len()))
        .ok_or_else(|| invalid("the window has too many taps"))?;
    try_vec(n)
}

fn check_lengths(op: &str, want: usize, attrs: &[(&str, usize)]) -> Result<(), InterpError> {
    match attrs.iter().find(|(_, len)| *len != want) {
        Some((name, len)) => Err(invalid(format!(
            "{op}: {name} has {len} entries, expected {want}"
        ))),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// conv
// ---------------------------------------------------------------------------------------------

/// `conv(x, w) {stride, pad_low, pad_high, lhs_dilation, rhs_dilation, groups}`: see
/// [`crate::op::Op::Conv`]. `x` is `[N, C, s...]`, `w` is `[O, C/groups, k...]`, the result
/// `[N, O, o...]`; output channel `o` of group `g = o / (O/groups)` reads input channels
/// `g*C/groups .. (g+1)*C/groups`. Rank 2 (no spatial dims) is accepted: a plain contraction.
pub fn conv(x: &Tensor, w: &Tensor, p: &ConvParams) -> Result<Tensor, InterpError> {
    if x.dtype() != w.dtype() {
        return Err(invalid(format!(
            "conv: x is {} but w is {}",
            x.dtype(),
            w.dtype()
        )));
    }
    let (xs, ws) = (x.shape(), w.shape());
    if xs.len() < 2 || ws.len() != xs.len() {
        return Err(invalid(format!(
            "conv: x [N, C, spatial...] and w [O, C/groups, kernel...] need equal ranks >= 2, found {xs:?} and {ws:?}"
        )));
    }
    let ns = xs.len() - 2;
    check_lengths(
        "conv",
        ns,
        &[
            ("stride", p.stride.len()),
            ("pad_low", p.pad_low.len()),
            ("pad_high", p.pad_high.len()),
            ("lhs_dilation", p.lhs_dilation.len()),
            ("rhs_dilation", p.rhs_dilation.len()),
        ],
    )?;
    let (n, c, o, cg, groups) = (xs[0], xs[1], ws[0], ws[1], p.groups);
    if groups == 0 {
        return Err(invalid("conv: groups must be >= 1"));
    }
    if cg.checked_mul(groups) != Some(c) {
        return Err(invalid(format!(
            "conv: x has {c} channels but w takes {cg} per group for {groups} groups"
        )));
    }
    if o % groups != 0 {
        return Err(invalid(format!(
            "conv: {o} output channels do not divide into {groups} groups"
        )));
    }
    let axes: Vec<WindowAxis> = (0..ns)
        .map(|d| WindowAxis {
            input: xs[d + 2],
            window: ws[d + 2],
            stride: p.stride[d],
            pad_low: p.pad_low[d],
            pad_high: p.pad_high[d],
            lhs_dilation: p.lhs_dilation[d],
            rhs_dilation: p.rhs_dilation[d],
        })
        .collect();
    let mut out_shape = vec![n, o];
    for (d, axis) in axes.iter().enumerate() {
        out_shape.push(
            axis.out_extent()
                .map_err(|e| invalid(format!("conv: spatial dim {d}: {e}")))?,
        );
    }
    if out_shape.contains(&0) {
        return Ok(Tensor::zeros(x.dtype(), &out_shape)?);
    }
    let (x_strides, w_strides) = (row_major_strides(xs), row_major_strides(ws));
    let tables = axes
        .iter()
        .enumerate()
        .map(|(d, axis)| AxisTaps::new(axis, out_shape[d + 2], x_strides[d + 2], w_strides[d + 2]))
        .collect::<Result<Vec<_>, _>>()?;
    let dims = ConvDims {
        in_per_group: cg,
        out_per_group: o / groups,
        x_strides: [x_strides[0], x_strides[1]],
        w_strides: [w_strides[0], w_strides[1]],
    };
    with_data!(x.data(), xv, T => conv_typed::<T>(xv, w.typed()?, &dims, &tables, out_shape))
}

/// The batch and channel geometry of a conv.
struct ConvDims {
    in_per_group: usize,
    out_per_group: usize,
    /// Strides of x's N and C dims.
    x_strides: [usize; 2],
    /// Strides of w's O and C/groups dims.
    w_strides: [usize; 2],
}

fn conv_typed<T: Arith>(
    x: &[T],
    w: &[T],
    g: &ConvDims,
    tables: &[AxisTaps],
    out_shape: Vec<usize>,
) -> Result<Tensor, InterpError> {
    let mut out = try_filled_vec(&out_shape, T::default())?;
    let out_strides = row_major_strides(&out_shape);
    let spatial = &out_shape[2..];
    let mut taps = tap_buffer(tables)?;
    let mut pos = vec![0; spatial.len()];
    loop {
        // The taps are shared by every batch element and channel at this spatial position.
        taps.clear();
        combine_taps(tables, &pos, (0, 0), &mut taps);
        let out_at = linear(&pos, &out_strides[2..]);
        for n in 0..out_shape[0] {
            for o in 0..out_shape[1] {
                let group = o / g.out_per_group;
                let mut acc = T::Acc::ZERO;
                for c in 0..g.in_per_group {
                    let xb = n * g.x_strides[0] + (group * g.in_per_group + c) * g.x_strides[1];
                    let wb = o * g.w_strides[0] + c * g.w_strides[1];
                    acc = taps
                        .iter()
                        .fold(acc, |acc, &(tx, tw)| mac(acc, x[xb + tx], w[wb + tw]));
                }
                out[n * out_strides[0] + o * out_strides[1] + out_at] = T::from_acc(acc);
            }
        }
        if !advance(&mut pos, spatial) {
            break;
        }
    }
    Ok(Tensor::from_vec(out_shape, out)?)
}

// ---------------------------------------------------------------------------------------------
// reduce_window
// ---------------------------------------------------------------------------------------------

/// `reduce_window_KIND(x) {window, stride, dilation, pad_low, pad_high}`: see
/// [`crate::op::Op::ReduceWindow`]. Padding holds the reduction's identity, so it is skipped; a
/// window entirely in padding gives the identity.
pub fn reduce_window(
    x: &Tensor,
    kind: ReduceKind,
    p: &WindowParams,
) -> Result<Tensor, InterpError> {
    let xs = x.shape();
    check_lengths(
        "reduce_window",
        xs.len(),
        &[
            ("window", p.window.len()),
            ("stride", p.stride.len()),
            ("dilation", p.dilation.len()),
            ("pad_low", p.pad_low.len()),
            ("pad_high", p.pad_high.len()),
        ],
    )?;
    let pad = |v: usize| {
        i64::try_from(v).map_err(|_| invalid(format!("reduce_window: padding {v} is too large")))
    };
    let mut axes = Vec::with_capacity(xs.len());
    let mut out_shape = Vec::with_capacity(xs.len());
    for (d, &input) in xs.iter().enumerate() {
        let axis = WindowAxis {
            input,
            window: p.window[d],
            stride: p.stride[d],
            pad_low: pad(p.pad_low[d])?,
            pad_high: pad(p.pad_high[d])?,
            lhs_dilation: 1,
            rhs_dilation: p.dilation[d],
        };
        out_shape.push(
            axis.out_extent()
                .map_err(|e| invalid(format!("reduce_window: dim {d}: {e}")))?,
        );
        axes.push(axis);
    }
    if out_shape.contains(&0) {
        return Ok(Tensor::zeros(x.dtype(), &out_shape)?);
    }
    let strides = row_major_strides(xs);
    let tables = axes
        .iter()
        .zip(out_shape.iter().zip(&strides))
        .map(|(axis, (&out, &stride))| AxisTaps::new(axis, out, stride, 0))
        .collect::<Result<Vec<_>, _>>()?;
    with_data!(x.data(), v, T => with_reducer!(kind, R => {
        window_typed::<T, R>(v, &tables, out_shape)
    }))
}

fn window_typed<T: Arith, R: Reducer<T>>(
    x: &[T],
    tables: &[AxisTaps],
    out_shape: Vec<usize>,
) -> Result<Tensor, InterpError> {
    let mut out = try_filled_vec(&out_shape, T::default())?;
    let mut taps = tap_buffer(tables)?;
    let mut pos = vec![0; out_shape.len()];
    for y in out.iter_mut() {
        taps.clear();
        combine_taps(tables, &pos, (0, 0), &mut taps);
        *y = R::fold(taps.iter().map(|&(t, _)| x[t]));
        advance(&mut pos, &out_shape);
    }
    Ok(Tensor::from_vec(out_shape, out)?)
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};

    use super::*;
    use crate::interp::reduce::tests::{invalid_msg, t};

    // --- dot_general --------------------------------------------------------------------

    fn dot(
        l: &Tensor,
        r: &Tensor,
        lb: &[usize],
        rb: &[usize],
        lc: &[usize],
        rc: &[usize],
    ) -> Tensor {
        dot_general(l, r, lb, rb, lc, rc).unwrap()
    }

    #[test]
    fn dot_matmul() {
        // [[1,2,3],[4,5,6]] @ [[1,2],[3,4],[5,6]] = [[22,28],[49,64]].
        let a = t(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]);
        let b = t(&[3, 2], vec![1.0f32, 2., 3., 4., 5., 6.]);
        assert_eq!(
            dot(&a, &b, &[], &[], &[1], &[0]),
            t(&[2, 2], vec![22.0f32, 28., 49., 64.])
        );
        // a @ a^T contracts dim 1 with dim 1: [[14,32],[32,77]].
        assert_eq!(
            dot(&a, &a, &[], &[], &[1], &[1]),
            t(&[2, 2], vec![14.0f32, 32., 32., 77.])
        );
        // Matrix-vector, and a vector outer product (no contraction): result [lhs free, rhs free].
        let v = t(&[3], vec![1i64, 0, -1]);
        let ai = t(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]);
        assert_eq!(dot(&ai, &v, &[], &[], &[1], &[0]), t(&[2], vec![-2i64, -2]));
        let u = t(&[2], vec![2i64, 3]);
        assert_eq!(
            dot(&u, &v, &[], &[], &[], &[]),
            t(&[2, 3], vec![2i64, 0, -2, 3, 0, -3])
        );
    }

    #[test]
    fn dot_batched_matmul() {
        // Batch 0: I @ B0 = B0; batch 1: [[1,1],[0,1]] @ B1.
        let a = t(&[2, 2, 2], vec![1.0f64, 0., 0., 1., 1., 1., 0., 1.]);
        let b = t(&[2, 2, 2], vec![1.0f64, 2., 3., 4., 5., 6., 7., 8.]);
        let want = t(&[2, 2, 2], vec![1.0f64, 2., 3., 4., 12., 14., 7., 8.]);
        assert_eq!(dot(&a, &b, &[0], &[0], &[2], &[1]), want);
        // Batch dims need not lead: lhs [k, b] with rhs [b, k] gives out[b] = sum_k l[k,b] r[b,k].
        let l = t(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]);
        let r = t(&[3, 2], vec![1i32, 1, 2, 0, 0, 3]);
        assert_eq!(
            dot(&l, &r, &[1], &[0], &[0], &[1]),
            t(&[3], vec![5i32, 4, 18])
        );
        // Free dims follow the batch dims: lhs [m=2, b=2, k=1], rhs [k=1, b=2, n=3] -> [b, m, n].
        let l = t(&[2, 2, 1], vec![1i32, 2, 3, 4]);
        let r = t(&[1, 2, 3], vec![1i32, 2, 3, 10, 20, 30]);
        let want = t(
            &[2, 2, 3],
            vec![1i32, 2, 3, 3, 6, 9, 20, 40, 60, 40, 80, 120],
        );
        assert_eq!(dot(&l, &r, &[1], &[1], &[2], &[0]), want);
    }

    #[test]
    fn dot_contracts_two_dims() {
        // lhs [2, 3, 2], rhs [3, 2]: out[i] = sum_{j,k} l[i,j,k] r[j,k].
        let l = t(&[2, 3, 2], (1..=12).map(|v| v as f32).collect());
        let r = t(&[3, 2], vec![1.0f32, 0., 0., 1., 1., 1.]);
        // i=0: 1 + 4 + 5 + 6 = 16; i=1: 7 + 10 + 11 + 12 = 40.
        let want = t(&[2], vec![16.0f32, 40.]);
        assert_eq!(dot(&l, &r, &[], &[], &[1, 2], &[0, 1]), want);
        // The pairs matter, not their order.
        assert_eq!(dot(&l, &r, &[], &[], &[2, 1], &[1, 0]), want);
        // Pairing dim 1 with rhs dim 1 instead needs equal extents: 3 vs 2.
        let msg = invalid_msg(dot_general(&l, &r, &[], &[], &[1, 2], &[1, 0]));
        assert!(
            msg.contains("lhs dim 1 has extent 3 but rhs dim 1 has 2"),
            "{msg}"
        );
    }

    #[test]
    fn dot_empty_contraction_and_empty_result() {
        let a = t(&[2, 0], Vec::<f32>::new());
        let b = t(&[0, 3], Vec::<f32>::new());
        assert_eq!(
            dot(&a, &b, &[], &[], &[1], &[0]),
            t(&[2, 3], vec![0.0f32; 6])
        );
        assert_eq!(
            dot(&b, &a, &[], &[], &[], &[]),
            t(&[0, 3, 2, 0], Vec::<f32>::new())
        );
        let c = t(&[0], Vec::<i8>::new());
        assert_eq!(dot(&c, &c, &[], &[], &[0], &[0]), t(&[], vec![0i8]));
    }

    #[test]
    fn dot_numerics_per_dtype() {
        // f32 accumulates in f64: (1e8 + 1) - 1e8 is 1, not 0.
        let a = t(&[3], vec![1e8f32, 1., -1e8]);
        let ones = t(&[3], vec![1.0f32; 3]);
        assert_eq!(dot(&a, &ones, &[], &[], &[0], &[0]), t(&[], vec![1.0f32]));
        // bf16: 256 + 1 + 1 is 258 exactly (in bf16 arithmetic 256 + 1 rounds to 256, twice).
        let h = t(&[3], vec![bf16::from_f32(256.0), bf16::ONE, bf16::ONE]);
        let hones = t(&[3], vec![bf16::ONE; 3]);
        assert_eq!(
            dot(&h, &hones, &[], &[], &[0], &[0]),
            t(&[], vec![bf16::from_f32(258.0)])
        );
        // Integers wrap: 100 * 2 + 50 * 1 = 250 -> -6 in i8.
        let i = t(&[2], vec![100i8, 50]);
        let j = t(&[2], vec![2i8, 1]);
        assert_eq!(dot(&i, &j, &[], &[], &[0], &[0]), t(&[], vec![-6i8]));
        // Bool: or of ands.
        let p = t(&[2, 2], vec![true, false, false, false]);
        let q = t(&[2, 2], vec![false, true, true, true]);
        assert_eq!(
            dot(&p, &q, &[], &[], &[1], &[0]),
            t(&[2, 2], vec![false, true, false, false])
        );
    }

    #[test]
    fn dot_rejects_bad_operands() {
        let a = t(&[2, 3], vec![0.0f32; 6]);
        let b = t(&[3, 2], vec![0.0f64; 6]);
        assert!(invalid_msg(dot_general(&a, &b, &[], &[], &[1], &[0])).contains("f32"));
        let b = t(&[2, 2], vec![0.0f32; 4]);
        assert!(invalid_msg(dot_general(&a, &b, &[], &[], &[1], &[0])).contains("extent 3"));
        assert!(invalid_msg(dot_general(&a, &a, &[], &[], &[1], &[])).contains("names 1 dims"));
        assert!(invalid_msg(dot_general(&a, &a, &[], &[], &[2], &[2])).contains("rank 2"));
        assert!(invalid_msg(dot_general(&a, &a, &[1], &[1], &[1], &[1])).contains("twice"));
    }

    // --- conv ---------------------------------------------------------------------------

    /// Conv parameters with everything but `stride`, padding and dilations left at defaults.
    struct P {
        stride: Vec<usize>,
        pad_low: Vec<i64>,
        pad_high: Vec<i64>,
        lhs_dilation: Vec<usize>,
        rhs_dilation: Vec<usize>,
        groups: usize,
    }

    impl P {
        /// Stride 1, no padding, no dilation, one group, over `ns` spatial dims.
        fn new(ns: usize) -> P {
            P {
                stride: vec![1; ns],
                pad_low: vec![0; ns],
                pad_high: vec![0; ns],
                lhs_dilation: vec![1; ns],
                rhs_dilation: vec![1; ns],
                groups: 1,
            }
        }

        fn run(&self, x: &Tensor, w: &Tensor) -> Result<Tensor, InterpError> {
            conv(
                x,
                w,
                &ConvParams {
                    stride: &self.stride,
                    pad_low: &self.pad_low,
                    pad_high: &self.pad_high,
                    lhs_dilation: &self.lhs_dilation,
                    rhs_dilation: &self.rhs_dilation,
                    groups: self.groups,
                },
            )
        }
    }

    #[test]
    fn conv_1d() {
        let x = t(&[1, 1, 5], vec![1.0f32, 2., 3., 4., 5.]);
        let w = t(&[1, 1, 3], vec![1.0f32, 0., -1.]);
        assert_eq!(
            P::new(1).run(&x, &w).unwrap(),
            t(&[1, 1, 3], vec![-2.0f32, -2., -2.])
        );
        // Two batch elements, two input channels, two output channels, stride 2:
        // out[n, o, i] = sum_c sum_k x[n, c, 2i + k] w[o, c, k].
        let x = t(&[2, 2, 3], vec![1i32, 2, 3, 4, 5, 6, 0, 1, 0, 1, 0, 1]);
        let w = t(&[2, 2, 2], vec![1i32, 1, 0, 0, 0, 0, 1, -1]);
        let p = P {
            stride: vec![2],
            ..P::new(1)
        };
        // o=0 sums channel 0 pairs: (1+2), (0+1); o=1 is channel 1 differences: (4-5), (1-0).
        assert_eq!(p.run(&x, &w).unwrap(), t(&[2, 2, 1], vec![3i32, -1, 1, 1]));
    }

    #[test]
    fn conv_2d_stride_padding_dilation() {
        // x = 0..16 as [4, 4], w = [[1, 2], [3, 4]] dilated by 2 (extent 3), padding 1, stride 2.
        // Output (i, j) reads x[2i - 1 + 2a, 2j - 1 + 2b] * w[a, b] where in range.
        let x = t(&[1, 1, 4, 4], (0..16).map(|v| v as f32).collect());
        let w = t(&[1, 1, 2, 2], vec![1.0f32, 2., 3., 4.]);
        let p = P {
            stride: vec![2, 2],
            pad_low: vec![1, 1],
            pad_high: vec![1, 1],
            rhs_dilation: vec![2, 2],
            ..P::new(2)
        };
        // (0,0): x[1,1]*4 = 20; (0,1): x[1,1]*3 + x[1,3]*4 = 15 + 28; (1,0): x[1,1]*2 + x[3,1]*4
        // = 10 + 52; (1,1): 5*1 + 7*2 + 13*3 + 15*4 = 118.
        assert_eq!(
            p.run(&x, &w).unwrap(),
            t(&[1, 1, 2, 2], vec![20.0f32, 43., 62., 118.])
        );
    }

    #[test]
    fn conv_grouped_and_depthwise() {
        // Depthwise: 2 channels, 2 groups, one filter each.
        let x = t(&[1, 2, 3], vec![1.0f64, 2., 3., 4., 5., 6.]);
        let w = t(&[2, 1, 2], vec![1.0f64, 1., 1., -1.]);
        let p = P {
            groups: 2,
            ..P::new(1)
        };
        assert_eq!(
            p.run(&x, &w).unwrap(),
            t(&[1, 2, 2], vec![3.0f64, 5., -1., -1.])
        );
        // 4 channels in 2 groups of 2, 4 outputs (2 per group), 1x1 kernel over 1 position:
        // out[o] = sum_c x[2g + c] w[o, c] with g = o / 2.
        let x = t(&[1, 4, 1], vec![1i64, 2, 3, 4]);
        let w = t(&[4, 2, 1], vec![1i64, 0, 0, 1, 1, 1, 1, -1]);
        assert_eq!(p.run(&x, &w).unwrap(), t(&[1, 4, 1], vec![1i64, 2, 7, -1]));
        // Channel multiplier 2 in a depthwise conv: 1 channel per group, 2 outputs per group.
        let x = t(&[1, 2, 1], vec![3i64, 5]);
        let w = t(&[4, 1, 1], vec![1i64, 2, 3, 4]);
        assert_eq!(p.run(&x, &w).unwrap(), t(&[1, 4, 1], vec![3i64, 6, 15, 20]));
    }

    #[test]
    fn conv_transposed_via_lhs_dilation() {
        // conv_transpose(x, k = [100, 10, 1], stride 2) is a conv of x dilated by 2, padded by
        // k - 1 = 2 on each side, with the flipped kernel w = [1, 10, 100]:
        // y[j] = sum_i x[i] k[j - 2i] = [100, 10, 1 + 200, 20, 2 + 300, 30, 3].
        let x = t(&[1, 1, 3], vec![1.0f32, 2., 3.]);
        let w = t(&[1, 1, 3], vec![1.0f32, 10., 100.]);
        let p = P {
            pad_low: vec![2],
            pad_high: vec![2],
            lhs_dilation: vec![2],
            ..P::new(1)
        };
        let want = t(&[1, 1, 7], vec![100.0f32, 10., 201., 20., 302., 30., 3.]);
        assert_eq!(p.run(&x, &w).unwrap(), want);
        // 2-d: a 2x2 input dilated by 2 with a 1x1 kernel puts zeros between the elements.
        let x = t(&[1, 1, 2, 2], vec![1i32, 2, 3, 4]);
        let w = t(&[1, 1, 1, 1], vec![1i32]);
        let p = P {
            lhs_dilation: vec![2, 2],
            ..P::new(2)
        };
        assert_eq!(
            p.run(&x, &w).unwrap(),
            t(&[1, 1, 3, 3], vec![1i32, 0, 2, 0, 0, 0, 3, 0, 4])
        );
    }

    #[test]
    fn conv_negative_padding_crops() {
        let x = t(&[1, 1, 5], vec![1i32, 2, 3, 4, 5]);
        let w = t(&[1, 1, 1], vec![1i32]);
        let p = P {
            pad_low: vec![-1],
            pad_high: vec![-2],
            ..P::new(1)
        };
        assert_eq!(p.run(&x, &w).unwrap(), t(&[1, 1, 2], vec![2i32, 3]));
        // Crop one side, pad the other.
        let p = P {
            pad_low: vec![-3],
            pad_high: vec![1],
            ..P::new(1)
        };
        assert_eq!(p.run(&x, &w).unwrap(), t(&[1, 1, 3], vec![4i32, 5, 0]));
    }

    #[test]
    fn conv_3d_with_padding() {
        // Ones [2,2,2] with a ones kernel [2,2,2], padding 1: the output (3 per dim) counts the
        // overlap, the product of [1, 2, 1] per dim.
        let x = t(&[1, 1, 2, 2, 2], vec![1.0f32; 8]);
        let w = t(&[1, 1, 2, 2, 2], vec![1.0f32; 8]);
        let p = P {
            pad_low: vec![1; 3],
            pad_high: vec![1; 3],
            ..P::new(3)
        };
        let per_dim = [1.0f32, 2., 1.];
        let want: Vec<f32> = (0..27)
            .map(|i| per_dim[i / 9] * per_dim[i / 3 % 3] * per_dim[i % 3])
            .collect();
        assert_eq!(p.run(&x, &w).unwrap(), t(&[1, 1, 3, 3, 3], want));
        assert_eq!(
            P::new(3).run(&x, &w).unwrap(),
            t(&[1, 1, 1, 1, 1], vec![8.0f32])
        );
    }

    #[test]
    fn conv_output_sizes_at_the_edge() {
        // Window 3 over 1 element with stride 2: floor(-2 / 2) + 1 = 0 outputs.
        let x = t(&[1, 1, 1], vec![1.0f32]);
        let w = t(&[1, 1, 3], vec![1.0f32; 3]);
        let p = P {
            stride: vec![2],
            ..P::new(1)
        };
        assert_eq!(p.run(&x, &w).unwrap(), t(&[1, 1, 0], Vec::<f32>::new()));
        // With stride 1 the formula gives -1: an error.
        assert!(invalid_msg(P::new(1).run(&x, &w)).contains("does not fit"));
        // An empty input gives an empty output.
        let e = t(&[1, 1, 0], Vec::<f32>::new());
        assert_eq!(
            P::new(1).run(&e, &w).unwrap(),
            t(&[1, 1, 0], Vec::<f32>::new())
        );
        // Padding crops the whole input and more.
        let p = P {
            pad_low: vec![-1],
            pad_high: vec![-1],
            ..P::new(1)
        };
        assert!(invalid_msg(p.run(&x, &t(&[1, 1, 1], vec![1.0f32]))).contains("crops"));
    }

    #[test]
    fn conv_rejects_bad_operands() {
        let x = t(&[1, 4, 3], vec![0.0f32; 12]);
        let w = t(&[2, 3, 1], vec![0.0f32; 6]);
        assert!(invalid_msg(P::new(1).run(&x, &w)).contains("4 channels"));
        let w = t(&[3, 2, 1], vec![0.0f32; 6]);
        let p = P {
            groups: 2,
            ..P::new(1)
        };
        assert!(invalid_msg(p.run(&x, &w)).contains("3 output channels"));
        let w = t(&[2, 4, 1], vec![0.0f32; 8]);
        assert!(
            invalid_msg(
                P {
                    stride: vec![0],
                    ..P::new(1)
                }
                .run(&x, &w)
            )
            .contains(">= 1")
        );
        assert!(invalid_msg(P::new(2).run(&x, &w)).contains("stride has 2 entries"));
        assert!(invalid_msg(P::new(1).run(&x, &t(&[2, 4, 1], vec![0u8; 8]))).contains("u8"));
        assert!(invalid_msg(P::new(1).run(&x, &t(&[2, 4], vec![0.0f32; 8]))).contains("ranks"));
        assert!(
            invalid_msg(
                P {
                    groups: 0,
                    ..P::new(1)
                }
                .run(&x, &w)
            )
            .contains("groups")
        );
    }

    // --- reduce_window ------------------------------------------------------------------

    /// Window parameters over every dim of `x`.
    fn window(
        x: &Tensor,
        kind: ReduceKind,
        window: &[usize],
        stride: &[usize],
        dilation: &[usize],
        pad: (&[usize], &[usize]),
    ) -> Result<Tensor, InterpError> {
        let p = WindowParams {
            window,
            stride,
            dilation,
            pad_low: pad.0,
            pad_high: pad.1,
        };
        reduce_window(x, kind, &p)
    }

    #[test]
    fn max_pool_2x2() {
        let x = t(
            &[1, 1, 4, 4],
            (0..16).map(|v| ((v * 7) % 16) as f32).collect(),
        );
        // x = [[0,7,14,5],[12,3,10,1],[8,15,6,13],[4,11,2,9]].
        let got = window(
            &x,
            ReduceKind::Max,
            &[1, 1, 2, 2],
            &[1, 1, 2, 2],
            &[1; 4],
            (&[0; 4], &[0; 4]),
        );
        assert_eq!(got.unwrap(), t(&[1, 1, 2, 2], vec![12.0f32, 14., 15., 13.]));
        // min over the same windows.
        let got = window(
            &x,
            ReduceKind::Min,
            &[1, 1, 2, 2],
            &[1, 1, 2, 2],
            &[1; 4],
            (&[0; 4], &[0; 4]),
        );
        assert_eq!(got.unwrap(), t(&[1, 1, 2, 2], vec![0.0f32, 1., 4., 2.]));
    }

    #[test]
    fn max_pool_padding_never_wins() {
        // All negative; window 3, stride 2, padding 1: each output sees a 2x2 corner of x.
        let x = t(&[3, 3], (1..=9).map(|v| -v as f32).collect());
        let got = window(
            &x,
            ReduceKind::Max,
            &[3, 3],
            &[2, 2],
            &[1, 1],
            (&[1, 1], &[1, 1]),
        );
        assert_eq!(got.unwrap(), t(&[2, 2], vec![-1.0f32, -2., -4., -5.]));
        // Min pooling over integers: the padding holds i8::MAX, so it never wins either.
        let xi = t(&[3], vec![100i8, 120, 110]);
        let got = window(&xi, ReduceKind::Min, &[2], &[1], &[1], (&[1], &[1]));
        assert_eq!(got.unwrap(), t(&[4], vec![100i8, 100, 110, 110]));
        // A window entirely in padding gives the identity.
        let got = window(&xi, ReduceKind::Max, &[1], &[1], &[1], (&[1], &[0]));
        assert_eq!(got.unwrap(), t(&[4], vec![i8::MIN, 100, 120, 110]));
    }

    #[test]
    fn avg_pool_numerator_and_divisor_via_sum() {
        // Window 3, stride 1, padding 1: sums [0+1+2, 1+2+3, 2+3+4, 3+4+0].
        let x = t(&[1, 4], vec![1.0f32, 2., 3., 4.]);
        let got = window(
            &x,
            ReduceKind::Sum,
            &[1, 3],
            &[1, 1],
            &[1, 1],
            (&[0, 1], &[0, 1]),
        );
        assert_eq!(got.unwrap(), t(&[1, 4], vec![3.0f32, 6., 9., 7.]));
        // The count of real elements per window (count_include_pad = false divisor).
        let ones = t(&[1, 4], vec![1.0f32; 4]);
        let got = window(
            &ones,
            ReduceKind::Sum,
            &[1, 3],
            &[1, 1],
            &[1, 1],
            (&[0, 1], &[0, 1]),
        );
        assert_eq!(got.unwrap(), t(&[1, 4], vec![2.0f32, 3., 3., 2.]));
        // 2-d: 2x2 windows, stride 2, over [[1,2,3],[4,5,6]] padded by one column at the end.
        let x = t(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]);
        let got = window(
            &x,
            ReduceKind::Sum,
            &[2, 2],
            &[2, 2],
            &[1, 1],
            (&[0, 0], &[0, 1]),
        );
        assert_eq!(got.unwrap(), t(&[1, 2], vec![12i32, 9]));
    }

    #[test]
    fn window_dilation_and_prod() {
        let x = t(&[5], vec![1.0f64, 2., 3., 4., 5.]);
        let run = |kind| window(&x, kind, &[2], &[1], &[2], (&[0], &[0])).unwrap();
        assert_eq!(run(ReduceKind::Sum), t(&[3], vec![4.0f64, 6., 8.]));
        assert_eq!(run(ReduceKind::Max), t(&[3], vec![3.0f64, 4., 5.]));
        assert_eq!(run(ReduceKind::Min), t(&[3], vec![1.0f64, 2., 3.]));
        assert_eq!(run(ReduceKind::Prod), t(&[3], vec![3.0f64, 8., 15.]));
        // Stride 2 with dilation 2 and padding: taps at -1, 1 | 1, 3 | 3, 5 (5 is padding).
        let got = window(&x, ReduceKind::Prod, &[2], &[2], &[2], (&[1], &[1]));
        assert_eq!(got.unwrap(), t(&[3], vec![2.0f64, 8., 4.]));
    }

    #[test]
    fn window_nan_wrap_bool_and_empty() {
        let x = t(&[3], vec![1.0f32, f32::NAN, 2.]);
        let got = window(&x, ReduceKind::Max, &[2], &[1], &[1], (&[0], &[0])).unwrap();
        assert!(got.as_slice::<f32>().unwrap().iter().all(|v| v.is_nan()));
        let got = window(&x, ReduceKind::Min, &[1], &[2], &[1], (&[0], &[0])).unwrap();
        assert_eq!(got, t(&[2], vec![1.0f32, 2.]));
        let i = t(&[3], vec![100u8, 100, 100]);
        let got = window(&i, ReduceKind::Sum, &[3], &[1], &[1], (&[0], &[0])).unwrap();
        assert_eq!(got, t(&[1], vec![44u8]));
        let b = t(&[3], vec![true, false, true]);
        let got = window(&b, ReduceKind::Prod, &[2], &[1], &[1], (&[0], &[0])).unwrap();
        assert_eq!(got, t(&[2], vec![false, false]));
        let got = window(&b, ReduceKind::Sum, &[2], &[1], &[1], (&[0], &[0])).unwrap();
        assert_eq!(got, t(&[2], vec![true, true]));
        // f16 sums accumulate in f64: 2048 + 1 + 1 = 2050.
        let h = t(&[3], vec![f16::from_f32(2048.0), f16::ONE, f16::ONE]);
        let got = window(&h, ReduceKind::Sum, &[3], &[1], &[1], (&[0], &[0])).unwrap();
        assert_eq!(got, t(&[1], vec![f16::from_f32(2050.0)]));
        // An empty input padded to 2 elements: windows of padding only give the identity.
        let e = t(&[0], Vec::<f32>::new());
        let got = window(&e, ReduceKind::Min, &[1], &[1], &[1], (&[1], &[1])).unwrap();
        assert_eq!(got, t(&[2], vec![f32::INFINITY; 2]));
        let got = window(&e, ReduceKind::Max, &[3], &[1], &[1], (&[0], &[0])).unwrap();
        assert_eq!(got, t(&[0], Vec::<f32>::new()));
    }

    #[test]
    fn window_prod_wraps_and_pads_with_one() {
        // Window 2, padding 1 on both sides: [1*4, 4*8, 8*16, 16*-1, -1*1] with i8 wrapping.
        let x = t(&[4], vec![4i8, 8, 16, -1]);
        let got = window(&x, ReduceKind::Prod, &[2], &[1], &[1], (&[1], &[1])).unwrap();
        assert_eq!(got, t(&[5], vec![4i8, 32, -128, -16, -1]));
        // 2x2 windows over [[1,2],[3,4]] padded by one at the end of both dims.
        let x = t(&[2, 2], vec![1.0f32, 2., 3., 4.]);
        let got = window(
            &x,
            ReduceKind::Prod,
            &[2, 2],
            &[1, 1],
            &[1, 1],
            (&[0, 0], &[1, 1]),
        );
        assert_eq!(got.unwrap(), t(&[2, 2], vec![24.0f32, 8., 12., 4.]));
    }

    #[test]
    fn window_rejects_bad_params() {
        let x = t(&[4], vec![0.0f32; 4]);
        let msg = invalid_msg(window(
            &x,
            ReduceKind::Sum,
            &[2, 2],
            &[1],
            &[1],
            (&[0], &[0]),
        ));
        assert!(msg.contains("window has 2 entries"), "{msg}");
        assert!(
            invalid_msg(window(&x, ReduceKind::Sum, &[0], &[1], &[1], (&[0], &[0])))
                .contains(">= 1")
        );
        assert!(
            invalid_msg(window(&x, ReduceKind::Sum, &[6], &[1], &[1], (&[0], &[0])))
                .contains("does not fit")
        );
        // Formula 0 is an empty result, not an error: window 5 over 4 with stride 2.
        let got = window(&x, ReduceKind::Sum, &[5], &[2], &[1], (&[0], &[0])).unwrap();
        assert_eq!(got, t(&[0], Vec::<f32>::new()));
        let huge = [usize::MAX];
        assert!(
            invalid_msg(window(&x, ReduceKind::Max, &[1], &[1], &[1], (&huge, &[0])))
                .contains("too large")
        );
    }

    // --- cross-check against the definition -----------------------------------------------

    /// A 1-d window configuration for cross-checking conv and reduce_window against a direct
    /// transcription of op.rs: materialize the dilated, padded input, then slide the window.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        s: usize,
        k: usize,
        stride: usize,
        lo: i64,
        hi: i64,
        ld: usize,
        rd: usize,
    }

    impl Case {
        /// Every case of a small grid, errors included.
        fn grid() -> Vec<Case> {
            let mut cases = Vec::new();
            for s in 0..6 {
                for k in 1..4 {
                    for stride in 1..4 {
                        for lo in -2..3 {
                            for hi in -2..3 {
                                for ld in 1..4 {
                                    for rd in 1..3 {
                                        cases.push(Case {
                                            s,
                                            k,
                                            stride,
                                            lo,
                                            hi,
                                            ld,
                                            rd,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
            cases
        }

        /// `row` (of `s` elements) with `ld - 1` holes between elements and padded by `lo`/`hi`,
        /// `None` marking holes and padding; `None` overall when the padded extent is negative.
        fn padded(&self, row: &[i64]) -> Option<Vec<Option<i64>>> {
            let ld = self.ld as i64;
            let dilated = if self.s == 0 {
                0
            } else {
                (self.s as i64 - 1) * ld + 1
            };
            let len = dilated + self.lo + self.hi;
            (len >= 0).then(|| {
                (0..len)
                    .map(|p| p - self.lo)
                    .map(|q| (q >= 0 && q % ld == 0).then(|| row.get((q / ld) as usize).copied()))
                    .map(Option::flatten)
                    .collect()
            })
        }

        /// The output extent by op.rs's formula, or `None` where it is an error.
        fn out(&self) -> Option<usize> {
            let len = self.padded(&vec![0; self.s])?.len() as i64;
            let span = ((self.k - 1) * self.rd + 1) as i64;
            if self.s == 0 && len < span {
                return Some(0);
            }
            usize::try_from((len - span).div_euclid(self.stride as i64) + 1).ok()
        }

        /// What the window at output `j` reads from a padded row.
        fn window(&self, padded: &[Option<i64>], j: usize) -> Vec<Option<i64>> {
            (0..self.k)
                .map(|kk| padded[j * self.stride + kk * self.rd])
                .collect()
        }
    }

    #[test]
    fn conv_1d_matches_naive_definition() {
        let (n, per_group) = (2, 2); // Batch, and channels in and out per group.
        for case in Case::grid() {
            for groups in 1..3 {
                let c = per_group * groups;
                let x: Vec<i64> = (0..n * c * case.s)
                    .map(|i| (i as i64 * 7) % 11 - 5)
                    .collect();
                let w: Vec<i64> = (0..c * per_group * case.k)
                    .map(|i| (i as i64 * 5) % 7 - 3)
                    .collect();
                let p = P {
                    stride: vec![case.stride],
                    pad_low: vec![case.lo],
                    pad_high: vec![case.hi],
                    lhs_dilation: vec![case.ld],
                    rhs_dilation: vec![case.rd],
                    groups,
                };
                let got = p.run(
                    &t(&[n, c, case.s], x.clone()),
                    &t(&[c, per_group, case.k], w.clone()),
                );
                let Some(out) = case.out() else {
                    assert!(got.is_err(), "{case:?}");
                    continue;
                };
                let mut want = vec![0i64; n * c * out];
                for (i, y) in want.iter_mut().enumerate() {
                    let (ni, oi, j) = (i / (c * out), i / out % c, i % out);
                    for ci in 0..per_group {
                        let ch = oi / per_group * per_group + ci;
                        let row = case.padded(&x[(ni * c + ch) * case.s..][..case.s]).unwrap();
                        let taps = &w[(oi * per_group + ci) * case.k..][..case.k];
                        let read = case.window(&row, j);
                        *y += read
                            .iter()
                            .zip(taps)
                            .map(|(v, w)| v.unwrap_or(0) * w)
                            .sum::<i64>();
                    }
                }
                assert_eq!(
                    got.unwrap(),
                    t(&[n, c, out], want),
                    "{case:?}, groups {groups}"
                );
            }
        }
    }

    #[test]
    fn reduce_window_1d_matches_naive_definition() {
        // The reference reductions over the real elements a window reads.
        fn sum(v: &[i64]) -> i64 {
            v.iter().sum()
        }
        fn max(v: &[i64]) -> i64 {
            v.iter().copied().max().unwrap_or(i64::MIN)
        }
        // reduce_window has no lhs dilation and no negative padding.
        let cases = Case::grid()
            .into_iter()
            .filter(|c| c.ld == 1 && c.lo >= 0 && c.hi >= 0);
        for case in cases {
            let x: Vec<i64> = (0..case.s).map(|i| (i as i64 * 7) % 11 - 5).collect();
            let pads = ([case.lo as usize], [case.hi as usize]);
            for (kind, reference) in [
                (ReduceKind::Sum, sum as fn(&[i64]) -> i64),
                (ReduceKind::Max, max),
            ] {
                let (k, stride, dilation) = ([case.k], [case.stride], [case.rd]);
                let got = window(
                    &t(&[case.s], x.clone()),
                    kind,
                    &k,
                    &stride,
                    &dilation,
                    (&pads.0, &pads.1),
                );
                let Some(out) = case.out() else {
                    assert!(got.is_err(), "{case:?}");
                    continue;
                };
                let row = case.padded(&x).unwrap();
                let want: Vec<i64> = (0..out)
                    .map(|j| {
                        reference(
                            &case
                                .window(&row, j)
                                .into_iter()
                                .flatten()
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect();
                assert_eq!(got.unwrap(), t(&[out], want), "{case:?} {kind:?}");
            }
        }
    }
}
