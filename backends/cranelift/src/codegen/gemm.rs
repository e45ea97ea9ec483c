//! Contractions as packed GEMM with a register-blocked f32x4 micro-kernel.
//!
//! The kernel's GEMM form (a sum of products followed by stores at the outer point: matmuls,
//! and convolutions as implicit GEMMs), the plan of panels and blocks and the packed operands'
//! memory are the runtime's ([`terafab_runtime::gemm`], shared with the LLVM backend); this
//! module emits the schedule in Cranelift IR with the tiling [`TILING`]:
//!
//! 1. **Pack** (one task per batch index and panel): `A` into panels of `mr` rows
//!    (`Ap[panel][k][mr]`), `B` into panels of [`NR`] columns (`Bp[panel][k][NR]`),
//!    zero-padded at the edges; the operand expressions (transposes, im2col with padding,
//!    prologue arithmetic) are evaluated only here, by the scalar code of the loop-nest path.
//!    An operand that reads only constants (weights) is packed once, before the first run.
//! 2. **Compute** (one task per batch index, block of A panels and block of B panels): K in
//!    equal chunks of at most `kc`; for each chunk, each B panel of the block (its `kc × NR`
//!    chunk stays in L1), each A panel: the micro-kernel keeps the `mr × NR` tile in `2·mr`
//!    f32x4 registers over the chunk (two vector loads of B, `mr` broadcasts of A and `2·mr`
//!    fused multiply-adds per k) and adds it into the block's tile buffer on the stack. Then
//!    the epilogue runs on each tile: each element becomes the sum's local and the kernel's
//!    store stages run (bias, activation, residual), indexed by the element's flat row and
//!    column; four columns at a time (`f32x4`) on a tile row of full width where every store
//!    is lane-wise and contiguous along the columns (GELU's `erf` included), else element by
//!    element, with the same operations per element either way.
//!
//! Every output element is computed by one task, in a fixed order (K in order, one rounding
//! per fused multiply-add): results do not depend on the thread count.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Value, types,
};
use cranelift_module::Module;
use terafab_ir::DType;
use terafab_ir::kernel::{BufferId, Expr, Kernel, Local, LoopNest, Stage, Var};
use terafab_runtime::gemm::{
    Form, PackedOperands, Plan, RowPack, Tiling, flat_epilogue, form, gemm_nest, k_flat,
    lanes_contiguous,
};

use super::{FnGen, ModuleGen, Phase, R};

/// Columns of the micro-kernel's tile: two f32x4 vectors.
pub const NR: usize = 8;

/// The tiling: 6×8 tiles (12 of the 16 xmm registers accumulate, 2 hold B, 1 the broadcast
/// of A), blocks of 8 A panels and 128 columns, K chunks of at most 256 (a `256 × 8` chunk of
/// a B panel is 8 KiB, of an A panel 6 KiB: L1).
pub const TILING: Tiling = Tiling {
    mr: 6,
    nr: NR,
    mc_panels: 8,
    nc: 128,
    kc: 256,
    min_swap_k: 256,
};

/// Tasks packing an operand whose panels are packed in blocks (see `FnGen::pack`).
const PACK_BLOCKS: usize = 16;

