//! The reference interpreter: the oracle every backend is tested against.
//!
//! Plain and obviously correct rather than fast. [`run_function`] binds symbolic dims from the
//! inputs, runs the nodes in order (regions of `if`/`loop` included), checks every result against
//! its declared type, and reports errors naming the node. [`eval_op`] evaluates one region-free op.
//!
//! Semantics are documented on [`crate::op::Op`]; the kernels are grouped by family:
//! [`elementwise`] (unary, binary, compare, select, convert, iota), [`movement`] (broadcast,
//! reshape, transpose, slice, reverse, concat, pad, gather, scatter), [`reduce`] (reductions,
//! arg-reductions, cumulative, sort) and [`linalg`] (dot_general, conv, reduce_window).

pub mod elementwise;
pub mod linalg;
pub mod movement;
pub mod reduce;

use std::collections::HashMap;

use crate::composite::CompositeOp;
use crate::graph::{Function, Node, Region, TensorType, ValueId};
use crate::op::Op;
use crate::shape::{Dim, Shape};
use crate::tensor::{Tensor, TensorError};

/// Symbolic dims bound to extents while running a function.
pub type Bindings = HashMap<String, usize>;

/// An error while interpreting.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InterpError {
    /// An op was given operands it is not defined on (wrong dtype, rank, shape...).
    #[error("{0}")]
    Invalid(String),
    /// A run-time failure of a well-typed program (index out of range, ...).
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("expected {expected} inputs, got {actual}")]
    InputCount { expected: usize, actual: usize },
    #[error("input `{name}`: expected {expected}, got {dtype}{shape:?}")]
    InputType {
        name: String,
        expected: TensorType,
        dtype: crate::DType,
        shape: Vec<usize>,
    },
    #[error("symbolic dim `{0}` is not bound by any input")]
    Unbound(String),
    /// An error inside a node, with the node's op, source name and first result.
    #[error("in `{op}` (value %{value}{}): {source}", node.as_ref().map(|n| format!(", node \"{n}\"")).unwrap_or_default())]
    AtNode {
        op: &'static str,
        value: String,
        node: Option<String>,
        #[source]
        source: Box<InterpError>,
    },
}

/// Shorthand for an [`InterpError::Invalid`].
pub(crate) fn invalid(msg: impl Into<String>) -> InterpError {
    InterpError::Invalid(msg.into())
}

/// Resolve a (possibly symbolic) shape with the bindings.
pub fn resolve_shape(shape: &Shape, bind: &Bindings) -> Result<Vec<usize>, InterpError> {
    shape
        .dims()
        .iter()
        .map(|d| match d {
            Dim::Static(n) => Ok(*n),
            Dim::Sym(s) => bind
                .get(s)
                .copied()
                .ok_or_else(|| InterpError::Unbound(s.clone())),
        })
        .collect()
}

