//! Equality saturation over the top-level region of a function, with [egg].
//!
//! The pass translates the function's top-level nodes into an e-graph ([`language`]: one
//! e-node per single-result op, graph inputs and the results of multi-result and region ops as
//! opaque leaves; [`analysis`]: the type of every e-class), runs the rewrite rules (tables by
//! family: [`rules`], [`algebra`], [`folding`], [`merge`], [`composite`]) within
//! [`run::Limits`], extracts the cheapest equivalent graph by a target-aware cost model
//! ([`extract`]: greedy by default, or exact within a budget) and rebuilds the function's
//! top-level nodes from it. The pass `eqsat` runs every rule, `eqsat-exact` only the exact ones
//! (bitwise the same results), `eqsat-dag` every rule with exact (DAG-optimal) extraction. Opaque nodes are kept as they are (their regions
//! untouched, outer values they use rewired); a value that stays computed by the same e-class
//! keeps its id and name, function results first. Nodes are emitted in operand-first order from
//! the results and the opaque nodes (a constant moves next to its first use), and nodes no
//! result needs are dropped. When no rule applied, the function is left as it is.
//!
//! A function the translation cannot handle (a node whose declared type differs from the
//! type rule's, an opaque result the extracted graph needs before its node) is left unchanged.
//! Each function's run (iterations, e-nodes, e-classes, stop reason, rules applied, extraction)
//! is reported under `terafab opt --time-passes`; set `TERAFAB_EQSAT_REPORT=1` to also print it
//! on stderr.

pub mod algebra;
pub mod analysis;
pub mod composite;
pub mod extract;
pub mod folding;
pub mod language;
pub mod merge;
pub mod rules;
pub mod run;

use std::collections::{HashMap, HashSet};

use egg::{Id, Language};
use terafab_ir::{Function, Node, ValueId};

use crate::util::{region_uses, replace_in_region};
use crate::{Pass, PassError};
use analysis::{Meaning, TfGraph, TypeAnalysis};
use extract::{Extraction, Target};
use language::translatable;
use run::{Limits, Report};

/// The environment variable that makes the pass print its reports.
pub const REPORT_ENV: &str = "TERAFAB_EQSAT_REPORT";

/// The pass: all rules (or the named ones) within the default limits.
#[derive(Debug, Clone, Default)]
pub struct Eqsat {
    /// The rules to run, by name; `None` runs every rule (of [`rules::RULE_SETS`]).
    pub rules: Option<Vec<String>>,
    /// Run only the exact rules (of those named): the pass `eqsat-exact`.
    pub exact_only: bool,
    pub limits: Limits,
    /// The machine the cost model estimates for.
    pub target: Target,
    /// Greedy (the default) or exact extraction.
    pub extraction: Extraction,
}

impl Eqsat {
    /// The pass restricted to the named rules (see [`rules::all_rules`]), exact or not.
    pub fn with_rules(names: &[&str]) -> Self {
        Eqsat {
            rules: Some(names.iter().map(|s| s.to_string()).collect()),
            ..Eqsat::default()
        }
    }

    /// Every exact rule: the pass `eqsat-exact`.
    pub fn exact() -> Self {
        Eqsat {
            exact_only: true,
            ..Eqsat::default()
        }
    }

    /// Every rule, with exact extraction within the default budget: the pass `eqsat-dag`.
    pub fn dag() -> Self {
        Eqsat {
            extraction: Extraction::Exact(extract::ExactBudget::default()),
            ..Eqsat::default()
        }
    }

    /// Run the pass on `f`; returns the saturation report, or `None` when the function was
    /// left alone (nothing to translate, or a graph the translation cannot handle).
    pub fn run_with_report(&self, f: &mut Function) -> Result<Option<Report>, PassError> {
        let rules = rules::rewrites(self.rules.as_deref(), self.exact_only).map_err(|message| {
            PassError::Failed {
                pass: self.pass_name().into(),
                func: f.name.clone(),
                message,
            }
        })?;
        let Some(t) = Translation::new(f) else {
            return Ok(None);
        };
        folding::clear_cache();
        let (egraph, mut report) = run::saturate(t.egraph, &rules, &self.limits);
        folding::clear_cache();
        // No rule applied: the extracted graph is the original, up to order and dead nodes.
        if report.applied.is_empty() {
            return Ok(Some(report));
        }
        let roots = roots(f, &t.class_of);
        let choices = extract::choose(&egraph, &self.target, &roots, &self.extraction);
        report.extraction = Some(format!(
            "{}, DAG cost {:.1} us",
            choices.note,
            choices.cost / 1000.0
        ));
        report.cost = Some(choices.cost);
        if let Some((nodes, results)) = rebuild(f, &egraph, &t.class_of, &t.translated, &choices) {
            f.body.nodes = nodes;
            f.body.results = results;
        }
        Ok(Some(report))
    }

