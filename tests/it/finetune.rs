//! Fine-tuning studies through the binary, on a tiny BERT made on the fly.

use std::process::Command;

use serde_json::Value;
use sft_search::trainer::model::arch::Arch;
use sft_search::trainer::toy::{write_toy_task, write_toy_task_for};

use crate::util::*;

fn finetune_study(model: &str, csv: &str, n: u64, extra: &str) -> String {
    format!(
        r#"[study]
name = "ft"
direction = "maximize"
metric = "accuracy"
n_trials = {n}
seed = 1
storage = "study.db"

[space]
learning_rate = {{ type = "float", low = 1e-3, high = 5e-3, log = true }}
freeze_layers = {{ type = "int", low = 0, high = 1 }}

[sampler]
kind = "random"

[objective]
kind = "finetune"

[model]
path = "{model}"

[data]
path = "{csv}"

[train]
epochs = 2
batch_size = 8
max_length = 16
{extra}
"#
    )
}

#[test]
fn a_finetune_study_trains_records_epochs_keeps_checkpoints_and_tests_the_best_once() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 120, 7).unwrap();
    d.write("s.toml", &finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 2, ""));
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("test split (trial"), "{err}");
    assert!(err.contains("2 labels (share of train rows): neg 50%, pos 50% ("), "the labels in id order: {err}");
    // The toy rows are a few words: max_length 16 cuts none of them.
    assert!(
        err.contains("tokens per row (84 train rows, special tokens included): median ") && err.contains("; max_length 16 truncates none"),
        "{err}"
    );
    assert!(!err.contains("cuts the end off"), "{err}");
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 2);
    for t in &trials {
        // One intermediate value per epoch, the study metric; the trial's value is its best.
        let inter = t["intermediate"].as_array().unwrap();
        assert_eq!(inter.len(), 2, "{t}");
        let best_epoch = inter.iter().map(|p| p[1].as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert_eq!(t["value"].as_f64().unwrap(), best_epoch);
        assert!(t["metrics"]["fit"].is_string(), "fit diagnosis recorded: {t}");
        let ckpt = t["checkpoint"].as_str().expect("a checkpoint per trial (keep_checkpoints = best)");
        assert!(std::path::Path::new(ckpt).join("model.safetensors").is_file());
    }
    let best = d.run(&["best", "s.toml", "--format", "json"]);
    let best: Value = serde_json::from_slice(&best.stdout).unwrap();
    let test = &best["test"];
    assert!(test["accuracy"].as_f64().is_some(), "{best}");
    let cm = test["confusion_matrix"].as_array().unwrap();
    assert_eq!(cm.len(), 2);
    let total: u64 = cm.iter().flat_map(|r| r.as_array().unwrap().iter().map(|c| c.as_u64().unwrap())).sum();
    assert!(total > 0);
    assert!(best["checkpoint"].is_string());
    // The CSV has a column per metric, the test metrics on the tested trial's row, the fit
    // diagnosis and the checkpoint.
    let csv = d.run(&["trials", "s.toml", "--format", "csv"]);
    let csv = String::from_utf8_lossy(&csv.stdout).into_owned();
    let mut rdr = csv::Reader::from_reader(csv.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}: {header:?}"));
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let tested = rows.iter().find(|r| r[col("number")].parse::<u64>().ok() == best["number"].as_u64()).unwrap();
    assert_eq!(tested[col("test_accuracy")].parse::<f64>().unwrap(), test["accuracy"].as_f64().unwrap());
    assert_eq!(tested[col("metric_accuracy")].parse::<f64>().unwrap(), best["value"].as_f64().unwrap(), "the best evaluation's");
    assert_eq!(&tested[col("checkpoint")], best["checkpoint"].as_str().unwrap());
    assert!(!tested[col("fit")].is_empty());
    assert!(rows.iter().filter(|r| r[col("test_accuracy")].is_empty()).count() == 1, "only the best trial is tested");
    // Running again does not evaluate the test split a second time: it shows the stored figure.
    let again = d.run(&["run", "s.toml"]);
    assert!(!stderr(&again).contains("evaluated once):"), "{}", stderr(&again));
    assert!(
        stderr(&again).contains(&format!("test split (trial {}, evaluated once, earlier): accuracy", best["number"])),
        "{}",
        stderr(&again)
    );
    // Rows changed under the same file name: the recorded values no longer compare.
    let mut rows = std::fs::read_to_string(&toy.csv).unwrap();
    rows.push_str("an extra row,pos\n");
    std::fs::write(&toy.csv, rows).unwrap();
    let more = d.run(&["run", "s.toml", "--n-trials", "3"]);
    assert_eq!(more.status.code(), Some(2), "{}", stderr(&more));
    assert!(stderr(&more).contains("`[data] path`: the file's content changed"), "{}", stderr(&more));
    assert_eq!(d.trials("s.toml").len(), 2, "nothing ran");
    let more = d.run(&["run", "s.toml", "--n-trials", "3", "--allow-setup-change"]);
    assert!(more.status.success(), "{}", stderr(&more));
    assert_eq!(d.trials("s.toml").len(), 3);
    // So does a pretrained folder changed in place.
    let config = toy.model_dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap().replacen('{', "{\"note\": \"re-downloaded\", ", 1);
    std::fs::write(&config, text).unwrap();
    let more = d.run(&["run", "s.toml", "--n-trials", "4"]);
    assert_eq!(more.status.code(), Some(2), "{}", stderr(&more));
    assert!(stderr(&more).contains("`[model]`: the pretrained folder's weights, config or tokenizer changed"), "{}", stderr(&more));
}

