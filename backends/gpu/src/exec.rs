//! A compiled program on the GPU: its PTX module loaded once, its constants (weights) uploaded
//! once, device buffers for the inputs and temporaries of each run, the kernels launched in
//! order, the outputs read back.
//!
//! Kernels the GPU does not run ([`Plan::Host`]: call kernels, float8 arithmetic) run on the
//! host through the kernel interpreter: their input buffers are downloaded, the interpreter
//! runs the kernel, its outputs are uploaded.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use terafab_ir::Tensor;
use terafab_ir::kernel::{BufferId, KernelProgram, Storage};

use crate::codegen::{BLOCK, Plan};
use crate::driver::{Device, DeviceBuffer, DeviceModule, DevicePtr, Kernel};
use crate::{Arch, Compiled, GpuError, compile_ptx};

/// A program loaded on a GPU.
pub struct Executable {
    dev: Arc<Device>,
    program: KernelProgram,
    compiled: Compiled,
    module: DeviceModule,
    /// Per kernel: its function, for device kernels.
    functions: Vec<Option<Kernel>>,
    /// The constants' device buffers (by buffer index).
    consts: Vec<Option<DeviceBuffer>>,
    /// Serializes runs (they share nothing but the device, but one at a time keeps the
    /// device's memory use to one run's).
    lock: Mutex<()>,
}

/// Wall times of one run, for benchmarks.
#[derive(Debug, Clone, Default)]
pub struct RunTimes {
    /// Per kernel: seconds from its launch to the end of its work (after a synchronize).
    pub kernels: Vec<f64>,
}

fn bytes_of(p: &KernelProgram, b: BufferId) -> usize {
    let buf = p.buffer(b);
    buf.span() * buf.dtype.size_bytes()
}

/// A row-major tensor's bytes laid out in `b`'s layout.
fn layout_bytes(p: &KernelProgram, b: BufferId, t: &Tensor) -> Vec<u8> {
    let mut out = vec![0u8; bytes_of(p, b)];
    if !out.is_empty() {
        // SAFETY: `out` has room for the buffer's span; `t` has its shape and type (checked
        // by the caller).
        unsafe { terafab_runtime::write_buffer(p.buffer(b), out.as_mut_ptr(), t) };
    }
    out
}

impl Executable {
    /// Compile `p` for the device's architecture and load it.
    pub fn load(dev: Arc<Device>, p: &KernelProgram) -> Result<Executable, GpuError> {
        let (major, minor) = dev.capability;
        let arch = Arch::for_capability(major, minor).ok_or_else(|| {
            GpuError::Unsupported(format!(
                "{} has compute capability {major}.{minor}; the GPU backend needs 8.0 or newer",
                dev.name
            ))
        })?;
        let compiled = compile_ptx(p, arch)?;
        let module = dev.load_module(&compiled.ptx)?;
        let mut functions = Vec::new();
        for plan in &compiled.plans {
            functions.push(match plan {
                Plan::Device { symbol, .. } => Some(module.function(symbol)?),
                Plan::Host { .. } => None,
            });
        }
        let mut consts: Vec<Option<DeviceBuffer>> = (0..p.buffers.len()).map(|_| None).collect();
        for (i, buf) in p.buffers.iter().enumerate() {
            if let Storage::Const(t) = &buf.storage {
                let b = BufferId(i as u32);
                let d = dev.alloc(bytes_of(p, b))?;
                d.upload(&layout_bytes(p, b, t))?;
                consts[i] = Some(d);
            }
        }
        Ok(Executable {
            dev,
            program: p.clone(),
            compiled,
            module,
            functions,
            consts,
            lock: Mutex::new(()),
        })
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.dev
    }

    pub fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Run on `inputs` (row-major, one per program input); the outputs, row-major.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, GpuError> {
        self.run_timed(inputs, false).map(|(out, _)| out)
    }

