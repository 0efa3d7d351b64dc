//! Trials as the rest of the tool sees them: the state machine (enforced here and nowhere
//! else), the owned snapshot of a stored trial, the outcome a runner returns, and the study
//! direction that decides what "better" means.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::space::ParamSet;

/// The life of a trial, with Optuna's names for the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum TrialState {
    Waiting,
    Running,
    Complete,
    Pruned,
    Fail,
}

impl TrialState {
    /// The one place the state machine lives: WAITING → RUNNING → {COMPLETE, PRUNED, FAIL};
    /// a WAITING trial may also be failed (a retry that may not run any more).
    pub fn can_become(self, next: TrialState) -> bool {
        use TrialState::*;
        matches!((self, next), (Waiting, Running) | (Waiting, Fail) | (Running, Complete) | (Running, Pruned) | (Running, Fail))
    }

    /// Whether the trial has ended for good.
    pub fn is_finished(self) -> bool {
        matches!(self, TrialState::Complete | TrialState::Pruned | TrialState::Fail)
    }

    /// The spelling Optuna's `trials.state` column uses.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Waiting => "WAITING",
            TrialState::Running => "RUNNING",
            TrialState::Complete => "COMPLETE",
            TrialState::Pruned => "PRUNED",
            TrialState::Fail => "FAIL",
        }
    }

    pub const ALL: [TrialState; 5] = [TrialState::Waiting, TrialState::Running, TrialState::Complete, TrialState::Pruned, TrialState::Fail];
}

impl fmt::Display for TrialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TrialState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        TrialState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown trial state `{s}`"))
    }
}

/// Whether the study minimises or maximises its metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Minimize,
    Maximize,
}

impl Direction {
    /// Whether `a` is strictly better than `b`.
    pub fn is_better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Minimize => a < b,
            Direction::Maximize => a > b,
        }
    }

    /// The value turned so that smaller is better (what samplers work with).
    pub fn to_minimize(self, v: f64) -> f64 {
        match self {
            Direction::Minimize => v,
            Direction::Maximize => -v,
        }
    }

    /// Optuna's `study_directions.direction` spelling.
    pub fn as_optuna(self) -> &'static str {
        match self {
            Direction::Minimize => "MINIMIZE",
            Direction::Maximize => "MAXIMIZE",
        }
    }
}

/// The store's number for a trial within its study (Optuna's `trials.number`).
pub type TrialNumber = u64;

/// An owned snapshot of one stored trial.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialRecord {
    /// Optuna's `trial_id` (unique across studies in one database).
    pub id: i64,
    pub number: TrialNumber,
    pub state: TrialState,
    pub params: ParamSet,
    /// The objective value (COMPLETE, and PRUNED with its last reported value).
    pub value: Option<f64>,
    /// `(step, value)` pairs, ordered by step.
    pub intermediate: Vec<(i64, f64)>,
    /// Metrics beyond the objective (the last reported set).
    pub metrics: serde_json::Map<String, serde_json::Value>,
    pub device: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// The number of the trial this one re-runs.
    pub retry_of: Option<TrialNumber>,
    pub checkpoint: Option<String>,
    /// The last live progress a running trial reported (epoch, step, throughput, memory).
    pub progress: Option<serde_json::Value>,
    /// What the pruner recorded about the trial (rungs reached, bracket, where it stopped).
    pub pruning: PruningRecord,
}

/// One rung of successive halving a trial reached: the rung's index, the step at which the
/// trial crossed it, and its value there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RungRecord {
    pub rung: u32,
    pub step: i64,
    pub value: f64,
}

/// What a pruner recorded about one trial (stored as trial user attributes `rungs`,
/// `bracket` and `pruned_at_step`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruningRecord {
    /// The Hyperband bracket the trial was assigned to.
    pub bracket: Option<u32>,
    /// The ASHA rungs the trial reached, in order (a pruned trial stopped at the last one).
    pub rungs: Vec<RungRecord>,
    /// The step at which the trial was pruned.
    pub pruned_at_step: Option<i64>,
}

impl PruningRecord {
    pub fn is_empty(&self) -> bool {
        self.bracket.is_none() && self.rungs.is_empty() && self.pruned_at_step.is_none()
    }
}

