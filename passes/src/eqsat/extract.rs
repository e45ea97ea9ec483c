//! Extraction: which e-node computes each needed e-class, by a target-aware cost model.
//!
//! **Cost model.** The own cost of an e-node is an estimate of its run time on a [`Target`], in
//! nanoseconds: the bytes it moves over the memory bandwidth, plus its arithmetic over the peak
//! rate, plus a per-kernel overhead ([`Target::node_cost`]). Bytes moved are the operands read
//! (a `slice` reads only what it keeps) and the result written; a `reshape` is a view (no bytes,
//! [`Target::view_overhead`] instead of a kernel). Flops: `2 × result elements × contracted
//! elements` for `dot_general`, `2 × result elements × C/groups × kernel elements` for `conv`,
//! one per result element for elementwise ops (four for a division, slower than a multiply on
//! every target), one per operand element for reductions and windows. Leaves (inputs, opaque
//! values) cost nothing, and so do constants and nodes whose operands are all constants and
//! whose result is small enough for the `fold` pass to fold them ([`crate::fold::FOLD_LIMIT`]):
//! they are part of the program, and their users pay for reading them.
//!
//! **Greedy** ([`Extraction::Greedy`], the default): egg's [`Extractor`], which minimizes every
//! e-class's *tree* cost (own cost plus its operands' tree costs), so a value used twice counts
//! twice. **Exact** ([`Extraction::Exact`]): a branch-and-bound search over the e-node choices of
//! the e-classes the roots need that minimizes the *DAG* cost (every chosen e-class counted once,
//! [`dag_cost`]), started from the greedy choice as the bound, so it is never worse than greedy.
//! Within its budget ([`ExactBudget`]) the result is optimal; beyond it the best choice found
//! so far is kept (the greedy one at worst) with a note saying so.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use egg::{CostFunction, Extractor, Id, Language};
use terafab_ir::composite::{CompositeOp, Operand};
use terafab_ir::{BinaryOp, DType, Op, TensorType};

use super::analysis::{Meaning, TfGraph, op_type};
use super::language::TfNode;
use crate::fold::FOLD_LIMIT;

/// The machine the cost model estimates run times for.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Cores used by a kernel.
    pub cores: f64,
    /// Peak f32 flops per cycle per core (AVX2 with two FMA units: 2 × 8 lanes × 2 = 32).
    pub flops_per_cycle: f64,
    /// Clock rate in GHz (cycles per nanosecond).
    pub ghz: f64,
    /// Sustained memory bandwidth in bytes per nanosecond (GB/s).
    pub bandwidth: f64,
    /// Fixed cost of a kernel (a loop nest started on the cores and joined), in nanoseconds.
    pub kernel_overhead: f64,
    /// Cost of a view (`reshape` of a row-major tensor: no data moves), in nanoseconds.
    pub view_overhead: f64,
}

impl Default for Target {
    /// The development machine: 2 cores with AVX2 and FMA at 3 GHz (192 f32 GFLOP/s peak),
    /// assumed 20 GB/s of sustained memory bandwidth (a share of a server's DRAM bandwidth that
    /// a 2-core VM gets in practice), 1 µs per kernel (a fork/join over a 2-thread pool), 10 ns
    /// per view.
    fn default() -> Self {
        Target {
            cores: 2.0,
            flops_per_cycle: 32.0,
            ghz: 3.0,
            bandwidth: 20.0,
            kernel_overhead: 1000.0,
            view_overhead: 10.0,
        }
    }
}

/// Bytes assumed for a result of unknown (symbolic) size.
const UNKNOWN_BYTES: f64 = 4096.0;

fn elements(ty: Option<&TensorType>) -> Option<f64> {
    Some(ty?.shape.num_elements()? as f64)
}

fn bytes(ty: Option<&TensorType>) -> f64 {
    ty.and_then(|t| Some(elements(Some(t))? * t.dtype.size_bytes() as f64))
        .unwrap_or(UNKNOWN_BYTES)
}

