//! Whole studies on objectives that need no training.

use serde_json::Value;
use sft_search::objective::SyntheticFunction;
use sft_search::space::{Distribution, Param, SearchSpace};

use crate::util::*;

const BRANIN_GRID: &str = r#"[study]
name = "branin-grid"
direction = "minimize"
storage = "study.db"

[space]
x1 = { type = "float", low = -5, high = 10 }
x2 = { type = "float", low = 0, high = 15 }

[sampler]
kind = "grid"
grid_points = 7

[objective]
kind = "synthetic"
function = "branin"

[execution]
devices = ["cpu", "cpu"]
"#;

#[test]
fn grid_study_runs_the_whole_grid_and_best_is_the_grid_minimum() {
    let d = StudyDir::new();
    d.write("s.toml", BRANIN_GRID);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 49);
    assert_eq!(count(&trials, "COMPLETE"), 49);
    assert_numbers_unique(&trials);
    // No grid point twice.
    let mut points: Vec<(String, String)> = trials.iter().map(|t| (t["params"]["x1"].to_string(), t["params"]["x2"].to_string())).collect();
    points.sort();
    points.dedup();
    assert_eq!(points.len(), 49);
    // The best is the minimum of branin over the same 7x7 grid, computed here independently.
    let space = SearchSpace::new(vec![
        Param { name: "x1".into(), dist: Distribution::Float { low: -5.0, high: 10.0, log: false, step: None } },
        Param { name: "x2".into(), dist: Distribution::Float { low: 0.0, high: 15.0, log: false, step: None } },
    ])
    .unwrap();
    let grid_min = space.grid(7).iter().map(|p| SyntheticFunction::Branin.evaluate(p).unwrap()).fold(f64::INFINITY, f64::min);
    assert!((grid_min - 2.196106).abs() < 1e-5, "regret 1.798 on the 7x7 grid, as Optuna's anchor");
    let best = d.run(&["best", "s.toml", "--format", "json"]);
    let best: Value = serde_json::from_slice(&best.stdout).unwrap();
    assert!((best["value"].as_f64().unwrap() - grid_min).abs() < 1e-12);
    assert_eq!(best.as_object().unwrap().keys().cloned().collect::<Vec<_>>(), vec!["number", "params", "value"]);
    // Running again does nothing more: the grid is exhausted.
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success());
    assert_eq!(d.trials("s.toml").len(), 49);
}

