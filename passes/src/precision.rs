//! Mixed precision for contractions: `precision-bf16`, `precision-cf8e4m3`, `precision-cf8e5m2`.
//!
//! Every `dot_general` and `conv` whose operands are f32 gets its two operands rounded to the
//! narrow type and widened back: `x` becomes `convert(convert(x, bf16), f32)`. The contraction
//! then multiplies narrow values and sums in f32, which is what a bf16 / CFP8 matrix engine with
//! f32 accumulation computes; every other op stays f32. The cast points are ordinary `convert`
//! nodes, so they are visible in the graph text and, after fusion, in the kernel IR (where a
//! backend may store the narrow operand and read it directly). An operand shared by several
//! contractions of one region is rounded once; operands already rounded this way are left
//! alone, so the pass is idempotent.
//!
//! The rounding is the IR's `convert`: to nearest even; into the CFP8 types, saturating, NaN to
//! +0 (see `terafab_ir::float8`).

use std::collections::HashMap;

use terafab_ir::{DType, Function, Node, Op, Region, TensorType, ValueId, ValueTable};

use crate::{Pass, PassError};

/// Rounds contraction operands through `to`.
pub struct Precision {
    pub to: DType,
}

impl Pass for Precision {
    fn name(&self) -> &'static str {
        match self.to {
            DType::CF8E4M3 => "precision-cf8e4m3",
            DType::CF8E5M2 => "precision-cf8e5m2",
            _ => "precision-bf16",
        }
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let Function { values, body, .. } = f;
        Ok(round_region(values, body, self.to))
    }
}

fn is_contraction(op: &Op) -> bool {
    matches!(op, Op::DotGeneral { .. } | Op::Conv { .. })
}

/// Round the contraction operands of `r` (and of its nested regions); whether it changed.
fn round_region(values: &mut ValueTable, r: &mut Region, to: DType) -> bool {
    let mut changed = false;
    // The node defining each value of this region seen so far: its op and first input.
    let mut def: HashMap<ValueId, (Op, Option<ValueId>)> = HashMap::new();
    // Operand -> its rounded value, for operands rounded in this region.
    let mut rounded: HashMap<ValueId, ValueId> = HashMap::new();
    let mut out: Vec<Node> = Vec::with_capacity(r.nodes.len());
    for mut node in std::mem::take(&mut r.nodes) {
        for region in &mut node.regions {
            changed |= round_region(values, region, to);
        }
        let f32_operands = node.inputs.len() >= 2
            && node.inputs[..2]
                .iter()
                .all(|&v| values.ty(v).dtype == DType::F32);
        if is_contraction(&node.op) && f32_operands {
            for i in 0..2 {
                let v = node.inputs[i];
                // Already `convert(convert(_, to), f32)`.
                let done = matches!(def.get(&v), Some((Op::Convert { to: DType::F32 }, Some(inner)))
                    if matches!(def.get(inner), Some((Op::Convert { to: t }, _)) if *t == to));
                if done {
                    continue;
                }
                let w = match rounded.get(&v) {
                    Some(&w) => w,
                    None => {
                        let shape = values.ty(v).shape.clone();
                        let name = values.name(v).to_string();
                        let narrow_name = format!("{name}.{}", to.name());
                        let n = values.add(&narrow_name, TensorType::new(to, shape.clone()));
                        let w = values.add(
                            &format!("{narrow_name}.f32"),
                            TensorType::new(DType::F32, shape),
                        );
                        for (input, output, dtype) in [(v, n, to), (n, w, DType::F32)] {
                            out.push(Node {
                                op: Op::Convert { to: dtype },
                                inputs: vec![input],
                                outputs: vec![output],
                                regions: Vec::new(),
                                name: node.name.clone(),
                            });
                            def.insert(output, (Op::Convert { to: dtype }, Some(input)));
                        }
                        rounded.insert(v, w);
                        w
                    }
                };
                node.inputs[i] = w;
                changed = true;
            }
        }
        for &o in &node.outputs {
            def.insert(o, (node.op.clone(), node.inputs.first().copied()));
        }
        out.push(node);
    }
    r.nodes = out;
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::Tensor;
    use terafab_ir::parse::parse_module;

    const SRC: &str = "func @main(%x: f32[3,5], %w: f32[5,4], %v: f32[5,4]) -> (y: f32[3,4], z: f32[3,4]) {
  %y = dot_general(%x, %w) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[3,4]
  %z = dot_general(%x, %v) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[3,4]
  return %y, %z
}";

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / 16777216.0
                    * 2.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn operands_are_rounded_once_and_the_pass_is_idempotent() {
        let mut m = parse_module(SRC).unwrap();
        let f = &mut m.functions[0];
        let pass = Precision { to: DType::BF16 };
        assert!(pass.run(f).unwrap());
        terafab_ir::verify::verify_function(f).unwrap();
        let converts = |f: &Function| {
            let mut n = 0;
            f.walk(&mut |node| n += usize::from(matches!(node.op, Op::Convert { .. })));
            n
        };
        // x (shared by both), w and v: three operands, two converts each.
        assert_eq!(converts(f), 6);
        assert!(!pass.run(f).unwrap());
        assert_eq!(converts(f), 6);
        let text = terafab_ir::print::print_function(f);
        assert!(text.contains("convert(%x) {to=bf16}"), "{text}");
    }

    /// The rewritten function computes exactly what the original computes on operands rounded
    /// to the narrow type beforehand: only the contractions' operands change.
    #[test]
    fn results_are_those_of_rounded_operands() {
        for to in [DType::BF16, DType::CF8E4M3, DType::CF8E5M2] {
            let m = parse_module(SRC).unwrap();
            let mut rewritten = m.functions[0].clone();
            Precision { to }.run(&mut rewritten).unwrap();
            let inputs: Vec<Tensor> = [(vec![3, 5], 1), (vec![5, 4], 2), (vec![5, 4], 3)]
                .into_iter()
                .map(|(shape, seed)| {
                    let n = shape.iter().product();
                    Tensor::from_vec(shape, values(n, seed)).unwrap()
                })
                .collect();
            let rounded: Vec<Tensor> = inputs
                .iter()
                .map(|t| {
                    terafab_ir::interp::elementwise::convert(
                        &terafab_ir::interp::elementwise::convert(t, to).unwrap(),
                        DType::F32,
                    )
                    .unwrap()
                })
                .collect();
            let got = terafab_ir::interp::run_function(&rewritten, &inputs).unwrap();
            let want = terafab_ir::interp::run_function(&m.functions[0], &rounded).unwrap();
            assert_eq!(got, want, "{to:?}");
            let plain = terafab_ir::interp::run_function(&m.functions[0], &inputs).unwrap();
            assert_ne!(got, plain, "{to:?}: the rounding changes the results");
        }
    }
}
