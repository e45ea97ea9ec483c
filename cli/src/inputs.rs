//! The inputs of a run: read from `.npy` files, or deterministic random values.
//!
//! Random values come from a counter-based splitmix64 stream: element `i` of the input at
//! parameter position `k` depends only on the seed, `k` and `i`, so it is the same whichever other
//! inputs are given by file. Floats are uniform in [-1, 1) (on a grid the element type represents
//! exactly), integers uniform in [0, 10), bools fair coins.

use std::collections::HashMap;
use std::path::PathBuf;

use terafab_ir::shape::Dim;
use terafab_ir::{DType, Function, Tensor, TensorType};

use crate::error::CliError;

/// Where an input's values came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Random,
}

/// One concrete input of a function.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub tensor: Tensor,
    pub origin: Origin,
}

/// How to fill the inputs no file was given for.
#[derive(Debug, Clone, Copy)]
pub struct RandomSpec<'a> {
    pub seed: u64,
    /// Extents of symbolic dims, `--dim NAME=N`.
    pub dims: &'a [(String, usize)],
}

/// A symbolic dim's extent and the input that bound it.
type Bound = HashMap<String, (usize, String)>;

/// The inputs of `func` in parameter order: those named in `files` read from them (or taken from
/// `loaded`, the files already read, by input name), the others random if `random` is given (an
/// error otherwise).
pub fn build(
    func: &Function,
    files: &[(String, PathBuf)],
    loaded: &HashMap<String, Tensor>,
    random: Option<RandomSpec<'_>>,
) -> Result<Vec<Input>, CliError> {
    let params: Vec<(&str, &TensorType)> = func
        .inputs()
        .iter()
        .map(|&v| {
            let info = func.values.get(v);
            (info.name.as_str(), &info.ty)
        })
        .collect();

    let mut by_name: HashMap<&str, &PathBuf> = HashMap::new();
    for (name, path) in files {
        if !params.iter().any(|(p, _)| p == name) {
            return Err(CliError::UnknownInput {
                name: name.clone(),
                func: func.name.clone(),
                known: name_list(params.iter().map(|(p, _)| *p)),
            });
        }
        if by_name.insert(name, path).is_some() {
            return Err(CliError::DuplicateInput { name: name.clone() });
        }
    }
    if random.is_none() {
        let missing: Vec<&str> = params
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !by_name.contains_key(p))
            .collect();
        if !missing.is_empty() {
            return Err(CliError::MissingInputs {
                count: missing.len(),
                hint: missing
                    .iter()
                    .map(|n| format!("--input {n}=<file.npy>"))
                    .collect::<Vec<_>>()
                    .join(" "),
                names: name_list(missing),
                func: func.name.clone(),
            });
        }
    }

    // Inputs from files, checked against their declared types; they bind symbolic dims.
    let mut bound = Bound::new();
    let mut tensors: Vec<Option<Input>> = vec![None; params.len()];
    for (slot, (name, ty)) in tensors.iter_mut().zip(&params) {
        let Some(path) = by_name.get(name) else {
            continue;
        };
        let tensor = match loaded.get(*name) {
            Some(t) => t.clone(),
            None => terafab_ir::npy::read_npy(path).map_err(|source| CliError::ReadInput {
                name: name.to_string(),
                path: path.to_path_buf(),
                source,
            })?,
        };
        check_type(ty, &tensor, name, &mut bound).map_err(|detail| CliError::InputMismatch {
            name: name.to_string(),
            path: path.to_path_buf(),
            problem: format!(
                "is {} but @{} expects {ty}{detail}",
                TensorType::from_static(tensor.dtype(), tensor.shape()),
                func.name
            ),
        })?;
        *slot = Some(Input {
            name: name.to_string(),
            tensor,
            origin: Origin::File(path.to_path_buf()),
        });
    }

    if let Some(spec) = random {
        bind_dims(func, &params, spec.dims, &mut bound)?;
        fill_random(&params, &mut tensors, spec.seed, &bound)?;
    }
    // Every slot is filled: by a file, or randomly (missing inputs without random were refused).
    Ok(tensors.into_iter().flatten().collect())
}

