//! The Cranelift backend against the reference interpreter on random shapes: elementwise
//! chains (the f32x4 path and its scalar remainder, broadcasts, transposes), reductions (sum,
//! max, softmax-like rows), matmuls (batched, transposed, bias and ReLU) and convolutions
//! (strides, padding, dilation, groups), with sizes of 1, primes and sizes that are not
//! multiples of the vector width; integer and narrow-float kernels with the interpreter's
//! edge cases; matmuls and convolutions large enough for the packed GEMM schedule, with
//! epilogues. Each case runs on 1 and 2 threads, whose results must be bitwise equal.
//!
//! Tolerance: the backend sums in f32 in order (the GEMM schedule with one rounding per fused
//! multiply-add), the interpreter in f64 rounded once; with inputs in [-1, 1) and K <= 400 the
//! difference stays far below 1e-4 * (1 + |expected|).
//! Elementwise results without sums must be exact (the same roundings as the interpreter).

mod common;

use proptest::prelude::*;
use terafab_cranelift::Options;
use terafab_ir::{Module, Tensor};

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn ty(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("f32[{}]", dims.join(","))
}

fn dense(shape: &[usize], v: &[f32]) -> String {
    let vals: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("dense<{}>[{}]", ty(shape), vals.join(", "))
}

/// Run `src` on the interpreter and on the Cranelift backend (1 and 2 threads) and compare
/// within `tol` relative to `1 + |expected|` (0: bitwise, NaN equal to NaN).
fn check_tol(src: &str, inputs: Vec<Tensor>, tol: f64) -> Result<(), TestCaseError> {
    let m: Module = terafab_ir::parse::parse_module(src)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    let f = m.entry().unwrap();
    let want = terafab_ir::interp::run_function(f, &inputs)
        .map_err(|e| TestCaseError::fail(format!("interp: {e}")))?;
    let run = |threads| {
        terafab_cranelift::run_function(f, &inputs, &Options { threads })
            .map_err(|e| TestCaseError::fail(format!("cranelift: {e:?}\n{src}")))
    };
    let one = run(1)?;
    let two = run(2)?;
    prop_assert_eq!(want.len(), one.len());
    for ((w, a), b) in want.iter().zip(&one).zip(&two) {
        prop_assert!(a.bit_eq(b), "1 and 2 threads differ");
        prop_assert_eq!(w.dtype(), a.dtype());
        prop_assert_eq!(w.shape(), a.shape());
        let (w, a) = (w.to_f64_vec(), a.to_f64_vec());
        for (i, (x, y)) in w.iter().zip(&a).enumerate() {
            let ok = if tol == 0.0 {
                x.to_bits() == y.to_bits() || x.is_nan() && y.is_nan()
            } else {
                (x - y).abs() <= tol * (1.0 + x.abs()) || x.is_nan() && y.is_nan() || x == y
            };
            prop_assert!(ok, "element {i}: interpreter {x}, cranelift {y}\n{src}");
        }
    }
    Ok(())
}

fn check(src: &str, inputs: Vec<Tensor>) -> Result<(), TestCaseError> {
    check_tol(src, inputs, 1e-4)
}

/// The epilogue of a contraction test case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Epilogue {
    None,
    /// `max(y + bias, 0)`, the bias along the output's channels.
    BiasRelu,
    /// `max(y + bias, 0) + r`, `r` an input of the output's shape.
    BiasReluResidual,
}

