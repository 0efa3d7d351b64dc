//! The stratified, seeded split: within each class (stratum) the rows are shuffled with a
//! ChaCha8 generator seeded by `split_seed`, then `round(n·valid)` go to valid,
//! `round(n·test)` to test and the rest to train. Classes are visited in id order and each
//! split is returned in file order, so the split depends only on the rows, labels, fractions
//! and seed — the same for every trial of a study.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::config::SplitFractions;

/// Row indices of each split, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitIndices {
    pub train: Vec<usize>,
    pub valid: Vec<usize>,
    pub test: Vec<usize>,
}

/// Splits rows `0..strata.len()` keeping each stratum's proportions. For regression pass
/// one stratum for all rows (all zeros).
pub fn stratified_split(strata: &[u32], f: SplitFractions, seed: u64) -> SplitIndices {
    let k = strata.iter().copied().max().map_or(0, |m| m as usize + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in strata.iter().enumerate() {
        by_class[c as usize].push(i);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = SplitIndices::default();
    for mut rows in by_class {
        if rows.is_empty() {
            continue;
        }
        rows.shuffle(&mut rng);
        let n = rows.len();
        let n_test = ((n as f64 * f.test).round() as usize).min(n);
        let n_valid = ((n as f64 * f.valid).round() as usize).min(n - n_test);
        out.test.extend_from_slice(&rows[..n_test]);
        out.valid.extend_from_slice(&rows[n_test..n_test + n_valid]);
        out.train.extend_from_slice(&rows[n_test + n_valid..]);
    }
    out.train.sort_unstable();
    out.valid.sort_unstable();
    out.test.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: SplitFractions = SplitFractions { train: 0.7, valid: 0.15, test: 0.15 };

    fn strata() -> Vec<u32> {
        // 600 rows of class 0, 300 of class 1, 100 of class 2, interleaved.
        (0..1000)
            .map(|i| {
                if i % 10 < 6 {
                    0
                } else if i % 10 < 9 {
                    1
                } else {
                    2
                }
            })
            .collect()
    }

    #[test]
    fn deterministic_disjoint_covering_and_stratified() {
        let s = strata();
        let a = stratified_split(&s, F, 42);
        assert_eq!(a, stratified_split(&s, F, 42));
        assert_ne!(a, stratified_split(&s, F, 43), "the seed matters");
        let mut all: Vec<usize> = a.train.iter().chain(&a.valid).chain(&a.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>(), "disjoint and covering");
        assert_eq!((a.train.len(), a.valid.len(), a.test.len()), (700, 150, 150));
        for part in [&a.train, &a.valid, &a.test] {
            let n = part.len() as f64;
            for (c, want) in [(0u32, 0.6), (1, 0.3), (2, 0.1)] {
                let got = part.iter().filter(|&&i| s[i] == c).count() as f64 / n;
                assert!((got - want).abs() < 0.01, "class {c}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn two_way_split_has_no_test() {
        let s = strata();
        let f = SplitFractions { train: 0.85, valid: 0.15, test: 0.0 };
        let a = stratified_split(&s, f, 42);
        assert!(a.test.is_empty());
        assert_eq!(a.valid.len(), 150);
        assert_eq!(a.train.len(), 850);
    }
}
