//! The engines' arithmetic and data movement on memory contents (the functional half of the
//! simulator). Callers have checked every region against its memory's size; the helpers
//! still return [`SimError::Internal`] instead of panicking should a slice be out of range.

use crate::dtype::{Decoder, ElemType};
use crate::error::SimError;
use crate::isa::{BinOp, RedOp, UnOp};
use crate::numerics::{Rng, Rounding, erf};

use super::memory::Pattern;

fn oob() -> SimError {
    SimError::Internal("memory region out of range after bounds check".into())
}

fn idx(v: u64) -> Result<usize, SimError> {
    usize::try_from(v).map_err(|_| oob())
}

/// A slice of `len` bytes at `off`.
pub(crate) fn bytes(mem: &[u8], off: u64, len: u64) -> Result<&[u8], SimError> {
    let s = idx(off)?;
    let e = s.checked_add(idx(len)?).ok_or_else(oob)?;
    mem.get(s..e).ok_or_else(oob)
}

/// A mutable slice of `len` bytes at `off`.
pub(crate) fn bytes_mut(mem: &mut [u8], off: u64, len: u64) -> Result<&mut [u8], SimError> {
    let s = idx(off)?;
    let e = s.checked_add(idx(len)?).ok_or_else(oob)?;
    mem.get_mut(s..e).ok_or_else(oob)
}

/// Row offsets of two patterns with the same row structure, in order.
fn row_pairs(
    src: &Pattern,
    dst: &Pattern,
    mut f: impl FnMut(u64, u64) -> Result<(), SimError>,
) -> Result<(), SimError> {
    for i2 in 0..src.n2 {
        for i1 in 0..src.n1 {
            f(
                src.base + i2 * src.s2 + i1 * src.s1,
                dst.base + i2 * dst.s2 + i1 * dst.s1,
            )?;
        }
    }
    Ok(())
}

/// Copies the rows of `src` (in `from`) to the rows of `dst` (in `to`).
pub(crate) fn copy_rows(
    from: &[u8],
    to: &mut [u8],
    src: &Pattern,
    dst: &Pattern,
) -> Result<(), SimError> {
    row_pairs(src, dst, |s, d| {
        bytes_mut(to, d, dst.len)?.copy_from_slice(bytes(from, s, src.len)?);
        Ok(())
    })
}

/// Copies rows within one memory (rows may overlap: each row is a memmove, rows in order).
pub(crate) fn copy_rows_within(
    mem: &mut [u8],
    src: &Pattern,
    dst: &Pattern,
) -> Result<(), SimError> {
    row_pairs(src, dst, |s, d| {
        let s0 = idx(s)?;
        let s1 = s0.checked_add(idx(src.len)?).ok_or_else(oob)?;
        let d0 = idx(d)?;
        if s1 > mem.len() || d0.checked_add(s1 - s0).is_none_or(|e| e > mem.len()) {
            return Err(oob());
        }
        mem.copy_within(s0..s1, d0);
        Ok(())
    })
}

/// A `rows × cols` tile of `t` elements at `base` with row pitch `pitch` (bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tile {
    pub base: u64,
    pub rows: u64,
    pub cols: u64,
    pub pitch: u64,
    pub t: ElemType,
}

impl Tile {
    /// A tile whose pitch 0 means packed rows.
    pub fn new(base: u32, rows: u64, cols: u64, pitch: u32, t: ElemType) -> Tile {
        let row = cols * t.size();
        Tile {
            base: u64::from(base),
            rows,
            cols,
            pitch: if pitch == 0 { row } else { u64::from(pitch) },
            t,
        }
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        self.cols * self.t.size()
    }

    /// The bytes the tile covers.
    pub fn pattern(&self) -> Pattern {
        Pattern::rows(self.base, self.row_bytes(), self.rows, self.pitch)
    }

    fn row_off(&self, r: u64) -> u64 {
        self.base + r * self.pitch
    }
}

/// Where a vector op's rounded results go: the output type and the rounding.
pub(crate) struct Out<'a> {
    pub t: ElemType,
    /// `Some` for stochastic rounding into a narrow type.
    pub rng: Option<&'a mut Rng>,
    buf: Vec<u8>,
}

impl<'a> Out<'a> {
    pub fn new(t: ElemType, sr: bool, rng: &'a mut Rng) -> Out<'a> {
        Out {
            t,
            rng: if sr && t.is_narrow() { Some(rng) } else { None },
            buf: Vec::new(),
        }
    }

    /// Rounds `vals` and stores them at `off`.
    fn store(&mut self, mem: &mut [u8], off: u64, vals: &[f32]) -> Result<(), SimError> {
        self.buf.clear();
        for &v in vals {
            let r = match self.rng.as_deref_mut() {
                Some(g) => Rounding::Stochastic(g.next_u32()),
                None => Rounding::NearestEven,
            };
            self.t.encode_into(v, r, &mut self.buf);
        }
        bytes_mut(mem, off, self.buf.len() as u64)?.copy_from_slice(&self.buf);
        Ok(())
    }
}

fn load(
    mem: &[u8],
    dec: &Decoder,
    tile: &Tile,
    r: u64,
    out: &mut Vec<f32>,
) -> Result<(), SimError> {
    dec.decode(bytes(mem, tile.row_off(r), tile.row_bytes())?, out);
    Ok(())
}

/// `max` with NaN propagation and `max(-0, +0) = +0`.
pub(crate) fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a > b {
        a
    } else if b > a {
        b
    } else if a.is_sign_positive() {
        a
    } else {
        b
    }
}

