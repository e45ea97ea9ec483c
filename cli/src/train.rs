//! `terafab train`: build the training step of a model ([`terafab_passes::train`]), compile it
//! once for a backend and loop over the batches of a dataset, keeping the parameters and the
//! optimizer states as tensors between steps; per-epoch loss, accuracy and speed (plus the
//! simulated cycles, utilization and roofline fraction on tile); the trained model written back
//! as ONNX with updated initializers.
//!
//! Batches are `--batch` consecutive rows of `--data` and `--labels` (axis 0), in order or
//! shuffled per epoch (`--shuffle`, `--seed`); a last partial batch is dropped (the step is
//! compiled for one static batch size).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use terafab_ir::{DType, Function, Tensor};
use terafab_passes::train::{
    self, AdamParams, LossKind, MomentumParams, Optimizer, Reduction, StepConfig,
};

use crate::error::CliError;
use crate::inputs::Stream;
use crate::{Backend, TileArgs};

pub const TRAIN_EXAMPLES: &str = "\
EXAMPLES:
  # Softmax cross-entropy and Adam for 5 epochs of batches of 64, compiled by LLVM
  terafab train mlp.onnx --data x.npy --labels y.npy --loss cross-entropy --optimizer adam \\
      --lr 1e-3 --batch 64 --epochs 5 --out trained.onnx

  # The same on the simulated accelerator in bf16 (f32 master weights), 200 steps at most,
  # the per-step losses written as JSON
  terafab train mlp.onnx --data x.npy --labels y.npy --optimizer adam --backend tile \\
      --config 4x4 --precision bf16 --steps 200 --log-json losses.json";

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The model (.onnx, or .tfir); its first input takes the batches
    pub model: PathBuf,
    /// The inputs, one example per row of axis 0 (.npy)
    #[arg(long, value_name = "X.npy")]
    pub data: PathBuf,
    /// The targets, one per row of axis 0 (.npy): class indices for cross-entropy and nll,
    /// values of the output's shape for mse
    #[arg(long, value_name = "Y.npy")]
    pub labels: PathBuf,
    /// mse, cross-entropy (softmax over axis 1) or nll (of log-probabilities)
    #[arg(long, default_value = "cross-entropy")]
    pub loss: String,
    /// mean or sum
    #[arg(long, default_value = "mean")]
    pub reduction: String,
    /// Targets with this class contribute no loss and are not counted
    #[arg(long, value_name = "CLASS")]
    pub ignore_index: Option<i64>,
    /// sgd, momentum, adam, adamw or adagrad
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Learning rate
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Momentum's coefficient of the old velocity
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum
    #[arg(long)]
    pub nesterov: bool,
    /// Adam's decay of the first moment
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// Adam's decay of the second moment
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// Adam's and Adagrad's epsilon
    #[arg(long, default_value_t = 1e-8)]
    pub eps: f64,
    /// Weight decay: L2 (added to the gradient) for sgd, momentum, adam and adagrad,
    /// decoupled for adamw
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Examples per step
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Passes over the data
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Stop after this many steps
    #[arg(long)]
    pub steps: Option<usize>,
    /// The trainable initializers (default: every float initializer)
    #[arg(long, value_name = "NAME,..", value_delimiter = ',')]
    pub params: Vec<String>,
    /// Which output of the model the loss is taken of
    #[arg(long, default_value_t = 0)]
    pub output: usize,
    /// Shuffle the rows every epoch
    #[arg(long)]
    pub shuffle: bool,
    /// Seed of the shuffle
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What runs the steps
    #[arg(long, value_enum, default_value_t = Backend::Llvm)]
    pub backend: Backend,
    /// Worker threads of the llvm and cranelift backends (0: one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Passes run on the step before fusion (`none`: none)
    #[arg(long, value_name = "P,P,..", default_value = "default")]
    pub passes: String,
    /// Recompute cheap activations (elementwise, data movement) in the backward pass from the
    /// kept contraction results instead of keeping them alive (activation checkpointing: the
    /// `remat` pass after the pipeline; less memory, a little more compute)
    #[arg(long)]
    pub recompute: bool,
    #[command(flatten)]
    pub tile: TileArgs,
    /// Loss scaling: a fixed scale S, or `dynamic` (from 2^16: halved and the step skipped
    /// when a gradient overflows, doubled after 200 steps without overflow)
    #[arg(long, value_name = "S|dynamic")]
    pub loss_scale: Option<String>,
    /// Write the trained model (ONNX models only)
    #[arg(long, value_name = "FILE.onnx")]
    pub out: Option<PathBuf>,
    /// Write the per-step losses (and correct counts) as JSON
    #[arg(long, value_name = "FILE")]
    pub log_json: Option<PathBuf>,
}