    fn pass_name(&self) -> &'static str {
        match (self.exact_only, &self.extraction) {
            (true, _) => "eqsat-exact",
            (false, Extraction::Exact(_)) => "eqsat-dag",
            (false, Extraction::Greedy) => "eqsat",
        }
    }
}

impl Pass for Eqsat {
    fn name(&self) -> &'static str {
        self.pass_name()
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        Ok(self.run_reported(f)?.0)
    }

    fn run_reported(&self, f: &mut Function) -> Result<(bool, Option<String>), PassError> {
        let before = (f.body.nodes.clone(), f.body.results.clone());
        let report = self.run_with_report(f)?.map(|r| r.to_string());
        if let Some(report) = &report
            && std::env::var_os(REPORT_ENV).is_some()
        {
            eprintln!("@{}: {report}", f.name);
        }
        let changed = before != (f.body.nodes.clone(), f.body.results.clone());
        Ok((changed, report))
    }
}

/// The e-classes the rebuilt function needs: its results, the operands of opaque nodes and the
/// outer values their regions use.
fn roots(f: &Function, class_of: &HashMap<ValueId, Id>) -> Vec<Id> {
    let mut values: Vec<ValueId> = f.body.results.clone();
    for node in &f.body.nodes {
        let opaque = node.outputs.len() != 1 || !node.regions.is_empty() || !translatable(&node.op);
        if opaque {
            values.extend(node.inputs.iter().copied());
            for r in &node.regions {
                region_uses(r, &mut values);
            }
        }
    }
    values
        .iter()
        .filter_map(|v| class_of.get(v).copied())
        .collect()
}

/// The e-graph of a function's top level.
struct Translation {
    egraph: TfGraph,
    /// The e-class of every top-level value (parameters included).
    class_of: HashMap<ValueId, Id>,
    /// The values defined by translated nodes, in order.
    translated: Vec<ValueId>,
}

impl Translation {
    fn new(f: &Function) -> Option<Translation> {
        let single = |n: &Node| n.outputs.len() == 1 && n.regions.is_empty() && translatable(&n.op);
        if !f.body.nodes.iter().any(single) {
            return None;
        }
        let mut egraph = TfGraph::new(TypeAnalysis::default());
        let mut class_of = HashMap::new();
        let mut translated = Vec::new();
        let leaf = |egraph: &mut TfGraph, v: ValueId| {
            let n = egraph.analysis.leaf(v, f.values.name(v), f.values.ty(v));
            egraph.add(n)
        };
        for &p in f.inputs() {
            class_of.insert(p, leaf(&mut egraph, p));
        }
        for node in &f.body.nodes {
            if let (true, &[out]) = (single(node), node.outputs.as_slice()) {
                let children: Vec<Id> = node
                    .inputs
                    .iter()
                    .map(|v| class_of.get(v).copied())
                    .collect::<Option<_>>()?;
                let n = egraph.analysis.node(&node.op, children);
                let id = egraph.add(n);
                if egraph[id].data.as_ref() != Some(f.values.ty(out)) {
                    return None;
                }
                class_of.insert(out, id);
                translated.push(out);
            } else {
                for &out in &node.outputs {
                    class_of.insert(out, leaf(&mut egraph, out));
                }
            }
        }
        egraph.rebuild();
        Some(Translation {
            egraph,
            class_of,
            translated,
        })
    }
}

