//! Linear algebra, normalized exponentials and losses: MatMul, MatMulInteger, QLinearMatMul,
//! Gemm, Einsum, Softmax, LogSoftmax, Hardmax, Attention, NegativeLogLikelihoodLoss,
//! SoftmaxCrossEntropyLoss and Det.
//!
//! Every contraction becomes one `dot_general` (batch dims broadcast first, numpy style);
//! softmax-like ops subtract the running max before exponentiating (numerically stable).

use terafab_ir::shape::broadcast_static;
use terafab_ir::{BinaryOp, CompareOp, DType, Op, ReduceKind, Shape, UnaryOp, ValueId};
use terafab_passes::train::loss::{self, Reduction};

use super::*;

/// Importer results.
type R<T> = Result<T, ImportError>;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("MatMul", matmul),
    ("Gemm", gemm),
    ("Einsum", einsum),
    ("MatMulInteger", matmul_integer),
    ("QLinearMatMul", qlinear_matmul),
    ("Det", det),
    ("Attention", attention),
    ("NegativeLogLikelihoodLoss", nll_loss),
    ("SoftmaxCrossEntropyLoss", sce_loss),
    ("Softmax", |c| softmax_op(c, SoftmaxKind::Softmax)),
    ("LogSoftmax", |c| softmax_op(c, SoftmaxKind::LogSoftmax)),
    ("Hardmax", |c| softmax_op(c, SoftmaxKind::Hardmax)),
];

// ---- shared helpers ----------------------------------------------------------------------

/// `iota` of `dtype` over static `dims`, counting along `axis`.
fn iota(c: &mut NodeCtx, dtype: DType, dims: &[usize], axis: usize) -> R<ValueId> {
    c.op(
        Op::Iota {
            dtype,
            shape: Shape::from_static(dims),
            axis,
        },
        &[],
    )
}

/// `dot_general` with the given batch and contracting dims.
fn dot(
    c: &mut NodeCtx,
    lhs: ValueId,
    rhs: ValueId,
    batch: (&[usize], &[usize]),
    contract: (&[usize], &[usize]),
) -> R<ValueId> {
    c.op(
        Op::DotGeneral {
            lhs_batch: batch.0.to_vec(),
            rhs_batch: batch.1.to_vec(),
            lhs_contract: contract.0.to_vec(),
            rhs_contract: contract.1.to_vec(),
        },
        &[lhs, rhs],
    )
}

/// Numpy broadcast of two static shapes, as an "invalid" error when they do not broadcast.
fn broadcast_dims(c: &NodeCtx, a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    broadcast_static(a, b)
        .map_err(|_| c.invalid(format!("shapes {a:?} and {b:?} do not broadcast")))
}

/// `x * s` for a scalar `s` of `x`'s type (no node when `s == 1`).
fn scale_by(c: &mut NodeCtx, x: ValueId, s: f64) -> R<ValueId> {
    if s == 1.0 {
        return Ok(x);
    }
    let k = c.scalar(s, c.dtype(x))?;
    c.binary(BinaryOp::Mul, x, k)
}

// ---- MatMul and Gemm ---------------------------------------------------------------------

/// Numpy `matmul` of two values of the same type: a 1-d operand is promoted to a matrix (a
/// row for `a`, a column for `b`) and the promoted dim is dropped from the result; batch dims
/// broadcast.
fn matmul_values(c: &mut NodeCtx, a: ValueId, b: ValueId) -> R<ValueId> {
    let (da, db) = (c.dims(a)?, c.dims(b)?);
    if da.is_empty() || db.is_empty() {
        return Err(c.invalid("matmul operands must have rank >= 1"));
    }
    let (a_vec, b_vec) = (da.len() == 1, db.len() == 1);
    let da2 = if a_vec { vec![1, da[0]] } else { da.clone() };
    let db2 = if b_vec { vec![db[0], 1] } else { db.clone() };
    let a2 = c.reshape(a, &da2)?;
    let b2 = c.reshape(b, &db2)?;
    let (ra, rb) = (da2.len(), db2.len());
    let (m, k, kb, n) = (da2[ra - 2], da2[ra - 1], db2[rb - 2], db2[rb - 1]);
    if k != kb {
        return Err(c.invalid(format!("matmul inner dims differ: {da:?} and {db:?}")));
    }
    let (y, mut out) = if rb == 2 {
        // No batch dims on `b`: contract directly; the result is [a_batch..., M, N].
        let y = dot(c, a2, b2, (&[], &[]), (&[ra - 1], &[0]))?;
        let mut out = da2[..ra - 2].to_vec();
        out.extend([m, n]);
        (y, out)
    } else {
        let batch = broadcast_dims(c, &da2[..ra - 2], &db2[..rb - 2])?;
        let nb = batch.len();
        let mut sa = batch.clone();
        sa.extend([m, k]);
        let mut sb = batch.clone();
        sb.extend([k, n]);
        let a3 = c.broadcast(a2, &sa)?;
        let b3 = c.broadcast(b2, &sb)?;
        let bd: Vec<usize> = (0..nb).collect();
        let y = dot(c, a3, b3, (&bd, &bd), (&[nb + 1], &[nb]))?;
        let mut out = batch;
        out.extend([m, n]);
        (y, out)
    };
    if b_vec {
        out.pop();
    }
    if a_vec {
        let l = out.len();
        out.remove(l - 1 - usize::from(!b_vec));
    }
    c.reshape(y, &out)
}

