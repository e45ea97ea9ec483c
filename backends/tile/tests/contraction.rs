//! Contractions that are not of the plain GEMM form (transposed operands, convolutions,
//! epilogues beyond bias and ReLU) split by `lower::split_gemm` into pack, plain GEMM and
//! epilogue kernels, against the reference interpreter on the 1x1, 2x2 and 4x4 presets; the
//! matrix engine must do the MACs.
//!
//! Tolerance: the accelerator sums in f32 in its own order, the interpreter in f64:
//! `1e-4 · (1 + |expected|)` with inputs in [-1, 1).

mod common;

use common::tensor;
use terafab_ir::{Module, Tensor};
use terafab_tile::Config;
use terafab_tile::backend::{ModelReport, Placement, run_function_with};
use terafab_tile::compile::Options;

/// Runs `src` on the interpreter and on the tile backend with `preset`, compares, and returns
/// the report. Every contraction that can is split (no cost check: these are small), and
/// kernels are not linked (`resident`: the kernels' structure is what these tests check).
fn run(src: &str, inputs: &[Tensor], preset: &str) -> ModelReport {
    run_with(
        src,
        inputs,
        preset,
        &Options {
            cost_check: false,
            resident: false,
        },
    )
}

fn run_with(src: &str, inputs: &[Tensor], preset: &str, opts: &Options) -> ModelReport {
    let m: Module = terafab_ir::parse::parse_module(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let f = m.entry().unwrap();
    let want = terafab_ir::interp::run_function(f, inputs).unwrap();
    let cfg = Config::preset(preset).unwrap();
    let (got, report) =
        run_function_with(&cfg, f, inputs, opts).unwrap_or_else(|e| panic!("{e:?}\n{src}"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.shape(), w.shape(), "{src}");
        let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
        for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{preset}: element {i}: tile {a} vs interpreter {b}\n{src}\n{report}"
            );
        }
    }
    report
}

/// MACs the matrix engine did (f32 and narrow), over kernels whose name contains `name`.
fn matrix_macs(report: &ModelReport, name: &str) -> u64 {
    report
        .kernels
        .iter()
        .filter(|k| k.name.contains(name))
        .filter_map(|k| match &k.placement {
            Placement::Accelerator { report, .. } => Some(report.macs + report.macs_f32),
            Placement::Host { .. } => None,
        })
        .sum()
}

/// Every preset: the right result, every kernel on the accelerator, and `macs` MACs on the
/// matrix engine, all by split GEMM kernels (`@k<i>.gemm`).
fn on_matrix_engine(src: &str, inputs: &[Tensor], macs: u64) {
    for preset in ["1x1", "2x2", "4x4"] {
        let report = run(src, inputs, preset);
        let text = report.to_string();
        assert_eq!(report.host_kernels(), 0, "{preset}\n{text}");
        assert_eq!(matrix_macs(&report, ".gemm"), macs, "{preset}\n{text}");
        assert_eq!(matrix_macs(&report, ""), macs, "{preset}\n{text}");
    }
}

/// ONNX Gemm with transB: `x @ w^T + b` (w stored `[N, K]`): w is packed (transposed).
#[test]
fn matmul_with_transposed_weights() {
    let src = "func @main(%x: f32[13,40], %w: f32[24,40], %b: f32[24]) -> (y: f32[13,24]) {
  %h = dot_general(%x, %w) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[1]} : f32[13,24]
  %y = add(%h, %b) : f32[13,24]
  return %y
}
";
    let inputs = [tensor(&[13, 40], 1), tensor(&[24, 40], 2), tensor(&[24], 3)];
    on_matrix_engine(src, &inputs, 13 * 24 * 40);
    let report = run(src, &inputs, "2x2");
    let names: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
    assert!(names.iter().any(|n| n.ends_with(".packB")), "{names:?}");
}

