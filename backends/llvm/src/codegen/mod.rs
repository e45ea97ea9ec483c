//! Kernel IR to LLVM IR.
//!
//! One LLVM module per [`KernelProgram`]:
//!
//! - every loop-nest kernel becomes a function `@kN(ptr noalias %buf..., i64 %lo, i64 %hi)`
//!   running the points `lo..hi` of its *parallel prefix* (the first dims of its iteration
//!   space, flattened, enough of them for the thread pool to split), and a task trampoline
//!   `@kN.task(ptr %bufs, i64 %task)` that picks its pointers out of the program's buffer table
//!   and its range out of the task number; contractions of the matmul/conv form get the packed
//!   GEMM schedule of [`gemm`] instead;
//! - `@<prefix>run(ptr %bufs, ptr %rt) -> i32` (the *driver*) runs the kernels in order: loop
//!   nests through the runtime's `parallel_for(pool, task_fn, bufs, ntasks)`, call kernels (and
//!   kernels over types the backend does not compute with) through the runtime's
//!   `call(ctx, kernel, bufs)`, whose non-zero result it returns at once;
//! - `@<prefix>init(ptr %bufs, ptr %rt)` fills the buffers that hold constant operands packed
//!   for the GEMM micro-kernel (once, when the program is loaded).
//!
//! The buffer table `bufs` holds one pointer per buffer of the program (by [`BufferId`]): the
//! caller's inputs and outputs, the weights, the arena slots of the temporaries; then the packed
//! GEMM operands ([`PackedOperand`]). Results do not depend on the number of threads: tasks are
//! fixed ranges of points, each computed the same way whoever runs it.
//!
//! Kernels of one form (the same nest up to buffer names, with buffers of the same types,
//! layouts and constness: a ResNet's repeated blocks) share their functions; each has only its
//! own trampolines.
//!
//! Reductions accumulate in their body's register type (f16/bf16 in f32); float sums carry the
//! `reassoc` flag so the vectorizer may keep partial sums.

pub mod frame;
pub mod gemm;
pub mod scalar;

use std::collections::HashMap;

use inkwell::AddressSpace;
use inkwell::IntPredicate;
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicTypeEnum, StructType};
use inkwell::values::{BasicValueEnum, FunctionValue, IntValue, PointerValue};
use terafab_ir::DType;
use terafab_ir::kernel::{
    Body, BufferId, Expr, Index, Kernel, KernelProgram, Local, LoopNest, Stage, Storage, Var,
};

pub use scalar::{Scalar, Unsupported, supported};

/// Why code generation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodegenError {
    #[error(transparent)]
    Unsupported(#[from] Unsupported),
    #[error("invalid kernel IR: {0}")]
    Invalid(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    /// An operation the GPU target has no lowering for (the GPU backend names the kernel).
    #[error("no GPU lowering of {0}")]
    NoGpuLowering(String),
}

impl From<BuilderError> for CodegenError {
    fn from(e: BuilderError) -> Self {
        CodegenError::Llvm(e.to_string())
    }
}

type R<T> = Result<T, CodegenError>;

/// How the driver runs one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelPlan {
    /// Compiled: its phases, each a task function run over `ntasks` tasks (a loop nest has one
    /// phase; a GEMM packs its activation operand, then computes).
    Compiled { phases: Vec<(String, u64)> },
    /// Run by the runtime's `call` (a call kernel, or one over a type not compiled here).
    Call { reason: String },
}

pub use terafab_runtime::gemm::PackedOperand;
use terafab_runtime::gemm::PackedOperands;

/// A program in LLVM IR, and what the runtime needs to run it.
pub struct Generated<'ctx> {
    pub module: Module<'ctx>,
    pub run_symbol: String,
    pub init_symbol: String,
    pub kernels: Vec<KernelPlan>,
    /// The packed operands: the buffer table has `program.buffers.len() + packed.len()` slots.
    pub packed: Vec<PackedOperand>,
    /// The size of the per-run scratch region (the largest need of one kernel).
    pub scratch_bytes: usize,
}

/// The runtime interface's struct type: `{ parallel_for, pool, call, call_ctx }`.
fn rt_type<'ctx>(ctx: &'ctx Context) -> StructType<'ctx> {
    let p = ctx.ptr_type(AddressSpace::default());
    ctx.struct_type(&[p.into(), p.into(), p.into(), p.into()], false)
}

