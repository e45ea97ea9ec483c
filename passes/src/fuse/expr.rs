//! Building one loop-nest kernel: the scalar expression of a value at an index.

use std::collections::{BTreeSet, HashMap, HashSet};

use terafab_ir::kernel::{
    Body, BufferId, Expr, Index, Kernel, KernelKind, Local, LoopNest, Stage, Var,
};
use terafab_ir::{
    BinaryOp, CompareOp, DType, Element, Op, ReduceKind, Tensor, ValueId, with_dtype,
};

use super::{Family, Graph, family};

/// Why a kernel could not be built.
pub(crate) enum Build {
    /// This reduction must be materialized first.
    Materialize(ValueId),
    /// A lowering error.
    Fail(String),
}

type R<T> = Result<T, Build>;

pub(crate) struct KernelBuilder<'g, 'f> {
    g: &'g Graph<'f>,
    buffer_of: &'g HashMap<ValueId, BufferId>,
    /// Extents of every variable (outer ones first).
    extents: Vec<usize>,
    outer: usize,
    stages: Vec<Stage>,
    /// Reduction stages made so far: value, index, local.
    made: Vec<(ValueId, Vec<Index>, Local)>,
    inputs: BTreeSet<BufferId>,
    sources: Vec<String>,
    seen_sources: HashSet<ValueId>,
    kind: KernelKind,
    ops: usize,
    /// The value the kernel stores (computed here even though it is materialized).
    root: Option<ValueId>,
}

impl<'g, 'f> KernelBuilder<'g, 'f> {
    pub fn new(g: &'g Graph<'f>, buffer_of: &'g HashMap<ValueId, BufferId>) -> Self {
        KernelBuilder {
            g,
            buffer_of,
            extents: Vec::new(),
            outer: 0,
            stages: Vec::new(),
            made: Vec::new(),
            inputs: BTreeSet::new(),
            sources: Vec::new(),
            seen_sources: HashSet::new(),
            kind: KernelKind::Movement,
            ops: 0,
            root: None,
        }
    }

    fn new_var(&mut self, extent: usize) -> Var {
        self.extents.push(extent);
        Var(self.extents.len() as u32 - 1)
    }

    /// The kernel computing materialized value `root`.
    pub fn build(mut self, name: String, root: ValueId) -> R<Kernel> {
        let shape = self.g.shape(root).to_vec();
        self.root = Some(root);
        // Rows: the axes of a fusable reduction over `root`'s own shape.
        let inner_axes = self.row_axes(root, &shape);
        let outer_dims: Vec<usize> = (0..shape.len())
            .filter(|d| !inner_axes.contains(d))
            .collect();
        let mut index = vec![Index::Const(0); shape.len()];
        for &d in &outer_dims {
            let v = self.new_var(shape[d]);
            index[d] = Index::Var(v);
        }
        self.outer = outer_dims.len();
        let mut inner_vars = Vec::new();
        for &d in &inner_axes {
            let v = self.new_var(shape[d]);
            index[d] = Index::Var(v);
            inner_vars.push((v, shape[d]));
        }
        let value = self.expr(root, &index, false)?;
        let buffer = self.buffer_of[&root];
        self.stages.push(Stage::Store {
            buffer,
            vars: inner_vars,
            index,
            value,
        });
        if self.kind == KernelKind::Movement && self.ops > 0 {
            self.kind = KernelKind::Elementwise;
        }
        let space = self.extents[..self.outer].to_vec();
        Ok(Kernel {
            name,
            kind: self.kind,
            inputs: self.inputs.into_iter().collect(),
            outputs: vec![buffer],
            body: Body::Loops(LoopNest {
                space,
                stages: self.stages,
            }),
            sources: self.sources,
        })
    }

