//! Canonicalization: small local rewrites ([`RULES`]), applied until nothing changes.
//!
//! Every rule looks at one single-result node (its op, its operands, the ops defining them and
//! the constants among them) and either replaces its result by an existing value
//! ([`Rewrite::Replace`]: the uses are rewired with [`crate::util::replace_uses`], and the node
//! is left for `dce`) or rewrites the node in place ([`Rewrite::Update`]: same result value,
//! another op or operands). A rewrite is applied only when the result's type stays identical
//! (the replacement has the same type; the updated node infers the same type), so no other node
//! needs retyping.
//!
//! Every rule is exact in the interpreter's semantics, sign of zero included: `x + 0.0` is not
//! `x` when `x` is `-0.0` (it gives `+0.0`), so the float additive identity is `-0.0`
//! (`x + -0.0 == x` for every `x`); `x - 0.0`, `x * 1.0` and `x / 1.0` are `x` for every `x`.
//! The one thing the float rules may change is the payload of a NaN (IEEE arithmetic may quiet a
//! signaling NaN; the rewritten program returns the operand's NaN itself). Constants count when
//! they are splats (all elements equal), of any shape, as long as the result type is unchanged.

use std::collections::HashMap;

use terafab_ir::infer::infer;
use terafab_ir::{
    BinaryOp, Function, Op, Region, Tensor, TensorType, UnaryOp, ValueId, ValueTable,
};

use crate::util::{is_splat_of, replace_uses, resolve};
use crate::{Pass, PassError};

pub struct Canonicalize;

/// Sweeps over the function before giving up on reaching a fixed point. Every rule makes the
/// graph strictly simpler, and one sweep in order already handles chains, so this is a guard,
/// not a limit real graphs reach.
pub const MAX_SWEEPS: usize = 64;

impl Pass for Canonicalize {
    fn name(&self) -> &'static str {
        "canonicalize"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let mut changed = false;
        for _ in 0..MAX_SWEEPS {
            let mut sweep = Sweep {
                values: &f.values,
                defs: HashMap::new(),
                subst: HashMap::new(),
                updated: false,
            };
            sweep.region(&mut f.body);
            let (updated, subst) = (sweep.updated, sweep.subst);
            // Results replaced by values nothing uses (already-dead nodes) change nothing.
            let rewired = replace_uses(f, &subst);
            if !updated && rewired == 0 {
                break;
            }
            changed = true;
        }
        Ok(changed)
    }
}

/// What a rule does with a node.
#[derive(Debug, Clone, PartialEq)]
pub enum Rewrite {
    /// Replace the node's result with this value.
    Replace(ValueId),
    /// Make the node this op applied to these operands.
    Update(Op, Vec<ValueId>),
}

/// A rule: given the context, the node's op and its operands (after earlier replacements),
/// the rewrite, if it applies.
pub type Rule = fn(&Ctx<'_>, &Op, &[ValueId]) -> Option<Rewrite>;

/// Every rule, by name, in the order they are tried.
pub const RULES: &[(&str, Rule)] = &[
    ("add-zero", add_zero),
    ("sub-zero", sub_zero),
    ("mul-one", mul_one),
    ("div-one", div_one),
    ("neg-neg", neg_neg),
    ("transpose-transpose", transpose_transpose),
    ("reshape-reshape", reshape_reshape),
    ("broadcast-broadcast", broadcast_broadcast),
    ("same-type-noop", same_type_noop),
    ("identity-transpose", identity_transpose),
    ("identity-slice", identity_slice),
    ("identity-pad", identity_pad),
    ("identity-reverse", identity_reverse),
    ("single-concat", single_concat),
    ("select-constant", select_constant),
];

/// What the rules can see: value types, and the defining op and operands of earlier
/// single-result nodes.
pub struct Ctx<'a> {
    values: &'a ValueTable,
    defs: &'a HashMap<ValueId, (Op, Vec<ValueId>)>,
}

