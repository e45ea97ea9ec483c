//! GEMM: `C[M×N] = A[M×K] · B[K×N]` (+ `bias[N]` broadcast over rows, then ReLU), for any
//! `M, N, K ≥ 1` on any mesh.
//!
//! # Schedule
//!
//! **Partition.** M is split into `H' ≤ H` row blocks and N into `W' ≤ W` column blocks
//! (block sizes rounded up to `mx_m` / `mx_n` so each node's `mm` work is whole matrix
//! blocks); node `(x, y)` computes the output block (row block `y`, column block `x`).
//! Nodes outside the `W' × H'` grid (tiny M or N) get no stream.
//!
//! **Split K.** When M is within one engine block and K is long (a batch-1 dense layer, a
//! GEMV), M is one row block and K is cut into `H` groups instead, one per mesh row: node
//! `(x, y)` sums K group `y` for column block `x` (reading its own B rows, so every row of
//! nodes and every HBM port streams weights), nodes `y > 0` send their partial tiles over the
//! mesh to `(x, 0)`, which adds them on the vector engine before the epilogue and the store.
//!
//! **Tiling.** Each node block is cut into output tiles of at most `T × T` (equal tiles,
//! rounded to the engine block) and K into equal chunks of at most `TK` (`32 · mx_k` by
//! default, smaller only when SRAM is tiny). `T` is the largest size for which two A chunks
//! (`T × TK`), two B chunks (`TK × T`), two f32 accumulators (`T × T`) and two bias rows fit
//! the node's SRAM. A node walks its tiles row-major, and each tile's K chunks in order:
//! step `s` uses operand slot `s mod 2` and tile `t` accumulator slot `t mod 2`.
//!
//! **Double buffering.** The DMA queue loads step `s + 1` (and `s + 2`) while the matrix
//! engine runs `mm` on step `s`; the loads of step `s` wait for the token `mm(s − 2)` gives
//! when it has finished reading that slot. The first chunk of a tile uses `acc=0`, the others
//! `acc=1`. After the last chunk the vector engine runs the epilogue (`vadd` of the bias
//! row, `vmax` with 0) on the accumulator in place while `mm` proceeds on the other
//! accumulator; the DMA engine then stores the tile, and the store's completion frees the
//! accumulator for tile `t + 2`. A store is queued on the DMA engine two steps after its tile
//! ends (so loads that `mm` needs are not held behind it), and a tile's bias load is queued
//! after the store of tile `t − 2`, which makes the bias slot's reuse safe by queue order.
//!
//! **Multicast.** Every node of row block `y` needs the same A chunks, every node of column
//! block `x` the same B chunks. When all nodes walk the same steps (same tile counts; true
//! unless a block is smaller than its tile count), node `(0, y)` loads each A chunk from
//! HBM once and multicasts it to `(1..W', y)`, and node `(x, 0)` does so for B down
//! `(x, 1..H')`: HBM reads drop from `W'·|A| + H'·|B|`-per-tile-pass to `|A| + |B|`, and
//! the mesh carries the rest (its links are as fast as a DMA port, and HBM is the chip's
//! scarce resource: 400 B/cycle shared by all ports). A multicast into a receiver's slot may
//! only start when the receiver's `mm` of two steps earlier has finished reading it: each
//! receiver sends a 4-byte credit `send` (with `rsem`) to its loader after that `mm`, and the
//! loader waits for all credits of the slot before the next multicast into it. Otherwise
//! (non-uniform steps) every node loads its own operands.
//!
//! Every ordering is a semaphore or queue order, so the simulator's race detector holds.

use std::collections::VecDeque;

use super::GenError;
use super::builder::{MAX_12, MAX_24, Queues, SramAlloc, add, dma_2d, dma_3d, field, mul};
use crate::config::Config;
use crate::dtype::ElemType;
use crate::isa::{Bcast, BinOp, Dest, Dma, DmaKind, Engine, Matmul, Op, Send, VBinary};
use crate::program::{Buffer, Program, Role};

/// Most steps of a fused epilogue ([`Epilogue`]).
pub const MAX_EPILOGUE: usize = 8;

/// What one step of a fused epilogue combines the accumulator with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpiOperand {
    /// An f32 immediate (its bits).
    Imm(u32),
    /// An f32 vector along N (HBM `[N]`, one value per column), like the bias.
    AlongN,
    /// An f32 vector along M (HBM `[M]`, one value per row: a convolution's per-channel
    /// scale and shift, since its output channels are the rows).
    AlongM,
    /// An f32 `[M, N]` row-major tensor (a residual).
    Tile,
}

/// One step of a fused epilogue: `acc = acc OP operand` on the f32 accumulator tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpiStep {
    pub op: BinOp,
    pub operand: EpiOperand,
}

/// A fused vector epilogue: steps applied in order to each finished accumulator tile (after
/// the bias, before the ReLU of [`GemmSpec`]), while `mm` goes on with the other accumulator.
/// Step `i`'s vector operand (not an immediate) is the HBM input `E<i>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Epilogue {
    pub steps: [Option<EpiStep>; MAX_EPILOGUE],
}

impl Epilogue {
    /// No steps.
    pub const NONE: Epilogue = Epilogue {
        steps: [None; MAX_EPILOGUE],
    };

    /// The epilogue of `steps`; `None` when there are more than [`MAX_EPILOGUE`].
    pub fn new(steps: &[EpiStep]) -> Option<Epilogue> {
        if steps.len() > MAX_EPILOGUE {
            return None;
        }
        let mut e = Epilogue::NONE;
        for (slot, &step) in e.steps.iter_mut().zip(steps) {
            *slot = Some(step);
        }
        Some(e)
    }

    /// The steps in order, with their indices.
    pub fn iter(&self) -> impl Iterator<Item = (usize, EpiStep)> + '_ {
        self.steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|s| (i, s)))
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// The name of step `i`'s HBM operand.
    pub fn hbm_name(i: usize) -> String {
        format!("E{i}")
    }
}

/// The GEMM to generate: `batch` independent products `C[b] = A[b]·B[b]`, one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmSpec {
    /// Products (at least 1); with more than one, A, B and C are `[batch, ..]` in HBM.
    pub batch: u64,
    /// Rows of A and C.
    pub m: u64,
    /// Columns of B and C.
    pub n: u64,
    /// Columns of A, rows of B.
    pub k: u64,
    /// Element type of A in HBM.
    pub a_type: ElemType,
    /// Element type of B in HBM.
    pub b_type: ElemType,
    /// Add `BIAS[N]` (f32) to every row of C.
    pub bias: bool,
    /// Apply ReLU (`max(x, 0)`) to C, after the bias and the epilogue.
    pub relu: bool,
    /// Further epilogue steps (one product only: with a batch, none).
    pub epilogue: Epilogue,
    /// B read in place from another tensor (implicit GEMM, one product only): HBM `B` is
    /// then that tensor, `[span]` elements, and `B[k, n]` is at the element offset
    /// [`Gather::offset_of`]; `None`: HBM `B` is the dense row-major `[K, N]` matrix.
    pub b_gather: Option<Gather>,
}

