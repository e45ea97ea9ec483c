//! The kernel IR's text form (for reading and snapshots; there is no parser).
//!
//! ```text
//! kernels @main(%x: f32[64,784]) -> (%probs) {
//!   input %x: f32[64,784]
//!   const %w1: f32[784,128]
//!   temp %h: f32[64,128]
//!   kernel @k0 matmul(%x, %w1, %b1) -> (%h) {  // fc1, relu1
//!     parallel i0 < 64, i1 < 128
//!     t0 = reduce_sum(r0 < 784) mul(%x[i0, r0], %w1[r0, i1])
//!     store %h[i0, i1] = max(add(t0, %b1[i1]), 0.0:f32)
//!   }
//! }
//! ```
//!
//! Buffers are declared with their storage (`input`, `const`, `temp`), type and, when not
//! row-major, their strides. Buffers are `%name`; outer (parallel) variables print as `iN`,
//! reduction variables as `rN`, inner store variables as `jN`, locals as `tN`. Scalar expressions are calls
//! (`add(a, b)`, `select(c, a, b)`, `convert[f16](a)`, `index[i64](%i0)`); a load is
//! `%buf[index, ...]`, and a load with a fill value `fill(%buf[...], 0.0:f32)`; constants are
//! `value:type`. Index expressions use `+`, `*`, floor `/` and `%` (non-negative) by constants.
//! A call kernel prints its graph function in the graph IR's text form, indented.

use std::collections::HashMap;
use std::fmt::Write;

use super::{Body, Expr, Index, Kernel, KernelProgram, Local, Stage, Storage, Var};
use crate::print::{LiteralElement, print_function, print_name};
use crate::tensor::Tensor;
use crate::with_data;

/// The text form of a program.
pub fn print_program(p: &KernelProgram) -> String {
    let mut w = String::new();
    let buf = |id: super::BufferId| -> String {
        match p.buffers.get(id.index()) {
            Some(b) => format!("%{}", print_name(&b.name)),
            None => format!("%<invalid buffer #{}>", id.0),
        }
    };
    let inputs: Vec<String> = p
        .inputs
        .iter()
        .map(|&b| match p.buffers.get(b.index()) {
            Some(x) => format!("{}: {}", buf(b), type_text(x.dtype, &x.shape)),
            None => buf(b),
        })
        .collect();
    let outputs: Vec<String> = p
        .outputs
        .iter()
        .map(|(name, b)| {
            let bn = buf(*b);
            if format!("%{}", print_name(name)) == bn {
                bn
            } else {
                format!("{} = {bn}", print_name(name))
            }
        })
        .collect();
    let _ = writeln!(
        w,
        "kernels @{}({}) -> ({}) {{",
        print_name(&p.name),
        inputs.join(", "),
        outputs.join(", ")
    );
    for b in &p.buffers {
        let storage = match &b.storage {
            Storage::Input(_) => "input",
            Storage::Const(_) => "const",
            Storage::Temp => "temp",
        };
        let _ = write!(
            w,
            "  {storage} %{}: {}",
            print_name(&b.name),
            type_text(b.dtype, &b.shape)
        );
        if !b.is_row_major() {
            let _ = write!(w, " strides {:?}", b.strides);
        }
        w.push('\n');
    }
    for k in &p.kernels {
        write_kernel(&mut w, p, k, &buf);
    }
    w.push_str("}\n");
    w
}

fn type_text(dtype: crate::DType, shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    format!("{}[{}]", dtype.name(), dims.join(","))
}

/// The names of a kernel's variables and locals.
struct Names {
    vars: HashMap<Var, String>,
}

impl Names {
    fn of(space: usize, stages: &[Stage]) -> Names {
        let mut vars = HashMap::new();
        for i in 0..space {
            vars.insert(Var(i as u32), format!("i{i}"));
        }
        let (mut r, mut j) = (0, 0);
        for s in stages {
            match s {
                Stage::Reduce { vars: vs, .. } => {
                    for (v, _) in vs {
                        vars.entry(*v).or_insert_with(|| {
                            r += 1;
                            format!("r{}", r - 1)
                        });
                    }
                }
                Stage::Store { vars: vs, .. } => {
                    for (v, _) in vs {
                        vars.entry(*v).or_insert_with(|| {
                            j += 1;
                            format!("j{}", j - 1)
                        });
                    }
                }
            }
        }
        Names { vars }
    }

    fn var(&self, v: Var) -> String {
        self.vars
            .get(&v)
            .cloned()
            .unwrap_or_else(|| format!("<unbound var #{}>", v.0))
    }
}

