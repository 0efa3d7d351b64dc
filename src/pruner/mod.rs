//! Pruners: pure policies that look at a running trial's intermediate values and the
//! study's history and say whether to stop it. The scheduler carries the decision out.

use crate::config::PrunerConfig;
use crate::scheduler::Decision;
use crate::trial::{Direction, TrialRecord, TrialState};

/// A stopping rule for unpromising trials.
pub trait Pruner: Send + Sync {
    /// `values` are the running trial's intermediate values so far (the last one just
    /// reported); `history` is the whole study.
    fn decide(&self, values: &[(i64, f64)], history: &[TrialRecord], direction: Direction) -> Decision;
}

/// Never prunes.
#[derive(Debug, Clone, Default)]
pub struct NoPruner;

impl Pruner for NoPruner {
    fn decide(&self, _: &[(i64, f64)], _: &[TrialRecord], _: Direction) -> Decision {
        Decision::Continue
    }
}

/// Optuna's `MedianPruner`: prune when the trial's best value so far is worse than the median
/// of the finished trials' values at the same step, once `n_startup_trials` trials have
/// finished and the trial has passed `n_warmup_steps`.
#[derive(Debug, Clone)]
pub struct MedianPruner {
    pub n_startup_trials: usize,
    pub n_warmup_steps: i64,
}

impl Pruner for MedianPruner {
    fn decide(&self, values: &[(i64, f64)], history: &[TrialRecord], direction: Direction) -> Decision {
        let Some(&(step, _)) = values.last() else { return Decision::Continue };
        if step < self.n_warmup_steps {
            return Decision::Continue;
        }
        let finished: Vec<&TrialRecord> =
            history.iter().filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned)).collect();
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
        let best = values
            .iter()
            .map(|(_, v)| *v)
            .filter(|v| !v.is_nan())
            .fold(None, |b: Option<f64>, v| match b {
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
        assert_eq!(p.decide(&[(0, 0.1)], &hist, max), Decision::Continue, "warm-up");
        assert_eq!(p.decide(&[(0, 0.1), (1, 0.65)], &hist, max), Decision::Prune);
        assert_eq!(p.decide(&[(0, 0.1), (1, 0.75)], &hist, max), Decision::Continue);
        assert_eq!(p.decide(&[(0, 0.1), (1, 0.65)], &hist[..2], max), Decision::Continue, "startup");
        // Minimising flips it.
        assert_eq!(p.decide(&[(0, 0.1), (1, 0.65)], &hist, Direction::Minimize), Decision::Continue);
        assert_eq!(NoPruner.decide(&[(5, -1e9)], &hist, max), Decision::Continue);
    }
}
