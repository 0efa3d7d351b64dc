//! Pruners: pure policies that look at a running trial's intermediate values and the
//! study's history and say whether to stop it. The scheduler carries the decision out.
//!
//! The resource pruners count is the *step* of an intermediate value (an epoch, or an
//! `eval_steps` evaluation, or a synthetic curve's step): ASHA's rungs and Median's warm-up
//! are in steps.

pub mod asha;
pub mod hyperband;

pub use asha::AshaPruner;
pub use hyperband::HyperbandPruner;

use crate::config::PrunerConfig;
use crate::scheduler::Decision;
use crate::trial::{Direction, PruningRecord, TrialNumber, TrialRecord, TrialState};

/// A stopping rule for unpromising trials.
pub trait Pruner: Send + Sync {
    /// `number` is the running trial's number; `values` its intermediate values so far, in
    /// the order reported (the last one just reported); `history` the study's other trials,
    /// in every state (running ones included).
    fn decide(&self, number: TrialNumber, values: &[(i64, f64)], history: &[TrialRecord], direction: Direction) -> Decision;

    /// Whether `decide` would look at the history after this report (lets the caller skip
    /// reading it). Defaults to always.
    fn needs_history(&self, _number: TrialNumber, _values: &[(i64, f64)]) -> bool {
        true
    }

    /// What to record about the trial after this report (rungs reached, bracket), if anything.
    fn record(&self, _number: TrialNumber, _values: &[(i64, f64)]) -> PruningRecord {
        PruningRecord::default()
    }
}

/// Never prunes.
#[derive(Debug, Clone, Default)]
pub struct NoPruner;

impl Pruner for NoPruner {
    fn decide(&self, _: TrialNumber, _: &[(i64, f64)], _: &[TrialRecord], _: Direction) -> Decision {
        Decision::Continue
    }

    fn needs_history(&self, _: TrialNumber, _: &[(i64, f64)]) -> bool {
        false
    }
}

/// Optuna's `MedianPruner`: prune when the trial's best value so far is worse than the median
/// of the COMPLETE trials' values at the same step, once `n_startup_trials` trials have
/// completed and the trial has passed `n_warmup_steps`. (Like Optuna, pruned trials do not
/// count: they would drag the median towards the trials that were stopped.)
#[derive(Debug, Clone)]
pub struct MedianPruner {
    pub n_startup_trials: usize,
    pub n_warmup_steps: i64,
}

impl Pruner for MedianPruner {
    fn needs_history(&self, _: TrialNumber, values: &[(i64, f64)]) -> bool {
        values.last().is_some_and(|(step, _)| *step >= self.n_warmup_steps)
    }

    fn decide(&self, _number: TrialNumber, values: &[(i64, f64)], history: &[TrialRecord], direction: Direction) -> Decision {
        let Some(&(step, _)) = values.last() else { return Decision::Continue };
        if step < self.n_warmup_steps {
            return Decision::Continue;
        }
        let finished: Vec<&TrialRecord> = history.iter().filter(|t| t.state == TrialState::Complete).collect();
        if finished.len() < self.n_startup_trials.max(1) {
            return Decision::Continue;
        }
        let mut at_step: Vec<f64> = finished
            .iter()
            .filter_map(|t| t.intermediate.iter().find(|(s, _)| *s == step).map(|(_, v)| *v))
            .filter(|v| !v.is_nan())
            .collect();
        if at_step.is_empty() {
            return Decision::Continue;
        }
        at_step.sort_by(|a, b| a.total_cmp(b));
        let n = at_step.len();
        let median = if n % 2 == 1 { at_step[n / 2] } else { (at_step[n / 2 - 1] + at_step[n / 2]) / 2.0 };
        let best = values.iter().map(|(_, v)| *v).filter(|v| !v.is_nan()).fold(None, |b: Option<f64>, v| match b {
            Some(x) if !direction.is_better(v, x) => Some(x),
            _ => Some(v),
        });
        match best {
            None => Decision::Prune,
            Some(b) if direction.is_better(median, b) => Decision::Prune,
            _ => Decision::Continue,
        }
    }
}

/// The pruner a study file asks for.
pub fn from_config(c: &PrunerConfig) -> Box<dyn Pruner> {
    match c {
        PrunerConfig::None => Box::new(NoPruner),
        PrunerConfig::Median { n_startup_trials, n_warmup_steps } => {
            Box::new(MedianPruner { n_startup_trials: *n_startup_trials, n_warmup_steps: *n_warmup_steps })
        }
        PrunerConfig::Asha { min_resource, reduction_factor, max_resource, min_early_stopping_rate, bootstrap_count } => {
            Box::new(AshaPruner {
                min_resource: *min_resource,
                reduction_factor: *reduction_factor,
                min_early_stopping_rate: *min_early_stopping_rate,
                max_resource: *max_resource,
                bootstrap_count: *bootstrap_count,
            })
        }
        PrunerConfig::Hyperband { min_resource, max_resource, reduction_factor, bootstrap_count, study_name } => {
            Box::new(HyperbandPruner::new(*min_resource, *max_resource, *reduction_factor, *bootstrap_count, study_name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamSet;

    fn done(n: u64, curve: &[f64]) -> TrialRecord {
        let mut t = TrialRecord::new(n, TrialState::Complete, ParamSet::new(), curve.last().copied());
        t.intermediate = curve.iter().enumerate().map(|(i, v)| (i as i64, *v)).collect();
        t
    }

    #[test]
    fn median_prunes_below_median_only_after_startup_and_warmup() {
        let p = MedianPruner { n_startup_trials: 3, n_warmup_steps: 1 };
        let hist = vec![done(0, &[0.5, 0.6]), done(1, &[0.6, 0.7]), done(2, &[0.7, 0.8])];
        let max = Direction::Maximize;
        assert_eq!(p.decide(9, &[(0, 0.1)], &hist, max), Decision::Continue, "warm-up");
        assert_eq!(p.decide(9, &[(0, 0.1), (1, 0.65)], &hist, max), Decision::Prune);
        assert_eq!(p.decide(9, &[(0, 0.1), (1, 0.75)], &hist, max), Decision::Continue);
        assert_eq!(p.decide(9, &[(0, 0.1), (1, 0.65)], &hist[..2], max), Decision::Continue, "startup");
        // Minimising flips it.
        assert_eq!(p.decide(9, &[(0, 0.1), (1, 0.65)], &hist, Direction::Minimize), Decision::Continue);
        assert_eq!(NoPruner.decide(9, &[(5, -1e9)], &hist, max), Decision::Continue);
        // Only COMPLETE trials count, as in Optuna: pruned and running ones neither make up the
        // startup count nor move the median.
        let mut others = hist[..2].to_vec();
        for (i, state) in [TrialState::Pruned, TrialState::Running].into_iter().enumerate() {
            let mut t = done(3 + i as u64, &[0.0, 0.0]);
            t.state = state;
            others.push(t);
        }
        assert_eq!(p.decide(9, &[(0, 0.1), (1, 0.65)], &others, max), Decision::Continue, "startup: 2 complete");
        let mut others3 = hist.clone();
        others3.extend(others[2..].iter().cloned());
        assert_eq!(p.decide(9, &[(0, 0.1), (1, 0.65)], &others3, max), Decision::Prune, "median of 0.6, 0.7, 0.8 only");
    }
}
