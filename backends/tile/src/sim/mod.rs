//! The functional and timed simulator.
//!
//! A discrete-event simulation over every node of the mesh. Each node's stream is dispatched
//! into four in-order engine queues (DMA, matrix, vector, net) by opcode; an engine starts
//! its next instruction when it is free and the instruction's semaphore tokens are available,
//! and events (engines becoming free, tokens arriving) are processed in time order, ties
//! in the order they were created. At its start an instruction reserves the shared resources
//! its transfer needs ([`timing`]), its memory accesses are checked against the node's
//! memory and against every access still in flight ([`memory`]), and its arithmetic is
//! done ([`exec`]) — on the values in memory at that time, which is exact because any access
//! that could see a different value is a race and an error.

mod exec;
mod memory;
mod timing;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::config::Config;
use crate::dtype::ElemType;
use crate::error::{SimError, Site};
use crate::isa::{
    Bcast, Dest, Dma, DmaKind, Engine, Instruction, Matmul, NUM_SEMS, Op, Send, VBinary, VReduce,
    VSelect, VTranspose, VUnary,
};
use crate::numerics::{Rng, Rounding};
use crate::program::{Buffer, Program};
use crate::report::{EngineStats, NodeStats, Report, Roofline, TraceEvent};

use exec::{Out, Src2, Tile};
use memory::{InFlight, Pattern};
use timing::{Resources, Stage, ser};

/// Most bytes one instruction may move (a hostile stride-0 transfer is refused, not run).
pub const MAX_TRANSFER_BYTES: u64 = 1 << 32;

/// A simulator: a configuration, a program, and the memory contents (HBM and every node's
/// SRAM), which persist across runs.
#[derive(Debug, Clone)]
pub struct Simulator {
    config: Config,
    program: Program,
    hbm: Vec<u8>,
    sram: Vec<Vec<u8>>,
}

fn alloc_zeroed(n: u64, what: &str) -> Result<Vec<u8>, SimError> {
    let err = || SimError::Alloc {
        what: what.to_string(),
        bytes: n,
    };
    let len = usize::try_from(n).map_err(|_| err())?;
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| err())?;
    v.resize(len, 0);
    Ok(v)
}

impl Simulator {
    /// Checks the configuration and program (every stream on a node of the mesh, every
    /// buffer inside HBM, host memory within `max_host_bytes`) and allocates HBM.
    pub fn new(config: Config, program: Program) -> Result<Simulator, SimError> {
        config.validate()?;
        program.validate().map_err(SimError::InvalidProgram)?;
        for s in &program.streams {
            if u32::from(s.node.0) >= config.mesh_width || u32::from(s.node.1) >= config.mesh_height
            {
                return Err(SimError::NodeOutsideMesh {
                    x: s.node.0,
                    y: s.node.1,
                    width: config.mesh_width,
                    height: config.mesh_height,
                });
            }
        }
        let mut extent = 0u64;
        for b in &program.buffers {
            let bytes = b.bytes().unwrap_or(u64::MAX);
            match b.end() {
                Some(end) if end <= config.hbm_bytes => extent = extent.max(end),
                _ => {
                    return Err(SimError::BufferOutsideHbm {
                        name: b.name.clone(),
                        addr: b.addr,
                        bytes,
                        hbm_bytes: config.hbm_bytes,
                    });
                }
            }
        }
        let sram_total = (config.nodes() as u64).saturating_mul(config.sram_bytes);
        let host = extent.saturating_add(sram_total);
        if host > config.max_host_bytes {
            return Err(SimError::TooLarge {
                what: format!("HBM extent {extent} + SRAM {sram_total}"),
                bytes: host,
                limit: config.max_host_bytes,
            });
        }
        let hbm = alloc_zeroed(extent, "HBM")?;
        let sram = vec![Vec::new(); config.nodes()];
        Ok(Simulator {
            config,
            program,
            hbm,
            sram,
        })
    }

