//! Contractions as packed GEMM with a register-blocked AVX2+FMA micro-kernel.
//!
//! The kernel's GEMM form, the plan of tiles and blocks and the packed operands are the
//! runtime's ([`terafab_runtime::gemm`], shared with the Cranelift backend); this module emits
//! the LLVM IR of the schedule with the tiling [`TILING`].
//!
//! Schedule (BLIS-like):
//!
//! 1. **Pack**: `A` into panels of `mr` rows (`Ap[panel][k][mr]`; `mr` = [`MR`], or `MR - 1`
//!    when that pads M clearly less, or M when smaller), `B` into panels of [`NR`] columns
//!    (`Bp[panel][k][NR]`), zero-padded at the edges, for every batch index. An operand that
//!    is one f32 load with unit stride along the panel's lanes (a row-major activation, a
//!    stride-1 convolution's im2col rows, a 1x1 convolution's pixels as A) copies a panel's
//!    values per k as one vector where they lie in one row (or one flat run) and inside the
//!    buffer, else lane by lane. An operand that
//!    reads only constants (weights) is packed once, by `init`, into memory of its own; the
//!    others on every run (one task per panel) into the per-run scratch region, which every
//!    kernel reuses.
//! 2. **Compute**: one task per (batch, block of at most [`MC_PANELS`] A panels, block of at
//!    most [`NC`] columns), the panels spread evenly over the blocks. K runs in equal chunks of
//!    at most [`KC`]: for each chunk, for each `B` panel (its `KC × NR` chunk stays in L1), for each
//!    `A` panel of the block, the micro-kernel keeps the `mr × NR` tile in `2·mr` AVX
//!    registers over the chunk (`mr` broadcasts, 2 vector loads and `2·mr` FMAs per k) and adds
//!    it into the block's tile buffer on the stack. After the last chunk, the epilogue runs on
//!    the tile at once, while it is in L1: each element becomes `t` and the kernel's store
//!    stages run (bias, activation, residual, BN, casts), indexed by the element's flat row and
//!    column so that a row-major output needs no division per element; row by row, or, where
//!    the stores run along the rows (a swapped convolution), column by column over a copy of
//!    the tile transposed by vector shuffles.
//!    At most 40 A panels make one block (each B chunk loaded once for every row). A B
//!    packed every run with at least 32 panels is packed by the compute tasks
//!    themselves instead (no pack phase): a task takes one block of columns (blocks of 2 to 8
//!    panels, 16 or more of them), claims a slot of one block's panels (a bit mask; a thread
//!    gets the same slot, still in its cache, task after task), packs each panel into it just
//!    before its first use, prefetching the lines the next one's packing reads, and runs every
//!    block of A panels over them: the panels are read back from cache rather than memory and
//!    each is packed once.
//!
//! **Operands read in place** ([`Direct`]): an activation whose packing would expand it (an
//! im2col matrix) is not packed. As B, where a panel's 16 columns are 16 consecutive elements
//! (a convolution over rows of 16, 32, 64... pixels; a stride-`s` one reads a frame whose rows
//! are split in `s` phases, so its pixels are consecutive too), the micro-kernel loads them at
//! `k` from `base_q + koff[k]`; else as A, it broadcasts row `i` at `k` from `base_i + koff[k]`
//! (row or panel pointers made per block, K offsets a constant table). A padded convolution
//! reads a frame, the input with its padding, made by a `padA` (`padB`) phase. A convolution
//! with K >= 512 (>= 128 when its pixels are strided) whose pixels are the N side but cannot
//! be read as B swaps its operands to read them as A.
//!
//! A variable used by both operands only through `v / c` and `v % c` (attention heads merged
//! back into one dim) is split first (`codegen::split`), which reveals the GEMM form.
//!
//! Every output element is computed by one task, in a fixed order: results do not depend on the
//! thread count. Sums are FMA chains in k order (one rounding per step, not the interpreter's
//! f64 sum rounded once).

use inkwell::AddressSpace;
use inkwell::AtomicOrdering;
use inkwell::AtomicRMWBinOp;
use inkwell::IntPredicate;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Linkage;
use inkwell::types::{BasicType, VectorType};
use inkwell::values::BasicValue;
use inkwell::values::{BasicValueEnum, FunctionValue, IntValue, PointerValue, VectorValue};
use terafab_ir::DType;
use terafab_ir::kernel::{Body, BufferId, Expr, Index, Kernel, LoopNest, Var, offset_coeff};
use terafab_runtime::gemm::{
    Form, Plan, Tiling, flat_epilogue, gemm_nest, k_flat, lanes_contiguous, tile_efficiency,
};

use super::frame::{Frame, MAX_FRAME, frame_fn};
use super::{CodegenError, Fn, Gen};

/// Rows of the micro-kernel's tile (broadcast side); fewer (`mr = M`) when M is smaller, as in
/// a matrix-vector product with a batch of one.
pub const MR: usize = 6;
/// Columns of the micro-kernel's tile (two 8-lane vectors).
pub const NR: usize = 16;

/// The tiling: 6×16 tiles (12 AVX registers), blocks of 8 A panels (`8 * mr` rows) and 128
/// columns, K chunks of at most 256 (a `256 × 16` chunk of a B panel is 16 KiB: L1); the
/// operands may swap from K = 256.
pub const TILING: Tiling = Tiling {
    mr: MR,
    nr: NR,
    mc_panels: 8,
    nc: 128,
    kc: 256,
    min_swap_k: 256,
};

