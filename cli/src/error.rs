//! The command's errors, and how they are reported.

use std::error::Error;
use std::path::PathBuf;

use terafab_frontend::FrontendError;
use terafab_ir::interp::InterpError;
use terafab_ir::npy::NpyError;
use terafab_ir::tensor::TensorError;

/// Everything `terafab` reports as `error: ...` (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    #[error("{count} node(s) cannot be imported")]
    CheckFailed { count: usize },
    #[error("{0}")]
    Conformance(String),
    #[error("`{}` has no function to run", path.display())]
    NoFunction { path: PathBuf },
    #[error("--input names `{name}`, which is not an input of @{func} (its inputs: {known})")]
    UnknownInput {
        name: String,
        func: String,
        known: String,
    },
    #[error("--input `{name}` is given more than once")]
    DuplicateInput { name: String },
    #[error(
        "missing input{} {names} of @{func}: pass {hint}, or --random-inputs",
        if *count == 1 { "" } else { "s" }
    )]
    MissingInputs {
        names: String,
        count: usize,
        func: String,
        /// `--input x=<file.npy> --input y=<file.npy>`
        hint: String,
    },
    #[error("cannot read input `{name}` from `{}`", path.display())]
    ReadInput {
        name: String,
        path: PathBuf,
        #[source]
        source: NpyError,
    },
    #[error("input `{name}` from `{}` {problem}", path.display())]
    InputMismatch {
        name: String,
        path: PathBuf,
        /// `is f32[3,16] but @main expects f32[4,16]`, and more about symbolic dims.
        problem: String,
    },
    #[error("--dim names `{name}`, which is not a symbolic dim of the inputs of @{func} ({known})")]
    UnknownDim {
        name: String,
        func: String,
        known: String,
    },
    #[error("--dim `{name}` is given more than once")]
    DuplicateDim { name: String },
    #[error("--dim {name}={value} conflicts with {name}={bound} from input `{input}`")]
    DimConflict {
        name: String,
        value: usize,
        bound: usize,
        input: String,
    },
    #[error(
        "random input{} {inputs} need{} a value for symbolic dim{} {dims}: pass {hint}",
        if *input_count == 1 { "" } else { "s" },
        if *input_count == 1 { "s" } else { "" },
        if *dim_count == 1 { "" } else { "s" }
    )]
    UnboundDims {
        inputs: String,
        input_count: usize,
        dims: String,
        dim_count: usize,
        /// `--dim N=<extent> --dim M=<extent>`
        hint: String,
    },
    #[error("cannot create random input `{name}`")]
    RandomInput {
        name: String,
        #[source]
        source: TensorError,
    },
    #[error("running @{func} with the interpreter failed")]
    Interp {
        func: String,
        #[source]
        source: Box<InterpError>,
    },
    #[error("cannot create output directory `{}`", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write output `{name}` to `{}`", path.display())]
    WriteOutput {
        name: String,
        path: PathBuf,
        #[source]
        source: NpyError,
    },
    #[error("pass pipeline `{pipeline}` failed")]
    Pipeline {
        pipeline: String,
        #[source]
        source: terafab_passes::PassError,
    },
    #[error(transparent)]
    Kernels(#[from] terafab_passes::fuse::RunError),
    #[error(transparent)]
    MemPlan(#[from] terafab_passes::MemPlanError),
    #[error(transparent)]
    Llvm(#[from] terafab_llvm::LlvmError),
    #[error(transparent)]
    Cranelift(#[from] terafab_cranelift::CraneliftError),
    #[error(transparent)]
    Tiered(#[from] terafab_tiered::TieredError),
    #[error(transparent)]
    Gpu(#[from] terafab_gpu::GpuError),
    #[error("{0}")]
    Usage(String),
    #[error("--print-ir-after takes a pass name, and `{name}` is a named pipeline")]
    PrintAfterPipeline { name: String },
    #[error("cannot write `{}`", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read `{}`", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tile program `{}`", path.display())]
    TileAsm {
        path: PathBuf,
        #[source]
        source: terafab_tile::AsmError,
    },
    #[error("tile program `{}`", path.display())]
    TileDecode {
        path: PathBuf,
        #[source]
        source: terafab_tile::DecodeError,
    },
    #[error("tile machine config `{name}`")]
    TileConfig {
        name: String,
        #[source]
        source: terafab_tile::ConfigError,
    },
    #[error("simulation failed")]
    TileSim(#[source] terafab_tile::SimError),
    #[error(transparent)]
    TileBackend(#[from] terafab_tile::backend::TileBackendError),
    #[error(transparent)]
    Train(#[from] terafab_passes::train::TrainError),
    #[error("train: {0}")]
    TrainSetup(String),
    #[error("cannot write to standard output")]
    Stdout(#[source] std::io::Error),
}

/// `error: ...` and one `  caused by: ...` line per source in the chain. A source whose message
/// is already part of the message before it (errors that embed their cause) is not repeated.
pub fn report(e: &dyn Error) -> String {
    let mut text = format!("error: {e}");
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !last.contains(&msg) {
            // Continuation lines (a parser's source snippet) are indented under their cause.
            text.push_str(&format!("\n  caused by: {}", msg.replace('\n', "\n    ")));
        }
        last = msg;
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle: {0}")]
    struct Middle(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner;

    #[test]
    fn report_lists_the_chain_without_repeats() {
        assert_eq!(
            report(&Outer(Middle(Inner))),
            "error: outer\n  caused by: middle: inner"
        );
        assert_eq!(report(&Middle(Inner)), "error: middle: inner");
    }
}
