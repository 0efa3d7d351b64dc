//! The encoder families the classifier loads, and what differs between them: the `config.json`
//! field names, the Hugging Face tensor names, the position ids, token types and the
//! classification head. All three are post-layer-norm BERT encoders with erf GELU, so one set
//! of fused blocks (`bert.rs`) runs them all.
//!
//! | `model_type` | prefix | head (on the first token) | HF class |
//! |---|---|---|---|
//! | `bert` (and none) | `bert.` | pooler dense + tanh → dropout → `classifier` | `BertForSequenceClassification` |
//! | `roberta`, `xlm-roberta`, `camembert` | `roberta.` | dropout → `classifier.dense` + tanh → dropout → `classifier.out_proj` | `RobertaForSequenceClassification`, … |
//! | `distilbert` | `distilbert.` | `pre_classifier` + ReLU → dropout → `classifier` | `DistilBertForSequenceClassification` |
//! | `electra` | `electra.` | dropout → `classifier.dense` + GELU → dropout → `classifier.out_proj` | `ElectraForSequenceClassification` |
//!
//! ELECTRA's embeddings may be narrower than its hidden states (`embedding_size`); then
//! `electra.embeddings_project` maps them up, and counts as part of the embeddings.

use serde_json::{Map, Value};

/// The token-classification head's linear layer, the same name in every family
/// (`…ForTokenClassification.classifier`).
pub const TOKEN_CLASSIFIER: &str = "classifier";

/// An encoder family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Bert,
    /// RoBERTa, XLM-RoBERTa and CamemBERT: BERT with positions counted from
    /// `pad_token_id + 1`, one token type, and their own head.
    Roberta,
    /// DistilBERT: BERT without token types, with its own field and tensor names and head.
    DistilBert,
    /// ELECTRA (the discriminator): BERT with embeddings of their own width, projected up.
    Electra,
}

/// The `model_type`s we fine-tune, for error messages.
pub const SUPPORTED_MODEL_TYPES: &str = "bert, roberta, xlm-roberta, camembert, distilbert, electra";

/// The activation after the head's first dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadActivation {
    Tanh,
    Relu,
    /// The erf form.
    Gelu,
}

/// The tensor names of one encoder layer's weights (each a prefix for `.weight`/`.bias`).
pub struct LayerNames {
    pub query: String,
    pub key: String,
    pub value: String,
    pub attn_out: String,
    pub attn_norm: String,
    pub intermediate: String,
    pub output: String,
    pub out_norm: String,
}

impl Arch {
    /// The family of a `config.json`'s `model_type` (a missing one reads as BERT); `None` for a
    /// type we do not load.
    pub fn from_model_type(model_type: Option<&str>) -> Option<Arch> {
        match model_type {
            None | Some("bert") => Some(Arch::Bert),
            Some("roberta" | "xlm-roberta" | "camembert") => Some(Arch::Roberta),
            Some("distilbert") => Some(Arch::DistilBert),
            Some("electra") => Some(Arch::Electra),
            Some(_) => None,
        }
    }