/// A contraction `%c` (its definition in `body`) over `params`/`inputs`, with `epilogue`
/// applied (the bias of shape `bias_shape`, `channels` values): the module's text and inputs.
fn with_epilogue(
    mut params: Vec<String>,
    mut inputs: Vec<Tensor>,
    mut body: String,
    y_shape: &[usize],
    bias_shape: &[usize],
    epilogue: Epilogue,
    seed: u64,
) -> (String, Vec<Tensor>) {
    let y = ty(y_shape);
    let result = if epilogue == Epilogue::None {
        "%c"
    } else {
        let bias = values(bias_shape.iter().product(), seed ^ 2);
        body += &format!(
            "  %bias = constant() {{value={}}} : {}\n",
            dense(bias_shape, &bias),
            ty(bias_shape)
        );
        body += &format!("  %s = add(%c, %bias) : {y}\n");
        body += "  %zero = constant() {value=dense<f32[]>[0.0]} : f32[]\n";
        body += &format!("  %v = max(%s, %zero) : {y}\n");
        if epilogue == Epilogue::BiasReluResidual {
            params.push(format!("%r: {y}"));
            let r = values(y_shape.iter().product(), seed ^ 5);
            inputs.push(Tensor::from_vec(y_shape.to_vec(), r).unwrap());
            body += &format!("  %y = add(%v, %r) : {y}\n");
            "%y"
        } else {
            "%v"
        }
    };
    let src = format!(
        "func @main({}) -> (y: {y}) {{\n{body}  return {result}\n}}\n",
        params.join(", ")
    );
    (src, inputs)
}

/// An operand `%name` of `shape`: a constant in the body, or a parameter and its input.
fn operand(
    name: &str,
    shape: &[usize],
    v: Vec<f32>,
    constant: bool,
    params: &mut Vec<String>,
    inputs: &mut Vec<Tensor>,
) -> String {
    if constant {
        format!(
            "  %{name} = constant() {{value={}}} : {}\n",
            dense(shape, &v),
            ty(shape)
        )
    } else {
        params.push(format!("%{name}: {}", ty(shape)));
        inputs.push(Tensor::from_vec(shape.to_vec(), v).unwrap());
        String::new()
    }
}

/// A matmul `[batch,] m × k · k × n` (B transposed or not, constant or an input) with an
/// epilogue.
#[allow(clippy::too_many_arguments)]
fn matmul_case(
    m: usize,
    k: usize,
    n: usize,
    batch: usize,
    transpose_b: bool,
    const_b: bool,
    epilogue: Epilogue,
    seed: u64,
) -> (String, Vec<Tensor>) {
    let bshape = |s: Vec<usize>| -> Vec<usize> {
        if batch > 0 {
            [vec![batch], s].concat()
        } else {
            s
        }
    };
    let a_shape = bshape(vec![m, k]);
    let b_shape = bshape(if transpose_b { vec![n, k] } else { vec![k, n] });
    let y_shape = bshape(vec![m, n]);
    let off = usize::from(batch > 0);
    let (lb, rb) = if batch > 0 {
        ("[0]", "[0]")
    } else {
        ("[]", "[]")
    };
    let rc = if transpose_b { 1 + off } else { off };
    let mut params = Vec::new();
    let mut inputs = Vec::new();
    let a = values(a_shape.iter().product(), seed);
    let b = values(b_shape.iter().product(), seed ^ 1);
    let mut body = operand("a", &a_shape, a, false, &mut params, &mut inputs);
    body += &operand("b", &b_shape, b, const_b, &mut params, &mut inputs);
    body += &format!(
        "  %c = dot_general(%a, %b) {{lhs_batch={lb}, rhs_batch={rb}, lhs_contract=[{}], rhs_contract=[{rc}]}} : {}\n",
        1 + off,
        ty(&y_shape)
    );
    with_epilogue(params, inputs, body, &y_shape, &[n], epilogue, seed)
}

/// A 2-D convolution's shape.
#[derive(Debug, Clone, Copy)]
struct Conv {
    batch: usize,
    cin_g: usize,
    cout_g: usize,
    groups: usize,
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: usize,
    dil: usize,
}

