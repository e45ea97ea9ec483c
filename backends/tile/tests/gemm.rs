//! The GEMM generator (`terafab_tile::gen`): numeric checks of generated programs against
//! an f64 reference on random inputs, over shapes that exercise every tiling edge (1, primes,
//! non-multiples of the engine block and of the tiles, operands larger than one SRAM), every
//! test preset and f32 / bf16 / CFP8 operands, with and without bias and ReLU.
//!
//! **Tolerance.** Inputs are rounded to the operand type before the reference, so the only
//! difference is the order and precision of the accumulation: the machine sums the K
//! products of each element in k order in f32 (bf16/CFP8 products are exact in f32; f32
//! products round once), then adds the bias in f32. The standard bound for such a sum is
//! `|ĉ − c| ≤ γ_{K+2} · (Σ_k |a_ik·b_kj| + |bias_j|)` with `γ_n = n·u / (1 − n·u)`,
//! `u = 2⁻²⁴`; ReLU is 1-Lipschitz so it keeps the bound. We check exactly that bound.

use proptest::prelude::*;
use terafab_tile::numerics::Cfp8;
use terafab_tile::{
    Config, ElemType, Engine, EpiOperand, EpiStep, Epilogue, GemmSpec, GenError, Report, Rounding,
    Simulator, gemm_plan, gemm_program,
};

/// SplitMix64: deterministic test inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn value(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    fn values(&mut self, n: u64, t: ElemType) -> Vec<f32> {
        (0..n)
            .map(|_| t.quantize(self.value(), Rounding::NearestEven))
            .collect()
    }
}

fn spec(m: u64, n: u64, k: u64, t: ElemType) -> GemmSpec {
    GemmSpec {
        batch: 1,
        m,
        n,
        k,
        a_type: t,
        b_type: t,
        bias: false,
        relu: false,
        epilogue: Epilogue::NONE,
        b_gather: None,
    }
}

/// Generates, runs and checks `spec` on `cfg`; returns the report.
fn check(cfg: &Config, spec: &GemmSpec, seed: u64) -> Report {
    let program = gemm_program(cfg, spec).expect("generate");
    // Every generated program is encodable (all fields fit their widths).
    program.encode().expect("encode");
    let mut rng = Rng(seed);
    let (m, n, k) = (spec.m as usize, spec.n as usize, spec.k as usize);
    let batch = spec.batch as usize;
    let a = rng.values(spec.batch * spec.m * spec.k, spec.a_type);
    let b = rng.values(spec.batch * spec.k * spec.n, spec.b_type);
    let bias = rng.values(spec.n, ElemType::F32);
    let mut sim = Simulator::new(cfg.clone(), program).expect("simulator");
    sim.load_hbm_f32("A", &a).unwrap();
    sim.load_hbm_f32("B", &b).unwrap();
    if spec.bias {
        sim.load_hbm_f32("BIAS", &bias).unwrap();
    }
    let report = sim.run().unwrap_or_else(|e| panic!("{spec:?}: {e}"));
    let c = sim.read_hbm_f32("C").unwrap();
    let u = f64::from(f32::EPSILON) / 2.0;
    let nu = (k + 2) as f64 * u;
    let gamma = nu / (1.0 - nu);
    for (bi, i, j) in
        (0..batch).flat_map(|bi| (0..m).flat_map(move |i| (0..n).map(move |j| (bi, i, j))))
    {
        let (a, b, c) = (&a[bi * m * k..], &b[bi * k * n..], &c[bi * m * n..]);
        {
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for kk in 0..k {
                let p = f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]);
                exact += p;
                mag += p.abs();
            }
            if spec.bias {
                exact += f64::from(bias[j]);
                mag += f64::from(bias[j]).abs();
            }
            if spec.relu {
                exact = exact.max(0.0);
            }
            let got = f64::from(c[i * n + j]);
            assert!(
                (got - exact).abs() <= gamma * mag,
                "{spec:?} on {}x{}: C[{i}][{j}] = {got}, reference {exact}, bound {}",
                cfg.mesh_width,
                cfg.mesh_height,
                gamma * mag
            );
        }
    }
    let macs = spec.batch * spec.m * spec.n * spec.k;
    assert_eq!(report.macs + report.macs_f32, macs, "{spec:?}");
    report
}