/// Both operands transposed (`x^T @ w^T`), with a tanh epilogue.
#[test]
fn matmul_with_both_operands_transposed() {
    let src = "func @main(%x: f32[30,9], %w: f32[17,30]) -> (y: f32[9,17]) {
  %h = dot_general(%x, %w) {lhs_batch=[], rhs_batch=[], lhs_contract=[0], rhs_contract=[1]} : f32[9,17]
  %y = tanh(%h) : f32[9,17]
  return %y
}
";
    let inputs = [tensor(&[30, 9], 4), tensor(&[17, 30], 5)];
    on_matrix_engine(src, &inputs, 9 * 17 * 30);
}

/// A 3x3 convolution with padding 1 and stride 2 (im2col packed, NCHW epilogue).
#[test]
fn strided_padded_convolution() {
    let src = "func @main(%x: f32[1,3,9,11], %w: f32[8,3,3,3]) -> (o: f32[1,8,5,6]) {
  %o = conv(%x, %w) {stride=[2, 2], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,8,5,6]
  return %o
}
";
    let inputs = [tensor(&[1, 3, 9, 11], 6), tensor(&[8, 3, 3, 3], 7)];
    on_matrix_engine(src, &inputs, 8 * 30 * 27);
}

/// Convolution, BN-like per-channel scale and shift, ReLU and a residual add: one fused
/// kernel whose epilogue runs on the GEMM's accumulators.
#[test]
fn convolution_with_bn_relu_and_residual_epilogue() {
    let src = "func @main(%x: f32[1,6,7,7], %w: f32[6,6,3,3], %s: f32[6,1,1], %t: f32[6,1,1]) -> (o: f32[1,6,7,7]) {
  %c = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,6,7,7]
  %sb = broadcast(%s) {shape=[1, 6, 7, 7]} : f32[1,6,7,7]
  %tb = broadcast(%t) {shape=[1, 6, 7, 7]} : f32[1,6,7,7]
  %m = mul(%c, %sb) : f32[1,6,7,7]
  %a = add(%m, %tb) : f32[1,6,7,7]
  %z = constant() {value=dense<f32[]>[0.0]} : f32[]
  %r = max(%a, %z) : f32[1,6,7,7]
  %o = add(%r, %x2) : f32[1,6,7,7]
  return %o
}
";
    // The residual is the input itself.
    let src = src.replace("%x2", "%x");
    let inputs = [
        tensor(&[1, 6, 7, 7], 8),
        tensor(&[6, 6, 3, 3], 9),
        tensor(&[6, 1, 1], 10),
        tensor(&[6, 1, 1], 11),
    ];
    on_matrix_engine(&src, &inputs, 6 * 49 * 54);
    // The scale, shift, ReLU and residual run on the GEMM's accumulators (a fused epilogue,
    // operands along M and a tile), which write the NCHW output directly.
    for preset in ["1x1", "4x4"] {
        let report = run(&src, &inputs, preset);
        let names: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
        assert!(!names.iter().any(|n| n.ends_with(".epilogue")), "{report}");
        assert!(report.to_string().contains("4-step epilogue"), "{report}");
    }
}

/// A batched matmul (a batch variable of extent over one): one batched GEMM on the matrix
/// engine, as it is (already plain); with a transposed operand, split into pack + GEMM.
#[test]
fn batched_matmul_runs_on_the_matrix_engine() {
    // K = 24: longer than the windows `retile` unrolls into elementwise work.
    let src = "func @main(%x: f32[3,5,24], %w: f32[3,24,6]) -> (y: f32[3,5,6]) {
  %y = dot_general(%x, %w) {lhs_batch=[0], rhs_batch=[0], lhs_contract=[2], rhs_contract=[1]} : f32[3,5,6]
  return %y
}
";
    let inputs = [tensor(&[3, 5, 24], 12), tensor(&[3, 24, 6], 13)];
    for preset in ["1x1", "2x2", "4x4"] {
        let report = run(src, &inputs, preset);
        assert_eq!(report.host_kernels(), 0, "{report}");
        assert_eq!(matrix_macs(&report, ""), 3 * 5 * 6 * 24, "{report}");
        assert!(report.to_string().contains("gemm 3x(5x6x24)"), "{report}");
    }
    let src = "func @main(%x: f32[3,5,24], %w: f32[3,6,24]) -> (y: f32[3,5,6]) {
  %y = dot_general(%x, %w) {lhs_batch=[0], rhs_batch=[0], lhs_contract=[2], rhs_contract=[2]} : f32[3,5,6]
  return %y
}
";
    let inputs = [tensor(&[3, 5, 24], 14), tensor(&[3, 6, 24], 15)];
    on_matrix_engine(src, &inputs, 3 * 5 * 6 * 24);
}

