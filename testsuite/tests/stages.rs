//! Snapshots of the lowered stages of four small models (an MLP, a CNN block with batch-norm,
//! a ResNet bottleneck block, a transformer encoder block), written by
//! `scripts/make_test_models.py` into `testsuite/models/`.
//!
//! For each model: the imported graph IR, the IR after the `default` pipeline, the optimized IR
//! (then [`OPTIMIZE`]: equality saturation) and its kernel IR (fusion) are insta-snapshotted
//! (`snapshots/stages__NAME@{imported,default,optimized,kernels}.snap`; constants of more than
//! [`ELIDE_ABOVE`] elements are elided), and the result of every stage on the saved input (the
//! interpreter's, then the kernel interpreter's and the Cranelift backend's on 1 and 2
//! threads) is compared with the output onnx's reference evaluator computed (saved next to the
//! model, so no Python runs here). The tile backend's stages on the 2x2 preset are snapshotted
//! too (`@tile-kernels` for every model, `@tile-asm` for the MLP and the CNN block) and its
//! simulated result compared. Review changed
//! snapshots with `cargo insta review`.

use std::path::{Path, PathBuf};

use terafab_frontend::{LoadOptions, load_model_with};
use terafab_ir::npy::read_npy;
use terafab_ir::print::{PrintOptions, print_module_with};
use terafab_ir::{Module, Tensor};
use terafab_passes::{PipelineOptions, run_pipeline};

/// Constants with more elements than this print as `dense<TYPE> elided`: weights would bury
/// the graph, while small constants (biases, scalars, shapes) show what the passes see.
const ELIDE_ABOVE: usize = 16;

/// The pipeline whose result is snapshotted.
const PIPELINE: &str = "default";

/// Tolerances against the reference evaluator's output (f32). The interpreter accumulates sums in
/// f64 and rounds once, while onnx's reference evaluator computes in f32 numpy (pairwise or
/// BLAS-ordered sums, f32 exp/erf and normalization), so the two differ by a few f32 ulps per
/// accumulated product: rtol 1e-4 allows roughly a thousand f32 ulps, and atol 1e-5 covers the
/// outputs near zero (after a residual Add or a LayerNorm) where relative error is meaningless.
/// Both are far below any real error a wrong rewrite or import would make on these weights.
const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn count_nodes(m: &Module) -> usize {
    m.functions.iter().map(|f| f.num_nodes()).sum()
}

/// Run the module's entry function on one input; its single result.
fn run(m: &Module, x: &Tensor, stage: &str) -> Tensor {
    let f = m.entry().expect("the module has an entry function");
    let mut out = terafab_ir::interp::run_function(f, std::slice::from_ref(x))
        .unwrap_or_else(|e| panic!("{stage}: the interpreter failed: {e}"));
    assert_eq!(out.len(), 1, "{stage}: one result expected");
    out.remove(0)
}