/// The phases of a GEMM kernel, each with its text (with `emit`).
pub(super) struct GemmPhases {
    /// Packing the constant operands, once.
    pub init: Vec<(Phase, Option<String>)>,
    /// Every run: packing the other operands, then computing.
    pub phases: Vec<(Phase, Option<String>)>,
    /// A constant row-major B packed once by the runtime's copy loop (no init phase).
    pub row_packs: Vec<RowPack>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// Lower `k` with the GEMM schedule if it has the GEMM form (else `None`: the loop nest).
pub(super) fn gemm<M: Module>(
    mg: &mut ModuleGen<'_, M>,
    packed: &mut PackedOperands,
    k: &Kernel,
    nest: &LoopNest,
    name: &str,
) -> R<Option<GemmPhases>> {
    let p = mg.p;
    let Some(nest) = gemm_nest(p, nest, &TILING) else {
        return Ok(None);
    };
    let Some(form) = form(p, &nest, &TILING) else {
        return Ok(None);
    };
    let plan = Plan::new(p, &form, &TILING);
    let bufs = FnGen::kernel_buffers(k);
    let (ap, bp) = packed.add(&plan);
    let mut out = GemmPhases {
        init: Vec::new(),
        phases: Vec::new(),
        row_packs: Vec::new(),
    };
    if let Some(rp) = RowPack::of(p, &form, &plan, bp, NR) {
        out.row_packs.push(rp);
    }
    for (side, dst, constant, panels) in [
        (Side::A, ap, plan.a_const, plan.mp),
        (Side::B, bp, plan.b_const, plan.np),
    ] {
        if side == Side::B && !out.row_packs.is_empty() {
            continue;
        }
        let pname = format!("{name}_pack{}", if side == Side::A { "A" } else { "B" });
        let batches = if constant { 1 } else { plan.batch };
        let (func, ntasks, text) = mg.task_fn(k, &pname, |g| {
            g.pack(&form, &plan, side, &bufs, dst, (batches, panels))
        })?;
        let phase = Phase {
            name: pname,
            func,
            ntasks,
        };
        if constant {
            out.init.push((phase, text));
        } else {
            out.phases.push((phase, text));
        }
    }
    let cname = format!("{name}_compute");
    let (func, (), text) = mg.task_fn(k, &cname, |g| g.compute(&form, &plan, &bufs, (ap, bp)))?;
    out.phases.push((
        Phase {
            name: cname,
            func,
            ntasks: plan.compute_tasks() as u64,
        },
        text,
    ));
    Ok(Some(out))
}

impl FnGen<'_, '_> {
    /// Bind `vars` (row-major, the last fastest) from a flat index.
    fn bind_flat(&mut self, flat: Value, vars: &[(Var, usize)]) {
        let mut rest = flat;
        for (i, &(v, n)) in vars.iter().enumerate().rev() {
            self.extents.insert(v, n);
            if i == 0 {
                self.vars.insert(v, rest);
            } else {
                let r = self.b.ins().urem_imm_s(rest, n as i64);
                rest = self.b.ins().udiv_imm_s(rest, n as i64);
                self.vars.insert(v, r);
            }
        }
    }

    /// `min(x, hi)`.
    fn clamp(&mut self, x: Value, hi: i64) -> Value {
        let hi = self.iconst(hi);
        self.b.ins().smin(x, hi)
    }

