//! Every eqsat rule, alone, on small functions built from its left side: random shapes, element
//! types and values (`-0.0`, NaN, inf, integer extremes). The interpreter's results must be
//! bitwise equal before and after `eqsat` restricted to that rule, and the rule must change the
//! function.

use proptest::prelude::*;
use terafab_ir::interp::run_function;
use terafab_ir::parse::parse_function;
use terafab_ir::{DType, Tensor};
use terafab_passes::eqsat::Eqsat;
use terafab_passes::eqsat::rules::RULES;

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

fn check(t: &Template, dtype: usize, d0: usize, d1: usize, seed: u64) {
    let e = t.dtypes[dtype % t.dtypes.len()];
    let src = source(t, e, d0, d1);
    let mut f = parse_function(&src).unwrap_or_else(|err| panic!("{}: {err}\n{src}", t.rule));
    let before = f.clone();
    let report = Eqsat::with_rules(&[t.rule])
        .run_with_report(&mut f)
        .unwrap()
        .expect("translated");
    terafab_ir::verify::verify_function(&f).unwrap();
    // Commutativity fires without changing the extracted graph; the others change it.
    let fired = report.applied.iter().any(|(n, k)| n == t.rule && *k > 0);
    assert!(fired, "{} did not fire on\n{src}", t.rule);
    assert!(
        t.rule.ends_with("-comm") || f != before,
        "{} changed nothing on\n{src}",
        t.rule
    );
    let mut state = seed;
    let mut input = |ty: &terafab_ir::TensorType| {
        let pool = if ty.dtype.is_float() { FLOATS } else { INTS };
        let dims = ty.shape.as_static().unwrap();
        let picks: Vec<f64> = (0..dims.iter().product::<usize>())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                pool[(state >> 33) as usize % pool.len()]
            })
            .collect();
        Tensor::from_fn(ty.dtype, &dims, |i| picks[i]).unwrap()
    };
    let inputs: Vec<Tensor> = before
        .inputs()
        .iter()
        .map(|&v| input(before.values.ty(v)))
        .collect();
    let want = run_function(&before, &inputs).unwrap();
    let got = run_function(&f, &inputs).unwrap();
    assert_eq!(
        want.iter().map(bits).collect::<Vec<_>>(),
        got.iter().map(bits).collect::<Vec<_>>(),
        "{}: results differ on\n{src}\nafter:\n{f}",
        t.rule
    );
}

#[test]
fn every_rule_has_a_template() {
    for r in RULES {
        assert!(
            TEMPLATES.iter().any(|t| t.rule == r.name),
            "no template for `{}`",
            r.name
        );
    }
    assert!(RULES.len() >= 25);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn rules_keep_results(dtype in 0usize..8, d0 in 1usize..4, d1 in 1usize..5, seed in any::<u64>()) {
        for t in TEMPLATES {
            check(t, dtype, d0, d1, seed);
        }
    }
}
