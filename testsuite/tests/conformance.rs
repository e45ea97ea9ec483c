//! The ONNX conformance suite on the reference interpreter: every case in
//! `expectations/interp.txt` must pass (see `common/mod.rs`).

mod common;

#[test]
fn interpreter_conformance() {
    common::check_interp_expectations(&terafab_testsuite::Interpreter);
}
