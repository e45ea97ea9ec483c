//! Helpers shared by passes: rewiring the uses of values, and recognizing splat constants.

use std::collections::HashMap;

use terafab_ir::{Element, Function, Node, Region, Tensor, ValueId};

/// Make every use of `old` (node operands and region results, nested regions included) a use
/// of `new`; returns how many uses were rewritten. The node defining `old` stays (dead, for
/// `dce` to remove).
pub fn replace_all_uses(f: &mut Function, old: ValueId, new: ValueId) -> usize {
    replace_uses(f, &HashMap::from([(old, new)]))
}

/// [`replace_all_uses`] for many values at once: every use of a key of `map` becomes a use of
/// what it maps to, following chains (`a -> b`, `b -> c` makes uses of `a` uses of `c`).
/// Returns how many uses were rewritten.
pub fn replace_uses(f: &mut Function, map: &HashMap<ValueId, ValueId>) -> usize {
    if map.is_empty() {
        return 0;
    }
    replace_in_region(&mut f.body, map)
}

/// Follow `map` from `v` to a value it does not map (at most `map.len()` steps, so a cycle,
/// which no pass should create, cannot hang).
pub fn resolve(map: &HashMap<ValueId, ValueId>, mut v: ValueId) -> ValueId {
    for _ in 0..=map.len() {
        match map.get(&v) {
            Some(&next) if next != v => v = next,
            _ => break,
        }
    }
    v
}

/// [`replace_uses`] within one region (and its nested regions); returns how many uses changed.
pub fn replace_in_region(r: &mut Region, map: &HashMap<ValueId, ValueId>) -> usize {
    let mut count = 0;
    let mut rewrite = |v: &mut ValueId| {
        let to = resolve(map, *v);
        if to != *v {
            *v = to;
            count += 1;
        }
    };
    for node in &mut r.nodes {
        node.inputs.iter_mut().for_each(&mut rewrite);
    }
    r.results.iter_mut().for_each(&mut rewrite);
    for node in &mut r.nodes {
        for region in &mut node.regions {
            count += replace_in_region(region, map);
        }
    }
    count
}

/// Whether every element of `t` equals `c` converted to `t`'s element type (with the `convert`
/// rules), sign of zero included: `is_splat_of(t, -0.0)` is false for a tensor of `+0.0`, except
/// in types without a negative zero, where `-0.0` converts to `+0`. Meant for the exact values
/// `-0.0`, `0.0` and `1.0` (bool: `1.0` is `true`, `0.0` is `false`). Empty tensors count as
/// splats of anything.
pub fn is_splat_of(t: &Tensor, c: f64) -> bool {
    // `c` as the element type and back: the value the elements must have.
    let Ok(want) = Tensor::from_fn(t.dtype(), &[], |_| c) else {
        return false;
    };
    let want = want.to_f64_vec()[0].to_bits();
    terafab_ir::with_data!(t.data(), v, _T => v.iter().all(|x| Element::to_f64(*x).to_bits() == want))
}

/// Every value `n` uses: its operands, and the values its regions use (nested regions
/// included, region results too), in order, with repeats.
pub fn node_uses(n: &Node, out: &mut Vec<ValueId>) {
    out.extend(&n.inputs);
    for r in &n.regions {
        region_uses(r, out);
    }
}

/// Every value used in `r`: the operands of its nodes (nested regions included) and its
/// results, in order, with repeats.
pub fn region_uses(r: &Region, out: &mut Vec<ValueId>) {
    for n in &r.nodes {
        node_uses(n, out);
    }
    out.extend(&r.results);
}

#[cfg(test)]
mod tests {
    use super::*;
    use terafab_ir::DType;
    use terafab_ir::half::f16;

    #[test]
    fn replaces_uses_in_nested_regions_and_results() {
        let src = "func @main(%c: bool[], %x: f32[2]) -> (y: f32[2], z: f32[2]) {
  %a = neg(%x) : f32[2]
  %b = neg(%x) : f32[2]
  %y = if(%c) : f32[2] region() {
    %t = exp(%b) : f32[2]
    yield %b
  } region() {
    yield %a
  }
  return %y, %b
}
";
        let mut f = terafab_ir::parse::parse_function(src).unwrap();
        let a = f.values.lookup("a").unwrap();
        let b = f.values.lookup("b").unwrap();
        // `exp(%b)`, `yield %b` and `return .., %b`.
        assert_eq!(replace_all_uses(&mut f, b, a), 3);
        assert_eq!(replace_all_uses(&mut f, b, a), 0);
        terafab_ir::verify::verify_function(&f).unwrap();
        assert!(!f.to_string().contains("(%b)"));
    }

    #[test]
    fn resolve_follows_chains() {
        let (a, b, c) = (ValueId(0), ValueId(1), ValueId(2));
        let map = HashMap::from([(a, b), (b, c)]);
        assert_eq!(resolve(&map, a), c);
        assert_eq!(resolve(&map, c), c);
        let cycle = HashMap::from([(a, b), (b, a)]);
        resolve(&cycle, a); // terminates
    }

    #[test]
    fn splats() {
        let t = |v: Vec<f32>| Tensor::from_vec(vec![v.len()], v).unwrap();
        assert!(is_splat_of(&t(vec![1.0, 1.0]), 1.0));
        assert!(!is_splat_of(&t(vec![1.0, 2.0]), 1.0));
        assert!(is_splat_of(&t(vec![-0.0]), -0.0));
        assert!(!is_splat_of(&t(vec![0.0]), -0.0));
        assert!(!is_splat_of(&t(vec![-0.0]), 0.0));
        assert!(!is_splat_of(&t(vec![f32::NAN]), 0.0));
        assert!(is_splat_of(&Tensor::scalar(f16::ONE), 1.0));
        assert!(is_splat_of(&Tensor::scalar(true), 1.0));
        assert!(is_splat_of(&Tensor::scalar(0i64), -0.0));
        // No negative zero in the FNUZ float8 types: -0.0 converts to +0.
        let z = Tensor::zeros(DType::F8E4M3FNUZ, &[2]).unwrap();
        assert!(is_splat_of(&z, -0.0));
    }
}