    /// The reduced axes of the first non-materialized `reduce` reachable from `root` through
    /// inlined values whose input has `root`'s shape (softmax, layer-norm): the kernel then
    /// runs over rows. Empty when there is none.
    fn row_axes(&self, root: ValueId, shape: &[usize]) -> Vec<usize> {
        let g = self.g;
        // A reduction root runs over its own result.
        if g.node_of(root)
            .is_some_and(|n| family(n) == Family::Reduction)
        {
            return Vec::new();
        }
        let mut stack = vec![root];
        let mut seen = HashSet::new();
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            let Some(n) = g.node_of(v) else { continue };
            if v != root && g.materialized.contains(&v) {
                continue;
            }
            if family(n) == Family::Call {
                continue;
            }
            if let Op::Reduce { axes, .. } = &n.op
                && !axes.is_empty()
                && g.shape(n.inputs[0]) == shape
                && (v != root)
            {
                let mut a = axes.clone();
                a.sort_unstable();
                return a;
            }
            stack.extend(n.inputs.iter().copied());
        }
        Vec::new()
    }

    fn note_source(&mut self, v: ValueId) {
        if self.seen_sources.insert(v)
            && let Some(name) = self.g.node_of(v).and_then(|n| n.name.clone())
            && !self.sources.contains(&name)
        {
            self.sources.push(name);
        }
    }

    fn load(&mut self, v: ValueId, index: &[Index], guard: bool) -> R<Expr> {
        let b = *self.buffer_of.get(&v).ok_or_else(|| {
            Build::Fail(format!(
                "%{} is materialized but has no buffer",
                self.g.f.values.name(v)
            ))
        })?;
        self.inputs.insert(b);
        let dtype = self.g.f.values.ty(v).dtype;
        Ok(Expr::Load {
            buffer: b,
            index: index.to_vec(),
            fill: guard.then(|| zero(dtype)),
        })
    }

    /// The scalar expression of `v` at `index`. Under `guard`, the index may be out of bounds
    /// (the caller discards those lanes): loads then carry a fill value.
    pub fn expr(&mut self, v: ValueId, index: &[Index], guard: bool) -> R<Expr> {
        let g = self.g;
        if let Some(s) = g.splats.get(&v) {
            return Ok(Expr::Const(s.clone()));
        }
        if g.materialized.contains(&v) && self.root != Some(v) {
            return self.load(v, index, guard);
        }
        let Some(n) = g.node_of(v) else {
            return self.load(v, index, guard);
        };
        self.note_source(v);
        let out_shape = g.shape(v).to_vec();
        let operand = |i: usize| n.inputs[i];
        match &n.op {
            Op::Unary(op) => {
                self.ops += 1;
                let a = self.expr(operand(0), index, guard)?;
                Ok(Expr::unary(*op, a))
            }
            Op::Convert { to } => {
                self.ops += 1;
                let a = self.expr(operand(0), index, guard)?;
                Ok(Expr::Convert(*to, Box::new(a)))
            }
            Op::Binary(_) | Op::Compare(_) | Op::Select => {
                self.ops += 1;
                let mut args = Vec::new();
                for &x in &n.inputs {
                    let idx = broadcast_index(g.shape(x), &out_shape, index);
                    args.push(self.expr(x, &idx, guard)?);
                }
                let mut it = args.into_iter();
                let (a, b) = (it.next(), it.next());
                let (Some(a), Some(b)) = (a, b) else {
                    return Err(Build::Fail("malformed elementwise node".into()));
                };
                Ok(match &n.op {
                    Op::Binary(op) => Expr::binary(*op, a, b),
                    Op::Compare(op) => Expr::compare(*op, a, b),
                    _ => {
                        let c = it
                            .next()
                            .ok_or_else(|| Build::Fail("select needs three operands".into()))?;
                        Expr::select(a, b, c)
                    }
                })
            }
            Op::Iota { dtype, axis, .. } => Ok(Expr::Index(index[*axis].clone(), *dtype)),
            Op::Broadcast { .. } => {
                let x = operand(0);
                let idx = broadcast_index(g.shape(x), &out_shape, index);
                self.expr(x, &idx, guard)
            }
            Op::Reshape { .. } => {
                let x = operand(0);
                let idx = reshape_index(g.shape(x), &out_shape, index);
                self.expr(x, &idx, guard)
            }
            Op::Transpose { perm } => {
                let mut idx = vec![Index::Const(0); perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    idx[p] = index[i].clone();
                }
                self.expr(operand(0), &idx, guard)
            }
            Op::Slice { start, stride, .. } => {
                let idx: Vec<Index> = index
                    .iter()
                    .enumerate()
                    .map(|(d, i)| i.clone().times(stride[d] as i64).offset(start[d] as i64))
                    .collect();
                self.expr(operand(0), &idx, guard)
            }
            Op::Reverse { axes } => {
                let in_shape = g.shape(operand(0)).to_vec();
                let idx: Vec<Index> = index
                    .iter()
                    .enumerate()
                    .map(|(d, i)| {
                        if axes.contains(&d) {
                            i.clone().times(-1).offset(in_shape[d] as i64 - 1)
                        } else {
                            i.clone()
                        }
                    })
                    .collect();
                self.expr(operand(0), &idx, guard)
            }
            Op::Pad {
                low,
                high: _,
                interior,
            } => self.pad(operand(0), operand(1), low, interior, index, guard),
            Op::Concat { axis } => self.concat(&n.inputs, *axis, index, guard),
            Op::Constant { value } => {
                // A non-splat constant is materialized; this is only reached for scalars.
                Ok(Expr::Const(
                    value
                        .reshaped(vec![])
                        .map_err(|e| Build::Fail(e.to_string()))?,
                ))
            }
            Op::Reduce { .. }
            | Op::DotGeneral { .. }
            | Op::Conv { .. }
            | Op::ReduceWindow { .. } => self.reduction(v, index, guard),
            _ => self.load(v, index, guard),
        }
    }

    /// A reduction value at `index`: the local of a reduction stage computing it.
    fn reduction(&mut self, v: ValueId, index: &[Index], guard: bool) -> R<Expr> {
        let g = self.g;
        let mut used = Vec::new();
        for i in index {
            i.vars(&mut used);
        }
        let outer_only = used.iter().all(|v| (v.0 as usize) < self.outer);
        let outer_points: usize = self.extents[..self.outer].iter().product();
        let own_points: usize = g.shape(v).iter().product();
        if guard || !outer_only || outer_points > own_points.max(1) {
            return Err(Build::Materialize(v));
        }
        if let Some((_, _, l)) = self.made.iter().find(|(w, i, _)| *w == v && i == index) {
            return Ok(Expr::Local(*l));
        }
        let n = g
            .node_of(v)
            .ok_or_else(|| Build::Fail("reduction without a node".into()))?;
        let (kind, vars, body) = match &n.op {
            Op::Reduce {
                kind,
                axes,
                keep_dims,
            } => {
                if self.kind == KernelKind::Movement || self.kind == KernelKind::Elementwise {
                    self.kind = KernelKind::Reduction;
                }
                let x = n.inputs[0];
                let in_shape = g.shape(x).to_vec();
                let mut vars = Vec::new();
                let mut idx = Vec::new();
                let mut k = 0;
                for (d, &ext) in in_shape.iter().enumerate() {
                    if axes.contains(&d) {
                        idx.push(self.stage_index(ext, &mut vars));
                        if *keep_dims {
                            k += 1;
                        }
                    } else {
                        idx.push(index[k].clone());
                        k += 1;
                    }
                }
                let body = self.expr(x, &idx, false)?;
                (*kind, vars, body)
            }
            Op::DotGeneral {
                lhs_batch,
                rhs_batch,
                lhs_contract,
                rhs_contract,
            } => {
                self.kind = KernelKind::Matmul;
                let (l, r) = (n.inputs[0], n.inputs[1]);
                let (ls, rs) = (g.shape(l).to_vec(), g.shape(r).to_vec());
                let nb = lhs_batch.len();
                let mut vars = Vec::new();
                let mut li = vec![Index::Const(0); ls.len()];
                let mut ri = vec![Index::Const(0); rs.len()];
                for (j, (&a, &b)) in lhs_batch.iter().zip(rhs_batch).enumerate() {
                    li[a] = index[j].clone();
                    ri[b] = index[j].clone();
                }
                for (&a, &b) in lhs_contract.iter().zip(rhs_contract) {
                    let i = self.stage_index(ls[a], &mut vars);
                    li[a] = i.clone();
                    ri[b] = i;
                }
                let mut k = nb;
                for (d, slot) in li.iter_mut().enumerate() {
                    if !lhs_batch.contains(&d) && !lhs_contract.contains(&d) {
                        *slot = index[k].clone();
                        k += 1;
                    }
                }
                for (d, slot) in ri.iter_mut().enumerate() {
                    if !rhs_batch.contains(&d) && !rhs_contract.contains(&d) {
                        *slot = index[k].clone();
                        k += 1;
                    }
                }
                let a = self.expr(l, &li, false)?;
                let b = self.expr(r, &ri, false)?;
                self.ops += 1;
                let dtype = g.f.values.ty(v).dtype;
                let prod = if dtype == DType::Bool {
                    Expr::binary(BinaryOp::And, a, b)
                } else {
                    product(a, b, dtype)
                };
                (ReduceKind::Sum, vars, prod)
            }
            Op::Conv {
                stride,
                pad_low,
                rhs_dilation,
                groups,
                ..
            } => {
                self.kind = KernelKind::Conv;
                let (x, w) = (n.inputs[0], n.inputs[1]);
                let (xs, ws) = (g.shape(x).to_vec(), g.shape(w).to_vec());
                let out_ch = ws[0];
                let cg = ws[1];
                let og = out_ch / (*groups).max(1);
                let mut vars = Vec::new();
                let ci = self.stage_index(cg, &mut vars);
                // Input channel: group (output channel / group size) * channels per group + ci.
                let channel = if *groups == 1 {
                    ci.clone()
                } else {
                    index[1]
                        .clone()
                        .floor_div(og.max(1) as i64)
                        .times(cg as i64)
                        .plus(ci.clone())
                };
                let mut xi = vec![index[0].clone(), channel];
                let mut wi = vec![index[1].clone(), ci];
                for d in 0..xs.len() - 2 {
                    let kv = self.stage_index(ws[2 + d], &mut vars);
                    wi.push(kv.clone());
                    xi.push(
                        index[2 + d]
                            .clone()
                            .times(stride[d] as i64)
                            .plus(kv.times(rhs_dilation[d] as i64))
                            .offset(-pad_low[d]),
                    );
                }
                let dtype = g.f.values.ty(x).dtype;
                let xv = self.guarded(x, &xi, &xs, zero(dtype))?;
                let wv = self.expr(w, &wi, false)?;
                self.ops += 1;
                (ReduceKind::Sum, vars, product(xv, wv, dtype))
            }
            Op::ReduceWindow {
                kind,
                window,
                stride,
                dilation,
                pad_low,
                ..
            } => {
                if self.kind != KernelKind::Matmul && self.kind != KernelKind::Conv {
                    self.kind = KernelKind::Pool;
                }
                let x = n.inputs[0];
                let xs = g.shape(x).to_vec();
                let mut vars = Vec::new();
                let mut xi = Vec::new();
                for d in 0..xs.len() {
                    let base = index[d]
                        .clone()
                        .times(stride[d] as i64)
                        .offset(-(pad_low[d] as i64));
                    if window[d] == 1 {
                        xi.push(base);
                    } else {
                        let wv = self.stage_index(window[d], &mut vars);
                        xi.push(base.plus(wv.times(dilation[d] as i64)));
                    }
                }
                let dtype = g.f.values.ty(x).dtype;
                let xv = self.guarded(x, &xi, &xs, identity(*kind, dtype))?;
                (*kind, vars, xv)
            }
            _ => return Err(Build::Fail("not a reduction".into())),
        };
        let local = Local(self.made.len() as u32);
        self.made.push((v, index.to_vec(), local));
        self.stages.push(Stage::Reduce {
            local,
            kind,
            vars,
            body,
        });
        // Contractions of narrow floats accumulate in f32 (see `product`).
        let dtype = g.f.values.ty(v).dtype;
        if matches!(n.op, Op::DotGeneral { .. } | Op::Conv { .. }) && widened(dtype) {
            return Ok(Expr::Convert(dtype, Box::new(Expr::Local(local))));
        }
        Ok(Expr::Local(local))
    }

    /// The index of a reduction dim of extent `ext`: a new stage variable, or 0 for a unit
    /// dim (no loop).
    fn stage_index(&mut self, ext: usize, vars: &mut Vec<(Var, usize)>) -> Index {
        if ext == 1 {
            return Index::Const(0);
        }
        let v = self.new_var(ext);
        vars.push((v, ext));
        Index::Var(v)
    }

    fn extent_of(&self, v: Var) -> Option<usize> {
        self.extents.get(v.0 as usize).copied()
    }

    /// Whether `index` may leave `shape` over the loops.
    fn may_leave(&self, index: &[Index], shape: &[usize]) -> bool {
        index
            .iter()
            .zip(shape)
            .any(|(i, &n)| match i.interval(&|v| self.extent_of(v)) {
                Some((lo, hi)) => lo < 0 || hi >= n as i64,
                None => true,
            })
    }

    /// `x` at `index`, or `fill` where `index` is out of `shape`.
    fn guarded(&mut self, x: ValueId, index: &[Index], shape: &[usize], fill: Tensor) -> R<Expr> {
        if !self.may_leave(index, shape) {
            return self.expr(x, index, false);
        }
        let inner = self.expr(x, index, true)?;
        if let Expr::Load { buffer, index, .. } = inner {
            return Ok(Expr::Load {
                buffer,
                index,
                fill: Some(fill),
            });
        }
        if let Some(e) = fill_through_converts(&inner, &fill) {
            return Ok(e);
        }
        let cond = self.in_bounds(index, shape);
        Ok(Expr::select(cond, inner, Expr::Const(fill)))
    }

    /// A bool expression: every index within its dim.
    fn in_bounds(&self, index: &[Index], shape: &[usize]) -> Expr {
        let mut cond: Option<Expr> = None;
        let mut and = |c: Expr| {
            cond = Some(match cond.take() {
                Some(a) => Expr::binary(BinaryOp::And, a, c),
                None => c,
            })
        };
        for (i, &n) in index.iter().zip(shape) {
            let (lo, hi) = i.interval(&|v| self.extent_of(v)).unwrap_or((-1, n as i64));
            let val = Expr::Index(i.clone(), DType::I64);
            if lo < 0 {
                and(Expr::compare(
                    CompareOp::Ge,
                    val.clone(),
                    Expr::Const(Tensor::scalar(0i64)),
                ));
            }
            if hi >= n as i64 {
                and(Expr::compare(
                    CompareOp::Lt,
                    val,
                    Expr::Const(Tensor::scalar(n as i64)),
                ));
            }
        }
        cond.unwrap_or_else(|| Expr::Const(Tensor::scalar(true)))
    }

    fn pad(
        &mut self,
        x: ValueId,
        value: ValueId,
        low: &[i64],
        interior: &[usize],
        index: &[Index],
        guard: bool,
    ) -> R<Expr> {
        let xs = self.g.shape(x).to_vec();
        let mut idx = Vec::new();
        let mut extra: Option<Expr> = None;
        for (d, i) in index.iter().enumerate() {
            let shifted = i.clone().offset(-low[d]);
            if interior[d] == 0 {
                idx.push(shifted);
            } else {
                let step = interior[d] as i64 + 1;
                let on_grid = Expr::compare(
                    CompareOp::Eq,
                    Expr::Index(shifted.clone().modulo(step), DType::I64),
                    Expr::Const(Tensor::scalar(0i64)),
                );
                extra = Some(match extra.take() {
                    Some(a) => Expr::binary(BinaryOp::And, a, on_grid),
                    None => on_grid,
                });
                idx.push(shifted.floor_div(step));
            }
        }
        self.ops += 1;
        let pad_value = self.expr(value, &[], guard)?;
        if extra.is_none() && !self.may_leave(&idx, &xs) {
            return self.expr(x, &idx, guard);
        }
        let inner = self.expr(x, &idx, true)?;
        let mut cond = self.in_bounds(&idx, &xs);
        if let Some(e) = extra {
            cond = Expr::binary(BinaryOp::And, cond, e);
        }
        Ok(Expr::select(cond, inner, pad_value))
    }

    fn concat(&mut self, xs: &[ValueId], axis: usize, index: &[Index], guard: bool) -> R<Expr> {
        self.ops += 1;
        let mut offsets = Vec::new();
        let mut off = 0i64;
        for &x in xs {
            offsets.push(off);
            off += self.g.shape(x)[axis] as i64;
        }
        // The last operand is the default; earlier ones are selected by `index < their end`.
        let mut parts = Vec::new();
        for (k, &x) in xs.iter().enumerate() {
            let mut idx = index.to_vec();
            idx[axis] = idx[axis].clone().offset(-offsets[k]);
            let shape = self.g.shape(x).to_vec();
            let may = guard || self.may_leave(&idx, &shape);
            parts.push(self.expr(x, &idx, may)?);
        }
        let mut acc = parts
            .pop()
            .ok_or_else(|| Build::Fail("empty concat".into()))?;
        while let Some(p) = parts.pop() {
            let k = parts.len();
            let end = offsets[k] + self.g.shape(xs[k])[axis] as i64;
            let cond = Expr::compare(
                CompareOp::Lt,
                Expr::Index(index[axis].clone(), DType::I64),
                Expr::Const(Tensor::scalar(end)),
            );
            acc = Expr::select(cond, p, acc);
        }
        Ok(acc)
    }
}

