//! Every VJP rule against central finite differences in f64, on random shapes and inputs.
//!
//! Each case builds a function of f64 inputs with one result `y`, makes the scalar loss
//! `L = sum(y * r)` with a random constant `r` (so every element of `y` matters with its own
//! weight), differentiates it with [`grad`] and runs the gradient function on the reference
//! interpreter. Each gradient element must match `(L(x + h) - L(x - h)) / 2h` within
//! `TOL * (1 + |fd|)`.

use proptest::prelude::*;
use terafab_ir::interp::run_function;
use terafab_ir::verify::verify_function;
use terafab_ir::{
    BinaryOp, CompositeOp, DType, Function, GeluApprox, Op, ReduceKind, ScatterMode, Shape, Tensor,
    TensorType, UnaryOp, ValueId,
};

use super::*;

/// Relative (plus absolute) tolerance of the finite-difference check.
const TOL: f64 = 1e-6;
/// The finite-difference step.
const H: f64 = 1e-6;

/// A small deterministic generator (xorshift64*), seeded by proptest.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn float(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
    }
    fn dims(&mut self, rank: usize, lo: usize, hi: usize) -> Vec<usize> {
        (0..rank).map(|_| self.int(lo, hi)).collect()
    }
    fn tensor(&mut self, dims: &[usize], lo: f64, hi: f64) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<f64> = (0..n).map(|_| self.float(lo, hi)).collect();
        Tensor::from_vec(dims.to_vec(), v).unwrap()
    }
    fn perm(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.int(0, i));
        }
        p
    }
}

/// A function under construction with its input values.
struct Case {
    f: Function,
    inputs: Vec<Tensor>,
}

impl Case {
    fn new() -> Self {
        Case {
            f: Function::new("main"),
            inputs: Vec::new(),
        }
    }

    fn input(&mut self, t: Tensor) -> ValueId {
        let ty = TensorType::from_static(t.dtype(), t.shape());
        let name = format!("x{}", self.inputs.len());
        self.inputs.push(t);
        self.f.add_input(&name, ty)
    }

    fn op_n(&mut self, op: Op, ins: &[ValueId]) -> Vec<ValueId> {
        let tys: Vec<TensorType> = ins.iter().map(|&v| self.f.values.ty(v).clone()).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let out = infer(&op, &refs).unwrap_or_else(|e| panic!("{}: {e}", op.name()));
        self.f.push(op, ins.to_vec(), out, &[], vec![], None)
    }

    fn op(&mut self, op: Op, ins: &[ValueId]) -> ValueId {
        self.op_n(op, ins)[0]
    }

    fn constant(&mut self, t: Tensor) -> ValueId {
        self.op(Op::Constant { value: t }, &[])
    }

    /// Whether `op` types on these operands (for random attributes that may be invalid).
    fn types(&self, op: &Op, ins: &[ValueId]) -> bool {
        let tys: Vec<TensorType> = ins.iter().map(|&v| self.f.values.ty(v).clone()).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        infer(op, &refs).is_ok()
    }
}

