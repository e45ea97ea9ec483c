//! Every rewrite is checked for semantic equality on random inputs: random small graphs of
//! elementwise and data-movement ops (built from templates aimed at the rewrites: identities
//! with splat constants `0`, `-0.0`, `1`, chains of transposes and reshapes, no-op movement,
//! constant subgraphs, duplicated nodes, constant conditions) are run by the interpreter before
//! and after a pipeline, on inputs drawn from values that tell rewrites apart (`-0.0`, `inf`,
//! NaN, integer extremes). The results must be bitwise equal.

use proptest::prelude::*;
use terafab_ir::infer::infer;
use terafab_ir::interp::run_function;
use terafab_ir::{
    BinaryOp, DType, Function, Module, Op, ReduceKind, Shape, Tensor, TensorType, UnaryOp, ValueId,
};
use terafab_passes::{PipelineOptions, run_pipeline};

/// Float values that tell exact and inexact rewrites apart.
const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    2.0,
    0.5,
    -3.5,
    f64::INFINITY,
    f64::NAN,
];
/// Integer values, extremes included (ops wrap).
const INTS: &[f64] = &[0.0, 1.0, -1.0, 2.0, -7.0, 2147483647.0, -2147483648.0];

/// A deterministic graph builder driven by a seed (SplitMix64).
struct Gen {
    state: u64,
    dtype: DType,
    f: Function,
    /// Every value defined so far (parameters and results).
    vals: Vec<ValueId>,
}

