//! Crashes and interruptions lose nothing.

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const SLOW: &str = "import json, sys, time\np = json.load(sys.stdin)\nfor s in range(3):\n    time.sleep(0.15)\n    print(json.dumps({'step': s, 'value': p['x'] * (3 - s)}), flush=True)\nprint(json.dumps({'value': p['x']}))\n";

#[test]
fn sigkill_of_the_orchestrator_then_resume_loses_nothing() {
    let d = StudyDir::new();
    d.python("objective.py", SLOW);
    d.write("s.toml", &command_study("kill", 8, "[\"cpu\", \"cpu\"]", ""));
    let mut child = d.spawn(&["run", "s.toml"]);
    let before = d.wait_for("s.toml", Duration::from_secs(60), "two complete and two running", |t| {
        count(t, "COMPLETE") >= 2 && count(t, "RUNNING") == 2
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    let running_at_kill: Vec<(u64, Value)> =
        before.iter().filter(|t| state(t) == "RUNNING").map(|t| (t["number"].as_u64().unwrap(), t["params"].clone())).collect();
    // The orphaned trial processes die with their parent thread: nothing keeps writing.
    std::thread::sleep(Duration::from_millis(300));

    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_numbers_unique(&trials);
    assert_eq!(count(&trials, "COMPLETE"), 8);
    assert_eq!(count(&trials, "RUNNING"), 0);
    for (number, params) in &running_at_kill {
        let t = trials.iter().find(|t| t["number"].as_u64() == Some(*number)).unwrap();
        assert_eq!(state(t), "FAIL");
        assert_eq!(t["error"], "interrupted");
        let retry = trials.iter().find(|r| r["retry_of"].as_u64() == Some(*number)).expect("a retry");
        assert_eq!(&retry["params"], params);
        assert_eq!(state(retry), "COMPLETE");
    }
    // Everything recorded before the kill is still there.
    for t in before.iter().filter(|t| state(t) == "COMPLETE") {
        let now = trials.iter().find(|x| x["number"] == t["number"]).unwrap();
        assert_eq!(now, t);
    }
    assert_eq!(trials.len(), 8 + running_at_kill.len());
}

#[test]
fn ctrl_c_once_lets_running_trials_finish() {
    let d = StudyDir::new();
    d.python("objective.py", SLOW);
    d.write("s.toml", &command_study("int1", 20, "[\"cpu\", \"cpu\"]", ""));
    let child = d.spawn(&["run", "s.toml"]);
    d.wait_for("s.toml", Duration::from_secs(60), "two running", |t| count(t, "RUNNING") == 2);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "RUNNING"), 0);
    assert_eq!(count(&trials, "FAIL"), 0, "running trials finished normally");
    assert!(count(&trials, "COMPLETE") >= 2 && count(&trials, "COMPLETE") < 20);
}

#[test]
fn ctrl_c_twice_cancels_running_trials_and_exits_non_zero() {
    let d = StudyDir::new();
    d.python("objective.py", "import json, sys, time\np = json.load(sys.stdin)\ntime.sleep(30)\nprint(json.dumps({'value': p['x']}))\n");
    d.write("s.toml", &command_study("int2", 20, "[\"cpu\", \"cpu\"]", ""));
    let child = d.spawn(&["run", "s.toml"]);
    d.wait_for("s.toml", Duration::from_secs(60), "two running", |t| count(t, "RUNNING") == 2);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let start = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "cancel must not wait for the trials");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "RUNNING"), 0);
    let cancelled: Vec<&Value> = trials.iter().filter(|t| t["error"] == "cancelled").collect();
    assert_eq!(cancelled.len(), 2);
    // Their work is queued again for the next run.
    assert_eq!(count(&trials, "WAITING"), 2);
}

