//! Contractions and windows: dot_general, conv, reduce_window.

use super::{InterpError, invalid};
use crate::op::ReduceKind;
use crate::tensor::Tensor;

/// The attributes of a `conv`.
pub struct ConvParams<'a> {
    pub stride: &'a [usize],
    pub pad_low: &'a [i64],
    pub pad_high: &'a [i64],
    pub lhs_dilation: &'a [usize],
    pub rhs_dilation: &'a [usize],
    pub groups: usize,
}

/// The attributes of a `reduce_window`.
pub struct WindowParams<'a> {
    pub window: &'a [usize],
    pub stride: &'a [usize],
    pub dilation: &'a [usize],
    pub pad_low: &'a [usize],
    pub pad_high: &'a [usize],
}

pub fn dot_general(
    _lhs: &Tensor,
    _rhs: &Tensor,
    _lhs_batch: &[usize],
    _rhs_batch: &[usize],
    _lhs_contract: &[usize],
    _rhs_contract: &[usize],
) -> Result<Tensor, InterpError> {
    Err(invalid("dot_general: not written yet"))
}
pub fn conv(_x: &Tensor, _w: &Tensor, _p: &ConvParams) -> Result<Tensor, InterpError> {
    Err(invalid("conv: not written yet"))
}
pub fn reduce_window(_x: &Tensor, _kind: ReduceKind, _p: &WindowParams) -> Result<Tensor, InterpError> {
    Err(invalid("reduce_window: not written yet"))
}
