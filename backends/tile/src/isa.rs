//! Instruction definitions of the tile accelerator (see `ISA.md` for the full specification).
//!
//! An [`Instruction`] is an [`Op`] plus two optional synchronization modifiers: `wait`
//! (take one token from a semaphore before starting) and `signal` (give one token when done).
//! Every op has a fixed table of operand fields ([`OpInfo`]), shared by the binary encoding
//! ([`crate::encode`]) and the assembly text form ([`crate::asm`]): the fields' order is the
//! order of the bits in the instruction word, and their keys are the text form's keys.

use std::fmt;

use crate::dtype::ElemType;

/// Bytes in one instruction word.
pub const WORD_BYTES: usize = 32;
/// Semaphores per node (6-bit ids).
pub const NUM_SEMS: usize = 64;

/// The engines of a node; each runs its own queue of instructions in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    /// DMA engine: HBM <-> SRAM and SRAM <-> SRAM copies.
    Dma,
    /// Matrix engine (8x8x4 MACs per cycle by default).
    Mx,
    /// Vector engine (512-bit SIMD by default).
    Vx,
    /// Router injection port: node-to-node sends and multicasts over the mesh.
    Net,
}

impl Engine {
    /// All engines, in their index order.
    pub const ALL: [Engine; 4] = [Engine::Dma, Engine::Mx, Engine::Vx, Engine::Net];

    /// Index 0..4 (also the 2-bit code).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The text name.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Dma => "dma",
            Engine::Mx => "mx",
            Engine::Vx => "vx",
            Engine::Net => "net",
        }
    }

    /// The engine of a text name.
    pub fn from_name(s: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == s)
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Direction of a DMA transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DmaKind {
    /// HBM -> SRAM (`dma.ld`).
    Load,
    /// SRAM -> HBM (`dma.st`).
    Store,
    /// SRAM -> SRAM of the same node (`dma.cp`).
    Copy,
}

/// A 3-D strided DMA: `n2` blocks of `n1` rows of `len` contiguous bytes. Row `(i2, i1)`
/// reads `src + i2*src_stride2 + i1*src_stride1` and writes `dst + i2*dst_stride2 +
/// i1*dst_stride1`. Addresses are HBM or SRAM byte addresses by [`DmaKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dma {
    pub kind: DmaKind,
    pub dst: u64,
    pub src: u64,
    pub len: u32,
    pub n1: u16,
    pub n2: u16,
    pub src_stride1: u32,
    pub dst_stride1: u32,
    pub src_stride2: u32,
    pub dst_stride2: u32,
}

/// Where a send goes: one node, or every node of an inclusive rectangle (multicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// Node `(x, y)` (`send`).
    Node { x: u8, y: u8 },
    /// Nodes `x0..=x1` by `y0..=y1` (`mcast`).
    Rect { x0: u8, y0: u8, x1: u8, y1: u8 },
}

/// A node-to-node transfer over the mesh: `n1` rows of `len` bytes from this node's SRAM
/// (`src + i*src_stride`) to each destination's SRAM (`dst + i*dst_stride`). When the data
/// has arrived at a destination, that node's semaphore `rsem` (if any) gets one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Send {
    pub dst: u32,
    pub src: u32,
    pub len: u32,
    pub n1: u16,
    pub src_stride: u32,
    pub dst_stride: u32,
    pub dest: Dest,
    pub rsem: Option<u8>,
}

/// Matrix multiply-accumulate on SRAM tiles: `C[m×n] (+)= A[m×k] · B[k×n]`, A and B of any
/// element type, C always f32. Pitches are row pitches in bytes; 0 means packed rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Matmul {
    pub dst: u32,
    pub a: u32,
    pub b: u32,
    pub m: u16,
    pub n: u16,
    pub k: u16,
    pub lda: u32,
    pub ldb: u32,
    pub ldc: u32,
    pub atype: ElemType,
    pub btype: ElemType,
    /// Accumulate into C (true) or overwrite it (false).
    pub acc: bool,
}

/// Elementwise binary operations (computed in f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    CmpEq,
    CmpNe,
    CmpLt,
    CmpLe,
    CmpGt,
    CmpGe,
}

