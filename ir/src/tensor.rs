//! Tensor data: a static shape and a typed, contiguous, row-major buffer.
//!
//! Buffers are reference counted (`Arc<[T]>`), so a 500 MB weight is shared by
//! the graph, the interpreter and a runtime without copies, and an element costs
//! exactly its own size. Allocation is fallible: a hostile shape gives an
//! [`TensorError::Alloc`] instead of an abort.

use std::fmt;
use std::sync::Arc;

use half::{bf16, f16};

use crate::dtype::DType;
use crate::float8::{CF8E4M3, CF8E5M2, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};

/// The typed storage of a tensor.
#[derive(Clone)]
pub enum Data {
    F64(Arc<[f64]>),
    F32(Arc<[f32]>),
    F16(Arc<[f16]>),
    BF16(Arc<[bf16]>),
    F8E4M3FN(Arc<[F8E4M3FN]>),
    F8E4M3FNUZ(Arc<[F8E4M3FNUZ]>),
    F8E5M2(Arc<[F8E5M2]>),
    F8E5M2FNUZ(Arc<[F8E5M2FNUZ]>),
    CF8E4M3(Arc<[CF8E4M3]>),
    CF8E5M2(Arc<[CF8E5M2]>),
    I8(Arc<[i8]>),
    I16(Arc<[i16]>),
    I32(Arc<[i32]>),
    I64(Arc<[i64]>),
    U8(Arc<[u8]>),
    U16(Arc<[u16]>),
    U32(Arc<[u32]>),
    U64(Arc<[u64]>),
    Bool(Arc<[bool]>),
}

/// Run `$body` with `$v` bound to the typed slice `&Arc<[T]>` of a [`Data`], and the type alias `$T`.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident, $T:ident => $body:expr) => {
        match $data {
            $crate::tensor::Data::F64($v) => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::tensor::Data::F32($v) => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::tensor::Data::F16($v) => {
                #[allow(dead_code)]
                type $T = $crate::half::f16;
                $body
            }
            $crate::tensor::Data::BF16($v) => {
                #[allow(dead_code)]
                type $T = $crate::half::bf16;
                $body
            }
            $crate::tensor::Data::F8E4M3FN($v) => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E4M3FN;
                $body
            }
            $crate::tensor::Data::F8E4M3FNUZ($v) => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E4M3FNUZ;
                $body
            }
            $crate::tensor::Data::F8E5M2($v) => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E5M2;
                $body
            }
            $crate::tensor::Data::F8E5M2FNUZ($v) => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E5M2FNUZ;
                $body
            }
            $crate::tensor::Data::CF8E4M3($v) => {
                #[allow(dead_code)]
                type $T = $crate::float8::CF8E4M3;
                $body
            }
            $crate::tensor::Data::CF8E5M2($v) => {
                #[allow(dead_code)]
                type $T = $crate::float8::CF8E5M2;
                $body
            }
            $crate::tensor::Data::I8($v) => {
                #[allow(dead_code)]
                type $T = i8;
                $body
            }
            $crate::tensor::Data::I16($v) => {
                #[allow(dead_code)]
                type $T = i16;
                $body
            }
            $crate::tensor::Data::I32($v) => {
                #[allow(dead_code)]
                type $T = i32;
                $body
            }
            $crate::tensor::Data::I64($v) => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            $crate::tensor::Data::U8($v) => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            $crate::tensor::Data::U16($v) => {
                #[allow(dead_code)]
                type $T = u16;
                $body
            }
            $crate::tensor::Data::U32($v) => {
                #[allow(dead_code)]
                type $T = u32;
                $body
            }
            $crate::tensor::Data::U64($v) => {
                #[allow(dead_code)]
                type $T = u64;
                $body
            }
            $crate::tensor::Data::Bool($v) => {
                #[allow(dead_code)]
                type $T = bool;
                $body
            }
        }
    };
}

