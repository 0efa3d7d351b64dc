//! What a fine-tuning trial trains: the study file's `[model]` and `[train]` sections as
//! written by the user, and the resolved [`TrainSpec`] of one trial, where each searched
//! parameter (a name of `[space]`) overrides the fixed value of the same name in `[train]`,
//! and everything else takes Hugging Face Trainer-like defaults.
//!
//! Also resolves `[model] hub = "org/name"` through the standard Hugging Face cache
//! (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), downloading with
//! `hf-hub` only when the files are missing and `HF_HUB_OFFLINE` is not set.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::space::{ParamSet, ParamValue};
use crate::trainer::metrics::multilabel::THRESHOLD as DEFAULT_THRESHOLD;

/// Classification (cross-entropy) or regression (one output, MSE); `[model] problem`
/// overrides `[data] problem` when given.
pub use super::data::Problem;

/// `[model]`: where the pretrained checkpoint comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A Hugging Face-style folder (`config.json`, `model.safetensors`, `tokenizer.json` or
    /// `vocab.txt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// A Hub id such as `sentence-transformers/all-MiniLM-L6-v2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub: Option<String>,
    /// The Hub revision (branch, tag or commit); `main` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<Problem>,
}

/// Numeric precision of a trial's forward and backward passes (`[train] precision`, and
/// `bench train --precision`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// Mixed precision: activations and matmuls in bf16; weights (the master copy), their
    /// gradients, the optimizer state, layer norms, softmax, logits and loss in f32. Made for
    /// GPUs; on the CPU candle emulates bf16 matmuls, so it is slower there than fp32.
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Precision::Fp32 => candle_core::DType::F32,
            Precision::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// Learning-rate schedule after warm-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    #[default]
    Linear,
    Cosine,
    Constant,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    #[default]
    Adamw,
    Sgd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    #[default]
    None,
    Balanced,
}

