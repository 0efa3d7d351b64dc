//! Tests of the classifier on tiny random BERTs written by `trainer::tiny`.

use super::*;
use crate::trainer::tiny::{write_tiny_bert, write_tiny_model};
use candle_core::IndexOp;

fn texts() -> Vec<String> {
    [
        "the movie was good and fun",
        "a bad and boring film",
        "great acting, lovely story",
        "terrible plot; awful pacing",
        "i liked it a lot",
        "i hated every minute",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn tiny(layers: usize, hidden: usize) -> (tempfile::TempDir, usize) {
    let dir = tempfile::tempdir().unwrap();
    let info = write_tiny_bert(dir.path(), &texts(), layers, hidden, 7).unwrap();
    (dir, info.vocab_size)
}

/// Deterministic ids in [5, vocab) with [CLS]=2 first, the last two positions of row 1 padded.
fn batch(b: usize, s: usize, vocab: usize, seed: u32) -> (Tensor, Tensor) {
    let mut ids = Vec::with_capacity(b * s);
    let mut mask = Vec::with_capacity(b * s);
    let mut st = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    for r in 0..b {
        for c in 0..s {
            st ^= st << 13;
            st ^= st >> 17;
            st ^= st << 5;
            let pad = r == 1 && c + 2 >= s;
            ids.push(if c == 0 {
                2
            } else if pad {
                0
            } else {
                5 + st % (vocab as u32 - 5)
            });
            mask.push(u32::from(!pad));
        }
    }
    (Tensor::from_vec(ids, (b, s), &Device::Cpu).unwrap(), Tensor::from_vec(mask, (b, s), &Device::Cpu).unwrap())
}

fn sgd_step(model: &BertClassifier, grads: &GradStore, lr: f64) {
    for (_, v) in model.trainable_vars() {
        if let Some(g) = grads.get(&v) {
            v.set(&(v.as_tensor() - (g * lr).unwrap()).unwrap()).unwrap();
        }
    }
}

fn snapshot(model: &BertClassifier) -> HashMap<String, Vec<f32>> {
    model.all_vars().into_iter().map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect()
}

fn one_step_check(freeze_layers: usize) {
    one_step_check_in(freeze_layers, DType::F32);
}

fn one_step_check_in(freeze_layers: usize, compute_dtype: DType) {
    one_step_check_arch(Arch::Bert, freeze_layers, compute_dtype);
}

fn tiny_of(arch: Arch, layers: usize, hidden: usize) -> (tempfile::TempDir, usize) {
    let dir = tempfile::tempdir().unwrap();
    let info = write_tiny_model(dir.path(), arch, &texts(), layers, hidden, 7).unwrap();
    (dir, info.vocab_size)
}

/// After one step every trainable tensor got a non-zero gradient and changed; every frozen
/// one got no gradient and is bit-identical.
fn one_step_check_arch(arch: Arch, freeze_layers: usize, compute_dtype: DType) {
    let (dir, vocab) = tiny_of(arch, 2, 32);
    let opts = ModelOptions { num_labels: 3, freeze_layers, compute_dtype, ..ModelOptions::default() };
    let model = BertClassifier::load(dir.path(), &opts, &Device::Cpu).unwrap();
    let before = snapshot(&model);
    let (ids, mask) = batch(4, 10, vocab, 1);
    let labels = Tensor::new(&[0u32, 1, 2, 1], &Device::Cpu).unwrap();
    let logits = model.forward(&ids, &mask, None, true).unwrap();
    assert_eq!(logits.dims(), &[4, 3]);
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let grads = model.backward(&loss).unwrap();
    let trainable: Vec<String> = model.trainable_vars().into_iter().map(|(n, _)| n).collect();
    for (name, var) in model.all_vars() {
        if trainable.contains(&name) {
            let g = grads.get(&var).unwrap_or_else(|| panic!("no gradient for {name}"));
            let norm = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "zero gradient for {name}");
        } else {
            assert!(grads.get(&var).is_none(), "frozen {name} got a gradient (graph not cut)");
        }
    }
    sgd_step(&model, &grads, 0.1);
    let after = snapshot(&model);
    for (name, _) in model.all_vars() {
        if trainable.contains(&name) {
            assert_ne!(before[&name], after[&name], "{name} did not change");
        } else {
            let same = before[&name].iter().zip(&after[&name]).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "frozen {name} changed");
        }
    }
    let n_frozen = model.all_vars().len() - trainable.len();
    // 5 embedding tensors (4 without token types, 7 with ELECTRA's projection) + 16 per layer.
    let embedding_tensors = match arch {
        Arch::DistilBert => 4,
        Arch::Electra => 7,
        _ => 5,
    };
    let expected_frozen = if freeze_layers > 0 { embedding_tensors + 16 * freeze_layers } else { 0 };
    assert_eq!(n_frozen, expected_frozen);
}

