//! 8-bit floating-point formats: one sign bit, `e` exponent bits, `m = 7 - e` mantissa bits.
//!
//! A [`Format`] describes one such format (widths, exponent bias, and how it spends its special
//! encodings, [`Specials`]); [`Format::decode`] and [`Format::encode`] convert between its bit
//! patterns and binary floats. The four ONNX types ([`F8E4M3FN`], [`F8E4M3FNUZ`], [`F8E5M2`],
//! [`F8E5M2FNUZ`]) and Tesla's two configurable ("CFP8") types at their default biases
//! ([`CF8E4M3`], [`CF8E5M2`]) are newtypes over their byte whose format is a constant; other
//! 8-bit formats (such as CFP8 at another bias, [`Format::with_bias`]) reuse [`Format`] with
//! their own bias.
//!
//! # Values
//!
//! Exponent field `E`, mantissa field `M`, bias `b`: `E = 0` is subnormal,
//! `(-1)^s · M · 2^(1-b-m)`; otherwise normal, `(-1)^s · (2^m + M) · 2^(E-b-m)`; except for the
//! patterns [`Specials`] reserves:
//!
//! | format | bias | specials | largest finite | least subnormal |
//! |---|---|---|---|---|
//! | E4M3FN | 7 | [`Specials::FiniteNan`]: `S.1111.111` is NaN, no inf | 448 | 2^-9 |
//! | E4M3FNUZ | 8 | [`Specials::Fnuz`]: 0x80 is NaN, no inf, no -0 | 240 | 2^-10 |
//! | E5M2 | 15 | [`Specials::Ieee`]: `S.11111.00` is ±inf, `S.11111.xx` NaN | 57344 | 2^-16 |
//! | E5M2FNUZ | 16 | [`Specials::Fnuz`] | 57344 | 2^-17 |
//! | CF8E4M3 | 7 | [`Specials::None`]: every pattern a number, 0x80 is -0 | 480 | 2^-9 |
//! | CF8E5M2 | 15 | [`Specials::None`] | 114688 | 2^-16 |
//!
//! Every value of every format with a bias in 0..=63 is exactly an f32, so decoding is exact.
//!
//! # CFP8 and its configurable bias
//!
//! Tesla's configurable floats (the "Tesla Dojo Technology: A Guide to Tesla's Configurable
//! Floating Point Formats & Arithmetic" white paper) are CFloat8_1_4_3 and CFloat8_1_5_2: no
//! infinities and no NaN (all 256 patterns are finite numbers, with a -0 at `0x80`), subnormals
//! at exponent field 0, overflow saturating to ±max, rounding to nearest even. The hardware takes
//! the exponent bias from a register (0..=63). The IR has one element type per width, at a fixed
//! default bias: `cf8e4m3` ([`CF8E4M3`], bias 7) and `cf8e5m2` ([`CF8E5M2`], bias 15).
//!
//! Another bias needs no other element type. The values of a format at bias `b` are exactly those
//! of the same format at the default bias `d`, pattern by pattern, times `2^(d-b)`: a tensor of
//! codes at bias `b` is the same bytes as the default-bias tensor scaled by `2^(d-b)`. Scaling by
//! a power of two maps one value grid onto the other, so it commutes with rounding to nearest even
//! (ties go to the same, even, pattern) and with saturation (the bound scales too): encoding `x`
//! at bias `b` gives the same byte as encoding `x · 2^(b-d)` at the default bias, and decoding a
//! byte at bias `b` gives `2^(d-b)` times its default-bias value. A graph for bias `b` is thus the
//! default-bias graph with a multiplication by the power of two before each conversion into CFP8
//! and after each conversion out of it; code that wants the codes directly (a tile simulator)
//! uses [`Format::cf8e4m3`]/[`Format::cf8e5m2`] (or [`Format::with_bias`]) with the same
//! [`Format::encode`] and [`Format::decode`].
//!
//! A format without NaN ([`Specials::None`]) encodes a NaN input as +0, as the IR's float to
//! integer `convert` maps NaN to 0: there is no pattern that could stand for it, and zero is the
//! value that keeps a NaN from turning into a large magnitude.
//!
//! # Rounding
//!
//! [`Format::encode`] rounds an f64 once, to nearest with ties to even (no double rounding:
//! it works on the exact f64 value), and treats values beyond the largest finite one, and
//! infinities, by an [`Overflow`] rule. The IR's `convert` (and so [`crate::Element::from_f64`]
//! and all float8 arithmetic) uses [`Overflow::ClampFinite`]; ONNX's `Cast` with `saturate=1`
//! is [`Overflow::Clamp`] and with `saturate=0` is [`Overflow::Special`].

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use crate::dtype::DType;
use crate::tensor::{Data, Element};

/// How a format uses the encodings a plain sign-exponent-mantissa reading would give to its
/// largest values and to negative zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Specials {
    /// IEEE 754 style (E5M2): the all-ones exponent holds ±inf (mantissa 0) and NaNs (any other
    /// mantissa); there is a negative zero.
    Ieee,
    /// "FN", finite (E4M3FN): no infinities; only all-ones exponent and mantissa (`0x7F`,
    /// `0xFF`) is NaN, the rest of the all-ones exponent holds normal numbers; there is a
    /// negative zero.
    FiniteNan,
    /// "FNUZ", finite with an unsigned zero (E4M3FNUZ, E5M2FNUZ): no infinities and no negative
    /// zero; its pattern `0x80` is the only NaN. Every other pattern is a number.
    Fnuz,
    /// No special encodings (Tesla's CFP8): no infinities and no NaN, every pattern is a finite
    /// number; there is a negative zero (`0x80`). NaN inputs encode as +0, and out-of-range
    /// values and infinities saturate to ±max under every [`Overflow`] rule.
    None,
}

