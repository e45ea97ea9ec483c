//! Inexact constant rules: re-association of constants (`(x * c1) * c2 -> x * (c1 * c2)`),
//! division by a constant as multiplication by its reciprocal, distribution of a constant scale
//! over a constant shift, and scales folded into the weights of `conv` and `dot_general`
//! (batch-norm folding).
//!
//! Every new constant is computed in the rule by the interpreter ([`eval_op`]), up to
//! [`CONST_LIMIT`] elements, and only kept when it is tame: finite, and zero or normal for floats
//! (a product that overflows or underflows where the original program's would not is refused).
//! The rules re-round floats, so they are [`Accuracy::Inexact`](super::rules::Accuracy): the
//! tolerances are stated per rule. On integers (wrapping arithmetic) re-association of `+`,
//! `-` and `*` is exact; the division rules only apply to floats.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use egg::{Id, Symbol};
use terafab_ir::interp::{Bindings, eval_op};
use terafab_ir::{BinaryOp, DType, Element, Op, Tensor};

use super::rules::{Expr, Match, RuleDef, inexact};

/// The tolerance of elementwise re-association: a handful of extra roundings of f32 values of
/// moderate magnitude (each at most half an ulp, 6e-8 relative, of an intermediate value).
const ELEMENTWISE_RTOL: f64 = 1e-5;

/// The tolerance of scales folded into weights: every product of the contraction is rounded
/// once more (the scaled weight), half an ulp each, summed over the contraction.
const CONTRACTION_RTOL: f64 = 1e-4;

/// The most elements of a constant a rule computes (4 MiB of f32).
pub const CONST_LIMIT: usize = 1 << 20;

/// The inexact constant rules.
pub const RULES: &[RuleDef] = &[
    // (x * c1) * c2 == x * (c1 * c2) (either operand order at both levels).
    inexact(
        "mul-const-assoc",
        "(mul ?a ?b)",
        mul_const_assoc,
        ELEMENTWISE_RTOL,
    ),
    // (x + c1) + c2 == x + (c1 + c2); (x - c1) + c2 == x + (c2 - c1).
    inexact(
        "add-const-assoc",
        "(add ?a ?b)",
        add_const_assoc,
        ELEMENTWISE_RTOL,
    ),
    // (x + c1) - c2 == x + (c1 - c2); (x - c1) - c2 == x - (c1 + c2).
    inexact(
        "sub-const-assoc",
        "(sub ?a ?b)",
        sub_const_assoc,
        ELEMENTWISE_RTOL,
    ),
    // (x / c1) / c2 == x / (c1 * c2); (x * c1) / c2 == x * (c1 / c2) (floats).
    inexact(
        "div-const-assoc",
        "(div ?a ?b)",
        div_const_assoc,
        ELEMENTWISE_RTOL,
    ),
    // x / c == x * (1 / c) for floats (exact only for powers of two: see `div-pow2`).
    inexact(
        "div-const-recip",
        "(div ?a ?b)",
        div_const_recip,
        ELEMENTWISE_RTOL,
    ),
    // (y + c1) * c2 == y * c2 + c1 * c2.
    inexact(
        "mul-add-const-dist",
        "(mul ?a ?b)",
        mul_add_const_dist,
        ELEMENTWISE_RTOL,
    ),
    // (y - c1) * c2 == y * c2 - c1 * c2.
    inexact(
        "mul-sub-const-dist",
        "(mul ?a ?b)",
        mul_sub_const_dist,
        ELEMENTWISE_RTOL,
    ),
    // conv(x, W) * c == conv(x, W * c') for a per-output-channel (or scalar) constant c.
    inexact(
        "conv-mul-const",
        "(mul ?a ?b)",
        conv_mul_const,
        CONTRACTION_RTOL,
    ),
    // dot_general(x, W) * c == dot_general(x, W * c') for c scalar or per rhs-free (output
    // column) element.
    inexact(
        "dot-mul-const",
        "(mul ?a ?b)",
        dot_mul_const,
        CONTRACTION_RTOL,
    ),
];

