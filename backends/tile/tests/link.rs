//! Kernels linked with the activation between them resident in SRAM (`terafab_tile::link`):
//! hand-written producer and consumer programs whose linked program must move the bytes
//! through SRAM and the mesh exactly, the linker's refusals, and whole models whose linked
//! pairs give the interpreter's result with less HBM traffic than unlinked.

mod common;

use std::collections::HashMap;

use common::tensor;
use terafab_ir::{Module, Tensor};
use terafab_tile::backend::run_function_with;
use terafab_tile::compile::Options;
use terafab_tile::link::{Part, link};
use terafab_tile::{Config, Program, Simulator};

/// Each node's SRAM high-water mark, from a run of `p` (its inputs zero).
fn high_water(cfg: &Config, p: &Program) -> HashMap<(u8, u8), u64> {
    let report = Simulator::new(cfg.clone(), p.clone())
        .unwrap()
        .run()
        .unwrap();
    report
        .nodes
        .iter()
        .map(|n| (n.node, n.sram_high_water))
        .collect()
}

/// Producer: nodes (0,0) and (1,0) each load half of `IN` (32 f32) and store it, doubled,
/// into `X`; consumer: node (1,1) loads all of `X` and (0,1) its second half, and they store
/// them into `OUT` and `OUT2`.
const PRODUCER: &str = "
.hbm IN addr=0x0, dtype=f32, shape=32, role=input
.hbm X addr=0x80, dtype=f32, shape=32, role=output
.nodes 0..2, 0..1
    dma.ld dst=0x0, src=IN + $x * 64, len=64 signal=0
    vadd dst=0x100, src1=0x0, src2=0x0, rows=1, cols=16, itype=f32, otype=f32 wait=0 signal=1
    dma.st dst=X + $x * 64, src=0x100, len=64 wait=1 signal=2
    sem.wait engine=dma, sem=2
    end
";

const CONSUMER: &str = "
.hbm X addr=0x0, dtype=f32, shape=32, role=input
.hbm OUT addr=0x80, dtype=f32, shape=32, role=output
.hbm OUT2 addr=0x100, dtype=f32, shape=16, role=output
.node 1,1
    dma.ld dst=0x40, src=X, len=128 signal=0
    dma.st dst=OUT, src=0x40, len=128 wait=0 signal=1
    sem.wait engine=dma, sem=1
    end
.node 0,1
    dma.ld dst=0x0, src=X + 64, len=64 signal=0
    dma.st dst=OUT2, src=0x0, len=64 wait=0 signal=1
    sem.wait engine=dma, sem=1
    end
";

#[test]
fn a_linked_pair_moves_the_activation_through_sram_exactly() {
    let cfg = Config::preset("2x2").unwrap();
    let (a, b) = (
        Program::parse(PRODUCER).unwrap(),
        Program::parse(CONSUMER).unwrap(),
    );
    let (ha, hb) = (high_water(&cfg, &a), high_water(&cfg, &b));
    let linked = link(
        &cfg,
        &Part {
            program: &a,
            sram_high: &ha,
        },
        &Part {
            program: &b,
            sram_high: &hb,
        },
        "X",
    )
    .unwrap();
    // X has no HBM space; no DMA of the linked program touches HBM for it.
    assert!(linked.buffers.iter().all(|b| b.name != "X"));
    let input: Vec<f32> = (0..32).map(|i| i as f32 * 0.5 - 3.0).collect();
    let mut sim = Simulator::new(cfg.clone(), linked).unwrap();
    sim.load_hbm_f32("IN", &input).unwrap();
    let report = sim.run().unwrap();
    let doubled: Vec<f32> = input.iter().map(|v| v + v).collect();
    assert_eq!(sim.read_hbm_f32("OUT").unwrap(), doubled);
    assert_eq!(sim.read_hbm_f32("OUT2").unwrap(), doubled[16..]);
    // HBM carries IN in and OUT, OUT2 out: 128 + 128 + 64 bytes, not X twice more.
    assert_eq!(report.hbm_read_bytes, 128, "{report}");
    assert_eq!(report.hbm_write_bytes, 192, "{report}");
    assert!(report.mesh_payload_bytes > 0, "{report}");
}

