//! Fusion: a graph function becomes a [`KernelProgram`] of fused kernels.
//!
//! Every top-level node is one of three families:
//!
//! - **inline**: elementwise ops (unary, binary, compare, select, convert, iota, splat
//!   constants) and data movement (broadcast, reshape, transpose, slice, reverse, pad,
//!   concat). They never make a kernel of their own unless their value must exist in memory:
//!   they are folded into their consumers' expressions, movement as index arithmetic;
//! - **reductions**: reduce, dot_general, conv (without input dilation) and reduce_window.
//!   Each becomes a reduction *stage* of the kernel that consumes it, with its producers
//!   inlined as its prologue and its consumers as its epilogue (matmul + bias + activation +
//!   residual, conv + batch-norm scale + ReLU), or its own kernel when its value is needed
//!   elsewhere. A reduction whose consumers broadcast it back over its own input's shape
//!   (softmax's max and sum, layer-norm's mean and variance) makes its consumer's kernel run
//!   over the reduced rows: the outer loops are the kept dims, the stages compute the row's
//!   reductions once and a store stage writes the row, so softmax and layer-norm are one kernel;
//! - **calls**: everything else (gather, scatter, sort, arg/cumulative reductions, `if`,
//!   `loop`, transposed convolution) runs as a library call on materialized buffers.
//!
//! A value is *materialized* (gets a buffer) when it is a function input or result, a
//! non-splat constant, an operand or result of a call, a reduction or costly elementwise
//! value needed by more than one kernel, or a reduction that cannot be a stage where it is
//! used (read at an index that depends on another stage's loop variables, or where it would
//! be recomputed: the consumer's outer space is larger than the reduction's result). The
//! decision is iterated: building the kernels may discover such a reduction, which is then
//! materialized, and the kernels rebuilt, until every kernel builds.
//!
//! Finally, adjacent independent kernels over the same iteration space merge into one
//! ([`horizontal`]).
//!
//! Shapes must be static: symbolic dims are bound by the caller ([`fuse_function`]'s
//! `bind`), e.g. from the shapes of the inputs of a run.

mod expr;
pub mod horizontal;

use std::collections::{HashMap, HashSet};

use terafab_ir::infer::infer;
use terafab_ir::interp::{Bindings, bind_inputs, resolve_shape, run_function};
use terafab_ir::kernel::interp::run_program;
use terafab_ir::kernel::verify::verify_program;
use terafab_ir::kernel::{Body, Buffer, BufferId, Kernel, KernelKind, KernelProgram, Storage};
use terafab_ir::{Element, Function, Node, Op, Region, Tensor, ValueId, with_data};

use crate::util::region_uses;
use expr::{Build, KernelBuilder};

/// Why a function could not be lowered to kernels.
#[derive(Debug, thiserror::Error)]
pub enum FuseError {
    #[error(
        "@{func}: value %{value} has symbolic shape {shape}; bind its dims (e.g. --dim) to lower it to kernels"
    )]
    Symbolic {
        func: String,
        value: String,
        shape: String,
    },
    #[error("@{func}: the kernel program does not verify: {message}")]
    Verify { func: String, message: String },
    #[error("@{func}: {message}")]
    Failed { func: String, message: String },
}

/// How a node is lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Inline,
    Reduction,
    Call,
}

