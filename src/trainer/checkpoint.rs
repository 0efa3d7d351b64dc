//! Checkpoint folders of a trial, written so that a crash never leaves a half one: everything
//! goes into a temporary sibling folder which is renamed into place at the end.
//!
//! A folder holds what Hugging Face can load (`config.json`, `model.safetensors`, the
//! tokenizer files copied from the pretrained folder) and what resuming needs
//! (`optimizer.safetensors`: moments and step count; `trainer_state.json`: position in the
//! run, history, best so far, label names). Dropout, shuffling and augmentation are seeded
//! from (seed, epoch, step), so the position is all the RNG state there is.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::TrainSpec;
use crate::trial::Direction;

pub const TRAINER_STATE: &str = "trainer_state.json";
pub const OPTIMIZER_STATE: &str = "optimizer.safetensors";
pub const WEIGHTS: &str = "model.safetensors";
/// Tokenizer files copied into each checkpoint when the pretrained folder has them.
pub const TOKENIZER_FILES: &[&str] = &["tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"];

/// One evaluation on the valid split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// The reported step: the epoch number (1..) or, with `eval_steps`, the optimizer step.
    pub step: i64,
    /// Epochs done, fractional between epoch ends.
    pub epoch: f64,
    pub global_step: u64,
    /// The study metric.
    pub value: f64,
    /// All valid metrics plus `train_loss`.
    pub metrics: serde_json::Map<String, serde_json::Value>,
}

/// Where a run stands, written with every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub spec: TrainSpec,
    pub metric: String,
    pub direction: Direction,
    /// Class names by id (empty for regression).
    pub labels: Vec<String>,
    pub num_labels: usize,
    /// Completed epochs before the current one.
    pub epoch: usize,
    /// Batches of the current epoch already trained (0 at an epoch boundary).
    pub batch_in_epoch: usize,
    pub global_step: u64,
    pub steps_per_epoch: usize,
    pub history: Vec<EvalRecord>,
    pub best: Option<EvalRecord>,
    /// The folder holding the best weights, when kept.
    pub best_checkpoint: Option<PathBuf>,
    /// Evaluations since the best one (early stopping).
    pub evals_without_improvement: usize,
    /// Sum of training losses (times rows) and rows in the current epoch so far.
    pub epoch_loss_sum: f64,
    pub epoch_rows: usize,
    pub epoch_correct: usize,
    /// Multi-label: the decision threshold the evaluation of these weights used (fixed, or
    /// tuned on the valid split); what the test evaluation, `export` and `predict` use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Set for token and multi-label classification only (older checkpoints lack it: they
    /// are sequence classification or regression, told apart by `labels`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<crate::trainer::data::Problem>,
}

impl TrainerState {
    /// Multi-label: the threshold these weights predict with (the recorded one; else the
    /// trial's fixed one, 0.5 by default).
    pub fn threshold(&self) -> f64 {
        self.threshold.unwrap_or_else(|| self.spec.threshold.fixed_or_half())
    }

