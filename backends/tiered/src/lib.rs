//! Tiered compilation (`terafab run|bench --backend auto`): a kernel program compiled by
//! Cranelift runs at once, while a background thread compiles the same program with LLVM; once
//! the LLVM code is ready, later runs use it.
//!
//! - [`Tiered::compile`] starts the LLVM compilation on its own thread (`terafab-llvm`), then
//!   compiles with Cranelift on the caller's thread and returns as soon as that code is loaded.
//! - [`Tiered::run`] runs the best code ready: LLVM's once its compilation has finished, else
//!   Cranelift's; the result says which [`Tier`] ran. [`Tiered::tier`] is the tier the next run
//!   uses, [`Tiered::llvm_status`] whether LLVM is still compiling, ready or failed, and
//!   [`Tiered::wait_for_llvm`] blocks until it is one or the other.
//! - An LLVM failure (an error, or a panic, in the background) never ends the session: runs stay
//!   on the Cranelift code and the error is kept for [`Tiered::llvm_status`]. When Cranelift
//!   fails, [`Tiered::compile`] waits for LLVM and runs on its code from the start; only when
//!   both fail is it an error ([`TieredError::Neither`]).
//!
//! Both executables are `Send + Sync` (the JIT code is immutable; each run takes its own
//! executable's arena), so the LLVM one is built on the worker thread and then shared with the
//! runs; no LLVM object outlives the [`Tiered`] or crosses threads while LLVM uses it. Dropping a
//! [`Tiered`] joins the worker, so no LLVM compilation is still running when the process exits.
//!
//! What "identical results" means: both tiers run the same kernel program on the same runtime
//! (the same buffers, arena plan, task split and library call), so integer, boolean and movement
//! results, and everything computed by the library call, are bitwise equal. Float arithmetic is
//! where they may differ: LLVM sums contractions in its packed GEMM (FMA, K in blocks) and
//! reductions with reassociation allowed, Cranelift in program order with separate multiplies
//! and adds, so float results agree within the differential tolerance both backends are tested
//! with against the interpreter, not bitwise. Within one tier results never depend on the
//! thread count.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use terafab_cranelift::CraneliftError;
use terafab_ir::Tensor;
use terafab_ir::kernel::KernelProgram;
use terafab_llvm::LlvmError;
pub use terafab_runtime::PhaseTime;

/// Which compiler's code ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// The first tier: Cranelift's code, ready at once.
    Cranelift,
    /// The second tier: LLVM's optimized code, compiled in the background.
    Llvm,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Cranelift => "cranelift",
            Tier::Llvm => "llvm",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors of tiered compilation and runs.
#[derive(Debug, thiserror::Error)]
pub enum TieredError {
    /// A run on the Cranelift code failed.
    #[error("the Cranelift tier failed")]
    Cranelift(#[source] CraneliftError),
    /// A run on the LLVM code failed.
    #[error("the LLVM tier failed")]
    Llvm(#[source] LlvmError),
    /// Neither compiler produced code.
    #[error("neither tier compiled: Cranelift: {cranelift}; LLVM: {llvm}")]
    Neither { cranelift: String, llvm: String },
}

/// How to compile and run (both tiers run on the same number of threads).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Worker threads of the runs (0: one per core).
    pub threads: usize,
    /// The CPU LLVM generates code for (Cranelift always targets the host).
    pub cpu: terafab_llvm::Cpu,
}

/// Where the background LLVM compilation stands.
#[derive(Debug, Clone, Copy)]
pub enum LlvmStatus<'a> {
    /// Still compiling.
    Compiling,
    /// Ready `after` the start of [`Tiered::compile`]; runs use it.
    Ready { after: Duration },
    /// Failed `after` the start of [`Tiered::compile`]; runs stay on Cranelift's code.
    Failed {
        error: &'a LlvmError,
        after: Duration,
    },
}

/// The outputs of one run and the tier that computed them.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub tensors: Vec<Tensor>,
    pub tier: Tier,
}

