//! The `ai.onnx.preview.training` domain (version 1): `Gradient`, `Momentum`, `Adam`, `Adagrad`.
//!
//! The optimizers decompose (through the formulas of `terafab_passes::train::optim`, shared with
//! `terafab train`) into elementwise core ops with the semantics of ONNX's reference
//! implementation, computed in the element type of the optimized tensors (the learning rate `R`
//! is converted to it; the step count `T` is an i64 scalar). Each takes `R`, `T`, then `n`
//! tensors of each kind (`X1..Xn`, `G1..Gn`, state `V1..Vn` / `H1..Hn`) and returns the new
//! tensors and the new states, in the same grouping. `T > 0` selects the bias-corrected forms
//! at run time (a `select`), so one graph serves every step.
//!
//! - `Adagrad {decay_factor, epsilon, norm_coefficient}`: `g = norm_coefficient x + g`,
//!   `h' = h + g²`, `x' = x - r / (1 + t decay_factor) · g / (sqrt(h') + epsilon)`.
//! - `Momentum {alpha, beta, mode, norm_coefficient}`: `g = norm_coefficient x + g`,
//!   `v' = alpha v + (t > 0 ? beta : 1) g`; `standard`: `x' = x - r v'`; `nesterov`:
//!   `x' = x - r (g + alpha v')`.
//! - `Adam {alpha, beta, epsilon, norm_coefficient, norm_coefficient_post}`:
//!   `g = norm_coefficient x + g`, `v' = alpha v + (1 - alpha) g`, `h' = beta h + (1 - beta) g²`,
//!   `r' = t > 0 ? r sqrt(1 - beta^t) / (1 - alpha^t) : r`,
//!   `x' = (1 - norm_coefficient_post) (x - r' v' / (sqrt(h') + epsilon))`.
//! - `Gradient {xs, zs, y}`: the gradient of `y` (a tensor of the enclosing graph; for a
//!   non-scalar `y`, of the sum of its elements) with respect to the tensors named by `xs`, with
//!   the node's inputs fed in place of the tensors named by `xs` then `zs`. The part of the graph
//!   computing `y` from those tensors is cut out as a function (every other value it uses is an
//!   extra, constant input), differentiated by [`terafab_passes::autodiff::grad`], and the
//!   result is inlined here.

use std::collections::{HashMap, HashSet};

use terafab_ir::{DType, Function, Op, ValueId};
use terafab_passes::autodiff;
use terafab_passes::train::optim;

use super::*;

/// The domain name.
pub const DOMAIN: &str = "ai.onnx.preview.training";

type Outs = Result<Vec<ValueId>, ImportError>;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("Adagrad", adagrad),
    ("Adam", adam),
    ("Gradient", gradient),
    ("Momentum", momentum),
];

fn check_version(c: &NodeCtx) -> Result<(), ImportError> {
    if c.opset != 1 {
        return Err(c.unsupported(format!(
            "version {} of domain {DOMAIN} (terafab implements version 1)",
            c.opset
        )));
    }
    Ok(())
}

/// A required float attribute.
fn required(c: &NodeCtx, name: &str) -> Result<f64, ImportError> {
    c.attr_float(name)?
        .map(f64::from)
        .ok_or_else(|| c.invalid(format!("attribute `{name}` is required")))
}

/// The common operands of the optimizers: `R` and `T`, then `groups` lists of `n` tensors.
struct Operands {
    r: ValueId,
    t: ValueId,
    groups: Vec<Vec<ValueId>>,
}