/// Attention's context product with the heads merged back into one dim (`o[i, h·4 + d]`):
/// the merged variable is split into (head, d) and the heads become the GEMM's batch.
#[test]
fn merged_attention_heads_become_a_batch() {
    let src = "func @main(%p: f32[2,6,5], %v: f32[2,5,4]) -> (o: f32[6,8]) {
  %c = dot_general(%p, %v) {lhs_batch=[0], rhs_batch=[0], lhs_contract=[2], rhs_contract=[1]} : f32[2,6,4]
  %t = transpose(%c) {perm=[1, 0, 2]} : f32[6,2,4]
  %o = reshape(%t) {shape=[6, 8]} : f32[6,8]
  return %o
}
";
    let inputs = [tensor(&[2, 6, 5], 31), tensor(&[2, 5, 4], 32)];
    for preset in ["1x1", "2x2"] {
        let report = run(src, &inputs, preset);
        assert_eq!(report.host_kernels(), 0, "{report}");
        assert_eq!(matrix_macs(&report, ".gemm"), 2 * 6 * 4 * 5, "{report}");
        assert!(report.to_string().contains("gemm 2x("), "{report}");
    }
}

/// A depthwise convolution (groups = channels): the channel is used by both operands, a batch
/// variable, so it stays on the vector path, correct.
#[test]
fn depthwise_convolution_stays_correct_on_the_vector_path() {
    let src = "func @main(%x: f32[1,4,6,6], %w: f32[4,1,3,3]) -> (o: f32[1,4,6,6]) {
  %o = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=4} : f32[1,4,6,6]
  return %o
}
";
    let inputs = [tensor(&[1, 4, 6, 6], 14), tensor(&[4, 1, 3, 3], 15)];
    for preset in ["1x1", "2x2", "4x4"] {
        let report = run(src, &inputs, preset);
        assert_eq!(report.host_kernels(), 0, "{report}");
    }
}