/// A convolution (weights constant or an input) with an epilogue (the bias per output
/// channel); `None` when the window does not fit the padded input.
fn conv_case(
    c: Conv,
    const_w: bool,
    epilogue: Epilogue,
    seed: u64,
) -> Option<(String, Vec<Tensor>)> {
    let (cin, cout) = (c.cin_g * c.groups, c.cout_g * c.groups);
    let span = |k: usize| c.dil * (k - 1) + 1;
    if c.h + 2 * c.pad < span(c.kh) || c.w + 2 * c.pad < span(c.kw) {
        return None;
    }
    let oh = (c.h + 2 * c.pad - span(c.kh)) / c.stride + 1;
    let ow = (c.w + 2 * c.pad - span(c.kw)) / c.stride + 1;
    let x_shape = vec![c.batch, cin, c.h, c.w];
    let w_shape = vec![cout, c.cin_g, c.kh, c.kw];
    let y_shape = vec![c.batch, cout, oh, ow];
    let mut params = Vec::new();
    let mut inputs = Vec::new();
    let x = values(x_shape.iter().product(), seed);
    let wt = values(w_shape.iter().product(), seed ^ 3);
    let mut body = operand("x", &x_shape, x, false, &mut params, &mut inputs);
    body += &operand("w", &w_shape, wt, const_w, &mut params, &mut inputs);
    let (s, p, d) = (c.stride, c.pad, c.dil);
    body += &format!(
        "  %c = conv(%x, %w) {{stride=[{s}, {s}], pad_low=[{p}, {p}], pad_high=[{p}, {p}], lhs_dilation=[1, 1], rhs_dilation=[{d}, {d}], groups={}}} : {}\n",
        c.groups,
        ty(&y_shape)
    );
    Some(with_epilogue(
        params,
        inputs,
        body,
        &y_shape,
        &[1, cout, 1, 1],
        epilogue,
        seed,
    ))
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(2),
        Just(3),
        Just(4),
        Just(5),
        Just(7),
        Just(13),
        Just(16),
        Just(17),
        Just(31),
        Just(61),
        Just(100),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, .. ProptestConfig::default() })]

    /// `max(x * y + b, 0) / (|x| + 1)` with `b` broadcast along rows, and the transpose of `x`
    /// added (a strided, not vectorized, read): bitwise equal to the interpreter.
    #[test]
    fn elementwise_matches_the_interpreter(
        rows in dim(), cols in dim(), big in any::<bool>(), seed in any::<u64>(),
    ) {
        let cols = if big { cols * 97 } else { cols };
        let s = ty(&[rows, cols]);
        let src = format!(
            "func @main(%x: {s}, %y: {s}, %b: f32[{cols}], %t: f32[{cols},{rows}]) -> (z: {s}, u: {s}) {{
  %m = mul(%x, %y) : {s}
  %a = add(%m, %b) : {s}
  %zero = constant() {{value=dense<f32[]>[0.0]}} : f32[]
  %r = max(%a, %zero) : {s}
  %ax = abs(%x) : {s}
  %one = constant() {{value=dense<f32[]>[1.0]}} : f32[]
  %d = add(%ax, %one) : {s}
  %z = div(%r, %d) : {s}
  %tt = transpose(%t) {{perm=[1, 0]}} : {s}
  %u = sub(%x, %tt) : {s}
  return %z, %u
}}
");
        let n = rows * cols;
        let inputs = vec![
            Tensor::from_vec(vec![rows, cols], values(n, seed)).unwrap(),
            Tensor::from_vec(vec![rows, cols], values(n, seed ^ 1)).unwrap(),
            Tensor::from_vec(vec![cols], values(cols, seed ^ 2)).unwrap(),
            Tensor::from_vec(vec![cols, rows], values(n, seed ^ 3)).unwrap(),
        ];
        check_tol(&src, inputs, 0.0)?;
    }

    /// Row sums, row maxima and a softmax over the last axis; column sums and minima (four
    /// columns at a time).
    #[test]
    fn reductions_match_the_interpreter(rows in dim(), cols in dim(), seed in any::<u64>()) {
        let s = ty(&[rows, cols]);
        let r = ty(&[rows]);
        let c = ty(&[cols]);
        let src = format!(
            "func @main(%x: {s}) -> (s: {r}, m: {r}, p: {s}, cs: {c}, cm: {c}) {{
  %s = reduce_sum(%x) {{axes=[1], keep_dims=false}} : {r}
  %m = reduce_max(%x) {{axes=[1], keep_dims=false}} : {r}
  %p = softmax(%x) {{axes=[1]}} : {s}
  %cs = reduce_sum(%x) {{axes=[0], keep_dims=false}} : {c}
  %cm = reduce_min(%x) {{axes=[0], keep_dims=false}} : {c}
  return %s, %m, %p, %cs, %cm
}}
");
        let inputs = vec![Tensor::from_vec(vec![rows, cols], values(rows * cols, seed)).unwrap()];
        check(&src, inputs)?;
    }

    #[test]
    fn matmul_matches_the_interpreter(
        m in dim(), k in dim(), n in dim(), batch in 0usize..3,
        transpose_b in any::<bool>(), const_b in any::<bool>(), epilogue in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let epilogue = if epilogue { Epilogue::BiasRelu } else { Epilogue::None };
        let (src, inputs) = matmul_case(m, k, n, batch, transpose_b, const_b, epilogue, seed);
        check(&src, inputs)?;
    }

    /// A matmul whose epilogue has no lane-wise form (erf, exp): the contraction runs four
    /// lanes at a time and the epilogue lane by lane; and its transpose (a strided store).
    #[test]
    fn matmul_with_a_scalar_epilogue_matches_the_interpreter(
        m in dim(), k in dim(), n in dim(), seed in any::<u64>(),
    ) {
        let (x, w, y, t) = (ty(&[m, k]), ty(&[k, n]), ty(&[m, n]), ty(&[n, m]));
        let src = format!(
            "func @main(%x: {x}, %w: {w}, %b: f32[{n}]) -> (g: {y}, t: {t}) {{
  %p = dot_general(%x, %w) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : {y}
  %a = add(%p, %b) : {y}
  %e = erf(%a) : {y}
  %g = mul(%a, %e) : {y}
  %q = exp(%p) : {y}
  %t = transpose(%q) {{perm=[1, 0]}} : {t}
  return %g, %t
}}
");
        let inputs = vec![
            Tensor::from_vec(vec![m, k], values(m * k, seed)).unwrap(),
            Tensor::from_vec(vec![k, n], values(k * n, seed ^ 1)).unwrap(),
            Tensor::from_vec(vec![n], values(n, seed ^ 2)).unwrap(),
        ];
        check(&src, inputs)?;
    }

    #[test]
    fn conv_matches_the_interpreter(
        batch in 1usize..3, cin_g in prop_oneof![Just(1usize), Just(2), Just(3), Just(5)],
        cout_g in prop_oneof![Just(1usize), Just(4), Just(7)],
        groups in prop_oneof![Just(1usize), Just(2), Just(3)],
        h in 1usize..12, w in 1usize..12, kh in prop_oneof![Just(1usize), Just(3), Just(5)],
        kw in prop_oneof![Just(1usize), Just(2), Just(3)],
        stride in 1usize..3, pad in 0usize..3, dil in 1usize..3,
        const_w in any::<bool>(), seed in any::<u64>(),
    ) {
        let c = Conv { batch, cin_g, cout_g, groups, h, w, kh, kw, stride, pad, dil };
        let case = conv_case(c, const_w, Epilogue::None, seed);
        prop_assume!(case.is_some());
        let (src, inputs) = case.unwrap();
        check(&src, inputs)?;
    }
}

