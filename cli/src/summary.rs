//! One-line summaries of tensors for the terminal.

use terafab_ir::tensor::Element;
use terafab_ir::{Tensor, with_data};

/// How many leading values a summary shows.
const SHOWN: usize = 6;

/// `min=-0.5 max=0.75 mean=0.1 values=[0.1, -0.5, ...]` for numbers (plus `nan=K` when there are
/// NaNs; the other statistics skip them), `true=K/N values=[...]` for bools, `empty` for no elements.
pub fn summarize(t: &Tensor) -> String {
    if t.is_empty() {
        return "empty".to_string();
    }
    let dtype = t.dtype();
    let mut parts = Vec::new();
    if dtype.is_bool() {
        let trues = t
            .as_slice::<bool>()
            .map_or(0, |v| v.iter().filter(|b| **b).count());
        parts.push(format!("true={trues}/{}", t.len()));
    } else {
        let (mut min, mut max, mut sum, mut count, mut nans) =
            (f64::INFINITY, f64::NEG_INFINITY, 0.0f64, 0usize, 0usize);
        with_data!(t.data(), v, _T => {
            for x in v.iter() {
                let x = Element::to_f64(*x);
                if x.is_nan() {
                    nans += 1;
                } else {
                    min = min.min(x);
                    max = max.max(x);
                    sum += x;
                    count += 1;
                }
            }
        });
        if count > 0 {
            let fmt_extreme = |x: f64| {
                if dtype.is_float() {
                    fmt_float(x)
                } else {
                    // Integers convert to f64 exactly up to 2^53; i128 prints them without a fraction.
                    format!("{}", x as i128)
                }
            };
            parts.push(format!("min={}", fmt_extreme(min)));
            parts.push(format!("max={}", fmt_extreme(max)));
            parts.push(format!("mean={}", fmt_float(sum / count as f64)));
        }
        if nans > 0 {
            parts.push(format!("nan={nans}"));
        }
    }
    let shown: Vec<String> = if dtype.is_float() {
        with_data!(t.data(), v, _T => v.iter().take(SHOWN).map(|x| fmt_float(Element::to_f64(*x))).collect())
    } else {
        with_data!(t.data(), v, _T => v.iter().take(SHOWN).map(|x| x.to_string()).collect())
    };
    let more = if t.len() > SHOWN { ", ..." } else { "" };
    parts.push(format!("values=[{}{more}]", shown.join(", ")));
    parts.join(" ")
}

/// A float with 4 decimals (trailing zeros dropped), or in scientific notation below 0.01 and
/// from a million up.
pub fn fmt_float(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if x == 0.0 {
        return "0".to_string();
    }
    let a = x.abs();
    if (1e-2..1e6).contains(&a) {
        let s = format!("{x:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{x:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats() {
        let t = Tensor::from_vec(vec![2, 2], vec![1.0f32, -0.5, f32::NAN, 2.25]).unwrap();
        assert_eq!(
            summarize(&t),
            "min=-0.5 max=2.25 mean=0.9167 nan=1 values=[1, -0.5, nan, 2.25]"
        );
    }

    #[test]
    fn ints_bools_and_empty() {
        let t = Tensor::from_vec(vec![8], (0..8i64).collect()).unwrap();
        assert_eq!(
            summarize(&t),
            "min=0 max=7 mean=3.5 values=[0, 1, 2, 3, 4, 5, ...]"
        );
        let b = Tensor::from_vec(vec![3], vec![true, false, true]).unwrap();
        assert_eq!(summarize(&b), "true=2/3 values=[true, false, true]");
        assert_eq!(
            summarize(&Tensor::zeros(terafab_ir::DType::F32, &[0, 3]).unwrap()),
            "empty"
        );
    }

    #[test]
    fn float_formatting() {
        assert_eq!(fmt_float(1e-7), "1.000e-7");
        assert_eq!(fmt_float(-123456789.0), "-1.235e8");
        assert_eq!(fmt_float(0.1), "0.1");
        assert_eq!(fmt_float(0.001234), "1.234e-3");
        assert_eq!(fmt_float(f64::NEG_INFINITY), "-inf");
    }
}