impl Ctx<'_> {
    fn ty(&self, v: ValueId) -> &TensorType {
        self.values.ty(v)
    }

    /// The op defining `v` and its operands, if `v` is the result of a single-result node.
    fn def(&self, v: ValueId) -> Option<(&Op, &[ValueId])> {
        self.defs.get(&v).map(|(op, ins)| (op, &ins[..]))
    }

    /// The value of `v` if it is the result of a `constant` node.
    fn constant(&self, v: ValueId) -> Option<&Tensor> {
        match self.def(v)? {
            (Op::Constant { value }, _) => Some(value),
            _ => None,
        }
    }

    /// Is `v` a constant whose elements all equal `c` (see [`is_splat_of`])?
    fn splat(&self, v: ValueId, c: f64) -> bool {
        self.constant(v).is_some_and(|t| is_splat_of(t, c))
    }

    /// `-0.0` for floats (the exact additive identity), `0` for integers.
    fn add_identity(&self, v: ValueId) -> f64 {
        if self.ty(v).dtype.is_float() {
            -0.0
        } else {
            0.0
        }
    }
}

/// The operands `[a, b]` of a binary op `want`.
fn binary(op: &Op, inputs: &[ValueId], want: BinaryOp) -> Option<(ValueId, ValueId)> {
    match (op, inputs) {
        (Op::Binary(b), &[x, y]) if *b == want => Some((x, y)),
        _ => None,
    }
}

/// The only operand of a unary node.
fn operand(inputs: &[ValueId]) -> Option<ValueId> {
    match inputs {
        &[x] => Some(x),
        _ => None,
    }
}

/// `x + 0 -> x` and `0 + x -> x` (floats: the zero must be `-0.0`).
fn add_zero(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let (x, y) = binary(op, inputs, BinaryOp::Add)?;
    let zero = c.add_identity(x);
    if c.splat(y, zero) {
        Some(Rewrite::Replace(x))
    } else if c.splat(x, zero) {
        Some(Rewrite::Replace(y))
    } else {
        None
    }
}

/// `x - 0 -> x` (floats: `+0.0`, as `x - +0.0 == x + -0.0`).
fn sub_zero(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let (x, y) = binary(op, inputs, BinaryOp::Sub)?;
    c.splat(y, 0.0).then_some(Rewrite::Replace(x))
}

/// `x * 1 -> x` and `1 * x -> x`.
fn mul_one(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let (x, y) = binary(op, inputs, BinaryOp::Mul)?;
    if c.splat(y, 1.0) {
        Some(Rewrite::Replace(x))
    } else if c.splat(x, 1.0) {
        Some(Rewrite::Replace(y))
    } else {
        None
    }
}

/// `x / 1 -> x`.
fn div_one(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let (x, y) = binary(op, inputs, BinaryOp::Div)?;
    c.splat(y, 1.0).then_some(Rewrite::Replace(x))
}

/// `neg(neg(x)) -> x` (exact: integers wrap both ways, floats flip the sign bit twice).
fn neg_neg(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let Op::Unary(UnaryOp::Neg) = op else {
        return None;
    };
    match c.def(operand(inputs)?)? {
        (Op::Unary(UnaryOp::Neg), &[x]) => Some(Rewrite::Replace(x)),
        _ => None,
    }
}

/// `transpose(transpose(x, p), q) -> transpose(x, p∘q)`, or `x` when that is the identity.
fn transpose_transpose(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let Op::Transpose { perm: q } = op else {
        return None;
    };
    let (Op::Transpose { perm: p }, &[x]) = c.def(operand(inputs)?)? else {
        return None;
    };
    // Result dim i is the inner result's dim q[i], which is x's dim p[q[i]].
    let perm = q
        .iter()
        .map(|&i| p.get(i).copied())
        .collect::<Option<Vec<_>>>()?;
    if is_identity(&perm) {
        Some(Rewrite::Replace(x))
    } else {
        Some(Rewrite::Update(Op::Transpose { perm }, vec![x]))
    }
}

