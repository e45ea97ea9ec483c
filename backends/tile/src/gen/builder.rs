//! Helpers shared by the generators: an SRAM bump allocator, per-engine instruction queues
//! and strided DMA descriptors that respect the instruction fields' widths.

use super::GenError;
use crate::isa::{Dma, DmaKind, Engine, Instruction, NUM_SEMS, Op};
use crate::program::Stream;

/// Largest value of a 24-bit field (DMA `len` and strides, SRAM addresses, pitches).
pub const MAX_24: u64 = (1 << 24) - 1;
/// Largest value of a 12-bit field (row counts, `mm` and vector dimensions).
pub const MAX_12: u64 = (1 << 12) - 1;
/// Largest HBM address (40 bits).
pub const MAX_40: u64 = (1 << 40) - 1;

/// Checks that `value` fits a field of `max` and converts it.
pub fn field<T: TryFrom<u64>>(what: &'static str, value: u64, max: u64) -> Result<T, GenError> {
    if value > max {
        return Err(GenError::Field { what, value });
    }
    T::try_from(value).map_err(|_| GenError::Field { what, value })
}

/// `a · b` or an overflow error naming `what`.
pub fn mul(what: &'static str, a: u64, b: u64) -> Result<u64, GenError> {
    a.checked_mul(b).ok_or(GenError::Overflow(what))
}

/// `a + b` or an overflow error naming `what`.
pub fn add(what: &'static str, a: u64, b: u64) -> Result<u64, GenError> {
    a.checked_add(b).ok_or(GenError::Overflow(what))
}

/// A bump allocator over one node's SRAM; every region is 64-byte aligned.
#[derive(Debug, Clone)]
pub struct SramAlloc {
    next: u64,
}

impl SramAlloc {
    /// Alignment of every region.
    pub const ALIGN: u64 = 64;

    /// An empty SRAM.
    pub fn new() -> SramAlloc {
        SramAlloc { next: 0 }
    }

    /// Reserves `bytes` and returns the region's address.
    pub fn alloc(&mut self, bytes: u64) -> Result<u64, GenError> {
        let at = self.next;
        let end = add("SRAM layout", at, bytes)?;
        self.next = end
            .checked_next_multiple_of(Self::ALIGN)
            .ok_or(GenError::Overflow("SRAM layout"))?;
        Ok(at)
    }

    /// Bytes reserved so far (one past the last region, aligned).
    pub fn used(&self) -> u64 {
        self.next
    }
}

impl Default for SramAlloc {
    fn default() -> SramAlloc {
        SramAlloc::new()
    }
}

/// A node's instructions, one list per engine queue. Only the order within a queue
/// matters (ISA.md §3), so the generator appends to each queue independently and
/// [`Queues::into_stream`] concatenates them.
#[derive(Debug, Clone, Default)]
pub struct Queues {
    queues: [Vec<Instruction>; 4],
}

fn sem_id(sem: u8) -> Result<u8, GenError> {
    if usize::from(sem) >= NUM_SEMS {
        return Err(GenError::Field {
            what: "semaphore",
            value: u64::from(sem),
        });
    }
    Ok(sem)
}

impl Queues {
    /// Empty queues.
    pub fn new() -> Queues {
        Queues::default()
    }

    /// Appends `op` to `engine`'s queue with optional `wait` / `signal` semaphores.
    pub fn push(
        &mut self,
        engine: Engine,
        op: Op,
        wait: Option<u8>,
        signal: Option<u8>,
    ) -> Result<(), GenError> {
        let wait = wait.map(sem_id).transpose()?;
        let signal = signal.map(sem_id).transpose()?;
        self.queues[engine.index()].push(Instruction { op, wait, signal });
        Ok(())
    }

    /// `sem.wait` on `engine` for `count` tokens (nothing for a count of 0).
    pub fn sem_wait(&mut self, engine: Engine, sem: u8, count: u64) -> Result<(), GenError> {
        if count == 0 {
            return Ok(());
        }
        let count = field("sem.wait count", count, u64::from(u16::MAX))?;
        let sem = sem_id(sem)?;
        self.push(engine, Op::SemWait { engine, sem, count }, None, None)
    }

    /// `sem.signal` on `engine` giving `count` tokens (nothing for a count of 0).
    pub fn sem_signal(&mut self, engine: Engine, sem: u8, count: u64) -> Result<(), GenError> {
        if count == 0 {
            return Ok(());
        }
        let count = field("sem.signal count", count, u64::from(u16::MAX))?;
        let sem = sem_id(sem)?;
        self.push(engine, Op::SemSignal { engine, sem, count }, None, None)
    }

    /// Instructions queued so far on all engines.
    pub fn len(&self) -> usize {
        self.queues.iter().map(Vec::len).sum()
    }

