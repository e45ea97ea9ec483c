//! The LLVM backend against the reference interpreter on random shapes: matmuls (batched,
//! transposed, with a bias-and-ReLU epilogue) and convolutions (strides, padding, dilation,
//! groups), with sizes of 1, primes and sizes that are not multiples of the micro-kernel's tile,
//! the weights both as run-time inputs (packed on every run) and as constants (packed once).
//!
//! Tolerance: the backend sums in f32 with FMA in k order, the interpreter in f64 rounded once;
//! with inputs in [-1, 1) and K <= 400 the difference stays far below 1e-4 * (1 + |expected|).
//! Each case also runs on 1 and 2 threads, whose results must be bitwise equal.

mod common;

use proptest::prelude::*;
use terafab_ir::{Module, Tensor};
use terafab_llvm::Options;

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

/// Run `src` on the interpreter and on the LLVM backend (1 and 2 threads) and compare.
fn check(src: &str, inputs: Vec<Tensor>) -> Result<(), TestCaseError> {
    let m: Module = terafab_ir::parse::parse_module(src)
        .map_err(|e| TestCaseError::fail(format!("{e}\n{src}")))?;
    let f = m.entry().unwrap();
    let want = terafab_ir::interp::run_function(f, &inputs)
        .map_err(|e| TestCaseError::fail(format!("interp: {e}")))?;
    let run = |threads| {
        terafab_llvm::run_function(
            f,
            &inputs,
            &Options {
                threads,
                ..Default::default()
            },
        )
        .map_err(|e| TestCaseError::fail(format!("llvm: {e:?}")))
    };
    let one = run(1)?;
    let two = run(2)?;
    for ((w, a), b) in want.iter().zip(&one).zip(&two) {
        prop_assert!(a.bit_eq(b), "1 and 2 threads differ");
        prop_assert_eq!(w.shape(), a.shape());
        let (w, a) = (w.to_f64_vec(), a.to_f64_vec());
        for (i, (x, y)) in w.iter().zip(&a).enumerate() {
            prop_assert!(
                (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                "element {i}: interpreter {x}, llvm {y}\n{src}"
            );
        }
    }
    Ok(())
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        Just(2),
        Just(3),
        Just(5),
        Just(7),
        Just(13),
        Just(16),
        Just(17),
        Just(31),
        Just(48),
        Just(61),
        Just(100),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn matmul_matches_the_interpreter(
        m in dim(), k in dim(), n in dim(), batch in 0usize..3,
        transpose_b in any::<bool>(), const_b in any::<bool>(), epilogue in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let bshape = |s: Vec<usize>| -> Vec<usize> {
            if batch > 0 { [vec![batch], s].concat() } else { s }
        };
        let a_shape = bshape(vec![m, k]);
        let b_shape = bshape(if transpose_b { vec![n, k] } else { vec![k, n] });
        let y_shape = bshape(vec![m, n]);
        let off = usize::from(batch > 0);
        let (lb, rb) = if batch > 0 { ("[0]", "[0]") } else { ("[]", "[]") };
        let rc = if transpose_b { 1 + off } else { off };
        let a = values(a_shape.iter().product(), seed);
        let b = values(b_shape.iter().product(), seed ^ 1);
        let bias = values(n, seed ^ 2);
        let mut params = vec![format!("%a: {}", ty(&a_shape))];
        let mut body = String::new();
        let mut inputs = vec![Tensor::from_vec(a_shape.clone(), a).unwrap()];
        if const_b {
            body += &format!("  %b = constant() {{value={}}} : {}\n", dense(&b_shape, &b), ty(&b_shape));
        } else {
            params.push(format!("%b: {}", ty(&b_shape)));
            inputs.push(Tensor::from_vec(b_shape.clone(), b).unwrap());
        }
        body += &format!(
            "  %mm = dot_general(%a, %b) {{lhs_batch={lb}, rhs_batch={rb}, lhs_contract=[{}], rhs_contract=[{rc}]}} : {}\n",
            1 + off, ty(&y_shape)
        );
        let result = if epilogue {
            body += &format!("  %bias = constant() {{value={}}} : f32[{n}]\n", dense(&[n], &bias));
            body += &format!("  %s = add(%mm, %bias) : {}\n", ty(&y_shape));
            body += "  %zero = constant() {value=dense<f32[]>[0.0]} : f32[]\n";
            body += &format!("  %y = max(%s, %zero) : {}\n", ty(&y_shape));
            "%y"
        } else {
            "%mm"
        };
        let src = format!(
            "func @main({}) -> (y: {}) {{\n{body}  return {result}\n}}\n",
            params.join(", "), ty(&y_shape)
        );
        check(&src, inputs)?;
    }

    #[test]
    fn conv_matches_the_interpreter(
        batch in 1usize..3, cin_g in prop_oneof![Just(1usize), Just(2), Just(3), Just(5)],
        cout_g in prop_oneof![Just(1usize), Just(4), Just(7), Just(16)],
        groups in prop_oneof![Just(1usize), Just(2), Just(3)],
        h in 1usize..12, w in 1usize..12, kh in prop_oneof![Just(1usize), Just(3), Just(5)],
        kw in prop_oneof![Just(1usize), Just(2), Just(3)],
        stride in 1usize..3, pad in 0usize..3, dil in 1usize..3,
        const_w in any::<bool>(), seed in any::<u64>(),
    ) {
        let (cin, cout) = (cin_g * groups, cout_g * groups);
        let span = |k: usize| dil * (k - 1) + 1;
        prop_assume!(h + 2 * pad >= span(kh) && w + 2 * pad >= span(kw));
        let oh = (h + 2 * pad - span(kh)) / stride + 1;
        let ow = (w + 2 * pad - span(kw)) / stride + 1;
        let x_shape = vec![batch, cin, h, w];
        let w_shape = vec![cout, cin_g, kh, kw];
        let y_shape = vec![batch, cout, oh, ow];
        let x = values(x_shape.iter().product(), seed);
        let wt = values(w_shape.iter().product(), seed ^ 3);
        let mut params = vec![format!("%x: {}", ty(&x_shape))];
        let mut inputs = vec![Tensor::from_vec(x_shape.clone(), x).unwrap()];
        let mut body = String::new();
        if const_w {
            body += &format!("  %w = constant() {{value={}}} : {}\n", dense(&w_shape, &wt), ty(&w_shape));
        } else {
            params.push(format!("%w: {}", ty(&w_shape)));
            inputs.push(Tensor::from_vec(w_shape.clone(), wt).unwrap());
        }
        body += &format!(
            "  %y = conv(%x, %w) {{stride=[{stride}, {stride}], pad_low=[{pad}, {pad}], pad_high=[{pad}, {pad}], lhs_dilation=[1, 1], rhs_dilation=[{dil}, {dil}], groups={groups}}} : {}\n",
            ty(&y_shape)
        );
        let src = format!(
            "func @main({}) -> (y: {}) {{\n{body}  return %y\n}}\n",
            params.join(", "), ty(&y_shape)
        );
        check(&src, inputs)?;
    }
}

/// The shapes above do reach the GEMM schedule (its micro-kernel is in the generated code), with
/// the micro-kernel's rows chosen to pad M least (8 output channels: 2 panels of 5 rows, not 2
/// of 6), and a matrix-vector product gets the one-row micro-kernel.
#[test]
fn contractions_take_the_gemm_schedule() {
    let program = common::fuse_text;
    let ir = |src: &str| {
        terafab_llvm::emit_llvm(
            &program(src),
            &terafab_llvm::Cpu::Named("x86-64-v3".into()),
            terafab_llvm::IrStage::Generated,
        )
        .unwrap()
    };
    let gemm = ir("func @main(%a: f32[48,61], %b: f32[61,17]) -> (y: f32[48,17]) {
  %y = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[48,17]
  return %y
}");
    assert!(gemm.contains("tf.ukernel.6x16"), "{gemm}");
    let conv = ir("func @main(%x: f32[1,3,10,10], %w: f32[8,3,3,3]) -> (y: f32[1,8,8,8]) {
  %y = conv(%x, %w) {stride=[1, 1], pad_low=[0, 0], pad_high=[0, 0], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,8,8,8]
  return %y
}");
    assert!(conv.contains("tf.ukernel.5x16"), "{conv}");
    let gemv = ir("func @main(%a: f32[64,64], %b: f32[64]) -> (y: f32[64]) {
  %y = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[64]
  return %y
}");
    assert!(gemv.contains("tf.ukernel.1x16"), "{gemv}");
}

/// The epilogue stores a convolution's pixels at `m * 576 + n` (its output rows are 48 wide):
/// the store's dims, `n / 48` and `n % 48`, recombine into `n` in the address, with no
/// division per element (LLVM does not undo divisions by 48, and its stores stayed scalar).
#[test]
fn epilogue_addresses_recombine_the_pixels() {
    let src = "func @main(%x: f32[1,8,12,48], %w: f32[16,8,3,3]) -> (y: f32[1,16,12,48]) {
  %y = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,16,12,48]
  return %y
}";
    let ir = terafab_llvm::emit_llvm(
        &common::fuse_text(src),
        &terafab_llvm::Cpu::Named("x86-64-v3".into()),
        terafab_llvm::IrStage::Generated,
    )
    .unwrap();
    let compute = ir
        .split("\ndefine ")
        .find(|f| f.contains("compute(") && f.contains("@tf.ukernel"))
        .expect("a compute function");
    let per_element = compute
        .lines()
        .skip_while(|l| !l.contains("%tp = "))
        .any(|l| l.contains("udiv") || l.contains("urem"));
    assert!(!per_element, "{compute}");
    let xs = Tensor::from_vec(vec![1, 8, 12, 48], values(8 * 12 * 48, 3)).unwrap();
    let ws = Tensor::from_vec(vec![16, 8, 3, 3], values(16 * 72, 4)).unwrap();
    check(src, vec![xs, ws]).unwrap();
}

