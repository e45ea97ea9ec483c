//! The `terafab` command: thin glue between the command line and the library crates.
//!
//! - `terafab run`: load a model, build its inputs (from `.npy` files or random), run it, print a
//!   summary of each output and optionally write them as `.npy` files.
//! - `terafab print`: print a model's IR text.
//! - `terafab verify`: load and verify a model.
//! - `terafab opt`: run a pipeline of passes over a model and print the resulting IR.
//! - `terafab check`: list every unsupported or invalid node of an ONNX model at once.
//! - `terafab conformance`: run the ONNX backend test cases on a backend (optionally after a
//!   pass pipeline).
//! - `terafab plan-memory`: print the arena plan of a model's intermediate tensors.
//! - `terafab compile`: a model to a shared library or object with a C header (LLVM, ahead of
//!   time), or to a text form (`--emit kernels|llvm|llvm-opt|asm`, `--backend cranelift
//!   --emit clif`).
//! - `terafab bench`: time a pass pipeline on models (median, min and max of several runs), or
//!   with `--backend`, a model's compile time and run latency.
//!
//! - `terafab train`: train a model's float initializers on a dataset (`.npy`), on any backend,
//!   and write the trained model back as ONNX.
//!
//! Errors print as one `error: ...` line followed by one `  caused by: ...` line per source, and
//! exit with code 1; bad arguments exit with code 2 (clap's convention).

mod bench;
mod bench_gpu;
mod bench_model;
mod bench_tile;
mod compile;
mod conformance;
mod error;
mod inputs;
mod opt;
mod plan_memory;
mod run;
mod sim;
mod summary;
mod train;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::CliError;

const EXAMPLES: &str = "\
EXAMPLES:
  # Run the bundled example on deterministic random inputs (compiled by LLVM, all cores)
  terafab run examples/mlp.tfir --random-inputs --seed 1

  # The same on the reference interpreter
  terafab run examples/mlp.tfir --random-inputs --seed 1 --backend interp

  # A shared library with a C header, and the model's LLVM IR
  terafab compile examples/mlp.onnx --dim batch=4 -o mlp.so
  terafab compile examples/mlp.onnx --dim batch=4 --emit llvm

  # Run on inputs from .npy files and save the outputs
  terafab run model.tfir --input x=x.npy --output-dir out

  # Show a model's IR text, eliding large constants
  terafab print examples/mlp.tfir --elide-constants 8

  # Check that a model loads and verifies
  terafab verify examples/mlp.tfir

  # Optimize a model with the default pass pipeline, timing each pass
  terafab opt examples/mlp.tfir --time-passes

  # Run an ONNX model on an input array
  terafab run examples/mlp.onnx --input x=x.npy

  # List every node of an ONNX model terafab cannot import yet
  terafab check model.onnx --input-shape input=1x3x224x224

  # Run the ONNX conformance cases whose names match a regex on the interpreter
  terafab conformance --backend interp --filter 'node/test_conv'

  # Plan the memory of an ONNX model's intermediate tensors for a batch of 64
  terafab plan-memory examples/mlp.onnx --dim batch=64";

const RUN_EXAMPLES: &str = "\
EXAMPLES:
  # Every input random (floats uniform in [-1,1), ints in [0,10), bools fair), seed 1
  terafab run examples/mlp.tfir --random-inputs --seed 1

  # Symbolic dims of random inputs need a value
  terafab run examples/symbolic_batch.tfir --random-inputs --dim N=4

  # Inputs from numpy files; outputs written to out/<output name>.npy
  terafab run model.tfir --input x=x.npy --input mask=mask.npy --output-dir out

  # Some inputs from files, the rest random
  terafab run model.tfir --input x=x.npy --random-inputs --seed 7

  # An ONNX model: the shapes of .npy inputs bind its symbolic dims; random inputs need
  # --input-shape or --dim for dims the model leaves open
  terafab run model.onnx --input-shape input=1x3x224x224 --random-inputs
  terafab run model.onnx --dim batch=8 --random-inputs

  # On the simulated tile accelerator (a 4x4 chip): the report of every kernel (simulated
  # cycles, engine utilization, HBM bytes, roofline) and a Perfetto trace
  terafab run examples/mlp.tfir --random-inputs --backend tile --config 4x4 --trace trace.json";

const PRINT_EXAMPLES: &str = "\
EXAMPLES:
  # The full IR text (it parses back to the same module)
  terafab print examples/mlp.tfir

  # Elide the data of constants with more than 8 elements, for reading
  terafab print examples/mlp.tfir --elide-constants 8";

const VERIFY_EXAMPLES: &str = "\
EXAMPLES:
  # Prints `ok: N functions, M nodes`, or the first problem found and exits with code 1
  terafab verify examples/mlp.tfir";

