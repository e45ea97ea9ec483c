//! Convolution, pooling, normalization and dropout.
//!
//! Convolutions map onto the core `conv` (transposed convolutions through its `lhs_dilation`
//! and a flipped, channel-swapped kernel), pools onto `reduce_window` (ceil mode through extra
//! high padding that never counts as padding), and normalizations onto reductions and
//! elementwise arithmetic, computed in f32 for f16/bf16/float8 inputs (or in the `stash_type`).

use terafab_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, Tensor, UnaryOp, ValueId};

use super::*;
use crate::onnx::tensor::dtype_of;

type Res<T> = Result<T, ImportError>;
type Outs = Res<Vec<ValueId>>;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("Conv", conv),
    ("ConvInteger", conv_integer),
    ("ConvTranspose", conv_transpose),
    ("QLinearConv", qlinear_conv),
    ("MaxUnpool", max_unpool),
    ("AveragePool", |c| pool(c, PoolKind::Avg)),
    ("MaxPool", |c| pool(c, PoolKind::Max)),
    ("LpPool", |c| pool(c, PoolKind::Lp)),
    ("GlobalAveragePool", |c| global_pool(c, PoolKind::Avg)),
    ("GlobalMaxPool", |c| global_pool(c, PoolKind::Max)),
    ("GlobalLpPool", |c| global_pool(c, PoolKind::Lp)),
    ("BatchNormalization", batch_norm),
    ("InstanceNormalization", instance_norm),
    ("LayerNormalization", layer_norm),
    ("GroupNormalization", group_norm),
    ("RMSNormalization", rms_norm),
    ("LRN", lrn),
    ("LpNormalization", lp_norm),
    ("MeanVarianceNormalization", mvn),
    ("Dropout", dropout),
];

// ---- window geometry ------------------------------------------------------------------------

/// The window of a convolution or pool over the spatial dims (one entry per spatial dim).
struct Window {
    stride: Vec<usize>,
    dilation: Vec<usize>,
    pad_low: Vec<usize>,
    pad_high: Vec<usize>,
    /// High padding added only so that ceil-mode windows fit; it never counts as padding.
    extra_high: Vec<usize>,
}

/// The largest stride, dilation, kernel size or padding accepted (keeps window arithmetic far
/// from overflow).
const MAX_EXTENT: usize = 1 << 31;

/// An optional attribute of `n` positive integers (strides, dilations, kernel_shape), or `None`.
fn positive_ints(c: &NodeCtx, name: &str, n: usize) -> Res<Option<Vec<usize>>> {
    bounded_ints(c, name, n, 1)
}

/// An optional attribute of `n` non-negative integers, defaulting to zeros.
fn non_negative_ints(c: &NodeCtx, name: &str, n: usize) -> Res<Vec<usize>> {
    Ok(bounded_ints(c, name, n, 0)?.unwrap_or_else(|| vec![0; n]))
}

/// An optional attribute of `n` integers in `min..=MAX_EXTENT`, or `None` when absent.
fn bounded_ints(c: &NodeCtx, name: &str, n: usize, min: usize) -> Res<Option<Vec<usize>>> {
    let Some(v) = c.attr_ints(name)? else {
        return Ok(None);
    };
    if v.len() != n {
        return Err(c.invalid(format!("`{name}` has {} entries, expected {n}", v.len())));
    }
    v.iter()
        .map(|&x| {
            usize::try_from(x)
                .ok()
                .filter(|&x| (min..=MAX_EXTENT).contains(&x))
                .ok_or_else(|| {
                    c.invalid(format!(
                        "`{name}` must be between {min} and 2^31, found {x}"
                    ))
                })
        })
        .collect::<Res<Vec<_>>>()
        .map(Some)
}

/// The extent of a dilated kernel: `(k - 1) * d + 1`.
fn dilated(c: &NodeCtx, k: usize, d: usize) -> Res<usize> {
    k.checked_sub(1)
        .and_then(|k| k.checked_mul(d))
        .and_then(|k| k.checked_add(1))
        .ok_or_else(|| c.invalid(format!("kernel size {k} with dilation {d} is invalid")))
}

/// Read `auto_pad`, `strides`, `dilations`, `pads` (and apply `ceil_mode`) for a window of
/// `kernel` over `input` (the spatial dims).
fn read_window(c: &NodeCtx, input: &[usize], kernel: &[usize], ceil_mode: bool) -> Res<Window> {
    let ns = input.len();
    let auto_pad = c.attr_string_or("auto_pad", "NOTSET")?;
    let stride = positive_ints(c, "strides", ns)?.unwrap_or_else(|| vec![1; ns]);
    let dilation = positive_ints(c, "dilations", ns)?.unwrap_or_else(|| vec![1; ns]);
    let pads = non_negative_ints(c, "pads", 2 * ns)?;
    let mut w = Window {
        pad_low: vec![0; ns],
        pad_high: vec![0; ns],
        extra_high: vec![0; ns],
        stride,
        dilation,
    };
    let same = match auto_pad.as_str() {
        "NOTSET" => {
            w.pad_low.copy_from_slice(&pads[..ns]);
            w.pad_high.copy_from_slice(&pads[ns..]);
            None
        }
        "VALID" => None,
        "SAME_UPPER" => Some(true),
        "SAME_LOWER" => Some(false),
        other => return Err(c.invalid(format!("unknown auto_pad `{other}`"))),
    };
    for d in 0..ns {
        let eff = dilated(c, kernel[d], w.dilation[d])?;
        if let Some(upper) = same {
            // Output ceil(in / stride); the total padding splits evenly, the odd one out at
            // the end (SAME_UPPER) or at the beginning (SAME_LOWER).
            let out = input[d].div_ceil(w.stride[d]);
            let total = (out.saturating_sub(1) * w.stride[d] + eff).saturating_sub(input[d]);
            let half = total / 2;
            (w.pad_low[d], w.pad_high[d]) = if upper {
                (half, total - half)
            } else {
                (total - half, half)
            };
        } else if ceil_mode {
            let span = input[d] + w.pad_low[d] + w.pad_high[d];
            if span < eff {
                return Err(c.invalid(format!(
                    "spatial dim {d}: the window ({eff}) is larger than the padded input ({span})"
                )));
            }
            let mut out = (span - eff).div_ceil(w.stride[d]) + 1;
            // The last window must start inside the input or its low padding.
            if (out - 1) * w.stride[d] >= input[d] + w.pad_low[d] {
                out -= 1;
            }
            w.extra_high[d] = ((out - 1) * w.stride[d] + eff).saturating_sub(span);
        }
    }
    Ok(w)
}

