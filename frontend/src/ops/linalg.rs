//! ONNX ops of this family (see the module list in `ops/mod.rs`).

use super::*;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[];
