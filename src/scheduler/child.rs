//! The child-process driver shared by `command` objectives and fine-tuning workers: spawns
//! the process, feeds it its job on stdin, turns the JSON lines it prints into `Reporter`
//! calls, enforces the no-progress timeout, carries out prune and cancel requests, and turns
//! the way the process ended into an `Outcome`.
//!
//! The lines a child may print (one JSON object each; anything else is ignored):
//! `{"step": k, "value": v, "metrics": {..}}` an intermediate value; `{"value": v}` the result
//! (the last one counts); `{"metrics": {..}}` trial-wide metrics; `{"progress": {..}}` live
//! progress; `{"checkpoint": "dir"}` a finished checkpoint; `{"error": ".."}` why it failed.
//! `NaN` and `Infinity` are accepted as numbers (Python's `json.dumps` writes them).
//!
//! A child is started in its own process group, so a Ctrl-C at the terminal reaches only the
//! orchestrator (which decides what to do with running trials), and it is killed by the kernel
//! if the thread that started it dies (so an orchestrator killed with SIGKILL leaves no
//! orphans running).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::runner::{CancelToken, Decision, Progress, Reporter};
use crate::trial::Outcome;

/// How to start a child and how to talk to it.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    /// Written to stdin first, followed by a newline.
    pub stdin_payload: String,
    /// Keep stdin open after the payload, to send `{"command": "prune"|"cancel"}` lines
    /// (fine-tuning workers). When false, stdin is closed after the payload and a prune or
    /// cancel kills the process.
    pub keep_stdin_open: bool,
    /// A child that prints no line for this long is killed and the trial fails with "timeout".
    pub idle_timeout: Option<Duration>,
    /// How long a child may take to stop after being asked before it is killed.
    pub grace: Duration,
}

impl ChildSpec {
    pub fn new(program: impl Into<OsString>) -> Self {
        ChildSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin_payload: String::new(),
            keep_stdin_open: false,
            idle_timeout: None,
            grace: Duration::from_secs(10),
        }
    }
}

/// How many bytes of stderr are kept for the error message of a failed trial.
const STDERR_TAIL_BYTES: usize = 2000;

enum Event {
    Line(String),
    Eof,
}

/// Why we stopped the child, if we did.
#[derive(Debug, Clone, Copy, PartialEq)]
enum StopReason {
    Pruned(i64),
    Cancelled,
    Timeout,
}

/// Runs the child to its end and reports what it prints.
pub fn run_child(spec: &ChildSpec, reporter: &mut dyn Reporter, cancel: &CancelToken) -> Outcome {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to SIGKILL the child when
    // the thread that forked it exits.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed { reason: format!("cannot start `{}`: {e}", spec.program.to_string_lossy()) },
    };

    let mut stdin = child.stdin.take();
    if let Some(w) = stdin.as_mut() {
        // A child that exits without reading its stdin is not an error here.
        let _ = w.write_all(spec.stdin_payload.as_bytes()).and_then(|_| w.write_all(b"\n")).and_then(|_| w.flush());
    }
    if !spec.keep_stdin_open {
        stdin = None;
    }

    let (tx, rx) = mpsc::channel::<Event>();
    let stdout_reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            let reader = BufReader::new(out);
            for line in reader.lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Event::Line(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(Event::Eof);
        })
    });
    let stderr_tail = Arc::new(Mutex::new(VecDeque::<u8>::new()));
    let stderr_reader = child.stderr.take().map(|mut err| {
        let tail = Arc::clone(&stderr_tail);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match err.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Ok(mut t) = tail.lock() {
                            t.extend(&buf[..n]);
                            while t.len() > STDERR_TAIL_BYTES {
                                t.pop_front();
                            }
                        }
                    }
                }
            }
        })
    });

    let mut state = LineState::default();
    let mut stop: Option<StopReason> = None;
    let mut stop_asked_at: Option<Instant> = None;
    let mut last_line = Instant::now();
    let mut eof = false;

    while !eof {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Line(line)) => {
                last_line = Instant::now();
                if let Some(Decision::Prune) = state.handle(&line, reporter) {
                    if stop.is_none() {
                        let step = state.last_step.unwrap_or(0);
                        stop = Some(StopReason::Pruned(step));
                        stop_asked_at = Some(Instant::now());
                        ask_to_stop(&mut child, &mut stdin, "prune");
                    }
                }
            }
            Ok(Event::Eof) => eof = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => eof = true,
        }
        if stop.is_none() && cancel.is_cancelled() {
            stop = Some(StopReason::Cancelled);
            stop_asked_at = Some(Instant::now());
            ask_to_stop(&mut child, &mut stdin, "cancel");
        }
        if stop.is_none() {
            if let Some(limit) = spec.idle_timeout {
                if last_line.elapsed() > limit {
                    stop = Some(StopReason::Timeout);
                    kill_group(&mut child);
                }
            }
        }
        if let Some(t) = stop_asked_at {
            if t.elapsed() > spec.grace {
                kill_group(&mut child);
                stop_asked_at = None;
            }
        }
    }
    drop(stdin);
    let status = wait_with_grace(&mut child, spec.grace);
    if let Some(h) = stdout_reader {
        let _ = h.join();
    }
    if let Some(h) = stderr_reader {
        let _ = h.join();
    }
    let tail =
        stderr_tail.lock().map(|t| String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>()).trim().to_string()).unwrap_or_default();
    state.outcome(stop, status, &tail, spec.idle_timeout)
}

