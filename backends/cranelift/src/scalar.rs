//! Scalar semantics in Cranelift IR, mirroring the LLVM backend's `codegen/scalar.rs` and the
//! graph interpreter (`terafab_ir::interp`):
//!
//! - f32 and f64 compute natively (`+ - * /`, `sqrt` are correctly rounded, as in the
//!   interpreter). Transcendental functions, `pow` and float `rem` call libm's f64 functions
//!   (registered with the JIT, see [`crate::libm`]) on the value widened to f64 and round the
//!   result to the type, as the interpreter does (so those results are the interpreter's, bit
//!   for bit, where libm is the same). The exceptions are `exp`, `erf` and `logistic` in f32
//!   registers (f32, f16, bf16): straight-line f32 arithmetic ([`crate::fastmath`], the LLVM
//!   backend's algorithms), about 1 ulp from the interpreter, so that loops over them run four
//!   lanes at a time (softmax, GELU).
//! - f16 and bf16 live in registers as f32 and are rounded back to their type after every op;
//!   in memory they are 16-bit integers, converted inline with integer arithmetic (the
//!   roundings of `half`).
//! - Integers wrap; division and remainder by zero give 0 and `MIN / -1` wraps; shifts by a
//!   count outside `0..bits` give 0 (or -1 for an arithmetic right shift of a negative value).
//! - Float to integer truncates and saturates, NaN gives 0.
//! - bool is `i8` (0 or 1) in registers and in memory.
//! - The float8 types are not computed with: such kernels run through the runtime's call.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};
use terafab_ir::{BinaryOp, CompareOp, DType, ReduceKind, Tensor, UnaryOp};

use crate::CodegenError;
use crate::codegen::{FnGen, R};
use crate::libm::Helper;

/// Whether the backend computes with `d`.
pub fn supported(d: DType) -> bool {
    !d.is_float8()
}

/// The register type of `d` (f16 and bf16 compute as f32, bool is `i8`).
pub fn reg_type(d: DType) -> R<Type> {
    Ok(match d {
        DType::F64 => types::F64,
        DType::F32 | DType::F16 | DType::BF16 => types::F32,
        DType::I8 | DType::U8 | DType::Bool => types::I8,
        DType::I16 | DType::U16 => types::I16,
        DType::I32 | DType::U32 => types::I32,
        DType::I64 | DType::U64 => types::I64,
        d => return Err(CodegenError::Unsupported(d)),
    })
}

/// The memory type of `d`.
pub fn mem_type(d: DType) -> R<Type> {
    Ok(match d {
        DType::F16 | DType::BF16 => types::I16,
        d => reg_type(d)?,
    })
}

/// `v` as the immediate of an integer constant of type `ty` (its low bits, zero-extended, as
/// Cranelift wants for narrow types).
pub fn imm(ty: Type, v: i64) -> i64 {
    if ty.bits() >= 64 {
        v
    } else {
        v & ((1i64 << ty.bits()) - 1)
    }
}

fn invalid(op: impl std::fmt::Debug, d: DType) -> CodegenError {
    CodegenError::Invalid(format!("{op:?} on {d}"))
}

impl FnGen<'_, '_> {
    fn flags() -> MemFlagsData {
        MemFlagsData::new().with_notrap()
    }

    /// `mem[addr]` of type `d`, in register form.
    pub fn load_scalar(&mut self, addr: Value, d: DType) -> R<Value> {
        let mt = mem_type(d)?;
        let raw = self.b.ins().load(mt, Self::flags(), addr, 0);
        Ok(match d {
            DType::F16 => self.f16_to_f32(raw),
            DType::BF16 => self.bf16_to_f32(raw),
            DType::Bool => self.b.ins().icmp_imm_s(IntCC::NotEqual, raw, 0),
            _ => raw,
        })
    }

