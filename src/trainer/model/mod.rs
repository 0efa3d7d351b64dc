//! A trainable BERT for sequence classification, written for fine-tuning with Candle and laid
//! out exactly like Hugging Face's `BertForSequenceClassification` (embeddings → encoder layers
//! → pooler (dense + tanh on `[CLS]`) → dropout → classifier linear), so every weight maps 1:1
//! to its HF name (`bert.embeddings.word_embeddings.weight`, …, `bert.pooler.dense.weight`,
//! `classifier.weight`).
//!
//! RoBERTa (`roberta`, `xlm-roberta`, `camembert`), DistilBERT and ELECTRA checkpoints load
//! into the same blocks under their own names and heads, and save as their own
//! `…ForSequenceClassification` (the differences are in [`arch`]).
//!
//! # API for the training loop
//! ```ignore
//! let opts = ModelOptions { num_labels: 2, freeze_layers: 2, ..ModelOptions::default() };
//! let model = BertClassifier::load(dir, &opts, &device)?;      // config.json + model.safetensors
//! let logits = model.forward(&ids, &mask, None, /*train=*/ true)?; // [batch, num_labels], f32
//! let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
//! let grads = model.backward(&loss)?;                    // use this rather than loss.backward()
//! for (name, var) in model.trainable_vars() { let g = grads.get(&var); /* update */ }
//! model.save_safetensors(&path)?;                          // HF names, atomic (tmp + rename)
//! ```
//! * Inputs: `input_ids`, `attention_mask` (1 keep / 0 pad) and optional `token_type_ids`, all
//!   `[batch, seq]` integer tensors (u32 or i64; the mask may also be f32).
//! * `problem = "regression"`: pass `num_labels = 1` and use MSE on the single output.
//! * Freezing: `freeze_layers = k` freezes the embeddings and the first k encoder layers
//!   (`k = num_hidden_layers` → only pooler + classifier train); `freeze_embeddings` freezes the
//!   embeddings alone. Frozen blocks run on detached weights, so no graph and no gradient work is
//!   spent there; [`BertClassifier::trainable_vars`] lists what the optimizer may update.
//! * Dropout: `opts.dropout` overrides config.json's `hidden_dropout_prob`,
//!   `attention_probs_dropout_prob` and the head's `classifier_dropout` (each of which applies
//!   otherwise); active only with `train = true`; seeded by `opts.seed`.
//! * Checkpoints without the `bert.` prefix (sentence-transformers) load too; a missing pooler
//!   or classifier is initialised N(0, initializer_range) (logged with `tracing::info!`).
//! * Speed: [`crate::trainer::perf::tune_for_training`] (malloc tuning, one thread pool) runs
//!   on the first `load`; call it earlier yourself if the process does heavy candle work first. On the CPU the encoder runs on fused kernels with
//!   their own backward: `linear` (gemm, direct `dW`), `attention` (q/k/v from one projection,
//!   per-head gemm, probabilities recomputed in the backward), `ops` (layer norm, GELU, dropout
//!   and bias epilogues) over vectorised `kernels`, `embedding` (a row lookup whose backward
//!   writes the table's gradient once); other devices use composed candle ops.
//!
//! Files: `config.rs` (HF config), `arch.rs` (the families), `error.rs`, `bert.rs` (blocks), `ops.rs`, `attention.rs`,
//! `linear.rs`, `embedding.rs`, `kernels.rs`, `tests.rs`.

pub mod arch;
pub mod attention;
mod bert;
pub mod config;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod device_check;
mod embedding;
pub mod error;
mod kernels;
pub mod linear;
pub mod ops;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use arch::{Arch, Block, HeadActivation, SUPPORTED_MODEL_TYPES};
use bert::{DropoutProbs, Embeddings, EncoderLayer, Head, LayerNorm, Linear, Pass};
pub use config::BertConfig;
pub use error::ModelError;
use ops::Dropout;

/// What the caller decides about the model (everything else comes from config.json).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// Outputs of the classifier (1 for regression).
    pub num_labels: usize,
    /// Dropout probability for hidden states and attention; `None` = config.json's values.
    pub dropout: Option<f64>,
    /// Freeze the embeddings and the first `freeze_layers` encoder layers.
    pub freeze_layers: usize,
    /// Freeze the embeddings (implied by `freeze_layers > 0`).
    pub freeze_embeddings: bool,
    /// Seeds the head initialisation and the dropout masks.
    pub seed: u64,
    /// Activations and matmuls in f32, or bf16 (mixed precision: weights, gradients, layer
    /// norms, softmax and the logits stay f32).
    pub compute_dtype: DType,
    /// One prediction per text (the `…ForSequenceClassification` head) or per token.
    pub head: HeadKind,
}

