//! Contractions as packed GEMM with a register-blocked AVX2+FMA micro-kernel.
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
//! im2col with padding, broadcasts, prologue arithmetic): they are evaluated only while packing.
//! Matmul is the plain case; a convolution is an implicit GEMM (M = output channels, N = output
//! pixels, K = input channels × kernel window) whose im2col matrix exists only as packed panels.
//!
//! Schedule (BLIS-like):
//!
//! 1. **Pack**: `A` into panels of `mr` rows (`Ap[panel][k][mr]`; `mr` = [`MR`], or `MR - 1`
//!    when that pads M clearly less, or M when smaller), `B` into panels of [`NR`] columns
//!    (`Bp[panel][k][NR]`), zero-padded at the edges, for every batch index. An operand that
//!    reads only constants (weights) is packed once, by `init`, into memory of its own; the
//!    others on every run (one task per panel) into the per-run scratch region, which every
//!    kernel reuses.
//! 2. **Compute**: one task per (batch, block of at most [`MC_PANELS`] A panels, block of at
//!    most [`NC`] columns), the panels spread evenly over the blocks. K runs in equal chunks of
//!    at most [`KC`]: for each chunk, for each `B` panel (its `KC × NR` chunk stays in L1), for each
//!    `A` panel of the block, the micro-kernel keeps the `mr × NR` tile in `2·mr` AVX
//!    registers over the chunk (`mr` broadcasts, 2 vector loads and `2·mr` FMAs per k) and adds
//!    it into the block's tile buffer on the stack. Then the epilogue runs on each tile while it
//!    is in L1: each element becomes `t` and the kernel's store stages run (bias, activation,
//!    residual, BN, casts), indexed by the element's flat row and column so that a row-major
//!    output needs no division per element.
//!
//! A variable used by both operands only through `v / c` and `v % c` (attention heads merged
//! back into one dim) is split first (`codegen::split`), which reveals the GEMM form.
//!
//! Every output element is computed by one task, in a fixed order: results do not depend on the
//! thread count. Sums are FMA chains in k order (one rounding per step, not the interpreter's
//! f64 sum rounded once).

use inkwell::AddressSpace;
use inkwell::IntPredicate;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Linkage;
use inkwell::types::BasicType;
use inkwell::values::BasicValue;
use inkwell::values::{BasicValueEnum, FunctionValue, IntValue, VectorValue};
use terafab_ir::kernel::{Body, BufferId, Expr, Index, Kernel, LoopNest, Stage, Var};
use terafab_ir::{BinaryOp, DType, ReduceKind};

use super::{CodegenError, Fn, Gen, PackedOperand, is_const};

/// Rows of the micro-kernel's tile (broadcast side); fewer (`mr = M`) when M is smaller, as in
/// a matrix-vector product with a batch of one.
pub const MR: usize = 6;
/// Columns of the micro-kernel's tile (two 8-lane vectors).
pub const NR: usize = 16;
/// A-panels per compute task's block (so `8 * mr` rows).
pub const MC_PANELS: usize = 8;
/// Columns of a compute task's block (a multiple of [`NR`]).
pub const NC: usize = 128;
/// The K chunk of one micro-kernel call (a `KC × NR` chunk of a B panel is 16 KiB: L1).
pub const KC: usize = 256;

/// The shortest K for which the operands may swap to pad less (see `form`).
const MIN_SWAP_K: usize = 256;

type R<T> = Result<T, CodegenError>;

/// The GEMM form of a kernel, when it has one.
struct Form<'a> {
    a: &'a Expr,
    b: &'a Expr,
    m_vars: Vec<(Var, usize)>,
    n_vars: Vec<(Var, usize)>,
    batch_vars: Vec<(Var, usize)>,
    k_vars: Vec<(Var, usize)>,
    local: terafab_ir::kernel::Local,
    epilogue: &'a [Stage],
    /// Rows of the micro-kernel's tile: [`MR`], or M when smaller.
    mr: usize,
}

/// Whether `e` reads only constant buffers.
fn reads_only_consts(g: &Gen<'_, '_>, e: &Expr) -> bool {
    let mut ok = true;
    e.walk(&mut |x| {
        if let Expr::Load { buffer, .. } = x {
            ok &= is_const(g.p, *buffer);
        }
    });
    ok
}

