//! Multi-label classification through the binary: a study on a toy CSV whose rows have any
//! number of three labels, with a tiny BERT; its test evaluation, export with
//! `problem_type = "multi_label_classification"`, `predict` with scores, and cross-checks
//! with scikit-learn and `transformers` when they are installed.

use std::process::Command;

use serde_json::{json, Value};
use sft_search::trainer::toy::write_toy_multilabel_task;

use crate::util::*;

fn multilabel_study(model: &str, data: &str, n: u64, extra_data: &str) -> String {
    format!(
        r#"[study]
name = "tags"
direction = "maximize"
metric = "f1_micro"
n_trials = {n}
seed = 5
storage = "study.db"

[space]
learning_rate = {{ type = "float", low = 1e-3, high = 2e-3, log = true }}

[sampler]
kind = "random"

[objective]
kind = "finetune"

[model]
path = "{model}"

[data]
path = "{data}"
label_column = "labels"
problem = "multi_label_classification"
{extra_data}

[train]
epochs = 16
batch_size = 8
max_length = 16
"#
    )
}

fn python_has(module: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {module}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn a_multi_label_study_trains_tests_exports_and_predicts() {
    let d = StudyDir::new();
    let toy = write_toy_multilabel_task(&d.path().join("toy"), 400, 4).unwrap();
    let study = multilabel_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 2, "");
    d.write("s.toml", &(study + "\n[soup]\nkind = \"greedy\"\n"));
    let out = d.run(&["run", "s.toml"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // The labels with the share of train rows that have each, and how many rows have none.
    assert!(err.contains("3 labels, 1.") && err.contains(" per train row, ") && err.contains("% of rows with none"), "{err}");
    assert!(err.contains("evaluated once): f1_micro "), "{err}");
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 2, "{trials:?}");
    let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    // Each label is told by a word of its own: the trained model finds them.
    assert!(best["value"].as_f64().unwrap() > 0.85, "valid f1_micro: {best}");
    let test = &best["test"];
    for k in ["accuracy", "hamming_loss", "f1_micro", "f1_macro", "f1_weighted", "precision_micro", "recall_macro", "roc_auc", "loss"] {
        assert!(test[k].is_number(), "{k}: {test}");
    }
    for k in ["f1_neg", "f1_place", "f1_pos"] {
        assert!(test[k].as_f64().unwrap() > 0.6, "{k}: {test}");
    }
    assert!(test.get("confusion_matrix").is_none(), "no k×k matrix for sets of labels: {test}");
    assert!(test["hamming_loss"].as_f64().unwrap() < 0.15, "{test}");

    // Export: a sequence classifier whose config says multi-label, so transformers applies
    // sigmoids and binary cross-entropy.
    let out = d.run(&["export", "s.toml", "--out", "best"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("AutoModelForSequenceClassification.from_pretrained(\"best\")"), "{said}");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("best/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"], json!(["BertForSequenceClassification"]));
    assert_eq!(cfg["problem_type"], json!("multi_label_classification"));
    assert_eq!(cfg["id2label"], json!({"0": "neg", "1": "place", "2": "pos"}));
    let prov: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("best/sft_search.json")).unwrap()).unwrap();
    assert_eq!(prov["problem"], json!("multi_label_classification"));
    assert_eq!((prov["threshold"].clone(), test["threshold"].clone()), (json!(0.5), json!(0.5)), "the default threshold");

    // predict on the training file: the label sets come back joined as they were written,
    // each label's probability beside, and the scores are those of the written sets.
    let out = d.run(&["predict", "--model", "best", "--input", toy.csv.to_str().unwrap(), "--output", "p.csv", "--metrics", "m.json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("scored against column `labels` (400 of 400 rows): ") && err.contains(", f1_micro "), "{err}");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("m.json")).unwrap()).unwrap();
    assert!(m["f1_micro"].as_f64().unwrap() > 0.85, "{m}");
    let py_rows = |file: &str| -> Vec<Vec<String>> {
        let o = d.python_ok(&format!("import csv, json; print(json.dumps([r for r in csv.reader(open('{file}'))]))"));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let rows = py_rows("p.csv");
    assert_eq!(rows[0], vec!["text", "labels", "predicted_labels", "prob_neg", "prob_place", "prob_pos"]);
    let exact = rows[1..].iter().filter(|r| r[1] == r[2]).count();
    assert!((exact as f64 / 400.0 - m["accuracy"].as_f64().unwrap()).abs() < 1e-12, "{exact} exact rows vs {m}");
    for r in &rows[1..] {
        let on: Vec<&str> =
            ["neg", "place", "pos"].iter().zip(&r[3..]).filter(|(_, p)| p.parse::<f64>().unwrap() >= 0.5).map(|(n, _)| *n).collect();
        assert_eq!(on.join(","), r[2], "predicted_labels are the labels of probability ≥ 0.5: {r:?}");
    }

    // scikit-learn gives our scores on true sets that disagree with the model's in every
    // way (every 5th row's set replaced: labels added, dropped, emptied).
    let mut corrupted = String::from("text,labels\n");
    for (i, r) in rows[1..].iter().enumerate() {
        let set = if i % 5 == 2 { ["", "pos", "neg,place", "place,pos,neg"][(i / 5) % 4] } else { r[1].as_str() };
        corrupted.push_str(&format!("{},\"{set}\"\n", r[0]));
    }
    d.write("corrupted.csv", &corrupted);
    let out = d.run(&["predict", "--model", "best", "--input", "corrupted.csv", "--output", "c.csv", "--metrics", "m.json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("m.json")).unwrap()).unwrap();
    assert!(m["f1_micro"].as_f64().unwrap() < 0.95, "{m}");
    if python_has("sklearn") {
        let script = r#"
import csv, json
from sklearn.metrics import f1_score, precision_score, recall_score, accuracy_score, hamming_loss, roc_auc_score, log_loss
names = ["neg", "place", "pos"]
rows = list(csv.reader(open("c.csv")))[1:]
Y = [[int(n in [x for x in r[1].split(",") if x]) for n in names] for r in rows]
P = [[float(p) for p in r[3:6]] for r in rows]
H = [[int(p >= 0.5) for p in row] for row in P]
out = {"accuracy": accuracy_score(Y, H), "hamming_loss": hamming_loss(Y, H), "roc_auc": roc_auc_score(Y, P, average="macro")}
for avg in ["micro", "macro"]:
    out["f1_" + avg] = f1_score(Y, H, average=avg, zero_division=0)
    out["precision_" + avg] = precision_score(Y, H, average=avg, zero_division=0)
    out["recall_" + avg] = recall_score(Y, H, average=avg, zero_division=0)
out["f1_weighted"] = f1_score(Y, H, average="weighted", zero_division=0)
print(json.dumps(out))
"#;
        let v: Value = serde_json::from_slice(&d.python_ok(script).stdout).unwrap();
        eprintln!("scikit-learn: {v}");
        for (k, want) in v.as_object().unwrap() {
            // roc_auc from the printed probabilities (rounded in the CSV): a looser bound.
            let tol = if k == "roc_auc" { 1e-6 } else { 1e-12 };
            assert!((want.as_f64().unwrap() - m[k].as_f64().unwrap()).abs() < tol, "{k}: scikit-learn {v} against ours {m}");
        }
    } else {
        assert!(std::env::var("SFT_REQUIRE_SKLEARN").as_deref() != Ok("1"), "SFT_REQUIRE_SKLEARN=1 but `import sklearn` fails");
        eprintln!("note: skipping the scikit-learn cross-check (python3 cannot import sklearn)");
    }

    // transformers loads the export as a multi-label classifier: the same logits, and its own
    // loss (binary cross-entropy, chosen by problem_type) is our scored loss.
    if !python_has("transformers, torch") {
        assert!(std::env::var("SFT_REQUIRE_TRANSFORMERS").as_deref() != Ok("1"), "SFT_REQUIRE_TRANSFORMERS=1 but transformers is missing");
        eprintln!("note: skipping the transformers multi-label parity check");
        return;
    }
    d.write("few.csv", &format!("text,labels\n{}", corrupted.lines().skip(1).take(12).map(|l| format!("{l}\n")).collect::<String>()));
    let out =
        d.run(&["predict", "--model", "best", "--input", "few.csv", "--output", "few.jsonl", "--metrics", "few.json", "--logits", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = r#"
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
tok = AutoTokenizer.from_pretrained("best")
model, info = AutoModelForSequenceClassification.from_pretrained("best", output_loading_info=True)
model.eval()
rows = [json.loads(l) for l in open("few.jsonl")]
names = ["neg", "place", "pos"]
y = torch.tensor([[float(n in [x for x in r["labels"].split(",") if x]) for n in names] for r in rows])
enc = tok([r["text"] for r in rows], padding=True, truncation=True, return_tensors="pt")
with torch.no_grad():
    out = model(**enc, labels=y)
info = {k: sorted(map(str, v)) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
print(json.dumps({"logits": out.logits.tolist(), "loss": out.loss.item(), "problem_type": model.config.problem_type, "info": info}))
"#;
    let py = d.python_ok(script);
    let v: Value = serde_json::from_slice(py.stdout.rsplit(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap()).unwrap();
    assert_eq!(v["problem_type"], json!("multi_label_classification"));
    for key in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
        assert!(v["info"][key].as_array().is_none_or(|a| a.is_empty()), "transformers reports {key}: {}", v["info"][key]);
    }
    let ours: Vec<Value> =
        std::fs::read_to_string(d.path().join("few.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut max_diff = 0f64;
    for (hf, row) in v["logits"].as_array().unwrap().iter().zip(&ours) {
        for (a, name) in hf.as_array().unwrap().iter().zip(["neg", "place", "pos"]) {
            max_diff = max_diff.max((a.as_f64().unwrap() - row[format!("logit_{name}")].as_f64().unwrap()).abs());
        }
    }
    let few: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("few.json")).unwrap()).unwrap();
    let loss_diff = (v["loss"].as_f64().unwrap() - few["loss"].as_f64().unwrap()).abs();
    eprintln!("transformers multi-label parity: max abs logit difference {max_diff:e}, loss difference {loss_diff:e}");
    assert!(max_diff < 1e-4, "max abs logit difference {max_diff}");
    assert!(loss_diff < 1e-5, "transformers' BCE loss {} against ours {}", v["loss"], few["loss"]);
}

#[test]
fn a_tuned_threshold_is_chosen_on_valid_and_travels_with_the_model() {
    let d = StudyDir::new();
    let toy = write_toy_multilabel_task(&d.path().join("toy"), 200, 9).unwrap();
    // Two epochs at a low rate: the model is unsure, its probabilities sit below 0.5.
    let study = multilabel_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 1, "")
        .replace("epochs = 16", "epochs = 2\nthreshold = \"tuned\"")
        .replace("low = 1e-3, high = 2e-3", "low = 3e-4, high = 4e-4");
    d.write("s.toml", &study);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    let history = trials[0]["metrics"]["history"].as_array().expect("history").clone();
    let tuned: Vec<f64> = history.iter().map(|h| h["metrics"]["threshold"].as_f64().unwrap()).collect();
    assert!(tuned.iter().all(|t| (0.05..=0.95).contains(t) && (t * 100.0 - (t * 100.0).round()).abs() < 1e-9), "{tuned:?}");
    let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    let best_epoch = history.iter().find(|h| h["value"] == best["value"]).expect("the best epoch");
    let chosen = best_epoch["metrics"]["threshold"].as_f64().unwrap();
    assert!(chosen != 0.5, "an unsure model wants another threshold than 0.5: {tuned:?}");
    // The test split is scored with the threshold chosen on valid, and the export keeps it.
    assert_eq!(best["test"]["threshold"].as_f64(), Some(chosen), "{best}");
    assert!(d.run(&["export", "s.toml", "--out", "m"]).status.success());
    let prov: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("m/sft_search.json")).unwrap()).unwrap();
    assert_eq!(prov["threshold"].as_f64(), Some(chosen));
    // predict uses it, and --threshold overrides it.
    let labels_at = |args: &[&str]| -> Vec<(Vec<f64>, String)> {
        let mut a = vec!["predict", "--model", "m", "--input", toy.csv.to_str().unwrap(), "-q", "--output", "p.jsonl"];
        a.extend_from_slice(args);
        let out = d.run(&a);
        assert!(out.status.success(), "{}", stderr(&out));
        std::fs::read_to_string(d.path().join("p.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                let p = ["neg", "place", "pos"].iter().map(|n| v[format!("prob_{n}")].as_f64().unwrap()).collect();
                (p, v["predicted_labels"].as_str().unwrap().to_string())
            })
            .collect()
    };
    for (args, t) in [(vec![], chosen), (vec!["--threshold", "0.5"], 0.5)] {
        for (p, got) in labels_at(&args) {
            let want: Vec<&str> = ["neg", "place", "pos"].iter().zip(&p).filter(|(_, &p)| p >= t).map(|(n, _)| *n).collect();
            assert_eq!(got, want.join(","), "threshold {t}: {p:?}");
        }
    }
    let out = d.run(&["predict", "--model", "m", "--input", toy.csv.to_str().unwrap(), "--threshold", "1.5"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--threshold 1.5 must be in (0, 1)"), "{}", stderr(&out));
}

#[test]
fn multi_label_mistakes_are_named_before_any_trial() {
    let d = StudyDir::new();
    let toy = write_toy_multilabel_task(&d.path().join("toy"), 40, 2).unwrap();
    let (model, data) = (toy.model_dir.display().to_string(), toy.csv.display().to_string());
    // Metrics are the multi-label ones.
    d.write("s.toml", &multilabel_study(&model, &data, 1, "").replace("metric = \"f1_micro\"", "metric = \"f1\""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("loss, accuracy, hamming_loss, f1_micro, f1_macro"), "{}", stderr(&out));
    // A label of the valid file outside the train file's set, with its line.
    d.write("valid.csv", "text,labels\nthe good film,pos\nthe film in rome,\"place,sport\"\n");
    d.write("s.toml", &multilabel_study(&model, &data, 1, "valid_path = \"valid.csv\""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("valid.csv") && stderr(&out).contains("line 3") && stderr(&out).contains("sport"), "{}", stderr(&out));
    // A separator without multi-label.
    let single = multilabel_study(&model, &data, 1, "label_separator = \"|\"").replace("problem = \"multi_label_classification\"", "");
    d.write("s.toml", &single.replace("metric = \"f1_micro\"", "metric = \"accuracy\""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("label_separator is for problem = ") && stderr(&out).contains("multi_label_classification"),
        "{}",
        stderr(&out)
    );
    // A threshold without multi-label; one outside (0, 1).
    d.write(
        "s.toml",
        &single
            .replace("metric = \"f1_micro\"", "metric = \"accuracy\"")
            .replace("label_separator = \"|\"", "")
            .replace("max_length = 16", "max_length = 16\nthreshold = 0.3"),
    );
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`threshold` decides which labels a multi-label model predicts"), "{}", stderr(&out));
    d.write("s.toml", &multilabel_study(&model, &data, 1, "").replace("max_length = 16", "max_length = 16\nthreshold = 1.0"));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`threshold`") && stderr(&out).contains("must be in (0, 1)"), "{}", stderr(&out));
    assert!(!d.path().join("study.db").exists(), "nothing was recorded");
}