/// Most digits of a [`Gather`] index.
pub const MAX_DIGITS: usize = 4;

/// A mixed-radix decomposition of a GEMM index (K or N) with an element stride per digit:
/// index `i` has digits `d_j = (i / P_j) mod R_j` (`P_0 = 1`, `P_{j+1} = P_j · R_j`; the
/// outermost digit taken without the modulo) and contributes `Σ_j d_j · stride_j` elements.
/// A convolution's K `(c, kh, kw)` has strides `(dw, dh·W, H·W)` innermost first, its N
/// `(oh, ow)` the strides `(sw, sh·W)`: the im2col matrix, read where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    /// `(radix, stride)`, innermost first; `len` of them are used.
    pub digits: [(u64, u64); MAX_DIGITS],
    pub len: usize,
}

impl Digits {
    /// The digits of `list` (`(radix, stride)`, innermost first); `None` when there are more
    /// than [`MAX_DIGITS`] or a radix is 0.
    pub fn new(list: &[(u64, u64)]) -> Option<Digits> {
        if list.is_empty() || list.len() > MAX_DIGITS || list.iter().any(|&(r, _)| r == 0) {
            return None;
        }
        let mut digits = [(1, 0); MAX_DIGITS];
        digits[..list.len()].copy_from_slice(list);
        Some(Digits {
            digits,
            len: list.len(),
        })
    }

    /// `(radix, stride)`, innermost first.
    pub fn list(&self) -> &[(u64, u64)] {
        &self.digits[..self.len]
    }

    /// The element offset of index `i` (saturating).
    pub fn offset_of(&self, i: u64) -> u64 {
        let mut rest = i;
        let mut off = 0u64;
        for (j, &(radix, stride)) in self.list().iter().enumerate() {
            let d = if j + 1 == self.len {
                rest
            } else {
                rest % radix
            };
            rest /= radix;
            off = off.saturating_add(d.saturating_mul(stride));
        }
        off
    }

    /// The innermost radix (the length of a run along the innermost digit).
    fn inner(&self) -> (u64, u64) {
        self.digits[0]
    }

    /// The radix and stride of the second digit (`(u64::MAX, 0)` without one).
    fn second(&self) -> (u64, u64) {
        if self.len > 1 {
            self.digits[1]
        } else {
            (u64::MAX, 0)
        }
    }

    /// Runs of `[start, start + len)` along the innermost digit: `(first, count)` with the
    /// indices `first..first + count` sharing every digit but the innermost.
    fn runs(&self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let r0 = if self.len > 1 {
            self.inner().0
        } else {
            u64::MAX
        };
        let mut out = Vec::new();
        let (mut at, end) = (start, start.saturating_add(len));
        while at < end {
            let next = (at / r0).saturating_add(1).saturating_mul(r0).min(end);
            out.push((at, next - at));
            at = next;
        }
        out
    }
}

/// B of a GEMM read in place (see [`GemmSpec::b_gather`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// Elements of the source tensor (HBM `B`).
    pub span: u64,
    /// The element offset of `B[0, 0]`.
    pub offset: u64,
    /// K's digits.
    pub k: Digits,
    /// N's digits; the innermost has stride 1 (runs along N are contiguous).
    pub n: Digits,
}

impl Gather {
    /// The element offset of `B[k, n]`.
    pub fn offset_of(&self, k: u64, n: u64) -> u64 {
        self.offset
            .saturating_add(self.k.offset_of(k))
            .saturating_add(self.n.offset_of(n))
    }

    /// The DMA loads of the chunk `B[k0 .. k0 + tk, n0 .. n0 + tn]` of element size `eb`
    /// from HBM `base` into the row-major `tk × tn` slot at `slot`: per run of K along its
    /// innermost digit and per group of N (a partial row of N's innermost digit, or
    /// consecutive whole rows), one 3-D copy (row bytes contiguous along N, rows along N's
    /// second digit, planes along K's innermost digit).
    #[allow(clippy::too_many_arguments)]
    pub fn chunk_loads(
        &self,
        base: u64,
        slot: u64,
        eb: u64,
        k0: u64,
        tk: u64,
        n0: u64,
        tn: u64,
    ) -> Result<Vec<Dma>, GenError> {
        let (r0, s0) = self.n.inner();
        if s0 != 1 {
            return Err(GenError::Unsupported(
                "a gathered B whose rows are not contiguous",
            ));
        }
        let (_, s1) = self.n.second();
        let r1 = self.n.second().0;
        // Groups of N: `(first, row length, rows)`.
        let mut groups: Vec<(u64, u64, u64)> = Vec::new();
        for (first, count) in self.n.runs(n0, tn) {
            let row = first / r0.max(1);
            match groups.last_mut() {
                // A whole row following whole rows of the same second-digit run.
                Some((g0, len, rows))
                    if count == r0
                        && *len == r0
                        && *g0 % r0 == 0
                        && (*g0 / r0 + *rows) == row
                        && (*g0 / r0) / r1 == row / r1 =>
                {
                    *rows += 1
                }
                _ => groups.push((first, count, 1)),
            }
        }
        let (_, ks) = self.k.inner();
        let mut out = Vec::new();
        for (kf, kc) in self.k.runs(k0, tk) {
            for &(nf, len, rows) in &groups {
                let src = add("gather", base, mul("gather", self.offset_of(kf, nf), eb)?)?;
                let dst = add(
                    "gather",
                    slot,
                    mul(
                        "gather",
                        add("gather", mul("gather", kf - k0, tn)?, nf - n0)?,
                        eb,
                    )?,
                )?;
                out.extend(dma_3d(
                    DmaKind::Load,
                    dst,
                    src,
                    mul("gather", len, eb)?,
                    (rows, mul("gather", s1, eb)?, mul("gather", r0, eb)?),
                    (kc, mul("gather", ks, eb)?, mul("gather", tn, eb)?),
                )?);
            }
        }
        Ok(out)
    }
}

