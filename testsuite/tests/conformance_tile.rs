//! The ONNX conformance suite on the tile backend, on a 2x2 chip: every model runs the
//! `default` pipeline and is fused into kernels; each kernel the accelerator can run is lowered
//! and simulated bit-exactly, the others run on the host (the kernel interpreter); every output
//! is also compared with the reference interpreter's ([`Differential`]: f32 within the runner's
//! rtol and 1e-5 absolute, the slack of the accelerator's f32 accumulation against the
//! interpreter's f64). Every case of `expectations/tile.txt` must pass (see `common/mod.rs`).

mod common;

use terafab_testsuite::{Differential, Interpreter, Optimized, Tile};

#[test]
fn conformance_on_tile() {
    let backend = Differential {
        backend: Optimized::new(
            "default",
            Tile {
                config: terafab_tile::Config::preset("2x2").unwrap(),
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
        reference: Interpreter,
    };
    common::check_expectations(&backend, "tile.txt");
}
