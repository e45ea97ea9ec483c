//! `terafab compile`: a model to machine code, ahead of time (an object file or a shared
//! library with a C header), or to one of its backend text forms (`--emit`).
//!
//! The shared first half, [`lower`], also serves `run` and `bench`: load the model, run a pass
//! pipeline, bind the dims from the inputs' shapes and fuse into a kernel program.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use terafab_ir::kernel::KernelProgram;
use terafab_ir::{Module, Tensor};

use crate::ShapeArgs;
use crate::error::CliError;
use crate::inputs::{self, RandomSpec};
use crate::opt::pipeline_error;

pub const COMPILE_EXAMPLES: &str = "\
EXAMPLES:
  # A shared library and its C header (model.h beside it): create, run, destroy
  terafab compile examples/mlp.onnx --dim batch=4 -o model.so

  # An object file to link into a program of your own (also writes model.h)
  terafab compile examples/mlp.onnx --dim batch=4 -o model.o

  # The LLVM IR as generated from the kernel IR, and after LLVM's O3 pipeline
  terafab compile examples/mlp.onnx --dim batch=4 --emit llvm
  terafab compile examples/mlp.onnx --dim batch=4 --emit llvm-opt

  # The assembly, for a named CPU rather than this machine's
  terafab compile examples/mlp.onnx --dim batch=4 --emit asm --cpu x86-64-v3

  # The kernel IR the backend starts from
  terafab compile examples/mlp.onnx --dim batch=4 --emit kernels

  # The tile accelerator's programs (one per kernel; bf16 contractions unless --precision),
  # and the kernel IR they are lowered from (after the contraction split)
  terafab compile examples/mlp.onnx --dim batch=4 --backend tile --config 4x4 --emit tile-asm
  terafab compile examples/mlp.onnx --dim batch=4 --backend tile --emit tile-kernels

  # The Cranelift IR of every kernel (the default with --emit clif)
  terafab compile examples/mlp.onnx --dim batch=4 --backend cranelift --emit clif
  # PTX for the GPU backend (no GPU or CUDA toolkit needed), for Hopper
  terafab compile examples/mlp.onnx --dim batch=4 --emit ptx --gpu-arch sm_90";

/// A text form to print instead of building a library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Emit {
    /// The kernel IR
    Kernels,
    /// LLVM IR as generated
    Llvm,
    /// LLVM IR after LLVM's O3 pipeline
    LlvmOpt,
    /// Assembly
    Asm,
    /// The tile accelerator's programs, one per kernel (--backend tile)
    TileAsm,
    /// The kernel IR the tile programs are lowered from: contractions split into pack, GEMM
    /// and epilogue kernels, each kernel's placement (--backend tile)
    TileKernels,
    /// Cranelift IR as generated, one function per kernel (--backend cranelift)
    Clif,
    /// PTX for the GPU (--gpu-arch), one entry per kernel; needs no GPU (--backend gpu)
    Ptx,
}

impl Emit {
    fn is_tile(self) -> bool {
        matches!(self, Emit::TileAsm | Emit::TileKernels)
    }
}

#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The model file (.onnx or .tfir)
    pub model: PathBuf,
    #[command(flatten)]
    pub shapes: ShapeArgs,
    /// The backend: `llvm` (libraries, objects, LLVM text forms), `tile` (its text forms;
    /// the default with --emit tile-asm|tile-kernels) or `cranelift` (--emit clif, its default)
    #[arg(long, value_enum)]
    pub backend: Option<crate::Backend>,
    #[command(flatten)]
    pub tile: crate::TileArgs,
    /// Passes run before fusion
    #[arg(long, value_name = "P,P,..", default_value = "default")]
    pub passes: String,
    /// Print a text form (to stdout, or to -o)
    #[arg(long, value_enum)]
    pub emit: Option<Emit>,
    /// The output: `NAME.so` (shared library) or `NAME.o` (object), with `NAME.h` beside it;
    /// with --emit, the text goes there
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Generate code for this CPU (an LLVM CPU name such as `x86-64-v3` or `znver3`) instead of
    /// this machine's
    #[arg(long, value_name = "NAME")]
    pub cpu: Option<String>,
    /// With --emit ptx: the GPU architecture (`sm_80`: Ampere and newer, `sm_90`: Hopper)
    #[arg(long, value_name = "ARCH", default_value = "sm_80")]
    pub gpu_arch: String,
    /// The C symbols' prefix (default: the output's file stem)
    #[arg(long, value_name = "PREFIX")]
    pub name: Option<String>,
}

/// A model lowered to kernels, with the time each step took.
pub struct Lowered {
    pub program: KernelProgram,
    /// The inputs the dims were bound from (random, or from files).
    pub inputs: Vec<Tensor>,
    pub passes_time: Duration,
    pub fuse_time: Duration,
}

/// Run `pipeline` on `module` (loaded from `path`) and fuse its entry function with the dims
/// `inputs` bind.
pub fn lower(
    path: &Path,
    mut module: Module,
    pipeline: &str,
    inputs: Vec<Tensor>,
) -> Result<Lowered, CliError> {
    let t0 = Instant::now();
    if !pipeline.is_empty() && pipeline != "none" {
        terafab_passes::run_pipeline(&mut module, pipeline, Default::default())
            .map_err(pipeline_error(pipeline))?;
    }
    let passes_time = t0.elapsed();
    let t1 = Instant::now();
    let f = module.entry().ok_or_else(|| CliError::NoFunction {
        path: path.to_path_buf(),
    })?;
    let bind = terafab_ir::interp::bind_inputs(f, &inputs).map_err(|source| CliError::Interp {
        func: f.name.clone(),
        source: Box::new(source),
    })?;
    let program =
        terafab_passes::fuse::fuse_function(f, &bind).map_err(|e| CliError::Kernels(e.into()))?;
    let fuse_time = t1.elapsed();
    Ok(Lowered {
        program,
        inputs,
        passes_time,
        fuse_time,
    })
}

