//! Reverse-mode automatic differentiation of graph IR functions.
//!
//! [`grad`] takes a function, the values to differentiate with respect to (function inputs,
//! constants such as imported initializers, or any other top-level value, chosen by id; see
//! [`grad_by_name`] to choose them by name) and one float output, and returns a function with
//! the same inputs computing the original outputs followed by one gradient per chosen value:
//! `d sum(output) / d value`, of the value's type (for a scalar output, the plain derivative).
//!
//! How it works: an activity analysis marks the float values that depend on a chosen value and
//! that the output depends on; the nodes are then visited in reverse order and each active node's
//! vector-Jacobian product rule (one file per op family: [`elementwise`], [`movement`],
//! [`reduce`], [`linalg`]) turns the adjoints of its results into contributions to the adjoints
//! of its active operands. Contributions to a value used several times are summed (fan-out);
//! contributions to a broadcast operand are summed back to its shape. The gradient nodes are
//! appended after the original ones, so the forward values are reused, and the result passes
//! the verifier.
//!
//! Per op (ops not listed have no float operand or no float result, so no gradient passes
//! through them: `compare`, `argmax`/`argmin`, `iota`, `constant`, `is_nan`, `is_inf`, `not`,
//! bitwise and shift ops, `convert` to or from an integer or bool type):
//!
//! - unary math ops, `add`, `sub`, `mul`, `div`, `rem`, `pow`, `max`, `min`, `select`,
//!   `convert` (float to float), `broadcast`, `reshape`, `transpose`, `slice`, `reverse`,
//!   `concat`, `pad`, `gather` (scatter-add back), `scatter` (`replace` and `add`),
//!   `reduce_sum` / `max` / `min` / `prod`, `cumsum`, `dot_general`, `conv` (stride, padding,
//!   dilations, groups), `reduce_window_sum` / `max` / `min`, `sort` (the sorted values'
//!   adjoint scattered back through the indices): exact rules.
//! - ties: `max`/`min` (binary) split the gradient evenly between equal operands,
//!   `reduce_max`/`reduce_min` evenly among the equal maxima, `reduce_window_max`/`min` give
//!   it to the first maximum of each window (as XLA's select-and-scatter).
//! - `pow`: the gradient for the base is 0 where the exponent is 0, and the gradient for the
//!   exponent is 0 where the base is 0 (the limits), NaN for a negative base.
//! - `sign`, `floor`, `ceil`, `round`: zero gradient (piecewise constant).
//! - composite ops: through their decomposition (recomputed in the gradient part; the forward
//!   node stays a composite).
//! - not differentiable (an [`AutodiffError::NotDifferentiable`] naming the node when it lies on
//!   a path from a chosen value to the output): `scatter` with mode `mul`/`max`/`min`,
//!   `cumprod`/`cummax`/`cummin`, `reduce_window_prod`, `if` and `loop`.
//!
//! The `autodiff` pass of the registry ([`Autodiff`]) differentiates a function with one float
//! output with respect to all its float inputs.

mod elementwise;
mod linalg;
mod movement;
mod reduce;

use std::collections::{HashMap, HashSet};

use terafab_ir::infer::infer;
use terafab_ir::verify::{VerifyError, verify_function};
use terafab_ir::{
    BinaryOp, CompareOp, DType, Dim, Function, Node, Op, Shape, Tensor, TensorType, UnaryOp,
    ValueId,
};

use crate::util::region_uses;
use crate::{Pass, PassError};

/// Why a gradient could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AutodiffError {
    #[error("the function has {count} output(s); output {index} does not exist")]
    NoOutput { index: usize, count: usize },
    #[error("no value named `{0}` in the function")]
    UnknownValue(String),
    #[error("value %{0} is not a top-level value of the function")]
    NotTopLevel(String),
    #[error("`{name}` has type {ty}: only float values can be differentiated")]
    NotFloat { name: String, ty: TensorType },
    #[error("{node}: `{op}` is not differentiable ({reason})")]
    NotDifferentiable {
        op: String,
        node: String,
        reason: String,
    },
    #[error("{node}: building the gradient of `{op}`: {message}")]
    Build {
        op: String,
        node: String,
        message: String,
    },
    #[error("the gradient function does not verify: {0}")]
    Verify(Box<VerifyError>),
}

