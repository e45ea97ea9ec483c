//! Loop-nest kernels on the DMA and vector engines: elementwise, movement and reduction
//! kernels whose loads and stores are affine in the loop variables.
//!
//! # The form
//!
//! A [`LoopNest`](terafab_ir::kernel::LoopNest) whose stages are either all stores at the
//! outer point (*elementwise mode*: the last two outer variables are a tile's rows and
//! columns, the other outer variables are fixed per tile), or reductions and stores with their own loop variables (*reduction
//! mode*: the last outer variable is a tile's rows, one row per outer point, and the last
//! variable of each stage its columns; the stage's other variables are enumerated, one
//! *step* per value and column chunk). Every load and store index must be affine in the
//! variables with non-negative coefficients along the tile's rows and columns (`/` and `%`
//! only of variables that are fixed per step: where an index divides a tile variable, the
//! kernel is retried with one-column, then one-element tiles). A load with a fill value
//! (padding, f32) fills its slot with the value on the vector engine, then loads the tile's
//! in-bounds box over it; each of its indices must run along at most one tile axis.
//!
//! # Numerics
//!
//! Values are computed in f32 on the vector engine; the interpreter computes f32 ops in f64
//! and rounds once, which for `+ - * /`, `sqrt` and the f64-evaluated transcendental ops
//! (`exp log rsqrt tanh erf`, computed by the simulator in f64 too) is the same f32 result.
//! `max`/`min` propagate NaN in both and order `-0 < +0` in both. Compares give 1.0/0.0 in
//! SRAM, which `vsel` reads as its condition (`!= 0`). Conversions between f32, bf16 and
//! CFP8 round once from the exact value in both (CFP8: NaN to +0, saturating). Not lowered,
//! because one f32 instruction does not give the interpreter's once-rounded f64 result or
//! the op has no instruction: arithmetic on bf16/CFP8 values (the interpreter rounds the f64
//! result once into the narrow type, the engine rounds to f32 first), `sign`, `logistic`,
//! trigonometric and hyperbolic ops but `tanh`, `floor`/`ceil`/`round`, `is_nan`/`is_inf`,
//! `not`, `rem`, `pow`, bitwise ops, integer/bool/f64/f16 buffers, index arithmetic
//! ([`Expr::Index`]) and `prod` reductions. Float sums fold in f32 in chunk order (the
//! interpreter accumulates in f64): they agree within f32 accumulation error.
//!
//! # Schedule
//!
//! Tiles are split into contiguous blocks over the mesh's nodes (nodes with none get no
//! stream). On a node, the steps of its tiles run in order through two sets of SRAM slots
//! (step `j` uses set `j % 2`): the DMA queue loads step `j` after step `j - 2` released its
//! set (its stores completed, or its vector work when it stores nothing), the vector engine
//! waits for the loads, computes and signals, the stores wait for that signal. Reduction
//! results (locals) live in their own region, touched only by the in-order vector queue.

use terafab_ir::kernel::{Body, BufferId, Expr, Index, Kernel, KernelProgram, Local, Stage, Var};
use terafab_ir::{CompareOp, DType, ReduceKind, UnaryOp};

use super::{Lowered, NotLowered, elem_type, hbm_name};
use crate::config::Config;
use crate::dtype::ElemType;
use crate::r#gen::builder::{MAX_12, MAX_24, MAX_40, Queues, dma_2d, field};
use crate::isa::{
    Bcast, BinOp, Dma, DmaKind, Engine, Op, RedOp, UnOp, VBinary, VReduce, VSelect, VUnary,
};
use crate::program::{Buffer, Program, Role};

/// The most instructions a lowered kernel may have (all nodes together).
const MAX_INSTRUCTIONS: u64 = 1 << 21;

/// Why an index is not affine along a tile (the lowering then retries with one-column, then
/// one-element tiles, where the variables are fixed per step).
const NONAFFINE: &str = "an index divides (/ or %) a variable that runs along a vector tile";

/// Why a load with a fill value is not a box of the tile (retried like [`NONAFFINE`]).
const BOTH_AXES: &str = "a load with a fill value whose index runs along both tile axes";

/// Semaphores: per slot set `s`, loads done, vector work done, stores done.
const LOADED: [u8; 2] = [0, 1];
const COMPUTED: [u8; 2] = [2, 3];
const STORED: [u8; 2] = [4, 5];
/// Loads done of a step without vector work (its stores wait for them on the DMA queue).
const DLOADED: [u8; 2] = [6, 7];
/// Set `s` released for the vector engine's fill tiles, and those tiles written.
const FREE: [u8; 2] = [8, 9];
const PREFILLED: [u8; 2] = [10, 11];

fn no(msg: impl Into<String>) -> NotLowered {
    NotLowered(msg.into())
}

fn gen_err(e: crate::r#gen::GenError) -> NotLowered {
    no(format!("vector lowering: {e}"))
}

fn ovf() -> NotLowered {
    no("vector lowering: an address computation overflows")
}

/// An affine function of a tile's row `r` and column `c`: `k + r·r + c·c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Aff {
    k: i64,
    r: i64,
    c: i64,
}

impl Aff {
    fn konst(k: i64) -> Aff {
        Aff { k, r: 0, c: 0 }
    }

    fn add(self, o: Aff) -> Option<Aff> {
        Some(Aff {
            k: self.k.checked_add(o.k)?,
            r: self.r.checked_add(o.r)?,
            c: self.c.checked_add(o.c)?,
        })
    }

    fn scale(self, m: i64) -> Option<Aff> {
        Some(Aff {
            k: self.k.checked_mul(m)?,
            r: self.r.checked_mul(m)?,
            c: self.c.checked_mul(m)?,
        })
    }

    fn is_const(self) -> bool {
        self.r == 0 && self.c == 0
    }
}

/// The loop variables of one step as functions of the tile's row and column.
#[derive(Debug, Clone)]
struct Ctx {
    vars: Vec<(Var, Aff)>,
    rows: u64,
    cols: u64,
}

impl Ctx {
    fn index(&self, i: &Index) -> Result<Aff, NotLowered> {
        Ok(match i {
            Index::Var(v) => self
                .vars
                .iter()
                .find(|(w, _)| w == v)
                .map(|(_, a)| *a)
                .ok_or_else(|| no(format!("variable #{} is not in scope", v.0)))?,
            Index::Const(c) => Aff::konst(*c),
            Index::Add(a, b) => self.index(a)?.add(self.index(b)?).ok_or_else(ovf)?,
            Index::Mul(a, m) => self.index(a)?.scale(*m).ok_or_else(ovf)?,
            Index::Div(a, d) | Index::Rem(a, d) => {
                let x = self.index(a)?;
                if !x.is_const() || *d <= 0 {
                    return Err(no(NONAFFINE));
                }
                Aff::konst(if matches!(i, Index::Div(..)) {
                    x.k.div_euclid(*d)
                } else {
                    x.k.rem_euclid(*d)
                })
            }
        })
    }
}

/// Where a kernel-IR buffer lives in HBM.
#[derive(Debug, Clone, Copy)]
struct Hbm {
    addr: u64,
    t: ElemType,
    span: u64,
}

