//! The verifier: checks that a function is well formed before any pass or backend sees it.
//!
//! It checks, for every function of a module:
//! - SSA: every value id is in range and defined exactly once (as a region parameter or a
//!   node result); every use is dominated by its definition (earlier in the same region or in
//!   an enclosing one);
//! - regions: each op has its number of regions; `if` regions take no parameters; a `loop`
//!   body takes `(i64[], bool[], carried...)` and yields `(bool[], carried..., scans...)`;
//! - types: every node's declared result types equal the types [`crate::infer`] derives from
//!   its operands and attributes (for `loop` scan results, any leading dim is accepted);
//! - names: one output name per function result; symbolic dims used in attributes are bound by
//!   the function's parameters.
//!
//! Errors name the function, the op, the source node and the value involved.

use std::collections::HashSet;

use crate::graph::{Function, Module, Node, Region, TensorType, ValueId};
use crate::infer::infer_with_regions;
use crate::op::Op;
use crate::shape::{Dim, Shape};

/// A verifier finding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("function @{func}: {}{message}", location(.op, .value, .node))]
pub struct VerifyError {
    pub func: String,
    /// The op being checked, if the error is about a node.
    pub op: Option<String>,
    /// The node's first result, or the value the error is about.
    pub value: Option<String>,
    /// The source node's name.
    pub node: Option<String>,
    pub message: String,
}

fn location(op: &Option<String>, value: &Option<String>, node: &Option<String>) -> String {
    let mut s = String::new();
    if let Some(op) = op {
        s.push_str(&format!("`{op}`"));
    }
    if let Some(v) = value {
        s.push_str(&format!(
            "{}{}",
            if s.is_empty() { "" } else { " " },
            crate::print::print_value_name(v)
        ));
    }
    if let Some(n) = node {
        s.push_str(&format!(" (node \"{n}\")"));
    }
    if !s.is_empty() {
        s.push_str(": ");
    }
    s
}

/// Verify every function of a module.
pub fn verify_module(m: &Module) -> Result<(), VerifyError> {
    let mut names = HashSet::new();
    for f in &m.functions {
        if !names.insert(f.name.as_str()) {
            return Err(VerifyError {
                func: f.name.clone(),
                op: None,
                value: None,
                node: None,
                message: "function defined twice".into(),
            });
        }
        verify_function(f)?;
    }
    Ok(())
}

/// Verify one function.
pub fn verify_function(f: &Function) -> Result<(), VerifyError> {
    let mut v = Verifier {
        f,
        defined: vec![false; f.values.len()],
        scopes: Vec::new(),
        bound_syms: HashSet::new(),
    };
    for &p in f.inputs() {
        if let Some(info) = f.values.get_checked(p) {
            for d in info.ty.shape.dims() {
                if let Dim::Sym(s) = d {
                    v.bound_syms.insert(s.clone());
                }
            }
        }
    }
    if f.output_names.len() != f.outputs().len() {
        return Err(v.error(
            None,
            format!(
                "{} output names for {} results",
                f.output_names.len(),
                f.outputs().len()
            ),
        ));
    }
    v.region(&f.body)?;
    Ok(())
}

struct Verifier<'f> {
    f: &'f Function,
    defined: Vec<bool>,
    /// Values visible in each enclosing region, innermost last.
    scopes: Vec<HashSet<ValueId>>,
    bound_syms: HashSet<String>,
}