const CHECK_EXAMPLES: &str = "\
EXAMPLES:
  # Every unsupported op, attribute or type of the model, one line per node (exit code 1 if any)
  terafab check model.onnx --dim batch=1";

const CONFORMANCE_EXAMPLES: &str = "\
EXAMPLES:
  # All default sets (node, simple, pytorch-operator, pytorch-converted) on the interpreter
  terafab conformance --backend interp

  # Only the convolution cases, with the per-case report written to a file
  terafab conformance --filter 'node/test_conv' --report conv.txt

  # Check against the expectations list, and rewrite it from this run
  terafab conformance --update-expectations

  # Run a pass pipeline before the interpreter (the interpreter's expectations still hold)
  terafab conformance --passes dce";

const PLAN_MEMORY_EXAMPLES: &str = "\
EXAMPLES:
  # Arena size, bytes without reuse, weights, and each buffer's offset, size and live range
  terafab plan-memory examples/mlp.tfir

  # Symbolic dims need a value; run dead code elimination first
  terafab plan-memory examples/mlp.onnx --dim batch=64 --passes dce";

/// terafab: a tensor compiler for a simulated Dojo-like training accelerator.
#[derive(Debug, Parser)]
#[command(name = "terafab", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a model's entry function and summarize its outputs
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Print a model's IR text
    #[command(after_help = PRINT_EXAMPLES)]
    Print(PrintArgs),
    /// Load and verify a model
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Run a pipeline of passes over a model and print the resulting IR
    #[command(after_help = opt::OPT_EXAMPLES)]
    Opt(opt::OptArgs),
    /// List every unsupported or invalid node of an ONNX model at once.
    #[command(after_help = CHECK_EXAMPLES)]
    Check(CheckArgs),
    /// Run the ONNX backend test cases (written by scripts/onnx-testdata.sh) on a backend.
    #[command(after_help = CONFORMANCE_EXAMPLES)]
    Conformance(conformance::ConformanceArgs),
    /// Plan the memory of a model's intermediate tensors: one arena, freed space reused.
    #[command(after_help = PLAN_MEMORY_EXAMPLES)]
    PlanMemory(plan_memory::PlanMemoryArgs),
    /// Compile a model ahead of time (a shared library or object file and its C header), or
    /// print its kernel IR, LLVM IR or assembly.
    #[command(after_help = compile::COMPILE_EXAMPLES)]
    Compile(compile::CompileArgs),
    /// Time a pass pipeline on models (per pass, the median, min and max of several runs), or
    /// with --backend, a model's compile time and run latency.
    #[command(after_help = bench::BENCH_EXAMPLES)]
    Bench(bench::BenchArgs),
    /// Run a tile-accelerator program (assembly or binary) on the cycle-level simulator and
    /// print its report: cycles, engine utilization, bytes moved, SRAM high water, roofline.
    #[command(after_help = sim::SIM_EXAMPLES)]
    Sim(sim::SimArgs),
    /// Train a model: forward, loss, backward and optimizer update compiled as one step and
    /// run over the batches of a dataset; the trained model written back as ONNX.
    #[command(after_help = train::TRAIN_EXAMPLES)]
    Train(train::TrainArgs),
}

/// Static shapes for a model's inputs (ONNX models leave some dims open).
#[derive(Debug, Clone, Default, Args)]
pub struct ShapeArgs {
    /// The full shape of an input, e.g. `input=1x3x224x224` (repeatable).
    #[arg(long = "input-shape", value_name = "NAME=DxDx..", value_parser = parse_shape_spec)]
    pub input_shapes: Vec<(String, Vec<usize>)>,
    /// The extent of a symbolic dim, e.g. `batch=8` (repeatable).
    #[arg(long = "dim", value_name = "NAME=N", value_parser = parse_dim_spec)]
    pub dims: Vec<(String, usize)>,
}

impl ShapeArgs {
    /// Load options with these shapes, plus `extra` input shapes (e.g. from input files).
    pub fn load_options(&self, extra: &[(String, Vec<usize>)]) -> terafab_frontend::LoadOptions {
        let mut o = terafab_frontend::LoadOptions::default();
        for (name, dims) in extra.iter().chain(&self.input_shapes) {
            o.input_shapes.insert(name.clone(), dims.clone());
        }
        o.dims.extend(self.dims.iter().cloned());
        o
    }
}

#[derive(Debug, Args)]
struct CheckArgs {
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
}

