//! Graph passes over the IR, registered by name and run as pipelines.
//!
//! A pass is one file with a type implementing [`Pass`] and one line in [`REGISTRY`].
//! [`run_pipeline`] runs a comma-separated list of passes (`"dce"`, `"dce,dce"`) over every
//! function of a module, runs the verifier before the first pass and after each, and can print
//! the IR after each. A pipeline may name a [`PIPELINES`] entry, which stands for its passes
//! (`"default"`, `"fold,default"`). [`timing_report`] formats the timings `run_pipeline` returns
//! as a table (`terafab opt --time-passes`).
//!
//! The passes: `infer-types` (recompute result types), `canonicalize` (local exact rewrites to a
//! fixed point), `fold` (constant folding through the interpreter), `cse` (common
//! subexpression elimination), `dce` (dead code elimination), `eqsat` (equality saturation with
//! rewrite rules, [`eqsat`]; `eqsat-exact` with the exact rules only, `eqsat-dag` with exact
//! extraction; not in `default` yet), `memplan` (memory planning, an
//! analysis), `precision-bf16` / `precision-cf8e4m3` / `precision-cf8e5m2` (contraction
//! operands rounded to a narrow type, [`precision`]), `autodiff` (reverse-mode gradients,
//! [`autodiff`]; its API [`autodiff::grad`] chooses the values and the output), `remat`
//! (activation checkpointing: cheap values recomputed instead of kept, [`remat`]). Helpers
//! shared by passes live in [`util`].

pub mod autodiff;
pub mod canonicalize;
pub mod cse;
mod dce;
pub mod eqsat;
pub mod fold;
pub mod fuse;
pub mod infer_types;
pub mod memplan;
pub mod precision;
pub mod remat;
mod report;
pub mod train;
pub mod util;

use std::time::{Duration, Instant};

use terafab_ir::verify::{VerifyError, verify_function};
use terafab_ir::{DType, Function, Module};

pub use memplan::{MemPlanError, MemoryPlan, plan_memory};
pub use report::timing_report;

/// A transformation of one function.
pub trait Pass {
    /// The registered name (as written in pipelines).
    fn name(&self) -> &'static str;
    /// Rewrite `f`; returns whether anything changed.
    fn run(&self, f: &mut Function) -> Result<bool, PassError>;
    /// Rewrite `f` as [`Pass::run`] does, also returning a report of what the pass did on `f`
    /// (for `--time-passes`; `eqsat` reports its saturation). Passes without a report need not
    /// implement it.
    fn run_reported(&self, f: &mut Function) -> Result<(bool, Option<String>), PassError> {
        Ok((self.run(f)?, None))
    }
}

/// A registry entry: a name, a one-line description, and a constructor.
#[derive(Debug)]
pub struct PassInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub create: fn() -> Box<dyn Pass>,
}

