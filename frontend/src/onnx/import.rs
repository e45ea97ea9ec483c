//! ONNX graphs to IR functions.
//!
//! [`import_model`] checks the model (IR version, opsets), binds every graph input's dims
//! (symbolic dims from [`ImportOptions`]), turns initializers into constants, and imports the
//! nodes in topological order through the op table of [`crate::ops`]; model-local functions are
//! inlined. Each op importer works through a [`NodeCtx`], which resolves inputs, reads
//! attributes (an attribute the importer never reads is an error, so nothing is silently
//! ignored), builds IR nodes with types from [`terafab_ir::infer`], and folds nodes whose
//! operands are all constants (shape arithmetic such as Shape -> Gather -> Reshape) through the
//! reference interpreter, up to a size limit.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use prost::Message;
use terafab_ir::graph::push_node;
use terafab_ir::interp::{Bindings, eval_op};
use terafab_ir::{
    BinaryOp, CompareOp, DType, Function, Module, Node, Op, ReduceKind, Region, Shape, Tensor,
    TensorType, UnaryOp, ValueId, ValueTable,
};

use super::proto::{
    AttributeProto, AttributeType, FunctionProto, GraphProto, ModelProto, NodeProto, TypeProto,
    ValueInfoProto, tensor_shape_proto::dimension, type_proto,
};
use super::tensor::{TensorReadError, dtype_of, read_tensor};
use crate::ops;

/// The ONNX IR versions terafab reads (3 to the newest of onnx 1.23).
pub const IR_VERSIONS: std::ops::RangeInclusive<i64> = 3..=14;
/// The opset versions of the default domain terafab implements.
/// Each op importer follows the semantics of the node's version and refuses what it cannot do.
pub const OPSET_VERSIONS: std::ops::RangeInclusive<i64> = 1..=28;
/// Default limit (in elements) on results computed at import time from constant operands.
pub const DEFAULT_FOLD_LIMIT: usize = 1 << 22;

/// How to import a model.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Full static shapes of graph inputs, by input name (e.g. from `--input-shape x=1x3x224x224`
    /// or from the arrays given at run time). They win over the model's declared dims, which
    /// they must agree with where those are static.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Values of symbolic dims (`dim_param`), by name.
    pub dims: HashMap<String, usize>,
    /// Largest result, in elements, computed at import time when all operands are constants.
    pub fold_limit: usize,
    /// The extent given to symbolic or unknown dims that nothing binds; `None` makes them an
    /// error. (`terafab check` uses 1, to look at every node of a model without shapes.)
    pub default_dim: Option<usize>,
    /// Values of graph inputs, by name, that the model may be specialized on: when an op needs
    /// an input's value at import time (a shape, axes, pads, repeats, sizes...), the input
    /// becomes a constant with this value and leaves the function's parameters. Inputs whose
    /// values no op needs stay parameters.
    pub input_values: HashMap<String, Tensor>,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            input_shapes: HashMap::new(),
            dims: HashMap::new(),
            fold_limit: DEFAULT_FOLD_LIMIT,
            default_dim: None,
            input_values: HashMap::new(),
        }
    }
}

/// What went wrong importing a model. Node errors name the node, its op, domain and opset.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("malformed ONNX protobuf: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("unsupported ONNX IR version {0} (terafab reads {min} to {max})", min = IR_VERSIONS.start(), max = IR_VERSIONS.end())]
    IrVersion(i64),
    #[error("unsupported opset version {version} of domain `{domain}` (terafab implements {min} to {max} of the default domain)", min = OPSET_VERSIONS.start(), max = OPSET_VERSIONS.end())]
    Opset { domain: String, version: i64 },
    #[error("graph input `{input}`: {message}")]
    Input { input: String, message: String },
    #[error("initializer `{name}`: {source}")]
    Initializer {
        name: String,
        #[source]
        source: TensorReadError,
    },
    #[error("node `{node}` ({op_type}, domain `{domain}`, opset {opset}): {message}")]
    Unsupported {
        node: String,
        op_type: String,
        domain: String,
        opset: i64,
        message: String,
    },
    #[error("node `{node}` ({op_type}, opset {opset}): {message}")]
    Invalid {
        node: String,
        op_type: String,
        opset: i64,
        message: String,
    },
    #[error("graph `{graph}`: {message}")]
    Graph { graph: String, message: String },
    /// An input of the node comes from a node that failed (only seen while collecting errors).
    #[error("depends on a node that could not be imported")]
    Poisoned,
}

impl ImportError {
    /// Is this an "unsupported" error (an op, attribute or type terafab does not implement),
    /// as opposed to an invalid model?
    pub fn is_unsupported(&self) -> bool {
        matches!(
            self,
            ImportError::Unsupported { .. } | ImportError::Opset { .. } | ImportError::IrVersion(_)
        )
    }
}

/// Decode a model from protobuf bytes.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, ImportError> {
    Ok(ModelProto::decode(bytes)?)
}