/// Evaluate one op without regions on concrete operands.
pub fn eval_op(op: &Op, inputs: &[Tensor], bind: &Bindings) -> Result<Vec<Tensor>, InterpError> {
    let arity = |n: usize| -> Result<(), InterpError> {
        if inputs.len() == n {
            Ok(())
        } else {
            Err(invalid(format!(
                "`{}` takes {n} operands, got {}",
                op.name(),
                inputs.len()
            )))
        }
    };
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Constant { value } => {
            arity(0)?;
            one(value.clone())
        }
        Op::Iota { dtype, shape, axis } => {
            arity(0)?;
            one(elementwise::iota(
                *dtype,
                &resolve_shape(shape, bind)?,
                *axis,
            )?)
        }
        Op::Unary(u) => {
            arity(1)?;
            one(elementwise::unary(*u, &inputs[0])?)
        }
        Op::Binary(b) => {
            arity(2)?;
            one(elementwise::binary(*b, &inputs[0], &inputs[1])?)
        }
        Op::Compare(c) => {
            arity(2)?;
            one(elementwise::compare(*c, &inputs[0], &inputs[1])?)
        }
        Op::Select => {
            arity(3)?;
            one(elementwise::select(&inputs[0], &inputs[1], &inputs[2])?)
        }
        Op::Convert { to } => {
            arity(1)?;
            one(elementwise::convert(&inputs[0], *to)?)
        }
        Op::Broadcast { shape } => {
            arity(1)?;
            one(movement::broadcast(
                &inputs[0],
                &resolve_shape(shape, bind)?,
            )?)
        }
        Op::Reshape { shape } => {
            arity(1)?;
            one(movement::reshape(&inputs[0], &resolve_shape(shape, bind)?)?)
        }
        Op::Transpose { perm } => {
            arity(1)?;
            one(movement::transpose(&inputs[0], perm)?)
        }
        Op::Slice {
            start,
            limit,
            stride,
        } => {
            arity(1)?;
            one(movement::slice(&inputs[0], start, limit, stride)?)
        }
        Op::Reverse { axes } => {
            arity(1)?;
            one(movement::reverse(&inputs[0], axes)?)
        }
        Op::Concat { axis } => one(movement::concat(inputs, *axis)?),
        Op::Pad {
            low,
            high,
            interior,
        } => {
            arity(2)?;
            one(movement::pad(&inputs[0], &inputs[1], low, high, interior)?)
        }
        Op::Gather { axis } => {
            arity(2)?;
            one(movement::gather(&inputs[0], &inputs[1], *axis)?)
        }
        Op::Scatter { mode } => {
            arity(3)?;
            one(movement::scatter(
                &inputs[0], &inputs[1], &inputs[2], *mode,
            )?)
        }
        Op::Reduce {
            kind,
            axes,
            keep_dims,
        } => {
            arity(1)?;
            one(reduce::reduce(&inputs[0], *kind, axes, *keep_dims)?)
        }
        Op::ArgReduce {
            is_max,
            axis,
            keep_dims,
            select_last,
        } => {
            arity(1)?;
            one(reduce::arg_reduce(
                &inputs[0],
                *is_max,
                *axis,
                *keep_dims,
                *select_last,
            )?)
        }
        Op::Cumulative {
            kind,
            axis,
            exclusive,
            reverse,
        } => {
            arity(1)?;
            one(reduce::cumulative(
                &inputs[0], *kind, *axis, *exclusive, *reverse,
            )?)
        }
        Op::Sort { axis, descending } => {
            arity(1)?;
            let (v, i) = reduce::sort(&inputs[0], *axis, *descending)?;
            Ok(vec![v, i])
        }
        Op::DotGeneral {
            lhs_batch,
            rhs_batch,
            lhs_contract,
            rhs_contract,
        } => {
            arity(2)?;
            one(linalg::dot_general(
                &inputs[0],
                &inputs[1],
                lhs_batch,
                rhs_batch,
                lhs_contract,
                rhs_contract,
            )?)
        }
        Op::Conv {
            stride,
            pad_low,
            pad_high,
            lhs_dilation,
            rhs_dilation,
            groups,
        } => {
            arity(2)?;
            one(linalg::conv(
                &inputs[0],
                &inputs[1],
                &linalg::ConvParams {
                    stride,
                    pad_low,
                    pad_high,
                    lhs_dilation,
                    rhs_dilation,
                    groups: *groups,
                },
            )?)
        }
        Op::ReduceWindow {
            kind,
            window,
            stride,
            dilation,
            pad_low,
            pad_high,
        } => {
            arity(1)?;
            one(linalg::reduce_window(
                &inputs[0],
                *kind,
                &linalg::WindowParams {
                    window,
                    stride,
                    dilation,
                    pad_low,
                    pad_high,
                },
            )?)
        }
        Op::Composite(c) => one(composite(c, inputs, bind)?),
        Op::If | Op::Loop => Err(invalid(format!(
            "`{}` has regions: run it through run_function",
            op.name()
        ))),
    }
}

/// A composite op, by evaluating its decomposition (its definition) node by node.
pub fn composite(
    c: &CompositeOp,
    inputs: &[Tensor],
    bind: &Bindings,
) -> Result<Tensor, InterpError> {
    let tys: Vec<TensorType> = inputs
        .iter()
        .map(|t| TensorType::from_static(t.dtype(), t.shape()))
        .collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    let d = c
        .decompose(&refs)
        .map_err(|e| invalid(format!("`{}`: {}", c.name(), e.0)))?;
    d.walk(
        inputs,
        |_, op, args| {
            let mut out = eval_op(op, &args, bind)?;
            match out.pop() {
                Some(t) if out.is_empty() => Ok(t),
                _ => Err(invalid(format!("`{}` is not single-result", op.name()))),
            }
        },
        || invalid(format!("`{}` decomposes to nothing", c.name())),
    )
}

/// Bound on loop iterations, so a runaway `loop` reports an error instead of hanging.
pub const MAX_LOOP_ITERATIONS: u64 = 1 << 24;

