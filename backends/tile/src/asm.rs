//! The assembly text form: parser (assembler) and printer (disassembler).
//!
//! ```text
//! # comment (also `;`)
//! .equ TILE = 8 * 8 * 2                       # a constant
//! .hbm A addr=0x0, dtype=bf16, shape=8x8, role=input
//! .hbm C addr=A + TILE, dtype=f32, shape=8x8, role=output
//! .node 0,0                                    # a stream for one node
//!     dma.ld dst=0x0, src=A, len=TILE signal=0
//!     end
//! .nodes 0..2, 0..2                            # one stream shared by nodes x in 0..2, y in 0..2
//!     dma.ld dst=0x0, src=A + $id * 128, len=128
//!     end
//! ```
//!
//! An instruction is a mnemonic and comma-separated `key=value` operands (in any order;
//! fields with a default may be left out), plus the optional modifiers `wait=S` and
//! `signal=S` (commas between them optional). Numeric values are integer expressions with
//! `+ - * / %`, parentheses, decimal/hex/binary literals (`_` separators allowed), names of
//! `.equ` constants and of HBM buffers (their address), and, inside a `.nodes` block, the
//! node variables `$x`, `$y`, `$id` (the node's index in the block, row-major) and `$n`
//! (the block's node count). Element types are `f32`, `bf16`, `cfp8_143(BIAS)`,
//! `cfp8_152(BIAS)`; engines `dma`, `mx`, `vx`, `net`; `bcast` is `tile|row|col|imm`; `imm`
//! is an f32 literal (`1.5`, `-inf`) or its bits in hex (`0x7fc00001`).
//!
//! A `.nodes` block is expanded at assembly time into one stream per node, so the binary
//! form and the printer always have per-node streams; `print(parse(t))` is canonical and
//! `parse(print(p)) == p`.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::dtype::ElemType;
use crate::error::AsmError;
use crate::isa::{
    Engine, FieldKind, Instruction, NUM_SEMS, Op, OpInfo, bcast_from_name, bcast_name,
    op_by_mnemonic, sem_from_raw,
};
use crate::program::{Buffer, Program, Role, Stream, is_identifier};

/// Most instructions a text program may expand to (over all nodes).
pub const MAX_INSTRUCTIONS: usize = 1 << 24;

/// Values an expression can name.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `.equ` constants and buffer addresses.
    pub symbols: HashMap<String, i128>,
    /// `$x`, `$y`, `$id`, `$n` (inside a `.nodes` or `.node` block).
    pub vars: HashMap<String, i128>,
}

struct ExprParser<'a> {
    s: &'a [u8],
    pos: usize,
    env: &'a Env,
}

impl ExprParser<'_> {
    fn skip_ws(&mut self) {
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_whitespace())
        {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expr(&mut self) -> Result<i128, String> {
        let mut v = self.term()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            let r = self.term()?;
            v = if c == b'+' {
                v.checked_add(r)
            } else {
                v.checked_sub(r)
            }
            .ok_or("arithmetic overflow")?;
        }
        Ok(v)
    }

    fn term(&mut self) -> Result<i128, String> {
        let mut v = self.unary()?;
        while let Some(c @ (b'*' | b'/' | b'%')) = self.peek() {
            self.pos += 1;
            let r = self.unary()?;
            v = match c {
                b'*' => v.checked_mul(r).ok_or("arithmetic overflow")?,
                _ if r == 0 => return Err("division by zero".into()),
                b'/' => v.checked_div(r).ok_or("arithmetic overflow")?,
                _ => v.checked_rem(r).ok_or("arithmetic overflow")?,
            };
        }
        Ok(v)
    }

    fn unary(&mut self) -> Result<i128, String> {
        match self.peek() {
            Some(b'-') => {
                self.pos += 1;
                self.unary()?
                    .checked_neg()
                    .ok_or_else(|| "arithmetic overflow".into())
            }
            Some(b'+') => {
                self.pos += 1;
                self.unary()
            }
            _ => self.atom(),
        }
    }

    fn word(&mut self) -> &str {
        let start = self.pos;
        while self
            .s
            .get(self.pos)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.pos += 1;
        }
        std::str::from_utf8(self.s.get(start..self.pos).unwrap_or_default()).unwrap_or_default()
    }

    fn atom(&mut self) -> Result<i128, String> {
        match self.peek() {
            Some(b'(') => {
                self.pos += 1;
                let v = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err("expected `)`".into());
                }
                self.pos += 1;
                Ok(v)
            }
            Some(b'$') => {
                self.pos += 1;
                let name = self.word().to_string();
                self.env
                    .vars
                    .get(&name)
                    .copied()
                    .ok_or_else(|| format!("`${name}` is only defined inside a node block"))
            }
            Some(c) if c.is_ascii_digit() => {
                let w = self.word().replace('_', "");
                parse_int(&w).ok_or_else(|| format!("bad number `{w}`"))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let name = self.word().to_string();
                self.env
                    .symbols
                    .get(&name)
                    .copied()
                    .ok_or_else(|| format!("unknown name `{name}`"))
            }
            Some(c) => Err(format!("unexpected `{}`", char::from(c))),
            None => Err("missing value".into()),
        }
    }
}

