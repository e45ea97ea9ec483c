//! The Cranelift CPU backend: kernel IR to native code through `cranelift-frontend`, compiled
//! and loaded in this process by `cranelift-jit`, and run on the runtime the LLVM backend uses
//! (`terafab_runtime`: the buffer table and arena, the thread pool, the library call).
//!
//! - [`codegen`] lowers every loop-nest kernel to one task function (scalar code with the
//!   interpreter's semantics, [`scalar`]; f32x4 SIMD over the last space dim, or a store's
//!   innermost loop, where the ops allow it).
//! - [`Executable`] holds the JIT module and runs the kernels in order: compiled kernels through
//!   the runtime's `parallel_for`, call kernels (and float8 kernels) through its `call`.
//! - [`emit_clif`] prints the Cranelift IR of every compiled kernel (`terafab compile --emit
//!   clif`).
//!
//! Contractions of the GEMM form (matmuls, convolutions as implicit GEMMs) run the packed GEMM
//! schedule the LLVM backend runs (`codegen::gemm`, its plan shared through
//! [`terafab_runtime::gemm`]) with a 6×8 f32x4 micro-kernel: constant operands are packed once
//! at load, the others on every run into a scratch region. Compared with the LLVM backend it
//! trades run time for compile time: 128-bit vectors (half of AVX2's), no function sharing
//! between kernels of one form, f16 conversions through helper calls, and Cranelift's
//! optimizer (`opt_level = speed`) instead of LLVM's O3.
//!
//! Results do not depend on the thread count: every task computes a fixed set of output
//! elements, the same way whichever thread runs it.

pub mod codegen;
mod fastmath;
mod libm;
pub mod scalar;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::default_libcall_names;
use terafab_ir::kernel::KernelProgram;
use terafab_ir::{DType, Function, Tensor};
use terafab_passes::fuse::{RunError, run_kernels_with};
pub use terafab_runtime::PhaseTime;
use terafab_runtime::gemm::{const_bytes, packed_table};
use terafab_runtime::{AlignedBuf, Loaded, Rt, TaskFn};

use codegen::KernelPlan;

/// Why code generation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodegenError {
    #[error("the Cranelift backend does not compute with {0}")]
    Unsupported(DType),
    #[error("invalid kernel IR: {0}")]
    Invalid(String),
    #[error("Cranelift: {0}")]
    Cranelift(String),
    #[error("kernel @{kernel}: {source}")]
    Kernel {
        kernel: String,
        source: Box<CodegenError>,
    },
}

/// Errors of the Cranelift backend.
#[derive(Debug, thiserror::Error)]
pub enum CraneliftError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("Cranelift target: {0}")]
    Target(String),
    #[error(transparent)]
    Runtime(#[from] terafab_runtime::RuntimeError),
}

/// How to compile and run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Worker threads (0: one per core).
    pub threads: usize,
}

/// Statistics of a compilation.
#[derive(Debug, Clone, Default)]
pub struct CompileStats {
    /// Kernel IR to Cranelift IR, and Cranelift's compilation of every function.
    pub codegen: Duration,
    /// Linking and loading the machine code.
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

/// A JIT module for the host CPU (Cranelift's `speed` optimization level), with the helper
/// functions the generated code calls registered by address.
fn jit_module() -> Result<JITModule, CraneliftError> {
    let target = |e: String| CraneliftError::Target(e);
    let mut flags = settings::builder();
    for (k, v) in [
        ("opt_level", "speed"),
        ("use_colocated_libcalls", "false"),
        ("is_pic", "false"),
    ] {
        flags.set(k, v).map_err(|e| target(format!("{k}: {e}")))?;
    }
    let isa = cranelift_native::builder()
        .map_err(|e| target(e.to_string()))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| target(e.to_string()))?;
    let mut builder = JITBuilder::with_isa(isa, default_libcall_names());
    for h in libm::Helper::ALL {
        builder.symbol(h.symbol(), h.address());
    }
    Ok(JITModule::new(builder))
}

/// A program compiled to machine code in this process.
pub struct Executable {
    /// The driver's steps, in kernel order.
    steps: Vec<Step>,
    loaded: Loaded,
    stats: CompileStats,
    /// The packed constants and the scratch region (the table points into them).
    _packed: Vec<AlignedBuf>,
    // Last: the machine code the steps point into.
    module: Option<JITModule>,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Parallel { task: TaskFn, ntasks: i64 },
    Call { kernel: i64 },
}

// SAFETY: the JIT module is only used while compiling and when dropped; the machine code it owns
// is immutable and reentrant; runs take the arena's mutex (in `Loaded`).
unsafe impl Send for Executable {}
// SAFETY: as above.
unsafe impl Sync for Executable {}

impl Drop for Executable {
    fn drop(&mut self) {
        if let Some(m) = self.module.take() {
            // SAFETY: no run is in progress (we hold `&mut self`), and nothing keeps pointers
            // into the code after the executable is gone.
            unsafe { m.free_memory() };
        }
    }
}