/// Run `$body` with the type alias `$T` set to the Rust element type of a [`DType`].
#[macro_export]
macro_rules! with_dtype {
    ($dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            $crate::DType::F64 => {
                #[allow(dead_code)]
                type $T = f64;
                $body
            }
            $crate::DType::F32 => {
                #[allow(dead_code)]
                type $T = f32;
                $body
            }
            $crate::DType::F16 => {
                #[allow(dead_code)]
                type $T = $crate::half::f16;
                $body
            }
            $crate::DType::BF16 => {
                #[allow(dead_code)]
                type $T = $crate::half::bf16;
                $body
            }
            $crate::DType::F8E4M3FN => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E4M3FN;
                $body
            }
            $crate::DType::F8E4M3FNUZ => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E4M3FNUZ;
                $body
            }
            $crate::DType::F8E5M2 => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E5M2;
                $body
            }
            $crate::DType::F8E5M2FNUZ => {
                #[allow(dead_code)]
                type $T = $crate::float8::F8E5M2FNUZ;
                $body
            }
            $crate::DType::CF8E4M3 => {
                #[allow(dead_code)]
                type $T = $crate::float8::CF8E4M3;
                $body
            }
            $crate::DType::CF8E5M2 => {
                #[allow(dead_code)]
                type $T = $crate::float8::CF8E5M2;
                $body
            }
            $crate::DType::I8 => {
                #[allow(dead_code)]
                type $T = i8;
                $body
            }
            $crate::DType::I16 => {
                #[allow(dead_code)]
                type $T = i16;
                $body
            }
            $crate::DType::I32 => {
                #[allow(dead_code)]
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                #[allow(dead_code)]
                type $T = i64;
                $body
            }
            $crate::DType::U8 => {
                #[allow(dead_code)]
                type $T = u8;
                $body
            }
            $crate::DType::U16 => {
                #[allow(dead_code)]
                type $T = u16;
                $body
            }
            $crate::DType::U32 => {
                #[allow(dead_code)]
                type $T = u32;
                $body
            }
            $crate::DType::U64 => {
                #[allow(dead_code)]
                type $T = u64;
                $body
            }
            $crate::DType::Bool => {
                #[allow(dead_code)]
                type $T = bool;
                $body
            }
        }
    };
}

/// A Rust type that is the element type of some [`DType`].
pub trait Element: Copy + Send + Sync + PartialEq + fmt::Debug + Default + 'static {
    const DTYPE: DType;
    fn wrap(data: Arc<[Self]>) -> Data;
    fn unwrap(data: &Data) -> Option<&Arc<[Self]>>;
    /// Exact for every type but i64/u64 beyond 2^53.
    fn to_f64(self) -> f64;
    /// Convert with the rules of the `convert` op (RNE, saturating, NaN -> 0 for ints).
    fn from_f64(v: f64) -> Self;
}

macro_rules! impl_element_num {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(data: Arc<[Self]>) -> Data {
                Data::$variant(data)
            }
            fn unwrap(data: &Data) -> Option<&Arc<[Self]>> {
                match data {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                // `as` from float to int truncates toward zero, saturates, and maps NaN to 0.
                v as $t
            }
        }
    };
}
impl_element_num!(f64, F64);
impl_element_num!(f32, F32);
impl_element_num!(i8, I8);
impl_element_num!(i16, I16);
impl_element_num!(i32, I32);
impl_element_num!(i64, I64);
impl_element_num!(u8, U8);
impl_element_num!(u16, U16);
impl_element_num!(u32, U32);
impl_element_num!(u64, U64);

macro_rules! impl_element_half {
    ($t:ty, $variant:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$variant;
            fn wrap(data: Arc<[Self]>) -> Data {
                Data::$variant(data)
            }
            fn unwrap(data: &Data) -> Option<&Arc<[Self]>> {
                match data {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                self.to_f64()
            }
            fn from_f64(v: f64) -> Self {
                // half's own from_f64 truncates low bits before rounding; rounding to odd into
                // f32 first and then to nearest even is exact (f32 has > 2 more bits).
                <$t>::from_f32(round_to_odd_f32(v))
            }
        }
    };
}
impl_element_half!(f16, F16);
impl_element_half!(bf16, BF16);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn wrap(data: Arc<[Self]>) -> Data {
        Data::Bool(data)
    }
    fn unwrap(data: &Data) -> Option<&Arc<[Self]>> {
        match data {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }
    fn to_f64(self) -> f64 {
        if self { 1.0 } else { 0.0 }
    }
    fn from_f64(v: f64) -> Self {
        // Nonzero (NaN included) is true, as in numpy's astype(bool).
        v != 0.0
    }
}