#[test]
fn trials_json_has_exactly_the_documented_keys() {
    let d = StudyDir::new();
    d.write("s.toml", &BRANIN_GRID.replace("grid_points = 7", "grid_points = 2"));
    assert!(d.run(&["run", "s.toml"]).status.success());
    let trials = d.trials("s.toml");
    let keys: Vec<String> = trials[0].as_object().unwrap().keys().cloned().collect();
    let mut expected =
        vec!["number", "state", "params", "value", "metrics", "intermediate", "device", "started_at", "finished_at", "error", "retry_of"];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(trials[0]["device"], "cpu");
    // CSV and table formats carry every trial too.
    let csv = d.run(&["trials", "s.toml", "--format", "csv"]);
    assert_eq!(String::from_utf8_lossy(&csv.stdout).lines().count(), 5);
    let table = d.run(&["trials", "s.toml"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("COMPLETE"));
}

#[test]
fn random_study_is_deterministic_whatever_the_number_of_workers() {
    let study = |slots: &str| {
        let d = StudyDir::new();
        d.write(
            "s.toml",
            &format!(
                "[study]\nname = \"r\"\nn_trials = 12\nseed = 11\nstorage = \"study.db\"\n[space]\nlearning_rate = {{ type = \"float\", low = 1e-6, high = 1e-2, log = true }}\nbatch_size = {{ type = \"categorical\", choices = [8, 16, 32, 64] }}\nepochs = {{ type = \"int\", low = 1, high = 10 }}\nfreeze_layers = {{ type = \"int\", low = 0, high = 12 }}\n[objective]\nkind = \"synthetic\"\nfunction = \"sft-like\"\n[execution]\ndevices = {slots}\n"
            ),
        );
        assert!(d.run(&["run", "s.toml"]).status.success());
        let mut t: Vec<(u64, Value)> =
            d.trials("s.toml").into_iter().map(|t| (t["number"].as_u64().unwrap(), t["params"].clone())).collect();
        t.sort_by_key(|x| x.0);
        t
    };
    let one = study("[\"cpu\"]");
    let four = study("[\"cpu\", \"cpu\", \"cpu\", \"cpu\"]");
    assert_eq!(one.len(), 12);
    assert_eq!(one, four);
}

#[test]
fn a_changed_objective_is_refused_unless_allowed_and_a_bigger_budget_is_not() {
    let d = StudyDir::new();
    d.write("s.toml", &branin_gp(4));
    assert!(d.run(&["run", "s.toml"]).status.success());
    // More trials, other devices: the same study.
    d.write("s.toml", &branin_gp(5).replace("devices = [\"cpu\", \"cpu\"]", "devices = [\"cpu\"]"));
    assert!(d.run(&["run", "s.toml"]).status.success());
    assert_eq!(d.trials("s.toml").len(), 5);
    // Noise changes what a value means: refused before any trial, naming the key.
    d.write("s.toml", &branin_gp(7).replace("function = \"branin\"", "function = \"branin\"\nnoise = 0.5"));
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("`[objective] noise`: (not set) → 0.5") && stderr(&out).contains("--allow-setup-change"),
        "{}",
        stderr(&out)
    );
    assert_eq!(d.trials("s.toml").len(), 5);
    let out = d.run(&["run", "s.toml", "--allow-setup-change"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.trials("s.toml").len(), 7);
    // The study now keeps the changed file: the next run needs no flag.
    d.write("s.toml", &branin_gp(8).replace("function = \"branin\"", "function = \"branin\"\nnoise = 0.5"));
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.trials("s.toml").len(), 8);
}