/// Make the loss of `y`, differentiate with respect to every float input and compare with
/// central finite differences.
fn check(mut c: Case, y: ValueId, rng: &mut Rng) {
    let yt = c.f.values.ty(y).clone();
    let dims = yt.shape.as_static().unwrap();
    let y = if yt.dtype == DType::F64 {
        y
    } else {
        c.op(Op::Convert { to: DType::F64 }, &[y])
    };
    let r = c.constant(rng.tensor(&dims, -1.0, 1.0));
    let p = c.op(Op::Binary(BinaryOp::Mul), &[y, r]);
    let l = c.op(
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: (0..dims.len()).collect(),
            keep_dims: false,
        },
        &[p],
    );
    c.f.add_output("loss", l);
    verify_function(&c.f).unwrap();
    let wrt: Vec<ValueId> =
        c.f.inputs()
            .iter()
            .copied()
            .filter(|&v| c.f.values.ty(v).dtype == DType::F64)
            .collect();
    let gf = grad(&c.f, &wrt, 0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gf.outputs().len(), 1 + wrt.len());
    let out = run_function(&gf, &c.inputs).unwrap();
    let loss = |inputs: &[Tensor]| run_function(&c.f, inputs).unwrap()[0].to_f64_vec()[0];
    let base = loss(&c.inputs);
    assert_eq!(
        out[0].to_f64_vec()[0].to_bits(),
        base.to_bits(),
        "forward changed"
    );
    let params: Vec<usize> = (0..c.inputs.len())
        .filter(|&i| c.inputs[i].dtype() == DType::F64)
        .collect();
    for (k, &i) in params.iter().enumerate() {
        let ad = out[1 + k].to_f64_vec();
        assert_eq!(out[1 + k].shape(), c.inputs[i].shape());
        let x = c.inputs[i].to_f64_vec();
        for j in 0..x.len() {
            let at = |d: f64| {
                let mut v = x.clone();
                v[j] += d;
                let mut ins = c.inputs.clone();
                ins[i] = Tensor::from_vec(c.inputs[i].shape().to_vec(), v).unwrap();
                loss(&ins)
            };
            let fd = (at(H) - at(-H)) / (2.0 * H);
            assert!(
                (ad[j] - fd).abs() <= TOL * (1.0 + fd.abs()),
                "input {i} element {j}: autodiff {} vs finite difference {fd}\n{}",
                ad[j],
                terafab_ir::print::print_function(&gf)
            );
        }
    }
}

fn unary_domain(u: UnaryOp) -> (f64, f64) {
    use UnaryOp::*;
    match u {
        Log | Sqrt | Rsqrt => (0.2, 3.0),
        Asin | Acos | Atanh => (-0.9, 0.9),
        Acosh => (1.2, 3.0),
        Tan => (-1.2, 1.2),
        _ => (-2.0, 2.0),
    }
}

fn float_unaries() -> Vec<UnaryOp> {
    use UnaryOp::*;
    UnaryOp::ALL
        .iter()
        .copied()
        .filter(|u| !matches!(u, Not | IsNan | IsInf))
        .collect()
}

/// `x`'s dims with some set to 1 and a few leading ones dropped: a shape that broadcasts to it.
fn bcast_dims(rng: &mut Rng, dims: &[usize]) -> Vec<usize> {
    let drop = rng.int(0, dims.len());
    dims[drop..]
        .iter()
        .map(|&d| if rng.int(0, 2) == 0 { 1 } else { d })
        .collect()
}

fn unary_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let us = float_unaries();
    let u = us[rng.int(0, us.len() - 1)];
    let (lo, hi) = unary_domain(u);
    let mut c = Case::new();
    let r = rng.int(0, 3);
    let d = rng.dims(r, 1, 3);
    let x = c.input(rng.tensor(&d, lo, hi));
    let y = c.op(Op::Unary(u), &[x]);
    check(c, y, &mut rng);
}

fn binary_case(seed: u64) {
    use BinaryOp::*;
    let mut rng = Rng::new(seed);
    let ops = [Add, Sub, Mul, Div, Rem, Pow, Max, Min];
    let b = ops[rng.int(0, ops.len() - 1)];
    let r = rng.int(0, 3);
    let d = rng.dims(r, 1, 3);
    let e = bcast_dims(&mut rng, &d);
    let (dx, dy) = if rng.int(0, 1) == 0 { (d, e) } else { (e, d) };
    let mut c = Case::new();
    let (xr, yr) = match b {
        Pow => ((0.3, 2.0), (-2.0, 2.0)),
        Div => ((-2.0, 2.0), (0.5, 2.0)),
        // Away from the jumps of trunc(x / y).
        Rem => ((0.1, 0.9), (1.1, 2.0)),
        _ => ((-2.0, 2.0), (-2.0, 2.0)),
    };
    let x = c.input(rng.tensor(&dx, xr.0, xr.1));
    let y = c.input(rng.tensor(&dy, yr.0, yr.1));
    let z = c.op(Op::Binary(b), &[x, y]);
    check(c, z, &mut rng);
}

