//! Kernel IR to Cranelift IR, through `cranelift-frontend`.
//!
//! Every loop-nest kernel becomes one task function `kN(bufs: i64, task: i64)` (the runtime's
//! `TaskFn`): it reads its buffers' pointers from the program's buffer table, and runs the
//! points `lo..hi` of its *parallel prefix* (the fewest leading dims of its space with at least
//! 64 points, flattened; the same split as the LLVM backend) picked by the task number; the
//! rest of the space and every stage's own variables are plain loops. Reduce stages are
//! accumulator loops in the body's register type (f16 and bf16 in f32, rounded once at the
//! end), stores write through index arithmetic (floor division only where an interval can be
//! negative), loads with a fill value check only the dims whose index interval leaves the
//! buffer.
//!
//! 128-bit SIMD, over f32 with ops that have lane-wise forms (`+ - * /`, min, max, neg, abs,
//! sqrt exactly; `exp`, `erf` and `logistic` as the same straight-line arithmetic as their
//! scalar forms, see [`crate::fastmath`]): where every stage of a nest allows it, its last space dim runs sixteen and then
//! four lanes at a time (reductions keep one `f32x4` accumulator per group of four lanes, the
//! epilogue stores lane-wise), else a store's own innermost loop does. Loads contiguous in the
//! lane variable are vector loads, loads independent of it are splats, other loads (strided,
//! bounds-checked padding) are gathered lane by lane; vector stores are contiguous, and a store
//! that cannot be computed four lanes at once (an op without a lane-wise form such as `erf`,
//! a strided store) after lane-wise reductions is computed lane by lane from the reductions'
//! lanes. A contraction whose lane loads do not depend on the last dim of the parallel prefix
//! (a matmul's right operand along the rows of the left, a convolution's input along the
//! output channels) computes [`ROWS`] values of that dim together (a *row block*: the task
//! split counts blocks), each with its own accumulators, the loads they share made once. The
//! remainder runs one element at a time. Each element is computed by the same operations in
//! the same order either way, so results do not depend on the split (nor on the thread count).
//!
//! Kernels of the GEMM form (matmuls, convolutions) run the packed GEMM schedule instead
//! ([`gemm`]: pack phases, then compute tasks over blocks of a register-blocked f32x4
//! micro-kernel); call kernels and kernels touching float8 types run through the runtime's call
//! (the kernel interpreter).

use std::collections::{HashMap, HashSet};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, Block, FuncRef, Function, InstBuilder, MemFlagsData, Signature, UserFuncName, Value,
    types,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{FuncId, Linkage, Module};
use terafab_ir::kernel::{
    Body, BufferId, Expr, Index, Kernel, KernelProgram, Local, LoopNest, Stage, Var,
};
use terafab_ir::{BinaryOp, DType, ReduceKind, UnaryOp};

use terafab_runtime::gemm::{PackedOperand, PackedOperands, RowPack};
use terafab_runtime::{TaskSplit, split_tasks};

use crate::CodegenError;
use crate::libm::Helper;
use crate::scalar::{reg_type, supported};

mod gemm;

pub use gemm::NR;

pub(crate) type R<T> = Result<T, CodegenError>;

/// How the driver runs one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelPlan {
    /// Compiled: its phases, each a task function (by name and id) run over `ntasks` tasks (a
    /// loop nest has one phase; a GEMM packs its activation operands, then computes).
    Compiled { phases: Vec<Phase> },
    /// Run by the runtime's `call` (a call kernel, or one over a type not compiled here).
    Call { reason: String },
}

/// One task function of a compiled kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phase {
    pub name: String,
    pub func: FuncId,
    pub ntasks: u64,
}

/// Which kernels the JIT module holds, and the text of their Cranelift IR when asked for.
pub struct Generated {
    pub kernels: Vec<KernelPlan>,
    /// The phases run once, before any run: constant GEMM operands packed.
    pub init: Vec<Phase>,
    /// Constant row-major B operands packed once at load by the runtime's copy loop
    /// ([`terafab_runtime::gemm::pack_rows`]) instead of an init phase.
    pub row_packs: Vec<RowPack>,
    /// The packed GEMM operands: the buffer table has `program.buffers.len() + packed.len()`
    /// slots.
    pub packed: Vec<PackedOperand>,
    /// The size of the per-run scratch region (the largest need of one kernel).
    pub scratch_bytes: usize,
    /// The Cranelift IR of each compiled kernel's functions, each headed by its task count
    /// (only when generating with `emit`).
    pub clif: Vec<String>,
}

/// What every function of a module is built with.
struct ModuleGen<'a, M: Module> {
    module: &'a mut M,
    p: &'a KernelProgram,
    helpers: HashMap<Helper, FuncId>,
    ctx: cranelift_codegen::Context,
    fctx: FunctionBuilderContext,
    /// Whether the target has fused multiply-add (the GEMM micro-kernel's `fma`).
    fma: bool,
    emit: bool,
}

impl<M: Module> ModuleGen<'_, M> {
    /// Define the task function `name(bufs, task)` of kernel `k` with the body `body`;
    /// returns its id, what the body returned and, with `emit`, its text.
    fn task_fn<T>(
        &mut self,
        k: &Kernel,
        name: &str,
        body: impl FnOnce(&mut FnGen<'_, '_>) -> R<T>,
    ) -> R<(FuncId, T, Option<String>)> {
        let cc = self.module.target_config().default_call_conv;
        let mut sig = Signature::new(cc);
        sig.params.push(AbiParam::new(types::I64));
        sig.params.push(AbiParam::new(types::I64));
        let id = self
            .module
            .declare_function(name, Linkage::Local, &sig)
            .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        self.ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        let out = {
            let mut imported = HashMap::new();
            for (&h, &fid) in &self.helpers {
                imported.insert(h, (fid, None));
            }
            let b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
            let mut g = FnGen {
                b,
                p: self.p,
                module: &mut *self.module,
                helpers: imported,
                ptrs: HashMap::new(),
                vars: HashMap::new(),
                extents: HashMap::new(),
                locals: HashMap::new(),
                vplanned: HashSet::new(),
                vlocals: HashMap::new(),
                group: 0,
                shared: None,
                cache: HashMap::new(),
                fma: self.fma,
            };
            let out = body(&mut g).map_err(|e| in_kernel(&k.name, e))?;
            g.b.seal_all_blocks();
            g.b.finalize(self.module.target_config());
            out
        };
        let text = self.emit.then(|| {
            format!(
                "; kernel @{} ({})\n{}",
                k.name,
                k.kind.name(),
                self.ctx.func.display()
            )
        });
        self.module
            .define_function(id, &mut self.ctx)
            .map_err(|e| in_kernel(&k.name, CodegenError::Cranelift(format!("{e:?}"))))?;
        self.module.clear_context(&mut self.ctx);
        Ok((id, out, text))
    }
}

