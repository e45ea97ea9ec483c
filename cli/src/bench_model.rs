//! `terafab bench --backend B`: a model's compile time and run latency.
//!
//! Per model: load, make random inputs (seed 0) of the shapes `--dim`/`--input-shape` give, run
//! the pass pipeline and fuse (timed), compile (llvm: code generation, LLVM's O3 and machine
//! code; cranelift: Cranelift IR and its compilation, then loading; timed), then `--warmup` untimed runs and `--iters` timed ones on the same inputs. The
//! table gives the compile time and the median, min and max latency; `--json` adds one JSON
//! line per model (read by scripts/bench_ort.py).

use std::io::Write;
use std::time::{Duration, Instant};

use terafab_ir::Tensor;

use crate::Backend;
use crate::bench::{BenchArgs, median, ms, spread};
use crate::compile::{load_with_random_inputs, lower};
use crate::error::CliError;

/// One model's figures.
struct Timing {
    model: String,
    threads: usize,
    /// Passes + fusion + code generation.
    compile: Duration,
    /// The backend's part of `compile`: kernel IR to loaded machine code.
    backend: Duration,
    kernels: usize,
    times: Vec<Duration>,
}

fn time_runs(
    warmup: u32,
    iters: u32,
    mut run: impl FnMut() -> Result<Vec<Tensor>, CliError>,
) -> Result<Vec<Duration>, CliError> {
    for _ in 0..warmup {
        run()?;
    }
    let mut times = Vec::with_capacity(iters as usize);
    for _ in 0..iters {
        let t = Instant::now();
        let out = run()?;
        times.push(t.elapsed());
        drop(out);
    }
    Ok(times)
}

/// The compile stages' times (`stages`, one line), the kernels run by the library call, and
/// the mean time per run of each kernel, slowest first (`run_profiled` runs once, profiled).
fn profile(
    stages: String,
    calls: &[(String, String)],
    run_profiled: &dyn Fn() -> Result<Vec<terafab_runtime::PhaseTime>, CliError>,
    lowered: &crate::compile::Lowered,
    iters: u32,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let p = &lowered.program;
    let mut per_kernel = vec![Duration::ZERO; p.kernels.len()];
    // Each kernel's phases (pack, compute...) in order, with their total times.
    let mut per_phase: Vec<Vec<(String, Duration)>> = vec![Vec::new(); p.kernels.len()];
    for _ in 0..iters {
        for ph in run_profiled()? {
            per_kernel[ph.kernel] += ph.time;
            let name = ph.phase.trim_end_matches(".task");
            let name = name.rsplit('.').next().unwrap_or(name).to_string();
            let list = &mut per_phase[ph.kernel];
            match list.iter_mut().find(|(n, _)| *n == name) {
                Some(e) => e.1 += ph.time,
                None => list.push((name, ph.time)),
            }
        }
    }
    let total: Duration = per_kernel.iter().sum();
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(CliError::Stdout);
    w(out, stages)?;
    for (k, why) in calls {
        w(out, format!("  kernel @{k} runs in the interpreter: {why}"))?;
    }
    let mut order: Vec<usize> = (0..p.kernels.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(per_kernel[i]));
    w(out, format!("{:>10}  {:>6}  kernel", "ms/run", "share"))?;
    for i in order {
        let k = &p.kernels[i];
        let t = per_kernel[i].as_secs_f64() * 1e3 / iters as f64;
        let share = per_kernel[i].as_secs_f64() / total.as_secs_f64().max(1e-12) * 100.0;
        let outs: Vec<String> = k
            .outputs
            .iter()
            .map(|b| {
                let b = p.buffer(*b);
                format!("{}{:?}", b.dtype, b.shape)
            })
            .collect();
        let phases = if per_phase[i].len() > 1 {
            let parts: Vec<String> = per_phase[i]
                .iter()
                .map(|(n, d)| format!("{n} {:.3}", d.as_secs_f64() * 1e3 / iters as f64))
                .collect();
            format!(" [{}]", parts.join(" + "))
        } else {
            String::new()
        };
        w(
            out,
            format!(
                "{t:>10.3}  {share:>5.1}%  @{} {} -> {}{phases}  // {}",
                k.name,
                k.kind.name(),
                outs.join(", "),
                k.sources.join(", ")
            ),
        )?;
    }
    w(out, String::new())
}

