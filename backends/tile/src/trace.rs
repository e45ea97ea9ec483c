//! Chrome trace-event JSON (loadable in Perfetto and `chrome://tracing`).
//!
//! One process per node (`pid` = node index `y * width + x`, named `node (x,y)`), one thread
//! per engine (`tid` = engine index 0..4: dma, mx, vx, net); overlapping DMA transfers go to
//! extra threads `tid = 4 * lane + 0` named `dma.LANE`. Every instruction is a complete event
//! (`"ph": "X"`) from its start to its completion, timestamps in microseconds of the
//! configured clock, with its program counter in `args`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::isa::Engine;
use crate::report::Report;

fn tid(engine: Engine, lane: u32) -> u64 {
    4 * u64::from(lane) + engine.index() as u64
}

fn pid(r: &Report, node: (u8, u8)) -> u64 {
    u64::from(node.1) * u64::from(r.mesh.0) + u64::from(node.0)
}

/// The trace of a report as JSON text.
pub fn chrome_trace(r: &Report) -> String {
    let us_per_cycle = 1.0 / (r.clock_ghz * 1000.0);
    let mut s = String::from("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
    let mut first = true;
    let mut sep = |s: &mut String| {
        if !first {
            s.push_str(",\n");
        }
        first = false;
    };
    let mut threads: BTreeSet<((u8, u8), Engine, u32)> = BTreeSet::new();
    let mut procs: BTreeSet<(u8, u8)> = BTreeSet::new();
    for e in &r.engines {
        procs.insert(e.node);
        threads.insert((e.node, e.engine, 0));
    }
    for ev in &r.trace {
        procs.insert(ev.node);
        threads.insert((ev.node, ev.engine, ev.lane));
    }
    for &node in &procs {
        sep(&mut s);
        let _ = write!(
            s,
            "{{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":{},\"args\":{{\"name\":\"node ({},{})\"}}}}",
            pid(r, node),
            node.0,
            node.1
        );
        sep(&mut s);
        let _ = write!(
            s,
            "{{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":{},\"args\":{{\"sort_index\":{}}}}}",
            pid(r, node),
            pid(r, node)
        );
    }
    for &(node, engine, lane) in &threads {
        let name = if lane == 0 {
            engine.name().to_string()
        } else {
            format!("{}.{lane}", engine.name())
        };
        sep(&mut s);
        let _ = write!(
            s,
            "{{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":{},\"tid\":{},\"args\":{{\"name\":\"{name}\"}}}}",
            pid(r, node),
            tid(engine, lane)
        );
    }
    for ev in &r.trace {
        sep(&mut s);
        let ts = ev.start as f64 * us_per_cycle;
        let dur = ev.end.saturating_sub(ev.start) as f64 * us_per_cycle;
        let _ = write!(
            s,
            "{{\"name\":\"{}\",\"cat\":\"{}\",\"ph\":\"X\",\"pid\":{},\"tid\":{},\"ts\":{ts:.6},\"dur\":{dur:.6},\"args\":{{\"pc\":{},\"start_cycle\":{},\"end_cycle\":{}}}}}",
            ev.name,
            ev.engine.name(),
            pid(r, ev.node),
            tid(ev.engine, ev.lane),
            ev.pc,
            ev.start,
            ev.end
        );
    }
    s.push_str("\n]}\n");
    s
}