/// Whether the module's target has fused multiply-add.
fn has_fma<M: Module>(module: &M) -> bool {
    module
        .isa()
        .isa_flags()
        .iter()
        .any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
}

/// Lower every kernel of `p` into `module`; with `emit`, keep the text of each function.
pub fn generate<M: Module>(module: &mut M, p: &KernelProgram, emit: bool) -> R<Generated> {
    let cc = module.target_config().default_call_conv;
    let mut helpers = HashMap::new();
    for h in Helper::ALL {
        let id = module
            .declare_function(h.symbol(), Linkage::Import, &h.signature(cc))
            .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        helpers.insert(h, id);
    }
    let fma = has_fma(module);
    let mut mg = ModuleGen {
        ctx: module.make_context(),
        module,
        p,
        helpers,
        fctx: FunctionBuilderContext::new(),
        fma,
        emit,
    };
    let mut kernels = Vec::new();
    let mut clif = Vec::new();
    let mut init = Vec::new();
    let mut row_packs = Vec::new();
    let mut packed = PackedOperands::new(p.buffers.len());
    for (i, k) in p.kernels.iter().enumerate() {
        let nest = match &k.body {
            Body::Call(f) => {
                let ops: Vec<&str> = f.body.nodes.iter().map(|n| n.op.name()).collect();
                kernels.push(KernelPlan::Call {
                    reason: format!("call of {}", ops.join(", ")),
                });
                continue;
            }
            Body::Loops(n) => n,
        };
        if let Some(d) = unsupported_type(p, k, nest) {
            kernels.push(KernelPlan::Call {
                reason: format!("computes with {d}"),
            });
            continue;
        }
        let name = format!("k{i}_{}", sanitize(&k.name));
        let mut texts = Vec::new();
        let phases = match gemm::gemm(&mut mg, &mut packed, k, nest, &name)? {
            Some(g) => {
                for rp in &g.row_packs {
                    texts.push(format!(
                        "; b{} packed once from b{} (rows of {} floats, {} apart, K = {})\n",
                        rp.dst.0, rp.src.0, rp.n, rp.k_stride, rp.k
                    ));
                }
                row_packs.extend(g.row_packs);
                for (phase, text) in g.init {
                    texts.extend(text.map(|t| format!("; {} task(s), once\n{t}", phase.ntasks)));
                    init.push(phase);
                }
                for (phase, text) in &g.phases {
                    texts.extend(
                        text.as_ref()
                            .map(|t| format!("; {} task(s)\n{t}", phase.ntasks)),
                    );
                }
                g.phases.into_iter().map(|x| x.0).collect()
            }
            None => {
                let (func, ntasks, text) = mg.task_fn(k, &name, |g| g.loop_kernel(k, nest))?;
                texts.extend(text.map(|t| format!("; {ntasks} task(s)\n{t}")));
                vec![Phase { name, func, ntasks }]
            }
        };
        if emit {
            clif.push(texts.join("\n"));
        }
        kernels.push(KernelPlan::Compiled { phases });
    }
    Ok(Generated {
        kernels,
        init,
        row_packs,
        packed: packed.list,
        scratch_bytes: packed.scratch_bytes,
        clif,
    })
}

fn in_kernel(name: &str, e: CodegenError) -> CodegenError {
    match e {
        CodegenError::Kernel { .. } => e,
        e => CodegenError::Kernel {
            kernel: name.to_string(),
            source: Box::new(e),
        },
    }
}