    /// A simulator for a binary program.
    pub fn from_binary(config: Config, bytes: &[u8]) -> Result<Simulator, SimError> {
        let program = Program::decode(bytes)?;
        Simulator::new(config, program)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    fn buffer(&self, name: &str) -> Result<Buffer, SimError> {
        self.program
            .buffer(name)
            .cloned()
            .ok_or_else(|| SimError::UnknownBuffer(name.to_string()))
    }

    fn range(&self, b: &Buffer) -> Result<std::ops::Range<usize>, SimError> {
        let bad = || SimError::Internal(format!("buffer `{}` outside HBM", b.name));
        let s = usize::try_from(b.addr).map_err(|_| bad())?;
        let e = usize::try_from(b.end().ok_or_else(bad)?).map_err(|_| bad())?;
        if e > self.hbm.len() {
            return Err(bad());
        }
        Ok(s..e)
    }

    /// Copies raw little-endian bytes into a buffer (exactly its size).
    pub fn load_hbm(&mut self, name: &str, bytes: &[u8]) -> Result<(), SimError> {
        let b = self.buffer(name)?;
        let r = self.range(&b)?;
        if r.len() != bytes.len() {
            return Err(SimError::SizeMismatch {
                name: name.to_string(),
                expected: r.len() as u64,
                got: bytes.len() as u64,
                unit: "bytes",
            });
        }
        self.hbm
            .get_mut(r)
            .ok_or_else(|| SimError::Internal("HBM range".into()))?
            .copy_from_slice(bytes);
        Ok(())
    }

    /// Stores values into a buffer, rounding each to the buffer's element type (nearest even).
    pub fn load_hbm_f32(&mut self, name: &str, values: &[f32]) -> Result<(), SimError> {
        let b = self.buffer(name)?;
        let n = b.elements().unwrap_or(u64::MAX);
        if n != values.len() as u64 {
            return Err(SimError::SizeMismatch {
                name: name.to_string(),
                expected: n,
                got: values.len() as u64,
                unit: "elements",
            });
        }
        let mut bytes = Vec::new();
        for &v in values {
            b.dtype.encode_into(v, Rounding::NearestEven, &mut bytes);
        }
        self.load_hbm(name, &bytes)
    }

    /// The raw bytes of a buffer.
    pub fn read_hbm(&self, name: &str) -> Result<Vec<u8>, SimError> {
        let b = self.buffer(name)?;
        let r = self.range(&b)?;
        Ok(self
            .hbm
            .get(r)
            .ok_or_else(|| SimError::Internal("HBM range".into()))?
            .to_vec())
    }

    /// The values of a buffer as f32.
    pub fn read_hbm_f32(&self, name: &str) -> Result<Vec<f32>, SimError> {
        let b = self.buffer(name)?;
        let bytes = self.read_hbm(name)?;
        let mut out = Vec::new();
        b.dtype.decoder().decode(&bytes, &mut out);
        Ok(out)
    }

    /// A node's SRAM contents (`None` until an instruction touched it, or outside the mesh).
    pub fn sram(&self, node: (u8, u8)) -> Option<&[u8]> {
        if u32::from(node.0) >= self.config.mesh_width {
            return None;
        }
        let i = usize::from(node.1) * self.config.mesh_width as usize + usize::from(node.0);
        self.sram
            .get(i)
            .filter(|s| !s.is_empty())
            .map(Vec::as_slice)
    }

    /// Runs the program on every node to completion. Memory contents stay for the next
    /// run or for [`Simulator::read_hbm`]; semaphores and engine state start afresh.
    pub fn run(&mut self) -> Result<Report, SimError> {
        let mut run = Run::new(&self.config, &self.program, &mut self.hbm, &mut self.sram);
        run.simulate()?;
        Ok(run.report())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    /// Tokens arrive at a semaphore.
    Sem { node: usize, sem: u8, count: u64 },
    /// An engine may be able to start its next instruction.
    Try { node: usize, engine: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    time: u64,
    /// 0 for token arrivals, 1 for issue attempts: tokens arriving at `t` are visible to
    /// an instruction starting at `t`.
    prio: u8,
    seq: u64,
    kind: EventKind,
}

#[derive(Debug, Clone, Default)]
struct EngineState {
    queue: Vec<usize>,
    pos: usize,
    ready_at: u64,
    dma_inflight: Vec<u64>,
    lanes: Vec<u64>,
    busy: u64,
    covered: u64,
    count: u64,
}

#[derive(Debug, Clone, Default)]
struct NodeAcc {
    hwm: u64,
    read: u64,
    write: u64,
    finish: u64,
    touched: bool,
}

/// One access of an instruction: a pattern in a space (a node's SRAM, or HBM).
struct Access {
    space: usize,
    pat: Pattern,
    write: bool,
    end: u64,
}

/// What an issued instruction does to time.
struct Issue {
    /// When the engine may start its next instruction.
    free: u64,
    /// When the instruction completes (its `signal` fires).
    done: u64,
    /// End of the engine's busy interval (`done`, or injection end for sends).
    busy_end: u64,
    /// Extra token deliveries: (node, sem, count, time).
    tokens: Vec<(usize, u8, u64, u64)>,
}

#[derive(Default)]
struct Totals {
    macs: u64,
    macs_f32: u64,
    hbm_read: u64,
    hbm_write: u64,
    mesh_payload: u64,
    mesh_link_bytes: u64,
    vx_work: u64,
    instructions: u64,
}

struct Run<'a> {
    cfg: &'a Config,
    prog: &'a Program,
    hbm: &'a mut Vec<u8>,
    sram: &'a mut Vec<Vec<u8>>,
    width: usize,
    nodes: usize,
    stream_of: Vec<Option<usize>>,
    engines: Vec<EngineState>,
    sems: Vec<u64>,
    waiters: Vec<u8>,
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    res: Resources,
    inflight: Vec<Vec<InFlight>>,
    barrier_gen: Vec<usize>,
    barriers: Vec<Vec<(usize, usize, usize, u64)>>,
    participants: usize,
    rngs: Vec<Rng>,
    acc: Vec<NodeAcc>,
    totals: Totals,
    trace: Vec<TraceEvent>,
    end_time: u64,
}

fn node_seed(seed: u64, node: usize) -> u64 {
    seed.wrapping_add((node as u64) << 32)
}

fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> Option<(&mut T, &mut T)> {
    if a == b || a >= v.len() || b >= v.len() {
        return None;
    }
    if a < b {
        let (l, r) = v.split_at_mut(b);
        Some((l.get_mut(a)?, r.get_mut(0)?))
    } else {
        let (l, r) = v.split_at_mut(a);
        Some((r.get_mut(0)?, l.get_mut(b)?))
    }
}

fn internal(what: &str) -> SimError {
    SimError::Internal(what.to_string())
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a Config,
        prog: &'a Program,
        hbm: &'a mut Vec<u8>,
        sram: &'a mut Vec<Vec<u8>>,
    ) -> Run<'a> {
        let nodes = cfg.nodes();
        let width = cfg.mesh_width as usize;
        let mut stream_of = vec![None; nodes];
        let mut engines = vec![EngineState::default(); nodes * 4];
        for (si, s) in prog.streams.iter().enumerate() {
            let n = usize::from(s.node.1) * width + usize::from(s.node.0);
            if let Some(slot) = stream_of.get_mut(n) {
                *slot = Some(si);
            }
            for (pc, i) in s.instrs.iter().enumerate() {
                if let Some(e) = i.op.engine()
                    && let Some(es) = engines.get_mut(n * 4 + e.index())
                {
                    es.queue.push(pc);
                }
            }
        }
        Run {
            cfg,
            prog,
            hbm,
            sram,
            width,
            nodes,
            stream_of,
            engines,
            sems: vec![0; nodes * NUM_SEMS],
            waiters: vec![0; nodes * NUM_SEMS],
            heap: BinaryHeap::new(),
            seq: 0,
            res: Resources::new(cfg),
            inflight: vec![Vec::new(); nodes + 1],
            barrier_gen: vec![0; nodes],
            barriers: Vec::new(),
            participants: prog.streams.len(),
            rngs: (0..nodes)
                .map(|n| Rng::new(node_seed(cfg.seed, n)))
                .collect(),
            acc: vec![NodeAcc::default(); nodes],
            totals: Totals::default(),
            trace: Vec::new(),
            end_time: 0,
        }
    }

    fn hbm_space(&self) -> usize {
        self.nodes
    }

    fn coords(&self, node: usize) -> (u8, u8) {
        ((node % self.width) as u8, (node / self.width) as u8)
    }

