//! `FinetuneRunner`: the `TrialRunner` of `[objective] kind = "finetune"`. Each trial runs in
//! a child process (`sft-search worker`) that gets a [`WorkerJob`] as one JSON line on stdin
//! and speaks the JSON-lines protocol of `scheduler::child`, so a panic, an out-of-memory
//! kill or a NaN in one trial never ends the study.
//!
//! A trial whose worker runs out of (GPU) memory is retried once with half the micro-batch
//! (gradient accumulation keeps the effective batch size), from the last checkpoint it wrote.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::data::DataSection;
use super::soup::{SoupCandidate, SoupJob};
use super::spec::{KeepCheckpoints, ModelSection, SpecError, TrainSection, TrainSpec};
use super::train::{TestJob, TrainJob};
use crate::scheduler::child::{run_child, ChildSpec};
use crate::scheduler::{CancelToken, Decision, Progress, Reporter, TrialAssignment, TrialRunner};
use crate::trial::{Direction, Outcome, TrialState};

/// The one line a worker reads first (once per worker process, so the variants' sizes do not
/// matter).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkerJob {
    /// Train a trial; prints progress, evaluations, checkpoints and the result.
    Train(TrainJob),
    /// Evaluate a checkpoint on the test split; prints `{"test": {...}}`.
    Test(TestJob),
    /// Build a greedy model soup; prints `{"metrics": {"soup": {...}}}`.
    Soup(SoupJob),
}

/// Runs fine-tuning trials in worker processes.
#[derive(Debug, Clone)]
pub struct FinetuneRunner {
    /// The `sft-search` binary (by default the running one).
    pub program: PathBuf,
    /// The pretrained folder, resolved once for the study.
    pub model_dir: PathBuf,
    pub data: DataSection,
    pub train: TrainSection,
    pub metric: String,
    pub direction: Direction,
    /// A worker silent for this long is killed (FAIL "timeout").
    pub idle_timeout: Option<Duration>,
    /// How long a worker may take to stop after prune/cancel before it is killed.
    pub grace: Duration,
    /// `[soup]`: whether the study ends with a greedy model soup of its best trials.
    pub soup: super::soup::SoupSection,
}

/// How the child protocol says a worker ran out of memory.
fn is_oom(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("out of memory") || r.contains("cuda_error_out_of_memory")
}

/// A study file's `[model]`, `[data]` or `[train]` table that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneConfigError {
    #[error("[{table}]: {message}")]
    Table { table: &'static str, message: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
}

impl FinetuneRunner {
    /// Builds the runner from the study file's tables (`${VAR}` already expanded): relative
    /// paths in `[model] path` and `[data]` are taken from `base_dir` (the study file's folder);
    /// `[train]` may be absent. Checks that `[train]` parses, that the study metric exists for
    /// the problem, and resolves the model (see [`FinetuneRunner::new`]).
    pub fn from_tables(
        model: &toml::Table,
        data: &toml::Table,
        train: Option<&toml::Table>,
        base_dir: &Path,
        metric: &str,
        direction: Direction,
    ) -> Result<Self, FinetuneConfigError> {
        let err =
            |table: &'static str| move |e: toml::de::Error| FinetuneConfigError::Table { table, message: e.message().trim().to_string() };
        let mut model: ModelSection = model.clone().try_into().map_err(err("model"))?;
        if let Some(p) = model.path.as_mut() {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        }
        let mut data: DataSection = data.clone().try_into().map_err(err("data"))?;
        data.resolve_paths(base_dir);
        let train: TrainSection = match train {
            Some(t) => t.clone().try_into().map_err(err("train"))?,
            None => TrainSection::default(),
        };
        TrainSpec::from_params(&train, &Default::default())?;
        let problem = model.problem.unwrap_or(data.problem);
        let known = super::metrics::metrics_for(problem);
        if !known.contains(&metric) {
            return Err(FinetuneConfigError::Table {
                table: "study",
                message: format!("metric `{metric}` is not one of {} for {}", known.join(", "), problem.as_str()),
            });
        }
        Ok(Self::new(&model, data, train, metric, direction)?)
    }