/// Sizes for the packed GEMM path: 1, primes, odd sizes, and sizes around the micro-kernel's
/// tile (6 × 8) and the K chunk (256).
fn gemm_dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(5),
        Just(6),
        Just(7),
        Just(8),
        Just(13),
        Just(17),
        Just(31),
        Just(49),
        Just(64),
        Just(97),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Matmuls large enough for the packed GEMM schedule (M × N × K >= 4096, N >= 8): batched
    /// or not, B transposed or not, constant (packed once at load) or an input, with an
    /// epilogue of bias, ReLU and a residual input added, on 1 and 2 threads.
    #[test]
    fn packed_gemm_matches_the_interpreter(
        m in gemm_dim(), n in prop_oneof![Just(8usize), Just(9), Just(16), Just(23), Just(64), Just(131)],
        k in prop_oneof![Just(4usize), Just(7), Just(61), Just(256), Just(300)],
        batch in 0usize..3, transpose_b in any::<bool>(), const_b in any::<bool>(),
        epilogue in any::<bool>(), seed in any::<u64>(),
    ) {
        prop_assume!(m * n * k >= 4096);
        let epilogue = if epilogue { Epilogue::BiasReluResidual } else { Epilogue::None };
        let (src, inputs) = matmul_case(m, k, n, batch, transpose_b, const_b, epilogue, seed);
        check(&src, inputs)?;
    }

    /// Convolutions as implicit GEMMs (im2col packed from the input, with padding, strides,
    /// dilation and groups; constant weights packed once), with a per-channel bias, ReLU and a
    /// residual input in the epilogue, on 1 and 2 threads.
    #[test]
    fn implicit_gemm_conv_matches_the_interpreter(
        batch in 1usize..3, cin_g in prop_oneof![Just(1usize), Just(3), Just(8), Just(13)],
        cout_g in prop_oneof![Just(8usize), Just(13), Just(32)],
        groups in prop_oneof![Just(1usize), Just(2)],
        h in 5usize..16, w in 5usize..16, kh in prop_oneof![Just(1usize), Just(3), Just(5)],
        kw in prop_oneof![Just(1usize), Just(3)],
        stride in 1usize..3, pad in 0usize..3, dil in 1usize..3,
        const_w in any::<bool>(), epilogue in any::<bool>(), seed in any::<u64>(),
    ) {
        let c = Conv { batch, cin_g, cout_g, groups, h, w, kh, kw, stride, pad, dil };
        let epilogue = if epilogue { Epilogue::BiasReluResidual } else { Epilogue::None };
        let case = conv_case(c, const_w, epilogue, seed);
        prop_assume!(case.is_some());
        let (src, inputs) = case.unwrap();
        check(&src, inputs)?;
    }
}