/// Round an f64 to f32 with round-to-odd: exact values stay, inexact ones go to the neighbour
/// whose last mantissa bit is 1. A second rounding from that f32 to any format with at least two
/// fewer mantissa bits (f16, bf16) is then correctly rounded (no double-rounding error).
pub fn round_to_odd_f32(x: f64) -> f32 {
    let f = x as f32;
    if !f.is_finite() || f as f64 == x || f.to_bits() & 1 == 1 {
        // NaN, overflow (already infinite in f16 and bf16), exact, or already odd.
        f
    } else if (f as f64) < x {
        f.next_up()
    } else {
        f.next_down()
    }
}

/// Errors building or reading tensors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} has {expected} elements but {actual} were given")]
    ElementCount {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("cannot allocate a tensor of shape {shape:?} and type {dtype}: {reason}")]
    Alloc {
        shape: Vec<usize>,
        dtype: DType,
        reason: String,
    },
    #[error("expected a tensor of type {expected}, found {actual}")]
    DType { expected: DType, actual: DType },
}

/// Number of elements of a static shape, or an allocation error on overflow.
pub fn checked_num_elements(shape: &[usize], dtype: DType) -> Result<usize, TensorError> {
    if shape.contains(&0) {
        return Ok(0);
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|n| {
            n.checked_mul(dtype.size_bytes())
                .is_some_and(|b| b <= isize::MAX as usize)
        })
        .ok_or_else(|| TensorError::Alloc {
            shape: shape.to_vec(),
            dtype,
            reason: "size overflows the address space".into(),
        })
}

/// A `Vec` of `n` copies of `value`, failing cleanly instead of aborting when memory is short.
pub fn try_filled_vec<T: Element>(shape: &[usize], value: T) -> Result<Vec<T>, TensorError> {
    let n = checked_num_elements(shape, T::DTYPE)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| TensorError::Alloc {
        shape: shape.to_vec(),
        dtype: T::DTYPE,
        reason: e.to_string(),
    })?;
    v.resize(n, value);
    Ok(v)
}