/// The element types the rules compute constants in (float8 types are left alone).
fn supported(d: DType) -> bool {
    matches!(d, DType::F64 | DType::F32 | DType::F16 | DType::BF16) || d.is_int()
}

/// The smallest positive normal value of a float type.
fn min_normal(d: DType) -> f64 {
    match d {
        DType::F64 => f64::MIN_POSITIVE,
        DType::F16 => 6.103_515_625e-5,
        _ => f64::from(f32::MIN_POSITIVE),
    }
}

/// Finite, and zero or normal (floats); any integer.
fn tame(t: &Tensor) -> bool {
    let d = t.dtype();
    if !d.is_float() {
        return true;
    }
    // f32 and f64 by their bits, in blocks without early exits (so the loop vectorizes).
    if let Ok(v) = t.typed::<f32>() {
        return tame_bits(v, |x| u64::from(x.to_bits() & 0x7fff_ffff), 0x7f80_0000);
    }
    if let Ok(v) = t.typed::<f64>() {
        return tame_bits(
            v,
            |x| x.to_bits() & 0x7fff_ffff_ffff_ffff,
            0x7ff0_0000_0000_0000,
        );
    }
    let min = min_normal(d);
    terafab_ir::with_data!(t.data(), v, _T => v.iter().all(|x| {
        let x = Element::to_f64(*x);
        x.is_finite() && (x == 0.0 || x.abs() >= min)
    }))
}

/// Whether every element's magnitude bits (`abs_bits`: the bits without the sign) are zero or
/// those of a normal number: a nonzero exponent field below all ones (`exp_mask`, which also
/// is the bits of infinity).
fn tame_bits<T: Copy>(v: &[T], abs_bits: impl Fn(T) -> u64, exp_mask: u64) -> bool {
    // The smallest normal has the exponent field 1: its bits are the mask's lowest bit.
    let min = exp_mask & exp_mask.wrapping_neg();
    v.chunks(1024).all(|block| {
        block.iter().fold(true, |ok, &x| {
            let b = abs_bits(x);
            ok & ((b == 0) | (b.wrapping_sub(min) < exp_mask - min))
        })
    })
}

/// What identifies an operand of a cached evaluation: its buffer (tensors share their data, so
/// the constants of the e-graph's side table keep their address), element type and shape.
type OperandKey = (usize, DType, Vec<usize>);

/// A cached evaluation: the op (name and attributes) and its operands, to the operands kept
/// alive and the result.
type Evals = HashMap<(String, Vec<OperandKey>), (Vec<Tensor>, Option<Tensor>)>;

/// The evaluations of a run, and the operands and results among them known to be tame (so that
/// a weight tensor scaled several times is checked once; every key names a tensor that an
/// entry of `evals` keeps alive).
#[derive(Default)]
struct Cache {
    evals: Evals,
    tame: HashSet<OperandKey>,
}

/// The most evaluations [`CACHE`] holds before it starts over.
const CACHE_ENTRIES: usize = 4096;

