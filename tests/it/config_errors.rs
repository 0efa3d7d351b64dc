//! A broken study file stops before anything is written, exits 2, and says where.

use crate::util::*;

#[test]
fn config_error_exits_2_with_file_line_column_and_key() {
    let d = StudyDir::new();
    let p = d.write(
        "bad.toml",
        "[study]\nname = \"x\"\nn_trials = 5\nstorage = \"study.db\"\n\n[space]\nlr = { type = \"float\", low = 0.0, high = 1.0, log = true }\n\n[objective]\nkind = \"synthetic\"\nfunction = \"branin\"\n",
    );
    let out = d.run(&["run", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:7:6", p.file_name().unwrap().to_string_lossy())), "{err}");
    assert!(err.contains("space.lr") && err.contains("low > 0"), "{err}");
    assert!(!d.path().join("study.db").exists(), "nothing may be written");
}

#[test]
fn unknown_key_and_missing_file() {
    let d = StudyDir::new();
    d.write("s.toml", "[study]\nname = \"x\"\nn_trials = 5\nstorage = \"study.db\"\nnope = 1\n[space]\nx1 = { type = \"float\", low = 0, high = 1 }\n[objective]\nkind = \"synthetic\"\nfunction = \"branin\"\n");
    let out = d.run(&["run", "s.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("s.toml:5:1") && stderr(&out).contains("unknown field `nope`"), "{}", stderr(&out));
    let out = d.run(&["run", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml") && stderr(&out).contains("cannot read"), "{}", stderr(&out));
}

#[test]
fn status_of_a_study_never_run_is_a_clear_error() {
    let d = StudyDir::new();
    d.write("s.toml", "[study]\nname = \"x\"\nn_trials = 5\nstorage = \"study.db\"\n[space]\nx1 = { type = \"float\", low = -5, high = 10 }\nx2 = { type = \"float\", low = 0, high = 15 }\n[objective]\nkind = \"synthetic\"\nfunction = \"branin\"\n");
    let out = d.run(&["status", "s.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no database"), "{}", stderr(&out));
}
