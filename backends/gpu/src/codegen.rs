//! Kernel IR to NVPTX LLVM IR: one GPU kernel per loop-nest kernel.
//!
//! The scalar semantics, loads (with fills), stores, index arithmetic and the sequential stage
//! loops are the LLVM CPU backend's emitters ([`terafab_llvm::codegen::Gen`] with `nvptx` set,
//! which turns libm calls into [`CodegenError::NoGpuLowering`]); this module adds the GPU's
//! parallel structure:
//!
//! - **thread per point** (the default): the kernel's whole iteration space is flattened and
//!   every thread computes one point (`ctaid.x * ntid.x + tid.x`, [`BLOCK`] threads a block),
//!   running the nest's stages as the CPU backend does (reductions as sequential loops);
//! - **block per point** (nests whose reductions are long and whose space is small: row sums,
//!   softmax, norms, global pooling): every block computes one point of the space; the
//!   threads of the block split each reduction's points (thread `t` takes `t, t + BLOCK, ...`),
//!   combine their partial results with warp shuffles (`shfl.sync.bfly`) and then across warps
//!   through shared memory, so that every thread holds the reduction's result; the threads
//!   then split the points of each store stage (a store without loop variables is done by
//!   thread 0).
//!
//! Kernels are marked as entry points by `nvvm.annotations`. Call kernels and kernels over the
//! float8 types are not compiled: the executable runs them on the host through the kernel
//! interpreter ([`Plan::Host`]).

use inkwell::AddressSpace;
use inkwell::IntPredicate;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::BasicTypeEnum;
use inkwell::values::{BasicValueEnum, FunctionValue, IntValue, PointerValue};
use terafab_ir::kernel::{BufferId, Kernel, KernelProgram, LoopNest, Stage, Var};
use terafab_ir::{DType, ReduceKind};
use terafab_llvm::codegen::{CodegenError, Fn, Gen, compiled_nest, sanitize};

use crate::GpuError;

/// Threads per block.
pub const BLOCK: u32 = 256;
const WARPS: u32 = BLOCK / 32;

/// How the executable runs one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A GPU kernel: its entry symbol, its parameters (buffer pointers, in order) and its
    /// launch shape (`grid` blocks of [`BLOCK`] threads; no launch when `grid` is 0).
    Device {
        symbol: String,
        params: Vec<BufferId>,
        grid: u32,
        mode: Mode,
    },
    /// Run on the host by the kernel interpreter (call kernels, float8 arithmetic).
    Host { reason: String },
}

/// A GPU kernel's parallel structure (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ThreadPerPoint,
    BlockPerPoint,
}

type R<T> = Result<T, CodegenError>;

/// Lower `p` to an NVPTX module (not yet optimized); every kernel's [`Plan`], in order.
pub fn generate<'ctx>(
    ctx: &'ctx Context,
    p: &KernelProgram,
) -> Result<(Module<'ctx>, Vec<Plan>), GpuError> {
    let module = ctx.create_module(&p.name);
    let mut plans = Vec::new();
    {
        let mut g = Gen::new(ctx, &module, p, true);
        for (i, k) in p.kernels.iter().enumerate() {
            let plan = kernel(&mut g, i, k).map_err(|source| GpuError::Lower {
                kernel: k.name.clone(),
                source,
            })?;
            plans.push(plan);
        }
    }
    Ok((module, plans))
}

/// The number of points of a list of loop extents.
fn points(dims: impl IntoIterator<Item = usize>) -> usize {
    dims.into_iter().product()
}

/// Which structure suits a nest: block per point where some reduction has many points and
/// the space is too small to fill the GPU with one thread per point.
pub fn choose_mode(nest: &LoopNest) -> Mode {
    let space = points(nest.space.iter().copied());
    let longest = nest
        .stages
        .iter()
        .filter_map(|s| match s {
            Stage::Reduce { vars, .. } => Some(points(vars.iter().map(|v| v.1))),
            Stage::Store { .. } => None,
        })
        .max()
        .unwrap_or(0);
    if longest >= 128 && space < 32 * 1024 {
        Mode::BlockPerPoint
    } else {
        Mode::ThreadPerPoint
    }
}

