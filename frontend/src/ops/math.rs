//! Elementwise arithmetic, activations, logic and casts.

use terafab_ir::{BinaryOp, Op};

use super::*;
use crate::onnx::import::ImportError;
use terafab_ir::ValueId;

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[
    ("Add", |c| binary(c, BinaryOp::Add)),
    ("Sub", |c| binary(c, BinaryOp::Sub)),
    ("Mul", |c| binary(c, BinaryOp::Mul)),
    ("Div", |c| binary(c, BinaryOp::Div)),
    ("Relu", relu),
];

/// A numpy-broadcasting binary op of two inputs of the same type.
fn binary(c: &mut NodeCtx, op: BinaryOp) -> Result<Vec<ValueId>, ImportError> {
    let (a, b) = (c.input(0)?, c.input(1)?);
    Ok(vec![c.op(Op::Binary(op), &[a, b])?])
}

/// `max(x, 0)`.
fn relu(c: &mut NodeCtx) -> Result<Vec<ValueId>, ImportError> {
    let x = c.input(0)?;
    let zero = c.scalar(0.0, c.dtype(x))?;
    Ok(vec![c.binary(BinaryOp::Max, x, zero)?])
}
