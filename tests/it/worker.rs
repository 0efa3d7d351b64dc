//! `sft-search worker` on its own: a job piped on stdin, JSON lines read back.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use sft_search::trainer::toy::write_toy_task;

fn job(dir: &Path, extra_spec: Value) -> Value {
    let toy = write_toy_task(dir, 96, 11).unwrap();
    let mut spec = serde_json::to_value(sft_search::trainer::spec::TrainSpec {
        epochs: 2,
        learning_rate: 3e-3,
        batch_size: 8,
        micro_batch_size: 8,
        max_length: 16,
        ..Default::default()
    })
    .unwrap();
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({
        "kind": "train",
        "trial": 3,
        "model_dir": toy.model_dir,
        "data": {"path": toy.csv, "split": [0.7, 0.3]},
        "spec": spec,
        "metric": "accuracy",
        "direction": "maximize",
        "device": "cpu",
        "artifacts_dir": dir.join("arts"),
    })
}

/// Runs the worker with `job` on stdin, kept open while it runs; `on_line` sees each line
/// and may write commands. Returns the lines and the exit code.
fn run(job: &Value, mut on_line: impl FnMut(&Value, &mut std::process::ChildStdin)) -> (Vec<Value>, i32) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sft-search"))
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{job}").unwrap();
    let mut lines = Vec::new();
    for l in BufReader::new(child.stdout.take().unwrap()).lines() {
        let v: Value = serde_json::from_str(&l.unwrap()).expect("stdout carries only JSON lines");
        on_line(&v, &mut stdin);
        lines.push(v);
    }
    drop(stdin);
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (lines, code)
}

#[test]
fn a_job_trains_and_prints_the_protocol_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let (lines, code) = run(&job(tmp.path(), json!({})), |_, _| {});
    assert_eq!(code, 0, "{lines:?}");
    let steps: Vec<i64> = lines.iter().filter_map(|l| l.get("step").and_then(Value::as_i64)).collect();
    assert_eq!(steps, vec![1, 2]);
    let eval = lines.iter().find(|l| l.get("step").is_some()).unwrap();
    assert!(eval["metrics"]["train_loss"].is_number() && eval["metrics"]["accuracy"].is_number());
    let ckpt = lines.iter().filter_map(|l| l.get("checkpoint").and_then(Value::as_str)).next_back().unwrap();
    assert!(Path::new(ckpt).join("model.safetensors").is_file());
    assert!(lines.iter().any(|l| l.get("metrics").is_some_and(|m| m.get("fit").is_some())));
    let last = lines.last().unwrap();
    assert!(last["value"].as_f64().is_some() && last.get("step").is_none(), "{last}");
}

#[test]
fn nan_loss_prints_an_error_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let (lines, code) = run(&job(tmp.path(), json!({"learning_rate": 1e6, "weight_decay": 0.01})), |_, _| {});
    assert_eq!(code, 1);
    let err = lines.last().unwrap()["error"].as_str().unwrap().to_string();
    assert!(err.contains("NaN") && err.contains("learning_rate=1e6"), "{err}");
}

/// A device that cannot be opened is the machine's failure, not the setting's: the error line
/// says so with its prefix, so the scheduler retries the trial and the GP sampler does not
/// learn that its parameters fail. (This build has no CUDA, so `cuda:0` cannot open.)
#[cfg(not(feature = "cuda"))]
#[test]
fn a_device_that_cannot_open_is_an_external_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = job(dir.path(), json!({}));
    j["device"] = json!("cuda:0");
    let (lines, code) = run(&j, |_, _| {});
    assert_eq!(code, 1);
    let err = lines.iter().find_map(|l| l["error"].as_str()).expect("an error line");
    assert!(err.starts_with(sft_search::trial::DEVICE_ERROR_PREFIX) && err.contains("device `cuda:0`"), "{err}");
    assert!(sft_search::trial::is_external_failure(err), "{err}");
}

