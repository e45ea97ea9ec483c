//! Snapshots of the Cranelift IR the backend generates for small kernels (before Cranelift's
//! own optimizations; `terafab compile --emit clif` prints the same text), and checks of which
//! path each kernel takes.

mod common;

use terafab_cranelift::{Options, compile, emit_clif};

/// A fused elementwise kernel: relu(x * 2 + y), four lanes at a time with a scalar remainder.
const ELEMENTWISE: &str = "func @main(%x: f32[10], %y: f32[10]) -> (z: f32[10]) {
  %two = constant() {value=dense<f32[]>[2.0]} : f32[]
  %m = mul(%x, %two) : f32[10]
  %s = add(%m, %y) : f32[10]
  %zero = constant() {value=dense<f32[]>[0.0]} : f32[]
  %z = max(%s, %zero) : f32[10]
  return %z
}";

/// A row reduction: the sum of each row of an i32 matrix, converted to f64.
const REDUCTION: &str = "func @main(%x: i32[4,6]) -> (s: f64[4]) {
  %s = reduce_sum(%x) {axes=[1], keep_dims=false} : i32[4]
  %f = convert(%s) {to=f64} : f64[4]
  return %f
}";

/// Zero padding folded into a load with a fill value (bounds checked), and an integer division
/// by the loaded value (division by zero guarded).
const PAD_DIV: &str = "func @main(%x: i16[3], %d: i16[5]) -> (y: i16[5]) {
  %z = constant() {value=dense<i16[]>[0]} : i16[]
  %p = pad(%x, %z) {low=[1], high=[1], interior=[0]} : i16[5]
  %y = div(%p, %d) : i16[5]
  return %y
}";

#[test]
fn elementwise_clif() {
    let text = emit_clif(&common::fuse_text(ELEMENTWISE)).unwrap();
    assert!(text.contains("f32x4"), "{text}");
    insta::assert_snapshot!("elementwise", text);
}

#[test]
fn reduction_clif() {
    insta::assert_snapshot!(
        "reduction",
        emit_clif(&common::fuse_text(REDUCTION)).unwrap()
    );
}

#[test]
fn pad_div_clif() {
    insta::assert_snapshot!("pad_div", emit_clif(&common::fuse_text(PAD_DIV)).unwrap());
}

/// A matmul with a bias and ReLU computes four output columns at a time (one f32x4 accumulator
/// over k, lane-wise epilogue, scalar remainder for the ninth column); so does a padded
/// convolution (four output pixels of a row).
#[test]
fn contractions_run_four_columns_at_a_time() {
    let src = "func @main(%a: f32[5,7], %b: f32[7,9], %c: f32[9]) -> (y: f32[5,9]) {
  %m = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[5,9]
  %s = add(%m, %c) : f32[5,9]
  %z = constant() {value=dense<f32[]>[0.0]} : f32[]
  %y = max(%s, %z) : f32[5,9]
  return %y
}";
    let text = emit_clif(&common::fuse_text(src)).unwrap();
    assert!(text.contains("splat.f32x4"), "{text}");
    assert!(text.contains("load.f32x4"), "{text}");
    // A padded convolution: the input's bounds-checked loads are gathered lane by lane.
    let conv = "func @main(%x: f32[1,2,6,6], %w: f32[3,2,3,3]) -> (y: f32[1,3,6,6]) {
  %y = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,3,6,6]
  return %y
}";
    let text = emit_clif(&common::fuse_text(conv)).unwrap();
    assert!(text.contains("insertlane"), "{text}");
    assert!(text.contains("splat.f32x4"), "{text}");
}