/// The tiling and partition the generator chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GemmPlan {
    /// Row blocks of M (`(start, len)`), one per mesh row used.
    pub row_blocks: Vec<(u64, u64)>,
    /// Column blocks of N, one per mesh column used.
    pub col_blocks: Vec<(u64, u64)>,
    /// Largest output tile rows.
    pub tile_m: u64,
    /// Largest output tile columns.
    pub tile_n: u64,
    /// K chunk (the last may be shorter).
    pub tile_k: u64,
    /// Whether operands are multicast along node rows / columns.
    pub multicast: bool,
    /// SRAM bytes per node the layout uses.
    pub sram_used: u64,
    /// Split K: with more than 1, M is one tile, and K is cut into this many groups, one per
    /// mesh row: node `(x, y)` sums group `y` and sends its partial tile to `(x, 0)`, which
    /// adds them up before the epilogue (a GEMV or a short GEMM uses every row of nodes and
    /// every HBM port).
    pub k_groups: u64,
}

/// Most instructions a generated program may have.
pub const MAX_INSTRUCTIONS: u64 = 1 << 24;

// Semaphores (per node); `[p]` = operand slot parity, `[c]` = accumulator slot.
const LOADED: u8 = 0; // [p] operands of a step arrived (DMA, multicast)
const FREE: u8 = 2; // [p] mm finished reading slot p (for the node's own loads)
const TDONE: u8 = 4; // last mm of a tile done
const EDONE: u8 = 5; // epilogue of a tile done
const CFREE: u8 = 6; // [c] store of accumulator c done
const A_READY: u8 = 8; // [p] loader's A chunk in SRAM, ready to multicast
const B_READY: u8 = 10; // [p] same for B
const CRED_A: u8 = 12; // [p] credits from A receivers
const CRED_B: u8 = 14; // [p] credits from B receivers
const CREDIT_GO: u8 = 16; // [p] mm done: net may send credits
const BIAS_LOADED: u8 = 18; // [c] bias row of a tile arrived
const EPI_LOADED: u8 = 20; // [c] epilogue operands of a tile arrived
const PART: u8 = 22; // split K: partial sums of the tile arrived (at node (x, 0))

