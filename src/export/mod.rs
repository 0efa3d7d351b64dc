//! Export of a trial's kept checkpoint as a Hugging Face model folder, and batch prediction
//! with such a folder.
//!
//! [`export_trial`] writes (atomically: a temporary sibling folder renamed into place, see
//! [`folder`]):
//! * `config.json`: the pretrained config with `architectures: ["BertForSequenceClassification"]`
//!   (`RobertaForSequenceClassification`, `DistilBertForSequenceClassification`, … for the
//!   other families), `num_labels`, `id2label`, `label2id`, `problem_type` and the trial's
//!   dropout ([`hf`]);
//! * `model.safetensors`: every weight under its Hugging Face name (`bert.embeddings…`,
//!   `bert.encoder.layer.N…`, `bert.pooler.dense…`, `classifier.weight/bias`; RoBERTa's,
//!   DistilBERT's and ELECTRA's own names, see [`crate::trainer::model::arch`]);
//! * the tokenizer files (`tokenizer.json`, `vocab.txt` where present, `tokenizer_config.json`
//!   with `model_max_length` = the trial's `max_length`, `special_tokens_map.json`);
//! * `sft_search.json`: where it came from (study, trial, parameters, valid and test metrics,
//!   the data split seed, the tool's version).
//!
//! so that `AutoModelForSequenceClassification.from_pretrained(dir)` and
//! `AutoTokenizer.from_pretrained(dir)` load it. [`predict::Predictor`] loads such a folder (or
//! any compatible classification folder of a supported family) for inference; [`table`] reads the
//! input file with all its columns and writes the predictions.

pub mod folder;
pub mod hf;
pub mod predict;
pub mod table;

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::{json, Map, Value};

use crate::storage::{Store, StoreError, StudyInfo};
use crate::trainer::checkpoint::{self, CheckpointError, TrainerState};
use crate::trainer::model::{read_config, BertClassifier, HeadKind, ModelError, ModelOptions};
use crate::trial::{best_trial, TrialNumber, TrialRecord, TrialState};
pub use folder::FolderError;
pub use hf::HfError;

/// The provenance file of an export.
pub const PROVENANCE: &str = "sft_search.json";

/// Why a trial could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("study `{study}` has no COMPLETE trial to export yet")]
    NoCompleteTrial { study: String },
    #[error("study `{study}` has no trial {number}")]
    NoSuchTrial { study: String, number: TrialNumber },
    #[error("trial {number} of study `{study}` is {state}, not COMPLETE: only finished trials have a best checkpoint to export")]
    NotComplete { study: String, number: TrialNumber, state: TrialState },
    #[error("trial {number} of study `{study}` has no kept checkpoint{why}")]
    NoCheckpoint { study: String, number: TrialNumber, why: String },
    #[error("the checkpoint of trial {number} ({path}) is gone; was the study's `.trials` folder moved or deleted?")]
    CheckpointGone { number: TrialNumber, path: PathBuf },
    #[error("the study's model soup ({path}) is gone; was the study's `.trials` folder moved or deleted? Export a single trial with --trial N, or run the study again to rebuild the soup")]
    SoupGone { path: PathBuf },
    #[error("cannot read the checkpoint of trial {number}: {why}")]
    Checkpoint { number: TrialNumber, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Folder(#[from] FolderError),
    #[error(transparent)]
    Hf(#[from] HfError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub out_dir: PathBuf,
    pub study: String,
    pub trial: TrialNumber,
    /// The study metric's name and the trial's value.
    pub metric: String,
    pub value: Option<f64>,
    /// The checkpoint folder exported.
    pub checkpoint: PathBuf,
    /// Files written, with their sizes in bytes, sorted by name.
    pub files: Vec<(String, u64)>,
    /// When the study's model soup was exported: its trials (`trial` is the best of them).
    pub soup: Option<Vec<u64>>,
}

/// The trial to export: `number`, or the best COMPLETE one.
pub fn pick_trial<'a>(study: &StudyInfo, trials: &'a [TrialRecord], number: Option<TrialNumber>) -> Result<&'a TrialRecord, ExportError> {
    let t = match number {
        Some(n) => {
            trials.iter().find(|t| t.number == n).ok_or_else(|| ExportError::NoSuchTrial { study: study.name.clone(), number: n })?
        }
        None => best_trial(trials, study.direction).ok_or_else(|| ExportError::NoCompleteTrial { study: study.name.clone() })?,
    };
    if t.state != TrialState::Complete {
        return Err(ExportError::NotComplete { study: study.name.clone(), number: t.number, state: t.state });
    }
    Ok(t)
}

/// The study file stored with the study (`sft:study_file`), parsed.
fn stored_study_file(study: &StudyInfo) -> Option<toml::Table> {
    study.user_attrs.get("sft:study_file").and_then(Value::as_str).and_then(|s| s.parse::<toml::Table>().ok())
}

