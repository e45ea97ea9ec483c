//! VJP rules of the contractions and windows: `dot_general`, `conv` and `reduce_window`.
//!
//! The gradients of a convolution are convolutions (as in XLA/JAX): for the input, the
//! adjoint convolved with the flipped kernel (channels swapped per group), with the forward
//! stride as input dilation and the forward input dilation as stride; for the kernel, the
//! input (batch and channels swapped) convolved with the adjoint, with the forward stride and
//! kernel dilation exchanged, one group at a time.

use terafab_ir::{BinaryOp, CompareOp, Op, ReduceKind, Shape, UnaryOp, ValueId};

use super::{AutodiffError, Contribs, Grad};

/// The extent of `n` elements spread `step` apart: `(n - 1) * step + 1`, 0 when empty.
fn dilated(n: usize, step: usize) -> i64 {
    if n == 0 {
        0
    } else {
        ((n - 1) * step + 1) as i64
    }
}

impl Grad {
    pub(super) fn linalg_vjp(
        &mut self,
        op: &Op,
        x: &[ValueId],
        y: ValueId,
        g: ValueId,
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        match op {
            Op::DotGeneral {
                lhs_batch,
                rhs_batch,
                lhs_contract,
                rhs_contract,
            } => {
                let (rl, rr) = (self.ty(x[0]).shape.rank(), self.ty(x[1]).shape.rank());
                let free = |rank: usize, batch: &[usize], contract: &[usize]| -> Vec<usize> {
                    (0..rank)
                        .filter(|d| !batch.contains(d) && !contract.contains(d))
                        .collect()
                };
                let lf = free(rl, lhs_batch, lhs_contract);
                let rf = free(rr, rhs_batch, rhs_contract);
                let nb = lhs_batch.len();
                let gb: Vec<usize> = (0..nb).collect();
                let g_lf: Vec<usize> = (nb..nb + lf.len()).collect();
                let g_rf: Vec<usize> = (nb + lf.len()..nb + lf.len() + rf.len()).collect();
                let mut out = vec![None, None];
                for side in 0..2 {
                    if !need[side] {
                        continue;
                    }
                    // Side 0: g · rhs over the rhs free dims; side 1: g · lhs over the lhs ones.
                    let (other, o_batch, o_free, o_contract, g_free, s_batch, s_free, s_contract) =
                        if side == 0 {
                            (
                                x[1],
                                rhs_batch,
                                &rf,
                                rhs_contract,
                                &g_rf,
                                lhs_batch,
                                &lf,
                                lhs_contract,
                            )
                        } else {
                            (
                                x[0],
                                lhs_batch,
                                &lf,
                                lhs_contract,
                                &g_lf,
                                rhs_batch,
                                &rf,
                                rhs_contract,
                            )
                        };
                    let d = self.op1(
                        Op::DotGeneral {
                            lhs_batch: gb.clone(),
                            rhs_batch: o_batch.clone(),
                            lhs_contract: g_free.clone(),
                            rhs_contract: o_free.clone(),
                        },
                        &[g, other],
                    )?;
                    // Result dims: batch, this side's free dims, then the other side's
                    // contracted dims in increasing order, each standing for its partner here.
                    let mut oc: Vec<(usize, usize)> = o_contract
                        .iter()
                        .enumerate()
                        .map(|(k, &d)| (d, k))
                        .collect();
                    oc.sort_unstable();
                    let src: Vec<usize> = s_batch
                        .iter()
                        .chain(s_free.iter())
                        .copied()
                        .chain(oc.iter().map(|&(_, k)| s_contract[k]))
                        .collect();
                    let rank = src.len();
                    let perm: Vec<usize> = (0..rank)
                        .map(|dim| src.iter().position(|&s| s == dim).unwrap_or(dim))
                        .collect();
                    out[side] = Some(self.transpose(d, perm)?);
                }
                Ok(out)
            }
            Op::Conv {
                stride,
                pad_low,
                lhs_dilation,
                rhs_dilation,
                groups,
                ..
            } => {
                let c = ConvAttrs {
                    stride,
                    pad_low,
                    lhs_dilation,
                    rhs_dilation,
                    groups: *groups,
                };
                self.conv_vjp(&c, x, g, need)
            }
            Op::ReduceWindow {
                kind,
                window,
                stride,
                dilation,
                pad_low,
                pad_high,
            } => {
                let w = Window {
                    window,
                    stride,
                    dilation,
                    pad_low,
                    pad_high,
                };
                let r = match kind {
                    ReduceKind::Sum => self.window_sum_vjp(&w, x[0], g)?,
                    ReduceKind::Max | ReduceKind::Min => {
                        self.window_select_vjp(&w, *kind, x[0], y, g)?
                    }
                    ReduceKind::Prod => {
                        return Err(self.not_diff("reduce_window_prod has no VJP rule here"));
                    }
                };
                Ok(vec![Some(r)])
            }
            _ => Err(self.build("not a contraction".into())),
        }
    }