/// `reshape(reshape(x)) -> reshape(x)` (the outer shape).
fn reshape_reshape(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let Op::Reshape { .. } = op else {
        return None;
    };
    let (Op::Reshape { .. }, &[x]) = c.def(operand(inputs)?)? else {
        return None;
    };
    Some(Rewrite::Update(op.clone(), vec![x]))
}

/// `broadcast(broadcast(x)) -> broadcast(x)` (the outer shape; broadcasting is transitive).
fn broadcast_broadcast(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let Op::Broadcast { .. } = op else {
        return None;
    };
    let (Op::Broadcast { .. }, &[x]) = c.def(operand(inputs)?)? else {
        return None;
    };
    Some(Rewrite::Update(op.clone(), vec![x]))
}

/// `reshape`, `broadcast` or `convert` to the operand's own type -> the operand.
fn same_type_noop(_: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    // The driver only replaces when the types are equal.
    matches!(
        op,
        Op::Reshape { .. } | Op::Broadcast { .. } | Op::Convert { .. }
    )
    .then_some(Rewrite::Replace(operand(inputs)?))
}

/// `transpose(x) {perm=[0, 1, ..]} -> x`.
fn identity_transpose(_: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    match op {
        Op::Transpose { perm } if is_identity(perm) => Some(Rewrite::Replace(operand(inputs)?)),
        _ => None,
    }
}

/// A slice whose result has the operand's type takes every element (start 0, and limit = dim
/// with stride 1 or a dim of one element) -> the operand.
fn identity_slice(_: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    // The driver only replaces when the types are equal.
    matches!(op, Op::Slice { .. }).then_some(Rewrite::Replace(operand(inputs)?))
}

/// `pad(x, v)` with no padding at all -> `x`.
fn identity_pad(_: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let Op::Pad {
        low,
        high,
        interior,
    } = op
    else {
        return None;
    };
    let none = low.iter().chain(high).all(|&n| n == 0) && interior.iter().all(|&n| n == 0);
    match inputs {
        &[x, _] if none => Some(Rewrite::Replace(x)),
        _ => None,
    }
}

/// `reverse(x)` along no axis, or only along axes of extent 1 -> `x`.
fn identity_reverse(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let Op::Reverse { axes } = op else {
        return None;
    };
    let x = operand(inputs)?;
    let dims = c.ty(x).shape.dims();
    axes.iter()
        .all(|&a| dims.get(a).is_some_and(|d| d.is_one()))
        .then_some(Rewrite::Replace(x))
}

/// `concat(x) -> x`.
fn single_concat(_: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    match (op, inputs) {
        (Op::Concat { .. }, &[x]) => Some(Rewrite::Replace(x)),
        _ => None,
    }
}

/// `select(true, a, b) -> a`, `select(false, a, b) -> b` (for a splat condition).
fn select_constant(c: &Ctx<'_>, op: &Op, inputs: &[ValueId]) -> Option<Rewrite> {
    let (Op::Select, &[cond, a, b]) = (op, inputs) else {
        return None;
    };
    if c.splat(cond, 1.0) {
        Some(Rewrite::Replace(a))
    } else if c.splat(cond, 0.0) {
        Some(Rewrite::Replace(b))
    } else {
        None
    }
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

/// One pass over the function in order, applying at most one rule per node.
struct Sweep<'a> {
    values: &'a ValueTable,
    /// Op and (resolved) operands of every single-result node seen so far.
    defs: HashMap<ValueId, (Op, Vec<ValueId>)>,
    /// Results replaced so far, and by what.
    subst: HashMap<ValueId, ValueId>,
    /// Whether a node was rewritten in place.
    updated: bool,
}

