//! `terafab bench`: time a pass pipeline on models, several runs each, and print one table.
//!
//! Each model is loaded once (the load is timed on its own, never part of the pipeline's
//! figures), then the pipeline runs `--repeat` times, each time on a fresh copy of the loaded
//! module (a clone: tensors are shared, so copying costs no weight data). For every pass of the
//! pipeline the table gives the median, min and max wall time over the runs and the node count
//! after it; a `(verifier)` row sums the verifier runs after each pass, and a `total` row times
//! the whole pipeline (the verifier included). The `(load)` row holds the node count before the
//! pipeline and the `total` row the count after it.
//!
//! The last column holds the first line of each pass's report, for passes that report (`eqsat`:
//! iterations, e-graph size, why it stopped; see `terafab_passes::Pass::run_reported`), from the
//! last run. The table is built from [`COLUMNS`], one entry per column, each reading a [`Row`]:
//! a new figure (say, the kernel count before and after a fusion pass) is one field of [`Row`]
//! filled in [`pass_rows`] and one entry of [`COLUMNS`].

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use terafab_ir::Module;
use terafab_passes::PassTiming;

use crate::ShapeArgs;
use crate::error::CliError;
use crate::opt::pipeline_error;

pub const BENCH_EXAMPLES: &str = "\
EXAMPLES:
  # The default pipeline on a model, 5 runs (the median, min and max of each pass)
  terafab bench examples/mlp.tfir --passes default

  # Several models in one table, 10 runs each; --dim binds the symbolic dims of every model
  terafab bench testsuite/models/*.onnx resnet50.onnx --passes default,eqsat,default \\
      --repeat 10 --dim N=1

  # The whole benchmark: five models, both pipelines, a release build
  scripts/bench-passes.sh

  # Compile time and run latency on the LLVM backend, 1 thread, 50 timed runs
  terafab bench model.onnx --backend llvm --threads 1 --iters 50

  # The same on the Cranelift backend (compile time against LLVM's, and run latency)
  terafab bench model.onnx --backend cranelift --threads 1 --iters 50

  # Tiered (--backend auto): the first result on Cranelift's code, runs while LLVM compiles in
  # the background, then 50 runs on LLVM's code; scripts/bench-compile.sh compares the two
  # backends' compile and run times on five networks
  terafab bench model.onnx --backend auto --threads 1 --iters 50

  # terafab against onnxruntime on five networks, 1 and 2 threads
  scripts/bench-ort.sh

  # Simulated performance on the tile accelerator (4x4 mesh, bf16 contractions): cycles,
  # engine utilization, roofline fraction, HBM traffic, host compile and simulation time
  terafab bench testsuite/models/*.onnx --backend tile --config 4x4";

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The model files (.onnx or .tfir)
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub shapes: ShapeArgs,
    /// Comma-separated passes and named pipelines, run in order (e.g. `default,eqsat,default`);
    /// with --backend, the passes run before fusion (default: `default`)
    #[arg(long, value_name = "P,P,..", required_unless_present = "backend")]
    pub passes: Option<String>,
    /// Time running the models on this backend instead of the pipeline: compile time (passes,
    /// fusion, code generation), then the median, min and max latency of --iters runs
    #[arg(long, value_enum)]
    pub backend: Option<crate::Backend>,
    /// Worker threads of the llvm and cranelift backends (0: one per core)
    #[arg(long, value_name = "N", default_value_t = 0, requires = "backend")]
    pub threads: usize,
    /// Timed runs per model (after --warmup untimed ones)
    #[arg(long, value_name = "K", default_value_t = 20, requires = "backend",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub iters: u32,
    /// Untimed runs before the timed ones
    #[arg(long, value_name = "N", default_value_t = 2, requires = "backend")]
    pub warmup: u32,
    /// Also print one JSON object per model (the last line is the last model's)
    #[arg(long, requires = "backend")]
    pub json: bool,
    /// With --backend llvm or cranelift: the compile time by stage and a per-kernel profile (mean time per
    /// run of each kernel, from --iters extra runs, slowest first)
    #[arg(long, requires = "backend")]
    pub profile: bool,
    #[command(flatten)]
    pub tile: crate::TileArgs,
    /// Runs of the pipeline per model, each on a fresh copy of the loaded model
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub repeat: u32,
}

/// One line of the table: a pass of the pipeline on a model, or the model's load, verifier or
/// total. Times are in the order of the runs; a figure that does not apply is `None`.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// The model as given on the command line (first row of a model only).
    pub model: String,
    /// The pass name, or `(load)`, `(verifier)`, `total`.
    pub label: String,
    /// One wall time per run (a single one for the load).
    pub times: Vec<Duration>,
    /// The node count after this step (before the pipeline for the load); a range when the
    /// runs disagree.
    pub nodes: Option<(usize, usize)>,
    /// How many of the runs the pass changed the module in.
    pub changed: Option<(usize, usize)>,
    /// The first line of the pass's report on each function, from the last run.
    pub report: String,
}

/// A column: its header, whether it is right-aligned, and its cell for a row.
pub struct Column {
    pub header: &'static str,
    pub right: bool,
    pub cell: fn(&Row) -> String,
}

/// The table's columns, left to right.
pub const COLUMNS: &[Column] = &[
    Column {
        header: "model",
        right: false,
        cell: |r| r.model.clone(),
    },
    Column {
        header: "pass",
        right: false,
        cell: |r| r.label.clone(),
    },
    Column {
        header: "median ms",
        right: true,
        cell: |r| ms(median(&r.times)),
    },
    Column {
        header: "min ms",
        right: true,
        cell: |r| ms(spread(&r.times).map(|(lo, _)| lo)),
    },
    Column {
        header: "max ms",
        right: true,
        cell: |r| ms(spread(&r.times).map(|(_, hi)| hi)),
    },
    Column {
        header: "nodes",
        right: true,
        cell: |r| match r.nodes {
            Some((lo, hi)) if lo == hi => lo.to_string(),
            Some((lo, hi)) => format!("{lo}..{hi}"),
            None => String::new(),
        },
    },
    Column {
        header: "changed",
        right: false,
        cell: |r| match r.changed {
            Some((0, _)) => "no".to_string(),
            Some((n, runs)) if n == runs => "yes".to_string(),
            Some((n, runs)) => format!("{n}/{runs} runs"),
            None => String::new(),
        },
    },
    Column {
        header: "report",
        right: false,
        cell: |r| r.report.clone(),
    },
];

/// The median of `times` (the mean of the middle two for an even count).
pub fn median(times: &[Duration]) -> Option<Duration> {
    let mut t = times.to_vec();
    t.sort_unstable();
    let n = t.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(t[n / 2]),
        _ => Some((t[n / 2 - 1] + t[n / 2]) / 2),
    }
}

/// The min and max of `times`, when there is more than one.
pub fn spread(times: &[Duration]) -> Option<(Duration, Duration)> {
    if times.len() < 2 {
        return None;
    }
    Some((*times.iter().min()?, *times.iter().max()?))
}

pub fn ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.3}", d.as_secs_f64() * 1e3))
        .unwrap_or_default()
}

fn num_nodes(m: &Module) -> usize {
    m.functions.iter().map(|f| f.num_nodes()).sum()
}

/// The smallest and largest of `values` (`None` when empty).
fn range(values: impl Iterator<Item = usize>) -> Option<(usize, usize)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The first line of each report, joined by `; `.
fn first_lines(reports: &[String]) -> String {
    reports
        .iter()
        .filter_map(|r| r.lines().next())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The pipeline's runs on one model: each run's pass timings and wall time.
struct Runs {
    timings: Vec<Vec<PassTiming>>,
    totals: Vec<Duration>,
}

/// Run `pipeline` `repeat` times, each on a fresh copy of `module`.
fn run_repeatedly(module: &Module, pipeline: &str, repeat: u32) -> Result<Runs, CliError> {
    let mut runs = Runs {
        timings: Vec::new(),
        totals: Vec::new(),
    };
    for _ in 0..repeat {
        let mut copy = module.clone();
        let start = Instant::now();
        let timings = terafab_passes::run_pipeline(&mut copy, pipeline, Default::default())
            .map_err(pipeline_error(pipeline))?;
        runs.totals.push(start.elapsed());
        runs.timings.push(timings);
        // The copy is dropped outside the timed span.
    }
    Ok(runs)
}

/// The rows of one model: its load, one per pass run, the verifier and the total.
fn pass_rows(model: &str, load: Duration, nodes_before: usize, runs: &Runs) -> Vec<Row> {
    let mut rows = vec![Row {
        model: model.to_string(),
        label: "(load)".to_string(),
        times: vec![load],
        nodes: Some((nodes_before, nodes_before)),
        ..Row::default()
    }];
    // Every run runs the same passes in the same order.
    let first = runs.timings.first().map(Vec::as_slice).unwrap_or_default();
    for (i, pass) in first.iter().enumerate() {
        let at = || runs.timings.iter().filter_map(move |t| t.get(i));
        rows.push(Row {
            label: pass.name.to_string(),
            times: at().map(|t| t.time).collect(),
            nodes: range(at().map(|t| t.nodes)),
            changed: Some((at().filter(|t| t.changed).count(), runs.timings.len())),
            report: runs
                .timings
                .last()
                .and_then(|t| t.get(i))
                .map(|t| first_lines(&t.reports))
                .unwrap_or_default(),
            ..Row::default()
        });
    }
    rows.push(Row {
        label: "(verifier)".to_string(),
        times: runs
            .timings
            .iter()
            .map(|t| t.iter().map(|p| p.verify_time).sum())
            .collect(),
        ..Row::default()
    });
    rows.push(Row {
        label: "total".to_string(),
        times: runs.totals.clone(),
        nodes: range(
            runs.timings
                .iter()
                .map(|t| t.last().map_or(nodes_before, |p| p.nodes)),
        ),
        ..Row::default()
    });
    rows
}

/// The table: a header line, then one line per row, columns padded to their widest cell.
pub fn format_table(rows: &[Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| COLUMNS.iter().map(|c| (c.cell)(r)).collect())
        .collect();
    let widths: Vec<usize> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([c.header.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| -> String {
        let parts: Vec<String> = cells
            .zip(COLUMNS.iter().zip(&widths))
            .map(|(s, (c, &w))| {
                if c.right {
                    format!("{s:>w$}")
                } else {
                    format!("{s:<w$}")
                }
            })
            .collect();
        format!("{}\n", parts.join("  ").trim_end())
    };
    let mut out = line(&mut COLUMNS.iter().map(|c| c.header));
    for row in &cells {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

pub fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<(), CliError> {
    if let Some(backend) = args.backend {
        return crate::bench_model::run(args, backend, out);
    }
    let pipeline = args.passes.as_deref().unwrap_or("default");
    // Fail on a bad pipeline before loading possibly large models.
    let passes = terafab_passes::parse_pipeline(pipeline).map_err(pipeline_error(pipeline))?;
    let names: Vec<&str> = passes.iter().map(|p| p.name).collect();
    let mut rows = Vec::new();
    for path in &args.models {
        let start = Instant::now();
        let module = terafab_frontend::load_model_with(path, &args.shapes.load_options(&[]))?;
        let load = start.elapsed();
        let runs = run_repeatedly(&module, pipeline, args.repeat)?;
        let model = path.display().to_string();
        rows.extend(pass_rows(&model, load, num_nodes(&module), &runs));
    }
    let runs = if args.repeat == 1 { "run" } else { "runs" };
    writeln!(
        out,
        "pipeline `{}` = {}; {} {runs} per model, each on a fresh copy; wall times in ms\n",
        pipeline,
        names.join(","),
        args.repeat
    )
    .map_err(CliError::Stdout)?;
    out.write_all(format_table(&rows).as_bytes())
        .map_err(CliError::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[millis(3), millis(1), millis(2)]), Some(millis(2)));
        assert_eq!(
            median(&[millis(4), millis(1), millis(2), millis(3)]),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(spread(&[millis(5)]), None);
        assert_eq!(
            spread(&[millis(5), millis(1), millis(3)]),
            Some((millis(1), millis(5)))
        );
    }

    #[test]
    fn table_aligns_columns_and_ranges() {
        let rows = [
            Row {
                model: "m.tfir".into(),
                label: "(load)".into(),
                times: vec![millis(2)],
                nodes: Some((10, 10)),
                ..Row::default()
            },
            Row {
                label: "eqsat".into(),
                times: vec![millis(30), millis(10), millis(20)],
                nodes: Some((7, 8)),
                changed: Some((2, 3)),
                report: first_lines(&["@main: eqsat: 2 iterations\n  rule: 1".into()]),
                ..Row::default()
            },
            Row {
                label: "dce".into(),
                times: vec![millis(1), millis(1), millis(1)],
                nodes: Some((7, 7)),
                changed: Some((0, 3)),
                ..Row::default()
            },
        ];
        assert_eq!(
            format_table(&rows),
            "\
model   pass    median ms  min ms  max ms  nodes  changed   report
m.tfir  (load)      2.000                     10
        eqsat      20.000  10.000  30.000   7..8  2/3 runs  @main: eqsat: 2 iterations
        dce         1.000   1.000   1.000      7  no
"
        );
    }
}
