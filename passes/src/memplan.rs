//! Liveness-based memory planning: where each intermediate tensor of a function lives in one
//! arena, with the space of dead tensors reused.
//!
//! An analysis: it does not change the IR. [`plan_memory`] returns a [`MemoryPlan`]; the
//! registered pass `memplan` computes the plan, checks it (see [`MemoryPlan::check`]) and
//! reports `changed = false`, so pipelines can exercise the planner.
//!
//! # What is planned
//!
//! The results of the nodes of the function's top-level region. Not planned:
//! - **parameters**: the caller owns their buffers;
//! - **constants** (`constant` nodes, nested regions included): weights, stored apart; their
//!   total is [`MemoryPlan::weights_bytes`];
//! - values defined **inside** `if`/`loop` regions: they belong to the execution of the region
//!   (a later step plans them per region); the `if`/`loop` node's own results are planned.
//!
//! # Live ranges
//!
//! Top-level nodes are numbered `0..n` in order. A value defined by node `i` is live from `i`
//! (its node writes it) to the last node that uses it, inclusive; a use anywhere inside a node's
//! nested regions counts as a use by that node. Results of the function live to `n`, one past
//! the last node (they are handed back to the caller). A value nothing uses lives at `i` only
//! (its node still writes it). Two values *conflict* when their closed ranges intersect: a node's
//! results never share memory with its operands (no in-place reuse at this level).
//!
//! # Offsets: greedy by size, best fit
//!
//! Every buffer takes its byte size rounded up to [`ALIGNMENT`] (64) bytes (its *slot*), and
//! every offset is a multiple of 64. Buffers are placed one at a time, largest slot first (ties:
//! earlier start, then value id, so the plan is deterministic). For each, the already placed
//! buffers that conflict with it are sorted by offset; the gaps between them (and before the
//! first) are the candidates, and the smallest gap that fits wins (lowest offset on ties); if
//! none fits, the buffer goes right after the highest conflicting slot. This is the "greedy by
//! size" strategy of TFLite's arena planner (Pisarchyk & Lee, *Efficient Memory Management for
//! Deep Neural Net Inference*, 2020). The arena size is the highest slot end; the no-reuse total
//! ([`MemoryPlan::unshared_bytes`]) is the sum of all slots.
//!
//! # Symbolic dims
//!
//! Offsets need static sizes: a planned value with a symbolic dim makes [`plan_memory`] return
//! [`MemPlanError::Symbolic`] naming it (bind the dims at load time, e.g. `--dim N=8`); the
//! `memplan` pass skips such functions (there is nothing to check).
//!
//! The planner expects verified IR; a node result missing from the value table is an error
//! ([`MemPlanError::UnknownValue`]), never a panic. Placing `n` buffers costs `O(n^2)` time
//! (each is compared with the ones placed before it).

use std::collections::HashMap;
use std::fmt;

use terafab_ir::{Function, Op, TensorType, ValueId};

use crate::util::node_uses;
use crate::{Pass, PassError};

/// The alignment of every offset and slot, in bytes.
pub const ALIGNMENT: usize = 64;

/// One planned buffer: a value, where it lives in the arena and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffer {
    /// The planned value (in a kernel program's plan, [`crate::fuse::plan_kernel_memory`], the
    /// number of its kernel buffer).
    pub value: ValueId,
    pub name: String,
    /// Byte offset in the arena (a multiple of [`ALIGNMENT`]).
    pub offset: usize,
    /// Size of the tensor in bytes (its slot is this rounded up to [`ALIGNMENT`]).
    pub size: usize,
    /// Index of the top-level node that defines the value.
    pub start: usize,
    /// Index of the last top-level node that uses it, inclusive; the node count for results.
    pub end: usize,
}

impl Buffer {
    /// The bytes reserved for this buffer: its size rounded up to [`ALIGNMENT`].
    pub fn slot(&self) -> usize {
        align_up(self.size)
    }