/// Import a model's main graph as a module with one function, `main`.
pub fn import_model(
    model: &ModelProto,
    model_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Module, ImportError> {
    let mut b = Builder::new(model, model_dir, opts, false)?;
    let f = b.import_main()?;
    Ok(Module::new(vec![f]))
}

/// Import as far as possible and return every problem found: each unsupported or invalid node
/// once (nodes that only fail because an input failed are not repeated).
pub fn check_model(
    model: &ModelProto,
    model_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Vec<ImportError> {
    let mut b = match Builder::new(model, model_dir, opts, true) {
        Ok(b) => b,
        Err(e) => return vec![e],
    };
    match b.import_main() {
        Ok(_) => b.errors,
        Err(e) => {
            let mut errs = b.errors;
            errs.push(e);
            errs
        }
    }
}

/// A name in scope: a value, or the output of a node that failed to import.
#[derive(Clone, Copy)]
enum Slot {
    Value(ValueId),
    Poisoned,
}

/// Import state for one model.
pub struct Builder<'m> {
    model_dir: Option<&'m Path>,
    opts: &'m ImportOptions,
    /// Opset version per domain ("" is the default domain).
    opsets: HashMap<String, i64>,
    functions: HashMap<(String, String), &'m FunctionProto>,
    graph: &'m GraphProto,
    func: Function,
    /// Regions under construction; the innermost last. The first becomes the function body.
    regions: Vec<Region>,
    /// Names visible in each region; the innermost last.
    scopes: Vec<HashMap<String, Slot>>,
    consts: HashMap<ValueId, Tensor>,
    /// Parameters with a known value (`ImportOptions::input_values`).
    param_values: HashMap<ValueId, Tensor>,
    /// Parameters whose value an op needed: they become constants.
    specialized: RefCell<HashSet<ValueId>>,
    keep_going: bool,
    errors: Vec<ImportError>,
}

fn domain_key(d: &str) -> &str {
    if d == "ai.onnx" { "" } else { d }
}

impl<'m> Builder<'m> {
    fn new(
        model: &'m ModelProto,
        model_dir: Option<&'m Path>,
        opts: &'m ImportOptions,
        keep_going: bool,
    ) -> Result<Self, ImportError> {
        if !IR_VERSIONS.contains(&model.ir_version) {
            return Err(ImportError::IrVersion(model.ir_version));
        }
        let graph = model.graph.as_ref().ok_or(ImportError::NoGraph)?;
        let mut opsets = HashMap::new();
        for o in &model.opset_import {
            opsets.insert(domain_key(&o.domain).to_string(), o.version);
        }
        // IR version 3 models without opset_import use opset 1; we require >= 7 anyway.
        let default = *opsets.get("").unwrap_or(&1);
        if !OPSET_VERSIONS.contains(&default)
            && graph.node.iter().any(|n| domain_key(&n.domain).is_empty())
        {
            return Err(ImportError::Opset {
                domain: "ai.onnx".into(),
                version: default,
            });
        }
        let functions = model
            .functions
            .iter()
            .map(|f| ((domain_key(&f.domain).to_string(), f.name.clone()), f))
            .collect();
        Ok(Builder {
            model_dir,
            opts,
            opsets,
            functions,
            graph,
            func: Function::new("main"),
            regions: Vec::new(),
            scopes: Vec::new(),
            consts: HashMap::new(),
            param_values: HashMap::new(),
            specialized: RefCell::new(HashSet::new()),
            keep_going,
            errors: Vec::new(),
        })
    }

    fn import_main(&mut self) -> Result<Function, ImportError> {
        let g = self.graph;
        self.regions.push(Region::default());
        self.scopes.push(HashMap::new());
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        for input in &g.input {
            if inits.contains(input.name.as_str()) {
                continue; // an initializer with a default value: a constant here
            }
            let ty = self.input_type(input)?;
            if let Some(t) = self.opts.input_values.get(&input.name)
                && (t.dtype() != ty.dtype || Some(t.shape().to_vec()) != ty.shape.as_static())
            {
                return Err(ImportError::Input {
                    input: input.name.clone(),
                    message: format!(
                        "its value is {}{:?} but its type is {ty}",
                        t.dtype(),
                        t.shape()
                    ),
                });
            }
            let v = self.func.add_input(&input.name, ty);
            self.regions[0].params.push(v);
            self.bind(&input.name, v);
            if let Some(t) = self.opts.input_values.get(&input.name) {
                self.param_values.insert(v, t.clone());
            }
        }
        // `add_input` also pushed to func.body.params; the region stack holds the real body.
        self.func.body.params.clear();
        self.import_graph_body(g, "")?;
        for out in &g.output {
            let v = self.lookup(&out.name).ok_or_else(|| ImportError::Graph {
                graph: g.name.clone(),
                message: format!("output `{}` is not produced by any node", out.name),
            })?;
            match v {
                Slot::Value(v) => {
                    if !self.regions[0].params.contains(&v) {
                        self.func.values.rename(v, &out.name);
                    }
                    self.regions[0].results.push(v);
                    self.func.output_names.push(out.name.clone());
                }
                Slot::Poisoned => return Err(ImportError::Poisoned),
            }
        }
        self.scopes.pop();
        self.func.body = self.regions.pop().expect("body region");
        // Specialized parameters become constants defined first in the body.
        let specialized = self.specialized.take();
        let mut consts: Vec<terafab_ir::Node> = Vec::new();
        for &v in self
            .func
            .body
            .params
            .iter()
            .filter(|v| specialized.contains(v))
        {
            consts.push(terafab_ir::Node {
                op: Op::Constant {
                    value: self.param_values[&v].clone(),
                },
                inputs: vec![],
                outputs: vec![v],
                regions: vec![],
                name: None,
            });
        }
        self.func.body.params.retain(|v| !specialized.contains(v));
        self.func.body.nodes.splice(0..0, consts);
        if let Some(e) = self.errors.first()
            && !self.keep_going
        {
            return Err(ImportError::Graph {
                graph: g.name.clone(),
                message: e.to_string(),
            });
        }
        Ok(std::mem::replace(&mut self.func, Function::new("main")))
    }

    /// The static type of a graph input, with its dims bound.
    fn input_type(&self, input: &ValueInfoProto) -> Result<TensorType, ImportError> {
        let err = |message: String| ImportError::Input {
            input: input.name.clone(),
            message,
        };
        let tt = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t,
            Some(other) => {
                return Err(err(format!(
                    "{} inputs are not supported",
                    type_kind(other)
                )));
            }
            None => return Err(err("has no type".into())),
        };
        let dtype = dtype_of(tt.elem_type).map_err(|e| err(e.to_string()))?;
        let declared = tt.shape.as_ref().map(|s| &s.dim[..]);
        if let Some(given) = self.opts.input_shapes.get(&input.name) {
            if let Some(dims) = declared {
                if dims.len() != given.len() {
                    return Err(err(format!(
                        "has rank {} but a shape of rank {} was given",
                        dims.len(),
                        given.len()
                    )));
                }
                for (i, (d, &g)) in dims.iter().zip(given).enumerate() {
                    if let Some(dimension::Value::DimValue(v)) = d.value
                        && v >= 0
                        && v as usize != g
                    {
                        return Err(err(format!(
                            "dim {i} is {v} in the model but {g} was given"
                        )));
                    }
                }
            }
            return Ok(TensorType::from_static(dtype, given));
        }
        let dims =
            declared.ok_or_else(|| err("has no shape: give one with --input-shape".into()))?;
        let mut out = Vec::with_capacity(dims.len());
        for (i, d) in dims.iter().enumerate() {
            let n = match &d.value {
                Some(dimension::Value::DimValue(v)) if *v >= 0 => *v as usize,
                Some(dimension::Value::DimParam(p)) if !p.is_empty() => {
                    self.opts.dims.get(p).copied().or(self.opts.default_dim).ok_or_else(|| {
                        err(format!(
                            "symbolic dim `{p}` (dim {i}) is unbound: give it with --dim {p}=N or --input-shape"
                        ))
                    })?
                }
                _ => self
                    .opts
                    .default_dim
                    .ok_or_else(|| err(format!("dim {i} is unknown: give the shape with --input-shape")))?,
            };
            out.push(n);
        }
        terafab_ir::tensor::checked_num_elements(&out, dtype).map_err(|e| err(e.to_string()))?;
        Ok(TensorType::new(dtype, Shape::from_static(&out)))
    }

    /// Import initializers and nodes of a graph (the main graph or a subgraph) into the current
    /// region and scope; `prefix` disambiguates the value names of inlined function bodies.
    fn import_graph_body(&mut self, g: &GraphProto, prefix: &str) -> Result<(), ImportError> {
        for init in &g.initializer {
            let t =
                read_tensor(init, self.model_dir).map_err(|source| ImportError::Initializer {
                    name: init.name.clone(),
                    source,
                })?;
            let v = self.constant(t, &init.name);
            self.bind(&init.name, v);
        }
        if !g.sparse_initializer.is_empty() {
            return Err(ImportError::Graph {
                graph: g.name.clone(),
                message: "sparse initializers are not supported".into(),
            });
        }
        for node in topo_order(g, |name| self.lookup(name).is_some())? {
            self.import_node(node, prefix)?;
        }
        Ok(())
    }

    fn lookup(&self, name: &str) -> Option<Slot> {
        self.scopes.iter().rev().find_map(|s| s.get(name).copied())
    }

    fn bind(&mut self, name: &str, v: ValueId) {
        self.scopes
            .last_mut()
            .expect("a scope")
            .insert(name.to_string(), Slot::Value(v));
    }

    fn poison(&mut self, node: &NodeProto) {
        for o in node.output.iter().filter(|o| !o.is_empty()) {
            self.scopes
                .last_mut()
                .expect("a scope")
                .insert(o.clone(), Slot::Poisoned);
        }
    }

    fn opset_of(&self, domain: &str) -> i64 {
        *self.opsets.get(domain_key(domain)).unwrap_or(&0)
    }

    /// Import one node (`prefix` disambiguates the value names of inlined function bodies).
    fn import_node(&mut self, node: &NodeProto, prefix: &str) -> Result<(), ImportError> {
        let result = self.import_node_inner(node, prefix);
        match result {
            Ok(()) => Ok(()),
            Err(ImportError::Poisoned) if self.keep_going => {
                self.poison(node);
                Ok(())
            }
            Err(e) if self.keep_going => {
                self.errors.push(e);
                self.poison(node);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn import_node_inner(&mut self, node: &NodeProto, prefix: &str) -> Result<(), ImportError> {
        let domain = domain_key(&node.domain).to_string();
        let opset = self.opset_of(&domain);
        let importer = if domain.is_empty() {
            ops::lookup(&node.op_type)
        } else {
            ops::lookup_in(&domain, &node.op_type)
        };
        let first_new = self.func.values.len();
        let outputs = if let Some(importer) = importer {
            let mut ctx = NodeCtx {
                b: self,
                node,
                opset,
                used_attrs: RefCell::new(HashSet::new()),
                prefix,
            };
            let outs = importer(&mut ctx)?;
            ctx.check_all_attrs_used()?;
            outs
        } else if let Some(f) = self
            .functions
            .get(&(domain.clone(), node.op_type.clone()))
            .copied()
        {
            self.inline_function(node, f)?
        } else {
            return Err(ImportError::Unsupported {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                domain: if domain.is_empty() {
                    "ai.onnx".into()
                } else {
                    domain
                },
                opset,
                message: "operator not supported".into(),
            });
        };
        for (i, name) in node.output.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            let v = *outputs.get(i).ok_or_else(|| ImportError::Unsupported {
                node: node.name.clone(),
                op_type: node.op_type.clone(),
                domain: "ai.onnx".into(),
                opset,
                message: format!("output {i} (`{name}`) is not supported"),
            })?;
            self.name_output(v, &format!("{prefix}{name}"), first_new);
            self.bind(name, v);
        }
        Ok(())
    }

    /// Give a node's result its ONNX name. An intermediate value of the same node that took the
    /// name as a hint (ids from `first_new` on) gives it up; a name used elsewhere stays there.
    fn name_output(&mut self, v: ValueId, name: &str, first_new: usize) {
        // A value the node passed through (an input, or a constant made earlier) keeps its name.
        if v.index() < first_new {
            return;
        }
        let values = &mut self.func.values;
        if values.rename(v, name) {
            return;
        }
        if let Some(other) = values.lookup(name)
            && other.index() >= first_new
            && other != v
        {
            let fresh = values.fresh_name(name);
            values.rename(other, &fresh);
            values.rename(v, name);
        }
    }

    /// Inline a model-local function: its body runs in a fresh scope where the function's
    /// formal inputs name the caller's values, and attribute references take the caller's
    /// attributes (or the function's defaults).
    fn inline_function(
        &mut self,
        call: &NodeProto,
        f: &'m FunctionProto,
    ) -> Result<Vec<ValueId>, ImportError> {
        let mut scope = HashMap::new();
        for (i, formal) in f.input.iter().enumerate() {
            if let Some(actual) = call.input.get(i).filter(|a| !a.is_empty()) {
                let slot = self.lookup(actual).ok_or_else(|| ImportError::Invalid {
                    node: call.name.clone(),
                    op_type: call.op_type.clone(),
                    opset: 0,
                    message: format!("input `{actual}` is not defined"),
                })?;
                scope.insert(formal.clone(), slot);
            }
        }
        let saved_opsets = self.opsets.clone();
        for o in &f.opset_import {
            self.opsets
                .insert(domain_key(&o.domain).to_string(), o.version);
        }
        // Inlined nodes see only the function's own names (functions do not capture).
        let saved_scopes = std::mem::take(&mut self.scopes);
        self.scopes.push(scope);
        let prefix = format!(
            "{}{}/",
            if call.name.is_empty() {
                &f.name
            } else {
                &call.name
            },
            ""
        );
        let result = (|| {
            for n in &f.node {
                let n = substitute_attrs(n, call, f);
                self.import_node(&n, &prefix)?;
            }
            f.output
                .iter()
                .map(|o| match self.lookup(o) {
                    Some(Slot::Value(v)) => Ok(v),
                    Some(Slot::Poisoned) => Err(ImportError::Poisoned),
                    None => Err(ImportError::Invalid {
                        node: call.name.clone(),
                        op_type: call.op_type.clone(),
                        opset: 0,
                        message: format!("function output `{o}` is never produced"),
                    }),
                })
                .collect::<Result<Vec<_>, _>>()
        })();
        self.scopes = saved_scopes;
        self.opsets = saved_opsets;
        result
    }

    /// Add a constant node (not folded further) and remember its value.
    fn constant(&mut self, t: Tensor, hint: &str) -> ValueId {
        let ty = TensorType::from_static(t.dtype(), t.shape());
        let region = self.regions.last_mut().expect("a region");
        let v = push_node(
            &mut self.func.values,
            region,
            Op::Constant { value: t.clone() },
            vec![],
            vec![ty],
            &[hint],
            vec![],
            None,
        )[0];
        self.consts.insert(v, t);
        v
    }
}

/// Order a graph's nodes so each comes after the producers of its inputs; `known` says which
/// names are defined before the graph (inputs, initializers, outer scopes).
fn topo_order(
    g: &GraphProto,
    known: impl Fn(&str) -> bool,
) -> Result<Vec<&NodeProto>, ImportError> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o.as_str(), i).is_some() {
                return Err(ImportError::Graph {
                    graph: g.name.clone(),
                    message: format!("value `{o}` is produced by more than one node"),
                });
            }
        }
    }
    // Iterative DFS; state 1 = on the stack, 2 = done.
    let mut state = vec![0u8; g.node.len()];
    let mut order = Vec::with_capacity(g.node.len());
    for root in 0..g.node.len() {
        if state[root] != 0 {
            continue;
        }
        let mut stack = vec![(root, 0usize)];
        state[root] = 1;
        while let Some(&mut (n, ref mut next)) = stack.last_mut() {
            let deps = node_deps(&g.node[n]);
            if let Some(dep) = deps.get(*next) {
                *next += 1;
                match producer.get(dep.as_str()) {
                    Some(&p) if state[p] == 1 => {
                        return Err(ImportError::Graph {
                            graph: g.name.clone(),
                            message: format!("the graph has a cycle through value `{dep}`"),
                        });
                    }
                    Some(&p) if state[p] == 0 => {
                        state[p] = 1;
                        stack.push((p, 0));
                    }
                    Some(_) => {}
                    None if known(dep) => {}
                    None => {
                        return Err(ImportError::Graph {
                            graph: g.name.clone(),
                            message: format!(
                                "node `{}` ({}) uses `{dep}`, which is not a graph input, an initializer or any node's output",
                                g.node[n].name, g.node[n].op_type
                            ),
                        });
                    }
                }
            } else {
                state[n] = 2;
                order.push(&g.node[n]);
                stack.pop();
            }
        }
    }
    Ok(order)
}