/// `min` with NaN propagation and `min(-0, +0) = -0`.
pub(crate) fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        f32::NAN
    } else if a < b {
        a
    } else if b < a {
        b
    } else if a.is_sign_negative() {
        a
    } else {
        b
    }
}

fn flag(c: bool) -> f32 {
    if c { 1.0 } else { 0.0 }
}

/// One binary op in f32.
pub(crate) fn binary(op: BinOp, a: f32, b: f32) -> f32 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Max => fmax(a, b),
        BinOp::Min => fmin(a, b),
        BinOp::CmpEq => flag(a == b),
        BinOp::CmpNe => flag(a != b),
        BinOp::CmpLt => flag(a < b),
        BinOp::CmpLe => flag(a <= b),
        BinOp::CmpGt => flag(a > b),
        BinOp::CmpGe => flag(a >= b),
    }
}

/// One unary op: exact ones in f32, transcendental ones in f64 rounded once to f32.
pub(crate) fn unary(op: UnOp, a: f32) -> f32 {
    let d = f64::from(a);
    match op {
        UnOp::Cvt => a,
        UnOp::Neg => -a,
        UnOp::Abs => a.abs(),
        UnOp::Exp => d.exp() as f32,
        UnOp::Log => d.ln() as f32,
        UnOp::Sqrt => a.sqrt(),
        UnOp::Rsqrt => (1.0 / d.sqrt()) as f32,
        UnOp::Recip => 1.0 / a,
        UnOp::Tanh => d.tanh() as f32,
        UnOp::Erf => erf(d) as f32,
    }
}

/// The second operand of a binary op.
pub(crate) enum Src2 {
    Tile(Tile),
    Row(Tile),
    Col(Tile),
    Imm(f32),
}

/// `dst = a op b` elementwise.
pub(crate) fn vbinary(
    mem: &mut [u8],
    op: BinOp,
    dst: &Tile,
    a: &Tile,
    b: &Src2,
    out: &mut Out,
) -> Result<(), SimError> {
    let da = a.t.decoder();
    let db = a.t.decoder();
    let (mut va, mut vb, mut res) = (Vec::new(), Vec::new(), Vec::new());
    if let Src2::Row(t) = b {
        load(mem, &db, t, 0, &mut vb)?;
    }
    for r in 0..dst.rows {
        load(mem, &da, a, r, &mut va)?;
        res.clear();
        match b {
            Src2::Tile(t) => {
                load(mem, &db, t, r, &mut vb)?;
                res.extend(va.iter().zip(&vb).map(|(&x, &y)| binary(op, x, y)));
            }
            Src2::Row(_) => res.extend(va.iter().zip(&vb).map(|(&x, &y)| binary(op, x, y))),
            Src2::Col(t) => {
                load(mem, &db, t, r, &mut vb)?;
                let y = vb.first().copied().unwrap_or(0.0);
                res.extend(va.iter().map(|&x| binary(op, x, y)));
            }
            Src2::Imm(y) => res.extend(va.iter().map(|&x| binary(op, x, *y))),
        }
        out.store(mem, dst.row_off(r), &res)?;
    }
    Ok(())
}

/// `dst = op(src)` elementwise.
pub(crate) fn vunary(
    mem: &mut [u8],
    op: UnOp,
    dst: &Tile,
    src: &Tile,
    out: &mut Out,
) -> Result<(), SimError> {
    let dec = src.t.decoder();
    let (mut v, mut res) = (Vec::new(), Vec::new());
    for r in 0..dst.rows {
        load(mem, &dec, src, r, &mut v)?;
        res.clear();
        res.extend(v.iter().map(|&x| unary(op, x)));
        out.store(mem, dst.row_off(r), &res)?;
    }
    Ok(())
}

/// `dst = cond != 0 ? a : b` elementwise.
pub(crate) fn vselect(
    mem: &mut [u8],
    dst: &Tile,
    cond: &Tile,
    a: &Tile,
    b: &Tile,
    out: &mut Out,
) -> Result<(), SimError> {
    let dec = a.t.decoder();
    let (mut vc, mut va, mut vb, mut res) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..dst.rows {
        load(mem, &dec, cond, r, &mut vc)?;
        load(mem, &dec, a, r, &mut va)?;
        load(mem, &dec, b, r, &mut vb)?;
        res.clear();
        res.extend(
            vc.iter()
                .zip(va.iter().zip(&vb))
                .map(|(&c, (&x, &y))| if c != 0.0 { x } else { y }),
        );
        out.store(mem, dst.row_off(r), &res)?;
    }
    Ok(())
}

