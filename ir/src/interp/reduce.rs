//! Reductions, arg-reductions, cumulative reductions and sort.
//!
//! # Numerics (the oracle's policy)
//!
//! - Sums and products accumulate in `Arith::Acc`: f64 for every float type (f64, f32, f16,
//!   bf16 and the float8 types), rounded once to the element type at the end, which makes the oracle at least as
//!   exact as any backend (backends compare against it with a tolerance). Integers wrap in their
//!   own type. Bool sums are a logical or and bool products a logical and. The same policy holds
//!   for `cumsum`/`cumprod` (each output is the running f64 value rounded once) and for the sums
//!   of [`super::linalg`] (`dot_general`, `conv`, `reduce_window_sum`).
//! - A reduction starts from its first element, as numpy's does (so the sum of `[-0.0]` is
//!   `-0.0`); over no elements it gives the identity of [`ReduceKind`].
//! - Max and min propagate NaN (the first NaN met wins); between equal values (`-0.0` and `0.0`)
//!   the earlier one wins, as in numpy's `maximum.reduce`. On bool, max is or and min is and.
//! - `argmax`/`argmin`: NaN counts as the max (argmax) and the min (argmin) and the first NaN
//!   wins, `select_last` included (it only affects ties between numbers).
//! - `sort` orders `-0.0` and `0.0` as equal (so they keep their order) and all NaNs as equal.
//!
//! # Shared machinery
//!
//! [`super::linalg`] uses this file's `Arith` (per-type accumulator and identities),
//! `Reducer` (one implementation per [`ReduceKind`], picked with `with_reducer!`) and index
//! helpers (`offsets`, `advance`, `try_vec`). Every kernel precomputes its index arithmetic
//! into offset tables, so the inner loops only add offsets and never allocate.

use std::cmp::Ordering;

use half::{bf16, f16};

use super::{InterpError, invalid};
use crate::float8::{CF8E4M3, CF8E5M2, F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ};
use crate::op::ReduceKind;
use crate::shape::row_major_strides;
use crate::tensor::{Element, Tensor, try_filled_vec};
use crate::with_data;

// ---------------------------------------------------------------------------------------------
// Arithmetic per element type
// ---------------------------------------------------------------------------------------------

/// A type sums and products accumulate in.
pub(crate) trait Accum: Copy {
    /// The additive identity.
    const ZERO: Self;
    /// The multiplicative identity.
    const ONE: Self;
    fn add(self, rhs: Self) -> Self;
    fn mul(self, rhs: Self) -> Self;
}

impl Accum for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
    fn add(self, rhs: f64) -> f64 {
        self + rhs
    }
    fn mul(self, rhs: f64) -> f64 {
        self * rhs
    }
}

macro_rules! impl_accum_int {
    ($($t:ty),*) => {$(
        /// Two's complement: wraps on overflow.
        impl Accum for $t {
            const ZERO: $t = 0;
            const ONE: $t = 1;
            fn add(self, rhs: $t) -> $t {
                self.wrapping_add(rhs)
            }
            fn mul(self, rhs: $t) -> $t {
                self.wrapping_mul(rhs)
            }
        }
    )*};
}
impl_accum_int!(i8, i16, i32, i64, u8, u16, u32, u64);

/// Sum is logical or, product is logical and.
impl Accum for bool {
    const ZERO: bool = false;
    const ONE: bool = true;
    fn add(self, rhs: bool) -> bool {
        self | rhs
    }
    fn mul(self, rhs: bool) -> bool {
        self & rhs
    }
}

/// What the kernels need of an element type: an accumulator and the identities of max and min.
pub(crate) trait Arith: Element + PartialOrd {
    /// Where sums and products of this type accumulate (see the module docs).
    type Acc: Accum;
    /// The identity of max: -inf for floats (the least finite value for float8 types without
    /// infinities), `MIN` for integers, false for bool.
    const LOWEST: Self;
    /// The identity of min: +inf for floats (the largest finite value for float8 types without
    /// infinities), `MAX` for integers, true for bool.
    const HIGHEST: Self;
    /// Exact.
    fn to_acc(self) -> Self::Acc;
    /// Rounds to nearest even for floats; exact otherwise.
    fn from_acc(acc: Self::Acc) -> Self;
}

macro_rules! impl_arith_float {
    ($($t:ty: $lowest:expr, $highest:expr);* $(;)?) => {$(
        impl Arith for $t {
            type Acc = f64;
            const LOWEST: $t = $lowest;
            const HIGHEST: $t = $highest;
            fn to_acc(self) -> f64 {
                Element::to_f64(self)
            }
            fn from_acc(acc: f64) -> $t {
                <$t as Element>::from_f64(acc)
            }
        }
    )*};
}
/// The float8 type `T`'s least or greatest value: ±inf where it has infinities, else ±max.
macro_rules! f8_extreme {
    ($t:ty, $negative:expr) => {
        <$t>::from_bits(<$t>::FORMAT.extreme_bits($negative))
    };
}
impl_arith_float! {
    f64: f64::NEG_INFINITY, f64::INFINITY;
    f32: f32::NEG_INFINITY, f32::INFINITY;
    f16: f16::NEG_INFINITY, f16::INFINITY;
    bf16: bf16::NEG_INFINITY, bf16::INFINITY;
    F8E4M3FN: f8_extreme!(F8E4M3FN, true), f8_extreme!(F8E4M3FN, false);
    F8E4M3FNUZ: f8_extreme!(F8E4M3FNUZ, true), f8_extreme!(F8E4M3FNUZ, false);
    F8E5M2: f8_extreme!(F8E5M2, true), f8_extreme!(F8E5M2, false);
    F8E5M2FNUZ: f8_extreme!(F8E5M2FNUZ, true), f8_extreme!(F8E5M2FNUZ, false);
    CF8E4M3: f8_extreme!(CF8E4M3, true), f8_extreme!(CF8E4M3, false);
    CF8E5M2: f8_extreme!(CF8E5M2, true), f8_extreme!(CF8E5M2, false);
}

