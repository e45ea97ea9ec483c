//! VJP rules of the reductions: `reduce_*` and the cumulative ops.

use terafab_ir::{BinaryOp, CompareOp, Dim, Op, ReduceKind, Shape, ValueId};

use super::{AutodiffError, Contribs, Grad};

impl Grad {
    pub(super) fn reduce_vjp(
        &mut self,
        op: &Op,
        x: ValueId,
        y: ValueId,
        g: ValueId,
    ) -> Result<Contribs, AutodiffError> {
        let xt = self.ty(x);
        match op {
            Op::Reduce {
                kind,
                axes,
                keep_dims,
            } => {
                if axes.is_empty() {
                    return Ok(vec![Some(g)]);
                }
                let gk = if *keep_dims {
                    g
                } else {
                    self.keep_dims(g, &xt, axes)?
                };
                let r = match kind {
                    ReduceKind::Sum => self.op1(
                        Op::Broadcast {
                            shape: xt.shape.clone(),
                        },
                        &[gk],
                    )?,
                    // The gradient is shared evenly by the elements equal to the result.
                    ReduceKind::Max | ReduceKind::Min => {
                        let yk = if *keep_dims {
                            y
                        } else {
                            self.keep_dims(y, &xt, axes)?
                        };
                        let eq = self.cmp(CompareOp::Eq, x, yk)?;
                        let mask = self.op1(Op::Convert { to: xt.dtype }, &[eq])?;
                        let cnt = self.op1(
                            Op::Reduce {
                                kind: ReduceKind::Sum,
                                axes: axes.clone(),
                                keep_dims: true,
                            },
                            &[mask],
                        )?;
                        let share = self.bin(BinaryOp::Div, gk, cnt)?;
                        self.mul(mask, share)?
                    }
                    // The product of the other elements, from exclusive running products in
                    // both directions (exact with zeros, unlike y / x).
                    ReduceKind::Prod => {
                        let others = self.prod_of_others(x, axes)?;
                        self.mul(others, gk)?
                    }
                };
                Ok(vec![Some(r)])
            }
            Op::Cumulative {
                kind,
                axis,
                exclusive,
                reverse,
            } => match kind {
                ReduceKind::Sum => Ok(vec![Some(self.op1(
                    Op::Cumulative {
                        kind: ReduceKind::Sum,
                        axis: *axis,
                        exclusive: *exclusive,
                        reverse: !*reverse,
                    },
                    &[g],
                )?)]),
                _ => Err(self.not_diff("only cumsum has a VJP rule here")),
            },
            _ => Err(self.build("not a reduction".into())),
        }
    }

    /// For each element of `x`, the product of the other elements of its reduction over `axes`.
    fn prod_of_others(&mut self, x: ValueId, axes: &[usize]) -> Result<ValueId, AutodiffError> {
        let xt = self.ty(x);
        let rank = xt.shape.rank();
        let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
        let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
        let xp = self.transpose(x, perm.clone())?;
        let mut k = 1usize;
        for &a in axes {
            let d = xt.shape.0[a]
                .as_static()
                .ok_or_else(|| self.build(format!("needs reduced dim {a} static")))?;
            k *= d;
        }
        let mut flat: Vec<Dim> = kept.iter().map(|&a| xt.shape.0[a].clone()).collect();
        flat.push(Dim::Static(k));
        let last = flat.len() - 1;
        let xf = self.reshape(xp, Shape(flat))?;
        let run = |this: &mut Grad, reverse: bool| {
            this.op1(
                Op::Cumulative {
                    kind: ReduceKind::Prod,
                    axis: last,
                    exclusive: true,
                    reverse,
                },
                &[xf],
            )
        };
        let before = run(self, false)?;
        let after = run(self, true)?;
        let o = self.mul(before, after)?;
        let pshape = self.ty(xp).shape;
        let o = self.reshape(o, pshape)?;
        let mut inv = vec![0; rank];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        self.transpose(o, inv)
    }
}
