//! Table-driven tests: every kind of mistake in a study file names file, line, column and key.

use super::*;

const GOOD: &str = r#"
[study]
name = "demo"
direction = "minimize"
n_trials = 10

[space]
x1 = { type = "float", low = -5, high = 10 }
x2 = { type = "float", low = 0.0, high = 15.0 }

[sampler]
kind = "random"

[objective]
kind = "synthetic"
function = "branin"
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_good_file_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "s.toml", GOOD);
    let c = StudyConfig::load(&p).unwrap();
    assert_eq!(c.name, "demo");
    assert_eq!(c.n_trials, Some(10));
    assert_eq!(c.space.len(), 2);
    assert_eq!(c.storage, dir.path().join("demo.db"));
    assert_eq!(c.execution.slots(), vec!["cpu".to_string()]);
    assert_eq!(c.objective, ObjectiveConfig::Synthetic { function: SyntheticFunction::Branin, noise: 0.0, curve: None });
}

/// (what is broken, the replacement made to GOOD, the line, the key, a piece of the message)
const CASES: &[(&str, &str, &str, usize, &str, &str)] = &[
    ("unknown key", "n_trials = 10", "n_trials = 10\nbogus = 1", 6, "study.bogus", "unknown field"),
    ("misspelt key", "n_trials = 10", "n_trial = 10", 5, "study.n_trial", "did you mean `n_trials`?"),
    (
        "a space file named below [study]",
        "n_trials = 10",
        "n_trials = 10\nspace = \"s.toml\"",
        6,
        "study.space",
        "`space` is a top-level key, but a key written below a [table] header belongs to that table (here [study])",
    ),
    ("wrong type", "n_trials = 10", "n_trials = \"ten\"", 5, "study.n_trials", "invalid type"),
    ("low >= high", "low = -5, high = 10", "low = 10, high = 10", 8, "space.x1", "must be below high"),
    ("log with low <= 0", "low = -5, high = 10 }", "low = 0, high = 10, log = true }", 8, "space.x1", "low > 0"),
    (
        "empty choices",
        "x2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "x2 = { type = \"categorical\", choices = [] }",
        9,
        "space.x2",
        "must not be empty",
    ),
    ("unknown function", "function = \"branin\"", "function = \"bran\"", 16, "objective.function", "unknown function"),
    ("misspelt function", "function = \"branin\"", "function = \"brainin\"", 16, "objective.function", "did you mean `branin`?"),
    ("unknown param type", "type = \"float\", low = -5", "type = \"double\", low = -5", 8, "space.x1", "unknown variant"),
    ("unknown sampler", "kind = \"random\"", "kind = \"tpe\"", 12, "sampler.kind", "unknown sampler"),
    ("bad direction", "direction = \"minimize\"", "direction = \"down\"", 4, "study.direction", "not a direction"),
    ("bad timeout", "n_trials = 10", "n_trials = 10\ntimeout = \"soon\"", 6, "study.timeout", "not a duration"),
    ("bad device", "kind = \"random\"", "kind = \"random\"\n[execution]\ndevices = [\"gpu0\"]", 14, "execution.devices", "not a device"),
    ("missing include", "[space]\nx1", "[space]\ninclude = \"nope.toml\"\nx1", 7, "space", "not found"),
    ("unknown param key", "low = 0.0, high = 15.0 }", "low = 0.0, high = 15.0, lg = true }", 9, "space.x2", "unknown field"),
    (
        "whole-number bounds without a type",
        "type = \"float\", low = -5",
        "low = -5",
        8,
        "space.x1",
        "add `type = \"int\"` or `type = \"float\"`",
    ),
    (
        "int bound with a fraction",
        "type = \"float\", low = -5",
        "type = \"int\", low = -5.5",
        8,
        "space.x1",
        "must be an integer, not -5.5",
    ),
    (
        "choices on a range",
        "low = 0.0, high = 15.0 }",
        "low = 0.0, high = 15.0, choices = [1] }",
        9,
        "space.x2",
        "`choices` does not apply to a float",
    ),
    ("one value for a parameter", "x2 = { type = \"float\", low = 0.0, high = 15.0 }", "x2 = 3.0", 9, "space.x2", "one value, not a range"),
    ("function param missing", "x2 = { type = \"float\", low = 0.0, high = 15.0 }", "", 16, "space", "needs parameter `x2`"),
    ("unknown objective", "kind = \"synthetic\"", "kind = \"python\"", 15, "objective.kind", "unknown objective kind"),
    ("zero trials", "n_trials = 10", "n_trials = 0", 5, "study.n_trials", "at least 1"),
    ("bad toml", "n_trials = 10", "n_trials = = 10", 5, "study.n_trials", ""),
    ("zero curve steps", "function = \"branin\"", "function = \"branin\"\nsteps = 0", 17, "objective.steps", "steps must be"),
    ("unknown pruner", "function = \"branin\"", "function = \"branin\"\n[pruner]\nkind = \"sha\"", 18, "pruner.kind", "unknown pruner"),
    (
        "pruner key of another kind",
        "function = \"branin\"",
        "function = \"branin\"\n[pruner]\nkind = \"asha\"\nn_warmup_steps = 3",
        19,
        "pruner.n_warmup_steps",
        "does not apply",
    ),
    (
        "bad reduction factor",
        "function = \"branin\"",
        "function = \"branin\"\n[pruner]\nkind = \"asha\"\nreduction_factor = 1",
        19,
        "pruner.reduction_factor",
        "at least 2",
    ),
    (
        "hyperband without max",
        "function = \"branin\"",
        "function = \"branin\"\n[pruner]\nkind = \"hyperband\"\nmin_resource = 2",
        18,
        "pruner.max_resource",
        "needs `max_resource`",
    ),
    (
        "zero min_resource",
        "function = \"branin\"",
        "function = \"branin\"\n[pruner]\nkind = \"hyperband\"\nmin_resource = 0\nmax_resource = 9",
        19,
        "pruner.min_resource",
        "at least 1",
    ),
    (
        "max_resource not above min",
        "function = \"branin\"",
        "function = \"branin\"\n[pruner]\nkind = \"asha\"\nmin_resource = 9223372036854775807\nmax_resource = 5",
        20,
        "pruner.max_resource",
        "at least",
    ),
    (
        "step_time without steps",
        "function = \"branin\"",
        "function = \"branin\"\nstep_time = \"10ms\"",
        17,
        "objective.step_time",
        "needs `steps`",
    ),
    (
        "unknown pruner key",
        "function = \"branin\"",
        "function = \"branin\"\n[pruner]\nkind = \"asha\"\nrungz = 3",
        19,
        "pruner.rungz",
        "unknown field",
    ),
    (
        "enqueued point out of range",
        "function = \"branin\"",
        "function = \"branin\"\n[[enqueue]]\nx1 = 1.0\nx2 = 2.0\n[[enqueue]]\nx1 = 30.0\nx2 = 2.0",
        20,
        "enqueue[1]",
        "point 2 of `[[enqueue]]`",
    ),
    (
        "enqueued point with no parameter",
        "function = \"branin\"",
        "function = \"branin\"\n[[enqueue]]\nx1 = 1.0\n[[enqueue]]\n",
        19,
        "enqueue[1]",
        "no parameter given (give at least one of: x1, x2)",
    ),
    (
        "enqueued point with an unknown parameter",
        "function = \"branin\"",
        "function = \"branin\"\n[[enqueue]]\nx1 = 1.0\nx2 = 2.0\nx3 = 0",
        17,
        "enqueue[0]",
        "x3",
    ),
    ("patience of zero", "n_trials = 10", "n_trials = 10\npatience = 0", 6, "study.patience", "patience must be at least 1"),
    ("min_delta without patience", "n_trials = 10", "n_trials = 10\nmin_delta = 0.01", 6, "study.min_delta", "set `patience` (trials) too"),
    ("negative min_delta", "n_trials = 10", "n_trials = 10\npatience = 5\nmin_delta = -1.0", 7, "study.min_delta", "finite number >= 0"),
    (
        "a condition on a float parameter",
        "x2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "x2 = { type = \"float\", low = 0.0, high = 15.0, when = { x1 = 1.0 } }",
        9,
        "space.x2.when",
        "names `x1`, which is not categorical",
    ),
    (
        "a condition on an unknown parameter",
        "x2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "x2 = { type = \"float\", low = 0.0, high = 15.0, when = { x0 = \"a\" } }",
        9,
        "space.x2.when",
        "names `x0`, which is not a parameter of the space",
    ),
    (
        "a condition on a value that is not a choice",
        "x1 = { type = \"float\", low = -5, high = 10 }\nx2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "x1 = [\"a\", \"b\"]\nx2 = { type = \"float\", low = 0.0, high = 15.0, when = { x1 = [\"b\", \"c\"] } }",
        9,
        "space.x2.when",
        "`when` gives \"c\" for `x1`, which is not one of its choices",
    ),
    (
        "a condition on a later parameter",
        "x1 = { type = \"float\", low = -5, high = 10 }\nx2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "x1 = { type = \"float\", low = -5, high = 10, when = { x2 = \"b\" } }\nx2 = [\"a\", \"b\"]",
        8,
        "space.x1.when",
        "must be declared before `x1`",
    ),
];

#[test]
fn enqueued_points_are_read_in_order_and_brought_to_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace("x2 = { type = \"float\", low = 0.0, high = 15.0 }", "x2 = { type = \"int\", low = 0, high = 15 }")
        + "\n[[enqueue]]\nx1 = 3\nx2 = 2\n\n[[enqueue]]\nx1 = -1.5\nx2 = 7\n";
    let p = write(dir.path(), "s.toml", &text);
    let c = StudyConfig::load(&p).unwrap();
    assert_eq!(c.enqueue.len(), 2);
    // An int written for a float parameter becomes a float.
    assert_eq!(c.enqueue[0]["x1"], crate::space::ParamValue::Float(3.0));
    assert_eq!(c.enqueue[0]["x2"], crate::space::ParamValue::Int(2));
    assert_eq!(c.enqueue[1]["x1"], crate::space::ParamValue::Float(-1.5));
    assert!(StudyConfig::load(&write(dir.path(), "g.toml", GOOD)).unwrap().enqueue.is_empty());
}

#[test]
fn every_mistake_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    for (what, from, to, line, key, msg) in CASES {
        assert!(GOOD.contains(from), "{what}: GOOD lacks {from:?}");
        let p = write(dir.path(), "s.toml", &GOOD.replacen(from, to, 1));
        let err = match StudyConfig::load(&p) {
            Err(e) => e,
            Ok(_) => panic!("{what}: accepted"),
        };
        assert_eq!(err.file, p, "{what}");
        assert_eq!(err.position.map(|p| p.0), Some(*line), "{what}: {err}");
        assert_eq!(err.key.as_deref(), Some(*key), "{what}: {err}");
        assert!(err.message.contains(msg), "{what}: {err}");
        let shown = err.to_string();
        assert!(shown.starts_with(&format!("{}:{line}:", p.display())), "{what}: {shown}");
    }
}

#[test]
fn conditions_are_read_from_when() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "x2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "x2 = { type = \"float\", low = 0.0, high = 15.0 }\nopt = [\"sgd\", \"adamw\", \"adam\"]\n\
         momentum = { type = \"float\", low = 0.0, high = 0.99, when = { opt = \"sgd\" } }\n\
         beta2 = { choices = [0.98, 0.999], when = { opt = [\"adamw\", \"adam\"] } }",
    );
    let c = StudyConfig::load(&write(dir.path(), "s.toml", &text)).unwrap();
    let s = |v: &str| crate::space::ParamValue::Str(v.into());
    assert_eq!(
        c.space.conditions(),
        &[
            Condition { param: "momentum".into(), parent: "opt".into(), values: vec![s("sgd")] },
            Condition { param: "beta2".into(), parent: "opt".into(), values: vec![s("adamw"), s("adam")] },
        ]
    );
}

#[test]
fn a_parameter_may_leave_out_the_type_where_the_rest_says_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "x1 = { type = \"float\", low = -5, high = 10 }\nx2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "x1 = { low = -5, high = 10.0 }\nx2 = { low = 0.0, high = 15.0, step = 0.5 }\nlr = { low = 1e-5, high = 1e-3, log = true }\n\
         bs = [16, 32]\nopt = { choices = [\"adamw\", \"sgd\"] }",
    );
    let p = write(dir.path(), "s.toml", &text);
    let c = StudyConfig::load(&p).unwrap();
    assert_eq!(c.space.get("x1"), Some(&Distribution::Float { low: -5.0, high: 10.0, log: false, step: None }));
    assert_eq!(c.space.get("x2"), Some(&Distribution::Float { low: 0.0, high: 15.0, log: false, step: Some(0.5) }));
    assert_eq!(c.space.get("lr"), Some(&Distribution::Float { low: 1e-5, high: 1e-3, log: true, step: None }));
    let int = |i| crate::space::ParamValue::Int(i);
    assert_eq!(c.space.get("bs"), Some(&Distribution::Categorical { choices: vec![int(16), int(32)] }));
    let s = |v: &str| crate::space::ParamValue::Str(v.to_string());
    assert_eq!(c.space.get("opt"), Some(&Distribution::Categorical { choices: vec![s("adamw"), s("sgd")] }));
}

#[test]
fn include_file_is_relative_and_can_be_overridden() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("spaces")).unwrap();
    write(
        &dir.path().join("spaces"),
        "s.toml",
        "x1 = { type = \"float\", low = -5, high = 10 }\nx2 = { type = \"float\", low = 0, high = 15 }\n",
    );
    let text = GOOD.replace(
        "[space]\nx1 = { type = \"float\", low = -5, high = 10 }\nx2 = { type = \"float\", low = 0.0, high = 15.0 }",
        "[space]\ninclude = \"spaces/s.toml\"\nx2 = { type = \"float\", low = 1.0, high = 2.0 }",
    );
    let p = write(dir.path(), "study.toml", &text);
    let c = StudyConfig::load(&p).unwrap();
    assert_eq!(c.space.get("x2"), Some(&Distribution::Float { low: 1.0, high: 2.0, log: false, step: None }));
    assert_eq!(c.space.params()[0].name, "x1");

    // An error inside the included file points into that file.
    write(&dir.path().join("spaces"), "s.toml", "x1 = { type = \"float\", low = 5, high = 1 }\n");
    let err = StudyConfig::load(&p).unwrap_err();
    assert_eq!(err.file, dir.path().join("spaces/s.toml"));
    assert_eq!(err.position.map(|p| p.0), Some(1));
}