#[test]
fn prune_command_stops_after_the_current_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (lines, code) = run(&job(tmp.path(), json!({"epochs": 5})), |l, stdin| {
        if l.get("step").is_some() {
            let _ = writeln!(stdin, "{}", json!({"command": "prune"}));
        }
    });
    assert_eq!(code, 0);
    assert_eq!(lines.last().unwrap(), &json!({"pruned": true}));
    assert!(lines.iter().filter(|l| l.get("step").is_some()).count() < 5);
    assert!(!lines.iter().any(|l| l.get("value").is_some() && l.get("step").is_none()));
}

#[test]
fn stdin_eof_means_the_parent_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let j = job(tmp.path(), json!({"epochs": 50}));
    let out = Command::new(assert_cmd::cargo::cargo_bin("sft-search"))
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            writeln!(c.stdin.take().unwrap(), "{j}")?; // dropped: EOF right after the job
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.lines().any(|l| l.contains("\"value\"") && !l.contains("\"step\"")), "{text}");
}

#[test]
fn a_bad_job_is_an_error_line() {
    let (lines, code) = run(&json!({"kind": "train", "nonsense": 1}), |_, _| {});
    assert_eq!(code, 1);
    assert!(lines[0]["error"].as_str().unwrap().contains("bad worker job"));
}

mod runner {
    use super::*;
    use sft_search::scheduler::{CancelToken, RecordingReporter, TrialAssignment, TrialRunner};
    use sft_search::space::{ParamSet, ParamValue};
    use sft_search::trainer::data::DataSection;
    use sft_search::trainer::runner::FinetuneRunner;
    use sft_search::trainer::spec::{ModelSection, TrainSection};
    use sft_search::trial::{Direction, Outcome};

    fn runner(dir: &Path) -> FinetuneRunner {
        let toy = write_toy_task(dir, 96, 12).unwrap();
        let mut data = DataSection::new(&toy.csv);
        data.split = vec![0.6, 0.2, 0.2];
        let train: TrainSection = toml::from_str("epochs = 2\nbatch_size = 8\nmax_length = 16").unwrap();
        let model = ModelSection { path: Some(toy.model_dir), ..Default::default() };
        let mut r = FinetuneRunner::new(&model, data, train, "accuracy", Direction::Maximize).unwrap();
        r.program = assert_cmd::cargo::cargo_bin("sft-search");
        r
    }

    fn assignment(dir: &Path, params: ParamSet) -> TrialAssignment {
        TrialAssignment {
            number: 0,
            params,
            device: "cpu".into(),
            retry_of: None,
            artifacts_dir: dir.join("trial-0"),
            resume_from: Vec::new(),
        }
    }

