//! The composite recognition rules of `eqsat` (`terafab_passes::eqsat::composite`).
//!
//! - Every rule, run alone (with `softmax` for `attention`, which matches a recognized softmax),
//!   on functions written the way the rule's subgraph appears in models, for random shapes,
//!   element types and values: the rule must replace the subgraph by its composite, and the
//!   interpreter's results must stay bitwise equal for exact rules, and within the rule's
//!   tolerance otherwise (`|new - old| <= rtol * max(1, max |old|)` per result tensor, the
//!   definition of `Accuracy::Inexact`). The inexact forms differ from the composites'
//!   decompositions by f32 re-association (a division for a multiplication by the reciprocal,
//!   `sqrt` and a division for `rsqrt`, `pow(x, 2)` for `x * x`, swapped operands) and by
//!   constants rounded from their exact values: each a few roundings of about `6e-8` relative,
//!   propagated through functions whose condition number is small for the inputs used here
//!   (values in `[-3, 3]`; attention scores from values in `[-1, 1]`), so `1e-5` holds with a
//!   wide margin and would still catch a wrong constant or axis (errors of order 1).
//! - Every composite, evaluated by the interpreter, against its decomposition built as a plain
//!   function: bitwise equal.
//! - On `testsuite/models/transformer_block.onnx`, `eqsat` finds both layer-norms, the GELU, the
//!   softmax and the attention, and the result still matches onnx's reference output.

use std::path::Path;

use proptest::prelude::*;
use terafab_ir::composite::{CompositeOp, GeluApprox, Operand};
use terafab_ir::interp::{Bindings, eval_op, run_function};
use terafab_ir::parse::parse_function;
use terafab_ir::print::print_function;
use terafab_ir::{DType, Function, Op, Tensor, TensorType};
use terafab_passes::Pass;
use terafab_passes::eqsat::Eqsat;
use terafab_passes::eqsat::composite::RULES;
use terafab_passes::eqsat::rules::Accuracy;

/// A test case: element type and shape (the last axis is the normalized one).
struct Case {
    e: &'static str,
    dims: Vec<usize>,
}

impl Case {
    /// `E[dims]`.
    fn ty(&self) -> String {
        ty(self.e, &self.dims)
    }

    /// The type with the last dim reduced to 1.
    fn red(&self) -> String {
        let mut d = self.dims.clone();
        if let Some(l) = d.last_mut() {
            *l = 1;
        }
        ty(self.e, &d)
    }

    fn last(&self) -> usize {
        self.dims.len() - 1
    }

    fn n(&self) -> usize {
        *self.dims.last().unwrap()
    }

    /// A scalar constant `%name` holding `v` rounded to the element type.
    fn k(&self, name: &str, v: f64) -> String {
        let d: DType = self.e.parse().unwrap();
        let r = Tensor::from_fn(d, &[], |_| v).unwrap().to_f64_vec()[0];
        format!(
            "%{name} = constant() {{value=dense<{}[]>[{r:?}]}} : {}[]",
            self.e, self.e
        )
    }
}

fn ty(e: &str, dims: &[usize]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("{e}[{}]", d.join(","))
}

/// A rule's test: the rule, the element types and the function body (returning `%r`).
struct Template {
    rule: &'static str,
    /// The rules run (the tested one and those it builds on).
    rules: &'static [&'static str],
    /// The composite the rule must produce.
    produces: &'static str,
    dtypes: &'static [&'static str],
    body: fn(&Case) -> String,
}

const ALL_FLOATS: &[&str] = &["f32", "f64", "f16", "bf16"];
/// Inexact rules are tested on f32 and f64 (the tolerance is stated for f32).
const WIDE: &[&str] = &["f32", "f64"];

fn softmax_body(c: &Case, log: bool) -> String {
    let (t, r, a) = (c.ty(), c.red(), c.last());
    let tail = if log {
        format!("%l = log(%s) : {r}\n  %r = sub(%d, %l) : {t}")
    } else {
        format!("%r = div(%e, %s) : {t}")
    };
    format!(
        "%m = reduce_max(%x) {{axes=[{a}], keep_dims=true}} : {r}
  %d = sub(%x, %m) : {t}
  %e = exp(%d) : {t}
  %s = reduce_sum(%e) {{axes=[{a}], keep_dims=true}} : {r}
  {tail}"
    )
}

