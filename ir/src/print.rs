//! The text-form printer.
//!
//! [`print_module`] and [`print_function`] (and the `Display` impls of [`Module`] and
//! [`Function`], which use them) write the canonical text form of the IR. The format itself —
//! lexical rules, grammar, and what the parser checks — is specified in [`crate::parse`],
//! which reads it back: `print(parse(print(m))) == print(m)` for every module.
//!
//! The printer is the format's canonical writer: one op per line, two spaces of indentation per
//! nesting level, `, ` between list items, types without spaces (`f32[N,128]`), names quoted only
//! when they must be, and floats in the shortest form that parses back to the same bits.
//!
//! The printer never panics, even on a malformed graph, so that broken graphs can be shown in
//! error messages: a value id missing from the function's table prints as `%<invalid #N>` with
//! type `?`, which the parser rejects.

use std::convert::identity;
use std::fmt::{self, Write};

use half::{bf16, f16};

use crate::float8::{CF8E4M3, CF8E5M2, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, Float8, Overflow};
use crate::graph::{Function, Module, Node, Region, TensorType, ValueId};
use crate::op::Attr;
use crate::shape::Dim;
use crate::tensor::{Element, Tensor};
use crate::with_data;

/// Options of [`print_module_with`] and [`print_function_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrintOptions {
    /// Print a constant of more than this many elements as `dense<TYPE> elided`, to keep dumps
    /// of real models readable. For display only: the parser rejects elided constants.
    /// `None` (the default) prints every element.
    pub elide_constants_above: Option<usize>,
}

/// The text form of a module: its functions, separated by blank lines.
pub fn print_module(m: &Module) -> String {
    print_module_with(m, &PrintOptions::default())
}

/// The text form of a module, with options.
pub fn print_module_with(m: &Module, opts: &PrintOptions) -> String {
    to_string(|w| write_module(w, m, opts))
}

/// The text form of one function (ending with a line break).
pub fn print_function(f: &Function) -> String {
    print_function_with(f, &PrintOptions::default())
}

/// The text form of one function, with options.
pub fn print_function_with(f: &Function, opts: &PrintOptions) -> String {
    to_string(|w| write_function(w, f, opts))
}

/// A value's name as the text form writes it, `%` included: `%x`, `%0`, `%"odd name"`.
pub fn print_value_name(name: &str) -> String {
    format!("%{}", print_name(name))
}

/// A value, output or function name without its sigil: bare (`x`, `0`) or quoted (`"a b"`).
pub(crate) fn print_name(name: &str) -> String {
    to_string(|w| write_name(w, name))
}

/// `s` as a string literal.
pub(crate) fn print_quoted(s: &str) -> String {
    to_string(|w| write_quoted(w, s))
}

/// A type as the text form writes it: `f32[N,128]`, `i64[]`, `f32["batch size",3]`.
/// (Unlike `TensorType`'s `Display`, symbolic dims that are not identifiers are quoted.)
pub fn print_type(ty: &TensorType) -> String {
    to_string(|w| write_type(w, ty))
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_module(f, self, &PrintOptions::default())
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_function(f, self, &PrintOptions::default())
    }
}

/// What `write` writes, as a string.
fn to_string(write: impl FnOnce(&mut String) -> fmt::Result) -> String {
    let mut out = String::new();
    write(&mut out).expect("writing to a String cannot fail");
    out
}

fn write_module<W: Write>(w: &mut W, m: &Module, opts: &PrintOptions) -> fmt::Result {
    for (i, f) in m.functions.iter().enumerate() {
        if i > 0 {
            w.write_char('\n')?;
        }
        write_function(w, f, opts)?;
    }
    Ok(())
}

fn write_function<W: Write>(w: &mut W, f: &Function, opts: &PrintOptions) -> fmt::Result {
    Printer { w, f, opts }.function()
}

// ---------------------------------------------------------------------------------------------
// Names and strings (shared with the parser's lexer)

/// Can `c` start an identifier (`[A-Za-z_]`)?
pub(crate) fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

