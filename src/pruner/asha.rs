//! Asynchronous successive halving (ASHA), as Optuna's `SuccessiveHalvingPruner` does it.
//!
//! Rung `k` sits at step `min_resource · η^(min_early_stopping_rate + k)`. When a trial first
//! reports a step at or past a rung, its value there is compared with the values every other
//! trial of the study (running ones included) had when it crossed that rung; the trial goes on
//! only if it is in the top `1/η` of them (for the first `η − 1` trials at a rung: only if it
//! is the best so far). Otherwise it is pruned.
//!
//! Optuna keeps each trial's rung values as system attributes; here they are recomputed from
//! the stored intermediate values (a trial's value at a rung is its first reported value at a
//! step ≥ the rung's step), which is the same thing and keeps the pruner a pure function.
//! What a trial reached is still recorded for display (`record`).

use super::Pruner;
use crate::scheduler::Decision;
use crate::trial::{Direction, PruningRecord, RungRecord, TrialNumber, TrialRecord};

/// ASHA's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AshaPruner {
    /// The step of rung 0 (with `min_early_stopping_rate = 0`); at least 1.
    pub min_resource: i64,
    /// η: one trial in η goes on at each rung; at least 2.
    pub reduction_factor: u32,
    /// Shifts every rung up by this many powers of η (Hyperband's brackets use it).
    pub min_early_stopping_rate: u32,
    /// Rungs at or beyond this step are not used: a trial that ran that far is done.
    pub max_resource: Option<i64>,
    /// A rung where at most this many trials (this one included) have a value prunes.
    pub bootstrap_count: usize,
}

impl AshaPruner {
    /// ASHA with Optuna's defaults for the rest (`min_early_stopping_rate = 0`, no bootstrap).
    pub fn new(min_resource: i64, reduction_factor: u32) -> Self {
        AshaPruner { min_resource, reduction_factor, min_early_stopping_rate: 0, max_resource: None, bootstrap_count: 0 }
    }

    /// The step of rung `k`, or `None` past the last usable rung.
    pub fn rung_step(&self, k: u32) -> Option<i64> {
        let eta = i64::from(self.reduction_factor.max(2));
        let power = eta.checked_pow(self.min_early_stopping_rate.checked_add(k)?)?;
        let step = self.min_resource.max(1).checked_mul(power)?;
        match self.max_resource {
            Some(max) if step >= max => None,
            _ => Some(step),
        }
    }

    /// The rungs a trial with these values has crossed, with its value at each (its first
    /// value at a step ≥ the rung's step). `values` in the order reported.
    pub fn rungs_of(&self, values: &[(i64, f64)]) -> Vec<RungRecord> {
        let mut out = Vec::new();
        let mut k = 0;
        while let Some(r) = self.rung_step(k) {
            match values.iter().find(|(s, _)| *s >= r) {
                Some(&(step, value)) => out.push(RungRecord { rung: k, step, value }),
                None => break,
            }
            k += 1;
        }
        out
    }

    /// The rungs the last report crossed for the first time.
    fn new_rungs(&self, values: &[(i64, f64)]) -> Vec<u32> {
        let Some((&(step, _), before)) = values.split_last() else { return Vec::new() };
        let reached_before = before.iter().map(|(s, _)| *s).max();
        let mut out = Vec::new();
        let mut k = 0;
        while let Some(r) = self.rung_step(k) {
            if step < r {
                break;
            }
            if reached_before.is_none_or(|b| b < r) {
                out.push(k);
            }
            k += 1;
        }
        out
    }

    /// The value a stored trial had at rung `k`, if it got there.
    fn value_at(&self, t: &TrialRecord, k: u32) -> Option<f64> {
        let r = self.rung_step(k)?;
        t.intermediate.iter().find(|(s, _)| *s >= r).map(|(_, v)| *v).filter(|v| !v.is_nan())
    }
}

