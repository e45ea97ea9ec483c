//! The rewrite rules, by name, and the machinery every rule table shares.
//!
//! Rules live in tables by family, one file each, listed in [`RULE_SETS`]: [`RULES`] here (exact
//! identities), [`super::algebra::RULES`] (exact movement and contraction algebra),
//! [`super::folding::RULES`] (inexact constant re-association and scale folding),
//! [`super::merge::RULES`] (exact multi-pattern merges) and [`super::composite::RULES`]. Every
//! rule states its [`Accuracy`]: the `eqsat` pass runs them all, `eqsat-exact` only the exact
//! ones.
//!
//! The rules of this table are exact in the interpreter's semantics (IEEE floats, sign of zero and NaN
//! payloads included; two's-complement integers): a rewritten program returns bitwise the same
//! results. That rules out float commutativity: `add`/`mul` of two NaNs may return either
//! payload, and `max`/`min` return their *first* NaN operand, so commutativity is only stated
//! for integers and bool. The float additive identity is `-0.0` (`+0.0 + -0.0 == +0.0`).
//!
//! A rule is a search pattern ([`RuleDef::lhs`], with wildcard attributes, see
//! [`crate::eqsat::language`]) and a builder that proposes replacement expressions for the
//! matched e-class. [`Checked`] type-checks every proposal with [`op_type`] and adds it only
//! when its type equals the e-class's, so no rule needs its own shape conditions.

use egg::{Applier, Id, MultiPattern, Pattern, PatternAst, Rewrite, Subst, Symbol, Var};
use terafab_ir::{BinaryOp, DType, Op, Tensor, TensorType, UnaryOp};

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
    pub fn var(&self, name: &str) -> Option<Id> {
        let v: Var = name.parse().ok()?;
        self.subst.get(v).copied()
    }

    /// The matched e-class's type.
    pub fn ty(&self) -> Option<&TensorType> {
        self.egraph[self.eclass].data.as_ref()
    }

    /// Whether the matched e-class holds integers or bools.
    pub fn is_int_or_bool(&self) -> bool {
        self.ty()
            .is_some_and(|t| t.dtype.is_int() || t.dtype.is_bool())
    }

    /// Whether e-class `id` holds a constant whose elements all equal `c`.
    pub fn splat(&self, id: Id, c: f64) -> bool {
        self.egraph[id].nodes.iter().any(|n| {
            matches!(self.egraph.analysis.op(n), Some(Op::Constant { value }) if is_splat_of(&value, c))
        })
    }

    /// The additive identity of the matched class's type: `-0.0` for floats, `0` otherwise.
    pub fn add_identity(&self) -> f64 {
        if self.ty().is_some_and(|t| t.dtype.is_float()) {
            -0.0
        } else {
            0.0
        }
    }

    /// The concrete ops of kind `kind` in e-class `id`, with their operands.
    pub fn ops(&self, id: Id, kind: Symbol) -> Vec<(Op, Vec<Id>)> {
        self.egraph[id]
            .nodes
            .iter()
            .filter(|n| n.kind == kind)
            .filter_map(|n| Some((self.egraph.analysis.op(n)?, n.children.clone())))
            .collect()
    }

    /// `(outer, inner, x)` for every `outer(inner(x))` in the matched class, both of the root's
    /// kind and unary.
    pub fn nested(&self) -> Vec<(Op, Op, Id)> {
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

    /// The type of e-class `id`.
    pub fn class_ty(&self, id: Id) -> Option<&TensorType> {
        self.egraph[id].data.as_ref()
    }

    /// The values of the constants in e-class `id`.
    pub fn constants(&self, id: Id) -> Vec<Tensor> {
        self.egraph[id]
            .nodes
            .iter()
            .filter_map(|n| match self.egraph.analysis.op(n) {
                Some(Op::Constant { value }) => Some(value),
                _ => None,
            })
            .collect()
    }

    /// The root op applied to these operands (ops without attributes only).
    pub fn root_op(&self, operands: Vec<Expr>) -> Option<Expr> {
        Some(Expr::Node(attrless_op(self.root.as_str())?, operands))
    }
}

