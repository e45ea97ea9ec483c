//! Reductions, arg-reductions, cumulative reductions and sort.

use super::{InterpError, invalid};
use crate::op::ReduceKind;
use crate::tensor::Tensor;

pub fn reduce(_x: &Tensor, _kind: ReduceKind, _axes: &[usize], _keep_dims: bool) -> Result<Tensor, InterpError> {
    Err(invalid("reduce: not written yet"))
}
pub fn arg_reduce(_x: &Tensor, _is_max: bool, _axis: usize, _keep_dims: bool, _select_last: bool) -> Result<Tensor, InterpError> {
    Err(invalid("arg_reduce: not written yet"))
}
pub fn cumulative(_x: &Tensor, _kind: ReduceKind, _axis: usize, _exclusive: bool, _reverse: bool) -> Result<Tensor, InterpError> {
    Err(invalid("cumulative: not written yet"))
}
pub fn sort(_x: &Tensor, _axis: usize, _descending: bool) -> Result<(Tensor, Tensor), InterpError> {
    Err(invalid("sort: not written yet"))
}