/// ONNX MatMul.
fn matmul(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    Ok(vec![matmul_values(c, a, b)?])
}

/// ONNX Gemm: `alpha * A' B' + beta * C` with optional transposes and a C that broadcasts
/// (unidirectionally) to `[M, N]`.
fn gemm(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let trans_a = c.attr_int_or("transA", 0)? != 0;
    let trans_b = c.attr_int_or("transB", 0)? != 0;
    let alpha = f64::from(c.attr_float_or("alpha", 1.0)?);
    let beta = f64::from(c.attr_float_or("beta", 1.0)?);
    // Before opset 7, C broadcasts only with `broadcast=1`; otherwise it must be [M, N].
    let strict_c = c.opset < 7 && c.attr_int_or("broadcast", 0)? == 0;
    let (a, b) = (c.input(0)?, c.input(1)?);
    if c.rank(a) != 2 || c.rank(b) != 2 {
        return Err(c.invalid("Gemm takes 2-d A and B"));
    }
    // Contract A's K dim (0 if transposed) with B's K dim (1 if transposed).
    let ka = if trans_a { 0 } else { 1 };
    let kb = if trans_b { 1 } else { 0 };
    let (da, db) = (c.dims(a)?, c.dims(b)?);
    if da[ka] != db[kb] {
        return Err(c.invalid(format!("Gemm inner dims differ: {da:?} and {db:?}")));
    }
    let mut y = dot(c, a, b, (&[], &[]), (&[ka], &[kb]))?;
    y = scale_by(c, y, alpha)?;
    if let Some(cv) = c.opt_input(2)? {
        let out = c.dims(y)?;
        let dc = c.dims(cv)?;
        if broadcast_dims(c, &out, &dc)? != out || (strict_c && dc != out) {
            return Err(c.invalid(format!("Gemm C {dc:?} does not broadcast to {out:?}")));
        }
        let cv = scale_by(c, cv, beta)?;
        y = c.binary(BinaryOp::Add, y, cv)?;
    }
    Ok(vec![y])
}

// ---- Softmax, LogSoftmax, Hardmax ----------------------------------------------------------

/// Which normalized exponential.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SoftmaxKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

/// Softmax (or log-softmax) of `x` over `axes`: `exp(x - max) / sum(exp(x - max))`.
fn softmax_values(c: &mut NodeCtx, x: ValueId, axes: &[usize], log: bool) -> R<ValueId> {
    if log {
        return loss::log_softmax(c, x, axes);
    }
    let m = c.reduce(ReduceKind::Max, x, axes, true)?;
    let d = c.binary(BinaryOp::Sub, x, m)?;
    let e = c.unary(UnaryOp::Exp, d)?;
    let s = c.reduce(ReduceKind::Sum, e, axes, true)?;
    c.binary(BinaryOp::Div, e, s)
}

/// One-hot of the (first) maximum of `x` along `axis`, in `x`'s type.
fn hardmax_values(c: &mut NodeCtx, x: ValueId, axis: usize) -> R<ValueId> {
    let dims = c.dims(x)?;
    let am = c.op(
        Op::ArgReduce {
            is_max: true,
            axis,
            keep_dims: true,
            select_last: false,
        },
        &[x],
    )?;
    let idx = iota(c, DType::I64, &dims, axis)?;
    let hot = c.compare(CompareOp::Eq, idx, am)?;
    c.convert(hot, c.dtype(x))
}

/// Softmax, LogSoftmax and Hardmax. Before opset 13 the input is coerced to 2-d at `axis`
/// (default 1) and normalized over the whole trailing block; from 13 on over `axis` (default -1).
fn softmax_op(c: &mut NodeCtx, kind: SoftmaxKind) -> R<Vec<ValueId>> {
    let x = c.input(0)?;
    let rank = c.rank(x);
    let legacy = c.opset < 13;
    let axis = c.attr_int_or("axis", if legacy { 1 } else { -1 })?;
    if rank == 0 {
        return Err(c.invalid("the input must have rank >= 1"));
    }
    let axis = c.axis(axis, rank)?;
    let y = match (kind, legacy) {
        (SoftmaxKind::Hardmax, false) => hardmax_values(c, x, axis)?,
        (SoftmaxKind::Hardmax, true) => {
            let dims = c.dims(x)?;
            let rows: usize = dims[..axis].iter().product();
            let cols: usize = dims[axis..].iter().product();
            let x2 = c.reshape(x, &[rows, cols])?;
            let y2 = hardmax_values(c, x2, 1)?;
            c.reshape(y2, &dims)?
        }
        (k, _) => {
            let axes: Vec<usize> = if legacy {
                (axis..rank).collect()
            } else {
                vec![axis]
            };
            softmax_values(c, x, &axes, k == SoftmaxKind::LogSoftmax)?
        }
    };
    Ok(vec![y])
}

// ---- Einsum ------------------------------------------------------------------------------

/// Labels at or above this value stand for ellipsis dims: `ELLIPSIS + k` is the `k`-th
/// ellipsis dim counted from the right, so ellipses of different ranks align on the right
/// (numpy broadcasting).
const ELLIPSIS: u32 = 1 << 16;