fn form<'a>(g: &Gen<'_, '_>, nest: &'a LoopNest) -> Option<Form<'a>> {
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
    let is_f32 = |e: &Expr| expr_is_f32(g, e);
    if !is_f32(a) || !is_f32(b) || a.uses_local() || b.uses_local() {
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
    let prod = |v: &[(Var, usize)]| v.iter().map(|x| x.1).product::<usize>();
    // The other orientation when it wastes clearly less of the micro-kernel on zero padding
    // (a 7x7 feature map is N = 49 of 64 padded columns, but M = 49 of 50 rows with mr = 5); the
    // epilogue's stores are then strided, which costs far less than the padding.
    // Only between two real orientations: a side under 8 is a degenerate form (the nest
    // without its merged-heads split, say), which the checks below reject whichever way round.
    // And only over a long K: the swapped epilogue stores one element at a time, strided,
    // which a short K does not pay for (a stem conv with K = 27 ran 2x slower swapped).
    let (m0, n0) = (prod(&m_vars), prod(&n_vars));
    if m0.min(n0) >= 8
        && prod(k_vars) >= MIN_SWAP_K
        && tile_efficiency(n0, m0) > 1.05 * tile_efficiency(m0, n0)
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
        mr: rows_per_tile(m),
    })
}

/// The micro-kernel's rows for M rows: M itself when smaller than [`MR`], else [`MR`] or
/// `MR - 1` when that pads M clearly less.
fn rows_per_tile(m: usize) -> usize {
    if m <= MR {
        return m.max(1);
    }
    let padded = |mr: usize| m.div_ceil(mr) * mr;
    // The narrower kernel does fewer FMAs per load: worth it for 3% less padding.
    if padded(MR - 1) * 103 < padded(MR) * 100 {
        MR - 1
    } else {
        MR
    }
}

/// The fraction of the micro-kernel's work that is not zero padding, for M rows and N columns.
fn tile_efficiency(m: usize, n: usize) -> f64 {
    let mr = rows_per_tile(m);
    let rows = m.div_ceil(mr) * mr;
    let cols = n.div_ceil(NR) * NR;
    (m * n) as f64 / (rows * cols).max(1) as f64
}

/// Whether an expression is f32 (without a function context: locals are not f32 operands here).
fn expr_is_f32(g: &Gen<'_, '_>, e: &Expr) -> bool {
    fn ty(g: &Gen<'_, '_>, e: &Expr) -> Option<DType> {
        Some(match e {
            Expr::Load { buffer, .. } => g.p.buffer(*buffer).dtype,
            Expr::Const(t) => t.dtype(),
            Expr::Local(_) => return None,
            Expr::Index(_, d) | Expr::Convert(d, _) => *d,
            Expr::Unary(op, a) => match op {
                terafab_ir::UnaryOp::IsNan | terafab_ir::UnaryOp::IsInf => DType::Bool,
                _ => ty(g, a)?,
            },
            Expr::Binary(_, a, _) | Expr::Select(_, a, _) => ty(g, a)?,
            Expr::Compare(..) => DType::Bool,
        })
    }
    ty(g, e) == Some(DType::F32)
}

