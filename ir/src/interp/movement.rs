//! Data-movement kernels: broadcast, reshape, transpose, slice, reverse, concat, pad, gather, scatter.

use super::{InterpError, invalid};
use crate::op::ScatterMode;
use crate::tensor::Tensor;

pub fn broadcast(_x: &Tensor, _shape: &[usize]) -> Result<Tensor, InterpError> {
    Err(invalid("broadcast: not written yet"))
}
pub fn reshape(_x: &Tensor, _shape: &[usize]) -> Result<Tensor, InterpError> {
    Err(invalid("reshape: not written yet"))
}
pub fn transpose(_x: &Tensor, _perm: &[usize]) -> Result<Tensor, InterpError> {
    Err(invalid("transpose: not written yet"))
}
pub fn slice(_x: &Tensor, _start: &[usize], _limit: &[usize], _stride: &[usize]) -> Result<Tensor, InterpError> {
    Err(invalid("slice: not written yet"))
}
pub fn reverse(_x: &Tensor, _axes: &[usize]) -> Result<Tensor, InterpError> {
    Err(invalid("reverse: not written yet"))
}
pub fn concat(_xs: &[Tensor], _axis: usize) -> Result<Tensor, InterpError> {
    Err(invalid("concat: not written yet"))
}
pub fn pad(_x: &Tensor, _value: &Tensor, _low: &[i64], _high: &[i64], _interior: &[usize]) -> Result<Tensor, InterpError> {
    Err(invalid("pad: not written yet"))
}
pub fn gather(_x: &Tensor, _indices: &Tensor, _axis: usize) -> Result<Tensor, InterpError> {
    Err(invalid("gather: not written yet"))
}
pub fn scatter(_x: &Tensor, _indices: &Tensor, _updates: &Tensor, _mode: ScatterMode) -> Result<Tensor, InterpError> {
    Err(invalid("scatter: not written yet"))
}
