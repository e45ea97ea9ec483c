//! Running the rules to saturation (or to a limit), and what the run did.

use std::fmt;
use std::time::Duration;

use egg::{Runner, StopReason};

use super::analysis::{TfGraph, TypeAnalysis};
use super::language::TfNode;
use super::rules::TfRewrite;

/// The runner's limits, whichever comes first. The defaults keep one function's saturation
/// within about two seconds on model-sized graphs (a ResNet-50 has ~500 top-level nodes, a few
/// thousand e-nodes after saturation); the identities and movement rules saturate long before
/// them, while the merges and constant rules can grow the e-graph, so the node limit is the one
/// that bounds memory (50 000 e-nodes are a few MB).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Stop when the e-graph has more e-nodes than this (default 50 000).
    pub nodes: usize,
    /// Stop after this many iterations (default 32).
    pub iterations: usize,
    /// Stop after this much time (default 2 s).
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nodes: 50_000,
            iterations: 32,
            time: Duration::from_secs(2),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Report {
    pub iterations: usize,
    pub enodes: usize,
    pub eclasses: usize,
    /// Why it stopped (`saturated`, or the limit reached).
    pub stop: String,
    /// How many times each rule was applied, by name (rules that fired only).
    pub applied: Vec<(String, usize)>,
    /// How the graph was extracted (set by the pass; `None` when nothing was extracted).
    pub extraction: Option<String>,
    /// The DAG cost of the extracted graph in ns (see [`super::extract::dag_cost`]).
    pub cost: Option<f64>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "eqsat: {} iterations, {} e-nodes, {} e-classes, stopped: {}",
            self.iterations, self.enodes, self.eclasses, self.stop
        )?;
        if let Some(e) = &self.extraction {
            write!(f, "; extraction: {e}")?;
        }
        for (name, n) in &self.applied {
            write!(f, "\n  {name}: {n}")?;
        }
        Ok(())
    }
}

/// Run `rules` over `egraph` within `limits`; returns the saturated e-graph and the report.
pub fn saturate(egraph: TfGraph, rules: &[TfRewrite], limits: &Limits) -> (TfGraph, Report) {
    let runner: Runner<TfNode, TypeAnalysis> = Runner::default()
        .with_egraph(egraph)
        .with_node_limit(limits.nodes)
        .with_iter_limit(limits.iterations)
        .with_time_limit(limits.time)
        .run(rules);
    let stop = match &runner.stop_reason {
        Some(StopReason::Saturated) => "saturated".to_string(),
        Some(StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(StopReason::TimeLimit(t)) => format!("time limit ({t:.3} s)"),
        Some(StopReason::Other(s)) => s.clone(),
        None => "not run".to_string(),
    };
    let mut applied: Vec<(String, usize)> = Vec::new();
    for it in &runner.iterations {
        for (name, &n) in &it.applied {
            match applied.iter_mut().find(|(a, _)| a == name.as_str()) {
                Some((_, total)) => *total += n,
                None => applied.push((name.to_string(), n)),
            }
        }
    }
    let report = Report {
        iterations: runner.iterations.len(),
        enodes: runner.egraph.total_number_of_nodes(),
        eclasses: runner.egraph.number_of_classes(),
        stop,
        applied,
        extraction: None,
        cost: None,
    };
    (runner.egraph, report)
}