fn preset(name: &str) -> Config {
    Config::preset(name).unwrap()
}

/// Batched products (attention heads): every product right, odd shapes, bf16 and f32, bias
/// and ReLU, on 1x1 and 2x2; a batch of 0 is an error.
#[test]
fn batched_products() {
    for name in ["1x1", "2x2"] {
        let cfg = preset(name);
        for (batch, m, n, k, t, bias) in [
            (3, 37, 29, 70, ElemType::Bf16, false),
            (4, 16, 16, 8, ElemType::F32, true),
            (2, 1, 5, 3, ElemType::Bf16, true),
        ] {
            let s = GemmSpec {
                batch,
                bias,
                relu: bias,
                ..spec(m, n, k, t)
            };
            check(&cfg, &s, batch * 1000 + m);
        }
    }
    let s = GemmSpec {
        batch: 0,
        ..spec(4, 4, 4, ElemType::F32)
    };
    assert!(gemm_program(&preset("1x1"), &s).is_err());
}

#[test]
fn tiny_and_prime_shapes_on_every_preset() {
    let shapes = [
        (1, 1, 1),
        (1, 7, 1),
        (13, 1, 5),
        (7, 11, 13),
        (17, 19, 23),
        (8, 8, 8),
        (9, 33, 31),
        (64, 5, 129),
    ];
    for p in ["1x1", "2x2", "4x4"] {
        for (i, &(m, n, k)) in shapes.iter().enumerate() {
            for t in [ElemType::F32, ElemType::Bf16] {
                check(&preset(p), &spec(m, n, k, t), i as u64);
            }
        }
    }
}

#[test]
fn bias_and_relu_epilogue() {
    for p in ["1x1", "2x2", "4x4"] {
        for (m, n, k) in [(1, 1, 1), (37, 41, 43), (100, 70, 300)] {
            for (bias, relu) in [(true, false), (false, true), (true, true)] {
                let s = GemmSpec {
                    bias,
                    relu,
                    ..spec(m, n, k, ElemType::Bf16)
                };
                check(&preset(p), &s, m + n);
            }
        }
    }
}

#[test]
fn mixed_and_cfp8_operands() {
    let e4m3 = ElemType::Cfp8(Cfp8::new(terafab_tile::Cfp8Layout::E4M3, 7).unwrap());
    let e5m2 = ElemType::Cfp8(Cfp8::new(terafab_tile::Cfp8Layout::E5M2, 15).unwrap());
    for (a, b) in [
        (ElemType::Bf16, ElemType::F32),
        (e4m3, ElemType::Bf16),
        (e4m3, e5m2),
    ] {
        let s = GemmSpec {
            a_type: a,
            b_type: b,
            bias: true,
            relu: true,
            ..spec(45, 53, 77, a)
        };
        check(&preset("2x2"), &s, 3);
    }
}

/// Operands larger than one node's SRAM: several output tiles per node, several K chunks,
/// both accumulators and operand slots reused many times.
#[test]
fn operands_larger_than_sram() {
    // A and B are 600x700 f32 = 1.68 MB each on a 1.25 MiB SRAM.
    let s = GemmSpec {
        bias: true,
        relu: true,
        ..spec(600, 270, 700, ElemType::F32)
    };
    let cfg = preset("1x1");
    let plan = gemm_plan(&cfg, &s).unwrap();
    assert!(plan.tile_k < 700, "{plan:?}");
    check(&cfg, &s, 9);
    // A small SRAM forces many tiles on a 2x2 with multicast.
    let mut small = preset("2x2");
    small.sram_bytes = 64 * 1024;
    let s = spec(130, 150, 170, ElemType::Bf16);
    let plan = gemm_plan(&small, &s).unwrap();
    assert!(plan.tile_m < 65 && plan.multicast, "{plan:?}");
    let r = check(&small, &s, 10);
    assert!(
        r.nodes
            .iter()
            .all(|n| n.sram_high_water <= small.sram_bytes)
    );
}