/// The gradient of `f`'s output `output` with respect to the values `wrt` (top-level values of
/// `f`: inputs, constants or node results). See the module doc for the result's layout.
pub fn grad(f: &Function, wrt: &[ValueId], output: usize) -> Result<Function, AutodiffError> {
    let &out = f.outputs().get(output).ok_or(AutodiffError::NoOutput {
        index: output,
        count: f.outputs().len(),
    })?;
    let top: HashSet<ValueId> = f
        .inputs()
        .iter()
        .copied()
        .chain(f.body.nodes.iter().flat_map(|n| n.outputs.iter().copied()))
        .collect();
    for &v in wrt.iter().chain([&out]) {
        let info = f
            .values
            .get_checked(v)
            .ok_or_else(|| AutodiffError::UnknownValue(format!("#{}", v.0)))?;
        if !top.contains(&v) {
            return Err(AutodiffError::NotTopLevel(info.name.clone()));
        }
        if !info.ty.dtype.is_float() {
            return Err(AutodiffError::NotFloat {
                name: info.name.clone(),
                ty: info.ty.clone(),
            });
        }
    }
    let active = activity(f, wrt, out);
    let mut g = Grad {
        f: f.clone(),
        node: String::new(),
        op: String::new(),
        node_name: None,
    };
    let mut adj: HashMap<ValueId, ValueId> = HashMap::new();
    if active.contains(&out) {
        g.node = "the seed".into();
        let ty = f.values.ty(out).clone();
        let one = g.splat(1.0, &ty)?;
        adj.insert(out, one);
        let nodes = &f.body.nodes;
        g.backprop(nodes, &mut adj, &|v| active.contains(&v))?;
    }
    for &w in wrt {
        let ty = f.values.ty(w).clone();
        let name = format!("grad_{}", f.values.name(w));
        let v = match adj.get(&w) {
            Some(&v) => v,
            None => {
                g.node = format!("the gradient of %{}", f.values.name(w));
                g.splat(0.0, &ty)?
            }
        };
        g.f.add_output(&name, v);
    }
    verify_function(&g.f).map_err(|e| AutodiffError::Verify(Box::new(e)))?;
    Ok(g.f)
}

