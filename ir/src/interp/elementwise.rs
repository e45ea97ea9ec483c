//! Elementwise kernels: unary, binary (numpy broadcasting), compare, select, convert, iota.

use super::{InterpError, invalid};
use crate::dtype::DType;
use crate::op::{BinaryOp, CompareOp, UnaryOp};
use crate::tensor::Tensor;

pub fn iota(_dtype: DType, _shape: &[usize], _axis: usize) -> Result<Tensor, InterpError> {
    Err(invalid("iota: not written yet"))
}
pub fn unary(_op: UnaryOp, _x: &Tensor) -> Result<Tensor, InterpError> {
    Err(invalid("unary: not written yet"))
}
pub fn binary(_op: BinaryOp, _a: &Tensor, _b: &Tensor) -> Result<Tensor, InterpError> {
    Err(invalid("binary: not written yet"))
}
pub fn compare(_op: CompareOp, _a: &Tensor, _b: &Tensor) -> Result<Tensor, InterpError> {
    Err(invalid("compare: not written yet"))
}
pub fn select(_c: &Tensor, _a: &Tensor, _b: &Tensor) -> Result<Tensor, InterpError> {
    Err(invalid("select: not written yet"))
}
pub fn convert(_x: &Tensor, _to: DType) -> Result<Tensor, InterpError> {
    Err(invalid("convert: not written yet"))
}
