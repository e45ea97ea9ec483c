//! Horizontal fusion: adjacent independent loop-nest kernels over the same iteration space
//! become one kernel with several outputs (the Q, K and V projections of attention, the
//! branches of a block reading the same input), saving launches and re-reads of shared inputs.
//!
//! Two kernels merge when they are next to each other in the program, both are loop nests
//! with equal outer spaces, the second does not read what the first writes, and they either
//! share an input buffer or are both small (fewer than [`SMALL_POINTS`] outer points), so a
//! merge never serializes two big kernels that have nothing in common. The second kernel's
//! stage variables and locals are renumbered after the first's.

use terafab_ir::kernel::{Body, Expr, Index, Kernel, KernelKind, KernelProgram, Local, Stage, Var};

/// Kernels with fewer outer points than this are "small" (worth merging even without a shared
/// input: the launch dominates).
pub const SMALL_POINTS: usize = 4096;

/// Merge adjacent kernels of `p` as described in the module doc; returns how many merges.
pub fn fuse_horizontally(p: &mut KernelProgram) -> usize {
    let mut merges = 0;
    let kernels = std::mem::take(&mut p.kernels);
    let mut out: Vec<Kernel> = Vec::with_capacity(kernels.len());
    for k in kernels {
        if let Some(prev) = out.last_mut()
            && mergeable(prev, &k)
        {
            merge_into(prev, k);
            merges += 1;
            continue;
        }
        out.push(k);
    }
    // Keep names dense (`k0`, `k1`, ...) when kernels were numbered that way.
    for (i, k) in out.iter_mut().enumerate() {
        if k.name
            .strip_prefix('k')
            .is_some_and(|n| n.parse::<usize>().is_ok())
        {
            k.name = format!("k{i}");
        }
    }
    p.kernels = out;
    merges
}

fn mergeable(a: &Kernel, b: &Kernel) -> bool {
    let (Body::Loops(na), Body::Loops(nb)) = (&a.body, &b.body) else {
        return false;
    };
    if na.space != nb.space || b.inputs.iter().any(|i| a.outputs.contains(i)) {
        return false;
    }
    let points: usize = na.space.iter().product();
    let shared = b.inputs.iter().any(|i| a.inputs.contains(i));
    shared || points < SMALL_POINTS
}

/// The kind of a merged kernel: the heavier family.
fn heavier(a: KernelKind, b: KernelKind) -> KernelKind {
    let rank = |k: KernelKind| match k {
        KernelKind::Movement => 0,
        KernelKind::Elementwise => 1,
        KernelKind::Reduction => 2,
        KernelKind::Pool => 3,
        KernelKind::Matmul => 4,
        KernelKind::Conv => 5,
        KernelKind::Call => 6,
    };
    if rank(b) > rank(a) { b } else { a }
}

fn merge_into(a: &mut Kernel, b: Kernel) {
    let (Body::Loops(na), Body::Loops(nb)) = (&mut a.body, b.body) else {
        return;
    };
    let outer = na.space.len() as u32;
    // Renumber b's stage variables after a's, and its locals after a's.
    let mut max_var = outer;
    let mut max_local = 0;
    for s in &na.stages {
        let (Stage::Reduce { vars, .. } | Stage::Store { vars, .. }) = s;
        for (v, _) in vars {
            max_var = max_var.max(v.0 + 1);
        }
        if let Stage::Reduce { local, .. } = s {
            max_local = max_local.max(local.0 + 1);
        }
    }
    let shift = max_var - outer;
    let rv = |v: Var| if v.0 < outer { v } else { Var(v.0 + shift) };
    for mut s in nb.stages {
        match &mut s {
            Stage::Reduce {
                local, vars, body, ..
            } => {
                *local = Local(local.0 + max_local);
                for (v, _) in vars.iter_mut() {
                    *v = rv(*v);
                }
                renumber_expr(body, &rv, max_local);
            }
            Stage::Store {
                vars, index, value, ..
            } => {
                for (v, _) in vars.iter_mut() {
                    *v = rv(*v);
                }
                for i in index.iter_mut() {
                    renumber_index(i, &rv);
                }
                renumber_expr(value, &rv, max_local);
            }
        }
        na.stages.push(s);
    }
    for i in b.inputs {
        if !a.inputs.contains(&i) {
            a.inputs.push(i);
        }
    }
    a.inputs.sort();
    a.outputs.extend(b.outputs);
    a.kind = heavier(a.kind, b.kind);
    a.sources.extend(b.sources);
}

fn renumber_index(i: &mut Index, rv: &dyn Fn(Var) -> Var) {
    match i {
        Index::Var(v) => *v = rv(*v),
        Index::Const(_) => {}
        Index::Add(a, b) => {
            renumber_index(a, rv);
            renumber_index(b, rv);
        }
        Index::Mul(a, _) | Index::Div(a, _) | Index::Rem(a, _) => renumber_index(a, rv),
    }
}

fn renumber_expr(e: &mut Expr, rv: &dyn Fn(Var) -> Var, local_shift: u32) {
    match e {
        Expr::Load { index, .. } => index.iter_mut().for_each(|i| renumber_index(i, rv)),
        Expr::Const(_) => {}
        Expr::Local(l) => *l = Local(l.0 + local_shift),
        Expr::Index(i, _) => renumber_index(i, rv),
        Expr::Unary(_, a) | Expr::Convert(_, a) => renumber_expr(a, rv, local_shift),
        Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => {
            renumber_expr(a, rv, local_shift);
            renumber_expr(b, rv, local_shift);
        }
        Expr::Select(c, a, b) => {
            renumber_expr(c, rv, local_shift);
            renumber_expr(a, rv, local_shift);
            renumber_expr(b, rv, local_shift);
        }
    }
}