/// Lower `k` with the GEMM schedule if it has the GEMM form: returns its phases (task function
/// names and counts), or `None` for the plain loop nest.
pub(crate) fn try_gemm(
    g: &mut Gen<'_, '_>,
    name: &str,
    k: &Kernel,
    nest: &LoopNest,
) -> R<Option<Vec<(String, u64)>>> {
    if !matches!(k.body, Body::Loops(_)) {
        return Ok(None);
    }
    // A variable both operands use only through `v / c` and `v % c` (merged attention heads)
    // may hide the GEMM form: try the nest with it split.
    let split;
    let nest = if form(g, nest).is_some() {
        nest
    } else {
        split = terafab_ir::kernel::split::splits(nest)
            .into_iter()
            .find(|s| form(g, s).is_some());
        match &split {
            Some(s) => s,
            None => return Ok(None),
        }
    };
    let Some(form) = form(g, nest) else {
        return Ok(None);
    };
    let prod = |v: &[(Var, usize)]| v.iter().map(|x| x.1).product::<usize>();
    let (m, n, kk, batch) = (
        prod(&form.m_vars),
        prod(&form.n_vars),
        prod(&form.k_vars),
        prod(&form.batch_vars),
    );
    let mr = form.mr;
    let (mp, np) = (m.div_ceil(mr), n.div_ceil(NR));
    let bufs = Gen::kernel_buffers(k);
    let a_const = reads_only_consts(g, form.a)
        && form
            .batch_vars
            .iter()
            .all(|v| !form.a.vars().contains(&v.0));
    let b_const = reads_only_consts(g, form.b)
        && form
            .batch_vars
            .iter()
            .all(|v| !form.b.vars().contains(&v.0));
    let a_batches = if a_const { 1 } else { batch };
    let b_batches = if b_const { 1 } else { batch };

    // Slots for the packed operands: constant ones in memory of their own, the others in the
    // per-run scratch region (this kernel's part starts at 0).
    let base = g.p.buffers.len();
    let mut used = 0usize;
    let mut slot = |bytes: usize, constant: bool, g: &mut Gen<'_, '_>| {
        let s = base + g.packed.len();
        let scratch = (!constant).then(|| {
            let at = used;
            used = (used + bytes).next_multiple_of(64);
            g.scratch_bytes = g.scratch_bytes.max(used);
            at
        });
        g.packed.push(PackedOperand {
            slot: s,
            bytes,
            scratch,
        });
        BufferId(s as u32)
    };
    let ap = slot(a_batches * mp * mr * kk * 4, a_const, g);
    let bp = slot(b_batches * np * NR * kk * 4, b_const, g);

    let mut phases = Vec::new();
    let pack_a = pack_fn(g, &format!("{name}.packA"), &bufs, ap, &form, Side::A, kk)?;
    let pack_b = pack_fn(g, &format!("{name}.packB"), &bufs, bp, &form, Side::B, kk)?;
    // A constant operand is packed once by `init` (one batch), the others on every run.
    for (pack, constant, panels) in [(pack_a, a_const, mp), (pack_b, b_const, np)] {
        if constant {
            g.init_calls.push((pack, panels as u64));
        } else {
            let name = pack.get_name().to_string_lossy().into_owned();
            phases.push((name, (batch * panels) as u64));
        }
    }
    let blocks = Blocks::new(mp, np);
    let compute = compute_fn(
        g,
        &format!("{name}.compute"),
        &bufs,
        (ap, bp),
        &form,
        Dims {
            m,
            n,
            k: kk,
            mp,
            np,
            a_batched: !a_const,
            b_batched: !b_const,
        },
    )?;
    phases.push((compute, (batch * blocks.m * blocks.n) as u64));
    Ok(Some(phases))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// The compute tasks' blocks of panels: as few as [`MC_PANELS`] A panels and `NC / NR` B panels
/// allow, with the panels spread evenly over them (10 panels are blocks of 5 and 5, not 8 and
/// 2), so that the tasks are of equal size for the threads.
#[derive(Clone, Copy)]
struct Blocks {
    /// Blocks along M and the A panels of each (the last may have fewer).
    m: usize,
    m_panels: usize,
    /// Blocks along N and the B panels of each (the last may have fewer).
    n: usize,
    n_panels: usize,
}

impl Blocks {
    fn new(mp: usize, np: usize) -> Blocks {
        let m = mp.div_ceil(MC_PANELS).max(1);
        let n = np.div_ceil(NC / NR).max(1);
        Blocks {
            m,
            m_panels: mp.div_ceil(m),
            n,
            n_panels: np.div_ceil(n),
        }
    }
}

struct Dims {
    m: usize,
    n: usize,
    k: usize,
    mp: usize,
    np: usize,
    a_batched: bool,
    b_batched: bool,
}

/// Bind `vars` (row-major, the last fastest) from a flat index.
fn bind_flat<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    f: &mut Fn<'ctx>,
    flat: IntValue<'ctx>,
    vars: &[(Var, usize)],
) -> R<()> {
    let mut rest = flat;
    for (i, &(v, n)) in vars.iter().enumerate().rev() {
        f.extents.insert(v, n);
        if i == 0 {
            f.vars.insert(v, rest);
        } else {
            let r = g.b.build_int_unsigned_rem(rest, g.i64(n as i64), "r")?;
            rest = g.b.build_int_unsigned_div(rest, g.i64(n as i64), "q")?;
            f.vars.insert(v, r);
        }
    }
    Ok(())
}

