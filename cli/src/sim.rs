//! `terafab sim`: run a tile-accelerator program (assembly text or binary) on the simulator and
//! print its report; inputs from `.npy` files, outputs summarized and optionally saved.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use terafab_ir::{DType, Tensor};
use terafab_tile::numerics::Rounding;
use terafab_tile::{Config, ElemType, Program, Role, Simulator};

use crate::error::CliError;

pub const SIM_EXAMPLES: &str = "\
EXAMPLES:
  # A tile matmul on one node, its report and a Perfetto trace
  terafab sim backends/tile/examples/matmul.tasm --config 1x1 --trace trace.json

  # A 2x2 chip with slower HBM, an input from a file, the outputs saved as .npy
  terafab sim prog.tasm --config 2x2 --set hbm_bytes_per_cycle=200 --input X=x.npy --output-dir out

  # A machine from a config file (`preset = \"4x4\"` plus `key = value` lines), timing only
  terafab sim prog.tbin --config machine.cfg --timing-only";

#[derive(Debug, Args)]
pub struct SimArgs {
    /// The program: assembly text (`.tasm`) or the binary form (recognized by its magic bytes)
    program: PathBuf,
    /// A preset (`1x1`, `2x2`, `4x4`, `d1`) or a config file of `key = value` lines
    #[arg(long, default_value = "1x1", value_name = "PRESET|FILE")]
    config: String,
    /// Override one config key (repeatable), e.g. `--set hop_cycles=6`
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Load an HBM buffer (role input or inout) from an .npy file (repeatable). f32 arrays are
    /// rounded to nearest even into the buffer's type; a bf16 buffer also takes bf16 arrays
    /// bit-exactly. Input buffers not given start as zeros.
    #[arg(long = "input", value_name = "NAME=FILE.npy", value_parser = crate::parse_input_spec)]
    inputs: Vec<(String, PathBuf)>,
    /// Save every output buffer (role output or inout) as NAME.npy here, decoded to f32
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Write a Chrome trace-event JSON file (one track per engine per node; open in Perfetto)
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Skip the arithmetic: timing and the report only (outputs are not computed)
    #[arg(long)]
    timing_only: bool,
}

/// `KEY=VALUE`: split at the first `=`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

/// The machine of `sim`: [`machine`] with its flags.
fn config(args: &SimArgs) -> Result<Config, CliError> {
    machine(
        &args.config,
        &args.set,
        args.timing_only,
        args.trace.is_some(),
    )
}

