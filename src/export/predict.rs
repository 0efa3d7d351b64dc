//! Batch inference with a Hugging Face `BertForSequenceClassification` folder (or RoBERTa's,
//! DistilBERT's or ELECTRA's: an export, or any compatible one): `config.json` (head from
//! `id2label` / `num_labels` / `problem_type`), `model.safetensors` (which must hold the whole
//! head — pooler and classifier, `classifier.dense`/`out_proj`, `pre_classifier`/`classifier`: a missing
//! head would be random) and the tokenizer (`tokenizer.json`, else `vocab.txt`). Runs in evaluation mode (no
//! dropout) on batches sorted by length and padded to their own longest row; outputs come
//! back in input order.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde_json::Value;

use super::hf::{self, HeadConfig};
use crate::trainer::data::{batch_indices, collate, DataError, Encoded, Example, Target, TextEncoder};
use crate::trainer::model::arch::Arch;
use crate::trainer::model::{read_config, BertClassifier, HeadKind, ModelError, ModelOptions};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("{path}: {why}")]
    Folder { path: PathBuf, why: String },
    #[error(transparent)]
    Hf(#[from] hf::HfError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Boxed, as in [`crate::trainer::train::TrainError`]: the data errors are large.
    #[error(transparent)]
    Data(Box<DataError>),
    #[error("inference: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One row to classify.
#[derive(Debug, Clone, PartialEq)]
pub struct TextInput {
    pub text: String,
    pub pair: Option<String>,
}

/// A loaded classification folder.
pub struct Predictor {
    model: BertClassifier,
    encoder: TextEncoder,
    head: HeadConfig,
    device: Device,
}

/// The length to truncate to: `tokenizer_config.json`'s `model_max_length` (an export sets it
/// to the trained `max_length`) within `max_position_embeddings`.
fn default_max_length(dir: &Path, max_positions: usize) -> usize {
    let from_cfg = hf::read_json_object(&dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|m| m.get("model_max_length").and_then(Value::as_f64))
        .filter(|&n| n >= 4.0 && n <= max_positions as f64)
        .map(|n| n as usize);
    from_cfg.unwrap_or(max_positions)
}

impl From<DataError> for PredictError {
    fn from(e: DataError) -> PredictError {
        PredictError::Data(Box::new(e))
    }
}

impl Predictor {
    /// Loads `dir`; `max_length` overrides the truncation length.
    pub fn load(dir: &Path, device: &Device, max_length: Option<usize>) -> Result<Self, PredictError> {
        let folder = |why: String| PredictError::Folder { path: dir.to_path_buf(), why };
        if !dir.is_dir() {
            return Err(folder("no such folder".into()));
        }
        let cfg_path = dir.join("config.json");
        let cfg = hf::read_json_object(&cfg_path)?;
        let head = hf::head_of_config(&cfg, &cfg_path)?;
        let bert = read_config(dir)?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(folder("no model.safetensors (PyTorch .bin checkpoints are not read; re-save with safe_serialization)".into()));
        }
        let shapes = hf::safetensors_shapes(&weights)?;
        let n = head.num_labels();
        let prefix = format!("{}.", bert.arch.prefix());
        let has = |name: &str, shape: &[usize]| {
            let bare = name.strip_prefix(&prefix).unwrap_or(name);
            shapes.get(name).or_else(|| shapes.get(bare)).is_some_and(|s| s == shape)
        };
        let h = bert.hidden_size;
        let kind = HeadKind::for_problem(head.problem);
        let class = Arch::hf_class(bert.model_type.as_deref(), kind);
        let (dense, _, _, _) = bert.arch.head_names();
        let out = bert.arch.classifier_name(kind);
        if !has(&format!("{out}.weight"), &[n, h]) || !has(&format!("{out}.bias"), &[n]) {
            return Err(folder(format!("model.safetensors has no {out} [{n}, {h}] for {n} output(s): not a fine-tuned {class}")));
        }
        if kind == HeadKind::Sequence && !has(&format!("{dense}.weight"), &[h, h]) {
            return Err(folder(format!("model.safetensors has no {dense}: not a {class}")));
        }
        let longest = bert.max_sequence_length();
        let max_length = match max_length {
            Some(m) if m > longest => {
                return Err(folder(format!(
                    "max length {m} exceeds the {longest} positions of the model (max_position_embeddings {})",
                    bert.max_position_embeddings
                )))
            }
            Some(m) => m,
            None => default_max_length(dir, longest),
        };
        let encoder = TextEncoder::from_model_dir(dir, max_length)?;
        let opts = ModelOptions { num_labels: n, head: kind, ..ModelOptions::default() };
        let model = BertClassifier::load(dir, &opts, device)?;
        Ok(Predictor { model, encoder, head, device: device.clone() })
    }

    /// Class names (`LABEL_0` for regression) and the problem.
    pub fn head(&self) -> &HeadConfig {
        &self.head
    }

    pub fn max_length(&self) -> usize {
        self.encoder.max_length()
    }

    /// Logits `[rows][num_labels]` in input order; `progress` gets the rows done after each
    /// batch.
    pub fn logits(&self, rows: &[TextInput], batch_size: usize, progress: &mut dyn FnMut(usize)) -> Result<Vec<Vec<f32>>, PredictError> {
        let examples: Vec<Example> =
            rows.iter().map(|r| Example { text: r.text.clone(), text_pair: r.pair.clone(), label: Target::Class(0) }).collect();
        let encoded: Vec<Encoded> = self.encoder.encode(&examples)?;
        let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
        let plan = batch_indices(&lengths, batch_size.max(1), None, true);
        let mut out = vec![Vec::new(); rows.len()];
        let mut done = 0;
        for idx in &plan {
            let b = collate(&encoded, idx, self.encoder.pad_id(), &self.device)?;
            let logits = self.model.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids), false)?;
            let logits: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2()?;
            for (&i, l) in idx.iter().zip(logits) {
                out[i] = l;
            }
            done += idx.len();
            progress(done);
        }
        Ok(out)
    }
}