/// Names a node reads: its inputs, and the outer names its subgraphs capture.
fn node_deps(n: &NodeProto) -> Vec<String> {
    let mut deps: Vec<String> = n.input.iter().filter(|i| !i.is_empty()).cloned().collect();
    for a in &n.attribute {
        for g in a.g.iter().chain(a.graphs.iter()) {
            deps.extend(captured_names(g));
        }
    }
    deps
}

/// Names a subgraph uses without defining them (its captures of outer values).
fn captured_names(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = g.input.iter().map(|i| i.name.as_str()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name.as_str()));
    for n in &g.node {
        defined.extend(n.output.iter().map(String::as_str));
    }
    let mut out = Vec::new();
    for n in &g.node {
        for d in node_deps(n) {
            if !defined.contains(d.as_str()) && !out.contains(&d) {
                out.push(d);
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name.as_str()) && !out.contains(&o.name) {
            out.push(o.name.clone());
        }
    }
    out
}

/// A function body node with attribute references replaced by the caller's attributes.
fn substitute_attrs(n: &NodeProto, call: &NodeProto, f: &FunctionProto) -> NodeProto {
    let mut n = n.clone();
    n.attribute = n
        .attribute
        .iter()
        .filter_map(|a| {
            if a.ref_attr_name.is_empty() {
                return Some(a.clone());
            }
            let src = call
                .attribute
                .iter()
                .find(|c| c.name == a.ref_attr_name)
                .or_else(|| f.attribute_proto.iter().find(|d| d.name == a.ref_attr_name))?;
            let mut v = src.clone();
            v.name = a.name.clone();
            Some(v)
        })
        .collect();
    n
}