#[test]
fn one_step_full_fine_tuning_updates_every_tensor() {
    one_step_check(0);
}

#[test]
fn one_step_freeze_one_layer_keeps_frozen_bit_identical() {
    one_step_check(1);
}

#[test]
fn roberta_distilbert_and_electra_one_step_update_every_trainable_tensor_and_keep_frozen_ones() {
    for arch in [Arch::Roberta, Arch::DistilBert, Arch::Electra] {
        one_step_check_arch(arch, 0, DType::F32);
        one_step_check_arch(arch, 1, DType::F32);
    }
}

/// The folder of another family read as BERT: the same tensors under BERT's names, RoBERTa's
/// position table shifted by its offset (`pad_token_id + 1`) and its one token type repeated,
/// DistilBERT's token types zero. The encoder outputs must then be BERT's (which
/// `eval_hidden_states_match_candle_transformers_bert` checks against candle-transformers).
fn as_bert(arch: Arch, dir: &Path, offset: usize) -> tempfile::TempDir {
    let cfg = read_config(dir).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let (h, prefix) = (cfg.hidden_size, format!("{}.", arch.prefix()));
    let mut out: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in tensors {
        let renamed = if arch == Arch::DistilBert {
            let mut n = name.replace("distilbert.transformer.layer.", "bert.encoder.layer.");
            for (from, to) in [
                ("attention.q_lin", "attention.self.query"),
                ("attention.k_lin", "attention.self.key"),
                ("attention.v_lin", "attention.self.value"),
                ("attention.out_lin", "attention.output.dense"),
                ("sa_layer_norm", "attention.output.LayerNorm"),
                ("ffn.lin1", "intermediate.dense"),
                ("ffn.lin2", "output.dense"),
                ("output_layer_norm", "output.LayerNorm"),
            ] {
                n = n.replace(from, to);
            }
            n.replace("distilbert.", "bert.")
        } else {
            name.replacen(&prefix, "bert.", 1)
        };
        let t = if renamed.ends_with("position_embeddings.weight") {
            t.narrow(0, offset, cfg.max_position_embeddings - offset).unwrap()
        } else {
            t
        };
        let t = if renamed.ends_with("token_type_embeddings.weight") { Tensor::cat(&[&t, &t], 0).unwrap() } else { t };
        out.insert(renamed, t);
    }
    if arch == Arch::DistilBert {
        out.insert("bert.embeddings.token_type_embeddings.weight".into(), Tensor::zeros((2, h), DType::F32, &Device::Cpu).unwrap());
    }
    let bert = tempfile::tempdir().unwrap();
    candle_core::safetensors::save(&out, bert.path().join("model.safetensors")).unwrap();
    let mut c = serde_json::json!({
        "model_type": "bert", "vocab_size": cfg.vocab_size, "hidden_size": h, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings - offset, "layer_norm_eps": cfg.layer_norm_eps,
    });
    c["type_vocab_size"] = 2.into();
    std::fs::write(bert.path().join("config.json"), c.to_string()).unwrap();
    bert
}

#[test]
fn roberta_and_distilbert_encoders_equal_bert_with_their_positions_and_token_types() {
    for (arch, offset) in [(Arch::Roberta, 2), (Arch::DistilBert, 0)] {
        let (dir, vocab) = tiny_of(arch, 2, 32);
        let model = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).unwrap();
        assert_eq!(model.config().position_offset(), offset);
        let bert_dir = as_bert(arch, dir.path(), offset);
        let bert = BertClassifier::load(bert_dir.path(), &ModelOptions::default(), &Device::Cpu).unwrap();
        let (ids, mask) = batch(3, 7, vocab, 8);
        // A pair's second segment says type 1: RoBERTa has one type, DistilBERT none.
        let tt = Tensor::from_vec((0..21u32).map(|i| u32::from(i % 7 > 3)).collect(), (3, 7), &Device::Cpu).unwrap();
        let ours = model.hidden_states(&ids, &mask, Some(&tt), false).unwrap();
        let zeros = tt.zeros_like().unwrap();
        let theirs = bert.hidden_states(&ids, &mask, Some(&zeros), false).unwrap();
        let d = (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "{arch:?}: hidden states differ from BERT's by {d}");
        // RoBERTa's 130 positions take 128 tokens, DistilBERT's 128 too.
        assert_eq!(model.config().max_sequence_length(), 128);
        for (len, fits) in [(128, true), (129, false)] {
            let long = Tensor::zeros((1, len), DType::U32, &Device::Cpu).unwrap();
            let out = model.forward(&long, &long.ones_like().unwrap(), None, false);
            assert_eq!(out.is_ok(), fits, "{arch:?}: {len} tokens");
        }
    }
}

