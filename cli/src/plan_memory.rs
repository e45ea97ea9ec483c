//! `terafab plan-memory`: load a model, optionally run a pass pipeline, and print the memory
//! plan of each function (`terafab_passes::plan_memory`): the arena size, the bytes without
//! reuse, the weights, and one line per buffer.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use crate::ShapeArgs;
use crate::error::CliError;

#[derive(Debug, Args)]
pub struct PlanMemoryArgs {
    /// The model file (.onnx or .tfir)
    model: PathBuf,
    #[command(flatten)]
    shapes: ShapeArgs,
    /// Run this comma-separated pass pipeline (e.g. `dce`) before planning
    #[arg(long, value_name = "PIPELINE")]
    passes: Option<String>,
}

pub fn run(args: &PlanMemoryArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let mut module =
        terafab_frontend::load_model_with(&args.model, &args.shapes.load_options(&[]))?;
    if let Some(pipeline) = &args.passes {
        terafab_passes::run_pipeline(&mut module, pipeline, Default::default())
            .map_err(crate::opt::pipeline_error(pipeline))?;
    }
    for (i, f) in module.functions.iter().enumerate() {
        let plan = terafab_passes::plan_memory(f)?;
        let sep = if i == 0 { "" } else { "\n" };
        writeln!(out, "{sep}{plan}").map_err(CliError::Stdout)?;
    }
    Ok(())
}