    /// What the checkpoint was trained for: the recorded problem, else regression when there
    /// is one output and no class names, else classification.
    pub fn problem(&self) -> crate::trainer::data::Problem {
        use crate::trainer::data::Problem;
        match self.problem {
            Some(p) => p,
            None if self.labels.is_empty() && self.num_labels == 1 => Problem::Regression,
            None => Problem::Classification,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {why}")]
    Io { path: PathBuf, why: String },
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::Io { path: path.to_path_buf(), why: e.to_string() }
}

/// Writes a checkpoint folder at `dest` atomically. `fill` writes the files into the
/// temporary folder it is given; then the state and tokenizer files are added and the
/// folder renamed over `dest` (an older `dest` is removed first).
pub fn write_atomic(
    dest: &Path,
    pretrained: &Path,
    state: &TrainerState,
    fill: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), CheckpointError> {
    let parent = dest.parent().ok_or_else(|| io_err(dest, "no parent folder"))?;
    std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    let name = dest.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    let result = (|| {
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| io_err(&tmp, e))?;
        fill(&tmp).map_err(|e| io_err(dest, e))?;
        for f in TOKENIZER_FILES {
            let src = pretrained.join(f);
            if src.is_file() {
                std::fs::copy(&src, tmp.join(f)).map_err(|e| io_err(&tmp.join(f), e))?;
            }
        }
        let text = serde_json::to_string_pretty(state).map_err(|e| io_err(dest, e))?;
        std::fs::write(tmp.join(TRAINER_STATE), text).map_err(|e| io_err(&tmp.join(TRAINER_STATE), e))?;
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| io_err(dest, e))?;
        }
        std::fs::rename(&tmp, dest).map_err(|e| io_err(dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Reads `dir/trainer_state.json`.
pub fn read_state(dir: &Path) -> Result<TrainerState, CheckpointError> {
    let p = dir.join(TRAINER_STATE);
    let text = std::fs::read_to_string(&p).map_err(|e| io_err(&p, e))?;
    serde_json::from_str(&text).map_err(|e| io_err(&p, e))
}

/// The files of a checkpoint folder that only resuming reads (the optimizer's moments, and
/// the trained weights beside a weight average): dead weight once a newer checkpoint exists
/// or the trial has ended.
pub const RESUME_ONLY_FILES: &[&str] = &[OPTIMIZER_STATE, super::ema::TRAINED_WEIGHTS];

/// The checkpoint folder of the newest evaluation when that evaluation is not kept for itself
/// (`keep_checkpoints = "best"` after an evaluation that did not improve): only a resume
/// reads it.
pub const RESUME_ONLY_FOLDER: &str = "last";

/// Removes the resume-only files ([`RESUME_ONLY_FILES`]) from every checkpoint folder under
/// `artifacts` except those in `keep`, and the [`RESUME_ONLY_FOLDER`] unless kept; returns
/// the bytes freed. The weights, state and tokenizer of the other folders stay, so they
/// still load, export and join a soup; they are just no longer resumed from. A file that
/// cannot be removed is left (it costs disk, nothing else).
pub fn drop_resume_files(artifacts: &Path, keep: &[&Path]) -> u64 {
    let Ok(entries) = std::fs::read_dir(artifacts) else { return 0 };
    let mut freed = 0;
    for dir in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        let hidden = dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden || !dir.is_dir() || keep.contains(&dir.as_path()) || !dir.join(TRAINER_STATE).is_file() {
            continue;
        }
        if dir.file_name().is_some_and(|n| n == RESUME_ONLY_FOLDER) {
            let size: u64 = std::fs::read_dir(&dir).map_or(0, |fs| fs.flatten().filter_map(|f| f.metadata().ok()).map(|m| m.len()).sum());
            if std::fs::remove_dir_all(&dir).is_ok() {
                freed += size;
            }
            continue;
        }
        for f in RESUME_ONLY_FILES {
            let p = dir.join(f);
            let size = std::fs::metadata(&p).map_or(0, |m| m.len());
            if p.is_file() && std::fs::remove_file(&p).is_ok() {
                freed += size;
            }
        }
    }
    freed
}

/// The most advanced complete checkpoint under `artifacts` (by global step), if any:
/// the folder to resume from.
pub fn latest(artifacts: &Path) -> Option<(PathBuf, TrainerState)> {
    let entries = std::fs::read_dir(artifacts).ok()?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .filter(|p| p.join(OPTIMIZER_STATE).is_file() && p.join(WEIGHTS).is_file())
        .filter_map(|p| read_state(&p).ok().map(|s| (p, s)))
        .max_by_key(|(_, s)| s.global_step)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with a trainer state and the named files, each `bytes` long.
    fn folder(root: &Path, name: &str, files: &[&str], bytes: usize) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in files {
            std::fs::write(dir.join(f), vec![7u8; bytes]).unwrap();
        }
        dir
    }

    #[test]
    fn resume_files_go_from_every_checkpoint_but_the_kept_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let all = [WEIGHTS, TRAINER_STATE, OPTIMIZER_STATE, super::super::ema::TRAINED_WEIGHTS];
        let old = folder(tmp.path(), "checkpoint-5", &all, 10);
        let best = folder(tmp.path(), "checkpoint-10", &all, 10);
        let newest = folder(tmp.path(), "checkpoint-15", &all[..3], 10);
        let last = folder(tmp.path(), RESUME_ONLY_FOLDER, &all[..3], 10);
        // a half-written folder and a folder that is no checkpoint are not touched
        let tmp_dir = folder(tmp.path(), ".tmp-checkpoint-20-1", &all, 10);
        let other = folder(tmp.path(), "logs", &[OPTIMIZER_STATE], 10);

        assert_eq!(drop_resume_files(tmp.path(), &[&newest, &best, &last]), 20);
        assert!(last.join(OPTIMIZER_STATE).is_file(), "a kept `last` stays whole");
        assert!(old.join(WEIGHTS).is_file() && old.join(TRAINER_STATE).is_file());
        assert!(!old.join(OPTIMIZER_STATE).exists() && !old.join(super::super::ema::TRAINED_WEIGHTS).exists());
        for kept in [&best, &newest, &tmp_dir, &other] {
            assert!(kept.join(OPTIMIZER_STATE).is_file(), "{}", kept.display());
        }
        assert_eq!(drop_resume_files(tmp.path(), &[]), 60, "best: both files; newest: the optimizer; `last`: all of it");
        assert!(!last.exists());
        assert!(latest(tmp.path()).is_none(), "nothing is resumable any more");
        assert!(best.join(WEIGHTS).is_file() && newest.join(WEIGHTS).is_file());
        assert_eq!(drop_resume_files(&tmp.path().join("missing"), &[]), 0);
    }
}
