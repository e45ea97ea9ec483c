//! The rewrite rules, by name.
//!
//! Every rule is exact in the interpreter's semantics (IEEE floats, sign of zero and NaN
//! payloads included; two's-complement integers): a rewritten program returns bitwise the same
//! results. That rules out float commutativity: `add`/`mul` of two NaNs may return either
//! payload, and `max`/`min` return their *first* NaN operand, so commutativity is only stated
//! for integers and bool. The float additive identity is `-0.0` (`+0.0 + -0.0 == +0.0`).
//!
//! A rule is a search pattern ([`RuleDef::lhs`], with wildcard attributes, see
//! [`crate::eqsat::language`]) and a builder that proposes replacement expressions for the
//! matched e-class. [`Checked`] type-checks every proposal with [`op_type`] and adds it only
//! when its type equals the e-class's, so no rule needs its own shape conditions.

use egg::{Applier, Id, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use terafab_ir::{DType, Op, Tensor, TensorType};

use super::analysis::{TfGraph, TypeAnalysis, op_type};
use super::language::{TfNode, attrless_op};
use crate::util::is_splat_of;

/// A rewrite of this pass.
pub type TfRewrite = Rewrite<TfNode, TypeAnalysis>;

/// A proposed replacement: an existing e-class, or an op applied to proposals.
#[derive(Debug, Clone)]
pub enum Expr {
    Class(Id),
    Node(Op, Vec<Expr>),
}

/// What a builder sees: the e-graph, the matched e-class, the bindings of the pattern's
/// variables, and the kind of the pattern's root.
pub struct Match<'a> {
    pub egraph: &'a TfGraph,
    pub eclass: Id,
    pub subst: &'a Subst,
    pub root: Symbol,
}

impl Match<'_> {
    /// The e-class bound to `?name`.
    fn var(&self, name: &str) -> Option<Id> {
        let v: Var = name.parse().ok()?;
        self.subst.get(v).copied()
    }

    /// The matched e-class's type.
    fn ty(&self) -> Option<&TensorType> {
        self.egraph[self.eclass].data.as_ref()
    }

    /// Whether the matched e-class holds integers or bools.
    fn is_int_or_bool(&self) -> bool {
        self.ty()
            .is_some_and(|t| t.dtype.is_int() || t.dtype.is_bool())
    }

    /// Whether e-class `id` holds a constant whose elements all equal `c`.
    fn splat(&self, id: Id, c: f64) -> bool {
        self.egraph[id].nodes.iter().any(|n| {
            matches!(self.egraph.analysis.op(n), Some(Op::Constant { value }) if is_splat_of(&value, c))
        })
    }

    /// The additive identity of the matched class's type: `-0.0` for floats, `0` otherwise.
    fn add_identity(&self) -> f64 {
        if self.ty().is_some_and(|t| t.dtype.is_float()) {
            -0.0
        } else {
            0.0
        }
    }

    /// The concrete ops of kind `kind` in e-class `id`, with their operands.
    fn ops(&self, id: Id, kind: Symbol) -> Vec<(Op, Vec<Id>)> {
        self.egraph[id]
            .nodes
            .iter()
            .filter(|n| n.kind == kind)
            .filter_map(|n| Some((self.egraph.analysis.op(n)?, n.children.clone())))
            .collect()
    }

    /// `(outer, inner, x)` for every `outer(inner(x))` in the matched class, both of the root's
    /// kind and unary.
    fn nested(&self) -> Vec<(Op, Op, Id)> {
        let mut out = Vec::new();
        for (outer, ins) in self.ops(self.eclass, self.root) {
            let &[mid] = ins.as_slice() else { continue };
            for (inner, ins) in self.ops(mid, self.root) {
                if let &[x] = ins.as_slice() {
                    out.push((outer.clone(), inner, x));
                }
            }
        }
        out
    }

    /// The root op applied to these operands (ops without attributes only).
    fn root_op(&self, operands: Vec<Expr>) -> Option<Expr> {
        Some(Expr::Node(attrless_op(self.root.as_str())?, operands))
    }
}