    fn push(&mut self, time: u64, kind: EventKind) {
        let prio = match kind {
            EventKind::Sem { .. } => 0,
            EventKind::Try { .. } => 1,
        };
        self.seq += 1;
        self.heap.push(Reverse(Event {
            time,
            prio,
            seq: self.seq,
            kind,
        }));
    }

    fn instr(&self, node: usize, pc: usize) -> Result<Instruction, SimError> {
        let si = self
            .stream_of
            .get(node)
            .copied()
            .flatten()
            .ok_or_else(|| internal("no stream"))?;
        self.prog
            .streams
            .get(si)
            .and_then(|s| s.instrs.get(pc))
            .copied()
            .ok_or_else(|| internal("pc out of range"))
    }

    fn site(&self, node: usize, engine: usize, pc: usize) -> Site {
        Site {
            node: self.coords(node),
            engine: Engine::ALL.get(engine).copied(),
            pc,
            instr: self
                .instr(node, pc)
                .map_or_else(|_| "?".to_string(), |i| i.to_string()),
        }
    }

    fn invalid(
        &self,
        node: usize,
        engine: usize,
        pc: usize,
        reason: impl Into<String>,
    ) -> SimError {
        SimError::InvalidOperand {
            site: self.site(node, engine, pc),
            reason: reason.into(),
        }
    }

    fn simulate(&mut self) -> Result<(), SimError> {
        for node in 0..self.nodes {
            for e in 0..4 {
                if self
                    .engines
                    .get(node * 4 + e)
                    .is_some_and(|s| !s.queue.is_empty())
                {
                    self.push(0, EventKind::Try { node, engine: e });
                }
            }
        }
        while let Some(Reverse(ev)) = self.heap.pop() {
            match ev.kind {
                EventKind::Sem { node, sem, count } => {
                    let i = node * NUM_SEMS + usize::from(sem);
                    if let Some(v) = self.sems.get_mut(i) {
                        *v = v.saturating_add(count);
                    }
                    let mask = self.waiters.get_mut(i).map_or(0, std::mem::take);
                    for e in 0..4 {
                        if mask & (1 << e) != 0 {
                            self.push(ev.time, EventKind::Try { node, engine: e });
                        }
                    }
                    self.end_time = self.end_time.max(ev.time);
                }
                EventKind::Try { node, engine } => self.try_issue(node, engine, ev.time)?,
            }
        }
        self.check_deadlock()
    }

    /// The semaphore tokens an instruction needs before it starts.
    fn needs(instr: &Instruction) -> Vec<(u8, u64)> {
        let mut v: Vec<(u8, u64)> = Vec::new();
        if let Some(s) = instr.wait {
            v.push((s, 1));
        }
        if let Op::SemWait { sem, count, .. } = instr.op {
            match v.iter_mut().find(|(s, _)| *s == sem) {
                Some(slot) => slot.1 += u64::from(count),
                None => v.push((sem, u64::from(count))),
            }
        }
        v
    }

    fn try_issue(&mut self, node: usize, e: usize, now: u64) -> Result<(), SimError> {
        let ei = node * 4 + e;
        let (pc, ready_at) = match self.engines.get(ei) {
            Some(st) if st.pos < st.queue.len() => {
                (st.queue.get(st.pos).copied().unwrap_or(0), st.ready_at)
            }
            _ => return Ok(()),
        };
        if now < ready_at {
            return Ok(());
        }
        let instr = self.instr(node, pc)?;
        if e == Engine::Dma.index() {
            let max = self.cfg.dma_max_outstanding as usize;
            let st = self.engines.get_mut(ei).ok_or_else(|| internal("engine"))?;
            st.dma_inflight.retain(|&t| t > now);
            if st.dma_inflight.len() >= max {
                let t = st.dma_inflight.iter().copied().min().unwrap_or(now);
                st.ready_at = t;
                self.push(t, EventKind::Try { node, engine: e });
                return Ok(());
            }
        }
        let needs = Self::needs(&instr);
        for &(s, n) in &needs {
            let i = node * NUM_SEMS + usize::from(s);
            if self.sems.get(i).copied().unwrap_or(0) < n {
                if let Some(w) = self.waiters.get_mut(i) {
                    *w |= 1 << e;
                }
                return Ok(());
            }
        }
        for &(s, n) in &needs {
            if let Some(v) = self.sems.get_mut(node * NUM_SEMS + usize::from(s)) {
                *v -= n;
            }
        }
        if let Op::Barrier { .. } = instr.op {
            return self.arrive_barrier(node, e, pc, now);
        }
        let issue = self.issue(node, e, pc, &instr, now)?;
        let name = instr.op.mnemonic();
        self.finish(node, e, pc, now, name, &issue);
        if let Some(s) = instr.signal {
            self.push(
                issue.done,
                EventKind::Sem {
                    node,
                    sem: s,
                    count: 1,
                },
            );
        }
        for &(n, s, c, t) in &issue.tokens {
            self.push(
                t,
                EventKind::Sem {
                    node: n,
                    sem: s,
                    count: c,
                },
            );
        }
        self.push(issue.free, EventKind::Try { node, engine: e });
        Ok(())
    }

    /// Bookkeeping after an instruction started: engine state, busy time, trace.
    fn finish(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        now: u64,
        name: &'static str,
        issue: &Issue,
    ) {
        let coords = self.coords(node);
        let trace_on = self.cfg.trace;
        let Some(st) = self.engines.get_mut(node * 4 + e) else {
            return;
        };
        st.pos += 1;
        st.ready_at = issue.free;
        st.count += 1;
        if e == Engine::Dma.index() {
            st.dma_inflight.push(issue.done);
        }
        let from = now.max(st.covered);
        if issue.busy_end > from {
            st.busy += issue.busy_end - from;
        }
        st.covered = st.covered.max(issue.busy_end);
        let lane = match st.lanes.iter().position(|&t| t <= now) {
            Some(l) => l,
            None => {
                st.lanes.push(0);
                st.lanes.len() - 1
            }
        };
        if let Some(t) = st.lanes.get_mut(lane) {
            *t = issue.done.max(now + 1);
        }
        if trace_on {
            self.trace.push(TraceEvent {
                node: coords,
                engine: Engine::ALL.get(e).copied().unwrap_or(Engine::Dma),
                lane: lane as u32,
                name,
                pc,
                start: now,
                end: issue.done,
            });
        }
        self.totals.instructions += 1;
        let t = issue.done.max(issue.free);
        self.end_time = self.end_time.max(t);
        if let Some(a) = self.acc.get_mut(node) {
            a.finish = a.finish.max(t);
            a.touched = true;
        }
    }

