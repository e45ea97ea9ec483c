//! Scalar semantics in LLVM IR: the element types' register and memory forms, and every unary,
//! binary, compare, select and convert op of the kernel IR, with the graph interpreter's
//! semantics (`terafab_ir::interp`):
//!
//! - f32 and f64 compute natively (`+ - * /`, `sqrt`, `rem` are correctly rounded, as in the
//!   interpreter; transcendental functions come from libm and may differ by an ulp or so).
//! - f16 and bf16 live in registers as f32 and are rounded back to their type after every op
//!   (f32 has more than twice their precision plus two bits, so the double rounding of
//!   `+ - * / sqrt` is innocuous, as the interpreter's reasoning for f64 is); in memory they are
//!   `half` and `i16`.
//! - Integers wrap; division and remainder by zero give 0 and `MIN / -1` wraps; shifts by a
//!   count outside `0..bits` give 0 (or -1 for an arithmetic right shift of a negative value).
//! - Float to integer truncates and saturates, NaN gives 0 (`llvm.fpto*i.sat`).
//! - bool is `i1` in registers and one byte (0 or 1) in memory.
//! - The float8 types are not supported: [`Unsupported`] names them, and the runtime runs such
//!   kernels through the kernel interpreter instead.

use inkwell::builder::Builder;
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::{Linkage, Module};
use inkwell::types::{BasicType, BasicTypeEnum};
use inkwell::values::{BasicValueEnum, FloatValue, IntValue};
use inkwell::{FloatPredicate, IntPredicate};
use terafab_ir::{BinaryOp, CompareOp, DType, Tensor, UnaryOp};

use super::CodegenError;

/// A dtype the backend cannot compute with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the LLVM backend does not compute with {0}")]
pub struct Unsupported(pub DType);

/// Whether the backend computes with `d`.
pub fn supported(d: DType) -> bool {
    !d.is_float8()
}

/// Emits scalar code at the builder's position.
pub struct Scalar<'a, 'ctx> {
    pub ctx: &'ctx Context,
    pub module: &'a Module<'ctx>,
    pub b: &'a Builder<'ctx>,
    /// Code for an NVPTX GPU: no libm there, so the functions that would call it (and the
    /// LLVM intrinsics that lower to its calls) are [`CodegenError::NoGpuLowering`] errors.
    pub nvptx: bool,
}

type R<T> = Result<T, CodegenError>;