/// The background compilation's outcome.
struct LlvmTier {
    result: Result<terafab_llvm::Executable, LlvmError>,
    /// Since the start of [`Tiered::compile`].
    after: Duration,
}

/// A kernel program compiled by Cranelift, with its LLVM compilation running (or done) in the
/// background.
pub struct Tiered {
    cranelift: Result<terafab_cranelift::Executable, CraneliftError>,
    /// Since the start of [`Tiered::compile`].
    cranelift_after: Duration,
    /// Set once by the worker thread (or by `compile` when it cannot start one).
    llvm: Arc<OnceLock<LlvmTier>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Tiered {
    fn drop(&mut self) {
        let worker = self
            .worker
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = worker {
            // The worker catches the compiler's panics; a join error leaves nothing to clean.
            let _ = h.join();
        }
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

impl Tiered {
    /// Start compiling `p` with LLVM in the background, compile it with Cranelift, and return
    /// once the Cranelift code is loaded (or, when Cranelift fails, once LLVM's is).
    pub fn compile(p: &KernelProgram, opts: &Options) -> Result<Tiered, TieredError> {
        let copts = terafab_cranelift::Options {
            threads: opts.threads,
        };
        let lopts = terafab_llvm::Options {
            threads: opts.threads,
            cpu: opts.cpu.clone(),
        };
        Tiered::with_compilers(
            p,
            move |p| terafab_cranelift::compile(p, &copts),
            move |p| terafab_llvm::compile(p, &lopts),
        )
    }

    /// [`Tiered::compile`] with the two compilers given (tests inject failures here).
    fn with_compilers(
        p: &KernelProgram,
        cranelift: impl FnOnce(&KernelProgram) -> Result<terafab_cranelift::Executable, CraneliftError>,
        llvm: impl FnOnce(&KernelProgram) -> Result<terafab_llvm::Executable, LlvmError>
        + Send
        + 'static,
    ) -> Result<Tiered, TieredError> {
        let started = Instant::now();
        let slot: Arc<OnceLock<LlvmTier>> = Arc::new(OnceLock::new());
        let program = p.clone();
        let worker_slot = slot.clone();
        let spawned = std::thread::Builder::new()
            .name("terafab-llvm".into())
            .spawn(move || {
                let result = match catch_unwind(AssertUnwindSafe(|| llvm(&program))) {
                    Ok(r) => r,
                    Err(payload) => Err(LlvmError::Llvm(format!(
                        "the compilation panicked: {}",
                        panic_message(payload.as_ref())
                    ))),
                };
                let _ = worker_slot.set(LlvmTier {
                    result,
                    after: started.elapsed(),
                });
            });
        let mut worker = match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                let _ = slot.set(LlvmTier {
                    result: Err(LlvmError::Llvm(format!(
                        "cannot start the background compilation: {e}"
                    ))),
                    after: started.elapsed(),
                });
                None
            }
        };
        let cranelift = match cranelift(p) {
            Ok(x) => Ok(x),
            Err(e) => {
                // Nothing to run until LLVM is done: wait for it, and fail only if it fails too.
                if let Some(h) = worker.take() {
                    let _ = h.join();
                }
                if let LlvmStatus::Failed { error, .. } = status(Some(slot.wait())) {
                    return Err(TieredError::Neither {
                        cranelift: error_chain(&e),
                        llvm: error_chain(error),
                    });
                }
                Err(e)
            }
        };
        Ok(Tiered {
            cranelift,
            cranelift_after: started.elapsed(),
            llvm: slot,
            worker: Mutex::new(worker),
        })
    }

    /// The tier the next run uses: LLVM once its code is ready, else Cranelift.
    pub fn tier(&self) -> Tier {
        match self.llvm.get() {
            Some(LlvmTier { result: Ok(_), .. }) => Tier::Llvm,
            _ if self.cranelift.is_err() => Tier::Llvm,
            _ => Tier::Cranelift,
        }
    }

    /// Where the LLVM compilation stands, without waiting.
    pub fn llvm_status(&self) -> LlvmStatus<'_> {
        status(self.llvm.get())
    }