fn bad(msg: impl Into<String>) -> CliError {
    CliError::TrainSetup(msg.into())
}

fn optimizer(a: &TrainArgs) -> Result<Optimizer, CliError> {
    let wd = a.weight_decay;
    let adam = AdamParams {
        alpha: a.beta1,
        beta: a.beta2,
        eps: a.eps,
        norm: 0.0,
        post: 0.0,
        decoupled: 0.0,
    };
    Ok(match a.optimizer.as_str() {
        "sgd" => Optimizer::Sgd { weight_decay: wd },
        "momentum" => Optimizer::Momentum(MomentumParams {
            alpha: a.momentum,
            beta: 1.0,
            norm: wd,
            nesterov: a.nesterov,
        }),
        "adam" => Optimizer::Adam(AdamParams { norm: wd, ..adam }),
        "adamw" => Optimizer::Adam(AdamParams {
            decoupled: wd,
            ..adam
        }),
        "adagrad" => Optimizer::Adagrad {
            decay_factor: 0.0,
            epsilon: a.eps,
            norm_coefficient: wd,
        },
        o => {
            return Err(bad(format!(
                "unknown optimizer `{o}` (sgd, momentum, adam, adamw, adagrad)"
            )));
        }
    })
}

/// A compiled step.
enum Runner {
    Interp(Function),
    Kernels(terafab_ir::kernel::KernelProgram),
    Llvm(Box<terafab_llvm::Executable>),
    Cranelift(Box<terafab_cranelift::Executable>),
    /// Tiered: the first steps on Cranelift's code, the later ones on LLVM's once it is ready.
    Auto(Box<terafab_tiered::Tiered>),
    Tile(Box<(terafab_tile::Config, terafab_tile::compile::Compiled)>),
}

impl Runner {
    fn compile(a: &TrainArgs, step: &Function) -> Result<Runner, CliError> {
        let mut pipeline = a.tile.pipeline(&a.passes, a.backend)?;
        if a.backend == Backend::Interp {
            pipeline = "none".into();
        }
        if a.recompute {
            pipeline = match pipeline.as_str() {
                "none" | "" => "remat".into(),
                p => format!("{p},remat"),
            };
        }
        let mut m = terafab_ir::Module::new(vec![step.clone()]);
        if pipeline != "none" {
            terafab_passes::run_pipeline(&mut m, &pipeline, Default::default())
                .map_err(crate::opt::pipeline_error(&pipeline))?;
        }
        let f = &m.functions[0];
        if a.backend == Backend::Interp {
            return Ok(Runner::Interp(f.clone()));
        }
        let p = terafab_passes::fuse::fuse_function(f, &Default::default())
            .map_err(|e| bad(format!("fusing the step: {e}")))?;
        Ok(match a.backend {
            Backend::Interp => unreachable!("returned above"),
            Backend::Kernels => Runner::Kernels(p),
            Backend::Llvm => Runner::Llvm(Box::new(terafab_llvm::compile(
                &p,
                &terafab_llvm::Options {
                    threads: a.threads,
                    ..Default::default()
                },
            )?)),
            Backend::Cranelift => Runner::Cranelift(Box::new(terafab_cranelift::compile(
                &p,
                &terafab_cranelift::Options { threads: a.threads },
            )?)),
            Backend::Auto => Runner::Auto(Box::new(terafab_tiered::Tiered::compile(
                &p,
                &terafab_tiered::Options {
                    threads: a.threads,
                    ..Default::default()
                },
            )?)),
            Backend::Gpu => {
                return Err(CliError::Usage(
                    "`terafab train` does not run on --backend gpu yet".into(),
                ));
            }
            Backend::Tile => {
                let cfg = a.tile.machine(false)?;
                let c = terafab_tile::compile::compile_program(&cfg, &p, &Default::default());
                Runner::Tile(Box::new((cfg, c)))
            }
        })
    }

