//! VJP rules of the data movement ops: broadcast, reshape, transpose, slice, reverse, concat,
//! pad, gather and scatter.

use terafab_ir::{CompareOp, DType, Dim, Op, ScatterMode, Shape, TensorType, ValueId};

use super::{AutodiffError, Contribs, Grad};

impl Grad {
    pub(super) fn movement_vjp(
        &mut self,
        op: &Op,
        x: &[ValueId],
        g: ValueId,
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        let xt = self.ty(x[0]);
        match op {
            Op::Broadcast { .. } => Ok(vec![Some(self.unbroadcast(g, &xt)?)]),
            Op::Reshape { .. } => Ok(vec![Some(self.reshape(g, xt.shape.clone())?)]),
            Op::Transpose { perm } => {
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                Ok(vec![Some(self.transpose(g, inv)?)])
            }
            Op::Reverse { axes } => Ok(vec![Some(
                self.op1(Op::Reverse { axes: axes.clone() }, &[g])?,
            )]),
            Op::Slice {
                start,
                limit: _,
                stride,
            } => {
                let dims = self.dims(x[0])?;
                let out = self.dims(g)?;
                if out.contains(&0) {
                    return Ok(vec![Some(self.splat(0.0, &xt)?)]);
                }
                let mut high = Vec::with_capacity(dims.len());
                for d in 0..dims.len() {
                    let last = start[d] + (out[d] - 1) * stride[d];
                    high.push(dims[d] as i64 - last as i64 - 1);
                }
                let zero = self.scalar(0.0, xt.dtype)?;
                Ok(vec![Some(self.op1(
                    Op::Pad {
                        low: start.iter().map(|&s| s as i64).collect(),
                        high,
                        interior: stride.iter().map(|&s| s - 1).collect(),
                    },
                    &[g, zero],
                )?)])
            }
            Op::Concat { axis } => {
                let gd = self.dims(g)?;
                let mut off = 0;
                let mut out = Vec::with_capacity(x.len());
                for (i, &v) in x.iter().enumerate() {
                    let n = self.dims(v)?[*axis];
                    if need[i] {
                        let mut start = vec![0; gd.len()];
                        let mut limit = gd.clone();
                        start[*axis] = off;
                        limit[*axis] = off + n;
                        out.push(Some(self.op1(
                            Op::Slice {
                                start,
                                limit,
                                stride: vec![1; gd.len()],
                            },
                            &[g],
                        )?));
                    } else {
                        out.push(None);
                    }
                    off += n;
                }
                Ok(out)
            }
            Op::Pad {
                low,
                high,
                interior,
            } => self.pad_vjp(x, &xt, g, low, high, interior, need),
            Op::Gather { axis } => {
                let gx = self.gather_vjp(x[0], x[1], g, *axis)?;
                Ok(vec![Some(gx), None])
            }
            Op::Scatter { mode } => self.scatter_vjp(*mode, x, g, need),
            _ => Err(self.build("not a movement op".into())),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pad_vjp(
        &mut self,
        x: &[ValueId],
        xt: &TensorType,
        g: ValueId,
        low: &[i64],
        high: &[i64],
        interior: &[usize],
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        let dims = self.dims(x[0])?;
        let zero = self.scalar(0.0, xt.dtype)?;
        let gx = if need[0] {
            if dims.contains(&0) {
                Some(self.splat(0.0, xt)?)
            } else {
                // Undo the cropping (cropped elements get no gradient), then take every
                // (interior + 1)-th element from the first one of `x`.
                let crop_lo: Vec<i64> = low.iter().map(|&l| (-l).max(0)).collect();
                let crop_hi: Vec<i64> = high.iter().map(|&h| (-h).max(0)).collect();
                let full = if crop_lo.iter().chain(&crop_hi).any(|&c| c > 0) {
                    self.op1(
                        Op::Pad {
                            low: crop_lo,
                            high: crop_hi,
                            interior: vec![0; dims.len()],
                        },
                        &[g, zero],
                    )?
                } else {
                    g
                };
                let start: Vec<usize> = low.iter().map(|&l| l.max(0) as usize).collect();
                let stride: Vec<usize> = interior.iter().map(|&i| i + 1).collect();
                let limit: Vec<usize> = (0..dims.len())
                    .map(|d| start[d] + (dims[d] - 1) * stride[d] + 1)
                    .collect();
                Some(self.op1(
                    Op::Slice {
                        start,
                        limit,
                        stride,
                    },
                    &[full],
                )?)
            }
        } else {
            None
        };
        // The padding value: the sum of the gradient over the padded positions.
        let gv = if need[1] {
            let zeros = self.splat(0.0, xt)?;
            let one = self.scalar(1.0, xt.dtype)?;
            let mask = self.op1(
                Op::Pad {
                    low: low.to_vec(),
                    high: high.to_vec(),
                    interior: interior.to_vec(),
                },
                &[zeros, one],
            )?;
            let m = self.mul(g, mask)?;
            let rank = self.ty(m).shape.rank();
            Some(self.op1(
                Op::Reduce {
                    kind: terafab_ir::ReduceKind::Sum,
                    axes: (0..rank).collect(),
                    keep_dims: false,
                },
                &[m],
            )?)
        } else {
            None
        };
        Ok(vec![gx, gv])
    }

    /// Scatter-add `g` back into zeros of `x`'s shape at the gathered rows.
    fn gather_vjp(
        &mut self,
        x: ValueId,
        idx: ValueId,
        g: ValueId,
        axis: usize,
    ) -> Result<ValueId, AutodiffError> {
        let xt = self.ty(x);
        let xd = self.dims(x)?;
        let id = self.dims(idx)?;
        let (pre, q) = (axis, id.len());
        let post = xd.len() - axis - 1;
        let m: usize = id.iter().product();
        // g: [pre, I, post] -> [I, pre, post] -> [M, pre, post]
        let perm: Vec<usize> = (pre..pre + q)
            .chain(0..pre)
            .chain(pre + q..pre + q + post)
            .collect();
        let gt = self.transpose(g, perm)?;
        let mut flat = vec![m];
        flat.extend(&xd[..axis]);
        flat.extend(&xd[axis + 1..]);
        let gt = self.reshape(gt, Shape::from_static(&flat))?;
        let idx = self.reshape(idx, Shape::from_static(&[m]))?;
        let mut zdims = vec![xd[axis]];
        zdims.extend(&xd[..axis]);
        zdims.extend(&xd[axis + 1..]);
        let z = self.splat(0.0, &TensorType::from_static(xt.dtype, &zdims))?;
        let s = self.op1(
            Op::Scatter {
                mode: ScatterMode::Add,
            },
            &[z, idx, gt],
        )?;
        // [A, pre, post] -> [pre, A, post]
        let back: Vec<usize> = (1..=pre)
            .chain([0])
            .chain(pre + 1..pre + 1 + post)
            .collect();
        self.transpose(s, back)
    }

    fn scatter_vjp(
        &mut self,
        mode: ScatterMode,
        x: &[ValueId],
        g: ValueId,
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        let (idx, upd) = (x[1], x[2]);
        let gather0 = |this: &mut Grad| this.op1(Op::Gather { axis: 0 }, &[g, idx]);
        match mode {
            ScatterMode::Add => {
                let gu = if need[2] { Some(gather0(self)?) } else { None };
                Ok(vec![Some(g), None, gu])
            }
            ScatterMode::Replace => {
                let ut = self.ty(upd);
                let gx = if need[0] {
                    let z = self.splat(0.0, &ut)?;
                    Some(self.op1(
                        Op::Scatter {
                            mode: ScatterMode::Replace,
                        },
                        &[g, idx, z],
                    )?)
                } else {
                    None
                };
                let gu = if need[2] {
                    // An update gets the gradient of its row only if no later update
                    // overwrote it: scatter the update numbers, gather them back, compare.
                    let m = ut.shape.0[0].clone();
                    let n = self.ty(x[0]).shape.0[0].clone();
                    let ids = self.op1(
                        Op::Iota {
                            dtype: DType::I64,
                            shape: Shape(vec![m.clone()]),
                            axis: 0,
                        },
                        &[],
                    )?;
                    let none = self.splat(-1.0, &TensorType::new(DType::I64, Shape(vec![n])))?;
                    let last = self.op1(
                        Op::Scatter {
                            mode: ScatterMode::Replace,
                        },
                        &[none, idx, ids],
                    )?;
                    let back = self.op1(Op::Gather { axis: 0 }, &[last, idx])?;
                    let win = self.cmp(CompareOp::Eq, back, ids)?;
                    let mut wd = vec![m];
                    wd.extend(std::iter::repeat_n(Dim::Static(1), ut.shape.rank() - 1));
                    let win = self.reshape(win, Shape(wd))?;
                    let rows = gather0(self)?;
                    let zero = self.scalar(0.0, ut.dtype)?;
                    Some(self.select(win, rows, zero)?)
                } else {
                    None
                };
                Ok(vec![gx, None, gu])
            }
            ScatterMode::Mul | ScatterMode::Max | ScatterMode::Min => Err(self.not_diff(
                "scatter modes mul, max and min have no VJP rule here; only replace and add",
            )),
        }
    }
}

impl Grad {
    /// `sort`: the adjoint of the sorted values goes back to the positions they came from,
    /// `gx[.., idx[.., j], ..] = g[.., j, ..]` along `axis`, as one flat scatter-add.
    pub(super) fn sort_vjp(
        &mut self,
        x: ValueId,
        idx: ValueId,
        g: ValueId,
        axis: usize,
    ) -> Result<ValueId, AutodiffError> {
        let xt = self.ty(x);
        let d = self.dims(x)?;
        if d.contains(&0) {
            return self.splat(0.0, &xt);
        }
        let r = d.len();
        let perm: Vec<usize> = (0..r).filter(|&a| a != axis).chain([axis]).collect();
        let k = d[axis];
        let n: usize = d.iter().product();
        let b = n / k;
        let gt = self.transpose(g, perm.clone())?;
        let moved = self.ty(gt).shape;
        let gflat = self.reshape(gt, Shape::from_static(&[n]))?;
        let it = self.transpose(idx, perm.clone())?;
        let it = self.reshape(it, Shape::from_static(&[b, k]))?;
        let rows = self.op1(
            Op::Iota {
                dtype: DType::I64,
                shape: Shape::from_static(&[b, k]),
                axis: 0,
            },
            &[],
        )?;
        let kk = self.scalar(k as f64, DType::I64)?;
        let base = self.mul(rows, kk)?;
        let lin = self.bin(terafab_ir::BinaryOp::Add, base, it)?;
        let lin = self.reshape(lin, Shape::from_static(&[n]))?;
        let z = self.splat(0.0, &TensorType::from_static(xt.dtype, &[n]))?;
        let s = self.op1(
            Op::Scatter {
                mode: ScatterMode::Add,
            },
            &[z, lin, gflat],
        )?;
        let s = self.reshape(s, moved)?;
        let mut inv = vec![0; r];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        self.transpose(s, inv)
    }
}
