//! Optuna reads our studies, and we read Optuna's. Needs Python with `optuna`; `.ci/run`
//! installs it and sets SFT_REQUIRE_OPTUNA=1 so the test cannot silently skip there.

use std::process::Command;

use serde_json::Value;

use crate::util::*;

#[test]
fn optuna_loads_our_study_trial_by_trial() {
    if !have_optuna() {
        return;
    }
    let d = StudyDir::new();
    d.python(
        "objective.py",
        "import json, sys\np = json.load(sys.stdin)\nif p['opt'] == 'bad':\n    sys.exit(1)\nfor s in range(2):\n    print(json.dumps({'step': s, 'value': p['lr'] * (2 - s)}))\nprint(json.dumps({'value': p['lr'] * 1000 + p['k'] + (0.5 if p['flag'] else 0)}))\n",
    );
    d.write(
        "s.toml",
        "[study]\nname = \"interop\"\ndirection = \"maximize\"\nn_trials = 6\nstorage = \"study.db\"\n[space]\nlr = { type = \"float\", low = 1e-5, high = 1e-2, log = true }\nk = { type = \"int\", low = 0, high = 8, step = 2 }\nopt = { type = \"categorical\", choices = [\"adamw\", \"sgd\", \"bad\"] }\nflag = { type = \"categorical\", choices = [true, false] }\nbs = { type = \"categorical\", choices = [16, 32] }\n[objective]\nkind = \"command\"\ncommand = [\"python3\", \"objective.py\"]\n[execution]\nmax_retries = 0\n",
    );
    assert!(d.run(&["run", "s.toml"]).status.success());
    let ours = d.trials("s.toml");
    let script = r#"
import json, optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.load_study(study_name="interop", storage="sqlite:///study.db")
out = {"direction": s.direction.name, "metric_names": s.metric_names, "trials": []}
for t in s.trials:
    out["trials"].append({"number": t.number, "state": t.state.name, "params": t.params, "value": t.value,
        "intermediate": sorted([[k, v] for k, v in t.intermediate_values.items()]),
        "dists": {k: optuna.distributions.distribution_to_json(v) for k, v in t.distributions.items()}})
if len(s.get_trials(states=[optuna.trial.TrialState.COMPLETE])) >= 2:
    imp = optuna.importance.get_param_importances(s)
    out["importance_params"] = sorted(imp.keys())
    optuna.visualization.matplotlib  # imported lazily; plotting functions need no backend here
    fig = optuna.visualization.plot_optimization_history(s)
    out["history_points"] = len(fig.data[0].x)
print(json.dumps(out))
"#;
    let o = d.python_ok(script);
    let theirs: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(theirs["direction"], "MAXIMIZE");
    assert_eq!(theirs["metric_names"], serde_json::json!(["value"]));
    let tt = theirs["trials"].as_array().unwrap();
    assert_eq!(tt.len(), ours.len());
    for (a, b) in ours.iter().zip(tt) {
        assert_eq!(a["number"], b["number"]);
        assert_eq!(a["state"], b["state"]);
        assert_eq!(a["params"], b["params"], "trial {}", a["number"]);
        assert_eq!(a["value"], b["value"]);
        assert_eq!(a["intermediate"], b["intermediate"]);
    }
    let dists = &tt[0]["dists"];
    assert!(dists["lr"].as_str().unwrap().contains("\"log\": true"));
    assert!(dists["opt"].as_str().unwrap().contains("CategoricalDistribution"));
    if theirs.get("importance_params").is_some() {
        assert_eq!(theirs["importance_params"], serde_json::json!(["bs", "flag", "k", "lr", "opt"]));
    }
}

#[test]
fn we_read_a_study_made_by_optuna() {
    if !have_optuna() {
        return;
    }
    let d = StudyDir::new();
    let script = r#"
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.create_study(study_name="made-by-optuna", storage="sqlite:///optuna.db", direction="minimize")
s.enqueue_trial({"x": 0.5, "c": "b", "n": 3})
def f(t):
    x = t.suggest_float("x", 0.1, 10, log=True)
    c = t.suggest_categorical("c", ["a", "b"])
    n = t.suggest_int("n", 1, 5)
    t.report(x * 2, 0)
    if n == 5:
        raise optuna.TrialPruned()
    return x + n
s.optimize(f, n_trials=5)
"#;
    d.python_ok(script);
    let st = d.run(&["status", "optuna.db", "--format", "json"]);
    assert!(st.status.success(), "{}", stderr(&st));
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v["study"], "made-by-optuna");
    let total: u64 = v["counts"].as_object().unwrap().values().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(total, 5);
    let out = d.run(&["trials", "optuna.db", "--format", "json"]);
    let trials: Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &trials[0];
    assert_eq!(first["params"], serde_json::json!({"x": 0.5, "c": "b", "n": 3}));
    assert_eq!(first["value"].as_f64(), Some(3.5));
    assert_eq!(first["intermediate"], serde_json::json!([[0, 1.0]]));
    let best = d.run(&["best", "optuna.db", "--format", "json"]);
    assert!(best.status.success());
}

