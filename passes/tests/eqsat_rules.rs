//! Every eqsat rule, alone (or with the few rules that make it pay), on small functions built
//! from its left side: random shapes, element types and values. For exact rules the values tell
//! rewrites apart (`-0.0`, NaN, inf, integer extremes) and the interpreter's results must be
//! bitwise equal before and after `eqsat` restricted to the rule; for inexact rules the values
//! are moderate (uniform in [-2, 2], constants away from zero) and the results must agree within
//! the rule's stated tolerance ([`Accuracy::Inexact`]: `rtol` × max(1, largest magnitude of the
//! result), `rtol` scaled by the type's epsilon over f32's; integers bitwise). The rule must
//! fire and change the function.
//!
//! Templates come in two forms: [`TEMPLATES`] (the identities: a body over `%x`, `%y`, `%c` of
//! type `T`) and [`GENS`] (everything else: a function generated from random dims and a seed).

use proptest::prelude::*;
use terafab_ir::interp::run_function;
use terafab_ir::parse::parse_function;
use terafab_ir::{DType, Tensor};
use terafab_passes::eqsat::extract::{ExactBudget, Extraction, Target};
use terafab_passes::eqsat::rules::{Accuracy, RuleDef, all_rules};
use terafab_passes::eqsat::{Eqsat, algebra, folding, merge, rules};

const FLOATS: &[f64] = &[0.0, -0.0, 1.0, -1.0, 2.5, f64::INFINITY, f64::NAN];
const INTS: &[f64] = &[0.0, 1.0, -1.0, 7.0, 2147483647.0, -2147483648.0];

/// Element types a template may use.
const FLOAT: &[&str] = &["f32", "f16", "bf16"];
const INT: &[&str] = &["i32", "i64", "u8"];
const INT_BOOL: &[&str] = &["i32", "i8", "bool"];
const ANY: &[&str] = &["f32", "i32", "f16"];
const NUMERIC: &[&str] = &["f32", "i32", "bf16", "i64"];
const SIGNED: &[&str] = &["i32", "i8", "i64"];

/// A template: the rule, element types, and the body given the type `T` (e.g. `f32[2,3]`),
/// the element type, and a transposed type `TT` of a rank-2 `T`.
struct Template {
    rule: &'static str,
    dtypes: &'static [&'static str],
    body: &'static str,
}

