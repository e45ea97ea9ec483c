//! The text-form parser, and the specification of the text form.
//!
//! The text form is the IR's human-readable serialization, in the style of MLIR and HLO: one
//! op per line, with the type of every value written where it is defined. [`crate::print`]
//! writes it and [`parse_module`] / [`parse_function`] read it back. The two round-trip exactly:
//! `print(parse(print(m))) == print(m)` for every module, and `parse(print(m)) == m` when the
//! value ids of `m` are numbered in text order (see [Value ids](#value-ids)).
//!
//! ```text
//! // An MLP layer, then some control flow.
//! func @main(%x: f32[N,784], %w: f32[784,128], %b: f32[128], %c: bool[], %n: i64[]) -> (y: f32[N,128], "top k": i64[N,128]) {
//!   %0 = dot_general(%x, %w) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[N,128] loc("MatMul_0")
//!   %1 = add(%0, %b) : f32[N,128]
//!   %zero = constant() {value=dense<f32[]>[0.0]} : f32[]
//!   %relu = max(%1, %zero) : f32[N,128] loc("Relu_2")
//!   %v, %i = sort(%relu) {axis=1, descending=true} : f32[N,128], i64[N,128]
//!   %y = if(%c) : f32[N,128] region() {
//!     %t = neg(%relu) : f32[N,128]
//!     yield %t
//!   } region() {
//!     yield %relu
//!   }
//!   %last, %rows = loop(%n, %c, %relu) : f32[N,128], f32[T,N,128] region(%it: i64[], %cond: bool[], %h: f32[N,128]) {
//!     %"h next" = exp(%h) : f32[N,128]
//!     yield %cond, %"h next", %h
//!   }
//!   return %y, %i
//! }
//! ```
//!
//! # Lexical structure
//!
//! - **Line breaks** end statements (ops, `yield`, `return`, and the header lines that open a
//!   block with `{`). Blank lines are allowed anywhere a statement may start. Spaces, tabs and
//!   carriage returns separate tokens and are otherwise insignificant.
//! - **Comments** run from `//` to the end of the line and are ignored (the printer never
//!   writes any).
//! - **Identifiers**: `[A-Za-z_][A-Za-z0-9_.]*`. Op names, attribute keys, element types and
//!   keywords (`func`, `region`, `loc`, `yield`, `return`, `dense`, `elided`, `true`, `false`)
//!   are identifiers; keywords are only special where the grammar expects them.
//! - **Numbers**: a digit, or `-` followed by a letter, digit or `.`, then any of `[A-Za-z0-9_.]`
//!   (and `+`/`-` right after an `e`/`E` exponent): `3`, `-9223372036854775808`, `1.5e-7`,
//!   `-inf`. What the text means depends on where it appears (an `i64`, a dim, an `f32`, ...).
//! - **Strings**: `"..."` on one line, with the escapes `\"`, `\\`, `\n`, `\t` and `\u{HEX}`
//!   (1 to 6 hex digits). Other control characters must be escaped; any other character,
//!   Unicode included, stands for itself.
//! - **Names** of values (`%name`), functions (`@name`) and function outputs (`name`) are
//!   written bare when they are identifiers or a string of ASCII digits (`%x`, `%0`, `@main`,
//!   `%layer.1`), and quoted otherwise (`%"my value"`, `@""`, `"out 0": f32[]`). A symbolic
//!   dim is bare when it is an identifier and quoted otherwise (`f32["batch size",3]`); a
//!   bare number is a static dim. The `loc("...")` string is always quoted.
//! - **Punctuation**: `( ) { } [ ] < > , : = % @ ->`.
//!
//! Positions in error messages count lines and columns from 1; columns count characters
//! (Unicode scalar values), so a tab is one column.
//!
//! # Grammar
//!
//! `NL` is a line break; `A?` is optional, `A*` repeats, `A | B` is a choice.
//!
//! ```text
//! module     ::= NL* ( function NL* )*            functions separated by blank lines
//! function   ::= "func" "@" name "(" decls? ")" "->" "(" outputs? ")" block<"return">
//! outputs    ::= output ( "," output )*
//! output     ::= name ":" type
//! block<T>   ::= "{" NL+ ( op NL+ )* T values? NL+ "}"
//! op         ::= ( values "=" )? IDENT "(" values? ")" attrs? ( ":" types )? region* loc?
//! region     ::= "region" "(" decls? ")" block<"yield">
//! loc        ::= "loc" "(" STRING ")"
//! decls      ::= value ":" type ( "," value ":" type )*
//! values     ::= value ( "," value )*
//! types      ::= type ( "," type )*
//! value      ::= "%" name                         no space after the "%" (nor the "@")
//! name       ::= IDENT | DIGITS | STRING
//! type       ::= DTYPE "[" ( dim ( "," dim )* )? "]"      f32[N,128], i64[] (a scalar)
//! dim        ::= INT | IDENT | STRING                     a static extent or a symbol
//! attrs      ::= "{" ( IDENT "=" attr ( "," IDENT "=" attr )* )? "}"
//! attr       ::= INT                          Attr::Int          -3
//!              | FLOAT | "inf" | "nan"        Attr::Float        1e-5, -0.5, -inf
//!              | "[" ( item ( "," item )* )? "]"
//!                                             Attr::Ints         [1, -2]  (all items i64)
//!                                             Attr::Shape        [N, 128] (otherwise)
//!              | "true" | "false"             Attr::Bool
//!              | DTYPE                        Attr::DType        f32
//!              | tensor                       Attr::Tensor
//!              | IDENT                        Attr::Ident        replace
//! item       ::= INT | IDENT | STRING
//! tensor     ::= "dense" "<" type ">" "[" ( element ( "," element )* )? "]"
//!              | "dense" "<" type ">" "elided"         printer only; rejected by the parser
//! element    ::= NUMBER | "true" | "false" | "inf" | "nan" | "nan" "(" HEX ")"
//! ```
//!
//! # Meaning
//!
//! - An op line defines its results (comma separated; an op with no results starts with its
//!   name, and has no `: types`), names the op ([`Op::name`]), lists its operands, its
//!   attributes (the printer writes [`Op::attrs`] in order and omits the braces when there are
//!   none; [`Op::from_attrs`] builds the op back and rejects unknown ops and missing, extra or
//!   ill-typed attributes), one type per result, its regions, and the source node's name
//!   ([`Node::name`]) in `loc("...")`.
//! - A region (the body of an `if` or a `loop`) declares its parameters like a function and
//!   ends with `yield`; a function body ends with `return`. Output names come from
//!   [`Function::output_names`]; their types must equal the types of the returned values.
//! - A tensor literal lists its elements flat in row-major order; its type must be static and
//!   the element count must match it. Integers are decimal over their type's full range. Bool
//!   elements are `true`/`false`. Floats are written in the shortest form that parses back to
//!   the same value (`{:?}` in Rust; for f16/bf16, of the value as an f32), with `inf`, `-inf`,
//!   `-0.0`, `nan` for the type's canonical NaN and `nan(0xBITS)` for any other NaN (the raw
//!   bits of the element type), so every bit pattern round-trips. An f32 element is read with
//!   the f32 parser (never via f64: no double rounding), f16/bf16 via f32 (exact for printed
//!   text). Float8 elements (`f8e4m3fn`, `f8e4m3fnuz`, `f8e5m2`, `f8e5m2fnuz`, `cf8e4m3`,
//!   `cf8e5m2`) print their exact value as an f32 and are read via f32 rounded to nearest even;
//!   a value out of the type's range (or an infinity, in the types without infinities) is an
//!   error, and so is `nan` for the CFP8 types (`cf8*`), which have no NaN.
//! - Scoping is SSA: every value is defined once in its function (names are unique across
//!   nested regions) and used only after its definition, in the same region or an enclosing
//!   one. A node's results are defined after its regions, so a region cannot use them.
//!
//! The parser checks the syntax, the SSA rules above, the count of result types, the op's
//! attributes and the tensor literals. It does not check op typing (operand counts, shapes,
//! region signatures): that is [`crate::verify`]'s job. It never panics, whatever the input;
//! regions nest at most [`MAX_REGION_DEPTH`] deep.
//!
//! # Value ids
//!
//! Values get ids in the order the text defines them: the function's parameters, then for each
//! op, its regions' parameters and values (recursively) before the op's own results. This is
//! the order in which a builder creates them when it builds regions before pushing their node.
//!
//! [`Op::name`]: crate::op::Op::name
//! [`Op::attrs`]: crate::op::Op::attrs
//! [`Op::from_attrs`]: crate::op::Op::from_attrs
//! [`Node::name`]: crate::graph::Node::name
//! [`Function::output_names`]: crate::graph::Function::output_names

use std::collections::HashMap;

use crate::dtype::{DType, UnknownDType};
use crate::graph::{Function, Module, Node, Region, TensorType, ValueId, ValueTable};
use crate::op::{Attr, Op, OpError};
use crate::print::{
    LiteralElement, is_bare_name, is_ident_continue, is_ident_start, print_name, print_quoted,
    print_type, print_value_name,
};
use crate::shape::{Dim, Shape};
use crate::tensor::{Tensor, TensorError};
use crate::with_dtype;

/// How deep regions may nest; deeper text is rejected (instead of overflowing the stack).
pub const MAX_REGION_DEPTH: usize = 64;

/// Why a text could not be parsed: a position (from 1), a message, and the offending line.
///
/// Displays as `line L, column C: message`, followed by the source line and a caret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}{snippet}")]
pub struct ParseError {
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The offending line with a caret under the column, starting with a line break.
    snippet: String,
}

/// Parse a module: zero or more functions.
pub fn parse_module(src: &str) -> Result<Module, ParseError> {
    let mut p = Parser::new(src);
    let mut functions = Vec::new();
    loop {
        p.skip_newlines()?;
        if p.peek()?.tok == Tok::Eof {
            return Ok(Module::new(functions));
        }
        functions.push(p.function()?);
    }
}