/// Check a tensor against a declared type, binding symbolic dims; on mismatch, a detail to
/// append to the error (empty unless a symbolic dim was bound differently by another input).
fn check_type(ty: &TensorType, t: &Tensor, name: &str, bound: &mut Bound) -> Result<(), String> {
    if ty.dtype != t.dtype() || ty.shape.rank() != t.rank() {
        return Err(String::new());
    }
    for (d, &n) in ty.shape.dims().iter().zip(t.shape()) {
        match d {
            Dim::Static(s) if *s != n => return Err(String::new()),
            Dim::Static(_) => {}
            Dim::Sym(s) => match bound.get(s) {
                Some((v, by)) if *v != n => {
                    return Err(format!(" ({s}={v} from input `{by}`)"));
                }
                Some(_) => {}
                None => {
                    bound.insert(s.clone(), (n, name.to_string()));
                }
            },
        }
    }
    Ok(())
}

/// The symbolic dims of a function's inputs, in order of first appearance.
pub fn symbolic_dims(func: &Function) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for &v in func.inputs() {
        for d in func.values.ty(v).shape.dims() {
            if let Dim::Sym(s) = d
                && !out.contains(s)
            {
                out.push(s.clone());
            }
        }
    }
    out
}

/// Add the `--dim` extents to the dims bound by files, refusing unknown, repeated and
/// conflicting ones.
fn bind_dims(
    func: &Function,
    params: &[(&str, &TensorType)],
    dims: &[(String, usize)],
    bound: &mut Bound,
) -> Result<(), CliError> {
    let mut known: Vec<&str> = Vec::new();
    for (_, ty) in params {
        for d in ty.shape.dims() {
            if let Dim::Sym(s) = d
                && !known.contains(&s.as_str())
            {
                known.push(s);
            }
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in dims {
        if !known.contains(&name.as_str()) {
            return Err(CliError::UnknownDim {
                name: name.clone(),
                func: func.name.clone(),
                known: if known.is_empty() {
                    "it has none".to_string()
                } else {
                    format!("they are: {}", name_list(known.iter().copied()))
                },
            });
        }
        if seen.contains(&name.as_str()) {
            return Err(CliError::DuplicateDim { name: name.clone() });
        }
        seen.push(name);
        match bound.get(name) {
            Some((b, by)) if b != value => {
                return Err(CliError::DimConflict {
                    name: name.clone(),
                    value: *value,
                    bound: *b,
                    input: by.clone(),
                });
            }
            Some(_) => {}
            None => {
                bound.insert(name.clone(), (*value, "--dim".to_string()));
            }
        }
    }
    Ok(())
}

/// Fill the empty slots with random tensors; every symbolic dim they use must be bound.
fn fill_random(
    params: &[(&str, &TensorType)],
    tensors: &mut [Option<Input>],
    seed: u64,
    bound: &Bound,
) -> Result<(), CliError> {
    let mut unbound_inputs: Vec<&str> = Vec::new();
    let mut unbound_dims: Vec<&str> = Vec::new();
    let mut shapes: Vec<Option<Vec<usize>>> = Vec::with_capacity(params.len());
    for ((name, ty), slot) in params.iter().zip(tensors.iter()) {
        if slot.is_some() {
            shapes.push(None);
            continue;
        }
        let mut shape = Vec::with_capacity(ty.shape.rank());
        for d in ty.shape.dims() {
            match d {
                Dim::Static(n) => shape.push(*n),
                Dim::Sym(s) => match bound.get(s) {
                    Some((n, _)) => shape.push(*n),
                    None => {
                        if !unbound_dims.contains(&s.as_str()) {
                            unbound_dims.push(s);
                        }
                        if !unbound_inputs.contains(name) {
                            unbound_inputs.push(name);
                        }
                    }
                },
            }
        }
        shapes.push(Some(shape));
    }
    if !unbound_dims.is_empty() {
        return Err(CliError::UnboundDims {
            input_count: unbound_inputs.len(),
            inputs: name_list(unbound_inputs),
            dim_count: unbound_dims.len(),
            hint: unbound_dims
                .iter()
                .map(|d| format!("--dim {d}=<extent>"))
                .collect::<Vec<_>>()
                .join(" "),
            dims: name_list(unbound_dims),
        });
    }
    for (k, (((name, ty), slot), shape)) in params
        .iter()
        .zip(tensors.iter_mut())
        .zip(shapes)
        .enumerate()
    {
        let Some(shape) = shape else { continue };
        let tensor = random_tensor(ty.dtype, &shape, seed, k as u64).map_err(|source| {
            CliError::RandomInput {
                name: name.to_string(),
                source,
            }
        })?;
        *slot = Some(Input {
            name: name.to_string(),
            tensor,
            origin: Origin::Random,
        });
    }
    Ok(())
}

/// `` `a`, `b` `` for error messages.
fn name_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A random tensor for the input at parameter position `k`.
pub fn random_tensor(
    dtype: DType,
    shape: &[usize],
    seed: u64,
    k: u64,
) -> Result<Tensor, terafab_ir::TensorError> {
    enum Kind {
        /// Significand bits `p`: `j / 2^(p-1) - 1` is exact in the type for `j < 2^p`.
        Float(u32),
        Bool,
        Int,
    }
    let kind = match dtype {
        DType::F64 => Kind::Float(53),
        DType::F32 => Kind::Float(24),
        DType::F16 => Kind::Float(11),
        DType::BF16 => Kind::Float(8),
        d if let Some(f) = d.float8_format() => Kind::Float(f.mantissa_bits() + 1),
        DType::Bool => Kind::Bool,
        _ => Kind::Int,
    };
    let stream = Stream::new(seed, k);
    Tensor::from_fn(dtype, shape, |i| {
        let bits = stream.at(i as u64);
        match kind {
            Kind::Float(p) => (bits >> (64 - p)) as f64 / (1u64 << (p - 1)) as f64 - 1.0,
            Kind::Bool => (bits >> 63) as f64,
            // Uniform in [0, 10): the high word of bits * 10.
            Kind::Int => ((bits as u128 * 10) >> 64) as f64,
        }
    })
}

/// A counter-based splitmix64 stream: value `i` is the `i+1`-th output of splitmix64 started
/// from a state derived from the seed and the stream index.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    state: u64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Stream {
    pub fn new(seed: u64, index: u64) -> Stream {
        Stream {
            state: mix64(seed ^ mix64(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA))),
        }
    }

    pub fn at(&self, i: u64) -> u64 {
        mix64(
            self.state
                .wrapping_add(i.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference() {
        // Reference: splitmix64 seeded with 0 yields 0xe220a8397b1dcdaf first.
        assert_eq!(mix64(GOLDEN_GAMMA), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn random_values_are_in_range_and_deterministic() {
        for dtype in DType::ALL {
            let a = random_tensor(dtype, &[1000], 7, 2).unwrap();
            let b = random_tensor(dtype, &[1000], 7, 2).unwrap();
            assert!(a.bit_eq(&b), "{dtype}");
            let c = random_tensor(dtype, &[1000], 8, 2).unwrap();
            assert!(!a.bit_eq(&c), "{dtype}");
            let v = a.to_f64_vec();
            if dtype.is_float() {
                assert!(v.iter().all(|x| (-1.0..1.0).contains(x)), "{dtype}");
                assert!(v.iter().any(|x| *x < -0.5) && v.iter().any(|x| *x > 0.5));
            } else if dtype.is_bool() {
                let ones = v.iter().filter(|x| **x == 1.0).count();
                assert!((400..600).contains(&ones), "{ones}");
            } else {
                assert!(
                    v.iter()
                        .all(|x| (0.0..10.0).contains(x) && x.fract() == 0.0)
                );
                assert!(v.contains(&0.0) && v.contains(&9.0));
            }
        }
    }

    #[test]
    fn hostile_shapes_fail_cleanly() {
        assert!(random_tensor(DType::F32, &[1 << 40, 1 << 40], 0, 0).is_err());
    }
}
