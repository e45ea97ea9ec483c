//! The core op set.
//!
//! Every ONNX op the frontend accepts decomposes into these ops, and every backend
//! implements all of them. Each op is documented with its operands, attributes,
//! result types (the shape rule lives in [`crate::infer`]) and semantics (the
//! reference semantics are [`crate::interp`]'s). Axes in attributes are always
//! non-negative and in range; the frontend normalizes ONNX's negative axes.
//!
//! The text form of an op is its [`Op::name`] followed by its operands and an
//! attribute dictionary produced by [`Op::attrs`]; [`Op::from_attrs`] is the inverse.

use std::fmt;

use crate::composite::CompositeOp;
use crate::dtype::DType;
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Elementwise unary functions: `%y = NAME(%x)`, result type = operand type
/// except for `is_nan`/`is_inf` (bool result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// `-x`; integers wrap (`-MIN == MIN`). Not on bool.
    Neg,
    /// `|x|`; integers wrap (`abs(MIN) == MIN`). Not on bool.
    Abs,
    /// -1, 0 or 1 (NaN stays NaN; unsigned gives 0 or 1). Not on bool.
    Sign,
    /// Logical not on bool, bitwise not on integers. Not on floats.
    Not,
    /// Float only, as are all the transcendental ops below.
    Exp,
    Log,
    Sqrt,
    /// `1 / sqrt(x)`.
    Rsqrt,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    /// The Gauss error function.
    Erf,
    /// `1 / (1 + exp(-x))`.
    Logistic,
    /// Floor, ceil and round are float only; `round` rounds half to even (numpy's rint).
    Floor,
    Ceil,
    Round,
    /// Float in, bool out; integer operands give false.
    IsNan,
    /// True for +inf and -inf. Float in, bool out; integer operands give false.
    IsInf,
}

/// Elementwise binary functions: `%z = NAME(%x, %y)`. Operands have the same
/// element type and numpy-broadcast shapes; the result has the broadcast shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    /// Integers wrap on overflow (two's complement). Not on bool.
    Add,
    Sub,
    Mul,
    /// Floats: IEEE division. Integers: truncating division (C semantics, not numpy's floor);
    /// division by zero gives 0 and `MIN / -1` wraps to `MIN`. Not on bool.
    Div,
    /// Remainder with the sign of the dividend (C `fmod` / Rust `%`); `x rem 0` gives 0 for
    /// integers and NaN for floats. Not on bool.
    Rem,
    /// Floats: `powf`. Integers: exact power by squaring with wrapping; a negative exponent
    /// gives `1/x` truncated (0 unless |x| == 1). Not on bool.
    Pow,
    /// Maximum and minimum propagate NaN (numpy's `maximum`/`minimum`). Bool: or / and.
    Max,
    Min,
    /// Logical on bool, bitwise on integers. Not on floats.
    And,
    Or,
    Xor,
    /// Shifts on integers only; a shift count outside `0..bits` gives 0 (or -1 for an
    /// arithmetic right shift of a negative value). Right shift is arithmetic on signed types.
    ShiftLeft,
    ShiftRight,
}

/// Elementwise comparisons: operands as for [`BinaryOp`], bool result.
/// Any comparison with NaN is false except `ne`, which is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The combining function of a reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    /// Identity 0; integers wrap. Bool: logical or.
    Sum,
    /// Identity 1; integers wrap. Bool: logical and.
    Prod,
    /// Identity: the type's lowest value (-inf for floats). Propagates NaN.
    Max,
    /// Identity: the type's highest value (+inf for floats). Propagates NaN.
    Min,
}

/// What `scatter` does with the values already in the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScatterMode {
    /// Overwrite; with duplicate indices the last update (in index order) wins.
    Replace,
    Add,
    Mul,
    Max,
    Min,
}