/// Whether contractions of `dtype` accumulate in f32: the floats narrower than f32 (as
/// matrix units do: bf16/f16/fp8 products are exact in f32).
fn widened(dtype: DType) -> bool {
    dtype.is_float() && dtype.size_bytes() < 4
}

/// The product term of a contraction: `a * b`, in f32 for narrow floats (exact there, and
/// summed in f32 instead of rounding every product to the narrow type).
fn product(a: Expr, b: Expr, dtype: DType) -> Expr {
    if widened(dtype) {
        let w = |e: Expr| Expr::Convert(DType::F32, Box::new(e));
        Expr::binary(BinaryOp::Mul, w(a), w(b))
    } else {
        Expr::binary(BinaryOp::Mul, a, b)
    }
}

/// The index into an operand of shape `from` broadcast (numpy) to `to` at `index`.
pub(crate) fn broadcast_index(from: &[usize], to: &[usize], index: &[Index]) -> Vec<Index> {
    let r = to.len() - from.len().min(to.len());
    from.iter()
        .enumerate()
        .map(|(d, &n)| {
            if n == 1 && to[r + d] != 1 {
                Index::Const(0)
            } else {
                index[r + d].clone()
            }
        })
        .collect()
}

/// The index into an operand of shape `from` reshaped to `to` at `index`: dims are matched in
/// groups of equal element count; a one-to-one group maps directly, others linearize and split.
pub(crate) fn reshape_index(from: &[usize], to: &[usize], index: &[Index]) -> Vec<Index> {
    let mut out = vec![Index::Const(0); from.len()];
    if from.contains(&0) || to.contains(&0) {
        return out;
    }
    let f: Vec<usize> = (0..from.len()).filter(|&d| from[d] != 1).collect();
    let t: Vec<usize> = (0..to.len()).filter(|&d| to[d] != 1).collect();
    let (mut i, mut j) = (0, 0);
    while i < f.len() && j < t.len() {
        let (gi, gj) = (i, j);
        let (mut pf, mut pt) = (from[f[i]], to[t[j]]);
        while pf != pt {
            if pf < pt {
                i += 1;
                if i >= f.len() {
                    return out;
                }
                pf *= from[f[i]];
            } else {
                j += 1;
                if j >= t.len() {
                    return out;
                }
                pt *= to[t[j]];
            }
        }
        if gi == i && gj == j {
            out[f[i]] = index[t[j]].clone();
        } else {
            // Linearize the `to` group, split into the `from` group.
            let mut lin = Index::Const(0);
            let mut stride = 1i64;
            for &d in t[gj..=j].iter().rev() {
                lin = index[d].clone().times(stride).plus(lin);
                stride *= to[d] as i64;
            }
            let mut stride = 1i64;
            for (k, &d) in f[gi..=i].iter().enumerate().rev() {
                let q = lin.clone().floor_div(stride);
                out[d] = if k == 0 { q } else { q.modulo(from[d] as i64) };
                stride *= from[d] as i64;
            }
        }
        i += 1;
        j += 1;
    }
    out
}