/// Run a function on concrete inputs (one per parameter, in order); returns its results.
pub fn run_function(f: &Function, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let bind = bind_inputs(f, inputs)?;
    let mut env = Env {
        f,
        vals: HashMap::new(),
        bind,
    };
    env.run_region(&f.body, inputs.to_vec())
}

/// Check concrete inputs against a function's parameter types and bind its symbolic dims.
pub fn bind_inputs(f: &Function, inputs: &[Tensor]) -> Result<Bindings, InterpError> {
    let params = f.inputs();
    if params.len() != inputs.len() {
        return Err(InterpError::InputCount {
            expected: params.len(),
            actual: inputs.len(),
        });
    }
    let mut bind = Bindings::new();
    for (&p, t) in params.iter().zip(inputs) {
        let info = f.values.get(p);
        if !bind_type(&info.ty, t, &mut bind) {
            return Err(InterpError::InputType {
                name: info.name.clone(),
                expected: info.ty.clone(),
                dtype: t.dtype(),
                shape: t.shape().to_vec(),
            });
        }
    }
    Ok(bind)
}

/// Check a tensor against a declared type, binding unbound symbols; false on mismatch.
fn bind_type(ty: &TensorType, t: &Tensor, bind: &mut Bindings) -> bool {
    if ty.dtype != t.dtype() || ty.shape.rank() != t.rank() {
        return false;
    }
    for (d, &n) in ty.shape.dims().iter().zip(t.shape()) {
        match d {
            Dim::Static(s) if *s != n => return false,
            Dim::Static(_) => {}
            Dim::Sym(s) => {
                if *bind.entry(s.clone()).or_insert(n) != n {
                    return false;
                }
            }
        }
    }
    true
}

struct Env<'f> {
    f: &'f Function,
    vals: HashMap<ValueId, Tensor>,
    bind: Bindings,
}

impl Env<'_> {
    fn get(&self, v: ValueId) -> Result<Tensor, InterpError> {
        self.vals.get(&v).cloned().ok_or_else(|| {
            invalid(format!(
                "value %{} is used before it is defined",
                self.f.values.name(v)
            ))
        })
    }

    fn run_region(&mut self, r: &Region, args: Vec<Tensor>) -> Result<Vec<Tensor>, InterpError> {
        if r.params.len() != args.len() {
            return Err(invalid(format!(
                "region takes {} arguments, got {}",
                r.params.len(),
                args.len()
            )));
        }
        for (&p, t) in r.params.iter().zip(args) {
            self.vals.insert(p, t);
        }
        for node in &r.nodes {
            self.run_node(node).map_err(|e| InterpError::AtNode {
                op: node.op.name(),
                value: node
                    .outputs
                    .first()
                    .map(|&v| self.f.values.name(v).to_string())
                    .unwrap_or_default(),
                node: node.name.clone(),
                source: Box::new(e),
            })?;
        }
        r.results.iter().map(|&v| self.get(v)).collect()
    }

    fn run_node(&mut self, node: &Node) -> Result<(), InterpError> {
        let inputs = node
            .inputs
            .iter()
            .map(|&v| self.get(v))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = match node.op {
            Op::If => self.run_if(node, &inputs)?,
            Op::Loop => self.run_loop(node, inputs)?,
            _ => eval_op(&node.op, &inputs, &self.bind)?,
        };
        if outputs.len() != node.outputs.len() {
            return Err(invalid(format!(
                "produced {} results, {} declared",
                outputs.len(),
                node.outputs.len()
            )));
        }
        for (&v, t) in node.outputs.iter().zip(outputs) {
            let ty = self.f.values.ty(v);
            if !bind_type(ty, &t, &mut self.bind) {
                return Err(invalid(format!(
                    "result %{} is {}{:?} but is declared {ty}",
                    self.f.values.name(v),
                    t.dtype(),
                    t.shape()
                )));
            }
            self.vals.insert(v, t);
        }
        Ok(())
    }

    fn run_if(&mut self, node: &Node, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
        let [cond] = inputs else {
            return Err(invalid("`if` takes one operand"));
        };
        let c = scalar_bool(cond)
            .ok_or_else(|| invalid("`if` condition must be a one-element bool tensor"))?;
        let [then_r, else_r] = &node.regions[..] else {
            return Err(invalid("`if` needs two regions"));
        };
        self.run_region(if c { then_r } else { else_r }, vec![])
    }

    fn run_loop(&mut self, node: &Node, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, InterpError> {
        let [body] = &node.regions[..] else {
            return Err(invalid("`loop` needs one region"));
        };
        if inputs.len() < 2 {
            return Err(invalid(
                "`loop` takes a trip count, a condition and carried values",
            ));
        }
        let max_trip = inputs[0]
            .to_i64_vec()
            .filter(|v| v.len() == 1)
            .ok_or_else(|| invalid("`loop` trip count must be a one-element integer tensor"))?[0];
        let mut cond = scalar_bool(&inputs[1])
            .ok_or_else(|| invalid("`loop` condition must be a one-element bool tensor"))?;
        let mut carried: Vec<Tensor> = inputs[2..].to_vec();
        let n_scan = body
            .results
            .len()
            .checked_sub(1 + carried.len())
            .ok_or_else(|| invalid("`loop` body yields fewer values than it carries"))?;
        let mut scans: Vec<Vec<Tensor>> = vec![Vec::new(); n_scan];
        let mut i: i64 = 0;
        while i < max_trip && cond {
            if i as u64 >= MAX_LOOP_ITERATIONS {
                return Err(InterpError::Runtime(format!(
                    "`loop` ran more than {MAX_LOOP_ITERATIONS} iterations"
                )));
            }
            let mut args = vec![Tensor::scalar(i), Tensor::scalar(cond)];
            args.extend(carried);
            let mut out = self.run_region(body, args)?.into_iter();
            cond = scalar_bool(&out.next().expect("counted above"))
                .ok_or_else(|| invalid("`loop` body must yield a one-element bool condition"))?;
            carried = out.by_ref().take(inputs.len() - 2).collect();
            for (s, t) in scans.iter_mut().zip(out) {
                s.push(t);
            }
            i += 1;
        }
        let mut results = carried;
        for (k, s) in scans.into_iter().enumerate() {
            results.push(stack(s, self.f.values.ty(node.outputs[results.len()]), k)?);
        }
        Ok(results)
    }
}

