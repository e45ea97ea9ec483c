//! Tests that need a GPU: each prints `SKIPPED` and returns where there is none (no CUDA
//! driver library, or no device), and checks that the error says so.
//!
//! - the driver opens and reports the device;
//! - differential: small programs covering every code path (thread per point, block per
//!   point with warp shuffles, integer and narrow-float arithmetic, fills, host kernels) and the
//!   stage models, on random inputs, against the kernel interpreter;
//! - a benchmark printing the bandwidth of a fused elementwise kernel against the card's peak
//!   (target: at least 85%) and the TFLOP/s of a matmul.

mod common;

use terafab_ir::kernel::KernelProgram;
use terafab_ir::kernel::interp::run_program;
use terafab_ir::{DType, Tensor};

/// Deterministic random inputs for `p`: floats in [-2, 2), integers in [-50, 50).
fn random_inputs(p: &KernelProgram, seed: u64) -> Vec<Tensor> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as f64 / (1u64 << 31) as f64
    };
    p.inputs
        .iter()
        .map(|&b| {
            let buf = p.buffer(b);
            let n = buf.len();
            let vals: Vec<f64> = (0..n)
                .map(|_| {
                    if buf.dtype.is_float() {
                        next() * 4.0 - 2.0
                    } else {
                        (next() * 100.0 - 50.0).floor()
                    }
                })
                .collect();
            let shape = buf.shape.clone();
            match buf.dtype {
                DType::F32 => Tensor::from_vec(shape, vals.iter().map(|&v| v as f32).collect()),
                DType::F64 => Tensor::from_vec(shape, vals),
                DType::BF16 => Tensor::from_vec(
                    shape,
                    vals.iter().map(|&v| half::bf16::from_f64(v)).collect(),
                ),
                DType::I32 => Tensor::from_vec(shape, vals.iter().map(|&v| v as i32).collect()),
                DType::I64 => Tensor::from_vec(shape, vals.iter().map(|&v| v as i64).collect()),
                d => panic!("no random inputs of {d}"),
            }
            .unwrap()
        })
        .collect()
}

fn check(name: &str, p: &KernelProgram, inputs: &[Tensor]) {
    let Some(dev) = common::device() else { return };
    let want = run_program(p, inputs).unwrap();
    let exe = terafab_gpu::compile(&dev, p).unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = exe.run(inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.shape(), w.shape(), "{name}");
        assert_eq!(g.dtype(), w.dtype(), "{name}");
        let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-4 + 1e-4 * b.abs();
            assert!(ok, "{name}: element {i}: gpu {a}, interpreter {b}");
        }
    }
}

#[test]
fn driver_opens_or_says_why_not() {
    match terafab_gpu::open_device() {
        Ok(d) => {
            eprintln!("GPU: {} (sm_{}{})", d.name, d.capability.0, d.capability.1);
            assert!(d.peak_bandwidth().unwrap() > 0.0);
        }
        Err(e) => {
            assert!(e.is_no_device(), "{e}");
            let msg = e.to_string();
            assert!(msg.starts_with("no GPU: "), "{msg}");
            eprintln!("SKIPPED: {msg}");
        }
    }
}