impl Verifier<'_> {
    fn error(&self, node: Option<&Node>, message: String) -> VerifyError {
        VerifyError {
            func: self.f.name.clone(),
            op: node.map(|n| n.op.name().to_string()),
            value: node
                .and_then(|n| n.outputs.first())
                .and_then(|&v| self.f.values.get_checked(v))
                .map(|i| i.name.clone()),
            node: node.and_then(|n| n.name.clone()),
            message,
        }
    }

    fn name(&self, v: ValueId) -> String {
        self.f
            .values
            .get_checked(v)
            .map(|i| crate::print::print_value_name(&i.name))
            .unwrap_or_else(|| format!("<invalid value #{}>", v.0))
    }

    fn define(&mut self, node: Option<&Node>, v: ValueId) -> Result<(), VerifyError> {
        match self.defined.get_mut(v.index()) {
            None => Err(self.error(node, format!("defines unknown value #{}", v.0))),
            Some(true) => Err(self.error(node, format!("{} is defined twice", self.name(v)))),
            Some(d) => {
                *d = true;
                self.scopes.last_mut().expect("inside a region").insert(v);
                Ok(())
            }
        }
    }

    fn use_value(&self, node: Option<&Node>, v: ValueId) -> Result<&TensorType, VerifyError> {
        if self.f.values.get_checked(v).is_none() {
            return Err(self.error(node, format!("uses unknown value #{}", v.0)));
        }
        if !self.scopes.iter().any(|s| s.contains(&v)) {
            return Err(self.error(
                node,
                format!(
                    "uses {} before its definition or outside its scope",
                    self.name(v)
                ),
            ));
        }
        Ok(self.f.values.ty(v))
    }

    /// Verify a region; returns the types of its results.
    fn region(&mut self, r: &Region) -> Result<Vec<TensorType>, VerifyError> {
        self.scopes.push(HashSet::new());
        let result = self.region_inner(r);
        self.scopes.pop();
        result
    }

    fn region_inner(&mut self, r: &Region) -> Result<Vec<TensorType>, VerifyError> {
        for &p in &r.params {
            self.define(None, p)?;
        }
        for n in &r.nodes {
            self.node(n)?;
        }
        r.results
            .iter()
            .map(|&v| self.use_value(None, v).cloned())
            .collect()
    }

    fn node(&mut self, n: &Node) -> Result<(), VerifyError> {
        let inputs: Vec<TensorType> = n
            .inputs
            .iter()
            .map(|&v| self.use_value(Some(n), v).cloned())
            .collect::<Result<_, _>>()?;
        if n.regions.len() != n.op.num_regions() {
            return Err(self.error(
                Some(n),
                format!(
                    "has {} regions, expected {}",
                    n.regions.len(),
                    n.op.num_regions()
                ),
            ));
        }
        self.check_attr_symbols(n)?;
        let mut region_results = Vec::new();
        for (i, r) in n.regions.iter().enumerate() {
            self.check_region_params(n, i, r, &inputs)?;
            region_results.push(self.region(r)?);
        }
        let refs: Vec<&TensorType> = inputs.iter().collect();
        let inferred = infer_with_regions(&n.op, &refs, &region_results)
            .map_err(|e| self.error(Some(n), e.0))?;
        if n.op == Op::Loop {
            self.check_loop_body(n, &inputs, &region_results[0])?;
        }
        if inferred.len() != n.outputs.len() {
            return Err(self.error(
                Some(n),
                format!(
                    "declares {} results, the op has {}",
                    n.outputs.len(),
                    inferred.len()
                ),
            ));
        }
        let n_carried = inputs.len().saturating_sub(2);
        for (k, (&v, want)) in n.outputs.iter().zip(&inferred).enumerate() {
            let declared = self
                .f
                .values
                .get_checked(v)
                .ok_or_else(|| self.error(Some(n), format!("defines unknown value #{}", v.0)))?
                .ty
                .clone();
            let is_scan = n.op == Op::Loop && k >= n_carried;
            let ok = if is_scan {
                declared.dtype == want.dtype
                    && declared.shape.rank() == want.shape.rank()
                    && declared.shape.dims()[1..] == want.shape.dims()[1..]
            } else {
                &declared == want
            };
            if !ok {
                return Err(self.error(
                    Some(n),
                    format!(
                        "result {} is declared {declared} but the op gives {want}",
                        self.name(v)
                    ),
                ));
            }
        }
        for &v in &n.outputs {
            self.define(Some(n), v)?;
        }
        Ok(())
    }

    fn check_region_params(
        &self,
        n: &Node,
        i: usize,
        r: &Region,
        inputs: &[TensorType],
    ) -> Result<(), VerifyError> {
        let want: Vec<TensorType> = match n.op {
            Op::Loop => {
                let mut w = vec![
                    TensorType::scalar(crate::DType::I64),
                    TensorType::scalar(crate::DType::Bool),
                ];
                w.extend(inputs.iter().skip(2).cloned());
                w
            }
            _ => Vec::new(),
        };
        let got: Vec<TensorType> = r
            .params
            .iter()
            .map(|&p| {
                self.f
                    .values
                    .get_checked(p)
                    .map(|i| i.ty.clone())
                    .ok_or_else(|| {
                        self.error(Some(n), format!("region parameter #{} is unknown", p.0))
                    })
            })
            .collect::<Result<_, _>>()?;
        if got != want {
            return Err(self.error(
                Some(n),
                format!(
                    "region {i} takes ({}), expected ({})",
                    type_list(&got),
                    type_list(&want)
                ),
            ));
        }
        Ok(())
    }

    fn check_loop_body(
        &self,
        n: &Node,
        inputs: &[TensorType],
        body: &[TensorType],
    ) -> Result<(), VerifyError> {
        let mut want = vec![TensorType::scalar(crate::DType::Bool)];
        want.extend(inputs.iter().skip(2).cloned());
        if body.len() < want.len() || body[..want.len()] != want[..] {
            return Err(self.error(
                Some(n),
                format!(
                    "loop body yields ({}), expected ({}) followed by scan values",
                    type_list(body),
                    type_list(&want)
                ),
            ));
        }
        Ok(())
    }

    fn check_attr_symbols(&self, n: &Node) -> Result<(), VerifyError> {
        let shape: Option<&Shape> = match &n.op {
            Op::Broadcast { shape } | Op::Reshape { shape } | Op::Iota { shape, .. } => Some(shape),
            _ => None,
        };
        for d in shape.map(|s| s.dims()).unwrap_or(&[]) {
            if let Dim::Sym(s) = d
                && !self.bound_syms.contains(s)
            {
                return Err(self.error(
                    Some(n),
                    format!("symbolic dim `{s}` is not bound by any function parameter"),
                ));
            }
        }
        Ok(())
    }
}

