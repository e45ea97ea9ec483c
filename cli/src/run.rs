//! `terafab run`: load, build inputs, execute, summarize and save the outputs.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use terafab_ir::kernel::KernelProgram;
use terafab_ir::{Tensor, TensorType};
use terafab_passes::fuse::{RunError, run_kernels_with};
use terafab_tiered::{LlvmStatus, Tier, Tiered, TieredError};

use crate::error::CliError;
use crate::inputs::{self, Origin, RandomSpec};
use crate::summary::summarize;
use crate::{Backend, RunArgs};

pub fn run(args: &RunArgs, out: &mut dyn Write) -> Result<(), CliError> {
    // The shapes of input files bind the open dims of ONNX models before import. A file that
    // cannot be read is reported below, with the input checks, once the model is loaded.
    let file_tensors: Vec<(String, Tensor)> = args
        .inputs
        .iter()
        .filter_map(|(name, path)| Some((name.clone(), terafab_ir::npy::read_npy(path).ok()?)))
        .collect();
    let file_shapes: Vec<(String, Vec<usize>)> = file_tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.shape().to_vec()))
        .collect();
    let mut opts = args.shapes.load_options(&file_shapes);
    // An ONNX model whose shapes depend on an input's value (a Reshape target, Slice starts...)
    // is specialized on the value given.
    opts.input_values.extend(file_tensors);
    let module = terafab_frontend::load_model_with(&args.model, &opts)?;
    let func = module.entry().ok_or_else(|| CliError::NoFunction {
        path: args.model.clone(),
    })?;
    // `--dim`s the import consumed are not dims of the function any more.
    let open_dims = inputs::symbolic_dims(func);
    let dims: Vec<(String, usize)> = if open_dims.is_empty() {
        Vec::new()
    } else {
        args.shapes.dims.clone()
    };
    let random = args.random_inputs.then_some(RandomSpec {
        seed: args.seed,
        dims: &dims,
    });
    // Inputs the model was specialized on are part of it now.
    let params: Vec<&str> = func.inputs().iter().map(|&v| func.values.name(v)).collect();
    let (files, specialized): (Vec<_>, Vec<_>) =
        args.inputs.iter().cloned().partition(|(name, _)| {
            params.contains(&name.as_str()) || func.values.lookup(name).is_none()
        });
    // Files were read once above; their tensors are in `opts.input_values`.
    let inputs = inputs::build(func, &files, &opts.input_values, random)?;
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(CliError::Stdout);

    for input in &inputs {
        let origin = match &input.origin {
            Origin::File(path) => format!("from {}", path.display()),
            Origin::Random => format!("random (seed {})", args.seed),
        };
        w(
            out,
            format!(
                "input {}: {} {origin}",
                shown(&input.name),
                type_of(&input.tensor)
            ),
        )?;
    }

    for (name, path) in &specialized {
        w(
            out,
            format!(
                "input {}: from {} (its value determines shapes: specialized into the model)",
                shown(name),
                path.display()
            ),
        )?;
    }

    let pipeline = args.tile.pipeline(&args.passes, args.backend)?;
    let tensors: Vec<Tensor> = inputs.into_iter().map(|i| i.tensor).collect();
    // With --backend auto: per kernel program run, the tier that ran and its executable (whose
    // LLVM compilation is reported once the outputs are out).
    let mut tiered: Vec<(Tier, Tiered)> = Vec::new();
    let results = match args.backend {
        Backend::Interp => {
            terafab_ir::interp::run_function(func, &tensors).map_err(|source| CliError::Interp {
                func: func.name.clone(),
                source: Box::new(source),
            })?
        }
        Backend::Kernels
        | Backend::Llvm
        | Backend::Cranelift
        | Backend::Auto
        | Backend::Tile
        | Backend::Gpu => {
            let mut module = module.clone();
            if pipeline != "none" {
                terafab_passes::run_pipeline(&mut module, &pipeline, Default::default())
                    .map_err(crate::opt::pipeline_error(&pipeline))?;
            }
            let f = module.entry().ok_or_else(|| CliError::NoFunction {
                path: args.model.clone(),
            })?;
            if args.backend == Backend::Kernels {
                terafab_passes::fuse::run_kernels(f, &tensors)?
            } else if args.backend == Backend::Tile {
                let cfg = args.tile.machine(args.trace.is_some())?;
                let (results, report) = terafab_tile::backend::run_function(&cfg, f, &tensors)?;
                w(out, report.to_string())?;
                if let Some(path) = &args.trace {
                    let json = report.trace_json().ok_or_else(|| {
                        CliError::Usage("--trace: no kernel ran on the accelerator".into())
                    })?;
                    std::fs::write(path, json).map_err(|source| CliError::WriteFile {
                        path: path.clone(),
                        source,
                    })?;
                    w(out, format!("trace: {}", path.display()))?;
                }
                results
            } else if args.backend == Backend::Auto {
                let opts = terafab_tiered::Options {
                    threads: args.threads,
                    ..Default::default()
                };
                let mut exec = |p: &KernelProgram, inputs: &[Tensor]| {
                    let backend = |e: TieredError| RunError::Backend {
                        func: f.name.clone(),
                        source: Box::new(e),
                    };
                    let exe = Tiered::compile(p, &opts).map_err(backend)?;
                    let out = exe.run(inputs).map_err(backend)?;
                    tiered.push((out.tier, exe));
                    Ok(out.tensors)
                };
                run_kernels_with(f, &tensors, &mut exec)?
            } else if args.backend == Backend::Gpu {
                let dev = terafab_gpu::open_device()?;
                w(
                    out,
                    format!(
                        "gpu: {} (compute capability {}.{})",
                        dev.name, dev.capability.0, dev.capability.1
                    ),
                )?;
                terafab_gpu::run_function(&dev, f, &tensors)?
            } else if args.backend == Backend::Cranelift {
                let opts = terafab_cranelift::Options {
                    threads: args.threads,
                };
                terafab_cranelift::run_function(f, &tensors, &opts)?
            } else {
                let opts = terafab_llvm::Options {
                    threads: args.threads,
                    ..Default::default()
                };
                terafab_llvm::run_function(f, &tensors, &opts)?
            }
        }
    };

    let names: Vec<String> = (0..results.len())
        .map(|i| match func.output_names.get(i) {
            Some(name) => name.clone(),
            None => format!("output{i}"),
        })
        .collect();
    for (name, t) in names.iter().zip(&results) {
        w(
            out,
            format!("output {}: {} {}", shown(name), type_of(t), summarize(t)),
        )?;
    }

    for (tier, exe) in &tiered {
        w(out, tier_line(*tier, exe))?;
    }

    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).map_err(|source| CliError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        for (path, (name, t)) in output_paths(dir, &names)
            .into_iter()
            .zip(names.iter().zip(&results))
        {
            terafab_ir::npy::write_npy(&path, t).map_err(|source| CliError::WriteOutput {
                name: name.clone(),
                path: path.clone(),
                source,
            })?;
            w(out, format!("wrote {}", path.display()))?;
        }
    }
    Ok(())
}