/// `%mean = mean of %src` over the last axis: `sum / n` or (with `recip`) `(1/n) * sum`.
fn mean(c: &Case, src: &str, out: &str, recip: bool) -> String {
    let (r, a, n) = (c.red(), c.last(), c.n());
    if recip {
        format!(
            "%{out}_s = reduce_sum(%{src}) {{axes=[{a}], keep_dims=true}} : {r}
  {}
  %{out} = mul(%{out}_n, %{out}_s) : {r}",
            c.k(&format!("{out}_n"), 1.0 / n as f64)
        )
    } else {
        format!(
            "%{out}_s = reduce_sum(%{src}) {{axes=[{a}], keep_dims=true}} : {r}
  {}
  %{out} = div(%{out}_s, %{out}_n) : {r}",
            c.k(&format!("{out}_n"), n as f64)
        )
    }
}

/// Layer-norm forms: the frontend's (exact), with `(1/n) * sum` means, `pow(d, 2)` and
/// `eps + var` (rsqrt), and PyTorch's export (`/ sqrt`).
fn layer_norm_body(c: &Case, form: u8) -> String {
    let (t, r) = (c.ty(), c.red());
    let alt = form != 0;
    let sq = if alt {
        format!("{}\n  %sq = pow(%d, %two) : {t}", c.k("two", 2.0))
    } else {
        format!("%sq = mul(%d, %d) : {t}")
    };
    let add = if form == 1 {
        format!("%ve = add(%eps, %var) : {r}")
    } else {
        format!("%ve = add(%var, %eps) : {r}")
    };
    let norm = match form {
        2 => format!("%sd = sqrt(%ve) : {r}\n  %r = div(%d, %sd) : {t}"),
        _ => format!("%is = rsqrt(%ve) : {r}\n  %r = mul(%d, %is) : {t}"),
    };
    format!(
        "{}
  %d = sub(%x, %mu) : {t}
  {sq}
  {}
  {}
  {add}
  {norm}",
        mean(c, "x", "mu", form == 1),
        mean(c, "sq", "var", form == 1),
        c.k("eps", 1e-5),
    )
}

/// RMS-norm forms: the frontend's (exact), `rsqrt(..) * x` with `pow` and `(1/n) * sum`,
/// `x / sqrt(..)`, and `x * (1 / sqrt(..))`.
fn rms_norm_body(c: &Case, form: u8) -> String {
    let (t, r) = (c.ty(), c.red());
    let sq = if form == 0 {
        format!("%sq = mul(%x, %x) : {t}")
    } else {
        format!("{}\n  %sq = pow(%x, %two) : {t}", c.k("two", 2.0))
    };
    let norm = match form {
        0 => format!("%is = rsqrt(%ve) : {r}\n  %r = mul(%x, %is) : {t}"),
        1 => format!("%is = rsqrt(%ve) : {r}\n  %r = mul(%is, %x) : {t}"),
        2 => format!("%sd = sqrt(%ve) : {r}\n  %r = div(%x, %sd) : {t}"),
        _ => format!(
            "%sd = sqrt(%ve) : {r}\n  {}\n  %inv = div(%one, %sd) : {r}\n  %r = mul(%x, %inv) : {t}",
            c.k("one", 1.0)
        ),
    };
    format!(
        "{sq}
  {}
  {}
  %ve = add(%ms, %eps) : {r}
  {norm}",
        mean(c, "sq", "ms", form == 1),
        c.k("eps", 1e-6),
    )
}

