//! Code generators: build tile [`Program`](crate::Program)s for whole operations.
//!
//! * [`gemm`]: `C = A · B` (+ bias, ReLU) tiled for the configured SRAM, double-buffered,
//!   partitioned over the mesh with operands multicast along node rows and columns.
//! * [`builder`]: the small helpers the generators share (SRAM allocation, per-engine
//!   instruction queues, strided DMA that respects the encoding's field widths).

pub mod builder;
pub mod gemm;

pub use gemm::{
    Digits, EpiOperand, EpiStep, Epilogue, Gather, GemmPlan, GemmSpec, MAX_DIGITS, MAX_EPILOGUE,
    gemm_plan, gemm_program,
};

use crate::error::ConfigError;

/// Why a generator could not build a program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenError {
    /// The machine configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// A dimension is zero.
    #[error("dimension `{0}` is zero")]
    ZeroDim(&'static str),
    /// A size or address computation overflowed.
    #[error("{0}: size overflows")]
    Overflow(&'static str),
    /// The buffers do not fit the chip's HBM.
    #[error("the buffers need {needed} bytes of HBM, the chip has {available}")]
    HbmTooSmall { needed: u64, available: u64 },
    /// The SRAM cannot hold even the smallest tiles.
    #[error("the smallest tiles need {needed} bytes of SRAM per node, the chip has {available}")]
    SramTooSmall { needed: u64, available: u64 },
    /// The program would have more instructions than the generator accepts.
    #[error("the program would have about {count} instructions (limit {limit})")]
    TooManyInstructions { count: u64, limit: u64 },
    /// A combination the generator does not produce.
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    /// A field does not fit its encoding (an internal limit the generator checks).
    #[error("{what} = {value} does not fit its instruction field")]
    Field { what: &'static str, value: u64 },
}
