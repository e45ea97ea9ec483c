//! The kernel IR: a function as a sequence of fused kernels over buffers.
//!
//! A [`KernelProgram`] is what the `fuse` pass makes of one graph function, and what backends
//! generate code from. It owns:
//!
//! - **buffers** ([`Buffer`]): every tensor the program touches, each with a static shape, a
//!   layout (strides in elements; row-major unless stated) and a storage class: a program
//!   input, a constant (weights), or a temporary written by exactly one kernel;
//! - **kernels** ([`Kernel`]), in execution order, each reading buffers written before it and
//!   writing its own output buffers.
//!
//! A kernel's body is either a [`LoopNest`] or a [`Body::Call`]:
//!
//! - A loop nest has a parallel **iteration space** (`space`: one variable per dim, the outer
//!   loops; every point is independent) and, per point, a list of **stages**: [`Stage::Reduce`]
//!   computes a scalar local by reducing an expression over its own loop variables (the
//!   contraction of a matmul or conv, a row max or sum), and [`Stage::Store`] writes an
//!   expression to a buffer, over its own inner loop variables (none for a plain elementwise
//!   kernel; the row for a softmax, whose stages are `max`, `sum`, `store`). Bodies are scalar
//!   expression trees ([`Expr`]) over loads whose indices are affine-like expressions of the
//!   loop variables ([`Index`]: `+`, `*` by a constant, floor `/` and `%` by a constant), so
//!   broadcasts, transposes, reshapes, slices, reversals, padding and concatenation are folded
//!   into the indexing of their consumers instead of becoming kernels. A load may carry a
//!   `fill` value, returned where its index is out of bounds (padding).
//! - A call runs one graph op that is not a loop nest (sort, scatter, gather, `if`, `loop`,
//!   ...) as a small graph function: the runtime's library call.
//!
//! Invariants (checked by [`verify::verify_program`]): buffer and variable references are in
//! range and in scope; index arity equals the buffer's rank; expression types check (the
//! scalar type rules are the graph ops' rules on rank-0 operands); every load without a fill
//! and every store is in bounds for every point of its loops (interval analysis); each
//! temporary is written by exactly one kernel, before any kernel reads it; every program
//! output is defined. The interpreter ([`interp::run_program`]) executes a program with the
//! graph interpreter's scalar semantics (it evaluates each expression over many points at once
//! with [`crate::interp::eval_op`]), and checks that every element of every output is written
//! exactly once; the text form is written by [`print::print_program`].

pub mod interp;
pub mod print;
pub mod split;
pub mod verify;

use crate::dtype::DType;
use crate::graph::Function;
use crate::op::{BinaryOp, CompareOp, ReduceKind, UnaryOp};
use crate::shape::row_major_strides;
use crate::tensor::Tensor;

/// A buffer of a [`KernelProgram`], by position in [`KernelProgram::buffers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufferId(pub u32);

impl BufferId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A loop variable of a kernel, by number (the outer variables are `0..space.len()`, stage
/// variables follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

/// A scalar local of a kernel (the result of a [`Stage::Reduce`]), by number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Local(pub u32);

/// Where a buffer's contents come from.
#[derive(Debug, Clone)]
pub enum Storage {
    /// The program's input number `n`.
    Input(usize),
    /// A constant known at compile time (weights, tables).
    Const(Tensor),
    /// Written by one kernel of the program.
    Temp,
}

/// A tensor in memory.
#[derive(Debug, Clone)]
pub struct Buffer {
    /// Its name in the text form (the graph value's name where it has one).
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Element strides, one per dim (row-major unless a layout says otherwise).
    pub strides: Vec<usize>,
    pub storage: Storage,
}

impl Buffer {
    /// A row-major buffer.
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<usize>, storage: Storage) -> Self {
        let strides = row_major_strides(&shape);
        Buffer {
            name: name.into(),
            dtype,
            shape,
            strides,
            storage,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of elements the layout spans (1 + the largest offset; 0 when empty).
    pub fn span(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        1 + self
            .shape
            .iter()
            .zip(&self.strides)
            .map(|(d, s)| (d - 1) * s)
            .sum::<usize>()
    }

    /// Whether the layout is row-major.
    pub fn is_row_major(&self) -> bool {
        self.strides == row_major_strides(&self.shape)
    }
}

/// What a kernel computes, for reports and for backends that pick a strategy per family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Pointwise work (with folded data movement) only.
    Elementwise,
    /// Pure data movement (copies, transposes, concatenation, padding).
    Movement,
    /// Reductions with prologue and epilogue (reduce ops, softmax, normalization).
    Reduction,
    /// A contraction (dot_general) with prologue and epilogue.
    Matmul,
    /// A convolution with prologue and epilogue.
    Conv,
    /// A windowed reduction (pooling).
    Pool,
    /// A graph op run as a library call.
    Call,
}

impl KernelKind {
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Elementwise => "elementwise",
            KernelKind::Movement => "movement",
            KernelKind::Reduction => "reduction",
            KernelKind::Matmul => "matmul",
            KernelKind::Conv => "conv",
            KernelKind::Pool => "pool",
            KernelKind::Call => "call",
        }
    }
}