const fn t(rule: &'static str, dtypes: &'static [&'static str], body: &'static str) -> Template {
    Template { rule, dtypes, body }
}

/// `%x`, `%y`: type T; `%c`: bool with T's shape. Bodies return `%r`, of the type on its line.
/// Besides `T`, `TT`, `E`, `N`, `S`, `L`, `Z` (see [`source`]): `@f64` (and `@i64`, `@f32`, `@i8`) is
/// `f64` with T's shape, `@1N` is `E[1,N]`, `@S1`/`@L1` the type/limit of T's first column,
/// `@S2`/`@L2` of T sliced with stride `[1, 2]`, `@S4` of that sliced with stride `[2, 2]`.
const TEMPLATES: &[Template] = &[
    t("add-comm", INT, "%r = add(%x, %y) : T"),
    t("mul-comm", INT, "%r = mul(%x, %y) : T"),
    t("max-comm", INT_BOOL, "%r = max(%x, %y) : T"),
    t("min-comm", INT_BOOL, "%r = min(%x, %y) : T"),
    t("and-comm", INT_BOOL, "%r = and(%x, %y) : T"),
    t("or-comm", INT_BOOL, "%r = or(%x, %y) : T"),
    t("xor-comm", INT_BOOL, "%r = xor(%x, %y) : T"),
    t(
        "add-zero",
        NUMERIC,
        "%z = constant() {value=dense<E[]>[Z]} : E[]\n  %r = add(%x, %z) : T",
    ),
    t(
        "add-zero",
        FLOAT,
        "%z = constant() {value=dense<E[]>[Z]} : E[]\n  %r = add(%z, %x) : T",
    ),
    t(
        "sub-zero",
        NUMERIC,
        "%z = constant() {value=dense<E[]>[0]} : E[]\n  %r = sub(%x, %z) : T",
    ),
    t(
        "mul-one",
        NUMERIC,
        "%z = constant() {value=dense<E[]>[1]} : E[]\n  %r = mul(%z, %x) : T",
    ),
    t(
        "div-one",
        NUMERIC,
        "%z = constant() {value=dense<E[]>[1]} : E[]\n  %r = div(%x, %z) : T",
    ),
    t("neg-neg", NUMERIC, "%a = neg(%x) : T\n  %r = neg(%a) : T"),
    t("not-not", INT_BOOL, "%a = not(%x) : T\n  %r = not(%a) : T"),
    t("max-self", ANY, "%r = max(%x, %x) : T"),
    t("min-self", ANY, "%r = min(%x, %x) : T"),
    t("and-self", INT_BOOL, "%r = and(%x, %x) : T"),
    t("or-self", INT_BOOL, "%r = or(%x, %x) : T"),
    t("sub-self", INT, "%r = sub(%x, %x) : T"),
    t("xor-self", INT_BOOL, "%r = xor(%x, %x) : T"),
    t("select-same", ANY, "%r = select(%c, %x, %x) : T"),
    t(
        "select-not",
        ANY,
        "%n = not(%c) : C\n  %r = select(%n, %x, %y) : T",
    ),
    t(
        "transpose-transpose",
        ANY,
        "%a = transpose(%x) {perm=[1, 0]} : TT\n  %r = transpose(%a) {perm=[1, 0]} : T",
    ),
    t(
        "transpose-identity",
        ANY,
        "%r = transpose(%x) {perm=[0, 1]} : T",
    ),
    t(
        "reshape-reshape",
        ANY,
        "%a = reshape(%x) {shape=[N]} : E[N]\n  %r = reshape(%a) {shape=S} : T",
    ),
    t("reshape-same", ANY, "%r = reshape(%x) {shape=S} : T"),
    t(
        "broadcast-broadcast",
        ANY,
        "%a = broadcast(%x) {shape=S} : T\n  %r = broadcast(%a) {shape=S} : T",
    ),
    t("broadcast-same", ANY, "%r = broadcast(%x) {shape=S} : T"),
    t("convert-same", ANY, "%r = convert(%x) {to=E} : T"),
    t(
        "reverse-reverse",
        ANY,
        "%a = reverse(%x) {axes=[0, 1]} : T\n  %r = reverse(%a) {axes=[1, 0]} : T",
    ),
    t(
        "slice-full",
        ANY,
        "%r = slice(%x) {start=[0, 0], limit=L, stride=[1, 1]} : T",
    ),
    t(
        "reduce-sum-none",
        NUMERIC,
        "%r = reduce_sum(%x) {axes=[], keep_dims=false} : T",
    ),
    t(
        "reduce-prod-none",
        NUMERIC,
        "%r = reduce_prod(%x) {axes=[], keep_dims=true} : T",
    ),
    t(
        "reduce-max-none",
        ANY,
        "%r = reduce_max(%x) {axes=[], keep_dims=false} : T",
    ),
    t(
        "reduce-min-none",
        ANY,
        "%r = reduce_min(%x) {axes=[], keep_dims=false} : T",
    ),
    t(
        "reduce-sum-unit",
        NUMERIC,
        "%a = reshape(%x) {shape=[1, N]} : @1N\n  %r = reduce_sum(%a) {axes=[0], keep_dims=true} : @1N",
    ),
    t(
        "reduce-prod-unit",
        NUMERIC,
        "%a = reshape(%x) {shape=[1, N]} : @1N\n  %r = reduce_prod(%a) {axes=[0], keep_dims=true} : @1N",
    ),
    t(
        "reduce-max-unit",
        ANY,
        "%a = reshape(%x) {shape=[1, N]} : @1N\n  %r = reduce_max(%a) {axes=[0], keep_dims=true} : @1N",
    ),
    t(
        "reduce-min-unit",
        ANY,
        "%a = reshape(%x) {shape=[1, N]} : @1N\n  %r = reduce_min(%a) {axes=[0], keep_dims=true} : @1N",
    ),
    t(
        "and-ones",
        SIGNED,
        "%z = constant() {value=dense<E[]>[-1]} : E[]\n  %r = and(%z, %x) : T",
    ),
    t(
        "and-ones",
        &["u8"],
        "%z = constant() {value=dense<E[]>[255]} : E[]\n  %r = and(%x, %z) : T",
    ),
    t(
        "and-ones",
        &["bool"],
        "%z = constant() {value=dense<E[]>[true]} : E[]\n  %r = and(%x, %z) : T",
    ),
    t("abs-abs", NUMERIC, "%a = abs(%x) : T\n  %r = abs(%a) : T"),
    t("abs-neg", NUMERIC, "%a = neg(%x) : T\n  %r = abs(%a) : T"),
    t(
        "or-zero",
        INT,
        "%z = constant() {value=dense<E[]>[0]} : E[]\n  %r = or(%z, %x) : T",
    ),
    t(
        "xor-zero",
        INT,
        "%z = constant() {value=dense<E[]>[0]} : E[]\n  %r = xor(%x, %z) : T",
    ),
    t(
        "shift-left-zero",
        INT,
        "%z = constant() {value=dense<E[]>[0]} : E[]\n  %r = shift_left(%x, %z) : T",
    ),
    t(
        "shift-right-zero",
        INT,
        "%z = constant() {value=dense<E[]>[0]} : E[]\n  %r = shift_right(%x, %z) : T",
    ),
    t(
        "div-pow2",
        &["f32", "f16", "bf16", "f64"],
        "%z = constant() {value=dense<E[]>[4]} : E[]\n  %r = div(%x, %z) : T",
    ),
    t(
        "div-pow2",
        &["f64", "f32", "f16"],
        "%z = constant() {value=dense<E[]>[-0.125]} : E[]\n  %r = div(%x, %z) : T",
    ),
    t(
        "mul-neg-one",
        SIGNED,
        "%z = constant() {value=dense<E[]>[-1]} : E[]\n  %r = mul(%x, %z) : T",
    ),
    t(
        "mul-neg-one",
        SIGNED,
        "%z = constant() {value=dense<E[]>[-1]} : E[]\n  %r = mul(%z, %x) : T",
    ),
    t(
        "select-const",
        ANY,
        "%k = constant() {value=dense<bool[]>[true]} : bool[]\n  %r = select(%k, %x, %y) : T",
    ),
    t(
        "select-const",
        ANY,
        "%k = constant() {value=dense<bool[]>[false]} : bool[]\n  %r = select(%k, %x, %y) : T",
    ),
    t(
        "convert-convert",
        &["i8", "u8", "i32", "u16"],
        "%a = convert(%x) {to=i64} : @i64\n  %r = convert(%a) {to=E} : T",
    ),
    t(
        "convert-convert",
        &["i8", "u8", "i32", "u32"],
        "%a = convert(%x) {to=f64} : @f64\n  %r = convert(%a) {to=f32} : @f32",
    ),
    t(
        "reverse-reverse-merge",
        ANY,
        "%a = reverse(%x) {axes=[0]} : T\n  %r = reverse(%a) {axes=[1, 0]} : T",
    ),
    t(
        "pad-none",
        ANY,
        "%z = constant() {value=dense<E[]>[Z]} : E[]\n  \
         %r = pad(%x, %z) {low=[0, 0], high=[0, 0], interior=[0, 0]} : T",
    ),
    t("concat-single", ANY, "%r = concat(%x) {axis=1} : T"),
    t("reverse-unit", ANY, "%r = reverse(%x) {axes=[]} : T"),
    t(
        "reverse-unit",
        ANY,
        "%a = reshape(%x) {shape=[1, N]} : @1N\n  %r = reverse(%a) {axes=[0]} : @1N",
    ),
    t(
        "slice-slice",
        ANY,
        "%a = slice(%x) {start=[0, 0], limit=L, stride=[1, 2]} : @S2\n  \
         %r = slice(%a) {start=[0, 0], limit=@L2, stride=[2, 2]} : @S4",
    ),
    t(
        "slice-slice",
        ANY,
        "%a = slice(%x) {start=[0, 0], limit=L, stride=[1, 1]} : T\n  \
         %r = slice(%a) {start=[0, 0], limit=L, stride=[1, 1]} : T",
    ),
    t(
        "transpose-splat",
        ANY,
        "%s = reduce_max(%x) {axes=[0, 1], keep_dims=false} : E[]\n  \
         %b = broadcast(%s) {shape=S} : T\n  %r = transpose(%b) {perm=[1, 0]} : TT",
    ),
    t(
        "reshape-splat",
        ANY,
        "%s = reduce_max(%x) {axes=[0, 1], keep_dims=false} : E[]\n  \
         %b = broadcast(%s) {shape=S} : T\n  %r = reshape(%b) {shape=[1, N]} : @1N",
    ),
    t(
        "reverse-splat",
        ANY,
        "%s = reduce_min(%x) {axes=[0, 1], keep_dims=false} : E[]\n  \
         %b = broadcast(%s) {shape=S} : T\n  %r = reverse(%b) {axes=[1]} : T",
    ),
    t(
        "slice-splat",
        ANY,
        "%s = reduce_min(%x) {axes=[0, 1], keep_dims=false} : E[]\n  \
         %b = broadcast(%s) {shape=S} : T\n  \
         %r = slice(%b) {start=[0, 0], limit=L, stride=[1, 2]} : @S2",
    ),
    t(
        "convert-broadcast",
        NUMERIC,
        "%a = slice(%x) {start=[0, 0], limit=@L1, stride=[1, 1]} : @S1\n  \
         %b = broadcast(%a) {shape=S} : T\n  %r = convert(%b) {to=i8} : @i8",
    ),
    t(
        "neg-broadcast",
        NUMERIC,
        "%a = slice(%x) {start=[0, 0], limit=@L1, stride=[1, 1]} : @S1\n  \
         %b = broadcast(%a) {shape=S} : T\n  %r = neg(%b) : T",
    ),
    t(
        "abs-broadcast",
        NUMERIC,
        "%s = reduce_min(%x) {axes=[0, 1], keep_dims=false} : E[]\n  \
         %b = broadcast(%s) {shape=S} : T\n  %r = abs(%b) : T",
    ),
    t(
        "not-broadcast",
        INT_BOOL,
        "%a = slice(%x) {start=[0, 0], limit=@L1, stride=[1, 1]} : @S1\n  \
         %b = broadcast(%a) {shape=S} : T\n  %r = not(%b) : T",
    ),
];

/// The function of template `t` at element type `e` and shape `[d0, d1]`.
fn source(t: &Template, e: &str, d0: usize, d1: usize) -> String {
    let ty = format!("{e}[{d0},{d1}]");
    let zero = if e.starts_with('f') || e.starts_with('b') && e != "bool" {
        "-0.0"
    } else {
        "0"
    };
    let (half, rows2) = (d1.div_ceil(2), d0.div_ceil(2));
    let quarter = half.div_ceil(2);
    let mut body = t.body.to_string();
    for d in ["f64", "i64", "f32", "i8"] {
        body = body.replace(&format!("@{d}"), &format!("{d}[{d0},{d1}]"));
    }
    let body = body
        .replace("@1N", &format!("{e}[1,{}]", d0 * d1))
        .replace("[1, N]", &format!("[1, {}]", d0 * d1))
        .replace("@S1", &format!("{e}[{d0},1]"))
        .replace("@L1", &format!("[{d0}, 1]"))
        .replace("@S2", &format!("{e}[{d0},{half}]"))
        .replace("@L2", &format!("[{d0}, {half}]"))
        .replace("@S4", &format!("{e}[{rows2},{quarter}]"))
        .replace("TT", &format!("{e}[{d1},{d0}]"))
        .replace("T", &ty)
        .replace(" C", &format!(" bool[{d0},{d1}]"))
        .replace("E[", &format!("{e}["))
        .replace("to=E", &format!("to={e}"))
        .replace("[N]", &format!("[{}]", d0 * d1))
        .replace("=S", &format!("=[{d0}, {d1}]"))
        .replace("=L", &format!("=[{d0}, {d1}]"))
        .replace("[Z]", &format!("[{zero}]"));
    let rty = body.rsplit(" : ").next().unwrap_or(&ty);
    format!(
        "func @main(%x: {ty}, %y: {ty}, %c: bool[{d0},{d1}]) -> (r: {rty}) {{\n  {body}\n  return %r\n}}\n"
    )
}

fn bits(t: &Tensor) -> (DType, Vec<usize>, Vec<u64>) {
    (
        t.dtype(),
        t.shape().to_vec(),
        t.to_f64_vec().iter().map(|x| x.to_bits()).collect(),
    )
}

/// A small deterministic generator (a 64-bit LCG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    fn below(&mut self, n: usize) -> usize {
        self.next() as usize % n.max(1)
    }

    /// Uniform in `[lo, hi)`, on a grid of 2^-20.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() % (1 << 20)) as f64 / (1u64 << 20) as f64
    }

    /// A value away from zero: magnitude in [0.5, 2), either sign.
    fn scale(&mut self) -> f64 {
        let m = self.uniform(0.5, 2.0);
        if self.next().is_multiple_of(2) { m } else { -m }
    }
}