impl<'ctx> Scalar<'_, 'ctx> {
    /// The register type of `d` (f16 and bf16 compute as f32, bool is `i1`).
    pub fn reg_type(&self, d: DType) -> R<BasicTypeEnum<'ctx>> {
        let c = self.ctx;
        Ok(match d {
            DType::F64 => c.f64_type().into(),
            DType::F32 | DType::F16 | DType::BF16 => c.f32_type().into(),
            DType::I8 | DType::U8 => c.i8_type().into(),
            DType::I16 | DType::U16 => c.i16_type().into(),
            DType::I32 | DType::U32 => c.i32_type().into(),
            DType::I64 | DType::U64 => c.i64_type().into(),
            DType::Bool => c.bool_type().into(),
            d => return Err(Unsupported(d).into()),
        })
    }

    /// The memory type of `d`.
    pub fn mem_type(&self, d: DType) -> R<BasicTypeEnum<'ctx>> {
        Ok(match d {
            DType::F16 => self.ctx.f16_type().into(),
            DType::BF16 => self.ctx.i16_type().into(),
            DType::Bool => self.ctx.i8_type().into(),
            d => self.reg_type(d)?,
        })
    }

    /// A value loaded from memory, in register form.
    pub fn mem_to_reg(&self, v: BasicValueEnum<'ctx>, d: DType) -> R<BasicValueEnum<'ctx>> {
        let (b, c) = (self.b, self.ctx);
        Ok(match d {
            DType::F16 => b
                .build_float_ext(v.into_float_value(), c.f32_type(), "h2f")?
                .into(),
            DType::BF16 => {
                let w = b.build_int_z_extend(v.into_int_value(), c.i32_type(), "bf")?;
                let w = b.build_left_shift(w, c.i32_type().const_int(16, false), "bf")?;
                b.build_bit_cast(w, c.f32_type(), "bf2f")?
            }
            DType::Bool => b
                .build_int_compare(
                    IntPredicate::NE,
                    v.into_int_value(),
                    c.i8_type().const_zero(),
                    "b",
                )?
                .into(),
            _ => v,
        })
    }

    /// A register value in memory form.
    pub fn reg_to_mem(&self, v: BasicValueEnum<'ctx>, d: DType) -> R<BasicValueEnum<'ctx>> {
        let (b, c) = (self.b, self.ctx);
        Ok(match d {
            DType::F16 => b
                .build_float_trunc(v.into_float_value(), c.f16_type(), "f2h")?
                .into(),
            DType::BF16 => self.bf16_bits(v.into_float_value())?.into(),
            DType::Bool => b
                .build_int_z_extend(v.into_int_value(), c.i8_type(), "b8")?
                .into(),
            _ => v,
        })
    }

    /// The bf16 bits of an f32, rounded to nearest even (NaN stays NaN, made quiet), as
    /// `half::bf16::from_f32`.
    fn bf16_bits(&self, x: FloatValue<'ctx>) -> R<IntValue<'ctx>> {
        let (b, c) = (self.b, self.ctx);
        let i32t = c.i32_type();
        let k = |v: u64| i32t.const_int(v, false);
        let bits = b.build_bit_cast(x, i32t, "bits")?.into_int_value();
        let hi = b.build_right_shift(bits, k(16), false, "hi")?;
        let lsb = b.build_and(hi, k(1), "lsb")?;
        let bias = b.build_int_add(lsb, k(0x7fff), "bias")?;
        let rounded = b.build_int_add(bits, bias, "r")?;
        let rounded = b.build_right_shift(rounded, k(16), false, "r")?;
        let quiet = b.build_or(hi, k(0x40), "q")?;
        let nan = b.build_float_compare(FloatPredicate::UNO, x, x, "nan")?;
        let out = b.build_select(nan, quiet, rounded, "bf")?.into_int_value();
        Ok(b.build_int_truncate(out, c.i16_type(), "bf16")?)
    }

    /// A value of a narrow float type (in its f32 register form) rounded to that type.
    fn round_narrow(&self, v: FloatValue<'ctx>, d: DType) -> R<FloatValue<'ctx>> {
        match d {
            DType::F16 | DType::BF16 => {
                let m = self.reg_to_mem(v.into(), d)?;
                Ok(self.mem_to_reg(m, d)?.into_float_value())
            }
            _ => Ok(v),
        }
    }

    /// A rank-0 constant in register form.
    pub fn constant(&self, t: &Tensor) -> R<BasicValueEnum<'ctx>> {
        let d = t.dtype();
        let ty = self.reg_type(d)?;
        Ok(if d.is_float() {
            let v = t.to_f64_vec()[0];
            ty.into_float_type().const_float(v).into()
        } else if d == DType::U64 {
            let v = t.as_slice::<u64>().map(|s| s[0]).unwrap_or(0);
            ty.into_int_type().const_int(v, false).into()
        } else {
            let v = t.to_i64_vec().map(|v| v[0]).unwrap_or(0);
            ty.into_int_type().const_int(v as u64, true).into()
        })
    }

    fn intrinsic(
        &self,
        name: &str,
        tys: &[BasicTypeEnum<'ctx>],
        args: &[BasicValueEnum<'ctx>],
    ) -> R<BasicValueEnum<'ctx>> {
        let i = Intrinsic::find(name).ok_or_else(|| CodegenError::Llvm(format!("no {name}")))?;
        let f = i
            .get_declaration(self.module, tys)
            .ok_or_else(|| CodegenError::Llvm(format!("no declaration of {name}")))?;
        let args: Vec<_> = args.iter().map(|&a| a.into()).collect();
        self.b
            .build_call(f, &args, "i")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| CodegenError::Llvm(format!("{name} returns nothing")))
    }

    /// A call of the libm function `name` (f64) or `namef` (f32).
    fn libm(&self, name: &str, args: &[FloatValue<'ctx>]) -> R<FloatValue<'ctx>> {
        self.host_only(name)?;
        let ty = args[0].get_type();
        let is_f32 = ty == self.ctx.f32_type();
        let sym = if is_f32 {
            format!("{name}f")
        } else {
            name.to_string()
        };
        let f = match self.module.get_function(&sym) {
            Some(f) => f,
            None => {
                let params: Vec<_> = args.iter().map(|_| ty.into()).collect();
                self.module
                    .add_function(&sym, ty.fn_type(&params, false), Some(Linkage::External))
            }
        };
        let args: Vec<_> = args.iter().map(|&a| a.into()).collect();
        Ok(self
            .b
            .build_call(f, &args, name)?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| CodegenError::Llvm(format!("{sym} returns nothing")))?
            .into_float_value())
    }

    /// An error on NVPTX, where `what` (a libm function or an intrinsic lowered to its call)
    /// does not exist.
    fn host_only(&self, what: &str) -> R<()> {
        if self.nvptx {
            return Err(CodegenError::NoGpuLowering(format!(
                "`{what}` (NVPTX has no libm)"
            )));
        }
        Ok(())
    }

    fn fconst(&self, like: FloatValue<'ctx>, v: f64) -> FloatValue<'ctx> {
        like.get_type().const_float(v)
    }

    /// `op(x)` on a value of type `d`.
    pub fn unary(&self, op: UnaryOp, x: BasicValueEnum<'ctx>, d: DType) -> R<BasicValueEnum<'ctx>> {
        let b = self.b;
        if d.is_float() {
            let x = x.into_float_value();
            let ty: BasicTypeEnum = x.get_type().into();
            let one = self.fconst(x, 1.0);
            let is_f32 = x.get_type() == self.ctx.f32_type();
            let intr = |name: &str| -> R<FloatValue<'ctx>> {
                if matches!(name, "llvm.exp" | "llvm.log" | "llvm.sin" | "llvm.cos") {
                    self.host_only(name)?;
                }
                Ok(self.intrinsic(name, &[ty], &[x.into()])?.into_float_value())
            };
            let r = match op {
                UnaryOp::Neg => b.build_float_neg(x, "neg")?,
                UnaryOp::Abs => intr("llvm.fabs")?,
                UnaryOp::Sign => {
                    let zero = self.fconst(x, 0.0);
                    let gt = b.build_float_compare(FloatPredicate::OGT, x, zero, "gt")?;
                    let lt = b.build_float_compare(FloatPredicate::OLT, x, zero, "lt")?;
                    let m = b.build_select(lt, self.fconst(x, -1.0), x, "s")?;
                    b.build_select(gt, one, m.into_float_value(), "sign")?
                        .into_float_value()
                }
                UnaryOp::Exp if is_f32 => self.exp_f32(x)?,
                UnaryOp::Exp => intr("llvm.exp")?,
                UnaryOp::Log => intr("llvm.log")?,
                UnaryOp::Sqrt => intr("llvm.sqrt")?,
                UnaryOp::Rsqrt => {
                    let s = intr("llvm.sqrt")?;
                    b.build_float_div(one, s, "rsqrt")?
                }
                UnaryOp::Sin => intr("llvm.sin")?,
                UnaryOp::Cos => intr("llvm.cos")?,
                UnaryOp::Tan => self.libm("tan", &[x])?,
                UnaryOp::Asin => self.libm("asin", &[x])?,
                UnaryOp::Acos => self.libm("acos", &[x])?,
                UnaryOp::Atan => self.libm("atan", &[x])?,
                UnaryOp::Sinh => self.libm("sinh", &[x])?,
                UnaryOp::Cosh => self.libm("cosh", &[x])?,
                UnaryOp::Tanh => self.libm("tanh", &[x])?,
                UnaryOp::Asinh => self.libm("asinh", &[x])?,
                UnaryOp::Acosh => self.libm("acosh", &[x])?,
                UnaryOp::Atanh => self.libm("atanh", &[x])?,
                UnaryOp::Erf if is_f32 => self.erf_f32(x)?,
                UnaryOp::Erf => self.libm("erf", &[x])?,
                UnaryOp::Logistic => {
                    let n = b.build_float_neg(x, "n")?;
                    let e = if is_f32 {
                        self.exp_f32(n)?.into()
                    } else {
                        self.host_only("llvm.exp")?;
                        self.intrinsic("llvm.exp", &[ty], &[n.into()])?
                    };
                    let den = b.build_float_add(one, e.into_float_value(), "den")?;
                    b.build_float_div(one, den, "logistic")?
                }
                UnaryOp::Floor => intr("llvm.floor")?,
                UnaryOp::Ceil => intr("llvm.ceil")?,
                UnaryOp::Round => intr("llvm.roundeven")?,
                UnaryOp::IsNan => {
                    return Ok(b
                        .build_float_compare(FloatPredicate::UNO, x, x, "isnan")?
                        .into());
                }
                UnaryOp::IsInf => {
                    let a = intr("llvm.fabs")?;
                    let inf = self.fconst(x, f64::INFINITY);
                    return Ok(b
                        .build_float_compare(FloatPredicate::OEQ, a, inf, "isinf")?
                        .into());
                }
                UnaryOp::Not => return Err(CodegenError::Invalid(format!("{op:?} on {d}"))),
            };
            return Ok(self.round_narrow(r, d)?.into());
        }
        let x = x.into_int_value();
        let ty = x.get_type();
        if matches!(op, UnaryOp::IsNan | UnaryOp::IsInf) {
            return Ok(self.ctx.bool_type().const_zero().into());
        }
        if d == DType::Bool {
            return match op {
                UnaryOp::Not => Ok(b.build_not(x, "not")?.into()),
                _ => Err(CodegenError::Invalid(format!("{op:?} on bool"))),
            };
        }
        let signed = d.is_signed_int();
        let zero = ty.const_zero();
        Ok(match op {
            UnaryOp::Neg => b.build_int_sub(zero, x, "neg")?.into(),
            UnaryOp::Abs if signed => {
                let neg = b.build_int_sub(zero, x, "neg")?;
                let lt = b.build_int_compare(IntPredicate::SLT, x, zero, "lt")?;
                b.build_select(lt, neg, x, "abs")?
            }
            UnaryOp::Abs => x.into(),
            UnaryOp::Sign if signed => {
                let gt = b.build_int_compare(IntPredicate::SGT, x, zero, "gt")?;
                let lt = b.build_int_compare(IntPredicate::SLT, x, zero, "lt")?;
                let gt = b.build_int_z_extend(gt, ty, "gt")?;
                let lt = b.build_int_z_extend(lt, ty, "lt")?;
                b.build_int_sub(gt, lt, "sign")?.into()
            }
            UnaryOp::Sign => {
                let ne = b.build_int_compare(IntPredicate::NE, x, zero, "ne")?;
                b.build_int_z_extend(ne, ty, "sign")?.into()
            }
            UnaryOp::Not => b.build_not(x, "not")?.into(),
            _ => return Err(CodegenError::Invalid(format!("{op:?} on {d}"))),
        })
    }

    /// `a * m + add`, rounded once.
    fn fma(
        &self,
        a: FloatValue<'ctx>,
        m: FloatValue<'ctx>,
        add: FloatValue<'ctx>,
    ) -> R<FloatValue<'ctx>> {
        let ty = a.get_type().as_basic_type_enum();
        Ok(self
            .intrinsic("llvm.fma", &[ty], &[a.into(), m.into(), add.into()])?
            .into_float_value())
    }

    /// `exp(x)` in f32 as straight-line arithmetic (so loops over it vectorize): `x = n ln2 + r`
    /// with `n = round(x / ln2)` (ln2 split in two for an exact reduction), `e^r` by Cephes'
    /// `expf` polynomial on |r| <= ln2/2 (about 1 ulp), times `2^n` built from its exponent bits
    /// in two halves (so that subnormal results are right). Beyond 88.72 the result is +inf,
    /// below -104 it is 0; NaN stays NaN.
    pub fn exp_f32(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let (b, c) = (self.b, self.ctx);
        let f32t = c.f32_type();
        let i32t = c.i32_type();
        let k = |v: f64| f32t.const_float(v);
        let nan = b.build_float_compare(FloatPredicate::UNO, x, x, "nan")?;
        let over = b.build_float_compare(FloatPredicate::OGT, x, k(88.722_839), "over")?;
        let under = b.build_float_compare(FloatPredicate::OLT, x, k(-104.0), "under")?;
        // A finite, in-range argument for the arithmetic (NaN and the ends are selected below).
        let xs = b.build_select(nan, k(0.0), x, "xs")?.into_float_value();
        let xs = b.build_select(over, k(0.0), xs, "xs")?.into_float_value();
        let xs = b
            .build_select(under, k(-104.0), xs, "xs")?
            .into_float_value();
        let fma = |a, m, add| self.fma(a, m, add);
        let t = b.build_float_mul(xs, k(std::f64::consts::LOG2_E), "t")?;
        let n = self
            .intrinsic("llvm.roundeven", &[f32t.into()], &[t.into()])?
            .into_float_value();
        let r = fma(n, k(-0.693_359_375), xs)?;
        let r = fma(n, k(2.121_944_4e-4), r)?;
        let mut p = k(1.987_569_15e-4);
        for coef in [
            1.398_199_950_7e-3,
            8.333_451_907_3e-3,
            4.166_579_589_4e-2,
            1.666_666_545_9e-1,
            5.000_000_120_1e-1,
        ] {
            p = fma(p, r, k(coef))?;
        }
        let r2 = b.build_float_mul(r, r, "r2")?;
        let p = fma(p, r2, r)?;
        let p = b.build_float_add(p, k(1.0), "p")?;
        // 2^n = 2^(n/2) * 2^(n - n/2), each a normal number for n in [-151, 128].
        let ni = b.build_float_to_signed_int(n, i32t, "n")?;
        let n1 = b.build_right_shift(ni, i32t.const_int(1, false), true, "n1")?;
        let n2 = b.build_int_sub(ni, n1, "n2")?;
        let pow2 = |e: IntValue<'ctx>| -> R<FloatValue<'ctx>> {
            let biased = b.build_int_add(e, i32t.const_int(127, false), "e")?;
            let bits = b.build_left_shift(biased, i32t.const_int(23, false), "bits")?;
            Ok(b.build_bit_cast(bits, f32t, "pow2")?.into_float_value())
        };
        let y = b.build_float_mul(p, pow2(n1)?, "y")?;
        let y = b.build_float_mul(y, pow2(n2)?, "y")?;
        let y = b
            .build_select(over, k(f64::INFINITY), y, "y")?
            .into_float_value();
        Ok(b.build_select(nan, x, y, "exp")?.into_float_value())
    }

    /// `erf(x)` in f32 as straight-line arithmetic: for |x| < 0.5 its Maclaurin series to x^11
    /// (the next term is below 1.4e-8), else Abramowitz and Stegun 7.1.26,
    /// `1 - t (a1 + t (a2 + ...)) e^(-x^2)` with `t = 1 / (1 + p|x|)` (absolute error below
    /// 1.5e-7), with the sign of x. NaN stays NaN.
    pub fn erf_f32(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let (b, c) = (self.b, self.ctx);
        let f32t = c.f32_type();
        let k = |v: f64| f32t.const_float(v);
        let fma = |a, m, add| self.fma(a, m, add);
        let ax = self
            .intrinsic("llvm.fabs", &[f32t.into()], &[x.into()])?
            .into_float_value();
        let x2 = b.build_float_mul(x, x, "x2")?;
        // Series: 2/sqrt(pi) * x * (1 - x^2/3 + x^4/10 - x^6/42 + x^8/216 - x^10/1320).
        let mut s = k(-1.0 / 1320.0);
        for coef in [1.0 / 216.0, -1.0 / 42.0, 1.0 / 10.0, -1.0 / 3.0, 1.0] {
            s = fma(s, x2, k(coef))?;
        }
        let small = b.build_float_mul(x, s, "s")?;
        let small = b.build_float_mul(small, k(std::f64::consts::FRAC_2_SQRT_PI), "small")?;
        // Abramowitz and Stegun on |x|.
        let den = fma(ax, k(0.327_591_1), k(1.0))?;
        let t = b.build_float_div(k(1.0), den, "t")?;
        let mut q = k(1.061_405_429);
        for coef in [-1.453_152_027, 1.421_413_741, -0.284_496_736, 0.254_829_592] {
            q = fma(q, t, k(coef))?;
        }
        let q = b.build_float_mul(q, t, "q")?;
        let e = self.exp_f32(b.build_float_neg(x2, "nx2")?)?;
        let tail = b.build_float_mul(q, e, "tail")?;
        let big = b.build_float_sub(k(1.0), tail, "big")?;
        let big = self
            .intrinsic("llvm.copysign", &[f32t.into()], &[big.into(), x.into()])?
            .into_float_value();
        let is_small = b.build_float_compare(FloatPredicate::OLT, ax, k(0.5), "is_small")?;
        let r = b
            .build_select(is_small, small, big, "erf")?
            .into_float_value();
        // NaN fails `|x| < 0.5` and would take the other branch: keep it.
        let nan = b.build_float_compare(FloatPredicate::UNO, x, x, "nan")?;
        Ok(b.build_select(nan, x, r, "erf")?.into_float_value())
    }

    /// `op(x, y)` on values of type `d`.
    pub fn binary(
        &self,
        op: BinaryOp,
        x: BasicValueEnum<'ctx>,
        y: BasicValueEnum<'ctx>,
        d: DType,
    ) -> R<BasicValueEnum<'ctx>> {
        let b = self.b;
        if d.is_float() {
            let (x, y) = (x.into_float_value(), y.into_float_value());
            let ty: BasicTypeEnum = x.get_type().into();
            let intr = |name: &str| -> R<FloatValue<'ctx>> {
                if name == "llvm.pow" {
                    self.host_only(name)?;
                }
                Ok(self
                    .intrinsic(name, &[ty], &[x.into(), y.into()])?
                    .into_float_value())
            };
            let r = match op {
                BinaryOp::Add => b.build_float_add(x, y, "add")?,
                BinaryOp::Sub => b.build_float_sub(x, y, "sub")?,
                BinaryOp::Mul => b.build_float_mul(x, y, "mul")?,
                BinaryOp::Div => b.build_float_div(x, y, "div")?,
                BinaryOp::Rem => b.build_float_rem(x, y, "rem")?,
                BinaryOp::Pow => intr("llvm.pow")?,
                BinaryOp::Max => intr("llvm.maximum")?,
                BinaryOp::Min => intr("llvm.minimum")?,
                _ => return Err(CodegenError::Invalid(format!("{op:?} on {d}"))),
            };
            return Ok(self.round_narrow(r, d)?.into());
        }
        let (x, y) = (x.into_int_value(), y.into_int_value());
        if d == DType::Bool {
            return Ok(match op {
                BinaryOp::Max | BinaryOp::Or => b.build_or(x, y, "or")?,
                BinaryOp::Min | BinaryOp::And => b.build_and(x, y, "and")?,
                BinaryOp::Xor => b.build_xor(x, y, "xor")?,
                _ => return Err(CodegenError::Invalid(format!("{op:?} on bool"))),
            }
            .into());
        }
        let signed = d.is_signed_int();
        let ty = x.get_type();
        let bits = ty.get_bit_width() as u64;
        let zero = ty.const_zero();
        let one = ty.const_int(1, false);
        let pred = |s: IntPredicate, u: IntPredicate| if signed { s } else { u };
        Ok(match op {
            BinaryOp::Add => b.build_int_add(x, y, "add")?.into(),
            BinaryOp::Sub => b.build_int_sub(x, y, "sub")?.into(),
            BinaryOp::Mul => b.build_int_mul(x, y, "mul")?.into(),
            BinaryOp::Div | BinaryOp::Rem => {
                let y0 = b.build_int_compare(IntPredicate::EQ, y, zero, "y0")?;
                let is_div = op == BinaryOp::Div;
                let r = if signed {
                    // `MIN / -1` overflows: y == -1 gives -x (wrapping) and remainder 0.
                    let m1 = b.build_int_compare(IntPredicate::EQ, y, ty.const_all_ones(), "m1")?;
                    let bad = b.build_or(y0, m1, "bad")?;
                    let safe = b.build_select(bad, one, y, "d")?.into_int_value();
                    let q = if is_div {
                        b.build_int_signed_div(x, safe, "q")?
                    } else {
                        b.build_int_signed_rem(x, safe, "r")?
                    };
                    let special = if is_div {
                        b.build_int_sub(zero, x, "negx")?
                    } else {
                        zero
                    };
                    b.build_select(m1, special, q, "q")?.into_int_value()
                } else {
                    let safe = b.build_select(y0, one, y, "d")?.into_int_value();
                    if is_div {
                        b.build_int_unsigned_div(x, safe, "q")?
                    } else {
                        b.build_int_unsigned_rem(x, safe, "r")?
                    }
                };
                b.build_select(y0, zero, r, "divz")?
            }
            BinaryOp::Pow => self.int_pow(x, y, signed)?.into(),
            BinaryOp::Max => {
                let gt =
                    b.build_int_compare(pred(IntPredicate::SGE, IntPredicate::UGE), x, y, "ge")?;
                b.build_select(gt, x, y, "max")?
            }
            BinaryOp::Min => {
                let lt =
                    b.build_int_compare(pred(IntPredicate::SLE, IntPredicate::ULE), x, y, "le")?;
                b.build_select(lt, x, y, "min")?
            }
            BinaryOp::And => b.build_and(x, y, "and")?.into(),
            BinaryOp::Or => b.build_or(x, y, "or")?.into(),
            BinaryOp::Xor => b.build_xor(x, y, "xor")?.into(),
            BinaryOp::ShiftLeft | BinaryOp::ShiftRight => {
                // In range when 0 <= y < bits (y read as signed for signed types).
                let limit = ty.const_int(bits, false);
                let ok = b.build_int_compare(IntPredicate::ULT, y, limit, "inrange")?;
                let safe = b.build_select(ok, y, zero, "cnt")?.into_int_value();
                let (shifted, outside) = if op == BinaryOp::ShiftLeft {
                    (b.build_left_shift(x, safe, "shl")?, zero)
                } else {
                    let s = b.build_right_shift(x, safe, signed, "shr")?;
                    let out = if signed {
                        b.build_right_shift(x, ty.const_int(bits - 1, false), true, "sgn")?
                    } else {
                        zero
                    };
                    (s, out)
                };
                b.build_select(ok, shifted, outside, "shift")?
            }
        })
    }

    /// `x ** y` for integers: exact by squaring with wrapping; a negative exponent gives
    /// `1 / x^-y` truncated (nonzero only for x = ±1). A loop in a helper function per width.
    fn int_pow(&self, x: IntValue<'ctx>, y: IntValue<'ctx>, signed: bool) -> R<IntValue<'ctx>> {
        let ty = x.get_type();
        let name = format!(
            "tf.ipow.{}{}",
            if signed { "i" } else { "u" },
            ty.get_bit_width()
        );
        let f = match self.module.get_function(&name) {
            Some(f) => f,
            None => self.define_int_pow(&name, ty, signed)?,
        };
        Ok(self
            .b
            .build_call(f, &[x.into(), y.into()], "pow")?
            .try_as_basic_value()
            .basic()
            .ok_or_else(|| CodegenError::Llvm("ipow returns nothing".into()))?
            .into_int_value())
    }

    fn define_int_pow(
        &self,
        name: &str,
        ty: inkwell::types::IntType<'ctx>,
        signed: bool,
    ) -> R<inkwell::values::FunctionValue<'ctx>> {
        let c = self.ctx;
        let f = self.module.add_function(
            name,
            ty.fn_type(&[ty.into(), ty.into()], false),
            Some(Linkage::Internal),
        );
        let b = c.create_builder();
        let entry = c.append_basic_block(f, "entry");
        let neg = c.append_basic_block(f, "neg");
        let header = c.append_basic_block(f, "loop");
        let body = c.append_basic_block(f, "body");
        let done = c.append_basic_block(f, "done");
        let x = f.get_nth_param(0).unwrap().into_int_value();
        let y = f.get_nth_param(1).unwrap().into_int_value();
        let zero = ty.const_zero();
        let one = ty.const_int(1, false);
        b.position_at_end(entry);
        let is_neg = if signed {
            b.build_int_compare(IntPredicate::SLT, y, zero, "neg")?
        } else {
            c.bool_type().const_zero()
        };
        b.build_conditional_branch(is_neg, neg, header)?;
        // Negative exponent: 1 for x = 1, ±1 for x = -1 (by the exponent's parity), else 0.
        b.position_at_end(neg);
        let odd = b.build_and(y, one, "odd")?;
        let odd = b.build_int_compare(IntPredicate::NE, odd, zero, "odd")?;
        let is1 = b.build_int_compare(IntPredicate::EQ, x, one, "is1")?;
        let ism1 = b.build_int_compare(IntPredicate::EQ, x, ty.const_all_ones(), "ism1")?;
        let m1 = b.build_select(odd, ty.const_all_ones(), one, "m1")?;
        let r = b.build_select(ism1, m1, zero.into(), "r")?;
        let r = b.build_select(is1, one.into(), r, "r")?;
        b.build_return(Some(&r))?;
        // Square and multiply.
        b.position_at_end(header);
        let base = b.build_phi(ty, "base")?;
        let e = b.build_phi(ty, "e")?;
        let acc = b.build_phi(ty, "acc")?;
        let more = b.build_int_compare(
            IntPredicate::NE,
            e.as_basic_value().into_int_value(),
            zero,
            "more",
        )?;
        b.build_conditional_branch(more, body, done)?;
        b.position_at_end(body);
        let (bv, ev, av) = (
            base.as_basic_value().into_int_value(),
            e.as_basic_value().into_int_value(),
            acc.as_basic_value().into_int_value(),
        );
        let bit = b.build_and(ev, one, "bit")?;
        let bit = b.build_int_compare(IntPredicate::NE, bit, zero, "bit")?;
        let prod = b.build_int_mul(av, bv, "prod")?;
        let acc2 = b.build_select(bit, prod, av, "acc")?.into_int_value();
        let base2 = b.build_int_mul(bv, bv, "sq")?;
        let e2 = b.build_right_shift(ev, one, false, "e")?;
        b.build_unconditional_branch(header)?;
        base.add_incoming(&[(&x, entry), (&base2, body)]);
        e.add_incoming(&[(&y, entry), (&e2, body)]);
        acc.add_incoming(&[(&one, entry), (&acc2, body)]);
        b.position_at_end(done);
        b.build_return(Some(&acc.as_basic_value()))?;
        Ok(f)
    }

    /// `op(x, y)` on values of type `d`, a bool.
    pub fn compare(
        &self,
        op: CompareOp,
        x: BasicValueEnum<'ctx>,
        y: BasicValueEnum<'ctx>,
        d: DType,
    ) -> R<BasicValueEnum<'ctx>> {
        let b = self.b;
        if d.is_float() {
            let p = match op {
                CompareOp::Eq => FloatPredicate::OEQ,
                CompareOp::Ne => FloatPredicate::UNE,
                CompareOp::Lt => FloatPredicate::OLT,
                CompareOp::Le => FloatPredicate::OLE,
                CompareOp::Gt => FloatPredicate::OGT,
                CompareOp::Ge => FloatPredicate::OGE,
            };
            return Ok(b
                .build_float_compare(p, x.into_float_value(), y.into_float_value(), "cmp")?
                .into());
        }
        let signed = d.is_signed_int();
        let p = match (op, signed) {
            (CompareOp::Eq, _) => IntPredicate::EQ,
            (CompareOp::Ne, _) => IntPredicate::NE,
            (CompareOp::Lt, true) => IntPredicate::SLT,
            (CompareOp::Le, true) => IntPredicate::SLE,
            (CompareOp::Gt, true) => IntPredicate::SGT,
            (CompareOp::Ge, true) => IntPredicate::SGE,
            (CompareOp::Lt, false) => IntPredicate::ULT,
            (CompareOp::Le, false) => IntPredicate::ULE,
            (CompareOp::Gt, false) => IntPredicate::UGT,
            (CompareOp::Ge, false) => IntPredicate::UGE,
        };
        Ok(
            b.build_int_compare(p, x.into_int_value(), y.into_int_value(), "cmp")?
                .into(),
        )
    }

    /// `convert(x)` from `from` to `to`, with the interpreter's rules.
    pub fn convert(
        &self,
        x: BasicValueEnum<'ctx>,
        from: DType,
        to: DType,
    ) -> R<BasicValueEnum<'ctx>> {
        let (b, c) = (self.b, self.ctx);
        if from == to {
            return Ok(x);
        }
        let to_ty = self.reg_type(to)?;
        if from.is_float() {
            let x = x.into_float_value();
            if to.is_float() {
                return Ok(match (from, to) {
                    (DType::F64, DType::F32) => b.build_float_trunc(x, c.f32_type(), "f64f32")?,
                    (DType::F64, _) => {
                        let odd = self.round_to_odd_f32(x)?;
                        self.round_narrow(odd, to)?
                    }
                    (_, DType::F64) => b.build_float_ext(x, c.f64_type(), "ext")?,
                    // Between f32, f16 and bf16 (all f32 in registers).
                    _ => self.round_narrow(x, to)?,
                }
                .into());
            }
            if to == DType::Bool {
                let zero = x.get_type().const_zero();
                return Ok(b
                    .build_float_compare(FloatPredicate::UNE, x, zero, "f2b")?
                    .into());
            }
            let name = if to.is_signed_int() {
                "llvm.fptosi.sat"
            } else {
                "llvm.fptoui.sat"
            };
            return self.intrinsic(name, &[to_ty, x.get_type().into()], &[x.into()]);
        }
        let x = x.into_int_value();
        let signed = from.is_signed_int();
        if to.is_float() {
            return Ok(match to {
                DType::F64 | DType::F32 => {
                    let fty = to_ty.into_float_type();
                    if signed {
                        b.build_signed_int_to_float(x, fty, "i2f")?
                    } else {
                        b.build_unsigned_int_to_float(x, fty, "u2f")?
                    }
                }
                _ => {
                    // Through f64 (exact up to 2^53), then rounded to odd in f32 and to the
                    // narrow type, as the interpreter.
                    let f = if signed {
                        b.build_signed_int_to_float(x, c.f64_type(), "i2f")?
                    } else {
                        b.build_unsigned_int_to_float(x, c.f64_type(), "u2f")?
                    };
                    let odd = self.round_to_odd_f32(f)?;
                    self.round_narrow(odd, to)?
                }
            }
            .into());
        }
        if to == DType::Bool {
            let zero = x.get_type().const_zero();
            return Ok(b
                .build_int_compare(IntPredicate::NE, x, zero, "i2b")?
                .into());
        }
        let ity = to_ty.into_int_type();
        let (fw, tw) = (x.get_type().get_bit_width(), ity.get_bit_width());
        Ok(if tw < fw {
            b.build_int_truncate(x, ity, "trunc")?.into()
        } else if tw == fw {
            x.into()
        } else if signed {
            b.build_int_s_extend(x, ity, "sext")?.into()
        } else {
            b.build_int_z_extend(x, ity, "zext")?.into()
        })
    }

    /// An f64 rounded to f32 with round-to-odd (the nearest-even f32 moved one ulp toward `x`
    /// when it is inexact and even), so that rounding once more to f16 or bf16 is correct.
    fn round_to_odd_f32(&self, x: FloatValue<'ctx>) -> R<FloatValue<'ctx>> {
        let (b, c) = (self.b, self.ctx);
        let i32t = c.i32_type();
        let t = b.build_float_trunc(x, c.f32_type(), "t")?;
        let back = b.build_float_ext(t, c.f64_type(), "back")?;
        let exact = b.build_float_compare(FloatPredicate::UEQ, back, x, "exact")?;
        let bits = b.build_bit_cast(t, i32t, "bits")?.into_int_value();
        let lsb = b.build_and(bits, i32t.const_int(1, false), "lsb")?;
        let odd = b.build_int_compare(IntPredicate::NE, lsb, i32t.const_zero(), "odd")?;
        let keep = b.build_or(exact, odd, "keep")?;
        let ax = self.intrinsic("llvm.fabs", &[c.f64_type().into()], &[x.into()])?;
        let ab = self.intrinsic("llvm.fabs", &[c.f64_type().into()], &[back.into()])?;
        let above = b.build_float_compare(
            FloatPredicate::OGT,
            ab.into_float_value(),
            ax.into_float_value(),
            "above",
        )?;
        let down = b.build_int_sub(bits, i32t.const_int(1, false), "down")?;
        let up = b.build_int_add(bits, i32t.const_int(1, false), "up")?;
        let moved = b.build_select(above, down, up, "moved")?;
        let out = b.build_select(keep, bits.into(), moved, "odd")?;
        Ok(b.build_bit_cast(out, c.f32_type(), "rto")?
            .into_float_value())
    }

    /// The type a reduction accumulates `d` in (f16 and bf16 in f32, rounded at the end).
    pub fn identity(&self, kind: terafab_ir::ReduceKind, d: DType) -> R<BasicValueEnum<'ctx>> {
        use terafab_ir::ReduceKind::*;
        let ty = self.reg_type(d)?;
        if d.is_float() {
            let ft = ty.into_float_type();
            let v = match kind {
                Sum => 0.0,
                Prod => 1.0,
                Max => f64::NEG_INFINITY,
                Min => f64::INFINITY,
            };
            return Ok(ft.const_float(v).into());
        }
        let it = ty.into_int_type();
        let w = it.get_bit_width();
        if d == DType::Bool {
            return Ok(it
                .const_int(matches!(kind, Prod | Min) as u64, false)
                .into());
        }
        let v = match (kind, d.is_signed_int()) {
            (Sum, _) => 0,
            (Prod, _) => 1,
            (Max, true) => 1u64 << (w - 1),
            (Max, false) => 0,
            (Min, true) => (1u64 << (w - 1)) - 1,
            (Min, false) => u64::MAX,
        };
        Ok(it.const_int(v, false).into())
    }

    /// One step of a reduction: `acc (kind) x`. Float sums and products may be reassociated
    /// (the vectorizer then keeps several partial sums), so their rounding can differ from the
    /// interpreter's f64 sum by the usual f32 summation error.
    pub fn combine(
        &self,
        kind: terafab_ir::ReduceKind,
        acc: BasicValueEnum<'ctx>,
        x: BasicValueEnum<'ctx>,
        d: DType,
    ) -> R<BasicValueEnum<'ctx>> {
        use terafab_ir::ReduceKind::*;
        let b = self.b;
        if d.is_float() {
            let (a, x) = (acc.into_float_value(), x.into_float_value());
            let r = match kind {
                Sum => b.build_float_add(a, x, "acc")?,
                Prod => b.build_float_mul(a, x, "acc")?,
                Max => return self.binary_raw_float("llvm.maximum", a, x),
                Min => return self.binary_raw_float("llvm.minimum", a, x),
            };
            if let Some(i) = r.as_instruction() {
                let _ = i.set_fast_math_flags(inkwell::values::FastMathFlags::AllowReassoc);
            }
            return Ok(r.into());
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

    fn binary_raw_float(
        &self,
        name: &str,
        a: FloatValue<'ctx>,
        x: FloatValue<'ctx>,
    ) -> R<BasicValueEnum<'ctx>> {
        let ty = a.get_type().as_basic_type_enum();
        self.intrinsic(name, &[ty], &[a.into(), x.into()])
    }
}
