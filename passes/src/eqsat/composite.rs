//! Recognition of composite patterns (softmax, layer-norm, GELU, ...) as single ops.

use super::rules::RuleDef;

/// The recognition rules.
pub const RULES: &[RuleDef] = &[];
