//! Type inference: recomputes the result types of every node from its operands with
//! [`terafab_ir::infer`], in order, nested regions included, and stores them in the value table.
//!
//! On a verified graph it changes nothing (the verifier checks exactly these types); it is for
//! after rewrites that change an operand's type (a parameter given a static shape, a pass that
//! rebuilds nodes), so that the types downstream follow. Loop bodies: the parameters of the
//! carried values take the types of the carried operands. The leading dim of a loop's scan
//! results (the trip count, which `infer` cannot know) keeps its declared value, as the verifier
//! accepts any.

use terafab_ir::infer::infer_with_regions;
use terafab_ir::{Function, Node, Op, Region, TensorType, ValueTable};

use crate::{Pass, PassError};

pub struct InferTypes;

impl Pass for InferTypes {
    fn name(&self) -> &'static str {
        "infer-types"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let Function { values, body, .. } = f;
        infer_region(values, body).map_err(|message| PassError::Failed {
            pass: self.name().to_string(),
            func: f.name.clone(),
            message,
        })
    }
}

/// Re-infer the types of the values defined in `r`; returns whether any type changed.
fn infer_region(values: &mut ValueTable, r: &mut Region) -> Result<bool, String> {
    let mut changed = false;
    for node in &mut r.nodes {
        changed |= infer_node(values, node)?;
    }
    Ok(changed)
}

/// Set the type of `v`; returns whether it changed.
fn set_type(values: &mut ValueTable, v: terafab_ir::ValueId, ty: TensorType) -> bool {
    if *values.ty(v) == ty {
        return false;
    }
    values.set_ty(v, ty);
    true
}

fn infer_node(values: &mut ValueTable, node: &mut Node) -> Result<bool, String> {
    let mut changed = false;
    let inputs: Vec<TensorType> = node.inputs.iter().map(|&v| values.ty(v).clone()).collect();
    let mut region_results = Vec::with_capacity(node.regions.len());
    for region in &mut node.regions {
        if node.op == Op::Loop {
            // (%i, %cond, carried...): the carried parameters follow the carried operands.
            for (&p, ty) in region.params.iter().skip(2).zip(inputs.iter().skip(2)) {
                changed |= set_type(values, p, ty.clone());
            }
        }
        changed |= infer_region(values, region)?;
        region_results.push(
            region
                .results
                .iter()
                .map(|&v| values.ty(v).clone())
                .collect(),
        );
    }
    let refs: Vec<&TensorType> = inputs.iter().collect();
    let describe = |values: &ValueTable| {
        node.outputs
            .first()
            .map(|&v| terafab_ir::print::print_value_name(values.name(v)))
            .unwrap_or_default()
    };
    let inferred = infer_with_regions(&node.op, &refs, &region_results)
        .map_err(|e| format!("`{}` {}: {e}", node.op.name(), describe(values)))?;
    if inferred.len() != node.outputs.len() {
        return Err(format!(
            "`{}` {}: declares {} results, the op has {}",
            node.op.name(),
            describe(values),
            node.outputs.len(),
            inferred.len()
        ));
    }
    let n_carried = inputs.len().saturating_sub(2);
    for (k, (&v, mut ty)) in node.outputs.iter().zip(inferred).enumerate() {
        if node.op == Op::Loop && k >= n_carried {
            // A scan result: keep the declared trip count.
            if let Some(trips) = values.ty(v).shape.dims().first() {
                ty.shape.0[0] = trips.clone();
            }
        }
        changed |= set_type(values, v, ty);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::parse::parse_function;
    use terafab_ir::{DType, Shape};

    const SRC: &str =
        "func @main(%x: f32[2,3], %n: i64[], %c: bool[]) -> (y: f32[3,2], s: f32[T,3,2]) {
  %t = transpose(%x) {perm=[1, 0]} : f32[3,2]
  %y, %s = loop(%n, %c, %t) : f32[3,2], f32[T,3,2] region(%i: i64[], %k: bool[], %h: f32[3,2]) {
    %e = exp(%h) : f32[3,2]
    yield %k, %e, %h
  }
  return %y, %s
}
";

    #[test]
    fn verified_graph_is_unchanged() {
        let mut f = parse_function(SRC).unwrap();
        let before = f.clone();
        assert!(!InferTypes.run(&mut f).unwrap());
        assert_eq!(f, before);
    }

    #[test]
    fn new_parameter_type_flows_through_loops() {
        let mut f = parse_function(SRC).unwrap();
        let x = f.values.lookup("x").unwrap();
        f.values
            .set_ty(x, TensorType::from_static(DType::F32, &[4, 5]));
        // The function's result types follow from the values, so the output types change too.
        assert!(InferTypes.run(&mut f).unwrap());
        terafab_ir::verify::verify_function(&f).unwrap();
        let ty = |n: &str| f.values.ty(f.values.lookup(n).unwrap()).clone();
        assert_eq!(ty("e"), TensorType::from_static(DType::F32, &[5, 4]));
        assert_eq!(ty("h"), TensorType::from_static(DType::F32, &[5, 4]));
        let s = ty("s");
        assert_eq!(s.shape.dims()[0], terafab_ir::Dim::Sym("T".into()));
        assert_eq!(s.shape.rank(), 3);
        assert_eq!(ty("y").shape, Shape::from_static(&[5, 4]));
    }

    #[test]
    fn ill_typed_rewrite_is_an_error() {
        let mut f = parse_function(SRC).unwrap();
        let x = f.values.lookup("x").unwrap();
        f.values
            .set_ty(x, TensorType::from_static(DType::F32, &[4]));
        let e = InferTypes.run(&mut f).unwrap_err().to_string();
        assert!(e.contains("transpose") && e.contains("%t"), "{e}");
    }
}
