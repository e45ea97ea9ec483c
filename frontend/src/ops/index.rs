//! Indexing: Gather, GatherElements, GatherND, Scatter, ScatterElements, ScatterND, OneHot,
//! Compress, NonZero, Unique, Resize and Upsample.
//!
//! The core IR has one gather (whole slices along one axis) and one scatter (whole rows along
//! dim 0). The elementwise and N-d forms are linearized: their indices are turned into flat
//! row-major offsets with iota arithmetic (folded to constants where the indices are
//! constants), and the data is reshaped so that those offsets address rows.

use terafab_ir::shape::row_major_strides;
use terafab_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, ScatterMode, Tensor, ValueId};

use super::array::{Outs, check_table, const_i64_tensor, gather_const, iota, to_dim};
use super::*;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("Gather", gather),
    ("GatherElements", gather_elements),
    ("GatherND", gather_nd),
    ("Scatter", scatter_elements),
    ("ScatterElements", scatter_elements),
    ("ScatterND", scatter_nd),
    ("OneHot", one_hot),
    ("Compress", compress),
    ("NonZero", non_zero),
    ("Unique", unique),
    ("Resize", resize),
    ("Upsample", resize),
];

// ---- index arithmetic -----------------------------------------------------------------------

/// Input `i` as i64 indices with negative entries counted from the end of `dim`, which is a
/// scalar or a tensor broadcasting against the indices (one extent per index column).
fn normalized_indices(c: &mut NodeCtx, idx: ValueId, dim: ValueId) -> Result<ValueId, ImportError> {
    let idx = c.convert(idx, DType::I64)?;
    let zero = c.constant(Tensor::scalar(0i64));
    let neg = c.compare(CompareOp::Lt, idx, zero)?;
    let wrapped = c.binary(BinaryOp::Add, idx, dim)?;
    c.select(neg, wrapped, idx)
}

/// Flat row-major offsets into a tensor of shape `data_dims` for elementwise indices `idx`
/// (i64, in range, same rank as the data): each element addresses position `idx` along `axis`
/// and its own position along every other dim.
fn elementwise_offsets(
    c: &mut NodeCtx,
    idx: ValueId,
    data_dims: &[usize],
    axis: usize,
) -> Result<ValueId, ImportError> {
    let idims = c.dims(idx)?;
    if idims.len() != data_dims.len() {
        return Err(c.invalid(format!(
            "indices of rank {} for data of rank {}",
            idims.len(),
            data_dims.len()
        )));
    }
    if idims
        .iter()
        .zip(data_dims)
        .enumerate()
        .any(|(d, (i, n))| d != axis && i > n)
    {
        return Err(c.invalid(format!(
            "indices of shape {idims:?} do not fit data of shape {data_dims:?}"
        )));
    }
    let strides = row_major_strides(data_dims);
    let s = c.constant(Tensor::scalar(strides[axis] as i64));
    let mut acc = c.binary(BinaryOp::Mul, idx, s)?;
    // The other dims' contribution is a constant (iota arithmetic is folded).
    let mut rest: Option<ValueId> = None;
    for d in (0..idims.len()).filter(|&d| d != axis && idims[d] > 1) {
        let i = iota(c, &idims, d)?;
        let s = c.constant(Tensor::scalar(strides[d] as i64));
        let t = c.binary(BinaryOp::Mul, i, s)?;
        rest = Some(match rest {
            Some(r) => c.binary(BinaryOp::Add, r, t)?,
            None => t,
        });
    }
    if let Some(r) = rest {
        acc = c.binary(BinaryOp::Add, acc, r)?;
    }
    Ok(acc)
}

/// GatherElements with in-range i64 indices: `out[p] = x[p with p[axis] = idx[p]]`, as a
/// gather of flat offsets from the flattened data.
pub(crate) fn gather_elements_static(
    c: &mut NodeCtx,
    x: ValueId,
    idx: ValueId,
    axis: usize,
) -> Result<ValueId, ImportError> {
    let dims = c.dims(x)?;
    let off = elementwise_offsets(c, idx, &dims, axis)?;
    let n: usize = dims.iter().product();
    let flat = c.reshape(x, &[n])?;
    c.op(Op::Gather { axis: 0 }, &[flat, off])
}