#[test]
fn we_run_a_partial_point_optuna_queued() {
    if !have_optuna() {
        return;
    }
    let d = StudyDir::new();
    let script = r#"
import optuna
optuna.logging.set_verbosity(optuna.logging.WARNING)
s = optuna.create_study(study_name="oi", storage="sqlite:///oi.db", direction="minimize")
def f(t):
    return t.suggest_float("x1", -5, 10) + t.suggest_float("x2", 0, 15)
s.optimize(f, n_trials=3)
s.enqueue_trial({"x1": 9.5})
"#;
    d.python_ok(script);
    d.write(
        "s.toml",
        "[study]\nname = \"oi\"\ndirection = \"minimize\"\nn_trials = 5\nstorage = \"oi.db\"\n[space]\nx1 = { type = \"float\", low = -5.0, high = 10.0 }\nx2 = { type = \"float\", low = 0.0, high = 15.0 }\n[sampler]\nkind = \"gp\"\n[objective]\nkind = \"synthetic\"\nfunction = \"branin\"\n",
    );
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Optuna reads trial 3 back complete, with the queued x1 and the x2 we chose.
    let check = r#"
import optuna
t = optuna.load_study(study_name="oi", storage="sqlite:///oi.db").trials[3]
assert t.state == optuna.trial.TrialState.COMPLETE, t.state
assert t.params["x1"] == 9.5 and 0 <= t.params["x2"] <= 15, t.params
assert t.system_attrs["fixed_params"] == {"x1": 9.5}, t.system_attrs
print("ok")
"#;
    let o = d.python_ok(check);
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
}

#[test]
fn optuna_dashboard_serves_our_study() {
    if !have_optuna() {
        return;
    }
    let d = StudyDir::new();
    d.python("objective.py", "import json, sys\np = json.load(sys.stdin)\nprint(json.dumps({'step': 1, 'value': p['x'] * 2}))\nprint(json.dumps({'value': p['x']}))\n");
    d.write("s.toml", &command_study("dash", 4, "[\"cuda:1\"]", ""));
    assert!(d.run(&["run", "s.toml"]).status.success());
    // The dashboard's own WSGI app, called in-process (no server, no network).
    let script = r#"
import io, json
from optuna_dashboard import wsgi
app = wsgi("sqlite:///study.db")
def get(path):
    status = {}
    def start_response(s, headers, exc_info=None):
        status["s"] = s
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "localhost",
           "SERVER_PORT": "80", "wsgi.input": io.BytesIO(b""), "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO()}
    body = b"".join(app(env, start_response))
    assert status["s"].startswith("200"), (path, status, body[:500])
    return json.loads(body)
summaries = get("/api/studies")["study_summaries"]
detail = get("/api/studies/%d" % summaries[0]["study_id"])
print(json.dumps({"name": summaries[0]["study_name"], "trials": [
    {"number": t["number"], "state": t["state"], "values": t["values"], "device": {a["key"]: a["value"] for a in t["user_attrs"]}.get("device"),
     "steps": [iv["step"] for iv in t["intermediate_values"]]} for t in detail["trials"]]}))
"#;
    let have_dashboard = Command::new("python3").args(["-c", "import optuna_dashboard"]).output().is_ok_and(|o| o.status.success());
    if !have_dashboard {
        assert!(std::env::var("SFT_REQUIRE_OPTUNA").is_err(), "SFT_REQUIRE_OPTUNA is set but optuna_dashboard is missing");
        eprintln!("skipped: python3 cannot import optuna_dashboard");
        return;
    }
    let o = d.python_ok(script);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["name"], "dash");
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    for t in trials {
        assert_eq!(t["state"], "Complete");
        assert_eq!(t["device"], "cuda:1");
        assert_eq!(t["steps"], serde_json::json!([1]));
        assert_eq!(t["values"].as_array().unwrap().len(), 1);
    }
}