/// A 1x1 convolution whose epilogue adds a residual along the output's rows prefetches the
/// lines two tiles on (its tiles touch one line in each of many rows at a time); without a
/// residual it does not. Both match the interpreter.
#[test]
fn residual_epilogues_prefetch() {
    let conv = |residual: bool| {
        let (add, inputs) = match residual {
            true => (
                "  %y = add(%c, %r) : f32[1,32,8,32]\n",
                ", %r: f32[1,32,8,32]",
            ),
            false => ("", ""),
        };
        let out = if residual { "%y" } else { "%c" };
        format!(
            "func @main(%x: f32[1,16,8,32], %w: f32[32,16,1,1]{inputs}) -> (y: f32[1,32,8,32]) {{
  %c = conv(%x, %w) {{stride=[1, 1], pad_low=[0, 0], pad_high=[0, 0], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : f32[1,32,8,32]
{add}  return {out}
}}
"
        )
    };
    for residual in [true, false] {
        let src = conv(residual);
        let ir = terafab_llvm::emit_llvm(
            &common::fuse_text(&src),
            &terafab_llvm::Cpu::Named("x86-64-v3".into()),
            terafab_llvm::IrStage::Generated,
        )
        .unwrap();
        assert_eq!(ir.contains("@llvm.prefetch"), residual, "{src}");
        let mut inputs = vec![
            Tensor::from_vec(vec![1, 16, 8, 32], values(16 * 256, 31)).unwrap(),
            Tensor::from_vec(vec![32, 16, 1, 1], values(32 * 16, 32)).unwrap(),
        ];
        if residual {
            inputs.push(Tensor::from_vec(vec![1, 32, 8, 32], values(32 * 256, 33)).unwrap());
        }
        check(&src, inputs).unwrap();
    }
}

