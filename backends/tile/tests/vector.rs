//! The vector lowering (`lower::vector`) against the reference interpreter: elementwise
//! chains, broadcasts, transposes, slices and concatenation, reductions over inner and outer
//! axes, softmax and layer norm, reshapes that divide a tile variable, bf16/CFP8 movement and
//! conversion, padded convolution (fill values), on odd shapes and the 1x1, 2x2 and 4x4
//! presets.
//!
//! Tolerance: elementwise f32 ops give the interpreter's result exactly (both round the
//! exact or f64-evaluated value once to f32), so those cases are compared bit for bit (NaN
//! with NaN). Sums fold in f32 on the accelerator and in f64 in the interpreter; with inputs
//! in [-1, 1) and at most a few thousand terms the difference stays below
//! `1e-4 · (1 + |expected|)` after the normalizations that follow.

mod common;

use common::{tensor, values};
use terafab_ir::{Module, Tensor};
use terafab_tile::Config;
use terafab_tile::backend::{Placement, run_function};

/// How results are compared.
#[derive(Clone, Copy)]
enum Tol {
    Exact,
    Rel(f32),
}

/// Runs `src` on the interpreter and the tile backend with `preset`; checks the results and
/// returns (kernels on the accelerator, kernels in all, the report's text).
fn run(src: &str, inputs: &[Tensor], preset: &str, tol: Tol) -> (usize, usize, String) {
    let m: Module = terafab_ir::parse::parse_module(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let f = m.entry().unwrap();
    let want = terafab_ir::interp::run_function(f, inputs).unwrap();
    let cfg = Config::preset(preset).unwrap();
    let (got, report) = run_function(&cfg, f, inputs).unwrap_or_else(|e| panic!("{e:?}\n{src}"));
    let text = report.to_string();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.shape(), w.shape(), "{src}");
        assert_eq!(g.dtype(), w.dtype(), "{src}");
        let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
        for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
            let ok = match tol {
                Tol::Exact => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
                Tol::Rel(t) => {
                    (a - b).abs() <= f64::from(t) * (1.0 + b.abs()) || (a.is_nan() && b.is_nan())
                }
            };
            assert!(
                ok,
                "{preset}: element {i}: tile {a} vs interpreter {b}\n{src}\n{text}"
            );
        }
    }
    let on = report
        .kernels
        .iter()
        .filter(|k| matches!(k.placement, Placement::Accelerator { .. }))
        .count();
    (on, report.kernels.len(), text)
}

/// Every kernel of `src` runs on the accelerator, on every preset, with the right result.
fn all_lowered(src: &str, inputs: &[Tensor], tol: Tol) {
    for preset in ["1x1", "2x2", "4x4"] {
        let (on, all, text) = run(src, inputs, preset, tol);
        assert_eq!(on, all, "{preset}: not every kernel lowered\n{src}\n{text}");
        assert!(all > 0);
    }
}

fn ty(shape: &[usize]) -> String {
    format!(
        "f32[{}]",
        shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )
}

#[test]
fn elementwise_chains_on_odd_shapes() {
    for shape in [
        vec![1],
        vec![7],
        vec![13, 1],
        vec![3, 5, 7],
        vec![37, 129],
        vec![5000],
        vec![2, 61, 1031],
    ] {
        let t = ty(&shape);
        let src = format!(
            "func @main(%x: {t}, %y: {t}) -> (o: {t}) {{
  %a = add(%x, %y) : {t}
  %m = mul(%a, %x) : {t}
  %e = exp(%m) : {t}
  %h = tanh(%e) : {t}
  %r = erf(%y) : {t}
  %c = constant() {{value=dense<f32[]>[0.25]}} : f32[]
  %s = sub(%c, %r) : {t}
  %q = div(%h, %s) : {t}
  %z = max(%q, %y) : {t}
  %n = neg(%z) : {t}
  %b = abs(%n) : {t}
  %o = min(%b, %c) : {t}
  return %o
}}
"
        );
        let inputs = [tensor(&shape, 1), tensor(&shape, 2)];
        all_lowered(&src, &inputs, Tol::Exact);
    }
}

