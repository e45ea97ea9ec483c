//! Executing a kernel program, with the graph interpreter's semantics.
//!
//! Loop nests are evaluated a chunk of outer points at a time, each expression over all the
//! points (lanes) of a stage at once: a load gathers one element per lane, an operation is the
//! graph op applied by [`eval_op`] to rank-1 tensors of lanes, so scalar semantics (rounding,
//! integer wrapping, NaN rules) are exactly the graph interpreter's; a reduction stage reduces
//! its lanes with the graph's reduce op (float sums accumulated in f64, rounded once). Stores
//! check their bounds and that no element is written twice, and every element of every output
//! buffer must have been written when its kernel ends: a lowering that misses or overlaps
//! elements fails loudly instead of returning stale data. Call kernels run their graph
//! function with [`run_function`].

use std::sync::Arc;

use super::{Body, Buffer, BufferId, Expr, Index, Kernel, KernelProgram, LoopNest, Stage, Storage};
use crate::interp::{Bindings, InterpError, eval_op, run_function};
use crate::op::{Op, ReduceKind};
use crate::tensor::{Data, Element, Tensor};
use crate::with_data;

/// How many lanes (outer points times stage points) one evaluation step handles at most.
const LANES: usize = 1 << 15;

fn err(kernel: &str, msg: impl std::fmt::Display) -> InterpError {
    InterpError::Invalid(format!("kernel @{kernel}: {msg}"))
}

/// Run `p` on its inputs (row-major tensors, one per input buffer); returns its outputs.
pub fn run_program(p: &KernelProgram, inputs: &[Tensor]) -> Result<Vec<Tensor>, InterpError> {
    let mut mem = initial_memory(p, inputs)?;
    for k in &p.kernels {
        let outs = run_kernel(p, k, &mem)?;
        for (&b, t) in k.outputs.iter().zip(outs) {
            mem[b.index()] = Some(t);
        }
    }
    read_outputs(p, &mem)
}

/// The memory of a program before its first kernel, one entry per buffer: the inputs and
/// constants as their buffers' flat contents (rank 1, `span` elements laid out by the buffer's
/// strides), `None` for temporaries. Backends that run some kernels themselves (the tile
/// backend) keep a program's memory in this form and call [`run_kernel`] for the others.
pub fn initial_memory(
    p: &KernelProgram,
    inputs: &[Tensor],
) -> Result<Vec<Option<Tensor>>, InterpError> {
    if inputs.len() != p.inputs.len() {
        return Err(InterpError::InputCount {
            expected: p.inputs.len(),
            actual: inputs.len(),
        });
    }
    // Every buffer's elements, flat, laid out by its strides.
    let mut mem: Vec<Option<Tensor>> = vec![None; p.buffers.len()];
    for (&b, t) in p.inputs.iter().zip(inputs) {
        let buf = &p.buffers[b.index()];
        p.check_input(b, t).map_err(InterpError::Invalid)?;
        mem[b.index()] = Some(to_layout(t, buf)?);
    }
    for (i, buf) in p.buffers.iter().enumerate() {
        if let Storage::Const(t) = &buf.storage {
            mem[i] = Some(to_layout(t, buf)?);
        }
    }
    Ok(mem)
}

/// The program's outputs (row-major tensors) from its memory after the last kernel.
pub fn read_outputs(p: &KernelProgram, mem: &[Option<Tensor>]) -> Result<Vec<Tensor>, InterpError> {
    check_memory(p, mem)?;
    p.outputs
        .iter()
        .map(|(name, b)| {
            let buf = &p.buffers[b.index()];
            let flat = mem[b.index()].as_ref().ok_or_else(|| {
                InterpError::Invalid(format!("output `{name}` was never written"))
            })?;
            from_layout(flat, buf)
        })
        .collect()
}

