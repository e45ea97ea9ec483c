//! The conformance runner: runs the ONNX backend test cases (model.onnx plus
//! `test_data_set_*/input_*.pb` and `output_*.pb`, written by `scripts/onnx-testdata.sh`) on a
//! backend and classifies each case as
//!
//! - **pass**: every output has the expected type and shape, and every element is within
//!   `atol + rtol * |expected|` (ONNX's defaults: rtol 1e-3, atol 1e-7, or the case's own
//!   tolerance from the manifest; NaN matches NaN, infinities match exactly; integers and
//!   bools exactly);
//!   One widening, for bf16 outputs only: rtol is at least [`BF16_RTOL`] (2^-5, 8 bf16 ulps of
//!   the value's binade), because the reference values round every partial sum to bf16 (numpy
//!   accumulating in bf16) while the interpreter accumulates in f64 and rounds once; on the bf16
//!   attention cases the two differ by up to 4 ulps (1.4%), and ONNX's rtol 1e-3 is finer than
//!   one bf16 ulp (2^-8 relative at best);
//! - **fail**: wrong numbers (the report names the worst element), a wrong type or shape, or a
//!   run-time error;
//! - **unsupported**: the frontend refused the model (its error names the node, op and opset),
//!   or the case uses values terafab does not model (sequences, optionals, strings).
//!
//! Each backend has an expectations list (`testsuite/expectations/BACKEND.txt`) naming the cases
//! that must pass; [`compare_expectations`] reports regressions and new passes.
//!
//! [`Optimized`] wraps a backend with a pipeline of graph passes run before it: the passes must
//! keep the backend's expectations (the interpreter's list is checked with `dce` and later
//! pipelines in `tests/conformance_passes.rs`).

pub mod expectations;

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prost::Message;
use regex::Regex;
use terafab_frontend::onnx::proto::{TensorProto, type_proto};
use terafab_frontend::onnx::tensor::read_tensor;
use terafab_frontend::onnx::{ImportOptions, decode_model, import_model};
use terafab_ir::{Module, Tensor};

pub use expectations::{Comparison, compare_expectations, read_expectations, write_expectations};

/// The case sets run by default (`light` holds full-size networks: too slow for the interpreter
/// in every test run).
pub const DEFAULT_SETS: &[&str] = &["node", "simple", "pytorch-operator", "pytorch-converted"];

/// ONNX's default tolerances.
pub const DEFAULT_RTOL: f64 = 1e-3;
pub const DEFAULT_ATOL: f64 = 1e-7;
/// The least rtol for bf16 outputs (see the module docs for why).
pub const BF16_RTOL: f64 = 0.03125;

/// Where `scripts/onnx-testdata.sh` writes the cases (`$TERAFAB_ONNX_CASES`, else
/// `$TERAFAB_CACHE/onnx-cases-1.23.2`, else `~/.cache/terafab/onnx-cases-1.23.2`).
pub fn default_cases_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TERAFAB_ONNX_CASES") {
        return PathBuf::from(d);
    }
    let cache = std::env::var_os("TERAFAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/terafab")
        });
    cache.join("onnx-cases-1.23.2")
}

/// One test case on disk.
#[derive(Debug, Clone)]
pub struct Case {
    pub set: String,
    pub name: String,
    pub dir: PathBuf,
    pub rtol: f64,
    pub atol: f64,
}

impl Case {
    /// `set/name`, as written in expectations lists.
    pub fn id(&self) -> String {
        format!("{}/{}", self.set, self.name)
    }
}

/// Errors finding cases.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(
        "no conformance cases at {0}: run scripts/onnx-testdata.sh first (it writes them there)"
    )]
    NoCases(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Manifest { path: PathBuf, message: String },
}