    /// Wait until the LLVM compilation has finished (or failed); its status, never
    /// [`LlvmStatus::Compiling`].
    pub fn wait_for_llvm(&self) -> LlvmStatus<'_> {
        status(Some(self.llvm.wait()))
    }

    /// How long after the start of [`Tiered::compile`] the Cranelift code was ready (or
    /// Cranelift failed).
    pub fn cranelift_after(&self) -> Duration {
        self.cranelift_after
    }

    /// Why Cranelift failed, when it did (the runs use LLVM's code from the start).
    pub fn cranelift_error(&self) -> Option<&CraneliftError> {
        self.cranelift.as_ref().err()
    }

    /// Cranelift's compilation statistics, when it compiled.
    pub fn cranelift_stats(&self) -> Option<&terafab_cranelift::CompileStats> {
        self.cranelift.as_ref().ok().map(|x| x.stats())
    }

    /// LLVM's compilation statistics, once its code is ready.
    pub fn llvm_stats(&self) -> Option<&terafab_llvm::CompileStats> {
        match self.llvm.get() {
            Some(LlvmTier { result: Ok(x), .. }) => Some(x.stats()),
            _ => None,
        }
    }

    /// The executable the next run uses.
    fn pick(&self) -> Picked<'_> {
        if let Some(LlvmTier { result: Ok(x), .. }) = self.llvm.get() {
            return Picked::Llvm(x);
        }
        match &self.cranelift {
            Ok(x) => Picked::Cranelift(x),
            // `compile` returns only once one tier has code: LLVM's, when Cranelift failed.
            Err(_) => match &self.llvm.wait().result {
                Ok(x) => Picked::Llvm(x),
                Err(_) => Picked::None,
            },
        }
    }

    /// Run on `inputs` (one per program input, of its type and shape) on the best code ready.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Outputs, TieredError> {
        match self.pick() {
            Picked::Llvm(x) => Ok(Outputs {
                tensors: x.run(inputs).map_err(TieredError::Llvm)?,
                tier: Tier::Llvm,
            }),
            Picked::Cranelift(x) => Ok(Outputs {
                tensors: x.run(inputs).map_err(TieredError::Cranelift)?,
                tier: Tier::Cranelift,
            }),
            Picked::None => Err(self.no_code()),
        }
    }

    /// [`Tiered::run`], timing every kernel phase (in execution order).
    pub fn run_profiled(
        &self,
        inputs: &[Tensor],
    ) -> Result<(Outputs, Vec<PhaseTime>), TieredError> {
        match self.pick() {
            Picked::Llvm(x) => {
                let (tensors, times) = x.run_profiled(inputs).map_err(TieredError::Llvm)?;
                let tier = Tier::Llvm;
                Ok((Outputs { tensors, tier }, times))
            }
            Picked::Cranelift(x) => {
                let (tensors, times) = x.run_profiled(inputs).map_err(TieredError::Cranelift)?;
                let tier = Tier::Cranelift;
                Ok((Outputs { tensors, tier }, times))
            }
            Picked::None => Err(self.no_code()),
        }
    }

    /// The error of a [`Tiered`] without code (never returned by `compile`).
    fn no_code(&self) -> TieredError {
        let llvm = match self.llvm_status() {
            LlvmStatus::Failed { error, .. } => error_chain(error),
            _ => "no code".into(),
        };
        let cranelift = self
            .cranelift_error()
            .map_or_else(|| "no code".into(), |e| error_chain(e));
        TieredError::Neither { cranelift, llvm }
    }
}

enum Picked<'a> {
    Cranelift(&'a terafab_cranelift::Executable),
    Llvm(&'a terafab_llvm::Executable),
    None,
}

fn status(t: Option<&LlvmTier>) -> LlvmStatus<'_> {
    match t {
        None => LlvmStatus::Compiling,
        Some(LlvmTier {
            result: Ok(_),
            after,
        }) => LlvmStatus::Ready { after: *after },
        Some(LlvmTier {
            result: Err(error),
            after,
        }) => LlvmStatus::Failed {
            error,
            after: *after,
        },
    }
}

/// An error and its sources, `: `-separated.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