thread_local! {
    /// Evaluations of this thread's current eqsat run, so that the rules (applied again on
    /// every iteration) compute each constant once. The operands are kept alive with the
    /// result, so no buffer address is reused while its entry exists.
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Forget the cached evaluations (at the start and end of every eqsat run).
pub fn clear_cache() {
    CACHE.with(|c| *c.borrow_mut() = Cache::default());
}

fn operand_key(t: &Tensor) -> OperandKey {
    let addr = terafab_ir::with_data!(t.data(), v, _T => v.as_ptr() as usize);
    (addr, t.dtype(), t.shape().to_vec())
}

/// `op` on constant operands through the interpreter, when tame and small enough.
fn eval(op: Op, inputs: &[Tensor]) -> Option<Tensor> {
    let keys: Vec<OperandKey> = inputs.iter().map(operand_key).collect();
    let key = (
        format!("{}{}", op.name(), super::language::attrs_symbol(&op)),
        keys.clone(),
    );
    let known = CACHE.with(|c| {
        let c = c.borrow();
        match c.evals.get(&key) {
            Some((_, out)) => Err(out.clone()),
            None => Ok(keys
                .iter()
                .map(|k| c.tame.contains(k))
                .collect::<Vec<bool>>()),
        }
    });
    let known = match known {
        Ok(known) => known,
        Err(hit) => return hit,
    };
    let checked = inputs
        .iter()
        .zip(&known)
        .all(|(t, &k)| supported(t.dtype()) && (k || tame(t)));
    let out = if checked {
        eval_tame(&op, inputs)
    } else {
        None
    };
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.evals.len() >= CACHE_ENTRIES {
            *c = Cache::default();
        }
        c.evals.insert(key, (inputs.to_vec(), out.clone()));
        if checked {
            c.tame.extend(keys);
        }
        if let Some(out) = &out {
            c.tame.insert(operand_key(out));
        }
    });
    out
}

/// `op` on tame operands of supported types, when the result is tame and small enough.
fn eval_tame(op: &Op, inputs: &[Tensor]) -> Option<Tensor> {
    let out = match (op, inputs) {
        (Op::Binary(BinaryOp::Mul), [a, b]) => scale_along(a, b),
        _ => None,
    };
    let out = match out {
        Some(out) => out,
        None => eval_op(op, inputs, &Bindings::default()).ok()?.pop()?,
    };
    (out.len() <= CONST_LIMIT && tame(&out)).then_some(out)
}

/// `a * b` for f32 or f64 `a` and a `b` that only varies along a block of consecutive dims of
/// `a` (a per-channel scale of a weight tensor, or a scalar), with the result shaped as `a`:
/// typed loops over the rows of `a`, bitwise the interpreter's product (which computes in f64
/// and rounds once). `None` (use the interpreter) for anything else.
fn scale_along(a: &Tensor, b: &Tensor) -> Option<Tensor> {
    if a.dtype() != b.dtype() {
        return None;
    }
    let (mid, inner) = scale_block(a.shape(), b.shape())?;
    if let (Ok(x), Ok(s)) = (a.typed::<f32>(), b.typed::<f32>()) {
        let f = |x: f32, y: f32| (f64::from(x) * f64::from(y)) as f32;
        return Tensor::from_vec(a.shape().to_vec(), scale_rows(x, s, mid, inner, f)).ok();
    }
    if let (Ok(x), Ok(s)) = (a.typed::<f64>(), b.typed::<f64>()) {
        let f = |x: f64, y: f64| x * y;
        return Tensor::from_vec(a.shape().to_vec(), scale_rows(x, s, mid, inner, f)).ok();
    }
    None
}

/// `(mid, inner)` when `b` (right-aligned to `a`) has extent 1 on every dim of `a` except a
/// block of consecutive dims where it has `a`'s extents: `mid` is the block's element count
/// (`b`'s), `inner` the count of the dims after it. `None` when `b` is of another form or
/// either is empty.
fn scale_block(a: &[usize], b: &[usize]) -> Option<(usize, usize)> {
    let bd = aligned_dims(b, a.len())?;
    if a.contains(&0) {
        return None;
    }
    // The block `first..end` of dims where `b` is not 1 (empty, at the front, for a scalar).
    let (first, end) = match (0..a.len()).position(|i| bd[i] != 1) {
        Some(first) => (first, (0..a.len()).rposition(|i| bd[i] != 1)? + 1),
        None => (0, 0),
    };
    if (first..end).any(|i| bd[i] != a[i]) {
        return None;
    }
    Some((a[first..end].iter().product(), a[end..].iter().product()))
}

