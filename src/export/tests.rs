//! Export tests on a real (tiny) fine-tuning run recorded in a real store.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

use super::predict::{softmax, Predictor, TextInput};
use super::*;
use crate::scheduler::{CancelToken, RecordingReporter};
use crate::space::{Distribution, Param, ParamSet, ParamValue, SearchSpace};
use crate::storage::{Budget, Claim, Owner, StudySpec};
use crate::trainer::data::{DataSection, TextEncoder};
use crate::trainer::spec::{KeepCheckpoints, TrainSpec};
use crate::trainer::toy::write_toy_task;
use crate::trainer::train::{train, Finish, TrainJob};
use crate::trial::{Direction, Outcome};

const STUDY_FILE: &str =
    "[study]\nname = \"toy\"\n[data]\npath = \"data.csv\"\nsplit_seed = 7\ntext_column = \"review\"\n[train]\nepochs = 2\n";

fn space() -> SearchSpace {
    SearchSpace::new(vec![Param {
        name: "learning_rate".into(),
        dist: Distribution::Float { low: 1e-4, high: 1e-2, log: true, step: None },
    }])
    .unwrap()
}

/// A store with study `toy` and COMPLETE trials trained for real on the toy task, one per
/// `(learning_rate, keep_checkpoints)`.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Store,
    study: StudyInfo,
}

fn fixture(trials: &[(f64, KeepCheckpoints)], study_text: &str) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let toy = write_toy_task(&root, 64, 3).unwrap();
    let mut store = Store::open(&root.join("toy.db")).unwrap();
    let sp = space();
    let study = store
        .create_or_open_study(&StudySpec {
            name: "toy",
            direction: Direction::Maximize,
            metric: "accuracy",
            space: &sp,
            study_text,
            allow_space_change: false,
        })
        .unwrap();
    for (i, &(lr, keep)) in trials.iter().enumerate() {
        let params: ParamSet = [("learning_rate".to_string(), ParamValue::Float(lr))].into_iter().collect();
        let claim = store
            .claim_next::<std::convert::Infallible>(study.id, &sp, Budget::default(), &Owner::current(), "cpu", |_, _, _| {
                Ok(Some(params.clone()))
            })
            .unwrap()
            .unwrap();
        let Claim::Trial(c) = claim else { panic!("no trial claimed") };
        let mut data = DataSection::new(&toy.csv);
        data.split = vec![0.7, 0.3];
        let spec = TrainSpec {
            epochs: 2,
            learning_rate: lr,
            batch_size: 8,
            micro_batch_size: 8,
            max_length: 16,
            dropout: Some(0.05),
            keep_checkpoints: keep,
            ..TrainSpec::default()
        };
        let job = TrainJob {
            trial: i as u64,
            model_dir: toy.model_dir.clone(),
            data,
            spec,
            metric: "accuracy".into(),
            direction: Direction::Maximize,
            device: "cpu".into(),
            artifacts_dir: root.join(format!("toy.trials/{i}")),
            resume_from: None,
        };
        let mut rep = RecordingReporter::default();
        let Finish::Complete { value, metrics } = train(&job, &mut rep, &CancelToken::new()).unwrap() else { panic!("stopped") };
        let mut all = rep.metrics.clone();
        all.extend(metrics);
        store.merge_metrics(c.id, &all).unwrap();
        if let Some(ck) = rep.checkpoints.last() {
            store.set_trial_attr(c.id, "checkpoint", &json!(ck.display().to_string())).unwrap();
        }
        store.finish(c.id, &Outcome::Complete { value }, false).unwrap();
    }
    Fixture { _tmp: tmp, root, store, study }
}

fn logits(model: &BertClassifier, enc: &TextEncoder, texts: &[&str]) -> Vec<Vec<f32>> {
    let ex: Vec<_> = texts
        .iter()
        .map(|t| crate::trainer::data::Example { text: t.to_string(), text_pair: None, label: crate::trainer::data::Target::Class(0) })
        .collect();
    let rows = enc.encode(&ex).unwrap();
    let idx: Vec<usize> = (0..rows.len()).collect();
    let b = crate::trainer::data::collate(&rows, &idx, enc.pad_id(), &Device::Cpu).unwrap();
    let l: Tensor = model.forward(&b.input_ids, &b.attention_mask, Some(&b.token_type_ids), false).unwrap();
    l.to_vec2().unwrap()
}

const TEXTS: &[&str] = &["the movie was good", "awful plot and boring acting", "it was quite a nice story", "dull"];

