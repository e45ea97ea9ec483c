//! Tiered runs against the interpreter on the stage models (`testsuite/models/`), on both tiers
//! and 1 and 2 threads; the switch to LLVM; and failures of either compiler (injected through
//! `Tiered::with_compilers`).
//!
//! The LLVM compilation is held back on a channel where a test needs the Cranelift tier to run
//! first, so no test depends on which compiler happens to finish first.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use terafab_ir::Tensor;
use terafab_ir::kernel::KernelProgram;
use terafab_ir::npy::read_npy;

use super::*;

/// Both tiers against the interpreter: the tolerances of the stage tests
/// (`testsuite/tests/stages.rs`): f32 sums in another order than the interpreter's f64 ones
/// (and, for LLVM, with FMA) differ by a few ulps per accumulated product; rtol 1e-4 allows
/// roughly a thousand, atol 1e-5 covers outputs near zero.
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

const MODELS: [&str; 4] = ["mlp", "cnn_bn", "resnet_bottleneck", "transformer_block"];

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testsuite/models")
}

/// A stage model's kernel program (after the `default` pipeline), its input and the
/// interpreter's output for it.
fn stage_model(name: &str) -> (KernelProgram, Tensor, Tensor) {
    let dir = models_dir();
    let x = read_npy(&dir.join(format!("{name}_input.npy"))).expect("the input");
    let mut module =
        terafab_frontend::load_model_with(&dir.join(format!("{name}.onnx")), &Default::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    terafab_passes::run_pipeline(&mut module, "default", Default::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let f = module.entry().expect("an entry function");
    let want = terafab_ir::interp::run_function(f, std::slice::from_ref(&x))
        .unwrap_or_else(|e| panic!("{name}: interpreter: {e}"))
        .remove(0);
    let bind = terafab_ir::interp::bind_inputs(f, std::slice::from_ref(&x))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let p = terafab_passes::fuse::fuse_function(f, &bind).unwrap_or_else(|e| panic!("{name}: {e}"));
    (p, x, want)
}

fn from_tfir(src: &str, inputs: &[Tensor]) -> KernelProgram {
    let module = terafab_ir::parse::parse_module(src).expect("parses");
    let f = module.entry().expect("an entry function");
    let bind = terafab_ir::interp::bind_inputs(f, inputs).expect("static shapes");
    terafab_passes::fuse::fuse_function(f, &bind).expect("fuses")
}

fn cranelift(
    threads: usize,
) -> impl FnOnce(&KernelProgram) -> Result<terafab_cranelift::Executable, CraneliftError> {
    move |p| terafab_cranelift::compile(p, &terafab_cranelift::Options { threads })
}

/// The LLVM compiler, started only once `go` receives (or is dropped).
fn llvm_after(
    go: mpsc::Receiver<()>,
    threads: usize,
) -> impl FnOnce(&KernelProgram) -> Result<terafab_llvm::Executable, LlvmError> + Send + 'static {
    move |p| {
        let _ = go.recv();
        terafab_llvm::compile(
            p,
            &terafab_llvm::Options {
                threads,
                ..Default::default()
            },
        )
    }
}

fn one(out: Outputs) -> (Tensor, Tier) {
    assert_eq!(out.tensors.len(), 1);
    (out.tensors.into_iter().next().unwrap(), out.tier)
}

#[test]
fn stage_models_match_the_interpreter_on_both_tiers_and_thread_counts() {
    for name in MODELS {
        let (p, x, want) = stage_model(name);
        let mut per_tier: Vec<Vec<Tensor>> = vec![Vec::new(), Vec::new()];
        for threads in [1, 2] {
            let (go, wait) = mpsc::channel();
            let t = Tiered::with_compilers(&p, cranelift(threads), llvm_after(wait, threads))
                .unwrap_or_else(|e| panic!("{name}: {}", error_chain(&e)));
            // Dropped before `t` (whose drop joins the LLVM worker) should an assertion fail.
            let go = go;
            // LLVM is held back: the first runs are Cranelift's.
            assert!(matches!(t.llvm_status(), LlvmStatus::Compiling));
            assert_eq!(t.tier(), Tier::Cranelift);
            let (first, tier) = one(t.run(std::slice::from_ref(&x)).unwrap());
            assert_eq!(tier, Tier::Cranelift, "{name}");
            terafab_testsuite::compare(&first, &want, RTOL, ATOL)
                .unwrap_or_else(|e| panic!("{name}, cranelift tier, {threads} thread(s): {e}"));
            // Then LLVM compiles, and the runs switch to its code.
            go.send(()).unwrap();
            assert!(matches!(t.wait_for_llvm(), LlvmStatus::Ready { .. }));
            assert_eq!(t.tier(), Tier::Llvm);
            assert!(t.llvm_stats().is_some() && t.cranelift_stats().is_some());
            let (second, tier) = one(t.run(std::slice::from_ref(&x)).unwrap());
            assert_eq!(tier, Tier::Llvm, "{name}");
            terafab_testsuite::compare(&second, &want, RTOL, ATOL)
                .unwrap_or_else(|e| panic!("{name}, llvm tier, {threads} thread(s): {e}"));
            // The tiers agree with each other within the same tolerance.
            terafab_testsuite::compare(&second, &first, RTOL, ATOL)
                .unwrap_or_else(|e| panic!("{name}, llvm vs cranelift: {e}"));
            if std::env::var_os("TIERED_REPORT").is_some() {
                let (a, b) = (first.to_f64_vec(), second.to_f64_vec());
                let differ = a
                    .iter()
                    .zip(&b)
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count();
                let max = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f64::max);
                eprintln!(
                    "{name}, {threads} thread(s): {differ} of {} elements differ between the tiers, max |diff| {max:e}",
                    a.len()
                );
            }
            per_tier[0].push(first);
            per_tier[1].push(second);
        }
        // Within a tier, the thread count changes no bit.
        for (tier, runs) in ["cranelift", "llvm"].iter().zip(&per_tier) {
            assert!(
                runs[0].bit_eq(&runs[1]),
                "{name}, {tier}: 1 and 2 threads differ"
            );
        }
    }
}