/// What the head predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HeadKind {
    /// One output vector per text, from the first token through the family's head
    /// (`…ForSequenceClassification`).
    #[default]
    Sequence,
    /// One output vector per token: dropout, then the `classifier` linear on every hidden
    /// state (`…ForTokenClassification`; no pooler).
    Token,
}

impl HeadKind {
    /// The head a problem trains: a token head for token classification.
    pub fn for_problem(problem: crate::trainer::data::Problem) -> Self {
        match problem {
            crate::trainer::data::Problem::TokenClassification => HeadKind::Token,
            _ => HeadKind::Sequence,
        }
    }
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            num_labels: 2,
            dropout: None,
            freeze_layers: 0,
            freeze_embeddings: false,
            seed: 0,
            compute_dtype: DType::F32,
            head: HeadKind::Sequence,
        }
    }
}

/// One named weight and whether the optimizer may update it.
struct Param {
    name: String,
    var: Var,
    trainable: bool,
}

/// Encoder + head, `BertForSequenceClassification`-compatible (or RoBERTa's, DistilBERT's,
/// ELECTRA's).
pub struct BertClassifier {
    config: BertConfig,
    opts: ModelOptions,
    embeddings: Embeddings,
    layers: Vec<EncoderLayer>,
    head: Head,
    params: Vec<Param>,
    varmap: VarMap,
    dropout: Dropout,
    probs: DropoutProbs,
    device: Device,
}

/// Reads tensors by HF name from one safetensors file, with or without the encoder's prefix
/// (`bert.`, `roberta.`, `distilbert.`).
struct Loader<'a> {
    prefix: &'static str,
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    device: &'a Device,
    rng: ChaCha8Rng,
    init_std: f64,
    params: Vec<Param>,
}

impl Loader<'_> {
    fn find(&mut self, name: &str) -> Option<Tensor> {
        let bare = self.bare(name).to_string();
        let legacy = bare.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta");
        for cand in [name.to_string(), bare, format!("{}.{legacy}", self.prefix), legacy] {
            if let Some(t) = self.tensors.remove(&cand) {
                return Some(t);
            }
        }
        None
    }

    /// `name` without the encoder's prefix.
    fn bare<'n>(&self, name: &'n str) -> &'n str {
        name.strip_prefix(self.prefix).and_then(|r| r.strip_prefix('.')).unwrap_or(name)
    }

    fn register(&mut self, name: &str, t: Tensor) -> Result<Var, ModelError> {
        let var = Var::from_tensor(&t.to_dtype(DType::F32)?.to_device(self.device)?)?;
        self.params.push(Param { name: name.to_string(), var: var.clone(), trainable: true });
        Ok(var)
    }

    /// A weight that must be in the file, with this shape.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Var, ModelError> {
        let t = self.find(name).ok_or_else(|| ModelError::MissingTensor {
            path: self.path.clone(),
            name: self.bare(name).to_string(),
            prefix: self.prefix,
        })?;
        if t.dims() != shape {
            return Err(ModelError::ShapeMismatch {
                path: self.path.clone(),
                name: name.to_string(),
                expected: shape.to_vec(),
                found: t.dims().to_vec(),
            });
        }
        self.register(name, t)
    }

    /// A linear layer that may be absent (pooler, classifier): loaded when present with the
    /// right shape, otherwise initialised like HF (weight N(0, initializer_range), bias 0).
    fn take_or_init_linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear, ModelError> {
        let (wn, bn) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let (w, b) = (self.find(&wn), self.find(&bn));
        if let (Some(w), Some(b)) = (w, b) {
            if w.dims() == [out, inp] && b.dims() == [out] {
                return Ok(Linear { weight: self.register(&wn, w)?, bias: self.register(&bn, b)? });
            }
            tracing::info!("{}: `{prefix}` has shape {:?}, need [{out}, {inp}]; initialising it", self.path.display(), w.dims());
        } else {
            tracing::info!("{}: no `{prefix}` weights; initialising them (normal, std {})", self.path.display(), self.init_std);
        }
        let normal = Normal::new(0.0f32, self.init_std as f32)
            .map_err(|e| ModelError::Options(format!("initializer_range {}: {e}", self.init_std)))?;
        let data: Vec<f32> = (0..out * inp).map(|_| normal.sample(&mut self.rng)).collect();
        let w = Tensor::from_vec(data, (out, inp), &Device::Cpu)?;
        let b = Tensor::zeros(out, DType::F32, &Device::Cpu)?;
        Ok(Linear { weight: self.register(&wn, w)?, bias: self.register(&bn, b)? })
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) -> Result<Linear, ModelError> {
        Ok(Linear { weight: self.take(&format!("{prefix}.weight"), &[out, inp])?, bias: self.take(&format!("{prefix}.bias"), &[out])? })
    }

    fn norm(&mut self, prefix: &str, h: usize, eps: f64) -> Result<LayerNorm, ModelError> {
        Ok(LayerNorm { weight: self.take(&format!("{prefix}.weight"), &[h])?, bias: self.take(&format!("{prefix}.bias"), &[h])?, eps })
    }
}