/// Parse exactly one function.
pub fn parse_function(src: &str) -> Result<Function, ParseError> {
    let mut p = Parser::new(src);
    p.skip_newlines()?;
    let f = p.function()?;
    p.skip_newlines()?;
    let t = p.next()?;
    if t.tok != Tok::Eof {
        return Err(p.error(
            t.pos,
            format!("expected end of input after the function, found {}", t.tok),
        ));
    }
    Ok(f)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A position in the source, from 1; the column counts characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

/// The widest excerpt of a source line an error shows (long lines are cut around the column).
const EXCERPT_CHARS: usize = 100;

fn error_at(src: &str, pos: Pos, message: String) -> ParseError {
    let line = src.split('\n').nth(pos.line - 1).unwrap_or("");
    let chars: Vec<char> = line.trim_end_matches('\r').chars().collect();
    let caret = pos.column - 1;
    let start = caret
        .saturating_sub(EXCERPT_CHARS / 2)
        .min(chars.len().saturating_sub(EXCERPT_CHARS));
    let end = chars.len().min(start + EXCERPT_CHARS);
    let mut text: String = if start > 0 {
        "…".into()
    } else {
        String::new()
    };
    // Tabs become one space and other control characters a placeholder, so the caret lines up.
    text.extend(chars[start..end].iter().map(|&c| match c {
        '\t' => ' ',
        c if c.is_control() => '\u{fffd}',
        c => c,
    }));
    if end < chars.len() {
        text.push('…');
    }
    let number = pos.line.to_string();
    let gutter = " ".repeat(number.len());
    let pad = " ".repeat(caret - start + usize::from(start > 0));
    ParseError {
        line: pos.line,
        column: pos.column,
        message,
        snippet: format!("\n{number} | {text}\n{gutter} | {pad}^"),
    }
}

/// `1 value`, `2 values`.
/// A float attribute's text: a decimal number with a `.` or an exponent (`0.5`, `1e-5`), or
/// `-inf`; Rust's other spellings (`infinity`, `NaN`) are not part of the text form.
fn float_attr(s: &str) -> Option<f64> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let numeric = body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && body
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if s == "-inf" {
        return Some(f64::NEG_INFINITY);
    }
    if numeric { s.parse().ok() } else { None }
}

fn plural(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `%name`
    Value(String),
    /// `@name`
    Global(String),
    Ident(String),
    Number(String),
    Str(String),
    /// One of `( ) { } [ ] < > , : =`.
    Punct(char),
    Arrow,
    Newline,
    Eof,
}

impl std::fmt::Display for Tok {
    /// How an error message names the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tok::Value(name) => write!(f, "`{}`", print_value_name(name)),
            Tok::Global(name) => write!(f, "`@{}`", print_name(name)),
            Tok::Ident(s) | Tok::Number(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "string {s:?}"),
            Tok::Punct(c) => write!(f, "`{c}`"),
            Tok::Arrow => f.write_str("`->`"),
            Tok::Newline => f.write_str("end of line"),
            Tok::Eof => f.write_str("end of input"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    pos: Pos,
}

struct Lexer<'a> {
    src: &'a str,
    rest: &'a str,
    pos: Pos,
}

impl<'a> Lexer<'a> {
    fn new(src: &'a str) -> Self {
        Lexer {
            src,
            rest: src,
            pos: Pos { line: 1, column: 1 },
        }
    }

    fn error(&self, pos: Pos, message: String) -> ParseError {
        error_at(self.src, pos, message)
    }

    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.rest.chars().nth(1)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.rest = &self.rest[c.len_utf8()..];
        if c == '\n' {
            self.pos = Pos {
                line: self.pos.line + 1,
                column: 1,
            };
        } else {
            self.pos.column += 1;
        }
        Some(c)
    }

    fn take_while(&mut self, mut pred: impl FnMut(char) -> bool) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek().filter(|&c| pred(c)) {
            s.push(c);
            self.bump();
        }
        s
    }

    fn next_token(&mut self) -> Result<Token, ParseError> {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r') => {
                    self.bump();
                }
                Some('/') if self.peek2() == Some('/') => {
                    self.take_while(|c| c != '\n');
                }
                _ => break,
            }
        }
        let pos = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Token { tok: Tok::Eof, pos });
        };
        let tok = match c {
            '\n' => {
                self.bump();
                Tok::Newline
            }
            '%' | '@' => {
                self.bump();
                let name = self.name(c, pos)?;
                if c == '%' {
                    Tok::Value(name)
                } else {
                    Tok::Global(name)
                }
            }
            '"' => Tok::Str(self.string()?),
            '-' if self.peek2() == Some('>') => {
                self.bump();
                self.bump();
                Tok::Arrow
            }
            '-' if self
                .peek2()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '.') =>
            {
                Tok::Number(self.number())
            }
            c if c.is_ascii_digit() => Tok::Number(self.number()),
            c if is_ident_start(c) => Tok::Ident(self.take_while(is_ident_continue)),
            '(' | ')' | '{' | '}' | '[' | ']' | '<' | '>' | ',' | ':' | '=' => {
                self.bump();
                Tok::Punct(c)
            }
            c => return Err(self.error(pos, format!("unexpected character {c:?}"))),
        };
        Ok(Token { tok, pos })
    }

    /// The name after a `%` or `@` sigil.
    fn name(&mut self, sigil: char, pos: Pos) -> Result<String, ParseError> {
        if self.peek() == Some('"') {
            return self.string();
        }
        let word = self.take_while(is_ident_continue);
        if is_bare_name(&word) {
            Ok(word)
        } else if word.is_empty() {
            Err(self.error(self.pos, format!("expected a name after `{sigil}`")))
        } else {
            Err(self.error(
                pos,
                format!(
                    "`{sigil}{word}` is not a valid name: a bare name is an identifier or digits; \
                     quote others, as in `{sigil}{}`",
                    print_quoted(&word)
                ),
            ))
        }
    }

    /// A number-like word: see the module docs.
    fn number(&mut self) -> String {
        let mut s: String = self.bump().into_iter().collect();
        while let Some(c) = self.peek() {
            let hex = s.trim_start_matches('-').starts_with("0x");
            let exponent_sign = matches!(c, '+' | '-') && s.ends_with(['e', 'E']) && !hex;
            if !(is_ident_continue(c) || exponent_sign) {
                break;
            }
            s.push(c);
            self.bump();
        }
        s
    }

    /// A string literal, from its opening quote.
    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.pos;
        self.bump();
        let mut s = String::new();
        loop {
            let pos = self.pos;
            match self.bump() {
                None | Some('\n') => return Err(self.error(start, "unterminated string".into())),
                Some('\r') if self.peek() == Some('\n') => {
                    return Err(self.error(start, "unterminated string".into()));
                }
                Some('"') => return Ok(s),
                Some('\\') => s.push(self.escape(pos)?),
                Some(c) if c.is_control() => {
                    return Err(self.error(
                        pos,
                        format!("control character {c:?} in a string must be written as an escape"),
                    ));
                }
                Some(c) => s.push(c),
            }
        }
    }

    /// The character of an escape sequence, after its backslash at `pos`.
    fn escape(&mut self, pos: Pos) -> Result<char, ParseError> {
        let c = match self.bump() {
            Some('"') => '"',
            Some('\\') => '\\',
            Some('n') => '\n',
            Some('t') => '\t',
            Some('u') if self.peek() == Some('{') => {
                self.bump();
                let hex = self.take_while(|c| c.is_ascii_hexdigit());
                let closed = self.bump() == Some('}');
                let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                match c.filter(|_| closed && hex.len() <= 6) {
                    Some(c) => c,
                    None => {
                        return Err(self.error(
                            pos,
                            "invalid `\\u{...}` escape: expected 1 to 6 hex digits of a Unicode \
                             scalar value, then `}`"
                                .into(),
                        ));
                    }
                }
            }
            _ => {
                return Err(self.error(
                    pos,
                    "unknown escape: use `\\\"`, `\\\\`, `\\n`, `\\t` or `\\u{HEX}`".into(),
                ));
            }
        };
        Ok(c)
    }
}

// ---------------------------------------------------------------------------------------------
// Parser

/// The values of the function being parsed, and which of them are visible.
#[derive(Default)]
struct Scopes {
    values: ValueTable,
    /// Where each value is defined, by id.
    defined_at: Vec<Pos>,
    /// The values visible at this point: defined earlier in this region or an enclosing one.
    visible: HashMap<String, ValueId>,
    /// The names made visible, in order, so that leaving a region hides its values.
    stack: Vec<String>,
}

impl Scopes {
    /// Enter a region; returns the mark to give to [`Scopes::leave`].
    fn enter(&self) -> usize {
        self.stack.len()
    }