/// N-d offsets: the last dim of `idx` (length `k`) holds coordinates into the leading `k` dims
/// of `dims`; returns their flat row-major offset over those dims (negative coordinates count
/// from the end). Result shape: `idx`'s dims without the last.
fn nd_offsets(c: &mut NodeCtx, idx: ValueId, dims: &[usize]) -> Result<ValueId, ImportError> {
    let idims = c.dims(idx)?;
    let (&k, lead) = idims
        .split_last()
        .ok_or_else(|| c.invalid("indices must have rank >= 1"))?;
    if k > dims.len() {
        return Err(c.invalid(format!(
            "index tuples of length {k} for {} dims",
            dims.len()
        )));
    }
    let extents: Vec<i64> = dims[..k].iter().map(|&d| d as i64).collect();
    let strides: Vec<i64> = row_major_strides(&dims[..k])
        .iter()
        .map(|&s| s as i64)
        .collect();
    let ext = c.const_i64s(&extents)?;
    let idx = normalized_indices(c, idx, ext)?;
    let st = c.const_i64s(&strides)?;
    let scaled = c.binary(BinaryOp::Mul, idx, st)?;
    let off = c.reduce(ReduceKind::Sum, scaled, &[lead.len()], false)?;
    c.reshape(off, lead)
}

// ---- gathers --------------------------------------------------------------------------------

/// Gather: the core op (negative indices count from the end).
fn gather(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let idx = c.input(1)?;
    let axis = c.axis(c.attr_int_or("axis", 0)?, c.rank(x))?;
    Ok(vec![c.op(Op::Gather { axis }, &[x, idx])?])
}

/// GatherElements along `axis`.
fn gather_elements(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axis = c.axis(c.attr_int_or("axis", 0)?, dims.len())?;
    let idx = c.input(1)?;
    let n = c.constant(Tensor::scalar(dims[axis] as i64));
    let idx = normalized_indices(c, idx, n)?;
    Ok(vec![gather_elements_static(c, x, idx, axis)?])
}

/// GatherND with `batch_dims` leading batch dims shared by data and indices: the data is
/// reshaped to `[batch * prod(dims[b..b+k]), rest...]` and gathered by flat row offsets.
fn gather_nd(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let idx = c.input(1)?;
    let dims = c.dims(x)?;
    let idims = c.dims(idx)?;
    let b = to_dim(c, c.attr_int_or("batch_dims", 0)?, "batch_dims")?;
    let k = *idims
        .last()
        .ok_or_else(|| c.invalid("indices must have rank >= 1"))?;
    if b >= idims.len() || b + k > dims.len() || dims[..b] != idims[..b] {
        return Err(c.invalid(format!(
            "indices {idims:?} with batch_dims {b} do not fit data {dims:?}"
        )));
    }
    let off = nd_offsets(c, idx, &dims[b..])?;
    let rows: usize = dims[b..b + k].iter().product();
    // Add each batch entry's base row: its flat batch position times `rows`.
    let odims = c.dims(off)?;
    let bstrides = row_major_strides(&dims[..b]);
    let mut off = off;
    for (d, &s) in bstrides.iter().enumerate() {
        let i = iota(c, &odims, d)?;
        let s = c.constant(Tensor::scalar((s * rows) as i64));
        let t = c.binary(BinaryOp::Mul, i, s)?;
        off = c.binary(BinaryOp::Add, off, t)?;
    }
    let batch: usize = dims[..b].iter().product();
    let rest = &dims[b + k..];
    let flat = c.reshape(x, &[[batch * rows].as_slice(), rest].concat())?;
    Ok(vec![c.op(Op::Gather { axis: 0 }, &[flat, off])?])
}

// ---- scatters -------------------------------------------------------------------------------

