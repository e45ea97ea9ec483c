//! The ONNX conformance suite on the tile backend, on a 2x2 chip: every model runs the
//! `default` pipeline and is fused into kernels; each kernel the accelerator can run is lowered
//! and simulated bit-exactly, the others run on the host (the kernel interpreter); every output
//! is also compared with the reference interpreter's ([`Differential`]: f32 within the runner's
//! rtol and 1e-5 absolute, the slack of the accelerator's f32 accumulation against the
//! interpreter's f64). Every case of `expectations/tile.txt` must pass (see `common/mod.rs`).
//! The same in bf16 mode against `expectations/tile-bf16.txt`.

mod common;

use terafab_testsuite::{Differential, Interpreter, Optimized, Tile};

#[test]
fn conformance_on_tile() {
    let backend = Differential {
        backend: Optimized::new(
            "default",
            Tile {
                config: terafab_tile::Config::preset("2x2").unwrap(),
                bf16: false,
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
        reference: Interpreter,
    };
    common::check_expectations(&backend, "tile.txt");
}

/// The backend's default mode, bf16 contraction operands (`precision-bf16`), on a 2x2 chip:
/// outputs against ONNX's f32 references within rtol and atol 2^-6
/// ([`terafab_testsuite::BF16_OPERANDS_RTOL`]: twice the worst relative error of a bf16
/// product), and against the interpreter running the same rounded program within the f32
/// tolerance of the first test (the same rounding points: only the summation order differs).
/// Every case of `expectations/tile-bf16.txt` must pass.
#[test]
fn conformance_on_tile_bf16() {
    let backend = Differential {
        backend: Optimized::new(
            "default",
            Tile {
                config: terafab_tile::Config::preset("2x2").unwrap(),
                bf16: true,
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
        reference: Optimized::new("default,precision-bf16,dce", Interpreter)
            .unwrap_or_else(|e| panic!("{e}")),
    };
    common::check_expectations(&backend, "tile-bf16.txt");
}
