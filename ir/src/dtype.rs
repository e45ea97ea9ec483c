//! Element types.
//!
//! Every tensor in terafab has one element type. Conversions between them follow
//! the rules of [`crate::interp`]'s `convert` (round-to-nearest-even into f16/bf16,
//! truncation toward zero with saturation from float to integer, NaN -> 0; into float8,
//! nearest even with finite overflow saturating, see [`crate::float8`]; into the CFP8 types,
//! which have no inf and no NaN, infinities saturate to ±max too and NaN gives +0).

use std::fmt;
use std::str::FromStr;

use crate::float8::Format;

/// An element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    /// 8-bit floats (see [`crate::float8`]).
    F8E4M3FN,
    F8E4M3FNUZ,
    F8E5M2,
    F8E5M2FNUZ,
    /// Tesla's configurable 8-bit floats (CFP8) at their default biases: no inf, no NaN.
    CF8E4M3,
    CF8E5M2,
    I8,
    I16,
    I32,
    I64,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    /// Every element type, in a fixed order (used by tests and generators).
    pub const ALL: [DType; 19] = [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3FN,
        DType::F8E4M3FNUZ,
        DType::F8E5M2,
        DType::F8E5M2FNUZ,
        DType::CF8E4M3,
        DType::CF8E5M2,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// The name used in the text form (`f32`, `bf16`, `i64`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3FN => "f8e4m3fn",
            DType::F8E4M3FNUZ => "f8e4m3fnuz",
            DType::F8E5M2 => "f8e5m2",
            DType::F8E5M2FNUZ => "f8e5m2fnuz",
            DType::CF8E4M3 => "cf8e4m3",
            DType::CF8E5M2 => "cf8e5m2",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }

    /// Size of one element in bytes (bool is stored as one byte).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => 1,
            DType::CF8E4M3 | DType::CF8E5M2 => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16) || self.is_float8()
    }

    /// The 8-bit float types: the four ONNX ones and the two CFP8 ones.
    pub fn is_float8(self) -> bool {
        self.float8_format().is_some()
    }

    /// The format of an 8-bit float type.
    pub fn float8_format(self) -> Option<Format> {
        match self {
            DType::F8E4M3FN => Some(Format::E4M3FN),
            DType::F8E4M3FNUZ => Some(Format::E4M3FNUZ),
            DType::F8E5M2 => Some(Format::E5M2),
            DType::F8E5M2FNUZ => Some(Format::E5M2FNUZ),
            DType::CF8E4M3 => Some(Format::CF8E4M3),
            DType::CF8E5M2 => Some(Format::CF8E5M2),
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 | DType::Bool => None,
            DType::I8 | DType::I16 | DType::I32 | DType::I64 => None,
            DType::U8 | DType::U16 | DType::U32 | DType::U64 => None,
        }
    }

    /// Whether the type holds infinities (f64, f32, f16, bf16, f8e5m2).
    pub fn has_inf(self) -> bool {
        match self.float8_format() {
            Some(f) => f.has_inf(),
            None => self.is_float(),
        }
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
    }

    pub fn is_unsigned_int(self) -> bool {
        matches!(self, DType::U8 | DType::U16 | DType::U32 | DType::U64)
    }

    pub fn is_int(self) -> bool {
        self.is_signed_int() || self.is_unsigned_int()
    }

    pub fn is_bool(self) -> bool {
        self == DType::Bool
    }

    /// Numeric types: everything but bool.
    pub fn is_numeric(self) -> bool {
        !self.is_bool()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown element type name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown element type `{0}` (expected one of f64 f32 f16 bf16 f8e4m3fn f8e4m3fnuz f8e5m2 f8e5m2fnuz cf8e4m3 cf8e5m2 i8 i16 i32 i64 u8 u16 u32 u64 bool)"
)]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DType::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in DType::ALL {
            assert_eq!(d.name().parse::<DType>().unwrap(), d);
        }
        assert!("f8".parse::<DType>().is_err());
        assert_eq!("cf8e4m3".parse::<DType>(), Ok(DType::CF8E4M3));
        assert_eq!("cf8e5m2".parse::<DType>(), Ok(DType::CF8E5M2));
        assert!(
            "cf8"
                .parse::<DType>()
                .unwrap_err()
                .to_string()
                .contains("cf8e5m2")
        );
    }

    #[test]
    fn cfp8_types() {
        for d in [DType::CF8E4M3, DType::CF8E5M2] {
            assert!(d.is_float() && d.is_float8() && !d.has_inf());
            assert_eq!(d.size_bytes(), 1);
        }
        assert_eq!(DType::CF8E4M3.float8_format(), Some(Format::CF8E4M3));
        assert_eq!(DType::CF8E5M2.float8_format(), Some(Format::CF8E5M2));
        assert_eq!(DType::ALL.iter().filter(|d| d.is_float8()).count(), 6);
    }

    #[test]
    fn classes_partition() {
        for d in DType::ALL {
            let n = [d.is_float(), d.is_int(), d.is_bool()]
                .iter()
                .filter(|b| **b)
                .count();
            assert_eq!(n, 1, "{d}");
        }
    }
}