/// A value in SRAM or an immediate. Tiles are `rows × cols`, columns `rows × 1`, packed.
#[derive(Debug, Clone, Copy)]
enum V {
    Tile(u32, ElemType),
    Col(u32, ElemType),
    Imm(f32),
}

/// The instructions of one step.
#[derive(Debug, Default)]
struct Step {
    /// Vector work before the loads: tiles of fill values under loads with a fill.
    prefill: Vec<Op>,
    loads: Vec<Dma>,
    vx: Vec<Op>,
    stores: Vec<Dma>,
}

/// Code generation of one step.
struct StepGen<'a> {
    p: &'a KernelProgram,
    hbm: &'a [Option<Hbm>],
    ctx: &'a Ctx,
    locals: &'a [(Local, u32, DType)],
    base: u64,
    slot_bytes: u64,
    slots: usize,
    max_slots: usize,
    zero_tile: Option<u32>,
    zero_col: Option<u32>,
    step: Step,
}

/// The vector ops that fill the f32 `rows × cols` tile at `slot` with `-0.0` (the exact
/// identity of addition), plus `add` when given, whatever the slot held:
/// `(x == x) · -0 (+ add)` (compares give 1.0 or 0.0, never NaN).
fn splat(slot: u32, rows: u16, cols: u16, add: Option<f32>) -> Vec<Op> {
    let base = VBinary {
        op: BinOp::CmpEq,
        dst: slot,
        src1: slot,
        src2: slot,
        rows,
        cols,
        dpitch: 0,
        pitch1: 0,
        pitch2: 0,
        itype: ElemType::F32,
        otype: ElemType::F32,
        bcast: Bcast::Tile,
        imm: 0,
        sr: false,
    };
    let imm = |op, x: f32| {
        Op::VBinary(VBinary {
            op,
            bcast: Bcast::Imm,
            src2: 0,
            imm: x.to_bits(),
            ..base
        })
    };
    let mut ops = vec![Op::VBinary(base), imm(BinOp::Mul, -0.0)];
    ops.extend(add.map(|x| imm(BinOp::Add, x)));
    ops
}

fn rows_cols(rows: u64, cols: u64) -> Result<(u16, u16), NotLowered> {
    Ok((
        field("vector rows", rows, MAX_12).map_err(gen_err)?,
        field("vector cols", cols, MAX_12).map_err(gen_err)?,
    ))
}