/// A row-major tensor as the flat contents of `buf` (by its strides).
fn to_layout(t: &Tensor, buf: &Buffer) -> Result<Tensor, InterpError> {
    let tensor_err = |e: crate::tensor::TensorError| InterpError::Invalid(e.to_string());
    if buf.is_row_major() {
        return t.reshaped(vec![t.len()]).map_err(tensor_err);
    }
    let offsets = offsets_of(buf);
    let span = buf.span();
    with_data!(t.data(), v, T => {
        let mut out = vec![T::default(); span];
        for (i, &o) in offsets.iter().enumerate() {
            out[o] = v[i];
        }
        Tensor::from_vec(vec![span], out).map_err(tensor_err)
    })
}

/// The row-major tensor of a buffer's flat contents.
fn from_layout(flat: &Tensor, buf: &Buffer) -> Result<Tensor, InterpError> {
    let tensor_err = |e: crate::tensor::TensorError| InterpError::Invalid(e.to_string());
    if buf.is_row_major() {
        return flat.reshaped(buf.shape.clone()).map_err(tensor_err);
    }
    let offsets = offsets_of(buf);
    take(flat, &offsets, None, None)?
        .reshaped(buf.shape.clone())
        .map_err(tensor_err)
}

/// The offset of every element of `buf`, in row-major order.
fn offsets_of(buf: &Buffer) -> Vec<usize> {
    let mut out = vec![0usize; buf.len()];
    for (i, o) in out.iter_mut().enumerate() {
        let mut rem = i;
        for (d, (&n, &s)) in buf.shape.iter().zip(&buf.strides).enumerate().rev() {
            let _ = d;
            *o += (rem % n) * s;
            rem /= n;
        }
    }
    out
}

/// Gather `t[offsets[i]]` (or `fill` where `valid[i]` is false) into a rank-1 tensor.
fn take(
    t: &Tensor,
    offsets: &[usize],
    valid: Option<&[bool]>,
    fill: Option<&Tensor>,
) -> Result<Tensor, InterpError> {
    with_data!(t.data(), v, T => {
        let f: T = match fill {
            Some(f) => T::unwrap(f.data()).and_then(|d| d.first().copied()).unwrap_or_default(),
            None => T::default(),
        };
        let out: Vec<T> = match valid {
            Some(ok) => offsets.iter().zip(ok).map(|(&o, &k)| if k { v[o] } else { f }).collect(),
            None => offsets.iter().map(|&o| v[o]).collect(),
        };
        Tensor::from_vec(vec![out.len()], out).map_err(|e| InterpError::Invalid(e.to_string()))
    })
}

/// An output buffer being written: flat data plus which elements are written.
struct Out {
    data: Data,
    written: Vec<bool>,
}

/// A memory must have one entry per buffer of its program.
fn check_memory(p: &KernelProgram, mem: &[Option<Tensor>]) -> Result<(), InterpError> {
    if mem.len() != p.buffers.len() {
        return Err(InterpError::Invalid(format!(
            "a memory of {} buffers for a program of {}",
            mem.len(),
            p.buffers.len()
        )));
    }
    Ok(())
}

/// Run one kernel of `p` on the program's memory (see [`initial_memory`]); returns the flat
/// contents of its output buffers, in order.
pub fn run_kernel(
    p: &KernelProgram,
    k: &Kernel,
    mem: &[Option<Tensor>],
) -> Result<Vec<Tensor>, InterpError> {
    check_memory(p, mem)?;
    match &k.body {
        Body::Call(f) => {
            let ins = k
                .inputs
                .iter()
                .map(|&b| {
                    let t = mem[b.index()].as_ref().ok_or_else(|| {
                        err(&k.name, format!("reads #{} before it is written", b.0))
                    })?;
                    from_layout(t, &p.buffers[b.index()])
                })
                .collect::<Result<Vec<_>, _>>()?;
            let outs = run_function(f, &ins).map_err(|e| err(&k.name, e))?;
            k.outputs
                .iter()
                .zip(outs)
                .map(|(&b, t)| {
                    let buf = &p.buffers[b.index()];
                    if t.dtype() != buf.dtype || t.shape() != buf.shape.as_slice() {
                        return Err(err(
                            &k.name,
                            format!("call result does not fit %{}", buf.name),
                        ));
                    }
                    to_layout(&t, buf)
                })
                .collect()
        }
        Body::Loops(nest) => run_nest(p, k, nest, mem),
    }
}