    /// The prefix of the encoder's tensor names (without the dot).
    pub fn prefix(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Roberta => "roberta",
            Arch::DistilBert => "distilbert",
            Arch::Electra => "electra",
        }
    }

    /// The `transformers` class of the classifier for `model_type` and the head.
    pub fn hf_class(model_type: Option<&str>, head: super::HeadKind) -> &'static str {
        use super::HeadKind::{Sequence, Token};
        match (model_type, head) {
            (Some("roberta"), Sequence) => "RobertaForSequenceClassification",
            (Some("xlm-roberta"), Sequence) => "XLMRobertaForSequenceClassification",
            (Some("camembert"), Sequence) => "CamembertForSequenceClassification",
            (Some("distilbert"), Sequence) => "DistilBertForSequenceClassification",
            (Some("electra"), Sequence) => "ElectraForSequenceClassification",
            (_, Sequence) => "BertForSequenceClassification",
            (Some("roberta"), Token) => "RobertaForTokenClassification",
            (Some("xlm-roberta"), Token) => "XLMRobertaForTokenClassification",
            (Some("camembert"), Token) => "CamembertForTokenClassification",
            (Some("distilbert"), Token) => "DistilBertForTokenClassification",
            (Some("electra"), Token) => "ElectraForTokenClassification",
            (_, Token) => "BertForTokenClassification",
        }
    }

    /// `config.json` with DistilBERT's field names rewritten to BERT's (`dim` → `hidden_size`,
    /// …) so one config type reads every family; other families are returned unchanged.
    pub fn normalise_config(self, raw: &Map<String, Value>) -> Map<String, Value> {
        let mut m = raw.clone();
        if self == Arch::DistilBert {
            for (from, to) in [
                ("dim", "hidden_size"),
                ("n_layers", "num_hidden_layers"),
                ("n_heads", "num_attention_heads"),
                ("hidden_dim", "intermediate_size"),
                ("activation", "hidden_act"),
                ("dropout", "hidden_dropout_prob"),
                ("attention_dropout", "attention_probs_dropout_prob"),
            ] {
                if let Some(v) = raw.get(from) {
                    m.insert(to.into(), v.clone());
                    m.remove(from);
                }
            }
            m.insert("type_vocab_size".into(), Value::from(0));
            // DistilBERT's layer norms use 1e-12, fixed in its code, not in config.json.
            m.insert("layer_norm_eps".into(), Value::from(1e-12));
        }
        m
    }

    /// The config.json keys of the dropout probabilities a fine-tuned `dropout` replaces.
    pub fn dropout_keys(self) -> &'static [&'static str] {
        match self {
            Arch::DistilBert => &["dropout", "attention_dropout", "seq_classif_dropout"],
            _ => &["hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"],
        }
    }

    /// The head's dropout in config.json when it has its own (`classifier_dropout`,
    /// `seq_classif_dropout`); otherwise the hidden dropout applies.
    pub fn head_dropout(self, raw: &Map<String, Value>) -> Option<f64> {
        let key = match self {
            Arch::DistilBert => "seq_classif_dropout",
            _ => "classifier_dropout",
        };
        raw.get(key).and_then(Value::as_f64)
    }

    /// The first position id of a sequence: RoBERTa counts from `pad_token_id + 1`.
    pub fn position_offset(self, pad_token_id: usize) -> usize {
        match self {
            Arch::Roberta => pad_token_id + 1,
            _ => 0,
        }
    }

    /// The embedding tensors' prefixes: word, position, token type (none for DistilBERT), norm.
    pub fn embedding_names(self) -> (String, String, Option<String>, String) {
        let e = format!("{}.embeddings", self.prefix());
        let token_type = (self != Arch::DistilBert).then(|| format!("{e}.token_type_embeddings"));
        (format!("{e}.word_embeddings"), format!("{e}.position_embeddings"), token_type, format!("{e}.LayerNorm"))
    }

    /// The linear layer from narrower embeddings up to the hidden size (ELECTRA's name; only
    /// ELECTRA configs have an `embedding_size` of their own).
    pub fn projection_name(self) -> String {
        format!("{}.embeddings_project", self.prefix())
    }

    /// The prefix shared by encoder layer `i`'s tensors (`bert.encoder.layer.3`, …).
    pub fn layer_prefix(self, i: usize) -> String {
        match self {
            Arch::DistilBert => format!("distilbert.transformer.layer.{i}"),
            _ => format!("{}.encoder.layer.{i}", self.prefix()),
        }
    }

    /// The tensor names of encoder layer `i`.
    pub fn layer_names(self, i: usize) -> LayerNames {
        let p = self.layer_prefix(i);
        match self {
            Arch::DistilBert => LayerNames {
                query: format!("{p}.attention.q_lin"),
                key: format!("{p}.attention.k_lin"),
                value: format!("{p}.attention.v_lin"),
                attn_out: format!("{p}.attention.out_lin"),
                attn_norm: format!("{p}.sa_layer_norm"),
                intermediate: format!("{p}.ffn.lin1"),
                output: format!("{p}.ffn.lin2"),
                out_norm: format!("{p}.output_layer_norm"),
            },
            _ => LayerNames {
                query: format!("{p}.attention.self.query"),
                key: format!("{p}.attention.self.key"),
                value: format!("{p}.attention.self.value"),
                attn_out: format!("{p}.attention.output.dense"),
                attn_norm: format!("{p}.attention.output.LayerNorm"),
                intermediate: format!("{p}.intermediate.dense"),
                output: format!("{p}.output.dense"),
                out_norm: format!("{p}.output.LayerNorm"),
            },
        }
    }

    /// The head: its first dense layer, its output layer, the activation between, and whether
    /// dropout also comes before the dense layer (RoBERTa).
    pub fn head_names(self) -> (&'static str, &'static str, HeadActivation, bool) {
        match self {
            Arch::Bert => ("bert.pooler.dense", "classifier", HeadActivation::Tanh, false),
            Arch::Roberta => ("classifier.dense", "classifier.out_proj", HeadActivation::Tanh, true),
            Arch::DistilBert => ("pre_classifier", "classifier", HeadActivation::Relu, false),
            Arch::Electra => ("classifier.dense", "classifier.out_proj", HeadActivation::Gelu, true),
        }
    }

    /// The name of the head's output linear (`classifier`, `classifier.out_proj`, …): the
    /// family's sequence head, or the token head's [`TOKEN_CLASSIFIER`] in every family.
    pub fn classifier_name(self, head: super::HeadKind) -> &'static str {
        match head {
            super::HeadKind::Sequence => self.head_names().1,
            super::HeadKind::Token => TOKEN_CLASSIFIER,
        }
    }

    /// Which block a tensor name belongs to, for freezing.
    pub fn block_of(self, name: &str) -> Block {
        let emb = format!("{}.embeddings.", self.prefix());
        let layer = match self {
            Arch::DistilBert => "distilbert.transformer.layer.".to_string(),
            _ => format!("{}.encoder.layer.", self.prefix()),
        };
        if name.starts_with(&emb) || name.starts_with(&format!("{}.", self.projection_name())) {
            Block::Embeddings
        } else if let Some(rest) = name.strip_prefix(&layer) {
            rest.split('.').next().and_then(|s| s.parse().ok()).map_or(Block::Head, Block::Layer)
        } else {
            Block::Head
        }
    }
}