/// `dims` right-aligned to rank `r` (padded with 1s in front); `None` if `dims` is longer.
fn aligned_dims(dims: &[usize], r: usize) -> Option<Vec<usize>> {
    let pad = r.checked_sub(dims.len())?;
    Some(
        std::iter::repeat_n(1, pad)
            .chain(dims.iter().copied())
            .collect(),
    )
}

/// `f(x[i], s[(i / inner) % mid])` for every `i` (`s` has `mid` elements).
fn scale_rows<T: Copy>(
    x: &[T],
    s: &[T],
    mid: usize,
    inner: usize,
    f: impl Fn(T, T) -> T,
) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len());
    if inner == 1 {
        for block in x.chunks(mid) {
            out.extend(block.iter().zip(s).map(|(&x, &y)| f(x, y)));
        }
    } else {
        for block in x.chunks(mid * inner) {
            for (row, &y) in block.chunks(inner).zip(s) {
                out.extend(row.iter().map(|&x| f(x, y)));
            }
        }
    }
    out
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Option<Tensor> {
    eval(Op::Binary(op), &[a.clone(), b.clone()])
}

fn constant(t: Tensor) -> Expr {
    Expr::Node(Op::Constant { value: t }, vec![])
}

fn node(op: BinaryOp, a: Expr, b: Expr) -> Expr {
    Expr::Node(Op::Binary(op), vec![a, b])
}

fn is_constant(m: &Match<'_>, id: Id) -> bool {
    !m.constants(id).is_empty()
}

/// `(constant, other operand)` for every constant operand of the binary root `?a op ?b`
/// (`right`: only a constant right operand).
fn const_operand(m: &Match<'_>, right: bool) -> Vec<(Tensor, Id)> {
    let (Some(a), Some(b)) = (m.var("?a"), m.var("?b")) else {
        return vec![];
    };
    if !m.ty().is_some_and(|t| supported(t.dtype)) {
        return vec![];
    }
    let mut out: Vec<(Tensor, Id)> = m.constants(b).into_iter().map(|c| (c, a)).collect();
    if !right {
        out.extend(m.constants(a).into_iter().map(|c| (c, b)));
    }
    out
}

/// `(x, c)` for every `x op c` (and `c op x` when `commutes`) in e-class `id` with a constant
/// `c` and a non-constant `x`.
fn with_const(m: &Match<'_>, id: Id, kind: &str, commutes: bool) -> Vec<(Id, Tensor)> {
    let mut out = Vec::new();
    for (_, ins) in m.ops(id, Symbol::from(kind)) {
        let &[p, q] = ins.as_slice() else { continue };
        if !is_constant(m, p) {
            out.extend(m.constants(q).into_iter().map(|c| (p, c)));
        }
        if commutes && !is_constant(m, q) {
            out.extend(m.constants(p).into_iter().map(|c| (q, c)));
        }
    }
    out
}

fn mul_const_assoc(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (c2, other) in const_operand(m, false) {
        for (x, c1) in with_const(m, other, "mul", true) {
            if let Some(c) = binary(BinaryOp::Mul, &c1, &c2) {
                out.push(node(BinaryOp::Mul, Expr::Class(x), constant(c)));
            }
        }
    }
    out
}

fn add_const_assoc(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (c2, other) in const_operand(m, false) {
        for (x, c1) in with_const(m, other, "add", true) {
            if let Some(c) = binary(BinaryOp::Add, &c1, &c2) {
                out.push(node(BinaryOp::Add, Expr::Class(x), constant(c)));
            }
        }
        for (x, c1) in with_const(m, other, "sub", false) {
            if let Some(c) = binary(BinaryOp::Sub, &c2, &c1) {
                out.push(node(BinaryOp::Add, Expr::Class(x), constant(c)));
            }
        }
    }
    out
}