/// Reads and parses `dir/config.json` (any supported `model_type`, see [`arch`]).
pub fn read_config(dir: &Path) -> Result<BertConfig, ModelError> {
    let path = dir.join("config.json");
    let bad = |reason: String| ModelError::Config { path: path.clone(), reason };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let raw: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let model_type = raw.get("model_type").and_then(|v| v.as_str());
    let arch = Arch::from_model_type(model_type).ok_or_else(|| {
        bad(format!("model_type `{}` is not supported: sft-search fine-tunes {SUPPORTED_MODEL_TYPES}", model_type.unwrap_or_default()))
    })?;
    let mut config: BertConfig =
        serde_json::from_value(serde_json::Value::Object(arch.normalise_config(&raw))).map_err(|e| bad(e.to_string()))?;
    config.arch = arch;
    config.source = raw;
    if config.num_attention_heads == 0 || !config.hidden_size.is_multiple_of(config.num_attention_heads) {
        return Err(bad(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        )));
    }
    if config.arch == Arch::DistilBert && config.source.get("sinusoidal_pos_embds").and_then(|v| v.as_bool()) == Some(true) {
        return Err(bad("sinusoidal_pos_embds = true (fixed sinusoidal positions) is not supported".into()));
    }
    if config.max_sequence_length() == 0 {
        return Err(bad(format!(
            "max_position_embeddings {} leaves no room after the first position id {}",
            config.max_position_embeddings,
            config.position_offset()
        )));
    }
    Ok(config)
}