/// A swapped convolution (pixels along the tile's rows) stores its epilogue column by column
/// from a transposed copy of the tile (vector shuffles): 3x3 convolutions with K = 576 over
/// 14x14 (196 pixels: a last panel of 4 rows), 7x7 pixels (5-row tiles), with a bias
/// and ReLU, a residual, and 40 channels over 7x7 (a partial column panel). Each matches the
/// interpreter on 1 and 2 threads; an unswapped one (K = 72: channels along the rows) keeps
/// the row-by-row epilogue.
#[test]
fn swapped_epilogues_store_by_columns() {
    let conv = |hw: usize, ci: usize, co: usize, residual: bool| {
        let (add, inputs, out) = match residual {
            true => (
                format!("  %y = add(%s, %r) : f32[1,{co},{hw},{hw}]\n"),
                format!(", %r: f32[1,{co},{hw},{hw}]"),
                "%y",
            ),
            false => (String::new(), String::new(), "%s"),
        };
        format!(
            "func @main(%x: f32[1,{ci},{hw},{hw}], %w: f32[{co},{ci},3,3], %b: f32[1,{co},1,1]{inputs}) -> (y: f32[1,{co},{hw},{hw}]) {{
  %c = conv(%x, %w) {{stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : f32[1,{co},{hw},{hw}]
  %a = add(%c, %b) : f32[1,{co},{hw},{hw}]
  %z = constant() {{value=dense<f32[]>[0.0]}} : f32[]
  %s = max(%a, %z) : f32[1,{co},{hw},{hw}]
{add}  return {out}
}}
"
        )
    };
    for (hw, ci, co, residual, by_columns) in [
        (14, 64, 32, false, true),
        (14, 64, 32, true, true),
        (7, 64, 32, true, true),
        (7, 64, 40, false, true),
        (14, 8, 32, false, false),
    ] {
        let src = conv(hw, ci, co, residual);
        let ir = terafab_llvm::emit_llvm(
            &common::fuse_text(&src),
            &terafab_llvm::Cpu::Named("x86-64-v3".into()),
            terafab_llvm::IrStage::Generated,
        )
        .unwrap();
        assert_eq!(ir.contains("%tt = alloca"), by_columns, "{src}");
        let mut inputs = vec![
            Tensor::from_vec(vec![1, ci, hw, hw], values(ci * hw * hw, 41)).unwrap(),
            Tensor::from_vec(vec![co, ci, 3, 3], values(co * ci * 9, 42)).unwrap(),
            Tensor::from_vec(vec![1, co, 1, 1], values(co, 43)).unwrap(),
        ];
        if residual {
            inputs.push(Tensor::from_vec(vec![1, co, hw, hw], values(co * hw * hw, 44)).unwrap());
        }
        check(&src, inputs).unwrap();
    }
}

