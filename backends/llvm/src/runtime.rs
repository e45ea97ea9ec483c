//! The JIT runtime: a compiled program in memory on the shared runtime (`terafab_runtime`:
//! buffer table and arena, the thread pool that runs its tasks, and the library call that runs
//! call kernels through the kernel interpreter).
//!
//! A run builds the buffer table (one pointer per buffer: the caller's inputs, the weights by
//! pointer, the arena slots of the memory plan, the packed constants), calls the generated
//! driver with the runtime interface `{ parallel_for, pool, call, call_ctx }`, and reads the
//! outputs back. Runs of one [`Executable`] are serialized (they share its arena); separate
//! executables run concurrently.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::execution_engine::ExecutionEngine;
use terafab_ir::Tensor;
use terafab_ir::kernel::KernelProgram;
pub use terafab_runtime::PhaseTime;
use terafab_runtime::gemm::{const_bytes, packed_table};
use terafab_runtime::{AlignedBuf, Loaded, Rt};

use crate::codegen::{KernelPlan, generate};
use crate::target::Machine;
use crate::{LlvmError, Options};

type DriverFn = unsafe extern "C" fn(*mut *mut u8, *const Rt) -> i32;
type InitFn = unsafe extern "C" fn(*mut *mut u8, *const Rt);

/// Statistics of a compilation.
#[derive(Debug, Clone, Default)]
pub struct CompileStats {
    /// Kernel IR to LLVM IR.
    pub codegen: Duration,
    /// LLVM's O3 pipeline.
    pub optimize: Duration,
    /// Machine code (the JIT's code generation) and the `init` run.
    pub finalize: Duration,
    /// The arena's size (the memory plan's peak), in bytes.
    pub arena_bytes: usize,
    /// Bytes of constants packed for the GEMM micro-kernel.
    pub packed_bytes: usize,
    /// Bytes of the per-run scratch region (activation operands packed for the GEMMs).
    pub scratch_bytes: usize,
    /// Kernels run by the library call, with the reason.
    pub calls: Vec<(String, String)>,
}

/// A program compiled to machine code in this process.
pub struct Executable {
    // Field order is drop order: the engine (and the code it owns) goes before its context.
    run_fn: DriverFn,
    _engine: ExecutionEngine<'static>,
    _ctx: Box<Context>,
    loaded: Loaded,
    _packed: Vec<AlignedBuf>,
    stats: CompileStats,
}

// SAFETY: the engine is only used while compiling and when dropped; the machine code it owns is
// immutable and reentrant; runs take the arena's mutex.
unsafe impl Send for Executable {}
// SAFETY: as above.
unsafe impl Sync for Executable {}

impl Executable {
    /// Compile a kernel program for this machine (or `opts.cpu`) and load it.
    pub fn compile(p: &KernelProgram, opts: &Options) -> Result<Executable, LlvmError> {
        let plan = crate::memory_plan(p)?;

        let t0 = Instant::now();
        let ctx = Box::new(Context::create());
        // SAFETY: the context is boxed (its address is stable) and outlives the engine and the
        // module: `Executable` drops the engine first (field order).
        let ctx_ref: &'static Context = unsafe { &*(ctx.as_ref() as *const Context) };
        let generated = generate(ctx_ref, p, "tf_")?;
        let codegen = t0.elapsed();
        let machine = Machine::new(&opts.cpu)?;
        machine.prepare(&generated.module);
        let t1 = Instant::now();
        machine.optimize(&generated.module)?;
        let optimize = t1.elapsed();
        let t2 = Instant::now();
        let engine = generated
            .module
            .create_jit_execution_engine(OptimizationLevel::Aggressive)
            .map_err(|e| LlvmError::Llvm(e.to_string()))?;
        let addr = |name: &str| {
            engine
                .get_function_address(name)
                .map_err(|e| LlvmError::Llvm(format!("{name}: {e}")))
        };
        // SAFETY: the driver and init functions have these signatures (codegen::generate).
        let run_fn: DriverFn = unsafe { std::mem::transmute(addr(&generated.run_symbol)?) };
        let init_fn: InitFn = unsafe { std::mem::transmute(addr(&generated.init_symbol)?) };

        let (fixed, packed) = packed_table(p, &generated.packed, generated.scratch_bytes)?;
        let mut phases = HashMap::new();
        for (i, plan) in generated.kernels.iter().enumerate() {
            if let KernelPlan::Compiled { phases: ps } = plan {
                for (name, _) in ps {
                    phases.insert(addr(name)?, (i, name.clone()));
                }
            }
        }
        let loaded = Loaded::new(p, &plan, fixed, opts.threads(), phases)?;
        // SAFETY: init reads the constants' pointers and writes the packed buffers only.
        loaded.init(|table, rt| unsafe { init_fn(table, rt) });
        let finalize = t2.elapsed();
        let calls = generated
            .kernels
            .iter()
            .zip(&p.kernels)
            .filter_map(|(plan, k)| match plan {
                KernelPlan::Call { reason } => Some((k.name.clone(), reason.clone())),
                KernelPlan::Compiled { .. } => None,
            })
            .collect();
        let stats = CompileStats {
            codegen,
            optimize,
            finalize,
            arena_bytes: plan.arena_bytes,
            packed_bytes: const_bytes(&generated.packed),
            scratch_bytes: generated.scratch_bytes,
            calls,
        };
        Ok(Executable {
            run_fn,
            _engine: engine,
            _ctx: ctx,
            loaded,
            _packed: packed,
            stats,
        })
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    pub fn program(&self) -> &KernelProgram {
        self.loaded.program()
    }

    /// Run on `inputs` (one per program input, of its type and shape); returns the outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, LlvmError> {
        self.run_inner(inputs, None)
    }

    /// [`Executable::run`], timing every kernel phase (in execution order).
    pub fn run_profiled(
        &self,
        inputs: &[Tensor],
    ) -> Result<(Vec<Tensor>, Vec<PhaseTime>), LlvmError> {
        let mut times = Vec::new();
        let out = self.run_inner(inputs, Some(&mut times))?;
        Ok((out, times))
    }

    fn run_inner(
        &self,
        inputs: &[Tensor],
        profile: Option<&mut Vec<PhaseTime>>,
    ) -> Result<Vec<Tensor>, LlvmError> {
        let run_fn = self.run_fn;
        // SAFETY: the table holds a pointer to every buffer with room for its span; inputs are
        // only read.
        let driver = |table: *mut *mut u8, rt: &Rt| unsafe { run_fn(table, rt) };
        Ok(self.loaded.run(inputs, profile, &driver)?)
    }
}