impl BertClassifier {
    /// Loads `dir/config.json` and `dir/model.safetensors` onto `device`.
    /// Also applies [`crate::trainer::perf::tune_for_training`] (once per process) so a training
    /// process gets the fast CPU settings by default.
    pub fn load(dir: &Path, opts: &ModelOptions, device: &Device) -> Result<Self, ModelError> {
        crate::trainer::perf::tune_for_training();
        let config = read_config(dir)?;
        let path = dir.join("model.safetensors");
        if !path.is_file() {
            return Err(ModelError::Weights { path, reason: "file not found".into() });
        }
        let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| ModelError::Weights { path: path.clone(), reason: e.to_string() })?;
        Self::from_tensors(config, tensors, path, opts, device)
    }

    /// Builds the model from named tensors (`path` only names the source in errors).
    pub fn from_tensors(
        config: BertConfig,
        tensors: HashMap<String, Tensor>,
        path: PathBuf,
        opts: &ModelOptions,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let n_layers = config.num_hidden_layers;
        if opts.freeze_layers > n_layers {
            return Err(ModelError::Options(format!("freeze_layers = {} but the model has {n_layers} layers", opts.freeze_layers)));
        }
        if config.hidden_act != "gelu" {
            return Err(ModelError::Options(format!("hidden_act `{}` is not supported (only \"gelu\", the erf form)", config.hidden_act)));
        }
        if let Some(kind) = config.extra.get("position_embedding_type").and_then(|v| v.as_str()) {
            if kind != "absolute" {
                return Err(ModelError::Options(format!("position_embedding_type `{kind}` is not supported")));
            }
        }
        if opts.num_labels == 0 {
            return Err(ModelError::Options("num_labels must be at least 1".into()));
        }
        if let Some(p) = opts.dropout {
            if !(0.0..1.0).contains(&p) {
                return Err(ModelError::Options(format!("dropout {p} is not in [0, 1)")));
            }
        }
        let (h, inter, eps) = (config.hidden_size, config.intermediate_size, config.layer_norm_eps);
        let arch = config.arch;
        let mut ld = Loader {
            prefix: arch.prefix(),
            path,
            tensors,
            device,
            rng: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x5eed_1417),
            init_std: config.initializer_range,
            params: Vec::new(),
        };
        let (word, position, token_type, norm) = arch.embedding_names();
        let e = config.embedding_dim();
        let embeddings = Embeddings {
            word: ld.take(&format!("{word}.weight"), &[config.vocab_size, e])?,
            position: ld.take(&format!("{position}.weight"), &[config.max_position_embeddings, e])?,
            token_type: match token_type {
                Some(t) => Some(ld.take(&format!("{t}.weight"), &[config.type_vocab_size, e])?),
                None => None,
            },
            position_offset: config.position_offset(),
            norm: ld.norm(&norm, e, eps)?,
            project: if e != h { Some(ld.linear(&arch.projection_name(), h, e)?) } else { None },
        };
        let mut layers = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let n = arch.layer_names(i);
            layers.push(EncoderLayer {
                query: ld.linear(&n.query, h, h)?,
                key: ld.linear(&n.key, h, h)?,
                value: ld.linear(&n.value, h, h)?,
                attn_out: ld.linear(&n.attn_out, h, h)?,
                attn_norm: ld.norm(&n.attn_norm, h, eps)?,
                intermediate: ld.linear(&n.intermediate, inter, h)?,
                output: ld.linear(&n.output, h, inter)?,
                out_norm: ld.norm(&n.out_norm, h, eps)?,
                heads: config.num_attention_heads,
            });
        }
        let (dense, out, activation, dropout_first) = arch.head_names();
        let head = match opts.head {
            HeadKind::Sequence => Head {
                dense: Some(ld.take_or_init_linear(dense, h, h)?),
                out: ld.take_or_init_linear(out, opts.num_labels, h)?,
                activation,
                dropout_first,
            },
            HeadKind::Token => Head {
                dense: None,
                out: ld.take_or_init_linear(arch.classifier_name(HeadKind::Token), opts.num_labels, h)?,
                activation,
                dropout_first: true,
            },
        };

        let embeddings_frozen = opts.freeze_embeddings || opts.freeze_layers > 0;
        let varmap = VarMap::new();
        let mut params = ld.params;
        for p in params.iter_mut() {
            p.trainable = match arch.block_of(&p.name) {
                Block::Embeddings => !embeddings_frozen,
                Block::Layer(idx) => idx >= opts.freeze_layers,
                Block::Head => true,
            };
            if let Ok(mut data) = varmap.data().lock() {
                data.insert(p.name.clone(), p.var.clone());
            }
        }
        let hidden = opts.dropout.unwrap_or(config.hidden_dropout_prob);
        let probs = DropoutProbs {
            hidden,
            attention: opts.dropout.unwrap_or(config.attention_probs_dropout_prob),
            // DistilBERT's token head drops out with `dropout`, not `seq_classif_dropout`.
            head: opts
                .dropout
                .or_else(|| if opts.head == HeadKind::Token && arch == Arch::DistilBert { None } else { arch.head_dropout(&config.source) })
                .unwrap_or(hidden),
        };
        Ok(Self {
            dropout: Dropout::new(opts.seed),
            config,
            opts: opts.clone(),
            embeddings,
            layers,
            head,
            params,
            varmap,
            probs,
            device: device.clone(),
        })
    }

    /// Logits `[batch, num_labels]` (f32), or `[batch, seq, num_labels]` with a token head.
    /// `train = true` turns dropout on.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let x = self.hidden_states(input_ids, attention_mask, token_type_ids, train)?;
        let pass = self.pass(train, false);
        let drop = |t: Tensor| if train { self.dropout.apply(&t, self.probs.head) } else { Ok(t) };
        let Some(dense) = &self.head.dense else {
            // A token head: dropout and the classifier on every position.
            return self.head.out.forward(&drop(x)?, pass)?.to_dtype(DType::F32);
        };
        let mut x = x.narrow(1, 0, 1)?.squeeze(1)?; // the first token: [CLS] / <s>
        if self.head.dropout_first {
            x = drop(x)?;
        }
        let x = dense.forward(&x, pass)?;
        let x = match self.head.activation {
            HeadActivation::Tanh => x.tanh()?,
            HeadActivation::Relu => x.relu()?,
            HeadActivation::Gelu => x.gelu_erf()?,
        };
        self.head.out.forward(&drop(x)?, pass)?.to_dtype(DType::F32)
    }

    /// The last encoder layer's output `[batch, seq, hidden]` (HF `last_hidden_state`).
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        token_type_ids: Option<&Tensor>,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let (b, s) = input_ids.dims2()?;
        if s > self.config.max_sequence_length() {
            candle_core::bail!(
                "sequence length {s} exceeds the {} positions of max_position_embeddings {}",
                self.config.max_sequence_length(),
                self.config.max_position_embeddings
            )
        }
        let zeros;
        let tt = match token_type_ids {
            Some(t) => t,
            None => {
                zeros = Tensor::zeros((b, s), DType::U32, input_ids.device())?;
                &zeros
            }
        };
        // Additive key mask: 0 where attended, -1e9 on padding.
        let mask = attention_mask.to_dtype(DType::F32)?.affine(1e9, -1e9)?;
        let frozen_emb = self.opts.freeze_embeddings || self.opts.freeze_layers > 0;
        let mut x = self.embeddings.forward(input_ids, tt, self.pass(train, frozen_emb), self.probs.hidden, &self.dropout)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let frozen = i < self.opts.freeze_layers;
            x = layer.forward(&x, &mask, self.pass(train, frozen), self.probs, &self.dropout)?;
            if frozen && i + 1 == self.opts.freeze_layers {
                x = x.detach(); // the cut: nothing before this point is differentiated
            }
        }
        Ok(x)
    }

    fn pass(&self, train: bool, frozen: bool) -> Pass {
        Pass { train, frozen, dtype: self.opts.compute_dtype }
    }

    /// Gradients of `loss` for the trainable variables (today `loss.backward()`; the training
    /// loop should call this so a faster hand-written backward can replace it transparently).
    pub fn backward(&self, loss: &Tensor) -> candle_core::Result<GradStore> {
        loss.backward()
    }

    /// The variables the optimizer may update, in load order, with their HF names.
    pub fn trainable_vars(&self) -> Vec<(String, Var)> {
        self.params.iter().filter(|p| p.trainable).map(|p| (p.name.clone(), p.var.clone())).collect()
    }

    /// Every variable, trainable or frozen, with its HF name.
    pub fn all_vars(&self) -> Vec<(String, Var)> {
        self.params.iter().map(|p| (p.name.clone(), p.var.clone())).collect()
    }

    /// The variables by name (the same `Var`s as [`Self::all_vars`]).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The parsed HF config (re-emit it with [`Self::save_pretrained`]).
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    pub fn options(&self) -> &ModelOptions {
        &self.opts
    }

    pub fn num_labels(&self) -> usize {
        self.opts.num_labels
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Restarts the dropout stream (e.g. per trial or per epoch for reproducibility).
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout.reseed(seed)
    }

    /// Writes every weight under its HF name (`bert.`, `roberta.` or `distilbert.` prefix) to `path` atomically: a temporary
    /// file in the same folder, then a rename.
    pub fn save_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        let map: HashMap<String, Tensor> = self.params.iter().map(|p| (p.name.clone(), p.var.as_tensor().clone())).collect();
        let file_name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
        let save_err = |reason: String| ModelError::Save { path: path.to_path_buf(), reason };
        candle_core::safetensors::save(&map, &tmp).map_err(|e| save_err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            save_err(e.to_string())
        })
    }

    /// Writes `dir/config.json` (the loaded config plus `num_labels`) and `dir/model.safetensors`,
    /// a folder [`Self::load`] and Hugging Face can read.
    pub fn save_pretrained(&self, dir: &Path) -> Result<(), ModelError> {
        let save_err = |reason: String| ModelError::Save { path: dir.join("config.json"), reason };
        std::fs::create_dir_all(dir).map_err(|e| save_err(e.to_string()))?;
        let mut config = self.config.source.clone();
        let class = Arch::hf_class(self.config.model_type.as_deref(), self.opts.head);
        config.insert("num_labels".into(), serde_json::json!(self.opts.num_labels));
        config.insert("architectures".into(), serde_json::json!([class]));
        let text = serde_json::to_string_pretty(&config).map_err(|e| save_err(e.to_string()))?;
        let cfg = dir.join("config.json");
        let tmp = dir.join(".config.json.tmp");
        std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &cfg)).map_err(|e| save_err(e.to_string()))?;
        self.save_safetensors(&dir.join("model.safetensors"))
    }
}

/// Opens CUDA device `ordinal` for training (with the `cuda` feature; an error without it).
/// The fused kernels run on one stream, so cudarc's per-allocation event tracking is off.
pub fn open_cuda(ordinal: usize) -> candle_core::Result<Device> {
    #[cfg(feature = "cuda")]
    {
        cuda::open_device(ordinal)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = ordinal;
        Err(candle_core::Error::Msg(
            "this sft-search was built without CUDA: build it with `cargo build --release --features cuda` (README, GPUs)".into(),
        ))
    }
}

#[cfg(test)]
mod tests;