    /// `mem[addr] = x` (x in register form of `d`).
    pub fn store_scalar(&mut self, addr: Value, x: Value, d: DType) -> R<()> {
        let m = match d {
            DType::F16 => self.f16_bits(x),
            DType::BF16 => self.bf16_bits(x),
            _ => x,
        };
        self.b.ins().store(Self::flags(), m, addr, 0);
        Ok(())
    }

    fn i32c(&mut self, v: u32) -> Value {
        self.b.ins().iconst(types::I32, v as i64)
    }

    /// The f32 of f16 bits (`i16`), exactly, without branches (after F. Giesen's
    /// `half_to_float`): the bits moved into place and the exponent rebiased; subnormals through
    /// one exact f32 subtraction; infinities and NaNs (made quiet, payload kept, as
    /// `half::f16::to_f32`) rebiased once more.
    fn f16_to_f32(&mut self, bits16: Value) -> Value {
        let h = self.b.ins().uextend(types::I32, bits16);
        let mag = self.b.ins().band_imm_s(h, 0x7fff);
        let o = self.b.ins().ishl_imm_s(mag, 13);
        let exp = self.b.ins().band_imm_s(o, 0x0f80_0000);
        let o = self.b.ins().iadd_imm_s(o, 0x3800_0000);
        // Infinity and NaN: the exponent all ones.
        let is_special = self.b.ins().icmp_imm_s(IntCC::Equal, exp, 0x0f80_0000);
        let special = self.b.ins().iadd_imm_s(o, 0x3800_0000);
        let is_nan = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThan, mag, 0x7c00);
        let quiet = self.b.ins().bor_imm_s(special, 0x0040_0000);
        let special = self.b.ins().select(is_nan, quiet, special);
        // Zero and subnormals: 2^-14 * (1 + m / 1024) - 2^-14, exact.
        let is_sub = self.b.ins().icmp_imm_s(IntCC::Equal, exp, 0);
        let biased = self.b.ins().iadd_imm_s(o, 0x0080_0000);
        let f = self
            .b
            .ins()
            .bitcast(types::F32, MemFlagsData::new(), biased);
        let magic = self.b.ins().f32const(f32::from_bits(0x3880_0000));
        let sub = self.b.ins().fsub(f, magic);
        let sub = self.b.ins().bitcast(types::I32, MemFlagsData::new(), sub);
        let r = self.b.ins().select(is_sub, sub, o);
        let r = self.b.ins().select(is_special, special, r);
        let sign = self.b.ins().band_imm_s(h, 0x8000);
        let sign = self.b.ins().ishl_imm_s(sign, 16);
        let r = self.b.ins().bor(r, sign);
        self.b.ins().bitcast(types::F32, MemFlagsData::new(), r)
    }

    /// The f16 bits (`i16`) of an f32, rounded to nearest even, without branches (after F.
    /// Giesen's `float_to_half_fast3_rtne`): normal results by integer rounding of the bits,
    /// subnormal ones by one f32 addition that rounds them in place, overflow to infinity, NaN
    /// quiet with its payload's top bits, as `half::f16::from_f32`.
    fn f16_bits(&mut self, x: Value) -> Value {
        let bits = self.b.ins().bitcast(types::I32, MemFlagsData::new(), x);
        let sign_mask = self.i32c(0x8000_0000);
        let sign = self.b.ins().band(bits, sign_mask);
        let a = self.b.ins().bxor(bits, sign);
        // |x| >= 65536: infinity, or NaN (0x7e00 | the payload's top bits).
        let big = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, a, 0x4780_0000);
        let is_nan = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThan, a, 0x7f80_0000);
        let man = self.b.ins().band_imm_s(a, 0x007f_ffff);
        let man = self.b.ins().ushr_imm_s(man, 13);
        let nan = self.b.ins().bor_imm_s(man, 0x7e00);
        let inf = self.i32c(0x7c00);
        let big_r = self.b.ins().select(is_nan, nan, inf);
        // |x| < 2^-14: the f32 sum |x| + 0.5 rounds the subnormal's bits into its mantissa.
        let small = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThan, a, 0x3880_0000);
        let af = self.b.ins().bitcast(types::F32, MemFlagsData::new(), a);
        let half_f = self.b.ins().f32const(0.5);
        let sum = self.b.ins().fadd(af, half_f);
        let sum = self.b.ins().bitcast(types::I32, MemFlagsData::new(), sum);
        let small_r = self.b.ins().iadd_imm_s(sum, -0x3f00_0000);
        // Normal: rebias the exponent, add half an ulp minus one plus the kept bit's parity.
        let odd = self.b.ins().ushr_imm_s(a, 13);
        let odd = self.b.ins().band_imm_s(odd, 1);
        let n = self.b.ins().iadd_imm_s(a, 0xc800_0fffu32 as i32 as i64);
        let n = self.b.ins().iadd(n, odd);
        let normal_r = self.b.ins().ushr_imm_s(n, 13);
        let r = self.b.ins().select(small, small_r, normal_r);
        let r = self.b.ins().select(big, big_r, r);
        let sign16 = self.b.ins().ushr_imm_s(sign, 16);
        let r = self.b.ins().bor(r, sign16);
        self.b.ins().ireduce(types::I16, r)
    }

    fn bf16_to_f32(&mut self, bits16: Value) -> Value {
        let w = self.b.ins().uextend(types::I32, bits16);
        let w = self.b.ins().ishl_imm_s(w, 16);
        self.b.ins().bitcast(types::F32, MemFlagsData::new(), w)
    }

    /// The bf16 bits (`i16`) of an f32, rounded to nearest even (NaN stays NaN, made quiet), as
    /// `half::bf16::from_f32`.
    fn bf16_bits(&mut self, x: Value) -> Value {
        let b = &mut self.b;
        let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), x);
        let hi = b.ins().ushr_imm_s(bits, 16);
        let lsb = b.ins().band_imm_s(hi, 1);
        let bias = b.ins().iadd_imm_s(lsb, 0x7fff);
        let rounded = b.ins().iadd(bits, bias);
        let rounded = b.ins().ushr_imm_s(rounded, 16);
        let quiet = b.ins().bor_imm_s(hi, 0x40);
        let nan = b.ins().fcmp(FloatCC::Unordered, x, x);
        let out = b.ins().select(nan, quiet, rounded);
        b.ins().ireduce(types::I16, out)
    }

    /// A value of a narrow float type (in its f32 register form) rounded to that type.
    pub fn round_narrow(&mut self, v: Value, d: DType) -> R<Value> {
        Ok(match d {
            DType::F16 => {
                let h = self.f16_bits(v);
                self.f16_to_f32(h)
            }
            DType::BF16 => {
                let bits = self.bf16_bits(v);
                self.bf16_to_f32(bits)
            }
            _ => v,
        })
    }

    /// A rank-0 constant in register form.
    pub fn constant(&mut self, t: &Tensor) -> R<Value> {
        let d = t.dtype();
        let ty = reg_type(d)?;
        Ok(if d.is_float() {
            let v = t.to_f64_vec()[0];
            if ty == types::F64 {
                self.b.ins().f64const(v)
            } else {
                self.b.ins().f32const(v as f32)
            }
        } else if d == DType::U64 {
            let v = t.as_slice::<u64>().map(|s| s[0]).unwrap_or(0);
            self.b.ins().iconst(ty, v as i64)
        } else {
            let v = t.to_i64_vec().map(|v| v[0]).unwrap_or(0);
            self.b.ins().iconst(ty, imm(ty, v))
        })
    }

    fn fconst(&mut self, ty: Type, v: f64) -> Value {
        if ty == types::F64 {
            self.b.ins().f64const(v)
        } else {
            self.b.ins().f32const(v as f32)
        }
    }

    /// An f64 result of the interpreter's f64 computation, rounded to the float type `d`.
    fn round_f64_to(&mut self, r: Value, d: DType) -> R<Value> {
        self.convert(r, DType::F64, d)
    }

    /// The register value `x` of float type `d` widened to f64.
    fn widen_to_f64(&mut self, x: Value, d: DType) -> Value {
        if d == DType::F64 {
            x
        } else {
            self.b.ins().fpromote(types::F64, x)
        }
    }

    /// `op(x)` on a value of type `d`.
    pub fn unary(&mut self, op: UnaryOp, x: Value, d: DType) -> R<Value> {
        if d.is_float() {
            let ty = reg_type(d)?;
            // f32 registers (f32, and f16/bf16 before their rounding): exp, erf and logistic
            // as straight-line arithmetic, as the LLVM backend (see `crate::fastmath`).
            if ty == types::F32 {
                let r = match op {
                    UnaryOp::Exp => Some(self.exp_f32(x)),
                    UnaryOp::Erf => Some(self.erf_f32(x)),
                    UnaryOp::Logistic => Some(self.logistic_f32(x)),
                    _ => None,
                };
                if let Some(r) = r {
                    return self.round_narrow(r, d);
                }
            }
            let libm = |h: Helper| Some(h);
            let call = match op {
                UnaryOp::Exp => libm(Helper::Exp),
                UnaryOp::Log => libm(Helper::Log),
                UnaryOp::Sin => libm(Helper::Sin),
                UnaryOp::Cos => libm(Helper::Cos),
                UnaryOp::Tan => libm(Helper::Tan),
                UnaryOp::Asin => libm(Helper::Asin),
                UnaryOp::Acos => libm(Helper::Acos),
                UnaryOp::Atan => libm(Helper::Atan),
                UnaryOp::Sinh => libm(Helper::Sinh),
                UnaryOp::Cosh => libm(Helper::Cosh),
                UnaryOp::Tanh => libm(Helper::Tanh),
                UnaryOp::Asinh => libm(Helper::Asinh),
                UnaryOp::Acosh => libm(Helper::Acosh),
                UnaryOp::Atanh => libm(Helper::Atanh),
                UnaryOp::Erf => libm(Helper::Erf),
                _ => None,
            };
            if let Some(h) = call {
                let w = self.widen_to_f64(x, d);
                let r = self.helper(h, &[w])?;
                return self.round_f64_to(r, d);
            }
            let r = match op {
                UnaryOp::Neg => self.b.ins().fneg(x),
                UnaryOp::Abs => self.b.ins().fabs(x),
                UnaryOp::Sign => {
                    let zero = self.fconst(ty, 0.0);
                    let one = self.fconst(ty, 1.0);
                    let m1 = self.fconst(ty, -1.0);
                    let gt = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                    let lt = self.b.ins().fcmp(FloatCC::LessThan, x, zero);
                    let m = self.b.ins().select(lt, m1, x);
                    self.b.ins().select(gt, one, m)
                }
                UnaryOp::Sqrt => self.b.ins().sqrt(x),
                UnaryOp::Rsqrt => {
                    let s = self.b.ins().sqrt(x);
                    let one = self.fconst(ty, 1.0);
                    self.b.ins().fdiv(one, s)
                }
                UnaryOp::Logistic => {
                    // 1 / (1 + e^-x) in f64, as the interpreter.
                    let w = self.widen_to_f64(x, d);
                    let n = self.b.ins().fneg(w);
                    let e = self.helper(Helper::Exp, &[n])?;
                    let one = self.b.ins().f64const(1.0);
                    let den = self.b.ins().fadd(one, e);
                    let r = self.b.ins().fdiv(one, den);
                    return self.round_f64_to(r, d);
                }
                UnaryOp::Floor => self.b.ins().floor(x),
                UnaryOp::Ceil => self.b.ins().ceil(x),
                UnaryOp::Round => self.b.ins().nearest(x),
                UnaryOp::IsNan => return Ok(self.b.ins().fcmp(FloatCC::Unordered, x, x)),
                UnaryOp::IsInf => {
                    let a = self.b.ins().fabs(x);
                    let inf = self.fconst(ty, f64::INFINITY);
                    return Ok(self.b.ins().fcmp(FloatCC::Equal, a, inf));
                }
                _ => return Err(invalid(op, d)),
            };
            return self.round_narrow(r, d);
        }
        if matches!(op, UnaryOp::IsNan | UnaryOp::IsInf) {
            return Ok(self.b.ins().iconst(types::I8, 0));
        }
        if d == DType::Bool {
            return match op {
                UnaryOp::Not => Ok(self.b.ins().bxor_imm_s(x, 1)),
                _ => Err(invalid(op, d)),
            };
        }
        let ty = reg_type(d)?;
        let signed = d.is_signed_int();
        Ok(match op {
            UnaryOp::Neg => self.b.ins().ineg(x),
            UnaryOp::Abs if signed => {
                let neg = self.b.ins().ineg(x);
                let lt = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
                self.b.ins().select(lt, neg, x)
            }
            UnaryOp::Abs => x,
            UnaryOp::Sign if signed => {
                let gt = self.b.ins().icmp_imm_s(IntCC::SignedGreaterThan, x, 0);
                let lt = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, x, 0);
                let gt = self.widen_bool(gt, ty);
                let lt = self.widen_bool(lt, ty);
                self.b.ins().isub(gt, lt)
            }
            UnaryOp::Sign => {
                let ne = self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0);
                self.widen_bool(ne, ty)
            }
            UnaryOp::Not => self.b.ins().bnot(x),
            _ => return Err(invalid(op, d)),
        })
    }

    /// A bool (`i8` 0/1) as an integer of type `ty`.
    fn widen_bool(&mut self, b: Value, ty: Type) -> Value {
        if ty == types::I8 {
            b
        } else {
            self.b.ins().uextend(ty, b)
        }
    }

    /// `op(x, y)` on values of type `d`.
    pub fn binary(&mut self, op: BinaryOp, x: Value, y: Value, d: DType) -> R<Value> {
        if d.is_float() {
            let r = match op {
                BinaryOp::Add => self.b.ins().fadd(x, y),
                BinaryOp::Sub => self.b.ins().fsub(x, y),
                BinaryOp::Mul => self.b.ins().fmul(x, y),
                BinaryOp::Div => self.b.ins().fdiv(x, y),
                BinaryOp::Max => self.b.ins().fmax(x, y),
                BinaryOp::Min => self.b.ins().fmin(x, y),
                BinaryOp::Rem | BinaryOp::Pow => {
                    let h = if op == BinaryOp::Rem {
                        Helper::Fmod
                    } else {
                        Helper::Pow
                    };
                    let (a, c) = (self.widen_to_f64(x, d), self.widen_to_f64(y, d));
                    let r = self.helper(h, &[a, c])?;
                    return self.round_f64_to(r, d);
                }
                _ => return Err(invalid(op, d)),
            };
            return self.round_narrow(r, d);
        }
        let b = &mut self.b;
        if d == DType::Bool {
            return Ok(match op {
                BinaryOp::Max | BinaryOp::Or => b.ins().bor(x, y),
                BinaryOp::Min | BinaryOp::And => b.ins().band(x, y),
                BinaryOp::Xor => b.ins().bxor(x, y),
                _ => return Err(invalid(op, d)),
            });
        }
        let signed = d.is_signed_int();
        let ty = reg_type(d)?;
        let bits = ty.bits() as i64;
        let cc = |s: IntCC, u: IntCC| if signed { s } else { u };
        Ok(match op {
            BinaryOp::Add => b.ins().iadd(x, y),
            BinaryOp::Sub => b.ins().isub(x, y),
            BinaryOp::Mul => b.ins().imul(x, y),
            BinaryOp::Div | BinaryOp::Rem => {
                let is_div = op == BinaryOp::Div;
                let zero = b.ins().iconst(ty, 0);
                let one = b.ins().iconst(ty, 1);
                let y0 = b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                let r = if signed {
                    // `MIN / -1` overflows (and traps): y == -1 gives -x (wrapping), remainder 0.
                    let all_ones = b.ins().iconst(ty, imm(ty, -1));
                    let m1 = b.ins().icmp(IntCC::Equal, y, all_ones);
                    let bad = b.ins().bor(y0, m1);
                    let safe = b.ins().select(bad, one, y);
                    let q = if is_div {
                        b.ins().sdiv(x, safe)
                    } else {
                        b.ins().srem(x, safe)
                    };
                    let special = if is_div { b.ins().ineg(x) } else { zero };
                    b.ins().select(m1, special, q)
                } else {
                    let safe = b.ins().select(y0, one, y);
                    if is_div {
                        b.ins().udiv(x, safe)
                    } else {
                        b.ins().urem(x, safe)
                    }
                };
                b.ins().select(y0, zero, r)
            }
            BinaryOp::Pow => {
                let (x64, y64) = if ty == types::I64 {
                    (x, y)
                } else if signed {
                    (
                        b.ins().sextend(types::I64, x),
                        b.ins().sextend(types::I64, y),
                    )
                } else {
                    (
                        b.ins().uextend(types::I64, x),
                        b.ins().uextend(types::I64, y),
                    )
                };
                let s = b.ins().iconst(types::I32, signed as i64);
                let r = self.helper(Helper::IPow, &[x64, y64, s])?;
                if ty == types::I64 {
                    r
                } else {
                    self.b.ins().ireduce(ty, r)
                }
            }
            BinaryOp::Max => {
                let ge = b.ins().icmp(
                    cc(
                        IntCC::SignedGreaterThanOrEqual,
                        IntCC::UnsignedGreaterThanOrEqual,
                    ),
                    x,
                    y,
                );
                b.ins().select(ge, x, y)
            }
            BinaryOp::Min => {
                let le = b.ins().icmp(
                    cc(IntCC::SignedLessThanOrEqual, IntCC::UnsignedLessThanOrEqual),
                    x,
                    y,
                );
                b.ins().select(le, x, y)
            }
            BinaryOp::And => b.ins().band(x, y),
            BinaryOp::Or => b.ins().bor(x, y),
            BinaryOp::Xor => b.ins().bxor(x, y),
            BinaryOp::ShiftLeft | BinaryOp::ShiftRight => {
                // In range when 0 <= y < bits (y read as signed for signed types); Cranelift
                // takes the count modulo the width, so the count is made safe first.
                let zero = b.ins().iconst(ty, 0);
                let ok = b.ins().icmp_imm_s(IntCC::UnsignedLessThan, y, bits);
                let safe = b.ins().select(ok, y, zero);
                let (shifted, outside) = if op == BinaryOp::ShiftLeft {
                    (b.ins().ishl(x, safe), zero)
                } else if signed {
                    let s = b.ins().sshr(x, safe);
                    (s, b.ins().sshr_imm_s(x, bits - 1))
                } else {
                    (b.ins().ushr(x, safe), zero)
                };
                b.ins().select(ok, shifted, outside)
            }
        })
    }

    /// `op(x, y)` on values of type `d`, a bool.
    pub fn compare(&mut self, op: CompareOp, x: Value, y: Value, d: DType) -> R<Value> {
        if d.is_float() {
            let cc = match op {
                CompareOp::Eq => FloatCC::Equal,
                CompareOp::Ne => FloatCC::NotEqual,
                CompareOp::Lt => FloatCC::LessThan,
                CompareOp::Le => FloatCC::LessThanOrEqual,
                CompareOp::Gt => FloatCC::GreaterThan,
                CompareOp::Ge => FloatCC::GreaterThanOrEqual,
            };
            return Ok(self.b.ins().fcmp(cc, x, y));
        }
        let signed = d.is_signed_int();
        let cc = match (op, signed) {
            (CompareOp::Eq, _) => IntCC::Equal,
            (CompareOp::Ne, _) => IntCC::NotEqual,
            (CompareOp::Lt, true) => IntCC::SignedLessThan,
            (CompareOp::Le, true) => IntCC::SignedLessThanOrEqual,
            (CompareOp::Gt, true) => IntCC::SignedGreaterThan,
            (CompareOp::Ge, true) => IntCC::SignedGreaterThanOrEqual,
            (CompareOp::Lt, false) => IntCC::UnsignedLessThan,
            (CompareOp::Le, false) => IntCC::UnsignedLessThanOrEqual,
            (CompareOp::Gt, false) => IntCC::UnsignedGreaterThan,
            (CompareOp::Ge, false) => IntCC::UnsignedGreaterThanOrEqual,
        };
        Ok(self.b.ins().icmp(cc, x, y))
    }

    /// `convert(x)` from `from` to `to`, with the interpreter's rules.
    pub fn convert(&mut self, x: Value, from: DType, to: DType) -> R<Value> {
        if from == to {
            return Ok(x);
        }
        let to_ty = reg_type(to)?;
        if from.is_float() {
            if to.is_float() {
                return match (from, to) {
                    (DType::F64, DType::F32) => Ok(self.b.ins().fdemote(types::F32, x)),
                    (DType::F64, _) => {
                        let odd = self.round_to_odd_f32(x);
                        self.round_narrow(odd, to)
                    }
                    (_, DType::F64) => Ok(self.b.ins().fpromote(types::F64, x)),
                    // Between f32, f16 and bf16 (all f32 in registers).
                    _ => self.round_narrow(x, to),
                };
            }
            if to == DType::Bool {
                let zero = self.fconst(reg_type(from)?, 0.0);
                return Ok(self.b.ins().fcmp(FloatCC::NotEqual, x, zero));
            }
            // Truncate and saturate in 64 bits (NaN gives 0), then clamp to the type's range.
            let signed = to.is_signed_int();
            let w = if signed {
                self.b.ins().fcvt_to_sint_sat(types::I64, x)
            } else {
                self.b.ins().fcvt_to_uint_sat(types::I64, x)
            };
            if to_ty == types::I64 {
                return Ok(w);
            }
            let bits = to_ty.bits();
            let w = if signed {
                let (lo, hi) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
                let lo_v = self.b.ins().iconst(types::I64, lo);
                let hi_v = self.b.ins().iconst(types::I64, hi);
                let below = self.b.ins().icmp(IntCC::SignedLessThan, w, lo_v);
                let w = self.b.ins().select(below, lo_v, w);
                let above = self.b.ins().icmp(IntCC::SignedGreaterThan, w, hi_v);
                self.b.ins().select(above, hi_v, w)
            } else {
                let hi_v = self.b.ins().iconst(types::I64, (1i64 << bits) - 1);
                let above = self.b.ins().icmp(IntCC::UnsignedGreaterThan, w, hi_v);
                self.b.ins().select(above, hi_v, w)
            };
            return Ok(self.b.ins().ireduce(to_ty, w));
        }
        let from_ty = reg_type(from)?;
        let signed = from.is_signed_int();
        if to.is_float() {
            let w = if from_ty == types::I64 {
                x
            } else if signed {
                self.b.ins().sextend(types::I64, x)
            } else {
                self.b.ins().uextend(types::I64, x)
            };
            let fty = if to == DType::F32 {
                types::F32
            } else {
                types::F64
            };
            let f = if signed {
                self.b.ins().fcvt_from_sint(fty, w)
            } else {
                self.b.ins().fcvt_from_uint(fty, w)
            };
            return match to {
                DType::F32 | DType::F64 => Ok(f),
                // Through f64 (exact up to 2^53), then rounded to odd in f32 and to the narrow
                // type, as the interpreter.
                _ => {
                    let odd = self.round_to_odd_f32(f);
                    self.round_narrow(odd, to)
                }
            };
        }
        if to == DType::Bool {
            return Ok(self.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0));
        }
        let (fw, tw) = (from_ty.bits(), to_ty.bits());
        Ok(if tw < fw {
            self.b.ins().ireduce(to_ty, x)
        } else if tw == fw {
            x
        } else if signed {
            self.b.ins().sextend(to_ty, x)
        } else {
            self.b.ins().uextend(to_ty, x)
        })
    }

    /// An f64 rounded to f32 with round-to-odd (the nearest-even f32 moved one ulp toward `x`
    /// when it is inexact and even), so that rounding once more to f16 or bf16 is correct.
    fn round_to_odd_f32(&mut self, x: Value) -> Value {
        let b = &mut self.b;
        let t = b.ins().fdemote(types::F32, x);
        let back = b.ins().fpromote(types::F64, t);
        let exact = b.ins().fcmp(FloatCC::UnorderedOrEqual, back, x);
        let bits = b.ins().bitcast(types::I32, MemFlagsData::new(), t);
        let lsb = b.ins().band_imm_s(bits, 1);
        let odd = b.ins().icmp_imm_s(IntCC::NotEqual, lsb, 0);
        let keep = b.ins().bor(exact, odd);
        let ax = b.ins().fabs(x);
        let ab = b.ins().fabs(back);
        let above = b.ins().fcmp(FloatCC::GreaterThan, ab, ax);
        let one = b.ins().iconst(types::I32, 1);
        let down = b.ins().isub(bits, one);
        let up = b.ins().iadd(bits, one);
        let moved = b.ins().select(above, down, up);
        let out = b.ins().select(keep, bits, moved);
        b.ins().bitcast(types::F32, MemFlagsData::new(), out)
    }

    /// The identity of a reduction in `d`'s register type.
    pub fn identity(&mut self, kind: ReduceKind, d: DType) -> R<Value> {
        use ReduceKind::*;
        let ty = reg_type(d)?;
        if d.is_float() {
            let v = match kind {
                Sum => 0.0,
                Prod => 1.0,
                Max => f64::NEG_INFINITY,
                Min => f64::INFINITY,
            };
            return Ok(self.fconst(ty, v));
        }
        if d == DType::Bool {
            return Ok(self.b.ins().iconst(ty, matches!(kind, Prod | Min) as i64));
        }
        let w = ty.bits();
        let v: i64 = match (kind, d.is_signed_int()) {
            (Sum, _) => 0,
            (Prod, _) => 1,
            (Max, true) => i64::MIN >> (64 - w),
            (Max, false) => 0,
            (Min, true) => i64::MAX >> (64 - w),
            (Min, false) => -1,
        };
        Ok(self.b.ins().iconst(ty, imm(ty, v)))
    }

    /// One step of a reduction: `acc (kind) x`, in the accumulator's register type (float sums
    /// in order, one rounding per step).
    pub fn combine(&mut self, kind: ReduceKind, acc: Value, x: Value, d: DType) -> R<Value> {
        use ReduceKind::*;
        if d.is_float() {
            return Ok(match kind {
                Sum => self.b.ins().fadd(acc, x),
                Prod => self.b.ins().fmul(acc, x),
                Max => self.b.ins().fmax(acc, x),
                Min => self.b.ins().fmin(acc, x),
            });
        }
        let op = match kind {
            Sum if d == DType::Bool => BinaryOp::Or,
            Prod if d == DType::Bool => BinaryOp::And,
            Sum => BinaryOp::Add,
            Prod => BinaryOp::Mul,
            Max => BinaryOp::Max,
            Min => BinaryOp::Min,
        };
        self.binary(op, acc, x, d)
    }
}