/// Proposes replacements for a match.
pub type Build = fn(&Match<'_>) -> Vec<Expr>;

/// A rule: name, search pattern, builder.
pub struct RuleDef {
    pub name: &'static str,
    pub lhs: &'static str,
    pub build: Build,
}

const fn rule(name: &'static str, lhs: &'static str, build: Build) -> RuleDef {
    RuleDef { name, lhs, build }
}

/// Every rule, by name.
pub const RULES: &[RuleDef] = &[
    // a + b == b + a (integers only: see the module doc).
    rule("add-comm", "(add ?a ?b)", swap),
    // a * b == b * a (integers only).
    rule("mul-comm", "(mul ?a ?b)", swap),
    // max(a, b) == max(b, a) (integers and bool only: float max returns its first NaN).
    rule("max-comm", "(max ?a ?b)", swap),
    // min(a, b) == min(b, a) (integers and bool only).
    rule("min-comm", "(min ?a ?b)", swap),
    // a & b == b & a.
    rule("and-comm", "(and ?a ?b)", swap),
    // a | b == b | a.
    rule("or-comm", "(or ?a ?b)", swap),
    // a ^ b == b ^ a.
    rule("xor-comm", "(xor ?a ?b)", swap),
    // x + 0 == 0 + x == x (floats: the zero is -0.0).
    rule("add-zero", "(add ?a ?b)", add_zero),
    // x - 0 == x (floats: +0.0, as x - +0.0 == x + -0.0).
    rule("sub-zero", "(sub ?a ?b)", sub_zero),
    // x * 1 == 1 * x == x.
    rule("mul-one", "(mul ?a ?b)", mul_one),
    // x / 1 == x.
    rule("div-one", "(div ?a ?b)", div_one),
    // -(-x) == x (integers wrap both ways; floats flip the sign bit twice).
    rule("neg-neg", "(neg (neg ?x))", operand),
    // !!x == x (logical on bool, bitwise on integers).
    rule("not-not", "(not (not ?x))", operand),
    // max(x, x) == x (NaN: the first operand, which is x).
    rule("max-self", "(max ?x ?x)", operand),
    // min(x, x) == x.
    rule("min-self", "(min ?x ?x)", operand),
    // x & x == x.
    rule("and-self", "(and ?x ?x)", operand),
    // x | x == x.
    rule("or-self", "(or ?x ?x)", operand),
    // x - x == 0 (integers only: inf - inf is NaN).
    rule("sub-self", "(sub ?x ?x)", zero_if_int),
    // x ^ x == 0 (false for bool).
    rule("xor-self", "(xor ?x ?x)", zero_if_int),
    // select(c, x, x) == x (when c does not broadcast the result larger: type-checked).
    rule("select-same", "(select ?c ?x ?x)", operand),
    // select(!c, a, b) == select(c, b, a).
    rule("select-not", "(select (not ?c) ?a ?b)", select_not),
    // transpose(transpose(x, p), q) == transpose(x, p∘q), or x when that is the identity.
    rule(
        "transpose-transpose",
        "(transpose (transpose ?x))",
        transpose_transpose,
    ),
    // transpose(x) {perm=[0, 1, ..]} == x.
    rule("transpose-identity", "(transpose ?x)", transpose_identity),
    // reshape(reshape(x)) == reshape(x) (the outer shape).
    rule("reshape-reshape", "(reshape (reshape ?x))", outer_of_nested),
    // reshape(x) to x's own shape == x.
    rule("reshape-same", "(reshape ?x)", operand),
    // broadcast(broadcast(x)) == broadcast(x) (the outer shape; broadcasting is transitive).
    rule(
        "broadcast-broadcast",
        "(broadcast (broadcast ?x))",
        outer_of_nested,
    ),
    // broadcast(x) to x's own shape == x.
    rule("broadcast-same", "(broadcast ?x)", operand),
    // convert(x) to x's own element type == x.
    rule("convert-same", "(convert ?x)", operand),
    // reverse(reverse(x, a), a) == x.
    rule("reverse-reverse", "(reverse (reverse ?x))", reverse_reverse),
    // A slice with the operand's type takes every element (start 0, full limit) == x.
    rule("slice-full", "(slice ?x)", operand),
    // reduce_sum(x) over no axes == x.
    rule("reduce-sum-none", "(reduce_sum ?x)", reduce_none),
];

/// The rules named in `names` (every rule for `None`); unknown names are an error.
pub fn rewrites(names: Option<&[String]>) -> Result<Vec<TfRewrite>, String> {
    if let Some(names) = names
        && let Some(bad) = names.iter().find(|n| !RULES.iter().any(|r| r.name == *n))
    {
        return Err(format!("unknown eqsat rule `{bad}`"));
    }
    RULES
        .iter()
        .filter(|r| names.is_none_or(|ns| ns.iter().any(|n| n == r.name)))
        .map(|r| {
            let lhs: Pattern<TfNode> = r
                .lhs
                .parse()
                .map_err(|e| format!("rule `{}`: {e}", r.name))?;
            let root = match lhs.ast.as_ref().last() {
                Some(egg::ENodeOrVar::ENode(n)) => n.kind,
                _ => return Err(format!("rule `{}`: the pattern is a variable", r.name)),
            };
            Rewrite::new(
                r.name,
                lhs,
                Checked {
                    build: r.build,
                    root,
                },
            )
            .map_err(|e| format!("rule `{}`: {e}", r.name))
        })
        .collect()
}

/// The applier of every rule: adds the builder's proposals that type-check to the e-class's
/// type, and unions them with it.
pub struct Checked {
    build: Build,
    /// The kind of the search pattern's root.
    root: Symbol,
}

impl Applier<TfNode, TypeAnalysis> for Checked {
    fn apply_one(
        &self,
        egraph: &mut TfGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<TfNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let Some(want) = egraph[eclass].data.clone() else {
            return vec![];
        };
        let root = self.root;
        let proposals = (self.build)(&Match {
            egraph,
            eclass,
            subst,
            root,
        });
        let mut changed = Vec::new();
        for e in proposals {
            if expr_type(egraph, &e).as_ref() == Some(&want) {
                let id = add_expr(egraph, &e);
                if egraph.union(eclass, id) {
                    changed.push(id);
                }
            }
        }
        changed
    }
}

/// The type of a proposal, if it type-checks.
fn expr_type(egraph: &TfGraph, e: &Expr) -> Option<TensorType> {
    match e {
        Expr::Class(id) => egraph[*id].data.clone(),
        Expr::Node(op, operands) => {
            let tys: Vec<Option<TensorType>> =
                operands.iter().map(|o| expr_type(egraph, o)).collect();
            op_type(op, &tys)
        }
    }
}

/// Add a proposal to the e-graph; returns its e-class.
fn add_expr(egraph: &mut TfGraph, e: &Expr) -> Id {
    match e {
        Expr::Class(id) => *id,
        Expr::Node(op, operands) => {
            let ids = operands.iter().map(|o| add_expr(egraph, o)).collect();
            let n = egraph.analysis.node(op, ids);
            egraph.add(n)
        }
    }
}

/// `op(a, b) -> op(b, a)` for integers and bool.
fn swap(m: &Match<'_>) -> Vec<Expr> {
    let (Some(a), Some(b)) = (m.var("?a"), m.var("?b")) else {
        return vec![];
    };
    if !m.is_int_or_bool() {
        return vec![];
    }
    m.root_op(vec![Expr::Class(b), Expr::Class(a)])
        .into_iter()
        .collect()
}

/// `?x` itself (the type check does the rest).
fn operand(m: &Match<'_>) -> Vec<Expr> {
    m.var("?x").map(Expr::Class).into_iter().collect()
}

/// The other operand of `?a op ?b` when one side is a splat of `c` (`both`: either side).
fn unit(m: &Match<'_>, c: f64, both: bool) -> Vec<Expr> {
    let (Some(a), Some(b)) = (m.var("?a"), m.var("?b")) else {
        return vec![];
    };
    let mut out = Vec::new();
    if m.splat(b, c) {
        out.push(Expr::Class(a));
    }
    if both && m.splat(a, c) {
        out.push(Expr::Class(b));
    }
    out
}

fn add_zero(m: &Match<'_>) -> Vec<Expr> {
    unit(m, m.add_identity(), true)
}

fn sub_zero(m: &Match<'_>) -> Vec<Expr> {
    unit(m, 0.0, false)
}

fn mul_one(m: &Match<'_>) -> Vec<Expr> {
    unit(m, 1.0, true)
}

fn div_one(m: &Match<'_>) -> Vec<Expr> {
    unit(m, 1.0, false)
}

/// A zero of the matched type for integers and bool: a constant of that type, or a broadcast
/// scalar beyond [`ZERO_CONSTANT_LIMIT`] elements.
fn zero_if_int(m: &Match<'_>) -> Vec<Expr> {
    let Some(ty) = m.ty().filter(|_| m.is_int_or_bool()) else {
        return vec![];
    };
    zero(ty.dtype, ty).into_iter().collect()
}

/// The most elements of a zero constant a rule makes (beyond: a broadcast scalar).
pub const ZERO_CONSTANT_LIMIT: usize = 1024;

fn zero(dtype: DType, ty: &TensorType) -> Option<Expr> {
    let dims = ty.shape.as_static()?;
    let small = dims.iter().product::<usize>() <= ZERO_CONSTANT_LIMIT;
    let value = Tensor::zeros(dtype, if small { &dims } else { &[] }).ok()?;
    let constant = Expr::Node(Op::Constant { value }, vec![]);
    Some(if small {
        constant
    } else {
        Expr::Node(
            Op::Broadcast {
                shape: ty.shape.clone(),
            },
            vec![constant],
        )
    })
}

/// `select(not(c), a, b) -> select(c, b, a)`.
fn select_not(m: &Match<'_>) -> Vec<Expr> {
    let (Some(c), Some(a), Some(b)) = (m.var("?c"), m.var("?a"), m.var("?b")) else {
        return vec![];
    };
    vec![Expr::Node(
        Op::Select,
        vec![Expr::Class(c), Expr::Class(b), Expr::Class(a)],
    )]
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &p)| i == p)
}