fn kernel(g: &mut Gen<'_, '_>, i: usize, k: &Kernel) -> R<Plan> {
    let nest = match compiled_nest(g.p, k) {
        Ok(n) => n,
        Err(reason) => return Ok(Plan::Host { reason }),
    };
    let symbol = format!("k{i}_{}", sanitize(&k.name));
    let params = Gen::kernel_buffers(k);
    let mode = choose_mode(nest);
    let space = points(nest.space.iter().copied());
    let grid = match mode {
        Mode::ThreadPerPoint => space.div_ceil(BLOCK as usize),
        Mode::BlockPerPoint => space,
    };
    let grid = u32::try_from(grid).map_err(|_| {
        CodegenError::NoGpuLowering(format!("a grid of {grid} blocks (more than 2^32 - 1)"))
    })?;
    let mut f = g.begin_fn(&symbol, &params, &[]);
    f.func.set_linkage(Linkage::External);
    mark_kernel(g, f.func);
    for (d, &n) in nest.space.iter().enumerate() {
        f.extents.insert(Var(d as u32), n);
    }
    match mode {
        Mode::ThreadPerPoint => thread_per_point(g, &mut f, nest)?,
        Mode::BlockPerPoint => block_per_point(g, &mut f, nest, &symbol)?,
    }
    g.b.build_return(None)?;
    Ok(Plan::Device {
        symbol,
        params,
        grid,
        mode,
    })
}

/// `!nvvm.annotations = !{!{ptr @f, !"kernel", i32 1}}`: `f` is an entry point.
fn mark_kernel<'ctx>(g: &Gen<'_, 'ctx>, f: FunctionValue<'ctx>) {
    let ctx = g.ctx;
    let node = ctx.metadata_node(&[
        f.as_global_value().as_pointer_value().into(),
        ctx.metadata_string("kernel").into(),
        ctx.i32_type().const_int(1, false).into(),
    ]);
    // Only fails for a value that is not metadata, which `node` is.
    let _ = g.module.add_global_metadata("nvvm.annotations", &node);
}

/// A call of an intrinsic without overloaded types.
fn call_intrinsic<'ctx>(
    g: &Gen<'_, 'ctx>,
    name: &str,
    args: &[BasicValueEnum<'ctx>],
) -> R<BasicValueEnum<'ctx>> {
    let i = Intrinsic::find(name).ok_or_else(|| CodegenError::Llvm(format!("no {name}")))?;
    let f = i
        .get_declaration(g.module, &[])
        .ok_or_else(|| CodegenError::Llvm(format!("no declaration of {name}")))?;
    let args: Vec<_> = args.iter().map(|&a| a.into()).collect();
    g.b.build_call(f, &args, "i")?
        .try_as_basic_value()
        .basic()
        .ok_or_else(|| CodegenError::Llvm(format!("{name} returns nothing")))
}

/// A special register (`tid.x`, `ctaid.x`, `ntid.x`) as an i64.
fn sreg<'ctx>(g: &Gen<'_, 'ctx>, name: &str) -> R<IntValue<'ctx>> {
    let v = call_intrinsic(g, &format!("llvm.nvvm.read.ptx.sreg.{name}"), &[])?;
    Ok(g.b.build_int_z_extend(v.into_int_value(), g.ctx.i64_type(), name)?)
}

/// Bind `vars` (outermost first) to the digits of the flat point `flat`.
fn bind_flat<'ctx>(
    g: &Gen<'_, 'ctx>,
    f: &mut Fn<'ctx>,
    vars: &[(Var, usize)],
    flat: IntValue<'ctx>,
) -> R<()> {
    let mut rest = flat;
    for (j, &(v, n)) in vars.iter().enumerate().rev() {
        f.extents.insert(v, n);
        let digit = if j == 0 {
            rest
        } else {
            let d = g.b.build_int_unsigned_rem(rest, g.i64(n as i64), "v")?;
            rest = g.b.build_int_unsigned_div(rest, g.i64(n as i64), "rest")?;
            d
        };
        f.vars.insert(v, digit);
    }
    Ok(())
}

/// `if cond { body }`.
fn when<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    f: &mut Fn<'ctx>,
    cond: IntValue<'ctx>,
    body: impl FnOnce(&mut Gen<'_, 'ctx>, &mut Fn<'ctx>) -> R<()>,
) -> R<()> {
    let then = g.ctx.append_basic_block(f.func, "then");
    let done = g.ctx.append_basic_block(f.func, "done");
    g.b.build_conditional_branch(cond, then, done)?;
    g.b.position_at_end(then);
    body(g, f)?;
    g.b.build_unconditional_branch(done)?;
    g.b.position_at_end(done);
    Ok(())
}

fn space_vars(nest: &LoopNest) -> Vec<(Var, usize)> {
    nest.space
        .iter()
        .enumerate()
        .map(|(d, &n)| (Var(d as u32), n))
        .collect()
}

/// One thread per point of the space; the stages as the CPU backend runs them.
fn thread_per_point<'ctx>(g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>, nest: &LoopNest) -> R<()> {
    let (ctaid, ntid, tid) = (sreg(g, "ctaid.x")?, sreg(g, "ntid.x")?, sreg(g, "tid.x")?);
    let base = g.b.build_int_nuw_mul(ctaid, ntid, "base")?;
    let gid = g.b.build_int_nuw_add(base, tid, "gid")?;
    let total = g.i64(points(nest.space.iter().copied()) as i64);
    let inside =
        g.b.build_int_compare(IntPredicate::ULT, gid, total, "inside")?;
    when(g, f, inside, |g, f| {
        bind_flat(g, f, &space_vars(nest), gid)?;
        g.stages(f, &nest.stages)
    })
}