/// One SGD step on a tiny model of `arch` with 3 labels (so the saved weights differ from the
/// files it started from), `save_pretrained`, and a reload that must give the same logits.
/// Returns the saved folder, its tensor names (sorted) and its config.json.
fn save_after_a_step_and_reload(arch: Arch) -> (tempfile::TempDir, Vec<String>, serde_json::Value) {
    let (dir, vocab) = tiny_of(arch, 2, 32);
    let opts = ModelOptions { num_labels: 3, ..ModelOptions::default() };
    let model = BertClassifier::load(dir.path(), &opts, &Device::Cpu).unwrap();
    let (ids, mask) = batch(4, 9, vocab, 4);
    let labels = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&model.forward(&ids, &mask, None, true).unwrap(), &labels).unwrap();
    sgd_step(&model, &model.backward(&loss).unwrap(), 0.5);
    let out = tempfile::tempdir().unwrap();
    model.save_pretrained(out.path()).unwrap();
    let mut names: Vec<String> =
        candle_core::safetensors::load(out.path().join("model.safetensors"), &Device::Cpu).unwrap().into_keys().collect();
    names.sort();
    let reloaded = BertClassifier::load(out.path(), &opts, &Device::Cpu).unwrap();
    assert_eq!(reloaded.config().hidden_size, 32);
    let a = model.forward(&ids, &mask, None, false).unwrap();
    let b = reloaded.forward(&ids, &mask, None, false).unwrap();
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d <= 1e-6, "{arch:?}: reloaded logits differ by {d}");
    let cfg = serde_json::from_str(&std::fs::read_to_string(out.path().join("config.json")).unwrap()).unwrap();
    (out, names, cfg)
}

/// Saved RoBERTa, DistilBERT and ELECTRA folders keep their family's config fields and tensor
/// names, name the `transformers` class, and reload to the same logits.
#[test]
fn roberta_distilbert_and_electra_save_under_their_own_names_and_reload() {
    for arch in [Arch::Roberta, Arch::DistilBert, Arch::Electra] {
        let (_out, names, cfg) = save_after_a_step_and_reload(arch);
        let head: Vec<&String> = names.iter().filter(|n| !n.starts_with(&format!("{}.", arch.prefix()))).collect();
        match arch {
            Arch::Roberta => {
                assert_eq!(
                    head,
                    ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias", "classifier.out_proj.weight"]
                );
                assert_eq!(cfg["architectures"], serde_json::json!(["RobertaForSequenceClassification"]));
                assert_eq!(cfg["pad_token_id"], 1);
            }
            Arch::Electra => {
                assert_eq!(
                    head,
                    ["classifier.dense.bias", "classifier.dense.weight", "classifier.out_proj.bias", "classifier.out_proj.weight"]
                );
                assert_eq!(cfg["architectures"], serde_json::json!(["ElectraForSequenceClassification"]));
                assert_eq!(cfg["embedding_size"], 16);
                assert!(names.contains(&"electra.embeddings_project.weight".to_string()));
            }
            _ => {
                assert_eq!(head, ["classifier.bias", "classifier.weight", "pre_classifier.bias", "pre_classifier.weight"]);
                assert_eq!(cfg["architectures"], serde_json::json!(["DistilBertForSequenceClassification"]));
                assert_eq!((cfg["dim"].clone(), cfg.get("hidden_size")), (serde_json::json!(32), None));
                assert!(names.contains(&"distilbert.transformer.layer.1.output_layer_norm.weight".to_string()));
            }
        }
        assert_eq!(cfg["num_labels"], 3);
    }
}

