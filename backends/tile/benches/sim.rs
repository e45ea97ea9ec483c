//! Host throughput of the functional simulator: simulated MACs per second.
//!
//! `cargo bench -p terafab-tile --bench sim` builds a program of 256×256×256 bf16 matmul
//! tiles (each `mm` 16.7 M MACs) on every node of a 2x2 mesh, runs it functionally and
//! prints the simulated MACs, the host time and MAC/s; then the same in `timing_only` mode.

use std::fmt::Write as _;
use std::time::Instant;

use terafab_tile::{Config, Program, Simulator};

const M: u32 = 256;
const REPS: u32 = 8;

fn program() -> String {
    let a = 0u32;
    let b = a + M * M * 2;
    let c = b + M * M * 2;
    let mut s = String::new();
    let _ = writeln!(s, ".nodes 0..2, 0..2");
    for i in 0..REPS {
        let _ = writeln!(
            s,
            "  mm dst={c:#x}, a={a:#x}, b={b:#x}, m={M}, n={M}, k={M}, atype=bf16, btype=bf16, acc={}{}",
            u32::from(i > 0),
            if i + 1 == REPS { " signal=0" } else { "" }
        );
    }
    // A vector pass over the accumulator too.
    let _ = writeln!(
        s,
        "  vexp dst={c:#x}, src={c:#x}, rows={M}, cols={M}, itype=f32, otype=f32 wait=0"
    );
    s.push_str("  end\n");
    s
}

fn run(timing_only: bool) -> Result<(), Box<dyn std::error::Error>> {
    let mut cfg = Config::preset("2x2")?;
    cfg.timing_only = timing_only;
    cfg.trace = false;
    let prog = Program::parse(&program())?;
    let mut sim = Simulator::new(cfg, prog)?;
    let t = Instant::now();
    let report = sim.run()?;
    let secs = t.elapsed().as_secs_f64();
    let macs = report.macs + report.macs_f32;
    println!(
        "{:<12} {macs} simulated MACs ({} cycles) in {secs:.3} s host: {:.3e} MAC/s",
        if timing_only {
            "timing-only"
        } else {
            "functional"
        },
        report.cycles,
        macs as f64 / secs
    );
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    run(false)?;
    run(true)?;
    Ok(())
}