fn operands(c: &mut NodeCtx, groups: usize) -> Result<Operands, ImportError> {
    check_version(c)?;
    let k = c.num_inputs();
    if k < 2 + groups || !(k - 2).is_multiple_of(groups) {
        return Err(c.invalid(format!(
            "takes R, T and {groups} groups of equally many tensors, got {k} inputs"
        )));
    }
    let n = (k - 2) / groups;
    if c.num_outputs() > (groups - 1) * n {
        return Err(c.invalid(format!(
            "has {} outputs, at most {} for {n} tensors",
            c.num_outputs(),
            (groups - 1) * n
        )));
    }
    let r = c.input(0)?;
    let t = c.input(1)?;
    if !c.dtype(r).is_float() || c.rank(r) != 0 {
        return Err(c.invalid("R must be a float scalar"));
    }
    if c.dtype(t) != DType::I64 || c.rank(t) != 0 {
        return Err(c.invalid("T must be an i64 scalar"));
    }
    let mut gs = Vec::with_capacity(groups);
    for gi in 0..groups {
        let vs = (0..n)
            .map(|i| c.input(2 + gi * n + i))
            .collect::<Result<Vec<_>, _>>()?;
        gs.push(vs);
    }
    for i in 0..n {
        let x = c.ty(gs[0][i]).clone();
        if !matches!(x.dtype, DType::F32 | DType::F64 | DType::F16 | DType::BF16) {
            return Err(c.invalid(format!("optimized tensors must be float, found {x}")));
        }
        for g in &gs[1..] {
            if c.ty(g[i]) != &x {
                return Err(c.invalid(format!("tensor {i}: {} does not match {x}", c.ty(g[i]))));
            }
        }
    }
    Ok(Operands { r, t, groups: gs })
}

fn adagrad(c: &mut NodeCtx) -> Outs {
    let decay = c.attr_float_or("decay_factor", 0.0)? as f64;
    let eps = c.attr_float_or("epsilon", 0.0)? as f64;
    let norm = c.attr_float_or("norm_coefficient", 0.0)? as f64;
    let o = operands(c, 3)?;
    let n = o.groups[0].len();
    let (mut xs, mut hs) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (x, g, h) = (o.groups[0][i], o.groups[1][i], o.groups[2][i]);
        let (x2, h2) = optim::adagrad(c, o.r, o.t, x, g, h, decay, eps, norm)?;
        xs.push(x2);
        hs.push(h2);
    }
    xs.extend(hs);
    Ok(xs)
}

fn momentum(c: &mut NodeCtx) -> Outs {
    let alpha = required(c, "alpha")?;
    let beta = required(c, "beta")?;
    let norm = required(c, "norm_coefficient")?;
    let mode = c
        .attr_string("mode")?
        .ok_or_else(|| c.invalid("attribute `mode` is required"))?;
    let nesterov = match mode.as_str() {
        "standard" => false,
        "nesterov" => true,
        m => return Err(c.invalid(format!("mode `{m}` is not standard or nesterov"))),
    };
    let p = optim::MomentumParams {
        alpha,
        beta,
        norm,
        nesterov,
    };
    let o = operands(c, 3)?;
    let n = o.groups[0].len();
    let pos = optim::t_positive(c, o.t)?;
    let (mut xs, mut vs) = (Vec::new(), Vec::new());
    for i in 0..n {
        let (x, g, v) = (o.groups[0][i], o.groups[1][i], o.groups[2][i]);
        let (x2, v2) = optim::momentum(c, o.r, pos, x, g, v, p)?;
        xs.push(x2);
        vs.push(v2);
    }
    xs.extend(vs);
    Ok(xs)
}

fn adam(c: &mut NodeCtx) -> Outs {
    let p = optim::AdamParams {
        alpha: c.attr_float_or("alpha", 0.9)? as f64,
        beta: c.attr_float_or("beta", 0.999)? as f64,
        eps: c.attr_float_or("epsilon", 1e-6)? as f64,
        norm: c.attr_float_or("norm_coefficient", 0.0)? as f64,
        post: c.attr_float_or("norm_coefficient_post", 0.0)? as f64,
        decoupled: 0.0,
    };
    let o = operands(c, 4)?;
    let n = o.groups[0].len();
    let pos = optim::t_positive(c, o.t)?;
    let (mut xs, mut vs, mut hs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let [x, g, v, h] = [0, 1, 2, 3].map(|k| o.groups[k][i]);
        let (x2, v2, h2) = optim::adam(c, o.r, o.t, pos, x, g, v, h, p)?;
        xs.push(x2);
        vs.push(v2);
        hs.push(h2);
    }
    xs.extend(vs);
    xs.extend(hs);
    Ok(xs)
}