    fn barrier_latency(&self) -> u64 {
        let span = u64::from(self.cfg.mesh_width) + u64::from(self.cfg.mesh_height) - 2;
        2 * span * self.cfg.hop_cycles + self.cfg.sync_cycles
    }

    /// A node reaches its next barrier; the last arrival releases every waiting engine
    /// `barrier_latency` cycles later (their `signal`s fire then).
    fn arrive_barrier(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        now: u64,
    ) -> Result<(), SimError> {
        let g = self.barrier_gen.get(node).copied().unwrap_or(0);
        if let Some(slot) = self.barrier_gen.get_mut(node) {
            *slot += 1;
        }
        while self.barriers.len() <= g {
            self.barriers.push(Vec::new());
        }
        if let Some(st) = self.engines.get_mut(node * 4 + e) {
            st.ready_at = u64::MAX;
        }
        let arrived = {
            let b = self
                .barriers
                .get_mut(g)
                .ok_or_else(|| internal("barrier"))?;
            b.push((node, e, pc, now));
            b.len()
        };
        if arrived < self.participants {
            return Ok(());
        }
        let release = now + self.barrier_latency();
        let waiting = std::mem::take(
            self.barriers
                .get_mut(g)
                .ok_or_else(|| internal("barrier"))?,
        );
        for (n, eng, p, arrival) in waiting {
            let sig = self.instr(n, p)?.signal;
            let issue = Issue {
                free: release,
                done: release,
                busy_end: arrival,
                tokens: Vec::new(),
            };
            if let Some(st) = self.engines.get_mut(n * 4 + eng) {
                st.ready_at = 0;
            }
            self.finish(n, eng, p, arrival, "barrier", &issue);
            if let Some(s) = sig {
                self.push(
                    release,
                    EventKind::Sem {
                        node: n,
                        sem: s,
                        count: 1,
                    },
                );
            }
            self.push(
                release,
                EventKind::Try {
                    node: n,
                    engine: eng,
                },
            );
        }
        Ok(())
    }

    fn check_deadlock(&self) -> Result<(), SimError> {
        let mut first: Option<(usize, usize, usize)> = None;
        let mut blocked = 0;
        for node in 0..self.nodes {
            for e in 0..4 {
                if let Some(st) = self.engines.get(node * 4 + e)
                    && st.pos < st.queue.len()
                {
                    blocked += 1;
                    if first.is_none() {
                        first = Some((node, e, st.queue.get(st.pos).copied().unwrap_or(0)));
                    }
                }
            }
        }
        let Some((node, e, pc)) = first else {
            return Ok(());
        };
        let instr = self.instr(node, pc)?;
        let ready = self.engines.get(node * 4 + e).map_or(0, |s| s.ready_at);
        let reason = if ready == u64::MAX {
            let g = self
                .barrier_gen
                .get(node)
                .copied()
                .unwrap_or(1)
                .saturating_sub(1);
            let arrived = self.barriers.get(g).map_or(0, Vec::len);
            format!(
                "waiting at barrier #{g}: {arrived} of {} nodes arrived",
                self.participants
            )
        } else {
            let mut r = String::from("blocked");
            for (s, n) in Self::needs(&instr) {
                let have = self
                    .sems
                    .get(node * NUM_SEMS + usize::from(s))
                    .copied()
                    .unwrap_or(0);
                if have < n {
                    r = format!("waiting on semaphore {s} (holds {have}, needs {n})");
                    break;
                }
            }
            r
        };
        Err(SimError::Deadlock {
            site: self.site(node, e, pc),
            reason,
            blocked,
        })
    }

    // ---- memory checks -------------------------------------------------------------

    fn check_bounds(
        &self,
        node: usize,
        e: usize,
        pc: usize,
        space: usize,
        pat: &Pattern,
    ) -> Result<(), SimError> {
        let end = pat.end();
        if space == self.hbm_space() {
            let size = self.hbm.len() as u64;
            if end.is_none_or(|x| x > size) {
                return Err(SimError::HbmOutOfRange {
                    site: self.site(node, e, pc),
                    addr: pat.base,
                    end: end.unwrap_or(u64::MAX),
                    size,
                });
            }
        } else {
            let size = self.cfg.sram_bytes;
            if end.is_none_or(|x| x > size) {
                let mut site = self.site(node, e, pc);
                if space != node {
                    site.instr = format!(
                        "{} (at node ({},{}))",
                        site.instr,
                        self.coords(space).0,
                        self.coords(space).1
                    );
                }
                return Err(SimError::SramOutOfRange {
                    site,
                    addr: pat.base,
                    end: end.unwrap_or(u64::MAX),
                    size,
                });
            }
        }
        Ok(())
    }

    fn space_name(&self, space: usize) -> String {
        if space == self.hbm_space() {
            "HBM".into()
        } else {
            let (x, y) = self.coords(space);
            format!("SRAM of node ({x},{y})")
        }
    }

    /// Checks `accesses` against the accesses in flight, then records them.
    fn check_races(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        now: u64,
        accesses: &[Access],
    ) -> Result<(), SimError> {
        for a in accesses {
            let Some(list) = self.inflight.get_mut(a.space) else {
                return Err(internal("space"));
            };
            list.retain(|f| f.end > now);
            let conflict = list
                .iter()
                .find(|f| (a.write || f.write) && a.pat.overlaps(&f.pat))
                .copied();
            if let Some(f) = conflict {
                let what = match (a.write, f.write) {
                    (true, true) => "write/write",
                    (true, false) => "write/read",
                    _ => "read/write",
                };
                return Err(SimError::Race {
                    site: self.site(node, e, pc),
                    what,
                    space: self.space_name(a.space),
                    other: Box::new(self.site(f.node, f.engine, f.pc)),
                    until: f.end,
                });
            }
        }
        for a in accesses {
            if a.end > now
                && let Some(list) = self.inflight.get_mut(a.space)
            {
                list.push(InFlight {
                    pat: a.pat,
                    write: a.write,
                    end: a.end,
                    node,
                    engine: e,
                    pc,
                });
            }
        }
        Ok(())
    }

