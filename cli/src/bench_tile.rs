//! `terafab bench --backend tile`: the simulated performance of models on the tile
//! accelerator, one row per model.
//!
//! Per model: load, random inputs (seed 0) of the shapes `--dim`/`--input-shape` give, the
//! pass pipeline with the precision pass (`--precision`, bf16 by default) and fusion (timed),
//! the tile compilation (contraction split, constant packs, every kernel lowered; timed), then
//! one functional simulation (timed on the host; the simulator is deterministic, so
//! `--iters`/`--warmup` do not apply). The table gives the simulated cycles and time at the
//! machine's clock, the matrix and vector engines' utilization (busy cycles over cycles ×
//! nodes), the fraction of the kernels' roofline bounds achieved, the HBM traffic, and the
//! host's compile and simulate times; `--json` adds one JSON line per model.

use std::io::Write;
use std::time::Instant;

use crate::Backend;
use crate::bench::BenchArgs;
use crate::bench_model::table;
use crate::compile::{load_with_random_inputs, lower};
use crate::error::CliError;

/// One model's figures.
struct Row {
    model: String,
    accelerator: usize,
    host: usize,
    compile_ms: f64,
    simulate_s: f64,
    totals: terafab_tile::backend::Totals,
}

pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let passes = args.passes.as_deref().unwrap_or("default");
    let pipeline = args.tile.pipeline(passes, Backend::Tile)?;
    terafab_passes::parse_pipeline(&pipeline).map_err(crate::opt::pipeline_error(&pipeline))?;
    let cfg = args.tile.machine(false)?;
    let mut rows = Vec::new();
    for path in &args.models {
        let (module, inputs) = load_with_random_inputs(path, &args.shapes)?;
        let lowered = lower(path, module, &pipeline, inputs)?;
        let t = Instant::now();
        let compiled =
            terafab_tile::compile::compile_program(&cfg, &lowered.program, &Default::default());
        let compile = lowered.passes_time + lowered.fuse_time + t.elapsed();
        let mut report = terafab_tile::backend::ModelReport::new(&cfg);
        let t = Instant::now();
        terafab_tile::backend::run_compiled(&cfg, &compiled, &lowered.inputs, &mut report)?;
        let simulate = t.elapsed();
        rows.push(Row {
            model: path.display().to_string(),
            accelerator: compiled.lowered_count(),
            host: compiled.kernels.len() - compiled.lowered_count(),
            compile_ms: compile.as_secs_f64() * 1e3,
            simulate_s: simulate.as_secs_f64(),
            totals: report.totals(),
        });
    }
    writeln!(
        out,
        "backend tile, a {}x{} mesh at {:.2} GHz, passes `{pipeline}`; one simulation per model\n",
        cfg.mesh_width, cfg.mesh_height, cfg.clock_ghz
    )
    .map_err(CliError::Stdout)?;
    let header = [
        "model",
        "kernels acc/host",
        "cycles",
        "time us",
        "mx %",
        "vx %",
        "roofline %",
        "HBM MB",
        "GMAC",
        "compile ms",
        "simulate s",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let t = &r.totals;
            vec![
                r.model.clone(),
                format!("{}/{}", r.accelerator, r.host),
                t.cycles.to_string(),
                format!("{:.1}", t.seconds * 1e6),
                format!("{:.1}", 100.0 * t.mx_util),
                format!("{:.1}", 100.0 * t.vx_util),
                format!("{:.1}", 100.0 * t.achieved),
                format!("{:.2}", (t.hbm_read_bytes + t.hbm_write_bytes) as f64 / 1e6),
                format!("{:.3}", t.macs as f64 / 1e9),
                format!("{:.1}", r.compile_ms),
                format!("{:.2}", r.simulate_s),
            ]
        })
        .collect();
    out.write_all(table(&header, &cells).as_bytes())
        .map_err(CliError::Stdout)?;
    if args.json {
        for r in &rows {
            let t = &r.totals;
            writeln!(
                out,
                "{{\"model\": {:?}, \"backend\": \"tile\", \"mesh\": \"{}x{}\", \"clock_ghz\": {}, \"cycles\": {}, \"seconds\": {:e}, \"mx_util\": {:.4}, \"vx_util\": {:.4}, \"roofline_achieved\": {:.4}, \"hbm_read_bytes\": {}, \"hbm_write_bytes\": {}, \"macs\": {}, \"kernels_accelerator\": {}, \"kernels_host\": {}, \"compile_ms\": {:.3}, \"simulate_s\": {:.3}}}",
                r.model,
                cfg.mesh_width,
                cfg.mesh_height,
                cfg.clock_ghz,
                t.cycles,
                t.seconds,
                t.mx_util,
                t.vx_util,
                t.achieved,
                t.hbm_read_bytes,
                t.hbm_write_bytes,
                t.macs,
                r.accelerator,
                r.host,
                r.compile_ms,
                r.simulate_s
            )
            .map_err(CliError::Stdout)?;
        }
    }
    Ok(())
}
