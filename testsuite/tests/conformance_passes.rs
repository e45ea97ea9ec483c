//! The ONNX conformance suite with a pass pipeline run before the interpreter: the passes must
//! keep every case of `expectations/interp.txt` passing (see `common/mod.rs`).

mod common;

use terafab_testsuite::{Interpreter, Optimized};

/// The pipeline under test.
const PIPELINE: &str = "default";

#[test]
fn conformance_with_passes() {
    let backend = Optimized::new(PIPELINE, Interpreter).unwrap_or_else(|e| panic!("{e}"));
    common::check_interp_expectations(&backend);
}
