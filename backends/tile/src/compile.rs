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

use std::collections::HashMap;
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
    /// Link consecutive accelerator kernels into one program where the activation between
    /// them can stay in SRAM ([`crate::link`]), when that simulates faster.
    pub resident: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cost_check: true,
            resident: true,
        }
    }
}

/// Consecutive kernels run as one linked program, the buffers between them in SRAM.
#[derive(Debug, Clone)]
pub struct Link {
    /// The index of the first kernel.
    pub first: usize,
    /// How many kernels (at least 2), from `first` on.
    pub count: usize,
    /// The kernel-IR buffers kept in SRAM, one per boundary.
    pub resident: Vec<BufferId>,
    /// The linked program, its HBM reads and writes.
    pub lowered: Lowered,
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
    /// Pairs of kernels linked with their activation resident in SRAM.
    pub links: Vec<Link>,
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
    let links = if opts.resident {
        plan_links(cfg, &program, &kernels)
    } else {
        Vec::new()
    };
    Compiled {
        mesh: (cfg.mesh_width, cfg.mesh_height),
        clock_ghz: cfg.clock_ghz,
        program,
        folded,
        kept,
        kernels,
        links,
    }
}

/// A timing-only run of `program`: its cycles and each node's SRAM high-water mark.
fn timing_run(cfg: &Config, program: &crate::Program) -> Option<Timing> {
    let mut timing = cfg.clone();
    timing.timing_only = true;
    timing.trace = false;
    let mut sim = crate::sim::Simulator::new(timing, program.clone()).ok()?;
    let r = sim.run().ok()?;
    Some((
        r.cycles,
        r.nodes
            .iter()
            .map(|n| (n.node, n.sram_high_water))
            .collect(),
    ))
}

/// Chains of consecutive accelerator kernels, left to right: kernel `j` joins the chain
/// before it when a buffer only the chain writes and only `j` reads (not a program output)
/// can stay in SRAM ([`crate::link::link`]) and the linked program simulates faster than the
/// chain and `j` apart.
fn plan_links(cfg: &Config, p: &KernelProgram, kernels: &[CompiledKernel]) -> Vec<Link> {
    let mut links = Vec::new();
    let mut runs: HashMap<usize, Option<Timing>> = HashMap::new();
    let mut timing = |i: usize, l: &Lowered| {
        runs.entry(i)
            .or_insert_with(|| timing_run(cfg, &l.program))
            .clone()
    };
    let mut i = 0;
    while i + 1 < kernels.len() {
        let Ok(first) = &kernels[i].lowered else {
            i += 1;
            continue;
        };
        let Some(mut cur_timing) = timing(i, first) else {
            i += 1;
            continue;
        };
        let mut chain: Option<Link> = None;
        for (j, next) in kernels.iter().enumerate().skip(i + 1) {
            let Ok(b) = &next.lowered else {
                break;
            };
            let Some(b_timing) = timing(j, b) else {
                break;
            };
            let a = chain.as_ref().map_or(first, |l| &l.lowered);
            let Some((lowered, x, t)) = try_link(cfg, p, i..j, (a, &cur_timing), (b, &b_timing))
            else {
                break;
            };
            let resident = chain
                .take()
                .map(|l| l.resident)
                .unwrap_or_default()
                .into_iter()
                .chain([x])
                .collect();
            chain = Some(Link {
                first: i,
                count: j - i + 1,
                resident,
                lowered,
            });
            cur_timing = t;
        }
        match chain {
            Some(l) => {
                i += l.count;
                links.push(l);
            }
            None => i += 1,
        }
    }
    links
}

/// A timing-only run's cycles and per-node SRAM high-water marks.
type Timing = (u64, HashMap<(u8, u8), u64>);

/// The chain `a` (kernels `chain`) linked with the next kernel `b`: the linked program, the
/// buffer kept in SRAM and the linked program's timing; `None` where it does not link or
/// is not faster.
fn try_link(
    cfg: &Config,
    p: &KernelProgram,
    chain: std::ops::Range<usize>,
    (a, (ca, ha)): (&Lowered, &Timing),
    (b, (cb, hb)): (&Lowered, &Timing),
) -> Option<(Lowered, BufferId, Timing)> {
    let j = chain.end;
    let only = |x: BufferId| {
        !p.outputs.iter().any(|(_, o)| *o == x)
            && p.kernels.iter().enumerate().all(|(k, kernel)| {
                (chain.contains(&k) || !kernel.outputs.contains(&x))
                    && (k == j || !kernel.inputs.contains(&x))
            })
    };
    // The activation fits a node's SRAM (a node may load all of it) with room to spare.
    let fits = |x: BufferId| {
        let buf = p.buffer(x);
        (buf.len() as u64).saturating_mul(buf.dtype.size_bytes() as u64) <= cfg.sram_bytes / 2
    };
    let x = *a
        .writes
        .iter()
        .find(|&&x| b.reads.contains(&x) && !a.reads.contains(&x) && fits(x) && only(x))?;
    let linked = crate::link::link(
        cfg,
        &crate::link::Part {
            program: &a.program,
            sram_high: ha,
        },
        &crate::link::Part {
            program: &b.program,
            sram_high: hb,
        },
        &hbm_name(x),
    )
    .ok()?;
    let t = timing_run(cfg, &linked)?;
    if t.0 >= ca + cb {
        return None;
    }
    let mut reads = a.reads.clone();
    for &r in &b.reads {
        if r != x && !a.writes.contains(&r) && !reads.contains(&r) {
            reads.push(r);
        }
    }
    let mut writes: Vec<BufferId> = a.writes.iter().copied().filter(|&w| w != x).collect();
    for &w in &b.writes {
        if !writes.contains(&w) {
            writes.push(w);
        }
    }
    let lowered = Lowered {
        program: linked,
        reads,
        writes,
        summary: format!(
            "{}; then {} ({} kept in SRAM)",
            a.summary,
            b.summary,
            hbm_name(x)
        ),
    };
    Some((lowered, x, t))
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
    /// `@a + @b + ..`: the kernels of a link.
    pub fn chain_name(&self, l: &Link) -> String {
        self.kernels[l.first..l.first + l.count]
            .iter()
            .map(|k| format!("@{}", k.name))
            .collect::<Vec<_>>()
            .join(" + ")
    }

    fn resident_names(&self, l: &Link) -> String {
        l.resident
            .iter()
            .map(|&b| format!("%{}", self.program.buffer(b).name.escape_debug()))
            .collect::<Vec<_>>()
            .join(", ")
    }

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
        for l in &self.links {
            let _ = writeln!(
                s,
                "# {}: linked, {} kept in SRAM",
                self.chain_name(l),
                self.resident_names(l)
            );
        }
        s.push_str(&print_kernels(&self.program));
        s
    }

    /// The tile programs, one per kernel (one per linked pair), in execution order.
    pub fn asm_text(&self) -> String {
        let mut s = String::new();
        self.header(&mut s);
        let mut skip = 0;
        for (i, k) in self.kernels.iter().enumerate() {
            if skip > 0 {
                skip -= 1;
                continue;
            }
            let link = self.links.iter().find(|l| l.first == i);
            let lowered = match link {
                Some(l) => {
                    skip = l.count - 1;
                    let _ = writeln!(
                        s,
                        "\n# ==== {} (linked: {} kept in SRAM)",
                        self.chain_name(l),
                        self.resident_names(l)
                    );
                    Ok(&l.lowered)
                }
                None => {
                    let _ = writeln!(s, "\n# ==== @{} ({})", k.name, k.kind);
                    k.lowered.as_ref()
                }
            };
            match lowered {
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