/// `ceil(a / b)` for `b > 0`.
fn div_ceil(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// `a` rounded up to a multiple of `g` (`a` itself if that overflows).
fn round_up(a: u64, g: u64) -> u64 {
    a.checked_next_multiple_of(g.max(1)).unwrap_or(a)
}

/// Splits `total` into at most `parts` contiguous non-empty blocks of a size rounded up to
/// `gran` when that does not leave parts idle for no reason.
fn split_blocks(total: u64, parts: u64, gran: u64) -> Vec<(u64, u64)> {
    let mut per = div_ceil(total, parts);
    if per > gran {
        per = round_up(per, gran);
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < total {
        let len = per.min(total - at);
        out.push((at, len));
        at += len;
    }
    out
}

/// The size of the equal tiles (at most `max`, rounded to `gran` when that stays within
/// `max`) a block of `len` is cut into.
fn tile_size(len: u64, max: u64, gran: u64) -> u64 {
    let count = div_ceil(len, max);
    let size = div_ceil(len, count);
    if size > gran && round_up(size, gran) <= max {
        round_up(size, gran)
    } else {
        size
    }
}

/// How many tiles [`split_tiles`] makes (without building them).
fn tile_count(len: u64, max: u64, gran: u64) -> u64 {
    div_ceil(len, tile_size(len, max, gran))
}

/// Cuts a block `(start, len)` into equal tiles of at most `max` (rounded to `gran`).
fn split_tiles(start: u64, len: u64, max: u64, gran: u64) -> Vec<(u64, u64)> {
    let size = tile_size(len, max, gran);
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        let l = size.min(len - at);
        out.push((start + at, l));
        at += l;
    }
    out
}

/// SRAM addresses of one node's regions (the same on every node).
#[derive(Debug, Clone, Copy)]
struct Layout {
    a: [u64; 2],
    b: [u64; 2],
    c: [u64; 2],
    bias: [u64; 2],
    /// Per epilogue step with a vector operand, its two slots (by accumulator).
    epi: [[u64; 2]; MAX_EPILOGUE],
    credit_src: u64,
    credit_land: u64,
    /// Split K, at `(x, 0)`: one landing tile per other K group.
    part: u64,
    used: u64,
}

fn layout(
    tm: u64,
    tn: u64,
    tk: u64,
    spec: &GemmSpec,
    mesh: (u64, u64),
    parts: u64,
) -> Result<Layout, GenError> {
    let (ea, eb, bias, epi) = (
        spec.a_type.size(),
        spec.b_type.size(),
        spec.bias,
        &spec.epilogue,
    );
    let mut s = SramAlloc::new();
    let a_bytes = mul("A chunk", mul("A chunk", tm, tk)?, ea)?;
    let b_bytes = mul("B chunk", mul("B chunk", tk, tn)?, eb)?;
    let c_bytes = mul("C tile", mul("C tile", tm, tn)?, 4)?;
    let a = [s.alloc(a_bytes)?, s.alloc(a_bytes)?];
    let b = [s.alloc(b_bytes)?, s.alloc(b_bytes)?];
    let c = [s.alloc(c_bytes)?, s.alloc(c_bytes)?];
    let bias_bytes = if bias { mul("bias", tn, 4)? } else { 0 };
    let bias = [s.alloc(bias_bytes)?, s.alloc(bias_bytes)?];
    let mut epi_slots = [[0u64; 2]; MAX_EPILOGUE];
    for (i, step) in epi.iter() {
        let bytes = match step.operand {
            EpiOperand::Imm(_) => continue,
            EpiOperand::AlongN => mul("epilogue", tn, 4)?,
            EpiOperand::AlongM => mul("epilogue", tm, 4)?,
            EpiOperand::Tile => mul("epilogue", mul("epilogue", tm, tn)?, 4)?,
        };
        epi_slots[i] = [s.alloc(bytes)?, s.alloc(bytes)?];
    }
    let (credit_src, credit_land) = if mesh.0 * mesh.1 > 1 {
        // One 4-byte landing slot per (sender index, parity); senders are indexed by x for
        // A credits and by W + y for B credits.
        let land = mul("credits", add("credits", mesh.0, mesh.1)?, 8)?;
        (s.alloc(4)?, s.alloc(land)?)
    } else {
        (0, 0)
    };
    let part = if parts > 0 {
        s.alloc(mul(
            "partials",
            mul("partials", parts, tm)?,
            mul("partials", tn, 4)?,
        )?)?
    } else {
        0
    };
    Ok(Layout {
        a,
        b,
        c,
        bias,
        epi: epi_slots,
        credit_src,
        credit_land,
        part,
        used: s.used(),
    })
}

/// Chooses the partition and tiles for `spec` on `cfg` (what [`gemm_program`] generates).
pub fn gemm_plan(cfg: &Config, spec: &GemmSpec) -> Result<GemmPlan, GenError> {
    cfg.validate()?;
    for (name, d) in [
        ("batch", spec.batch),
        ("m", spec.m),
        ("n", spec.n),
        ("k", spec.k),
    ] {
        if d == 0 {
            return Err(GenError::ZeroDim(name));
        }
    }
    let (w, h) = (u64::from(cfg.mesh_width), u64::from(cfg.mesh_height));
    // M within one engine block, K long: one row block (its rows are not worth splitting
    // across nodes), with K split over the mesh rows instead (see `k_groups`).
    let row_blocks = if spec.m <= cfg.mx_m
        && spec.batch == 1
        && spec.k >= h.saturating_mul(cfg.mx_k).saturating_mul(16)
    {
        vec![(0, spec.m)]
    } else {
        split_blocks(spec.m, h, cfg.mx_m)
    };
    let col_blocks = split_blocks(spec.n, w, cfg.mx_n);
    let bm = row_blocks.first().map_or(1, |b| b.1);
    let bn = col_blocks.first().map_or(1, |b| b.1);
    let mesh = (col_blocks.len() as u64, row_blocks.len() as u64);
    let gran = cfg.mx_m.max(cfg.mx_n);
    // K chunk: 32 engine blocks deep amortizes mm's latency; halve it only for tiny SRAMs.
    let mut tk = spec.k.min(cfg.mx_k.saturating_mul(32)).min(MAX_12);
    let mut smallest = None;
    loop {
        let fits = |t: u64| -> Result<Option<Layout>, GenError> {
            let l = layout(t.min(bm), t.min(bn), tk, spec, mesh, 0)?;
            Ok((l.used <= cfg.sram_bytes).then_some(l))
        };
        if fits(1)?.is_some() {
            // Largest fitting T (memory grows with T), then rounded to the engine block.
            let (mut lo, mut hi) = (1u64, MAX_12.min(bm.max(bn)));
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                if fits(mid)?.is_some() {
                    lo = mid;
                } else {
                    hi = mid - 1;
                }
            }
            // The largest tile actually cut (a tile is at most its block); `t` shrinks in the
            // unlikely case the rounding to the engine block still overflows the SRAM.
            let mut t = if lo >= gran { lo - lo % gran } else { lo };
            loop {
                let row_tiles: Vec<u64> = row_blocks
                    .iter()
                    .map(|&(_, l)| tile_count(l, t, cfg.mx_m))
                    .collect();
                let col_tiles: Vec<u64> = col_blocks
                    .iter()
                    .map(|&(_, l)| tile_count(l, t, cfg.mx_n))
                    .collect();
                let uniform = row_tiles.iter().all(|&c| c == row_tiles[0])
                    && col_tiles.iter().all(|&c| c == col_tiles[0]);
                let tile_m = row_blocks
                    .iter()
                    .map(|&(_, l)| tile_size(l, t, cfg.mx_m).min(l))
                    .max()
                    .unwrap_or(1);
                let tile_n = col_blocks
                    .iter()
                    .map(|&(_, l)| tile_size(l, t, cfg.mx_n).min(l))
                    .max()
                    .unwrap_or(1);
                let l = layout(tile_m, tile_n, tk, spec, mesh, 0)?;
                if l.used <= cfg.sram_bytes {
                    // Split K where M is one tile on one row of nodes, each node has one
                    // tile, and each group keeps 16 engine blocks of K.
                    let one_tile = row_tiles == [1] && col_tiles.iter().all(|&c| c == 1);
                    let groups = split_blocks(spec.k, h, cfg.mx_k).len() as u64;
                    let mut k_groups = 1;
                    let mut used = l.used;
                    if spec.batch == 1
                        && one_tile
                        && groups > 1
                        && spec.k >= h.saturating_mul(cfg.mx_k).saturating_mul(16)
                    {
                        let lk = layout(tile_m, tile_n, tk, spec, (mesh.0, groups), groups - 1)?;
                        if lk.used <= cfg.sram_bytes {
                            k_groups = groups;
                            used = lk.used;
                        }
                    }
                    return Ok(GemmPlan {
                        tile_m,
                        tile_n,
                        tile_k: tk,
                        multicast: uniform && (mesh.0 * mesh.1 > 1 || k_groups > 1),
                        sram_used: used,
                        row_blocks,
                        col_blocks,
                        k_groups,
                    });
                }
                if t == 1 {
                    break;
                }
                t -= 1;
            }
        }
        if smallest.is_none() || tk == 1 {
            smallest = Some(layout(1, 1, 1, spec, mesh, 0)?.used);
        }
        if tk == 1 {
            return Err(GenError::SramTooSmall {
                needed: smallest.unwrap_or(0),
                available: cfg.sram_bytes,
            });
        }
        tk = tk.div_ceil(2);
    }
}

/// HBM addresses of the buffers.
struct Hbm {
    a: u64,
    b: u64,
    c: u64,
    bias: u64,
    /// Per epilogue step with a vector operand, its address.
    epi: [u64; MAX_EPILOGUE],
}