    /// The pack tasks of one operand (`batches × panels` panels); returns their count.
    ///
    /// Where the panel's lanes read consecutive elements of a row four at a time (B of a
    /// row-major matmul, the im2col rows of a convolution), a task packs a block of panels,
    /// k by k: each k reads one stretch of the operand's row for all the block's panels
    /// (reading a panel's column strip down all of K would touch a page per k). Else a task
    /// packs one panel (`task = batch * panels + panel`), its lanes' variables computed once.
    fn pack(
        &mut self,
        form: &Form<'_>,
        plan: &Plan,
        side: Side,
        bufs: &[BufferId],
        dst: BufferId,
        (batches, panels): (usize, usize),
    ) -> R<u64> {
        let (expr, vars, width): (&Expr, _, usize) = match side {
            Side::A => (form.a, &form.m_vars, plan.mr),
            Side::B => (form.b, &form.n_vars, plan.nr),
        };
        let extent: usize = vars.iter().map(|v| v.1).product();
        let (table, task) = self.entry();
        self.load_ptrs(table, bufs);
        self.load_ptrs(table, &[dst]);
        for (v, n) in &form.k_vars {
            self.extents.insert(*v, *n);
        }
        let kidx = k_flat(&form.k_vars);
        let panel_bytes = (plan.k * width * 4) as i64;
        let dst_ptr = self.ptrs[&dst];
        let k_vars = form.k_vars.clone();
        let zero = self.b.ins().f32const(0.0);
        // Lane `lane` of the panel starting at position `first`: its variables bound (clamped
        // into range), the value (zero past the edge) stored at `at + lane * 4`.
        let lane_store = |g: &mut Self, first: Value, lane: usize, at: Value| -> R<()> {
            let pos = g.b.ins().iadd_imm_s(first, lane as i64);
            let valid =
                g.b.ins()
                    .icmp_imm_s(IntCC::SignedLessThan, pos, extent as i64);
            let safe = g.clamp(pos, extent as i64 - 1);
            g.bind_flat(safe, vars);
            let x = g.expr(expr)?;
            let x = g.b.ins().select(valid, x, zero);
            g.b.ins()
                .store(MemFlagsData::new().with_notrap(), x, at, (lane * 4) as i32);
            Ok(())
        };
        let last = vars.last().copied();
        let vector = match last {
            Some((v, _)) => width % 4 == 0 && self.vector_lanes(expr, v).is_some(),
            None => false,
        };
        if let (true, Some((lv, le))) = (vector, last) {
            // Whether the `len` lanes from position `pos` lie in one row of the last variable
            // and inside the operand.
            let in_one_row = |g: &mut Self, pos: Value, len: usize| {
                let col = g.b.ins().urem_imm_s(pos, le as i64);
                let col_end = g.b.ins().iadd_imm_s(col, len as i64);
                let in_row =
                    g.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThanOrEqual, col_end, le as i64);
                let end = g.b.ins().iadd_imm_s(pos, len as i64);
                let inside =
                    g.b.ins()
                        .icmp_imm_s(IntCC::SignedLessThanOrEqual, end, extent as i64);
                g.b.ins().band(in_row, inside)
            };
            let nblocks = panels.min(PACK_BLOCKS);
            let per = panels.div_ceil(nblocks);
            let nblocks = panels.div_ceil(per);
            let bi = self.b.ins().udiv_imm_s(task, nblocks as i64);
            let pb = self.b.ins().urem_imm_s(task, nblocks as i64);
            self.bind_flat(bi, &form.batch_vars);
            let base = self.b.ins().imul_imm_s(bi, panels as i64 * panel_bytes);
            let base = self.b.ins().iadd(dst_ptr, base);
            let q0 = self.b.ins().imul_imm_s(pb, per as i64);
            let q1 = self.b.ins().iadd_imm_s(q0, per as i64);
            let q1 = self.clamp(q1, panels as i64);
            self.nest(&k_vars, &mut |g| {
                let k = g.index(&kidx)?;
                let koff = g.b.ins().imul_imm_s(k, (width * 4) as i64);
                let kbase = g.b.ins().iadd(base, koff);
                g.range_loop(q0, q1, 1, |g, q| {
                    let first = g.b.ins().imul_imm_s(q, width as i64);
                    let at = g.b.ins().imul_imm_s(q, panel_bytes);
                    let at = g.b.ins().iadd(kbase, at);
                    // A whole panel within one row of the last variable (and inside the
                    // operand): its variables bound once, then one f32x4 per four lanes.
                    let whole = in_one_row(g, first, width);
                    let (whole_bb, groups_bb, done) =
                        (g.b.create_block(), g.b.create_block(), g.b.create_block());
                    g.b.ins().brif(whole, whole_bb, &[], groups_bb, &[]);
                    g.b.switch_to_block(whole_bb);
                    g.bind_flat(first, vars);
                    let c0 = g.vars[&lv];
                    for gi in 0..width / 4 {
                        let c = g.b.ins().iadd_imm_s(c0, (gi * 4) as i64);
                        g.vars.insert(lv, c);
                        let x = g.vexpr(expr, lv)?;
                        g.b.ins()
                            .store(MemFlagsData::new().with_notrap(), x, at, (gi * 16) as i32);
                    }
                    g.b.ins().jump(done, &[]);
                    g.b.switch_to_block(groups_bb);
                    // Else a group of four lanes within one row (and inside the operand) is
                    // one f32x4 (contiguous loads as vectors, padded rows checked at their
                    // ends, strided loads gathered); other groups (across rows, at the edge)
                    // lane by lane.
                    for gi in 0..width / 4 {
                        let pos = g.b.ins().iadd_imm_s(first, (gi * 4) as i64);
                        let fast = in_one_row(g, pos, 4);
                        let (vec_bb, lanes_bb, merge) =
                            (g.b.create_block(), g.b.create_block(), g.b.create_block());
                        g.b.ins().brif(fast, vec_bb, &[], lanes_bb, &[]);
                        g.b.switch_to_block(vec_bb);
                        g.bind_flat(pos, vars);
                        let x = g.vexpr(expr, lv)?;
                        g.b.ins()
                            .store(MemFlagsData::new().with_notrap(), x, at, (gi * 16) as i32);
                        g.b.ins().jump(merge, &[]);
                        g.b.switch_to_block(lanes_bb);
                        for lane in gi * 4..gi * 4 + 4 {
                            lane_store(g, first, lane, at)?;
                        }
                        g.b.ins().jump(merge, &[]);
                        g.b.switch_to_block(merge);
                    }
                    g.b.ins().jump(done, &[]);
                    g.b.switch_to_block(done);
                    Ok(())
                })
            })?;
            self.b.ins().return_(&[]);
            return Ok((batches * nblocks) as u64);
        }
        let bi = self.b.ins().udiv_imm_s(task, panels as i64);
        let panel = self.b.ins().urem_imm_s(task, panels as i64);
        self.bind_flat(bi, &form.batch_vars);
        let base = self.b.ins().imul_imm_s(task, panel_bytes);
        let base = self.b.ins().iadd(dst_ptr, base);
        let first = self.b.ins().imul_imm_s(panel, width as i64);
        // Each lane's position, clamped into range and bound to the side's variables, and
        // whether it is a real row/column (not padding).
        let mut lanes = Vec::new();
        for lane in 0..width {
            let pos = self.b.ins().iadd_imm_s(first, lane as i64);
            let valid = self
                .b
                .ins()
                .icmp_imm_s(IntCC::SignedLessThan, pos, extent as i64);
            let safe = self.clamp(pos, extent as i64 - 1);
            self.bind_flat(safe, vars);
            let values: Vec<(Var, Value)> = vars.iter().map(|(v, _)| (*v, self.vars[v])).collect();
            lanes.push((values, valid));
        }
        let store = |g: &mut Self, lane: usize, (values, valid): &(Vec<(Var, Value)>, Value)| {
            for &(v, x) in values {
                g.vars.insert(v, x);
            }
            let x = g.expr(expr)?;
            let x = g.b.ins().select(*valid, x, zero);
            let k = g.index(&kidx)?;
            let off = g.b.ins().imul_imm_s(k, (width * 4) as i64);
            let at = g.b.ins().iadd(base, off);
            g.b.ins()
                .store(MemFlagsData::new().with_notrap(), x, at, (lane * 4) as i32);
            Ok(())
        };
        if lanes_contiguous(expr, vars) {
            // Consecutive lanes read consecutive elements: every k, then the panel's lanes.
            self.nest(&k_vars, &mut |g| {
                for (lane, l) in lanes.iter().enumerate() {
                    store(g, lane, l)?;
                }
                Ok(())
            })?;
        } else {
            // Each lane reads along k: every lane, then its k values.
            for (lane, l) in lanes.iter().enumerate() {
                self.nest(&k_vars, &mut |g| store(g, lane, l))?;
            }
        }
        self.b.ins().return_(&[]);
        Ok((batches * panels) as u64)
    }