    /// Counts an SRAM access in the node's statistics.
    fn count_sram(&mut self, space: usize, pat: &Pattern, write: bool) {
        if let Some(a) = self.acc.get_mut(space) {
            a.touched = true;
            a.hwm = a.hwm.max(pat.end().unwrap_or(0));
            if write {
                a.write = a.write.saturating_add(pat.bytes());
            } else {
                a.read = a.read.saturating_add(pat.bytes());
            }
        }
    }

    fn ensure_sram(&mut self, node: usize) -> Result<(), SimError> {
        let size = self.cfg.sram_bytes;
        let slot = self.sram.get_mut(node).ok_or_else(|| internal("node"))?;
        if slot.is_empty() {
            *slot = alloc_zeroed(size, "SRAM")?;
        }
        Ok(())
    }

    // ---- instructions --------------------------------------------------------------

    fn issue(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        instr: &Instruction,
        now: u64,
    ) -> Result<Issue, SimError> {
        let sync = self.cfg.sync_cycles;
        let simple = |t: u64| Issue {
            free: t,
            done: t,
            busy_end: t,
            tokens: Vec::new(),
        };
        match instr.op {
            Op::Dma(d) => self.op_dma(node, e, pc, &d, now),
            Op::Send(s) => self.op_send(node, e, pc, &s, now),
            Op::Matmul(m) => self.op_matmul(node, e, pc, &m, now),
            Op::VBinary(v) => self.op_vbinary(node, e, pc, &v, now),
            Op::VUnary(v) => self.op_vunary(node, e, pc, &v, now),
            Op::VSelect(v) => self.op_vselect(node, e, pc, &v, now),
            Op::VReduce(v) => self.op_vreduce(node, e, pc, &v, now),
            Op::VTranspose(v) => self.op_vtranspose(node, e, pc, &v, now),
            Op::VSeed { seed } => {
                if let Some(r) = self.rngs.get_mut(node) {
                    *r = Rng::new(node_seed(u64::from(seed), node));
                }
                Ok(simple(now + sync))
            }
            Op::SemSignal { sem, count, .. } => {
                let mut i = simple(now + sync);
                i.tokens.push((node, sem, u64::from(count), now + sync));
                Ok(i)
            }
            Op::SemWait { .. } => Ok(simple(now + sync)),
            Op::Barrier { .. } | Op::End => Err(internal("barrier/end issued as an op")),
        }
    }

    fn op_dma(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        d: &Dma,
        now: u64,
    ) -> Result<Issue, SimError> {
        if d.len == 0 || d.n1 == 0 || d.n2 == 0 {
            return Err(self.invalid(
                node,
                e,
                pc,
                "zero-sized transfer (len, n1 and n2 must be >= 1)",
            ));
        }
        let pat = |base: u64, s1: u32, s2: u32| Pattern {
            base,
            len: u64::from(d.len),
            n1: u64::from(d.n1),
            s1: u64::from(s1),
            n2: u64::from(d.n2),
            s2: u64::from(s2),
        };
        let src = pat(d.src, d.src_stride1, d.src_stride2);
        let dst = pat(d.dst, d.dst_stride1, d.dst_stride2);
        let bytes = src.bytes();
        if bytes > MAX_TRANSFER_BYTES {
            return Err(self.invalid(
                node,
                e,
                pc,
                format!("transfer of {bytes} bytes exceeds {MAX_TRANSFER_BYTES}"),
            ));
        }
        let hbm = self.hbm_space();
        let (ss, ds) = match d.kind {
            DmaKind::Load => (hbm, node),
            DmaKind::Store => (node, hbm),
            DmaKind::Copy => (node, node),
        };
        self.check_bounds(node, e, pc, ss, &src)?;
        self.check_bounds(node, e, pc, ds, &dst)?;

        // Timing.
        let cfg = self.cfg;
        let (x, y) = self.coords(node);
        let (x, y) = (usize::from(x), usize::from(y));
        let ser_d = ser(bytes, cfg.dma_bytes_per_cycle);
        let ser_l = ser(bytes, cfg.link_bytes_per_cycle);
        let ports = u128::from(cfg.hbm_ports());
        let ser_p = u64::try_from(
            (u128::from(bytes) * ports).div_ceil(u128::from(cfg.hbm_bytes_per_cycle)),
        )
        .unwrap_or(u64::MAX);
        let dma_stage = Stage {
            res: self.res.dma_port(node),
            ser: ser_d,
            lat: 0,
        };
        let (port, pnode) = self.res.hbm_port_of(x, y);
        let port_stage = Stage {
            res: self.res.hbm_port(port),
            ser: ser_p,
            lat: cfg.hbm_latency,
        };
        let link = |res: usize| Stage {
            res,
            ser: ser_l,
            lat: cfg.hop_cycles,
        };
        let mut stages = Vec::new();
        match d.kind {
            DmaKind::Load => {
                stages.push(port_stage);
                stages.extend(self.res.route(pnode, (x, y)).into_iter().map(link));
                stages.push(dma_stage);
            }
            DmaKind::Store => {
                stages.push(dma_stage);
                stages.extend(self.res.route((x, y), pnode).into_iter().map(link));
                stages.push(port_stage);
            }
            DmaKind::Copy => stages.push(dma_stage),
        }
        let links = stages.iter().filter(|s| self.res.is_link(s.res)).count() as u64;
        let t0 = now + cfg.dma_setup;
        let (_, done) = self.res.pipeline(t0, &stages, &mut HashMap::new());

        self.check_races(
            node,
            e,
            pc,
            now,
            &[
                Access {
                    space: ss,
                    pat: src,
                    write: false,
                    end: done,
                },
                Access {
                    space: ds,
                    pat: dst,
                    write: true,
                    end: done,
                },
            ],
        )?;

        if !cfg.timing_only {
            self.ensure_sram(node)?;
            let sram = self.sram.get_mut(node).ok_or_else(|| internal("node"))?;
            match d.kind {
                DmaKind::Load => exec::copy_rows(self.hbm, sram, &src, &dst)?,
                DmaKind::Store => exec::copy_rows(sram, self.hbm, &src, &dst)?,
                DmaKind::Copy => exec::copy_rows_within(sram, &src, &dst)?,
            }
        }
        match d.kind {
            DmaKind::Load => {
                self.totals.hbm_read += bytes;
                self.count_sram(node, &dst, true);
            }
            DmaKind::Store => {
                self.totals.hbm_write += bytes;
                self.count_sram(node, &src, false);
            }
            DmaKind::Copy => {
                self.count_sram(node, &src, false);
                self.count_sram(node, &dst, true);
            }
        }
        self.totals.mesh_link_bytes = self.totals.mesh_link_bytes.saturating_add(bytes * links);
        Ok(Issue {
            free: t0,
            done,
            busy_end: done,
            tokens: Vec::new(),
        })
    }

