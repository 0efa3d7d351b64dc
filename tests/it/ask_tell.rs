//! `ask` and `tell`: the user's own program runs the trials and the study only samples and
//! records. Driven through the binary as a training script would drive it.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// The objective of these tests, computed here exactly as `objective.py` computes it.
fn objective(params: &Value) -> f64 {
    let x = params["x"].as_f64().expect("x");
    let k = params["k"].as_i64().expect("k") as f64;
    let d = x - 0.3;
    d * d + 0.1 * k
}

const OBJECTIVE_PY: &str =
    "import json, sys\np = json.load(sys.stdin)\nd = p['x'] - 0.3\nprint(json.dumps({'value': d * d + 0.1 * p['k']}))\n";

fn gp_command_study(n: u64) -> String {
    command_study("asked", n, "[\"cpu\"]", "").replace("kind = \"random\"", "kind = \"gp\"\nn_startup = 4")
}

fn external_study(n: u64, pruner: &str) -> String {
    format!(
        "[study]\nname = \"ext\"\ndirection = \"minimize\"\nmetric = \"loss\"\nn_trials = {n}\nseed = 3\nstorage = \"study.db\"\n\
         [space]\nx = {{ type = \"float\", low = 0.0, high = 1.0 }}\nk = {{ type = \"int\", low = 1, high = 4 }}\n\
         [sampler]\nkind = \"gp\"\nn_startup = 4\n[objective]\nkind = \"external\"\n{pruner}"
    )
}