impl BinOp {
    /// All binary ops in opcode order.
    pub const ALL: [BinOp; 12] = [
        BinOp::Add,
        BinOp::Sub,
        BinOp::Mul,
        BinOp::Div,
        BinOp::Max,
        BinOp::Min,
        BinOp::CmpEq,
        BinOp::CmpNe,
        BinOp::CmpLt,
        BinOp::CmpLe,
        BinOp::CmpGt,
        BinOp::CmpGe,
    ];

    /// Whether the vector engine runs it at the reduced (transcendental) rate.
    pub fn is_slow(self) -> bool {
        matches!(self, BinOp::Div)
    }
}

/// Elementwise unary operations (computed in f32; transcendental ones in f64 rounded once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnOp {
    /// Copy with conversion (`vcvt`).
    Cvt,
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Recip,
    Tanh,
    Erf,
}

impl UnOp {
    /// All unary ops in opcode order.
    pub const ALL: [UnOp; 10] = [
        UnOp::Cvt,
        UnOp::Neg,
        UnOp::Abs,
        UnOp::Exp,
        UnOp::Log,
        UnOp::Sqrt,
        UnOp::Rsqrt,
        UnOp::Recip,
        UnOp::Tanh,
        UnOp::Erf,
    ];

    /// Whether the vector engine runs it at the reduced (transcendental) rate.
    pub fn is_slow(self) -> bool {
        !matches!(self, UnOp::Cvt | UnOp::Neg | UnOp::Abs)
    }
}

/// Reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedOp {
    Sum,
    Max,
    Min,
}

impl RedOp {
    /// All reductions in opcode order.
    pub const ALL: [RedOp; 3] = [RedOp::Sum, RedOp::Max, RedOp::Min];
}

/// How the second operand of a binary vector op is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bcast {
    /// A full `rows × cols` tile at `src2` with pitch `pitch2`.
    Tile,
    /// One row of `cols` elements at `src2`, used for every row.
    Row,
    /// One element per row, at `src2 + r*pitch2` (pitch 0: packed), used for every column.
    Col,
    /// The f32 immediate `imm` for every element.
    Imm,
}

impl Bcast {
    const NAMES: [&'static str; 4] = ["tile", "row", "col", "imm"];
    const ALL: [Bcast; 4] = [Bcast::Tile, Bcast::Row, Bcast::Col, Bcast::Imm];
}

/// Binary elementwise op on a `rows × cols` tile: `dst = src1 op src2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VBinary {
    pub op: BinOp,
    pub dst: u32,
    pub src1: u32,
    pub src2: u32,
    pub rows: u16,
    pub cols: u16,
    pub dpitch: u32,
    pub pitch1: u32,
    pub pitch2: u32,
    pub itype: ElemType,
    pub otype: ElemType,
    pub bcast: Bcast,
    /// The immediate's f32 bits (used with [`Bcast::Imm`]).
    pub imm: u32,
    /// Stochastic rounding of the output.
    pub sr: bool,
}

/// Unary elementwise op (and conversion) on a tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VUnary {
    pub op: UnOp,
    pub dst: u32,
    pub src: u32,
    pub rows: u16,
    pub cols: u16,
    pub dpitch: u32,
    pub spitch: u32,
    pub itype: ElemType,
    pub otype: ElemType,
    pub sr: bool,
}

/// `dst = cond != 0 ? a : b` on tiles (the three sources share `spitch` and `itype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VSelect {
    pub dst: u32,
    pub cond: u32,
    pub a: u32,
    pub b: u32,
    pub rows: u16,
    pub cols: u16,
    pub dpitch: u32,
    pub spitch: u32,
    pub itype: ElemType,
    pub otype: ElemType,
    pub sr: bool,
}

/// Reduction of a tile along one axis; the results are written packed at `dst`
/// (`rows` values for `axis = 1`, `cols` values for `axis = 0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VReduce {
    pub op: RedOp,
    pub dst: u32,
    pub src: u32,
    pub rows: u16,
    pub cols: u16,
    pub spitch: u32,
    /// 1: reduce each row over its columns; 0: reduce each column over the rows.
    pub axis: u8,
    pub itype: ElemType,
    pub otype: ElemType,
    pub sr: bool,
}