#[test]
fn an_unsupported_model_type_is_refused_with_the_supported_ones() {
    let (dir, _) = tiny(1, 16);
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["model_type"] = "deberta-v2".into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("config.json") && err.contains("`deberta-v2`") && err.contains("distilbert, electra"), "{err}");
}

#[test]
fn bf16_one_step_updates_every_trainable_tensor_and_keeps_frozen_ones() {
    // Mixed precision: the f32 master weights get f32 gradients through the casts.
    one_step_check_in(0, DType::BF16);
    one_step_check_in(1, DType::BF16);
}

#[test]
fn bf16_logits_are_f32_and_close_to_the_fp32_ones() {
    let (dir, vocab) = tiny(2, 32);
    let (ids, mask) = batch(4, 10, vocab, 5);
    let f32_model = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).unwrap();
    let bf16_opts = ModelOptions { compute_dtype: DType::BF16, ..ModelOptions::default() };
    let bf16_model = BertClassifier::load(dir.path(), &bf16_opts, &Device::Cpu).unwrap();
    let a = f32_model.forward(&ids, &mask, None, false).unwrap();
    let b = bf16_model.forward(&ids, &mask, None, false).unwrap();
    assert_eq!(b.dtype(), DType::F32);
    let diff = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    // bf16 keeps 8 bits of mantissa: a relative error of a few 1e-3 per op.
    assert!(diff <= 0.05 * scale.max(1e-3), "bf16 logits differ by {diff} (scale {scale})");
    assert!(diff > 0.0, "the bf16 model must actually compute in bf16");
}

#[test]
fn freeze_all_layers_trains_only_the_head() {
    let (dir, _) = tiny(2, 32);
    let opts = ModelOptions { freeze_layers: 2, ..ModelOptions::default() };
    let model = BertClassifier::load(dir.path(), &opts, &Device::Cpu).unwrap();
    let names: Vec<String> = model.trainable_vars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]);
    let opts = ModelOptions { freeze_embeddings: true, ..ModelOptions::default() };
    let model = BertClassifier::load(dir.path(), &opts, &Device::Cpu).unwrap();
    assert!(model.trainable_vars().iter().all(|(n, _)| !n.starts_with("bert.embeddings.")));
    assert_eq!(model.trainable_vars().len(), 2 * 16 + 4);
    let too_many = ModelOptions { freeze_layers: 3, ..ModelOptions::default() };
    assert!(matches!(BertClassifier::load(dir.path(), &too_many, &Device::Cpu), Err(ModelError::Options(_))));
}

#[test]
fn dropout_is_active_in_train_mode_and_off_in_eval() {
    let (dir, vocab) = tiny(2, 32);
    let model = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).unwrap();
    let (ids, mask) = batch(3, 8, vocab, 2);
    let e1 = model.forward(&ids, &mask, None, false).unwrap().to_vec2::<f32>().unwrap();
    let e2 = model.forward(&ids, &mask, None, false).unwrap().to_vec2::<f32>().unwrap();
    assert_eq!(e1, e2, "eval must be deterministic");
    let t1 = model.forward(&ids, &mask, None, true).unwrap().to_vec2::<f32>().unwrap();
    let t2 = model.forward(&ids, &mask, None, true).unwrap().to_vec2::<f32>().unwrap();
    assert_ne!(t1, t2, "train-mode dropout must change the output between calls");
    assert_ne!(t1, e1);
    // dropout = 0 makes train mode equal to eval.
    let opts = ModelOptions { dropout: Some(0.0), ..ModelOptions::default() };
    let model0 = BertClassifier::load(dir.path(), &opts, &Device::Cpu).unwrap();
    let a = model0.forward(&ids, &mask, None, true).unwrap();
    let b = model0.forward(&ids, &mask, None, false).unwrap();
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
}

#[test]
fn padding_positions_do_not_change_the_logits() {
    let (dir, vocab) = tiny(2, 32);
    let model = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).unwrap();
    let (ids, mask) = batch(2, 8, vocab, 3);
    let base = model.forward(&ids, &mask, None, false).unwrap().i(1).unwrap();
    // Row 1 has its last two positions padded: other ids there must not matter.
    let mut v = ids.to_vec2::<u32>().unwrap();
    v[1][6] = 9;
    v[1][7] = 11;
    let ids2 = Tensor::new(v, &Device::Cpu).unwrap();
    let other = model.forward(&ids2, &mask, None, false).unwrap().i(1).unwrap();
    let d = (base - other).unwrap().abs().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-6, "padding leaked into the logits: {d}");
}

