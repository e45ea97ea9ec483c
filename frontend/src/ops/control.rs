//! Control flow: `If`, `Loop` and `Scan`.
//!
//! `If` and `Loop` map onto the core `if` and `loop` ops, their subgraphs becoming regions
//! (which may use values of enclosing scopes). `Scan` is lowered to a `loop` over its static
//! scan length: the scan inputs are moved to a leading, forward-running axis outside the loop
//! and carried unchanged; a synthetic body graph gathers row `i` of each of them into the
//! names of the original body's scan inputs, then runs the original body. The stacked scan
//! outputs are reversed and moved to their axes after the loop.

use terafab_ir::infer::infer_with_regions;
use terafab_ir::{DType, Dim, Op, Shape, Tensor, TensorType, ValueId};

use super::*;
use crate::onnx::proto::{GraphProto, NodeProto, ValueInfoProto};

/// The ops of this family.
pub const OPS: &[(&str, Importer)] = &[("If", if_op), ("Loop", loop_op), ("Scan", scan)];

type R<T> = Result<T, ImportError>;

/// The graph attribute `name` (required), borrowed from the node rather than the context so
/// that regions can be imported while it is held.
fn graph_attr<'a>(c: &NodeCtx<'a, '_>, name: &str) -> R<&'a GraphProto> {
    // Marks the attribute as read and checks its type.
    c.attr_graph(name)?;
    let node: &'a NodeProto = c.node;
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.g.as_ref())
        .ok_or_else(|| c.invalid(format!("graph attribute `{name}` is required")))
}

/// A one-element bool condition.
fn check_cond(c: &NodeCtx, v: ValueId, what: &str) -> R<()> {
    let t = c.ty(v);
    if t.dtype != DType::Bool || t.shape.num_elements() != Some(1) {
        return Err(c.invalid(format!("{what} must be a one-element bool, found {t}")));
    }
    Ok(())
}

/// `If`: both branches become regions without parameters. Branches must yield the same
/// types, except when the condition is known at import time (then the taken branch is used
/// for both regions).
fn if_op(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let cond = c.input(0)?;
    check_cond(c, cond, "the condition")?;
    let then_g = graph_attr(c, "then_branch")?;
    let else_g = graph_attr(c, "else_branch")?;
    let known = c
        .const_value(cond)
        .and_then(|t| t.to_i64_vec())
        .and_then(|v| v.first().map(|&b| b != 0));
    let (then_r, then_t) = c.subgraph(then_g, vec![])?;
    let (else_r, else_t) = c.subgraph(else_g, vec![])?;
    let (regions, types) = if then_t == else_t {
        (vec![then_r, else_r], then_t)
    } else {
        match known {
            Some(taken) => {
                let g = if taken { then_g } else { else_g };
                let (a, ta) = c.subgraph(g, vec![])?;
                let (b, _) = c.subgraph(g, vec![])?;
                (vec![a, b], ta)
            }
            None => {
                return Err(c.unsupported(format!(
                    "branches yield different types ({}) and ({}); terafab needs static types",
                    list(&then_t),
                    list(&else_t)
                )));
            }
        }
    };
    c.op_with_regions(Op::If, &[cond], regions, types)
}