fn run_nest(
    p: &KernelProgram,
    k: &Kernel,
    nest: &LoopNest,
    mem: &[Option<Tensor>],
) -> Result<Vec<Tensor>, InterpError> {
    let mut outs: Vec<Out> = k
        .outputs
        .iter()
        .map(|&b| {
            let buf = &p.buffers[b.index()];
            let t = Tensor::zeros(buf.dtype, &[buf.span()]).map_err(|e| err(&k.name, e))?;
            Ok(Out {
                data: t.data().clone(),
                written: vec![false; buf.span()],
            })
        })
        .collect::<Result<_, InterpError>>()?;
    let points: usize = nest.space.iter().product();
    let widest = nest
        .stages
        .iter()
        .map(|s| {
            let vars = match s {
                Stage::Reduce { vars, .. } | Stage::Store { vars, .. } => vars,
            };
            vars.iter().map(|(_, n)| *n).product::<usize>()
        })
        .max()
        .unwrap_or(1)
        .max(1);
    let chunk = (LANES / widest).max(1);
    let mut start = 0;
    while start < points {
        let end = points.min(start + chunk);
        let c = end - start;
        // The outer variables' values at points start..end.
        let mut outer: Vec<Vec<i64>> = vec![Vec::with_capacity(c); nest.space.len()];
        for pt in start..end {
            let mut rem = pt;
            for (d, &n) in nest.space.iter().enumerate().rev() {
                outer[d].push((rem % n) as i64);
                rem /= n;
            }
        }
        let mut locals: Vec<(super::Local, Tensor)> = Vec::new();
        for s in &nest.stages {
            let vars = match s {
                Stage::Reduce { vars, .. } | Stage::Store { vars, .. } => vars,
            };
            let m: usize = vars.iter().map(|(_, n)| *n).product();
            let n = c * m;
            // Lane l is outer point l / m, stage point l % m.
            let mut env = Lanes {
                p,
                k,
                mem,
                n,
                vars: Vec::new(),
                locals: Vec::new(),
            };
            for (d, vals) in outer.iter().enumerate() {
                let v: Vec<i64> = (0..n).map(|l| vals[l / m.max(1)]).collect();
                env.vars.push((super::Var(d as u32), v));
            }
            let mut stride = 1;
            for (v, ext) in vars.iter().rev() {
                let vals: Vec<i64> = (0..n).map(|l| ((l / stride) % ext) as i64).collect();
                env.vars.push((*v, vals));
                stride *= ext;
            }
            let point: Vec<usize> = (0..n).map(|l| l / m.max(1)).collect();
            for (id, t) in &locals {
                env.locals.push((*id, take(t, &point, None, None)?));
            }
            match s {
                Stage::Reduce {
                    local, kind, body, ..
                } => {
                    let vals = broadcast_lanes(env.expr(body)?, n, &k.name)?;
                    let vals = vals.reshaped(vec![c, m]).map_err(|e| err(&k.name, e))?;
                    let red = reduce_lanes(*kind, &vals)?;
                    locals.retain(|(l, _)| l != local);
                    locals.push((*local, red));
                }
                Stage::Store {
                    buffer,
                    index,
                    value,
                    ..
                } => {
                    let which =
                        k.outputs.iter().position(|b| b == buffer).ok_or_else(|| {
                            err(&k.name, "store to a buffer that is not an output")
                        })?;
                    let buf = &p.buffers[buffer.index()];
                    let offsets = env.offsets(buf, index, false)?.0;
                    let vals = broadcast_lanes(env.expr(value)?, n, &k.name)?;
                    let out = &mut outs[which];
                    for &o in &offsets {
                        if std::mem::replace(&mut out.written[o], true) {
                            return Err(err(
                                &k.name,
                                format!("element {o} of %{} is written twice", buf.name),
                            ));
                        }
                    }
                    scatter(&mut out.data, &offsets, &vals, &k.name)?;
                }
            }
        }
        start = end;
    }
    k.outputs
        .iter()
        .zip(outs)
        .map(|(&b, out)| {
            let buf = &p.buffers[b.index()];
            let offsets = offsets_of(buf);
            if let Some(i) = offsets.iter().position(|&o| !out.written[o]) {
                return Err(err(
                    &k.name,
                    format!("element {i} of %{} is never written", buf.name),
                ));
            }
            Tensor::from_data(vec![buf.span()], out.data).map_err(|e| err(&k.name, e))
        })
        .collect()
}