    fn conv_vjp(
        &mut self,
        c: &ConvAttrs,
        x: &[ValueId],
        g: ValueId,
        need: &[bool],
    ) -> Result<Contribs, AutodiffError> {
        let (xt, wt) = (self.ty(x[0]), self.ty(x[1]));
        let xd = self.dims(x[0])?;
        let wd = self.dims(x[1])?;
        let gd = self.dims(g)?;
        let ns = xd.len() - 2;
        let grp = c.groups;
        let (ch, o) = (xd[1], wd[0]);
        let empty = xd.contains(&0) || gd.contains(&0) || wd.contains(&0);
        let mut out = vec![None, None];
        let sp = |i: usize| 2 + i;
        let spatial: Vec<usize> = (2..2 + ns).collect();
        if need[0] {
            out[0] = Some(if empty {
                self.splat(0.0, &xt)?
            } else {
                // The kernel as [C, O/G, k...] per group, flipped.
                let w = x[1];
                let w = if grp == 1 {
                    let perm: Vec<usize> = [1, 0].into_iter().chain(spatial.clone()).collect();
                    self.transpose(w, perm)?
                } else {
                    let mut d5 = vec![grp, o / grp, wd[1]];
                    d5.extend(&wd[2..]);
                    let w = self.reshape(w, Shape::from_static(&d5))?;
                    let perm: Vec<usize> = [0, 2, 1].into_iter().chain(3..3 + ns).collect();
                    let w = self.transpose(w, perm)?;
                    let mut d4 = vec![ch, o / grp];
                    d4.extend(&wd[2..]);
                    self.reshape(w, Shape::from_static(&d4))?
                };
                let w = if ns > 0 {
                    self.op1(
                        Op::Reverse {
                            axes: spatial.clone(),
                        },
                        &[w],
                    )?
                } else {
                    w
                };
                let mut pl = Vec::with_capacity(ns);
                let mut ph = Vec::with_capacity(ns);
                for i in 0..ns {
                    let kd = dilated(wd[sp(i)], c.rhs_dilation[i]);
                    let xdl = dilated(xd[sp(i)], c.lhs_dilation[i]);
                    let pd = dilated(gd[sp(i)], c.stride[i]);
                    let before = kd - 1 - c.pad_low[i];
                    pl.push(before);
                    ph.push(xdl + kd - 1 - pd - before);
                }
                self.op1(
                    Op::Conv {
                        stride: c.lhs_dilation.to_vec(),
                        pad_low: pl,
                        pad_high: ph,
                        lhs_dilation: c.stride.to_vec(),
                        rhs_dilation: c.rhs_dilation.to_vec(),
                        groups: grp,
                    },
                    &[g, w],
                )?
            });
        }
        if need[1] {
            out[1] = Some(if empty {
                self.splat(0.0, &wt)?
            } else {
                let mut ph = Vec::with_capacity(ns);
                for i in 0..ns {
                    let kd = dilated(wd[sp(i)], c.rhs_dilation[i]);
                    let xdl = dilated(xd[sp(i)], c.lhs_dilation[i]);
                    let pd = dilated(gd[sp(i)], c.stride[i]);
                    ph.push(kd - 1 + pd - xdl - c.pad_low[i]);
                }
                let swap: Vec<usize> = [1, 0].into_iter().chain(spatial.clone()).collect();
                let (cg, og) = (ch / grp, o / grp);
                let mut parts = Vec::with_capacity(grp);
                for k in 0..grp {
                    let take = |this: &mut Grad, v: ValueId, dims: &[usize], per: usize| {
                        if grp == 1 {
                            return Ok(v);
                        }
                        let mut start = vec![0; dims.len()];
                        let mut limit = dims.to_vec();
                        start[1] = k * per;
                        limit[1] = (k + 1) * per;
                        this.op1(
                            Op::Slice {
                                start,
                                limit,
                                stride: vec![1; dims.len()],
                            },
                            &[v],
                        )
                    };
                    let xk = take(self, x[0], &xd, cg)?;
                    let gk = take(self, g, &gd, og)?;
                    let xk = self.transpose(xk, swap.clone())?;
                    let gk = self.transpose(gk, swap.clone())?;
                    let d = self.op1(
                        Op::Conv {
                            stride: c.rhs_dilation.to_vec(),
                            pad_low: c.pad_low.to_vec(),
                            pad_high: ph.clone(),
                            lhs_dilation: c.lhs_dilation.to_vec(),
                            rhs_dilation: c.stride.to_vec(),
                            groups: 1,
                        },
                        &[xk, gk],
                    )?;
                    parts.push(self.transpose(d, swap.clone())?);
                }
                if parts.len() == 1 {
                    parts[0]
                } else {
                    self.op1(Op::Concat { axis: 0 }, &parts)?
                }
            });
        }
        Ok(out)
    }