fn list(ts: &[TensorType]) -> String {
    ts.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Loop`: optional trip count `M` (absent: unbounded) and condition (absent: true), then the
/// carried values. The body takes `(iteration, condition, carried...)` and yields
/// `(condition, carried..., scan outputs...)`; carried values must keep their types.
fn loop_op(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let body = graph_attr(c, "body")?;
    let m = match c.opt_input(0)? {
        Some(m) => {
            let t = c.ty(m);
            if !t.dtype.is_int() || t.shape.num_elements() != Some(1) {
                return Err(c.invalid(format!("M must be a one-element integer, found {t}")));
            }
            let m = c.convert(m, DType::I64)?;
            c.reshape(m, &[])?
        }
        None => c.constant(Tensor::scalar(i64::MAX)),
    };
    let cond = match c.opt_input(1)? {
        Some(v) => {
            check_cond(c, v, "the condition")?;
            c.reshape(v, &[])?
        }
        None => c.constant(Tensor::scalar(true)),
    };
    let carried: Vec<ValueId> = (2..c.num_inputs()).map(|i| c.input(i)).collect::<R<_>>()?;
    let mut params = vec![
        TensorType::scalar(DType::I64),
        TensorType::scalar(DType::Bool),
    ];
    params.extend(carried.iter().map(|&v| c.ty(v).clone()));
    let (region, yields) = c.subgraph(body, params)?;
    if yields.len() < 1 + carried.len() {
        return Err(c.invalid(format!(
            "the body yields {} values, expected at least {}",
            yields.len(),
            1 + carried.len()
        )));
    }
    let ycond = &yields[0];
    if ycond.dtype != DType::Bool || ycond.shape.num_elements() != Some(1) {
        return Err(c.invalid(format!(
            "the body's condition must be a one-element bool, found {ycond}"
        )));
    }
    if ycond.shape.rank() != 0 {
        return Err(c.unsupported(format!(
            "the body yields its condition as {ycond}; terafab needs a scalar"
        )));
    }
    for (k, (&v, y)) in carried.iter().zip(&yields[1..]).enumerate() {
        if c.ty(v) != y {
            return Err(c.unsupported(format!(
                "loop-carried value {k} changes type from {} to {y}",
                c.ty(v)
            )));
        }
    }
    // The trip count is static when M is a constant and nothing can stop the loop early.
    let trips = static_trip_count(c, m, cond, &region);
    let inputs: Vec<ValueId> = [m, cond].into_iter().chain(carried).collect();
    let in_types: Vec<TensorType> = inputs.iter().map(|&v| c.ty(v).clone()).collect();
    let refs: Vec<&TensorType> = in_types.iter().collect();
    let mut out_types = infer_with_regions(&Op::Loop, &refs, std::slice::from_ref(&yields))
        .map_err(|e| c.invalid(format!("`loop`: {e}")))?;
    if let Some(n) = trips {
        for t in out_types.iter_mut().skip(in_types.len() - 2) {
            if let Some(d) = t.shape.0.first_mut() {
                *d = Dim::Static(n);
            }
        }
    }
    c.op_with_regions(Op::Loop, &inputs, vec![region], out_types)
}

/// The number of iterations of a loop, when it is known at import time: `M` is a constant,
/// the initial condition is constant true, and the body yields either constant true or its
/// own condition parameter.
fn static_trip_count(
    c: &NodeCtx,
    m: ValueId,
    cond: ValueId,
    body: &terafab_ir::Region,
) -> Option<usize> {
    let is_true = |v: ValueId| {
        c.const_value(v)
            .and_then(|t| t.to_i64_vec())
            .is_some_and(|b| b == [1])
    };
    let n = c.const_value(m)?.to_i64_vec()?.first().copied()?;
    let yielded = *body.results.first()?;
    let stays = is_true(yielded) || body.params.get(1) == Some(&yielded);
    (is_true(cond) && stays && n < i64::from(u32::MAX))
        .then(|| usize::try_from(n.max(0)).ok())
        .flatten()
}

/// `Scan` (opset 8: batched, with `sequence_lens` and `directions`; opset 9+: `scan_*_axes`
/// and `scan_*_directions`).
fn scan(c: &mut NodeCtx) -> R<Vec<ValueId>> {
    let body = graph_attr(c, "body")?;
    let n_scan = c
        .attr_int("num_scan_inputs")?
        .ok_or_else(|| c.invalid("attribute `num_scan_inputs` is required"))?;
    let n_scan = usize::try_from(n_scan).map_err(|_| c.invalid("`num_scan_inputs` is negative"))?;
    if c.opset < 9 {
        return scan8(c, body, n_scan);
    }
    let inputs: Vec<ValueId> = (0..c.num_inputs()).map(|i| c.input(i)).collect::<R<_>>()?;
    let n_state = inputs
        .len()
        .checked_sub(n_scan)
        .ok_or_else(|| c.invalid("`num_scan_inputs` exceeds the number of inputs"))?;
    let n_out = body
        .output
        .len()
        .checked_sub(n_state)
        .ok_or_else(|| c.invalid("the body yields fewer values than there are states"))?;
    let in_axes = c
        .attr_ints("scan_input_axes")?
        .unwrap_or_else(|| vec![0; n_scan]);
    let in_dirs = c
        .attr_ints("scan_input_directions")?
        .unwrap_or_else(|| vec![0; n_scan]);
    let out_axes = c
        .attr_ints("scan_output_axes")?
        .unwrap_or_else(|| vec![0; n_out]);
    let out_dirs = c
        .attr_ints("scan_output_directions")?
        .unwrap_or_else(|| vec![0; n_out]);
    if in_axes.len() != n_scan || in_dirs.len() != n_scan {
        return Err(c.invalid("scan_input_axes/directions need one entry per scan input"));
    }
    if out_axes.len() != n_out || out_dirs.len() != n_out {
        return Err(c.invalid("scan_output_axes/directions need one entry per scan output"));
    }
    let (states, scans) = inputs.split_at(n_state);
    let mut prepared = Vec::with_capacity(n_scan);
    for (k, &x) in scans.iter().enumerate() {
        let axis = c.axis(in_axes[k], c.rank(x))?;
        prepared.push(leading_axis(c, x, axis, in_dirs[k] != 0)?);
    }
    let (finals, stacked) = scan_loop(c, body, states, &prepared)?;
    let mut outs = finals;
    for (k, y) in stacked.into_iter().enumerate() {
        outs.push(place_axis(c, y, out_axes[k], out_dirs[k] != 0)?);
    }
    Ok(outs)
}

/// Scan-8: every input and output has a leading batch dim, scan inputs scan along dim 1.
/// Each batch entry runs its own loop; the results are stacked along the batch dim.
fn scan8(c: &mut NodeCtx, body: &GraphProto, n_scan: usize) -> R<Vec<ValueId>> {
    let inputs: Vec<ValueId> = (1..c.num_inputs()).map(|i| c.input(i)).collect::<R<_>>()?;
    let n_state = inputs
        .len()
        .checked_sub(n_scan)
        .ok_or_else(|| c.invalid("`num_scan_inputs` exceeds the number of inputs"))?;
    let dirs = c
        .attr_ints("directions")?
        .unwrap_or_else(|| vec![0; n_scan]);
    if dirs.len() != n_scan {
        return Err(c.invalid("`directions` needs one entry per scan input"));
    }
    let Some(&first) = inputs.first() else {
        return Err(c.invalid("Scan needs inputs"));
    };
    let batch = c.dims(first)?.first().copied().unwrap_or(0);
    let t_len = match inputs.get(n_state) {
        Some(&x) => c.dims(x)?.get(1).copied().unwrap_or(0),
        None => 0,
    };
    if let Some(lens) = c.opt_input(0)? {
        let full = c
            .const_value(lens)
            .and_then(|t| t.to_i64_vec())
            .is_some_and(|v| v.iter().all(|&l| l == t_len as i64));
        if !full {
            return Err(c.unsupported(
                "Scan-8 with sequence_lens shorter than the scan length (ragged batches)",
            ));
        }
    }
    let mut per_output: Vec<Vec<ValueId>> = Vec::new();
    for b in 0..batch {
        let mut row = Vec::with_capacity(inputs.len());
        for &x in &inputs {
            let dims = c.dims(x)?;
            if dims.first() != Some(&batch) {
                return Err(c.invalid("every input needs the same batch dim"));
            }
            let s = c.slice_axis(x, 0, b, b + 1)?;
            row.push(c.reshape(s, &dims[1..])?);
        }
        let (states, scans) = row.split_at(n_state);
        let mut prepared = Vec::with_capacity(n_scan);
        for (k, &x) in scans.iter().enumerate() {
            prepared.push(leading_axis(c, x, 0, dirs[k] != 0)?);
        }
        let (finals, stacked) = scan_loop(c, body, states, &prepared)?;
        let outs: Vec<ValueId> = finals.into_iter().chain(stacked).collect();
        per_output.resize(outs.len(), Vec::new());
        for (k, y) in outs.into_iter().enumerate() {
            let mut dims = vec![1];
            dims.extend(c.dims(y)?);
            per_output[k].push(c.reshape(y, &dims)?);
        }
    }
    if batch == 0 {
        return Err(c.unsupported("Scan-8 with an empty batch"));
    }
    per_output.iter().map(|ys| c.concat(ys, 0)).collect()
}

/// Move `axis` of a scan input to the front, reversed for a reverse scan.
fn leading_axis(c: &mut NodeCtx, x: ValueId, axis: usize, reverse: bool) -> R<ValueId> {
    let rank = c.rank(x);
    let mut perm = vec![axis];
    perm.extend((0..rank).filter(|&d| d != axis));
    let y = c.transpose(x, &perm)?;
    if reverse {
        c.op(Op::Reverse { axes: vec![0] }, &[y])
    } else {
        Ok(y)
    }
}

/// Undo [`leading_axis`] for a stacked scan output: reverse it if asked, then move its
/// leading axis to `axis` (ONNX axis, normalized against its rank).
fn place_axis(c: &mut NodeCtx, y: ValueId, axis: i64, reverse: bool) -> R<ValueId> {
    let y = if reverse {
        c.op(Op::Reverse { axes: vec![0] }, &[y])?
    } else {
        y
    };
    let rank = c.rank(y);
    let axis = c.axis(axis, rank)?;
    // Result dim `axis` is dim 0; the others keep their order.
    let mut rest = 1..rank;
    let perm: Vec<usize> = (0..rank)
        .map(|d| {
            if d == axis {
                0
            } else {
                rest.next().unwrap_or(0)
            }
        })
        .collect();
    c.transpose(y, &perm)
}

/// Synthetic names of the lowered body (not valid in ONNX files' usual naming, and shadowed
/// per nesting level, so they cannot clash with the body's names).
const ITER: &str = "__terafab_scan/iter";
const COND: &str = "__terafab_scan/cond";

fn full_name(k: usize) -> String {
    format!("__terafab_scan/input{k}")
}

fn value_info(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_string(),
        ..Default::default()
    }
}

/// Run the Scan body over `scans` (scan axis leading, already in run order) as a `loop`:
/// returns the final states and the scan outputs stacked along a new leading axis.
fn scan_loop(
    c: &mut NodeCtx,
    body: &GraphProto,
    states: &[ValueId],
    scans: &[ValueId],
) -> R<(Vec<ValueId>, Vec<ValueId>)> {
    let (n_state, n_scan) = (states.len(), scans.len());
    if body.input.len() != n_state + n_scan {
        return Err(c.invalid(format!(
            "the body takes {} inputs, expected {} states and {} scan inputs",
            body.input.len(),
            n_state,
            n_scan
        )));
    }
    let Some(n_out) = body.output.len().checked_sub(n_state) else {
        return Err(c.invalid("the body yields fewer values than there are states"));
    };
    let mut t_len = None;
    for &x in scans {
        let n = c.dims(x)?.first().copied().unwrap_or(0);
        if t_len.is_some_and(|t| t != n) {
            return Err(c.invalid("scan inputs have different scan lengths"));
        }
        t_len = Some(n);
    }
    let Some(t_len) = t_len else {
        return Err(c.unsupported("Scan without scan inputs"));
    };
    // The loop body: (iter, cond, states..., full scan inputs...) -> (cond, states...,
    // full scan inputs..., scan outputs...).
    let mut g = body.clone();
    g.input = [value_info(ITER), value_info(COND)]
        .into_iter()
        .chain(body.input[..n_state].iter().cloned())
        .chain((0..n_scan).map(|k| value_info(&full_name(k))))
        .collect();
    let gathers = body.input[n_state..]
        .iter()
        .enumerate()
        .map(|(k, slot)| NodeProto {
            input: vec![full_name(k), ITER.to_string()],
            output: vec![slot.name.clone()],
            op_type: "Gather".into(),
            ..Default::default()
        });
    g.node = gathers.chain(body.node.iter().cloned()).collect();
    g.output = std::iter::once(value_info(COND))
        .chain(body.output[..n_state].iter().cloned())
        .chain((0..n_scan).map(|k| value_info(&full_name(k))))
        .chain(body.output[n_state..].iter().cloned())
        .collect();
    let carried: Vec<ValueId> = states.iter().chain(scans).copied().collect();
    let mut params = vec![
        TensorType::scalar(DType::I64),
        TensorType::scalar(DType::Bool),
    ];
    params.extend(carried.iter().map(|&v| c.ty(v).clone()));
    let (region, yields) = c.subgraph(&g, params)?;
    for (k, (&v, y)) in states.iter().zip(&yields[1..]).enumerate() {
        if c.ty(v) != y {
            return Err(c.unsupported(format!(
                "scan state {k} changes type from {} to {y}",
                c.ty(v)
            )));
        }
    }
    let m = c.constant(Tensor::scalar(t_len as i64));
    let cond = c.constant(Tensor::scalar(true));
    let inputs: Vec<ValueId> = [m, cond].into_iter().chain(carried).collect();
    let mut out_types: Vec<TensorType> = inputs[2..].iter().map(|&v| c.ty(v).clone()).collect();
    for y in yields.iter().skip(1 + n_state + n_scan) {
        let mut dims = vec![Dim::Static(t_len)];
        dims.extend(y.shape.0.iter().cloned());
        out_types.push(TensorType::new(y.dtype, Shape(dims)));
    }
    if out_types.len() != n_state + n_scan + n_out {
        return Err(c.invalid("the body yields the wrong number of values"));
    }
    let outs = c.op_with_regions(Op::Loop, &inputs, vec![region], out_types)?;
    let finals = outs[..n_state].to_vec();
    let stacked = outs[n_state + n_scan..].to_vec();
    Ok((finals, stacked))
}