/// The rule named `name`.
fn rule_def(name: &str) -> &'static RuleDef {
    all_rules()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no rule `{name}`"))
}

/// Random inputs for `f`: telling values for exact rules, moderate ones for inexact rules.
fn inputs(f: &terafab_ir::Function, exact: bool, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng(seed);
    f.inputs()
        .iter()
        .map(|&v| {
            let ty = f.values.ty(v);
            let dims = ty.shape.as_static().unwrap();
            let n = dims.iter().product::<usize>();
            let picks: Vec<f64> = (0..n)
                .map(|_| match (exact, ty.dtype.is_float()) {
                    (true, true) => FLOATS[rng.below(FLOATS.len())],
                    (true, false) => INTS[rng.below(INTS.len())],
                    (false, true) => rng.uniform(-2.0, 2.0),
                    (false, false) => rng.below(9) as f64 - 4.0,
                })
                .collect();
            Tensor::from_fn(ty.dtype, &dims, |i| picks[i]).unwrap()
        })
        .collect()
}

/// Whether `got` is within the accuracy of `rule` of `want` (see the module doc).
fn close(accuracy: Accuracy, want: &Tensor, got: &Tensor) -> bool {
    let rtol = match accuracy {
        _ if want.dtype() != got.dtype() || want.shape() != got.shape() => return false,
        Accuracy::Inexact { rtol } if want.dtype().is_float() => rtol,
        _ => return bits(want) == bits(got),
    };
    let eps = |d: DType| match d {
        DType::F64 => f64::EPSILON,
        DType::F16 => 2f64.powi(-10),
        DType::BF16 => 2f64.powi(-7),
        _ => f64::from(f32::EPSILON),
    };
    let rtol = rtol * eps(want.dtype()) / f64::from(f32::EPSILON);
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    let scale = w.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    w.iter().zip(&g).all(|(a, b)| (a - b).abs() <= rtol * scale)
}