/// `%inner` = erf or tanh part of a GELU of `%x`, in the frontend's form (`exact`) or the
/// exporters' (`x / sqrt 2`; `0.044715 * pow(x, 3)`, constants rounded to f32).
fn gelu_inner(c: &Case, tanh: bool, exact: bool) -> String {
    let t = c.ty();
    match (tanh, exact) {
        (false, true) => format!(
            "{}\n  %s = mul(%x, %c) : {t}\n  %inner = erf(%s) : {t}",
            c.k("c", std::f64::consts::FRAC_1_SQRT_2)
        ),
        (false, false) => format!(
            "{}\n  %s = div(%x, %c) : {t}\n  %inner = erf(%s) : {t}",
            c.k("c", f64::from(std::f32::consts::SQRT_2))
        ),
        (true, true) => format!(
            "%x2 = mul(%x, %x) : {t}
  %x3 = mul(%x2, %x) : {t}
  {}
  %cx3 = mul(%x3, %c3) : {t}
  %u = add(%x, %cx3) : {t}
  {}
  %s = mul(%u, %c) : {t}
  %inner = tanh(%s) : {t}",
            c.k("c3", 0.044715),
            c.k("c", (2.0 / std::f64::consts::PI).sqrt())
        ),
        (true, false) => format!(
            "{}
  %x3 = pow(%x, %three) : {t}
  {}
  %cx3 = mul(%c3, %x3) : {t}
  %u = add(%cx3, %x) : {t}
  {}
  %s = mul(%c, %u) : {t}
  %inner = tanh(%s) : {t}",
            c.k("three", 3.0),
            c.k("c3", 0.044715),
            c.k("c", f64::from(0.797_884_6_f32))
        ),
    }
}

/// GELU forms: 0 the frontend's, 1 `(0.5 * x) * (1 + inner)`, 2 `(x * (inner + 1)) * 0.5`,
/// 3 `x * (0.5 * (1 + inner))`.
fn gelu_body(c: &Case, tanh: bool, form: u8) -> String {
    let t = c.ty();
    let inner = gelu_inner(c, tanh, form == 0);
    let outer = match form {
        0 => format!(
            "%op = add(%inner, %one) : {t}\n  %hx = mul(%x, %half) : {t}\n  %r = mul(%hx, %op) : {t}"
        ),
        1 => format!(
            "%op = add(%one, %inner) : {t}\n  %hx = mul(%half, %x) : {t}\n  %r = mul(%hx, %op) : {t}"
        ),
        2 => format!(
            "%op = add(%inner, %one) : {t}\n  %xo = mul(%x, %op) : {t}\n  %r = mul(%xo, %half) : {t}"
        ),
        _ => format!(
            "%op = add(%one, %inner) : {t}\n  %ho = mul(%half, %op) : {t}\n  %r = mul(%x, %ho) : {t}"
        ),
    };
    format!(
        "{inner}\n  {}\n  {}\n  {outer}",
        c.k("one", 1.0),
        c.k("half", 0.5)
    )
}

/// Attention over `%x` as `[B..., L, D]` used for q, k and v alike: 0 as transformer_block
/// writes it (k transposed beforehand, scores divided by a constant), 1 with `k` contracted on
/// its last dim, scores times a constant plus a mask `%y`.
fn attention_body(c: &Case, form: u8) -> String {
    let r = c.dims.len();
    let l = c.dims[r - 2];
    let batch: Vec<String> = (0..r - 2).map(|i| i.to_string()).collect();
    let batch = batch.join(", ");
    let mut sd = c.dims.clone();
    sd[r - 1] = l;
    let (t, st) = (c.ty(), ty(c.e, &sd));
    let mut rd = sd.clone();
    rd[r - 1] = 1;
    let rt = ty(c.e, &rd);
    let scores = if form == 0 {
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        let perm: Vec<String> = perm.iter().map(|p| p.to_string()).collect();
        let mut kd = c.dims.clone();
        kd.swap(r - 2, r - 1);
        format!(
            "%kt = transpose(%x) {{perm=[{}]}} : {kt}
  %qk = dot_general(%x, %kt) {{lhs_batch=[{batch}], rhs_batch=[{batch}], lhs_contract=[{}], rhs_contract=[{}]}} : {st}
  {}
  %sc = div(%qk, %c) : {st}",
            perm.join(", "),
            r - 1,
            r - 2,
            c.k("c", 2.0),
            kt = ty(c.e, &kd),
        )
    } else {
        format!(
            "%qk = dot_general(%x, %x) {{lhs_batch=[{batch}], rhs_batch=[{batch}], lhs_contract=[{}], rhs_contract=[{}]}} : {st}
  {}
  %qs = mul(%c, %qk) : {st}
  %sc = add(%qs, %mask) : {st}",
            r - 1,
            r - 1,
            c.k("c", 0.35),
        )
    };
    format!(
        "{scores}
  %m = reduce_max(%sc) {{axes=[{a}], keep_dims=true}} : {rt}
  %d = sub(%sc, %m) : {st}
  %e = exp(%d) : {st}
  %s = reduce_sum(%e) {{axes=[{a}], keep_dims=true}} : {rt}
  %p = div(%e, %s) : {st}
  %r = dot_general(%p, %x) {{lhs_batch=[{batch}], rhs_batch=[{batch}], lhs_contract=[{a}], rhs_contract=[{b}]}} : {t}",
        a = r - 1,
        b = r - 2,
    )
}