/// Integer edge cases with the interpreter's semantics: division and remainder by zero (0),
/// `MIN / -1` (wraps), shifts by counts outside the width, saturating float-to-int conversion
/// (NaN to 0), integer powers, on i8, i32, u16 and i64.
#[test]
fn integer_semantics_match_the_interpreter() {
    for dt in ["i8", "i32", "u16", "i64"] {
        let src = format!(
            "func @main(%a: {dt}[12], %b: {dt}[12], %f: f32[12]) -> (q: {dt}[12], r: {dt}[12], l: {dt}[12], s: {dt}[12], c: {dt}[12], p: {dt}[12]) {{
  %q = div(%a, %b) : {dt}[12]
  %r = rem(%a, %b) : {dt}[12]
  %l = shift_left(%a, %b) : {dt}[12]
  %s = shift_right(%a, %b) : {dt}[12]
  %c = convert(%f) {{to={dt}}} : {dt}[12]
  %p = pow(%a, %b) : {dt}[12]
  return %q, %r, %l, %s, %c, %p
}}
"
        );
        let (a, b): (Vec<i64>, Vec<i64>) = (
            vec![7, -7, 100, -128, 5, 0, -1, 3, 1, -1, 2, 60],
            vec![0, 2, -1, -1, 9, 3, 70, -2, -3, -3, 7, 3],
        );
        let f = vec![
            1.5f32,
            -2.7,
            f32::NAN,
            1e10,
            -1e10,
            f32::INFINITY,
            f32::NEG_INFINITY,
            300.0,
            -300.0,
            0.99,
            -0.99,
            65535.5,
        ];
        let to = |v: &[i64]| {
            let t = Tensor::from_vec(vec![12], v.to_vec()).unwrap();
            terafab_ir::interp::elementwise::convert(&t, dt.parse().unwrap()).unwrap()
        };
        let inputs = vec![to(&a), to(&b), Tensor::from_vec(vec![12], f).unwrap()];
        check_tol(&src, inputs, 0.0).unwrap();
    }
}

