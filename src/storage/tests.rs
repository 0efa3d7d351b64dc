//! Store tests: layout, versions, transitions, claiming across writers, recovery.

use super::*;
use crate::space::Param;

fn space() -> SearchSpace {
    SearchSpace::new(vec![
        Param { name: "lr".into(), dist: Distribution::Float { low: 1e-5, high: 1e-2, log: true, step: None } },
        Param { name: "bs".into(), dist: Distribution::Categorical { choices: vec![ParamValue::Int(16), ParamValue::Str("big".into())] } },
        Param { name: "ep".into(), dist: Distribution::Int { low: 1, high: 5, step: 1, log: false } },
    ])
    .unwrap()
}

fn point(lr: f64, bs: ParamValue, ep: i64) -> ParamSet {
    [("lr".to_string(), ParamValue::Float(lr)), ("bs".to_string(), bs), ("ep".to_string(), ParamValue::Int(ep))].into_iter().collect()
}

fn open_study(path: &Path) -> (Store, StudyInfo) {
    let mut store = Store::open(path).unwrap();
    let sp = space();
    let info = store
        .create_or_open_study(&StudySpec {
            name: "s",
            direction: Direction::Maximize,
            metric: "acc",
            space: &sp,
            study_text: "",
            allow_space_change: false,
        })
        .unwrap();
    (store, info)
}

type NoErr = std::convert::Infallible;

fn claim(store: &mut Store, study: i64, n: Option<u64>, p: ParamSet) -> Claim {
    store
        .claim_next::<NoErr>(study, &space(), Budget { n_trials: n, patience: None }, &Owner::current(), "cpu", |_, _, _| Ok(Some(p)))
        .unwrap()
        .unwrap()
}

#[test]
fn fresh_file_gets_optuna_layout_and_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_study(&dir.path().join("a.db"));
    let v: (i64, String) =
        store.conn.query_row("SELECT schema_version, library_version FROM version_info", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    assert_eq!(v.0, schema::OPTUNA_SCHEMA_VERSION);
    let head: String = store.conn.query_row("SELECT version_num FROM alembic_version", [], |r| r.get(0)).unwrap();
    assert_eq!(head, schema::OPTUNA_ALEMBIC_HEAD);
    let uv: i64 = store.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(uv, schema::SCHEMA_VERSION);
    let mode: String = store.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(store.integrity_check().unwrap(), "ok");
    // Opening again is idempotent.
    drop(store);
    let (store, info) = open_study(&dir.path().join("a.db"));
    assert_eq!(info.direction, Direction::Maximize);
    assert_eq!(store.study_names().unwrap(), vec!["s".to_string()]);
}

#[test]
fn newer_schema_is_refused_without_touching_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("new.db");
    {
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 5).unwrap();
        c.execute("CREATE TABLE future (x)", []).unwrap();
    }
    let before = std::fs::read(&p).unwrap();
    match Store::open(&p) {
        Err(StoreError::NewerSchema { found, .. }) => assert_eq!(found, schema::SCHEMA_VERSION + 5),
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(std::fs::read(&p).unwrap(), before);
    let wal = dir.path().join("new.db-wal");
    assert!(!wal.exists());

    let p2 = dir.path().join("old-optuna.db");
    {
        let c = Connection::open(&p2).unwrap();
        c.execute_batch("CREATE TABLE version_info (version_info_id INTEGER PRIMARY KEY, schema_version INTEGER, library_version TEXT); INSERT INTO version_info VALUES (1, 11, '2.10.0');").unwrap();
    }
    assert!(matches!(Store::open(&p2), Err(StoreError::OptunaSchema { found: 11, .. })));
}

