//! Token classification (named entities) through the binary: a study on a toy CoNLL file with
//! a tiny BERT, its test evaluation, export as `BertForTokenClassification`, `predict` on
//! CoNLL and JSON Lines, and parity with `transformers` when it is installed.

use std::process::Command;

use serde_json::{json, Value};
use sft_search::trainer::toy::write_toy_ner_task;

use crate::util::*;

fn ner_study(model: &str, data: &str, n: u64, extra_data: &str) -> String {
    format!(
        r#"[study]
name = "ner"
direction = "maximize"
metric = "f1"
n_trials = {n}
seed = 3
storage = "study.db"

[space]
learning_rate = {{ type = "float", low = 4e-3, high = 8e-3, log = true }}

[sampler]
kind = "random"

[objective]
kind = "finetune"

[model]
path = "{model}"

[data]
path = "{data}"
problem = "token_classification"
{extra_data}

[train]
epochs = 4
batch_size = 8
max_length = 24
"#
    )
}

#[test]
fn a_token_classification_study_tags_entities_tests_exports_and_predicts() {
    let d = StudyDir::new();
    let toy = write_toy_ner_task(&d.path().join("toy"), 200, 11).unwrap();
    let study = ner_study(&toy.model_dir.display().to_string(), &toy.conll.display().to_string(), 2, "");
    d.write("s.toml", &(study + "\n[soup]\nkind = \"greedy\"\n"));
    let out = d.run(&["run", "s.toml"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    // The soup is chosen on valid entity F1, like the trials.
    assert!(err.contains("model soup: averaging the best of 2 checkpoints"), "{err}");
    assert!(err.contains(": valid f1 = ") || err.contains(" alone on the valid split (f1 = "), "{err}");
    // The tags, O first, with their share of the train words.
    assert!(err.contains("train words, 4 tags (share of train words): O "), "{err}");
    assert!(err.contains("evaluated once): f1 "), "{err}");
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 2, "{trials:?}");
    let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    // The toy entities are told by the word itself: the trained tagger finds them.
    assert!(best["value"].as_f64().unwrap() > 0.9, "valid entity F1: {best}");
    let test = &best["test"];
    for k in ["f1", "precision", "recall", "accuracy", "loss", "f1_macro", "f1_per", "f1_loc"] {
        assert!(test[k].is_number(), "{k}: {test}");
    }
    assert!(test["f1"].as_f64().unwrap() > 0.9, "{test}");
    assert_eq!(test["labels"], json!(["O", "B-loc", "B-per", "I-per"]));
    let cm = test["confusion_matrix"].as_array().unwrap();
    assert_eq!(cm.len(), 4, "a word-level confusion matrix over the 4 tags");
    // Every word of the test split is counted once (no word is cut at max_length 24).
    let words: u64 = cm.iter().flat_map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap())).sum();
    let test_rows = test["rows"].as_u64().unwrap();
    assert!(words > 3 * test_rows, "{words} words in {test_rows} sentences");

    // Export: transformers' token-classification class, tags as id2label, no pooler.
    let out = d.run(&["export", "s.toml", "--out", "tagger"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("AutoModelForTokenClassification.from_pretrained(\"tagger\")") && said.contains("--input FILE.conll"), "{said}");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("tagger/config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"], json!(["BertForTokenClassification"]));
    assert_eq!(cfg["id2label"], json!({"0": "O", "1": "B-loc", "2": "B-per", "3": "I-per"}));
    assert!(cfg.get("problem_type").is_none(), "{cfg}");
    let prov: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("tagger/sft_search.json")).unwrap()).unwrap();
    assert_eq!(prov["problem"], json!("token_classification"));

    // predict on the CoNLL file itself: the true tags are scored, the output has both columns.
    let out =
        d.run(&["predict", "--model", "tagger", "--input", toy.conll.to_str().unwrap(), "--output", "tagged.conll", "--metrics", "m.json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("scored against the true tags (200 of 200 sentences") && err.contains("): f1 "), "{err}");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("m.json")).unwrap()).unwrap();
    assert!(m["f1"].as_f64().unwrap() > 0.9, "{m}");
    assert_eq!(m["sentences_scored"], json!(200));
    let tagged = std::fs::read_to_string(d.path().join("tagged.conll")).unwrap();
    let source = std::fs::read_to_string(&toy.conll).unwrap();
    assert_eq!(tagged.lines().count(), source.lines().count(), "one line per word, a blank between sentences");
    let (mut right, mut n) = (0, 0);
    for (a, b) in source.lines().zip(tagged.lines()) {
        if a.is_empty() {
            assert!(b.is_empty());
            continue;
        }
        let f: Vec<&str> = b.split('\t').collect();
        assert_eq!(f.len(), 3, "word, true tag, predicted tag: {b}");
        assert_eq!(format!("{}\t{}", f[0], f[1]), a);
        n += 1;
        right += usize::from(f[1] == f[2]);
    }
    let acc = right as f64 / n as f64;
    assert!((acc - m["accuracy"].as_f64().unwrap()).abs() < 1e-12, "the scores are of the written tags: {acc} vs {m}");
    // seqeval gives our figures, on true tags that disagree with the model's in every way
    // (every 7th word's tag replaced: stray I- tags, split and merged entities).
    let mut corrupted = String::new();
    for (i, line) in source.lines().enumerate() {
        match line.split_once('\t') {
            Some((w, _)) if i % 7 == 3 => corrupted.push_str(&format!("{w}\t{}\n", ["I-per", "B-loc", "O", "B-per"][(i / 7) % 4])),
            _ => corrupted.push_str(&format!("{line}\n")),
        }
    }
    d.write("corrupted.conll", &corrupted);
    let out = d.run(&["predict", "--model", "tagger", "--input", "corrupted.conll", "--output", "c.conll", "--metrics", "m.json", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("m.json")).unwrap()).unwrap();
    assert!(m["f1"].as_f64().unwrap() < 0.95 && m["f1"].as_f64().unwrap() > 0.3, "{m}");
    let has = Command::new("python3").args(["-c", "import seqeval"]).output().map(|o| o.status.success()).unwrap_or(false);
    if has {
        let script = r#"
import json, sys
from seqeval.metrics import f1_score, precision_score, recall_score, accuracy_score
gold, pred, g, p = [], [], [], []
for line in open(sys.argv[1]).read().split("\n"):
    if not line:
        if g:
            gold.append(g); pred.append(p); g, p = [], []
        continue
    w, t, q = line.split("\t")
    g.append(t); p.append(q)
print(json.dumps({"f1": f1_score(gold, pred), "precision": precision_score(gold, pred), "recall": recall_score(gold, pred),
                  "f1_macro": f1_score(gold, pred, average="macro"), "accuracy": accuracy_score(gold, pred)}))
"#;
        let py = Command::new("python3").args(["-c", script, d.path().join("c.conll").to_str().unwrap()]).output().unwrap();
        assert!(py.status.success(), "python failed: {}", String::from_utf8_lossy(&py.stderr));
        let v: Value = serde_json::from_slice(&py.stdout).unwrap();
        eprintln!("seqeval: {v}");
        for k in ["f1", "precision", "recall", "f1_macro", "accuracy"] {
            assert!((v[k].as_f64().unwrap() - m[k].as_f64().unwrap()).abs() < 1e-12, "{k}: seqeval {v} against ours {m}");
        }
    } else {
        assert!(std::env::var("SFT_REQUIRE_SEQEVAL").as_deref() != Ok("1"), "SFT_REQUIRE_SEQEVAL=1 but `import seqeval` fails");
        eprintln!("note: skipping the seqeval cross-check (python3 cannot import seqeval)");
    }

    // JSON Lines without tags: every word gets a predicted tag; --metrics then has nothing to score.
    d.write(
        "in.jsonl",
        "{\"id\": 1, \"tokens\": [\"alice\", \"smith\", \"was\", \"really\", \"paris\"]}\n{\"id\": 2, \"tokens\": [\"the\", \"film\"]}\n",
    );
    let out = d.run(&["predict", "--model", "tagger", "--input", "in.jsonl", "-q", "--logits"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows[0]["id"], json!(1));
    assert_eq!(rows[0]["predicted_tags"], json!(["B-per", "I-per", "O", "O", "B-loc"]));
    assert_eq!(rows[1]["predicted_tags"], json!(["O", "O"]));
    let out = d.run(&["predict", "--model", "tagger", "--input", "in.jsonl", "--metrics", "x.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--metrics needs true tags"), "{}", stderr(&out));
    let out = d.run(&["predict", "--model", "tagger", "--input", "in.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("reads and writes CoNLL (.conll, .iob, .bio) or JSON Lines"), "{}", stderr(&out));

    // transformers reads the export as a token classifier with our logits.
    let has = Command::new("python3").args(["-c", "import transformers, torch"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !has {
        assert!(std::env::var("SFT_REQUIRE_TRANSFORMERS").as_deref() != Ok("1"), "SFT_REQUIRE_TRANSFORMERS=1 but transformers is missing");
        eprintln!("note: skipping the transformers token-classification parity check");
        return;
    }
    let script = r#"
import json, sys, torch
from transformers import AutoModelForTokenClassification, AutoTokenizer
d, sents = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(d)
model, info = AutoModelForTokenClassification.from_pretrained(d, output_loading_info=True)
model.eval()
out = []
with torch.no_grad():
    for words in sents:
        enc = tok(words, is_split_into_words=True, truncation=True, return_tensors="pt")
        logits = model(**enc).logits[0]
        seen, row = set(), []
        for pos, w in enumerate(enc.word_ids()):
            if w is not None and w not in seen:
                seen.add(w)
                row.append(logits[pos].tolist())
        out.append(row)
info = {k: sorted(map(str, v)) for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
print(json.dumps({"logits": out, "class": type(model).__name__, "info": info}))
"#;
    let sents: Vec<Value> = rows.iter().map(|r| r["tokens"].clone()).collect();
    let py = Command::new("python3")
        .args(["-c", script, d.path().join("tagger").to_str().unwrap(), &serde_json::to_string(&sents).unwrap()])
        .output()
        .unwrap();
    assert!(py.status.success(), "python failed: {}", String::from_utf8_lossy(&py.stderr));
    let v: Value = serde_json::from_slice(py.stdout.rsplit(|&b| b == b'\n').find(|l| !l.is_empty()).unwrap()).unwrap();
    assert_eq!(v["class"], json!("BertForTokenClassification"));
    for key in ["missing_keys", "unexpected_keys", "mismatched_keys"] {
        assert!(v["info"][key].as_array().is_none_or(|a| a.is_empty()), "transformers reports {key}: {}", v["info"][key]);
    }
    let mut max_diff = 0f64;
    for (hf, ours) in v["logits"].as_array().unwrap().iter().zip(&rows) {
        let (hf, ours) = (hf.as_array().unwrap(), ours["logits"].as_array().unwrap());
        assert_eq!(hf.len(), ours.len());
        for (a, b) in hf.iter().flat_map(|w| w.as_array().unwrap()).zip(ours.iter().flat_map(|w| w.as_array().unwrap())) {
            max_diff = max_diff.max((a.as_f64().unwrap() - b.as_f64().unwrap()).abs());
        }
    }
    eprintln!("transformers token-classification parity: max abs logit difference {max_diff:e}");
    assert!(max_diff < 1e-4, "max abs logit difference {max_diff}");
}

#[test]
fn token_classification_mistakes_are_named_before_any_trial() {
    let d = StudyDir::new();
    let toy = write_toy_ner_task(&d.path().join("toy"), 40, 2).unwrap();
    let model = toy.model_dir.display().to_string();
    // A sentence with more tags than words is refused with its line.
    d.write(
        "bad.jsonl",
        "{\"tokens\": [\"alice\", \"was\"], \"tags\": [\"B-per\", \"O\"]}\n{\"tokens\": [\"bob\"], \"tags\": [\"B-per\", \"O\"]}\n",
    );
    d.write("s.toml", &ner_study(&model, "bad.jsonl", 1, "text_column = \"tokens\"\nlabel_column = \"tags\""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.jsonl line 2: sentence 2 has 1 words but 2 tags"), "{}", stderr(&out));
    // Integer tags need their names.
    d.write("ints.jsonl", "{\"tokens\": [\"alice\", \"was\"], \"ner_tags\": [1, 0]}\n{\"tokens\": [\"bob\"], \"ner_tags\": [1]}\n");
    d.write("s.toml", &ner_study(&model, "ints.jsonl", 1, "text_column = \"tokens\"\nlabel_column = \"ner_tags\""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tags of") && stderr(&out).contains("are integers; list the tag names in [data] labels"),
        "{}",
        stderr(&out)
    );
    // A CSV is not a token-classification file; a CoNLL file is not a sentence-classification one.
    d.write("rows.csv", "text,label\nalice,B-per\n");
    d.write("s.toml", &ner_study(&model, "rows.csv", 1, ""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("token classification reads CoNLL files"), "{}", stderr(&out));
    d.write("s.toml", &ner_study(&model, &toy.conll.display().to_string(), 1, "").replace("problem = \"token_classification\"", ""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a CoNLL file") && stderr(&out).contains("token_classification"), "{}", stderr(&out));
    // Word augmentation would separate words from their tags; metrics are the entity ones.
    d.write(
        "s.toml",
        &ner_study(&model, &toy.conll.display().to_string(), 1, "").replace("max_length = 24", "max_length = 24\naugment_prob = 0.1"),
    );
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("token classification does not augment"), "{}", stderr(&out));
    d.write("s.toml", &ner_study(&model, &toy.conll.display().to_string(), 1, "").replace("metric = \"f1\"", "metric = \"roc_auc\""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("loss, accuracy, precision, recall, f1, f1_macro"), "{}", stderr(&out));
    assert!(!d.path().join("study.db").exists(), "nothing was recorded");
}