/// [`grad`] with the values and the output chosen by name (the output by its output name, or
/// the name of the value it returns).
pub fn grad_by_name(f: &Function, wrt: &[&str], output: &str) -> Result<Function, AutodiffError> {
    let wrt = wrt
        .iter()
        .map(|n| {
            f.values
                .lookup(n)
                .ok_or_else(|| AutodiffError::UnknownValue(n.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let index = f
        .output_names
        .iter()
        .position(|n| n == output)
        .or_else(|| {
            let v = f.values.lookup(output)?;
            f.outputs().iter().position(|&o| o == v)
        })
        .ok_or_else(|| AutodiffError::UnknownValue(output.to_string()))?;
    grad(f, &wrt, index)
}

/// The registered pass `autodiff`: a function with exactly one float output gets one more
/// output per float input, the gradient of the first output with respect to that input
/// (`grad_<input>`). Functions with more than one output or a non-float output are errors.
pub struct Autodiff;

impl Pass for Autodiff {
    fn name(&self) -> &'static str {
        "autodiff"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let fail = |message: String| PassError::Failed {
            pass: "autodiff".into(),
            func: f.name.clone(),
            message,
        };
        if f.outputs().len() != 1 {
            return Err(fail(format!(
                "needs a function with exactly one output, found {}",
                f.outputs().len()
            )));
        }
        let wrt: Vec<ValueId> = f
            .inputs()
            .iter()
            .copied()
            .filter(|&v| f.values.ty(v).dtype.is_float())
            .collect();
        let g = grad(f, &wrt, 0).map_err(|e| fail(e.to_string()))?;
        *f = g;
        Ok(!wrt.is_empty())
    }
}

/// The float values that depend on a value of `wrt` and that `out` depends on.
fn activity(f: &Function, wrt: &[ValueId], out: ValueId) -> HashSet<ValueId> {
    let is_float = |v: ValueId| f.values.ty(v).dtype.is_float();
    let uses = |n: &Node| {
        let mut u = n.inputs.clone();
        for r in &n.regions {
            region_uses(r, &mut u);
        }
        u
    };
    let mut fwd: HashSet<ValueId> = wrt.iter().copied().collect();
    for n in &f.body.nodes {
        if uses(n).iter().any(|v| fwd.contains(v)) {
            fwd.extend(n.outputs.iter().copied().filter(|&v| is_float(v)));
        }
    }
    let mut bwd: HashSet<ValueId> = HashSet::from([out]);
    for n in f.body.nodes.iter().rev() {
        if n.outputs.iter().any(|v| bwd.contains(v)) {
            bwd.extend(uses(n));
        }
    }
    fwd.intersection(&bwd)
        .copied()
        .filter(|&v| is_float(v))
        .collect()
}

const CONTROL_FLOW: &str =
    "control flow is not differentiated; gradients through regions are not supported";

/// The gradient function under construction.
pub(crate) struct Grad {
    /// The original function, gradient nodes appended to its body.
    f: Function,
    /// A description of the node whose rule is being built, for errors.
    node: String,
    op: String,
    /// The source name of that node; gradient nodes get `<name>/grad`.
    node_name: Option<String>,
}

/// What a rule produces: a contribution to the adjoint of each operand (`None`: none).
pub(crate) type Contribs = Vec<Option<ValueId>>;

impl Grad {
    /// Visit `nodes` in reverse, turning the adjoints in `adj` (of results) into adjoints of
    /// operands for which `need` holds.
    fn backprop(
        &mut self,
        nodes: &[Node],
        adj: &mut HashMap<ValueId, ValueId>,
        need: &dyn Fn(ValueId) -> bool,
    ) -> Result<(), AutodiffError> {
        for n in nodes.iter().rev() {
            let gs: Vec<Option<ValueId>> = n.outputs.iter().map(|o| adj.get(o).copied()).collect();
            if gs.iter().all(Option::is_none) {
                continue;
            }
            let mut captured = Vec::new();
            for r in &n.regions {
                region_uses(r, &mut captured);
            }
            let needs: Vec<bool> = n.inputs.iter().map(|&v| need(v)).collect();
            if !needs.iter().any(|&b| b) && !captured.iter().any(|&v| need(v)) {
                continue;
            }
            self.op = n.op.name().to_string();
            self.node = describe(&self.f, n);
            self.node_name = n.name.as_ref().map(|s| format!("{s}/grad"));
            let contribs = self.vjp(n, &gs, &needs)?;
            for ((&x, c), &nd) in n.inputs.iter().zip(contribs).zip(&needs) {
                let Some(c) = c else { continue };
                if !nd {
                    continue;
                }
                let c = self.fit(c, x)?;
                let acc = match adj.get(&x) {
                    Some(&prev) => self.bin(BinaryOp::Add, prev, c)?,
                    None => c,
                };
                adj.insert(x, acc);
            }
        }
        Ok(())
    }

    /// Check a contribution has its operand's type (a rule bug otherwise, reported as such).
    fn fit(&mut self, c: ValueId, x: ValueId) -> Result<ValueId, AutodiffError> {
        let (ct, xt) = (self.ty(c), self.ty(x));
        if ct == xt {
            return Ok(c);
        }
        if ct.dtype == xt.dtype && ct.shape.rank() == xt.shape.rank() {
            // Equal extents spelled differently (a static dim for a symbolic one).
            return self.op1(Op::Reshape { shape: xt.shape }, &[c]);
        }
        Err(self.build(format!(
            "a gradient of type {ct} for an operand of type {xt}"
        )))
    }

    /// The vector-Jacobian product of one node: `gs` are the adjoints of its results.
    fn vjp(
        &mut self,
        n: &Node,
        gs: &[Option<ValueId>],
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        if matches!(n.op, Op::If | Op::Loop) {
            return Err(self.not_diff(CONTROL_FLOW));
        }
        // Every other op has at most one float result, its first.
        let Some(g0) = gs[0] else {
            return Ok(vec![None; n.inputs.len()]);
        };
        let x = &n.inputs;
        let y = &n.outputs;
        match &n.op {
            Op::Constant { .. } | Op::Iota { .. } => Ok(vec![]),
            Op::Unary(u) => Ok(vec![self.unary_vjp(*u, x[0], y[0], g0)?]),
            Op::Binary(b) => self.binary_vjp(*b, x[0], x[1], y[0], g0, need),
            Op::Compare(_) | Op::ArgReduce { .. } => Ok(vec![None; x.len()]),
            Op::Select => self.select_vjp(x, g0, need),
            Op::Convert { .. } => {
                let dt = self.ty(x[0]).dtype;
                Ok(vec![Some(self.op1(Op::Convert { to: dt }, &[g0])?)])
            }
            Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Slice { .. }
            | Op::Reverse { .. }
            | Op::Concat { .. }
            | Op::Pad { .. }
            | Op::Gather { .. }
            | Op::Scatter { .. } => self.movement_vjp(&n.op, x, g0, need),
            Op::Reduce { .. } | Op::Cumulative { .. } => self.reduce_vjp(&n.op, x[0], y[0], g0),
            Op::DotGeneral { .. } | Op::Conv { .. } | Op::ReduceWindow { .. } => {
                self.linalg_vjp(&n.op, x, y[0], g0, need)
            }
            Op::Composite(c) => {
                let tys: Vec<TensorType> = x.iter().map(|&v| self.ty(v)).collect();
                let refs: Vec<&TensorType> = tys.iter().collect();
                let d = c
                    .decompose(&refs)
                    .map_err(|e| self.build(format!("decomposing: {}", e.0)))?;
                // Recompute the decomposition, then backpropagate through it.
                let empty = self.build("empty decomposition".into());
                let mut local: Vec<Node> = Vec::new();
                let r = d.walk(
                    x,
                    |_, op, args| {
                        let v = self.op1(op.clone(), &args)?;
                        local.push(Node {
                            op: op.clone(),
                            inputs: args,
                            outputs: vec![v],
                            regions: vec![],
                            name: None,
                        });
                        Ok(v)
                    },
                    || empty,
                )?;
                let (saved_node, saved_op) = (self.node.clone(), self.op.clone());
                let mut adj = HashMap::from([(r, g0)]);
                let values = self.f.values.clone();
                let need_in: HashMap<ValueId, bool> =
                    x.iter().copied().zip(need.iter().copied()).collect();
                let need_fn = |v: ValueId| match need_in.get(&v) {
                    Some(&b) => b,
                    None => values.ty(v).dtype.is_float(),
                };
                self.backprop(&local, &mut adj, &need_fn)?;
                self.node = saved_node;
                self.op = saved_op;
                // A value used twice as an operand gets its total once.
                Ok(x.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        if x[..i].contains(v) {
                            None
                        } else {
                            adj.get(v).copied()
                        }
                    })
                    .collect())
            }
            Op::Sort { axis, .. } => Ok(vec![Some(self.sort_vjp(x[0], y[1], g0, *axis)?)]),
            Op::If | Op::Loop => Err(self.not_diff(CONTROL_FLOW)),
        }
    }

    // ---- errors ------------------------------------------------------------------------------

    pub(crate) fn build(&self, message: String) -> AutodiffError {
        AutodiffError::Build {
            op: self.op.clone(),
            node: self.node.clone(),
            message,
        }
    }

    pub(crate) fn not_diff(&self, reason: &str) -> AutodiffError {
        AutodiffError::NotDifferentiable {
            op: self.op.clone(),
            node: self.node.clone(),
            reason: reason.into(),
        }
    }

    // ---- building nodes ----------------------------------------------------------------------

    pub(crate) fn ty(&self, v: ValueId) -> TensorType {
        self.f.values.ty(v).clone()
    }

    /// The static dims of `v`, or an error saying the rule needs them.
    pub(crate) fn dims(&self, v: ValueId) -> Result<Vec<usize>, AutodiffError> {
        let t = self.ty(v);
        t.shape.as_static().ok_or_else(|| {
            self.build(format!(
                "needs the static shape of %{}, found {}",
                self.f.values.name(v),
                t.shape
            ))
        })
    }

    /// Append a node; its result types come from the type rules.
    pub(crate) fn op_n(
        &mut self,
        op: Op,
        inputs: &[ValueId],
    ) -> Result<Vec<ValueId>, AutodiffError> {
        let tys: Vec<TensorType> = inputs.iter().map(|&v| self.ty(v)).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let out = infer(&op, &refs).map_err(|e| self.build(format!("`{}`: {}", op.name(), e.0)))?;
        let name = self.node_name.clone();
        Ok(self.f.push(op, inputs.to_vec(), out, &[], vec![], name))
    }

    pub(crate) fn op1(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, AutodiffError> {
        Ok(self.op_n(op, inputs)?[0])
    }

    /// A scalar constant of `dtype`.
    pub(crate) fn scalar(&mut self, v: f64, dtype: DType) -> Result<ValueId, AutodiffError> {
        let t = Tensor::from_fn(dtype, &[], |_| v).map_err(|e| self.build(e.to_string()))?;
        self.op1(Op::Constant { value: t }, &[])
    }

    /// `v` broadcast to `ty`.
    pub(crate) fn splat(&mut self, v: f64, ty: &TensorType) -> Result<ValueId, AutodiffError> {
        let s = self.scalar(v, ty.dtype)?;
        if ty.shape.rank() == 0 {
            return Ok(s);
        }
        self.op1(
            Op::Broadcast {
                shape: ty.shape.clone(),
            },
            &[s],
        )
    }

    pub(crate) fn un(&mut self, u: UnaryOp, x: ValueId) -> Result<ValueId, AutodiffError> {
        self.op1(Op::Unary(u), &[x])
    }

    pub(crate) fn bin(
        &mut self,
        b: BinaryOp,
        x: ValueId,
        y: ValueId,
    ) -> Result<ValueId, AutodiffError> {
        self.op1(Op::Binary(b), &[x, y])
    }

    pub(crate) fn mul(&mut self, x: ValueId, y: ValueId) -> Result<ValueId, AutodiffError> {
        self.bin(BinaryOp::Mul, x, y)
    }

    /// `x * k` for a scalar constant `k`.
    pub(crate) fn mul_k(&mut self, x: ValueId, k: f64) -> Result<ValueId, AutodiffError> {
        let c = self.scalar(k, self.ty(x).dtype)?;
        self.mul(x, c)
    }

    pub(crate) fn cmp(
        &mut self,
        c: CompareOp,
        x: ValueId,
        y: ValueId,
    ) -> Result<ValueId, AutodiffError> {
        self.op1(Op::Compare(c), &[x, y])
    }

    pub(crate) fn select(
        &mut self,
        c: ValueId,
        a: ValueId,
        b: ValueId,
    ) -> Result<ValueId, AutodiffError> {
        self.op1(Op::Select, &[c, a, b])
    }

    pub(crate) fn reshape(&mut self, x: ValueId, shape: Shape) -> Result<ValueId, AutodiffError> {
        if self.ty(x).shape == shape {
            return Ok(x);
        }
        self.op1(Op::Reshape { shape }, &[x])
    }

    pub(crate) fn transpose(
        &mut self,
        x: ValueId,
        perm: Vec<usize>,
    ) -> Result<ValueId, AutodiffError> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(x);
        }
        self.op1(Op::Transpose { perm }, &[x])
    }

    /// Sum `g` (of a broadcast result's shape) back to the shape of `to`'s type: over the
    /// leading dims `to` lacks and over the dims where `to` has extent 1 and `g` does not.
    pub(crate) fn unbroadcast(
        &mut self,
        g: ValueId,
        to: &TensorType,
    ) -> Result<ValueId, AutodiffError> {
        let gt = self.ty(g);
        if gt.shape == to.shape {
            return Ok(g);
        }
        let (gr, tr) = (gt.shape.rank(), to.shape.rank());
        if tr > gr {
            return Err(self.build(format!("cannot sum {} back to {}", gt.shape, to.shape)));
        }
        let lead = gr - tr;
        let mut axes: Vec<usize> = (0..lead).collect();
        for (i, d) in to.shape.0.iter().enumerate() {
            if d == &Dim::Static(1) && gt.shape.0[lead + i] != Dim::Static(1) {
                axes.push(lead + i);
            }
        }
        let s = if axes.is_empty() {
            g
        } else {
            self.op1(
                Op::Reduce {
                    kind: terafab_ir::ReduceKind::Sum,
                    axes,
                    keep_dims: false,
                },
                &[g],
            )?
        };
        self.reshape(s, to.shape.clone())
    }

    /// `g` reshaped to `x`'s rank with the dims in `axes` of extent 1 (undoing a reduction
    /// without `keep_dims`).
    pub(crate) fn keep_dims(
        &mut self,
        g: ValueId,
        x: &TensorType,
        axes: &[usize],
    ) -> Result<ValueId, AutodiffError> {
        let dims = x
            .shape
            .0
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if axes.contains(&i) {
                    Dim::Static(1)
                } else {
                    d.clone()
                }
            })
            .collect();
        self.reshape(g, Shape(dims))
    }
}

/// `` `op` %first_result (node "name") `` for errors.
fn describe(f: &Function, n: &Node) -> String {
    let mut s = format!("`{}`", n.op.name());
    if let Some(&v) = n.outputs.first() {
        s.push_str(&format!(" %{}", f.values.name(v)));
    }
    if let Some(name) = &n.name {
        s.push_str(&format!(" (node \"{name}\")"));
    }
    s
}

#[cfg(test)]
mod tests;