/// The flat K index of the reduction variables' current values.
fn k_flat(vars: &[(Var, usize)]) -> Index {
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
fn lanes_contiguous(e: &Expr, vars: &[(Var, usize)]) -> bool {
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

/// `min(x, hi)`.
fn clamp<'ctx>(g: &Gen<'_, 'ctx>, x: IntValue<'ctx>, hi: i64) -> R<IntValue<'ctx>> {
    let over =
        g.b.build_int_compare(IntPredicate::SGT, x, g.i64(hi), "over")?;
    Ok(g.b
        .build_select(over, g.i64(hi), x, "clamp")?
        .into_int_value())
}

/// An inner function `name(ptr noalias %b..., i64 %task)` over `all`, and its task parameter.
fn begin_task_fn<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    all: &[BufferId],
) -> (Fn<'ctx>, IntValue<'ctx>) {
    let f = g.begin_fn(name, all, &[g.ctx.i64_type().into()]);
    let task = f
        .func
        .get_nth_param(all.len() as u32)
        .unwrap()
        .into_int_value();
    task.set_name("task");
    (f, task)
}

/// Close the inner function `f` (shared with kernels of the same form as phase `phase`) and
/// make its trampoline `name.task(ptr bufs, i64 task)`.
fn end_task_fn<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    phase: &str,
    f: Fn<'ctx>,
    all: &[BufferId],
) -> R<FunctionValue<'ctx>> {
    g.b.build_return(None)?;
    let inner = g.share(phase, f.func);
    g.task_fn(&format!("{name}.task"), inner, all, |_, t| {
        Ok(vec![t.into()])
    })
}

/// A pack task: `task = batch * panels + panel`; writes the panel's `k × width` values.
fn pack_fn<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    bufs: &[BufferId],
    dst: BufferId,
    form: &Form<'_>,
    side: Side,
    kk: usize,
) -> R<FunctionValue<'ctx>> {
    let (expr, vars, width) = match side {
        Side::A => (form.a, &form.m_vars, form.mr),
        Side::B => (form.b, &form.n_vars, NR),
    };
    let extent: usize = vars.iter().map(|v| v.1).product();
    let panels = extent.div_ceil(width);
    let mut all = bufs.to_vec();
    all.push(dst);
    let i64t = g.ctx.i64_type();
    let f32t = g.ctx.f32_type();
    let (mut f, task) = begin_task_fn(g, name, &all);
    let bi =
        g.b.build_int_unsigned_div(task, g.i64(panels as i64), "batch")?;
    let panel =
        g.b.build_int_unsigned_rem(task, g.i64(panels as i64), "panel")?;
    bind_flat(g, &mut f, bi, &form.batch_vars)?;
    // dst + (task * k) * width floats.
    let base =
        g.b.build_int_mul(task, g.i64((kk * width) as i64), "base")?;
    let dst_ptr = f.ptrs[&dst];
    let first = g.b.build_int_mul(panel, g.i64(width as i64), "first")?;
    for (v, n) in &form.k_vars {
        f.extents.insert(*v, *n);
    }
    let kidx = k_flat(&form.k_vars);
    let width_i = width as i64;
    let store = |g: &mut Gen<'_, 'ctx>,
                 f: &mut Fn<'ctx>,
                 lane: IntValue<'ctx>,
                 valid: IntValue<'ctx>|
     -> R<()> {
        let x = g.expr(f, expr)?.into_float_value();
        let x =
            g.b.build_select(valid, x, f32t.const_zero(), "x")?
                .into_float_value();
        let k = g.index(f, &kidx)?;
        let off = g.b.build_int_mul(k, g.i64(width_i), "o")?;
        let off = g.b.build_int_add(off, lane, "o")?;
        let off = g.b.build_int_add(off, base, "o")?;
        let p = unsafe { g.b.build_in_bounds_gep(f32t, dst_ptr, &[off], "p")? };
        g.b.build_store(p, x)?;
        Ok(())
    };
    // A lane's position, clamped into range, bound to the side's variables; and whether it is
    // a real row/column (not padding).
    let lane_pos =
        |g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>, lane: IntValue<'ctx>| -> R<IntValue<'ctx>> {
            let pos = g.b.build_int_add(first, lane, "pos")?;
            let valid =
                g.b.build_int_compare(IntPredicate::SLT, pos, g.i64(extent as i64), "valid")?;
            let safe = clamp(g, pos, extent as i64 - 1)?;
            bind_flat(g, f, safe, vars)?;
            Ok(valid)
        };
    let (zero, w) = (g.i64(0), g.i64(width_i));
    let k_vars = form.k_vars.clone();
    if lanes_contiguous(expr, vars) {
        // Consecutive lanes read consecutive elements: every k, then the panel's lanes. The
        // lanes' variables (divisions of the flat position) are computed once per panel.
        let arr = |g: &Gen<'_, 'ctx>, f: &Fn<'ctx>, name: &str| {
            g.entry_alloca(f, i64t.array_type(width as u32).into(), name)
        };
        let slots: Vec<_> = vars
            .iter()
            .map(|(v, _)| arr(g, &f, &format!("lane.v{}", v.0)))
            .collect::<R<_>>()?;
        let valid_slot = arr(g, &f, "lane.valid")?;
        let at = |g: &Gen<'_, 'ctx>, slot, lane| unsafe {
            g.b.build_in_bounds_gep(i64t, slot, &[lane], "lane")
        };
        g.range_loop(&mut f, zero, w, |g, f, lane| {
            let valid = lane_pos(g, f, lane)?;
            for ((v, _), &slot) in vars.iter().zip(&slots) {
                g.b.build_store(at(g, slot, lane)?, f.vars[v])?;
            }
            let valid = g.b.build_int_z_extend(valid, i64t, "valid")?;
            g.b.build_store(at(g, valid_slot, lane)?, valid)?;
            Ok(())
        })?;
        g.nest(&mut f, &k_vars, &mut |g, f| {
            g.range_loop(f, zero, w, |g, f, lane| {
                for ((v, _), &slot) in vars.iter().zip(&slots) {
                    let x = g.b.build_load(i64t, at(g, slot, lane)?, "lv")?;
                    f.vars.insert(*v, x.into_int_value());
                }
                let valid = g.b.build_load(i64t, at(g, valid_slot, lane)?, "lvalid")?;
                let valid = g.b.build_int_compare(
                    IntPredicate::NE,
                    valid.into_int_value(),
                    g.i64(0),
                    "valid",
                )?;
                store(g, f, lane, valid)
            })
        })?;
    } else {
        // Each lane reads along k: every lane, then its k values.
        g.range_loop(&mut f, zero, w, |g, f, lane| {
            let valid = lane_pos(g, f, lane)?;
            g.nest(f, &k_vars, &mut |g, f| store(g, f, lane, valid))
        })?;
    }
    let phase = if side == Side::A { "packA" } else { "packB" };
    end_task_fn(g, name, phase, f, &all)
}

