//! Numerics of the tile accelerator's element types: CFP8 in its two layouts with a
//! configurable exponent bias, bf16, rounding (nearest-even or stochastic), the random bit
//! source used by stochastic rounding, and `erf`.
//!
//! # CFP8
//!
//! A CFP8 byte is `S EEEE MMM` ([`Cfp8Layout::E4M3`], "CFloat8_1_4_3") or `S EEEEE MM`
//! ([`Cfp8Layout::E5M2`], "CFloat8_1_5_2"), with an exponent bias `b` in 0..=63 chosen per
//! operand. With `m` mantissa bits, exponent field `E` and mantissa field `M`:
//!
//! * `E = 0`: subnormal, `(-1)^S · M · 2^(1-b-m)`;
//! * otherwise: normal, `(-1)^S · (2^m + M) · 2^(E-b-m)`.
//!
//! There are no infinities and no NaNs: every one of the 256 codes is a finite number (`0x80`
//! is `-0.0`). Every value of every bias is exactly an f32, so decoding is exact.
//!
//! Encoding ([`Cfp8::encode`]) rounds the exact value once, to nearest with ties to even
//! ([`Rounding::NearestEven`]) or stochastically ([`Rounding::Stochastic`]); magnitudes at or
//! beyond the largest finite value (and ±inf) saturate to ±max; NaN encodes as `+0` (`0x00`).
//! The sign is kept, also for values that round to zero (`-0`).

use half::bf16;

/// The two CFP8 layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cfp8Layout {
    /// 1 sign, 4 exponent, 3 mantissa bits (CFloat8_1_4_3).
    E4M3,
    /// 1 sign, 5 exponent, 2 mantissa bits (CFloat8_1_5_2).
    E5M2,
}

impl Cfp8Layout {
    /// Width of the exponent field.
    pub const fn exponent_bits(self) -> u32 {
        match self {
            Cfp8Layout::E4M3 => 4,
            Cfp8Layout::E5M2 => 5,
        }
    }

    /// Width of the mantissa field.
    pub const fn mantissa_bits(self) -> u32 {
        7 - self.exponent_bits()
    }

    /// The conventional bias used when a text form names the layout without one
    /// (7 for 1-4-3, 15 for 1-5-2, as the IEEE-like formats).
    pub const fn default_bias(self) -> u8 {
        match self {
            Cfp8Layout::E4M3 => 7,
            Cfp8Layout::E5M2 => 15,
        }
    }
}

/// How a value is rounded into a narrower type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Round to nearest, ties to even.
    NearestEven,
    /// Stochastic rounding driven by 32 random bits `r`: a value between two neighbours
    /// rounds away from zero (to the larger magnitude) when `frac · 2^32 > r`, where `frac` in
    /// [0, 1) is its position between them; so it rounds up with probability `frac`.
    Stochastic(u32),
}

/// A CFP8 format: a layout and an exponent bias in 0..=63.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cfp8 {
    layout: Cfp8Layout,
    bias: u8,
}

/// `2^k` exactly, for `-1022 <= k <= 1023`.
fn pow2(k: i32) -> f64 {
    let k = k.clamp(-1022, 1023);
    f64::from_bits(((k + 1023) as u64) << 52)
}

impl Cfp8 {
    /// The largest allowed bias.
    pub const MAX_BIAS: u8 = 63;

    /// A format, or `None` when `bias > 63`.
    pub const fn new(layout: Cfp8Layout, bias: u8) -> Option<Cfp8> {
        if bias > Self::MAX_BIAS {
            None
        } else {
            Some(Cfp8 { layout, bias })
        }
    }

    /// The layout.
    pub const fn layout(self) -> Cfp8Layout {
        self.layout
    }

    /// The exponent bias.
    pub const fn bias(self) -> u8 {
        self.bias
    }

    /// The exact value of `code`.
    pub fn decode(self, code: u8) -> f32 {
        let m = self.layout.mantissa_bits();
        let e_field = u32::from(code & 0x7F) >> m;
        let mant = u32::from(code) & ((1 << m) - 1);
        let b = i32::from(self.bias);
        let mi = m as i32;
        let v = if e_field == 0 {
            f64::from(mant) * pow2(1 - b - mi)
        } else {
            f64::from((1 << m) + mant) * pow2(e_field as i32 - b - mi)
        };
        let v = v as f32;
        if code & 0x80 != 0 { -v } else { v }
    }