fn sub_const_assoc(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (c2, other) in const_operand(m, true) {
        for (x, c1) in with_const(m, other, "add", true) {
            if let Some(c) = binary(BinaryOp::Sub, &c1, &c2) {
                out.push(node(BinaryOp::Add, Expr::Class(x), constant(c)));
            }
        }
        for (x, c1) in with_const(m, other, "sub", false) {
            if let Some(c) = binary(BinaryOp::Add, &c1, &c2) {
                out.push(node(BinaryOp::Sub, Expr::Class(x), constant(c)));
            }
        }
    }
    out
}

/// The constant right operands of a float division.
fn float_divisor(m: &Match<'_>) -> Vec<(Tensor, Id)> {
    if !m.ty().is_some_and(|t| t.dtype.is_float()) {
        return vec![];
    }
    const_operand(m, true)
}

fn div_const_assoc(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (c2, other) in float_divisor(m) {
        for (x, c1) in with_const(m, other, "div", false) {
            if let Some(c) = binary(BinaryOp::Mul, &c1, &c2) {
                out.push(node(BinaryOp::Div, Expr::Class(x), constant(c)));
            }
        }
        for (x, c1) in with_const(m, other, "mul", true) {
            if let Some(c) = binary(BinaryOp::Div, &c1, &c2) {
                out.push(node(BinaryOp::Mul, Expr::Class(x), constant(c)));
            }
        }
    }
    out
}

fn div_const_recip(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (c, a) in float_divisor(m) {
        // A zero divisor has no (finite) reciprocal: `tame` refuses the infinity.
        let Ok(one) = Tensor::from_fn(c.dtype(), &[], |_| 1.0) else {
            continue;
        };
        if let Some(r) = binary(BinaryOp::Div, &one, &c) {
            out.push(node(BinaryOp::Mul, Expr::Class(a), constant(r)));
        }
    }
    out
}

/// `(y op c1) * c2 -> (y * c2) op (c1 * c2)` for `op` add (either order) or sub.
fn mul_dist(m: &Match<'_>, kind: &str, op: BinaryOp) -> Vec<Expr> {
    let mut out = Vec::new();
    for (c2, other) in const_operand(m, false) {
        for (y, c1) in with_const(m, other, kind, op == BinaryOp::Add) {
            if let Some(c) = binary(BinaryOp::Mul, &c1, &c2) {
                let scaled = node(BinaryOp::Mul, Expr::Class(y), constant(c2.clone()));
                out.push(node(op, scaled, constant(c)));
            }
        }
    }
    out
}

fn mul_add_const_dist(m: &Match<'_>) -> Vec<Expr> {
    mul_dist(m, "add", BinaryOp::Add)
}

fn mul_sub_const_dist(m: &Match<'_>) -> Vec<Expr> {
    mul_dist(m, "sub", BinaryOp::Sub)
}

/// `c`'s dims right-aligned to rank `r` (padded with 1s in front); `None` if `c` has more dims.
fn aligned(c: &Tensor, r: usize) -> Option<Vec<usize>> {
    aligned_dims(c.shape(), r)
}

/// `w * s` for the scale `s` shaped to broadcast against `w`: a new constant when `w` is one,
/// else a multiplication.
fn scaled_weights(m: &Match<'_>, w: Id, s: Tensor) -> Vec<Expr> {
    let consts = m.constants(w);
    if consts.is_empty() {
        return vec![node(BinaryOp::Mul, Expr::Class(w), constant(s))];
    }
    consts
        .iter()
        .filter_map(|wc| binary(BinaryOp::Mul, wc, &s).map(constant))
        .collect()
}

/// Whether the matched class (a scaled `kind` result) already holds a `kind` node with
/// constant weights: an earlier fold of an equivalent scale (`W*a*b` vs `W*(a*b)`), which only
/// differs in rounding. Folding again would compute another weight tensor of the same cost
/// that extraction has no reason to prefer (ResNet-50: 147 folds for 53 convs without this).
fn already_folded(m: &Match<'_>, kind: &str) -> bool {
    m.egraph[m.eclass].nodes.iter().any(|n| {
        n.kind.as_str() == kind && n.children.len() == 2 && !m.constants(n.children[1]).is_empty()
    })
}