/// Arithmetic of `op` with operand types `ins` and result type `out`, in flops.
fn flops(op: &Op, ins: &[Option<TensorType>], out: Option<&TensorType>) -> f64 {
    let n_out = elements(out).unwrap_or(UNKNOWN_BYTES);
    let n_in = |i: usize| elements(ins.get(i).and_then(Option::as_ref)).unwrap_or(UNKNOWN_BYTES);
    let dims = |i: usize| -> Option<Vec<usize>> { ins.get(i)?.as_ref()?.shape.as_static() };
    match op {
        Op::DotGeneral { lhs_contract, .. } => {
            let k: f64 = dims(0)
                .map(|d| {
                    lhs_contract
                        .iter()
                        .filter_map(|&c| d.get(c))
                        .product::<usize>() as f64
                })
                .unwrap_or(1.0);
            2.0 * n_out * k
        }
        Op::Conv { .. } => {
            // Per output element: C/groups × kernel elements multiply-adds, which is the
            // kernel's element count divided by O.
            let w = dims(1).unwrap_or_default();
            let per = match w.first() {
                Some(&o) if o > 0 => w.iter().product::<usize>() as f64 / o as f64,
                _ => 1.0,
            };
            2.0 * n_out * per
        }
        Op::Binary(BinaryOp::Div) => 4.0 * n_out,
        op if op.is_elementwise() => n_out,
        Op::Reduce { .. } | Op::ReduceWindow { .. } | Op::Cumulative { .. } => n_in(0),
        Op::ArgReduce { .. } => n_in(0),
        Op::Composite(c) => composite_flops(c, ins).unwrap_or(0.0),
        _ => 0.0,
    }
}

/// The flops of a composite's decomposition into core ops (its matmuls, reductions and
/// elementwise steps), `None` when an operand type is unknown or the composite does not
/// decompose for them.
fn composite_flops(c: &CompositeOp, ins: &[Option<TensorType>]) -> Option<f64> {
    let tys: Vec<&TensorType> = ins.iter().map(Option::as_ref).collect::<Option<_>>()?;
    let d = c.decompose(&tys).ok()?;
    let mut types: Vec<Option<TensorType>> = Vec::with_capacity(d.nodes.len());
    let mut total = 0.0;
    for (op, operands) in &d.nodes {
        let args: Vec<Option<TensorType>> = operands
            .iter()
            .map(|o| match *o {
                Operand::Input(i) => ins.get(i).cloned().flatten(),
                Operand::Node(j) => types.get(j).cloned().flatten(),
            })
            .collect();
        let out = op_type(op, &args);
        total += flops(op, &args, out.as_ref());
        types.push(out);
    }
    Some(total)
}

impl Target {
    /// Peak flops per nanosecond for an element type: f64 at half the f32 rate, the other
    /// types (computed in f32 lanes) at the f32 rate.
    pub fn peak(&self, dtype: DType) -> f64 {
        let f32_peak = self.cores * self.flops_per_cycle * self.ghz;
        if dtype == DType::F64 || dtype == DType::I64 || dtype == DType::U64 {
            f32_peak / 2.0
        } else {
            f32_peak
        }
    }

    /// The own cost of e-node `n` of `egraph` (not counting its operands' costs), in ns.
    pub fn node_cost(&self, egraph: &TfGraph, n: &TfNode) -> f64 {
        let op = match egraph.analysis.meaning(n) {
            Some(Meaning::Leaf(..)) => return 0.0,
            Some(Meaning::Op(op)) => op,
            None => return f64::INFINITY,
        };
        let ins: Vec<Option<TensorType>> =
            n.children.iter().map(|&c| egraph[c].data.clone()).collect();
        let out = op_type(&op, &ins);
        let out_bytes = bytes(out.as_ref());
        // Constants are part of the program (their users pay for reading them); so are nodes
        // the `fold` pass will evaluate at compile time.
        let foldable = n.children.iter().all(|&c| is_constant(egraph, c))
            && elements(out.as_ref()).is_some_and(|e| e <= FOLD_LIMIT as f64);
        if matches!(op, Op::Constant { .. }) || foldable {
            return 0.0;
        }
        if matches!(op, Op::Reshape { .. }) {
            return self.view_overhead;
        }
        let read: f64 = match op {
            Op::Slice { .. } => out_bytes,
            _ => ins.iter().map(|t| bytes(t.as_ref())).sum(),
        };
        let dtype = out.as_ref().map(|t| t.dtype).unwrap_or(DType::F32);
        (read + out_bytes) / self.bandwidth
            + flops(&op, &ins, out.as_ref()) / self.peak(dtype)
            + self.kernel_overhead
    }
}