type R<T> = Result<T, CodegenError>;

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
    let Some(nest) = gemm_nest(g.p, nest, &TILING) else {
        return Ok(None);
    };
    let Some(mut form) = terafab_runtime::gemm::form(g.p, &nest, &TILING) else {
        return Ok(None);
    };
    let mut plan = Plan::new(g.p, &form, &TILING);
    // An activation read in place (no packing; see `Direct`): as B where a panel's 16
    // columns are 16 consecutive elements (a convolution over rows of a multiple of 16
    // pixels, through a phase-split frame if strided; the epilogue stores whole vectors:
    // VGG's 64-channel conv over 224x224 ran 14% faster than swapped, the small CNN's
    // 32-channel conv (K = 288) 17% faster than packed);
    // else as A, in this orientation, or the other way round when that reads it in place, pads
    // the tiles about as little, and K is long enough to pay for the epilogue's strided
    // stores: from 512, or from 128 where B's panels would be packed lane by lane (no unit
    // stride along the pixels: a stride-2 conv). A 32-channel 3x3 convolution, K = 288, ran
    // 8% slower swapped, a 64-channel one (K = 576) 20% faster; ResNet's 7x7 stride-2 stem
    // (K = 147) 20% faster.
    let mut direct = Direct::of(g.p, &form, &plan, Side::B);
    if direct.is_none() {
        direct = Direct::of(g.p, &form, &plan, Side::A);
    }
    let b_vectors = vector_panel(g, form.b, &form.n_vars, NR).is_some();
    if direct.is_none() && plan.k >= if b_vectors { 512 } else { 128 } {
        let sw = terafab_runtime::gemm::swapped(&form, &TILING);
        let sw_plan = Plan::new(g.p, &sw, &TILING);
        let eff = |p: &Plan| tile_efficiency(&TILING, p.m, p.n);
        if sw_plan.n >= 8
            && eff(&sw_plan) >= 0.95 * eff(&plan)
            && let Some(d) = Direct::of(g.p, &sw, &sw_plan, Side::A)
        {
            (form, plan, direct) = (sw, sw_plan, Some(d));
        }
    }
    // The operand read in place, if any.
    let read = direct.as_ref().map(|d| d.side);
    let direct_b = read == Some(Side::B);
    // B packed by the compute tasks themselves, each its own block of columns just before
    // using it (so the panels are read back from cache, not memory): a B packed every run,
    // of at least 32 panels. A task then runs every block of A panels over its columns, so
    // each B panel is packed by exactly one task. The column blocks shrink (to no fewer than
    // 2 panels) until there are 16 of them to spread over the threads: a 28x28 feature map
    // is 17 blocks of 3 panels, not 7 of 7 with a pack phase of its own (VGG's 256-channel
    // 3x3 convolution ran ~7% faster on 1 and 2 threads, alternating the two binaries).
    let fuse_b = !plan.b_const && !direct_b && plan.batch * plan.np >= 32;
    let mut tiling = TILING;
    if fuse_b {
        tiling.nc = NR * (plan.batch * plan.np / 16).clamp(2, TILING.nc / NR);
    }
    // A few A panels (at most 40: 240 rows) make one block, so that each chunk of B is loaded
    // once and used by every row: a convolution over a 7x7 or 14x14 map streams its weights
    // (up to 9 MB) once instead of once per block of 48 rows (ResNet's 512-channel 3x3
    // convolution over 7x7 ran 10% faster). The columns are then split into at least 16 blocks
    // (of one panel or more) for the threads: tasks are claimed one at a time, so the threads
    // finish at most one task apart, and with 8 tasks on 2 threads that was a quarter of a
    // thread's work (the small CNN's convolutions ran 1.6x faster on 2 threads than on 1).
    if plan.mp <= 40 && plan.blocks.m > 1 {
        tiling.mc_panels = plan.mp;
        if !fuse_b {
            tiling.nc = NR * (plan.np / 16).clamp(1, TILING.nc / NR);
        }
    }
    if tiling != TILING {
        plan = Plan::new(g.p, &form, &tiling);
    }
    let bufs = Gen::kernel_buffers(k);
    // A fused B is packed into one of a few slots of one block's panels, claimed by each task
    // (see `claim_slot`), so that a thread packs into the same memory, still in its cache,
    // task after task: packed at their place in the whole of B, every panel's lines were cold
    // (ResNet's 256->64 1x1 conv over 56x56 spent about a third of its time packing).
    let b_slots = (plan.batch * plan.blocks.n).min(64);
    let (a_bytes, mut b_bytes) = plan.packed_bytes();
    if fuse_b {
        b_bytes = b_slots * plan.blocks.n_panels * plan.k * NR * 4;
    }
    let (a_mem, b_mem) = ((a_bytes, plan.a_const), (b_bytes, plan.b_const));
    let (ap, bp) = match &direct {
        Some(d) => {
            let frame = (d.frame_bytes(), false);
            match d.side {
                Side::A => g.packed.add_sized(frame, b_mem),
                Side::B => g.packed.add_sized(a_mem, frame),
            }
        }
        None => g.packed.add_sized(a_mem, b_mem),
    };

    let mut phases = Vec::new();
    // The operands packed: A unless read in place as A, B unless read in place as B.
    let mut pack = |side: Side, dst: BufferId, label: &str| {
        pack_fn(
            g,
            &format!("{name}.{label}"),
            &bufs,
            (dst, side == Side::B && fuse_b),
            &form,
            side,
            plan.k,
        )
    };
    let pack_a = match read {
        Some(Side::A) => None,
        _ => Some(pack(Side::A, ap, "packA")?),
    };
    let pack_b = match read {
        Some(Side::B) => None,
        _ => Some(pack(Side::B, bp, "packB")?),
    };
    // A constant operand is packed once by `init` (one batch), the others on every run (a
    // fused B by the compute tasks: no task of its own).
    for (side, inner, dst, constant, panels) in [
        (Side::A, pack_a, ap, plan.a_const, plan.mp),
        (Side::B, pack_b, bp, plan.b_const, plan.np),
    ] {
        let Some(inner) = inner.filter(|_| !(side == Side::B && fuse_b)) else {
            continue;
        };
        let label = if side == Side::A { "packA" } else { "packB" };
        let all: Vec<BufferId> = bufs.iter().copied().chain([dst]).collect();
        let pack = trampoline(g, &format!("{name}.{label}"), inner, &all)?;
        if constant {
            g.init_calls.push((pack, panels as u64));
        } else {
            let name = pack.get_name().to_string_lossy().into_owned();
            phases.push((name, (plan.batch * panels) as u64));
        }
    }
    if let Some(d) = &direct
        && let Some(frame) = &d.frame
    {
        let (label, dst) = match d.side {
            Side::A => ("padA", ap),
            Side::B => ("padB", bp),
        };
        let inner = frame_fn(g, &format!("{name}.{label}"), label, d.src, dst, frame)?;
        let all = [d.src, dst];
        let task = trampoline(g, &format!("{name}.{label}"), inner, &all)?;
        let name = task.get_name().to_string_lossy().into_owned();
        phases.push((name, frame.tasks() as u64));
    }
    let fused = match pack_b.filter(|_| fuse_b) {
        Some(pack) => Some((pack, g.packed.add_own(8), b_slots)),
        None => None,
    };
    let compute = compute_fn(
        g,
        &format!("{name}.compute"),
        &bufs,
        (ap, bp),
        (&form, &plan),
        fused,
        direct.as_ref(),
    )?;
    let tasks = if fuse_b {
        plan.batch * plan.blocks.n
    } else {
        plan.compute_tasks()
    };
    phases.push((compute, tasks as u64));
    Ok(Some(phases))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
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

/// `min(x, hi)`.
pub(super) fn clamp<'ctx>(g: &Gen<'_, 'ctx>, x: IntValue<'ctx>, hi: i64) -> R<IntValue<'ctx>> {
    let over =
        g.b.build_int_compare(IntPredicate::SGT, x, g.i64(hi), "over")?;
    Ok(g.b
        .build_select(over, g.i64(hi), x, "clamp")?
        .into_int_value())
}

/// An inner function `name(ptr noalias %b..., i64 %task)` over `all`, and its task parameter.
pub(super) fn begin_task_fn<'ctx>(
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

/// Close the inner function `f` of phase `phase` (shared with kernels of the same form).
pub(super) fn end_inner<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    phase: &str,
    f: Fn<'ctx>,
) -> R<FunctionValue<'ctx>> {
    g.b.build_return(None)?;
    Ok(g.share(phase, f.func))
}

/// The trampoline `name.task(ptr bufs, i64 task)` of the inner function `inner` over `all`.
pub(super) fn trampoline<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    inner: FunctionValue<'ctx>,
    all: &[BufferId],
) -> R<FunctionValue<'ctx>> {
    g.task_fn(&format!("{name}.task"), inner, all, |_, t| {
        Ok(vec![t.into()])
    })
}