/// `src` parsed, with the `precision-*` pass `pass` run when given.
fn module(src: &str, pass: Option<&str>) -> Module {
    let mut m: Module =
        terafab_ir::parse::parse_module(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    if let Some(pass) = pass {
        terafab_passes::run_pipeline(&mut m, pass, Default::default()).unwrap();
    }
    m
}

/// A constant `f32[shape]` operand as IR text (values of `common::tensor`).
fn constant(name: &str, shape: &[usize], seed: u64) -> String {
    let t = tensor(shape, seed);
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let vals: Vec<String> = t
        .to_f64_vec()
        .iter()
        .map(|v| format!("{:?}", *v as f32))
        .collect();
    format!(
        "  %{name} = constant() {{value=dense<f32[{d}]>[{v}]}} : f32[{d}]\n",
        d = dims.join(","),
        v = vals.join(", ")
    )
}

/// A convolution with constant weights: the weights' pack (`@k0.packA`) is evaluated once at
/// compile time, not run; the image's im2col pack and the GEMM run.
#[test]
fn constant_weights_are_packed_at_compile_time() {
    let src = format!(
        "func @main(%x: f32[1,3,9,11]) -> (o: f32[1,8,5,6]) {{
{w}  %o = conv(%x, %w) {{stride=[2, 2], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : f32[1,8,5,6]
  return %o
}}
",
        w = constant("w", &[8, 3, 3, 3], 7)
    );
    let inputs = [tensor(&[1, 3, 9, 11], 6)];
    for preset in ["1x1", "4x4"] {
        let report = run(&src, &inputs, preset);
        assert_eq!(report.folded, ["k0.packA"], "{report}");
        let names: Vec<&str> = report.kernels.iter().map(|k| k.name.as_str()).collect();
        // The GEMM writes its [8, 30] as the NCHW output directly.
        assert_eq!(names, ["k0.packB", "k0.gemm"], "{report}");
        assert_eq!(matrix_macs(&report, ".gemm"), 8 * 30 * 27, "{report}");
        assert!(report.to_string().contains("packed at compile time"));
    }
}

/// With the `precision-bf16` pass, both packed operands are bf16 (the matrix engine's bf16
/// rate, half the bytes): the weights' pack rounds them (at compile time), and the image,
/// materialized rounded by an earlier kernel, is packed as bf16 exactly. The result is the
/// interpreter's on the same (rounded) program, within the f32 summation tolerance.
#[test]
fn bf16_operands_are_packed_narrow() {
    let src = format!(
        "func @main(%x: f32[1,4,10,10]) -> (o: f32[1,6,10,10]) {{
{w}  %e = exp(%x) : f32[1,4,10,10]
  %o = conv(%e, %w) {{stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : f32[1,6,10,10]
  return %o
}}
",
        w = constant("w", &[6, 4, 3, 3], 21)
    );
    let m = module(&src, Some("precision-bf16"));
    let text = terafab_ir::print::print_module(&m);
    let inputs = [tensor(&[1, 4, 10, 10], 22)];
    for preset in ["1x1", "2x2"] {
        let report = run(&text, &inputs, preset);
        let gemm = report
            .kernels
            .iter()
            .find(|k| k.name.ends_with(".gemm"))
            .unwrap_or_else(|| panic!("{report}"));
        let Placement::Accelerator { summary, report: r } = &gemm.placement else {
            panic!("{report}");
        };
        assert!(summary.contains("bf16·bf16"), "{summary}");
        assert_eq!((r.macs, r.macs_f32), (6 * 100 * 36, 0), "{report}");
    }
}

/// A small contraction is simulated both ways and the faster lowering kept: never slower
/// than always splitting, correct either way. For `x[4, 64] · w[32, 64]ᵀ` on 2x2 the single
/// vector kernel beats pack + GEMM (the report says so); for `x[3, 16] · w[5, 16]ᵀ` the split.
#[test]
fn small_contractions_keep_the_faster_lowering() {
    for (m, k, n, whole) in [(4, 64, 32, true), (3, 16, 5, false)] {
        let src = format!(
            "func @main(%x: f32[{m},{k}], %w: f32[{n},{k}]) -> (y: f32[{m},{n}]) {{
  %y = dot_general(%x, %w) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[1]}} : f32[{m},{n}]
  return %y
}}
"
        );
        let inputs = [tensor(&[m, k], 23), tensor(&[n, k], 24)];
        let opts = Options {
            cost_check: true,
            resident: false,
        };
        let checked = run_with(&src, &inputs, "2x2", &opts);
        let split = run(&src, &inputs, "2x2");
        assert!(checked.cycles() <= split.cycles(), "{checked}\n{split}");
        if whole {
            assert_eq!(checked.kept, ["k0"], "{checked}");
            assert!(checked.to_string().contains("kept on the vector engine"));
        } else {
            assert!(checked.kept.is_empty(), "{checked}");
            assert_eq!(checked.cycles(), split.cycles());
        }
    }
}

/// Matrix-vector products (batch-1 dense layers, both orientations): the matrix engine or the
/// vector path, whichever simulates faster, and the interpreter's result either way.
#[test]
fn matrix_vector_products() {
    let src = format!(
        "func @main(%x: f32[1,200], %v: f32[300,1]) -> (y: f32[1,300], z: f32[1,1]) {{
{w}  %y = dot_general(%x, %w) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[1]}} : f32[1,300]
  %z = dot_general(%y, %v) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : f32[1,1]
  return %y, %z
}}
",
        w = constant("w", &[300, 200], 51)
    );
    let inputs = [tensor(&[1, 200], 52), tensor(&[300, 1], 53)];
    for preset in ["1x1", "4x4"] {
        let report = run_with(&src, &inputs, preset, &Options::default());
        assert_eq!(report.host_kernels(), 0, "{report}");
    }
}