    /// Whether the two buffers are live at a common node (and so may not share bytes).
    pub fn conflicts(&self, other: &Buffer) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

/// The memory plan of one function (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub function: String,
    /// Number of top-level nodes (results live to this index).
    pub num_nodes: usize,
    /// The arena size: the peak bytes of planned buffers live at once, slots and reuse included.
    pub arena_bytes: usize,
    /// The sum of all slots: the arena size without any reuse.
    pub unshared_bytes: usize,
    /// The bytes of all constants (weights), not planned.
    pub weights_bytes: usize,
    /// The number of constant nodes counted in `weights_bytes`.
    pub num_weights: usize,
    /// The planned buffers, in order of definition.
    pub buffers: Vec<Buffer>,
}

/// Why a function cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemPlanError {
    #[error(
        "cannot plan memory of @{func}: `{value}` has type {ty} with a symbolic dim (bind the dims, e.g. --dim N=8)"
    )]
    Symbolic {
        func: String,
        value: String,
        ty: String,
    },
    #[error(
        "cannot plan memory of @{func}: `{value}` ({ty}) does not fit in the address space (with the buffers before it)"
    )]
    TooLarge {
        func: String,
        value: String,
        ty: String,
    },
    #[error(
        "cannot plan memory of @{func}: a node defines the unknown value %{id} (verify the IR first)"
    )]
    UnknownValue { func: String, id: u32 },
}

/// Round `n` up to a multiple of [`ALIGNMENT`] (saturating: sizes are checked beforehand).
pub(crate) fn align_up(n: usize) -> usize {
    n.div_ceil(ALIGNMENT).saturating_mul(ALIGNMENT)
}

/// The byte size of a value of type `ty`: `Ok(None)` if a dim is symbolic, `Err(())` if it is
/// above `isize::MAX` bytes (so that rounding it up to the alignment cannot overflow).
fn byte_size(ty: &TensorType) -> Result<Option<usize>, ()> {
    if !ty.shape.is_static() {
        return Ok(None);
    }
    ty.shape
        .num_elements()
        .and_then(|n| n.checked_mul(ty.dtype.size_bytes()))
        .filter(|&b| b <= isize::MAX as usize)
        .map(Some)
        .ok_or(())
}

/// The memory plan of `f`'s top-level region (see the module docs).
pub fn plan_memory(f: &Function) -> Result<MemoryPlan, MemPlanError> {
    let n = f.body.nodes.len();
    let mut weights_bytes = 0usize;
    let mut num_weights = 0usize;
    f.walk(&mut |node| {
        if let Op::Constant { value } = &node.op {
            num_weights += 1;
            weights_bytes = weights_bytes.saturating_add(value.size_bytes());
        }
    });

    // Live ranges of the planned values, in order of definition.
    let mut buffers: Vec<Buffer> = Vec::new();
    let mut index: HashMap<ValueId, usize> = HashMap::new();
    let mut uses = Vec::new();
    let mut unshared_bytes = 0usize;
    for (i, node) in f.body.nodes.iter().enumerate() {
        uses.clear();
        node_uses(node, &mut uses);
        for v in &uses {
            if let Some(&b) = index.get(v) {
                buffers[b].end = buffers[b].end.max(i);
            }
        }
        if matches!(node.op, Op::Constant { .. }) {
            continue;
        }
        for &v in &node.outputs {
            let Some(info) = f.values.get_checked(v) else {
                return Err(MemPlanError::UnknownValue {
                    func: f.name.clone(),
                    id: v.0,
                });
            };
            let func = || f.name.clone();
            let (value, ty) = (|| info.name.clone(), || info.ty.to_string());
            // The sum of all slots bounds every offset and the arena: checking it once here
            // keeps the rest of the planner free of overflow.
            let size = match byte_size(&info.ty) {
                Ok(Some(s)) if unshared_bytes.checked_add(align_up(s)).is_some() => {
                    unshared_bytes += align_up(s);
                    s
                }
                Ok(None) => {
                    let (func, value, ty) = (func(), value(), ty());
                    return Err(MemPlanError::Symbolic { func, value, ty });
                }
                Ok(Some(_)) | Err(()) => {
                    let (func, value, ty) = (func(), value(), ty());
                    return Err(MemPlanError::TooLarge { func, value, ty });
                }
            };
            index.insert(v, buffers.len());
            buffers.push(Buffer {
                value: v,
                name: info.name.clone(),
                offset: 0,
                size,
                start: i,
                end: i,
            });
        }
    }
    for v in &f.body.results {
        if let Some(&b) = index.get(v) {
            buffers[b].end = n;
        }
    }

    let arena_bytes = assign_offsets(&mut buffers);
    Ok(MemoryPlan {
        function: f.name.clone(),
        num_nodes: n,
        arena_bytes,
        unshared_bytes,
        weights_bytes,
        num_weights,
        buffers,
    })
}

