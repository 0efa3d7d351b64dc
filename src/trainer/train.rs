//! The training loop of one fine-tuning trial: data → tokenizer → model → epochs of
//! seeded-shuffled batches (micro-batches accumulated) → loss → backward → clipped optimizer
//! step on the schedule; evaluation on the valid split after every epoch (and every
//! `eval_steps`), early stopping, NaN/inf detection, checkpoints of the best weights with
//! everything needed to resume, and a cooperative stop flag checked between batches. The
//! losses, correct counts and gradient norm of an optimizer step are read back from the device
//! together, once per step.
//!
//! Everything the trial learns goes to a [`Reporter`] (the worker prints it as JSON lines),
//! so the loop runs the same in a worker process and in tests.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::checkpoint::{self, CheckpointError, EvalRecord, TrainerState};
use super::data::{self, batch_indices, collate, epoch_seed, DataError, DataSection, Encoded, Problem, TextEncoder};
use super::ema::{self, EmaError, WeightAverage};
use super::loss::Loss;
use super::metrics::{self, diagnose_fit, EpochRecord, Metrics};
use super::model::{BertClassifier, HeadKind, ModelError, ModelOptions};
use super::optim::{lr_factor, warmup_steps, GradNorm, OptimConfig, OptimError, Optimizer};
use super::spec::{ClassWeights, KeepCheckpoints, Threshold, TrainSpec};
use crate::scheduler::{CancelToken, Decision, Progress, Reporter};
use crate::trial::Direction;

/// Seconds between progress reports.
const PROGRESS_EVERY_S: f64 = 2.0;
/// Rows per evaluation batch (sorted by length, so little padding).
const EVAL_BATCH: usize = 64;

/// Everything a worker needs to train one trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainJob {
    pub trial: u64,
    /// The pretrained Hugging Face folder (already resolved from `[model]`).
    pub model_dir: PathBuf,
    /// `[data]` with paths resolved.
    pub data: DataSection,
    pub spec: TrainSpec,
    /// The study metric (`accuracy`, `f1_macro`, `loss`, ...).
    pub metric: String,
    pub direction: Direction,
    /// `cpu`, `cuda` or `cuda:k`.
    pub device: String,
    /// The trial's folder for checkpoints.
    pub artifacts_dir: PathBuf,
    /// A folder holding an earlier attempt's checkpoints to continue from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<PathBuf>,
}

/// Evaluate a kept checkpoint once on the test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestJob {
    pub checkpoint: PathBuf,
    pub data: DataSection,
    pub device: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Boxed: the data errors carry paths, rows and label lists, and every `Result` of the
    /// trainer would otherwise be as large as the largest of them.
    #[error(transparent)]
    Data(Box<DataError>),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Optim(#[from] OptimError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Ema(#[from] EmaError),
    #[error("{what} at epoch {epoch} step {step} (learning_rate={lr:e})")]
    /// `lr` is the configured (peak) learning rate.
    NonFinite { what: &'static str, epoch: usize, step: u64, lr: f64 },
    #[error("metrics: {0}")]
    Metrics(#[from] metrics::MetricsError),
    #[error("{0}")]
    Setup(String),
    /// The trial's device could not be opened: the machine's failure, not the setting's.
    #[error("device `{device}`: {why}")]
    Device { device: String, why: String },
}

impl From<DataError> for TrainError {
    fn from(e: DataError) -> TrainError {
        TrainError::Data(Box::new(e))
    }
}

/// How a run ended without error.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// The study metric at the best evaluation, with that evaluation's metrics.
    Complete { value: f64, metrics: Map<String, Value> },
    /// Stopped on request (stop flag, or the reporter said prune) after `step`.
    Stopped { step: i64, pruned: bool },
}

/// `cpu`, `cuda`, `cuda:k`.
pub fn parse_device(s: &str) -> Result<Device, TrainError> {
    let s = s.trim();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|k| k.parse::<usize>().ok())
            .ok_or_else(|| TrainError::Setup(format!("device `{s}`: expected cpu, cuda or cuda:K")))?,
        None => return Err(TrainError::Setup(format!("device `{s}`: expected cpu, cuda or cuda:K"))),
    };
    crate::trainer::model::open_cuda(ordinal).map_err(|e| TrainError::Device {
        device: device_label(ordinal, std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref()),
        why: e.to_string(),
    })
}

/// The name of CUDA device `ordinal` as the user knows it. A study's `cuda:k` slot runs its
/// worker with `CUDA_VISIBLE_DEVICES=k`, where the GPU is `cuda:0`: the error names `cuda:k`,
/// the device of the study file, not the worker's own numbering.
fn device_label(ordinal: usize, visible: Option<&str>) -> String {
    match visible.map(str::trim).filter(|v| !v.is_empty()) {
        None => format!("cuda:{ordinal}"),
        Some(v) => match v.split(',').map(str::trim).collect::<Vec<_>>().as_slice() {
            [only] if ordinal == 0 && only.parse::<usize>().is_ok() => format!("cuda:{only} (CUDA_VISIBLE_DEVICES={v})"),
            _ => format!("cuda:{ordinal} of CUDA_VISIBLE_DEVICES={v}"),
        },
    }
}

