//! Samplers: pure policies that read a study's whole history and propose the next point.
//!
//! A sampler keeps no private state between calls (as in Optuna), does no I/O and reads no
//! clock, so the trial it proposes depends only on the space, the history and the seed — which
//! is what makes a resumed or multi-worker study propose what an uninterrupted one would.

pub mod gp;
pub mod grid;
pub mod random;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::space::{ParamSet, SearchSpace};
use crate::trial::{Direction, TrialNumber, TrialRecord};

pub use gp::{GpOptions, GpSampler};
pub use grid::GridSampler;
pub use random::RandomSampler;

/// Everything a sampler may look at when proposing trial `number`.
#[derive(Debug, Clone, Copy)]
pub struct SuggestContext<'a> {
    pub space: &'a SearchSpace,
    pub direction: Direction,
    /// Every trial of the study so far, in number order, whatever its state: RUNNING and
    /// WAITING ones are pending points a sampler should avoid duplicating.
    pub history: &'a [TrialRecord],
    /// The number the proposed trial will get.
    pub number: TrialNumber,
    /// The study's sampler seed.
    pub seed: u64,
    /// Parameters already decided for this trial (a partly enqueued point): the sampler
    /// chooses the others, and [`suggest_around`] keeps these.
    pub fixed: Option<&'a ParamSet>,
}

impl SuggestContext<'_> {
    /// The random stream of this trial: derived from (seed, number) only.
    pub fn rng(&self) -> ChaCha8Rng {
        trial_rng(self.seed, self.number)
    }
}

/// The seeded random stream for trial `number` of a study with `seed`.
pub fn trial_rng(seed: u64, number: TrialNumber) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(splitmix64(seed ^ splitmix64(number.wrapping_add(0x5f3c_9d1b))))
}

/// A fast, well-mixing 64-bit hash (SplitMix64's finaliser).
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The sampler's proposal for trial `ctx.number`, with `ctx.fixed` (if any) kept: the
/// parameters of a partly enqueued point stay as queued and the sampler chooses the rest
/// (the GP conditions its acquisition on them; other samplers draw as usual). A grid that
/// has nothing left completes such a point with a random draw.
pub fn suggest_around(sampler: &dyn Sampler, ctx: &SuggestContext<'_>) -> Result<Option<ParamSet>, SamplerError> {
    let Some(fixed) = ctx.fixed else {
        return sampler.suggest(ctx);
    };
    let mut point = match sampler.suggest(ctx)? {
        Some(p) => p,
        None => RandomSampler::draw(ctx.space, &mut ctx.rng()),
    };
    for (name, value) in fixed {
        point.insert(name.clone(), value.clone());
    }
    // With conditional parameters, a held value may make a parameter apply that the
    // proposal left out (it proposed another optimizer): a random draw fills it in.
    if !ctx.space.conditions().is_empty() {
        point = ctx.space.without_inactive(&point);
        let missing: Vec<String> = ctx.space.missing(&point).into_iter().map(str::to_string).collect();
        if !missing.is_empty() {
            let every = RandomSampler::draw_every(ctx.space, &mut ctx.rng());
            for name in missing {
                if let Some(v) = every.get(&name) {
                    point.insert(name, v.clone());
                }
            }
        }
    }
    Ok(Some(point))
}

/// Why a sampler could not propose a point.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("sampler `{kind}` is not available: {why}")]
    Unavailable { kind: String, why: String },
    #[error("sampler failed: {0}")]
    Internal(String),
}

/// A policy that proposes the next trial's parameters.
pub trait Sampler: Send + Sync {
    /// Short name (`grid`, `random`, `gp`).
    fn name(&self) -> &'static str;

    /// Proposes parameters for trial `ctx.number`, or `None` when the sampler has nothing
    /// left to propose (an exhausted grid).
    fn suggest(&self, ctx: &SuggestContext<'_>) -> Result<Option<ParamSet>, SamplerError>;
}