/// Can `c` continue an identifier (`[A-Za-z0-9_.]`)?
pub(crate) fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Does `s` match `[A-Za-z_][A-Za-z0-9_.]*`?
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_ident_start) && chars.all(is_ident_continue)
}

/// Can a value, output or function name be written without quotes: an identifier, or a
/// non-empty string of ASCII digits (`%0`)?
pub(crate) fn is_bare_name(s: &str) -> bool {
    is_identifier(s) || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// A string literal: `"..."` with `\"`, `\\`, `\n`, `\t`, and `\u{HEX}` for other control chars.
fn write_quoted<W: Write>(w: &mut W, s: &str) -> fmt::Result {
    w.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => w.write_str("\\\"")?,
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\t' => w.write_str("\\t")?,
            c if c.is_control() => write!(w, "\\u{{{:x}}}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char('"')
}

/// A value, output or function name (without its sigil), quoted when it is not bare.
fn write_name<W: Write>(w: &mut W, name: &str) -> fmt::Result {
    if is_bare_name(name) {
        w.write_str(name)
    } else {
        write_quoted(w, name)
    }
}

/// A dim: an integer, a symbol that is an identifier, or a quoted symbol.
fn write_dim<W: Write>(w: &mut W, d: &Dim) -> fmt::Result {
    match d {
        Dim::Static(n) => write!(w, "{n}"),
        Dim::Sym(s) if is_identifier(s) => w.write_str(s),
        Dim::Sym(s) => write_quoted(w, s),
    }
}

fn write_type<W: Write>(w: &mut W, ty: &TensorType) -> fmt::Result {
    w.write_str(ty.dtype.name())?;
    w.write_char('[')?;
    write_sep(w, ty.shape.dims(), ",", write_dim)?;
    w.write_char(']')
}

/// `items` written with `item`, separated by `sep`.
fn write_sep<W: Write, T>(
    w: &mut W,
    items: &[T],
    sep: &str,
    mut item: impl FnMut(&mut W, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            w.write_str(sep)?;
        }
        item(w, x)?;
    }
    Ok(())
}

/// `[a, b, c]`
fn write_list<W: Write, T>(
    w: &mut W,
    items: &[T],
    item: impl FnMut(&mut W, &T) -> fmt::Result,
) -> fmt::Result {
    w.write_char('[')?;
    write_sep(w, items, ", ", item)?;
    w.write_char(']')
}

/// A float attribute: `{:?}` of a finite value (the shortest decimal that reads back to the same
/// f64, always with a `.` or an exponent), else `inf`, `-inf` or `nan`.
fn write_float_attr<W: Write>(w: &mut W, v: f64) -> fmt::Result {
    if v.is_finite() {
        write!(w, "{v:?}")
    } else if v.is_nan() {
        w.write_str("nan")
    } else if v > 0.0 {
        w.write_str("inf")
    } else {
        w.write_str("-inf")
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor literal elements

/// How elements of each element type are written in, and read from, a `dense<...>[...]`
/// literal. Both directions live here so that they stay inverse to each other.
pub(crate) trait LiteralElement: Element {
    /// Write one element.
    fn write_literal<W: Write>(self, w: &mut W) -> fmt::Result;
    /// Read one element from its text (a number, `true`/`false`, `inf`, `-inf`, `nan` or
    /// `nan(0xBITS)`); the error says why the text is not an element of this type.
    fn parse_literal(text: &str) -> Result<Self, String>;
}

/// The `0x...` of `nan(0x...)`, if `text` has that form.
fn nan_bits(text: &str) -> Option<&str> {
    text.strip_prefix("nan(0x")?.strip_suffix(')')
}

/// Floats: the shortest decimal that parses back to the same value (`{:?}` of the value, as an
/// f32 for f16/bf16, which is exact), `inf`/`-inf`, `nan` for the type's canonical NaN and
/// `nan(0xBITS)` for any other NaN, so that every bit pattern round-trips. Parsing uses the
/// parser of the `$wide` type the value is printed as (f32 for f16/bf16/float8; exact for printed
/// text), then `$from_wide`, which gives `None` for a value the type cannot hold. `$nan` is the
/// type's canonical NaN, `None` for the CFP8 types, which have no NaN (so `nan` and `nan(0x..)`
/// are refused for them, and they never print one).
///
/// The float8 types print their exact value as an f32 and read through f32 with the `convert`
/// rounding, but refuse out-of-range values (and infinities where the type has none) rather than
/// saturate them.
macro_rules! float_literal {
    ($t:ty, $bits:ty, $wide:ty, $to_wide:path, $from_wide:expr, $nan:expr) => {
        impl LiteralElement for $t {
            fn write_literal<W: Write>(self, w: &mut W) -> fmt::Result {
                let nan: Option<$t> = $nan;
                if !self.is_nan() {
                    write!(w, "{:?}", $to_wide(self))
                } else if nan.map(<$t>::to_bits) == Some(self.to_bits()) {
                    w.write_str("nan")
                } else {
                    write!(w, "nan({:#x})", self.to_bits())
                }
            }

            fn parse_literal(text: &str) -> Result<Self, String> {
                let dtype = <$t as Element>::DTYPE;
                if text == "nan" {
                    let nan: Option<$t> = $nan;
                    return nan.ok_or_else(|| format!("`{text}`: {dtype} has no NaN"));
                }
                if let Some(hex) = nan_bits(text) {
                    return <$bits>::from_str_radix(hex, 16)
                        .ok()
                        .map(<$t>::from_bits)
                        .filter(|v| v.is_nan())
                        .ok_or_else(|| {
                            format!("`{text}` is not the bit pattern of a {dtype} NaN")
                        });
                }
                text.parse::<$wide>()
                    .ok()
                    .and_then($from_wide)
                    .ok_or_else(|| format!("`{text}` is not a valid {dtype} value"))
            }
        }
    };
}

float_literal!(f64, u64, f64, identity, Some, Some(f64::NAN));
float_literal!(f32, u32, f32, identity, Some, Some(f32::NAN));
float_literal!(
    f16,
    u16,
    f32,
    f16::to_f32,
    |w| Some(f16::from_f32(w)),
    Some(f16::NAN)
);
float_literal!(
    bf16,
    u16,
    f32,
    bf16::to_f32,
    |w| Some(bf16::from_f32(w)),
    Some(bf16::NAN)
);
float_literal!(
    F8E4M3FN,
    u8,
    f32,
    F8E4M3FN::to_f32,
    f8_literal,
    Some(F8E4M3FN::NAN)
);
float_literal!(
    F8E4M3FNUZ,
    u8,
    f32,
    F8E4M3FNUZ::to_f32,
    f8_literal,
    Some(F8E4M3FNUZ::NAN)
);
float_literal!(
    F8E5M2,
    u8,
    f32,
    F8E5M2::to_f32,
    f8_literal,
    Some(F8E5M2::NAN)
);
float_literal!(
    F8E5M2FNUZ,
    u8,
    f32,
    F8E5M2FNUZ::to_f32,
    f8_literal,
    Some(F8E5M2FNUZ::NAN)
);
float_literal!(CF8E4M3, u8, f32, CF8E4M3::to_f32, f8_literal, None);
float_literal!(CF8E5M2, u8, f32, CF8E5M2::to_f32, f8_literal, None);

/// A float8 literal's value: `w` rounded to nearest even, or `None` when it is out of range
/// (or infinite) for a type without infinities, or NaN for a type without NaN.
fn f8_literal<T: Float8>(w: f32) -> Option<T> {
    let format = T::FORMAT;
    let x = w as f64;
    if x.is_nan() {
        return format.nan_bits(x.is_sign_negative()).map(T::from_bits);
    }
    let magnitude = x.abs();
    let rounds_past_max = magnitude > format.overflow_bound()
        || (magnitude == format.overflow_bound() && format.overflow_at_bound());
    (format.has_inf() || !rounds_past_max)
        .then(|| T::from_bits(format.encode(x, Overflow::Special)))
}

/// Integers: decimal, full range.
macro_rules! int_literal {
    ($($t:ty),*) => {$(
        impl LiteralElement for $t {
            fn write_literal<W: Write>(self, w: &mut W) -> fmt::Result {
                write!(w, "{self}")
            }

            fn parse_literal(text: &str) -> Result<Self, String> {
                text.parse::<$t>().map_err(|_| {
                    format!("`{text}` is not a valid {} value", <$t as Element>::DTYPE)
                })
            }
        }
    )*};
}

int_literal!(i8, i16, i32, i64, u8, u16, u32, u64);

impl LiteralElement for bool {
    fn write_literal<W: Write>(self, w: &mut W) -> fmt::Result {
        write!(w, "{self}")
    }

    fn parse_literal(text: &str) -> Result<Self, String> {
        match text {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!(
                "`{text}` is not a valid bool value (true or false)"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Functions, regions and nodes

/// Writes one function.
struct Printer<'a, W> {
    w: &'a mut W,
    f: &'a Function,
    opts: &'a PrintOptions,
}

impl<'a, W: Write> Printer<'a, W> {
    /// `func @NAME(PARAMS) -> (OUTPUTS) {`, the body, `}`.
    fn function(&mut self) -> fmt::Result {
        let f = self.f;
        self.w.write_str("func @")?;
        write_name(self.w, &f.name)?;
        self.w.write_char('(')?;
        self.decls(&f.body.params)?;
        self.w.write_str(") -> (")?;
        let outputs: Vec<(usize, ValueId)> = f.body.results.iter().copied().enumerate().collect();
        self.comma(&outputs, |p, &(i, v)| {
            // A well-formed function has one output name per result; show something anyway.
            let name = f
                .output_names
                .get(i)
                .map_or_else(|| p.name_of(v), String::as_str);
            write_name(p.w, name)?;
            p.w.write_str(": ")?;
            p.type_of(v)
        })?;
        self.w.write_str(") {\n")?;
        self.body(&f.body, 1, "return")?;
        self.w.write_str("}\n")
    }

    /// The nodes of a region and its terminator line, at `depth` levels of indentation.
    fn body(&mut self, r: &Region, depth: usize, terminator: &str) -> fmt::Result {
        for n in &r.nodes {
            self.node(n, depth)?;
        }
        self.indent(depth)?;
        self.w.write_str(terminator)?;
        if !r.results.is_empty() {
            self.w.write_char(' ')?;
            self.values(&r.results)?;
        }
        self.w.write_char('\n')
    }

    /// `RESULTS = OP(OPERANDS) {ATTRS} : TYPES REGIONS loc("NAME")` and a line break.
    fn node(&mut self, n: &Node, depth: usize) -> fmt::Result {
        self.indent(depth)?;
        if !n.outputs.is_empty() {
            self.values(&n.outputs)?;
            self.w.write_str(" = ")?;
        }
        self.w.write_str(n.op.name())?;
        self.w.write_char('(')?;
        self.values(&n.inputs)?;
        self.w.write_char(')')?;
        let attrs = n.op.attrs();
        if !attrs.is_empty() {
            self.w.write_str(" {")?;
            self.comma(&attrs, |p, (key, value)| {
                p.w.write_str(key)?;
                p.w.write_char('=')?;
                p.attr(value)
            })?;
            self.w.write_char('}')?;
        }
        if !n.outputs.is_empty() {
            self.w.write_str(" : ")?;
            self.comma(&n.outputs, |p, &v| p.type_of(v))?;
        }
        for r in &n.regions {
            self.w.write_str(" region(")?;
            self.decls(&r.params)?;
            self.w.write_str(") {\n")?;
            self.body(r, depth + 1, "yield")?;
            self.indent(depth)?;
            self.w.write_char('}')?;
        }
        if let Some(name) = &n.name {
            self.w.write_str(" loc(")?;
            write_quoted(self.w, name)?;
            self.w.write_char(')')?;
        }
        self.w.write_char('\n')
    }

    fn attr(&mut self, a: &Attr) -> fmt::Result {
        match a {
            Attr::Int(v) => write!(self.w, "{v}"),
            Attr::Ints(v) => write_list(self.w, v, |w, x| write!(w, "{x}")),
            Attr::Bool(v) => write!(self.w, "{v}"),
            Attr::DType(d) => self.w.write_str(d.name()),
            Attr::Shape(s) => write_list(self.w, s.dims(), write_dim),
            Attr::Ident(s) => self.w.write_str(s),
            Attr::Tensor(t) => self.tensor(t),
            Attr::Float(v) => write_float_attr(self.w, *v),
        }
    }

    /// `dense<TYPE>[e0, e1, ...]`, or `dense<TYPE> elided` when the options say so.
    fn tensor(&mut self, t: &Tensor) -> fmt::Result {
        self.w.write_str("dense<")?;
        self.w.write_str(t.dtype().name())?;
        self.w.write_char('[')?;
        write_sep(self.w, t.shape(), ",", |w, d| write!(w, "{d}"))?;
        self.w.write_str("]>")?;
        if self.opts.elide_constants_above.is_some_and(|n| t.len() > n) {
            return self.w.write_str(" elided");
        }
        with_data!(t.data(), v, T => write_list(self.w, v, |w, x| x.write_literal(w)))
    }

    /// `%a: f32[2], %b: i64[]`
    fn decls(&mut self, values: &[ValueId]) -> fmt::Result {
        self.comma(values, |p, &v| {
            p.value(v)?;
            p.w.write_str(": ")?;
            p.type_of(v)
        })
    }

    /// `%a, %b`
    fn values(&mut self, values: &[ValueId]) -> fmt::Result {
        self.comma(values, |p, &v| p.value(v))
    }

    /// `items` written with `item`, separated by `, `.
    fn comma<T>(
        &mut self,
        items: &[T],
        mut item: impl FnMut(&mut Self, &T) -> fmt::Result,
    ) -> fmt::Result {
        for (i, x) in items.iter().enumerate() {
            if i > 0 {
                self.w.write_str(", ")?;
            }
            item(self, x)?;
        }
        Ok(())
    }

    fn value(&mut self, v: ValueId) -> fmt::Result {
        match self.f.values.get_checked(v) {
            Some(info) => {
                self.w.write_char('%')?;
                write_name(self.w, &info.name)
            }
            None => write!(self.w, "%<invalid #{}>", v.0),
        }
    }

    fn name_of(&self, v: ValueId) -> &'a str {
        let f: &'a Function = self.f;
        f.values.get_checked(v).map_or("", |info| &info.name)
    }

    fn type_of(&mut self, v: ValueId) -> fmt::Result {
        match self.f.values.get_checked(v) {
            Some(info) => write_type(self.w, &info.ty),
            None => self.w.write_char('?'),
        }
    }

    fn indent(&mut self, depth: usize) -> fmt::Result {
        for _ in 0..depth {
            self.w.write_str("  ")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::op::{BinaryOp, Op};
    use crate::shape::Shape;

    /// `relu(x @ w + b)`, with a symbolic batch dim.
    fn mlp_layer() -> Function {
        let mut f = Function::new("mlp");
        let batch = |d: usize| Shape::new(vec![Dim::Sym("N".into()), Dim::Static(d)]);
        let x = f.add_input("x", TensorType::new(DType::F32, batch(784)));
        let w = f.add_input("w", TensorType::from_static(DType::F32, &[784, 128]));
        let b = f.add_input("b", TensorType::from_static(DType::F32, &[128]));
        let h = TensorType::new(DType::F32, batch(128));
        let mut push = |op, inputs, ty: &TensorType, name: &str, loc: &str| {
            let loc = (!loc.is_empty()).then(|| loc.to_string());
            f.push(op, inputs, vec![ty.clone()], &[name], vec![], loc)[0]
        };
        let dot = Op::DotGeneral {
            lhs_batch: vec![],
            rhs_batch: vec![],
            lhs_contract: vec![1],
            rhs_contract: vec![0],
        };
        let mm = push(dot, vec![x, w], &h, "", "MatMul_0");
        let biased = push(Op::Binary(BinaryOp::Add), vec![mm, b], &h, "", "Add_1");
        let zero = Op::Constant {
            value: Tensor::scalar(0.0f32),
        };
        let zero = push(zero, vec![], &TensorType::scalar(DType::F32), "zero", "");
        let y = push(
            Op::Binary(BinaryOp::Max),
            vec![biased, zero],
            &h,
            "y",
            "Relu_2",
        );
        f.add_output("y", y);
        f
    }

    #[test]
    fn mlp_layer_snapshot() {
        insta::assert_snapshot!(print_function(&mlp_layer()));
    }

    #[test]
    fn display_matches_print() {
        let f = mlp_layer();
        assert_eq!(f.to_string(), print_function(&f));
        let m = Module::new(vec![f.clone(), f]);
        assert_eq!(m.to_string(), print_module(&m));
        // Functions are separated by one blank line; an empty module prints nothing.
        assert!(print_module(&m).contains("}\n\nfunc @mlp("));
        assert_eq!(print_module(&Module::default()), "");
    }

    #[test]
    fn names_are_quoted_only_when_needed() {
        let cases = [
            ("x", "%x"),
            ("_a.b_1", "%_a.b_1"),
            ("0", "%0"),
            ("007", "%007"),
            ("", "%\"\""),
            ("1a", "%\"1a\""),
            ("1.5", "%\"1.5\""),
            ("a b", "%\"a b\""),
            ("-x", "%\"-x\""),
            ("é", "%\"é\""),
            ("q\"b\\s", "%\"q\\\"b\\\\s\""),
            ("n\nt\tc\u{1}\u{7f}", "%\"n\\nt\\tc\\u{1}\\u{7f}\""),
        ];
        for (name, printed) in cases {
            assert_eq!(print_value_name(name), printed, "{name:?}");
        }
        let ty = TensorType::new(
            DType::BF16,
            Shape::new(vec![
                Dim::Static(2),
                Dim::Sym("N".into()),
                Dim::Sym("7".into()),
            ]),
        );
        assert_eq!(print_type(&ty), "bf16[2,N,\"7\"]");
        assert_eq!(print_type(&TensorType::scalar(DType::Bool)), "bool[]");
    }

    fn constant_line(value: Tensor, opts: &PrintOptions) -> String {
        let mut f = Function::new("c");
        let ty = TensorType::from_static(value.dtype(), value.shape());
        let c = f.push(
            Op::Constant { value },
            vec![],
            vec![ty],
            &["c"],
            vec![],
            None,
        )[0];
        f.add_output("c", c);
        let text = print_function_with(&f, opts);
        text.lines().nth(1).unwrap().trim().to_string()
    }

    #[test]
    fn float_elements_print_exactly() {
        let v = vec![
            1.0f32,
            -0.0,
            0.1,
            f32::from_bits(1),
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7fc0_0001),
            -f32::NAN,
        ];
        let line = constant_line(
            Tensor::from_vec(vec![2, 5], v).unwrap(),
            &Default::default(),
        );
        assert_eq!(
            line,
            "%c = constant() {value=dense<f32[2,5]>[1.0, -0.0, 0.1, 1e-45, 3.4028235e38, inf, \
             -inf, nan, nan(0x7fc00001), nan(0xffc00000)]} : f32[2,5]"
        );
        // f16/bf16 print the shortest f32 form of their value.
        let h = vec![
            f16::from_f32(0.1),
            f16::from_bits(1),
            f16::NAN,
            f16::from_bits(0x7e01),
        ];
        let line = constant_line(Tensor::from_vec(vec![4], h).unwrap(), &Default::default());
        assert!(
            line.contains("[0.099975586, 5.9604645e-8, nan, nan(0x7e01)]"),
            "{line}"
        );
        let b = vec![bf16::from_f32(0.1), bf16::MAX];
        let line = constant_line(Tensor::from_vec(vec![2], b).unwrap(), &Default::default());
        assert!(line.contains("[0.100097656, 3.3895314e38]"), "{line}");
    }

    #[test]
    fn float8_elements_print_their_exact_value() {
        use crate::float8::{F8E4M3FN, F8E5M2};
        let v = [0x01, 0x7E, 0x80, 0x7F, 0xFF, 0x31].map(F8E4M3FN).to_vec();
        let line = constant_line(Tensor::from_vec(vec![6], v).unwrap(), &Default::default());
        assert!(
            line.contains("dense<f8e4m3fn[6]>[0.001953125, 448.0, -0.0, nan, nan(0xff), 0.5625]"),
            "{line}"
        );
        let v = [0x7C, 0xFC, 0x7E, 0x7D, 0x7B].map(F8E5M2).to_vec();
        let line = constant_line(Tensor::from_vec(vec![5], v).unwrap(), &Default::default());
        assert!(
            line.contains("[inf, -inf, nan, nan(0x7d), 57344.0]"),
            "{line}"
        );
        // CFP8: the patterns that are inf and NaN in f8e5m2 and f8e4m3fn are numbers.
        let v = [0x7C, 0xFC, 0x7E, 0x7F, 0x80].map(CF8E5M2).to_vec();
        let line = constant_line(Tensor::from_vec(vec![5], v).unwrap(), &Default::default());
        assert!(
            line.contains("dense<cf8e5m2[5]>[65536.0, -65536.0, 98304.0, 114688.0, -0.0]"),
            "{line}"
        );
        let v = [0x7F, 0xFF, 0x01].map(CF8E4M3).to_vec();
        let line = constant_line(Tensor::from_vec(vec![3], v).unwrap(), &Default::default());
        assert!(
            line.contains("dense<cf8e4m3[3]>[480.0, -480.0, 0.001953125]"),
            "{line}"
        );
    }

    #[test]
    fn integer_and_bool_elements_print_in_full() {
        let t = Tensor::from_vec(vec![3], vec![i64::MIN, -1, i64::MAX]).unwrap();
        let line = constant_line(t, &Default::default());
        assert!(line.contains("dense<i64[3]>[-9223372036854775808, -1, 9223372036854775807]"));
        let t = Tensor::from_vec(vec![2], vec![0, u64::MAX]).unwrap();
        assert!(constant_line(t, &Default::default()).contains("[0, 18446744073709551615]"));
        let t = Tensor::from_vec(vec![1, 2], vec![true, false]).unwrap();
        assert!(constant_line(t, &Default::default()).contains("dense<bool[1,2]>[true, false]"));
        let t = Tensor::from_vec(vec![0, 3], Vec::<u8>::new()).unwrap();
        assert!(constant_line(t, &Default::default()).contains("dense<u8[0,3]>[]"));
    }

    #[test]
    fn large_constants_can_be_elided() {
        let opts = PrintOptions {
            elide_constants_above: Some(2),
        };
        let big = Tensor::from_vec(vec![3], vec![1i32, 2, 3]).unwrap();
        assert_eq!(
            constant_line(big, &opts),
            "%c = constant() {value=dense<i32[3]> elided} : i32[3]"
        );
        let small = Tensor::from_vec(vec![2], vec![1i32, 2]).unwrap();
        assert!(constant_line(small, &opts).contains("dense<i32[2]>[1, 2]"));
    }

    #[test]
    fn malformed_graphs_print_without_panicking() {
        let mut f = mlp_layer();
        f.body.nodes[0].inputs.push(ValueId(999));
        f.body.results.push(ValueId(1000));
        let text = print_function(&f);
        assert!(text.contains("%<invalid #999>"), "{text}");
        assert!(text.contains("y: f32[N,128], \"\": ?)"), "{text}");
    }
}
