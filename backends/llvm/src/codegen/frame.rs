//! Loads that can leave their buffer read a *frame* instead: a copy of the part of the input
//! they can reach, with the fill value around it, made once per run by a copy phase of its
//! own. The loads then check no bounds, and their loops vectorize (a max pool's window over a
//! padded input ran 7x slower than onnxruntime's, its row check keeping LLVM from
//! vectorizing). Convolutions read in place use it too (`gemm::Direct`).

use inkwell::IntPredicate;
use inkwell::values::{FunctionValue, IntValue};
use terafab_ir::DType;
use terafab_ir::kernel::{BufferId, Expr, KernelProgram, LoopNest, Stage, Var};

use super::gemm::{begin_task_fn, clamp, end_inner, trampoline};
use super::{CodegenError, Fn, Gen};

type R<T> = Result<T, CodegenError>;

/// The padded copy of an input: the box of positions a load with a fill can reach, the fill
/// value where the input has no element.
pub(crate) struct Frame {
    /// The input's shape and strides, and the box's first index and extent on each dim.
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub lo: Vec<i64>,
    pub extents: Vec<usize>,
    pub fill: terafab_ir::Tensor,
    /// The last dim split into this many phases (1: none): position `j` of a row is stored at
    /// `(j % split) * (row / split) + j / split`, so that a stride-`split` access along it is
    /// a run of consecutive elements (a strided convolution's pixels read as B).
    pub split: usize,
}

/// Frames larger than this many elements are not made.
pub(crate) const MAX_FRAME: usize = 1 << 28;

impl Frame {
    pub fn elems(&self) -> usize {
        let rank = self.extents.len();
        self.extents[..rank - 1].iter().product::<usize>() * self.row_len()
    }

    /// The elements of a row: the last dim's extent, rounded up to whole phases.
    fn row_len(&self) -> usize {
        let last = self.extents[self.extents.len() - 1];
        last.div_ceil(self.split) * self.split
    }

    /// The offset in its row of a row's position `j`.
    pub fn in_row(&self, j: i64) -> i64 {
        let s = self.split as i64;
        (j % s) * (self.row_len() as i64 / s) + j / s
    }

    /// Row-major strides of the frame (the last dim's is 1, before its phase split).
    pub fn frame_strides(&self) -> Vec<usize> {
        let rank = self.extents.len();
        let mut st = vec![1usize; rank];
        for d in (0..rank.saturating_sub(1)).rev() {
            st[d] = if d == rank - 2 {
                self.row_len()
            } else {
                st[d + 1] * self.extents[d + 1]
            };
        }
        st
    }

    /// Rows (all dims but the last) and the rows per copy task: at most 64 tasks of at least
    /// 8192 elements (as `terafab_runtime::split_tasks`, so that the claims and the cache lines
    /// shared between tasks cost little next to the copy).
    fn rows(&self) -> (usize, usize) {
        let rows: usize = self.extents[..self.extents.len() - 1].iter().product();
        let last = self.extents[self.extents.len() - 1].max(1);
        (rows, rows.div_ceil(64).max(8192usize.div_ceil(last)).max(1))
    }

    pub fn tasks(&self) -> usize {
        let (rows, per) = self.rows();
        rows.div_ceil(per)
    }
}

