//! Graph passes over the IR, registered by name and run as pipelines.
//!
//! A pass is one file with a type implementing [`Pass`] and one line in [`REGISTRY`].
//! [`run_pipeline`] runs a comma-separated list of passes (`"dce"`, `"dce,dce"`) over every
//! function of a module, runs the verifier after each pass, and can print the IR after each.

mod dce;

use std::time::{Duration, Instant};

use terafab_ir::verify::{VerifyError, verify_function};
use terafab_ir::{Function, Module};

/// A transformation of one function.
pub trait Pass {
    /// The registered name (as written in pipelines).
    fn name(&self) -> &'static str;
    /// Rewrite `f`; returns whether anything changed.
    fn run(&self, f: &mut Function) -> Result<bool, PassError>;
}

/// A registry entry: a name, a one-line description, and a constructor.
#[derive(Debug)]
pub struct PassInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub create: fn() -> Box<dyn Pass>,
}

/// Every pass, by name. Adding a pass: one file and one line here.
pub const REGISTRY: &[PassInfo] = &[PassInfo {
    name: "dce",
    description: "remove nodes whose results are never used",
    create: || Box::new(dce::Dce),
}];

/// Look up a registered pass.
pub fn lookup(name: &str) -> Option<&'static PassInfo> {
    REGISTRY.iter().find(|p| p.name == name)
}

/// Errors of passes and pipelines.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass `{name}` (registered: {known})")]
    UnknownPass { name: String, known: String },
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

/// How long each pass took and whether it changed anything.
#[derive(Debug, Clone)]
pub struct PassTiming {
    pub name: &'static str,
    pub time: Duration,
    pub changed: bool,
}

/// Parse a pipeline such as `"dce,dce"` into registry entries.
pub fn parse_pipeline(text: &str) -> Result<Vec<&'static PassInfo>, PassError> {
    text.split(',')
        .map(str::trim)
        .map(|name| {
            if name.is_empty() {
                return Err(PassError::EmptyName(text.to_string()));
            }
            lookup(name).ok_or_else(|| PassError::UnknownPass {
                name: name.to_string(),
                known: REGISTRY
                    .iter()
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        })
        .collect()
}

/// Run the passes of `pipeline` in order over every function of `m`, verifying after each.
pub fn run_pipeline(
    m: &mut Module,
    pipeline: &str,
    mut opts: PipelineOptions<'_>,
) -> Result<Vec<PassTiming>, PassError> {
    let passes = parse_pipeline(pipeline)?;
    let mut timings = Vec::with_capacity(passes.len());
    for info in passes {
        let pass = (info.create)();
        let start = Instant::now();
        let mut changed = false;
        for f in &mut m.functions {
            changed |= pass.run(f)?;
            verify_function(f).map_err(|source| PassError::Invalid {
                pass: info.name.to_string(),
                source: Box::new(source),
            })?;
        }
        timings.push(PassTiming {
            name: info.name,
            time: start.elapsed(),
            changed,
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
}