fn mix(a: u64, b: u64) -> u64 {
    epoch_seed(a, b as usize)
}

/// Predictions of the model on one split.
pub struct Predictions {
    /// Per row (in split order): class probabilities (each label's own probability for
    /// multi-label), or the single regression output; for token classification the tag
    /// probabilities of each scored word, one after another.
    pub outputs: Vec<Vec<f32>>,
    /// Class ids (classification) or targets (regression), as f32; 0 for token rows.
    pub targets: Vec<f32>,
    /// Token classification: the true tag of each scored word, per row (empty otherwise).
    pub tags: Vec<Vec<u32>>,
    /// Multi-label: the true flags of each row, one per label (empty otherwise).
    pub label_sets: Vec<Vec<bool>>,
    /// Mean loss (plain cross-entropy, or MSE) over rows, or over scored words.
    pub loss: f64,
}

/// The logits of what a batch scores: `[b, k]` per row, or `[n, k]` for its `n` scored
/// tokens (token classification).
pub fn scored_logits(model: &BertClassifier, b: &data::Batch, train: bool) -> candle_core::Result<Tensor> {
    let logits = model.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids), train)?;
    match &b.scored_positions {
        None => Ok(logits),
        Some(pos) => {
            let (rows, len, k) = logits.dims3()?;
            logits.reshape((rows * len, k))?.index_select(pos, 0)
        }
    }
}

/// How many targets a row scores: 1, or its scored tokens (token classification).
fn scored_by(row: &Encoded) -> usize {
    match &row.label {
        data::Target::Tags(t) => t.iter().filter(|&&x| x != data::IGNORE_TAG).count(),
        _ => 1,
    }
}

/// How many targets rows `idx` of `rows` score.
fn scored_in(rows: &[Encoded], idx: &[usize]) -> usize {
    idx.iter().filter_map(|&i| rows.get(i)).map(scored_by).sum()
}

/// Runs `model` over `rows` in evaluation mode (no dropout).
pub fn predict(
    model: &BertClassifier,
    rows: &[Encoded],
    problem: Problem,
    pad_id: u32,
    device: &Device,
) -> Result<Predictions, TrainError> {
    let lengths: Vec<usize> = rows.iter().map(Encoded::len).collect();
    let plan = batch_indices(&lengths, EVAL_BATCH, None, true);
    let k = model.num_labels();
    let mut outputs = vec![Vec::new(); rows.len()];
    let mut targets = vec![0f32; rows.len()];
    let tokens = problem == Problem::TokenClassification;
    let mut tags = vec![Vec::new(); if tokens { rows.len() } else { 0 }];
    let multi = problem == Problem::MultiLabelClassification;
    let mut label_sets = vec![Vec::new(); if multi { rows.len() } else { 0 }];
    let loss_fn = match problem {
        Problem::Classification | Problem::TokenClassification => Loss::CrossEntropy { label_smoothing: 0.0, weights: None },
        Problem::MultiLabelClassification => Loss::BinaryCrossEntropy { label_smoothing: 0.0, pos_weight: None },
        Problem::Regression => Loss::Mse,
    };
    let (mut loss_sum, mut scored) = (0.0, 0usize);
    for idx in &plan {
        let b = collate(rows, idx, pad_id, device)?;
        let n = if tokens { b.scored_per_row.iter().sum() } else { idx.len() };
        if n == 0 {
            continue; // sentences whose words were all cut by max_length
        }
        let logits = scored_logits(model, &b, false)?.detach();
        loss_sum += loss_fn.compute(&logits, &b.labels)?.to_scalar::<f32>()? as f64 * n as f64;
        scored += n;
        let out = match problem {
            Problem::Classification | Problem::TokenClassification => candle_nn::ops::softmax(&logits, D::Minus1)?,
            Problem::MultiLabelClassification => candle_nn::ops::sigmoid(&logits)?,
            Problem::Regression => logits,
        };
        let out: Vec<Vec<f32>> = out.to_dtype(DType::F32)?.to_vec2()?;
        if multi {
            let y: Vec<Vec<f32>> = b.labels.to_dtype(DType::F32)?.to_vec2()?;
            for ((&i, o), y) in idx.iter().zip(out).zip(y) {
                outputs[i] = o;
                label_sets[i] = y.iter().map(|&v| v > 0.5).collect();
            }
            continue;
        }
        let y: Vec<f32> = b.labels.to_dtype(DType::F32)?.to_vec1()?;
        if tokens {
            let (mut out, mut y) = (out.into_iter(), y.into_iter());
            for (&i, &m) in idx.iter().zip(&b.scored_per_row) {
                outputs[i] = out.by_ref().take(m).flatten().collect();
                tags[i] = y.by_ref().take(m).map(|t| t as u32).collect();
            }
            continue;
        }
        for ((&i, o), y) in idx.iter().zip(out).zip(y) {
            debug_assert_eq!(o.len(), k);
            outputs[i] = o;
            targets[i] = y;
        }
    }
    Ok(Predictions { outputs, targets, tags, label_sets, loss: loss_sum / scored.max(1) as f64 })
}