/// A rank-0 zero (false) of `dtype`.
pub(crate) fn zero(dtype: DType) -> Tensor {
    with_dtype!(dtype, T => Tensor::scalar(T::default()))
}

/// The identity of a reduction in `dtype` (the pad value of pooling).
pub(crate) fn identity(kind: ReduceKind, dtype: DType) -> Tensor {
    let v = match kind {
        ReduceKind::Sum => 0.0,
        ReduceKind::Prod => 1.0,
        ReduceKind::Max => f64::NEG_INFINITY,
        ReduceKind::Min => f64::INFINITY,
    };
    if dtype.is_float() || matches!(kind, ReduceKind::Sum | ReduceKind::Prod) {
        return with_dtype!(dtype, T => Tensor::scalar(T::from_f64(v)));
    }
    if dtype == DType::Bool {
        return Tensor::scalar(kind == ReduceKind::Min);
    }
    // Integers: the lowest / highest value (the conversion saturates).
    with_dtype!(dtype, T => {
        let vals = [T::from_f64(f64::MIN), T::from_f64(f64::MAX)];
        Tensor::scalar(if kind == ReduceKind::Max { vals[0] } else { vals[1] })
    })
}

/// `convert(..convert(load))` with the fill value moved onto the load, when the chain maps
/// the fill value to itself exactly (a padded operand rounded through bf16 by a precision
/// pass: out of bounds the load gives the fill, which the converts keep). The same values as
/// `select(in_bounds, chain(load), fill)`, without the bounds test; `None` otherwise.
fn fill_through_converts(e: &Expr, fill: &Tensor) -> Option<Expr> {
    let mut chain = Vec::new();
    let mut at = e;
    while let Expr::Convert(to, x) = at {
        chain.push(*to);
        at = x;
    }
    // A guarded load carries a fill of its buffer's type: that type must be the fill's.
    let Expr::Load {
        buffer,
        index,
        fill: Some(load_fill),
    } = at
    else {
        return None;
    };
    if chain.is_empty() || !chain.iter().all(|d| d.is_float()) || load_fill.dtype() != fill.dtype()
    {
        return None;
    }
    let mut v = fill.clone();
    for &to in chain.iter().rev() {
        v = terafab_ir::interp::elementwise::convert(&v, to).ok()?;
    }
    if !v.bit_eq(fill) {
        return None;
    }
    let mut out = Expr::Load {
        buffer: *buffer,
        index: index.clone(),
        fill: Some(fill.clone()),
    };
    for &to in chain.iter().rev() {
        out = Expr::Convert(to, Box::new(out));
    }
    Some(out)
}