/// `v` for the spatial dims, with `lead` for the batch and channel dims in front.
fn with_lead(lead: usize, v: &[usize]) -> Vec<usize> {
    [lead, lead].iter().chain(v).copied().collect()
}

fn to_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Check `x` `[N, C, s...]` and a kernel `w` `[_, _, k...]` of the same rank >= 3, and an
/// optional `kernel_shape` attribute that must agree with `w`. Returns both dims.
fn conv_operands(c: &NodeCtx, x: ValueId, w: ValueId) -> Res<(Vec<usize>, Vec<usize>)> {
    let (xd, wd) = (c.dims(x)?, c.dims(w)?);
    if xd.len() < 3 || wd.len() != xd.len() {
        return Err(c.invalid(format!(
            "needs X [N, C, spatial...] and W of the same rank >= 3, found {xd:?} and {wd:?}"
        )));
    }
    if let Some(k) = positive_ints(c, "kernel_shape", xd.len() - 2)?
        && k[..] != wd[2..]
    {
        return Err(c.invalid(format!(
            "kernel_shape {k:?} does not match W's spatial dims {:?}",
            &wd[2..]
        )));
    }
    Ok((xd, wd))
}

/// The `group` attribute (positive).
fn read_group(c: &NodeCtx) -> Res<usize> {
    let g = c.attr_int_or("group", 1)?;
    usize::try_from(g)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| c.invalid(format!("group must be positive, found {g}")))
}

/// Add a per-channel bias `b` (`[C]`) to `y` (`[N, C, ...]`).
fn add_channel_bias(c: &mut NodeCtx, y: ValueId, b: Option<ValueId>) -> Res<ValueId> {
    let Some(b) = b else { return Ok(y) };
    let b = per_channel(c, b, c.rank(y))?;
    let b = c.convert(b, c.dtype(y))?;
    c.binary(BinaryOp::Add, y, b)
}

/// A per-channel vector `v` (`[C]`) reshaped to `[C, 1, ...]` so that it broadcasts along
/// dim 1 of a tensor of rank `rank`.
fn per_channel(c: &mut NodeCtx, v: ValueId, rank: usize) -> Res<ValueId> {
    let n = c.dims(v)?.iter().product::<usize>();
    let mut dims = vec![1; rank.saturating_sub(1)];
    if let Some(first) = dims.first_mut() {
        *first = n;
    }
    c.reshape(v, &dims)
}

// ---- convolutions ---------------------------------------------------------------------------

/// The core conv of `x` and `w` with the node's window attributes (no bias).
fn plain_conv(c: &mut NodeCtx, x: ValueId, w: ValueId) -> Res<ValueId> {
    let (xd, wd) = conv_operands(c, x, w)?;
    let groups = read_group(c)?;
    let win = read_window(c, &xd[2..], &wd[2..], false)?;
    let ns = xd.len() - 2;
    c.op(
        Op::Conv {
            stride: win.stride,
            pad_low: to_i64(&win.pad_low),
            pad_high: to_i64(&win.pad_high),
            lhs_dilation: vec![1; ns],
            rhs_dilation: win.dilation,
            groups,
        },
        &[x, w],
    )
}

/// Conv: `conv(X, W) + B`.
fn conv(c: &mut NodeCtx) -> Outs {
    let (x, w) = (c.input(0)?, c.input(1)?);
    let y = plain_conv(c, x, w)?;
    let y = add_channel_bias(c, y, c.opt_input(2)?)?;
    Ok(vec![y])
}

/// `v - zero_point` in i32. A zero point of one element applies to the whole tensor; a longer
/// one runs along dim `axis` of `v`.
fn shift_to_i32(c: &mut NodeCtx, v: ValueId, zp: Option<ValueId>, axis: usize) -> Res<ValueId> {
    let v = c.convert(v, DType::I32)?;
    let Some(zp) = zp else { return Ok(v) };
    let zp = along_axis(c, zp, axis, c.rank(v))?;
    let zp = c.convert(zp, DType::I32)?;
    c.binary(BinaryOp::Sub, v, zp)
}

/// A scalar or vector `v` shaped to broadcast along dim `axis` of a tensor of rank `rank`:
/// a scalar for one element, else `[n, 1, ...]` with `rank - axis` dims.
fn along_axis(c: &mut NodeCtx, v: ValueId, axis: usize, rank: usize) -> Res<ValueId> {
    let n: usize = c.dims(v)?.iter().product();
    let mut dims = vec![1; if n == 1 { 0 } else { rank.saturating_sub(axis) }];
    if let Some(first) = dims.first_mut() {
        *first = n;
    }
    c.reshape(v, &dims)
}

/// The i32 conv of X and W (inputs 0 and `w_at`) less their zero points (inputs `x_zp`, `w_zp`;
/// W's may be per output channel).
fn integer_conv(c: &mut NodeCtx, w_at: usize, x_zp: usize, w_zp: usize) -> Res<ValueId> {
    let (x, w) = (c.input(0)?, c.input(w_at)?);
    let (xz, wz) = (c.opt_input(x_zp)?, c.opt_input(w_zp)?);
    let x = shift_to_i32(c, x, xz, 1)?;
    let w = shift_to_i32(c, w, wz, 0)?;
    plain_conv(c, x, w)
}

/// ConvInteger: `conv(X - x_zero_point, W - w_zero_point)` accumulated in i32.
fn conv_integer(c: &mut NodeCtx) -> Outs {
    Ok(vec![integer_conv(c, 1, 2, 3)?])
}