/// Run `pass` (restricted to `rule` and its helpers) on the function `src`; check that `rule`
/// fired, changed the function (unless `may_keep`), and kept the results within its accuracy.
fn check_source(pass: Eqsat, rule: &str, src: &str, seed: u64, may_keep: bool) {
    let mut f = parse_function(src).unwrap_or_else(|err| panic!("{rule}: {err}\n{src}"));
    let before = f.clone();
    let report = pass
        .run_with_report(&mut f)
        .unwrap()
        .unwrap_or_else(|| panic!("{rule}: not translated:\n{src}"));
    terafab_ir::verify::verify_function(&f).unwrap();
    let fired = report.applied.iter().any(|(n, k)| n == rule && *k > 0);
    assert!(fired, "{rule} did not fire on\n{src}");
    assert!(may_keep || f != before, "{rule} changed nothing on\n{src}");
    let accuracy = rule_def(rule).accuracy;
    let inputs = inputs(&before, accuracy.is_exact(), seed);
    let want = run_function(&before, &inputs).unwrap();
    let got = run_function(&f, &inputs).unwrap();
    let ok = want.len() == got.len() && want.iter().zip(&got).all(|(w, g)| close(accuracy, w, g));
    assert!(
        ok,
        "{rule} ({accuracy:?}): results differ on\n{src}\nafter:\n{f}\nwant {want:?}\ngot {got:?}"
    );
}

fn check(t: &Template, dtype: usize, d0: usize, d1: usize, seed: u64) {
    let e = t.dtypes[dtype % t.dtypes.len()];
    let src = source(t, e, d0, d1);
    // Commutativity fires without changing the extracted graph; the others change it.
    check_source(
        Eqsat::with_rules(&[t.rule]),
        t.rule,
        &src,
        seed,
        t.rule.ends_with("-comm"),
    );
}

/// A generated template: the rule, the rules run with it (which make its rewrite pay off), the
/// element types, and the function given an element type, dims in `1..=4` and a generator.
struct Gen {
    rule: &'static str,
    also: &'static [&'static str],
    dtypes: &'static [&'static str],
    make: fn(&str, [usize; 4], &mut Rng) -> String,
}

const fn g(
    rule: &'static str,
    also: &'static [&'static str],
    dtypes: &'static [&'static str],
    make: fn(&str, [usize; 4], &mut Rng) -> String,
) -> Gen {
    Gen {
        rule,
        also,
        dtypes,
        make,
    }
}

/// A constant of element type `e` and shape `dims` with values from `value` (for integer
/// types: 4 × the value, rounded).
fn constant(name: &str, e: &str, dims: &[usize], mut value: impl FnMut() -> f64) -> String {
    let shape: Vec<String> = dims.iter().map(usize::to_string).collect();
    let n = dims.iter().product::<usize>();
    let int = e.starts_with('i') || e.starts_with('u');
    let vals: Vec<String> = (0..n)
        .map(|_| match value() {
            v if int => format!("{}", (v * 4.0).round() as i64),
            v => format!("{v:.6}"),
        })
        .collect();
    format!(
        "%{name} = constant() {{value=dense<{e}[{s}]>[{v}]}} : {e}[{s}]",
        s = shape.join(","),
        v = vals.join(", ")
    )
}

/// A constant scale for element type `e`: away from zero (small integers for integer types).
fn scale_of(e: &str, rng: &mut Rng) -> f64 {
    if e.starts_with('i') || e.starts_with('u') {
        (rng.below(5) + 1) as f64 * if rng.below(2) == 0 { 0.25 } else { -0.25 }
    } else {
        rng.scale()
    }
}

fn ty(e: &str, dims: &[usize]) -> String {
    let d: Vec<String> = dims.iter().map(usize::to_string).collect();
    format!("{e}[{}]", d.join(","))
}

/// `func @main(params) -> (results) { body; return results }`; results as `(name, type)`.
fn func(params: &[(&str, String)], results: &[(&str, String)], body: &[String]) -> String {
    let ps: Vec<String> = params.iter().map(|(n, t)| format!("%{n}: {t}")).collect();
    let rs: Vec<String> = results.iter().map(|(n, t)| format!("{n}: {t}")).collect();
    let names: Vec<String> = results.iter().map(|(n, _)| format!("%{n}")).collect();
    format!(
        "func @main({}) -> ({}) {{\n  {}\n  return {}\n}}\n",
        ps.join(", "),
        rs.join(", "),
        body.join("\n  "),
        names.join(", ")
    )
}

const DOT: &str = "lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]";