/// `for i in (tid..n).step_by(BLOCK) { body(i) }`.
fn strided_loop<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    f: &mut Fn<'ctx>,
    tid: IntValue<'ctx>,
    n: usize,
    body: &mut dyn FnMut(&mut Gen<'_, 'ctx>, &mut Fn<'ctx>, IntValue<'ctx>) -> R<()>,
) -> R<()> {
    let i64t = g.ctx.i64_type();
    let slot = g.entry_alloca(f, i64t.into(), "it")?;
    g.b.build_store(slot, tid)?;
    let header = g.ctx.append_basic_block(f.func, "sloop");
    let body_bb = g.ctx.append_basic_block(f.func, "sbody");
    let exit = g.ctx.append_basic_block(f.func, "sexit");
    g.b.build_unconditional_branch(header)?;
    g.b.position_at_end(header);
    let i = g.b.build_load(i64t, slot, "i")?.into_int_value();
    let more =
        g.b.build_int_compare(IntPredicate::ULT, i, g.i64(n as i64), "more")?;
    g.b.build_conditional_branch(more, body_bb, exit)?;
    g.b.position_at_end(body_bb);
    body(g, f, i)?;
    let next = g.b.build_int_nuw_add(i, g.i64(BLOCK as i64), "next")?;
    g.b.build_store(slot, next)?;
    g.b.build_unconditional_branch(header)?;
    g.b.position_at_end(exit);
    Ok(())
}

/// One block per point of the space (see the module doc).
fn block_per_point<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    f: &mut Fn<'ctx>,
    nest: &LoopNest,
    symbol: &str,
) -> R<()> {
    // Shared memory: one 8-byte slot per warp.
    let i64t = g.ctx.i64_type();
    let arr = i64t.array_type(WARPS);
    let smem = g.module.add_global(
        arr,
        Some(AddressSpace::from(3u16)),
        &format!("{symbol}_smem"),
    );
    smem.set_linkage(Linkage::Internal);
    smem.set_initializer(&arr.get_undef());
    let smem = smem.as_pointer_value();

    let ctaid = sreg(g, "ctaid.x")?;
    let tid = sreg(g, "tid.x")?;
    bind_flat(g, f, &space_vars(nest), ctaid)?;
    for s in &nest.stages {
        match s {
            Stage::Reduce {
                local,
                kind,
                vars,
                body,
            } => {
                let d = g.dtype_of(f, body)?;
                let ty = g.scalar().reg_type(d)?;
                let acc = g.entry_alloca(f, ty, "acc")?;
                let id = g.scalar().identity(*kind, d)?;
                g.b.build_store(acc, id)?;
                let n = points(vars.iter().map(|v| v.1));
                strided_loop(g, f, tid, n, &mut |g, f, i| {
                    bind_flat(g, f, vars, i)?;
                    let x = g.expr(f, body)?;
                    let a = g.b.build_load(ty, acc, "a")?;
                    let r = g.scalar().combine(*kind, a, x, d)?;
                    g.b.build_store(acc, r)?;
                    Ok(())
                })?;
                let part = g.b.build_load(ty, acc, "part")?;
                let mut v = block_reduce(g, f, smem, tid, part, ty, *kind, d)?;
                if matches!(d, DType::F16 | DType::BF16) {
                    v = g.scalar().convert(v, DType::F32, d)?;
                }
                f.locals.insert(*local, (v, d));
            }
            Stage::Store {
                buffer,
                vars,
                index,
                value,
            } => {
                let n = points(vars.iter().map(|v| v.1));
                let mut store = |g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>, i: IntValue<'ctx>| {
                    bind_flat(g, f, vars, i)?;
                    let x = g.expr(f, value)?;
                    g.store(f, *buffer, index, x)
                };
                if vars.is_empty() {
                    let first =
                        g.b.build_int_compare(IntPredicate::EQ, tid, g.i64(0), "first")?;
                    when(g, f, first, |g, f| store(g, f, g.i64(0)))?;
                } else {
                    strided_loop(g, f, tid, n, &mut store)?;
                }
            }
        }
    }
    Ok(())
}

/// `bar.sync 0`.
fn barrier(g: &Gen<'_, '_>) -> R<()> {
    let i = Intrinsic::find("llvm.nvvm.barrier0")
        .ok_or_else(|| CodegenError::Llvm("no llvm.nvvm.barrier0".into()))?;
    let f = i
        .get_declaration(g.module, &[])
        .ok_or_else(|| CodegenError::Llvm("no declaration of llvm.nvvm.barrier0".into()))?;
    g.b.build_call(f, &[], "")?;
    Ok(())
}

