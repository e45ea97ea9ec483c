//! Rematerialization (activation checkpointing): recompute cheap values where they are used
//! again long after they were computed, instead of keeping them alive in between.
//!
//! A training step (see [`crate::train`]) computes the forward pass, then the backward pass,
//! which uses many forward activations again in reverse order; by default each of them stays in
//! memory from the forward pass until its last backward use. This pass trades compute for memory:
//!
//! - **Checkpoints** are the values that are kept: function inputs, constants, and the results
//!   of every node that is not cheap to recompute (contractions, convolutions, reductions,
//!   gathers, sorts, control flow, composites).
//! - **Cheap** nodes, those fusion inlines into their readers (elementwise arithmetic, compares, selects, conversions, and the data
//!   movement ops `broadcast`, `reshape`, `transpose`, `slice`, `reverse`, `concat`, `pad`,
//!   `iota`) are recomputed: where a top-level node uses a cheap value `v` and more than
//!   [`Remat::distance`] checkpoint-producing nodes ran since `v` (or its last copy) was last
//!   used, a copy of `v`'s node is inserted right before the use, its operands themselves
//!   recomputed the same way or taken from checkpoints, and the use reads the copy.
//!
//! The original value then dies after its last near use and each copy lives only around the
//! uses it serves, so between the forward and the backward pass only the checkpoints stay
//! (for a `dense → add → relu` layer: the product, not the sum and the activation). The memory
//! plan's peak (`memplan`, and the backends' arenas) falls; the recomputed nodes are usually
//! fused into the kernels that use them. Results are unchanged: every core op is deterministic,
//! so a copy computes the same bits as the original.
//!
//! Run it after `cse` (which would merge the copies back into the originals) and before
//! `fuse`; `terafab train --recompute` does.

use std::collections::HashMap;

use terafab_ir::{Function, Node, Op, ValueId};

use crate::{Pass, PassError};

/// The pass; [`Remat::default`] recomputes a value once more than 2 checkpoint-producing
/// nodes ran since its last use.
#[derive(Debug, Clone, Copy)]
pub struct Remat {
    /// How many checkpoint-producing nodes may run between two uses of a cheap value before
    /// the later use recomputes it.
    pub distance: usize,
}

impl Default for Remat {
    fn default() -> Self {
        Remat { distance: 2 }
    }
}

impl Pass for Remat {
    fn name(&self) -> &'static str {
        "remat"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        Ok(self.rematerialize(f) > 0)
    }
}

/// Whether `node` is cheap to recompute from its operands: fusion inlines it into the kernels
/// that read it (elementwise, compare, select, convert, data movement, `iota`), so a copy
/// costs no memory traffic of its own. Constants are not copied (they are not in the arena).
pub fn is_cheap(node: &Node) -> bool {
    crate::fuse::family(node) == crate::fuse::Family::Inline
        && !matches!(node.op, Op::Constant { .. })
}

/// Where the current copy of a cheap value is, and when it was last used.
struct Copy {
    value: ValueId,
    /// The checkpoint clock at its last use (or creation).
    last_use: usize,
}

struct State<'a> {
    distance: usize,
    /// The defining node of every cheap top-level value (its original).
    defs: &'a HashMap<ValueId, Node>,
    copies: HashMap<ValueId, Copy>,
    /// Checkpoint-producing nodes seen so far.
    clock: usize,
    /// Nodes inserted (copies).
    added: Vec<Node>,
}

impl State<'_> {
    /// The value to read for a use of `v` now: `v` itself (not cheap), its current copy (used
    /// recently), or a new copy made before the current node (pushed to `added`).
    fn read(&mut self, f: &mut Function, v: ValueId) -> ValueId {
        let Some(def) = self.defs.get(&v) else {
            return v;
        };
        if let Some(c) = self.copies.get_mut(&v)
            && self.clock - c.last_use <= self.distance
        {
            c.last_use = self.clock;
            return c.value;
        }
        let mut node = def.clone();
        let inputs = node.inputs.clone();
        node.inputs = inputs.into_iter().map(|w| self.read(f, w)).collect();
        let ty = f.values.ty(v).clone();
        let name = f.values.name(v).to_string();
        let copy = f.values.add(&format!("{name}.remat"), ty);
        node.outputs = vec![copy];
        self.added.push(node);
        self.copies.insert(
            v,
            Copy {
                value: copy,
                last_use: self.clock,
            },
        );
        copy
    }
}