fn write_kernel(
    w: &mut String,
    p: &KernelProgram,
    k: &Kernel,
    buf: &dyn Fn(super::BufferId) -> String,
) {
    let ins: Vec<String> = k.inputs.iter().map(|&b| buf(b)).collect();
    let outs: Vec<String> = k.outputs.iter().map(|&b| buf(b)).collect();
    let _ = write!(
        w,
        "  kernel @{} {}({}) -> ({}) {{",
        print_name(&k.name),
        k.kind.name(),
        ins.join(", "),
        outs.join(", ")
    );
    if !k.sources.is_empty() {
        let _ = write!(w, "  // {}", k.sources.join(", "));
    }
    w.push('\n');
    match &k.body {
        Body::Loops(nest) => {
            let names = Names::of(nest.space.len(), &nest.stages);
            let space: Vec<String> = nest
                .space
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{} < {n}", names.var(Var(i as u32))))
                .collect();
            let _ = writeln!(w, "    parallel {}", space.join(", "));
            for s in &nest.stages {
                let ctx = Ctx { p, names: &names };
                match s {
                    Stage::Reduce {
                        local,
                        kind,
                        vars,
                        body,
                    } => {
                        let _ = writeln!(
                            w,
                            "    {} = reduce_{}({}) {}",
                            local_name(*local),
                            kind.name(),
                            ctx.loops(vars),
                            ctx.expr(body)
                        );
                    }
                    Stage::Store {
                        buffer,
                        vars,
                        index,
                        value,
                    } => {
                        let _ = write!(w, "    ");
                        if !vars.is_empty() {
                            let _ = write!(w, "for({}) ", ctx.loops(vars));
                        }
                        let _ = writeln!(
                            w,
                            "store {}[{}] = {}",
                            buf(*buffer),
                            ctx.indices(index),
                            ctx.expr(value)
                        );
                    }
                }
            }
        }
        Body::Call(f) => {
            for line in print_function(f).lines() {
                let _ = writeln!(w, "    {line}");
            }
        }
    }
    w.push_str("  }\n");
}

fn local_name(l: Local) -> String {
    format!("t{}", l.0)
}

struct Ctx<'a> {
    p: &'a KernelProgram,
    names: &'a Names,
}

impl Ctx<'_> {
    fn loops(&self, vars: &[(Var, usize)]) -> String {
        let v: Vec<String> = vars
            .iter()
            .map(|(v, n)| format!("{} < {n}", self.names.var(*v)))
            .collect();
        v.join(", ")
    }

    fn indices(&self, index: &[Index]) -> String {
        let v: Vec<String> = index.iter().map(|i| self.index(i)).collect();
        v.join(", ")
    }

    fn index(&self, i: &Index) -> String {
        match i {
            Index::Var(v) => self.names.var(*v),
            Index::Const(c) => c.to_string(),
            Index::Add(a, b) => match b.as_ref() {
                Index::Const(c) if *c < 0 => format!("{} - {}", self.index(a), -c),
                _ => format!("{} + {}", self.index(a), self.index(b)),
            },
            Index::Mul(a, c) => format!("{}*{c}", self.factor(a)),
            Index::Div(a, c) => format!("{}/{c}", self.factor(a)),
            Index::Rem(a, c) => format!("{}%{c}", self.factor(a)),
        }
    }

    /// An operand of `*`, `/`, `%`: parenthesized when it is a sum.
    fn factor(&self, i: &Index) -> String {
        match i {
            Index::Add(..) => format!("({})", self.index(i)),
            _ => self.index(i),
        }
    }

    fn expr(&self, e: &Expr) -> String {
        match e {
            Expr::Load {
                buffer,
                index,
                fill,
            } => {
                let name = match self.p.buffers.get(buffer.index()) {
                    Some(b) => format!("%{}", print_name(&b.name)),
                    None => format!("%<invalid buffer #{}>", buffer.0),
                };
                let load = format!("{name}[{}]", self.indices(index));
                match fill {
                    Some(v) => format!("fill({load}, {})", scalar_text(v)),
                    None => load,
                }
            }
            Expr::Const(t) => scalar_text(t),
            Expr::Local(l) => local_name(*l),
            Expr::Index(i, d) => format!("index[{}]({})", d.name(), self.index(i)),
            Expr::Unary(op, a) => format!("{}({})", op.name(), self.expr(a)),
            Expr::Binary(op, a, b) => {
                format!("{}({}, {})", op.name(), self.expr(a), self.expr(b))
            }
            Expr::Compare(op, a, b) => {
                format!("{}({}, {})", op.name(), self.expr(a), self.expr(b))
            }
            Expr::Select(c, a, b) => format!(
                "select({}, {}, {})",
                self.expr(c),
                self.expr(a),
                self.expr(b)
            ),
            Expr::Convert(d, a) => format!("convert[{}]({})", d.name(), self.expr(a)),
        }
    }
}

/// A rank-0 tensor as `value:type` (`0.5:f32`, `-3:i64`, `true:bool`).
pub fn scalar_text(t: &Tensor) -> String {
    let mut s = String::new();
    with_data!(t.data(), v, _T => match v.first() {
        Some(x) => { let _ = x.write_literal(&mut s); }
        None => s.push_str("<empty>"),
    });
    format!("{s}:{}", t.dtype().name())
}