/// Studies of each family through the binary: trials learn the toy task, the best is tested
/// once and exports as its family's `transformers` class.
#[test]
fn studies_of_every_family_learn_test_and_export() {
    for (arch, class) in [
        (Arch::Bert, "BertForSequenceClassification"),
        (Arch::Roberta, "RobertaForSequenceClassification"),
        (Arch::DistilBert, "DistilBertForSequenceClassification"),
        (Arch::Electra, "ElectraForSequenceClassification"),
    ] {
        let d = StudyDir::new();
        let toy = write_toy_task_for(&d.path().join("toy"), 120, 7, arch).unwrap();
        let study = finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 2, "");
        d.write("s.toml", &study.replace("epochs = 2", "epochs = 8"));
        let out = d.run(&["run", "s.toml"]);
        assert!(out.status.success(), "{arch:?}: {}", stderr(&out));
        let trials = d.trials("s.toml");
        assert_eq!(count(&trials, "COMPLETE"), 2, "{arch:?}");
        let best = trials.iter().filter_map(|t| t["value"].as_f64()).fold(0.0, f64::max);
        assert!(
            best >= 0.8,
            "{arch:?}: best valid accuracy {best} on a separable task: {:?}",
            trials.iter().map(|t| t["intermediate"].clone()).collect::<Vec<_>>()
        );
        eprintln!("{arch:?}: best valid accuracy {best}");
        let b: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
        assert!(b["test"]["accuracy"].as_f64().is_some(), "{arch:?}: {b}");
        let e = d.run(&["export", "s.toml", "--out", "out"]);
        assert!(e.status.success(), "{arch:?}: {}", stderr(&e));
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("out/config.json")).unwrap()).unwrap();
        assert_eq!(cfg["architectures"][0], class);
    }
}

#[test]
fn a_regression_study_reports_r2_on_test_and_exports_a_regression_model() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 120, 5).unwrap();
    // Continuous targets: about 0.9 for the positive rows, 0.1 for the negative ones.
    let text = std::fs::read_to_string(&toy.csv).unwrap();
    let mut csv = String::from("text,score\n");
    for (i, line) in text.lines().skip(1).enumerate() {
        let (t, label) = line.rsplit_once(',').unwrap();
        let y = if label == "pos" { 0.9 } else { 0.1 } + (i % 7) as f64 * 0.001;
        csv.push_str(&format!("{t},{y}\n"));
    }
    let csv = d.write("reg.csv", &csv);
    let study = finetune_study(&toy.model_dir.display().to_string(), &csv.display().to_string(), 2, "learning_rate = 0.002")
        .replace("metric = \"accuracy\"", "metric = \"r2\"")
        .replace("[data]", "problem = \"regression\"\n\n[data]\nlabel_column = \"score\"");
    d.write("s.toml", &study);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    // The targets are read as numbers before the trials run, as the trials read them.
    assert!(err.contains("regression targets 0.1..0.906") && !err.contains(" labels ("), "{err}");
    assert!(err.contains("evaluated once): r2 ") && err.contains("mae "), "{err}");
    assert!(err.contains("`learning_rate` is searched ([space]) and also fixed in [train]"), "{err}");
    let lrs: Vec<f64> = d.trials("s.toml").iter().map(|t| t["params"]["learning_rate"].as_f64().unwrap()).collect();
    assert!(lrs.iter().all(|&lr| (1e-3..=5e-3).contains(&lr) && lr != 0.002), "the sampled values are used: {lrs:?}");
    let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    for k in ["r2", "mse", "mae", "loss"] {
        assert!(best["test"][k].is_number(), "{k}: {best}");
    }
    assert!(best["test"]["confusion_matrix"].is_null(), "{best}");
    let out = d.run(&["export", "s.toml", "--out", "model-out"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("model-out/config.json")).unwrap()).unwrap();
    assert_eq!((cfg["problem_type"].as_str(), cfg["num_labels"].as_u64()), (Some("regression"), Some(1)), "{cfg}");
    let prov: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("model-out/sft_search.json")).unwrap()).unwrap();
    assert_eq!(prov["train"]["learning_rate"], best["params"]["learning_rate"], "trained with the sampled value, not [train]'s");
    d.write("in.csv", "text,id\ngood,1\nbad,2\n");
    let out = d.run(&["predict", "--model", "model-out", "--input", "in.csv", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let preds = String::from_utf8_lossy(&out.stdout);
    assert!(preds.starts_with("text,id,prediction\n"), "{preds}");
    assert_eq!(preds.lines().skip(1).filter(|l| l.rsplit(',').next().unwrap().parse::<f64>().is_ok()).count(), 2, "{preds}");
    // Scored against the trained label column (`score`), a regression model gets R² and MAE;
    // a target that is not a number is left out and named.
    d.write("scored.csv", "text,score\ngood,0.9\nbad,0.1\nfine,high\n");
    let out = d.run(&["predict", "--model", "model-out", "--input", "scored.csv", "--output", "p.csv", "--metrics", "m.json"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("scored against column `score` (2 of 3 rows): r2 ") && err.contains(", mae "), "{err}");
    assert!(err.contains("1 row has a label in column `score` the model does not know (row 3: `high`; it knows numbers)"), "{err}");
    let m: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("m.json")).unwrap()).unwrap();
    let p = std::fs::read_to_string(d.path().join("p.csv")).unwrap();
    let pred: Vec<f64> = p.lines().skip(1).take(2).map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
    let mae = ((pred[0] - 0.9).abs() + (pred[1] - 0.1).abs()) / 2.0;
    assert!((m["mae"].as_f64().unwrap() - mae).abs() < 1e-6, "{m} against {pred:?}");
    assert!(m["confusion_matrix"].is_null() && m["rows_scored"] == 2, "{m}");
}