/// The `reduction` attribute of ScatterElements/ScatterND.
fn scatter_mode(c: &NodeCtx) -> Result<ScatterMode, ImportError> {
    Ok(match c.attr_string_or("reduction", "none")?.as_str() {
        "none" => ScatterMode::Replace,
        "add" => ScatterMode::Add,
        "mul" => ScatterMode::Mul,
        "max" => ScatterMode::Max,
        "min" => ScatterMode::Min,
        m => return Err(c.unsupported(format!("reduction `{m}` is not supported"))),
    })
}

/// ScatterElements (and the deprecated Scatter): the data is flattened to a vector and every
/// update becomes a one-element row at its flat offset.
fn scatter_elements(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axis = c.axis(c.attr_int_or("axis", 0)?, dims.len())?;
    let mode = scatter_mode(c)?;
    let idx = c.input(1)?;
    let upd = c.input(2)?;
    let udims = c.dims(upd)?;
    if c.dims(idx)? != udims {
        return Err(c.invalid("indices and updates must have the same shape"));
    }
    let n = c.constant(Tensor::scalar(dims[axis] as i64));
    let idx = normalized_indices(c, idx, n)?;
    let off = elementwise_offsets(c, idx, &dims, axis)?;
    let m: usize = udims.iter().product();
    let off = c.reshape(off, &[m])?;
    let upd = c.reshape(upd, &[m])?;
    let total: usize = dims.iter().product();
    let flat = c.reshape(x, &[total])?;
    let y = c.op(Op::Scatter { mode }, &[flat, off, upd])?;
    Ok(vec![c.reshape(y, &dims)?])
}

/// ScatterND: index tuples of length `k` address slices `x[i0, .., ik-1, ...]`; the data is
/// reshaped to `[prod(dims[..k]), rest...]` so that each tuple is one row.
fn scatter_nd(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let mode = scatter_mode(c)?;
    let idx = c.input(1)?;
    let upd = c.input(2)?;
    let off = nd_offsets(c, idx, &dims)?;
    let lead = c.dims(off)?;
    let k = c.dims(idx)?.last().copied().unwrap_or(0);
    let rest = &dims[k..];
    if c.dims(upd)? != [lead.as_slice(), rest].concat() {
        return Err(c.invalid("updates must have shape indices.shape[:-1] + data.shape[k:]"));
    }
    let m: usize = lead.iter().product();
    let rows: usize = dims[..k].iter().product();
    let off = c.reshape(off, &[m])?;
    let upd = c.reshape(upd, &[[m].as_slice(), rest].concat())?;
    let flat = c.reshape(x, &[[rows].as_slice(), rest].concat())?;
    let y = c.op(Op::Scatter { mode }, &[flat, off, upd])?;
    Ok(vec![c.reshape(y, &dims)?])
}

// ---- one-hot, compress, non-zero ------------------------------------------------------------

/// OneHot: a new axis of extent `depth` (constant) holding `values[1]` where it equals the
/// index (negative indices count from the end) and `values[0]` elsewhere.
fn one_hot(c: &mut NodeCtx) -> Outs {
    let idx = c.input(0)?;
    let idims = c.dims(idx)?;
    let axis = c.axis(c.attr_int_or("axis", -1)?, idims.len() + 1)?;
    let depth = c
        .const_floats(1)?
        .ok_or_else(|| c.invalid("depth (input 1) is required"))?;
    let depth = match depth.as_slice() {
        [d] if d.is_finite() && *d >= 0.0 => *d as usize,
        _ => {
            return Err(c.invalid(format!(
                "depth must be one non-negative number, got {depth:?}"
            )));
        }
    };
    let values = c.input(2)?;
    if c.dims(values)? != [2] {
        return Err(c.invalid("values must have shape [2]"));
    }
    let idx = if c.dtype(idx).is_float() {
        // Fractional indices are truncated toward zero, as by a cast to int64.
        c.convert(idx, DType::I64)?
    } else {
        idx
    };
    let d = c.constant(Tensor::scalar(depth as i64));
    let idx = normalized_indices(c, idx, d)?;
    let mut edims = idims.clone();
    edims.insert(axis, 1);
    let idx = c.reshape(idx, &edims)?;
    let mut pdims = vec![1; edims.len()];
    pdims[axis] = depth;
    let pos = iota(c, &pdims, axis)?;
    let hot = c.compare(CompareOp::Eq, idx, pos)?;
    let off = c.slice_axis(values, 0, 0, 1)?;
    let off = c.reshape(off, &[])?;
    let on = c.slice_axis(values, 0, 1, 2)?;
    let on = c.reshape(on, &[])?;
    Ok(vec![c.select(hot, on, off)?])
}