fn select_convert_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let r = rng.int(1, 3);
    let d = rng.dims(r, 1, 3);
    let mut c = Case::new();
    let (da, db) = (bcast_dims(&mut rng, &d), bcast_dims(&mut rng, &d));
    let a = c.input(rng.tensor(&da, -2.0, 2.0));
    let b = c.input(rng.tensor(&db, -2.0, 2.0));
    let p = c.input(rng.tensor(&d, -1.0, 1.0));
    let zero = c.constant(Tensor::scalar(0.0f64));
    let cond = c.op(Op::Compare(CompareOp::Gt), &[p, zero]);
    let s = c.op(Op::Select, &[cond, a, b]);
    // Through f64 -> f64 converts and a float -> int -> float path (no gradient).
    let s2 = c.op(Op::Convert { to: DType::F64 }, &[s]);
    let i = c.op(Op::Convert { to: DType::I32 }, &[p]);
    let fi = c.op(Op::Convert { to: DType::F64 }, &[i]);
    let y = c.op(Op::Binary(BinaryOp::Add), &[s2, fi]);
    let y = c.op(Op::Binary(BinaryOp::Mul), &[y, p]);
    check(c, y, &mut rng);
}

fn movement_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let r = rng.int(1, 3);
    let d = rng.dims(r, 1, 4);
    let mut c = Case::new();
    let x = c.input(rng.tensor(&d, -2.0, 2.0));
    let kind = rng.int(0, 5);
    let y = match kind {
        0 => {
            let mut to: Vec<usize> = (0..rng.int(0, 1)).map(|_| rng.int(1, 3)).collect();
            to.extend(d.iter().map(|&n| if n == 1 { rng.int(1, 3) } else { n }));
            let ds = bcast_dims(&mut rng, &d);
            let s = c.input(rng.tensor(&ds, -1.0, 1.0));
            let b = c.op(
                Op::Broadcast {
                    shape: Shape::from_static(&to),
                },
                &[x],
            );
            let s = c.op(
                Op::Broadcast {
                    shape: Shape::from_static(&to),
                },
                &[s],
            );
            c.op(Op::Binary(BinaryOp::Mul), &[b, s])
        }
        1 => {
            let n: usize = d.iter().product();
            let t = c.op(Op::Transpose { perm: rng.perm(r) }, &[x]);
            c.op(
                Op::Reshape {
                    shape: Shape::from_static(&[n]),
                },
                &[t],
            )
        }
        2 => {
            let mut start = Vec::new();
            let mut limit = Vec::new();
            let mut stride = Vec::new();
            for &n in &d {
                let s = rng.int(0, n - 1);
                start.push(s);
                limit.push(rng.int(s, n));
                stride.push(rng.int(1, 3));
            }
            let axes: Vec<usize> = (0..r).filter(|_| rng.int(0, 1) == 0).collect();
            let v = c.op(Op::Reverse { axes }, &[x]);
            c.op(
                Op::Slice {
                    start,
                    limit,
                    stride,
                },
                &[v],
            )
        }
        3 => {
            let axis = rng.int(0, r - 1);
            let mut d2 = d.clone();
            d2[axis] = rng.int(1, 3);
            let z = c.input(rng.tensor(&d2, -2.0, 2.0));
            c.op(Op::Concat { axis }, &[x, z, x])
        }
        4 => {
            let v = c.input(rng.tensor(&[], -1.0, 1.0));
            let low: Vec<i64> = d.iter().map(|_| rng.int(0, 4) as i64 - 2).collect();
            let high: Vec<i64> = d.iter().map(|_| rng.int(0, 4) as i64 - 2).collect();
            let interior: Vec<usize> = d.iter().map(|_| rng.int(0, 2)).collect();
            let op = Op::Pad {
                low,
                high,
                interior,
            };
            if !c.types(&op, &[x, v]) {
                return;
            }
            c.op(op, &[x, v])
        }
        _ => {
            let axis = rng.int(0, r - 1);
            let n = d[axis] as i64;
            let q = rng.int(0, 2);
            let id = rng.dims(q, 1, 3);
            let m: usize = id.iter().product();
            let idx: Vec<i64> = (0..m)
                .map(|_| rng.int(0, 2 * n as usize - 1) as i64 - n)
                .collect();
            let idx = c.constant(Tensor::from_vec(id, idx).unwrap());
            c.op(Op::Gather { axis }, &[x, idx])
        }
    };
    if c.f.values.ty(y).shape.num_elements() == Some(0) {
        return;
    }
    check(c, y, &mut rng);
}