/// The source of a convolution `x[n, c, h, w] * w[o, c, kh, kw]` with the given stride,
/// padding and dilation, and its output shape; `None` when the output would be empty.
#[allow(clippy::too_many_arguments)]
fn conv_src(
    (n, c, h, w): (usize, usize, usize, usize),
    (o, kh, kw): (usize, usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    dil: (usize, usize),
) -> Option<(String, [usize; 4])> {
    let span = |k: usize, d: usize| (k - 1) * d + 1;
    let out = |len: usize, k: usize, d: usize, s: usize, p: usize| {
        (len + 2 * p).checked_sub(span(k, d)).map(|x| x / s + 1)
    };
    let oh = out(h, kh, dil.0, stride.0, pad.0)?;
    let ow = out(w, kw, dil.1, stride.1, pad.1)?;
    let src = format!(
        "func @main(%x: f32[{n},{c},{h},{w}], %w: f32[{o},{c},{kh},{kw}]) -> (o: f32[{n},{o},{oh},{ow}]) {{
  %o = conv(%x, %w) {{stride=[{}, {}], pad_low=[{}, {}], pad_high=[{}, {}], lhs_dilation=[1, 1], rhs_dilation=[{}, {}], groups=1}} : f32[{n},{o},{oh},{ow}]
  return %o
}}
",
        stride.0, stride.1, pad.0, pad.1, pad.0, pad.1, dil.0, dil.1
    );
    Some((src, [n, o, oh, ow]))
}

/// Implicit GEMM: convolutions whose input is read in place by the GEMM (`(implicit)` in
/// the report: a 3-D strided gather per B chunk, after a `padB` copy where there is
/// padding), against the interpreter on every preset, with every MAC on the matrix engine.
#[test]
fn implicit_gemm_convolutions() {
    // (input, (out channels, kh, kw), stride, pad, dilation)
    let cases = [
        ((1, 3, 9, 11), (8, 3, 3), (1, 1), (1, 1), (1, 1)),
        ((2, 5, 7, 6), (7, 3, 2), (1, 1), (0, 1), (1, 1)),
        ((1, 4, 13, 5), (3, 1, 1), (1, 1), (0, 0), (1, 1)),
        ((1, 2, 8, 9), (9, 3, 3), (2, 1), (2, 1), (2, 2)),
        ((1, 16, 17, 17), (20, 3, 3), (1, 1), (1, 1), (1, 1)),
    ];
    for (i, (x, wt, stride, pad, dil)) in cases.into_iter().enumerate() {
        let (src, out) = conv_src(x, wt, stride, pad, dil).unwrap();
        let inputs = [
            tensor(&[x.0, x.1, x.2, x.3], 40 + i as u64),
            tensor(&[wt.0, x.1, wt.1, wt.2], 50 + i as u64),
        ];
        let macs = (out.iter().product::<usize>() * x.1 * wt.1 * wt.2) as u64;
        on_matrix_engine(&src, &inputs, macs);
        let report = run(&src, &inputs, "2x2");
        assert!(report.to_string().contains("(implicit)"), "{report}");
        assert!(
            !report.kernels.iter().any(|k| k.name.ends_with(".packB")),
            "{report}"
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]
    /// Random convolutions (odd sizes, 1, strides, padding, dilation, batches): implicit
    /// GEMM where the stride along W is 1, im2col packs otherwise; always the interpreter's
    /// result.
    #[test]
    fn random_convolutions(
        n in 1usize..3, c in 1usize..6, h in 1usize..12, w in 1usize..12,
        o in 1usize..10, kh in 1usize..4, kw in 1usize..4,
        sh in 1usize..3, sw in 1usize..3, ph in 0usize..3, pw in 0usize..3,
        dh in 1usize..3, dw in 1usize..3, two in proptest::bool::ANY,
    ) {
        if let Some((src, _)) = conv_src((n, c, h, w), (o, kh, kw), (sh, sw), (ph, pw), (dh, dw)) {
            let inputs = [
                tensor(&[n, c, h, w], (n * 31 + c * 7 + h) as u64),
                tensor(&[o, c, kh, kw], (o * 13 + kh * 3 + kw) as u64),
            ];
            run(&src, &inputs, if two { "2x2" } else { "1x1" });
        }
    }
}