impl TrialRecord {
    /// A bare record, for tests and samplers' benchmarks.
    pub fn new(number: TrialNumber, state: TrialState, params: ParamSet, value: Option<f64>) -> Self {
        TrialRecord {
            id: number as i64,
            number,
            state,
            params,
            value,
            intermediate: Vec::new(),
            metrics: Default::default(),
            device: None,
            started_at: None,
            finished_at: None,
            error: None,
            retry_of: None,
            checkpoint: None,
            progress: None,
            pruning: PruningRecord::default(),
        }
    }

    /// The last reported intermediate value.
    pub fn last_intermediate(&self) -> Option<(i64, f64)> {
        self.intermediate.last().copied()
    }
}

/// How a trial ended, as a runner reports it. A failure is an outcome, not an error.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Complete {
        value: f64,
    },
    /// Stopped by the pruner at `step`; keeps its last reported value.
    Pruned {
        step: i64,
        value: Option<f64>,
    },
    Failed {
        reason: String,
    },
}

impl Outcome {
    pub fn state(&self) -> TrialState {
        match self {
            Outcome::Complete { .. } => TrialState::Complete,
            Outcome::Pruned { .. } => TrialState::Pruned,
            Outcome::Failed { .. } => TrialState::Fail,
        }
    }
}

/// The best COMPLETE trial of `trials` for `direction` (first one wins ties).
pub fn best_trial(trials: &[TrialRecord], direction: Direction) -> Option<&TrialRecord> {
    trials
        .iter()
        .filter(|t| t.state == TrialState::Complete)
        .filter_map(|t| t.value.filter(|v| !v.is_nan()).map(|v| (t, v)))
        .fold(None, |best: Option<(&TrialRecord, f64)>, (t, v)| match best {
            Some((_, bv)) if !direction.is_better(v, bv) => best,
            _ => Some((t, v)),
        })
        .map(|(t, _)| t)
}

/// `[study] patience`: the study starts no new sampled trial once `trials` finished trials in
/// a row (COMPLETE or PRUNED, in trial-number order) have not improved the best value by
/// more than `min_delta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patience {
    pub trials: u64,
    pub min_delta: f64,
    pub direction: Direction,
}

impl Patience {
    /// Whether the study has waited long enough for an improvement.
    pub fn is_spent(&self, trials: &[TrialRecord]) -> bool {
        trials_since_improvement(trials, self.direction, self.min_delta) >= self.trials
    }

    /// Why a study whose patience is spent stopped, as `run` and `ask` say it.
    pub fn spent_text(&self) -> String {
        format!("the best value has not improved for {} finished trials in a row (`[study] patience`)", self.trials)
    }
}

/// How many finished trials (COMPLETE or PRUNED), in trial-number order, came after the last
/// COMPLETE trial that beat every earlier one by more than `min_delta` (0 before any trial
/// completes; failed, running and waiting trials do not count).
pub fn trials_since_improvement(trials: &[TrialRecord], direction: Direction, min_delta: f64) -> u64 {
    let mut finished: Vec<&TrialRecord> = trials.iter().filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned)).collect();
    finished.sort_by_key(|t| t.number);
    let mut best: Option<f64> = None;
    let mut since = 0;
    for t in finished {
        let value = t.value.filter(|v| v.is_finite() && t.state == TrialState::Complete);
        match (value, best) {
            (Some(v), None) => best = Some(v),
            (Some(v), Some(b)) if direction.to_minimize(v) < direction.to_minimize(b) - min_delta => {
                best = Some(v);
                since = 0;
            }
            (Some(v), Some(b)) => {
                if direction.is_better(v, b) {
                    best = Some(v);
                }
                since += 1;
            }
            (None, Some(_)) => since += 1,
            (None, None) => {}
        }
    }
    since
}

/// How a trial process's error starts when the machine failed it rather than the trial (a
/// checkpoint that could not be written: disk full, folder unwritable). Kept as the reason
/// as is, and retried.
pub const IO_ERROR_PREFIX: &str = "io error: ";

/// How a trial process's error starts when its device could not be opened (no such GPU, a
/// binary built without CUDA): the machine's failure, retried and never learnt from.
pub const DEVICE_ERROR_PREFIX: &str = "device error: ";

/// Whether a failure came from outside the trial (interrupted, killed, timed out, cancelled,
/// an I/O error of the machine), rather than being the trial's own verdict (an error it
/// reported, a NaN, a non-zero exit). The scheduler retries the former; the GP sampler
/// learns which settings fail from the latter only.
pub fn is_external_failure(reason: &str) -> bool {
    ["interrupted", "worker exited: signal", "timeout", "cancelled", "lost track"].iter().any(|p| reason.starts_with(p))
        || is_machine_error(reason)
}