impl Gen {
    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 0
    }

    fn pool(&self) -> &'static [f64] {
        if self.dtype.is_float() { FLOATS } else { INTS }
    }

    /// A random element of the pool, or of `special` half of the time.
    fn element(&mut self, special: &[f64]) -> f64 {
        if !special.is_empty() && self.coin() {
            let i = self.below(special.len());
            special[i]
        } else {
            let pool = self.pool();
            let i = self.below(pool.len());
            pool[i]
        }
    }

    fn ty(&self, v: ValueId) -> TensorType {
        self.f.values.ty(v).clone()
    }

    fn dims(&self, v: ValueId) -> Vec<usize> {
        self.ty(v).shape.as_static().expect("static shapes")
    }

    fn pick(&mut self) -> ValueId {
        let i = self.below(self.vals.len());
        self.vals[i]
    }

    /// A value of the same type as `v` (possibly `v` itself).
    fn pick_like(&mut self, v: ValueId) -> ValueId {
        let ty = self.ty(v);
        let same: Vec<ValueId> = self
            .vals
            .iter()
            .copied()
            .filter(|&w| self.f.values.ty(w) == &ty)
            .collect();
        let i = self.below(same.len());
        same[i]
    }

    /// Push `op` on `inputs` if it type-checks; its result.
    fn push(&mut self, op: Op, inputs: Vec<ValueId>) -> Option<ValueId> {
        let tys: Vec<TensorType> = inputs.iter().map(|&v| self.ty(v)).collect();
        let refs: Vec<&TensorType> = tys.iter().collect();
        let out = infer(&op, &refs).ok()?;
        let v = self.f.push(op, inputs, out, &[], vec![], None)[0];
        self.vals.push(v);
        Some(v)
    }

    fn constant(&mut self, t: Tensor) -> ValueId {
        self.push(Op::Constant { value: t }, vec![])
            .expect("constants type-check")
    }

    /// A constant of `dims` whose elements are all `c` (or random pool values if `c` is None).
    fn tensor(&mut self, dtype: DType, dims: &[usize], c: Option<f64>) -> Tensor {
        let n: usize = dims.iter().product();
        let vals: Vec<f64> = (0..n)
            .map(|_| c.unwrap_or_else(|| self.element(&[])))
            .collect();
        Tensor::from_fn(dtype, dims, |i| vals[i]).expect("small tensor")
    }

    /// A splat constant of `v`'s type, or a scalar one, with an interesting value.
    fn splat_for(&mut self, v: ValueId) -> ValueId {
        let c = self.element(&[0.0, -0.0, 1.0]);
        let dims = if self.coin() { vec![] } else { self.dims(v) };
        let t = self.tensor(self.dtype, &dims, Some(c));
        self.constant(t)
    }

    fn binary_op(&mut self) -> BinaryOp {
        [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Max,
        ][self.below(5)]
    }

    /// A random permutation of `0..n`.
    fn perm(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i + 1);
            p.swap(i, j);
        }
        p
    }

    /// Apply one random template; returns nothing (templates that do not type-check are skipped).
    fn step(&mut self) {
        let v = self.pick();
        let dims = self.dims(v);
        let rank = dims.len();
        match self.below(16) {
            0 => {
                let c = self.splat_for(v);
                let op = Op::Binary(self.binary_op());
                let ins = if self.coin() { vec![v, c] } else { vec![c, v] };
                self.push(op, ins);
            }
            1 => {
                let w = self.pick_like(v);
                let op = Op::Binary(self.binary_op());
                self.push(op, vec![v, w]);
            }
            2 => {
                let n = self.push(Op::Unary(UnaryOp::Neg), vec![v]);
                if let Some(n) = n.filter(|_| self.coin()) {
                    self.push(Op::Unary(UnaryOp::Neg), vec![n]);
                }
            }
            3 => {
                let perm = self.perm(rank);
                self.push(Op::Transpose { perm }, vec![v]);
            }
            4 => {
                let shape = if self.coin() {
                    Shape::from_static(&[dims.iter().product()])
                } else {
                    Shape::from_static(&dims.iter().rev().copied().collect::<Vec<_>>())
                };
                self.push(Op::Reshape { shape }, vec![v]);
            }
            5 => {
                let to = if self.coin() { self.dtype } else { DType::F64 };
                if let Some(c) = self.push(Op::Convert { to }, vec![v]) {
                    self.push(Op::Convert { to: self.dtype }, vec![c]);
                }
            }
            6 => {
                let start: Vec<usize> = dims.iter().map(|&d| self.below(d.min(2))).collect();
                let limit = dims.clone();
                let stride: Vec<usize> = dims.iter().map(|_| 1 + self.below(2)).collect();
                let op = if self.coin() {
                    Op::Slice {
                        start: vec![0; rank],
                        limit,
                        stride: vec![1; rank],
                    }
                } else {
                    Op::Slice {
                        start,
                        limit,
                        stride,
                    }
                };
                self.push(op, vec![v]);
            }
            7 => {
                let s = self.element(&[]);
                let t = self.tensor(self.dtype, &[], Some(s));
                let pad = self.constant(t);
                let (low, high) = if self.coin() {
                    (vec![0; rank], vec![0; rank])
                } else {
                    let low = (0..rank).map(|_| self.below(2) as i64).collect();
                    (low, (0..rank).map(|_| self.below(2) as i64).collect())
                };
                let interior = vec![0; rank];
                self.push(
                    Op::Pad {
                        low,
                        high,
                        interior,
                    },
                    vec![v, pad],
                );
            }
            8 => {
                let axes: Vec<usize> = (0..rank).filter(|_| self.coin()).collect();
                self.push(Op::Reverse { axes }, vec![v]);
            }
            9 => {
                let axis = self.below(rank);
                let ins = if self.coin() {
                    vec![v]
                } else {
                    vec![v, self.pick_like(v)]
                };
                self.push(Op::Concat { axis }, ins);
            }
            10 => {
                let w = self.pick_like(v);
                let cond_dims = if self.coin() { vec![] } else { dims.clone() };
                let c = match self.below(3) {
                    0 => Some(1.0),
                    1 => Some(0.0),
                    _ => None,
                };
                let n: usize = cond_dims.iter().product();
                let bits: Vec<bool> = (0..n)
                    .map(|_| c.map_or_else(|| self.coin(), |c| c != 0.0))
                    .collect();
                let t = Tensor::from_vec(cond_dims, bits).expect("small tensor");
                let cond = self.constant(t);
                self.push(Op::Select, vec![cond, v, w]);
            }
            11 => {
                let mut to = dims.clone();
                if self.coin() {
                    to.insert(0, 2);
                }
                let b = self.push(
                    Op::Broadcast {
                        shape: Shape::from_static(&to),
                    },
                    vec![v],
                );
                if let Some(b) = b.filter(|_| self.coin()) {
                    let mut to2 = to.clone();
                    to2.insert(0, 1);
                    self.push(
                        Op::Broadcast {
                            shape: Shape::from_static(&to2),
                        },
                        vec![b],
                    );
                }
            }
            12 => {
                // Duplicate an earlier node (for cse).
                let len = self.f.body.nodes.len();
                if len > 0 {
                    let i = self.below(len);
                    let n = self.f.body.nodes[i].clone();
                    self.push(n.op, n.inputs);
                }
            }
            13 => {
                // A reduction over random axes (for fusion's reduction stages and rows).
                let axes: Vec<usize> = (0..rank).filter(|_| self.coin()).collect();
                let kind = [ReduceKind::Sum, ReduceKind::Max, ReduceKind::Min][self.below(3)];
                let keep_dims = self.coin();
                if let Some(r) = self.push(
                    Op::Reduce {
                        kind,
                        axes,
                        keep_dims,
                    },
                    vec![v],
                ) && keep_dims
                {
                    // Softmax-like: the reduction broadcast back over its input.
                    self.push(Op::Binary(BinaryOp::Sub), vec![v, r]);
                }
            }
            14 if rank > 0 => {
                // A matrix product with the transpose of a like value (contraction over the
                // last dim), for fusion's matmul stages.
                let w = self.pick_like(v);
                let last = rank - 1;
                self.push(
                    Op::DotGeneral {
                        lhs_batch: (0..last).collect(),
                        rhs_batch: (0..last).collect(),
                        lhs_contract: vec![last],
                        rhs_contract: vec![last],
                    },
                    vec![v, w],
                );
            }
            _ => {
                // A constant subgraph (for fold).
                let a = self.tensor(self.dtype, &dims, None);
                let a = self.constant(a);
                let b = self.splat_for(a);
                let op = Op::Binary(self.binary_op());
                if let Some(s) = self.push(op, vec![a, b]) {
                    let op = Op::Binary(self.binary_op());
                    self.push(op, vec![s, v]);
                }
            }
        }
    }
}