#[test]
fn save_and_reload_give_the_same_logits() {
    let (_out, names, cfg) = save_after_a_step_and_reload(Arch::Bert);
    assert!(names.contains(&"bert.pooler.dense.weight".to_string()));
    assert!(names.contains(&"classifier.weight".to_string()));
    assert!(names.iter().all(|n| n.starts_with("bert.") || n.starts_with("classifier.")));
    assert_eq!(cfg["architectures"], serde_json::json!(["BertForSequenceClassification"]));
}

#[test]
fn checkpoint_without_bert_prefix_or_pooler_loads_and_initialises_the_pooler() {
    let (dir, vocab) = tiny(1, 16);
    let path = dir.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let stripped: HashMap<String, Tensor> =
        tensors.into_iter().filter(|(n, _)| !n.contains("pooler")).map(|(n, t)| (n.trim_start_matches("bert.").to_string(), t)).collect();
    candle_core::safetensors::save(&stripped, &path).unwrap();
    let model = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).unwrap();
    let names: Vec<String> = model.all_vars().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&"bert.embeddings.word_embeddings.weight".to_string()));
    assert!(names.contains(&"bert.pooler.dense.weight".to_string()));
    let (ids, mask) = batch(2, 5, vocab, 5);
    assert_eq!(model.forward(&ids, &mask, None, false).unwrap().dims(), &[2, 2]);
}

#[test]
fn loading_errors_name_the_file_and_the_tensor() {
    let empty = tempfile::tempdir().unwrap();
    let err = BertClassifier::load(empty.path(), &ModelOptions::default(), &Device::Cpu).err().unwrap();
    assert!(matches!(err, ModelError::Config { .. }));
    assert!(err.to_string().contains("config.json"), "{err}");

    let (dir, _) = tiny(1, 16);
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    tensors.remove("bert.encoder.layer.0.intermediate.dense.weight");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).err().unwrap();
    let msg = err.to_string();
    assert!(msg.contains("model.safetensors") && msg.contains("encoder.layer.0.intermediate.dense.weight"), "{msg}");

    tensors.insert("bert.encoder.layer.0.intermediate.dense.weight".into(), Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).err().unwrap();
    assert!(matches!(err, ModelError::ShapeMismatch { ref found, .. } if found == &vec![3, 3]), "{err}");

    std::fs::write(&path, b"not a safetensors file").unwrap();
    let err = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).err().unwrap();
    assert!(matches!(err, ModelError::Weights { .. }) && err.to_string().contains("model.safetensors"), "{err}");
}

/// Label = whether token 10 or token 11 follows [CLS]; the rest is noise. A few SGD steps on
/// one batch must bring the loss down (from about ln 2).
#[test]
fn loss_falls_on_a_separable_toy_set() {
    let (dir, vocab) = tiny(2, 32);
    let opts = ModelOptions { num_labels: 2, dropout: Some(0.0), seed: 3, ..ModelOptions::default() };
    let model = BertClassifier::load(dir.path(), &opts, &Device::Cpu).unwrap();
    let (ids, mask) = batch(8, 6, vocab, 6);
    let mut v = ids.to_vec2::<u32>().unwrap();
    let labels: Vec<u32> = (0..8).map(|i| (i % 2) as u32).collect();
    for (row, &l) in v.iter_mut().zip(&labels) {
        row[1] = 10 + l;
    }
    let ids = Tensor::new(v, &Device::Cpu).unwrap();
    let labels = Tensor::new(labels, &Device::Cpu).unwrap();
    let mut losses = Vec::new();
    let mut opt = candle_nn::AdamW::new(
        model.trainable_vars().into_iter().map(|(_, v)| v).collect(),
        candle_nn::ParamsAdamW { lr: 3e-3, ..Default::default() },
    )
    .unwrap();
    use candle_nn::Optimizer;
    for _ in 0..15 {
        let loss = candle_nn::loss::cross_entropy(&model.forward(&ids, &mask, None, true).unwrap(), &labels).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.step(&model.backward(&loss).unwrap()).unwrap();
    }
    let last = *losses.last().unwrap();
    assert!(last < 0.5 * losses[0], "loss did not fall: {losses:?}");
}