/// Constant row-major weights whose columns fill whole panels are packed at load by the
/// runtime's copy loop (no generated pack phase): several K chunks, several blocks of A
/// panels, a matrix-vector product, with bias, ReLU and a residual.
#[test]
fn weights_packed_by_rows_match_the_interpreter() {
    for (m, k, n) in [(70, 600, 40), (1, 300, 64), (13, 40, 8), (200, 64, 136)] {
        let (src, inputs) = matmul_case(m, k, n, 0, false, true, Epilogue::BiasReluResidual, 9);
        let clif = terafab_cranelift::emit_clif(&common::fuse_text(&src)).unwrap();
        assert!(clif.contains("packed once from"), "{m}x{k}x{n}:\n{clif}");
        check(&src, inputs).unwrap();
    }
}

/// Stride-1 convolutions over rows wider than a panel: whole panels within one output row are
/// packed with their variables bound once, the others group by group or lane by lane
/// (across rows, padding at the row ends, dilation, the last partial panel).
#[test]
fn im2col_panels_within_rows_match_the_interpreter() {
    for (h, w, pad, dil) in [(6, 40, 1, 1), (5, 21, 2, 2), (4, 35, 1, 1)] {
        let c = Conv {
            batch: 1,
            cin_g: 3,
            cout_g: 8,
            groups: 1,
            h,
            w,
            kh: 3,
            kw: 3,
            stride: 1,
            pad,
            dil,
        };
        let (src, inputs) = conv_case(c, false, Epilogue::BiasRelu, 5).unwrap();
        check(&src, inputs).unwrap();
    }
}

/// f16 and bf16 computed in f32 and rounded after every op, transcendental functions through
/// libm (f64, and `tanh`, `pow` at every width), conversions between the float types and from
/// f64 (round to odd): equal to the interpreter. `exp` and `logistic` in f32 registers (f32,
/// f16, bf16) are the straight-line forms of `fastmath`: within 1e-6 relative of the
/// interpreter's libm values for f32, and one rounding step of the narrow type for f16/bf16
/// (the two may round to neighbouring values there).
#[test]
fn narrow_floats_and_libm_match_the_interpreter() {
    for (dt, fast_tol) in [("f16", 1e-3), ("bf16", 8e-3), ("f32", 1e-6), ("f64", 0.0)] {
        let exact = format!(
            "func @main(%x: f64[16]) -> (y: {dt}[16], t: {dt}[16], p: {dt}[16]) {{
  %c = convert(%x) {{to={dt}}} : {dt}[16]
  %three = constant() {{value=dense<{dt}[]>[3.0]}} : {dt}[]
  %m = mul(%c, %three) : {dt}[16]
  %y = add(%m, %c) : {dt}[16]
  %t = tanh(%c) : {dt}[16]
  %p = pow(%c, %three) : {dt}[16]
  return %y, %t, %p
}}
"
        );
        let fast = format!(
            "func @main(%x: f64[16]) -> (e: {dt}[16], s: {dt}[16]) {{
  %c = convert(%x) {{to={dt}}} : {dt}[16]
  %e = exp(%c) : {dt}[16]
  %s = logistic(%c) : {dt}[16]
  return %e, %s
}}
"
        );
        let x: Vec<f64> = (0..16).map(|i| (i as f64 - 7.3) * 0.731 + 1e-9).collect();
        let inputs = vec![Tensor::from_vec(vec![16], x).unwrap()];
        check_tol(&exact, inputs.clone(), 0.0).unwrap();
        check_tol(&fast, inputs, fast_tol).unwrap();
    }
}

