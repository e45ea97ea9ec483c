//! terafab's tensor IR.
//!
//! - [`dtype`], [`shape`], [`tensor`]: element types, (symbolic) shapes with numpy
//!   broadcasting, and shared typed tensor buffers; [`float8`]: the 8-bit float formats.
//! - [`op`]: the small core op set every frontend lowers to and every backend implements.
//! - [`composite`]: composite ops (softmax, norms, GELU, SiLU, attention) that backends may
//!   lower as one unit, each defined by its decomposition into core ops.
//! - [`graph`]: modules, functions, regions and nodes in SSA form.
//! - [`infer`]: the type and shape rule of every op.
//! - [`verify`]: the verifier (SSA, dominance, names, types and attributes of every op).
//! - [`print`] and [`parse`]: the text form, which round-trips exactly.
//! - [`interp`]: the reference interpreter, the oracle every backend is tested against.
//! - [`npy`]: reading and writing numpy `.npy` files.

pub mod composite;
pub mod dtype;
pub mod float8;
pub mod graph;
pub mod infer;
pub mod op;
pub mod shape;
pub mod tensor;

pub use half;

pub use composite::{CompositeOp, GeluApprox};
pub use dtype::DType;
pub use float8::{CF8E4M3, CF8E5M2, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
pub use graph::{Function, Module, Node, Region, TensorType, ValueId, ValueInfo, ValueTable};
pub use op::{Attr, BinaryOp, CompareOp, Op, ReduceKind, ScatterMode, UnaryOp};
pub use shape::{Dim, Shape};
pub use tensor::{Data, Element, Tensor, TensorError};
pub mod interp;
pub mod kernel;
pub mod npy;
pub mod parse;
pub mod print;
pub mod verify;