#[test]
fn data_and_model_mistakes_stop_before_any_trial() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 40, 3).unwrap();
    let model = toy.model_dir.display().to_string();
    // A missing column names the file and the columns that exist.
    let bad_csv = d.write("bad.csv", "sentence,label\nhello there,0\nbye now,1\n");
    d.write("s.toml", &finetune_study(&model, &bad_csv.display().to_string(), 1, ""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.csv") && stderr(&out).contains("text"), "{}", stderr(&out));
    assert!(!d.path().join("study.db").exists());
    // A label outside the declared set names its row.
    let csv = d.write("labels.csv", "text,label\ngood film,pos\nbad film,neg\nodd film,meh\n");
    let study = finetune_study(&model, &csv.display().to_string(), 1, "").replace("[train]", "labels = [\"neg\", \"pos\"]\n\n[train]");
    d.write("s.toml", &study);
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("meh") && stderr(&out).contains("labels.csv"), "{}", stderr(&out));
    // An unreadable checkpoint folder.
    d.write("s.toml", &finetune_study(&d.path().join("nowhere").display().to_string(), &toy.csv.display().to_string(), 1, ""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("nowhere"), "{}", stderr(&out));
    // A searched parameter that is not a training option, and an unknown metric.
    d.write(
        "s.toml",
        &finetune_study(&model, &toy.csv.display().to_string(), 1, "")
            .replace("[sampler]", "bogus = { type = \"int\", low = 0, high = 2 }\n\n[sampler]"),
    );
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("space.bogus"), "{}", stderr(&out));
    d.write("s.toml", &finetune_study(&model, &toy.csv.display().to_string(), 1, "").replace("metric = \"accuracy\"", "metric = \"acc\""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("`study.metric`"), "{}", stderr(&out));
    // An unknown [train] key points at its line.
    d.write("s.toml", &finetune_study(&model, &toy.csv.display().to_string(), 1, "learnin_rate = 0.1"));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("s.toml:29:1") && stderr(&out).contains("learnin_rate"), "{}", stderr(&out));
}

#[test]
fn a_nan_loss_fails_the_trial_and_the_study_goes_on() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 60, 5).unwrap();
    // Weight decay 0.01 with lr 1e6 multiplies every weight by -9999 per step: f32 overflows.
    let study = finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 2, "weight_decay = 0.01\nepochs = 3")
        .replace("epochs = 2\n", "")
        .replace(
            "learning_rate = { type = \"float\", low = 1e-3, high = 5e-3, log = true }",
            "learning_rate = { type = \"categorical\", choices = [1e6, 3e-3] }",
        )
        .replace("freeze_layers = { type = \"int\", low = 0, high = 1 }", "freeze_layers = { type = \"categorical\", choices = [0] }");
    d.write("s.toml", &study);
    d.run(&["enqueue", "s.toml", "--param", "learning_rate=1e6", "--param", "freeze_layers=0"]);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    let first = &trials[0];
    assert_eq!(state(first), "FAIL");
    let e = first["error"].as_str().unwrap().to_lowercase();
    assert!(e.contains("nan") || e.contains("inf"), "{e}");
    assert_eq!(count(&trials, "COMPLETE"), 2);
}