/// `exp`, `erf` and `logistic` on f32 (`fastmath`): against f64 libm over a sweep and the edge
/// cases (NaN, infinities, overflow and underflow thresholds, subnormal results, signed zero)
/// within their stated errors, and the f32x4 form bitwise equal to the scalar form: the same
/// values computed along a vectorized dim (`[n]`) and along a dim of extent 1 (`[n, 1]`, the
/// scalar code).
#[test]
fn fast_exp_erf_logistic() {
    let mut x: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) * 0.0531).collect();
    x.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        88.72,
        88.73,
        -87.3,
        -100.0,
        -103.9,
        -104.5,
        0.4999,
        0.5,
        -0.5,
        1e-30,
        -1e-30,
        3.9,
        -3.9,
    ]);
    let n = x.len();
    let run = |shape: &str, dims: Vec<usize>| {
        let src = format!(
            "func @main(%x: f32[{shape}]) -> (e: f32[{shape}], r: f32[{shape}], s: f32[{shape}]) {{
  %e = exp(%x) : f32[{shape}]
  %r = erf(%x) : f32[{shape}]
  %s = logistic(%x) : f32[{shape}]
  return %e, %r, %s
}}
"
        );
        let m = terafab_ir::parse::parse_module(&src).unwrap();
        let inputs = vec![Tensor::from_vec(dims, x.clone()).unwrap()];
        let out =
            terafab_cranelift::run_function(m.entry().unwrap(), &inputs, &Options { threads: 1 })
                .unwrap();
        out.iter()
            .map(|t| t.as_slice::<f32>().unwrap().to_vec())
            .collect::<Vec<_>>()
    };
    let vector = run(&n.to_string(), vec![n]);
    let scalar = run(&format!("{n},1"), vec![n, 1]);
    for (k, (v, s)) in vector.iter().zip(&scalar).enumerate() {
        for i in 0..n {
            assert!(
                v[i].to_bits() == s[i].to_bits(),
                "output {k} at x = {}: f32x4 {} and scalar {} differ",
                x[i],
                v[i],
                s[i]
            );
        }
    }
    let erf = |x: f64| {
        // erf from the interpreter's libm, as the reference.
        let t = Tensor::from_vec(vec![1], vec![x]).unwrap();
        let r = terafab_ir::interp::elementwise::unary(terafab_ir::UnaryOp::Erf, &t).unwrap();
        r.to_f64_vec()[0]
    };
    for (i, &xi) in x.iter().enumerate() {
        let xd = f64::from(xi);
        let (e, r, s) = (
            f64::from(vector[0][i]),
            f64::from(vector[1][i]),
            f64::from(vector[2][i]),
        );
        if xi.is_nan() {
            assert!(e.is_nan() && r.is_nan() && s.is_nan(), "NaN in, NaN out");
            continue;
        }
        // exp: 2 ulp relative where the result is normal, else within the smallest normal.
        let want = xd.exp();
        let ok = if want > f64::from(f32::MAX) {
            e == f64::INFINITY
        } else if want < f64::from(f32::MIN_POSITIVE) {
            (e - want).abs() <= f64::from(f32::MIN_POSITIVE) * 2f64.powi(-20) || e == 0.0
        } else {
            (e - want).abs() <= 2.4e-7 * want
        };
        assert!(ok, "exp({xi}) = {e}, want {want}");
        let want = erf(xd);
        assert!((r - want).abs() <= 2e-7, "erf({xi}) = {r}, want {want}");
        if xi == 0.0 {
            assert_eq!(
                vector[1][i].to_bits(),
                xi.to_bits(),
                "erf keeps the zero's sign"
            );
        }
        let want = 1.0 / (1.0 + (-xd).exp());
        assert!(
            (s - want).abs() <= 4.8e-7 * want + 1e-37,
            "logistic({xi}) = {s}, want {want}"
        );
    }
}

