//! Quasi-random points of the unit cube: the Sobol sequence (Joe–Kuo direction numbers,
//! from the `sobol` crate) with a Cranley–Patterson random shift, so different seeds get
//! different, equally well-spread point sets.

use std::sync::OnceLock;

use rand::Rng;
use sobol::params::JoeKuoD6;
use sobol::Sobol;

/// The direction-number table, decompressed once (it is constant data).
fn params() -> &'static JoeKuoD6 {
    static PARAMS: OnceLock<JoeKuoD6> = OnceLock::new();
    PARAMS.get_or_init(JoeKuoD6::minimal)
}

/// Points `skip .. skip + count` of the `dims`-dimensional Sobol sequence, each coordinate
/// shifted by `shift[d]` modulo 1. Where the table has too few dimensions, the points come
/// from `fallback` (uniform), so the call never fails.
pub fn shifted_sobol<R: Rng>(dims: usize, skip: usize, count: usize, shift: &[f64], fallback: &mut R) -> Vec<Vec<f64>> {
    let wrap = |u: f64, d: usize| {
        let v = u + shift.get(d).copied().unwrap_or(0.0);
        v - v.floor()
    };
    if dims == 0 {
        return vec![Vec::new(); count];
    }
    if dims > params().max_dims - 1 {
        return (0..count).map(|_| (0..dims).map(|_| fallback.random::<f64>()).collect()).collect();
    }
    Sobol::<f64>::new(dims, params()).skip(skip).take(count).map(|p| p.iter().enumerate().map(|(d, &u)| wrap(u, d)).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn points_fill_the_cube_evenly() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let pts = shifted_sobol(3, 0, 64, &[0.3, 0.7, 0.1], &mut rng);
        assert_eq!(pts.len(), 64);
        // 64 Sobol points put exactly 8 in each eighth of every axis (shift preserves this
        // up to the wrap), far more even than uniform draws.
        for d in 0..3 {
            let mut bins = [0usize; 8];
            for p in &pts {
                assert!((0.0..1.0).contains(&p[d]));
                bins[(p[d] * 8.0) as usize] += 1;
            }
            assert!(bins.iter().all(|&b| (7..=9).contains(&b)), "axis {d}: {bins:?}");
        }
    }
}