/// What [`Format::encode`] does with values whose rounded magnitude exceeds the largest finite
/// value of the format, and with infinities. NaN gives NaN, whatever the rule, in the formats
/// that have one, and +0 in [`Specials::None`] formats. Formats with neither infinities nor NaN
/// ([`Specials::None`]) saturate to ±max under every rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Out-of-range values and infinities become ±max (ONNX `Cast` with `saturate=1`).
    Clamp,
    /// Out-of-range finite values become ±max; ±inf stays ±inf where the format has
    /// infinities, and becomes ±max where it has none (the IR's `convert`).
    ClampFinite,
    /// Out-of-range values and infinities become ±inf where the format has infinities, NaN
    /// where it has none but has a NaN (ONNX `Cast` with `saturate=0`), and ±max in
    /// [`Specials::None`] formats, which have neither.
    Special,
}

/// An 8-bit float format: 1 sign bit, `exponent_bits` + `mantissa_bits` = 7, an exponent bias
/// and a [`Specials`] rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Format {
    exponent_bits: u32,
    mantissa_bits: u32,
    bias: i32,
    specials: Specials,
}

/// `2^k` for `-1022 <= k <= 1023`, exactly.
fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

impl Format {
    /// ONNX `FLOAT8E4M3FN`.
    pub const E4M3FN: Format = Format {
        exponent_bits: 4,
        mantissa_bits: 3,
        bias: 7,
        specials: Specials::FiniteNan,
    };
    /// ONNX `FLOAT8E4M3FNUZ`.
    pub const E4M3FNUZ: Format = Format {
        exponent_bits: 4,
        mantissa_bits: 3,
        bias: 8,
        specials: Specials::Fnuz,
    };
    /// ONNX `FLOAT8E5M2`.
    pub const E5M2: Format = Format {
        exponent_bits: 5,
        mantissa_bits: 2,
        bias: 15,
        specials: Specials::Ieee,
    };
    /// ONNX `FLOAT8E5M2FNUZ`.
    pub const E5M2FNUZ: Format = Format {
        exponent_bits: 5,
        mantissa_bits: 2,
        bias: 16,
        specials: Specials::Fnuz,
    };
    /// Tesla CFP8 CFloat8_1_4_3 at the IR's default bias, 7 (IR `cf8e4m3`).
    pub const CF8E4M3: Format = Format {
        exponent_bits: 4,
        mantissa_bits: 3,
        bias: 7,
        specials: Specials::None,
    };
    /// Tesla CFP8 CFloat8_1_5_2 at the IR's default bias, 15 (IR `cf8e5m2`).
    pub const CF8E5M2: Format = Format {
        exponent_bits: 5,
        mantissa_bits: 2,
        bias: 15,
        specials: Specials::None,
    };

    /// CFloat8_1_4_3 with exponent bias `bias`, or `None` above 63. See the module doc for how
    /// it relates to the default-bias [`Format::CF8E4M3`].
    pub const fn cf8e4m3(bias: u8) -> Option<Format> {
        Format::CF8E4M3.with_bias(bias)
    }

    /// CFloat8_1_5_2 with exponent bias `bias`, or `None` above 63.
    pub const fn cf8e5m2(bias: u8) -> Option<Format> {
        Format::CF8E5M2.with_bias(bias)
    }

    /// The same format (widths and specials) with exponent bias `bias`, or `None` above 63.
    pub const fn with_bias(self, bias: u8) -> Option<Format> {
        Format::new(self.exponent_bits, bias as i32, self.specials)
    }

    /// A format with `exponent_bits` in 2..=6 (the mantissa takes the remaining bits, at least
    /// one) and `bias` in 0..=63, or `None` outside those ranges (where decoded values would no
    /// longer all be exact f32s).
    pub const fn new(exponent_bits: u32, bias: i32, specials: Specials) -> Option<Format> {
        if exponent_bits < 2 || exponent_bits > 6 || bias < 0 || bias > 63 {
            return None;
        }
        Some(Format {
            exponent_bits,
            mantissa_bits: 7 - exponent_bits,
            bias,
            specials,
        })
    }

    pub const fn exponent_bits(self) -> u32 {
        self.exponent_bits
    }

    pub const fn mantissa_bits(self) -> u32 {
        self.mantissa_bits
    }

    pub const fn bias(self) -> i32 {
        self.bias
    }

    pub const fn specials(self) -> Specials {
        self.specials
    }

    /// Whether the format has infinities.
    pub const fn has_inf(self) -> bool {
        matches!(self.specials, Specials::Ieee)
    }

    /// The all-ones exponent field.
    const fn exp_all_ones(self) -> u8 {
        ((1u32 << self.exponent_bits) - 1) as u8
    }

    /// The all-ones mantissa field.
    const fn mant_all_ones(self) -> u8 {
        ((1u32 << self.mantissa_bits) - 1) as u8
    }

    /// The sign bit for a negative value, else 0.
    const fn sign(negative: bool) -> u8 {
        if negative { 0x80 } else { 0 }
    }

    /// The pattern of the largest finite value, negated when `negative`.
    pub const fn max_bits(self, negative: bool) -> u8 {
        let m = self.mantissa_bits;
        let pos = match self.specials {
            Specials::Ieee => ((self.exp_all_ones() - 1) << m) | self.mant_all_ones(),
            Specials::FiniteNan => 0x7E,
            Specials::Fnuz | Specials::None => 0x7F,
        };
        pos | Self::sign(negative)
    }