const fn t(
    rule: &'static str,
    rules: &'static [&'static str],
    produces: &'static str,
    dtypes: &'static [&'static str],
    body: fn(&Case) -> String,
) -> Template {
    Template {
        rule,
        rules,
        produces,
        dtypes,
        body,
    }
}

const TEMPLATES: &[Template] = &[
    t("softmax", &["softmax"], "softmax", ALL_FLOATS, |c| {
        softmax_body(c, false)
    }),
    t(
        "log-softmax",
        &["log-softmax"],
        "log_softmax",
        ALL_FLOATS,
        |c| softmax_body(c, true),
    ),
    t(
        "layer-norm",
        &["layer-norm"],
        "layer_norm",
        ALL_FLOATS,
        |c| layer_norm_body(c, 0),
    ),
    t(
        "layer-norm-rsqrt",
        &["layer-norm-rsqrt"],
        "layer_norm",
        WIDE,
        |c| layer_norm_body(c, 1),
    ),
    t(
        "layer-norm-div-sqrt",
        &["layer-norm-div-sqrt"],
        "layer_norm",
        WIDE,
        |c| layer_norm_body(c, 2),
    ),
    t("rms-norm", &["rms-norm"], "rms_norm", ALL_FLOATS, |c| {
        rms_norm_body(c, 0)
    }),
    t(
        "rms-norm-rsqrt",
        &["rms-norm-rsqrt"],
        "rms_norm",
        WIDE,
        |c| rms_norm_body(c, 1),
    ),
    t(
        "rms-norm-div-sqrt",
        &["rms-norm-div-sqrt"],
        "rms_norm",
        WIDE,
        |c| rms_norm_body(c, 2),
    ),
    t(
        "rms-norm-recip-sqrt",
        &["rms-norm-recip-sqrt"],
        "rms_norm",
        WIDE,
        |c| rms_norm_body(c, 3),
    ),
    t("gelu-erf", &["gelu-erf"], "gelu", ALL_FLOATS, |c| {
        gelu_body(c, false, 0)
    }),
    t(
        "gelu-erf-half-first",
        &["gelu-erf-half-first"],
        "gelu",
        WIDE,
        |c| gelu_body(c, false, 1),
    ),
    t(
        "gelu-erf-half-last",
        &["gelu-erf-half-last"],
        "gelu",
        WIDE,
        |c| gelu_body(c, false, 2),
    ),
    t(
        "gelu-erf-half-inner",
        &["gelu-erf-half-inner"],
        "gelu",
        WIDE,
        |c| gelu_body(c, false, 3),
    ),
    t("gelu-tanh", &["gelu-tanh"], "gelu", ALL_FLOATS, |c| {
        gelu_body(c, true, 0)
    }),
    t(
        "gelu-tanh-half-first",
        &["gelu-tanh-half-first"],
        "gelu",
        WIDE,
        |c| gelu_body(c, true, 1),
    ),
    t(
        "gelu-tanh-half-last",
        &["gelu-tanh-half-last"],
        "gelu",
        WIDE,
        |c| gelu_body(c, true, 2),
    ),
    t(
        "gelu-tanh-half-inner",
        &["gelu-tanh-half-inner"],
        "gelu",
        WIDE,
        |c| gelu_body(c, true, 3),
    ),
    t("silu", &["silu"], "silu", ALL_FLOATS, |c| {
        let t = c.ty();
        format!("%l = logistic(%x) : {t}\n  %r = mul(%x, %l) : {t}")
    }),
    t("silu-swapped", &["silu-swapped"], "silu", ALL_FLOATS, |c| {
        let t = c.ty();
        format!("%l = logistic(%x) : {t}\n  %r = mul(%l, %x) : {t}")
    }),
    t(
        "attention",
        &["softmax", "attention"],
        "attention",
        WIDE,
        |c| attention_body(c, 0),
    ),
    t(
        "attention",
        &["softmax", "attention"],
        "attention",
        WIDE,
        |c| attention_body(c, 1),
    ),
];

