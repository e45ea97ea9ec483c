//! Shapes: static and named symbolic dimensions, and numpy broadcasting.
//!
//! Broadcasting rules live here and nowhere else: shapes are aligned on the
//! right, and two dims are compatible when they are equal or one of them is 1.
//! A symbolic dim is only known equal to itself; broadcasting a symbol against
//! a static dim other than 1 is an error (it cannot be proven compatible).

use std::fmt;

/// One dimension of a shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    /// A known extent.
    Static(usize),
    /// A named extent bound at run time (an ONNX `dim_param`), e.g. `N`.
    Sym(String),
}

impl Dim {
    pub fn as_static(&self) -> Option<usize> {
        match self {
            Dim::Static(n) => Some(*n),
            Dim::Sym(_) => None,
        }
    }

    pub fn is_one(&self) -> bool {
        matches!(self, Dim::Static(1))
    }
}

impl From<usize> for Dim {
    fn from(n: usize) -> Self {
        Dim::Static(n)
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Static(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
        }
    }
}

/// A shape: a list of dims, possibly symbolic. Rank 0 is a scalar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    pub fn new(dims: Vec<Dim>) -> Self {
        Shape(dims)
    }

    pub fn scalar() -> Self {
        Shape(Vec::new())
    }

    pub fn from_static(dims: &[usize]) -> Self {
        Shape(dims.iter().map(|&d| Dim::Static(d)).collect())
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// The static extents, or `None` if any dim is symbolic.
    pub fn as_static(&self) -> Option<Vec<usize>> {
        self.0.iter().map(Dim::as_static).collect()
    }

    pub fn is_static(&self) -> bool {
        self.0.iter().all(|d| d.as_static().is_some())
    }

    /// Number of elements if static (saturating at `usize::MAX` is avoided: overflow gives `None`).
    pub fn num_elements(&self) -> Option<usize> {
        self.0
            .iter()
            .try_fold(1usize, |acc, d| acc.checked_mul(d.as_static()?))
    }

    /// Replace symbolic dims using `bind`; dims it does not know stay symbolic.
    pub fn substitute(&self, bind: &dyn Fn(&str) -> Option<usize>) -> Shape {
        Shape(
            self.0
                .iter()
                .map(|d| match d {
                    Dim::Sym(s) => bind(s).map(Dim::Static).unwrap_or_else(|| d.clone()),
                    _ => d.clone(),
                })
                .collect(),
        )
    }
}

impl fmt::Display for Shape {
    /// `[2,3,N]`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Why two shapes do not broadcast.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shapes {lhs} and {rhs} do not broadcast: dim {lhs_dim} vs {rhs_dim}")]
pub struct BroadcastError {
    pub lhs: Shape,
    pub rhs: Shape,
    pub lhs_dim: Dim,
    pub rhs_dim: Dim,
}

/// The numpy broadcast of two (possibly symbolic) shapes.
pub fn broadcast_shapes(a: &Shape, b: &Shape) -> Result<Shape, BroadcastError> {
    let rank = a.rank().max(b.rank());
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        // Index from the right; missing dims count as 1.
        let da = dim_from_right(a, rank, i);
        let db = dim_from_right(b, rank, i);
        let d = if da == db || db.is_one() {
            da
        } else if da.is_one() {
            db
        } else {
            return Err(BroadcastError {
                lhs: a.clone(),
                rhs: b.clone(),
                lhs_dim: da,
                rhs_dim: db,
            });
        };
        out.push(d);
    }
    Ok(Shape(out))
}

fn dim_from_right(s: &Shape, rank: usize, i: usize) -> Dim {
    let off = rank - s.rank();
    if i < off {
        Dim::Static(1)
    } else {
        s.0[i - off].clone()
    }
}

/// The numpy broadcast of two static shapes.
pub fn broadcast_static(a: &[usize], b: &[usize]) -> Result<Vec<usize>, BroadcastError> {
    let s = broadcast_shapes(&Shape::from_static(a), &Shape::from_static(b))?;
    Ok(s.as_static()
        .expect("static inputs give a static broadcast"))
}

/// Row-major (C order) strides in elements for a static shape.
pub fn row_major_strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![0; dims.len()];
    let mut acc = 1usize;
    for i in (0..dims.len()).rev() {
        strides[i] = acc;
        acc = acc.saturating_mul(dims[i]);
    }
    strides
}

/// Strides (in elements) with which a tensor of shape `from` is read when it
/// is broadcast to `to` (numpy rules): 0 on broadcast dims.
/// `from` must broadcast to `to` (checked by the caller).
pub fn broadcast_strides(from: &[usize], to: &[usize]) -> Vec<usize> {
    let base = row_major_strides(from);
    let off = to.len() - from.len();
    (0..to.len())
        .map(|i| {
            if i < off || from[i - off] == 1 && to[i] != 1 {
                0
            } else {
                base[i - off]
            }
        })
        .collect()
}

/// Normalize a possibly negative axis (`-1` is the last) against `rank`.
pub fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(d: &[usize]) -> Shape {
        Shape::from_static(d)
    }

    #[test]
    fn broadcast_numpy_rules() {
        assert_eq!(
            broadcast_static(&[2, 1, 4], &[3, 1]).unwrap(),
            vec![2, 3, 4]
        );
        assert_eq!(broadcast_static(&[], &[5]).unwrap(), vec![5]);
        assert_eq!(broadcast_static(&[0, 1], &[1, 7]).unwrap(), vec![0, 7]);
        assert!(broadcast_static(&[2, 3], &[4, 3]).is_err());
    }

    #[test]
    fn broadcast_symbolic() {
        let a = Shape(vec![Dim::Sym("N".into()), Dim::Static(1)]);
        let b = s(&[1, 8]);
        assert_eq!(
            broadcast_shapes(&a, &b).unwrap(),
            Shape(vec![Dim::Sym("N".into()), Dim::Static(8)])
        );
        let c = Shape(vec![Dim::Sym("M".into()), Dim::Static(8)]);
        assert!(broadcast_shapes(&a, &c).is_err());
        assert!(broadcast_shapes(&a, &a).is_ok());
    }

    #[test]
    fn strides() {
        assert_eq!(row_major_strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(broadcast_strides(&[3, 1], &[2, 3, 4]), vec![0, 1, 0]);
        assert_eq!(normalize_axis(-1, 3), Some(2));
        assert_eq!(normalize_axis(3, 3), None);
        assert_eq!(normalize_axis(-4, 3), None);
    }

    #[test]
    fn num_elements_overflow_is_none() {
        assert_eq!(s(&[usize::MAX, 2]).num_elements(), None);
        assert_eq!(s(&[]).num_elements(), Some(1));
    }
}