/// QLinearConv: the i32 conv of the zero-point-shifted operands plus the i32 bias, scaled by
/// `x_scale * w_scale / y_scale` (w_scale may be per output channel), rounded half to even,
/// plus `y_zero_point`, saturated to Y's type (that of `y_zero_point`).
fn qlinear_conv(c: &mut NodeCtx) -> Outs {
    let acc = integer_conv(c, 3, 2, 5)?;
    let rank = c.rank(acc);
    let acc = add_channel_bias(c, acc, c.opt_input(8)?)?;
    let acc = c.convert(acc, DType::F32)?;
    let (xs, ws, ys) = (c.input(1)?, c.input(4)?, c.input(6)?);
    let xs = along_axis(c, xs, 1, rank)?;
    let ws = along_axis(c, ws, 1, rank)?;
    let ys = along_axis(c, ys, 1, rank)?;
    let mut y = acc;
    for (op, s) in [
        (BinaryOp::Mul, xs),
        (BinaryOp::Mul, ws),
        (BinaryOp::Div, ys),
    ] {
        let s = c.convert(s, DType::F32)?;
        y = c.binary(op, y, s)?;
    }
    let y = c.unary(UnaryOp::Round, y)?;
    let yt = match c.opt_input(7)? {
        Some(zp) => {
            let t = c.dtype(zp);
            let zp = along_axis(c, zp, 1, rank)?;
            let zp = c.convert(zp, DType::F32)?;
            let y = c.binary(BinaryOp::Add, y, zp)?;
            return Ok(vec![c.convert(y, t)?]);
        }
        None => DType::U8,
    };
    // Float to integer conversion saturates.
    Ok(vec![c.convert(y, yt)?])
}

/// ConvTranspose: a conv over the input dilated by the strides, with the kernel flipped
/// spatially and its in/out channels swapped within each group, padded by
/// `dilated_kernel - 1 - pad` on each side (plus `output_padding` at the end).
fn conv_transpose(c: &mut NodeCtx) -> Outs {
    let (x, w) = (c.input(0)?, c.input(1)?);
    let (xd, wd) = conv_operands(c, x, w)?;
    let ns = xd.len() - 2;
    let groups = read_group(c)?;
    let ch = xd[1];
    if wd[0] != ch || ch % groups != 0 {
        return Err(c.invalid(format!(
            "W {wd:?} must be [C, M/group, k...] with C = {ch} divisible by group {groups}"
        )));
    }
    let auto_pad = c.attr_string_or("auto_pad", "NOTSET")?;
    let stride = positive_ints(c, "strides", ns)?.unwrap_or_else(|| vec![1; ns]);
    let dilation = positive_ints(c, "dilations", ns)?.unwrap_or_else(|| vec![1; ns]);
    let out_pad = non_negative_ints(c, "output_padding", ns)?;
    let pads = non_negative_ints(c, "pads", 2 * ns)?;
    let output_shape = c.attr_ints("output_shape")?;
    if !matches!(
        auto_pad.as_str(),
        "NOTSET" | "VALID" | "SAME_UPPER" | "SAME_LOWER"
    ) {
        return Err(c.invalid(format!("unknown auto_pad `{auto_pad}`")));
    }
    // The target output size per spatial dim, when it decides the padding.
    let target: Option<Vec<i64>> = match &output_shape {
        Some(s) if s.len() >= ns => Some(s[s.len() - ns..].to_vec()),
        Some(s) => {
            return Err(c.invalid(format!("output_shape {s:?} has fewer than {ns} entries")));
        }
        None if auto_pad.starts_with("SAME") => Some(
            xd[2..]
                .iter()
                .zip(&stride)
                .map(|(&i, &s)| (i * s) as i64)
                .collect(),
        ),
        None => None,
    };
    let mut pad_low = Vec::with_capacity(ns);
    let mut pad_high = Vec::with_capacity(ns);
    for d in 0..ns {
        let eff = dilated(c, wd[d + 2], dilation[d])? as i64;
        let (begin, end) = match &target {
            Some(t) => {
                let full = stride[d] as i64 * (xd[d + 2] as i64 - 1) + out_pad[d] as i64 + eff;
                let total = full - t[d];
                let half = total.div_euclid(2);
                if auto_pad == "SAME_UPPER" {
                    (half, total - half)
                } else {
                    (total - half, half)
                }
            }
            None if auto_pad == "VALID" => (0, 0),
            None => (pads[d] as i64, pads[d + ns] as i64),
        };
        pad_low.push(eff - 1 - begin);
        pad_high.push(eff - 1 - end + out_pad[d] as i64);
    }
    // W [C, M/g, k...] -> [g, C/g, M/g, k...] -> [g, M/g, C/g, k...] -> [M, C/g, k...], flipped.
    let (cg, mg) = (ch / groups, wd[1]);
    let mut split = vec![groups, cg, mg];
    split.extend_from_slice(&wd[2..]);
    let wk = c.reshape(w, &split)?;
    let mut perm = vec![0, 2, 1];
    perm.extend(3..ns + 3);
    let wk = c.transpose(wk, &perm)?;
    let mut merged = vec![groups * mg, cg];
    merged.extend_from_slice(&wd[2..]);
    let wk = c.reshape(wk, &merged)?;
    let wk = c.op(
        Op::Reverse {
            axes: (2..ns + 2).collect(),
        },
        &[wk],
    )?;
    let y = c.op(
        Op::Conv {
            stride: vec![1; ns],
            pad_low,
            pad_high,
            lhs_dilation: stride,
            rhs_dilation: dilation,
            groups,
        },
        &[x, wk],
    )?;
    let y = add_channel_bias(c, y, c.opt_input(2)?)?;
    Ok(vec![y])
}

// ---- pooling --------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum PoolKind {
    Max,
    Avg,
    Lp,
}