    /// The 256 decoded values, indexed by code.
    pub fn table(self) -> [f32; 256] {
        let mut t = [0.0f32; 256];
        for (code, slot) in (0u8..=255).zip(t.iter_mut()) {
            *slot = self.decode(code);
        }
        t
    }

    /// The largest finite value (code `0x7F`).
    pub fn max_value(self) -> f32 {
        self.decode(0x7F)
    }

    /// The smallest positive value (code `0x01`, a subnormal).
    pub fn min_positive(self) -> f32 {
        self.decode(0x01)
    }

    /// Encodes `x` with round-to-nearest-even.
    pub fn encode_rne(self, x: f32) -> u8 {
        self.encode(x, Rounding::NearestEven)
    }

    /// Encodes `x` (see the module doc for the rules).
    pub fn encode(self, x: f32, rounding: Rounding) -> u8 {
        if x.is_nan() {
            return 0;
        }
        let sign: u8 = if x.is_sign_negative() { 0x80 } else { 0 };
        let a = f64::from(x).abs();
        if a == 0.0 {
            return sign;
        }
        if a >= f64::from(self.max_value()) {
            return sign | 0x7F;
        }
        let m = self.layout.mantissa_bits() as i32;
        let b = i32::from(self.bias);
        let min_normal_exp = 1 - b;
        // f32 values are normal as f64, so the biased exponent field gives floor(log2 a).
        let e = ((a.to_bits() >> 52) & 0x7FF) as i32 - 1023;
        let qexp = e.max(min_normal_exp) - m;
        // Exact: scaling by a power of two; n < 2^(m+1).
        let n = a * pow2(-qexp);
        let fl = n.floor();
        let frac = n - fl;
        let fl_int = fl as u64;
        let up = match rounding {
            Rounding::NearestEven => frac > 0.5 || (frac == 0.5 && fl_int % 2 == 1),
            Rounding::Stochastic(r) => frac * 4_294_967_296.0 > f64::from(r),
        };
        let k = fl_int + u64::from(up);
        if k == 0 {
            return sign;
        }
        let one = 1u64 << m;
        let (e_field, mant) = if e < min_normal_exp && k < one {
            (0i32, k)
        } else {
            let mut ee = qexp + m;
            let mut kk = k;
            if kk >= 2 * one {
                kk >>= 1;
                ee += 1;
            }
            (ee + b, kk - one)
        };
        let e_max = (1i32 << self.layout.exponent_bits()) - 1;
        if e_field > e_max {
            return sign | 0x7F;
        }
        sign | ((e_field as u8) << m) | (mant as u8)
    }
}

/// bf16 bits of `x`: nearest-even (NaN stays NaN, overflow gives ±inf, as IEEE) or stochastic
/// (the 16 dropped bits plus 16 random bits carry into the kept ones; inf and NaN unchanged).
pub fn bf16_encode(x: f32, rounding: Rounding) -> u16 {
    match rounding {
        Rounding::NearestEven => bf16::from_f32(x).to_bits(),
        Rounding::Stochastic(r) => {
            if !x.is_finite() {
                return bf16::from_f32(x).to_bits();
            }
            // For finite x this cannot overflow a u32 (the exponent carries at most into inf).
            let bits = x.to_bits().wrapping_add(r & 0xFFFF);
            (bits >> 16) as u16
        }
    }
}