/// Runs a study of `n` trials of `epochs` epochs on the toy task (120 rows, seed 7) with
/// `extra` after `[train]`; returns its folder, the run's output and `best --format json`.
/// `[train] ema_decay`: the trial learns, its checkpoint keeps the weight average as the
/// model, and `export` writes it. The trained weights kept beside it for a resume, and the
/// optimizer state, are gone once the trial is recorded COMPLETE. (That the kept model is the
/// average and not the trained weights: `trainer::train_tests`.)
#[test]
fn a_weight_averaged_trial_learns_keeps_the_average_and_exports_it() {
    let (d, _, best) = run_toy_study(1, 8, "ema_decay = 0.9");
    assert!(best["value"].as_f64().unwrap() >= 0.8, "{best}");
    let ckpt = std::path::PathBuf::from(best["checkpoint"].as_str().unwrap());
    assert!(ckpt.join("model.safetensors").is_file());
    for f in ["trained_weights.safetensors", "optimizer.safetensors"] {
        assert!(!ckpt.join(f).exists(), "a completed trial keeps {f}");
    }
    let e = d.run(&["export", "s.toml", "--out", "out"]);
    assert!(e.status.success(), "{}", stderr(&e));
    assert!(!d.path().join("out/trained_weights.safetensors").exists());
    let dev = candle_core::Device::Cpu;
    let kept = candle_core::safetensors::load(ckpt.join("model.safetensors"), &dev).unwrap();
    let exported = candle_core::safetensors::load(d.path().join("out/model.safetensors"), &dev).unwrap();
    let w = |m: &std::collections::HashMap<String, candle_core::Tensor>| {
        m["classifier.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    assert_eq!(w(&exported), w(&kept));
}

/// Resume-only files a finished trial still holds (a crash between the trial's record and
/// its clean-up, or a study written by an older version) go when `run` next opens the study;
/// the weights stay and the recorded results do not change.
#[test]
fn a_later_run_clears_resume_files_that_finished_trials_kept() {
    let (d, _, best) = run_toy_study(1, 2, "");
    let ckpt = std::path::PathBuf::from(best["checkpoint"].as_str().unwrap());
    let weights = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    for f in ["optimizer.safetensors", "trained_weights.safetensors"] {
        std::fs::write(ckpt.join(f), b"left by a crash").unwrap();
    }
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in ["optimizer.safetensors", "trained_weights.safetensors"] {
        assert!(!ckpt.join(f).exists(), "{f} is still there");
    }
    assert_eq!(std::fs::read(ckpt.join("model.safetensors")).unwrap(), weights);
    let again: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    assert_eq!(again, best);
}

/// A pruned fine-tuning trial keeps nothing that only a resume reads: no `last` folder, no
/// optimizer state (its kept best checkpoint stays, named in the store).
#[test]
fn a_pruned_trial_keeps_no_checkpoint_and_a_finished_one_no_resume_files() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 120, 7).unwrap();
    let text = finetune_study(
        &toy.model_dir.display().to_string(),
        &toy.csv.display().to_string(),
        6,
        "\n[pruner]\nkind = \"median\"\nn_startup_trials = 2\n",
    )
    .replace("epochs = 2", "epochs = 4")
    .replace("direction = \"maximize\"\nmetric = \"accuracy\"", "direction = \"minimize\"\nmetric = \"loss\"")
    .replace("low = 1e-3, high = 5e-3", "low = 1e-5, high = 5e-3");
    d.write("s.toml", &text);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    let pruned: Vec<&Value> = trials.iter().filter(|t| state(t) == "PRUNED").collect();
    assert!(!pruned.is_empty(), "no trial was pruned: {:?}", trials.iter().map(|t| (state(t), t["value"].clone())).collect::<Vec<_>>());
    for t in &pruned {
        // Nothing can read a pruned trial's weights (export, the soup and the test take
        // COMPLETE trials), so its folder goes and the store forgets its checkpoint.
        assert!(!d.path().join(format!("study.trials/{}", t["number"])).exists(), "pruned trial {} kept its folder", t["number"]);
        assert!(t["checkpoint"].is_null(), "pruned trial {}: {}", t["number"], t["checkpoint"]);
    }
    for t in trials.iter().filter(|t| state(t) == "COMPLETE") {
        let dir = d.path().join(format!("study.trials/{}", t["number"]));
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            assert_ne!(p.file_name().unwrap(), "last", "trial {} kept its `last` folder", t["number"]);
            assert!(!p.join("optimizer.safetensors").exists(), "{} keeps its optimizer state", p.display());
            assert!(p.join("model.safetensors").is_file(), "{} lost its weights", p.display());
        }
        let c = t["checkpoint"].as_str().unwrap();
        assert!(std::path::Path::new(c).join("model.safetensors").is_file(), "trial {}: {c}", t["number"]);
    }
    // With `keep_checkpoints = "all"` the user asked for every checkpoint: pruned trials
    // keep theirs (without resume files), and the store still points at them.
    let all = StudyDir::new();
    write_toy_task(&all.path().join("toy"), 120, 7).unwrap();
    let text = text.replace(&d.path().join("toy").display().to_string(), &all.path().join("toy").display().to_string());
    assert!(text.contains("[train]\n"), "the template has a [train] table");
    all.write("s.toml", &text.replacen("[train]\n", "[train]\nkeep_checkpoints = \"all\"\n", 1));
    let out = all.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = all.trials("s.toml");
    let pruned: Vec<&Value> = trials.iter().filter(|t| state(t) == "PRUNED").collect();
    assert!(!pruned.is_empty());
    for t in pruned {
        let c = t["checkpoint"].as_str().unwrap_or_else(|| panic!("pruned trial {} lost its checkpoint", t["number"]));
        assert!(std::path::Path::new(c).join("model.safetensors").is_file(), "trial {}: {c}", t["number"]);
        assert!(!std::path::Path::new(c).join("optimizer.safetensors").exists(), "trial {}: {c}", t["number"]);
    }
}

