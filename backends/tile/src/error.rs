//! Typed errors of the tile crate. Nothing in the crate panics on program, binary or config
//! content: every fault becomes one of these.

use std::fmt;

use crate::isa::Engine;

/// Where in a program a fault happened: node, engine, program counter (index of the
/// instruction in the node's stream) and the instruction's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Node `(x, y)`.
    pub node: (u8, u8),
    /// The engine whose queue holds the instruction.
    pub engine: Option<Engine>,
    /// Index of the instruction in the node's stream.
    pub pc: usize,
    /// The instruction in assembly form.
    pub instr: String,
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (x, y) = self.node;
        write!(f, "node ({x},{y})")?;
        if let Some(e) = self.engine {
            write!(f, " engine {e}")?;
        }
        write!(f, " pc {}: `{}`", self.pc, self.instr)
    }
}

/// An error in the assembly text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct AsmError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

/// An instruction or program that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field's value does not fit its width.
    #[error("`{mnemonic}`: field `{field}` = {value} does not fit {bits} bits")]
    FieldTooWide {
        mnemonic: &'static str,
        field: &'static str,
        value: u64,
        bits: u32,
    },
    /// A semaphore id above 63.
    #[error("`{mnemonic}`: semaphore {sem} out of range 0..64")]
    BadSemaphore { mnemonic: &'static str, sem: u8 },
    /// A program-level limit (name length, rank, counts).
    #[error("cannot encode program: {0}")]
    Program(String),
}

/// A binary program or instruction word that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data ends early.
    #[error("truncated binary at byte {offset}: needed {needed} more bytes")]
    Truncated { offset: usize, needed: usize },
    /// The magic number is wrong.
    #[error("not a terafab-tile binary (bad magic)")]
    BadMagic,
    /// A bad instruction word.
    #[error("bad encoding at node ({},{}) pc {pc}{}: word {word}: {reason}", node.0, node.1, engine.map(|e| format!(" engine {e}")).unwrap_or_default())]
    BadInstruction {
        node: (u8, u8),
        /// The engine its opcode belongs to, when the opcode is known.
        engine: Option<Engine>,
        pc: usize,
        /// The word in hex.
        word: String,
        reason: String,
    },
    /// A bad word outside a program (decoding a lone instruction).
    #[error("bad instruction word {word}: {reason}")]
    BadWord { word: String, reason: String },
    /// Anything else malformed (header, buffer table, stream structure).
    #[error("malformed binary at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
}

/// An error in a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A line of the config text is wrong (unknown key, bad value).
    #[error("config line {line}: {msg}")]
    Line { line: usize, msg: String },
    /// A value out of its allowed range.
    #[error("config: `{key}` = {value}: {msg}")]
    Range {
        key: &'static str,
        value: String,
        msg: String,
    },
    /// An unknown preset name.
    #[error("unknown preset `{0}` (1x1, 2x2, 4x4, d1)")]
    UnknownPreset(String),
}

/// An error of the simulator: setup, host I/O, or a faulty program at run time.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The binary could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The program is structurally invalid.
    #[error("invalid program: {0}")]
    InvalidProgram(String),
    /// A stream for a node outside the mesh.
    #[error("program has a stream for node ({x},{y}) outside the {width}x{height} mesh")]
    NodeOutsideMesh {
        x: u8,
        y: u8,
        width: u32,
        height: u32,
    },
    /// An HBM buffer beyond the configured HBM.
    #[error(
        "HBM buffer `{name}` at {addr:#x} (+{bytes} bytes) exceeds the HBM of {hbm_bytes} bytes"
    )]
    BufferOutsideHbm {
        name: String,
        addr: u64,
        bytes: u64,
        hbm_bytes: u64,
    },
    /// The simulation would need more host memory than allowed.
    #[error(
        "{what} needs {bytes} bytes of host memory, over the limit of {limit} (max_host_bytes)"
    )]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    /// A host allocation failed.
    #[error("could not allocate {bytes} bytes for {what}")]
    Alloc { what: String, bytes: u64 },
    /// No HBM buffer of this name.
    #[error("no HBM buffer named `{0}`")]
    UnknownBuffer(String),
    /// Host data of the wrong size for a buffer.
    #[error("buffer `{name}` holds {expected} {unit}, got {got}")]
    SizeMismatch {
        name: String,
        expected: u64,
        got: u64,
        unit: &'static str,
    },
    /// An SRAM access outside the node's SRAM.
    #[error("{site}: SRAM access [{addr:#x}, {end:#x}) outside the node's {size} bytes")]
    SramOutOfRange {
        site: Site,
        addr: u64,
        end: u64,
        size: u64,
    },
    /// An HBM access outside the declared HBM buffers' extent.
    #[error("{site}: HBM access [{addr:#x}, {end:#x}) outside the declared HBM (0..{size:#x})")]
    HbmOutOfRange {
        site: Site,
        addr: u64,
        end: u64,
        size: u64,
    },
    /// Two in-flight accesses to overlapping bytes, at least one a write, not ordered by
    /// any semaphore.
    #[error(
        "{site}: {what} overlaps an access in flight on {space} by {other} (until cycle {until}); order them with a semaphore"
    )]
    Race {
        site: Site,
        /// "write/write" or "read/write" or "write/read".
        what: &'static str,
        /// "SRAM of node (x,y)" or "HBM".
        space: String,
        /// The other access's instruction.
        other: Box<Site>,
        until: u64,
    },
    /// No engine can make progress but some have instructions left.
    #[error("deadlock: {site} is blocked: {reason} ({blocked} engine queue(s) blocked in all)")]
    Deadlock {
        site: Site,
        reason: String,
        blocked: usize,
    },
    /// An operand out of its allowed range (zero sizes, bad target node, bad axis, ...).
    #[error("{site}: {reason}")]
    InvalidOperand { site: Site, reason: String },
    /// A broken internal invariant (a bug in the simulator, reported instead of a panic).
    #[error("internal simulator error: {0}")]
    Internal(String),
}
