//! Binary encoding of instructions (fixed 256-bit words) and programs.
//!
//! # Instruction word
//!
//! 32 bytes, read as a little-endian 256-bit number; fields are packed from bit 0 upwards:
//!
//! | bits | field |
//! |---|---|
//! | 0-7 | opcode |
//! | 8-14 | `wait`: 0 for none, `0x40 \| sem` |
//! | 15-21 | `signal`: same |
//! | 22-31 | reserved, zero |
//! | 32- | the op's fields in the order of [`crate::isa::OpInfo::fields`], each its width |
//!
//! Every bit after the last field must be zero. Decoding rejects unknown opcodes, nonzero
//! reserved or trailing bits and invalid field values, so `encode(decode(w)) == w` for every
//! word that decodes.
//!
//! # Program
//!
//! `"TFTILE\0\x01"`, u32 buffer count, per buffer (u16 name length, UTF-8 name, u64
//! address, u16 element type code, u8 role, u8 rank <= 8, u64 per dimension), u32 stream
//! count, per stream (u8 x, u8 y, u32 instruction count, the words). All little-endian.

use crate::dtype::ElemType;
use crate::error::{DecodeError, EncodeError};
use crate::isa::{
    Engine, FieldKind, Instruction, NUM_SEMS, Op, WORD_BYTES, op_info, sem_from_raw, sem_to_raw,
};
use crate::program::{Buffer, Program, Role, Stream};

/// The program file magic.
pub const MAGIC: &[u8; 8] = b"TFTILE\x00\x01";
/// Largest rank of an HBM buffer in the binary form.
pub const MAX_RANK: usize = 8;

struct BitWriter {
    word: [u8; WORD_BYTES],
    pos: u32,
}

impl BitWriter {
    fn put(&mut self, value: u64, bits: u32) {
        for i in 0..bits {
            if (value >> i) & 1 == 1 {
                let p = (self.pos + i) as usize;
                if let Some(byte) = self.word.get_mut(p / 8) {
                    *byte |= 1 << (p % 8);
                }
            }
        }
        self.pos += bits;
    }
}

struct BitReader<'a> {
    word: &'a [u8; WORD_BYTES],
    pos: u32,
}

impl BitReader<'_> {
    fn get(&mut self, bits: u32) -> u64 {
        let mut v = 0u64;
        for i in 0..bits {
            let p = (self.pos + i) as usize;
            let bit = self.word.get(p / 8).map_or(0, |b| (b >> (p % 8)) & 1);
            v |= u64::from(bit) << i;
        }
        self.pos += bits;
        v
    }
}

fn fits(value: u64, bits: u32) -> bool {
    bits >= 64 || value >> bits == 0
}

/// Encodes one instruction.
pub fn encode_instruction(instr: &Instruction) -> Result<[u8; WORD_BYTES], EncodeError> {
    let info = instr.op.info();
    let mut w = BitWriter {
        word: [0; WORD_BYTES],
        pos: 0,
    };
    w.put(u64::from(info.opcode), 8);
    for s in [instr.wait, instr.signal] {
        let raw = sem_to_raw(s).ok_or(EncodeError::BadSemaphore {
            mnemonic: info.mnemonic,
            sem: s.unwrap_or(0),
        })?;
        w.put(raw, 7);
    }
    w.put(0, 10);
    let raws = instr.op.raw_fields();
    for (field, raw) in info.fields.iter().zip(raws) {
        if !fits(raw, field.bits) {
            return Err(EncodeError::FieldTooWide {
                mnemonic: info.mnemonic,
                field: field.key,
                value: raw,
                bits: field.bits,
            });
        }
        if field.kind == FieldKind::Uint && field.key == "sem" && raw >= NUM_SEMS as u64 {
            return Err(EncodeError::BadSemaphore {
                mnemonic: info.mnemonic,
                sem: raw as u8,
            });
        }
        w.put(raw, field.bits);
    }
    Ok(w.word)
}