#[test]
fn a_hanging_trial_is_killed_after_the_trial_timeout() {
    let d = StudyDir::new();
    d.python(
        "objective.py",
        "import json, sys, time\np = json.load(sys.stdin)\nif p['k'] == 1:\n    time.sleep(60)\nprint(json.dumps({'value': p['x']}))\n",
    );
    d.write("s.toml", &command_study("hang", 4, "[\"cpu\", \"cpu\"]", "trial_timeout = \"1s\"\nmax_retries = 0"));
    let start = std::time::Instant::now();
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(30));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 4);
    for t in trials.iter().filter(|t| t["params"]["k"] == 1) {
        assert_eq!(state(t), "FAIL");
        assert!(t["error"].as_str().unwrap().starts_with("timeout"), "{t}");
    }
}

/// Failures from outside a trial (here: every trial hangs and is killed by the timeout, as a
/// full disk fails every checkpoint) are retried, but they count toward
/// `max_consecutive_failures` too, so the study stops instead of starting trials forever.
#[test]
fn failures_from_outside_the_trial_stop_the_study_when_they_keep_coming() {
    let d = StudyDir::new();
    d.python("objective.py", "import time\ntime.sleep(60)\n");
    d.write("s.toml", &command_study("stuck", 2, "[\"cpu\"]", "trial_timeout = \"1s\"\nmax_retries = 1\nmax_consecutive_failures = 3"));
    let start = std::time::Instant::now();
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(stderr(&out).contains("3 trials failed in a row") && stderr(&out).contains("the machine looks broken"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    // Trial 0, its retry, trial 2 ran and failed; trial 2's retry waits for the next run.
    assert_eq!(trials.len(), 4, "{trials:?}");
    assert!(trials[..3].iter().all(|t| state(t) == "FAIL" && t["error"].as_str().unwrap().starts_with("timeout")));
    assert_eq!(trials[1]["retry_of"], Value::from(0));
    assert_eq!((state(&trials[3]), &trials[3]["retry_of"]), ("WAITING", &Value::from(2)));
}

/// The soak test of issue 4: 200 trials over 8 slots, a fifth of the commands crash, and the
/// orchestrator is SIGKILLed every few seconds and restarted. At the end exactly `n_trials`
/// trials are COMPLETE, no number repeats, and every failure says why.
#[test]
fn soak_crashing_trials_and_a_killed_orchestrator() {
    let d = StudyDir::new();
    d.write(
        "objective.sh",
        "read -r params\nr=$((RANDOM % 10))\nsleep 0.$((RANDOM % 5 + 1))\nif [ $r -eq 0 ]; then kill -9 $$; fi\nif [ $r -eq 1 ]; then echo \"crashed on purpose\" >&2; exit 3; fi\necho \"{\\\"value\\\": $SFT_PARAM_X}\"\n",
    );
    let study = command_study(
        "soak",
        200,
        "[\"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\"]",
        "max_retries = 2\nmax_consecutive_failures = 1000",
    )
    .replace("[\"python3\", \"objective.py\"]", "[\"bash\", \"objective.sh\"]");
    d.write("s.toml", &study);
    let mut rng_state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut kills = 0;
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(300), "soak did not finish");
        let mut child = d.spawn(&["-q", "run", "s.toml"]);
        let wait_ms = 700 + next() % 800;
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut exited = None;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match exited {
            Some(status) => {
                assert!(status.success(), "run failed: {}", {
                    let mut s = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut s);
                    }
                    s
                });
                break;
            }
            None => {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
                kills += 1;
            }
        }
    }
    let trials = d.trials("s.toml");
    assert_numbers_unique(&trials);
    assert_eq!(count(&trials, "COMPLETE"), 200, "after {kills} kills");
    assert_eq!(count(&trials, "RUNNING"), 0);
    for t in trials.iter().filter(|t| state(t) == "FAIL") {
        let e = t["error"].as_str().unwrap_or("");
        assert!(
            e == "interrupted" || e.starts_with("worker exited: signal 9") || e.contains("crashed on purpose"),
            "failure without a clear reason: {t}"
        );
    }
    // Every retry re-runs its original's parameters.
    for t in trials.iter().filter(|t| !t["retry_of"].is_null()) {
        let orig = trials.iter().find(|o| o["number"] == t["retry_of"]).unwrap();
        assert_eq!(orig["params"], t["params"]);
        assert_eq!(state(orig), "FAIL");
    }
    assert!(kills >= 3, "the orchestrator should have been killed a few times, was {kills}");
}

