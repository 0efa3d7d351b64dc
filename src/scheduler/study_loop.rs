//! The study loop: one thread per device slot, each repeating ask → claim → run → tell until
//! the budget is reached, the timeout passes, the sampler is exhausted or the user stops it;
//! plus a housekeeping thread that writes heartbeats and fails trials whose owner died.
//!
//! Every slot has its own connection to the store; all coordination between slots — and
//! between processes sharing the database — goes through the store's transactions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::display::Observer;
use super::runner::{CancelToken, Decision, Progress, Reporter, TrialAssignment, TrialRunner};
use crate::pruner::Pruner;
use crate::sampler::{suggest_around, Sampler, SamplerError, SuggestContext};
use crate::space::{ParamSet, SearchSpace};
use crate::storage::{retried_attempts, retry_depth, Budget, Claim, Owner, Store, StoreError};
use crate::trial::{
    is_external_failure, stopped_by_user, Direction, Outcome, PruningRecord, TrialNumber, TrialRecord, TrialState, DEVICE_ERROR_PREFIX,
};

/// Asks a running study to stop: first new trials, then running ones.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    stop_new: Arc<AtomicBool>,
    cancel_running: CancelToken,
}

impl StopSignal {
    pub fn new() -> Self {
        Self::default()
    }
    /// Start no new trials; running ones finish.
    pub fn stop_new(&self) {
        self.stop_new.store(true, Ordering::SeqCst);
    }
    /// Stop running trials too (they end FAIL "cancelled").
    pub fn cancel_running(&self) {
        self.stop_new();
        self.cancel_running.cancel();
    }
    pub fn is_stopping(&self) -> bool {
        self.stop_new.load(Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancel_running.is_cancelled()
    }
    /// The token handed to runners.
    pub fn running_token(&self) -> CancelToken {
        self.cancel_running.clone()
    }
}

/// Everything the loop needs.
pub struct StudyRun<'a> {
    pub store_path: PathBuf,
    pub study_id: i64,
    pub space: &'a SearchSpace,
    pub direction: Direction,
    pub sampler: &'a dyn Sampler,
    pub sampler_seed: u64,
    pub pruner: &'a dyn Pruner,
    pub runner: &'a dyn TrialRunner,
    pub slots: Vec<String>,
    pub budget: Budget,
    pub timeout: Option<Duration>,
    pub max_retries: usize,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    /// Stop starting trials after this many failures in a row.
    pub max_consecutive_failures: usize,
    /// Trial artifacts go to `artifacts_root/<number>/`.
    pub artifacts_root: PathBuf,
    pub stop: StopSignal,
    pub observer: &'a dyn Observer,
}

/// What ended the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    BudgetReached,
    Exhausted,
    Timeout,
    Stopped,
    Cancelled,
    /// Too many trials failed in a row.
    Failing,
    /// No slot could open its device (a slot whose device fails to open takes no more
    /// trials; the study goes on while any slot is left).
    NoDevice,
    /// The best value has not improved for `[study] patience` finished trials.
    Plateau,
}

#[derive(Debug, Clone)]
pub struct RunSummary {
    pub reason: StopReason,
    /// Trials this process ran, by outcome state.
    pub ran: BTreeMap<&'static str, usize>,
    pub recovered: usize,
    pub wall: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("a slot thread panicked: {0}")]
    Panic(String),
}