/// The model and random inputs of the shapes its dims allow (`--dim`, `--input-shape`).
pub fn load_with_random_inputs(
    path: &Path,
    shapes: &ShapeArgs,
) -> Result<(Module, Vec<Tensor>), CliError> {
    let module = terafab_frontend::load_model_with(path, &shapes.load_options(&[]))?;
    let f = module.entry().ok_or_else(|| CliError::NoFunction {
        path: path.to_path_buf(),
    })?;
    let open = inputs::symbolic_dims(f);
    let dims = if open.is_empty() {
        Vec::new()
    } else {
        shapes.dims.clone()
    };
    let inputs = inputs::build(
        f,
        &[],
        &HashMap::new(),
        Some(RandomSpec {
            seed: 0,
            dims: &dims,
        }),
    )?;
    let tensors = inputs.into_iter().map(|i| i.tensor).collect();
    Ok((module, tensors))
}

/// The CPU option.
pub fn cpu(name: &Option<String>) -> terafab_llvm::Cpu {
    match name {
        Some(n) => terafab_llvm::Cpu::Named(n.clone()),
        None => terafab_llvm::Cpu::Host,
    }
}

pub fn run(args: &CompileArgs, out: &mut dyn Write) -> Result<(), CliError> {
    use crate::Backend;
    let tile_emit = args.emit.is_some_and(Emit::is_tile);
    let clif_emit = args.emit == Some(Emit::Clif);
    let backend = args.backend.unwrap_or(if tile_emit {
        Backend::Tile
    } else if args.emit == Some(Emit::Ptx) {
        Backend::Gpu
    } else if clif_emit {
        Backend::Cranelift
    } else {
        Backend::Llvm
    });
    match (backend, args.emit) {
        (Backend::Gpu, Some(Emit::Ptx | Emit::Kernels)) => {}
        (Backend::Gpu, _) => {
            return Err(CliError::Usage(
                "`terafab compile --backend gpu` prints text forms: --emit ptx or kernels".into(),
            ));
        }
        (_, Some(Emit::Ptx)) => {
            return Err(CliError::Usage("--emit ptx needs --backend gpu".into()));
        }
        (Backend::Cranelift, Some(Emit::Clif | Emit::Kernels)) => {}
        (Backend::Cranelift, _) => {
            return Err(CliError::Usage(
                "`terafab compile --backend cranelift` prints text forms: --emit clif or kernels"
                    .into(),
            ));
        }
        (_, Some(Emit::Clif)) => {
            return Err(CliError::Usage(
                "--emit clif needs --backend cranelift".into(),
            ));
        }
        (Backend::Llvm, _) if !tile_emit => {}
        (Backend::Tile, Some(e)) if e.is_tile() || e == Emit::Kernels => {}
        (Backend::Tile, _) => {
            return Err(CliError::Usage(
                "`terafab compile --backend tile` prints text forms: --emit tile-asm, \
                 tile-kernels or kernels"
                    .into(),
            ));
        }
        (Backend::Llvm, _) => {
            return Err(CliError::Usage(
                "--emit tile-asm and tile-kernels need --backend tile".into(),
            ));
        }
        _ => {
            return Err(CliError::Usage(
                "`terafab compile` supports --backend llvm, cranelift, tile and gpu".into(),
            ));
        }
    }
    if args.emit.is_none() && args.output.is_none() {
        return Err(CliError::Usage(
            "give -o OUT.so / OUT.o (a library), or --emit FORM (a text form)".into(),
        ));
    }
    let pipeline = args.tile.pipeline(&args.passes, backend)?;
    let (module, inputs) = load_with_random_inputs(&args.model, &args.shapes)?;
    let lowered = lower(&args.model, module, &pipeline, inputs)?;
    let p = &lowered.program;
    let cpu = cpu(&args.cpu);
    if let Some(emit) = args.emit {
        let tile = || -> Result<_, CliError> {
            Ok(terafab_tile::compile::compile_program(
                &args.tile.machine(false)?,
                p,
                &Default::default(),
            ))
        };
        let text = match emit {
            Emit::TileAsm => tile()?.asm_text(),
            Emit::TileKernels => tile()?.kernels_text(),
            Emit::Kernels => terafab_ir::kernel::print::print_program(p),
            Emit::Llvm => terafab_llvm::emit_llvm(p, &cpu, terafab_llvm::IrStage::Generated)?,
            Emit::LlvmOpt => terafab_llvm::emit_llvm(p, &cpu, terafab_llvm::IrStage::Optimized)?,
            Emit::Asm => terafab_llvm::emit_asm(p, &cpu)?,
            Emit::Clif => terafab_cranelift::emit_clif(p)?,
            Emit::Ptx => terafab_gpu::emit_ptx(p, args.gpu_arch.parse()?)?,
        };
        return match &args.output {
            Some(path) => std::fs::write(path, text).map_err(|source| CliError::WriteFile {
                path: path.clone(),
                source,
            }),
            None => out.write_all(text.as_bytes()).map_err(CliError::Stdout),
        };
    }
    let output = args.output.as_ref().expect("checked above");
    let prefix = match &args.name {
        Some(n) => n.clone(),
        None => output
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    let built = terafab_llvm::aot::build(p, &cpu, &prefix, output)?;
    writeln!(
        out,
        "wrote {} and {} ({} kernels, arena {} bytes, weights {} bytes)",
        built.library.display(),
        built.header.display(),
        p.kernels.len(),
        built.arena_bytes,
        built.weights_bytes
    )
    .map_err(CliError::Stdout)
}
