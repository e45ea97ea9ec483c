//! The graph IR: modules of functions; a function is a region of nodes in SSA form.
//!
//! - Every value is defined once: as a parameter of a region, or as an output of a node.
//! - A value has a name unique within its function (the ONNX tensor name where there is one;
//!   the text form prints it) and a [`TensorType`].
//! - Nodes in a region are in topological order: a node uses only values defined before it in
//!   its region or in an enclosing region (regions of `if`/`loop` may use outer values).
//! - Every node may keep the name of the source node it came from (the ONNX node name),
//!   for error messages; the text form prints it as `loc("...")`.
//!
//! Values live in one [`ValueTable`] per function, so ids are unique across nested regions.

use std::collections::HashMap;
use std::fmt;

use crate::dtype::DType;
use crate::op::Op;
use crate::shape::Shape;

/// The type of a value: element type and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Shape,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Shape) -> Self {
        TensorType { dtype, shape }
    }

    pub fn from_static(dtype: DType, dims: &[usize]) -> Self {
        TensorType {
            dtype,
            shape: Shape::from_static(dims),
        }
    }

    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: Shape::scalar(),
        }
    }
}

impl fmt::Display for TensorType {
    /// `f32[2,N]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, self.shape)
    }
}

/// An SSA value within a function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What the function knows of a value.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub ty: TensorType,
}

/// All values of a function, with unique names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueTable {
    values: Vec<ValueInfo>,
    names: HashMap<String, ValueId>,
}

impl ValueTable {
    /// Add a value named `hint`, or `hint` with a numeric suffix if the name is taken.
    /// An empty hint gives a numbered name (`%0`, `%1`, ...).
    pub fn add(&mut self, hint: &str, ty: TensorType) -> ValueId {
        let name = self.fresh_name(hint);
        self.add_exact(name, ty).expect("fresh names are unique")
    }

    /// Add a value with exactly this name; `None` if the name is taken.
    pub fn add_exact(&mut self, name: String, ty: TensorType) -> Option<ValueId> {
        if self.names.contains_key(&name) {
            return None;
        }
        let id = ValueId(self.values.len() as u32);
        self.names.insert(name.clone(), id);
        self.values.push(ValueInfo { name, ty });
        Some(id)
    }

    /// A name not used yet, derived from `hint`.
    pub fn fresh_name(&self, hint: &str) -> String {
        if !hint.is_empty() && !self.names.contains_key(hint) {
            return hint.to_string();
        }
        let base = if hint.is_empty() { "" } else { hint };
        let sep = if base.is_empty() || base.ends_with(|c: char| c.is_ascii_digit()) {
            "_"
        } else {
            "."
        };
        let sep = if base.is_empty() { "" } else { sep };
        (self.values.len()..)
            .chain(0..)
            .map(|i| format!("{base}{sep}{i}"))
            .find(|n| !self.names.contains_key(n))
            .expect("some suffix is free")
    }

    /// Rename a value; false (and no change) if `name` is taken by another value.
    pub fn rename(&mut self, id: ValueId, name: &str) -> bool {
        if self.values[id.index()].name == name {
            return true;
        }
        if self.names.contains_key(name) {
            return false;
        }
        let old = std::mem::replace(&mut self.values[id.index()].name, name.to_string());
        self.names.remove(&old);
        self.names.insert(name.to_string(), id);
        true
    }

    pub fn get(&self, id: ValueId) -> &ValueInfo {
        &self.values[id.index()]
    }

    pub fn get_checked(&self, id: ValueId) -> Option<&ValueInfo> {
        self.values.get(id.index())
    }

    pub fn ty(&self, id: ValueId) -> &TensorType {
        &self.values[id.index()].ty
    }

    pub fn name(&self, id: ValueId) -> &str {
        &self.values[id.index()].name
    }

    /// Change a value's type (for passes such as shape inference).
    pub fn set_ty(&mut self, id: ValueId, ty: TensorType) {
        self.values[id.index()].ty = ty;
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ValueId, &ValueInfo)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (ValueId(i as u32), v))
    }

    /// Find a value by name.
    pub fn lookup(&self, name: &str) -> Option<ValueId> {
        self.names.get(name).copied()
    }
}

/// One operation: an op, its operands, its results, and the regions of control-flow ops.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    pub regions: Vec<Region>,
    /// The source node's name (e.g. the ONNX node name), for error messages.
    pub name: Option<String>,
}

/// A list of nodes with parameters and results: a function body or the body of an `if`/`loop`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Region {
    pub params: Vec<ValueId>,
    pub nodes: Vec<Node>,
    pub results: Vec<ValueId>,
}