/// Whether e-class `id` holds a constant.
fn is_constant(egraph: &TfGraph, id: Id) -> bool {
    egraph[id]
        .nodes
        .iter()
        .any(|n| matches!(egraph.analysis.op(n), Some(Op::Constant { .. })))
}

/// egg's tree cost over one e-graph: own cost plus operands' costs.
pub struct TreeCost<'a> {
    egraph: &'a TfGraph,
    target: &'a Target,
    /// The own cost of every e-node seen (the extractor asks again on every pass).
    own: HashMap<TfNode, f64>,
}

impl CostFunction<TfNode> for TreeCost<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &TfNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = match self.own.get(enode) {
            Some(&c) => c,
            None => {
                let c = self.target.node_cost(self.egraph, enode);
                self.own.insert(enode.clone(), c);
                c
            }
        };
        enode.fold(own, |sum, c| sum + costs(c))
    }
}

/// How to extract.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Extraction {
    /// egg's greedy extractor (tree cost).
    #[default]
    Greedy,
    /// Branch and bound on the DAG cost within a budget.
    Exact(ExactBudget),
}

/// The budget of exact extraction.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactBudget {
    /// At most this many e-classes reachable from the roots (default 2 000); beyond, greedy.
    pub classes: usize,
    /// At most this many search steps (e-node choices tried; default 200 000).
    pub steps: usize,
    /// At most this much time (default 500 ms).
    pub time: Duration,
}

impl Default for ExactBudget {
    fn default() -> Self {
        ExactBudget {
            classes: 2_000,
            steps: 200_000,
            time: Duration::from_millis(500),
        }
    }
}

/// The chosen e-node of every needed e-class (canonical ids), with a note on how it was found.
#[derive(Debug, Clone)]
pub struct Choices {
    pub nodes: HashMap<Id, TfNode>,
    /// The DAG cost of the choice, in ns.
    pub cost: f64,
    /// How the choice was made (`greedy`, `exact (optimal)`, or why exact fell back).
    pub note: String,
}

/// The DAG cost of `choices` for `roots`: the own costs of the e-classes they need, each once;
/// infinite when a needed e-class has no choice or the choices form a cycle.
pub fn dag_cost(
    egraph: &TfGraph,
    target: &Target,
    nodes: &HashMap<Id, TfNode>,
    roots: &[Id],
) -> f64 {
    // Iterative DFS with colors: 1 on the stack, 2 done.
    let mut color: HashMap<Id, u8> = HashMap::new();
    let mut total = 0.0;
    for &r in roots {
        let r = egraph.find(r);
        let mut stack = vec![(r, false)];
        while let Some((c, done)) = stack.pop() {
            if done {
                color.insert(c, 2);
                continue;
            }
            match color.get(&c) {
                Some(2) => continue,
                Some(_) => return f64::INFINITY,
                None => {}
            }
            let Some(n) = nodes.get(&c) else {
                return f64::INFINITY;
            };
            color.insert(c, 1);
            total += target.node_cost(egraph, n);
            stack.push((c, true));
            for &k in n.children() {
                let k = egraph.find(k);
                match color.get(&k) {
                    Some(2) => {}
                    Some(_) => return f64::INFINITY,
                    None => stack.push((k, false)),
                }
            }
        }
    }
    total
}

