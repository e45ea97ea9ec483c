//! The ONNX conformance suite through the kernel IR: every model runs the `default` pipeline,
//! is fused into kernels and run by the kernel interpreter; every case of
//! `expectations/interp.txt` must pass (see `common/mod.rs`).

mod common;

use terafab_testsuite::{Kernels, Optimized};

#[test]
fn conformance_through_kernels() {
    let backend = Optimized::new("default", Kernels).unwrap_or_else(|e| panic!("{e}"));
    common::check_interp_expectations(&backend);
}