    fn op_send(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        s: &Send,
        now: u64,
    ) -> Result<Issue, SimError> {
        if s.len == 0 || s.n1 == 0 {
            return Err(self.invalid(node, e, pc, "zero-sized transfer (len and n1 must be >= 1)"));
        }
        let (w, h) = (self.cfg.mesh_width as usize, self.cfg.mesh_height as usize);
        let (x0, y0, x1, y1) = match s.dest {
            Dest::Node { x, y } => (x, y, x, y),
            Dest::Rect { x0, y0, x1, y1 } => (x0, y0, x1, y1),
        };
        if x0 > x1 || y0 > y1 {
            return Err(self.invalid(
                node,
                e,
                pc,
                format!("empty multicast rectangle ({x0},{y0})..=({x1},{y1})"),
            ));
        }
        if usize::from(x1) >= w || usize::from(y1) >= h {
            return Err(self.invalid(
                node,
                e,
                pc,
                format!("target node ({x1},{y1}) outside the {w}x{h} mesh"),
            ));
        }
        let mut dests = Vec::new();
        for y in y0..=y1 {
            for x in x0..=x1 {
                dests.push(usize::from(y) * w + usize::from(x));
            }
        }
        let src = Pattern::rows(
            u64::from(s.src),
            u64::from(s.len),
            u64::from(s.n1),
            u64::from(s.src_stride),
        );
        let dst = Pattern::rows(
            u64::from(s.dst),
            u64::from(s.len),
            u64::from(s.n1),
            u64::from(s.dst_stride),
        );
        let bytes = src.bytes();
        if bytes > MAX_TRANSFER_BYTES {
            return Err(self.invalid(
                node,
                e,
                pc,
                format!("transfer of {bytes} bytes exceeds {MAX_TRANSFER_BYTES}"),
            ));
        }
        self.check_bounds(node, e, pc, node, &src)?;
        for &d in &dests {
            self.check_bounds(node, e, pc, d, &dst)?;
        }

        // Timing: a tree of XY routes sharing the links they have in common.
        let cfg = self.cfg;
        let ser_l = ser(bytes, cfg.link_bytes_per_cycle);
        let here = (node % w, node / w);
        let mut memo = HashMap::new();
        let mut done_all = now;
        let mut arrivals = Vec::with_capacity(dests.len());
        for &d in &dests {
            let mut stages = vec![Stage {
                res: self.res.inject(node),
                ser: ser_l,
                lat: cfg.router_cycles,
            }];
            stages.extend(
                self.res
                    .route(here, (d % w, d / w))
                    .into_iter()
                    .map(|res| Stage {
                        res,
                        ser: ser_l,
                        lat: cfg.hop_cycles,
                    }),
            );
            stages.push(Stage {
                res: self.res.eject(d),
                ser: ser_l,
                lat: 0,
            });
            let (_, done) = self.res.pipeline(now, &stages, &mut memo);
            arrivals.push(done);
            done_all = done_all.max(done);
        }
        let inject_end = memo.get(&self.res.inject(node)).map_or(now, |&(_, e)| e);
        let links = memo.keys().filter(|&&r| self.res.is_link(r)).count() as u64;

        let mut accesses = vec![Access {
            space: node,
            pat: src,
            write: false,
            end: inject_end,
        }];
        for (&d, &t) in dests.iter().zip(&arrivals) {
            accesses.push(Access {
                space: d,
                pat: dst,
                write: true,
                end: t,
            });
        }
        self.check_races(node, e, pc, now, &accesses)?;

        if !cfg.timing_only {
            self.ensure_sram(node)?;
            for &d in &dests {
                self.ensure_sram(d)?;
                if d == node {
                    let mem = self.sram.get_mut(node).ok_or_else(|| internal("node"))?;
                    exec::copy_rows_within(mem, &src, &dst)?;
                } else {
                    let (from, to) =
                        two_mut(self.sram, node, d).ok_or_else(|| internal("nodes"))?;
                    exec::copy_rows(from, to, &src, &dst)?;
                }
            }
        }
        self.count_sram(node, &src, false);
        let mut tokens = Vec::new();
        for (&d, &t) in dests.iter().zip(&arrivals) {
            self.count_sram(d, &dst, true);
            if let Some(a) = self.acc.get_mut(d) {
                a.finish = a.finish.max(t);
            }
            if let Some(rs) = s.rsem {
                tokens.push((d, rs, 1, t));
            }
        }
        self.totals.mesh_payload = self
            .totals
            .mesh_payload
            .saturating_add(bytes * dests.len() as u64);
        self.totals.mesh_link_bytes = self.totals.mesh_link_bytes.saturating_add(bytes * links);
        Ok(Issue {
            free: inject_end,
            done: done_all,
            busy_end: inject_end,
            tokens,
        })
    }

    fn check_tiles(
        &self,
        node: usize,
        e: usize,
        pc: usize,
        tiles: &[&Tile],
    ) -> Result<(), SimError> {
        for t in tiles {
            self.check_bounds(node, e, pc, node, &t.pattern())?;
        }
        Ok(())
    }