impl StepGen<'_> {
    fn slot(&mut self) -> Result<u32, NotLowered> {
        if self.slots >= self.max_slots {
            return Err(no(
                "vector lowering: a step needs more SRAM slots than planned",
            ));
        }
        let at = (self.slots as u64)
            .checked_mul(self.slot_bytes)
            .and_then(|o| o.checked_add(self.base))
            .ok_or_else(ovf)?;
        self.slots += 1;
        field("SRAM slot", at, MAX_24).map_err(gen_err)
    }

    fn shape(&self, col: bool) -> (u64, u64) {
        (self.ctx.rows, if col { 1 } else { self.ctx.cols })
    }

    fn vbin(&mut self, op: BinOp, a: u32, b: V, col: bool) -> Result<u32, NotLowered> {
        let (rows, cols) = self.shape(col);
        let (rows, cols) = rows_cols(rows, cols)?;
        let dst = self.slot()?;
        let (src2, bcast, imm) = match b {
            V::Tile(x, _) => (x, if col { Bcast::Col } else { Bcast::Tile }, 0),
            V::Col(x, _) => (x, Bcast::Col, 0),
            V::Imm(v) => (0, Bcast::Imm, v.to_bits()),
        };
        self.step.vx.push(Op::VBinary(VBinary {
            op,
            dst,
            src1: a,
            src2,
            rows,
            cols,
            dpitch: 0,
            pitch1: 0,
            pitch2: 0,
            itype: ElemType::F32,
            otype: ElemType::F32,
            bcast,
            imm,
            sr: false,
        }));
        Ok(dst)
    }

    fn vun(
        &mut self,
        op: UnOp,
        src: u32,
        col: bool,
        itype: ElemType,
        otype: ElemType,
    ) -> Result<u32, NotLowered> {
        let (rows, cols) = self.shape(col);
        let (rows, cols) = rows_cols(rows, cols)?;
        let dst = self.slot()?;
        self.step.vx.push(Op::VUnary(VUnary {
            op,
            dst,
            src,
            rows,
            cols,
            dpitch: 0,
            spitch: 0,
            itype,
            otype,
            sr: false,
        }));
        Ok(dst)
    }

    /// A tile (or column) of `-0.0`, the exact identity of addition: `(x == x) · -0` of
    /// whatever the slot holds (compares give 1.0 or 0.0, never NaN).
    fn zero(&mut self, col: bool) -> Result<u32, NotLowered> {
        if let Some(z) = if col { self.zero_col } else { self.zero_tile } {
            return Ok(z);
        }
        let z = self.slot()?;
        let (rows, cols) = rows_cols(self.shape(col).0, self.shape(col).1)?;
        self.step.vx.extend(splat(z, rows, cols, None));
        if col {
            self.zero_col = Some(z);
        } else {
            self.zero_tile = Some(z);
        }
        Ok(z)
    }

    /// `v` as an f32 tile (`col = false`) or column in SRAM.
    fn materialize(&mut self, v: V, col: bool) -> Result<u32, NotLowered> {
        match v {
            V::Tile(x, ElemType::F32) => Ok(x),
            V::Col(x, ElemType::F32) if col => Ok(x),
            V::Col(_, ElemType::F32) | V::Imm(_) if !matches!(v, V::Tile(..)) => {
                let z = self.zero(col)?;
                self.vbin(BinOp::Add, z, v, col)
            }
            _ => Err(no(
                "vector lowering: a narrow-typed value used as f32 (internal)",
            )),
        }
    }

    fn is_col(v: V) -> bool {
        !matches!(v, V::Tile(..))
    }

    fn dtype(&self, e: &Expr) -> Result<DType, NotLowered> {
        Ok(match e {
            Expr::Load { buffer, .. } => self.p.buffer(*buffer).dtype,
            Expr::Const(t) => t.dtype(),
            Expr::Local(l) => self
                .locals
                .iter()
                .find(|(m, ..)| m == l)
                .map(|(_, _, d)| *d)
                .ok_or_else(|| no(format!("local t{} is not defined", l.0)))?,
            Expr::Index(_, d) | Expr::Convert(d, _) => *d,
            Expr::Unary(_, a) | Expr::Binary(_, a, _) | Expr::Select(_, a, _) => self.dtype(a)?,
            Expr::Compare(..) => DType::Bool,
        })
    }

    fn need_f32(&self, e: &Expr, what: &str) -> Result<(), NotLowered> {
        let d = self.dtype(e)?;
        if d != DType::F32 {
            return Err(no(format!(
                "{what} on {d} values: the vector engine computes f32 (narrow results would be \
                 rounded twice, other types are not supported)"
            )));
        }
        Ok(())
    }

    /// The HBM address pattern of `buf[index]` over the tile: base element offset and the
    /// element strides along rows and columns, checked to stay inside the buffer.
    fn pattern(&self, b: BufferId, index: &[Index]) -> Result<(Hbm, Aff), NotLowered> {
        let buf = self.p.buffer(b);
        let h = self
            .hbm
            .get(b.index())
            .copied()
            .flatten()
            .ok_or_else(|| no(format!("buffer %{} is not in the program", buf.name)))?;
        if index.len() != buf.strides.len() {
            return Err(no(format!("rank mismatch indexing %{}", buf.name)));
        }
        let mut off = Aff::konst(0);
        for (i, &s) in index.iter().zip(&buf.strides) {
            let s = i64::try_from(s).map_err(|_| ovf())?;
            off = off
                .add(self.ctx.index(i)?.scale(s).ok_or_else(ovf)?)
                .ok_or_else(ovf)?;
        }
        if off.k < 0 || off.r < 0 || off.c < 0 {
            return Err(no(format!(
                "access to %{} with a negative stride along a tile (reversal) or before its \
                 start",
                buf.name
            )));
        }
        let last = |n: u64, s: i64| (n as i64).checked_sub(1).and_then(|m| m.checked_mul(s));
        let end = last(self.ctx.rows, off.r)
            .and_then(|a| last(self.ctx.cols, off.c).and_then(|b| a.checked_add(b)))
            .and_then(|x| x.checked_add(off.k))
            .ok_or_else(ovf)?;
        if end as u64 >= h.span {
            return Err(no(format!("access to %{} out of its bounds", buf.name)));
        }
        Ok((h, off))
    }

    /// DMA descriptors between HBM (`off` elements of `h`) and a packed SRAM tile at `sram`
    /// of `rows × cols` elements.
    fn dma(
        &self,
        kind: DmaKind,
        h: Hbm,
        off: Aff,
        sram: u32,
        rows: u64,
        cols: u64,
    ) -> Result<Vec<Dma>, NotLowered> {
        let pitch = cols.checked_mul(h.t.size()).ok_or_else(ovf)?;
        self.dma_pitched(kind, h, off, u64::from(sram), rows, cols, pitch)
    }

    /// [`Self::dma`] with an SRAM row pitch of `pitch` bytes.
    #[allow(clippy::too_many_arguments)]
    fn dma_pitched(
        &self,
        kind: DmaKind,
        h: Hbm,
        off: Aff,
        sram: u64,
        rows: u64,
        cols: u64,
        pitch: u64,
    ) -> Result<Vec<Dma>, NotLowered> {
        let es = h.t.size();
        let el = |x: i64| (x as u64).checked_mul(es).ok_or_else(ovf);
        let hbm = h.addr.checked_add(el(off.k)?).ok_or_else(ovf)?;
        let (rs, cs) = (el(off.r)?, el(off.c)?);
        let (src, dst) = if kind == DmaKind::Load {
            (hbm, sram)
        } else {
            (sram, hbm)
        };
        let swap = |a: u64, b: u64| {
            if kind == DmaKind::Load {
                (a, b)
            } else {
                (b, a)
            }
        };
        if cols == 1 || off.c == 1 {
            // Contiguous rows of the tile.
            let len = cols.checked_mul(es).ok_or_else(ovf)?;
            let (ss, ds) = swap(rs, pitch);
            return dma_2d(kind, dst, src, len, rows, ss, ds).map_err(gen_err);
        }
        // One element per DMA row: `cols` elements by `rows` rows.
        let len: u32 = field("DMA row length", es, MAX_24).map_err(gen_err)?;
        let (ss1, ds1) = swap(cs, es);
        let (ss2, ds2) = swap(rs, pitch);
        if ss1 > MAX_24 || ds1 > MAX_24 {
            return Err(no("a DMA stride along a tile's columns is too large"));
        }
        let n1 = field("DMA rows", cols, MAX_12).map_err(gen_err)?;
        let fits2 = ss2 <= MAX_24 && ds2 <= MAX_24;
        let blocks: Vec<(u64, u64, u64)> = if fits2 {
            vec![(src, dst, rows)]
        } else {
            (0..rows)
                .map(|i| {
                    Ok((
                        src.checked_add(i.checked_mul(ss2).ok_or_else(ovf)?)
                            .ok_or_else(ovf)?,
                        dst.checked_add(i.checked_mul(ds2).ok_or_else(ovf)?)
                            .ok_or_else(ovf)?,
                        1,
                    ))
                })
                .collect::<Result<_, NotLowered>>()?
        };
        blocks
            .into_iter()
            .map(|(s, d, n)| {
                if s > MAX_40 || d > MAX_40 {
                    return Err(ovf());
                }
                Ok(Dma {
                    kind,
                    dst: d,
                    src: s,
                    len,
                    n1,
                    n2: field("DMA blocks", n, MAX_12).map_err(gen_err)?,
                    src_stride1: field("DMA stride", ss1, MAX_24).map_err(gen_err)?,
                    dst_stride1: field("DMA stride", ds1, MAX_24).map_err(gen_err)?,
                    src_stride2: if n > 1 {
                        field("DMA stride", ss2, MAX_24).map_err(gen_err)?
                    } else {
                        0
                    },
                    dst_stride2: if n > 1 {
                        field("DMA stride", ds2, MAX_24).map_err(gen_err)?
                    } else {
                        0
                    },
                })
            })
            .collect()
    }

    /// Code for `e` over the step's tile.
    fn expr(&mut self, e: &Expr) -> Result<V, NotLowered> {
        match e {
            Expr::Load {
                buffer,
                index,
                fill,
            } => {
                if let Some(f) = fill {
                    return self.fill_load(*buffer, index, f);
                }
                let (h, off) = self.pattern(*buffer, index)?;
                let slot = self.slot()?;
                let (rows, cols) = (self.ctx.rows, self.ctx.cols);
                let d = self.dma(DmaKind::Load, h, off, slot, rows, cols)?;
                self.step.loads.extend(d);
                Ok(V::Tile(slot, h.t))
            }
            Expr::Const(t) => {
                if t.len() != 1 {
                    return Err(no("a constant that is not a scalar"));
                }
                let v = match t.dtype() {
                    DType::Bool => match t.as_slice::<bool>() {
                        Some([b]) => f32::from(u8::from(*b)),
                        _ => return Err(no("malformed bool constant")),
                    },
                    d if elem_type(d).is_some() => match t.to_f64_vec().as_slice() {
                        // Exact: every f32, bf16 and CFP8 value is an f32.
                        [x] => *x as f32,
                        _ => return Err(no("malformed constant")),
                    },
                    d => {
                        return Err(no(format!(
                            "a {d} constant (not computed by the vector engine)"
                        )));
                    }
                };
                Ok(V::Imm(v))
            }
            Expr::Local(l) => {
                let (_, addr, d) = self
                    .locals
                    .iter()
                    .find(|(m, ..)| m == l)
                    .copied()
                    .ok_or_else(|| no(format!("local t{} is not defined", l.0)))?;
                if d != DType::F32 {
                    return Err(no(format!("a {d} local")));
                }
                Ok(V::Col(addr, ElemType::F32))
            }
            Expr::Index(..) => Err(no(
                "index arithmetic (an index used as a value) is not lowered to the vector engine",
            )),
            Expr::Unary(op, a) => {
                self.need_f32(a, &format!("{op:?}"))?;
                let u = match op {
                    UnaryOp::Neg => UnOp::Neg,
                    UnaryOp::Abs => UnOp::Abs,
                    UnaryOp::Exp => UnOp::Exp,
                    UnaryOp::Log => UnOp::Log,
                    UnaryOp::Sqrt => UnOp::Sqrt,
                    UnaryOp::Rsqrt => UnOp::Rsqrt,
                    UnaryOp::Tanh => UnOp::Tanh,
                    UnaryOp::Erf => UnOp::Erf,
                    other => {
                        return Err(no(format!(
                            "unary op {other:?}: the vector engine has no instruction with the \
                             interpreter's once-rounded result"
                        )));
                    }
                };
                let v = self.expr(a)?;
                let col = Self::is_col(v);
                let x = self.materialize(v, col)?;
                let out = self.vun(u, x, col, ElemType::F32, ElemType::F32)?;
                Ok(if col {
                    V::Col(out, ElemType::F32)
                } else {
                    V::Tile(out, ElemType::F32)
                })
            }
            Expr::Binary(op, a, b) => {
                self.need_f32(a, &format!("{op:?}"))?;
                let bop = super::vector_binop(*op)
                    .ok_or_else(|| no(format!("binary op {op:?} has no vector instruction")))?;
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                self.binary(bop, x, y)
            }
            Expr::Compare(op, a, b) => {
                self.need_f32(a, &format!("compare {op:?}"))?;
                let cop = match op {
                    CompareOp::Eq => BinOp::CmpEq,
                    CompareOp::Ne => BinOp::CmpNe,
                    CompareOp::Lt => BinOp::CmpLt,
                    CompareOp::Le => BinOp::CmpLe,
                    CompareOp::Gt => BinOp::CmpGt,
                    CompareOp::Ge => BinOp::CmpGe,
                };
                let (x, y) = (self.expr(a)?, self.expr(b)?);
                self.binary(cop, x, y)
            }
            Expr::Select(c, a, b) => {
                self.need_f32(a, "select")?;
                if self.dtype(c)? != DType::Bool {
                    return Err(no("select with a non-bool condition"));
                }
                let (vc, va, vb) = (self.expr(c)?, self.expr(a)?, self.expr(b)?);
                let col = Self::is_col(vc) && Self::is_col(va) && Self::is_col(vb);
                let (mc, ma, mb) = (
                    self.materialize(vc, col)?,
                    self.materialize(va, col)?,
                    self.materialize(vb, col)?,
                );
                let (rows, cols) = rows_cols(self.shape(col).0, self.shape(col).1)?;
                let dst = self.slot()?;
                self.step.vx.push(Op::VSelect(VSelect {
                    dst,
                    cond: mc,
                    a: ma,
                    b: mb,
                    rows,
                    cols,
                    dpitch: 0,
                    spitch: 0,
                    itype: ElemType::F32,
                    otype: ElemType::F32,
                    sr: false,
                }));
                Ok(if col {
                    V::Col(dst, ElemType::F32)
                } else {
                    V::Tile(dst, ElemType::F32)
                })
            }
            Expr::Convert(to, a) => {
                let from = self.dtype(a)?;
                let v = self.expr(a)?;
                if from == *to || (from == DType::Bool && *to == DType::F32) {
                    // Bools are 1.0 / 0.0 in f32 already.
                    return Ok(v);
                }
                let (Some(_), Some(ot)) = (elem_type(from), elem_type(*to)) else {
                    return Err(no(format!(
                        "conversion {from} -> {to} is not lowered to the vector engine"
                    )));
                };
                let (src, it, col) = match v {
                    V::Tile(x, t) => (x, t, false),
                    V::Col(x, t) => (x, t, true),
                    V::Imm(_) => (self.materialize(v, true)?, ElemType::F32, true),
                };
                let out = self.vun(UnOp::Cvt, src, col, it, ot)?;
                Ok(if col {
                    V::Col(out, ot)
                } else {
                    V::Tile(out, ot)
                })
            }
        }
    }

    /// A load with a fill value: the slot is filled with the value by the vector engine
    /// (before the step's loads), then the in-bounds box of the tile is loaded over it. Each
    /// index must run along at most one of the tile's axes, so that the in-bounds part is a
    /// box.
    fn fill_load(
        &mut self,
        b: BufferId,
        index: &[Index],
        fill: &terafab_ir::Tensor,
    ) -> Result<V, NotLowered> {
        let buf = self.p.buffer(b);
        let h = self
            .hbm
            .get(b.index())
            .copied()
            .flatten()
            .ok_or_else(|| no(format!("buffer %{} is not in the program", buf.name)))?;
        if buf.dtype != DType::F32 || fill.dtype() != DType::F32 {
            return Err(no(format!(
                "a load with a fill value of a {} buffer (only f32 is lowered)",
                buf.dtype
            )));
        }
        let fv = match fill.as_slice::<f32>() {
            Some([v]) => *v,
            _ => return Err(no("a fill value that is not a scalar")),
        };
        if index.len() != buf.shape.len() {
            return Err(no(format!("rank mismatch indexing %{}", buf.name)));
        }
        let (rows, cols) = (self.ctx.rows as i64, self.ctx.cols as i64);
        // In-bounds ranges [lo, hi) of the row and the column.
        let (mut r_lo, mut r_hi, mut c_lo, mut c_hi) = (0i64, rows, 0i64, cols);
        let mut off = Aff::konst(0);
        for ((i, &dim), &stride) in index.iter().zip(&buf.shape).zip(&buf.strides) {
            let a = self.ctx.index(i)?;
            let dim = i64::try_from(dim).map_err(|_| ovf())?;
            let top =
                a.k.checked_add(1)
                    .and_then(|k1| dim.checked_sub(k1))
                    .ok_or_else(ovf)?;
            let (coef, lo, hi) = match (a.r, a.c) {
                (0, 0) => {
                    if a.k < 0 || a.k >= dim {
                        r_hi = 0;
                    }
                    (None, &mut r_lo, &mut r_hi)
                }
                (x, 0) => (Some(x), &mut r_lo, &mut r_hi),
                (0, x) => (Some(x), &mut c_lo, &mut c_hi),
                _ => {
                    return Err(no(BOTH_AXES));
                }
            };
            if let Some(x) = coef {
                if x < 0 {
                    return Err(no(
                        "a load with a fill value and a negative stride along a tile",
                    ));
                }
                // 0 <= k + x·t <= dim - 1.
                let first = if a.k >= 0 {
                    0
                } else {
                    a.k.checked_neg()
                        .and_then(|m| m.checked_add(x - 1))
                        .ok_or_else(ovf)?
                        .div_euclid(x)
                };
                let end = if top < 0 {
                    0
                } else {
                    top.div_euclid(x).checked_add(1).ok_or_else(ovf)?
                };
                *lo = (*lo).max(first);
                *hi = (*hi).min(end);
            }
            let s = i64::try_from(stride).map_err(|_| ovf())?;
            off = off.add(a.scale(s).ok_or_else(ovf)?).ok_or_else(ovf)?;
        }
        let slot = self.slot()?;
        // The fill: (x == x) · -0 + fill, on the slot itself.
        let (vr, vc) = rows_cols(self.ctx.rows, self.ctx.cols)?;
        self.step.prefill.extend(splat(slot, vr, vc, Some(fv)));
        if r_lo >= r_hi || c_lo >= c_hi {
            return Ok(V::Tile(slot, h.t));
        }
        let start = off
            .k
            .checked_add(off.r.checked_mul(r_lo).ok_or_else(ovf)?)
            .and_then(|x| x.checked_add(off.c.checked_mul(c_lo)?))
            .ok_or_else(ovf)?;
        let (nr, nc) = ((r_hi - r_lo) as u64, (c_hi - c_lo) as u64);
        if start < 0 || off.r < 0 || off.c < 0 {
            return Err(no(format!("access to %{} before its start", buf.name)));
        }
        let last = |n: u64, s: i64| (n as i64 - 1).checked_mul(s);
        let end = last(nr, off.r)
            .and_then(|a| a.checked_add(last(nc, off.c)?))
            .and_then(|x| x.checked_add(start))
            .ok_or_else(ovf)?;
        if end as u64 >= h.span {
            return Err(no(format!("access to %{} out of its bounds", buf.name)));
        }
        let pitch = (cols as u64) * 4;
        let sram = u64::from(slot) + (r_lo as u64) * pitch + (c_lo as u64) * 4;
        let d = self.dma_pitched(
            DmaKind::Load,
            h,
            Aff {
                k: start,
                r: off.r,
                c: off.c,
            },
            sram,
            nr,
            nc,
            pitch,
        )?;
        self.step.loads.extend(d);
        Ok(V::Tile(slot, h.t))
    }

    /// `x op y` (also compares) in f32.
    fn binary(&mut self, op: BinOp, x: V, y: V) -> Result<V, NotLowered> {
        let commutes = matches!(
            op,
            BinOp::Add | BinOp::Mul | BinOp::Max | BinOp::Min | BinOp::CmpEq | BinOp::CmpNe
        );
        let flipped = match op {
            BinOp::CmpLt => Some(BinOp::CmpGt),
            BinOp::CmpGt => Some(BinOp::CmpLt),
            BinOp::CmpLe => Some(BinOp::CmpGe),
            BinOp::CmpGe => Some(BinOp::CmpLe),
            _ if commutes => Some(op),
            _ => None,
        };
        let tile = |d| V::Tile(d, ElemType::F32);
        let colv = |d| V::Col(d, ElemType::F32);
        match (x, y) {
            (V::Tile(a, _), _) => {
                let a = self.materialize(V::Tile(a, ElemType::F32), false)?;
                let y = match y {
                    V::Tile(..) => V::Tile(self.materialize(y, false)?, ElemType::F32),
                    other => other,
                };
                Ok(tile(self.vbin(op, a, y, false)?))
            }
            (_, V::Tile(b, _)) => {
                let b = self.materialize(V::Tile(b, ElemType::F32), false)?;
                if let Some(f) = flipped {
                    return Ok(tile(self.vbin(f, b, x, false)?));
                }
                if op == BinOp::Sub {
                    // a - b == (-b) + a exactly (IEEE subtraction adds the negation).
                    let nb = self.vun(UnOp::Neg, b, false, ElemType::F32, ElemType::F32)?;
                    return Ok(tile(self.vbin(BinOp::Add, nb, x, false)?));
                }
                let a = self.materialize(x, false)?;
                Ok(tile(self.vbin(op, a, V::Tile(b, ElemType::F32), false)?))
            }
            (V::Col(a, _), _) => {
                let a = self.materialize(V::Col(a, ElemType::F32), true)?;
                let y = match y {
                    V::Col(..) => V::Col(self.materialize(y, true)?, ElemType::F32),
                    other => other,
                };
                Ok(colv(self.vbin(op, a, y, true)?))
            }
            (V::Imm(_), V::Col(b, _)) if flipped.is_some() => {
                let b = self.materialize(V::Col(b, ElemType::F32), true)?;
                let f = flipped.unwrap_or(op);
                Ok(colv(self.vbin(f, b, x, true)?))
            }
            (V::Imm(_), _) => {
                let a = self.materialize(x, true)?;
                let y = match y {
                    V::Col(..) => V::Col(self.materialize(y, true)?, ElemType::F32),
                    other => other,
                };
                Ok(colv(self.vbin(op, a, y, true)?))
            }
        }
    }

    /// `buf[index] = value` over the tile.
    fn store(&mut self, b: BufferId, index: &[Index], value: &Expr) -> Result<(), NotLowered> {
        let buf = self.p.buffer(b);
        let t =
            elem_type(buf.dtype).ok_or_else(|| no(format!("a store to a {} buffer", buf.dtype)))?;
        if self.dtype(value)? != buf.dtype {
            return Err(no("a store of a value of another type than its buffer's"));
        }
        let (h, off) = self.pattern(b, index)?;
        let (rows, cols) = (self.ctx.rows, self.ctx.cols);
        if (off.r == 0 && rows > 1) || (off.c == 0 && cols > 1) {
            return Err(no("a store writes one element several times"));
        }
        let v = self.expr(value)?;
        let prefilled = !self.step.prefill.is_empty();
        let src = match v {
            // A filled load is copied, so that the step has vector work to order it after.
            V::Tile(x, vt) if vt == t && !prefilled => x,
            V::Tile(x, vt) if vt == t => self.vun(UnOp::Cvt, x, false, vt, t)?,
            V::Tile(x, vt) => self.vun(UnOp::Cvt, x, false, vt, t)?,
            V::Col(x, vt) if cols == 1 => self.vun(UnOp::Cvt, x, true, vt, t)?,
            V::Col(..) | V::Imm(_) => {
                let m = self.materialize(v, false)?;
                if t == ElemType::F32 {
                    m
                } else {
                    self.vun(UnOp::Cvt, m, false, ElemType::F32, t)?
                }
            }
        };
        let d = self.dma(DmaKind::Store, h, off, src, rows, cols)?;
        self.step.stores.extend(d);
        Ok(())
    }

    /// One chunk of `local = reduce(kind) body`: `first` chunk of the tile or accumulated.
    fn reduce(
        &mut self,
        kind: ReduceKind,
        local: u32,
        body: &Expr,
        first: bool,
    ) -> Result<(), NotLowered> {
        self.need_f32(body, &format!("a {kind:?} reduction"))?;
        let (red, acc) = match kind {
            ReduceKind::Sum => (RedOp::Sum, BinOp::Add),
            ReduceKind::Max => (RedOp::Max, BinOp::Max),
            ReduceKind::Min => (RedOp::Min, BinOp::Min),
            ReduceKind::Prod => {
                return Err(no("a product reduction has no vector instruction"));
            }
        };
        let v = self.expr(body)?;
        let src = self.materialize(v, false)?;
        let (rows, cols) = rows_cols(self.ctx.rows, self.ctx.cols)?;
        let dst = if first { local } else { self.slot()? };
        self.step.vx.push(Op::VReduce(VReduce {
            op: red,
            dst,
            src,
            rows,
            cols,
            spitch: 0,
            axis: 1,
            itype: ElemType::F32,
            otype: ElemType::F32,
            sr: false,
        }));
        if !first {
            let (rows, one) = rows_cols(self.ctx.rows, 1)?;
            self.step.vx.push(Op::VBinary(VBinary {
                op: acc,
                dst: local,
                src1: local,
                src2: dst,
                rows,
                cols: one,
                dpitch: 0,
                pitch1: 0,
                pitch2: 0,
                itype: ElemType::F32,
                otype: ElemType::F32,
                bcast: Bcast::Tile,
                imm: 0,
                sr: false,
            }));
        }
        Ok(())
    }
}

