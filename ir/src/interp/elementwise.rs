//! Elementwise kernels: unary, binary (numpy broadcasting), compare, select, convert, iota.
//!
//! The per-type semantics live in the [`Scalar`] trait, implemented for every element type;
//! the kernels are generic over it and dispatch on the dtype once per call.
//!
//! - Floats compute in f64 and round once to their own type. For `+ - * /`, `sqrt` and `rem`
//!   this is exactly the correctly rounded result in f32, f16, bf16 and the float8 types (f64
//!   has more than twice their precision plus two bits, so the double rounding is innocuous);
//!   transcendental functions get f64 accuracy rounded once. Rounding into a float8 type follows
//!   `convert`: a finite result beyond the type's range saturates to its largest value.
//! - Integers wrap (two's complement); division and remainder by zero give 0.
//! - Bool is logical.

use std::f64::consts::FRAC_2_SQRT_PI;

use half::{bf16, f16};

use super::movement::{for_each_offset, signed_strides};
use super::{InterpError, invalid};
use crate::dtype::DType;
use crate::float8::{CF8E4M3, CF8E5M2, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use crate::op::{BinaryOp, CompareOp, UnaryOp};
use crate::shape::{broadcast_static, broadcast_strides, row_major_strides};
use crate::tensor::{Element, Tensor, try_filled_vec};
use crate::{with_data, with_dtype};

/// An element's exact value: integers and bool (0/1) as `Int`, floats as `Float` (every float
/// type widens to f64 exactly). Every conversion starts from here.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Int(i128),
    Float(f64),
}

/// The semantics of the elementwise ops on one element type.
pub(crate) trait Scalar: Element + PartialOrd {
    /// The value, exactly.
    fn value(self) -> Value;
    /// From an integer (or a bool as 0/1): integers wrap, floats round to nearest even, bool is
    /// `v != 0`. Exact for every `v` of at most 64 bits; wider `v` are not used.
    fn from_int(v: i128) -> Self;
    /// From a float: floats round to nearest even, integers truncate toward zero and saturate
    /// (NaN gives 0), bool is `v != 0` (NaN is true).
    fn from_float(v: f64) -> Self {
        <Self as Element>::from_f64(v)
    }
    /// The `convert` op on one element.
    fn from_value(v: Value) -> Self {
        match v {
            Value::Int(i) => Self::from_int(i),
            Value::Float(f) => Self::from_float(f),
        }
    }
    /// `is_nan`: false but for float NaNs.
    fn is_nan(self) -> bool {
        false
    }
    /// `is_inf`: false but for float infinities.
    fn is_inf(self) -> bool {
        false
    }
    /// The function computing `op` on this type (`is_nan`/`is_inf` excepted), or `None` where
    /// `op` is not defined on it.
    fn unary_fn(op: UnaryOp) -> Option<impl Fn(Self) -> Self>;
    /// The function computing `op` on this type, or `None` where `op` is not defined on it.
    fn binary_fn(op: BinaryOp) -> Option<impl Fn(Self, Self) -> Self>;
}

/// The f64 function computing a float unary op.
fn float_unary(op: UnaryOp) -> Option<fn(f64) -> f64> {
    use UnaryOp::*;
    let f: fn(f64) -> f64 = match op {
        Neg => |x| -x,
        Abs => f64::abs,
        // Zeros (of either sign) and NaN are their own sign.
        Sign => |x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        },
        Exp => f64::exp,
        Log => f64::ln,
        Sqrt => f64::sqrt,
        Rsqrt => |x| 1.0 / x.sqrt(),
        Sin => f64::sin,
        Cos => f64::cos,
        Tan => f64::tan,
        Asin => f64::asin,
        Acos => f64::acos,
        Atan => f64::atan,
        Sinh => f64::sinh,
        Cosh => f64::cosh,
        Tanh => f64::tanh,
        Asinh => f64::asinh,
        Acosh => f64::acosh,
        Atanh => f64::atanh,
        Erf => erf,
        Logistic => |x| 1.0 / (1.0 + (-x).exp()),
        Floor => f64::floor,
        Ceil => f64::ceil,
        Round => f64::round_ties_even,
        Not | IsNan | IsInf => return None,
    };
    Some(f)
}

/// The f64 function computing a float binary op.
fn float_binary(op: BinaryOp) -> Option<fn(f64, f64) -> f64> {
    use BinaryOp::*;
    let f: fn(f64, f64) -> f64 = match op {
        Add => |x, y| x + y,
        Sub => |x, y| x - y,
        Mul => |x, y| x * y,
        Div => |x, y| x / y,
        Rem => |x, y| x % y,
        Pow => f64::powf,
        // NaN propagates (the first NaN operand); otherwise the larger (smaller) in the total
        // order, which puts -0 below +0.
        Max => |x, y| {
            if x.is_nan() || !y.is_nan() && x.total_cmp(&y).is_ge() {
                x
            } else {
                y
            }
        },
        Min => |x, y| {
            if x.is_nan() || !y.is_nan() && x.total_cmp(&y).is_le() {
                x
            } else {
                y
            }
        },
        And | Or | Xor | ShiftLeft | ShiftRight => return None,
    };
    Some(f)
}

/// `v` rounded to f64 with round-to-odd: `v` itself when representable, else whichever
/// neighbour has an odd last mantissa bit. Rounding that once more to nearest even with at most
/// 51 significant bits (f32, f16, bf16) gives the correctly rounded `v`, which rounding through a
/// nearest-even f64 does not (e.g. `2^62 + 2^54 + 1` to bf16).
fn round_to_odd_f64(v: i128) -> f64 {
    let f = v as f64;
    // `f` is an integer of magnitude at most 2^127, so `f as i128` is exact (or saturates to
    // `v` itself at i128::MAX).
    let back = f as i128;
    if back == v || f.to_bits() & 1 == 1 {
        f
    } else if back < v {
        f.next_up()
    } else {
        f.next_down()
    }
}

pub(crate) use crate::tensor::round_to_odd_f32;

macro_rules! impl_scalar_float {
    ($($t:ty => |$v:ident| $from_int:expr, |$w:ident| $from_float:expr;)*) => {$(
        impl Scalar for $t {
            fn value(self) -> Value {
                Value::Float(Element::to_f64(self))
            }
            fn from_int($v: i128) -> Self {
                $from_int
            }
            fn from_float($w: f64) -> Self {
                $from_float
            }
            fn is_nan(self) -> bool {
                Element::to_f64(self).is_nan()
            }
            fn is_inf(self) -> bool {
                Element::to_f64(self).is_infinite()
            }
            fn unary_fn(op: UnaryOp) -> Option<impl Fn(Self) -> Self> {
                let f = float_unary(op)?;
                Some(move |x: Self| Self::from_float(f(Element::to_f64(x))))
            }
            fn binary_fn(op: BinaryOp) -> Option<impl Fn(Self, Self) -> Self> {
                let f = float_binary(op)?;
                Some(move |x: Self, y: Self| {
                    Self::from_float(f(Element::to_f64(x), Element::to_f64(y)))
                })
            }
        }
    )*};
}

// Rust's `as` to f64/f32 rounds to nearest even, directly from the integer or f64. f16 and bf16
// go through round-to-odd f32, whose conversion to them in `half` is correctly rounded. The float8
// types round the exact f64 once (`float8::Format::encode`, with the `convert` overflow rule).
impl_scalar_float! {
    f64 => |v| v as f64, |x| x;
    f32 => |v| v as f32, |x| x as f32;
    f16 => |v| Self::from_float(round_to_odd_f64(v)), |x| f16::from_f32(round_to_odd_f32(x));
    bf16 => |v| Self::from_float(round_to_odd_f64(v)), |x| bf16::from_f32(round_to_odd_f32(x));
    F8E4M3FN => |v| Self::from_float(round_to_odd_f64(v)), |x| Self::from_f64(x);
    F8E4M3FNUZ => |v| Self::from_float(round_to_odd_f64(v)), |x| Self::from_f64(x);
    F8E5M2 => |v| Self::from_float(round_to_odd_f64(v)), |x| Self::from_f64(x);
    F8E5M2FNUZ => |v| Self::from_float(round_to_odd_f64(v)), |x| Self::from_f64(x);
    CF8E4M3 => |v| Self::from_float(round_to_odd_f64(v)), |x| Self::from_f64(x);
    CF8E5M2 => |v| Self::from_float(round_to_odd_f64(v)), |x| Self::from_f64(x);
}

macro_rules! impl_scalar_int {
    ($($t:ty),* $(,)?) => {$(
        impl Scalar for $t {
            fn value(self) -> Value {
                Value::Int(self as i128)
            }
            fn from_int(v: i128) -> Self {
                // Integer `as` truncates to the low bits: two's complement wrapping.
                v as $t
            }
            fn unary_fn(op: UnaryOp) -> Option<impl Fn(Self) -> Self> {
                let f: fn(Self) -> Self = match op {
                    UnaryOp::Neg => <$t>::wrapping_neg,
                    UnaryOp::Abs => |x| if (x as i128) < 0 { x.wrapping_neg() } else { x },
                    UnaryOp::Sign => |x| Self::from_int((x as i128).signum()),
                    UnaryOp::Not => |x| !x,
                    _ => return None,
                };
                Some(f)
            }
            fn binary_fn(op: BinaryOp) -> Option<impl Fn(Self, Self) -> Self> {
                use BinaryOp::*;
                let f: fn(Self, Self) -> Self = match op {
                    Add => <$t>::wrapping_add,
                    Sub => <$t>::wrapping_sub,
                    Mul => <$t>::wrapping_mul,
                    // `wrapping_div` truncates and wraps `MIN / -1` to `MIN` (and `MIN % -1` to 0).
                    Div => |x, y| if y == 0 { 0 } else { x.wrapping_div(y) },
                    Rem => |x, y| if y == 0 { 0 } else { x.wrapping_rem(y) },
                    Pow => |x, y| {
                        let e = y as i128;
                        if e < 0 {
                            // 1 / x^-e truncated: nonzero only for x = ±1 (and x = 0
                            // divides by zero, giving 0).
                            let odd = e % 2 != 0;
                            return Self::from_int(match x as i128 {
                                1 => 1,
                                -1 if odd => -1,
                                -1 => 1,
                                _ => 0,
                            });
                        }
                        let (mut base, mut e, mut acc): (Self, u128, Self) = (x, e as u128, 1);
                        while e > 0 {
                            if e & 1 == 1 {
                                acc = acc.wrapping_mul(base);
                            }
                            base = base.wrapping_mul(base);
                            e >>= 1;
                        }
                        acc
                    },
                    Max => Ord::max,
                    Min => Ord::min,
                    And => |x, y| x & y,
                    Or => |x, y| x | y,
                    Xor => |x, y| x ^ y,
                    ShiftLeft => |x, y| {
                        if (0..<$t>::BITS as i128).contains(&(y as i128)) {
                            x << y as u32
                        } else {
                            0
                        }
                    },
                    // `>>` is arithmetic on signed types; shifting every bit out leaves the sign.
                    ShiftRight => |x, y| {
                        if (0..<$t>::BITS as i128).contains(&(y as i128)) {
                            x >> y as u32
                        } else if (x as i128) < 0 {
                            !0
                        } else {
                            0
                        }
                    },
                };
                Some(f)
            }
        }
    )*};
}

