//! The kernel IR verifier: references, scopes, types, bounds and the write-once discipline.
//!
//! Bounds are checked by interval analysis: every index expression is bounded over the
//! extents of the variables in scope, and a load without a fill, or a store, whose interval
//! leaves the buffer's dims is an error. (Intervals over-approximate: a lowering must only
//! produce indices the analysis can bound, e.g. not `i - i`.)

use std::collections::HashMap;

use super::{Body, BufferId, Expr, Index, Kernel, KernelProgram, Local, Stage, Storage, Var};
use crate::dtype::DType;
use crate::graph::TensorType;
use crate::infer::infer;
use crate::op::Op;
use crate::verify::verify_function;

/// A verifier error: where (kernel) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel program @{program}{}: {message}", kernel.as_ref().map(|k| format!(", kernel @{k}")).unwrap_or_default())]
pub struct KernelVerifyError {
    pub program: String,
    pub kernel: Option<String>,
    pub message: String,
}

/// Check a program (see the module doc).
pub fn verify_program(p: &KernelProgram) -> Result<(), KernelVerifyError> {
    let err = |kernel: Option<&str>, message: String| KernelVerifyError {
        program: p.name.clone(),
        kernel: kernel.map(str::to_string),
        message,
    };
    let nb = p.buffers.len();
    let in_range = |b: BufferId| b.index() < nb;
    for b in &p.buffers {
        if b.strides.len() != b.shape.len() {
            return Err(err(
                None,
                format!(
                    "buffer %{} has {} strides for rank {}",
                    b.name,
                    b.strides.len(),
                    b.shape.len()
                ),
            ));
        }
        if let Storage::Const(t) = &b.storage
            && (t.dtype() != b.dtype || t.shape() != b.shape.as_slice() || !b.is_row_major())
        {
            return Err(err(
                None,
                format!(
                    "constant buffer %{} does not match its value's type",
                    b.name
                ),
            ));
        }
    }
    // Written: inputs and constants from the start, temps by their kernel.
    let mut written = vec![false; nb];
    for (i, &b) in p.inputs.iter().enumerate() {
        if !in_range(b) {
            return Err(err(None, format!("input #{i} is not a buffer")));
        }
        if !matches!(p.buffers[b.index()].storage, Storage::Input(n) if n == i) {
            return Err(err(
                None,
                format!(
                    "input #{i} (%{}) is not stored as input {i}",
                    p.buffers[b.index()].name
                ),
            ));
        }
        written[b.index()] = true;
    }
    for (i, b) in p.buffers.iter().enumerate() {
        match b.storage {
            Storage::Const(_) => written[i] = true,
            Storage::Input(n) if p.inputs.get(n) != Some(&BufferId(i as u32)) => {
                return Err(err(
                    None,
                    format!("buffer %{} claims to be input {n}", b.name),
                ));
            }
            _ => {}
        }
    }
    let mut names = HashMap::new();
    for k in &p.kernels {
        if names.insert(k.name.as_str(), ()).is_some() {
            return Err(err(Some(&k.name), "duplicate kernel name".into()));
        }
        let kerr = |m: String| err(Some(&k.name), m);
        for &b in &k.inputs {
            if !in_range(b) {
                return Err(kerr(format!("input buffer #{} does not exist", b.0)));
            }
            if !written[b.index()] {
                return Err(kerr(format!(
                    "reads %{} before any kernel writes it",
                    p.buffers[b.index()].name
                )));
            }
        }
        for &b in &k.outputs {
            if !in_range(b) {
                return Err(kerr(format!("output buffer #{} does not exist", b.0)));
            }
            let buf = &p.buffers[b.index()];
            if !matches!(buf.storage, Storage::Temp) {
                return Err(kerr(format!(
                    "writes %{}, which is not a temporary",
                    buf.name
                )));
            }
            if written[b.index()] {
                return Err(kerr(format!(
                    "writes %{}, which is already written",
                    buf.name
                )));
            }
        }
        check_kernel(p, k).map_err(kerr)?;
        for &b in &k.outputs {
            written[b.index()] = true;
        }
    }
    for (name, b) in &p.outputs {
        if !in_range(*b) || !written[b.index()] {
            return Err(err(None, format!("output `{name}` is never written")));
        }
    }
    Ok(())
}