/// How the stages map onto tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Stores at the outer point: rows and columns are the last two outer variables.
    Elementwise,
    /// Stages with their own variables: rows are the last outer variable.
    Reduction,
}

/// A tile: the prefix variables' values, the first row and the row count, and (elementwise
/// mode) the first column and the column count.
type TileAt = (Vec<i64>, u64, u64, Option<(u64, u64)>);

/// A unit of work of a tile: one stage over one chunk.
#[derive(Debug, Clone)]
struct StepPlan {
    stage: usize,
    ctx: Ctx,
    /// For a reduce stage: whether this is the tile's first chunk.
    first: bool,
}

/// The stages a kernel runs, checked: locals defined before use and not read by their own
/// reduction.
fn check_stages(stages: &[Stage]) -> Result<Mode, NotLowered> {
    let mut has_vars = false;
    for s in stages {
        match s {
            Stage::Reduce { local, body, .. } => {
                // A reduction over no variables reduces its one value (`vred*` over one column).
                let mut own = false;
                body.walk(&mut |e| own |= matches!(e, Expr::Local(l) if l == local));
                if own {
                    return Err(no("a reduction that reads its own local"));
                }
                has_vars = true;
            }
            Stage::Store { vars, .. } => has_vars |= !vars.is_empty(),
        }
    }
    Ok(if has_vars {
        Mode::Reduction
    } else {
        Mode::Elementwise
    })
}

