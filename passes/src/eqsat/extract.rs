//! Extraction: the cheapest e-node of every e-class, by egg's greedy [`Extractor`].
//!
//! The cost of an e-node is the memory it moves, the bytes of its result and of the operands it
//! reads, plus [`NODE_OVERHEAD`], plus its operands' costs; leaves (inputs and opaque values)
//! cost nothing. So removing a node always pays, and of two equal nodes the one moving fewer
//! bytes wins (a constant reads nothing: `x - x` becomes a zero constant); a division costs
//! [`DIV_OVERHEAD`] more than a multiplication.

use egg::{CostFunction, Extractor, Id, Language};
use terafab_ir::{BinaryOp, Op, TensorType};

use super::analysis::{Meaning, TfGraph, TypeAnalysis, op_type};
use super::language::TfNode;

/// The cost of a node beyond its result's bytes (a kernel launch, a loop nest).
pub const NODE_OVERHEAD: f64 = 64.0;

/// The extra cost of a division over a multiplication (dearer on every backend): it breaks the
/// tie in favour of `x * (1/c)` when both are equal.
pub const DIV_OVERHEAD: f64 = 1.0;

/// Bytes assumed for a result of unknown (symbolic) size.
const UNKNOWN_BYTES: f64 = 1024.0;

/// The cost model over one e-graph.
pub struct ResultBytes<'a> {
    egraph: &'a TfGraph,
}

fn bytes(ty: Option<&TensorType>) -> f64 {
    ty.and_then(|t| {
        let n = t.shape.num_elements()?;
        Some((n * t.dtype.size_bytes()) as f64)
    })
    .unwrap_or(UNKNOWN_BYTES)
}

impl CostFunction<TfNode> for ResultBytes<'_> {
    type Cost = f64;

    fn cost<C>(&mut self, enode: &TfNode, mut costs: C) -> f64
    where
        C: FnMut(Id) -> f64,
    {
        let own = match self.egraph.analysis.meaning(enode) {
            Some(Meaning::Leaf(..)) => 0.0,
            Some(Meaning::Op(op)) => {
                let tys: Vec<Option<TensorType>> = enode
                    .children
                    .iter()
                    .map(|&c| self.egraph[c].data.clone())
                    .collect();
                let read: f64 = tys.iter().map(|t| bytes(t.as_ref())).sum();
                let div = if op == Op::Binary(BinaryOp::Div) {
                    DIV_OVERHEAD
                } else {
                    0.0
                };
                bytes(op_type(&op, &tys).as_ref()) + read + NODE_OVERHEAD + div
            }
            None => f64::INFINITY,
        };
        enode.fold(own, |sum, c| sum + costs(c))
    }
}

/// The greedy extractor of `egraph` with [`ResultBytes`].
pub fn extractor(egraph: &TfGraph) -> Extractor<'_, ResultBytes<'_>, TfNode, TypeAnalysis> {
    Extractor::new(egraph, ResultBytes { egraph })
}