/// A fine-tuning study of one trial with fixed options, long enough (several epochs of a
/// few seconds) to be interrupted between two epochs.
fn long_finetune_study(model: &str, csv: &str, extra: &str) -> String {
    format!(
        r#"[study]
name = "ftkill"
direction = "maximize"
metric = "accuracy"
n_trials = 1
seed = 3
storage = "study.db"

[space]
learning_rate = {{ type = "float", low = 1e-3, high = 3e-3, log = true }}

[sampler]
kind = "random"

[objective]
kind = "finetune"

[model]
path = "{model}"

[data]
path = "{csv}"

[train]
epochs = 4
batch_size = 8
max_length = 16
threads = 1
{extra}
"#
    )
}

fn epochs_seen(t: &Value) -> usize {
    t["intermediate"].as_array().map_or(0, Vec::len)
}

/// Fault 1: the orchestrator is SIGKILLed during a fine-tuning trial; `run` again continues
/// that trial from its last checkpoint and ends exactly where an uninterrupted run ends.
#[test]
fn sigkill_during_a_finetune_trial_resumes_from_its_checkpoint_with_equal_metrics() {
    let toy_dir = tempfile::tempdir().unwrap();
    let toy = sft_search::trainer::toy::write_toy_task(toy_dir.path(), 3000, 11).unwrap();
    let study = long_finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), "");

    // The uninterrupted run.
    let reference = StudyDir::new();
    reference.write("s.toml", &study);
    let out = reference.run(&["-q", "run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = reference.trials("s.toml");
    assert_eq!(reference.len(), 1);
    assert_eq!(state(&reference[0]), "COMPLETE");

    // The same study, killed after its first epoch.
    let d = StudyDir::new();
    d.write("s.toml", &study);
    let mut child = d.spawn(&["-q", "run", "s.toml"]);
    let before = d.wait_for("s.toml", Duration::from_secs(120), "trial 0 past its first epoch", |t| {
        t.len() == 1 && state(&t[0]) == "RUNNING" && epochs_seen(&t[0]) >= 1
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    let seen_at_kill = epochs_seen(&before[0]);
    assert!(seen_at_kill < 4, "the trial ended before the kill; make the epochs longer");
    // The worker notices its parent is gone (stdin EOF) and stops.
    std::thread::sleep(Duration::from_millis(500));

    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 2, "the interrupted trial and its retry");
    assert_eq!(state(&trials[0]), "FAIL");
    assert_eq!(trials[0]["error"], "interrupted");
    let retry = &trials[1];
    assert_eq!(state(retry), "COMPLETE");
    assert_eq!(retry["retry_of"], 0);
    assert_eq!(retry["params"], reference[0]["params"]);
    let resumed = retry["metrics"]["resumed_from_step"].as_u64().expect("the retry resumed from a checkpoint");
    assert!(resumed > 0, "{retry}");
    eprintln!("killed after {seen_at_kill} epoch(s); resumed from step {resumed}");

    // Same run: every epoch's valid metrics and the value agree with the uninterrupted run.
    let close = |a: &Value, b: &Value, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{what}: resumed {a} vs uninterrupted {b}");
    };
    close(&retry["value"], &reference[0]["value"], "value");
    let h_retry = retry["metrics"]["history"].as_array().expect("history");
    let h_ref = reference[0]["metrics"]["history"].as_array().expect("history");
    assert_eq!(h_retry.len(), h_ref.len());
    for (a, b) in h_retry.iter().zip(h_ref) {
        assert_eq!(a["step"], b["step"]);
        for k in ["loss", "accuracy", "f1_macro", "train_loss"] {
            close(&a["metrics"][k], &b["metrics"][k], &format!("epoch {} {k}", a["step"]));
        }
    }
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
        let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// Every file and folder under `dir`.
fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        if p.is_dir() {
            walk(&p, out);
        }
    }
}

