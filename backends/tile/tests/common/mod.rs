//! Helpers shared by the tile backend's differential tests (`backend.rs`, `vector.rs`,
//! `contraction.rs`).
// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use terafab_ir::Tensor;

/// `n` deterministic values in [-1, 1) (xorshift from `seed`).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// An f32 tensor of `shape` filled by [`values`].
pub fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(shape.to_vec(), values(shape.iter().product(), seed)).unwrap()
}
