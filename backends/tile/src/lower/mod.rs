//! Lowering the kernel IR (`terafab_ir::kernel`) to tile programs, one kernel at a time.
//!
//! [`lower_kernel`] turns a kernel into a [`Program`] whose HBM buffers are the kernel-IR
//! buffers it reads and writes, each named [`hbm_name`] and holding the buffer's flat contents
//! (its `span` elements laid out by its strides, as the kernel interpreter's memory holds
//! them) in the element type of [`elem_type`]. A kernel the accelerator cannot run gives
//! [`NotLowered`] with the reason; the tile backend then runs it on the host (the kernel
//! interpreter) and says so in its report.
//!
//! * [`contraction`]: kernels of the plain GEMM form (`C[m, n] = Σ_k A[m, k] · B[k, n]`,
//!   row-major operands, epilogue bias and ReLU) through [`crate::gen::gemm`]: the matrix
//!   engine, double-buffered, partitioned over the mesh.
//! * [`split_gemm`]: a kernel-IR rewrite run before lowering: other contractions of the GEMM
//!   form (transposed operands, convolutions as im2col, any epilogue) split into pack, plain
//!   GEMM and epilogue kernels.
//! * [`vector`]: elementwise, movement and reduction loop nests with affine loads and stores
//!   on the DMA and vector engines, tiled, double-buffered, partitioned over the mesh.
//! * [`retile`]: variants of a kernel with better vector tiles (small windows unrolled, the
//!   longest variable as the tile's rows); the fastest that lowers is kept.

pub mod contraction;
pub mod retile;
pub mod split_gemm;
pub mod vector;

use terafab_ir::DType;
use terafab_ir::kernel::{BufferId, Kernel, KernelProgram};

use crate::config::Config;
use crate::dtype::ElemType;
use crate::numerics::{Cfp8, Cfp8Layout};
use crate::program::Program;

/// The name of kernel-IR buffer `b` in a tile program's HBM layout.
pub fn hbm_name(b: BufferId) -> String {
    format!("b{}", b.0)
}

/// The accelerator's element type for an IR element type: f32, bf16, and the CFP8 types at
/// the IR's biases (`cf8e4m3` bias 7, `cf8e5m2` bias 15: the same bytes, see
/// `tests/ir_formats.rs`); `None` for the types it does not compute (integers, bool, f64, f16,
/// the ONNX float8 types).
pub fn elem_type(d: DType) -> Option<ElemType> {
    match d {
        DType::F32 => Some(ElemType::F32),
        DType::BF16 => Some(ElemType::Bf16),
        DType::CF8E4M3 => Cfp8::new(Cfp8Layout::E4M3, 7).map(ElemType::Cfp8),
        DType::CF8E5M2 => Cfp8::new(Cfp8Layout::E5M2, 15).map(ElemType::Cfp8),
        _ => None,
    }
}

/// The vector engine's instruction for an IR binary op (`+ - * / max min`, computed in f32
/// with one rounding as the interpreter computes them); `None` for the others.
pub fn vector_binop(op: terafab_ir::BinaryOp) -> Option<crate::isa::BinOp> {
    use crate::isa::BinOp;
    use terafab_ir::BinaryOp as B;
    Some(match op {
        B::Add => BinOp::Add,
        B::Sub => BinOp::Sub,
        B::Mul => BinOp::Mul,
        B::Div => BinOp::Div,
        B::Max => BinOp::Max,
        B::Min => BinOp::Min,
        _ => return None,
    })
}

/// A kernel as a tile program.
#[derive(Debug, Clone)]
pub struct Lowered {
    pub program: Program,
    /// The kernel-IR buffers the program reads: loaded into HBM (by [`hbm_name`]) first.
    pub reads: Vec<BufferId>,
    /// The buffers it writes, every element: read back from HBM after the run.
    pub writes: Vec<BufferId>,
    /// How the kernel was lowered, for reports (`gemm 64x64x64, 2x2 nodes`).
    pub summary: String,
}

/// Why a kernel runs on the host instead of the accelerator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotLowered(pub String);

/// The cycles of `program` on `cfg`, simulated timing only (no arithmetic); `None` when it
/// does not simulate. For choosing between lowerings.
pub fn timing_cycles(cfg: &Config, program: &Program) -> Option<u64> {
    let mut timing = cfg.clone();
    timing.timing_only = true;
    timing.trace = false;
    let mut sim = crate::sim::Simulator::new(timing, program.clone()).ok()?;
    sim.run().ok().map(|r| r.cycles)
}

/// Lower one kernel of `p` for the machine `cfg`.
pub fn lower_kernel(cfg: &Config, p: &KernelProgram, k: &Kernel) -> Result<Lowered, NotLowered> {
    if let Some(l) = contraction::lower(cfg, p, k)? {
        return Ok(l);
    }
    vector::lower(cfg, p, k).map_err(|NotLowered(why)| {
        NotLowered(format!(
            "{} kernel: not a plain GEMM (matrix engine), and not lowered to the vector \
             engine: {why}",
            k.kind.name()
        ))
    })
}