/// Fault 1b: the orchestrator is killed twice: once after trial 0's first epoch, and again as
/// soon as its retry (trial 1) has started, before that retry writes any checkpoint. The
/// retry of the retry (trial 2) still resumes from trial 0's checkpoint, and its metrics are
/// those of an uninterrupted run, which it must reach without the interrupted retry's help.
/// (6,000 rows make an epoch long enough, about a second here, for the second kill to land
/// before the retry's first checkpoint; the test checks that it did.)
#[test]
fn a_retry_killed_before_its_first_checkpoint_costs_nothing() {
    let toy_dir = tempfile::tempdir().unwrap();
    let toy = sft_search::trainer::toy::write_toy_task(toy_dir.path(), 6000, 13).unwrap();
    let study =
        long_finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), "\n[execution]\nmax_retries = 2\n");
    let reference = StudyDir::new();
    reference.write("s.toml", &study);
    let out = reference.run(&["-q", "run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = reference.trials("s.toml");

    let d = StudyDir::new();
    d.write("s.toml", &study);
    let child = d.spawn(&["-q", "run", "s.toml"]);
    d.wait_for("s.toml", Duration::from_secs(120), "trial 0 past its first epoch", |t| {
        t.len() == 1 && state(&t[0]) == "RUNNING" && epochs_seen(&t[0]) >= 1
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    std::thread::sleep(Duration::from_millis(500));
    let child = d.spawn(&["-q", "run", "s.toml"]);
    let at_kill = d.wait_for("s.toml", Duration::from_secs(120), "the retry running", |t| t.len() == 2 && state(&t[1]) == "RUNNING");
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(epochs_seen(&at_kill[1]), 0, "the retry reported an epoch before the kill; it may have kept a checkpoint");
    let kept: Vec<_> =
        std::fs::read_dir(d.path().join("study.trials/1")).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(kept.iter().all(|n| n.to_string_lossy().starts_with('.')), "trial 1 kept a checkpoint: {kept:?}");

    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 3, "trial 0, its retry and the retry's retry");
    assert_eq!((state(&trials[0]), state(&trials[1])), ("FAIL", "FAIL"));
    let last = &trials[2];
    assert_eq!((state(last), &last["retry_of"]), ("COMPLETE", &Value::from(1)));
    assert!(last["metrics"]["resumed_from_step"].as_u64().unwrap_or(0) > 0, "trial 2 started from scratch: {last}");
    let (a, b) = (last["value"].as_f64().unwrap(), reference[0]["value"].as_f64().unwrap());
    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "resumed {a} vs uninterrupted {b}");
    let (h, h_ref) = (last["metrics"]["history"].as_array().unwrap(), reference[0]["metrics"]["history"].as_array().unwrap());
    assert_eq!(h.len(), h_ref.len());
    let loss = |e: &Value| e["metrics"]["loss"].as_f64().unwrap();
    let (a, b) = (loss(h.last().unwrap()), loss(h_ref.last().unwrap()));
    assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "final valid loss: resumed {a} vs uninterrupted {b}");
}

