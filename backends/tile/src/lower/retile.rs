//! Kernel-IR rewrites that give the vector path better tiles, each exact or within the
//! vector path's stated summation tolerance. [`crate::compile`] lowers every variant that
//! applies and keeps the one that simulates fastest.
//!
//! * [`unroll_small_reduction`]: a kernel whose first stage reduces over a small window
//!   (pooling: `max` over 3×3) becomes elementwise: the window's points are unrolled into one
//!   expression (`max(max(w00, w01), ...)`), so its tiles run over the output's rows and
//!   columns, one strided load per window point, instead of along the window.
//! * [`widen_rows`]: an elementwise kernel whose tile rows are a short variable (a 7×7 image
//!   in an im2col pack) takes the longest other variable as its rows instead (the channels),
//!   for tiles of thousands of elements instead of dozens.

use terafab_ir::ReduceKind;
use terafab_ir::kernel::{Body, Expr, Index, Kernel, LoopNest, Stage, Var};

/// The largest window [`unroll_small_reduction`] unrolls.
pub const MAX_UNROLL: usize = 16;

/// `k` with its reduction over a window of at most [`MAX_UNROLL`] points unrolled into the
/// stores, when its stages are one `max`, `min` or `sum` over such a window followed by stores
/// at the outer point. `max`/`min` give the same values (NaN propagates, `-0 < +0`, as in the
/// reduction); a sum is added in the window's order in f32 instead of once in f64, within the
/// vector path's summation tolerance.
pub fn unroll_small_reduction(k: &Kernel) -> Option<Kernel> {
    let Body::Loops(nest) = &k.body else {
        return None;
    };
    let (first, rest) = nest.stages.split_first()?;
    let Stage::Reduce {
        local,
        kind,
        vars,
        body,
    } = first
    else {
        return None;
    };
    let op = match kind {
        ReduceKind::Max => terafab_ir::BinaryOp::Max,
        ReduceKind::Min => terafab_ir::BinaryOp::Min,
        ReduceKind::Sum => terafab_ir::BinaryOp::Add,
        ReduceKind::Prod => return None,
    };
    let points = vars
        .iter()
        .try_fold(1usize, |acc, &(_, n)| acc.checked_mul(n))?;
    if !(2..=MAX_UNROLL).contains(&points) || body.uses_local() || rest.is_empty() {
        return None;
    }
    let mut stores = Vec::new();
    for s in rest {
        match s {
            Stage::Store {
                buffer,
                vars,
                index,
                value,
            } if vars.is_empty() => stores.push((*buffer, index, value)),
            _ => return None,
        }
    }
    // The window's points in row-major order, each as its reduce variables' values.
    let mut combined: Option<Expr> = None;
    for p in 0..points {
        let mut rem = p;
        let mut values = vec![0i64; vars.len()];
        for (d, &(_, n)) in vars.iter().enumerate().rev() {
            values[d] = (rem % n) as i64;
            rem /= n;
        }
        let sub = |v: Var| match vars.iter().position(|&(u, _)| u == v) {
            Some(d) => Index::Const(values[d]),
            None => Index::Var(v),
        };
        let term = body.map(&|i| i.subst(&sub), &|b| b, &Expr::Local);
        combined = Some(match combined {
            None => term,
            Some(acc) => Expr::binary(op, acc, term),
        });
    }
    let combined = combined?;
    let stages = stores
        .into_iter()
        .map(|(buffer, index, value)| Stage::Store {
            buffer,
            vars: Vec::new(),
            index: index.clone(),
            value: value.map(&|i| i.clone(), &|b| b, &|l| {
                if l == *local {
                    combined.clone()
                } else {
                    Expr::Local(l)
                }
            }),
        })
        .collect();
    Some(Kernel {
        body: Body::Loops(LoopNest {
            space: nest.space.clone(),
            stages,
        }),
        ..k.clone()
    })
}

/// `k` (elementwise: stores at the outer point only) with its longest variable other than the
/// last swapped into the tile rows' place (the second last), when it is at least twice as
/// long as the variable there. The stores visit the same points, each computed the same way.
pub fn widen_rows(k: &Kernel) -> Option<Kernel> {
    let Body::Loops(nest) = &k.body else {
        return None;
    };
    let d = nest.space.len();
    if d < 3
        || !nest
            .stages
            .iter()
            .all(|s| matches!(s, Stage::Store { vars, .. } if vars.is_empty()))
    {
        return None;
    }
    let rows = d - 2;
    let (best, &n) = nest.space[..rows]
        .iter()
        .enumerate()
        .max_by_key(|&(i, &n)| (n, std::cmp::Reverse(i)))?;
    if n < 2 * nest.space[rows] {
        return None;
    }
    let (a, b) = (Var(best as u32), Var(rows as u32));
    let swap = |v: Var| {
        Index::Var(if v == a {
            b
        } else if v == b {
            a
        } else {
            v
        })
    };
    let mut space = nest.space.clone();
    space.swap(best, rows);
    let nest = nest.map_stages(
        space,
        &|e| e.map(&|i| i.subst(&swap), &|b| b, &Expr::Local),
        &|i| i.subst(&swap),
        &|b| b,
        &|v| v,
    );
    Some(Kernel {
        body: Body::Loops(nest),
        ..k.clone()
    })
}