#[test]
fn multicast_reads_each_operand_once() {
    let s = spec(64, 64, 64, ElemType::Bf16);
    let cfg = preset("4x4");
    let plan = gemm_plan(&cfg, &s).unwrap();
    assert!(plan.multicast);
    let r = check(&cfg, &s, 4);
    // One tile per node: A and B read once, C written once.
    assert_eq!(r.hbm_read_bytes, 2 * 64 * 64 * 2);
    assert_eq!(r.hbm_write_bytes, 64 * 64 * 4);
}

#[test]
fn errors_are_typed() {
    let cfg = preset("1x1");
    assert_eq!(
        gemm_program(&cfg, &spec(0, 1, 1, ElemType::F32)),
        Err(GenError::ZeroDim("m"))
    );
    let mut tiny = cfg.clone();
    tiny.sram_bytes = 64;
    assert!(matches!(
        gemm_program(&tiny, &spec(4, 4, 4, ElemType::F32)),
        Err(GenError::SramTooSmall { .. })
    ));
    assert!(matches!(
        gemm_program(&cfg, &spec(1 << 20, 1 << 20, 1 << 20, ElemType::F32)),
        Err(GenError::HbmTooSmall { .. })
    ));
    assert!(matches!(
        gemm_program(&cfg, &spec(u64::MAX, 3, u64::MAX, ElemType::F32)),
        Err(GenError::Overflow(_))
    ));
    let mut bad = cfg;
    bad.mx_m = 0;
    assert!(matches!(
        gemm_program(&bad, &spec(4, 4, 4, ElemType::F32)),
        Err(GenError::Config(_))
    ));
}

/// Cycle counts of one small GEMM, pinned (any schedule change shows up here).
#[test]
fn small_gemm_cycles() {
    let s = GemmSpec {
        bias: true,
        relu: true,
        ..spec(96, 80, 200, ElemType::Bf16)
    };
    let mut out = String::new();
    for p in ["1x1", "2x2"] {
        let r = check(&preset(p), &s, 1);
        out.push_str(&format!(
            "{p}: cycles {}, hbm read {} write {}, mesh payload {}, mx util (0,0) {:.3}\n",
            r.cycles,
            r.hbm_read_bytes,
            r.hbm_write_bytes,
            r.mesh_payload_bytes,
            r.utilization((0, 0), Engine::Mx)
        ));
    }
    insta::assert_snapshot!(out);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_small_shapes(
        m in 1u64..40, n in 1u64..40, k in 1u64..70,
        two in any::<bool>(), f32_in in any::<bool>(), bias in any::<bool>(), relu in any::<bool>(),
        sram_kib in 4u64..64,
    ) {
        let mut cfg = preset(if two { "2x2" } else { "1x1" });
        cfg.sram_bytes = sram_kib * 1024;
        let t = if f32_in { ElemType::F32 } else { ElemType::Bf16 };
        let s = GemmSpec { bias, relu, ..spec(m, n, k, t) };
        check(&cfg, &s, m * 131 + n * 7 + k);
    }
}

/// The performance targets of 1024³ bf16 (timing only): ≥ 90% matrix-engine utilization
/// on 1x1, ≥ 80% on 4x4; multicast reads A and B from HBM once on 4x4.
#[test]
fn utilization_targets_1024() {
    let s = spec(1024, 1024, 1024, ElemType::Bf16);
    for (p, target) in [("1x1", 0.90), ("4x4", 0.80)] {
        let mut cfg = preset(p);
        cfg.timing_only = true;
        let mut sim = Simulator::new(cfg.clone(), gemm_program(&cfg, &s).unwrap()).unwrap();
        let r = sim.run().unwrap();
        let peak = (cfg.nodes() as u64 * cfg.mx_m * cfg.mx_n * cfg.mx_k) as f64;
        let util = r.macs as f64 / (r.cycles as f64 * peak);
        assert!(util >= target, "{p}: utilization {util}");
        if p == "4x4" {
            assert_eq!(r.hbm_read_bytes, 2 * 1024 * 1024 * 2);
        }
    }
}

