//! Conditional parameters (`when`) through the binary: each trial holds exactly the
//! parameters that apply to it, for every sampler, for queued points and in Optuna's eyes.

use serde_json::Value;

use crate::util::*;

const OBJECTIVE_PY: &str = "import json, math, sys\n\
p = json.load(sys.stdin)\n\
lr = math.log10(p['lr'])\n\
if p['optimizer'] == 'sgd':\n    v = (lr + 1.5) ** 2 + 4 * (p['momentum'] - 0.9) ** 2\n\
else:\n    assert 'momentum' not in p\n    v = (lr + 3.5) ** 2 + 0.3 + (0.05 if p['amsgrad'] == 'yes' else 0)\n\
print(json.dumps({'value': v}))\n";

fn study(sampler: &str, n: u64) -> String {
    format!(
        r#"[study]
name = "cond"
direction = "minimize"
n_trials = {n}
seed = 2
storage = "study.db"

[space]
lr = {{ type = "float", low = 1e-5, high = 1.0, log = true }}
optimizer = ["adamw", "sgd"]
momentum = {{ type = "float", low = 0.0, high = 0.99, when = {{ optimizer = "sgd" }} }}
amsgrad = {{ choices = ["yes", "no"], when = {{ optimizer = ["adamw"] }} }}

[sampler]
kind = "{sampler}"
grid_points = 2

[objective]
kind = "command"
command = ["python3", "objective.py"]
"#
    )
}

/// Every trial holds lr and optimizer, momentum exactly under SGD, amsgrad exactly under AdamW.
fn assert_holds_what_applies(trials: &[Value]) {
    for t in trials {
        let p = t["params"].as_object().expect("params");
        let sgd = p["optimizer"] == "sgd";
        let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
        keys.sort();
        let want = if sgd { vec!["lr", "momentum", "optimizer"] } else { vec!["amsgrad", "lr", "optimizer"] };
        assert_eq!(keys, want, "trial {}: {p:?}", t["number"]);
    }
}

#[test]
fn every_sampler_gives_each_trial_exactly_the_parameters_that_apply() {
    for (sampler, n) in [("gp", 30), ("random", 10), ("grid", 40)] {
        let d = StudyDir::new();
        d.python("objective.py", OBJECTIVE_PY);
        d.write("s.toml", &study(sampler, n));
        let out = d.run(&["run", "s.toml"]);
        assert!(out.status.success(), "{sampler}: {}", stderr(&out));
        let trials = d.trials("s.toml");
        assert_eq!(count(&trials, "FAIL"), 0, "{sampler}: the objective asserts momentum is absent under AdamW");
        assert_holds_what_applies(&trials);
        if sampler == "grid" {
            // lr 2 values: AdamW 2 × 2 (amsgrad), SGD 2 × 2 (momentum) — 8 points, not the
            // 16 of the full product; the grid then has nothing left.
            assert_eq!(count(&trials, "COMPLETE"), 8, "{}", stderr(&out));
        }
        if sampler == "gp" {
            let best: Value = serde_json::from_slice(&d.run(&["best", "s.toml", "--format", "json"]).stdout).unwrap();
            // AdamW's best is 0.3; SGD's valley reaches 0.
            assert!(best["value"].as_f64().unwrap() < 0.05, "the GP finds SGD's valley: {best}");
            assert_eq!(best["params"]["optimizer"], "sgd");
            // The plots that cross parameters draw trials with missing ones too.
            let plots = d.run(&["plot", "s.toml", "--out", "plots"]);
            assert!(plots.status.success(), "{}", stderr(&plots));
            for plot in ["parallel.svg", "importance.svg", "slice_momentum.svg"] {
                assert!(d.path().join("plots").join(plot).is_file(), "{plot} missing: {}", stderr(&plots));
            }
        }
    }
}

#[test]
fn a_queued_parent_gets_its_children_and_a_child_alone_is_refused() {
    let d = StudyDir::new();
    d.python("objective.py", OBJECTIVE_PY);
    d.write("s.toml", &study("gp", 6));
    let out = d.run(&["enqueue", "s.toml", "--param", "momentum=0.5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("parameter `momentum` applies only when `optimizer` = \"sgd\" (give that parameter too)"),
        "{}",
        stderr(&out)
    );
    let out = d.run(&["enqueue", "s.toml", "--param", "optimizer=adamw", "--param", "momentum=0.5"]);
    assert!(stderr(&out).contains("applies only when"), "{}", stderr(&out));
    let out = d.run(&["enqueue", "s.toml", "--param", "optimizer=sgd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("the sampler chooses lr, momentum"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(d.run(&["run", "s.toml"]).status.success());
    let trials = d.trials("s.toml");
    assert_eq!(trials[0]["params"]["optimizer"], "sgd");
    assert_holds_what_applies(&trials);
}

#[test]
fn optuna_reads_a_conditional_study() {
    if !have_optuna() {
        return;
    }
    let d = StudyDir::new();
    d.python("objective.py", OBJECTIVE_PY);
    d.write("s.toml", &study("gp", 12));
    assert!(d.run(&["run", "s.toml"]).status.success());
    let out = d.python_ok(
        "import optuna\noptuna.logging.set_verbosity(optuna.logging.WARNING)\n\
         s = optuna.load_study(study_name='cond', storage='sqlite:///study.db')\n\
         for t in s.trials:\n    print(t.number, sorted(t.params), sorted(t.distributions))\n",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let trials = d.trials("s.toml");
    for t in &trials {
        let mut keys: Vec<String> = t["params"].as_object().unwrap().keys().cloned().collect();
        keys.sort();
        let line = format!("{} {keys:?} {keys:?}", t["number"]).replace('"', "'");
        assert!(text.lines().any(|l| l == line), "Optuna's view of trial {} is not ours ({line}):\n{text}", t["number"]);
    }
}