/// A text table: the first column left-aligned, the others right-aligned, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i).map(String::len))
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<&str>| -> String {
        let parts: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let w = widths.get(i).copied().unwrap_or(0);
                if i == 0 {
                    format!("{s:<w$}")
                } else {
                    format!("{s:>w$}")
                }
            })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut text = line(header.to_vec());
    for r in rows {
        text.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    text
}

pub fn run(args: &BenchArgs, backend: Backend, out: &mut dyn Write) -> Result<(), CliError> {
    if backend == Backend::Tile {
        return crate::bench_tile::run(args, out);
    }
    if backend == Backend::Auto {
        return bench_auto(args, out);
    }
    let pipeline = args.passes.as_deref().unwrap_or("default");
    terafab_passes::parse_pipeline(pipeline).map_err(crate::opt::pipeline_error(pipeline))?;
    let opts = terafab_llvm::Options {
        threads: args.threads,
        ..Default::default()
    };
    let threads = match backend {
        Backend::Llvm | Backend::Cranelift => opts.threads(),
        _ => 1,
    };
    let mut rows = Vec::new();
    for path in &args.models {
        let (module, inputs) = load_with_random_inputs(path, &args.shapes)?;
        let model = path.display().to_string();
        let timing = match backend {
            Backend::Tile => return crate::bench_tile::run(args, out),
            Backend::Auto => return bench_auto(args, out),
            Backend::Gpu => return crate::bench_gpu::run(args, out),
            Backend::Interp => {
                let f = module
                    .entry()
                    .ok_or_else(|| CliError::NoFunction { path: path.clone() })?;
                let times = time_runs(args.warmup, args.iters, || {
                    terafab_ir::interp::run_function(f, &inputs).map_err(|source| {
                        CliError::Interp {
                            func: f.name.clone(),
                            source: Box::new(source),
                        }
                    })
                })?;
                Timing {
                    model,
                    threads,
                    compile: Duration::ZERO,
                    backend: Duration::ZERO,
                    kernels: 0,
                    times,
                }
            }
            Backend::Kernels => {
                let lowered = lower(path, module, pipeline, inputs)?;
                let p = &lowered.program;
                let times = time_runs(args.warmup, args.iters, || {
                    terafab_ir::kernel::interp::run_program(p, &lowered.inputs).map_err(|source| {
                        CliError::Interp {
                            func: p.name.clone(),
                            source: Box::new(source),
                        }
                    })
                })?;
                Timing {
                    model,
                    threads,
                    compile: lowered.passes_time + lowered.fuse_time,
                    backend: Duration::ZERO,
                    kernels: p.kernels.len(),
                    times,
                }
            }
            Backend::Cranelift => {
                let lowered = lower(path, module, pipeline, inputs)?;
                let copts = terafab_cranelift::Options {
                    threads: args.threads,
                };
                let t = Instant::now();
                let exe = terafab_cranelift::compile(&lowered.program, &copts)?;
                let codegen = t.elapsed();
                let times = time_runs(args.warmup, args.iters, || {
                    exe.run(&lowered.inputs).map_err(CliError::from)
                })?;
                if args.profile {
                    let s = exe.stats();
                    let stages = format!(
                        "{model}: compile: passes {:.1} ms, fusion {:.1} ms, Cranelift codegen {:.1} ms, machine code {:.1} ms; arena {} KiB",
                        lowered.passes_time.as_secs_f64() * 1e3,
                        lowered.fuse_time.as_secs_f64() * 1e3,
                        s.codegen.as_secs_f64() * 1e3,
                        s.finalize.as_secs_f64() * 1e3,
                        s.arena_bytes / 1024,
                    );
                    let run = || Ok(exe.run_profiled(&lowered.inputs)?.1);
                    profile(stages, &s.calls, &run, &lowered, args.iters, out)?;
                }
                Timing {
                    model,
                    threads,
                    compile: lowered.passes_time + lowered.fuse_time + codegen,
                    backend: codegen,
                    kernels: lowered.program.kernels.len(),
                    times,
                }
            }
            Backend::Llvm => {
                let lowered = lower(path, module, pipeline, inputs)?;
                let t = Instant::now();
                let exe = terafab_llvm::compile(&lowered.program, &opts)?;
                let codegen = t.elapsed();
                let times = time_runs(args.warmup, args.iters, || {
                    exe.run(&lowered.inputs).map_err(CliError::from)
                })?;
                if args.profile {
                    let s = exe.stats();
                    let stages = format!(
                        "{model}: compile: passes {:.1} ms, fusion {:.1} ms, codegen {:.1} ms, LLVM O3 {:.1} ms, machine code + packing {:.1} ms; arena {} KiB, packed weights {} KiB, GEMM scratch {} KiB",
                        lowered.passes_time.as_secs_f64() * 1e3,
                        lowered.fuse_time.as_secs_f64() * 1e3,
                        s.codegen.as_secs_f64() * 1e3,
                        s.optimize.as_secs_f64() * 1e3,
                        s.finalize.as_secs_f64() * 1e3,
                        s.arena_bytes / 1024,
                        s.packed_bytes / 1024,
                        s.scratch_bytes / 1024
                    );
                    let run = || Ok(exe.run_profiled(&lowered.inputs)?.1);
                    profile(stages, &s.calls, &run, &lowered, args.iters, out)?;
                }
                Timing {
                    model,
                    threads,
                    compile: lowered.passes_time + lowered.fuse_time + codegen,
                    backend: codegen,
                    kernels: lowered.program.kernels.len(),
                    times,
                }
            }
        };
        rows.push(timing);
    }
    let backend_name = match backend {
        Backend::Interp => "interp",
        Backend::Kernels => "kernels",
        Backend::Llvm => "llvm",
        Backend::Cranelift => "cranelift",
        Backend::Tile => "tile",
        Backend::Auto => "auto",
        Backend::Gpu => "gpu",
    };
    writeln!(
        out,
        "backend {backend_name}, {} thread(s), passes `{pipeline}`; {} timed runs after {} warm-up; times in ms\n",
        threads, args.iters, args.warmup
    )
    .map_err(CliError::Stdout)?;
    let header = [
        "model",
        "kernels",
        "compile ms",
        "median ms",
        "min ms",
        "max ms",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let (lo, hi) = spread(&r.times).unzip();
            [
                r.model.clone(),
                r.kernels.to_string(),
                ms(Some(r.compile)),
                ms(median(&r.times)),
                ms(lo),
                ms(hi),
            ]
        })
        .collect();
    let cells: Vec<Vec<String>> = cells.into_iter().map(Vec::from).collect();
    let text = table(&header, &cells);
    out.write_all(text.as_bytes()).map_err(CliError::Stdout)?;
    if args.json {
        for r in &rows {
            let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
            writeln!(
                out,
                "{{\"model\": {:?}, \"backend\": \"{backend_name}\", \"threads\": {}, \"compile_ms\": {:.3}, \"backend_ms\": {:.3}, \"median_ms\": {:.4}, \"min_ms\": {:.4}, \"max_ms\": {:.4}, \"iters\": {}, \"kernels\": {}}}",
                r.model,
                r.threads,
                secs(Some(r.compile)),
                secs(Some(r.backend)),
                secs(median(&r.times)),
                secs(r.times.iter().min().copied()),
                secs(r.times.iter().max().copied()),
                r.times.len(),
                r.kernels
            )
            .map_err(CliError::Stdout)?;
        }
    }
    Ok(())
}

