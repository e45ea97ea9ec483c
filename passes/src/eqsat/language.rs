//! The e-graph language over the core ops.
//!
//! An e-node is an op *kind* (the op's text-form name: `transpose`, `add`, `constant`) plus an
//! *attribute* symbol (the op's attributes in a compact text form, `[perm=[1,0,2]]`), so it
//! prints as `transpose[perm=[1,0,2]]`, and its operand e-classes. Constants are `constant`
//! nodes whose attribute symbol is a hash of the value (`#3f2a..`), graph inputs and opaque
//! values (results of multi-result and region ops) are `leaf` nodes whose attribute symbol is
//! the value's name (`%x`). The [`crate::eqsat::analysis::TypeAnalysis`] side table maps every
//! `(kind, attrs)` pair back to its [`Op`] or leaf.
//!
//! In *patterns*, an empty attribute symbol is a wildcard: `(transpose ?x)` matches every
//! transpose, whatever its permutation (rules then read the concrete ops from the e-class). Ops
//! without attributes (`add`, `neg`, `select`) always have the empty attribute symbol, so
//! patterns over them are exact.

use std::fmt;

use egg::{FromOp, Id, Language, Symbol};
use terafab_ir::{Attr, BinaryOp, CompareOp, Op, UnaryOp};

/// The kind of leaf e-nodes (graph inputs and opaque values).
pub const LEAF: &str = "leaf";

/// An e-node: op kind, attribute symbol, operand e-classes. Ordered by kind first, so the
/// nodes of one kind are contiguous in an e-class (egg relies on this with
/// [`Language::discriminant`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TfNode {
    pub kind: Symbol,
    pub attrs: Symbol,
    pub children: Vec<Id>,
}

impl TfNode {
    pub fn new(kind: &str, attrs: &str, children: Vec<Id>) -> Self {
        TfNode {
            kind: Symbol::from(kind),
            attrs: Symbol::from(attrs),
            children,
        }
    }

    /// Whether this is a leaf (graph input or opaque value).
    pub fn is_leaf(&self) -> bool {
        self.kind.as_str() == LEAF
    }
}

impl Language for TfNode {
    type Discriminant = (Symbol, usize);

    fn discriminant(&self) -> Self::Discriminant {
        (self.kind, self.children.len())
    }

    /// Same kind and arity, and same attributes unless one side is a wildcard (empty).
    fn matches(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.children.len() == other.children.len()
            && (self.attrs == other.attrs
                || self.attrs.as_str().is_empty()
                || other.attrs.as_str().is_empty())
    }

    fn children(&self) -> &[Id] {
        &self.children
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.children
    }
}

impl fmt::Display for TfNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind, self.attrs)
    }
}

impl FromOp for TfNode {
    type Error = std::convert::Infallible;

    /// Pattern nodes: the op kind with wildcard attributes.
    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        Ok(TfNode::new(op, "", children))
    }
}

/// The attribute symbol of a non-constant op: empty for ops without attributes, else
/// `[name=value;...]`. Injective over ops of one kind.
pub fn attrs_symbol(op: &Op) -> String {
    let attrs = op.attrs();
    if attrs.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = attrs
        .iter()
        .map(|(name, a)| format!("{name}={}", attr_text(a)))
        .collect();
    format!("[{}]", parts.join(";"))
}

fn attr_text(a: &Attr) -> String {
    let list = |v: Vec<String>| format!("[{}]", v.join(","));
    match a {
        Attr::Int(v) => v.to_string(),
        Attr::Ints(v) => list(v.iter().map(i64::to_string).collect()),
        Attr::Bool(v) => v.to_string(),
        Attr::DType(d) => d.name().to_string(),
        Attr::Shape(s) => s.to_string(),
        Attr::Ident(s) => s.clone(),
        // The shortest text that reads back to the same f64 (composites only take finite ones).
        Attr::Float(v) => format!("{v:?}"),
        // Constants are keyed by value hash instead (see `TypeAnalysis::constant_node`).
        Attr::Tensor(t) => format!("{t:?}"),
    }
}

/// The op of a kind without attributes (`add`, `neg`, `eq`, `select`), if it is one.
pub fn attrless_op(kind: &str) -> Option<Op> {
    UnaryOp::from_name(kind)
        .map(Op::Unary)
        .or_else(|| BinaryOp::from_name(kind).map(Op::Binary))
        .or_else(|| CompareOp::from_name(kind).map(Op::Compare))
        .or_else(|| (kind == "select").then_some(Op::Select))
        .or_else(|| {
            // Composites without attributes (`silu`).
            terafab_ir::composite::NAMES
                .contains(&kind)
                .then(|| Op::from_attrs(kind, vec![]).ok())
                .flatten()
        })
}

/// Whether `op` can be an e-node: single-result ops without regions.
pub fn translatable(op: &Op) -> bool {
    !matches!(op, Op::If | Op::Loop | Op::Sort { .. })
}
