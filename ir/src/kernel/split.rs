//! Splitting an iteration-space variable in two: `v = h * c + j`, with `h < extent / c` and
//! `j < c`, and `v / c`, `v % c` simplified to `h` and `j` wherever `v` appears.
//!
//! Fusion folds a head merge (`transpose` + `reshape` of attention heads) into the indexing of
//! the consumer, so the context matmul of an attention block iterates over the merged dim `v`
//! and reads `p[v / 64, i, r] * v_heads[v / 64, r, v % 64]`: `v` is used by both operands and
//! the contraction has no N dim. Split, it is a batched GEMM (`h` batch, `j` N), which the GEMM
//! schedule takes. The rewrite is exact: the new nest visits the same points in the same order
//! and computes the same values.

use super::{BufferId, Expr, Index, LoopNest, Stage, Var};

/// Rewrite `e`'s index expressions with `f` and its buffers with `fb`.
pub fn map_expr(e: &Expr, f: &dyn Fn(&Index) -> Index, fb: &dyn Fn(BufferId) -> BufferId) -> Expr {
    e.map(f, fb, &Expr::Local)
}

/// `nest` with its indices rewritten by `fi`, its buffers by `fb` and its stage variables by
/// `fv` (the space is `space`).
fn map_nest(
    nest: &LoopNest,
    space: Vec<usize>,
    fi: &dyn Fn(&Index) -> Index,
    fb: &dyn Fn(BufferId) -> BufferId,
    fv: &dyn Fn(Var) -> Var,
) -> LoopNest {
    nest.map_stages(space, &|e| map_expr(e, fi, fb), fi, fb, fv)
}

/// `nest` with its buffers renamed by `fb`.
pub fn map_buffers(nest: &LoopNest, fb: &dyn Fn(BufferId) -> BufferId) -> LoopNest {
    map_nest(nest, nest.space.clone(), &|i| i.clone(), fb, &|v| v)
}

/// `i` as a sum of `coefficient * atom` terms and a constant (atoms: variables, divisions,
/// remainders); `None` for shapes it does not flatten.
fn terms(i: &Index, scale: i64, out: &mut Vec<(i64, Index)>, konst: &mut i64) {
    match i {
        Index::Const(c) => *konst += c * scale,
        Index::Add(a, b) => {
            terms(a, scale, out, konst);
            terms(b, scale, out, konst);
        }
        Index::Mul(a, c) => terms(a, scale * c, out, konst),
        other => out.push((scale, other.clone())),
    }
}

/// `i` simplified: `(h*c + j) / c` to `h` and `(h*c + j) % c` to `j` where `j`'s interval lies
/// in `[0, c)`, bottom up.
pub fn simplify(i: &Index, extent: &dyn Fn(Var) -> Option<usize>) -> Index {
    match i {
        Index::Var(_) | Index::Const(_) => i.clone(),
        Index::Add(a, b) => merge_div_rem(simplify(a, extent).plus(simplify(b, extent))),
        Index::Mul(a, c) => simplify(a, extent).times(*c),
        Index::Div(a, c) | Index::Rem(a, c) => {
            let a = simplify(a, extent);
            let c = *c;
            let mut ts = Vec::new();
            let mut k = 0;
            terms(&a, 1, &mut ts, &mut k);
            let (whole, rest): (Vec<_>, Vec<_>) = ts.into_iter().partition(|(s, _)| s % c == 0);
            let rebuild = |ts: &[(i64, Index)], k: i64, div: i64| {
                ts.iter().fold(Index::Const(k), |acc, (s, t)| {
                    acc.plus(t.clone().times(s / div))
                })
            };
            let r = rebuild(&rest, k, 1);
            let fits = r.interval(extent).is_some_and(|(lo, hi)| lo >= 0 && hi < c);
            match (i, fits) {
                (Index::Div(..), true) => rebuild(&whole, 0, c),
                (Index::Rem(..), true) => r,
                (Index::Div(..), false) => a.floor_div(c),
                _ => a.modulo(c),
            }
        }
    }
}