fn type_kind(v: &type_proto::Value) -> &'static str {
    match v {
        type_proto::Value::TensorType(_) => "tensor",
        type_proto::Value::SequenceType(_) => "sequence",
        type_proto::Value::MapType(_) => "map",
        type_proto::Value::OptionalType(_) => "optional",
        type_proto::Value::SparseTensorType(_) => "sparse tensor",
        type_proto::Value::OpaqueType(_) => "opaque",
    }
}

/// What an op importer sees of its node, and how it builds IR.
pub struct NodeCtx<'a, 'm> {
    b: &'a mut Builder<'m>,
    pub node: &'a NodeProto,
    /// The opset version of the node's domain in this model.
    pub opset: i64,
    used_attrs: RefCell<HashSet<String>>,
    prefix: &'a str,
}

/// An op importer: builds the node's outputs, one value per ONNX output it supports.
pub type Importer = fn(&mut NodeCtx) -> Result<Vec<ValueId>, ImportError>;

impl NodeCtx<'_, '_> {
    // ---- errors --------------------------------------------------------------------------

    /// An "unsupported" error naming this node (terafab lacks something the model uses).
    pub fn unsupported(&self, message: impl Into<String>) -> ImportError {
        ImportError::Unsupported {
            node: self.node.name.clone(),
            op_type: self.node.op_type.clone(),
            domain: if self.node.domain.is_empty() {
                "ai.onnx".into()
            } else {
                self.node.domain.clone()
            },
            opset: self.opset,
            message: message.into(),
        }
    }

