//! `terafab conformance`: run the ONNX backend test cases on a backend, print totals per set,
//! write the per-case report, and compare with the backend's expectations list. With
//! `--passes PIPELINE` the pipeline runs on every model before the backend
//! (`terafab_testsuite::Optimized`); the expectations list stays the backend's own, since
//! passes must not change which cases pass.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use terafab_testsuite::{
    Cranelift, DEFAULT_SETS, Interpreter, Kernels, Llvm, Optimized, Summary, Tile,
    compare_expectations, default_cases_dir, discover, read_expectations, report, run_all,
    write_expectations,
};

use crate::Backend;
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct ConformanceArgs {
    /// The backend to run the cases on.
    #[arg(long, value_enum, default_value_t = Backend::Interp)]
    backend: Backend,
    /// Run this comma-separated pass pipeline (e.g. `dce`) on every model before the backend.
    #[arg(long, value_name = "PIPELINE")]
    passes: Option<String>,
    /// Only cases whose `set/name` matches this regex.
    #[arg(long, value_name = "REGEX")]
    filter: Option<String>,
    /// Comma-separated case sets.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_SETS.iter().map(|s| s.to_string()))]
    sets: Vec<String>,
    /// Where the cases are (default: where scripts/onnx-testdata.sh writes them).
    #[arg(long, value_name = "DIR")]
    cases: Option<PathBuf>,
    /// Write the per-case report (one line per case with the reason) here.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// The expectations list to check (default: testsuite/expectations/BACKEND.txt).
    #[arg(long, value_name = "FILE")]
    expectations: Option<PathBuf>,
    /// Rewrite the expectations list with the cases that pass in this run.
    #[arg(long)]
    update_expectations: bool,
    /// The tile backend's machine: a preset (`1x1`, `2x2`, `4x4`, `d1`) or a config file.
    #[arg(long, value_name = "PRESET|FILE", default_value = "1x1")]
    config: String,
    /// With --backend tile: the contractions' operand type. bf16 (the backend's default mode
    /// for models) is compared with a bf16 tolerance (rtol and atol 2^-6) and has its own
    /// expectations list (`tile-bf16.txt`); default f32
    #[arg(long, value_enum)]
    precision: Option<crate::Precision>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: &ConformanceArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let err = |m: String| CliError::Conformance(m);
    let filter = args
        .filter
        .as_deref()
        .map(regex::Regex::new)
        .transpose()
        .map_err(|e| err(format!("--filter: {e}")))?;
    let root = args.cases.clone().unwrap_or_else(default_cases_dir);
    let sets: Vec<&str> = args.sets.iter().map(String::as_str).collect();
    if args.update_expectations
        && (args.filter.is_some()
            || sets != DEFAULT_SETS
            || args.passes.is_some()
            || args.backend == Backend::Kernels)
    {
        return Err(err(
            "--update-expectations needs a full run of the interpreter or a compiled backend (no --filter, default --sets, no --passes)".into(),
        ));
    }
    // The compiled backends run the default pipeline first, as `terafab run` does, one worker
    // thread per case (the cases run in parallel).
    let llvm = || {
        Optimized::new(
            args.passes.as_deref().unwrap_or("default"),
            Llvm::single_threaded(),
        )
        .map_err(|e| err(format!("--passes: {e}")))
    };
    let bf16 = match (args.precision, args.backend) {
        (None | Some(crate::Precision::F32), _) => false,
        (Some(crate::Precision::Bf16), Backend::Tile) => true,
        (Some(_), Backend::Tile) => {
            return Err(CliError::Usage(
                "conformance on the tile backend: --precision f32 or bf16".into(),
            ));
        }
        (Some(_), _) => {
            return Err(CliError::Usage(
                "--precision applies to --backend tile only".into(),
            ));
        }
    };
    let backend: Box<dyn terafab_testsuite::Backend> = match (args.backend, &args.passes) {
        (Backend::Interp, None) => Box::new(Interpreter),
        (Backend::Kernels, None) => Box::new(Kernels),
        (Backend::Interp, Some(p)) => {
            Box::new(Optimized::new(p, Interpreter).map_err(|e| err(format!("--passes: {e}")))?)
        }
        (Backend::Kernels, Some(p)) => {
            Box::new(Optimized::new(p, Kernels).map_err(|e| err(format!("--passes: {e}")))?)
        }
        (Backend::Llvm, _) => Box::new(llvm()?),
        (Backend::Cranelift, _) => Box::new(
            Optimized::new(
                args.passes.as_deref().unwrap_or("default"),
                Cranelift::single_threaded(),
            )
            .map_err(|e| err(format!("--passes: {e}")))?,
        ),
        (Backend::Auto, _) => {
            return Err(CliError::Usage(
                "conformance runs each case once, on one compiler: use --backend cranelift or \
                 llvm (--backend auto runs their code)"
                    .into(),
            ));
        }
        (Backend::Gpu, _) => Box::new(
            Optimized::new(
                args.passes.as_deref().unwrap_or("default"),
                terafab_testsuite::Gpu {
                    device: terafab_gpu::open_device()?,
                },
            )
            .map_err(|e| err(format!("--passes: {e}")))?,
        ),
        (Backend::Tile, _) => Box::new(
            Optimized::new(
                args.passes.as_deref().unwrap_or("default"),
                Tile {
                    config: crate::sim::machine(&args.config, &[], false, false)?,
                    bf16,
                },
            )
            .map_err(|e| err(format!("--passes: {e}")))?,
        ),
    };
    let cases = discover(&root, &sets, filter.as_ref()).map_err(|e| err(e.to_string()))?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let results = run_all(&cases, backend.as_ref(), threads, true);
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(CliError::Stdout);
    if let Some(path) = &args.report {
        std::fs::write(path, report(&results))
            .map_err(|e| err(format!("{}: {e}", path.display())))?;
        w(out, format!("report: {}", path.display()))?;
    } else {
        for r in results
            .iter()
            .filter(|r| r.outcome != terafab_testsuite::Outcome::Pass)
        {
            w(out, report(std::slice::from_ref(r)).trim_end().to_string())?;
        }
    }
    w(out, Summary(&results).to_string())?;
    let list = match backend_name(args.backend) {
        "tile" if bf16 => "tile-bf16",
        name => name,
    };
    let exp_path = args
        .expectations
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("testsuite/expectations/{list}.txt")));
    if args.update_expectations {
        let mut flags = backend_name(args.backend).to_string();
        if args.backend == Backend::Tile {
            flags.push_str(&format!(" --config {}", args.config));
            if bf16 {
                flags.push_str(" --precision bf16");
            }
        }
        write_expectations(&exp_path, list, &flags, &results)
            .map_err(|e| err(format!("{}: {e}", exp_path.display())))?;
        return w(out, format!("wrote {}", exp_path.display()));
    }
    let expected =
        read_expectations(&exp_path).map_err(|e| err(format!("{}: {e}", exp_path.display())))?;
    let cmp = compare_expectations(&results, &expected);
    if !cmp.new_passes.is_empty() {
        w(
            out,
            format!(
                "{} newly passing case(s) not in {}",
                cmp.new_passes.len(),
                exp_path.display()
            ),
        )?;
    }
    if !cmp.regressions.is_empty() {
        for (id, m) in &cmp.regressions {
            w(out, format!("REGRESSION {id}: {m}"))?;
        }
        return Err(err(format!(
            "{} expected case(s) no longer pass",
            cmp.regressions.len()
        )));
    }
    Ok(())
}

fn backend_name(b: Backend) -> &'static str {
    match b {
        // The kernel IR must pass exactly what the interpreter passes.
        Backend::Interp | Backend::Kernels => "interp",
        Backend::Llvm => "llvm",
        Backend::Cranelift => "cranelift",
        Backend::Tile => "tile",
        Backend::Auto => "auto",
        Backend::Gpu => "gpu",
    }
}