impl Executable {
    /// Compile a kernel program for this machine and load it.
    pub fn compile(p: &KernelProgram, opts: &Options) -> Result<Executable, CraneliftError> {
        let plan = terafab_runtime::memory_plan(p)?;
        let t0 = Instant::now();
        let mut module = jit_module()?;
        let generated = codegen::generate(&mut module, p, false)?;
        let codegen = t0.elapsed();
        let t1 = Instant::now();
        module
            .finalize_definitions()
            .map_err(|e| CodegenError::Cranelift(e.to_string()))?;
        let mut steps = Vec::new();
        let mut phases = HashMap::new();
        let mut calls = Vec::new();
        let mut task_fn = |ph: &codegen::Phase, i: usize| {
            let addr = module.get_finalized_function(ph.func);
            phases.insert(addr as usize, (i, ph.name.clone()));
            // SAFETY: every task function has the signature `(i64 bufs, i64 task)` of a
            // `TaskFn` in the default calling convention.
            let task: TaskFn = unsafe { std::mem::transmute(addr) };
            Step::Parallel {
                task,
                ntasks: ph.ntasks as i64,
            }
        };
        for (i, (kp, k)) in generated.kernels.iter().zip(&p.kernels).enumerate() {
            match kp {
                KernelPlan::Compiled { phases } => {
                    steps.extend(phases.iter().map(|ph| task_fn(ph, i)));
                }
                KernelPlan::Call { reason } => {
                    calls.push((k.name.clone(), reason.clone()));
                    steps.push(Step::Call { kernel: i as i64 });
                }
            }
        }
        let init: Vec<Step> = generated.init.iter().map(|ph| task_fn(ph, 0)).collect();
        let (fixed, packed) = packed_table(p, &generated.packed, generated.scratch_bytes)
            .map_err(CraneliftError::Runtime)?;
        let loaded = Loaded::new(p, &plan, fixed, opts.threads, phases)?;
        // The constant GEMM operands, packed once.
        loaded.init(|table, rt| {
            for step in &init {
                if let Step::Parallel { task, ntasks } = *step {
                    // SAFETY: the pack tasks read the constants and write their packed buffers.
                    unsafe { (rt.parallel_for)(rt.pool, task, table, ntasks) }
                }
            }
            for rp in &generated.row_packs {
                // SAFETY: `RowPack::of` checked the operand's extent in its constant buffer,
                // and its packed buffer holds `n / NR` panels of `k × NR` floats.
                unsafe { terafab_runtime::gemm::pack_rows(table, rp, codegen::NR) }
            }
        });
        let stats = CompileStats {
            codegen,
            finalize: t1.elapsed(),
            arena_bytes: plan.arena_bytes,
            packed_bytes: const_bytes(&generated.packed),
            scratch_bytes: generated.scratch_bytes,
            calls,
        };
        Ok(Executable {
            steps,
            loaded,
            stats,
            _packed: packed,
            module: Some(module),
        })
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    pub fn program(&self) -> &KernelProgram {
        self.loaded.program()
    }

    /// Run on `inputs` (one per program input, of its type and shape); returns the outputs.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, CraneliftError> {
        Ok(self.loaded.run(inputs, None, &|t, rt| self.drive(t, rt))?)
    }

    /// [`Executable::run`], timing every kernel (in execution order).
    pub fn run_profiled(
        &self,
        inputs: &[Tensor],
    ) -> Result<(Vec<Tensor>, Vec<PhaseTime>), CraneliftError> {
        let mut times = Vec::new();
        let out = self
            .loaded
            .run(inputs, Some(&mut times), &|t, rt| self.drive(t, rt))?;
        Ok((out, times))
    }

    /// The driver: every kernel in order, through the runtime interface.
    fn drive(&self, table: *mut *mut u8, rt: &Rt) -> i32 {
        for step in &self.steps {
            match *step {
                // SAFETY: the table holds a pointer to every buffer with room for its span; the
                // task functions read and write only their kernel's buffers.
                Step::Parallel { task, ntasks } => unsafe {
                    (rt.parallel_for)(rt.pool, task, table, ntasks)
                },
                Step::Call { kernel } => {
                    // SAFETY: as above; the call context is the run's.
                    let rc = unsafe { (rt.call)(rt.call_ctx, kernel, table) };
                    if rc != 0 {
                        return rc;
                    }
                }
            }
        }
        0
    }
}

/// Compile `p` and load it in this process.
pub fn compile(p: &KernelProgram, opts: &Options) -> Result<Executable, CraneliftError> {
    Executable::compile(p, opts)
}

/// Lower `f` to kernels (dims bound from the inputs' shapes, data-dependent shapes by running
/// in segments, see [`terafab_passes::fuse::run_kernels`]), compile each program and run it.
pub fn run_function(
    f: &Function,
    inputs: &[Tensor],
    opts: &Options,
) -> Result<Vec<Tensor>, RunError> {
    let mut exec = |p: &KernelProgram, inputs: &[Tensor]| {
        let backend = |e: CraneliftError| RunError::Backend {
            func: f.name.clone(),
            source: Box::new(e),
        };
        let x = compile(p, opts).map_err(backend)?;
        x.run(inputs).map_err(backend)
    };
    run_kernels_with(f, inputs, &mut exec)
}

/// The Cranelift IR of every compiled kernel of `p` (as generated, before Cranelift's
/// optimizations), and one line per kernel run through the library call.
pub fn emit_clif(p: &KernelProgram) -> Result<String, CraneliftError> {
    let mut module = jit_module()?;
    let generated = codegen::generate(&mut module, p, true)?;
    let mut out = String::new();
    let mut clif = generated.clif.iter();
    for (kp, k) in generated.kernels.iter().zip(&p.kernels) {
        match kp {
            KernelPlan::Compiled { .. } => {
                if let Some(text) = clif.next() {
                    out.push_str(&format!("{text}\n"));
                }
            }
            KernelPlan::Call { reason } => {
                out.push_str(&format!(
                    "; kernel @{}: runtime call ({reason})\n\n",
                    k.name
                ));
            }
        }
    }
    // SAFETY: nothing was finalized; no pointer into the module escapes.
    unsafe { module.free_memory() };
    Ok(out)
}