fn gen_dot_transpose_lhs(e: &str, [k, m, n, b]: [usize; 4], _: &mut Rng) -> String {
    func(
        &[
            ("x", ty(e, &[k, m])),
            ("y", ty(e, &[k, n])),
            ("bx", ty(e, &[b, k, m])),
            ("by", ty(e, &[b, k, n])),
        ],
        &[("r", ty(e, &[m, n])), ("rb", ty(e, &[b, m, n]))],
        &[
            format!("%t = transpose(%x) {{perm=[1, 0]}} : {}", ty(e, &[m, k])),
            format!("%r = dot_general(%t, %y) {{{DOT}}} : {}", ty(e, &[m, n])),
            format!(
                "%bt = transpose(%bx) {{perm=[0, 2, 1]}} : {}",
                ty(e, &[b, m, k])
            ),
            format!(
                "%rb = dot_general(%bt, %by) {{lhs_batch=[0], rhs_batch=[0], lhs_contract=[2], rhs_contract=[1]}} : {}",
                ty(e, &[b, m, n])
            ),
        ],
    )
}

fn gen_dot_transpose_rhs(e: &str, [k, m, n, _]: [usize; 4], _: &mut Rng) -> String {
    func(
        &[("x", ty(e, &[m, k])), ("w", ty(e, &[n, k]))],
        &[("r", ty(e, &[m, n]))],
        &[
            format!("%t = transpose(%w) {{perm=[1, 0]}} : {}", ty(e, &[k, n])),
            format!("%r = dot_general(%x, %t) {{{DOT}}} : {}", ty(e, &[m, n])),
        ],
    )
}

/// `op(broadcast(a), s)` and `op(s, broadcast(a))` for the binary op of the rule's name.
fn gen_binary_broadcast(op: &str, e: &str, [d0, d1, ..]: [usize; 4]) -> String {
    let d1 = d1 + 1;
    let t = ty(e, &[d0, d1]);
    func(
        &[("a", ty(e, &[d0, 1])), ("s", ty(e, &[]))],
        &[("r", t.clone()), ("r2", t.clone())],
        &[
            format!("%b = broadcast(%a) {{shape=[{d0}, {d1}]}} : {t}"),
            format!("%r = {op}(%b, %s) : {t}"),
            format!("%r2 = {op}(%s, %b) : {t}"),
        ],
    )
}

macro_rules! binary_gens {
    ($($f:ident => $op:literal),*) => {
        $(fn $f(e: &str, d: [usize; 4], _: &mut Rng) -> String {
            gen_binary_broadcast($op, e, d)
        })*
    };
}
binary_gens!(gen_add_b => "add", gen_sub_b => "sub", gen_mul_b => "mul", gen_div_b => "div",
    gen_max_b => "max", gen_min_b => "min");

/// `f(broadcast(a))` for the unary op of the rule's name.
fn gen_unary_broadcast(op: &str, e: &str, [d0, d1, ..]: [usize; 4]) -> String {
    let d0 = d0 + 1;
    let t = ty(e, &[d0, d1]);
    func(
        &[("a", ty(e, &[1, d1]))],
        &[("r", t.clone())],
        &[
            format!("%b = broadcast(%a) {{shape=[{d0}, {d1}]}} : {t}"),
            format!("%r = {op}(%b) : {t}"),
        ],
    )
}

macro_rules! unary_gens {
    ($($f:ident => $op:literal),*) => {
        $(fn $f(e: &str, d: [usize; 4], _: &mut Rng) -> String {
            gen_unary_broadcast($op, e, d)
        })*
    };
}
unary_gens!(gen_exp_b => "exp", gen_log_b => "log", gen_sqrt_b => "sqrt", gen_rsqrt_b => "rsqrt",
    gen_tanh_b => "tanh", gen_logistic_b => "logistic", gen_erf_b => "erf");

fn gen_transpose_unary(e: &str, [d0, d1, ..]: [usize; 4], _: &mut Rng) -> String {
    let (t, tt) = (ty(e, &[d0, d1]), ty(e, &[d1, d0]));
    func(
        &[("x", t.clone())],
        &[("r", t.clone())],
        &[
            format!("%a = transpose(%x) {{perm=[1, 0]}} : {tt}"),
            format!("%n = neg(%a) : {tt}"),
            format!("%r = transpose(%n) {{perm=[1, 0]}} : {t}"),
        ],
    )
}

fn gen_transpose_convert(e: &str, [d0, d1, ..]: [usize; 4], _: &mut Rng) -> String {
    func(
        &[("x", ty(e, &[d0, d1]))],
        &[("r", ty("f64", &[d1, d0]))],
        &[
            format!("%a = convert(%x) {{to=f64}} : {}", ty("f64", &[d0, d1])),
            format!(
                "%r = transpose(%a) {{perm=[1, 0]}} : {}",
                ty("f64", &[d1, d0])
            ),
        ],
    )
}

fn gen_reshape_unary(e: &str, [d0, d1, ..]: [usize; 4], _: &mut Rng) -> String {
    let (t, flat) = (ty(e, &[d0, d1]), ty(e, &[d0 * d1]));
    func(
        &[("x", t.clone())],
        &[("r", t.clone())],
        &[
            format!("%a = reshape(%x) {{shape=[{}]}} : {flat}", d0 * d1),
            format!("%n = abs(%a) : {flat}"),
            format!("%r = reshape(%n) {{shape=[{d0}, {d1}]}} : {t}"),
        ],
    )
}

fn gen_transpose_unit(e: &str, [d0, d1, ..]: [usize; 4], _: &mut Rng) -> String {
    func(
        &[("x", ty(e, &[d0, 1, d1]))],
        &[("r", ty(e, &[1, d0, d1]))],
        &[format!(
            "%r = transpose(%x) {{perm=[1, 0, 2]}} : {}",
            ty(e, &[1, d0, d1])
        )],
    )
}

fn gen_broadcast_unit(e: &str, [d0, d1, ..]: [usize; 4], _: &mut Rng) -> String {
    func(
        &[("x", ty(e, &[d0, d1]))],
        &[("r", ty(e, &[1, 1, d0, d1]))],
        &[format!(
            "%r = broadcast(%x) {{shape=[1, 1, {d0}, {d1}]}} : {}",
            ty(e, &[1, 1, d0, d1])
        )],
    )
}