    /// The pattern of ±inf, where the format has infinities.
    pub const fn inf_bits(self, negative: bool) -> Option<u8> {
        match self.specials {
            Specials::Ieee => {
                Some((self.exp_all_ones() << self.mantissa_bits) | Self::sign(negative))
            }
            Specials::FiniteNan | Specials::Fnuz | Specials::None => None,
        }
    }

    /// The canonical NaN (with the sign bit set when `negative`, where the format allows it):
    /// the quiet NaN `S.1..1.10..0` for [`Specials::Ieee`] (`0x7E` for E5M2, as numpy's
    /// `ml_dtypes` writes it), `S.1111111` for [`Specials::FiniteNan`], `0x80` for
    /// [`Specials::Fnuz`]; `None` for [`Specials::None`], which has no NaN.
    pub const fn nan_bits(self, negative: bool) -> Option<u8> {
        match self.specials {
            Specials::Ieee => {
                let m = self.mantissa_bits;
                Some((self.exp_all_ones() << m) | (1 << (m - 1)) | Self::sign(negative))
            }
            Specials::FiniteNan => Some(0x7F | Self::sign(negative)),
            Specials::Fnuz => Some(0x80),
            Specials::None => None,
        }
    }

    /// Whether the format has a NaN.
    pub const fn has_nan(self) -> bool {
        self.nan_bits(false).is_some()
    }

    /// The greatest (`negative` false) or least value: ±inf where the format has infinities,
    /// else ±max. These are the identities of max and min.
    pub const fn extreme_bits(self, negative: bool) -> u8 {
        match self.inf_bits(negative) {
            Some(b) => b,
            None => self.max_bits(negative),
        }
    }

    /// Whether `bits` is a NaN.
    pub const fn is_nan(self, bits: u8) -> bool {
        match self.specials {
            Specials::Ieee => {
                (bits >> self.mantissa_bits) & self.exp_all_ones() == self.exp_all_ones()
                    && bits & self.mant_all_ones() != 0
            }
            Specials::FiniteNan => bits & 0x7F == 0x7F,
            Specials::Fnuz => bits == 0x80,
            Specials::None => false,
        }
    }

    /// Whether `bits` is ±inf.
    pub const fn is_inf(self, bits: u8) -> bool {
        match self.inf_bits(false) {
            Some(inf) => bits & 0x7F == inf,
            None => false,
        }
    }

    /// The exact value of `bits`.
    pub fn decode(self, bits: u8) -> f32 {
        let negative = bits & 0x80 != 0;
        let magnitude = if self.is_nan(bits) {
            f32::NAN
        } else if self.is_inf(bits) {
            f32::INFINITY
        } else {
            let m = self.mantissa_bits as i32;
            let e = ((bits >> m) & self.exp_all_ones()) as i32;
            let mant = (bits & self.mant_all_ones()) as f64;
            let v = if e == 0 {
                mant * pow2(1 - self.bias - m)
            } else {
                (mant + pow2(m)) * pow2(e - self.bias - m)
            };
            // Exact: at most 4 significant bits, exponent within f32's range for bias <= 63.
            v as f32
        };
        if negative { -magnitude } else { magnitude }
    }

    /// The largest finite value.
    pub fn max(self) -> f32 {
        self.decode(self.max_bits(false))
    }

    /// The magnitude halfway between the largest finite value and the next value the format
    /// would have with one more exponent value: the least magnitude that rounds out of range,
    /// if [`Format::overflow_at_bound`], else the greatest that does not.
    pub fn overflow_bound(self) -> f64 {
        let m = self.mantissa_bits as i32;
        let e = ((self.max_bits(false) >> m) & self.exp_all_ones()) as i32;
        self.max() as f64 + pow2(e - self.bias - m - 1)
    }

    /// Whether [`Format::overflow_bound`] itself rounds out of range: the tie goes to the even
    /// neighbour, which is the out-of-range one when the largest finite value's mantissa is odd.
    pub fn overflow_at_bound(self) -> bool {
        self.max_bits(false) & 1 == 1
    }

    /// `x` rounded to nearest, ties to even, with out-of-range values and infinities treated
    /// as `overflow` says. NaN gives [`Format::nan_bits`] with `x`'s sign, and +0 in a format
    /// without NaN ([`Specials::None`]); zero keeps its sign but in [`Specials::Fnuz`] formats
    /// (no negative zero), as does a value rounding to zero.
    pub fn encode(self, x: f64, overflow: Overflow) -> u8 {
        let negative = x.is_sign_negative();
        let sign = Self::sign(negative);
        if x.is_nan() {
            // No pattern stands for NaN in `Specials::None`: +0, as float to int gives 0.
            return self.nan_bits(negative).unwrap_or(0x00);
        }
        let max = self.max_bits(negative);
        let out_of_range = |infinite: bool| match (overflow, self.inf_bits(negative)) {
            (Overflow::Clamp, _) | (Overflow::ClampFinite, None) => max,
            (Overflow::ClampFinite, Some(inf)) if infinite => inf,
            (Overflow::ClampFinite, Some(_)) => max,
            (Overflow::Special, Some(inf)) => inf,
            // Neither inf nor NaN (`Specials::None`): saturate whatever the rule.
            (Overflow::Special, None) => self.nan_bits(negative).unwrap_or(max),
        };
        let a = x.abs();
        if a.is_infinite() {
            return out_of_range(true);
        }
        let m = self.mantissa_bits as i32;
        let emin = 1 - self.bias;
        // The exponent of `a` (f64 subnormals are far below `emin`), at least `emin`.
        let e = ((a.to_bits() >> 52) as i32 - 1023).max(emin);
        // `a / q` is exact (a power-of-two scaling into [0, 2^(m+1))), so this rounds once.
        let q = pow2(e - m);
        let n = (a / q).round_ties_even();
        if n * q > self.max() as f64 {
            return out_of_range(false);
        }
        if n == 0.0 {
            return match self.specials {
                Specials::Fnuz => 0,
                Specials::Ieee | Specials::FiniteNan | Specials::None => sign,
            };
        }
        // Rounding up may carry into the next binade.
        let (e, n) = if n == pow2(m + 1) {
            (e + 1, pow2(m))
        } else {
            (e, n)
        };
        let n = n as u8;
        if n < 1 << m {
            // Subnormal (only when e == emin): exponent field 0.
            sign | n
        } else {
            sign | (((e + self.bias) as u8) << m) | (n - (1 << m))
        }
    }
}