/// Windows over a padded input read a frame (the input with its padding, copied by a `frame`
/// phase) instead of checking bounds at every load: max pools with stride 2 and 1, a sum
/// window, a max pool fused with the ReLU before it, dilation, odd sizes. A pad (each element
/// loaded once: a frame would copy it twice) and an unpadded pool read their input directly.
/// Each matches the interpreter on 1 and 2 threads.
#[test]
fn padded_windows_read_a_frame() {
    let pool = |kind: &str, x: [usize; 4], k: usize, s: usize, p: usize, dil: usize| {
        let span = dil * (k - 1) + 1;
        let o = |n: usize| (n + 2 * p - span) / s + 1;
        let (oh, ow) = (o(x[2]), o(x[3]));
        let [n, c, h, w] = x;
        format!(
            "func @main(%x: f32[{n},{c},{h},{w}]) -> (y: f32[{n},{c},{oh},{ow}]) {{
  %y = reduce_window_{kind}(%x) {{window=[1, 1, {k}, {k}], stride=[1, 1, {s}, {s}], dilation=[1, 1, {dil}, {dil}], pad_low=[0, 0, {p}, {p}], pad_high=[0, 0, {p}, {p}]}} : f32[{n},{c},{oh},{ow}]
  return %y
}}
"
        )
    };
    let relu_pool = "func @main(%x: f32[1,8,20,20]) -> (y: f32[1,8,10,10]) {
  %z = constant() {value=dense<f32[]>[0.0]} : f32[]
  %r = max(%x, %z) : f32[1,8,20,20]
  %y = reduce_window_max(%r) {window=[1, 1, 3, 3], stride=[1, 1, 2, 2], dilation=[1, 1, 1, 1], pad_low=[0, 0, 1, 1], pad_high=[0, 0, 1, 1]} : f32[1,8,10,10]
  return %y
}
".to_string();
    let pad = "func @main(%x: f32[1,8,20,20]) -> (y: f32[1,8,22,22]) {
  %z = constant() {value=dense<f32[]>[0.0]} : f32[]
  %y = pad(%x, %z) {low=[0, 0, 1, 1], high=[0, 0, 1, 1], interior=[0, 0, 0, 0]} : f32[1,8,22,22]
  return %y
}
"
    .to_string();
    // (kind, input shape, window, stride, pad, dilation, frame expected)
    let pools = [
        ("max", [1, 16, 32, 32], 3, 2, 1, 1, true),
        ("max", [1, 16, 31, 29], 3, 2, 1, 1, true),
        ("max", [2, 8, 14, 14], 3, 1, 1, 1, true),
        ("sum", [1, 8, 15, 17], 3, 1, 1, 1, true),
        ("max", [1, 8, 16, 16], 3, 1, 2, 2, true),
        ("max", [1, 16, 32, 32], 3, 2, 0, 1, false),
    ];
    let cases = pools
        .into_iter()
        .map(|(kind, x, k, s, p, dil, framed)| (pool(kind, x, k, s, p, dil), x, framed))
        .chain([
            (relu_pool, [1, 8, 20, 20], true),
            (pad, [1, 8, 20, 20], false),
        ]);
    for (src, shape, framed) in cases {
        let n = shape.iter().product();
        let x = Tensor::from_vec(shape.to_vec(), values(n, 13)).unwrap();
        check(&src, vec![x.clone()]).unwrap();
        let exe = terafab_llvm::compile(&common::fuse_text(&src), &Options::default()).unwrap();
        let (_, times) = exe.run_profiled(&[x]).unwrap();
        let phases: Vec<_> = times.iter().map(|t| &t.phase).collect();
        assert_eq!(
            times.iter().any(|t| t.phase.contains("frame")),
            framed,
            "{src}: {phases:?}"
        );
    }
}

/// A 7x7 feature map as the 16-column side would waste 15 of 64 columns: the operands swap
/// (49 pixels as rows, 5-row panels; 64 channels as columns), the pixels are read in place
/// from a padded frame (no im2col), the epilogue stores strided, and the result still matches
/// the interpreter (bias and ReLU in the epilogue, weights constant).
#[test]
fn small_feature_maps_swap_the_operands() {
    let (x_shape, w_shape) = ([1, 32, 7, 7], [64, 32, 3, 3]);
    let w = values(w_shape.iter().product(), 7);
    let bias = values(64, 8);
    let src = format!(
        "func @main(%x: f32[1,32,7,7]) -> (y: f32[1,64,7,7]) {{
  %w = constant() {{value={}}} : f32[64,32,3,3]
  %c = conv(%x, %w) {{stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : f32[1,64,7,7]
  %b = constant() {{value={}}} : f32[1,64,1,1]
  %s = add(%c, %b) : f32[1,64,7,7]
  %z = constant() {{value=dense<f32[]>[0.0]}} : f32[]
  %y = max(%s, %z) : f32[1,64,7,7]
  return %y
}}
",
        dense(&w_shape, &w),
        dense(&[1, 64, 1, 1], &bias)
    );
    let ir = terafab_llvm::emit_llvm(
        &common::fuse_text(&src),
        &terafab_llvm::Cpu::Named("x86-64-v3".into()),
        terafab_llvm::IrStage::Generated,
    )
    .unwrap();
    assert!(ir.contains("tf.ukernel.direct.5x16"), "{ir}");
    let x = Tensor::from_vec(x_shape.to_vec(), values(x_shape.iter().product(), 9)).unwrap();
    check(&src, vec![x]).unwrap();
}