fn gen_slice_concat(e: &str, [d0, d1, d2, _]: [usize; 4], _: &mut Rng) -> String {
    let half = d1.div_ceil(2);
    func(
        &[("x", ty(e, &[d0, d1])), ("y", ty(e, &[d0, d2]))],
        &[("r", ty(e, &[d0, d2])), ("r2", ty(e, &[d0, half]))],
        &[
            format!("%c = concat(%x, %y) {{axis=1}} : {}", ty(e, &[d0, d1 + d2])),
            format!(
                "%r = slice(%c) {{start=[0, {d1}], limit=[{d0}, {}], stride=[1, 1]}} : {}",
                d1 + d2,
                ty(e, &[d0, d2])
            ),
            format!(
                "%r2 = slice(%c) {{start=[0, 0], limit=[{d0}, {d1}], stride=[1, 2]}} : {}",
                ty(e, &[d0, half])
            ),
        ],
    )
}

/// `x op1 c1` then `op2 c2` (constants of shapes `[d0, 1]` and `[]`); `flip` puts the constants
/// first where the op allows it.
fn gen_const_chain(
    e: &str,
    d0: usize,
    d1: usize,
    ops: [&str; 2],
    flip: bool,
    rng: &mut Rng,
) -> String {
    let t = ty(e, &[d0, d1]);
    let c1 = constant("c1", e, &[d0, 1], || scale_of(e, rng));
    let c2 = constant("c2", e, &[], || scale_of(e, rng));
    let (a1, a2) = if flip {
        ("%c1, %x", "%c2, %a")
    } else {
        ("%x, %c1", "%a, %c2")
    };
    func(
        &[("x", t.clone())],
        &[("r", t.clone())],
        &[
            c1,
            c2,
            format!("%a = {}({a1}) : {t}", ops[0]),
            format!("%r = {}({a2}) : {t}", ops[1]),
        ],
    )
}

fn gen_mul_assoc(e: &str, [d0, d1, f, _]: [usize; 4], rng: &mut Rng) -> String {
    gen_const_chain(e, d0, d1, ["mul", "mul"], f % 2 == 0, rng)
}

fn gen_add_assoc(e: &str, [d0, d1, f, _]: [usize; 4], rng: &mut Rng) -> String {
    let first = if f % 2 == 0 { "add" } else { "sub" };
    gen_const_chain(e, d0, d1, [first, "add"], false, rng)
}

fn gen_sub_assoc(e: &str, [d0, d1, f, _]: [usize; 4], rng: &mut Rng) -> String {
    let first = if f % 2 == 0 { "add" } else { "sub" };
    gen_const_chain(e, d0, d1, [first, "sub"], false, rng)
}

fn gen_div_assoc(e: &str, [d0, d1, f, _]: [usize; 4], rng: &mut Rng) -> String {
    let first = if f % 2 == 0 { "div" } else { "mul" };
    gen_const_chain(e, d0, d1, [first, "div"], false, rng)
}

fn gen_div_recip(e: &str, [d0, d1, ..]: [usize; 4], rng: &mut Rng) -> String {
    let t = ty(e, &[d0, d1]);
    func(
        &[("x", t.clone())],
        &[("r", t.clone())],
        &[
            constant("c", e, &[d1], || rng.scale()),
            format!("%r = div(%x, %c) : {t}"),
        ],
    )
}

/// `(x op c1) * c2 + c3`.
fn gen_dist(op: &str, e: &str, [d0, d1, ..]: [usize; 4], rng: &mut Rng) -> String {
    let t = ty(e, &[d0, d1]);
    func(
        &[("x", t.clone())],
        &[("r", t.clone())],
        &[
            constant("c1", e, &[d0, 1], || scale_of(e, rng)),
            constant("c2", e, &[d0, 1], || scale_of(e, rng)),
            constant("c3", e, &[], || scale_of(e, rng)),
            format!("%a = {op}(%x, %c1) : {t}"),
            format!("%m = mul(%a, %c2) : {t}"),
            format!("%r = add(%m, %c3) : {t}"),
        ],
    )
}

fn gen_mul_add_dist(e: &str, d: [usize; 4], rng: &mut Rng) -> String {
    gen_dist("add", e, d, rng)
}

fn gen_mul_sub_dist(e: &str, d: [usize; 4], rng: &mut Rng) -> String {
    gen_dist("sub", e, d, rng)
}

/// `conv(x, W) * c`, `c` per output channel (`[O, 1, 1]`) or a scalar.
fn gen_conv_mul(e: &str, [n, c, o, s]: [usize; 4], rng: &mut Rng) -> String {
    let (h, w) = (s + 2, s + 1);
    let out = ty(e, &[n, o, h, w]);
    let cshape: &[usize] = if n % 2 == 0 { &[] } else { &[o, 1, 1] };
    func(
        &[("x", ty(e, &[n, c, h, w]))],
        &[("r", out.clone())],
        &[
            constant("w", e, &[o, c, 3, 3], || rng.uniform(-1.0, 1.0)),
            constant("k", e, cshape, || rng.scale()),
            format!(
                "%v = conv(%x, %w) {{stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : {out}"
            ),
            format!("%r = mul(%v, %k) : {out}"),
        ],
    )
}

/// `dot(x, W) * c` with `c` per output column (`[n]`), and `s * dot(x, W2)` with a scalar `s`.
fn gen_dot_mul(e: &str, [m, k, n, _]: [usize; 4], rng: &mut Rng) -> String {
    let out = ty(e, &[m, n]);
    func(
        &[("x", ty(e, &[m, k]))],
        &[("r", out.clone()), ("r2", out.clone())],
        &[
            constant("w", e, &[k, n], || rng.uniform(-1.0, 1.0)),
            constant("w2", e, &[n, k], || rng.uniform(-1.0, 1.0)),
            constant("c", e, &[n], || rng.scale()),
            constant("s", e, &[], || rng.scale()),
            format!("%v = dot_general(%x, %w) {{{DOT}}} : {out}"),
            format!("%r = mul(%v, %c) : {out}"),
            format!(
                "%v2 = dot_general(%x, %w2) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[1]}} : {out}"
            ),
            format!("%r2 = mul(%s, %v2) : {out}"),
        ],
    )
}

