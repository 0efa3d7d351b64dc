//! Independent random sampling: uniform (log-uniform where `log`), ints and steps respected,
//! categoricals uniform over their choices.

use rand::Rng;

use super::{Sampler, SamplerError, SuggestContext};
use crate::space::{ParamSet, SearchSpace};

/// Draws every parameter independently from the trial's own seeded stream.
#[derive(Debug, Clone, Default)]
pub struct RandomSampler;

impl RandomSampler {
    /// One independent draw from `space` using `rng`, holding only the parameters that apply
    /// to it.
    pub fn draw<R: Rng>(space: &SearchSpace, rng: &mut R) -> ParamSet {
        space.without_inactive(&Self::draw_every(space, rng))
    }

    /// A value for every parameter of `space`, whether it applies or not (the same stream of
    /// numbers as [`RandomSampler::draw`]).
    pub fn draw_every<R: Rng>(space: &SearchSpace, rng: &mut R) -> ParamSet {
        space.params().iter().map(|p| (p.name.clone(), p.dist.from_unit(rng.random::<f64>()))).collect()
    }
}

impl Sampler for RandomSampler {
    fn name(&self) -> &'static str {
        "random"
    }

    fn suggest(&self, ctx: &SuggestContext<'_>) -> Result<Option<ParamSet>, SamplerError> {
        Ok(Some(Self::draw(ctx.space, &mut ctx.rng())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Distribution, Param, ParamValue};
    use crate::trial::Direction;
    use proptest::prelude::*;

    fn lr_space() -> SearchSpace {
        SearchSpace::new(vec![
            Param { name: "lr".into(), dist: Distribution::Float { low: 1e-6, high: 1e-2, log: true, step: None } },
            Param { name: "ep".into(), dist: Distribution::Int { low: 1, high: 10, step: 3, log: false } },
            Param { name: "bs".into(), dist: Distribution::Categorical { choices: vec![ParamValue::Int(8), ParamValue::Int(16)] } },
        ])
        .unwrap()
    }

    #[test]
    fn log_sampling_is_uniform_in_log_space() {
        let space = lr_space();
        let mut counts = [0usize; 4];
        let n = 8000;
        for i in 0..n {
            let ctx = SuggestContext { space: &space, direction: Direction::Minimize, history: &[], number: i, seed: 7, fixed: None };
            let p = RandomSampler.suggest(&ctx).unwrap().unwrap();
            let lr = p["lr"].as_f64().unwrap();
            let decade = ((lr.log10() + 6.0).floor() as usize).min(3);
            counts[decade] += 1;
        }
        for c in counts {
            let frac = c as f64 / n as f64;
            assert!((frac - 0.25).abs() < 0.03, "decade fractions {counts:?}");
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let space = lr_space();
        let seq = |seed| {
            (0..20)
                .map(|i| {
                    let ctx = SuggestContext { space: &space, direction: Direction::Minimize, history: &[], number: i, seed, fixed: None };
                    RandomSampler.suggest(&ctx).unwrap().unwrap()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(seq(1), seq(1));
        assert_ne!(seq(1), seq(2));
    }

    proptest! {
        #[test]
        fn samples_are_in_space(seed in any::<u64>(), number in 0u64..1000) {
            let space = lr_space();
            let ctx = SuggestContext { space: &space, direction: Direction::Minimize, history: &[], number, seed, fixed: None };
            let p = RandomSampler.suggest(&ctx).unwrap().unwrap();
            prop_assert!(space.validate(&p).is_ok());
            let ep = match p["ep"] { ParamValue::Int(i) => i, _ => -1 };
            prop_assert!([1, 4, 7, 10].contains(&ep));
        }
    }
}
