//! The LLVM CPU backend: kernel IR to native code through inkwell on LLVM 19, run in this
//! process (JIT) or written out as an object file or shared library with a C interface (AOT).
//!
//! - [`codegen`] lowers a [`KernelProgram`] to one LLVM module: a function per kernel (loop
//!   nests with their fused prologues and epilogues; contractions through the packed GEMM
//!   schedule of [`codegen::gemm`]), task trampolines the thread pool calls, and a driver that
//!   runs the kernels in order.
//! - [`target`] runs LLVM's O3 pipeline for the host CPU (or a named one) and writes assembly
//!   and objects.
//! - [`runtime`] loads a compiled program ([`Executable`]): one arena per run laid out by the
//!   memory planner, weights passed by pointer, the runtime's thread pool splitting each kernel's
//!   tasks, and the library call that runs call kernels (sort, scatter, control flow, float8
//!   arithmetic) through the kernel interpreter.
//! - [`aot`] writes an object or shared library plus its C header.
//!
//! Results do not depend on the thread count: every task computes a fixed set of output
//! elements, the same way whichever thread runs it.

pub mod aot;
pub mod codegen;
pub mod runtime;
pub mod target;

use inkwell::context::Context;
use terafab_ir::kernel::KernelProgram;
use terafab_ir::{Function, Tensor};
use terafab_passes::fuse::{RunError, run_kernels_with};

pub use codegen::CodegenError;
pub use runtime::{CompileStats, Executable, PhaseTime};
pub use target::{Cpu, Machine};

/// Errors of the LLVM backend.
#[derive(Debug, thiserror::Error)]
pub enum LlvmError {
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error("LLVM target: {0}")]
    Target(String),
    #[error("the generated LLVM IR does not verify: {0}")]
    Verify(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error("not supported by the LLVM backend: {0}")]
    Unsupported(String),
    #[error("bad input: {0}")]
    Input(String),
    #[error("{0}")]
    Runtime(String),
    #[error("{0}")]
    Io(String),
}

impl From<terafab_runtime::RuntimeError> for LlvmError {
    fn from(e: terafab_runtime::RuntimeError) -> Self {
        use terafab_runtime::RuntimeError as E;
        match e {
            E::Input(m) => LlvmError::Input(m),
            E::Unsupported(m) => LlvmError::Unsupported(m),
            E::Runtime(m) => LlvmError::Runtime(m),
        }
    }
}

/// How to compile and run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Worker threads (0: one per core).
    pub threads: usize,
    /// The CPU to generate code for.
    pub cpu: Cpu,
}

impl Options {
    /// The thread count, 0 resolved to the number of cores.
    pub fn threads(&self) -> usize {
        terafab_runtime::resolve_threads(self.threads)
    }
}

/// The arena plan of `p`'s temporaries (see [`terafab_runtime::memory_plan`]).
fn memory_plan(p: &KernelProgram) -> Result<terafab_passes::memplan::MemoryPlan, LlvmError> {
    Ok(terafab_runtime::memory_plan(p)?)
}

/// Compile `p` and load it in this process.
pub fn compile(p: &KernelProgram, opts: &Options) -> Result<Executable, LlvmError> {
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
        let backend = |e: LlvmError| RunError::Backend {
            func: f.name.clone(),
            source: Box::new(e),
        };
        let x = compile(p, opts).map_err(backend)?;
        x.run(inputs).map_err(backend)
    };
    run_kernels_with(f, inputs, &mut exec)
}

/// Which form of LLVM IR to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrStage {
    /// As generated from the kernel IR.
    Generated,
    /// After LLVM's O3 pipeline.
    Optimized,
}

/// The LLVM IR of `p` for `cpu`.
pub fn emit_llvm(p: &KernelProgram, cpu: &Cpu, stage: IrStage) -> Result<String, LlvmError> {
    let ctx = Context::create();
    let g = codegen::generate(&ctx, p, "tf_")?;
    let machine = Machine::new(cpu)?;
    machine.prepare(&g.module);
    if stage == IrStage::Optimized {
        machine.optimize(&g.module)?;
    } else {
        g.module
            .verify()
            .map_err(|e| LlvmError::Verify(e.to_string()))?;
    }
    Ok(g.module.print_to_string().to_string())
}

/// The assembly of `p` for `cpu` (after O3).
pub fn emit_asm(p: &KernelProgram, cpu: &Cpu) -> Result<String, LlvmError> {
    let ctx = Context::create();
    let g = codegen::generate(&ctx, p, "tf_")?;
    let machine = Machine::new(cpu)?;
    machine.prepare(&g.module);
    machine.optimize(&g.module)?;
    machine.assembly(&g.module)
}