#[test]
#[allow(clippy::approx_constant)] // 3.14159 is the value the test enqueues (near branin's optimum), not π
fn enqueued_trial_runs_first_with_its_parameters() {
    let d = StudyDir::new();
    d.write(
        "s.toml",
        &BRANIN_GRID
            .replace("kind = \"grid\"", "kind = \"random\"")
            .replace("grid_points = 7", "")
            .replace("storage = \"study.db\"", "storage = \"study.db\"\nn_trials = 3"),
    );
    let out = d.run(&["enqueue", "s.toml", "--param", "x1=3.14159", "--param", "x2=2.275"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bad = d.run(&["enqueue", "s.toml", "--param", "x1=30", "--param", "x2=2"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("x1") && stderr(&bad).contains("not allowed"), "{}", stderr(&bad));
    assert!(d.run(&["run", "s.toml"]).status.success());
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 3);
    assert_eq!(trials[0]["params"]["x1"], Value::from(3.14159));
    assert!((trials[0]["value"].as_f64().unwrap() - 0.397887).abs() < 1e-3);
}

/// The branin study with the GP sampler and a budget of `n` trials.
fn branin_gp(n: u64) -> String {
    BRANIN_GRID
        .replace("kind = \"grid\"", "kind = \"gp\"")
        .replace("grid_points = 7", "")
        .replace("storage = \"study.db\"", &format!("storage = \"study.db\"\nn_trials = {n}"))
}

#[test]
#[allow(clippy::approx_constant)] // 3.14159 is the value the study file queues, not π
fn study_file_points_run_first_and_are_queued_only_once() {
    let d = StudyDir::new();
    let study = |n: u64| branin_gp(n) + "\n[[enqueue]]\nx1 = 3.14159\nx2 = 2.275\n\n[[enqueue]]\nx1 = -3\nx2 = 12\n";
    d.write("s.toml", &study(4));
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("queued trial 0 from [[enqueue]]") && stderr(&out).contains("queued trial 1 from [[enqueue]]"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("starting study"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 4);
    assert_eq!((trials[0]["params"]["x1"].as_f64(), trials[0]["params"]["x2"].as_f64()), (Some(3.14159), Some(2.275)));
    assert_eq!((trials[1]["params"]["x1"].as_f64(), trials[1]["params"]["x2"].as_f64()), (Some(-3.0), Some(12.0)));
    // A larger budget resumes the study: the points are not queued again.
    d.write("s.toml", &study(6));
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("from [[enqueue]]"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 6);
    let at = |x1: f64| trials.iter().filter(|t| t["params"]["x1"].as_f64() == Some(x1)).count();
    assert_eq!((at(3.14159), at(-3.0)), (1, 1));
    assert!(trials.iter().all(|t| t["state"] == "COMPLETE"));
    // A point added at the end of the file later is queued then, and only it.
    d.write("s.toml", &(study(7) + "\n[[enqueue]]\nx1 = 9\nx2 = 1\n"));
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("queued trial 6 from [[enqueue]] #3: x1=9"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 7);
    assert_eq!((trials[6]["params"]["x1"].as_f64(), trials[6]["params"]["x2"].as_f64()), (Some(9.0), Some(1.0)));
    let at = |x1: f64| trials.iter().filter(|t| t["params"]["x1"].as_f64() == Some(x1)).count();
    assert_eq!((at(3.14159), at(-3.0)), (1, 1));
}

#[test]
fn partly_queued_points_keep_their_values_and_the_sampler_chooses_the_rest() {
    let d = StudyDir::new();
    let study = |n: u64| branin_gp(n) + "\n[[enqueue]]\nx1 = 9.5\n";
    d.write("s.toml", &study(7));
    let out = d.run(&["enqueue", "s.toml", "--param", "x2=2.5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(printed.contains("queued trial 0: x2=2.5; the sampler chooses x1"), "{printed}");
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("queued trial 1 from [[enqueue]] #1: x1=9.5; the sampler chooses x2"), "{}", stderr(&out));
    // Later, with a model: a partial point queued mid-study.
    d.write("s.toml", &study(8));
    assert!(d.run(&["enqueue", "s.toml", "--param", "x1=3.0"]).status.success());
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 8);
    assert!(trials.iter().all(|t| t["state"] == "COMPLETE"), "{trials:?}");
    let p = |i: usize, k: &str| trials[i]["params"][k].as_f64().unwrap();
    assert_eq!((p(0, "x2"), p(1, "x1"), p(7, "x1")), (2.5, 9.5, 3.0));
    for (i, free) in [(0, "x1"), (1, "x2"), (7, "x2")] {
        let (lo, hi) = if free == "x1" { (-5.0, 10.0) } else { (0.0, 15.0) };
        assert!((lo..=hi).contains(&p(i, free)), "trial {i}: {free} = {}", p(i, free));
    }
    // The free values are the sampler's, not a constant: the three differ.
    assert!(p(0, "x1") != p(1, "x2") && p(1, "x2") != p(7, "x2"));
    // An empty point in the study file is refused, naming it and the parameters.
    d.write("s.toml", &(study(8) + "\n[[enqueue]]\n"));
    let bad = d.run(&["run", "s.toml"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("enqueue[1]") && stderr(&bad).contains("no parameter given (give at least one of: x1, x2)"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn a_failing_command_fails_its_trial_and_the_study_goes_on() {
    let d = StudyDir::new();
    d.python(
        "objective.py",
        "import json, sys\np = json.load(sys.stdin)\nif p['k'] == 2:\n    print('boom: k is 2', file=sys.stderr)\n    sys.exit(3)\nfor s in range(3):\n    print(json.dumps({'step': s, 'value': p['x'] + 1.0 / (s + 1)}))\nprint(json.dumps({'value': p['x'], 'metrics': {'k_seen': p['k']}}))\n",
    );
    d.write("s.toml", &command_study("cmd", 10, "[\"cpu\", \"cpu\"]", ""));
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 10);
    let failed: Vec<&Value> = trials.iter().filter(|t| state(t) == "FAIL").collect();
    assert!(!failed.is_empty(), "with 10+ random draws of k in 1..4 some have k = 2");
    for f in &failed {
        assert_eq!(f["params"]["k"], 2);
        let e = f["error"].as_str().unwrap();
        assert!(e.contains("exit status 3") && e.contains("boom: k is 2"), "{e}");
        assert!(f["retry_of"].is_null());
    }
    // A trial's own failure is not retried.
    assert!(trials.iter().all(|t| t["retry_of"].is_null()));
    let ok = trials.iter().find(|t| state(t) == "COMPLETE").unwrap();
    assert_eq!(ok["intermediate"].as_array().unwrap().len(), 3);
    assert_eq!(ok["metrics"]["k_seen"], ok["params"]["k"]);
    assert_numbers_unique(&trials);
}

#[test]
fn nan_and_missing_results_fail_the_trial() {
    let d = StudyDir::new();
    d.python(
        "objective.py",
        "import json, sys\np = json.load(sys.stdin)\nif p['k'] % 2:\n    print('{\"value\": NaN}')\nelse:\n    print('no json here')\n",
    );
    d.write("s.toml", &command_study("nan", 2, "[\"cpu\"]", "max_retries = 0\nmax_consecutive_failures = 4"));
    let out = d.run(&["run", "s.toml"]);
    // Nothing completed: the study failed, and says so.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no trial completed"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(trials.len(), 4, "stops after 4 failures in a row");
    for t in &trials {
        assert_eq!(state(t), "FAIL");
        let e = t["error"].as_str().unwrap();
        if t["params"]["k"].as_i64().unwrap() % 2 == 1 {
            assert!(e.contains("NaN"), "{e}");
        } else {
            assert!(e.contains("no result line"), "{e}");
        }
    }
}

#[test]
fn params_reach_the_command_as_env_and_stdin() {
    let d = StudyDir::new();
    d.python(
        "objective.py",
        "import json, os, sys\np = json.load(sys.stdin)\nassert float(os.environ['SFT_PARAM_X']) == p['x']\nassert int(os.environ['SFT_PARAM_K']) == p['k']\nprint(json.dumps({'value': p['x'], 'metrics': {'trial': int(os.environ['SFT_TRIAL_NUMBER']), 'device': os.environ['SFT_DEVICE'], 'cvd': os.environ.get('CUDA_VISIBLE_DEVICES', '')}}))\n",
    );
    d.write("s.toml", &command_study("env", 3, "[\"cuda:3\"]", ""));
    assert!(d.run(&["run", "s.toml"]).status.success());
    for t in d.trials("s.toml") {
        assert_eq!(state(&t), "COMPLETE", "{t}");
        assert_eq!(t["metrics"]["trial"], t["number"]);
        assert_eq!(t["metrics"]["device"], "cuda:3");
        assert_eq!(t["metrics"]["cvd"], "3");
    }
}

#[test]
fn patience_ends_a_study_whose_best_stopped_improving() {
    // Random search on branin (minimise), 200 trials at most, patience 6 with min_delta 0.5:
    // the study ends at the first trial where six finished trials in a row have not beaten
    // the best by more than 0.5.
    let d = StudyDir::new();
    let text = BRANIN_GRID
        .replace("kind = \"grid\"", "kind = \"random\"")
        .replace("grid_points = 7", "")
        .replace("devices = [\"cpu\", \"cpu\"]", "devices = [\"cpu\"]")
        .replace("storage = \"study.db\"", "storage = \"study.db\"\nn_trials = 200\npatience = 6\nmin_delta = 0.5");
    d.write("s.toml", &text);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("the best value has not improved for 6 finished trials in a row"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert!(trials.len() < 200, "patience never fired");
    // Replay the rule on the recorded values: it holds at the end and at no earlier trial.
    let values: Vec<f64> = trials.iter().map(|t| t["value"].as_f64().unwrap()).collect();
    let since = |n: usize| {
        let (mut best, mut since) = (values[0], 0);
        for &v in &values[1..n] {
            if v < best - 0.5 {
                since = 0;
            } else {
                since += 1;
            }
            best = best.min(v);
        }
        since
    };
    assert_eq!(since(values.len()), 6);
    assert!((1..values.len()).all(|n| since(n) < 6), "the study should have ended earlier");
    // `ask` says the same, with its own exit status.
    let ask = d.run(&["ask", "s.toml"]);
    assert_eq!(ask.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&ask.stdout).unwrap();
    assert_eq!(v["reason"], "plateau");
}