fn ask(d: &StudyDir) -> (Option<Value>, std::process::Output) {
    let out = d.run(&["ask", "s.toml"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("ask prints JSON: {}", stderr(&out)));
    ((out.status.code() == Some(0)).then_some(v), out)
}

fn tell(d: &StudyDir, args: &[&str]) -> Value {
    let out = d.run(&[&["tell", "s.toml"], args].concat());
    assert!(out.status.success(), "tell {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("tell prints JSON")
}

fn t_number(n: &str) -> Value {
    serde_json::from_str(n).expect("a trial number")
}

fn params_by_number(trials: &[Value]) -> Vec<(u64, Value)> {
    let mut v: Vec<(u64, Value)> = trials.iter().map(|t| (t["number"].as_u64().unwrap(), t["params"].clone())).collect();
    v.sort_by_key(|x| x.0);
    v
}

#[test]
fn an_ask_tell_loop_gets_the_trials_run_would_and_stops_at_the_budget() {
    // `run` evaluates the objective itself, one trial after another.
    let ran = StudyDir::new();
    ran.python("objective.py", OBJECTIVE_PY);
    ran.write("s.toml", &gp_command_study(10));
    let out = ran.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The same study, each trial asked for and told by "the user's program" (this test).
    let asked = StudyDir::new();
    asked.write("s.toml", &gp_command_study(10));
    let mut told = 0;
    loop {
        let (trial, out) = ask(&asked);
        let Some(trial) = trial else {
            assert_eq!(out.status.code(), Some(3), "an ask past the budget exits 3: {}", stderr(&out));
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!((v["number"].clone(), v["reason"].as_str()), (Value::Null, Some("budget_reached")));
            assert!(stderr(&out).contains("the budget of 10 trials is reached"), "{}", stderr(&out));
            break;
        };
        let n = trial["number"].as_u64().unwrap().to_string();
        let value = objective(&trial["params"]);
        let r = tell(&asked, &["--trial", &n, "--value", &value.to_string(), "--metric", "half=0.5"]);
        assert_eq!((r["state"].as_str(), r["value"].as_f64()), (Some("COMPLETE"), Some(value)));
        told += 1;
        assert!(told <= 10, "ask kept handing out trials past the budget");
    }
    assert_eq!(told, 10);
    let trials = asked.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 10);
    assert!(trials.iter().all(|t| t["device"] == "external" && t["metrics"]["half"] == 0.5), "{trials:?}");
    // The sampler saw the same history at every step, so it made the same suggestions.
    assert_eq!(params_by_number(&asked.trials("s.toml")), params_by_number(&ran.trials("s.toml")));
    let best: Value = serde_json::from_slice(&asked.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
    assert!(best["value"].as_f64().unwrap() < 0.1 + 0.01, "the GP finds x ≈ 0.3, k = 1 in 10 trials: {best}");
}

#[test]
fn trials_asked_at_once_differ_and_are_nobody_s_orphans() {
    let d = StudyDir::new();
    d.write("s.toml", &external_study(12, ""));
    // Past the start-up: four trials told, then four asked at once (four GPUs of a cluster).
    for _ in 0..4 {
        let (t, _) = ask(&d);
        let t = t.expect("a trial");
        tell(&d, &["--trial", &t["number"].to_string(), "--value", &objective(&t["params"]).to_string()]);
    }
    let running: Vec<Value> = (0..4).map(|_| ask(&d).0.expect("a trial")).collect();
    let mut points: Vec<String> = running.iter().map(|t| t["params"].to_string()).collect();
    points.sort();
    points.dedup();
    assert_eq!(points.len(), 4, "the GP counts asked trials as pending: {running:?}");

    let status: Value = serde_json::from_slice(&d.run(&["status", "s.toml", "--format", "json"]).stdout).unwrap();
    let shown = status["running"].as_array().unwrap();
    assert_eq!(shown.len(), 4);
    assert!(shown.iter().all(|r| r["asked"] == true && r["orphaned"] == false), "{status}");
    let text = String::from_utf8_lossy(&d.run(&["status", "s.toml"]).stdout).to_string();
    assert!(text.contains("asked: your program runs it and ends it with `sft-search tell`"), "{text}");

    // `run` has nothing to run for an external objective, and says what to do instead.
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("kind = \"external\"") && stderr(&out).contains("sft-search ask"), "{}", stderr(&out));

    // A lost job is failed by hand; a NaN result fails the trial, saying so.
    let n = |i: usize| running[i]["number"].to_string();
    assert_eq!(tell(&d, &["--trial", &n(0), "--state", "fail", "--error", "node lost"])["state"], "FAIL");
    assert_eq!(tell(&d, &["--trial", &n(1), "--value", "NaN"])["state"], "FAIL");
    let trials = d.trials("s.toml");
    let by = |i: usize| trials.iter().find(|t| t["number"] == running[i]["number"]).unwrap().clone();
    assert_eq!(by(0)["error"], "node lost");
    assert_eq!(by(1)["error"], "the told value is NaN");
    assert_eq!(state(&by(2)), "RUNNING");
}

#[test]
fn intermediate_values_are_judged_by_the_study_s_pruner() {
    let d = StudyDir::new();
    d.write("s.toml", &external_study(10, "[pruner]\nkind = \"median\"\nn_startup_trials = 2\n"));
    // Two trials that report falling values and complete.
    for _ in 0..2 {
        let t = ask(&d).0.expect("a trial");
        let n = t["number"].to_string();
        for (step, v) in [(1, "0.5"), (2, "0.3")] {
            let r = tell(&d, &["--trial", &n, "--step", &step.to_string(), "--value", v, "--metric", "acc=0.7"]);
            assert_eq!((r["pruned"].as_bool(), r["state"].as_str()), (Some(false), Some("RUNNING")), "{r}");
        }
        tell(&d, &["--trial", &n, "--value", "0.3"]);
    }
    // A third that is far worse at step 1: the median pruner stops it, and says so.
    let t = ask(&d).0.expect("a trial");
    let n = t["number"].to_string();
    let r = tell(&d, &["--trial", &n, "--step", "1", "--value", "5.0"]);
    assert_eq!((r["pruned"].as_bool(), r["state"].as_str(), r["step"].as_i64()), (Some(true), Some("PRUNED"), Some(1)), "{r}");
    let trials = d.trials("s.toml");
    let pruned = trials.iter().find(|t| t["number"] == t_number(&n)).unwrap();
    assert_eq!((state(pruned), pruned["value"].as_f64()), ("PRUNED", Some(5.0)));
    assert_eq!(trials[0]["intermediate"], serde_json::json!([[1, 0.5], [2, 0.3]]));

    // It has ended: telling it again is an error naming its state, unless asked to skip.
    let out = d.run(&["tell", "s.toml", "--trial", &n, "--value", "0.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is PRUNED") && stderr(&out).contains("--skip-if-finished"), "{}", stderr(&out));
    let r = tell(&d, &["--trial", &n, "--value", "0.1", "--skip-if-finished"]);
    assert_eq!((r["state"].as_str(), r["value"].as_f64()), (Some("PRUNED"), Some(5.0)));
    // A trial the study does not have.
    let out = d.run(&["tell", "s.toml", "--trial", "99", "--value", "0.1"]);
    assert!(stderr(&out).contains("has no trial 99"), "{}", stderr(&out));
}

#[test]
fn a_run_beside_an_asked_trial_leaves_it_to_its_program() {
    let d = StudyDir::new();
    d.python("objective.py", &format!("import time\ntime.sleep(1.0)\n{OBJECTIVE_PY}"));
    // Heartbeats every second and a 2 s timeout: a RUNNING trial with no heartbeat would be
    // taken for an orphan within seconds, were it not asked.
    d.write(
        "s.toml",
        &command_study("beside", 3, "[\"cpu\"]", "heartbeat_interval = \"1s\"\nheartbeat_timeout = \"2s\"\n")
            .replace("kind = \"random\"", "kind = \"gp\""),
    );
    let asked = ask(&d).0.expect("a trial");
    let number = asked["number"].as_u64().unwrap();
    let mut run = d.spawn(&["run", "s.toml"]);
    // A trial that `run` runs cannot be told.
    let theirs = d.wait_for("s.toml", Duration::from_secs(60), "a trial run by `run`", |t| {
        t.iter().any(|t| state(t) == "RUNNING" && t["number"] != number)
    });
    let theirs = theirs.iter().find(|t| state(t) == "RUNNING" && t["number"] != number).unwrap()["number"].to_string();
    let out = d.run(&["tell", "s.toml", "--trial", &theirs, "--value", "1"]);
    assert!(stderr(&out).contains("is run by `sft-search run`") || stderr(&out).contains("is COMPLETE"), "{}", stderr(&out));
    // `run` completes the other two trials of the budget, then waits for the asked one.
    d.wait_for("s.toml", Duration::from_secs(120), "two trials run by `run`", |t| count(t, "COMPLETE") == 2);
    std::thread::sleep(Duration::from_secs(4));
    let trials = d.trials("s.toml");
    let still = trials.iter().find(|t| t["number"] == number).unwrap();
    assert_eq!(state(still), "RUNNING", "run must not take an asked trial for an orphan: {still}");
    assert!(run.try_wait().unwrap().is_none(), "run waits while the budget's last trial runs");

    tell(&d, &["--trial", &number.to_string(), "--value", &objective(&asked["params"]).to_string()]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = run.kill();
            panic!("run did not end once the asked trial was told");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 3);
    assert_eq!(count(&trials, "FAIL"), 0);
}

#[test]
fn the_shipped_external_example_runs_as_two_jobs() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("studies/examples");
    let d = StudyDir::new();
    for f in ["external.toml", "external_job.py"] {
        std::fs::copy(root.join(f), d.path().join(f)).unwrap();
    }
    let job = || {
        std::process::Command::new("python3")
            .args(["external_job.py", "external.toml"])
            .current_dir(d.path())
            .env("SFT_SEARCH", bin())
            .output()
            .expect("python3")
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(job);
        let b = s.spawn(job);
        (a.join().unwrap(), b.join().unwrap())
    });
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", stderr(o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("no trial left: budget_"), "{}", String::from_utf8_lossy(&o.stdout));
    }
    let trials = d.trials("external.toml");
    assert_numbers_unique(&trials);
    assert_eq!(count(&trials, "COMPLETE") + count(&trials, "PRUNED"), 16);
    for t in &trials {
        assert_eq!(t["params"].get("momentum").is_some(), t["params"]["optimizer"] == "sgd", "{}", t["params"]);
        assert_eq!(t["device"], "external");
    }
}