/// Stack per-iteration scan values along a new leading dim.
fn stack(items: Vec<Tensor>, declared: &TensorType, k: usize) -> Result<Tensor, InterpError> {
    let Some(first) = items.first() else {
        // No iteration ran: an empty tensor whose trailing dims come from the declared type.
        let mut dims = vec![0];
        for d in declared.shape.dims().iter().skip(1) {
            dims.push(d.as_static().ok_or_else(|| {
                invalid(format!(
                    "scan output {k} of a zero-trip loop has a symbolic dim"
                ))
            })?);
        }
        return Ok(Tensor::zeros(declared.dtype, &dims)?);
    };
    if items
        .iter()
        .any(|t| t.shape() != first.shape() || t.dtype() != first.dtype())
    {
        return Err(invalid(format!(
            "scan output {k} changes shape between iterations"
        )));
    }
    let mut reshaped = Vec::with_capacity(items.len());
    for t in &items {
        let mut dims = vec![1];
        dims.extend_from_slice(t.shape());
        reshaped.push(t.reshaped(dims)?);
    }
    movement::concat(&reshaped, 0)
}

fn scalar_bool(t: &Tensor) -> Option<bool> {
    match t.as_slice::<bool>() {
        Some([b]) => Some(*b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_function;

    fn run(src: &str, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
        let f = parse_function(src).unwrap_or_else(|e| panic!("{e}"));
        crate::verify::verify_function(&f).unwrap_or_else(|e| panic!("{e}"));
        run_function(&f, inputs)
    }

    fn f32s(dims: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(dims.to_vec(), v.to_vec()).unwrap()
    }

    const IF_SRC: &str = "\
func @main(%c: bool[], %x: f32[2]) -> (r: f32[2]) {
  %r = if(%c) : f32[2] region() {
    %t = neg(%x) : f32[2]
    yield %t
  } region() {
    %one = constant() {value=dense<f32[]>[1.0]} : f32[]
    %e = add(%x, %one) : f32[2]
    yield %e
  }
  return %r
}";

    #[test]
    fn if_runs_the_then_region() {
        let out = run(IF_SRC, &[Tensor::scalar(true), f32s(&[2], &[1.0, -2.0])]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-1.0, 2.0]);
    }

    #[test]
    fn if_runs_the_else_region_with_captured_values() {
        let out = run(IF_SRC, &[Tensor::scalar(false), f32s(&[2], &[1.0, -2.0])]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2.0, -1.0]);
    }

    #[test]
    fn if_accepts_a_one_element_condition_and_rejects_others() {
        let src = IF_SRC.replace("%c: bool[]", "%c: bool[1]");
        let cond = Tensor::from_vec(vec![1], vec![true]).unwrap();
        let out = run(&src, &[cond, f32s(&[2], &[3.0, 4.0])]).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-3.0, -4.0]);
        // A condition of two elements: the driver refuses it (the verifier would too).
        let src2 = IF_SRC.replace("%c: bool[]", "%c: bool[2]");
        let f = parse_function(&src2).unwrap();
        let cond = Tensor::from_vec(vec![2], vec![true, false]).unwrap();
        let e = run_function(&f, &[cond, f32s(&[2], &[3.0, 4.0])]).unwrap_err();
        assert!(e.to_string().contains("one-element bool"), "{e}");
    }

    /// Sums 0..n while `acc < limit`, and stacks each iteration's counter as a scan output.
    const LOOP_SRC: &str = "\
func @main(%n: i64[], %limit: i64[]) -> (acc: i64[], steps: i64[T]) {
  %true = constant() {value=dense<bool[]>[true]} : bool[]
  %zero = constant() {value=dense<i64[]>[0]} : i64[]
  %acc, %steps = loop(%n, %true, %zero) : i64[], i64[T] region(%i: i64[], %c: bool[], %a: i64[]) {
    %next = add(%a, %i) : i64[]
    %more = lt(%next, %limit) : bool[]
    yield %more, %next, %i
  }
  return %acc, %steps
}";

    #[test]
    fn loop_runs_to_the_trip_count_and_stacks_scans() {
        let out = run(LOOP_SRC, &[Tensor::scalar(5i64), Tensor::scalar(1000i64)]).unwrap();
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[10]);
        assert_eq!(out[1].shape(), &[5]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 1, 2, 3, 4]);
    }

    #[test]
    fn loop_stops_when_the_body_condition_is_false() {
        // 0+1+2+3 = 6 >= 5 stops after the iteration with i = 3.
        let out = run(LOOP_SRC, &[Tensor::scalar(100i64), Tensor::scalar(5i64)]).unwrap();
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[6]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[0, 1, 2, 3]);
    }

    #[test]
    fn loop_with_zero_trips_gives_initial_values_and_empty_scans() {
        let out = run(LOOP_SRC, &[Tensor::scalar(0i64), Tensor::scalar(5i64)]).unwrap();
        assert_eq!(out[0].as_slice::<i64>().unwrap(), &[0]);
        assert_eq!(out[1].shape(), &[0]);
        // A negative trip count also runs nothing.
        let out = run(LOOP_SRC, &[Tensor::scalar(-3i64), Tensor::scalar(5i64)]).unwrap();
        assert_eq!(out[1].shape(), &[0]);
    }

    #[test]
    fn inputs_are_checked_and_symbols_bound_consistently() {
        let src = "\
func @main(%a: f32[N], %b: f32[N]) -> (s: f32[N]) {
  %s = add(%a, %b) : f32[N]
  return %s
}";
        let f = parse_function(src).unwrap();
        let ok = run_function(&f, &[f32s(&[3], &[1., 2., 3.]), f32s(&[3], &[1., 1., 1.])]).unwrap();
        assert_eq!(ok[0].as_slice::<f32>().unwrap(), &[2., 3., 4.]);
        let e = run_function(&f, &[f32s(&[3], &[1., 2., 3.]), f32s(&[2], &[1., 1.])]).unwrap_err();
        assert!(matches!(e, InterpError::InputType { .. }), "{e}");
        let e = run_function(&f, &[f32s(&[3], &[1., 2., 3.])]).unwrap_err();
        assert!(
            matches!(
                e,
                InterpError::InputCount {
                    expected: 2,
                    actual: 1
                }
            ),
            "{e}"
        );
        let e = run_function(&f, &[Tensor::scalar(1i32), f32s(&[1], &[1.])]).unwrap_err();
        assert!(matches!(e, InterpError::InputType { .. }), "{e}");
    }

    #[test]
    fn runtime_errors_name_the_node() {
        let src = "\
func @main(%x: f32[3], %i: i64[1]) -> (y: f32[1]) {
  %y = gather(%x, %i) {axis=0} : f32[1] loc(\"Gather_7\")
  return %y
}";
        let f = parse_function(src).unwrap();
        let e = run_function(
            &f,
            &[
                f32s(&[3], &[1., 2., 3.]),
                Tensor::from_vec(vec![1], vec![5i64]).unwrap(),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("gather") && e.contains("Gather_7") && e.contains("%y"),
            "{e}"
        );
    }
}