fn parse_int(w: &str) -> Option<i128> {
    if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        i128::from_str_radix(h, 16).ok()
    } else if let Some(b) = w.strip_prefix("0b").or_else(|| w.strip_prefix("0B")) {
        i128::from_str_radix(b, 2).ok()
    } else {
        w.parse().ok()
    }
}

/// Evaluates an integer expression.
pub fn eval(text: &str, env: &Env) -> Result<i128, String> {
    let mut p = ExprParser {
        s: text.as_bytes(),
        pos: 0,
        env,
    };
    let v = p.expr()?;
    if p.peek().is_some() {
        return Err(format!("unexpected text in `{}`", text.trim()));
    }
    Ok(v)
}

fn eval_in(text: &str, env: &Env, lo: i128, hi: i128, what: &str) -> Result<i128, String> {
    let v = eval(text, env)?;
    if v < lo || v > hi {
        return Err(format!("{what} = {v} out of range {lo}..={hi}"));
    }
    Ok(v)
}

fn parse_f32_bits(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x") {
        return u32::from_str_radix(h, 16)
            .map(u64::from)
            .map_err(|_| format!("bad f32 bits `{s}`"));
    }
    s.parse::<f32>()
        .map(|v| u64::from(v.to_bits()))
        .map_err(|_| format!("bad f32 literal `{s}`"))
}

fn print_f32_bits(raw: u64) -> String {
    let v = f32::from_bits(raw as u32);
    if v.is_nan() {
        format!("0x{raw:08x}")
    } else {
        format!("{v:?}")
    }
}

fn parse_field(
    kind: FieldKind,
    bits: u32,
    key: &str,
    value: &str,
    env: &Env,
) -> Result<u64, String> {
    let max = if bits >= 64 {
        i128::from(u64::MAX)
    } else {
        (1i128 << bits) - 1
    };
    let v = value.trim();
    Ok(match kind {
        FieldKind::Uint | FieldKind::Addr => eval_in(v, env, 0, max, key)? as u64,
        FieldKind::Bool => match v {
            "true" => 1,
            "false" => 0,
            _ => eval_in(v, env, 0, 1, key)? as u64,
        },
        FieldKind::Elem => v.parse::<ElemType>()?.code(),
        FieldKind::Engine => Engine::from_name(v)
            .ok_or_else(|| format!("unknown engine `{v}` (dma, mx, vx, net)"))?
            .index() as u64,
        FieldKind::Bcast => bcast_from_name(v)
            .ok_or_else(|| format!("unknown bcast `{v}` (tile, row, col, imm)"))?,
        FieldKind::F32 => parse_f32_bits(v)?,
        FieldKind::Sem => 0x40 | eval_in(v, env, 0, NUM_SEMS as i128 - 1, key)? as u64,
    })
}