/// An 8-bit float type: a newtype over its bit pattern with a constant [`Format`].
pub trait Float8: Element {
    /// The format of the type.
    const FORMAT: Format;
    fn from_bits(bits: u8) -> Self;
    fn to_bits(self) -> u8;
}

/// Defines an 8-bit float newtype, with value semantics for `==`/`<` (NaN unordered, -0 == +0),
/// `Debug`/`Display` of its value, and its [`Element`] impl.
macro_rules! float8_type {
    ($($(#[$doc:meta])* $name:ident = $format:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Default)]
        #[repr(transparent)]
        pub struct $name(pub u8);

        impl $name {
            /// The format of this type.
            pub const FORMAT: Format = Format::$format;
            /// The largest finite value.
            pub const MAX: Self = Self(Self::FORMAT.max_bits(false));
            /// The least finite value (`-MAX`).
            pub const MIN: Self = Self(Self::FORMAT.max_bits(true));
            pub const ZERO: Self = Self(0);

            pub const fn from_bits(bits: u8) -> Self {
                Self(bits)
            }
            pub const fn to_bits(self) -> u8 {
                self.0
            }
            pub const fn from_le_bytes(bytes: [u8; 1]) -> Self {
                Self(bytes[0])
            }
            pub const fn to_le_bytes(self) -> [u8; 1] {
                [self.0]
            }
            /// The exact value.
            pub fn to_f32(self) -> f32 {
                Self::FORMAT.decode(self.0)
            }
            /// `x` converted as by the IR's `convert` ([`Overflow::ClampFinite`]).
            pub fn from_f32(x: f32) -> Self {
                Self::from_f64(x as f64)
            }
            /// `x` converted as by the IR's `convert` ([`Overflow::ClampFinite`]).
            pub fn from_f64(x: f64) -> Self {
                Self(Self::FORMAT.encode(x, Overflow::ClampFinite))
            }
            pub const fn is_nan(self) -> bool {
                Self::FORMAT.is_nan(self.0)
            }
            pub const fn is_infinite(self) -> bool {
                Self::FORMAT.is_inf(self.0)
            }
        }

        impl Float8 for $name {
            const FORMAT: Format = Format::$format;
            fn from_bits(bits: u8) -> Self {
                Self(bits)
            }
            fn to_bits(self) -> u8 {
                self.0
            }
        }

        impl PartialEq for $name {
            /// By value: NaN equals nothing, -0 equals +0.
            fn eq(&self, other: &Self) -> bool {
                self.to_f32() == other.to_f32()
            }
        }

        impl PartialOrd for $name {
            /// By value: NaN is unordered.
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                self.to_f32().partial_cmp(&other.to_f32())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.to_f32(), f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.to_f32(), f)
            }
        }

        impl Element for $name {
            const DTYPE: DType = DType::$name;
            fn wrap(data: Arc<[Self]>) -> Data {
                Data::$name(data)
            }
            fn unwrap(data: &Data) -> Option<&Arc<[Self]>> {
                match data {
                    Data::$name(v) => Some(v),
                    _ => None,
                }
            }
            fn to_f64(self) -> f64 {
                self.to_f32() as f64
            }
            fn from_f64(v: f64) -> Self {
                $name::from_f64(v)
            }
        }
    )*};
}

float8_type! {
    /// ONNX `FLOAT8E4M3FN` (IR `f8e4m3fn`): 4 exponent bits, 3 mantissa bits, bias 7, finite,
    /// NaN `S.1111.111`.
    F8E4M3FN = E4M3FN;
    /// ONNX `FLOAT8E4M3FNUZ` (IR `f8e4m3fnuz`): 4 exponent bits, 3 mantissa bits, bias 8,
    /// finite, no negative zero, NaN `0x80`.
    F8E4M3FNUZ = E4M3FNUZ;
    /// ONNX `FLOAT8E5M2` (IR `f8e5m2`): 5 exponent bits, 2 mantissa bits, bias 15, IEEE-style
    /// infinities and NaNs.
    F8E5M2 = E5M2;
    /// ONNX `FLOAT8E5M2FNUZ` (IR `f8e5m2fnuz`): 5 exponent bits, 2 mantissa bits, bias 16,
    /// finite, no negative zero, NaN `0x80`.
    F8E5M2FNUZ = E5M2FNUZ;
    /// Tesla CFP8 CFloat8_1_4_3 at bias 7 (IR `cf8e4m3`): 4 exponent bits, 3 mantissa bits, no
    /// inf, no NaN (every pattern is a finite number, `0x80` is -0), largest 480.
    CF8E4M3 = CF8E4M3;
    /// Tesla CFP8 CFloat8_1_5_2 at bias 15 (IR `cf8e5m2`): 5 exponent bits, 2 mantissa bits, no
    /// inf, no NaN, largest 114688.
    CF8E5M2 = CF8E5M2;
}