fn scatter_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let r = rng.int(1, 3);
    let d = rng.dims(r, 1, 3);
    let mut c = Case::new();
    let x = c.input(rng.tensor(&d, -2.0, 2.0));
    let m = rng.int(1, 4);
    let idx: Vec<i32> = (0..m).map(|_| rng.int(0, d[0] - 1) as i32).collect();
    let idx = c.constant(Tensor::from_vec(vec![m], idx).unwrap());
    let mut ud = vec![m];
    ud.extend(&d[1..]);
    let u = c.input(rng.tensor(&ud, -2.0, 2.0));
    let mode = if rng.int(0, 1) == 0 {
        ScatterMode::Add
    } else {
        ScatterMode::Replace
    };
    let y = c.op(Op::Scatter { mode }, &[x, idx, u]);
    check(c, y, &mut rng);
}

fn reduce_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let r = rng.int(1, 3);
    let d = rng.dims(r, 1, 4);
    let mut c = Case::new();
    let mut t = rng.tensor(&d, -2.0, 2.0);
    let kinds = [
        ReduceKind::Sum,
        ReduceKind::Max,
        ReduceKind::Min,
        ReduceKind::Prod,
    ];
    let kind = kinds[rng.int(0, 3)];
    if kind == ReduceKind::Prod && rng.int(0, 1) == 0 {
        // A zero factor: the rule must not divide by it.
        let mut v = t.to_f64_vec();
        let j = rng.int(0, v.len() - 1);
        v[j] = 0.0;
        t = Tensor::from_vec(d.clone(), v).unwrap();
    }
    let x = c.input(t);
    let axes: Vec<usize> = rng.perm(r)[..rng.int(0, r)].to_vec();
    let keep_dims = rng.int(0, 1) == 0;
    let y = if rng.int(0, 3) == 0 {
        c.op(
            Op::Cumulative {
                kind: ReduceKind::Sum,
                axis: rng.int(0, r - 1),
                exclusive: rng.int(0, 1) == 0,
                reverse: rng.int(0, 1) == 0,
            },
            &[x],
        )
    } else {
        c.op(
            Op::Reduce {
                kind,
                axes,
                keep_dims,
            },
            &[x],
        )
    };
    check(c, y, &mut rng);
}