/// Stride-1 convolutions whose im2col panels are copied as whole 16-float vectors where the
/// panel lies in one output row and both its ends are inside the input, and lane by lane
/// elsewhere (panels across rows, padding at the row ends, dilation, the last partial panel):
/// both paths in one kernel, against the interpreter.
#[test]
fn im2col_panels_copied_as_vectors() {
    for (h, w, pad, dil) in [(6, 40, 1, 1), (5, 21, 2, 2), (4, 19, 0, 1), (4, 35, 1, 1)] {
        let (cin, cout, k) = (3, 8, 3);
        let span = dil * (k - 1) + 1;
        let (oh, ow) = (h + 2 * pad - span + 1, w + 2 * pad - span + 1);
        let src = format!(
            "func @main(%x: f32[1,{cin},{h},{w}], %w: f32[{cout},{cin},{k},{k}]) -> (y: f32[1,{cout},{oh},{ow}]) {{
  %y = conv(%x, %w) {{stride=[1, 1], pad_low=[{pad}, {pad}], pad_high=[{pad}, {pad}], lhs_dilation=[1, 1], rhs_dilation=[{dil}, {dil}], groups=1}} : f32[1,{cout},{oh},{ow}]
  return %y
}}
"
        );
        let ir = terafab_llvm::emit_llvm(
            &common::fuse_text(&src),
            &terafab_llvm::Cpu::Named("x86-64-v3".into()),
            terafab_llvm::IrStage::Generated,
        )
        .unwrap();
        assert!(ir.contains("panel.vec"), "no vector panel copy for {h}x{w}");
        let x = Tensor::from_vec(vec![1, cin, h, w], values(cin * h * w, 11)).unwrap();
        let wt = Tensor::from_vec(vec![cout, cin, k, k], values(cout * cin * k * k, 12)).unwrap();
        check(&src, vec![x, wt]).unwrap();
    }
}