/// What `sft_search.json` records of the stored study file's `[data]` table, with the data
/// section's own defaults for keys left out.
struct StoredData {
    split_seed: Option<u64>,
    /// The text column and pair column, which `predict` reads by default.
    text_columns: (String, Option<String>),
    /// The label column, which `predict` scores against by default.
    label_column: String,
    /// Multi-label: what separates a row's labels in a cell (`None` when not set).
    label_separator: Option<String>,
}

/// The stored study file's `[data]` facts, read once; `None` without a `[data]` table.
fn stored_data(study: &StudyInfo) -> Option<StoredData> {
    use crate::trainer::data::config::{default_label_column, default_split_seed, default_text_column};
    let data = stored_study_file(study)?.remove("data")?.as_table().cloned()?;
    let text = |k: &str| data.get(k).and_then(toml::Value::as_str).map(str::to_string);
    Some(StoredData {
        split_seed: match data.get("split_seed") {
            Some(v) => v.as_integer().and_then(|i| u64::try_from(i).ok()),
            None => Some(default_split_seed()),
        },
        text_columns: (text("text_column").unwrap_or_else(default_text_column), text("text_pair_column")),
        label_column: text("label_column").unwrap_or_else(default_label_column),
        label_separator: text("label_separator"),
    })
}

/// Why a COMPLETE trial kept no checkpoint, from its parameters or the study's `[train]`.
fn no_checkpoint_reason(study: &StudyInfo, t: &TrialRecord) -> String {
    let searched = t.params.get("keep_checkpoints").map(|v| v.to_string().trim_matches('"').to_string());
    let fixed = || stored_study_file(study)?.get("train")?.get("keep_checkpoints")?.as_str().map(str::to_string);
    match searched.map(|k| (k, "its parameter")).or_else(|| fixed().map(|k| (k, "[train]"))) {
        Some((k, from)) if k == "none" => format!(
            ": it ran with keep_checkpoints = \"none\" ({from}), which keeps no weights; set keep_checkpoints = \"best\" \
             (the default) or \"all\" and re-run the trial"
        ),
        _ => " (keep_checkpoints = \"none\" keeps none; it is also missing for trials that did not run in a fine-tuning \
               study); export another trial with --trial N"
            .to_string(),
    }
}

/// The checkpoint folder of `t` (a relative path is taken from the database's folder).
fn checkpoint_dir(store: &Store, study: &StudyInfo, t: &TrialRecord) -> Result<PathBuf, ExportError> {
    let Some(raw) = t.checkpoint.as_deref() else {
        return Err(ExportError::NoCheckpoint { study: study.name.clone(), number: t.number, why: no_checkpoint_reason(study, t) });
    };
    let mut p = PathBuf::from(raw);
    if p.is_relative() && !p.is_dir() {
        if let Some(base) = store.path().parent() {
            p = base.join(p);
        }
    }
    if !p.is_dir() {
        return Err(ExportError::CheckpointGone { number: t.number, path: PathBuf::from(raw) });
    }
    Ok(p)
}

/// The content of `sft_search.json`.
pub fn provenance(study: &StudyInfo, t: &TrialRecord, state: &TrainerState, source: &Path) -> Value {
    let params: Map<String, Value> = t.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    let metric = study.user_attrs.get("sft:metric").and_then(Value::as_str).unwrap_or(&state.metric);
    let valid_metrics = match &state.best {
        Some(b) => Value::Object(b.metrics.clone()),
        None => Value::Object(t.metrics.iter().filter(|(_, v)| v.is_number()).map(|(k, v)| (k.clone(), v.clone())).collect()),
    };
    let mut valid = json!({"value": t.value, "metrics": valid_metrics});
    if let Some(b) = &state.best {
        valid["epoch"] = json!(b.epoch);
        valid["step"] = json!(b.step);
    }
    let data = stored_data(study);
    let (text_column, text_pair_column) = match data.as_ref().map(|d| &d.text_columns) {
        Some((t, p)) => (Value::from(t.as_str()), p.as_deref().map(Value::from).unwrap_or(Value::Null)),
        None => (Value::Null, Value::Null),
    };
    json!({
        "study": study.name,
        "trial": t.number,
        "metric": metric,
        "direction": study.direction.as_optuna().to_lowercase(),
        "params": params,
        "valid": valid,
        "test": t.metrics.get("test").cloned().unwrap_or(Value::Null),
        "fit": t.metrics.get("fit").cloned().unwrap_or(Value::Null),
        "split_seed": data.as_ref().and_then(|d| d.split_seed),
        "problem": state.problem().as_str(),
        "labels": state.labels,
        "threshold": (state.problem() == crate::trainer::data::Problem::MultiLabelClassification).then(|| state.threshold()),
        "max_length": state.spec.max_length,
        "text_column": text_column,
        "text_pair_column": text_pair_column,
        "label_column": data.as_ref().map(|d| d.label_column.as_str()),
        "label_separator": data.as_ref().and_then(|d| d.label_separator.as_deref()),
        "train": state.spec,
        "checkpoint": source,
        "sft_search_version": env!("CARGO_PKG_VERSION"),
        "exported_at": crate::storage::now_text(),
    })
}