macro_rules! impl_arith_exact {
    ($($t:ty: $lowest:expr, $highest:expr);* $(;)?) => {$(
        impl Arith for $t {
            type Acc = $t;
            const LOWEST: $t = $lowest;
            const HIGHEST: $t = $highest;
            fn to_acc(self) -> $t {
                self
            }
            fn from_acc(acc: $t) -> $t {
                acc
            }
        }
    )*};
}
impl_arith_exact! {
    i8: i8::MIN, i8::MAX; i16: i16::MIN, i16::MAX; i32: i32::MIN, i32::MAX; i64: i64::MIN, i64::MAX;
    u8: 0, u8::MAX; u16: 0, u16::MAX; u32: 0, u32::MAX; u64: 0, u64::MAX;
    bool: false, true;
}

/// True for a float NaN (the only value not comparable to itself).
pub(crate) fn is_nan<T: PartialOrd>(x: T) -> bool {
    x.partial_cmp(&x).is_none()
}

/// numpy's `maximum`: NaN if either is NaN (`a` if both are), else the larger; a tie keeps `a`.
pub(crate) fn max_nan<T: PartialOrd>(a: T, b: T) -> T {
    if !is_nan(&a) && (is_nan(&b) || b > a) {
        b
    } else {
        a
    }
}

/// numpy's `minimum`: NaN if either is NaN (`a` if both are), else the smaller; a tie keeps `a`.
pub(crate) fn min_nan<T: PartialOrd>(a: T, b: T) -> T {
    if !is_nan(&a) && (is_nan(&b) || b < a) {
        b
    } else {
        a
    }
}

/// The order of `sort`: ascending with every NaN after every number (NaNs equal among
/// themselves); `descending` reverses it, which puts NaNs first.
pub(crate) fn sort_order<T: PartialOrd>(a: &T, b: &T, descending: bool) -> Ordering {
    let (a, b) = if descending { (b, a) } else { (a, b) };
    match (is_nan(a), is_nan(b)) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
    }
}

// ---------------------------------------------------------------------------------------------
// Reducers: one per ReduceKind
// ---------------------------------------------------------------------------------------------

/// The combining function of a [`ReduceKind`] on element type `T`, as a fold over a state.
pub(crate) trait Reducer<T: Arith> {
    type State: Copy;
    /// The result over no elements.
    fn identity() -> T;
    /// The state after the first element.
    fn start(x: T) -> Self::State;
    /// The state after one more element.
    fn step(state: Self::State, x: T) -> Self::State;
    /// The result from a state.
    fn finish(state: Self::State) -> T;

    /// Reduce a sequence: starts from its first element; the identity when it is empty.
    fn fold(items: impl IntoIterator<Item = T>) -> T {
        let mut items = items.into_iter();
        match items.next() {
            None => Self::identity(),
            Some(first) => Self::finish(items.fold(Self::start(first), Self::step)),
        }
    }
}

/// `reduce_sum` and friends: [`Accum::add`] in the accumulator type.
pub(crate) struct Sum;
/// `reduce_prod` and friends: [`Accum::mul`] in the accumulator type.
pub(crate) struct Prod;
/// `reduce_max` and friends: [`max_nan`] in the element type.
pub(crate) struct Max;
/// `reduce_min` and friends: [`min_nan`] in the element type.
pub(crate) struct Min;

macro_rules! accumulating_reducer {
    ($R:ident, $identity:ident, $op:ident) => {
        impl<T: Arith> Reducer<T> for $R {
            type State = T::Acc;
            fn identity() -> T {
                T::from_acc(<T::Acc as Accum>::$identity)
            }
            fn start(x: T) -> T::Acc {
                x.to_acc()
            }
            fn step(state: T::Acc, x: T) -> T::Acc {
                state.$op(x.to_acc())
            }
            fn finish(state: T::Acc) -> T {
                T::from_acc(state)
            }
        }
    };
}
accumulating_reducer!(Sum, ZERO, add);
accumulating_reducer!(Prod, ONE, mul);

macro_rules! selecting_reducer {
    ($R:ident, $identity:ident, $pick:ident) => {
        impl<T: Arith> Reducer<T> for $R {
            type State = T;
            fn identity() -> T {
                T::$identity
            }
            fn start(x: T) -> T {
                x
            }
            fn step(state: T, x: T) -> T {
                $pick(state, x)
            }
            fn finish(state: T) -> T {
                state
            }
        }
    };
}
selecting_reducer!(Max, LOWEST, max_nan);
selecting_reducer!(Min, HIGHEST, min_nan);

/// Run `$body` with the type alias `$R` set to the [`Reducer`] of a [`ReduceKind`].
macro_rules! with_reducer {
    ($kind:expr, $R:ident => $body:expr) => {
        match $kind {
            $crate::op::ReduceKind::Sum => {
                type $R = $crate::interp::reduce::Sum;
                $body
            }
            $crate::op::ReduceKind::Prod => {
                type $R = $crate::interp::reduce::Prod;
                $body
            }
            $crate::op::ReduceKind::Max => {
                type $R = $crate::interp::reduce::Max;
                $body
            }
            $crate::op::ReduceKind::Min => {
                type $R = $crate::interp::reduce::Min;
                $body
            }
        }
    };
}
pub(crate) use with_reducer;

// ---------------------------------------------------------------------------------------------
// Index helpers
// ---------------------------------------------------------------------------------------------

/// An empty `Vec` with room for `n` elements, or an error instead of an abort.
pub(crate) fn try_vec<T>(n: usize) -> Result<Vec<T>, InterpError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|e| {
        InterpError::Runtime(format!(
            "cannot allocate an index table of {n} entries: {e}"
        ))
    })?;
    Ok(v)
}

