//! Grid search: the full factorial over categorical and int parameters and `grid_points`
//! values of each float, visited in a seed-shuffled order. The next point is the first one no
//! trial of the study has taken yet, so no point runs twice — across resumes and across
//! workers, since proposals are made inside the store's claiming transaction.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{Sampler, SamplerError, SuggestContext};
use crate::space::{ParamSet, SearchSpace};

/// Enumerates the grid of a space.
#[derive(Debug, Clone)]
pub struct GridSampler {
    /// How many values a float parameter gets.
    pub float_points: usize,
}

impl GridSampler {
    pub fn new(float_points: usize) -> Self {
        GridSampler { float_points: float_points.max(1) }
    }

    /// The grid in the order this study visits it.
    pub fn order(&self, space: &SearchSpace, seed: u64) -> Vec<ParamSet> {
        let mut g = space.grid(self.float_points);
        g.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        g
    }
}

impl Sampler for GridSampler {
    fn name(&self) -> &'static str {
        "grid"
    }

    fn suggest(&self, ctx: &SuggestContext<'_>) -> Result<Option<ParamSet>, SamplerError> {
        let order = self.order(ctx.space, ctx.seed);
        let mut unvisited = order.into_iter().filter(|p| !ctx.history.iter().any(|t| SearchSpace::same_point(&t.params, p)));
        match ctx.fixed {
            None => Ok(unvisited.next()),
            // A partly queued point: the first unvisited grid point that agrees with it, else
            // the first unvisited one (its held values then replace the grid's).
            Some(fixed) => {
                let left: Vec<ParamSet> = unvisited.collect();
                let agrees = |p: &ParamSet| fixed.iter().all(|(k, v)| p.get(k) == Some(v));
                Ok(left.iter().find(|p| agrees(p)).or(left.first()).cloned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Distribution, Param, ParamValue};
    use crate::trial::{Direction, TrialRecord, TrialState};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn grid_visits_exactly_the_product(nc in 1usize..4, lo in -3i64..3, w in 1i64..4, pts in 1usize..4, seed in any::<u64>()) {
            let space = SearchSpace::new(vec![
                Param { name: "c".into(), dist: Distribution::Categorical { choices: (0..nc).map(|i| ParamValue::Str(format!("c{i}"))).collect() } },
                Param { name: "i".into(), dist: Distribution::Int { low: lo, high: lo + w, step: 1, log: false } },
                Param { name: "f".into(), dist: Distribution::Float { low: 0.0, high: 1.0, log: false, step: None } },
            ]).unwrap();
            let expected = nc * (w as usize + 1) * pts;
            let sampler = GridSampler::new(pts);
            let mut history: Vec<TrialRecord> = Vec::new();
            loop {
                let ctx = SuggestContext { space: &space, direction: Direction::Minimize, history: &history, number: history.len() as u64, seed, fixed: None };
                match sampler.suggest(&ctx).unwrap() {
                    Some(p) => {
                        prop_assert!(space.validate(&p).is_ok());
                        let n = history.len() as u64;
                        history.push(TrialRecord::new(n, TrialState::Complete, p, Some(0.0)));
                    }
                    None => break,
                }
                prop_assert!(history.len() <= expected);
            }
            prop_assert_eq!(history.len(), expected);
        }
    }

    #[test]
    fn a_partly_queued_point_takes_an_unvisited_grid_point_that_agrees_with_it() {
        let space = SearchSpace::new(vec![
            Param {
                name: "c".into(),
                dist: Distribution::Categorical { choices: vec![ParamValue::Str("a".into()), ParamValue::Str("b".into())] },
            },
            Param { name: "i".into(), dist: Distribution::Int { low: 1, high: 3, step: 1, log: false } },
        ])
        .unwrap();
        let sampler = GridSampler::new(3);
        let held: ParamSet = [("c".to_string(), ParamValue::Str("b".into()))].into_iter().collect();
        let mut history: Vec<TrialRecord> = Vec::new();
        for n in 0..3u64 {
            let ctx =
                SuggestContext { space: &space, direction: Direction::Minimize, history: &history, number: n, seed: 1, fixed: Some(&held) };
            let p = crate::sampler::suggest_around(&sampler, &ctx).unwrap().unwrap();
            assert_eq!(p["c"], held["c"], "{p:?}");
            assert!(!history.iter().any(|t| t.params == p), "grid point {p:?} visited twice");
            history.push(TrialRecord::new(n, TrialState::Complete, p, Some(0.0)));
        }
        // Every `c = "b"` point is visited: a fourth held point still keeps `c = "b"`.
        let ctx =
            SuggestContext { space: &space, direction: Direction::Minimize, history: &history, number: 3, seed: 1, fixed: Some(&held) };
        let p = crate::sampler::suggest_around(&sampler, &ctx).unwrap().unwrap();
        assert_eq!(p["c"], held["c"]);
    }
}