fn dot_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let nb = rng.int(0, 2);
    let nc = rng.int(0, 2);
    let nl = rng.int(0, 2);
    let nr = rng.int(0, 2);
    let b = rng.dims(nb, 1, 3);
    let k = rng.dims(nc, 1, 3);
    let lf = rng.dims(nl, 1, 3);
    let rf = rng.dims(nr, 1, 3);
    // Logical layout (batch, contract, free), placed at random positions.
    let lp = rng.perm(nb + nc + nl);
    let rp = rng.perm(nb + nc + nr);
    let mut ld = vec![0; lp.len()];
    let mut rd = vec![0; rp.len()];
    let logical_l: Vec<usize> = b.iter().chain(&k).chain(&lf).copied().collect();
    let logical_r: Vec<usize> = b.iter().chain(&k).chain(&rf).copied().collect();
    for (i, &p) in lp.iter().enumerate() {
        ld[p] = logical_l[i];
    }
    for (i, &p) in rp.iter().enumerate() {
        rd[p] = logical_r[i];
    }
    let mut c = Case::new();
    let x = c.input(rng.tensor(&ld, -1.0, 1.0));
    let y = c.input(rng.tensor(&rd, -1.0, 1.0));
    let z = c.op(
        Op::DotGeneral {
            lhs_batch: lp[..nb].to_vec(),
            rhs_batch: rp[..nb].to_vec(),
            lhs_contract: lp[nb..nb + nc].to_vec(),
            rhs_contract: rp[nb..nb + nc].to_vec(),
        },
        &[x, y],
    );
    check(c, z, &mut rng);
}

fn conv_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let ns = rng.int(1, 2);
    let groups = rng.int(1, 2);
    let n = rng.int(1, 2);
    let ch = groups * rng.int(1, 2);
    let o = groups * rng.int(1, 2);
    let s = rng.dims(ns, 1, 5);
    let k = rng.dims(ns, 1, 3);
    let mut xd = vec![n, ch];
    xd.extend(&s);
    let mut wd = vec![o, ch / groups];
    wd.extend(&k);
    let op = Op::Conv {
        stride: rng.dims(ns, 1, 2),
        pad_low: (0..ns).map(|_| rng.int(0, 3) as i64 - 1).collect(),
        pad_high: (0..ns).map(|_| rng.int(0, 3) as i64 - 1).collect(),
        lhs_dilation: rng.dims(ns, 1, 2),
        rhs_dilation: rng.dims(ns, 1, 2),
        groups,
    };
    let mut c = Case::new();
    let x = c.input(rng.tensor(&xd, -1.0, 1.0));
    let w = c.input(rng.tensor(&wd, -1.0, 1.0));
    if !c.types(&op, &[x, w]) {
        return;
    }
    let y = c.op(op, &[x, w]);
    if c.f.values.ty(y).shape.num_elements() == Some(0) {
        return;
    }
    check(c, y, &mut rng);
}

fn window_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let r = rng.int(1, 3);
    let d = rng.dims(r, 1, 5);
    let window: Vec<usize> = d.iter().map(|&n| rng.int(1, n.min(3))).collect();
    let pad_low: Vec<usize> = window.iter().map(|&w| rng.int(0, w - 1)).collect();
    let pad_high: Vec<usize> = window.iter().map(|&w| rng.int(0, w - 1)).collect();
    let kinds = [ReduceKind::Sum, ReduceKind::Max, ReduceKind::Min];
    let op = Op::ReduceWindow {
        kind: kinds[rng.int(0, 2)],
        window,
        stride: rng.dims(r, 1, 2),
        dilation: rng.dims(r, 1, 2),
        pad_low,
        pad_high,
    };
    let mut c = Case::new();
    let x = c.input(rng.tensor(&d, -2.0, 2.0));
    if !c.types(&op, &[x]) {
        return;
    }
    let y = c.op(op, &[x]);
    if c.f.values.ty(y).shape.num_elements() == Some(0) {
        return;
    }
    check(c, y, &mut rng);
}

fn sort_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let r = rng.int(1, 3);
    let d = rng.dims(r, 1, 4);
    let mut c = Case::new();
    let x = c.input(rng.tensor(&d, -2.0, 2.0));
    let out = c.op_n(
        Op::Sort {
            axis: rng.int(0, r - 1),
            descending: rng.int(0, 1) == 0,
        },
        &[x],
    );
    // The values times x again: fan-out through the sort and around it.
    let y = c.op(Op::Unary(UnaryOp::Sin), &[out[0]]);
    let y = c.op(Op::Binary(BinaryOp::Mul), &[y, x]);
    check(c, y, &mut rng);
}