    /// The micro-kernel: `tile[mr][NR] += Σ_{k < klen} a[k][mr] ⊗ b[k][NR]`.
    fn ukernel(&mut self, mr: usize, a: Value, b: Value, klen: Value, tile: Value) -> R<()> {
        let flags = MemFlagsData::trusted();
        // The panels are only read here: their loads are pure to Cranelift's optimizer, which
        // then places each just before its first use (B's two vectors once per k, each
        // broadcast of A just before its two multiply-adds), not all at the top of the body,
        // so the 12 accumulators, 2 vectors of B and one broadcast fit in the 16 registers.
        let panel = flags.with_readonly().with_can_move();
        let halves = NR / 4;
        let accs: Vec<_> = (0..mr * halves)
            .map(|i| {
                let v = self.b.declare_var(types::F32X4);
                let x = self
                    .b
                    .ins()
                    .load(types::F32X4, flags, tile, (i * 16) as i32);
                self.b.def_var(v, x);
                v
            })
            .collect();
        let (ap, bp) = (
            self.b.declare_var(types::I64),
            self.b.declare_var(types::I64),
        );
        self.b.def_var(ap, a);
        self.b.def_var(bp, b);
        let zero = self.iconst(0);
        self.range_loop(zero, klen, 1, |g, _| {
            let (a, b) = (g.b.use_var(ap), g.b.use_var(bp));
            let bv: Vec<Value> = (0..halves)
                .map(|h| g.b.ins().load(types::F32X4, panel, b, (h * 16) as i32))
                .collect();
            for i in 0..mr {
                let x = g.b.ins().load(types::F32, panel, a, (i * 4) as i32);
                let s = g.b.ins().splat(types::F32X4, x);
                for (h, &bh) in bv.iter().enumerate() {
                    let acc = g.b.use_var(accs[i * halves + h]);
                    let r = g.fmadd(s, bh, acc);
                    g.b.def_var(accs[i * halves + h], r);
                }
            }
            let a1 = g.b.ins().iadd_imm_s(a, (mr * 4) as i64);
            let b1 = g.b.ins().iadd_imm_s(b, (NR * 4) as i64);
            g.b.def_var(ap, a1);
            g.b.def_var(bp, b1);
            Ok(())
        })?;
        for (i, &v) in accs.iter().enumerate() {
            let x = self.b.use_var(v);
            self.b.ins().store(flags, x, tile, (i * 16) as i32);
        }
        Ok(())
    }

