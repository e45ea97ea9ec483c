//! TENSAT-style merges of contractions that share an input, as egg multi-patterns: two
//! `dot_general`s (or two `conv`s) of the same lhs `x` and the same attributes become one, its
//! rhs the concatenation of theirs along an output dim, and each original result a slice of it.
//!
//! Exact: the interpreter computes every output element of a contraction on its own (a sum
//! over the contracted index in a fixed order, started from zero), so an element of the merged
//! result equals the one it came from bitwise.
//!
//! **Growth.** Merges form left-deep chains: the rhs of the second contraction must not be a
//! concatenation along the merge axis itself, every part of the first's rhs must be an older
//! e-class (smaller id) than the second's, and a chain has at most [`MAX_MERGED`] parts. So each
//! set of contractions sharing `x` is merged in one order only, and `n` of them give at most
//! `C(n,2) + C(n,3) + C(n,4)` merged nodes.
//!
//! **Cycle filter.** A merge is refused when one contraction's rhs depends on the other's result
//! (`w2 = f(dot(x, w1))`): the merged node would need `w2`, which needs `y1`, which would be a
//! slice of the merged node, so the extracted graph could hold a cycle. It is also refused when
//! one result depends on the other (`y2 = dot(x, w1) * k` holds `dot(x, w1 * k)` after the
//! scale folding): no cycle, but one of them is then better computed from the other, and such
//! pairs would multiply the merges of every rewritten variant. "Depends" is reachability in the
//! e-graph (through any e-node of every e-class), which over-approximates the dependencies of
//! any extracted program; `x` cannot depend on either result, as both results depend on `x`.

use std::collections::HashSet;

use egg::{Id, Symbol};
use terafab_ir::Op;

use super::rules::{Expr, Match, RuleDef, multi, static_dims};

/// The most contractions one merged node replaces.
pub const MAX_MERGED: usize = 4;

/// The exact multi-pattern merges.
pub const RULES: &[RuleDef] = &[
    // dot_general(x, w1), dot_general(x, w2) == slices of dot_general(x, concat(w1, w2)) along a
    // rhs free dim (same attributes; cycle-filtered).
    multi(
        "dot-merge",
        "?y1 = (dot_general ?x ?w1), ?y2 = (dot_general ?x ?w2)",
        dot_merge,
    ),
    // conv(x, w1), conv(x, w2) == slices of conv(x, concat(w1, w2)) along the output channels
    // (same attributes, groups 1; cycle-filtered).
    multi(
        "conv-merge",
        "?y1 = (conv ?x ?w1), ?y2 = (conv ?x ?w2)",
        conv_merge,
    ),
];

/// Whether e-class `to` is reachable from e-class `from` through the children of any e-node.
pub fn reaches(m: &Match<'_>, from: Id, to: Id) -> bool {
    let to = m.egraph.find(to);
    let mut seen = HashSet::new();
    let mut stack = vec![m.egraph.find(from)];
    while let Some(c) = stack.pop() {
        if c == to {
            return true;
        }
        if !seen.insert(c) {
            continue;
        }
        for n in &m.egraph[c].nodes {
            stack.extend(n.children.iter().map(|&k| m.egraph.find(k)));
        }
    }
    false
}

/// The parts of a left-deep concatenation chain along `axis` in e-class `id` (the class itself
/// when it holds no such concatenation); `None` beyond [`MAX_MERGED`] parts.
fn parts(m: &Match<'_>, id: Id, axis: usize) -> Option<Vec<Id>> {
    let mut out = Vec::new();
    let mut cur = m.egraph.find(id);
    loop {
        if out.len() >= MAX_MERGED {
            return None;
        }
        let cat = m
            .ops(cur, Symbol::from("concat"))
            .into_iter()
            .find(|(op, ins)| *op == Op::Concat { axis } && ins.len() == 2);
        match cat {
            Some((_, ins)) => {
                out.push(m.egraph.find(ins[1]));
                cur = m.egraph.find(ins[0]);
            }
            None => {
                out.push(cur);
                return Some(out);
            }
        }
    }
}

/// Whether `w1` (a chain) and `w2` (a single part) may merge along `axis` (see the module doc).
fn chain_ok(m: &Match<'_>, w1: Id, w2: Id, axis: usize) -> bool {
    let w2 = m.egraph.find(w2);
    let Some(left) = parts(m, w1, axis) else {
        return false;
    };
    parts(m, w2, axis).is_some_and(|p| p.len() == 1)
        && left.len() < MAX_MERGED
        && left.iter().all(|&p| p < w2)
}

/// The canonical e-classes bound to `?y1 ?y2 ?x ?w1 ?w2`.
fn bound(m: &Match<'_>) -> Option<[Id; 5]> {
    let get = |v: &str| m.var(v).map(|id| m.egraph.find(id));
    Some([
        get("?y1")?,
        get("?y2")?,
        get("?x")?,
        get("?w1")?,
        get("?w2")?,
    ])
}

/// The ops of `kind` in e-class `y` applied to exactly `(x, w)`.
fn ops_on(m: &Match<'_>, y: Id, kind: &str, x: Id, w: Id) -> Vec<Op> {
    m.ops(y, Symbol::from(kind))
        .into_iter()
        .filter(|(_, ins)| {
            let ins: Vec<Id> = ins.iter().map(|&i| m.egraph.find(i)).collect();
            ins == [x, w]
        })
        .map(|(op, _)| op)
        .collect()
}

