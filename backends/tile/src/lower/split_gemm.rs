//! Contractions of the GEMM form split into plain pieces: a kernel-IR rewrite that brings
//! transposed operands, im2col (convolutions), prologues and arbitrary epilogues to the
//! matrix engine.
//!
//! A loop-nest kernel has the *GEMM form* when its stages are one f32 sum
//! `t = Σ_r a(…) · b(…)` followed by stores at the outer point (reading `t`). Its outer
//! variables split into those used by `a` only, by `b` only, and by both (the batch: a
//! batched matmul, attention heads); the reduce variables flatten into K. A variable both
//! operands use only through `v / c` and `v % c` (merged attention heads) is split first
//! (`terafab_ir::kernel::split`). [`split_contractions`] replaces such a kernel `@k` by
//!
//! 1. `@k.packA` / `@k.packB`: a movement loop nest evaluating the operand expression into a
//!    dense row-major temp `[(batch,) M, K]` / `[(batch,) K, N]` (a transpose, im2col with
//!    padding fills, a prologue), skipped when the operand is already such a load. B is not
//!    packed where the GEMM can read it in place (*implicit GEMM*, one product): a load with
//!    an affine index, contiguous along the innermost N variable (a convolution's input with
//!    stride 1 along W), becomes a load indexed by the digits of the GEMM's `k` and `n`
//!    (`(c, kh, kw)` and `(oh, ow)`), which the generator gathers chunk by chunk with 3-D
//!    strided DMA; where the load has padding fills or a narrowing conversion, `@k.padB`
//!    first writes the padded (converted) box the index ranges over. With the cost check it
//!    is taken only where the gathered copies roughly keep pace with `mm` and, with a `padB`, the
//!    im2col matrix would be at least twice the box. A
//!    narrow operand (`convert[f32]` of bf16/CFP8, or a temp holding only such values) is
//!    packed narrow, so the matrix engine runs at its narrow rate. A pack reading only
//!    constants (weights) is evaluated here, once: its temp becomes a constant buffer;
//! 2. `@k.gemm`: `C'[(b,) m, n] = Σ_k A'[(b,) m, k] · B'[(b,) k, n]`, the plain form of
//!    [`super::contraction`] (the matrix engine), writing the kernel's output directly when
//!    its only store is `C[m, n] = t`, `t + bias[n]` or a ReLU of either on a dense f32
//!    buffer of that shape (bias and ReLU on the accumulators);
//! 3. `@k.epilogue`: otherwise, the kernel's stores over its own space, reading `C'[m, n]`
//!    in place of `t` (BN, residual adds, activations, the output layout such as NCHW).
//!
//! The operand without the innermost output variable is A (so a convolution is
//! `C'[oc, pixel]` and its NCHW epilogue is contiguous). Outer and reduce variables of extent
//! one are dropped (index 0). Left unchanged (the vector path): kernels already plain, M, N
//! or K of 1 (matrix-vector and outer products), outer variables neither operand uses,
//! several reductions in one kernel, stores inside loops, and GEMMs [`gemm_plan`] rejects.
//! Contractions of up to [`COST_CHECK_MACS`] multiply-adds are simulated both ways and
//! stay whole where that is faster.

use std::collections::HashMap;

use terafab_ir::kernel::interp::run_kernel;
use terafab_ir::kernel::split::{flatten_vars, splits};
use terafab_ir::kernel::{
    Body, Buffer, BufferId, Expr, Index, Kernel, KernelKind, KernelProgram, Local, LoopNest, Stage,
    Storage, Var,
};
use terafab_ir::{BinaryOp, DType, ReduceKind, Tensor};

use crate::config::Config;
use crate::dtype::ElemType;
use crate::r#gen::{Epilogue, Gather, GemmSpec, gemm_plan};

/// A program after [`split_contractions`].
#[derive(Debug, Clone)]
pub struct Split {
    pub program: KernelProgram,
    /// Pack kernels of constant operands (weights) evaluated at compile time: their results
    /// are constant buffers of the program, laid out for the matrix engine.
    pub folded: Vec<String>,
    /// Contractions left on the vector path because the simulated split was slower.
    pub kept: Vec<String>,
}

/// Contractions of up to this many multiply-adds are simulated (timing only) both ways, split
/// and on the vector path, and the faster is kept; larger ones always go to the matrix
/// engine (the vector path is then many times slower, and lowering it costs host time).
pub const COST_CHECK_MACS: usize = 1 << 20;