fn composite_case(seed: u64) {
    let mut rng = Rng::new(seed);
    let r = rng.int(1, 3);
    let d = rng.dims(r, 1, 3);
    let mut c = Case::new();
    let x = c.input(rng.tensor(&d, -2.0, 2.0));
    let axes: Vec<usize> = rng.perm(r)[..rng.int(1, r)].to_vec();
    let comp = match rng.int(0, 7) {
        0 => CompositeOp::Softmax { axes },
        1 => CompositeOp::LogSoftmax { axes },
        2 => CompositeOp::LayerNorm {
            axes,
            epsilon: 1e-3,
        },
        3 => CompositeOp::RmsNorm {
            axes,
            epsilon: 1e-3,
        },
        4 => CompositeOp::Gelu {
            approximate: GeluApprox::None,
        },
        5 => CompositeOp::Gelu {
            approximate: GeluApprox::Tanh,
        },
        6 => CompositeOp::Silu,
        _ => {
            let (lq, lk, dk, dv) = (rng.int(1, 3), rng.int(1, 3), rng.int(1, 3), rng.int(1, 3));
            let b = rng.int(1, 2);
            let mut c = Case::new();
            let q = c.input(rng.tensor(&[b, lq, dk], -1.0, 1.0));
            let k = c.input(rng.tensor(&[b, lk, dk], -1.0, 1.0));
            let v = c.input(rng.tensor(&[b, lk, dv], -1.0, 1.0));
            let m = c.input(rng.tensor(&[lq, lk], -1.0, 1.0));
            // q also as the key: a composite using a value twice.
            let kk = if lq == lk { q } else { k };
            let y = c.op(
                Op::Composite(CompositeOp::Attention { scale: 0.7 }),
                &[q, kk, v, m],
            );
            check(c, y, &mut rng);
            return;
        }
    };
    let y = c.op(Op::Composite(comp), &[x]);
    check(c, y, &mut rng);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn unary_rules(seed in any::<u64>()) { unary_case(seed) }

    #[test]
    fn binary_rules(seed in any::<u64>()) { binary_case(seed) }

    #[test]
    fn select_and_convert_rules(seed in any::<u64>()) { select_convert_case(seed) }

    #[test]
    fn movement_rules(seed in any::<u64>()) { movement_case(seed) }

    #[test]
    fn scatter_rules(seed in any::<u64>()) { scatter_case(seed) }

    #[test]
    fn reduce_rules(seed in any::<u64>()) { reduce_case(seed) }

    #[test]
    fn dot_general_rules(seed in any::<u64>()) { dot_case(seed) }

    #[test]
    fn conv_rules(seed in any::<u64>()) { conv_case(seed) }

    #[test]
    fn reduce_window_rules(seed in any::<u64>()) { window_case(seed) }

    #[test]
    fn composite_rules(seed in any::<u64>()) { composite_case(seed) }

    #[test]
    fn sort_rules(seed in any::<u64>()) { sort_case(seed) }
}

/// Every float unary op at least once (the random test picks one per case).
#[test]
fn every_unary_op() {
    for (i, _) in float_unaries().iter().enumerate() {
        for s in 0..4u64 {
            unary_case(i as u64 * 1000 + s);
        }
    }
}

#[test]
fn fan_out_accumulates() {
    // y = x * x + sin(x) * x: x used four times.
    let mut rng = Rng::new(7);
    let mut c = Case::new();
    let x = c.input(rng.tensor(&[3, 2], -2.0, 2.0));
    let a = c.op(Op::Binary(BinaryOp::Mul), &[x, x]);
    let s = c.op(Op::Unary(UnaryOp::Sin), &[x]);
    let b = c.op(Op::Binary(BinaryOp::Mul), &[s, x]);
    let y = c.op(Op::Binary(BinaryOp::Add), &[a, b]);
    check(c, y, &mut rng);
}

