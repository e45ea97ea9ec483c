//! Common subexpression elimination: a node with the same op (attributes included; constants
//! compared by bits, as `Tensor`'s `==` does) and the same operands as an earlier node it can see
//! is merged into it: its results' uses become uses of the earlier node's results, and the node
//! goes.
//!
//! Scoped like SSA itself: a node inside a region can reuse an equivalent node of an enclosing
//! region (earlier in the walk), but a node of a region is forgotten when the region ends, so
//! nothing outside it (or in a sibling region) reuses it. Nodes with regions are never merged
//! (their regions are processed on their own). Every core op is pure and deterministic, so equal
//! ops on equal operands give equal results.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use terafab_ir::{Element, Function, Node, Op, Region, ValueId, ValueTable};

use crate::util::{replace_uses, resolve};
use crate::{Pass, PassError};

pub struct Cse;

impl Pass for Cse {
    fn name(&self) -> &'static str {
        "cse"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let mut cse = Scopes {
            values: &f.values,
            scopes: Vec::new(),
            merged: HashMap::new(),
        };
        cse.region(&mut f.body);
        let merged = cse.merged;
        replace_uses(f, &merged);
        Ok(!merged.is_empty())
    }
}

/// The hash-table key of a node: a hash of its op and its (resolved) operands.
type Key = (u64, Vec<ValueId>);

/// The nodes one region makes available: candidate (op, results) by key.
type Scope = HashMap<Key, Vec<(Op, Vec<ValueId>)>>;

/// Nodes available for reuse, one table per enclosing region (innermost last).
struct Scopes<'a> {
    values: &'a ValueTable,
    scopes: Vec<Scope>,
    /// Results of merged nodes, and the results that replace them.
    merged: HashMap<ValueId, ValueId>,
}

impl Scopes<'_> {
    fn region(&mut self, r: &mut Region) {
        self.scopes.push(HashMap::new());
        let mut kept = Vec::with_capacity(r.nodes.len());
        for mut node in std::mem::take(&mut r.nodes) {
            for region in &mut node.regions {
                self.region(region);
            }
            if !node.regions.is_empty() || !self.try_merge(&node) {
                kept.push(node);
            }
        }
        r.nodes = kept;
        self.scopes.pop();
    }

    /// Merge `node` into an equivalent visible node (recording its results in `merged`), or
    /// make it visible to later nodes; returns whether it was merged.
    fn try_merge(&mut self, node: &Node) -> bool {
        let inputs: Vec<ValueId> = node
            .inputs
            .iter()
            .map(|&v| resolve(&self.merged, v))
            .collect();
        let key = (op_hash(&node.op), inputs);
        let found = self.scopes.iter().rev().find_map(|scope| {
            scope.get(&key)?.iter().find(|(op, outs)| {
                *op == node.op
                    && outs.len() == node.outputs.len()
                    && outs
                        .iter()
                        .zip(&node.outputs)
                        .all(|(&a, &b)| self.values.ty(a) == self.values.ty(b))
            })
        });
        if let Some((_, outs)) = found {
            let pairs: Vec<_> = node
                .outputs
                .iter()
                .copied()
                .zip(outs.iter().copied())
                .collect();
            self.merged.extend(pairs);
            return true;
        }
        self.scopes
            .last_mut()
            .expect("inside a region")
            .entry(key)
            .or_default()
            .push((node.op.clone(), node.outputs.clone()));
        false
    }
}

/// A hash of an op consistent with its `==`: the debug text of the op, except for constants,
/// where only the type and the first elements are hashed (`==` then compares all the bits), so
/// that large weights are not formatted.
fn op_hash(op: &Op) -> u64 {
    let mut h = DefaultHasher::new();
    match op {
        Op::Constant { value } => {
            value.dtype().hash(&mut h);
            value.shape().hash(&mut h);
            terafab_ir::with_data!(value.data(), v, _T => {
                for x in v.iter().take(16) {
                    // Bitwise-equal elements have bitwise-equal f64 images.
                    Element::to_f64(*x).to_bits().hash(&mut h);
                }
            });
        }
        _ => format!("{op:?}").hash(&mut h),
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::parse::parse_function;

    fn cse(src: &str) -> (bool, String) {
        let mut f = parse_function(src).unwrap();
        let changed = Cse.run(&mut f).unwrap();
        terafab_ir::verify::verify_function(&f).unwrap();
        (changed, f.to_string())
    }

    #[test]
    fn constants_differing_in_sign_of_zero_stay_apart() {
        let src = "func @main(%x: f32[]) -> (a: f32[], b: f32[]) {
  %p = constant() {value=dense<f32[]>[0.0]} : f32[]
  %n = constant() {value=dense<f32[]>[-0.0]} : f32[]
  %a = add(%x, %p) : f32[]
  %b = add(%x, %n) : f32[]
  return %a, %b
}
";
        assert_eq!(cse(src), (false, src.to_string()));
    }

    #[test]
    fn merges_chains_in_one_run() {
        let src = "func @main(%x: f32[2]) -> (a: f32[2], b: f32[2]) {
  %e1 = exp(%x) : f32[2]
  %e2 = exp(%x) : f32[2]
  %a = neg(%e1) : f32[2]
  %b = neg(%e2) : f32[2]
  return %a, %b
}
";
        let (changed, text) = cse(src);
        assert!(changed);
        assert!(text.contains("return %a, %a"), "{text}");
        assert!(!text.contains("%e2"), "{text}");
    }
}