    /// Whether no instruction is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The node's stream: the queues one after another, then `end`.
    pub fn into_stream(self, node: (u8, u8)) -> Stream {
        let mut instrs: Vec<Instruction> = self.queues.into_iter().flatten().collect();
        instrs.push(Op::End.into());
        Stream { node, instrs }
    }
}

/// A 2-D copy of `rows` rows of `len` bytes (`src + i·sstride` → `dst + i·dstride`) as DMA
/// descriptors: one when the strides fit their 24-bit fields, else one per row.
pub fn dma_2d(
    kind: DmaKind,
    dst: u64,
    src: u64,
    len: u64,
    rows: u64,
    sstride: u64,
    dstride: u64,
) -> Result<Vec<Dma>, GenError> {
    let len32: u32 = field("DMA row length", len, MAX_24)?;
    if rows == 0 {
        return Err(GenError::ZeroDim("DMA rows"));
    }
    let last = rows - 1;
    let src_end = add(
        "DMA source",
        src,
        add("DMA", mul("DMA", last, sstride)?, len)?,
    )?;
    let dst_end = add(
        "DMA destination",
        dst,
        add("DMA", mul("DMA", last, dstride)?, len)?,
    )?;
    field::<u64>("DMA source end", src_end, MAX_40 + 1)?;
    field::<u64>("DMA destination end", dst_end, MAX_40 + 1)?;
    let one = |dst: u64, src: u64, n1: u64, ss: u64, ds: u64| -> Result<Dma, GenError> {
        Ok(Dma {
            kind,
            dst,
            src,
            len: len32,
            n1: field("DMA rows", n1, MAX_12)?,
            n2: 1,
            src_stride1: field("DMA source stride", ss, MAX_24)?,
            dst_stride1: field("DMA destination stride", ds, MAX_24)?,
            src_stride2: 0,
            dst_stride2: 0,
        })
    };
    if rows == 1 {
        return Ok(vec![one(dst, src, 1, 0, 0)?]);
    }
    if sstride <= MAX_24 && dstride <= MAX_24 && rows <= MAX_12 {
        return Ok(vec![one(dst, src, rows, sstride, dstride)?]);
    }
    (0..rows)
        .map(|i| {
            one(
                dst + i * dstride, // bounded by dst_end, checked above
                src + i * sstride,
                1,
                0,
                0,
            )
        })
        .collect()
}

/// A 3-D copy: `n2` planes of `n1` rows of `len` bytes, row `(i2, i1)` from
/// `src + i2·ss2 + i1·ss1` to `dst + i2·ds2 + i1·ds1` (`dim1 = (n1, ss1, ds1)`, `dim2 = (n2,
/// ss2, ds2)`), as DMA descriptors: one when the counts and strides fit their fields, else
/// one per plane ([`dma_2d`]).
pub fn dma_3d(
    kind: DmaKind,
    dst: u64,
    src: u64,
    len: u64,
    dim1: (u64, u64, u64),
    dim2: (u64, u64, u64),
) -> Result<Vec<Dma>, GenError> {
    let (n1, ss1, ds1) = dim1;
    let (n2, ss2, ds2) = dim2;
    if n2 == 0 {
        return Err(GenError::ZeroDim("DMA planes"));
    }
    if n2 == 1 {
        return dma_2d(kind, dst, src, len, n1, ss1, ds1);
    }
    let fits = n1 <= MAX_12 && n2 <= MAX_12 && [ss1, ds1, ss2, ds2].iter().all(|&s| s <= MAX_24);
    if fits && n1 >= 1 {
        // The last row's ends, checked like dma_2d's.
        let last = |base: u64, s1: u64, s2: u64| {
            add(
                "DMA",
                base,
                add(
                    "DMA",
                    add("DMA", mul("DMA", n1 - 1, s1)?, mul("DMA", n2 - 1, s2)?)?,
                    len,
                )?,
            )
        };
        field::<u64>("DMA source end", last(src, ss1, ss2)?, MAX_40 + 1)?;
        field::<u64>("DMA destination end", last(dst, ds1, ds2)?, MAX_40 + 1)?;
        return Ok(vec![Dma {
            kind,
            dst,
            src,
            len: field("DMA row length", len, MAX_24)?,
            n1: field("DMA rows", n1, MAX_12)?,
            n2: field("DMA planes", n2, MAX_12)?,
            src_stride1: field("DMA source stride", ss1, MAX_24)?,
            dst_stride1: field("DMA destination stride", ds1, MAX_24)?,
            src_stride2: field("DMA source stride", ss2, MAX_24)?,
            dst_stride2: field("DMA destination stride", ds2, MAX_24)?,
        }]);
    }
    let mut out = Vec::new();
    for i in 0..n2 {
        out.extend(dma_2d(
            kind,
            add("DMA", dst, mul("DMA", i, ds2)?)?,
            add("DMA", src, mul("DMA", i, ss2)?)?,
            len,
            n1,
            ss1,
            ds1,
        )?);
    }
    Ok(out)
}