/// A type the kernel touches that the backend does not compute with, if any.
fn unsupported_type(p: &KernelProgram, k: &Kernel, nest: &LoopNest) -> Option<DType> {
    for b in k.inputs.iter().chain(&k.outputs) {
        let d = p.buffer(*b).dtype;
        if !supported(d) {
            return Some(d);
        }
    }
    let mut bad = None;
    let mut check = |e: &Expr| {
        e.walk(&mut |x| {
            let d = match x {
                Expr::Const(t) => Some(t.dtype()),
                Expr::Index(_, d) | Expr::Convert(d, _) => Some(*d),
                Expr::Load { fill: Some(t), .. } => Some(t.dtype()),
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

/// A name usable as a symbol.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The state of one function being built.
pub(crate) struct FnGen<'a, 'f> {
    pub b: FunctionBuilder<'f>,
    pub p: &'a KernelProgram,
    module: &'a mut dyn ModuleRef,
    /// Helper functions: their module id and, once used, their reference in this function.
    helpers: HashMap<Helper, (FuncId, Option<FuncRef>)>,
    ptrs: HashMap<BufferId, Value>,
    vars: HashMap<Var, Value>,
    extents: HashMap<Var, usize>,
    locals: HashMap<Local, (Value, DType)>,
    /// Reduction locals computed four lanes at a time (see [`FnGen::lane_stages`]), and their
    /// `f32x4` values once computed.
    vplanned: HashSet<Local>,
    vlocals: HashMap<Local, Vec<Value>>,
    /// The group of four lanes being generated (an index into `vlocals`' values: row `r` of a
    /// row block, group `u` of `g` groups, is `r * g + u`).
    group: usize,
    /// In a row block (see [`FnGen::row_block`]): its variable; lane values of expressions
    /// that use neither it nor a local are computed once per block and reused by every row.
    shared: Option<Var>,
    /// Those values, by expression (address) and first lane's index.
    cache: HashMap<(usize, Value), Value>,
    /// Whether the target has fused multiply-add.
    pub fma: bool,
}

/// The rows of a row block: a contraction computes this many consecutive values of one space
/// variable together, so each row's accumulators reuse the lane loads the rows share.
const ROWS: usize = 2;

/// The one thing a function needs of its module: importing a declared function.
pub(crate) trait ModuleRef {
    fn import(&mut self, id: FuncId, func: &mut Function) -> FuncRef;
}

impl<M: Module> ModuleRef for M {
    fn import(&mut self, id: FuncId, func: &mut Function) -> FuncRef {
        self.declare_func_in_func(id, func)
    }
}

/// Which lanes a vectorized expression reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lanes {
    /// The same value in every lane.
    Splat,
    /// Consecutive elements.
    Contiguous,
    /// Different elements, read one lane at a time.
    Gather,
}

impl FnGen<'_, '_> {
    /// A call of a helper function; returns its result.
    pub fn helper(&mut self, h: Helper, args: &[Value]) -> R<Value> {
        let entry = self
            .helpers
            .get_mut(&h)
            .ok_or_else(|| CodegenError::Cranelift(format!("helper {} missing", h.symbol())))?;
        let fref = match entry.1 {
            Some(f) => f,
            None => {
                let f = self.module.import(entry.0, self.b.func);
                entry.1 = Some(f);
                f
            }
        };
        let call = self.b.ins().call(fref, args);
        Ok(self.b.inst_results(call)[0])
    }

    fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    /// The distinct buffers a kernel touches.
    fn kernel_buffers(k: &Kernel) -> Vec<BufferId> {
        let mut bufs: Vec<BufferId> = Vec::new();
        for &b in k.inputs.iter().chain(&k.outputs) {
            if !bufs.contains(&b) {
                bufs.push(b);
            }
        }
        bufs
    }

    /// The entry block of a task function `(bufs, task)`; returns its parameters.
    pub(crate) fn entry(&mut self) -> (Value, Value) {
        let entry = self.b.create_block();
        self.b.append_block_params_for_function_params(entry);
        self.b.switch_to_block(entry);
        (self.b.block_params(entry)[0], self.b.block_params(entry)[1])
    }

    /// Read the pointers of `bufs` from the buffer table.
    pub(crate) fn load_ptrs(&mut self, table: Value, bufs: &[BufferId]) {
        for &b in bufs {
            let ptr = self.b.ins().load(
                types::I64,
                MemFlagsData::trusted().with_readonly(),
                table,
                (b.index() * 8) as i32,
            );
            self.ptrs.insert(b, ptr);
        }
    }

    /// The task function of a loop nest; returns its task count.
    fn loop_kernel(&mut self, k: &Kernel, nest: &LoopNest) -> R<u64> {
        for (d, &n) in nest.space.iter().enumerate() {
            self.extents.insert(Var(d as u32), n);
        }
        // The last space dim runs four lanes at a time where every stage allows it (then it is
        // never part of the parallel prefix, unless it is the only dim).
        let last = Var(nest.space.len().saturating_sub(1) as u32);
        let lanes = !nest.space.is_empty() && self.lane_stages(&nest.stages, last);
        // A nest whose other dims are all 1 (a matrix-vector product, `[1, N]`) runs like a
        // one-dim one: its tasks split the lane dim (so it runs on every thread).
        let (outer_dims, _) = nest.space.split_at(nest.space.len().saturating_sub(1));
        let flat = lanes && outer_dims.iter().all(|&n| n == 1);
        let max_prefix = if lanes && !flat {
            nest.space.len() - 1
        } else {
            nest.space.len()
        };
        // The parallel prefix and the tasks, as the LLVM backend splits them; with a row block,
        // the prefix's last dim counts blocks of rows.
        let mut split = split_tasks(nest, max_prefix);
        let mut space = nest.space.clone();
        let block = if lanes && !flat {
            self.row_block(nest, &split, last)
        } else {
            None
        };
        if let Some(w) = block {
            let mut blocked = nest.clone();
            blocked.space[w.0 as usize] = nest.space[w.0 as usize].div_ceil(ROWS);
            let s = split_tasks(&blocked, split.prefix);
            if s.prefix == split.prefix {
                split = s;
                space = blocked.space;
            }
        }
        let block = block.filter(|_| space != nest.space);
        let TaskSplit {
            prefix,
            total,
            chunk,
            ntasks,
        } = split;

        let (table, task) = self.entry();
        self.load_ptrs(table, &Self::kernel_buffers(k));
        let lo = self.b.ins().imul_imm_s(task, chunk as i64);
        let end = self.b.ins().iadd_imm_s(lo, chunk as i64);
        let total_v = self.iconst(total as i64);
        let over = self.b.ins().icmp(IntCC::SignedGreaterThan, end, total_v);
        let hi = self.b.ins().select(over, total_v, end);

        let rest: Vec<(Var, usize)> = (prefix..nest.space.len())
            .map(|d| (Var(d as u32), nest.space[d]))
            .collect();
        match lanes {
            true if flat => {
                for d in 0..last.0 {
                    let z = self.iconst(0);
                    self.vars.insert(Var(d), z);
                }
                self.lane_loop(lo, hi, last, &nest.stages, None)?;
            }
            true => {
                self.range_loop(lo, hi, 1, |g, flat| {
                    g.split_prefix(flat, prefix, &space);
                    let (outer, _) = rest.split_at(rest.len() - 1);
                    let n_last = nest.space[last.0 as usize] as i64;
                    let Some(w) = block else {
                        return g.nest(outer, &mut |g| {
                            let (z, n) = (g.iconst(0), g.iconst(n_last));
                            g.lane_loop(z, n, last, &nest.stages, None)
                        });
                    };
                    // A whole block of rows, or the last rows one at a time.
                    let n_w = nest.space[w.0 as usize] as i64;
                    let w0 = g.var(w)?;
                    let w0 = g.b.ins().imul_imm_s(w0, ROWS as i64);
                    g.vars.insert(w, w0);
                    let end = g.b.ins().iadd_imm_s(w0, ROWS as i64);
                    let n_w_v = g.iconst(n_w);
                    let whole = g.b.ins().icmp(IntCC::SignedLessThanOrEqual, end, n_w_v);
                    let (full, tail, merge) =
                        (g.b.create_block(), g.b.create_block(), g.b.create_block());
                    g.b.ins().brif(whole, full, &[], tail, &[]);
                    g.b.switch_to_block(full);
                    g.nest(outer, &mut |g| {
                        let (z, n) = (g.iconst(0), g.iconst(n_last));
                        g.vars.insert(w, w0);
                        g.lane_loop(z, n, last, &nest.stages, Some((w, w0)))
                    })?;
                    g.b.ins().jump(merge, &[]);
                    g.b.switch_to_block(tail);
                    // `lane_loop` forgets its plan once done: plan again.
                    g.lane_stages(&nest.stages, last);
                    g.range_loop(w0, n_w_v, 1, |g, row| {
                        g.vars.insert(w, row);
                        g.nest(outer, &mut |g| {
                            let (z, n) = (g.iconst(0), g.iconst(n_last));
                            g.lane_loop(z, n, last, &nest.stages, None)
                        })
                    })?;
                    g.b.ins().jump(merge, &[]);
                    g.b.switch_to_block(merge);
                    Ok(())
                })?;
            }
            false => {
                self.range_loop(lo, hi, 1, |g, flat| {
                    g.split_prefix(flat, prefix, &nest.space);
                    g.nest(&rest, &mut |g| g.stages(&nest.stages))
                })?;
            }
        }
        self.b.ins().return_(&[]);
        Ok(ntasks)
    }

    /// Bind the prefix variables from a flat prefix point.
    fn split_prefix(&mut self, flat: Value, prefix: usize, space: &[usize]) {
        let mut rest = flat;
        for d in (0..prefix).rev() {
            let v = if d == 0 {
                rest
            } else {
                let n = space[d] as i64;
                let v = self.b.ins().urem_imm_s(rest, n);
                rest = self.b.ins().udiv_imm_s(rest, n);
                v
            };
            self.vars.insert(Var(d as u32), v);
        }
    }

    /// `for iv in (lo..hi).step_by(step) { body(iv) }` (with `step` > 1, the caller makes
    /// `hi - lo` a multiple of it).
    fn range_loop(
        &mut self,
        lo: Value,
        hi: Value,
        step: i64,
        body: impl FnOnce(&mut Self, Value) -> R<()>,
    ) -> R<()> {
        let header: Block = self.b.create_block();
        let body_bb = self.b.create_block();
        let exit = self.b.create_block();
        let iv = self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[lo.into()]);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, iv, hi);
        self.b.ins().brif(more, body_bb, &[], exit, &[]);
        self.b.switch_to_block(body_bb);
        body(self, iv)?;
        let next = self.b.ins().iadd_imm_s(iv, step);
        self.b.ins().jump(header, &[next.into()]);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Nested loops over `dims` (outermost first), binding each variable.
    fn nest(&mut self, dims: &[(Var, usize)], body: &mut dyn FnMut(&mut Self) -> R<()>) -> R<()> {
        let Some(((v, n), rest)) = dims.split_first() else {
            return body(self);
        };
        self.extents.insert(*v, *n);
        let (lo, hi) = (self.iconst(0), self.iconst(*n as i64));
        self.range_loop(lo, hi, 1, |g, iv| {
            g.vars.insert(*v, iv);
            g.nest(rest, body)
        })
    }

    /// The stages of a loop nest at one point of its space.
    fn stages(&mut self, stages: &[Stage]) -> R<()> {
        for s in stages {
            match s {
                Stage::Reduce {
                    local,
                    kind,
                    vars,
                    body,
                } => {
                    let d = self.dtype_of(body)?;
                    let ty = reg_type(d)?;
                    let acc = self.b.declare_var(ty);
                    let id = self.identity(*kind, d)?;
                    self.b.def_var(acc, id);
                    for (v, n) in vars {
                        self.extents.insert(*v, *n);
                    }
                    self.nest(vars, &mut |g| {
                        let x = g.expr(body)?;
                        let a = g.b.use_var(acc);
                        let r = g.combine(*kind, a, x, d)?;
                        g.b.def_var(acc, r);
                        Ok(())
                    })?;
                    let mut v = self.b.use_var(acc);
                    if matches!(d, DType::F16 | DType::BF16) {
                        v = self.round_narrow(v, d)?;
                    }
                    self.locals.insert(*local, (v, d));
                }
                Stage::Store {
                    buffer,
                    vars,
                    index,
                    value,
                } => {
                    for (v, n) in vars {
                        self.extents.insert(*v, *n);
                    }
                    match vars.split_last() {
                        Some((&(last, n), outer))
                            if self.vectorizable(*buffer, index, value, last) =>
                        {
                            self.nest(outer, &mut |g| {
                                let (z, n) = (g.iconst(0), g.iconst(n as i64));
                                g.vector_loop(z, n, last, *buffer, index, value)
                            })?;
                        }
                        _ => {
                            self.nest(vars, &mut |g| {
                                let x = g.expr(value)?;
                                g.store(*buffer, index, x)
                            })?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn interval(&self, i: &Index) -> (i64, i64) {
        i.interval(&|v| self.extents.get(&v).copied())
            .unwrap_or((i64::MIN, i64::MAX))
    }

    /// An index expression's value (`i64`).
    fn index(&mut self, i: &Index) -> R<Value> {
        Ok(match i {
            Index::Var(v) => *self
                .vars
                .get(v)
                .ok_or_else(|| CodegenError::Invalid(format!("loop variable #{} unbound", v.0)))?,
            Index::Const(c) => self.iconst(*c),
            Index::Add(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.ins().iadd(x, y)
            }
            Index::Mul(x, c) => {
                let x = self.index(x)?;
                self.b.ins().imul_imm_s(x, *c)
            }
            Index::Div(x, c) | Index::Rem(x, c) => {
                if *c <= 0 {
                    return Err(CodegenError::Invalid(format!("index division by {c}")));
                }
                let nonneg = self.interval(x).0 >= 0;
                let is_div = matches!(i, Index::Div(..));
                let x = self.index(x)?;
                let c = *c;
                let b = &mut self.b;
                if nonneg {
                    if is_div {
                        b.ins().udiv_imm_s(x, c)
                    } else {
                        b.ins().urem_imm_s(x, c)
                    }
                } else {
                    // Floor division and a non-negative remainder for c > 0.
                    let q = b.ins().sdiv_imm_s(x, c);
                    let r = b.ins().srem_imm_s(x, c);
                    let neg = b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
                    if is_div {
                        let q1 = b.ins().iadd_imm_s(q, -1);
                        b.ins().select(neg, q1, q)
                    } else {
                        let r1 = b.ins().iadd_imm_s(r, c);
                        b.ins().select(neg, r1, r)
                    }
                }
            }
        })
    }

    /// The element type of an expression.
    fn dtype_of(&self, e: &Expr) -> R<DType> {
        Ok(match e {
            Expr::Load { buffer, .. } => self.p.buffer(*buffer).dtype,
            Expr::Const(t) => t.dtype(),
            Expr::Local(l) => {
                self.locals
                    .get(l)
                    .ok_or_else(|| CodegenError::Invalid(format!("local t{} undefined", l.0)))?
                    .1
            }
            Expr::Index(_, d) | Expr::Convert(d, _) => *d,
            Expr::Unary(op, a) => match op {
                UnaryOp::IsNan | UnaryOp::IsInf => DType::Bool,
                _ => self.dtype_of(a)?,
            },
            Expr::Binary(_, a, _) => self.dtype_of(a)?,
            Expr::Compare(..) => DType::Bool,
            Expr::Select(_, a, _) => self.dtype_of(a)?,
        })
    }

    /// An expression's value, in register form.
    fn expr(&mut self, e: &Expr) -> R<Value> {
        Ok(match e {
            Expr::Load {
                buffer,
                index,
                fill,
            } => self.load(*buffer, index, fill.as_ref())?,
            Expr::Const(t) => self.constant(t)?,
            Expr::Local(l) => {
                self.locals
                    .get(l)
                    .ok_or_else(|| CodegenError::Invalid(format!("local t{} undefined", l.0)))?
                    .0
            }
            Expr::Index(i, d) => {
                let v = self.index(i)?;
                self.convert(v, DType::I64, *d)?
            }
            Expr::Unary(op, a) => {
                let d = self.dtype_of(a)?;
                let x = self.expr(a)?;
                self.unary(*op, x, d)?
            }
            Expr::Binary(op, a, c) => {
                let d = self.dtype_of(a)?;
                let x = self.expr(a)?;
                let y = self.expr(c)?;
                self.binary(*op, x, y, d)?
            }
            Expr::Compare(op, a, c) => {
                let d = self.dtype_of(a)?;
                let x = self.expr(a)?;
                let y = self.expr(c)?;
                self.compare(*op, x, y, d)?
            }
            Expr::Select(c, a, x) => {
                let c = self.expr(c)?;
                let a = self.expr(a)?;
                let x = self.expr(x)?;
                self.b.ins().select(c, a, x)
            }
            Expr::Convert(to, a) => {
                let d = self.dtype_of(a)?;
                let x = self.expr(a)?;
                self.convert(x, d, *to)?
            }
        })
    }

    /// Whether a load of `buffer` at `index` needs bounds checks (some dim's interval leaves
    /// the buffer).
    fn needs_check(&self, buffer: BufferId, index: &[Index]) -> bool {
        let shape = &self.p.buffer(buffer).shape;
        index.iter().zip(shape).any(|(ix, &n)| {
            let (lo, hi) = self.interval(ix);
            lo < 0 || hi >= n as i64
        })
    }

    /// The address of element `index` of `buffer`, and whether it is inside (only with
    /// `check`: the dims whose interval leaves the buffer are compared, and clamped to 0).
    fn address(
        &mut self,
        buffer: BufferId,
        index: &[Index],
        check: bool,
    ) -> R<(Value, Option<Value>)> {
        let buf = self.p.buffer(buffer);
        let (d, shape, strides) = (buf.dtype, buf.shape.clone(), buf.strides.clone());
        if index.len() != shape.len() {
            return Err(CodegenError::Invalid(format!(
                "{} indices into %{} of rank {}",
                index.len(),
                buf.name,
                shape.len()
            )));
        }
        let mut off: Option<Value> = None;
        let mut inside: Option<Value> = None;
        for (k, ix) in index.iter().enumerate() {
            let (lo, hi) = self.interval(ix);
            let mut v = self.index(ix)?;
            if check && (lo < 0 || hi >= shape[k] as i64) {
                let ok = self
                    .b
                    .ins()
                    .icmp_imm_s(IntCC::UnsignedLessThan, v, shape[k] as i64);
                inside = Some(match inside {
                    Some(a) => self.b.ins().band(a, ok),
                    None => ok,
                });
                let zero = self.iconst(0);
                v = self.b.ins().select(ok, v, zero);
            }
            let t = match strides[k] {
                1 => v,
                s => self.b.ins().imul_imm_s(v, s as i64),
            };
            off = Some(match off {
                Some(o) => self.b.ins().iadd(o, t),
                None => t,
            });
        }
        let off = match off {
            Some(o) => o,
            None => self.iconst(0),
        };
        let bytes = match d.size_bytes() {
            1 => off,
            n => self.b.ins().imul_imm_s(off, n as i64),
        };
        let base = *self
            .ptrs
            .get(&buffer)
            .ok_or_else(|| CodegenError::Invalid(format!("buffer %{} not an operand", buf.name)))?;
        Ok((self.b.ins().iadd(base, bytes), inside))
    }

    /// `buffer[index]`, or `fill` where the index is outside the buffer.
    fn load(
        &mut self,
        buffer: BufferId,
        index: &[Index],
        fill: Option<&terafab_ir::Tensor>,
    ) -> R<Value> {
        let d = self.p.buffer(buffer).dtype;
        let (addr, inside) = self.address(buffer, index, fill.is_some())?;
        let v = self.load_scalar(addr, d)?;
        Ok(match (inside, fill) {
            (Some(ok), Some(fill)) => {
                let fv = self.constant(fill)?;
                self.b.ins().select(ok, v, fv)
            }
            _ => v,
        })
    }

    /// `buffer[index] = x` (x in register form).
    fn store(&mut self, buffer: BufferId, index: &[Index], x: Value) -> R<()> {
        let d = self.p.buffer(buffer).dtype;
        let (addr, _) = self.address(buffer, index, false)?;
        self.store_scalar(addr, x, d)
    }

    /// The coefficient of `v` in the element offset of `index` into `buffer`, when the offset
    /// is affine in `v` (`v` under no division or remainder).
    fn offset_coeff(&self, buffer: BufferId, index: &[Index], v: Var) -> Option<i64> {
        terafab_ir::kernel::offset_coeff(index, &self.p.buffer(buffer).strides, v)
    }

    /// How `e` reads lanes along `v`, if it can be computed four f32 lanes at a time.
    fn vector_lanes(&self, e: &Expr, v: Var) -> Option<Lanes> {
        let join = |a: Lanes, b: Lanes| {
            if a == Lanes::Splat && b == Lanes::Splat {
                Lanes::Splat
            } else {
                Lanes::Contiguous
            }
        };
        match e {
            Expr::Load {
                buffer,
                index,
                fill,
            } => {
                if self.p.buffer(*buffer).dtype != DType::F32 {
                    return None;
                }
                // Lane-varying loads that are not plain contiguous ones (strided, with bounds
                // checks, `v` under a division) are gathered one lane at a time.
                let checked = fill.is_some() && self.needs_check(*buffer, index);
                Some(match self.offset_coeff(*buffer, index, v) {
                    Some(0) if !checked => Lanes::Splat,
                    Some(1) if !checked => Lanes::Contiguous,
                    _ => Lanes::Gather,
                })
            }
            Expr::Const(t) => (t.dtype() == DType::F32).then_some(Lanes::Splat),
            Expr::Local(l) if self.vplanned.contains(l) => Some(Lanes::Contiguous),
            Expr::Local(l) => {
                (self.locals.get(l).map(|x| x.1) == Some(DType::F32)).then_some(Lanes::Splat)
            }
            Expr::Unary(op, a) => matches!(
                op,
                UnaryOp::Neg
                    | UnaryOp::Abs
                    | UnaryOp::Sqrt
                    | UnaryOp::Exp
                    | UnaryOp::Erf
                    | UnaryOp::Logistic
            )
            .then(|| self.vector_lanes(a, v))
            .flatten(),
            Expr::Binary(op, a, b) => {
                if !matches!(
                    op,
                    BinaryOp::Add
                        | BinaryOp::Sub
                        | BinaryOp::Mul
                        | BinaryOp::Div
                        | BinaryOp::Max
                        | BinaryOp::Min
                ) {
                    return None;
                }
                Some(join(self.vector_lanes(a, v)?, self.vector_lanes(b, v)?))
            }
            _ => None,
        }
    }

    /// Whether `buffer[index] = value` over the loop of `v` runs four lanes at a time: an f32
    /// store contiguous in `v` of a value computed lane-wise.
    fn vectorizable(&self, buffer: BufferId, index: &[Index], value: &Expr, v: Var) -> bool {
        self.p.buffer(buffer).dtype == DType::F32
            && self.offset_coeff(buffer, index, v) == Some(1)
            && self.vector_lanes(value, v).is_some()
    }

    /// `value` at lanes `v .. v + 4` (`v` bound to the first), as an `f32x4`.
    fn vexpr(&mut self, e: &Expr, v: Var) -> R<Value> {
        let Some(w) = self.shared else {
            return self.vexpr_uncached(e, v);
        };
        if e.uses_local() || e.vars().contains(&w) {
            return self.vexpr_uncached(e, v);
        }
        let key = (e as *const Expr as usize, self.var(v)?);
        if let Some(&x) = self.cache.get(&key) {
            return Ok(x);
        }
        let x = self.vexpr_uncached(e, v)?;
        self.cache.insert(key, x);
        Ok(x)
    }

    fn vexpr_uncached(&mut self, e: &Expr, v: Var) -> R<Value> {
        let lanes = self
            .vector_lanes(e, v)
            .ok_or_else(|| CodegenError::Invalid("expression not vectorizable".into()))?;
        if lanes == Lanes::Splat {
            let x = self.expr(e)?;
            return Ok(self.b.ins().splat(types::F32X4, x));
        }
        Ok(match e {
            Expr::Local(l) => *self
                .vlocals
                .get(l)
                .and_then(|v| v.get(self.group))
                .ok_or_else(|| CodegenError::Invalid(format!("local t{} undefined", l.0)))?,
            Expr::Load {
                buffer,
                index,
                fill,
            } if lanes == Lanes::Gather => {
                let contiguous = self.offset_coeff(*buffer, index, v) == Some(1);
                if !(contiguous && fill.is_some()) {
                    return self.gather(*buffer, index, fill.as_ref(), v);
                }
                // A padded row read contiguously: one vector load where the first and the last
                // lane are inside the buffer (then all are: the index is affine in `v`), the
                // lanes one at a time (with their fill values) near the edges.
                let start = self.var(v)?;
                let (_, first) = self.address(*buffer, index, true)?;
                let last_at = self.b.ins().iadd_imm_s(start, 3);
                self.vars.insert(v, last_at);
                let (_, last) = self.address(*buffer, index, true)?;
                self.vars.insert(v, start);
                let (Some(first), Some(last)) = (first, last) else {
                    return self.gather(*buffer, index, fill.as_ref(), v);
                };
                let inside = self.b.ins().band(first, last);
                let fast = self.b.create_block();
                let slow = self.b.create_block();
                let merge = self.b.create_block();
                let x = self.b.append_block_param(merge, types::F32X4);
                self.b.ins().brif(inside, fast, &[], slow, &[]);
                self.b.switch_to_block(fast);
                let (addr, _) = self.address(*buffer, index, false)?;
                let y = self
                    .b
                    .ins()
                    .load(types::F32X4, MemFlagsData::new().with_notrap(), addr, 0);
                self.b.ins().jump(merge, &[y.into()]);
                self.b.switch_to_block(slow);
                let y = self.gather(*buffer, index, fill.as_ref(), v)?;
                self.b.ins().jump(merge, &[y.into()]);
                self.b.switch_to_block(merge);
                x
            }
            Expr::Load { buffer, index, .. } => {
                let (addr, _) = self.address(*buffer, index, false)?;
                self.b
                    .ins()
                    .load(types::F32X4, MemFlagsData::new().with_notrap(), addr, 0)
            }
            Expr::Unary(op, a) => {
                let x = self.vexpr(a, v)?;
                match op {
                    UnaryOp::Neg => self.b.ins().fneg(x),
                    UnaryOp::Abs => self.b.ins().fabs(x),
                    UnaryOp::Exp => self.exp_f32(x),
                    UnaryOp::Erf => self.erf_f32(x),
                    UnaryOp::Logistic => self.logistic_f32(x),
                    _ => self.b.ins().sqrt(x),
                }
            }
            Expr::Binary(op, a, c) => {
                let x = self.vexpr(a, v)?;
                let y = self.vexpr(c, v)?;
                let b = &mut self.b;
                match op {
                    BinaryOp::Add => b.ins().fadd(x, y),
                    BinaryOp::Sub => b.ins().fsub(x, y),
                    BinaryOp::Mul => b.ins().fmul(x, y),
                    BinaryOp::Div => b.ins().fdiv(x, y),
                    BinaryOp::Max => b.ins().fmax(x, y),
                    _ => b.ins().fmin(x, y),
                }
            }
            _ => return Err(CodegenError::Invalid("expression not vectorizable".into())),
        })
    }

    /// Whether all of a nest's stages can run four lanes of the space variable `v` at a time:
    /// f32 reductions (any kind) of lane-wise bodies over their own loops (each lane keeps its
    /// own accumulator, summed in the same order as the scalar loop), and stores without loops
    /// of their own, contiguous in `v`, of lane-wise values. Plans the reductions' locals as
    /// lane vectors (cleared again when the answer is no).
    fn lane_stages(&mut self, stages: &[Stage], v: Var) -> bool {
        self.vplanned.clear();
        let mut ok = !stages.is_empty();
        for s in stages {
            if !ok {
                break;
            }
            match s {
                Stage::Reduce {
                    local, vars, body, ..
                } => {
                    for (w, n) in vars {
                        self.extents.insert(*w, *n);
                    }
                    ok = self.vector_lanes(body, v).is_some();
                    self.vplanned.insert(*local);
                }
                // A store the lanes cannot compute together (an op without an exact lane-wise
                // form, a strided store) is computed lane by lane from the reductions' lanes:
                // the contraction still runs four lanes at a time.
                Stage::Store {
                    buffer,
                    vars,
                    index,
                    value,
                } => {
                    ok = vars.is_empty()
                        && (!self.vplanned.is_empty()
                            || self.vectorizable(*buffer, index, value, v))
                }
            }
        }
        if !ok {
            self.vplanned.clear();
        }
        ok
    }

    /// The stages of a nest (planned by [`FnGen::lane_stages`]) for `v` in `lo..hi`: sixteen
    /// lanes at a time (four `f32x4` groups, so that reductions keep four independent
    /// accumulators), then four, then the remainder one point at a time. Every point is
    /// computed by the same operations in the same order whichever way it is reached.
    /// With `rows` (a row block's variable and first value), every step computes [`ROWS`]
    /// consecutive values of that variable.
    fn lane_loop(
        &mut self,
        lo: Value,
        hi: Value,
        v: Var,
        stages: &[Stage],
        rows: Option<(Var, Value)>,
    ) -> R<()> {
        let len = self.b.ins().isub(hi, lo);
        let whole16 = self.b.ins().band_imm_s(len, !15i64);
        let mid16 = self.b.ins().iadd(lo, whole16);
        let whole4 = self.b.ins().band_imm_s(len, !3i64);
        let mid4 = self.b.ins().iadd(lo, whole4);
        self.range_loop(lo, mid16, 16, |g, iv| g.lane_groups(iv, 4, v, stages, rows))?;
        self.range_loop(mid16, mid4, 4, |g, iv| {
            g.lane_groups(iv, 1, v, stages, rows)
        })?;
        self.vplanned.clear();
        self.vlocals.clear();
        self.range_loop(mid4, hi, 1, |g, iv| {
            g.vars.insert(v, iv);
            let Some((w, w0)) = rows else {
                return g.stages(stages);
            };
            for r in 0..ROWS {
                let at = match r {
                    0 => w0,
                    r => g.b.ins().iadd_imm_s(w0, r as i64),
                };
                g.vars.insert(w, at);
                g.stages(stages)?;
            }
            g.vars.insert(w, w0);
            Ok(())
        })
    }

    /// The variable of a row block for a nest run lanes of `v` at a time with the task split
    /// `split`: the last dim of the parallel prefix (a task's points then hold whole blocks),
    /// when the nest has a reduction whose body reads lanes of `v` that do not depend on it
    /// (a matmul's right operand along the rows of the left, a convolution's input along the
    /// output channels), so the rows of a block share those loads.
    fn row_block(&self, nest: &LoopNest, split: &TaskSplit, v: Var) -> Option<Var> {
        let w = Var(split.prefix.checked_sub(1)? as u32);
        if w == v || nest.space[w.0 as usize] < ROWS {
            return None;
        }
        let mut shares = false;
        for s in &nest.stages {
            if let Stage::Reduce { body, .. } = s {
                body.walk(&mut |x| {
                    if let Expr::Load { index, .. } = x {
                        let mut vars = Vec::new();
                        index.iter().for_each(|i| i.vars(&mut vars));
                        shares |= vars.contains(&v) && !vars.contains(&w);
                    }
                });
            }
        }
        shares.then_some(w)
    }

    /// The stages for `groups` groups of four lanes starting at `v = iv`.
    fn lane_groups(
        &mut self,
        iv: Value,
        groups: usize,
        v: Var,
        stages: &[Stage],
        rows: Option<(Var, Value)>,
    ) -> R<()> {
        // The row block's values of its variable (one row, unchanged, without a block).
        let row_at: Vec<Option<(Var, Value)>> = match rows {
            None => vec![None],
            Some((w, w0)) => (0..ROWS)
                .map(|r| {
                    let at = match r {
                        0 => w0,
                        r => self.b.ins().iadd_imm_s(w0, r as i64),
                    };
                    Some((w, at))
                })
                .collect(),
        };
        let starts: Vec<Value> = (0..groups)
            .map(|u| {
                if u == 0 {
                    iv
                } else {
                    self.b.ins().iadd_imm_s(iv, 4 * u as i64)
                }
            })
            .collect();
        for s in stages {
            match s {
                Stage::Reduce {
                    local,
                    kind,
                    vars,
                    body,
                } => {
                    let id = self.identity(*kind, DType::F32)?;
                    let id = self.b.ins().splat(types::F32X4, id);
                    let accs: Vec<_> = (0..groups * row_at.len())
                        .map(|_| {
                            let acc = self.b.declare_var(types::F32X4);
                            self.b.def_var(acc, id);
                            acc
                        })
                        .collect();
                    self.nest(vars, &mut |g| {
                        g.shared = rows.map(|(w, _)| w);
                        g.cache.clear();
                        for (r, row) in row_at.iter().enumerate() {
                            if let Some((w, at)) = row {
                                g.vars.insert(*w, *at);
                            }
                            for (u, &start) in starts.iter().enumerate() {
                                g.vars.insert(v, start);
                                g.group = r * groups + u;
                                let acc = accs[g.group];
                                let x = g.vexpr(body, v)?;
                                let a = g.b.use_var(acc);
                                let y = match kind {
                                    ReduceKind::Sum => g.b.ins().fadd(a, x),
                                    ReduceKind::Prod => g.b.ins().fmul(a, x),
                                    ReduceKind::Max => g.b.ins().fmax(a, x),
                                    ReduceKind::Min => g.b.ins().fmin(a, x),
                                };
                                g.b.def_var(acc, y);
                            }
                        }
                        g.shared = None;
                        g.cache.clear();
                        Ok(())
                    })?;
                    let rs = accs.iter().map(|&acc| self.b.use_var(acc)).collect();
                    self.vlocals.insert(*local, rs);
                }
                Stage::Store {
                    buffer,
                    index,
                    value,
                    ..
                } if self.vectorizable(*buffer, index, value, v) => {
                    for (r, row) in row_at.iter().enumerate() {
                        if let Some((w, at)) = row {
                            self.vars.insert(*w, *at);
                        }
                        for (u, &start) in starts.iter().enumerate() {
                            self.vars.insert(v, start);
                            self.group = r * groups + u;
                            let x = self.vexpr(value, v)?;
                            let (addr, _) = self.address(*buffer, index, false)?;
                            self.b
                                .ins()
                                .store(MemFlagsData::new().with_notrap(), x, addr, 0);
                        }
                    }
                }
                Stage::Store {
                    buffer,
                    index,
                    value,
                    ..
                } => {
                    // Lane by lane: the reductions' lanes as scalar locals, then the value as
                    // the scalar code computes it.
                    let planned: Vec<(Local, Vec<Value>)> = self
                        .vlocals
                        .iter()
                        .map(|(l, xs)| (*l, xs.clone()))
                        .collect();
                    for (r, row) in row_at.iter().enumerate() {
                        if let Some((w, at)) = row {
                            self.vars.insert(*w, *at);
                        }
                        for (u, &start) in starts.iter().enumerate() {
                            for lane in 0..4u8 {
                                let at = match lane {
                                    0 => start,
                                    j => self.b.ins().iadd_imm_s(start, j as i64),
                                };
                                self.vars.insert(v, at);
                                for (l, xs) in &planned {
                                    let x = self.b.ins().extractlane(xs[r * groups + u], lane);
                                    self.locals.insert(*l, (x, DType::F32));
                                }
                                let x = self.expr(value)?;
                                self.store(*buffer, index, x)?;
                            }
                        }
                    }
                    self.vars.insert(v, iv);
                }
            }
        }
        if let Some((w, w0)) = rows {
            self.vars.insert(w, w0);
        }
        self.group = 0;
        Ok(())
    }

    /// The value of loop variable `v`.
    fn var(&self, v: Var) -> R<Value> {
        self.vars
            .get(&v)
            .copied()
            .ok_or_else(|| CodegenError::Invalid(format!("loop variable #{} unbound", v.0)))
    }

    /// `buffer[index]` (with its fill value) at lanes `v .. v + 4`, one lane at a time.
    fn gather(
        &mut self,
        buffer: BufferId,
        index: &[Index],
        fill: Option<&terafab_ir::Tensor>,
        v: Var,
    ) -> R<Value> {
        let start = self.var(v)?;
        let mut x = None;
        for lane in 0..4u8 {
            let at = match lane {
                0 => start,
                j => self.b.ins().iadd_imm_s(start, j as i64),
            };
            self.vars.insert(v, at);
            let y = self.load(buffer, index, fill)?;
            x = Some(match x {
                None => self.b.ins().splat(types::F32X4, y),
                Some(x) => self.b.ins().insertlane(x, y, lane),
            });
        }
        self.vars.insert(v, start);
        x.ok_or_else(|| CodegenError::Invalid("no lanes".into()))
    }

    /// `buffer[index] = value` at lanes `v .. v + 4` (`v` bound to the first; a store
    /// [`FnGen::vectorizable`] allows).
    fn vstore(&mut self, buffer: BufferId, index: &[Index], value: &Expr, v: Var) -> R<()> {
        let x = self.vexpr(value, v)?;
        let (addr, _) = self.address(buffer, index, false)?;
        self.b
            .ins()
            .store(MemFlagsData::new().with_notrap(), x, addr, 0);
        Ok(())
    }

    /// `buffer[index] = value` for `v` in `lo..hi`: four lanes at a time, then the remainder
    /// one element at a time.
    fn vector_loop(
        &mut self,
        lo: Value,
        hi: Value,
        v: Var,
        buffer: BufferId,
        index: &[Index],
        value: &Expr,
    ) -> R<()> {
        let len = self.b.ins().isub(hi, lo);
        let whole = self.b.ins().band_imm_s(len, !3i64);
        let mid = self.b.ins().iadd(lo, whole);
        self.range_loop(lo, mid, 4, |g, iv| {
            g.vars.insert(v, iv);
            g.vstore(buffer, index, value, v)
        })?;
        self.range_loop(mid, hi, 1, |g, iv| {
            g.vars.insert(v, iv);
            let x = g.expr(value)?;
            g.store(buffer, index, x)
        })
    }
}