/// Step the row-major multi-index `idx` within `extents` (the last dim fastest). Returns false,
/// with `idx` back at all zeros, after the last index.
pub(crate) fn advance(idx: &mut [usize], extents: &[usize]) -> bool {
    for (i, &e) in idx.iter_mut().zip(extents).rev() {
        *i += 1;
        if *i < e {
            return true;
        }
        *i = 0;
    }
    false
}

/// The linear offset of a multi-index under `strides`.
pub(crate) fn linear(idx: &[usize], strides: &[usize]) -> usize {
    idx.iter().zip(strides).map(|(i, s)| i * s).sum()
}

/// The offset under `strides` of every multi-index of the box `extents`, in row-major order
/// (one entry, 0, for no dims; none when an extent is 0).
pub(crate) fn offsets(extents: &[usize], strides: &[usize]) -> Result<Vec<usize>, InterpError> {
    let n = extents
        .iter()
        .try_fold(1usize, |acc, &e| acc.checked_mul(e))
        .ok_or_else(|| invalid(format!("the index box {extents:?} has too many elements")))?;
    let mut out = try_vec(n)?;
    if n > 0 {
        let mut idx = vec![0; extents.len()];
        loop {
            out.push(linear(&idx, strides));
            if !advance(&mut idx, extents) {
                break;
            }
        }
    }
    Ok(out)
}

fn check_axis(op: &str, axis: usize, rank: usize) -> Result<(), InterpError> {
    if axis < rank {
        Ok(())
    } else {
        Err(invalid(format!(
            "{op}: axis {axis} is out of range for rank {rank}"
        )))
    }
}

/// A tensor seen as lines along one axis: element `i` of the line starting at `base` is at
/// `base + i * inner`.
#[derive(Debug, Clone, Copy)]
struct Lines {
    outer: usize,
    len: usize,
    inner: usize,
}

impl Lines {
    fn new(shape: &[usize], axis: usize) -> Lines {
        Lines {
            outer: shape[..axis].iter().product(),
            len: shape[axis],
            inner: shape[axis + 1..].iter().product(),
        }
    }

    /// The first element of every line, in the row-major order of the other dims.
    fn bases(self) -> impl Iterator<Item = usize> {
        (0..self.outer)
            .flat_map(move |o| (0..self.inner).map(move |n| o * self.len * self.inner + n))
    }