impl_scalar_int!(i8, i16, i32, i64, u8, u16, u32, u64);

impl Scalar for bool {
    fn value(self) -> Value {
        Value::Int(self as i128)
    }
    fn from_int(v: i128) -> Self {
        v != 0
    }
    fn unary_fn(op: UnaryOp) -> Option<impl Fn(Self) -> Self> {
        (op == UnaryOp::Not).then_some(|x: bool| !x)
    }
    fn binary_fn(op: BinaryOp) -> Option<impl Fn(Self, Self) -> Self> {
        let f: fn(bool, bool) -> bool = match op {
            BinaryOp::Max | BinaryOp::Or => |x, y| x | y,
            BinaryOp::Min | BinaryOp::And => |x, y| x & y,
            BinaryOp::Xor => |x, y| x ^ y,
            _ => return None,
        };
        Some(f)
    }
}

/// The Gauss error function, within 6 ulps (7e-16 absolute) of the exact value on all of f64.
///
/// - `|x| < 2`: `erf(x) = 2/√π · e^(-x²) · Σ_n 2^n x^(2n+1) / (1·3·5···(2n+1))`, a series
///   whose terms are all positive (no cancellation), summed in Horner form.
/// - `2 <= |x| < 6`: `1 - erfc(|x|)` with Laplace's continued fraction
///   `erfc(x) = e^(-x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))`.
/// - `|x| >= 6`: ±1 (erfc(6) is below half an ulp of 1).
///
/// The term counts are bounds, with margin, on those after which the sum (or fraction) no longer
/// changes in f64 (measured: 31 terms at |x| = 2 for the series, 56 for the fraction). `e^(-x²)`
/// uses the exact rounding error of `x²` (by fma) so it stays accurate where it multiplies a
/// large sum.
pub(crate) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let a2 = a * a;
    let exp_neg_a2 = (-a2).exp() * (1.0 - a.mul_add(a, -a2));
    let r = if a < 2.0 {
        let terms = (10.0 + 14.0 * a) as u32;
        let mut s = 1.0f64;
        for n in (1..=terms).rev() {
            s = (a2 / (n as f64 + 0.5)).mul_add(s, 1.0);
        }
        FRAC_2_SQRT_PI * (exp_neg_a2 * (a * s))
    } else if a < 6.0 {
        let terms = (10.0 + 300.0 / a2) as u32;
        let mut t = a;
        for k in (1..=terms).rev() {
            t = a + (k as f64 * 0.5) / t;
        }
        1.0 - exp_neg_a2 * (FRAC_2_SQRT_PI * 0.5) / t
    } else {
        1.0
    };
    r.copysign(x)
}

/// Error for two operands that must share an element type.
pub(crate) fn same_dtype(op: &str, a: &Tensor, b: &Tensor) -> Result<(), InterpError> {
    if a.dtype() == b.dtype() {
        Ok(())
    } else {
        Err(invalid(format!(
            "`{op}` operands must have the same element type, got {} and {}",
            a.dtype(),
            b.dtype()
        )))
    }
}

fn undefined(op: &str, dtype: DType) -> InterpError {
    invalid(format!("`{op}` is not defined on {dtype}"))
}

/// `f` applied to every element of `x` (of shape `shape`).
fn map<T: Element, U: Element>(
    shape: &[usize],
    x: &[T],
    f: impl Fn(T) -> U,
) -> Result<Tensor, InterpError> {
    let mut out = try_filled_vec(shape, U::default())?;
    for (o, &a) in out.iter_mut().zip(x) {
        *o = f(a);
    }
    Ok(Tensor::from_vec(shape.to_vec(), out)?)
}

/// The numpy broadcast of the operands' shapes, and the strides reading each operand over it.
fn broadcast_operands<const N: usize>(
    op: &str,
    shapes: [&[usize]; N],
) -> Result<(Vec<usize>, [Vec<isize>; N]), InterpError> {
    let mut dims = Vec::new();
    for s in shapes {
        dims = broadcast_static(&dims, s).map_err(|e| invalid(format!("`{op}`: {e}")))?;
    }
    let strides = shapes.map(|s| {
        broadcast_strides(s, &dims)
            .into_iter()
            .map(|x| x as isize)
            .collect()
    });
    Ok((dims, strides))
}

/// `f(a, b)` elementwise with numpy broadcasting.
fn zip2<A: Element, B: Element, R: Element>(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(A, B) -> R,
) -> Result<Tensor, InterpError> {
    let (va, vb) = (a.typed::<A>()?, b.typed::<B>()?);
    let (dims, [sa, sb]) = broadcast_operands(op, [a.shape(), b.shape()])?;
    let mut out = try_filled_vec(&dims, R::default())?;
    let so = signed_strides(&dims);
    for_each_offset(&dims, [&so, &sa, &sb], [0; 3], |[o, i, j]| {
        out[o] = f(va[i], vb[j])
    });
    Ok(Tensor::from_vec(dims, out)?)
}

/// `iota`: the element at index `i` is `i[axis]`, converted to `dtype` as by `convert`.
pub fn iota(dtype: DType, shape: &[usize], axis: usize) -> Result<Tensor, InterpError> {
    if dtype == DType::Bool {
        return Err(undefined("iota", dtype));
    }
    if axis >= shape.len() {
        return Err(invalid(format!(
            "`iota`: axis {axis} is out of range for rank {}",
            shape.len()
        )));
    }
    with_dtype!(dtype, T => {
        let mut out = try_filled_vec::<T>(shape, T::default())?;
        // Only evaluated when `out` is non-empty, so `stride` and `dim` are nonzero.
        let (stride, dim) = (row_major_strides(shape)[axis], shape[axis]);
        for (i, o) in out.iter_mut().enumerate() {
            *o = T::from_int(((i / stride) % dim) as i128);
        }
        Ok(Tensor::from_vec(shape.to_vec(), out)?)
    })
}

/// An elementwise unary function.
pub fn unary(op: UnaryOp, x: &Tensor) -> Result<Tensor, InterpError> {
    let err = || undefined(op.name(), x.dtype());
    with_data!(x.data(), v, T => match op {
        UnaryOp::IsNan | UnaryOp::IsInf => {
            if x.dtype() == DType::Bool {
                return Err(err());
            }
            let pred = match op {
                UnaryOp::IsNan => <T as Scalar>::is_nan,
                _ => <T as Scalar>::is_inf,
            };
            map(x.shape(), v, pred)
        }
        _ => map(x.shape(), v, T::unary_fn(op).ok_or_else(err)?),
    })
}

/// An elementwise binary function with numpy broadcasting.
pub fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor, InterpError> {
    same_dtype(op.name(), a, b)?;
    with_dtype!(a.dtype(), T => {
        let f = T::binary_fn(op).ok_or_else(|| undefined(op.name(), a.dtype()))?;
        zip2::<T, T, T>(op.name(), a, b, f)
    })
}

/// An elementwise comparison with numpy broadcasting (IEEE: NaN is unordered, so only `ne`
/// holds for it; -0 == +0).
pub fn compare(op: CompareOp, a: &Tensor, b: &Tensor) -> Result<Tensor, InterpError> {
    same_dtype(op.name(), a, b)?;
    with_dtype!(a.dtype(), T => {
        let f: fn(&T, &T) -> bool = match op {
            CompareOp::Eq => <T as PartialEq>::eq,
            CompareOp::Ne => <T as PartialEq>::ne,
            CompareOp::Lt => <T as PartialOrd>::lt,
            CompareOp::Le => <T as PartialOrd>::le,
            CompareOp::Gt => <T as PartialOrd>::gt,
            CompareOp::Ge => <T as PartialOrd>::ge,
        };
        zip2::<T, T, bool>(op.name(), a, b, |x, y| f(&x, &y))
    })
}