pub(crate) fn family(n: &Node) -> Family {
    if !n.regions.is_empty() || n.outputs.len() != 1 {
        return Family::Call;
    }
    match &n.op {
        Op::Constant { .. }
        | Op::Iota { .. }
        | Op::Unary(_)
        | Op::Binary(_)
        | Op::Compare(_)
        | Op::Select
        | Op::Convert { .. }
        | Op::Broadcast { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Slice { .. }
        | Op::Reverse { .. }
        | Op::Pad { .. }
        | Op::Concat { .. } => Family::Inline,
        Op::Reduce { .. } | Op::DotGeneral { .. } | Op::ReduceWindow { .. } => Family::Reduction,
        Op::Conv { lhs_dilation, .. } if lhs_dilation.iter().all(|&d| d == 1) => Family::Reduction,
        _ => Family::Call,
    }
}

/// A rank-0 tensor of the value every element of `t` has, if they are all the same (and not
/// NaN; signed zeros are told apart).
pub(crate) fn splat_value(t: &Tensor) -> Option<Tensor> {
    with_data!(t.data(), v, T => {
        let first: T = *v.first()?;
        let neg = first.to_f64().is_sign_negative();
        v.iter()
            .all(|&x| x == first && x.to_f64().is_sign_negative() == neg)
            .then(|| Tensor::scalar(first))
    })
}

/// What fusion knows about the function: shapes, producers, consumers, decisions.
pub(crate) struct Graph<'f> {
    pub f: &'f Function,
    /// The static shape of every top-level value.
    pub shapes: HashMap<ValueId, Vec<usize>>,
    /// The node index producing each value.
    pub producer: HashMap<ValueId, usize>,
    /// The materialized values (they have buffers).
    pub materialized: HashSet<ValueId>,
    /// The splat constant of each value that is one.
    pub splats: HashMap<ValueId, Tensor>,
}

impl Graph<'_> {
    pub fn node_of(&self, v: ValueId) -> Option<&Node> {
        self.producer.get(&v).map(|&i| &self.f.body.nodes[i])
    }

    pub fn shape(&self, v: ValueId) -> &[usize] {
        self.shapes.get(&v).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// Lower `f` to a verified kernel program, with symbolic dims bound by `bind`.
pub fn fuse_function(f: &Function, bind: &Bindings) -> Result<KernelProgram, FuseError> {
    let failed = |message: String| FuseError::Failed {
        func: f.name.clone(),
        message,
    };
    let expanded;
    let f = if f
        .body
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Composite(_)))
    {
        expanded = expand_composites(f).map_err(failed)?;
        &expanded
    } else {
        f
    };
    let mut shapes = HashMap::new();
    let mut all_values: Vec<ValueId> = f.inputs().to_vec();
    for n in &f.body.nodes {
        all_values.extend(n.outputs.iter().copied());
    }
    for &v in &all_values {
        let ty = f.values.ty(v);
        let s = resolve_shape(&ty.shape, bind).map_err(|_| FuseError::Symbolic {
            func: f.name.clone(),
            value: f.values.name(v).to_string(),
            shape: ty.shape.to_string(),
        })?;
        shapes.insert(v, s);
    }
    let mut producer = HashMap::new();
    for (i, n) in f.body.nodes.iter().enumerate() {
        for &o in &n.outputs {
            producer.insert(o, i);
        }
    }
    let mut splats = HashMap::new();
    for n in &f.body.nodes {
        if let (Op::Constant { value }, &[out]) = (&n.op, n.outputs.as_slice())
            && let Some(s) = splat_value(value)
        {
            splats.insert(out, s);
        }
    }
    let mut g = Graph {
        f,
        shapes,
        producer,
        materialized: HashSet::new(),
        splats,
    };
    initial_materialization(&mut g);
    // Build; a reduction that cannot be a stage where it is used is materialized, and again.
    let max_rounds = f.body.nodes.len() + 2;
    for _ in 0..max_rounds {
        match build_program(&g) {
            Ok(mut p) => {
                horizontal::fuse_horizontally(&mut p);
                verify_program(&p).map_err(|e| FuseError::Verify {
                    func: f.name.clone(),
                    message: e.to_string(),
                })?;
                return Ok(p);
            }
            Err(Build::Materialize(v)) => {
                if !g.materialized.insert(v) {
                    return Err(failed(format!(
                        "fusion did not converge at %{}",
                        f.values.name(v)
                    )));
                }
                settle(&mut g);
            }
            Err(Build::Fail(message)) => return Err(failed(message)),
        }
    }
    Err(failed("fusion did not converge".into()))
}