/// A core op with its attributes. See the variant docs for operands and semantics.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `constant() {value=...}`: no operands; the result is `value`.
    Constant { value: Tensor },
    /// `iota() {dtype, shape, axis}`: a tensor whose element at index `i` is `i[axis]`.
    Iota {
        dtype: DType,
        shape: Shape,
        axis: usize,
    },
    /// Elementwise unary function.
    Unary(UnaryOp),
    /// Elementwise binary function with numpy broadcasting.
    Binary(BinaryOp),
    /// Elementwise comparison with numpy broadcasting; bool result.
    Compare(CompareOp),
    /// `select(%cond, %a, %b)`: `cond ? a : b` elementwise; `cond` is bool; all three
    /// broadcast (numpy) to the result shape; `a` and `b` have the result's type.
    Select,
    /// `convert(%x) {to}`: element type conversion. Float to float and int to float round to
    /// nearest even; float to int truncates toward zero and saturates (NaN gives 0); int to int
    /// wraps (two's complement); bool is 0/1; anything to bool is `x != 0` (NaN is true).
    /// Into a float8 type (`f8e4m3fn`, `f8e4m3fnuz`, `f8e5m2`, `f8e5m2fnuz`), the exact value
    /// rounds once to nearest even, and a finite value beyond the type's largest magnitude
    /// saturates to ±max; ±inf stays ±inf in `f8e5m2` and saturates to ±max in the types
    /// without infinities; NaN gives NaN; -0 and negative values rounding to zero give +0 in
    /// the `fnuz` types, which have no -0 ([`crate::float8::Overflow::ClampFinite`]). ONNX's
    /// `Cast` rules (`saturate`) are decomposed onto this by the frontend. Into a CFP8 type
    /// (`cf8e4m3`, `cf8e5m2`: no inf, no NaN), the same rounding, ±inf saturates to ±max and
    /// NaN gives +0 (as into an integer type); -0 stays -0.
    Convert { to: DType },
    /// `broadcast(%x) {shape}`: numpy broadcast of `x` to `shape` (ONNX Expand without the
    /// max rule: `shape` must be the broadcast of itself and the operand's shape).
    Broadcast { shape: Shape },
    /// `reshape(%x) {shape}`: same elements in row-major order, another shape with the same count.
    Reshape { shape: Shape },
    /// `transpose(%x) {perm}`: result dim `i` is operand dim `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// `slice(%x) {start, limit, stride}`: elements `start[d] <= i < limit[d]` with step
    /// `stride[d] >= 1` on every dim; `start <= limit <= dim`. Result dim: `ceil((limit-start)/stride)`.
    Slice {
        start: Vec<usize>,
        limit: Vec<usize>,
        stride: Vec<usize>,
    },
    /// `reverse(%x) {axes}`: reverses the order of elements along each axis in `axes`.
    Reverse { axes: Vec<usize> },
    /// `concat(%x, ...) {axis}`: one or more operands of equal type except along `axis`.
    Concat { axis: usize },
    /// `pad(%x, %value) {low, high, interior}`: `value` is a scalar of `x`'s type; `low[d]`/`high[d]`
    /// elements added before/after dim `d` (negative values crop), `interior[d]` between elements.
    /// Result dim: `low + high + d + max(d-1, 0) * interior`, which must be >= 0.
    Pad {
        low: Vec<i64>,
        high: Vec<i64>,
        interior: Vec<usize>,
    },
    /// `gather(%x, %indices) {axis}`: ONNX Gather. `indices` is any integer type; a negative
    /// index counts from the end; an index out of range is a run-time error. Result shape:
    /// `x.shape[..axis] ++ indices.shape ++ x.shape[axis+1..]`.
    Gather { axis: usize },
    /// `scatter(%x, %indices, %updates) {mode}`: row scatter along dim 0. `x` is `[N, R...]`,
    /// `indices` is an integer vector `[M]` (negative counts from the end, out of range is a
    /// run-time error), `updates` is `[M, R...]`; row `indices[m]` of the result is
    /// `mode(x[indices[m]], updates[m])`, applied in order of `m`. Result: `x`'s type.
    /// ONNX ScatterND and ScatterElements linearize their indices into this form.
    Scatter { mode: ScatterMode },
    /// `reduce_KIND(%x) {axes, keep_dims}`: reduces over `axes` (distinct, any order; empty means
    /// identity). With `keep_dims` the reduced dims stay with extent 1. A reduction over an empty
    /// dim gives the identity.
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// `argmax(%x)` / `argmin(%x) {axis, keep_dims, select_last}`: i64 index of the max/min along
    /// `axis`; ties pick the first index, or the last with `select_last`; NaN counts as the max
    /// (argmax) and the min (argmin), first NaN wins. The axis must be non-empty.
    ArgReduce {
        is_max: bool,
        axis: usize,
        keep_dims: bool,
        select_last: bool,
    },
    /// `cumsum`/`cumprod`/`cummax`/`cummin(%x) {axis, exclusive, reverse}`: running reduction along
    /// `axis`; `exclusive` shifts by one (starting at the identity); `reverse` runs from the end.
    Cumulative {
        kind: ReduceKind,
        axis: usize,
        exclusive: bool,
        reverse: bool,
    },
    /// `dot_general(%lhs, %rhs) {lhs_batch, rhs_batch, lhs_contract, rhs_contract}`: a general
    /// tensor contraction (StableHLO). Result dims: batch dims (in `lhs_batch` order), then the
    /// remaining lhs dims, then the remaining rhs dims, each in order. Same element type on both
    /// sides and in the result. The interpreter accumulates float sums (f32, f16, bf16 too) in
    /// f64 and rounds once at the end; integers wrap in their own type.
    DotGeneral {
        lhs_batch: Vec<usize>,
        rhs_batch: Vec<usize>,
        lhs_contract: Vec<usize>,
        rhs_contract: Vec<usize>,
    },
    /// `conv(%x, %w) {stride, pad_low, pad_high, lhs_dilation, rhs_dilation, groups}`: N-d
    /// convolution (cross-correlation) in NC(spatial) layout. `x` is `[N, C, s...]`, `w` is
    /// `[O, C/groups, k...]`, result `[N, O, o...]` with, per spatial dim,
    /// `o = floor((((s-1)*lhs_dilation + 1) + pad_low + pad_high - ((k-1)*rhs_dilation + 1)) / stride) + 1`
    /// (floor division; an empty input has dilated extent 0; `o` may be 0, a negative `o` is an
    /// error). `lhs_dilation` > 1 inserts zeros between input elements (transposed convolution).
    /// Negative padding crops. `O` must be divisible by `groups`.
    Conv {
        stride: Vec<usize>,
        pad_low: Vec<i64>,
        pad_high: Vec<i64>,
        lhs_dilation: Vec<usize>,
        rhs_dilation: Vec<usize>,
        groups: usize,
    },
    /// `reduce_window_KIND(%x) {window, stride, dilation, pad_low, pad_high}`: pooling over every
    /// dim of `x` (use window 1 on batch/channel dims). Padding holds the reduction's identity
    /// (so it never wins a max). Result dim as for conv (with `lhs_dilation` 1).
    ReduceWindow {
        kind: ReduceKind,
        window: Vec<usize>,
        stride: Vec<usize>,
        dilation: Vec<usize>,
        pad_low: Vec<usize>,
        pad_high: Vec<usize>,
    },
    /// `sort(%x) {axis, descending}`: two results, the sorted values and their i64 indices
    /// along `axis`. Stable: equal values keep their order. NaN sorts after every number
    /// ascending and before every number descending.
    Sort { axis: usize, descending: bool },
    /// `if(%cond) : T... { then-region } { else-region }`: `cond` is a bool scalar (or any
    /// one-element bool tensor); runs one region (no parameters) and returns its results.
    /// Regions may use values defined outside them.
    If,
    /// `loop(%max_trip, %cond, %v...) : T... { (%i, %c, %v...) { ... yield %c2, %v2..., %s... } }`:
    /// ONNX Loop. `max_trip` is an i64 scalar, `cond` a bool scalar. The body runs while
    /// `i < max_trip && cond`; it gets the iteration number, the condition and the carried
    /// values, and yields the next condition, the next carried values and zero or more scan
    /// values. Results: the final carried values, then each scan value stacked along a new
    /// leading dim (one row per iteration).
    Loop,
    /// A composite op (softmax, layer_norm, rms_norm, gelu, silu, attention, ...): one unit a
    /// backend may lower fused, defined by its decomposition into the ops above. Its text form
    /// is the composite's own name (`softmax(%x) {axes=[1]}`); see [`crate::composite`].
    Composite(CompositeOp),
}