    /// Element `i` of the line starting at `base`.
    fn at(self, base: usize, i: usize) -> usize {
        base + i * self.inner
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// `reduce_KIND(x) {axes, keep_dims}`: see [`crate::op::Op::Reduce`].
pub fn reduce(
    x: &Tensor,
    kind: ReduceKind,
    axes: &[usize],
    keep_dims: bool,
) -> Result<Tensor, InterpError> {
    let shape = x.shape();
    let mut reduced = vec![false; shape.len()];
    for &a in axes {
        check_axis("reduce", a, shape.len())?;
        if std::mem::replace(&mut reduced[a], true) {
            return Err(invalid(format!("reduce: axis {a} is listed twice")));
        }
    }
    // Split the dims into kept ones (which index the result) and reduced ones.
    let (mut kept_ext, mut kept_str, mut red_ext, mut red_str) = (vec![], vec![], vec![], vec![]);
    let mut out_shape = Vec::with_capacity(shape.len());
    for ((&e, s), &r) in shape.iter().zip(row_major_strides(shape)).zip(&reduced) {
        if r {
            red_ext.push(e);
            red_str.push(s);
            if keep_dims {
                out_shape.push(1);
            }
        } else {
            kept_ext.push(e);
            kept_str.push(s);
            out_shape.push(e);
        }
    }
    if out_shape.contains(&0) {
        return Ok(Tensor::zeros(x.dtype(), &out_shape)?);
    }
    let kept = offsets(&kept_ext, &kept_str)?;
    let red = offsets(&red_ext, &red_str)?;
    with_data!(x.data(), v, T => with_reducer!(kind, R => {
        reduce_typed::<T, R>(v, &kept, &red, out_shape)
    }))
}

fn reduce_typed<T: Arith, R: Reducer<T>>(
    x: &[T],
    kept: &[usize],
    reduced: &[usize],
    out_shape: Vec<usize>,
) -> Result<Tensor, InterpError> {
    let mut out = try_filled_vec(&out_shape, T::default())?;
    for (y, &base) in out.iter_mut().zip(kept) {
        *y = R::fold(reduced.iter().map(|&r| x[base + r]));
    }
    Ok(Tensor::from_vec(out_shape, out)?)
}

/// `argmax`/`argmin(x) {axis, keep_dims, select_last}`: see [`crate::op::Op::ArgReduce`].
pub fn arg_reduce(
    x: &Tensor,
    is_max: bool,
    axis: usize,
    keep_dims: bool,
    select_last: bool,
) -> Result<Tensor, InterpError> {
    let name = if is_max { "argmax" } else { "argmin" };
    check_axis(name, axis, x.rank())?;
    if x.shape()[axis] == 0 {
        return Err(invalid(format!("{name}: axis {axis} is empty")));
    }
    let mut out_shape = x.shape().to_vec();
    if keep_dims {
        out_shape[axis] = 1;
    } else {
        out_shape.remove(axis);
    }
    let mut out = try_filled_vec::<i64>(&out_shape, 0)?;
    let lines = Lines::new(x.shape(), axis);
    with_data!(x.data(), v, T => arg_lines::<T>(v, lines, is_max, select_last, &mut out));
    Ok(Tensor::from_vec(out_shape, out)?)
}

fn arg_lines<T: Arith>(x: &[T], lines: Lines, is_max: bool, select_last: bool, out: &mut [i64]) {
    for (y, base) in out.iter_mut().zip(lines.bases()) {
        let (mut best, mut best_v) = (0, x[base]);
        for i in 1..lines.len {
            if is_nan(best_v) {
                break; // The first NaN wins.
            }
            let v = x[lines.at(base, i)];
            let wins = match v.partial_cmp(&best_v) {
                None => true, // `v` is NaN.
                Some(Ordering::Greater) => is_max,
                Some(Ordering::Less) => !is_max,
                Some(Ordering::Equal) => select_last,
            };
            if wins {
                (best, best_v) = (i, v);
            }
        }
        // An index along an axis of a real tensor is below isize::MAX.
        *y = best as i64;
    }
}

/// `cumsum`/`cumprod`/`cummax`/`cummin(x) {axis, exclusive, reverse}`: see
/// [`crate::op::Op::Cumulative`].
pub fn cumulative(
    x: &Tensor,
    kind: ReduceKind,
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> Result<Tensor, InterpError> {
    check_axis("cumulative", axis, x.rank())?;
    let lines = Lines::new(x.shape(), axis);
    with_data!(x.data(), v, T => with_reducer!(kind, R => {
        let mut out = try_filled_vec(x.shape(), T::default())?;
        cumulate::<T, R>(v, lines, exclusive, reverse, &mut out);
        Ok(Tensor::from_vec(x.shape().to_vec(), out)?)
    }))
}

fn cumulate<T: Arith, R: Reducer<T>>(
    x: &[T],
    lines: Lines,
    exclusive: bool,
    reverse: bool,
    out: &mut [T],
) {
    for base in lines.bases() {
        let mut state: Option<R::State> = None;
        for step in 0..lines.len {
            let p = lines.at(base, if reverse { lines.len - 1 - step } else { step });
            let next = match state {
                None => R::start(x[p]),
                Some(s) => R::step(s, x[p]),
            };
            out[p] = match (exclusive, state) {
                (true, None) => R::identity(),
                (true, Some(before)) => R::finish(before),
                (false, _) => R::finish(next),
            };
            state = Some(next);
        }
    }
}

/// `sort(x) {axis, descending}`: the sorted values and their i64 indices along `axis`; see
/// [`crate::op::Op::Sort`].
pub fn sort(x: &Tensor, axis: usize, descending: bool) -> Result<(Tensor, Tensor), InterpError> {
    check_axis("sort", axis, x.rank())?;
    if x.is_empty() {
        return Ok((x.clone(), Tensor::zeros(crate::DType::I64, x.shape())?));
    }
    let lines = Lines::new(x.shape(), axis);
    let mut indices = try_filled_vec::<i64>(x.shape(), 0)?;
    let values = with_data!(x.data(), v, T => {
        sort_typed::<T>(v, x.shape(), lines, descending, &mut indices)?
    });
    Ok((values, Tensor::from_vec(x.shape().to_vec(), indices)?))
}

fn sort_typed<T: Arith>(
    x: &[T],
    shape: &[usize],
    lines: Lines,
    descending: bool,
    indices: &mut [i64],
) -> Result<Tensor, InterpError> {
    let mut values = try_filled_vec(shape, T::default())?;
    // The permutation of one line, reused for every line.
    let mut perm: Vec<usize> = try_vec(lines.len)?;
    for base in lines.bases() {
        perm.clear();
        perm.extend(0..lines.len);
        // `sort_by` is stable.
        perm.sort_by(|&a, &b| sort_order(&x[lines.at(base, a)], &x[lines.at(base, b)], descending));
        for (i, &src) in perm.iter().enumerate() {
            values[lines.at(base, i)] = x[lines.at(base, src)];
            indices[lines.at(base, i)] = src as i64;
        }
    }
    Ok(Tensor::from_vec(shape.to_vec(), values)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tensor of shape `shape` holding `data`.
    pub(crate) fn t<T: Element>(shape: &[usize], data: Vec<T>) -> Tensor {
        Tensor::from_vec(shape.to_vec(), data).unwrap()
    }

    /// The message of an `InterpError::Invalid`.
    pub(crate) fn invalid_msg(r: Result<impl std::fmt::Debug, InterpError>) -> String {
        match r {
            Err(InterpError::Invalid(m)) => m,
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    const NAN: f32 = f32::NAN;
    const INF: f32 = f32::INFINITY;

    fn red(x: &Tensor, kind: ReduceKind, axes: &[usize], keep_dims: bool) -> Tensor {
        reduce(x, kind, axes, keep_dims).unwrap()
    }

    /// `[2, 3]` f32 `[[1, 2, 3], [4, 5, 6]]`.
    fn m23() -> Tensor {
        t(&[2, 3], vec![1.0f32, 2., 3., 4., 5., 6.])
    }

    /// `[2, 3, 4]` with element `[i, j, k]` = `12i + 4j + k`.
    fn iota234() -> Tensor {
        t(&[2, 3, 4], (0..24).collect::<Vec<i32>>())
    }

    // --- reduce_sum ---------------------------------------------------------------------

    #[test]
    fn sum_single_axis_and_keep_dims() {
        use ReduceKind::Sum;
        assert_eq!(red(&m23(), Sum, &[1], false), t(&[2], vec![6.0f32, 15.]));
        assert_eq!(
            red(&m23(), Sum, &[0], true),
            t(&[1, 3], vec![5.0f32, 7., 9.])
        );
        assert_eq!(red(&m23(), Sum, &[0, 1], false), t(&[], vec![21.0f32]));
        assert_eq!(red(&m23(), Sum, &[1, 0], true), t(&[1, 1], vec![21.0f32]));
        // No axes: the identity.
        assert_eq!(red(&m23(), Sum, &[], false), m23());
    }

    #[test]
    fn sum_multiple_axes_any_order() {
        // Over i and k: sum 12i + 4j + k = 8 * 4j + 4 * 12 + 2 * 6 = 60 + 32j.
        let want = t(&[3], vec![60i32, 92, 124]);
        assert_eq!(red(&iota234(), ReduceKind::Sum, &[0, 2], false), want);
        assert_eq!(red(&iota234(), ReduceKind::Sum, &[2, 0], false), want);
        let kept = red(&iota234(), ReduceKind::Sum, &[2, 0], true);
        assert_eq!(kept, t(&[1, 3, 1], vec![60i32, 92, 124]));
    }

    #[test]
    fn sum_empty_axes_and_empty_tensors() {
        let e = t(&[2, 0], Vec::<f32>::new());
        assert_eq!(
            red(&e, ReduceKind::Sum, &[1], false),
            t(&[2], vec![0.0f32, 0.0])
        );
        assert_eq!(
            red(&e, ReduceKind::Sum, &[0, 1], false),
            t(&[], vec![0.0f32])
        );
        assert_eq!(
            red(&e, ReduceKind::Sum, &[0], true),
            t(&[1, 0], Vec::<f32>::new())
        );
        let ei = t(&[0, 3], Vec::<i64>::new());
        assert_eq!(
            red(&ei, ReduceKind::Sum, &[0], false),
            t(&[3], vec![0i64; 3])
        );
    }

    #[test]
    fn sum_wraps_integers_and_ors_bools() {
        assert_eq!(
            red(&t(&[2], vec![100i8, 100]), ReduceKind::Sum, &[0], false),
            t(&[], vec![-56i8])
        );
        assert_eq!(
            red(&t(&[2], vec![200u8, 100]), ReduceKind::Sum, &[0], false),
            t(&[], vec![44u8])
        );
        let b = t(&[2, 2], vec![false, true, false, false]);
        assert_eq!(
            red(&b, ReduceKind::Sum, &[1], false),
            t(&[2], vec![true, false])
        );
    }

    #[test]
    fn sum_accumulates_floats_in_f64() {
        // In f32, 1e8 + 1 rounds back to 1e8; the f64 accumulator keeps the 1.
        let x = t(&[3], vec![1e8f32, 1.0, -1e8]);
        assert_eq!(red(&x, ReduceKind::Sum, &[0], false), t(&[], vec![1.0f32]));
        // In f16, 2048 + 1 rounds to 2048 (twice); the exact 2050 is representable.
        let h = t(&[3], vec![f16::from_f32(2048.0), f16::ONE, f16::ONE]);
        assert_eq!(
            red(&h, ReduceKind::Sum, &[0], false),
            t(&[], vec![f16::from_f32(2050.0)])
        );
        // A sum starts from its first element: -0.0 stays -0.0 (as in numpy).
        let z = t(&[2], vec![-0.0f64, -0.0]);
        assert_eq!(red(&z, ReduceKind::Sum, &[0], false), t(&[], vec![-0.0f64]));
    }

    // --- reduce_prod --------------------------------------------------------------------

    #[test]
    fn prod_basic_and_keep_dims() {
        assert_eq!(
            red(&m23(), ReduceKind::Prod, &[1], true),
            t(&[2, 1], vec![6.0f32, 120.])
        );
        assert_eq!(
            red(&m23(), ReduceKind::Prod, &[0, 1], false),
            t(&[], vec![720.0f32])
        );
        let x = iota234();
        // Over j at (i, k) = (0, 1): 1 * 5 * 9.
        assert_eq!(
            red(&x, ReduceKind::Prod, &[1], false)
                .as_slice::<i32>()
                .unwrap()[1],
            45
        );
    }

    #[test]
    fn prod_empty_is_one() {
        let e = t(&[0, 2], Vec::<f64>::new());
        assert_eq!(
            red(&e, ReduceKind::Prod, &[0], false),
            t(&[2], vec![1.0f64, 1.0])
        );
        let eb = t(&[0], Vec::<bool>::new());
        assert_eq!(red(&eb, ReduceKind::Prod, &[0], false), t(&[], vec![true]));
        let eu = t(&[0], Vec::<u16>::new());
        assert_eq!(red(&eu, ReduceKind::Prod, &[0], false), t(&[], vec![1u16]));
    }

    #[test]
    fn prod_wraps_integers_and_ands_bools() {
        assert_eq!(
            red(&t(&[2], vec![16i8, 16]), ReduceKind::Prod, &[0], false),
            t(&[], vec![0i8])
        );
        assert_eq!(
            red(&t(&[2], vec![-128i8, -1]), ReduceKind::Prod, &[0], false),
            t(&[], vec![-128i8])
        );
        assert_eq!(
            red(&t(&[2], vec![300u16, 300]), ReduceKind::Prod, &[0], false),
            t(&[], vec![24464u16])
        );
        let b = t(&[2, 2], vec![true, true, true, false]);
        assert_eq!(
            red(&b, ReduceKind::Prod, &[1], false),
            t(&[2], vec![true, false])
        );
    }

    // --- reduce_max ---------------------------------------------------------------------

    #[test]
    fn max_basic_multi_axis() {
        assert_eq!(
            red(&m23(), ReduceKind::Max, &[0], false),
            t(&[3], vec![4.0f32, 5., 6.])
        );
        assert_eq!(
            red(&iota234(), ReduceKind::Max, &[0, 1], true),
            t(&[1, 1, 4], vec![20i32, 21, 22, 23])
        );
        let u = t(&[3], vec![3u8, 250, 7]);
        assert_eq!(red(&u, ReduceKind::Max, &[0], false), t(&[], vec![250u8]));
    }

    #[test]
    fn max_propagates_nan() {
        let x = t(&[2, 3], vec![1.0f32, NAN, 3., 4., 5., -INF]);
        let got = red(&x, ReduceKind::Max, &[1], false);
        assert!(got.as_slice::<f32>().unwrap()[0].is_nan());
        assert_eq!(got.as_slice::<f32>().unwrap()[1], 5.0);
        let b = t(&[2], vec![bf16::NAN, bf16::INFINITY]);
        assert!(
            red(&b, ReduceKind::Max, &[0], false)
                .as_slice::<bf16>()
                .unwrap()[0]
                .is_nan()
        );
    }

    #[test]
    fn cfp8_extremes_are_plus_minus_max() {
        // No infinities: the identities of max and min are ∓max (480, 114688).
        assert_eq!(
            (CF8E4M3::LOWEST.0, CF8E4M3::HIGHEST.0),
            (CF8E4M3::MIN.0, CF8E4M3::MAX.0)
        );
        assert_eq!(
            (CF8E5M2::LOWEST.to_f32(), CF8E5M2::HIGHEST.to_f32()),
            (-114688.0, 114688.0)
        );
        let empty = t(&[0], Vec::<CF8E4M3>::new());
        let max = red(&empty, ReduceKind::Max, &[0], false);
        assert!(max.bit_eq(&t(&[], vec![CF8E4M3::MIN])));
        let min = red(&empty, ReduceKind::Min, &[0], false);
        assert!(min.bit_eq(&t(&[], vec![CF8E4M3::MAX])));
        let x = t(&[3], vec![CF8E5M2(0xff), CF8E5M2(0x01), CF8E5M2(0x7c)]);
        assert!(red(&x, ReduceKind::Max, &[0], false).bit_eq(&t(&[], vec![CF8E5M2(0x7c)])));
        assert!(red(&x, ReduceKind::Min, &[0], false).bit_eq(&t(&[], vec![CF8E5M2::MIN])));
        // The sum is exact in f64 and rounds once: -114688 + 2^-16 + 65536 to -49152 (0xFA).
        assert!(red(&x, ReduceKind::Sum, &[0], false).bit_eq(&t(&[], vec![CF8E5M2(0xfa)])));
        assert_eq!(CF8E5M2(0xfa).to_f32(), -49152.0);
    }

    #[test]
    fn max_empty_is_lowest_and_bool_is_or() {
        assert_eq!(
            red(&t(&[0], Vec::<f32>::new()), ReduceKind::Max, &[0], false),
            t(&[], vec![-INF])
        );
        assert_eq!(
            red(&t(&[0], Vec::<i32>::new()), ReduceKind::Max, &[0], false),
            t(&[], vec![i32::MIN])
        );
        assert_eq!(
            red(&t(&[0], Vec::<u64>::new()), ReduceKind::Max, &[0], false),
            t(&[], vec![0u64])
        );
        let b = t(&[2, 2], vec![false, true, false, false]);
        assert_eq!(
            red(&b, ReduceKind::Max, &[1], false),
            t(&[2], vec![true, false])
        );
    }

    // --- reduce_min ---------------------------------------------------------------------

    #[test]
    fn min_basic_multi_axis() {
        assert_eq!(
            red(&m23(), ReduceKind::Min, &[1], true),
            t(&[2, 1], vec![1.0f32, 4.])
        );
        assert_eq!(
            red(&iota234(), ReduceKind::Min, &[2, 1], false),
            t(&[2], vec![0i32, 12])
        );
        let s = t(&[3], vec![-3i64, i64::MIN, 7]);
        assert_eq!(
            red(&s, ReduceKind::Min, &[0], false),
            t(&[], vec![i64::MIN])
        );
    }

    #[test]
    fn min_propagates_nan() {
        let x = t(&[3], vec![-INF, NAN, 0.0f32]);
        assert!(
            red(&x, ReduceKind::Min, &[0], false)
                .as_slice::<f32>()
                .unwrap()[0]
                .is_nan()
        );
        let h = t(&[2], vec![f16::ONE, f16::NAN]);
        assert!(
            red(&h, ReduceKind::Min, &[0], false)
                .as_slice::<f16>()
                .unwrap()[0]
                .is_nan()
        );
    }

    #[test]
    fn min_empty_is_highest_and_bool_is_and() {
        assert_eq!(
            red(&t(&[0], Vec::<f64>::new()), ReduceKind::Min, &[0], false),
            t(&[], vec![f64::INFINITY])
        );
        assert_eq!(
            red(&t(&[0], Vec::<u8>::new()), ReduceKind::Min, &[0], false),
            t(&[], vec![255u8])
        );
        assert_eq!(
            red(&t(&[0], Vec::<i16>::new()), ReduceKind::Min, &[0], false),
            t(&[], vec![i16::MAX])
        );
        let b = t(&[2, 2], vec![true, true, true, false]);
        assert_eq!(
            red(&b, ReduceKind::Min, &[1], false),
            t(&[2], vec![true, false])
        );
    }

    #[test]
    fn reduce_rejects_bad_axes() {
        assert!(invalid_msg(reduce(&m23(), ReduceKind::Sum, &[2], false)).contains("axis 2"));
        assert!(invalid_msg(reduce(&m23(), ReduceKind::Max, &[1, 1], false)).contains("twice"));
    }

    // --- argmax / argmin ----------------------------------------------------------------

    fn arg(x: &Tensor, is_max: bool, axis: usize, keep_dims: bool, select_last: bool) -> Tensor {
        arg_reduce(x, is_max, axis, keep_dims, select_last).unwrap()
    }

    #[test]
    fn argmax_ties_and_select_last() {
        let x = t(&[2, 3], vec![1.0f32, 5., 5., 7., 2., 7.]);
        assert_eq!(arg(&x, true, 1, false, false), t(&[2], vec![1i64, 0]));
        assert_eq!(arg(&x, true, 1, false, true), t(&[2], vec![2i64, 2]));
        assert_eq!(arg(&x, false, 1, false, false), t(&[2], vec![0i64, 1]));
        assert_eq!(arg(&x, true, 0, true, false), t(&[1, 3], vec![1i64, 0, 1]));
    }

    #[test]
    fn argmin_keep_dims_and_integer_types() {
        let x = t(&[3, 2], vec![4i32, -1, 2, -1, 2, 9]);
        assert_eq!(arg(&x, false, 0, true, false), t(&[1, 2], vec![1i64, 0]));
        assert_eq!(arg(&x, false, 0, true, true), t(&[1, 2], vec![2i64, 1]));
        assert_eq!(arg(&x, true, 1, false, false), t(&[3], vec![0i64, 0, 1]));
        let b = t(&[3], vec![false, true, true]);
        assert_eq!(arg(&b, true, 0, false, false), t(&[], vec![1i64]));
        assert_eq!(arg(&b, false, 0, false, true), t(&[], vec![0i64]));
    }

    #[test]
    fn arg_nan_is_extreme_and_first_nan_wins() {
        let x = t(&[5], vec![3.0f32, NAN, INF, NAN, -INF]);
        for is_max in [true, false] {
            for select_last in [true, false] {
                assert_eq!(arg(&x, is_max, 0, false, select_last), t(&[], vec![1i64]));
            }
        }
        let y = t(&[2], vec![f16::NAN, f16::ONE]);
        assert_eq!(arg(&y, true, 0, false, true), t(&[], vec![0i64]));
    }

    #[test]
    fn arg_rejects_empty_and_bad_axis() {
        let e = t(&[2, 0], Vec::<f32>::new());
        assert!(invalid_msg(arg_reduce(&e, true, 1, false, false)).contains("empty"));
        // An empty other dim is fine: the result is empty.
        assert_eq!(arg(&e, true, 0, false, false), t(&[0], Vec::<i64>::new()));
        assert!(invalid_msg(arg_reduce(&m23(), false, 2, false, false)).contains("out of range"));
    }

    // --- cumulative ---------------------------------------------------------------------

    fn cum(x: &Tensor, kind: ReduceKind, axis: usize, exclusive: bool, reverse: bool) -> Tensor {
        cumulative(x, kind, axis, exclusive, reverse).unwrap()
    }

    #[test]
    fn cumsum_exclusive_and_reverse() {
        let x = t(&[4], vec![1.0f32, 2., 3., 4.]);
        assert_eq!(
            cum(&x, ReduceKind::Sum, 0, false, false),
            t(&[4], vec![1.0f32, 3., 6., 10.])
        );
        assert_eq!(
            cum(&x, ReduceKind::Sum, 0, true, false),
            t(&[4], vec![0.0f32, 1., 3., 6.])
        );
        assert_eq!(
            cum(&x, ReduceKind::Sum, 0, false, true),
            t(&[4], vec![10.0f32, 9., 7., 4.])
        );
        assert_eq!(
            cum(&x, ReduceKind::Sum, 0, true, true),
            t(&[4], vec![9.0f32, 7., 4., 0.])
        );
    }

    #[test]
    fn cumsum_inner_axis_wraps_and_bool() {
        // Along axis 1 of [2, 2, 2]: the middle axis.
        let x = t(&[2, 2, 2], vec![1i8, 2, 3, 4, 100, 100, 100, 28]);
        let want = t(&[2, 2, 2], vec![1i8, 2, 4, 6, 100, 100, -56, -128]);
        assert_eq!(cum(&x, ReduceKind::Sum, 1, false, false), want);
        let b = t(&[3], vec![false, true, false]);
        assert_eq!(
            cum(&b, ReduceKind::Sum, 0, false, false),
            t(&[3], vec![false, true, true])
        );
        assert_eq!(
            cum(&b, ReduceKind::Sum, 0, true, true),
            t(&[3], vec![true, false, false])
        );
        let e = t(&[2, 0], Vec::<f64>::new());
        assert_eq!(cum(&e, ReduceKind::Sum, 1, true, true), e);
    }

    #[test]
    fn cumprod_axis0_exclusive() {
        let x = t(&[2, 2], vec![1i32, 2, 3, 4]);
        assert_eq!(
            cum(&x, ReduceKind::Prod, 0, false, false),
            t(&[2, 2], vec![1i32, 2, 3, 8])
        );
        assert_eq!(
            cum(&x, ReduceKind::Prod, 0, true, false),
            t(&[2, 2], vec![1i32, 1, 1, 2])
        );
        assert_eq!(
            cum(&x, ReduceKind::Prod, 1, true, true),
            t(&[2, 2], vec![2i32, 1, 4, 1])
        );
        let b = t(&[3], vec![true, false, true]);
        assert_eq!(
            cum(&b, ReduceKind::Prod, 0, false, true),
            t(&[3], vec![false, false, true])
        );
    }

    #[test]
    fn cumprod_wraps_and_empty() {
        let x = t(&[3], vec![16i8, 16, 3]);
        assert_eq!(
            cum(&x, ReduceKind::Prod, 0, false, false),
            t(&[3], vec![16i8, 0, 0])
        );
        let u = t(&[3], vec![2u8, 200, 3]);
        assert_eq!(
            cum(&u, ReduceKind::Prod, 0, true, false),
            t(&[3], vec![1u8, 2, 144])
        );
        let e = t(&[0, 3], Vec::<f32>::new());
        assert_eq!(cum(&e, ReduceKind::Prod, 0, false, true), e);
    }

    #[test]
    fn cumprod_accumulates_floats_in_f64() {
        // 2^-200 underflows f32 but not the f64 running product, which comes back to 1.
        let (tiny, huge) = (2.0f32.powi(-100), 2.0f32.powi(100));
        let x = t(&[4], vec![tiny, tiny, huge, huge]);
        let want = t(&[4], vec![tiny, 0.0, tiny, 1.0]);
        assert_eq!(cum(&x, ReduceKind::Prod, 0, false, false), want);
    }

    #[test]
    fn cum_extremes_propagate_nan() {
        let x = t(&[4], vec![1.0f32, 3., NAN, 2.]);
        let got = cum(&x, ReduceKind::Max, 0, false, false);
        assert!(got.bit_eq(&t(&[4], vec![1.0f32, 3., NAN, NAN])));
        let got = cum(&x, ReduceKind::Min, 0, true, true);
        assert!(got.bit_eq(&t(&[4], vec![NAN, NAN, 2.0f32, INF])));
        let h = t(&[3], vec![bf16::ONE, bf16::NAN, bf16::ZERO]);
        let got = cum(&h, ReduceKind::Min, 0, false, false);
        assert!(got.bit_eq(&t(&[3], vec![bf16::ONE, bf16::NAN, bf16::NAN])));
    }

    #[test]
    fn cum_extremes_exclusive_start_at_identity() {
        let i = t(&[3], vec![5i32, 3, 7]);
        assert_eq!(
            cum(&i, ReduceKind::Max, 0, true, false),
            t(&[3], vec![i32::MIN, 5, 5])
        );
        assert_eq!(
            cum(&i, ReduceKind::Min, 0, true, false),
            t(&[3], vec![i32::MAX, 5, 3])
        );
        let f = t(&[2], vec![1.0f64, 2.0]);
        assert_eq!(
            cum(&f, ReduceKind::Max, 0, true, true),
            t(&[2], vec![2.0f64, f64::NEG_INFINITY])
        );
        let u = t(&[2], vec![4u8, 9]);
        assert_eq!(
            cum(&u, ReduceKind::Min, 0, true, false),
            t(&[2], vec![255u8, 4])
        );
    }

    #[test]
    fn cum_extremes_bool_and_axes() {
        let b = t(&[3], vec![false, true, false]);
        assert_eq!(
            cum(&b, ReduceKind::Max, 0, false, false),
            t(&[3], vec![false, true, true])
        );
        let b = t(&[3], vec![true, false, true]);
        assert_eq!(
            cum(&b, ReduceKind::Min, 0, false, false),
            t(&[3], vec![true, false, false])
        );
        let x = t(&[2, 2], vec![1i16, 5, 3, 2]);
        assert_eq!(
            cum(&x, ReduceKind::Max, 0, false, false),
            t(&[2, 2], vec![1i16, 5, 3, 5])
        );
        assert_eq!(
            cum(&x, ReduceKind::Min, 1, false, true),
            t(&[2, 2], vec![1i16, 5, 2, 2])
        );
    }

    #[test]
    fn cumulative_accumulates_floats_in_f64() {
        let x = t(&[3], vec![1e8f32, 1.0, -1e8]);
        assert_eq!(
            cum(&x, ReduceKind::Sum, 0, false, false),
            t(&[3], vec![1e8f32, 1e8, 1.0])
        );
        assert!(invalid_msg(cumulative(&x, ReduceKind::Sum, 1, false, false)).contains("axis 1"));
    }

    // --- sort ---------------------------------------------------------------------------

    fn sorted(x: &Tensor, axis: usize, descending: bool) -> (Tensor, Tensor) {
        sort(x, axis, descending).unwrap()
    }

    #[test]
    fn sort_is_stable_with_ties() {
        let x = t(&[5], vec![3i32, 1, 2, 1, 3]);
        assert_eq!(
            sorted(&x, 0, false),
            (
                t(&[5], vec![1i32, 1, 2, 3, 3]),
                t(&[5], vec![1i64, 3, 2, 0, 4])
            )
        );
        assert_eq!(
            sorted(&x, 0, true),
            (
                t(&[5], vec![3i32, 3, 2, 1, 1]),
                t(&[5], vec![0i64, 4, 2, 1, 3])
            )
        );
        // -0.0 and 0.0 are equal: they keep their order.
        let z = t(&[3], vec![0.0f64, -0.0, -1.0]);
        assert_eq!(
            sorted(&z, 0, false),
            (t(&[3], vec![-1.0f64, 0.0, -0.0]), t(&[3], vec![2i64, 0, 1]))
        );
    }

    #[test]
    fn sort_puts_nan_last_ascending_first_descending() {
        let x = t(&[5], vec![2.0f32, NAN, -1., NAN, 0.]);
        let (v, i) = sorted(&x, 0, false);
        assert_eq!(i, t(&[5], vec![2i64, 4, 0, 1, 3]));
        assert!(v.bit_eq(&t(&[5], vec![-1.0f32, 0., 2., NAN, NAN])));
        let (v, i) = sorted(&x, 0, true);
        assert_eq!(i, t(&[5], vec![1i64, 3, 0, 4, 2]));
        assert!(v.bit_eq(&t(&[5], vec![NAN, NAN, 2.0f32, 0., -1.])));
    }

    #[test]
    fn sort_along_axis0_and_empty() {
        let x = t(&[3, 2], vec![3u8, 1, 1, 2, 2, 0]);
        assert_eq!(
            sorted(&x, 0, false),
            (
                t(&[3, 2], vec![1u8, 0, 2, 1, 3, 2]),
                t(&[3, 2], vec![1i64, 2, 2, 0, 0, 1])
            )
        );
        let b = t(&[2, 2], vec![true, false, false, true]);
        assert_eq!(
            sorted(&b, 1, true),
            (
                t(&[2, 2], vec![true, false, true, false]),
                t(&[2, 2], vec![0i64, 1, 1, 0])
            )
        );
        let e = t(&[0, 3], Vec::<f32>::new());
        assert_eq!(
            sorted(&e, 1, false),
            (e.clone(), t(&[0, 3], Vec::<i64>::new()))
        );
        assert!(invalid_msg(sort(&e, 2, false)).contains("axis 2"));
    }

    // --- helpers ------------------------------------------------------------------------

    #[test]
    fn offsets_and_advance() {
        assert_eq!(
            offsets(&[2, 3], &[1, 10]).unwrap(),
            vec![0, 10, 20, 1, 11, 21]
        );
        assert_eq!(offsets(&[], &[]).unwrap(), vec![0]);
        assert!(offsets(&[4, 0], &[1, 1]).unwrap().is_empty());
        let mut idx = [1, 2];
        assert!(!advance(&mut idx, &[2, 3]));
        assert_eq!(idx, [0, 0]);
    }
}