/// What executes the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The reference interpreter: plain and exact, the oracle other backends are tested against
    Interp,
    /// Fusion into kernels, run by the kernel IR interpreter (checks every lowering step)
    Kernels,
    /// Fusion into kernels compiled to native code by LLVM (JIT), run on a thread pool
    Llvm,
    /// Fusion into kernels compiled to native code by Cranelift (JIT; compiles much faster than
    /// LLVM, runs slower), on the same runtime and thread pool
    Cranelift,
    /// Tiered compilation: runs at once on Cranelift's code while LLVM compiles the same kernels
    /// in the background, then later runs of the session (bench iterations) on LLVM's code
    Auto,
    /// Fusion into kernels lowered to the simulated tile accelerator (--config); kernels it
    /// cannot run yet run on the host; prints the simulator's report
    Tile,
    /// Fusion into kernels compiled to PTX through LLVM's NVPTX target and run on the GPU
    /// through the CUDA driver (loaded at run time; without a GPU this says so)
    Gpu,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model file (.onnx or .tfir)
    pub model: PathBuf,
    /// Take input NAME from a numpy .npy file (repeatable)
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = parse_input_spec)]
    pub inputs: Vec<(String, PathBuf)>,
    /// Fill every input not given by --input with deterministic random values
    #[arg(long)]
    pub random_inputs: bool,
    /// Seed of the random inputs
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        requires = "random_inputs"
    )]
    pub seed: u64,
    /// Give symbolic dim NAME the extent N in random inputs (repeatable)
    #[command(flatten)]
    pub shapes: ShapeArgs,
    /// Write each output to DIR/<output name>.npy (DIR is created if needed)
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// What runs the model
    #[arg(long, value_enum, default_value_t = Backend::Llvm)]
    pub backend: Backend,
    /// Worker threads of the llvm and cranelift backends (0: one per core)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub threads: usize,
    /// Passes run before the kernels, llvm and cranelift backends fuse the model (`none`: none)
    #[arg(long, value_name = "P,P,..", default_value = "default")]
    pub passes: String,
    #[command(flatten)]
    pub tile: TileArgs,
    /// With --backend tile: write a Chrome trace (Perfetto) of the accelerator's engines
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
}

/// The tile backend's options (`run`, `compile`, `bench`).
#[derive(Debug, Args)]
pub struct TileArgs {
    /// The tile backend's machine: a preset (`1x1`, `2x2`, `4x4`, `d1`) or a config file
    #[arg(long, value_name = "PRESET|FILE", default_value = "1x1")]
    pub config: String,
    /// Override one key of the tile machine's config (repeatable), e.g. `--set hop_cycles=6`
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = sim::parse_key_value)]
    pub set: Vec<(String, String)>,
    /// With --backend tile: the contractions' operand type (products of narrow values, f32
    /// sums; the `precision-*` pass, its converts visible in the kernel IR). Default bf16
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

impl TileArgs {
    /// The pass pipeline `passes` for `backend`: on the tile backend the precision pass is
    /// appended (bf16 unless asked otherwise); elsewhere `--precision` is a usage error.
    pub fn pipeline(&self, passes: &str, backend: Backend) -> Result<String, CliError> {
        if backend != Backend::Tile {
            if self.precision.is_some() {
                return Err(CliError::Usage(
                    "--precision applies to --backend tile only".into(),
                ));
            }
            return Ok(passes.to_string());
        }
        Ok(match self.precision.unwrap_or(Precision::Bf16).pass() {
            None => passes.to_string(),
            Some(pass) if passes == "none" || passes.is_empty() => pass.to_string(),
            Some(pass) => format!("{passes},{pass}"),
        })
    }

    /// The machine.
    pub fn machine(&self, trace: bool) -> Result<terafab_tile::config::Config, CliError> {
        sim::machine(&self.config, &self.set, false, trace)
    }
}

/// The operand type of the tile backend's contractions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Precision {
    /// f32 operands (the matrix engine's reduced f32 rate)
    F32,
    /// bf16 operands, f32 accumulation
    Bf16,
    /// CFP8 1-4-3 operands (bias 7), f32 accumulation (also `cfp8`)
    #[value(alias = "cfp8")]
    Cf8e4m3,
    /// CFP8 1-5-2 operands (bias 15), f32 accumulation
    Cf8e5m2,
}

impl Precision {
    /// The pass appended to the pipeline, if any.
    pub fn pass(self) -> Option<&'static str> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some("precision-bf16"),
            Precision::Cf8e4m3 => Some("precision-cf8e4m3"),
            Precision::Cf8e5m2 => Some("precision-cf8e5m2"),
        }
    }
}

#[derive(Debug, Args)]
struct PrintArgs {
    /// The model file (.onnx or .tfir)
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Print constants with more than N elements without their data
    #[arg(long, value_name = "N")]
    elide_constants: Option<usize>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The model file (.onnx or .tfir)
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
}