/// Lower `p` to an LLVM module whose public symbols start with `prefix`.
pub fn generate<'ctx>(
    ctx: &'ctx Context,
    p: &KernelProgram,
    prefix: &str,
) -> Result<Generated<'ctx>, CodegenError> {
    let module = ctx.create_module(&p.name);
    let mut g = Gen::new(ctx, &module, p, false);
    let mut plans = Vec::new();
    for (i, k) in p.kernels.iter().enumerate() {
        plans.push(g.kernel(i, k)?);
    }
    let PackedOperands {
        list: packed,
        scratch_bytes,
        ..
    } = std::mem::take(&mut g.packed);
    let init_calls = std::mem::take(&mut g.init_calls);
    let run_symbol = format!("{prefix}run");
    let init_symbol = format!("{prefix}init");
    g.driver(&run_symbol, &plans)?;
    g.init(&init_symbol, &init_calls)?;
    Ok(Generated {
        module,
        run_symbol,
        init_symbol,
        kernels: plans,
        packed,
        scratch_bytes,
    })
}

/// The loop nest of a kernel that is compiled, or why it is not (a call kernel, or one over
/// a type the backend does not compute with) and the runtime runs it instead.
pub fn compiled_nest<'k>(p: &KernelProgram, k: &'k Kernel) -> Result<&'k LoopNest, String> {
    let nest = match &k.body {
        Body::Call(f) => {
            let ops: Vec<&str> = f.body.nodes.iter().map(|n| n.op.name()).collect();
            return Err(format!("call of {}", ops.join(", ")));
        }
        Body::Loops(n) => n,
    };
    match unsupported_type(p, k, nest) {
        Some(d) => Err(format!("computes with {d}")),
        None => Ok(nest),
    }
}

/// Whether every type a kernel touches is one the backend computes with (else the name of one
/// that is not).
fn unsupported_type(p: &KernelProgram, k: &Kernel, nest: &LoopNest) -> Option<DType> {
    let mut bad = None;
    for b in k.inputs.iter().chain(&k.outputs) {
        let d = p.buffer(*b).dtype;
        if !supported(d) {
            return Some(d);
        }
    }
    let mut check = |e: &Expr| {
        e.walk(&mut |x| {
            let d = match x {
                Expr::Const(t) => Some(t.dtype()),
                Expr::Index(_, d) | Expr::Convert(d, _) => Some(*d),
                _ => None,
            };
            if let Some(d) = d.filter(|d| !supported(*d)) {
                bad = Some(d);
            }
        })
    };
    for s in &nest.stages {
        match s {
            Stage::Reduce { body, .. } => check(body),
            Stage::Store { value, .. } => check(value),
        }
    }
    bad
}

/// Code generation state for one module.
pub struct Gen<'a, 'ctx> {
    pub ctx: &'ctx Context,
    pub module: &'a Module<'ctx>,
    pub b: Builder<'ctx>,
    pub p: &'a KernelProgram,
    /// The packed GEMM operands, in slot order, and the scratch region's size so far.
    pub packed: PackedOperands,
    /// Functions `init` calls, each `(fn(ptr bufs, i64 task), ntasks)`.
    pub init_calls: Vec<(FunctionValue<'ctx>, u64)>,
    /// The canonical form of the kernel being generated (see [`kernel_key`]).
    pub key: String,
    /// Inner functions by kernel key and phase: kernels of the same form (the repeated blocks
    /// of a ResNet) share them, and only their trampolines differ.
    pub shared: HashMap<String, FunctionValue<'ctx>>,
    /// Whether the module is NVPTX code (see [`Scalar::nvptx`]).
    pub nvptx: bool,
    /// The element type, shape and strides of buffer slots beyond the program's own that
    /// code loads from (a frame: see [`frame`]).
    pub views: HashMap<BufferId, (DType, Vec<usize>, Vec<usize>)>,
}

/// The state of one function being emitted: buffer pointers, loop variables, locals.
pub struct Fn<'ctx> {
    pub func: FunctionValue<'ctx>,
    pub ptrs: HashMap<BufferId, PointerValue<'ctx>>,
    pub vars: HashMap<Var, IntValue<'ctx>>,
    pub extents: HashMap<Var, usize>,
    pub locals: HashMap<Local, (BasicValueEnum<'ctx>, DType)>,
}

impl<'a, 'ctx> Gen<'a, 'ctx> {
    /// A generator for `p` into `module` with no kernels emitted yet: the GPU backend uses
    /// its expression, load, store and loop emitters (with `nvptx` set) for its own kernels.
    pub fn new(
        ctx: &'ctx Context,
        module: &'a Module<'ctx>,
        p: &'a KernelProgram,
        nvptx: bool,
    ) -> Self {
        Gen {
            ctx,
            module,
            b: ctx.create_builder(),
            p,
            packed: PackedOperands::new(p.buffers.len()),
            init_calls: Vec::new(),
            key: String::new(),
            shared: HashMap::new(),
            nvptx,
            views: HashMap::new(),
        }
    }
}

impl<'ctx> Gen<'_, 'ctx> {
    pub fn scalar(&self) -> Scalar<'_, 'ctx> {
        Scalar {
            ctx: self.ctx,
            module: self.module,
            b: &self.b,
            nvptx: self.nvptx,
        }
    }