/// An attribute value in the text form.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Bool(bool),
    DType(DType),
    Shape(Shape),
    Tensor(Tensor),
    /// An enumerated keyword, e.g. a scatter mode.
    Ident(String),
    /// A float, e.g. an epsilon. Printed as the shortest decimal that reads back to the same
    /// f64 (always with a `.` or an exponent, so it never reads back as an integer); `inf`,
    /// `-inf` and `nan` print as such (a NaN's payload is not kept; no op accepts one).
    Float(f64),
}

impl fmt::Display for UnaryOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! named_enum {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),*];
            pub fn name(self) -> &'static str {
                match self { $($ty::$variant => $name),* }
            }
            pub fn from_name(s: &str) -> Option<$ty> {
                match s { $($name => Some($ty::$variant),)* _ => None }
            }
        }
    };
}

named_enum!(UnaryOp {
    Neg => "neg", Abs => "abs", Sign => "sign", Not => "not", Exp => "exp", Log => "log",
    Sqrt => "sqrt", Rsqrt => "rsqrt", Sin => "sin", Cos => "cos", Tan => "tan", Asin => "asin",
    Acos => "acos", Atan => "atan", Sinh => "sinh", Cosh => "cosh", Tanh => "tanh",
    Asinh => "asinh", Acosh => "acosh", Atanh => "atanh", Erf => "erf", Logistic => "logistic",
    Floor => "floor", Ceil => "ceil", Round => "round", IsNan => "is_nan", IsInf => "is_inf",
});