/// The function of a template: `%x` of the case's type, `%mask` of the attention scores' type.
fn source(tpl: &Template, c: &Case) -> String {
    let t = c.ty();
    let r = c.dims.len();
    let mut md = c.dims.clone();
    md[r - 1] = c.dims[r - 2];
    let mask = if tpl.rule == "attention" {
        format!(", %mask: {}", ty(c.e, &md))
    } else {
        String::new()
    };
    format!(
        "func @f(%x: {t}{mask}) -> (r: {t}) {{\n  {}\n  return %r\n}}\n",
        (tpl.body)(c)
    )
}

/// Deterministic pseudo-random values in `[-amp, amp]` (splitmix64 of the seed, input and
/// element index).
fn inputs(f: &Function, seed: u64, amp: f64) -> Vec<Tensor> {
    f.inputs()
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let ty = f.values.ty(v);
            let dims = ty.shape.as_static().unwrap();
            Tensor::from_fn(ty.dtype, &dims, |i| {
                let mut z = seed
                    .wrapping_add((k as u64) << 32)
                    .wrapping_add(i as u64)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * amp
            })
            .unwrap()
        })
        .collect()
}

fn rtol_of(rule: &str) -> Option<f64> {
    let r = RULES.iter().find(|r| r.name == rule).unwrap();
    match r.accuracy {
        Accuracy::Exact => None,
        Accuracy::Inexact { rtol } => Some(rtol),
    }
}