/// A rank-0 (constant) result broadcast to `n` lanes; a rank-1 result checked.
fn broadcast_lanes(t: Tensor, n: usize, kernel: &str) -> Result<Tensor, InterpError> {
    if t.rank() == 0 {
        return take(
            &t.reshaped(vec![1]).map_err(|e| err(kernel, e))?,
            &vec![0; n],
            None,
            None,
        );
    }
    if t.shape() != [n] {
        return Err(err(
            kernel,
            format!("{} lanes where {n} were expected", t.len()),
        ));
    }
    Ok(t)
}

fn reduce_lanes(kind: ReduceKind, vals: &Tensor) -> Result<Tensor, InterpError> {
    let op = Op::Reduce {
        kind,
        axes: vec![1],
        keep_dims: false,
    };
    let mut out = eval_op(&op, std::slice::from_ref(vals), &Bindings::new())?;
    Ok(out.remove(0))
}

/// Write `vals[i]` at `offsets[i]` of `data` (freshly allocated, so uniquely owned).
fn scatter(
    data: &mut Data,
    offsets: &[usize],
    vals: &Tensor,
    kernel: &str,
) -> Result<(), InterpError> {
    let mismatch = || err(kernel, "stored value type differs from the buffer's");
    with_data!(data, d, T => {
        let dst = Arc::get_mut(d).ok_or_else(|| err(kernel, "output buffer is shared"))?;
        let src = T::unwrap(vals.data()).ok_or_else(mismatch)?;
        for (&o, &x) in offsets.iter().zip(src.iter()) {
            dst[o] = x;
        }
        Ok(())
    })
}

/// The lanes of one stage: variable values and locals, per lane.
struct Lanes<'a> {
    p: &'a KernelProgram,
    k: &'a Kernel,
    mem: &'a [Option<Tensor>],
    n: usize,
    vars: Vec<(super::Var, Vec<i64>)>,
    locals: Vec<(super::Local, Tensor)>,
}