/// Reference: candle-transformers' `bert::BertModel` (an independent implementation of HF's
/// BERT forward) on the same files; eval mode, with padding in the batch.
#[test]
fn eval_hidden_states_match_candle_transformers_bert() {
    use candle_transformers::models::bert as ct;
    let (dir, vocab) = tiny(2, 32);
    let model = BertClassifier::load(dir.path(), &ModelOptions::default(), &Device::Cpu).unwrap();
    let text = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    let cfg: ct::Config = serde_json::from_str(&text).unwrap();
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(&[dir.path().join("model.safetensors")], DType::F32, &Device::Cpu).unwrap()
    };
    let reference = ct::BertModel::load(vb, &cfg).unwrap();
    let (ids, mask) = batch(3, 7, vocab, 8);
    let tt = Tensor::zeros((3, 7), DType::U32, &Device::Cpu).unwrap();
    let ours = model.hidden_states(&ids, &mask, Some(&tt), false).unwrap();
    let theirs = reference.forward(&ids, &tt, Some(&mask)).unwrap();
    let d = (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    assert!(d < 1e-4, "hidden states differ from candle-transformers by {d}");
}

/// Reference: central finite differences of the loss (f64 arithmetic on f32 losses, dropout
/// off) for single elements of tensors along the whole chain: embeddings, a LayerNorm, q/k/v
/// (fused projection), attention output, feed-forward, pooler.
#[test]
fn whole_model_gradients_match_finite_differences() {
    gradients_match_finite_differences(Arch::Bert, |first_id, _| {
        vec![
            ("bert.embeddings.word_embeddings.weight".into(), first_id * 16 + 3),
            ("bert.embeddings.LayerNorm.weight".into(), 5),
            ("bert.encoder.layer.0.attention.self.query.weight".into(), 17),
            ("bert.encoder.layer.0.attention.self.key.weight".into(), 21),
            ("bert.encoder.layer.0.attention.self.value.weight".into(), 40),
            ("bert.encoder.layer.1.attention.output.dense.weight".into(), 7),
            ("bert.encoder.layer.1.intermediate.dense.bias".into(), 11),
            ("bert.encoder.layer.1.output.LayerNorm.bias".into(), 4),
            ("bert.pooler.dense.weight".into(), 9),
        ]
    });
}

/// The same for what the other families add: RoBERTa's offset positions and single token type
/// and its head, DistilBERT's ReLU head, ELECTRA's embedding projection and GELU head.
#[test]
fn other_families_gradients_match_finite_differences() {
    // The second token sits at position offset + 1; each embedding row is `e` wide.
    gradients_match_finite_differences(Arch::Roberta, |first_id, e| {
        vec![
            ("roberta.embeddings.word_embeddings.weight".into(), first_id * e + 3),
            ("roberta.embeddings.position_embeddings.weight".into(), 3 * e + 2),
            ("roberta.embeddings.token_type_embeddings.weight".into(), 6),
            ("classifier.dense.weight".into(), 9),
            ("classifier.out_proj.weight".into(), 20),
        ]
    });
    gradients_match_finite_differences(Arch::DistilBert, |first_id, e| {
        vec![
            ("distilbert.embeddings.word_embeddings.weight".into(), first_id * e + 3),
            ("distilbert.transformer.layer.0.attention.q_lin.weight".into(), 17),
            ("distilbert.transformer.layer.1.sa_layer_norm.weight".into(), 2),
            ("pre_classifier.weight".into(), 9),
            ("classifier.bias".into(), 1),
        ]
    });
    gradients_match_finite_differences(Arch::Electra, |first_id, e| {
        vec![
            ("electra.embeddings.word_embeddings.weight".into(), first_id * e + 3),
            ("electra.embeddings.LayerNorm.weight".into(), 5),
            ("electra.embeddings_project.weight".into(), 13),
            ("electra.embeddings_project.bias".into(), 4),
            ("classifier.dense.weight".into(), 9),
            ("classifier.out_proj.weight".into(), 20),
        ]
    });
}