/// One model's figures under tiered compilation.
struct AutoTiming {
    model: String,
    kernels: usize,
    /// Passes and fusion, before either compiler starts.
    lower: Duration,
    /// Since the compilers started: the Cranelift code ready, the first result, the LLVM code
    /// ready (or failed).
    cranelift_ready: Duration,
    first_result: Duration,
    llvm_ready: Option<Duration>,
    llvm_error: Option<String>,
    /// The time of every run after the first, by tier.
    cranelift: Vec<Duration>,
    llvm: Vec<Duration>,
}

/// `terafab bench --backend auto`: per model, compile tiered (Cranelift at once, LLVM in the
/// background), time the first result, then run back to back while LLVM compiles (these runs
/// are Cranelift's) and `--iters` more once the LLVM code is ready (or, if LLVM fails, once it
/// has failed). `--warmup` does not apply: the point is what happens from the start.
fn bench_auto(args: &BenchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    use terafab_tiered::{LlvmStatus, Tier, Tiered};
    if args.profile {
        return Err(CliError::Usage(
            "--profile: profile each tier with --backend cranelift or --backend llvm".into(),
        ));
    }
    let pipeline = args.passes.as_deref().unwrap_or("default");
    terafab_passes::parse_pipeline(pipeline).map_err(crate::opt::pipeline_error(pipeline))?;
    let opts = terafab_tiered::Options {
        threads: args.threads,
        ..Default::default()
    };
    let threads = terafab_runtime::resolve_threads(args.threads);
    let mut rows = Vec::new();
    for path in &args.models {
        let (module, inputs) = load_with_random_inputs(path, &args.shapes)?;
        let lowered = lower(path, module, pipeline, inputs)?;
        let t0 = Instant::now();
        let exe = Tiered::compile(&lowered.program, &opts)?;
        let cranelift_ready = t0.elapsed();
        drop(exe.run(&lowered.inputs)?);
        let first_result = t0.elapsed();
        let (mut cranelift, mut llvm) = (Vec::new(), Vec::new());
        let mut after_llvm = 0;
        loop {
            if !matches!(exe.llvm_status(), LlvmStatus::Compiling) {
                if after_llvm >= args.iters {
                    break;
                }
                after_llvm += 1;
            }
            let t = Instant::now();
            let o = exe.run(&lowered.inputs)?;
            let dt = t.elapsed();
            match o.tier {
                Tier::Cranelift => cranelift.push(dt),
                Tier::Llvm => llvm.push(dt),
            }
        }
        let (llvm_ready, llvm_error) = match exe.wait_for_llvm() {
            LlvmStatus::Ready { after } => (Some(after), None),
            LlvmStatus::Failed { error, after } => {
                (Some(after), Some(terafab_tiered::error_chain(error)))
            }
            LlvmStatus::Compiling => (None, None),
        };
        rows.push(AutoTiming {
            model: path.display().to_string(),
            kernels: lowered.program.kernels.len(),
            lower: lowered.passes_time + lowered.fuse_time,
            cranelift_ready,
            first_result,
            llvm_ready,
            llvm_error,
            cranelift,
            llvm,
        });
    }
    writeln!(
        out,
        "backend auto (Cranelift first, LLVM in the background), {threads} thread(s), passes `{pipeline}`; \
         times in ms from the start of compilation (after passes and fusion); runs back to back \
         while LLVM compiles, then {} on LLVM's code\n",
        args.iters
    )
    .map_err(CliError::Stdout)?;
    let header = [
        "model",
        "kernels",
        "passes+fusion",
        "cranelift ready",
        "first result",
        "llvm ready",
        "cranelift runs",
        "cranelift median",
        "llvm runs",
        "llvm median",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.kernels.to_string(),
                ms(Some(r.lower)),
                ms(Some(r.cranelift_ready)),
                ms(Some(r.first_result)),
                match &r.llvm_error {
                    Some(_) => "failed".into(),
                    None => ms(r.llvm_ready),
                },
                r.cranelift.len().to_string(),
                ms(median(&r.cranelift)),
                r.llvm.len().to_string(),
                ms(median(&r.llvm)),
            ]
        })
        .collect();
    out.write_all(table(&header, &cells).as_bytes())
        .map_err(CliError::Stdout)?;
    for r in &rows {
        if let Some(e) = &r.llvm_error {
            writeln!(out, "{}: LLVM failed in the background: {e}", r.model)
                .map_err(CliError::Stdout)?;
        }
    }
    if args.json {
        let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        for r in &rows {
            writeln!(
                out,
                "{{\"model\": {:?}, \"backend\": \"auto\", \"threads\": {threads}, \"kernels\": {}, \"lower_ms\": {:.3}, \"cranelift_ready_ms\": {:.3}, \"first_result_ms\": {:.3}, \"llvm_ready_ms\": {:.3}, \"llvm_error\": {:?}, \"cranelift_runs\": {}, \"cranelift_median_ms\": {:.4}, \"llvm_runs\": {}, \"llvm_median_ms\": {:.4}}}",
                r.model,
                r.kernels,
                secs(Some(r.lower)),
                secs(Some(r.cranelift_ready)),
                secs(Some(r.first_result)),
                secs(r.llvm_ready),
                r.llvm_error.as_deref().unwrap_or(""),
                r.cranelift.len(),
                secs(median(&r.cranelift)),
                r.llvm.len(),
                secs(median(&r.llvm)),
            )
            .map_err(CliError::Stdout)?;
        }
    }
    Ok(())
}
