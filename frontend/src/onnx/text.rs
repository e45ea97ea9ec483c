//! ONNX's textual model syntax: the language of `onnx.parser.parse_model` and
//! `onnx.printer.to_text`, parsed into a [`ModelProto`].
//!
//! [`parse_model_text`] accepts everything the ONNX printer emits (checked against ONNX's own
//! parser on the printed form of every model of the ONNX node, simple and pytorch test cases)
//! and the hand-written forms the ONNX parser accepts, e.g.
//!
//! ```text
//! <ir_version: 8, opset_import: ["" : 18, "local" : 1]>
//! agraph (float[N, 128] X, float[128, 10] W) => (float[N, 10] C)
//! <float[10] B = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}>
//! {
//!     T = MatMul (X, W)
//!     S = Add (T, B)            # comments run to the end of the line
//!     C = local.Scale <alpha = 0.5> (S)
//! }
//! <domain: "local", opset_import: ["" : 18]>
//! Scale <alpha> (x) => (y) {
//!     a = Constant <value_float: float = @alpha> ()
//!     y = Mul (x, a)
//! }
//! ```
//!
//! # Grammar
//!
//! Tokens are separated by whitespace and `#` comments (to the end of the line). `id` is
//! `[A-Za-z_][A-Za-z0-9_]*`; `str` is a `"`-quoted string in which `\c` stands for the
//! character `c` (so `\"` and `\\`; there are no other escapes); `int` is `-?[0-9]+`; `float`
//! is `-?[0-9]+(.[0-9]*)?([eE][+-]?[0-9]+)?` with a `.` or an exponent, or `inf`, `infinity`,
//! `nan` (any case, optionally negated). A `name` is an `id` or a `str` (for names that are not
//! identifiers, and for the empty name `""`).
//!
//! ```text
//! model      := ( "<" model-kv,* ">" )? graph function*
//! model-kv   := "ir_version" ":" int | "model_version" ":" int
//!             | ("producer_name" | "producer_version" | "domain" | "doc_string") ":" str
//!             | "opset_import" ":" opsets | "metadata_props" ":" pairs
//! opsets     := "[" (str ":" int),* "]"                  # domain : version
//! pairs      := "[" (str ":" str),* "]"                  # key : value
//! graph      := name ( "(" input,* ")" )? "=>" "(" value-info,* ")"
//!               ( "<" (value-info | initializer),* ">" )? nodes
//! input      := value-info ( "=" tensor-data )?          # a default: also an initializer
//! initializer:= value-info "=" tensor-data
//! value-info := type? name
//! type       := elem-type shape?                         # no shape: a scalar (rank 0)
//!             | "seq" "(" type ")" | "optional" "(" type ")" | "map" "(" elem-type "," type ")"
//!             | "sparse_tensor" "(" elem-type shape? ")"
//!             | "opaque" "(" ( id("." id)* ( "," id )? )? ")"
//! elem-type  := float | double | float16 | bfloat16 | int8 | int16 | int32 | int64 | uint8
//!             | uint16 | uint32 | uint64 | bool | string | complex64 | complex128 | int4
//!             | uint4 | int2 | uint2 | float8e4m3fn | float8e4m3fnuz | float8e5m2
//!             | float8e5m2fnuz | float8e8m0 | float4e2m1 | float6e2m3 | float6e3m2
//! shape      := "[" "]"                                  # unknown rank
//!             | "[" dim ("," dim)* "]"
//! dim        := int | id | str | "?"                     # dim_value, dim_param, unknown
//! tensor-data:= "{" literal,* "}"                        # exactly one value per element
//!             | pairs                                    # external data: "location": "..."
//!             | (nothing)
//! nodes      := "{" node* "}"
//! node       := ( "[" name? "]" )? ids "=" op ( ":" id )? attrs? "(" ids ")" attrs?
//! op         := ( id "." )* id                           # domain.prefix.OpType
//! ids        := name? ("," name?)*                       # "Op(a, , c)": empty names
//! attrs      := "<" attribute,* ">"                      # before or after the inputs
//! attribute  := id ( ":" attr-type )? "=" ( value | "[" value,* "]" | "@" name )
//! attr-type  := int | float | string | tensor | graph | type_proto | sparse_tensor
//!             | ints | floats | strings | tensors | graphs | type_protos | sparse_tensors
//! value      := int | float | str
//!             | type name? "="? tensor-data              # a tensor: `int64[2] {1, 2}`
//!             | type                                     # a type_proto
//!             | graph                                    # a graph: `g () => (float y) {...}`
//! function   := ( "<" function-kv,* ">" )? name ( "<" ( name | attribute ),* ">" )?
//!               "(" ( type? name ),* ")" "=>" "(" ( type? name ),* ")"
//!               ( "<" value-info,* ">" )? nodes
//! function-kv:= ("domain" | "doc_string" | "overload") ":" str | "opset_import" ":" opsets
//! ```
//!
//! Notes on meaning:
//!
//! - An attribute's type comes from its value (`1` int, `1.0` float, `"s"` string, `[1, 2]`
//!   ints, ...) unless declared with `name: type = ...`; an int literal where a float is
//!   declared (or in a list that also holds floats) is a float. An empty list needs a declared
//!   type. `name: type = @other` refers to the calling function's attribute `other` (without
//!   `: type` its type is left UNDEFINED, as ONNX does). Every other attribute gets its
//!   `AttributeProto.type`. Lists of tensors, graphs and types are kept (the ONNX parser drops
//!   them). An attribute given twice in one node, or a header key given twice, is an error.
//! - Tensor values fill the typed field ONNX uses for the element type: `int32_data` for the
//!   types of 32 bits or fewer (float16, bfloat16 and the float8/float4/float6 types as their bit
//!   patterns, as the printer writes them), `int64_data`, `uint64_data` (uint32, uint64),
//!   `float_data` (float, complex64), `double_data` (double, complex128), `string_data`.
//!   Values are range-checked for their element type.
//! - A function's attribute names without a default go to `attribute`, those with one
//!   (`beta: float = 1.0`) to `attribute_proto`. The types of typed function inputs and outputs
//!   and a function's `<value-info>` list are checked but not stored: terafab's
//!   [`FunctionProto`] has no `value_info` field.
//!
//! Errors carry a 1-based line and column (counted in characters) pointing at the offending
//! token. Graphs and types nest at most [`MAX_DEPTH`] deep; input is never trusted: any text
//! gives a model or an error, never a panic.

use std::collections::HashSet;
use std::str::FromStr;

use super::proto::{
    AttributeProto, AttributeType, DataType, FunctionProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto,
    ValueInfoProto, tensor_shape_proto::Dimension, tensor_shape_proto::dimension, type_proto,
};

/// The deepest nesting of graphs (graph attributes inside nodes) and types (`seq(seq(...))`)
/// accepted; deeper input is an error, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;

