//! Pruning through the binary: ASHA on a synthetic learning curve, recorded in the store and
//! shown by `trials`.

use crate::util::*;

const SFT_ASHA: &str = r#"[study]
name = "sft-asha"
direction = "minimize"
n_trials = 30
seed = 3
storage = "study.db"

[space]
learning_rate = { type = "float", low = 1e-6, high = 1e-2, log = true }
batch_size = { type = "categorical", choices = [8, 16, 32, 64] }
epochs = { type = "int", low = 1, high = 10 }
freeze_layers = { type = "int", low = 0, high = 12 }

[objective]
kind = "synthetic"
function = "sft-like"
steps = 2

[execution]
devices = ["cpu", "cpu"]

[pruner]
kind = "asha"
min_resource = 2
reduction_factor = 3
"#;

#[test]
fn asha_prunes_on_rungs_and_records_them() {
    let d = StudyDir::new();
    d.write("s.toml", SFT_ASHA);
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE") + count(&trials, "PRUNED"), 30);
    assert!(count(&trials, "PRUNED") >= 5, "ASHA with η = 3 prunes most trials: {}", count(&trials, "PRUNED"));
    for t in trials.iter().filter(|t| state(t) == "PRUNED") {
        let p = &t["pruning"];
        let rungs = p["rungs"].as_array().expect("a pruned trial records its rungs");
        let last = rungs.last().expect("pruned at a rung");
        // Pruned where it crossed its last rung (steps 2, 6, 18), keeping that value.
        assert_eq!(p["pruned_at_step"], last["step"], "{t}");
        assert!([2, 6, 18].contains(&last["step"].as_i64().unwrap()), "{t}");
        assert_eq!(t["value"], last["value"], "{t}");
        assert_eq!(t["intermediate"].as_array().unwrap().last().unwrap()[0], last["step"], "{t}");
    }
    // A trial's value at every step was stored, and completed ones end at their final value.
    for t in trials.iter().filter(|t| state(t) == "COMPLETE") {
        let curve = t["intermediate"].as_array().unwrap();
        let epochs = t["params"]["epochs"].as_i64().unwrap();
        assert_eq!(curve.len() as i64, 2 * epochs, "{t}");
        assert_eq!(curve.last().unwrap()[1], t["value"], "{t}");
    }
    let table = d.run(&["trials", "s.toml"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("pruned at step"), "{}", String::from_utf8_lossy(&table.stdout));
}
