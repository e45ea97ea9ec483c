//! The ONNX op table: every supported op of the default domain and its importer.
//!
//! Ops are grouped by family, one file each (as in tract): [`math`] (elementwise arithmetic,
//! activations, logic, casts), [`nn`] (convolution, pooling, normalization, dropout),
//! [`linalg`] (matmul, gemm, einsum, attention, softmax, losses), [`array`] (shape and data movement), [`index`] (gather/scatter and
//! friends), [`reduce`] (reductions, arg-reductions, cumulative ops, top-k), [`rec`] (RNN, GRU,
//! LSTM) and [`control`] (If, Loop, Scan). Each family exports `OPS`, a list of
//! `(op_type, importer)`; [`lookup`] searches them all. Ops of other domains have their own
//! tables in [`DOMAINS`], searched by [`lookup_in`]: [`training`] (`ai.onnx.preview.training`:
//! Gradient, Momentum, Adam, Adagrad). An importer reads its node through
//! [`NodeCtx`] and decomposes it into core IR ops, following the node's opset version
//! (`ctx.opset`).

pub mod array;
pub mod control;
pub mod index;
pub mod linalg;
pub mod math;
pub mod nn;
pub mod rec;
pub mod reduce;
pub mod training;

use crate::onnx::import::Importer;
#[allow(unused_imports)]
pub(crate) use crate::onnx::import::{ImportError, NodeCtx};

/// Every family's table.
const FAMILIES: &[&[(&str, Importer)]] = &[
    array::OPS,
    control::OPS,
    index::OPS,
    linalg::OPS,
    math::OPS,
    nn::OPS,
    rec::OPS,
    reduce::OPS,
];

/// The op tables of the other domains, by domain name.
pub const DOMAINS: &[(&str, &[(&str, Importer)])] = &[(training::DOMAIN, training::OPS)];

/// The importer of an op of a domain other than the default one.
pub fn lookup_in(domain: &str, op_type: &str) -> Option<Importer> {
    DOMAINS
        .iter()
        .filter(|(d, _)| *d == domain)
        .flat_map(|(_, ops)| ops.iter())
        .find(|(n, _)| *n == op_type)
        .map(|(_, i)| *i)
}

/// The importer of a default-domain op.
pub fn lookup(op_type: &str) -> Option<Importer> {
    FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .find(|(n, _)| *n == op_type)
        .map(|(_, i)| *i)
}

/// Every supported op type, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&str> = FAMILIES
        .iter()
        .flat_map(|f| f.iter())
        .map(|(n, _)| *n)
        .collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn op_names_are_unique() {
        let v = super::supported_ops();
        let mut d = v.clone();
        d.dedup();
        assert_eq!(v, d, "an op is registered twice");
    }
}