/// Every pass, by name. Adding a pass: one file and one line here.
pub const REGISTRY: &[PassInfo] = &[
    PassInfo {
        name: "dce",
        description: "remove nodes whose results are never used",
        create: || Box::new(dce::Dce),
    },
    PassInfo {
        name: "infer-types",
        description: "recompute every node's result types from its operands (regions included)",
        create: || Box::new(infer_types::InferTypes),
    },
    PassInfo {
        name: "canonicalize",
        description: "exact local simplifications (x+-0.0, x*1, neg(neg x), transpose of transpose, ...) to a fixed point",
        create: || Box::new(canonicalize::Canonicalize),
    },
    PassInfo {
        name: "fold",
        description: "evaluate nodes whose operands are all constants (results up to fold::FOLD_LIMIT elements)",
        create: || Box::new(fold::Fold),
    },
    PassInfo {
        name: "cse",
        description: "merge nodes with equal ops and operands (scoped by regions)",
        create: || Box::new(cse::Cse),
    },
    PassInfo {
        name: "memplan",
        description: "plan the arena offsets of intermediate tensors and check the plan (analysis: changes nothing)",
        create: || Box::new(memplan::MemPlan),
    },
    PassInfo {
        name: "eqsat",
        description: "equality saturation (egg) with every rule, exact and inexact (re-rounding floats), greedy extraction by a target cost model",
        create: || Box::new(eqsat::Eqsat::default()),
    },
    PassInfo {
        name: "fuse",
        description: "fuse into kernels and verify the kernel program (the graph is unchanged; `terafab opt` prints the kernels when a pipeline ends with it)",
        create: || Box::new(fuse::Fuse),
    },
    PassInfo {
        name: "eqsat-exact",
        description: "equality saturation with the exact rules only (results bitwise unchanged), greedy extraction",
        create: || Box::new(eqsat::Eqsat::exact()),
    },
    PassInfo {
        name: "precision-bf16",
        description: "round the operands of f32 dot_general and conv to bf16 (convert to bf16 and back): bf16 products, f32 sums",
        create: || Box::new(precision::Precision { to: DType::BF16 }),
    },
    PassInfo {
        name: "precision-cf8e4m3",
        description: "round the operands of f32 dot_general and conv to CFP8 1-4-3 (cf8e4m3) and back",
        create: || Box::new(precision::Precision { to: DType::CF8E4M3 }),
    },
    PassInfo {
        name: "precision-cf8e5m2",
        description: "round the operands of f32 dot_general and conv to CFP8 1-5-2 (cf8e5m2) and back",
        create: || Box::new(precision::Precision { to: DType::CF8E5M2 }),
    },
    PassInfo {
        name: "autodiff",
        description: "reverse-mode autodiff: a function with one float output gets the gradient of it with respect to each float input as extra outputs (grad_<input>)",
        create: || Box::new(autodiff::Autodiff),
    },
    PassInfo {
        name: "remat",
        description: "recompute cheap values (elementwise, data movement) where they are used again after more than 2 contractions instead of keeping them alive (activation checkpointing; run after cse)",
        create: || Box::new(remat::Remat::default()),
    },
    PassInfo {
        name: "eqsat-dag",
        description: "equality saturation with every rule and exact (DAG-optimal, budgeted) extraction",
        create: || Box::new(eqsat::Eqsat::dag()),
    },
];

/// Look up a registered pass.
pub fn lookup(name: &str) -> Option<&'static PassInfo> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// A named pipeline: a name usable in pipelines, a description, and the passes it stands for
/// (which may name other pipelines).
#[derive(Debug)]
pub struct PipelineInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub passes: &'static str,
}

/// Named pipelines. Their names never collide with pass names (tested).
pub const PIPELINES: &[PipelineInfo] = &[PipelineInfo {
    name: "default",
    description: "the standard cleanup: simplify, fold constants, merge duplicates, drop dead nodes",
    passes: "canonicalize,fold,cse,dce",
}];

/// Look up a named pipeline.
pub fn lookup_pipeline(name: &str) -> Option<&'static PipelineInfo> {
    PIPELINES.iter().find(|p| p.name == name)
}

/// How deep named pipelines may refer to each other (a guard against cycles).
const MAX_PIPELINE_DEPTH: usize = 8;

/// Errors of passes and pipelines.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass `{name}` (registered: {known})")]
    UnknownPass { name: String, known: String },
    #[error("pipeline `{0}` refers to named pipelines more than {MAX_PIPELINE_DEPTH} deep")]
    PipelineTooDeep(String),
    #[error("the IR is invalid before the first pass")]
    InvalidInput(#[source] Box<VerifyError>),
    #[error("empty pass name in pipeline `{0}`")]
    EmptyName(String),
    #[error("pass `{pass}` failed on @{func}: {message}")]
    Failed {
        pass: String,
        func: String,
        message: String,
    },
    #[error("the IR is invalid after pass `{pass}`")]
    Invalid {
        pass: String,
        #[source]
        source: Box<VerifyError>,
    },
}

/// A callback given the pass name and the module after that pass.
pub type AfterPass<'a> = &'a mut dyn FnMut(&str, &Module);

/// Options of [`run_pipeline`].
#[derive(Default)]
pub struct PipelineOptions<'a> {
    /// Called with the pass name and the module after every pass (`--print-ir-after-all`).
    pub after_each: Option<AfterPass<'a>>,
}

/// One run of a pass over the module: how long it took, whether it changed anything, and the
/// size of the module after it.
#[derive(Debug, Clone)]
pub struct PassTiming {
    pub name: &'static str,
    /// Wall time of the pass itself, over all functions.
    pub time: Duration,
    /// Wall time of the verifier run after the pass.
    pub verify_time: Duration,
    pub changed: bool,
    /// Nodes of the module after the pass, nested regions included.
    pub nodes: usize,
    /// The pass's reports (`@function: text`), for passes that report (see
    /// [`Pass::run_reported`]).
    pub reports: Vec<String>,
}