/// Convolutions whose input the micro-kernel reads in place (no im2col matrix): padded ones
/// through a frame made by a `padA` (`padB`) phase, unpadded ones from the input itself.
/// As B (the pixels in the panels' lanes) where the output rows are a multiple of 16 pixels:
/// padded, unpadded, dilated, a batch of 2, a 3-channel stem (K = 27), a long K (576), and
/// strides 2 and 3 (a 5x5 kernel) through a frame whose rows are split in phases (made for an unpadded input
/// too), a 7x7 stride-2 stem among them. Else as A: stride 2, dilation 2, a batch of 2,
/// non-square maps, a 7x7 map (swapped already, K = 288), larger maps swapped for it (K =
/// 576) and a 7x7 stride-2 stem over rows of 27 pixels (K = 147: its strided pixels would be
/// packed lane by lane). Each matches the interpreter
/// on 1 and 2 threads and does not pack the operand it reads in place. A 1x1 convolution
/// (nothing to expand), a short K (72: the swapped epilogue would cost more than the packing)
/// over rows of 20 pixels, and a reversed input keep their packing.
#[test]
fn convolutions_read_their_input_in_place() {
    let conv = |x: [usize; 4], co: usize, k: usize, stride: usize, pad: usize, dil: usize| {
        let (n, c, h, w) = (x[0], x[1], x[2], x[3]);
        let span = dil * (k - 1) + 1;
        let (oh, ow) = (
            (h + 2 * pad - span) / stride + 1,
            (w + 2 * pad - span) / stride + 1,
        );
        let wts = values(co * c * k * k, 5);
        let src = format!(
            "func @main(%x: f32[{n},{c},{h},{w}]) -> (y: f32[{n},{co},{oh},{ow}]) {{
  %w = constant() {{value={}}} : f32[{co},{c},{k},{k}]
  %y = conv(%x, %w) {{stride=[{stride}, {stride}], pad_low=[{pad}, {pad}], pad_high=[{pad}, {pad}], lhs_dilation=[1, 1], rhs_dilation=[{dil}, {dil}], groups=1}} : f32[{n},{co},{oh},{ow}]
  return %y
}}
",
            dense(&[co, c, k, k], &wts)
        );
        let xs = Tensor::from_vec(x.to_vec(), values(n * c * h * w, 6)).unwrap();
        (src, xs)
    };
    // (input, out channels, kernel, stride, pad, dilation, operand read in place (or ""),
    // frame made)
    let cases = [
        ([1, 64, 20, 20], 32, 3, 1, 1, 1, "A", true),
        ([1, 32, 7, 7], 32, 3, 1, 1, 1, "A", true),
        ([2, 64, 9, 11], 16, 3, 1, 1, 1, "A", true),
        ([1, 64, 29, 27], 32, 3, 2, 1, 1, "A", true),
        ([1, 3, 64, 64], 32, 7, 2, 3, 1, "B", true),
        ([1, 3, 62, 60], 32, 7, 2, 3, 1, "A", true),
        ([1, 64, 12, 12], 16, 3, 1, 2, 2, "A", true),
        ([1, 8, 20, 20], 16, 3, 1, 1, 1, "", false),
        ([1, 64, 12, 10], 32, 3, 1, 0, 1, "A", false),
        ([1, 64, 14, 14], 48, 1, 1, 0, 1, "", false),
        ([1, 8, 16, 32], 16, 3, 1, 1, 1, "B", true),
        ([1, 3, 64, 64], 32, 3, 1, 1, 1, "B", true),
        ([1, 16, 18, 34], 24, 3, 1, 0, 1, "B", false),
        ([1, 8, 16, 16], 16, 3, 1, 2, 2, "B", true),
        ([2, 8, 8, 16], 16, 3, 1, 1, 1, "B", true),
        ([1, 64, 16, 16], 48, 3, 1, 1, 1, "B", true),
        ([1, 8, 32, 32], 16, 5, 2, 2, 1, "B", true),
        ([1, 8, 33, 33], 16, 3, 2, 0, 1, "B", true),
        ([1, 4, 49, 49], 8, 5, 3, 1, 1, "B", true),
        ([1, 8, 32, 32], 16, 5, 2, 4, 2, "B", true),
    ];
    // A reversed input fused into the load runs backwards along the pixels: packed, not read
    // in place (its row or panel pointers would start outside the input), and still exact.
    for w in [20, 32] {
        let reversed = format!("func @main(%x: f32[1,64,20,{w}], %w: f32[32,64,3,3]) -> (y: f32[1,32,20,{w}]) {{
  %r = reverse(%x) {{axes=[3]}} : f32[1,64,20,{w}]
  %y = conv(%r, %w) {{stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1}} : f32[1,32,20,{w}]
  return %y
}}");
        let xs = Tensor::from_vec(vec![1, 64, 20, w], values(64 * 20 * w, 11)).unwrap();
        let ws = Tensor::from_vec(vec![32, 64, 3, 3], values(32 * 64 * 9, 12)).unwrap();
        check(&reversed, vec![xs, ws]).unwrap();
        let ir = terafab_llvm::emit_llvm(
            &common::fuse_text(&reversed),
            &terafab_llvm::Cpu::Named("x86-64-v3".into()),
            terafab_llvm::IrStage::Generated,
        )
        .unwrap();
        assert!(!ir.contains("tf.ukernel.direct"), "reversed, width {w}");
    }
    for (x, co, k, stride, pad, dil, read, frame) in cases {
        let (src, xs) = conv(x, co, k, stride, pad, dil);
        check(&src, vec![xs.clone()]).unwrap();
        let fused = common::fuse_text(&src);
        let ir = terafab_llvm::emit_llvm(
            &fused,
            &terafab_llvm::Cpu::Named("x86-64-v3".into()),
            terafab_llvm::IrStage::Generated,
        )
        .unwrap();
        for (side, kernel) in [("A", "tf.ukernel.direct."), ("B", "tf.ukernel.directb.")] {
            assert_eq!(ir.contains(kernel), read == side, "{x:?} k{k} s{stride}");
        }
        let exe = terafab_llvm::compile(&fused, &Options::default()).unwrap();
        let (_, times) = exe.run_profiled(&[xs]).unwrap();
        let has = |p: &str| times.iter().any(|t| t.phase.contains(p));
        let phases: Vec<_> = times.iter().map(|t| &t.phase).collect();
        if !read.is_empty() {
            assert_eq!(has(&format!("pad{read}")), frame, "{x:?} k{k}: {phases:?}");
            assert!(!has(&format!("pack{read}")), "{x:?} k{k}: {phases:?}");
        } else {
            assert!(!has("padA") && !has("padB"), "{x:?} k{k}: {phases:?}");
        }
    }
}

