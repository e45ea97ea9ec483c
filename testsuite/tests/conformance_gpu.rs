//! The ONNX conformance suite and the GPU backend (`expectations/gpu.txt`).
//!
//! - Everywhere: every case of the list is fused, after the `default` pipeline, into kernel
//!   programs that compile to PTX for sm_80 (no GPU needed; then run by the kernel
//!   interpreter, so the list holds only cases whose results are right).
//! - With a GPU: every case of the list runs on it and matches the expected outputs and the
//!   interpreter's ([`Differential`]). Without one the test says it is skipped.

mod common;

use terafab_testsuite::{Differential, Gpu, GpuLowering, Interpreter, Optimized};

#[test]
fn conformance_cases_lower_to_ptx() {
    let backend = Optimized::new(
        "default",
        GpuLowering {
            arch: terafab_gpu::Arch::Sm80,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    common::check_expectations(&backend, "gpu.txt");
}

#[test]
fn conformance_on_gpu() {
    let device = match terafab_gpu::open_device() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED: the conformance suite on the GPU needs a GPU: {e}");
            return;
        }
    };
    let backend = Differential {
        backend: Optimized::new("default", Gpu { device }).unwrap_or_else(|e| panic!("{e}")),
        reference: Interpreter,
    };
    common::check_expectations(&backend, "gpu.txt");
}