/// The micro-kernel: `c[mr][NR] (+)= Σ_k a[k][mr] ⊗ b[k][NR]` over `k < kn`, adding to `c`'s
/// contents when `accumulate` is nonzero (one per module and `mr`).
fn ukernel<'ctx>(g: &mut Gen<'_, 'ctx>, mr: usize) -> R<FunctionValue<'ctx>> {
    let name = &format!("tf.ukernel.{mr}x{NR}");
    if let Some(f) = g.module.get_function(name) {
        return Ok(f);
    }
    let ctx = g.ctx;
    let p = ctx.ptr_type(AddressSpace::default());
    let i64t = ctx.i64_type();
    let f32t = ctx.f32_type();
    let v8 = f32t.vec_type(8);
    let f = g.module.add_function(
        name,
        ctx.void_type().fn_type(
            &[p.into(), p.into(), i64t.into(), p.into(), i64t.into()],
            false,
        ),
        Some(Linkage::Internal),
    );
    let noalias = ctx.create_enum_attribute(
        inkwell::attributes::Attribute::get_named_enum_kind_id("noalias"),
        0,
    );
    for i in [0u32, 1, 3] {
        f.add_attribute(inkwell::attributes::AttributeLoc::Param(i), noalias);
    }
    // One copy shared by every GEMM of the module (a call per KC-long run costs nothing next
    // to it, and inlining it into each kernel would multiply the code LLVM compiles).
    f.add_attribute(
        inkwell::attributes::AttributeLoc::Function,
        ctx.create_enum_attribute(
            inkwell::attributes::Attribute::get_named_enum_kind_id("noinline"),
            0,
        ),
    );
    let (a, b, kn, c) = (
        f.get_nth_param(0).unwrap().into_pointer_value(),
        f.get_nth_param(1).unwrap().into_pointer_value(),
        f.get_nth_param(2).unwrap().into_int_value(),
        f.get_nth_param(3).unwrap().into_pointer_value(),
    );
    let fma = Intrinsic::find("llvm.fma")
        .and_then(|i| i.get_declaration(g.module, &[v8.as_basic_type_enum()]))
        .ok_or_else(|| CodegenError::Llvm("no llvm.fma".into()))?;
    let accumulate = f.get_nth_param(4).unwrap().into_int_value();
    let bld = ctx.create_builder();
    let entry = ctx.append_basic_block(f, "entry");
    let load_c = ctx.append_basic_block(f, "load_c");
    let header = ctx.append_basic_block(f, "k");
    let body = ctx.append_basic_block(f, "body");
    let exit = ctx.append_basic_block(f, "exit");
    bld.position_at_end(entry);
    let acc_nz = bld.build_int_compare(
        IntPredicate::NE,
        accumulate,
        i64t.const_zero(),
        "accumulate",
    )?;
    bld.build_conditional_branch(acc_nz, load_c, header)?;
    bld.position_at_end(load_c);
    let mut initial = Vec::new();
    for i in 0..mr * 2 {
        let off = i64t.const_int((i * 8) as u64, false);
        let cp = unsafe { bld.build_in_bounds_gep(f32t, c, &[off], "c")? };
        let v = bld.build_load(v8, cp, "c")?;
        if let Some(ins) = v.as_instruction_value() {
            let _ = ins.set_alignment(32);
        }
        initial.push(v);
    }
    bld.build_unconditional_branch(header)?;
    bld.position_at_end(header);
    let kphi = bld.build_phi(i64t, "k")?;
    let accs: Vec<_> = (0..mr * 2)
        .map(|i| bld.build_phi(v8, &format!("acc{i}")))
        .collect::<Result<_, _>>()?;
    let kv = kphi.as_basic_value().into_int_value();
    let more = bld.build_int_compare(IntPredicate::SLT, kv, kn, "more")?;
    bld.build_conditional_branch(more, body, exit)?;
    bld.position_at_end(body);
    let boff = bld.build_int_mul(kv, i64t.const_int(NR as u64, false), "boff")?;
    let bptr0 = unsafe { bld.build_in_bounds_gep(f32t, b, &[boff], "b0")? };
    let boff1 = bld.build_int_add(boff, i64t.const_int(8, false), "boff1")?;
    let bptr1 = unsafe { bld.build_in_bounds_gep(f32t, b, &[boff1], "b1")? };
    let load_v = |ptr| -> R<VectorValue<'ctx>> {
        let v = bld.build_load(v8, ptr, "bv")?;
        if let Some(i) = v.as_instruction_value() {
            let _ = i.set_alignment(32);
        }
        Ok(v.into_vector_value())
    };
    let b0 = load_v(bptr0)?;
    let b1 = load_v(bptr1)?;
    let aoff = bld.build_int_mul(kv, i64t.const_int(mr as u64, false), "aoff")?;
    let mut next: Vec<BasicValueEnum<'ctx>> = Vec::new();
    for i in 0..mr {
        let o = bld.build_int_add(aoff, i64t.const_int(i as u64, false), "ai")?;
        let ap = unsafe { bld.build_in_bounds_gep(f32t, a, &[o], "ap")? };
        let av = bld.build_load(f32t, ap, "a")?.into_float_value();
        let undef = v8.get_undef();
        let ins = bld.build_insert_element(undef, av, i64t.const_zero(), "ins")?;
        let zeros = ctx.i32_type().vec_type(8).const_zero();
        let splat = bld.build_shuffle_vector(ins, undef, zeros, "splat")?;
        for (h, bv) in [b0, b1].into_iter().enumerate() {
            let acc = accs[i * 2 + h].as_basic_value();
            let r = bld
                .build_call(fma, &[splat.into(), bv.into(), acc.into()], "fma")?
                .try_as_basic_value()
                .basic()
                .unwrap();
            next.push(r);
        }
    }
    let k1 = bld.build_int_add(kv, i64t.const_int(1, false), "k1")?;
    bld.build_unconditional_branch(header)?;
    kphi.add_incoming(&[
        (&i64t.const_zero(), entry),
        (&i64t.const_zero(), load_c),
        (&k1, body),
    ]);
    for (i, phi) in accs.iter().enumerate() {
        phi.add_incoming(&[
            (&v8.const_zero(), entry),
            (&initial[i], load_c),
            (&next[i], body),
        ]);
    }
    bld.position_at_end(exit);
    for (i, phi) in accs.iter().enumerate() {
        let off = i64t.const_int((i * 8) as u64, false);
        let cp = unsafe { bld.build_in_bounds_gep(f32t, c, &[off], "c")? };
        let st = bld.build_store(cp, phi.as_basic_value())?;
        let _ = st.set_alignment(32);
    }
    bld.build_return(None)?;
    Ok(f)
}