#[test]
fn the_linker_refuses_what_it_cannot_link() {
    let cfg = Config::preset("2x2").unwrap();
    let (a, b) = (
        Program::parse(PRODUCER).unwrap(),
        Program::parse(CONSUMER).unwrap(),
    );
    let (ha, hb) = (high_water(&cfg, &a), high_water(&cfg, &b));
    let part = |p, h| Part {
        program: p,
        sram_high: h,
    };
    // A buffer the consumer does not have.
    assert!(link(&cfg, &part(&a, &ha), &part(&b, &hb), "IN").is_err());
    // Stages that do not fit: the programs claim the whole SRAM.
    let full: HashMap<(u8, u8), u64> = ha
        .keys()
        .chain(hb.keys())
        .map(|&n| (n, cfg.sram_bytes))
        .collect();
    let err = link(&cfg, &part(&a, &full), &part(&b, &full), "X").unwrap_err();
    assert!(err.to_string().contains("do not fit"), "{err}");
    // A consumer using the linker's semaphores, a producer leaving tokens on one (a linked
    // producer uses them too, balanced, and links on).
    let greedy = Program::parse(
        &CONSUMER
            .replace("signal=1", "signal=60")
            .replace("sem=1", "sem=60"),
    )
    .unwrap();
    let err = link(&cfg, &part(&a, &ha), &part(&greedy, &hb), "X").unwrap_err();
    assert!(err.to_string().contains("semaphores"), "{err}");
    let leaky = Program::parse(&PRODUCER.replace(
        "sem.wait engine=dma, sem=2",
        "sem.signal engine=dma, sem=60",
    ))
    .unwrap();
    let err = link(&cfg, &part(&leaky, &ha), &part(&b, &hb), "X").unwrap_err();
    assert!(err.to_string().contains("semaphores"), "{err}");
    let balanced = Program::parse(
        &PRODUCER
            .replace("signal=2", "signal=60")
            .replace("sem=2", "sem=60"),
    )
    .unwrap();
    assert!(link(&cfg, &part(&balanced, &ha), &part(&b, &hb), "X").is_ok());
    // A consumer reading bytes the producer never stored.
    let half = Program::parse(&PRODUCER.replace(".nodes 0..2, 0..1", ".nodes 0..1, 0..1")).unwrap();
    let hh = high_water(&cfg, &half);
    let err = link(&cfg, &part(&half, &hh), &part(&b, &hb), "X").unwrap_err();
    assert!(err.to_string().contains("whole buffer"), "{err}");
}

/// A dense layer, another, a softmax: consecutive kernels link where the activation fits,
/// with the interpreter's result and less HBM traffic than unlinked, on every preset.
#[test]
fn linked_models_match_the_interpreter_with_less_hbm_traffic() {
    let src = "func @main(%x: f32[16,64], %w1: f32[64,96], %w2: f32[96,40]) -> (y: f32[16,40]) {
  %h = dot_general(%x, %w1) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[16,96]
  %z = constant() {value=dense<f32[]>[0.0]} : f32[]
  %r = max(%h, %z) : f32[16,96]
  %o = dot_general(%r, %w2) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[16,40]
  %y = softmax(%o) {axes=[1]} : f32[16,40]
  return %y
}
";
    let m: Module = terafab_ir::parse::parse_module(src).unwrap();
    let f = m.entry().unwrap();
    let inputs: Vec<Tensor> = vec![
        tensor(&[16, 64], 1),
        tensor(&[64, 96], 2),
        tensor(&[96, 40], 3),
    ];
    let want = terafab_ir::interp::run_function(f, &inputs).unwrap();
    for preset in ["1x1", "2x2", "4x4"] {
        let cfg = Config::preset(preset).unwrap();
        let run = |resident| {
            let opts = Options {
                cost_check: true,
                resident,
            };
            run_function_with(&cfg, f, &inputs, &opts).unwrap()
        };
        let ((linked, lr), (apart, ar)) = (run(true), run(false));
        for got in [&linked, &apart] {
            let (g, w) = (got[0].to_f64_vec(), want[0].to_f64_vec());
            for (i, (a, b)) in g.iter().zip(&w).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                    "{preset}: element {i}: {a} vs {b}"
                );
            }
        }
        let text = lr.to_string();
        assert!(text.contains("kept in SRAM"), "{preset}\n{text}");
        assert_eq!(lr.accelerator_kernels(), ar.accelerator_kernels(), "{text}");
        let (tl, ta) = (lr.totals(), ar.totals());
        assert!(
            tl.hbm_read_bytes + tl.hbm_write_bytes < ta.hbm_read_bytes + ta.hbm_write_bytes,
            "{preset}\n{text}\n{ar}"
        );
        assert!(tl.cycles < ta.cycles, "{preset}\n{text}\n{ar}");
    }
}