#[test]
fn integer_paths_get_no_gradient() {
    // y = gather(x, argmax(x)) * x: the index path is integer, the result is still exact.
    let mut rng = Rng::new(3);
    let mut c = Case::new();
    let x = c.input(rng.tensor(&[4], -2.0, 2.0));
    let i = c.op(
        Op::ArgReduce {
            is_max: true,
            axis: 0,
            keep_dims: true,
            select_last: false,
        },
        &[x],
    );
    let g = c.op(Op::Gather { axis: 0 }, &[x, i]);
    let y = c.op(Op::Binary(BinaryOp::Mul), &[g, x]);
    check(c, y, &mut rng);
}

#[test]
fn chosen_values_only_and_constants_by_name() {
    // y = (a * w) + b with w a constant: gradients for w (by name) and a only.
    let mut c = Case::new();
    let a = c.input(Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap());
    let b = c.input(Tensor::from_vec(vec![2], vec![5.0f64, 6.0]).unwrap());
    let w = c.constant(Tensor::from_vec(vec![2], vec![3.0f64, 4.0]).unwrap());
    c.f.values.rename(w, "w");
    let p = c.op(Op::Binary(BinaryOp::Mul), &[a, w]);
    let y = c.op(Op::Binary(BinaryOp::Add), &[p, b]);
    let l = c.op(
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![0],
            keep_dims: false,
        },
        &[y],
    );
    c.f.add_output("l", l);
    let g = grad_by_name(&c.f, &["w", "x0"], "l").unwrap();
    assert_eq!(g.output_names, ["l", "grad_w", "grad_x0"]);
    let out = run_function(&g, &c.inputs).unwrap();
    assert_eq!(out[0].to_f64_vec(), [22.0]);
    assert_eq!(out[1].to_f64_vec(), [1.0, 2.0]);
    assert_eq!(out[2].to_f64_vec(), [3.0, 4.0]);
    // A value the output does not depend on gets zeros.
    let mut c2 = Case::new();
    let a = c2.input(Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap());
    let z = c2.input(Tensor::from_vec(vec![3], vec![1.0f64, 2.0, 3.0]).unwrap());
    let s = c2.op(Op::Unary(UnaryOp::Exp), &[a]);
    c2.f.add_output("s", s);
    let g = grad(&c2.f, &[z], 0).unwrap();
    let out = run_function(&g, &c2.inputs).unwrap();
    assert_eq!(out[1].to_f64_vec(), [0.0, 0.0, 0.0]);
}

#[test]
fn typed_errors() {
    let mut c = Case::new();
    let x = c.input(Tensor::from_vec(vec![3], vec![3.0f64, 1.0, 2.0]).unwrap());
    let i = c.input(Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap());
    let s = c.op_n(
        Op::Sort {
            axis: 0,
            descending: false,
        },
        &[x],
    );
    c.f.add_output("s", s[0]);
    c.f.add_output("i", i);
    // The sort's index output is not float.
    let mut c2 = c.f.clone();
    c2.body.results[0] = s[1];
    assert!(matches!(
        grad(&c2, &[x], 0),
        Err(AutodiffError::NotFloat { .. })
    ));
    assert!(matches!(
        grad(&c.f, &[i], 0),
        Err(AutodiffError::NotFloat { .. })
    ));
    assert!(matches!(
        grad(&c.f, &[x], 5),
        Err(AutodiffError::NoOutput { .. })
    ));
    assert!(matches!(
        grad_by_name(&c.f, &["nope"], "s"),
        Err(AutodiffError::UnknownValue(_))
    ));
    // Scatter with mode mul on the path.
    let mut c3 = Case::new();
    let x = c3.input(Tensor::from_vec(vec![2], vec![1.0f64, 2.0]).unwrap());
    let idx = c3.constant(Tensor::from_vec(vec![1], vec![0i64]).unwrap());
    let u = c3.input(Tensor::from_vec(vec![1], vec![3.0f64]).unwrap());
    let y = c3.op(
        Op::Scatter {
            mode: ScatterMode::Mul,
        },
        &[x, idx, u],
    );
    c3.f.add_output("y", y);
    let e = grad(&c3.f, &[x], 0).unwrap_err();
    assert!(e.to_string().contains("scatter"), "{e}");
}

