//! `export` then `predict` through the binary on a tiny fine-tuning study (trained in-process
//! with the library: `run` does not drive finetune studies yet), and the transformers parity
//! proof (skipped with a note when `transformers`/`torch` are missing, unless
//! `SFT_REQUIRE_TRANSFORMERS=1`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sft_search::scheduler::{CancelToken, RecordingReporter};
use sft_search::space::{Distribution, Param, ParamSet, ParamValue, SearchSpace};
use sft_search::storage::{Budget, Claim, Owner, Store, StudySpec};
use sft_search::trainer::data::DataSection;
use sft_search::trainer::model::arch::Arch;
use sft_search::trainer::spec::TrainSpec;
use sft_search::trainer::toy::write_toy_task_for;
use sft_search::trainer::train::{train, Finish, TrainJob};
use sft_search::trial::{Direction, Outcome};

use crate::util::{bin, stderr};

/// `root/toy.db` with one COMPLETE finetune trial of the toy task.
fn study(root: &Path, model: Option<PathBuf>, epochs: usize, arch: Arch) -> PathBuf {
    let toy = write_toy_task_for(root, 96, 5, arch).unwrap();
    let model_dir = model.unwrap_or(toy.model_dir.clone());
    let db = root.join("toy.db");
    let mut store = Store::open(&db).unwrap();
    let space = SearchSpace::new(vec![Param {
        name: "learning_rate".into(),
        dist: Distribution::Float { low: 1e-4, high: 1e-2, log: true, step: None },
    }])
    .unwrap();
    let text = "[study]\nname = \"toy\"\n[objective]\nkind = \"finetune\"\n[data]\npath = \"data.csv\"\n";
    let info = store
        .create_or_open_study(&StudySpec {
            name: "toy",
            direction: Direction::Maximize,
            metric: "accuracy",
            space: &space,
            study_text: text,
            allow_space_change: false,
        })
        .unwrap();
    let params: ParamSet = [("learning_rate".to_string(), ParamValue::Float(3e-3))].into_iter().collect();
    let Claim::Trial(c) = store
        .claim_next::<std::convert::Infallible>(info.id, &space, Budget::default(), &Owner::current(), "cpu", |_, _, _| {
            Ok(Some(params.clone()))
        })
        .unwrap()
        .unwrap()
    else {
        panic!("no trial")
    };
    let mut data = DataSection::new(&toy.csv);
    data.split = vec![0.7, 0.3];
    let job = TrainJob {
        trial: 0,
        model_dir,
        data,
        spec: TrainSpec { epochs, learning_rate: 3e-3, batch_size: 8, micro_batch_size: 8, max_length: 16, ..TrainSpec::default() },
        metric: "accuracy".into(),
        direction: Direction::Maximize,
        device: "cpu".into(),
        artifacts_dir: root.join("toy.trials/0"),
        resume_from: None,
    };
    let mut rep = RecordingReporter::default();
    let Finish::Complete { value, metrics } = train(&job, &mut rep, &CancelToken::new()).unwrap() else { panic!("stopped") };
    rep.metrics.extend(metrics);
    store.merge_metrics(c.id, &rep.metrics).unwrap();
    store.set_trial_attr(c.id, "checkpoint", &json!(rep.checkpoints.last().unwrap().display().to_string())).unwrap();
    store.finish(c.id, &Outcome::Complete { value }, false).unwrap();
    db
}

const SENTENCES: [&str; 20] = [
    "the movie was good",
    "awful plot",
    "it was quite a nice story",
    "dull and boring acting",
    "a superb film",
    "the story was really poor",
    "lovely",
    "bad",
    "great acting and a great plot",
    "it was a movie",
    "the film was awful , really",
    "nice movie",
    "boring",
    "quite good and quite bad",
    "the plot was dull",
    "Superb ACTING!",
    "poor story and poor acting",
    "really lovely film",
    "a movie about a film",
    "great",
];

fn sft(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).current_dir(dir).output().expect("run sft-search")
}

#[test]
fn export_then_predict_then_transformers_parity() {
    let tmp = tempfile::tempdir().unwrap();
    export_predict_parity(tmp.path(), None, 3, Arch::Bert);
}