/// `tier: cranelift (code ready after 12.3 ms); LLVM: ready after 80.1 ms (later runs would use
/// it)`, or LLVM's error: waits for the background compilation.
fn tier_line(tier: Tier, exe: &Tiered) -> String {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let llvm = match exe.wait_for_llvm() {
        LlvmStatus::Ready { after } if tier == Tier::Llvm => {
            format!("LLVM's code was ready after {:.1} ms", ms(after))
        }
        LlvmStatus::Ready { after } => format!(
            "LLVM compiled in the background, ready after {:.1} ms (later runs would use it)",
            ms(after)
        ),
        LlvmStatus::Failed { error, after } => format!(
            "LLVM failed in the background after {:.1} ms: {}",
            ms(after),
            terafab_tiered::error_chain(error)
        ),
        LlvmStatus::Compiling => "LLVM still compiling".into(),
    };
    match exe.cranelift_error() {
        None => format!(
            "tier: {tier} (Cranelift's code ready after {:.1} ms); {llvm}",
            ms(exe.cranelift_after())
        ),
        Some(e) => format!(
            "tier: {tier} (Cranelift failed: {}); {llvm}",
            terafab_tiered::error_chain(e)
        ),
    }
}

/// A name as printed: as is, or quoted and escaped if it has control characters (one line per
/// input and output, whatever the model's names).
fn shown(name: &str) -> String {
    if name.chars().any(char::is_control) {
        format!("{name:?}")
    } else {
        name.to_string()
    }
}

/// `f32[4,3]`
fn type_of(t: &Tensor) -> TensorType {
    TensorType::from_static(t.dtype(), t.shape())
}

/// One `.npy` path in `dir` per output, from the sanitized names, made distinct.
fn output_paths(dir: &Path, names: &[String]) -> Vec<PathBuf> {
    let mut used = HashSet::new();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let base = sanitize_file_stem(name, i);
            let mut stem = base.clone();
            let mut n = 1;
            while !used.insert(stem.to_ascii_lowercase()) {
                stem = format!("{base}_{n}");
                n += 1;
            }
            dir.join(format!("{stem}.npy"))
        })
        .collect()
}

/// A file name stem that stays inside the output directory: ASCII letters, digits, `_`, `-` and
/// `.` are kept, anything else (`/`, `\`, NUL, spaces, ...) becomes `_`; a leading `.` becomes `_`
/// (no `..`, no hidden files); long names are cut; an empty name becomes `output<i>`.
pub fn sanitize_file_stem(name: &str, i: usize) -> String {
    const MAX_LEN: usize = 120;
    let mut s: String = name
        .chars()
        .take(MAX_LEN)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() {
        format!("output{i}")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitized_names_stay_in_the_directory() {
        assert_eq!(sanitize_file_stem("y", 0), "y");
        assert_eq!(
            sanitize_file_stem("../../etc/passwd", 0),
            "_._.._etc_passwd"
        );
        assert_eq!(sanitize_file_stem("..", 0), "_.");
        assert_eq!(sanitize_file_stem("a\0b", 0), "a_b");
        assert_eq!(sanitize_file_stem("/abs", 0), "_abs");
        assert_eq!(sanitize_file_stem("", 3), "output3");
        assert_eq!(sanitize_file_stem(&"x".repeat(1000), 0).len(), 120);
        for name in ["..", "../x", "a/../../b", ".", "\\..\\x"] {
            let s = sanitize_file_stem(name, 0);
            assert!(
                !s.contains('/') && !s.contains('\\') && !s.starts_with('.'),
                "{s}"
            );
        }
    }

    #[test]
    fn names_print_on_one_line() {
        assert_eq!(shown("y"), "y");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
    }

    #[test]
    fn output_paths_are_distinct() {
        let names: Vec<String> = ["a/b", "a_b", "A_B", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let paths = output_paths(Path::new("out"), &names);
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            shown,
            [
                "out/a_b.npy",
                "out/a_b_1.npy",
                "out/A_B_2.npy",
                "out/output3.npy"
            ]
        );
    }
}
