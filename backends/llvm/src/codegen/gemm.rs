//! Contractions as packed GEMM (filled in below).

use super::{CodegenError, Gen};
use terafab_ir::kernel::{Kernel, LoopNest};

/// The GEMM schedule of a contraction kernel, when it has the matmul/conv form.
pub(crate) fn try_gemm(
    _g: &mut Gen<'_, '_>,
    _name: &str,
    _k: &Kernel,
    _nest: &LoopNest,
) -> Result<Option<Vec<(String, u64)>>, CodegenError> {
    Ok(None)
}