/// A frame's copy task (phase `phase`): copies rows `task * per ..` of the frame (all dims but
/// the last) from `src`, the fill value where the input has no element. Each row is one
/// contiguous copy between two fills (when the input's last dim has unit stride and the row
/// has no phase split; else element by element).
pub(crate) fn frame_fn<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    phase: &str,
    src: BufferId,
    dst: BufferId,
    fr: &Frame,
) -> R<FunctionValue<'ctx>> {
    let f32t = g.ctx.f32_type();
    let (mut f, task) = begin_task_fn(g, name, &[src, dst]);
    let fill = g.scalar().constant(&fr.fill)?.into_float_value();
    let rank = fr.extents.len();
    let last = fr.extents[rank - 1] as i64;
    let (rows, per) = fr.rows();
    let r0 = g.b.build_int_mul(task, g.i64(per as i64), "r0")?;
    let r1 = g.b.build_int_add(r0, g.i64(per as i64), "r1")?;
    let r1 = clamp(g, r1, rows as i64)?;
    // The valid part of a row: frame columns `a..b` hold input elements.
    let (lo_l, n_l) = (fr.lo[rank - 1], fr.shape[rank - 1] as i64);
    let a = (-lo_l).clamp(0, last);
    let b = (n_l - lo_l).clamp(a, last);
    let (sp, dp) = (f.ptrs[&src], f.ptrs[&dst]);
    g.range_loop(&mut f, r0, r1, |g, f, row| {
        // The row's input index on each outer dim, and whether all are inside the input.
        let mut rest = row;
        let mut src_off = g.i64(0);
        let mut inside = g.ctx.bool_type().const_int(1, false);
        for d in (0..rank - 1).rev() {
            let e = g.i64(fr.extents[d] as i64);
            let j = if d == 0 {
                rest
            } else {
                let j = g.b.build_int_unsigned_rem(rest, e, "j")?;
                rest = g.b.build_int_unsigned_div(rest, e, "rest")?;
                j
            };
            let i = g.b.build_int_add(j, g.i64(fr.lo[d]), "i")?;
            let ok =
                g.b.build_int_compare(IntPredicate::ULT, i, g.i64(fr.shape[d] as i64), "ok")?;
            inside = g.b.build_and(inside, ok, "inside")?;
            let t = g.b.build_int_mul(i, g.i64(fr.strides[d] as i64), "t")?;
            src_off = g.b.build_int_add(src_off, t, "so")?;
        }
        let dst_row = g.b.build_int_mul(row, g.i64(fr.row_len() as i64), "drow")?;
        let (split, phase_len) = (fr.split as i64, (fr.row_len() / fr.split) as i64);
        let put = |g: &mut Gen<'_, 'ctx>, j: IntValue<'ctx>, v| -> R<()> {
            let j = if split > 1 {
                let ph = g.b.build_int_unsigned_rem(j, g.i64(split), "ph")?;
                let ph = g.b.build_int_mul(ph, g.i64(phase_len), "ph")?;
                let q = g.b.build_int_unsigned_div(j, g.i64(split), "q")?;
                g.b.build_int_add(ph, q, "j")?
            } else {
                j
            };
            let o = g.b.build_int_add(dst_row, j, "o")?;
            let p = unsafe { g.b.build_in_bounds_gep(f32t, dp, &[o], "d")? };
            g.b.build_store(p, v)?;
            Ok(())
        };
        let fill_range = |g: &mut Gen<'_, 'ctx>, f: &mut Fn<'ctx>, from: i64, to: i64| {
            if from >= to {
                return Ok(());
            }
            g.range_loop(f, g.i64(from), g.i64(to), |g, _f, j| put(g, j, fill.into()))
        };
        let stride_l = fr.strides[rank - 1] as i64;
        g.if_else(
            f,
            inside,
            ["row.copy", "row.fill", "row.done"],
            |g, f| {
                fill_range(g, f, 0, a)?;
                g.range_loop(f, g.i64(a), g.i64(b), |g, _f, j| {
                    let i = g.b.build_int_add(j, g.i64(lo_l), "i")?;
                    let t = g.b.build_int_mul(i, g.i64(stride_l), "t")?;
                    let o = g.b.build_int_add(src_off, t, "o")?;
                    let p = unsafe { g.b.build_in_bounds_gep(f32t, sp, &[o], "s")? };
                    let v = g.b.build_load(f32t, p, "v")?;
                    put(g, j, v)
                })?;
                fill_range(g, f, b, last)
            },
            |g, f| fill_range(g, f, 0, last),
        )
    })?;
    end_inner(g, phase, f)
}