impl Predictions {
    /// Every row's outputs one after another, in f64 (`[n, k]` row-major).
    fn flat_outputs(&self) -> Vec<f64> {
        self.outputs.iter().flatten().map(|&x| x as f64).collect()
    }
}

/// Counts `[true label][predicted label]`.
pub type ConfusionMatrix = Vec<Vec<u64>>;

/// The valid (or test) metrics of `p`, keyed by the study-metric names (scikit-learn
/// definitions, or seqeval's for token classification, see `trainer::metrics`), and the
/// confusion matrix for classification (over words for token classification; none for
/// multi-label, whose per-label F1 is in the map). `labels` are the class (tag) names by id;
/// empty for regression. `threshold` is multi-label's decision threshold (see
/// [`decide_threshold`]); the other problems ignore it.
pub fn metrics_of(
    p: &Predictions,
    problem: Problem,
    labels: &[String],
    threshold: f64,
) -> Result<(Map<String, Value>, Option<ConfusionMatrix>), TrainError> {
    let num_labels = labels.len();
    let (map, cm) = match problem {
        Problem::Classification => {
            let flat: Vec<f32> = p.outputs.iter().flatten().copied().collect();
            let y: Vec<u32> = p.targets.iter().map(|&t| t as u32).collect();
            let m = metrics::classification_metrics(&flat, num_labels, &y)?;
            let cm = m.confusion_matrix.clone();
            (Metrics::Classification(m).to_map(), Some(cm))
        }
        Problem::TokenClassification => {
            let k = num_labels.max(1);
            let pred: Vec<Vec<u32>> = p.outputs.iter().map(|o| o.chunks(k).map(|w| metrics::argmax(w) as u32).collect()).collect();
            let scores = metrics::token_scores(&p.tags, &pred, labels)?;
            let mut cm = vec![vec![0u64; num_labels]; num_labels];
            for (g, q) in p.tags.iter().flatten().zip(pred.iter().flatten()) {
                if let Some(cell) = cm.get_mut(*g as usize).and_then(|r| r.get_mut(*q as usize)) {
                    *cell += 1;
                }
            }
            let mut m = scores.to_map();
            m.insert("loss".into(), p.loss);
            (m, Some(cm))
        }
        Problem::MultiLabelClassification => {
            let mut m = metrics::multi_label_metrics(&p.flat_outputs(), num_labels, &p.label_sets, threshold)?.to_map(labels);
            m.insert("loss".into(), p.loss);
            m.insert("threshold".into(), threshold);
            (m, None)
        }
        Problem::Regression => {
            let pred: Vec<f32> = p.outputs.iter().map(|o| o.first().copied().unwrap_or(f32::NAN)).collect();
            (Metrics::Regression(metrics::regression_metrics(&pred, &p.targets)?).to_map(), None)
        }
    };
    Ok((map.into_iter().map(|(k, v)| (k, num(v))).collect(), cm))
}