/// Compress with a constant condition: a gather of the selected positions along `axis` (or of
/// the flattened input without one). A run-time condition gives a data-dependent shape.
fn compress(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let axis = c.attr_int("axis")?;
    let cond = c.const_input(1)?.ok_or_else(|| {
        c.unsupported("Compress with a run-time condition has a data-dependent shape")
    })?;
    let (x, axis) = match axis {
        Some(a) => (x, c.axis(a, dims.len())?),
        None => {
            let n: usize = dims.iter().product();
            (c.reshape(x, &[n])?, 0)
        }
    };
    let n = c.dims(x)?[axis];
    let keep: Vec<i64> = cond
        .to_f64_vec()
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(i, _)| i as i64)
        .collect();
    if keep.last().is_some_and(|&i| i as usize >= n) {
        return Err(c.invalid(format!("the condition selects past the end of dim {n}")));
    }
    Ok(vec![gather_const(c, x, axis, &keep)?])
}

/// NonZero of a constant: the `[rank, count]` i64 coordinates of the non-zero elements, in
/// row-major order. A run-time input gives a data-dependent shape.
fn non_zero(c: &mut NodeCtx) -> Outs {
    let t = c
        .const_input(0)?
        .ok_or_else(|| c.unsupported("NonZero of a run-time tensor has a data-dependent shape"))?;
    let dims: Vec<usize> = if t.rank() == 0 {
        vec![1]
    } else {
        t.shape().to_vec()
    };
    let strides = row_major_strides(&dims);
    let hits: Vec<usize> = t
        .to_f64_vec()
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != 0.0)
        .map(|(i, _)| i)
        .collect();
    let mut out = Vec::with_capacity(dims.len() * hits.len());
    for (d, &s) in strides.iter().enumerate() {
        out.extend(hits.iter().map(|&i| ((i / s) % dims[d]) as i64));
    }
    Ok(vec![const_i64_tensor(c, &[dims.len(), hits.len()], out)?])
}

// ---- unique ---------------------------------------------------------------------------------