    /// An "invalid" error naming this node (the model breaks the op's rules).
    pub fn invalid(&self, message: impl Into<String>) -> ImportError {
        ImportError::Invalid {
            node: self.node.name.clone(),
            op_type: self.node.op_type.clone(),
            opset: self.opset,
            message: message.into(),
        }
    }

    // ---- inputs and outputs --------------------------------------------------------------

    /// Number of inputs, counting empty (omitted optional) ones before the last given one.
    pub fn num_inputs(&self) -> usize {
        self.node.input.len()
    }

    /// Input `i`, which must be present.
    pub fn input(&self, i: usize) -> Result<ValueId, ImportError> {
        self.opt_input(i)?
            .ok_or_else(|| self.invalid(format!("input {i} is required")))
    }

    /// Input `i` if present (an empty name or a missing position means absent).
    pub fn opt_input(&self, i: usize) -> Result<Option<ValueId>, ImportError> {
        let Some(name) = self.node.input.get(i).filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        match self.b.lookup(name) {
            Some(Slot::Value(v)) => Ok(Some(v)),
            Some(Slot::Poisoned) => Err(ImportError::Poisoned),
            None => Err(self.invalid(format!("input `{name}` is not defined"))),
        }
    }

    /// All present inputs, in order.
    pub fn inputs(&self) -> Result<Vec<ValueId>, ImportError> {
        (0..self.num_inputs())
            .filter_map(|i| self.opt_input(i).transpose())
            .collect()
    }

    /// The value an ONNX name stands for in the node's scope (any enclosing graph included).
    pub fn value_named(&self, name: &str) -> Result<ValueId, ImportError> {
        match self.b.lookup(name) {
            Some(Slot::Value(v)) => Ok(v),
            Some(Slot::Poisoned) => Err(ImportError::Poisoned),
            None => Err(self.invalid(format!("`{name}` is not defined"))),
        }
    }

    /// The nodes built so far in the regions enclosing this node, outermost first, in order.
    pub fn nodes_in_scope(&self) -> impl Iterator<Item = &Node> {
        self.b.regions.iter().flat_map(|r| r.nodes.iter())
    }

    /// The values built so far (names and types).
    pub fn values(&self) -> &ValueTable {
        &self.b.func.values
    }

