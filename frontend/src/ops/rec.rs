//! Recurrent layers: `RNN`, `GRU` and `LSTM`.
//!
//! The sequence length is static after import, so each layer is unrolled: the input
//! projection `X·Wᵀ + biases` is one `dot_general` over every time step, then each step slices
//! its row, adds the recurrent projection `H·Rᵀ`, and applies the cell's gates. Directions run
//! independently (reverse runs on the time-reversed input) and are stacked into the outputs.
//!
//! `sequence_lens` (constant or not) is honoured: past a batch entry's length its state holds
//! and its `Y` rows are zero, and the reverse direction starts at the entry's last valid step
//! (the valid prefix is reversed per batch entry with a gather).

use terafab_ir::{BinaryOp, CompareOp, DType, Op, UnaryOp, ValueId};

use super::*;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("RNN", |c| recurrent(c, Cell::Rnn)),
    ("GRU", |c| recurrent(c, Cell::Gru)),
    ("LSTM", |c| recurrent(c, Cell::Lstm)),
];

type R<T> = Result<T, ImportError>;

/// The kind of recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cell {
    Rnn,
    Gru,
    Lstm,
}

impl Cell {
    /// Gates per step (rows of `W` and `R` are `gates * hidden_size`).
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru => 3,
            Cell::Lstm => 4,
        }
    }

    /// The default activation functions of one direction.
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru => &["Sigmoid", "Tanh"],
            Cell::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

/// An activation function of a recurrent cell, with its `alpha`/`beta` where it has them.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