/// Transpose of a `rows × cols` tile into a `cols × rows` tile, same element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VTranspose {
    pub dst: u32,
    pub src: u32,
    pub rows: u16,
    pub cols: u16,
    pub dpitch: u32,
    pub spitch: u32,
    pub dtype: ElemType,
}

/// An operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Dma(Dma),
    Send(Send),
    Matmul(Matmul),
    VBinary(VBinary),
    VUnary(VUnary),
    VSelect(VSelect),
    VReduce(VReduce),
    VTranspose(VTranspose),
    /// Reseed the vector engine's stochastic-rounding generator.
    VSeed {
        seed: u32,
    },
    /// Give `count` tokens to semaphore `sem` (on `engine`'s queue).
    SemSignal {
        engine: Engine,
        sem: u8,
        count: u16,
    },
    /// Take `count` tokens from semaphore `sem`, waiting until it holds them.
    SemWait {
        engine: Engine,
        sem: u8,
        count: u16,
    },
    /// Wait on `engine`'s queue until every node of the program has reached its barrier of
    /// the same ordinal.
    Barrier {
        engine: Engine,
    },
    /// End of the node's stream.
    End,
}

/// An instruction: an op and its synchronization modifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Instruction {
    pub op: Op,
    /// Take one token from this semaphore before starting.
    pub wait: Option<u8>,
    /// Give one token to this semaphore on completion.
    pub signal: Option<u8>,
}

impl From<Op> for Instruction {
    fn from(op: Op) -> Instruction {
        Instruction {
            op,
            wait: None,
            signal: None,
        }
    }
}

/// How a field's raw bits are read and printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Unsigned count or size, printed in decimal.
    Uint,
    /// Byte address, printed in hex.
    Addr,
    /// An [`ElemType`] (9-bit code).
    Elem,
    /// 0 or 1.
    Bool,
    /// An [`Engine`] (2 bits).
    Engine,
    /// A [`Bcast`] mode (2 bits).
    Bcast,
    /// f32 bits.
    F32,
    /// An optional semaphore id: 7 bits, `0` for none or `0x40 | id`.
    Sem,
}

/// One operand field of an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The key in the text form.
    pub key: &'static str,
    /// Width in the instruction word.
    pub bits: u32,
    /// Interpretation.
    pub kind: FieldKind,
    /// The raw value the text form may omit (and the printer omits).
    pub default: Option<u64>,
}

const fn f(key: &'static str, bits: u32, kind: FieldKind, default: Option<u64>) -> Field {
    Field {
        key,
        bits,
        kind,
        default,
    }
}

use FieldKind as K;

const DMA_FIELDS: &[Field] = &[
    f("dst", 40, K::Addr, None),
    f("src", 40, K::Addr, None),
    f("len", 24, K::Uint, None),
    f("n1", 12, K::Uint, Some(1)),
    f("n2", 12, K::Uint, Some(1)),
    f("sstride1", 24, K::Uint, Some(0)),
    f("dstride1", 24, K::Uint, Some(0)),
    f("sstride2", 24, K::Uint, Some(0)),
    f("dstride2", 24, K::Uint, Some(0)),
];

const SEND_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("src", 24, K::Addr, None),
    f("len", 24, K::Uint, None),
    f("n1", 12, K::Uint, Some(1)),
    f("sstride", 24, K::Uint, Some(0)),
    f("dstride", 24, K::Uint, Some(0)),
    f("x", 8, K::Uint, None),
    f("y", 8, K::Uint, None),
    f("rsem", 7, K::Sem, Some(0)),
];

const MCAST_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("src", 24, K::Addr, None),
    f("len", 24, K::Uint, None),
    f("n1", 12, K::Uint, Some(1)),
    f("sstride", 24, K::Uint, Some(0)),
    f("dstride", 24, K::Uint, Some(0)),
    f("x0", 8, K::Uint, None),
    f("y0", 8, K::Uint, None),
    f("x1", 8, K::Uint, None),
    f("y1", 8, K::Uint, None),
    f("rsem", 7, K::Sem, Some(0)),
];