/// Autograd against central finite differences for the elements `probes(first_id, e)` names
/// (`first_id`: the id of the first row's second token; `e`: the embedding width) of a tiny
/// `arch` model, hidden 16, 3 labels, dropout off.
fn gradients_match_finite_differences(arch: Arch, probes: impl Fn(usize, usize) -> Vec<(String, usize)>) {
    let (dir, vocab) = tiny_of(arch, 2, 16);
    let opts = ModelOptions { num_labels: 3, dropout: Some(0.0), ..ModelOptions::default() };
    let model = BertClassifier::load(dir.path(), &opts, &Device::Cpu).unwrap();
    // Scale the N(0, 0.02) weights up to std ~0.25 (≈ 1/sqrt(hidden)) so gradients are large
    // enough for f32 finite differences to test anything.
    for (name, var) in model.all_vars() {
        if !name.contains("LayerNorm") && !name.contains("layer_norm") && !name.ends_with(".bias") {
            var.set(&(var.as_tensor() * 12.0).unwrap()).unwrap();
        }
    }
    let (ids, mask) = batch(3, 6, vocab, 9);
    let labels = Tensor::new(&[0u32, 2, 1], &Device::Cpu).unwrap();
    let loss_of = |m: &BertClassifier| -> f64 {
        let logits = m.forward(&ids, &mask, None, false).unwrap();
        candle_nn::loss::cross_entropy(&logits, &labels).unwrap().to_scalar::<f32>().unwrap() as f64
    };
    let loss = candle_nn::loss::cross_entropy(&model.forward(&ids, &mask, None, true).unwrap(), &labels).unwrap();
    let grads = model.backward(&loss).unwrap();
    let vars: HashMap<String, Var> = model.all_vars().into_iter().collect();
    let first_id = ids.to_vec2::<u32>().unwrap()[0][1] as usize;
    let h = 5e-3f32;
    for (name, idx) in probes(first_id, model.config().embedding_dim()) {
        let var = vars.get(&name).unwrap_or_else(|| panic!("{arch:?}: no tensor {name}"));
        let g = grads.get(var).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[idx] as f64;
        let orig = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eval = |delta: f32| {
            let mut v = orig.clone();
            v[idx] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
            loss_of(&model)
        };
        let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
        var.set(&Tensor::from_vec(orig, var.shape(), &Device::Cpu).unwrap()).unwrap();
        assert!(g.abs() > 1e-4, "{arch:?} {name}[{idx}]: gradient {g:e} too small to test");
        let tol = 1e-4 + 0.05 * fd.abs().max(g.abs());
        assert!((fd - g).abs() < tol, "{arch:?} {name}[{idx}]: autograd {g:.6e} vs finite difference {fd:.6e}");
    }
}

/// The fused masked-softmax-with-dropout op (the CUDA kernel's CPU twin) against softmax then
/// dropout composed of candle ops: forward and the gradient of the scores.
#[test]
fn fused_masked_softmax_dropout_matches_the_composed_ops() {
    use ops::{masked_softmax, masked_softmax_dropout_fused, DropMask};
    let (b, h, s) = (2, 3, 7);
    let vals: Vec<f32> = (0..b * h * s * s).map(|i| ((i * 37 % 101) as f32 / 25.0) - 2.0).collect();
    let mut mask = vec![0f32; b * s];
    for m in mask.iter_mut().skip(s + 4) {
        *m = -1e9; // batch row 1 pads its last 3 keys
    }
    let mask = Tensor::from_vec(mask, (b, s), &Device::Cpu).unwrap();
    let w: Vec<f32> = (0..b * h * s * s).map(|i| ((i * 53 % 97) as f32 / 50.0) - 1.0).collect();
    let w = Tensor::from_vec(w, (b, h, s, s), &Device::Cpu).unwrap();
    for p in [0.0, 0.25] {
        let drop = DropMask::new(p, 99);
        let run = |fused: bool| -> (Vec<f32>, Vec<f32>) {
            let x = Var::from_vec(vals.clone(), (b, h, s, s), &Device::Cpu).unwrap();
            let y = if fused {
                masked_softmax_dropout_fused(x.as_tensor(), &mask, 0.5, drop).unwrap()
            } else {
                drop.apply(&masked_softmax(x.as_tensor(), &mask, 0.5).unwrap()).unwrap()
            };
            let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            (y.flatten_all().unwrap().to_vec1().unwrap(), gx)
        };
        let (yf, gf) = run(true);
        let (yc, gc) = run(false);
        for (a, c) in yf.iter().zip(&yc).chain(gf.iter().zip(&gc)) {
            assert!((a - c).abs() < 1e-5, "p {p}: fused {a} vs composed {c}");
        }
        let zeros = yf.iter().filter(|v| **v == 0.0).count();
        if p > 0.0 {
            assert!(zeros > 10, "dropout zeroed only {zeros} probabilities");
        }
        // Padded keys get no probability.
        assert!(yf[(h * s) * s + s - 1].abs() < 1e-12);
    }
}