/// Parse the activation names, consuming `alphas`/`betas` in order by the functions that take
/// them (the others use the ONNX defaults).
fn parse_activations(c: &NodeCtx, names: &[String], alphas: &[f32], betas: &[f32]) -> R<Vec<Act>> {
    let mut alphas = alphas.iter().map(|&a| f64::from(a));
    let mut betas = betas.iter().map(|&b| f64::from(b));
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut alpha = |d: f64| alphas.next().unwrap_or(d);
        let act = match name.to_ascii_lowercase().as_str() {
            "relu" => Act::Relu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "affine" => Act::Affine(alpha(1.0), betas.next().unwrap_or(0.0)),
            "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
            "scaledtanh" => Act::ScaledTanh(alpha(1.0), betas.next().unwrap_or(1.0)),
            "hardsigmoid" => Act::HardSigmoid(alpha(0.2), betas.next().unwrap_or(0.5)),
            "elu" => Act::Elu(alpha(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            _ => return Err(c.unsupported(format!("activation function `{name}`"))),
        };
        out.push(act);
    }
    Ok(out)
}

/// Apply an activation function elementwise.
fn activate(c: &mut NodeCtx, act: Act, x: ValueId) -> R<ValueId> {
    let dt = c.dtype(x);
    match act {
        Act::Relu => {
            let zero = c.scalar(0.0, dt)?;
            c.binary(BinaryOp::Max, x, zero)
        }
        Act::Tanh => c.unary(UnaryOp::Tanh, x),
        Act::Sigmoid => c.unary(UnaryOp::Logistic, x),
        Act::Affine(a, b) => affine(c, x, a, b),
        Act::LeakyRelu(a) => {
            let zero = c.scalar(0.0, dt)?;
            let pos = c.compare(CompareOp::Ge, x, zero)?;
            let scaled = affine(c, x, a, 0.0)?;
            c.select(pos, x, scaled)
        }
        Act::ThresholdedRelu(a) => {
            let alpha = c.scalar(a, dt)?;
            let zero = c.scalar(0.0, dt)?;
            let above = c.compare(CompareOp::Gt, x, alpha)?;
            c.select(above, x, zero)
        }
        Act::ScaledTanh(a, b) => {
            let inner = affine(c, x, b, 0.0)?;
            let t = c.unary(UnaryOp::Tanh, inner)?;
            affine(c, t, a, 0.0)
        }
        Act::HardSigmoid(a, b) => {
            let y = affine(c, x, a, b)?;
            let zero = c.scalar(0.0, dt)?;
            let one = c.scalar(1.0, dt)?;
            let y = c.binary(BinaryOp::Max, y, zero)?;
            c.binary(BinaryOp::Min, y, one)
        }
        Act::Elu(a) => {
            let zero = c.scalar(0.0, dt)?;
            let one = c.scalar(1.0, dt)?;
            let pos = c.compare(CompareOp::Ge, x, zero)?;
            let e = c.unary(UnaryOp::Exp, x)?;
            let em1 = c.binary(BinaryOp::Sub, e, one)?;
            let neg = affine(c, em1, a, 0.0)?;
            c.select(pos, x, neg)
        }
        Act::Softsign => {
            let one = c.scalar(1.0, dt)?;
            let a = c.unary(UnaryOp::Abs, x)?;
            let d = c.binary(BinaryOp::Add, a, one)?;
            c.binary(BinaryOp::Div, x, d)
        }
        Act::Softplus => {
            let one = c.scalar(1.0, dt)?;
            let e = c.unary(UnaryOp::Exp, x)?;
            let s = c.binary(BinaryOp::Add, e, one)?;
            c.unary(UnaryOp::Log, s)
        }
    }
}

/// `a * x + b` (skipping the multiply by 1 and the add of 0).
fn affine(c: &mut NodeCtx, x: ValueId, a: f64, b: f64) -> R<ValueId> {
    let dt = c.dtype(x);
    let mut y = x;
    if a != 1.0 {
        let s = c.scalar(a, dt)?;
        y = c.binary(BinaryOp::Mul, y, s)?;
    }
    if b != 0.0 {
        let s = c.scalar(b, dt)?;
        y = c.binary(BinaryOp::Add, y, s)?;
    }
    Ok(y)
}

/// `a · wᵀ`: contracts the last dim of `a` with dim 1 of the matrix `w` (`[N, K]`).
fn matmul_t(c: &mut NodeCtx, a: ValueId, w: ValueId) -> R<ValueId> {
    let last = c.rank(a).saturating_sub(1);
    c.op(
        Op::DotGeneral {
            lhs_batch: vec![],
            rhs_batch: vec![],
            lhs_contract: vec![last],
            rhs_contract: vec![1],
        },
        &[a, w],
    )
}

/// Row `d` of a `[D, ...]` tensor, without the leading dim.
fn direction_slice(c: &mut NodeCtx, x: ValueId, d: usize) -> R<ValueId> {
    let dims = c.dims(x)?;
    let s = c.slice_axis(x, 0, d, d + 1)?;
    c.reshape(s, dims.get(1..).unwrap_or_default())
}

/// Gate `g` (of `hidden` columns) of a `[B, G*H]` or `[G*H]` tensor, along its last dim.
fn gate(c: &mut NodeCtx, x: ValueId, g: usize, hidden: usize) -> R<ValueId> {
    let last = c.rank(x).saturating_sub(1);
    c.slice_axis(x, last, g * hidden, (g + 1) * hidden)
}

/// Clamp to `[-clip, clip]` when a clip is set.
fn clip(c: &mut NodeCtx, x: ValueId, clip: Option<f64>) -> R<ValueId> {
    let Some(t) = clip else { return Ok(x) };
    let dt = c.dtype(x);
    let lo = c.scalar(-t, dt)?;
    let hi = c.scalar(t, dt)?;
    let y = c.binary(BinaryOp::Max, x, lo)?;
    c.binary(BinaryOp::Min, y, hi)
}

/// `act(clip(x))`.
fn gate_act(c: &mut NodeCtx, act: Act, x: ValueId, limit: Option<f64>) -> R<ValueId> {
    let x = clip(c, x, limit)?;
    activate(c, act, x)
}

/// The node's attributes, shared by every direction.
struct Spec {
    cell: Cell,
    hidden: usize,
    /// One entry per direction: does it run reversed?
    reversed: Vec<bool>,
    /// `cell.default_activations().len()` functions per direction, in direction order.
    acts: Vec<Act>,
    clip: Option<f64>,
    linear_before_reset: bool,
    input_forget: bool,
    batch_major: bool,
}

/// Read every attribute of the node.
fn read_spec(c: &NodeCtx, cell: Cell) -> R<Spec> {
    let direction = c.attr_string_or("direction", "forward")?;
    let reversed = match direction.as_str() {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        other => return Err(c.invalid(format!("unknown direction `{other}`"))),
    };
    let per_dir = cell.default_activations().len();
    let names = match c.attr_strings("activations")? {
        Some(n) => n,
        None => reversed
            .iter()
            .flat_map(|_| cell.default_activations().iter().map(|s| s.to_string()))
            .collect(),
    };
    if names.len() != per_dir * reversed.len() {
        return Err(c.invalid(format!(
            "{} activation functions given, expected {}",
            names.len(),
            per_dir * reversed.len()
        )));
    }
    let alphas = c.attr_floats("activation_alpha")?.unwrap_or_default();
    let betas = c.attr_floats("activation_beta")?.unwrap_or_default();
    let acts = parse_activations(c, &names, &alphas, &betas)?;
    let clip = c.attr_float("clip")?.map(f64::from);
    if clip.is_some_and(|t| t.is_nan() || t < 0.0) {
        return Err(c.invalid("`clip` must be non-negative"));
    }
    let hidden = c.attr_int("hidden_size")?;
    let linear_before_reset = cell == Cell::Gru && c.attr_int_or("linear_before_reset", 0)? != 0;
    let input_forget = cell == Cell::Lstm && c.attr_int_or("input_forget", 0)? != 0;
    let batch_major = match c.attr_int_or("layout", 0)? {
        0 => false,
        1 => true,
        l => return Err(c.invalid(format!("layout must be 0 or 1, found {l}"))),
    };
    // `hidden_size` is checked against `R` once the inputs are known.
    let hidden = match hidden {
        Some(h) => usize::try_from(h).map_err(|_| c.invalid("negative `hidden_size`"))?,
        None => usize::MAX,
    };
    Ok(Spec {
        cell,
        hidden,
        reversed,
        acts,
        clip,
        linear_before_reset,
        input_forget,
        batch_major,
    })
}

/// One direction's weights and state, ready for the steps.
struct Dir {
    /// `[G*H, H]` recurrence weights.
    r: ValueId,
    /// GRU: `Rb` of the hidden gate (`[H]`), added inside the reset product with
    /// `linear_before_reset`.
    rbh: Option<ValueId>,
    /// LSTM peepholes `[H]` each: input, output, forget.
    peep: Option<[ValueId; 3]>,
    acts: Vec<Act>,
}

/// Is this value a constant equal to zero everywhere?
fn is_const_zero(c: &NodeCtx, v: ValueId) -> bool {
    c.const_value(v)
        .is_some_and(|t| t.to_f64_vec().iter().all(|&x| x == 0.0))
}

/// `RNN`, `GRU`, `LSTM`.
fn recurrent(c: &mut NodeCtx, cell: Cell) -> R<Vec<ValueId>> {
    let mut spec = read_spec(c, cell)?;
    let x = c.input(0)?;
    let w = c.input(1)?;
    let r = c.input(2)?;
    let b = c.opt_input(3)?;
    let seq_lens = c.opt_input(4)?;
    let init_h = c.opt_input(5)?;
    let init_c = if cell == Cell::Lstm {
        c.opt_input(6)?
    } else {
        None
    };
    let peep = if cell == Cell::Lstm {
        c.opt_input(7)?
    } else {
        None
    };
    let dt = c.dtype(x);
    if !dt.is_float() {
        return Err(c.invalid(format!("X must be a float tensor, found {dt}")));
    }
    let x = if spec.batch_major {
        c.transpose(x, &[1, 0, 2])?
    } else {
        x
    };
    let xd = c.dims(x)?;
    let [t_len, batch, input] = xd[..] else {
        return Err(c.invalid(format!("X must have rank 3, found {xd:?}")));
    };
    let nd = spec.reversed.len();
    let g = cell.gates();
    let rd = c.dims(r)?;
    let hidden = match rd[..] {
        [d, gh, h] if d == nd && gh == g * h => h,
        _ => {
            return Err(c.invalid(format!(
                "R has shape {rd:?}, expected [{nd}, {g}*hidden, hidden]"
            )));
        }
    };
    if spec.hidden != usize::MAX && spec.hidden != hidden {
        return Err(c.invalid(format!(
            "hidden_size is {} but R implies {hidden}",
            spec.hidden
        )));
    }
    spec.hidden = hidden;
    let expect = |c: &NodeCtx, v: ValueId, what: &str, want: &[usize]| -> R<()> {
        let d = c.dims(v)?;
        if d != want || c.dtype(v) != dt {
            return Err(c.invalid(format!(
                "{what} has type {}, expected {dt} {want:?}",
                c.ty(v)
            )));
        }
        Ok(())
    };
    expect(c, w, "W", &[nd, g * hidden, input])?;
    expect(c, r, "R", &[nd, g * hidden, hidden])?;
    if let Some(b) = b {
        expect(c, b, "B", &[nd, 2 * g * hidden])?;
    }
    let state_dims: &[usize] = if spec.batch_major {
        &[batch, nd, hidden]
    } else {
        &[nd, batch, hidden]
    };
    for (v, what) in [(init_h, "initial_h"), (init_c, "initial_c")] {
        if let Some(v) = v {
            expect(c, v, what, state_dims)?;
        }
    }
    if let Some(p) = peep {
        expect(c, p, "P", &[nd, 3 * hidden])?;
    }
    // Initial states in `[D, B, H]`.
    let to_dir_major = |c: &mut NodeCtx, v: Option<ValueId>| -> R<Option<ValueId>> {
        match v {
            Some(v) if spec.batch_major => Ok(Some(c.transpose(v, &[1, 0, 2])?)),
            v => Ok(v),
        }
    };
    let init_h = to_dir_major(c, init_h)?;
    let init_c = to_dir_major(c, init_c)?;
    let mask = sequence_mask(c, seq_lens, t_len, batch)?;

    let mut ys = Vec::with_capacity(nd);
    let mut hs = Vec::with_capacity(nd);
    let mut cs = Vec::with_capacity(nd);
    let zero_state = {
        let z = c.scalar(0.0, dt)?;
        c.broadcast(z, &[batch, hidden])?
    };
    for (d, &rev) in spec.reversed.clone().iter().enumerate() {
        let wd = direction_slice(c, w, d)?;
        let rdir = direction_slice(c, r, d)?;
        // Biases: Wb + Rb, except GRU's Rbh with linear_before_reset.
        let (bias, rbh) = match b {
            None => (None, None),
            Some(b) => {
                let bd = direction_slice(c, b, d)?;
                let wb = c.slice_axis(bd, 0, 0, g * hidden)?;
                let rb = c.slice_axis(bd, 0, g * hidden, 2 * g * hidden)?;
                if spec.linear_before_reset {
                    let rbzr = c.slice_axis(rb, 0, 0, 2 * hidden)?;
                    let rbh = c.slice_axis(rb, 0, 2 * hidden, 3 * hidden)?;
                    let zero = c.scalar(0.0, dt)?;
                    let zh = c.broadcast(zero, &[hidden])?;
                    let rb0 = c.concat(&[rbzr, zh], 0)?;
                    (Some(c.binary(BinaryOp::Add, wb, rb0)?), Some(rbh))
                } else {
                    (Some(c.binary(BinaryOp::Add, wb, rb)?), None)
                }
            }
        };
        let bias = bias.filter(|&v| !is_const_zero(c, v));
        let peep_d = match peep {
            Some(p) => {
                let pd = direction_slice(c, p, d)?;
                let mut parts = [pd; 3];
                for (k, part) in parts.iter_mut().enumerate() {
                    *part = gate(c, pd, k, hidden)?;
                }
                Some(parts)
            }
            None => None,
        };
        let per = cell.default_activations().len();
        let dir = Dir {
            r: rdir,
            rbh,
            peep: peep_d,
            acts: spec.acts[d * per..(d + 1) * per].to_vec(),
        };
        // The time-ordered input of this direction.
        let xin = if rev {
            reverse_time(c, x, seq_lens, t_len, batch)?
        } else {
            x
        };
        let mut xw = matmul_t(c, xin, wd)?;
        if let Some(bias) = bias {
            xw = c.binary(BinaryOp::Add, xw, bias)?;
        }
        let mut h = match init_h {
            Some(v) => direction_slice(c, v, d)?,
            None => zero_state,
        };
        let mut cst = match init_c {
            Some(v) => direction_slice(c, v, d)?,
            None => zero_state,
        };
        let mut steps = Vec::with_capacity(t_len);
        for t in 0..t_len {
            let xt = direction_slice(c, xw, t)?;
            let (h_new, c_new) = step(c, &spec, &dir, xt, h, cst)?;
            match &mask {
                Some(m) => {
                    let mt = direction_slice(c, *m, t)?;
                    h = c.select(mt, h_new, h)?;
                    cst = c.select(mt, c_new, cst)?;
                    steps.push(c.select(mt, h_new, zero_state)?);
                }
                None => {
                    h = h_new;
                    cst = c_new;
                    steps.push(h_new);
                }
            }
        }
        let y = stack(c, &steps, &[batch, hidden], dt)?;
        let y = if rev {
            reverse_time(c, y, seq_lens, t_len, batch)?
        } else {
            y
        };
        ys.push(c.reshape(y, &[t_len, 1, batch, hidden])?);
        hs.push(c.reshape(h, &[1, batch, hidden])?);
        cs.push(c.reshape(cst, &[1, batch, hidden])?);
    }
    let mut y = c.concat(&ys, 1)?;
    let mut yh = c.concat(&hs, 0)?;
    let mut yc = c.concat(&cs, 0)?;
    if spec.batch_major {
        y = c.transpose(y, &[2, 0, 1, 3])?;
        yh = c.transpose(yh, &[1, 0, 2])?;
        yc = c.transpose(yc, &[1, 0, 2])?;
    }
    let mut outs = vec![y, yh];
    if cell == Cell::Lstm {
        outs.push(yc);
    }
    Ok(outs)
}

/// Stack `[B, H]` steps into `[T, B, H]` (an empty `[0, B, H]` for no steps).
fn stack(c: &mut NodeCtx, steps: &[ValueId], row: &[usize], dt: DType) -> R<ValueId> {
    let mut dims = vec![1];
    dims.extend_from_slice(row);
    if steps.is_empty() {
        dims[0] = 0;
        let z = c.scalar(0.0, dt)?;
        return c.broadcast(z, &dims);
    }
    let rows = steps
        .iter()
        .map(|&s| c.reshape(s, &dims))
        .collect::<R<Vec<_>>>()?;
    c.concat(&rows, 0)
}

/// `[T, B, 1]` bool: is step `t` within batch entry `b`'s length? `None` without
/// `sequence_lens`, or when it is a constant equal to `T` everywhere.
fn sequence_mask(
    c: &mut NodeCtx,
    lens: Option<ValueId>,
    t_len: usize,
    batch: usize,
) -> R<Option<ValueId>> {
    let Some(lens) = lens else { return Ok(None) };
    if !c.dtype(lens).is_int() || c.dims(lens)? != [batch] {
        return Err(c.invalid(format!(
            "sequence_lens must be an integer [{batch}] tensor, found {}",
            c.ty(lens)
        )));
    }
    if let Some(v) = c.const_value(lens).and_then(|t| t.to_i64_vec()) {
        if v.iter().any(|&l| l < 0 || l as usize > t_len) {
            return Err(c.invalid(format!("sequence_lens {v:?} outside 0..={t_len}")));
        }
        if v.iter().all(|&l| l as usize == t_len) {
            return Ok(None);
        }
    }
    let lens = c.convert(lens, DType::I64)?;
    let lens = c.reshape(lens, &[1, batch, 1])?;
    let t = c.op(
        Op::Iota {
            dtype: DType::I64,
            shape: terafab_ir::Shape::from_static(&[t_len, batch, 1]),
            axis: 0,
        },
        &[],
    )?;
    Ok(Some(c.compare(CompareOp::Lt, t, lens)?))
}

/// Reverse a `[T, B, ...]` tensor in time: the whole axis without `sequence_lens`, else each
/// batch entry's valid prefix (`y[s, b] = x[len_b - 1 - s, b]` for `s < len_b`; the padding
/// stays in place). Applying it twice gives back the input.
fn reverse_time(
    c: &mut NodeCtx,
    x: ValueId,
    lens: Option<ValueId>,
    t_len: usize,
    batch: usize,
) -> R<ValueId> {
    let full = match lens {
        None => true,
        Some(l) => c
            .const_value(l)
            .and_then(|t| t.to_i64_vec())
            .is_some_and(|v| v.iter().all(|&l| l as usize == t_len)),
    };
    let Some(lens) = lens.filter(|_| !full) else {
        return c.op(Op::Reverse { axes: vec![0] }, &[x]);
    };
    let dims = c.dims(x)?;
    let rest: Vec<usize> = dims.get(2..).unwrap_or_default().to_vec();
    let iota = |c: &mut NodeCtx, axis: usize| {
        c.op(
            Op::Iota {
                dtype: DType::I64,
                shape: terafab_ir::Shape::from_static(&[t_len, batch]),
                axis,
            },
            &[],
        )
    };
    let s = iota(c, 0)?;
    let bi = iota(c, 1)?;
    let lens = c.convert(lens, DType::I64)?;
    let lens = c.reshape(lens, &[1, batch])?;
    let one = c.scalar(1.0, DType::I64)?;
    let last = c.binary(BinaryOp::Sub, lens, one)?;
    let flipped = c.binary(BinaryOp::Sub, last, s)?;
    let inside = c.compare(CompareOp::Lt, s, lens)?;
    let src = c.select(inside, flipped, s)?;
    // Row `src * B + b` of `x` flattened to `[T * B, ...]`.
    let nb = c.scalar(batch as f64, DType::I64)?;
    let row = c.binary(BinaryOp::Mul, src, nb)?;
    let row = c.binary(BinaryOp::Add, row, bi)?;
    let mut flat = vec![t_len * batch];
    flat.extend_from_slice(&rest);
    let xf = c.reshape(x, &flat)?;
    c.op(Op::Gather { axis: 0 }, &[xf, row])
}

/// One step of a direction: the new hidden state and (LSTM) cell state from `xw` (`[B, G*H]`,
/// the input projection with biases), `h` and `cst` (`[B, H]`).
fn step(
    c: &mut NodeCtx,
    spec: &Spec,
    dir: &Dir,
    xw: ValueId,
    h: ValueId,
    cst: ValueId,
) -> R<(ValueId, ValueId)> {
    let hid = spec.hidden;
    let lim = spec.clip;
    match spec.cell {
        Cell::Rnn => {
            let hr = matmul_t(c, h, dir.r)?;
            let pre = c.binary(BinaryOp::Add, xw, hr)?;
            let h_new = gate_act(c, dir.acts[0], pre, lim)?;
            Ok((h_new, cst))
        }
        Cell::Gru => {
            let (f, gact) = (dir.acts[0], dir.acts[1]);
            let rzr = c.slice_axis(dir.r, 0, 0, 2 * hid)?;
            let rh = c.slice_axis(dir.r, 0, 2 * hid, 3 * hid)?;
            let hzr = matmul_t(c, h, rzr)?;
            let xzr = c.slice_axis(xw, 1, 0, 2 * hid)?;
            let zr = c.binary(BinaryOp::Add, xzr, hzr)?;
            let z_pre = gate(c, zr, 0, hid)?;
            let r_pre = gate(c, zr, 1, hid)?;
            let z = gate_act(c, f, z_pre, lim)?;
            let rg = gate_act(c, f, r_pre, lim)?;
            let xh = gate(c, xw, 2, hid)?;
            let rec = if spec.linear_before_reset {
                let mut hr = matmul_t(c, h, rh)?;
                if let Some(rbh) = dir.rbh {
                    hr = c.binary(BinaryOp::Add, hr, rbh)?;
                }
                c.binary(BinaryOp::Mul, rg, hr)?
            } else {
                let rh_prev = c.binary(BinaryOp::Mul, rg, h)?;
                matmul_t(c, rh_prev, rh)?
            };
            let h_pre = c.binary(BinaryOp::Add, xh, rec)?;
            let ht = gate_act(c, gact, h_pre, lim)?;
            // (1 - z) * ht + z * h == ht + z * (h - ht)
            let diff = c.binary(BinaryOp::Sub, h, ht)?;
            let zd = c.binary(BinaryOp::Mul, z, diff)?;
            let h_new = c.binary(BinaryOp::Add, ht, zd)?;
            Ok((h_new, cst))
        }
        Cell::Lstm => {
            let (f, g, hact) = (dir.acts[0], dir.acts[1], dir.acts[2]);
            let hr = matmul_t(c, h, dir.r)?;
            let pre = c.binary(BinaryOp::Add, xw, hr)?;
            // Gate order: input, output, forget, cell.
            let mut i_pre = gate(c, pre, 0, hid)?;
            let mut o_pre = gate(c, pre, 1, hid)?;
            let mut f_pre = gate(c, pre, 2, hid)?;
            let c_pre = gate(c, pre, 3, hid)?;
            if let Some([pi, _, pf]) = dir.peep {
                let a = c.binary(BinaryOp::Mul, pi, cst)?;
                i_pre = c.binary(BinaryOp::Add, i_pre, a)?;
                let a = c.binary(BinaryOp::Mul, pf, cst)?;
                f_pre = c.binary(BinaryOp::Add, f_pre, a)?;
            }
            let i = gate_act(c, f, i_pre, lim)?;
            let fg = if spec.input_forget {
                let one = c.scalar(1.0, c.dtype(i))?;
                c.binary(BinaryOp::Sub, one, i)?
            } else {
                gate_act(c, f, f_pre, lim)?
            };
            let cc = gate_act(c, g, c_pre, lim)?;
            let keep = c.binary(BinaryOp::Mul, fg, cst)?;
            let add = c.binary(BinaryOp::Mul, i, cc)?;
            let c_new = c.binary(BinaryOp::Add, keep, add)?;
            if let Some([_, po, _]) = dir.peep {
                let a = c.binary(BinaryOp::Mul, po, c_new)?;
                o_pre = c.binary(BinaryOp::Add, o_pre, a)?;
            }
            let o = gate_act(c, f, o_pre, lim)?;
            let hc = activate(c, hact, c_new)?;
            let h_new = c.binary(BinaryOp::Mul, o, hc)?;
            Ok((h_new, c_new))
        }
    }
}
