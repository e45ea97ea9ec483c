//! The e-class analysis: the type (element type and shape) of every e-class, from
//! [`terafab_ir::infer`], and the side table that gives every e-node its [`Op`] or leaf value.
//!
//! An e-node whose op does not type-check gets no type (`None`); rules never add such nodes
//! (see [`crate::eqsat::rules`]: every candidate is type-checked before it is added, and only
//! added when its type equals its e-class's).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use egg::{Analysis, DidMerge, EGraph, Id, Symbol};
use terafab_ir::infer::infer;
use terafab_ir::{Element, Op, Tensor, TensorType, ValueId};

use super::language::{LEAF, TfNode, attrless_op, attrs_symbol};

/// The e-graph of this pass.
pub type TfGraph = EGraph<TfNode, TypeAnalysis>;

/// What an e-node stands for.
#[derive(Debug, Clone)]
pub enum Meaning {
    /// An op applied to the node's children.
    Op(Op),
    /// A value of the function that is not translated (an input or an opaque result).
    Leaf(ValueId, TensorType),
}

/// The type analysis and its side table.
#[derive(Debug, Default)]
pub struct TypeAnalysis {
    /// Every `(kind, attrs)` with attributes, and every leaf.
    table: HashMap<(Symbol, Symbol), Meaning>,
}

impl TypeAnalysis {
    /// What `n` stands for (ops without attributes need no table entry).
    pub fn meaning(&self, n: &TfNode) -> Option<Meaning> {
        if let Some(m) = self.table.get(&(n.kind, n.attrs)) {
            return Some(m.clone());
        }
        if n.attrs.as_str().is_empty() {
            return attrless_op(n.kind.as_str()).map(Meaning::Op);
        }
        None
    }

    /// The op of `n`, if it is an op node.
    pub fn op(&self, n: &TfNode) -> Option<Op> {
        match self.meaning(n)? {
            Meaning::Op(op) => Some(op),
            Meaning::Leaf(..) => None,
        }
    }

    /// The e-node of `op` applied to `children`, registering the op in the side table.
    pub fn node(&mut self, op: &Op, children: Vec<Id>) -> TfNode {
        let attrs = match op {
            Op::Constant { value } => self.constant_key(value),
            _ => attrs_symbol(op),
        };
        let n = TfNode::new(op.name(), &attrs, children);
        if !n.attrs.as_str().is_empty() {
            self.table
                .entry((n.kind, n.attrs))
                .or_insert_with(|| Meaning::Op(op.clone()));
        }
        n
    }

    /// The leaf e-node of a value.
    pub fn leaf(&mut self, v: ValueId, name: &str, ty: &TensorType) -> TfNode {
        let n = TfNode::new(LEAF, &format!("%{name}"), vec![]);
        self.table
            .insert((n.kind, n.attrs), Meaning::Leaf(v, ty.clone()));
        n
    }

    /// `#HASH` of a constant's value; equal constants share it (a second, different constant
    /// with a colliding hash gets a suffix). Constants of more than [`HASHED_ELEMENTS`]
    /// elements (weights) are keyed by their shared buffer instead (`@ADDRESS`, kept alive by
    /// the table), so copies of one weight tensor share a key without hashing megabytes, and
    /// equal weights in different buffers stay apart (no rule needs them merged).
    fn constant_key(&self, t: &Tensor) -> String {
        if t.len() > HASHED_ELEMENTS {
            let addr = terafab_ir::with_data!(t.data(), v, _T => std::sync::Arc::as_ptr(v) as *const u8 as usize);
            return format!("@{addr:x}:{}:{:?}", t.dtype().name(), t.shape());
        }
        let mut h = DefaultHasher::new();
        t.dtype().name().hash(&mut h);
        t.shape().hash(&mut h);
        terafab_ir::with_data!(t.data(), v, _T => v.iter().for_each(|x| Element::to_f64(*x).to_bits().hash(&mut h)));
        let base = format!("#{:016x}", h.finish());
        let kind = Symbol::from("constant");
        (0..)
            .map(|i| {
                if i == 0 {
                    base.clone()
                } else {
                    format!("{base}.{i}")
                }
            })
            .find(
                |key| match self.table.get(&(kind, Symbol::from(key.as_str()))) {
                    Some(Meaning::Op(Op::Constant { value })) => same_tensor(value, t),
                    Some(_) => false,
                    None => true,
                },
            )
            .unwrap_or(base)
    }
}

/// Constants up to this many elements are keyed by a hash of their contents.
pub const HASHED_ELEMENTS: usize = 4096;

/// Bitwise equality of two tensors (NaNs included).
fn same_tensor(a: &Tensor, b: &Tensor) -> bool {
    let bits = |t: &Tensor| -> Vec<u64> {
        terafab_ir::with_data!(t.data(), v, _T => v.iter().map(|x| Element::to_f64(*x).to_bits()).collect())
    };
    a.dtype() == b.dtype() && a.shape() == b.shape() && bits(a) == bits(b)
}

/// The result type of `op` on operands of types `tys`, if it type-checks to one result.
pub fn op_type(op: &Op, tys: &[Option<TensorType>]) -> Option<TensorType> {
    let tys: Vec<&TensorType> = tys.iter().map(Option::as_ref).collect::<Option<_>>()?;
    match infer(op, &tys).ok()?.as_slice() {
        [t] => Some(t.clone()),
        _ => None,
    }
}

impl Analysis<TfNode> for TypeAnalysis {
    type Data = Option<TensorType>;

    fn make(egraph: &mut TfGraph, enode: &TfNode, _id: Id) -> Self::Data {
        match egraph.analysis.meaning(enode)? {
            Meaning::Leaf(_, ty) => Some(ty),
            Meaning::Op(op) => {
                let tys: Vec<Option<TensorType>> = enode
                    .children
                    .iter()
                    .map(|&c| egraph[c].data.clone())
                    .collect();
                op_type(&op, &tys)
            }
        }
    }

    /// Classes only merge when their types agree (rules check it); keep the known type.
    fn merge(&mut self, a: &mut Self::Data, b: Self::Data) -> DidMerge {
        if a.is_none() && b.is_some() {
            *a = b;
            DidMerge(true, false)
        } else {
            DidMerge(false, a != &b)
        }
    }
}