/// Optuna's `_is_trial_promotable_to_next_rung`: `competing` includes `value`.
pub fn promotable(value: f64, competing: &mut [f64], reduction_factor: u32, direction: Direction) -> bool {
    if competing.is_empty() {
        return true;
    }
    let idx = (competing.len() / reduction_factor.max(2) as usize).saturating_sub(1);
    competing.sort_by(|a, b| a.total_cmp(b));
    match direction {
        Direction::Minimize => value <= competing[idx],
        Direction::Maximize => value >= competing[competing.len() - 1 - idx],
    }
}

impl Pruner for AshaPruner {
    fn decide(&self, _number: TrialNumber, values: &[(i64, f64)], history: &[TrialRecord], direction: Direction) -> Decision {
        let Some(&(_, value)) = values.last() else { return Decision::Continue };
        for k in self.new_rungs(values) {
            if value.is_nan() {
                return Decision::Prune;
            }
            let mut competing: Vec<f64> = history.iter().filter_map(|t| self.value_at(t, k)).collect();
            competing.push(value);
            if competing.len() <= self.bootstrap_count {
                return Decision::Prune;
            }
            if !promotable(value, &mut competing, self.reduction_factor, direction) {
                return Decision::Prune;
            }
        }
        Decision::Continue
    }

    fn needs_history(&self, _number: TrialNumber, values: &[(i64, f64)]) -> bool {
        !self.new_rungs(values).is_empty()
    }