/// One term of an einsum equation: letters (`Some`) and at most one ellipsis (`None`).
fn parse_einsum_term(c: &NodeCtx, term: &str) -> R<Vec<Option<u32>>> {
    let mut toks = Vec::new();
    let mut rest = term;
    while let Some(ch) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("...") {
            if toks.contains(&None) {
                return Err(c.invalid(format!("einsum term `{term}` has two ellipses")));
            }
            toks.push(None);
            rest = r;
        } else if ch.is_ascii_alphabetic() {
            toks.push(Some(u32::from(ch)));
            rest = &rest[1..];
        } else {
            return Err(c.invalid(format!("einsum term `{term}`: bad character `{ch}`")));
        }
    }
    Ok(toks)
}

/// The labels of a term applied to a value of rank `rank` (the ellipsis covers the dims the
/// letters leave over).
fn expand_einsum_term(c: &NodeCtx, toks: &[Option<u32>], rank: usize) -> R<Vec<u32>> {
    let letters = toks.iter().filter(|t| t.is_some()).count();
    let has_ell = toks.len() != letters;
    if rank < letters || (!has_ell && rank != letters) {
        return Err(c.invalid(format!(
            "einsum term with {letters} labels applied to an operand of rank {rank}"
        )));
    }
    let n_ell = rank - letters;
    let mut labels = Vec::with_capacity(rank);
    for t in toks {
        match t {
            Some(l) => labels.push(*l),
            None => labels.extend((0..n_ell as u32).rev().map(|k| ELLIPSIS + k)),
        }
    }
    Ok(labels)
}

/// Takes the diagonal of every pair of dims of `v` that share a label (by a gather on the
/// flattened pair); the diagonal's label goes last.
fn einsum_diagonals(
    c: &mut NodeCtx,
    mut v: ValueId,
    mut labels: Vec<u32>,
) -> R<(ValueId, Vec<u32>)> {
    loop {
        let pair = (0..labels.len()).find_map(|p| {
            (p + 1..labels.len())
                .find(|&q| labels[q] == labels[p])
                .map(|q| (p, q))
        });
        let Some((p, q)) = pair else {
            return Ok((v, labels));
        };
        let dims = c.dims(v)?;
        if dims[p] != dims[q] {
            return Err(c.invalid(format!(
                "einsum: repeated label has dims {} and {}",
                dims[p], dims[q]
            )));
        }
        let n = dims[p];
        let others: Vec<usize> = (0..dims.len()).filter(|&i| i != p && i != q).collect();
        let mut perm = others.clone();
        perm.extend([p, q]);
        let t = c.transpose(v, &perm)?;
        let mut flat: Vec<usize> = others.iter().map(|&i| dims[i]).collect();
        flat.push(n * n);
        let t = c.reshape(t, &flat)?;
        let idx: Vec<i64> = (0..n as i64).map(|i| i * (n as i64 + 1)).collect();
        let idx = c.const_i64s(&idx)?;
        v = c.op(Op::Gather { axis: others.len() }, &[t, idx])?;
        let label = labels[p];
        labels = others.iter().map(|&i| labels[i]).collect();
        labels.push(label);
    }
}

/// Sums `v` over the dims whose labels `keep` rejects.
fn einsum_sum_out(
    c: &mut NodeCtx,
    v: ValueId,
    labels: Vec<u32>,
    keep: impl Fn(u32) -> bool,
) -> R<(ValueId, Vec<u32>)> {
    let axes: Vec<usize> = (0..labels.len()).filter(|&i| !keep(labels[i])).collect();
    if axes.is_empty() {
        return Ok((v, labels));
    }
    let v = c.reduce(ReduceKind::Sum, v, &axes, false)?;
    Ok((v, labels.into_iter().filter(|&l| keep(l)).collect()))
}

/// Contracts two labelled operands into one; labels in `needed` (used by the output or by
/// later operands) are kept, the others shared by both sides are contracted.
fn einsum_pair(
    c: &mut NodeCtx,
    (a, la): (ValueId, Vec<u32>),
    (b, lb): (ValueId, Vec<u32>),
    needed: &[u32],
) -> R<(ValueId, Vec<u32>)> {
    let (a, la) = einsum_sum_out(c, a, la, |l| needed.contains(&l) || lb.contains(&l))?;
    let (b, lb) = einsum_sum_out(c, b, lb, |l| needed.contains(&l) || la.contains(&l))?;
    // Shared labels broadcast (a size-1 side takes the other's size).
    let (mut da, mut db) = (c.dims(a)?, c.dims(b)?);
    for (i, l) in la.iter().enumerate() {
        if let Some(j) = lb.iter().position(|m| m == l)
            && da[i] != db[j]
        {
            match (da[i], db[j]) {
                (1, n) => da[i] = n,
                (n, 1) => db[j] = n,
                (x, y) => {
                    return Err(c.invalid(format!("einsum: a label has dims {x} and {y}")));
                }
            }
        }
    }
    let a = c.broadcast(a, &da)?;
    let b = c.broadcast(b, &db)?;
    let common: Vec<u32> = la.iter().copied().filter(|l| lb.contains(l)).collect();
    let batch: Vec<u32> = common
        .iter()
        .copied()
        .filter(|l| needed.contains(l))
        .collect();
    let contract: Vec<u32> = common
        .iter()
        .copied()
        .filter(|l| !needed.contains(l))
        .collect();
    let pos = |ls: &[u32], l: u32| ls.iter().position(|&m| m == l).unwrap_or(0);
    let lbat: Vec<usize> = batch.iter().map(|&l| pos(&la, l)).collect();
    let rbat: Vec<usize> = batch.iter().map(|&l| pos(&lb, l)).collect();
    let lcon: Vec<usize> = contract.iter().map(|&l| pos(&la, l)).collect();
    let rcon: Vec<usize> = contract.iter().map(|&l| pos(&lb, l)).collect();
    let y = dot(c, a, b, (&lbat, &rbat), (&lcon, &rcon))?;
    let mut labels = batch;
    labels.extend(la.iter().filter(|l| !common.contains(l)));
    labels.extend(lb.iter().filter(|l| !common.contains(l)));
    Ok((y, labels))
}

