//! Two consecutive kernel programs linked into one, with the activation between them kept in
//! SRAM instead of a round trip through HBM.
//!
//! A producer program `A` writes a buffer `X` (its `dma.st`s) that the next program `B`
//! reads (its `dma.ld`s), and nothing else uses `X`. [`link`] builds one program:
//!
//! 1. **HBM**: the buffers of both programs by name (the same kernel-IR buffer has the same
//!    name in both), each once; every HBM address of a DMA is relocated. `X` has no HBM
//!    space.
//! 2. **A**, with each store into `X` turned into a `dma.cp` into the node's *out-stage*:
//!    an SRAM image of the byte range of `X` the node stores (the same strides, so every
//!    descriptor stays one descriptor).
//! 3. **Join**: the node's semaphores drained to zero (their balance over A's straight-line
//!    streams is known statically), the four engines joined, and a `barrier`: A is done on
//!    every node.
//! 4. **Redistribution**: each node sends the rows of `X` it stored to every node whose
//!    *in-stage* (the image of the byte range of `X` that node loads in B) overlaps them,
//!    over the mesh (a `dma.cp` when the node is its own consumer); a node waits for all
//!    the pieces it receives and for its own sends to complete.
//! 5. **B**, with each load from `X` turned into a `dma.cp` from the in-stage, its engines
//!    started once the node's in-stage is complete.
//!
//! The stages sit above what A (out-stage) and B (in-stage) use on each node (their SRAM
//! high-water marks, from a timing run); when they do not fit, the programs are not linked.
//! Semaphores 58–63 are the linker's: B must not use them, and A only as a linked program
//! does (balanced at its end), so a linked program links on with the next kernel (a chain).
//! Mesh links carry 256 B/cycle each, where all of HBM gives 400 B/cycle to the whole chip:
//! a resident activation costs a few mesh hops instead of a write and a read of HBM.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::config::Config;
use crate::r#gen::builder::{MAX_12, MAX_24};
use crate::isa::{Dest, Dma, DmaKind, Engine, Instruction, Op, Send};
use crate::program::{Buffer, Program, Role, Stream};

/// The linker's semaphores (every program it links must leave them alone).
const JOIN: u8 = 58;
const GO_MX: u8 = 59;
const GO_VX: u8 = 60;
const GO_NET: u8 = 61;
const ARRIVE: u8 = 62;
const SENT: u8 = 63;

/// Why two programs were not linked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not linked: {0}")]
pub struct NotLinked(pub String);

fn no(why: impl Into<String>) -> NotLinked {
    NotLinked(why.into())
}

/// A program with the SRAM high-water mark of each of its nodes (`(x, y)` → bytes).
#[derive(Debug, Clone)]
pub struct Part<'a> {
    pub program: &'a Program,
    pub sram_high: &'a HashMap<(u8, u8), u64>,
}

/// The byte rows `[start, end)` a DMA descriptor touches on one side (`src` or `dst`).
fn rows(base: u64, d: &Dma, src: bool) -> Vec<(u64, u64)> {
    let (s1, s2) = if src {
        (d.src_stride1, d.src_stride2)
    } else {
        (d.dst_stride1, d.dst_stride2)
    };
    let mut out = Vec::new();
    for i2 in 0..u64::from(d.n2.max(1)) {
        for i1 in 0..u64::from(d.n1.max(1)) {
            let r = base + i2 * u64::from(s2) + i1 * u64::from(s1);
            out.push((r, r + u64::from(d.len)));
        }
    }
    out
}

/// One transfer of the redistribution: `rows` rows of `len` bytes `stride` apart, from this
/// node's out-stage at `from` to node `to`'s in-stage at `dst`.
struct Piece {
    to: (u8, u8),
    from: u64,
    dst: u64,
    len: u64,
    rows: u64,
    stride: u64,
}

/// Whether the sorted, merged `runs` cover `[lo, hi)`.
fn covers(runs: &[(u64, u64)], lo: u64, hi: u64) -> bool {
    let i = runs.partition_point(|r| r.1 <= lo);
    runs.get(i).is_some_and(|r| r.0 <= lo && hi <= r.1)
}

