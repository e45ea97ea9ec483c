//! The GEMM micro-benchmark: f32 matmuls through the LLVM backend (fusion, the packed GEMM
//! schedule, the thread pool), reported as GFLOP/s and as fractions of the CPU's fp32 peak.
//!
//!   cargo bench -p terafab-llvm --bench gemm [-- SIZE...]
//!
//! Two peaks are given: the nominal one, 32 flop/cycle/core (two 8-lane FMA pipes) at the clock
//! /proc/cpuinfo reports, and the measured one, a register-only loop of 12 independent FMA
//! chains on each thread (what the cores actually sustain: on a first-generation Zen, whose FMA
//! units are 128 bits wide, about half the nominal). A run is the whole `Executable::run`:
//! packing of the activation operands, the micro-kernel, the epilogue; the weights (the B
//! operand marked `const`) are packed once, at load.

use std::time::{Duration, Instant};

use terafab_ir::Tensor;
use terafab_llvm::Options;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// The clock /proc/cpuinfo reports, in GHz.
fn nominal_ghz() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    Some(mhz / 1e3)
}

/// GFLOP/s of 12 independent 8-lane FMA chains kept in registers, on `threads` threads.
#[cfg(target_arch = "x86_64")]
fn measured_peak(threads: usize) -> Option<f64> {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return None;
    }
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chains(n: u64) -> f32 {
        use std::arch::x86_64::*;
        let (b, c) = (_mm256_set1_ps(0.9999), _mm256_set1_ps(1e-4));
        let mut a = [_mm256_set1_ps(0.5); 12];
        for _ in 0..n {
            for x in a.iter_mut() {
                *x = _mm256_fmadd_ps(*x, b, c);
            }
        }
        let mut s = _mm256_setzero_ps();
        for x in a {
            s = _mm256_add_ps(s, x);
        }
        _mm256_cvtss_f32(s)
    }
    let n = 50_000_000u64;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            // SAFETY: the features were detected above.
            s.spawn(|| std::hint::black_box(unsafe { chains(n) }));
        }
    });
    Some((n * 12 * 16 * threads as u64) as f64 / t.elapsed().as_secs_f64() / 1e9)
}

#[cfg(not(target_arch = "x86_64"))]
fn measured_peak(_threads: usize) -> Option<f64> {
    None
}

fn matmul(size: usize, const_b: bool) -> terafab_ir::kernel::KernelProgram {
    let ty = format!("f32[{size},{size}]");
    let (params, body) = if const_b {
        let vals: Vec<String> = (0..size * size)
            .map(|i| format!("{:?}", ((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
            .collect();
        (
            format!("%a: {ty}"),
            format!(
                "  %b = constant() {{value=dense<{ty}>[{}]}} : {ty}\n",
                vals.join(", ")
            ),
        )
    } else {
        (format!("%a: {ty}, %b: {ty}"), String::new())
    };
    let src = format!(
        "func @main({params}) -> (y: {ty}) {{\n{body}  %y = dot_general(%a, %b) {{lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]}} : {ty}\n  return %y\n}}\n"
    );
    let m = terafab_ir::parse::parse_module(&src).expect("parses");
    let f = m.entry().unwrap();
    let inputs: Vec<Tensor> = f
        .inputs()
        .iter()
        .map(|_| Tensor::zeros(terafab_ir::DType::F32, &[size, size]).unwrap())
        .collect();
    let bind = terafab_ir::interp::bind_inputs(f, &inputs).unwrap();
    terafab_passes::fuse::fuse_function(f, &bind).unwrap()
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![256, 512, 1024]
    } else {
        sizes
    };
    let ghz = nominal_ghz();
    println!(
        "nominal clock {} GHz; nominal peak 32 flop/cycle/core",
        ghz.map_or("?".into(), |g| format!("{g:.2}"))
    );
    for threads in [1usize, 2] {
        let peak = measured_peak(threads);
        let nominal = ghz.map(|g| g * 32.0 * threads as f64);
        println!(
            "\n{threads} thread(s): measured FMA peak {} GFLOP/s, nominal {} GFLOP/s",
            peak.map_or("?".into(), |p| format!("{p:.1}")),
            nominal.map_or("?".into(), |p| format!("{p:.1}"))
        );
        println!(
            "{:>6}  {:>8}  {:>10}  {:>8}  {:>10}  {:>10}",
            "size", "B", "median ms", "GFLOP/s", "% measured", "% nominal"
        );
        for &size in &sizes {
            for const_b in [false, true] {
                let p = matmul(size, const_b);
                let exe = terafab_llvm::compile(
                    &p,
                    &Options {
                        threads,
                        ..Default::default()
                    },
                )
                .expect("compiles");
                let inputs: Vec<Tensor> = p
                    .inputs
                    .iter()
                    .map(|_| {
                        Tensor::from_vec(
                            vec![size, size],
                            (0..size * size).map(|i| (i % 17) as f32 * 0.01).collect(),
                        )
                        .unwrap()
                    })
                    .collect();
                let iters = (2e9 / (2.0 * (size as f64).powi(3))).clamp(5.0, 200.0) as usize;
                for _ in 0..2 {
                    exe.run(&inputs).unwrap();
                }
                let times: Vec<Duration> = (0..iters)
                    .map(|_| {
                        let t = Instant::now();
                        std::hint::black_box(exe.run(&inputs).unwrap());
                        t.elapsed()
                    })
                    .collect();
                let t = median(times);
                let gflops = 2.0 * (size as f64).powi(3) / t.as_secs_f64() / 1e9;
                let pct = |p: Option<f64>| {
                    p.map_or("?".into(), |p| format!("{:.0}%", gflops / p * 100.0))
                };
                println!(
                    "{size:>6}  {:>8}  {:>10.3}  {gflops:>8.1}  {:>10}  {:>10}",
                    if const_b { "const" } else { "input" },
                    t.as_secs_f64() * 1e3,
                    pct(peak),
                    pct(nominal)
                );
            }
        }
    }
}