/// A `reduce_window` over the spatial dims of `x`, padded by `low` and `high`.
fn window_reduce(
    c: &mut NodeCtx,
    kind: ReduceKind,
    x: ValueId,
    kernel: &[usize],
    win: &Window,
    low: &[usize],
    high: &[usize],
) -> Res<ValueId> {
    c.op(
        Op::ReduceWindow {
            kind,
            window: with_lead(1, kernel),
            stride: with_lead(1, &win.stride),
            dilation: with_lead(1, &win.dilation),
            pad_low: with_lead(0, low),
            pad_high: with_lead(0, high),
        },
        &[x],
    )
}

/// `|x|^p` (squares for p = 2).
fn abs_pow(c: &mut NodeCtx, x: ValueId, p: i64) -> Res<ValueId> {
    if p == 2 {
        return c.binary(BinaryOp::Mul, x, x);
    }
    let a = c.unary(UnaryOp::Abs, x)?;
    let e = c.scalar(p as f64, c.dtype(x))?;
    c.binary(BinaryOp::Pow, a, e)
}

/// `s^(1/p)` (a square root for p = 2).
fn root(c: &mut NodeCtx, s: ValueId, p: i64) -> Res<ValueId> {
    if p == 2 {
        return c.unary(UnaryOp::Sqrt, s);
    }
    let e = c.scalar(1.0 / p as f64, c.dtype(s))?;
    c.binary(BinaryOp::Pow, s, e)
}

/// The `p` attribute of the Lp ops (positive).
fn read_p(c: &NodeCtx) -> Res<i64> {
    let p = c.attr_int_or("p", 2)?;
    if p < 1 {
        return Err(c.invalid(format!("p must be positive, found {p}")));
    }
    Ok(p)
}

/// MaxPool, AveragePool and LpPool.
fn pool(c: &mut NodeCtx, kind: PoolKind) -> Outs {
    let x = c.input(0)?;
    let xd = c.dims(x)?;
    if xd.len() < 3 {
        return Err(c.invalid(format!("X must be [N, C, spatial...], found {xd:?}")));
    }
    let ns = xd.len() - 2;
    let kernel = positive_ints(c, "kernel_shape", ns)?
        .ok_or_else(|| c.invalid("kernel_shape is required"))?;
    let ceil_mode = c.attr_int_or("ceil_mode", 0)? != 0;
    let win = read_window(c, &xd[2..], &kernel, ceil_mode)?;
    let high: Vec<usize> = win
        .pad_high
        .iter()
        .zip(&win.extra_high)
        .map(|(a, b)| a + b)
        .collect();
    let y = match kind {
        PoolKind::Max => {
            let col_major = match c.attr_int_or("storage_order", 0)? {
                0 => false,
                1 => true,
                s => return Err(c.invalid(format!("storage_order must be 0 or 1, found {s}"))),
            };
            let y = window_reduce(c, ReduceKind::Max, x, &kernel, &win, &win.pad_low, &high)?;
            if c.output_requested(1) {
                let idx = max_pool_indices(c, x, &xd, &kernel, &win, &high, col_major)?;
                return Ok(vec![y, idx]);
            }
            y
        }
        PoolKind::Avg => {
            let include_pad = c.attr_int_or("count_include_pad", 0)? != 0;
            let sum = window_reduce(c, ReduceKind::Sum, x, &kernel, &win, &win.pad_low, &high)?;
            // The divisor: how many elements (input, or input and explicit padding) each
            // window covers, from a window sum over ones; it folds to a constant.
            let (base, low, high): (Vec<usize>, Vec<usize>, Vec<usize>) = if include_pad {
                let base = (0..ns)
                    .map(|d| xd[d + 2] + win.pad_low[d] + win.pad_high[d])
                    .collect();
                (base, vec![0; ns], win.extra_high.clone())
            } else {
                (xd[2..].to_vec(), win.pad_low.clone(), high)
            };
            let ones = Tensor::from_fn(c.dtype(x), &with_lead(1, &base), |_| 1.0)
                .map_err(|e| c.invalid(e.to_string()))?;
            let ones = c.constant(ones);
            let count = window_reduce(c, ReduceKind::Sum, ones, &kernel, &win, &low, &high)?;
            c.binary(BinaryOp::Div, sum, count)?
        }
        PoolKind::Lp => {
            let p = read_p(c)?;
            let xp = abs_pow(c, x, p)?;
            let s = window_reduce(c, ReduceKind::Sum, xp, &kernel, &win, &win.pad_low, &high)?;
            root(c, s, p)?
        }
    };
    Ok(vec![y])
}