/// `i` with every pair of terms `k*c*(x / c) + k*(x % c)` merged into `k*x`.
fn merge_div_rem(i: Index) -> Index {
    let mut ts = Vec::new();
    let mut k = 0;
    terms(&i, 1, &mut ts, &mut k);
    let mut merged = false;
    loop {
        let pair = ts.iter().enumerate().find_map(|(a, (sa, ta))| {
            let Index::Div(x, c) = ta else { return None };
            ts.iter().enumerate().find_map(|(b, (sb, tb))| {
                matches!(tb, Index::Rem(y, d) if y == x && d == c && *sa == sb * c)
                    .then(|| (a, b, *sb, (**x).clone()))
            })
        });
        let Some((a, b, coef, x)) = pair else { break };
        merged = true;
        let (hi, lo) = (a.max(b), a.min(b));
        ts.remove(hi);
        ts.remove(lo);
        // `x` itself may be a sum: flatten it into the terms.
        terms(&x, coef, &mut ts, &mut k);
    }
    if !merged {
        return i;
    }
    ts.iter()
        .fold(Index::Const(k), |acc, (s, t)| acc.plus(t.clone().times(*s)))
}

/// `stages` with each group's variables replaced by one flat variable: for a group
/// `(flat, [(v0, e0), (v1, e1), ...])` (row-major, the last fastest), `v_d` becomes
/// `(flat / (e_{d+1} * ...)) % e_d`, then simplified, so that an index that recombines the group
/// (`v0 * e1 + v1`) is `flat` again. `extent` gives every variable's extent (the flat ones too).
pub fn flatten_vars(
    stages: &[Stage],
    groups: &[(Var, Vec<(Var, usize)>)],
    extent: &dyn Fn(Var) -> Option<usize>,
) -> Vec<Stage> {
    let sub = |u: Var| -> Index {
        for (flat, vars) in groups {
            if let Some(d) = vars.iter().position(|(v, _)| *v == u) {
                let stride: usize = vars[d + 1..].iter().map(|x| x.1).product();
                return Index::Var(*flat)
                    .floor_div(stride as i64)
                    .modulo(vars[d].1 as i64);
            }
        }
        Index::Var(u)
    };
    let fix = |i: &Index| simplify(&i.subst(&sub), extent);
    let nest = LoopNest {
        space: Vec::new(),
        stages: stages.to_vec(),
    };
    map_nest(&nest, Vec::new(), &fix, &|b| b, &|v| v).stages
}

/// Candidates `(v, c)`: a space variable divided (or taken modulo) by `c` somewhere, with `c` a
/// proper divisor of its extent.
fn candidates(nest: &LoopNest) -> Vec<(Var, i64)> {
    let mut out = Vec::new();
    let mut visit = |i: &Index| {
        fn walk(i: &Index, nest: &LoopNest, out: &mut Vec<(Var, i64)>) {
            match i {
                Index::Div(a, c) | Index::Rem(a, c) => {
                    if let Index::Var(v) = **a
                        && let Some(&n) = nest.space.get(v.0 as usize)
                        && *c > 1
                        && (*c as usize) < n
                        && n % *c as usize == 0
                        && !out.contains(&(v, *c))
                    {
                        out.push((v, *c));
                    }
                    walk(a, nest, out);
                }
                Index::Add(a, b) => {
                    walk(a, nest, out);
                    walk(b, nest, out);
                }
                Index::Mul(a, _) => walk(a, nest, out),
                Index::Var(_) | Index::Const(_) => {}
            }
        }
        walk(i, nest, &mut out);
    };
    for s in &nest.stages {
        let (Stage::Reduce { body: e, .. } | Stage::Store { value: e, .. }) = s;
        e.walk(&mut |x| match x {
            Expr::Load { index, .. } => index.iter().for_each(&mut visit),
            Expr::Index(i, _) => visit(i),
            _ => {}
        });
    }
    out
}

/// `nest` with space variable `v` split by `c` (the dims after it, and every stage variable,
/// renumbered one up).
fn split(nest: &LoopNest, v: Var, c: i64) -> LoopNest {
    let d = v.0 as usize;
    let n = nest.space[d];
    let mut space = nest.space.clone();
    space.splice(d..=d, [n / c as usize, c as usize]);
    let renumber = |u: Var| if u.0 > v.0 { Var(u.0 + 1) } else { u };
    let sub = |u: Var| -> Index {
        if u == v {
            Index::Var(v).times(c).plus(Index::Var(Var(v.0 + 1)))
        } else {
            Index::Var(renumber(u))
        }
    };
    // Extents of the new nest's variables, for the simplification.
    let mut extents: Vec<(Var, usize)> = space
        .iter()
        .enumerate()
        .map(|(i, &e)| (Var(i as u32), e))
        .collect();
    for s in &nest.stages {
        let (Stage::Reduce { vars, .. } | Stage::Store { vars, .. }) = s;
        extents.extend(vars.iter().map(|&(u, e)| (renumber(u), e)));
    }
    let ext = |u: Var| extents.iter().find(|(w, _)| *w == u).map(|x| x.1);
    let fix = |i: &Index| simplify(&i.subst(&sub), &ext);
    map_nest(nest, space, &fix, &|b| b, &renumber)
}