#[test]
fn trial_lifecycle_and_values_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    let Claim::Trial(t) = claim(&mut store, study.id, Some(3), point(1e-3, ParamValue::Str("big".into()), 2)) else { panic!() };
    assert_eq!(t.number, 0);
    store.report_intermediate(t.id, 1, 0.5, &[("loss".to_string(), Value::from(0.7))].into_iter().collect()).unwrap();
    store.report_intermediate(t.id, 2, f64::NAN, &Map::new()).unwrap();
    store.merge_metrics(t.id, &[("f1".to_string(), Value::from(0.8))].into_iter().collect()).unwrap();
    store.finish(t.id, &Outcome::Complete { value: 0.9 }, false).unwrap();
    // Finishing twice is refused by the state machine.
    assert!(matches!(store.finish(t.id, &Outcome::Complete { value: 0.1 }, false), Err(StoreError::Transition { .. })));
    let trials = store.trials(study.id).unwrap();
    assert_eq!(trials.len(), 1);
    let r = &trials[0];
    assert_eq!(r.state, TrialState::Complete);
    assert_eq!(r.value, Some(0.9));
    assert_eq!(r.params, point(1e-3, ParamValue::Str("big".into()), 2));
    assert_eq!(r.intermediate[0], (1, 0.5));
    assert!(r.intermediate[1].1.is_nan());
    assert_eq!(r.metrics["f1"], Value::from(0.8));
    assert_eq!(r.device.as_deref(), Some("cpu"));
    assert!(r.started_at.is_some() && r.finished_at.is_some());
    assert_eq!(store.step_metrics(t.id).unwrap()[0].1["loss"], Value::from(0.7));
    // The categorical is stored as Optuna does: the index of the choice.
    let pv: f64 = store.conn.query_row("SELECT param_value FROM trial_params WHERE param_name = 'bs'", [], |r| r.get(0)).unwrap();
    assert_eq!(pv, 1.0);
    // A checkpoint attribute is read back, and once removed it is gone (removing twice is fine).
    store.set_trial_attr(t.id, "checkpoint", &Value::from("/tmp/ckpt")).unwrap();
    assert_eq!(store.trials(study.id).unwrap()[0].checkpoint.as_deref(), Some("/tmp/ckpt"));
    store.remove_trial_attr(t.id, "checkpoint").unwrap();
    store.remove_trial_attr(t.id, "checkpoint").unwrap();
    assert_eq!(store.trials(study.id).unwrap()[0].checkpoint, None);
    assert_eq!(store.trials(study.id).unwrap()[0].metrics["f1"], Value::from(0.8), "other attributes stay");
}

#[test]
fn failures_queue_retries_and_waiting_trials_go_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    let p = point(1e-4, ParamValue::Int(16), 3);
    let Claim::Trial(t) = claim(&mut store, study.id, None, p.clone()) else { panic!() };
    let retry = store.finish(t.id, &Outcome::Failed { reason: "worker exited: signal 9".into() }, true).unwrap();
    assert_eq!(retry, Some(1));
    // The retry is claimed before anything new is sampled.
    let Claim::Trial(r) = claim(&mut store, study.id, None, point(1e-2, ParamValue::Int(16), 1)) else { panic!() };
    assert_eq!((r.number, r.retry_of, &r.params), (1, Some(0), &p));
    let trials = store.trials(study.id).unwrap();
    assert_eq!(trials[0].error.as_deref(), Some("worker exited: signal 9"));
    assert_eq!(trials[1].retry_of, Some(0));
    assert_eq!(retry_depth(&trials, &trials[1]), 1);
    // A retry of the retry knows both earlier attempts, newest first.
    assert_eq!(store.finish(r.id, &Outcome::Failed { reason: "interrupted".into() }, true).unwrap(), Some(2));
    let trials = store.trials(study.id).unwrap();
    assert_eq!(trials[2].retry_of, Some(1));
    assert_eq!(retried_attempts(&trials, trials[2].retry_of), vec![1, 0]);
    assert_eq!(retry_depth(&trials, &trials[2]), 2);
    assert_eq!(retried_attempts(&trials, None), Vec::<TrialNumber>::new());
}