/// Greedy by size, best fit (see the module docs); returns the arena size.
pub(crate) fn assign_offsets(buffers: &mut [Buffer]) -> usize {
    let mut order: Vec<usize> = (0..buffers.len()).collect();
    order.sort_by_key(|&i| {
        let b = &buffers[i];
        (std::cmp::Reverse(b.slot()), b.start, b.value)
    });
    let mut placed: Vec<usize> = Vec::with_capacity(buffers.len());
    let mut arena = 0;
    for &i in &order {
        let b = &buffers[i];
        let mut conflicting: Vec<(usize, usize)> = placed
            .iter()
            .map(|&j| &buffers[j])
            .filter(|o| o.conflicts(b))
            .map(|o| (o.offset, o.offset + o.slot()))
            .collect();
        conflicting.sort_unstable();
        let slot = b.slot();
        let mut best: Option<(usize, usize)> = None; // (gap, offset)
        let mut prev_end = 0;
        for (off, end) in conflicting {
            if off >= prev_end {
                let gap = off - prev_end;
                if gap >= slot && best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, prev_end));
                }
            }
            prev_end = prev_end.max(end);
        }
        let offset = best.map_or(prev_end, |(_, o)| o);
        buffers[i].offset = offset;
        arena = arena.max(offset + slot);
        placed.push(i);
    }
    arena
}