    #[test]
    fn finetune_runner_runs_a_trial_in_a_worker_and_evaluates_the_test_split() {
        let tmp = tempfile::tempdir().unwrap();
        let r = runner(tmp.path());
        let params: ParamSet = [("learning_rate".to_string(), ParamValue::Float(3e-3))].into_iter().collect();
        let mut rec = RecordingReporter::default();
        let out = r.run(&assignment(tmp.path(), params), &mut rec, &CancelToken::new());
        let Outcome::Complete { value } = out else { panic!("{out:?}") };
        assert_eq!(rec.steps().len(), 2);
        assert_eq!(value, rec.steps().iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max));
        let ckpt = rec.checkpoints.last().unwrap();
        let test = r.run_test(ckpt, "cpu").unwrap();
        assert!(test["accuracy"].is_number() && test["confusion_matrix"].is_array(), "{test:?}");
    }

    /// An executable `dir/name` that reads the job line, runs `case_arms` (shell `case` arms
    /// over `$job`, `$REAL` = the real binary) and otherwise hands the job to the real worker.
    fn wrapper_worker(dir: &Path, name: &str, case_arms: &str) -> std::path::PathBuf {
        let script = format!(
            "#!/bin/bash\nREAL={}\nread -r job\ncase \"$job\" in\n{case_arms}\nesac\nexec \"$REAL\" \"$@\" < <(printf '%s\\n' \"$job\"; exec cat 2>/dev/null)\n",
            assert_cmd::cargo::cargo_bin("sft-search").display()
        );
        let p = dir.join(name);
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// A worker program that fails as CUDA does when out of memory for the micro-batch sizes
    /// in `oom_at` and otherwise runs the real worker on the job it was given.
    fn oom_worker(dir: &Path, oom_at: &[usize]) -> std::path::PathBuf {
        let cases: Vec<String> = oom_at.iter().map(|m| format!("*'\"micro_batch_size\":{m},'*")).collect();
        let arm = format!(
            "  {})\n    echo 'CUDA_ERROR_OUT_OF_MEMORY: out of memory' >&2\n    echo '{{\"error\": \"DriverError(CUDA_ERROR_OUT_OF_MEMORY, \\\"out of memory\\\")\"}}'\n    exit 1;;",
            cases.join(" | ")
        );
        wrapper_worker(dir, "oom-worker.sh", &arm)
    }

    #[test]
    fn out_of_memory_is_retried_with_half_the_micro_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = runner(tmp.path());
        r.program = oom_worker(tmp.path(), &[8]);
        let params: ParamSet = [("learning_rate".to_string(), ParamValue::Float(3e-3))].into_iter().collect();
        let mut rec = RecordingReporter::default();
        let out = r.run(&assignment(tmp.path(), params), &mut rec, &CancelToken::new());
        let Outcome::Complete { .. } = out else { panic!("{out:?}") };
        assert_eq!(rec.metrics["oom_retry_micro_batch_size"], 4, "{:?}", rec.metrics);
        assert_eq!(rec.steps().len(), 2, "the retry trained both epochs");
    }

    #[test]
    fn out_of_memory_after_a_checkpoint_resumes_from_it_with_half_the_micro_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = runner(tmp.path());
        // At micro-batch 8 the real worker runs until its first checkpoint, then "runs out of
        // memory"; at 4 it runs normally.
        let arm = "  *'\"micro_batch_size\":8,'*)\n    coproc W { exec \"$REAL\" worker; }\n    printf '%s\\n' \"$job\" >&\"${W[1]}\"\n    while IFS= read -r line <&\"${W[0]}\"; do\n      echo \"$line\"\n      case \"$line\" in *'\"checkpoint\"'*) kill $W_PID; echo '{\"error\": \"CUDA out of memory\"}'; exit 1;; esac\n    done\n    exit 1;;";
        r.program = wrapper_worker(tmp.path(), "oom-late.sh", arm);
        let params: ParamSet = [("learning_rate".to_string(), ParamValue::Float(3e-3))].into_iter().collect();
        let mut rec = RecordingReporter::default();
        let out = r.run(&assignment(tmp.path(), params), &mut rec, &CancelToken::new());
        let Outcome::Complete { .. } = out else { panic!("{out:?}") };
        assert_eq!(rec.metrics["oom_retry_micro_batch_size"], 4, "{:?}", rec.metrics);
        assert!(rec.metrics.get("resumed_from_step").and_then(Value::as_u64).unwrap_or(0) > 0, "resumed: {:?}", rec.metrics);
        let steps: Vec<i64> = rec.steps().iter().map(|s| s.0).collect();
        assert_eq!(steps, vec![1, 2], "epoch 1 from the first attempt, epoch 2 from the resumed one");
    }

    /// Halving goes on until the micro-batch fits (here 2 rows of the batch of 8), and the
    /// trial trains what was asked.
    #[test]
    fn out_of_memory_halves_again_until_the_micro_batch_fits() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = runner(tmp.path());
        r.program = oom_worker(tmp.path(), &[8, 4]);
        let params: ParamSet = [("learning_rate".to_string(), ParamValue::Float(3e-3))].into_iter().collect();
        let mut rec = RecordingReporter::default();
        let out = r.run(&assignment(tmp.path(), params), &mut rec, &CancelToken::new());
        let Outcome::Complete { .. } = out else { panic!("{out:?}") };
        assert_eq!(rec.metrics["oom_retry_micro_batch_size"], 2, "{:?}", rec.metrics);
        assert_eq!(rec.steps().len(), 2, "the last attempt trained both epochs");
    }

    /// Out of memory down to one row fails the trial, naming every size tried and what to do.
    #[test]
    fn out_of_memory_at_one_row_fails_the_trial_saying_so() {
        let tmp = tempfile::tempdir().unwrap();
        let mut r = runner(tmp.path());
        r.program = oom_worker(tmp.path(), &[8, 4, 2, 1]);
        let params: ParamSet = [("learning_rate".to_string(), ParamValue::Float(3e-3))].into_iter().collect();
        let out = r.run(&assignment(tmp.path(), params), &mut RecordingReporter::default(), &CancelToken::new());
        let Outcome::Failed { reason } = out else { panic!("{out:?}") };
        assert!(
            reason.starts_with(
                "out of memory at every micro_batch_size down to one row (8, 4, 2, 1): one row of this `max_length` does not fit"
            ),
            "{reason}"
        );
        assert!(reason.contains("CUDA_ERROR_OUT_OF_MEMORY"), "the device's own error: {reason}");
    }

    #[test]
    fn a_bad_parameter_fails_the_trial_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let r = runner(tmp.path());
        let params: ParamSet = [("batch_size".to_string(), ParamValue::Str("big".into()))].into_iter().collect();
        let out = r.run(&assignment(tmp.path(), params), &mut RecordingReporter::default(), &CancelToken::new());
        let Outcome::Failed { reason } = out else { panic!("{out:?}") };
        assert!(reason.contains("`batch_size`"), "{reason}");
    }
}