#[test]
fn compares_selects_and_conversions() {
    let shape = [17, 33];
    let t = ty(&shape);
    let src = format!(
        "func @main(%x: {t}, %y: {t}) -> (o: {t}, p: bf16[17,33]) {{
  %l = lt(%x, %y) : bool[17,33]
  %s = select(%l, %x, %y) : {t}
  %c = constant() {{value=dense<f32[]>[0.5]}} : f32[]
  %g = ge(%c, %x) : bool[17,33]
  %t = select(%g, %s, %c) : {t}
  %f = convert(%l) {{to=f32}} : {t}
  %o = add(%t, %f) : {t}
  %d = sqrt(%f) : {t}
  %e = sub(%c, %d) : {t}
  %p = convert(%e) {{to=bf16}} : bf16[17,33]
  return %o, %p
}}
"
    );
    let inputs = [tensor(&shape, 3), tensor(&shape, 4)];
    all_lowered(&src, &inputs, Tol::Exact);
}

#[test]
fn nan_and_signed_zero_rules() {
    let x = Tensor::from_vec(
        vec![2, 4],
        vec![
            f32::NAN,
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NAN,
            -0.0,
        ],
    )
    .unwrap();
    let y = Tensor::from_vec(
        vec![2, 4],
        vec![
            1.0,
            -0.0,
            0.0,
            f32::NAN,
            f32::NEG_INFINITY,
            2.0,
            f32::NAN,
            -0.0,
        ],
    )
    .unwrap();
    let t = "f32[2,4]";
    let src = format!(
        "func @main(%x: {t}, %y: {t}) -> (a: {t}, b: {t}, c: {t}, d: {t}) {{
  %a = max(%x, %y) : {t}
  %b = min(%x, %y) : {t}
  %e = eq(%x, %y) : bool[2,4]
  %c = convert(%e) {{to=f32}} : {t}
  %z = constant() {{value=dense<f32[]>[0.0]}} : f32[]
  %d = sub(%z, %x) : {t}
  return %a, %b, %c, %d
}}
"
    );
    all_lowered(&src, &[x, y], Tol::Exact);
}

#[test]
fn broadcasts_and_transposes() {
    let src =
        "func @main(%x: f32[23,41], %r: f32[41], %c: f32[23,1]) -> (o: f32[41,23], p: f32[23,41]) {
  %t = transpose(%x) {perm=[1, 0]} : f32[41,23]
  %rb = broadcast(%r) {shape=[23, 41]} : f32[23,41]
  %cb = broadcast(%c) {shape=[23, 41]} : f32[23,41]
  %s = add(%x, %rb) : f32[23,41]
  %p = mul(%s, %cb) : f32[23,41]
  %k = constant() {value=dense<f32[]>[2.0]} : f32[]
  %o = mul(%t, %k) : f32[41,23]
  return %o, %p
}
";
    let inputs = [tensor(&[23, 41], 5), tensor(&[41], 6), tensor(&[23, 1], 7)];
    all_lowered(src, &inputs, Tol::Exact);
    let src3 = "func @main(%x: f32[3,19,7]) -> (o: f32[19,3,7]) {
  %o = transpose(%x) {perm=[1, 0, 2]} : f32[19,3,7]
  return %o
}
";
    all_lowered(src3, &[tensor(&[3, 19, 7], 8)], Tol::Exact);
}

#[test]
fn slices_and_concatenation() {
    let src = "func @main(%x: f32[9,50], %y: f32[9,13]) -> (o: f32[9,63], s: f32[9,10]) {
  %o = concat(%x, %y) {axis=1} : f32[9,63]
  %s = slice(%x) {start=[0, 3], limit=[9, 23], stride=[1, 2]} : f32[9,10]
  return %o, %s
}
";
    // The concatenation may be one kernel with two stores or a select; either way exact.
    let inputs = [tensor(&[9, 50], 9), tensor(&[9, 13], 10)];
    for preset in ["1x1", "2x2"] {
        let (on, all, text) = run(src, &inputs, preset, Tol::Exact);
        assert!(on >= 1 && all >= 1, "{text}");
    }
}