/// Snapshot the imported and optimized IR of `testsuite/models/NAME.onnx` and check both
/// against the saved reference output.
fn check_stages(name: &str) {
    let dir = models_dir();
    let model = dir.join(format!("{name}.onnx"));
    let x = read_npy(&dir.join(format!("{name}_input.npy"))).expect("read the input");
    let want =
        read_npy(&dir.join(format!("{name}_expected.npy"))).expect("read the expected output");
    let print_opts = PrintOptions {
        elide_constants_above: Some(ELIDE_ABOVE),
    };

    // (a) The imported graph.
    let mut module = load_model_with(&model, &LoadOptions::default()).unwrap_or_else(|e| {
        panic!(
            "{}: {}",
            model.display(),
            terafab_testsuite::error_chain(&e)
        )
    });
    let imported_nodes = count_nodes(&module);
    let imported = format!(
        "// {name}.onnx as imported: {imported_nodes} nodes\n{}",
        print_module_with(&module, &print_opts)
    );
    insta::assert_snapshot!(format!("{name}@imported"), imported);
    let before = run(&module, &x, "imported");
    terafab_testsuite::compare(&before, &want, RTOL, ATOL)
        .unwrap_or_else(|e| panic!("{name} as imported vs the reference evaluator: {e}"));

    // (b) After the pipeline.
    run_pipeline(&mut module, PIPELINE, PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {PIPELINE}: {e}"));
    let optimized = format!(
        "// {name}.onnx after `{PIPELINE}`: {} nodes (imported: {imported_nodes})\n{}",
        count_nodes(&module),
        print_module_with(&module, &print_opts)
    );
    insta::assert_snapshot!(format!("{name}@{PIPELINE}"), optimized);

    // (c) The pipeline keeps the interpreter's results bitwise (as passes/tests/semantics.rs
    // asks of every pipeline), so they match the reference as well.
    let after = run(&module, &x, PIPELINE);
    assert!(
        after.bit_eq(&before),
        "{name}: `{PIPELINE}` changed the interpreter's result"
    );
    terafab_testsuite::compare(&after, &want, RTOL, ATOL)
        .unwrap_or_else(|e| panic!("{name} after `{PIPELINE}` vs the reference evaluator: {e}"));

    // (d) Equality saturation, then cleanup: the optimized graph. Its rules include inexact
    // ones (constant folding of scales into weights, composite recognition), so the result is
    // compared with the reference within the same tolerances instead of bitwise.
    run_pipeline(&mut module, OPTIMIZE, PipelineOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {OPTIMIZE}: {e}"));
    let optimized = format!(
        "// {name}.onnx after `{PIPELINE},{OPTIMIZE}`: {} nodes (imported: {imported_nodes})\n{}",
        count_nodes(&module),
        print_module_with(&module, &print_opts)
    );
    insta::assert_snapshot!(format!("{name}@optimized"), optimized);
    let opt = run(&module, &x, OPTIMIZE);
    terafab_testsuite::compare(&opt, &want, RTOL, ATOL)
        .unwrap_or_else(|e| panic!("{name} after `{OPTIMIZE}` vs the reference evaluator: {e}"));

    // (e) The kernel IR of the optimized graph (dims bound by the input's shape), verified,
    // and run by the kernel interpreter.
    let f = module.entry().expect("the module has an entry function");
    let bind = terafab_ir::interp::bind_inputs(f, std::slice::from_ref(&x))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let program = terafab_passes::fuse::fuse_function(f, &bind)
        .unwrap_or_else(|e| panic!("{name}: fuse: {e}"));
    let counts: Vec<String> = program
        .kernel_counts()
        .iter()
        .map(|(k, n)| format!("{n} {}", k.name()))
        .collect();
    let kernels = format!(
        "// {name}.onnx: {} kernels ({}) from {} graph nodes\n{}",
        program.kernels.len(),
        counts.join(", "),
        count_nodes(&module),
        terafab_ir::kernel::print::print_program(&program)
    );
    insta::assert_snapshot!(format!("{name}@kernels"), kernels);
    let mut out = terafab_ir::kernel::interp::run_program(&program, std::slice::from_ref(&x))
        .unwrap_or_else(|e| panic!("{name}: the kernel interpreter failed: {e}"));
    assert_eq!(out.len(), 1);
    terafab_testsuite::compare(&out.remove(0), &opt, RTOL, ATOL)
        .unwrap_or_else(|e| panic!("{name}: kernels vs the optimized graph: {e}"));

    // (f) The same kernel program compiled by the Cranelift backend, on 1 and 2 threads (the
    // same bits), against the optimized graph.
    let runs: Vec<Tensor> = [1, 2]
        .into_iter()
        .map(|threads| {
            let exe = terafab_cranelift::compile(&program, &terafab_cranelift::Options { threads })
                .unwrap_or_else(|e| panic!("{name}: cranelift: {e}"));
            let mut out = exe
                .run(std::slice::from_ref(&x))
                .unwrap_or_else(|e| panic!("{name}: cranelift: {e}"));
            assert!(exe.stats().calls.is_empty(), "{:?}", exe.stats().calls);
            out.remove(0)
        })
        .collect();
    assert!(runs[0].bit_eq(&runs[1]), "{name}: 1 and 2 threads differ");
    terafab_testsuite::compare(&runs[0], &opt, RTOL, ATOL)
        .unwrap_or_else(|e| panic!("{name}: cranelift vs the optimized graph: {e}"));

    // (g) The tile backend on the 2x2 preset (f32 operands): the kernel IR after its
    // contraction split with each kernel's placement, and for the two smallest models the
    // tile programs themselves (`terafab compile --backend tile --emit tile-kernels|tile-asm`);
    // the simulated result against the optimized graph's.
    let cfg = terafab_tile::Config::preset("2x2").expect("the 2x2 preset");
    let compiled = terafab_tile::compile::compile_program(&cfg, &program, &Default::default());
    insta::assert_snapshot!(format!("{name}@tile-kernels"), compiled.kernels_text());
    if matches!(name, "mlp" | "cnn_bn") {
        insta::assert_snapshot!(format!("{name}@tile-asm"), compiled.asm_text());
    }
    let (mut out, _) = terafab_tile::backend::run_function(&cfg, f, std::slice::from_ref(&x))
        .unwrap_or_else(|e| panic!("{name}: the tile backend failed: {e}"));
    terafab_testsuite::compare(&out.remove(0), &opt, TILE_RTOL, ATOL)
        .unwrap_or_else(|e| panic!("{name}: tile (2x2) vs the optimized graph: {e}"));
}

/// The tile backend sums contractions in f32 in its own chunk order (the interpreter in f64):
/// a looser relative tolerance than [`RTOL`] for the same reason, with room for the vector
/// engine's f32 reductions (softmax, layer norm) of the transformer block.
const TILE_RTOL: f64 = 1e-3;

/// The passes after `default` whose result is the optimized graph.
const OPTIMIZE: &str = "eqsat,default";

#[test]
fn mlp() {
    check_stages("mlp");
}

#[test]
fn cnn_bn() {
    check_stages("cnn_bn");
}

#[test]
fn resnet_bottleneck() {
    check_stages("resnet_bottleneck");
}

#[test]
fn transformer_block() {
    check_stages("transformer_block");
}