/// The greedy choice for the e-classes `roots` need.
pub fn greedy(egraph: &TfGraph, target: &Target, roots: &[Id]) -> Choices {
    let cost = TreeCost {
        egraph,
        target,
        own: HashMap::new(),
    };
    let extractor = Extractor::new(egraph, cost);
    let mut nodes = HashMap::new();
    let mut stack: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    while let Some(c) = stack.pop() {
        if nodes.contains_key(&c) {
            continue;
        }
        let n = extractor.find_best_node(c).clone();
        stack.extend(n.children().iter().map(|&k| egraph.find(k)));
        nodes.insert(c, n);
    }
    let cost = dag_cost(egraph, target, &nodes, roots);
    Choices {
        nodes,
        cost,
        note: "greedy".into(),
    }
}

/// The choice for `roots` by `mode`.
pub fn choose(egraph: &TfGraph, target: &Target, roots: &[Id], mode: &Extraction) -> Choices {
    let greedy = greedy(egraph, target, roots);
    match mode {
        Extraction::Greedy => greedy,
        Extraction::Exact(budget) => exact(egraph, target, roots, budget, greedy),
    }
}

/// A candidate e-node of an e-class: own cost, canonical children, the node.
struct Candidate {
    cost: f64,
    children: Vec<Id>,
    node: TfNode,
}

/// The branch-and-bound state.
struct Search<'a> {
    cands: HashMap<Id, Vec<Candidate>>,
    min_own: HashMap<Id, f64>,
    /// The chosen candidate of each decided e-class.
    chosen: HashMap<Id, usize>,
    /// How many times each e-class is on the pending stack.
    pending: HashMap<Id, usize>,
    best: HashMap<Id, usize>,
    best_cost: f64,
    improved: bool,
    steps: usize,
    budget: &'a ExactBudget,
    deadline: Instant,
    out_of_budget: bool,
}

impl Search<'_> {
    /// Whether choosing `children` for e-class `c` closes a cycle through decided e-classes.
    fn closes_cycle(&self, c: Id, children: &[Id]) -> bool {
        let mut seen = HashSet::new();
        let mut stack: Vec<Id> = children.to_vec();
        while let Some(k) = stack.pop() {
            if k == c {
                return true;
            }
            if !seen.insert(k) {
                continue;
            }
            if let Some(&i) = self.chosen.get(&k) {
                stack.extend(self.cands[&k][i].children.iter().copied());
            }
        }
        false
    }

    /// Decide the e-classes on `stack` (and what they need); `lb` is the sum of the smallest
    /// own costs of the distinct undecided e-classes on it.
    fn dfs(&mut self, stack: &mut Vec<Id>, cost: f64, lb: f64) {
        self.steps += 1;
        if self.steps > self.budget.steps
            || (self.steps.is_multiple_of(1024) && Instant::now() > self.deadline)
        {
            self.out_of_budget = true;
        }
        if self.out_of_budget {
            return;
        }
        // The next undecided e-class (decided ones popped and restored afterwards).
        let mut popped = Vec::new();
        let c = loop {
            match stack.pop() {
                None => break None,
                Some(c) => {
                    popped.push(c);
                    if let Some(n) = self.pending.get_mut(&c) {
                        *n -= 1;
                    }
                    if !self.chosen.contains_key(&c) {
                        break Some(c);
                    }
                }
            }
        };
        match c {
            None => {
                if cost < self.best_cost {
                    self.best_cost = cost;
                    self.best = self.chosen.clone();
                    self.improved = true;
                }
            }
            Some(c) if cost + lb < self.best_cost => self.branch(stack, c, cost, lb),
            Some(_) => {}
        }
        for c in popped.into_iter().rev() {
            *self.pending.entry(c).or_default() += 1;
            stack.push(c);
        }
    }

    fn branch(&mut self, stack: &mut Vec<Id>, c: Id, cost: f64, lb: f64) {
        let rest = lb - self.min_own[&c];
        for i in 0..self.cands[&c].len() {
            let own = self.cands[&c][i].cost;
            // Candidates are sorted by own cost: the later ones cannot do better.
            if cost + own + rest >= self.best_cost || self.out_of_budget {
                break;
            }
            let children = self.cands[&c][i].children.clone();
            if self.closes_cycle(c, &children) {
                continue;
            }
            self.chosen.insert(c, i);
            let mut added = 0.0;
            let mut pushed = 0;
            for &k in &children {
                if self.chosen.contains_key(&k) {
                    continue;
                }
                let n = self.pending.entry(k).or_default();
                if *n == 0 {
                    added += self.min_own[&k];
                }
                *n += 1;
                stack.push(k);
                pushed += 1;
            }
            self.dfs(stack, cost + own, rest + added);
            for _ in 0..pushed {
                if let Some(k) = stack.pop()
                    && let Some(n) = self.pending.get_mut(&k)
                {
                    *n -= 1;
                }
            }
            self.chosen.remove(&c);
        }
    }
}