#[test]
fn symbolic_batch_dims() {
    // A symbolic batch: broadcasting and reductions keep it symbolic.
    let src = "func @main(%x: f32[N,3], %b: f32[3]) -> (l: f32[]) {\n  %y = add(%x, %b) : f32[N,3]\n  %t = tanh(%y) : f32[N,3]\n  %l = reduce_sum(%t) {axes=[0, 1], keep_dims=false} : f32[]\n  return %l\n}\n";
    let f = terafab_ir::parse::parse_function(src);
    let f = match f {
        Ok(f) => f,
        Err(e) => panic!("{e}"),
    };
    let g = grad_by_name(&f, &["x", "b"], "l").unwrap();
    let x = Tensor::from_vec(vec![2, 3], vec![0.1f32, 0.2, 0.3, -0.1, -0.2, -0.3]).unwrap();
    let b = Tensor::from_vec(vec![3], vec![0.0f32, 0.5, -0.5]).unwrap();
    let out = run_function(&g, &[x.clone(), b]).unwrap();
    assert_eq!(out[1].shape(), [2, 3]);
    assert_eq!(out[2].shape(), [3]);
    let gx = out[1].to_f64_vec();
    let gb = out[2].to_f64_vec();
    for j in 0..3 {
        assert!((gb[j] - (gx[j] + gx[3 + j])).abs() < 1e-6);
    }
}

#[test]
fn autodiff_pass_in_a_pipeline() {
    let src = "func @main(%x: f32[2], %n: i64[2]) -> (l: f32[]) {\n  %s = mul(%x, %x) : f32[2]\n  %l = reduce_sum(%s) {axes=[0], keep_dims=false} : f32[]\n  return %l\n}\n";
    let f = terafab_ir::parse::parse_function(src).unwrap();
    let mut m = terafab_ir::Module::new(vec![f]);
    crate::run_pipeline(
        &mut m,
        "autodiff,default",
        crate::PipelineOptions::default(),
    )
    .unwrap();
    let f = &m.functions[0];
    assert_eq!(f.output_names, ["l", "grad_x"]);
    let x = Tensor::from_vec(vec![2], vec![1.5f32, -2.0]).unwrap();
    let n = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
    let out = run_function(f, &[x, n]).unwrap();
    assert_eq!(out[1].to_f64_vec(), [3.0, -4.0]);
    // Two outputs: the pass refuses.
    let src2 = "func @main(%x: f32[2]) -> (a: f32[2], b: f32[2]) {\n  return %x, %x\n}\n";
    let f2 = terafab_ir::parse::parse_function(src2).unwrap();
    let mut m2 = terafab_ir::Module::new(vec![f2]);
    assert!(crate::run_pipeline(&mut m2, "autodiff", crate::PipelineOptions::default()).is_err());
}

#[test]
fn control_flow_on_the_path_is_a_typed_error() {
    // x reaches the output only through values captured by the regions of an `if`.
    let src = "\
func @main(%c: bool[], %x: f32[2]) -> (r: f32[2]) {
  %r = if(%c) : f32[2] region() {
    %t = neg(%x) : f32[2]
    yield %t
  } region() {
    %one = constant() {value=dense<f32[]>[1.0]} : f32[]
    %e = add(%x, %one) : f32[2]
    yield %e
  }
  return %r
}";
    let f = terafab_ir::parse::parse_function(src).unwrap();
    match grad_by_name(&f, &["x"], "r") {
        Err(AutodiffError::NotDifferentiable { op, node, .. }) => {
            assert_eq!(op, "if");
            assert!(node.contains("%r"), "{node}");
        }
        other => panic!("{other:?}"),
    }
}
