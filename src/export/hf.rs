//! The Hugging Face side of an export: `config.json` for `BertForSequenceClassification` (or
//! the RoBERTa / DistilBERT / ELECTRA class the checkpoint's `model_type` names),
//! `model.safetensors` under HF tensor names (with the `{"format": "pt"}` metadata
//! `transformers` looks for), the tokenizer files, and reading a safetensors header without
//! loading the tensors.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::trainer::data::{load_tokenizer, Problem};
use crate::trainer::model::arch::Arch;
use crate::trainer::model::{BertClassifier, HeadKind};

/// Why a file of the HF folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
}

fn file_err(path: &Path, why: impl std::fmt::Display) -> HfError {
    HfError::File { path: path.to_path_buf(), why: why.to_string() }
}

/// The special tokens' `special_tokens_map.json` keys and their BERT, then RoBERTa, spellings;
/// the first one the vocabulary has is written.
const SPECIAL: &[(&str, &[&str])] = &[
    ("bos_token", &["<s>"]),
    ("eos_token", &["</s>"]),
    ("unk_token", &["[UNK]", "<unk>"]),
    ("sep_token", &["[SEP]", "</s>"]),
    ("pad_token", &["[PAD]", "<pad>"]),
    ("cls_token", &["[CLS]", "<s>"]),
    ("mask_token", &["[MASK]", "<mask>"]),
];

/// The special tokens `tok` has, by `special_tokens_map.json` key.
fn special_tokens(tok: &tokenizers::Tokenizer) -> Map<String, Value> {
    SPECIAL
        .iter()
        .filter_map(|(key, spellings)| {
            let token = spellings.iter().find(|t| tok.token_to_id(t).is_some())?;
            Some(((*key).to_string(), json!(token)))
        })
        .collect()
}

/// Reads a JSON object file.
pub fn read_json_object(path: &Path) -> Result<Map<String, Value>, HfError> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    match serde_json::from_str(&text).map_err(|e| file_err(path, e))? {
        Value::Object(m) => Ok(m),
        _ => Err(file_err(path, "not a JSON object")),
    }
}

/// Writes pretty JSON with a trailing newline.
pub fn write_json(path: &Path, v: &Value) -> Result<(), HfError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| file_err(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| file_err(path, e))
}

/// The HF classification fields of `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadConfig {
    /// Class names by id; for regression, one output (named `LABEL_0` in the config).
    pub labels: Vec<String>,
    pub problem: Problem,
    /// The fine-tuned dropout, when the trial set one.
    pub dropout: Option<f64>,
}

impl HeadConfig {
    pub fn num_labels(&self) -> usize {
        match self.problem {
            Problem::Classification | Problem::TokenClassification | Problem::MultiLabelClassification => self.labels.len(),
            Problem::Regression => 1,
        }
    }
}

/// `config.json` of the export: the pretrained config (every field kept) with the head's
/// fields set (`architectures`, `num_labels`, `id2label`, `label2id`, `problem_type`) and the
/// dropout the trial trained with.
pub fn classification_config(base: &Map<String, Value>, head: &HeadConfig) -> Map<String, Value> {
    let mut c = base.clone();
    let names: Vec<String> = match head.problem {
        Problem::Classification | Problem::TokenClassification | Problem::MultiLabelClassification => head.labels.clone(),
        Problem::Regression => vec!["LABEL_0".to_string()],
    };
    let id2label: Map<String, Value> = names.iter().enumerate().map(|(i, n)| (i.to_string(), json!(n))).collect();
    let label2id: Map<String, Value> = names.iter().enumerate().map(|(i, n)| (n.clone(), json!(i))).collect();
    let model_type = c.get("model_type").and_then(Value::as_str).map(str::to_string);
    let arch = Arch::from_model_type(model_type.as_deref()).unwrap_or(Arch::Bert);
    c.insert("architectures".into(), json!([Arch::hf_class(model_type.as_deref(), HeadKind::for_problem(head.problem))]));
    c.entry("model_type").or_insert_with(|| json!("bert"));
    c.insert("num_labels".into(), json!(head.num_labels()));
    c.insert("id2label".into(), Value::Object(id2label));
    c.insert("label2id".into(), Value::Object(label2id));
    // transformers knows no problem_type for token classification: its class says it.
    match head.problem {
        Problem::Classification => c.insert("problem_type".into(), json!("single_label_classification")),
        Problem::Regression => c.insert("problem_type".into(), json!("regression")),
        Problem::MultiLabelClassification => c.insert("problem_type".into(), json!("multi_label_classification")),
        Problem::TokenClassification => c.remove("problem_type"),
    };
    if let Some(p) = head.dropout {
        for key in arch.dropout_keys() {
            c.insert((*key).into(), json!(p));
        }
    }
    c
}