/// A tensor value: static shape plus typed data, row-major.
#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    /// Build from a typed vector; fails if the element count does not match the shape.
    pub fn from_vec<T: Element>(shape: Vec<usize>, data: Vec<T>) -> Result<Tensor, TensorError> {
        Tensor::from_data(shape, T::wrap(data.into()))
    }

    /// Build from shared data; fails if the element count does not match the shape.
    pub fn from_data(shape: Vec<usize>, data: Data) -> Result<Tensor, TensorError> {
        let expected = checked_num_elements(&shape, data_dtype(&data))?;
        let actual = data_len(&data);
        if expected != actual {
            return Err(TensorError::ElementCount {
                shape,
                expected,
                actual,
            });
        }
        Ok(Tensor { shape, data })
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor {
            shape: Vec::new(),
            data: T::wrap(vec![v].into()),
        }
    }

    /// A tensor filled with zeros (false for bool).
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor, TensorError> {
        with_dtype!(dtype, T => {
            let v = try_filled_vec::<T>(shape, T::default())?;
            Ok(Tensor { shape: shape.to_vec(), data: T::wrap(v.into()) })
        })
    }

    /// A tensor of `dtype` whose elements are `f(i)` converted from f64 with the `convert` rules.
    pub fn from_fn(
        dtype: DType,
        shape: &[usize],
        f: impl Fn(usize) -> f64,
    ) -> Result<Tensor, TensorError> {
        with_dtype!(dtype, T => {
            let mut v = try_filled_vec::<T>(shape, T::default())?;
            for (i, x) in v.iter_mut().enumerate() {
                *x = T::from_f64(f(i));
            }
            Ok(Tensor { shape: shape.to_vec(), data: T::wrap(v.into()) })
        })
    }

    pub fn dtype(&self) -> DType {
        data_dtype(&self.data)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        data_len(&self.data)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn size_bytes(&self) -> usize {
        self.len() * self.dtype().size_bytes()
    }

    /// The elements as a typed slice, if the tensor has element type `T`.
    pub fn as_slice<T: Element>(&self) -> Option<&[T]> {
        T::unwrap(&self.data).map(|a| &a[..])
    }

    /// The elements as a typed slice, or a dtype error.
    pub fn typed<T: Element>(&self) -> Result<&[T], TensorError> {
        self.as_slice().ok_or(TensorError::DType {
            expected: T::DTYPE,
            actual: self.dtype(),
        })
    }

    /// Same data, another shape with the same element count.
    pub fn reshaped(&self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        Tensor::from_data(shape, self.data.clone())
    }

    /// Every element as f64 (exact but for i64/u64 beyond 2^53). For tests and summaries.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        with_data!(&self.data, v, T => v.iter().map(|x| Element::to_f64(*x)).collect())
    }

    /// Every element as i64 if the tensor has an integer or bool type.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            Data::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I16(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::I64(v) => Some(v.to_vec()),
            Data::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::U16(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::U32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::U64(v) => Some(v.iter().map(|&x| x as i64).collect()),
            Data::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            _ => None,
        }
    }

    /// True when both tensors have the same dtype, shape and bitwise-equal elements
    /// (NaNs with the same bits compare equal; 0.0 and -0.0 differ).
    pub fn bit_eq(&self, other: &Tensor) -> bool {
        if self.shape != other.shape || self.dtype() != other.dtype() {
            return false;
        }
        match (&self.data, &other.data) {
            (Data::F64(a), Data::F64(b)) => a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            (Data::F32(a), Data::F32(b)) => a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            (Data::F16(a), Data::F16(b)) => a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            (Data::BF16(a), Data::BF16(b)) => a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits()),
            (Data::F8E4M3FN(a), Data::F8E4M3FN(b)) => {
                a.iter().zip(b.iter()).all(|(x, y)| x.0 == y.0)
            }
            (Data::F8E4M3FNUZ(a), Data::F8E4M3FNUZ(b)) => {
                a.iter().zip(b.iter()).all(|(x, y)| x.0 == y.0)
            }
            (Data::F8E5M2(a), Data::F8E5M2(b)) => a.iter().zip(b.iter()).all(|(x, y)| x.0 == y.0),
            (Data::F8E5M2FNUZ(a), Data::F8E5M2FNUZ(b)) => {
                a.iter().zip(b.iter()).all(|(x, y)| x.0 == y.0)
            }
            (Data::CF8E4M3(a), Data::CF8E4M3(b)) => a.iter().zip(b.iter()).all(|(x, y)| x.0 == y.0),
            (Data::CF8E5M2(a), Data::CF8E5M2(b)) => a.iter().zip(b.iter()).all(|(x, y)| x.0 == y.0),
            // `as i64` is a bijection on every integer type of at most 64 bits, and on bool.
            _ => self.to_i64_vec() == other.to_i64_vec(),
        }
    }
}

/// The element type of a buffer.
pub fn data_dtype(data: &Data) -> DType {
    with_data!(data, _v, T => <T as Element>::DTYPE)
}

/// The element count of a buffer.
pub fn data_len(data: &Data) -> usize {
    with_data!(data, v, _T => v.len())
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor<{}{:?}>", self.dtype(), self.shape)?;
        const MAX: usize = 16;
        with_data!(&self.data, v, _T => {
            let shown: Vec<_> = v.iter().take(MAX).collect();
            write!(f, "{shown:?}")?;
            if v.len() > MAX {
                write!(f, "..(+{})", v.len() - MAX)?;
            }
            Ok(())
        })
    }
}