/// MaxPool's Indices output: for each window, the flat index (over `[N, C, spatial...]`, the
/// spatial part column-major with `col_major`) of its first maximum. The windows' taps are
/// gathered from the input as `[N, C, windows, taps]` and reduced with argmax; a tap in the
/// padding reads the window's first tap inside the input instead, so it can only tie with it.
fn max_pool_indices(
    c: &mut NodeCtx,
    x: ValueId,
    xd: &[usize],
    kernel: &[usize],
    win: &Window,
    high: &[usize],
    col_major: bool,
) -> Res<ValueId> {
    let ns = xd.len() - 2;
    let (n, ch) = (xd[0], xd[1]);
    let spatial = &xd[2..];
    let mut out = Vec::with_capacity(ns);
    for d in 0..ns {
        let padded = spatial[d] + win.pad_low[d] + high[d];
        let eff = dilated(c, kernel[d], win.dilation[d])?;
        out.push(padded.saturating_sub(eff) / win.stride[d] + 1);
    }
    let n_out: usize = out.iter().product();
    let n_taps: usize = kernel.iter().product();
    let n_in: usize = spatial.iter().product();
    if n_out.checked_mul(n_taps).is_none_or(|t| t > 1 << 26) {
        return Err(c.unsupported("MaxPool indices over this many window taps"));
    }
    // Per (window, tap): the row-major spatial index to gather from, and the index to report.
    let mut gather_at = Vec::with_capacity(n_out * n_taps);
    let mut source = Vec::with_capacity(n_out * n_taps);
    let mut taps = Vec::with_capacity(n_taps);
    for o in 0..n_out {
        let oi = unravel(o, &out);
        taps.clear();
        for t in 0..n_taps {
            let ti = unravel(t, kernel);
            let pos: Option<Vec<usize>> = (0..ns)
                .map(|d| {
                    (oi[d] * win.stride[d] + ti[d] * win.dilation[d])
                        .checked_sub(win.pad_low[d])
                        .filter(|&p| p < spatial[d])
                })
                .collect();
            taps.push(pos.map(|p| {
                let (mut row, mut col, mut rs, mut cs) = (0, 0, 1, 1);
                for d in 0..ns {
                    row += p[ns - 1 - d] * rs;
                    rs *= spatial[ns - 1 - d];
                    col += p[d] * cs;
                    cs *= spatial[d];
                }
                (row as i64, if col_major { col } else { row } as i64)
            }));
        }
        let fallback = taps.iter().flatten().next().copied().unwrap_or((0, 0));
        for tap in &taps {
            let (g, s) = tap.unwrap_or(fallback);
            gather_at.push(g);
            source.push(s);
        }
    }
    let tensor = |c: &NodeCtx, dims: Vec<usize>, v: Vec<i64>| {
        Tensor::from_vec(dims, v).map_err(|e| c.invalid(e.to_string()))
    };
    let gather_at = tensor(c, vec![n_out, n_taps], gather_at)?;
    let source = tensor(c, vec![n_out * n_taps], source)?;
    let starts = tensor(
        c,
        vec![n_out],
        (0..n_out).map(|o| (o * n_taps) as i64).collect(),
    )?;
    let offsets = tensor(
        c,
        vec![n, ch, 1],
        (0..n * ch).map(|i| (i * n_in) as i64).collect(),
    )?;
    let x3 = c.reshape(x, &[n, ch, n_in])?;
    let gather_at = c.constant(gather_at);
    let windows = c.op(Op::Gather { axis: 2 }, &[x3, gather_at])?;
    let best = c.op(
        Op::ArgReduce {
            is_max: true,
            axis: 3,
            keep_dims: false,
            select_last: false,
        },
        &[windows],
    )?;
    let starts = c.constant(starts);
    let at = c.binary(BinaryOp::Add, best, starts)?;
    let source = c.constant(source);
    let idx = c.op(Op::Gather { axis: 0 }, &[source, at])?;
    let offsets = c.constant(offsets);
    let idx = c.binary(BinaryOp::Add, idx, offsets)?;
    let mut dims = vec![n, ch];
    dims.extend_from_slice(&out);
    c.reshape(idx, &dims)
}

/// The row-major multi-index of flat index `i` in `dims`.
fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (d, &n) in dims.iter().enumerate().rev() {
        if n > 0 {
            idx[d] = i % n;
            i /= n;
        }
    }
    idx
}

/// GlobalAveragePool, GlobalMaxPool and GlobalLpPool: a reduction over all spatial dims.
fn global_pool(c: &mut NodeCtx, kind: PoolKind) -> Outs {
    let x = c.input(0)?;
    let rank = c.rank(x);
    if rank < 2 {
        return Err(c.invalid(format!("X must be [N, C, spatial...], found rank {rank}")));
    }
    let axes: Vec<usize> = (2..rank).collect();
    let y = match kind {
        PoolKind::Max => c.reduce(ReduceKind::Max, x, &axes, true)?,
        PoolKind::Avg => mean(c, x, &axes)?,
        PoolKind::Lp => {
            let p = read_p(c)?;
            let xp = abs_pow(c, x, p)?;
            let s = c.reduce(ReduceKind::Sum, xp, &axes, true)?;
            root(c, s, p)?
        }
    };
    Ok(vec![y])
}

/// MaxUnpool: zeros of the output shape with X's elements put at the flat positions I (as
/// MaxPool's Indices give them). The output shape is the `output_shape` input (known at import
/// time), else `(in - 1) * stride + kernel - pads` per spatial dim.
fn max_unpool(c: &mut NodeCtx) -> Outs {
    let (x, idx) = (c.input(0)?, c.input(1)?);
    let xd = c.dims(x)?;
    if xd.len() < 3 || c.dims(idx)? != xd {
        return Err(c.invalid(format!(
            "X {xd:?} must be [N, C, spatial...] and I of the same shape"
        )));
    }
    let ns = xd.len() - 2;
    let kernel = positive_ints(c, "kernel_shape", ns)?
        .ok_or_else(|| c.invalid("kernel_shape is required"))?;
    let stride = positive_ints(c, "strides", ns)?.unwrap_or_else(|| vec![1; ns]);
    let pads = non_negative_ints(c, "pads", 2 * ns)?;
    // Indices address the default output (the pooling's input shape); an explicit output_shape
    // pads that result with zeros at the end of each spatial dim (as the reference does).
    let mut out = xd[..2].to_vec();
    for d in 0..ns {
        let full = (xd[d + 2].saturating_sub(1)) * stride[d] + kernel[d];
        let o = full.checked_sub(pads[d] + pads[d + ns]).ok_or_else(|| {
            c.invalid(format!(
                "pads {pads:?} exceed the output of spatial dim {d}"
            ))
        })?;
        out.push(o);
    }
    let requested: Option<Vec<usize>> = match c.const_ints(2)? {
        Some(s) => Some(
            s.iter()
                .map(|&d| usize::try_from(d))
                .collect::<Result<Vec<_>, _>>()
                .ok()
                .filter(|s| s.len() == xd.len() && s[..2] == xd[..2] && s.iter().zip(&out).all(|(r, o)| r >= o))
                .ok_or_else(|| {
                    c.invalid(format!(
                        "output_shape {s:?} must have rank {}, X's batch and channels, and be at least {out:?}",
                        xd.len()
                    ))
                })?,
        ),
        None => None,
    };
    let total: usize = out.iter().product();
    let count: usize = xd.iter().product();
    let zero = c.scalar(0.0, c.dtype(x))?;
    let zeros = c.broadcast(zero, &[total])?;
    let flat_x = c.reshape(x, &[count])?;
    let flat_i = c.reshape(idx, &[count])?;
    let y = c.op(
        Op::Scatter {
            mode: terafab_ir::ScatterMode::Replace,
        },
        &[zeros, flat_i, flat_x],
    )?;
    let y = c.reshape(y, &out)?;
    match requested {
        Some(req) if req != out => {
            let high: Vec<i64> = req.iter().zip(&out).map(|(r, o)| (r - o) as i64).collect();
            let zero = c.scalar(0.0, c.dtype(x))?;
            Ok(vec![c.op(
                Op::Pad {
                    low: vec![0; out.len()],
                    high,
                    interior: vec![0; out.len()],
                },
                &[y, zero],
            )?])
        }
        _ => Ok(vec![y]),
    }
}

