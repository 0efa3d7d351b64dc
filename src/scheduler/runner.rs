//! The contract between the scheduler and whatever runs a trial (a synthetic function, an
//! external command, a Candle fine-tuning worker): `TrialRunner` runs one assignment and tells
//! what it learns through a `Reporter`; the scheduler implements the reporter by recording to
//! the store and consulting the pruner. Runners never touch the store.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::space::ParamSet;
use crate::trial::{Outcome, TrialNumber, TrialState};

/// A trial handed to a runner.
#[derive(Debug, Clone)]
pub struct TrialAssignment {
    pub number: TrialNumber,
    pub params: ParamSet,
    /// The device slot: `cpu` or `cuda:k`.
    pub device: String,
    /// The trial this one re-runs, if it is a retry.
    pub retry_of: Option<TrialNumber>,
    /// A folder owned by this trial for its artifacts (checkpoints, logs); created on demand.
    pub artifacts_dir: PathBuf,
    /// The artifacts folders of the earlier attempts of this trial, newest first (the trial
    /// it retries, the one that retried, …): a retry resumes from the newest checkpoint any
    /// of them holds, so an attempt that died before its first checkpoint loses nothing.
    pub resume_from: Vec<PathBuf>,
}

/// What the pruner says after an intermediate value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Continue,
    Prune,
}

/// Live progress of a running trial (shown, not stored).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_memory_mb: Option<f64>,
    /// The share of the GPU's time this trial's kernels ran, at the last sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_sm_percent: Option<f64>,
}

/// Where a runner sends what it learns while it runs.
pub trait Reporter {
    /// An intermediate objective value at `step` (an epoch or an eval step), with the other
    /// metrics measured at that step. Returns whether the trial should go on.
    fn intermediate(&mut self, step: i64, value: f64, metrics: &serde_json::Map<String, serde_json::Value>) -> Decision;
    /// Metrics that belong to the trial as a whole (merged into the trial's metrics).
    fn metrics(&mut self, metrics: &serde_json::Map<String, serde_json::Value>);
    /// Live progress, for the display.
    fn progress(&mut self, progress: &Progress);
    /// A checkpoint folder has been written completely.
    fn checkpoint(&mut self, path: &std::path::Path);
}

/// A [`Reporter`] that keeps everything it is told, for driving a runner or the trainer
/// without a store (the tests do; so can a script or a benchmark). With `prune_at` it answers
/// [`Decision::Prune`] from that step on; with `cancel_after` it trips the token once that
/// many intermediate values have come.
#[derive(Debug, Clone, Default)]
pub struct RecordingReporter {
    /// Every intermediate report, in order: step, value and the other metrics.
    pub intermediate: Vec<(i64, f64, serde_json::Map<String, serde_json::Value>)>,
    /// The trial-level metrics, merged as the store merges them.
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Every checkpoint folder reported, in order.
    pub checkpoints: Vec<PathBuf>,
    /// How many progress updates came.
    pub progress: usize,
    pub prune_at: Option<i64>,
    pub cancel_after: Option<(usize, CancelToken)>,
}

impl RecordingReporter {
    /// The `(step, value)` pairs of the intermediate reports.
    pub fn steps(&self) -> Vec<(i64, f64)> {
        self.intermediate.iter().map(|(s, v, _)| (*s, *v)).collect()
    }
}

impl Reporter for RecordingReporter {
    fn intermediate(&mut self, step: i64, value: f64, metrics: &serde_json::Map<String, serde_json::Value>) -> Decision {
        self.intermediate.push((step, value, metrics.clone()));
        if let Some((n, token)) = &self.cancel_after {
            if self.intermediate.len() >= *n {
                token.cancel();
            }
        }
        if self.prune_at.is_some_and(|s| step >= s) {
            Decision::Prune
        } else {
            Decision::Continue
        }
    }
    fn metrics(&mut self, metrics: &serde_json::Map<String, serde_json::Value>) {
        self.metrics.extend(metrics.clone());
    }
    fn progress(&mut self, _: &Progress) {
        self.progress += 1;
    }
    fn checkpoint(&mut self, path: &std::path::Path) {
        self.checkpoints.push(path.to_path_buf());
    }
}

/// A cloneable flag that asks running work to stop.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Runs trials. Implementations must not panic on bad trials: a failure is an `Outcome`.
pub trait TrialRunner: Send + Sync {
    /// Runs one trial to its end. When `cancel` trips, stop as soon as possible and return
    /// `Outcome::Failed { reason: "cancelled" }`.
    fn run(&self, assignment: &TrialAssignment, reporter: &mut dyn Reporter, cancel: &CancelToken) -> Outcome;

    /// The store has recorded `state` as the trial's end, and no retry of it will run: the
    /// runner may free what only a resumed attempt would have read. Called after the record
    /// is committed, so a crash before it costs disk, never work; and again, for every trial
    /// that had already ended, when a run opens the study (which catches such a crash). It
    /// must therefore be cheap and idempotent. Returns the folders it removed whole (the
    /// trial's own `artifacts_dir`, those of `resume_from`), so that the store forgets their
    /// trials' `checkpoint`. Default: nothing, none.
    fn recorded(&self, _assignment: &TrialAssignment, _state: TrialState) -> Vec<PathBuf> {
        Vec::new()
    }
}