    pub fn i64(&self, v: i64) -> IntValue<'ctx> {
        self.ctx.i64_type().const_int(v as u64, true)
    }

    fn ptr_type(&self) -> inkwell::types::PointerType<'ctx> {
        self.ctx.ptr_type(AddressSpace::default())
    }

    /// The kernel's function(s), or why the runtime calls it instead.
    fn kernel(&mut self, i: usize, k: &Kernel) -> R<KernelPlan> {
        let nest = match compiled_nest(self.p, k) {
            Ok(n) => n,
            Err(reason) => return Ok(KernelPlan::Call { reason }),
        };
        let name = format!("k{i}.{}", sanitize(&k.name));
        self.key = kernel_key(self.p, k, nest);
        if let Some(phases) = gemm::try_gemm(self, &name, k, nest)? {
            return Ok(KernelPlan::Compiled { phases });
        }
        // Loads that can leave their buffer read a frame made by a phase of its own.
        let mut phases = Vec::new();
        let framed = frame::frame_loop(self, &name, nest)?;
        let (nest, extra) = match &framed {
            Some(fr) => {
                phases.push(fr.copy.clone());
                (&fr.nest, vec![fr.slot])
            }
            None => (nest, Vec::new()),
        };
        phases.push(self.loop_kernel(&name, k, nest, &extra)?);
        Ok(KernelPlan::Compiled { phases })
    }

    /// The element type of a buffer (or of a view), without copying its layout.
    fn dtype(&self, b: BufferId) -> DType {
        self.views
            .get(&b)
            .map_or_else(|| self.p.buffer(b).dtype, |v| v.0)
    }

    /// The element type, shape and strides of a buffer (or of a view: see `views`).
    fn layout(&self, b: BufferId) -> (DType, Vec<usize>, Vec<usize>) {
        match self.views.get(&b) {
            Some(v) => v.clone(),
            None => {
                let buf = self.p.buffer(b);
                (buf.dtype, buf.shape.clone(), buf.strides.clone())
            }
        }
    }

    /// `built`, the inner function of phase `phase` of the current kernel, or the one an earlier
    /// kernel of the same form built (then `built` is deleted).
    pub fn share(&mut self, phase: &str, built: FunctionValue<'ctx>) -> FunctionValue<'ctx> {
        let key = format!("{}#{phase}", self.key);
        match self.shared.get(&key) {
            Some(&f) => {
                // SAFETY: `built` was just made and nothing refers to it.
                unsafe { built.delete() };
                f
            }
            None => {
                self.shared.insert(key, built);
                built
            }
        }
    }

    /// An internal function `name(ptr noalias %b..., extra...)` over the buffers `bufs`, with
    /// the builder at its entry block.
    pub fn begin_fn(
        &mut self,
        name: &str,
        bufs: &[BufferId],
        extra: &[BasicTypeEnum<'ctx>],
    ) -> Fn<'ctx> {
        let mut params: Vec<inkwell::types::BasicMetadataTypeEnum<'ctx>> =
            bufs.iter().map(|_| self.ptr_type().into()).collect();
        params.extend(
            extra
                .iter()
                .map(|&t| -> inkwell::types::BasicMetadataTypeEnum<'ctx> { t.into() }),
        );
        let fty = self.ctx.void_type().fn_type(&params, false);
        let func = self.module.add_function(name, fty, Some(Linkage::Internal));
        let noalias = self
            .ctx
            .create_enum_attribute(Attribute::get_named_enum_kind_id("noalias"), 0);
        let mut ptrs = HashMap::new();
        for (j, &b) in bufs.iter().enumerate() {
            func.add_attribute(AttributeLoc::Param(j as u32), noalias);
            let pv = func.get_nth_param(j as u32).unwrap().into_pointer_value();
            pv.set_name(&format!("b{}", b.0));
            ptrs.insert(b, pv);
        }
        let entry = self.ctx.append_basic_block(func, "entry");
        self.b.position_at_end(entry);
        Fn {
            func,
            ptrs,
            vars: HashMap::new(),
            extents: HashMap::new(),
            locals: HashMap::new(),
        }
    }

    /// The distinct buffers a kernel touches.
    pub fn kernel_buffers(k: &Kernel) -> Vec<BufferId> {
        let mut bufs: Vec<BufferId> = Vec::new();
        for &b in k.inputs.iter().chain(&k.outputs) {
            if !bufs.contains(&b) {
                bufs.push(b);
            }
        }
        bufs
    }

    /// A task trampoline `name(ptr %bufs, i64 %task)` calling `inner(bufs[b]..., args(task))`.
    pub fn task_fn(
        &mut self,
        name: &str,
        inner: FunctionValue<'ctx>,
        bufs: &[BufferId],
        args: impl FnOnce(&Self, IntValue<'ctx>) -> R<Vec<BasicValueEnum<'ctx>>>,
    ) -> R<FunctionValue<'ctx>> {
        let p = self.ptr_type();
        let fty = self
            .ctx
            .void_type()
            .fn_type(&[p.into(), self.ctx.i64_type().into()], false);
        let f = self.module.add_function(name, fty, Some(Linkage::Internal));
        let entry = self.ctx.append_basic_block(f, "entry");
        self.b.position_at_end(entry);
        let table = f.get_nth_param(0).unwrap().into_pointer_value();
        let task = f.get_nth_param(1).unwrap().into_int_value();
        table.set_name("bufs");
        task.set_name("task");
        let mut call_args = Vec::new();
        for b in bufs {
            call_args.push(self.table_ptr(table, b.index())?.into());
        }
        for a in args(self, task)? {
            call_args.push(a.into());
        }
        self.b.build_call(inner, &call_args, "")?;
        self.b.build_return(None)?;
        Ok(f)
    }

    /// `bufs[slot]`.
    pub fn table_ptr(&self, table: PointerValue<'ctx>, slot: usize) -> R<PointerValue<'ctx>> {
        let p = self.ptr_type();
        let at = unsafe {
            self.b
                .build_in_bounds_gep(p, table, &[self.i64(slot as i64)], "slot")?
        };
        Ok(self.b.build_load(p, at, "buf")?.into_pointer_value())
    }

    /// A plain loop nest kernel: returns its task function's name and task count.
    fn loop_kernel(
        &mut self,
        name: &str,
        k: &Kernel,
        nest: &LoopNest,
        extra: &[BufferId],
    ) -> R<(String, u64)> {
        let mut bufs = Self::kernel_buffers(k);
        bufs.extend_from_slice(extra);
        // The parallel prefix and the tasks (the runtime's split, shared with the Cranelift
        // backend).
        let terafab_runtime::TaskSplit {
            prefix,
            total,
            chunk,
            ntasks,
        } = terafab_runtime::split_tasks(nest, nest.space.len());

        let i64t = self.ctx.i64_type();
        let mut f = self.begin_fn(name, &bufs, &[i64t.into(), i64t.into()]);
        let lo = f
            .func
            .get_nth_param(bufs.len() as u32)
            .unwrap()
            .into_int_value();
        let hi = f
            .func
            .get_nth_param(bufs.len() as u32 + 1)
            .unwrap()
            .into_int_value();
        lo.set_name("lo");
        hi.set_name("hi");
        for (d, &n) in nest.space.iter().enumerate() {
            f.extents.insert(Var(d as u32), n);
        }
        self.range_loop(&mut f, lo, hi, |g, f, flat| {
            // Split the flat prefix point into its dims.
            let mut rest = flat;
            for d in (0..prefix).rev() {
                let n = nest.space[d] as i64;
                let v = if d == 0 {
                    rest
                } else {
                    let v = g.b.build_int_unsigned_rem(rest, g.i64(n), "v")?;
                    rest = g.b.build_int_unsigned_div(rest, g.i64(n), "rest")?;
                    v
                };
                f.vars.insert(Var(d as u32), v);
            }
            let dims: Vec<(Var, usize)> = (prefix..nest.space.len())
                .map(|d| (Var(d as u32), nest.space[d]))
                .collect();
            g.nest(f, &dims, &mut |g, f| g.stages(f, &nest.stages))
        })?;
        self.b.build_return(None)?;

        let task = format!("{name}.task");
        let inner = self.share("loop", f.func);
        self.task_fn(&task, inner, &bufs, |g, t| {
            let lo = g.b.build_int_mul(t, g.i64(chunk as i64), "lo")?;
            let end = g.b.build_int_add(lo, g.i64(chunk as i64), "end")?;
            let over =
                g.b.build_int_compare(IntPredicate::SGT, end, g.i64(total as i64), "over")?;
            let hi = g.b.build_select(over, g.i64(total as i64), end, "hi")?;
            Ok(vec![lo.into(), hi])
        })?;
        Ok((task, ntasks))
    }

    /// The stages of a loop nest at one point of its space.
    pub fn stages(&mut self, f: &mut Fn<'ctx>, stages: &[Stage]) -> R<()> {
        for s in stages {
            match s {
                Stage::Reduce {
                    local,
                    kind,
                    vars,
                    body,
                } => {
                    let d = self.dtype_of(f, body)?;
                    let ty = self.scalar().reg_type(d)?;
                    let acc = self.entry_alloca(f, ty, "acc")?;
                    let id = self.scalar().identity(*kind, d)?;
                    self.b.build_store(acc, id)?;
                    for (v, n) in vars {
                        f.extents.insert(*v, *n);
                    }
                    self.nest(f, vars, &mut |g, f| {
                        let x = g.expr(f, body)?;
                        let a = g.b.build_load(ty, acc, "a")?;
                        let r = g.scalar().combine(*kind, a, x, d)?;
                        g.b.build_store(acc, r)?;
                        Ok(())
                    })?;
                    let mut v = self.b.build_load(ty, acc, "local")?;
                    if matches!(d, DType::F16 | DType::BF16) {
                        v = self.scalar().convert(v, DType::F32, d)?;
                    }
                    f.locals.insert(*local, (v, d));
                }
                Stage::Store {
                    buffer,
                    vars,
                    index,
                    value,
                } => {
                    for (v, n) in vars {
                        f.extents.insert(*v, *n);
                    }
                    self.nest(f, vars, &mut |g, f| {
                        let x = g.expr(f, value)?;
                        g.store(f, *buffer, index, x)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// `buffer[index] = x` (x in register form).
    pub fn store(
        &mut self,
        f: &mut Fn<'ctx>,
        buffer: BufferId,
        index: &[Index],
        x: BasicValueEnum<'ctx>,
    ) -> R<()> {
        let d = self.dtype(buffer);
        let (ptr, _) = self.load_address(f, buffer, index, false)?;
        let m = self.scalar().reg_to_mem(x, d)?;
        self.b.build_store(ptr, m)?;
        Ok(())
    }

    /// An `alloca` in the function's entry block.
    pub fn entry_alloca(
        &self,
        f: &Fn<'ctx>,
        ty: BasicTypeEnum<'ctx>,
        name: &str,
    ) -> R<PointerValue<'ctx>> {
        let entry = f.func.get_first_basic_block().unwrap();
        let eb = self.ctx.create_builder();
        match entry.get_first_instruction() {
            Some(i) => eb.position_before(&i),
            None => eb.position_at_end(entry),
        }
        Ok(eb.build_alloca(ty, name)?)
    }

    /// `for v in lo..hi { body(v) }`.
    pub fn range_loop(
        &mut self,
        f: &mut Fn<'ctx>,
        lo: IntValue<'ctx>,
        hi: IntValue<'ctx>,
        body: impl FnOnce(&mut Self, &mut Fn<'ctx>, IntValue<'ctx>) -> R<()>,
    ) -> R<()> {
        let i64t = self.ctx.i64_type();
        let slot = self.entry_alloca(f, i64t.into(), "iv")?;
        self.b.build_store(slot, lo)?;
        let header = self.ctx.append_basic_block(f.func, "loop");
        let body_bb = self.ctx.append_basic_block(f.func, "body");
        let exit = self.ctx.append_basic_block(f.func, "exit");
        self.b.build_unconditional_branch(header)?;
        self.b.position_at_end(header);
        let iv = self.b.build_load(i64t, slot, "i")?.into_int_value();
        let more = self
            .b
            .build_int_compare(IntPredicate::SLT, iv, hi, "more")?;
        self.b.build_conditional_branch(more, body_bb, exit)?;
        self.b.position_at_end(body_bb);
        let iv = self.b.build_load(i64t, slot, "i")?.into_int_value();
        body(self, f, iv)?;
        let iv = self.b.build_load(i64t, slot, "i")?.into_int_value();
        let next = self.b.build_int_nsw_add(iv, self.i64(1), "next")?;
        self.b.build_store(slot, next)?;
        self.b.build_unconditional_branch(header)?;
        self.b.position_at_end(exit);
        Ok(())
    }

    /// `if cond { then(...) } else { els(...) }`, the builder after both; `blocks` names the
    /// then, else and join blocks.
    pub fn if_else(
        &mut self,
        f: &mut Fn<'ctx>,
        cond: IntValue<'ctx>,
        blocks: [&str; 3],
        then: impl FnOnce(&mut Self, &mut Fn<'ctx>) -> R<()>,
        els: impl FnOnce(&mut Self, &mut Fn<'ctx>) -> R<()>,
    ) -> R<()> {
        let then_bb = self.ctx.append_basic_block(f.func, blocks[0]);
        let else_bb = self.ctx.append_basic_block(f.func, blocks[1]);
        let done = self.ctx.append_basic_block(f.func, blocks[2]);
        self.b.build_conditional_branch(cond, then_bb, else_bb)?;
        self.b.position_at_end(then_bb);
        then(self, f)?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(else_bb);
        els(self, f)?;
        self.b.build_unconditional_branch(done)?;
        self.b.position_at_end(done);
        Ok(())
    }

    /// Nested loops over `dims` (outermost first), binding each variable.
    pub fn nest(
        &mut self,
        f: &mut Fn<'ctx>,
        dims: &[(Var, usize)],
        body: &mut dyn FnMut(&mut Self, &mut Fn<'ctx>) -> R<()>,
    ) -> R<()> {
        let Some(((v, n), rest)) = dims.split_first() else {
            return body(self, f);
        };
        f.extents.insert(*v, *n);
        let (lo, hi) = (self.i64(0), self.i64(*n as i64));
        self.range_loop(f, lo, hi, |g, f, iv| {
            f.vars.insert(*v, iv);
            g.nest(f, rest, body)
        })
    }

    fn interval(&self, f: &Fn<'ctx>, i: &Index) -> (i64, i64) {
        i.interval(&|v| f.extents.get(&v).copied())
            .unwrap_or((i64::MIN, i64::MAX))
    }

    /// An index expression's value (`i64`).
    pub fn index(&mut self, f: &mut Fn<'ctx>, i: &Index) -> R<IntValue<'ctx>> {
        Ok(match i {
            Index::Var(v) => *f
                .vars
                .get(v)
                .ok_or_else(|| CodegenError::Invalid(format!("loop variable #{} unbound", v.0)))?,
            Index::Const(c) => self.i64(*c),
            Index::Add(x, y) => {
                let (x, y) = (self.index(f, x)?, self.index(f, y)?);
                self.b.build_int_nsw_add(x, y, "add")?
            }
            Index::Mul(x, c) => {
                let x = self.index(f, x)?;
                self.b.build_int_nsw_mul(x, self.i64(*c), "mul")?
            }
            Index::Div(x, c) | Index::Rem(x, c) => {
                let nonneg = self.interval(f, x).0 >= 0;
                let is_div = matches!(i, Index::Div(..));
                let x = self.index(f, x)?;
                let c = self.i64(*c);
                let b = &self.b;
                if nonneg {
                    if is_div {
                        b.build_int_unsigned_div(x, c, "div")?
                    } else {
                        b.build_int_unsigned_rem(x, c, "rem")?
                    }
                } else {
                    // Floor division and a non-negative remainder for c > 0.
                    let q = b.build_int_signed_div(x, c, "q")?;
                    let r = b.build_int_signed_rem(x, c, "r")?;
                    let neg = b.build_int_compare(IntPredicate::SLT, r, self.i64(0), "neg")?;
                    if is_div {
                        let q1 = b.build_int_sub(q, self.i64(1), "q1")?;
                        b.build_select(neg, q1, q, "fdiv")?.into_int_value()
                    } else {
                        let r1 = b.build_int_add(r, c, "r1")?;
                        b.build_select(neg, r1, r, "fmod")?.into_int_value()
                    }
                }
            }
        })
    }

    /// The element type of an expression.
    pub fn dtype_of(&self, f: &Fn<'ctx>, e: &Expr) -> R<DType> {
        Ok(match e {
            Expr::Load { buffer, .. } => self.dtype(*buffer),
            Expr::Const(t) => t.dtype(),
            Expr::Local(l) => {
                f.locals
                    .get(l)
                    .ok_or_else(|| CodegenError::Invalid(format!("local t{} undefined", l.0)))?
                    .1
            }
            Expr::Index(_, d) | Expr::Convert(d, _) => *d,
            Expr::Unary(op, a) => match op {
                terafab_ir::UnaryOp::IsNan | terafab_ir::UnaryOp::IsInf => DType::Bool,
                _ => self.dtype_of(f, a)?,
            },
            Expr::Binary(_, a, _) => self.dtype_of(f, a)?,
            Expr::Compare(..) => DType::Bool,
            Expr::Select(_, a, _) => self.dtype_of(f, a)?,
        })
    }

    /// An expression's value, in register form.
    pub fn expr(&mut self, f: &mut Fn<'ctx>, e: &Expr) -> R<BasicValueEnum<'ctx>> {
        Ok(match e {
            Expr::Load {
                buffer,
                index,
                fill,
            } => self.load(f, *buffer, index, fill.as_ref())?,
            Expr::Const(t) => self.scalar().constant(t)?,
            Expr::Local(l) => {
                f.locals
                    .get(l)
                    .ok_or_else(|| CodegenError::Invalid(format!("local t{} undefined", l.0)))?
                    .0
            }
            Expr::Index(i, d) => {
                let v = self.index(f, i)?;
                self.scalar().convert(v.into(), DType::I64, *d)?
            }
            Expr::Unary(op, a) => {
                let d = self.dtype_of(f, a)?;
                let x = self.expr(f, a)?;
                self.scalar().unary(*op, x, d)?
            }
            Expr::Binary(op, a, c) => {
                let d = self.dtype_of(f, a)?;
                let x = self.expr(f, a)?;
                let y = self.expr(f, c)?;
                self.scalar().binary(*op, x, y, d)?
            }
            Expr::Compare(op, a, c) => {
                let d = self.dtype_of(f, a)?;
                let x = self.expr(f, a)?;
                let y = self.expr(f, c)?;
                self.scalar().compare(*op, x, y, d)?
            }
            Expr::Select(c, a, x) => {
                let c = self.expr(f, c)?.into_int_value();
                let a = self.expr(f, a)?;
                let x = self.expr(f, x)?;
                self.b.build_select(c, a, x, "sel")?
            }
            Expr::Convert(to, a) => {
                let d = self.dtype_of(f, a)?;
                let x = self.expr(f, a)?;
                self.scalar().convert(x, d, *to)?
            }
        })
    }

    /// `buffer[index]`, or `fill` where the index is outside the buffer (checked only on the
    /// dims whose index interval leaves it).
    pub fn load(
        &mut self,
        f: &mut Fn<'ctx>,
        buffer: BufferId,
        index: &[Index],
        fill: Option<&terafab_ir::Tensor>,
    ) -> R<BasicValueEnum<'ctx>> {
        let d = self.dtype(buffer);
        let (ptr, inside) = self.load_address(f, buffer, index, fill.is_some())?;
        let mt = self.scalar().mem_type(d)?;
        let raw = self.b.build_load(mt, ptr, "ld")?;
        let v = self.scalar().mem_to_reg(raw, d)?;
        Ok(match (inside, fill) {
            (Some(ok), Some(fill)) => {
                let fv = self.scalar().constant(fill)?;
                self.b.build_select(ok, v, fv, "fill")?
            }
            _ => v,
        })
    }

    /// The address of `buffer[index]` (a load's or a store's) and, with `checked`, whether the
    /// index is inside the buffer (`None` when no dim's interval can leave it); an index
    /// outside is clamped to 0 on that dim, so the address is always in the buffer.
    pub fn load_address(
        &mut self,
        f: &mut Fn<'ctx>,
        buffer: BufferId,
        index: &[Index],
        checked: bool,
    ) -> R<(PointerValue<'ctx>, Option<IntValue<'ctx>>)> {
        let (d, shape, strides) = self.layout(buffer);
        let mut inside: Option<IntValue<'ctx>> = None;
        // Which dims' intervals leave the buffer.
        let leaves: Vec<bool> = index
            .iter()
            .zip(&shape)
            .map(|(ix, &n)| {
                let (lo, hi) = self.interval(f, ix);
                lo < 0 || hi >= n as i64
            })
            .collect();
        let off = if !checked || !leaves.contains(&true) {
            // No bounds to check: the element offset as one index, simplified, so that dims
            // that split one flat variable recombine (`(n / w) * w + n % w` is `n`: an
            // epilogue's row-major store of a convolution's pixels, whose divisions LLVM
            // cannot undo for a width that is not a power of two, and whose stores then stay
            // scalar).
            let flat = terafab_ir::kernel::offset_index(index, &strides);
            let flat = terafab_ir::kernel::split::simplify(&flat, &|v| f.extents.get(&v).copied());
            self.index(f, &flat)?
        } else {
            // Dim by dim: each dim whose interval leaves the buffer checked, and clamped to 0
            // outside.
            let mut off = self.i64(0);
            for (k, ix) in index.iter().enumerate() {
                let mut v = self.index(f, ix)?;
                if leaves[k] {
                    let ok = self.b.build_int_compare(
                        IntPredicate::ULT,
                        v,
                        self.i64(shape[k] as i64),
                        "in",
                    )?;
                    inside = Some(match inside {
                        Some(a) => self.b.build_and(a, ok, "in")?,
                        None => ok,
                    });
                    v = self
                        .b
                        .build_select(ok, v, self.i64(0), "clamp")?
                        .into_int_value();
                }
                let t = self
                    .b
                    .build_int_nsw_mul(v, self.i64(strides[k] as i64), "o")?;
                off = self.b.build_int_nsw_add(off, t, "off")?;
            }
            off
        };
        let mt = self.scalar().mem_type(d)?;
        let ptr = unsafe {
            self.b
                .build_in_bounds_gep(mt, f.ptrs[&buffer], &[off], "p")?
        };
        Ok((ptr, inside))
    }

    /// An exported entry `symbol(ptr bufs, ptr rt) -> ret`, with the builder at its entry.
    fn entry_fn(
        &mut self,
        symbol: &str,
        ret: Option<inkwell::types::IntType<'ctx>>,
    ) -> (FunctionValue<'ctx>, PointerValue<'ctx>, PointerValue<'ctx>) {
        let p = self.ptr_type();
        let params = [p.into(), p.into()];
        let fty = match ret {
            Some(t) => t.fn_type(&params, false),
            None => self.ctx.void_type().fn_type(&params, false),
        };
        let f = self
            .module
            .add_function(symbol, fty, Some(Linkage::External));
        let entry = self.ctx.append_basic_block(f, "entry");
        self.b.position_at_end(entry);
        let bufs = f.get_nth_param(0).unwrap().into_pointer_value();
        let rt = f.get_nth_param(1).unwrap().into_pointer_value();
        bufs.set_name("bufs");
        rt.set_name("rt");
        (f, bufs, rt)
    }

    /// Field `i` of the runtime interface `rt`.
    fn rt_field(&self, rt: PointerValue<'ctx>, i: u32, name: &str) -> R<PointerValue<'ctx>> {
        let at = self.b.build_struct_gep(rt_type(self.ctx), rt, i, name)?;
        Ok(self
            .b
            .build_load(self.ptr_type(), at, name)?
            .into_pointer_value())
    }

    /// `rt->parallel_for(rt->pool, task, bufs, ntasks)`.
    fn parallel_for(
        &mut self,
        rt: PointerValue<'ctx>,
        task: FunctionValue<'ctx>,
        bufs: PointerValue<'ctx>,
        ntasks: u64,
    ) -> R<()> {
        let (p, i64t) = (self.ptr_type(), self.ctx.i64_type());
        let par_ty = self
            .ctx
            .void_type()
            .fn_type(&[p.into(), p.into(), p.into(), i64t.into()], false);
        let par = self.rt_field(rt, 0, "parallel_for")?;
        let pool = self.rt_field(rt, 1, "pool")?;
        self.b.build_indirect_call(
            par_ty,
            par,
            &[
                pool.into(),
                task.as_global_value().as_pointer_value().into(),
                bufs.into(),
                i64t.const_int(ntasks, false).into(),
            ],
            "",
        )?;
        Ok(())
    }

    /// The driver: `i32 run(ptr bufs, ptr rt)`.
    fn driver(&mut self, symbol: &str, plans: &[KernelPlan]) -> R<()> {
        let (p, i64t, i32t) = (self.ptr_type(), self.ctx.i64_type(), self.ctx.i32_type());
        let (f, bufs, rt) = self.entry_fn(symbol, Some(i32t));
        let call_ty = i32t.fn_type(&[p.into(), i64t.into(), p.into()], false);
        for (i, plan) in plans.iter().enumerate() {
            match plan {
                KernelPlan::Compiled { phases } => {
                    for (task, ntasks) in phases {
                        let tf = self.module.get_function(task).ok_or_else(|| {
                            CodegenError::Llvm(format!("task function {task} missing"))
                        })?;
                        self.parallel_for(rt, tf, bufs, *ntasks)?;
                    }
                }
                KernelPlan::Call { .. } => {
                    let call = self.rt_field(rt, 2, "call")?;
                    let cctx = self.rt_field(rt, 3, "call_ctx")?;
                    let r = self
                        .b
                        .build_indirect_call(
                            call_ty,
                            call,
                            &[
                                cctx.into(),
                                i64t.const_int(i as u64, false).into(),
                                bufs.into(),
                            ],
                            "rc",
                        )?
                        .try_as_basic_value()
                        .basic()
                        .unwrap()
                        .into_int_value();
                    let failed = self.b.build_int_compare(
                        IntPredicate::NE,
                        r,
                        i32t.const_zero(),
                        "failed",
                    )?;
                    let fail_bb = self.ctx.append_basic_block(f, "fail");
                    let next = self.ctx.append_basic_block(f, "next");
                    self.b.build_conditional_branch(failed, fail_bb, next)?;
                    self.b.position_at_end(fail_bb);
                    self.b.build_return(Some(&r))?;
                    self.b.position_at_end(next);
                }
            }
        }
        self.b.build_return(Some(&i32t.const_zero()))?;
        Ok(())
    }

    /// `void init(ptr bufs, ptr rt)`: packs the constant GEMM operands.
    fn init(&mut self, symbol: &str, calls: &[(FunctionValue<'ctx>, u64)]) -> R<()> {
        let (_, bufs, rt) = self.entry_fn(symbol, None);
        for &(tf, n) in calls {
            self.parallel_for(rt, tf, bufs, n)?;
        }
        self.b.build_return(None)?;
        Ok(())
    }
}

/// The canonical form of a kernel: its loop nest with buffers numbered by their position among
/// the kernel's buffers, and those buffers' types, layouts and constness. Kernels with the
/// same key compile to the same code (weights and activations come by pointer).
fn kernel_key(p: &KernelProgram, k: &Kernel, nest: &LoopNest) -> String {
    use std::fmt::Write as _;
    let bufs = Gen::kernel_buffers(k);
    let pos =
        |b: BufferId| BufferId(bufs.iter().position(|x| *x == b).unwrap_or(usize::MAX) as u32);
    let mut key = String::new();
    for &b in &bufs {
        let buf = p.buffer(b);
        // Only constness changes the code (constant GEMM operands are packed once).
        let storage = match buf.storage {
            Storage::Const(_) => "const",
            Storage::Input(_) | Storage::Temp => "data",
        };
        let _ = write!(
            key,
            "{}{:?}{:?}{storage};",
            buf.dtype, buf.shape, buf.strides
        );
    }
    let _ = write!(
        key,
        "{:?}",
        terafab_ir::kernel::split::map_buffers(nest, &pos)
    );
    key
}

/// A name usable in LLVM symbols.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
