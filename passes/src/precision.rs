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
//! +0 (see `terafab_ir::float8`). A constant operand (weights) is rounded by the pass itself:
//! `convert(c_narrow, f32)` of a new constant of the narrow type, so the weights are stored
//! narrow (half the bytes for bf16) and the unused f32 constant goes with `dce`.

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
                // Already `convert(convert(_, to), f32)`, or `convert(c, f32)` of a constant of
                // the narrow type.
                let done = matches!(def.get(&v), Some((Op::Convert { to: DType::F32 }, Some(inner)))
                if match def.get(inner) {
                    Some((Op::Convert { to: t }, _)) => *t == to,
                    Some((Op::Constant { value }, _)) => value.dtype() == to,
                    _ => false,
                });
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
                        // A constant (weights) is rounded here, once: the narrow constant
                        // takes half the memory, or a quarter for CFP8.
                        let narrow = match def.get(&v) {
                            Some((Op::Constant { value }, _)) => {
                                terafab_ir::interp::elementwise::convert(value, to).ok()
                            }
                            _ => None,
                        };
                        if let Some(value) = narrow {
                            let op = Op::Constant { value };
                            def.insert(n, (op.clone(), None));
                            out.push(Node {
                                op,
                                inputs: Vec::new(),
                                outputs: vec![n],
                                regions: Vec::new(),
                                name: node.name.clone(),
                            });
                        } else {
                            out.push(Node {
                                op: Op::Convert { to },
                                inputs: vec![v],
                                outputs: vec![n],
                                regions: Vec::new(),
                                name: node.name.clone(),
                            });
                            def.insert(n, (Op::Convert { to }, Some(v)));
                        }
                        out.push(Node {
                            op: Op::Convert { to: DType::F32 },
                            inputs: vec![n],
                            outputs: vec![w],
                            regions: Vec::new(),
                            name: node.name.clone(),
                        });
                        def.insert(w, (Op::Convert { to: DType::F32 }, Some(n)));
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

    /// A constant operand becomes a constant of the narrow type (rounded once, at compile
    /// time) widened by one convert; the pass stays idempotent and the results are the same as
    /// with the convert pair.
    #[test]
    fn constant_operands_are_stored_narrow() {
        let src = "func @main(%x: f32[2,3]) -> (y: f32[2,2]) {
  %w = constant() {value=dense<f32[3,2]>[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]} : f32[3,2]
  %y = dot_general(%x, %w) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[2,2]
  return %y
}";
        for to in [DType::BF16, DType::CF8E4M3] {
            let mut m = parse_module(src).unwrap();
            let f = &mut m.functions[0];
            let pass = Precision { to };
            assert!(pass.run(f).unwrap());
            terafab_ir::verify::verify_function(f).unwrap();
            let mut narrow_constants = 0;
            f.walk(&mut |n| {
                if let Op::Constant { value } = &n.op {
                    narrow_constants += usize::from(value.dtype() == to);
                }
            });
            assert_eq!(narrow_constants, 1);
            let text = terafab_ir::print::print_function(f);
            assert!(!pass.run(f).unwrap(), "not idempotent:\n{text}");
            // The same values as rounding at run time.
            let x = Tensor::from_vec(vec![2, 3], values(6, 9)).unwrap();
            let got = terafab_ir::interp::run_function(f, std::slice::from_ref(&x)).unwrap();
            let w = Tensor::from_vec(vec![3, 2], vec![0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6]).unwrap();
            let wr = terafab_ir::interp::elementwise::convert(
                &terafab_ir::interp::elementwise::convert(&w, to).unwrap(),
                DType::F32,
            )
            .unwrap();
            let xr = terafab_ir::interp::elementwise::convert(
                &terafab_ir::interp::elementwise::convert(&x, to).unwrap(),
                DType::F32,
            )
            .unwrap();
            let plain = parse_module(
                src.replace("%w = constant", "%unused = constant")
                    .replace("(%x, %w)", "(%x, %w2)")
                    .replace(
                        "func @main(%x: f32[2,3])",
                        "func @main(%x: f32[2,3], %w2: f32[3,2])",
                    )
                    .as_str(),
            )
            .unwrap();
            let want = terafab_ir::interp::run_function(&plain.functions[0], &[xr, wr]).unwrap();
            assert!(got[0].bit_eq(&want[0]), "{to:?}");
        }
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
