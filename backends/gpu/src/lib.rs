//! The GPU backend: kernel IR to PTX through LLVM's NVPTX target (inkwell, LLVM 19), run
//! through the CUDA driver API loaded at run time.
//!
//! - [`codegen`] lowers every loop-nest kernel of a [`KernelProgram`] to one GPU kernel
//!   (thread per point, or block per point with warp-shuffle reductions), sharing the LLVM CPU
//!   backend's scalar, load/store and loop emitters.
//! - [`ptx`] optimizes the module (O3) and writes PTX for `sm_80` or `sm_90`; this needs no
//!   GPU and no CUDA toolkit ([`emit_ptx`], `terafab compile --backend gpu --emit ptx`).
//! - [`driver`] loads `libcuda.so.1` with `libloading` when a program runs (the build needs no
//!   CUDA); without it, or without a device, [`DriverError::NoDevice`] says so.
//! - [`exec`] holds a loaded program ([`Executable`]): weights uploaded once, device buffers
//!   per run, kernels launched in order (call kernels on the host through the kernel
//!   interpreter), outputs read back.
//!
//! A kernel the GPU backend cannot lower (a transcendental function with no NVPTX lowering:
//! NVPTX has no libm) is a [`GpuError::Lower`] naming the kernel.

pub mod bench;
pub mod codegen;
pub mod driver;
pub mod exec;
pub mod ptx;

use std::sync::Arc;

use inkwell::context::Context;
use terafab_ir::kernel::KernelProgram;
use terafab_ir::{Function, Tensor};
use terafab_passes::fuse::{RunError, run_kernels_with};

pub use codegen::{Mode, Plan};
pub use driver::{Device, DriverError};
pub use exec::Executable;
pub use ptx::Arch;

/// Errors of the GPU backend.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("kernel @{kernel}: {source}")]
    Lower {
        kernel: String,
        #[source]
        source: terafab_llvm::CodegenError,
    },
    #[error("NVPTX target: {0}")]
    Target(String),
    #[error("the generated NVPTX LLVM IR does not verify: {0}")]
    Verify(String),
    #[error("LLVM: {0}")]
    Llvm(String),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error("not supported by the GPU backend: {0}")]
    Unsupported(String),
    #[error("bad input: {0}")]
    Input(String),
    #[error("invalid program: {0}")]
    Invalid(String),
    #[error("host kernel: {0}")]
    Host(String),
}

impl GpuError {
    /// Whether the error is the absence of a GPU (no driver library, no device).
    pub fn is_no_device(&self) -> bool {
        matches!(self, GpuError::Driver(DriverError::NoDevice(_)))
    }
}

/// A program's PTX and how to run each kernel.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub arch: Arch,
    pub ptx: String,
    pub plans: Vec<Plan>,
}

/// Compile `p` to PTX for `arch` (no GPU needed).
pub fn compile_ptx(p: &KernelProgram, arch: Arch) -> Result<Compiled, GpuError> {
    let ctx = Context::create();
    let (module, plans) = codegen::generate(&ctx, p)?;
    let machine = ptx::PtxMachine::new(arch)?;
    machine.optimize(&module)?;
    let ptx = machine.ptx(&module)?;
    Ok(Compiled { arch, ptx, plans })
}

/// The PTX text of `p` for `arch`.
pub fn emit_ptx(p: &KernelProgram, arch: Arch) -> Result<String, GpuError> {
    Ok(compile_ptx(p, arch)?.ptx)
}

/// Open the GPU (device 0).
pub fn open_device() -> Result<Arc<Device>, GpuError> {
    Ok(Device::open()?)
}

/// Compile `p` for the device and load it.
pub fn compile(dev: &Arc<Device>, p: &KernelProgram) -> Result<Executable, GpuError> {
    Executable::load(dev.clone(), p)
}

/// Lower `f` to kernels (dims bound from the inputs' shapes, data-dependent shapes by running
/// in segments, see [`terafab_passes::fuse::run_kernels`]), compile each program for the GPU
/// and run it.
pub fn run_function(
    dev: &Arc<Device>,
    f: &Function,
    inputs: &[Tensor],
) -> Result<Vec<Tensor>, RunError> {
    let mut exec = |p: &KernelProgram, inputs: &[Tensor]| {
        let backend = |e: GpuError| RunError::Backend {
            func: f.name.clone(),
            source: Box::new(e),
        };
        let x = compile(dev, p).map_err(backend)?;
        x.run(inputs).map_err(backend)
    };
    run_kernels_with(f, inputs, &mut exec)
}
