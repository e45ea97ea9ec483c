//! Kernels of the plain GEMM form on the matrix engine, through [`crate::gen::gemm`].
//!
//! The form: a 2-D space `[M, N]`, one f32 sum `t = Σ_k A[m, k] · B[k, n]` over one variable,
//! then one store `C[m, n] = e(t)` where the epilogue `e` is `t`, `t + bias[n]`, `max(·, 0)`
//! of either (ReLU), with A `[M, K]`, B `[K, N]`, C `[M, N]` (f32) and the bias row-major,
//! A and B of an accelerator element type (f32, bf16, CFP8), no fill values. With one product,
//! B may also be read in place (*implicit GEMM*): a load whose element offset is a sum of
//! mixed-radix digits of `k` and `n` with a stride each, contiguous along `n`'s innermost
//! digit (a convolution's input indexed through `(c, kh, kw) = digits(k)`, `(oh, ow) =
//! digits(n)`): the generator gathers each B chunk with strided DMA ([`Gather`]) instead of
//! reading a materialized im2col matrix. Other contractions (batched with transposed or
//! im2col operands) are split first by [`super::split_gemm`].

use terafab_ir::kernel::{Body, BufferId, Expr, Index, Kernel, KernelProgram, Local, Stage, Var};
use terafab_ir::{BinaryOp, DType, ReduceKind};

use super::{Lowered, NotLowered, elem_type, hbm_name};
use crate::config::Config;
use crate::r#gen::{
    Digits, EpiOperand, EpiStep, Epilogue, Gather, GemmSpec, gemm_plan, gemm_program,
};
use crate::isa::BinOp;
use terafab_ir::kernel::split::simplify;

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

/// One term of an element offset: `coefficient · ((var / divisor) mod modulus)`.
type Term = (Var, i64, Option<i64>, i64);

/// The terms of `i · scale` added to `terms` (same digit merged) and its constant to `off`;
/// `None` for an index not of that form.
fn collect_terms(i: &Index, scale: i64, terms: &mut Vec<Term>, off: &mut i64) -> Option<()> {
    let mut push = |v: Var, div: i64, modulus: Option<i64>| {
        match terms
            .iter_mut()
            .find(|t| t.0 == v && t.1 == div && t.2 == modulus)
        {
            Some(t) => t.3 = t.3.checked_add(scale)?,
            None => terms.push((v, div, modulus, scale)),
        }
        Some(())
    };
    match i {
        Index::Const(c) => *off = off.checked_add(c.checked_mul(scale)?)?,
        Index::Add(a, b) => {
            collect_terms(a, scale, terms, off)?;
            collect_terms(b, scale, terms, off)?;
        }
        Index::Mul(a, c) => collect_terms(a, scale.checked_mul(*c)?, terms, off)?,
        Index::Var(v) => push(*v, 1, None)?,
        Index::Div(a, d) => match &**a {
            Index::Var(v) => push(*v, *d, None)?,
            _ => return None,
        },
        Index::Rem(a, r) => match &**a {
            Index::Var(v) => push(*v, 1, Some(*r))?,
            Index::Div(b, d) => match &**b {
                Index::Var(v) => push(*v, *d, Some(*r))?,
                _ => return None,
            },
            _ => return None,
        },
    }
    Some(())
}

/// The digits of variable `v` (extent `extent`) among `terms`: mixed-radix digits with
/// divisors `1, R_0, R_0·R_1, ..` (digits the offset does not use get stride 0).
fn digits_of(terms: &[Term], v: Var, extent: usize) -> Option<Digits> {
    let mut ts: Vec<&Term> = terms.iter().filter(|t| t.0 == v).collect();
    ts.sort_by_key(|t| t.1);
    let extent = extent as i64;
    let mut out: Vec<(u64, u64)> = Vec::new();
    let mut expect = 1i64;
    let mut open = false;
    for &&(_, div, modulus, coef) in &ts {
        if coef < 0 || div < expect || open || div <= 0 {
            return None;
        }
        if div > expect {
            if div % expect != 0 {
                return None;
            }
            out.push(((div / expect) as u64, 0));
            expect = div;
        }
        let radix = match modulus {
            Some(r) if r > 0 => r,
            Some(_) => return None,
            None => {
                open = true;
                (extent as u64).div_ceil(div as u64).max(1) as i64
            }
        };
        out.push((radix as u64, coef as u64));
        expect = expect.checked_mul(radix)?;
    }
    if expect < extent {
        out.push(((extent as u64).div_ceil(expect as u64), 0));
    }
    Digits::new(&out)
}