/// Two (or three) matmuls sharing `x` (wide enough that reading it once pays: more so when a
/// weight is an input, as the concatenation then runs).
fn gen_dot_merge(e: &str, [m, n1, n2, three]: [usize; 4], rng: &mut Rng) -> String {
    let (m, k) = if n2 % 2 == 0 { (32, 64) } else { (m, 16) };
    let mut params = vec![("x", ty(e, &[m, k]))];
    let mut results = vec![("r1", ty(e, &[m, n1])), ("r2", ty(e, &[m, n2]))];
    let mut body = vec![
        constant("w1", e, &[k, n1], || rng.uniform(-1.0, 1.0)),
        format!("%r1 = dot_general(%x, %w1) {{{DOT}}} : {}", ty(e, &[m, n1])),
        format!("%r2 = dot_general(%x, %w2) {{{DOT}}} : {}", ty(e, &[m, n2])),
    ];
    // The second weight is an input here, a constant there.
    if n2 % 2 == 0 {
        params.push(("w2", ty(e, &[k, n2])));
    } else {
        body.insert(0, constant("w2", e, &[k, n2], || rng.uniform(-1.0, 1.0)));
    }
    if three % 2 == 0 {
        body.insert(0, constant("w3", e, &[k, 1], || rng.uniform(-1.0, 1.0)));
        body.push(format!(
            "%r3 = dot_general(%x, %w3) {{{DOT}}} : {}",
            ty(e, &[m, 1])
        ));
        results.push(("r3", ty(e, &[m, 1])));
    }
    func(&params, &results, &body)
}

/// Two convs sharing `x`.
fn gen_conv_merge(e: &str, [n, o1, o2, s]: [usize; 4], rng: &mut Rng) -> String {
    let (c, h) = (8, s + 3);
    let conv = |w: &str, o: usize| {
        format!(
            "%r{w} = conv(%x, %w{w}) {{stride=[1, 1], pad_low=[0, 0], pad_high=[0, 0], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : {}",
            ty(e, &[n, o, h - 2, h - 2])
        )
    };
    func(
        &[("x", ty(e, &[n, c, h, h]))],
        &[
            ("r1", ty(e, &[n, o1, h - 2, h - 2])),
            ("r2", ty(e, &[n, o2, h - 2, h - 2])),
        ],
        &[
            constant("w1", e, &[o1, c, 3, 3], || rng.uniform(-1.0, 1.0)),
            constant("w2", e, &[o2, c, 3, 3], || rng.uniform(-1.0, 1.0)),
            conv("1", o1),
            conv("2", o2),
        ],
    )
}

const EXACT_F: &[&str] = &["f32", "f16", "f64"];
const ARITH: &[&str] = &["f32", "i32", "bf16"];
const ORDER: &[&str] = &["f32", "i32", "f16"];
const INEXACT: &[&str] = &["f32", "f64", "f16"];
const CONTRACT: &[&str] = &["f32", "f64"];

const GENS: &[Gen] = &[
    g(
        "dot-transpose-lhs",
        &[],
        &["f32", "i32", "f64"],
        gen_dot_transpose_lhs,
    ),
    g(
        "dot-transpose-rhs",
        &[],
        &["f32", "i32", "f64"],
        gen_dot_transpose_rhs,
    ),
    g("add-broadcast", &[], ARITH, gen_add_b),
    g("sub-broadcast", &[], ARITH, gen_sub_b),
    g("mul-broadcast", &[], ARITH, gen_mul_b),
    g("div-broadcast", &[], &["f32", "i32", "f64"], gen_div_b),
    g("max-broadcast", &[], ORDER, gen_max_b),
    g("min-broadcast", &[], ORDER, gen_min_b),
    g("exp-broadcast", &[], EXACT_F, gen_exp_b),
    g("log-broadcast", &[], EXACT_F, gen_log_b),
    g("sqrt-broadcast", &[], EXACT_F, gen_sqrt_b),
    g("rsqrt-broadcast", &[], EXACT_F, gen_rsqrt_b),
    g("tanh-broadcast", &[], EXACT_F, gen_tanh_b),
    g("logistic-broadcast", &[], EXACT_F, gen_logistic_b),
    g("erf-broadcast", &[], EXACT_F, gen_erf_b),
    g(
        "transpose-unary",
        &["transpose-transpose"],
        ORDER,
        gen_transpose_unary,
    ),
    g(
        "transpose-unary",
        &[],
        &["f32", "i32", "f16"],
        gen_transpose_convert,
    ),
    g(
        "reshape-unary",
        &["reshape-reshape", "reshape-same"],
        ORDER,
        gen_reshape_unary,
    ),
    g("transpose-unit-reshape", &[], ORDER, gen_transpose_unit),
    g("broadcast-unit-reshape", &[], ORDER, gen_broadcast_unit),
    g("slice-concat", &["slice-full"], ORDER, gen_slice_concat),
    g(
        "mul-const-assoc",
        &[],
        &["f32", "f64", "i32"],
        gen_mul_assoc,
    ),
    g(
        "add-const-assoc",
        &[],
        &["f32", "f64", "i32"],
        gen_add_assoc,
    ),
    g(
        "sub-const-assoc",
        &[],
        &["f32", "f64", "i32"],
        gen_sub_assoc,
    ),
    g("div-const-assoc", &[], INEXACT, gen_div_assoc),
    g("div-const-recip", &[], INEXACT, gen_div_recip),
    g(
        "mul-add-const-dist",
        &["add-const-assoc"],
        INEXACT,
        gen_mul_add_dist,
    ),
    g(
        "mul-sub-const-dist",
        &["add-const-assoc"],
        INEXACT,
        gen_mul_sub_dist,
    ),
    g("conv-mul-const", &[], CONTRACT, gen_conv_mul),
    g("dot-mul-const", &[], CONTRACT, gen_dot_mul),
    g("dot-merge", &[], &["f32", "i32", "f64"], gen_dot_merge),
    g("conv-merge", &[], &["f32", "f64"], gen_conv_merge),
];