fn type_list(ts: &[TensorType]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DType;
    use crate::graph::{Function, push_node};
    use crate::op::{BinaryOp, UnaryOp};

    fn ty(dims: &[usize]) -> TensorType {
        TensorType::from_static(DType::F32, dims)
    }

    fn simple() -> Function {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(&[2, 3]));
        let y = f.push(
            Op::Unary(UnaryOp::Exp),
            vec![x],
            vec![ty(&[2, 3])],
            &["y"],
            vec![],
            None,
        );
        f.add_output("y", y[0]);
        f
    }

    #[test]
    fn accepts_valid() {
        verify_function(&simple()).unwrap();
    }

    #[test]
    fn rejects_wrong_declared_type() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(&[2, 3]));
        let y = f.push(
            Op::Binary(BinaryOp::Add),
            vec![x, x],
            vec![ty(&[3, 2])],
            &["y"],
            vec![],
            Some("Add_7".into()),
        );
        f.add_output("y", y[0]);
        let e = verify_function(&f).unwrap_err().to_string();
        assert!(e.contains("`add` %y (node \"Add_7\")"), "{e}");
        assert!(
            e.contains("declared f32[3,2] but the op gives f32[2,3]"),
            "{e}"
        );
    }

    #[test]
    fn rejects_use_before_def() {
        let mut f = simple();
        // Make the node use its own result.
        let y = f.body.nodes[0].outputs[0];
        f.body.nodes[0].inputs = vec![y];
        let e = verify_function(&f).unwrap_err().to_string();
        assert!(e.contains("before its definition"), "{e}");
    }

    #[test]
    fn rejects_double_definition_and_bad_ids() {
        let mut f = simple();
        let n = f.body.nodes[0].clone();
        f.body.nodes.push(n);
        assert!(
            verify_function(&f)
                .unwrap_err()
                .to_string()
                .contains("defined twice")
        );
        let mut g = simple();
        g.body.nodes[0].inputs = vec![ValueId(99)];
        assert!(
            verify_function(&g)
                .unwrap_err()
                .to_string()
                .contains("unknown value")
        );
    }

    #[test]
    fn region_scoping_and_if_types() {
        let mut f = Function::new("main");
        let c = f.add_input("c", TensorType::scalar(DType::Bool));
        let x = f.add_input("x", ty(&[2]));
        let mut then_r = Region::default();
        let t = push_node(
            &mut f.values,
            &mut then_r,
            Op::Unary(UnaryOp::Neg),
            vec![x],
            vec![ty(&[2])],
            &["t"],
            vec![],
            None,
        );
        then_r.results = t.clone();
        let else_r = Region {
            params: vec![],
            nodes: vec![],
            results: vec![x],
        };
        let r = f.push(
            Op::If,
            vec![c],
            vec![ty(&[2])],
            &["r"],
            vec![then_r, else_r],
            None,
        );
        f.add_output("r", r[0]);
        verify_function(&f).unwrap();
        // Using a value defined inside a region from outside it is an error.
        f.body.results = t;
        assert!(
            verify_function(&f)
                .unwrap_err()
                .to_string()
                .contains("outside its scope")
        );
    }

    #[test]
    fn unbound_symbol_in_attribute() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(&[4]));
        let s = Shape(vec![Dim::Sym("K".into())]);
        let out = TensorType::new(DType::F32, s.clone());
        let y = f.push(
            Op::Reshape { shape: s },
            vec![x],
            vec![out],
            &["y"],
            vec![],
            None,
        );
        f.add_output("y", y[0]);
        assert!(verify_function(&f).is_err());
    }
}