/// ONNX Einsum: diagonals (repeated labels) by gather, then a left-to-right chain of
/// `dot_general`s, sums over labels not in the output, and a final transpose.
fn einsum(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let eq = c
        .attr_string("equation")?
        .ok_or_else(|| c.invalid("Einsum needs an equation"))?;
    let eq: String = eq.chars().filter(|ch| !ch.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let inputs = c.inputs()?;
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != inputs.len() {
        return Err(c.invalid(format!(
            "einsum equation has {} terms for {} inputs",
            terms.len(),
            inputs.len()
        )));
    }
    let mut ops = Vec::with_capacity(inputs.len());
    let mut max_ell = 0;
    for (t, &v) in terms.iter().zip(&inputs) {
        let toks = parse_einsum_term(c, t)?;
        let labels = expand_einsum_term(c, &toks, c.rank(v))?;
        max_ell = max_ell.max(labels.iter().filter(|&&l| l >= ELLIPSIS).count());
        ops.push((v, labels));
    }
    let all: Vec<u32> = ops.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    let out: Vec<u32> = match rhs {
        Some(r) => {
            let toks = parse_einsum_term(c, r)?;
            let letters = toks.iter().filter(|t| t.is_some()).count();
            let ell = if toks.contains(&None) { max_ell } else { 0 };
            let out = expand_einsum_term(c, &toks, letters + ell)?;
            for (i, l) in out.iter().enumerate() {
                if out[..i].contains(l) || !all.contains(l) {
                    return Err(c.invalid(format!("einsum output term `{r}` is invalid")));
                }
            }
            out
        }
        None => {
            let mut out: Vec<u32> = (0..max_ell as u32).rev().map(|k| ELLIPSIS + k).collect();
            let mut once: Vec<u32> = all
                .iter()
                .copied()
                .filter(|&l| l < ELLIPSIS && all.iter().filter(|&&m| m == l).count() == 1)
                .collect();
            once.sort_unstable();
            out.extend(once);
            out
        }
    };
    let mut diag = Vec::with_capacity(ops.len());
    for (v, labels) in ops {
        diag.push(einsum_diagonals(c, v, labels)?);
    }
    let mut rest = diag.into_iter();
    let first = rest
        .next()
        .ok_or_else(|| c.invalid("Einsum needs at least one input"))?;
    let later: Vec<(ValueId, Vec<u32>)> = rest.collect();
    let mut acc = first;
    for (i, next) in later.iter().enumerate() {
        let mut needed = out.clone();
        needed.extend(later[i + 1..].iter().flat_map(|(_, l)| l.iter().copied()));
        acc = einsum_pair(c, acc, next.clone(), &needed)?;
    }
    let (v, labels) = einsum_sum_out(c, acc.0, acc.1, |l| out.contains(&l))?;
    let perm: Vec<usize> = out
        .iter()
        .map(|l| labels.iter().position(|m| m == l).unwrap_or(0))
        .collect();
    if labels.len() != out.len() {
        return Err(c.invalid("einsum: output labels do not match the operands"));
    }
    Ok(vec![c.transpose(v, &perm)?])
}

// ---- NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss --------------------------------

/// The negative log-likelihood loss of log-probabilities `x` `[N, C, d...]` for class indices
/// `t` `[N, d...]`, with optional per-class `weight` `[C]`, reading the node's `reduction`
/// (none/sum/mean) and `ignore_index` attributes. Targets equal to `ignore_index` contribute
/// neither loss nor weight; the picked log-probability is selected with a one-hot mask.
fn nll_values(c: &mut NodeCtx, x: ValueId, t: ValueId, weight: Option<ValueId>) -> R<ValueId> {
    let reduction = c.attr_string_or("reduction", "mean")?;
    let ignore = c.attr_int("ignore_index")?;
    let reduction = Reduction::parse(&reduction)
        .ok_or_else(|| c.unsupported(format!("reduction `{reduction}` is not supported")))?;
    loss::nll(c, x, t, weight, reduction, ignore)
}

/// ONNX NegativeLogLikelihoodLoss.
fn nll_loss(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let (x, t, w) = (c.input(0)?, c.input(1)?, c.opt_input(2)?);
    Ok(vec![nll_values(c, x, t, w)?])
}

/// ONNX SoftmaxCrossEntropyLoss: the NLL loss of the log-softmax over the class axis (1);
/// the second output is that log-probability.
fn sce_loss(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let (x, t, w) = (c.input(0)?, c.input(1)?, c.opt_input(2)?);
    if c.rank(x) < 2 {
        return Err(c.invalid("the scores must have rank >= 2"));
    }
    let lp = softmax_values(c, x, &[1], true)?;
    Ok(vec![nll_values(c, lp, t, w)?, lp])
}

// ---- Attention ---------------------------------------------------------------------------

/// `a + b` where either may be absent.
fn add_opt(c: &mut NodeCtx, a: Option<ValueId>, b: ValueId) -> R<ValueId> {
    match a {
        Some(a) => c.binary(BinaryOp::Add, a, b),
        None => Ok(b),
    }
}

/// `cond ? 0 : -inf` in `dt` (an additive attention bias).
fn bias_from_bool(c: &mut NodeCtx, cond: ValueId, dt: DType) -> R<ValueId> {
    let zero = c.scalar(0.0, dt)?;
    let ninf = c.scalar(f64::NEG_INFINITY, dt)?;
    c.select(cond, zero, ninf)
}

/// A 3-d `[B, S, H*D]` attention operand as `[B, H, S, D]`; 4-d operands pass through.
fn attention_heads(c: &mut NodeCtx, x: ValueId, heads: Option<i64>) -> R<ValueId> {
    let d = c.dims(x)?;
    match (d.len(), heads) {
        (4, None) => Ok(x),
        (4, Some(h)) if usize::try_from(h) == Ok(d[1]) => Ok(x),
        (3, Some(h)) if h > 0 && d[2] % h as usize == 0 => {
            let h = h as usize;
            let x = c.reshape(x, &[d[0], d[1], h, d[2] / h])?;
            c.transpose(x, &[0, 2, 1, 3])
        }
        (4, Some(h)) => Err(c.invalid(format!(
            "a num_heads attribute of {h} does not match the 4-d input {d:?}"
        ))),
        (3, _) => Err(c.invalid(
            "3-d attention inputs need q_num_heads and kv_num_heads dividing the hidden sizes",
        )),
        _ => Err(c.invalid(format!("attention inputs must be 3-d or 4-d, found {d:?}"))),
    }
}

/// Softmax over the last axis that maps an all `-inf` row to zeros instead of NaN.
fn safe_softmax_last(c: &mut NodeCtx, x: ValueId) -> R<ValueId> {
    let dt = c.dtype(x);
    let last = c.rank(x) - 1;
    let m = c.reduce(ReduceKind::Max, x, &[last], true)?;
    let ninf = c.scalar(f64::NEG_INFINITY, dt)?;
    let zero = c.scalar(0.0, dt)?;
    let one = c.scalar(1.0, dt)?;
    let masked = c.compare(CompareOp::Eq, m, ninf)?;
    let m = c.select(masked, zero, m)?;
    let d = c.binary(BinaryOp::Sub, x, m)?;
    let e = c.unary(UnaryOp::Exp, d)?;
    let s = c.reduce(ReduceKind::Sum, e, &[last], true)?;
    let empty = c.compare(CompareOp::Eq, s, zero)?;
    let s = c.select(empty, one, s)?;
    c.binary(BinaryOp::Div, e, s)
}

/// Batched `x @ y` of `[B, Hq, S, X]` by `[B, Hkv, *, *]` with grouped heads (GQA): `x`'s
/// heads are viewed as `[Hkv, Hq/Hkv]` so every group of query heads shares one kv head.
/// `y_contract` is the dim of `y` that is contracted (2 or 3); the result is `[B, Hq, S, Y]`.
fn grouped_matmul(c: &mut NodeCtx, x: ValueId, y: ValueId, y_contract: usize) -> R<ValueId> {
    let (dx, dy) = (c.dims(x)?, c.dims(y)?);
    let (b, hq, s) = (dx[0], dx[1], dx[2]);
    let hkv = dy[1];
    if hkv == 0 || hq % hkv != 0 || dy[0] != b || dx[3] != dy[y_contract] {
        return Err(c.invalid(format!(
            "attention operands {dx:?} and {dy:?} do not match (heads must divide evenly)"
        )));
    }
    let x5 = c.reshape(x, &[b, hkv, hq / hkv, s, dx[3]])?;
    let r = dot(c, x5, y, (&[0, 1], &[0, 1]), (&[4], &[y_contract]))?;
    let n = dy[5 - y_contract];
    c.reshape(r, &[b, hq, s, n])
}

/// ONNX Attention (opsets 23 and 24): scaled dot-product attention with optional masks,
/// causal masking (bottom-right aligned), softcap, grouped kv heads, a kv cache and the
/// `qk_matmul_output` debug output.
fn attention(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let is_causal = c.attr_int_or("is_causal", 0)? != 0;
    let q_heads = c.attr_int("q_num_heads")?;
    let kv_heads = c.attr_int("kv_num_heads")?;
    let mode = c.attr_int_or("qk_matmul_output_mode", 0)?;
    let scale = c.attr_float("scale")?;
    let softcap = c.attr_float_or("softcap", 0.0)?;
    let precision = c.attr_int("softmax_precision")?;
    // Sliding windows (opset 25): -1 leaves a side unbounded.
    let (left, right) = if c.opset >= 25 {
        (
            c.attr_int_or("left_window_size", -1)?,
            c.attr_int_or("right_window_size", -1)?,
        )
    } else {
        (-1, -1)
    };
    if left < -1 || right < -1 {
        return Err(c.invalid("window sizes must be -1 or non-negative"));
    }
    if !(0..=3).contains(&mode) {
        return Err(c.invalid(format!("qk_matmul_output_mode {mode} is not 0..3")));
    }
    let (q0, k0, v0) = (c.input(0)?, c.input(1)?, c.input(2)?);
    let rank = c.rank(q0);
    if c.rank(k0) != rank || c.rank(v0) != rank {
        return Err(c.invalid("Q, K and V must have the same rank"));
    }
    let dt = c.dtype(q0);
    let q = attention_heads(c, q0, q_heads)?;
    let k = attention_heads(c, k0, kv_heads)?;
    let v = attention_heads(c, v0, kv_heads)?;
    let dq = c.dims(q)?;
    let (batch, sq, head) = (dq[0], dq[2], dq[3]);
    // Q and K are each scaled by sqrt(scale), rounded to the input type.
    let scale = scale.map_or(1.0 / (head as f64).sqrt(), f64::from);
    let s = c.scalar(scale.sqrt(), dt)?;
    let q = c.binary(BinaryOp::Mul, q, s)?;
    // The kv cache.
    let past = match (c.opt_input(4)?, c.opt_input(5)?) {
        (Some(pk), Some(pv)) => Some((pk, pv)),
        (None, None) => None,
        _ => return Err(c.invalid("past_key and past_value must be given together")),
    };
    let nonpad = c.opt_input(6)?;
    if nonpad.is_some() && past.is_some() {
        return Err(c.invalid("nonpad_kv_seqlen cannot be combined with past_key/past_value"));
    }
    let past_len = match past {
        Some((pk, _)) => c.dims(pk)?.get(2).copied().unwrap_or(0),
        None => 0,
    };
    let (k, v) = match past {
        Some((pk, pv)) => (c.concat(&[pk, k], 2)?, c.concat(&[pv, v], 2)?),
        None => (k, v),
    };
    let (present_k, present_v) = (k, v);
    let skv = c.dims(k)?[2];
    let ks = c.binary(BinaryOp::Mul, k, s)?;
    // The additive bias: mask (padded to the kv length), causal frontier, padding.
    let mut mask = match c.opt_input(3)? {
        Some(m) => {
            let md = c.dims(m)?;
            let Some(&last) = md.last() else {
                return Err(c.invalid("attn_mask must have rank >= 1"));
            };
            if last > skv {
                return Err(c.invalid(format!(
                    "attn_mask has {last} keys, more than the {skv} of K"
                )));
            }
            let is_bool = c.dtype(m) == DType::Bool;
            if !is_bool && c.dtype(m) != dt {
                return Err(c.invalid("a float attn_mask must have Q's type"));
            }
            let m = if last < skv {
                let pad_val = if is_bool {
                    c.scalar(0.0, DType::Bool)?
                } else {
                    c.scalar(f64::NEG_INFINITY, dt)?
                };
                let mut high = vec![0; md.len()];
                high[md.len() - 1] = (skv - last) as i64;
                c.op(
                    Op::Pad {
                        low: vec![0; md.len()],
                        high,
                        interior: vec![0; md.len()],
                    },
                    &[m, pad_val],
                )?
            } else {
                m
            };
            Some(if is_bool {
                bias_from_bool(c, m, dt)?
            } else {
                m
            })
        }
        None => None,
    };
    let nonpad = match nonpad {
        Some(n) => {
            if c.dims(n)? != [batch] {
                return Err(c.invalid("nonpad_kv_seqlen must have shape [batch]"));
            }
            Some(c.convert(n, DType::I64)?)
        }
        None => None,
    };
    // Causal and sliding-window masks compare key positions `j` with the query's absolute
    // position `i + offset` (offset: per batch `nonpad - Sq`, else the past length).
    if is_causal || left >= 0 || right >= 0 {
        let i = iota(c, DType::I64, &[sq, skv], 0)?;
        let j = iota(c, DType::I64, &[sq, skv], 1)?;
        let pos = match nonpad {
            Some(n) => {
                let sqc = c.scalar(sq as f64, DType::I64)?;
                let off = c.binary(BinaryOp::Sub, n, sqc)?;
                let off = c.reshape(off, &[batch, 1, 1])?;
                c.binary(BinaryOp::Add, i, off)?
            }
            None => {
                let off = c.scalar(past_len as f64, DType::I64)?;
                c.binary(BinaryOp::Add, i, off)?
            }
        };
        let mut allowed_sets = Vec::new();
        if is_causal {
            allowed_sets.push(c.compare(CompareOp::Le, j, pos)?);
        }
        if left >= 0 || right >= 0 {
            let diff = c.binary(BinaryOp::Sub, pos, j)?;
            let mut keep = None;
            for (bound, sign) in [(left, 1.0), (right, -1.0)] {
                if bound >= 0 {
                    let d = scale_by(c, diff, sign)?;
                    let k = c.scalar(bound as f64, DType::I64)?;
                    let ok = c.compare(CompareOp::Le, d, k)?;
                    keep = Some(match keep {
                        Some(p) => c.binary(BinaryOp::And, p, ok)?,
                        None => ok,
                    });
                }
            }
            allowed_sets.extend(keep);
        }
        for allowed in allowed_sets {
            let allowed = if nonpad.is_some() {
                c.reshape(allowed, &[batch, 1, sq, skv])?
            } else {
                allowed
            };
            let b = bias_from_bool(c, allowed, dt)?;
            mask = Some(add_opt(c, mask, b)?);
        }
    }
    if let Some(n) = nonpad {
        let j = iota(c, DType::I64, &[batch, skv], 1)?;
        let n = c.reshape(n, &[batch, 1])?;
        let keep = c.compare(CompareOp::Lt, j, n)?;
        let keep = c.reshape(keep, &[batch, 1, 1, skv])?;
        let pad = bias_from_bool(c, keep, dt)?;
        mask = Some(add_opt(c, mask, pad)?);
    }
    // Scores, softcap, bias, softmax.
    let mut qk = grouped_matmul(c, q, ks, 3)?;
    if softcap > 0.0 {
        let sc = f64::from(softcap);
        let t = scale_by(c, qk, 1.0 / sc)?;
        let t = c.unary(UnaryOp::Tanh, t)?;
        qk = scale_by(c, t, sc)?;
    }
    let mut qk_out = qk;
    let biased = match mask {
        Some(m) => c.binary(BinaryOp::Add, qk, m)?,
        None => qk,
    };
    if mode == 2 {
        qk_out = biased;
    }
    let sm_in = match precision {
        Some(p) => {
            let to = crate::onnx::tensor::dtype_of(p as i32)
                .map_err(|e| c.unsupported(format!("softmax_precision {p}: {e}")))?;
            if !to.is_float() {
                return Err(c.invalid("softmax_precision must be a float type"));
            }
            c.convert(biased, to)?
        }
        None => biased,
    };
    let mut p = safe_softmax_last(c, sm_in)?;
    if let Some(m) = mask {
        // Rows whose bias is all -inf attend nothing: their probabilities are 0.
        let last = c.rank(m) - 1;
        let mm = c.reduce(ReduceKind::Max, m, &[last], true)?;
        let ninf = c.scalar(f64::NEG_INFINITY, dt)?;
        let dead = c.compare(CompareOp::Eq, mm, ninf)?;
        let zero = c.scalar(0.0, c.dtype(p))?;
        p = c.select(dead, zero, p)?;
    }
    let p = c.convert(p, dt)?;
    if mode == 3 {
        qk_out = p;
    }
    let mut y = grouped_matmul(c, p, v, 2)?;
    if rank == 3 {
        let d = c.dims(y)?;
        let yt = c.transpose(y, &[0, 2, 1, 3])?;
        y = c.reshape(yt, &[d[0], d[2], d[1] * d[3]])?;
    }
    let mut outs = vec![y, present_k, present_v];
    if c.output_requested(3) {
        outs.push(qk_out);
    }
    Ok(outs)
}

// ---- MatMulInteger and QLinearMatMul ------------------------------------------------------

/// A per-tensor or per-row quantization parameter of a `[..., M, K]` operand: a 1-d vector of
/// `M` elements becomes `[M, 1]` so it broadcasts along rows; anything else is kept.
fn per_row(c: &mut NodeCtx, v: ValueId, m: usize) -> R<ValueId> {
    if c.dims(v)? == [m] && m != 1 {
        c.reshape(v, &[m, 1])
    } else {
        Ok(v)
    }
}

/// `x - zero_point` in i32, with the zero point optional and per-row when `row` is given.
fn dequant_i32(c: &mut NodeCtx, x: ValueId, zp: Option<ValueId>, row: Option<usize>) -> R<ValueId> {
    if !matches!(c.dtype(x), DType::I8 | DType::U8) {
        return Err(c.unsupported(format!(
            "quantized inputs of type {} are not supported (int8/uint8 only)",
            c.dtype(x)
        )));
    }
    let x = c.convert(x, DType::I32)?;
    let Some(zp) = zp else {
        return Ok(x);
    };
    let zp = match row {
        Some(m) => per_row(c, zp, m)?,
        None => zp,
    };
    let zp = c.convert(zp, DType::I32)?;
    c.binary(BinaryOp::Sub, x, zp)
}

/// The number of rows `M` of a matmul operand (1 for a vector).
fn rows_of(c: &NodeCtx, x: ValueId) -> R<usize> {
    let d = c.dims(x)?;
    Ok(if d.len() >= 2 { d[d.len() - 2] } else { 1 })
}

/// ONNX MatMulInteger: `(A - a_zero_point) @ (B - b_zero_point)` in i32.
fn matmul_integer(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    let m = rows_of(c, a)?;
    let (azp, bzp) = (c.opt_input(2)?, c.opt_input(3)?);
    let a = dequant_i32(c, a, azp, Some(m))?;
    let b = dequant_i32(c, b, bzp, None)?;
    Ok(vec![matmul_values(c, a, b)?])
}

/// ONNX QLinearMatMul: the i32 product of the zero-point-shifted operands, rescaled by
/// `a_scale * b_scale / y_scale` (computed in the scales' type, applied in f64), rounded half
/// to even, shifted by `y_zero_point` and saturated to the output type.
fn qlinear_matmul(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let (a, a_scale, azp) = (c.input(0)?, c.input(1)?, c.opt_input(2)?);
    let (b, b_scale, bzp) = (c.input(3)?, c.input(4)?, c.opt_input(5)?);
    let (y_scale, yzp) = (c.input(6)?, c.opt_input(7)?);
    let m = rows_of(c, a)?;
    let out_ty = match yzp {
        Some(z) => c.dtype(z),
        None => c.dtype(a),
    };
    let ai = dequant_i32(c, a, azp, Some(m))?;
    let bi = dequant_i32(c, b, bzp, None)?;
    let prod = matmul_values(c, ai, bi)?;
    let sa = per_row(c, a_scale, m)?;
    let f = c.binary(BinaryOp::Mul, sa, b_scale)?;
    let f = c.binary(BinaryOp::Div, f, y_scale)?;
    let f = c.convert(f, DType::F64)?;
    let p = c.convert(prod, DType::F64)?;
    let mut y = c.binary(BinaryOp::Mul, p, f)?;
    if let Some(z) = yzp {
        let z = c.convert(z, DType::F64)?;
        y = c.binary(BinaryOp::Add, y, z)?;
    }
    let y = c.unary(UnaryOp::Round, y)?;
    // Float to int conversion saturates, which is the final clip.
    Ok(vec![c.convert(y, out_ty)?])
}

// ---- Det ---------------------------------------------------------------------------------

/// ONNX Det: Gaussian elimination with partial pivoting, unrolled over the (static) matrix
/// size; row swaps are one-hot blends, so the pivot choice stays data dependent. The
/// determinant is the product of the pivots times the permutation's sign.
fn det(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let x = c.input(0)?;
    let dims = c.dims(x)?;
    let dt = c.dtype(x);
    let r = dims.len();
    if r < 2 || dims[r - 1] != dims[r - 2] || !dt.is_float() {
        return Err(c.invalid(format!(
            "Det takes float square matrices [*, M, M], found {dims:?}"
        )));
    }
    let n = dims[r - 1];
    let batch: usize = dims[..r - 2].iter().product();
    let mut a = c.reshape(x, &[batch, n, n])?;
    let mut sign = c.scalar(1.0, dt)?;
    let rows = iota(c, DType::I64, &[batch, n], 1)?;
    let zero = c.scalar(0.0, dt)?;
    let one = c.scalar(1.0, dt)?;
    let minus_one = c.scalar(-1.0, dt)?;
    for k in 0..n {
        // Pivot: the row >= k with the largest |a[i, k]|.
        let col = c.slice_axis(a, 2, k, k + 1)?;
        let col = c.reshape(col, &[batch, n])?;
        let abs = c.unary(UnaryOp::Abs, col)?;
        let kk = c.scalar(k as f64, DType::I64)?;
        let below = c.compare(CompareOp::Ge, rows, kk)?;
        let cand = c.select(below, abs, minus_one)?;
        let p = c.op(
            Op::ArgReduce {
                is_max: true,
                axis: 1,
                keep_dims: true,
                select_last: false,
            },
            &[cand],
        )?;
        let hot_p = c.compare(CompareOp::Eq, rows, p)?;
        let hot_p = c.convert(hot_p, dt)?;
        let hot_k = c.compare(CompareOp::Eq, rows, kk)?;
        let hot_k = c.convert(hot_k, dt)?;
        // Swap rows k and p: row k += (row p - row k), row p -= (row p - row k).
        let row_p = dot(c, hot_p, a, (&[0], &[0]), (&[1], &[1]))?;
        let row_k = c.slice_axis(a, 1, k, k + 1)?;
        let row_k = c.reshape(row_k, &[batch, n])?;
        let diff = c.binary(BinaryOp::Sub, row_p, row_k)?;
        let diff = c.reshape(diff, &[batch, 1, n])?;
        let w = c.binary(BinaryOp::Sub, hot_k, hot_p)?;
        let w = c.reshape(w, &[batch, n, 1])?;
        let upd = c.binary(BinaryOp::Mul, w, diff)?;
        a = c.binary(BinaryOp::Add, a, upd)?;
        let same = c.compare(CompareOp::Eq, p, kk)?;
        let flip = c.select(same, one, minus_one)?;
        let flip = c.reshape(flip, &[batch])?;
        sign = c.binary(BinaryOp::Mul, sign, flip)?;
        // Eliminate below the pivot (a zero pivot leaves the column as is: det is 0).
        let pivot_row = c.slice_axis(a, 1, k, k + 1)?;
        let pivot = c.slice_axis(pivot_row, 2, k, k + 1)?;
        let pivot = c.reshape(pivot, &[batch, 1])?;
        let col = c.slice_axis(a, 2, k, k + 1)?;
        let col = c.reshape(col, &[batch, n])?;
        let factor = c.binary(BinaryOp::Div, col, pivot)?;
        let after = c.compare(CompareOp::Gt, rows, kk)?;
        let factor = c.select(after, factor, zero)?;
        let singular = c.compare(CompareOp::Eq, pivot, zero)?;
        let factor = c.select(singular, zero, factor)?;
        let factor = c.reshape(factor, &[batch, n, 1])?;
        let upd = c.binary(BinaryOp::Mul, factor, pivot_row)?;
        a = c.binary(BinaryOp::Sub, a, upd)?;
    }
    let flat = c.reshape(a, &[batch, n * n])?;
    let idx: Vec<i64> = (0..n as i64).map(|i| i * (n as i64 + 1)).collect();
    let idx = c.const_i64s(&idx)?;
    let diag = c.op(Op::Gather { axis: 1 }, &[flat, idx])?;
    let d = c.reduce(ReduceKind::Prod, diag, &[1], false)?;
    let d = c.binary(BinaryOp::Mul, d, sign)?;
    Ok(vec![c.reshape(d, &dims[..r - 2])?])
}