/// B read in place (implicit GEMM): the element offset of `buf[index]` as digits of the
/// K variable `kv` and the N variable `nv` ([`Gather`]), contiguous along N's innermost
/// digit; `None` when it is not of that form.
pub(crate) fn gather_of(
    buf: &terafab_ir::kernel::Buffer,
    index: &[Index],
    (kv, kk): (Var, usize),
    (nv, n): (Var, usize),
) -> Option<Gather> {
    if index.len() != buf.strides.len() {
        return None;
    }
    let mut terms = Vec::new();
    let mut off = 0i64;
    for (i, &st) in index.iter().zip(&buf.strides) {
        collect_terms(i, i64::try_from(st).ok()?, &mut terms, &mut off)?;
    }
    terms.retain(|t| t.3 != 0);
    if off < 0 || terms.iter().any(|t| t.0 != kv && t.0 != nv) {
        return None;
    }
    let g = Gather {
        span: buf.span() as u64,
        offset: off as u64,
        k: digits_of(&terms, kv, kk)?,
        n: digits_of(&terms, nv, n)?,
    };
    (g.n.list()[0].1 == 1).then_some(g)
}

/// A load (no fill) of an accelerator-typed buffer, as [`load_at`] takes it, whose index is
/// a [`gather_of`] the GEMM's K and N variables.
fn gather_at(
    p: &KernelProgram,
    e: &Expr,
    k: (Var, usize),
    n: (Var, usize),
) -> Option<(BufferId, Gather)> {
    let (e, narrow) = match e {
        Expr::Convert(DType::F32, x) => (&**x, true),
        e => (e, false),
    };
    let Expr::Load {
        buffer,
        index,
        fill: None,
    } = e
    else {
        return None;
    };
    let buf = p.buffer(*buffer);
    let ok = if narrow {
        matches!(buf.dtype, DType::BF16 | DType::CF8E4M3 | DType::CF8E5M2)
    } else {
        buf.dtype == DType::F32
    };
    if !ok {
        return None;
    }
    Some((*buffer, gather_of(buf, index, k, n)?))
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
/// The element offset of `buf[index]` (its strides) as `[coefficient of mv, coefficient of
/// nv, constant]`, when it is affine in the two after simplification (an index that splits
/// `nv` by division and remainder and recombines it, `(nv / W)·W + nv % W`, is `nv`).
fn linear(
    buf: &terafab_ir::kernel::Buffer,
    index: &[Index],
    mv: Var,
    nv: Var,
    extent: &dyn Fn(Var) -> Option<usize>,
) -> Option<[i64; 3]> {
    if index.len() != buf.strides.len() {
        return None;
    }
    let mut sum = Index::Const(0);
    for (i, &st) in index.iter().zip(&buf.strides) {
        sum = sum.plus(i.clone().times(i64::try_from(st).ok()?));
    }
    fn terms(i: &Index, scale: i64, mv: Var, nv: Var, out: &mut [i64; 3]) -> Option<()> {
        match i {
            Index::Var(v) if *v == mv => out[0] += scale,
            Index::Var(v) if *v == nv => out[1] += scale,
            Index::Const(c) => out[2] += c.checked_mul(scale)?,
            Index::Add(a, b) => {
                terms(a, scale, mv, nv, out)?;
                terms(b, scale, mv, nv, out)?;
            }
            Index::Mul(a, c) => terms(a, scale.checked_mul(*c)?, mv, nv, out)?,
            _ => return None,
        }
        Some(())
    }
    let mut out = [0i64; 3];
    terms(&simplify(&sum, extent), 1, mv, nv, &mut out)?;
    Some(out)
}

/// A fused epilogue: `e` as a chain of steps applied to the sum `local` (`acc OP operand`,
/// or `operand OP acc` for `+ * max min`), each operand an f32 immediate or a load of a
/// row-major f32 buffer along M (`[M]` elements, offset `m`), along N (offset `n`) or an
/// `[M, N]` tile (offset `m·N + n`); with the buffer of each vector operand.
#[allow(clippy::too_many_arguments)]
fn chain(
    p: &KernelProgram,
    e: &Expr,
    local: Local,
    mv: Var,
    m: usize,
    nv: Var,
    n: usize,
    extent: &dyn Fn(Var) -> Option<usize>,
) -> Option<Vec<(EpiStep, Option<BufferId>)>> {
    let has_acc = |x: &Expr| {
        let mut found = false;
        x.walk(&mut |y| found |= matches!(y, Expr::Local(l) if *l == local));
        found
    };
    let operand = |x: &Expr| -> Option<(EpiOperand, Option<BufferId>)> {
        match x {
            Expr::Const(t) if t.dtype() == DType::F32 => {
                let v = t.as_slice::<f32>()?;
                (v.len() == 1).then(|| (EpiOperand::Imm(v[0].to_bits()), None))
            }
            Expr::Load {
                buffer,
                index,
                fill: None,
            } => {
                let buf = p.buffer(*buffer);
                if buf.dtype != DType::F32 || !buf.is_row_major() {
                    return None;
                }
                let (mi, ni) = (m as i64, n as i64);
                let kind = match linear(buf, index, mv, nv, extent)? {
                    [1, 0, 0] if buf.span() == m => EpiOperand::AlongM,
                    [0, 1, 0] if buf.span() == n => EpiOperand::AlongN,
                    [a, 1, 0] if a == ni && buf.span() as i64 == mi * ni => EpiOperand::Tile,
                    _ => return None,
                };
                Some((kind, Some(*buffer)))
            }
            _ => None,
        }
    };
    match e {
        Expr::Local(l) if *l == local => Some(Vec::new()),
        Expr::Binary(op, x, y) => {
            let op2 = super::vector_binop(*op)?;
            let commutes = matches!(op2, BinOp::Add | BinOp::Mul | BinOp::Max | BinOp::Min);
            let (acc, other) = match (has_acc(x), has_acc(y)) {
                (true, false) => (x, y),
                (false, true) if commutes => (y, x),
                _ => return None,
            };
            let mut steps = chain(p, acc, local, mv, m, nv, n, extent)?;
            let (operand, buf) = operand(other)?;
            steps.push((EpiStep { op: op2, operand }, buf));
            Some(steps)
        }
        _ => None,
    }
}

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
    // B plain (`[K, N]`), or (one product) read in place: implicit GEMM.
    let operands = |x: &Expr, y: &Expr| -> Option<(BufferId, BufferId, Option<Gather>)> {
        let a = load_at(p, x, &a_index)?;
        if let Some(b) = load_at(p, y, &b_index) {
            return Some((a, b, None));
        }
        if batch.is_some() {
            return None;
        }
        let (b, g) = gather_at(p, y, (kv, kk), (nv, n))?;
        Some((a, b, Some(g)))
    };
    let Some((a, b, gather)) = operands(x, y).or_else(|| operands(y, x)) else {
        return Ok(None);
    };
    if a == b {
        return Ok(None);
    }
    let (ba, bb, bc) = (p.buffer(a), p.buffer(b), p.buffer(*c));
    let dense = |buf: &terafab_ir::kernel::Buffer, shape: [usize; 2]| {
        let want: Vec<usize> = batch.into_iter().chain(shape).collect();
        buf.shape == want && buf.is_row_major()
    };
    if !dense(ba, [m, kk]) || (gather.is_none() && !dense(bb, [kk, n])) || bc.dtype != DType::F32 {
        return Ok(None);
    }
    // C: `[(batch,) M, N]` indexed by the variables, or (one product) any row-major f32
    // buffer of M·N elements whose element offset is `m·N + n` (a convolution's NCHW output).
    let extent = |v: Var| {
        if v == mv {
            Some(m)
        } else if v == nv {
            Some(n)
        } else {
            None
        }
    };
    let c_ok = if batch.is_some() {
        dense(bc, [m, n]) && *c_index == batched([mv, nv])
    } else {
        bc.is_row_major()
            && bc.span() == m * n
            && linear(bc, c_index, mv, nv, &extent) == Some([n as i64, 1, 0])
    };
    if !c_ok {
        return Ok(None);
    }
    // The epilogue: bias along N and ReLU, or (one product) a chain of steps.
    let (bias, relu, steps) = match epilogue(p, value, *local, nv, n) {
        Some((bias, relu)) => (bias, relu, Vec::new()),
        None if batch.is_none() => {
            let Some(steps) = chain(p, value, *local, mv, m, nv, n, &extent) else {
                return Ok(None);
            };
            (None, false, steps)
        }
        None => return Ok(None),
    };
    let mut taken = vec![a, b, *c];
    for (_, buf) in &steps {
        match buf {
            Some(x) if taken.contains(x) => return Ok(None),
            Some(x) => taken.push(*x),
            None => {}
        }
    }
    let Some(epilogue_steps) = Epilogue::new(&steps.iter().map(|(s, _)| *s).collect::<Vec<_>>())
    else {
        return Ok(None);
    };
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
        epilogue: epilogue_steps,
        b_gather: gather,
    };
    let shape = match batch {
        Some(b) => format!("{b}x({m}x{n}x{kk})"),
        None if gather.is_some() => format!("{m}x{n}x{kk} (implicit)"),
        None => format!("{m}x{n}x{kk}"),
    };
    let fail = |e: crate::r#gen::GenError| NotLowered(format!("gemm {shape}: {e}"));
    let plan = gemm_plan(cfg, &spec).map_err(fail)?;
    let mut program = gemm_program(cfg, &spec).map_err(fail)?;
    let mut reads = vec![a, b];
    reads.extend(bias);
    reads.extend(steps.iter().filter_map(|(_, buf)| *buf));
    for buf in &mut program.buffers {
        let id = match buf.name.as_str() {
            "A" => a,
            "B" => b,
            "C" => *c,
            "BIAS" => match bias {
                Some(x) => x,
                None => continue,
            },
            e => match e
                .strip_prefix('E')
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| steps.get(i))
                .and_then(|(_, buf)| *buf)
            {
                Some(x) => x,
                None => continue,
            },
        };
        buf.name = hbm_name(id);
    }
    let epi = match (bias.is_some(), relu) {
        _ if !steps.is_empty() => format!(" + {}-step epilogue", steps.len()),
        (false, false) => String::new(),
        (true, false) => " + bias".into(),
        (false, true) => ", relu".into(),
        (true, true) => " + bias, relu".into(),
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