    fn leave(&mut self, mark: usize) {
        for name in self.stack.drain(mark..) {
            self.visible.remove(&name);
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Token>,
    scopes: Scopes,
    /// How many regions enclose the current position.
    depth: usize,
}

/// A name and where it appears.
type Spanned<T> = (T, Pos);

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            lexer: Lexer::new(src),
            peeked: None,
            scopes: Scopes::default(),
            depth: 0,
        }
    }

    fn error(&self, pos: Pos, message: String) -> ParseError {
        self.lexer.error(pos, message)
    }

    // --- tokens -------------------------------------------------------------------------------

    fn peek(&mut self) -> Result<&Token, ParseError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn next(&mut self) -> Result<Token, ParseError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    /// An error saying what was expected instead of the next token.
    fn expected<T>(&mut self, what: &str) -> Result<T, ParseError> {
        let t = self.next()?;
        Err(self.error(t.pos, format!("expected {what}, found {}", t.tok)))
    }

    fn peek_is(&mut self, tok: &Tok) -> Result<bool, ParseError> {
        Ok(&self.peek()?.tok == tok)
    }

    fn peek_keyword(&mut self, keyword: &str) -> Result<bool, ParseError> {
        Ok(matches!(&self.peek()?.tok, Tok::Ident(s) if s == keyword))
    }

    /// Consume the next token if it is the punctuation `c`.
    fn eat(&mut self, c: char) -> Result<bool, ParseError> {
        let found = self.peek_is(&Tok::Punct(c))?;
        if found {
            self.next()?;
        }
        Ok(found)
    }

    fn expect(&mut self, c: char) -> Result<Pos, ParseError> {
        let pos = self.peek()?.pos;
        if self.eat(c)? {
            Ok(pos)
        } else {
            self.expected(&format!("`{c}`"))
        }
    }

    fn expect_keyword(&mut self, keyword: &str) -> Result<Pos, ParseError> {
        if self.peek_keyword(keyword)? {
            Ok(self.next()?.pos)
        } else {
            self.expected(&format!("`{keyword}`"))
        }
    }

    fn ident(&mut self, what: &str) -> Result<Spanned<String>, ParseError> {
        if let Tok::Ident(_) = self.peek()?.tok {
            let t = self.next()?;
            if let Tok::Ident(s) = t.tok {
                return Ok((s, t.pos));
            }
        }
        self.expected(what)
    }

    fn skip_newlines(&mut self) -> Result<(), ParseError> {
        while self.peek_is(&Tok::Newline)? {
            self.next()?;
        }
        Ok(())
    }

    /// The end of a statement: a line break (or the end of input, which the caller reports).
    fn end_of_line(&mut self, after: &str) -> Result<(), ParseError> {
        match self.peek()?.tok {
            Tok::Newline => self.next().map(drop),
            Tok::Eof => Ok(()),
            _ => self.expected(&format!("end of line after {after}")),
        }
    }

    /// Items separated by commas up to the punctuation `close` (the opening one is consumed).
    fn comma_list<T>(
        &mut self,
        close: char,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        let mut items = Vec::new();
        if self.eat(close)? {
            return Ok(items);
        }
        loop {
            items.push(item(self)?);
            if !self.eat(',')? {
                self.expect(close)?;
                return Ok(items);
            }
        }
    }

    // --- functions, regions and ops -----------------------------------------------------------

    fn function(&mut self) -> Result<Function, ParseError> {
        self.scopes = Scopes::default();
        self.expect_keyword("func")?;
        let name = match self.next()? {
            Token {
                tok: Tok::Global(name),
                ..
            } => name,
            t => {
                return Err(self.error(
                    t.pos,
                    format!("expected `@` and the function name, found {}", t.tok),
                ));
            }
        };
        self.expect('(')?;
        let params = self.comma_list(')', Self::decl)?;
        if !self.peek_is(&Tok::Arrow)? {
            return self.expected("`->` and the output list");
        }
        self.next()?;
        self.expect('(')?;
        let outputs = self.comma_list(')', Self::output)?;
        let (nodes, results, ret) = self.block("return")?;
        if results.len() != outputs.len() {
            return Err(self.error(
                ret,
                format!(
                    "`return` gives {} but the function declares {}",
                    plural(results.len(), "value"),
                    plural(outputs.len(), "output")
                ),
            ));
        }
        for (&(v, pos), (name, ty)) in results.iter().zip(&outputs) {
            let actual = self.scopes.values.ty(v);
            if actual != ty {
                return Err(self.error(
                    pos,
                    format!(
                        "`{}` has type {} but output `{}` is declared as {}",
                        print_value_name(self.scopes.values.name(v)),
                        print_type(actual),
                        print_name(name),
                        print_type(ty)
                    ),
                ));
            }
        }
        self.end_of_line("the function's `}`")?;
        let values = std::mem::take(&mut self.scopes).values;
        Ok(Function {
            name,
            values,
            body: Region {
                params,
                nodes,
                results: results.into_iter().map(|(v, _)| v).collect(),
            },
            output_names: outputs.into_iter().map(|(name, _)| name).collect(),
        })
    }

    /// An output of the function's signature: `name: type`.
    fn output(&mut self) -> Result<(String, TensorType), ParseError> {
        let t = self.next()?;
        let name = match t.tok {
            Tok::Ident(s) | Tok::Str(s) => s,
            Tok::Number(s) if is_bare_name(&s) => s,
            tok => return Err(self.error(t.pos, format!("expected an output name, found {tok}"))),
        };
        self.expect(':')?;
        Ok((name, self.ty()?))
    }

    /// A parameter declaration, `%name: type`, which defines the value.
    fn decl(&mut self) -> Result<ValueId, ParseError> {
        let (name, pos) = self.value_name()?;
        self.expect(':')?;
        let ty = self.ty()?;
        self.define(name, pos, ty)
    }

    /// `{`, the lines of a block ending with the `terminator` line, `}`. Returns the nodes, the
    /// terminator's values and the terminator's position.
    #[allow(clippy::type_complexity)]
    fn block(
        &mut self,
        terminator: &str,
    ) -> Result<(Vec<Node>, Vec<Spanned<ValueId>>, Pos), ParseError> {
        self.expect('{')?;
        if !self.peek_is(&Tok::Newline)? {
            return self.expected("a line break after `{`");
        }
        let mut nodes = Vec::new();
        loop {
            self.skip_newlines()?;
            let t = self.peek()?.clone();
            match &t.tok {
                Tok::Ident(k) if k == terminator => {
                    self.next()?;
                    let results = if matches!(self.peek()?.tok, Tok::Newline | Tok::Eof) {
                        Vec::new()
                    } else {
                        self.uses()?
                    };
                    self.end_of_line(&format!("`{terminator}`"))?;
                    self.skip_newlines()?;
                    if !self.eat('}')? {
                        return self.expected(&format!("`}}` after `{terminator}`"));
                    }
                    return Ok((nodes, results, t.pos));
                }
                Tok::Ident(k) if k == "yield" || k == "return" => {
                    let what = if terminator == "yield" {
                        "a region"
                    } else {
                        "a function"
                    };
                    return Err(
                        self.error(t.pos, format!("{what} ends with `{terminator}`, not `{k}`"))
                    );
                }
                Tok::Punct('}') | Tok::Eof => {
                    return self.expected(&format!("an op or `{terminator}`"));
                }
                _ => {
                    nodes.push(self.node()?);
                    self.end_of_line("the op")?;
                }
            }
        }
    }

    /// One op line (without its line break).
    fn node(&mut self) -> Result<Node, ParseError> {
        let start = self.peek()?.pos;
        let mut results = Vec::new();
        if let Tok::Value(_) = self.peek()?.tok {
            loop {
                results.push(self.value_name()?);
                if !self.eat(',')? {
                    break;
                }
            }
            self.expect('=')?;
        }
        let (op_name, op_pos) = self.ident("an op name")?;
        self.expect('(')?;
        let inputs = self.comma_list(')', |p| Ok(p.use_value()?.0))?;
        let op = self.op(&op_name, op_pos)?;
        let types = if self.eat(':')? {
            self.types()?
        } else {
            Vec::new()
        };
        if types.len() != results.len() {
            return Err(self.error(
                start,
                format!(
                    "`{op_name}` has {} but {}",
                    plural(results.len(), "result"),
                    plural(types.len(), "result type")
                ),
            ));
        }
        let mut regions = Vec::new();
        while self.peek_keyword("region")? {
            regions.push(self.region()?);
        }
        let name = if self.peek_keyword("loc")? {
            self.next()?;
            self.expect('(')?;
            let name = match self.next()? {
                Token {
                    tok: Tok::Str(s), ..
                } => s,
                t => return Err(self.error(t.pos, format!("expected a string, found {}", t.tok))),
            };
            self.expect(')')?;
            Some(name)
        } else {
            None
        };
        // The results are defined after the regions: the regions cannot use them.
        let outputs = results
            .into_iter()
            .zip(types)
            .map(|((name, pos), ty)| self.define(name, pos, ty))
            .collect::<Result<_, _>>()?;
        Ok(Node {
            op,
            inputs,
            outputs,
            regions,
            name,
        })
    }

    /// The op from its name and optional attribute dictionary.
    fn op(&mut self, name: &str, pos: Pos) -> Result<Op, ParseError> {
        let mut attrs: Vec<(String, Attr)> = Vec::new();
        let mut keys: Vec<Spanned<String>> = Vec::new();
        if self.eat('{')? {
            self.comma_list('}', |p| {
                let (key, key_pos) = p.ident("an attribute name")?;
                if keys.iter().any(|(k, _)| *k == key) {
                    return Err(p.error(key_pos, format!("attribute `{key}` is given twice")));
                }
                p.expect('=')?;
                attrs.push((key.clone(), p.attr()?));
                keys.push((key, key_pos));
                Ok(())
            })?;
        }
        Op::from_attrs(name, attrs).map_err(|e| {
            let at = match &e {
                OpError::BadAttr { attr, .. } => keys
                    .iter()
                    .find(|(k, _)| k == attr)
                    .map_or(pos, |&(_, p)| p),
                OpError::UnknownOp(_) | OpError::MissingAttr { .. } => pos,
            };
            self.error(at, e.to_string())
        })
    }

    /// `region(PARAMS) { ... yield ... }`
    fn region(&mut self) -> Result<Region, ParseError> {
        let pos = self.expect_keyword("region")?;
        if self.depth >= MAX_REGION_DEPTH {
            return Err(self.error(
                pos,
                format!("regions nest more than {MAX_REGION_DEPTH} deep"),
            ));
        }
        self.depth += 1;
        let mark = self.scopes.enter();
        self.expect('(')?;
        let params = self.comma_list(')', Self::decl)?;
        let (nodes, results, _) = self.block("yield")?;
        self.scopes.leave(mark);
        self.depth -= 1;
        Ok(Region {
            params,
            nodes,
            results: results.into_iter().map(|(v, _)| v).collect(),
        })
    }

    // --- values -------------------------------------------------------------------------------

    fn value_name(&mut self) -> Result<Spanned<String>, ParseError> {
        if let Tok::Value(_) = self.peek()?.tok {
            let t = self.next()?;
            if let Tok::Value(name) = t.tok {
                return Ok((name, t.pos));
            }
        }
        self.expected("a value (`%name`)")
    }

    /// Define a value named `name` at `pos`, visible from now on in the current region.
    fn define(&mut self, name: String, pos: Pos, ty: TensorType) -> Result<ValueId, ParseError> {
        let s = &mut self.scopes;
        match s.values.add_exact(name.clone(), ty) {
            Some(id) => {
                s.defined_at.push(pos);
                s.visible.insert(name.clone(), id);
                s.stack.push(name);
                Ok(id)
            }
            None => {
                let first = s.values.lookup(&name).map(|id| s.defined_at[id.index()]);
                let first = first.map_or(String::new(), |p| {
                    format!(" (first at line {}, column {})", p.line, p.column)
                });
                Err(self.error(
                    pos,
                    format!("`{}` is defined twice{first}", print_value_name(&name)),
                ))
            }
        }
    }

    /// A use of a value, which must be visible here.
    fn use_value(&mut self) -> Result<Spanned<ValueId>, ParseError> {
        let (name, pos) = self.value_name()?;
        if let Some(&id) = self.scopes.visible.get(&name) {
            return Ok((id, pos));
        }
        let shown = print_value_name(&name);
        let message = match self.scopes.values.lookup(&name) {
            Some(_) => format!("`{shown}` is defined in a region that does not enclose this use"),
            None => format!("undefined value `{shown}`"),
        };
        Err(self.error(pos, message))
    }

    /// `%a, %b, ...` (at least one), uses of visible values.
    fn uses(&mut self) -> Result<Vec<Spanned<ValueId>>, ParseError> {
        let mut values = vec![self.use_value()?];
        while self.eat(',')? {
            values.push(self.use_value()?);
        }
        Ok(values)
    }

    // --- types and attributes -----------------------------------------------------------------

    /// `DTYPE[dims]`
    fn ty(&mut self) -> Result<TensorType, ParseError> {
        let (name, pos) = self.ident("a type such as `f32[N,3]`")?;
        let dtype: DType = name
            .parse()
            .map_err(|e: UnknownDType| self.error(pos, e.to_string()))?;
        self.expect('[')?;
        let dims = self.comma_list(']', Self::dim)?;
        Ok(TensorType::new(dtype, Shape::new(dims)))
    }

    /// `ty (, ty)*`
    fn types(&mut self) -> Result<Vec<TensorType>, ParseError> {
        let mut types = vec![self.ty()?];
        while self.eat(',')? {
            types.push(self.ty()?);
        }
        Ok(types)
    }

    fn dim(&mut self) -> Result<Dim, ParseError> {
        let t = self.next()?;
        match t.tok {
            Tok::Number(s) => s.parse().map(Dim::Static).map_err(|_| {
                self.error(
                    t.pos,
                    format!("`{s}` is not a dim: expected a non-negative integer or a symbol"),
                )
            }),
            Tok::Ident(s) | Tok::Str(s) => Ok(Dim::Sym(s)),
            tok => Err(self.error(t.pos, format!("expected a dim, found {tok}"))),
        }
    }

    fn attr(&mut self) -> Result<Attr, ParseError> {
        let t = self.next()?;
        Ok(match t.tok {
            Tok::Number(s) => match s.parse() {
                Ok(v) => Attr::Int(v),
                Err(_) => Attr::Float(float_attr(&s).ok_or_else(|| {
                    self.error(t.pos, format!("`{s}` is not an i64 integer or a float"))
                })?),
            },
            Tok::Punct('[') => self.list(t.pos)?,
            Tok::Ident(s) => match s.as_str() {
                "true" => Attr::Bool(true),
                "false" => Attr::Bool(false),
                "inf" => Attr::Float(f64::INFINITY),
                "nan" => Attr::Float(f64::NAN),
                "dense" => Attr::Tensor(self.dense(t.pos)?),
                _ => s.parse().map_or(Attr::Ident(s), Attr::DType),
            },
            tok => {
                return Err(self.error(t.pos, format!("expected an attribute value, found {tok}")));
            }
        })
    }

    /// The rest of `[item, ...]` from its `[` at `pos`: `Attr::Ints` if every item is an i64,
    /// else `Attr::Shape`.
    fn list(&mut self, pos: Pos) -> Result<Attr, ParseError> {
        /// An item: an i64, or a dim that is not one (a symbol, or an extent above `i64::MAX`).
        enum Item {
            Int(i64),
            Dim(Dim),
        }
        let items = self.comma_list(']', |p| {
            let t = p.next()?;
            match t.tok {
                Tok::Number(s) => {
                    if let Ok(v) = s.parse() {
                        Ok(Item::Int(v))
                    } else if let Ok(v) = s.parse() {
                        Ok(Item::Dim(Dim::Static(v)))
                    } else {
                        Err(p.error(t.pos, format!("`{s}` is not an integer in range")))
                    }
                }
                Tok::Ident(s) | Tok::Str(s) => Ok(Item::Dim(Dim::Sym(s))),
                tok => Err(p.error(t.pos, format!("expected an integer or a dim, found {tok}"))),
            }
        })?;
        if items.iter().all(|item| matches!(item, Item::Int(_))) {
            let ints = items.into_iter().filter_map(|item| match item {
                Item::Int(v) => Some(v),
                Item::Dim(_) => None,
            });
            return Ok(Attr::Ints(ints.collect()));
        }
        let dims = items.into_iter().map(|item| match item {
            Item::Int(v) => usize::try_from(v).ok().map(Dim::Static),
            Item::Dim(d) => Some(d),
        });
        match dims.collect() {
            Some(dims) => Ok(Attr::Shape(Shape::new(dims))),
            None => Err(self.error(pos, "a shape cannot hold negative integers".into())),
        }
    }

    /// The rest of `dense<TYPE>[elements]`, from `dense` at `pos`.
    fn dense(&mut self, pos: Pos) -> Result<Tensor, ParseError> {
        self.expect('<')?;
        let ty_pos = self.peek()?.pos;
        let ty = self.ty()?;
        self.expect('>')?;
        let Some(shape) = ty.shape.as_static() else {
            return Err(self.error(
                ty_pos,
                format!("a constant's type must be static, not {}", print_type(&ty)),
            ));
        };
        if self.peek_keyword("elided")? {
            let at = self.next()?.pos;
            return Err(self.error(
                at,
                "this constant was elided by the printer (`elide_constants_above`), so the text \
                 does not hold its elements and cannot be parsed"
                    .into(),
            ));
        }
        if !self.eat('[')? {
            return self.expected("`[` and the constant's elements");
        }
        let tensor = with_dtype!(ty.dtype, T => self.elements::<T>(shape))?;
        tensor.map_err(|e| {
            let message = match e {
                TensorError::ElementCount {
                    expected, actual, ..
                } => format!(
                    "constant literal has {actual} elements but its type {} has {expected}",
                    print_type(&ty)
                ),
                e => e.to_string(),
            };
            self.error(pos, message)
        })
    }

    /// The elements of a tensor literal up to `]`, and the tensor of `shape` they make (or why
    /// they do not make one: a wrong count).
    fn elements<T: LiteralElement>(
        &mut self,
        shape: Vec<usize>,
    ) -> Result<Result<Tensor, TensorError>, ParseError> {
        let values = self.comma_list(']', |p| {
            let t = p.next()?;
            let text = match t.tok {
                Tok::Ident(s) if s == "nan" && p.peek_is(&Tok::Punct('('))? => {
                    p.next()?;
                    let bits = match p.next()? {
                        Token {
                            tok: Tok::Number(b),
                            ..
                        } => b,
                        t => {
                            return Err(p.error(
                                t.pos,
                                format!("expected NaN bits such as `0x7fc00001`, found {}", t.tok),
                            ));
                        }
                    };
                    p.expect(')')?;
                    format!("nan({bits})")
                }
                Tok::Ident(s) | Tok::Number(s) => s,
                tok => {
                    return Err(p.error(
                        t.pos,
                        format!("expected a {} element, found {tok}", T::DTYPE),
                    ));
                }
            };
            T::parse_literal(&text).map_err(|m| p.error(t.pos, m))
        })?;
        Ok(Tensor::from_vec(shape, values))
    }
}