/// A pack task: `task = batch * panels + panel`; writes the panel's `k × width` values at
/// its place in `dst`, or, `at_panel`, at `dst` itself (the pointer the caller passes is the
/// panel's: a fused B's slot). Returns its inner function, over the pointers of `bufs` and
/// `dst` and the task.
fn pack_fn<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    bufs: &[BufferId],
    (dst, at_panel): (BufferId, bool),
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
    // dst + (task * k) * width floats; `at_panel`: `dst` is the panel's own place.
    let base = match at_panel {
        true => g.i64(0),
        false => {
            g.b.build_int_mul(task, g.i64((kk * width) as i64), "base")?
        }
    };
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
        // Bind the side's variables to a lane's values.
        let bind_lane = |g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>, lane: IntValue<'ctx>| -> R<()> {
            for ((v, _), &slot) in vars.iter().zip(&slots) {
                let x = g.b.build_load(i64t, at(g, slot, lane)?, "lv")?;
                f.vars.insert(*v, x.into_int_value());
            }
            Ok(())
        };
        let lanes = |g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>| {
            g.range_loop(f, zero, w, |g, f, lane| {
                bind_lane(g, f, lane)?;
                let valid = g.b.build_load(i64t, at(g, valid_slot, lane)?, "lvalid")?;
                let valid = g.b.build_int_compare(
                    IntPredicate::NE,
                    valid.into_int_value(),
                    g.i64(0),
                    "valid",
                )?;
                store(g, f, lane, valid)
            })
        };
        match vector_panel(g, expr, vars, width) {
            Some((buffer, index, checked)) => {
                // The panel's lanes in one row of the lane variable (so all are real columns
                // and the offset runs on by one per lane).
                // Or, where the side's variables run through the operand as one flat run
                // (each one's coefficient the next one's times its extent: a 1x1
                // convolution's pixels) and no bound is checked, the panel is whole (a row of
                // 56 pixels left one panel in 7 to the lanes).
                let &(u, nu) = vars.last().expect("a lane variable");
                let strides = &g.p.buffer(buffer).strides;
                let coeff = |v| offset_coeff(index, strides, v);
                // (a variable of one value, a batch of one, takes no part).
                let runs: Vec<_> = vars.iter().filter(|v| v.1 > 1).collect();
                let flat = !checked
                    && runs.last().is_some_and(|v| coeff(v.0) == Some(1))
                    && runs.windows(2).all(|w| {
                        matches!((coeff(w[0].0), coeff(w[1].0)),
                            (Some(a), Some(b)) if Some(a) == b.checked_mul(w[1].1 as i64))
                    });
                bind_lane(g, &mut f, zero)?;
                let one_row = match flat {
                    true => {
                        let last = g.b.build_int_add(first, g.i64(width_i - 1), "plast")?;
                        g.b.build_int_compare(
                            IntPredicate::SLT,
                            last,
                            g.i64(extent as i64),
                            "whole",
                        )?
                    }
                    false => {
                        let u_last = g.b.build_int_add(f.vars[&u], g.i64(width_i - 1), "ulast")?;
                        g.b.build_int_compare(
                            IntPredicate::SLT,
                            u_last,
                            g.i64(nu as i64),
                            "onerow",
                        )?
                    }
                };
                let v16 = f32t.vec_type(width as u32);
                g.nest(&mut f, &k_vars, &mut |g, f| {
                    // Both ends inside the buffer: then every lane between is.
                    bind_lane(g, f, zero)?;
                    let (first, in0) = g.load_address(f, buffer, index, checked)?;
                    bind_lane(g, f, g.i64(width_i - 1))?;
                    let (_, in1) = g.load_address(f, buffer, index, checked)?;
                    let mut fast = one_row;
                    for ok in [in0, in1].into_iter().flatten() {
                        fast = g.b.build_and(fast, ok, "fast")?;
                    }
                    g.if_else(
                        f,
                        fast,
                        ["panel.vec", "panel.lanes", "panel.done"],
                        |g, f| {
                            let x = g.b.build_load(v16, first, "row")?;
                            set_align(x, 4)?;
                            let k = g.index(f, &kidx)?;
                            let off = g.b.build_int_mul(k, g.i64(width_i), "o")?;
                            let off = g.b.build_int_add(off, base, "o")?;
                            let p = unsafe { g.b.build_in_bounds_gep(f32t, dst_ptr, &[off], "p")? };
                            let st = g.b.build_store(p, x)?;
                            st.set_alignment(4)
                                .map_err(|e| CodegenError::Invalid(e.to_string()))?;
                            Ok(())
                        },
                        |g, f| lanes(g, f),
                    )
                })?;
            }
            None => g.nest(&mut f, &k_vars, &mut |g, f| lanes(g, f))?,
        }
    } else {
        // Each lane reads along k: every lane, then its k values.
        g.range_loop(&mut f, zero, w, |g, f, lane| {
            let valid = lane_pos(g, f, lane)?;
            g.nest(f, &k_vars, &mut |g, f| store(g, f, lane, valid))
        })?;
    }
    let phase = if side == Side::A { "packA" } else { "packB" };
    end_inner(g, phase, f)
}

/// Whether a panel of `width` lanes (2 to 16: a B panel, or an A panel of up to 6 rows) of the
/// operand `expr` can be copied as one vector per k: the operand is one f32 load whose element
/// offset is affine in the lane variable (the last of `vars`) with coefficient 1 (a row-major
/// operand, a stride-1 convolution's im2col row, a 1x1 convolution's pixels as A).
/// Returns the load's buffer, index, and whether its bounds are checked (a fill value).
fn vector_panel<'e>(
    g: &Gen<'_, '_>,
    expr: &'e Expr,
    vars: &[(Var, usize)],
    width: usize,
) -> Option<(BufferId, &'e [Index], bool)> {
    let &(u, _) = vars.last()?;
    let Expr::Load {
        buffer,
        index,
        fill,
    } = expr
    else {
        return None;
    };
    let buf = g.p.buffer(*buffer);
    if !(2..=NR).contains(&width) || buf.dtype != DType::F32 {
        return None;
    }
    (offset_coeff(index, &buf.strides, u)? == 1).then_some((
        *buffer,
        index.as_slice(),
        fill.is_some(),
    ))
}

/// Set the alignment of a load instruction's value.
fn set_align(x: BasicValueEnum<'_>, align: u32) -> R<()> {
    x.as_instruction_value()
        .ok_or_else(|| CodegenError::Invalid("a load without its instruction".into()))?
        .set_alignment(align)
        .map_err(|e| CodegenError::Invalid(e.to_string()))
}