/// Hex text of a word (for error messages).
pub fn word_hex(word: &[u8; WORD_BYTES]) -> String {
    word.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes one instruction word; the error is a reason text.
pub fn decode_word(word: &[u8; WORD_BYTES]) -> Result<Instruction, String> {
    let mut r = BitReader { word, pos: 0 };
    let opcode = r.get(8) as u8;
    let info = op_info(opcode).ok_or_else(|| format!("unknown opcode {opcode:#04x}"))?;
    let wait = sem_from_raw(r.get(7)).map_err(|e| format!("wait: {e}"))?;
    let signal = sem_from_raw(r.get(7)).map_err(|e| format!("signal: {e}"))?;
    if r.get(10) != 0 {
        return Err("reserved header bits are not zero".into());
    }
    let mut raws = Vec::with_capacity(info.fields.len());
    for field in info.fields {
        raws.push(r.get(field.bits));
    }
    while r.pos < (WORD_BYTES * 8) as u32 {
        if r.get(32) != 0 {
            return Err(format!(
                "nonzero bits after the last field of `{}`",
                info.mnemonic
            ));
        }
    }
    let op = Op::from_raw(opcode, &raws).map_err(|e| format!("`{}`: {e}", info.mnemonic))?;
    Ok(Instruction { op, wait, signal })
}

/// The engine a (possibly invalid) word's opcode belongs to, when the opcode is known.
pub fn word_engine(word: &[u8; WORD_BYTES]) -> Option<Engine> {
    let info = op_info(word[0])?;
    match info.opcode {
        0x00 => None,
        // sem.signal, sem.wait, barrier: the engine is the first field (bits 32-33).
        0x01..=0x03 => Engine::ALL.get(usize::from(word[4] & 3)).copied(),
        0x10..=0x12 => Some(Engine::Dma),
        0x18 | 0x19 => Some(Engine::Net),
        0x20 => Some(Engine::Mx),
        _ => Some(Engine::Vx),
    }
}

/// Decodes one instruction word.
pub fn decode_instruction(word: &[u8; WORD_BYTES]) -> Result<Instruction, DecodeError> {
    decode_word(word).map_err(|reason| DecodeError::BadWord {
        word: word_hex(word),
        reason,
    })
}

/// Encodes a program.
pub fn encode_program(p: &Program) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    let n = u32::try_from(p.buffers.len())
        .map_err(|_| EncodeError::Program("too many buffers".into()))?;
    out.extend_from_slice(&n.to_le_bytes());
    for b in &p.buffers {
        let len = u16::try_from(b.name.len())
            .map_err(|_| EncodeError::Program(format!("buffer name `{}` too long", b.name)))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(b.name.as_bytes());
        out.extend_from_slice(&b.addr.to_le_bytes());
        out.extend_from_slice(&(b.dtype.code() as u16).to_le_bytes());
        out.push(Role::ALL.iter().position(|r| *r == b.role).unwrap_or(0) as u8);
        if b.shape.len() > MAX_RANK {
            return Err(EncodeError::Program(format!(
                "buffer `{}` has rank {} > {MAX_RANK}",
                b.name,
                b.shape.len()
            )));
        }
        out.push(b.shape.len() as u8);
        for d in &b.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
    }
    let n = u32::try_from(p.streams.len())
        .map_err(|_| EncodeError::Program("too many streams".into()))?;
    out.extend_from_slice(&n.to_le_bytes());
    for s in &p.streams {
        out.push(s.node.0);
        out.push(s.node.1);
        let n = u32::try_from(s.instrs.len())
            .map_err(|_| EncodeError::Program("too many instructions".into()))?;
        out.extend_from_slice(&n.to_le_bytes());
        for i in &s.instrs {
            out.extend_from_slice(&encode_instruction(i)?);
        }
    }
    Ok(out)
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(e) => {
                let s = &self.data[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n.saturating_sub(self.data.len().saturating_sub(self.pos)),
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn malformed(&self, reason: impl Into<String>) -> DecodeError {
        DecodeError::Malformed {
            offset: self.pos,
            reason: reason.into(),
        }
    }
}

/// Decodes a program (and checks its structure, [`Program::validate`]).
pub fn decode_program(bytes: &[u8]) -> Result<Program, DecodeError> {
    let mut r = Reader {
        data: bytes,
        pos: 0,
    };
    if r.take(MAGIC.len()).map_err(|_| DecodeError::BadMagic)? != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let nbuf = r.u32()? as usize;
    // Each buffer takes at least 14 bytes: bound the count by the data before allocating.
    if nbuf > r.remaining() / 14 {
        return Err(r.malformed(format!("buffer count {nbuf} exceeds the data")));
    }
    let mut buffers = Vec::with_capacity(nbuf);
    for _ in 0..nbuf {
        let len = usize::from(r.u16()?);
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|_| r.malformed("buffer name is not UTF-8"))?
            .to_string();
        let addr = r.u64()?;
        let code = r.u16()?;
        let dtype = ElemType::from_code(u64::from(code))
            .ok_or_else(|| r.malformed(format!("invalid element type code {code:#x}")))?;
        let role_code = r.u8()?;
        let role = Role::ALL
            .get(usize::from(role_code))
            .copied()
            .ok_or_else(|| r.malformed(format!("invalid buffer role {role_code}")))?;
        let rank = usize::from(r.u8()?);
        if rank > MAX_RANK {
            return Err(r.malformed(format!("buffer rank {rank} > {MAX_RANK}")));
        }
        let mut shape = Vec::with_capacity(rank);
        for _ in 0..rank {
            shape.push(r.u64()?);
        }
        buffers.push(Buffer {
            name,
            addr,
            dtype,
            shape,
            role,
        });
    }
    let nstreams = r.u32()? as usize;
    if nstreams > r.remaining() / 6 {
        return Err(r.malformed(format!("stream count {nstreams} exceeds the data")));
    }
    let mut streams = Vec::with_capacity(nstreams);
    for _ in 0..nstreams {
        let node = (r.u8()?, r.u8()?);
        let n = r.u32()? as usize;
        if n > r.remaining() / WORD_BYTES {
            return Err(r.malformed(format!(
                "node ({},{}): {n} instructions exceed the data",
                node.0, node.1
            )));
        }
        let mut instrs = Vec::with_capacity(n);
        for pc in 0..n {
            let word: [u8; WORD_BYTES] = r.array()?;
            let instr = decode_word(&word).map_err(|reason| DecodeError::BadInstruction {
                node,
                engine: word_engine(&word),
                pc,
                word: word_hex(&word),
                reason,
            })?;
            instrs.push(instr);
        }
        streams.push(Stream { node, instrs });
    }
    if r.remaining() != 0 {
        return Err(r.malformed("trailing bytes after the last stream"));
    }
    let p = Program { buffers, streams };
    p.validate().map_err(|reason| DecodeError::Malformed {
        offset: bytes.len(),
        reason,
    })?;
    Ok(p)
}