/// The program with every kernel of the GEMM form that the matrix engine can run split into
/// pack, GEMM and epilogue kernels (see the module doc); other kernels unchanged. Pack
/// kernels reading only constants are evaluated here, once ([`Split::folded`]); a small
/// contraction stays whole where that simulates faster ([`COST_CHECK_MACS`]; with
/// `cost_check`, else every contraction that can is split).
pub fn split_contractions(cfg: &Config, p: &KernelProgram, cost_check: bool) -> Split {
    let mut out = KernelProgram {
        name: p.name.clone(),
        buffers: p.buffers.clone(),
        inputs: p.inputs.clone(),
        outputs: p.outputs.clone(),
        kernels: Vec::new(),
    };
    let mut folded = Vec::new();
    let mut kept = Vec::new();
    let narrow = narrow_valued(p);
    for k in &p.kernels {
        let mut trial = KernelProgram {
            name: out.name.clone(),
            buffers: out.buffers.clone(),
            inputs: out.inputs.clone(),
            outputs: out.outputs.clone(),
            kernels: Vec::new(),
        };
        // A variable both operands use only through `v / c` and `v % c` (merged attention
        // heads) hides a batch: the nest with it split is tried too.
        // Real GEMMs first (as it is, then with a variable split), matrix-vector products last.
        let pieces = split(cfg, &mut trial, k, &narrow, false, cost_check).or_else(|| {
            let Body::Loops(nest) = &k.body else {
                return None;
            };
            splits(nest).into_iter().find_map(|s| {
                let k2 = Kernel {
                    body: Body::Loops(s),
                    ..k.clone()
                };
                split(cfg, &mut trial, &k2, &narrow, false, cost_check)
            })
        });
        let pieces = pieces.or_else(|| split(cfg, &mut trial, k, &narrow, true, cost_check));
        let Some(pieces) = pieces else {
            out.kernels.push(k.clone());
            continue;
        };
        let mut names = Vec::new();
        let pieces: Vec<Kernel> = pieces
            .into_iter()
            .filter(|piece| {
                let done = fold_constant(&mut trial, piece);
                if done {
                    names.push(piece.name.clone());
                }
                !done
            })
            .collect();
        // A matrix-vector product (one of the GEMM's dims 1) uses a sliver of the matrix
        // engine: split only where that simulates faster, whatever its size.
        let gemv = pieces.iter().any(|g| {
            matches!(&g.body, Body::Loops(n) if g.name.ends_with(".gemm")
                && n.space.iter().rev().take(2).any(|&d| d == 1))
        });
        if gemv && !cost_check {
            out.kernels.push(k.clone());
            continue;
        }
        if cost_check && (gemv || macs(k).is_some_and(|n| n <= COST_CHECK_MACS)) {
            let whole = simulated_cycles(cfg, &out, std::slice::from_ref(k));
            let parts = simulated_cycles(cfg, &trial, &pieces);
            if whole.is_some() && (parts.is_none() || whole <= parts) {
                kept.push(k.name.clone());
                out.kernels.push(k.clone());
                continue;
            }
        }
        trial.kernels = std::mem::take(&mut out.kernels);
        trial.kernels.extend(pieces);
        out = trial;
        folded.extend(names);
    }
    Split {
        program: out,
        folded,
        kept,
    }
}

/// The multiply-adds of a contraction kernel: its space times its first reduction.
fn macs(k: &Kernel) -> Option<usize> {
    let Body::Loops(nest) = &k.body else {
        return None;
    };
    let Some(Stage::Reduce { vars, .. }) = nest.stages.first() else {
        return None;
    };
    nest.space
        .iter()
        .chain(vars.iter().map(|(_, n)| n))
        .try_fold(1usize, |acc, &n| acc.checked_mul(n))
}

/// The simulated cycles (timing only) of `ks` lowered one by one; `None` when one of them
/// is not lowered or does not simulate.
fn simulated_cycles(cfg: &Config, p: &KernelProgram, ks: &[Kernel]) -> Option<u64> {
    ks.iter()
        .map(|k| super::timing_cycles(cfg, &super::lower_kernel(cfg, p, k).ok()?.program))
        .sum()
}

/// Evaluate a movement kernel that reads constants only (a pack of weights) with the kernel
/// interpreter, turning its dense row-major temps into constant buffers; `false` (and `p`
/// unchanged) when the kernel is not one.
fn fold_constant(p: &mut KernelProgram, k: &Kernel) -> bool {
    if k.kind != KernelKind::Movement || !matches!(k.body, Body::Loops(_)) {
        return false;
    }
    let mut mem: Vec<Option<Tensor>> = vec![None; p.buffers.len()];
    for &b in &k.inputs {
        let buf = p.buffer(b);
        let Storage::Const(t) = &buf.storage else {
            return false;
        };
        if !buf.is_row_major() {
            return false;
        }
        match t.reshaped(vec![t.len()]) {
            Ok(flat) => mem[b.index()] = Some(flat),
            Err(_) => return false,
        }
    }
    let output_ok = |b: &BufferId| {
        let buf = p.buffer(*b);
        matches!(buf.storage, Storage::Temp)
            && buf.is_row_major()
            && !p.outputs.iter().any(|(_, o)| o == b)
    };
    if !k.outputs.iter().all(output_ok) {
        return false;
    }
    let Ok(outs) = run_kernel(p, k, &mem) else {
        return false;
    };
    let mut values = Vec::new();
    for (&b, t) in k.outputs.iter().zip(outs) {
        match t.reshaped(p.buffer(b).shape.clone()) {
            Ok(t) => values.push((b, t)),
            Err(_) => return false,
        }
    }
    for (b, t) in values {
        p.buffers[b.index()].storage = Storage::Const(t);
    }
    true
}