/// Unique of a constant (along `axis`, or of the flattened input): the unique slices (sorted
/// ascending, or in order of first occurrence with `sorted = 0`), the index of each one's first
/// occurrence, the inverse indices and the counts. A run-time input gives a data-dependent shape.
fn unique(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let sorted = c.attr_int_or("sorted", 1)? != 0;
    let axis = c.attr_int("axis")?;
    let t = c
        .const_value(x)
        .cloned()
        .ok_or_else(|| c.unsupported("Unique of a run-time tensor has a data-dependent shape"))?;
    let (x, dims, axis) = match axis {
        Some(a) => (x, t.shape().to_vec(), c.axis(a, t.rank())?),
        None => {
            let n = t.len();
            (c.reshape(x, &[n])?, vec![n], 0)
        }
    };
    // Slice `i` along `axis` is the elements `(o * n + i) * inner + k` for every outer `o` and
    // inner `k`; slices compare lexicographically (integers exactly, floats by value).
    let n = dims[axis];
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let ints = t.to_i64_vec();
    let floats = t.to_f64_vec();
    let elem = |i: usize, j: usize| (j / inner * n + i) * inner + j % inner;
    let cmp = |a: usize, b: usize| -> std::cmp::Ordering {
        (0..outer * inner)
            .map(|j| match &ints {
                Some(v) => v[elem(a, j)].cmp(&v[elem(b, j)]),
                None => floats[elem(a, j)].total_cmp(&floats[elem(b, j)]),
            })
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    // First occurrences in order, then (optionally) sorted by value.
    let mut firsts: Vec<usize> = Vec::new();
    let mut inverse_first = Vec::with_capacity(n);
    for i in 0..n {
        match firsts.iter().position(|&f| cmp(f, i).is_eq()) {
            Some(u) => inverse_first.push(u),
            None => {
                inverse_first.push(firsts.len());
                firsts.push(i);
            }
        }
    }
    let mut order: Vec<usize> = (0..firsts.len()).collect();
    if sorted {
        order.sort_by(|&a, &b| cmp(firsts[a], firsts[b]));
    }
    let mut rank = vec![0; order.len()];
    for (r, &u) in order.iter().enumerate() {
        rank[u] = r;
    }
    let idx: Vec<i64> = order.iter().map(|&u| firsts[u] as i64).collect();
    let inverse: Vec<i64> = inverse_first.iter().map(|&u| rank[u] as i64).collect();
    let mut counts = vec![0i64; order.len()];
    for &r in &inverse {
        counts[r as usize] += 1;
    }
    let y = gather_const(c, x, axis, &idx)?;
    let idx = c.const_i64s(&idx)?;
    let inverse = c.const_i64s(&inverse)?;
    let counts = c.const_i64s(&counts)?;
    Ok(vec![y, idx, inverse, counts])
}

// ---- resize ---------------------------------------------------------------------------------

/// The interpolation of Resize/Upsample.
#[derive(Clone, Copy, PartialEq)]
enum Interp {
    Nearest,
    Linear,
    Cubic,
}

/// Everything that fixes the sampling along one axis, besides its extents and scale.
struct ResizeParams {
    interp: Interp,
    /// `coordinate_transformation_mode`.
    ctm: String,
    /// `nearest_mode`, or `simple` (Resize 10: floor when upsampling, ceil when downsampling).
    nearest: String,
    cubic_a: f64,
    exclude_outside: bool,
    antialias: bool,
}

/// The sampling of one axis: `taps` source indices (clamped) and weights per output position,
/// and which positions are extrapolated (tf_crop_and_resize outside the input).
struct AxisPlan {
    taps: usize,
    idx: Vec<i64>,
    weights: Vec<f64>,
    extrapolated: Vec<bool>,
}

impl ResizeParams {
    /// The source coordinate of output position `y` (ONNX's coordinate transformation).
    fn source(
        &self,
        y: f64,
        scale: f64,
        in_w: usize,
        out_w: usize,
        roi: (f64, f64),
    ) -> Result<f64, String> {
        let (inf, outf) = (in_w as f64, scale * in_w as f64);
        Ok(match self.ctm.as_str() {
            "align_corners" if outf == 1.0 => 0.0,
            "align_corners" => y * (inf - 1.0) / (outf - 1.0),
            "asymmetric" => y / scale,
            "tf_crop_and_resize" => {
                let span = (roi.1 - roi.0) * (inf - 1.0);
                let x = if outf == 1.0 {
                    span / 2.0
                } else {
                    y * span / (outf - 1.0)
                };
                x + roi.0 * (inf - 1.0)
            }
            "pytorch_half_pixel" if outf == 1.0 => -0.5,
            "pytorch_half_pixel" | "half_pixel" => (y + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let offset = inf / 2.0 * (1.0 - out_w as f64 / outf);
                offset + (y + 0.5) / scale - 0.5
            }
            m => {
                return Err(format!(
                    "coordinate_transformation_mode `{m}` is not supported"
                ));
            }
        })
    }

    /// The interpolation weights for a source coordinate with fractional part `ratio`
    /// (in `(0, 1]`; 1 for an integer coordinate).
    fn coeffs(&self, ratio: f64, scale: f64) -> Result<Vec<f64>, String> {
        let a = self.cubic_a;
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        Ok(match self.interp {
            Interp::Nearest if ratio == 1.0 => vec![0.0, 1.0],
            Interp::Nearest => match self.nearest.as_str() {
                "round_prefer_floor" => vec![b(ratio <= 0.5), b(ratio > 0.5)],
                "round_prefer_ceil" => vec![b(ratio < 0.5), b(ratio >= 0.5)],
                "floor" => vec![1.0, 0.0],
                "ceil" => vec![0.0, 1.0],
                "simple" => vec![b(scale >= 1.0), b(scale < 1.0)],
                m => return Err(format!("nearest_mode `{m}` is not supported")),
            },
            _ if self.antialias && scale < 1e-6 => {
                return Err(format!("antialiasing at scale {scale} is not supported"));
            }
            Interp::Linear if self.antialias => {
                let s = scale.min(1.0);
                let start = (-1.0 / s).floor() as i64 + 1;
                let w: Vec<f64> = (start..2 - start)
                    .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                    .collect();
                normalized(w)
            }
            Interp::Linear => vec![1.0 - ratio, ratio],
            Interp::Cubic if self.antialias => {
                let s = scale.min(1.0);
                let start = (-2.0 / s).floor() as i64 + 1;
                let w: Vec<f64> = (start..2 - start)
                    .map(|i| cubic_kernel(s * (i as f64 - ratio), a))
                    .collect();
                normalized(w)
            }
            Interp::Cubic => [ratio + 1.0, ratio, 1.0 - ratio, 2.0 - ratio]
                .iter()
                .map(|&x| cubic_kernel(x, a))
                .collect(),
        })
    }

    /// The sampling plan of an axis from `in_w` to `out_w` positions at `scale`.
    fn plan(
        &self,
        in_w: usize,
        out_w: usize,
        scale: f64,
        roi: (f64, f64),
    ) -> Result<AxisPlan, String> {
        let mut plan = AxisPlan {
            taps: 0,
            idx: Vec::new(),
            weights: Vec::new(),
            extrapolated: Vec::new(),
        };
        let last = in_w as i64 - 1;
        for y in 0..out_w {
            let x = self.source(y as f64, scale, in_w, out_w, roi)?;
            if !x.is_finite() {
                return Err(format!("source coordinate {x} for output {y}"));
            }
            plan.extrapolated
                .push(self.ctm == "tf_crop_and_resize" && (x < 0.0 || x > last as f64));
            let ratio = if x == x.floor() { 1.0 } else { x - x.floor() };
            let mut w = self.coeffs(ratio, scale)?;
            let n = w.len() as i64;
            plan.taps = w.len();
            // The `n` nearest positions around `x` (ties to the lower ones).
            let pad = (n + 1) / 2;
            let xp = x + pad as f64;
            let p = xp.floor();
            let frac = xp - p;
            let off = if n % 2 == 0 {
                if frac == 0.0 { -(n / 2) } else { -(n / 2) + 1 }
            } else if frac <= 0.5 {
                -((n - 1) / 2)
            } else {
                -((n - 1) / 2) + 1
            };
            let first = p as i64 + off - pad;
            if self.exclude_outside {
                for (j, wj) in w.iter_mut().enumerate() {
                    let i = first + j as i64;
                    if i < 0 || i > last {
                        *wj = 0.0;
                    }
                }
                let s: f64 = w.iter().sum();
                if s != 0.0 {
                    w.iter_mut().for_each(|v| *v /= s);
                }
            }
            plan.idx
                .extend((0..n).map(|j| (first + j).clamp(0, last.max(0))));
            plan.weights.extend(w);
            if plan.idx.len() > super::array::MAX_TABLE {
                return Err(format!(
                    "a resize plan of over {} taps is too large",
                    plan.idx.len()
                ));
            }
        }
        Ok(plan)
    }
}

/// `w / sum(w)`.
fn normalized(w: Vec<f64>) -> Vec<f64> {
    let s: f64 = w.iter().sum();
    w.into_iter().map(|v| v / s).collect()
}

/// The cubic convolution kernel with parameter `a` at distance `x`.
fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Resample `x` along `axis` by `plan`: nearest is a gather of one index per output position;
/// linear and cubic gather `taps` positions and sum them weighted (in `x`'s float type).
/// Extrapolated positions take `extrapolation`.
fn resample_axis(
    c: &mut NodeCtx,
    x: ValueId,
    axis: usize,
    plan: &AxisPlan,
    nearest: bool,
    extrapolation: f64,
) -> Result<ValueId, ImportError> {
    let dims = c.dims(x)?;
    let out = plan.extrapolated.len();
    let taps = plan.taps.max(1);
    let y = if nearest {
        // The weights are 0/1; take the tap with weight 1.
        let idx: Vec<i64> = (0..out)
            .map(|o| {
                let w = &plan.weights[o * taps..(o + 1) * taps];
                let j = w.iter().position(|&v| v > 0.5).unwrap_or(0);
                plan.idx[o * taps + j]
            })
            .collect();
        gather_const(c, x, axis, &idx)?
    } else {
        let idx = const_i64_tensor(c, &[out, taps], plan.idx.clone())?;
        let g = c.op(Op::Gather { axis }, &[x, idx])?;
        let mut wdims = vec![out, taps];
        wdims.extend(std::iter::repeat_n(1, dims.len() - axis - 1));
        let w = Tensor::from_fn(c.dtype(x), &wdims, |i| plan.weights[i])
            .map_err(|e| c.invalid(e.to_string()))?;
        let w = c.constant(w);
        let p = c.binary(BinaryOp::Mul, g, w)?;
        c.reduce(ReduceKind::Sum, p, &[axis + 1], false)?
    };
    if !plan.extrapolated.iter().any(|&e| e) {
        return Ok(y);
    }
    let mut mdims = vec![out];
    mdims.extend(std::iter::repeat_n(1, dims.len() - axis - 1));
    let mask =
        Tensor::from_vec(mdims, plan.extrapolated.clone()).map_err(|e| c.invalid(e.to_string()))?;
    let mask = c.constant(mask);
    let v = c.scalar(extrapolation, c.dtype(y))?;
    c.select(mask, v, y)
}

/// Resize (opset 10+) and Upsample (opsets 7-9): separable resampling, one axis at a time.
/// Output sizes and scales come from the constant `scales` or `sizes` inputs (with `axes` and
/// `keep_aspect_ratio_policy`); each resized axis becomes a gather of constant indices, with a
/// weighted sum of constant weights for linear and cubic modes. Integer inputs are interpolated
/// in f64 and rounded back.
fn resize(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let r = dims.len();
    let upsample = c.node.op_type == "Upsample";
    let legacy = upsample || c.opset < 11;
    let interp = match c.attr_string_or("mode", "nearest")?.as_str() {
        "nearest" => Interp::Nearest,
        "linear" | "bilinear" => Interp::Linear,
        "cubic" if !upsample => Interp::Cubic,
        m => return Err(c.unsupported(format!("mode `{m}` is not supported"))),
    };
    let params = ResizeParams {
        interp,
        ctm: c.attr_string_or(
            "coordinate_transformation_mode",
            if legacy { "asymmetric" } else { "half_pixel" },
        )?,
        nearest: c.attr_string_or(
            "nearest_mode",
            match (upsample, legacy) {
                (true, _) => "floor",
                (false, true) => "simple",
                _ => "round_prefer_floor",
            },
        )?,
        cubic_a: c.attr_float_or("cubic_coeff_a", -0.75)? as f64,
        exclude_outside: c.attr_int_or("exclude_outside", 0)? != 0,
        antialias: c.attr_int_or("antialias", 0)? != 0,
    };
    let extrapolation = c.attr_float_or("extrapolation_value", 0.0)? as f64;
    let policy = c.attr_string_or("keep_aspect_ratio_policy", "stretch")?;
    let axes = match c.attr_ints("axes")? {
        Some(a) => super::array::norm_axes(c, &a, r)?,
        None => (0..r).collect(),
    };
    // Inputs: Upsample 7 has a `scales` attribute; Upsample 9 and Resize 10 take (X, scales);
    // Resize 11+ takes (X, roi, scales, sizes), with empty tensors meaning absent.
    let (roi, scales, sizes) = if upsample && c.opset < 9 {
        let s = c
            .attr_floats("scales")?
            .map(|v| v.iter().map(|&f| f as f64).collect());
        (None, s, None)
    } else if legacy {
        (None, c.const_floats(1)?, None)
    } else {
        (c.const_floats(1)?, c.const_floats(2)?, c.const_ints(3)?)
    };
    let roi = roi.filter(|v| !v.is_empty());
    let scales = scales.filter(|v| !v.is_empty());
    let sizes = sizes.filter(|v| !v.is_empty());
    let n = axes.len();
    // Per dim: output extent and scale.
    let mut out = dims.clone();
    let mut scale = vec![1.0f64; r];
    match (scales, sizes) {
        (Some(s), None) => {
            if s.len() != n {
                return Err(c.invalid(format!("{} scales for {n} axes", s.len())));
            }
            for (&a, &v) in axes.iter().zip(&s) {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(c.invalid(format!("scale {v} must be positive")));
                }
                scale[a] = v;
                out[a] = (v * dims[a] as f64) as usize;
            }
        }
        (None, Some(s)) => {
            if s.len() != n {
                return Err(c.invalid(format!("{} sizes for {n} axes", s.len())));
            }
            let s: Vec<usize> = s
                .iter()
                .map(|&v| to_dim(c, v, "a size"))
                .collect::<Result<_, _>>()?;
            let ratios: Vec<f64> = axes
                .iter()
                .zip(&s)
                .map(|(&a, &v)| v as f64 / dims[a] as f64)
                .collect();
            let common = match policy.as_str() {
                "stretch" => None,
                "not_larger" => ratios.iter().copied().reduce(f64::min),
                "not_smaller" => ratios.iter().copied().reduce(f64::max),
                p => return Err(c.invalid(format!("keep_aspect_ratio_policy `{p}`"))),
            };
            for (i, &a) in axes.iter().enumerate() {
                match common {
                    Some(k) => {
                        scale[a] = k;
                        out[a] = (k * dims[a] as f64 + 0.5) as usize;
                    }
                    None => {
                        scale[a] = ratios[i];
                        out[a] = s[i];
                    }
                }
            }
        }
        _ => return Err(c.invalid("exactly one of scales and sizes must be given")),
    }
    // Region of interest per dim (tf_crop_and_resize), `[starts..., ends...]` over `axes`.
    let mut rois = vec![(0.0, 1.0); r];
    if let Some(v) = &roi {
        if v.len() != 2 * n {
            return Err(c.invalid(format!("roi of {} values for {n} axes", v.len())));
        }
        for (i, &a) in axes.iter().enumerate() {
            rois[a] = (v[i], v[n + i]);
        }
    }
    let dt = c.dtype(x);
    let nearest = interp == Interp::Nearest;
    // Linear and cubic interpolate in a float type: f64 for integers (rounded back at the end).
    let work = if nearest || dt.is_float() {
        dt
    } else {
        DType::F64
    };
    let mut y = c.convert(x, work)?;
    for &a in &axes {
        let trivial_roi = params.ctm != "tf_crop_and_resize" || rois[a] == (0.0, 1.0);
        if (scale[a] - 1.0).abs() < 1e-9 && out[a] == dims[a] && trivial_roi {
            continue;
        }
        if dims[a] == 0 && out[a] > 0 {
            return Err(c.invalid(format!("cannot resize the empty dim {a}")));
        }
        check_table(c, out[a].saturating_mul(8))?;
        let plan = params
            .plan(dims[a], out[a], scale[a], rois[a])
            .map_err(|e| c.unsupported(e))?;
        y = resample_axis(c, y, a, &plan, nearest, extrapolation)?;
    }
    if work != dt {
        y = c.unary(terafab_ir::UnaryOp::Round, y)?;
        y = c.convert(y, dt)?;
    }
    Ok(vec![y])
}
