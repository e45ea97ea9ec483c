//! The tile backend: run a model's kernel programs with every kernel the accelerator can run
//! lowered ([`crate::lower`]) and simulated, the others run on the host by the kernel
//! interpreter, and a report of both.
//!
//! The program's memory is the kernel interpreter's (`initial_memory`: every buffer's flat
//! contents). A lowered kernel's reads are copied into a fresh simulator's HBM, the program
//! runs, and its writes are copied back; so host and accelerator kernels interleave freely.
//! Each kernel is simulated on its own, except chains linked with their activations resident
//! in SRAM ([`crate::link`], [`crate::compile::Link`]), which run as one program and are
//! reported as one entry (`@a + @b + ..`); the model's cycles are the sum of the programs'. Host kernels take no simulated time; the report lists them with the
//! reason they are not lowered.

use std::fmt;
use std::time::{Duration, Instant};

use terafab_ir::kernel::interp::{initial_memory, read_outputs, run_kernel};
use terafab_ir::kernel::{Buffer, BufferId, KernelProgram};
use terafab_ir::{DType, Function, Tensor};
use terafab_passes::fuse::{RunError, run_kernels_with};

use crate::compile::{Compiled, Options, at_names, compile_program};
use crate::config::Config;
use crate::error::SimError;
use crate::lower::{NotLowered, hbm_name};
use crate::report::Report;
use crate::sim::Simulator;

/// Why a model could not be run.
#[derive(Debug, thiserror::Error)]
pub enum TileBackendError {
    #[error(transparent)]
    Run(#[from] RunError),
    #[error("kernel @{kernel}: the kernel interpreter failed")]
    Host {
        kernel: String,
        #[source]
        source: terafab_ir::interp::InterpError,
    },
    #[error("kernel @{kernel} ({summary}): the simulation failed")]
    Sim {
        kernel: String,
        summary: String,
        #[source]
        source: Box<SimError>,
    },
    #[error("kernel @{kernel}: buffer %{buffer}: {msg}")]
    Data {
        kernel: String,
        buffer: String,
        msg: String,
    },
}

/// Where a kernel ran.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Lowered and simulated: how, and the simulator's report.
    Accelerator {
        summary: String,
        report: Box<Report>,
    },
    /// Run by the kernel interpreter on the host, and why.
    Host { reason: NotLowered, time: Duration },
}

/// One kernel of a run.
#[derive(Debug, Clone)]
pub struct KernelRun {
    /// The kernel's name; for a linked chain, `a + @b + ..`.
    pub name: String,
    /// The kernels it ran: 1, or a linked chain's length.
    pub count: usize,
    pub kind: &'static str,
    pub placement: Placement,
}

/// A model run's figures summed over its accelerator kernels (run one after another).
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub cycles: u64,
    /// Simulated seconds at the clock.
    pub seconds: f64,
    /// Multiply-adds on the matrix engine (narrow and f32).
    pub macs: u64,
    /// Busy cycles of the matrix and vector engines, all nodes.
    pub mx_busy: u64,
    pub vx_busy: u64,
    /// Busy cycles over cycles × nodes.
    pub mx_util: f64,
    pub vx_util: f64,
    pub hbm_read_bytes: u64,
    pub hbm_write_bytes: u64,
    /// The kernels' roofline bounds summed, and that over the cycles.
    pub bound_cycles: f64,
    pub achieved: f64,
}

/// The report of a model run on the tile backend.
#[derive(Debug, Clone)]
pub struct ModelReport {
    /// The machine: `(width, height)` and clock.
    pub mesh: (u32, u32),
    pub clock_ghz: f64,
    pub kernels: Vec<KernelRun>,
    /// Pack kernels of constant operands evaluated at compile time (weights laid out for the
    /// matrix engine once, not on every run).
    pub folded: Vec<String>,
    /// Small contractions kept whole on the vector path because that simulated faster than
    /// pack + GEMM + epilogue.
    pub kept: Vec<String>,
}

impl ModelReport {
    /// An empty report for the machine `cfg`.
    pub fn new(cfg: &Config) -> ModelReport {
        ModelReport {
            mesh: (cfg.mesh_width, cfg.mesh_height),
            clock_ghz: cfg.clock_ghz,
            kernels: Vec::new(),
            folded: Vec::new(),
            kept: Vec::new(),
        }
    }

