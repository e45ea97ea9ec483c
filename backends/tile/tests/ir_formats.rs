//! The simulator's CFP8 and bf16 codecs agree with the IR's element types, so a tensor the
//! compiler rounds into `cf8e4m3` / `cf8e5m2` / `bf16` (the reference interpreter's semantics)
//! holds the same bytes the accelerator reads and writes: every code of every bias decodes to
//! the same value, and round-to-nearest-even encodes the same code for the codes themselves,
//! the midpoints between neighbours (ties), values beyond the largest, NaN, infinities, zeros
//! and random f32 values.

use proptest::prelude::*;
use terafab_ir::float8::{Format, Overflow};
use terafab_tile::Rounding;
use terafab_tile::numerics::{Cfp8, Cfp8Layout, bf16_decode, bf16_encode};

fn pair(layout: Cfp8Layout, bias: u8) -> (Cfp8, Format) {
    let ir = match layout {
        Cfp8Layout::E4M3 => Format::cf8e4m3(bias),
        Cfp8Layout::E5M2 => Format::cf8e5m2(bias),
    };
    (Cfp8::new(layout, bias).unwrap(), ir.unwrap())
}

fn same_encoding(tile: Cfp8, ir: Format, x: f32) {
    let t = tile.encode(x, Rounding::NearestEven);
    let i = ir.encode(f64::from(x), Overflow::ClampFinite);
    assert_eq!(t, i, "{x:e} ({tile:?})");
}

#[test]
fn every_code_and_every_boundary_of_every_bias_agrees() {
    for layout in [Cfp8Layout::E4M3, Cfp8Layout::E5M2] {
        for bias in 0..=Cfp8::MAX_BIAS {
            let (tile, ir) = pair(layout, bias);
            for code in 0..=255u8 {
                assert_eq!(
                    tile.decode(code).to_bits(),
                    ir.decode(code).to_bits(),
                    "{layout:?} bias {bias} code {code:#04x}"
                );
                same_encoding(tile, ir, tile.decode(code));
            }
            // Midpoints between neighbouring positive codes (ties go to the even code), just
            // beside them, and beyond the largest value.
            for code in 0..0x7Fu8 {
                let (lo, hi) = (
                    f64::from(tile.decode(code)),
                    f64::from(tile.decode(code + 1)),
                );
                let mid = ((lo + hi) / 2.0) as f32;
                for x in [mid, f32::from_bits(mid.to_bits() + 1), -mid] {
                    same_encoding(tile, ir, x);
                }
            }
            for x in [
                tile.max_value() * 1.01,
                f32::MAX,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                0.0,
                -0.0,
            ] {
                same_encoding(tile, ir, x);
            }
        }
    }
}

proptest! {
    #[test]
    fn random_values_encode_alike(bits in any::<u32>(), bias in 0u8..=63, wide in any::<bool>()) {
        let layout = if wide { Cfp8Layout::E5M2 } else { Cfp8Layout::E4M3 };
        let (tile, ir) = pair(layout, bias);
        same_encoding(tile, ir, f32::from_bits(bits));
    }

    #[test]
    fn bf16_matches_the_ir(bits in any::<u32>()) {
        let x = f32::from_bits(bits);
        let ir = half::bf16::from_f32(x);
        let tile = bf16_encode(x, Rounding::NearestEven);
        if x.is_nan() {
            prop_assert!(bf16_decode(tile).is_nan());
        } else {
            prop_assert_eq!(tile, ir.to_bits());
        }
    }
}
