//! `terafab bench --backend gpu`: models on the GPU, one row per kernel after a table of runs.
//!
//! Per model: load, random inputs, the pass pipeline and fusion, the PTX compiled and loaded
//! (timed), `--warmup` runs, then `--iters` runs timed end to end (uploads of the inputs and
//! read-back of the outputs included) and one run with every kernel timed (a synchronize
//! after each): its bytes moved per second against the device's peak memory bandwidth, and the
//! TFLOP/s of contractions. Without a GPU it says so.

use std::io::Write;
use std::time::Instant;

use crate::bench::BenchArgs;
use crate::bench_model::table;
use crate::compile::{load_with_random_inputs, lower};
use crate::error::CliError;

pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CliError::Stdout);
    let dev = terafab_gpu::open_device()?;
    let peak = dev.peak_bandwidth().map_err(terafab_gpu::GpuError::from)?;
    w(
        out,
        format!(
            "gpu: {} (compute capability {}.{}, peak memory bandwidth {:.0} GB/s)",
            dev.name,
            dev.capability.0,
            dev.capability.1,
            peak / 1e9
        ),
    )?;
    let pipeline = args.passes.as_deref().unwrap_or("default");
    for path in &args.models {
        let (module, inputs) = load_with_random_inputs(path, &args.shapes)?;
        let lowered = lower(path, module, pipeline, inputs)?;
        let p = &lowered.program;
        let t = Instant::now();
        let exe = terafab_gpu::compile(&dev, p)?;
        let compile_ms = t.elapsed().as_secs_f64() * 1e3;
        for _ in 0..args.warmup {
            exe.run(&lowered.inputs)?;
        }
        let mut times = Vec::new();
        for _ in 0..args.iters.max(1) {
            let t = Instant::now();
            exe.run(&lowered.inputs)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        w(
            out,
            format!(
                "{}: {} kernels, compile {compile_ms:.1} ms, run median {median:.3} ms \
                 (min {:.3}, {} runs)",
                path.display(),
                p.kernels.len(),
                times[0],
                times.len()
            ),
        )?;
        let (_, timed) = exe.run_timed(&lowered.inputs, true)?;
        let rows: Vec<Vec<String>> = terafab_gpu::bench::rates(p, &timed.kernels, peak)
            .into_iter()
            .map(|r| {
                vec![
                    r.name,
                    r.kind.to_string(),
                    format!("{:.1}", r.seconds * 1e6),
                    format!("{:.1}", r.bandwidth / 1e9),
                    format!("{:.0}%", r.bandwidth_fraction * 100.0),
                    format!("{:.2}", r.flops / 1e12),
                ]
            })
            .collect();
        out.write_all(
            table(
                &["kernel", "kind", "us", "GB/s", "of peak", "TFLOP/s"],
                &rows,
            )
            .as_bytes(),
        )
        .map_err(CliError::Stdout)?;
    }
    Ok(())
}