named_enum!(BinaryOp {
    Add => "add", Sub => "sub", Mul => "mul", Div => "div", Rem => "rem", Pow => "pow",
    Max => "max", Min => "min", And => "and", Or => "or", Xor => "xor",
    ShiftLeft => "shift_left", ShiftRight => "shift_right",
});

named_enum!(CompareOp {
    Eq => "eq", Ne => "ne", Lt => "lt", Le => "le", Gt => "gt", Ge => "ge",
});

named_enum!(ReduceKind { Sum => "sum", Prod => "prod", Max => "max", Min => "min" });

named_enum!(ScatterMode {
    Replace => "replace", Add => "add", Mul => "mul", Max => "max", Min => "min",
});

/// Why an op could not be built from its text-form name and attributes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("unknown op `{0}`")]
    UnknownOp(String),
    #[error("op `{op}` is missing attribute `{attr}`")]
    MissingAttr { op: String, attr: &'static str },
    #[error("op `{op}`: attribute `{attr}` {problem}")]
    BadAttr {
        op: String,
        attr: String,
        problem: String,
    },
}

impl Op {
    /// The op's name in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Constant { .. } => "constant",
            Op::Iota { .. } => "iota",
            Op::Unary(u) => u.name(),
            Op::Binary(b) => b.name(),
            Op::Compare(c) => c.name(),
            Op::Select => "select",
            Op::Convert { .. } => "convert",
            Op::Broadcast { .. } => "broadcast",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Slice { .. } => "slice",
            Op::Reverse { .. } => "reverse",
            Op::Concat { .. } => "concat",
            Op::Pad { .. } => "pad",
            Op::Gather { .. } => "gather",
            Op::Scatter { .. } => "scatter",
            Op::Reduce { kind, .. } => match kind {
                ReduceKind::Sum => "reduce_sum",
                ReduceKind::Prod => "reduce_prod",
                ReduceKind::Max => "reduce_max",
                ReduceKind::Min => "reduce_min",
            },
            Op::ArgReduce { is_max: true, .. } => "argmax",
            Op::ArgReduce { is_max: false, .. } => "argmin",
            Op::Cumulative { kind, .. } => match kind {
                ReduceKind::Sum => "cumsum",
                ReduceKind::Prod => "cumprod",
                ReduceKind::Max => "cummax",
                ReduceKind::Min => "cummin",
            },
            Op::DotGeneral { .. } => "dot_general",
            Op::Conv { .. } => "conv",
            Op::ReduceWindow { kind, .. } => match kind {
                ReduceKind::Sum => "reduce_window_sum",
                ReduceKind::Prod => "reduce_window_prod",
                ReduceKind::Max => "reduce_window_max",
                ReduceKind::Min => "reduce_window_min",
            },
            Op::Sort { .. } => "sort",
            Op::If => "if",
            Op::Loop => "loop",
            Op::Composite(c) => c.name(),
        }
    }

    /// Number of regions the op carries.
    pub fn num_regions(&self) -> usize {
        match self {
            Op::If => 2,
            Op::Loop => 1,
            _ => 0,
        }
    }

    /// Is this an elementwise op (unary, binary, compare, select, convert)?
    pub fn is_elementwise(&self) -> bool {
        matches!(
            self,
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::Convert { .. }
        )
    }

    /// The attributes in their text-form order.
    pub fn attrs(&self) -> Vec<(&'static str, Attr)> {
        fn ints<T: Copy + TryInto<i64>>(v: &[T]) -> Attr {
            Attr::Ints(
                v.iter()
                    .map(|&x| x.try_into().unwrap_or(i64::MAX))
                    .collect(),
            )
        }
        match self {
            Op::Constant { value } => vec![("value", Attr::Tensor(value.clone()))],
            Op::Iota { dtype, shape, axis } => vec![
                ("dtype", Attr::DType(*dtype)),
                ("shape", Attr::Shape(shape.clone())),
                ("axis", Attr::Int(*axis as i64)),
            ],
            Op::Unary(_) | Op::Binary(_) | Op::Compare(_) | Op::Select | Op::If | Op::Loop => {
                vec![]
            }
            Op::Convert { to } => vec![("to", Attr::DType(*to))],
            Op::Broadcast { shape } | Op::Reshape { shape } => {
                vec![("shape", Attr::Shape(shape.clone()))]
            }
            Op::Transpose { perm } => vec![("perm", ints(perm))],
            Op::Slice {
                start,
                limit,
                stride,
            } => vec![
                ("start", ints(start)),
                ("limit", ints(limit)),
                ("stride", ints(stride)),
            ],
            Op::Reverse { axes } => vec![("axes", ints(axes))],
            Op::Concat { axis } | Op::Gather { axis } => vec![("axis", Attr::Int(*axis as i64))],
            Op::Pad {
                low,
                high,
                interior,
            } => vec![
                ("low", ints(low)),
                ("high", ints(high)),
                ("interior", ints(interior)),
            ],
            Op::Scatter { mode } => vec![("mode", Attr::Ident(mode.name().into()))],
            Op::Reduce {
                axes, keep_dims, ..
            } => {
                vec![("axes", ints(axes)), ("keep_dims", Attr::Bool(*keep_dims))]
            }
            Op::ArgReduce {
                axis,
                keep_dims,
                select_last,
                ..
            } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("keep_dims", Attr::Bool(*keep_dims)),
                ("select_last", Attr::Bool(*select_last)),
            ],
            Op::Cumulative {
                axis,
                exclusive,
                reverse,
                ..
            } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("exclusive", Attr::Bool(*exclusive)),
                ("reverse", Attr::Bool(*reverse)),
            ],
            Op::DotGeneral {
                lhs_batch,
                rhs_batch,
                lhs_contract,
                rhs_contract,
            } => vec![
                ("lhs_batch", ints(lhs_batch)),
                ("rhs_batch", ints(rhs_batch)),
                ("lhs_contract", ints(lhs_contract)),
                ("rhs_contract", ints(rhs_contract)),
            ],
            Op::Conv {
                stride,
                pad_low,
                pad_high,
                lhs_dilation,
                rhs_dilation,
                groups,
            } => vec![
                ("stride", ints(stride)),
                ("pad_low", ints(pad_low)),
                ("pad_high", ints(pad_high)),
                ("lhs_dilation", ints(lhs_dilation)),
                ("rhs_dilation", ints(rhs_dilation)),
                ("groups", Attr::Int(*groups as i64)),
            ],
            Op::ReduceWindow {
                window,
                stride,
                dilation,
                pad_low,
                pad_high,
                ..
            } => vec![
                ("window", ints(window)),
                ("stride", ints(stride)),
                ("dilation", ints(dilation)),
                ("pad_low", ints(pad_low)),
                ("pad_high", ints(pad_high)),
            ],
            Op::Sort { axis, descending } => vec![
                ("axis", Attr::Int(*axis as i64)),
                ("descending", Attr::Bool(*descending)),
            ],
            Op::Composite(c) => c.attrs(),
        }
    }

    /// Build an op from its text-form name and attributes (the inverse of [`Op::name`] and
    /// [`Op::attrs`]). Unknown or missing attributes are errors.
    pub fn from_attrs(name: &str, attrs: Vec<(String, Attr)>) -> Result<Op, OpError> {
        let mut a = AttrReader { op: name, attrs };
        let op = if let Some(u) = UnaryOp::from_name(name) {
            Op::Unary(u)
        } else if let Some(b) = BinaryOp::from_name(name) {
            Op::Binary(b)
        } else if let Some(c) = CompareOp::from_name(name) {
            Op::Compare(c)
        } else if let Some(kind) = name
            .strip_prefix("reduce_window_")
            .and_then(ReduceKind::from_name)
        {
            Op::ReduceWindow {
                kind,
                window: a.usizes("window")?,
                stride: a.usizes("stride")?,
                dilation: a.usizes("dilation")?,
                pad_low: a.usizes("pad_low")?,
                pad_high: a.usizes("pad_high")?,
            }
        } else if let Some(kind) = name.strip_prefix("reduce_").and_then(ReduceKind::from_name) {
            Op::Reduce {
                kind,
                axes: a.usizes("axes")?,
                keep_dims: a.bool("keep_dims")?,
            }
        } else if let Some(c) = CompositeOp::from_attrs(name, &mut a) {
            Op::Composite(c?)
        } else if let Some(kind) = name.strip_prefix("cum").and_then(ReduceKind::from_name) {
            Op::Cumulative {
                kind,
                axis: a.usize("axis")?,
                exclusive: a.bool("exclusive")?,
                reverse: a.bool("reverse")?,
            }
        } else {
            match name {
                "constant" => Op::Constant {
                    value: a.tensor("value")?,
                },
                "iota" => Op::Iota {
                    dtype: a.dtype("dtype")?,
                    shape: a.shape("shape")?,
                    axis: a.usize("axis")?,
                },
                "select" => Op::Select,
                "if" => Op::If,
                "loop" => Op::Loop,
                "convert" => Op::Convert { to: a.dtype("to")? },
                "broadcast" => Op::Broadcast {
                    shape: a.shape("shape")?,
                },
                "reshape" => Op::Reshape {
                    shape: a.shape("shape")?,
                },
                "transpose" => Op::Transpose {
                    perm: a.usizes("perm")?,
                },
                "slice" => Op::Slice {
                    start: a.usizes("start")?,
                    limit: a.usizes("limit")?,
                    stride: a.usizes("stride")?,
                },
                "reverse" => Op::Reverse {
                    axes: a.usizes("axes")?,
                },
                "concat" => Op::Concat {
                    axis: a.usize("axis")?,
                },
                "pad" => Op::Pad {
                    low: a.ints("low")?,
                    high: a.ints("high")?,
                    interior: a.usizes("interior")?,
                },
                "gather" => Op::Gather {
                    axis: a.usize("axis")?,
                },
                "scatter" => {
                    let m = a.ident("mode")?;
                    let mode = ScatterMode::from_name(&m).ok_or_else(|| {
                        a.bad("mode", "is not one of replace, add, mul, max, min")
                    })?;
                    Op::Scatter { mode }
                }
                "argmax" | "argmin" => Op::ArgReduce {
                    is_max: name == "argmax",
                    axis: a.usize("axis")?,
                    keep_dims: a.bool("keep_dims")?,
                    select_last: a.bool("select_last")?,
                },
                "dot_general" => Op::DotGeneral {
                    lhs_batch: a.usizes("lhs_batch")?,
                    rhs_batch: a.usizes("rhs_batch")?,
                    lhs_contract: a.usizes("lhs_contract")?,
                    rhs_contract: a.usizes("rhs_contract")?,
                },
                "conv" => Op::Conv {
                    stride: a.usizes("stride")?,
                    pad_low: a.ints("pad_low")?,
                    pad_high: a.ints("pad_high")?,
                    lhs_dilation: a.usizes("lhs_dilation")?,
                    rhs_dilation: a.usizes("rhs_dilation")?,
                    groups: a.usize("groups")?,
                },
                "sort" => Op::Sort {
                    axis: a.usize("axis")?,
                    descending: a.bool("descending")?,
                },
                _ => return Err(OpError::UnknownOp(name.to_string())),
            }
        };
        a.finish()?;
        Ok(op)
    }
}