/// Values that need buffers whatever the fusion: inputs, results, non-splat constants, call
/// operands (captured values included) and results.
fn initial_materialization(g: &mut Graph<'_>) {
    let f = g.f;
    let m = &mut g.materialized;
    m.extend(f.inputs().iter().copied());
    m.extend(f.outputs().iter().copied());
    for n in &f.body.nodes {
        match family(n) {
            Family::Call => {
                m.extend(n.inputs.iter().copied());
                m.extend(n.outputs.iter().copied());
                for r in &n.regions {
                    let mut used = Vec::new();
                    region_uses(r, &mut used);
                    m.extend(
                        used.into_iter()
                            .filter(|v| g.producer.contains_key(v) || f.inputs().contains(v)),
                    );
                }
            }
            _ if matches!(n.op, Op::Constant { .. }) && !g.splats.contains_key(&n.outputs[0]) => {
                m.insert(n.outputs[0]);
            }
            _ => {}
        }
    }
    settle(g);
}

/// Materialize reductions and costly elementwise values that more than one kernel would
/// compute, until that holds nowhere.
fn settle(g: &mut Graph<'_>) {
    loop {
        let roots = kernel_roots(g);
        let mut changed = false;
        for (i, n) in g.f.body.nodes.iter().enumerate() {
            let _ = i;
            let Some(&v) = n.outputs.first() else {
                continue;
            };
            if g.materialized.contains(&v) || n.outputs.len() != 1 {
                continue;
            }
            let shared = roots.get(&v).is_some_and(|r| r.len() > 1);
            let fam = family(n);
            let costly = fam == Family::Reduction || (fam == Family::Inline && is_costly(g, v));
            if shared && costly {
                g.materialized.insert(v);
                changed = true;
            }
        }
        // Operands of contractions and windows that compute something are materialized: a
        // matmul, conv or pooling reads each operand element many times, so that work belongs
        // in the epilogue of the kernel producing it, not in the consumer's prologue. Pure data
        // movement (a transpose, a zero padding, a cast) stays folded into the indexing.
        for n in &g.f.body.nodes {
            let rereads = matches!(
                n.op,
                Op::DotGeneral { .. } | Op::Conv { .. } | Op::ReduceWindow { .. }
            );
            if !rereads || family(n) != Family::Reduction {
                continue;
            }
            for &x in &n.inputs {
                if !g.materialized.contains(&x) && !movement_only(g, x) {
                    changed |= g.materialized.insert(operand_root(g, x));
                }
            }
        }
        changed |= one_contraction_per_kernel(g);
        if !changed {
            return;
        }
    }
}

/// The value to store for a contraction or window operand `x` that computes something: `x`
/// itself, or, where `x` is a chain of casts over a computed value, that value, so the casts
/// fold into the operand's indexing and the value is stored once. (A precision pass's
/// rounding `convert(convert(y))` of a `y` also used by a residual add would otherwise store
/// the rounded copy and recompute `y`, with everything inlined into it, in every other
/// consumer.) Transposes and reshapes stay materialized with the operand: they give
/// attention's per-head operands their own layout.
fn operand_root(g: &Graph<'_>, x: ValueId) -> ValueId {
    let mut v = x;
    while let Some(n) = g.node_of(v) {
        let folds = matches!(n.op, Op::Convert { .. });
        let &[input] = n.inputs.as_slice() else {
            break;
        };
        if !folds || g.materialized.contains(&input) || g.splats.contains_key(&input) {
            break;
        }
        v = input;
    }
    v
}

/// Whether `n` is a contraction (a matmul or convolution computed as a reduction stage).
fn is_contraction(n: &Node) -> bool {
    matches!(n.op, Op::DotGeneral { .. } | Op::Conv { .. }) && family(n) == Family::Reduction
}