#[test]
fn budget_counts_running_trials() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    let p = point(1e-4, ParamValue::Int(16), 3);
    let Claim::Trial(a) = claim(&mut store, study.id, Some(2), p.clone()) else { panic!() };
    let Claim::Trial(_) = claim(&mut store, study.id, Some(2), p.clone()) else { panic!() };
    assert_eq!(claim(&mut store, study.id, Some(2), p.clone()), Claim::Wait);
    store.finish(a.id, &Outcome::Failed { reason: "x".into() }, false).unwrap();
    assert!(matches!(claim(&mut store, study.id, Some(2), p.clone()), Claim::Trial(_)));
    let trials = store.trials(study.id).unwrap();
    for t in trials.iter().filter(|t| t.state == TrialState::Running) {
        store.finish(t.id, &Outcome::Pruned { step: 2, value: Some(0.3) }, false).unwrap();
    }
    assert_eq!(claim(&mut store, study.id, Some(2), p), Claim::BudgetReached);
}

#[test]
fn enqueue_uses_optuna_fixed_params() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    let p = point(3e-5, ParamValue::Int(16), 2);
    assert_eq!(store.enqueue(study.id, &space(), &p).unwrap(), 0);
    let fixed: String =
        store.conn.query_row("SELECT value_json FROM trial_system_attributes WHERE \"key\" = 'fixed_params'", [], |r| r.get(0)).unwrap();
    let fixed: Value = serde_json::from_str(&fixed).unwrap();
    assert_eq!(fixed["bs"], Value::from(16));
    let trials = store.trials(study.id).unwrap();
    assert_eq!((trials[0].state, &trials[0].params), (TrialState::Waiting, &p));
}

#[test]
fn a_partly_queued_trial_gets_the_rest_from_the_sampler_when_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    let partial: ParamSet = [("bs".to_string(), ParamValue::Str("big".into()))].into_iter().collect();
    assert_eq!(store.enqueue(study.id, &space(), &partial).unwrap(), 0);
    // Optuna's `enqueue_trial` queues the same way without parameter rows: only the
    // `fixed_params` attribute.
    let optuna_style = store.enqueue(study.id, &space(), &partial).unwrap();
    store
        .conn
        .execute("DELETE FROM trial_params WHERE trial_id = (SELECT trial_id FROM trials WHERE number = ?1)", params![optuna_style])
        .unwrap();
    store.conn.execute("UPDATE trial_system_attributes SET value_json = '{\"ep\": 4}' WHERE \"key\" = 'fixed_params' AND trial_id = (SELECT trial_id FROM trials WHERE number = ?1)", params![optuna_style]).unwrap();
    for (number, held) in [(0, ("bs", ParamValue::Str("big".into()))), (1, ("ep", ParamValue::Int(4)))] {
        let mut seen = None;
        let claimed = store
            .claim_next::<NoErr>(study.id, &space(), Budget::default(), &Owner::current(), "cpu", |history, n, fixed| {
                seen = Some((history.len(), n, fixed.cloned()));
                let mut p = point(1e-3, ParamValue::Int(16), 2);
                p.extend(fixed.cloned().unwrap_or_default());
                Ok(Some(p))
            })
            .unwrap()
            .unwrap();
        let Claim::Trial(t) = claimed else { panic!("{claimed:?}") };
        let fixed: ParamSet = [(held.0.to_string(), held.1.clone())].into_iter().collect();
        assert_eq!(seen, Some((2, number, Some(fixed))), "the sampler is asked for trial {number} with what it holds");
        assert_eq!((t.number, t.params.len(), &t.params[held.0]), (number, 3, &held.1));
        let stored = store.trials(study.id).unwrap().remove(number as usize);
        assert_eq!((stored.state, &stored.params), (TrialState::Running, &t.params), "every parameter is recorded");
    }
    // A fully queued trial never asks the sampler.
    store.enqueue(study.id, &space(), &point(2e-3, ParamValue::Int(16), 1)).unwrap();
    let claimed = store
        .claim_next::<NoErr>(study.id, &space(), Budget::default(), &Owner::current(), "cpu", |_, _, _| panic!("asked"))
        .unwrap()
        .unwrap();
    assert!(matches!(claimed, Claim::Trial(t) if t.number == 2));
}