/// A float8 kernel runs through the runtime's call (the kernel interpreter), and the plan says
/// so; results equal the interpreter's.
#[test]
fn float8_kernels_run_through_the_call() {
    let src = "func @main(%x: f32[8]) -> (y: f32[8]) {
  %c = convert(%x) {to=f8e4m3fn} : f8e4m3fn[8]
  %y = convert(%c) {to=f32} : f32[8]
  return %y
}";
    let x = Tensor::from_vec(vec![8], values(8, 4)).unwrap();
    check_tol(src, vec![x.clone()], 0.0).unwrap();
    let p = common::fuse_text(src);
    let exe = terafab_cranelift::compile(&p, &Options { threads: 1 }).unwrap();
    assert!(
        exe.stats()
            .calls
            .iter()
            .any(|(_, why)| why.contains("f8e4m3fn")),
        "{:?}",
        exe.stats().calls
    );
}

/// The inline f16 conversions against `half` (the interpreter's): every f16 to f32 and back,
/// and f32 values around every rounding boundary of f16 (ties, overflow to infinity at 65520,
/// the subnormals, NaN payloads) to f16, bit for bit.
#[test]
fn f16_conversions_are_exact_for_every_value() {
    let all: Vec<half::f16> = (0..=u16::MAX).map(half::f16::from_bits).collect();
    let n = all.len();
    let src = format!(
        "func @main(%h: f16[{n}]) -> (f: f32[{n}], back: f16[{n}]) {{
  %f = convert(%h) {{to=f32}} : f32[{n}]
  %back = convert(%f) {{to=f16}} : f16[{n}]
  return %f, %back
}}
"
    );
    check_tol(&src, vec![Tensor::from_vec(vec![n], all).unwrap()], 0.0).unwrap();
    // Every f16 value's f32 neighbours: the value, half an f16 ulp either side (ties), and
    // one f32 ulp off each tie; plus a spread of all f32 bit patterns.
    let mut xs: Vec<f32> = Vec::new();
    for b in 0..=u16::MAX {
        let f = half::f16::from_bits(b).to_f32();
        let next = half::f16::from_bits(b.wrapping_add(1)).to_f32();
        if !f.is_finite() || !next.is_finite() {
            continue;
        }
        let mid = (f + next) / 2.0;
        xs.extend([
            f,
            mid,
            f32::from_bits(mid.to_bits() + 1),
            f32::from_bits(mid.to_bits() - 1),
        ]);
    }
    xs.extend((0..200_000u32).map(|i| f32::from_bits(i.wrapping_mul(21_475))));
    xs.extend([
        65519.0,
        65520.0,
        65535.0,
        65536.0,
        1e9,
        f32::INFINITY,
        f32::from_bits(0x7f80_0001),
    ]);
    let n = xs.len();
    let src = format!(
        "func @main(%x: f32[{n}]) -> (h: f16[{n}]) {{
  %h = convert(%x) {{to=f16}} : f16[{n}]
  return %h
}}
"
    );
    let m = terafab_ir::parse::parse_module(&src).unwrap();
    let f = m.entry().unwrap();
    let inputs = vec![Tensor::from_vec(vec![n], xs.clone()).unwrap()];
    let want = terafab_ir::interp::run_function(f, &inputs).unwrap();
    let got = terafab_cranelift::run_function(f, &inputs, &Options { threads: 1 }).unwrap();
    let (w, g) = (
        want[0].as_slice::<half::f16>().unwrap(),
        got[0].as_slice::<half::f16>().unwrap(),
    );
    for i in 0..n {
        assert_eq!(
            w[i].to_bits(),
            g[i].to_bits(),
            "f16 of {:e} ({:#x})",
            xs[i],
            xs[i].to_bits()
        );
    }
}