const MM_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("a", 24, K::Addr, None),
    f("b", 24, K::Addr, None),
    f("m", 12, K::Uint, None),
    f("n", 12, K::Uint, None),
    f("k", 12, K::Uint, None),
    f("lda", 24, K::Uint, Some(0)),
    f("ldb", 24, K::Uint, Some(0)),
    f("ldc", 24, K::Uint, Some(0)),
    f("atype", 9, K::Elem, None),
    f("btype", 9, K::Elem, None),
    f("acc", 1, K::Bool, Some(0)),
];

const VBIN_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("src1", 24, K::Addr, None),
    f("src2", 24, K::Addr, Some(0)),
    f("rows", 12, K::Uint, Some(1)),
    f("cols", 12, K::Uint, None),
    f("dpitch", 24, K::Uint, Some(0)),
    f("pitch1", 24, K::Uint, Some(0)),
    f("pitch2", 24, K::Uint, Some(0)),
    f("itype", 9, K::Elem, None),
    f("otype", 9, K::Elem, None),
    f("bcast", 2, K::Bcast, Some(0)),
    f("imm", 32, K::F32, Some(0)),
    f("sr", 1, K::Bool, Some(0)),
];

const VUN_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("src", 24, K::Addr, None),
    f("rows", 12, K::Uint, Some(1)),
    f("cols", 12, K::Uint, None),
    f("dpitch", 24, K::Uint, Some(0)),
    f("spitch", 24, K::Uint, Some(0)),
    f("itype", 9, K::Elem, None),
    f("otype", 9, K::Elem, None),
    f("sr", 1, K::Bool, Some(0)),
];

const VSEL_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("cond", 24, K::Addr, None),
    f("a", 24, K::Addr, None),
    f("b", 24, K::Addr, None),
    f("rows", 12, K::Uint, Some(1)),
    f("cols", 12, K::Uint, None),
    f("dpitch", 24, K::Uint, Some(0)),
    f("spitch", 24, K::Uint, Some(0)),
    f("itype", 9, K::Elem, None),
    f("otype", 9, K::Elem, None),
    f("sr", 1, K::Bool, Some(0)),
];

const VRED_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("src", 24, K::Addr, None),
    f("rows", 12, K::Uint, Some(1)),
    f("cols", 12, K::Uint, None),
    f("spitch", 24, K::Uint, Some(0)),
    f("axis", 1, K::Uint, None),
    f("itype", 9, K::Elem, None),
    f("otype", 9, K::Elem, None),
    f("sr", 1, K::Bool, Some(0)),
];

const VTRANS_FIELDS: &[Field] = &[
    f("dst", 24, K::Addr, None),
    f("src", 24, K::Addr, None),
    f("rows", 12, K::Uint, None),
    f("cols", 12, K::Uint, None),
    f("dpitch", 24, K::Uint, Some(0)),
    f("spitch", 24, K::Uint, Some(0)),
    f("dtype", 9, K::Elem, None),
];

const VSEED_FIELDS: &[Field] = &[f("seed", 32, K::Uint, None)];

const SEM_FIELDS: &[Field] = &[
    f("engine", 2, K::Engine, None),
    f("sem", 6, K::Uint, None),
    f("count", 16, K::Uint, Some(1)),
];

const BARRIER_FIELDS: &[Field] = &[f("engine", 2, K::Engine, None)];

/// The description of one opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// The opcode byte.
    pub opcode: u8,
    /// The text mnemonic.
    pub mnemonic: &'static str,
    /// The operand fields, in encoding order.
    pub fields: &'static [Field],
}

const fn oi(opcode: u8, mnemonic: &'static str, fields: &'static [Field]) -> OpInfo {
    OpInfo {
        opcode,
        mnemonic,
        fields,
    }
}