/// `conv(x, W) * c` with `c` right-aligned to the result `[N, O, spatial..]` of extent 1 except
/// on the channel dim: `conv(x, W * c')`, `c'` = `c` as `[O or 1, 1, ...]`. Output channel `o`
/// reads only `W[o]` (whatever the groups), so scaling `W[o]` scales it.
fn conv_mul_const(m: &Match<'_>) -> Vec<Expr> {
    let Some(r) = m.ty().map(|t| t.shape.rank()) else {
        return vec![];
    };
    if already_folded(m, "conv") {
        return vec![];
    }
    let mut out = Vec::new();
    for (c, other) in const_operand(m, false) {
        let Some(cd) = aligned(&c, r) else { continue };
        if r < 2 || cd.iter().enumerate().any(|(i, &d)| i != 1 && d != 1) {
            continue;
        }
        let mut shape = vec![1; r];
        shape[0] = cd[1];
        let Ok(scale) = c.reshaped(shape) else {
            continue;
        };
        for (op, ins) in m.ops(other, Symbol::from("conv")) {
            let &[x, w] = ins.as_slice() else { continue };
            for w2 in scaled_weights(m, w, scale.clone()) {
                out.push(Expr::Node(op.clone(), vec![Expr::Class(x), w2]));
            }
        }
    }
    out
}

