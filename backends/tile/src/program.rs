//! Programs: per-node instruction streams plus the HBM layout a host loads and reads.

use std::fmt;

use crate::dtype::ElemType;
use crate::error::{AsmError, DecodeError, EncodeError};
use crate::isa::{Instruction, Op};

/// What the host does with an HBM buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Loaded by the host before the run.
    Input,
    /// Read by the host after the run.
    Output,
    /// Both.
    InOut,
    /// Neither: HBM scratch space the program uses.
    Scratch,
}

impl Role {
    /// All roles in code order.
    pub const ALL: [Role; 4] = [Role::Input, Role::Output, Role::InOut, Role::Scratch];

    /// The text name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Output => "output",
            Role::InOut => "inout",
            Role::Scratch => "scratch",
        }
    }

    /// The role of a text name.
    pub fn from_name(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// A named region of HBM: a dense row-major tensor at a byte address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Buffer {
    /// Name (an identifier; usable in assembly expressions as its address).
    pub name: String,
    /// Byte address in HBM.
    pub addr: u64,
    /// Element type.
    pub dtype: ElemType,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// What the host does with it.
    pub role: Role,
}

impl Buffer {
    /// Number of elements, or `None` on overflow.
    pub fn elements(&self) -> Option<u64> {
        self.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))
    }

    /// Size in bytes, or `None` on overflow.
    pub fn bytes(&self) -> Option<u64> {
        self.elements()?.checked_mul(self.dtype.size())
    }

    /// One past the last byte, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.addr.checked_add(self.bytes()?)
    }
}

/// The instruction stream of one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Stream {
    /// Node `(x, y)`.
    pub node: (u8, u8),
    /// Instructions; the last is `end` and no other is.
    pub instrs: Vec<Instruction>,
}

/// A program: HBM buffers and per-node streams (at most one per node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Program {
    /// HBM layout.
    pub buffers: Vec<Buffer>,
    /// Streams, in declaration order.
    pub streams: Vec<Stream>,
}

/// Whether `s` is a valid buffer name.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Program {
    /// Parses the assembly text form (see [`crate::asm`]).
    pub fn parse(text: &str) -> Result<Program, AsmError> {
        crate::asm::parse_program(text)
    }

    /// The assembly text form (every stream written out per node).
    pub fn to_text(&self) -> String {
        crate::asm::print_program(self)
    }

    /// The binary form (see [`crate::encode`]).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        crate::encode::encode_program(self)
    }

    /// Reads the binary form.
    pub fn decode(bytes: &[u8]) -> Result<Program, DecodeError> {
        crate::encode::decode_program(bytes)
    }

    /// The buffer of a name.
    pub fn buffer(&self, name: &str) -> Option<&Buffer> {
        self.buffers.iter().find(|b| b.name == name)
    }

    /// The stream of a node.
    pub fn stream(&self, node: (u8, u8)) -> Option<&Stream> {
        self.streams.iter().find(|s| s.node == node)
    }

    /// Checks the structural rules: unique identifier buffer names with sizes that do not
    /// overflow, at most one stream per node, every stream ending in its only `end`.
    pub fn validate(&self) -> Result<(), String> {
        for (i, b) in self.buffers.iter().enumerate() {
            if !is_identifier(&b.name) {
                return Err(format!("buffer name `{}` is not an identifier", b.name));
            }
            if self.buffers[..i].iter().any(|o| o.name == b.name) {
                return Err(format!("buffer `{}` declared twice", b.name));
            }
            if b.end().is_none() {
                return Err(format!("buffer `{}`: size overflows", b.name));
            }
        }
        for (i, s) in self.streams.iter().enumerate() {
            if self.streams[..i].iter().any(|o| o.node == s.node) {
                return Err(format!("node ({},{}) has two streams", s.node.0, s.node.1));
            }
            match s.instrs.iter().position(|i| i.op == Op::End) {
                None => {
                    return Err(format!(
                        "stream of node ({},{}) does not end with `end`",
                        s.node.0, s.node.1
                    ));
                }
                Some(p) if p + 1 != s.instrs.len() => {
                    return Err(format!(
                        "stream of node ({},{}) has instructions after `end` (pc {p})",
                        s.node.0, s.node.1
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}