fn print_field(kind: FieldKind, raw: u64) -> String {
    match kind {
        FieldKind::Uint | FieldKind::Bool => raw.to_string(),
        FieldKind::Addr => format!("{raw:#x}"),
        FieldKind::Elem => {
            ElemType::from_code(raw).map_or_else(|| format!("<bad type {raw}>"), |t| t.to_string())
        }
        FieldKind::Engine => Engine::ALL
            .get(raw as usize)
            .map_or_else(|| format!("<bad engine {raw}>"), |e| e.name().to_string()),
        FieldKind::Bcast => bcast_name(raw).unwrap_or("<bad bcast>").to_string(),
        FieldKind::F32 => print_f32_bits(raw),
        FieldKind::Sem => match sem_from_raw(raw) {
            Ok(Some(s)) => s.to_string(),
            _ => format!("<bad sem {raw}>"),
        },
    }
}

/// Splits `s` at top-level commas (not inside parentheses).
fn split_args(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

/// Splits the modifiers `wait=` / `signal=` that may follow the operands without a comma.
fn split_modifiers(arg: &str) -> Vec<&str> {
    let mut parts = vec![arg];
    for m in [" wait=", " signal=", " wait =", " signal ="] {
        let mut next = Vec::new();
        for p in parts {
            match p.find(m) {
                Some(i) => {
                    next.push(p[..i].trim());
                    next.push(p[i..].trim());
                }
                None => next.push(p),
            }
        }
        parts = next;
    }
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Parses one instruction line (without comment).
pub fn parse_instruction(line: &str, env: &Env) -> Result<Instruction, String> {
    let line = line.trim();
    let (mn, rest) = match line.find(char::is_whitespace) {
        Some(i) => (&line[..i], &line[i..]),
        None => (line, ""),
    };
    let info: &OpInfo = op_by_mnemonic(mn).ok_or_else(|| format!("unknown instruction `{mn}`"))?;
    let mut raws: Vec<Option<u64>> = vec![None; info.fields.len()];
    let mut wait = None;
    let mut signal = None;
    for arg in split_args(rest).into_iter().flat_map(split_modifiers) {
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected `key=value`, got `{arg}`"))?;
        let key = key.trim();
        if key == "wait" || key == "signal" {
            let s = eval_in(value, env, 0, NUM_SEMS as i128 - 1, key)? as u8;
            let slot = if key == "wait" {
                &mut wait
            } else {
                &mut signal
            };
            if slot.replace(s).is_some() {
                return Err(format!("`{key}` given twice"));
            }
            continue;
        }
        let idx = info
            .fields
            .iter()
            .position(|f| f.key == key)
            .ok_or_else(|| {
                let keys: Vec<&str> = info.fields.iter().map(|f| f.key).collect();
                format!(
                    "`{mn}` has no operand `{key}` (operands: {})",
                    keys.join(", ")
                )
            })?;
        let field = info.fields[idx];
        let raw = parse_field(field.kind, field.bits, key, value, env)
            .map_err(|e| format!("operand `{key}`: {e}"))?;
        if raws[idx].replace(raw).is_some() {
            return Err(format!("operand `{key}` given twice"));
        }
    }
    let mut vals = Vec::with_capacity(raws.len());
    for (field, raw) in info.fields.iter().zip(raws) {
        match raw.or(field.default) {
            Some(v) => vals.push(v),
            None => return Err(format!("`{mn}` needs operand `{}`", field.key)),
        }
    }
    let op = Op::from_raw(info.opcode, &vals)?;
    Ok(Instruction { op, wait, signal })
}

/// Prints one instruction in canonical form (fields equal to their default left out).
pub fn print_instruction(instr: &Instruction) -> String {
    let info = instr.op.info();
    let mut s = info.mnemonic.to_string();
    let mut first = true;
    for (field, raw) in info.fields.iter().zip(instr.op.raw_fields()) {
        if field.default == Some(raw) {
            continue;
        }
        s.push_str(if first { " " } else { ", " });
        first = false;
        let _ = write!(s, "{}={}", field.key, print_field(field.kind, raw));
    }
    if let Some(w) = instr.wait {
        let _ = write!(s, " wait={w}");
    }
    if let Some(g) = instr.signal {
        let _ = write!(s, " signal={g}");
    }
    s
}

fn strip_comment(line: &str) -> &str {
    let end = line.find(['#', ';']).unwrap_or(line.len());
    line[..end].trim()
}

fn parse_shape(s: &str) -> Result<Vec<u64>, String> {
    let s = s.trim();
    if s == "scalar" {
        return Ok(Vec::new());
    }
    s.split('x')
        .map(|d| {
            let d = d.trim().replace('_', "");
            parse_int(&d)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| format!("bad dimension `{d}` in shape `{s}`"))
        })
        .collect()
}

fn print_shape(shape: &[u64]) -> String {
    if shape.is_empty() {
        return "scalar".into();
    }
    shape
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("x")
}

fn parse_hbm(rest: &str, env: &Env) -> Result<Buffer, String> {
    let rest = rest.trim();
    let (name, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if !is_identifier(name) {
        return Err(format!("`.hbm` needs a buffer name, got `{name}`"));
    }
    let (mut addr, mut dtype, mut shape, mut role) = (None, None, None, None);
    for arg in split_args(args) {
        let (k, v) = arg
            .split_once('=')
            .ok_or_else(|| format!("expected `key=value`, got `{arg}`"))?;
        let dup = match k.trim() {
            "addr" => addr
                .replace(eval_in(v, env, 0, i128::from(u64::MAX), "addr")? as u64)
                .is_some(),
            "dtype" => dtype.replace(v.parse::<ElemType>()?).is_some(),
            "shape" => shape.replace(parse_shape(v)?).is_some(),
            "role" => role
                .replace(Role::from_name(v.trim()).ok_or_else(|| {
                    format!(
                        "unknown role `{}` (input, output, inout, scratch)",
                        v.trim()
                    )
                })?)
                .is_some(),
            other => {
                return Err(format!(
                    "`.hbm` has no key `{other}` (addr, dtype, shape, role)"
                ));
            }
        };
        if dup {
            return Err(format!("`{}` given twice", k.trim()));
        }
    }
    Ok(Buffer {
        name: name.to_string(),
        addr: addr.ok_or("`.hbm` needs `addr`")?,
        dtype: dtype.ok_or("`.hbm` needs `dtype`")?,
        shape: shape.ok_or("`.hbm` needs `shape`")?,
        role: role.unwrap_or(Role::Scratch),
    })
}

fn parse_coord(s: &str, env: &Env) -> Result<u8, String> {
    Ok(eval_in(s, env, 0, 255, "coordinate")? as u8)
}

fn parse_range(s: &str, env: &Env) -> Result<(u8, u8), String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let lo = eval_in(a, env, 0, 255, "range start")? as u16;
            let hi = eval_in(b, env, 0, 256, "range end")? as u16;
            if lo >= hi {
                return Err(format!("empty node range `{}`", s.trim()));
            }
            Ok((lo as u8, (hi - 1) as u8))
        }
        None => {
            let v = parse_coord(s, env)?;
            Ok((v, v))
        }
    }
}