/// Every opcode.
pub const OPS: &[OpInfo] = &[
    oi(0x00, "end", &[]),
    oi(0x01, "sem.signal", SEM_FIELDS),
    oi(0x02, "sem.wait", SEM_FIELDS),
    oi(0x03, "barrier", BARRIER_FIELDS),
    oi(0x10, "dma.ld", DMA_FIELDS),
    oi(0x11, "dma.st", DMA_FIELDS),
    oi(0x12, "dma.cp", DMA_FIELDS),
    oi(0x18, "send", SEND_FIELDS),
    oi(0x19, "mcast", MCAST_FIELDS),
    oi(0x20, "mm", MM_FIELDS),
    oi(0x30, "vseed", VSEED_FIELDS),
    oi(0x40, "vadd", VBIN_FIELDS),
    oi(0x41, "vsub", VBIN_FIELDS),
    oi(0x42, "vmul", VBIN_FIELDS),
    oi(0x43, "vdiv", VBIN_FIELDS),
    oi(0x44, "vmax", VBIN_FIELDS),
    oi(0x45, "vmin", VBIN_FIELDS),
    oi(0x46, "vceq", VBIN_FIELDS),
    oi(0x47, "vcne", VBIN_FIELDS),
    oi(0x48, "vclt", VBIN_FIELDS),
    oi(0x49, "vcle", VBIN_FIELDS),
    oi(0x4A, "vcgt", VBIN_FIELDS),
    oi(0x4B, "vcge", VBIN_FIELDS),
    oi(0x60, "vcvt", VUN_FIELDS),
    oi(0x61, "vneg", VUN_FIELDS),
    oi(0x62, "vabs", VUN_FIELDS),
    oi(0x63, "vexp", VUN_FIELDS),
    oi(0x64, "vlog", VUN_FIELDS),
    oi(0x65, "vsqrt", VUN_FIELDS),
    oi(0x66, "vrsqrt", VUN_FIELDS),
    oi(0x67, "vrecip", VUN_FIELDS),
    oi(0x68, "vtanh", VUN_FIELDS),
    oi(0x69, "verf", VUN_FIELDS),
    oi(0x70, "vsel", VSEL_FIELDS),
    oi(0x78, "vredsum", VRED_FIELDS),
    oi(0x79, "vredmax", VRED_FIELDS),
    oi(0x7A, "vredmin", VRED_FIELDS),
    oi(0x7C, "vtrans", VTRANS_FIELDS),
];

const OP_DMA_LD: u8 = 0x10;
const OP_SEND: u8 = 0x18;
const OP_MCAST: u8 = 0x19;
const OP_MM: u8 = 0x20;
const OP_VSEED: u8 = 0x30;
const OP_VBIN: u8 = 0x40;
const OP_VUN: u8 = 0x60;
const OP_VSEL: u8 = 0x70;
const OP_VRED: u8 = 0x78;
const OP_VTRANS: u8 = 0x7C;

/// The description of an opcode byte.
pub fn op_info(opcode: u8) -> Option<&'static OpInfo> {
    OPS.iter().find(|o| o.opcode == opcode)
}

/// The description of a mnemonic.
pub fn op_by_mnemonic(mnemonic: &str) -> Option<&'static OpInfo> {
    OPS.iter().find(|o| o.mnemonic == mnemonic)
}

fn elem(raw: u64, key: &str) -> Result<ElemType, String> {
    ElemType::from_code(raw).ok_or_else(|| format!("invalid element type code {raw:#x} in `{key}`"))
}

fn sem_raw(s: Option<u8>) -> u64 {
    s.map_or(0, |s| 0x40 | u64::from(s))
}

/// Decodes a [`FieldKind::Sem`] raw value.
pub fn sem_from_raw(raw: u64) -> Result<Option<u8>, String> {
    match raw {
        0 => Ok(None),
        r if r & !0x7F == 0 && r & 0x40 != 0 => Ok(Some((r & 0x3F) as u8)),
        r => Err(format!("invalid semaphore field {r:#x}")),
    }
}

/// Encodes an optional semaphore as a [`FieldKind::Sem`] raw value (`None` if the id > 63).
pub fn sem_to_raw(s: Option<u8>) -> Option<u64> {
    match s {
        Some(id) if usize::from(id) >= NUM_SEMS => None,
        s => Some(sem_raw(s)),
    }
}

fn engine_from_raw(raw: u64) -> Result<Engine, String> {
    usize::try_from(raw)
        .ok()
        .and_then(|i| Engine::ALL.get(i).copied())
        .ok_or_else(|| format!("invalid engine code {raw}"))
}

fn bcast_from_raw(raw: u64) -> Result<Bcast, String> {
    usize::try_from(raw)
        .ok()
        .and_then(|i| Bcast::ALL.get(i).copied())
        .ok_or_else(|| format!("invalid bcast code {raw}"))
}

