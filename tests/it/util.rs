//! Helpers shared by the end-to-end tests: temp study folders, running the binary, reading
//! the trials back as JSON.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sft-search"))
}

/// A temp folder holding a study file and whatever it needs.
pub struct StudyDir {
    pub dir: tempfile::TempDir,
}

impl StudyDir {
    pub fn new() -> Self {
        StudyDir { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file under the folder and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    /// Writes `objective.py` (a Python command objective) and returns its path.
    pub fn python(&self, name: &str, body: &str) -> PathBuf {
        self.write(name, body)
    }

    /// Runs `python3 -c script` in this folder; panics with its stderr unless it succeeds.
    pub fn python_ok(&self, script: &str) -> Output {
        let o = Command::new("python3").args(["-c", script]).current_dir(self.path()).output().expect("run python3");
        assert!(o.status.success(), "python failed: {}", String::from_utf8_lossy(&o.stderr));
        o
    }

    /// Runs the binary in this folder to its end.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin()).args(args).current_dir(self.path()).stdin(Stdio::null()).output().expect("run sft-search")
    }

    /// Starts the binary in the background.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(bin())
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sft-search")
    }

    /// `trials --format json`, parsed.
    pub fn trials(&self, study: &str) -> Vec<Value> {
        let out = self.run(&["trials", study, "--format", "json"]);
        assert!(out.status.success(), "trials failed: {}", String::from_utf8_lossy(&out.stderr));
        match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(Value::Array(a)) => a,
            other => panic!("trials output is not a JSON array: {other:?}"),
        }
    }

    /// Waits until `pred` holds on the trials (polling), or panics after `limit`.
    pub fn wait_for(&self, study: &str, limit: Duration, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            if self.path().join(db_name(study)).exists() {
                let out = self.run(&["trials", study, "--format", "json"]);
                if out.status.success() {
                    if let Ok(Value::Array(t)) = serde_json::from_slice::<Value>(&out.stdout) {
                        if pred(&t) {
                            return t;
                        }
                    }
                }
            }
            assert!(start.elapsed() < limit, "timed out waiting for: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The database name a study file in these tests uses (they all set `storage = "study.db"`).
fn db_name(_study: &str) -> &'static str {
    "study.db"
}

pub fn state(t: &Value) -> &str {
    t["state"].as_str().unwrap_or("")
}

pub fn count(trials: &[Value], s: &str) -> usize {
    trials.iter().filter(|t| state(t) == s).count()
}

/// Trial numbers are 0..n, each once.
pub fn assert_numbers_unique(trials: &[Value]) {
    let mut nums: Vec<u64> = trials.iter().map(|t| t["number"].as_u64().expect("number")).collect();
    nums.sort();
    let expected: Vec<u64> = (0..trials.len() as u64).collect();
    assert_eq!(nums, expected, "trial numbers repeat or skip");
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Sends a signal to a process.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// A study file for a Python command objective (`objective.py` in the folder).
pub fn command_study(name: &str, n_trials: u64, devices: &str, extra: &str) -> String {
    format!(
        r#"[study]
name = "{name}"
direction = "minimize"
n_trials = {n_trials}
seed = 3
storage = "study.db"

[space]
x = {{ type = "float", low = 0.0, high = 1.0 }}
k = {{ type = "int", low = 1, high = 4 }}

[sampler]
kind = "random"

[objective]
kind = "command"
command = ["python3", "objective.py"]

[execution]
devices = {devices}
{extra}
"#
    )
}

/// Whether python3 can import Optuna. Without it the interop tests skip with a note, unless
/// `SFT_REQUIRE_OPTUNA` is set (as `.ci/run` does), where that is a failure.
pub fn have_optuna() -> bool {
    let ok = Command::new("python3").args(["-c", "import optuna"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var("SFT_REQUIRE_OPTUNA").is_err(), "SFT_REQUIRE_OPTUNA is set but `import optuna` fails");
        eprintln!("skipped: python3 cannot import optuna");
    }
    ok
}
