//! Exact algebra of data movement and contractions: transposes absorbed into `dot_general`'s
//! dimension numbers, broadcasts sunk below elementwise ops, unary ops moved through transposes
//! and reshapes, movement that is really a reshape, slices of concatenations.
//!
//! Every rule here is exact: the rewritten program computes every result element from the same
//! operand elements with the same operations in the same order. For `dot_general` this holds
//! because the interpreter walks the contracted multi-index in the order the contracting dims
//! are listed (row-major over `lhs_contract`), whatever the operand's layout.

use egg::{Id, Symbol};
use terafab_ir::{Op, TensorType};

use super::rules::{Expr, Match, RuleDef, elementwise_before_broadcast, rule, static_dims};

/// The exact movement and contraction rules.
pub const RULES: &[RuleDef] = &[
    // dot_general(transpose(x, p), y) == dot_general(x, y) with lhs batch/contracting dims
    // mapped through p (when p keeps the order of the free dims).
    rule(
        "dot-transpose-lhs",
        "(dot_general (transpose ?x) ?y)",
        dot_transpose_lhs,
    ),
    // dot_general(x, transpose(y, p)) == dot_general(x, y) with rhs dims mapped through p.
    rule(
        "dot-transpose-rhs",
        "(dot_general ?x (transpose ?y))",
        dot_transpose_rhs,
    ),
    // broadcast(a) + b == broadcast(a + b) (either operand; numpy broadcasting composes).
    rule("add-broadcast", "(add ?a ?b)", binary_broadcast),
    // broadcast(a) - b == broadcast(a - b) (either operand).
    rule("sub-broadcast", "(sub ?a ?b)", binary_broadcast),
    // broadcast(a) * b == broadcast(a * b) (either operand).
    rule("mul-broadcast", "(mul ?a ?b)", binary_broadcast),
    // broadcast(a) / b == broadcast(a / b) (either operand).
    rule("div-broadcast", "(div ?a ?b)", binary_broadcast),
    // max(broadcast(a), b) == broadcast(max(a, b)) (either operand; operand order kept).
    rule("max-broadcast", "(max ?a ?b)", binary_broadcast),
    // min(broadcast(a), b) == broadcast(min(a, b)) (either operand; operand order kept).
    rule("min-broadcast", "(min ?a ?b)", binary_broadcast),
    // exp(broadcast(x)) == broadcast(exp(x)): computed once per source element.
    rule(
        "exp-broadcast",
        "(exp (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // log(broadcast(x)) == broadcast(log(x)).
    rule(
        "log-broadcast",
        "(log (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // sqrt(broadcast(x)) == broadcast(sqrt(x)).
    rule(
        "sqrt-broadcast",
        "(sqrt (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // rsqrt(broadcast(x)) == broadcast(rsqrt(x)).
    rule(
        "rsqrt-broadcast",
        "(rsqrt (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // tanh(broadcast(x)) == broadcast(tanh(x)).
    rule(
        "tanh-broadcast",
        "(tanh (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // logistic(broadcast(x)) == broadcast(logistic(x)).
    rule(
        "logistic-broadcast",
        "(logistic (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // erf(broadcast(x)) == broadcast(erf(x)).
    rule(
        "erf-broadcast",
        "(erf (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // transpose(f(x)) == f(transpose(x)) for every unary op and convert f.
    rule("transpose-unary", "(transpose ?y)", movement_unary),
    // reshape(f(x)) == f(reshape(x)) for every unary op and convert f.
    rule("reshape-unary", "(reshape ?y)", movement_unary),
    // A transpose that keeps the order of the dims of extent > 1 is a reshape.
    rule(
        "transpose-unit-reshape",
        "(transpose ?x)",
        transpose_unit_reshape,
    ),
    // A broadcast that adds no elements (only extent-1 dims) is a reshape.
    rule(
        "broadcast-unit-reshape",
        "(broadcast ?x)",
        broadcast_unit_reshape,
    ),
    // slice(concat(a, b, ..)) within one operand along the concat axis == a slice of it.
    rule("slice-concat", "(slice ?c)", slice_concat),
];

/// The ops of `kind` in e-class `id` with their operands (a shorthand).
fn ops(m: &Match<'_>, id: Id, kind: &str) -> Vec<(Op, Vec<Id>)> {
    m.ops(id, Symbol::from(kind))
}

/// `dims` mapped through `perm` (operand dim `perm[d]` for transposed dim `d`).
fn through(perm: &[usize], dims: &[usize]) -> Option<Vec<usize>> {
    dims.iter().map(|&d| perm.get(d).copied()).collect()
}

/// The batch and contracting dims of one side after absorbing a transpose with `perm`: `None`
/// unless the free dims keep their order (they are emitted in increasing order).
fn absorb(perm: &[usize], batch: &[usize], contract: &[usize]) -> Option<(Vec<usize>, Vec<usize>)> {
    let free: Vec<usize> = (0..perm.len())
        .filter(|d| !batch.contains(d) && !contract.contains(d))
        .collect();
    let mapped = through(perm, &free)?;
    if !mapped.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    Some((through(perm, batch)?, through(perm, contract)?))
}

fn dot_transpose(m: &Match<'_>, lhs: bool) -> Vec<Expr> {
    let mut out = Vec::new();
    for (dot, ins) in ops(m, m.eclass, "dot_general") {
        let (
            Op::DotGeneral {
                lhs_batch,
                rhs_batch,
                lhs_contract,
                rhs_contract,
            },
            &[a, b],
        ) = (dot, ins.as_slice())
        else {
            continue;
        };
        let side = if lhs { a } else { b };
        for (t, tins) in ops(m, side, "transpose") {
            let (Op::Transpose { perm }, &[x]) = (t, tins.as_slice()) else {
                continue;
            };
            let (batch, contract) = if lhs {
                (&lhs_batch, &lhs_contract)
            } else {
                (&rhs_batch, &rhs_contract)
            };
            let Some((batch, contract)) = absorb(&perm, batch, contract) else {
                continue;
            };
            let (op, operands) = if lhs {
                (
                    Op::DotGeneral {
                        lhs_batch: batch,
                        rhs_batch: rhs_batch.clone(),
                        lhs_contract: contract,
                        rhs_contract: rhs_contract.clone(),
                    },
                    vec![Expr::Class(x), Expr::Class(b)],
                )
            } else {
                (
                    Op::DotGeneral {
                        lhs_batch: lhs_batch.clone(),
                        rhs_batch: batch,
                        lhs_contract: lhs_contract.clone(),
                        rhs_contract: contract,
                    },
                    vec![Expr::Class(a), Expr::Class(x)],
                )
            };
            out.push(Expr::Node(op, operands));
        }
    }
    out
}

fn dot_transpose_lhs(m: &Match<'_>) -> Vec<Expr> {
    dot_transpose(m, true)
}

fn dot_transpose_rhs(m: &Match<'_>) -> Vec<Expr> {
    dot_transpose(m, false)
}

/// `f(broadcast(a), b) -> broadcast(f(a, b))` and `f(a, broadcast(b)) -> broadcast(f(a, b))`
/// for the binary root op `f`, to the matched shape. Element `i` of either side is
/// `f(a[pa(i)], b[pb(i)])`, `pa` and `pb` numpy's projections of `i` onto the operand shapes:
/// projections compose, and the type check makes sure `f(a, b)` broadcasts to the result.
fn binary_broadcast(m: &Match<'_>) -> Vec<Expr> {
    let Some(ty) = m.ty() else {
        return vec![];
    };
    let bcast = |e: Expr| {
        Expr::Node(
            Op::Broadcast {
                shape: ty.shape.clone(),
            },
            vec![e],
        )
    };
    let mut out = Vec::new();
    for (f, ins) in m.ops(m.eclass, m.root) {
        let &[a, b] = ins.as_slice() else { continue };
        for (_, src) in ops(m, a, "broadcast") {
            if let &[s] = src.as_slice() {
                let inner = Expr::Node(f.clone(), vec![Expr::Class(s), Expr::Class(b)]);
                out.push(bcast(inner));
            }
        }
        for (_, src) in ops(m, b, "broadcast") {
            if let &[s] = src.as_slice() {
                let inner = Expr::Node(f.clone(), vec![Expr::Class(a), Expr::Class(s)]);
                out.push(bcast(inner));
            }
        }
    }
    out
}

/// Whether `op` is applied to each element on its own, one operand (unary ops and convert).
fn is_unary(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Convert { .. })
}

/// `move(f(x)) -> f(move(x))` for the root movement op (transpose, reshape) and a unary `f`:
/// the same elements, moved before instead of after.
fn movement_unary(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (mv, ins) in m.ops(m.eclass, m.root) {
        let &[y] = ins.as_slice() else { continue };
        for n in &m.egraph[y].nodes {
            let (Some(f), &[x]) = (m.egraph.analysis.op(n), n.children.as_slice()) else {
                continue;
            };
            if is_unary(&f) {
                let moved = Expr::Node(mv.clone(), vec![Expr::Class(x)]);
                out.push(Expr::Node(f, vec![moved]));
            }
        }
    }
    out
}

/// The matched type as a reshape of `x`.
fn reshape_to(ty: &TensorType, x: Id) -> Expr {
    Expr::Node(
        Op::Reshape {
            shape: ty.shape.clone(),
        },
        vec![Expr::Class(x)],
    )
}

/// A transpose whose operand dims of extent > 1 appear in increasing order in `perm` moves no
/// element relative to the others: row-major order is kept, so it is a reshape.
fn transpose_unit_reshape(m: &Match<'_>) -> Vec<Expr> {
    let Some(ty) = m.ty() else {
        return vec![];
    };
    let mut out = Vec::new();
    for (op, ins) in m.ops(m.eclass, m.root) {
        let (Op::Transpose { perm }, &[x]) = (op, ins.as_slice()) else {
            continue;
        };
        let Some(dims) = static_dims(m, x) else {
            continue;
        };
        let big: Vec<usize> = perm
            .iter()
            .copied()
            .filter(|&p| dims.get(p).is_some_and(|&d| d > 1))
            .collect();
        if big.windows(2).all(|w| w[0] < w[1]) {
            out.push(reshape_to(ty, x));
        }
    }
    out
}

/// A broadcast to as many elements as its operand has only inserts or keeps extent-1 dims, so
/// the elements keep their row-major order: a reshape.
fn broadcast_unit_reshape(m: &Match<'_>) -> Vec<Expr> {
    let Some(ty) = m.ty() else {
        return vec![];
    };
    let Some(n) = ty.shape.num_elements() else {
        return vec![];
    };
    m.ops(m.eclass, m.root)
        .into_iter()
        .filter_map(|(_, ins)| {
            let &[x] = ins.as_slice() else { return None };
            let k = m.class_ty(x)?.shape.num_elements()?;
            (k == n).then(|| reshape_to(ty, x))
        })
        .collect()
}

/// `slice(concat(x0, x1, ..; axis))` whose range along `axis` lies within operand `k` (which
/// starts at offset `o`) is the same slice of `x_k`, shifted by `-o` along `axis`.
fn slice_concat(m: &Match<'_>) -> Vec<Expr> {
    let mut out = Vec::new();
    for (op, ins) in m.ops(m.eclass, m.root) {
        let (
            Op::Slice {
                start,
                limit,
                stride,
            },
            &[c],
        ) = (op, ins.as_slice())
        else {
            continue;
        };
        for (cat, parts) in ops(m, c, "concat") {
            let Op::Concat { axis } = cat else { continue };
            let (Some(&s), Some(&l)) = (start.get(axis), limit.get(axis)) else {
                continue;
            };
            if s >= l {
                continue;
            }
            let mut offset = 0;
            for &p in &parts {
                let Some(extent) = static_dims(m, p).and_then(|d| d.get(axis).copied()) else {
                    break;
                };
                if s >= offset && l <= offset + extent {
                    let (mut start, mut limit) = (start.clone(), limit.clone());
                    start[axis] -= offset;
                    limit[axis] -= offset;
                    out.push(Expr::Node(
                        Op::Slice {
                            start,
                            limit,
                            stride: stride.clone(),
                        },
                        vec![Expr::Class(p)],
                    ));
                    break;
                }
                offset += extent;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbing_keeps_free_dim_order() {
        // [b, n, k] transposed to [b, k, n], contracting the new dim 1 (operand dim 2).
        assert_eq!(absorb(&[0, 2, 1], &[0], &[1]), Some((vec![0], vec![2])));
        // Free dims 1 and 2 of the transposed operand come from operand dims 2 and 1: swapped.
        assert_eq!(absorb(&[0, 2, 1], &[], &[0]), None);
        // A plain matrix transpose contracting the new dim 0.
        assert_eq!(absorb(&[1, 0], &[], &[0]), Some((vec![], vec![1])));
    }
}
