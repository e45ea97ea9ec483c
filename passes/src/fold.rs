//! Constant folding: a node whose operands are all results of `constant` nodes is evaluated by
//! the reference interpreter ([`terafab_ir::interp::eval_op`]) and replaced by one `constant`
//! node per result (same result values, names and `loc`), when every result has at most
//! [`FOLD_LIMIT`] elements.
//!
//! Not folded: nodes with regions (`if`/`loop`), nodes without operands (`iota`: a compact
//! generator, folded once a consumer with constant operands is), results with symbolic dims,
//! and nodes the interpreter fails on (an out-of-range `gather` index, say): those stay, so the
//! error is reported when the program runs, as it would have been without folding.
//!
//! Folding in order makes chains of constant nodes fold in one run.

use std::collections::HashMap;

use terafab_ir::interp::{Bindings, eval_op};
use terafab_ir::{Function, Node, Op, Region, Tensor, TensorType, ValueId, ValueTable};

use crate::{Pass, PassError};

/// The most elements a folded result may have: 64Ki (256 KiB of f32). A folded constant is
/// printed in full in the IR text (about 10 bytes an element) and kept in memory with the graph,
/// while the op it replaces is one line however large its result: folding
/// `broadcast(0.0) {shape=[4096,4096]}` would turn one line into 16M elements. Results this small
/// cover what folding is for (shape arithmetic, small tables, scalar chains).
pub const FOLD_LIMIT: usize = 1 << 16;

pub struct Fold;

impl Pass for Fold {
    fn name(&self) -> &'static str {
        "fold"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let mut consts = HashMap::new();
        Ok(fold_region(&f.values, &mut f.body, &mut consts))
    }
}

/// Fold the nodes of `r` in order; `consts` holds the constants seen so far (ids are unique in
/// a function, so constants of a finished region can stay: nothing outside it can use them).
fn fold_region(values: &ValueTable, r: &mut Region, consts: &mut HashMap<ValueId, Tensor>) -> bool {
    let mut changed = false;
    let mut nodes = Vec::with_capacity(r.nodes.len());
    for mut node in std::mem::take(&mut r.nodes) {
        for region in &mut node.regions {
            changed |= fold_region(values, region, consts);
        }
        if let (Op::Constant { value }, &[out]) = (&node.op, &node.outputs[..]) {
            consts.insert(out, value.clone());
        }
        match try_fold(values, &node, consts) {
            Some(results) => {
                changed = true;
                for (&out, value) in node.outputs.iter().zip(results) {
                    consts.insert(out, value.clone());
                    nodes.push(Node {
                        op: Op::Constant { value },
                        inputs: vec![],
                        outputs: vec![out],
                        regions: vec![],
                        name: node.name.clone(),
                    });
                }
            }
            None => nodes.push(node),
        }
    }
    r.nodes = nodes;
    changed
}

/// The results of `node` if it can be folded (see the module docs).
fn try_fold(
    values: &ValueTable,
    node: &Node,
    consts: &HashMap<ValueId, Tensor>,
) -> Option<Vec<Tensor>> {
    if node.inputs.is_empty() || !node.regions.is_empty() || matches!(node.op, Op::Constant { .. })
    {
        return None;
    }
    let declared: Vec<&TensorType> = node.outputs.iter().map(|&v| values.ty(v)).collect();
    if !declared
        .iter()
        .all(|t| t.shape.num_elements().is_some_and(|n| n <= FOLD_LIMIT))
    {
        return None;
    }
    let inputs = node
        .inputs
        .iter()
        .map(|v| consts.get(v).cloned())
        .collect::<Option<Vec<_>>>()?;
    let results = eval_op(&node.op, &inputs, &Bindings::new()).ok()?;
    // The interpreter agrees with the type rules; never fold into a constant of another type.
    let same_types = results.len() == declared.len()
        && results
            .iter()
            .zip(&declared)
            .all(|(t, ty)| **ty == TensorType::from_static(t.dtype(), t.shape()));
    same_types.then_some(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::parse::parse_function;

    fn fold(src: &str) -> (bool, Function) {
        let mut f = parse_function(src).unwrap();
        let changed = Fold.run(&mut f).unwrap();
        terafab_ir::verify::verify_function(&f).unwrap();
        (changed, f)
    }

    #[test]
    fn folds_chains_and_multi_result_nodes() {
        let (changed, f) = fold(
            "func @main() -> (v: f32[3], i: i64[3]) {
  %a = constant() {value=dense<f32[3]>[3.0, 1.0, 2.0]} : f32[3]
  %b = neg(%a) : f32[3] loc(\"Neg_0\")
  %v, %i = sort(%b) {axis=0, descending=false} : f32[3], i64[3]
  return %v, %i
}
",
        );
        assert!(changed);
        let text = f.to_string();
        assert!(
            text.contains("%v = constant() {value=dense<f32[3]>[-3.0, -2.0, -1.0]} : f32[3]"),
            "{text}"
        );
        assert!(
            text.contains("%i = constant() {value=dense<i64[3]>[0, 2, 1]}"),
            "{text}"
        );
        assert!(text.contains("loc(\"Neg_0\")"), "{text}");
    }

    #[test]
    fn leaves_large_failing_and_iota_nodes() {
        let big = FOLD_LIMIT + 1;
        let src = format!(
            "func @main() -> (b: f32[{big}], g: f32[1], i: i64[4]) {{
  %z = constant() {{value=dense<f32[]>[0.0]}} : f32[]
  %b = broadcast(%z) {{shape=[{big}]}} : f32[{big}]
  %t = constant() {{value=dense<f32[2]>[1.0, 2.0]}} : f32[2]
  %k = constant() {{value=dense<i64[1]>[7]}} : i64[1]
  %g = gather(%t, %k) {{axis=0}} : f32[1]
  %i = iota() {{dtype=i64, shape=[4], axis=0}} : i64[4]
  return %b, %g, %i
}}
"
        );
        let (changed, f) = fold(&src);
        assert!(!changed);
        assert_eq!(f.to_string(), src);
    }
}