/// The name of a [`Bcast`] raw value.
pub fn bcast_name(raw: u64) -> Option<&'static str> {
    usize::try_from(raw)
        .ok()
        .and_then(|i| Bcast::NAMES.get(i).copied())
}

/// The raw value of a [`Bcast`] name.
pub fn bcast_from_name(s: &str) -> Option<u64> {
    Bcast::NAMES.iter().position(|n| *n == s).map(|i| i as u64)
}

// Narrowing helpers for `from_raw`: the field widths guarantee these fit, so a failure is a
// caller error and reported as such.
fn n16(v: u64) -> Result<u16, String> {
    u16::try_from(v).map_err(|_| format!("value {v} does not fit 16 bits"))
}
fn n32(v: u64) -> Result<u32, String> {
    u32::try_from(v).map_err(|_| format!("value {v} does not fit 32 bits"))
}
fn n8(v: u64) -> Result<u8, String> {
    u8::try_from(v).map_err(|_| format!("value {v} does not fit 8 bits"))
}

impl Op {
    /// The opcode byte.
    pub fn opcode(&self) -> u8 {
        match self {
            Op::End => 0x00,
            Op::SemSignal { .. } => 0x01,
            Op::SemWait { .. } => 0x02,
            Op::Barrier { .. } => 0x03,
            Op::Dma(d) => match d.kind {
                DmaKind::Load => 0x10,
                DmaKind::Store => 0x11,
                DmaKind::Copy => 0x12,
            },
            Op::Send(s) => match s.dest {
                Dest::Node { .. } => OP_SEND,
                Dest::Rect { .. } => OP_MCAST,
            },
            Op::Matmul(_) => OP_MM,
            Op::VSeed { .. } => OP_VSEED,
            Op::VBinary(v) => {
                OP_VBIN + BinOp::ALL.iter().position(|o| *o == v.op).unwrap_or(0) as u8
            }
            Op::VUnary(v) => OP_VUN + UnOp::ALL.iter().position(|o| *o == v.op).unwrap_or(0) as u8,
            Op::VSelect(_) => OP_VSEL,
            Op::VReduce(v) => {
                OP_VRED + RedOp::ALL.iter().position(|o| *o == v.op).unwrap_or(0) as u8
            }
            Op::VTranspose(_) => OP_VTRANS,
        }
    }