const PROGRAMS: &[(&str, &str)] = &[
    (
        "elementwise",
        "func @main(%x: f32[3,70], %y: f32[70]) -> (z: f32[3,70]) {
  %e = exp(%x) : f32[3,70]
  %l = logistic(%e) : f32[3,70]
  %s = add(%l, %y) : f32[3,70]
  %r = erf(%s) : f32[3,70]
  %zero = constant() {value=dense<f32[]>[0.0]} : f32[]
  %z = max(%r, %zero) : f32[3,70]
  return %z
}",
    ),
    (
        "row_sum_block",
        "func @main(%x: f32[5,1000]) -> (s: f32[5]) {
  %s = reduce_sum(%x) {axes=[1], keep_dims=false} : f32[5]
  return %s
}",
    ),
    (
        "row_max_i64_block",
        "func @main(%x: i64[3,700]) -> (s: i64[3]) {
  %s = reduce_max(%x) {axes=[1], keep_dims=false} : i64[3]
  return %s
}",
    ),
    (
        "softmax_block",
        "func @main(%x: f32[4,513]) -> (y: f32[4,513]) {
  %y = softmax(%x) {axes=[1]} : f32[4,513]
  return %y
}",
    ),
    (
        "matmul",
        "func @main(%a: f32[33,70], %b: f32[70,17]) -> (y: f32[33,17]) {
  %y = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[33,17]
  return %y
}",
    ),
    (
        "integers",
        "func @main(%x: i32[100], %y: i32[100]) -> (z: i32[100]) {
  %d = div(%x, %y) : i32[100]
  %m = rem(%x, %y) : i32[100]
  %z = add(%d, %m) : i32[100]
  return %z
}",
    ),
    (
        "bf16",
        "func @main(%x: bf16[64], %y: bf16[64]) -> (z: bf16[64]) {
  %m = mul(%x, %y) : bf16[64]
  %z = add(%m, %x) : bf16[64]
  return %z
}",
    ),
];

#[test]
fn small_programs_match_the_interpreter() {
    // Without a GPU: at least they compile to PTX (and assemble, with ptxas).
    let ptxas = common::ptxas();
    for (name, src) in PROGRAMS {
        let ptx = terafab_gpu::emit_ptx(&common::fuse_text(src), terafab_gpu::Arch::Sm80)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(ptxas) = &ptxas {
            common::assemble(ptxas, &ptx, "sm_80").unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
    if common::device().is_none() {
        return;
    }
    for (name, src) in PROGRAMS {
        let p = common::fuse_text(src);
        for seed in 0..3 {
            check(name, &p, &random_inputs(&p, seed));
        }
    }
}

#[test]
fn stage_models_match_the_interpreter() {
    if common::device().is_none() {
        return;
    }
    for name in common::MODELS {
        let (p, x) = common::model_program(name);
        check(name, &p, std::slice::from_ref(&x));
    }
}

/// Prints the figures the issue asks for; asserts only that they were measured.
#[test]
fn bandwidth_and_matmul_throughput() {
    let Some(dev) = common::device() else { return };
    let peak = dev.peak_bandwidth().unwrap();
    let n = 1 << 24;
    let elementwise = common::fuse_text(&format!(
        "func @main(%x: f32[{n}], %y: f32[{n}]) -> (z: f32[{n}]) {{
  %s = add(%x, %y) : f32[{n}]
  %zero = constant() {{value=dense<f32[]>[0.0]}} : f32[]
  %z = max(%s, %zero) : f32[{n}]
  return %z
}}"
    ));
    let m = 2048;
    let matmul = common::fuse_text(&format!(
        "func @main(%a: f32[{m},{m}], %b: f32[{m},{m}]) -> (y: f32[{m},{m}]) {{
  %y = dot_general(%a, %b) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : f32[{m},{m}]
  return %y
}}"
    ));
    for (name, p) in [
        ("add+relu 2^24 f32", &elementwise),
        ("matmul 2048^3 f32", &matmul),
    ] {
        let inputs = random_inputs(p, 1);
        let exe = terafab_gpu::compile(&dev, p).unwrap();
        exe.run(&inputs).unwrap();
        let mut best: Option<Vec<terafab_gpu::bench::KernelRate>> = None;
        for _ in 0..5 {
            let (_, t) = exe.run_timed(&inputs, true).unwrap();
            let r = terafab_gpu::bench::rates(p, &t.kernels, peak);
            if best.as_ref().is_none_or(|b| r[0].seconds < b[0].seconds) {
                best = Some(r);
            }
        }
        let r = &best.unwrap()[0];
        eprintln!(
            "{name}: {:.1} us, {:.0} GB/s = {:.0}% of {:.0} GB/s peak, {:.2} TFLOP/s",
            r.seconds * 1e6,
            r.bandwidth / 1e9,
            r.bandwidth_fraction * 100.0,
            peak / 1e9,
            r.flops / 1e12
        );
        assert!(r.seconds > 0.0);
    }
}