/// A kernel computes at most one contraction, so that each gets a backend's GEMM schedule: where
/// a kernel would hold several (a residual block's projection convolution added in the epilogue
/// of the main convolution), all but the last are materialized (the kernel's own root counts as
/// its contraction). Returns whether anything was materialized.
fn one_contraction_per_kernel(g: &mut Graph<'_>) -> bool {
    let roots = kernel_roots(g);
    let mut per_root: HashMap<ValueId, Vec<ValueId>> = HashMap::new();
    for n in &g.f.body.nodes {
        let Some(&v) = n.outputs.first() else {
            continue;
        };
        if !is_contraction(n) || g.materialized.contains(&v) {
            continue;
        }
        for &r in roots.get(&v).into_iter().flatten() {
            per_root.entry(r).or_default().push(v);
        }
    }
    let mut changed = false;
    let mut roots_sorted: Vec<_> = per_root.into_iter().collect();
    roots_sorted.sort_by_key(|(r, _)| *r);
    for (r, mut list) in roots_sorted {
        let root_is_contraction = g.node_of(r).is_some_and(is_contraction);
        if !root_is_contraction {
            // Nodes are in order: the last one stays in this kernel.
            list.pop();
        }
        for v in list {
            changed |= g.materialized.insert(v);
        }
    }
    changed
}

/// Whether recomputing `v` in several kernels costs more than storing it: it, or an inlined
/// producer, is transcendental or a division.
fn is_costly(g: &Graph<'_>, v: ValueId) -> bool {
    let mut stack = vec![v];
    let mut seen = HashSet::new();
    while let Some(v) = stack.pop() {
        if !seen.insert(v) {
            continue;
        }
        let Some(n) = g.node_of(v) else { continue };
        if let Op::Unary(u) = n.op {
            use terafab_ir::UnaryOp::*;
            if !matches!(
                u,
                Neg | Abs | Sign | Not | Floor | Ceil | Round | IsNan | IsInf
            ) {
                return true;
            }
        }
        if matches!(
            n.op,
            Op::Binary(
                terafab_ir::BinaryOp::Div | terafab_ir::BinaryOp::Pow | terafab_ir::BinaryOp::Rem
            )
        ) {
            return true;
        }
        for &i in &n.inputs {
            if !g.materialized.contains(&i) {
                stack.push(i);
            }
        }
    }
    false
}

/// Whether `v` is only data movement (and casts) over materialized values and splats.
fn movement_only(g: &Graph<'_>, v: ValueId) -> bool {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        if g.materialized.contains(&v) || g.splats.contains_key(&v) {
            continue;
        }
        let Some(n) = g.node_of(v) else { continue };
        let moves = matches!(
            n.op,
            Op::Broadcast { .. }
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Slice { .. }
                | Op::Reverse { .. }
                | Op::Pad { .. }
                | Op::Concat { .. }
                | Op::Convert { .. }
                | Op::Iota { .. }
        );
        if !moves {
            return false;
        }
        stack.extend(n.inputs.iter().copied());
    }
    true
}

/// For every non-materialized value, the materialized values whose kernels compute it.
fn kernel_roots(g: &Graph<'_>) -> HashMap<ValueId, HashSet<ValueId>> {
    let mut roots: HashMap<ValueId, HashSet<ValueId>> = HashMap::new();
    for n in g.f.body.nodes.iter().rev() {
        let Some(&out) = n.outputs.first() else {
            continue;
        };
        let mine: HashSet<ValueId> = if g.materialized.contains(&out) {
            [out].into_iter().collect()
        } else {
            roots.get(&out).cloned().unwrap_or_default()
        };
        if family(n) == Family::Call {
            continue;
        }
        for &i in &n.inputs {
            if !g.materialized.contains(&i) {
                roots.entry(i).or_default().extend(mine.iter().copied());
            }
        }
    }
    roots
}

