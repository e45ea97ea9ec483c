//! The target-independent part of the CPU backends' packed GEMM: recognizing a contraction
//! kernel as a GEMM (its *form*), the tile and block plan, and the packed operands' memory.
//!
//! A loop-nest kernel has the *GEMM form* when its stages are one f32 sum
//! `t = Σ_r a(…) * b(…)` followed by stores at the outer point (the epilogue, which reads `t`).
//! Its outer variables then split into
//!
//! - **M** variables, used by `a` only; **N** variables, used by `b` only (the operands are
//!   swapped, `a*b = b*a`, so that the innermost output dim is an N variable, unless the other
//!   orientation pads the micro-kernel's tiles clearly less: a 7×7 feature map as N wastes 15
//!   of 64 columns, as M one row of 50);
//! - **batch** variables, used by both or by neither;
//!
//! and its reduction variables flatten into **K**. `a` and `b` are any expressions (transposes,
//! im2col with padding, broadcasts, prologue arithmetic): a backend evaluates them only while
//! packing. Matmul is the plain case; a convolution is an implicit GEMM (M = output channels,
//! N = output pixels, K = input channels × kernel window) whose im2col matrix exists only as
//! packed panels.
//!
//! Each backend picks its [`Tiling`] (its micro-kernel's `MR × NR` tile, its blocks): the LLVM
//! backend's 6×16 of AVX2 registers, the Cranelift backend's 6×8 of SSE ones. The plan
//! ([`Plan`]) is the same for both: `A` in panels of `mr` rows, `B` in panels of `NR` columns,
//! zero-padded, constant operands packed once (by a backend's `init`), the others on every run
//! into a scratch region that every kernel reuses ([`PackedOperand`], [`packed_table`]), and
//! compute tasks over (batch, block of A panels, block of B panels) ([`Blocks`]).

use std::borrow::Cow;

use terafab_ir::kernel::{
    BufferId, Expr, Index, KernelProgram, Local, LoopNest, Stage, Storage, Var, offset_coeff,
};
use terafab_ir::{BinaryOp, DType, ReduceKind, UnaryOp};

use crate::{AlignedBuf, RuntimeError, fixed_table};

/// A backend's micro-kernel tile and blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    /// Rows of the micro-kernel's tile (broadcast side); fewer (`mr = M`) when M is smaller.
    pub mr: usize,
    /// Columns of the micro-kernel's tile (vector side).
    pub nr: usize,
    /// A panels per compute task's block.
    pub mc_panels: usize,
    /// Columns of a compute task's block (a multiple of `nr`).
    pub nc: usize,
    /// The longest K chunk of one micro-kernel run (a `kc × nr` chunk of a B panel stays in L1).
    pub kc: usize,
    /// The shortest K for which the operands may swap to pad less (see [`form`]).
    pub min_swap_k: usize,
}

/// The GEMM form of a kernel (see the module docs).
#[derive(Debug, Clone)]
pub struct Form<'a> {
    pub a: &'a Expr,
    pub b: &'a Expr,
    pub m_vars: Vec<(Var, usize)>,
    pub n_vars: Vec<(Var, usize)>,
    pub batch_vars: Vec<(Var, usize)>,
    pub k_vars: Vec<(Var, usize)>,
    /// The sum's local, which the epilogue reads.
    pub local: Local,
    pub epilogue: &'a [Stage],
    /// Rows of the micro-kernel's tile: `t.mr`, or fewer (see [`rows_per_tile`]).
    pub mr: usize,
}

fn prod(v: &[(Var, usize)]) -> usize {
    v.iter().map(|x| x.1).product()
}

/// Whether `e` reads only constant buffers.
pub fn reads_only_consts(p: &KernelProgram, e: &Expr) -> bool {
    let mut ok = true;
    e.walk(&mut |x| {
        if let Expr::Load { buffer, .. } = x {
            ok &= matches!(p.buffer(*buffer).storage, Storage::Const(_));
        }
    });
    ok
}