#[test]
fn a_changed_space_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open_study(&dir.path().join("a.db"));
    let other =
        SearchSpace::new(vec![Param { name: "lr".into(), dist: Distribution::Float { low: 0.1, high: 1.0, log: false, step: None } }])
            .unwrap();
    let spec =
        StudySpec { name: "s", direction: Direction::Maximize, metric: "acc", space: &other, study_text: "", allow_space_change: false };
    assert!(matches!(store.create_or_open_study(&spec), Err(StoreError::SpaceChanged { .. })));
    assert!(store.create_or_open_study(&StudySpec { allow_space_change: true, ..spec.clone() }).is_ok());
    let flipped = StudySpec { direction: Direction::Minimize, allow_space_change: true, ..spec };
    assert!(matches!(store.create_or_open_study(&flipped), Err(StoreError::DirectionChanged { .. })));
}

/// The pid of a process that has exited.
fn exited_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

/// Claims a trial of `p` for `owner` on `device`, with no budget.
fn claim_as(store: &mut Store, study: i64, owner: &Owner, device: &str, p: &ParamSet) -> Claim {
    store.claim_next::<NoErr>(study, &space(), Budget::default(), owner, device, |_, _, _| Ok(Some(p.clone()))).unwrap().unwrap()
}

#[test]
fn orphans_of_dead_owners_are_failed_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    let p = point(1e-4, ParamValue::Int(16), 3);
    // One trial owned by a process that no longer exists, one by us (alive).
    let dead = Owner { host: hostname(), pid: exited_pid(), start: None, worker_id: None, asked: false };
    let Claim::Trial(a) = claim_as(&mut store, study.id, &dead, "cuda:1", &p) else { panic!() };
    let Claim::Trial(b) = claim(&mut store, study.id, None, p.clone()) else { panic!() };
    let rec = store.recover_orphans(study.id, Duration::from_secs(3600), 1).unwrap();
    assert_eq!(rec, vec![Recovered { number: a.number, retry: Some(2) }]);
    let trials = store.trials(study.id).unwrap();
    assert_eq!(trials[0].state, TrialState::Fail);
    assert_eq!(trials[0].error.as_deref(), Some("interrupted"));
    assert_eq!(trials[1].state, TrialState::Running);
    assert_eq!((trials[2].state, trials[2].retry_of, &trials[2].params), (TrialState::Waiting, Some(0), &p));
    // A silent owner on another host is judged by heartbeat age.
    let remote = Owner { host: "elsewhere".into(), pid: 1, start: None, worker_id: None, asked: false };
    store
        .conn
        .execute(
            "UPDATE trial_system_attributes SET value_json = ?1 WHERE trial_id = ?2 AND \"key\" = 'sft:owner'",
            params![serde_json::to_string(&remote).unwrap(), b.id],
        )
        .unwrap();
    assert!(store.recover_orphans(study.id, Duration::from_secs(3600), 1).unwrap().is_empty());
    store.conn.execute("UPDATE trial_heartbeats SET heartbeat = '2000-01-01 00:00:00.000000' WHERE trial_id = ?1", [b.id]).unwrap();
    let rec = store.recover_orphans(study.id, Duration::from_secs(3600), 0).unwrap();
    assert_eq!(rec, vec![Recovered { number: b.number, retry: None }]);
}

#[test]
fn an_asked_trial_is_never_an_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    let p = point(1e-4, ParamValue::Int(16), 3);
    // Asked by a process that has exited, with no heartbeat ever: the user's program runs it.
    let asked = Owner { host: hostname(), pid: exited_pid(), start: None, worker_id: None, asked: true };
    assert!(!asked.is_dead_here());
    let Claim::Trial(a) = claim_as(&mut store, study.id, &asked, "external", &p) else { panic!() };
    store.conn.execute("DELETE FROM trial_heartbeats WHERE trial_id = ?1", [a.id]).unwrap();
    assert!(store.recover_orphans(study.id, Duration::ZERO, 1).unwrap().is_empty());
    assert_eq!(store.running_elsewhere(study.id, Duration::ZERO).unwrap(), vec![a.number]);
    assert_eq!(store.trial_owner(a.id).unwrap(), Some(asked));
    assert_eq!(store.trials(study.id).unwrap()[0].state, TrialState::Running);
}