/// Byte runs sorted and merged where they touch or overlap.
fn merged_runs(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

/// The intersection of two sorted, merged lists of runs.
fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let (lo, hi) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if lo < hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The bounding range `[lo, hi)` of a DMA side.
fn bounds(base: u64, d: &Dma, src: bool) -> (u64, u64) {
    let (s1, s2) = if src {
        (d.src_stride1, d.src_stride2)
    } else {
        (d.dst_stride1, d.dst_stride2)
    };
    let last =
        u64::from(d.n1.max(1) - 1) * u64::from(s1) + u64::from(d.n2.max(1) - 1) * u64::from(s2);
    (base, base + last + u64::from(d.len))
}

/// Per node, the semaphore balance of a program's streams (signals minus waits), counting
/// tokens that sends deliver to their destinations.
fn balances(p: &Program) -> HashMap<(u8, u8), BTreeMap<u8, i64>> {
    let mut out: HashMap<(u8, u8), BTreeMap<u8, i64>> = HashMap::new();
    for s in &p.streams {
        for ins in &s.instrs {
            let own = out.entry(s.node).or_default();
            if let Some(w) = ins.wait {
                *own.entry(w).or_default() -= 1;
            }
            if let Some(g) = ins.signal {
                *own.entry(g).or_default() += 1;
            }
            match ins.op {
                Op::SemSignal { sem, count, .. } => {
                    *own.entry(sem).or_default() += i64::from(count)
                }
                Op::SemWait { sem, count, .. } => *own.entry(sem).or_default() -= i64::from(count),
                Op::Send(Send {
                    rsem: Some(r),
                    dest,
                    ..
                }) => {
                    let (x0, y0, x1, y1) = match dest {
                        Dest::Node { x, y } => (x, y, x, y),
                        Dest::Rect { x0, y0, x1, y1 } => (x0, y0, x1, y1),
                    };
                    for y in y0..=y1 {
                        for x in x0..=x1 {
                            *out.entry((x, y)).or_default().entry(r).or_default() += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The semaphores a program uses.
fn sems_used(p: &Program) -> BTreeSet<u8> {
    let mut out = BTreeSet::new();
    for s in &p.streams {
        for ins in &s.instrs {
            out.extend(ins.wait);
            out.extend(ins.signal);
            match ins.op {
                Op::SemSignal { sem, .. } | Op::SemWait { sem, .. } => {
                    out.insert(sem);
                }
                Op::Send(Send { rsem: Some(r), .. }) => {
                    out.insert(r);
                }
                _ => {}
            }
        }
    }
    out
}

fn byte_size(b: &Buffer) -> Result<u64, NotLinked> {
    b.bytes().ok_or_else(|| no("a buffer's size overflows"))
}

/// The buffer of `p` holding HBM address `addr`.
fn buffer_at(p: &Program, addr: u64) -> Result<&Buffer, NotLinked> {
    p.buffers
        .iter()
        .find(|b| b.addr <= addr && b.end().is_some_and(|e| addr < e))
        .ok_or_else(|| no(format!("HBM address {addr:#x} is in no buffer")))
}

fn sem_signal(engine: Engine, sem: u8, count: u16) -> Instruction {
    Op::SemSignal { engine, sem, count }.into()
}

fn sem_wait(engine: Engine, sem: u8, count: u64) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut left = count;
    while left > 0 {
        let c = left.min(u64::from(u16::MAX));
        out.push(
            Op::SemWait {
                engine,
                sem,
                count: c as u16,
            }
            .into(),
        );
        left -= c;
    }
    out
}

/// The linked program of `a` then `b` with the buffer named `x` resident in SRAM.
pub fn link(cfg: &Config, a: &Part, b: &Part, x: &str) -> Result<Program, NotLinked> {
    // A may be a linked program itself (a longer chain): its own uses of the linker's
    // semaphores are balanced when it ends.
    let a_bal = balances(a.program);
    let a_ok = a_bal
        .values()
        .all(|m| m.iter().all(|(&s, &v)| s < JOIN || v == 0));
    if !a_ok || sems_used(b.program).iter().any(|&s| s >= JOIN) {
        return Err(no("a program uses the linker's semaphores"));
    }
    let xa = a
        .program
        .buffers
        .iter()
        .find(|bf| bf.name == x)
        .ok_or_else(|| no("the producer does not have the buffer"))?;
    let xb = b
        .program
        .buffers
        .iter()
        .find(|bf| bf.name == x)
        .ok_or_else(|| no("the consumer does not have the buffer"))?;
    let x_bytes = byte_size(xa)?;
    if byte_size(xb)? != x_bytes {
        return Err(no("the buffer's size differs between the programs"));
    }
    let in_x = |bf: &Buffer, addr: u64| addr >= bf.addr && addr < bf.addr + x_bytes;

    // (1) The merged HBM layout, by name; X has none.
    let mut merged: Vec<Buffer> = Vec::new();
    let mut at = 0u64;
    for p in [a.program, b.program] {
        for bf in &p.buffers {
            if bf.name == x {
                continue;
            }
            if let Some(m) = merged.iter_mut().find(|m| m.name == bf.name) {
                if byte_size(m)? != byte_size(bf)? {
                    return Err(no(format!("buffer {} differs in size", bf.name)));
                }
                // Read before any write in the chain: the host loads it.
                let input = matches!(m.role, Role::Input | Role::InOut);
                let output = matches!(m.role, Role::Output | Role::InOut)
                    || matches!(bf.role, Role::Output | Role::InOut);
                m.role = match (input, output) {
                    (true, true) => Role::InOut,
                    (true, false) => Role::Input,
                    (false, true) => Role::Output,
                    (false, false) => Role::Scratch,
                };
                continue;
            }
            let mut nb = bf.clone();
            nb.addr = at;
            at = at
                .checked_add(byte_size(bf)?)
                .and_then(|e| e.checked_next_multiple_of(64))
                .ok_or_else(|| no("the HBM layout overflows"))?;
            merged.push(nb);
        }
    }
    if at > cfg.hbm_bytes {
        return Err(no("the buffers do not fit HBM"));
    }
    let relocate = |p: &Program, addr: u64| -> Result<u64, NotLinked> {
        let bf = buffer_at(p, addr)?;
        let m = merged
            .iter()
            .find(|m| m.name == bf.name)
            .ok_or_else(|| no("a relocated buffer is missing"))?;
        Ok(m.addr + (addr - bf.addr))
    };

    // (2) The byte ranges of X each node stores (in A) and loads (in B), relative to X.
    let mut stores: HashMap<(u8, u8), Vec<(u64, u64)>> = HashMap::new();
    let mut store_descs: HashMap<(u8, u8), Vec<(u64, Dma)>> = HashMap::new();
    let mut out_range: HashMap<(u8, u8), (u64, u64)> = HashMap::new();
    for s in &a.program.streams {
        for ins in &s.instrs {
            if let Op::Dma(d) = ins.op
                && d.kind == DmaKind::Store
                && in_x(xa, d.dst)
            {
                let rel = d.dst - xa.addr;
                stores
                    .entry(s.node)
                    .or_default()
                    .extend(rows(rel, &d, false));
                store_descs.entry(s.node).or_default().push((rel, d));
                let (lo, hi) = bounds(rel, &d, false);
                let e = out_range.entry(s.node).or_insert((lo, hi));
                *e = (e.0.min(lo), e.1.max(hi));
            }
            if let Op::Dma(d) = ins.op
                && d.kind == DmaKind::Load
                && in_x(xa, d.src)
            {
                return Err(no("the producer reads the buffer back"));
            }
        }
    }
    let mut in_range: HashMap<(u8, u8), (u64, u64)> = HashMap::new();
    let mut loads: HashMap<(u8, u8), Vec<(u64, u64)>> = HashMap::new();
    for s in &b.program.streams {
        for ins in &s.instrs {
            if let Op::Dma(d) = ins.op {
                if d.kind == DmaKind::Load && in_x(xb, d.src) {
                    loads
                        .entry(s.node)
                        .or_default()
                        .extend(rows(d.src - xb.addr, &d, true));
                    let (lo, hi) = bounds(d.src - xb.addr, &d, true);
                    let e = in_range.entry(s.node).or_insert((lo, hi));
                    *e = (e.0.min(lo), e.1.max(hi));
                } else if d.kind == DmaKind::Store && in_x(xb, d.dst) {
                    return Err(no("the consumer writes the buffer"));
                }
            }
        }
    }
    // Every byte B loads must have been stored by A.
    let mut stored: Vec<(u64, u64)> = stores.values().flatten().copied().collect();
    stored.sort_unstable();
    let mut covered = 0u64;
    for &(lo, hi) in &stored {
        if lo > covered {
            break;
        }
        covered = covered.max(hi);
    }
    if covered < x_bytes {
        return Err(no("the producer does not store the whole buffer"));
    }

    // (3) Stage addresses: out-stage above A's high water, in-stage above B's, disjoint.
    let sram = cfg.sram_bytes;
    let mut out_base: HashMap<(u8, u8), u64> = HashMap::new();
    let mut in_base: HashMap<(u8, u8), u64> = HashMap::new();
    let mut nodes: BTreeSet<(u8, u8)> = BTreeSet::new();
    nodes.extend(a.program.streams.iter().map(|s| s.node));
    nodes.extend(b.program.streams.iter().map(|s| s.node));
    let align = |v: u64| v.checked_next_multiple_of(64);
    for &n in &nodes {
        let out_len = out_range.get(&n).map_or(0, |r| r.1 - r.0);
        let in_len = in_range.get(&n).map_or(0, |r| r.1 - r.0);
        let hw_a = a.sram_high.get(&n).copied().unwrap_or(0);
        let hw_b = b.sram_high.get(&n).copied().unwrap_or(0);
        // The out-stage right above what A uses; the in-stage above what B uses and the
        // out-stage (both are live during the redistribution).
        let o = align(hw_a).ok_or_else(|| no("SRAM addresses overflow"))?;
        let i = align(hw_b.max(o + out_len)).ok_or_else(|| no("SRAM addresses overflow"))?;
        if i + in_len > sram {
            return Err(no(format!("the stages do not fit node {n:?}'s SRAM")));
        }
        out_base.insert(n, o);
        in_base.insert(n, i);
    }

    // (4) The streams.
    let by_node = |p: &Program| -> HashMap<(u8, u8), Vec<Instruction>> {
        p.streams
            .iter()
            .map(|s| {
                let mut v = s.instrs.clone();
                if matches!(v.last().map(|i| i.op), Some(Op::End)) {
                    v.pop();
                }
                (s.node, v)
            })
            .collect()
    };
    let (a_streams, b_streams) = (by_node(a.program), by_node(b.program));
    let mut streams = Vec::new();
    // Pieces of X to move: (from, to, from SRAM address, to SRAM address, len, rows, stride).
    let mut arrivals: HashMap<(u8, u8), u64> = HashMap::new();
    // The bytes a node stored that another loads: per stored plane (rows at one stride),
    // one strided transfer when the consumer loads every row whole (the stages are images
    // of X, so the stride is the same on both sides), else the pieces of its rows it loads.
    let loads: BTreeMap<(u8, u8), Vec<(u64, u64)>> = loads
        .into_iter()
        .map(|(n, v)| (n, merged_runs(v)))
        .collect();
    let mut pieces: HashMap<(u8, u8), Vec<Piece>> = HashMap::new();
    let mut senders: Vec<(u8, u8)> = store_descs.keys().copied().collect();
    senders.sort_unstable();
    for p in senders {
        let (olo, _) = out_range[&p];
        for &(rel, d) in &store_descs[&p] {
            for i2 in 0..u64::from(d.n2.max(1)) {
                let plane = rel + i2 * u64::from(d.dst_stride2);
                let (n1, s1, len) = (
                    u64::from(d.n1.max(1)),
                    u64::from(d.dst_stride1),
                    u64::from(d.len),
                );
                for (&q, ls) in &loads {
                    let (ilo, _) = in_range[&q];
                    let whole = (0..n1).all(|i| covers(ls, plane + i * s1, plane + i * s1 + len));
                    let mut push = |at: u64, bytes: u64, rows: u64, stride: u64| {
                        pieces.entry(p).or_default().push(Piece {
                            to: q,
                            from: out_base[&p] + (at - olo),
                            dst: in_base[&q] + (at - ilo),
                            len: bytes,
                            rows,
                            stride,
                        });
                        *arrivals.entry(q).or_default() += 1;
                    };
                    if whole {
                        push(plane, len, n1, s1);
                        continue;
                    }
                    for i in 0..n1 {
                        let row = [(plane + i * s1, plane + i * s1 + len)];
                        for (l, h) in intersect(&row, ls) {
                            push(l, h - l, 1, 0);
                        }
                    }
                }
            }
        }
    }
    for &n in &nodes {
        let mut v: Vec<Instruction> = Vec::new();
        for ins in a_streams.get(&n).into_iter().flatten() {
            let mut ins = *ins;
            if let Op::Dma(d) = &mut ins.op {
                match d.kind {
                    DmaKind::Store if in_x(xa, d.dst) => {
                        let (olo, _) = out_range[&n];
                        d.kind = DmaKind::Copy;
                        d.dst = out_base[&n] + (d.dst - xa.addr - olo);
                    }
                    DmaKind::Store => d.dst = relocate(a.program, d.dst)?,
                    DmaKind::Load => d.src = relocate(a.program, d.src)?,
                    DmaKind::Copy => {}
                }
            }
            v.push(ins);
        }
        // Join: every token A left drained, every engine done, then every node.
        for (&sem, &bal) in a_bal.get(&n).into_iter().flatten() {
            if bal < 0 {
                return Err(no(format!(
                    "node {n:?} waits on semaphore {sem} more than it signals"
                )));
            }
            v.extend(sem_wait(Engine::Dma, sem, bal as u64));
        }
        for e in [Engine::Mx, Engine::Vx, Engine::Net] {
            v.push(sem_signal(e, JOIN, 1));
        }
        v.extend(sem_wait(Engine::Dma, JOIN, 3));
        v.push(
            Op::Barrier {
                engine: Engine::Dma,
            }
            .into(),
        );
        // Redistribution: sends on the net engine once the barrier passed; copies to itself
        // on the DMA engine.
        v.push(sem_signal(Engine::Dma, GO_NET, 1));
        v.extend(sem_wait(Engine::Net, GO_NET, 1));
        let mut sent = 0u64;
        for pc in pieces.get(&n).into_iter().flatten() {
            let field = |v: u64| {
                u32::try_from(v)
                    .ok()
                    .filter(|&x| u64::from(x) <= MAX_24)
                    .ok_or_else(|| no("a transfer field overflows"))
            };
            let (len32, from32, to32, stride32) = (
                field(pc.len)?,
                field(pc.from)?,
                field(pc.dst)?,
                field(pc.stride)?,
            );
            let rows16 = u16::try_from(pc.rows)
                .ok()
                .filter(|&r| u64::from(r) <= MAX_12)
                .ok_or_else(|| no("a transfer has too many rows"))?;
            if pc.to == n {
                let mut ins: Instruction = Op::Dma(Dma {
                    kind: DmaKind::Copy,
                    dst: pc.dst,
                    src: pc.from,
                    len: len32,
                    n1: rows16,
                    n2: 1,
                    src_stride1: stride32,
                    dst_stride1: stride32,
                    src_stride2: 0,
                    dst_stride2: 0,
                })
                .into();
                ins.signal = Some(ARRIVE);
                v.push(ins);
            } else {
                let mut ins: Instruction = Op::Send(Send {
                    dst: to32,
                    src: from32,
                    len: len32,
                    n1: rows16,
                    src_stride: stride32,
                    dst_stride: stride32,
                    dest: Dest::Node {
                        x: pc.to.0,
                        y: pc.to.1,
                    },
                    rsem: Some(ARRIVE),
                })
                .into();
                ins.signal = Some(SENT);
                v.push(ins);
                sent += 1;
            }
        }
        v.extend(sem_wait(
            Engine::Dma,
            ARRIVE,
            arrivals.get(&n).copied().unwrap_or(0),
        ));
        v.extend(sem_wait(Engine::Dma, SENT, sent));
        // B's engines start once the node's in-stage is complete.
        v.push(sem_signal(Engine::Dma, GO_MX, 1));
        v.push(sem_signal(Engine::Dma, GO_VX, 1));
        v.push(sem_signal(Engine::Dma, GO_NET, 1));
        v.extend(sem_wait(Engine::Mx, GO_MX, 1));
        v.extend(sem_wait(Engine::Vx, GO_VX, 1));
        v.extend(sem_wait(Engine::Net, GO_NET, 1));
        for ins in b_streams.get(&n).into_iter().flatten() {
            let mut ins = *ins;
            if let Op::Dma(d) = &mut ins.op {
                match d.kind {
                    DmaKind::Load if in_x(xb, d.src) => {
                        let (ilo, _) = in_range[&n];
                        d.kind = DmaKind::Copy;
                        d.src = in_base[&n] + (d.src - xb.addr - ilo);
                    }
                    DmaKind::Store => d.dst = relocate(b.program, d.dst)?,
                    DmaKind::Load => d.src = relocate(b.program, d.src)?,
                    DmaKind::Copy => {}
                }
            }
            v.push(ins);
        }
        v.push(Op::End.into());
        streams.push(Stream { node: n, instrs: v });
    }
    Ok(Program {
        buffers: merged,
        streams,
    })
}