/// The micro-kernel: `c[mr][NR] (+)= Σ_k a[k][mr] ⊗ b[k][NR]` over `k < kn`, adding to `c`'s
/// contents when `accumulate` is nonzero (one per module, `mr` and kind). Packed A:
/// `(a, b, kn, c, accumulate)`, row `i` at `k` is `a[k * mr + i]`; a direct A (see
/// [`Direct`]): `(bases, b, kn, c, accumulate, koff)`, row `i` at `k` is
/// `bases[i][koff[k]]`; a direct B: `(a, base, kn, c, accumulate, koff)`, the 16 columns at `k`
/// are `base[koff[k]..][..16]`.
fn ukernel<'ctx>(g: &mut Gen<'_, 'ctx>, mr: usize, direct: Option<Side>) -> R<FunctionValue<'ctx>> {
    let name = &match direct {
        None => format!("tf.ukernel.{mr}x{NR}"),
        Some(Side::A) => format!("tf.ukernel.direct.{mr}x{NR}"),
        Some(Side::B) => format!("tf.ukernel.directb.{mr}x{NR}"),
    };
    let (direct_a, direct_b) = (direct == Some(Side::A), direct == Some(Side::B));
    if let Some(f) = g.module.get_function(name) {
        return Ok(f);
    }
    let ctx = g.ctx;
    let p = ctx.ptr_type(AddressSpace::default());
    let i64t = ctx.i64_type();
    let f32t = ctx.f32_type();
    let v8 = f32t.vec_type(8);
    let mut params = vec![p.into(), p.into(), i64t.into(), p.into(), i64t.into()];
    if direct.is_some() {
        params.push(p.into());
    }
    let f = g.module.add_function(
        name,
        ctx.void_type().fn_type(&params, false),
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
    // A direct A's row pointers, loaded once.
    let bases: Vec<_> = if direct_a {
        (0..mr)
            .map(|i| -> R<_> {
                let at = i64t.const_int(i as u64, false);
                let slot = unsafe { bld.build_in_bounds_gep(p, a, &[at], "slot")? };
                Ok(bld.build_load(p, slot, "base")?.into_pointer_value())
            })
            .collect::<R<_>>()?
    } else {
        Vec::new()
    };
    let koff = f.get_nth_param(5).map(|k| k.into_pointer_value());
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
    let ko = match koff {
        Some(koff) => {
            let i32t = ctx.i32_type();
            let kp = unsafe { bld.build_in_bounds_gep(i32t, koff, &[kv], "kp")? };
            let o = bld.build_load(i32t, kp, "ko")?.into_int_value();
            Some(bld.build_int_s_extend(o, i64t, "ko")?)
        }
        None => None,
    };
    // B's row at k: packed, `b + k * NR` (aligned); a direct B, `b + koff[k]`.
    let (boff, b_align) = match ko {
        Some(ko) if direct_b => (ko, 4),
        _ => (
            bld.build_int_mul(kv, i64t.const_int(NR as u64, false), "boff")?,
            32,
        ),
    };
    let bptr0 = unsafe { bld.build_in_bounds_gep(f32t, b, &[boff], "b0")? };
    let boff1 = bld.build_int_add(boff, i64t.const_int(8, false), "boff1")?;
    let bptr1 = unsafe { bld.build_in_bounds_gep(f32t, b, &[boff1], "b1")? };
    let load_v = |ptr| -> R<VectorValue<'ctx>> {
        let v = bld.build_load(v8, ptr, "bv")?;
        if let Some(i) = v.as_instruction_value() {
            let _ = i.set_alignment(b_align);
        }
        Ok(v.into_vector_value())
    };
    let b0 = load_v(bptr0)?;
    let b1 = load_v(bptr1)?;
    let mut next: Vec<BasicValueEnum<'ctx>> = Vec::new();
    for i in 0..mr {
        let ap = match ko {
            Some(ko) if direct_a => unsafe {
                bld.build_in_bounds_gep(f32t, bases[i], &[ko], "ap")?
            },
            _ => {
                let aoff = bld.build_int_mul(kv, i64t.const_int(mr as u64, false), "aoff")?;
                let o = bld.build_int_add(aoff, i64t.const_int(i as u64, false), "ai")?;
                unsafe { bld.build_in_bounds_gep(f32t, a, &[o], "ap")? }
            }
        };
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

/// Claim one of a fused B's `slots` (a task's panels) in the bit mask at `mask` (zero when no
/// task runs; each task clears its bit when done): the lowest free one, by compare-and-swap.
/// With as many slots as tasks, up to 64, a free one exists whenever fewer tasks than slots
/// run at once; with more threads, a task waits for one.
fn claim_slot<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    f: &mut Fn<'ctx>,
    mask: PointerValue<'ctx>,
    slots: usize,
) -> R<IntValue<'ctx>> {
    let i64t = g.ctx.i64_type();
    let cttz = Intrinsic::find("llvm.cttz")
        .and_then(|i| i.get_declaration(g.module, &[i64t.into()]))
        .ok_or_else(|| CodegenError::Llvm("no llvm.cttz".into()))?;
    let retry = g.ctx.append_basic_block(f.func, "claim");
    let attempt = g.ctx.append_basic_block(f.func, "claim.try");
    let done = g.ctx.append_basic_block(f.func, "claim.done");
    g.b.build_unconditional_branch(retry)?;
    g.b.position_at_end(retry);
    let m = g.b.build_load(i64t, mask, "mask")?;
    let load = m
        .as_instruction_value()
        .ok_or_else(|| CodegenError::Invalid("a load without its instruction".into()))?;
    load.set_atomic_ordering(AtomicOrdering::Monotonic)
        .and_then(|_| load.set_alignment(8))
        .map_err(|e| CodegenError::Invalid(e.to_string()))?;
    let m = m.into_int_value();
    let free = g.b.build_not(m, "free")?;
    let bit = g.b.build_call(
        cttz,
        &[free.into(), g.ctx.bool_type().const_zero().into()],
        "i",
    )?;
    let i = bit
        .try_as_basic_value()
        .basic()
        .ok_or_else(|| CodegenError::Invalid("cttz without a value".into()))?
        .into_int_value();
    let ok =
        g.b.build_int_compare(IntPredicate::ULT, i, g.i64(slots as i64), "free")?;
    g.b.build_conditional_branch(ok, attempt, retry)?;
    g.b.position_at_end(attempt);
    let bit = g.b.build_left_shift(g.i64(1), i, "bit")?;
    let new = g.b.build_or(m, bit, "claimed")?;
    let res = g.b.build_cmpxchg(
        mask,
        m,
        new,
        AtomicOrdering::Acquire,
        AtomicOrdering::Monotonic,
    )?;
    let won = g.b.build_extract_value(res, 1, "won")?.into_int_value();
    g.b.build_conditional_branch(won, done, retry)?;
    g.b.position_at_end(done);
    Ok(i)
}

/// Floats per column of a transposed tile (its `mr` rows, padded to one 8-lane vector).
const TT_ROW: usize = 8;