#[test]
fn env_vars_expand_in_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("SFT_TEST_STORE_DIR", "/tmp/somewhere");
    let p = write(dir.path(), "s.toml", &GOOD.replace("n_trials = 10", "n_trials = 10\nstorage = \"${SFT_TEST_STORE_DIR}/x.db\""));
    assert_eq!(StudyConfig::load(&p).unwrap().storage, PathBuf::from("/tmp/somewhere/x.db"));
    let p = write(dir.path(), "s.toml", &GOOD.replace("n_trials = 10", "n_trials = 10\nstorage = \"${SFT_TEST_UNSET_VAR_XYZ}/x.db\""));
    let err = StudyConfig::load(&p).unwrap_err();
    assert!(err.message.contains("SFT_TEST_UNSET_VAR_XYZ"), "{err}");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("12"), Some(Duration::from_secs(12)));
    assert_eq!(parse_duration("soon"), None);
    assert_eq!(parse_duration("5 parsecs"), None);
}

#[test]
fn pruners_resolve_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let with = |table: &str| {
        let p = write(dir.path(), "s.toml", &format!("{GOOD}\n[pruner]\n{table}\n"));
        StudyConfig::load(&p).unwrap().pruner
    };
    assert_eq!(with("kind = \"none\""), PrunerConfig::None);
    assert_eq!(with("kind = \"median\""), PrunerConfig::Median { n_startup_trials: 5, n_warmup_steps: 0 });
    assert_eq!(
        with("kind = \"asha\"\nmin_resource = 4"),
        PrunerConfig::Asha { min_resource: 4, reduction_factor: 3, max_resource: None, min_early_stopping_rate: 0, bootstrap_count: 0 }
    );
    assert_eq!(
        with("kind = \"hyperband\"\nmin_resource = 1\nmax_resource = 27\nreduction_factor = 2"),
        PrunerConfig::Hyperband { min_resource: 1, max_resource: 27, reduction_factor: 2, bootstrap_count: 0, study_name: "demo".into() }
    );
}

#[test]
fn grid_without_n_trials_runs_the_grid() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "s.toml", &GOOD.replace("n_trials = 10\n", "").replace("kind = \"random\"", "kind = \"grid\""));
    assert_eq!(StudyConfig::load(&p).unwrap().n_trials, None);
    let p = write(dir.path(), "s.toml", &GOOD.replace("n_trials = 10\n", ""));
    assert!(StudyConfig::load(&p).unwrap_err().message.contains("n_trials"));
}