#[test]
fn reductions_over_inner_and_outer_axes() {
    for (shape, axes, out) in [
        (vec![7, 300], "[1]", vec![7]),
        (vec![7, 300], "[0]", vec![300]),
        (vec![3, 5, 11], "[0, 2]", vec![5]),
        (vec![1, 6000], "[1]", vec![1]),
        (vec![4099, 3], "[1]", vec![4099]),
        (vec![64, 64], "[0, 1]", vec![]),
    ] {
        let (t, o) = (ty(&shape), ty(&out));
        for op in ["reduce_sum", "reduce_max", "reduce_min"] {
            let src = format!(
                "func @main(%x: {t}) -> (o: {o}) {{
  %o = {op}(%x) {{axes={axes}, keep_dims=false}} : {o}
  return %o
}}
"
            );
            let tol = if op == "reduce_sum" {
                Tol::Rel(1e-4)
            } else {
                Tol::Exact
            };
            all_lowered(&src, &[tensor(&shape, 11)], tol);
        }
    }
}

#[test]
fn softmax_and_layer_norm() {
    for (rows, cols) in [(1, 1), (5, 7), (33, 1000), (3, 5000)] {
        let t = ty(&[rows, cols]);
        let c1 = ty(&[rows, 1]);
        let src = format!(
            "func @main(%x: {t}) -> (y: {t}) {{
  %m = reduce_max(%x) {{axes=[1], keep_dims=true}} : {c1}
  %mb = broadcast(%m) {{shape=[{rows}, {cols}]}} : {t}
  %d = sub(%x, %mb) : {t}
  %e = exp(%d) : {t}
  %s = reduce_sum(%e) {{axes=[1], keep_dims=true}} : {c1}
  %sb = broadcast(%s) {{shape=[{rows}, {cols}]}} : {t}
  %y = div(%e, %sb) : {t}
  return %y
}}
"
        );
        all_lowered(&src, &[tensor(&[rows, cols], 12)], Tol::Rel(1e-4));
        let src = format!(
            "func @main(%x: {t}) -> (y: {t}) {{
  %y = softmax(%x) {{axes=[1]}} : {t}
  return %y
}}
"
        );
        let (on, _, text) = run(&src, &[tensor(&[rows, cols], 13)], "2x2", Tol::Rel(1e-4));
        assert!(on >= 1, "{text}");
        let src = format!(
            "func @main(%x: {t}) -> (y: {t}) {{
  %y = layer_norm(%x) {{axes=[1], epsilon=1e-5}} : {t}
  return %y
}}
"
        );
        let (on, _, text) = run(&src, &[tensor(&[rows, cols], 14)], "2x2", Tol::Rel(1e-3));
        assert!(on >= 1, "{text}");
    }
}

/// Kernels the vector engine cannot run stay on the host with a reason naming the op, and
/// the results are still the interpreter's.
#[test]
fn unsupported_ops_run_on_the_host() {
    for (op, what) in [("sin", "Sin"), ("floor", "Floor")] {
        let src = format!(
            "func @main(%x: f32[4,5]) -> (y: f32[4,5]) {{
  %y = {op}(%x) : f32[4,5]
  return %y
}}
"
        );
        let (on, all, text) = run(&src, &[tensor(&[4, 5], 15)], "2x2", Tol::Exact);
        assert_eq!((on, all), (0, 1), "{text}");
        assert!(text.contains(what), "{text}");
    }
}