/// Asks the child to stop: a command line on stdin where it is kept open, else a kill.
fn ask_to_stop(child: &mut Child, stdin: &mut Option<std::process::ChildStdin>, what: &str) {
    let sent =
        stdin.as_mut().is_some_and(|w| w.write_all(format!("{{\"command\": \"{what}\"}}\n").as_bytes()).and_then(|_| w.flush()).is_ok());
    if !sent {
        kill_group(child);
    }
}

/// SIGKILLs the child's whole process group (it leads its own group).
fn kill_group(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: plain syscall on a process group we created.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
}

fn wait_with_grace(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) => {
                if start.elapsed() > grace {
                    kill_group(child);
                    return child.wait().ok();
                }
                // The process usually exits right after closing its stdout: poll finely at
                // first, so its slot is not held idle for a whole coarse tick.
                let tick = if start.elapsed() < Duration::from_millis(100) { 1 } else { 10 };
                std::thread::sleep(Duration::from_millis(tick));
            }
            Err(_) => return None,
        }
    }
}

/// What the child has said so far.
#[derive(Debug, Default)]
struct LineState {
    final_value: Option<f64>,
    last_step: Option<i64>,
    last_intermediate: Option<f64>,
    error: Option<String>,
}

impl LineState {
    /// Handles one stdout line; returns the pruner's decision after an intermediate value.
    fn handle(&mut self, line: &str, reporter: &mut dyn Reporter) -> Option<Decision> {
        let obj = parse_line(line)?;
        let metrics = obj.get("metrics").and_then(|m| m.as_object()).cloned().unwrap_or_default();
        if let Some(e) = obj.get("error") {
            self.error = Some(match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        }
        if let Some(p) = obj.get("progress") {
            if let Ok(p) = serde_json::from_value::<Progress>(p.clone()) {
                reporter.progress(&p);
            }
        }
        if let Some(Value::String(dir)) = obj.get("checkpoint") {
            reporter.checkpoint(std::path::Path::new(dir));
        }
        if let Some(test) = obj.get("test") {
            let mut m = Map::new();
            m.insert("test".into(), test.clone());
            reporter.metrics(&m);
        }
        let value = obj.get("value").map(number);
        let step = obj.get("step").and_then(|s| s.as_i64());
        match (step, value) {
            (Some(step), Some(v)) => {
                self.last_step = Some(step);
                self.last_intermediate = Some(v);
                return Some(reporter.intermediate(step, v, &metrics));
            }
            (None, Some(v)) => {
                self.final_value = Some(v);
                if !metrics.is_empty() {
                    reporter.metrics(&metrics);
                }
            }
            _ => {
                if !metrics.is_empty() {
                    reporter.metrics(&metrics);
                }
            }
        }
        None
    }

    fn outcome(self, stop: Option<StopReason>, status: Option<ExitStatus>, stderr_tail: &str, idle: Option<Duration>) -> Outcome {
        let with_tail = |msg: String| {
            if stderr_tail.is_empty() {
                msg
            } else {
                format!("{msg}; stderr: {stderr_tail}")
            }
        };
        match stop {
            Some(StopReason::Pruned(step)) => return Outcome::Pruned { step, value: self.last_intermediate },
            Some(StopReason::Cancelled) => return Outcome::Failed { reason: "cancelled".into() },
            Some(StopReason::Timeout) => {
                let secs = idle.map(|d| d.as_secs_f64()).unwrap_or(0.0);
                return Outcome::Failed { reason: format!("timeout: no progress for {secs:.0} s") };
            }
            None => {}
        }
        let status = match status {
            Some(s) => s,
            None => return Outcome::Failed { reason: with_tail("lost track of the process".into()) },
        };
        if let Some(sig) = status.signal() {
            return Outcome::Failed { reason: with_tail(format!("worker exited: signal {sig}")) };
        }
        if !status.success() {
            let code = status.code().unwrap_or(-1);
            let msg = match self.error {
                Some(e) if crate::trial::is_machine_error(&e) => e,
                Some(e) => format!("exit status {code}: {e}"),
                None => with_tail(format!("exit status {code}")),
            };
            return Outcome::Failed { reason: msg };
        }
        if let Some(e) = self.error {
            return Outcome::Failed { reason: e };
        }
        match self.final_value {
            Some(v) if v.is_finite() => Outcome::Complete { value: v },
            Some(v) => Outcome::Failed { reason: format!("objective value is {v}") },
            None => Outcome::Failed { reason: with_tail("the command printed no result line ({\"value\": ...})".into()) },
        }
    }
}

/// A JSON number, or NaN/Infinity spelled as Python writes them (see `parse_line`).
fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::String(s) => match s.as_str() {
            "Infinity" | "inf" => f64::INFINITY,
            "-Infinity" | "-inf" => f64::NEG_INFINITY,
            other => other.parse().unwrap_or(f64::NAN),
        },
        _ => f64::NAN,
    }
}