/// Writes the HF folder of one checkpoint into `dir` (an empty folder).
fn write_export(dir: &Path, ckpt: &Path, state: &TrainerState, provenance: &Value, number: TrialNumber) -> Result<(), ExportError> {
    let bad = |why: String| ExportError::Checkpoint { number, why };
    let base = hf::read_json_object(&ckpt.join("config.json")).map_err(|e| bad(e.to_string()))?;
    let problem = state.problem();
    let head = hf::HeadConfig { labels: state.labels.clone(), problem, dropout: state.spec.dropout };
    let num_labels = head.num_labels();
    if num_labels != state.num_labels {
        return Err(bad(format!("{} says {} outputs for {} labels", checkpoint::TRAINER_STATE, state.num_labels, state.labels.len())));
    }
    // The classifier must be in the file: the loader would silently initialise a missing one.
    let weights = ckpt.join(checkpoint::WEIGHTS);
    let shapes = hf::safetensors_shapes(&weights).map_err(|e| bad(e.to_string()))?;
    let arch = read_config(ckpt).map_err(|e| bad(e.to_string()))?.arch;
    let out = format!("{}.weight", arch.classifier_name(HeadKind::for_problem(problem)));
    match shapes.get(&out) {
        Some(s) if s.first() == Some(&num_labels) => {}
        Some(s) => return Err(bad(format!("{}: {out} has shape {s:?}, expected {num_labels} rows", weights.display()))),
        None => return Err(bad(format!("{}: no {out} (not a fine-tuned checkpoint)", weights.display()))),
    }
    let opts = ModelOptions { num_labels, head: HeadKind::for_problem(problem), ..ModelOptions::default() };
    let model = BertClassifier::load(ckpt, &opts, &Device::Cpu).map_err(|e| bad(e.to_string()))?;
    hf::write_json(&dir.join("config.json"), &Value::Object(hf::classification_config(&base, &head)))?;
    hf::write_weights(&model, &dir.join("model.safetensors"))?;
    hf::write_tokenizer_files(ckpt, dir, state.spec.max_length).map_err(|e| bad(e.to_string()))?;
    hf::write_json(&dir.join(PROVENANCE), provenance)?;
    Ok(())
}

/// Exports trial `trial` (default: the best COMPLETE one) of `study` into `out_dir` as a
/// Hugging Face folder. A non-empty `out_dir` is refused unless `force`; the folder appears
/// whole or not at all.
pub fn export_trial(
    store: &Store,
    study: &StudyInfo,
    trial: Option<TrialNumber>,
    out_dir: &Path,
    force: bool,
) -> Result<ExportSummary, ExportError> {
    let trials = store.trials(study.id)?;
    let t = pick_trial(study, &trials, trial)?;
    // Without --trial, a study that kept a model soup exports the soup.
    let soup = match trial {
        None => crate::trainer::soup::stored_with_checkpoint(&study.user_attrs),
        Some(_) => None,
    };
    let ckpt = match soup.and_then(|s| s.get("checkpoint")).and_then(Value::as_str) {
        Some(c) if Path::new(c).is_dir() => PathBuf::from(c),
        Some(c) => return Err(ExportError::SoupGone { path: PathBuf::from(c) }),
        None => checkpoint_dir(store, study, t)?,
    };
    folder::check_dest(out_dir, force)?;
    let state = checkpoint::read_state(&ckpt).map_err(|e| match e {
        CheckpointError::Io { why, path } => ExportError::Checkpoint { number: t.number, why: format!("{}: {why}", path.display()) },
    })?;
    let source = std::fs::canonicalize(&ckpt).unwrap_or_else(|_| ckpt.clone());
    let mut prov = provenance(study, t, &state, &source);
    let mut soup_trials = None;
    if let Some(soup) = soup {
        // The soup's own valid and test figures; `trial` stays the best single trial.
        prov["valid"] = json!({"value": soup.get("value"), "metrics": soup.get("metrics")});
        prov["test"] = soup.get("test").cloned().unwrap_or(Value::Null);
        prov["soup"] = json!({"kind": soup.get("kind"), "ingredients": soup.get("ingredients"), "best_single": soup.get("best_single")});
        soup_trials = soup.get("ingredients").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect());
    }
    folder::write_atomic(out_dir, force, |dir| write_export(dir, &ckpt, &state, &prov, t.number))?;
    let mut files: Vec<(String, u64)> = std::fs::read_dir(out_dir)
        .map_err(|e| FolderError::Io { path: out_dir.to_path_buf(), source: e })?
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().map(|m| m.len()).unwrap_or(0)))
        .collect();
    files.sort();
    Ok(ExportSummary {
        out_dir: out_dir.to_path_buf(),
        study: study.name.clone(),
        trial: t.number,
        metric: prov["metric"].as_str().unwrap_or("value").to_string(),
        value: t.value,
        checkpoint: source,
        files,
        soup: soup_trials,
    })
}

#[cfg(test)]
mod tests;