/// `tt[j][i] = tile[i][j]` for the tile's `mr` rows (`NR` floats each) and its `NR` columns
/// (`TT_ROW` floats each, rows from `mr` on zero): each half of 8 columns as an 8x8 transpose
/// of vector shuffles.
fn transpose_tile<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    tile: PointerValue<'ctx>,
    tt: PointerValue<'ctx>,
    mr: usize,
) -> R<()> {
    let f32t = g.ctx.f32_type();
    let v8 = f32t.vec_type(8);
    let i32t = g.ctx.i32_type();
    let shuffle = |g: &Gen<'_, 'ctx>,
                   a: VectorValue<'ctx>,
                   b: VectorValue<'ctx>,
                   mask: [u32; 8]|
     -> R<VectorValue<'ctx>> {
        let m: Vec<_> = mask
            .iter()
            .map(|&x| i32t.const_int(x as u64, false))
            .collect();
        Ok(g.b.build_shuffle_vector(a, b, VectorType::const_vector(&m), "tr")?)
    };
    for half in 0..NR / 8 {
        let mut rows = Vec::with_capacity(8);
        for i in 0..8 {
            rows.push(if i < mr {
                let p = unsafe {
                    g.b.build_in_bounds_gep(
                        f32t,
                        tile,
                        &[g.i64((i * NR + half * 8) as i64)],
                        "row",
                    )?
                };
                let x = g.b.build_load(v8, p, "row")?;
                set_align(x, 4)?;
                x.into_vector_value()
            } else {
                v8.const_zero()
            });
        }
        let (lo, hi) = ([0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]);
        let mut t = Vec::with_capacity(8);
        for p in 0..4 {
            t.push(shuffle(g, rows[2 * p], rows[2 * p + 1], lo)?);
            t.push(shuffle(g, rows[2 * p], rows[2 * p + 1], hi)?);
        }
        // t[2p] holds rows 2p, 2p+1 of columns 0,1,4,5; t[2p+1] of columns 2,3,6,7.
        let (even, odd) = ([0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]);
        let mut u = Vec::with_capacity(8);
        for (a, b) in [(0, 2), (4, 6)] {
            u.push(shuffle(g, t[a], t[b], even)?);
            u.push(shuffle(g, t[a], t[b], odd)?);
            u.push(shuffle(g, t[a + 1], t[b + 1], even)?);
            u.push(shuffle(g, t[a + 1], t[b + 1], odd)?);
        }
        // u[c] (c < 4) holds rows 0..4 of columns c and c + 4; u[4 + c] rows 4..8.
        let (first, second) = ([0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]);
        for c in 0..4 {
            for (col, mask) in [(c, first), (c + 4, second)] {
                let v = shuffle(g, u[c], u[4 + c], mask)?;
                let at = g.i64(((half * 8 + col) * TT_ROW) as i64);
                let p = unsafe { g.b.build_in_bounds_gep(f32t, tt, &[at], "col")? };
                let st = g.b.build_store(p, v)?;
                st.set_alignment(32)
                    .map_err(|e| CodegenError::Invalid(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// Prefetch the line at `addr` into every cache level, for a read or a write.
fn prefetch<'ctx>(g: &Gen<'_, 'ctx>, addr: PointerValue<'ctx>, write: bool) -> R<()> {
    let ptr_ty = g.ctx.ptr_type(AddressSpace::default());
    let pf = Intrinsic::find("llvm.prefetch")
        .and_then(|i| i.get_declaration(g.module, &[ptr_ty.into()]))
        .ok_or_else(|| CodegenError::Llvm("no llvm.prefetch".into()))?;
    let i32t = g.ctx.i32_type();
    g.b.build_call(
        pf,
        &[
            addr.into(),
            i32t.const_int(write as u64, false).into(),
            i32t.const_int(3, false).into(),
            i32t.const_int(1, false).into(),
        ],
        "",
    )?;
    Ok(())
}

/// The address of a packed operand's K chunk from `k0`: panel `panel` of `panel_len` floats
/// after the batch's `base`, `width` floats per k.
fn packed_chunk<'ctx>(
    g: &Gen<'_, 'ctx>,
    ptr: PointerValue<'ctx>,
    (panel, panel_len): (IntValue<'ctx>, i64),
    base: IntValue<'ctx>,
    k0: IntValue<'ctx>,
    width: usize,
) -> R<PointerValue<'ctx>> {
    let off = g.b.build_int_mul(panel, g.i64(panel_len), "poff")?;
    let off = g.b.build_int_add(off, base, "poff")?;
    let kw = g.b.build_int_mul(k0, g.i64(width as i64), "koff")?;
    let off = g.b.build_int_add(off, kw, "poff")?;
    Ok(unsafe {
        g.b.build_in_bounds_gep(g.ctx.f32_type(), ptr, &[off], "chunk")?
    })
}

/// A compute task: `task = (batch * mblocks + mb) * nblocks + nb`.
fn compute_fn<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    bufs: &[BufferId],
    (ap, bp): (BufferId, BufferId),
    (form, d): (&Form<'_>, &Plan),
    fused: Option<(FunctionValue<'ctx>, BufferId, usize)>,
    direct: Option<&Direct>,
) -> R<String> {
    let pack_b = fused.map(|f| f.0);
    let mr = form.mr;
    let uk = ukernel(g, mr, direct.map(|d| d.side))?;
    // A direct operand's K offsets, a constant table.
    let koff = match direct {
        Some(d) => {
            let i32t = g.ctx.i32_type();
            let vals: Vec<_> = d
                .koff
                .iter()
                .map(|&o| i32t.const_int(o as u64, true))
                .collect();
            let table = g.module.add_global(
                i32t.array_type(vals.len() as u32),
                None,
                &format!("{name}.koff"),
            );
            table.set_initializer(&i32t.const_array(&vals));
            table.set_constant(true);
            table.set_linkage(Linkage::Internal);
            Some(table.as_pointer_value())
        }
        None => None,
    };
    // The epilogue indexes by the flat row m and column n of the tile element: an index that
    // recombines the M (or N) variables (a row-major store of a conv's pixels) becomes m (n)
    // again, without per-element division, and the column loop vectorizes.
    let (m_flat, n_flat, epilogue_stages) = flat_epilogue(form, d.m, d.n);
    let blocks = d.blocks;
    let (mblocks, nblocks) = (blocks.m, blocks.n);
    let mut all = bufs.to_vec();
    all.push(ap);
    all.push(bp);
    if let Some((_, mask, _)) = fused {
        all.push(mask);
    }
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
    // A direct A: the row pointers of the block's panels.
    let ptr_t = g.ctx.ptr_type(AddressSpace::default());
    let direct_a = direct.filter(|d| d.side == Side::A);
    let direct_b = direct.filter(|d| d.side == Side::B);
    let bases = match direct_a {
        Some(_) => {
            Some(g.entry_alloca(&f, ptr_t.array_type((bp_n * mr) as u32).into(), "bases")?)
        }
        None => None,
    };
    // `task = (batch * mblocks + mb) * nblocks + nb`; with a fused B, `batch * nblocks + nb`
    // and the task runs every `mb`.
    let nb =
        g.b.build_int_unsigned_rem(task, g.i64(nblocks as i64), "nb")?;
    let rest =
        g.b.build_int_unsigned_div(task, g.i64(nblocks as i64), "rest")?;
    let (mb, bi) = if pack_b.is_some() {
        (None, rest)
    } else {
        (
            Some(g.b.build_int_unsigned_rem(rest, g.i64(mblocks as i64), "mb")?),
            g.b.build_int_unsigned_div(rest, g.i64(mblocks as i64), "bi")?,
        )
    };
    bind_flat(g, &mut f, bi, &form.batch_vars)?;
    let panel_a = (d.k * mr) as i64;
    let panel_b = (d.k * NR) as i64;
    let q0 = g.b.build_int_mul(nb, g.i64(bq_n as i64), "q0")?;
    let q1 = g.b.build_int_add(q0, g.i64(bq_n as i64), "q1")?;
    let q1 = clamp(g, q1, d.np as i64)?;
    let a_base = if !d.a_const {
        g.b.build_int_mul(bi, g.i64(d.mp as i64 * panel_a), "abase")?
    } else {
        g.i64(0)
    };
    let b_base = if !d.b_const {
        g.b.build_int_mul(bi, g.i64(d.np as i64 * panel_b), "bbase")?
    } else {
        g.i64(0)
    };
    let (ap_ptr, bp_ptr) = (f.ptrs[&ap], f.ptrs[&bp]);
    // A fused B: this task packs each of its panels just before its first use (pack task
    // `batch * np + q`), and first prefetches the lines the next panel's packing reads, so that
    // they arrive while the micro-kernels run over this one. Packed all at once, a 1x1
    // convolution's panels (one line in each of K channel planes: more streams than the
    // hardware prefetcher follows) took a third of the task's time waiting on memory.
    // The task's slot of packed B panels: `q0..q1` at its start.
    let slot = match fused {
        Some((_, mask, slots)) => {
            let mask = f.ptrs[&mask];
            let i = claim_slot(g, &mut f, mask, slots)?;
            let at =
                g.b.build_int_mul(i, g.i64(bq_n as i64 * panel_b), "slotoff")?;
            let base = unsafe { g.b.build_in_bounds_gep(f32t, bp_ptr, &[at], "slot")? };
            Some((mask, i, base))
        }
        None => None,
    };
    let slot_panel = |g: &Gen<'_, 'ctx>, q: IntValue<'ctx>, k0: IntValue<'ctx>| -> R<_> {
        let (_, _, base) = slot.expect("a fused B's slot");
        let ql = g.b.build_int_sub(q, q0, "ql")?;
        packed_chunk(g, base, (ql, panel_b), g.i64(0), k0, NR)
    };
    let pack_args: Vec<inkwell::values::BasicMetadataValueEnum<'ctx>> =
        bufs.iter().map(|b| f.ptrs[b].into()).collect();
    let pack_first = g.b.build_int_mul(bi, g.i64(d.np as i64), "pbase")?;
    let pack_panel = |g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>, q: IntValue<'ctx>| -> R<()> {
        let Some(pack) = pack_b else {
            return Ok(());
        };
        if let Some((buffer, index, _)) = vector_panel(g, form.b, &form.n_vars, NR) {
            let next = g.b.build_int_add(q, g.i64(1), "qnext")?;
            let next = clamp(g, next, d.np as i64 - 1)?;
            let n = g.b.build_int_mul(next, g.i64(NR as i64), "nnext")?;
            let n = clamp(g, n, d.n as i64 - 1)?;
            bind_flat(g, f, n, &form.n_vars)?;
            g.nest(f, &form.k_vars, &mut |g, f| {
                let (a, _) = g.load_address(f, buffer, index, false)?;
                prefetch(g, a, false)?;
                let last = unsafe { g.b.build_gep(f32t, a, &[g.i64(NR as i64 - 1)], "plast")? };
                prefetch(g, last, false)
            })?;
        }
        let t = g.b.build_int_add(pack_first, q, "ptask")?;
        let mut a = pack_args.clone();
        a.push(slot_panel(g, q, g.i64(0))?.into());
        a.push(t.into());
        g.b.build_call(pack, &a, "")?;
        Ok(())
    };
    // An epilogue that reads a tensor of the output's shape (a residual) along rows of the
    // output prefetches, for each tile, what the tile two panels on reads and writes: each
    // task's tiles touch one line in each of up to 48 rows (output channels) at a time, more
    // streams than the hardware prefetcher follows (ResNet's 64->256 1x1 conv with its
    // residual add: 2.27 -> 1.34 ms; one panel on: 2.05). Without such a load, or with the
    // rows along the output (swapped), prefetching changed nothing measurable.
    let mut pf_targets: Vec<(BufferId, Vec<Index>, bool)> = Vec::new();
    let along_n = |ix: Option<&Index>| {
        let mut vs = Vec::new();
        if let Some(ix) = ix {
            ix.vars(&mut vs);
        }
        vs.contains(&n_flat)
    };
    for st in &epilogue_stages {
        if let terafab_ir::kernel::Stage::Store {
            buffer,
            index,
            value,
            ..
        } = st
            && along_n(index.last())
        {
            pf_targets.push((*buffer, index.clone(), true));
            value.walk(&mut |x| {
                if let Expr::Load {
                    buffer,
                    index,
                    fill: None,
                } = x
                    && along_n(index.last())
                {
                    pf_targets.push((*buffer, index.clone(), false));
                }
            });
        }
    }
    let pf_dist = match pf_targets.iter().any(|t| !t.2) {
        true => 2 * NR,
        false => 0,
    };
    // An epilogue whose stores all run along the tile's rows (unit stride in m: a swapped
    // convolution's output, pixels along m) runs column by column over a transposed copy of
    // the tile, so that each column's rows are contiguous in the copy and in the output: row by
    // row, every element was a strided scalar store and, with a residual, a strided load
    // (ResNet's 256->1024 1x1 conv over 14x14 with its residual spent a fifth of its time in
    // the epilogue).
    let columns_outer = match mr <= TT_ROW
        && !epilogue_stages.is_empty()
        && epilogue_stages.iter().all(|st| match st {
            terafab_ir::kernel::Stage::Store { buffer, index, .. } => {
                // The element offset as one simplified index (its dims may split m).
                let flat = terafab_ir::kernel::offset_index(index, &g.p.buffer(*buffer).strides);
                let extent = |v: Var| match v {
                    v if v == m_flat => Some(d.m),
                    v if v == n_flat => Some(d.n),
                    v => form.batch_vars.iter().find(|b| b.0 == v).map(|b| b.1),
                };
                let flat = terafab_ir::kernel::split::simplify(&flat, &extent);
                flat.coeff(m_flat) == Some(1)
            }
            _ => false,
        }) {
        true => {
            let tt = g.entry_alloca(&f, f32t.array_type((NR * TT_ROW) as u32).into(), "tt")?;
            if let Some(i) = tt.as_instruction() {
                let _ = i.set_alignment(32);
            }
            Some(tt)
        }
        false => None,
    };
    // One block of A panels (`mb`) over the task's columns.
    let block = |g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>, mb: IntValue<'ctx>| -> R<()> {
        let p0 = g.b.build_int_mul(mb, g.i64(bp_n as i64), "p0")?;
        let p1 = g.b.build_int_add(p0, g.i64(bp_n as i64), "p1")?;
        let p1 = clamp(g, p1, d.mp as i64)?;
        // A direct A: each row's pointer into its input (or frame); rows past M repeat the
        // last row (their results are never stored).
        if let (Some(da), Some(bases)) = (direct_a, bases) {
            let src = match da.frame {
                Some(_) => f.ptrs[&ap],
                None => f.ptrs[&da.src],
            };
            let poff = da.poff(&form.m_vars);
            g.range_loop(f, p0, p1, |g, f, pidx| {
                for i in 0..mr {
                    let m = g.b.build_int_mul(pidx, g.i64(mr as i64), "m")?;
                    let m = g.b.build_int_add(m, g.i64(i as i64), "m")?;
                    let m = clamp(g, m, d.m as i64 - 1)?;
                    bind_flat(g, f, m, &form.m_vars)?;
                    let o = g.index(f, &poff)?;
                    let row = unsafe { g.b.build_in_bounds_gep(f32t, src, &[o], "row")? };
                    let at = g.b.build_int_sub(pidx, p0, "pl")?;
                    let at = g.b.build_int_mul(at, g.i64(mr as i64), "at")?;
                    let at = g.b.build_int_add(at, g.i64(i as i64), "at")?;
                    let slot = unsafe { g.b.build_in_bounds_gep(ptr_t, bases, &[at], "slot")? };
                    g.b.build_store(slot, row)?;
                }
                Ok(())
            })?;
        }
        // The tile of panels (p, q) in the block.
        let tile_at = |g: &Gen<'_, 'ctx>, p: IntValue<'ctx>, q: IntValue<'ctx>| -> R<_> {
            let pl = g.b.build_int_sub(p, p0, "pl")?;
            let ql = g.b.build_int_sub(q, q0, "ql")?;
            let t = g.b.build_int_mul(pl, g.i64(bq_n as i64), "t")?;
            let t = g.b.build_int_add(t, ql, "t")?;
            let o = g.b.build_int_mul(t, g.i64(tile_len), "to")?;
            Ok(unsafe { g.b.build_in_bounds_gep(f32t, cblock, &[o], "tile")? })
        };
        // The epilogue of one tile, over its valid part.
        let tile_epilogue = |g: &mut Gen<'_, 'ctx>,
                             f: &mut Fn<'ctx>,
                             pidx: IntValue<'ctx>,
                             q: IntValue<'ctx>|
         -> R<()> {
            let tile = tile_at(g, pidx, q)?;
            let m0 = g.b.build_int_mul(pidx, g.i64(mr as i64), "m0")?;
            let n0 = g.b.build_int_mul(q, g.i64(NR as i64), "n0")?;
            // A tile's valid rows and columns: whole where the extent has no partial
            // panel (a constant bound, which LLVM unrolls and vectorizes with whole
            // vector stores; the clamped bound left `n` frozen and the stores scalar).
            let (mend, nend) = (
                match d.m % mr {
                    0 => g.i64(mr as i64),
                    _ => clamp(
                        g,
                        g.b.build_int_sub(g.i64(d.m as i64), m0, "mrem")?,
                        mr as i64,
                    )?,
                },
                match d.n % NR {
                    0 => g.i64(NR as i64),
                    _ => clamp(
                        g,
                        g.b.build_int_sub(g.i64(d.n as i64), n0, "nrem")?,
                        NR as i64,
                    )?,
                },
            );
            let zero = g.i64(0);
            // One element of the epilogue: row i, column j of the tile, its value at offset
            // `o` of `src` (the tile, or its transposed copy).
            let element = |g: &mut Gen<'_, 'ctx>,
                           f: &mut Fn<'ctx>,
                           (i, j): (IntValue<'ctx>, IntValue<'ctx>),
                           src: PointerValue<'ctx>,
                           o: IntValue<'ctx>|
             -> R<()> {
                for (v, at, x0, n) in [(m_flat, i, m0, d.m), (n_flat, j, n0, d.n)] {
                    let x = g.b.build_int_add(x0, at, "x")?;
                    f.vars.insert(v, x);
                    f.extents.insert(v, n);
                }
                let tp = unsafe { g.b.build_in_bounds_gep(f32t, src, &[o], "tp")? };
                let t = g.b.build_load(f32t, tp, "t")?;
                f.locals.insert(form.local, (t, DType::F32));
                g.stages(f, &epilogue_stages)
            };
            // Row by row.
            let epilogue = |g: &mut Gen<'_, 'ctx>,
                            f: &mut Fn<'ctx>,
                            mend: IntValue<'ctx>,
                            nend: IntValue<'ctx>|
             -> R<()> {
                g.range_loop(f, zero, mend, |g, f, i| {
                    g.range_loop(f, zero, nend, |g, f, j| {
                        let o = g.b.build_int_mul(i, g.i64(NR as i64), "o")?;
                        let o = g.b.build_int_add(o, j, "o")?;
                        element(g, f, (i, j), tile, o)
                    })
                })
            };
            match columns_outer {
                None => epilogue(g, f, mend, nend)?,
                Some(tt) => {
                    transpose_tile(g, tile, tt, mr)?;
                    // Each column's rows, from the transposed copy.
                    let at_column = |g: &mut Gen<'_, 'ctx>,
                                     f: &mut Fn<'ctx>,
                                     i: IntValue<'ctx>,
                                     j: IntValue<'ctx>|
                     -> R<()> {
                        let o = g.b.build_int_mul(j, g.i64(TT_ROW as i64), "o")?;
                        let o = g.b.build_int_add(o, i, "o")?;
                        element(g, f, (i, j), tt, o)
                    };
                    // A whole tile's rows are emitted one after the other (straight-line code
                    // the SLP vectorizer turns into vector loads and stores), a part's loop.
                    let by_columns = |g: &mut Gen<'_, 'ctx>,
                                      f: &mut Fn<'ctx>,
                                      rows: Option<IntValue<'ctx>>,
                                      nend: IntValue<'ctx>|
                     -> R<()> {
                        g.range_loop(f, zero, nend, |g, f, j| match rows {
                            None => {
                                for i in 0..mr {
                                    at_column(g, f, g.i64(i as i64), j)?;
                                }
                                Ok(())
                            }
                            Some(mend) => {
                                g.range_loop(f, zero, mend, |g, f, i| at_column(g, f, i, j))
                            }
                        })
                    };
                    let rows =
                        g.b.build_int_compare(IntPredicate::EQ, mend, g.i64(mr as i64), "rows")?;
                    let cols =
                        g.b.build_int_compare(IntPredicate::EQ, nend, g.i64(NR as i64), "cols")?;
                    let whole = g.b.build_and(rows, cols, "whole")?;
                    g.if_else(
                        f,
                        whole,
                        ["tile.whole", "tile.part", "tile.stored"],
                        |g, f| by_columns(g, f, None, g.i64(NR as i64)),
                        |g, f| by_columns(g, f, Some(mend), nend),
                    )?;
                }
            }
            if pf_dist > 0 {
                // What the epilogue two tiles on reads and writes (each row's line).
                let nn = g.b.build_int_add(n0, g.i64(pf_dist as i64), "pfn")?;
                let nn = clamp(g, nn, d.n as i64 - 1)?;
                g.range_loop(f, zero, mend, |g, f, i| {
                    let mi = g.b.build_int_add(m0, i, "m")?;
                    f.vars.insert(m_flat, mi);
                    f.extents.insert(m_flat, d.m);
                    f.vars.insert(n_flat, nn);
                    f.extents.insert(n_flat, d.n);
                    for (buffer, index, write) in &pf_targets {
                        let (a, _) = g.load_address(f, *buffer, index, false)?;
                        prefetch(g, a, *write)?;
                    }
                    Ok(())
                })?;
            }
            Ok(())
        };
        // K in chunks of KC: the chunk of a B panel (KC x NR) stays in L1 while every A panel of
        // the block passes over it.
        // The chunks are of equal length (K = 576 is 3 x 192, not 256 + 256 + 64).
        let (chunks, chunk) = (d.chunks, d.chunk as i64);
        let (zero, nchunks) = (g.i64(0), g.i64(chunks as i64));
        g.range_loop(f, zero, nchunks, |g, f, kc| {
            let k0 = g.b.build_int_mul(kc, g.i64(chunk), "k0")?;
            let krem = g.b.build_int_sub(g.i64(d.k as i64), k0, "krem")?;
            let klen = clamp(g, krem, chunk)?;
            g.range_loop(f, q0, q1, |g, f, q| {
                // Packed B: the panel's chunk; a direct B: the panel's first column in its
                // input (or frame), the chunk's K offsets apply in the micro-kernel.
                let bptr = match direct_b {
                    Some(db) => {
                        let src = match db.frame {
                            Some(_) => bp_ptr,
                            None => f.ptrs[&db.src],
                        };
                        let n0 = g.b.build_int_mul(q, g.i64(NR as i64), "n0")?;
                        bind_flat(g, f, n0, &form.n_vars)?;
                        let o = g.index(f, &db.poff(&form.n_vars))?;
                        unsafe { g.b.build_in_bounds_gep(f32t, src, &[o], "bpanel")? }
                    }
                    None if slot.is_some() => slot_panel(g, q, k0)?,
                    None => packed_chunk(g, bp_ptr, (q, panel_b), b_base, k0, NR)?,
                };
                if pack_b.is_some() {
                    let first_mb = g.b.build_int_compare(IntPredicate::EQ, mb, zero, "mb0")?;
                    let first_kc = g.b.build_int_compare(IntPredicate::EQ, kc, zero, "kc0")?;
                    let first = g.b.build_and(first_mb, first_kc, "first")?;
                    g.if_else(
                        f,
                        first,
                        ["panel.pack", "panel.packed", "panel.ready"],
                        |g, f| pack_panel(g, f, q),
                        |_, _| Ok(()),
                    )?;
                }
                g.range_loop(f, p0, p1, |g, f, pidx| {
                    let tile = tile_at(g, pidx, q)?;
                    // Packed A: the panel's chunk; a direct A: the panel's row pointers, and
                    // the chunk's K offsets.
                    let a_arg = match bases {
                        Some(bases) => {
                            let at = g.b.build_int_sub(pidx, p0, "pl")?;
                            let at = g.b.build_int_mul(at, g.i64(mr as i64), "at")?;
                            unsafe { g.b.build_in_bounds_gep(ptr_t, bases, &[at], "rows")? }
                        }
                        None => packed_chunk(g, ap_ptr, (pidx, panel_a), a_base, k0, mr)?,
                    };
                    let mut args: Vec<inkwell::values::BasicMetadataValueEnum<'ctx>> = vec![
                        a_arg.into(),
                        bptr.into(),
                        klen.into(),
                        tile.into(),
                        kc.into(),
                    ];
                    if let Some(koff) = koff {
                        let kt = g.ctx.i32_type();
                        args.push(
                            unsafe { g.b.build_in_bounds_gep(kt, koff, &[k0], "koff")? }.into(),
                        );
                    }
                    g.b.build_call(uk, &args, "")?;
                    // After the last chunk, the tile's epilogue while the tile is in L1 (the
                    // small CNN's 32-channel conv ran 3% faster than with the block's tiles
                    // finished after its last chunk).
                    let last = g.b.build_int_compare(
                        IntPredicate::EQ,
                        kc,
                        g.i64(chunks as i64 - 1),
                        "last",
                    )?;
                    g.if_else(
                        f,
                        last,
                        ["tile.epilogue", "tile.next", "tile.done"],
                        |g, f| tile_epilogue(g, f, pidx, q),
                        |_, _| Ok(()),
                    )
                })
            })
        })?;
        Ok(())
    };
    match mb {
        Some(mb) => block(g, &mut f, mb)?,
        None => g.range_loop(&mut f, g.i64(0), g.i64(mblocks as i64), |g, f, mb| {
            block(g, f, mb)
        })?,
    }
    if let Some((mask, i, _)) = slot {
        let bit = g.b.build_left_shift(g.i64(1), i, "bit")?;
        let keep = g.b.build_not(bit, "keep")?;
        g.b.build_atomicrmw(AtomicRMWBinOp::And, mask, keep, AtomicOrdering::Release)?;
    }
    let inner = end_inner(g, "compute", f)?;
    trampoline(g, name, inner, &all)?;
    Ok(format!("{name}.task"))
}

/// An operand read in place by the micro-kernel instead of packed: an activation (one f32
/// load, packed every run otherwise) whose element offset is affine in the side's variables
/// (M for A, N for B) and the K variables, `offset = poff(row) + koff(k)`. A stride-1 or
/// strided convolution's im2col matrix, a 1x1 convolution's input, a row-major or transposed
/// matrix all are, as A.
///
/// As A, the micro-kernel broadcasts row `i` of its tile at `k` from `base_i + koff[k]`, with
/// `base_i = src + poff(m0 + i)` computed once per block and `koff` a constant table: no
/// im2col matrix is ever written, which on this 2-core VM cost 10-20% of a 3x3 convolution
/// (its packing was bound by memory bandwidth, not by the copy code).
///
/// As B, the panel's 16 columns must be 16 consecutive elements (the last N variable has
/// unit coefficient and a multiple of 16 values, so no panel crosses a row): the micro-kernel
/// loads them at `k` as two vectors from `base_q + koff[k]`, `base_q = src + poff(n0)`. A
/// stride-1 convolution over rows of 16, 32, 64... pixels (the small CNN's 32-channel 3x3 conv
/// spent 16% of its time packing B). A stride-`s` one reads a frame whose rows are split in
/// `s` phases (position `j` at `(j % s) * (row / s) + j / s`): pixel `ow` at kernel offset `t`
/// reads `s * ow + t`, which is `ow + t / s` in phase `t % s`, consecutive in `ow` (ResNet's
/// 7x7 stride-2 stem ran 4.9 -> 2.8 ms; its B was packed lane by lane, or, swapped, its
/// epilogue stored strided).
///
/// A load with a fill that can leave its buffer (a padded convolution) reads a *frame* instead:
/// a copy of the part of the input the load can reach, the fill value around it, made once per
/// run by a `padA` (`padB`) phase (the input's size, not the K-times larger im2col), so that no
/// bounds are checked in the micro-kernel.
struct Direct {
    side: Side,
    src: BufferId,
    frame: Option<Frame>,
    /// The element offset's coefficient of each of the side's variables (`form.m_vars` or
    /// `form.n_vars` order).
    coef: Vec<i64>,
    /// The element offset of each flat K index (`k_flat` order), constant part included.
    koff: Vec<i32>,
}

impl Direct {
    fn of(
        p: &terafab_ir::kernel::KernelProgram,
        form: &Form<'_>,
        plan: &Plan,
        side: Side,
    ) -> Option<Direct> {
        let (expr, side_vars, rows, constant) = match side {
            Side::A => (form.a, &form.m_vars, plan.m, plan.a_const),
            Side::B => (form.b, &form.n_vars, plan.n, plan.b_const),
        };
        if constant || plan.batch != 1 || plan.k > 1 << 20 {
            return None;
        }
        // B's panels: 16 consecutive columns of one row of the last N variable.
        if side == Side::B && side_vars.last().is_none_or(|&(_, n)| n % NR != 0) {
            return None;
        }
        let Expr::Load {
            buffer,
            index,
            fill,
        } = expr
        else {
            return None;
        };
        let buf = p.buffer(*buffer);
        if buf.dtype != DType::F32 || index.len() != buf.shape.len() || index.is_empty() {
            return None;
        }
        let vars: Vec<(Var, usize)> = [side_vars, &form.k_vars, &form.batch_vars]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        let extent = |v: Var| vars.iter().find(|x| x.0 == v).map(|x| x.1);
        // Each dim's index affine in every variable it uses, with a constant part.
        let mut consts = Vec::new();
        let mut ranges = Vec::new();
        for ix in index {
            let mut vs = Vec::new();
            ix.vars(&mut vs);
            for v in &vs {
                ix.coeff(*v)?;
                extent(*v)?;
            }
            let Index::Const(c) = ix.subst(&|_| Index::Const(0)) else {
                return None;
            };
            consts.push(c);
            ranges.push(ix.interval(&extent)?);
        }
        // Only where packing would expand the input (an im2col matrix: each input element in
        // several rows or columns); a plain matrix packs at the cost of one copy, and its
        // packed panels are read back faster than the matrix itself.
        let reach: usize = ranges.iter().map(|r| (r.1 - r.0 + 1) as usize).product();
        if rows * plan.k < 2 * reach {
            return None;
        }
        let leaves = ranges
            .iter()
            .zip(&buf.shape)
            .any(|(&(lo, hi), &n)| lo < 0 || hi >= n as i64);
        // A B panel's 16 columns are consecutive elements: the last N variable `u` has
        // coefficient 1 on the input's last dim (unit stride), or `s` > 1 on a frame whose
        // last dim is split in `s` phases (a stride-`s` convolution: ResNet's 7x7 stride-2
        // stem); `u` on no other dim and no other N variable on the last one.
        let rank = index.len();
        let mut split = 1usize;
        if side == Side::B {
            let &(u, _) = side_vars.last()?;
            let su = index[rank - 1].coeff(u)?;
            let alone = index[..rank - 1].iter().all(|ix| ix.coeff(u) == Some(0))
                && side_vars[..side_vars.len() - 1]
                    .iter()
                    .all(|v| index[rank - 1].coeff(v.0) == Some(0));
            if su > 1 && alone {
                split = su as usize;
            }
        }
        let (frame, strides, shift) = match (leaves || split > 1, fill) {
            (false, _) => (None, buf.strides.clone(), vec![0; rank]),
            (true, None) if leaves => return None,
            (true, fill) => {
                let lo: Vec<i64> = ranges.iter().map(|r| r.0).collect();
                let extents: Vec<usize> = ranges.iter().map(|r| (r.1 - r.0 + 1) as usize).collect();
                let frame = Frame {
                    shape: buf.shape.clone(),
                    strides: buf.strides.clone(),
                    lo: lo.clone(),
                    extents,
                    // Never read where the input has every element the load reaches.
                    fill: fill
                        .clone()
                        .unwrap_or_else(|| terafab_ir::Tensor::scalar(0.0f32)),
                    split,
                };
                let elems = frame.elems();
                if elems > MAX_FRAME || elems > 4 * buf.len() + (1 << 16) {
                    return None;
                }
                let st = frame.frame_strides();
                (Some(frame), st, lo)
            }
        };
        // A variable's coefficient in the element offset (the last dim's divided by the phase
        // count: only `u`'s is nonzero there when split).
        let coef = |v: Var| -> Option<i64> {
            let mut c = 0i64;
            for (d, (ix, &st)) in index.iter().zip(&strides).enumerate() {
                let mut cv = ix.coeff(v)?;
                if d == rank - 1 {
                    cv /= split as i64;
                }
                c = c.checked_add(cv.checked_mul(st as i64)?)?;
            }
            Some(c)
        };
        let side_coef: Vec<i64> = side_vars.iter().map(|v| coef(v.0)).collect::<Option<_>>()?;
        // Row (column) pointers `src + poff(row)` must lie inside the buffer (in-bounds
        // address arithmetic): no variable of the side may run backwards (a reversed input
        // fused into the load).
        if side_coef.iter().any(|&c| c < 0) {
            return None;
        }
        // A B panel's 16 columns are 16 consecutive elements.
        if side == Side::B && side_coef.last() != Some(&1) {
            return None;
        }
        // K offsets in `k_flat` order (row-major over the K variables, the last fastest): each
        // dim's position at row (column) 0, its place in the frame's (phase-split) row on the
        // last dim.
        let k_coef: Vec<Vec<i64>> = form
            .k_vars
            .iter()
            .map(|v| index.iter().map(|ix| ix.coeff(v.0)).collect::<Option<_>>())
            .collect::<Option<_>>()?;
        let base: Vec<i64> = consts.iter().zip(&shift).map(|(&c, &lo)| c - lo).collect();
        let mut pos = vec![base];
        for (&(_, n), c) in form.k_vars.iter().zip(&k_coef) {
            pos = pos
                .iter()
                .flat_map(|p| {
                    (0..n as i64)
                        .map(move |i| p.iter().zip(c).map(|(&x, &cd)| x + i * cd).collect())
                })
                .collect();
        }
        let offset = |p: &Vec<i64>| -> Option<i32> {
            let mut o = 0i64;
            for (d, (&x, &st)) in p.iter().zip(&strides).enumerate() {
                let x = match (&frame, d == rank - 1) {
                    (Some(fr), true) if x >= 0 => fr.in_row(x),
                    _ => x.checked_mul(st as i64)?,
                };
                o = o.checked_add(x)?;
            }
            i32::try_from(o).ok().filter(|o| *o >= 0)
        };
        let koff = pos.iter().map(offset).collect::<Option<Vec<i32>>>()?;
        Some(Direct {
            side,
            src: *buffer,
            frame,
            coef: side_coef,
            koff,
        })
    }

    /// The element offset of a row (column) of the side's variables `vars`, without the
    /// constant part (which is in `koff`).
    fn poff(&self, vars: &[(Var, usize)]) -> Index {
        vars.iter()
            .zip(&self.coef)
            .fold(Index::Const(0), |acc, (&(v, _), &c)| {
                acc.plus(Index::Var(v).times(c))
            })
    }

    /// Bytes of the frame in the scratch region (none when the input is read in place).
    fn frame_bytes(&self) -> usize {
        self.frame.as_ref().map_or(0, |f| f.elems() * 4)
    }
}