/// Build the whole program under the current decisions.
fn build_program(g: &Graph<'_>) -> Result<KernelProgram, Build> {
    let f = g.f;
    let mut p = KernelProgram::new(f.name.clone());
    let mut buffer_of: HashMap<ValueId, BufferId> = HashMap::new();
    for (i, &v) in f.inputs().iter().enumerate() {
        let b = p.add_buffer(Buffer::new(
            f.values.name(v),
            f.values.ty(v).dtype,
            g.shape(v).to_vec(),
            Storage::Input(i),
        ));
        p.inputs.push(b);
        buffer_of.insert(v, b);
    }
    for n in &f.body.nodes {
        for &v in &n.outputs {
            if !g.materialized.contains(&v) || buffer_of.contains_key(&v) {
                continue;
            }
            let storage = match &n.op {
                Op::Constant { value } => Storage::Const(value.clone()),
                _ => Storage::Temp,
            };
            let b = p.add_buffer(Buffer::new(
                f.values.name(v),
                f.values.ty(v).dtype,
                g.shape(v).to_vec(),
                storage,
            ));
            buffer_of.insert(v, b);
        }
    }
    for n in &f.body.nodes {
        let Some(&out) = n.outputs.first() else {
            continue;
        };
        if matches!(n.op, Op::Constant { .. }) {
            continue;
        }
        let fam = family(n);
        if fam == Family::Call {
            let k = call_kernel(g, n, &buffer_of, p.kernels.len())?;
            p.kernels.push(k);
        } else if g.materialized.contains(&out) {
            let name = format!("k{}", p.kernels.len());
            let k = KernelBuilder::new(g, &buffer_of).build(name, out)?;
            p.kernels.push(k);
        }
    }
    for (name, &v) in f.output_names.iter().zip(f.outputs()) {
        let b = *buffer_of
            .get(&v)
            .ok_or_else(|| Build::Fail(format!("result %{} has no buffer", f.values.name(v))))?;
        p.outputs.push((name.clone(), b));
    }
    Ok(p)
}

/// A call kernel: the node as a one-node graph function over materialized buffers.
fn call_kernel(
    g: &Graph<'_>,
    n: &Node,
    buffer_of: &HashMap<ValueId, BufferId>,
    number: usize,
) -> Result<Kernel, Build> {
    let f = g.f;
    let mut params: Vec<ValueId> = Vec::new();
    for &v in &n.inputs {
        if !params.contains(&v) {
            params.push(v);
        }
    }
    let mut captured = Vec::new();
    for r in &n.regions {
        region_uses(r, &mut captured);
    }
    for v in captured {
        if buffer_of.contains_key(&v) && !params.contains(&v) {
            params.push(v);
        }
    }
    let buf = |v: ValueId| {
        buffer_of
            .get(&v)
            .copied()
            .ok_or_else(|| Build::Fail(format!("call operand %{} has no buffer", f.values.name(v))))
    };
    let inputs = params
        .iter()
        .map(|&v| buf(v))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = n
        .outputs
        .iter()
        .map(|&v| buf(v))
        .collect::<Result<Vec<_>, _>>()?;
    let mut body = Function::new(format!("{}_k{number}", f.name));
    body.values = f.values.clone();
    body.body = Region {
        params,
        nodes: vec![n.clone()],
        results: n.outputs.clone(),
    };
    body.output_names = n
        .outputs
        .iter()
        .map(|&v| f.values.name(v).to_string())
        .collect();
    Ok(Kernel {
        name: format!("k{number}"),
        kind: KernelKind::Call,
        inputs,
        outputs,
        body: Body::Call(Box::new(body)),
        sources: n.name.iter().cloned().collect(),
    })
}

