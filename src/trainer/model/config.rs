//! The Hugging Face `BertConfig` fields we read from `config.json` (DistilBERT's names are
//! rewritten to BERT's first, see [`Arch::normalise_config`]); the file itself is kept so the
//! config can be re-emitted unchanged next to an exported checkpoint.

use serde::{Deserialize, Serialize};

use super::arch::Arch;

fn default_eps() -> f64 {
    1e-12
}
fn default_init() -> f64 {
    0.02
}
fn default_dropout() -> f64 {
    0.1
}
fn default_act() -> String {
    "gelu".to_string()
}
fn default_type_vocab() -> usize {
    2
}

/// A BERT configuration as written by Hugging Face `transformers`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pad_token_id: usize,
    #[serde(default)]
    pub model_type: Option<String>,
    /// ELECTRA's embedding width, when it differs from `hidden_size`.
    #[serde(default)]
    pub embedding_size: Option<usize>,
    /// Every other field of the file.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The encoder family (from `model_type`).
    #[serde(skip, default = "default_arch")]
    pub arch: Arch,
    /// `config.json` as read, with the family's own field names, for re-emission.
    #[serde(skip)]
    pub source: serde_json::Map<String, serde_json::Value>,
}

fn default_arch() -> Arch {
    Arch::Bert
}

impl BertConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The width of the embeddings: `hidden_size`, or ELECTRA's `embedding_size`.
    pub fn embedding_dim(&self) -> usize {
        match (self.arch, self.embedding_size) {
            (Arch::Electra, Some(e)) => e,
            _ => self.hidden_size,
        }
    }

    /// The first position id (RoBERTa counts from `pad_token_id + 1`).
    pub fn position_offset(&self) -> usize {
        self.arch.position_offset(self.pad_token_id)
    }

    /// The longest input the position embeddings cover (RoBERTa's 514 positions take 512).
    pub fn max_sequence_length(&self) -> usize {
        self.max_position_embeddings.saturating_sub(self.position_offset())
    }
}