/// Reduces `src` along `axis` (1: each row; 0: each column) in f32, in index order; the
/// results are stored packed at `dst`.
pub(crate) fn vreduce(
    mem: &mut [u8],
    op: RedOp,
    dst: u64,
    src: &Tile,
    axis: u8,
    out: &mut Out,
) -> Result<(), SimError> {
    let dec = src.t.decoder();
    let f = |acc: f32, x: f32| match op {
        RedOp::Sum => acc + x,
        RedOp::Max => fmax(acc, x),
        RedOp::Min => fmin(acc, x),
    };
    let mut v = Vec::new();
    let mut res: Vec<f32> = Vec::new();
    if axis == 1 {
        for r in 0..src.rows {
            load(mem, &dec, src, r, &mut v)?;
            let mut it = v.iter().copied();
            let first = it.next().unwrap_or(0.0);
            res.push(it.fold(first, f));
        }
    } else {
        for r in 0..src.rows {
            load(mem, &dec, src, r, &mut v)?;
            if r == 0 {
                res.extend_from_slice(&v);
            } else {
                for (acc, &x) in res.iter_mut().zip(&v) {
                    *acc = f(*acc, x);
                }
            }
        }
    }
    out.store(mem, dst, &res)
}

/// Transposes `src` (rows × cols) into `dst` (cols × rows), bytes as they are.
pub(crate) fn vtranspose(mem: &mut [u8], dst: &Tile, src: &Tile) -> Result<(), SimError> {
    let es = src.t.size();
    let n = src.rows * src.cols * es;
    let mut tmp = Vec::new();
    tmp.try_reserve_exact(idx(n)?)
        .map_err(|_| SimError::Alloc {
            what: "transpose buffer".into(),
            bytes: n,
        })?;
    for r in 0..src.rows {
        tmp.extend_from_slice(bytes(mem, src.row_off(r), src.row_bytes())?);
    }
    for c in 0..src.cols {
        let row = bytes_mut(mem, dst.row_off(c), dst.row_bytes())?;
        for r in 0..src.rows {
            let from = idx((r * src.cols + c) * es)?;
            let to = idx(r * es)?;
            let e = idx(es)?;
            let s = tmp.get(from..from + e).ok_or_else(oob)?;
            row.get_mut(to..to + e).ok_or_else(oob)?.copy_from_slice(s);
        }
    }
    Ok(())
}

fn alloc_f32(n: u64, what: &str) -> Result<Vec<f32>, SimError> {
    let mut v = Vec::new();
    v.try_reserve_exact(idx(n)?).map_err(|_| SimError::Alloc {
        what: what.into(),
        bytes: n.saturating_mul(4),
    })?;
    Ok(v)
}

/// `C (+)= A · B` with f32 accumulation: every element sums its products in `k` order,
/// `acc = acc + a*b` in f32 (products of bf16/CFP8 values are exact in f32).
pub(crate) fn matmul(
    mem: &mut [u8],
    c: &Tile,
    a: &Tile,
    b: &Tile,
    k: u64,
    acc: bool,
) -> Result<(), SimError> {
    let (m, n) = (c.rows, c.cols);
    let mut av = alloc_f32(m * k, "matmul A")?;
    let mut bv = alloc_f32(k * n, "matmul B")?;
    let mut row = Vec::new();
    let da = a.t.decoder();
    for r in 0..m {
        load(mem, &da, a, r, &mut row)?;
        av.extend_from_slice(&row);
    }
    let db = b.t.decoder();
    for r in 0..k {
        load(mem, &db, b, r, &mut row)?;
        bv.extend_from_slice(&row);
    }
    let (nu, ku) = (idx(n)?, idx(k)?);
    let mut crow = vec![0.0f32; nu];
    let dc = Decoder::F32;
    for i in 0..idx(m)? {
        if acc {
            load(mem, &dc, c, i as u64, &mut row)?;
            crow.copy_from_slice(row.get(..nu).ok_or_else(oob)?);
        } else {
            crow.iter_mut().for_each(|x| *x = 0.0);
        }
        let arow = av.get(i * ku..(i + 1) * ku).ok_or_else(oob)?;
        for (kk, &aik) in arow.iter().enumerate() {
            let brow = bv.get(kk * nu..(kk + 1) * nu).ok_or_else(oob)?;
            for (cj, &bkj) in crow.iter_mut().zip(brow) {
                *cj += aik * bkj;
            }
        }
        let out = bytes_mut(mem, c.row_off(i as u64), n * 4)?;
        for (chunk, v) in out.chunks_exact_mut(4).zip(&crow) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }
    Ok(())
}