/// The one dim where `a` and `b` differ among `allowed` (the last of `allowed` when they are
/// equal); `None` when they differ elsewhere or on two dims.
fn merge_axis(a: &[usize], b: &[usize], allowed: &[usize]) -> Option<usize> {
    if a.len() != b.len() {
        return None;
    }
    let differ: Vec<usize> = (0..a.len()).filter(|&d| a[d] != b[d]).collect();
    match differ.as_slice() {
        [] => allowed.last().copied(),
        [d] if allowed.contains(d) => Some(*d),
        _ => None,
    }
}

/// `merged` sliced along `axis` to `[from, from + dims[axis])`, full elsewhere.
fn slice(merged: &Expr, dims: &[usize], axis: usize, from: usize) -> Expr {
    let mut start = vec![0; dims.len()];
    let mut limit = dims.to_vec();
    start[axis] = from;
    limit[axis] += from;
    Expr::Node(
        Op::Slice {
            start,
            limit,
            stride: vec![1; dims.len()],
        },
        vec![merged.clone()],
    )
}

/// The merge of `y1 = op(x, w1)` and `y2 = op(x, w2)`: the rhs concatenated along `w_axis`, the
/// results sliced along `out_axis`.
fn merged(
    m: &Match<'_>,
    op: Op,
    [y1, y2, x, w1, w2]: [Id; 5],
    w_axis: usize,
    out_axis: usize,
) -> Option<Vec<(Id, Expr)>> {
    if !chain_ok(m, w1, w2, w_axis)
        || reaches(m, w2, y1)
        || reaches(m, w1, y2)
        || reaches(m, y1, y2)
        || reaches(m, y2, y1)
    {
        return None;
    }
    let (d1, d2) = (static_dims(m, y1)?, static_dims(m, y2)?);
    let cat = Expr::Node(
        Op::Concat { axis: w_axis },
        vec![Expr::Class(w1), Expr::Class(w2)],
    );
    let merged = Expr::Node(op, vec![Expr::Class(x), cat]);
    let n1 = *d1.get(out_axis)?;
    Some(vec![
        (y1, slice(&merged, &d1, out_axis, 0)),
        (y2, slice(&merged, &d2, out_axis, n1)),
    ])
}

fn dot_merge(m: &Match<'_>) -> Vec<Vec<(Id, Expr)>> {
    let Some(ids @ [y1, y2, x, w1, w2]) = bound(m) else {
        return vec![];
    };
    if y1 == y2 || w1 == w2 {
        return vec![];
    }
    let (Some(xd), Some(d1), Some(d2)) =
        (static_dims(m, x), static_dims(m, w1), static_dims(m, w2))
    else {
        return vec![];
    };
    let second = ops_on(m, y2, "dot_general", x, w2);
    let mut out = Vec::new();
    for op in ops_on(m, y1, "dot_general", x, w1) {
        if !second.contains(&op) {
            continue;
        }
        let Op::DotGeneral {
            lhs_batch,
            rhs_batch,
            lhs_contract,
            rhs_contract,
        } = &op
        else {
            continue;
        };
        let free: Vec<usize> = (0..d1.len())
            .filter(|d| !rhs_batch.contains(d) && !rhs_contract.contains(d))
            .collect();
        let Some(axis) = merge_axis(&d1, &d2, &free) else {
            continue;
        };
        let (Some(lhs_free), Some(pos)) = (
            xd.len().checked_sub(lhs_batch.len() + lhs_contract.len()),
            free.iter().position(|&f| f == axis),
        ) else {
            continue;
        };
        let out_axis = lhs_batch.len() + lhs_free + pos;
        out.extend(merged(m, op.clone(), ids, axis, out_axis));
    }
    out
}

fn conv_merge(m: &Match<'_>) -> Vec<Vec<(Id, Expr)>> {
    let Some(ids @ [y1, y2, x, w1, w2]) = bound(m) else {
        return vec![];
    };
    if y1 == y2 || w1 == w2 {
        return vec![];
    }
    let (Some(d1), Some(d2)) = (static_dims(m, w1), static_dims(m, w2)) else {
        return vec![];
    };
    let second = ops_on(m, y2, "conv", x, w2);
    let mut out = Vec::new();
    for op in ops_on(m, y1, "conv", x, w1) {
        if !second.contains(&op) || !matches!(op, Op::Conv { groups: 1, .. }) {
            continue;
        }
        if merge_axis(&d1, &d2, &[0]) != Some(0) {
            continue;
        }
        out.extend(merged(m, op.clone(), ids, 0, 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_axes() {
        assert_eq!(merge_axis(&[4, 3], &[4, 5], &[1]), Some(1));
        assert_eq!(merge_axis(&[4, 3], &[4, 3], &[1]), Some(1));
        assert_eq!(merge_axis(&[4, 3], &[5, 3], &[1]), None);
        assert_eq!(merge_axis(&[4, 3], &[5, 6], &[0, 1]), None);
        assert_eq!(merge_axis(&[4, 3], &[4, 3], &[]), None);
    }
}