    /// Resolves `[model]` (Hub download into the standard cache when needed) and keeps the
    /// rest for building jobs. `data` must have its paths resolved already.
    pub fn new(
        model: &ModelSection,
        mut data: DataSection,
        train: TrainSection,
        metric: impl Into<String>,
        direction: Direction,
    ) -> Result<Self, SpecError> {
        let model_dir = model.resolve()?;
        let model_dir = std::fs::canonicalize(&model_dir).unwrap_or(model_dir);
        if let Some(p) = model.problem {
            data.problem = p;
        }
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sft-search"));
        Ok(FinetuneRunner {
            program,
            model_dir,
            data,
            train,
            metric: metric.into(),
            direction,
            idle_timeout: Some(Duration::from_secs(600)),
            grace: Duration::from_secs(20),
            soup: Default::default(),
        })
    }

    /// The job of a trial (the spec error names the bad parameter).
    pub fn job(&self, a: &TrialAssignment) -> Result<TrainJob, SpecError> {
        let spec = TrainSpec::from_params(&self.train, &a.params)?;
        Ok(TrainJob {
            trial: a.number,
            model_dir: self.model_dir.clone(),
            data: self.data.clone(),
            spec,
            metric: self.metric.clone(),
            direction: self.direction,
            device: worker_device(&a.device),
            artifacts_dir: absolute(&a.artifacts_dir),
            // The newest earlier attempt that kept a checkpoint: an attempt that died before
            // its first one (killed during setup) must not cost the work before it.
            resume_from: a.resume_from.iter().find(|dir| super::checkpoint::latest(dir).is_some()).map(|dir| absolute(dir)),
        })
    }

    fn child(&self, job: &WorkerJob, device: &str) -> ChildSpec {
        let mut c = ChildSpec::new(self.program.clone().into_os_string());
        c.args = vec![OsString::from("worker")];
        if let Some(k) = device.strip_prefix("cuda:") {
            c.env.push(("CUDA_VISIBLE_DEVICES".into(), k.to_string()));
        }
        c.stdin_payload = serde_json::to_string(job).unwrap_or_default();
        c.keep_stdin_open = true;
        c.idle_timeout = self.idle_timeout;
        c.grace = self.grace;
        c
    }

    /// Evaluates `checkpoint` once on the test split (in a worker): the test metrics with
    /// `confusion_matrix`, or why it failed.
    pub fn run_test(&self, checkpoint: &Path, device: &str) -> Result<Map<String, Value>, String> {
        let job = WorkerJob::Test(TestJob { checkpoint: absolute(checkpoint), data: self.data.clone(), device: worker_device(device) });
        self.capture(&job, device, "test")
    }

    /// Builds a greedy model soup of `candidates` (best first) in a worker, written to
    /// `out_dir` when more than one trial joins: the worker's `SoupResult` as JSON, or why it
    /// failed.
    pub fn run_soup(&self, candidates: Vec<SoupCandidate>, out_dir: &Path, device: &str) -> Result<Map<String, Value>, String> {
        let job = WorkerJob::Soup(SoupJob {
            candidates: candidates.into_iter().map(|c| SoupCandidate { trial: c.trial, checkpoint: absolute(&c.checkpoint) }).collect(),
            data: self.data.clone(),
            metric: self.metric.clone(),
            direction: self.direction,
            device: worker_device(device),
            out_dir: absolute(out_dir),
        });
        self.capture(&job, device, "soup")
    }

    /// Runs `job` in a worker and returns the object it printed under `key`.
    fn capture(&self, job: &WorkerJob, device: &str, key: &'static str) -> Result<Map<String, Value>, String> {
        let mut cap = Capture { key, found: None };
        let outcome = run_child(&self.child(job, device), &mut cap, &CancelToken::new());
        match (cap.found, outcome) {
            (Some(t), _) => Ok(t),
            (None, Outcome::Failed { reason }) => Err(reason),
            (None, _) => Err(format!("the worker printed no `{key}` result")),
        }
    }
}