    fn op_matmul(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        m: &Matmul,
        now: u64,
    ) -> Result<Issue, SimError> {
        if m.m == 0 || m.n == 0 || m.k == 0 {
            return Err(self.invalid(node, e, pc, "m, n and k must be >= 1"));
        }
        let (mm, nn, kk) = (u64::from(m.m), u64::from(m.n), u64::from(m.k));
        let a = Tile::new(m.a, mm, kk, m.lda, m.atype);
        let b = Tile::new(m.b, kk, nn, m.ldb, m.btype);
        let c = Tile::new(m.dst, mm, nn, m.ldc, ElemType::F32);
        self.check_tiles(node, e, pc, &[&a, &b, &c])?;
        let cfg = self.cfg;
        let f32_rate = m.atype.is_f32() || m.btype.is_f32();
        let blocks = mm.div_ceil(cfg.mx_m) * nn.div_ceil(cfg.mx_n) * kk.div_ceil(cfg.mx_k);
        let cycles = blocks * if f32_rate { cfg.mx_f32_divisor } else { 1 } + cfg.mx_latency;
        let done = now + cycles;
        let mut acc = vec![
            Access {
                space: node,
                pat: a.pattern(),
                write: false,
                end: done,
            },
            Access {
                space: node,
                pat: b.pattern(),
                write: false,
                end: done,
            },
            Access {
                space: node,
                pat: c.pattern(),
                write: true,
                end: done,
            },
        ];
        if m.acc {
            acc.push(Access {
                space: node,
                pat: c.pattern(),
                write: false,
                end: done,
            });
        }
        self.check_races(node, e, pc, now, &acc)?;
        if !cfg.timing_only {
            self.ensure_sram(node)?;
            let mem = self.sram.get_mut(node).ok_or_else(|| internal("node"))?;
            exec::matmul(mem, &c, &a, &b, kk, m.acc)?;
        }
        for x in &acc {
            self.count_sram(node, &x.pat, x.write);
        }
        let macs = mm * nn * kk;
        if f32_rate {
            self.totals.macs_f32 += macs;
        } else {
            self.totals.macs += macs;
        }
        Ok(Issue {
            free: done,
            done,
            busy_end: done,
            tokens: Vec::new(),
        })
    }

    /// Vector cost: `rows * ceil(cols / lanes) * (slow ? vx_slow_divisor : 1) + vx_latency`,
    /// `lanes = vx_bytes_per_cycle / max(input size, output size)`.
    fn vx_cycles(&mut self, rows: u64, cols: u64, it: ElemType, ot: ElemType, slow: bool) -> u64 {
        let lanes = (self.cfg.vx_bytes_per_cycle / it.size().max(ot.size())).max(1);
        let work = rows * cols.div_ceil(lanes) * if slow { self.cfg.vx_slow_divisor } else { 1 };
        self.totals.vx_work += work;
        work + self.cfg.vx_latency
    }

    /// Common tail of the vector ops: races, arithmetic, statistics.
    #[allow(clippy::too_many_arguments)]
    fn vector_tail(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        now: u64,
        cycles: u64,
        reads: &[Pattern],
        writes: &[Pattern],
        body: impl FnOnce(&mut [u8], &mut Rng) -> Result<(), SimError>,
    ) -> Result<Issue, SimError> {
        let done = now + cycles;
        let acc: Vec<Access> = reads
            .iter()
            .map(|p| Access {
                space: node,
                pat: *p,
                write: false,
                end: done,
            })
            .chain(writes.iter().map(|p| Access {
                space: node,
                pat: *p,
                write: true,
                end: done,
            }))
            .collect();
        self.check_races(node, e, pc, now, &acc)?;
        if !self.cfg.timing_only {
            self.ensure_sram(node)?;
            let mem = self.sram.get_mut(node).ok_or_else(|| internal("node"))?;
            let rng = self.rngs.get_mut(node).ok_or_else(|| internal("rng"))?;
            body(mem, rng)?;
        }
        for x in &acc {
            self.count_sram(node, &x.pat, x.write);
        }
        Ok(Issue {
            free: done,
            done,
            busy_end: done,
            tokens: Vec::new(),
        })
    }

    fn dims(
        &self,
        node: usize,
        e: usize,
        pc: usize,
        rows: u16,
        cols: u16,
    ) -> Result<(u64, u64), SimError> {
        if rows == 0 || cols == 0 {
            return Err(self.invalid(node, e, pc, "rows and cols must be >= 1"));
        }
        Ok((u64::from(rows), u64::from(cols)))
    }

    fn op_vbinary(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        v: &VBinary,
        now: u64,
    ) -> Result<Issue, SimError> {
        let (r, c) = self.dims(node, e, pc, v.rows, v.cols)?;
        let dst = Tile::new(v.dst, r, c, v.dpitch, v.otype);
        let a = Tile::new(v.src1, r, c, v.pitch1, v.itype);
        let b = match v.bcast {
            Bcast::Tile => Src2::Tile(Tile::new(v.src2, r, c, v.pitch2, v.itype)),
            Bcast::Row => Src2::Row(Tile::new(v.src2, 1, c, 0, v.itype)),
            Bcast::Col => Src2::Col(Tile::new(v.src2, r, 1, v.pitch2, v.itype)),
            Bcast::Imm => Src2::Imm(f32::from_bits(v.imm)),
        };
        let mut reads = vec![a.pattern()];
        if let Src2::Tile(t) | Src2::Row(t) | Src2::Col(t) = &b {
            reads.push(t.pattern());
        }
        for p in reads.iter().chain([&dst.pattern()]) {
            self.check_bounds(node, e, pc, node, p)?;
        }
        let cycles = self.vx_cycles(r, c, v.itype, v.otype, v.op.is_slow());
        let (op, ot, sr) = (v.op, v.otype, v.sr);
        self.vector_tail(
            node,
            e,
            pc,
            now,
            cycles,
            &reads,
            &[dst.pattern()],
            |mem, rng| exec::vbinary(mem, op, &dst, &a, &b, &mut Out::new(ot, sr, rng)),
        )
    }

    fn op_vunary(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        v: &VUnary,
        now: u64,
    ) -> Result<Issue, SimError> {
        let (r, c) = self.dims(node, e, pc, v.rows, v.cols)?;
        let dst = Tile::new(v.dst, r, c, v.dpitch, v.otype);
        let src = Tile::new(v.src, r, c, v.spitch, v.itype);
        self.check_tiles(node, e, pc, &[&dst, &src])?;
        let cycles = self.vx_cycles(r, c, v.itype, v.otype, v.op.is_slow());
        let (op, ot, sr) = (v.op, v.otype, v.sr);
        self.vector_tail(
            node,
            e,
            pc,
            now,
            cycles,
            &[src.pattern()],
            &[dst.pattern()],
            |mem, rng| exec::vunary(mem, op, &dst, &src, &mut Out::new(ot, sr, rng)),
        )
    }