/// The cases of `sets` under `root` whose `set/name` matches `filter`, sorted by id.
pub fn discover(
    root: &Path,
    sets: &[&str],
    filter: Option<&Regex>,
) -> Result<Vec<Case>, SuiteError> {
    let tolerances = read_tolerances(root)?;
    let mut cases = Vec::new();
    for set in sets {
        let dir = root.join(set);
        if !dir.is_dir() {
            return Err(SuiteError::NoCases(dir));
        }
        let entries = std::fs::read_dir(&dir).map_err(|source| SuiteError::Io {
            path: dir.clone(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| SuiteError::Io {
                path: dir.clone(),
                source,
            })?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.path().join("model.onnx").is_file() {
                continue;
            }
            let id = format!("{set}/{name}");
            if filter.is_some_and(|f| !f.is_match(&id)) {
                continue;
            }
            let (rtol, atol) = tolerances
                .get(&id)
                .copied()
                .unwrap_or((DEFAULT_RTOL, DEFAULT_ATOL));
            cases.push(Case {
                set: set.to_string(),
                name,
                dir: e.path(),
                rtol,
                atol,
            });
        }
    }
    cases.sort_by_key(Case::id);
    Ok(cases)
}

/// Per-case tolerances from the generator's manifest (absent manifest: defaults everywhere).
fn read_tolerances(root: &Path) -> Result<HashMap<String, (f64, f64)>, SuiteError> {
    let path = root.join("manifest.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(HashMap::new());
    };
    let bad = |message: String| SuiteError::Manifest {
        path: path.clone(),
        message,
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let cases = v
        .get("cases")
        .and_then(|c| c.as_array())
        .ok_or_else(|| bad("no `cases` list".into()))?;
    let mut out = HashMap::new();
    for c in cases {
        let (Some(set), Some(name)) = (c["set"].as_str(), c["name"].as_str()) else {
            continue;
        };
        let rtol = c["rtol"].as_f64().unwrap_or(DEFAULT_RTOL);
        let atol = c["atol"].as_f64().unwrap_or(DEFAULT_ATOL);
        out.insert(format!("{set}/{name}"), (rtol, atol));
    }
    Ok(out)
}

/// Something that runs a model: the reference interpreter or a compiled backend.
pub trait Backend: Sync {
    fn name(&self) -> &str;
    /// Run the module's entry function on the inputs; errors are reported as failures.
    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;
    /// The least `(rtol, atol)` this backend's outputs are held to against the expected
    /// outputs, when its numerics are coarser than the case's tolerance (narrow operands);
    /// `None`: the case's own.
    fn tolerance(&self) -> Option<(f64, f64)> {
        None
    }
}

/// The reference interpreter as a backend.
pub struct Interpreter;

impl Backend for Interpreter {
    fn name(&self) -> &str {
        "interp"
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let f = m.entry().ok_or("the module has no function")?;
        terafab_ir::interp::run_function(f, &inputs).map_err(|e| error_chain(&e))
    }
}

/// The kernel IR: the entry function is fused into kernels (`terafab_passes::fuse`, symbolic
/// dims bound from the inputs' shapes, data-dependent shapes by running in segments, see
/// `run_kernels`), each kernel program is verified and run by the kernel interpreter. Every lowering step of fusion is checked this way against the graph.
pub struct Kernels;

impl Backend for Kernels {
    fn name(&self) -> &str {
        "kernels"
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let f = m.entry().ok_or("the module has no function")?;
        terafab_passes::fuse::run_kernels(f, &inputs).map_err(|e| error_chain(&e))
    }
}

/// The LLVM CPU backend (`terafab_llvm`): fused into kernels like [`Kernels`], each kernel
/// program compiled to machine code and run in this process with the given thread count.
pub struct Llvm {
    pub options: terafab_llvm::Options,
}

impl Llvm {
    /// One worker thread (the suite runs cases in parallel).
    pub fn single_threaded() -> Self {
        Llvm {
            options: terafab_llvm::Options {
                threads: 1,
                ..Default::default()
            },
        }
    }
}

impl Backend for Llvm {
    fn name(&self) -> &str {
        "llvm"
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let f = m.entry().ok_or("the module has no function")?;
        terafab_llvm::run_function(f, &inputs, &self.options).map_err(|e| error_chain(&e))
    }
}

/// The Cranelift CPU backend (`terafab_cranelift`): fused into kernels like [`Kernels`], each
/// kernel program compiled to machine code by Cranelift and run in this process with the given
/// thread count (on the runtime the LLVM backend uses).
pub struct Cranelift {
    pub options: terafab_cranelift::Options,
}

impl Cranelift {
    /// One worker thread (the suite runs cases in parallel).
    pub fn single_threaded() -> Self {
        Cranelift {
            options: terafab_cranelift::Options { threads: 1 },
        }
    }
}

impl Backend for Cranelift {
    fn name(&self) -> &str {
        "cranelift"
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let f = m.entry().ok_or("the module has no function")?;
        terafab_cranelift::run_function(f, &inputs, &self.options).map_err(|e| error_chain(&e))
    }
}

/// The GPU backend (`terafab_gpu`) on the GPU it opened: fused into kernels, each kernel
/// program compiled to PTX for the device and run there (call kernels on the host).
pub struct Gpu {
    pub device: std::sync::Arc<terafab_gpu::Device>,
}

impl Backend for Gpu {
    fn name(&self) -> &str {
        "gpu"
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let f = m.entry().ok_or("the module has no function")?;
        terafab_gpu::run_function(&self.device, f, &inputs).map_err(|e| error_chain(&e))
    }
}

/// The GPU backend's code generation without a GPU: every kernel program of the case is
/// compiled to PTX for `arch` (a kernel it cannot lower fails the case), then run by the
/// kernel interpreter. The cases this passes are the ones the GPU backend can run
/// (`expectations/gpu.txt`), checked on every machine.
pub struct GpuLowering {
    pub arch: terafab_gpu::Arch,
}

impl Backend for GpuLowering {
    fn name(&self) -> &str {
        "gpu-ptx"
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let f = m.entry().ok_or("the module has no function")?;
        let mut exec = |p: &terafab_ir::kernel::KernelProgram, inputs: &[Tensor]| {
            let backend = |e: Box<dyn std::error::Error + Send + Sync>| {
                terafab_passes::fuse::RunError::Backend {
                    func: f.name.clone(),
                    source: e,
                }
            };
            terafab_gpu::compile_ptx(p, self.arch).map_err(|e| backend(Box::new(e)))?;
            terafab_ir::kernel::interp::run_program(p, inputs).map_err(|e| backend(Box::new(e)))
        };
        terafab_passes::fuse::run_kernels_with(f, &inputs, &mut exec).map_err(|e| error_chain(&e))
    }
}

/// The tile backend (`terafab_tile::backend`): fused into kernels like [`Kernels`]; every
/// kernel the accelerator can run is lowered and simulated (functionally, bit-exact) on the
/// configured machine, the others run on the host by the kernel interpreter.
///
/// With `bf16`, the `precision-bf16` pass runs first (contraction operands rounded to bf16,
/// f32 sums: the backend's default mode), and the expected outputs are compared within at
/// least [`BF16_OPERANDS_RTOL`] and [`BF16_OPERANDS_ATOL`].
pub struct Tile {
    pub config: terafab_tile::Config,
    pub bf16: bool,
}

/// The least rtol against ONNX's f32 reference outputs when contraction operands are rounded
/// to bf16: a bf16 operand is within 2^-8 of its f32 value (relative), a product of two within
/// 2^-7, so a sum of products without cancellation is within 2^-7 of the f32 result; 2^-6
/// leaves room for a second contraction fed by the first (attention, conv after conv).
pub const BF16_OPERANDS_RTOL: f64 = 1.0 / 64.0;
/// The least atol in the same mode: sums of O(1) products that cancel to near zero keep an
/// absolute error of the same 2^-6 scale (the suite's inputs are mostly of magnitude ~1).
pub const BF16_OPERANDS_ATOL: f64 = 1.0 / 64.0;

impl Backend for Tile {
    fn name(&self) -> &str {
        if self.bf16 { "tile-bf16" } else { "tile" }
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let mut rounded;
        let m = if self.bf16 {
            rounded = m.clone();
            terafab_passes::run_pipeline(&mut rounded, "precision-bf16,dce", Default::default())
                .map_err(|e| format!("passes `precision-bf16,dce`: {}", error_chain(&e)))?;
            &rounded
        } else {
            m
        };
        let f = m.entry().ok_or("the module has no function")?;
        terafab_tile::backend::run_function(&self.config, f, &inputs)
            .map(|(outputs, _report)| outputs)
            .map_err(|e| error_chain(&e))
    }

    fn tolerance(&self) -> Option<(f64, f64)> {
        self.bf16
            .then_some((BF16_OPERANDS_RTOL, BF16_OPERANDS_ATOL))
    }
}

/// A backend checked against another on every run: both run, and `backend`'s outputs must
/// match `reference`'s (same types and shapes, elements within rtol [`DEFAULT_RTOL`] and atol
/// 1e-5, the slack of f32 against the interpreter's f64 accumulation); then `backend`'s
/// outputs are returned (and compared with the case's expected outputs by the runner). Where
/// the reference itself fails, only `backend` is judged. Named like `backend`.
pub struct Differential<B, R> {
    pub backend: B,
    pub reference: R,
}

impl<B: Backend, R: Backend> Backend for Differential<B, R> {
    fn name(&self) -> &str {
        self.backend.name()
    }

    fn tolerance(&self) -> Option<(f64, f64)> {
        self.backend.tolerance()
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let got = self.backend.run(m, inputs.clone())?;
        let Ok(want) = self.reference.run(m, inputs) else {
            return Ok(got);
        };
        if got.len() != want.len() {
            return Err(format!(
                "{} outputs where {} gives {}",
                got.len(),
                self.reference.name(),
                want.len()
            ));
        }
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let rtol = if w.dtype() == terafab_ir::DType::BF16 {
                BF16_RTOL
            } else {
                DEFAULT_RTOL
            };
            compare(g, w, rtol, 1e-5)
                .map_err(|e| format!("output {i} differs from {}: {e}", self.reference.name()))?;
        }
        Ok(got)
    }
}

/// A backend that first runs a pipeline of passes (`terafab_passes`, e.g. `"dce"`) over the
/// module, verifying after each pass, then hands the result to `inner`. Named
/// `INNER+PIPELINE` (`interp+dce`). A pass that fails, or leaves invalid IR, fails the case.
/// This is how every rewrite is checked against the interpreter on the whole suite.
pub struct Optimized<B> {
    pipeline: String,
    inner: B,
    name: String,
}

impl<B: Backend> Optimized<B> {
    /// Wrap `inner`; the pipeline is parsed here, so an unknown pass is reported at once.
    pub fn new(pipeline: &str, inner: B) -> Result<Self, terafab_passes::PassError> {
        terafab_passes::parse_pipeline(pipeline)?;
        let name = format!("{}+{pipeline}", inner.name());
        Ok(Optimized {
            pipeline: pipeline.to_string(),
            inner,
            name,
        })
    }

    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }
}