    /// The CPU backends' arena (the memory plan's peak over the step's kernels), in bytes.
    fn arena_bytes(&self) -> Option<usize> {
        match self {
            Runner::Llvm(x) => Some(x.stats().arena_bytes),
            Runner::Cranelift(x) => Some(x.stats().arena_bytes),
            Runner::Auto(x) => x.cranelift_stats().map(|s| s.arena_bytes),
            Runner::Interp(_) | Runner::Kernels(_) | Runner::Tile(_) => None,
        }
    }

    fn run(
        &self,
        ins: &[Tensor],
    ) -> Result<(Vec<Tensor>, Option<terafab_tile::backend::ModelReport>), CliError> {
        Ok(match self {
            Runner::Interp(f) => (
                terafab_ir::interp::run_function(f, ins).map_err(|source| CliError::Interp {
                    func: f.name.clone(),
                    source: Box::new(source),
                })?,
                None,
            ),
            Runner::Kernels(p) => (
                terafab_ir::kernel::interp::run_program(p, ins)
                    .map_err(|e| bad(format!("the kernel interpreter: {e}")))?,
                None,
            ),
            Runner::Llvm(x) => (x.run(ins)?, None),
            Runner::Cranelift(x) => (x.run(ins)?, None),
            Runner::Auto(x) => (x.run(ins)?.tensors, None),
            Runner::Tile(b) => {
                let (cfg, c) = &**b;
                let mut report = terafab_tile::backend::ModelReport::new(cfg);
                let outs = terafab_tile::backend::run_compiled(cfg, c, ins, &mut report)?;
                (outs, Some(report))
            }
        })
    }
}

/// The rows `rows` of `all` (`[S, rest..]`, as f64) as a `[rows.len(), rest..]` tensor.
fn gather_rows(
    all: &[f64],
    rest: &[usize],
    rows: &[usize],
    dtype: DType,
) -> Result<Tensor, CliError> {
    let n: usize = rest.iter().product();
    let mut dims = vec![rows.len()];
    dims.extend_from_slice(rest);
    Tensor::from_fn(dtype, &dims, |i| all[rows[i / n.max(1)] * n + i % n.max(1)])
        .map_err(|e| bad(format!("a batch: {e}")))
}

/// A JSON number (`null` for NaN and infinities).
fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