// ---- normalization --------------------------------------------------------------------------

/// The mean of `x` over `axes`, keeping the reduced dims.
fn mean(c: &mut NodeCtx, x: ValueId, axes: &[usize]) -> Res<ValueId> {
    let dims = c.dims(x)?;
    let n: usize = axes.iter().map(|&a| dims[a]).product();
    let s = c.reduce(ReduceKind::Sum, x, axes, true)?;
    let n = c.scalar(n as f64, c.dtype(x))?;
    c.binary(BinaryOp::Div, s, n)
}

/// The type normalizations compute in: f32 for f16, bf16 and float8, else the type itself.
fn compute_type(t: DType) -> DType {
    match t {
        DType::F16 | DType::BF16 => DType::F32,
        t if t.is_float8() => DType::F32,
        t => t,
    }
}

/// The `stash_type` attribute (default f32) as an element type; it must be a float type.
fn stash_type(c: &NodeCtx) -> Res<DType> {
    let code = c.attr_int_or("stash_type", 1)?;
    let t = i32::try_from(code)
        .ok()
        .and_then(|code| dtype_of(code).ok())
        .filter(|t| t.is_float())
        .ok_or_else(|| c.unsupported(format!("stash_type {code}")))?;
    Ok(t)
}

/// Standardize `x` over `axes`: `(x - mean) / sqrt(var + eps)` (population variance).
/// Returns the result, the mean and `1 / sqrt(var + eps)`, with the reduced dims kept.
fn standardize(
    c: &mut NodeCtx,
    x: ValueId,
    axes: &[usize],
    eps: f64,
) -> Res<(ValueId, ValueId, ValueId)> {
    let m = mean(c, x, axes)?;
    let d = c.binary(BinaryOp::Sub, x, m)?;
    let sq = c.binary(BinaryOp::Mul, d, d)?;
    let var = mean(c, sq, axes)?;
    let inv = inv_std(c, var, eps)?;
    let y = c.binary(BinaryOp::Mul, d, inv)?;
    Ok((y, m, inv))
}

/// `1 / sqrt(var + eps)`.
fn inv_std(c: &mut NodeCtx, var: ValueId, eps: f64) -> Res<ValueId> {
    let e = c.scalar(eps, c.dtype(var))?;
    let v = c.binary(BinaryOp::Add, var, e)?;
    c.unary(UnaryOp::Rsqrt, v)
}

/// `y * scale + bias` in `y`'s type (either may be absent); `scale` and `bias` broadcast.
fn affine(
    c: &mut NodeCtx,
    y: ValueId,
    scale: Option<ValueId>,
    bias: Option<ValueId>,
) -> Res<ValueId> {
    let t = c.dtype(y);
    let mut y = y;
    if let Some(s) = scale {
        let s = c.convert(s, t)?;
        y = c.binary(BinaryOp::Mul, y, s)?;
    }
    if let Some(b) = bias {
        let b = c.convert(b, t)?;
        y = c.binary(BinaryOp::Add, y, b)?;
    }
    Ok(y)
}

/// The `epsilon` attribute (default 1e-5) as f64.
fn epsilon(c: &NodeCtx) -> Res<f64> {
    Ok(f64::from(c.attr_float_or("epsilon", 1e-5)?))
}

/// BatchNormalization. Inference: `(x - mean) / sqrt(var + eps) * scale + bias` with the
/// given statistics. Training (`training_mode`, or the optional statistics outputs of opsets
/// before 14): the batch's statistics, plus the updated running statistics
/// `running * momentum + batch * (1 - momentum)`. With `spatial = 0` (opsets 7-8) the
/// parameters are per activation (`[C, D...]`) and statistics are taken over N only.
fn batch_norm(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let params = [c.input(1)?, c.input(2)?, c.input(3)?, c.input(4)?];
    let eps = epsilon(c)?;
    let momentum = f64::from(c.attr_float_or("momentum", 0.9)?);
    let spatial = c.attr_int_or("spatial", 1)? != 0;
    // Opset 6's is_test (only models of opset < 7 have it); else the outputs decide.
    let is_test = c.attr_int("is_test")?;
    let training = if c.opset >= 14 {
        c.attr_int_or("training_mode", 0)? != 0
    } else if let Some(t) = is_test {
        t == 0
    } else {
        (1..5).any(|i| c.output_requested(i))
    };
    let xd = c.dims(x)?;
    let rank = xd.len();
    if rank < 2 {
        return Err(c.invalid(format!("X must be [N, C, ...], found {xd:?}")));
    }
    let t = c.dtype(x);
    let ct = compute_type(t);
    let xc = c.convert(x, ct)?;
    // Each parameter, shaped to broadcast against X, in the compute type.
    let param_dims: Vec<usize> = if spatial {
        let mut d = vec![1; rank - 1];
        d[0] = xd[1];
        d
    } else {
        xd[1..].to_vec()
    };
    let mut p = Vec::with_capacity(4);
    for &v in &params {
        let n: usize = c.dims(v)?.iter().product();
        if n != param_dims.iter().product::<usize>() {
            return Err(c.invalid(format!(
                "parameter {:?} does not match X {xd:?}",
                c.dims(v)?
            )));
        }
        let v = c.reshape(v, &param_dims)?;
        p.push(c.convert(v, ct)?);
    }
    let (scale, bias, run_mean, run_var) = (p[0], p[1], p[2], p[3]);
    if !training {
        let d = c.binary(BinaryOp::Sub, xc, run_mean)?;
        let inv = inv_std(c, run_var, eps)?;
        let y = c.binary(BinaryOp::Mul, d, inv)?;
        let y = affine(c, y, Some(scale), Some(bias))?;
        return Ok(vec![c.convert(y, t)?]);
    }
    let axes: Vec<usize> = if spatial {
        std::iter::once(0).chain(2..rank).collect()
    } else {
        vec![0]
    };
    let (y, bmean, binv) = standardize(c, xc, &axes, eps)?;
    let y = affine(c, y, Some(scale), Some(bias))?;
    let y = c.convert(y, t)?;
    // The batch variance again (standardize returns its inverse square root).
    let d = c.binary(BinaryOp::Sub, xc, bmean)?;
    let sq = c.binary(BinaryOp::Mul, d, d)?;
    let bvar = mean(c, sq, &axes)?;
    let _ = binv;
    let stat_dims = c.dims(params[2])?;
    let stat_type = c.dtype(params[2]);
    let mut out = vec![y];
    let finish = |c: &mut NodeCtx, v: ValueId| -> Res<ValueId> {
        let v = c.reshape(v, &stat_dims)?;
        c.convert(v, stat_type)
    };
    let mom = c.scalar(momentum, ct)?;
    let rest = c.scalar(1.0 - momentum, ct)?;
    for (run, batch) in [(run_mean, bmean), (run_var, bvar)] {
        let a = c.binary(BinaryOp::Mul, run, mom)?;
        let b = c.binary(BinaryOp::Mul, batch, rest)?;
        let v = c.binary(BinaryOp::Add, a, b)?;
        out.push(finish(c, v)?);
    }
    if c.opset < 14 {
        for v in [bmean, bvar] {
            out.push(finish(c, v)?);
        }
    }
    Ok(out)
}