/// An index expression over loop variables (values are `i64`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Index {
    Var(Var),
    Const(i64),
    Add(Box<Index>, Box<Index>),
    /// Multiplication by a constant.
    Mul(Box<Index>, i64),
    /// Floor division by a positive constant.
    Div(Box<Index>, i64),
    /// Remainder of floor division by a positive constant (never negative).
    Rem(Box<Index>, i64),
}

impl Index {
    pub fn var(v: Var) -> Index {
        Index::Var(v)
    }

    /// `self + c`, simplified.
    pub fn offset(self, c: i64) -> Index {
        if c == 0 {
            return self;
        }
        match self {
            Index::Const(a) => Index::Const(a + c),
            Index::Add(a, b) if matches!(*b, Index::Const(_)) => {
                let Index::Const(k) = *b else { unreachable!() };
                a.offset(k + c)
            }
            other => Index::Add(Box::new(other), Box::new(Index::Const(c))),
        }
    }

    /// `self + other`, simplified.
    pub fn plus(self, other: Index) -> Index {
        match (self, other) {
            (Index::Const(a), b) => b.offset(a),
            (a, Index::Const(b)) => a.offset(b),
            (Index::Add(a, k), b) if matches!(*k, Index::Const(_)) => {
                let Index::Const(k) = *k else { unreachable!() };
                a.plus(b).offset(k)
            }
            (a, b) => Index::Add(Box::new(a), Box::new(b)),
        }
    }

    /// `self * c`, simplified.
    pub fn times(self, c: i64) -> Index {
        match (self, c) {
            (_, 0) => Index::Const(0),
            (a, 1) => a,
            (Index::Const(a), c) => Index::Const(a * c),
            (Index::Mul(a, k), c) => Index::Mul(a, k * c),
            (a, c) => Index::Mul(Box::new(a), c),
        }
    }

    /// `floor(self / c)` for `c > 0`, simplified.
    pub fn floor_div(self, c: i64) -> Index {
        match (self, c) {
            (a, 1) => a,
            (Index::Const(a), c) => Index::Const(a.div_euclid(c)),
            (a, c) => Index::Div(Box::new(a), c),
        }
    }

    /// `self mod c` (non-negative) for `c > 0`, simplified.
    pub fn modulo(self, c: i64) -> Index {
        match (self, c) {
            (_, 1) => Index::Const(0),
            (Index::Const(a), c) => Index::Const(a.rem_euclid(c)),
            (a, c) => Index::Rem(Box::new(a), c),
        }
    }