/// `select(c, a, b)`: `c ? a : b` elementwise, all three broadcast to the result shape.
pub fn select(c: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor, InterpError> {
    if c.dtype() != DType::Bool {
        return Err(invalid(format!(
            "`select`: condition must be bool, got {}",
            c.dtype()
        )));
    }
    same_dtype("select", a, b)?;
    with_dtype!(a.dtype(), T => {
        let (vc, va, vb) = (c.typed::<bool>()?, a.typed::<T>()?, b.typed::<T>()?);
        let (dims, [sc, sa, sb]) = broadcast_operands("select", [c.shape(), a.shape(), b.shape()])?;
        let mut out = try_filled_vec::<T>(&dims, T::default())?;
        let so = signed_strides(&dims);
        for_each_offset(&dims, [&so, &sc, &sa, &sb], [0; 4], |[o, i, j, k]| {
            out[o] = if vc[i] { va[j] } else { vb[k] }
        });
        Ok(Tensor::from_vec(dims, out)?)
    })
}

/// `convert`: element type conversion (see [`Scalar::from_value`]).
pub fn convert(x: &Tensor, to: DType) -> Result<Tensor, InterpError> {
    if x.dtype() == to {
        return Ok(x.clone());
    }
    with_data!(x.data(), v, S => with_dtype!(to, D => {
        map(x.shape(), v, |s: S| D::from_value(s.value()))
    }))
}

#[cfg(test)]
mod tests {
    use std::f64::consts::{E, FRAC_PI_2, FRAC_PI_3, FRAC_PI_4, FRAC_PI_6, LN_2, PI, SQRT_2};

    use super::*;
    use crate::tensor::TensorError;

    const INF: f64 = f64::INFINITY;
    const NAN: f64 = f64::NAN;

    fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v).unwrap()
    }

    /// A rank-1 tensor.
    fn v<T: Element>(v: Vec<T>) -> Tensor {
        t(&[v.len()], v)
    }

    fn get<T: Element>(r: Result<Tensor, InterpError>) -> Vec<T> {
        r.unwrap().as_slice::<T>().unwrap().to_vec()
    }

    fn un<T: Element, U: Element>(op: UnaryOp, x: Vec<T>) -> Vec<U> {
        get(unary(op, &v(x)))
    }

    /// A float unary op on f64 values, result as f64.
    fn unf(op: UnaryOp, x: Vec<f64>) -> Vec<f64> {
        un(op, x)
    }

    fn bin<T: Element>(op: BinaryOp, a: Vec<T>, b: Vec<T>) -> Vec<T> {
        get(binary(op, &v(a), &v(b)))
    }

    fn cmp<T: Element>(op: CompareOp, a: Vec<T>, b: Vec<T>) -> Vec<bool> {
        get(compare(op, &v(a), &v(b)))
    }

    fn conv<T: Element, U: Element>(x: Vec<T>) -> Vec<U> {
        get(convert(&v(x), U::DTYPE))
    }

    /// Bitwise equal, or both NaN: tells -0 from +0.
    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    fn assert_same(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(same(*g, *w), "got {got:?}, want {want:?}");
        }
    }

    /// Equal within `tol`, relative to max(1, |want|); infinities and NaN must match exactly.
    fn assert_close(got: &[f64], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            let ok = if w.is_finite() {
                (g - w).abs() <= tol * w.abs().max(1.0)
            } else {
                same(*g, *w)
            };
            assert!(ok, "got {got:?}, want {want:?}");
        }
    }

    fn is_invalid(r: Result<Tensor, InterpError>) -> bool {
        matches!(r, Err(InterpError::Invalid(_)))
    }

    fn message(r: Result<Tensor, InterpError>) -> String {
        r.unwrap_err().to_string()
    }

    // ---- iota ----

    #[test]
    fn iota_counts_along_the_axis() {
        assert_eq!(
            get::<i32>(iota(DType::I32, &[2, 3], 0)),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(
            get::<i64>(iota(DType::I64, &[2, 3], 1)),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(
            get::<f32>(iota(DType::F32, &[1, 2, 2], 2)),
            vec![0.0, 1.0, 0.0, 1.0]
        );
        assert_eq!(get::<u16>(iota(DType::U16, &[3], 0)), vec![0, 1, 2]);
    }

    #[test]
    fn iota_converts_like_convert() {
        // u8 wraps past 255, as converting the i64 index would.
        let u = get::<u8>(iota(DType::U8, &[300], 0));
        assert_eq!((u[255], u[256], u[299]), (255, 0, 43));
        // f16 rounds to nearest even: 2049 is halfway between 2048 and 2050.
        let h = get::<f16>(iota(DType::F16, &[2050], 0));
        assert_eq!(h[2049].to_f32(), 2048.0);
        assert_eq!(
            get::<bf16>(iota(DType::BF16, &[3], 0)),
            vec![bf16::ZERO, bf16::ONE, bf16::from_f32(2.0)]
        );
    }

    #[test]
    fn iota_empty_and_errors() {
        let e = iota(DType::F64, &[0, 3], 1).unwrap();
        assert_eq!((e.shape(), e.len()), (&[0usize, 3][..], 0));
        assert!(is_invalid(iota(DType::Bool, &[2], 0)));
        assert!(is_invalid(iota(DType::I32, &[2, 3], 2)));
        assert!(is_invalid(iota(DType::I32, &[], 0)));
        assert!(matches!(
            iota(DType::F64, &[1 << 40, 1 << 40], 0),
            Err(InterpError::Tensor(TensorError::Alloc { .. }))
        ));
    }

    // ---- unary: one test per variant ----

    #[test]
    fn unary_neg() {
        assert_same(&unf(UnaryOp::Neg, vec![1.5, 0.0, -INF]), &[-1.5, -0.0, INF]);
        assert_eq!(
            un::<i8, i8>(UnaryOp::Neg, vec![-128, 5, 0]),
            vec![-128, -5, 0]
        );
        assert_eq!(un::<u8, u8>(UnaryOp::Neg, vec![1, 0, 255]), vec![255, 0, 1]);
        assert_eq!(
            un::<f16, f16>(UnaryOp::Neg, vec![f16::from_f32(0.1)]),
            vec![-f16::from_f32(0.1)]
        );
        assert!(is_invalid(unary(UnaryOp::Neg, &v(vec![true]))));
    }

    #[test]
    fn unary_abs() {
        assert_same(
            &unf(UnaryOp::Abs, vec![-2.5, -0.0, NAN, -INF]),
            &[2.5, 0.0, NAN, INF],
        );
        assert_eq!(
            un::<i32, i32>(UnaryOp::Abs, vec![i32::MIN, -7, 7]),
            vec![i32::MIN, 7, 7]
        );
        assert_eq!(un::<u16, u16>(UnaryOp::Abs, vec![65535, 0]), vec![65535, 0]);
        assert!(is_invalid(unary(UnaryOp::Abs, &v(vec![false]))));
    }

    #[test]
    fn unary_sign() {
        assert_same(
            &unf(UnaryOp::Sign, vec![-3.0, 0.0, -0.0, 2.0, NAN, -INF]),
            &[-1.0, 0.0, -0.0, 1.0, NAN, -1.0],
        );
        assert_eq!(
            un::<i64, i64>(UnaryOp::Sign, vec![-9, 0, 4, i64::MIN]),
            vec![-1, 0, 1, -1]
        );
        assert_eq!(un::<u8, u8>(UnaryOp::Sign, vec![0, 200, 1]), vec![0, 1, 1]);
        assert_eq!(un::<f32, f32>(UnaryOp::Sign, vec![-0.25]), vec![-1.0]);
        assert!(is_invalid(unary(UnaryOp::Sign, &v(vec![true]))));
    }

    #[test]
    fn unary_not() {
        assert_eq!(
            un::<bool, bool>(UnaryOp::Not, vec![true, false]),
            vec![false, true]
        );
        assert_eq!(un::<i8, i8>(UnaryOp::Not, vec![0, -1, 5]), vec![-1, 0, -6]);
        assert_eq!(un::<u8, u8>(UnaryOp::Not, vec![0, 0xF0]), vec![0xFF, 0x0F]);
        assert!(is_invalid(unary(UnaryOp::Not, &v(vec![1.0f32]))));
    }

    #[test]
    fn unary_exp() {
        assert_close(
            &unf(UnaryOp::Exp, vec![0.0, 1.0, -INF, INF, NAN]),
            &[1.0, E, 0.0, INF, NAN],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Exp, vec![1.0]), vec![2.718_281_7]);
        // e rounds to 2.71875 in f16 (neighbours 2.716796875 and 2.720703125).
        assert_eq!(
            un::<f16, f16>(UnaryOp::Exp, vec![f16::ONE]),
            vec![f16::from_f32(2.718_75)]
        );
        assert!(is_invalid(unary(UnaryOp::Exp, &v(vec![1i32]))));
    }

    #[test]
    fn unary_log() {
        assert_close(
            &unf(UnaryOp::Log, vec![1.0, E, 0.0, -1.0, INF]),
            &[0.0, 1.0, -INF, NAN, INF],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Log, vec![8.0]), vec![2.079_441_5]);
        assert_eq!(
            un::<bf16, bf16>(UnaryOp::Log, vec![bf16::ONE]),
            vec![bf16::ZERO]
        );
        assert!(is_invalid(unary(UnaryOp::Log, &v(vec![1u8]))));
    }

    #[test]
    fn unary_sqrt() {
        assert_same(
            &unf(UnaryOp::Sqrt, vec![4.0, 2.0, -1.0, -0.0, INF]),
            &[2.0, SQRT_2, NAN, -0.0, INF],
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Sqrt, vec![2.0]),
            vec![std::f32::consts::SQRT_2]
        );
        // sqrt(2) = 181.02 * 2^-7: bf16 gives 1.4140625.
        assert_eq!(
            un::<bf16, bf16>(UnaryOp::Sqrt, vec![bf16::from_f32(2.0)]),
            vec![bf16::from_f32(1.414_062_5)]
        );
        assert!(is_invalid(unary(UnaryOp::Sqrt, &v(vec![4i64]))));
    }

    #[test]
    fn unary_rsqrt() {
        assert_same(
            &unf(UnaryOp::Rsqrt, vec![4.0, 0.0, INF, -1.0]),
            &[0.5, INF, 0.0, NAN],
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Rsqrt, vec![0.25, 16.0]),
            vec![2.0, 0.25]
        );
        assert_eq!(
            un::<f16, f16>(UnaryOp::Rsqrt, vec![f16::from_f32(0.0625)]),
            vec![f16::from_f32(4.0)]
        );
        assert!(is_invalid(unary(UnaryOp::Rsqrt, &v(vec![true]))));
    }

    #[test]
    fn unary_sin() {
        assert_close(
            &unf(UnaryOp::Sin, vec![0.0, FRAC_PI_2, -FRAC_PI_6, INF]),
            &[0.0, 1.0, -0.5, NAN],
            1e-15,
        );
        assert_same(&unf(UnaryOp::Sin, vec![-0.0]), &[-0.0]);
        assert_eq!(un::<f32, f32>(UnaryOp::Sin, vec![0.0]), vec![0.0]);
    }

    #[test]
    fn unary_cos() {
        assert_close(
            &unf(UnaryOp::Cos, vec![0.0, PI, FRAC_PI_3, NAN]),
            &[1.0, -1.0, 0.5, NAN],
            1e-15,
        );
        assert_eq!(
            un::<bf16, bf16>(UnaryOp::Cos, vec![bf16::ZERO]),
            vec![bf16::ONE]
        );
        assert!(is_invalid(unary(UnaryOp::Cos, &v(vec![0i16]))));
    }

    #[test]
    fn unary_tan() {
        assert_close(
            &unf(UnaryOp::Tan, vec![0.0, FRAC_PI_4, -FRAC_PI_4]),
            &[0.0, 1.0, -1.0],
            1e-15,
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Tan, vec![std::f32::consts::FRAC_PI_4]),
            vec![1.0]
        );
        assert!(unf(UnaryOp::Tan, vec![INF])[0].is_nan());
    }

    #[test]
    fn unary_asin() {
        assert_close(
            &unf(UnaryOp::Asin, vec![0.0, 1.0, 0.5, 2.0]),
            &[0.0, FRAC_PI_2, FRAC_PI_6, NAN],
            1e-15,
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Asin, vec![-1.0]),
            vec![-std::f32::consts::FRAC_PI_2]
        );
        assert!(is_invalid(unary(UnaryOp::Asin, &v(vec![0u32]))));
    }

    #[test]
    fn unary_acos() {
        assert_close(
            &unf(UnaryOp::Acos, vec![1.0, -1.0, 0.5, -2.0]),
            &[0.0, PI, FRAC_PI_3, NAN],
            1e-15,
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Acos, vec![0.0]),
            vec![std::f32::consts::FRAC_PI_2]
        );
        assert_eq!(
            un::<f16, f16>(UnaryOp::Acos, vec![f16::ONE]),
            vec![f16::ZERO]
        );
    }

    #[test]
    fn unary_atan() {
        assert_close(
            &unf(UnaryOp::Atan, vec![0.0, 1.0, INF, -INF]),
            &[0.0, FRAC_PI_4, FRAC_PI_2, -FRAC_PI_2],
            1e-15,
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Atan, vec![1.0]),
            vec![std::f32::consts::FRAC_PI_4]
        );
        assert!(unf(UnaryOp::Atan, vec![NAN])[0].is_nan());
    }

    #[test]
    fn unary_sinh() {
        let s1 = 1.175_201_193_643_801_4;
        assert_close(
            &unf(UnaryOp::Sinh, vec![0.0, 1.0, -1.0, INF]),
            &[0.0, s1, -s1, INF],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Sinh, vec![0.0]), vec![0.0]);
        assert_eq!(unf(UnaryOp::Sinh, vec![1000.0]), vec![INF]);
    }

    #[test]
    fn unary_cosh() {
        assert_close(
            &unf(UnaryOp::Cosh, vec![0.0, 1.0, LN_2, -INF]),
            &[1.0, 1.543_080_634_815_243_7, 1.25, INF],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Cosh, vec![0.0]), vec![1.0]);
        assert!(is_invalid(unary(UnaryOp::Cosh, &v(vec![1i8]))));
    }

    #[test]
    fn unary_tanh() {
        assert_close(
            &unf(UnaryOp::Tanh, vec![0.0, 0.5, INF, -INF]),
            &[0.0, 0.462_117_157_260_009_76, 1.0, -1.0],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Tanh, vec![100.0]), vec![1.0]);
        assert!(unf(UnaryOp::Tanh, vec![NAN])[0].is_nan());
    }

    #[test]
    fn unary_asinh() {
        let a1 = 0.881_373_587_019_543;
        assert_close(
            &unf(UnaryOp::Asinh, vec![0.0, 1.0, -1.0, -INF]),
            &[0.0, a1, -a1, -INF],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Asinh, vec![0.0]), vec![0.0]);
        assert_close(
            &unf(UnaryOp::Asinh, vec![1e300]),
            &[691.468_675_078_773_7],
            1e-15,
        );
    }

    #[test]
    fn unary_acosh() {
        assert_close(
            &unf(UnaryOp::Acosh, vec![1.0, 2.0, 0.5, INF]),
            &[0.0, 1.316_957_896_924_816_7, NAN, INF],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Acosh, vec![1.0]), vec![0.0]);
        assert!(is_invalid(unary(UnaryOp::Acosh, &v(vec![1u64]))));
    }

    #[test]
    fn unary_atanh() {
        assert_close(
            &unf(UnaryOp::Atanh, vec![0.0, 0.5, 1.0, -1.0, 2.0]),
            &[0.0, 0.549_306_144_334_054_8, INF, -INF, NAN],
            1e-15,
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Atanh, vec![0.0]), vec![0.0]);
        assert!(is_invalid(unary(UnaryOp::Atanh, &v(vec![false]))));
    }

    #[test]
    fn unary_erf() {
        let cases = [
            (0.1, 0.112_462_916_018_284_9),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (1.5, 0.966_105_146_475_310_7),
            (-2.0, -0.995_322_265_018_952_7),
            (2.5, 0.999_593_047_982_555),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
            (5.9, 0.999_999_999_999_999_9),
            (1e-10, 1.128_379_167_095_512_6e-10),
            (7.0, 1.0),
            (-INF, -1.0),
        ];
        for (x, want) in cases {
            let got = erf(x);
            assert!(
                (got - want).abs() <= 1e-15 * want.abs(),
                "erf({x}) = {got}, want {want}"
            );
        }
        assert_same(
            &unf(UnaryOp::Erf, vec![0.0, -0.0, NAN, INF]),
            &[0.0, -0.0, NAN, 1.0],
        );
        // erf(0.5) = 0.52049987781... rounds to 0.520499885 in f32.
        assert_eq!(un::<f32, f32>(UnaryOp::Erf, vec![0.5]), vec![0.520_499_9]);
        assert!(is_invalid(unary(UnaryOp::Erf, &v(vec![1i32]))));
    }

    #[test]
    fn unary_logistic() {
        assert_close(
            &unf(UnaryOp::Logistic, vec![0.0, 800.0, -800.0, 3f64.ln()]),
            &[0.5, 1.0, 0.0, 0.75],
            1e-15,
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Logistic, vec![0.0, -INF as f32]),
            vec![0.5, 0.0]
        );
        assert_eq!(
            un::<bf16, bf16>(UnaryOp::Logistic, vec![bf16::ZERO]),
            vec![bf16::from_f32(0.5)]
        );
    }

    #[test]
    fn unary_floor() {
        assert_same(
            &unf(UnaryOp::Floor, vec![1.5, -1.5, -0.0, INF, NAN]),
            &[1.0, -2.0, -0.0, INF, NAN],
        );
        assert_eq!(
            un::<f16, f16>(UnaryOp::Floor, vec![f16::from_f32(2.5)]),
            vec![f16::from_f32(2.0)]
        );
        assert!(is_invalid(unary(UnaryOp::Floor, &v(vec![3i32]))));
    }

    #[test]
    fn unary_ceil() {
        assert_same(
            &unf(UnaryOp::Ceil, vec![1.2, -1.2, 3.0, -0.5]),
            &[2.0, -1.0, 3.0, -0.0],
        );
        assert_eq!(un::<f32, f32>(UnaryOp::Ceil, vec![0.000_1]), vec![1.0]);
        assert!(is_invalid(unary(UnaryOp::Ceil, &v(vec![3u8]))));
    }

    #[test]
    fn unary_round_is_half_to_even() {
        assert_same(
            &unf(
                UnaryOp::Round,
                vec![0.5, 1.5, 2.5, -0.5, -2.5, 2.4, 2.6, -3.5],
            ),
            &[0.0, 2.0, 2.0, -0.0, -2.0, 2.0, 3.0, -4.0],
        );
        assert_eq!(
            un::<f32, f32>(UnaryOp::Round, vec![0.5, 1.5, 8_388_609.0]),
            vec![0.0, 2.0, 8_388_609.0]
        );
        assert_eq!(
            un::<bf16, bf16>(UnaryOp::Round, vec![bf16::from_f32(2.5)]),
            vec![bf16::from_f32(2.0)]
        );
        assert!(is_invalid(unary(UnaryOp::Round, &v(vec![true]))));
    }

    #[test]
    fn unary_is_nan() {
        assert_eq!(
            un::<f32, bool>(UnaryOp::IsNan, vec![f32::NAN, 1.0, f32::INFINITY]),
            vec![true, false, false]
        );
        assert_eq!(
            un::<f16, bool>(UnaryOp::IsNan, vec![f16::NAN, f16::ZERO]),
            vec![true, false]
        );
        assert_eq!(
            un::<i32, bool>(UnaryOp::IsNan, vec![1, 2]),
            vec![false, false]
        );
        assert!(is_invalid(unary(UnaryOp::IsNan, &v(vec![true]))));
    }

    #[test]
    fn unary_is_inf() {
        assert_eq!(
            un::<f64, bool>(UnaryOp::IsInf, vec![INF, -INF, NAN, 1e308]),
            vec![true, true, false, false]
        );
        assert_eq!(
            un::<bf16, bool>(UnaryOp::IsInf, vec![bf16::NEG_INFINITY, bf16::MAX]),
            vec![true, false]
        );
        assert_eq!(un::<u8, bool>(UnaryOp::IsInf, vec![255]), vec![false]);
        assert!(is_invalid(unary(UnaryOp::IsInf, &v(vec![false]))));
    }

    #[test]
    fn unary_keeps_shape_and_handles_empty() {
        let x = t(&[2, 0, 3], Vec::<f32>::new());
        let y = unary(UnaryOp::Exp, &x).unwrap();
        assert_eq!((y.shape(), y.dtype()), (&[2usize, 0, 3][..], DType::F32));
        let b = unary(UnaryOp::IsNan, &t(&[1, 2], vec![1.0f64, NAN])).unwrap();
        assert_eq!(
            (b.shape(), b.as_slice::<bool>().unwrap()),
            (&[1usize, 2][..], &[false, true][..])
        );
        assert_eq!(
            message(unary(UnaryOp::Exp, &v(vec![1i32]))),
            "`exp` is not defined on i32"
        );
    }

    #[test]
    fn erf_matches_reference_on_a_grid() {
        // Reference values from mpmath at 30 digits.
        let grid = [
            (0.25, 0.276_326_390_168_236_9),
            (0.75, 0.711_155_633_653_515_1),
            (1.25, 0.922_900_128_256_458_2),
            (1.75, 0.986_671_671_219_182_4),
            (1.999_999, 0.995_322_244_351_926),
            (2.000_001, 0.995_322_285_685_896_8),
            (3.5, 0.999_999_256_901_627_7),
            (5.0, 0.999_999_999_998_462_5),
        ];
        for (x, want) in grid {
            let got = erf(x);
            assert!((got - want).abs() <= 1e-15, "erf({x}) = {got}, want {want}");
            assert_eq!(erf(-x), -got);
        }
    }

    // ---- binary: one test per variant ----

    #[test]
    fn binary_add() {
        assert_eq!(
            bin::<i8>(BinaryOp::Add, vec![127, -128, 5], vec![1, -1, -7]),
            vec![-128, 127, -2]
        );
        assert_eq!(
            bin::<u8>(BinaryOp::Add, vec![255, 200], vec![1, 100]),
            vec![0, 44]
        );
        assert_same(
            &bin(BinaryOp::Add, vec![1.0, 2.0, INF], vec![0.5, NAN, -INF]),
            &[1.5, NAN, NAN],
        );
        // bf16 rounds the exact sum once, to nearest even: 1 + 2^-8 is a tie going down to 1,
        // 1 + 3*2^-8 a tie going up to 1 + 2^-6.
        let one = bf16::ONE;
        let sums = bin(
            BinaryOp::Add,
            vec![one, one],
            vec![bf16::from_f64(1.0 / 256.0), bf16::from_f64(3.0 / 256.0)],
        );
        assert_eq!(sums, vec![one, bf16::from_f64(1.0 + 1.0 / 64.0)]);
        assert!(is_invalid(binary(
            BinaryOp::Add,
            &v(vec![true]),
            &v(vec![true])
        )));
    }

    #[test]
    fn binary_sub() {
        assert_eq!(
            bin::<i32>(BinaryOp::Sub, vec![i32::MIN, 5], vec![1, 7]),
            vec![i32::MAX, -2]
        );
        assert_eq!(
            bin::<u8>(BinaryOp::Sub, vec![0, 10], vec![1, 3]),
            vec![255, 7]
        );
        assert_same(
            &bin(BinaryOp::Sub, vec![INF, 0.0, 1.0], vec![INF, 0.0, 0.25]),
            &[NAN, 0.0, 0.75],
        );
        assert_eq!(
            bin::<f16>(BinaryOp::Sub, vec![f16::from_f32(3.0)], vec![f16::ONE]),
            vec![f16::from_f32(2.0)]
        );
    }

    #[test]
    fn binary_mul() {
        // 300 * 300 = 90000 = 65536 + 24464.
        assert_eq!(
            bin::<i16>(BinaryOp::Mul, vec![300, -3], vec![300, 4]),
            vec![24464, -12]
        );
        assert_eq!(
            bin::<u32>(BinaryOp::Mul, vec![1 << 31, 3], vec![2, 5]),
            vec![0, 15]
        );
        assert_same(
            &bin(BinaryOp::Mul, vec![0.0, -2.0, 1.5], vec![INF, 0.0, 2.0]),
            &[NAN, -0.0, 3.0],
        );
        // f16 overflows to inf past 65504.
        assert_eq!(
            bin::<f16>(
                BinaryOp::Mul,
                vec![f16::from_f32(300.0)],
                vec![f16::from_f32(300.0)]
            ),
            vec![f16::INFINITY]
        );
    }

    #[test]
    fn binary_div() {
        // Integers truncate toward zero (not numpy's floor).
        assert_eq!(
            bin::<i32>(BinaryOp::Div, vec![7, -7, 7, -7], vec![2, 2, -2, -2]),
            vec![3, -3, -3, 3]
        );
        assert_eq!(
            bin::<i8>(BinaryOp::Div, vec![-128, 5, 0], vec![-1, 0, 0]),
            vec![-128, 0, 0]
        );
        assert_eq!(
            bin::<u8>(BinaryOp::Div, vec![200, 7], vec![3, 0]),
            vec![66, 0]
        );
        assert_same(
            &bin(
                BinaryOp::Div,
                vec![1.0, -1.0, 0.0, 1.0],
                vec![0.0, 0.0, 0.0, 4.0],
            ),
            &[INF, -INF, NAN, 0.25],
        );
        // 1/3 rounded once to f32.
        assert_eq!(
            bin::<f32>(BinaryOp::Div, vec![1.0], vec![3.0]),
            vec![1.0f32 / 3.0]
        );
    }

    #[test]
    fn binary_rem() {
        // The sign follows the dividend.
        assert_eq!(
            bin::<i32>(BinaryOp::Rem, vec![7, -7, 7, -7], vec![3, 3, -3, -3]),
            vec![1, -1, 1, -1]
        );
        assert_eq!(
            bin::<i8>(BinaryOp::Rem, vec![5, -128], vec![0, -1]),
            vec![0, 0]
        );
        assert_eq!(
            bin::<u16>(BinaryOp::Rem, vec![10, 3], vec![4, 0]),
            vec![2, 0]
        );
        assert_same(
            &bin(
                BinaryOp::Rem,
                vec![5.5, -5.5, 1.0, INF],
                vec![2.0, 2.0, 0.0, 2.0],
            ),
            &[1.5, -1.5, NAN, NAN],
        );
    }

    #[test]
    fn binary_pow() {
        assert_eq!(
            bin::<i32>(BinaryOp::Pow, vec![2, 3, 0, -3], vec![10, 0, 0, 3]),
            vec![1024, 1, 1, -27]
        );
        // Wrapping: 2^7 = 128 and 3^5 = 243 wrap in i8; 2^8 wraps to 0 in u8.
        assert_eq!(
            bin::<i8>(BinaryOp::Pow, vec![2, 3], vec![7, 5]),
            vec![-128, -13]
        );
        assert_eq!(
            bin::<u8>(BinaryOp::Pow, vec![2, 255], vec![8, 2]),
            vec![0, 1]
        );
        // Negative exponents: 1 / x^n truncated.
        assert_eq!(
            bin::<i64>(
                BinaryOp::Pow,
                vec![2, 1, -1, -1, 0, 2, -1],
                vec![-1, -5, -3, -2, -1, 100, i64::MAX]
            ),
            vec![0, 1, -1, 1, 0, 0, -1]
        );
        assert_close(
            &bin(
                BinaryOp::Pow,
                vec![2.0, -8.0, 0.0, NAN],
                vec![0.5, 1.0 / 3.0, -1.0, 0.0],
            ),
            &[SQRT_2, NAN, INF, 1.0],
            1e-15,
        );
    }

    #[test]
    fn binary_max() {
        assert_same(
            &bin(
                BinaryOp::Max,
                vec![1.0, NAN, -0.0, 0.0, 3.0],
                vec![2.0, 1.0, 0.0, -0.0, NAN],
            ),
            &[2.0, NAN, 0.0, 0.0, NAN],
        );
        assert_eq!(
            bin::<i8>(BinaryOp::Max, vec![-128, 5], vec![127, 4]),
            vec![127, 5]
        );
        assert_eq!(
            bin::<u64>(BinaryOp::Max, vec![u64::MAX, 0], vec![1, 0]),
            vec![u64::MAX, 0]
        );
        assert_eq!(
            bin(
                BinaryOp::Max,
                vec![true, true, false, false],
                vec![true, false, true, false]
            ),
            vec![true, true, true, false]
        );
        assert!(
            un::<f16, bool>(
                UnaryOp::IsNan,
                bin(BinaryOp::Max, vec![f16::ONE], vec![f16::NAN])
            )[0]
        );
    }

    #[test]
    fn binary_min() {
        assert_same(
            &bin(
                BinaryOp::Min,
                vec![1.0, NAN, -0.0, 0.0, 3.0],
                vec![2.0, 1.0, 0.0, -0.0, NAN],
            ),
            &[1.0, NAN, -0.0, -0.0, NAN],
        );
        assert_eq!(
            bin::<i16>(BinaryOp::Min, vec![-5, 7], vec![3, -32768]),
            vec![-5, -32768]
        );
        assert_eq!(
            bin(
                BinaryOp::Min,
                vec![true, true, false, false],
                vec![true, false, true, false]
            ),
            vec![true, false, false, false]
        );
        assert_same(&bin(BinaryOp::Min, vec![-INF], vec![INF]), &[-INF]);
    }

    #[test]
    fn binary_and() {
        assert_eq!(
            bin(
                BinaryOp::And,
                vec![true, true, false, false],
                vec![true, false, true, false]
            ),
            vec![true, false, false, false]
        );
        assert_eq!(
            bin::<i8>(BinaryOp::And, vec![0b1100, -1], vec![0b1010, -128]),
            vec![0b1000, -128]
        );
        assert_eq!(
            bin::<u32>(BinaryOp::And, vec![0xFFFF_0000], vec![0x0FF0_0FF0]),
            vec![0x0FF0_0000]
        );
        assert!(is_invalid(binary(
            BinaryOp::And,
            &v(vec![1.0f32]),
            &v(vec![1.0f32])
        )));
    }

    #[test]
    fn binary_or() {
        assert_eq!(
            bin(
                BinaryOp::Or,
                vec![true, true, false, false],
                vec![true, false, true, false]
            ),
            vec![true, true, true, false]
        );
        assert_eq!(
            bin::<i16>(BinaryOp::Or, vec![0b1100, 0], vec![0b1010, -32768]),
            vec![0b1110, -32768]
        );
        assert_eq!(bin::<u8>(BinaryOp::Or, vec![0xF0], vec![0x0F]), vec![0xFF]);
        assert!(is_invalid(binary(
            BinaryOp::Or,
            &v(vec![1.0f64]),
            &v(vec![1.0f64])
        )));
    }

    #[test]
    fn binary_xor() {
        assert_eq!(
            bin(
                BinaryOp::Xor,
                vec![true, true, false, false],
                vec![true, false, true, false]
            ),
            vec![false, true, true, false]
        );
        assert_eq!(
            bin::<i64>(BinaryOp::Xor, vec![0b1100, -1], vec![0b1010, 0]),
            vec![0b0110, -1]
        );
        assert_eq!(
            bin::<u16>(BinaryOp::Xor, vec![0xFFFF], vec![0x00FF]),
            vec![0xFF00]
        );
        assert!(is_invalid(binary(
            BinaryOp::Xor,
            &v(vec![bf16::ONE]),
            &v(vec![bf16::ONE])
        )));
    }

    #[test]
    fn binary_shift_left() {
        // Counts outside 0..bits give 0.
        assert_eq!(
            bin::<i8>(
                BinaryOp::ShiftLeft,
                vec![1, 1, 1, 3, -1],
                vec![7, 8, -1, 2, 100]
            ),
            vec![-128, 0, 0, 12, 0]
        );
        assert_eq!(
            bin::<u16>(BinaryOp::ShiftLeft, vec![0xFFFF, 1], vec![4, 16]),
            vec![0xFFF0, 0]
        );
        assert_eq!(
            bin::<u64>(BinaryOp::ShiftLeft, vec![1, 1], vec![63, u64::MAX]),
            vec![1 << 63, 0]
        );
        assert!(is_invalid(binary(
            BinaryOp::ShiftLeft,
            &v(vec![1.0f32]),
            &v(vec![1.0f32])
        )));
        assert!(is_invalid(binary(
            BinaryOp::ShiftLeft,
            &v(vec![true]),
            &v(vec![true])
        )));
    }

    #[test]
    fn binary_shift_right() {
        // Arithmetic on signed types; out-of-range counts leave 0 or -1 (the sign).
        assert_eq!(
            bin::<i8>(
                BinaryOp::ShiftRight,
                vec![-128, -128, 64, -5, -5, 5],
                vec![7, 8, 8, 1, -1, -1]
            ),
            vec![-1, -1, 0, -3, -1, 0]
        );
        assert_eq!(
            bin::<u8>(BinaryOp::ShiftRight, vec![0x80, 0x80, 0xFF], vec![7, 9, 4]),
            vec![1, 0, 0x0F]
        );
        assert_eq!(
            bin::<i32>(BinaryOp::ShiftRight, vec![i32::MIN, 1024], vec![31, 32]),
            vec![-1, 0]
        );
        assert!(is_invalid(binary(
            BinaryOp::ShiftRight,
            &v(vec![1.0f64]),
            &v(vec![1.0f64])
        )));
    }

    #[test]
    fn binary_broadcasts_like_numpy() {
        // [2,1,3] + [4,1] -> [2,4,3]: z[i,j,k] = a[i,0,k] + b[j,0].
        let a = t(&[2, 1, 3], vec![0, 1, 2, 10, 11, 12]);
        let b = t(&[4, 1], vec![100, 200, 300, 400]);
        let z = binary(BinaryOp::Add, &a, &b).unwrap();
        assert_eq!(z.shape(), &[2, 4, 3]);
        let want: Vec<i32> = (0..2)
            .flat_map(|i| (0..4).flat_map(move |j| (0..3).map(move |k| 10 * i + k + 100 * (j + 1))))
            .collect();
        assert_eq!(z.as_slice::<i32>().unwrap(), &want[..]);
        // A scalar against a matrix, on either side.
        let m = t(&[2, 2], vec![1.0f32, 2.0, 3.0, 4.0]);
        let s = Tensor::scalar(10.0f32);
        assert_eq!(
            get::<f32>(binary(BinaryOp::Sub, &s, &m)),
            vec![9.0, 8.0, 7.0, 6.0]
        );
        assert_eq!(
            get::<f32>(binary(BinaryOp::Sub, &m, &s)),
            vec![-9.0, -8.0, -7.0, -6.0]
        );
        // Rank-0 with rank-0.
        let z = binary(BinaryOp::Mul, &Tensor::scalar(3u8), &Tensor::scalar(5u8)).unwrap();
        assert_eq!(
            (z.shape(), z.as_slice::<u8>().unwrap()),
            (&[][..], &[15u8][..])
        );
    }

    #[test]
    fn binary_empty_and_errors() {
        // A zero dim broadcasts against 1 and stays 0.
        let z = binary(
            BinaryOp::Add,
            &t(&[0, 1], Vec::<i32>::new()),
            &t(&[1, 5], vec![1; 5]),
        )
        .unwrap();
        assert_eq!((z.shape(), z.len()), (&[0usize, 5][..], 0));
        assert!(is_invalid(binary(
            BinaryOp::Add,
            &t(&[2, 3], vec![0; 6]),
            &t(&[4, 3], vec![0; 12])
        )));
        let msg = message(binary(BinaryOp::Add, &v(vec![1.0f32]), &v(vec![1i32])));
        assert!(msg.contains("f32") && msg.contains("i32"), "{msg}");
    }

    // ---- compare: one test per variant ----

    #[test]
    fn compare_eq() {
        assert_eq!(
            cmp(
                CompareOp::Eq,
                vec![1.0, NAN, 0.0, INF],
                vec![1.0, NAN, -0.0, INF]
            ),
            vec![true, false, true, true]
        );
        assert_eq!(
            cmp::<i32>(CompareOp::Eq, vec![3, -3], vec![3, 3]),
            vec![true, false]
        );
        assert_eq!(
            cmp(CompareOp::Eq, vec![true, false], vec![true, true]),
            vec![true, false]
        );
        assert_eq!(
            cmp(
                CompareOp::Eq,
                vec![f16::NAN, f16::ZERO],
                vec![f16::NAN, f16::NEG_ZERO]
            ),
            vec![false, true]
        );
    }

    #[test]
    fn compare_ne() {
        assert_eq!(
            cmp(
                CompareOp::Ne,
                vec![1.0, NAN, 0.0, 2.0],
                vec![1.0, NAN, -0.0, NAN]
            ),
            vec![false, true, false, true]
        );
        assert_eq!(
            cmp::<u8>(CompareOp::Ne, vec![255, 0], vec![255, 1]),
            vec![false, true]
        );
        assert_eq!(
            cmp(CompareOp::Ne, vec![bf16::NAN], vec![bf16::ONE]),
            vec![true]
        );
    }

    #[test]
    fn compare_lt() {
        assert_eq!(
            cmp(
                CompareOp::Lt,
                vec![1.0, NAN, -0.0, -INF],
                vec![2.0, 1.0, 0.0, 0.0]
            ),
            vec![true, false, false, true]
        );
        assert_eq!(
            cmp::<i8>(CompareOp::Lt, vec![-128, 5], vec![127, 5]),
            vec![true, false]
        );
        assert_eq!(
            cmp::<u64>(CompareOp::Lt, vec![u64::MAX], vec![0]),
            vec![false]
        );
        assert_eq!(
            cmp(CompareOp::Lt, vec![false, true], vec![true, false]),
            vec![true, false]
        );
    }

    #[test]
    fn compare_le() {
        assert_eq!(
            cmp(
                CompareOp::Le,
                vec![1.0, NAN, -0.0, 3.0],
                vec![1.0, NAN, 0.0, 2.0]
            ),
            vec![true, false, true, false]
        );
        assert_eq!(
            cmp::<i64>(CompareOp::Le, vec![i64::MIN, 0], vec![i64::MIN, -1]),
            vec![true, false]
        );
        assert_eq!(
            cmp(CompareOp::Le, vec![f16::ONE], vec![f16::NAN]),
            vec![false]
        );
    }

    #[test]
    fn compare_gt() {
        assert_eq!(
            cmp(
                CompareOp::Gt,
                vec![2.0, NAN, 0.0, INF],
                vec![1.0, 1.0, -0.0, 1e308]
            ),
            vec![true, false, false, true]
        );
        assert_eq!(
            cmp::<u16>(CompareOp::Gt, vec![65535, 1], vec![0, 1]),
            vec![true, false]
        );
        assert_eq!(cmp(CompareOp::Gt, vec![true], vec![false]), vec![true]);
    }

    #[test]
    fn compare_ge() {
        assert_eq!(
            cmp(
                CompareOp::Ge,
                vec![2.0, NAN, 0.0, 1.0],
                vec![2.0, NAN, -0.0, 2.0]
            ),
            vec![true, false, true, false]
        );
        assert_eq!(
            cmp::<i32>(CompareOp::Ge, vec![-1, 7], vec![0, 7]),
            vec![false, true]
        );
        assert_eq!(
            cmp(
                CompareOp::Ge,
                vec![bf16::from_f32(-1.0)],
                vec![bf16::NEG_INFINITY]
            ),
            vec![true]
        );
    }

    #[test]
    fn compare_broadcasts_and_checks_types() {
        let a = t(&[2, 1, 3], vec![0i32, 1, 2, 3, 4, 5]);
        let b = t(&[4, 1], vec![0, 1, 2, 3]);
        let c = compare(CompareOp::Lt, &a, &b).unwrap();
        assert_eq!((c.shape(), c.dtype()), (&[2usize, 4, 3][..], DType::Bool));
        // c[0, j, k] = k < j.
        let row0: Vec<bool> = (0..4).flat_map(|j| (0..3).map(move |k| k < j)).collect();
        assert_eq!(&c.as_slice::<bool>().unwrap()[..12], &row0[..]);
        assert!(
            compare(
                CompareOp::Eq,
                &t(&[0], Vec::<f32>::new()),
                &Tensor::scalar(1.0f32)
            )
            .unwrap()
            .is_empty()
        );
        let msg = message(compare(CompareOp::Eq, &v(vec![1u8]), &v(vec![1i8])));
        assert!(msg.contains("u8") && msg.contains("i8"), "{msg}");
    }

    // ---- select ----

    #[test]
    fn select_picks_elementwise() {
        let c = v(vec![true, false, true]);
        let r = select(&c, &v(vec![1i32, 2, 3]), &v(vec![10, 20, 30])).unwrap();
        assert_eq!(r.as_slice::<i32>().unwrap(), &[1, 20, 3]);
        let r = select(
            &Tensor::scalar(false),
            &v(vec![1.0f64, 2.0]),
            &v(vec![NAN, 4.0]),
        )
        .unwrap();
        assert_same(&r.to_f64_vec(), &[NAN, 4.0]);
        let r = select(
            &v(vec![false, true]),
            &Tensor::scalar(f16::ONE),
            &Tensor::scalar(f16::ZERO),
        )
        .unwrap();
        assert_eq!(r.as_slice::<f16>().unwrap(), &[f16::ZERO, f16::ONE]);
    }

    #[test]
    fn select_broadcasts_all_three() {
        // cond [2,1,1], a [1,3] (rank 2), b [4,1] -> [2,4,3].
        let c = t(&[2, 1, 1], vec![true, false]);
        let a = t(&[1, 3], vec![1u8, 2, 3]);
        let b = t(&[4, 1], vec![10u8, 20, 30, 40]);
        let r = select(&c, &a, &b).unwrap();
        assert_eq!(r.shape(), &[2, 4, 3]);
        let want: Vec<u8> = [1, 2, 3]
            .repeat(4)
            .into_iter()
            .chain([10, 20, 30, 40].iter().flat_map(|&x| [x; 3]))
            .collect();
        assert_eq!(r.as_slice::<u8>().unwrap(), &want[..]);
        let e = select(
            &t(&[0, 1], Vec::<bool>::new()),
            &v(vec![1i64, 2]),
            &Tensor::scalar(0i64),
        )
        .unwrap();
        assert_eq!(e.shape(), &[0, 2]);
    }

    #[test]
    fn select_errors() {
        assert!(is_invalid(select(
            &v(vec![1u8]),
            &v(vec![1i32]),
            &v(vec![2i32])
        )));
        let msg = message(select(&v(vec![true]), &v(vec![1i32]), &v(vec![2i64])));
        assert!(msg.contains("i32") && msg.contains("i64"), "{msg}");
        assert!(is_invalid(select(
            &v(vec![true, false]),
            &v(vec![1i32; 3]),
            &v(vec![2i32; 3])
        )));
    }

    // ---- convert ----

    #[test]
    fn convert_float_to_int_truncates_and_saturates() {
        assert_eq!(
            conv::<f64, i32>(vec![2.9, -2.9, 1e10, -1e10, NAN, INF]),
            vec![2, -2, i32::MAX, i32::MIN, 0, i32::MAX]
        );
        assert_eq!(
            conv::<f32, u8>(vec![-3.7, 255.9, 300.0, 0.5]),
            vec![0, 255, 255, 0]
        );
        assert_eq!(
            conv::<bf16, i64>(vec![bf16::from_f32(-1.5), bf16::NEG_INFINITY]),
            vec![-1, i64::MIN]
        );
    }

    #[test]
    fn convert_int_to_int_wraps() {
        assert_eq!(
            conv::<i64, u8>(vec![300, -1, 256, -256]),
            vec![44, 255, 0, 0]
        );
        assert_eq!(
            conv::<u64, i64>(vec![u64::MAX, 1 << 63]),
            vec![-1, i64::MIN]
        );
        assert_eq!(conv::<i8, u64>(vec![-1, 127]), vec![u64::MAX, 127]);
        assert_eq!(
            conv::<u32, i16>(vec![0x1_8000, 0xFFFF_FFFF]),
            vec![-32768, -1]
        );
    }

    #[test]
    fn convert_int_to_float_rounds_to_nearest_even() {
        // 2^24 + 1 is a tie between 2^24 and 2^24 + 2 in f32; 2^24 + 3 rounds up.
        assert_eq!(
            conv::<u64, f32>(vec![(1 << 24) + 1, (1 << 24) + 3, u64::MAX]),
            vec![16_777_216.0, 16_777_220.0, 18_446_744_073_709_551_616.0]
        );
        assert_eq!(
            conv::<i64, f64>(vec![(1 << 53) + 1, -3]),
            vec![9_007_199_254_740_992.0, -3.0]
        );
        // Rounded once: 2^62 + 2^54 + 1 is just above the bf16 midpoint 2^62 + 2^54, so it rounds
        // up to 2^62 + 2^55 (through a nearest-even f64 or f32 it would tie down to 2^62).
        let x = (1i64 << 62) + (1 << 54) + 1;
        assert_eq!(
            conv::<i64, bf16>(vec![x, 1 << 62]),
            vec![
                bf16::from_f64(2f64.powi(62) + 2f64.powi(55)),
                bf16::from_f64(2f64.powi(62))
            ]
        );
        assert_eq!(
            conv::<i32, f16>(vec![2049, 65519, 65520, -70000]),
            vec![
                f16::from_f32(2048.0),
                f16::MAX,
                f16::INFINITY,
                f16::NEG_INFINITY
            ]
        );
    }

    #[test]
    fn convert_float_to_float_rounds_once() {
        // 1 + 2^-8 + 2^-40 is just above a bf16 tie: up to 1 + 2^-7 (via f32 it would become the
        // tie 1 + 2^-8 and round down to 1).
        let x = 1.0 + 2f64.powi(-8) + 2f64.powi(-40);
        assert_eq!(
            conv::<f64, bf16>(vec![x, 1.0 + 2f64.powi(-8)]),
            vec![bf16::from_f64(1.0 + 2f64.powi(-7)), bf16::ONE]
        );
        // The same for f16 at 1 + 2^-11 (and half's own f16::from_f64 gets this wrong).
        let y = 1.0 + 2f64.powi(-11) + 2f64.powi(-40);
        assert_eq!(
            conv::<f64, f16>(vec![y, -y]),
            vec![
                f16::from_f64(1.0 + 2f64.powi(-10)),
                f16::from_f64(-1.0 - 2f64.powi(-10))
            ]
        );
        assert_eq!(
            conv::<f32, f16>(vec![65519.0, 65520.0, 1e-8]),
            vec![f16::MAX, f16::INFINITY, f16::ZERO]
        );
        // Subnormals: 2^-25 is a tie between 0 and the least f16 subnormal; just above goes up.
        let tiny = 2f64.powi(-25);
        assert_eq!(
            conv::<f64, f16>(vec![tiny, tiny * (1.0 + 2f64.powi(-45))]),
            vec![f16::ZERO, f16::from_bits(1)]
        );
        assert_eq!(
            conv::<f64, bf16>(vec![1e300, -1e-300, f64::MAX]),
            vec![bf16::INFINITY, bf16::NEG_ZERO, bf16::INFINITY]
        );
        assert_same(
            &conv::<f16, f64>(vec![f16::from_f32(0.1), f16::NAN, f16::NEG_ZERO]),
            &[0.099_975_585_937_5, NAN, -0.0],
        );
        assert_eq!(
            conv::<bf16, f16>(vec![bf16::from_f32(1.5)]),
            vec![f16::from_f32(1.5)]
        );
    }

    #[test]
    fn convert_to_and_from_bool() {
        assert_eq!(
            conv::<f64, bool>(vec![0.0, -0.0, 0.5, NAN, -INF]),
            vec![false, false, true, true, true]
        );
        assert_eq!(conv::<i8, bool>(vec![0, -1, 2]), vec![false, true, true]);
        assert_eq!(conv::<bool, f32>(vec![true, false]), vec![1.0, 0.0]);
        assert_eq!(conv::<bool, i64>(vec![true, false]), vec![1, 0]);
        assert_eq!(conv::<bool, bf16>(vec![true]), vec![bf16::ONE]);
    }

    #[test]
    fn convert_keeps_shape_and_handles_empty() {
        let x = t(&[2, 0], Vec::<u8>::new());
        let y = convert(&x, DType::F16).unwrap();
        assert_eq!((y.shape(), y.dtype()), (&[2usize, 0][..], DType::F16));
        let same = convert(&v(vec![1.5f32, f32::NAN]), DType::F32).unwrap();
        assert_same(&same.to_f64_vec(), &[1.5, NAN]);
        let m = convert(&t(&[2, 1], vec![1i32, 2]), DType::F64).unwrap();
        assert_eq!(
            (m.shape(), m.to_f64_vec()),
            (&[2usize, 1][..], vec![1.0, 2.0])
        );
    }

    // ---- float8 ----

    /// The bit patterns of float8 elements.
    fn bits<T: crate::float8::Float8>(v: Vec<T>) -> Vec<u8> {
        v.into_iter().map(T::to_bits).collect()
    }

    #[test]
    fn convert_to_float8_rounds_to_nearest_even_and_saturates_finite_values() {
        // The ONNX Cast test inputs: RNE, finite overflow to ±max, NaN to NaN, -tiny to -0.
        let x = vec![
            0.478_925_47f32,
            0.499_684_87,
            1e6,
            1e-7,
            NAN as f32,
            -1e-7,
            -1e6,
        ];
        assert_eq!(
            bits(conv::<f32, F8E4M3FN>(x.clone())),
            [0x2f, 0x30, 0x7e, 0x00, 0x7f, 0x80, 0xfe]
        );
        assert_eq!(
            bits(conv::<f32, F8E4M3FNUZ>(x.clone())),
            [0x37, 0x38, 0x7f, 0x00, 0x80, 0x00, 0xff]
        );
        assert_eq!(
            bits(conv::<f32, F8E5M2>(x.clone())),
            [0x38, 0x38, 0x7b, 0x00, 0x7e, 0x80, 0xfb]
        );
        assert_eq!(
            bits(conv::<f32, F8E5M2FNUZ>(x)),
            [0x3c, 0x3c, 0x7f, 0x00, 0x80, 0x00, 0xff]
        );
        // ±inf stays ±inf where the type has infinities, else saturates.
        assert_eq!(bits(conv::<f64, F8E5M2>(vec![INF, -INF])), [0x7c, 0xfc]);
        assert_eq!(bits(conv::<f64, F8E4M3FN>(vec![INF, -INF])), [0x7e, 0xfe]);
        assert_eq!(bits(conv::<f16, F8E4M3FNUZ>(vec![f16::INFINITY])), [0x7f]);
        // Integers round once: 17 is a tie between 16 and 18 (16 is even); 2^62 + 1 saturates.
        assert_eq!(
            conv::<i32, F8E4M3FN>(vec![17, 19, -1000]),
            vec![
                F8E4M3FN::from_f32(16.0),
                F8E4M3FN::from_f32(20.0),
                F8E4M3FN::MIN
            ]
        );
        assert_eq!(conv::<i64, F8E5M2>(vec![(1 << 62) + 1]), vec![F8E5M2::MAX]);
        assert_eq!(
            bits(conv::<bool, F8E5M2FNUZ>(vec![true, false])),
            [0x40, 0x00]
        );
        // Between float8 types: through the exact value.
        assert_eq!(
            bits(conv::<F8E5M2, F8E4M3FN>(vec![
                F8E5M2(0x7c),
                F8E5M2(0x3d),
                F8E5M2(0x80)
            ])),
            [0x7e, 0x3a, 0x80]
        );
    }

    #[test]
    fn convert_to_cfp8_rounds_to_nearest_even_saturates_and_maps_nan_to_zero() {
        // The ONNX Cast inputs again: CFP8 has the grids of E4M3FN and E5M2 (same biases), but
        // its all-ones patterns are numbers (0x7F is 480 or 114688), out-of-range values and
        // infinities saturate, NaN gives +0 (no NaN pattern), -tiny gives -0.
        let x = vec![
            0.478_925_47f32,
            0.499_684_87,
            1e6,
            1e-7,
            NAN as f32,
            -1e-7,
            -1e6,
        ];
        assert_eq!(
            bits(conv::<f32, CF8E4M3>(x.clone())),
            [0x2f, 0x30, 0x7f, 0x00, 0x00, 0x80, 0xff]
        );
        assert_eq!(
            bits(conv::<f32, CF8E5M2>(x)),
            [0x38, 0x38, 0x7f, 0x00, 0x00, 0x80, 0xff]
        );
        assert_eq!(
            bits(conv::<f64, CF8E4M3>(vec![INF, -INF, -NAN])),
            [0x7f, 0xff, 0x00]
        );
        assert_eq!(
            bits(conv::<f16, CF8E5M2>(vec![f16::NEG_INFINITY, f16::NAN])),
            [0xff, 0]
        );
        // 464 rounds to 448 in E4M3FN (whose 480 pattern is NaN) but 465 rounds to 480 here;
        // 496 is the tie between 480 (odd) and the virtual 512 (even): saturated to 480.
        assert_eq!(
            conv::<f32, CF8E4M3>(vec![464.0, 465.0, 496.0, -1e30]),
            vec![
                CF8E4M3::from_f32(448.0),
                CF8E4M3::MAX,
                CF8E4M3::MAX,
                CF8E4M3::MIN
            ]
        );
        assert_eq!(CF8E4M3::MAX.to_f32(), 480.0);
        // Integers round once: 17 is a tie between 16 and 18 (16 is even); 2^62 + 1 saturates.
        assert_eq!(
            conv::<i32, CF8E4M3>(vec![17, 19, -1000, 480]),
            vec![
                CF8E4M3::from_f32(16.0),
                CF8E4M3::from_f32(20.0),
                CF8E4M3::MIN,
                CF8E4M3::MAX
            ]
        );
        assert_eq!(
            conv::<i64, CF8E5M2>(vec![(1 << 62) + 1]),
            vec![CF8E5M2::MAX]
        );
        assert_eq!(conv::<u32, CF8E5M2>(vec![114688]), vec![CF8E5M2::MAX]);
        assert_eq!(bits(conv::<bool, CF8E5M2>(vec![true, false])), [0x3c, 0x00]);
        // Between float8 types: through the exact value; inf saturates, NaN gives 0.
        assert_eq!(
            bits(conv::<F8E5M2, CF8E4M3>(vec![
                F8E5M2(0x7c),
                F8E5M2(0x3d),
                F8E5M2(0x80),
                F8E5M2(0x7e)
            ])),
            [0x7f, 0x3a, 0x80, 0x00]
        );
        // Out of CFP8: 114688 saturates to E5M2's finite max, 480 to E4M3FN's.
        assert_eq!(bits(conv::<CF8E5M2, F8E5M2>(vec![CF8E5M2::MAX])), [0x7b]);
        assert_eq!(bits(conv::<CF8E4M3, F8E4M3FN>(vec![CF8E4M3::MIN])), [0xfe]);
    }

    #[test]
    fn convert_from_cfp8_is_exact() {
        let x: Vec<CF8E5M2> = (0..=255).map(CF8E5M2).collect();
        let y = conv::<CF8E5M2, f32>(x.clone());
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a.to_f32().to_bits(), b.to_bits());
            assert!(b.is_finite());
        }
        assert_same(
            &conv::<CF8E4M3, f64>(vec![CF8E4M3(1), CF8E4M3(0x80), CF8E4M3(0xff)]),
            &[2f64.powi(-9), -0.0, -480.0],
        );
        assert_eq!(conv::<CF8E4M3, i32>(vec![CF8E4M3(0x7f)]), vec![480]);
        assert_eq!(conv::<CF8E5M2, i16>(vec![CF8E5M2(0xff)]), vec![i16::MIN]);
        assert_eq!(
            conv::<CF8E4M3, bool>(vec![CF8E4M3(0x80), CF8E4M3(0x7f)]),
            vec![false, true]
        );
    }

    #[test]
    fn cfp8_arithmetic_rounds_once_and_has_no_nan() {
        let f = CF8E4M3::from_f32;
        // 480 + 480 saturates; 1 + 1/16 ties to 1.0.
        assert_eq!(
            bin(
                BinaryOp::Add,
                vec![f(480.0), f(1.0)],
                vec![f(480.0), f(0.0625)]
            ),
            vec![CF8E4M3::MAX, f(1.0)]
        );
        // 1/0 is inf, saturated; 0/0 is NaN, which has no pattern: +0.
        let e = CF8E5M2::from_f32;
        let q = bin(BinaryOp::Div, vec![e(1.0), e(0.0)], vec![e(0.0), e(0.0)]);
        assert_eq!(bits(q), [0x7f, 0x00]);
        assert_eq!(
            bits(un::<CF8E4M3, CF8E4M3>(UnaryOp::Neg, vec![CF8E4M3(0)])),
            [0x80]
        );
        assert_eq!(
            bits(un::<CF8E4M3, CF8E4M3>(UnaryOp::Sqrt, vec![f(-1.0)])),
            [0x00]
        );
        let all: Vec<CF8E5M2> = (0..=255).map(CF8E5M2).collect();
        assert!(!un::<CF8E5M2, bool>(UnaryOp::IsNan, all.clone()).contains(&true));
        assert!(!un::<CF8E5M2, bool>(UnaryOp::IsInf, all).contains(&true));
        assert_eq!(
            cmp(
                CompareOp::Eq,
                vec![CF8E4M3(0x80), CF8E4M3(0x7f)],
                vec![CF8E4M3(0), CF8E4M3(0x7f)]
            ),
            vec![true, true]
        );
        let io = get::<CF8E4M3>(iota(DType::CF8E4M3, &[18], 0));
        assert_eq!((io[16], io[17]), (f(16.0), f(16.0)));
    }

    #[test]
    fn convert_from_float8_is_exact() {
        let x: Vec<F8E4M3FN> = (0..=255).map(F8E4M3FN).collect();
        let y = conv::<F8E4M3FN, f32>(x.clone());
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a.to_f32().to_bits(), b.to_bits());
        }
        assert_same(
            &conv::<F8E5M2FNUZ, f64>(vec![F8E5M2FNUZ(1), F8E5M2FNUZ(0x80), F8E5M2FNUZ(0xff)]),
            &[2f64.powi(-17), NAN, -57344.0],
        );
        assert_eq!(conv::<F8E4M3FNUZ, i32>(vec![F8E4M3FNUZ(0x7f)]), vec![240]);
        assert_eq!(conv::<F8E5M2, i8>(vec![F8E5M2(0xfc)]), vec![i8::MIN]);
        assert_eq!(
            conv::<F8E4M3FN, bool>(vec![F8E4M3FN(0x80), F8E4M3FN(0x7f)]),
            vec![false, true]
        );
    }

    #[test]
    fn float8_arithmetic_rounds_once() {
        let f = F8E4M3FN::from_f32;
        // 1 + 1/16 is a tie between 1 and 1.125: even (1.0).
        assert_eq!(
            bin(
                BinaryOp::Add,
                vec![f(1.0), f(448.0)],
                vec![f(0.0625), f(448.0)]
            ),
            vec![f(1.0), F8E4M3FN::MAX]
        );
        // 4.5 * 3.75 = 16.875 lies between 16 and 18.
        assert_eq!(
            bin(BinaryOp::Mul, vec![f(4.5)], vec![f(3.75)]),
            vec![f(16.0)]
        );
        let e = F8E5M2::from_f32;
        let q = bin(BinaryOp::Div, vec![e(1.0), e(0.0)], vec![e(0.0), e(0.0)]);
        assert!(q[0].0 == 0x7c && q[1].is_nan());
        assert_eq!(
            bits(un::<F8E5M2, F8E5M2>(UnaryOp::Neg, vec![F8E5M2(0x7c)])),
            [0xfc]
        );
        assert_eq!(
            bits(un::<F8E4M3FNUZ, F8E4M3FNUZ>(
                UnaryOp::Neg,
                vec![F8E4M3FNUZ(0)]
            )),
            [0]
        );
        assert_eq!(
            un::<F8E4M3FN, F8E4M3FN>(UnaryOp::Sqrt, vec![f(2.0)]),
            vec![f(1.375)]
        );
        assert_eq!(
            un::<F8E4M3FN, bool>(UnaryOp::IsNan, vec![F8E4M3FN::NAN, f(1.0)]),
            vec![true, false]
        );
        assert_eq!(
            un::<F8E5M2, bool>(UnaryOp::IsInf, vec![F8E5M2(0xfc), F8E5M2::MAX]),
            vec![true, false]
        );
        assert_eq!(
            cmp(
                CompareOp::Eq,
                vec![F8E4M3FN(0x80), F8E4M3FN::NAN],
                vec![F8E4M3FN(0), F8E4M3FN::NAN]
            ),
            vec![true, false]
        );
        assert_eq!(cmp(CompareOp::Lt, vec![f(-1.0)], vec![f(0.5)]), vec![true]);
        let io = get::<F8E4M3FN>(iota(DType::F8E4M3FN, &[18], 0));
        assert_eq!((io[16], io[17]), (f(16.0), f(16.0)));
    }
}