fn gradient(c: &mut NodeCtx) -> Outs {
    check_version(c)?;
    let xs = c
        .attr_strings("xs")?
        .ok_or_else(|| c.invalid("attribute `xs` is required"))?;
    let zs = c.attr_strings("zs")?.unwrap_or_default();
    let y = c
        .attr_string("y")?
        .ok_or_else(|| c.invalid("attribute `y` is required"))?;
    let cut_names: Vec<&String> = xs.iter().chain(&zs).collect();
    if c.num_inputs() != cut_names.len() {
        return Err(c.invalid(format!(
            "has {} inputs for {} names in xs and zs",
            c.num_inputs(),
            cut_names.len()
        )));
    }
    if c.num_outputs() != xs.len() {
        return Err(c.invalid(format!(
            "has {} outputs for {} names in xs",
            c.num_outputs(),
            xs.len()
        )));
    }
    let fed = c.inputs()?;
    let cut = cut_names
        .iter()
        .map(|n| c.value_named(n))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (&f, &v)) in fed.iter().zip(&cut).enumerate() {
        if c.ty(f) != c.ty(v) {
            return Err(c.invalid(format!(
                "input {i} has type {} but `{}` has type {}",
                c.ty(f),
                cut_names[i],
                c.ty(v)
            )));
        }
    }
    let yv = c.value_named(&y)?;

    // The slice of the graph computing y from the cut values.
    let nodes: Vec<&terafab_ir::Node> = c.nodes_in_scope().collect();
    let def: HashMap<ValueId, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |&o| (o, i)))
        .collect();
    let cut_set: HashSet<ValueId> = cut.iter().copied().collect();
    let mut needed: HashSet<usize> = HashSet::new();
    let mut externals: Vec<ValueId> = Vec::new();
    let mut seen: HashSet<ValueId> = HashSet::new();
    let mut stack = vec![yv];
    while let Some(v) = stack.pop() {
        if !seen.insert(v) || cut_set.contains(&v) {
            continue;
        }
        match def.get(&v) {
            Some(&i) => {
                let n = nodes[i];
                if !n.regions.is_empty() {
                    return Err(c.unsupported(format!(
                        "the gradient of `{y}` passes through a `{}` node (control flow)",
                        n.op.name()
                    )));
                }
                needed.insert(i);
                stack.extend(n.inputs.iter().copied());
            }
            None => externals.push(v),
        }
    }
    externals.sort_unstable();
    let values = c.values();
    let mut sub = Function::new("gradient");
    let mut map: HashMap<ValueId, ValueId> = HashMap::new();
    let mut wrt = Vec::new();
    for (k, &v) in cut.iter().enumerate() {
        let p = sub.add_input(values.name(v), values.ty(v).clone());
        if k < xs.len() {
            wrt.push(p);
        }
        if map.insert(v, p).is_some() {
            return Err(c.invalid(format!("`{}` is listed twice in xs and zs", cut_names[k])));
        }
    }
    for &v in &externals {
        let p = sub.add_input(values.name(v), values.ty(v).clone());
        map.insert(v, p);
    }
    let mut order: Vec<usize> = needed.into_iter().collect();
    order.sort_unstable();
    for i in order {
        let n = nodes[i];
        let ins: Vec<ValueId> = n.inputs.iter().map(|v| map[v]).collect();
        let tys = n.outputs.iter().map(|&o| values.ty(o).clone()).collect();
        let names: Vec<&str> = n.outputs.iter().map(|&o| values.name(o)).collect();
        let outs = sub.push(n.op.clone(), ins, tys, &names, vec![], n.name.clone());
        for (&o, s) in n.outputs.iter().zip(outs) {
            map.insert(o, s);
        }
    }
    sub.add_output(&y, map[&yv]);
    let g = autodiff::grad(&sub, &wrt, 0)
        .map_err(|e| c.unsupported(format!("differentiating `{y}`: {e}")))?;

    // Inline the gradient function with the fed inputs and the external values.
    let mut inl: HashMap<ValueId, ValueId> = HashMap::new();
    let actual: Vec<ValueId> = fed.iter().copied().chain(externals).collect();
    for (&p, &a) in g.inputs().iter().zip(&actual) {
        inl.insert(p, a);
    }
    for n in &g.body.nodes {
        let outs = match &n.op {
            Op::Constant { value } => vec![c.constant(value.clone())],
            op => {
                let ins: Vec<ValueId> = n.inputs.iter().map(|v| inl[v]).collect();
                c.op_n(op.clone(), &ins)?
            }
        };
        for (&o, v) in n.outputs.iter().zip(outs) {
            inl.insert(o, v);
        }
    }
    Ok(g.outputs()[1..].iter().map(|v| inl[v]).collect())
}