/// Parses a line as a JSON object, accepting Python's bare `NaN`, `Infinity`, `-Infinity`.
pub fn parse_line(line: &str) -> Option<Map<String, Value>> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    if let Ok(Value::Object(m)) = serde_json::from_str(line) {
        return Some(m);
    }
    let fixed = replace_bare_tokens(line);
    match serde_json::from_str(&fixed) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Quotes bare `NaN`, `Infinity` and `-Infinity` outside strings.
fn replace_bare_tokens(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut in_str = false;
    let mut escaped = false;
    let mut i = 0;
    let bytes = s.as_bytes();
    while i < bytes.len() {
        let c = bytes[i] as char;
        if in_str {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
            i += 1;
            continue;
        }
        if c == '"' {
            in_str = true;
            out.push(c);
            i += 1;
            continue;
        }
        let rest = &s[i..];
        let token = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t));
        if let Some(t) = token {
            out.push('"');
            out.push_str(t);
            out.push('"');
            i += t.len();
        } else {
            // Push the whole UTF-8 character.
            let ch = rest.chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::RecordingReporter;

    fn sh(script: &str) -> ChildSpec {
        let mut s = ChildSpec::new("sh");
        s.args = vec!["-c".into(), script.into()];
        s.grace = Duration::from_secs(2);
        s
    }

    #[test]
    fn nan_tokens_are_accepted() {
        let m = parse_line(r#"{"value": NaN, "x": "NaN inside", "y": -Infinity}"#).unwrap();
        assert!(number(&m["value"]).is_nan());
        assert_eq!(m["x"], Value::String("NaN inside".into()));
        assert_eq!(number(&m["y"]), f64::NEG_INFINITY);
        assert!(parse_line("plain log line").is_none());
    }

    #[test]
    fn complete_with_intermediates_and_metrics() {
        let mut r = RecordingReporter::default();
        let spec = sh(
            r#"read p; echo "$p" >&2; echo '{"step": 0, "value": 3}'; echo noise; echo '{"step": 1, "value": 2}'; echo '{"value": 1.5, "metrics": {"acc": 0.9}}'; echo '{"checkpoint": "/tmp/x"}'"#,
        );
        let out = run_child(&ChildSpec { stdin_payload: "{\"a\":1}".into(), ..spec }, &mut r, &CancelToken::new());
        assert_eq!(out, Outcome::Complete { value: 1.5 });
        assert_eq!(r.steps(), vec![(0, 3.0), (1, 2.0)]);
        assert_eq!(r.metrics["acc"], serde_json::json!(0.9));
        assert_eq!(r.checkpoints, vec![PathBuf::from("/tmp/x")]);
    }

    #[test]
    fn failures_carry_their_reason() {
        let mut r = RecordingReporter::default();
        let out = run_child(&sh("echo boom >&2; exit 3"), &mut r, &CancelToken::new());
        match out {
            Outcome::Failed { reason } => assert!(reason.contains("exit status 3") && reason.contains("boom"), "{reason}"),
            o => panic!("{o:?}"),
        }
        let out = run_child(&sh(r#"echo '{"value": NaN}'"#), &mut r, &CancelToken::new());
        assert!(matches!(out, Outcome::Failed { ref reason } if reason.contains("NaN")), "{out:?}");
        let out = run_child(&sh("true"), &mut r, &CancelToken::new());
        assert!(matches!(out, Outcome::Failed { ref reason } if reason.contains("no result")), "{out:?}");
        let out = run_child(&sh("kill -9 $$"), &mut r, &CancelToken::new());
        assert!(matches!(out, Outcome::Failed { ref reason } if reason.contains("signal 9")), "{out:?}");
        let out = run_child(&ChildSpec::new("/nonexistent/program"), &mut r, &CancelToken::new());
        assert!(matches!(out, Outcome::Failed { ref reason } if reason.contains("cannot start")), "{out:?}");
    }

    #[test]
    fn prune_kills_a_command_and_keeps_last_value() {
        let mut r = RecordingReporter { prune_at: Some(1), ..Default::default() };
        let start = Instant::now();
        let out = run_child(
            &sh(r#"for i in 0 1 2 3 4 5; do echo "{\"step\": $i, \"value\": $i}"; sleep 1; done; echo '{"value": 9}'"#),
            &mut r,
            &CancelToken::new(),
        );
        assert_eq!(out, Outcome::Pruned { step: 1, value: Some(1.0) });
        // Run to its end the command would take 6 s; pruned it stops after step 1 (~1 s).
        assert!(start.elapsed() < Duration::from_secs(4), "took {:?}", start.elapsed());
    }

    #[test]
    fn idle_timeout_and_cancel() {
        let mut r = RecordingReporter::default();
        let spec = ChildSpec { idle_timeout: Some(Duration::from_millis(300)), ..sh("sleep 5") };
        let start = Instant::now();
        let out = run_child(&spec, &mut r, &CancelToken::new());
        assert!(matches!(out, Outcome::Failed { ref reason } if reason.starts_with("timeout")), "{out:?}");
        assert!(start.elapsed() < Duration::from_secs(3));

        let cancel = CancelToken::new();
        let c2 = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c2.cancel();
        });
        let out = run_child(&sh("sleep 5"), &mut r, &cancel);
        assert_eq!(out, Outcome::Failed { reason: "cancelled".into() });
    }

    #[test]
    fn prune_is_sent_on_stdin_when_kept_open() {
        let mut r = RecordingReporter { prune_at: Some(0), ..Default::default() };
        // The child reads its job, reports, then waits for the prune command and acknowledges.
        let spec = ChildSpec {
            keep_stdin_open: true,
            stdin_payload: "{}".into(),
            ..sh(
                r#"read job; echo '{"step": 0, "value": 0.5}'; read cmd; case "$cmd" in *prune*) echo '{"pruned": true}'; exit 0;; esac; exit 7"#,
            )
        };
        let out = run_child(&spec, &mut r, &CancelToken::new());
        assert_eq!(out, Outcome::Pruned { step: 0, value: Some(0.5) });
    }
}