    fn op_vselect(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        v: &VSelect,
        now: u64,
    ) -> Result<Issue, SimError> {
        let (r, c) = self.dims(node, e, pc, v.rows, v.cols)?;
        let dst = Tile::new(v.dst, r, c, v.dpitch, v.otype);
        let cond = Tile::new(v.cond, r, c, v.spitch, v.itype);
        let a = Tile::new(v.a, r, c, v.spitch, v.itype);
        let b = Tile::new(v.b, r, c, v.spitch, v.itype);
        self.check_tiles(node, e, pc, &[&dst, &cond, &a, &b])?;
        let cycles = self.vx_cycles(r, c, v.itype, v.otype, false);
        let (ot, sr) = (v.otype, v.sr);
        let reads = [cond.pattern(), a.pattern(), b.pattern()];
        self.vector_tail(
            node,
            e,
            pc,
            now,
            cycles,
            &reads,
            &[dst.pattern()],
            |mem, rng| exec::vselect(mem, &dst, &cond, &a, &b, &mut Out::new(ot, sr, rng)),
        )
    }

    fn op_vreduce(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        v: &VReduce,
        now: u64,
    ) -> Result<Issue, SimError> {
        let (r, c) = self.dims(node, e, pc, v.rows, v.cols)?;
        if v.axis > 1 {
            return Err(self.invalid(node, e, pc, format!("axis {} is not 0 or 1", v.axis)));
        }
        let src = Tile::new(v.src, r, c, v.spitch, v.itype);
        let n = if v.axis == 1 { r } else { c };
        let dst = Pattern::span(u64::from(v.dst), n * v.otype.size());
        self.check_bounds(node, e, pc, node, &src.pattern())?;
        self.check_bounds(node, e, pc, node, &dst)?;
        let cycles = self.vx_cycles(r, c, v.itype, v.otype, false);
        let (op, ot, sr, axis, base) = (v.op, v.otype, v.sr, v.axis, u64::from(v.dst));
        self.vector_tail(
            node,
            e,
            pc,
            now,
            cycles,
            &[src.pattern()],
            &[dst],
            |mem, rng| exec::vreduce(mem, op, base, &src, axis, &mut Out::new(ot, sr, rng)),
        )
    }

    fn op_vtranspose(
        &mut self,
        node: usize,
        e: usize,
        pc: usize,
        v: &VTranspose,
        now: u64,
    ) -> Result<Issue, SimError> {
        let (r, c) = self.dims(node, e, pc, v.rows, v.cols)?;
        let src = Tile::new(v.src, r, c, v.spitch, v.dtype);
        let dst = Tile::new(v.dst, c, r, v.dpitch, v.dtype);
        self.check_tiles(node, e, pc, &[&dst, &src])?;
        let cycles = self.vx_cycles(r, c, v.dtype, v.dtype, false);
        self.vector_tail(
            node,
            e,
            pc,
            now,
            cycles,
            &[src.pattern()],
            &[dst.pattern()],
            |mem, _| exec::vtranspose(mem, &dst, &src),
        )
    }

    // ---- report --------------------------------------------------------------------

    fn report(&self) -> Report {
        let cfg = self.cfg;
        let mut engines = Vec::new();
        let mut nodes = Vec::new();
        for node in 0..self.nodes {
            let coords = self.coords(node);
            if self.stream_of.get(node).copied().flatten().is_some() {
                for e in Engine::ALL {
                    let st = self.engines.get(node * 4 + e.index());
                    engines.push(EngineStats {
                        node: coords,
                        engine: e,
                        busy_cycles: st.map_or(0, |s| s.busy),
                        instructions: st.map_or(0, |s| s.count),
                    });
                }
            }
            if let Some(a) = self.acc.get(node)
                && (a.touched || self.stream_of.get(node).copied().flatten().is_some())
            {
                nodes.push(NodeStats {
                    node: coords,
                    sram_high_water: a.hwm,
                    sram_read_bytes: a.read,
                    sram_write_bytes: a.write,
                    finish_cycle: a.finish,
                });
            }
        }
        let t = &self.totals;
        let n = self.nodes as f64;
        let compute = (t.macs as f64 + t.macs_f32 as f64 * cfg.mx_f32_divisor as f64)
            / cfg.peak_macs_per_cycle() as f64;
        let hbm = (t.hbm_read + t.hbm_write) as f64 / cfg.hbm_bytes_per_cycle as f64;
        let vector = t.vx_work as f64 / n;
        let (w, h) = (u64::from(cfg.mesh_width), u64::from(cfg.mesh_height));
        let links = 2 * ((w - 1) * h + (h - 1) * w);
        let mesh = if links == 0 {
            0.0
        } else {
            t.mesh_link_bytes as f64 / (links * cfg.link_bytes_per_cycle) as f64
        };
        let mut terms = [
            ("compute", compute),
            ("hbm", hbm),
            ("vector", vector),
            ("mesh", mesh),
        ];
        terms.sort_by(|a, b| b.1.total_cmp(&a.1));
        let (limiter, bound) = terms[0];
        Report {
            mesh: (cfg.mesh_width, cfg.mesh_height),
            clock_ghz: cfg.clock_ghz,
            timing_only: cfg.timing_only,
            cycles: self.end_time,
            engines,
            nodes,
            macs: t.macs,
            macs_f32: t.macs_f32,
            hbm_read_bytes: t.hbm_read,
            hbm_write_bytes: t.hbm_write,
            mesh_payload_bytes: t.mesh_payload,
            mesh_link_bytes: t.mesh_link_bytes,
            sram_read_bytes: self.acc.iter().map(|a| a.read).sum(),
            sram_write_bytes: self.acc.iter().map(|a| a.write).sum(),
            instructions: t.instructions,
            roofline: Roofline {
                compute_cycles: compute,
                hbm_cycles: hbm,
                vector_cycles: vector,
                mesh_cycles: mesh,
                bound_cycles: bound,
                limiter,
            },
            trace: self.trace.clone(),
        }
    }
}