/// Multi-label: the decision threshold for predictions `p` of the valid split under `policy`
/// — the fixed number, or the value of the grid under which `p` scores best on `metric`
/// (`metrics::multilabel::tune_threshold`). 0.5 for the other problems.
pub fn decide_threshold(p: &Predictions, problem: Problem, policy: Threshold, metric: &str) -> Result<f64, TrainError> {
    match (problem, policy) {
        (Problem::MultiLabelClassification, Threshold::Tuned(_)) => {
            let k = p.outputs.first().map_or(0, Vec::len);
            Ok(metrics::multilabel::tune_threshold(&p.flat_outputs(), k, &p.label_sets, metric)?)
        }
        (Problem::MultiLabelClassification, Threshold::Fixed(t)) => Ok(t),
        _ => Ok(metrics::multilabel::THRESHOLD),
    }
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

/// Trains one trial. Errors are the trial's failure reason.
pub fn train(job: &TrainJob, reporter: &mut dyn Reporter, stop: &CancelToken) -> Result<Finish, TrainError> {
    let spec = &job.spec;
    spec.validate().map_err(|e| TrainError::Setup(e.to_string()))?;
    let device = parse_device(&job.device)?;
    let gpu_usage = super::gpu_usage::GpuUsageProbe::for_device(&job.device);
    let t_setup = Instant::now();

    let dataset = data::load_dataset(&job.data)?;
    if dataset.train.is_empty() || dataset.valid.is_empty() {
        return Err(TrainError::Setup(format!(
            "the train and valid splits need rows (train {}, valid {})",
            dataset.train.len(),
            dataset.valid.len()
        )));
    }
    let problem = dataset.problem;
    let num_labels = dataset.num_labels();
    if problem == Problem::TokenClassification && spec.augment_prob > 0.0 {
        return Err(TrainError::Setup("augment_prob would separate words from their tags: token classification does not augment".into()));
    }
    let encoder = TextEncoder::from_model_dir(&job.model_dir, spec.max_length)?;
    let pad = encoder.pad_id();
    let mut train_rows = encoder.encode(&dataset.train)?;
    if problem == Problem::TokenClassification {
        // A sentence whose words all vanish in the tokenizer has nothing to learn from.
        let before = train_rows.len();
        train_rows.retain(|r| scored_by(r) > 0);
        if train_rows.len() < before {
            tracing::warn!("{} training sentences have no word the tokenizer keeps; they are left out", before - train_rows.len());
        }
        if train_rows.is_empty() {
            return Err(TrainError::Setup("no training sentence has a word the tokenizer keeps".into()));
        }
    }
    let valid_rows = encoder.encode(&dataset.valid)?;

    let opts = ModelOptions {
        num_labels,
        dropout: spec.dropout,
        freeze_layers: spec.freeze_layers,
        freeze_embeddings: spec.freeze_embeddings,
        seed: spec.seed,
        compute_dtype: spec.precision.dtype(),
        head: HeadKind::for_problem(problem),
    };
    if spec.precision == super::spec::Precision::Bf16 && device.is_cpu() {
        tracing::warn!("precision = \"bf16\" on the CPU: candle emulates bf16 matmuls there, so this is slower than fp32");
    }
    let model = BertClassifier::load(&job.model_dir, &opts, &device)?;
    let trainable = model.trainable_vars();
    let n_trainable: usize = trainable.iter().map(|(_, v)| v.elem_count()).sum();
    let mut average = if spec.ema_decay > 0.0 { Some(WeightAverage::new(trainable.clone(), spec.ema_decay)?) } else { None };
    let mut opt = Optimizer::new(trainable, OptimConfig::new(spec.optimizer, spec.weight_decay, spec.momentum))?;

    let loss_fn = match problem {
        Problem::Regression => Loss::Mse,
        Problem::MultiLabelClassification => {
            let w = match spec.class_weights {
                ClassWeights::Balanced => Some(dataset.balanced_pos_weights()),
                ClassWeights::None => None,
            };
            Loss::binary_cross_entropy(spec.label_smoothing, w.as_deref(), &device)?
        }
        Problem::Classification | Problem::TokenClassification => {
            let w = match spec.class_weights {
                ClassWeights::Balanced => Some(dataset.balanced_class_weights()),
                ClassWeights::None => None,
            };
            Loss::cross_entropy(spec.label_smoothing, w.as_deref(), &device)?
        }
    };

    // Multi-label's exact-match count on the train split: a label is predicted where its logit
    // reaches that of the threshold (a tuned one is not known until an evaluation: 0.5).
    let train_logit_threshold = {
        let t = spec.threshold.fixed_or_half();
        (t / (1.0 - t)).ln()
    };
    let steps_per_epoch = spec.steps_per_epoch(train_rows.len());
    let total_steps = steps_per_epoch * spec.epochs;
    let warmup = warmup_steps(spec.warmup_ratio, total_steps);
    let labels: Vec<String> = dataset.labels.id2label.clone();
    let chance = dataset.chance_level(&dataset.train);

    let mut state = TrainerState {
        spec: spec.clone(),
        metric: job.metric.clone(),
        direction: job.direction,
        labels: labels.clone(),
        num_labels,
        epoch: 0,
        batch_in_epoch: 0,
        global_step: 0,
        steps_per_epoch,
        history: Vec::new(),
        best: None,
        best_checkpoint: None,
        evals_without_improvement: 0,
        epoch_loss_sum: 0.0,
        epoch_rows: 0,
        epoch_correct: 0,
        threshold: None,
        problem: matches!(problem, Problem::TokenClassification | Problem::MultiLabelClassification).then_some(problem),
    };

    // Resume from the latest checkpoint of an earlier attempt.
    let mut trial_facts = Map::new();
    if let Some(from) = &job.resume_from {
        if let Some((dir, saved)) = checkpoint::latest(from) {
            if !same_run(&saved.spec, spec) || saved.labels != labels {
                return Err(TrainError::Setup(format!(
                    "cannot resume from {}: it was trained with other options or labels",
                    dir.display()
                )));
            }
            let weights = candle_core::safetensors::load(dir.join(checkpoint::WEIGHTS), &device)?;
            for (name, var) in model.all_vars() {
                let t = weights
                    .get(&name)
                    .ok_or_else(|| TrainError::Setup(format!("cannot resume from {}: `{name}` is missing", dir.display())))?;
                var.set(t)?;
            }
            opt.load(&dir.join(checkpoint::OPTIMIZER_STATE))?;
            // The checkpoint's model weights are the average; the trained ones are beside them.
            if let Some(avg) = &mut average {
                avg.resume(&dir.join(ema::TRAINED_WEIGHTS))?;
            }
            state = saved;
            tracing::info!("resuming from {} at step {}", dir.display(), state.global_step);
            trial_facts.insert("resumed_from_step".into(), json!(state.global_step));
            if let Some(best) = &state.best_checkpoint {
                if best.is_dir() {
                    reporter.checkpoint(best);
                }
            }
        }
    }

    trial_facts.insert("trainable_params".into(), json!(n_trainable));
    trial_facts.insert("total_params".into(), json!(model.all_vars().iter().map(|(_, v)| v.elem_count()).sum::<usize>()));
    trial_facts.insert("labels".into(), json!(labels));
    trial_facts.insert("cleaning".into(), serde_json::to_value(&dataset.report).unwrap_or(Value::Null));
    trial_facts.insert("rows".into(), json!({"train": dataset.train.len(), "valid": dataset.valid.len(), "test": dataset.test.len()}));
    trial_facts.insert("setup_s".into(), num(t_setup.elapsed().as_secs_f64()));
    reporter.metrics(&trial_facts);

    let ctx = Ctx { job, spec, model: &model, device: &device, valid_rows: &valid_rows, problem, labels: &labels, pad };
    let t_train = Instant::now();
    let mut trained_rows = 0usize;
    let mut last_progress = Instant::now();
    let mut epoch_start = Instant::now();
    let mut epoch_rows_timed = 0usize;

    while state.epoch < spec.epochs {
        let epoch = state.epoch;
        // This epoch's rows: augmented copies (seeded by seed and epoch) or the originals.
        let augmented;
        let rows: &[Encoded] = if spec.augment_prob > 0.0 {
            let ex = data::augment_examples(&dataset.train, spec.augment_prob, spec.seed, epoch);
            augmented = encoder.encode(&ex)?;
            &augmented
        } else {
            &train_rows
        };
        let lengths: Vec<usize> = rows.iter().map(Encoded::len).collect();
        let plan = batch_indices(&lengths, spec.batch_size, Some(epoch_seed(spec.seed, epoch)), spec.length_bucketing);
        if state.batch_in_epoch == 0 {
            state.epoch_loss_sum = 0.0;
            state.epoch_rows = 0;
            state.epoch_correct = 0;
        }
        for (bi, idx) in plan.iter().enumerate().skip(state.batch_in_epoch) {
            if stop.is_cancelled() {
                return Ok(Finish::Stopped { step: state.history.last().map_or(0, |r| r.step), pruned: false });
            }
            let lr = spec.learning_rate * lr_factor(spec.scheduler, state.global_step as usize, warmup, total_steps);
            model.reseed_dropout(mix(spec.seed, state.global_step));
            let mut grads = opt.grads();
            // The micro-batch losses (and correct counts) stay tensors until the step is done,
            // then are read with the gradient norm in one transfer: on a GPU each read waits for
            // the device, so there is one such wait per optimizer step.
            // What each micro-batch scores (rows, or tagged words), and the whole batch: the
            // loss is a mean over the batch's rows (or words), as without accumulation.
            // Micro-batches that score nothing (every word cut by max_length) are skipped.
            let batch_scored = scored_in(rows, idx);
            let micros: Vec<(&[usize], usize)> =
                idx.chunks(spec.micro_batch_size).map(|m| (m, scored_in(rows, m))).filter(|(_, n)| *n > 0).collect();
            let per_micro = if problem.has_labels() { 2 } else { 1 };
            let mut pending = Vec::with_capacity(per_micro * micros.len() + 1);
            for &(micro, n) in &micros {
                let b = collate(rows, micro, pad, &device)?;
                let logits = scored_logits(&model, &b, true)?;
                let loss = loss_fn.compute(&logits, &b.labels)?;
                pending.push(loss.detach().to_dtype(DType::F32)?);
                if problem == Problem::MultiLabelClassification {
                    // Rows whose every label is right (exact match, the `accuracy` of multi-label).
                    let right = logits.detach().ge(train_logit_threshold)?.eq(&b.labels.ge(0.5f64)?)?.to_dtype(DType::F32)?;
                    pending.push(right.min(D::Minus1)?.sum_all()?);
                } else if problem.has_labels() {
                    pending.push(logits.detach().argmax(D::Minus1)?.eq(&b.labels)?.to_dtype(DType::F32)?.sum_all()?);
                }
                let scaled = if n == batch_scored { loss } else { (loss * (n as f64 / batch_scored as f64))? };
                let g = model.backward(&scaled)?;
                opt.accumulate(&mut grads, g)?;
            }
            let info = opt.step(&grads, lr, spec.max_grad_norm)?;
            drop(grads);
            let host_norm = match &info.grad_norm {
                GradNorm::Host(x) => Some(*x),
                GradNorm::Device(t) => {
                    pending.push(t.to_dtype(DType::F32)?.to_device(&device)?);
                    None
                }
            };
            let read = Tensor::stack(&pending, 0)?.to_vec1::<f32>()?;
            // The checks come after the step's update (the loss is not read before it): a
            // non-finite value fails the trial, so the updated weights are never used.
            for (k, &(_, n)) in micros.iter().enumerate() {
                let l = read[k * per_micro] as f64;
                if !l.is_finite() {
                    return Err(TrainError::NonFinite {
                        what: if l.is_nan() { "NaN loss" } else { "infinite loss" },
                        epoch: epoch + 1,
                        step: state.global_step + 1,
                        lr: spec.learning_rate,
                    });
                }
                if problem.has_labels() {
                    state.epoch_correct += read[k * per_micro + 1] as usize;
                }
                state.epoch_loss_sum += l * n as f64;
                state.epoch_rows += n;
            }
            let grad_norm = host_norm.unwrap_or_else(|| read[per_micro * micros.len()] as f64);
            if !grad_norm.is_finite() {
                return Err(TrainError::NonFinite {
                    what: "non-finite gradient",
                    epoch: epoch + 1,
                    step: state.global_step + 1,
                    lr: spec.learning_rate,
                });
            }
            state.global_step += 1;
            if let Some(avg) = &mut average {
                avg.update(state.global_step)?;
            }
            state.batch_in_epoch = bi + 1;
            trained_rows += idx.len();
            epoch_rows_timed += idx.len();
            if bi + 1 < plan.len() && last_progress.elapsed().as_secs_f64() >= PROGRESS_EVERY_S {
                last_progress = Instant::now();
                let gpu = gpu_usage.usage();
                reporter.progress(&Progress {
                    epoch: Some(epoch as f64 + state.batch_in_epoch as f64 / plan.len() as f64),
                    step: Some(state.global_step),
                    total_steps: Some(total_steps as u64),
                    samples_per_s: Some(epoch_rows_timed as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9)),
                    loss: Some(state.epoch_loss_sum / state.epoch_rows.max(1) as f64),
                    gpu_memory_mb: gpu.memory_mib,
                    gpu_sm_percent: gpu.sm_percent,
                });
            }
            let at_epoch_end = bi + 1 == plan.len();
            let eval_now = spec.eval_steps.is_some_and(|k| state.global_step.is_multiple_of(k as u64)) || at_epoch_end;
            if eval_now {
                if at_epoch_end {
                    state.epoch += 1;
                    state.batch_in_epoch = 0;
                }
                let step = if spec.eval_steps.is_some() { state.global_step as i64 } else { state.epoch as i64 };
                let frac_epoch =
                    if at_epoch_end { state.epoch as f64 } else { epoch as f64 + state.batch_in_epoch as f64 / plan.len() as f64 };
                let train_secs = epoch_start.elapsed().as_secs_f64();
                match ctx.evaluate(&mut state, &mut opt, average.as_ref(), step, frac_epoch, lr, reporter)? {
                    After::Continue => {}
                    After::EarlyStop => {
                        tracing::info!("early stopping after step {step}");
                        trial_facts.insert("stopped_early".into(), json!(true));
                        state.epoch = spec.epochs;
                        break;
                    }
                    After::Prune => return Ok(Finish::Stopped { step, pruned: true }),
                }
                if at_epoch_end {
                    let sps = epoch_rows_timed as f64 / train_secs.max(1e-9);
                    let gpu = gpu_usage.usage();
                    reporter.progress(&Progress {
                        epoch: Some(state.epoch as f64),
                        step: Some(state.global_step),
                        total_steps: Some(total_steps as u64),
                        samples_per_s: Some(sps),
                        loss: state.history.last().and_then(|r| r.metrics.get("train_loss")).and_then(Value::as_f64),
                        gpu_memory_mb: gpu.memory_mib,
                        gpu_sm_percent: gpu.sm_percent,
                    });
                    epoch_start = Instant::now();
                    epoch_rows_timed = 0;
                }
            }
        }
    }

    let best = state.best.clone().ok_or_else(|| TrainError::Setup("no evaluation was made".into()))?;
    // The resume-only checkpoint (`last`) stays until the study has recorded the trial
    // (`FinetuneRunner::recorded` removes it): a crash before that resumes from it.
    if spec.keep_checkpoints == KeepCheckpoints::All {
        if let Some(b) = &state.best_checkpoint {
            reporter.checkpoint(b);
        }
    }
    let train_s = t_train.elapsed().as_secs_f64();
    let mut facts = Map::new();
    facts.insert("best_step".into(), json!(best.step));
    facts.insert("best_epoch".into(), num(best.epoch));
    facts.insert("epochs_run".into(), num(state.history.last().map_or(0.0, |r| r.epoch)));
    facts.insert("train_s".into(), num(train_s));
    facts.insert("samples_per_s".into(), num(trained_rows as f64 / train_s.max(1e-9)));
    // The GPU's time spent on this trial (its kernels running), from nvidia-smi's samples.
    let usage = gpu_usage.usage();
    if let Some(mean) = usage.mean_sm_percent() {
        facts.insert("gpu_busy_s".into(), num(usage.busy_s));
        facts.insert("gpu_sm_mean_percent".into(), num(mean));
    }
    if let Some(b) = &state.best_checkpoint {
        facts.insert("best_checkpoint".into(), json!(b));
    }
    facts.insert("fit".into(), json!(diagnose(&state.history, chance, problem)));
    facts.insert(
        "history".into(),
        Value::Array(
            state.history.iter().map(|r| json!({"step": r.step, "epoch": r.epoch, "value": num(r.value), "metrics": r.metrics})).collect(),
        ),
    );
    if let Some(v) = trial_facts.get("stopped_early") {
        facts.insert("stopped_early".into(), v.clone());
    }
    reporter.metrics(&facts);
    Ok(Finish::Complete { value: best.value, metrics: best.metrics })
}