/// A fused epilogue (a convolution's batch norm along M, a scale along N, a residual tile, an
/// immediate max, a division along M, then ReLU) on the accumulators: every element against
/// the f64 reference of the same steps, on 1x1, 2x2 and 4x4, with tiles that do not divide
/// the shape, and after a split-K reduction across mesh rows (M within one engine block);
/// a batched GEMM with an epilogue is refused.
#[test]
fn fused_epilogue_steps() {
    use terafab_tile::isa::BinOp;
    let steps = [
        EpiStep {
            op: BinOp::Sub,
            operand: EpiOperand::AlongM,
        },
        EpiStep {
            op: BinOp::Mul,
            operand: EpiOperand::AlongN,
        },
        EpiStep {
            op: BinOp::Add,
            operand: EpiOperand::Tile,
        },
        EpiStep {
            op: BinOp::Max,
            operand: EpiOperand::Imm((-0.25f32).to_bits()),
        },
        EpiStep {
            op: BinOp::Div,
            operand: EpiOperand::AlongM,
        },
    ];
    let epilogue = Epilogue::new(&steps).unwrap();
    for (name, (m, n, k)) in [
        ("1x1", (37, 45, 29)),
        ("2x2", (70, 33, 64)),
        ("4x4", (129, 97, 40)),
        // Split K (M within one engine block, K long): partial sums reduced at row 0.
        ("2x2", (1, 40, 512)),
        ("4x4", (5, 97, 700)),
        ("4x4", (8, 200, 1031)),
    ] {
        let cfg = preset(name);
        let s = GemmSpec {
            relu: true,
            epilogue,
            ..spec(m, n, k, ElemType::Bf16)
        };
        let plan = gemm_plan(&cfg, &s).unwrap();
        assert_eq!(plan.k_groups > 1, m <= 8, "{name} {m}x{n}x{k}: {plan:?}");
        let program = gemm_program(&cfg, &s).expect("generate");
        program.encode().expect("encode");
        let mut rng = Rng(m * 7 + n);
        let a = rng.values(m * k, ElemType::Bf16);
        let b = rng.values(k * n, ElemType::Bf16);
        // Operands: E0 along M, E1 along N, E2 a tile, E4 along M (divisors away from 0).
        let e0 = rng.values(m, ElemType::F32);
        let e1 = rng.values(n, ElemType::F32);
        let e2 = rng.values(m * n, ElemType::F32);
        let e4: Vec<f32> = rng
            .values(m, ElemType::F32)
            .iter()
            .map(|x| 1.0 + x.abs())
            .collect();
        let mut sim = Simulator::new(cfg.clone(), program).expect("simulator");
        sim.load_hbm_f32("A", &a).unwrap();
        sim.load_hbm_f32("B", &b).unwrap();
        sim.load_hbm_f32("E0", &e0).unwrap();
        sim.load_hbm_f32("E1", &e1).unwrap();
        sim.load_hbm_f32("E2", &e2).unwrap();
        sim.load_hbm_f32("E4", &e4).unwrap();
        sim.run().unwrap_or_else(|e| panic!("{name}: {e}"));
        let c = sim.read_hbm_f32("C").unwrap();
        let (m, n, k) = (m as usize, n as usize, k as usize);
        for i in 0..m {
            for j in 0..n {
                let mut x: f64 = (0..k)
                    .map(|kk| f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]))
                    .sum();
                x -= f64::from(e0[i]);
                x *= f64::from(e1[j]);
                x += f64::from(e2[i * n + j]);
                x = x.max(-0.25);
                x /= f64::from(e4[i]);
                x = x.max(0.0);
                let got = f64::from(c[i * n + j]);
                assert!(
                    (got - x).abs() <= 1e-5 * (1.0 + x.abs()) * k as f64,
                    "{name}: C[{i}][{j}] = {got}, reference {x}"
                );
            }
        }
    }
    let batched = GemmSpec {
        batch: 2,
        epilogue,
        ..spec(8, 8, 8, ElemType::F32)
    };
    assert!(gemm_program(&preset("1x1"), &batched).is_err());
}