/// The element type of an expression (`None` for locals and ill-typed expressions).
fn dtype(p: &KernelProgram, e: &Expr) -> Option<DType> {
    Some(match e {
        Expr::Load { buffer, .. } => p.buffers.get(buffer.index())?.dtype,
        Expr::Const(t) => t.dtype(),
        Expr::Local(_) => return None,
        Expr::Index(_, d) | Expr::Convert(d, _) => *d,
        Expr::Unary(op, a) => match op {
            terafab_ir::UnaryOp::IsNan | terafab_ir::UnaryOp::IsInf => DType::Bool,
            _ => dtype(p, a)?,
        },
        Expr::Binary(_, a, _) | Expr::Select(_, a, _) => dtype(p, a)?,
        Expr::Compare(..) => DType::Bool,
    })
}

/// `e` with every variable replaced by `f(var)` and every local by `local(l)`.
fn map_expr(e: &Expr, f: &dyn Fn(Var) -> Index, local: &dyn Fn(Local) -> Expr) -> Expr {
    e.map(&|i| i.subst(f), &|b| b, local)
}

/// The row-major flat index of `vars` (each `(var, extent)`), each variable through `f`.
fn flat(vars: &[(Var, usize)], f: &dyn Fn(Var) -> Index) -> Index {
    let mut idx = Index::Const(0);
    let mut stride = 1i64;
    for &(v, n) in vars.iter().rev() {
        idx = f(v).times(stride).plus(idx);
        stride = stride.saturating_mul(n as i64);
    }
    idx
}

/// The buffers an expression loads, in first-use order, appended to `out` without repeats.
fn loads(e: &Expr, out: &mut Vec<BufferId>) {
    e.walk(&mut |x| {
        if let Expr::Load { buffer, .. } = x
            && !out.contains(buffer)
        {
            out.push(*buffer);
        }
    });
}

fn product(vars: &[(Var, usize)]) -> Option<usize> {
    vars.iter()
        .try_fold(1usize, |acc, &(_, n)| acc.checked_mul(n))
}