    /// The range `[lo, hi]` of the expression's values when every variable `v` ranges over
    /// `0..extent(v)`; `None` when a variable has no extent (out of scope) or a division is by
    /// a non-positive constant. Over-approximates (`i - i` is `[-(n-1), n-1]`).
    pub fn interval(&self, extent: &dyn Fn(Var) -> Option<usize>) -> Option<(i64, i64)> {
        Some(match self {
            Index::Var(v) => (0, extent(*v)? as i64 - 1),
            Index::Const(c) => (*c, *c),
            Index::Add(a, b) => {
                let (a, b) = (a.interval(extent)?, b.interval(extent)?);
                (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
            }
            Index::Mul(a, c) => {
                let a = a.interval(extent)?;
                let (x, y) = (a.0.saturating_mul(*c), a.1.saturating_mul(*c));
                (x.min(y), x.max(y))
            }
            Index::Div(_, c) | Index::Rem(_, c) if *c <= 0 => return None,
            Index::Div(a, c) => {
                let a = a.interval(extent)?;
                (a.0.div_euclid(*c), a.1.div_euclid(*c))
            }
            Index::Rem(a, c) => {
                let a = a.interval(extent)?;
                if a.0 >= 0 && a.1 < *c { a } else { (0, c - 1) }
            }
        })
    }

    /// The expression with every variable `v` replaced by `sub(v)`, simplified by the index
    /// builders ([`Index::plus`], [`Index::times`], [`Index::floor_div`], [`Index::modulo`]).
    pub fn subst(&self, sub: &dyn Fn(Var) -> Index) -> Index {
        match self {
            Index::Var(v) => sub(*v),
            Index::Const(c) => Index::Const(*c),
            Index::Add(a, b) => a.subst(sub).plus(b.subst(sub)),
            Index::Mul(a, c) => a.subst(sub).times(*c),
            Index::Div(a, c) => a.subst(sub).floor_div(*c),
            Index::Rem(a, c) => a.subst(sub).modulo(*c),
        }
    }

    /// The coefficient of `v` when the expression is affine in it (`v` under no division or
    /// remainder; other variables may be): `Some(0)` when it does not use `v`.
    pub fn coeff(&self, v: Var) -> Option<i64> {
        Some(match self {
            Index::Var(w) => i64::from(*w == v),
            Index::Const(_) => 0,
            Index::Add(a, b) => a.coeff(v)?.checked_add(b.coeff(v)?)?,
            Index::Mul(a, c) => a.coeff(v)?.checked_mul(*c)?,
            Index::Div(a, _) | Index::Rem(a, _) => {
                let mut vs = Vec::new();
                a.vars(&mut vs);
                if vs.contains(&v) {
                    return None;
                }
                0
            }
        })
    }

    /// Every variable the expression uses.
    pub fn vars(&self, out: &mut Vec<Var>) {
        match self {
            Index::Var(v) => out.push(*v),
            Index::Const(_) => {}
            Index::Add(a, b) => {
                a.vars(out);
                b.vars(out);
            }
            Index::Mul(a, _) | Index::Div(a, _) | Index::Rem(a, _) => a.vars(out),
        }
    }
}

/// The element offset of `index` into a buffer with `strides`, as one index (`Σ index[d] ·
/// strides[d]`); [`split::simplify`] recombines dims that split one flat variable.
pub fn offset_index(index: &[Index], strides: &[usize]) -> Index {
    index
        .iter()
        .zip(strides)
        .fold(Index::Const(0), |acc, (ix, &s)| {
            acc.plus(ix.clone().times(s as i64))
        })
}

/// The coefficient of `v` in the element offset of `index` into a buffer with `strides`,
/// when the offset is affine in `v` ([`Index::coeff`] of every dim, times its stride).
pub fn offset_coeff(index: &[Index], strides: &[usize], v: Var) -> Option<i64> {
    let mut c = 0i64;
    for (ix, &s) in index.iter().zip(strides) {
        c = c.checked_add(ix.coeff(v)?.checked_mul(i64::try_from(s).ok()?)?)?;
    }
    Some(c)
}

/// A scalar expression, evaluated at one point of the loops.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An element of a buffer; with `fill`, the fill value where the index is out of bounds.
    Load {
        buffer: BufferId,
        index: Vec<Index>,
        fill: Option<Tensor>,
    },
    /// A rank-0 constant.
    Const(Tensor),
    /// A reduction stage's result (at the current outer point).
    Local(Local),
    /// The value of an index expression, converted to an integer or float type.
    Index(Index, DType),
    Unary(UnaryOp, Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    Compare(CompareOp, Box<Expr>, Box<Expr>),
    /// `cond ? a : b`.
    Select(Box<Expr>, Box<Expr>, Box<Expr>),
    Convert(DType, Box<Expr>),
}

impl Expr {
    pub fn unary(op: UnaryOp, x: Expr) -> Expr {
        Expr::Unary(op, Box::new(x))
    }

    pub fn binary(op: BinaryOp, a: Expr, b: Expr) -> Expr {
        Expr::Binary(op, Box::new(a), Box::new(b))
    }

    pub fn compare(op: CompareOp, a: Expr, b: Expr) -> Expr {
        Expr::Compare(op, Box::new(a), Box::new(b))
    }

    pub fn select(c: Expr, a: Expr, b: Expr) -> Expr {
        Expr::Select(Box::new(c), Box::new(a), Box::new(b))
    }