#[test]
fn integer_and_movement_results_are_bitwise_equal_on_both_tiers() {
    let a = Tensor::from_vec(
        vec![6, 5],
        (0..30).map(|i| i * 7 - 100).collect::<Vec<i32>>(),
    )
    .unwrap();
    let b = Tensor::from_vec(
        vec![5, 6],
        (0..30)
            .map(|i| (i as f32 * 0.37).sin())
            .collect::<Vec<f32>>(),
    )
    .unwrap();
    let inputs = [a, b];
    let p = from_tfir(
        "func @main(%a: i32[6,5], %b: f32[5,6]) -> (s: i32[5,6], t: f32[6,5], m: i32[6]) {
  %at = transpose(%a) {perm=[1, 0]} : i32[5,6]
  %two = constant() {value=dense<i32[]>[2]} : i32[]
  %s0 = mul(%at, %two) : i32[5,6]
  %s = sub(%s0, %at) : i32[5,6]
  %t = transpose(%b) {perm=[1, 0]} : f32[6,5]
  %m = reduce_max(%a) {axes=[1], keep_dims=false} : i32[6]
  return %s, %t, %m
}",
        &inputs,
    );
    let want = terafab_ir::kernel::interp::run_program(&p, &inputs).unwrap();
    let (go, wait) = mpsc::channel();
    let t = Tiered::with_compilers(&p, cranelift(2), llvm_after(wait, 2)).unwrap();
    let go = go;
    let first = t.run(&inputs).unwrap();
    assert_eq!(first.tier, Tier::Cranelift);
    go.send(()).unwrap();
    t.wait_for_llvm();
    let second = t.run(&inputs).unwrap();
    assert_eq!(second.tier, Tier::Llvm);
    for ((c, l), w) in first.tensors.iter().zip(&second.tensors).zip(&want) {
        assert!(c.bit_eq(w), "cranelift vs the kernel interpreter");
        assert!(l.bit_eq(w), "llvm vs the kernel interpreter");
    }
}