/// Whether a trial process's own error names the machine as the cause ([`IO_ERROR_PREFIX`],
/// [`DEVICE_ERROR_PREFIX`]): kept as the reason as it is, without the exit status.
pub fn is_machine_error(reason: &str) -> bool {
    reason.starts_with(IO_ERROR_PREFIX) || reason.starts_with(DEVICE_ERROR_PREFIX)
}

/// Whether a trial ended because the study was stopped (Ctrl-C, a cancelled run, a dead
/// orchestrator's trial found later), which says nothing about whether the next trial can
/// succeed: the one external failure that does not count toward `max_consecutive_failures`.
pub fn stopped_by_user(reason: &str) -> bool {
    reason.starts_with("interrupted") || reason.starts_with("cancelled")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn state_machine() {
        use TrialState::*;
        assert!(Waiting.can_become(Running));
        assert!(Running.can_become(Complete));
        assert!(Running.can_become(Pruned));
        assert!(Running.can_become(Fail));
        assert!(!Complete.can_become(Running));
        assert!(!Fail.can_become(Waiting));
        assert!(!Running.can_become(Waiting));
        for s in TrialState::ALL {
            assert_eq!(s.as_str().parse::<TrialState>(), Ok(s));
        }
    }

    proptest! {
        #[test]
        fn finished_states_are_terminal(a in 0usize..5, b in 0usize..5) {
            let (a, b) = (TrialState::ALL[a], TrialState::ALL[b]);
            if a.is_finished() { prop_assert!(!a.can_become(b)); }
            if a.can_become(b) { prop_assert!(a != b); }
        }
    }

    #[test]
    fn improvement_is_counted_in_trial_order_and_by_more_than_min_delta() {
        use TrialState::*;
        let mk = |n, s, v: Option<f64>| TrialRecord::new(n, s, ParamSet::new(), v);
        // Minimise: 5, 4 (better), 3.95 (better by 0.05), pruned, fail, running, 4.5.
        let t = vec![
            mk(0, Complete, Some(5.0)),
            mk(1, Complete, Some(4.0)),
            mk(2, Complete, Some(3.95)),
            mk(3, Pruned, Some(9.0)),
            mk(4, Fail, None),
            mk(5, Running, None),
            mk(6, Complete, Some(4.5)),
        ];
        assert_eq!(trials_since_improvement(&t, Direction::Minimize, 0.0), 2, "3.95 improved; then pruned and 4.5");
        // By more than 0.1 only: 3.95 does not count as an improvement on 4.0.
        assert_eq!(trials_since_improvement(&t, Direction::Minimize, 0.1), 3);
        // Slightly better steps do not restart the count, but they move the bar.
        let creeping: Vec<TrialRecord> = (0..6).map(|n| mk(n, Complete, Some(1.0 - 0.01 * n as f64))).collect();
        assert_eq!(trials_since_improvement(&creeping, Direction::Minimize, 0.05), 5);
        assert_eq!(trials_since_improvement(&creeping, Direction::Minimize, 0.0), 0);
        // Trial order, not the order of the slice; maximise flips it.
        let mut shuffled = t.clone();
        shuffled.reverse();
        assert_eq!(trials_since_improvement(&shuffled, Direction::Minimize, 0.0), 2);
        assert_eq!(trials_since_improvement(&t, Direction::Maximize, 0.0), 4, "5.0 is the best when maximising: four trials since");
        // Nothing complete yet: nothing to improve on.
        assert_eq!(trials_since_improvement(&[mk(0, Pruned, Some(1.0)), mk(1, Fail, None)], Direction::Minimize, 0.0), 0);
        let p = Patience { trials: 2, min_delta: 0.0, direction: Direction::Minimize };
        assert!(p.is_spent(&t) && !Patience { trials: 3, ..p }.is_spent(&t));
    }

    #[test]
    fn best_respects_direction_and_state() {
        let mk = |n, s, v| TrialRecord::new(n, s, ParamSet::new(), v);
        let t = vec![
            mk(0, TrialState::Complete, Some(1.0)),
            mk(1, TrialState::Pruned, Some(5.0)),
            mk(2, TrialState::Complete, Some(3.0)),
            mk(3, TrialState::Fail, None),
        ];
        assert_eq!(best_trial(&t, Direction::Minimize).unwrap().number, 0);
        assert_eq!(best_trial(&t, Direction::Maximize).unwrap().number, 2);
        assert!(best_trial(&t[3..], Direction::Maximize).is_none());
    }
}