impl Predictor {
    /// Token classification: the logits of each word (its first token's), per sentence in
    /// input order; `None` for a word cut by the length limit or that the tokenizer drops.
    /// `progress` gets the sentences done after each batch.
    pub fn word_logits(
        &self,
        sentences: &[Vec<String>],
        batch_size: usize,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Vec<Vec<Option<Vec<f32>>>>, PredictError> {
        // Each word's "tag" is its own position, so after alignment the first token of word i
        // carries i.
        let examples: Vec<Example> = sentences
            .iter()
            .map(|words| Example { text: words.join(" "), text_pair: None, label: Target::Tags((0..words.len() as u32).collect()) })
            .collect();
        let encoded: Vec<Encoded> = self.encoder.encode(&examples)?;
        let lengths: Vec<usize> = encoded.iter().map(Encoded::len).collect();
        let plan = batch_indices(&lengths, batch_size.max(1), None, true);
        let mut out: Vec<Vec<Option<Vec<f32>>>> = sentences.iter().map(|w| vec![None; w.len()]).collect();
        let mut done = 0;
        for idx in &plan {
            let b = collate(&encoded, idx, self.encoder.pad_id(), &self.device)?;
            let logits = self.model.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids), false)?;
            let logits: Vec<Vec<Vec<f32>>> = logits.to_dtype(candle_core::DType::F32)?.to_vec3()?;
            for (&i, row) in idx.iter().zip(logits) {
                for (word, l) in encoded[i].label.tags().iter().zip(row) {
                    if let Some(slot) = out[i].get_mut(*word as usize) {
                        *slot = Some(l);
                    }
                }
            }
            done += idx.len();
            progress(done);
        }
        Ok(out)
    }
}

/// Softmax of one row of logits, in f64.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let m = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// The id of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> usize {
    logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_and_argmax() {
        let p = softmax(&[1.0, 2.0, 3.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((p[2] - 0.6652409557748219).abs() < 1e-9, "{p:?}");
        assert_eq!(argmax(&[0.5, 2.0, 2.0, -1.0]), 1);
        let big = softmax(&[1000.0, 0.0]);
        assert!(big[0].is_finite() && (big[0] - 1.0).abs() < 1e-12);
    }
}