#[test]
fn two_writers_never_share_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let (_, study) = open_study(&path);
    let handles: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut store = Store::open(&path).unwrap();
                let mut got = Vec::new();
                loop {
                    match claim(&mut store, study.id, Some(40), point(1e-4, ParamValue::Int(16), 1 + w)) {
                        Claim::Trial(t) => {
                            store.finish(t.id, &Outcome::Complete { value: w as f64 }, false).unwrap();
                            got.push(t.number);
                        }
                        Claim::Wait => std::thread::sleep(Duration::from_millis(1)),
                        _ => break,
                    }
                }
                got
            })
        })
        .collect();
    let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}

/// Regression: two `run` processes starting on a new database at the same moment — one got
/// "database is locked" from the switch to WAL, which bypasses the busy handler.
#[test]
fn many_openers_of_a_new_file_at_once_all_succeed() {
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("new-{round}.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let mut store = Store::open(&path).map_err(|e| e.to_string())?;
                    let sp = space();
                    let spec = StudySpec {
                        name: "s",
                        direction: Direction::Minimize,
                        metric: "v",
                        space: &sp,
                        study_text: "",
                        allow_space_change: false,
                    };
                    store.create_or_open_study(&spec).map(|s| s.id).map_err(|e| e.to_string())
                })
            })
            .collect();
        let ids: Vec<std::result::Result<i64, String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for id in &ids {
            assert_eq!(id, &Ok(1), "{ids:?}");
        }
    }
}

#[test]
fn an_exited_process_not_yet_reaped_counts_as_dead() {
    // A killed orchestrator stays a zombie until its parent reaps it; signal 0 still finds it,
    // so `status` and orphan recovery must read its state instead.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let start = std::time::Instant::now();
    while !is_zombie(pid) {
        assert!(start.elapsed() < std::time::Duration::from_secs(5), "`true` did not exit");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let owner = Owner { host: hostname(), pid, start: None, worker_id: None, asked: false };
    assert!(owner.is_dead_here());
    child.wait().unwrap();
    assert!(owner.is_dead_here(), "and once reaped");
    assert!(!Owner::current().is_dead_here(), "this process is alive");
}

#[test]
fn patience_stops_new_trials_but_waits_for_running_ones_and_runs_queued_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, study) = open_study(&dir.path().join("a.db"));
    // Maximise: 0.8, then two trials that do not beat it.
    let patience = crate::trial::Patience { trials: 2, min_delta: 0.0, direction: Direction::Maximize };
    let budget = Budget { n_trials: Some(100), patience: Some(patience) };
    let claim_with = |store: &mut Store| {
        store
            .claim_next::<NoErr>(study.id, &space(), budget, &Owner::current(), "cpu", |_, _, _| {
                Ok(Some(point(1e-4, ParamValue::Int(16), 2)))
            })
            .unwrap()
            .unwrap()
    };
    for v in [0.8, 0.7] {
        let Claim::Trial(t) = claim_with(&mut store) else { panic!("a trial") };
        store.finish(t.id, &Outcome::Complete { value: v }, false).unwrap();
    }
    // One without improvement so far: the third runs; while it runs, patience is not spent.
    let Claim::Trial(third) = claim_with(&mut store) else { panic!("a trial") };
    let Claim::Trial(fourth) = claim_with(&mut store) else { panic!("still one trial of patience left") };
    store.finish(third.id, &Outcome::Complete { value: 0.75 }, false).unwrap();
    // Two without improvement, one still running: it may improve, so wait.
    assert_eq!(claim_with(&mut store), Claim::Wait);
    store.finish(fourth.id, &Outcome::Pruned { step: 1, value: Some(0.1) }, false).unwrap();
    assert_eq!(claim_with(&mut store), Claim::Plateau);
    // A queued trial still runs: it was asked for.
    store.enqueue(study.id, &space(), &point(1e-3, ParamValue::Int(16), 3)).unwrap();
    assert!(matches!(claim_with(&mut store), Claim::Trial(_)));
}