pub fn run(a: &TrainArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let w = |out: &mut dyn Write, line: String| writeln!(out, "{line}").map_err(CliError::Stdout);
    let loss_kind = LossKind::parse(&a.loss).ok_or_else(|| {
        bad(format!(
            "unknown loss `{}` (mse, cross-entropy, nll)",
            a.loss
        ))
    })?;
    let reduction = match Reduction::parse(&a.reduction) {
        Some(Reduction::None) | None => {
            return Err(bad(format!(
                "--reduction must be mean or sum, got `{}`",
                a.reduction
            )));
        }
        Some(r) => r,
    };
    let opt = optimizer(a)?;
    // (scale, dynamic)
    let scaling: Option<(f64, bool)> = match a.loss_scale.as_deref() {
        None => None,
        Some("dynamic") => Some((65536.0, true)),
        Some(v) => match v.parse::<f64>() {
            Ok(s) if s > 0.0 && s <= f64::from(f32::MAX) => Some((s, false)),
            _ => {
                return Err(bad(format!(
                    "--loss-scale takes a positive f32 number or `dynamic`, got `{v}`"
                )));
            }
        },
    };
    let mut scale = scaling.map_or(1.0, |s| s.0);
    let (mut good_run, mut skipped) = (0usize, 0usize);
    if a.batch == 0 {
        return Err(bad("--batch must be at least 1"));
    }
    let read = |p: &PathBuf, name: &str| {
        terafab_ir::npy::read_npy(p).map_err(|source| CliError::ReadInput {
            name: name.to_string(),
            path: p.clone(),
            source,
        })
    };
    let x = read(&a.data, "--data")?;
    let y = read(&a.labels, "--labels")?;
    let (xs, ys) = (x.shape().to_vec(), y.shape().to_vec());
    if xs.is_empty() || ys.is_empty() || xs[0] != ys[0] {
        return Err(bad(format!(
            "--data {xs:?} and --labels {ys:?} must have the same number of rows (axis 0)"
        )));
    }
    let rows = xs[0];
    if rows < a.batch {
        return Err(bad(format!(
            "--batch {} is more than the {rows} rows of the data",
            a.batch
        )));
    }

    // The ONNX model (for its initializers and for --out), and its first input's name.
    let is_onnx = a.model.extension().is_some_and(|e| e == "onnx");
    let proto = if is_onnx {
        let bytes = std::fs::read(&a.model).map_err(|source| CliError::ReadFile {
            path: a.model.clone(),
            source,
        })?;
        Some(
            terafab_frontend::onnx::decode_model(&bytes)
                .map_err(|e| bad(format!("`{}`: {e}", a.model.display())))?,
        )
    } else if a.out.is_some() {
        return Err(bad("--out writes ONNX models only"));
    } else {
        None
    };
    let mut opts = terafab_frontend::LoadOptions {
        // Initializers must stay constants of their own to be trained (not folded into others).
        fold_limit: 0,
        ..Default::default()
    };
    let mut batch_shape = vec![a.batch];
    batch_shape.extend_from_slice(&xs[1..]);
    let first_input = match &proto {
        Some(m) => {
            let g = m
                .graph
                .as_ref()
                .ok_or_else(|| bad("the model has no graph"))?;
            let inits: std::collections::HashSet<&str> =
                g.initializer.iter().map(|t| t.name.as_str()).collect();
            g.input
                .iter()
                .map(|i| i.name.clone())
                .find(|n| !inits.contains(n.as_str()))
        }
        // An IR text model: its first parameter, from a first load.
        None => terafab_frontend::load_model_with(&a.model, &opts)?
            .entry()
            .and_then(|f| f.inputs().first().map(|&v| f.values.name(v).to_string())),
    };
    if let Some(name) = &first_input {
        opts.input_shapes.insert(name.clone(), batch_shape.clone());
    }
    let module = terafab_frontend::load_model_with(&a.model, &opts)?;
    let forward = module.entry().ok_or_else(|| CliError::NoFunction {
        path: a.model.clone(),
    })?;
    if forward.inputs().len() != 1 {
        return Err(bad(format!(
            "the model takes {} inputs; training feeds exactly one (the batch)",
            forward.inputs().len()
        )));
    }
    let xty = forward.values.ty(forward.inputs()[0]).clone();
    if xty.shape.as_static().as_deref() != Some(&batch_shape[..]) {
        return Err(bad(format!(
            "the model's input is {xty}, the batches of --data are {batch_shape:?}"
        )));
    }
    let params = if !a.params.is_empty() {
        a.params.clone()
    } else if let Some(m) = &proto {
        let g = m
            .graph
            .as_ref()
            .ok_or_else(|| bad("the model has no graph"))?;
        g.initializer
            .iter()
            .filter(|t| {
                terafab_frontend::onnx::tensor::dtype_of(t.data_type).is_ok_and(|d| d.is_float())
            })
            .map(|t| t.name.clone())
            .collect()
    } else {
        train::float_constants(forward)
    };
    let cfg = StepConfig {
        output: a.output,
        loss: loss_kind,
        reduction,
        ignore_index: a.ignore_index,
        params,
        optimizer: opt,
        lr: a.lr,
        loss_scaling: scaling.is_some(),
    };
    let step = train::build_step(forward, &cfg)?;
    let lty = &step.labels;
    let lshape = lty.shape.as_static().unwrap_or_default();
    if lshape.len() != ys.len() || lshape[1..] != ys[1..] {
        return Err(bad(format!(
            "--labels rows are {:?}, the step takes labels {lty}",
            &ys[1..]
        )));
    }
    if loss_kind.classifies() && !y.dtype().is_int() {
        return Err(bad(format!(
            "--labels must be integer class indices for {}, found {}",
            a.loss,
            y.dtype()
        )));
    }

    let t0 = Instant::now();
    let runner = Runner::compile(a, &step.func)?;
    w(
        out,
        format!(
            "training {} parameter tensor(s) ({} values) of {} with {} and {}, batch {}, {:?} backend (compiled in {:.2} s)",
            step.params.len(),
            step.params
                .iter()
                .map(|(_, t)| t.shape().iter().product::<usize>())
                .sum::<usize>(),
            a.model.display(),
            a.loss,
            a.optimizer,
            a.batch,
            a.backend,
            t0.elapsed().as_secs_f64()
        ),
    )?;
    if let Some(bytes) = runner.arena_bytes() {
        let how = if a.recompute {
            ", cheap activations recomputed (--recompute)"
        } else {
            ""
        };
        w(
            out,
            format!("step memory: {:.1} KiB arena{how}", bytes as f64 / 1024.0),
        )?;
    }

    let xall = x.to_f64_vec();
    let yall = y.to_f64_vec();
    let mut params: Vec<Tensor> = step.params.iter().map(|(_, t)| t.clone()).collect();
    let mut states = step
        .initial_states()
        .map_err(|e| bad(format!("optimizer states: {e}")))?;
    let per_epoch = rows / a.batch;
    let np = params.len();
    let po = step.params_output();
    let tty = std::io::stdout().is_terminal();
    let mut log: Vec<(usize, usize, f64, Option<f64>)> = Vec::new();
    let (mut t, mut done_steps) = (0i64, 0usize);
    'epochs: for epoch in 1..=a.epochs {
        let mut order: Vec<usize> = (0..rows).collect();
        if a.shuffle {
            let s = Stream::new(a.seed, epoch as u64);
            for i in (1..rows).rev() {
                let j = (s.at(i as u64) % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        let (mut loss_sum, mut correct, mut seen, mut steps) = (0.0, 0.0, 0usize, 0usize);
        let mut cycles = 0u64;
        let (mut mx, mut vx, mut roof) = (0.0, 0.0, 0.0);
        let start = Instant::now();
        for b in 0..per_epoch {
            if a.steps.is_some_and(|s| done_steps >= s) {
                break;
            }
            done_steps += 1;
            // The optimizer's step count (skipped steps do not count).
            t += 1;
            let idx = &order[b * a.batch..(b + 1) * a.batch];
            let mut ins = vec![
                gather_rows(&xall, &xs[1..], idx, xty.dtype)?,
                gather_rows(&yall, &ys[1..], idx, lty.dtype)?,
            ];
            ins.extend(params.iter().cloned());
            ins.extend(states.iter().cloned());
            ins.push(Tensor::scalar(t));
            if scaling.is_some() {
                ins.push(Tensor::scalar(scale as f32));
            }
            let (outs, report) = runner.run(&ins)?;
            if let Some((_, dynamic)) = scaling {
                let finite = outs[po - 1].to_f64_vec()[0] != 0.0;
                if !finite {
                    skipped += 1;
                    t -= 1;
                    good_run = 0;
                    if dynamic {
                        scale /= 2.0;
                    }
                } else if dynamic {
                    good_run += 1;
                    if good_run == 200 {
                        scale *= 2.0;
                        good_run = 0;
                    }
                }
            }
            let loss = outs[0].to_f64_vec()[0];
            let c = step.counts_correct.then(|| outs[1].to_f64_vec()[0]);
            loss_sum += loss;
            correct += c.unwrap_or(0.0);
            seen += a.batch;
            steps += 1;
            if let Some(r) = report {
                let tot = r.totals();
                cycles += tot.cycles;
                mx += tot.mx_util;
                vx += tot.vx_util;
                roof += tot.achieved;
            }
            log.push((done_steps, epoch, loss, c));
            params = outs[po..po + np].to_vec();
            states = outs[po + np..].to_vec();
            if tty {
                let done = (b + 1) * 30 / per_epoch;
                write!(
                    out,
                    "\repoch {epoch}/{} [{}{}] {}/{per_epoch} loss {loss:.4}",
                    a.epochs,
                    "#".repeat(done),
                    ".".repeat(30 - done),
                    b + 1
                )
                .and_then(|()| out.flush())
                .map_err(CliError::Stdout)?;
            }
        }
        if tty {
            write!(out, "\r\x1b[2K").map_err(CliError::Stdout)?;
        }
        if steps == 0 {
            break 'epochs;
        }
        let secs = start.elapsed().as_secs_f64();
        let mut line = format!(
            "epoch {epoch}/{}: loss {:.6}",
            a.epochs,
            loss_sum / steps as f64
        );
        if step.counts_correct {
            line += &format!(", accuracy {:.2}%", 100.0 * correct / seen as f64);
        }
        line += &format!(", {steps} steps, {:.1} steps/s", steps as f64 / secs);
        if scaling.is_some() {
            line += &format!(", loss scale {scale}, {skipped} step(s) skipped so far");
        }
        if a.backend == Backend::Tile {
            let n = steps as f64;
            line += &format!(
                ", simulated {} cycles/step, mx {:.1}% vx {:.1}% utilization, roofline {:.1}%",
                cycles / steps as u64,
                100.0 * mx / n,
                100.0 * vx / n,
                100.0 * roof / n
            );
        }
        w(out, line)?;
    }

    if let Some(path) = &a.log_json {
        let mut s = format!(
            "{{\"backend\": \"{:?}\", \"loss\": \"{}\", \"optimizer\": \"{}\", \"batch\": {}, \"steps\": [\n",
            a.backend, a.loss, a.optimizer, a.batch
        );
        for (i, (t, e, l, c)) in log.iter().enumerate() {
            let c = c.map_or("null".into(), json_num);
            let sep = if i + 1 < log.len() { "," } else { "" };
            s += &format!(
                "  {{\"step\": {t}, \"epoch\": {e}, \"loss\": {}, \"correct\": {c}}}{sep}\n",
                json_num(*l)
            );
        }
        s += "]}\n";
        std::fs::write(path, s).map_err(|source| CliError::WriteFile {
            path: path.clone(),
            source,
        })?;
        w(out, format!("wrote {}", path.display()))?;
    }
    if let (Some(path), Some(m)) = (&a.out, &proto) {
        let updates: Vec<(String, Tensor)> = step
            .params
            .iter()
            .map(|(n, _)| n.clone())
            .zip(params)
            .collect();
        let bytes = terafab_frontend::onnx::export::with_initializers(m, &updates)
            .map_err(|e| bad(format!("--out: {e}")))?;
        std::fs::write(path, bytes).map_err(|source| CliError::WriteFile {
            path: path.clone(),
            source,
        })?;
        w(out, format!("wrote {}", path.display()))?;
    }
    Ok(())
}