impl<B: Backend> Backend for Optimized<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn tolerance(&self) -> Option<(f64, f64)> {
        self.inner.tolerance()
    }

    fn run(&self, m: &Module, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let mut m = m.clone();
        terafab_passes::run_pipeline(&mut m, &self.pipeline, Default::default())
            .map_err(|e| format!("pipeline `{}`: {}", self.pipeline, error_chain(&e)))?;
        self.inner.run(&m, inputs)
    }
}

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The result of one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Unsupported(String),
}

impl Outcome {
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail(_) => "fail",
            Outcome::Unsupported(_) => "unsupported",
        }
    }
}

/// Run one case on a backend (every data set of it).
pub fn run_case(case: &Case, backend: &dyn Backend) -> Outcome {
    match run_case_inner(case, backend) {
        Ok(()) => Outcome::Pass,
        Err(o) => o,
    }
}

fn run_case_inner(case: &Case, backend: &dyn Backend) -> Result<(), Outcome> {
    let fail = |m: String| Outcome::Fail(m);
    let bytes = std::fs::read(case.dir.join("model.onnx"))
        .map_err(|e| fail(format!("reading model.onnx: {e}")))?;
    let model = decode_model(&bytes).map_err(|e| fail(format!("decoding model.onnx: {e}")))?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| fail("the model has no graph".into()))?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .collect();
    for v in inputs.iter().copied().chain(graph.output.iter()) {
        match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) if t.elem_type != 8 => {}
            Some(type_proto::Value::TensorType(_)) => {
                return Err(Outcome::Unsupported(format!(
                    "`{}` is a string tensor",
                    v.name
                )));
            }
            _ => {
                return Err(Outcome::Unsupported(format!(
                    "`{}` is not a tensor (sequence/optional/map)",
                    v.name
                )));
            }
        }
    }
    let mut data_sets: Vec<PathBuf> = std::fs::read_dir(&case.dir)
        .map_err(|e| fail(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
        })
        .collect();
    data_sets.sort();
    if data_sets.is_empty() {
        return Err(fail("no test_data_set_* directory".into()));
    }
    for ds in data_sets {
        let read = |prefix: &str, i: usize| -> Result<Tensor, Outcome> {
            let p = ds.join(format!("{prefix}_{i}.pb"));
            let b = std::fs::read(&p).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            let t =
                TensorProto::decode(&b[..]).map_err(|e| fail(format!("{}: {e}", p.display())))?;
            read_tensor(&t, None).map_err(|e| Outcome::Unsupported(format!("{prefix} {i}: {e}")))
        };
        let in_tensors = (0..inputs.len())
            .map(|i| read("input", i))
            .collect::<Result<Vec<_>, _>>()?;
        let expected = (0..graph.output.len())
            .map(|i| read("output", i))
            .collect::<Result<Vec<_>, _>>()?;
        // Shapes bind the inputs' dims; values let the model be specialized on inputs that
        // determine shapes (a Reshape's target, a Slice's starts...), as the run uses them.
        let mut opts = ImportOptions::default();
        for (v, t) in inputs.iter().zip(&in_tensors) {
            opts.input_shapes.insert(v.name.clone(), t.shape().to_vec());
            opts.input_values.insert(v.name.clone(), t.clone());
        }
        let module = import_model(&model, Some(&case.dir), &opts)
            .map_err(|e| Outcome::Unsupported(error_chain(&e)))?;
        terafab_ir::verify::verify_module(&module)
            .map_err(|e| fail(format!("imported IR is invalid: {e}")))?;
        let f = module
            .entry()
            .ok_or_else(|| fail("the module has no function".into()))?;
        // Inputs the model was specialized on are no longer parameters.
        let args: Vec<Tensor> = f
            .inputs()
            .iter()
            .map(|&p| {
                let name = f.values.name(p);
                inputs
                    .iter()
                    .position(|v| v.name == name)
                    .map(|i| in_tensors[i].clone())
                    .ok_or_else(|| {
                        fail(format!(
                            "the function takes `{name}`, which is not a graph input"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let got = backend.run(&module, args).map_err(fail)?;
        if got.len() != expected.len() {
            return Err(fail(format!(
                "{} outputs, expected {}",
                got.len(),
                expected.len()
            )));
        }
        let (rtol, atol) = match backend.tolerance() {
            Some((r, a)) => (case.rtol.max(r), case.atol.max(a)),
            None => (case.rtol, case.atol),
        };
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            compare(g, e, rtol, atol)
                .map_err(|m| fail(format!("output {i} (`{}`): {m}", graph.output[i].name)))?;
        }
    }
    Ok(())
}

/// Compare a result with the expected tensor: same dtype and shape, elements within tolerance.
pub fn compare(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!(
            "element type {} where {} was expected",
            got.dtype(),
            want.dtype()
        ));
    }
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} where {:?} was expected",
            got.shape(),
            want.shape()
        ));
    }
    if !want.dtype().is_float() {
        let (g, w) = (got.to_i64_vec(), want.to_i64_vec());
        if let (Some(g), Some(w)) = (g, w)
            && let Some(i) = (0..g.len()).find(|&i| g[i] != w[i])
        {
            return Err(format!(
                "{} of {} elements differ; first at {:?}: got {}, expected {}",
                (0..g.len()).filter(|&i| g[i] != w[i]).count(),
                g.len(),
                unravel(i, want.shape()),
                g[i],
                w[i]
            ));
        }
        return Ok(());
    }
    let rtol = if want.dtype() == terafab_ir::DType::BF16 {
        rtol.max(BF16_RTOL)
    } else {
        rtol
    };
    let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
    let mut worst: Option<(usize, f64)> = None;
    let mut bad = 0usize;
    for i in 0..g.len() {
        let ok = if w[i].is_nan() {
            g[i].is_nan()
        } else if w[i].is_infinite() || g[i].is_infinite() {
            g[i] == w[i]
        } else {
            (g[i] - w[i]).abs() <= atol + rtol * w[i].abs()
        };
        if !ok {
            bad += 1;
            let excess =
                if g[i].is_nan() || w[i].is_nan() || g[i].is_infinite() || w[i].is_infinite() {
                    f64::INFINITY
                } else {
                    (g[i] - w[i]).abs() / (atol + rtol * w[i].abs())
                };
            if worst.is_none_or(|(_, e)| excess > e) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => Err(format!(
            "{bad} of {} elements out of tolerance (rtol {rtol:e}, atol {atol:e}); worst at {:?}: got {}, expected {} (|diff| {:e})",
            g.len(),
            unravel(i, want.shape()),
            g[i],
            w[i],
            (g[i] - w[i]).abs()
        )),
    }
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        let n = shape[d].max(1);
        idx[d] = i % n;
        i /= n;
    }
    idx
}