/// Whether an expression is f32 (locals are not f32 operands here).
fn expr_is_f32(p: &KernelProgram, e: &Expr) -> bool {
    fn ty(p: &KernelProgram, e: &Expr) -> Option<DType> {
        Some(match e {
            Expr::Load { buffer, .. } => p.buffer(*buffer).dtype,
            Expr::Const(t) => t.dtype(),
            Expr::Local(_) => return None,
            Expr::Index(_, d) | Expr::Convert(d, _) => *d,
            Expr::Unary(op, a) => match op {
                UnaryOp::IsNan | UnaryOp::IsInf => DType::Bool,
                _ => ty(p, a)?,
            },
            Expr::Binary(_, a, _) | Expr::Select(_, a, _) => ty(p, a)?,
            Expr::Compare(..) => DType::Bool,
        })
    }
    ty(p, e) == Some(DType::F32)
}

/// The GEMM form of `nest` for the tiling `t`, when it has one (and is worth it).
pub fn form<'a>(p: &KernelProgram, nest: &'a LoopNest, t: &Tiling) -> Option<Form<'a>> {
    let (first, rest) = nest.stages.split_first()?;
    let Stage::Reduce {
        local,
        kind: ReduceKind::Sum,
        vars: k_vars,
        body: Expr::Binary(BinaryOp::Mul, a, b),
    } = first
    else {
        return None;
    };
    // f32 operands, and every other stage a store at the outer point.
    if !expr_is_f32(p, a) || !expr_is_f32(p, b) || a.uses_local() || b.uses_local() {
        return None;
    }
    if rest.is_empty()
        || !rest
            .iter()
            .all(|s| matches!(s, Stage::Store { vars, .. } if vars.is_empty()))
    {
        return None;
    }
    let (va, vb) = (a.vars(), b.vars());
    let mut m_vars = Vec::new();
    let mut n_vars = Vec::new();
    let mut batch_vars = Vec::new();
    for (d, &n) in nest.space.iter().enumerate() {
        let v = Var(d as u32);
        match (va.contains(&v), vb.contains(&v)) {
            (true, false) => m_vars.push((v, n)),
            (false, true) => n_vars.push((v, n)),
            _ => batch_vars.push((v, n)),
        }
    }
    let (mut a, mut b) = (&**a, &**b);
    // The innermost output dim on the vector (N) side.
    if let Some(d) = nest.space.len().checked_sub(1)
        && m_vars.iter().any(|(v, _)| *v == Var(d as u32))
    {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut m_vars, &mut n_vars);
    }
    // The other orientation when it wastes clearly less of the micro-kernel on zero padding
    // (a 7x7 feature map is N = 49 of 64 padded columns, but M = 49 of 50 rows with mr = 5); the
    // epilogue's stores are then strided, which costs far less than the padding.
    // Only between two real orientations: a side under 8 is a degenerate form (the nest
    // without its merged-heads split, say), which the checks below reject whichever way round.
    // And only over a long K: the swapped epilogue stores one element at a time, strided,
    // which a short K does not pay for (a stem conv with K = 27 ran 2x slower swapped).
    let (m0, n0) = (prod(&m_vars), prod(&n_vars));
    if m0.min(n0) >= 8
        && prod(k_vars) >= t.min_swap_k
        && tile_efficiency(t, n0, m0) > 1.05 * tile_efficiency(t, m0, n0)
    {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut m_vars, &mut n_vars);
    }
    let (m, n, k) = (prod(&m_vars), prod(&n_vars), prod(k_vars));
    // Small or degenerate contractions are better served by the plain loop nest.
    if n < 8 || k < 4 || m * n * k < 4096 {
        return None;
    }
    Some(Form {
        a,
        b,
        m_vars,
        n_vars,
        batch_vars,
        k_vars: k_vars.clone(),
        local: *local,
        epilogue: rest,
        mr: rows_per_tile(t, m),
    })
}

/// `form` the other way round: A and B swapped with their variables, the tile's rows for the
/// new M. The caller checks that the new form is worth it (its N, its padding).
pub fn swapped<'a>(form: &Form<'a>, t: &Tiling) -> Form<'a> {
    let m: usize = prod(&form.n_vars);
    Form {
        a: form.b,
        b: form.a,
        m_vars: form.n_vars.clone(),
        n_vars: form.m_vars.clone(),
        mr: rows_per_tile(t, m),
        ..form.clone()
    }
}