/// Generates the program for `spec` on `cfg`: HBM buffers `A` (M×K, `a_type`), `B` (K×N,
/// `b_type`), `BIAS` (N, f32, when `spec.bias`) as inputs and `C` (M×N, f32) as output, and
/// one stream per node used. See the module documentation for the schedule.
pub fn gemm_program(cfg: &Config, spec: &GemmSpec) -> Result<Program, GenError> {
    let plan = gemm_plan(cfg, spec)?;
    let split_k = plan.k_groups > 1;
    let mesh = (
        plan.col_blocks.len() as u64,
        if split_k {
            plan.k_groups
        } else {
            plan.row_blocks.len() as u64
        },
    );
    let lay = layout(
        plan.tile_m,
        plan.tile_n,
        plan.tile_k,
        spec,
        mesh,
        plan.k_groups - 1,
    )?;
    if spec.batch > 1 && !spec.epilogue.is_empty() {
        return Err(GenError::Unsupported("a fused epilogue on a batched GEMM"));
    }
    if let Some(g) = spec.b_gather {
        if spec.batch > 1 {
            return Err(GenError::Unsupported("a gathered B on a batched GEMM"));
        }
        // The largest element offset the digits reach, against the source's size.
        let reach = |d: &Digits, extent: u64| {
            let mut p = 1u64;
            let mut top = 0u64;
            for &(radix, stride) in d.list() {
                let hi = extent.div_ceil(p).min(radix).saturating_sub(1);
                top = top.saturating_add(hi.saturating_mul(stride));
                p = p.saturating_mul(radix);
            }
            top
        };
        let last = g
            .offset
            .saturating_add(reach(&g.k, spec.k))
            .saturating_add(reach(&g.n, spec.n));
        if last >= g.span || g.n.inner().1 != 1 {
            return Err(GenError::Unsupported(
                "a gathered B outside its source or not contiguous along N",
            ));
        }
    }

    // HBM layout: A, B, C, BIAS, E<i>, each 64-byte aligned.
    let mut buffers = Vec::new();
    let mut at = 0u64;
    let mut place = |name: &str, dtype: ElemType, shape: Vec<u64>, role: Role| {
        let addr = at;
        let elems = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or(GenError::Overflow("HBM buffer"))?;
        let bytes = mul("HBM buffer", elems, dtype.size())?;
        at = add("HBM layout", addr, bytes)?
            .checked_next_multiple_of(64)
            .ok_or(GenError::Overflow("HBM layout"))?;
        buffers.push(Buffer {
            name: name.to_string(),
            addr,
            dtype,
            shape,
            role,
        });
        Ok::<u64, GenError>(addr)
    };
    let batched = |dims: Vec<u64>| {
        if spec.batch > 1 {
            [vec![spec.batch], dims].concat()
        } else {
            dims
        }
    };
    let hbm = Hbm {
        a: place("A", spec.a_type, batched(vec![spec.m, spec.k]), Role::Input)?,
        b: match spec.b_gather {
            Some(g) => place("B", spec.b_type, vec![g.span], Role::Input)?,
            None => place("B", spec.b_type, batched(vec![spec.k, spec.n]), Role::Input)?,
        },
        c: place(
            "C",
            ElemType::F32,
            batched(vec![spec.m, spec.n]),
            Role::Output,
        )?,
        bias: if spec.bias {
            place("BIAS", ElemType::F32, vec![spec.n], Role::Input)?
        } else {
            0
        },
        epi: {
            let mut addrs = [0u64; MAX_EPILOGUE];
            for (i, step) in spec.epilogue.iter() {
                let shape = match step.operand {
                    EpiOperand::Imm(_) => continue,
                    EpiOperand::AlongN => vec![spec.n],
                    EpiOperand::AlongM => vec![spec.m],
                    EpiOperand::Tile => vec![spec.m, spec.n],
                };
                addrs[i] = place(&Epilogue::hbm_name(i), ElemType::F32, shape, Role::Input)?;
            }
            addrs
        },
    };
    if at > cfg.hbm_bytes {
        return Err(GenError::HbmTooSmall {
            needed: at,
            available: cfg.hbm_bytes,
        });
    }

    // Rough instruction count: ~10 per step per node plus per-row DMA fallbacks.
    let k_count = tile_count(spec.k, plan.tile_k, cfg.mx_k);
    let mut estimate = 0u64;
    for &(_, bl) in &plan.row_blocks {
        for &(_, cl) in &plan.col_blocks {
            let tiles = div_ceil(bl, plan.tile_m).saturating_mul(div_ceil(cl, plan.tile_n));
            let mut per_step = 12u64.saturating_add(plan.tile_m.saturating_add(plan.tile_k));
            if let Some(g) = &spec.b_gather {
                // Per run of K, one copy per group of N (a partial row at each end, whole
                // rows between, split where N's second digit wraps).
                let rows = g.n.inner().0.max(1).saturating_mul(g.n.second().0.max(1));
                let groups = 3 + plan.tile_n / rows;
                per_step = per_step.saturating_add(plan.tile_k.saturating_mul(groups));
            }
            estimate = estimate.saturating_add(
                tiles
                    .saturating_mul(k_count)
                    .saturating_mul(per_step)
                    .saturating_mul(spec.batch),
            );
        }
    }
    if estimate > MAX_INSTRUCTIONS.saturating_mul(4) {
        return Err(GenError::TooManyInstructions {
            count: estimate,
            limit: MAX_INSTRUCTIONS,
        });
    }

    // Per mesh row: its rows of M and its K chunks (with split K, the one row block and the
    // row's K group).
    let groups = if split_k {
        split_blocks(spec.k, plan.k_groups, cfg.mx_k)
    } else {
        vec![(0, spec.k)]
    };
    let mesh_rows: Vec<((u64, u64), (u64, u64))> = if split_k {
        groups.iter().map(|&g| (plan.row_blocks[0], g)).collect()
    } else {
        plan.row_blocks.iter().map(|&r| (r, groups[0])).collect()
    };
    let mut streams = Vec::new();
    let mut total = 0u64;
    for (y, &((r0, rl), (g0, gl))) in mesh_rows.iter().enumerate() {
        for (x, &(c0, cl)) in plan.col_blocks.iter().enumerate() {
            let reduce = match (split_k, y) {
                (false, _) => Reduce::None,
                (true, 0) => Reduce::Receive(plan.k_groups - 1),
                (true, y) => Reduce::Send(y as u64 - 1),
            };
            let q = NodeGen {
                spec,
                plan: &plan,
                lay: &lay,
                hbm: &hbm,
                node: (x as u64, y as u64),
                mesh,
                rows: split_tiles(r0, rl, plan.tile_m, cfg.mx_m),
                cols: split_tiles(c0, cl, plan.tile_n, cfg.mx_n),
                k_chunks: split_tiles(g0, gl, plan.tile_k, cfg.mx_k),
                reduce,
            }
            .generate()?;
            total = total.saturating_add(q.len() as u64);
            if total > MAX_INSTRUCTIONS {
                return Err(GenError::TooManyInstructions {
                    count: total,
                    limit: MAX_INSTRUCTIONS,
                });
            }
            let node = (
                field("node x", x as u64, 255)?,
                field("node y", y as u64, 255)?,
            );
            streams.push(q.into_stream(node));
        }
    }
    Ok(Program { buffers, streams })
}

/// The generator of one node's stream.
struct NodeGen<'a> {
    spec: &'a GemmSpec,
    plan: &'a GemmPlan,
    lay: &'a Layout,
    hbm: &'a Hbm,
    node: (u64, u64),
    mesh: (u64, u64),
    rows: Vec<(u64, u64)>,
    cols: Vec<(u64, u64)>,
    k_chunks: Vec<(u64, u64)>,
    reduce: Reduce,
}

/// A node's part in a split-K reduction ([`GemmPlan::k_groups`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduce {
    None,
    /// Send the partial tile to `(x, 0)`'s landing slot `i`.
    Send(u64),
    /// Add this many partial tiles before the epilogue.
    Receive(u64),
}

