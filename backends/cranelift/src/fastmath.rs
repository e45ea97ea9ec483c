//! f32 `exp`, `erf` and `logistic` as straight-line arithmetic, on `f32` and on `f32x4`.
//!
//! The same algorithms, constants and operation order as the LLVM backend's `exp_f32` and
//! `erf_f32` (Cephes' `expf` polynomial after an exact `n ln2` reduction; a Maclaurin series
//! below 0.5 and Abramowitz and Stegun 7.1.26 above for `erf`), so that the two backends, and
//! the two tiers of `--backend auto`, compute the same values where the target has fused
//! multiply-add. One function emits both widths: a lane of the `f32x4` form is bitwise the
//! `f32` form of that lane, so a loop's vector body and its scalar remainder agree, and results
//! do not depend on how a loop is split. Errors against the interpreter's libm values: about
//! 1 ulp for `exp`, below 1.5e-7 absolute for `erf`.

use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};

use crate::codegen::FnGen;

impl FnGen<'_, '_> {
    /// `a * b + c`, one fused multiply-add where the target has it (else a multiply and an
    /// add), on `f32`, `f64` or `f32x4`.
    pub(crate) fn fmadd(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    fn ty_of(&self, x: Value) -> Type {
        self.b.func.dfg.value_type(x)
    }

    /// The f32 constant `v` in the shape of `ty` (`f32`, or splat over `f32x4`).
    fn fk(&mut self, ty: Type, v: f64) -> Value {
        let c = self.b.ins().f32const(v as f32);
        if ty == types::F32X4 {
            self.b.ins().splat(types::F32X4, c)
        } else {
            c
        }
    }

    /// The i32 constant `v` in the shape of the integer form of `ty`.
    fn ik(&mut self, ty: Type, v: i32) -> Value {
        let c = self.b.ins().iconst(types::I32, i64::from(v as u32));
        if ty == types::F32X4 {
            self.b.ins().splat(types::I32X4, c)
        } else {
            c
        }
    }

    /// `a` where `cond` holds, else `b`; `cond` is an `fcmp` result of the same shape.
    fn fsel(&mut self, cond: Value, a: Value, b: Value) -> Value {
        let ty = self.ty_of(a);
        if ty.is_vector() {
            // An `fcmp` of vectors gives all-ones or all-zero lanes: a bit mask.
            let mask = self.b.ins().bitcast(ty, MemFlagsData::new(), cond);
            self.b.ins().bitselect(mask, a, b)
        } else {
            self.b.ins().select(cond, a, b)
        }
    }

    /// `e^x` (see the module doc): `x = n ln2 + r` with `n = roundeven(x log2 e)` (ln2 split in
    /// two for an exact reduction), `e^r` by Cephes' `expf` polynomial on |r| <= ln2/2, times
    /// `2^n` built from exponent bits in two halves (so subnormal results are right). Beyond
    /// 88.72 the result is +inf, below -104 it is 0; NaN stays NaN.
    pub(crate) fn exp_f32(&mut self, x: Value) -> Value {
        let ty = self.ty_of(x);
        let ity = if ty == types::F32X4 {
            types::I32X4
        } else {
            types::I32
        };
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        let hi = self.fk(ty, 88.722_839);
        let over = self.b.ins().fcmp(FloatCC::GreaterThan, x, hi);
        let lo = self.fk(ty, -104.0);
        let under = self.b.ins().fcmp(FloatCC::LessThan, x, lo);
        // A finite, in-range argument for the arithmetic (NaN and the ends are selected below).
        let zero = self.fk(ty, 0.0);
        let xs = self.fsel(nan, zero, x);
        let xs = self.fsel(over, zero, xs);
        let xs = self.fsel(under, lo, xs);
        let log2e = self.fk(ty, std::f64::consts::LOG2_E);
        let t = self.b.ins().fmul(xs, log2e);
        let n = self.b.ins().nearest(t);
        let c1 = self.fk(ty, -0.693_359_375);
        let r = self.fmadd(n, c1, xs);
        let c2 = self.fk(ty, 2.121_944_4e-4);
        let r = self.fmadd(n, c2, r);
        let mut p = self.fk(ty, 1.987_569_15e-4);
        for coef in [
            1.398_199_950_7e-3,
            8.333_451_907_3e-3,
            4.166_579_589_4e-2,
            1.666_666_545_9e-1,
            5.000_000_120_1e-1,
        ] {
            let c = self.fk(ty, coef);
            p = self.fmadd(p, r, c);
        }
        let r2 = self.b.ins().fmul(r, r);
        let p = self.fmadd(p, r2, r);
        let one = self.fk(ty, 1.0);
        let p = self.b.ins().fadd(p, one);
        // 2^n = 2^(n/2) * 2^(n - n/2), each a normal number for n in [-151, 128].
        let ni = self.b.ins().fcvt_to_sint_sat(ity, n);
        let n1 = self.b.ins().sshr_imm_s(ni, 1);
        let n2 = self.b.ins().isub(ni, n1);
        let bias = self.ik(ty, 127);
        let mut y = p;
        for e in [n1, n2] {
            let biased = self.b.ins().iadd(e, bias);
            let bits = self.b.ins().ishl_imm_s(biased, 23);
            let pow2 = self.b.ins().bitcast(ty, MemFlagsData::new(), bits);
            y = self.b.ins().fmul(y, pow2);
        }
        let inf = self.fk(ty, f64::INFINITY);
        let y = self.fsel(over, inf, y);
        self.fsel(nan, x, y)
    }

    /// `erf(x)` (see the module doc): for |x| < 0.5 its Maclaurin series to x^11, else
    /// `1 - t (a1 + t (a2 + ...)) e^(-x^2)` with `t = 1 / (1 + p|x|)`, with the sign of x. NaN
    /// stays NaN.
    pub(crate) fn erf_f32(&mut self, x: Value) -> Value {
        let ty = self.ty_of(x);
        let ax = self.b.ins().fabs(x);
        let x2 = self.b.ins().fmul(x, x);
        // Series: 2/sqrt(pi) * x * (1 - x^2/3 + x^4/10 - x^6/42 + x^8/216 - x^10/1320).
        let mut s = self.fk(ty, -1.0 / 1320.0);
        for coef in [1.0 / 216.0, -1.0 / 42.0, 1.0 / 10.0, -1.0 / 3.0, 1.0] {
            let c = self.fk(ty, coef);
            s = self.fmadd(s, x2, c);
        }
        let small = self.b.ins().fmul(x, s);
        let k = self.fk(ty, std::f64::consts::FRAC_2_SQRT_PI);
        let small = self.b.ins().fmul(small, k);
        // Abramowitz and Stegun on |x|.
        let (p, one) = (self.fk(ty, 0.327_591_1), self.fk(ty, 1.0));
        let den = self.fmadd(ax, p, one);
        let t = self.b.ins().fdiv(one, den);
        let mut q = self.fk(ty, 1.061_405_429);
        for coef in [-1.453_152_027, 1.421_413_741, -0.284_496_736, 0.254_829_592] {
            let c = self.fk(ty, coef);
            q = self.fmadd(q, t, c);
        }
        let q = self.b.ins().fmul(q, t);
        let nx2 = self.b.ins().fneg(x2);
        let e = self.exp_f32(nx2);
        let tail = self.b.ins().fmul(q, e);
        let big = self.b.ins().fsub(one, tail);
        // The sign of x (here |x| >= 0.5, so x < 0 is its sign bit; `big` is positive).
        let zero = self.fk(ty, 0.0);
        let neg = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
        let nbig = self.b.ins().fneg(big);
        let big = self.fsel(neg, nbig, big);
        let half = self.fk(ty, 0.5);
        let is_small = self.b.ins().fcmp(FloatCC::LessThan, ax, half);
        let r = self.fsel(is_small, small, big);
        // NaN fails `|x| < 0.5` and would take the other branch: keep it.
        let nan = self.b.ins().fcmp(FloatCC::Unordered, x, x);
        self.fsel(nan, x, r)
    }

    /// `1 / (1 + e^-x)` in f32, with [`FnGen::exp_f32`].
    pub(crate) fn logistic_f32(&mut self, x: Value) -> Value {
        let ty = self.ty_of(x);
        let n = self.b.ins().fneg(x);
        let e = self.exp_f32(n);
        let one = self.fk(ty, 1.0);
        let den = self.b.ins().fadd(one, e);
        self.b.ins().fdiv(one, den)
    }
}