/// Contractions whose B is packed every run, in at least 32 panels (a convolution over a 40x40
/// map, one over a 28x28 map whose 49 panels make 17 column blocks of 3 and 1, a matmul with an
/// activation as B, a batch of 4 matmuls of 8 panels each) pack B inside the compute tasks,
/// each task its own panels just before using them: no separate packB phase runs, and the
/// results match the interpreter on 1 and 2 threads. A small one keeps its packB phase.
/// Each task packs into a slot it claims from a bit mask: on 3 and 8 threads (more tasks at
/// once than cores) the results are bitwise those of 1 thread. A 1x1 convolution over rows of
/// 14 pixels (its panels cross rows: copied as vectors all the same) and a matmul of 2 blocks
/// of A panels and 3 K chunks (each panel packed before its first use, then reused).
#[test]
fn compute_tasks_pack_their_own_b() {
    let conv = "func @main(%x: f32[1,3,40,40], %w: f32[16,3,3,3]) -> (y: f32[1,16,40,40]) {
  %y = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,16,40,40]
  return %y
}";
    let matmul = "func @main(%a: f32[20,30], %b: f32[30,2100]) -> (y: f32[20,2100]) {
  %y = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[20,2100]
  return %y
}";
    let small = "func @main(%a: f32[20,30], %b: f32[30,200]) -> (y: f32[20,200]) {
  %y = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[20,200]
  return %y
}";
    let conv28 = "func @main(%x: f32[1,8,28,28], %w: f32[24,8,3,3]) -> (y: f32[1,24,28,28]) {
  %y = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,24,28,28]
  return %y
}";
    let batched = "func @main(%a: f32[4,20,30], %b: f32[4,30,128]) -> (y: f32[4,20,128]) {
  %y = dot_general(%a, %b) {lhs_batch=[0], rhs_batch=[0], lhs_contract=[2], rhs_contract=[1]} : f32[4,20,128]
  return %y
}";
    let conv1x1 = "func @main(%x: f32[1,40,14,42], %w: f32[24,40,1,1]) -> (y: f32[1,24,14,42]) {
  %y = conv(%x, %w) {stride=[1, 1], pad_low=[0, 0], pad_high=[0, 0], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,24,14,42]
  return %y
}";
    let blocks = "func @main(%a: f32[300,600], %b: f32[600,520]) -> (y: f32[300,520]) {
  %y = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[300,520]
  return %y
}";
    for (src, fused) in [
        (conv, true),
        (conv28, true),
        (conv1x1, true),
        (matmul, true),
        (blocks, true),
        (batched, true),
        (small, false),
    ] {
        let f = terafab_ir::parse::parse_module(src).unwrap();
        let f = f.entry().unwrap();
        let inputs: Vec<Tensor> = f
            .inputs()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let shape: Vec<usize> = f
                    .values
                    .ty(v)
                    .shape
                    .dims()
                    .iter()
                    .map(|d| d.as_static().unwrap())
                    .collect();
                let n = shape.iter().product();
                Tensor::from_vec(shape, values(n, 20 + i as u64)).unwrap()
            })
            .collect();
        check(src, inputs.clone()).unwrap();
        let f = terafab_ir::parse::parse_module(src).unwrap();
        let run = |threads| {
            let opts = Options {
                threads,
                ..Default::default()
            };
            terafab_llvm::run_function(f.entry().unwrap(), &inputs, &opts).unwrap()
        };
        let one = run(1);
        for threads in [3, 8] {
            for (a, b) in one.iter().zip(&run(threads)) {
                assert!(a.bit_eq(b), "{src}: 1 and {threads} threads differ");
            }
        }
        let exe = terafab_llvm::compile(&common::fuse_text(src), &Options::default()).unwrap();
        let (_, times) = exe.run_profiled(&inputs).unwrap();
        let pack_b = times.iter().any(|t| t.phase.contains("packB"));
        assert_eq!(
            pack_b,
            !fused,
            "{src}: phases {:?}",
            times.iter().map(|t| &t.phase).collect::<Vec<_>>()
        );
    }
}

/// The f32 `exp` and `erf` the backend computes inline (so that loops over them vectorize)
/// against the interpreter's f64 functions rounded once: within 2 ulps for exp (relative
/// 2.4e-7), 3e-7 absolute for erf; infinities, zeros and NaN exactly where the interpreter has
/// them (subnormal results of exp may flush to zero).
#[test]
fn inline_exp_and_erf_are_accurate() {
    let mut x: Vec<f32> = (0..4000).map(|i| -110.0 + i as f32 * 0.05).collect();
    x.extend((0..2000).map(|i| -6.0 + i as f32 * 0.006));
    x.extend([
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e-30,
        -1e-8,
        88.72,
        88.73,
    ]);
    let n = x.len();
    let src = format!(
        "func @main(%x: f32[{n}]) -> (e: f32[{n}], r: f32[{n}]) {{\n  %e = exp(%x) : f32[{n}]\n  %r = erf(%x) : f32[{n}]\n  return %e, %r\n}}\n"
    );
    let m = terafab_ir::parse::parse_module(&src).unwrap();
    let f = m.entry().unwrap();
    let inputs = vec![Tensor::from_vec(vec![n], x.clone()).unwrap()];
    let want = terafab_ir::interp::run_function(f, &inputs).unwrap();
    let got = terafab_llvm::run_function(f, &inputs, &Options::default()).unwrap();
    for (which, (w, g)) in want.iter().zip(&got).enumerate() {
        let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
        for i in 0..n {
            let (a, b) = (w[i], g[i]);
            let ok = if a.is_nan() || a.is_infinite() {
                a.is_nan() && b.is_nan() || a == b
            } else if which == 0 {
                (a - b).abs() <= 2.4e-7 * a.abs() || a < 1.2e-38 && b.abs() < 1.2e-38
            } else {
                (a - b).abs() <= 3e-7
            };
            assert!(
                ok,
                "{} at x = {}: interpreter {a}, llvm {b}",
                ["exp", "erf"][which],
                x[i]
            );
        }
    }
}