    /// Number of outputs the node declares.
    pub fn num_outputs(&self) -> usize {
        self.node.output.len()
    }

    /// Does the model use output `i` (declared with a non-empty name)?
    pub fn output_requested(&self, i: usize) -> bool {
        self.node.output.get(i).is_some_and(|n| !n.is_empty())
    }

    // ---- types and constants -------------------------------------------------------------

    pub fn ty(&self, v: ValueId) -> &TensorType {
        self.b.func.values.ty(v)
    }

    pub fn dtype(&self, v: ValueId) -> DType {
        self.ty(v).dtype
    }

    pub fn rank(&self, v: ValueId) -> usize {
        self.ty(v).shape.rank()
    }

    /// The static dims of a value (all dims are static after import, except data-dependent
    /// ones such as the trip count of a loop's scan outputs).
    pub fn dims(&self, v: ValueId) -> Result<Vec<usize>, ImportError> {
        let ty = self.ty(v);
        ty.shape.as_static().ok_or_else(|| {
            self.unsupported(format!(
                "`{}` has data-dependent shape {}, which this op needs static",
                self.b.func.values.name(v),
                ty.shape
            ))
        })
    }

    /// The value of `v` if it is known at import time.
    pub fn const_value(&self, v: ValueId) -> Option<&Tensor> {
        self.b.consts.get(&v).or_else(|| {
            let t = self.b.param_values.get(&v)?;
            // The op needs this input's value: the model is specialized on it.
            self.b.specialized.borrow_mut().insert(v);
            Some(t)
        })
    }

    /// Input `i` as a constant tensor, if it is present and known at import time.
    pub fn const_input(&self, i: usize) -> Result<Option<Tensor>, ImportError> {
        Ok(self
            .opt_input(i)?
            .and_then(|v| self.const_value(v).cloned()))
    }

    /// Input `i` as constant integers (shapes, axes, pads...), or an "unsupported" error when
    /// it is computed at run time. `None` if the input is absent.
    pub fn const_ints(&self, i: usize) -> Result<Option<Vec<i64>>, ImportError> {
        let Some(v) = self.opt_input(i)? else {
            return Ok(None);
        };
        let t = self.const_value(v).ok_or_else(|| {
            self.unsupported(format!(
                "input {i} (`{}`) must be known at import time (data-dependent shapes are not supported)",
                self.node.input[i]
            ))
        })?;
        t.to_i64_vec()
            .map(Some)
            .ok_or_else(|| self.invalid(format!("input {i} must be integers, found {}", t.dtype())))
    }

    /// Input `i` as constant floats (converted to f64), or an "unsupported" error.
    pub fn const_floats(&self, i: usize) -> Result<Option<Vec<f64>>, ImportError> {
        let Some(v) = self.opt_input(i)? else {
            return Ok(None);
        };
        let t = self.const_value(v).ok_or_else(|| {
            self.unsupported(format!(
                "input {i} (`{}`) must be known at import time",
                self.node.input[i]
            ))
        })?;
        Ok(Some(t.to_f64_vec()))
    }