/// `nest`, or the nest with one variable split, whichever has the GEMM form: a variable both
/// operands use only through `v / c` and `v % c` (attention heads merged back into one dim)
/// hides it.
pub fn gemm_nest<'a>(
    p: &KernelProgram,
    nest: &'a LoopNest,
    t: &Tiling,
) -> Option<Cow<'a, LoopNest>> {
    if form(p, nest, t).is_some() {
        return Some(Cow::Borrowed(nest));
    }
    terafab_ir::kernel::split::splits(nest)
        .into_iter()
        .find(|s| form(p, s, t).is_some())
        .map(Cow::Owned)
}

/// The micro-kernel's rows for M rows: M itself when smaller than `t.mr`, else `t.mr` or
/// `t.mr - 1` when that pads M clearly less.
pub fn rows_per_tile(t: &Tiling, m: usize) -> usize {
    if m <= t.mr {
        return m.max(1);
    }
    let padded = |mr: usize| m.div_ceil(mr) * mr;
    // The narrower kernel does fewer FMAs per load: worth it for 3% less padding.
    if padded(t.mr - 1) * 103 < padded(t.mr) * 100 {
        t.mr - 1
    } else {
        t.mr
    }
}

/// The fraction of the micro-kernel's work that is not zero padding, for M rows and N columns.
pub fn tile_efficiency(t: &Tiling, m: usize, n: usize) -> f64 {
    let mr = rows_per_tile(t, m);
    let rows = m.div_ceil(mr) * mr;
    let cols = n.div_ceil(t.nr) * t.nr;
    (m * n) as f64 / (rows * cols).max(1) as f64
}

/// The compute tasks' blocks of panels: as few as `mc_panels` A panels and `nc / nr` B panels
/// allow, with the panels spread evenly over them (10 panels are blocks of 5 and 5, not 8 and
/// 2), so that the tasks are of equal size for the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    /// Blocks along M and the A panels of each (the last may have fewer).
    pub m: usize,
    pub m_panels: usize,
    /// Blocks along N and the B panels of each (the last may have fewer).
    pub n: usize,
    pub n_panels: usize,
}

impl Blocks {
    pub fn new(t: &Tiling, mp: usize, np: usize) -> Blocks {
        let m = mp.div_ceil(t.mc_panels).max(1);
        let n = np.div_ceil(t.nc / t.nr).max(1);
        Blocks {
            m,
            m_panels: mp.div_ceil(m),
            n,
            n_panels: np.div_ceil(n),
        }
    }
}

/// The sizes of a GEMM-form kernel's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    /// Rows of a tile.
    pub mr: usize,
    /// Columns of a tile.
    pub nr: usize,
    /// A panels (of `mr` rows) and B panels (of `nr` columns).
    pub mp: usize,
    pub np: usize,
    /// Whether an operand reads only constants, the same for every batch index: it is packed
    /// once, by `init`, else on every run for every batch index.
    pub a_const: bool,
    pub b_const: bool,
    pub blocks: Blocks,
    /// K chunks of equal length `chunk` (K = 576 is 3 × 192, not 256 + 256 + 64).
    pub chunks: usize,
    pub chunk: usize,
}

impl Plan {
    pub fn new(p: &KernelProgram, form: &Form<'_>, t: &Tiling) -> Plan {
        let (m, n, k, batch) = (
            prod(&form.m_vars),
            prod(&form.n_vars),
            prod(&form.k_vars),
            prod(&form.batch_vars),
        );
        let constant = |e: &Expr| {
            let vars = e.vars();
            reads_only_consts(p, e) && form.batch_vars.iter().all(|v| !vars.contains(&v.0))
        };
        let (mp, np) = (m.div_ceil(form.mr), n.div_ceil(t.nr));
        let chunks = k.div_ceil(t.kc).max(1);
        Plan {
            m,
            n,
            k,
            batch,
            mr: form.mr,
            nr: t.nr,
            mp,
            np,
            a_const: constant(form.a),
            b_const: constant(form.b),
            blocks: Blocks::new(t, mp, np),
            chunks,
            chunk: k.div_ceil(chunks),
        }
    }

