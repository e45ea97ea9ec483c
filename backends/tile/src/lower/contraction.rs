//! Kernels of the plain GEMM form on the matrix engine, through [`crate::gen::gemm`].
//!
//! The form: a 2-D space `[M, N]`, one f32 sum `t = Σ_k A[m, k] · B[k, n]` over one variable,
//! then one store `C[m, n] = e(t)` where the epilogue `e` is `t`, `t + bias[n]`, `max(·, 0)`
//! of either (ReLU), with A `[M, K]`, B `[K, N]`, C `[M, N]` (f32) and the bias row-major,
//! A and B of an accelerator element type (f32, bf16, CFP8), no fill values. Other
//! contractions (batched, transposed or im2col operands) are not lowered here.

use terafab_ir::kernel::{Body, BufferId, Expr, Index, Kernel, KernelProgram, Local, Stage, Var};
use terafab_ir::{BinaryOp, DType, ReduceKind};

use super::{Lowered, NotLowered, elem_type, hbm_name};
use crate::config::Config;
use crate::r#gen::{Epilogue, GemmSpec, gemm_plan, gemm_program};

/// A load of a whole element (no fill) with exactly the index `want`: of an f32 buffer, or
/// of a bf16/CFP8 buffer under `convert[f32]` (the matrix engine's narrow operands; their
/// products are exact in f32, as the kernel interpreter computes them).
fn load_at(p: &KernelProgram, e: &Expr, want: &[Index]) -> Option<BufferId> {
    let (e, narrow) = match e {
        Expr::Convert(DType::F32, x) => (&**x, true),
        e => (e, false),
    };
    match e {
        Expr::Load {
            buffer,
            index,
            fill: None,
        } if index.as_slice() == want => {
            let d = p.buffer(*buffer).dtype;
            let ok = if narrow {
                matches!(d, DType::BF16 | DType::CF8E4M3 | DType::CF8E5M2)
            } else {
                d == DType::F32
            };
            ok.then_some(*buffer)
        }
        _ => None,
    }
}

fn biased(
    p: &KernelProgram,
    e: &Expr,
    local: Local,
    n_var: Var,
    n: usize,
) -> Option<Option<BufferId>> {
    match e {
        Expr::Local(l) if *l == local => Some(None),
        Expr::Binary(BinaryOp::Add, x, y) => {
            let (t, b) = if matches!(**x, Expr::Local(l) if l == local) {
                (x, y)
            } else {
                (y, x)
            };
            if !matches!(**t, Expr::Local(l) if l == local) {
                return None;
            }
            let Expr::Load {
                buffer,
                index,
                fill: None,
            } = &**b
            else {
                return None;
            };
            let buf = p.buffer(*buffer);
            // One dim indexed by n with stride 1 and extent N, every other dim at 0.
            let mut seen = false;
            for ((i, &extent), &stride) in index.iter().zip(&buf.shape).zip(&buf.strides) {
                match i {
                    Index::Var(v) if *v == n_var && extent == n && stride == 1 && !seen => {
                        seen = true
                    }
                    Index::Const(0) => {}
                    _ => return None,
                }
            }
            (seen && buf.dtype == DType::F32 && buf.span() == n).then_some(Some(*buffer))
        }
        _ => None,
    }
}

/// The epilogue: the bias buffer and whether ReLU follows.
fn epilogue(
    p: &KernelProgram,
    e: &Expr,
    local: Local,
    n_var: Var,
    n: usize,
) -> Option<(Option<BufferId>, bool)> {
    if let Some(bias) = biased(p, e, local, n_var, n) {
        return Some((bias, false));
    }
    let Expr::Binary(BinaryOp::Max, x, y) = e else {
        return None;
    };
    let zero = |e: &Expr| matches!(e, Expr::Const(t) if t.dtype() == DType::F32 && t.as_slice::<f32>() == Some(&[0.0]));
    let inner = if zero(y) {
        x
    } else if zero(x) {
        y
    } else {
        return None;
    };
    biased(p, inner, local, n_var, n).map(|bias| (bias, true))
}