    /// The op's description.
    pub fn info(&self) -> &'static OpInfo {
        // Every opcode `opcode()` returns is in `OPS`; `OPS[0]` (end) is never reached.
        op_info(self.opcode()).unwrap_or(&OPS[0])
    }

    /// The mnemonic.
    pub fn mnemonic(&self) -> &'static str {
        self.info().mnemonic
    }

    /// The engine whose queue runs this op (`None` for `end`).
    pub fn engine(&self) -> Option<Engine> {
        Some(match self {
            Op::End => return None,
            Op::SemSignal { engine, .. } | Op::SemWait { engine, .. } | Op::Barrier { engine } => {
                *engine
            }
            Op::Dma(_) => Engine::Dma,
            Op::Send(_) => Engine::Net,
            Op::Matmul(_) => Engine::Mx,
            Op::VSeed { .. }
            | Op::VBinary(_)
            | Op::VUnary(_)
            | Op::VSelect(_)
            | Op::VReduce(_)
            | Op::VTranspose(_) => Engine::Vx,
        })
    }

    /// The raw field values, in the order of [`OpInfo::fields`].
    pub fn raw_fields(&self) -> Vec<u64> {
        fn u<T: Into<u64>>(v: T) -> u64 {
            v.into()
        }
        match *self {
            Op::End => vec![],
            Op::SemSignal { engine, sem, count } | Op::SemWait { engine, sem, count } => {
                vec![engine.index() as u64, u(sem), u(count)]
            }
            Op::Barrier { engine } => vec![engine.index() as u64],
            Op::Dma(d) => vec![
                d.dst,
                d.src,
                u(d.len),
                u(d.n1),
                u(d.n2),
                u(d.src_stride1),
                u(d.dst_stride1),
                u(d.src_stride2),
                u(d.dst_stride2),
            ],
            Op::Send(s) => {
                let mut v = vec![
                    u(s.dst),
                    u(s.src),
                    u(s.len),
                    u(s.n1),
                    u(s.src_stride),
                    u(s.dst_stride),
                ];
                match s.dest {
                    Dest::Node { x, y } => v.extend([u(x), u(y)]),
                    Dest::Rect { x0, y0, x1, y1 } => v.extend([u(x0), u(y0), u(x1), u(y1)]),
                }
                v.push(sem_raw(s.rsem));
                v
            }
            Op::Matmul(m) => vec![
                u(m.dst),
                u(m.a),
                u(m.b),
                u(m.m),
                u(m.n),
                u(m.k),
                u(m.lda),
                u(m.ldb),
                u(m.ldc),
                m.atype.code(),
                m.btype.code(),
                u(m.acc),
            ],
            Op::VSeed { seed } => vec![u(seed)],
            Op::VBinary(v) => vec![
                u(v.dst),
                u(v.src1),
                u(v.src2),
                u(v.rows),
                u(v.cols),
                u(v.dpitch),
                u(v.pitch1),
                u(v.pitch2),
                v.itype.code(),
                v.otype.code(),
                Bcast::ALL.iter().position(|b| *b == v.bcast).unwrap_or(0) as u64,
                u(v.imm),
                u(v.sr),
            ],
            Op::VUnary(v) => vec![
                u(v.dst),
                u(v.src),
                u(v.rows),
                u(v.cols),
                u(v.dpitch),
                u(v.spitch),
                v.itype.code(),
                v.otype.code(),
                u(v.sr),
            ],
            Op::VSelect(v) => vec![
                u(v.dst),
                u(v.cond),
                u(v.a),
                u(v.b),
                u(v.rows),
                u(v.cols),
                u(v.dpitch),
                u(v.spitch),
                v.itype.code(),
                v.otype.code(),
                u(v.sr),
            ],
            Op::VReduce(v) => vec![
                u(v.dst),
                u(v.src),
                u(v.rows),
                u(v.cols),
                u(v.spitch),
                u(v.axis),
                v.itype.code(),
                v.otype.code(),
                u(v.sr),
            ],
            Op::VTranspose(v) => vec![
                u(v.dst),
                u(v.src),
                u(v.rows),
                u(v.cols),
                u(v.dpitch),
                u(v.spitch),
                v.dtype.code(),
            ],
        }
    }

    /// Builds an op from its opcode and raw field values (one per field of its
    /// [`OpInfo`], each already within the field's width). Errors name the invalid field.
    pub fn from_raw(opcode: u8, r: &[u64]) -> Result<Op, String> {
        let info = op_info(opcode).ok_or_else(|| format!("unknown opcode {opcode:#04x}"))?;
        if r.len() != info.fields.len() {
            return Err(format!(
                "`{}` takes {} fields, got {}",
                info.mnemonic,
                info.fields.len(),
                r.len()
            ));
        }
        let g = |i: usize| r.get(i).copied().unwrap_or(0);
        let b = |i: usize| -> Result<bool, String> {
            match g(i) {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(format!("invalid flag {v}")),
            }
        };
        Ok(match opcode {
            0x00 => Op::End,
            0x01 | 0x02 => {
                let engine = engine_from_raw(g(0))?;
                let sem = n8(g(1))?;
                if usize::from(sem) >= NUM_SEMS {
                    return Err(format!("semaphore {sem} out of range"));
                }
                let count = n16(g(2))?;
                if opcode == 0x01 {
                    Op::SemSignal { engine, sem, count }
                } else {
                    Op::SemWait { engine, sem, count }
                }
            }
            0x03 => Op::Barrier {
                engine: engine_from_raw(g(0))?,
            },
            0x10..=0x12 => Op::Dma(Dma {
                kind: match opcode - OP_DMA_LD {
                    0 => DmaKind::Load,
                    1 => DmaKind::Store,
                    _ => DmaKind::Copy,
                },
                dst: g(0),
                src: g(1),
                len: n32(g(2))?,
                n1: n16(g(3))?,
                n2: n16(g(4))?,
                src_stride1: n32(g(5))?,
                dst_stride1: n32(g(6))?,
                src_stride2: n32(g(7))?,
                dst_stride2: n32(g(8))?,
            }),
            OP_SEND | OP_MCAST => {
                let (dest, rsem_at) = if opcode == OP_SEND {
                    (
                        Dest::Node {
                            x: n8(g(6))?,
                            y: n8(g(7))?,
                        },
                        8,
                    )
                } else {
                    (
                        Dest::Rect {
                            x0: n8(g(6))?,
                            y0: n8(g(7))?,
                            x1: n8(g(8))?,
                            y1: n8(g(9))?,
                        },
                        10,
                    )
                };
                Op::Send(Send {
                    dst: n32(g(0))?,
                    src: n32(g(1))?,
                    len: n32(g(2))?,
                    n1: n16(g(3))?,
                    src_stride: n32(g(4))?,
                    dst_stride: n32(g(5))?,
                    dest,
                    rsem: sem_from_raw(g(rsem_at))?,
                })
            }
            OP_MM => Op::Matmul(Matmul {
                dst: n32(g(0))?,
                a: n32(g(1))?,
                b: n32(g(2))?,
                m: n16(g(3))?,
                n: n16(g(4))?,
                k: n16(g(5))?,
                lda: n32(g(6))?,
                ldb: n32(g(7))?,
                ldc: n32(g(8))?,
                atype: elem(g(9), "atype")?,
                btype: elem(g(10), "btype")?,
                acc: b(11)?,
            }),
            OP_VSEED => Op::VSeed { seed: n32(g(0))? },
            0x40..=0x4B => Op::VBinary(VBinary {
                op: BinOp::ALL
                    .get(usize::from(opcode - OP_VBIN))
                    .copied()
                    .ok_or("bad binary opcode")?,
                dst: n32(g(0))?,
                src1: n32(g(1))?,
                src2: n32(g(2))?,
                rows: n16(g(3))?,
                cols: n16(g(4))?,
                dpitch: n32(g(5))?,
                pitch1: n32(g(6))?,
                pitch2: n32(g(7))?,
                itype: elem(g(8), "itype")?,
                otype: elem(g(9), "otype")?,
                bcast: bcast_from_raw(g(10))?,
                imm: n32(g(11))?,
                sr: b(12)?,
            }),
            0x60..=0x69 => Op::VUnary(VUnary {
                op: UnOp::ALL
                    .get(usize::from(opcode - OP_VUN))
                    .copied()
                    .ok_or("bad unary opcode")?,
                dst: n32(g(0))?,
                src: n32(g(1))?,
                rows: n16(g(2))?,
                cols: n16(g(3))?,
                dpitch: n32(g(4))?,
                spitch: n32(g(5))?,
                itype: elem(g(6), "itype")?,
                otype: elem(g(7), "otype")?,
                sr: b(8)?,
            }),
            OP_VSEL => Op::VSelect(VSelect {
                dst: n32(g(0))?,
                cond: n32(g(1))?,
                a: n32(g(2))?,
                b: n32(g(3))?,
                rows: n16(g(4))?,
                cols: n16(g(5))?,
                dpitch: n32(g(6))?,
                spitch: n32(g(7))?,
                itype: elem(g(8), "itype")?,
                otype: elem(g(9), "otype")?,
                sr: b(10)?,
            }),
            0x78..=0x7A => Op::VReduce(VReduce {
                op: RedOp::ALL
                    .get(usize::from(opcode - OP_VRED))
                    .copied()
                    .ok_or("bad reduction opcode")?,
                dst: n32(g(0))?,
                src: n32(g(1))?,
                rows: n16(g(2))?,
                cols: n16(g(3))?,
                spitch: n32(g(4))?,
                axis: n8(g(5))?,
                itype: elem(g(6), "itype")?,
                otype: elem(g(7), "otype")?,
                sr: b(8)?,
            }),
            OP_VTRANS => Op::VTranspose(VTranspose {
                dst: n32(g(0))?,
                src: n32(g(1))?,
                rows: n16(g(2))?,
                cols: n16(g(3))?,
                dpitch: n32(g(4))?,
                spitch: n32(g(5))?,
                dtype: elem(g(6), "dtype")?,
            }),
            other => return Err(format!("unknown opcode {other:#04x}")),
        })
    }
}

impl fmt::Display for Instruction {
    /// The assembly text form (see [`crate::asm`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::asm::print_instruction(self))
    }
}