fn chunks(n: usize, size: u64) -> impl Iterator<Item = (u64, u64)> {
    let n = n as u64;
    let size = size.max(1);
    (0..n.div_ceil(size)).map(move |i| {
        let s = i * size;
        (s, size.min(n - s))
    })
}

/// Every point of `extents` (row-major), as value vectors.
fn points(extents: &[usize]) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::new()];
    for &n in extents {
        out = out
            .into_iter()
            .flat_map(|p| {
                (0..n as i64).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    out
}

/// The kernel on the DMA and vector engines. Where an index divides a tile's column (or row)
/// variable, tiles of one column (or one element) make it a constant per step.
pub fn lower(cfg: &Config, p: &KernelProgram, k: &Kernel) -> Result<Lowered, NotLowered> {
    let mut last = None;
    for split in [Split::None, Split::Columns, Split::Elements] {
        match lower_split(cfg, p, k, split) {
            Err(e) if e.0 == NONAFFINE || e.0 == BOTH_AXES => last = Some(e),
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| no(NONAFFINE)))
}

/// Tiles of any shape, of one column, or of one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Split {
    None,
    Columns,
    Elements,
}

fn lower_split(
    cfg: &Config,
    p: &KernelProgram,
    k: &Kernel,
    split: Split,
) -> Result<Lowered, NotLowered> {
    let nest = match &k.body {
        Body::Loops(n) => n,
        Body::Call(_) => {
            return Err(no(format!(
                "call kernel ({}): a graph op run as a library call, not a loop nest",
                k.sources.join(", ")
            )));
        }
    };
    let mode = check_stages(&nest.stages)?;
    if nest.space.contains(&0)
        || nest.stages.iter().any(|s| match s {
            Stage::Reduce { vars, .. } | Stage::Store { vars, .. } => {
                vars.iter().any(|&(_, n)| n == 0)
            }
        })
    {
        return Err(no("a loop of extent 0"));
    }
    for &b in k.outputs.iter() {
        if k.inputs.contains(&b) {
            return Err(no("a kernel that reads a buffer it writes"));
        }
    }

    // HBM layout: the buffers read and written, each its flat contents.
    let mut hbm: Vec<Option<Hbm>> = vec![None; p.buffers.len()];
    let mut buffers = Vec::new();
    let mut at = 0u64;
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    let mut used = Vec::new();
    for s in &nest.stages {
        let (value, store) = match s {
            Stage::Reduce { body, .. } => (body, None),
            Stage::Store { buffer, value, .. } => (value, Some(*buffer)),
        };
        value.walk(&mut |e| {
            if let Expr::Load { buffer, .. } = e {
                used.push((*buffer, false));
            }
        });
        if let Some(b) = store {
            used.push((b, true));
        }
    }
    for (b, write) in used {
        if hbm.get(b.index()).is_none() {
            return Err(no(format!("buffer #{} is not in the program", b.0)));
        }
        let list = if write { &mut writes } else { &mut reads };
        if !list.contains(&b) {
            list.push(b);
        }
        if hbm[b.index()].is_some() {
            continue;
        }
        let buf = p.buffer(b);
        let t = elem_type(buf.dtype).ok_or_else(|| {
            no(format!(
                "buffer %{} is {}: the accelerator computes f32, bf16 and CFP8 only",
                buf.name, buf.dtype
            ))
        })?;
        let span = buf.span() as u64;
        let bytes = span.checked_mul(t.size()).ok_or_else(ovf)?;
        hbm[b.index()] = Some(Hbm { addr: at, t, span });
        buffers.push(Buffer {
            name: hbm_name(b),
            addr: at,
            dtype: t,
            shape: vec![span],
            role: Role::Input,
        });
        at = at
            .checked_add(bytes)
            .and_then(|x| x.checked_next_multiple_of(64))
            .ok_or_else(ovf)?;
    }
    if writes.iter().any(|b| reads.contains(b)) {
        return Err(no("a kernel that reads a buffer it writes"));
    }
    for buf in &mut buffers {
        if writes.iter().any(|&b| hbm_name(b) == buf.name) {
            buf.role = Role::Output;
        }
    }
    if at > cfg.hbm_bytes {
        return Err(no("the kernel's buffers do not fit the chip's HBM"));
    }

    // Locals: types from their reductions.
    let mut local_types: Vec<(Local, DType)> = Vec::new();
    for s in &nest.stages {
        if let Stage::Reduce { local, body, .. } = s {
            let probe = StepGen {
                p,
                hbm: &hbm,
                ctx: &Ctx {
                    vars: Vec::new(),
                    rows: 1,
                    cols: 1,
                },
                locals: &local_types
                    .iter()
                    .map(|&(l, d)| (l, 0, d))
                    .collect::<Vec<_>>(),
                base: 0,
                slot_bytes: 0,
                slots: 0,
                max_slots: 0,
                zero_tile: None,
                zero_col: None,
                step: Step::default(),
            };
            let d = probe.dtype(body)?;
            if !local_types.iter().any(|(l, _)| l == local) {
                local_types.push((*local, d));
            }
        }
    }

    // Row and column variables.
    let d = nest.space.len();
    let (row_var, prefix): (Option<usize>, usize) = match mode {
        Mode::Elementwise if d >= 2 => (Some(d - 2), d - 2),
        Mode::Elementwise => (None, 0),
        Mode::Reduction if d >= 1 => (Some(d - 1), d - 1),
        Mode::Reduction => (None, 0),
    };
    let row_extent = row_var.map_or(1, |v| nest.space[v]) as u64;
    let col_extent_of = |s: &Stage| -> u64 {
        match (mode, s) {
            (Mode::Elementwise, _) => d.checked_sub(1).map_or(1, |v| nest.space[v]) as u64,
            (_, Stage::Reduce { vars, .. } | Stage::Store { vars, .. }) => {
                vars.last().map_or(1, |&(_, n)| n as u64)
            }
        }
    };
    let max_cols = nest.stages.iter().map(col_extent_of).max().unwrap_or(1);

    // A step's context at tile (prefix point, r0) and stage point (others, c0).
    let make_ctx = |prefix_vals: &[i64],
                    r0: u64,
                    rows: u64,
                    stage: &Stage,
                    others: &[i64],
                    c0: u64,
                    cols: u64|
     -> Ctx {
        let mut vars = Vec::new();
        for (i, &v) in prefix_vals.iter().enumerate() {
            vars.push((Var(i as u32), Aff::konst(v)));
        }
        // A variable over one row or column is a constant of the step.
        if let Some(rv) = row_var {
            vars.push((
                Var(rv as u32),
                Aff {
                    k: r0 as i64,
                    r: i64::from(rows > 1),
                    c: 0,
                },
            ));
        }
        let col = Aff {
            k: c0 as i64,
            r: 0,
            c: i64::from(cols > 1),
        };
        match mode {
            Mode::Elementwise => {
                if d >= 1 {
                    vars.push((Var((d - 1) as u32), col));
                }
            }
            Mode::Reduction => {
                let sv = match stage {
                    Stage::Reduce { vars, .. } | Stage::Store { vars, .. } => vars,
                };
                for (i, &(v, _)) in sv.iter().enumerate() {
                    if i + 1 == sv.len() {
                        vars.push((v, col));
                    } else {
                        vars.push((v, Aff::konst(others.get(i).copied().unwrap_or(0))));
                    }
                }
            }
        }
        Ctx { vars, rows, cols }
    };

    // Slots per step: a dry run of every stage at the origin (on tiles of up to 2 x 2, so
    // that the rows and columns are variables as they are in the real tiles).
    let mut max_slots = 1usize;
    let dry_locals: Vec<(Local, u32, DType)> =
        local_types.iter().map(|&(l, d)| (l, 0, d)).collect();
    for s in &nest.stages {
        let rows = if split >= Split::Elements {
            1
        } else {
            row_extent.min(2)
        };
        let cols = if split >= Split::Columns {
            1
        } else {
            col_extent_of(s).min(2)
        };
        let ctx = make_ctx(&vec![0; prefix], 0, rows, s, &[0; 16], 0, cols);
        let mut g = StepGen {
            p,
            hbm: &hbm,
            ctx: &ctx,
            locals: &dry_locals,
            base: 0,
            slot_bytes: 64,
            slots: 0,
            max_slots: usize::MAX,
            zero_tile: None,
            zero_col: None,
            step: Step::default(),
        };
        match s {
            Stage::Reduce { kind, body, .. } => {
                g.reduce(*kind, 0, body, false)?;
            }
            Stage::Store {
                buffer,
                index,
                value,
                ..
            } => g.store(*buffer, index, value)?,
        }
        max_slots = max_slots.max(g.slots);
    }

    // Tile size: two slot sets plus the locals fit the SRAM.
    let budget = cfg.sram_bytes.min(MAX_24 + 1);
    let nslots = max_slots as u64;
    let nlocals = local_types.len() as u64;
    let slack = 64 * (2 * nslots + nlocals + 1);
    let avail = budget
        .checked_sub(slack)
        .ok_or_else(|| no("SRAM too small"))?;
    let mut cols_cap = if split >= Split::Columns {
        1
    } else {
        max_cols.min(MAX_12)
    };
    let per_row = |c: u64| 8 * nslots * c + 4 * nlocals;
    let mut rows_cap = (avail / per_row(cols_cap))
        .min(row_extent)
        .min(MAX_12)
        .min(if split >= Split::Elements { 1 } else { MAX_12 });
    if rows_cap == 0 {
        rows_cap = 1;
        cols_cap = cols_cap.min(avail.saturating_sub(4 * nlocals) / (8 * nslots).max(1));
    }
    if cols_cap == 0 {
        return Err(no(format!(
            "the kernel's expressions need {nslots} SRAM tiles per step: too many for the SRAM"
        )));
    }
    // Smaller tiles where there would be fewer than two per node: every node gets work and
    // each can overlap its DMA with its vector work.
    let nodes_total = u64::from(cfg.mesh_width).saturating_mul(u64::from(cfg.mesh_height));
    let prefix_tiles = nest.space[..prefix]
        .iter()
        .try_fold(1u64, |a, &n| a.checked_mul(n as u64))
        .filter(|&n| n <= MAX_INSTRUCTIONS)
        .ok_or_else(|| no("too many tiles"))?;
    let tile_count = |r: u64, c: u64| {
        let cc = if mode == Mode::Elementwise {
            max_cols.div_ceil(c)
        } else {
            1
        };
        prefix_tiles
            .saturating_mul(row_extent.div_ceil(r))
            .saturating_mul(cc)
    };
    let target = nodes_total.saturating_mul(2);
    while tile_count(rows_cap, cols_cap) < target && rows_cap > 1 {
        rows_cap = rows_cap.div_ceil(2);
    }
    while mode == Mode::Elementwise && tile_count(rows_cap, cols_cap) < target && cols_cap > 64 {
        cols_cap = cols_cap.div_ceil(2);
    }
    let slot_bytes = (rows_cap * cols_cap * 4).next_multiple_of(64);
    let set_bytes = slot_bytes * nslots;
    let locals_base = 2 * set_bytes;
    let local_bytes = (rows_cap * 4).next_multiple_of(64);
    let locals: Vec<(Local, u32, DType)> = local_types
        .iter()
        .enumerate()
        .map(|(i, &(l, dt))| {
            let a = locals_base + i as u64 * local_bytes;
            field("local address", a, MAX_24)
                .map(|a| (l, a, dt))
                .map_err(gen_err)
        })
        .collect::<Result<_, _>>()?;
    if locals_base + nlocals * local_bytes > budget {
        return Err(no("the kernel's tiles do not fit the SRAM"));
    }

    // Tiles: prefix points by row chunks; in elementwise mode also column chunks.
    let prefix_points = points(&nest.space[..prefix]);
    let mut tiles: Vec<TileAt> = Vec::new();
    let col_chunks: Vec<(u64, u64)> = match mode {
        Mode::Elementwise => chunks(max_cols as usize, cols_cap).collect(),
        Mode::Reduction => vec![(0, 0)],
    };
    for pp in &prefix_points {
        for (r0, rows) in chunks(row_extent as usize, rows_cap) {
            for &cc in &col_chunks {
                tiles.push((
                    pp.clone(),
                    r0,
                    rows,
                    (mode == Mode::Elementwise).then_some(cc),
                ));
                if tiles.len() as u64 > MAX_INSTRUCTIONS {
                    return Err(no("too many tiles"));
                }
            }
        }
    }

    // Partition the tiles over the nodes in contiguous blocks.
    let nodes = (cfg.mesh_width as usize)
        .checked_mul(cfg.mesh_height as usize)
        .filter(|&n| n > 0)
        .ok_or_else(|| no("empty mesh"))?;
    let used_nodes = nodes.min(tiles.len());
    let mut streams = Vec::new();
    let mut total = 0u64;
    let mut total_steps = 0u64;
    for n in 0..used_nodes {
        let lo = n * tiles.len() / used_nodes;
        let hi = (n + 1) * tiles.len() / used_nodes;
        let mut plans: Vec<StepPlan> = Vec::new();
        for (pp, r0, rows, cc) in &tiles[lo..hi] {
            for (si, s) in nest.stages.iter().enumerate() {
                match (mode, cc) {
                    (Mode::Elementwise, Some((c0, cols))) => plans.push(StepPlan {
                        stage: si,
                        ctx: make_ctx(pp, *r0, *rows, s, &[], *c0, *cols),
                        first: true,
                    }),
                    _ => {
                        let sv = match s {
                            Stage::Reduce { vars, .. } | Stage::Store { vars, .. } => vars,
                        };
                        let outer_ext: Vec<usize> = sv
                            .iter()
                            .take(sv.len().saturating_sub(1))
                            .map(|&(_, e)| e)
                            .collect();
                        let last = sv.last().map_or(1, |&(_, e)| e);
                        let mut first = true;
                        for others in points(&outer_ext) {
                            for (c0, cols) in chunks(last, cols_cap) {
                                plans.push(StepPlan {
                                    stage: si,
                                    ctx: make_ctx(pp, *r0, *rows, s, &others, c0, cols),
                                    first,
                                });
                                first = false;
                                if plans.len() as u64 > MAX_INSTRUCTIONS {
                                    return Err(no("too many steps"));
                                }
                            }
                        }
                    }
                }
            }
        }
        total_steps += plans.len() as u64;
        let q = node_stream(p, &hbm, nest, &plans, &locals, slot_bytes, max_slots)?;
        total = total.saturating_add(q.len() as u64);
        if total > MAX_INSTRUCTIONS {
            return Err(no(format!(
                "the vector program would have more than {MAX_INSTRUCTIONS} instructions"
            )));
        }
        let w = cfg.mesh_width as usize;
        let node = (
            field("node x", (n % w) as u64, 255).map_err(gen_err)?,
            field("node y", (n / w) as u64, 255).map_err(gen_err)?,
        );
        streams.push(q.into_stream(node));
    }
    Ok(Lowered {
        program: Program { buffers, streams },
        reads,
        writes,
        summary: format!(
            "vector {} ({} tiles of up to {rows_cap}x{cols_cap}, {total_steps} steps) on {used_nodes} node(s)",
            match mode {
                Mode::Elementwise => "elementwise",
                Mode::Reduction => "reduction",
            },
            tiles.len()
        ),
    })
}

/// One node's queues for its steps (see the module docs for the synchronization).
fn node_stream(
    p: &KernelProgram,
    hbm: &[Option<Hbm>],
    nest: &terafab_ir::kernel::LoopNest,
    plans: &[StepPlan],
    locals: &[(Local, u32, DType)],
    slot_bytes: u64,
    max_slots: usize,
) -> Result<Queues, NotLowered> {
    let set_bytes = slot_bytes.checked_mul(max_slots as u64).ok_or_else(ovf)?;
    let mut steps = Vec::with_capacity(plans.len());
    for (j, plan) in plans.iter().enumerate() {
        let mut g = StepGen {
            p,
            hbm,
            ctx: &plan.ctx,
            locals,
            base: if j % 2 == 0 { 0 } else { set_bytes },
            slot_bytes,
            slots: 0,
            max_slots,
            zero_tile: None,
            zero_col: None,
            step: Step::default(),
        };
        match &nest.stages[plan.stage] {
            Stage::Reduce {
                local, kind, body, ..
            } => {
                let addr = locals
                    .iter()
                    .find(|(l, ..)| l == local)
                    .map(|(_, a, _)| *a)
                    .ok_or_else(|| no("undefined local"))?;
                g.reduce(*kind, addr, body, plan.first)?;
            }
            Stage::Store {
                buffer,
                index,
                value,
                ..
            } => g.store(*buffer, index, value)?,
        }
        steps.push(g.step);
    }
    let mut q = Queues::new();
    let e = gen_err;
    let stores = |q: &mut Queues, j: usize, st: &Step| -> Result<(), NotLowered> {
        let s = j % 2;
        if st.stores.is_empty() {
            return Ok(());
        }
        let first_wait = if st.vx.is_empty() {
            q.sem_wait(Engine::Dma, DLOADED[s], st.loads.len() as u64)
                .map_err(e)?;
            None
        } else {
            Some(COMPUTED[s])
        };
        for (i, d) in st.stores.iter().enumerate() {
            let wait = if i == 0 { first_wait } else { None };
            q.push(Engine::Dma, Op::Dma(*d), wait, Some(STORED[s]))
                .map_err(e)?;
        }
        Ok(())
    };
    for (j, st) in steps.iter().enumerate() {
        let s = j % 2;
        if j >= 2 {
            let prev = &steps[j - 2];
            if prev.stores.is_empty() {
                q.sem_wait(Engine::Dma, COMPUTED[s], 1).map_err(e)?;
            } else {
                q.sem_wait(Engine::Dma, STORED[s], prev.stores.len() as u64)
                    .map_err(e)?;
            }
        }
        if !st.prefill.is_empty() {
            if st.vx.is_empty() {
                return Err(no(
                    "vector lowering: fill tiles without vector work (internal)",
                ));
            }
            q.sem_signal(Engine::Dma, FREE[s], 1).map_err(e)?;
            q.sem_wait(Engine::Dma, PREFILLED[s], 1).map_err(e)?;
            q.sem_wait(Engine::Vx, FREE[s], 1).map_err(e)?;
            let last = st.prefill.len() - 1;
            for (i, op) in st.prefill.iter().enumerate() {
                let signal = (i == last).then_some(PREFILLED[s]);
                q.push(Engine::Vx, *op, None, signal).map_err(e)?;
            }
        }
        let loaded = if st.vx.is_empty() {
            DLOADED[s]
        } else {
            LOADED[s]
        };
        for d in &st.loads {
            q.push(Engine::Dma, Op::Dma(*d), None, Some(loaded))
                .map_err(e)?;
        }
        if st.vx.is_empty() && st.stores.is_empty() {
            return Err(no("vector lowering: an empty step (internal)"));
        }
        if !st.vx.is_empty() {
            if st.loads.is_empty() {
                q.sem_signal(Engine::Dma, LOADED[s], 1).map_err(e)?;
            }
            q.sem_wait(Engine::Vx, LOADED[s], (st.loads.len() as u64).max(1))
                .map_err(e)?;
            let last = st.vx.len() - 1;
            for (i, op) in st.vx.iter().enumerate() {
                let signal = (i == last).then_some(COMPUTED[s]);
                q.push(Engine::Vx, *op, None, signal).map_err(e)?;
            }
        }
        if j >= 1 {
            stores(&mut q, j - 1, &steps[j - 1])?;
        }
    }
    if let Some(last) = steps.len().checked_sub(1) {
        stores(&mut q, last, &steps[last])?;
    }
    Ok(q)
}