/// A random function with two parameters of one random type, and random inputs for it.
fn random_case(seed: u64) -> (Function, Vec<Tensor>) {
    let mut g = Gen {
        state: seed,
        dtype: DType::F32,
        f: Function::new("main"),
        vals: Vec::new(),
    };
    g.dtype = if g.coin() { DType::F32 } else { DType::I32 };
    let rank = 1 + g.below(3);
    let dims: Vec<usize> = (0..rank).map(|_| 1 + g.below(3)).collect();
    let ty = TensorType::from_static(g.dtype, &dims);
    for name in ["x", "y"] {
        let p = g.f.add_input(name, ty.clone());
        g.vals.push(p);
    }
    let steps = 4 + g.below(16);
    for _ in 0..steps {
        g.step();
    }
    let last = *g.vals.last().expect("parameters");
    let mut outs = vec![last];
    for _ in 0..g.below(3) {
        outs.push(g.pick());
    }
    for (i, v) in outs.into_iter().enumerate() {
        g.f.add_output(&format!("o{i}"), v);
    }
    let inputs = (0..2).map(|_| g.tensor(g.dtype, &dims, None)).collect();
    (g.f, inputs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Fusion into kernels and the kernel interpreter against the graph interpreter. Integers
    /// are bitwise equal; f32 results may differ only where a matrix product rounds each
    /// product to f32 before the f64 sum (the graph's dot_general sums exact products): a few
    /// ulps, so rtol 1e-5 (atol 1e-6 for sums that cancel to near zero).
    #[test]
    fn kernels_match_the_interpreter(seed in any::<u64>()) {
        let (f, inputs) = random_case(seed);
        let want = run_function(&f, &inputs).expect("generated graphs run");
        let bind = terafab_ir::interp::bind_inputs(&f, &inputs).expect("inputs fit");
        let p = terafab_passes::fuse::fuse_function(&f, &bind)
            .unwrap_or_else(|e| panic!("fuse: {e}\n{f}"));
        let plan = terafab_passes::fuse::plan_kernel_memory(&p).expect("static sizes");
        plan.check().unwrap_or_else(|e| panic!("kernel memory plan: {e}\n{plan}"));
        let got = terafab_ir::kernel::interp::run_program(&p, &inputs).unwrap_or_else(|e| {
            panic!("kernels: {e}\n{f}\n{}", terafab_ir::kernel::print::print_program(&p))
        });
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            let close = if g.dtype().is_float() {
                g.shape() == w.shape()
                    && g.to_f64_vec().iter().zip(w.to_f64_vec()).all(|(a, b)| {
                        (a.is_nan() && b.is_nan()) || a == &b || (a - b).abs() <= 1e-6 + 1e-5 * b.abs()
                    })
            } else {
                g.bit_eq(w)
            };
            prop_assert!(
                close,
                "kernels differ:\n{}\n{}\nwant {:?}\ngot {:?}",
                f,
                terafab_ir::kernel::print::print_program(&p),
                want,
                got
            );
        }
    }

    #[test]
    fn pipelines_preserve_results_bitwise(seed in any::<u64>()) {
        let (f, inputs) = random_case(seed);
        terafab_ir::verify::verify_function(&f).expect("generated graphs verify");
        let want = run_function(&f, &inputs).expect("generated graphs run");
        for pipeline in ["default", "canonicalize", "fold,cse", "infer-types,default,default"] {
            let mut m = Module::new(vec![f.clone()]);
            run_pipeline(&mut m, pipeline, PipelineOptions::default())
                .unwrap_or_else(|e| panic!("{pipeline}: {e}\n{f}"));
            let g = &m.functions[0];
            let got = run_function(g, &inputs).unwrap_or_else(|e| panic!("{pipeline}: {e}\n{g}"));
            prop_assert!(
                got == want,
                "{} changed the results on inputs {:?}\nbefore:\n{}after:\n{}\nwant {:?}\ngot {:?}",
                pipeline, inputs, f, g, want, got
            );
            if pipeline == "default" {
                prop_assert!(g.num_nodes() <= f.num_nodes());
            }
        }
    }
}