/// `shfl.sync.bfly` of a value of any register type (64-bit values in two halves, narrow
/// integers widened) with lane mask `off`.
fn shuffle_xor<'ctx>(
    g: &Gen<'_, 'ctx>,
    v: BasicValueEnum<'ctx>,
    off: u32,
) -> R<BasicValueEnum<'ctx>> {
    let (b, i32t, i64t) = (&g.b, g.ctx.i32_type(), g.ctx.i64_type());
    let all = i32t.const_all_ones().into();
    let off = i32t.const_int(off as u64, false).into();
    let clamp = i32t.const_int(0x1f, false).into();
    let shfl32 = |x: IntValue<'ctx>| -> R<IntValue<'ctx>> {
        Ok(call_intrinsic(
            g,
            "llvm.nvvm.shfl.sync.bfly.i32",
            &[all, x.into(), off, clamp],
        )?
        .into_int_value())
    };
    let ty = v.get_type();
    let bits = match ty {
        BasicTypeEnum::FloatType(t) if t == g.ctx.f64_type() => 64,
        BasicTypeEnum::FloatType(_) => 32,
        BasicTypeEnum::IntType(t) => t.get_bit_width(),
        _ => return Err(CodegenError::Invalid(format!("shuffle of {ty}"))),
    };
    Ok(match bits {
        64 => {
            let x = b.build_bit_cast(v, i64t, "x")?.into_int_value();
            let lo = b.build_int_truncate(x, i32t, "lo")?;
            let hi = b.build_right_shift(x, i64t.const_int(32, false), false, "hi")?;
            let hi = b.build_int_truncate(hi, i32t, "hi")?;
            let (lo, hi) = (shfl32(lo)?, shfl32(hi)?);
            let lo = b.build_int_z_extend(lo, i64t, "lo")?;
            let hi = b.build_int_z_extend(hi, i64t, "hi")?;
            let hi = b.build_left_shift(hi, i64t.const_int(32, false), "hi")?;
            let x = b.build_or(lo, hi, "x")?;
            b.build_bit_cast(x, ty, "y")?
        }
        32 => {
            let x = b.build_bit_cast(v, i32t, "x")?.into_int_value();
            b.build_bit_cast(shfl32(x)?, ty, "y")?
        }
        _ => {
            let x = b.build_int_z_extend(v.into_int_value(), i32t, "x")?;
            b.build_int_truncate(shfl32(x)?, ty.into_int_type(), "y")?
                .into()
        }
    })
}

/// The combination of every thread's `part` (of register type `ty`), in every thread: a
/// butterfly over each warp's lanes, then the warps' results through shared memory, combined
/// by every thread in warp order (so all threads hold the same value).
#[allow(clippy::too_many_arguments)]
fn block_reduce<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    f: &mut Fn<'ctx>,
    smem: PointerValue<'ctx>,
    tid: IntValue<'ctx>,
    part: BasicValueEnum<'ctx>,
    ty: BasicTypeEnum<'ctx>,
    kind: ReduceKind,
    d: DType,
) -> R<BasicValueEnum<'ctx>> {
    let mut v = part;
    for off in [16, 8, 4, 2, 1] {
        let o = shuffle_xor(g, v, off)?;
        v = g.scalar().combine(kind, v, o, d)?;
    }
    let i64t = g.ctx.i64_type();
    let arr = i64t.array_type(WARPS);
    let lane = g.b.build_and(tid, g.i64(31), "lane")?;
    let warp = g.b.build_right_shift(tid, g.i64(5), false, "warp")?;
    let lane0 =
        g.b.build_int_compare(IntPredicate::EQ, lane, g.i64(0), "lane0")?;
    when(g, f, lane0, |g, _| {
        let at = unsafe {
            g.b.build_in_bounds_gep(arr, smem, &[g.i64(0), warp], "slot")?
        };
        g.b.build_store(at, v)?;
        Ok(())
    })?;
    barrier(g)?;
    let mut r: Option<BasicValueEnum<'ctx>> = None;
    for w in 0..WARPS {
        let at = unsafe {
            g.b.build_in_bounds_gep(arr, smem, &[g.i64(0), g.i64(w as i64)], "slot")?
        };
        let x = g.b.build_load(ty, at, "w")?;
        r = Some(match r {
            None => x,
            Some(a) => g.scalar().combine(kind, a, x, d)?,
        });
    }
    // The slots are reused by the next reduction.
    barrier(g)?;
    r.ok_or_else(|| CodegenError::Invalid("a block without warps".into()))
}
