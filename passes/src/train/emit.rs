//! [`Emit`]: the few node-building operations the loss and optimizer formulas need, so that the
//! same formulas build nodes in the ONNX importer (`NodeCtx`) and in a plain [`Function`]
//! ([`FnEmitter`], used by the training-step builder).

use terafab_ir::infer::infer;
use terafab_ir::{
    BinaryOp, CompareOp, DType, Function, Op, ReduceKind, Shape, Tensor, TensorType, UnaryOp,
    ValueId,
};

/// Something that appends nodes computing core ops and returns their results.
pub trait Emit {
    type Error;
    /// A node computing `op` (one result) on `inputs`, its type inferred.
    fn emit(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, Self::Error>;
    /// A constant node.
    fn emit_constant(&mut self, t: Tensor) -> ValueId;
    /// The type of a value.
    fn type_of(&self, v: ValueId) -> &TensorType;
    /// An error about the formula's operands.
    fn fail(&self, message: String) -> Self::Error;

    fn dtype_of(&self, v: ValueId) -> DType {
        self.type_of(v).dtype
    }
    /// The static dims of `v` (an error for symbolic dims).
    fn static_dims(&self, v: ValueId) -> Result<Vec<usize>, Self::Error> {
        let ty = self.type_of(v);
        ty.shape
            .as_static()
            .ok_or_else(|| self.fail(format!("shape {} must be static here", ty.shape)))
    }
    /// A scalar constant of `dtype`.
    fn splat(&mut self, v: f64, dtype: DType) -> Result<ValueId, Self::Error> {
        let t = Tensor::from_fn(dtype, &[], |_| v).map_err(|e| self.fail(e.to_string()))?;
        Ok(self.emit_constant(t))
    }
    fn un(&mut self, u: UnaryOp, x: ValueId) -> Result<ValueId, Self::Error> {
        self.emit(Op::Unary(u), &[x])
    }
    fn bin(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> Result<ValueId, Self::Error> {
        self.emit(Op::Binary(b), &[x, y])
    }
    fn cmp(&mut self, c: CompareOp, x: ValueId, y: ValueId) -> Result<ValueId, Self::Error> {
        self.emit(Op::Compare(c), &[x, y])
    }
    fn sel(&mut self, c: ValueId, x: ValueId, y: ValueId) -> Result<ValueId, Self::Error> {
        self.emit(Op::Select, &[c, x, y])
    }
    /// Convert to `to` (no node when `x` has that type already).
    fn conv(&mut self, x: ValueId, to: DType) -> Result<ValueId, Self::Error> {
        if self.dtype_of(x) == to {
            Ok(x)
        } else {
            self.emit(Op::Convert { to }, &[x])
        }
    }
    /// Reshape to static `dims` (no node when the shape is that already).
    fn reshape_to(&mut self, x: ValueId, dims: &[usize]) -> Result<ValueId, Self::Error> {
        let shape = Shape::from_static(dims);
        if self.type_of(x).shape == shape {
            Ok(x)
        } else {
            self.emit(Op::Reshape { shape }, &[x])
        }
    }
    fn reduce_axes(
        &mut self,
        kind: ReduceKind,
        x: ValueId,
        axes: &[usize],
        keep_dims: bool,
    ) -> Result<ValueId, Self::Error> {
        self.emit(
            Op::Reduce {
                kind,
                axes: axes.to_vec(),
                keep_dims,
            },
            &[x],
        )
    }
    /// `0, 1, 2, ...` along `axis` of a `dims`-shaped tensor of `dtype`.
    fn iota_along(
        &mut self,
        dtype: DType,
        dims: &[usize],
        axis: usize,
    ) -> Result<ValueId, Self::Error> {
        self.emit(
            Op::Iota {
                dtype,
                shape: Shape::from_static(dims),
                axis,
            },
            &[],
        )
    }
}

/// Why a node could not be added to a function.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EmitError(pub String);

/// [`Emit`] appending to the body of a [`Function`]; results are named `hint`, numbered.
pub struct FnEmitter<'a> {
    pub f: &'a mut Function,
    pub hint: String,
}

impl Emit for FnEmitter<'_> {
    type Error = EmitError;

    fn emit(&mut self, op: Op, inputs: &[ValueId]) -> Result<ValueId, EmitError> {
        let types: Vec<&TensorType> = inputs.iter().map(|&v| self.f.values.ty(v)).collect();
        let out = infer(&op, &types).map_err(|e| EmitError(format!("`{}`: {e}", op.name())))?;
        let names: Vec<&str> = out.iter().map(|_| self.hint.as_str()).collect();
        let vs = self.f.push(op, inputs.to_vec(), out, &names, vec![], None);
        Ok(vs[0])
    }

    fn emit_constant(&mut self, t: Tensor) -> ValueId {
        let ty = TensorType::from_static(t.dtype(), t.shape());
        self.f.push(
            Op::Constant { value: t },
            vec![],
            vec![ty],
            &[self.hint.as_str()],
            vec![],
            None,
        )[0]
    }

    fn type_of(&self, v: ValueId) -> &TensorType {
        self.f.values.ty(v)
    }

    fn fail(&self, message: String) -> EmitError {
        EmitError(message)
    }
}