impl MemoryPlan {
    /// Check the plan's invariants: offsets aligned, every slot inside the arena, no two
    /// conflicting buffers sharing a byte, and the totals consistent. The error names the
    /// first violation.
    pub fn check(&self) -> Result<(), String> {
        let mut sum = 0usize;
        for b in &self.buffers {
            if b.offset % ALIGNMENT != 0 {
                return Err(format!(
                    "`{}` at offset {} is not aligned",
                    b.name, b.offset
                ));
            }
            if b.start > b.end || b.end > self.num_nodes {
                return Err(format!(
                    "`{}` has the bad live range {}..={}",
                    b.name, b.start, b.end
                ));
            }
            if b.offset + b.slot() > self.arena_bytes {
                return Err(format!(
                    "`{}` ends at byte {}, past the arena ({} bytes)",
                    b.name,
                    b.offset + b.slot(),
                    self.arena_bytes
                ));
            }
            sum += b.slot();
        }
        if sum != self.unshared_bytes || self.arena_bytes > sum {
            return Err(format!(
                "totals disagree: arena {} bytes, slots {} bytes, recorded {}",
                self.arena_bytes, sum, self.unshared_bytes
            ));
        }
        let mut by_offset: Vec<&Buffer> = self.buffers.iter().collect();
        by_offset.sort_by_key(|b| b.offset);
        for (i, a) in by_offset.iter().enumerate() {
            let a_end = a.offset + a.slot();
            for b in by_offset[i + 1..].iter().take_while(|b| b.offset < a_end) {
                if a.conflicts(b) && b.slot() > 0 && a.slot() > 0 {
                    return Err(format!(
                        "`{}` (bytes {}..{}, nodes {}..={}) and `{}` (bytes {}..{}, nodes {}..={}) overlap",
                        a.name,
                        a.offset,
                        a_end,
                        a.start,
                        a.end,
                        b.name,
                        b.offset,
                        b.offset + b.slot(),
                        b.start,
                        b.end
                    ));
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for MemoryPlan {
    /// A summary, then one line per buffer: name, offset, size and live range.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let saved = if self.unshared_bytes == 0 {
            0.0
        } else {
            100.0 * (1.0 - self.arena_bytes as f64 / self.unshared_bytes as f64)
        };
        writeln!(
            f,
            "memory plan of @{}: {} nodes, {} buffers",
            self.function,
            self.num_nodes,
            self.buffers.len()
        )?;
        writeln!(
            f,
            "  arena (peak):   {:>14} bytes ({ALIGNMENT}-byte aligned)",
            self.arena_bytes
        )?;
        writeln!(
            f,
            "  without reuse:  {:>14} bytes (reuse saves {saved:.1}%)",
            self.unshared_bytes
        )?;
        writeln!(
            f,
            "  weights:        {:>14} bytes in {} constants (not planned)",
            self.weights_bytes, self.num_weights
        )?;
        let width = self
            .buffers
            .iter()
            .map(|b| b.name.len())
            .max()
            .unwrap_or(0)
            .max("value".len());
        write!(
            f,
            "{:<width$}  {:>12}  {:>12}  live",
            "value", "offset", "size"
        )?;
        for b in &self.buffers {
            let end = if b.end == self.num_nodes {
                "end".to_string()
            } else {
                b.end.to_string()
            };
            write!(
                f,
                "\n{:<width$}  {:>12}  {:>12}  {}..={end}",
                b.name, b.offset, b.size, b.start
            )?;
        }
        Ok(())
    }
}

/// The `memplan` pass: plans and checks; never changes the IR. Functions with symbolic dims
/// are skipped.
pub struct MemPlan;

impl Pass for MemPlan {
    fn name(&self) -> &'static str {
        "memplan"
    }

    fn run(&self, f: &mut Function) -> Result<bool, PassError> {
        let failed = |message: String| PassError::Failed {
            pass: "memplan".into(),
            func: f.name.clone(),
            message,
        };
        match plan_memory(f) {
            Ok(plan) => plan.check().map_err(failed)?,
            Err(MemPlanError::Symbolic { .. }) => {}
            Err(e) => return Err(failed(e.to_string())),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use terafab_ir::graph::push_node;
    use terafab_ir::{BinaryOp, DType, Dim, Region, Shape, Tensor, UnaryOp};

    /// `f32[n]`: `4n` bytes.
    fn ty(n: usize) -> TensorType {
        TensorType::from_static(DType::F32, &[n])
    }

    /// Append a node with one result.
    fn push1(f: &mut Function, op: Op, inputs: Vec<ValueId>, t: TensorType, name: &str) -> ValueId {
        f.push(op, inputs, vec![t], &[name], vec![], None)[0]
    }

    fn unary(f: &mut Function, x: ValueId, name: &str) -> ValueId {
        let t = f.values.ty(x).clone();
        push1(f, Op::Unary(UnaryOp::Exp), vec![x], t, name)
    }

    fn add(f: &mut Function, a: ValueId, b: ValueId, name: &str) -> ValueId {
        let t = f.values.ty(a).clone();
        push1(f, Op::Binary(BinaryOp::Add), vec![a, b], t, name)
    }

    fn buf<'a>(p: &'a MemoryPlan, name: &str) -> &'a Buffer {
        p.buffers.iter().find(|b| b.name == name).unwrap()
    }

    fn plan(f: &Function) -> MemoryPlan {
        terafab_ir::verify::verify_function(f).unwrap();
        let p = plan_memory(f).unwrap();
        p.check().unwrap();
        p
    }

    #[test]
    fn elementwise_chain_needs_two_buffers() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(16));
        let a = unary(&mut f, x, "a");
        let b = unary(&mut f, a, "b");
        let c = unary(&mut f, b, "c");
        let d = unary(&mut f, c, "d");
        f.add_output("d", d);
        let p = plan(&f);
        let offs: Vec<(usize, usize, usize)> = p
            .buffers
            .iter()
            .map(|b| (b.offset, b.start, b.end))
            .collect();
        assert_eq!(offs, [(0, 0, 1), (64, 1, 2), (0, 2, 3), (64, 3, 4)]);
        assert_eq!(p.arena_bytes, 128);
        assert_eq!(p.unshared_bytes, 256);
        assert_eq!(p.weights_bytes, 0);
    }