/// Attention's context product with the heads merged back (`transpose` + `reshape` folded into
/// the store): the merged dim is split into heads and columns for the GEMM schedule, and the
/// result matches the interpreter.
#[test]
fn merged_heads_context_matches_the_interpreter() {
    let src = "func @main(%p: f32[4,37,29], %v: f32[4,29,24]) -> (y: f32[37,96]) {
  %c = dot_general(%p, %v) {lhs_batch=[0], rhs_batch=[0], lhs_contract=[2], rhs_contract=[1]} : f32[4,37,24]
  %t = transpose(%c) {perm=[1, 0, 2]} : f32[37,4,24]
  %y = reshape(%t) {shape=[37, 96]} : f32[37,96]
  return %y
}";
    let inputs = vec![
        Tensor::from_vec(vec![4, 37, 29], values(4 * 37 * 29, 5)).unwrap(),
        Tensor::from_vec(vec![4, 29, 24], values(4 * 29 * 24, 6)).unwrap(),
    ];
    check(src, inputs).unwrap();
    let p = common::fuse_text(src);
    let ir = terafab_llvm::emit_llvm(
        &p,
        &terafab_llvm::Cpu::Named("x86-64-v3".into()),
        terafab_llvm::IrStage::Generated,
    )
    .unwrap();
    // 37 rows in 5-row panels (8 of them: 40 rows, where 6-row ones would pad to 42).
    assert!(ir.contains("tf.ukernel.5x16"), "the GEMM schedule");
}

/// At attention's sizes the merged-heads context must still be split into heads, not taken
/// as 128 one-row GEMMs batched over the merged dim (which the unsplit nest also is, with its
/// sides swapped): the 6-row micro-kernel, no 1-row one, and a small per-run scratch.
#[test]
fn merged_heads_at_attention_sizes_keep_the_head_split() {
    let src = "func @main(%p: f32[4,128,128], %v: f32[4,128,64]) -> (y: f32[128,256]) {
  %c = dot_general(%p, %v) {lhs_batch=[0], rhs_batch=[0], lhs_contract=[2], rhs_contract=[1]} : f32[4,128,64]
  %t = transpose(%c) {perm=[1, 0, 2]} : f32[128,4,64]
  %y = reshape(%t) {shape=[128, 256]} : f32[128,256]
  return %y
}";
    let p = common::fuse_text(src);
    let ir = terafab_llvm::emit_llvm(
        &p,
        &terafab_llvm::Cpu::Named("x86-64-v3".into()),
        terafab_llvm::IrStage::Generated,
    )
    .unwrap();
    assert!(ir.contains("tf.ukernel.6x16"), "the GEMM schedule");
    assert!(!ir.contains("tf.ukernel.1x16"), "a degenerate batched GEMM");
    let exe = terafab_llvm::compile(&p, &Options::default()).unwrap();
    // Both operands per run: probs 4 x 22 panels x 6 x 128 and V 4 x 4 panels x 16 x 128 floats.
    assert!(exe.stats().scratch_bytes <= 600 * 1024, "{:?}", exe.stats());
}

/// Kernels of the same form (here two matmuls of one shape with different weights) share their
/// code: the second has only its trampolines; and each still reads its own weights.
#[test]
fn kernels_of_one_form_share_code() {
    let w1: Vec<f32> = values(48 * 48, 11);
    let w2: Vec<f32> = values(48 * 48, 12);
    let src = format!(
        "func @main(%x: f32[20,48]) -> (y: f32[20,48]) {{
  %w1 = constant() {{value={}}} : f32[48,48]
  %h = dot_general(%x, %w1) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : f32[20,48]
  %w2 = constant() {{value={}}} : f32[48,48]
  %y = dot_general(%h, %w2) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : f32[20,48]
  return %y
}}",
        dense(&[48, 48], &w1),
        dense(&[48, 48], &w2)
    );
    let x = Tensor::from_vec(vec![20, 48], values(20 * 48, 13)).unwrap();
    check(&src, vec![x.clone()]).unwrap();
    let m = terafab_ir::parse::parse_module(&src).unwrap();
    let f = m.entry().unwrap();
    let bind = terafab_ir::interp::bind_inputs(f, &[x]).unwrap();
    let p = terafab_passes::fuse::fuse_function(f, &bind).unwrap();
    assert_eq!(p.kernels.len(), 2);
    let ir = terafab_llvm::emit_llvm(
        &p,
        &terafab_llvm::Cpu::Named("x86-64-v3".into()),
        terafab_llvm::IrStage::Generated,
    )
    .unwrap();
    let defs = ir.lines().filter(|l| l.starts_with("define")).count();
    assert!(ir.contains("@k1.k1.compute.task"), "{ir}");
    assert!(!ir.contains("define internal void @k1.k1.compute("), "{ir}");
    // k0's three phases and their trampolines, k1's three trampolines, the micro-kernel, the
    // driver and init.
    assert_eq!(defs, 12, "{ir}");
}
