//! The functions generated code calls: libm's f64 functions (the interpreter's transcendental
//! functions are Rust's `f64` methods, which call the same libm), and the integer power. Every symbol is registered with the JIT by address.

use cranelift_codegen::ir::{AbiParam, Signature, Type, types};
use cranelift_codegen::isa::CallConv;

#[link(name = "m")]
unsafe extern "C" {
    fn exp(x: f64) -> f64;
    fn log(x: f64) -> f64;
    fn sin(x: f64) -> f64;
    fn cos(x: f64) -> f64;
    fn tan(x: f64) -> f64;
    fn asin(x: f64) -> f64;
    fn acos(x: f64) -> f64;
    fn atan(x: f64) -> f64;
    fn sinh(x: f64) -> f64;
    fn cosh(x: f64) -> f64;
    fn tanh(x: f64) -> f64;
    fn asinh(x: f64) -> f64;
    fn acosh(x: f64) -> f64;
    fn atanh(x: f64) -> f64;
    fn erf(x: f64) -> f64;
    fn pow(x: f64, y: f64) -> f64;
    fn fmod(x: f64, y: f64) -> f64;
}

/// `x ** y` for integers widened to 64 bits: exact by squaring with wrapping (the low bits are
/// those of the narrow type's power); a negative exponent of a signed type gives `1 / x^-y`
/// truncated (nonzero only for x = ±1), as the interpreter.
extern "C" fn tf_ipow(x: i64, y: i64, signed: u32) -> i64 {
    if signed != 0 && y < 0 {
        return match x {
            1 => 1,
            -1 if y % 2 != 0 => -1,
            -1 => 1,
            _ => 0,
        };
    }
    let (mut base, mut e, mut acc) = (x, y as u64, 1i64);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    acc
}

/// A function generated code may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Helper {
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Pow,
    Fmod,
    IPow,
}

impl Helper {
    pub const ALL: [Helper; 18] = [
        Helper::Exp,
        Helper::Log,
        Helper::Sin,
        Helper::Cos,
        Helper::Tan,
        Helper::Asin,
        Helper::Acos,
        Helper::Atan,
        Helper::Sinh,
        Helper::Cosh,
        Helper::Tanh,
        Helper::Asinh,
        Helper::Acosh,
        Helper::Atanh,
        Helper::Erf,
        Helper::Pow,
        Helper::Fmod,
        Helper::IPow,
    ];

    /// Its symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Helper::Exp => "exp",
            Helper::Log => "log",
            Helper::Sin => "sin",
            Helper::Cos => "cos",
            Helper::Tan => "tan",
            Helper::Asin => "asin",
            Helper::Acos => "acos",
            Helper::Atan => "atan",
            Helper::Sinh => "sinh",
            Helper::Cosh => "cosh",
            Helper::Tanh => "tanh",
            Helper::Asinh => "asinh",
            Helper::Acosh => "acosh",
            Helper::Atanh => "atanh",
            Helper::Erf => "erf",
            Helper::Pow => "pow",
            Helper::Fmod => "fmod",
            Helper::IPow => "tf_ipow",
        }
    }

    /// Its address in this process.
    pub fn address(self) -> *const u8 {
        let f1 = |f: unsafe extern "C" fn(f64) -> f64| f as *const u8;
        let f2 = |f: unsafe extern "C" fn(f64, f64) -> f64| f as *const u8;
        match self {
            Helper::Exp => f1(exp),
            Helper::Log => f1(log),
            Helper::Sin => f1(sin),
            Helper::Cos => f1(cos),
            Helper::Tan => f1(tan),
            Helper::Asin => f1(asin),
            Helper::Acos => f1(acos),
            Helper::Atan => f1(atan),
            Helper::Sinh => f1(sinh),
            Helper::Cosh => f1(cosh),
            Helper::Tanh => f1(tanh),
            Helper::Asinh => f1(asinh),
            Helper::Acosh => f1(acosh),
            Helper::Atanh => f1(atanh),
            Helper::Erf => f1(erf),
            Helper::Pow => f2(pow),
            Helper::Fmod => f2(fmod),
            Helper::IPow => tf_ipow as *const u8,
        }
    }

    /// Its signature.
    pub fn signature(self, cc: CallConv) -> Signature {
        let (params, ret): (&[Type], Type) = match self {
            Helper::Pow | Helper::Fmod => (&[types::F64, types::F64], types::F64),
            Helper::IPow => (&[types::I64, types::I64, types::I32], types::I64),
            _ => (&[types::F64], types::F64),
        };
        let mut sig = Signature::new(cc);
        sig.params.extend(params.iter().map(|&t| AbiParam::new(t)));
        sig.returns.push(AbiParam::new(ret));
        sig
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_powers_wrap_and_follow_the_interpreter_on_negative_exponents() {
        assert_eq!(tf_ipow(3, 4, 1), 81);
        assert_eq!(tf_ipow(2, 64, 1), 0);
        assert_eq!(tf_ipow(-1, -3, 1), -1);
        assert_eq!(tf_ipow(-1, -4, 1), 1);
        assert_eq!(tf_ipow(1, -4, 1), 1);
        assert_eq!(tf_ipow(5, -1, 1), 0);
        // Unsigned: the exponent's bits are a large positive number.
        assert_eq!(tf_ipow(1, -1, 0), 1);
        assert_eq!(tf_ipow(3, 0, 0), 1);
    }
}