/// A syntax error, with the 1-based line and column (in characters) where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct TextError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl TextError {
    /// An error at byte `offset` of `src` (clamped to the text, rounded down to a character).
    fn at(src: &str, offset: usize, message: impl Into<String>) -> Self {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        TextError {
            line: before.bytes().filter(|&b| b == b'\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, TextError>;

/// Parse a model in ONNX's textual syntax (see the [module docs](self) for the grammar).
pub fn parse_model_text(src: &str) -> Result<ModelProto> {
    Parser::new(src).model()
}

// ---------------------------------------------------------------------------------------------
// Names of element types and attribute types

/// Element type names and their `TensorProto.DataType` codes.
const ELEM_TYPES: &[(&str, i32)] = &[
    ("float", DataType::Float as i32),
    ("uint8", DataType::Uint8 as i32),
    ("int8", DataType::Int8 as i32),
    ("uint16", DataType::Uint16 as i32),
    ("int16", DataType::Int16 as i32),
    ("int32", DataType::Int32 as i32),
    ("int64", DataType::Int64 as i32),
    ("string", DataType::String as i32),
    ("bool", DataType::Bool as i32),
    ("float16", DataType::Float16 as i32),
    ("double", DataType::Double as i32),
    ("uint32", DataType::Uint32 as i32),
    ("uint64", DataType::Uint64 as i32),
    ("complex64", DataType::Complex64 as i32),
    ("complex128", DataType::Complex128 as i32),
    ("bfloat16", DataType::Bfloat16 as i32),
    ("float8e4m3fn", DataType::Float8e4m3fn as i32),
    ("float8e4m3fnuz", DataType::Float8e4m3fnuz as i32),
    ("float8e5m2", DataType::Float8e5m2 as i32),
    ("float8e5m2fnuz", DataType::Float8e5m2fnuz as i32),
    ("uint4", DataType::Uint4 as i32),
    ("int4", DataType::Int4 as i32),
    ("float4e2m1", DataType::Float4e2m1 as i32),
    ("float8e8m0", DataType::Float8e8m0 as i32),
    ("uint2", DataType::Uint2 as i32),
    ("int2", DataType::Int2 as i32),
    // Not (yet) in `DataType`; the codes are those of onnx.proto (IR version 12).
    ("float6e2m3", 27),
    ("float6e3m2", 28),
];

/// The keys of a model's `<...>` header.
const MODEL_KEYS: &str = "ir_version, opset_import, producer_name, producer_version, domain, \
                          model_version, doc_string, metadata_props";

/// The keys of a function's `<...>` header.
const FUNCTION_KEYS: &str = "domain, doc_string, overload, opset_import";

/// The keywords that start a non-tensor type.
const TYPE_KEYWORDS: &[&str] = &["seq", "map", "optional", "sparse_tensor", "opaque"];

fn elem_type_code(name: &str) -> Option<i32> {
    ELEM_TYPES.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
}

fn elem_type_name(code: i32) -> &'static str {
    ELEM_TYPES
        .iter()
        .find(|&&(_, c)| c == code)
        .map_or("undefined", |&(n, _)| n)
}

/// Attribute type names (as in `name: ints = [...]`).
const ATTR_TYPES: &[(&str, AttributeType)] = &[
    ("float", AttributeType::Float),
    ("int", AttributeType::Int),
    ("string", AttributeType::String),
    ("tensor", AttributeType::Tensor),
    ("graph", AttributeType::Graph),
    ("sparse_tensor", AttributeType::SparseTensor),
    ("type_proto", AttributeType::TypeProto),
    ("floats", AttributeType::Floats),
    ("ints", AttributeType::Ints),
    ("strings", AttributeType::Strings),
    ("tensors", AttributeType::Tensors),
    ("graphs", AttributeType::Graphs),
    ("sparse_tensors", AttributeType::SparseTensors),
    ("type_protos", AttributeType::TypeProtos),
];

fn attr_type_name(t: AttributeType) -> &'static str {
    ATTR_TYPES
        .iter()
        .find(|&&(_, a)| a == t)
        .map_or("undefined", |&(n, _)| n)
}

/// The list type of a single-value attribute type, or `None` for list types.
fn list_type_of(t: AttributeType) -> Option<AttributeType> {
    Some(match t {
        AttributeType::Float => AttributeType::Floats,
        AttributeType::Int => AttributeType::Ints,
        AttributeType::String => AttributeType::Strings,
        AttributeType::Tensor => AttributeType::Tensors,
        AttributeType::Graph => AttributeType::Graphs,
        AttributeType::SparseTensor => AttributeType::SparseTensors,
        AttributeType::TypeProto => AttributeType::TypeProtos,
        _ => return None,
    })
}

/// The element type of a list attribute type, or `None` for single-value types.
fn elem_of_list_type(t: AttributeType) -> Option<AttributeType> {
    ATTR_TYPES
        .iter()
        .map(|&(_, a)| a)
        .find(|&a| list_type_of(a) == Some(t))
}

/// "an int", "a float", ...: an attribute type with its article, for messages.
fn a_kind(t: AttributeType) -> String {
    with_article(attr_type_name(t))
}

/// "an int64", "a uint8", "a float": a type name with its article.
fn with_article(name: &str) -> String {
    let article = if name.starts_with(['a', 'e', 'i', 'o']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

/// `inf`, `infinity` or `nan`, in any case.
fn is_special_float(id: &str) -> bool {
    ["inf", "infinity", "nan"]
        .iter()
        .any(|s| id.eq_ignore_ascii_case(s))
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok<'s> {
    Ident(&'s str),
    /// A string literal, unescaped.
    Str(String),
    /// An integer literal's text (with its sign).
    Int(&'s str),
    /// A float literal's text (with its sign), including `-inf` and `-nan`; unsigned `inf` and
    /// `nan` are identifiers.
    Float(&'s str),
    Punct(u8),
    Eof,
}

impl Tok<'_> {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier `{s}`"),
            Tok::Str(s) if s.chars().count() > 24 => {
                format!("string \"{}...\"", s.chars().take(24).collect::<String>())
            }
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Int(s) | Tok::Float(s) => format!("number `{s}`"),
            Tok::Punct(c) => format!("`{}`", char::from(*c)),
            Tok::Eof => "the end of the input".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Token<'s> {
    tok: Tok<'s>,
    /// Byte offsets of the token in the source.
    start: usize,
    end: usize,
}

const PUNCTUATION: &[u8] = b"<>()[]{},:=.?@";

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Lexer<'s> {
    fn byte(&self, i: usize) -> Option<u8> {
        self.src.as_bytes().get(i).copied()
    }

    /// Skip whitespace and `#` comments (and a byte-order mark at the start).
    fn skip_trivia(&mut self) {
        if self.pos == 0 && self.src.starts_with('\u{feff}') {
            self.pos = '\u{feff}'.len_utf8();
        }
        while let Some(b) = self.byte(self.pos) {
            if b.is_ascii_whitespace() || b == 0x0b {
                self.pos += 1;
            } else if b == b'#' {
                self.pos = self.src[self.pos..]
                    .find('\n')
                    .map_or(self.src.len(), |i| self.pos + i);
            } else {
                break;
            }
        }
    }

    /// Advance past bytes matching `f`.
    fn skip_while(&mut self, f: impl Fn(u8) -> bool) {
        while self.byte(self.pos).is_some_and(&f) {
            self.pos += 1;
        }
    }

    fn next_token(&mut self) -> Result<Token<'s>> {
        self.skip_trivia();
        let start = self.pos;
        let Some(b) = self.byte(start) else {
            return Ok(Token {
                tok: Tok::Eof,
                start,
                end: start,
            });
        };
        let tok = if b.is_ascii_alphabetic() || b == b'_' {
            self.skip_while(|c| c.is_ascii_alphanumeric() || c == b'_');
            Tok::Ident(&self.src[start..self.pos])
        } else if b.is_ascii_digit() || b == b'-' {
            self.number()?
        } else if b == b'"' {
            Tok::Str(self.string()?)
        } else if PUNCTUATION.contains(&b) {
            self.pos += 1;
            Tok::Punct(b)
        } else {
            let c = self.src[start..].chars().next().unwrap_or('\u{fffd}');
            return Err(TextError::at(
                self.src,
                start,
                format!("unexpected character {c:?}"),
            ));
        };
        Ok(Token {
            tok,
            start,
            end: self.pos,
        })
    }

    /// A number: `-?digits(.digits*)?([eE][+-]?digits)?`, or `-inf`/`-infinity`/`-nan`.
    fn number(&mut self) -> Result<Tok<'s>> {
        let start = self.pos;
        if self.byte(self.pos) == Some(b'-') {
            self.pos += 1;
            match self.byte(self.pos) {
                Some(c) if c.is_ascii_digit() => {}
                Some(c) if c.is_ascii_alphabetic() => {
                    self.skip_while(|c| c.is_ascii_alphanumeric() || c == b'_');
                    let word = &self.src[start + 1..self.pos];
                    if is_special_float(word) {
                        return Ok(Tok::Float(&self.src[start..self.pos]));
                    }
                    return Err(TextError::at(
                        self.src,
                        start,
                        format!("invalid number `-{word}`"),
                    ));
                }
                _ => {
                    return Err(TextError::at(
                        self.src,
                        start,
                        "expected a number after `-`",
                    ));
                }
            }
        }
        let digit = |c: u8| c.is_ascii_digit();
        self.skip_while(digit);
        let mut is_float = false;
        if self.byte(self.pos) == Some(b'.') {
            is_float = true;
            self.pos += 1;
            self.skip_while(digit);
        }
        if matches!(self.byte(self.pos), Some(b'e' | b'E')) {
            is_float = true;
            self.pos += 1;
            if matches!(self.byte(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            let exp_start = self.pos;
            self.skip_while(digit);
            if self.pos == exp_start {
                return Err(TextError::at(
                    self.src,
                    start,
                    format!(
                        "invalid number `{}`: the exponent has no digits",
                        &self.src[start..self.pos]
                    ),
                ));
            }
        }
        let text = &self.src[start..self.pos];
        Ok(if is_float {
            Tok::Float(text)
        } else {
            Tok::Int(text)
        })
    }

    /// A string literal; `\c` stands for `c`.
    fn string(&mut self) -> Result<String> {
        let start = self.pos;
        let mut out = String::new();
        let mut chars = self.src[start + 1..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + 1 + i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(TextError::at(
            self.src,
            start,
            "unterminated string (no closing `\"`)",
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

/// An attribute value before its type is settled (an int literal may become a float).
enum Value<'s> {
    /// An integer literal's text.
    Int(&'s str),
    Float(f32),
    Str(Vec<u8>),
    Tensor(TensorProto),
    Graph(GraphProto),
    Type(TypeProto),
}

impl Value<'_> {
    /// The single-value attribute type of this value (ints count as ints).
    fn kind(&self) -> AttributeType {
        match self {
            Value::Int(_) => AttributeType::Int,
            Value::Float(_) => AttributeType::Float,
            Value::Str(_) => AttributeType::String,
            Value::Tensor(_) => AttributeType::Tensor,
            Value::Graph(_) => AttributeType::Graph,
            Value::Type(_) => AttributeType::TypeProto,
        }
    }
}

/// An attribute value converted to its attribute type.
enum Typed {
    Int(i64),
    Float(f32),
    Str(Vec<u8>),
    Tensor(TensorProto),
    Graph(GraphProto),
    Type(TypeProto),
}

impl Typed {
    /// Make this the attribute's single value.
    fn set(self, a: &mut AttributeProto) {
        match self {
            Typed::Int(v) => a.i = v,
            Typed::Float(v) => a.f = v,
            Typed::Str(v) => a.s = v,
            Typed::Tensor(v) => a.t = Some(v),
            Typed::Graph(v) => a.g = Some(v),
            Typed::Type(v) => a.tp = Some(v),
        }
    }

    /// Append this to the attribute's list of values.
    fn push(self, a: &mut AttributeProto) {
        match self {
            Typed::Int(v) => a.ints.push(v),
            Typed::Float(v) => a.floats.push(v),
            Typed::Str(v) => a.strings.push(v),
            Typed::Tensor(v) => a.tensors.push(v),
            Typed::Graph(v) => a.graphs.push(v),
            Typed::Type(v) => a.type_protos.push(v),
        }
    }
}

/// How the values of a tensor literal are read and stored, by element type.
#[derive(Clone, Copy)]
enum ElemStorage {
    /// `int32_data`, with the inclusive range of values accepted.
    Int32(i64, i64),
    Int64,
    /// `uint64_data`, with the largest value accepted.
    Uint64(u64),
    Float,
    Double,
    String,
}

impl ElemStorage {
    fn of(code: i32) -> Option<ElemStorage> {
        use ElemStorage::*;
        let Ok(dt) = DataType::try_from(code) else {
            // float6e2m3 / float6e3m2: 6-bit patterns.
            return [27, 28].contains(&code).then_some(Int32(0, 63));
        };
        Some(match dt {
            DataType::Undefined => return None,
            DataType::Float | DataType::Complex64 => Float,
            DataType::Double | DataType::Complex128 => Double,
            DataType::Int64 => Int64,
            DataType::Uint32 => Uint64(u32::MAX.into()),
            DataType::Uint64 => Uint64(u64::MAX),
            DataType::String => String,
            DataType::Int32 => Int32(i32::MIN.into(), i32::MAX.into()),
            DataType::Int16 => Int32(i16::MIN.into(), i16::MAX.into()),
            DataType::Int8 => Int32(i8::MIN.into(), i8::MAX.into()),
            DataType::Uint16 => Int32(0, u16::MAX.into()),
            DataType::Uint8 => Int32(0, u8::MAX.into()),
            DataType::Bool => Int32(0, 1),
            // Bit patterns: accept them read as signed or unsigned.
            DataType::Float16 | DataType::Bfloat16 => Int32(i16::MIN.into(), u16::MAX.into()),
            DataType::Float8e4m3fn
            | DataType::Float8e4m3fnuz
            | DataType::Float8e5m2
            | DataType::Float8e5m2fnuz
            | DataType::Float8e8m0 => Int32(i8::MIN.into(), u8::MAX.into()),
            DataType::Int4 => Int32(-8, 7),
            DataType::Uint4 | DataType::Float4e2m1 => Int32(0, 15),
            DataType::Int2 => Int32(-2, 1),
            DataType::Uint2 => Int32(0, 3),
        })
    }
}

struct Parser<'s> {
    src: &'s str,
    lexer: Lexer<'s>,
    peeked: Option<Token<'s>>,
    /// End offset of the last token taken (to check that `=>` is one token).
    last_end: usize,
    /// Current nesting of graphs and types.
    depth: usize,
}

impl<'s> Parser<'s> {
    fn new(src: &'s str) -> Self {
        Parser {
            src,
            lexer: Lexer { src, pos: 0 },
            peeked: None,
            last_end: 0,
            depth: 0,
        }
    }

    // --- token plumbing ---

    /// The next token, lexing it unless it is already peeked.
    fn take_token(&mut self) -> Result<Token<'s>> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn peek(&mut self) -> Result<&Token<'s>> {
        let t = self.take_token()?;
        Ok(self.peeked.insert(t))
    }

    fn bump(&mut self) -> Result<Token<'s>> {
        let t = self.take_token()?;
        self.last_end = t.end;
        Ok(t)
    }

    fn error_at(&self, offset: usize, message: impl Into<String>) -> TextError {
        TextError::at(self.src, offset, message)
    }

    /// "expected {what}, found ..." at the next token.
    fn unexpected(&mut self, what: &str) -> TextError {
        match self.peek() {
            Ok(t) => {
                let (start, message) = (
                    t.start,
                    format!("expected {what}, found {}", t.tok.describe()),
                );
                self.error_at(start, message)
            }
            Err(e) => e,
        }
    }

    fn at_punct(&mut self, c: u8) -> Result<bool> {
        Ok(self.peek()?.tok == Tok::Punct(c))
    }

    fn at_eof(&mut self) -> Result<bool> {
        Ok(self.peek()?.tok == Tok::Eof)
    }

    /// Take the punctuation `c` if it is next.
    fn eat(&mut self, c: u8) -> Result<bool> {
        let found = self.at_punct(c)?;
        if found {
            self.bump()?;
        }
        Ok(found)
    }

    fn expect(&mut self, c: u8) -> Result<()> {
        if self.eat(c)? {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{}`", char::from(c))))
        }
    }

    /// `=>`, as one token: no space between `=` and `>`.
    fn expect_arrow(&mut self) -> Result<()> {
        let start = self.peek()?.start;
        if self.eat(b'=')? {
            let end = self.last_end;
            if self.peek()?.start == end && self.eat(b'>')? {
                return Ok(());
            }
        }
        Err(self.error_at(start, "expected `=>` between the inputs and the outputs"))
    }

    /// Run `f` one nesting level deeper, refusing to go past [`MAX_DEPTH`].
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.depth >= MAX_DEPTH {
            let start = self.peek()?.start;
            return Err(self.error_at(
                start,
                format!("graphs and types nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.depth += 1;
        let out = f(self);
        self.depth -= 1;
        out
    }

    /// Parse `item` (and commas) until `close`, which is consumed. The opening bracket is
    /// already taken.
    fn list_until(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if self.eat(close)? {
            return Ok(());
        }
        loop {
            item(self)?;
            if !self.eat(b',')? {
                return self.expect(close);
            }
        }
    }

    // --- leaves ---

    fn ident(&mut self, what: &str) -> Result<(&'s str, usize)> {
        match self.peek()?.tok {
            Tok::Ident(id) => Ok((id, self.bump()?.start)),
            _ => Err(self.unexpected(what)),
        }
    }

    /// A name: an identifier or a string.
    fn name(&mut self, what: &str) -> Result<String> {
        match &self.peek()?.tok {
            Tok::Ident(id) => {
                let id = id.to_string();
                self.bump()?;
                Ok(id)
            }
            Tok::Str(_) => self.string(what),
            _ => Err(self.unexpected(what)),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        if matches!(self.peek()?.tok, Tok::Str(_))
            && let Tok::Str(s) = self.bump()?.tok
        {
            return Ok(s);
        }
        Err(self.unexpected(what))
    }

    fn int_literal(&mut self, what: &str) -> Result<(&'s str, usize)> {
        match self.peek()?.tok {
            Tok::Int(text) => Ok((text, self.bump()?.start)),
            _ => Err(self.unexpected(what)),
        }
    }

    fn parse_int<T: FromStr>(&self, text: &str, at: usize, type_name: &str) -> Result<T> {
        text.parse().map_err(|_| {
            self.error_at(
                at,
                format!("integer `{text}` is out of range for {type_name}"),
            )
        })
    }

    fn int64(&mut self, what: &str) -> Result<i64> {
        let (text, at) = self.int_literal(what)?;
        self.parse_int(text, at, "int64")
    }

    /// A float (or integer) literal's text, including `inf` and `nan`.
    fn float_literal(&mut self, what: &str) -> Result<(&'s str, usize)> {
        match self.peek()?.tok {
            Tok::Int(text) | Tok::Float(text) => Ok((text, self.bump()?.start)),
            Tok::Ident(id) if is_special_float(id) => Ok((id, self.bump()?.start)),
            _ => Err(self.unexpected(what)),
        }
    }

    /// Convert a float literal's text, refusing values too large for `T`.
    fn parse_float<T: FromStr + Copy + Into<f64>>(
        &self,
        text: &str,
        at: usize,
        type_name: &str,
    ) -> Result<T> {
        let v: T = text
            .parse()
            .map_err(|_| self.error_at(at, format!("invalid number `{text}`")))?;
        let is_inf_literal = text
            .trim_start_matches('-')
            .to_ascii_lowercase()
            .starts_with("inf");
        if v.into().is_infinite() && !is_inf_literal {
            return Err(self.error_at(at, format!("`{text}` is out of range for {type_name}")));
        }
        Ok(v)
    }

    /// `[ "key" : <value>, ... ]` with values read by `value`.
    fn keyed_list<T>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<(String, T)>> {
        self.expect(b'[')?;
        let mut out = Vec::new();
        self.list_until(b']', |p| {
            let key = p.string("a quoted key")?;
            p.expect(b':')?;
            out.push((key, value(p)?));
            Ok(())
        })?;
        Ok(out)
    }

    fn opsets(&mut self) -> Result<Vec<OperatorSetIdProto>> {
        let pairs = self.keyed_list(|p| p.int64("an opset version"))?;
        Ok(pairs
            .into_iter()
            .map(|(domain, version)| OperatorSetIdProto { domain, version })
            .collect())
    }

    fn string_pairs(&mut self) -> Result<Vec<StringStringEntryProto>> {
        let pairs = self.keyed_list(|p| p.string("a quoted value"))?;
        Ok(pairs
            .into_iter()
            .map(|(key, value)| StringStringEntryProto { key, value })
            .collect())
    }

    /// `< key: value, ... >` (the `<` already taken): each key is handled by `entry`, which
    /// returns false for an unknown key. Keys may not repeat.
    fn header(
        &mut self,
        what: &str,
        known: &str,
        mut entry: impl FnMut(&mut Self, &str) -> Result<bool>,
    ) -> Result<()> {
        let mut seen: Vec<&str> = Vec::new();
        self.list_until(b'>', |p| {
            let (key, at) = p.ident(&format!("a {what} key"))?;
            if seen.contains(&key) {
                return Err(p.error_at(at, format!("`{key}` is given twice in the {what}")));
            }
            seen.push(key);
            p.expect(b':')?;
            if entry(p, key)? {
                Ok(())
            } else {
                Err(p.error_at(
                    at,
                    format!("unknown {what} key `{key}` (expected one of: {known})"),
                ))
            }
        })
    }

    // --- model and functions ---

    fn model(&mut self) -> Result<ModelProto> {
        let mut m = ModelProto::default();
        if self.eat(b'<')? {
            self.header("model header", MODEL_KEYS, |p, key| {
                match key {
                    "ir_version" => m.ir_version = p.int64("an IR version")?,
                    "model_version" => m.model_version = p.int64("a model version")?,
                    "opset_import" => m.opset_import = p.opsets()?,
                    "producer_name" => m.producer_name = p.string("a quoted producer name")?,
                    "producer_version" => {
                        m.producer_version = p.string("a quoted producer version")?
                    }
                    "domain" => m.domain = p.string("a quoted domain")?,
                    "doc_string" => m.doc_string = p.string("a quoted doc string")?,
                    "metadata_props" => m.metadata_props = p.string_pairs()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
        }
        m.graph = Some(self.graph()?);
        while !self.at_eof()? {
            m.functions.push(self.function()?);
        }
        Ok(m)
    }

    fn function(&mut self) -> Result<FunctionProto> {
        let mut f = FunctionProto::default();
        if self.eat(b'<')? {
            self.header("function header", FUNCTION_KEYS, |p, key| {
                match key {
                    "domain" => f.domain = p.string("a quoted domain")?,
                    "doc_string" => f.doc_string = p.string("a quoted doc string")?,
                    "overload" => f.overload = p.string("a quoted overload name")?,
                    "opset_import" => f.opset_import = p.opsets()?,
                    _ => return Ok(false),
                }
                Ok(true)
            })?;
        }
        f.name = self.name("a function name")?;
        if self.eat(b'<')? {
            self.list_until(b'>', |p| {
                let at = p.peek()?.start;
                let name = p.name("an attribute name")?;
                if p.at_punct(b':')? || p.at_punct(b'=')? {
                    f.attribute_proto.push(p.attribute_body(name, at)?);
                } else {
                    f.attribute.push(name);
                }
                Ok(())
            })?;
        }
        f.input = self.function_io()?;
        self.expect_arrow()?;
        f.output = self.function_io()?;
        if self.eat(b'<')? {
            // Checked, but FunctionProto (as declared in proto.rs) has no value_info to keep it.
            self.list_until(b'>', |p| p.value_info().map(drop))?;
        }
        f.node = self.nodes()?;
        Ok(f)
    }

    /// `( type? name, ... )`: a function's inputs or outputs (the types are checked only).
    fn function_io(&mut self) -> Result<Vec<String>> {
        self.expect(b'(')?;
        let mut names = Vec::new();
        self.list_until(b')', |p| {
            names.push(p.value_info()?.name);
            Ok(())
        })?;
        Ok(names)
    }

    // --- graphs ---

    fn graph(&mut self) -> Result<GraphProto> {
        self.nested(|p| {
            let mut g = GraphProto {
                name: p.name("a graph name")?,
                ..Default::default()
            };
            if p.eat(b'(')? {
                p.list_until(b')', |p| {
                    let vi = p.value_info()?;
                    if p.eat(b'=')? {
                        g.initializer
                            .push(p.tensor_data(vi.r#type.as_ref(), vi.name.clone())?);
                    }
                    g.input.push(vi);
                    Ok(())
                })?;
            }
            p.expect_arrow()?;
            p.expect(b'(')?;
            p.list_until(b')', |p| {
                g.output.push(p.value_info()?);
                Ok(())
            })?;
            if p.eat(b'<')? {
                p.list_until(b'>', |p| {
                    let vi = p.value_info()?;
                    if p.eat(b'=')? {
                        g.initializer
                            .push(p.tensor_data(vi.r#type.as_ref(), vi.name)?);
                    } else {
                        g.value_info.push(vi);
                    }
                    Ok(())
                })?;
            }
            g.node = p.nodes()?;
            Ok(g)
        })
    }

    /// `type? name`.
    fn value_info(&mut self) -> Result<ValueInfoProto> {
        let r#type = if self.next_is_type()? {
            Some(self.type_proto()?)
        } else {
            None
        };
        let name = self.name("a value name")?;
        Ok(ValueInfoProto {
            name,
            r#type,
            ..Default::default()
        })
    }

    fn next_is_type(&mut self) -> Result<bool> {
        Ok(match self.peek()?.tok {
            Tok::Ident(id) => elem_type_code(id).is_some() || TYPE_KEYWORDS.contains(&id),
            _ => false,
        })
    }

    // --- types ---

    fn type_proto(&mut self) -> Result<TypeProto> {
        self.nested(|p| {
            let (id, at) = p.ident("a type")?;
            let value = if let Some(elem_type) = elem_type_code(id) {
                type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type,
                    shape: p.shape()?,
                })
            } else {
                if TYPE_KEYWORDS.contains(&id) {
                    p.expect(b'(')?;
                }
                let value = match id {
                    "seq" => {
                        let elem_type = Some(Box::new(p.type_proto()?));
                        type_proto::Value::SequenceType(Box::new(type_proto::Sequence {
                            elem_type,
                        }))
                    }
                    "optional" => {
                        let elem_type = Some(Box::new(p.type_proto()?));
                        type_proto::Value::OptionalType(Box::new(type_proto::Optional {
                            elem_type,
                        }))
                    }
                    "map" => {
                        let key_type = p.elem_type("a map key type")?;
                        p.expect(b',')?;
                        let value_type = Some(Box::new(p.type_proto()?));
                        type_proto::Value::MapType(Box::new(type_proto::Map {
                            key_type,
                            value_type,
                        }))
                    }
                    "sparse_tensor" => {
                        let elem_type = p.elem_type("a sparse tensor element type")?;
                        type_proto::Value::SparseTensorType(type_proto::Tensor {
                            elem_type,
                            shape: p.shape()?,
                        })
                    }
                    "opaque" => type_proto::Value::OpaqueType(p.opaque()?),
                    _ => {
                        let known = ELEM_TYPES
                            .iter()
                            .map(|&(n, _)| n)
                            .chain(TYPE_KEYWORDS.iter().copied());
                        let known = known.collect::<Vec<_>>().join(", ");
                        return Err(p.error_at(
                            at,
                            format!("unknown type `{id}` (expected one of: {known})"),
                        ));
                    }
                };
                p.expect(b')')?;
                value
            };
            Ok(TypeProto {
                value: Some(value),
                ..Default::default()
            })
        })
    }

    fn elem_type(&mut self, what: &str) -> Result<i32> {
        let (id, at) = self.ident(what)?;
        elem_type_code(id)
            .ok_or_else(|| self.error_at(at, format!("`{id}` is not an element type")))
    }

    /// The optional `[dims]` after an element type: none is a scalar, `[]` an unknown rank.
    fn shape(&mut self) -> Result<Option<TensorShapeProto>> {
        if !self.eat(b'[')? {
            return Ok(Some(TensorShapeProto::default()));
        }
        if self.eat(b']')? {
            return Ok(None);
        }
        let mut dims = Vec::new();
        self.list_until(b']', |p| {
            let t = p.peek()?;
            let at = t.start;
            let value = match t.tok.clone() {
                Tok::Punct(b'?') => None,
                Tok::Ident(id) => Some(dimension::Value::DimParam(id.to_string())),
                Tok::Str(s) => Some(dimension::Value::DimParam(s)),
                Tok::Int(text) => Some(dimension::Value::DimValue(p.parse_int(
                    text,
                    at,
                    "a dimension",
                )?)),
                _ => return Err(p.unexpected("a dimension (an integer, a name or `?`)")),
            };
            p.bump()?;
            dims.push(Dimension {
                value,
                ..Default::default()
            });
            Ok(())
        })?;
        Ok(Some(TensorShapeProto { dim: dims }))
    }

    /// The inside of `opaque( ... )`: nothing, `name`, or `domain.parts, name`.
    fn opaque(&mut self) -> Result<type_proto::Opaque> {
        let mut o = type_proto::Opaque::default();
        if self.at_punct(b')')? {
            return Ok(o);
        }
        let mut first = self.ident("an opaque type name")?.0.to_string();
        while self.eat(b'.')? {
            first.push('.');
            first.push_str(self.ident("a domain part")?.0);
        }
        if self.eat(b',')? {
            o.domain = first;
            o.name = self.ident("an opaque type name")?.0.to_string();
        } else {
            o.name = first;
        }
        Ok(o)
    }

    // --- tensor values ---

    /// The data of a tensor of type `ty` (after the name and `=`): `{values}`, external data
    /// `["location": ...]`, or nothing.
    fn tensor_data(&mut self, ty: Option<&TypeProto>, name: String) -> Result<TensorProto> {
        let at = self.peek()?.start;
        let what = format!("tensor `{name}`");
        let Some(type_proto::Value::TensorType(tt)) = ty.and_then(|t| t.value.as_ref()) else {
            return Err(self.error_at(at, format!("{what} needs a tensor type such as `float[2]`")));
        };
        let Some(shape) = &tt.shape else {
            return Err(self.error_at(at, format!("{what} needs a known shape, not `[]`")));
        };
        let mut t = TensorProto {
            name,
            data_type: tt.elem_type,
            ..Default::default()
        };
        for d in &shape.dim {
            match d.value {
                Some(dimension::Value::DimValue(v)) if v >= 0 => t.dims.push(v),
                _ => {
                    return Err(self.error_at(
                        at,
                        format!("{what} needs dimensions that are non-negative integers"),
                    ));
                }
            }
        }
        if self.at_punct(b'[')? {
            t.external_data = self.string_pairs()?;
            t.data_location = 1;
            return Ok(t);
        }
        if !self.eat(b'{')? {
            return Ok(t);
        }
        let Some(storage) = ElemStorage::of(t.data_type) else {
            return Err(self.error_at(at, format!("{what} has no element type")));
        };
        let type_name = elem_type_name(t.data_type);
        let a_value = format!("{} value", with_article(type_name));
        let mut count: usize = 0;
        self.list_until(b'}', |p| {
            count += 1;
            match storage {
                ElemStorage::Int32(min, max) => {
                    let (text, at) = p.int_literal(&a_value)?;
                    let v: i64 = p.parse_int(text, at, type_name)?;
                    if !(min..=max).contains(&v) {
                        return Err(p.error_at(
                            at,
                            format!("{v} is out of range for {type_name} ({min} to {max})"),
                        ));
                    }
                    t.int32_data.push(v as i32);
                }
                ElemStorage::Int64 => {
                    let (text, at) = p.int_literal(&a_value)?;
                    t.int64_data.push(p.parse_int(text, at, type_name)?);
                }
                ElemStorage::Uint64(max) => {
                    let (text, at) = p.int_literal(&a_value)?;
                    let v: u64 = p.parse_int(text, at, type_name)?;
                    if v > max {
                        return Err(p.error_at(
                            at,
                            format!("integer `{text}` is out of range for {type_name}"),
                        ));
                    }
                    t.uint64_data.push(v);
                }
                ElemStorage::Float => {
                    let (text, at) = p.float_literal(&a_value)?;
                    t.float_data.push(p.parse_float(text, at, type_name)?);
                }
                ElemStorage::Double => {
                    let (text, at) = p.float_literal(&a_value)?;
                    t.double_data.push(p.parse_float(text, at, type_name)?);
                }
                ElemStorage::String => {
                    let s = p.string("a quoted string value")?;
                    t.string_data.push(s.into_bytes());
                }
            }
            Ok(())
        })?;
        let per_element = if type_name.starts_with("complex") {
            2
        } else {
            1
        };
        let expected = t.dims.iter().try_fold(per_element, |n: usize, &d| {
            n.checked_mul(usize::try_from(d).ok()?)
        });
        if expected != Some(count) {
            let dims = t
                .dims
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let needed = expected.map_or("more than can be counted".to_string(), |n| n.to_string());
            return Err(self.error_at(
                at,
                format!("{what} of type {type_name}[{dims}] needs {needed} values, found {count}"),
            ));
        }
        Ok(t)
    }

    // --- nodes ---

    fn nodes(&mut self) -> Result<Vec<NodeProto>> {
        self.expect(b'{')?;
        let mut nodes = Vec::new();
        while !self.eat(b'}')? {
            let starts_node = matches!(
                self.peek()?.tok,
                Tok::Ident(_) | Tok::Str(_) | Tok::Punct(b'[' | b',' | b'=')
            );
            if !starts_node {
                return Err(self.unexpected("a node (`outputs = Op (inputs)`) or `}`"));
            }
            nodes.push(self.node()?);
        }
        Ok(nodes)
    }

    fn node(&mut self) -> Result<NodeProto> {
        let mut n = NodeProto::default();
        if self.eat(b'[')? {
            if !self.at_punct(b']')? {
                n.name = self.name("a node name")?;
            }
            self.expect(b']')?;
        }
        n.output = self.names()?;
        if !self.eat(b'=')? {
            return Err(self.unexpected("`=` after the node's outputs"));
        }
        let (mut op, _) = self.ident("an operator name")?;
        let mut domain = Vec::new();
        while self.eat(b'.')? {
            domain.push(op);
            op = self.ident("an operator name after `.`")?.0;
        }
        n.domain = domain.join(".");
        n.op_type = op.to_string();
        if self.eat(b':')? {
            n.overload = self.ident("an overload name")?.0.to_string();
        }
        let attrs_first = self.at_punct(b'<')?;
        if attrs_first {
            n.attribute = self.attributes()?;
        }
        if !self.eat(b'(')? {
            return Err(self.unexpected(&format!("`(` and the inputs of `{}`", n.op_type)));
        }
        n.input = self.names()?;
        self.expect(b')')?;
        if !attrs_first && self.at_punct(b'<')? {
            n.attribute = self.attributes()?;
        }
        Ok(n)
    }

    /// Comma-separated names where a missing name is the empty name: `a, , c` has three,
    /// `a,` one, `,` one (empty) and nothing none.
    fn names(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        loop {
            let present = matches!(self.peek()?.tok, Tok::Ident(_) | Tok::Str(_));
            if present {
                out.push(self.name("a name")?);
            } else if self.at_punct(b',')? {
                out.push(String::new());
            } else {
                return Ok(out);
            }
            if !self.eat(b',')? {
                return Ok(out);
            }
        }
    }

    // --- attributes ---

    /// `< attribute, ... >`.
    fn attributes(&mut self) -> Result<Vec<AttributeProto>> {
        self.expect(b'<')?;
        let mut attrs = Vec::new();
        let mut seen = HashSet::new();
        self.list_until(b'>', |p| {
            let (name, at) = p.ident("an attribute name")?;
            if !seen.insert(name) {
                return Err(p.error_at(at, format!("attribute `{name}` is given twice")));
            }
            attrs.push(p.attribute_body(name.to_string(), at)?);
            Ok(())
        })?;
        Ok(attrs)
    }

    /// What follows an attribute's name: `(: type)? = value`. `at` is where the name starts.
    fn attribute_body(&mut self, name: String, at: usize) -> Result<AttributeProto> {
        let declared = if self.eat(b':')? {
            let (t, t_at) = self.ident("an attribute type")?;
            let Some(&(_, declared)) = ATTR_TYPES.iter().find(|(n, _)| *n == t) else {
                let known = ATTR_TYPES
                    .iter()
                    .map(|&(n, _)| n)
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(self.error_at(
                    t_at,
                    format!("unknown attribute type `{t}` (expected one of: {known})"),
                ));
            };
            Some(declared)
        } else {
            None
        };
        if !self.eat(b'=')? {
            return Err(self.unexpected(&format!("`=` and a value for attribute `{name}`")));
        }
        let mut attr = AttributeProto {
            name,
            ..Default::default()
        };
        if self.eat(b'@')? {
            attr.ref_attr_name = self.name("the name of the referenced attribute")?;
            attr.r#type = declared.unwrap_or(AttributeType::Undefined) as i32;
        } else if self.eat(b'[')? {
            let mut values = Vec::new();
            self.list_until(b']', |p| {
                let v_at = p.peek()?.start;
                values.push((p.attr_value()?, v_at));
                Ok(())
            })?;
            self.fill_list(&mut attr, declared, values, at)?;
        } else {
            let v_at = self.peek()?.start;
            let value = self.attr_value()?;
            let kind = match declared {
                Some(d) if elem_of_list_type(d).is_some() => {
                    let message = format!(
                        "attribute `{}` is declared `{}`, so its value must be a list `[...]`",
                        attr.name,
                        attr_type_name(d)
                    );
                    return Err(self.error_at(v_at, message));
                }
                Some(d) => d,
                None => value.kind(),
            };
            self.typed(&attr.name, kind, false, value, v_at)?
                .set(&mut attr);
            attr.r#type = kind as i32;
        }
        Ok(attr)
    }

    /// Type a list attribute and store its values.
    fn fill_list(
        &self,
        attr: &mut AttributeProto,
        declared: Option<AttributeType>,
        values: Vec<(Value<'s>, usize)>,
        at: usize,
    ) -> Result<()> {
        let elem = match declared {
            Some(d) => elem_of_list_type(d).ok_or_else(|| {
                let message = format!(
                    "attribute `{}` is declared `{}`, a single value, but is given a list",
                    attr.name,
                    attr_type_name(d)
                );
                self.error_at(at, message)
            })?,
            None => {
                let Some((first, _)) = values.first() else {
                    let message = format!(
                        "the empty list of attribute `{}` needs a declared type, e.g. `{}: ints = []`",
                        attr.name, attr.name
                    );
                    return Err(self.error_at(at, message));
                };
                // A list of ints and floats is a list of floats.
                let numeric = |k| matches!(k, AttributeType::Int | AttributeType::Float);
                let kinds = values.iter().map(|(v, _)| v.kind());
                if numeric(first.kind()) && kinds.clone().all(numeric) {
                    kinds
                        .max_by_key(|&k| k == AttributeType::Float)
                        .unwrap_or(AttributeType::Int)
                } else {
                    first.kind()
                }
            }
        };
        attr.r#type = list_type_of(elem).unwrap_or(AttributeType::Undefined) as i32;
        for (value, v_at) in values {
            self.typed(&attr.name, elem, true, value, v_at)?.push(attr);
        }
        Ok(())
    }

    /// Convert `value` to an attribute value of type `kind` (single-value types only): an int
    /// literal becomes a float where `kind` is float; other kinds must match. `list` is for
    /// the message.
    fn typed(
        &self,
        attr_name: &str,
        kind: AttributeType,
        list: bool,
        value: Value<'s>,
        at: usize,
    ) -> Result<Typed> {
        Ok(match (kind, value) {
            (AttributeType::Int, Value::Int(text)) => Typed::Int(self.parse_int(text, at, "int")?),
            (AttributeType::Float, Value::Int(text)) => {
                Typed::Float(self.parse_float(text, at, "float")?)
            }
            (AttributeType::Float, Value::Float(v)) => Typed::Float(v),
            (AttributeType::String, Value::Str(s)) => Typed::Str(s),
            (AttributeType::Tensor, Value::Tensor(t)) => Typed::Tensor(t),
            (AttributeType::Graph, Value::Graph(g)) => Typed::Graph(g),
            (AttributeType::TypeProto, Value::Type(t)) => Typed::Type(t),
            (AttributeType::SparseTensor, _) => {
                return Err(self.error_at(at, "sparse tensor attribute values have no text form"));
            }
            (_, value) => {
                let takes = if list {
                    format!("a list of {} values", attr_type_name(kind))
                } else {
                    format!("{} value", a_kind(kind))
                };
                let found = a_kind(value.kind());
                let message = format!("attribute `{attr_name}` takes {takes}, found {found}");
                return Err(self.error_at(at, message));
            }
        })
    }

    /// One attribute value: a literal, a tensor, a type, or a graph.
    fn attr_value(&mut self) -> Result<Value<'s>> {
        let t = self.peek()?;
        let at = t.start;
        Ok(match t.tok.clone() {
            Tok::Int(text) => {
                self.bump()?;
                Value::Int(text)
            }
            Tok::Float(text) => {
                self.bump()?;
                Value::Float(self.parse_float(text, at, "float")?)
            }
            Tok::Str(_) => Value::Str(self.string("a string")?.into_bytes()),
            Tok::Ident(_) if self.next_is_type()? => {
                let ty = self.type_proto()?;
                let is_tensor = matches!(
                    self.peek()?.tok,
                    Tok::Punct(b'{' | b'=' | b'[') | Tok::Ident(_) | Tok::Str(_)
                );
                if !is_tensor {
                    return Ok(Value::Type(ty));
                }
                let name = match self.peek()?.tok {
                    Tok::Ident(_) | Tok::Str(_) => self.name("a tensor name")?,
                    _ => String::new(),
                };
                self.eat(b'=')?;
                Value::Tensor(self.tensor_data(Some(&ty), name)?)
            }
            Tok::Ident(id) if is_special_float(id) => {
                self.bump()?;
                Value::Float(self.parse_float(id, at, "float")?)
            }
            Tok::Ident(_) => Value::Graph(self.graph()?),
            _ => return Err(self.unexpected("an attribute value")),
        })
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::onnx::proto::type_proto::Value as T;

    fn parse(src: &str) -> ModelProto {
        parse_model_text(src).unwrap_or_else(|e| panic!("{e}\n--- in ---\n{src}"))
    }

    fn parse_err(src: &str) -> TextError {
        match parse_model_text(src) {
            Ok(m) => panic!("parsed, expected an error: {m:?}\n--- in ---\n{src}"),
            Err(e) => e,
        }
    }

    /// The main graph of a model with the given graph text.
    fn graph(src: &str) -> GraphProto {
        parse(src).graph.expect("a graph")
    }

    /// The attributes of the one node of `g (float x) => (float y) { y = Op <attrs> (x) }`.
    fn attrs(attrs: &str) -> Vec<AttributeProto> {
        let g = graph(&format!(
            "g (float x) => (float y) {{ y = Op <{attrs}> (x) }}"
        ));
        g.node.into_iter().next().expect("a node").attribute
    }

    fn ty(a: &AttributeProto) -> AttributeType {
        AttributeType::try_from(a.r#type).expect("a known attribute type")
    }

    /// The type of the one input of `g (<ty> x) => () {}`.
    fn input_type(ty: &str) -> TypeProto {
        let g = graph(&format!("g ({ty} x) => () {{}}"));
        g.input[0].r#type.clone().expect("a type")
    }

    fn tensor_type(t: &TypeProto) -> (i32, Option<Vec<Option<dimension::Value>>>) {
        match &t.value {
            Some(T::TensorType(tt)) => (
                tt.elem_type,
                tt.shape
                    .as_ref()
                    .map(|s| s.dim.iter().map(|d| d.value.clone()).collect()),
            ),
            other => panic!("not a tensor type: {other:?}"),
        }
    }

    /// The one initializer of `g () => () <init> {}`.
    fn initializer(init: &str) -> TensorProto {
        let g = graph(&format!("g () => () <{init}> {{}}"));
        g.initializer.into_iter().next().expect("an initializer")
    }

    fn dv(v: i64) -> Option<dimension::Value> {
        Some(dimension::Value::DimValue(v))
    }

    fn dp(p: &str) -> Option<dimension::Value> {
        Some(dimension::Value::DimParam(p.into()))
    }

    const BRIEF_EXAMPLE: &str = r#"
<
  ir_version: 8,
  opset_import: ["" : 18, "custom.domain" : 1],
  producer_name: "me"
>
agraph (float[N, 128] X, float[128, 10] W, float[10] B) => (float[N, 10] C)
<float[10] B = {0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0}, int64[2] shape = {1, -1}>
{
    T = MatMul(X, W)
    S = Add(T, B)
    C = Softmax <axis = -1> (S)
    Z = Conv <kernel_shape = [3, 3], pads = [1,1,1,1], auto_pad = "NOTSET", alpha = 0.5> (A, K, )
    R = If (cond) <then_branch = g1 () => (float[2] y) { y = Identity(a) }, else_branch = g2 () => (float[2] y) { y = Neg(a) }>
}
<domain: "local", opset_import: ["" : 18]>
MyFn <alpha> (x) => (y) { y = Elu <alpha: float = @alpha> (x) }
"#;

    #[test]
    fn parses_the_example() {
        let m = parse(BRIEF_EXAMPLE);
        assert_eq!(m.ir_version, 8);
        assert_eq!(m.producer_name, "me");
        let opsets: Vec<_> = m
            .opset_import
            .iter()
            .map(|o| (o.domain.as_str(), o.version))
            .collect();
        assert_eq!(opsets, [("", 18), ("custom.domain", 1)]);

        let g = m.graph.as_ref().unwrap();
        assert_eq!(g.name, "agraph");
        let names = |v: &[ValueInfoProto]| v.iter().map(|v| v.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&g.input), ["X", "W", "B"]);
        assert_eq!(names(&g.output), ["C"]);
        assert_eq!(
            tensor_type(g.input[0].r#type.as_ref().unwrap()),
            (1, Some(vec![dp("N"), dv(128)]))
        );
        assert!(g.value_info.is_empty());

        assert_eq!(g.initializer.len(), 2);
        let b = &g.initializer[0];
        assert_eq!(
            (b.name.as_str(), b.data_type, b.dims.as_slice()),
            ("B", 1, &[10][..])
        );
        assert_eq!(b.float_data, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        let shape = &g.initializer[1];
        assert_eq!(
            (
                shape.name.as_str(),
                shape.data_type,
                shape.int64_data.as_slice()
            ),
            ("shape", 7, &[1, -1][..])
        );

        let ops: Vec<_> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["MatMul", "Add", "Softmax", "Conv", "If"]);
        assert_eq!(g.node[0].input, ["X", "W"]);
        assert_eq!(g.node[0].output, ["T"]);
        let softmax = &g.node[2].attribute[0];
        assert_eq!(
            (softmax.name.as_str(), ty(softmax), softmax.i),
            ("axis", AttributeType::Int, -1)
        );

        let conv = &g.node[3];
        assert_eq!(conv.input, ["A", "K"], "a trailing comma adds no input");
        let a: Vec<_> = conv
            .attribute
            .iter()
            .map(|a| (a.name.as_str(), ty(a)))
            .collect();
        assert_eq!(
            a,
            [
                ("kernel_shape", AttributeType::Ints),
                ("pads", AttributeType::Ints),
                ("auto_pad", AttributeType::String),
                ("alpha", AttributeType::Float)
            ]
        );
        assert_eq!(conv.attribute[0].ints, [3, 3]);
        assert_eq!(conv.attribute[1].ints, [1, 1, 1, 1]);
        assert_eq!(conv.attribute[2].s, b"NOTSET");
        assert_eq!(conv.attribute[3].f, 0.5);

        let r#if = &g.node[4];
        assert_eq!(r#if.input, ["cond"]);
        let branches: Vec<_> = r#if
            .attribute
            .iter()
            .map(|a| {
                assert_eq!(ty(a), AttributeType::Graph);
                let g = a.g.as_ref().unwrap();
                (
                    a.name.as_str(),
                    g.name.as_str(),
                    g.node[0].op_type.as_str(),
                    g.output[0].name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            branches,
            [
                ("then_branch", "g1", "Identity", "y"),
                ("else_branch", "g2", "Neg", "y")
            ]
        );

        assert_eq!(m.functions.len(), 1);
        let f = &m.functions[0];
        assert_eq!((f.name.as_str(), f.domain.as_str()), ("MyFn", "local"));
        assert_eq!(
            f.opset_import,
            [OperatorSetIdProto {
                domain: String::new(),
                version: 18
            }]
        );
        assert_eq!(f.attribute, ["alpha"]);
        assert_eq!(
            (f.input.as_slice(), f.output.as_slice()),
            (&["x".to_string()][..], &["y".to_string()][..])
        );
        let elu_alpha = &f.node[0].attribute[0];
        assert_eq!(elu_alpha.ref_attr_name, "alpha");
        assert_eq!(ty(elu_alpha), AttributeType::Float);
    }

    // --- the ONNX printer's output, with the protobuf the ONNX parser makes of it ---

    /// Parse `<name>.onnxtxt` and check the result against `<name>.pb`, the bytes
    /// `onnx.parser.parse_model` gives for the same text (see the fixtures' README).
    fn fixture(name: &str, text: &str, expected: &[u8]) -> ModelProto {
        let ours = parse(text);
        let theirs = ModelProto::decode(expected).expect("fixture protobuf");
        assert_eq!(
            ours.encode_to_vec(),
            theirs.encode_to_vec(),
            "{name}: differs from onnx.parser\nours:   {ours:?}\ntheirs: {theirs:?}"
        );
        ours
    }

    macro_rules! fixture {
        ($name:literal) => {
            fixture(
                $name,
                include_str!(concat!(
                    "../../tests/fixtures/onnx-text/",
                    $name,
                    ".onnxtxt"
                )),
                include_bytes!(concat!("../../tests/fixtures/onnx-text/", $name, ".pb")),
            )
        };
    }

    fn op_types(nodes: &[NodeProto]) -> Vec<&str> {
        nodes.iter().map(|n| n.op_type.as_str()).collect()
    }

    #[test]
    fn fixture_conv_with_strides_padding() {
        let m = fixture!("conv_with_strides_padding");
        assert_eq!(
            (m.ir_version, m.producer_name.as_str()),
            (10, "backend-test")
        );
        assert_eq!(
            m.opset_import,
            [OperatorSetIdProto {
                domain: String::new(),
                version: 22
            }]
        );
        let g = m.graph.unwrap();
        assert_eq!(g.name, "test_conv_with_strides_padding");
        assert_eq!(op_types(&g.node), ["Conv"]);
        assert_eq!(
            tensor_type(g.input[0].r#type.as_ref().unwrap()),
            (1, Some(vec![dv(1), dv(1), dv(7), dv(5)]))
        );
        assert_eq!(
            tensor_type(g.output[0].r#type.as_ref().unwrap()),
            (1, Some(vec![dv(1), dv(1), dv(4), dv(3)]))
        );
        let a: Vec<_> = g.node[0]
            .attribute
            .iter()
            .map(|a| (a.name.as_str(), ty(a), a.ints.clone()))
            .collect();
        assert_eq!(
            a,
            [
                ("kernel_shape", AttributeType::Ints, vec![3, 3]),
                ("pads", AttributeType::Ints, vec![1, 1, 1, 1]),
                ("strides", AttributeType::Ints, vec![2, 2])
            ]
        );
    }

    #[test]
    fn fixture_if() {
        let m = fixture!("if");
        let g = m.graph.unwrap();
        assert_eq!(op_types(&g.node), ["If"]);
        let branches: Vec<_> = g.node[0]
            .attribute
            .iter()
            .map(|a| {
                assert_eq!(ty(a), AttributeType::Graph);
                let body = a.g.as_ref().unwrap();
                assert_eq!(op_types(&body.node), ["Constant"]);
                let value = &body.node[0].attribute[0];
                assert_eq!(
                    (value.name.as_str(), ty(value)),
                    ("value", AttributeType::Tensor)
                );
                let t = value.t.as_ref().unwrap();
                assert_eq!((t.data_type, t.dims.as_slice()), (1, &[5][..]));
                (a.name.as_str(), body.name.as_str(), t.float_data.clone())
            })
            .collect();
        assert_eq!(
            branches,
            [
                ("else_branch", "else_body", vec![5.0, 4.0, 3.0, 2.0, 1.0]),
                ("then_branch", "then_body", vec![1.0, 2.0, 3.0, 4.0, 5.0])
            ]
        );
    }

    #[test]
    fn fixture_lstm_defaults() {
        let g = fixture!("lstm_defaults").graph.unwrap();
        assert_eq!(op_types(&g.node), ["LSTM"]);
        assert_eq!(g.node[0].output, ["", "Y_h"], "an empty output name");
        assert_eq!(g.node[0].input, ["X", "W", "R"]);
        let h = &g.node[0].attribute[0];
        assert_eq!(
            (h.name.as_str(), ty(h), h.i),
            ("hidden_size", AttributeType::Int, 3)
        );
    }

    #[test]
    fn fixture_loop16_seq_none() {
        let g = fixture!("loop16_seq_none").graph.unwrap();
        // optional(seq(float)): a scalar float element type inside.
        let Some(T::OptionalType(opt)) = &g.input[2].r#type.as_ref().unwrap().value else {
            panic!()
        };
        let Some(T::SequenceType(seq)) = &opt.elem_type.as_ref().unwrap().value else {
            panic!()
        };
        assert_eq!(
            tensor_type(seq.elem_type.as_ref().unwrap()),
            (1, Some(vec![]))
        );
        // seq(float[]): unknown rank.
        let Some(T::SequenceType(seq)) = &g.output[0].r#type.as_ref().unwrap().value else {
            panic!()
        };
        assert_eq!(tensor_type(seq.elem_type.as_ref().unwrap()), (1, None));

        let body = g.node[0].attribute[0].g.as_ref().unwrap();
        assert_eq!(
            op_types(&body.node),
            [
                "Identity",
                "OptionalHasElement",
                "Not",
                "If",
                "Constant",
                "Constant",
                "Constant",
                "Add",
                "Constant",
                "Unsqueeze",
                "Slice",
                "SequenceInsert"
            ]
        );
        let then = body.node[3].attribute[1].g.as_ref().unwrap();
        let t = then.node[0].attribute[0].t.as_ref().unwrap();
        assert_eq!(
            (t.name.as_str(), t.dims.len(), t.float_data.as_slice()),
            ("const_tensor", 0, &[0.0][..])
        );
        let one = body.node[5].attribute[0].t.as_ref().unwrap();
        assert_eq!(
            (one.name.as_str(), one.data_type, one.int64_data.as_slice()),
            ("const_tensor_one", 7, &[1][..])
        );
    }

    #[test]
    fn fixture_features() {
        let m = fixture!("features");
        assert_eq!(
            (
                m.producer_version.as_str(),
                m.domain.as_str(),
                m.model_version
            ),
            ("0.1", "ai.terafab.test", 3)
        );
        assert_eq!(m.doc_string, r#"a fixture with "quotes" and a \ backslash"#);
        let props: Vec<_> = m
            .metadata_props
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
            .collect();
        assert_eq!(props, [("author", "terafab"), ("purpose", "text parser")]);

        let g = m.graph.as_ref().unwrap();
        assert_eq!(g.output[2].name, "weird name");
        assert_eq!(tensor_type(g.input[4].r#type.as_ref().unwrap()), (1, None));
        let inits: Vec<_> = g
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t.data_type, t.dims.clone()))
            .collect();
        assert_eq!(
            inits,
            [
                ("bias", 1, vec![4]),
                ("idx", 7, vec![2]),
                ("h", 10, vec![2]),
                ("mask", 9, vec![3]),
                ("names", 8, vec![2]),
                ("big", 13, vec![1]),
                ("dbl", 11, vec![]),
                ("bytes", 2, vec![2]),
                ("small", 3, vec![2]),
                ("odd init", 1, vec![2])
            ]
        );
        assert_eq!(g.initializer[0].float_data, [0.5, -1.0, 1e-5, 3.5]);
        assert_eq!(g.initializer[2].int32_data, [15360, 48128]);
        assert_eq!(
            g.initializer[4].string_data,
            [b"a".to_vec(), b"b\\c".to_vec()]
        );
        assert_eq!(g.initializer[5].uint64_data, [u64::MAX]);
        assert_eq!(g.initializer[6].double_data, [0.1]);
        assert_eq!(g.initializer[8].int32_data, [-128, 127]);
        let odd = &g.initializer[9].float_data;
        assert!(odd[0] == f32::INFINITY && odd[1].is_nan() && odd[1].is_sign_negative());
        assert_eq!(g.value_info.len(), 1);

        let nodes: Vec<_> = g
            .node
            .iter()
            .map(|n| (n.name.as_str(), n.domain.as_str(), n.op_type.as_str()))
            .collect();
        assert_eq!(
            nodes,
            [
                ("first_add", "", "Add"),
                ("", "local", "LocalScale"),
                ("", "com.microsoft", "Gelu"),
                ("", "", "Split"),
                ("", "", "Identity")
            ]
        );
        let split = &g.node[3];
        assert_eq!(
            (split.input.as_slice(), split.output.as_slice()),
            (
                &["U", "", "idx"].map(String::from)[..],
                &["Z", "", "extra"].map(String::from)[..]
            )
        );
        let kinds: Vec<_> = split.attribute.iter().map(ty).collect();
        let expected = [
            AttributeType::Int,
            AttributeType::Strings,
            AttributeType::Floats,
            AttributeType::TypeProto,
            AttributeType::Tensor,
        ];
        assert_eq!(kinds, expected);
        assert_eq!(split.attribute[2].floats, [1.5, -2.0]);
        let t2 = split.attribute[4].t.as_ref().unwrap();
        assert_eq!(
            (t2.name.as_str(), t2.int32_data.as_slice()),
            ("named", &[7, -7][..])
        );

        let f = &m.functions[0];
        assert_eq!(
            (f.name.as_str(), f.domain.as_str(), f.attribute.as_slice()),
            ("LocalScale", "local", &["alpha".to_string()][..])
        );
        assert_eq!(op_types(&f.node), ["Constant", "Mul"]);
        assert_eq!(f.node[0].attribute[0].ref_attr_name, "alpha");
    }

    /// The hand-written source of the `features` fixture parses to the same model as the
    /// printer's rendering of it.
    #[test]
    fn fixture_source_matches_printed() {
        let src = include_str!("../../tests/fixtures/onnx-text/features.src.onnxtxt");
        let printed = include_str!("../../tests/fixtures/onnx-text/features.onnxtxt");
        assert_eq!(parse(src).encode_to_vec(), parse(printed).encode_to_vec());
    }

    // --- attributes ---

    #[test]
    fn attribute_kinds_from_values() {
        let a = attrs(
            r#"i = 3, f = 2.5, s = "x", is = [1, -2], fs = [1.5, 2], ss = ["a", "b"],
               t = int64[2] {1, 2}, tp = seq(float[2]), g = body () => (float z) { z = Neg (x) },
               nf = -inf, nan_ = nan, big = 1e3"#,
        );
        let kinds: Vec<_> = a.iter().map(|a| (a.name.as_str(), ty(a))).collect();
        assert_eq!(
            kinds,
            [
                ("i", AttributeType::Int),
                ("f", AttributeType::Float),
                ("s", AttributeType::String),
                ("is", AttributeType::Ints),
                ("fs", AttributeType::Floats),
                ("ss", AttributeType::Strings),
                ("t", AttributeType::Tensor),
                ("tp", AttributeType::TypeProto),
                ("g", AttributeType::Graph),
                ("nf", AttributeType::Float),
                ("nan_", AttributeType::Float),
                ("big", AttributeType::Float),
            ]
        );
        assert_eq!((a[0].i, a[1].f, a[2].s.as_slice()), (3, 2.5, &b"x"[..]));
        assert_eq!(a[3].ints, [1, -2]);
        assert_eq!(a[4].floats, [1.5, 2.0], "ints mixed with floats are floats");
        assert_eq!(a[5].strings, [b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(a[6].t.as_ref().unwrap().int64_data, [1, 2]);
        assert!(matches!(
            a[7].tp.as_ref().unwrap().value,
            Some(T::SequenceType(_))
        ));
        assert_eq!(a[8].g.as_ref().unwrap().name, "body");
        assert_eq!(a[9].f, f32::NEG_INFINITY);
        assert!(a[10].f.is_nan());
        assert_eq!(a[11].f, 1000.0);
    }

    #[test]
    fn declared_attribute_types() {
        let a = attrs(
            "f: float = 1, nz: float = -0, fs: floats = [1, 2], is: ints = [], gs: graphs = [],
             ss: strings = [], ts: tensors = [], tps: type_protos = [], r: int = @outer, u = @other",
        );
        let kinds: Vec<_> = a.iter().map(ty).collect();
        use AttributeType as A;
        assert_eq!(
            kinds,
            [
                A::Float,
                A::Float,
                A::Floats,
                A::Ints,
                A::Graphs,
                A::Strings,
                A::Tensors,
                A::TypeProtos,
                A::Int,
                A::Undefined
            ]
        );
        assert_eq!(a[0].f, 1.0);
        assert!(
            a[1].f == 0.0 && a[1].f.is_sign_negative(),
            "`-0` as a float keeps its sign"
        );
        assert_eq!(a[2].floats, [1.0, 2.0]);
        assert!(a[3].ints.is_empty());
        assert_eq!(
            (a[8].ref_attr_name.as_str(), a[9].ref_attr_name.as_str()),
            ("outer", "other")
        );
    }

    #[test]
    fn lists_of_tensors_graphs_and_types() {
        let a = attrs(
            "ts = [float[2] {1, 2}, int64 named {3}], tps = [float[2], seq(int64)],
             gs = [a () => (float z) { z = Neg (x) }, b () => (float z) { z = Abs (x) }]",
        );
        assert_eq!(
            (ty(&a[0]), ty(&a[1]), ty(&a[2])),
            (
                AttributeType::Tensors,
                AttributeType::TypeProtos,
                AttributeType::Graphs
            )
        );
        assert_eq!(a[0].tensors[0].float_data, [1.0, 2.0]);
        assert_eq!(
            (
                a[0].tensors[1].name.as_str(),
                a[0].tensors[1].int64_data.as_slice()
            ),
            ("named", &[3][..])
        );
        assert_eq!(a[1].type_protos.len(), 2);
        let names: Vec<_> = a[2].graphs.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn tensor_attribute_forms() {
        // With and without a name, with `=`, with a quoted name, external data.
        let a = attrs(
            r#"a = float {1}, b = float nm {2}, c = float nm = {3}, d = float "q n" {4}, e = float[1] ["location": "f.bin"]"#,
        );
        let t: Vec<_> = a.iter().map(|a| a.t.as_ref().unwrap()).collect();
        assert_eq!(
            t.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["", "nm", "nm", "q n", ""]
        );
        assert_eq!(t[3].float_data, [4.0]);
        assert_eq!(t[4].data_location, 1);
        assert_eq!(
            (
                t[4].external_data[0].key.as_str(),
                t[4].external_data[0].value.as_str()
            ),
            ("location", "f.bin")
        );
    }

    #[test]
    fn attributes_before_or_after_inputs() {
        let g = graph(
            "g (float x) => (float y) { y = Foo (x) <a = 1> z = Bar <b = 2> (x) w = Baz (x) }",
        );
        let a: Vec<_> = g
            .node
            .iter()
            .map(|n| {
                n.attribute
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(a, [vec!["a"], vec!["b"], vec![]]);
    }

    // --- nodes ---

    #[test]
    fn node_names_domains_overloads_and_empty_names() {
        let g = graph(
            r#"g (float x) => (float y) {
                [n0] y = com.example.Foo:v2 (x)
                ["node 1"] a, , "" = Split (x, , "c d", )
                = Sink ()
                , = Two (,)
            }"#,
        );
        let n = &g.node;
        assert_eq!(
            (
                n[0].name.as_str(),
                n[0].domain.as_str(),
                n[0].op_type.as_str(),
                n[0].overload.as_str()
            ),
            ("n0", "com.example", "Foo", "v2")
        );
        assert_eq!(n[1].name, "node 1");
        assert_eq!(n[1].output, ["a", "", ""]);
        assert_eq!(n[1].input, ["x", "", "c d"]);
        assert!(n[2].output.is_empty() && n[2].input.is_empty());
        assert_eq!(
            (n[3].output.as_slice(), n[3].input.as_slice()),
            (&[String::new()][..], &[String::new()][..])
        );
    }

    // --- types and values ---

    #[test]
    fn tensor_types_and_dims() {
        assert_eq!(
            tensor_type(&input_type("float")),
            (1, Some(vec![])),
            "no brackets: a scalar"
        );
        assert_eq!(
            tensor_type(&input_type("float[]")),
            (1, None),
            "`[]`: unknown rank"
        );
        assert_eq!(
            tensor_type(&input_type(r#"int8[2, N, ?, "a b"]"#)),
            (3, Some(vec![dv(2), dp("N"), None, dp("a b")]))
        );
        let codes: Vec<_> = ELEM_TYPES
            .iter()
            .map(|&(n, _)| tensor_type(&input_type(&format!("{n}[1]"))).0)
            .collect();
        assert_eq!(
            codes,
            ELEM_TYPES.iter().map(|&(_, c)| c).collect::<Vec<_>>()
        );
        // The usual ones, spelled out.
        let named = [
            ("float", 1),
            ("double", 11),
            ("float16", 10),
            ("bfloat16", 16),
            ("int8", 3),
            ("int16", 5),
            ("int32", 6),
            ("int64", 7),
            ("uint8", 2),
            ("uint16", 4),
            ("uint32", 12),
            ("uint64", 13),
            ("bool", 9),
            ("string", 8),
        ];
        for (name, code) in named {
            assert_eq!(tensor_type(&input_type(name)).0, code, "{name}");
        }
    }

    #[test]
    fn composite_types() {
        let Some(T::SequenceType(s)) = input_type("seq(float[2])").value else {
            panic!()
        };
        assert_eq!(
            tensor_type(s.elem_type.as_ref().unwrap()),
            (1, Some(vec![dv(2)]))
        );
        let Some(T::OptionalType(o)) = input_type("optional(seq(int64))").value else {
            panic!()
        };
        assert!(matches!(
            o.elem_type.unwrap().value,
            Some(T::SequenceType(_))
        ));
        let Some(T::MapType(m)) = input_type("map(string, float[3])").value else {
            panic!()
        };
        assert_eq!(m.key_type, 8);
        assert_eq!(
            tensor_type(m.value_type.as_ref().unwrap()),
            (1, Some(vec![dv(3)]))
        );
        let Some(T::SparseTensorType(sp)) = input_type("sparse_tensor(float[3, N])").value else {
            panic!()
        };
        assert_eq!((sp.elem_type, sp.shape.unwrap().dim.len()), (1, 2));
        let opaque = |src| match input_type(src).value {
            Some(T::OpaqueType(o)) => (o.domain, o.name),
            other => panic!("{other:?}"),
        };
        assert_eq!(opaque("opaque()"), (String::new(), String::new()));
        assert_eq!(opaque("opaque(thing)"), (String::new(), "thing".into()));
        assert_eq!(
            opaque("opaque(ai.onnx.ml, thing)"),
            ("ai.onnx.ml".into(), "thing".into())
        );
    }

    #[test]
    fn tensor_literals_of_every_storage() {
        let t = initializer("int16[2] a = {-32768, 32767}");
        assert_eq!(t.int32_data, [-32768, 32767]);
        let t = initializer("uint32[1] a = {4294967295}");
        assert_eq!(t.uint64_data, [u64::from(u32::MAX)]);
        let t = initializer("int64[2] a = {-9223372036854775808, 9223372036854775807}");
        assert_eq!(t.int64_data, [i64::MIN, i64::MAX]);
        let t = initializer("double[3] a = {1e300, -0.5, 7}");
        assert_eq!(t.double_data, [1e300, -0.5, 7.0]);
        let t = initializer("complex64[1] a = {1, -2}");
        assert_eq!(t.float_data, [1.0, -2.0]);
        let t = initializer(r#"string[2] a = {"x", "y\"z"}"#);
        assert_eq!(t.string_data, [b"x".to_vec(), b"y\"z".to_vec()]);
        let t = initializer("bfloat16[1] a = {16256}");
        assert_eq!(t.int32_data, [16256]);
        let t = initializer("float[0] a = {}");
        assert!(t.float_data.is_empty() && t.dims == [0]);
        let t = initializer("float[2] a =");
        assert!(
            t.float_data.is_empty() && t.raw_data.is_empty(),
            "no data at all"
        );
        let t = initializer(r#"float[2] a = ["location": "w.bin", "offset": "8"]"#);
        assert_eq!((t.data_location, t.external_data.len()), (1, 2));
    }

    #[test]
    fn graph_inputs_with_defaults_and_value_info() {
        let g = graph(
            "g (float[2] x = {1, 2}, int64 k) => (float[2] y) <float[2] t, int64 c = {3}> { t = Neg (x) y = Abs (t) }",
        );
        assert_eq!(g.input.len(), 2);
        let inits: Vec<_> = g.initializer.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(inits, ["x", "c"], "an input's default is an initializer");
        assert_eq!(
            g.value_info
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            ["t"]
        );
    }

    #[test]
    fn model_header_and_functions() {
        let m = parse(
            r#"<ir_version: 9, model_version: -1, producer_name: "p", producer_version: "v", domain: "d",
                doc_string: "multi
line", metadata_props: ["k": "v"], opset_import: []>
               g () => () {}
               <domain: "f", doc_string: "fd", overload: "o1", opset_import: ["" : 18]>
               F <a, b: float = 2.5, c = [1, 2]> (float[N] x, y) => (z) <float[N] t> { z = Neg (x) }
               "G 2" () => () {}"#,
        );
        assert_eq!(
            (m.ir_version, m.model_version, m.doc_string.as_str()),
            (9, -1, "multi\nline")
        );
        assert_eq!(
            (
                m.producer_name.as_str(),
                m.producer_version.as_str(),
                m.domain.as_str()
            ),
            ("p", "v", "d")
        );
        assert!(m.opset_import.is_empty());
        assert_eq!(m.metadata_props.len(), 1);
        let f = &m.functions[0];
        assert_eq!(
            (
                f.domain.as_str(),
                f.doc_string.as_str(),
                f.overload.as_str()
            ),
            ("f", "fd", "o1")
        );
        assert_eq!(
            (f.input.as_slice(), f.output.as_slice()),
            (&["x".to_string(), "y".into()][..], &["z".to_string()][..])
        );
        assert_eq!(f.attribute, ["a"]);
        let defaults: Vec<_> = f
            .attribute_proto
            .iter()
            .map(|a| (a.name.as_str(), ty(a)))
            .collect();
        assert_eq!(
            defaults,
            [("b", AttributeType::Float), ("c", AttributeType::Ints)]
        );
        assert_eq!(m.functions[1].name, "G 2");
        assert!(m.functions[1].domain.is_empty());
    }

    #[test]
    fn comments_and_whitespace() {
        let m = parse(
            "\u{feff}# top\n<ir_version:8#c\n>#x\ng#y\n(#z\nfloat x)=>(float y)\n{y=Neg(x)#n\n}\n# end",
        );
        assert_eq!(m.ir_version, 8);
        assert_eq!(op_types(&m.graph.unwrap().node), ["Neg"]);
    }

    // --- errors ---

    #[test]
    fn errors_point_at_the_offending_token() {
        let cases: &[(&str, usize, usize, &str)] = &[
            (
                "g (float x) => (float y) {\n  y = Neg(x\n}",
                3,
                1,
                "expected `)`, found `}`",
            ),
            (
                "g () => () {\n  y = Foo <s = \"abc> ()\n}",
                2,
                16,
                "unterminated string",
            ),
            ("g () = > () {}", 1, 6, "expected `=>`"),
            (
                "g () => () {\n y = Foo <a: intz = 1> ()\n}",
                2,
                14,
                "unknown attribute type `intz`",
            ),
            (
                "g () => () <uint8[1] b = {256}> {}",
                1,
                27,
                "256 is out of range for uint8 (0 to 255)",
            ),
            (
                "g () => () <float[3] b = {1, 2}> {}",
                1,
                26,
                "tensor `b` of type float[3] needs 3 values, found 2",
            ),
            (
                "g () => () <float[N] b = {1}> {}",
                1,
                26,
                "needs dimensions that are non-negative integers",
            ),
            (
                "g () => () <float[] b = {1}> {}",
                1,
                25,
                "needs a known shape",
            ),
            (
                "g () => () {\n  $ = Foo()\n}",
                2,
                3,
                "unexpected character '$'",
            ),
            (
                "<doc_string: \"héllo\", bad: 1>\ng () => () {}",
                1,
                23,
                "unknown model header key `bad`",
            ),
            (
                "<ir_version: 1, ir_version: 2> g () => () {}",
                1,
                17,
                "`ir_version` is given twice",
            ),
            (
                "g () => () {",
                1,
                13,
                "expected a node (`outputs = Op (inputs)`) or `}`, found the end of the input",
            ),
            (
                "g () => () { y = Foo <a = 1, a = 2> () }",
                1,
                30,
                "attribute `a` is given twice",
            ),
            (
                "g () => () { y = Foo <a: int = 1.5> () }",
                1,
                32,
                "attribute `a` takes an int value, found a float",
            ),
            (
                "g () => () { y = Foo <a: ints = 1> () }",
                1,
                33,
                "must be a list",
            ),
            (
                "g () => () { y = Foo <a: int = [1]> () }",
                1,
                23,
                "a single value, but is given a list",
            ),
            (
                "g () => () { y = Foo <a = []> () }",
                1,
                23,
                "needs a declared type",
            ),
            (
                "g () => () { y = Foo <a = [1, \"s\"]> () }",
                1,
                31,
                "takes a list of int values, found a string",
            ),
            (
                "g () => () { y = Foo <a = 99999999999999999999> () }",
                1,
                27,
                "out of range for int",
            ),
            (
                "g () => () { y = Foo <a = 1e99> () }",
                1,
                27,
                "`1e99` is out of range for float",
            ),
            (
                "g () => () { y = Foo <a = 1e> () }",
                1,
                27,
                "the exponent has no digits",
            ),
            (
                "g () => () { y = Foo <a = -x> () }",
                1,
                27,
                "invalid number `-x`",
            ),
            (
                "g (flt x) => () {}",
                1,
                8,
                "expected `)`, found identifier `x`",
            ),
            (
                "g (seq(float x) => () {}",
                1,
                14,
                "expected `)`, found identifier `x`",
            ),
            (
                "g (map(foo, float) x) => () {}",
                1,
                8,
                "`foo` is not an element type",
            ),
            (
                "g () => () {}\n<domain: \"d\", version: 1> F () => () {}",
                2,
                15,
                "unknown function header key `version`",
            ),
            (
                "g () => () {} )",
                1,
                15,
                "expected a function name, found `)`",
            ),
            (
                "g () => () { y = (x) }",
                1,
                18,
                "expected an operator name, found `(`",
            ),
            (
                "g () => () { y = Foo x }",
                1,
                22,
                "expected `(` and the inputs of `Foo`",
            ),
            (
                "g () => () { y = Foo <sp: sparse_tensor = float[1] {1}> () }",
                1,
                43,
                "sparse tensor attribute values have no text form",
            ),
            (
                "",
                1,
                1,
                "expected a graph name, found the end of the input",
            ),
        ];
        let wrong: Vec<String> = cases
            .iter()
            .filter_map(|&(src, line, column, message)| {
                let e = parse_err(src);
                let right = e.line == line && e.column == column && e.message.contains(message);
                (!right).then(|| {
                    format!(
                        "{src:?}: got `{e}`, expected line {line}, column {column}: ...{message}..."
                    )
                })
            })
            .collect();
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn error_display() {
        let e = parse_err("g () => () {\n  y = Neg(x\n}");
        assert_eq!(e.to_string(), "line 3, column 1: expected `)`, found `}`");
    }

    // --- hostile input ---

    /// The type `seq(` * n `float` `)` * n.
    fn nested_seq(n: usize) -> String {
        format!("{}float{}", "seq(".repeat(n), ")".repeat(n))
    }

    /// A graph nested `n` deep through `If` attributes.
    fn nested_graphs(n: usize) -> String {
        let mut g = "g () => () {}".to_string();
        for _ in 1..n {
            g = format!("g () => () {{ y = If <then_branch = {g}> () }}");
        }
        g
    }

    #[test]
    fn nesting_is_bounded() {
        // The graph is one level, the element type one more.
        parse(&format!("g ({} x) => () {{}}", nested_seq(MAX_DEPTH - 2)));
        let e = parse_err(&format!("g ({} x) => () {{}}", nested_seq(MAX_DEPTH - 1)));
        assert!(e.message.contains("nest deeper than 64"), "{e}");
        parse(&nested_graphs(MAX_DEPTH));
        let e = parse_err(&nested_graphs(MAX_DEPTH + 1));
        assert!(e.message.contains("nest deeper than 64"), "{e}");
        // Far past the limit: an error, not a stack overflow.
        parse_err(&format!("g ({} x) => () {{}}", nested_seq(100_000)));
        parse_err(&nested_graphs(1_000));
        parse_err(&"g () => () { y = If <a = ".repeat(10_000));
    }

    #[test]
    fn large_inputs() {
        let n = 200_000;
        let values = (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let t = initializer(&format!("float[{n}] w = {{{values}}}"));
        assert_eq!(
            (t.float_data.len(), t.float_data[n - 1]),
            (n, (n - 1) as f32)
        );
        let many = (0..20_000)
            .map(|i| format!("a{i} = {i}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(attrs(&many).len(), 20_000);
    }

    /// Check that an error's position lies inside `src` (or just after its end).
    fn check_position(src: &str, e: &TextError) {
        let lines: Vec<&str> = src.split('\n').collect();
        assert!(
            e.line >= 1 && e.line <= lines.len(),
            "line {} of {}: {e}\n{src:?}",
            e.line,
            lines.len()
        );
        let len = lines[e.line - 1].chars().count();
        assert!(
            e.column >= 1 && e.column <= len + 1,
            "column {} of {len}: {e}\n{src:?}",
            e.column
        );
    }

    fn parse_any(src: &str) {
        if let Err(e) = parse_model_text(src) {
            check_position(src, &e);
        }
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn valid_texts() -> Vec<&'static str> {
        vec![
            BRIEF_EXAMPLE,
            include_str!("../../tests/fixtures/onnx-text/conv_with_strides_padding.onnxtxt"),
            include_str!("../../tests/fixtures/onnx-text/if.onnxtxt"),
            include_str!("../../tests/fixtures/onnx-text/lstm_defaults.onnxtxt"),
            include_str!("../../tests/fixtures/onnx-text/loop16_seq_none.onnxtxt"),
            include_str!("../../tests/fixtures/onnx-text/features.onnxtxt"),
            include_str!("../../tests/fixtures/onnx-text/features.src.onnxtxt"),
        ]
    }

    #[test]
    fn every_truncation_of_valid_text_is_handled() {
        for text in valid_texts() {
            for (i, _) in text.char_indices() {
                parse_any(&text[..i]);
            }
        }
    }

    #[test]
    fn random_mutations_never_panic() {
        const SPECIAL: &[char] = &[
            '<', '>', '(', ')', '[', ']', '{', '}', ',', ':', '=', '.', '?', '@', '"', '\\', '#',
            '-', '\n', ' ', 'é', '0', 'e',
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let texts = valid_texts();
        for _ in 0..5_000 {
            let text = texts[rng.below(texts.len())];
            let chars: Vec<char> = text.chars().collect();
            let mut out = chars.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(out.len() + 1);
                match rng.below(4) {
                    0 if at < out.len() => {
                        let end = (at + 1 + rng.below(8)).min(out.len());
                        out.drain(at..end);
                    }
                    1 => {
                        let from = rng.below(chars.len());
                        let end = (from + 1 + rng.below(16)).min(chars.len());
                        out.splice(at..at, chars[from..end].iter().copied());
                    }
                    2 if at < out.len() => out[at] = SPECIAL[rng.below(SPECIAL.len())],
                    _ => out.insert(at, char::from_u32(rng.below(0x3000) as u32).unwrap_or('x')),
                }
            }
            parse_any(&out.into_iter().collect::<String>());
        }
    }

    #[test]
    fn random_token_soup_never_panics() {
        const PIECES: &[&str] = &[
            "<",
            ">",
            "(",
            ")",
            "[",
            "]",
            "{",
            "}",
            ",",
            ":",
            "=",
            "=>",
            ".",
            "?",
            "@",
            "\"",
            "\"s\"",
            "\\",
            "#c\n",
            "\n",
            " ",
            "-",
            "1",
            "-7",
            "2.5",
            "1e",
            "1e5",
            "inf",
            "-nan",
            "float",
            "int64",
            "float16",
            "string",
            "seq",
            "map",
            "optional",
            "opaque",
            "sparse_tensor",
            "x",
            "g",
            "Op",
            "ir_version",
            "opset_import",
            "domain",
            "ints",
            "tensor",
            "graph",
            "é",
            "\u{0}",
            "\t",
            "g () => () {",
            "y = Foo <",
            "a = ",
        ];
        let mut rng = Rng(42);
        for _ in 0..20_000 {
            let n = rng.below(40);
            let src: String = (0..n).map(|_| PIECES[rng.below(PIECES.len())]).collect();
            parse_any(&src);
        }
    }

    /// The parser's output goes straight into the ONNX importer.
    #[test]
    fn parsed_text_imports() {
        let m = parse(
            r#"<ir_version: 8, opset_import: ["" : 18]>
               g (float[2, 3] x) => (float[2, 3] y) <float[3] b = {1, 2, 3}> {
                   s = Add (x, b)
                   y = Relu (s)
               }"#,
        );
        let module = crate::onnx::import_model(&m, None, &crate::onnx::ImportOptions::default());
        assert!(module.is_ok(), "{:?}", module.err());
    }

    /// Differential check against the ONNX parser over a corpus: every `X.onnxtxt` in the
    /// directory named by `TERAFAB_ONNX_TEXT_CORPUS` must parse to the model in `X.pb`. Make the
    /// corpus with the onnx Python package (see tests/fixtures/onnx-text/README.md), then run
    /// `cargo test -p terafab-frontend --lib onnx::text -- --ignored`.
    #[test]
    #[ignore = "needs a corpus made with the onnx Python package"]
    fn matches_onnx_parser_on_corpus() {
        let dir = std::env::var("TERAFAB_ONNX_TEXT_CORPUS").expect("TERAFAB_ONNX_TEXT_CORPUS");
        let mut failures = Vec::new();
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus directory") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_none_or(|e| e != "onnxtxt") {
                continue;
            }
            count += 1;
            let text = std::fs::read_to_string(&path).expect("text");
            let expected = std::fs::read(path.with_extension("pb")).expect("protobuf");
            let theirs = ModelProto::decode(expected.as_slice())
                .expect("protobuf")
                .encode_to_vec();
            match parse_model_text(&text) {
                Ok(ours) if ours.encode_to_vec() == theirs => {}
                Ok(_) => failures.push(format!("{}: different model", path.display())),
                Err(e) => failures.push(format!("{}: {e}", path.display())),
            }
        }
        assert!(count > 0, "no .onnxtxt files in {dir}");
        assert!(
            failures.is_empty(),
            "{} of {count} differ:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}