    /// [`Executable::run`], with every kernel timed when `timed` (a synchronize after each).
    pub fn run_timed(
        &self,
        inputs: &[Tensor],
        timed: bool,
    ) -> Result<(Vec<Tensor>, RunTimes), GpuError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let p = &self.program;
        if inputs.len() != p.inputs.len() {
            return Err(GpuError::Input(format!(
                "{} inputs given, the program takes {}",
                inputs.len(),
                p.inputs.len()
            )));
        }
        // Device memory of this run: inputs and temporaries.
        let mut owned: Vec<Option<DeviceBuffer>> = (0..p.buffers.len()).map(|_| None).collect();
        for (&b, t) in p.inputs.iter().zip(inputs) {
            p.check_input(b, t).map_err(GpuError::Input)?;
            let d = self.dev.alloc(bytes_of(p, b))?;
            d.upload(&layout_bytes(p, b, t))?;
            owned[b.index()] = Some(d);
        }
        for (i, buf) in p.buffers.iter().enumerate() {
            if matches!(buf.storage, Storage::Temp) {
                owned[i] = Some(self.dev.alloc(bytes_of(p, BufferId(i as u32)))?);
            }
        }
        let buffer = |b: BufferId| -> Result<&DeviceBuffer, GpuError> {
            owned[b.index()]
                .as_ref()
                .or(self.consts[b.index()].as_ref())
                .ok_or_else(|| GpuError::Invalid(format!("buffer #{} has no memory", b.0)))
        };
        let mut times = RunTimes::default();
        for (i, (k, plan)) in p.kernels.iter().zip(&self.compiled.plans).enumerate() {
            let start = Instant::now();
            match plan {
                Plan::Device {
                    params,
                    grid,
                    symbol,
                    ..
                } => {
                    if *grid > 0 {
                        let f = self.functions[i].ok_or_else(|| {
                            GpuError::Invalid(format!("kernel {symbol} was not loaded"))
                        })?;
                        let args: Vec<DevicePtr> = params
                            .iter()
                            .map(|&b| buffer(b).map(|d| d.ptr))
                            .collect::<Result<_, _>>()?;
                        self.module.launch(f, *grid, BLOCK, &args)?;
                    }
                }
                Plan::Host { .. } => {
                    self.dev.synchronize()?;
                    let mut mem: Vec<Option<Tensor>> = vec![None; p.buffers.len()];
                    for &b in &k.inputs {
                        let buf = p.buffer(b);
                        let mut bytes = vec![0u8; bytes_of(p, b)];
                        buffer(b)?.download(&mut bytes)?;
                        // SAFETY: the bytes were written as elements of the buffer's type.
                        let t = unsafe {
                            terafab_runtime::tensor_from_bytes(buf.dtype, vec![buf.span()], &bytes)
                        };
                        mem[b.index()] = Some(t);
                    }
                    let outs = terafab_ir::kernel::interp::run_kernel(p, k, &mem)
                        .map_err(|e| GpuError::Host(e.to_string()))?;
                    for (&b, t) in k.outputs.iter().zip(&outs) {
                        let n = bytes_of(p, b).min(t.len() * t.dtype().size_bytes());
                        // SAFETY: the tensor holds at least `n` bytes of elements.
                        let data = unsafe {
                            std::slice::from_raw_parts(terafab_runtime::tensor_ptr(t), n)
                        };
                        buffer(b)?.upload(data)?;
                    }
                }
            }
            if timed {
                self.dev.synchronize()?;
                times.kernels.push(start.elapsed().as_secs_f64());
            }
        }
        self.dev.synchronize()?;
        let mut outs = Vec::new();
        for (_, b) in &p.outputs {
            let mut bytes = vec![0u8; bytes_of(p, *b)];
            buffer(*b)?.download(&mut bytes)?;
            let t = if bytes.is_empty() {
                // SAFETY: no elements.
                unsafe {
                    terafab_runtime::tensor_from_bytes(
                        p.buffer(*b).dtype,
                        p.buffer(*b).shape.clone(),
                        &[],
                    )
                }
            } else {
                // SAFETY: `bytes` holds the buffer's span, written by the kernels.
                unsafe { terafab_runtime::read_buffer(p.buffer(*b), bytes.as_ptr()) }
                    .map_err(GpuError::Host)?
            };
            outs.push(t);
        }
        Ok((outs, times))
    }
}