/// The kernel as a GEMM program, `Ok(None)` when it does not have the plain GEMM form.
pub fn lower(cfg: &Config, p: &KernelProgram, k: &Kernel) -> Result<Option<Lowered>, NotLowered> {
    let Body::Loops(nest) = &k.body else {
        return Ok(None);
    };
    // `[m, n]`, or `[batch, m, n]` (independent products, one after another).
    let (batch, m, n) = match *nest.space.as_slice() {
        [m, n] => (None, m, n),
        [b, m, n] => (Some(b), m, n),
        _ => return Ok(None),
    };
    let [
        Stage::Reduce {
            local,
            kind: ReduceKind::Sum,
            vars,
            body: Expr::Binary(BinaryOp::Mul, x, y),
        },
        Stage::Store {
            buffer: c,
            vars: store_vars,
            index: c_index,
            value,
        },
    ] = nest.stages.as_slice()
    else {
        return Ok(None);
    };
    let &[(kv, kk)] = vars.as_slice() else {
        return Ok(None);
    };
    if !store_vars.is_empty() {
        return Ok(None);
    }
    let first = u32::from(batch.is_some());
    let (mv, nv) = (Var(first), Var(first + 1));
    // An index with the batch variable in front when there is one.
    let batched = |rest: [Var; 2]| -> Vec<Index> {
        batch
            .map(|_| Var(0))
            .into_iter()
            .chain(rest)
            .map(Index::Var)
            .collect()
    };
    let a_index = batched([mv, kv]);
    let b_index = batched([kv, nv]);
    let (a, b) = match (load_at(p, x, &a_index), load_at(p, y, &b_index)) {
        (Some(a), Some(b)) => (a, b),
        _ => match (load_at(p, y, &a_index), load_at(p, x, &b_index)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Ok(None),
        },
    };
    if *c_index != batched([mv, nv]) || a == b {
        return Ok(None);
    }
    let Some((bias, relu)) = epilogue(p, value, *local, nv, n) else {
        return Ok(None);
    };
    let (ba, bb, bc) = (p.buffer(a), p.buffer(b), p.buffer(*c));
    let dense = |buf: &terafab_ir::kernel::Buffer, shape: [usize; 2]| {
        let want: Vec<usize> = batch.into_iter().chain(shape).collect();
        buf.shape == want && buf.is_row_major()
    };
    if !dense(ba, [m, kk]) || !dense(bb, [kk, n]) || !dense(bc, [m, n]) || bc.dtype != DType::F32 {
        return Ok(None);
    }
    let (Some(a_type), Some(b_type)) = (elem_type(ba.dtype), elem_type(bb.dtype)) else {
        return Ok(None);
    };
    let spec = GemmSpec {
        batch: batch.unwrap_or(1) as u64,
        m: m as u64,
        n: n as u64,
        k: kk as u64,
        a_type,
        b_type,
        bias: bias.is_some(),
        relu,
        epilogue: Epilogue::NONE,
    };
    let shape = match batch {
        Some(b) => format!("{b}x({m}x{n}x{kk})"),
        None => format!("{m}x{n}x{kk}"),
    };
    let fail = |e: crate::r#gen::GenError| NotLowered(format!("gemm {shape}: {e}"));
    let plan = gemm_plan(cfg, &spec).map_err(fail)?;
    let mut program = gemm_program(cfg, &spec).map_err(fail)?;
    let mut reads = vec![a, b];
    reads.extend(bias);
    for buf in &mut program.buffers {
        let id = match buf.name.as_str() {
            "A" => a,
            "B" => b,
            "C" => *c,
            "BIAS" => match bias {
                Some(x) => x,
                None => continue,
            },
            _ => continue,
        };
        buf.name = hbm_name(id);
    }
    let epi = match (bias.is_some(), relu) {
        (false, false) => "",
        (true, false) => " + bias",
        (false, true) => ", relu",
        (true, true) => " + bias, relu",
    };
    Ok(Some(Lowered {
        program,
        reads,
        writes: vec![*c],
        summary: format!(
            "gemm {shape} {a_type}·{b_type}{epi} on {}x{} nodes",
            plan.col_blocks.len(),
            plan.row_blocks.len()
        ),
    }))
}
