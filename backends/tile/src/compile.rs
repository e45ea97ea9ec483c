//! A kernel program compiled for the tile machine: the contraction split
//! ([`split_contractions`]: pack, GEMM and epilogue kernels; constant packs evaluated once)
//! and every kernel lowered ([`lower_kernel`]) or placed on the host with the reason.
//!
//! [`Compiled::kernels_text`] prints the kernel IR the lowering starts from (what
//! `terafab compile --backend tile --emit tile-kernels` shows) and [`Compiled::asm_text`] the
//! tile programs (`--emit tile-asm`): one program per kernel, in execution order, each a
//! complete program in the assembler's text form (`terafab sim` runs it once its `input`
//! buffers are given), separated by `#` comment blocks naming the kernel, how it was lowered
//! and which kernel-IR buffer each HBM buffer holds.

use std::fmt::Write;

use terafab_ir::kernel::print::print_program as print_kernels;
use terafab_ir::kernel::verify::verify_program;
use terafab_ir::kernel::{BufferId, Kernel, KernelProgram};

use crate::config::Config;
use crate::lower::retile::{unroll_small_reduction, widen_rows};
use crate::lower::split_gemm::split_contractions;
use crate::lower::{Lowered, NotLowered, hbm_name, lower_kernel, timing_cycles};

/// One kernel of a compiled program.
#[derive(Debug, Clone)]
pub struct CompiledKernel {
    pub name: String,
    pub kind: &'static str,
    /// The tile program, or why the kernel runs on the host.
    pub lowered: Result<Lowered, NotLowered>,
}

/// How to compile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Simulate small contractions both ways (split onto the matrix engine, or whole on the
    /// vector engine) and keep the faster ([`crate::lower::split_gemm::COST_CHECK_MACS`]);
    /// off, every contraction the matrix engine can run is split, and every convolution input
    /// it can read in place is (implicit GEMM, whether or not its gathers keep pace).
    pub cost_check: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { cost_check: true }
    }
}

/// A kernel program compiled for one machine.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The machine: mesh `(width, height)` and clock.
    pub mesh: (u32, u32),
    pub clock_ghz: f64,
    /// The program the kernels belong to (after the split).
    pub program: KernelProgram,
    /// Pack kernels of constant operands evaluated at compile time.
    pub folded: Vec<String>,
    /// Small contractions kept on the vector path (simulated faster than split).
    pub kept: Vec<String>,
    pub kernels: Vec<CompiledKernel>,
}

/// Compile `p` for the machine `cfg`. The split is used only when the result verifies (it
/// always should; the original program is the fallback).
pub fn compile_program(cfg: &Config, p: &KernelProgram, opts: &Options) -> Compiled {
    let split = split_contractions(cfg, p, opts.cost_check);
    let (program, folded, kept) = if verify_program(&split.program).is_ok() {
        (split.program, split.folded, split.kept)
    } else {
        (p.clone(), Vec::new(), Vec::new())
    };
    let mut program = program;
    let mut kernels = Vec::new();
    for i in 0..program.kernels.len() {
        let (k, lowered) = lower_best(cfg, &program, &program.kernels[i]);
        kernels.push(CompiledKernel {
            name: k.name.clone(),
            kind: k.kind.name(),
            lowered,
        });
        program.kernels[i] = k;
    }
    Compiled {
        mesh: (cfg.mesh_width, cfg.mesh_height),
        clock_ghz: cfg.clock_ghz,
        program,
        folded,
        kept,
        kernels,
    }
}

/// `k` lowered, or one of its [`crate::lower::retile`] variants where that simulates faster
/// (timing only); the kernel as lowered, so the program shows what runs.
fn lower_best(
    cfg: &Config,
    p: &KernelProgram,
    k: &Kernel,
) -> (Kernel, Result<Lowered, NotLowered>) {
    let mut variants = Vec::new();
    if let Some(u) = unroll_small_reduction(k) {
        variants.extend(widen_rows(&u));
        variants.push(u);
    }
    variants.extend(widen_rows(k));
    let original = lower_kernel(cfg, p, k);
    if variants.is_empty() {
        return (k.clone(), original);
    }
    let mut best_cycles = original
        .as_ref()
        .ok()
        .and_then(|l| timing_cycles(cfg, &l.program));
    let mut best = (k.clone(), original);
    for v in variants {
        let Ok(l) = lower_kernel(cfg, p, &v) else {
            continue;
        };
        if let Some(c) = timing_cycles(cfg, &l.program)
            && best_cycles.is_none_or(|b| c < b)
        {
            best_cycles = Some(c);
            best = (v, Ok(l));
        }
    }
    best
}

impl Compiled {
    /// How many kernels run on the accelerator.
    pub fn lowered_count(&self) -> usize {
        self.kernels.iter().filter(|k| k.lowered.is_ok()).count()
    }

    fn header(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "# @{} for a {}x{} mesh at {:.2} GHz: {} kernel(s), {} on the accelerator, {} on the host",
            self.program.name,
            self.mesh.0,
            self.mesh.1,
            self.clock_ghz,
            self.kernels.len(),
            self.lowered_count(),
            self.kernels.len() - self.lowered_count()
        );
        if !self.folded.is_empty() {
            let _ = writeln!(
                s,
                "# packed at compile time (constant operands): {}",
                at_names(&self.folded)
            );
        }
        if !self.kept.is_empty() {
            let _ = writeln!(
                s,
                "# kept on the vector engine (simulated faster than pack + GEMM): {}",
                at_names(&self.kept)
            );
        }
    }

    /// The kernel IR after the split, with the placement of each kernel as a comment.
    pub fn kernels_text(&self) -> String {
        let mut s = String::new();
        self.header(&mut s);
        for k in &self.kernels {
            let _ = match &k.lowered {
                Ok(l) => writeln!(s, "# @{}: {}", k.name, l.summary),
                Err(why) => writeln!(s, "# @{}: on the host: {why}", k.name),
            };
        }
        s.push_str(&print_kernels(&self.program));
        s
    }

    /// The tile programs, one per kernel, in execution order.
    pub fn asm_text(&self) -> String {
        let mut s = String::new();
        self.header(&mut s);
        for k in &self.kernels {
            let _ = writeln!(s, "\n# ==== @{} ({})", k.name, k.kind);
            match &k.lowered {
                Ok(l) => {
                    let _ = writeln!(s, "# {}", l.summary);
                    let show = |bs: &[BufferId]| {
                        bs.iter()
                            .map(|&b| {
                                format!(
                                    "{} = %{}",
                                    hbm_name(b),
                                    self.program.buffer(b).name.escape_debug()
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let _ = writeln!(s, "# reads {}", show(&l.reads));
                    let _ = writeln!(s, "# writes {}", show(&l.writes));
                    s.push_str(&l.program.to_text());
                }
                Err(why) => {
                    let _ = writeln!(s, "# on the host (kernel interpreter): {why}");
                }
            }
        }
        s
    }
}

/// `@a @b @c`, or the first eight and a count.
pub(crate) fn at_names(ks: &[String]) -> String {
    let mut s: Vec<String> = ks.iter().take(8).map(|k| format!("@{k}")).collect();
    if ks.len() > 8 {
        s.push(format!("and {} more", ks.len() - 8));
    }
    s.join(" ")
}