impl Remat {
    /// Rewrite `f`'s top level; returns how many nodes were inserted.
    pub fn rematerialize(&self, f: &mut Function) -> usize {
        let defs: HashMap<ValueId, Node> = f
            .body
            .nodes
            .iter()
            .filter(|n| is_cheap(n))
            .map(|n| (n.outputs[0], n.clone()))
            .collect();
        if defs.is_empty() {
            return 0;
        }
        let mut st = State {
            distance: self.distance,
            defs: &defs,
            copies: HashMap::new(),
            clock: 0,
            added: Vec::new(),
        };
        let mut inserted = 0;
        let mut out = Vec::with_capacity(f.body.nodes.len());
        for mut node in std::mem::take(&mut f.body.nodes) {
            // Only operands are rewritten: values captured by regions, and the function's
            // results, read the originals (which then stay alive up to there).
            let inputs = node.inputs.clone();
            node.inputs = inputs.into_iter().map(|v| st.read(f, v)).collect();
            inserted += st.added.len();
            out.append(&mut st.added);
            if is_cheap(&node) {
                let v = node.outputs[0];
                st.copies.insert(
                    v,
                    Copy {
                        value: v,
                        last_use: st.clock,
                    },
                );
            } else if !matches!(node.op, Op::Constant { .. }) {
                st.clock += 1;
            }
            out.push(node);
        }
        f.body.nodes = out;
        inserted
    }
}

#[cfg(test)]
mod tests {
    use terafab_ir::interp::run_function;

    use super::*;
    use crate::memplan::plan_memory;
    use crate::train::testing::mlp_step;

    #[test]
    fn a_training_step_keeps_less_and_computes_the_same_bits() {
        // Activations (`[64, 16]`) larger than the weights (`[16, 16]`), as in training.
        let (f, ins) = mlp_step(4, 16, 64);
        let want = run_function(&f, &ins).unwrap();
        let before = plan_memory(&f).unwrap();
        let mut g = f.clone();
        let inserted = Remat::default().rematerialize(&mut g);
        assert!(inserted > 0);
        terafab_ir::verify::verify_function(&g).unwrap();
        let after = plan_memory(&g).unwrap();
        assert!(
            after.arena_bytes < before.arena_bytes,
            "arena {} -> {} bytes (inserted {inserted})",
            before.arena_bytes,
            after.arena_bytes
        );
        let got = run_function(&g, &ins).unwrap();
        assert_eq!(got, want, "recomputed values are the same bits");
        // The copies are plain nodes: the step still fuses and runs through its kernels.
        let kernels = crate::fuse::run_kernels(&g, &ins).unwrap();
        let plain = crate::fuse::run_kernels(&f, &ins).unwrap();
        assert_eq!(kernels, plain);
        // Running it again changes nothing: every use is near its copy now.
        let mut h = g.clone();
        assert_eq!(Remat::default().rematerialize(&mut h), 0);
        assert_eq!(h, g);
    }

    #[test]
    fn near_uses_and_checkpoints_are_left_alone() {
        // No contraction between the uses: nothing is far.
        let src = "func @main(%x: f32[4]) -> (y: f32[4]) {
  %a = neg(%x) : f32[4]
  %b = exp(%a) : f32[4]
  %c = add(%a, %b) : f32[4]
  %y = mul(%c, %a) : f32[4]
  return %y
}
";
        let mut f = terafab_ir::parse::parse_function(src).unwrap();
        let g = f.clone();
        assert_eq!(Remat::default().rematerialize(&mut f), 0);
        assert_eq!(f, g);
    }
}