/// `NAME=FILE`: split at the first `=`.
fn parse_input_spec(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NAME=FILE.npy, got `{s}`")),
    }
}

/// `NAME=2x3x4` (a scalar is `NAME=`... not accepted: give at least one dim).
fn parse_shape_spec(s: &str) -> Result<(String, Vec<usize>), String> {
    let (name, dims) = s
        .split_once('=')
        .filter(|(name, dims)| !name.is_empty() && !dims.is_empty())
        .ok_or_else(|| format!("expected NAME=DxDx.., got `{s}`"))?;
    let dims = dims
        .split(['x', 'X', ','])
        .map(|d| {
            d.trim()
                .parse::<usize>()
                .map_err(|e| format!("bad dim `{d}` in `{s}`: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((name.to_string(), dims))
}

/// `NAME=N` with a non-negative integer extent.
fn parse_dim_spec(s: &str) -> Result<(String, usize), String> {
    let (name, n) = s
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("expected NAME=N, got `{s}`"))?;
    let n = n.trim().parse::<usize>().map_err(|e| {
        format!("extent of `{name}` must be a non-negative integer, got `{n}`: {e}")
    })?;
    Ok((name.to_string(), n))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match cli.command {
        Command::Run(args) => run::run(&args, &mut out),
        Command::Print(args) => print(&args, &mut out),
        Command::Verify(args) => verify(&args, &mut out),
        Command::Opt(args) => opt::run(&args, &mut out),
        Command::Check(args) => check(&args, &mut out),
        Command::Conformance(args) => conformance::run(&args, &mut out),
        Command::PlanMemory(args) => plan_memory::run(&args, &mut out),
        Command::Compile(args) => compile::run(&args, &mut out),
        Command::Bench(args) => bench::run(&args, &mut out),
        Command::Sim(args) => sim::run(&args, &mut out),
        Command::Train(args) => train::run(&args, &mut out),
    };
    let result = result.and_then(|()| out.flush().map_err(CliError::Stdout));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`terafab print m.tfir | head`): not an error of ours.
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", error::report(&e));
            ExitCode::FAILURE
        }
    }
}

fn print(args: &PrintArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let module = terafab_frontend::load_model_with(&args.model, &args.shapes.load_options(&[]))?;
    let text = match args.elide_constants {
        Some(n) => terafab_ir::print::print_module_with(
            &module,
            &terafab_ir::print::PrintOptions {
                elide_constants_above: Some(n),
            },
        ),
        None => terafab_ir::print::print_module(&module),
    };
    out.write_all(text.as_bytes()).map_err(CliError::Stdout)?;
    if !text.ends_with('\n') {
        writeln!(out).map_err(CliError::Stdout)?;
    }
    Ok(())
}

fn check(args: &CheckArgs, out: &mut dyn Write) -> Result<(), CliError> {
    // Dims nothing binds are taken as 1, so every node can be looked at.
    let mut opts = args.shapes.load_options(&[]);
    opts.default_dim = Some(1);
    let problems = terafab_frontend::check_onnx(&args.model, &opts)?;
    for p in &problems {
        writeln!(out, "{p}").map_err(CliError::Stdout)?;
    }
    if problems.is_empty() {
        writeln!(out, "ok: every node imports").map_err(CliError::Stdout)
    } else {
        Err(CliError::CheckFailed {
            count: problems.len(),
        })
    }
}

fn verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let module = terafab_frontend::load_model_with(&args.model, &args.shapes.load_options(&[]))?;
    let nodes: usize = module.functions.iter().map(|f| f.num_nodes()).sum();
    // A fixed form (no singular), so scripts can match it.
    writeln!(
        out,
        "ok: {} functions, {nodes} nodes",
        module.functions.len()
    )
    .map_err(CliError::Stdout)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn specs_parse() {
        assert_eq!(
            parse_input_spec("x=a=b.npy").unwrap(),
            ("x".to_string(), PathBuf::from("a=b.npy"))
        );
        assert!(parse_input_spec("x").is_err());
        assert!(parse_input_spec("=x.npy").is_err());
        assert!(parse_input_spec("x=").is_err());
        assert_eq!(parse_dim_spec("N=4").unwrap(), ("N".to_string(), 4));
        assert!(parse_dim_spec("N=-1").is_err());
        assert!(parse_dim_spec("N").is_err());
        assert!(parse_dim_spec("=3").is_err());
        assert_eq!(
            parse_shape_spec("x=1x3x224x224").unwrap(),
            ("x".to_string(), vec![1, 3, 224, 224])
        );
        assert!(parse_shape_spec("x=1xax2").is_err());
        assert!(parse_shape_spec("x=").is_err());
    }
}