    fn record(&self, _number: TrialNumber, values: &[(i64, f64)]) -> PruningRecord {
        PruningRecord { rungs: self.rungs_of(values), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamSet;
    use crate::trial::TrialState;
    use proptest::prelude::*;

    fn trial(n: u64, state: TrialState, curve: &[(i64, f64)]) -> TrialRecord {
        let mut t = TrialRecord::new(n, state, ParamSet::new(), curve.last().map(|c| c.1));
        t.intermediate = curve.to_vec();
        t
    }

    /// Trials that reported `v` at every step 1..=len.
    fn flat(n: u64, state: TrialState, v: f64, len: i64) -> TrialRecord {
        trial(n, state, &(1..=len).map(|s| (s, v)).collect::<Vec<_>>())
    }

    #[test]
    fn rungs_are_geometric_and_stop_before_max_resource() {
        let p = AshaPruner { max_resource: Some(27), ..AshaPruner::new(1, 3) };
        let steps: Vec<i64> = (0..10).map_while(|k| p.rung_step(k)).collect();
        assert_eq!(steps, vec![1, 3, 9]);
        let shifted = AshaPruner { min_early_stopping_rate: 1, ..AshaPruner::new(2, 2) };
        assert_eq!((0..3).map(|k| shifted.rung_step(k)).collect::<Vec<_>>(), vec![Some(4), Some(8), Some(16)]);
        // No overflow panic far out.
        assert_eq!(AshaPruner::new(i64::MAX / 2, 3).rung_step(5), None);
    }

    #[test]
    fn first_trial_is_promoted_then_only_the_top_third() {
        let p = AshaPruner::new(2, 3);
        let min = Direction::Minimize;
        // Alone at the rung: promoted.
        assert_eq!(p.decide(0, &[(1, 5.0), (2, 5.0)], &[], min), Decision::Continue);
        // Before the rung: never pruned, however bad.
        let hist: Vec<TrialRecord> = (0..6).map(|i| flat(i, TrialState::Complete, i as f64, 10)).collect();
        assert_eq!(p.decide(9, &[(1, 100.0)], &hist, min), Decision::Continue);
        // At rung 0 (step 2) against values 0..5 plus itself: 7 values, top 7/3 = 2 go on.
        assert_eq!(p.decide(9, &[(1, 9.0), (2, 0.5)], &hist, min), Decision::Continue, "2nd best of 7");
        assert_eq!(p.decide(9, &[(1, 9.0), (2, 1.5)], &hist, min), Decision::Prune, "3rd of 7");
        // Maximising flips it.
        assert_eq!(p.decide(9, &[(1, 9.0), (2, 4.5)], &hist, Direction::Maximize), Decision::Continue);
        assert_eq!(p.decide(9, &[(1, 9.0), (2, 3.5)], &hist, Direction::Maximize), Decision::Prune);
    }

    #[test]
    fn a_rung_is_judged_once_and_running_trials_count() {
        let p = AshaPruner::new(2, 2);
        let min = Direction::Minimize;
        // Two running trials already at rung 0 with 1.0 and 2.0.
        let hist = vec![flat(0, TrialState::Running, 1.0, 3), flat(1, TrialState::Running, 2.0, 2)];
        // 3 values at rung 0, top 3/2 = 1 → only the best goes on.
        assert_eq!(p.decide(2, &[(2, 1.5)], &hist, min), Decision::Prune);
        assert_eq!(p.decide(2, &[(2, 0.5)], &hist, min), Decision::Continue);
        // Step 3 crosses no new rung (rung 1 is at 4): no verdict even if it got worse.
        assert_eq!(p.decide(2, &[(2, 0.5), (3, 99.0)], &hist, min), Decision::Continue);
        assert!(!p.needs_history(2, &[(2, 0.5), (3, 99.0)]));
        assert!(p.needs_history(2, &[(2, 0.5), (3, 99.0), (4, 1.0)]));
        // A jump over two rungs judges both with the value it jumped with.
        let hist = vec![flat(0, TrialState::Complete, 1.0, 8), flat(1, TrialState::Complete, 2.0, 8)];
        assert_eq!(p.decide(2, &[(4, 0.5)], &hist, min), Decision::Continue);
        assert_eq!(p.decide(2, &[(4, 1.5)], &hist, min), Decision::Prune);
        // NaN at a rung prunes; NaN in the history is ignored.
        assert_eq!(p.decide(2, &[(2, f64::NAN)], &[], min), Decision::Prune);
        let hist = vec![flat(0, TrialState::Complete, f64::NAN, 8)];
        assert_eq!(p.decide(2, &[(2, 5.0)], &hist, min), Decision::Continue);
    }

    #[test]
    fn bootstrap_count_prunes_until_enough_trials() {
        let p = AshaPruner { bootstrap_count: 1, ..AshaPruner::new(1, 2) };
        assert_eq!(p.decide(0, &[(1, 0.0)], &[], Direction::Minimize), Decision::Prune);
        let hist = vec![flat(0, TrialState::Pruned, 1.0, 1)];
        assert_eq!(p.decide(1, &[(1, 0.0)], &hist, Direction::Minimize), Decision::Continue);
    }

    #[test]
    fn record_lists_the_rungs_reached() {
        let p = AshaPruner::new(1, 3);
        let r = p.record(0, &[(0, 9.0), (1, 8.0), (2, 7.0), (3, 6.0), (4, 5.0)]);
        assert_eq!(r.rungs, vec![RungRecord { rung: 0, step: 1, value: 8.0 }, RungRecord { rung: 1, step: 3, value: 6.0 }]);
        assert_eq!(r.bracket, None);
    }

    proptest! {
        /// Against a brute-force count: a trial goes on at a rung exactly when fewer than
        /// max(1, n/η) of the n competing values are strictly better than it.
        #[test]
        fn promotion_matches_a_rank_count(others in proptest::collection::vec(0u8..20, 0..30), mine in 0u8..20, eta in 2u32..5, maximize: bool) {
            let p = AshaPruner::new(1, eta);
            let dir = if maximize { Direction::Maximize } else { Direction::Minimize };
            let hist: Vec<TrialRecord> = others.iter().enumerate().map(|(i, v)| flat(i as u64, TrialState::Complete, f64::from(*v), 1)).collect();
            let n = others.len() + 1;
            let keep = (n / eta as usize).max(1);
            let mine = f64::from(mine);
            let better = others.iter().filter(|v| dir.is_better(f64::from(**v), mine)).count();
            let expected = if better < keep { Decision::Continue } else { Decision::Prune };
            prop_assert_eq!(p.decide(99, &[(1, mine)], &hist, dir), expected);
        }
    }
}