/// The f32 temps whose every element is a value of a narrow type: written only by stores
/// of `convert[f32](convert[T](..))` (a precision pass's rounding materialized), mapped to
/// `T`.
fn narrow_valued(p: &KernelProgram) -> HashMap<BufferId, DType> {
    let mut found: HashMap<BufferId, Option<DType>> = HashMap::new();
    for k in &p.kernels {
        let Body::Loops(nest) = &k.body else {
            for &b in &k.outputs {
                found.insert(b, None);
            }
            continue;
        };
        for s in &nest.stages {
            if let Stage::Store { buffer, value, .. } = s {
                let t = match value {
                    Expr::Convert(DType::F32, x) => match &**x {
                        Expr::Convert(t @ (DType::BF16 | DType::CF8E4M3 | DType::CF8E5M2), _) => {
                            Some(*t)
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let e = found.entry(*buffer).or_insert(t);
                if *e != t {
                    *e = None;
                }
            }
        }
    }
    found
        .into_iter()
        .filter(|&(b, _)| {
            let buf = p.buffer(b);
            matches!(buf.storage, Storage::Temp) && buf.dtype == DType::F32
        })
        .filter_map(|(b, t)| Some((b, t?)))
        .collect()
}

/// The element type an operand is packed in and the expression packed: `x` of a narrow
/// type (bf16, CFP8) under `convert[f32](x)` (the precision passes' rounding, or narrow
/// buffers), or a load (fill 0) of an f32 temp holding narrow values only
/// ([`narrow_valued`]) converted to that type, which is exact; so that the matrix engine
/// reads it at its narrow rate (its products are exact in f32 either way). Any other
/// operand in f32.
fn operand_form(p: &KernelProgram, e: &Expr, narrow: &HashMap<BufferId, DType>) -> (DType, Expr) {
    if let Expr::Convert(DType::F32, x) = e
        && let Some(d @ (DType::BF16 | DType::CF8E4M3 | DType::CF8E5M2)) = dtype(p, x)
    {
        return (d, (**x).clone());
    }
    if let Expr::Load { buffer, fill, .. } = e
        && let Some(&t) = narrow.get(buffer)
        && fill.as_ref().is_none_or(|f| {
            f.as_slice::<f32>()
                .is_some_and(|v| v.iter().all(|&x| x == 0.0))
        })
    {
        return (t, Expr::Convert(t, Box::new(e.clone())));
    }
    (DType::F32, e.clone())
}

/// The batch group (absent without a batch) in front of an operand's or result's groups.
fn with_batch<'a>(
    batch: &'a [(Var, usize)],
    rest: [&'a [(Var, usize)]; 2],
) -> Vec<&'a [(Var, usize)]> {
    (!batch.is_empty())
        .then_some(batch)
        .into_iter()
        .chain(rest)
        .collect()
}

/// A dense row-major load of element type `ty`, one dim per group of `groups` (each group
/// one variable), indexed by those variables in order, that `e` already is.
fn plain_load(
    p: &KernelProgram,
    e: &Expr,
    ty: DType,
    groups: &[&[(Var, usize)]],
) -> Option<BufferId> {
    let Expr::Load {
        buffer,
        index,
        fill: None,
    } = e
    else {
        return None;
    };
    let mut shape = Vec::new();
    let mut want = Vec::new();
    for g in groups {
        let &[(v, n)] = *g else {
            return None;
        };
        shape.push(n);
        want.push(Index::Var(v));
    }
    let b = p.buffer(*buffer);
    (b.dtype == ty && b.shape == shape && b.is_row_major() && *index == want).then_some(*buffer)
}

/// The pieces replacing `k`, with their temps added to `p`; `None` when `k` stays as it is.
fn split(
    cfg: &Config,
    p: &mut KernelProgram,
    k: &Kernel,
    narrow: &HashMap<BufferId, DType>,
    gemv: bool,
    cost_check: bool,
) -> Option<Vec<Kernel>> {
    let Body::Loops(nest) = &k.body else {
        return None;
    };
    // Already plain (or plain but beyond the matrix engine's limits): unchanged.
    if !matches!(super::contraction::lower(cfg, p, k), Ok(None)) {
        return None;
    }
    let (first, rest) = nest.stages.split_first()?;
    let Stage::Reduce {
        local,
        kind: ReduceKind::Sum,
        vars: k_vars,
        body: Expr::Binary(BinaryOp::Mul, x, y),
    } = first
    else {
        return None;
    };
    let f32_operand = |e: &Expr| dtype(p, e) == Some(DType::F32) && !e.uses_local();
    if !f32_operand(x) || !f32_operand(y) || rest.is_empty() {
        return None;
    }
    for s in rest {
        let Stage::Store { vars, value, .. } = s else {
            return None;
        };
        // The stores read the sum only: no other local exists.
        let mut other_local = false;
        value.walk(&mut |e| other_local |= matches!(e, Expr::Local(l) if l != local));
        if !vars.is_empty() || other_local {
            return None;
        }
    }
    let (vx, vy) = (x.vars(), y.vars());
    let mut x_vars = Vec::new();
    let mut y_vars = Vec::new();
    // Variables of both operands: a batch of independent products.
    let mut batch_vars = Vec::new();
    for (d, &n) in nest.space.iter().enumerate() {
        let v = Var(d as u32);
        if n == 1 {
            continue;
        }
        match (vx.contains(&v), vy.contains(&v)) {
            (true, false) => x_vars.push((v, n)),
            (false, true) => y_vars.push((v, n)),
            (true, true) => batch_vars.push((v, n)),
            // Used by neither operand (a broadcast of the result): left to the vector path.
            (false, false) => return None,
        }
    }
    let red: Vec<(Var, usize)> = k_vars.iter().copied().filter(|&(_, n)| n != 1).collect();
    // A is the operand without the innermost output variable.
    let innermost = nest
        .space
        .iter()
        .enumerate()
        .rev()
        .find(|&(_, &n)| n != 1)
        .map(|(d, _)| Var(d as u32));
    let ((a, m_vars), (b, n_vars)) = if innermost.is_some_and(|v| x_vars.iter().any(|x| x.0 == v)) {
        ((&**y, y_vars), (&**x, x_vars))
    } else {
        ((&**x, x_vars), (&**y, y_vars))
    };
    let (m, n, kk) = (product(&m_vars)?, product(&n_vars)?, product(&red)?);
    let bt = product(&batch_vars)?;
    let with_bt = |rest: [usize; 2]| -> Vec<usize> {
        (!batch_vars.is_empty())
            .then_some(bt)
            .into_iter()
            .chain(rest)
            .collect()
    };
    // Outer products (K of 1): the vector path. Matrix-vector products (M or N of 1) are
    // split here (with `gemv`; not for a variable split, which must find a real GEMM) and
    // kept whole unless the split simulates faster (see the caller).
    if kk == 1 || (!gemv && (m == 1 || n == 1)) {
        return None;
    }
    if i64::try_from(m.max(n).max(kk).max(bt)).is_err() {
        return None;
    }
    // Narrow operands packed narrow when the matrix engine takes that pair of types, else
    // both in f32.
    let (mut ta, mut ea) = operand_form(p, a, narrow);
    let (mut tb, mut eb) = operand_form(p, b, narrow);
    let plan = |ta: DType, tb: DType| {
        bare_spec((bt, m, n, kk), (ta, tb), None).is_some_and(|spec| gemm_plan(cfg, &spec).is_ok())
    };
    if !plan(ta, tb) {
        (ta, ea, tb, eb) = (DType::F32, a.clone(), DType::F32, b.clone());
        if !plan(ta, tb) {
            return None;
        }
    }

    let mut pieces = Vec::new();
    let temp = |p: &mut KernelProgram, what: &str, ty: DType, shape: Vec<usize>| {
        p.add_buffer(Buffer::new(
            format!("{}.{what}", k.name),
            ty,
            shape,
            Storage::Temp,
        ))
    };
    // Pack an operand whose dims are the variable groups `groups` (original variables),
    // flattened one dim each.
    let mut pack = |p: &mut KernelProgram,
                    e: &Expr,
                    ty: DType,
                    groups: &[&[(Var, usize)]],
                    shape: Vec<usize>,
                    what: &str|
     -> BufferId {
        if let Some(buf) = plain_load(p, e, ty, groups) {
            return buf;
        }
        let dst = temp(p, what, ty, shape);
        let all: Vec<(Var, usize)> = groups.iter().flat_map(|g| g.iter()).copied().collect();
        let new_var: HashMap<Var, Var> = all
            .iter()
            .enumerate()
            .map(|(i, &(v, _))| (v, Var(i as u32)))
            .collect();
        let f = |v: Var| match new_var.get(&v) {
            Some(&nv) => Index::Var(nv),
            None => Index::Const(0),
        };
        let value = map_expr(e, &f, &|l| Expr::Local(l));
        let mut space: Vec<usize> = all.iter().map(|&(_, n)| n).collect();
        if space.is_empty() {
            space.push(1);
        }
        let mut inputs = Vec::new();
        loads(&value, &mut inputs);
        pieces.push(Kernel {
            name: format!("{}.pack{}", k.name, &what[..1]),
            kind: KernelKind::Movement,
            inputs,
            outputs: vec![dst],
            body: Body::Loops(LoopNest {
                space,
                stages: vec![Stage::Store {
                    buffer: dst,
                    vars: Vec::new(),
                    index: groups.iter().map(|g| flat(g, &f)).collect(),
                    value,
                }],
            }),
            sources: k.sources.clone(),
        });
        dst
    };
    let a_buf = pack(
        p,
        &ea,
        ta,
        &with_batch(&batch_vars, [&m_vars, &red]),
        with_bt([m, kk]),
        "A",
    );
    // The GEMM's variables: batch (when there is one), m, n, k.
    let first = u32::from(!batch_vars.is_empty());
    let bv = Var(0);
    let (mv, nv, kv) = (Var(first), Var(first + 1), Var(first + 2));
    let gemm_index = |i: Var, j: Var| -> Vec<Index> {
        (!batch_vars.is_empty())
            .then_some(bv)
            .into_iter()
            .chain([i, j])
            .map(Index::Var)
            .collect()
    };
    // A packed operand in f32: narrow ones converted (exact).
    let load2 = |buffer, ty: DType, i: Var, j: Var| {
        let load = Expr::Load {
            buffer,
            index: gemm_index(i, j),
            fill: None,
        };
        if ty == DType::F32 {
            load
        } else {
            Expr::Convert(DType::F32, Box::new(load))
        }
    };
    // B read in place by the GEMM (implicit GEMM) where it is a load the generator can
    // gather, else packed.
    let extent = |v: Var| {
        nest.space
            .get(v.0 as usize)
            .copied()
            .or_else(|| k_vars.iter().find(|x| x.0 == v).map(|x| x.1))
    };
    let in_place = if batch_vars.is_empty() && plain_load(p, &eb, tb, &[&red, &n_vars]).is_none() {
        gather_b(p, k, &eb, tb, &red, &n_vars, &extent, (kv, kk), (nv, n))
            .filter(|g| !cost_check || gather_pays(cfg, g, (m, n, kk), (ta, tb)))
            .and_then(|g| gather_b_apply(p, k, g))
    } else {
        None
    };
    let (b_buf, b_expr) = match in_place {
        Some((buf, expr, prep)) => {
            pieces.extend(prep);
            (buf, expr)
        }
        None => {
            let b_buf = pack(
                p,
                &eb,
                tb,
                &with_batch(&batch_vars, [&red, &n_vars]),
                with_bt([kk, n]),
                "B",
            );
            (b_buf, load2(b_buf, tb, kv, nv))
        }
    };

    // The GEMM writes the output directly when the only store is `C[m, n] = e(t)` on a dense
    // f32 `[M, N]` buffer and `e` is the identity, or a bias along N and a ReLU that the
    // plain GEMM applies on its accumulators.
    let mut gemm_inputs = vec![a_buf];
    if b_buf != a_buf {
        gemm_inputs.push(b_buf);
    }
    let gemm_at = |c_buf: BufferId, index: Vec<Index>, value: Expr, inputs: Vec<BufferId>| Kernel {
        name: format!("{}.gemm", k.name),
        kind: KernelKind::Matmul,
        inputs,
        outputs: vec![c_buf],
        body: Body::Loops(LoopNest {
            space: with_bt([m, n]),
            stages: vec![
                Stage::Reduce {
                    local: Local(0),
                    kind: ReduceKind::Sum,
                    vars: vec![(kv, kk)],
                    body: Expr::binary(BinaryOp::Mul, load2(a_buf, ta, mv, kv), b_expr.clone()),
                },
                Stage::Store {
                    buffer: c_buf,
                    vars: Vec::new(),
                    index,
                    value,
                },
            ],
        }),
        sources: k.sources.clone(),
    };
    let gemm = |c_buf: BufferId, value: Expr, inputs: Vec<BufferId>| {
        gemm_at(c_buf, gemm_index(mv, nv), value, inputs)
    };
    // One product: the store with the M and N variables flattened into the GEMM's (an NCHW
    // convolution output is `C[m·N + n]` again), taken when the plain GEMM takes it (its
    // layout and a fused epilogue: batch norm, residual add, ReLU).
    let flattened = |buffer: BufferId| -> Option<Kernel> {
        let buf = p.buffer(buffer);
        if !batch_vars.is_empty()
            || buf.dtype != DType::F32
            || !buf.is_row_major()
            || !matches!(buf.storage, Storage::Temp)
            || buf.span() != m * n
            || buffer == a_buf
            || buffer == b_buf
        {
            return None;
        }
        let (mf, nf) = (Var(u32::MAX - 2), Var(u32::MAX - 1));
        let all: Vec<(Var, usize)> = nest
            .space
            .iter()
            .enumerate()
            .map(|(d, &e)| (Var(d as u32), e))
            .chain([(mf, m), (nf, n)])
            .collect();
        let extent = |v: Var| all.iter().find(|x| x.0 == v).map(|x| x.1);
        let stages = flatten_vars(rest, &[(mf, m_vars.clone()), (nf, n_vars.clone())], &extent);
        let [Stage::Store { index, value, .. }] = stages.as_slice() else {
            return None;
        };
        // Every other variable has extent 1.
        let rename = |v: Var| {
            if v == mf {
                Index::Var(mv)
            } else if v == nf {
                Index::Var(nv)
            } else {
                Index::Const(0)
            }
        };
        let index: Vec<Index> = index.iter().map(|i| i.subst(&rename)).collect();
        let value = value.map(&|i| i.subst(&rename), &|b| b, &|_| Expr::Local(Local(0)));
        let mut inputs = gemm_inputs.clone();
        loads(&value, &mut inputs);
        let candidate = gemm_at(buffer, index, value, inputs);
        matches!(super::contraction::lower(cfg, p, &candidate), Ok(Some(_))).then_some(candidate)
    };
    let direct = match rest {
        [
            Stage::Store {
                buffer,
                index,
                value,
                ..
            },
        ] => {
            let buf = p.buffer(*buffer);
            let id = |v: Var| Index::Var(v);
            let c_index: Vec<Index> = with_batch(&batch_vars, [&m_vars, &n_vars])
                .iter()
                .map(|g| flat(g, &id))
                .collect();
            let dense = buf.dtype == DType::F32
                && buf.shape == with_bt([m, n])
                && buf.is_row_major()
                && matches!(buf.storage, Storage::Temp)
                && *index == c_index
                && *buffer != a_buf
                && *buffer != b_buf;
            match value {
                _ if batch_vars.is_empty() => flattened(*buffer),
                _ if !dense => None,
                Expr::Local(l) if l == local => {
                    Some(gemm(*buffer, Expr::Local(Local(0)), gemm_inputs.clone()))
                }
                _ => match (m_vars.as_slice(), n_vars.as_slice(), batch_vars.as_slice()) {
                    (&[(om, _)], &[(on, _)], [] | [_]) => {
                        let ob = batch_vars.first().map(|b| b.0);
                        let remap = |v: Var| {
                            if v == om {
                                Index::Var(mv)
                            } else if v == on {
                                Index::Var(nv)
                            } else if Some(v) == ob {
                                Index::Var(bv)
                            } else {
                                Index::Const(0)
                            }
                        };
                        let value = map_expr(value, &remap, &|_| Expr::Local(Local(0)));
                        let mut inputs = gemm_inputs.clone();
                        loads(&value, &mut inputs);
                        let candidate = gemm(*buffer, value, inputs);
                        matches!(super::contraction::lower(cfg, p, &candidate), Ok(Some(_)))
                            .then_some(candidate)
                    }
                    _ => None,
                },
            }
        }
        _ => None,
    };
    let c_buf = match &direct {
        Some(g) => g.outputs[0],
        None => temp(p, "C", DType::F32, with_bt([m, n])),
    };
    pieces.push(match direct.clone() {
        Some(g) => g,
        None => gemm(c_buf, Expr::Local(Local(0)), gemm_inputs),
    });
    if direct.is_none() {
        let id = |v: Var| Index::Var(v);
        let c_load = Expr::Load {
            buffer: c_buf,
            index: with_batch(&batch_vars, [&m_vars, &n_vars])
                .iter()
                .map(|g| flat(g, &id))
                .collect(),
            fill: None,
        };
        let stages: Vec<Stage> = rest
            .iter()
            .filter_map(|s| match s {
                Stage::Store {
                    buffer,
                    vars,
                    index,
                    value,
                } => Some(Stage::Store {
                    buffer: *buffer,
                    vars: vars.clone(),
                    index: index.clone(),
                    value: map_expr(value, &id, &|_| c_load.clone()),
                }),
                Stage::Reduce { .. } => None,
            })
            .collect();
        let mut inputs = vec![c_buf];
        for s in &stages {
            if let Stage::Store { value, .. } = s {
                loads(value, &mut inputs);
            }
        }
        pieces.push(Kernel {
            name: format!("{}.epilogue", k.name),
            kind: KernelKind::Elementwise,
            inputs,
            outputs: k.outputs.clone(),
            body: Body::Loops(LoopNest {
                space: nest.space.clone(),
                stages,
            }),
            sources: k.sources.clone(),
        });
    }
    Some(pieces)
}

/// Whether an index is affine in its variables (no division or remainder).
fn affine(i: &Index) -> bool {
    match i {
        Index::Var(_) | Index::Const(_) => true,
        Index::Add(a, b) => affine(a) && affine(b),
        Index::Mul(a, _) => affine(a),
        Index::Div(..) | Index::Rem(..) => false,
    }
}

/// Implicit GEMM: B (`eb`, of element type `tb`, over the reduce variables `red` and the N
/// variables `n_vars`) read in place by the GEMM instead of packed into `[K, N]`. `eb` must
/// be a load with an affine index, or a conversion of one. Where it has a fill value
/// (padding) or a conversion (a narrow operand held in f32), a `@k.padB` movement kernel
/// first writes the box the index ranges over (padded and converted: a copy the size of
/// the input, where an im2col matrix is `KH·KW` times that) and the GEMM reads that box.
/// Returns the buffer the GEMM reads, its B expression over the GEMM's `k` and `n`
/// variables (their digits standing for the original variables) converted to f32, and the
/// `padB` kernel; `None` when the generator could not gather it (not contiguous along the
/// innermost N variable: a strided convolution, a transpose), so B is packed instead.
#[allow(clippy::too_many_arguments)]
fn gather_b(
    p: &KernelProgram,
    k: &Kernel,
    eb: &Expr,
    tb: DType,
    red: &[(Var, usize)],
    n_vars: &[(Var, usize)],
    extent: &dyn Fn(Var) -> Option<usize>,
    (kv, kk): (Var, usize),
    (nv, n): (Var, usize),
) -> Option<InPlace> {
    let (load, convert) = match eb {
        Expr::Load { .. } => (eb, None),
        Expr::Convert(t, x) if matches!(**x, Expr::Load { .. }) => (&**x, Some(*t)),
        _ => return None,
    };
    let Expr::Load {
        buffer,
        index,
        fill,
    } = load
    else {
        return None;
    };
    if !index.iter().all(affine) {
        return None;
    }
    // Variables of extent one (dropped from the groups) are 0.
    let kept = |v: Var| {
        if extent(v) == Some(1) {
            Index::Const(0)
        } else {
            Index::Var(v)
        }
    };
    let index: Vec<Index> = index.iter().map(|i| i.subst(&kept)).collect();
    // The digits of the GEMM's flat `k` and `n` for the original variables.
    let mut digit: HashMap<Var, Index> = HashMap::new();
    for (vars, flat_var) in [(red, kv), (n_vars, nv)] {
        let mut div = 1i64;
        for (i, &(v, ext)) in vars.iter().enumerate().rev() {
            let mut d = Index::Var(flat_var).floor_div(div);
            if i > 0 {
                d = d.modulo(ext as i64);
            }
            digit.insert(v, d);
            div = div.checked_mul(ext as i64)?;
        }
    }
    let by_digits = |v: Var| digit.get(&v).cloned().unwrap_or(Index::Const(0));
    let src = p.buffer(*buffer).clone();
    let prep = fill.is_some() || convert.is_some();
    // The box the index ranges over (its low corner and shape), read by the GEMM.
    let (lo, shape): (Vec<i64>, Vec<usize>) = if prep {
        let mut lo = Vec::new();
        let mut shape = Vec::new();
        for i in &index {
            let (a, b) = i.interval(extent)?;
            lo.push(a);
            shape.push(usize::try_from(b.checked_sub(a)?.checked_add(1)?).ok()?);
        }
        (lo, shape)
    } else {
        (vec![0; index.len()], src.shape.clone())
    };
    let read = if prep {
        Buffer::new(format!("{}.srcB", k.name), tb, shape.clone(), Storage::Temp)
    } else {
        if src.dtype != tb {
            return None;
        }
        src.clone()
    };
    let gemm_index: Vec<Index> = index
        .iter()
        .zip(&lo)
        .map(|(i, &l)| i.clone().offset(-l).subst(&by_digits))
        .collect();
    let gather = super::contraction::gather_of(&read, &gemm_index, (kv, kk), (nv, n))?;
    Some(InPlace {
        gather,
        source: *buffer,
        read: prep.then_some(read),
        lo,
        fill: fill.clone(),
        convert,
        gemm_index,
        tb,
    })
}

/// B read in place, as [`gather_b`] found it.
struct InPlace {
    gather: Gather,
    /// The buffer B loads.
    source: BufferId,
    /// The box `padB` writes, when there is one.
    read: Option<Buffer>,
    /// The box's low corner in the source.
    lo: Vec<i64>,
    fill: Option<Tensor>,
    convert: Option<DType>,
    /// B's index over the GEMM's `k` and `n` (in the box when there is one).
    gemm_index: Vec<Index>,
    tb: DType,
}

/// The buffer the GEMM reads, its B expression (in f32) and the `padB` kernel, with the
/// box added to `p`.
fn gather_b_apply(
    p: &mut KernelProgram,
    k: &Kernel,
    g: InPlace,
) -> Option<(BufferId, Expr, Option<Kernel>)> {
    let (read_id, prep_kernel) = match g.read {
        Some(read) => {
            let shape = read.shape.clone();
            let id = p.add_buffer(read);
            let load = Expr::Load {
                buffer: g.source,
                index: g
                    .lo
                    .iter()
                    .enumerate()
                    .map(|(d, &l)| Index::Var(Var(d as u32)).offset(l))
                    .collect(),
                fill: g.fill,
            };
            let value = match g.convert {
                Some(t) => Expr::Convert(t, Box::new(load)),
                None => load,
            };
            let kernel = Kernel {
                name: format!("{}.padB", k.name),
                kind: KernelKind::Movement,
                inputs: vec![g.source],
                outputs: vec![id],
                body: Body::Loops(LoopNest {
                    space: shape.clone(),
                    stages: vec![Stage::Store {
                        buffer: id,
                        vars: Vec::new(),
                        index: (0..shape.len())
                            .map(|d| Index::Var(Var(d as u32)))
                            .collect(),
                        value,
                    }],
                }),
                sources: k.sources.clone(),
            };
            (id, Some(kernel))
        }
        None => (g.source, None),
    };
    let load = Expr::Load {
        buffer: read_id,
        index: g.gemm_index,
        fill: None,
    };
    let expr = if g.tb == DType::F32 {
        load
    } else {
        Expr::Convert(DType::F32, Box::new(load))
    };
    Some((read_id, expr, prep_kernel))
}

/// The GEMM of `batch` products `m × n × kk` with operands of types `ta`, `tb` (no bias,
/// no epilogue); `None` when a type is not the matrix engine's.
fn bare_spec(
    (batch, m, n, kk): (usize, usize, usize, usize),
    (ta, tb): (DType, DType),
    b_gather: Option<Gather>,
) -> Option<GemmSpec> {
    Some(GemmSpec {
        batch: batch as u64,
        m: m as u64,
        n: n as u64,
        k: kk as u64,
        a_type: super::elem_type(ta)?,
        b_type: super::elem_type(tb)?,
        bias: false,
        relu: false,
        epilogue: Epilogue::NONE,
        b_gather,
    })
}

/// Whether reading B in place pays: the gathered chunk of a step takes one DMA per run of
/// K and group of N (each at least `dma_setup` cycles to issue, and the HBM latency over the
/// transfers in flight), which must stay within twice the step's `mm` (an estimate that
/// ignores the overlap of copies with each other and with A's loads; beyond it the DMA
/// queue, not the matrix engine, sets the pace and packing B simulates faster: the factor
/// is where the two cross on the convolutions of the bench models).
fn gather_pays(
    cfg: &Config,
    g: &InPlace,
    (m, n, kk): (usize, usize, usize),
    (ta, tb): (DType, DType),
) -> bool {
    let Some(spec) = bare_spec((1, m, n, kk), (ta, tb), Some(g.gather)) else {
        return false;
    };
    let (a_type, b_type) = (spec.a_type, spec.b_type);
    let Ok(plan) = gemm_plan(cfg, &spec) else {
        return false;
    };
    let Ok(loads) = g
        .gather
        .chunk_loads(0, 0, b_type.size(), 0, plan.tile_k, 0, plan.tile_n)
    else {
        return false;
    };
    let rate = if a_type == ElemType::F32 || b_type == ElemType::F32 {
        cfg.mx_f32_divisor
    } else {
        1
    };
    let mm = plan.tile_m.div_ceil(cfg.mx_m)
        * plan.tile_n.div_ceil(cfg.mx_n)
        * plan.tile_k.div_ceil(cfg.mx_k)
        * rate;
    // A DMA engine keeps `dma_max_outstanding` transfers in flight, each at least the HBM
    // latency long: small gathered copies are latency-bound.
    let per_copy = cfg
        .dma_setup
        .max(cfg.hbm_latency.div_ceil(cfg.dma_max_outstanding.max(1)));
    // With a `padB` copy, only where the im2col matrix it replaces is at least twice its
    // size (else the pack is the same copy, with a simpler read for the GEMM).
    let blowup = g
        .read
        .as_ref()
        .is_none_or(|b| (kk as u64).saturating_mul(n as u64) >= 2 * b.len() as u64);
    blowup && (loads.len() as u64).saturating_mul(per_copy) <= 2 * mm
}
