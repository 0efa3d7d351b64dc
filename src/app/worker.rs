//! `sft-search worker`: runs one job read as a JSON line from stdin (a trial to train, or a
//! checkpoint to evaluate on the test split) and speaks JSON lines on stdout; logs go to
//! stderr. Later stdin lines `{"command": "prune"}` / `{"command": "cancel"}` (or stdin EOF:
//! the parent is gone) stop training at the next batch boundary; a pruned run prints
//! `{"pruned": true}`. Exit 0 on success or requested stop; 1 with `{"error": ...}` on a
//! failure (including a panic, a NaN loss, a bad job).

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::cli::WorkerArgs;
use crate::scheduler::{CancelToken, Decision, Progress, Reporter};
use crate::trainer::runner::WorkerJob;
use crate::trainer::train::{self, Finish};
use crate::trial::{DEVICE_ERROR_PREFIX, IO_ERROR_PREFIX};

const RUNNING: u8 = 0;
const PRUNE: u8 = 1;
const CANCEL: u8 = 2;
const PARENT_GONE: u8 = 3;

/// Prints one protocol line (stdout is the protocol; flush at once).
fn emit(v: &Value) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

struct LineReporter;

impl Reporter for LineReporter {
    fn intermediate(&mut self, step: i64, value: f64, metrics: &Map<String, Value>) -> Decision {
        emit(&json!({"step": step, "value": num(value), "metrics": metrics}));
        Decision::Continue
    }
    fn metrics(&mut self, metrics: &Map<String, Value>) {
        emit(&json!({ "metrics": metrics }));
    }
    fn progress(&mut self, p: &Progress) {
        emit(&json!({ "progress": p }));
    }
    fn checkpoint(&mut self, path: &Path) {
        emit(&json!({ "checkpoint": path }));
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

pub fn run(_args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    // A file-size limit (`ulimit -f`, quota-like setups) must make a checkpoint write fail
    // with an error the trial records and cleans up after, not kill the worker mid-file.
    // SAFETY: setting a signal's disposition to "ignore" before any thread is started.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut line = String::new();
    input.read_line(&mut line).context("reading the job from stdin")?;
    drop(input);
    let job: WorkerJob = match serde_json::from_str(line.trim()) {
        Ok(j) => j,
        Err(e) => {
            emit(&json!({"error": format!("bad worker job: {e}")}));
            return Ok(ExitCode::from(1));
        }
    };
    if let WorkerJob::Train(t) = &job {
        if let Some(n) = t.spec.threads {
            // Before the first tensor op: candle reads it once.
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
    }
    crate::trainer::perf::tune_for_training();

    // Commands on stdin trip the stop flag; EOF means the parent is gone.
    let stop = CancelToken::new();
    let why = Arc::new(AtomicU8::new(RUNNING));
    {
        let (stop, why) = (stop.clone(), Arc::clone(&why));
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for l in stdin.lock().lines() {
                let Ok(l) = l else { break };
                let cmd = serde_json::from_str::<Value>(&l).ok().and_then(|v| v.get("command").and_then(Value::as_str).map(str::to_string));
                match cmd.as_deref() {
                    Some("prune") => {
                        let _ = why.compare_exchange(RUNNING, PRUNE, Ordering::SeqCst, Ordering::SeqCst);
                        stop.cancel();
                    }
                    Some("cancel") => {
                        why.store(CANCEL, Ordering::SeqCst);
                        stop.cancel();
                    }
                    _ => tracing::warn!("worker: ignoring stdin line {l:?}"),
                }
            }
            let _ = why.compare_exchange(RUNNING, PARENT_GONE, Ordering::SeqCst, Ordering::SeqCst);
            stop.cancel();
        });
    }

    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &job {
        WorkerJob::Train(t) => train::train(t, &mut LineReporter, &stop).map(Some),
        WorkerJob::Test(t) => train::evaluate_test(t).map(|m| {
            emit(&json!({ "test": m }));
            None
        }),
        WorkerJob::Soup(s) => crate::trainer::soup::greedy_soup(s, |trial, value, kept| {
            tracing::info!("soup: with trial {trial} the valid value is {value}: {}", if kept { "kept" } else { "left out" });
        })
        .map(|r| {
            emit(&json!({ "metrics": { "soup": r.to_json() } }));
            None
        }),
    }));
    match result {
        Ok(Ok(Some(Finish::Complete { value, metrics }))) => {
            emit(&json!({"value": num(value), "metrics": metrics}));
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(Some(Finish::Stopped { pruned, .. }))) => {
            if pruned || why.load(Ordering::SeqCst) == PRUNE {
                emit(&json!({"pruned": true}));
            }
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(None)) => Ok(ExitCode::SUCCESS),
        Ok(Err(e @ train::TrainError::Checkpoint(_))) => {
            // Not the trial's verdict: the disk (full, unwritable). Worth a retry from the
            // last complete checkpoint.
            emit(&json!({"error": format!("{IO_ERROR_PREFIX}{e}")}));
            Ok(ExitCode::from(1))
        }
        Ok(Err(e @ train::TrainError::Device { .. })) => {
            // Not the trial's verdict either: its device is missing or unusable.
            emit(&json!({"error": format!("{DEVICE_ERROR_PREFIX}{e}")}));
            Ok(ExitCode::from(1))
        }
        Ok(Err(e)) => {
            emit(&json!({"error": e.to_string()}));
            Ok(ExitCode::from(1))
        }
        Err(p) => {
            emit(&json!({"error": format!("worker panicked: {}", panic_message(&*p))}));
            Ok(ExitCode::from(1))
        }
    }
}