/// Runs the study until it ends; returns why it ended.
pub fn run_study(run: &StudyRun) -> Result<RunSummary, LoopError> {
    let started = Instant::now();
    let deadline = run.timeout.map(|t| started + t);
    let mut owner = Owner::current();
    let mut store = Store::open(&run.store_path)?;
    let recovered = store.recover_orphans(run.study_id, run.heartbeat_timeout, run.max_retries)?;
    for r in &recovered {
        run.observer.note(&match r.retry {
            Some(n) => format!("trial {} was interrupted (its owner is gone); it runs again as trial {n}", r.number),
            None => format!("trial {} was interrupted (its owner is gone); no retries left", r.number),
        });
    }
    // Trials that ended before this run get the runner's clean-up again: a crash between a
    // trial's record and its clean-up, or a study older than the clean-up, leaves it undone.
    let history = store.trials(run.study_id)?;
    for t in history.iter().filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned)) {
        let device = t.device.as_deref().unwrap_or_default();
        let assignment = assignment_of(run, &history, t.number, &t.params, t.retry_of, device);
        let own = t.checkpoint.is_some().then_some(t.id);
        forget_removed_checkpoints(&store, own, &history, &assignment, &run.runner.recorded(&assignment, t.state))?;
    }
    let worker_id = store.register_worker(run.study_id, &owner, &run.slots)?;
    owner.worker_id = Some(worker_id);

    let running: Arc<Mutex<Vec<i64>>> = Arc::new(Mutex::new(Vec::new()));
    let outcome_counts: Arc<Mutex<BTreeMap<&'static str, usize>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let slot_reasons: Arc<Mutex<Vec<StopReason>>> = Arc::new(Mutex::new(Vec::new()));
    let housekeeping_done = Arc::new(AtomicBool::new(false));
    let first_error: Arc<Mutex<Option<LoopError>>> = Arc::new(Mutex::new(None));
    let failures_in_a_row = AtomicUsize::new(0);

    std::thread::scope(|scope| {
        // Housekeeping: heartbeats for our trials, recovery of others' dead trials.
        {
            let running = Arc::clone(&running);
            let done = Arc::clone(&housekeeping_done);
            let path = run.store_path.clone();
            scope.spawn(move || {
                let Ok(store) = Store::open(&path) else { return };
                let mut store = store;
                let mut last = Instant::now();
                while !done.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(50));
                    if last.elapsed() < run.heartbeat_interval {
                        continue;
                    }
                    last = Instant::now();
                    let ids = running.lock().map(|r| r.clone()).unwrap_or_default();
                    if let Err(e) = store.heartbeat(&ids) {
                        tracing::warn!("heartbeat: {e}");
                    }
                    let _ = store.touch_worker(worker_id, "running");
                    match store.recover_orphans(run.study_id, run.heartbeat_timeout, run.max_retries) {
                        Ok(rec) => {
                            for r in rec {
                                run.observer.note(&format!("trial {} lost its owner; marked FAIL (interrupted)", r.number));
                            }
                        }
                        Err(e) => tracing::warn!("recovery: {e}"),
                    }
                }
            });
        }
        let mut handles = Vec::new();
        for (slot_index, device) in run.slots.iter().enumerate() {
            let running = Arc::clone(&running);
            let counts = Arc::clone(&outcome_counts);
            let reasons = Arc::clone(&slot_reasons);
            let first_error = Arc::clone(&first_error);
            let owner = owner.clone();
            let failures_in_a_row = &failures_in_a_row;
            handles.push(scope.spawn(move || {
                let r = slot_loop(run, slot_index, device, &owner, deadline, &running, &counts, failures_in_a_row);
                match r {
                    Ok(reason) => {
                        if let Ok(mut v) = reasons.lock() {
                            v.push(reason);
                        }
                    }
                    Err(e) => {
                        // One broken slot stops the others from starting new trials.
                        run.stop.stop_new();
                        if let Ok(mut fe) = first_error.lock() {
                            fe.get_or_insert(e);
                        }
                    }
                }
            }));
        }
        let mut panicked = None;
        for h in handles {
            if let Err(p) = h.join() {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                panicked = Some(msg);
            }
        }
        housekeeping_done.store(true, Ordering::SeqCst);
        if let Some(msg) = panicked {
            if let Ok(mut fe) = first_error.lock() {
                fe.get_or_insert(LoopError::Panic(msg));
            }
        }
    });

    let final_state = if run.stop.is_cancelled() { "cancelled" } else { "finished" };
    let _ = store.touch_worker(worker_id, final_state);
    if let Some(e) = first_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(e);
    }
    let reasons = slot_reasons.lock().map(|r| r.clone()).unwrap_or_default();
    let reason = if run.stop.is_cancelled() {
        StopReason::Cancelled
    } else if !reasons.is_empty() && reasons.iter().all(|r| *r == StopReason::NoDevice) {
        StopReason::NoDevice
    } else if reasons.contains(&StopReason::Failing) {
        StopReason::Failing
    } else if run.stop.is_stopping() {
        StopReason::Stopped
    } else if reasons.contains(&StopReason::Timeout) {
        StopReason::Timeout
    } else if reasons.contains(&StopReason::Exhausted) {
        StopReason::Exhausted
    } else if reasons.contains(&StopReason::Plateau) {
        StopReason::Plateau
    } else {
        StopReason::BudgetReached
    };
    let ran = outcome_counts.lock().map(|c| c.clone()).unwrap_or_default();
    Ok(RunSummary { reason, ran, recovered: recovered.len(), wall: started.elapsed() })
}