    /// A compute task: `task = (batch * mblocks + mb) * nblocks + nb`.
    fn compute(
        &mut self,
        form: &Form<'_>,
        d: &Plan,
        bufs: &[BufferId],
        (ap, bp): (BufferId, BufferId),
    ) -> R<()> {
        let (mr, nr) = (d.mr, d.nr);
        let (m_flat, n_flat, epilogue) = flat_epilogue(form, d.m, d.n);
        let blocks = d.blocks;
        let (table, task) = self.entry();
        self.load_ptrs(table, bufs);
        self.load_ptrs(table, &[ap, bp]);
        // The block's tiles: one mr x NR tile per (A panel, B panel) pair.
        let (bp_n, bq_n) = (blocks.m_panels, blocks.n_panels);
        let tile_bytes = (mr * nr * 4) as i64;
        let block_bytes = d.block_floats() * 4;
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            u32::try_from(block_bytes).map_err(|_| {
                crate::CodegenError::Invalid(format!("a GEMM block of {block_bytes} bytes"))
            })?,
            6,
        ));
        let cblock = self.b.ins().stack_addr(types::I64, slot, 0);
        let nb = self.b.ins().urem_imm_s(task, blocks.n as i64);
        let rest = self.b.ins().udiv_imm_s(task, blocks.n as i64);
        let mb = self.b.ins().urem_imm_s(rest, blocks.m as i64);
        let bi = self.b.ins().udiv_imm_s(rest, blocks.m as i64);
        self.bind_flat(bi, &form.batch_vars);
        let panel_a = (d.k * mr * 4) as i64;
        let panel_b = (d.k * nr * 4) as i64;
        // Panel ranges of this block.
        let p0 = self.b.ins().imul_imm_s(mb, bp_n as i64);
        let p1 = self.b.ins().iadd_imm_s(p0, bp_n as i64);
        let p1 = self.clamp(p1, d.mp as i64);
        let q0 = self.b.ins().imul_imm_s(nb, bq_n as i64);
        let q1 = self.b.ins().iadd_imm_s(q0, bq_n as i64);
        let q1 = self.clamp(q1, d.np as i64);
        let mut a_base = self.ptrs[&ap];
        if !d.a_const {
            let o = self.b.ins().imul_imm_s(bi, d.mp as i64 * panel_a);
            a_base = self.b.ins().iadd(a_base, o);
        }
        let mut b_base = self.ptrs[&bp];
        if !d.b_const {
            let o = self.b.ins().imul_imm_s(bi, d.np as i64 * panel_b);
            b_base = self.b.ins().iadd(b_base, o);
        }
        // The tile of panels (p, q) in the block.
        let tile_at = |g: &mut Self, p: Value, q: Value| {
            let pl = g.b.ins().isub(p, p0);
            let ql = g.b.ins().isub(q, q0);
            let t = g.b.ins().imul_imm_s(pl, bq_n as i64);
            let t = g.b.ins().iadd(t, ql);
            let o = g.b.ins().imul_imm_s(t, tile_bytes);
            g.b.ins().iadd(cblock, o)
        };
        // Zero the block's tiles.
        let (zero, end) = (self.iconst(0), self.iconst(block_bytes as i64));
        let zv = self.b.ins().f32const(0.0);
        let zv = self.b.ins().splat(types::F32X4, zv);
        self.range_loop(zero, end, 16, |g, o| {
            let at = g.b.ins().iadd(cblock, o);
            g.b.ins().store(MemFlagsData::trusted(), zv, at, 0);
            Ok(())
        })?;
        // K in chunks: the chunk of a B panel stays in L1 while every A panel of the block
        // passes over it.
        let chunk = d.chunk as i64;
        let (zero, nchunks) = (self.iconst(0), self.iconst(d.chunks as i64));
        self.range_loop(zero, nchunks, 1, |g, kc| {
            let k0 = g.b.ins().imul_imm_s(kc, chunk);
            let kk = g.iconst(d.k as i64);
            let krem = g.b.ins().isub(kk, k0);
            let klen = g.clamp(krem, chunk);
            g.range_loop(q0, q1, 1, |g, q| {
                let boff = g.b.ins().imul_imm_s(q, panel_b);
                let kb = g.b.ins().imul_imm_s(k0, (nr * 4) as i64);
                let boff = g.b.ins().iadd(boff, kb);
                let bptr = g.b.ins().iadd(b_base, boff);
                g.range_loop(p0, p1, 1, |g, pidx| {
                    let aoff = g.b.ins().imul_imm_s(pidx, panel_a);
                    let ka = g.b.ins().imul_imm_s(k0, (mr * 4) as i64);
                    let aoff = g.b.ins().iadd(aoff, ka);
                    let aptr = g.b.ins().iadd(a_base, aoff);
                    let tile = tile_at(g, pidx, q);
                    g.ukernel(mr, aptr, bptr, klen, tile)
                })
            })
        })?;
        // The epilogue, tile by tile, over the valid part of each; four columns at a time
        // where every store is lane-wise along the columns.
        self.extents.insert(m_flat, d.m);
        self.extents.insert(n_flat, d.n);
        let lanes = self.lane_epilogue(form.local, &epilogue, n_flat);
        self.range_loop(q0, q1, 1, |g, q| {
            g.range_loop(p0, p1, 1, |g, pidx| {
                let tile = tile_at(g, pidx, q);
                let m0 = g.b.ins().imul_imm_s(pidx, mr as i64);
                let n0 = g.b.ins().imul_imm_s(q, nr as i64);
                let mm = g.iconst(d.m as i64);
                let mrem = g.b.ins().isub(mm, m0);
                let mend = g.clamp(mrem, mr as i64);
                let nn = g.iconst(d.n as i64);
                let nrem = g.b.ins().isub(nn, n0);
                let nend = g.clamp(nrem, nr as i64);
                let zero = g.iconst(0);
                g.range_loop(zero, mend, 1, |g, i| {
                    let mi = g.b.ins().iadd(m0, i);
                    g.vars.insert(m_flat, mi);
                    let row = g.b.ins().imul_imm_s(i, (nr * 4) as i64);
                    let row = g.b.ins().iadd(tile, row);
                    let scalar = |g: &mut Self| {
                        g.range_loop(zero, nend, 1, |g, j| {
                            let nj = g.b.ins().iadd(n0, j);
                            g.vars.insert(n_flat, nj);
                            let o = g.b.ins().ishl_imm_u(j, 2);
                            let at = g.b.ins().iadd(row, o);
                            let t = g.b.ins().load(types::F32, MemFlagsData::trusted(), at, 0);
                            g.locals.insert(form.local, (t, DType::F32));
                            g.stages(&epilogue)
                        })
                    };
                    if !lanes {
                        return scalar(g);
                    }
                    // A whole row of the tile four columns at a time, else element by element.
                    let (whole, part, done) =
                        (g.b.create_block(), g.b.create_block(), g.b.create_block());
                    let full = g.b.ins().icmp_imm_s(IntCC::Equal, nend, nr as i64);
                    g.b.ins().brif(full, whole, &[], part, &[]);
                    g.b.switch_to_block(whole);
                    g.vector_epilogue(form.local, &epilogue, (row, n0, n_flat), nr)?;
                    g.b.ins().jump(done, &[]);
                    g.b.switch_to_block(part);
                    scalar(g)?;
                    g.b.ins().jump(done, &[]);
                    g.b.switch_to_block(done);
                    Ok(())
                })
            })
        })?;
        self.b.ins().return_(&[]);
        Ok(())
    }

    /// Whether the epilogue `stages` (stores of expressions of the sum `local`) can run four
    /// columns (`n`) at a time: every stage a store without loops of its own, contiguous in
    /// `n`, of a lane-wise value.
    fn lane_epilogue(&mut self, local: Local, stages: &[Stage], n: Var) -> bool {
        self.vplanned.clear();
        self.vplanned.insert(local);
        let ok = stages.iter().all(|s| match s {
            Stage::Store {
                buffer,
                vars,
                index,
                value,
            } => vars.is_empty() && self.vectorizable(*buffer, index, value, n),
            Stage::Reduce { .. } => false,
        });
        self.vplanned.clear();
        ok
    }

    /// The epilogue of one whole tile row (`row`: its sums, `n0`: its first column, bound to
    /// `n`) four columns at a time: each group's sums as the `f32x4` value of `local`, the
    /// stores lane-wise. Each element gets the operations of the scalar epilogue, in the same
    /// order (see `fastmath` for the functions).
    fn vector_epilogue(
        &mut self,
        local: Local,
        stages: &[Stage],
        (row, n0, n): (Value, Value, Var),
        nr: usize,
    ) -> R<()> {
        self.vplanned.insert(local);
        self.group = 0;
        for h in 0..nr / 4 {
            let nj = self.b.ins().iadd_imm_s(n0, (4 * h) as i64);
            self.vars.insert(n, nj);
            let sums =
                self.b
                    .ins()
                    .load(types::F32X4, MemFlagsData::trusted(), row, (16 * h) as i32);
            self.vlocals.insert(local, vec![sums]);
            for s in stages {
                if let Stage::Store {
                    buffer,
                    index,
                    value,
                    ..
                } = s
                {
                    self.vstore(*buffer, index, value, n)?;
                }
            }
        }
        self.vplanned.clear();
        self.vlocals.remove(&local);
        Ok(())
    }
}