fn run_toy_study(n: u64, epochs: u32, extra: &str) -> (StudyDir, std::process::Output, Value) {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 120, 7).unwrap();
    let text = finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), n, extra)
        .replace("epochs = 2", &format!("epochs = {epochs}"));
    d.write("s.toml", &text);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    (d, out, best)
}

/// A `max_length` that cuts most rows is said before any trial runs, for a searched one too.
#[test]
fn a_max_length_that_truncates_most_rows_is_reported_before_the_trials() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 60, 7).unwrap();
    let text = finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 1, "")
        .replace("max_length = 16", "")
        .replace("[sampler]", "max_length = { type = \"int\", low = 4, high = 5 }\n\n[sampler]");
    d.write("s.toml", &text);
    let out = d.run(&["run", "s.toml"]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let line = err.lines().find(|l| l.starts_with("tokens per row")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("; max_length 4..5 truncates "), "{line}");
    assert!(err.contains("warning: max_length 5 cuts the end off "), "{err}");
    assert!(err.find("warning: max_length 5") < err.find("trial 0 started"), "before the trials: {err}");
}

/// Two workers on one study: one that ends while the other still runs a trial leaves the test
/// evaluation and the soup to it (the best trial may still change), and says so; the last one
/// does them. (Here the second worker's budget, `--n-trials 1`, is already met while the first,
/// given 2, trains trial 1.)
#[test]
fn with_two_workers_the_last_to_finish_tests_the_winner_and_makes_the_soup() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 120, 7).unwrap();
    // Trial 0 trains one epoch, trial 1 sixty.
    let text = finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 1, "")
        .replace("epochs = 2\n", "")
        .replace("[sampler]", "epochs = { type = \"int\", low = 1, high = 60 }\n\n[sampler]")
        + "\n[soup]\nkind = \"greedy\"\n\n[[enqueue]]\nepochs = 1\n\n[[enqueue]]\nepochs = 60\n";
    d.write("s.toml", &text);
    let out = d.run(&["run", "s.toml"]);
    assert!(stderr(&out).contains("test split (trial 0, evaluated once)"), "{}", stderr(&out));
    let first = d.spawn(&["run", "s.toml", "--n-trials", "2"]);
    d.wait_for("s.toml", std::time::Duration::from_secs(60), "trial 1 running", |t| {
        t.iter().any(|t| t["number"] == 1 && t["state"] == "RUNNING")
    });
    let second = d.run(&["run", "s.toml"]);
    let second_err = stderr(&second);
    assert!(second.status.success(), "{second_err}");
    assert!(second_err.contains("joining study `ft` (1 trials recorded, 1 running in another worker)"), "{second_err}");
    assert!(
        second_err.contains(
            "trial(s) 1 still run in other workers: the last worker to finish evaluates the best trial on the test split and makes the model soup"
        ),
        "{second_err}"
    );
    assert!(!second_err.contains("test split (") && !second_err.contains("model soup:"), "{second_err}");
    let first = first.wait_with_output().unwrap();
    let first_err = stderr(&first);
    assert!(first.status.success(), "{first_err}");
    assert!(first_err.contains("model soup: averaging the best of 2 checkpoints"), "{first_err}");
    let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    assert!(best["test"]["accuracy"].is_number(), "the best trial is tested: {best}");
    // A later run finds the work done and shows the stored figure.
    let again = stderr(&d.run(&["run", "s.toml", "--n-trials", "2"]));
    assert!(again.contains("evaluated once, earlier): accuracy"), "{again}");
}