/// A matmul of the GEMM form takes the packed schedule: its constant weights are packed once
/// (an init phase), its activations on every run, and the compute function runs the 6×8
/// micro-kernel (f32x4 fused multiply-adds where the target has them, else multiply and add);
/// a convolution is an implicit GEMM (its input packed as im2col panels, with padding).
#[test]
fn contractions_of_the_gemm_form_take_the_packed_schedule() {
    let matmul = |n: usize| {
        let w: Vec<String> = (0..32 * n)
            .map(|i| format!("{:?}", (i % 7) as f32 * 0.25))
            .collect();
        format!(
            "func @main(%a: f32[13,32]) -> (y: f32[13,{n}]) {{
  %w = constant() {{value=dense<f32[32,{n}]>[{}]}} : f32[32,{n}]
  %y = dot_general(%a, %w) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : f32[13,{n}]
  return %y
}}",
            w.join(", ")
        )
    };
    // 20 columns (not whole panels of 8): the weights are packed once, before the first run.
    let p = common::fuse_text(&matmul(20));
    let text = emit_clif(&p).unwrap();
    assert!(text.contains("task(s), once"), "{text}");
    assert_eq!(text.matches("\nfunction ").count(), 3, "{text}");
    assert!(text.contains("splat.f32x4"), "{text}");
    assert!(text.contains("stack_addr"), "{text}");
    assert!(
        text.contains(" fma ") || text.contains(" fma.f32x4") || text.contains("fmul.f32x4"),
        "{text}"
    );
    let exe = compile(&p, &Options { threads: 1 }).unwrap();
    assert_eq!(exe.stats().packed_bytes, 3 * 8 * 32 * 4);
    // A: 13 rows in panels of 5 (pads less than 6), over K = 32.
    assert_eq!(exe.stats().scratch_bytes, 3 * 5 * 32 * 4);
    // 24 columns, whole panels of a row-major constant: packed once by the runtime's copy
    // loop, no generated pack function.
    let p = common::fuse_text(&matmul(24));
    let text = emit_clif(&p).unwrap();
    assert!(!text.contains("task(s), once"), "{text}");
    assert!(text.contains("packed once from"), "{text}");
    assert_eq!(text.matches("\nfunction ").count(), 2, "{text}");
    let exe = compile(&p, &Options { threads: 1 }).unwrap();
    assert_eq!(exe.stats().packed_bytes, 3 * 8 * 32 * 4);
    assert_eq!(exe.stats().scratch_bytes, 3 * 5 * 32 * 4);
    let conv = "func @main(%x: f32[1,3,12,12], %w: f32[16,3,3,3]) -> (y: f32[1,16,12,12]) {
  %y = conv(%x, %w) {stride=[1, 1], pad_low=[1, 1], pad_high=[1, 1], lhs_dilation=[1, 1], rhs_dilation=[1, 1], groups=1} : f32[1,16,12,12]
  return %y
}";
    let exe = compile(&common::fuse_text(conv), &Options { threads: 1 }).unwrap();
    assert_eq!(exe.stats().packed_bytes, 0);
    // Both operands packed per run: A (16 rows in panels of 6) and B (144 pixels, 18 panels of
    // 8), each over K = 27.
    assert_eq!(
        exe.stats().scratch_bytes,
        (3 * 6 * 27 * 4usize).next_multiple_of(64) + 18 * 8 * 27 * 4
    );
}

/// Every kernel of these programs is compiled (none falls back to the runtime's call).
#[test]
fn loop_nests_are_compiled_not_called() {
    for src in [ELEMENTWISE, REDUCTION, PAD_DIV] {
        let exe = compile(&common::fuse_text(src), &Options { threads: 1 }).unwrap();
        assert!(exe.stats().calls.is_empty(), "{:?}", exe.stats().calls);
    }
}

/// A kernel the backend cannot lower (here: invalid kernel IR, a loop variable out of scope)
/// is a typed error naming the kernel, not a panic or a wrong answer.
#[test]
fn kernels_that_cannot_be_compiled_are_typed_errors_naming_the_kernel() {
    use terafab_ir::DType;
    use terafab_ir::kernel::{
        Body, Buffer, Expr, Index, Kernel, KernelKind, KernelProgram, LoopNest, Stage, Storage, Var,
    };
    let mut p = KernelProgram::new("bad");
    let x = p.add_buffer(Buffer::new("x", DType::F32, vec![4], Storage::Input(0)));
    let y = p.add_buffer(Buffer::new("y", DType::F32, vec![4], Storage::Temp));
    p.inputs.push(x);
    p.outputs.push(("y".into(), y));
    p.kernels.push(Kernel {
        name: "broken".into(),
        kind: KernelKind::Elementwise,
        inputs: vec![x],
        outputs: vec![y],
        body: Body::Loops(LoopNest {
            space: vec![4],
            stages: vec![Stage::Store {
                buffer: y,
                vars: vec![],
                index: vec![Index::Var(Var(0))],
                value: Expr::Load {
                    buffer: x,
                    index: vec![Index::Var(Var(7))],
                    fill: None,
                },
            }],
        }),
        sources: vec![],
    });
    let err = match compile(&p, &Options { threads: 1 }) {
        Ok(_) => panic!("compiled an invalid kernel"),
        Err(e) => e,
    };
    assert!(
        matches!(
            &err,
            terafab_cranelift::CraneliftError::Codegen(terafab_cranelift::CodegenError::Kernel {
                kernel,
                ..
            }) if kernel == "broken"
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("@broken"), "{err}");
    assert!(emit_clif(&p).is_err());
}