/// Why [`run_kernels`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Fuse(#[from] FuseError),
    #[error("running the kernels of @{func} failed")]
    Run {
        func: String,
        #[source]
        source: terafab_ir::interp::InterpError,
    },
    /// A compiled backend's error.
    #[error("running the kernels of @{func} failed")]
    Backend {
        func: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Lower `f` to kernels and run them on `inputs`, the way a runtime does: the symbolic dims
/// are bound from the inputs' shapes; where a call produces a shape that depends on data (the
/// scan outputs of a `loop`), the function runs in segments: the kernels before that call,
/// the call, then the rest lowered again with the dims the call's results bind.
pub fn run_kernels(f: &Function, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
    let mut interp = |p: &KernelProgram, inputs: &[Tensor]| {
        run_program(p, inputs).map_err(|source| RunError::Run {
            func: f.name.clone(),
            source,
        })
    };
    run_kernels_with(f, inputs, &mut interp)
}

/// Something that runs a kernel program on its inputs (the kernel interpreter, a compiled
/// backend).
pub type ProgramExecutor<'a> =
    dyn FnMut(&KernelProgram, &[Tensor]) -> Result<Vec<Tensor>, RunError> + 'a;

/// [`run_kernels`] with another executor of kernel programs (a compiled backend): `exec` runs
/// each lowered program (segment) on its inputs.
pub fn run_kernels_with(
    f: &Function,
    inputs: &[Tensor],
    exec: &mut ProgramExecutor<'_>,
) -> Result<Vec<Tensor>, RunError> {
    let run_err = |source| RunError::Run {
        func: f.name.clone(),
        source,
    };
    let nodes = &f.body.nodes;
    let mut env: HashMap<ValueId, Tensor> = HashMap::new();
    bind_inputs(f, inputs).map_err(run_err)?;
    for (&p, t) in f.inputs().iter().zip(inputs) {
        env.insert(p, t.clone());
    }
    let mut start = 0;
    loop {
        let (seg, seg_inputs) = segment(f, start, nodes.len(), f.outputs(), &env);
        let bind = bind_inputs(&seg, &seg_inputs).map_err(run_err)?;
        let err = match fuse_function(&seg, &bind) {
            Ok(p) => return exec(&p, &seg_inputs),
            Err(e @ FuseError::Symbolic { .. }) => e,
            Err(e) => return Err(e.into()),
        };
        // The first node whose results' shapes the bound dims do not give.
        let unresolved = |n: &Node| {
            n.outputs
                .iter()
                .any(|&v| resolve_shape(&f.values.ty(v).shape, &bind).is_err())
        };
        let Some(i) = (start..nodes.len()).find(|&i| unresolved(&nodes[i])) else {
            return Err(err.into());
        };
        let inputs_known = nodes[i]
            .inputs
            .iter()
            .all(|&v| resolve_shape(&f.values.ty(v).shape, &bind).is_ok());
        if family(&nodes[i]) != Family::Call || !inputs_known {
            return Err(err.into());
        }
        // The kernels before node i, for the values node i and later need.
        let later = needed_from(f, i);
        if i > start {
            let (pre, pre_inputs) = segment(f, start, i, &later, &env);
            let pre_bind = bind_inputs(&pre, &pre_inputs).map_err(run_err)?;
            let p = fuse_function(&pre, &pre_bind)?;
            let outs = exec(&p, &pre_inputs)?;
            for (&v, t) in pre.outputs().iter().zip(outs) {
                env.insert(v, t);
            }
        }
        // Node i as a call.
        let (call, call_inputs) = segment(f, i, i + 1, &nodes[i].outputs, &env);
        let outs = run_function(&call, &call_inputs).map_err(run_err)?;
        for (&v, t) in nodes[i].outputs.iter().zip(outs) {
            env.insert(v, t);
        }
        start = i + 1;
    }
}

/// The values that nodes `from..` (their regions included) and the function's results use.
fn needed_from(f: &Function, from: usize) -> Vec<ValueId> {
    let mut used = Vec::new();
    for n in &f.body.nodes[from..] {
        used.extend(n.inputs.iter().copied());
        for r in &n.regions {
            region_uses(r, &mut used);
        }
    }
    used.extend(f.outputs().iter().copied());
    let mut seen = HashSet::new();
    used.retain(|v| seen.insert(*v));
    used
}

/// Nodes `a..b` of `f` as a function whose parameters are the values of `env` they use, and
/// whose results are those of `results` that are defined by then; with its inputs.
fn segment(
    f: &Function,
    a: usize,
    b: usize,
    results: &[ValueId],
    env: &HashMap<ValueId, Tensor>,
) -> (Function, Vec<Tensor>) {
    let nodes = f.body.nodes[a..b].to_vec();
    let mut defined: HashSet<ValueId> = HashSet::new();
    for n in &nodes {
        defined.extend(n.outputs.iter().copied());
    }
    let mut used = Vec::new();
    for n in &nodes {
        used.extend(n.inputs.iter().copied());
        for r in &n.regions {
            region_uses(r, &mut used);
        }
    }
    used.extend(results.iter().copied());
    let mut params = Vec::new();
    for v in used {
        if env.contains_key(&v) && !defined.contains(&v) && !params.contains(&v) {
            params.push(v);
        }
    }
    let outs: Vec<ValueId> = results
        .iter()
        .copied()
        .filter(|v| defined.contains(v) || env.contains_key(v))
        .collect();
    let mut seg = Function::new(f.name.clone());
    seg.values = f.values.clone();
    seg.output_names = outs.iter().map(|&v| f.values.name(v).to_string()).collect();
    seg.body = Region {
        params: params.clone(),
        nodes,
        results: outs,
    };
    let inputs = params.iter().map(|v| env[v].clone()).collect();
    (seg, inputs)
}

/// `f` with every top-level composite op replaced by its decomposition, whose nodes then fuse
/// like any others (a softmax or layer-norm becomes one row kernel, an attention its matmul,
/// row and matmul kernels). The decomposition's nodes keep the composite's `loc`.
fn expand_composites(f: &Function) -> Result<Function, String> {
    let mut out = f.clone();
    let nodes = std::mem::take(&mut out.body.nodes);
    for n in nodes {
        let Op::Composite(c) = &n.op else {
            out.body.nodes.push(n);
            continue;
        };
        let tys: Vec<terafab_ir::TensorType> =
            n.inputs.iter().map(|&v| out.values.ty(v).clone()).collect();
        let refs: Vec<&terafab_ir::TensorType> = tys.iter().collect();
        let d = c
            .decompose(&refs)
            .map_err(|e| format!("cannot expand `{}`: {}", c.name(), e.0))?;
        let last = d.nodes.len().saturating_sub(1);
        let name = n.name.clone();
        d.walk(
            &n.inputs,
            |k, op, inputs| {
                let in_tys: Vec<&terafab_ir::TensorType> =
                    inputs.iter().map(|&v| out.values.ty(v)).collect();
                let ty = match infer(op, &in_tys) {
                    Ok(mut t) if t.len() == 1 => t.remove(0),
                    _ => {
                        return Err(format!(
                            "the decomposition of `{}` does not type-check",
                            c.name()
                        ));
                    }
                };
                // The last node computes the composite's own result.
                let result = if k == last {
                    n.outputs[0]
                } else {
                    out.values.add("", ty)
                };
                out.body.nodes.push(Node {
                    op: op.clone(),
                    inputs,
                    outputs: vec![result],
                    regions: vec![],
                    name: name.clone(),
                });
                Ok(result)
            },
            || format!("`{}` decomposes to nothing", c.name()),
        )?;
    }
    Ok(out)
}

/// The `fuse` pass: lowers each function to kernels, verifies the kernel program and checks
/// its memory plan ([`plan_kernel_memory`]), leaving
/// the graph as it is (the kernel program is what `terafab opt` prints when a pipeline ends
/// with `fuse`, and what backends compile). It reports the kernel count by kind. A function
/// with symbolic dims is reported as not lowered (bind them, e.g. `--dim N=1`) rather than
/// failing the pipeline.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fuse;

impl crate::Pass for Fuse {
    fn name(&self) -> &'static str {
        "fuse"
    }

    fn run(&self, f: &mut Function) -> Result<bool, crate::PassError> {
        self.run_reported(f).map(|(changed, _)| changed)
    }

    fn run_reported(&self, f: &mut Function) -> Result<(bool, Option<String>), crate::PassError> {
        match fuse_function(f, &Bindings::new()) {
            Ok(p) => {
                // The arena plan of the temporaries must hold (no live overlap, aligned).
                let checked = plan_kernel_memory(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|plan| plan.check());
                if let Err(message) = checked {
                    return Err(crate::PassError::Failed {
                        pass: "fuse".into(),
                        func: f.name.clone(),
                        message: format!("the kernel memory plan is wrong: {message}"),
                    });
                }
                Ok((false, Some(summary(f, &p))))
            }
            Err(FuseError::Symbolic { value, shape, .. }) => Ok((
                false,
                Some(format!(
                    "not lowered: %{value} has symbolic shape {shape} (bind its dims with --dim)"
                )),
            )),
            Err(e) => Err(crate::PassError::Failed {
                pass: "fuse".into(),
                func: f.name.clone(),
                message: e.to_string(),
            }),
        }
    }
}