/// The target the merge templates are extracted for: no kernel overhead, so that reading the
/// shared input once pays even on these small shapes.
fn merge_target() -> Target {
    Target {
        kernel_overhead: 0.0,
        view_overhead: 0.0,
        ..Target::default()
    }
}

fn check_gen(t: &Gen, dtype: usize, dims: [usize; 4], seed: u64) {
    let e = t.dtypes[dtype % t.dtypes.len()];
    let src = (t.make)(e, dims, &mut Rng(seed ^ 0x9e37_79b9));
    let names: Vec<&str> = std::iter::once(t.rule)
        .chain(t.also.iter().copied())
        .collect();
    let mut pass = Eqsat::with_rules(&names);
    if t.rule.ends_with("-merge") {
        pass.target = merge_target();
        pass.extraction = Extraction::Exact(ExactBudget::default());
    }
    check_source(pass, t.rule, &src, seed, false);
}

/// The rule tables tested here (composite recognition has its own tests).
const TESTED: &[&[RuleDef]] = &[rules::RULES, algebra::RULES, folding::RULES, merge::RULES];

#[test]
fn every_rule_has_a_template() {
    for r in TESTED.iter().flat_map(|t| t.iter()) {
        assert!(
            TEMPLATES.iter().any(|t| t.rule == r.name) || GENS.iter().any(|t| t.rule == r.name),
            "no template for `{}`",
            r.name
        );
    }
    let mut names: Vec<&str> = all_rules().map(|r| r.name).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "rule names are unique");
    assert!(TESTED.iter().map(|t| t.len()).sum::<usize>() >= 90);
}

#[test]
fn exact_pass_runs_only_exact_rules() {
    // `x / 3` becomes `x * (1/3)` under `eqsat` only.
    let src = "func @main(%x: f32[4]) -> (r: f32[4]) {\n  \
               %c = constant() {value=dense<f32[]>[3]} : f32[]\n  \
               %r = div(%x, %c) : f32[4]\n  return %r\n}\n";
    let mut f = parse_function(src).unwrap();
    let report = Eqsat::exact().run_with_report(&mut f).unwrap().unwrap();
    assert!(report.applied.is_empty(), "{report}");
    let report = Eqsat::default().run_with_report(&mut f).unwrap().unwrap();
    assert!(
        report.applied.iter().any(|(n, _)| n == "div-const-recip"),
        "{report}"
    );
    assert!(f.to_string().contains("mul(%x"), "{f}");
}

/// The cycle filter: `w2` computed from the first matmul's result is never merged with it.
#[test]
fn merge_refuses_dependent_operands() {
    let src = "func @main(%x: f32[4,4], %w1: f32[4,4]) -> (r: f32[4,4]) {\n  \
               %y1 = dot_general(%x, %w1) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[4,4]\n  \
               %w2 = neg(%y1) : f32[4,4]\n  \
               %r = dot_general(%x, %w2) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[4,4]\n  \
               return %r\n}\n";
    let mut f = parse_function(src).unwrap();
    let mut pass = Eqsat::with_rules(&["dot-merge"]);
    pass.extraction = Extraction::Exact(ExactBudget::default());
    let report = pass.run_with_report(&mut f).unwrap().unwrap();
    assert!(report.applied.is_empty(), "{report}");
    // Independent weights do merge.
    let src = src.replace("%w2 = neg(%y1)", "%w2 = neg(%w1)");
    let mut f = parse_function(&src).unwrap();
    let report = pass.run_with_report(&mut f).unwrap().unwrap();
    assert!(
        report.applied.iter().any(|(n, _)| n == "dot-merge"),
        "{report}"
    );
}

/// Exact extraction finds the merge that greedy (tree cost, counting the merged matmul once per
/// use) cannot see, and is strictly cheaper on the DAG cost.
#[test]
fn exact_extraction_helps_on_shared_nodes() {
    let src = gen_dot_merge("f32", [4, 2, 3, 1], &mut Rng(7));
    let run = |extraction| {
        let mut f = parse_function(&src).unwrap();
        let pass = Eqsat {
            extraction,
            target: merge_target(),
            ..Eqsat::with_rules(&["dot-merge"])
        };
        let report = pass.run_with_report(&mut f).unwrap().unwrap();
        (report.cost.unwrap(), f.to_string())
    };
    let (greedy, gf) = run(Extraction::Greedy);
    let (exact, ef) = run(Extraction::Exact(ExactBudget::default()));
    assert!(exact < greedy, "exact {exact} vs greedy {greedy}");
    assert!(!gf.contains("concat"), "{gf}");
    assert!(ef.contains("concat") && ef.contains("slice"), "{ef}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rules_keep_results(dtype in 0usize..8, d0 in 1usize..4, d1 in 1usize..5, seed in any::<u64>()) {
        for t in TEMPLATES {
            check(t, dtype, d0, d1, seed);
        }
    }

    #[test]
    fn generated_rules_keep_results(
        dtype in 0usize..8,
        dims in proptest::array::uniform4(1usize..5),
        seed in any::<u64>(),
    ) {
        for t in GENS {
            check_gen(t, dtype, dims, seed);
        }
    }

    /// Exact extraction is never worse than greedy on the DAG cost (every rule, every template).
    #[test]
    fn exact_extraction_never_worse(
        dtype in 0usize..8,
        dims in proptest::array::uniform4(1usize..5),
        seed in any::<u64>(),
    ) {
        for t in GENS {
            let e = t.dtypes[dtype % t.dtypes.len()];
            let src = (t.make)(e, dims, &mut Rng(seed));
            let cost = |extraction| {
                let mut f = parse_function(&src).unwrap();
                let pass = Eqsat { extraction, ..Eqsat::default() };
                pass.run_with_report(&mut f).unwrap().and_then(|r| r.cost)
            };
            let greedy = cost(Extraction::Greedy);
            let exact = cost(Extraction::Exact(ExactBudget::default()));
            if let (Some(g), Some(x)) = (greedy, exact) {
                prop_assert!(x <= g * (1.0 + 1e-12), "{}: exact {} > greedy {}\n{}", t.rule, x, g, src);
            }
        }
    }
}
