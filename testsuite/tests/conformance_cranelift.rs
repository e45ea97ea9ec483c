//! The ONNX conformance suite on the Cranelift CPU backend: every model runs the `default`
//! pipeline, is fused into kernels, compiled to machine code by Cranelift and run (one thread
//! per case; the cases run in parallel); every output is also compared with the reference
//! interpreter's ([`Differential`]). Every case of `expectations/cranelift.txt` must pass (see
//! `common/mod.rs`).

mod common;

use terafab_testsuite::{Cranelift, Differential, Interpreter, Optimized};

#[test]
fn conformance_on_cranelift() {
    let backend = Differential {
        backend: Optimized::new("default", Cranelift::single_threaded())
            .unwrap_or_else(|e| panic!("{e}")),
        reference: Interpreter,
    };
    common::check_expectations(&backend, "cranelift.txt");
}