fn transpose_transpose(m: &Match<'_>) -> Vec<Expr> {
    m.nested()
        .into_iter()
        .filter_map(|(outer, inner, x)| {
            let (Op::Transpose { perm: q }, Op::Transpose { perm: p }) = (outer, inner) else {
                return None;
            };
            // Result dim i is the inner result's dim q[i], which is x's dim p[q[i]].
            let perm: Vec<usize> = q
                .iter()
                .map(|&i| p.get(i).copied())
                .collect::<Option<_>>()?;
            Some(if is_identity(&perm) {
                Expr::Class(x)
            } else {
                Expr::Node(Op::Transpose { perm }, vec![Expr::Class(x)])
            })
        })
        .collect()
}

fn transpose_identity(m: &Match<'_>) -> Vec<Expr> {
    m.ops(m.eclass, m.root)
        .into_iter()
        .filter_map(|(op, ins)| match (op, ins.as_slice()) {
            (Op::Transpose { perm }, &[x]) if is_identity(&perm) => Some(Expr::Class(x)),
            _ => None,
        })
        .collect()
}

/// `outer(inner(x)) -> outer(x)`.
fn outer_of_nested(m: &Match<'_>) -> Vec<Expr> {
    m.nested()
        .into_iter()
        .map(|(outer, _, x)| Expr::Node(outer, vec![Expr::Class(x)]))
        .collect()
}

fn reverse_reverse(m: &Match<'_>) -> Vec<Expr> {
    let sorted = |v: &[usize]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    m.nested()
        .into_iter()
        .filter_map(|(outer, inner, x)| match (outer, inner) {
            (Op::Reverse { axes: a }, Op::Reverse { axes: b }) if sorted(&a) == sorted(&b) => {
                Some(Expr::Class(x))
            }
            _ => None,
        })
        .collect()
}

fn reduce_none(m: &Match<'_>) -> Vec<Expr> {
    m.ops(m.eclass, m.root)
        .into_iter()
        .filter_map(|(op, ins)| match (op, ins.as_slice()) {
            (Op::Reduce { axes, .. }, &[x]) if axes.is_empty() => Some(Expr::Class(x)),
            _ => None,
        })
        .collect()
}