/// A reshape of a transpose divides the column variable (`x[i0, i1 % 4, i1 / 4]`): lowered
/// with one-column tiles, where the index is a constant of each step.
#[test]
fn reshapes_that_divide_a_tile_variable() {
    let src = "func @main(%x: f32[37,5,4]) -> (o: f32[37,20]) {
  %t = transpose(%x) {perm=[0, 2, 1]} : f32[37,4,5]
  %e = exp(%t) : f32[37,4,5]
  %o = reshape(%e) {shape=[37, 20]} : f32[37,20]
  return %o
}
";
    all_lowered(src, &[tensor(&[37, 5, 4], 16)], Tol::Exact);
}

/// bf16 data moves unchanged (a transpose) and converts exactly; CFP8 is written by `vcvt`.
#[test]
fn narrow_types_move_and_convert() {
    let src = "func @main(%x: bf16[6,35]) -> (o: bf16[35,6], f: f32[6,35], c: cf8e4m3[6,35]) {
  %o = transpose(%x) {perm=[1, 0]} : bf16[35,6]
  %f = convert(%x) {to=f32} : f32[6,35]
  %k = constant() {value=dense<f32[]>[300.0]} : f32[]
  %s = mul(%f, %k) : f32[6,35]
  %c = convert(%s) {to=cf8e4m3} : cf8e4m3[6,35]
  return %o, %f, %c
}
";
    let x = Tensor::from_vec(
        vec![6, 35],
        values(210, 17)
            .into_iter()
            .map(terafab_ir::half::bf16::from_f32)
            .collect(),
    )
    .unwrap();
    all_lowered(src, &[x], Tol::Exact);
}

/// Large enough for every node of a 4x4 mesh to get tiles.
#[test]
fn work_is_partitioned_over_the_mesh() {
    let src = "func @main(%x: f32[300,700]) -> (o: f32[300,700]) {
  %o = tanh(%x) : f32[300,700]
  return %o
}
";
    let (on, all, text) = run(src, &[tensor(&[300, 700], 18)], "4x4", Tol::Exact);
    assert_eq!((on, all), (1, 1), "{text}");
    assert!(text.contains("on 16 node(s)"), "{text}");
}

/// Loads with a fill value (the padding of convolutions and pooling): the tile is filled,
/// then the in-bounds box loaded over it.
#[test]
fn padded_convolution_and_pooling() {
    let src = "func @main(%x: f32[1,3,9,11], %w: f32[4,3,3,3]) -> (o: f32[1,4,9,11]) {
  %o = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,4,9,11]
  return %o
}
";
    let inputs = [tensor(&[1, 3, 9, 11], 19), tensor(&[4, 3, 3, 3], 20)];
    all_lowered(src, &inputs, Tol::Rel(1e-5));
}

/// Pooling windows (3×3 stride 2 with padding, the ResNet stem's max pool; a 2×2 sum) are
/// unrolled into elementwise kernels (`lower::retile`): max exactly, the sum within the f32
/// summation tolerance; NaN propagates through the unrolled max as through the reduction.
#[test]
fn pooling_windows_are_unrolled() {
    let src = "func @main(%x: f32[1,5,13,11]) -> (m: f32[1,5,7,6], s: f32[1,5,6,5]) {
  %m = reduce_window_max(%x) {window=[1, 1, 3, 3], stride=[1, 1, 2, 2], dilation=[1, 1, 1, 1], pad_low=[0, 0, 1, 1], pad_high=[0, 0, 1, 1]} : f32[1,5,7,6]
  %s = reduce_window_sum(%x) {window=[1, 1, 2, 2], stride=[1, 1, 2, 2], dilation=[1, 1, 1, 1], pad_low=[0, 0, 0, 0], pad_high=[0, 0, 0, 0]} : f32[1,5,6,5]
  return %m, %s
}
";
    let mut x = values(5 * 13 * 11, 41);
    x[17] = f32::NAN;
    let inputs = [Tensor::from_vec(vec![1, 5, 13, 11], x).unwrap()];
    for preset in ["1x1", "2x2", "4x4"] {
        let (on, all, text) = run(src, &inputs, preset, Tol::Rel(1e-6));
        assert_eq!(on, all, "{text}");
        assert!(!text.contains("vector reduction"), "{text}");
    }
}