/// `dot_general(x, W) * c` with `c` right-aligned to the result (batch, lhs free, rhs free
/// dims) of extent 1 on the batch and lhs free dims: `dot_general(x, W * c')`, `c'` = `c` laid
/// out on W's free dims (which come in the same order, so a reshape), 1 elsewhere. Result
/// element `(b, i, j)` is a sum over products with `W[.., j, ..]` only, so scaling those
/// scales it.
fn dot_mul_const(m: &Match<'_>) -> Vec<Expr> {
    let Some(r) = m.ty().map(|t| t.shape.rank()) else {
        return vec![];
    };
    if already_folded(m, "dot_general") {
        return vec![];
    }
    let mut out = Vec::new();
    for (c, other) in const_operand(m, false) {
        let Some(cd) = aligned(&c, r) else { continue };
        for (op, ins) in m.ops(other, Symbol::from("dot_general")) {
            let (
                Op::DotGeneral {
                    rhs_batch,
                    rhs_contract,
                    ..
                },
                &[x, w],
            ) = (&op, ins.as_slice())
            else {
                continue;
            };
            let Some(wr) = m.class_ty(w).map(|t| t.shape.rank()) else {
                continue;
            };
            let free: Vec<usize> = (0..wr)
                .filter(|d| !rhs_batch.contains(d) && !rhs_contract.contains(d))
                .collect();
            // The result's leading dims (batch and lhs free) must not be scaled.
            let Some(lead) = r.checked_sub(free.len()) else {
                continue;
            };
            if cd[..lead].iter().any(|&d| d != 1) {
                continue;
            }
            let mut shape = vec![1; wr];
            for (j, &f) in free.iter().enumerate() {
                shape[f] = cd[lead + j];
            }
            let Ok(scale) = c.reshaped(shape) else {
                continue;
            };
            for w2 in scaled_weights(m, w, scale) {
                out.push(Expr::Node(op.clone(), vec![Expr::Class(x), w2]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tameness() {
        let t = |v: Vec<f32>| Tensor::from_vec(vec![v.len()], v).unwrap();
        assert!(tame(&t(vec![0.0, -1.5, 3e38])));
        assert!(!tame(&t(vec![f32::INFINITY])));
        assert!(!tame(&t(vec![1e-40])));
        // Overflowing products are refused.
        assert!(binary(BinaryOp::Mul, &t(vec![3e38]), &t(vec![10.0])).is_none());
        assert!(binary(BinaryOp::Mul, &t(vec![3.0]), &t(vec![10.0])).is_some());
    }

    /// The fast path's products are bitwise the interpreter's, over the per-channel, per-column,
    /// per-block and scalar scales it takes; other shapes are left to the interpreter.
    #[test]
    fn scaling_matches_the_interpreter() {
        fn check<T: Element>(a: &[usize], b: &[usize], fast: bool) {
            // Values of several magnitudes, so that products round.
            let value = |salt: u64, i: usize| {
                let h = (i as u64 ^ salt)
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    .rotate_left(29)
                    .wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let m = (h >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                m * [1e-3, 1.0, 7.0, 1e6][(h >> 3) as usize % 4]
            };
            let x = Tensor::from_fn(T::DTYPE, a, |i| value(1, i)).unwrap();
            let s = Tensor::from_fn(T::DTYPE, b, |i| value(2, i)).unwrap();
            let got = scale_along(&x, &s);
            assert_eq!(got.is_some(), fast, "{a:?} * {b:?}");
            if let Some(got) = got {
                let want = eval_op(&Op::Binary(BinaryOp::Mul), &[x, s], &Bindings::default())
                    .unwrap()
                    .pop()
                    .unwrap();
                assert_eq!(got.shape(), want.shape());
                let bits = |t: &Tensor| -> Vec<u64> {
                    t.to_f64_vec().iter().map(|v| v.to_bits()).collect()
                };
                assert_eq!(bits(&got), bits(&want), "{a:?} * {b:?}");
            }
        }
        for (a, b, fast) in [
            (&[8, 3, 3, 3][..], &[8, 1, 1, 1][..], true),
            (&[5, 7], &[7], true),
            (&[5, 7], &[1, 7], true),
            (&[2, 3, 4, 5], &[3, 4, 1], true),
            (&[2, 3, 4], &[], true),
            (&[2, 3, 4], &[1, 1, 1], true),
            (&[1, 6], &[6], true),
            (&[4, 1, 3], &[4, 1, 1], true),
            (&[2, 3, 4], &[2, 1, 4], false),
            (&[3, 4], &[2, 3, 4], false),
            (&[3, 1], &[3, 4], false),
            (&[0, 4], &[4], false),
        ] {
            check::<f32>(a, b, fast);
            check::<f64>(a, b, fast);
        }
    }

    #[test]
    fn tameness_of_every_float_class() {
        let f32s = [
            0.0f32,
            -0.0,
            1.0,
            -3e38,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::MAX,
        ];
        assert!(tame(
            &Tensor::from_vec(vec![f32s.len()], f32s.to_vec()).unwrap()
        ));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e-45, -1e-40] {
            let t = Tensor::from_vec(vec![3], vec![1.0, bad, 2.0]).unwrap();
            assert!(!tame(&t), "{bad}");
        }
        let f64s = [0.0f64, -0.0, 1e300, f64::MIN_POSITIVE, -f64::MAX];
        assert!(tame(
            &Tensor::from_vec(vec![f64s.len()], f64s.to_vec()).unwrap()
        ));
        for bad in [f64::NAN, f64::NEG_INFINITY, 1e-310] {
            let t = Tensor::from_vec(vec![1], vec![bad]).unwrap();
            assert!(!tame(&t), "{bad}");
        }
        // Longer than a block, with the bad element in a later one.
        let mut v = vec![1.0f32; 3000];
        assert!(tame(&Tensor::from_vec(vec![3000], v.clone()).unwrap()));
        v[2500] = f32::NAN;
        assert!(!tame(&Tensor::from_vec(vec![3000], v).unwrap()));
    }

    #[test]
    fn alignment() {
        let c = Tensor::zeros(DType::F32, &[8, 1, 1]).unwrap();
        assert_eq!(aligned(&c, 4), Some(vec![1, 8, 1, 1]));
        assert_eq!(aligned(&c, 2), None);
    }
}