/// `predict` on a labelled file scores its predictions: the metrics printed and written with
/// `--metrics` are those of the predictions it wrote, over the rows whose label the model knows.
#[test]
fn predict_scores_a_labelled_file_against_its_own_predictions() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 120, 7).unwrap();
    let test = write_toy_task(&d.path().join("toy-test"), 40, 9).unwrap();
    let text = finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 2, "")
        .replace("\n[train]", &format!("test_path = \"{}\"\n\n[train]", test.csv.display()));
    d.write("s.toml", &text);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(d.run(&["export", "s.toml", "--out", "m", "-q"]).status.success());
    // On the study's test file, predict scores what the study's test evaluation measured.
    let p = d.run(&["predict", "--model", "m", "--input", &test.csv.display().to_string(), "--metrics", "t.json", "-q"]);
    assert!(p.status.success(), "{}", stderr(&p));
    let scored: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("t.json")).unwrap()).unwrap();
    let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    for k in ["accuracy", "f1_macro", "roc_auc"] {
        assert_eq!(scored[k], best["test"][k], "{k}: predict {scored} against the study's test {}", best["test"]);
    }
    assert!((scored["loss"].as_f64().unwrap() - best["test"]["loss"].as_f64().unwrap()).abs() < 1e-5, "{scored}");
    assert_eq!(scored["confusion_matrix"], best["test"]["confusion_matrix"]);
    let mut rows = std::fs::read_to_string(d.path().join("toy/data.csv")).unwrap();
    rows.push_str("a row with an odd label,maybe\na row without one,\n");
    d.write("in.csv", &rows);
    let p = d.run(&["predict", "--model", "m", "--input", "in.csv", "--output", "p.csv", "--metrics", "m.json"]);
    let err = stderr(&p);
    assert!(p.status.success(), "{err}");
    let n = rows.lines().count() - 1;
    assert!(err.contains(&format!("scored against column `label` ({} of {n} rows): accuracy", n - 2)), "{err}");
    assert!(
        err.contains(&format!("1 row has a label in column `label` the model does not know (row {}: `maybe`; it knows neg, pos)", n - 1)),
        "{err}"
    );
    assert!(err.contains(&format!("1 row has no label in column `label` (row {n})")), "{err}");
    // The accuracy and confusion matrix of the written predictions, counted here.
    let text = std::fs::read_to_string(d.path().join("p.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let (mut right, mut seen, mut cm) = (0, 0, [[0u64; 2]; 2]);
    for r in rdr.records().map(Result::unwrap).filter(|r| r[1] == *"neg" || r[1] == *"pos") {
        let (t, p) = ((r[1] == *"pos") as usize, (r[2] == *"pos") as usize);
        cm[t][p] += 1;
        right += (t == p) as usize;
        seen += 1;
    }
    let m: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("m.json")).unwrap()).unwrap();
    assert_eq!(m["rows_scored"], seen);
    assert_eq!(m["rows_not_scored"], 2);
    assert!((m["accuracy"].as_f64().unwrap() - right as f64 / seen as f64).abs() < 1e-12, "{m}");
    assert_eq!(m["confusion_matrix"], serde_json::json!(cm));
    assert_eq!(m["labels"], serde_json::json!(["neg", "pos"]));
    assert!(m["roc_auc"].is_number() && m["loss"].is_number() && m["f1_macro"].is_number(), "{m}");
    // A label column asked for and absent, or --metrics without labels: usage errors.
    let bad = d.run(&["predict", "--model", "m", "--input", "in.csv", "--label-column", "gold"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("no column `gold`"), "{}", stderr(&bad));
    d.write("plain.csv", "text\na sentence\n");
    let bad = d.run(&["predict", "--model", "m", "--input", "plain.csv", "--metrics", "x.json"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--metrics needs true labels"), "{}", stderr(&bad));
    // Rows longer than the length the model reads are counted and said.
    let short = d.run(&["predict", "--model", "m", "--input", "in.csv", "--max-length", "4", "--output", "q.csv"]);
    assert!(short.status.success(), "{}", stderr(&short));
    assert!(stderr(&short).contains("are longer than 4 tokens, the length the model reads, and lose their ends"), "{}", stderr(&short));
    assert!(!err.contains("lose their ends"), "at the trained length nothing is cut: {err}");
    // Without a label column, nothing is scored and nothing said about it.
    let plain = d.run(&["predict", "--model", "m", "--input", "plain.csv"]);
    assert!(plain.status.success() && !stderr(&plain).contains("scored"), "{}", stderr(&plain));
}

#[test]
fn a_greedy_soup_is_chosen_on_valid_averages_its_trials_is_tested_once_and_exported() {
    let (d, out, best) = run_toy_study(4, 6, "\n[soup]\nkind = \"greedy\"\ncandidates = 3\n");
    assert!(stderr(&out).contains("model soup: averaging the best of 3 checkpoints of trials"), "{}", stderr(&out));
    let soup = &best["soup"];
    // Candidates: the 3 best COMPLETE trials, best first (the first is the best trial).
    let trials = d.trials("s.toml");
    let mut by_value: Vec<(u64, f64)> = trials.iter().map(|t| (t["number"].as_u64().unwrap(), t["value"].as_f64().unwrap())).collect();
    by_value.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    let candidates: Vec<u64> = soup["candidates"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(candidates, by_value.iter().take(3).map(|p| p.0).collect::<Vec<_>>(), "{soup}");
    assert_eq!(candidates[0], best["number"].as_u64().unwrap());
    // The greedy rule, replayed from what was recorded: a candidate joins when the soup with
    // it is better on valid than the soup without it, or as good with no higher valid loss.
    let mut value = soup["best_single"].as_f64().unwrap();
    let mut loss = soup["best_single_loss"].as_f64().unwrap();
    let mut expect = vec![candidates[0]];
    for t in soup["tried"].as_array().unwrap() {
        let (v, l) = (t["value"].as_f64().unwrap(), t["loss"].as_f64().unwrap());
        let join = v > value || (v == value && l <= loss);
        assert_eq!(t["kept"].as_bool(), Some(join), "{t}");
        if join {
            expect.push(t["trial"].as_u64().unwrap());
            (value, loss) = (v, l);
        }
    }
    let ingredients: Vec<u64> = soup["ingredients"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    assert_eq!(ingredients, expect, "{soup}");
    assert_eq!(soup["value"].as_f64().unwrap(), value);
    assert_eq!(soup["tried"].as_array().unwrap().len(), 2, "every other candidate is tried: {soup}");
    assert!(ingredients.len() > 1, "this seeded toy study keeps a soup: {soup}");

    // The soup's weights are the mean of its ingredients' kept weights.
    let load =
        |dir: &str| candle_core::safetensors::load(std::path::Path::new(dir).join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let soup_w = load(soup["checkpoint"].as_str().unwrap());
    let parts: Vec<_> = ingredients
        .iter()
        .map(|n| load(trials.iter().find(|t| t["number"].as_u64() == Some(*n)).unwrap()["checkpoint"].as_str().unwrap()))
        .collect();
    for name in ["classifier.weight", "bert.encoder.layer.1.output.dense.weight", "bert.embeddings.word_embeddings.weight"] {
        let got: Vec<f32> = soup_w[name].flatten_all().unwrap().to_vec1().unwrap();
        let ws: Vec<Vec<f32>> = parts.iter().map(|p| p[name].flatten_all().unwrap().to_vec1().unwrap()).collect();
        for (i, g) in got.iter().enumerate() {
            let mean = ws.iter().map(|w| w[i]).sum::<f32>() / ws.len() as f32;
            assert!((g - mean).abs() < 1e-5, "{name}[{i}]: {g} vs mean {mean}");
        }
    }
    // Tested once; the best trial's own test evaluation is still there.
    assert!(soup["test"]["accuracy"].as_f64().is_some(), "{soup}");
    assert!(best["test"]["accuracy"].as_f64().is_some(), "{best}");
    let text = d.run(&["best", "s.toml"]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains(&format!("model soup of trials {}", ingredients.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let report = std::fs::read_to_string(d.path().join("ft-report.html")).unwrap();
    assert!(report.contains("<h2>Model soup</h2>") && report.contains("Soup test metrics"), "the report shows the soup");
    // A second run keeps the soup as it is.
    let again = d.run(&["run", "s.toml"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stderr(&again).contains("averaging"), "{}", stderr(&again));
    assert!(!stderr(&again).contains("test split (model soup, evaluated once):"), "{}", stderr(&again));
    assert!(stderr(&again).contains("test split (model soup, evaluated once, earlier): accuracy"), "{}", stderr(&again));

    // `export` writes the soup unless a trial is named.
    let out = d.run(&["export", "s.toml", "--out", "soup-model"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the model soup of trials"), "{}", String::from_utf8_lossy(&out.stdout));
    let prov: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("soup-model/sft_search.json")).unwrap()).unwrap();
    assert_eq!(prov["soup"]["ingredients"], soup["ingredients"]);
    assert_eq!(prov["test"], soup["test"]);
    let exported = load(d.path().join("soup-model").to_str().unwrap());
    assert_eq!(
        exported["classifier.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        soup_w["classifier.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap()
    );
    // A soup folder that is gone is named, and a re-run rebuilds it.
    let soup_dir = soup["checkpoint"].as_str().unwrap().to_string();
    std::fs::rename(&soup_dir, d.path().join("moved")).unwrap();
    let out = d.run(&["export", "s.toml", "--out", "again"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("model soup") && stderr(&out).contains("is gone"), "{}", stderr(&out));
    let rebuilt = d.run(&["run", "s.toml"]);
    assert!(stderr(&rebuilt).contains("averaging"), "{}", stderr(&rebuilt));
    let again = load(&soup_dir);
    assert_eq!(
        again["classifier.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        soup_w["classifier.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        "the rebuilt soup is the same"
    );
    let n = candidates[0].to_string();
    let out = d.run(&["export", "s.toml", "--out", "best-trial", "--trial", &n]);
    assert!(out.status.success(), "{}", stderr(&out));
    let prov: Value = serde_json::from_str(&std::fs::read_to_string(d.path().join("best-trial/sft_search.json")).unwrap()).unwrap();
    assert!(prov["soup"].is_null(), "{prov}");
}

#[test]
fn a_soup_table_needs_a_finetune_objective() {
    let d = StudyDir::new();
    d.write(
        "s.toml",
        "[study]\nname = \"c\"\nn_trials = 1\n\n[space]\nx = { type = \"float\", low = 0, high = 1 }\n\n[objective]\nkind = \"command\"\ncommand = [\"true\"]\n\n[soup]\nkind = \"greedy\"\n",
    );
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`[soup]` averages fine-tuned checkpoints"), "{}", stderr(&out));
}

#[test]
fn a_soup_over_all_kept_checkpoints_can_average_epochs_of_one_trial() {
    let (_d, _, best) =
        run_toy_study(3, 3, "keep_checkpoints = \"all\"\n\n[soup]\nkind = \"greedy\"\ncandidates = 2\ncheckpoints = \"all\"\n");
    let soup = &best["soup"];
    // Every checkpoint the two best trials kept (3 epochs each, one folder per epoch) is a
    // candidate; the first is the best trial's best checkpoint.
    let paths: Vec<&str> = soup["candidate_checkpoints"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(paths.len(), 6, "{soup}");
    assert_eq!(paths[0], best["checkpoint"].as_str().unwrap(), "{soup}");
    let numbers: Vec<u64> = soup["candidates"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect();
    let mut distinct = numbers.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), 2, "two trials: {numbers:?}");
    for (n, p) in numbers.iter().zip(&paths) {
        assert!(p.contains(&format!("/{n}/checkpoint-")), "{n} {p}");
    }
    // Ingredients name their folders; the tried list covers the other five.
    let ing: Vec<&str> = soup["ingredient_checkpoints"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert_eq!(ing.len(), soup["ingredients"].as_array().unwrap().len());
    assert_eq!(ing[0], paths[0]);
    assert_eq!(soup["tried"].as_array().unwrap().len(), 5, "{soup}");
    for t in soup["tried"].as_array().unwrap() {
        assert!(paths.contains(&t["checkpoint"].as_str().unwrap()), "{t}");
    }
}

#[test]
fn bench_train_times_steps_on_a_files_rows_padded_per_batch() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 80, 3).unwrap();
    let model = toy.model_dir.display().to_string();
    let csv = toy.csv.display().to_string();
    let bench = |extra: &[&str]| {
        let mut args =
            vec!["bench", "train", "--model", &model, "--batch-size", "8", "--seq-len", "64", "--steps", "3", "--format", "json"];
        args.extend_from_slice(extra);
        d.run(&args)
    };
    let out = bench(&["--data", &csv]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    // The toy rows are a few words: batches padded to their longest stay far below 64.
    let tokens = v["tokens_per_row"].as_f64().unwrap();
    assert!(tokens > 2.0 && tokens < 20.0, "tokens per row {tokens}");
    assert!(v["step_ms"].as_f64().unwrap() > 0.0 && v["samples_per_s"].as_f64().unwrap() > 0.0, "{v}");
    // CPU time of all threads, and the loss of the last step (two labels: near ln 2 at the start).
    assert!(v["cpu_ms"].as_f64().unwrap() > 0.0, "{v}");
    let loss = v["last_loss"].as_f64().unwrap();
    assert!(loss > 0.0 && loss < 2.0, "{v}");
    // Random ids fill the whole length.
    let out = bench(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tokens_per_row"].as_f64(), Some(64.0));
    // With RUST_BACKTRACE set, an error from inside the model (here: a length beyond the
    // model's 128 positions) is still one message, not a message and a backtrace.
    let out = Command::new(bin())
        .args(["bench", "train", "--model", &model, "--batch-size", "2", "--seq-len", "200", "--steps", "1"])
        .current_dir(d.path())
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LIB_BACKTRACE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("sequence length 200 exceeds"), "{err}");
    assert!(!err.contains("   0: ") && !err.contains("candle_core::error"), "a backtrace in the error: {err}");
    // A file too small for one batch is refused with its name.
    // Ten rows: a 70/15/15 split leaves seven for training, fewer than one batch of 8.
    let rows: String = (0..10).map(|i| format!("row number {i} of the small file,{}\n", i % 2)).collect();
    let small = d.write("small.csv", &format!("text,label\n{rows}"));
    let out = bench(&["--data", &small.display().to_string()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("small.csv") && stderr(&out).contains("fewer than one batch"), "{}", stderr(&out));
}

/// A fine-tuning study on a GPU with a binary built without CUDA stops before anything is
/// recorded, with exit status 2 and how to fix it, instead of failing every trial.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_study_with_a_cpu_only_build_stops_before_recording_anything() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 60, 7).unwrap();
    d.write("s.toml", &finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 2, ""));
    let out = d.run(&["run", "s.toml", "--devices", "cuda:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("built without CUDA") && stderr(&out).contains("--features cuda"), "{}", stderr(&out));
    assert!(!d.path().join("study.db").exists(), "nothing is recorded");
}

/// A conditional training option: momentum only for SGD trials; every trial trains.
#[test]
fn a_conditional_training_option_reaches_only_the_trials_it_applies_to() {
    let d = StudyDir::new();
    let toy = write_toy_task(&d.path().join("toy"), 60, 5).unwrap();
    // Both optimizers queued first, their other options left to the sampler.
    let queued = "[[enqueue]]\noptimizer = \"sgd\"\n[[enqueue]]\noptimizer = \"adamw\"\n";
    let text = finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), 4, queued).replace(
        "freeze_layers = { type = \"int\", low = 0, high = 1 }",
        "optimizer = [\"adamw\", \"sgd\"]\nmomentum = { type = \"float\", low = 0.5, high = 0.95, when = { optimizer = \"sgd\" } }",
    );
    d.write("s.toml", &text);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 4, "{}", stderr(&out));
    for t in &trials {
        let sgd = t["params"]["optimizer"] == "sgd";
        assert_eq!(t["params"].get("momentum").is_some(), sgd, "{}", t["params"]);
    }
    assert_eq!((&trials[0]["params"]["optimizer"], &trials[1]["params"]["optimizer"]), (&"sgd".into(), &"adamw".into()));
}