/// Exact (DAG-optimal) extraction within `budget`, from the greedy choice.
fn exact(
    egraph: &TfGraph,
    target: &Target,
    roots: &[Id],
    budget: &ExactBudget,
    greedy: Choices,
) -> Choices {
    let fallback = |greedy: Choices, why: &str| Choices {
        note: format!("exact: {why}, greedy kept"),
        ..greedy
    };
    // The e-classes the roots may need, and their candidates by own cost.
    let roots: Vec<Id> = roots.iter().map(|&r| egraph.find(r)).collect();
    let mut cands: HashMap<Id, Vec<Candidate>> = HashMap::new();
    let mut stack = roots.clone();
    while let Some(c) = stack.pop() {
        if cands.contains_key(&c) {
            continue;
        }
        if cands.len() >= budget.classes {
            return fallback(greedy, &format!("over {} e-classes", budget.classes));
        }
        let mut list: Vec<Candidate> = egraph[c]
            .nodes
            .iter()
            .map(|n| Candidate {
                cost: target.node_cost(egraph, n),
                children: n.children().iter().map(|&k| egraph.find(k)).collect(),
                node: n.clone(),
            })
            .filter(|k| k.cost.is_finite() && !k.children.contains(&c))
            .collect();
        list.sort_by(|a, b| a.cost.total_cmp(&b.cost));
        for k in &list {
            stack.extend(k.children.iter().copied());
        }
        cands.insert(c, list);
    }
    let min_own: HashMap<Id, f64> = cands
        .iter()
        .map(|(&c, l)| (c, l.first().map_or(f64::INFINITY, |k| k.cost)))
        .collect();
    let mut search = Search {
        cands,
        min_own,
        chosen: HashMap::new(),
        pending: HashMap::new(),
        best: HashMap::new(),
        best_cost: greedy.cost,
        improved: false,
        steps: 0,
        budget,
        deadline: Instant::now() + budget.time,
        out_of_budget: false,
    };
    let mut pending_stack: Vec<Id> = Vec::new();
    let mut lb = 0.0;
    let mut distinct = HashSet::new();
    for &r in &roots {
        if distinct.insert(r) {
            lb += search.min_own[&r];
        }
        *search.pending.entry(r).or_default() += 1;
        pending_stack.push(r);
    }
    search.dfs(&mut pending_stack, 0.0, lb);
    let note = match (search.out_of_budget, search.improved) {
        (false, _) => "exact (optimal)".to_string(),
        (true, true) => "exact: over budget, best found kept (not proven optimal)".to_string(),
        (true, false) => return fallback(greedy, "over budget"),
    };
    if !search.improved {
        return Choices { note, ..greedy };
    }
    let nodes: HashMap<Id, TfNode> = search
        .best
        .iter()
        .map(|(&c, &i)| (c, search.cands[&c][i].node.clone()))
        .collect();
    Choices {
        cost: dag_cost(egraph, target, &nodes, &roots),
        nodes,
        note,
    }
}
