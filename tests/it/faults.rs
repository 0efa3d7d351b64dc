//! Crashes and interruptions lose nothing.

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

const SLOW: &str = "import json, sys, time\np = json.load(sys.stdin)\nfor s in range(3):\n    time.sleep(0.15)\n    print(json.dumps({'step': s, 'value': p['x'] * (3 - s)}), flush=True)\nprint(json.dumps({'value': p['x']}))\n";

#[test]
fn sigkill_of_the_orchestrator_then_resume_loses_nothing() {
    let d = StudyDir::new();
    d.python("objective.py", SLOW);
    d.write("s.toml", &command_study("kill", 8, "[\"cpu\", \"cpu\"]", ""));
    let mut child = d.spawn(&["run", "s.toml"]);
    let before = d.wait_for("s.toml", Duration::from_secs(60), "two complete and two running", |t| {
        count(t, "COMPLETE") >= 2 && count(t, "RUNNING") == 2
    });
    signal(&child, libc::SIGKILL);
    let _ = child.wait();
    let running_at_kill: Vec<(u64, Value)> = before
        .iter()
        .filter(|t| state(t) == "RUNNING")
        .map(|t| (t["number"].as_u64().unwrap(), t["params"].clone()))
        .collect();
    // The orphaned trial processes die with their parent thread: nothing keeps writing.
    std::thread::sleep(Duration::from_millis(300));

    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("resuming"), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_numbers_unique(&trials);
    assert_eq!(count(&trials, "COMPLETE"), 8);
    assert_eq!(count(&trials, "RUNNING"), 0);
    for (number, params) in &running_at_kill {
        let t = trials.iter().find(|t| t["number"].as_u64() == Some(*number)).unwrap();
        assert_eq!(state(t), "FAIL");
        assert_eq!(t["error"], "interrupted");
        let retry = trials.iter().find(|r| r["retry_of"].as_u64() == Some(*number)).expect("a retry");
        assert_eq!(&retry["params"], params);
        assert_eq!(state(retry), "COMPLETE");
    }
    // Everything recorded before the kill is still there.
    for t in before.iter().filter(|t| state(t) == "COMPLETE") {
        let now = trials.iter().find(|x| x["number"] == t["number"]).unwrap();
        assert_eq!(now, t);
    }
    assert_eq!(trials.len(), 8 + running_at_kill.len());
}

#[test]
fn ctrl_c_once_lets_running_trials_finish() {
    let d = StudyDir::new();
    d.python("objective.py", SLOW);
    d.write("s.toml", &command_study("int1", 20, "[\"cpu\", \"cpu\"]", ""));
    let child = d.spawn(&["run", "s.toml"]);
    d.wait_for("s.toml", Duration::from_secs(60), "two running", |t| count(t, "RUNNING") == 2);
    signal(&child, libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "RUNNING"), 0);
    assert_eq!(count(&trials, "FAIL"), 0, "running trials finished normally");
    assert!(count(&trials, "COMPLETE") >= 2 && count(&trials, "COMPLETE") < 20);
}

#[test]
fn ctrl_c_twice_cancels_running_trials_and_exits_non_zero() {
    let d = StudyDir::new();
    d.python("objective.py", "import json, sys, time\np = json.load(sys.stdin)\ntime.sleep(30)\nprint(json.dumps({'value': p['x']}))\n");
    d.write("s.toml", &command_study("int2", 20, "[\"cpu\", \"cpu\"]", ""));
    let child = d.spawn(&["run", "s.toml"]);
    d.wait_for("s.toml", Duration::from_secs(60), "two running", |t| count(t, "RUNNING") == 2);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGINT);
    let start = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10), "cancel must not wait for the trials");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "RUNNING"), 0);
    let cancelled: Vec<&Value> = trials.iter().filter(|t| t["error"] == "cancelled").collect();
    assert_eq!(cancelled.len(), 2);
    // Their work is queued again for the next run.
    assert_eq!(count(&trials, "WAITING"), 2);
}

#[test]
fn a_hanging_trial_is_killed_after_the_trial_timeout() {
    let d = StudyDir::new();
    d.python("objective.py", "import json, sys, time\np = json.load(sys.stdin)\nif p['k'] == 1:\n    time.sleep(60)\nprint(json.dumps({'value': p['x']}))\n");
    d.write("s.toml", &command_study("hang", 4, "[\"cpu\", \"cpu\"]", "trial_timeout = \"1s\"\nmax_retries = 0"));
    let start = std::time::Instant::now();
    let out = d.run(&["run", "s.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(start.elapsed() < Duration::from_secs(30));
    let trials = d.trials("s.toml");
    assert_eq!(count(&trials, "COMPLETE"), 4);
    for t in trials.iter().filter(|t| t["params"]["k"] == 1) {
        assert_eq!(state(t), "FAIL");
        assert!(t["error"].as_str().unwrap().starts_with("timeout"), "{t}");
    }
}

/// The soak test of issue 4: 200 trials over 8 slots, a fifth of the commands crash, and the
/// orchestrator is SIGKILLed every few seconds and restarted. At the end exactly `n_trials`
/// trials are COMPLETE, no number repeats, and every failure says why.
#[test]
fn soak_crashing_trials_and_a_killed_orchestrator() {
    let d = StudyDir::new();
    d.write(
        "objective.sh",
        "read -r params\nr=$((RANDOM % 10))\nsleep 0.$((RANDOM % 5 + 1))\nif [ $r -eq 0 ]; then kill -9 $$; fi\nif [ $r -eq 1 ]; then echo \"crashed on purpose\" >&2; exit 3; fi\necho \"{\\\"value\\\": $SFT_PARAM_X}\"\n",
    );
    let study = command_study("soak", 200, "[\"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\", \"cpu\"]", "max_retries = 2\nmax_consecutive_failures = 1000")
        .replace("[\"python3\", \"objective.py\"]", "[\"bash\", \"objective.sh\"]");
    d.write("s.toml", &study);
    let mut rng_state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let mut kills = 0;
    let start = std::time::Instant::now();
    loop {
        assert!(start.elapsed() < Duration::from_secs(300), "soak did not finish");
        let mut child = d.spawn(&["-q", "run", "s.toml"]);
        let wait_ms = 700 + next() % 800;
        let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut exited = None;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match exited {
            Some(status) => {
                assert!(status.success(), "run failed: {}", {
                    let mut s = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use std::io::Read;
                        let _ = e.read_to_string(&mut s);
                    }
                    s
                });
                break;
            }
            None => {
                signal(&child, libc::SIGKILL);
                let _ = child.wait();
                kills += 1;
            }
        }
    }
    let trials = d.trials("s.toml");
    assert_numbers_unique(&trials);
    assert_eq!(count(&trials, "COMPLETE"), 200, "after {kills} kills");
    assert_eq!(count(&trials, "RUNNING"), 0);
    for t in trials.iter().filter(|t| state(t) == "FAIL") {
        let e = t["error"].as_str().unwrap_or("");
        assert!(
            e == "interrupted" || e.starts_with("worker exited: signal 9") || e.contains("crashed on purpose"),
            "failure without a clear reason: {t}"
        );
    }
    // Every retry re-runs its original's parameters.
    for t in trials.iter().filter(|t| !t["retry_of"].is_null()) {
        let orig = trials.iter().find(|o| o["number"] == t["retry_of"]).unwrap();
        assert_eq!(orig["params"], t["params"]);
        assert_eq!(state(orig), "FAIL");
    }
    assert!(kills >= 3, "the orchestrator should have been killed a few times, was {kills}");
}