/// InstanceNormalization: standardize each (instance, channel) over the spatial dims, then
/// per-channel scale and bias.
fn instance_norm(c: &mut NodeCtx) -> Outs {
    let (x, scale, bias) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let eps = epsilon(c)?;
    let rank = c.rank(x);
    if rank < 3 {
        return Err(c.invalid(format!("X must be [N, C, spatial...], found rank {rank}")));
    }
    let t = c.dtype(x);
    let xc = c.convert(x, compute_type(t))?;
    let axes: Vec<usize> = (2..rank).collect();
    let (y, _, _) = standardize(c, xc, &axes, eps)?;
    let scale = per_channel(c, scale, rank)?;
    let bias = per_channel(c, bias, rank)?;
    let y = affine(c, y, Some(scale), Some(bias))?;
    Ok(vec![c.convert(y, t)?])
}

/// The normalized axes `axis..rank` of LayerNormalization and RMSNormalization.
fn trailing_axes(c: &NodeCtx, rank: usize) -> Res<Vec<usize>> {
    let axis = c.attr_int_or("axis", -1)?;
    Ok((c.axis(axis, rank)?..rank).collect())
}

/// LayerNormalization: standardize over `axis..rank` in the stash type, back to X's type,
/// then `* Scale + B`. Optional outputs: the mean and the inverse standard deviation.
fn layer_norm(c: &mut NodeCtx) -> Outs {
    let (x, scale, bias) = (c.input(0)?, c.input(1)?, c.opt_input(2)?);
    let eps = epsilon(c)?;
    let st = stash_type(c)?;
    let axes = trailing_axes(c, c.rank(x))?;
    let t = c.dtype(x);
    let xs = c.convert(x, st)?;
    let (y, m, inv) = standardize(c, xs, &axes, eps)?;
    let y = c.convert(y, t)?;
    let y = affine(c, y, Some(scale), bias)?;
    Ok(vec![y, m, inv])
}

/// RMSNormalization: `x / sqrt(mean(x^2 over axis..rank) + eps)` in the stash type, back to
/// X's type, then `* scale`.
fn rms_norm(c: &mut NodeCtx) -> Outs {
    let (x, scale) = (c.input(0)?, c.input(1)?);
    let eps = epsilon(c)?;
    let st = stash_type(c)?;
    let axes = trailing_axes(c, c.rank(x))?;
    let t = c.dtype(x);
    let xs = c.convert(x, st)?;
    let sq = c.binary(BinaryOp::Mul, xs, xs)?;
    let ms = mean(c, sq, &axes)?;
    let inv = inv_std(c, ms, eps)?;
    let y = c.binary(BinaryOp::Mul, xs, inv)?;
    let y = c.convert(y, t)?;
    Ok(vec![affine(c, y, Some(scale), None)?])
}

/// GroupNormalization: standardize each (instance, group of channels) over its channels and
/// spatial dims, then scale and bias per channel (opset 21) or per group (opset 18).
fn group_norm(c: &mut NodeCtx) -> Outs {
    let (x, scale, bias) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let eps = epsilon(c)?;
    let st = if c.opset >= 21 {
        stash_type(c)?
    } else {
        compute_type(c.dtype(x))
    };
    let groups = c
        .attr_int("num_groups")?
        .ok_or_else(|| c.invalid("num_groups is required"))?;
    let xd = c.dims(x)?;
    let groups = usize::try_from(groups)
        .ok()
        .filter(|&g| g >= 1 && xd.len() >= 2 && xd[1] % g == 0)
        .ok_or_else(|| {
            c.invalid(format!(
                "num_groups {groups} must divide the channels of X {xd:?}"
            ))
        })?;
    let rank = xd.len();
    let per_group = xd[1..].iter().product::<usize>() / groups;
    let t = c.dtype(x);
    let xs = c.convert(x, st)?;
    let xs = c.reshape(xs, &[xd[0], groups, per_group])?;
    let (y, _, _) = standardize(c, xs, &[2], eps)?;
    let y = c.reshape(y, &xd)?;
    let y = c.convert(y, t)?;
    // Per-group parameters repeat over the channels of their group.
    let channel = |c: &mut NodeCtx, v: ValueId| -> Res<ValueId> {
        if c.opset < 21 {
            let v = c.reshape(v, &[groups, 1])?;
            let v = c.broadcast(v, &[groups, xd[1] / groups])?;
            let v = c.reshape(v, &[xd[1]])?;
            per_channel(c, v, rank)
        } else {
            per_channel(c, v, rank)
        }
    };
    let scale = channel(c, scale)?;
    let bias = channel(c, bias)?;
    Ok(vec![affine(c, y, Some(scale), Some(bias))?])
}