/// What a runner is given for trial `number` on `device`: its artifacts folder, and those of
/// its earlier attempts (`retry_of` and the attempts before it, from `history`) to resume from.
fn assignment_of(
    run: &StudyRun,
    history: &[TrialRecord],
    number: TrialNumber,
    params: &ParamSet,
    retry_of: Option<TrialNumber>,
    device: &str,
) -> TrialAssignment {
    let folder = |n: TrialNumber| run.artifacts_root.join(n.to_string());
    TrialAssignment {
        number,
        params: params.clone(),
        device: device.to_string(),
        retry_of,
        artifacts_dir: folder(number),
        resume_from: retried_attempts(history, retry_of).into_iter().map(folder).collect(),
    }
}

/// The store forgets the `checkpoint` of each trial whose folder the runner has removed: the
/// assignment's own trial (`own_id`, `None` when it is known to have none) and its earlier
/// attempts (found in `history`).
fn forget_removed_checkpoints(
    store: &Store,
    own_id: Option<i64>,
    history: &[TrialRecord],
    assignment: &TrialAssignment,
    removed: &[PathBuf],
) -> Result<(), LoopError> {
    if let Some(id) = own_id.filter(|_| removed.contains(&assignment.artifacts_dir)) {
        store.remove_trial_attr(id, "checkpoint")?;
    }
    if removed.is_empty() || assignment.resume_from.is_empty() {
        return Ok(());
    }
    for (number, folder) in retried_attempts(history, assignment.retry_of).into_iter().zip(&assignment.resume_from) {
        if let Some(t) = history.iter().find(|t| t.number == number) {
            if removed.contains(folder) && t.checkpoint.is_some() {
                store.remove_trial_attr(t.id, "checkpoint")?;
            }
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn slot_loop(
    run: &StudyRun,
    slot_index: usize,
    device: &str,
    owner: &Owner,
    deadline: Option<Instant>,
    running: &Mutex<Vec<i64>>,
    counts: &Mutex<BTreeMap<&'static str, usize>>,
    failures_in_a_row: &AtomicUsize,
) -> Result<StopReason, LoopError> {
    let mut store = Store::open(&run.store_path)?;
    loop {
        if failures_in_a_row.load(Ordering::SeqCst) >= run.max_consecutive_failures {
            return Ok(StopReason::Failing);
        }
        if run.stop.is_stopping() {
            return Ok(StopReason::Stopped);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(StopReason::Timeout);
        }
        let claim = store.claim_next(run.study_id, run.space, run.budget, owner, device, |history, number, fixed| {
            let ctx = SuggestContext { space: run.space, direction: run.direction, history, number, seed: run.sampler_seed, fixed };
            suggest_around(run.sampler, &ctx)
        })?;
        let trial = match claim? {
            Claim::Trial(t) => t,
            Claim::Wait => {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            Claim::BudgetReached => return Ok(StopReason::BudgetReached),
            Claim::Exhausted => return Ok(StopReason::Exhausted),
            Claim::Plateau => return Ok(StopReason::Plateau),
        };
        if let Ok(mut r) = running.lock() {
            r.push(trial.id);
        }
        let history = if trial.retry_of.is_some() { store.trials(run.study_id)? } else { Vec::new() };
        let assignment = assignment_of(run, &history, trial.number, &trial.params, trial.retry_of, device);
        run.observer.trial_started(slot_index, &assignment);
        let started = Instant::now();
        let mut reporter = StoreReporter {
            run,
            store: &store,
            trial_id: trial.id,
            number: trial.number,
            slot_index,
            values: Vec::new(),
            error: None,
            progress_saved: None,
            pruning: PruningRecord::default(),
        };
        let outcome = run.runner.run(&assignment, &mut reporter, &run.stop.running_token());
        let outcome = match reporter.error.take() {
            // The trial's record could not be written: say so rather than lose it silently.
            Some(e) if !matches!(outcome, Outcome::Failed { .. }) => Outcome::Failed { reason: format!("recording failed: {e}") },
            _ => outcome,
        };
        let retry = match &outcome {
            Outcome::Failed { reason } if is_external_failure(reason) => {
                let history = store.trials(run.study_id)?;
                history.iter().find(|t| t.id == trial.id).is_some_and(|t| retry_depth(&history, t) < run.max_retries)
            }
            _ => false,
        };
        let retry_number = store.finish(trial.id, &outcome, retry)?;
        if !retry {
            // The claimed record predates the trial's checkpoint: the store is asked in any case.
            forget_removed_checkpoints(&store, Some(trial.id), &history, &assignment, &run.runner.recorded(&assignment, outcome.state()))?;
        }
        if let Ok(mut r) = running.lock() {
            r.retain(|id| *id != trial.id);
        }
        if let Ok(mut c) = counts.lock() {
            *c.entry(outcome.state().as_str()).or_default() += 1;
        }
        // A slot whose device cannot be opened (a missing or broken GPU) takes no more trials:
        // the trial is retried, by a slot whose device works, and the study goes on there.
        // Its failure does not count toward the stop below.
        let device_failed = matches!(&outcome, Outcome::Failed { reason } if reason.starts_with(DEVICE_ERROR_PREFIX));
        // Every failure counts toward the stop, the machine's own (disk full, a trial timed out
        // or killed) as much as the trial's: those are retried, but when they keep coming the
        // study would otherwise start trial after trial that cannot succeed. Only a trial the
        // user stopped (interrupted, cancelled) does not count.
        match &outcome {
            Outcome::Failed { reason } if device_failed => run.observer.note(&format!(
                "slot {device}: its device cannot be opened, so it takes no more trials (the trial runs again on another slot, or in the next run): {reason}"
            )),
            Outcome::Failed { reason } if !stopped_by_user(reason) => {
                let n = failures_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
                if n == run.max_consecutive_failures {
                    let whose = if is_external_failure(reason) { "the machine" } else { "the objective" };
                    run.observer.note(&format!(
                        "{n} trials failed in a row; starting no more ({whose} looks broken; the last one: {reason} — see `sft-search trials`)"
                    ));
                }
            }
            Outcome::Failed { .. } => {}
            _ => failures_in_a_row.store(0, Ordering::SeqCst),
        }
        let history = store.trials(run.study_id)?;
        run.observer.trial_finished(slot_index, trial.number, &outcome, started.elapsed(), retry_number, &history);
        if device_failed {
            return Ok(StopReason::NoDevice);
        }
    }
}

/// Records what a runner reports, and asks the pruner.
struct StoreReporter<'a, 'b> {
    /// What the pruner last said to record about this trial (written when it changes).
    pruning: PruningRecord,
    run: &'a StudyRun<'b>,
    store: &'a Store,
    trial_id: i64,
    number: TrialNumber,
    slot_index: usize,
    values: Vec<(i64, f64)>,
    error: Option<StoreError>,
    /// When live progress was last written to the store (for `status` in other processes).
    progress_saved: Option<Instant>,
}

/// How often live progress is written to the store.
const PROGRESS_SAVE_INTERVAL: Duration = Duration::from_secs(2);

impl StoreReporter<'_, '_> {
    /// Writes the rungs (and bracket) the pruner reports for this trial, when they change.
    fn record_pruning(&mut self) {
        let rec = self.run.pruner.record(self.number, &self.values);
        if rec == self.pruning {
            return;
        }
        match save_pruning_record(self.store, self.trial_id, &self.pruning, &rec) {
            Ok(()) => self.pruning = rec,
            Err(e) => {
                tracing::error!("trial {}: {e}", self.number);
                self.error = Some(e);
            }
        }
    }
}

/// Writes what the pruner recorded about a trial (`after`: its bracket, the rungs it
/// reached) where it differs from what is stored (`before`), as trial user attributes.
pub fn save_pruning_record(store: &Store, trial_id: i64, before: &PruningRecord, after: &PruningRecord) -> Result<(), StoreError> {
    if after.bracket != before.bracket {
        if let Some(b) = after.bracket {
            store.set_trial_attr(trial_id, "bracket", &Value::from(b))?;
        }
    }
    if after.rungs != before.rungs {
        store.set_trial_attr(trial_id, "rungs", &serde_json::to_value(&after.rungs).unwrap_or(Value::Null))?;
    }
    Ok(())
}

impl Reporter for StoreReporter<'_, '_> {
    fn intermediate(&mut self, step: i64, value: f64, metrics: &Map<String, Value>) -> Decision {
        if let Err(e) = self.store.report_intermediate(self.trial_id, step, value, metrics) {
            tracing::error!("trial {}: {e}", self.number);
            self.error = Some(e);
        }
        self.values.push((step, value));
        self.run.observer.trial_progress(self.slot_index, self.number, Some((step, value)), None);
        let pruner = self.run.pruner;
        let decision = if pruner.needs_history(self.number, &self.values) {
            match self.store.trials(self.run.study_id) {
                // Every other trial, running ones included (ASHA compares with them).
                Ok(h) => {
                    let others: Vec<_> = h.into_iter().filter(|t| t.id != self.trial_id).collect();
                    pruner.decide(self.number, &self.values, &others, self.run.direction)
                }
                Err(_) => Decision::Continue,
            }
        } else {
            pruner.decide(self.number, &self.values, &[], self.run.direction)
        };
        self.record_pruning();
        decision
    }

    fn metrics(&mut self, metrics: &Map<String, Value>) {
        if let Err(e) = self.store.merge_metrics(self.trial_id, metrics) {
            tracing::error!("trial {}: {e}", self.number);
            self.error = Some(e);
        }
    }

    fn progress(&mut self, progress: &Progress) {
        self.run.observer.trial_progress(self.slot_index, self.number, None, Some(progress));
        if self.progress_saved.is_none_or(|t| t.elapsed() >= PROGRESS_SAVE_INTERVAL) {
            self.progress_saved = Some(Instant::now());
            if let Ok(v) = serde_json::to_value(progress) {
                // Best effort: live progress is shown, not kept.
                if let Err(e) = self.store.set_trial_attr(self.trial_id, "progress", &v) {
                    tracing::debug!("trial {}: progress not saved: {e}", self.number);
                }
            }
        }
    }

    fn checkpoint(&mut self, path: &std::path::Path) {
        if let Err(e) = self.store.set_trial_attr(self.trial_id, "checkpoint", &Value::String(path.display().to_string())) {
            tracing::error!("trial {}: {e}", self.number);
            self.error = Some(e);
        }
    }
}
