//! The ONNX conformance suite on the LLVM CPU backend: every model runs the `default`
//! pipeline, is fused into kernels, compiled to machine code and run (one thread per case; the
//! cases run in parallel); every output is also compared with the reference interpreter's
//! ([`Differential`]). Every case of `expectations/llvm.txt` must pass (see `common/mod.rs`).

mod common;

use terafab_testsuite::{Differential, Interpreter, Llvm, Optimized};

#[test]
fn conformance_on_llvm() {
    let backend = Differential {
        backend: Optimized::new("default", Llvm::single_threaded())
            .unwrap_or_else(|e| panic!("{e}")),
        reference: Interpreter,
    };
    common::check_expectations(&backend, "llvm.txt");
}