/// Whether `config.json`'s `architectures` names a token classifier (`…ForTokenClassification`).
pub fn is_token_classifier(config: &Map<String, Value>) -> bool {
    config
        .get("architectures")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().filter_map(Value::as_str).any(|c| c.ends_with("ForTokenClassification")))
}

/// What `config.json` of a classification folder says about its head: class names by id
/// (`id2label`, else `LABEL_i` for `num_labels`) and the problem (a `…ForTokenClassification`
/// class, else `problem_type`, else regression when there is one output).
pub fn head_of_config(config: &Map<String, Value>, path: &Path) -> Result<HeadConfig, HfError> {
    let mut labels: Vec<String> = Vec::new();
    if let Some(Value::Object(m)) = config.get("id2label") {
        let mut pairs: Vec<(usize, String)> = Vec::with_capacity(m.len());
        for (k, v) in m {
            let id: usize = k.trim().parse().map_err(|_| file_err(path, format!("id2label key `{k}` is not a class id")))?;
            let name = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            pairs.push((id, name));
        }
        pairs.sort_by_key(|(i, _)| *i);
        if pairs.iter().enumerate().any(|(i, (id, _))| i != *id) {
            return Err(file_err(path, "id2label ids are not 0..num_labels-1"));
        }
        labels = pairs.into_iter().map(|(_, n)| n).collect();
    }
    let num_labels = match config.get("num_labels").and_then(Value::as_u64) {
        Some(n) => n as usize,
        None if !labels.is_empty() => labels.len(),
        None => 2, // the transformers default
    };
    if labels.is_empty() {
        labels = (0..num_labels).map(|i| format!("LABEL_{i}")).collect();
    }
    if labels.len() != num_labels {
        return Err(file_err(path, format!("num_labels is {num_labels} but id2label has {} entries", labels.len())));
    }
    let problem = match config.get("problem_type").and_then(Value::as_str) {
        _ if is_token_classifier(config) => Problem::TokenClassification,
        Some("regression") => Problem::Regression,
        Some("single_label_classification") => Problem::Classification,
        Some("multi_label_classification") => Problem::MultiLabelClassification,
        Some(other) => {
            return Err(file_err(
                path,
                format!("problem_type `{other}` is not supported (single_label_classification, multi_label_classification or regression)"),
            ))
        }
        None if num_labels == 1 => Problem::Regression,
        None => Problem::Classification,
    };
    if num_labels == 0 || (problem == Problem::Regression && num_labels != 1) {
        return Err(file_err(path, format!("{num_labels} outputs do not fit a {problem:?} head")));
    }
    Ok(HeadConfig { labels, problem, dropout: None })
}