impl Region {
    /// Visit every node of this region and of nested regions, outer nodes before their regions.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        for n in &self.nodes {
            f(n);
            for r in &n.regions {
                r.walk(f);
            }
        }
    }
}

/// A function: named parameters, a body, and named results.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub values: ValueTable,
    pub body: Region,
    /// The names of the results, one per `body.results` (often the result value's own name).
    pub output_names: Vec<String>,
}

impl Function {
    pub fn new(name: impl Into<String>) -> Self {
        Function {
            name: name.into(),
            values: ValueTable::default(),
            body: Region::default(),
            output_names: Vec::new(),
        }
    }

    /// Add a parameter of the function.
    pub fn add_input(&mut self, name: &str, ty: TensorType) -> ValueId {
        let v = self.values.add(name, ty);
        self.body.params.push(v);
        v
    }

    /// Add a result of the function, named `name`.
    pub fn add_output(&mut self, name: &str, value: ValueId) {
        self.output_names.push(name.to_string());
        self.body.results.push(value);
    }

    pub fn inputs(&self) -> &[ValueId] {
        &self.body.params
    }

    pub fn outputs(&self) -> &[ValueId] {
        &self.body.results
    }

    /// Append a node with the given result types to the function body; returns its results,
    /// named after `out_names` (or numbered when a name is empty or missing).
    pub fn push(
        &mut self,
        op: Op,
        inputs: Vec<ValueId>,
        out_types: Vec<TensorType>,
        out_names: &[&str],
        regions: Vec<Region>,
        name: Option<String>,
    ) -> Vec<ValueId> {
        let Function { values, body, .. } = self;
        push_node(
            values, body, op, inputs, out_types, out_names, regions, name,
        )
    }

    /// Visit every node, nested regions included.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Node)) {
        self.body.walk(f)
    }

    /// Number of nodes, nested regions included.
    pub fn num_nodes(&self) -> usize {
        let mut n = 0;
        self.walk(&mut |_| n += 1);
        n
    }
}

/// Append a node to `region`, creating its result values in `values`.
#[allow(clippy::too_many_arguments)]
pub fn push_node(
    values: &mut ValueTable,
    region: &mut Region,
    op: Op,
    inputs: Vec<ValueId>,
    out_types: Vec<TensorType>,
    out_names: &[&str],
    regions: Vec<Region>,
    name: Option<String>,
) -> Vec<ValueId> {
    let outputs: Vec<ValueId> = out_types
        .into_iter()
        .enumerate()
        .map(|(i, ty)| values.add(out_names.get(i).copied().unwrap_or(""), ty))
        .collect();
    region.nodes.push(Node {
        op,
        inputs,
        outputs: outputs.clone(),
        regions,
        name,
    });
    outputs
}

/// A module: a list of functions. The entry point is `main`, or the only function.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Module {
    pub functions: Vec<Function>,
}

impl Module {
    pub fn new(functions: Vec<Function>) -> Self {
        Module { functions }
    }

    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The entry function: `main` if present, else the first one.
    pub fn entry(&self) -> Option<&Function> {
        self.function("main").or_else(|| self.functions.first())
    }

    pub fn entry_mut(&mut self) -> Option<&mut Function> {
        let i = self.functions.iter().position(|f| f.name == "main").or(
            if self.functions.is_empty() {
                None
            } else {
                Some(0)
            },
        )?;
        self.functions.get_mut(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::op::BinaryOp;

    #[test]
    fn fresh_names_are_unique() {
        let mut t = ValueTable::default();
        let ty = TensorType::scalar(DType::F32);
        let a = t.add("x", ty.clone());
        let b = t.add("x", ty.clone());
        let c = t.add("", ty.clone());
        let d = t.add("", ty.clone());
        let names: std::collections::HashSet<_> = [a, b, c, d]
            .iter()
            .map(|&v| t.name(v).to_string())
            .collect();
        assert_eq!(names.len(), 4);
        assert_eq!(t.name(a), "x");
        assert_eq!(t.lookup("x"), Some(a));
        assert!(t.add_exact("x".into(), ty).is_none());
    }

    #[test]
    fn build_a_function() {
        let mut f = Function::new("main");
        let ty = TensorType::from_static(DType::F32, &[2]);
        let x = f.add_input("x", ty.clone());
        let y = f.push(
            Op::Binary(BinaryOp::Add),
            vec![x, x],
            vec![ty],
            &["y"],
            vec![],
            None,
        );
        f.add_output("y", y[0]);
        assert_eq!(f.num_nodes(), 1);
        assert_eq!(f.values.name(y[0]), "y");
    }
}