#[test]
fn runner_from_study_tables_resolves_relative_paths_and_checks_the_metric() {
    use sft_search::trainer::runner::FinetuneRunner;
    use sft_search::trial::Direction;
    let tmp = tempfile::tempdir().unwrap();
    write_toy_task(tmp.path(), 20, 1).unwrap();
    let t = |s: &str| -> toml::Table { toml::from_str(s).unwrap() };
    let (model, data) = (t("path = \"model\""), t("path = \"data.csv\""));
    let r = FinetuneRunner::from_tables(&model, &data, Some(&t("epochs = 2")), tmp.path(), "f1_macro", Direction::Maximize).unwrap();
    assert!(r.model_dir.is_absolute() && r.data.path == tmp.path().join("data.csv"));
    let e = FinetuneRunner::from_tables(&model, &data, None, tmp.path(), "r2", Direction::Maximize).unwrap_err();
    assert!(e.to_string().contains("r2"), "{e}");
    let e = FinetuneRunner::from_tables(&model, &data, Some(&t("epoch = 2")), tmp.path(), "accuracy", Direction::Maximize).unwrap_err();
    assert!(e.to_string().contains("[train]") && e.to_string().contains("epoch"), "{e}");
}

/// `sft-search run` on a finetune study of the toy task: every trial completes through a
/// worker and `best` knows the value.
#[test]
fn a_finetune_study_runs_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    write_toy_task(tmp.path(), 80, 21).unwrap();
    let study = tmp.path().join("study.toml");
    std::fs::write(
        &study,
        r#"
[study]
name = "toy-finetune"
direction = "maximize"
metric = "accuracy"
n_trials = 2
seed = 3

[space]
learning_rate = { type = "float", low = 1e-3, high = 1e-2, log = true }

[sampler]
kind = "random"

[objective]
kind = "finetune"

[model]
path = "model"

[data]
path = "data.csv"
split = [0.7, 0.3]

[train]
epochs = 2
batch_size = 8
max_length = 16
"#,
    )
    .unwrap();
    let out = Command::new(assert_cmd::cargo::cargo_bin("sft-search")).arg("run").arg(&study).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stderr: {err}\nstdout: {}", String::from_utf8_lossy(&out.stdout));
    let best = Command::new(assert_cmd::cargo::cargo_bin("sft-search")).args(["best", "--format", "json"]).arg(&study).output().unwrap();
    let v: Value = serde_json::from_slice(&best.stdout).unwrap_or(Value::Null);
    assert!(v["value"].as_f64().is_some(), "best: {} {}", String::from_utf8_lossy(&best.stdout), String::from_utf8_lossy(&best.stderr));
}