/// Writes every weight of `model` to `path` under its HF name, as f32, with the
/// `{"format": "pt"}` metadata of `save_pretrained`.
pub fn write_weights(model: &BertClassifier, path: &Path) -> Result<(), HfError> {
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, var) in model.all_vars() {
        let t = var.as_tensor();
        let shape = t.dims().to_vec();
        let data: Vec<f32> = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1())
            .map_err(|e| file_err(path, format!("{name}: {e}")))?;
        bytes.push((name, shape, data.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    let views = bytes
        .iter()
        .map(|(n, s, b)| safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::tensor::serialize_to_file(views, Some(meta), path).map_err(|e| file_err(path, e))
}

/// Tensor names and shapes of a safetensors file, read from its header only.
pub fn safetensors_shapes(path: &Path) -> Result<HashMap<String, Vec<usize>>, HfError> {
    let mut f = std::fs::File::open(path).map_err(|e| file_err(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| file_err(path, format!("not a safetensors file ({e})")))?;
    let n = u64::from_le_bytes(len);
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if n == 0 || n > 100_000_000 || n + 8 > size {
        return Err(file_err(path, "not a safetensors file (bad header length)"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| file_err(path, e))?;
    let v: Value = serde_json::from_slice(&header).map_err(|e| file_err(path, format!("bad safetensors header: {e}")))?;
    let Value::Object(m) = v else { return Err(file_err(path, "bad safetensors header")) };
    Ok(m.into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .filter_map(|(k, v)| {
            let shape = v.get("shape")?.as_array()?.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>()?;
            Some((k, shape))
        })
        .collect())
}

/// Whether the tokenizer of `tokenizer.json` lowercases (its normalizer's `lowercase`);
/// `None` when the file says nothing about it.
fn tokenizer_json_lowercase(path: &Path) -> Option<bool> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let norm = v.get("normalizer")?;
    let direct = norm.get("lowercase").and_then(Value::as_bool);
    direct.or_else(|| {
        // A Sequence normalizer: lowercase when any member is `Lowercase` or lowercasing BERT.
        let list = norm.get("normalizers")?.as_array()?;
        Some(list.iter().any(|n| {
            n.get("type").and_then(Value::as_str) == Some("Lowercase") || n.get("lowercase").and_then(Value::as_bool) == Some(true)
        }))
    })
}

/// Copies the tokenizer files from `src` into `dest` and completes them: a `tokenizer.json`
/// built from `vocab.txt` when missing, `tokenizer_config.json` with `model_max_length` set to
/// the length the model was trained with (and `do_lower_case`, `tokenizer_class` when the file
/// was missing), `special_tokens_map.json` when missing. Returns the names written.
pub fn write_tokenizer_files(src: &Path, dest: &Path, max_length: usize) -> Result<Vec<String>, HfError> {
    let mut written = Vec::new();
    for f in ["tokenizer.json", "vocab.txt"] {
        let from = src.join(f);
        if from.is_file() {
            std::fs::copy(&from, dest.join(f)).map_err(|e| file_err(&from, e))?;
            written.push(f.to_string());
        }
    }
    if written.is_empty() {
        return Err(file_err(src, "neither tokenizer.json nor vocab.txt is there: no tokenizer to export"));
    }
    // The tokenizer the tool itself uses (vocab.txt rules when tokenizer.json is missing).
    let tok = load_tokenizer(src).map_err(|e| file_err(src, e))?;
    if !dest.join("tokenizer.json").is_file() {
        tok.save(dest.join("tokenizer.json"), true).map_err(|e| file_err(&dest.join("tokenizer.json"), e))?;
        written.push("tokenizer.json".into());
    }
    let cfg_src = src.join("tokenizer_config.json");
    let mut cfg = if cfg_src.is_file() {
        read_json_object(&cfg_src)?
    } else {
        let mut m = Map::new();
        // BERT's specials: BERT's tokenizer class (uncased unless the normalizer says
        // otherwise); any other tokenizer.json is loaded as it is, its casing its own.
        let bert_style = tok.token_to_id("[CLS]").is_some() && tok.token_to_id("[SEP]").is_some();
        if bert_style {
            let lower = tokenizer_json_lowercase(&dest.join("tokenizer.json")).unwrap_or(true);
            m.insert("do_lower_case".into(), json!(lower));
        }
        m.insert("tokenizer_class".into(), json!(if bert_style { "BertTokenizer" } else { "PreTrainedTokenizerFast" }));
        m.insert("clean_up_tokenization_spaces".into(), json!(true));
        m.extend(special_tokens(&tok));
        m
    };
    cfg.insert("model_max_length".into(), json!(max_length));
    write_json(&dest.join("tokenizer_config.json"), &Value::Object(cfg))?;
    written.push("tokenizer_config.json".into());
    let map_src = src.join("special_tokens_map.json");
    if map_src.is_file() {
        std::fs::copy(&map_src, dest.join("special_tokens_map.json")).map_err(|e| file_err(&map_src, e))?;
    } else {
        write_json(&dest.join("special_tokens_map.json"), &Value::Object(special_tokens(&tok)))?;
    }
    written.push("special_tokens_map.json".into());
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_gets_the_head_fields_and_keeps_the_rest() {
        let base: Map<String, Value> =
            serde_json::from_str(r#"{"hidden_size": 8, "hidden_dropout_prob": 0.1, "architectures": ["BertModel"], "foo": 1}"#).unwrap();
        let head = HeadConfig { labels: vec!["neg".into(), "pos".into()], problem: Problem::Classification, dropout: Some(0.25) };
        let c = classification_config(&base, &head);
        assert_eq!(c["architectures"], json!(["BertForSequenceClassification"]));
        assert_eq!(c["num_labels"], json!(2));
        assert_eq!(c["id2label"], json!({"0": "neg", "1": "pos"}));
        assert_eq!(c["label2id"], json!({"neg": 0, "pos": 1}));
        assert_eq!(c["problem_type"], json!("single_label_classification"));
        assert_eq!((c["hidden_dropout_prob"].clone(), c["attention_probs_dropout_prob"].clone()), (json!(0.25), json!(0.25)));
        assert_eq!((c["foo"].clone(), c["hidden_size"].clone(), c["model_type"].clone()), (json!(1), json!(8), json!("bert")));
        // ... and reads back to the same head.
        let back = head_of_config(&c, Path::new("config.json")).unwrap();
        assert_eq!((back.labels, back.problem), (head.labels, Problem::Classification));

        let reg = HeadConfig { labels: vec![], problem: Problem::Regression, dropout: None };
        let c = classification_config(&base, &reg);
        assert_eq!((c["num_labels"].clone(), c["problem_type"].clone()), (json!(1), json!("regression")));
        assert_eq!(c["hidden_dropout_prob"], json!(0.1), "unchanged without a searched dropout");
        assert_eq!(head_of_config(&c, Path::new("c")).unwrap().problem, Problem::Regression);
    }

    #[test]
    fn head_of_a_plain_hf_config() {
        let p = Path::new("config.json");
        let c: Map<String, Value> = serde_json::from_str(r#"{"id2label": {"1": "b", "0": "a", "2": "c"}}"#).unwrap();
        let h = head_of_config(&c, p).unwrap();
        assert_eq!((h.labels, h.problem), (vec!["a".to_string(), "b".into(), "c".into()], Problem::Classification));
        let c: Map<String, Value> = serde_json::from_str(r#"{"num_labels": 1}"#).unwrap();
        assert_eq!(head_of_config(&c, p).unwrap().problem, Problem::Regression);
        let c: Map<String, Value> = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!(head_of_config(&c, p).unwrap().labels, vec!["LABEL_0", "LABEL_1"]);
        let c: Map<String, Value> = serde_json::from_str(r#"{"id2label": {"0": "a", "2": "c"}}"#).unwrap();
        assert!(head_of_config(&c, p).unwrap_err().to_string().contains("0..num_labels-1"));
        let c: Map<String, Value> = serde_json::from_str(r#"{"num_labels": 2, "problem_type": "multi_label_classification"}"#).unwrap();
        assert_eq!(head_of_config(&c, p).unwrap().problem, Problem::MultiLabelClassification);
        let c: Map<String, Value> = serde_json::from_str(r#"{"num_labels": 2, "problem_type": "ranking"}"#).unwrap();
        assert!(head_of_config(&c, p).unwrap_err().to_string().contains("problem_type `ranking` is not supported"));
    }

    #[test]
    fn tokenizer_files_are_completed_from_vocab_txt() {
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("vocab.txt"), "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ngood\nbad\n").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let mut w = write_tokenizer_files(src.path(), dest.path(), 48).unwrap();
        w.sort();
        assert_eq!(w, vec!["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]);
        let cfg = read_json_object(&dest.path().join("tokenizer_config.json")).unwrap();
        assert_eq!((cfg["model_max_length"].clone(), cfg["do_lower_case"].clone()), (json!(48), json!(true)));
        assert_eq!(cfg["tokenizer_class"], json!("BertTokenizer"));
        let map = read_json_object(&dest.path().join("special_tokens_map.json")).unwrap();
        assert_eq!(map["cls_token"], json!("[CLS]"));
        // The generated tokenizer.json encodes like the vocab.txt one.
        let tok = tokenizers::Tokenizer::from_file(dest.path().join("tokenizer.json")).unwrap();
        assert_eq!(tok.encode("GOOD bad", true).unwrap().get_ids(), &[2, 5, 6, 3]);
        // An existing tokenizer_config.json is kept, with the trained length.
        std::fs::write(src.path().join("tokenizer_config.json"), r#"{"do_lower_case": false, "model_max_length": 512}"#).unwrap();
        let dest2 = tempfile::tempdir().unwrap();
        write_tokenizer_files(src.path(), dest2.path(), 64).unwrap();
        let cfg = read_json_object(&dest2.path().join("tokenizer_config.json")).unwrap();
        assert_eq!((cfg["model_max_length"].clone(), cfg["do_lower_case"].clone()), (json!(64), json!(false)));
        assert!(cfg.get("tokenizer_class").is_none());
    }

    #[test]
    fn a_roberta_tokenizer_gets_the_generic_class_and_its_own_special_tokens() {
        let src = tempfile::tempdir().unwrap();
        let texts = vec!["a good film".to_string()];
        crate::trainer::tiny::write_tiny_model(src.path(), Arch::Roberta, &texts, 1, 8, 1).unwrap();
        let dest = tempfile::tempdir().unwrap();
        write_tokenizer_files(src.path(), dest.path(), 32).unwrap();
        let cfg = read_json_object(&dest.path().join("tokenizer_config.json")).unwrap();
        assert_eq!(cfg["tokenizer_class"], json!("PreTrainedTokenizerFast"));
        assert!(cfg.get("do_lower_case").is_none(), "{cfg:?}");
        let map = read_json_object(&dest.path().join("special_tokens_map.json")).unwrap();
        let want = [
            ("bos_token", "<s>"),
            ("eos_token", "</s>"),
            ("unk_token", "<unk>"),
            ("sep_token", "</s>"),
            ("pad_token", "<pad>"),
            ("cls_token", "<s>"),
            ("mask_token", "<mask>"),
        ];
        assert_eq!(map, want.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<Map<String, Value>>());
        assert_eq!(cfg["pad_token"], json!("<pad>"));
    }

    #[test]
    fn no_tokenizer_is_an_error() {
        let src = tempfile::tempdir().unwrap();
        let e = write_tokenizer_files(src.path(), src.path(), 8).unwrap_err();
        assert!(e.to_string().contains("neither tokenizer.json nor vocab.txt"), "{e}");
    }
}