/// Proposes replacements for a match.
pub type Build = fn(&Match<'_>) -> Vec<Expr>;

/// Proposes replacements for several e-classes at once (multi-pattern rules): each proposal is a
/// list of `(e-class, replacement)`, added together only when every replacement type-checks to
/// its e-class's type.
pub type MultiBuild = fn(&Match<'_>) -> Vec<Vec<(Id, Expr)>>;

/// How a rule proposes.
#[derive(Clone, Copy)]
pub enum Apply {
    /// `lhs` is a pattern; proposals for the matched e-class.
    One(Build),
    /// `lhs` is an egg multi-pattern (`?a = (..), ?b = (..)`); the matched e-class is the first
    /// pattern's, the others are read from the bindings.
    Multi(MultiBuild),
}

/// How exactly a rule keeps the interpreter's results.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Accuracy {
    /// Bitwise the same results (NaN payloads and signs of zero included).
    Exact,
    /// Re-rounded floats: every element of a result within `rtol` × max(1, the largest magnitude
    /// in that result tensor) of the original's, for f32 operands of moderate magnitude (other
    /// float types: `rtol` scaled by their epsilon over f32's). Integers stay exact. Not meant for values near overflow or underflow, where a
    /// re-associated product may overflow where the original did not.
    Inexact { rtol: f64 },
}

impl Accuracy {
    pub fn is_exact(self) -> bool {
        self == Accuracy::Exact
    }
}

/// A rule: name, search pattern, builder, accuracy.
pub struct RuleDef {
    pub name: &'static str,
    pub lhs: &'static str,
    pub apply: Apply,
    pub accuracy: Accuracy,
}

/// An exact rule.
pub const fn rule(name: &'static str, lhs: &'static str, build: Build) -> RuleDef {
    RuleDef {
        name,
        lhs,
        apply: Apply::One(build),
        accuracy: Accuracy::Exact,
    }
}

/// An inexact rule with its tolerance (see [`Accuracy::Inexact`]).
pub const fn inexact(name: &'static str, lhs: &'static str, build: Build, rtol: f64) -> RuleDef {
    RuleDef {
        name,
        lhs,
        apply: Apply::One(build),
        accuracy: Accuracy::Inexact { rtol },
    }
}

/// An exact multi-pattern rule.
pub const fn multi(name: &'static str, lhs: &'static str, build: MultiBuild) -> RuleDef {
    RuleDef {
        name,
        lhs,
        apply: Apply::Multi(build),
        accuracy: Accuracy::Exact,
    }
}

/// The exact identities, by name.
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
    // reduce_prod(x) over no axes == x (a one-element fold is its element).
    rule("reduce-prod-none", "(reduce_prod ?x)", reduce_none),
    // reduce_max(x) over no axes == x.
    rule("reduce-max-none", "(reduce_max ?x)", reduce_none),
    // reduce_min(x) over no axes == x.
    rule("reduce-min-none", "(reduce_min ?x)", reduce_none),
    // reduce_sum(x) over extent-1 axes only == x (with keep_dims; else a reshape of x).
    rule("reduce-sum-unit", "(reduce_sum ?x)", reduce_unit),
    // reduce_prod(x) over extent-1 axes only == x (with keep_dims; else a reshape of x).
    rule("reduce-prod-unit", "(reduce_prod ?x)", reduce_unit),
    // reduce_max(x) over extent-1 axes only == x (with keep_dims; else a reshape of x).
    rule("reduce-max-unit", "(reduce_max ?x)", reduce_unit),
    // reduce_min(x) over extent-1 axes only == x (with keep_dims; else a reshape of x).
    rule("reduce-min-unit", "(reduce_min ?x)", reduce_unit),
    // x & ones == ones & x == x (true for bool, -1 for signed, MAX for unsigned up to 32 bits).
    rule("and-ones", "(and ?a ?b)", and_ones),
    // |(|x|)| == |x| (integers: abs(MIN) == MIN both times; floats clear the sign bit).
    rule("abs-abs", "(abs (abs ?x))", root_of_operand),
    // |-x| == |x| (integers: -MIN == MIN; floats: the sign bit is cleared either way).
    rule("abs-neg", "(abs (neg ?x))", root_of_operand),
    // x | 0 == 0 | x == x.
    rule("or-zero", "(or ?a ?b)", or_xor_zero),
    // x ^ 0 == 0 ^ x == x.
    rule("xor-zero", "(xor ?a ?b)", or_xor_zero),
    // x << 0 == x.
    rule("shift-left-zero", "(shift_left ?a ?b)", sub_zero),
    // x >> 0 == x.
    rule("shift-right-zero", "(shift_right ?a ?b)", sub_zero),
    // x / c == x * (1/c) for floats and a splat c of a power of two whose reciprocal is exact.
    rule("div-pow2", "(div ?a ?b)", div_pow2),
    // x * -1 == -1 * x == -x (signed integers only: float NaN * -1 keeps the NaN's sign).
    rule("mul-neg-one", "(mul ?a ?b)", mul_neg_one),
    // select(true-splat, a, b) == a; select(false-splat, a, b) == b.
    rule("select-const", "(select ?c ?a ?b)", select_const),
    // convert(convert(x, mid), to) == convert(x, to) when integer x converts to mid exactly
    // (and not float mid into integer to: see `converts_exactly`).
    rule("convert-convert", "(convert (convert ?x))", convert_convert),
    // reverse(reverse(x, a), b) == reverse(x, a xor b) (an axis reversed twice is restored).
    rule(
        "reverse-reverse-merge",
        "(reverse (reverse ?x))",
        reverse_reverse_merge,
    ),
    // pad(x) with no padding at all (low, high and interior 0) == x.
    rule("pad-none", "(pad ?x ?v)", pad_none),
    // concat(x) of a single operand == x.
    rule("concat-single", "(concat ?x)", operand),
    // reverse(x) over axes of extent 1 only == x.
    rule("reverse-unit", "(reverse ?x)", reverse_unit),
    // slice(slice(x)) == one slice: starts compose, strides multiply.
    rule("slice-slice", "(slice (slice ?x))", slice_slice),
    // transpose(broadcast(scalar)) == broadcast(scalar) to the result shape (a splat).
    rule(
        "transpose-splat",
        "(transpose (broadcast ?x))",
        rebroadcast_scalar,
    ),
    // reshape(broadcast(scalar)) == broadcast(scalar) to the result shape.
    rule(
        "reshape-splat",
        "(reshape (broadcast ?x))",
        rebroadcast_scalar,
    ),
    // reverse(broadcast(scalar)) == broadcast(scalar).
    rule(
        "reverse-splat",
        "(reverse (broadcast ?x))",
        rebroadcast_scalar,
    ),
    // slice(broadcast(scalar)) == broadcast(scalar) to the result shape.
    rule("slice-splat", "(slice (broadcast ?x))", rebroadcast_scalar),
    // convert(broadcast(x)) == broadcast(convert(x)) (elementwise commutes with broadcast).
    rule(
        "convert-broadcast",
        "(convert (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // -broadcast(x) == broadcast(-x).
    rule(
        "neg-broadcast",
        "(neg (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // |broadcast(x)| == broadcast(|x|).
    rule(
        "abs-broadcast",
        "(abs (broadcast ?x))",
        elementwise_before_broadcast,
    ),
    // !broadcast(x) == broadcast(!x).
    rule(
        "not-broadcast",
        "(not (broadcast ?x))",
        elementwise_before_broadcast,
    ),
];

/// The rule tables, by family: one table per file.
pub const RULE_SETS: &[&[RuleDef]] = &[
    RULES,
    super::algebra::RULES,
    super::folding::RULES,
    super::merge::RULES,
    super::composite::RULES,
];

/// Every rule of every table.
pub fn all_rules() -> impl Iterator<Item = &'static RuleDef> {
    RULE_SETS.iter().flat_map(|set| set.iter())
}

/// The rules named in `names` (every rule for `None`; with `exact_only`, the exact ones of
/// those); unknown names are an error.
pub fn rewrites(names: Option<&[String]>, exact_only: bool) -> Result<Vec<TfRewrite>, String> {
    if let Some(names) = names
        && let Some(bad) = names.iter().find(|n| !all_rules().any(|r| r.name == *n))
    {
        return Err(format!("unknown eqsat rule `{bad}`"));
    }
    all_rules()
        .filter(|r| names.is_none_or(|ns| ns.iter().any(|n| n == r.name)))
        .filter(|r| !exact_only || r.accuracy.is_exact())
        .map(rewrite)
        .collect()
}

/// The egg rewrite of a rule.
fn rewrite(r: &RuleDef) -> Result<TfRewrite, String> {
    let bad = |e: String| format!("rule `{}`: {e}", r.name);
    match r.apply {
        Apply::One(build) => {
            let lhs: Pattern<TfNode> = r.lhs.parse().map_err(|e| bad(format!("{e}")))?;
            let root = match lhs.ast.as_ref().last() {
                Some(egg::ENodeOrVar::ENode(n)) => n.kind,
                _ => return Err(bad("the pattern is a variable".into())),
            };
            Rewrite::new(r.name, lhs, Checked { build, root }).map_err(bad)
        }
        Apply::Multi(build) => {
            // The first pattern's root: its text up to the first operand.
            let root = r
                .lhs
                .split_once('(')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .ok_or_else(|| bad("a multi-pattern starts with `?v = (op ...)`".into()))?;
            let lhs: MultiPattern<TfNode> = r.lhs.parse().map_err(|e| bad(format!("{e}")))?;
            let root = Symbol::from(root);
            Rewrite::new(r.name, lhs, MultiChecked { build, root }).map_err(bad)
        }
    }
}

/// The applier of multi-pattern rules: adds a proposal's replacements when every one
/// type-checks to its e-class's type, and unions each with its e-class.
pub struct MultiChecked {
    build: MultiBuild,
    root: Symbol,
}

impl Applier<TfNode, TypeAnalysis> for MultiChecked {
    fn apply_one(
        &self,
        egraph: &mut TfGraph,
        eclass: Id,
        subst: &Subst,
        _searcher_ast: Option<&PatternAst<TfNode>>,
        _rule_name: Symbol,
    ) -> Vec<Id> {
        let proposals = (self.build)(&Match {
            egraph,
            eclass,
            subst,
            root: self.root,
        });
        let mut changed = Vec::new();
        for group in proposals {
            let fits = group.iter().all(|(class, e)| {
                let want = egraph[*class].data.as_ref();
                want.is_some() && expr_type(egraph, e).as_ref() == want
            });
            if !fits {
                continue;
            }
            for (class, e) in group {
                let id = add_expr(egraph, &e);
                if egraph.union(class, id) {
                    changed.push(id);
                }
            }
        }
        changed
    }
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
pub(super) fn operand(m: &Match<'_>) -> Vec<Expr> {
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

pub(super) fn is_identity(perm: &[usize]) -> bool {
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

/// The root op (without attributes) applied to `?x`: `abs(abs(x)) -> abs(x)`.
fn root_of_operand(m: &Match<'_>) -> Vec<Expr> {
    m.var("?x")
        .and_then(|x| m.root_op(vec![Expr::Class(x)]))
        .into_iter()
        .collect()
}

/// A reduction over extent-1 axes only folds one element per result (the same fold as over no
/// axes): `x` with `keep_dims`, else `x` reshaped to the result shape.
fn reduce_unit(m: &Match<'_>) -> Vec<Expr> {
    let Some(ty) = m.ty() else {
        return vec![];
    };
    m.ops(m.eclass, m.root)
        .into_iter()
        .filter_map(|(op, ins)| {
            let (
                Op::Reduce {
                    axes, keep_dims, ..
                },
                &[x],
            ) = (op, ins.as_slice())
            else {
                return None;
            };
            let dims = static_dims(m, x)?;
            if !axes.iter().all(|&a| dims.get(a) == Some(&1)) {
                return None;
            }
            Some(if keep_dims {
                Expr::Class(x)
            } else {
                Expr::Node(
                    Op::Reshape {
                        shape: ty.shape.clone(),
                    },
                    vec![Expr::Class(x)],
                )
            })
        })
        .collect()
}

/// `x & ones -> x`: the all-ones value of bool, signed and (up to 32 bits, exact in f64)
/// unsigned integers.
fn and_ones(m: &Match<'_>) -> Vec<Expr> {
    let Some(d) = m.ty().map(|t| t.dtype) else {
        return vec![];
    };
    let ones = if d.is_bool() {
        1.0
    } else if d.is_signed_int() {
        -1.0
    } else if d.is_unsigned_int() && d.size_bytes() <= 4 {
        ((1u64 << (8 * d.size_bytes())) - 1) as f64
    } else {
        return vec![];
    };
    unit(m, ones, true)
}

fn or_xor_zero(m: &Match<'_>) -> Vec<Expr> {
    unit(m, 0.0, true)
}

/// `x / c -> x * r` for floats, `c` a splat of a (normal) power of two and `r = 1/c` exact in the
/// type: both are the real `x * 2^-k` rounded once (the interpreter computes in f64, where
/// these quotients and products of narrower floats are exact; f64 itself rounds both correctly,
/// subnormal results included), signs of zero and infinities follow the same rule, and a NaN
/// `x` is returned as is by both.
fn div_pow2(m: &Match<'_>) -> Vec<Expr> {
    let (Some(a), Some(b)) = (m.var("?a"), m.var("?b")) else {
        return vec![];
    };
    if !m.ty().is_some_and(|t| t.dtype.is_float()) {
        return vec![];
    }
    const MANTISSA: u64 = (1 << 52) - 1;
    m.egraph[b]
        .nodes
        .iter()
        .filter_map(|n| {
            let Some(Op::Constant { value }) = m.egraph.analysis.op(n) else {
                return None;
            };
            let c = *value.to_f64_vec().first()?;
            if !(c.is_normal() && c.to_bits() & MANTISSA == 0 && is_splat_of(&value, c)) {
                return None;
            }
            let r = 1.0 / c;
            let recip = Tensor::from_fn(value.dtype(), value.shape(), |_| r).ok()?;
            is_splat_of(&recip, r).then(|| {
                Expr::Node(
                    Op::Binary(BinaryOp::Mul),
                    vec![
                        Expr::Class(a),
                        Expr::Node(Op::Constant { value: recip }, vec![]),
                    ],
                )
            })
        })
        .collect()
}

/// `x * -1 -> -x` for signed integers (an unsigned splat of -1 would read as 0).
fn mul_neg_one(m: &Match<'_>) -> Vec<Expr> {
    if !m.ty().is_some_and(|t| t.dtype.is_signed_int()) {
        return vec![];
    }
    let neg = |id| Expr::Node(Op::Unary(UnaryOp::Neg), vec![Expr::Class(id)]);
    let (Some(a), Some(b)) = (m.var("?a"), m.var("?b")) else {
        return vec![];
    };
    let mut out = Vec::new();
    if m.splat(b, -1.0) {
        out.push(neg(a));
    }
    if m.splat(a, -1.0) {
        out.push(neg(b));
    }
    out
}

/// `select(c, a, b)` with `c` a splat of true (`a`) or false (`b`).
fn select_const(m: &Match<'_>) -> Vec<Expr> {
    let (Some(c), Some(a), Some(b)) = (m.var("?c"), m.var("?a"), m.var("?b")) else {
        return vec![];
    };
    let mut out = Vec::new();
    if m.splat(c, 1.0) {
        out.push(Expr::Class(a));
    }
    if m.splat(c, 0.0) {
        out.push(Expr::Class(b));
    }
    out
}

/// Whether `convert(convert(x, mid), to) == convert(x, to)` for integer `x` of type `src`: every
/// value of `src` converts to `mid` exactly (a wider integer of a sign that holds `src`'s
/// range, or f64 with its 53-bit significand from at most 32 bits), so `to` sees the same value;
/// but not from a float `mid` into an integer `to`, as float-to-int saturates where int-to-int
/// wraps.
fn converts_exactly(src: DType, mid: DType, to: DType) -> bool {
    let bits = |d: DType| d.size_bytes() * 8;
    if !src.is_int() {
        return false;
    }
    if mid == DType::F64 {
        return bits(src) <= 32 && !to.is_int();
    }
    match (src.is_signed_int(), mid.is_signed_int(), mid.is_int()) {
        (_, _, false) => false,
        (true, true, _) => bits(mid) >= bits(src),
        (true, false, _) => false,
        (false, false, _) => bits(mid) >= bits(src),
        (false, true, _) => bits(mid) > bits(src),
    }
}

fn convert_convert(m: &Match<'_>) -> Vec<Expr> {
    m.nested()
        .into_iter()
        .filter_map(|(outer, inner, x)| {
            let (Op::Convert { to: mid }, Op::Convert { to }) = (inner, &outer) else {
                return None;
            };
            let src = m.egraph[x].data.as_ref()?.dtype;
            converts_exactly(src, mid, *to).then(|| Expr::Node(outer, vec![Expr::Class(x)]))
        })
        .collect()
}

/// `reverse(reverse(x, a), b) -> reverse(x, a xor b)` when that is not empty (else
/// `reverse-reverse` applies).
fn reverse_reverse_merge(m: &Match<'_>) -> Vec<Expr> {
    m.nested()
        .into_iter()
        .filter_map(|(outer, inner, x)| {
            let (Op::Reverse { axes: a }, Op::Reverse { axes: b }) = (outer, inner) else {
                return None;
            };
            let mut axes: Vec<usize> = a
                .iter()
                .filter(|i| !b.contains(i))
                .chain(b.iter().filter(|i| !a.contains(i)))
                .copied()
                .collect();
            axes.sort_unstable();
            axes.dedup();
            (!axes.is_empty()).then(|| Expr::Node(Op::Reverse { axes }, vec![Expr::Class(x)]))
        })
        .collect()
}

fn pad_none(m: &Match<'_>) -> Vec<Expr> {
    m.ops(m.eclass, m.root)
        .into_iter()
        .filter_map(|(op, ins)| match (op, ins.as_slice()) {
            (
                Op::Pad {
                    low,
                    high,
                    interior,
                },
                &[x, _],
            ) if low.iter().chain(&high).all(|&p| p == 0) && interior.iter().all(|&i| i == 0) => {
                Some(Expr::Class(x))
            }
            _ => None,
        })
        .collect()
}

/// The static dims of e-class `id`.
pub(super) fn static_dims(m: &Match<'_>, id: Id) -> Option<Vec<usize>> {
    m.egraph[id].data.as_ref()?.shape.as_static()
}

fn reverse_unit(m: &Match<'_>) -> Vec<Expr> {
    m.ops(m.eclass, m.root)
        .into_iter()
        .filter_map(|(op, ins)| {
            let (Op::Reverse { axes }, &[x]) = (op, ins.as_slice()) else {
                return None;
            };
            let dims = static_dims(m, x)?;
            axes.iter()
                .all(|&a| dims.get(a) == Some(&1))
                .then_some(Expr::Class(x))
        })
        .collect()
}

/// `slice(slice(x, s1, l1, t1), s2, l2, t2)`: element `j` is `x[s1 + (s2 + j*t2)*t1]`, so one
/// slice with start `s1 + s2*t1` and stride `t1*t2`, its limit just past the last element.
fn slice_slice(m: &Match<'_>) -> Vec<Expr> {
    m.nested()
        .into_iter()
        .filter_map(|(outer, inner, x)| {
            let (
                Op::Slice {
                    start: s2,
                    limit: l2,
                    stride: t2,
                },
                Op::Slice {
                    start: s1,
                    stride: t1,
                    ..
                },
            ) = (outer, inner)
            else {
                return None;
            };
            let n = s1.len();
            if [s2.len(), l2.len(), t2.len(), t1.len()] != [n; 4] {
                return None;
            }
            let (mut start, mut limit, mut stride) = (vec![], vec![], vec![]);
            for d in 0..n {
                let count = l2[d].saturating_sub(s2[d]).div_ceil(t2[d].max(1));
                if count == 0 {
                    // An empty dim: any empty slice.
                    start.push(0);
                    limit.push(0);
                    stride.push(1);
                } else {
                    // Checked: nested slices in a cyclic e-class may compose without end.
                    let s = s2[d].checked_mul(t1[d])?.checked_add(s1[d])?;
                    // One element: stride 1, the canonical form (else slices of a slice in a
                    // cyclic e-class would grow their strides without end).
                    let t = if count == 1 {
                        1
                    } else {
                        t1[d].checked_mul(t2[d])?
                    };
                    start.push(s);
                    limit.push((count - 1).checked_mul(t)?.checked_add(s)?.checked_add(1)?);
                    stride.push(t);
                }
            }
            Some(Expr::Node(
                Op::Slice {
                    start,
                    limit,
                    stride,
                },
                vec![Expr::Class(x)],
            ))
        })
        .collect()
}

/// `op(broadcast(s))` for a scalar `s` is a splat: `broadcast(s)` to the matched shape.
fn rebroadcast_scalar(m: &Match<'_>) -> Vec<Expr> {
    let (Some(x), Some(ty)) = (m.var("?x"), m.ty()) else {
        return vec![];
    };
    if m.egraph[x]
        .data
        .as_ref()
        .is_none_or(|t| t.shape.rank() != 0)
    {
        return vec![];
    }
    vec![Expr::Node(
        Op::Broadcast {
            shape: ty.shape.clone(),
        },
        vec![Expr::Class(x)],
    )]
}

/// `f(broadcast(x)) -> broadcast(f(x))` for the elementwise root op `f`.
pub(super) fn elementwise_before_broadcast(m: &Match<'_>) -> Vec<Expr> {
    let broadcast = Symbol::from("broadcast");
    let mut out = Vec::new();
    for (f, ins) in m.ops(m.eclass, m.root) {
        let &[mid] = ins.as_slice() else { continue };
        for (b, ins) in m.ops(mid, broadcast) {
            if let &[x] = ins.as_slice() {
                let inner = Expr::Node(f.clone(), vec![Expr::Class(x)]);
                out.push(Expr::Node(b, vec![inner]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_conversions() {
        use DType::*;
        assert!(converts_exactly(I8, I64, U8));
        assert!(converts_exactly(U8, I16, I8));
        assert!(converts_exactly(I32, F64, F16));
        assert!(converts_exactly(U32, U32, I8));
        assert!(!converts_exactly(U8, I8, I32));
        assert!(!converts_exactly(I8, U64, I32));
        assert!(!converts_exactly(I64, F64, F32));
        // Float-to-int saturates where int-to-int wraps.
        assert!(!converts_exactly(I32, F64, I8));
        assert!(!converts_exactly(F16, F32, F64));
    }
}