#[test]
fn export_reloads_to_identical_logits_with_hf_names_and_config() {
    let fx = fixture(&[(3e-3, KeepCheckpoints::Best)], STUDY_FILE);
    let out = fx.root.join("export");
    let s = export_trial(&fx.store, &fx.study, None, &out, false).unwrap();
    assert_eq!((s.trial, s.metric.as_str()), (0, "accuracy"));
    let mut names: Vec<&str> = s.files.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "config.json",
            "model.safetensors",
            "sft_search.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt"
        ]
    );

    // Tensor names are Hugging Face's, and the file has the `format: pt` metadata.
    let shapes = hf::safetensors_shapes(&out.join("model.safetensors")).unwrap();
    assert_eq!(shapes["classifier.weight"], vec![2, 32]);
    assert_eq!(shapes["bert.pooler.dense.weight"], vec![32, 32]);
    assert_eq!(shapes["bert.encoder.layer.1.output.LayerNorm.bias"], vec![32]);
    assert_eq!(shapes["bert.embeddings.word_embeddings.weight"][1], 32);
    assert!(
        shapes.keys().all(|k| k.starts_with("bert.embeddings.")
            || k.starts_with("bert.encoder.layer.")
            || k.starts_with("bert.pooler.dense.")
            || k.starts_with("classifier.")),
        "{:?}",
        shapes.keys()
    );
    assert_eq!(shapes.len(), 5 + 2 * 16 + 2 + 2);
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));

    let cfg = hf::read_json_object(&out.join("config.json")).unwrap();
    assert_eq!(cfg["architectures"], json!(["BertForSequenceClassification"]));
    assert_eq!(cfg["id2label"], json!({"0": "neg", "1": "pos"}));
    assert_eq!(cfg["label2id"], json!({"neg": 0, "pos": 1}));
    assert_eq!((cfg["num_labels"].clone(), cfg["problem_type"].clone()), (json!(2), json!("single_label_classification")));
    assert_eq!(cfg["hidden_dropout_prob"], json!(0.05), "the fine-tuned dropout");
    let tcfg = hf::read_json_object(&out.join("tokenizer_config.json")).unwrap();
    assert_eq!(tcfg["model_max_length"], json!(16));
    assert!(!out.join("optimizer.safetensors").exists() && !out.join("trainer_state.json").exists());

    // Same logits from the checkpoint and from the export, through our own loader.
    let opts = ModelOptions { num_labels: 2, ..ModelOptions::default() };
    let a = BertClassifier::load(&s.checkpoint, &opts, &Device::Cpu).unwrap();
    let b = BertClassifier::load(&out, &opts, &Device::Cpu).unwrap();
    let enc_a = TextEncoder::from_model_dir(&s.checkpoint, 16).unwrap();
    let enc_b = TextEncoder::from_model_dir(&out, 16).unwrap();
    let (la, lb) = (logits(&a, &enc_a, TEXTS), logits(&b, &enc_b, TEXTS));
    assert_eq!(la, lb);
    assert!(la.iter().flatten().any(|&x| x != 0.0));

    // The predictor reads the folder's head, length and tokenizer and gives the same logits.
    let p = Predictor::load(&out, &Device::Cpu, None).unwrap();
    assert_eq!((p.head().labels.clone(), p.max_length()), (vec!["neg".to_string(), "pos".into()], 16));
    let rows: Vec<TextInput> = TEXTS.iter().map(|t| TextInput { text: t.to_string(), pair: None }).collect();
    let mut seen = Vec::new();
    let lp = p.logits(&rows, 3, &mut |n| seen.push(n)).unwrap();
    assert_eq!(seen, vec![3, 4], "progress per batch");
    for (x, y) in lp.iter().flatten().zip(la.iter().flatten()) {
        assert!((x - y).abs() < 1e-5, "{lp:?} vs {la:?}");
    }
    for l in &lp {
        assert!((softmax(l).iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}

#[test]
fn provenance_names_trial_params_metrics_and_seed() {
    let fx = fixture(&[(1e-4, KeepCheckpoints::Best), (3e-3, KeepCheckpoints::Best)], STUDY_FILE);
    let trials = fx.store.trials(fx.study.id).unwrap();
    let test = json!({"accuracy": 0.75, "confusion_matrix": [[1, 0], [1, 2]]});
    fx.store.merge_metrics(trials[1].id, &[("test".to_string(), test.clone())].into_iter().collect()).unwrap();
    let out = fx.root.join("t1");
    let s = export_trial(&fx.store, &fx.study, Some(1), &out, false).unwrap();
    assert_eq!(s.trial, 1);
    let p = hf::read_json_object(&out.join(PROVENANCE)).unwrap();
    let t1 = &fx.store.trials(fx.study.id).unwrap()[1];
    assert_eq!((p["study"].clone(), p["trial"].clone(), p["metric"].clone()), (json!("toy"), json!(1), json!("accuracy")));
    assert_eq!(p["params"], json!({"learning_rate": 3e-3}));
    assert_eq!(p["valid"]["value"], json!(t1.value));
    assert_eq!(p["valid"]["metrics"]["accuracy"].as_f64(), t1.value, "the best epoch's valid metrics");
    assert!(p["valid"]["metrics"]["loss"].is_number());
    assert_eq!(p["test"], test);
    assert_eq!(p["split_seed"], json!(7));
    assert_eq!(p["sft_search_version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!((p["labels"].clone(), p["max_length"].clone()), (json!(["neg", "pos"]), json!(16)));
    assert_eq!(p["train"]["learning_rate"], json!(3e-3));
    assert_eq!((p["text_column"].clone(), p["text_pair_column"].clone()), (json!("review"), Value::Null), "what predict reads");
    assert_eq!(p["label_column"], json!("label"), "the default, what predict scores against");
    // Without a stored study file there is no seed or column to tell; no test metrics → null.
    let fx = fixture(&[(3e-3, KeepCheckpoints::Best)], "");
    export_trial(&fx.store, &fx.study, None, &fx.root.join("o"), false).unwrap();
    let p = hf::read_json_object(&fx.root.join("o").join(PROVENANCE)).unwrap();
    assert_eq!((p["split_seed"].clone(), p["test"].clone(), p["text_column"].clone()), (Value::Null, Value::Null, Value::Null));
    assert_eq!(p["label_column"], Value::Null);
}

#[test]
fn existing_output_needs_force_and_force_replaces_it() {
    let fx = fixture(&[(3e-3, KeepCheckpoints::Best)], STUDY_FILE);
    let out = fx.root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("stale.txt"), "old").unwrap();
    let e = export_trial(&fx.store, &fx.study, None, &out, false).unwrap_err();
    assert!(matches!(e, ExportError::Folder(FolderError::Exists(_))), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    assert!(out.join("stale.txt").is_file(), "untouched without --force");
    export_trial(&fx.store, &fx.study, None, &out, true).unwrap();
    assert!(!out.join("stale.txt").exists(), "replaced whole");
    assert!(out.join("model.safetensors").is_file());
    let leftovers: Vec<_> = std::fs::read_dir(&fx.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_trials_and_checkpoints_are_named() {
    let fx = fixture(&[(3e-3, KeepCheckpoints::None), (3e-3, KeepCheckpoints::Best)], "[train]\nkeep_checkpoints = \"none\"\n");
    let out = fx.root.join("o");
    let e = export_trial(&fx.store, &fx.study, Some(0), &out, false).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ExportError::NoCheckpoint { .. }), "{msg}");
    assert!(msg.contains("trial 0") && msg.contains("keep_checkpoints = \"none\"") && msg.contains("\"best\""), "{msg}");
    let e = export_trial(&fx.store, &fx.study, Some(9), &out, false).unwrap_err();
    assert!(e.to_string().contains("no trial 9"), "{e}");

    // A checkpoint whose weights are damaged.
    let t1 = fx.store.trials(fx.study.id).unwrap()[1].clone();
    let ck = PathBuf::from(t1.checkpoint.clone().unwrap());
    std::fs::write(ck.join("model.safetensors"), b"garbage").unwrap();
    let e = export_trial(&fx.store, &fx.study, Some(1), &out, false).unwrap_err();
    assert!(matches!(e, ExportError::Checkpoint { number: 1, .. }), "{e}");
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    assert!(!out.exists(), "no half export");
    // ... and one that is gone.
    std::fs::remove_dir_all(&ck).unwrap();
    let e = export_trial(&fx.store, &fx.study, Some(1), &out, false).unwrap_err();
    assert!(matches!(e, ExportError::CheckpointGone { number: 1, .. }), "{e}");

    // A study with no COMPLETE trial.
    let fx = fixture(&[], STUDY_FILE);
    let e = export_trial(&fx.store, &fx.study, None, &out, false).unwrap_err();
    assert!(e.to_string().contains("no COMPLETE trial"), "{e}");
}