    /// Bytes of the packed A and B operands.
    pub fn packed_bytes(&self) -> (usize, usize) {
        let batches = |c: bool| if c { 1 } else { self.batch };
        (
            batches(self.a_const) * self.mp * self.mr * self.k * 4,
            batches(self.b_const) * self.np * self.nr * self.k * 4,
        )
    }

    /// Compute tasks: one per (batch, block of A panels, block of B panels).
    pub fn compute_tasks(&self) -> usize {
        self.batch * self.blocks.m * self.blocks.n
    }

    /// Floats of a compute task's tile buffer (every tile of its block).
    pub fn block_floats(&self) -> usize {
        self.blocks.m_panels * self.blocks.n_panels * self.mr * self.nr
    }
}

/// The flat K index of the reduction variables' current values.
pub fn k_flat(vars: &[(Var, usize)]) -> Index {
    let mut idx = Index::Const(0);
    let mut stride = 1i64;
    for &(v, n) in vars.iter().rev() {
        idx = idx.plus(Index::Var(v).times(stride));
        stride *= n as i64;
    }
    idx
}

/// Whether consecutive lanes of a panel (the last of the side's variables) read consecutive
/// elements: the operand's first load indexes its last dim with that variable.
pub fn lanes_contiguous(e: &Expr, vars: &[(Var, usize)]) -> bool {
    let Some(&(lane, _)) = vars.last() else {
        return false;
    };
    let mut first = None;
    e.walk(&mut |x| {
        if first.is_none()
            && let Expr::Load { index, .. } = x
        {
            first = index.last().cloned();
        }
    });
    first.is_some_and(|i| {
        let mut vs = Vec::new();
        i.vars(&mut vs);
        vs.contains(&lane)
    })
}

/// The flat row (`m`) and column (`n`) variables of the epilogue, and its stages indexed by
/// them: an index that recombines the M (or N) variables (a row-major store of a conv's pixels)
/// becomes `m` (`n`) again, without a division per element.
pub fn flat_epilogue(form: &Form<'_>, m: usize, n: usize) -> (Var, Var, Vec<Stage>) {
    let (m_flat, n_flat) = (Var(u32::MAX - 2), Var(u32::MAX - 1));
    let all_vars: Vec<(Var, usize)> = [&form.m_vars, &form.n_vars, &form.batch_vars, &form.k_vars]
        .into_iter()
        .flatten()
        .copied()
        .chain([(m_flat, m), (n_flat, n)])
        .collect();
    let extent = |v: Var| all_vars.iter().find(|x| x.0 == v).map(|x| x.1);
    let stages = terafab_ir::kernel::split::flatten_vars(
        form.epilogue,
        &[(m_flat, form.m_vars.clone()), (n_flat, form.n_vars.clone())],
        &extent,
    );
    (m_flat, n_flat, stages)
}

/// A buffer of packed GEMM operands, beyond the program's own buffers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedOperand {
    /// Its slot in the buffer table (after the program's own buffers).
    pub slot: usize,
    pub bytes: usize,
    /// `Some(offset)`: an operand packed on every run, at `offset` in the per-run scratch
    /// region that every kernel reuses (kernels run one after the other); `None`: a constant
    /// operand packed once by `init`, in memory of its own.
    pub scratch: Option<usize>,
}

/// The packed operands of a program, as code generation assigns them: slots after the
/// program's `buffers`, constant ones in memory of their own, the others in the scratch region.
#[derive(Debug, Clone, Default)]
pub struct PackedOperands {
    pub buffers: usize,
    pub list: Vec<PackedOperand>,
    /// The size of the per-run scratch region (the largest need of one kernel).
    pub scratch_bytes: usize,
}

impl PackedOperands {
    pub fn new(buffers: usize) -> PackedOperands {
        PackedOperands {
            buffers,
            ..Default::default()
        }
    }