/// The nests made by splitting one variable of `nest` (each candidate once).
pub fn splits(nest: &LoopNest) -> Vec<LoopNest> {
    candidates(nest)
        .into_iter()
        .map(|(v, c)| split(nest, v, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_merged_head_dim() {
        // t0 = sum_r p[v/4, r] * q[v/4, r, v%4]; store y[v] = t0
        let v = Var(0);
        let r = Var(1);
        let load = |b: u32, index: Vec<Index>| Expr::Load {
            buffer: BufferId(b),
            index,
            fill: None,
        };
        let nest = LoopNest {
            space: vec![8],
            stages: vec![
                Stage::Reduce {
                    local: crate::kernel::Local(0),
                    kind: crate::ReduceKind::Sum,
                    vars: vec![(r, 3)],
                    body: Expr::binary(
                        crate::BinaryOp::Mul,
                        load(0, vec![Index::Var(v).floor_div(4), Index::Var(r)]),
                        load(
                            1,
                            vec![
                                Index::Var(v).floor_div(4),
                                Index::Var(r),
                                Index::Var(v).modulo(4),
                            ],
                        ),
                    ),
                },
                Stage::Store {
                    buffer: BufferId(2),
                    vars: vec![],
                    index: vec![Index::Var(v)],
                    value: Expr::Local(crate::kernel::Local(0)),
                },
            ],
        };
        let s = splits(&nest);
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!(s.space, vec![2, 4]);
        let Stage::Reduce { vars, body, .. } = &s.stages[0] else {
            panic!()
        };
        assert_eq!(vars, &vec![(Var(2), 3)]);
        let Expr::Binary(_, a, b) = body else {
            panic!()
        };
        assert_eq!(**a, load(0, vec![Index::Var(Var(0)), Index::Var(Var(2))]));
        assert_eq!(
            **b,
            load(
                1,
                vec![Index::Var(Var(0)), Index::Var(Var(2)), Index::Var(Var(1))]
            )
        );
        let Stage::Store { index, .. } = &s.stages[1] else {
            panic!()
        };
        assert_eq!(
            index,
            &vec![Index::Var(Var(0)).times(4).plus(Index::Var(Var(1)))]
        );
    }

    #[test]
    fn flattening_recombines_row_major_indices() {
        // store y[c, h, w] with (h, w) flattened to n: the index c*3136 + h*56 + w is
        // c*3136 + n, and a lone h is n / 56.
        let (c, h, w, n) = (Var(0), Var(1), Var(2), Var(9));
        let store = |index: Vec<Index>| Stage::Store {
            buffer: BufferId(0),
            vars: vec![],
            index,
            value: Expr::Index(Index::Var(h), crate::DType::I64),
        };
        let ext = |v: Var| match v.0 {
            0 => Some(4),
            1 | 2 => Some(56),
            9 => Some(3136),
            _ => None,
        };
        let out = flatten_vars(
            &[store(vec![Index::Var(c), Index::Var(h), Index::Var(w)])],
            &[(n, vec![(h, 56), (w, 56)])],
            &ext,
        );
        let Stage::Store { index, value, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(
            index,
            &vec![
                Index::Var(c),
                Index::Var(n).floor_div(56),
                Index::Var(n).modulo(56)
            ]
        );
        assert_eq!(
            value,
            &Expr::Index(Index::Var(n).floor_div(56), crate::DType::I64)
        );
        let flat = Index::Var(c)
            .times(3136)
            .plus(Index::Var(h).times(56))
            .plus(Index::Var(w));
        let out = flatten_vars(&[store(vec![flat])], &[(n, vec![(h, 56), (w, 56)])], &ext);
        let Stage::Store { index, .. } = &out[0] else {
            panic!()
        };
        assert_eq!(index, &vec![Index::Var(c).times(3136).plus(Index::Var(n))]);
    }
}
