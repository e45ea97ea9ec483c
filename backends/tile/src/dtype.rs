//! Element types the tile accelerator's engines read and write in SRAM and HBM.
//!
//! All are little-endian: f32 (4 bytes), bf16 (2 bytes), CFP8 (1 byte, see
//! [`crate::numerics`]). Engines compute in f32 and round once into the output type.

use std::fmt;
use std::str::FromStr;

use crate::numerics::{Cfp8, Cfp8Layout, Rounding, bf16_decode, bf16_encode};

/// An element type. A CFP8 type carries its exponent bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElemType {
    /// IEEE binary32.
    F32,
    /// bfloat16.
    Bf16,
    /// CFP8 with a layout and bias.
    Cfp8(Cfp8),
}

impl ElemType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            ElemType::F32 => 4,
            ElemType::Bf16 => 2,
            ElemType::Cfp8(_) => 1,
        }
    }

    /// The 9-bit code used in instruction words: bits 0-2 the kind (0 f32, 1 bf16,
    /// 2 CFP8 1-4-3, 3 CFP8 1-5-2), bits 3-8 the bias (zero for f32 and bf16).
    pub fn code(self) -> u64 {
        match self {
            ElemType::F32 => 0,
            ElemType::Bf16 => 1,
            ElemType::Cfp8(f) => {
                let kind = match f.layout() {
                    Cfp8Layout::E4M3 => 2,
                    Cfp8Layout::E5M2 => 3,
                };
                kind | (u64::from(f.bias()) << 3)
            }
        }
    }

    /// The type of a 9-bit code, or `None` for an invalid one.
    pub fn from_code(code: u64) -> Option<ElemType> {
        let kind = code & 7;
        let bias = code >> 3;
        if bias > 63 {
            return None;
        }
        match kind {
            0 if bias == 0 => Some(ElemType::F32),
            1 if bias == 0 => Some(ElemType::Bf16),
            2 => Cfp8::new(Cfp8Layout::E4M3, bias as u8).map(ElemType::Cfp8),
            3 => Cfp8::new(Cfp8Layout::E5M2, bias as u8).map(ElemType::Cfp8),
            _ => None,
        }
    }

    /// Whether storing into this type rounds (bf16 and CFP8).
    pub fn is_narrow(self) -> bool {
        !matches!(self, ElemType::F32)
    }

    /// Whether this is f32.
    pub fn is_f32(self) -> bool {
        matches!(self, ElemType::F32)
    }

    /// A decoder for this type (a table for CFP8).
    pub fn decoder(self) -> Decoder {
        match self {
            ElemType::F32 => Decoder::F32,
            ElemType::Bf16 => Decoder::Bf16,
            ElemType::Cfp8(f) => Decoder::Cfp8(Box::new(f.table())),
        }
    }

    /// Rounds `x` into this type and returns the stored value as f32 (what a later read sees).
    pub fn quantize(self, x: f32, rounding: Rounding) -> f32 {
        match self {
            ElemType::F32 => x,
            ElemType::Bf16 => bf16_decode(bf16_encode(x, rounding)),
            ElemType::Cfp8(f) => f.decode(f.encode(x, rounding)),
        }
    }

    /// Appends the little-endian bytes of `x` rounded into this type.
    pub fn encode_into(self, x: f32, rounding: Rounding, out: &mut Vec<u8>) {
        match self {
            ElemType::F32 => out.extend_from_slice(&x.to_le_bytes()),
            ElemType::Bf16 => out.extend_from_slice(&bf16_encode(x, rounding).to_le_bytes()),
            ElemType::Cfp8(f) => out.push(f.encode(x, rounding)),
        }
    }
}

/// Reads elements of one type as f32 values.
#[derive(Debug, Clone)]
pub enum Decoder {
    /// f32 elements.
    F32,
    /// bf16 elements.
    Bf16,
    /// CFP8 elements through their 256-entry table.
    Cfp8(Box<[f32; 256]>),
}

impl Decoder {
    /// Decodes `bytes` (a whole number of elements) into `out` (cleared first).
    pub fn decode(&self, bytes: &[u8], out: &mut Vec<f32>) {
        out.clear();
        match self {
            Decoder::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            ),
            Decoder::Bf16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|c| bf16_decode(u16::from_le_bytes([c[0], c[1]]))),
            ),
            Decoder::Cfp8(t) => out.extend(bytes.iter().map(|&b| t[usize::from(b)])),
        }
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElemType::F32 => f.write_str("f32"),
            ElemType::Bf16 => f.write_str("bf16"),
            ElemType::Cfp8(c) => {
                let l = match c.layout() {
                    Cfp8Layout::E4M3 => "143",
                    Cfp8Layout::E5M2 => "152",
                };
                write!(f, "cfp8_{l}({})", c.bias())
            }
        }
    }
}

impl FromStr for ElemType {
    type Err = String;

    /// `f32`, `bf16`, `cfp8_143`, `cfp8_152` (default biases 7 and 15), or with an explicit
    /// bias: `cfp8_143(9)`.
    fn from_str(s: &str) -> Result<ElemType, String> {
        let s = s.trim();
        match s {
            "f32" => return Ok(ElemType::F32),
            "bf16" => return Ok(ElemType::Bf16),
            _ => {}
        }
        let (head, bias) = match s.split_once('(') {
            Some((h, rest)) => {
                let num = rest
                    .strip_suffix(')')
                    .ok_or_else(|| format!("bad element type `{s}`: missing `)`"))?;
                let b: u8 = num
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad CFP8 bias `{num}` in `{s}`"))?;
                (h.trim(), Some(b))
            }
            None => (s, None),
        };
        let layout = match head {
            "cfp8_143" => Cfp8Layout::E4M3,
            "cfp8_152" => Cfp8Layout::E5M2,
            _ => {
                return Err(format!(
                    "unknown element type `{s}` (f32, bf16, cfp8_143(BIAS), cfp8_152(BIAS))"
                ));
            }
        };
        let bias = bias.unwrap_or(layout.default_bias());
        Cfp8::new(layout, bias)
            .map(ElemType::Cfp8)
            .ok_or_else(|| format!("CFP8 bias {bias} out of range 0..=63 in `{s}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for code in 0..512u64 {
            if let Some(t) = ElemType::from_code(code) {
                assert_eq!(t.code(), code);
                assert_eq!(t.to_string().parse::<ElemType>(), Ok(t));
            }
        }
        assert_eq!(ElemType::from_code(8), None); // f32 with a bias
        assert_eq!(ElemType::from_code(4), None);
        assert_eq!(
            "cfp8_152".parse::<ElemType>().map(|t| t.code()),
            Ok(3 | (15 << 3))
        );
        assert!("cfp8_143(64)".parse::<ElemType>().is_err());
        assert!("f16".parse::<ElemType>().is_err());
    }
}
