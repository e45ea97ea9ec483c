//! The result of a run: cycles, utilization, bytes moved, SRAM high-water marks, the
//! roofline bound, and the trace events.

use std::fmt;
use std::path::Path;

use crate::isa::Engine;

/// One engine's activity over a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineStats {
    /// Node `(x, y)`.
    pub node: (u8, u8),
    /// The engine.
    pub engine: Engine,
    /// Cycles with at least one of its instructions in progress.
    pub busy_cycles: u64,
    /// Instructions it executed.
    pub instructions: u64,
}

/// Per-node summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStats {
    /// Node `(x, y)`.
    pub node: (u8, u8),
    /// One past the highest SRAM byte any instruction touched (0 if none).
    pub sram_high_water: u64,
    /// SRAM bytes read by this node's engines and by sends from it.
    pub sram_read_bytes: u64,
    /// SRAM bytes written (including data arriving from other nodes).
    pub sram_write_bytes: u64,
    /// Cycle at which its last engine finished.
    pub finish_cycle: u64,
}

/// The roofline bound of a program on the configured chip, in cycles.
#[derive(Debug, Clone, PartialEq)]
pub struct Roofline {
    /// `(bf16/CFP8 MACs + f32 MACs × mx_f32_divisor) / (nodes × mx_m × mx_n × mx_k)`.
    pub compute_cycles: f64,
    /// `HBM bytes / hbm_bytes_per_cycle`.
    pub hbm_cycles: f64,
    /// Vector work (busy cycles without fixed latency) / nodes.
    pub vector_cycles: f64,
    /// `mesh link-bytes / (links × link_bytes_per_cycle)`.
    pub mesh_cycles: f64,
    /// The largest of the above.
    pub bound_cycles: f64,
    /// Which term is the largest (`compute`, `hbm`, `vector`, `mesh`).
    pub limiter: &'static str,
}

/// One interval of one engine, for the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEvent {
    /// Node `(x, y)`.
    pub node: (u8, u8),
    /// The engine.
    pub engine: Engine,
    /// Sub-track for overlapping DMA transfers (0 otherwise).
    pub lane: u32,
    /// Mnemonic.
    pub name: &'static str,
    /// Program counter.
    pub pc: usize,
    /// Start cycle.
    pub start: u64,
    /// End cycle.
    pub end: u64,
}

/// The report of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Mesh size.
    pub mesh: (u32, u32),
    /// Clock in GHz.
    pub clock_ghz: f64,
    /// Whether arithmetic was skipped.
    pub timing_only: bool,
    /// Cycle at which the last instruction (or arrival) completed.
    pub cycles: u64,
    /// Per engine of every node with a stream, node-major.
    pub engines: Vec<EngineStats>,
    /// Per node with a stream or touched by a transfer.
    pub nodes: Vec<NodeStats>,
    /// MACs with bf16/CFP8 operands only.
    pub macs: u64,
    /// MACs with an f32 operand.
    pub macs_f32: u64,
    /// Bytes read from HBM.
    pub hbm_read_bytes: u64,
    /// Bytes written to HBM.
    pub hbm_write_bytes: u64,
    /// Bytes delivered by sends (per destination).
    pub mesh_payload_bytes: u64,
    /// Bytes × links crossed, over all transfers (sends and HBM traffic).
    pub mesh_link_bytes: u64,
    /// SRAM bytes read, all nodes.
    pub sram_read_bytes: u64,
    /// SRAM bytes written, all nodes.
    pub sram_write_bytes: u64,
    /// Instructions executed.
    pub instructions: u64,
    /// The roofline.
    pub roofline: Roofline,
    /// Trace events (empty when tracing is off).
    pub trace: Vec<TraceEvent>,
}

impl Report {
    /// `roofline.bound_cycles / cycles` (1.0 means the program runs at its bound).
    pub fn achieved_fraction(&self) -> f64 {
        if self.cycles == 0 {
            return 0.0;
        }
        self.roofline.bound_cycles / self.cycles as f64
    }

    /// Utilization of one engine: busy / total cycles.
    pub fn utilization(&self, node: (u8, u8), engine: Engine) -> f64 {
        self.engines
            .iter()
            .find(|e| e.node == node && e.engine == engine)
            .map_or(0.0, |e| {
                if self.cycles == 0 {
                    0.0
                } else {
                    e.busy_cycles as f64 / self.cycles as f64
                }
            })
    }

    /// The stats of one engine.
    pub fn engine(&self, node: (u8, u8), engine: Engine) -> Option<&EngineStats> {
        self.engines
            .iter()
            .find(|e| e.node == node && e.engine == engine)
    }

    /// The Chrome trace-event JSON (see [`crate::trace`]).
    pub fn trace_json(&self) -> String {
        crate::trace::chrome_trace(self)
    }

    /// Writes the Chrome trace-event JSON to `path`.
    pub fn write_trace(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        std::fs::write(path, self.trace_json())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (w, h) = self.mesh;
        writeln!(
            f,
            "terafab-tile run on a {w}x{h} mesh at {:.2} GHz{}",
            self.clock_ghz,
            if self.timing_only {
                " (timing only)"
            } else {
                ""
            }
        )?;
        let us = self.cycles as f64 / (self.clock_ghz * 1000.0);
        writeln!(f, "cycles: {} ({us:.3} us)", self.cycles)?;
        writeln!(f, "instructions: {}", self.instructions)?;
        writeln!(f, "MACs: {} bf16/cfp8, {} f32", self.macs, self.macs_f32)?;
        writeln!(
            f,
            "bytes: HBM read {}, HBM write {}; mesh payload {}, mesh link-bytes {}; SRAM read {}, SRAM write {}",
            self.hbm_read_bytes,
            self.hbm_write_bytes,
            self.mesh_payload_bytes,
            self.mesh_link_bytes,
            self.sram_read_bytes,
            self.sram_write_bytes
        )?;
        let r = &self.roofline;
        writeln!(
            f,
            "roofline: {:.1} cycles, bound by {} (compute {:.1}, hbm {:.1}, vector {:.1}, mesh {:.1}); achieved {:.1}%",
            r.bound_cycles,
            r.limiter,
            r.compute_cycles,
            r.hbm_cycles,
            r.vector_cycles,
            r.mesh_cycles,
            100.0 * self.achieved_fraction()
        )?;
        writeln!(
            f,
            "{:<9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10} {:>10}",
            "node", "dma%", "mx%", "vx%", "net%", "instrs", "sram-hwm", "finish"
        )?;
        for n in &self.nodes {
            let util = |e: Engine| 100.0 * self.utilization(n.node, e);
            let instrs: u64 = self
                .engines
                .iter()
                .filter(|e| e.node == n.node)
                .map(|e| e.instructions)
                .sum();
            writeln!(
                f,
                "{:<9} {:>7.1} {:>7.1} {:>7.1} {:>7.1} {:>8} {:>10} {:>10}",
                format!("({},{})", n.node.0, n.node.1),
                util(Engine::Dma),
                util(Engine::Mx),
                util(Engine::Vx),
                util(Engine::Net),
                instrs,
                n.sram_high_water,
                n.finish_cycle
            )?;
        }
        Ok(())
    }
}