    /// `reduce_window_sum`: the adjoint spread back over each window (a strided pad of the
    /// adjoint, summed over the window).
    fn window_sum_vjp(
        &mut self,
        w: &Window,
        x: ValueId,
        g: ValueId,
    ) -> Result<ValueId, AutodiffError> {
        let xt = self.ty(x);
        let xd = self.dims(x)?;
        let gd = self.dims(g)?;
        if xd.contains(&0) || gd.contains(&0) {
            return self.splat(0.0, &xt);
        }
        let r = xd.len();
        let mut low = Vec::with_capacity(r);
        let mut high = Vec::with_capacity(r);
        for i in 0..r {
            let kd = dilated(w.window[i], w.dilation[i]);
            let pd = dilated(gd[i], w.stride[i]);
            let before = kd - 1 - w.pad_low[i] as i64;
            low.push(before);
            high.push(xd[i] as i64 + kd - 1 - pd - before);
        }
        let zero = self.scalar(0.0, xt.dtype)?;
        let gp = self.op1(
            Op::Pad {
                low,
                high,
                interior: w.stride.iter().map(|&s| s - 1).collect(),
            },
            &[g, zero],
        )?;
        self.op1(
            Op::ReduceWindow {
                kind: ReduceKind::Sum,
                window: w.window.to_vec(),
                stride: vec![1; r],
                dilation: w.dilation.to_vec(),
                pad_low: vec![0; r],
                pad_high: vec![0; r],
            },
            &[gp],
        )
    }

    /// `reduce_window_max`/`min`: each window's adjoint goes to the first element equal to
    /// the window's result. One strided slice of the padded input per window position.
    fn window_select_vjp(
        &mut self,
        w: &Window,
        kind: ReduceKind,
        x: ValueId,
        y: ValueId,
        g: ValueId,
    ) -> Result<ValueId, AutodiffError> {
        let xt = self.ty(x);
        let xd = self.dims(x)?;
        let gd = self.dims(g)?;
        if xd.contains(&0) || gd.contains(&0) {
            return self.splat(0.0, &xt);
        }
        let r = xd.len();
        let ident = if kind == ReduceKind::Max {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
        let id = self.scalar(ident, xt.dtype)?;
        let pl: Vec<i64> = w.pad_low.iter().map(|&p| p as i64).collect();
        let ph: Vec<i64> = w.pad_high.iter().map(|&p| p as i64).collect();
        let padded = pl.iter().chain(&ph).any(|&p| p != 0);
        let xp = if padded {
            self.op1(
                Op::Pad {
                    low: pl.clone(),
                    high: ph,
                    interior: vec![0; r],
                },
                &[x, id],
            )?
        } else {
            x
        };
        let pdims = self.dims(xp)?;
        let zero = self.scalar(0.0, xt.dtype)?;
        let positions: usize = w.window.iter().product();
        let mut taken: Option<ValueId> = None;
        let mut acc: Option<ValueId> = None;
        for p in 0..positions {
            // The window offset of position p (row-major over the window dims).
            let mut k = vec![0; r];
            let mut rest = p;
            for i in (0..r).rev() {
                k[i] = rest % w.window[i];
                rest /= w.window[i];
            }
            let start: Vec<usize> = (0..r).map(|i| k[i] * w.dilation[i]).collect();
            let limit: Vec<usize> = (0..r)
                .map(|i| start[i] + (gd[i] - 1) * w.stride[i] + 1)
                .collect();
            let xk = self.op1(
                Op::Slice {
                    start: start.clone(),
                    limit: limit.clone(),
                    stride: w.stride.to_vec(),
                },
                &[xp],
            )?;
            let eq = self.cmp(CompareOp::Eq, xk, y)?;
            let win = match taken {
                None => eq,
                Some(t) => {
                    let nt = self.un(UnaryOp::Not, t)?;
                    self.bin(BinaryOp::And, eq, nt)?
                }
            };
            taken = Some(match taken {
                None => eq,
                Some(t) => self.bin(BinaryOp::Or, t, eq)?,
            });
            let part = self.select(win, g, zero)?;
            let back = self.op1(
                Op::Pad {
                    low: start.iter().map(|&s| s as i64).collect(),
                    high: (0..r).map(|i| pdims[i] as i64 - limit[i] as i64).collect(),
                    interior: w.stride.iter().map(|&s| s - 1).collect(),
                },
                &[part, zero],
            )?;
            acc = Some(match acc {
                None => back,
                Some(a) => self.bin(BinaryOp::Add, a, back)?,
            });
        }
        let acc = match acc {
            Some(a) => a,
            None => return self.splat(0.0, &xt),
        };
        if !padded {
            return Ok(acc);
        }
        let start: Vec<usize> = w.pad_low.to_vec();
        let limit: Vec<usize> = (0..r).map(|i| start[i] + xd[i]).collect();
        self.op1(
            Op::Slice {
                start,
                limit,
                stride: vec![1; r],
            },
            &[acc],
        )
    }
}

struct ConvAttrs<'a> {
    stride: &'a [usize],
    pad_low: &'a [i64],
    lhs_dilation: &'a [usize],
    rhs_dilation: &'a [usize],
    groups: usize,
}

struct Window<'a> {
    window: &'a [usize],
    stride: &'a [usize],
    dilation: &'a [usize],
    pad_low: &'a [usize],
    pad_high: &'a [usize],
}