/// A compute task: `task = (batch * mblocks + mb) * nblocks + nb`.
fn compute_fn<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    bufs: &[BufferId],
    (ap, bp): (BufferId, BufferId),
    form: &Form<'_>,
    d: Dims,
) -> R<String> {
    let mr = form.mr;
    let uk = ukernel(g, mr)?;
    // The epilogue indexes by the flat row m and column n of the tile element: an index that
    // recombines the M (or N) variables (a row-major store of a conv's pixels) becomes m (n)
    // again, without per-element division, and the column loop vectorizes.
    let (m_flat, n_flat) = (Var(u32::MAX - 2), Var(u32::MAX - 1));
    let all_vars: Vec<(Var, usize)> = [&form.m_vars, &form.n_vars, &form.batch_vars, &form.k_vars]
        .into_iter()
        .flatten()
        .copied()
        .chain([(m_flat, d.m), (n_flat, d.n)])
        .collect();
    let extent = |v: Var| all_vars.iter().find(|x| x.0 == v).map(|x| x.1);
    let epilogue_stages = terafab_ir::kernel::split::flatten_vars(
        form.epilogue,
        &[(m_flat, form.m_vars.clone()), (n_flat, form.n_vars.clone())],
        &extent,
    );
    let blocks = Blocks::new(d.mp, d.np);
    let (mblocks, nblocks) = (blocks.m, blocks.n);
    let mut all = bufs.to_vec();
    all.push(ap);
    all.push(bp);
    let f32t = g.ctx.f32_type();
    let (mut f, task) = begin_task_fn(g, name, &all);
    // The block's accumulators: one MR x NR tile per (A panel, B panel) pair.
    let (bp_n, bq_n) = (blocks.m_panels, blocks.n_panels);
    let tile_len = (MR * NR) as i64;
    let cblock = g.entry_alloca(
        &f,
        f32t.array_type((bp_n * bq_n * MR * NR) as u32).into(),
        "cblock",
    )?;
    if let Some(i) = cblock.as_instruction() {
        let _ = i.set_alignment(64);
    }
    let nb =
        g.b.build_int_unsigned_rem(task, g.i64(nblocks as i64), "nb")?;
    let rest =
        g.b.build_int_unsigned_div(task, g.i64(nblocks as i64), "rest")?;
    let mb =
        g.b.build_int_unsigned_rem(rest, g.i64(mblocks as i64), "mb")?;
    let bi =
        g.b.build_int_unsigned_div(rest, g.i64(mblocks as i64), "bi")?;
    bind_flat(g, &mut f, bi, &form.batch_vars)?;
    let panel_a = (d.k * mr) as i64;
    let panel_b = (d.k * NR) as i64;
    // Panel ranges of this block.
    let p0 = g.b.build_int_mul(mb, g.i64(bp_n as i64), "p0")?;
    let p1 = g.b.build_int_add(p0, g.i64(bp_n as i64), "p1")?;
    let p1 = clamp(g, p1, d.mp as i64)?;
    let q0 = g.b.build_int_mul(nb, g.i64(bq_n as i64), "q0")?;
    let q1 = g.b.build_int_add(q0, g.i64(bq_n as i64), "q1")?;
    let q1 = clamp(g, q1, d.np as i64)?;
    let a_base = if d.a_batched {
        g.b.build_int_mul(bi, g.i64(d.mp as i64 * panel_a), "abase")?
    } else {
        g.i64(0)
    };
    let b_base = if d.b_batched {
        g.b.build_int_mul(bi, g.i64(d.np as i64 * panel_b), "bbase")?
    } else {
        g.i64(0)
    };
    let (ap_ptr, bp_ptr) = (f.ptrs[&ap], f.ptrs[&bp]);
    // The tile of panels (p, q) in the block.
    let tile_at = |g: &Gen<'_, 'ctx>, p: IntValue<'ctx>, q: IntValue<'ctx>| -> R<_> {
        let pl = g.b.build_int_sub(p, p0, "pl")?;
        let ql = g.b.build_int_sub(q, q0, "ql")?;
        let t = g.b.build_int_mul(pl, g.i64(bq_n as i64), "t")?;
        let t = g.b.build_int_add(t, ql, "t")?;
        let o = g.b.build_int_mul(t, g.i64(tile_len), "to")?;
        Ok(unsafe { g.b.build_in_bounds_gep(f32t, cblock, &[o], "tile")? })
    };
    // K in chunks of KC: the chunk of a B panel (KC x NR) stays in L1 while every A panel of
    // the block passes over it.
    // The chunks are of equal length (K = 576 is 3 x 192, not 256 + 256 + 64).
    let chunks = d.k.div_ceil(KC);
    let chunk = d.k.div_ceil(chunks) as i64;
    let (zero, nchunks) = (g.i64(0), g.i64(chunks as i64));
    g.range_loop(&mut f, zero, nchunks, |g, f, kc| {
        let k0 = g.b.build_int_mul(kc, g.i64(chunk), "k0")?;
        let krem = g.b.build_int_sub(g.i64(d.k as i64), k0, "krem")?;
        let klen = clamp(g, krem, chunk)?;
        g.range_loop(f, q0, q1, |g, f, q| {
            let boff = g.b.build_int_mul(q, g.i64(panel_b), "boff")?;
            let boff = g.b.build_int_add(boff, b_base, "boff")?;
            let kb = g.b.build_int_mul(k0, g.i64(NR as i64), "kb")?;
            let boff = g.b.build_int_add(boff, kb, "boff")?;
            let bptr = unsafe { g.b.build_in_bounds_gep(f32t, bp_ptr, &[boff], "bpanel")? };
            g.range_loop(f, p0, p1, |g, _f, pidx| {
                let aoff = g.b.build_int_mul(pidx, g.i64(panel_a), "aoff")?;
                let aoff = g.b.build_int_add(aoff, a_base, "aoff")?;
                let ka = g.b.build_int_mul(k0, g.i64(mr as i64), "ka")?;
                let aoff = g.b.build_int_add(aoff, ka, "aoff")?;
                let aptr = unsafe { g.b.build_in_bounds_gep(f32t, ap_ptr, &[aoff], "apanel")? };
                let tile = tile_at(g, pidx, q)?;
                g.b.build_call(
                    uk,
                    &[
                        aptr.into(),
                        bptr.into(),
                        klen.into(),
                        tile.into(),
                        kc.into(),
                    ],
                    "",
                )?;
                Ok(())
            })
        })
    })?;
    // The epilogue, tile by tile, over the valid part of each.
    g.range_loop(&mut f, q0, q1, |g, f, q| {
        g.range_loop(f, p0, p1, |g, f, pidx| {
            let tile = tile_at(g, pidx, q)?;
            let m0 = g.b.build_int_mul(pidx, g.i64(mr as i64), "m0")?;
            let n0 = g.b.build_int_mul(q, g.i64(NR as i64), "n0")?;
            let mrem = g.b.build_int_sub(g.i64(d.m as i64), m0, "mrem")?;
            let mend = clamp(g, mrem, mr as i64)?;
            let nrem = g.b.build_int_sub(g.i64(d.n as i64), n0, "nrem")?;
            let nend = clamp(g, nrem, NR as i64)?;
            let zero = g.i64(0);
            let epilogue = |g: &mut Gen<'_, 'ctx>,
                            f: &mut Fn<'ctx>,
                            mend: IntValue<'ctx>,
                            nend: IntValue<'ctx>|
             -> R<()> {
                g.range_loop(f, zero, mend, |g, f, i| {
                    let mi = g.b.build_int_add(m0, i, "m")?;
                    f.vars.insert(m_flat, mi);
                    f.extents.insert(m_flat, d.m);
                    g.range_loop(f, zero, nend, |g, f, j| {
                        let nj = g.b.build_int_add(n0, j, "n")?;
                        f.vars.insert(n_flat, nj);
                        f.extents.insert(n_flat, d.n);
                        let o = g.b.build_int_mul(i, g.i64(NR as i64), "o")?;
                        let o = g.b.build_int_add(o, j, "o")?;
                        let tp = unsafe { g.b.build_in_bounds_gep(f32t, tile, &[o], "tp")? };
                        let t = g.b.build_load(f32t, tp, "t")?;
                        f.locals.insert(form.local, (t, DType::F32));
                        g.stages(f, &epilogue_stages)
                    })
                })
            };
            epilogue(g, f, mend, nend)
        })
    })?;
    end_task_fn(g, name, "compute", f, &all)?;
    Ok(format!("{name}.task"))
}