/// Whether two specs train the same run: everything but how it is executed
/// (`micro_batch_size`, `threads`, `keep_checkpoints`) must match to resume.
fn same_run(a: &TrainSpec, b: &TrainSpec) -> bool {
    let norm = |s: &TrainSpec| TrainSpec { micro_batch_size: 1, threads: None, keep_checkpoints: KeepCheckpoints::Best, ..s.clone() };
    norm(a) == norm(b)
}

enum After {
    Continue,
    EarlyStop,
    Prune,
}

struct Ctx<'a> {
    job: &'a TrainJob,
    spec: &'a TrainSpec,
    model: &'a BertClassifier,
    device: &'a Device,
    valid_rows: &'a [Encoded],
    problem: Problem,
    labels: &'a [String],
    pad: u32,
}

impl Ctx<'_> {
    /// Evaluates on the valid split, records, reports, checkpoints: the weight average when
    /// there is one (put back to the trained weights before returning, error or not).
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        state: &mut TrainerState,
        opt: &mut Optimizer,
        average: Option<&WeightAverage>,
        step: i64,
        epoch: f64,
        lr: f64,
        reporter: &mut dyn Reporter,
    ) -> Result<After, TrainError> {
        let saved_best = match average {
            None => self.evaluate_and_save(state, opt, None, step, epoch, lr)?,
            Some(avg) => {
                let trained = avg.swap_in()?;
                let result = self.evaluate_and_save(state, opt, Some((avg, &trained)), step, epoch, lr);
                avg.restore(trained)?;
                result?
            }
        };
        let Some(rec) = state.history.last() else { return Err(TrainError::Setup("no evaluation was recorded".into())) };
        let decision = reporter.intermediate(step, rec.value, &rec.metrics);
        if let Some(dest) = saved_best {
            reporter.checkpoint(&dest);
        }
        if decision == Decision::Prune {
            return Ok(After::Prune);
        }
        if let Some(patience) = self.spec.early_stopping_patience {
            if patience > 0 && state.evals_without_improvement >= patience {
                return Ok(After::EarlyStop);
            }
        }
        Ok(After::Continue)
    }

    /// The model as it is now on the valid split: recorded in `state`, and checkpointed (with
    /// the trained weights beside an average); returns the new best checkpoint, if any.
    fn evaluate_and_save(
        &self,
        state: &mut TrainerState,
        opt: &mut Optimizer,
        average: Option<(&WeightAverage, &ema::Trained)>,
        step: i64,
        epoch: f64,
        lr: f64,
    ) -> Result<Option<PathBuf>, TrainError> {
        let p = predict(self.model, self.valid_rows, self.problem, self.pad, self.device)?;
        if !p.loss.is_finite() || p.outputs.iter().flatten().any(|x| !x.is_finite()) {
            let what =
                if p.loss.is_nan() || p.outputs.iter().flatten().any(|x| x.is_nan()) { "NaN valid loss" } else { "infinite valid loss" };
            let epoch = epoch.ceil().max(1.0) as usize;
            return Err(TrainError::NonFinite { what, epoch, step: state.global_step, lr: self.spec.learning_rate });
        }
        let threshold = decide_threshold(&p, self.problem, self.spec.threshold, &self.job.metric)?;
        let (mut metrics, _) = metrics_of(&p, self.problem, self.labels, threshold)?;
        if self.problem == Problem::MultiLabelClassification {
            // What this evaluation's weights predict with: kept with their checkpoint.
            state.threshold = Some(threshold);
        }
        let value = metrics.get(&self.job.metric).and_then(Value::as_f64).ok_or_else(|| {
            TrainError::Setup(format!(
                "the study metric `{}` is not computed for this problem (available: {})",
                self.job.metric,
                metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let train_loss = state.epoch_loss_sum / state.epoch_rows.max(1) as f64;
        metrics.insert("train_loss".into(), num(train_loss));
        if self.problem.has_labels() {
            metrics.insert("train_accuracy".into(), num(state.epoch_correct as f64 / state.epoch_rows.max(1) as f64));
        }
        metrics.insert("epoch".into(), num(epoch));
        metrics.insert("learning_rate".into(), num(lr));
        let rec = EvalRecord { step, epoch, global_step: state.global_step, value, metrics };
        let improved = match &state.best {
            None => value.is_finite(),
            Some(b) => self.job.direction.is_better(value, b.value),
        };
        state.history.push(rec.clone());
        if improved {
            state.best = Some(rec);
            state.evals_without_improvement = 0;
        } else {
            state.evals_without_improvement += 1;
        }

        // Checkpoints first, then the report: once the study has recorded an evaluation, a
        // retry can resume from it.
        let keep = self.spec.keep_checkpoints;
        let mut saved_best = None;
        if keep != KeepCheckpoints::None {
            let arts = &self.job.artifacts_dir;
            let name = if improved || keep == KeepCheckpoints::All {
                format!("checkpoint-{step}")
            } else {
                checkpoint::RESUME_ONLY_FOLDER.to_string()
            };
            let dest = arts.join(&name);
            let previous_best = state.best_checkpoint.clone();
            if improved {
                state.best_checkpoint = Some(dest.clone());
            }
            let model = self.model;
            let write = |dir: &Path| -> Result<(), String> {
                model.save_pretrained(dir).map_err(|e| e.to_string())?;
                if let Some((avg, trained)) = average {
                    avg.save_trained(trained, &dir.join(ema::TRAINED_WEIGHTS)).map_err(|e| e.to_string())?;
                }
                opt.save(&dir.join(checkpoint::OPTIMIZER_STATE)).map_err(|e| e.to_string())
            };
            checkpoint::write_atomic(&dest, &self.job.model_dir, state, write)?;
            // Only the newest checkpoint is resumed from (the best one too once `last` is
            // removed at the end): with `keep_checkpoints = "all"` the other epochs keep their
            // weights (soup, export) but not the optimizer's moments (twice the weights).
            if keep == KeepCheckpoints::All {
                let best = state.best_checkpoint.clone().unwrap_or_else(|| dest.clone());
                checkpoint::drop_resume_files(arts, &[&dest, &best]);
            }
            if name != checkpoint::RESUME_ONLY_FOLDER {
                let _ = std::fs::remove_dir_all(arts.join(checkpoint::RESUME_ONLY_FOLDER));
                if improved && keep == KeepCheckpoints::Best {
                    // (a best kept by a resumed-from attempt in another folder stays)
                    if let Some(prev) = previous_best.filter(|p| *p != dest && p.starts_with(arts)) {
                        let _ = std::fs::remove_dir_all(prev);
                    }
                }
                if improved {
                    saved_best = Some(dest);
                }
            }
        }
        Ok(saved_best)
    }
}

/// Over/under-fitting from the evaluation history (`trainer::metrics::fit` rules).
pub fn diagnose(history: &[EvalRecord], chance: f64, problem: Problem) -> String {
    let get = |r: &EvalRecord, k: &str| r.metrics.get(k).and_then(Value::as_f64);
    let recs: Vec<EpochRecord> = history
        .iter()
        .map(|r| EpochRecord {
            train_loss: get(r, "train_loss").unwrap_or(f64::NAN),
            valid_loss: get(r, "loss").unwrap_or(f64::NAN),
            train_accuracy: get(r, "train_accuracy"),
            valid_accuracy: get(r, "accuracy"),
            valid_metric: r.value,
        })
        .collect();
    let chance = if problem.has_labels() { chance } else { 0.0 };
    diagnose_fit(&recs, chance).to_string()
}

/// Evaluates a kept checkpoint once on the test split of `job.data`: the metrics and the
/// confusion matrix (`[[..]]`, rows = true class, columns = predicted).
/// Which split of the study's data a kept checkpoint is scored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalSplit {
    Valid,
    Test,
}

/// A kept checkpoint's trainer state and one split of the study's data, encoded with the
/// checkpoint's tokenizer and `max_length`: what scoring the checkpoint (or weights of its
/// shape) on that split needs.
pub struct SplitForCheckpoint {
    pub state: TrainerState,
    pub problem: Problem,
    pub rows: Vec<Encoded>,
    pub pad_id: u32,
}

/// Loads `data`, checks that `split` has rows and that the labels are the checkpoint's, and
/// encodes the split for `checkpoint`.
pub fn encode_split_for(checkpoint: &Path, data: &DataSection, split: EvalSplit) -> Result<SplitForCheckpoint, TrainError> {
    let state = checkpoint::read_state(checkpoint)?;
    let dataset = data::load_dataset(data)?;
    let examples = match split {
        EvalSplit::Valid => &dataset.valid,
        EvalSplit::Test => &dataset.test,
    };
    if examples.is_empty() {
        return Err(TrainError::Setup(match split {
            EvalSplit::Valid => "the valid split has no rows".into(),
            EvalSplit::Test => "the data has no test split (set `test_path` or a third `split` fraction)".into(),
        }));
    }
    if dataset.labels.id2label != state.labels {
        return Err(TrainError::Setup(format!(
            "the checkpoint was trained on labels {:?}, the data has {:?}",
            state.labels, dataset.labels.id2label
        )));
    }
    let encoder = TextEncoder::from_model_dir(checkpoint, state.spec.max_length)?;
    let rows = encoder.encode(examples)?;
    Ok(SplitForCheckpoint { state, problem: dataset.problem, rows, pad_id: encoder.pad_id() })
}

pub fn evaluate_test(job: &TestJob) -> Result<Map<String, Value>, TrainError> {
    let device = parse_device(&job.device)?;
    let SplitForCheckpoint { state, problem, rows, pad_id } = encode_split_for(&job.checkpoint, &job.data, EvalSplit::Test)?;
    let opts = ModelOptions { num_labels: state.num_labels, head: HeadKind::for_problem(problem), ..ModelOptions::default() };
    let model = BertClassifier::load(&job.checkpoint, &opts, &device)?;
    let p = predict(&model, &rows, problem, pad_id, &device)?;
    let (mut m, cm) = metrics_of(&p, problem, &state.labels, state.threshold())?;
    if let Some(cm) = cm {
        m.insert("confusion_matrix".into(), json!(cm));
        m.insert("labels".into(), json!(state.labels));
    }
    m.insert("rows".into(), json!(rows.len()));
    Ok(m)
}

#[cfg(test)]
#[path = "train_tests.rs"]
mod tests;
