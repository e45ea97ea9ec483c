//! PTX of small kernels (snapshots), every stage model lowered for sm_80 and sm_90, and the
//! PTX assembled by `ptxas` where it is installed. None of this needs a GPU.

mod common;

use terafab_gpu::{Arch, Mode, Plan, compile_ptx, emit_ptx};

/// A fused elementwise kernel: relu(x + y).
const ADD_RELU: &str = "func @main(%x: f32[1000], %y: f32[1000]) -> (z: f32[1000]) {
  %s = add(%x, %y) : f32[1000]
  %zero = constant() {value=dense<f32[]>[0.0]} : f32[]
  %z = max(%s, %zero) : f32[1000]
  return %z
}";

/// A row reduction long enough for a block per row (warp shuffles).
const ROW_SUM: &str = "func @main(%x: f32[8,1024]) -> (s: f32[8]) {
  %s = reduce_sum(%x) {axes=[1], keep_dims=false} : f32[8]
  return %s
}";

/// A small matmul with a bias.
const MATMUL: &str = "func @main(%a: f32[16,32], %b: f32[32,8], %c: f32[8]) -> (y: f32[16,8]) {
  %m = dot_general(%a, %b) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[16,8]
  %y = add(%m, %c) : f32[16,8]
  return %y
}";

fn modes(src: &str) -> Vec<Mode> {
    compile_ptx(&common::fuse_text(src), Arch::Sm80)
        .unwrap()
        .plans
        .iter()
        .filter_map(|p| match p {
            Plan::Device { mode, .. } => Some(*mode),
            Plan::Host { .. } => None,
        })
        .collect()
}

#[test]
fn add_relu_ptx() {
    let p = common::fuse_text(ADD_RELU);
    insta::assert_snapshot!("add_relu_sm80", emit_ptx(&p, Arch::Sm80).unwrap());
    assert_eq!(modes(ADD_RELU), [Mode::ThreadPerPoint]);
}

#[test]
fn row_sum_ptx() {
    let p = common::fuse_text(ROW_SUM);
    let ptx = emit_ptx(&p, Arch::Sm80).unwrap();
    assert!(ptx.contains("shfl.sync.bfly"), "{ptx}");
    assert!(ptx.contains("bar.sync"), "{ptx}");
    insta::assert_snapshot!("row_sum_sm80", ptx);
    assert_eq!(modes(ROW_SUM), [Mode::BlockPerPoint]);
}

#[test]
fn matmul_ptx() {
    let p = common::fuse_text(MATMUL);
    insta::assert_snapshot!("matmul_sm90", emit_ptx(&p, Arch::Sm90).unwrap());
}

#[test]
fn ptx_names_the_architecture() {
    let p = common::fuse_text(ADD_RELU);
    for arch in [Arch::Sm80, Arch::Sm90] {
        let ptx = emit_ptx(&p, arch).unwrap();
        assert!(ptx.contains(&format!(".target {}", arch.name())), "{ptx}");
        assert!(ptx.contains(".visible .entry k0_"), "{ptx}");
    }
}

/// Every kernel of every stage model lowers (or runs on the host, for call kernels), for
/// both architectures; where `ptxas` is installed, the PTX assembles.
#[test]
fn stage_models_lower_and_assemble() {
    let ptxas = common::ptxas();
    for name in common::MODELS {
        let (p, _) = common::model_program(name);
        for arch in [Arch::Sm80, Arch::Sm90] {
            let c = compile_ptx(&p, arch).unwrap_or_else(|e| panic!("{name} {arch}: {e}"));
            assert_eq!(c.plans.len(), p.kernels.len());
            if let Some(ptxas) = &ptxas {
                common::assemble(ptxas, &c.ptx, arch.name())
                    .unwrap_or_else(|e| panic!("{name} {arch}: ptxas: {e}"));
            }
        }
    }
}

/// The small kernels assemble too (when `ptxas` is installed).
#[test]
fn small_kernels_assemble() {
    let Some(ptxas) = common::ptxas() else { return };
    for src in [ADD_RELU, ROW_SUM, MATMUL] {
        let p = common::fuse_text(src);
        for arch in [Arch::Sm80, Arch::Sm90] {
            let ptx = emit_ptx(&p, arch).unwrap();
            common::assemble(&ptxas, &ptx, arch.name()).unwrap_or_else(|e| panic!("{e}\n{ptx}"));
        }
    }
}

/// A function with no NVPTX lowering (libm's `tan`) is a typed error naming the kernel.
#[test]
fn no_lowering_is_a_typed_error() {
    let p = common::fuse_text(
        "func @main(%x: f32[16]) -> (y: f32[16]) {
  %y = tan(%x) : f32[16]
  return %y
}",
    );
    let e = emit_ptx(&p, Arch::Sm80).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, terafab_gpu::GpuError::Lower { .. }), "{msg}");
    assert!(msg.contains("kernel @") && msg.contains("tan"), "{msg}");
}

#[test]
fn arch_names_parse() {
    assert_eq!("sm_80".parse::<Arch>().unwrap(), Arch::Sm80);
    assert_eq!("sm_90".parse::<Arch>().unwrap(), Arch::Sm90);
    assert!("sm_70".parse::<Arch>().is_err());
    assert_eq!(Arch::for_capability(9, 0), Some(Arch::Sm90));
    assert_eq!(Arch::for_capability(8, 6), Some(Arch::Sm80));
    assert_eq!(Arch::for_capability(7, 5), None);
}