    /// The slots of one GEMM kernel's packed A and B for `plan` (its scratch part starts at 0).
    pub fn add(&mut self, plan: &Plan) -> (BufferId, BufferId) {
        let (a_bytes, b_bytes) = plan.packed_bytes();
        self.add_sized((a_bytes, plan.a_const), (b_bytes, plan.b_const))
    }

    /// The slot of `bytes` of per-run scratch for one kernel (from 0: a padded copy of an
    /// input).
    pub fn add_scratch(&mut self, bytes: usize) -> BufferId {
        self.slot(bytes, false, &mut 0)
    }

    /// The slot of `bytes` of zeroed memory of one kernel's own, kept from run to run (the
    /// mask of a GEMM's claimed B slots, which every task leaves as it found it).
    pub fn add_own(&mut self, bytes: usize) -> BufferId {
        self.slot(bytes, true, &mut 0)
    }

    /// The slots of one GEMM kernel's A and B operand memory of the given sizes, constant (its
    /// own memory) or not (the scratch region, from 0): a backend that reads an operand in
    /// place, or through a copy of another size, sizes it itself.
    pub fn add_sized(
        &mut self,
        (a_bytes, a_const): (usize, bool),
        (b_bytes, b_const): (usize, bool),
    ) -> (BufferId, BufferId) {
        let mut used = 0usize;
        let a = self.slot(a_bytes, a_const, &mut used);
        let b = self.slot(b_bytes, b_const, &mut used);
        (a, b)
    }

    /// The next slot: `bytes` of memory of its own when `constant`, else at `used` in the
    /// scratch region (`used` moves past it, 64-byte aligned).
    fn slot(&mut self, bytes: usize, constant: bool, used: &mut usize) -> BufferId {
        let s = self.buffers + self.list.len();
        let scratch = (!constant).then(|| {
            let at = *used;
            *used = (*used + bytes).next_multiple_of(64);
            self.scratch_bytes = self.scratch_bytes.max(*used);
            at
        });
        self.list.push(PackedOperand {
            slot: s,
            bytes,
            scratch,
        });
        BufferId(s as u32)
    }
}

/// Bytes of the constants packed once.
pub fn const_bytes(packed: &[PackedOperand]) -> usize {
    packed
        .iter()
        .filter(|p| p.scratch.is_none())
        .map(|p| p.bytes)
        .sum()
}

/// The buffer table's fixed part for `p` with its packed operands (see [`fixed_table`]), and
/// the memory behind them (the constants' own, then the scratch region), which must outlive
/// every run.
pub fn packed_table(
    p: &KernelProgram,
    packed: &[PackedOperand],
    scratch_bytes: usize,
) -> Result<(Vec<usize>, Vec<AlignedBuf>), RuntimeError> {
    let mut fixed = fixed_table(p, packed.len());
    let mut memory = Vec::new();
    let scratch = AlignedBuf::new(scratch_bytes)?;
    for pc in packed {
        match pc.scratch {
            // SAFETY: the offset and size lie inside the scratch region (codegen sized it).
            Some(at) => fixed[pc.slot] = unsafe { scratch.ptr().add(at) } as usize,
            None => {
                let buf = AlignedBuf::new(pc.bytes)?;
                fixed[pc.slot] = buf.ptr() as usize;
                memory.push(buf);
            }
        }
    }
    memory.push(scratch);
    Ok((fixed, memory))
}

/// A constant B operand that is a plain row-major matrix (one f32 load without fill, one N
/// variable at unit stride, one K variable at a positive stride, N a whole number of panels):
/// packed once at load by [`pack_rows`], a copy loop, instead of generated pack code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPack {
    /// The operand's buffer, and the element offset of its `[k = 0, n = 0]`.
    pub src: BufferId,
    pub offset: usize,
    /// Elements from one k to the next.
    pub k_stride: usize,
    pub k: usize,
    pub n: usize,
    /// The packed buffer (`Bp[panel][k][nr]`).
    pub dst: BufferId,
}