/// Fault 4: the disk "fills" while a checkpoint is written (the worker's file-size limit is
/// cut to 16 KiB after its first epoch, so the next write fails as on a full disk; tests run
/// as root, for whom a read-only folder is no obstacle). The trial fails with the write
/// error, no partial checkpoint remains, the store is intact, and the retry resumes from
/// the last complete checkpoint.
#[test]
fn a_failed_checkpoint_write_fails_the_trial_and_leaves_no_half_files() {
    let toy_dir = tempfile::tempdir().unwrap();
    let toy = sft_search::trainer::toy::write_toy_task(toy_dir.path(), 3000, 12).unwrap();
    let d = StudyDir::new();
    d.write("s.toml", &long_finetune_study(&toy.model_dir.display().to_string(), &toy.csv.display().to_string(), ""));
    let child = d.spawn(&["-q", "run", "s.toml"]);
    d.wait_for("s.toml", Duration::from_secs(120), "trial 0 past its first epoch", |t| {
        t.len() == 1 && state(&t[0]) == "RUNNING" && epochs_seen(&t[0]) >= 1
    });
    let workers = children_of(child.id());
    assert_eq!(workers.len(), 1, "one worker process: {workers:?}");
    let limit = libc::rlimit { rlim_cur: 16 * 1024, rlim_max: 16 * 1024 };
    // SAFETY: prlimit(2) on a process of ours, with a valid struct.
    let rc = unsafe { libc::prlimit(workers[0] as libc::pid_t, libc::RLIMIT_FSIZE, &limit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let trials = d.trials("s.toml");
    assert_eq!(state(&trials[0]), "FAIL", "{:?}", trials[0]);
    let error = trials[0]["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("io error: checkpoint") && error.contains("File too large"), "the reason names the write: {error}");
    // The retry resumes from the last complete checkpoint and finishes.
    let retry = trials.iter().find(|t| t["retry_of"] == 0).expect("a retry");
    assert_eq!(state(retry), "COMPLETE", "{retry}");
    assert!(retry["metrics"]["resumed_from_step"].as_u64().unwrap_or(0) > 0, "{retry}");

    // No temporary or partial checkpoint anywhere; every kept checkpoint loads.
    let mut all = Vec::new();
    walk(d.path(), &mut all);
    for p in &all {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(!name.starts_with(".tmp-"), "a temporary checkpoint remains: {}", p.display());
        if name == "model.safetensors" {
            let dir = p.parent().unwrap();
            candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            for f in ["config.json", "trainer_state.json"] {
                assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
            }
            // Once the retry is recorded COMPLETE, neither its folder nor the one it resumed
            // from keeps the optimizer state that only a resume reads.
            assert!(!dir.join("optimizer.safetensors").exists(), "{} keeps its optimizer state", dir.display());
        }
    }
    let db = rusqlite::Connection::open(d.path().join("study.db")).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
}

/// A trial killed mid-run whose retry is then pruned keeps no checkpoint at all: the retry's
/// folder and the one it resumed from both go, and the store forgets both `checkpoint`s
/// (nothing reads a pruned trial's weights). The completed trial keeps its own.
#[test]
fn a_killed_trial_whose_retry_is_pruned_leaves_no_checkpoint_behind() {
    let toy_dir = tempfile::tempdir().unwrap();
    let toy = sft_search::trainer::toy::write_toy_task(toy_dir.path(), 6000, 17).unwrap();
    // Trial 0 learns; trial 1 (a learning rate of 1e-7) stays near chance and is pruned by
    // the median rule at epoch 3, after being killed past its first epoch.
    let study = long_finetune_study(
        &toy.model_dir.display().to_string(),
        &toy.csv.display().to_string(),
        "\n[pruner]\nkind = \"median\"\nn_startup_trials = 1\nn_warmup_steps = 3\n\n[[enqueue]]\nlearning_rate = 3e-3\n\n[[enqueue]]\nlearning_rate = 1e-7\n",
    )
    .replace("n_trials = 1", "n_trials = 2")
    .replace("low = 1e-3, high = 3e-3", "low = 1e-7, high = 3e-3");
    let d = StudyDir::new();
    d.write("s.toml", &study);
    let child = d.spawn(&["-q", "run", "s.toml"]);
    let at_kill = d.wait_for("s.toml", Duration::from_secs(180), "trial 1 past its first epoch", |t| {
        t.len() == 2 && state(&t[1]) == "RUNNING" && epochs_seen(&t[1]) >= 1
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait_with_output();
    std::thread::sleep(Duration::from_millis(500));
    assert!(epochs_seen(&at_kill[1]) < 3, "trial 1 reached its pruning step before the kill; make the epochs longer");
    assert!(d.path().join("study.trials/1").is_dir(), "trial 1 kept no checkpoint before the kill");
    // Until the next `run`, the store still says RUNNING; `status` tells that its process is gone.
    let out = d.run(&["status", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("trial 1 for") && text.contains("its process is gone (interrupted)"), "{text}");
    let out = d.run(&["status", "s.toml", "--format", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((&status["running"][0]["number"], &status["running"][0]["orphaned"]), (&Value::from(1), &Value::Bool(true)), "{status}");
    assert_eq!(status["workers"][0]["gone"], Value::Bool(true), "{status}");

    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 3, "{trials:?}");
    assert_eq!(state(&trials[0]), "COMPLETE");
    assert_eq!((state(&trials[1]), &trials[1]["error"]), ("FAIL", &Value::from("interrupted")));
    let retry = &trials[2];
    assert_eq!((state(retry), &retry["retry_of"]), ("PRUNED", &Value::from(1)), "{retry}");
    assert!(retry["metrics"]["resumed_from_step"].as_u64().unwrap_or(0) > 0, "the retry started from scratch: {retry}");
    for n in [1, 2] {
        assert!(!d.path().join(format!("study.trials/{n}")).exists(), "trial {n} kept its folder");
        assert!(trials[n]["checkpoint"].is_null(), "trial {n}: {}", trials[n]["checkpoint"]);
    }
    let c = trials[0]["checkpoint"].as_str().expect("the completed trial keeps its checkpoint");
    assert!(std::path::Path::new(c).join("model.safetensors").is_file(), "{c}");
}

/// A slot whose device cannot be opened takes no more trials; the study finishes on the
/// others, and the failed trial's retry runs there. (The objective fails with a device error
/// on `cuda:1`, as the worker does for a GPU it cannot open.)
#[test]
fn a_slot_whose_device_cannot_open_retires_and_the_others_finish_the_study() {
    let d = StudyDir::new();
    d.python(
        "objective.py",
        "import json, os, sys\np = json.load(sys.stdin)\nif os.environ.get('CUDA_VISIBLE_DEVICES') == '1':\n    print(json.dumps({'error': 'device error: device `cuda:0`: no CUDA device 0'}), flush=True)\n    sys.exit(1)\nprint(json.dumps({'value': p['x']}))\n",
    );
    d.write("s.toml", &command_study("slots", 6, "[\"cuda:0\", \"cuda:1\"]", ""));
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("slot cuda:1: its device cannot be opened, so it takes no more trials"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    let failed: Vec<&Value> = trials.iter().filter(|t| state(t) == "FAIL").collect();
    assert_eq!(failed.len(), 1, "one trial failed on cuda:1, then that slot stopped: {trials:?}");
    assert_eq!(failed[0]["device"], "cuda:1");
    assert!(failed[0]["error"].as_str().unwrap().starts_with("device error: "), "{}", failed[0]);
    let complete: Vec<&Value> = trials.iter().filter(|t| state(t) == "COMPLETE").collect();
    assert_eq!(complete.len(), 6, "the budget is met on cuda:0: {trials:?}");
    assert!(complete.iter().all(|t| t["device"] == "cuda:0"));
    assert!(complete.iter().any(|t| t["retry_of"] == failed[0]["number"]), "the failed trial ran again on cuda:0");

    // With no working slot at all, the study stops at once, saying why.
    let d = StudyDir::new();
    d.python("objective.py", "import json, sys\nprint(json.dumps({'error': 'device error: no GPU here'}), flush=True)\nsys.exit(1)\n");
    d.write("s.toml", &command_study("noslots", 6, "[\"cuda:0\", \"cuda:1\"]", ""));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(1), "no trial completed: {}", stderr(&out));
    assert!(stderr(&out).contains("ended because no slot could open its device"), "{}", stderr(&out));
    assert_eq!(d.trials("s.toml").iter().filter(|t| state(t) == "FAIL").count(), 2, "one trial per slot");
}