    /// Visit this expression and every subexpression, parents first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Load { .. } | Expr::Const(_) | Expr::Local(_) | Expr::Index(..) => {}
            Expr::Unary(_, a) | Expr::Convert(_, a) => a.walk(f),
            Expr::Binary(_, a, b) | Expr::Compare(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::Select(c, a, b) => {
                c.walk(f);
                a.walk(f);
                b.walk(f);
            }
        }
    }

    /// The expression rebuilt with every subexpression for which `f` gives a replacement
    /// replaced (outermost first; a replacement is not visited again).
    pub fn rewrite(&self, f: &dyn Fn(&Expr) -> Option<Expr>) -> Expr {
        if let Some(e) = f(self) {
            return e;
        }
        let m = |x: &Expr| Box::new(x.rewrite(f));
        match self {
            Expr::Load { .. } | Expr::Const(_) | Expr::Local(_) | Expr::Index(..) => self.clone(),
            Expr::Unary(op, a) => Expr::Unary(*op, m(a)),
            Expr::Convert(d, a) => Expr::Convert(*d, m(a)),
            Expr::Binary(op, a, b) => Expr::Binary(*op, m(a), m(b)),
            Expr::Compare(op, a, b) => Expr::Compare(*op, m(a), m(b)),
            Expr::Select(c, a, b) => Expr::Select(m(c), m(a), m(b)),
        }
    }

    /// The expression rebuilt with every index rewritten by `index`, every loaded buffer by
    /// `buffer` and every reduction local replaced by `local(l)`.
    pub fn map(
        &self,
        index: &dyn Fn(&Index) -> Index,
        buffer: &dyn Fn(BufferId) -> BufferId,
        local: &dyn Fn(Local) -> Expr,
    ) -> Expr {
        let m = |x: &Expr| Box::new(x.map(index, buffer, local));
        match self {
            Expr::Load {
                buffer: b,
                index: idx,
                fill,
            } => Expr::Load {
                buffer: buffer(*b),
                index: idx.iter().map(index).collect(),
                fill: fill.clone(),
            },
            Expr::Const(t) => Expr::Const(t.clone()),
            Expr::Local(l) => local(*l),
            Expr::Index(i, d) => Expr::Index(index(i), *d),
            Expr::Unary(op, a) => Expr::Unary(*op, m(a)),
            Expr::Convert(d, a) => Expr::Convert(*d, m(a)),
            Expr::Binary(op, a, b) => Expr::Binary(*op, m(a), m(b)),
            Expr::Compare(op, a, b) => Expr::Compare(*op, m(a), m(b)),
            Expr::Select(c, a, b) => Expr::Select(m(c), m(a), m(b)),
        }
    }

    /// Every variable the expression's indices use (loads and index values), with repeats.
    pub fn vars(&self) -> Vec<Var> {
        let mut out = Vec::new();
        self.walk(&mut |x| match x {
            Expr::Load { index, .. } => index.iter().for_each(|i| i.vars(&mut out)),
            Expr::Index(i, _) => i.vars(&mut out),
            _ => {}
        });
        out
    }

    /// Whether the expression reads a reduction stage's local.
    pub fn uses_local(&self) -> bool {
        let mut found = false;
        self.walk(&mut |x| found |= matches!(x, Expr::Local(_)));
        found
    }

    /// The number of operations (loads and constants excluded).
    pub fn num_ops(&self) -> usize {
        let mut n = 0;
        self.walk(&mut |e| {
            if !matches!(
                e,
                Expr::Load { .. } | Expr::Const(_) | Expr::Local(_) | Expr::Index(..)
            ) {
                n += 1;
            }
        });
        n
    }
}

/// One step of a loop nest, run at every point of the outer space, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `local = reduce(kind) over vars of body`: the reduction of `body` over the stage's
    /// own loop variables (`vars`, with their extents), in the body's type (float sums are
    /// accumulated as precisely as the graph op's, see [`ReduceKind`]).
    Reduce {
        local: Local,
        kind: ReduceKind,
        vars: Vec<(Var, usize)>,
        body: Expr,
    },
    /// `buffer[index] = value` for every point of the stage's own loop variables.
    Store {
        buffer: BufferId,
        vars: Vec<(Var, usize)>,
        index: Vec<Index>,
        value: Expr,
    },
}

/// A fused loop nest: a parallel iteration space and the stages run at each of its points.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopNest {
    /// The extents of the outer (parallel) variables `Var(0)..Var(space.len())`.
    pub space: Vec<usize>,
    pub stages: Vec<Stage>,
}