/// The canonical NaN (`NAN`) of the float8 types that have one; the CFP8 types have none.
macro_rules! float8_nan {
    ($($name:ident),*) => {$(
        impl $name {
            /// The canonical NaN.
            pub const NAN: Self = match Self::FORMAT.nan_bits(false) {
                Some(bits) => Self(bits),
                // Evaluated at compile time: a type listed here without a NaN does not build.
                None => panic!(concat!(stringify!($name), " has no NaN")),
            };
        }
    )*};
}
float8_nan!(F8E4M3FN, F8E4M3FNUZ, F8E5M2, F8E5M2FNUZ);

#[cfg(test)]
mod tests {
    use super::*;

    const FORMATS: [Format; 6] = [
        Format::E4M3FN,
        Format::E4M3FNUZ,
        Format::E5M2,
        Format::E5M2FNUZ,
        Format::CF8E4M3,
        Format::CF8E5M2,
    ];

    const OVERFLOWS: [Overflow; 3] = [Overflow::Clamp, Overflow::ClampFinite, Overflow::Special];

    /// The value of `bits` derived from the format rules with integer arithmetic (every value
    /// of these formats is a multiple of 2^-24, so `value * 2^24` is an exact integer), as
    /// opposed to `decode`'s float arithmetic; specials spelled out per format.
    fn reference(f: Format, bits: u8) -> f64 {
        let (m, bias) = (f.mantissa_bits as i32, f.bias);
        let (negative, magnitude) = (bits & 0x80 != 0, bits & 0x7F);
        let special = match f.specials {
            Specials::FiniteNan => (magnitude == 0x7F).then_some(f64::NAN),
            Specials::Fnuz => (bits == 0x80).then_some(f64::NAN),
            Specials::None => None,
            Specials::Ieee => match magnitude >> m {
                e if e == (1 << f.exponent_bits) - 1 => Some(if magnitude & 3 == 0 {
                    f64::INFINITY
                } else {
                    f64::NAN
                }),
                _ => None,
            },
        };
        let v = special.unwrap_or_else(|| {
            let (e, mant) = ((magnitude >> m) as i32, (magnitude & ((1 << m) - 1)) as i64);
            let scaled = if e == 0 {
                mant << (24 + 1 - bias - m)
            } else {
                ((1 << m) + mant) << (24 + e - bias - m)
            };
            scaled as f64 / (1u64 << 24) as f64
        });
        if negative { -v } else { v }
    }

    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
    }

    #[test]
    fn every_pattern_decodes_by_the_format_rules() {
        for f in FORMATS {
            for b in 0..=255u8 {
                let (got, want) = (f.decode(b) as f64, reference(f, b));
                assert!(same(got, want), "{f:?} {b:#04x}: {got} vs {want}");
                assert_eq!(f.is_nan(b), want.is_nan(), "{f:?} {b:#04x}");
                assert_eq!(f.is_inf(b), want.is_infinite(), "{f:?} {b:#04x}");
            }
            // Positive patterns up to max increase strictly; NaN and inf counts per format.
            let max = f.max_bits(false);
            assert!((1..=max).all(|b| f.decode(b) > f.decode(b - 1)), "{f:?}");
            let nans = (0..=255u8).filter(|&b| f.is_nan(b)).count();
            let infs = (0..=255u8).filter(|&b| f.is_inf(b)).count();
            let expected = match f.specials {
                Specials::Ieee => (6, 2),
                Specials::FiniteNan => (2, 0),
                Specials::Fnuz => (1, 0),
                Specials::None => (0, 0),
            };
            assert_eq!((nans, infs), expected, "{f:?}");
        }
    }

    #[test]
    fn known_values() {
        let e4 = Format::E4M3FN;
        assert_eq!(
            (e4.max(), e4.decode(1), e4.decode(0x38), e4.decode(0x08)),
            (448.0, 2f32.powi(-9), 1.0, 2f32.powi(-6))
        );
        assert_eq!(e4.decode(0x80).to_bits(), (-0.0f32).to_bits());
        assert_eq!((e4.max_bits(true), e4.decode(0xFE)), (0xFE, -448.0));
        let e4uz = Format::E4M3FNUZ;
        assert_eq!(
            (e4uz.max(), e4uz.decode(1), e4uz.decode(0x40)),
            (240.0, 2f32.powi(-10), 1.0)
        );
        let e5 = Format::E5M2;
        assert_eq!(
            (e5.max(), e5.decode(1), e5.decode(0x3C), e5.decode(0x7C)),
            (57344.0, 2f32.powi(-16), 1.0, f32::INFINITY)
        );
        assert_eq!(e5.decode(0xFC), f32::NEG_INFINITY);
        let e5uz = Format::E5M2FNUZ;
        assert_eq!(
            (e5uz.max(), e5uz.decode(1), e5uz.decode(0x40)),
            (57344.0, 2f32.powi(-17), 1.0)
        );
        let (n, x) = (None, Some);
        assert_eq!(
            FORMATS.map(|f| f.nan_bits(false)),
            [x(0x7F), x(0x80), x(0x7E), x(0x80), n, n]
        );
        assert_eq!(
            FORMATS.map(|f| f.nan_bits(true)),
            [x(0xFF), x(0x80), x(0xFE), x(0x80), n, n]
        );
    }

    /// The CFP8 numbers from the format definition: the largest finite value is the all-ones
    /// pattern `0x7F`, `(2^m + 2^m - 1) · 2^(2^e - 1 - bias - m)`, the least subnormal
    /// `2^(1 - bias - m)`.
    #[test]
    fn cfp8_known_values() {
        let e4 = Format::CF8E4M3;
        assert_eq!(
            (e4.bias(), e4.exponent_bits(), e4.mantissa_bits()),
            (7, 4, 3)
        );
        assert_eq!(e4.max(), ((8 + 7) * (1 << (15 - 7 - 3))) as f32);
        assert_eq!(
            (e4.max(), e4.decode(1), e4.decode(0x38), e4.decode(0x78)),
            (480.0, 2f32.powi(-9), 1.0, 256.0)
        );
        assert_eq!((e4.decode(0xFF), e4.max_bits(true)), (-480.0, 0xFF));
        let e5 = Format::CF8E5M2;
        assert_eq!(
            (e5.bias(), e5.exponent_bits(), e5.mantissa_bits()),
            (15, 5, 2)
        );
        assert_eq!(e5.max(), (7 * (1 << 14)) as f32);
        assert_eq!(
            (e5.max(), e5.decode(1), e5.decode(0x3C), e5.decode(0x7C)),
            (114688.0, 2f32.powi(-16), 1.0, 65536.0)
        );
        for f in [e4, e5] {
            // -0 at 0x80, every pattern a finite number, 255 distinct values (+0 == -0).
            assert_eq!(f.decode(0x80).to_bits(), (-0.0f32).to_bits());
            assert!((0..=255u8).all(|b| f.decode(b).is_finite()));
            assert!(!f.has_inf() && !f.has_nan());
            assert_eq!(f.extreme_bits(false), 0x7F);
            assert_eq!(f.extreme_bits(true), 0xFF);
            assert!(f.overflow_at_bound());
        }
        assert_eq!(e4.overflow_bound(), 496.0);
        assert_eq!(e5.overflow_bound(), 122880.0);
    }

    #[test]
    fn cfp8_nan_is_zero_and_everything_out_of_range_saturates() {
        for f in [Format::CF8E4M3, Format::CF8E5M2] {
            for o in OVERFLOWS {
                assert_eq!(f.encode(f64::NAN, o), 0x00, "{f:?} {o:?}");
                assert_eq!(f.encode(-f64::NAN, o), 0x00, "{f:?} {o:?}");
                assert_eq!(f.encode(f64::INFINITY, o), 0x7F, "{f:?} {o:?}");
                assert_eq!(f.encode(f64::NEG_INFINITY, o), 0xFF, "{f:?} {o:?}");
                assert_eq!(f.encode(f64::MAX, o), 0x7F, "{f:?} {o:?}");
                assert_eq!(f.encode(-f.overflow_bound(), o), 0xFF, "{f:?} {o:?}");
                let below = f.overflow_bound().next_down();
                assert_eq!(f.encode(below, o), 0x7F, "{f:?} {o:?}");
            }
        }
        // 490 is nearer 480 than the (virtual) 512; 500 nearer 512, saturated.
        let e4 = Format::CF8E4M3;
        assert_eq!(e4.encode(490.0, Overflow::Special), 0x7F);
        assert_eq!(e4.encode(-500.0, Overflow::Special), 0xFF);
        // 1 + 1/16 ties between 1 (0x38) and 1.125 (0x39): even, 0x38.
        assert_eq!(e4.encode(1.0625, Overflow::Special), 0x38);
        assert_eq!(e4.encode(1.1875, Overflow::Special), 0x3A);
    }

    #[test]
    fn cfp8_bias_constructors() {
        assert_eq!(Format::cf8e4m3(7), Some(Format::CF8E4M3));
        assert_eq!(Format::cf8e5m2(15), Some(Format::CF8E5M2));
        assert_eq!(Format::cf8e4m3(64), None);
        assert_eq!(Format::cf8e5m2(255), None);
        let f = Format::cf8e5m2(63).unwrap();
        assert_eq!(
            (f.bias(), f.exponent_bits(), f.specials()),
            (63, 5, Specials::None)
        );
        assert_eq!(Format::cf8e4m3(0).unwrap().max(), 480.0 * 128.0);
        assert_eq!(Format::CF8E4M3.with_bias(8).unwrap().decode(0x40), 1.0);
        assert_eq!(
            Format::E4M3FN.with_bias(8),
            Format::new(4, 8, Specials::FiniteNan)
        );
        assert_eq!(Format::E4M3FN.with_bias(64), None);
    }

    /// Decoding at bias `b` is the default-bias value times `2^(d-b)`, for every pattern.
    #[test]
    fn cfp8_bias_scales_values_by_a_power_of_two() {
        for d in [Format::CF8E4M3, Format::CF8E5M2] {
            for b in 0..=63u8 {
                let f = d.with_bias(b).unwrap();
                let scale = pow2(d.bias() - b as i32);
                for bits in 0..=255u8 {
                    let (got, want) = (f.decode(bits) as f64, d.decode(bits) as f64 * scale);
                    assert_eq!(got.to_bits(), want.to_bits(), "{f:?} {bits:#04x}");
                }
            }
        }
    }

    proptest::proptest! {
        /// Encoding `x` at bias `b` is encoding `x · 2^(b-d)` at the default bias `d` (the
        /// module doc's equivalence), under every overflow rule.
        #[test]
        fn cfp8_bias_commutes_with_encoding(
            x in proptest::num::f64::ANY,
            b in 0u8..=63,
            wide in proptest::bool::ANY,
            o in proptest::sample::select(OVERFLOWS.to_vec()),
        ) {
            let d = if wide { Format::CF8E5M2 } else { Format::CF8E4M3 };
            let f = d.with_bias(b).unwrap();
            let scaled = x * pow2(b as i32 - d.bias());
            proptest::prop_assert_eq!(f.encode(x, o), d.encode(scaled, o));
        }

        /// The same, for values on, between and halfway between (ties) a pattern's value and
        /// the next larger magnitude (past ±max too), where rounding and saturation act.
        #[test]
        fn cfp8_bias_commutes_with_encoding_on_the_grid(
            bits in proptest::num::u8::ANY,
            quarters in 0u32..=8,
            b in 0u8..=63,
            wide in proptest::bool::ANY,
            o in proptest::sample::select(OVERFLOWS.to_vec()),
        ) {
            let d = if wide { Format::CF8E5M2 } else { Format::CF8E4M3 };
            let f = d.with_bias(b).unwrap();
            let v = f.decode(bits) as f64;
            // The next larger magnitude (a virtual one past max: the same step again).
            let next = if bits & 0x7F == 0x7F {
                2.0 * v - f.decode(bits - 1) as f64
            } else {
                f.decode(bits + 1) as f64
            };
            let x = v + (next - v) * quarters as f64 / 4.0;
            let scaled = x * pow2(b as i32 - d.bias());
            proptest::prop_assert_eq!(f.encode(x, o), d.encode(scaled, o));
        }
    }

    #[test]
    fn encode_inverts_decode() {
        for f in FORMATS {
            for b in (0..=255u8).filter(|&b| !f.is_nan(b)) {
                let x = f.decode(b) as f64;
                assert_eq!(f.encode(x, Overflow::ClampFinite), b, "{f:?} {b:#04x}");
                assert_eq!(f.encode(x, Overflow::Special), b, "{f:?} {b:#04x}");
                if !f.is_inf(b) {
                    assert_eq!(f.encode(x, Overflow::Clamp), b, "{f:?} {b:#04x}");
                }
            }
            for o in OVERFLOWS {
                match f.specials {
                    // No NaN: +0, whatever the sign.
                    Specials::None => {
                        assert_eq!(f.encode(f64::NAN, o), 0);
                        assert_eq!(f.encode(-f64::NAN, o), 0);
                    }
                    _ => {
                        assert!(f.is_nan(f.encode(f64::NAN, o)));
                        assert!(f.is_nan(f.encode(-f64::NAN, o)));
                    }
                }
            }
        }
    }

    #[test]
    fn ties_go_to_even() {
        for f in FORMATS {
            let max = f.max_bits(false);
            for b in 0..max {
                let (lo, hi) = (f.decode(b) as f64, f.decode(b + 1) as f64);
                let mid = (lo + hi) / 2.0;
                let even = if b & 1 == 0 { b } else { b + 1 };
                for (x, want) in [(mid, even), (mid.next_down(), b), (mid.next_up(), b + 1)] {
                    assert_eq!(f.encode(x, Overflow::Special), want, "{f:?} {x}");
                    let neg = f.encode(-x, Overflow::Special);
                    let want_neg = match (f.specials, want) {
                        (Specials::Fnuz, 0) => 0,
                        _ => want | 0x80,
                    };
                    assert_eq!(neg, want_neg, "{f:?} {}", -x);
                }
            }
        }
        // Examples: 17 lies halfway between 16 and 18 in E4M3 (16 is even); 0.75 + 2^-3 lies
        // between 0.75 (0x3A) and 1.0 (0x3C) in E5M2: 1.0 has the even mantissa.
        assert_eq!(
            Format::E4M3FN.decode(Format::E4M3FN.encode(17.0, Overflow::Clamp)),
            16.0
        );
        assert_eq!(Format::E5M2.encode(0.875, Overflow::Clamp), 0x3B);
        assert_eq!(Format::E5M2.encode(0.9375, Overflow::Clamp), 0x3C);
    }

    #[test]
    fn underflow_and_zeros() {
        for f in FORMATS {
            let tiny = f.decode(1) as f64;
            let neg_zero = match f.specials {
                Specials::Fnuz => 0x00,
                _ => 0x80,
            };
            for o in [Overflow::Clamp, Overflow::ClampFinite, Overflow::Special] {
                assert_eq!(f.encode(0.0, o), 0);
                assert_eq!(f.encode(-0.0, o), neg_zero, "{f:?}");
                assert_eq!(f.encode(tiny / 2.0, o), 0, "{f:?}");
                assert_eq!(f.encode((tiny / 2.0).next_up(), o), 1, "{f:?}");
                assert_eq!(f.encode(-tiny / 4.0, o), neg_zero, "{f:?}");
                assert_eq!(f.encode(1e-320, o), 0, "{f:?}");
                assert_eq!(f.encode(-f64::MIN_POSITIVE, o), neg_zero, "{f:?}");
            }
        }
    }

    #[test]
    fn overflow_rules() {
        for f in FORMATS {
            let (max, min) = (f.max_bits(false), f.max_bits(true));
            let bound = f.overflow_bound();
            let special =
                |negative| f.encode(if negative { -1e300 } else { 1e300 }, Overflow::Special);
            // Special: ±inf (E5M2), NaN, or ±max where there is neither (CFP8), including for
            // ±inf inputs.
            match (f.inf_bits(false), f.has_nan()) {
                (Some(inf), _) => assert_eq!((special(false), special(true)), (inf, inf | 0x80)),
                (None, true) => assert!(f.is_nan(special(false)) && f.is_nan(special(true))),
                (None, false) => assert_eq!((special(false), special(true)), (max, min)),
            }
            assert_eq!(f.encode(f64::INFINITY, Overflow::Special), special(false));
            assert_eq!(
                f.encode(f64::NEG_INFINITY, Overflow::Special),
                special(true)
            );
            // The bound: just below rounds to max, just above overflows, the tie goes to even.
            assert_eq!(f.encode(bound.next_down(), Overflow::Special), max, "{f:?}");
            assert_eq!(f.encode(bound.next_up(), Overflow::Special), special(false));
            let at = f.encode(bound, Overflow::Special);
            if special(false) != max {
                assert_eq!(at == special(false), f.overflow_at_bound(), "{f:?}");
                assert_eq!(at == max, !f.overflow_at_bound(), "{f:?}");
            } else {
                assert_eq!(at, max, "{f:?}");
            }
            // Clamp: everything out of range, infinities included, to ±max.
            for (x, want) in [
                (1e300, max),
                (-1e300, min),
                (f64::INFINITY, max),
                (f64::NEG_INFINITY, min),
            ] {
                assert_eq!(f.encode(x, Overflow::Clamp), want, "{f:?} {x}");
            }
            // ClampFinite: finite values to ±max, infinities stay where the format has them.
            assert_eq!(f.encode(f64::MAX, Overflow::ClampFinite), max);
            assert_eq!(f.encode(-bound * 2.0, Overflow::ClampFinite), min);
            let inf = f.encode(f64::INFINITY, Overflow::ClampFinite);
            assert_eq!(inf, f.inf_bits(false).unwrap_or(max), "{f:?}");
        }
        // E4M3FN: 464 is the tie between 448 and (virtual) 480, and goes to 448.
        assert_eq!(
            (
                Format::E4M3FN.overflow_bound(),
                Format::E4M3FN.overflow_at_bound()
            ),
            (464.0, false)
        );
        assert_eq!(
            (
                Format::E5M2.overflow_bound(),
                Format::E5M2.overflow_at_bound()
            ),
            (61440.0, true)
        );
        assert_eq!(Format::E4M3FNUZ.overflow_bound(), 248.0);
    }

    #[test]
    fn configurable_formats() {
        assert_eq!(Format::new(4, 7, Specials::FiniteNan), Some(Format::E4M3FN));
        assert_eq!(Format::new(5, 16, Specials::Fnuz), Some(Format::E5M2FNUZ));
        assert_eq!(Format::new(4, 64, Specials::Ieee), None);
        assert_eq!(Format::new(4, -1, Specials::Ieee), None);
        assert_eq!(Format::new(7, 3, Specials::Ieee), None);
        assert_eq!(Format::new(1, 3, Specials::Ieee), None);
        for e in 2..=6 {
            for bias in 0..=63 {
                for s in [
                    Specials::Ieee,
                    Specials::FiniteNan,
                    Specials::Fnuz,
                    Specials::None,
                ] {
                    let f = Format::new(e, bias, s).unwrap();
                    for b in (0..=255u8).filter(|&b| !f.is_nan(b)) {
                        let x = f.decode(b);
                        assert_eq!(f.encode(x as f64, Overflow::ClampFinite), b, "{f:?} {b}");
                    }
                    let max = f.max_bits(false);
                    assert!((1..=max).all(|b| f.decode(b) > f.decode(b - 1)), "{f:?}");
                }
            }
        }
    }

    #[test]
    fn newtypes_compare_by_value() {
        let (z, nz) = (F8E4M3FN(0), F8E4M3FN(0x80));
        assert!(z == nz && z.partial_cmp(&nz) == Some(Ordering::Equal));
        assert!(F8E4M3FN::NAN != F8E4M3FN::NAN);
        assert!(F8E4M3FN::NAN.partial_cmp(&z).is_none());
        assert!(F8E5M2::MIN < F8E5M2::MAX && F8E5M2(0x7C) > F8E5M2::MAX);
        assert!(F8E5M2(0x7C).is_infinite() && !F8E5M2::MAX.is_infinite());
        assert_eq!(F8E4M3FNUZ::default().to_f32(), 0.0);
        assert_eq!(
            format!("{} {:?}", F8E4M3FN::MAX, F8E5M2FNUZ(1)),
            "448 7.6293945e-6"
        );
        assert_eq!(F8E4M3FN::from_f32(1000.0).0, 0x7E);
        assert_eq!(F8E5M2::from_f64(f64::NEG_INFINITY).0, 0xFC);
        assert_eq!(F8E4M3FNUZ::from_f32(f32::INFINITY).0, 0x7F);
        assert_eq!(<F8E5M2FNUZ as Element>::to_f64(F8E5M2FNUZ::MAX), 57344.0);
        // CFP8: -0 == +0, every pattern ordered, NaN in gives +0, inf in saturates.
        assert!(CF8E4M3(0) == CF8E4M3(0x80) && CF8E4M3::MIN < CF8E4M3::MAX);
        assert!(!CF8E5M2(0x7C).is_infinite() && !CF8E5M2(0x7E).is_nan());
        assert!(CF8E5M2(0x7C) < CF8E5M2::MAX);
        assert_eq!(
            format!("{} {:?}", CF8E4M3::MAX, CF8E5M2::MIN),
            "480 -114688.0"
        );
        assert_eq!(CF8E4M3::from_f32(f32::NAN).0, 0x00);
        assert_eq!(CF8E5M2::from_f64(-f64::NAN).0, 0x00);
        assert_eq!(CF8E4M3::from_f32(f32::NEG_INFINITY).0, 0xFF);
        assert_eq!(CF8E5M2::from_f64(1e300).0, 0x7F);
        assert_eq!(<CF8E5M2 as Element>::DTYPE, DType::CF8E5M2);
        assert_eq!(<CF8E4M3 as Float8>::FORMAT, Format::CF8E4M3);
    }
}