struct Block {
    line: usize,
    nodes: Vec<(u8, u8)>,
    body: Vec<(usize, String)>,
}

/// Parses a program.
pub fn parse_program(text: &str) -> Result<Program, AsmError> {
    let err = |line: usize, msg: String| AsmError { line, msg };
    let mut env = Env::default();
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    // Pass 1: directives that define names, and the node blocks' lines.
    for (i, raw) in text.lines().enumerate() {
        let ln = i + 1;
        let line = strip_comment(raw);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix(".equ") {
            let (name, value) = rest
                .split_once('=')
                .ok_or_else(|| err(ln, "expected `.equ NAME = VALUE`".into()))?;
            let name = name.trim();
            if !is_identifier(name) {
                return Err(err(ln, format!("`{name}` is not a name")));
            }
            let v = eval(value, &env).map_err(|m| err(ln, m))?;
            if env.symbols.insert(name.to_string(), v).is_some() {
                return Err(err(ln, format!("`{name}` defined twice")));
            }
        } else if let Some(rest) = line.strip_prefix(".hbm") {
            let b = parse_hbm(rest, &env).map_err(|m| err(ln, m))?;
            if env
                .symbols
                .insert(b.name.clone(), i128::from(b.addr))
                .is_some()
            {
                return Err(err(ln, format!("`{}` defined twice", b.name)));
            }
            buffers.push(b);
        } else if let Some(rest) = line.strip_prefix(".nodes") {
            let (xr, yr) = rest
                .split_once(',')
                .ok_or_else(|| err(ln, "expected `.nodes X0..X1, Y0..Y1`".into()))?;
            let (x0, x1) = parse_range(xr, &env).map_err(|m| err(ln, m))?;
            let (y0, y1) = parse_range(yr, &env).map_err(|m| err(ln, m))?;
            let mut nodes = Vec::new();
            for y in y0..=y1 {
                for x in x0..=x1 {
                    nodes.push((x, y));
                }
            }
            blocks.push(Block {
                line: ln,
                nodes,
                body: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix(".node") {
            let (x, y) = rest
                .split_once(',')
                .ok_or_else(|| err(ln, "expected `.node X, Y`".into()))?;
            let node = (
                parse_coord(x, &env).map_err(|m| err(ln, m))?,
                parse_coord(y, &env).map_err(|m| err(ln, m))?,
            );
            blocks.push(Block {
                line: ln,
                nodes: vec![node],
                body: Vec::new(),
            });
        } else if line.starts_with('.') {
            return Err(err(ln, format!("unknown directive `{line}`")));
        } else {
            match blocks.last_mut() {
                Some(b) => b.body.push((ln, line.to_string())),
                None => {
                    return Err(err(
                        ln,
                        "instruction before any `.node`/`.nodes` block".into(),
                    ));
                }
            }
        }
    }
    // Pass 2: expand each block per node (bounded: a hostile text cannot make the
    // assembler allocate without limit).
    let total: usize = blocks
        .iter()
        .map(|b| b.nodes.len().saturating_mul(b.body.len()))
        .fold(0, usize::saturating_add);
    if total > MAX_INSTRUCTIONS {
        return Err(err(
            blocks.first().map_or(0, |b| b.line),
            format!(
                "the program expands to {total} instructions, over the limit of {MAX_INSTRUCTIONS}"
            ),
        ));
    }
    let mut streams: Vec<Stream> = Vec::new();
    for block in &blocks {
        let n = block.nodes.len();
        for (id, &(x, y)) in block.nodes.iter().enumerate() {
            if streams.iter().any(|s| s.node == (x, y)) {
                return Err(err(block.line, format!("node ({x},{y}) has two streams")));
            }
            let mut benv = env.clone();
            benv.vars = HashMap::from([
                ("x".to_string(), i128::from(x)),
                ("y".to_string(), i128::from(y)),
                ("id".to_string(), id as i128),
                ("n".to_string(), n as i128),
            ]);
            let mut instrs = Vec::with_capacity(block.body.len());
            for (ln, line) in &block.body {
                let ins = parse_instruction(line, &benv).map_err(|m| {
                    err(
                        *ln,
                        if n > 1 {
                            format!("node ({x},{y}): {m}")
                        } else {
                            m
                        },
                    )
                })?;
                if instrs.last().is_some_and(|l: &Instruction| l.op == Op::End) {
                    return Err(err(*ln, "instruction after `end`".into()));
                }
                instrs.push(ins);
            }
            if instrs.last().is_none_or(|l| l.op != Op::End) {
                return Err(err(
                    block.line,
                    format!("the stream of node ({x},{y}) does not end with `end`"),
                ));
            }
            streams.push(Stream {
                node: (x, y),
                instrs,
            });
        }
    }
    let p = Program { buffers, streams };
    p.validate().map_err(|m| err(0, m))?;
    Ok(p)
}

/// Prints a program: buffers, then one `.node` block per stream.
pub fn print_program(p: &Program) -> String {
    let mut s = String::new();
    for b in &p.buffers {
        let _ = writeln!(
            s,
            ".hbm {} addr={:#x}, dtype={}, shape={}, role={}",
            b.name,
            b.addr,
            b.dtype,
            print_shape(&b.shape),
            b.role.name()
        );
    }
    for st in &p.streams {
        let _ = writeln!(s, ".node {},{}", st.node.0, st.node.1);
        for i in &st.instrs {
            let _ = writeln!(s, "    {}", print_instruction(i));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expressions() {
        let mut env = Env::default();
        env.symbols.insert("A".into(), 0x100);
        env.vars.insert("x".into(), 3);
        assert_eq!(eval("A + 2*(1+$x) - 0x10 % 7", &env), Ok(0x100 + 8 - 2));
        assert_eq!(eval("1_000", &env), Ok(1000));
        assert!(eval("1/0", &env).is_err());
        assert!(eval("B", &env).is_err());
        assert!(eval("$y", &env).is_err());
        assert!(eval("1 2", &env).is_err());
        assert!(eval("170141183460469231731687303715884105727 * 2", &env).is_err());
    }

    #[test]
    fn modifiers_with_or_without_commas() {
        let env = Env::default();
        let a = parse_instruction("sem.signal engine=dma, sem=3 wait=1 signal=2", &env).unwrap();
        let b = parse_instruction("sem.signal engine=dma, sem=3, wait=1, signal=2", &env).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.wait, Some(1));
        assert_eq!(
            print_instruction(&a),
            "sem.signal engine=dma, sem=3 wait=1 signal=2"
        );
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_program(".node 0,0\n  mm dst=0\n  end\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.msg.contains("needs operand"), "{e}");
        let e = parse_program(
            ".node 0,0\n  vadd dst=0, src1=0, cols=1, itype=f32, otype=f32, bogus=1\n end",
        )
        .unwrap_err();
        assert!(e.msg.contains("no operand `bogus`"), "{e}");
        let e = parse_program(".node 0,0\n dma.ld dst=0, src=0, len=0x1000000\n end").unwrap_err();
        assert!(e.msg.contains("out of range"), "{e}");
        let e = parse_program(".node 0,0\n end\n end").unwrap_err();
        assert!(e.msg.contains("after `end`"), "{e}");
        let e = parse_program(".node 0,0\n dma.ld dst=0, src=0, len=4").unwrap_err();
        assert!(e.msg.contains("does not end"), "{e}");
        let e = parse_program(".node 0,0\n end\n.node 0,0\n end").unwrap_err();
        assert!(e.msg.contains("two streams"), "{e}");
    }

    #[test]
    fn node_blocks_expand_with_variables() {
        let text = ".hbm A addr=0x40, dtype=f32, shape=4x4, role=input\n\
                    .nodes 0..2, 0..2\n  dma.ld dst=$x*16, src=A + $id*16 + $y, len=16\n  end\n";
        let p = parse_program(text).unwrap();
        assert_eq!(p.streams.len(), 4);
        let s = &p.streams[3];
        assert_eq!(s.node, (1, 1));
        match s.instrs[0].op {
            Op::Dma(d) => {
                assert_eq!(d.dst, 16);
                assert_eq!(d.src, 0x40 + 3 * 16 + 1);
            }
            _ => panic!("not a dma"),
        }
        assert_eq!(parse_program(&print_program(&p)).unwrap(), p);
    }
}