    /// The accelerator kernels' reports.
    pub fn device_reports(&self) -> impl Iterator<Item = &Report> {
        self.kernels.iter().filter_map(|k| match &k.placement {
            Placement::Accelerator { report, .. } => Some(&**report),
            Placement::Host { .. } => None,
        })
    }

    /// Simulated cycles of all accelerator kernels (run one after another).
    pub fn cycles(&self) -> u64 {
        self.device_reports().map(|r| r.cycles).sum()
    }

    /// Whole-model figures over the accelerator kernels.
    pub fn totals(&self) -> Totals {
        let nodes = u64::from(self.mesh.0) * u64::from(self.mesh.1);
        let mut t = Totals::default();
        for r in self.device_reports() {
            t.cycles += r.cycles;
            t.macs += r.macs + r.macs_f32;
            t.hbm_read_bytes += r.hbm_read_bytes;
            t.hbm_write_bytes += r.hbm_write_bytes;
            t.bound_cycles += r.roofline.bound_cycles;
            for e in &r.engines {
                match e.engine {
                    crate::isa::Engine::Mx => t.mx_busy += e.busy_cycles,
                    crate::isa::Engine::Vx => t.vx_busy += e.busy_cycles,
                    _ => {}
                }
            }
        }
        let all = (t.cycles * nodes).max(1) as f64;
        t.mx_util = t.mx_busy as f64 / all;
        t.vx_util = t.vx_busy as f64 / all;
        t.achieved = if t.cycles == 0 {
            0.0
        } else {
            t.bound_cycles / t.cycles as f64
        };
        t.seconds = t.cycles as f64 / (self.clock_ghz * 1e9);
        t
    }

    /// How many kernels ran on the host.
    pub fn host_kernels(&self) -> usize {
        self.kernels.len() - self.device_reports().count()
    }

    /// How many kernels ran on the accelerator (a linked chain counts each of its kernels).
    pub fn accelerator_kernels(&self) -> usize {
        self.kernels
            .iter()
            .filter(|k| matches!(k.placement, Placement::Accelerator { .. }))
            .map(|k| k.count)
            .sum()
    }

    /// One Chrome trace (see [`crate::trace`]) of every accelerator kernel, one after another
    /// on a shared time line; `None` when no kernel ran on the accelerator. The events are
    /// there only when the machine was configured with `trace = true`.
    pub fn trace_json(&self) -> Option<String> {
        let mut reports = self.device_reports();
        let mut merged = reports.next()?.clone();
        let mut offset = merged.cycles;
        for r in reports {
            merged.trace.extend(r.trace.iter().map(|e| {
                let mut e = e.clone();
                e.start += offset;
                e.end += offset;
                e
            }));
            merged.engines.extend(r.engines.iter().cloned());
            offset += r.cycles;
        }
        merged.cycles = offset;
        Some(merged.trace_json())
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.3}", bytes as f64 / 1e6)
}