#[cfg(test)]
mod tests {
    use half::{bf16, f16};
    use proptest::collection::vec;
    use proptest::option;
    use proptest::prelude::*;
    use proptest::sample::{Index, select};
    use proptest::strategy::Union;

    use super::*;
    use crate::composite::{CompositeOp, GeluApprox};
    use crate::float8::{CF8E4M3, CF8E5M2, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ, Float8};
    use crate::op::{BinaryOp, CompareOp, ReduceKind, ScatterMode, UnaryOp};
    use crate::print::{print_function, print_module};
    use crate::tensor::Element;

    // --- Hand-written texts -------------------------------------------------------------------

    /// A canonical text using every construct of the format.
    const EXAMPLE: &str = r#"func @main(%x: f32[N,128], %w: f32[128,10], %c: bool[], %m: i64[]) -> (y: f32[N,10], "odd name": i64[2]) {
  %0 = dot_general(%x, %w) {lhs_batch=[], rhs_batch=[], lhs_contract=[1], rhs_contract=[0]} : f32[N,10] loc("MatMul_0")
  %k = constant() {value=dense<i64[2]>[1, -2]} : i64[2]
  %v, %i = sort(%k) {axis=0, descending=false} : i64[2], i64[2]
  %r = if(%c) : f32[N,10] region() {
    %t = add(%0, %0) : f32[N,10]
    yield %t
  } region() {
    yield %0
  } loc("If_3")
  %fin, %scan = loop(%m, %c, %x) : f32[N,128], f32[T,2] region(%it: i64[], %cc: bool[], %xc: f32[N,128]) {
    %s = iota() {dtype=f32, shape=[2], axis=0} : f32[2]
    %b = broadcast(%s) {shape=[T, 2]} : f32[T,2]
    yield %cc, %xc, %s
  }
  %"a \"quoted\"\tname" = scatter(%fin, %k, %fin) {mode=add} : f32["batch size",128]
  sort(%k) {axis=0, descending=true}
  return %r, %v
}