/// LRN: `x / (bias + alpha / size * sum of x^2 over the neighbouring channels)^beta`, the
/// neighbourhood being `[c - floor((size-1)/2), c + ceil((size-1)/2)]`.
fn lrn(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let alpha = f64::from(c.attr_float_or("alpha", 1e-4)?);
    let beta = f64::from(c.attr_float_or("beta", 0.75)?);
    let bias = f64::from(c.attr_float_or("bias", 1.0)?);
    let size = c
        .attr_int("size")?
        .and_then(|s| usize::try_from(s).ok())
        .filter(|&s| s >= 1)
        .ok_or_else(|| c.invalid("size must be a positive integer"))?;
    let rank = c.rank(x);
    if rank < 3 {
        return Err(c.invalid(format!("X must be [N, C, spatial...], found rank {rank}")));
    }
    let t = c.dtype(x);
    let ct = compute_type(t);
    let xc = c.convert(x, ct)?;
    let sq = c.binary(BinaryOp::Mul, xc, xc)?;
    let mut window = vec![1; rank];
    window[1] = size;
    let (mut low, mut high) = (vec![0; rank], vec![0; rank]);
    low[1] = (size - 1) / 2;
    high[1] = size / 2;
    let sum = c.op(
        Op::ReduceWindow {
            kind: ReduceKind::Sum,
            window,
            stride: vec![1; rank],
            dilation: vec![1; rank],
            pad_low: low,
            pad_high: high,
        },
        &[sq],
    )?;
    let k = c.scalar(alpha / size as f64, ct)?;
    let b = c.scalar(bias, ct)?;
    let e = c.scalar(beta, ct)?;
    let d = c.binary(BinaryOp::Mul, sum, k)?;
    let d = c.binary(BinaryOp::Add, d, b)?;
    let d = c.binary(BinaryOp::Pow, d, e)?;
    let y = c.binary(BinaryOp::Div, xc, d)?;
    Ok(vec![c.convert(y, t)?])
}

/// LpNormalization: `x / ||x||_p` along `axis` (p is 1 or 2); a zero norm gives 0.
fn lp_norm(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let axis = c.attr_int_or("axis", -1)?;
    let axis = c.axis(axis, c.rank(x))?;
    let p = c.attr_int_or("p", 2)?;
    if p != 1 && p != 2 {
        return Err(c.invalid(format!("p must be 1 or 2, found {p}")));
    }
    let xp = abs_pow(c, x, p)?;
    let s = c.reduce(ReduceKind::Sum, xp, &[axis], true)?;
    let norm = if p == 2 { root(c, s, 2)? } else { s };
    let zero = c.scalar(0.0, c.dtype(x))?;
    let is_zero = c.compare(CompareOp::Eq, norm, zero)?;
    let y = c.binary(BinaryOp::Div, x, norm)?;
    Ok(vec![c.select(is_zero, zero, y)?])
}

/// MeanVarianceNormalization: `(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)` over `axes`
/// (default `[0, 2, 3]`), as in the op's function body.
fn mvn(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    let rank = c.rank(x);
    let axes = c.attr_ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    let mut norm = axes
        .iter()
        .map(|&a| c.axis(a, rank))
        .collect::<Res<Vec<_>>>()?;
    norm.sort_unstable();
    norm.dedup();
    let m = mean(c, x, &norm)?;
    let m2 = c.binary(BinaryOp::Mul, m, m)?;
    let sq = c.binary(BinaryOp::Mul, x, x)?;
    let ex2 = mean(c, sq, &norm)?;
    let var = c.binary(BinaryOp::Sub, ex2, m2)?;
    let std = c.unary(UnaryOp::Sqrt, var)?;
    let e = c.scalar(1e-9, c.dtype(x))?;
    let std = c.binary(BinaryOp::Add, std, e)?;
    let d = c.binary(BinaryOp::Sub, x, m)?;
    Ok(vec![c.binary(BinaryOp::Div, d, std)?])
}

// ---- dropout --------------------------------------------------------------------------------

/// Dropout: the identity in inference mode (and in training mode with ratio 0), with an
/// all-true mask (all ones of X's type before opset 10). Random dropping is unsupported.
fn dropout(c: &mut NodeCtx) -> Outs {
    let x = c.input(0)?;
    // The seed only matters for random dropping, which is unsupported below.
    let _ = c.attr_int("seed")?;
    let training = if c.opset >= 12 {
        match c.opt_input(2)? {
            None => false,
            Some(t) => c
                .const_value(t)
                .and_then(|t| t.to_i64_vec())
                .ok_or_else(|| {
                    c.unsupported(
                        "training_mode computed at run time (random dropout is not supported)",
                    )
                })?
                .iter()
                .any(|&b| b != 0),
        }
    } else {
        let _ = c.attr_float("ratio")?;
        c.attr_int("is_test")?.is_some_and(|t| t == 0)
    };
    if training {
        let ratio = if c.opset >= 12 {
            match c.opt_input(1)? {
                Some(_) => c
                    .const_floats(1)?
                    .and_then(|v| v.first().copied())
                    .ok_or_else(|| c.invalid("ratio must be a scalar"))?,
                None => 0.5,
            }
        } else {
            f64::from(c.attr_float_or("ratio", 0.5)?)
        };
        if ratio != 0.0 {
            return Err(c.unsupported(format!("training-mode dropout with ratio {ratio} (random)")));
        }
    }
    let dims = c.dims(x)?;
    let y = c.op(
        Op::Reshape {
            shape: terafab_ir::Shape::from_static(&dims),
        },
        &[x],
    )?;
    let mask_type = if c.opset >= 10 {
        DType::Bool
    } else {
        c.dtype(x)
    };
    let one = c.scalar(1.0, mask_type)?;
    let mask = c.broadcast(one, &dims)?;
    Ok(vec![y, mask])
}