impl PartialEq for Tensor {
    /// Structural equality by bits; see [`Tensor::bit_eq`].
    fn eq(&self, other: &Self) -> bool {
        self.bit_eq(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_and_read() {
        let t = Tensor::from_vec(vec![2, 3], vec![1.0f32, 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(t.dtype(), DType::F32);
        assert_eq!(t.shape(), &[2, 3]);
        assert_eq!(t.as_slice::<f32>().unwrap()[4], 5.0);
        assert!(t.as_slice::<f64>().is_none());
        assert!(Tensor::from_vec(vec![2, 2], vec![1i32; 3]).is_err());
    }

    #[test]
    fn float8_tensors_compare_by_bits() {
        // -0 (0x80) and +0 are equal values but different bits, in every float8 type with a -0.
        fn zeros<T: crate::float8::Float8>() -> (Tensor, Tensor) {
            let t = |b| Tensor::from_vec(vec![1], vec![T::from_bits(b)]).unwrap();
            (t(0x00), t(0x80))
        }
        for (pos, neg) in [
            zeros::<F8E4M3FN>(),
            zeros::<F8E5M2>(),
            zeros::<CF8E4M3>(),
            zeros::<CF8E5M2>(),
        ] {
            assert!(pos.bit_eq(&pos) && !pos.bit_eq(&neg), "{pos:?}");
            assert_eq!(pos.to_f64_vec(), neg.to_f64_vec());
        }
        // Same bytes, another float8 type: not equal.
        let a = Tensor::from_vec(vec![1], vec![CF8E4M3(0x38)]).unwrap();
        let b = Tensor::from_vec(vec![1], vec![F8E4M3FN(0x38)]).unwrap();
        assert_eq!(a.to_f64_vec(), b.to_f64_vec());
        assert!(!a.bit_eq(&b));
        assert_eq!(a.dtype(), DType::CF8E4M3);
        let z = Tensor::zeros(DType::CF8E5M2, &[2]).unwrap();
        assert_eq!(z.as_slice::<CF8E5M2>().map(|v| v[1].0), Some(0));
    }

    #[test]
    fn clone_shares_storage() {
        let t = Tensor::from_vec(vec![1 << 20], vec![0u8; 1 << 20]).unwrap();
        let u = t.clone();
        assert!(std::ptr::eq(
            t.as_slice::<u8>().unwrap().as_ptr(),
            u.as_slice::<u8>().unwrap().as_ptr()
        ));
    }

    #[test]
    fn hostile_sizes_fail_cleanly() {
        assert!(matches!(
            Tensor::zeros(DType::F32, &[1 << 40, 1 << 40]),
            Err(TensorError::Alloc { .. })
        ));
        assert!(matches!(
            Tensor::zeros(DType::F64, &[usize::MAX / 4]),
            Err(TensorError::Alloc { .. })
        ));
    }

    #[test]
    fn rounding_to_half_types_is_nearest_even() {
        // 1 + 2^-8 lies halfway between two bf16 values: ties to even (1.0).
        assert_eq!(bf16::from_f64(1.0 + 1.0 / 256.0).to_f32(), 1.0);
        // 1 + 3*2^-8 ties to the even neighbour 1 + 2^-6.
        assert_eq!(bf16::from_f64(1.0 + 3.0 / 256.0).to_f32(), 1.0 + 1.0 / 64.0);
        assert_eq!(f16::from_f64(65520.0), f16::INFINITY);
        // Just above a tie rounds up (half's own from_f64 would truncate first and round down).
        let above_tie = 1.0 + 1.0 / 256.0 + 2f64.powi(-40);
        assert_eq!(
            <bf16 as Element>::from_f64(above_tie).to_f32(),
            1.0 + 1.0 / 128.0
        );
        assert_eq!(
            checked_num_elements(&[1 << 62, 1 << 62, 0], DType::F32),
            Ok(0)
        );
        assert_eq!(<i8 as Element>::from_f64(300.0), 127);
        assert_eq!(<i32 as Element>::from_f64(f64::NAN), 0);
        assert_eq!(<u8 as Element>::from_f64(-3.7), 0);
        assert_eq!(<i64 as Element>::from_f64(-3.7), -3);
    }
}