#[test]
fn compile_switches_to_llvm_once_it_is_ready() {
    let (p, x, want) = stage_model("mlp");
    let t = Tiered::compile(&p, &Options::default()).unwrap();
    let (out, _) = one(t.run(std::slice::from_ref(&x)).unwrap());
    terafab_testsuite::compare(&out, &want, RTOL, ATOL).unwrap();
    let LlvmStatus::Ready { after } = t.wait_for_llvm() else {
        panic!("LLVM failed")
    };
    assert!(after > Duration::ZERO);
    assert_eq!(t.tier(), Tier::Llvm);
    assert_eq!(t.run(std::slice::from_ref(&x)).unwrap().tier, Tier::Llvm);
    // Bad inputs are the running tier's typed error.
    let err = t.run(&[]).unwrap_err();
    assert!(
        matches!(err, TieredError::Llvm(LlvmError::Input(_))),
        "{err:?}"
    );
}

#[test]
fn an_llvm_error_in_the_background_keeps_the_cranelift_code_running() {
    let (p, x, want) = stage_model("mlp");
    let t = Tiered::with_compilers(&p, cranelift(1), |_| {
        Err(LlvmError::Llvm("injected failure".into()))
    })
    .unwrap();
    let LlvmStatus::Failed { error, .. } = t.wait_for_llvm() else {
        panic!("the injected failure is reported")
    };
    assert!(error.to_string().contains("injected failure"), "{error}");
    assert_eq!(t.tier(), Tier::Cranelift);
    for _ in 0..2 {
        let (out, tier) = one(t.run(std::slice::from_ref(&x)).unwrap());
        assert_eq!(tier, Tier::Cranelift);
        terafab_testsuite::compare(&out, &want, RTOL, ATOL).unwrap();
    }
    let err = t.run(&[]).unwrap_err();
    assert!(
        matches!(err, TieredError::Cranelift(CraneliftError::Runtime(_))),
        "{err:?}"
    );
}

#[test]
fn an_llvm_panic_in_the_background_is_an_error_not_a_crash() {
    let (p, x, _) = stage_model("mlp");
    let t = Tiered::with_compilers(&p, cranelift(1), |_| panic!("injected panic")).unwrap();
    let LlvmStatus::Failed { error, .. } = t.wait_for_llvm() else {
        panic!("the panic is reported")
    };
    let msg = error.to_string();
    assert!(
        msg.contains("panicked") && msg.contains("injected panic"),
        "{msg}"
    );
    assert_eq!(
        t.run(std::slice::from_ref(&x)).unwrap().tier,
        Tier::Cranelift
    );
}

#[test]
fn a_cranelift_failure_waits_for_llvm_and_runs_its_code() {
    let (p, x, want) = stage_model("mlp");
    let t = Tiered::with_compilers(
        &p,
        |_| Err(CraneliftError::Target("injected failure".into())),
        |p| terafab_llvm::compile(p, &terafab_llvm::Options::default()),
    )
    .unwrap();
    assert!(matches!(t.llvm_status(), LlvmStatus::Ready { .. }));
    assert!(t.cranelift_error().is_some() && t.cranelift_stats().is_none());
    assert_eq!(t.tier(), Tier::Llvm);
    let (out, tier) = one(t.run(std::slice::from_ref(&x)).unwrap());
    assert_eq!(tier, Tier::Llvm);
    terafab_testsuite::compare(&out, &want, RTOL, ATOL).unwrap();
}

#[test]
fn both_compilers_failing_is_one_error_naming_both() {
    let (p, _, _) = stage_model("mlp");
    let err = Tiered::with_compilers(
        &p,
        |_| Err(CraneliftError::Target("no cranelift".into())),
        |_| Err(LlvmError::Llvm("no llvm".into())),
    )
    .err()
    .expect("an error");
    let msg = err.to_string();
    assert!(matches!(err, TieredError::Neither { .. }));
    assert!(
        msg.contains("no cranelift") && msg.contains("no llvm"),
        "{msg}"
    );
}