impl LoopNest {
    /// The nest over `space` with each stage rebuilt: its loop variables renamed by `fv`, a
    /// store's buffer by `fb` and its indices by `fi`, each stage's expression (a reduction's
    /// body, a store's value) by `fe`.
    pub fn map_stages(
        &self,
        space: Vec<usize>,
        fe: &dyn Fn(&Expr) -> Expr,
        fi: &dyn Fn(&Index) -> Index,
        fb: &dyn Fn(BufferId) -> BufferId,
        fv: &dyn Fn(Var) -> Var,
    ) -> LoopNest {
        let vars = |vs: &[(Var, usize)]| vs.iter().map(|&(u, e)| (fv(u), e)).collect();
        let stages = self
            .stages
            .iter()
            .map(|s| match s {
                Stage::Reduce {
                    local,
                    kind,
                    vars: vs,
                    body,
                } => Stage::Reduce {
                    local: *local,
                    kind: *kind,
                    vars: vars(vs),
                    body: fe(body),
                },
                Stage::Store {
                    buffer,
                    vars: vs,
                    index,
                    value,
                } => Stage::Store {
                    buffer: fb(*buffer),
                    vars: vars(vs),
                    index: index.iter().map(fi).collect(),
                    value: fe(value),
                },
            })
            .collect();
        LoopNest { space, stages }
    }

    /// The nest with each stage's expression rebuilt by `f`, all else unchanged.
    pub fn map_exprs(&self, f: &dyn Fn(&Expr) -> Expr) -> LoopNest {
        self.map_stages(self.space.clone(), f, &|i| i.clone(), &|b| b, &|v| v)
    }
}

/// A kernel's body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Loops(LoopNest),
    /// A graph function run by the runtime: its parameters are the kernel's inputs, its
    /// results its outputs, in order.
    Call(Box<Function>),
}

/// One kernel: the buffers it reads and writes, and its body.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub name: String,
    pub kind: KernelKind,
    pub inputs: Vec<BufferId>,
    pub outputs: Vec<BufferId>,
    pub body: Body,
    /// The source nodes fused into it (their `loc` names), for reports and errors.
    pub sources: Vec<String>,
}

/// A program: buffers, kernels in execution order, inputs and outputs.
#[derive(Debug, Clone)]
pub struct KernelProgram {
    pub name: String,
    pub buffers: Vec<Buffer>,
    /// The input buffers, in parameter order.
    pub inputs: Vec<BufferId>,
    /// The output buffers (any storage), in result order, with their result names.
    pub outputs: Vec<(String, BufferId)>,
    pub kernels: Vec<Kernel>,
}

impl KernelProgram {
    pub fn new(name: impl Into<String>) -> Self {
        KernelProgram {
            name: name.into(),
            buffers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            kernels: Vec::new(),
        }
    }

    /// Whether `t` fits input buffer `b` (its element type and shape), else what is wrong.
    pub fn check_input(&self, b: BufferId, t: &Tensor) -> Result<(), String> {
        let buf = self.buffer(b);
        if t.dtype() != buf.dtype || t.shape() != buf.shape.as_slice() {
            return Err(format!(
                "input %{} must be {}{:?}, got {}{:?}",
                buf.name,
                buf.dtype,
                buf.shape,
                t.dtype(),
                t.shape()
            ));
        }
        Ok(())
    }

    /// Add a buffer; returns its id.
    pub fn add_buffer(&mut self, b: Buffer) -> BufferId {
        self.buffers.push(b);
        BufferId(self.buffers.len() as u32 - 1)
    }

    pub fn buffer(&self, id: BufferId) -> &Buffer {
        &self.buffers[id.index()]
    }

    /// The bytes of temporaries (an upper bound on the arena without reuse).
    pub fn temp_bytes(&self) -> usize {
        self.buffers
            .iter()
            .filter(|b| matches!(b.storage, Storage::Temp))
            .map(|b| b.span() * b.dtype.size_bytes())
            .sum()
    }

    /// How many kernels of each kind, in [`KernelKind`] order, kinds present only.
    pub fn kernel_counts(&self) -> Vec<(KernelKind, usize)> {
        let kinds = [
            KernelKind::Elementwise,
            KernelKind::Movement,
            KernelKind::Reduction,
            KernelKind::Matmul,
            KernelKind::Conv,
            KernelKind::Pool,
            KernelKind::Call,
        ];
        kinds
            .into_iter()
            .map(|k| (k, self.kernels.iter().filter(|x| x.kind == k).count()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