/// Where a weight sits, for freezing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    Embeddings,
    Layer(usize),
    /// The pooler and classifier (everything after the encoder).
    Head,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trainer::model::HeadKind;
    use serde_json::json;

    #[test]
    fn model_types_map_to_families_and_classes() {
        assert_eq!(Arch::from_model_type(None), Some(Arch::Bert));
        assert_eq!(Arch::from_model_type(Some("xlm-roberta")), Some(Arch::Roberta));
        assert_eq!(Arch::from_model_type(Some("distilbert")), Some(Arch::DistilBert));
        assert_eq!(Arch::from_model_type(Some("electra")), Some(Arch::Electra));
        assert_eq!(Arch::from_model_type(Some("deberta-v2")), None);
        assert_eq!(Arch::hf_class(Some("camembert"), HeadKind::Sequence), "CamembertForSequenceClassification");
        assert_eq!(Arch::hf_class(None, HeadKind::Sequence), "BertForSequenceClassification");
        assert_eq!(Arch::hf_class(Some("distilbert"), HeadKind::Token), "DistilBertForTokenClassification");
        assert_eq!(Arch::hf_class(None, HeadKind::Token), "BertForTokenClassification");
    }

    #[test]
    fn distilbert_fields_are_renamed_and_others_kept() {
        let raw = json!({"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "activation": "gelu",
                         "dropout": 0.1, "attention_dropout": 0.1, "seq_classif_dropout": 0.2, "vocab_size": 30522});
        let m = Arch::DistilBert.normalise_config(raw.as_object().unwrap());
        assert_eq!(
            (m["hidden_size"].clone(), m["num_hidden_layers"].clone(), m["intermediate_size"].clone()),
            (json!(768), json!(6), json!(3072))
        );
        assert_eq!((m["hidden_act"].clone(), m["type_vocab_size"].clone()), (json!("gelu"), json!(0)));
        assert!(!m.contains_key("dim"));
        assert_eq!(Arch::DistilBert.head_dropout(raw.as_object().unwrap()), Some(0.2));
        let bert = json!({"hidden_size": 8, "classifier_dropout": null});
        assert_eq!(Arch::Bert.normalise_config(bert.as_object().unwrap()), *bert.as_object().unwrap());
        assert_eq!(Arch::Bert.head_dropout(bert.as_object().unwrap()), None);
    }

    #[test]
    fn tensor_names_follow_transformers() {
        assert_eq!(Arch::DistilBert.layer_names(2).attn_norm, "distilbert.transformer.layer.2.sa_layer_norm");
        assert_eq!(Arch::Roberta.layer_names(0).query, "roberta.encoder.layer.0.attention.self.query");
        assert_eq!(Arch::Roberta.block_of("roberta.encoder.layer.11.output.dense.weight"), Block::Layer(11));
        assert_eq!(Arch::Roberta.block_of("roberta.embeddings.LayerNorm.bias"), Block::Embeddings);
        assert_eq!(Arch::Roberta.block_of("classifier.out_proj.weight"), Block::Head);
        assert_eq!(Arch::DistilBert.block_of("distilbert.transformer.layer.0.ffn.lin1.bias"), Block::Layer(0));
        assert_eq!(Arch::Bert.block_of("bert.pooler.dense.weight"), Block::Head);
        assert_eq!(Arch::Electra.block_of("electra.embeddings_project.weight"), Block::Embeddings);
        assert_eq!(Arch::Electra.block_of("classifier.dense.weight"), Block::Head);
        assert_eq!(Arch::Electra.layer_names(1).out_norm, "electra.encoder.layer.1.output.LayerNorm");
        assert_eq!(Arch::Roberta.position_offset(1), 2);
        assert_eq!(Arch::Bert.position_offset(0), 0);
    }
}