/// Run one template on one case; panics with the programs on any failure.
fn check(tpl: &Template, c: &Case, seed: u64) {
    let src = source(tpl, c);
    let before = parse_function(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let mut after = before.clone();
    let changed = Eqsat::with_rules(tpl.rules).run(&mut after).unwrap();
    let text = print_function(&after);
    assert!(changed, "{}: nothing changed\n{src}", tpl.rule);
    assert!(
        text.contains(&format!(" = {}(", tpl.produces)),
        "{}: no {} in\n{text}\nfrom\n{src}",
        tpl.rule,
        tpl.produces
    );
    let amp = if tpl.rule == "attention" { 1.0 } else { 3.0 };
    let ins = inputs(&before, seed, amp);
    let want = run_function(&before, &ins).unwrap();
    let got = run_function(&after, &ins).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (w, g) in want.iter().zip(&got) {
        match rtol_of(tpl.rule) {
            None => assert!(
                w.bit_eq(g),
                "{}: not bitwise equal: {:?} vs {:?}\n{src}\n{text}",
                tpl.rule,
                w.to_f64_vec(),
                g.to_f64_vec()
            ),
            Some(rtol) => {
                let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
                let scale = w.iter().fold(1f64, |m, v| m.max(v.abs()));
                for (a, b) in w.iter().zip(&g) {
                    let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= rtol * scale;
                    assert!(ok, "{}: {a} vs {b} (rtol {rtol})\n{src}\n{text}", tpl.rule);
                }
            }
        }
    }
}

#[test]
fn every_rule_has_a_template() {
    for r in RULES {
        assert!(
            TEMPLATES.iter().any(|t| t.rule == r.name),
            "no template for rule `{}`",
            r.name
        );
    }
    assert!(RULES.len() >= 10);
}

/// A rule must not fire on a near miss: a softmax whose max and sum reduce different axes, a
/// layer-norm with a wrong count, a GELU with a wrong constant, a SiLU of two different values.
#[test]
fn near_misses_are_not_recognized() {
    let cases = [
        (
            "softmax",
            "func @f(%x: f32[2,3]) -> (r: f32[2,3]) {
  %m = reduce_max(%x) {axes=[0], keep_dims=true} : f32[1,3]
  %d = sub(%x, %m) : f32[2,3]
  %e = exp(%d) : f32[2,3]
  %s = reduce_sum(%e) {axes=[1], keep_dims=true} : f32[2,1]
  %r = div(%e, %s) : f32[2,3]
  return %r
}",
        ),
        (
            "rms-norm-div-sqrt",
            "func @f(%x: f32[2,3]) -> (r: f32[2,3]) {
  %sq = mul(%x, %x) : f32[2,3]
  %ss = reduce_sum(%sq) {axes=[1], keep_dims=true} : f32[2,1]
  %n = constant() {value=dense<f32[]>[4.0]} : f32[]
  %ms = div(%ss, %n) : f32[2,1]
  %eps = constant() {value=dense<f32[]>[1e-6]} : f32[]
  %ve = add(%ms, %eps) : f32[2,1]
  %sd = sqrt(%ve) : f32[2,1]
  %r = div(%x, %sd) : f32[2,3]
  return %r
}",
        ),
        (
            "gelu-erf-half-last",
            "func @f(%x: f32[4]) -> (r: f32[4]) {
  %c = constant() {value=dense<f32[]>[1.4142]} : f32[]
  %s = div(%x, %c) : f32[4]
  %inner = erf(%s) : f32[4]
  %one = constant() {value=dense<f32[]>[1.0]} : f32[]
  %op = add(%inner, %one) : f32[4]
  %xo = mul(%x, %op) : f32[4]
  %half = constant() {value=dense<f32[]>[0.5]} : f32[]
  %r = mul(%xo, %half) : f32[4]
  return %r
}",
        ),
        (
            "silu",
            "func @f(%x: f32[4], %y: f32[4]) -> (r: f32[4]) {
  %l = logistic(%y) : f32[4]
  %r = mul(%x, %l) : f32[4]
  return %r
}",
        ),
        (
            "silu",
            "func @f(%x: i32[4]) -> (r: i32[4]) {
  %r = mul(%x, %x) : i32[4]
  return %r
}",
        ),
    ];
    for (rule, src) in cases {
        let mut f = parse_function(src).unwrap();
        let before = print_function(&f);
        Eqsat::with_rules(&[rule]).run(&mut f).unwrap();
        assert_eq!(print_function(&f), before, "{rule} fired on\n{src}");
    }
}

/// The composite ops, with operand types for a shape `dims` (rank >= 2) of element type `d`.
fn composites(d: DType, dims: &[usize]) -> Vec<(CompositeOp, Vec<TensorType>)> {
    let x = TensorType::from_static(d, dims);
    let r = dims.len();
    let mut kd = dims.to_vec();
    kd[r - 2] += 1;
    let k = TensorType::from_static(d, &kd);
    let mut vd = kd.clone();
    vd[r - 1] = 2;
    let v = TensorType::from_static(d, &vd);
    let mut md = dims.to_vec();
    md[r - 1] = kd[r - 2];
    let mask = TensorType::from_static(d, &md[r - 2..]);
    let axes = vec![r - 1];
    vec![
        (CompositeOp::Softmax { axes: axes.clone() }, vec![x.clone()]),
        (
            CompositeOp::LogSoftmax {
                axes: vec![0, r - 1],
            },
            vec![x.clone()],
        ),
        (
            CompositeOp::LayerNorm {
                axes: axes.clone(),
                epsilon: 1e-5,
            },
            vec![x.clone()],
        ),
        (
            CompositeOp::RmsNorm {
                axes: (0..r).collect(),
                epsilon: 1e-6,
            },
            vec![x.clone()],
        ),
        (
            CompositeOp::Gelu {
                approximate: GeluApprox::None,
            },
            vec![x.clone()],
        ),
        (
            CompositeOp::Gelu {
                approximate: GeluApprox::Tanh,
            },
            vec![x.clone()],
        ),
        (CompositeOp::Silu, vec![x.clone()]),
        (
            CompositeOp::Attention { scale: 0.125 },
            vec![x.clone(), k.clone(), v.clone()],
        ),
        (CompositeOp::Attention { scale: 0.3 }, vec![x, k, v, mask]),
    ]
}