    #[test]
    fn diamond_keeps_both_branches_live() {
        // a = exp(x); b = exp(a); c = exp(a); d = b + c
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(32)); // 128 bytes
        let a = unary(&mut f, x, "a");
        let b = unary(&mut f, a, "b");
        let c = unary(&mut f, a, "c");
        let d = add(&mut f, b, c, "d");
        f.add_output("d", d);
        let p = plan(&f);
        assert_eq!((buf(&p, "a").start, buf(&p, "a").end), (0, 2));
        assert_eq!((buf(&p, "b").start, buf(&p, "b").end), (1, 3));
        // a, b and c are live at node 2; d reuses a's bytes.
        assert_eq!(buf(&p, "a").offset, 0);
        assert_eq!(buf(&p, "b").offset, 128);
        assert_eq!(buf(&p, "c").offset, 256);
        assert_eq!(buf(&p, "d").offset, 0);
        assert_eq!(p.arena_bytes, 384);
        assert_eq!(p.unshared_bytes, 512);
    }

    #[test]
    fn a_value_used_inside_an_if_region_stays_live() {
        let mut f = Function::new("main");
        let cond = f.add_input("cond", TensorType::scalar(DType::Bool));
        let x = f.add_input("x", ty(16));
        let cap = unary(&mut f, x, "cap"); // node 0, used only inside the region of node 3
        let a = unary(&mut f, x, "a"); // node 1
        let b = unary(&mut f, a, "b"); // node 2
        let mut then_r = Region::default();
        let inner = push_node(
            &mut f.values,
            &mut then_r,
            Op::Binary(BinaryOp::Add),
            vec![cap, b],
            vec![ty(16)],
            &["inner"],
            vec![],
            None,
        );
        then_r.results = inner;
        let else_r = Region {
            params: vec![],
            nodes: vec![],
            results: vec![x],
        };
        let r = f.push(
            Op::If,
            vec![cond],
            vec![ty(16)],
            &["r"],
            vec![then_r, else_r],
            None,
        )[0];
        f.add_output("r", r);
        let p = plan(&f);
        assert_eq!((buf(&p, "cap").start, buf(&p, "cap").end), (0, 3));
        assert_eq!((buf(&p, "b").start, buf(&p, "b").end), (2, 3));
        // `inner` is defined inside the region: not planned here.
        assert!(p.buffers.iter().all(|b| b.name != "inner"));
        // cap, a, b all conflict with cap; r reuses a's bytes (a died at node 2).
        assert_ne!(buf(&p, "cap").offset, buf(&p, "b").offset);
        assert_eq!(buf(&p, "r").offset, buf(&p, "a").offset);
        assert_eq!(p.arena_bytes, 192);
    }

    #[test]
    fn results_live_to_the_end() {
        // y = exp(x) is a result computed first; the chain after it cannot reuse its bytes.
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(16));
        let y = unary(&mut f, x, "y");
        let a = unary(&mut f, x, "a");
        let b = unary(&mut f, a, "b");
        let c = unary(&mut f, b, "c");
        f.add_output("y", y);
        f.add_output("c", c);
        let p = plan(&f);
        assert_eq!((buf(&p, "y").start, buf(&p, "y").end), (0, 4));
        assert_eq!((buf(&p, "c").start, buf(&p, "c").end), (3, 4));
        assert_eq!(buf(&p, "y").offset, 0);
        assert!(p.buffers[1..].iter().all(|b| b.offset != 0));
        assert_eq!(p.arena_bytes, 192);
    }

    #[test]
    fn slots_are_aligned() {
        // u8 tensors of 1, 100 and 3 bytes: slots of 64, 128 and 64 bytes.
        let u8s = |n| TensorType::from_static(DType::U8, &[n]);
        let mut f = Function::new("main");
        let x = f.add_input("x", u8s(3));
        let slice = Op::Slice {
            start: vec![0],
            limit: vec![1],
            stride: vec![1],
        };
        let one = push1(&mut f, slice, vec![x], u8s(1), "one");
        let shape = Shape::from_static(&[100]);
        let big = push1(&mut f, Op::Broadcast { shape }, vec![one], u8s(100), "big");
        let y = push1(&mut f, Op::Unary(UnaryOp::Neg), vec![x], u8s(3), "y");
        f.add_output("big", big);
        f.add_output("y", y);
        let p = plan(&f);
        assert_eq!(buf(&p, "big").size, 100);
        assert_eq!(buf(&p, "big").slot(), 128);
        assert!(p.buffers.iter().all(|b| b.offset % ALIGNMENT == 0));
        // big (nodes 1..=3) first at 0; one (0..=1) conflicts with it: 128; y (2..=3)
        // conflicts with big only and takes one's freed slot.
        assert_eq!(buf(&p, "big").offset, 0);
        assert_eq!(buf(&p, "one").offset, 128);
        assert_eq!(buf(&p, "y").offset, 128);
        assert_eq!(p.arena_bytes, 192);
        assert_eq!(p.unshared_bytes, 256);
    }

    #[test]
    fn best_fit_picks_the_smallest_gap() {
        // h1 and h2 die at node 0, leaving free gaps of 128 bytes (0..128) and 64 bytes
        // (192..256) between p1 and p2; z (64 bytes, node 1) takes the smaller one.
        let spec = [
            ("h1", 128, 0, 0),
            ("p1", 64, 0, 1),
            ("h2", 64, 0, 0),
            ("p2", 64, 0, 1),
            ("z", 64, 1, 1),
        ];
        let mut bufs: Vec<Buffer> = spec
            .iter()
            .enumerate()
            .map(|(i, &(name, size, start, end))| Buffer {
                value: ValueId(i as u32),
                name: name.into(),
                offset: 0,
                size,
                start,
                end,
            })
            .collect();
        let arena = assign_offsets(&mut bufs);
        let offsets: Vec<usize> = bufs.iter().map(|b| b.offset).collect();
        assert_eq!(offsets, [0, 128, 192, 256, 192]);
        assert_eq!(arena, 320);
    }

    #[test]
    fn constants_are_weights_and_parameters_are_not_planned() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(16));
        let w = f.push(
            Op::Constant {
                value: Tensor::from_vec(vec![16], vec![1.0f32; 16]).unwrap(),
            },
            vec![],
            vec![ty(16)],
            &["w"],
            vec![],
            None,
        )[0];
        let y = add(&mut f, x, w, "y");
        f.add_output("y", y);
        f.add_output("x", x);
        let p = plan(&f);
        assert_eq!(p.weights_bytes, 64);
        assert_eq!(p.num_weights, 1);
        assert_eq!(p.buffers.len(), 1);
        assert_eq!((buf(&p, "y").start, buf(&p, "y").end), (1, 2));
        let text = p.to_string();
        assert!(text.contains("arena (peak):"), "{text}");
        assert!(text.contains("1..=end"), "{text}");
        assert!(!MemPlan.run(&mut f).unwrap());
    }

    #[test]
    fn symbolic_dims_are_an_error_and_the_pass_skips_them() {
        let mut f = Function::new("main");
        let sym = TensorType::new(DType::F32, Shape::new(vec![Dim::Sym("N".into())]));
        let x = f.add_input("x", sym);
        let y = unary(&mut f, x, "y");
        f.add_output("y", y);
        let e = plan_memory(&f).unwrap_err();
        assert!(matches!(e, MemPlanError::Symbolic { .. }));
        assert!(e.to_string().contains("`y`"), "{e}");
        assert!(!MemPlan.run(&mut f).unwrap());
    }

    #[test]
    fn huge_sizes_are_an_error() {
        let mut f = Function::new("main");
        let x = f.add_input(
            "x",
            TensorType::from_static(DType::F64, &[1 << 40, 1 << 30]),
        );
        let y = unary(&mut f, x, "y");
        f.add_output("y", y);
        assert!(matches!(
            plan_memory(&f),
            Err(MemPlanError::TooLarge { .. })
        ));
        assert!(MemPlan.run(&mut f).is_err());
        // Each fits, their sum does not.
        let mut f = Function::new("main");
        let x = f.add_input("x", TensorType::from_static(DType::U8, &[1 << 62]));
        let mut v = x;
        for i in 0..5 {
            v = unary(&mut f, v, &format!("v{i}"));
        }
        f.add_output("v", v);
        assert!(matches!(
            plan_memory(&f),
            Err(MemPlanError::TooLarge { .. })
        ));
    }

    #[test]
    fn unverified_ir_is_an_error_not_a_panic() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(16));
        let y = unary(&mut f, x, "y");
        f.add_output("y", y);
        f.body.nodes[0].outputs = vec![ValueId(99)];
        let e = plan_memory(&f).unwrap_err();
        assert!(
            matches!(e, MemPlanError::UnknownValue { id: 99, .. }),
            "{e}"
        );
    }

    #[test]
    fn check_finds_overlaps() {
        let mut f = Function::new("main");
        let x = f.add_input("x", ty(16));
        let a = unary(&mut f, x, "a");
        let b = unary(&mut f, a, "b");
        f.add_output("b", b);
        let mut p = plan(&f);
        p.buffers[1].offset = 0;
        let e = p.check().unwrap_err();
        assert!(e.contains("overlap"), "{e}");
    }

    /// A random DAG: `sizes[i]` elements per node, each using up to 3 earlier values (picked
    /// by `picks`), some of them `if` nodes whose then-region reads an earlier value; some
    /// values are results.
    fn random_function(sizes: &[usize], picks: &[(usize, usize, usize, u8)]) -> Function {
        let mut f = Function::new("main");
        let cond = f.add_input("cond", TensorType::scalar(DType::Bool));
        let mut vals = vec![f.add_input("x", ty(5))];
        for (i, (&size, &(p0, p1, p2, kind))) in sizes.iter().zip(picks).enumerate() {
            let pick = |k: usize| vals[k % vals.len()];
            let name = format!("v{i}");
            let v = match kind % 4 {
                0 => {
                    let mut then_r = Region::default();
                    let inner = push_node(
                        &mut f.values,
                        &mut then_r,
                        Op::Unary(UnaryOp::Neg),
                        vec![pick(p0)],
                        vec![ty(size)],
                        &[""],
                        vec![],
                        None,
                    );
                    then_r.results = inner;
                    let else_r = Region {
                        params: vec![],
                        nodes: vec![],
                        results: vec![pick(p1)],
                    };
                    f.push(
                        Op::If,
                        vec![cond],
                        vec![ty(size)],
                        &[&name],
                        vec![then_r, else_r],
                        None,
                    )[0]
                }
                // Types are not checked by the planner: any operands will do.
                k => f.push(
                    Op::Concat { axis: 0 },
                    [p0, p1, p2][..k as usize]
                        .iter()
                        .map(|&p| pick(p))
                        .collect(),
                    vec![ty(size)],
                    &[&name],
                    vec![],
                    None,
                )[0],
            };
            vals.push(v);
            if kind >= 200 {
                f.add_output(&name, v);
            }
        }
        f.add_output("last", *vals.last().unwrap());
        f
    }

    proptest! {
        #[test]
        fn plans_never_overlap_live_buffers(
            nodes in prop::collection::vec(
                (1usize..300, (0usize..64, 0usize..64, 0usize..64, any::<u8>())),
                1..40,
            )
        ) {
            let (sizes, picks): (Vec<usize>, Vec<_>) = nodes.into_iter().unzip();
            let f = random_function(&sizes, &picks);
            let p = plan_memory(&f).unwrap();
            prop_assert_eq!(p.buffers.len(), sizes.len());
            if let Err(e) = p.check() {
                return Err(TestCaseError::fail(e));
            }
            // The check, spelled out once more independently of `check`.
            for (i, a) in p.buffers.iter().enumerate() {
                prop_assert!(a.offset + a.size <= p.arena_bytes);
                for b in &p.buffers[i + 1..] {
                    let live = a.start <= b.end && b.start <= a.end;
                    let bytes = a.offset < b.offset + b.size && b.offset < a.offset + a.size;
                    prop_assert!(!(live && bytes), "{} and {} overlap", a.name, b.name);
                }
            }
            prop_assert!(p.arena_bytes <= p.unshared_bytes);
        }
    }
}
