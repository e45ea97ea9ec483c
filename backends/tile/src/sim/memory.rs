//! Access patterns (up to 3-D strided byte regions), their overlap test, and the tracking
//! of accesses in flight that turns unordered conflicting accesses into errors.

/// `n2` blocks of `n1` rows of `len` bytes: row `(i2, i1)` starts at
/// `base + i2*s2 + i1*s1`. Counts are at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pattern {
    pub base: u64,
    pub len: u64,
    pub n1: u64,
    pub s1: u64,
    pub n2: u64,
    pub s2: u64,
}

/// Work limit of an exact overlap test; beyond it overlap is assumed (conservative).
const OVERLAP_WORK: u64 = 1 << 20;

impl Pattern {
    /// `n` rows of `len` bytes, `stride` apart.
    pub fn rows(base: u64, len: u64, n: u64, stride: u64) -> Pattern {
        Pattern {
            base,
            len,
            n1: n,
            s1: stride,
            n2: 1,
            s2: 0,
        }
    }

    /// One contiguous region.
    pub fn span(base: u64, len: u64) -> Pattern {
        Pattern::rows(base, len, 1, 0)
    }

    /// One past the highest byte touched, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        let e = u128::from(self.base)
            + u128::from(self.n1.saturating_sub(1)) * u128::from(self.s1)
            + u128::from(self.n2.saturating_sub(1)) * u128::from(self.s2)
            + u128::from(self.len);
        u64::try_from(e).ok()
    }

    /// Bytes transferred (rows × len), saturating.
    pub fn bytes(&self) -> u64 {
        self.len.saturating_mul(self.n1).saturating_mul(self.n2)
    }

    /// Calls `f` with the start offset of every row, in order.
    #[cfg(test)]
    pub fn for_each_row(&self, mut f: impl FnMut(u64)) {
        for i2 in 0..self.n2 {
            let b2 = self.base + i2 * self.s2;
            for i1 in 0..self.n1 {
                f(b2 + i1 * self.s1);
            }
        }
    }

    /// Whether any row of `self` meets `[lo, hi)`.
    fn hits(&self, lo: u64, hi: u64, work: &mut u64) -> bool {
        for i2 in 0..self.n2 {
            *work += 1;
            if *work > OVERLAP_WORK {
                return true;
            }
            let b2 = self.base + i2 * self.s2;
            // rows b2 + i1*s1 .. + len meet [lo, hi) iff b2 + i1*s1 < hi and
            // b2 + i1*s1 + len > lo.
            if self.s1 == 0 || self.n1 == 1 {
                if b2 < hi && b2 + self.len > lo {
                    return true;
                }
                continue;
            }
            let first = if lo + 1 > b2 + self.len {
                (lo + 1 - self.len - b2).div_ceil(self.s1)
            } else {
                0
            };
            let last_excl = if hi > b2 {
                (hi - b2).div_ceil(self.s1).min(self.n1)
            } else {
                0
            };
            if first < last_excl {
                return true;
            }
        }
        false
    }

    /// Whether the two patterns share a byte. Exact up to a work limit, conservative
    /// (`true`) beyond it. Both patterns must have a valid [`Pattern::end`].
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let (Some(ae), Some(be)) = (self.end(), other.end()) else {
            return true;
        };
        if ae <= other.base || be <= self.base || self.len == 0 || other.len == 0 {
            return false;
        }
        let (small, big) = if self.n1 * self.n2 <= other.n1 * other.n2 {
            (self, other)
        } else {
            (other, self)
        };
        let mut work = 0u64;
        let mut hit = false;
        let mut stop = false;
        small.for_each_row_until(|r| {
            if stop {
                return false;
            }
            if big.hits(r, r + small.len, &mut work) {
                hit = true;
                stop = true;
            }
            !stop
        });
        hit
    }

    fn for_each_row_until(&self, mut f: impl FnMut(u64) -> bool) {
        for i2 in 0..self.n2 {
            let b2 = self.base + i2 * self.s2;
            for i1 in 0..self.n1 {
                if !f(b2 + i1 * self.s1) {
                    return;
                }
            }
        }
    }
}

/// An access in flight until `end`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InFlight {
    pub pat: Pattern,
    pub write: bool,
    pub end: u64,
    pub node: usize,
    pub engine: usize,
    pub pc: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(a: &Pattern, b: &Pattern) -> bool {
        let mut bytes = std::collections::HashSet::new();
        a.for_each_row(|r| {
            for i in r..r + a.len {
                bytes.insert(i);
            }
        });
        let mut hit = false;
        b.for_each_row(|r| {
            for i in r..r + b.len {
                hit |= bytes.contains(&i);
            }
        });
        hit
    }

    #[test]
    fn overlap_matches_brute_force() {
        let mut pats = Vec::new();
        for base in [0u64, 3, 8, 17] {
            for len in [1u64, 4, 8] {
                for (n1, s1) in [(1u64, 0u64), (3, 8), (4, 16), (2, 5), (3, 0)] {
                    for (n2, s2) in [(1u64, 0u64), (2, 64), (2, 3)] {
                        pats.push(Pattern {
                            base,
                            len,
                            n1,
                            s1,
                            n2,
                            s2,
                        });
                    }
                }
            }
        }
        for a in &pats {
            for b in &pats {
                assert_eq!(a.overlaps(b), brute(a, b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn interleaved_rows_do_not_overlap() {
        // Even and odd rows of a 16-byte-pitch tile.
        let even = Pattern::rows(0, 8, 8, 16);
        let odd = Pattern::rows(8, 8, 8, 16);
        assert!(!even.overlaps(&odd));
        assert!(even.overlaps(&Pattern::span(119, 1)));
        assert!(!even.overlaps(&Pattern::span(120, 1)));
        assert_eq!(even.end(), Some(120));
    }
}