impl Sweep<'_> {
    fn region(&mut self, r: &mut Region) {
        for node in &mut r.nodes {
            for region in &mut node.regions {
                self.region(region);
            }
            let [out] = node.outputs[..] else {
                continue;
            };
            if !node.regions.is_empty() {
                continue;
            }
            let inputs: Vec<ValueId> = node
                .inputs
                .iter()
                .map(|&v| resolve(&self.subst, v))
                .collect();
            match self.rewrite(&node.op, &inputs, self.values.ty(out)) {
                Some(Rewrite::Replace(v)) => {
                    self.subst.insert(out, v);
                }
                Some(Rewrite::Update(op, new_inputs)) => {
                    node.op = op;
                    node.inputs = new_inputs;
                    self.updated = true;
                    self.defs
                        .insert(out, (node.op.clone(), node.inputs.clone()));
                }
                None => {
                    self.defs.insert(out, (node.op.clone(), inputs));
                }
            }
        }
    }

    /// The first rule that applies and keeps the result type `out`.
    fn rewrite(&self, op: &Op, inputs: &[ValueId], out: &TensorType) -> Option<Rewrite> {
        let ctx = Ctx {
            values: self.values,
            defs: &self.defs,
        };
        RULES.iter().find_map(|(_, rule)| {
            let rw = rule(&ctx, op, inputs)?;
            let keeps_type = match &rw {
                Rewrite::Replace(v) => self.values.ty(*v) == out,
                Rewrite::Update(op, ins) => {
                    let tys: Vec<&TensorType> = ins.iter().map(|&v| self.values.ty(v)).collect();
                    infer(op, &tys).is_ok_and(|t| t.len() == 1 && t[0] == *out)
                }
            };
            keeps_type.then_some(rw)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::parse::parse_function;

    /// Canonicalize `src` and return the text of the result (dead nodes included).
    fn canon(src: &str) -> (bool, String) {
        let mut f = parse_function(src).unwrap();
        let changed = Canonicalize.run(&mut f).unwrap();
        terafab_ir::verify::verify_function(&f).unwrap();
        (changed, f.to_string())
    }

    #[test]
    fn positive_zero_is_not_an_additive_identity() {
        let src = "func @main(%x: f32[2]) -> (y: f32[2]) {
  %z = constant() {value=dense<f32[]>[0.0]} : f32[]
  %y = add(%x, %z) : f32[2]
  return %y
}
";
        assert_eq!(canon(src), (false, src.to_string()));
        let neg = src.replace("[0.0]", "[-0.0]");
        let (changed, text) = canon(&neg);
        assert!(changed);
        assert!(text.contains("return %x"), "{text}");
    }

    #[test]
    fn broadcasting_constant_is_not_removed() {
        // x * ones[2,3] has type [2,3], not x's [3]: the node stays.
        let src = "func @main(%x: f32[3]) -> (y: f32[2,3]) {
  %one = constant() {value=dense<f32[2,3]>[1.0, 1.0, 1.0, 1.0, 1.0, 1.0]} : f32[2,3]
  %y = mul(%x, %one) : f32[2,3]
  return %y
}
";
        assert_eq!(canon(src), (false, src.to_string()));
    }

    #[test]
    fn reaches_a_fixed_point_and_stays() {
        let src = "func @main(%x: i32[2,3]) -> (y: i32[2,3]) {
  %a = neg(%x) : i32[2,3]
  %b = neg(%a) : i32[2,3]
  %t = transpose(%b) {perm=[1, 0]} : i32[3,2]
  %u = transpose(%t) {perm=[1, 0]} : i32[2,3]
  %y = neg(%u) : i32[2,3]
  return %y
}
";
        let mut f = parse_function(src).unwrap();
        assert!(Canonicalize.run(&mut f).unwrap());
        assert!(f.to_string().contains("%y = neg(%x)"), "{f}");
        assert!(!Canonicalize.run(&mut f).unwrap());
    }

    #[test]
    fn rule_names_are_unique() {
        let mut names: Vec<_> = RULES.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), RULES.len());
    }
}