/// The device name inside the worker: a CUDA slot becomes `cuda:0` of its own
/// `CUDA_VISIBLE_DEVICES`.
fn worker_device(slot: &str) -> String {
    if slot.starts_with("cuda") {
        "cuda:0".into()
    } else {
        slot.to_string()
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

impl TrialRunner for FinetuneRunner {
    fn run(&self, a: &TrialAssignment, reporter: &mut dyn Reporter, cancel: &CancelToken) -> Outcome {
        let mut job = match self.job(a) {
            Ok(j) => j,
            Err(e) => return Outcome::Failed { reason: e.to_string() },
        };
        let mut outcome = run_child(&self.child(&WorkerJob::Train(job.clone()), &a.device), reporter, cancel);
        // Out of memory: the same trial again with half the micro-batch, until it fits or the
        // micro-batch is one row. Gradient accumulation keeps `batch_size`, so the trial trains
        // what was asked, only in smaller pieces (a failure would teach the sampler that the
        // setting fails). Each attempt that runs out does so in its first step: seconds.
        let mut tried: Vec<usize> = Vec::new();
        loop {
            match outcome {
                Outcome::Failed { reason } if is_oom(&reason) && job.spec.micro_batch_size > 1 && !cancel.is_cancelled() => {
                    tried.push(job.spec.micro_batch_size);
                    let half = job.spec.micro_batch_size / 2;
                    tracing::warn!(
                        "trial {}: out of memory with micro_batch_size {}; retrying with {half}",
                        a.number,
                        job.spec.micro_batch_size
                    );
                    job.spec.micro_batch_size = half;
                    // Continue from the last checkpoint an attempt wrote (the micro-batch is an
                    // execution detail: the run it resumes is the same), not from scratch.
                    if super::checkpoint::latest(&job.artifacts_dir).is_some() {
                        job.resume_from = Some(job.artifacts_dir.clone());
                    }
                    let mut m = Map::new();
                    m.insert("oom_retry_micro_batch_size".into(), Value::from(half));
                    reporter.metrics(&m);
                    outcome = run_child(&self.child(&WorkerJob::Train(job.clone()), &a.device), reporter, cancel);
                }
                Outcome::Failed { reason } if is_oom(&reason) && job.spec.micro_batch_size <= 1 && !tried.is_empty() => {
                    tried.push(job.spec.micro_batch_size);
                    let sizes: Vec<String> = tried.iter().map(usize::to_string).collect();
                    return Outcome::Failed {
                        reason: format!(
                            "out of memory at every micro_batch_size down to one row ({}): one row of this `max_length` does \
                             not fit; a shorter `max_length`, `precision = \"bf16\"` or a smaller model: {reason}",
                            sizes.join(", ")
                        ),
                    };
                }
                other => return other,
            }
        }
    }

    /// A completed or pruned trial is never resumed: its checkpoint folders (and those of its
    /// earlier attempts) drop the optimizer state and the trained weights beside a weight
    /// average, two to three times the model's size with AdamW. A pruned trial's folders go
    /// entirely, its own and those of the attempts it resumed from (unless
    /// `keep_checkpoints = "all"`): `export`, the soup and the test evaluation take COMPLETE
    /// trials only, so nothing could read those weights, and a study where the pruner stops
    /// most trials kept one checkpoint per pruned trial. A completed trial keeps its earlier
    /// attempts' weights: its best epoch may lie in one of them.
    fn recorded(&self, a: &TrialAssignment, state: TrialState) -> Vec<PathBuf> {
        if !matches!(state, TrialState::Complete | TrialState::Pruned) {
            return Vec::new();
        }
        let folders = std::iter::once(&a.artifacts_dir).chain(&a.resume_from);
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        for dir in folders {
            if state == TrialState::Pruned && self.train.keep_checkpoints != Some(KeepCheckpoints::All) {
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => tracing::debug!("trial {} (pruned): removed {}", a.number, dir.display()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!("trial {} (pruned): cannot remove {}: {e}", a.number, dir.display());
                        kept.push(dir);
                        continue;
                    }
                }
                removed.push(dir.clone());
            } else {
                kept.push(dir);
            }
        }
        // What is left keeps no resume-only files.
        let freed: u64 = kept.into_iter().map(|dir| super::checkpoint::drop_resume_files(dir, &[])).sum();
        if freed > 0 {
            tracing::debug!("trial {}: freed {:.1} MiB of resume-only checkpoint files", a.number, freed as f64 / 1048576.0);
        }
        removed
    }
}

/// Keeps the object a worker printed under `key` (in its metrics).
struct Capture {
    key: &'static str,
    found: Option<Map<String, Value>>,
}

impl Reporter for Capture {
    fn intermediate(&mut self, _: i64, _: f64, _: &Map<String, Value>) -> Decision {
        Decision::Continue
    }
    fn metrics(&mut self, m: &Map<String, Value>) {
        if let Some(Value::Object(t)) = m.get(self.key) {
            self.found = Some(t.clone());
        }
    }
    fn progress(&mut self, _: &Progress) {}
    fn checkpoint(&mut self, _: &Path) {}
}