/// A tile machine: a preset name, else a config file; then the `--set` overrides;
/// `timing_only` and `trace` switched on when asked.
pub fn machine(
    config: &str,
    set: &[(String, String)],
    timing_only: bool,
    trace: bool,
) -> Result<Config, CliError> {
    let mut cfg = match Config::preset(config) {
        Ok(c) => c,
        Err(preset_err) => {
            let path = Path::new(config);
            if !path.is_file() {
                return Err(CliError::Usage(format!(
                    "--config `{config}` is neither a preset nor a file: {preset_err}"
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| CliError::ReadFile {
                path: path.to_path_buf(),
                source: e,
            })?;
            Config::from_text(&text).map_err(|source| CliError::TileConfig {
                name: config.to_string(),
                source,
            })?
        }
    };
    for (key, value) in set {
        cfg.set(key, value)
            .map_err(|e| CliError::Usage(format!("--set {key}={value}: {e}")))?;
    }
    cfg.timing_only |= timing_only;
    cfg.trace |= trace;
    cfg.validate().map_err(|source| CliError::TileConfig {
        name: config.to_string(),
        source,
    })?;
    Ok(cfg)
}

fn load_program(path: &Path) -> Result<Program, CliError> {
    let bytes = std::fs::read(path).map_err(|e| CliError::ReadFile {
        path: path.to_path_buf(),
        source: e,
    })?;
    if bytes.starts_with(terafab_tile::encode::MAGIC) {
        return Program::decode(&bytes).map_err(|source| CliError::TileDecode {
            path: path.to_path_buf(),
            source,
        });
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        CliError::Usage(format!(
            "`{}` is neither a tile binary (magic TFTILE) nor UTF-8 assembly text",
            path.display()
        ))
    })?;
    Program::parse(&text).map_err(|source| CliError::TileAsm {
        path: path.to_path_buf(),
        source,
    })
}

/// The bytes of an input array in the buffer's element type.
fn input_bytes(
    name: &str,
    path: &Path,
    t: &Tensor,
    buffer: &terafab_tile::Buffer,
) -> Result<Vec<u8>, CliError> {
    let shape: Vec<u64> = t.shape().iter().map(|&d| d as u64).collect();
    let mismatch = |problem: String| CliError::InputMismatch {
        name: name.to_string(),
        path: path.to_path_buf(),
        problem,
    };
    if shape != buffer.shape {
        return Err(mismatch(format!(
            "has shape {:?} but the buffer is {}{:?}",
            shape, buffer.dtype, buffer.shape
        )));
    }
    let mut out = Vec::new();
    match (t.dtype(), buffer.dtype) {
        (DType::F32, ty) => {
            for &x in t.as_slice::<f32>().unwrap_or(&[]) {
                ty.encode_into(x, Rounding::NearestEven, &mut out);
            }
        }
        (DType::BF16, ElemType::Bf16) => {
            for x in t.as_slice::<half::bf16>().unwrap_or(&[]) {
                out.extend_from_slice(&x.to_bits().to_le_bytes());
            }
        }
        (other, ty) => {
            return Err(mismatch(format!(
                "is {other}, but a {ty} buffer takes f32 arrays{}",
                if ty == ElemType::Bf16 {
                    " or bf16 arrays"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(out)
}

pub fn run(args: &SimArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let cfg = config(args)?;
    let program = load_program(&args.program)?;
    let buffers = program.buffers.clone();
    let mut sim = Simulator::new(cfg, program).map_err(CliError::TileSim)?;
    let mut seen: Vec<&str> = Vec::new();
    for (name, path) in &args.inputs {
        if seen.contains(&name.as_str()) {
            return Err(CliError::DuplicateInput { name: name.clone() });
        }
        seen.push(name);
        let loadable: Vec<&str> = buffers
            .iter()
            .filter(|b| matches!(b.role, Role::Input | Role::InOut))
            .map(|b| b.name.as_str())
            .collect();
        let Some(buffer) = buffers
            .iter()
            .find(|b| &b.name == name && matches!(b.role, Role::Input | Role::InOut))
        else {
            return Err(CliError::Usage(format!(
                "--input names `{name}`, which is not an input buffer of the program (its inputs: {})",
                if loadable.is_empty() {
                    "none".to_string()
                } else {
                    loadable.join(", ")
                }
            )));
        };
        let t = terafab_ir::npy::read_npy(path).map_err(|e| CliError::ReadInput {
            name: name.clone(),
            path: path.clone(),
            source: e,
        })?;
        let bytes = input_bytes(name, path, &t, buffer)?;
        sim.load_hbm(name, &bytes).map_err(CliError::TileSim)?;
    }
    let report = sim.run().map_err(CliError::TileSim)?;
    let w = |e| CliError::Stdout(e);
    writeln!(out, "{report}").map_err(w)?;
    if let Some(path) = &args.trace {
        report.write_trace(path).map_err(|e| CliError::WriteFile {
            path: path.clone(),
            source: e,
        })?;
        writeln!(out, "trace: {}", path.display()).map_err(w)?;
    }
    if args.timing_only {
        return Ok(());
    }
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).map_err(|source| CliError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    }
    for b in buffers
        .iter()
        .filter(|b| matches!(b.role, Role::Output | Role::InOut))
    {
        let values = sim.read_hbm_f32(&b.name).map_err(CliError::TileSim)?;
        let shape: Vec<usize> = b.shape.iter().map(|&d| d as usize).collect();
        let t = Tensor::from_vec(shape, values)
            .map_err(|e| CliError::Usage(format!("output `{}`: {e}", b.name)))?;
        writeln!(out, "{}: {}", b.name, crate::summary::summarize(&t)).map_err(w)?;
        if let Some(dir) = &args.output_dir {
            let path = dir.join(format!("{}.npy", b.name));
            terafab_ir::npy::write_npy(&path, &t).map_err(|source| CliError::WriteOutput {
                name: b.name.clone(),
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}