func @"second one"() -> () {
  return
}
"#;

    #[test]
    fn example_round_trips_as_text() {
        let m = parse_module(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(print_module(&m), EXAMPLE);
        let main = m.function("main").unwrap();
        assert_eq!(main.output_names, ["y", "odd name"]);
        assert_eq!(main.num_nodes(), 10);
        assert!(m.function("second one").is_some());
        // Results are defined after their node's regions: `%r` comes after `%t`.
        let id = |name| main.values.lookup(name).unwrap();
        assert!(id("t") < id("r"));
        assert_eq!(
            main.values.ty(id("a \"quoted\"\tname")).shape.dims()[0],
            Dim::Sym("batch size".into())
        );
    }

    /// The example in the module docs (the format's spec) parses and is canonical.
    #[test]
    fn doc_example_is_valid() {
        let src = include_str!("parse.rs");
        let start = src.find("//! ```text\n").unwrap() + "//! ```text\n".len();
        let len = src[start..].find("//! ```\n").unwrap();
        let example: String = src[start..start + len]
            .lines()
            .map(|l| {
                l.strip_prefix("//!")
                    .unwrap()
                    .strip_prefix(' ')
                    .unwrap_or("")
            })
            .filter(|l| !l.starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let f = parse_function(&example).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(print_function(&f), example);
    }

    #[test]
    fn comments_blank_lines_and_spacing_are_ignored() {
        let src = "// header\n\n  func @f( %a : f32 [ 2 , N ] )->( out : f32[2,N] ) {  // trailing\n\n\
                   // inside\n  %b = neg( %a ) : f32[2,N]   // why\n\n  return %b\n}\r\n// end";
        let f = parse_function(src).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            print_function(&f),
            "func @f(%a: f32[2,N]) -> (out: f32[2,N]) {\n  %b = neg(%a) : f32[2,N]\n  return %b\n}\n"
        );
        assert_eq!(parse_module("").unwrap(), Module::default());
        assert_eq!(parse_module("\n// nothing\n\n").unwrap(), Module::default());
    }

    #[test]
    fn literals_parse_to_exact_bits() {
        let src = "func @f() -> () {\n  %a = constant() {value=dense<f32[7]>[0.1, -0.0, 1e-45, \
                   -inf, nan, nan(0x7f800001), 1.000000059604644775390625000001]} : f32[7]\n  %b = constant() {value=dense<bf16[2]>\
                   [0.1, -3]} : bf16[2]\n  %c = constant() {value=dense<u64[1]>[18446744073709551615]\
                   } : u64[1]\n  return\n}\n";
        let f = parse_function(src).unwrap_or_else(|e| panic!("{e}"));
        let value = |i: usize| match &f.body.nodes[i].op {
            Op::Constant { value } => value.clone(),
            op => panic!("{op:?}"),
        };
        let a: Vec<u32> = value(0)
            .typed::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let nan = f32::NAN.to_bits();
        // The last element lies just above the midpoint of 1.0 and the next f32: parsed as an
        // f32 it rounds up, while rounding via f64 would give the midpoint and then 1.0.
        assert_eq!(
            a,
            [
                0.1f32.to_bits(),
                0x8000_0000,
                1,
                0xff80_0000,
                nan,
                0x7f80_0001,
                0x3f80_0001
            ]
        );
        assert_eq!(
            value(1).typed::<bf16>().unwrap(),
            [bf16::from_f32(0.1), bf16::from_f32(-3.0)]
        );
        assert_eq!(value(2).typed::<u64>().unwrap(), [u64::MAX]);
    }

    /// Every bit pattern of every float8 type prints and parses back to the same bits.
    #[test]
    fn float8_literals_round_trip_every_pattern() {
        fn every_pattern<T: Float8>() -> Tensor {
            Tensor::from_vec(vec![256], (0..=255).map(T::from_bits).collect()).unwrap()
        }
        for t in [
            every_pattern::<F8E4M3FN>(),
            every_pattern::<F8E4M3FNUZ>(),
            every_pattern::<F8E5M2>(),
            every_pattern::<F8E5M2FNUZ>(),
            every_pattern::<CF8E4M3>(),
            every_pattern::<CF8E5M2>(),
        ] {
            let mut f = Function::new("f");
            let ty = TensorType::from_static(t.dtype(), t.shape());
            let c = f.push(
                Op::Constant { value: t.clone() },
                vec![],
                vec![ty],
                &["c"],
                vec![],
                None,
            )[0];
            f.add_output("c", c);
            let text = print_function(&f);
            let back = parse_function(&text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(print_function(&back), text);
            match &back.body.nodes[0].op {
                Op::Constant { value } => assert!(value.bit_eq(&t), "{text}"),
                op => panic!("{op:?}"),
            }
        }
    }

    #[test]
    fn float8_literals_round_and_refuse_out_of_range() {
        let parse = |dtype: &str, text: &str| {
            let src = format!(
                "func @f() -> () {{\n  %a = constant() {{value=dense<{dtype}[1]>[{text}]}} : {dtype}[1]\n  return\n}}\n"
            );
            parse_function(&src).map(|f| match &f.body.nodes[0].op {
                Op::Constant { value } => value.to_f64_vec()[0],
                op => panic!("{op:?}"),
            })
        };
        // 464 is the tie between 448 and the out-of-range 480: even, 448.
        assert_eq!(parse("f8e4m3fn", "464").unwrap(), 448.0);
        assert_eq!(parse("f8e4m3fn", "0.1").unwrap(), 0.1015625);
        assert_eq!(parse("f8e5m2", "inf").unwrap(), f64::INFINITY);
        assert_eq!(parse("f8e5m2", "1e9").unwrap(), f64::INFINITY);
        assert!(parse("f8e4m3fnuz", "nan").unwrap().is_nan());
        // CFP8: 480 and 114688 are numbers; 496 ties to the out-of-range 512, refused.
        assert_eq!(parse("cf8e4m3", "480").unwrap(), 480.0);
        assert_eq!(parse("cf8e4m3", "495.9").unwrap(), 480.0);
        assert_eq!(
            parse("cf8e4m3", "-0.0").unwrap().to_bits(),
            (-0.0f64).to_bits()
        );
        assert_eq!(parse("cf8e5m2", "-114688").unwrap(), -114688.0);
        assert_eq!(parse("cf8e5m2", "65536").unwrap(), 65536.0);
        for (dtype, text) in [
            ("cf8e4m3", "nan"),
            ("cf8e4m3", "496"),
            ("cf8e4m3", "inf"),
            ("cf8e5m2", "-inf"),
            ("cf8e5m2", "nan(0x7f)"),
            ("cf8e5m2", "122880"),
        ] {
            let e = parse(dtype, text).expect_err(text).to_string();
            assert!(e.contains(&format!("`{text}`")), "{e}");
        }
        let e = parse("cf8e5m2", "nan").unwrap_err().to_string();
        assert!(e.contains("cf8e5m2 has no NaN"), "{e}");
        for (dtype, text) in [
            ("f8e4m3fn", "465"),
            ("f8e4m3fn", "inf"),
            ("f8e4m3fnuz", "-inf"),
            ("f8e5m2fnuz", "1e9"),
            ("f8e4m3fn", "nan(0x7e)"),
            ("f8e5m2", "nan(0x7c)"),
            ("f8e5m2", "nan(0x100)"),
        ] {
            let e = parse(dtype, text).expect_err(text).to_string();
            assert!(e.contains(&format!("`{text}`")), "{e}");
        }
    }

    /// Parse `src`, which must fail, and check the error's position and message.
    #[track_caller]
    fn assert_error(src: &str, line: usize, column: usize, message: &str) {
        let e = parse_module(src).expect_err("the text should not parse");
        let shown = e.to_string();
        let head = format!("line {line}, column {column}: ");
        assert!(
            shown.starts_with(&head) && e.message.contains(message),
            "{shown}"
        );
        // The excerpt shows the line and puts the caret under the column.
        let lines: Vec<&str> = shown.lines().collect();
        let gutter = format!("{line} | ");
        assert_eq!(
            lines[1],
            format!("{gutter}{}", src.split('\n').nth(line - 1).unwrap())
        );
        assert_eq!(
            lines[2].find('^'),
            Some(gutter.len() + column - 1),
            "{shown}"
        );
    }

    fn wrap(body: &str) -> String {
        format!("func @f(%x: f32[2]) -> () {{\n{body}\n  return\n}}\n")
    }

    #[test]
    fn undefined_values_are_rejected() {
        assert_error(
            &wrap("  %y = add(%x, %z) : f32[2]"),
            2,
            16,
            "undefined value `%z`",
        );
        // Used before its definition.
        let body = "  %y = add(%x, %z) : f32[2]\n  %z = neg(%x) : f32[2]";
        assert_error(&wrap(body), 2, 16, "undefined value `%z`");
        // Defined in a region that has ended.
        let body = "  %r = if(%x) : f32[2] region() {\n    %t = neg(%x) : f32[2]\n    yield %t\n  } \
                    region() {\n    yield %x\n  }\n  %u = neg(%t) : f32[2]";
        assert_error(
            &wrap(body),
            8,
            12,
            "`%t` is defined in a region that does not enclose",
        );
        // A node's regions cannot use its results.
        let body =
            "  %r = if(%x) : f32[2] region() {\n    yield %r\n  } region() {\n    yield %x\n  }";
        assert_error(&wrap(body), 3, 11, "undefined value `%r`");
    }

    #[test]
    fn duplicate_names_are_rejected() {
        assert_error(
            &wrap("  %x = neg(%x) : f32[2]"),
            2,
            3,
            "`%x` is defined twice (first at line 1, column 9)",
        );
        assert_error(
            &wrap("  %a, %a = sort(%x) {axis=0, descending=false} : f32[2], i64[2]"),
            2,
            7,
            "`%a` is defined twice",
        );
        let src = "func @f(%x: f32[2]) -> () {\n  %r = if(%x) : f32[2] region() {\n    %r = neg(%x) : f32[2]\n    yield %r\n  } region() {\n    yield %x\n  }\n  return\n}\n";
        assert_error(
            src,
            2,
            3,
            "`%r` is defined twice (first at line 3, column 5)",
        );
    }

    #[test]
    fn ops_and_attributes_are_checked() {
        assert_error(
            &wrap("  %y = frobnicate(%x) : f32[2]"),
            2,
            8,
            "unknown op `frobnicate`",
        );
        assert_error(
            &wrap("  %y = concat(%x) : f32[2]"),
            2,
            8,
            "op `concat` is missing attribute `axis`",
        );
        let extra = "  %y = concat(%x) {axis=0, bogus=1} : f32[2]";
        assert_error(
            &wrap(extra),
            2,
            28,
            "`bogus` is not an attribute of this op",
        );
        assert_error(
            &wrap("  %y = concat(%x) {axis=-1} : f32[2]"),
            2,
            20,
            "must be a non-negative integer",
        );
        assert_error(
            &wrap("  %y = concat(%x) {axis=0, axis=0} : f32[2]"),
            2,
            28,
            "attribute `axis` is given twice",
        );
        assert_error(
            &wrap("  %y = broadcast(%x) {shape=[N, -1]} : f32[N,2]"),
            2,
            29,
            "a shape cannot hold negative integers",
        );
        assert_error(
            &wrap("  %y = broadcast(%x) {shape=[99999999999999999999]} : f32[N,2]"),
            2,
            30,
            "`99999999999999999999` is not an integer in range",
        );
        assert_error(
            &wrap("  %y = scatter(%x, %x, %x) {mode=set} : f32[2]"),
            2,
            29,
            "is not one of replace",
        );
    }

    #[test]
    fn results_must_match_types() {
        assert_error(
            &wrap("  %a, %b = neg(%x) : f32[2]"),
            2,
            3,
            "`neg` has 2 results but 1 result type",
        );
        assert_error(
            &wrap("  neg(%x) : f32[2]"),
            2,
            3,
            "`neg` has 0 results but 1 result type",
        );
        assert_error(
            &wrap("  %a = neg(%x)"),
            2,
            3,
            "`neg` has 1 result but 0 result types",
        );
    }

    #[test]
    fn constant_literals_are_checked() {
        let c = |lit: &str| wrap(&format!("  %c = constant() {{value={lit}}} : f32[2]"));
        assert_error(
            &c("dense<f32[2,2]>[1.0, 2.0, 3.0]"),
            2,
            26,
            "constant literal has 3 elements but its type f32[2,2] has 4",
        );
        assert_error(&c("dense<f32[2]> elided"), 2, 40, "elided by the printer");
        assert_error(
            &c("dense<f32[N]>[]"),
            2,
            32,
            "a constant's type must be static, not f32[N]",
        );
        assert_error(
            &c("dense<i8[1]>[128]"),
            2,
            39,
            "`128` is not a valid i8 value",
        );
        assert_error(
            &c("dense<u8[1]>[-1]"),
            2,
            39,
            "`-1` is not a valid u8 value",
        );
        assert_error(
            &c("dense<f32[1]>[1.0.0]"),
            2,
            40,
            "`1.0.0` is not a valid f32 value",
        );
        assert_error(
            &c("dense<bool[1]>[1]"),
            2,
            41,
            "`1` is not a valid bool value",
        );
        assert_error(
            &c("dense<f32[1]>[nan(0x3f800000)]"),
            2,
            40,
            "not the bit pattern of a f32 NaN",
        );
    }

    #[test]
    fn strings_and_names_are_checked() {
        assert_error(
            &wrap("  %y = neg(%x) : f32[2] loc(\"oops)"),
            2,
            29,
            "unterminated string",
        );
        assert_error(
            &wrap("  %\"y = neg(%x) : f32[2]"),
            2,
            4,
            "unterminated string",
        );
        assert_error(
            &wrap("  %y = neg(%x) : f32[2] loc(\"a\\qb\")"),
            2,
            31,
            "unknown escape",
        );
        assert_error(
            &wrap("  %y = neg(%x) : f32[2] loc(\"\\u{110000}\")"),
            2,
            30,
            "invalid `\\u{...}` escape",
        );
        assert_error(
            &wrap("  %1a = neg(%x) : f32[2]"),
            2,
            3,
            "`%1a` is not a valid name",
        );
        assert_error(
            &wrap("  % = neg(%x) : f32[2]"),
            2,
            4,
            "expected a name after `%`",
        );
        assert_error(
            &wrap("  %y = neg(%x) : f32[2] # note"),
            2,
            25,
            "unexpected character '#'",
        );
        assert_error(
            &wrap("  %y = neg(%x) : f33[2]"),
            2,
            18,
            "unknown element type `f33`",
        );
    }

    #[test]
    fn structure_is_checked() {
        assert_error(
            &wrap("  %y = neg(%x) : f32[2] %z"),
            2,
            25,
            "expected end of line after the op",
        );
        assert_error(
            "func @f() -> () {\n  yield\n}\n",
            2,
            3,
            "a function ends with `return`, not `yield`",
        );
        assert_error("func @f() -> () {\n}\n", 2, 1, "expected an op or `return`");
        assert_error(
            "func @f() -> () {\n  return\n",
            3,
            1,
            "expected `}` after `return`",
        );
        assert_error(
            "func @f(%x: f32[]) -> (y: f32[]) {\n  return\n}\n",
            2,
            3,
            "`return` gives 0 values but the function declares 1 output",
        );
        assert_error(
            "func @f(%x: f32[]) -> (y: i32[]) {\n  return %x\n}\n",
            2,
            10,
            "`%x` has type f32[] but output `y` is declared as i32[]",
        );
        assert_error(
            "func @f() -> () { return }\n",
            1,
            19,
            "expected a line break after `{`",
        );
        assert_error("fn @f() -> () {\n  return\n}\n", 1, 1, "expected `func`");
        assert_error(
            "func @f() () {\n  return\n}\n",
            1,
            11,
            "expected `->` and the output list, found `(`",
        );
        assert_error(
            "func @f() -> (\"y\": f32[], 1e5: f32[]) {\n  return\n}\n",
            1,
            27,
            "expected an output name, found `1e5`",
        );
        let two = "func @f() -> () {\n  return\n}\nfunc @g() -> () {\n  return\n}\n";
        assert!(parse_module(two).is_ok());
        let e = parse_function(two).unwrap_err();
        assert_eq!((e.line, e.column), (4, 1), "{e}");
    }

    #[test]
    fn error_display_shows_the_line_and_a_caret() {
        let e = parse_module(&wrap("  %y = add(%x, %z) : f32[2]")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 2, column 16: undefined value `%z`\n2 |   %y = add(%x, %z) : f32[2]\n  |                ^"
        );
        // Long lines are cut around the column.
        let long = format!(
            "  %c = constant() {{value=dense<i32[2]>[{}]}} : i32[2]",
            "1, ".repeat(500)
        );
        let e = parse_module(&wrap(&long)).unwrap_err();
        let excerpt = e.to_string().lines().nth(1).unwrap().to_string();
        assert!(excerpt.chars().count() < 120, "{excerpt}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let nest = |depth: usize| {
            let mut s = String::from("func @f(%c: bool[]) -> () {\n");
            for _ in 0..depth {
                s.push_str("if(%c) region() {\n");
            }
            for _ in 0..depth {
                s.push_str("yield\n} region() {\nyield\n}\n");
            }
            s + "return\n}\n"
        };
        let f = parse_function(&nest(MAX_REGION_DEPTH)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(parse_function(&print_function(&f)).unwrap(), f);
        let e = parse_function(&nest(MAX_REGION_DEPTH + 1)).unwrap_err();
        assert!(e.message.contains("regions nest more than"), "{e}");
        let e = parse_function(&nest(100_000)).unwrap_err();
        assert!(e.message.contains("regions nest more than"), "{e}");
    }

    // --- Every op ------------------------------------------------------------------------------

    /// At least one op of every variant, with every unary/binary/compare op, reduce kind and
    /// scatter mode.
    fn every_op() -> Vec<Op> {
        let mut ops: Vec<Op> = vec![
            Op::Constant {
                value: Tensor::from_vec(vec![2], vec![1.5f32, f32::NAN]).unwrap(),
            },
            Op::Iota {
                dtype: DType::I32,
                shape: Shape::new(vec![Dim::Sym("N".into()), 3.into()]),
                axis: 1,
            },
            Op::Select,
            Op::Convert { to: DType::BF16 },
            Op::Broadcast {
                shape: Shape::from_static(&[2, 3]),
            },
            Op::Reshape {
                shape: Shape::new(vec![Dim::Sym("a b".into())]),
            },
            Op::Transpose { perm: vec![1, 0] },
            Op::Slice {
                start: vec![0],
                limit: vec![4],
                stride: vec![2],
            },
            Op::Reverse { axes: vec![] },
            Op::Concat { axis: 0 },
            Op::Pad {
                low: vec![-1, i64::MIN],
                high: vec![i64::MAX, 0],
                interior: vec![0, 1],
            },
            Op::Gather { axis: 1 },
            Op::ArgReduce {
                is_max: true,
                axis: 0,
                keep_dims: false,
                select_last: true,
            },
            Op::ArgReduce {
                is_max: false,
                axis: 1,
                keep_dims: true,
                select_last: false,
            },
            Op::DotGeneral {
                lhs_batch: vec![0],
                rhs_batch: vec![0],
                lhs_contract: vec![2],
                rhs_contract: vec![1],
            },
            Op::Conv {
                stride: vec![1, 2],
                pad_low: vec![-1, 0],
                pad_high: vec![1, 1],
                lhs_dilation: vec![1, 1],
                rhs_dilation: vec![2, 1],
                groups: 3,
            },
            Op::Sort {
                axis: 0,
                descending: true,
            },
            Op::If,
            Op::Loop,
            Op::Composite(CompositeOp::Softmax { axes: vec![1] }),
            Op::Composite(CompositeOp::LogSoftmax { axes: vec![0, 2] }),
            Op::Composite(CompositeOp::LayerNorm {
                axes: vec![2],
                epsilon: 1e-5,
            }),
            Op::Composite(CompositeOp::RmsNorm {
                axes: vec![],
                epsilon: -0.0,
            }),
            Op::Composite(CompositeOp::Gelu {
                approximate: GeluApprox::None,
            }),
            Op::Composite(CompositeOp::Gelu {
                approximate: GeluApprox::Tanh,
            }),
            Op::Composite(CompositeOp::Silu),
            Op::Composite(CompositeOp::Attention {
                scale: 0.35355339059327373,
            }),
            Op::Composite(CompositeOp::Attention { scale: 1e300 }),
        ];
        ops.extend(UnaryOp::ALL.iter().map(|&u| Op::Unary(u)));
        ops.extend(BinaryOp::ALL.iter().map(|&b| Op::Binary(b)));
        ops.extend(CompareOp::ALL.iter().map(|&c| Op::Compare(c)));
        ops.extend(ScatterMode::ALL.iter().map(|&mode| Op::Scatter { mode }));
        for &kind in ReduceKind::ALL {
            ops.push(Op::Reduce {
                kind,
                axes: vec![0, 2],
                keep_dims: true,
            });
            ops.push(Op::Cumulative {
                kind,
                axis: 1,
                exclusive: true,
                reverse: false,
            });
            ops.push(Op::ReduceWindow {
                kind,
                window: vec![1, 2],
                stride: vec![1, 2],
                dilation: vec![1, 1],
                pad_low: vec![0, 1],
                pad_high: vec![1, 0],
            });
        }
        ops
    }

    /// Which variant an op is; the match is exhaustive so that a new variant needs a test.
    fn variant(op: &Op) -> usize {
        match op {
            Op::Constant { .. } => 0,
            Op::Iota { .. } => 1,
            Op::Unary(_) => 2,
            Op::Binary(_) => 3,
            Op::Compare(_) => 4,
            Op::Select => 5,
            Op::Convert { .. } => 6,
            Op::Broadcast { .. } => 7,
            Op::Reshape { .. } => 8,
            Op::Transpose { .. } => 9,
            Op::Slice { .. } => 10,
            Op::Reverse { .. } => 11,
            Op::Concat { .. } => 12,
            Op::Pad { .. } => 13,
            Op::Gather { .. } => 14,
            Op::Scatter { .. } => 15,
            Op::Reduce { .. } => 16,
            Op::ArgReduce { .. } => 17,
            Op::Cumulative { .. } => 18,
            Op::DotGeneral { .. } => 19,
            Op::Conv { .. } => 20,
            Op::ReduceWindow { .. } => 21,
            Op::Sort { .. } => 22,
            Op::If => 23,
            Op::Loop => 24,
            Op::Composite(_) => 25,
        }
    }
    const NUM_VARIANTS: usize = 26;

    #[test]
    fn every_op_round_trips() {
        let ops = every_op();
        let mut seen = [false; NUM_VARIANTS];
        let mut f = Function::new("every op");
        let x = f.add_input("x", TensorType::scalar(DType::F32));
        for op in ops {
            seen[variant(&op)] = true;
            let ty = TensorType::scalar(DType::F32);
            let regions = vec![
                Region {
                    params: vec![],
                    nodes: vec![],
                    results: vec![x]
                };
                op.num_regions()
            ];
            let y = f.push(
                op,
                vec![x, x],
                vec![ty.clone(), ty],
                &[],
                regions,
                Some("n".into()),
            );
            f.add_output("", y[1]);
        }
        assert!(seen.iter().all(|&s| s), "untested variants: {seen:?}");
        let text = print_function(&f);
        let parsed = parse_function(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(print_function(&parsed), text);
        assert_eq!(parsed, f);
    }

    // --- Random well-formed functions ---------------------------------------------------------

    /// Names: identifiers, numbers, and odd ones needing quotes.
    fn arb_name() -> BoxedStrategy<String> {
        prop_oneof![
            4 => "[A-Za-z_][A-Za-z0-9_.]{0,5}",
            2 => "[0-9]{1,3}",
            1 => Just(String::new()),
            1 => "[0-9]+[a-z.][0-9]",
            2 => "[ a-z0-9\"\\\\.\\-é日\u{1F600}]{1,6}",
            1 => "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{2028}a]{1,4}",
            1 => "\\PC{0,6}",
        ]
        .boxed()
    }

    fn arb_dim() -> BoxedStrategy<Dim> {
        prop_oneof![
            6 => (0usize..5).prop_map(Dim::Static),
            1 => Just(Dim::Static(usize::MAX)),
            3 => arb_name().prop_map(Dim::Sym),
        ]
        .boxed()
    }

    fn arb_shape() -> BoxedStrategy<Shape> {
        vec(arb_dim(), 0..4).prop_map(Shape::new).boxed()
    }

    fn arb_dtype() -> BoxedStrategy<DType> {
        select(DType::ALL.to_vec()).boxed()
    }

    fn arb_type() -> BoxedStrategy<TensorType> {
        (arb_dtype(), arb_shape())
            .prop_map(|(d, s)| TensorType::new(d, s))
            .boxed()
    }

    /// Values from `any`, mixed with special values.
    fn with_specials<T: Clone + std::fmt::Debug + 'static>(
        any: impl Strategy<Value = T> + 'static,
        specials: Vec<T>,
    ) -> BoxedStrategy<T> {
        prop_oneof![2 => any, 1 => select(specials)].boxed()
    }

    /// A tensor of a random small static shape (possibly empty) with elements from `elem`.
    fn tensor_of<T: Element>(elem: BoxedStrategy<T>) -> BoxedStrategy<Tensor> {
        vec(0usize..4, 0..4)
            .prop_flat_map(move |shape| {
                let n: usize = shape.iter().product();
                vec(elem.clone(), n).prop_map(move |v| Tensor::from_vec(shape.clone(), v).unwrap())
            })
            .boxed()
    }

    /// Floats from every bit pattern, plus NaNs, infinities, signed zeros and subnormals.
    macro_rules! float_tensor {
        ($t:ty, $bits:ty) => {
            tensor_of(with_specials(
                any::<$bits>().prop_map(<$t>::from_bits),
                vec![
                    <$t>::NAN,
                    -<$t>::NAN,
                    <$t>::INFINITY,
                    <$t>::NEG_INFINITY,
                    <$t>::from_bits(0),
                    -<$t>::from_bits(0),
                    <$t>::from_bits(1),
                    <$t>::MIN_POSITIVE,
                    <$t>::MAX,
                    <$t>::MIN,
                ],
            ))
        };
    }

    macro_rules! int_tensor {
        ($t:ty) => {
            tensor_of(with_specials(any::<$t>(), vec![<$t>::MIN, <$t>::MAX, 0]))
        };
    }

    fn arb_tensor() -> BoxedStrategy<Tensor> {
        Union::new(vec![
            float_tensor!(f64, u64),
            float_tensor!(f32, u32),
            float_tensor!(f16, u16),
            float_tensor!(bf16, u16),
            tensor_of(any::<u8>().prop_map(F8E4M3FN).boxed()),
            tensor_of(any::<u8>().prop_map(F8E4M3FNUZ).boxed()),
            tensor_of(any::<u8>().prop_map(F8E5M2).boxed()),
            tensor_of(any::<u8>().prop_map(F8E5M2FNUZ).boxed()),
            tensor_of(any::<u8>().prop_map(CF8E4M3).boxed()),
            tensor_of(any::<u8>().prop_map(CF8E5M2).boxed()),
            int_tensor!(i8),
            int_tensor!(i16),
            int_tensor!(i32),
            int_tensor!(i64),
            int_tensor!(u8),
            int_tensor!(u16),
            int_tensor!(u32),
            int_tensor!(u64),
            tensor_of(any::<bool>().boxed()),
        ])
        .boxed()
    }

    /// An axis or extent: small, or the largest that `Op::attrs` can write.
    fn arb_usize() -> BoxedStrategy<usize> {
        prop_oneof![9 => 0usize..6, 1 => Just(i64::MAX as usize)].boxed()
    }

    fn arb_usizes() -> BoxedStrategy<Vec<usize>> {
        vec(arb_usize(), 0..4).boxed()
    }

    fn arb_i64s() -> BoxedStrategy<Vec<i64>> {
        vec(with_specials(-3i64..6, vec![i64::MIN, i64::MAX]), 0..4).boxed()
    }

    fn arb_kind() -> BoxedStrategy<ReduceKind> {
        select(ReduceKind::ALL).boxed()
    }

    /// Any op but `if` and `loop` (which come with their regions), with random attributes.
    fn arb_op() -> BoxedStrategy<Op> {
        let b = any::<bool>;
        Union::new(vec![
            arb_tensor()
                .prop_map(|value| Op::Constant { value })
                .boxed(),
            (arb_dtype(), arb_shape(), arb_usize())
                .prop_map(|(dtype, shape, axis)| Op::Iota { dtype, shape, axis })
                .boxed(),
            select(UnaryOp::ALL).prop_map(Op::Unary).boxed(),
            select(BinaryOp::ALL).prop_map(Op::Binary).boxed(),
            select(CompareOp::ALL).prop_map(Op::Compare).boxed(),
            Just(Op::Select).boxed(),
            arb_dtype().prop_map(|to| Op::Convert { to }).boxed(),
            arb_shape()
                .prop_map(|shape| Op::Broadcast { shape })
                .boxed(),
            arb_shape().prop_map(|shape| Op::Reshape { shape }).boxed(),
            arb_usizes().prop_map(|perm| Op::Transpose { perm }).boxed(),
            (arb_usizes(), arb_usizes(), arb_usizes())
                .prop_map(|(start, limit, stride)| Op::Slice {
                    start,
                    limit,
                    stride,
                })
                .boxed(),
            arb_usizes().prop_map(|axes| Op::Reverse { axes }).boxed(),
            arb_usize().prop_map(|axis| Op::Concat { axis }).boxed(),
            (arb_i64s(), arb_i64s(), arb_usizes())
                .prop_map(|(low, high, interior)| Op::Pad {
                    low,
                    high,
                    interior,
                })
                .boxed(),
            arb_usize().prop_map(|axis| Op::Gather { axis }).boxed(),
            select(ScatterMode::ALL)
                .prop_map(|mode| Op::Scatter { mode })
                .boxed(),
            (arb_kind(), arb_usizes(), b())
                .prop_map(|(kind, axes, keep_dims)| Op::Reduce {
                    kind,
                    axes,
                    keep_dims,
                })
                .boxed(),
            (b(), arb_usize(), b(), b())
                .prop_map(|(is_max, axis, keep_dims, select_last)| Op::ArgReduce {
                    is_max,
                    axis,
                    keep_dims,
                    select_last,
                })
                .boxed(),
            (arb_kind(), arb_usize(), b(), b())
                .prop_map(|(kind, axis, exclusive, reverse)| Op::Cumulative {
                    kind,
                    axis,
                    exclusive,
                    reverse,
                })
                .boxed(),
            (arb_usizes(), arb_usizes(), arb_usizes(), arb_usizes())
                .prop_map(
                    |(lhs_batch, rhs_batch, lhs_contract, rhs_contract)| Op::DotGeneral {
                        lhs_batch,
                        rhs_batch,
                        lhs_contract,
                        rhs_contract,
                    },
                )
                .boxed(),
            (
                arb_usizes(),
                arb_i64s(),
                arb_i64s(),
                arb_usizes(),
                arb_usizes(),
                arb_usize(),
            )
                .prop_map(
                    |(stride, pad_low, pad_high, lhs_dilation, rhs_dilation, groups)| Op::Conv {
                        stride,
                        pad_low,
                        pad_high,
                        lhs_dilation,
                        rhs_dilation,
                        groups,
                    },
                )
                .boxed(),
            (
                arb_kind(),
                arb_usizes(),
                arb_usizes(),
                arb_usizes(),
                arb_usizes(),
                arb_usizes(),
            )
                .prop_map(
                    |(kind, window, stride, dilation, pad_low, pad_high)| Op::ReduceWindow {
                        kind,
                        window,
                        stride,
                        dilation,
                        pad_low,
                        pad_high,
                    },
                )
                .boxed(),
            (arb_usize(), b())
                .prop_map(|(axis, descending)| Op::Sort { axis, descending })
                .boxed(),
            arb_composite().prop_map(Op::Composite).boxed(),
        ])
        .boxed()
    }

    /// A finite f64: any bit pattern but the infinities and NaNs (which no op accepts).
    fn arb_finite() -> BoxedStrategy<f64> {
        prop_oneof![
            3 => any::<u64>().prop_map(f64::from_bits).prop_filter("finite", |v| v.is_finite()),
            1 => select(vec![0.0, -0.0, 1e-5, 1e-12, f64::MIN_POSITIVE, f64::MAX, 5e-324]),
        ]
        .boxed()
    }

    /// Any composite op with random attributes.
    fn arb_composite() -> BoxedStrategy<CompositeOp> {
        prop_oneof![
            arb_usizes().prop_map(|axes| CompositeOp::Softmax { axes }),
            arb_usizes().prop_map(|axes| CompositeOp::LogSoftmax { axes }),
            (arb_usizes(), arb_finite())
                .prop_map(|(axes, epsilon)| CompositeOp::LayerNorm { axes, epsilon }),
            (arb_usizes(), arb_finite())
                .prop_map(|(axes, epsilon)| CompositeOp::RmsNorm { axes, epsilon }),
            select(vec![GeluApprox::None, GeluApprox::Tanh])
                .prop_map(|approximate| CompositeOp::Gelu { approximate }),
            Just(CompositeOp::Silu),
            arb_finite().prop_map(|scale| CompositeOp::Attention { scale }),
        ]
        .boxed()
    }

    /// A region to build: declared values are `(name hint, type)`; uses pick among the values
    /// visible at that point (and are dropped when none is).
    #[derive(Debug, Clone)]
    struct RegionSpec {
        params: Vec<(String, TensorType)>,
        nodes: Vec<NodeSpec>,
        /// A function body's results carry the output names.
        results: Vec<(String, Index)>,
    }

    #[derive(Debug, Clone)]
    struct NodeSpec {
        op: Op,
        inputs: Vec<Index>,
        results: Vec<(String, TensorType)>,
        regions: Vec<RegionSpec>,
        loc: Option<String>,
    }

    fn arb_decls() -> BoxedStrategy<Vec<(String, TensorType)>> {
        vec((arb_name(), arb_type()), 0..3).boxed()
    }

    fn arb_plain_node() -> BoxedStrategy<NodeSpec> {
        (
            arb_op(),
            vec(any::<Index>(), 0..4),
            arb_decls(),
            option::of(arb_name()),
        )
            .prop_map(|(op, inputs, results, loc)| NodeSpec {
                op,
                inputs,
                results,
                regions: vec![],
                loc,
            })
            .boxed()
    }

    /// An `if` (two regions without parameters) or a `loop` (one region) with `region` bodies.
    fn arb_control_node(region: BoxedStrategy<RegionSpec>) -> BoxedStrategy<NodeSpec> {
        (
            any::<bool>(),
            vec(any::<Index>(), 1..4),
            arb_decls(),
            vec(region, 2),
            option::of(arb_name()),
        )
            .prop_map(|(is_if, inputs, results, mut regions, loc)| {
                let op = if is_if {
                    regions.iter_mut().for_each(|r| r.params.clear());
                    Op::If
                } else {
                    regions.truncate(1);
                    Op::Loop
                };
                NodeSpec {
                    op,
                    inputs,
                    results,
                    regions,
                    loc,
                }
            })
            .boxed()
    }

    fn arb_region_of(node: BoxedStrategy<NodeSpec>) -> BoxedStrategy<RegionSpec> {
        (
            arb_decls(),
            vec(node, 0..7),
            vec((arb_name(), any::<Index>()), 0..3),
        )
            .prop_map(|(params, nodes, results)| RegionSpec {
                params,
                nodes,
                results,
            })
            .boxed()
    }

    /// Regions with `if`/`loop` nodes nested up to three deep.
    fn arb_region() -> BoxedStrategy<RegionSpec> {
        arb_region_of(arb_plain_node())
            .prop_recursive(3, 24, 3, |inner| {
                arb_region_of(
                    prop_oneof![3 => arb_plain_node(), 1 => arb_control_node(inner)].boxed(),
                )
            })
            .boxed()
    }

    fn arb_function() -> BoxedStrategy<Function> {
        (arb_name(), arb_region())
            .prop_map(|(name, body)| build_function(name, &body))
            .boxed()
    }

    /// Builds a function from a spec, creating values in text order (see "Value ids").
    #[derive(Default)]
    struct Builder {
        values: ValueTable,
        visible: Vec<ValueId>,
    }

    impl Builder {
        fn define(&mut self, (hint, ty): &(String, TensorType)) -> ValueId {
            let id = match self.values.add_exact(hint.clone(), ty.clone()) {
                Some(id) => id,
                None => self.values.add(hint, ty.clone()),
            };
            self.visible.push(id);
            id
        }

        fn pick(&self, i: &Index) -> Option<ValueId> {
            (!self.visible.is_empty()).then(|| *i.get(&self.visible))
        }

        fn region(&mut self, spec: &RegionSpec) -> (Region, Vec<String>) {
            let mark = self.visible.len();
            let params = spec.params.iter().map(|d| self.define(d)).collect();
            let nodes = spec.nodes.iter().map(|n| self.node(n)).collect();
            let (names, results) = spec
                .results
                .iter()
                .filter_map(|(name, i)| Some((name.clone(), self.pick(i)?)))
                .unzip();
            self.visible.truncate(mark);
            (
                Region {
                    params,
                    nodes,
                    results,
                },
                names,
            )
        }

        fn node(&mut self, spec: &NodeSpec) -> Node {
            let inputs = spec.inputs.iter().filter_map(|i| self.pick(i)).collect();
            let regions = spec.regions.iter().map(|r| self.region(r).0).collect();
            let outputs = spec.results.iter().map(|d| self.define(d)).collect();
            Node {
                op: spec.op.clone(),
                inputs,
                outputs,
                regions,
                name: spec.loc.clone(),
            }
        }
    }

    fn build_function(name: String, body: &RegionSpec) -> Function {
        let mut b = Builder::default();
        let (body, output_names) = b.region(body);
        Function {
            name,
            values: b.values,
            body,
            output_names,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn print_parse_round_trip(functions in vec(arb_function(), 0..3)) {
            let m = Module::new(functions);
            let text = print_module(&m);
            let parsed = parse_module(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(&print_module(&parsed), &text);
            prop_assert!(parsed == m, "parse(print(m)) != m for\n{}", text);
            for f in &m.functions {
                prop_assert!(&parse_function(&print_function(f)).unwrap() == f);
            }
        }
    }

    // --- The parser never panics --------------------------------------------------------------

    /// Parse `text` as a module and as a function; anything accepted must print canonically.
    fn parse_anything(text: &str) {
        match parse_module(text) {
            Ok(m) => {
                let printed = print_module(&m);
                let again = parse_module(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
                assert_eq!(print_module(&again), printed);
            }
            Err(e) => drop(e.to_string()),
        }
        if let Err(e) = parse_function(text) {
            drop(e.to_string());
        }
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Truncate(Index),
        Delete(Index, usize),
        Insert(Index, String),
        DuplicateLine(Index),
        SwapLines(Index, Index),
    }

    fn arb_mutation() -> BoxedStrategy<Mutation> {
        let pieces = vec![
            "%",
            "@",
            "\"",
            "\\",
            "\\u{",
            "(",
            ")",
            "{",
            "}",
            "[",
            "]",
            "<",
            ">",
            ",",
            ":",
            "=",
            "->",
            "-",
            "\n",
            "//",
            " region() {\n",
            "yield",
            "return",
            "loc(\"",
            "nan(0x",
            "inf",
            "dense<f32[2]>[",
            "func @f() -> () {\n",
            "%x",
            "0",
            "-9",
            "1e",
            "é",
            "\r",
            "\t",
        ];
        let insert = prop_oneof![select(pieces).prop_map(String::from), "\\PC{0,4}"];
        prop_oneof![
            any::<Index>().prop_map(Mutation::Truncate),
            (any::<Index>(), 1usize..8).prop_map(|(i, n)| Mutation::Delete(i, n)),
            (any::<Index>(), insert).prop_map(|(i, s)| Mutation::Insert(i, s)),
            any::<Index>().prop_map(Mutation::DuplicateLine),
            (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        ]
        .boxed()
    }

    fn mutate(text: &str, m: &Mutation) -> String {
        let chars: Vec<char> = text.chars().collect();
        let at = |i: &Index| i.index(chars.len() + 1);
        let mut lines: Vec<&str> = text.split('\n').collect();
        match m {
            Mutation::Truncate(i) => chars[..at(i)].iter().collect(),
            Mutation::Delete(i, n) => {
                let start = at(i);
                let end = (start + n).min(chars.len());
                chars[..start].iter().chain(&chars[end..]).collect()
            }
            Mutation::Insert(i, s) => {
                let (head, tail) = chars.split_at(at(i));
                head.iter()
                    .chain(s.chars().collect::<Vec<_>>().iter())
                    .chain(tail)
                    .collect()
            }
            Mutation::DuplicateLine(i) => {
                let line = *i.get(&lines);
                lines.insert(i.index(lines.len()), line);
                lines.join("\n")
            }
            Mutation::SwapLines(a, b) => {
                let n = lines.len();
                lines.swap(a.index(n), b.index(n));
                lines.join("\n")
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn parser_never_panics_on_random_text(
            text in prop_oneof![
                "\\PC{0,200}",
                "[%@\"(){}\\[\\]<>,:=\\-a-z0-9 \n\\\\]{0,200}",
                vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            ]
        ) {
            parse_anything(&text);
        }

        #[test]
        fn parser_never_panics_on_mutated_text(
            f in arb_function(),
            mutations in vec(arb_mutation(), 1..4),
        ) {
            let text = mutations.iter().fold(print_function(&f), |text, m| mutate(&text, m));
            parse_anything(&text);
        }
    }
}