/// `N kernels (a matmul, b elementwise, ...) from M ops, temporaries in a A byte arena (U
/// without reuse)`, where M counts the top-level nodes other than constants (the kernels there
/// would be unfused) and the arena is [`plan_kernel_memory`]'s.
pub fn summary(f: &Function, p: &KernelProgram) -> String {
    let ops = f
        .body
        .nodes
        .iter()
        .filter(|n| !matches!(n.op, Op::Constant { .. }))
        .count();
    let counts: Vec<String> = p
        .kernel_counts()
        .iter()
        .map(|(k, n)| format!("{n} {}", k.name()))
        .collect();
    let memory = match plan_kernel_memory(p) {
        Ok(plan) => format!(
            "temporaries in a {} byte arena ({} without reuse)",
            plan.arena_bytes, plan.unshared_bytes
        ),
        Err(e) => e.to_string(),
    };
    format!(
        "{} kernel{} ({}) from {ops} ops, {memory}",
        p.kernels.len(),
        if p.kernels.len() == 1 { "" } else { "s" },
        counts.join(", "),
    )
}

/// The kernel programs of every function of `m` (dims must be static).
pub fn fuse_module(m: &terafab_ir::Module) -> Result<Vec<KernelProgram>, FuseError> {
    m.functions
        .iter()
        .map(|f| fuse_function(f, &Bindings::new()))
        .collect()
}