/// One case's outcome and time.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub set: String,
    pub outcome: Outcome,
    pub time: Duration,
}

/// Run cases on `threads` worker threads; a panic inside a case is caught and reported as a
/// failure (it is a bug: no input may panic terafab). Results keep the order of `cases`.
pub fn run_all(
    cases: &[Case],
    backend: &dyn Backend,
    threads: usize,
    progress: bool,
) -> Vec<CaseResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; cases.len()]);
    let done = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(case) = cases.get(i) else { break };
                    let start = Instant::now();
                    let outcome = catch_unwind(AssertUnwindSafe(|| run_case(case, backend)))
                        .unwrap_or_else(|p| {
                            let msg = p
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default();
                            Outcome::Fail(format!("PANIC (a bug): {msg}"))
                        });
                    let r = CaseResult {
                        id: case.id(),
                        set: case.set.clone(),
                        outcome,
                        time: start.elapsed(),
                    };
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if progress && (n.is_multiple_of(200) || n == cases.len()) {
                        eprintln!("  {n}/{} cases", cases.len());
                    }
                    results.lock().expect("no poisoning: panics are caught")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("threads joined")
        .into_iter()
        .map(|r| r.expect("every case ran"))
        .collect()
}

/// Totals per set and category.
pub struct Summary<'a>(pub &'a [CaseResult]);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sets: Vec<&str> = self.0.iter().map(|r| r.set.as_str()).collect();
        sets.dedup();
        writeln!(
            f,
            "{:<20} {:>6} {:>6} {:>12} {:>6}",
            "set", "pass", "fail", "unsupported", "total"
        )?;
        let mut tot = [0usize; 4];
        for set in sets {
            let rs: Vec<_> = self.0.iter().filter(|r| r.set == set).collect();
            let c = |k: &str| rs.iter().filter(|r| r.outcome.kind() == k).count();
            let row = [c("pass"), c("fail"), c("unsupported"), rs.len()];
            for (t, r) in tot.iter_mut().zip(row) {
                *t += r;
            }
            writeln!(
                f,
                "{set:<20} {:>6} {:>6} {:>12} {:>6}",
                row[0], row[1], row[2], row[3]
            )?;
        }
        write!(
            f,
            "{:<20} {:>6} {:>6} {:>12} {:>6}",
            "total", tot[0], tot[1], tot[2], tot[3]
        )
    }
}

/// The per-case report: one line per case, `KIND ID [time] reason`.
pub fn report(results: &[CaseResult]) -> String {
    let mut s = String::new();
    for r in results {
        let reason = match &r.outcome {
            Outcome::Pass => String::new(),
            Outcome::Fail(m) | Outcome::Unsupported(m) => format!(" {m}"),
        };
        s.push_str(&format!(
            "{:<11} {} [{:.0} ms]{reason}\n",
            r.outcome.kind(),
            r.id,
            r.time.as_secs_f64() * 1e3
        ));
    }
    s
}
