//! The tile backend on whole functions against the reference interpreter: matmuls with bias
//! and ReLU epilogues (lowered to the matrix engine) on random shapes and presets, and a
//! function mixing lowered and host kernels. Tolerance: the accelerator sums f32 products in
//! f32 (in chunk order), the interpreter in f64 rounded once; with inputs in [-1, 1) and
//! K <= 300 the difference is far below 1e-4 · (1 + |expected|).

use proptest::prelude::*;
mod common;

use common::{tensor, values};
use terafab_ir::{Module, Tensor};
use terafab_tile::Config;
use terafab_tile::backend::run_function;

/// Run `src` on the interpreter and on the tile backend; returns how many kernels ran on the
/// accelerator.
fn check(src: &str, inputs: Vec<Tensor>, preset: &str) -> Result<usize, TestCaseError> {
    let m: Module = terafab_ir::parse::parse_module(src)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    let f = m.entry().unwrap();
    let want = terafab_ir::interp::run_function(f, &inputs)
        .map_err(|e| TestCaseError::fail(format!("interp: {e}")))?;
    let cfg = Config::preset(preset).unwrap();
    let (got, report) =
        run_function(&cfg, f, &inputs).map_err(|e| TestCaseError::fail(format!("tile: {e:?}")))?;
    prop_assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        prop_assert_eq!(g.shape(), w.shape());
        let (g, w) = (g.as_slice::<f32>().unwrap(), w.as_slice::<f32>().unwrap());
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            prop_assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "element {i}: tile {a} vs interpreter {b}\n{src}\n{report}"
            );
        }
    }
    Ok(report.accelerator_kernels())
}

/// `relu(x @ w + b)` with x and w inputs and the bias a constant.
fn dense_src(m: usize, k: usize, n: usize, relu: bool, bias: bool) -> String {
    let mut body = format!(
        "  %h = dot_general(%x, %w) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : f32[{m},{n}]\n"
    );
    let mut last = "%h".to_string();
    if bias {
        let b: Vec<String> = values(n, 99).iter().map(|v| format!("{v:?}")).collect();
        body += &format!(
            "  %b = constant() {{value=dense<f32[{n}]>[{}]}} : f32[{n}]\n  %hb = add(%h, %b) : f32[{m},{n}]\n",
            b.join(", ")
        );
        last = "%hb".into();
    }
    if relu {
        body += &format!(
            "  %z = constant() {{value=dense<f32[]>[0.0]}} : f32[]\n  %r = max({last}, %z) : f32[{m},{n}]\n"
        );
        last = "%r".into();
    }
    format!(
        "func @main(%x: f32[{m},{k}], %w: f32[{k},{n}]) -> (y: f32[{m},{n}]) {{\n{body}  return {last}\n}}\n"
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn dense_layers_match_the_interpreter(
        m in 1usize..40, k in 1usize..300, n in 1usize..40,
        relu in any::<bool>(), bias in any::<bool>(), big in any::<bool>(), seed in any::<u64>(),
    ) {
        let src = dense_src(m, k, n, relu, bias);
        let lowered = check(
            &src,
            vec![tensor(&[m, k], seed), tensor(&[k, n], seed ^ 1)],
            if big { "2x2" } else { "1x1" },
        )?;
        // The whole layer is one kernel of the plain GEMM form.
        prop_assert_eq!(lowered, 1);
    }
}

/// A 2-layer MLP with a sigmoid head: the matmul with bias and ReLU runs on the
/// accelerator; the second (its epilogue is a sigmoid) is split (`lower::split_gemm`): its
/// GEMM on the accelerator, the sigmoid epilogue on the host; the result is the
/// interpreter's either way.
#[test]
fn accelerator_and_host_kernels_interleave() {
    let src = "func @main(%x: f32[8,32], %w1: f32[32,16], %w2: f32[16,4]) -> (y: f32[8,4]) {
  %h = dot_general(%x, %w1) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[8,16]
  %z = constant() {value=dense<f32[]>[0.0]} : f32[]
  %r = max(%h, %z) : f32[8,16]
  %o = dot_general(%r, %w2) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[8,4]
  %y = logistic(%o) : f32[8,4]
  return %y
}
";
    let inputs = vec![
        tensor(&[8, 32], 1),
        tensor(&[32, 16], 2),
        tensor(&[16, 4], 3),
    ];
    for preset in ["1x1", "2x2", "4x4"] {
        let lowered = check(src, inputs.clone(), preset).unwrap();
        assert_eq!(lowered, 2, "{preset}");
    }
}