/// The memory plan of a kernel program's temporaries: one arena, the space of dead
/// temporaries reused (the planner of [`crate::memplan`], over kernels instead of nodes). A
/// temporary is live from the kernel that writes it to the last kernel that reads it; the
/// program's outputs live past the last kernel. Inputs and constants are not planned (the
/// caller and the weights own them); `weights_bytes` counts the constants. Each planned
/// buffer's `value` is its [`terafab_ir::kernel::BufferId`] number.
pub fn plan_kernel_memory(
    p: &KernelProgram,
) -> Result<crate::memplan::MemoryPlan, crate::memplan::MemPlanError> {
    use crate::memplan::{Buffer as Slot, MemPlanError, MemoryPlan, align_up, assign_offsets};
    let n = p.kernels.len();
    let too_large = |b: &Buffer| MemPlanError::TooLarge {
        func: p.name.clone(),
        value: b.name.clone(),
        ty: format!("{}{:?}", b.dtype, b.shape),
    };
    let mut slots: Vec<Slot> = Vec::new();
    let mut index: HashMap<BufferId, usize> = HashMap::new();
    let mut unshared = 0usize;
    let mut weights = (0usize, 0usize);
    for b in &p.buffers {
        if let Storage::Const(t) = &b.storage {
            weights.0 = weights.0.saturating_add(t.size_bytes());
            weights.1 += 1;
        }
    }
    for (i, k) in p.kernels.iter().enumerate() {
        for b in &k.inputs {
            if let Some(&s) = index.get(b) {
                slots[s].end = slots[s].end.max(i);
            }
        }
        for &b in &k.outputs {
            let buf = p.buffer(b);
            let size = buf
                .span()
                .checked_mul(buf.dtype.size_bytes())
                .filter(|&s| unshared.checked_add(align_up(s)).is_some())
                .ok_or_else(|| too_large(buf))?;
            unshared += align_up(size);
            index.insert(b, slots.len());
            slots.push(Slot {
                value: ValueId(b.0),
                name: buf.name.clone(),
                offset: 0,
                size,
                start: i,
                end: i,
            });
        }
    }
    for (_, b) in &p.outputs {
        if let Some(&s) = index.get(b) {
            slots[s].end = n;
        }
    }
    let arena_bytes = assign_offsets(&mut slots);
    Ok(MemoryPlan {
        function: p.name.clone(),
        num_nodes: n,
        arena_bytes,
        unshared_bytes: unshared,
        weights_bytes: weights.0,
        num_weights: weights.1,
        buffers: slots,
    })
}
