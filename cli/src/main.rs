//! The `terafab` command: thin glue between the command line and the library crates.
//!
//! - `terafab run`: load a model, build its inputs (from `.npy` files or random), run it, print a
//!   summary of each output and optionally write them as `.npy` files.
//! - `terafab print`: print a model's IR text.
//! - `terafab verify`: load and verify a model.
//!
//! Errors print as one `error: ...` line followed by one `  caused by: ...` line per source, and
//! exit with code 1; bad arguments exit with code 2 (clap's convention).

mod error;
mod inputs;
mod run;
mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::CliError;

const EXAMPLES: &str = "\
EXAMPLES:
  # Run the bundled example on deterministic random inputs
  terafab run examples/mlp.tfir --random-inputs --seed 1

  # Run on inputs from .npy files and save the outputs
  terafab run model.tfir --input x=x.npy --output-dir out

  # Show a model's IR text, eliding large constants
  terafab print examples/mlp.tfir --elide-constants 8

  # Check that a model loads and verifies
  terafab verify examples/mlp.tfir";

const RUN_EXAMPLES: &str = "\
EXAMPLES:
  # Every input random (floats uniform in [-1,1), ints in [0,10), bools fair), seed 1
  terafab run examples/mlp.tfir --random-inputs --seed 1

  # Symbolic dims of random inputs need a value
  terafab run examples/symbolic_batch.tfir --random-inputs --dim N=4

  # Inputs from numpy files; outputs written to out/<output name>.npy
  terafab run model.tfir --input x=x.npy --input mask=mask.npy --output-dir out

  # Some inputs from files, the rest random
  terafab run model.tfir --input x=x.npy --random-inputs --seed 7";

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
}

/// What executes the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// The reference interpreter: plain and exact, the oracle other backends are tested against
    Interp,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model file (.tfir)
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
    #[arg(
        long = "dim",
        value_name = "NAME=N",
        value_parser = parse_dim_spec,
        requires = "random_inputs"
    )]
    pub dims: Vec<(String, usize)>,
    /// Write each output to DIR/<output name>.npy (DIR is created if needed)
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// What runs the model
    #[arg(long, value_enum, default_value_t = Backend::Interp)]
    pub backend: Backend,
}

#[derive(Debug, Args)]
struct PrintArgs {
    /// The model file (.tfir)
    model: PathBuf,
    /// Print constants with more than N elements without their data
    #[arg(long, value_name = "N")]
    elide_constants: Option<usize>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The model file (.tfir)
    model: PathBuf,
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
    let module = terafab_frontend::load_model(&args.model)?;
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

fn verify(args: &VerifyArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let module = terafab_frontend::load_model(&args.model)?;
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
    }
}
