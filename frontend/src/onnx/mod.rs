//! ONNX models: protobuf decoding, tensors, and import into the IR.

pub mod export;
pub mod import;
pub mod proto;
pub mod tensor;
pub mod text;

pub use import::{ImportError, ImportOptions, NodeCtx, check_model, decode_model, import_model};