/// Multi-label classification: the probability at and above which a label is predicted — a
/// fixed number in (0, 1), or `"tuned"`: at every evaluation, the one of 0.05, 0.06, …, 0.95
/// under which the valid split scores best on the study's metric (the nearest to 0.5 among
/// equals). The test split never chooses it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Threshold {
    Fixed(f64),
    Tuned(TunedWord),
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Threshold;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number in (0, 1) or \"tuned\"")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Threshold, E> {
                Ok(Threshold::Fixed(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Threshold, E> {
                Ok(Threshold::Fixed(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Threshold, E> {
                Ok(Threshold::Fixed(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Threshold, E> {
                match v {
                    "tuned" => Ok(Threshold::Tuned(TunedWord::Tuned)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The word `"tuned"` of [`Threshold::Tuned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunedWord {
    Tuned,
}

impl Default for Threshold {
    fn default() -> Self {
        Threshold::Fixed(DEFAULT_THRESHOLD)
    }
}

impl Threshold {
    /// The fixed threshold; 0.5 for `"tuned"` (where a single number is needed before any
    /// evaluation chose one: the train split's exact-match count).
    pub fn fixed_or_half(self) -> f64 {
        match self {
            Threshold::Fixed(t) => t,
            Threshold::Tuned(_) => DEFAULT_THRESHOLD,
        }
    }
}

fn as_threshold(name: &str, v: &ParamValue) -> Result<Threshold, SpecError> {
    match v {
        ParamValue::Str(s) if s == "tuned" => Ok(Threshold::Tuned(TunedWord::Tuned)),
        _ => v.as_f64().map(Threshold::Fixed).ok_or_else(|| type_err(name, v, "a number in (0, 1) or \"tuned\"")),
    }
}

/// Which epoch checkpoints stay on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepCheckpoints {
    #[default]
    Best,
    All,
    None,
}

/// `[train]`: every training option as an optional fixed value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batch_size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_layers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_embeddings: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_ratio: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<ScheduleKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer: Option<OptimizerKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_weights: Option<ClassWeights>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment_prob: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping_patience: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_steps: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_checkpoints: Option<KeepCheckpoints>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length_bucketing: Option<bool>,
    /// CPU threads for the tensor kernels; a default suited to the machine when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_decay: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Threshold>,
}

/// The names a `[space]` parameter may take to drive a training option.
pub const TRAIN_OPTIONS: &[&str] = &[
    "learning_rate",
    "batch_size",
    "micro_batch_size",
    "epochs",
    "freeze_layers",
    "freeze_embeddings",
    "weight_decay",
    "warmup_ratio",
    "scheduler",
    "optimizer",
    "momentum",
    "max_grad_norm",
    "label_smoothing",
    "class_weights",
    "dropout",
    "augment_prob",
    "early_stopping_patience",
    "max_length",
    "seed",
    "eval_steps",
    "keep_checkpoints",
    "length_bucketing",
    "threads",
    "precision",
    "ema_decay",
    "threshold",
];

/// The resolved training options of one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    pub learning_rate: f64,
    pub batch_size: usize,
    /// Rows per forward/backward pass; gradients of `batch_size / micro_batch_size`
    /// micro-batches are accumulated before each optimizer step.
    pub micro_batch_size: usize,
    pub epochs: usize,
    pub freeze_layers: usize,
    pub freeze_embeddings: bool,
    pub weight_decay: f64,
    pub warmup_ratio: f64,
    pub scheduler: ScheduleKind,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    /// Global gradient-norm clipping; 0 turns it off.
    pub max_grad_norm: f64,
    pub label_smoothing: f64,
    pub class_weights: ClassWeights,
    /// Dropout for hidden states and attention; `None` keeps the checkpoint's config.
    pub dropout: Option<f64>,
    pub augment_prob: f64,
    /// Stop after this many evaluations without improvement; `None` never stops early.
    pub early_stopping_patience: Option<usize>,
    pub max_length: usize,
    pub seed: u64,
    /// Evaluate every this many optimizer steps as well as after each epoch.
    pub eval_steps: Option<usize>,
    pub keep_checkpoints: KeepCheckpoints,
    pub length_bucketing: bool,
    /// `None`: pick for the machine.
    pub threads: Option<usize>,
    /// fp32 or bf16 mixed precision (absent in checkpoints written before it existed: fp32).
    #[serde(default)]
    pub precision: Precision,
    /// Per-step decay of an exponential moving average of the trainable weights, which is
    /// what gets evaluated and kept (`trainer::ema`); 0 turns it off (absent in checkpoints
    /// written before it existed: off).
    #[serde(default)]
    pub ema_decay: f64,
    /// Multi-label: the decision threshold, fixed or tuned on the valid split (absent in
    /// checkpoints written before it existed: 0.5).
    #[serde(default)]
    pub threshold: Threshold,
}

impl Default for TrainSpec {
    /// Hugging Face `TrainingArguments` defaults where they exist.
    fn default() -> Self {
        TrainSpec {
            learning_rate: 5e-5,
            batch_size: 16,
            micro_batch_size: 16,
            epochs: 3,
            freeze_layers: 0,
            freeze_embeddings: false,
            weight_decay: 0.0,
            warmup_ratio: 0.0,
            scheduler: ScheduleKind::Linear,
            optimizer: OptimizerKind::Adamw,
            momentum: 0.9,
            max_grad_norm: 1.0,
            label_smoothing: 0.0,
            class_weights: ClassWeights::None,
            dropout: None,
            augment_prob: 0.0,
            early_stopping_patience: None,
            max_length: 128,
            seed: 42,
            eval_steps: None,
            keep_checkpoints: KeepCheckpoints::Best,
            length_bucketing: false,
            threads: None,
            precision: Precision::Fp32,
            ema_decay: 0.0,
            threshold: Threshold::default(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("parameter `{name}` = {value}: expected {expected}")]
    Type { name: String, value: String, expected: &'static str },
    #[error("parameter `{name}` = {value}: {why}")]
    Range { name: String, value: String, why: &'static str },
    #[error("parameter `{0}` of [space] is not a training option (known: {known})", known = TRAIN_OPTIONS.join(", "))]
    Unknown(String),
    #[error("[model] needs `path` (a local Hugging Face folder) or `hub` (\"org/name\"), not both and not neither")]
    ModelSource,
    #[error("model folder {path}: {why}")]
    ModelFolder { path: PathBuf, why: String },
    #[error(
        "model `{hub}` (revision {revision}) is not in the Hugging Face cache at {cache}{why}; \
         download it there (e.g. `huggingface-cli download {hub}`) or point `model.path` at a \
         local folder holding config.json, model.safetensors and tokenizer.json"
    )]
    HubUnavailable { hub: String, revision: String, cache: PathBuf, why: String },
}

fn type_err(name: &str, v: &ParamValue, expected: &'static str) -> SpecError {
    SpecError::Type { name: name.to_string(), value: v.to_string(), expected }
}

fn as_float(name: &str, v: &ParamValue) -> Result<f64, SpecError> {
    v.as_f64().ok_or_else(|| type_err(name, v, "a number"))
}

fn as_count(name: &str, v: &ParamValue) -> Result<usize, SpecError> {
    match v {
        ParamValue::Int(i) if *i >= 0 => Ok(*i as usize),
        ParamValue::Float(f) if *f >= 0.0 && f.fract() == 0.0 && *f < 1e15 => Ok(*f as usize),
        _ => Err(type_err(name, v, "a non-negative integer")),
    }
}

fn as_bool(name: &str, v: &ParamValue) -> Result<bool, SpecError> {
    match v {
        ParamValue::Bool(b) => Ok(*b),
        ParamValue::Str(s) if s == "true" => Ok(true),
        ParamValue::Str(s) if s == "false" => Ok(false),
        _ => Err(type_err(name, v, "true or false")),
    }
}

fn as_enum<T: serde::de::DeserializeOwned>(name: &str, v: &ParamValue, expected: &'static str) -> Result<T, SpecError> {
    match v {
        ParamValue::Str(s) => serde_json::from_value(serde_json::Value::String(s.clone())).map_err(|_| type_err(name, v, expected)),
        _ => Err(type_err(name, v, expected)),
    }
}

fn range_err(name: &str, value: impl ToString, why: &'static str) -> SpecError {
    SpecError::Range { name: name.to_string(), value: value.to_string(), why }
}

impl TrainSpec {
    /// The options of one trial: `params` (searched) over `fixed` (`[train]`) over defaults.
    /// A searched parameter that names no training option, a value of the wrong type and a
    /// value out of range are errors naming the parameter.
    pub fn from_params(fixed: &TrainSection, params: &ParamSet) -> Result<TrainSpec, SpecError> {
        if let Some(name) = params.keys().find(|k| !TRAIN_OPTIONS.contains(&k.as_str())) {
            return Err(SpecError::Unknown(name.clone()));
        }
        let d = TrainSpec::default();
        let p = |n: &str| params.get(n);
        macro_rules! pick {
            ($field:ident, $conv:expr) => {
                match p(stringify!($field)) {
                    Some(v) => Some($conv(stringify!($field), v)?),
                    None => fixed.$field.clone(),
                }
            };
        }
        let batch_size = pick!(batch_size, as_count).unwrap_or(d.batch_size);
        let spec = TrainSpec {
            learning_rate: pick!(learning_rate, as_float).unwrap_or(d.learning_rate),
            batch_size,
            micro_batch_size: pick!(micro_batch_size, as_count).unwrap_or(batch_size),
            epochs: pick!(epochs, as_count).unwrap_or(d.epochs),
            freeze_layers: pick!(freeze_layers, as_count).unwrap_or(d.freeze_layers),
            freeze_embeddings: pick!(freeze_embeddings, as_bool).unwrap_or(d.freeze_embeddings),
            weight_decay: pick!(weight_decay, as_float).unwrap_or(d.weight_decay),
            warmup_ratio: pick!(warmup_ratio, as_float).unwrap_or(d.warmup_ratio),
            scheduler: pick!(scheduler, |n, v| as_enum(n, v, "\"linear\", \"cosine\" or \"constant\"")).unwrap_or(d.scheduler),
            optimizer: pick!(optimizer, |n, v| as_enum(n, v, "\"adamw\" or \"sgd\"")).unwrap_or(d.optimizer),
            momentum: pick!(momentum, as_float).unwrap_or(d.momentum),
            max_grad_norm: pick!(max_grad_norm, as_float).unwrap_or(d.max_grad_norm),
            label_smoothing: pick!(label_smoothing, as_float).unwrap_or(d.label_smoothing),
            class_weights: pick!(class_weights, |n, v| as_enum(n, v, "\"none\" or \"balanced\"")).unwrap_or(d.class_weights),
            dropout: pick!(dropout, as_float),
            augment_prob: pick!(augment_prob, as_float).unwrap_or(d.augment_prob),
            early_stopping_patience: pick!(early_stopping_patience, as_count),
            max_length: pick!(max_length, as_count).unwrap_or(d.max_length),
            seed: match p("seed") {
                Some(v) => as_count("seed", v)? as u64,
                None => fixed.seed.unwrap_or(d.seed),
            },
            eval_steps: pick!(eval_steps, as_count),
            keep_checkpoints: pick!(keep_checkpoints, |n, v| as_enum(n, v, "\"best\", \"all\" or \"none\"")).unwrap_or(d.keep_checkpoints),
            length_bucketing: pick!(length_bucketing, as_bool).unwrap_or(d.length_bucketing),
            threads: pick!(threads, as_count),
            precision: pick!(precision, |n, v| as_enum(n, v, "\"fp32\" or \"bf16\"")).unwrap_or(d.precision),
            ema_decay: pick!(ema_decay, as_float).unwrap_or(d.ema_decay),
            threshold: pick!(threshold, as_threshold).unwrap_or(d.threshold),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Range checks (the same for fixed and searched values).
    pub fn validate(&self) -> Result<(), SpecError> {
        let unit = |name: &str, x: f64, hi_open: bool| -> Result<(), SpecError> {
            let ok = x.is_finite() && x >= 0.0 && if hi_open { x < 1.0 } else { x <= 1.0 };
            if ok {
                Ok(())
            } else {
                Err(range_err(name, x, if hi_open { "must be in [0, 1)" } else { "must be in [0, 1]" }))
            }
        };
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(range_err("learning_rate", self.learning_rate, "must be a positive number"));
        }
        if self.batch_size == 0 {
            return Err(range_err("batch_size", 0, "must be at least 1"));
        }
        if self.micro_batch_size == 0 {
            return Err(range_err("micro_batch_size", 0, "must be at least 1"));
        }
        if self.micro_batch_size > self.batch_size {
            return Err(range_err("micro_batch_size", self.micro_batch_size, "must not exceed batch_size"));
        }
        if self.epochs == 0 {
            return Err(range_err("epochs", 0, "must be at least 1"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(range_err("weight_decay", self.weight_decay, "must be a non-negative number"));
        }
        unit("warmup_ratio", self.warmup_ratio, false)?;
        unit("momentum", self.momentum, true)?;
        unit("label_smoothing", self.label_smoothing, true)?;
        unit("augment_prob", self.augment_prob, false)?;
        unit("ema_decay", self.ema_decay, true)?;
        if let Some(p) = self.dropout {
            unit("dropout", p, true)?;
        }
        if let Threshold::Fixed(t) = self.threshold {
            if !(t.is_finite() && t > 0.0 && t < 1.0) {
                return Err(range_err("threshold", t, "must be in (0, 1), or \"tuned\""));
            }
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm >= 0.0) {
            return Err(range_err("max_grad_norm", self.max_grad_norm, "must be a non-negative number (0 = no clipping)"));
        }
        if self.max_length < 2 {
            return Err(range_err("max_length", self.max_length, "must be at least 2"));
        }
        if self.eval_steps == Some(0) {
            return Err(range_err("eval_steps", 0, "must be at least 1"));
        }
        if self.threads == Some(0) {
            return Err(range_err("threads", 0, "must be at least 1"));
        }
        Ok(())
    }

    /// Optimizer steps per epoch for `n_rows` training rows (the last batch may be short).
    pub fn steps_per_epoch(&self, n_rows: usize) -> usize {
        n_rows.div_ceil(self.batch_size).max(1)
    }
}

/// The Hugging Face hub cache folder: `HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME").filter(|p| !p.is_empty()) {
        return PathBuf::from(p).join("hub");
    }
    hf_hub::Cache::from_env().path().clone()
}

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")).unwrap_or(false)
}

/// Checks that `dir` holds a loadable checkpoint: `config.json`, weights
/// (`model.safetensors`) and a tokenizer (`tokenizer.json` or `vocab.txt`).
pub fn check_model_folder(dir: &Path) -> Result<(), SpecError> {
    let err = |why: String| SpecError::ModelFolder { path: dir.to_path_buf(), why };
    if !dir.is_dir() {
        return Err(err("not a folder".into()));
    }
    for f in ["config.json", "model.safetensors"] {
        if !dir.join(f).is_file() {
            return Err(err(format!("{f} is missing")));
        }
    }
    if !dir.join("tokenizer.json").is_file() && !dir.join("vocab.txt").is_file() {
        return Err(err("neither tokenizer.json nor vocab.txt is there".into()));
    }
    Ok(())
}

/// The snapshot folder of `hub` at `revision` in `cache`, if every needed file is there.
fn cached_snapshot(cache: &Path, hub: &str, revision: &str) -> Option<PathBuf> {
    let repo_dir = cache.join(format!("models--{}", hub.replace('/', "--")));
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    let commit = if is_commit {
        revision.to_string()
    } else {
        std::fs::read_to_string(repo_dir.join("refs").join(revision)).ok()?.trim().to_string()
    };
    let snap = repo_dir.join("snapshots").join(commit);
    check_model_folder(&snap).ok().map(|_| snap)
}

impl ModelSection {
    /// The local folder of the checkpoint: `path` as is, or the Hub snapshot in the standard
    /// cache (downloaded there first when missing and not offline).
    pub fn resolve(&self) -> Result<PathBuf, SpecError> {
        match (&self.path, &self.hub) {
            (Some(path), None) => {
                check_model_folder(path)?;
                Ok(path.clone())
            }
            (None, Some(hub)) => resolve_hub(hub, self.revision.as_deref().unwrap_or("main"), &hf_cache_dir(), hub_offline()),
            _ => Err(SpecError::ModelSource),
        }
    }

    pub fn problem(&self) -> Problem {
        self.problem.unwrap_or_default()
    }
}

/// Finds `hub`@`revision` in `cache`, or downloads it there unless `offline`.
pub fn resolve_hub(hub: &str, revision: &str, cache: &Path, offline: bool) -> Result<PathBuf, SpecError> {
    let unavailable =
        |why: String| SpecError::HubUnavailable { hub: hub.to_string(), revision: revision.to_string(), cache: cache.to_path_buf(), why };
    if hub.split('/').count() != 2 || hub.split('/').any(|s| s.is_empty()) {
        return Err(unavailable(" (a Hub id looks like \"org/name\")".into()));
    }
    if let Some(snap) = cached_snapshot(cache, hub, revision) {
        return Ok(snap);
    }
    if offline {
        return Err(unavailable(" and HF_HUB_OFFLINE is set".into()));
    }
    tracing::info!("downloading {hub} ({revision}) into {}", cache.display());
    let api = hf_hub::api::sync::ApiBuilder::from_cache(hf_hub::Cache::new(cache.to_path_buf()))
        .with_progress(false)
        .build()
        .map_err(|e| unavailable(format!(" and the Hub client failed: {e}")))?;
    let repo = api.repo(hf_hub::Repo::with_revision(hub.to_string(), hf_hub::RepoType::Model, revision.to_string()));
    let mut folder = None;
    for f in ["config.json", "model.safetensors"] {
        let p = repo.get(f).map_err(|e| unavailable(format!(" and downloading {f} failed: {e}")))?;
        folder = p.parent().map(Path::to_path_buf);
    }
    if repo.get("tokenizer.json").is_err() {
        repo.get("vocab.txt").map_err(|e| unavailable(format!(" and neither tokenizer.json nor vocab.txt could be downloaded: {e}")))?;
    }
    // Optional: an export copies them (the tokenizer class, special tokens) when they exist.
    for f in ["tokenizer_config.json", "special_tokens_map.json"] {
        if let Err(e) = repo.get(f) {
            tracing::debug!("{hub}: no {f} ({e})");
        }
    }
    let folder = folder.ok_or_else(|| unavailable(String::new()))?;
    check_model_folder(&folder)?;
    Ok(folder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, ParamValue)]) -> ParamSet {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn defaults_follow_hf_training_arguments() {
        let s = TrainSpec::from_params(&TrainSection::default(), &ParamSet::new()).unwrap();
        assert_eq!(s, TrainSpec::default());
        assert_eq!((s.learning_rate, s.batch_size, s.epochs, s.max_grad_norm), (5e-5, 16, 3, 1.0));
    }

    #[test]
    fn searched_parameter_overrides_fixed_one() {
        let fixed: TrainSection = toml::from_str("learning_rate = 1e-4\nbatch_size = 32\nscheduler = \"cosine\"").unwrap();
        let s = TrainSpec::from_params(
            &fixed,
            &params(&[
                ("learning_rate", ParamValue::Float(3e-5)),
                ("epochs", ParamValue::Int(2)),
                ("optimizer", ParamValue::Str("sgd".into())),
            ]),
        )
        .unwrap();
        assert_eq!(s.learning_rate, 3e-5);
        assert_eq!(s.batch_size, 32);
        assert_eq!(s.micro_batch_size, 32, "micro batch defaults to the batch");
        assert_eq!(s.epochs, 2);
        assert_eq!(s.scheduler, ScheduleKind::Cosine);
        assert_eq!(s.optimizer, OptimizerKind::Sgd);
        // a categorical 16.0 is a batch size of 16
        let s = TrainSpec::from_params(&fixed, &params(&[("batch_size", ParamValue::Float(16.0))])).unwrap();
        assert_eq!(s.batch_size, 16);
    }

    #[test]
    fn errors_name_the_parameter() {
        let f = TrainSection::default();
        let e = TrainSpec::from_params(&f, &params(&[("batch_size", ParamValue::Float(2.5))])).unwrap_err();
        assert!(e.to_string().contains("`batch_size`"), "{e}");
        let e = TrainSpec::from_params(&f, &params(&[("scheduler", ParamValue::Str("step".into()))])).unwrap_err();
        assert!(e.to_string().contains("`scheduler`") && e.to_string().contains("cosine"), "{e}");
        let e = TrainSpec::from_params(&f, &params(&[("learning_rate", ParamValue::Str("x".into()))])).unwrap_err();
        assert!(e.to_string().contains("`learning_rate`"), "{e}");
        let e = TrainSpec::from_params(&f, &params(&[("lr", ParamValue::Float(1.0))])).unwrap_err();
        assert_eq!(e, SpecError::Unknown("lr".into()));
        let e = TrainSpec::from_params(&f, &params(&[("label_smoothing", ParamValue::Float(1.0))])).unwrap_err();
        assert!(e.to_string().contains("`label_smoothing`"), "{e}");
        let fixed: TrainSection = toml::from_str("batch_size = 8\nmicro_batch_size = 16").unwrap();
        let e = TrainSpec::from_params(&fixed, &ParamSet::new()).unwrap_err();
        assert!(e.to_string().contains("`micro_batch_size`"), "{e}");
        let fixed: TrainSection = toml::from_str("ema_decay = 1.0").unwrap();
        let e = TrainSpec::from_params(&fixed, &ParamSet::new()).unwrap_err();
        assert!(e.to_string().contains("`ema_decay`") && e.to_string().contains("[0, 1)"), "{e}");
    }

    #[test]
    fn ema_decay_is_fixed_or_searched_and_off_by_default() {
        let fixed: TrainSection = toml::from_str("ema_decay = 0.998").unwrap();
        assert_eq!(TrainSpec::from_params(&fixed, &ParamSet::new()).unwrap().ema_decay, 0.998);
        let s = TrainSpec::from_params(&fixed, &params(&[("ema_decay", ParamValue::Float(0.99))])).unwrap();
        assert_eq!(s.ema_decay, 0.99);
        assert_eq!(TrainSpec::default().ema_decay, 0.0);
        // a spec written before the option existed reads as off
        let mut old = serde_json::to_value(TrainSpec::default()).unwrap();
        old.as_object_mut().unwrap().remove("ema_decay");
        assert_eq!(serde_json::from_value::<TrainSpec>(old).unwrap().ema_decay, 0.0);
    }

    #[test]
    fn threshold_is_a_number_or_tuned_fixed_or_searched() {
        assert_eq!(TrainSpec::default().threshold, Threshold::Fixed(0.5));
        let fixed: TrainSection = toml::from_str("threshold = \"tuned\"").unwrap();
        assert_eq!(TrainSpec::from_params(&fixed, &ParamSet::new()).unwrap().threshold, Threshold::Tuned(TunedWord::Tuned));
        let fixed: TrainSection = toml::from_str("threshold = 0.3").unwrap();
        assert_eq!(TrainSpec::from_params(&fixed, &ParamSet::new()).unwrap().threshold.fixed_or_half(), 0.3);
        let s = TrainSpec::from_params(&fixed, &params(&[("threshold", ParamValue::Float(0.4))])).unwrap();
        assert_eq!(s.threshold, Threshold::Fixed(0.4));
        let s = TrainSpec::from_params(&fixed, &params(&[("threshold", ParamValue::Str("tuned".into()))])).unwrap();
        assert_eq!(s.threshold.fixed_or_half(), 0.5);
        for bad in ["threshold = 0.0", "threshold = 1.0", "threshold = -1"] {
            let fixed: TrainSection = toml::from_str(bad).unwrap();
            let e = TrainSpec::from_params(&fixed, &ParamSet::new()).unwrap_err();
            assert!(e.to_string().contains("`threshold`") && e.to_string().contains("(0, 1)"), "{bad}: {e}");
        }
        let e = toml::from_str::<TrainSection>("threshold = \"best\"").unwrap_err();
        assert!(e.to_string().contains("a number in (0, 1) or \"tuned\""), "{e}");
        let e = TrainSpec::from_params(&TrainSection::default(), &params(&[("threshold", ParamValue::Str("best".into()))])).unwrap_err();
        assert!(e.to_string().contains("\"tuned\""), "{e}");
        // The spec round-trips (a number, or the word), and one written before the option reads 0.5.
        for t in [Threshold::Fixed(0.25), Threshold::Tuned(TunedWord::Tuned)] {
            let spec = TrainSpec { threshold: t, ..TrainSpec::default() };
            assert_eq!(serde_json::from_value::<TrainSpec>(serde_json::to_value(&spec).unwrap()).unwrap(), spec);
        }
        let mut old = serde_json::to_value(TrainSpec::default()).unwrap();
        old.as_object_mut().unwrap().remove("threshold");
        assert_eq!(serde_json::from_value::<TrainSpec>(old).unwrap().threshold, Threshold::Fixed(0.5));
    }

    #[test]
    fn sections_refuse_unknown_keys() {
        assert!(toml::from_str::<TrainSection>("learning_rat = 1e-4").is_err());
        assert!(toml::from_str::<ModelSection>("pth = \"x\"").is_err());
        let m: ModelSection = toml::from_str("hub = \"a/b\"\nproblem = \"regression\"").unwrap();
        assert_eq!(m.problem(), Problem::Regression);
    }

    fn fake_model(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for f in ["config.json", "model.safetensors", "vocab.txt"] {
            std::fs::write(dir.join(f), b"{}").unwrap();
        }
    }

    #[test]
    fn hub_model_is_found_in_the_cache_and_offline_miss_names_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("hub");
        let repo = cache.join("models--org--tiny");
        let rev = "0123456789abcdef0123456789abcdef01234567";
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), rev).unwrap();
        fake_model(&repo.join("snapshots").join(rev));
        let got = resolve_hub("org/tiny", "main", &cache, true).unwrap();
        assert_eq!(got, repo.join("snapshots").join(rev));
        assert_eq!(resolve_hub("org/tiny", rev, &cache, true).unwrap(), got);
        let e = resolve_hub("org/other", "main", &cache, true).unwrap_err().to_string();
        assert!(e.contains(&cache.display().to_string()) && e.contains("model.path"), "{e}");
        let e = ModelSection { path: Some(tmp.path().join("nope")), ..Default::default() }.resolve().unwrap_err();
        assert!(matches!(e, SpecError::ModelFolder { .. }));
    }

    /// Manual check against a cache laid out by `get-minilm.sh --hf-cache DIR`:
    /// `SFT_HF_HOME=DIR cargo test --lib real_hub_cache -- --ignored`.
    #[test]
    #[ignore]
    fn real_hub_cache_resolves_minilm_offline() {
        let home = PathBuf::from(std::env::var("SFT_HF_HOME").expect("set SFT_HF_HOME"));
        let dir = resolve_hub("sentence-transformers/all-MiniLM-L6-v2", "main", &home.join("hub"), true).unwrap();
        assert!(dir.join("config.json").is_file() && dir.join("tokenizer.json").is_file());
    }
}