/// Rebuild the top-level nodes and results of `f` from the cheapest nodes of `egraph`;
/// `None` when that is impossible (an opaque value needed before its node).
fn rebuild(
    f: &mut Function,
    egraph: &TfGraph,
    class_of: &HashMap<ValueId, Id>,
    translated: &[ValueId],
    choices: &extract::Choices,
) -> Option<(Vec<Node>, Vec<ValueId>)> {
    // Which original value each e-class reuses: function results first, then in order.
    let mut reuse: HashMap<Id, ValueId> = HashMap::new();
    let results = f.body.results.clone();
    let translated_set: HashSet<ValueId> = translated.iter().copied().collect();
    for &v in results
        .iter()
        .filter(|v| translated_set.contains(v))
        .chain(translated)
    {
        reuse.entry(egraph.find(class_of[&v])).or_insert(v);
    }
    let locs: HashMap<ValueId, String> = f
        .body
        .nodes
        .iter()
        .filter_map(|n| Some((*n.outputs.first()?, n.name.clone()?)))
        .collect();
    let old_nodes = std::mem::take(&mut f.body.nodes);
    let mut b = Builder {
        f,
        egraph,
        choices,
        memo: HashMap::new(),
        reuse,
        locs,
        available: HashSet::new(),
        nodes: Vec::new(),
    };
    b.available.extend(b.f.inputs().iter().copied());
    let out = b.build_all(&old_nodes, class_of, &results);
    let new_nodes = std::mem::take(&mut b.nodes);
    f.body.nodes = old_nodes;
    out.map(|results| (new_nodes, results))
}

/// Materializes e-classes as nodes, each once.
struct Builder<'a, 'f> {
    f: &'f mut Function,
    egraph: &'a TfGraph,
    choices: &'a extract::Choices,
    /// The value of every materialized e-class.
    memo: HashMap<Id, ValueId>,
    reuse: HashMap<Id, ValueId>,
    locs: HashMap<ValueId, String>,
    /// Leaf values defined so far (inputs, results of opaque nodes emitted).
    available: HashSet<ValueId>,
    nodes: Vec<Node>,
}

impl Builder<'_, '_> {
    /// Emit the opaque nodes in order (with what they need first), then what the results need.
    fn build_all(
        &mut self,
        old: &[Node],
        class_of: &HashMap<ValueId, Id>,
        results: &[ValueId],
    ) -> Option<Vec<ValueId>> {
        for node in old {
            let opaque =
                node.outputs.len() != 1 || !node.regions.is_empty() || !translatable(&node.op);
            if !opaque {
                continue;
            }
            let mut new = node.clone();
            for v in &mut new.inputs {
                *v = self.value(*class_of.get(v)?)?;
            }
            // Outer values the regions use: materialized first, uses rewired.
            let mut captured = Vec::new();
            for r in &node.regions {
                region_uses(r, &mut captured);
            }
            let mut map = HashMap::new();
            for v in captured {
                if let Some(&c) = class_of.get(&v) {
                    let w = self.value(c)?;
                    if w != v {
                        map.insert(v, w);
                    }
                }
            }
            for r in &mut new.regions {
                replace_in_region(r, &map);
            }
            self.available.extend(node.outputs.iter().copied());
            self.nodes.push(new);
        }
        results
            .iter()
            .map(|v| self.value(*class_of.get(v)?))
            .collect()
    }

    /// The value of e-class `root`, emitting the nodes it needs (iteratively, post-order).
    fn value(&mut self, root: Id) -> Option<ValueId> {
        let root = self.egraph.find(root);
        let mut stack = vec![(root, false)];
        while let Some((c, expanded)) = stack.pop() {
            if self.memo.contains_key(&c) {
                continue;
            }
            // A class without a choice (not among the roots' needs): give up.
            let node = self.choices.nodes.get(&c)?.clone();
            let children: Vec<Id> = node
                .children()
                .iter()
                .map(|&k| self.egraph.find(k))
                .collect();
            if !expanded {
                stack.push((c, true));
                // Reversed, so the first operand is emitted first (the original order).
                stack.extend(
                    children
                        .iter()
                        .rev()
                        .filter(|k| !self.memo.contains_key(k))
                        .map(|&k| (k, false)),
                );
                continue;
            }
            let v = match self.egraph.analysis.meaning(&node)? {
                Meaning::Leaf(v, _) => self.available.contains(&v).then_some(v)?,
                Meaning::Op(op) => {
                    // A child still missing means a cycle: give up.
                    let inputs: Vec<ValueId> = children
                        .iter()
                        .map(|k| self.memo.get(k).copied())
                        .collect::<Option<_>>()?;
                    let out = match self.reuse.get(&c) {
                        Some(&v) => v,
                        None => self.f.values.add("", self.egraph[c].data.clone()?),
                    };
                    self.nodes.push(Node {
                        op,
                        inputs,
                        outputs: vec![out],
                        regions: vec![],
                        name: self.locs.get(&out).cloned(),
                    });
                    out
                }
            };
            self.memo.insert(c, v);
        }
        self.memo.get(&root).copied()
    }
}