/// Takes attributes out of a parsed attribute list by name, with typed errors.
pub(crate) struct AttrReader<'a> {
    op: &'a str,
    attrs: Vec<(String, Attr)>,
}

impl AttrReader<'_> {
    pub(crate) fn bad(&self, attr: &str, problem: &str) -> OpError {
        OpError::BadAttr {
            op: self.op.into(),
            attr: attr.into(),
            problem: problem.into(),
        }
    }

    fn take(&mut self, attr: &'static str) -> Result<Attr, OpError> {
        let i = self
            .attrs
            .iter()
            .position(|(k, _)| k == attr)
            .ok_or(OpError::MissingAttr {
                op: self.op.into(),
                attr,
            })?;
        Ok(self.attrs.remove(i).1)
    }

    fn int(&mut self, attr: &'static str) -> Result<i64, OpError> {
        match self.take(attr)? {
            Attr::Int(v) => Ok(v),
            _ => Err(self.bad(attr, "must be an integer")),
        }
    }

    fn usize(&mut self, attr: &'static str) -> Result<usize, OpError> {
        let v = self.int(attr)?;
        usize::try_from(v).map_err(|_| self.bad(attr, "must be a non-negative integer"))
    }

    fn ints(&mut self, attr: &'static str) -> Result<Vec<i64>, OpError> {
        match self.take(attr)? {
            Attr::Ints(v) => Ok(v),
            _ => Err(self.bad(attr, "must be a list of integers")),
        }
    }

    pub(crate) fn usizes(&mut self, attr: &'static str) -> Result<Vec<usize>, OpError> {
        let v = self.ints(attr)?;
        v.into_iter()
            .map(|x| {
                usize::try_from(x).map_err(|_| self.bad(attr, "must hold non-negative integers"))
            })
            .collect()
    }

    /// A float attribute; an integer is accepted as its value.
    pub(crate) fn float(&mut self, attr: &'static str) -> Result<f64, OpError> {
        match self.take(attr)? {
            Attr::Float(v) => Ok(v),
            Attr::Int(v) => Ok(v as f64),
            _ => Err(self.bad(attr, "must be a number")),
        }
    }

    fn bool(&mut self, attr: &'static str) -> Result<bool, OpError> {
        match self.take(attr)? {
            Attr::Bool(v) => Ok(v),
            _ => Err(self.bad(attr, "must be true or false")),
        }
    }

    fn dtype(&mut self, attr: &'static str) -> Result<DType, OpError> {
        match self.take(attr)? {
            Attr::DType(v) => Ok(v),
            _ => Err(self.bad(attr, "must be an element type")),
        }
    }

    fn shape(&mut self, attr: &'static str) -> Result<Shape, OpError> {
        match self.take(attr)? {
            Attr::Shape(v) => Ok(v),
            // `[1,2]` parses as a list of ints; accept it as a static shape.
            Attr::Ints(v) => v
                .into_iter()
                .map(|x| usize::try_from(x).map(crate::shape::Dim::Static))
                .collect::<Result<Vec<_>, _>>()
                .map(Shape)
                .map_err(|_| self.bad(attr, "must be a shape")),
            _ => Err(self.bad(attr, "must be a shape")),
        }
    }

    fn tensor(&mut self, attr: &'static str) -> Result<Tensor, OpError> {
        match self.take(attr)? {
            Attr::Tensor(v) => Ok(v),
            _ => Err(self.bad(attr, "must be a tensor literal")),
        }
    }

    pub(crate) fn ident(&mut self, attr: &'static str) -> Result<String, OpError> {
        match self.take(attr)? {
            Attr::Ident(v) => Ok(v),
            _ => Err(self.bad(attr, "must be a keyword")),
        }
    }

    fn finish(self) -> Result<(), OpError> {
        match self.attrs.first() {
            None => Ok(()),
            Some((k, _)) => Err(OpError::BadAttr {
                op: self.op.into(),
                attr: k.clone(),
                problem: "is not an attribute of this op".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<&str> = UnaryOp::ALL.iter().map(|u| u.name()).collect();
        names.extend(BinaryOp::ALL.iter().map(|b| b.name()));
        names.extend(CompareOp::ALL.iter().map(|c| c.name()));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn attrs_round_trip() {
        let ops = vec![
            Op::Reduce {
                kind: ReduceKind::Max,
                axes: vec![0, 2],
                keep_dims: true,
            },
            Op::Cumulative {
                kind: ReduceKind::Prod,
                axis: 1,
                exclusive: true,
                reverse: false,
            },
            Op::ReduceWindow {
                kind: ReduceKind::Sum,
                window: vec![1, 1, 2, 2],
                stride: vec![1, 1, 2, 2],
                dilation: vec![1; 4],
                pad_low: vec![0; 4],
                pad_high: vec![0, 0, 1, 1],
            },
            Op::Scatter {
                mode: ScatterMode::Add,
            },
            Op::Unary(UnaryOp::IsInf),
            Op::Binary(BinaryOp::ShiftRight),
            Op::ArgReduce {
                is_max: false,
                axis: 0,
                keep_dims: false,
                select_last: true,
            },
            Op::Pad {
                low: vec![-1],
                high: vec![2],
                interior: vec![1],
            },
        ];
        for op in ops {
            let attrs = op
                .attrs()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(Op::from_attrs(op.name(), attrs).unwrap(), op);
        }
    }

    #[test]
    fn attr_errors() {
        assert!(matches!(
            Op::from_attrs("frobnicate", vec![]),
            Err(OpError::UnknownOp(_))
        ));
        assert!(matches!(
            Op::from_attrs("concat", vec![]),
            Err(OpError::MissingAttr { .. })
        ));
        let extra = vec![
            ("axis".into(), Attr::Int(0)),
            ("bogus".into(), Attr::Int(1)),
        ];
        assert!(matches!(
            Op::from_attrs("concat", extra),
            Err(OpError::BadAttr { .. })
        ));
        let neg = vec![("axis".into(), Attr::Int(-1))];
        assert!(matches!(
            Op::from_attrs("concat", neg),
            Err(OpError::BadAttr { .. })
        ));
    }
}