impl fmt::Display for ModelReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes = u64::from(self.mesh.0) * u64::from(self.mesh.1);
        writeln!(
            f,
            "tile backend on a {}x{} mesh at {:.2} GHz: {} kernel(s), {} on the accelerator, {} on the host",
            self.mesh.0,
            self.mesh.1,
            self.clock_ghz,
            self.accelerator_kernels() + self.host_kernels(),
            self.accelerator_kernels(),
            self.host_kernels()
        )?;
        if !self.folded.is_empty() {
            writeln!(
                f,
                "packed at compile time (constant operands): {}",
                at_names(&self.folded)
            )?;
        }
        if !self.kept.is_empty() {
            writeln!(
                f,
                "kept on the vector engine (simulated faster than pack + GEMM): {}",
                at_names(&self.kept)
            )?;
        }
        writeln!(
            f,
            "{:>12} {:>10} {:>6} {:>6} {:>10} {:>8} {:>9}  kernel",
            "cycles", "us", "mx%", "vx%", "HBM MB", "bound", "roofline%"
        )?;
        for k in &self.kernels {
            match &k.placement {
                Placement::Accelerator { summary, report } => {
                    let util = |e| {
                        let busy: u64 = report
                            .engines
                            .iter()
                            .filter(|s| s.engine == e)
                            .map(|s| s.busy_cycles)
                            .sum();
                        100.0 * busy as f64 / (report.cycles.max(1) * nodes) as f64
                    };
                    writeln!(
                        f,
                        "{:>12} {:>10.2} {:>6.1} {:>6.1} {:>10} {:>8} {:>9.1}  @{} {}: {summary}",
                        report.cycles,
                        report.cycles as f64 / (self.clock_ghz * 1e3),
                        util(crate::isa::Engine::Mx),
                        util(crate::isa::Engine::Vx),
                        mb(report.hbm_read_bytes + report.hbm_write_bytes),
                        report.roofline.limiter,
                        100.0 * report.achieved_fraction(),
                        k.name,
                        k.kind
                    )?;
                }
                Placement::Host { reason, time } => writeln!(
                    f,
                    "{:>12} {:>10} {:>6} {:>6} {:>10} {:>8} {:>9}  @{} {}: on the host ({:.3} ms): {reason}",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    k.name,
                    k.kind,
                    time.as_secs_f64() * 1e3
                )?,
            }
        }
        let cycles = self.cycles();
        let macs: u64 = self.device_reports().map(|r| r.macs + r.macs_f32).sum();
        let bound: f64 = self.device_reports().map(|r| r.roofline.bound_cycles).sum();
        write!(
            f,
            "total: {cycles} cycles ({:.2} us at {:.2} GHz) on the accelerator, {macs} MACs, roofline {:.0} cycles ({:.1}% achieved)",
            cycles as f64 / (self.clock_ghz * 1e3),
            self.clock_ghz,
            bound,
            if cycles == 0 {
                0.0
            } else {
                100.0 * bound / cycles as f64
            }
        )?;
        if self.host_kernels() > 0 {
            write!(
                f,
                "; {} kernel(s) on the host, not simulated",
                self.host_kernels()
            )?;
        }
        Ok(())
    }
}

/// The little-endian bytes of a buffer's flat contents, in the accelerator's element type.
fn to_bytes(t: &Tensor) -> Option<Vec<u8>> {
    Some(match t.dtype() {
        DType::F32 => t
            .as_slice::<f32>()?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect(),
        DType::BF16 => t
            .as_slice::<half::bf16>()?
            .iter()
            .flat_map(|x| x.to_bits().to_le_bytes())
            .collect(),
        DType::CF8E4M3 => t
            .as_slice::<terafab_ir::CF8E4M3>()?
            .iter()
            .map(|x| x.0)
            .collect(),
        DType::CF8E5M2 => t
            .as_slice::<terafab_ir::CF8E5M2>()?
            .iter()
            .map(|x| x.0)
            .collect(),
        _ => return None,
    })
}