impl Reduce {
    fn sends(self) -> bool {
        matches!(self, Reduce::Send(_))
    }

    fn received(self) -> u64 {
        match self {
            Reduce::Receive(n) => n,
            _ => 0,
        }
    }
}

/// A store waiting to be queued on the DMA engine.
struct PendingStore {
    /// The product of the batch.
    batch: u64,
    tile: u64,
    due_step: u64,
    slot: usize,
    row: (u64, u64),
    col: (u64, u64),
}

impl NodeGen<'_> {
    fn generate(&self) -> Result<Queues, GenError> {
        let mut q = Queues::new();
        let (x, y) = self.node;
        let (ea, eb) = (self.spec.a_type.size(), self.spec.b_type.size());
        let mc = self.plan.multicast;
        // With split K, every node of a column reads its own K group of B.
        let b_mc = mc && self.plan.k_groups == 1;
        let a_self = !mc || x == 0;
        let b_self = !b_mc || y == 0;
        let a_send = mc && x == 0 && self.mesh.0 > 1;
        let b_send = b_mc && y == 0 && self.mesh.1 > 1;
        let a_recv = mc && x > 0;
        let b_recv = b_mc && y > 0;
        let credits = u64::from(a_recv) + u64::from(b_recv);
        let sender = self.reduce.sends();
        let bias = self.spec.bias && !sender;
        let epilogue = self.has_epilogue();
        let epi_vectors = !sender
            && self
                .spec
                .epilogue
                .iter()
                .any(|(_, st)| !matches!(st.operand, EpiOperand::Imm(_)));
        // Per tile, the DMA descriptors of its epilogue operands.
        let mut epi_counts: Vec<u64> = Vec::new();
        let n_steps = (self.rows.len() as u64)
            .saturating_mul(self.cols.len() as u64)
            .saturating_mul(self.k_chunks.len() as u64)
            .saturating_mul(self.spec.batch);
        let last_k = self.k_chunks.len().saturating_sub(1);

        let mut pending: VecDeque<PendingStore> = VecDeque::new();
        let mut store_counts: Vec<u64> = Vec::new();
        let mut s = 0u64;
        let mut t = 0u64;
        let (mm_, nn, kk) = (self.spec.m, self.spec.n, self.spec.k);
        for (bi, &row, &col) in (0..self.spec.batch).flat_map(|bi| {
            self.rows
                .iter()
                .flat_map(move |row| self.cols.iter().map(move |col| (bi, row, col)))
        }) {
            {
                // This product's A, B and C in HBM.
                let a_base = add(
                    "A",
                    self.hbm.a,
                    mul("A", mul("A", bi, mul("A", mm_, kk)?)?, ea)?,
                )?;
                let b_base = add(
                    "B",
                    self.hbm.b,
                    mul("B", mul("B", bi, mul("B", kk, nn)?)?, eb)?,
                )?;
                let c = (t % 2) as usize;
                let (m0, tm) = row;
                let (n0, tn) = col;
                for (kc, &(k0, tk)) in self.k_chunks.iter().enumerate() {
                    let p = (s % 2) as usize;
                    let pu = p as u8;
                    let mut loaded = 0u64;
                    // ---- DMA: bias of a new tile (after the store of tile t - 2).
                    if kc == 0 && (bias || epi_vectors) {
                        // The slots of accumulator c are free once tile t - 2 is stored
                        // (its store waits for its epilogue; the DMA queue is in order).
                        while pending.front().is_some_and(|ps| ps.tile + 2 <= t) {
                            if let Some(ps) = pending.pop_front() {
                                self.store(&mut q, &ps, &mut store_counts)?;
                            }
                        }
                    }
                    if kc == 0 && bias {
                        let bias = dma_2d(
                            DmaKind::Load,
                            self.lay.bias[c],
                            add("BIAS", self.hbm.bias, mul("BIAS", n0, 4)?)?,
                            mul("BIAS", tn, 4)?,
                            1,
                            0,
                            0,
                        )?;
                        for d in bias {
                            q.push(Engine::Dma, Op::Dma(d), None, Some(BIAS_LOADED + c as u8))?;
                        }
                    }
                    if kc == 0 && epi_vectors {
                        let mut count = 0u64;
                        let n4 = mul("E", self.spec.n, 4)?;
                        for (i, step) in self.spec.epilogue.iter() {
                            let base = self.hbm.epi[i];
                            let (src, row_len, rows, stride) = match step.operand {
                                EpiOperand::Imm(_) => continue,
                                EpiOperand::AlongN => {
                                    (add("E", base, mul("E", n0, 4)?)?, mul("E", tn, 4)?, 1, 0)
                                }
                                EpiOperand::AlongM => {
                                    (add("E", base, mul("E", m0, 4)?)?, mul("E", tm, 4)?, 1, 0)
                                }
                                EpiOperand::Tile => (
                                    add(
                                        "E",
                                        base,
                                        mul("E", add("E", mul("E", m0, self.spec.n)?, n0)?, 4)?,
                                    )?,
                                    mul("E", tn, 4)?,
                                    tm,
                                    n4,
                                ),
                            };
                            let ds = dma_2d(
                                DmaKind::Load,
                                self.lay.epi[i][c],
                                src,
                                row_len,
                                rows,
                                stride,
                                row_len,
                            )?;
                            count += ds.len() as u64;
                            for d in ds {
                                q.push(Engine::Dma, Op::Dma(d), None, Some(EPI_LOADED + c as u8))?;
                            }
                        }
                        epi_counts.push(count);
                    }
                    // ---- DMA: operand chunks into slot p (after mm(s - 2) read it).
                    let mut first_wait = (s >= 2).then_some(FREE + pu);
                    let mut n_a = 0u64;
                    if a_self {
                        let src = add(
                            "A",
                            a_base,
                            mul("A", add("A", mul("A", m0, self.spec.k)?, k0)?, ea)?,
                        )?;
                        let row_len = mul("A", tk, ea)?;
                        let ds = dma_2d(
                            DmaKind::Load,
                            self.lay.a[p],
                            src,
                            row_len,
                            tm,
                            mul("A", self.spec.k, ea)?,
                            row_len,
                        )?;
                        n_a = ds.len() as u64;
                        let sig = if a_send { A_READY + pu } else { LOADED + pu };
                        for d in ds {
                            q.push(Engine::Dma, Op::Dma(d), first_wait.take(), Some(sig))?;
                        }
                        loaded += if a_send { 1 } else { n_a };
                    }
                    let mut n_b = 0u64;
                    if b_self {
                        let ds = match &self.spec.b_gather {
                            Some(g) => g.chunk_loads(b_base, self.lay.b[p], eb, k0, tk, n0, tn)?,
                            None => {
                                let src = add(
                                    "B",
                                    b_base,
                                    mul("B", add("B", mul("B", k0, self.spec.n)?, n0)?, eb)?,
                                )?;
                                let row_len = mul("B", tn, eb)?;
                                dma_2d(
                                    DmaKind::Load,
                                    self.lay.b[p],
                                    src,
                                    row_len,
                                    tk,
                                    mul("B", self.spec.n, eb)?,
                                    row_len,
                                )?
                            }
                        };
                        n_b = ds.len() as u64;
                        let sig = if b_send { B_READY + pu } else { LOADED + pu };
                        for d in ds {
                            q.push(Engine::Dma, Op::Dma(d), first_wait.take(), Some(sig))?;
                        }
                        loaded += if b_send { 1 } else { n_b };
                    }
                    loaded += u64::from(a_recv) + u64::from(b_recv);
                    while pending.front().is_some_and(|ps| ps.due_step <= s) {
                        if let Some(ps) = pending.pop_front() {
                            self.store(&mut q, &ps, &mut store_counts)?;
                        }
                    }

                    // ---- net: multicasts of this step, then credits of the previous one.
                    if a_send {
                        q.sem_wait(Engine::Net, A_READY + pu, n_a)?;
                        if s >= 2 {
                            q.sem_wait(Engine::Net, CRED_A + pu, self.mesh.0 - 1)?;
                        }
                        let len = mul("A", tk, ea)?;
                        let op =
                            self.mcast(pu, self.lay.a[p], len, tm, (1, y, self.mesh.0 - 1, y))?;
                        q.push(Engine::Net, op, None, Some(LOADED + pu))?;
                    }
                    if b_send {
                        q.sem_wait(Engine::Net, B_READY + pu, n_b)?;
                        if s >= 2 {
                            q.sem_wait(Engine::Net, CRED_B + pu, self.mesh.1 - 1)?;
                        }
                        let len = mul("B", tn, eb)?;
                        let op =
                            self.mcast(pu, self.lay.b[p], len, tk, (x, 1, x, self.mesh.1 - 1))?;
                        q.push(Engine::Net, op, None, Some(LOADED + pu))?;
                    }
                    if s >= 1 && s + 1 < n_steps {
                        self.credits(&mut q, s - 1, a_recv, b_recv)?;
                    }

                    // ---- mx: wait for the accumulator and operands, multiply, hand off.
                    if kc == 0 && t >= 2 {
                        let n = store_counts.get((t - 2) as usize).copied().unwrap_or(0);
                        q.sem_wait(Engine::Mx, CFREE + c as u8, n)?;
                    }
                    q.sem_wait(Engine::Mx, LOADED + pu, loaded)?;
                    let mm = Matmul {
                        dst: field("C slot", self.lay.c[c], MAX_24)?,
                        a: field("A slot", self.lay.a[p], MAX_24)?,
                        b: field("B slot", self.lay.b[p], MAX_24)?,
                        m: field("mm m", tm, MAX_12)?,
                        n: field("mm n", tn, MAX_12)?,
                        k: field("mm k", tk, MAX_12)?,
                        lda: field("lda", mul("lda", tk, ea)?, MAX_24)?,
                        ldb: field("ldb", mul("ldb", tn, eb)?, MAX_24)?,
                        ldc: field("ldc", mul("ldc", tn, 4)?, MAX_24)?,
                        atype: self.spec.a_type,
                        btype: self.spec.b_type,
                        acc: kc > 0,
                    };
                    let sig = (a_self || b_self).then_some(FREE + pu);
                    q.push(Engine::Mx, Op::Matmul(mm), None, sig)?;
                    if s + 2 < n_steps {
                        q.sem_signal(Engine::Mx, CREDIT_GO + pu, credits)?;
                    }
                    if kc == last_k && sender {
                        q.sem_signal(Engine::Mx, TDONE, 1)?;
                        self.send_partial(&mut q, c, tm, tn)?;
                    } else if kc == last_k {
                        q.sem_signal(Engine::Mx, TDONE, 1)?;
                        if epilogue {
                            let loads = epi_counts.get(t as usize).copied().unwrap_or(0);
                            self.epilogue(&mut q, c, tm, tn, loads)?;
                        }
                        pending.push_back(PendingStore {
                            batch: bi,
                            tile: t,
                            due_step: s + 2,
                            slot: c,
                            row,
                            col,
                        });
                    }
                    s += 1;
                }
                t += 1;
            }
        }
        while let Some(ps) = pending.pop_front() {
            self.store(&mut q, &ps, &mut store_counts)?;
        }
        Ok(q)
    }

    /// A multicast of `rows` rows of `len` bytes at `addr` to the same address on the nodes
    /// of `rect`, giving each one token of `LOADED[p]` on arrival.
    fn mcast(
        &self,
        parity: u8,
        addr: u64,
        len: u64,
        rows: u64,
        rect: (u64, u64, u64, u64),
    ) -> Result<Op, GenError> {
        let a = field("mcast address", addr, MAX_24)?;
        Ok(Op::Send(Send {
            dst: a,
            src: a,
            len: field("mcast row", len, MAX_24)?,
            n1: field("mcast rows", rows, MAX_12)?,
            src_stride: field("mcast stride", len, MAX_24)?,
            dst_stride: field("mcast stride", len, MAX_24)?,
            dest: Dest::Rect {
                x0: field("x", rect.0, 255)?,
                y0: field("y", rect.1, 255)?,
                x1: field("x", rect.2, 255)?,
                y1: field("y", rect.3, 255)?,
            },
            rsem: Some(LOADED + parity),
        }))
    }

    /// The credits a receiver sends after `mm(step)`: slot `step mod 2` is free again.
    fn credits(
        &self,
        q: &mut Queues,
        step: u64,
        a_recv: bool,
        b_recv: bool,
    ) -> Result<(), GenError> {
        let p = step % 2;
        let (x, y) = self.node;
        let mut one = |to: (u64, u64), index: u64, rsem: u8| -> Result<(), GenError> {
            let land = add(
                "credit",
                self.lay.credit_land,
                mul("credit", add("credit", mul("credit", index, 2)?, p)?, 4)?,
            )?;
            let op = Op::Send(Send {
                dst: field("credit address", land, MAX_24)?,
                src: field("credit address", self.lay.credit_src, MAX_24)?,
                len: 4,
                n1: 1,
                src_stride: 0,
                dst_stride: 0,
                dest: Dest::Node {
                    x: field("x", to.0, 255)?,
                    y: field("y", to.1, 255)?,
                },
                rsem: Some(rsem + p as u8),
            });
            q.push(Engine::Net, op, Some(CREDIT_GO + p as u8), None)
        };
        if a_recv {
            one((0, y), x, CRED_A)?;
        }
        if b_recv {
            one((x, 0), add("credit", self.mesh.0, y)?, CRED_B)?;
        }
        Ok(())
    }

    /// The vector epilogue of accumulator `c` (`tm × tn`): bias row, the epilogue's steps
    /// (after `loads` descriptors of their operands arrived), ReLU.
    fn epilogue(
        &self,
        q: &mut Queues,
        c: usize,
        tm: u64,
        tn: u64,
        loads: u64,
    ) -> Result<(), GenError> {
        let cs = field("C slot", self.lay.c[c], MAX_24)?;
        let pitch = field("C pitch", mul("C pitch", tn, 4)?, MAX_24)?;
        let rows = field("vector rows", tm, MAX_12)?;
        let cols = field("vector cols", tn, MAX_12)?;
        let base = VBinary {
            op: BinOp::Add,
            dst: cs,
            src1: cs,
            src2: 0,
            rows,
            cols,
            dpitch: pitch,
            pitch1: pitch,
            pitch2: 0,
            itype: ElemType::F32,
            otype: ElemType::F32,
            bcast: Bcast::Imm,
            imm: 0,
            sr: false,
        };
        let mut ops = Vec::new();
        let parts = self.reduce.received();
        if parts > 0 {
            // Split K: the other groups' partial tiles, in group order.
            q.sem_wait(Engine::Vx, PART, parts)?;
            let size = mul("partials", mul("partials", tm, tn)?, 4)?;
            for i in 0..parts {
                let slot = add("partials", self.lay.part, mul("partials", i, size)?)?;
                ops.push(VBinary {
                    src2: field("partial slot", slot, MAX_24)?,
                    bcast: Bcast::Tile,
                    pitch2: pitch,
                    ..base
                });
            }
        }
        if self.spec.bias {
            q.sem_wait(Engine::Vx, BIAS_LOADED + c as u8, 1)?;
            ops.push(VBinary {
                src2: field("bias slot", self.lay.bias[c], MAX_24)?,
                bcast: Bcast::Row,
                ..base
            });
        }
        if loads > 0 {
            q.sem_wait(Engine::Vx, EPI_LOADED + c as u8, loads)?;
        }
        for (i, step) in self.spec.epilogue.iter() {
            let slot = field("epilogue slot", self.lay.epi[i][c], MAX_24)?;
            ops.push(match step.operand {
                EpiOperand::Imm(bits) => VBinary {
                    op: step.op,
                    imm: bits,
                    ..base
                },
                EpiOperand::AlongN => VBinary {
                    op: step.op,
                    src2: slot,
                    bcast: Bcast::Row,
                    ..base
                },
                EpiOperand::AlongM => VBinary {
                    op: step.op,
                    src2: slot,
                    bcast: Bcast::Col,
                    pitch2: 0,
                    ..base
                },
                EpiOperand::Tile => VBinary {
                    op: step.op,
                    src2: slot,
                    bcast: Bcast::Tile,
                    pitch2: pitch,
                    ..base
                },
            });
        }
        if self.spec.relu {
            ops.push(VBinary {
                op: BinOp::Max,
                imm: 0f32.to_bits(),
                ..base
            });
        }
        let last = ops.len().saturating_sub(1);
        for (i, op) in ops.into_iter().enumerate() {
            let wait = (i == 0).then_some(TDONE);
            let signal = (i == last).then_some(EDONE);
            q.push(Engine::Vx, Op::VBinary(op), wait, signal)?;
        }
        Ok(())
    }

    /// Whether finished tiles go through the vector engine before their store (bias, ReLU,
    /// epilogue steps, split-K partial sums); never on a node that sends its partials.
    fn has_epilogue(&self) -> bool {
        !self.reduce.sends()
            && (self.spec.bias
                || self.spec.relu
                || !self.spec.epilogue.is_empty()
                || self.reduce.received() > 0)
    }

    /// Split K: the partial accumulator tile `c` sent to `(x, 0)`'s landing slot once the
    /// tile's last `mm` is done.
    fn send_partial(&self, q: &mut Queues, c: usize, tm: u64, tn: u64) -> Result<(), GenError> {
        let Reduce::Send(i) = self.reduce else {
            return Ok(());
        };
        let row = mul("partials", tn, 4)?;
        let land = add(
            "partials",
            self.lay.part,
            mul("partials", i, mul("partials", tm, row)?)?,
        )?;
        let op = Op::Send(Send {
            dst: field("partial slot", land, MAX_24)?,
            src: field("C slot", self.lay.c[c], MAX_24)?,
            len: field("partial row", row, MAX_24)?,
            n1: field("partial rows", tm, MAX_12)?,
            src_stride: field("partial row", row, MAX_24)?,
            dst_stride: field("partial row", row, MAX_24)?,
            dest: Dest::Node {
                x: field("x", self.node.0, 255)?,
                y: 0,
            },
            rsem: Some(PART),
        });
        q.push(Engine::Net, op, Some(TDONE), None)
    }

    /// The DMA store of a finished tile; records how many descriptors signal `CFREE[c]`.
    fn store(
        &self,
        q: &mut Queues,
        ps: &PendingStore,
        counts: &mut Vec<u64>,
    ) -> Result<(), GenError> {
        let (m0, tm) = ps.row;
        let (n0, tn) = ps.col;
        let epilogue = self.has_epilogue();
        let c_base = add(
            "C",
            self.hbm.c,
            mul(
                "C",
                mul("C", ps.batch, mul("C", self.spec.m, self.spec.n)?)?,
                4,
            )?,
        )?;
        let dst = add(
            "C",
            c_base,
            mul("C", add("C", mul("C", m0, self.spec.n)?, n0)?, 4)?,
        )?;
        let row_len = mul("C", tn, 4)?;
        let ds = dma_2d(
            DmaKind::Store,
            dst,
            self.lay.c[ps.slot],
            row_len,
            tm,
            row_len,
            mul("C", self.spec.n, 4)?,
        )?;
        let mut wait = Some(if epilogue { EDONE } else { TDONE });
        let n = ds.len() as u64;
        for d in ds {
            q.push(
                Engine::Dma,
                Op::Dma(d),
                wait.take(),
                Some(CFREE + ps.slot as u8),
            )?;
        }
        let idx = ps.tile as usize;
        if counts.len() <= idx {
            counts.resize(idx + 1, 0);
        }
        counts[idx] = n;
        Ok(())
    }
}