    /// Normalize an ONNX axis (negative counts from the end) against `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize, ImportError> {
        terafab_ir::shape::normalize_axis(axis, rank)
            .ok_or_else(|| self.invalid(format!("axis {axis} is out of range for rank {rank}")))
    }

    // ---- attributes ----------------------------------------------------------------------

    fn attr(
        &self,
        name: &str,
        want: AttributeType,
    ) -> Result<Option<&AttributeProto>, ImportError> {
        let Some(a) = self.node.attribute.iter().find(|a| a.name == name) else {
            return Ok(None);
        };
        self.used_attrs.borrow_mut().insert(name.to_string());
        let ty = AttributeType::try_from(a.r#type).unwrap_or(AttributeType::Undefined);
        // Old writers leave `type` unset; accept a value in the right field then.
        if ty != want && ty != AttributeType::Undefined {
            return Err(self.invalid(format!(
                "attribute `{name}` should be {want:?}, found {ty:?}"
            )));
        }
        Ok(Some(a))
    }

    /// Mark an attribute as understood without reading it (e.g. one that does not change
    /// the result). Use sparingly, with a comment saying why.
    pub fn ignore_attr(&self, name: &str) {
        self.used_attrs.borrow_mut().insert(name.to_string());
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name == name)
    }

    pub fn attr_int(&self, name: &str) -> Result<Option<i64>, ImportError> {
        Ok(self.attr(name, AttributeType::Int)?.map(|a| a.i))
    }

    pub fn attr_int_or(&self, name: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self.attr_int(name)?.unwrap_or(default))
    }

    pub fn attr_float(&self, name: &str) -> Result<Option<f32>, ImportError> {
        Ok(self.attr(name, AttributeType::Float)?.map(|a| a.f))
    }

    pub fn attr_float_or(&self, name: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self.attr_float(name)?.unwrap_or(default))
    }

    pub fn attr_string(&self, name: &str) -> Result<Option<String>, ImportError> {
        Ok(self
            .attr(name, AttributeType::String)?
            .map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    pub fn attr_string_or(&self, name: &str, default: &str) -> Result<String, ImportError> {
        Ok(self
            .attr_string(name)?
            .unwrap_or_else(|| default.to_string()))
    }

    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>, ImportError> {
        Ok(self
            .attr(name, AttributeType::Ints)?
            .map(|a| a.ints.clone()))
    }

    pub fn attr_floats(&self, name: &str) -> Result<Option<Vec<f32>>, ImportError> {
        Ok(self
            .attr(name, AttributeType::Floats)?
            .map(|a| a.floats.clone()))
    }

    pub fn attr_strings(&self, name: &str) -> Result<Option<Vec<String>>, ImportError> {
        Ok(self.attr(name, AttributeType::Strings)?.map(|a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        }))
    }

    pub fn attr_tensor(&self, name: &str) -> Result<Option<Tensor>, ImportError> {
        let Some(a) = self.attr(name, AttributeType::Tensor)? else {
            return Ok(None);
        };
        let t =
            a.t.as_ref()
                .ok_or_else(|| self.invalid(format!("attribute `{name}` has no tensor")))?;
        read_tensor(t, self.b.model_dir)
            .map(Some)
            .map_err(|e| self.unsupported(format!("attribute `{name}`: {e}")))
    }

    pub fn attr_graph(&self, name: &str) -> Result<Option<&GraphProto>, ImportError> {
        Ok(self
            .attr(name, AttributeType::Graph)?
            .and_then(|a| a.g.as_ref()))
    }

    fn check_all_attrs_used(&self) -> Result<(), ImportError> {
        let used = self.used_attrs.borrow();
        match self.node.attribute.iter().find(|a| !used.contains(&a.name)) {
            None => Ok(()),
            Some(a) => Err(self.unsupported(format!("attribute `{}` is not supported", a.name))),
        }
    }

    // ---- building IR ---------------------------------------------------------------------

    fn hint(&self) -> String {
        let base = self
            .node
            .output
            .iter()
            .find(|o| !o.is_empty())
            .cloned()
            .unwrap_or_else(|| self.node.op_type.clone());
        format!("{}{base}", self.prefix)
    }

    /// Add a node computing `op` on `inputs`; returns its results. Types come from
    /// [`terafab_ir::infer`]; when every operand is a constant and the result is small, the
    /// node is evaluated now and becomes a constant.
    pub fn op_n(&mut self, op: Op, inputs: &[ValueId]) -> Result<Vec<ValueId>, ImportError> {
        let types: Vec<&TensorType> = inputs.iter().map(|&v| self.b.func.values.ty(v)).collect();
        let out_types = terafab_ir::infer::infer(&op, &types)
            .map_err(|e| self.invalid(format!("`{}`: {e}", op.name())))?;
        let all_const = inputs.iter().all(|v| self.b.consts.contains_key(v));
        let small = out_types.iter().all(|t| {
            t.shape
                .num_elements()
                .is_some_and(|n| n <= self.b.opts.fold_limit)
        });
        if all_const && small && !matches!(op, Op::Constant { .. }) {
            let vals: Vec<Tensor> = inputs.iter().map(|v| self.b.consts[v].clone()).collect();
            // A failure here (e.g. an index out of range) is reported when the model runs.
            if let Ok(results) = eval_op(&op, &vals, &Bindings::new()) {
                let hint = self.hint();
                return Ok(results
                    .into_iter()
                    .map(|t| self.b.constant(t, &hint))
                    .collect());
            }
        }
        self.op_with_regions(op, inputs, vec![], out_types)
    }

    /// [`NodeCtx::op_n`] for ops with one result.
    pub fn op(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, ImportError> {
        Ok(self.op_n(op, inputs)?[0])
    }

    /// Add a node with regions (`if`, `loop`) and explicit result types.
    pub fn op_with_regions(
        &mut self,
        op: Op,
        inputs: &[ValueId],
        regions: Vec<Region>,
        out_types: Vec<TensorType>,
    ) -> Result<Vec<ValueId>, ImportError> {
        let hint = self.hint();
        let names: Vec<String> = (0..out_types.len()).map(|_| hint.clone()).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let name = (!self.node.name.is_empty()).then(|| self.node.name.clone());
        let region = self.b.regions.last_mut().expect("a region");
        Ok(push_node(
            &mut self.b.func.values,
            region,
            op,
            inputs.to_vec(),
            out_types,
            &names,
            regions,
            name,
        ))
    }

    /// Import a subgraph attribute as a region whose parameters (named after the subgraph's
    /// inputs) have the given types. The subgraph may use values of enclosing scopes.
    /// Returns the region and the types of its results.
    pub fn subgraph(
        &mut self,
        g: &GraphProto,
        param_types: Vec<TensorType>,
    ) -> Result<(Region, Vec<TensorType>), ImportError> {
        if g.input.len() != param_types.len() {
            return Err(self.invalid(format!(
                "subgraph `{}` takes {} inputs, expected {}",
                g.name,
                g.input.len(),
                param_types.len()
            )));
        }
        self.b.regions.push(Region::default());
        self.b.scopes.push(HashMap::new());
        let result = (|| {
            for (input, ty) in g.input.iter().zip(param_types) {
                let v = self
                    .b
                    .func
                    .values
                    .add(&format!("{}{}", self.prefix, input.name), ty);
                self.b.regions.last_mut().expect("region").params.push(v);
                self.b.bind(&input.name, v);
            }
            self.b.import_graph_body(g, self.prefix)?;
            let mut results = Vec::new();
            for o in &g.output {
                match self.b.lookup(&o.name) {
                    Some(Slot::Value(v)) => results.push(v),
                    Some(Slot::Poisoned) => return Err(ImportError::Poisoned),
                    None => {
                        return Err(
                            self.invalid(format!("subgraph output `{}` is never produced", o.name))
                        );
                    }
                }
            }
            Ok(results)
        })();
        self.b.scopes.pop();
        let mut region = self.b.regions.pop().expect("region");
        let results = result?;
        let types = results.iter().map(|&v| self.ty(v).clone()).collect();
        region.results = results;
        Ok((region, types))
    }

    /// A constant tensor.
    pub fn constant(&mut self, t: Tensor) -> ValueId {
        let hint = self.hint();
        self.b.constant(t, &hint)
    }

    /// A scalar constant of `dtype` with value `v` (converted with the `convert` rules).
    pub fn scalar(&mut self, v: f64, dtype: DType) -> Result<ValueId, ImportError> {
        let t = Tensor::from_fn(dtype, &[], |_| v).map_err(|e| self.invalid(e.to_string()))?;
        Ok(self.constant(t))
    }

    /// A constant i64 vector.
    pub fn const_i64s(&mut self, v: &[i64]) -> Result<ValueId, ImportError> {
        let t =
            Tensor::from_vec(vec![v.len()], v.to_vec()).map_err(|e| self.invalid(e.to_string()))?;
        Ok(self.constant(t))
    }

    pub fn unary(&mut self, u: UnaryOp, x: ValueId) -> Result<ValueId, ImportError> {
        self.op(Op::Unary(u), &[x])
    }

    pub fn binary(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> Result<ValueId, ImportError> {
        self.op(Op::Binary(b), &[x, y])
    }

    pub fn compare(
        &mut self,
        c: CompareOp,
        x: ValueId,
        y: ValueId,
    ) -> Result<ValueId, ImportError> {
        self.op(Op::Compare(c), &[x, y])
    }

    pub fn select(&mut self, c: ValueId, x: ValueId, y: ValueId) -> Result<ValueId, ImportError> {
        self.op(Op::Select, &[c, x, y])
    }

    /// Convert to `to` (no node if `x` already has that type).
    pub fn convert(&mut self, x: ValueId, to: DType) -> Result<ValueId, ImportError> {
        if self.dtype(x) == to {
            Ok(x)
        } else {
            self.op(Op::Convert { to }, &[x])
        }
    }

    /// Reshape to static `dims` (no node if the shape is already that).
    pub fn reshape(&mut self, x: ValueId, dims: &[usize]) -> Result<ValueId, ImportError> {
        let shape = Shape::from_static(dims);
        if self.ty(x).shape == shape {
            Ok(x)
        } else {
            self.op(Op::Reshape { shape }, &[x])
        }
    }

    /// Numpy-broadcast to static `dims` (no node if the shape is already that).
    pub fn broadcast(&mut self, x: ValueId, dims: &[usize]) -> Result<ValueId, ImportError> {
        let shape = Shape::from_static(dims);
        if self.ty(x).shape == shape {
            Ok(x)
        } else {
            self.op(Op::Broadcast { shape }, &[x])
        }
    }

    /// Transpose (no node for the identity permutation).
    pub fn transpose(&mut self, x: ValueId, perm: &[usize]) -> Result<ValueId, ImportError> {
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            Ok(x)
        } else {
            self.op(
                Op::Transpose {
                    perm: perm.to_vec(),
                },
                &[x],
            )
        }
    }

    pub fn reduce(
        &mut self,
        kind: ReduceKind,
        x: ValueId,
        axes: &[usize],
        keep_dims: bool,
    ) -> Result<ValueId, ImportError> {
        self.op(
            Op::Reduce {
                kind,
                axes: axes.to_vec(),
                keep_dims,
            },
            &[x],
        )
    }

    /// Static slice with unit stride along one axis.
    pub fn slice_axis(
        &mut self,
        x: ValueId,
        axis: usize,
        start: usize,
        limit: usize,
    ) -> Result<ValueId, ImportError> {
        let dims = self.dims(x)?;
        let mut s = vec![0; dims.len()];
        let mut l = dims.clone();
        s[axis] = start;
        l[axis] = limit;
        self.op(
            Op::Slice {
                start: s,
                limit: l,
                stride: vec![1; dims.len()],
            },
            &[x],
        )
    }

    /// Concatenate along `axis` (no node for a single operand).
    pub fn concat(&mut self, xs: &[ValueId], axis: usize) -> Result<ValueId, ImportError> {
        if xs.len() == 1 {
            Ok(xs[0])
        } else {
            self.op(Op::Concat { axis }, xs)
        }
    }
}

/// A short description of a type proto (for messages).
pub fn describe_type(t: &TypeProto) -> String {
    match &t.value {
        Some(type_proto::Value::TensorType(tt)) => format!(
            "tensor({})",
            dtype_of(tt.elem_type)
                .map(|d| d.to_string())
                .unwrap_or_else(|e| e.to_string())
        ),
        Some(v) => type_kind(v).to_string(),
        None => "untyped".into(),
    }
}

/// The shared loss and optimizer formulas of `terafab_passes::train` build their nodes through
/// the importer (types inferred, constants folded as [`NodeCtx::op`] does).
impl terafab_passes::train::Emit for NodeCtx<'_, '_> {
    type Error = ImportError;

    fn emit(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, ImportError> {
        self.op(op, inputs)
    }

    fn emit_constant(&mut self, t: Tensor) -> ValueId {
        self.constant(t)
    }

    fn type_of(&self, v: ValueId) -> &TensorType {
        self.ty(v)
    }

    fn fail(&self, message: String) -> ImportError {
        self.invalid(message)
    }

    fn static_dims(&self, v: ValueId) -> Result<Vec<usize>, ImportError> {
        self.dims(v)
    }
}