/// The frame a loop nest's loads with a fill read instead of their buffer, when it pays: the
/// first f32 buffer some load with a fill can leave, the box every load of it with that fill
/// reaches, if the nest loads from it at least twice per frame element (a window that
/// overlaps itself, a pool; not a pad, which would copy twice) and the frame is at most four
/// times the buffer.
pub(crate) fn plan(p: &KernelProgram, nest: &LoopNest) -> Option<(BufferId, Frame)> {
    /// The loads of one buffer with one fill.
    struct Found {
        buffer: BufferId,
        fill: terafab_ir::Tensor,
        /// Each dim's range over all of them.
        ranges: Vec<(i64, i64)>,
        /// Loads per run.
        loads: usize,
        /// Whether one leaves the buffer.
        leaves: bool,
    }
    let space: usize = nest.space.iter().product();
    let mut found: Option<Found> = None;
    for s in &nest.stages {
        let (vars, e) = match s {
            Stage::Reduce { vars, body, .. } => (vars, body),
            Stage::Store { vars, value, .. } => (vars, value),
        };
        let extent = |v: Var| {
            vars.iter()
                .find(|x| x.0 == v)
                .map(|x| x.1)
                .or_else(|| nest.space.get(v.0 as usize).copied())
        };
        let points = vars
            .iter()
            .map(|v| v.1)
            .product::<usize>()
            .saturating_mul(space);
        e.walk(&mut |x| {
            let Expr::Load {
                buffer,
                index,
                fill: Some(fill),
            } = x
            else {
                return;
            };
            let buf = p.buffer(*buffer);
            if buf.dtype != DType::F32 || index.len() != buf.shape.len() || index.is_empty() {
                return;
            }
            let Some(ranges) = index
                .iter()
                .map(|ix| ix.interval(&extent))
                .collect::<Option<Vec<_>>>()
            else {
                return;
            };
            let leaves = ranges
                .iter()
                .zip(&buf.shape)
                .any(|(&(lo, hi), &n)| lo < 0 || hi >= n as i64);
            match &mut found {
                None => {
                    found = Some(Found {
                        buffer: *buffer,
                        fill: fill.clone(),
                        ranges,
                        loads: points,
                        leaves,
                    })
                }
                Some(fd) if fd.buffer == *buffer && fd.fill.bit_eq(fill) => {
                    for (a, b) in fd.ranges.iter_mut().zip(&ranges) {
                        *a = (a.0.min(b.0), a.1.max(b.1));
                    }
                    fd.loads = fd.loads.saturating_add(points);
                    fd.leaves |= leaves;
                }
                Some(_) => {}
            }
        });
    }
    let Found {
        buffer: src,
        fill,
        ranges,
        loads,
        leaves,
    } = found?;
    let buf = p.buffer(src);
    let frame = Frame {
        shape: buf.shape.clone(),
        strides: buf.strides.clone(),
        lo: ranges.iter().map(|r| r.0).collect(),
        extents: ranges.iter().map(|r| (r.1 - r.0 + 1) as usize).collect(),
        fill,
        split: 1,
    };
    let elems = frame.elems();
    (leaves && elems <= MAX_FRAME && elems <= 4 * buf.len() + (1 << 16) && loads >= 2 * elems)
        .then_some((src, frame))
}

/// `nest` with its loads of `src` with the frame's fill reading the frame `slot` instead:
/// each index shifted by the frame's first position, no fill.
pub(crate) fn reframe(nest: &LoopNest, src: BufferId, slot: BufferId, fr: &Frame) -> LoopNest {
    let to_frame = |e: &Expr| match e {
        Expr::Load {
            buffer,
            index,
            fill: Some(fill),
        } if *buffer == src && fill.bit_eq(&fr.fill) => Some(Expr::Load {
            buffer: slot,
            index: index
                .iter()
                .zip(&fr.lo)
                .map(|(ix, &lo)| ix.clone().offset(-lo))
                .collect(),
            fill: None,
        }),
        _ => None,
    };
    nest.map_exprs(&|e| e.rewrite(&to_frame))
}

/// A loop kernel that reads a frame.
pub(crate) struct FramedLoop {
    /// The nest, reading the frame.
    pub nest: LoopNest,
    /// The frame's buffer slot (in the scratch region).
    pub slot: BufferId,
    /// The copy phase: task name, tasks.
    pub copy: (String, u64),
}

/// The frame of a loop kernel `name` (see [`plan`]), when it has one.
pub(crate) fn frame_loop<'ctx>(
    g: &mut Gen<'_, 'ctx>,
    name: &str,
    nest: &LoopNest,
) -> R<Option<FramedLoop>> {
    let Some((src, fr)) = plan(g.p, nest) else {
        return Ok(None);
    };
    let slot = g.packed.add_scratch(fr.elems() * 4);
    g.views
        .insert(slot, (DType::F32, fr.extents.clone(), fr.frame_strides()));
    let inner = frame_fn(g, &format!("{name}.frame"), "frame", src, slot, &fr)?;
    let task = trampoline(g, &format!("{name}.frame"), inner, &[src, slot])?;
    let task = task.get_name().to_string_lossy().into_owned();
    Ok(Some(FramedLoop {
        nest: reframe(nest, src, slot, &fr),
        slot,
        copy: (task, fr.tasks() as u64),
    }))
}
