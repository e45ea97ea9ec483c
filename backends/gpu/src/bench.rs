//! The work of a kernel, for benchmarks: the bytes it must move (every buffer it reads or
//! writes, once) and its arithmetic (two operations per point of a sum of products), and the
//! rates a measured time gives against the device's peaks.

use terafab_ir::kernel::{Body, Kernel, KernelProgram, Stage};

/// The bytes a kernel moves at least: each of its buffers read or written once.
pub fn kernel_bytes(p: &KernelProgram, k: &Kernel) -> usize {
    let mut bufs = k.inputs.clone();
    bufs.extend(&k.outputs);
    bufs.sort();
    bufs.dedup();
    bufs.iter()
        .map(|&b| p.buffer(b).len() * p.buffer(b).dtype.size_bytes())
        .sum()
}

/// The floating-point operations of a contraction kernel: 2 per point of each reduction
/// (a multiply and an add) at every point of the space; 0 for other kernels.
pub fn kernel_flops(k: &Kernel) -> f64 {
    let Body::Loops(nest) = &k.body else {
        return 0.0;
    };
    let space: usize = nest.space.iter().product();
    let reduce: usize = nest
        .stages
        .iter()
        .map(|s| match s {
            Stage::Reduce { vars, .. } => vars.iter().map(|v| v.1).product(),
            Stage::Store { .. } => 0,
        })
        .sum();
    2.0 * space as f64 * reduce as f64
}

/// One kernel's measured rates.
#[derive(Debug, Clone)]
pub struct KernelRate {
    pub name: String,
    pub kind: &'static str,
    pub seconds: f64,
    /// Bytes per second.
    pub bandwidth: f64,
    /// Of the device's peak memory bandwidth.
    pub bandwidth_fraction: f64,
    /// Floating-point operations per second (contractions).
    pub flops: f64,
}

/// The rates of every kernel of `p` timed in `seconds` (one per kernel), against `peak_bw`.
pub fn rates(p: &KernelProgram, seconds: &[f64], peak_bw: f64) -> Vec<KernelRate> {
    p.kernels
        .iter()
        .zip(seconds)
        .map(|(k, &s)| {
            let bw = kernel_bytes(p, k) as f64 / s.max(1e-12);
            KernelRate {
                name: k.name.clone(),
                kind: k.kind.name(),
                seconds: s,
                bandwidth: bw,
                bandwidth_fraction: bw / peak_bw,
                flops: kernel_flops(k) / s.max(1e-12),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::DType;
    use terafab_ir::kernel::{Buffer, Expr, Index, KernelKind, LoopNest, Storage, Var};

    #[test]
    fn bytes_and_flops_of_a_matmul() {
        let mut p = KernelProgram::new("m");
        let a = p.add_buffer(Buffer::new("a", DType::F32, vec![4, 8], Storage::Input(0)));
        let b = p.add_buffer(Buffer::new("b", DType::F32, vec![8, 2], Storage::Input(1)));
        let c = p.add_buffer(Buffer::new("c", DType::F32, vec![4, 2], Storage::Temp));
        let (i, j, k) = (Var(0), Var(1), Var(2));
        let load = |buf, x: Var, y: Var| Expr::Load {
            buffer: buf,
            index: vec![Index::Var(x), Index::Var(y)],
            fill: None,
        };
        let kern = Kernel {
            name: "mm".into(),
            kind: KernelKind::Matmul,
            inputs: vec![a, b],
            outputs: vec![c],
            body: Body::Loops(LoopNest {
                space: vec![4, 2],
                stages: vec![
                    Stage::Reduce {
                        local: terafab_ir::kernel::Local(0),
                        kind: terafab_ir::ReduceKind::Sum,
                        vars: vec![(k, 8)],
                        body: Expr::binary(terafab_ir::BinaryOp::Mul, load(a, i, k), load(b, k, j)),
                    },
                    Stage::Store {
                        buffer: c,
                        vars: vec![],
                        index: vec![Index::Var(i), Index::Var(j)],
                        value: Expr::Local(terafab_ir::kernel::Local(0)),
                    },
                ],
            }),
            sources: vec![],
        };
        assert_eq!(kernel_bytes(&p, &kern), (32 + 16 + 8) * 4);
        assert_eq!(kernel_flops(&kern), 2.0 * 8.0 * 8.0);
        p.kernels.push(kern);
        let r = rates(&p, &[1e-6], 1e9);
        assert_eq!(r.len(), 1);
        assert!((r[0].bandwidth - 224e6).abs() < 1.0, "{}", r[0].bandwidth);
        assert!((r[0].bandwidth_fraction - 0.224).abs() < 1e-9);
        assert!((r[0].flops - 128e6).abs() < 1.0, "{}", r[0].flops);
    }
}
