//! Plots and the report through the binary: from a study run by sft-search (a command
//! objective reporting steps), and from a study made by Optuna itself.

use crate::util::*;

#[test]
fn plot_and_report_a_study_we_ran() {
    let d = StudyDir::new();
    d.python(
        "objective.py",
        "import json, sys\np = json.load(sys.stdin)\nfor s in range(3):\n    print(json.dumps({'step': s, 'value': p['lr'] * (3 - s) + p['k']}))\nprint(json.dumps({'value': p['lr'] * 1000 + p['k']}))\n",
    );
    d.write(
        "s.toml",
        "[study]\nname = \"rep\"\ndirection = \"minimize\"\nn_trials = 6\nstorage = \"study.db\"\n[space]\nlr = { type = \"float\", low = 1e-5, high = 1e-2, log = true }\nk = { type = \"int\", low = 0, high = 8 }\n[objective]\nkind = \"command\"\ncommand = [\"python3\", \"objective.py\"]\n[execution]\ndevices = [\"cpu\", \"cpu\"]\n",
    );
    let o = d.run(&["run", "s.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = d.run(&["plot", "s.toml"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    for f in [
        "history.svg",
        "parallel.svg",
        "slice_lr.svg",
        "slice_k.svg",
        "contour.svg",
        "importance.svg",
        "learning_curves.svg",
        "timeline.svg",
    ] {
        let p = d.path().join("rep-plots").join(f);
        assert!(p.is_file(), "{f} missing; listed:\n{listed}");
        assert!(listed.contains(f));
    }
    // No per-epoch train loss and no test split: said on stderr, not written.
    assert!(stderr(&o).contains("skipped confusion: not enough data"), "{}", stderr(&o));
    let o = d.run(&["report", "s.toml", "--out", "out/r.html"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(d.path().join("out/r.html")).expect("report");
    assert_eq!(html.matches("<tr class=\"").count(), 6);
    assert!(html.contains("random (seed"), "sampler shown");
}

#[test]
fn report_a_study_made_by_optuna() {
    if !have_optuna() {
        return;
    }
    let d = StudyDir::new();
    let script = r#"
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.create_study(study_name="theirs", storage="sqlite:///optuna.db", direction="maximize")
def obj(t):
    lr = t.suggest_float("lr", 1e-5, 1e-1, log=True)
    opt = t.suggest_categorical("opt", ["adam", "sgd"])
    for step in range(4):
        t.report(lr * step, step)
    if t.number == 3:
        raise optuna.TrialPruned()
    if t.number == 4:
        raise ValueError("boom")
    return lr + (0.1 if opt == "adam" else 0.0)
s.optimize(obj, n_trials=8, catch=(ValueError,))
"#;
    d.python_ok(script);
    let o = d.run(&["plot", "optuna.db", "--format", "png", "--out", "p"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["history.png", "parallel.png", "slice_lr.png", "slice_opt.png", "learning_curves.png"] {
        let bytes = std::fs::read(d.path().join("p").join(f)).unwrap_or_default();
        assert!(bytes.starts_with(b"\x89PNG"), "{f}");
    }
    let o = d.run(&["report", "optuna.db"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(d.path().join("theirs-report.html")).expect("report");
    assert_eq!(html.matches("<tr class=\"").count(), 8);
    assert!(html.contains("<tr class=\"PRUNED\"><td class=\"num\">3</td>"));
    assert!(html.contains("<tr class=\"FAIL\"><td class=\"num\">4</td>"));
    assert!(html.contains("lr (log)"), "the log scale comes from Optuna's distribution");
}