fn check_kernel(p: &KernelProgram, k: &Kernel) -> Result<(), String> {
    match &k.body {
        Body::Call(f) => {
            verify_function(f).map_err(|e| format!("call body: {e}"))?;
            if f.inputs().len() != k.inputs.len() || f.outputs().len() != k.outputs.len() {
                return Err("call body's signature does not match the kernel's buffers".into());
            }
            for (&v, &b) in f
                .inputs()
                .iter()
                .zip(&k.inputs)
                .chain(f.outputs().iter().zip(&k.outputs))
            {
                let b = &p.buffers[b.index()];
                let ty = f.values.ty(v);
                let ok = ty.dtype == b.dtype
                    && ty.shape.rank() == b.shape.len()
                    && ty
                        .shape
                        .dims()
                        .iter()
                        .zip(&b.shape)
                        .all(|(d, &n)| d.as_static().is_none_or(|s| s == n));
                if !ok {
                    return Err(format!(
                        "call body value %{} ({}) does not match buffer %{}",
                        f.values.name(v),
                        ty,
                        b.name
                    ));
                }
            }
            Ok(())
        }
        Body::Loops(nest) => {
            let mut scope: HashMap<Var, usize> = HashMap::new();
            for (i, &n) in nest.space.iter().enumerate() {
                scope.insert(Var(i as u32), n);
            }
            let mut locals: HashMap<Local, DType> = HashMap::new();
            let mut stored = Vec::new();
            for s in &nest.stages {
                let (vars, local) = match s {
                    Stage::Reduce { vars, local, .. } => (vars, Some(*local)),
                    Stage::Store { vars, .. } => (vars, None),
                };
                let mut inner = scope.clone();
                for (v, n) in vars {
                    if inner.insert(*v, *n).is_some() {
                        return Err(format!("loop variable #{} is declared twice", v.0));
                    }
                }
                let c = Checker {
                    p,
                    k,
                    scope: &inner,
                    locals: &locals,
                };
                match s {
                    Stage::Reduce { body, .. } => {
                        let ty = c.expr(body)?;
                        if let Some(l) = local
                            && locals.insert(l, ty).is_some()
                        {
                            return Err(format!("local t{} is defined twice", l.0));
                        }
                    }
                    Stage::Store {
                        buffer,
                        index,
                        value,
                        ..
                    } => {
                        if !k.outputs.contains(buffer) {
                            return Err(format!("stores to #{}, which is not an output", buffer.0));
                        }
                        let b = &p.buffers[buffer.index()];
                        c.bounds(*buffer, index, false)?;
                        let ty = c.expr(value)?;
                        if ty != b.dtype {
                            return Err(format!(
                                "stores a {ty} value into %{} ({})",
                                b.name, b.dtype
                            ));
                        }
                        stored.push(*buffer);
                    }
                }
            }
            for &o in &k.outputs {
                if stored.iter().filter(|&&b| b == o).count() != 1 {
                    return Err(format!(
                        "output %{} is not stored by exactly one stage",
                        p.buffers[o.index()].name
                    ));
                }
            }
            Ok(())
        }
    }
}

struct Checker<'a> {
    p: &'a KernelProgram,
    k: &'a Kernel,
    scope: &'a HashMap<Var, usize>,
    locals: &'a HashMap<Local, DType>,
}

impl Checker<'_> {
    /// The interval of an index expression over the variables in scope.
    fn interval(&self, i: &Index) -> Result<(i64, i64), String> {
        let mut vars = Vec::new();
        i.vars(&mut vars);
        if let Some(v) = vars.iter().find(|v| !self.scope.contains_key(v)) {
            return Err(format!("loop variable #{} is not in scope", v.0));
        }
        i.interval(&|v| self.scope.get(&v).copied())
            .ok_or_else(|| "an index is divided by a non-positive constant".to_string())
    }

    fn bounds(&self, b: BufferId, index: &[Index], fill: bool) -> Result<(), String> {
        let buf = self
            .p
            .buffers
            .get(b.index())
            .ok_or_else(|| format!("buffer #{} does not exist", b.0))?;
        if index.len() != buf.shape.len() {
            return Err(format!(
                "%{} has rank {} but is indexed with {} indices",
                buf.name,
                buf.shape.len(),
                index.len()
            ));
        }
        for (d, (i, &n)) in index.iter().zip(&buf.shape).enumerate() {
            let (lo, hi) = self.interval(i)?;
            // An empty loop never runs; an empty interval (hi < lo) needs no check.
            let empty = self.scope.values().any(|&n| n == 0);
            if !fill && !empty && (lo < 0 || hi >= n as i64) {
                return Err(format!(
                    "index {d} of %{} ranges over [{lo}, {hi}], outside [0, {n})",
                    buf.name
                ));
            }
        }
        Ok(())
    }

    /// The element type of an expression.
    fn expr(&self, e: &Expr) -> Result<DType, String> {
        let rank0 = |d: DType| TensorType::scalar(d);
        let rule = |op: Op, tys: &[DType]| -> Result<DType, String> {
            let tys: Vec<TensorType> = tys.iter().map(|&d| rank0(d)).collect();
            let refs: Vec<&TensorType> = tys.iter().collect();
            match infer(&op, &refs) {
                Ok(out) if out.len() == 1 => Ok(out[0].dtype),
                Ok(_) => Err(format!("`{}` is not a scalar op", op.name())),
                Err(e) => Err(format!("`{}`: {e}", op.name())),
            }
        };
        match e {
            Expr::Load {
                buffer,
                index,
                fill,
            } => {
                if !self.k.inputs.contains(buffer) {
                    return Err(format!(
                        "loads #{}, which is not an input of the kernel",
                        buffer.0
                    ));
                }
                self.bounds(*buffer, index, fill.is_some())?;
                let d = self.p.buffers[buffer.index()].dtype;
                if let Some(f) = fill
                    && (f.dtype() != d || f.rank() != 0)
                {
                    return Err(format!("fill value of a {d} load is not a {d} scalar"));
                }
                Ok(d)
            }
            Expr::Const(t) => {
                if t.rank() != 0 {
                    return Err("a constant in an expression must be a scalar".into());
                }
                Ok(t.dtype())
            }
            Expr::Local(l) => self
                .locals
                .get(l)
                .copied()
                .ok_or_else(|| format!("local t{} is used before it is defined", l.0)),
            Expr::Index(i, d) => {
                self.interval(i)?;
                if !(d.is_int() || d.is_float()) {
                    return Err(format!("index value of type {d}"));
                }
                Ok(*d)
            }
            Expr::Unary(op, a) => rule(Op::Unary(*op), &[self.expr(a)?]),
            Expr::Binary(op, a, b) => rule(Op::Binary(*op), &[self.expr(a)?, self.expr(b)?]),
            Expr::Compare(op, a, b) => rule(Op::Compare(*op), &[self.expr(a)?, self.expr(b)?]),
            Expr::Select(c, a, b) => {
                rule(Op::Select, &[self.expr(c)?, self.expr(a)?, self.expr(b)?])
            }
            Expr::Convert(d, a) => rule(Op::Convert { to: *d }, &[self.expr(a)?]),
        }
    }
}