/// A buffer's flat contents from the accelerator's bytes.
fn from_bytes(buf: &Buffer, bytes: &[u8]) -> Option<Tensor> {
    let shape = vec![buf.span()];
    let t = match buf.dtype {
        DType::F32 => Tensor::from_vec(
            shape,
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        DType::BF16 => Tensor::from_vec(
            shape,
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect(),
        ),
        DType::CF8E4M3 => Tensor::from_vec(
            shape,
            bytes.iter().map(|&b| terafab_ir::CF8E4M3(b)).collect(),
        ),
        DType::CF8E5M2 => Tensor::from_vec(
            shape,
            bytes.iter().map(|&b| terafab_ir::CF8E5M2(b)).collect(),
        ),
        _ => return None,
    };
    t.ok()
}

/// Run a kernel program: lowered kernels on the simulated machine `cfg`, the others on the
/// host; appends one entry per kernel to `report` (and the compile-time decisions).
pub fn run_program(
    cfg: &Config,
    p: &KernelProgram,
    inputs: &[Tensor],
    opts: &Options,
    report: &mut ModelReport,
) -> Result<Vec<Tensor>, TileBackendError> {
    // Contractions of the GEMM form split so that the matrix engine runs them, constant packs
    // evaluated once, every kernel lowered or placed on the host.
    let compiled = compile_program(cfg, p, opts);
    run_compiled(cfg, &compiled, inputs, report)
}

/// Run a program compiled by [`compile_program`] for `cfg` on `inputs`; appends one entry
/// per kernel to `report` (and the compile-time decisions).
pub fn run_compiled(
    cfg: &Config,
    compiled: &Compiled,
    inputs: &[Tensor],
    report: &mut ModelReport,
) -> Result<Vec<Tensor>, TileBackendError> {
    let host = |k: &str| {
        let kernel = k.to_string();
        move |source| TileBackendError::Host { kernel, source }
    };
    report.folded.extend(compiled.folded.iter().cloned());
    report.kept.extend(compiled.kept.iter().cloned());
    let p = &compiled.program;
    let mut mem = initial_memory(p, inputs).map_err(host(&p.name))?;
    let mut skip = 0;
    for (i, (k, ck)) in p.kernels.iter().zip(&compiled.kernels).enumerate() {
        if skip > 0 {
            skip -= 1;
            continue;
        }
        // A linked chain runs as one program (its other kernels with the first).
        let link = compiled.links.iter().find(|l| l.first == i);
        let name = match link {
            Some(l) => {
                skip = l.count - 1;
                compiled.chain_name(l)[1..].to_string()
            }
            None => k.name.clone(),
        };
        let data_err = |b: BufferId, msg: &str| TileBackendError::Data {
            kernel: name.clone(),
            buffer: p.buffer(b).name.clone(),
            msg: msg.to_string(),
        };
        let lowered = match link {
            Some(l) => Ok(&l.lowered),
            None => ck.lowered.as_ref(),
        };
        let placement = match lowered {
            Ok(lowered) => {
                let sim_err = |source| TileBackendError::Sim {
                    kernel: name.clone(),
                    summary: lowered.summary.clone(),
                    source: Box::new(source),
                };
                let mut sim =
                    Simulator::new(cfg.clone(), lowered.program.clone()).map_err(sim_err)?;
                for &b in &lowered.reads {
                    let t = mem[b.index()]
                        .as_ref()
                        .ok_or_else(|| data_err(b, "read before it is written"))?;
                    let bytes =
                        to_bytes(t).ok_or_else(|| data_err(b, "not an accelerator type"))?;
                    sim.load_hbm(&hbm_name(b), &bytes).map_err(sim_err)?;
                }
                let report = sim.run().map_err(sim_err)?;
                for &b in &lowered.writes {
                    let bytes = sim.read_hbm(&hbm_name(b)).map_err(sim_err)?;
                    let t = from_bytes(p.buffer(b), &bytes)
                        .ok_or_else(|| data_err(b, "cannot read it back"))?;
                    mem[b.index()] = Some(t);
                }
                Placement::Accelerator {
                    summary: lowered.summary.clone(),
                    report: Box::new(report),
                }
            }
            Err(reason) => {
                let start = Instant::now();
                let outs = run_kernel(p, k, &mem).map_err(host(&k.name))?;
                for (&b, t) in k.outputs.iter().zip(outs) {
                    mem[b.index()] = Some(t);
                }
                Placement::Host {
                    reason: reason.clone(),
                    time: start.elapsed(),
                }
            }
        };
        report.kernels.push(KernelRun {
            count: link.map_or(1, |l| l.count),
            name,
            kind: k.kind.name(),
            placement,
        });
    }
    read_outputs(p, &mem).map_err(host(&p.name))
}

/// Run a graph function on the tile backend: fused into kernel programs (in segments where
/// shapes depend on data), each run by [`run_program`] with the default [`Options`].
pub fn run_function(
    cfg: &Config,
    f: &Function,
    inputs: &[Tensor],
) -> Result<(Vec<Tensor>, ModelReport), TileBackendError> {
    run_function_with(cfg, f, inputs, &Options::default())
}

/// [`run_function`] with compile options.
pub fn run_function_with(
    cfg: &Config,
    f: &Function,
    inputs: &[Tensor],
    opts: &Options,
) -> Result<(Vec<Tensor>, ModelReport), TileBackendError> {
    let mut report = ModelReport::new(cfg);
    let outputs = run_kernels_with(f, inputs, &mut |p, ins| {
        run_program(cfg, p, ins, opts, &mut report).map_err(|e| RunError::Backend {
            func: f.name.clone(),
            source: Box::new(e),
        })
    })?;
    Ok((outputs, report))
}
