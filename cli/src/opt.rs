//! `terafab opt`: run a pipeline of passes over a model and print (or write) the result.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use terafab_ir::Module;
use terafab_ir::print::print_module;

use crate::ShapeArgs;
use crate::error::CliError;

pub const OPT_EXAMPLES: &str = "\
EXAMPLES:
  # The default pipeline (canonicalize,fold,cse,dce), result on stdout
  terafab opt examples/mlp.tfir

  # Chosen passes, the result written to a file, with a timing table on stderr
  terafab opt model.onnx --passes canonicalize,fold,cse,dce -o model.opt.tfir --time-passes

  # Named pipelines expand inside pipelines
  terafab opt model.tfir --passes fold,default

  # The IR after every pass (on stderr), or only after `fold`
  terafab opt model.tfir --print-ir-after-all
  terafab opt model.tfir --print-ir-after fold

  # Optimize and fuse into kernels: a pipeline ending with `fuse` prints the kernel IR
  terafab opt model.onnx --dim N=8 --passes default,eqsat,default,fuse --time-passes

PASSES:
  infer-types, canonicalize, fold, cse, dce, eqsat, eqsat-exact, eqsat-dag, fuse, memplan,
  precision-bf16, precision-cf8e4m3, precision-cf8e5m2, autodiff, remat;
  `default` = canonicalize,fold,cse,dce";

#[derive(Debug, Args)]
pub struct OptArgs {
    /// The model file (.onnx or .tfir)
    pub model: PathBuf,
    #[command(flatten)]
    pub shapes: ShapeArgs,
    /// Comma-separated passes and named pipelines, run in order
    #[arg(long, value_name = "P,P,..", default_value = "default")]
    pub passes: String,
    /// Print the IR to stderr after every pass
    #[arg(long)]
    pub print_ir_after_all: bool,
    /// Print the IR to stderr after each run of pass NAME (repeatable)
    #[arg(long, value_name = "NAME")]
    pub print_ir_after: Vec<String>,
    /// Print a table of per-pass wall times to stderr, then the passes' reports (eqsat: its
    /// saturation runs: iterations, e-nodes, e-classes, stop reason, extraction, rules applied)
    #[arg(long)]
    pub time_passes: bool,
    /// Write the resulting IR text to this file instead of stdout
    #[arg(short = 'o', long = "output", value_name = "OUT.tfir")]
    pub output: Option<PathBuf>,
}

pub fn run(args: &OptArgs, out: &mut dyn Write) -> Result<(), CliError> {
    for name in &args.print_ir_after {
        if terafab_passes::lookup(name).is_none() {
            // The pipeline parser's error lists the passes.
            terafab_passes::parse_pipeline(name).map_err(pipeline_error(name))?;
            return Err(CliError::PrintAfterPipeline { name: name.clone() });
        }
    }
    // Fail on a bad pipeline before loading a possibly large model.
    terafab_passes::parse_pipeline(&args.passes).map_err(pipeline_error(&args.passes))?;
    let mut module =
        terafab_frontend::load_model_with(&args.model, &args.shapes.load_options(&[]))?;
    let mut print_after = |pass: &str, m: &Module| {
        if args.print_ir_after_all || args.print_ir_after.iter().any(|n| n == pass) {
            eprint!(
                "// -----// IR after {pass} //----- //\n{}",
                stage_text(pass, m)
            );
        }
    };
    let opts = terafab_passes::PipelineOptions {
        after_each: Some(&mut print_after),
    };
    let timings = terafab_passes::run_pipeline(&mut module, &args.passes, opts)
        .map_err(pipeline_error(&args.passes))?;
    if args.time_passes {
        eprint!("{}", terafab_passes::timing_report(&timings));
    }
    let last = args.passes.rsplit(',').next().unwrap_or("").trim();
    let text = stage_text(last, &module);
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|source| CliError::WriteFile {
            path: path.clone(),
            source,
        }),
        None => out.write_all(text.as_bytes()).map_err(CliError::Stdout),
    }
}

/// The text of the stage after `pass`: the kernel IR after `fuse` (or the reason a function
/// could not be lowered), the graph IR otherwise.
fn stage_text(pass: &str, m: &Module) -> String {
    if pass != "fuse" {
        return print_module(m);
    }
    let mut text = String::new();
    for f in &m.functions {
        match terafab_passes::fuse::fuse_function(f, &Default::default()) {
            Ok(p) => {
                text.push_str(&format!("// {}\n", terafab_passes::fuse::summary(f, &p)));
                text.push_str(&terafab_ir::kernel::print::print_program(&p));
            }
            Err(e) => text.push_str(&format!("// not lowered to kernels: {e}\n{f}")),
        }
    }
    text
}

/// Wraps a pass error with the pipeline it came from.
pub(crate) fn pipeline_error(
    pipeline: &str,
) -> impl FnOnce(terafab_passes::PassError) -> CliError + '_ {
    move |source| CliError::Pipeline {
        pipeline: pipeline.to_string(),
        source,
    }
}