/// The f32 value of bf16 bits (exact).
pub fn bf16_decode(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// A small deterministic random bit generator (SplitMix64), the source of stochastic rounding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next 32 random bits (the high half of [`Rng::next_u64`]).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// The error function, to about 1e-15 relative accuracy: its Maclaurin series below 2.5,
/// `1 - erfc` by a continued fraction from 2.5 to 6, and ±1 beyond.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 2.5 {
        let x2 = a * a;
        let mut term = a;
        let mut sum = a;
        for n in 1..200 {
            term *= -x2 / f64::from(n);
            let add = term / f64::from(2 * n + 1);
            sum += add;
            if add.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a < 6.0 {
        let mut f = a;
        for k in (1..=80).rev() {
            f = a + (f64::from(k) / 2.0) / f;
        }
        1.0 - (-a * a).exp() / (std::f64::consts::PI.sqrt() * f)
    } else {
        1.0
    };
    if x < 0.0 { -r } else { r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_formats() -> Vec<Cfp8> {
        let mut v = Vec::new();
        for layout in [Cfp8Layout::E4M3, Cfp8Layout::E5M2] {
            for bias in 0..=63 {
                v.extend(Cfp8::new(layout, bias));
            }
        }
        v
    }

    #[test]
    fn every_code_round_trips_for_every_bias() {
        for f in all_formats() {
            for code in 0u8..=255 {
                let v = f.decode(code);
                assert!(v.is_finite(), "{f:?} {code:#x}");
                assert_eq!(f.encode_rne(v), code, "{f:?} code {code:#04x} value {v}");
            }
        }
    }

    #[test]
    fn decoding_is_monotone_and_known_values() {
        let e4 = Cfp8::new(Cfp8Layout::E4M3, 7).unwrap();
        assert_eq!(e4.decode(0x38), 1.0); // E=7, M=0
        assert_eq!(e4.max_value(), 480.0); // 1.875 * 2^8: no specials in the top binade
        assert_eq!(e4.min_positive(), 2f32.powi(-9));
        let e5 = Cfp8::new(Cfp8Layout::E5M2, 15).unwrap();
        assert_eq!(e5.decode(0x3C), 1.0);
        assert_eq!(e5.max_value(), 1.75 * 65536.0);
        assert_eq!(e5.min_positive(), 2f32.powi(-16));
        assert_eq!(e5.decode(0x80).to_bits(), (-0.0f32).to_bits());
        for f in all_formats() {
            for code in 0u8..0x7F {
                assert!(f.decode(code) < f.decode(code + 1));
            }
        }
    }

    #[test]
    fn bias_scales_by_powers_of_two() {
        for layout in [Cfp8Layout::E4M3, Cfp8Layout::E5M2] {
            for bias in 0..63 {
                let f = Cfp8::new(layout, bias).unwrap();
                let g = Cfp8::new(layout, bias + 1).unwrap();
                for code in 0u8..=255 {
                    assert_eq!(g.decode(code), f.decode(code) / 2.0);
                }
            }
        }
        assert!(Cfp8::new(Cfp8Layout::E4M3, 64).is_none());
    }

    #[test]
    fn ties_go_to_even() {
        for f in all_formats() {
            for code in 0u8..0x7F {
                let lo = f.decode(code);
                let hi = f.decode(code + 1);
                let mid = (f64::from(lo) + f64::from(hi)) / 2.0;
                let mid32 = mid as f32;
                if f64::from(mid32) != mid {
                    continue; // midpoint not representable in f32 (cannot happen for bias<=63)
                }
                let even = if code % 2 == 0 { code } else { code + 1 };
                assert_eq!(
                    f.encode_rne(mid32),
                    even,
                    "{f:?} between {code:#x} and next"
                );
                assert_eq!(f.encode_rne(-mid32), even | 0x80);
            }
        }
    }

    #[test]
    fn saturation_and_specials() {
        for f in all_formats() {
            let max = f.max_value();
            assert_eq!(f.encode_rne(max * 2.0), 0x7F);
            assert_eq!(f.encode_rne(f32::INFINITY), 0x7F);
            assert_eq!(f.encode_rne(f32::NEG_INFINITY), 0xFF);
            assert_eq!(f.encode_rne(f32::MAX), 0x7F);
            assert_eq!(f.encode_rne(f32::NAN), 0x00);
            assert_eq!(f.encode_rne(-0.0), 0x80);
            assert_eq!(f.encode_rne(0.0), 0x00);
        }
    }

    #[test]
    fn denormals() {
        for f in all_formats() {
            let tiny = f.min_positive();
            assert_eq!(f.encode_rne(tiny), 0x01);
            // Half the smallest subnormal is a tie between 0 (even) and 0x01.
            assert_eq!(f.encode_rne(tiny / 2.0), 0x00);
            assert_eq!(f.encode_rne(-tiny / 2.0), 0x80);
            // Just above half rounds up.
            assert_eq!(f.encode_rne(tiny * 0.5000001), 0x01);
            // 1.5 × tiny is a tie between 0x01 and 0x02 → 0x02.
            assert_eq!(f.encode_rne(tiny * 1.5), 0x02);
            // The largest subnormal and the smallest normal are adjacent.
            let m = f.layout().mantissa_bits();
            let largest_sub = ((1u32 << m) - 1) as u8;
            assert_eq!(f.decode(largest_sub + 1), tiny * (1 << m) as f32);
        }
    }

    #[test]
    fn stochastic_rounding_brackets_and_is_unbiased_in_the_mean() {
        let f = Cfp8::new(Cfp8Layout::E4M3, 7).unwrap();
        let x = 1.0f32 + 0.125 * 0.25; // a quarter of the way from 1.0 to 1.125
        let mut rng = super::Rng::new(42);
        let mut ups = 0;
        let n = 20_000;
        for _ in 0..n {
            let c = f.encode(x, Rounding::Stochastic(rng.next_u32()));
            assert!(c == 0x38 || c == 0x39);
            if c == 0x39 {
                ups += 1;
            }
        }
        let p = f64::from(ups) / f64::from(n);
        assert!((p - 0.25).abs() < 0.02, "p = {p}");
        // Exact values never move.
        assert_eq!(f.encode(1.0, Rounding::Stochastic(0)), 0x38);
        assert_eq!(f.encode(1.0, Rounding::Stochastic(u32::MAX)), 0x38);
        // bf16: a quarter of the way between two neighbours.
        let x = f32::from_bits(0x3F80_4000);
        assert_eq!(bf16_encode(x, Rounding::Stochastic(0)), 0x3F80);
        assert_eq!(bf16_encode(x, Rounding::Stochastic(0xC000)), 0x3F81);
        assert_eq!(bf16_encode(x, Rounding::Stochastic(0xBFFF)), 0x3F80);
    }

    #[test]
    fn erf_known_values() {
        let cases = [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.6, 0.999_763_965_583_461_4),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
            (-1.0, -0.842_700_792_949_714_9),
        ];
        for (x, want) in cases {
            let got = erf(x);
            assert!((got - want).abs() < 1e-14, "erf({x}) = {got}, want {want}");
        }
        assert_eq!(erf(10.0), 1.0);
    }

    proptest! {
        #[test]
        fn rne_picks_the_nearest_code(bits in any::<u32>(), bias in 0u8..=63, e5 in any::<bool>()) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite());
            let layout = if e5 { Cfp8Layout::E5M2 } else { Cfp8Layout::E4M3 };
            let f = Cfp8::new(layout, bias).unwrap();
            let c = f.encode_rne(x);
            let v = f64::from(f.decode(c));
            let xd = f64::from(x);
            prop_assert_eq!(c & 0x80 != 0, x.is_sign_negative());
            if xd.abs() >= f64::from(f.max_value()) {
                prop_assert_eq!(c & 0x7F, 0x7F);
            } else {
                // No other code is strictly nearer.
                let err = (v - xd).abs();
                for other in 0u8..=255 {
                    let ov = f64::from(f.decode(other));
                    prop_assert!((ov - xd).abs() >= err, "{} nearer than {}", ov, v);
                }
            }
        }

        #[test]
        fn stochastic_lands_on_a_neighbour(bits in any::<u32>(), r in any::<u32>(), bias in 0u8..=63) {
            let x = f32::from_bits(bits);
            prop_assume!(x.is_finite());
            let f = Cfp8::new(Cfp8Layout::E5M2, bias).unwrap();
            let c = f.encode(x, Rounding::Stochastic(r));
            let v = f64::from(f.decode(c));
            let xd = f64::from(x).clamp(-f64::from(f.max_value()), f64::from(f.max_value()));
            // v is one of the two codes bracketing x.
            let down = f.encode(x, Rounding::Stochastic(u32::MAX));
            let vd = f64::from(f.decode(down));
            prop_assert!(vd.abs() <= xd.abs());
            prop_assert!(v.abs() >= vd.abs());
            prop_assert!(c == down || c == down.wrapping_add(1));
        }

        #[test]
        fn bf16_rne_matches_half(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            let b = bf16_encode(x, Rounding::NearestEven);
            prop_assert_eq!(b, half::bf16::from_f32(x).to_bits());
            if x.is_normal() {
                let d = bf16_decode(b);
                prop_assert!(d.is_infinite() || (f64::from(d) - f64::from(x)).abs() <= f64::from(x).abs() / 256.0);
            }
        }
    }
}