/// The same for the other families: a tiny RoBERTa (positions from `pad_token_id + 1`, its own
/// head and special tokens), a tiny DistilBERT (its own config fields and names) and a tiny
/// ELECTRA (narrow embeddings projected up, a GELU head) fine-tuned, exported, and loaded by
/// `transformers` with every weight found and our logits.
#[test]
fn roberta_distilbert_and_electra_export_then_transformers_parity() {
    for (arch, class) in [
        (Arch::Roberta, "RobertaForSequenceClassification"),
        (Arch::DistilBert, "DistilBertForSequenceClassification"),
        (Arch::Electra, "ElectraForSequenceClassification"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        export_predict_parity(tmp.path(), None, 2, arch);
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("model-out/config.json")).unwrap()).unwrap();
        assert_eq!(cfg["architectures"], json!([class]));
    }
}

/// The same with a real model: `SFT_MINILM_DIR=/work/minilm cargo test --test it -- --ignored minilm_export`.
#[test]
#[ignore]
fn minilm_export_parity() {
    let dir = PathBuf::from(std::env::var("SFT_MINILM_DIR").expect("set SFT_MINILM_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    export_predict_parity(tmp.path(), Some(dir), 1, Arch::Bert);
}

fn export_predict_parity(root: &Path, model: Option<PathBuf>, epochs: usize, arch: Arch) {
    study(root, model, epochs, arch);
    let out = sft(root, &["export", "toy.db", "--out", "model-out"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("exported trial 0") && said.contains("model.safetensors"), "{said}");
    // A second export needs --force.
    let again = sft(root, &["export", "toy.db", "--out", "model-out"]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("--force"));
    assert!(sft(root, &["export", "toy.db", "--out", "model-out", "--force"]).status.success());

    // predict: input columns + predicted_label + prob_<label>, probabilities summing to 1.
    let mut csv = String::from("id,text\n");
    for (i, s) in SENTENCES.iter().enumerate() {
        csv.push_str(&format!("{i},\"{s}\"\n"));
    }
    std::fs::write(root.join("in.csv"), csv).unwrap();
    let p = sft(root, &["predict", "--model", "model-out", "--input", "in.csv", "--output", "preds.csv", "--batch-size", "6", "--logits"]);
    assert!(p.status.success(), "{}", stderr(&p));
    let text = std::fs::read_to_string(root.join("preds.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, vec!["id", "text", "predicted_label", "prob_neg", "prob_pos", "logit_neg", "logit_pos"]);
    let mut logits = Vec::new();
    for (i, r) in rdr.records().enumerate() {
        let r = r.unwrap();
        assert_eq!((&r[0], &r[1]), (i.to_string().as_str(), SENTENCES[i]));
        let (pn, pp): (f64, f64) = (r[3].parse().unwrap(), r[4].parse().unwrap());
        assert!((pn + pp - 1.0).abs() < 1e-9, "{pn} + {pp}");
        assert_eq!(&r[2], if pp > pn { "pos" } else { "neg" });
        logits.push(vec![r[5].parse::<f64>().unwrap(), r[6].parse::<f64>().unwrap()]);
    }
    assert_eq!(logits.len(), 20);
    // stdout in the input's format when --output is absent.
    let p = sft(root, &["predict", "--model", "model-out", "--input", "in.csv", "-q"]);
    assert!(p.status.success());
    assert!(String::from_utf8_lossy(&p.stdout).starts_with("id,text,predicted_label,prob_neg,prob_pos\n"));

    // The columns the model was trained on (sft_search.json) are predict's defaults.
    let prov_path = root.join("model-out/sft_search.json");
    let mut prov: Value = serde_json::from_str(&std::fs::read_to_string(&prov_path).unwrap()).unwrap();
    assert_eq!(prov["text_column"], json!("text"));
    prov["text_column"] = json!("review");
    std::fs::write(&prov_path, prov.to_string()).unwrap();
    let p = sft(root, &["predict", "--model", "model-out", "--input", "in.csv", "-q"]);
    assert_eq!(p.status.code(), Some(2), "{}", stderr(&p));
    let e = stderr(&p);
    assert!(e.contains("no column `review`") && e.contains("trained on column `review`") && e.contains("--text-column"), "{e}");
    let p = sft(root, &["predict", "--model", "model-out", "--input", "in.csv", "-q", "--text-column", "text"]);
    assert!(String::from_utf8_lossy(&p.stdout).starts_with("id,text,predicted_label,prob_neg,prob_pos\n"), "{}", stderr(&p));
    std::fs::write(root.join("in-review.csv"), std::fs::read_to_string(root.join("in.csv")).unwrap().replacen("id,text", "id,review", 1))
        .unwrap();
    let p = sft(root, &["predict", "--model", "model-out", "--input", "in-review.csv", "-q"]);
    assert!(String::from_utf8_lossy(&p.stdout).starts_with("id,review,predicted_label,prob_neg,prob_pos\n"), "{}", stderr(&p));
    prov["text_pair_column"] = json!("hypothesis");
    std::fs::write(&prov_path, prov.to_string()).unwrap();
    let p = sft(root, &["predict", "--model", "model-out", "--input", "in-review.csv", "-q"]);
    assert_eq!(p.status.code(), Some(2), "{}", stderr(&p));
    assert!(stderr(&p).contains("sentence pairs") && stderr(&p).contains("`hypothesis`"), "{}", stderr(&p));
    prov["text_column"] = json!("text");
    prov["text_pair_column"] = Value::Null;
    std::fs::write(&prov_path, prov.to_string()).unwrap();
    // A row without a text keeps its place in the output, and is named on stderr.
    std::fs::write(root.join("gaps.csv"), "id,text\n1,good film\n2,\n3,bad\n").unwrap();
    let p = sft(root, &["predict", "--model", "model-out", "--input", "gaps.csv"]);
    assert!(p.status.success(), "{}", stderr(&p));
    assert_eq!(String::from_utf8_lossy(&p.stdout).lines().count(), 4, "every row predicted");
    assert!(stderr(&p).contains("1 of 3 rows") && stderr(&p).contains("(rows 2)"), "{}", stderr(&p));

    // The transformers parity proof.
    let has = Command::new("python3").args(["-c", "import transformers, torch"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !has {
        assert!(
            std::env::var("SFT_REQUIRE_TRANSFORMERS").as_deref() != Ok("1"),
            "SFT_REQUIRE_TRANSFORMERS=1 but `import transformers, torch` fails"
        );
        eprintln!("note: skipping the transformers parity check (python3 cannot import transformers, torch; see docs/export.md)");
        return;
    }
    let script = r#"
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
d, sents = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(d)
model, info = AutoModelForSequenceClassification.from_pretrained(d, output_loading_info=True)
model.eval()
with torch.no_grad():
    enc = tok(sents, padding=True, truncation=True, return_tensors="pt")
    out = model(**enc).logits
info = {k: sorted(map(str, v)) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
print(json.dumps({"logits": out.tolist(), "id2label": model.config.id2label, "class": type(model).__name__, "info": info}))
"#;
    let py = Command::new("python3")
        .args(["-c", script, root.join("model-out").to_str().unwrap(), &serde_json::to_string(&SENTENCES).unwrap()])
        .output()
        .unwrap();
    assert!(py.status.success(), "python failed: {}", String::from_utf8_lossy(&py.stderr));
    let v: Value = serde_json::from_slice(py.stdout.rsplit(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap()).unwrap();
    let hf: Vec<Vec<f64>> = serde_json::from_value(v["logits"].clone()).unwrap();
    assert_eq!(v["id2label"], json!({"0": "neg", "1": "pos"}));
    // Every weight of the model was in the file under the name transformers expects.
    for key in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
        assert!(v["info"][key].as_array().is_none_or(|a| a.is_empty()), "{arch:?}: transformers reports {key}: {}", v["info"][key]);
    }
    eprintln!("transformers loaded {}", v["class"]);
    let mut max_diff = 0f64;
    for (a, b) in hf.iter().flatten().zip(logits.iter().flatten()) {
        max_diff = max_diff.max((a - b).abs());
    }
    eprintln!("transformers parity ({arch:?}): max abs logit difference {max_diff:e} over {} sentences", hf.len());
    assert_eq!(hf.len(), 20);
    assert!(max_diff < 1e-4, "max abs logit difference {max_diff}\nhf: {hf:?}\nours: {logits:?}");
}