impl RowPack {
    /// `form`'s B operand as a [`RowPack`] into `dst`, if it is one (see the type) for panels
    /// of `nr` columns.
    pub fn of(
        p: &KernelProgram,
        form: &Form<'_>,
        plan: &Plan,
        dst: BufferId,
        nr: usize,
    ) -> Option<RowPack> {
        let Expr::Load {
            buffer,
            index,
            fill: None,
        } = form.b
        else {
            return None;
        };
        let buf = p.buffer(*buffer);
        if !plan.b_const
            || buf.dtype != DType::F32
            || !plan.n.is_multiple_of(nr)
            || form.n_vars.len() != 1
            || form.k_vars.len() != 1
            || !matches!(buf.storage, Storage::Const(_))
        {
            return None;
        }
        let ((n, _), (k, _)) = (form.n_vars[0], form.k_vars[0]);
        let mut vs = Vec::new();
        for ix in index {
            ix.vars(&mut vs);
        }
        if vs.iter().any(|&v| v != n && v != k) {
            return None;
        }
        let (cn, ck) = (
            offset_coeff(index, &buf.strides, n)?,
            offset_coeff(index, &buf.strides, k)?,
        );
        let mut offset = 0i64;
        for (ix, &s) in index.iter().zip(&buf.strides) {
            let Index::Const(at) = ix.subst(&|_| Index::Const(0)) else {
                return None;
            };
            offset = offset.checked_add(at.checked_mul(s as i64)?)?;
        }
        let (offset, k_stride) = (usize::try_from(offset).ok()?, usize::try_from(ck).ok()?);
        // The last element read lies inside the buffer.
        let last = offset + (plan.k - 1) * k_stride + plan.n - 1;
        let len: usize = buf.shape.iter().product();
        (cn == 1 && k_stride > 0 && last < len).then_some(RowPack {
            src: *buffer,
            offset,
            k_stride,
            k: plan.k,
            n: plan.n,
            dst,
        })
    }
}

/// Pack the row-major operand of `rp` from the buffer table `table` into its panels of `nr`
/// columns: `dst[q][k][0..nr] = src[offset + k * k_stride + q * nr ..][..nr]`, in blocks of 16
/// rows (each block's reads and each panel's writes stay sequential).
///
/// # Safety
/// `table[rp.src]` must point to the operand's buffer (with every element [`RowPack::of`]
/// checked) and `table[rp.dst]` to `n / nr` panels of `k × nr` f32, not overlapping it.
pub unsafe fn pack_rows(table: *const *mut u8, rp: &RowPack, nr: usize) {
    // SAFETY: the caller's contract.
    let (src, dst) = unsafe {
        (
            (*table.add(rp.src.0 as usize) as *const f32).add(rp.offset),
            *table.add(rp.dst.0 as usize) as *mut f32,
        )
    };
    let panels = rp.n / nr;
    for k0 in (0..rp.k).step_by(16) {
        let k1 = (k0 + 16).min(rp.k);
        for q in 0..panels {
            for k in k0..k1 {
                // SAFETY: inside both buffers (the caller's contract); they do not overlap.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.add(k * rp.k_stride + q * nr),
                        dst.add((q * rp.k + k) * nr),
                        nr,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod row_pack_tests {
    use super::*;

    /// Rows 20 floats apart from offset 2, 19 rows of 16 columns, panels of 8: each panel holds
    /// its 8 columns of every row in turn.
    #[test]
    fn pack_rows_lays_out_panels() {
        let (k, n, k_stride, offset, nr) = (19usize, 16usize, 20usize, 2usize, 8usize);
        let src: Vec<f32> = (0..offset + k * k_stride).map(|i| i as f32).collect();
        let mut dst = vec![0f32; k * n];
        let rp = RowPack {
            src: BufferId(0),
            offset,
            k_stride,
            k,
            n,
            dst: BufferId(1),
        };
        let table = [src.as_ptr() as *mut u8, dst.as_mut_ptr() as *mut u8];
        // SAFETY: the extents above fit both vectors.
        unsafe { pack_rows(table.as_ptr(), &rp, nr) };
        for q in 0..n / nr {
            for kk in 0..k {
                for j in 0..nr {
                    let want = src[offset + kk * k_stride + q * nr + j];
                    assert_eq!(
                        dst[(q * k + kk) * nr + j],
                        want,
                        "panel {q}, k {kk}, lane {j}"
                    );
                }
            }
        }
    }
}