/// The decomposition of `c` as a function of its operands.
fn decomposition_function(c: &CompositeOp, tys: &[TensorType]) -> Function {
    let refs: Vec<&TensorType> = tys.iter().collect();
    let d = c.decompose(&refs).unwrap();
    let mut f = Function::new("decomposed");
    let params: Vec<_> = tys
        .iter()
        .enumerate()
        .map(|(i, t)| f.add_input(&format!("p{i}"), t.clone()))
        .collect();
    let mut vals = Vec::new();
    for (op, operands) in &d.nodes {
        let ins: Vec<_> = operands
            .iter()
            .map(|o| match *o {
                Operand::Input(i) => params[i],
                Operand::Node(i) => vals[i],
            })
            .collect();
        let in_tys: Vec<&TensorType> = ins.iter().map(|&v| f.values.ty(v)).collect();
        let out = terafab_ir::infer::infer(op, &in_tys).unwrap();
        let v = f.push(op.clone(), ins, out, &[], vec![], None);
        vals.push(v[0]);
    }
    f.add_output("r", *vals.last().unwrap());
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every rule on random shapes (rank 2 to 4), element types and values.
    #[test]
    fn rules_recognize_within_tolerance(
        which in 0usize..4,
        dims in proptest::collection::vec(1usize..5, 2..5),
        seed in any::<u64>(),
    ) {
        for tpl in TEMPLATES {
            let e = tpl.dtypes[which % tpl.dtypes.len()];
            check(tpl, &Case { e, dims: dims.clone() }, seed);
        }
    }

    /// Every composite evaluates bitwise like its decomposition run as a plain function.
    #[test]
    fn composites_equal_their_decomposition(
        which in 0usize..4,
        dims in proptest::collection::vec(1usize..5, 2..4),
        seed in any::<u64>(),
    ) {
        let d = [DType::F32, DType::F64, DType::F16, DType::BF16][which];
        for (c, tys) in composites(d, &dims) {
            let f = decomposition_function(&c, &tys);
            let ins = inputs(&f, seed, 4.0);
            let want = run_function(&f, &ins).unwrap();
            let got = eval_op(&Op::Composite(c.clone()), &ins, &Bindings::new()).unwrap();
            prop_assert!(want[0].bit_eq(&got[0]), "{c:?} on {dims:?} {d}");
        }
    }
}

/// `eqsat` on the transformer block finds its two layer-norms, the GELU and the attention (the
/// softmax inside it), and the optimized block still matches onnx's reference output.
#[test]
fn transformer_block_composites() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testsuite/models");
    let m = terafab_frontend::load_model(&dir.join("transformer_block.onnx")).unwrap();
    let mut f = m.functions.into_iter().next().unwrap();
    let input = terafab_ir::npy::read_npy(&dir.join("transformer_block_input.npy")).unwrap();
    let expected = terafab_ir::npy::read_npy(&dir.join("transformer_block_expected.npy")).unwrap();
    Eqsat::default().run(&mut f).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    f.walk(&mut |n| {
        if let Op::Composite(c) = &n.op {
            *counts.entry(c.name()).or_insert(0) += 1;
        }
    });
    let text = print_function(&f);
    assert_eq!(counts.get("layer_norm"), Some(&2), "{text}");
    assert_eq!(counts.get("gelu"), Some(&1), "{text}");
    assert_eq!(counts.get("attention"), Some(&1), "{text}");
    let got = run_function(&f, &[input]).unwrap();
    let (g, w) = (got[0].to_f64_vec(), expected.to_f64_vec());
    assert_eq!(g.len(), w.len());
    for (a, b) in g.iter().zip(&w) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
    }
}
