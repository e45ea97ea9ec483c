//! Dead code elimination: removes nodes none of whose results are used.
//!
//! Every core op is free of side effects, so a node whose results are neither used by a later
//! node (in its region or a nested one) nor returned can go. Works backwards over each region;
//! a kept node's regions are cleaned too, and the values they capture from outside stay live.

use std::collections::HashSet;

use terafab_ir::{Function, Region, ValueId};

use crate::{Pass, PassError};

pub struct Dce;

impl Pass for Dce {
    fn name(&self) -> &'static str {
        "dce"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let mut live = HashSet::new();
        Ok(clean_region(&mut f.body, &mut live))
    }
}

/// Remove dead nodes of `r`, given the values live after it; returns whether anything changed.
fn clean_region(r: &mut Region, live: &mut HashSet<ValueId>) -> bool {
    live.extend(r.results.iter().copied());
    let before = r.nodes.len();
    let mut changed = false;
    let mut kept = Vec::with_capacity(r.nodes.len());
    for mut node in std::mem::take(&mut r.nodes).into_iter().rev() {
        if !node.outputs.iter().any(|v| live.contains(v)) {
            continue;
        }
        for region in &mut node.regions {
            changed |= clean_region(region, live);
        }
        live.extend(node.inputs.iter().copied());
        kept.push(node);
    }
    kept.reverse();
    r.nodes = kept;
    changed || r.nodes.len() != before
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::{DType, Op, Region, TensorType, UnaryOp, graph::push_node};

    fn ty() -> TensorType {
        TensorType::from_static(DType::F32, &[3])
    }

    #[test]
    fn removes_unused_chain_keeps_used() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty());
        let dead1 = f.push(
            Op::Unary(UnaryOp::Exp),
            vec![x],
            vec![ty()],
            &["d1"],
            vec![],
            None,
        );
        f.push(
            Op::Unary(UnaryOp::Log),
            dead1,
            vec![ty()],
            &["d2"],
            vec![],
            None,
        );
        let y = f.push(
            Op::Unary(UnaryOp::Neg),
            vec![x],
            vec![ty()],
            &["y"],
            vec![],
            None,
        );
        f.add_output("y", y[0]);
        assert!(Dce.run(&mut f).unwrap());
        assert_eq!(f.num_nodes(), 1);
        assert!(!Dce.run(&mut f).unwrap());
        terafab_ir::verify::verify_function(&f).unwrap();
    }

    #[test]
    fn keeps_values_captured_by_regions_and_cleans_inside() {
        let mut f = Function::new("main");
        let c = f.add_input("c", TensorType::scalar(DType::Bool));
        let x = f.add_input("x", ty());
        let cap = f.push(
            Op::Unary(UnaryOp::Exp),
            vec![x],
            vec![ty()],
            &["cap"],
            vec![],
            None,
        );
        let mut then_r = Region::default();
        push_node(
            &mut f.values,
            &mut then_r,
            Op::Unary(UnaryOp::Sin),
            vec![x],
            vec![ty()],
            &["dead_inner"],
            vec![],
            None,
        );
        then_r.results = cap.clone();
        let else_r = Region {
            params: vec![],
            nodes: vec![],
            results: vec![x],
        };
        let r = f.push(
            Op::If,
            vec![c],
            vec![ty()],
            &["r"],
            vec![then_r, else_r],
            None,
        );
        f.add_output("r", r[0]);
        assert!(Dce.run(&mut f).unwrap());
        // `cap` survives (used inside the region), the dead node inside is gone.
        assert_eq!(f.num_nodes(), 2);
        terafab_ir::verify::verify_function(&f).unwrap();
    }

    #[test]
    fn empty_function_is_unchanged() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty());
        f.add_output("x", x);
        assert!(!Dce.run(&mut f).unwrap());
    }
}