impl Lanes<'_> {
    fn index(&self, i: &Index) -> Result<Vec<i64>, InterpError> {
        Ok(match i {
            Index::Var(v) => self
                .vars
                .iter()
                .find(|(w, _)| w == v)
                .map(|(_, vals)| vals.clone())
                .ok_or_else(|| err(&self.k.name, format!("variable #{} is not in scope", v.0)))?,
            Index::Const(c) => vec![*c; self.n],
            Index::Add(a, b) => {
                let (a, b) = (self.index(a)?, self.index(b)?);
                a.iter().zip(&b).map(|(x, y)| x.wrapping_add(*y)).collect()
            }
            Index::Mul(a, c) => self.index(a)?.iter().map(|x| x.wrapping_mul(*c)).collect(),
            Index::Div(a, c) | Index::Rem(a, c) if *c <= 0 => {
                let _ = a;
                return Err(err(&self.k.name, format!("index division by {c}")));
            }
            Index::Div(a, c) => self.index(a)?.iter().map(|x| x.div_euclid(*c)).collect(),
            Index::Rem(a, c) => self.index(a)?.iter().map(|x| x.rem_euclid(*c)).collect(),
        })
    }

    /// Flat offsets of `buf[index]` per lane, and which lanes are in bounds (all must be
    /// unless `fill`).
    fn offsets(
        &self,
        buf: &Buffer,
        index: &[Index],
        fill: bool,
    ) -> Result<(Vec<usize>, Option<Vec<bool>>), InterpError> {
        if index.len() != buf.shape.len() {
            return Err(err(
                &self.k.name,
                format!("rank mismatch indexing %{}", buf.name),
            ));
        }
        let mut offs = vec![0usize; self.n];
        let mut valid = vec![true; self.n];
        for (d, i) in index.iter().enumerate() {
            let vals = self.index(i)?;
            let (dim, stride) = (buf.shape[d] as i64, buf.strides[d]);
            for (l, &x) in vals.iter().enumerate() {
                if x < 0 || x >= dim {
                    if !fill {
                        return Err(err(
                            &self.k.name,
                            format!(
                                "index {x} out of bounds for dim {d} (size {dim}) of %{}",
                                buf.name
                            ),
                        ));
                    }
                    valid[l] = false;
                } else {
                    offs[l] += x as usize * stride;
                }
            }
        }
        for (o, ok) in offs.iter_mut().zip(&valid) {
            if !ok {
                *o = 0;
            }
        }
        Ok((offs, fill.then_some(valid)))
    }

    fn eval(&self, op: Op, args: &[Tensor]) -> Result<Tensor, InterpError> {
        let mut out = eval_op(&op, args, &Bindings::new()).map_err(|e| err(&self.k.name, e))?;
        Ok(out.remove(0))
    }

    /// The expression's value at every lane (rank 1), or once (rank 0) for a constant.
    fn expr(&self, e: &Expr) -> Result<Tensor, InterpError> {
        match e {
            Expr::Load {
                buffer,
                index,
                fill,
            } => {
                let buf = &self.p.buffers[buffer.index()];
                let data = self.buffer(*buffer)?;
                let (offs, valid) = self.offsets(buf, index, fill.is_some())?;
                take(data, &offs, valid.as_deref(), fill.as_ref())
            }
            Expr::Const(t) => Ok(t.clone()),
            Expr::Local(l) => self
                .locals
                .iter()
                .find(|(m, _)| m == l)
                .map(|(_, t)| t.clone())
                .ok_or_else(|| err(&self.k.name, format!("local t{} is not defined", l.0))),
            Expr::Index(i, d) => {
                let vals = self.index(i)?;
                let t =
                    Tensor::from_vec(vec![vals.len()], vals).map_err(|e| err(&self.k.name, e))?;
                self.eval(Op::Convert { to: *d }, &[t])
            }
            Expr::Unary(op, a) => self.eval(Op::Unary(*op), &[self.expr(a)?]),
            Expr::Binary(op, a, b) => self.eval(Op::Binary(*op), &[self.expr(a)?, self.expr(b)?]),
            Expr::Compare(op, a, b) => self.eval(Op::Compare(*op), &[self.expr(a)?, self.expr(b)?]),
            Expr::Select(c, a, b) => {
                self.eval(Op::Select, &[self.expr(c)?, self.expr(a)?, self.expr(b)?])
            }
            Expr::Convert(d, a) => self.eval(Op::Convert { to: *d }, &[self.expr(a)?]),
        }
    }

    fn buffer(&self, b: BufferId) -> Result<&Tensor, InterpError> {
        self.mem
            .get(b.index())
            .and_then(Option::as_ref)
            .ok_or_else(|| err(&self.k.name, format!("reads #{} before it is written", b.0)))
    }
}