/// Parse a pipeline such as `"dce,dce"` or `"fold,default"` into registry entries, expanding
/// named pipelines.
pub fn parse_pipeline(text: &str) -> Result<Vec<&'static PassInfo>, PassError> {
    let mut passes = Vec::new();
    expand_pipeline(text, 0, &mut passes)?;
    Ok(passes)
}

fn expand_pipeline(
    text: &str,
    depth: usize,
    out: &mut Vec<&'static PassInfo>,
) -> Result<(), PassError> {
    if depth > MAX_PIPELINE_DEPTH {
        return Err(PassError::PipelineTooDeep(text.to_string()));
    }
    for name in text.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(PassError::EmptyName(text.to_string()));
        }
        if let Some(p) = lookup_pipeline(name) {
            expand_pipeline(p.passes, depth + 1, out)?;
            continue;
        }
        out.push(lookup(name).ok_or_else(|| {
            PassError::UnknownPass {
                name: name.to_string(),
                known: REGISTRY
                    .iter()
                    .map(|p| p.name)
                    .chain(PIPELINES.iter().map(|p| p.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        })?);
    }
    Ok(())
}

fn num_nodes(m: &Module) -> usize {
    m.functions.iter().map(Function::num_nodes).sum()
}

/// Run the passes of `pipeline` in order over every function of `m`, verifying the module
/// first and after each pass; returns one [`PassTiming`] per pass run.
pub fn run_pipeline(
    m: &mut Module,
    pipeline: &str,
    mut opts: PipelineOptions<'_>,
) -> Result<Vec<PassTiming>, PassError> {
    let passes = parse_pipeline(pipeline)?;
    // A pass is only to blame for what it breaks.
    for f in &m.functions {
        verify_function(f).map_err(|e| PassError::InvalidInput(Box::new(e)))?;
    }
    let mut timings = Vec::with_capacity(passes.len());
    for info in passes {
        let pass = (info.create)();
        let mut time = Duration::ZERO;
        let mut verify_time = Duration::ZERO;
        let mut changed = false;
        let mut reports = Vec::new();
        for f in &mut m.functions {
            let start = Instant::now();
            let (c, report) = pass.run_reported(f)?;
            changed |= c;
            reports.extend(report.map(|r| format!("@{}: {r}", f.name)));
            let ran = Instant::now();
            time += ran - start;
            verify_function(f).map_err(|source| PassError::Invalid {
                pass: info.name.to_string(),
                source: Box::new(source),
            })?;
            verify_time += ran.elapsed();
        }
        timings.push(PassTiming {
            name: info.name,
            time,
            verify_time,
            changed,
            nodes: num_nodes(m),
            reports,
        });
        if let Some(cb) = opts.after_each.as_mut() {
            cb(info.name, m);
        }
    }
    Ok(timings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_parsing() {
        assert_eq!(parse_pipeline("dce, dce").unwrap().len(), 2);
        assert!(matches!(
            parse_pipeline("dce,,dce"),
            Err(PassError::EmptyName(_))
        ));
        let e = parse_pipeline("frobnicate").unwrap_err().to_string();
        assert!(
            e.contains("unknown pass `frobnicate`") && e.contains("dce"),
            "{e}"
        );
    }

    #[test]
    fn named_pipelines_expand() {
        let names =
            |p: &str| -> Vec<&str> { parse_pipeline(p).unwrap().iter().map(|i| i.name).collect() };
        assert_eq!(names("default"), ["canonicalize", "fold", "cse", "dce"]);
        assert_eq!(
            names("fold, default"),
            ["fold", "canonicalize", "fold", "cse", "dce"]
        );
        for p in PIPELINES {
            assert!(lookup(p.name).is_none(), "`{}` names a pass too", p.name);
            parse_pipeline(p.passes).unwrap();
        }
    }

    #[test]
    fn registry_names_are_unique_and_match_passes() {
        let mut names: Vec<_> = REGISTRY.iter().map(|p| p.name).collect();
        for p in REGISTRY {
            assert_eq!((p.create)().name(), p.name);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
    }

    #[test]
    fn invalid_input_is_not_blamed_on_a_pass() {
        let mut f = Function::new("main");
        let x = f.add_input("x", terafab_ir::TensorType::scalar(terafab_ir::DType::F32));
        f.body.results.push(x); // no output name: invalid
        let mut m = Module::new(vec![f]);
        let e = run_pipeline(&mut m, "dce", PipelineOptions::default()).unwrap_err();
        assert!(matches!(e, PassError::InvalidInput(_)), "{e}");
    }
}
