//! The SQLite store, in Optuna's own layout (see `schema`).
//!
//! Every state change is one short transaction; a new trial is claimed with `BEGIN IMMEDIATE`
//! (so the history a sampler reads and the trial number it gets are consistent across all
//! processes sharing the file), and a WAITING trial is taken with a conditional
//! `UPDATE … WHERE state = 'WAITING'`, so no trial ever runs twice.
//!
//! Where Optuna has no column, we use its attribute tables — trial user attributes `device`,
//! `error`, `retry_of`, `metrics`, `checkpoint` (shown by optuna-dashboard), the system
//! attribute `sft:owner` (host, pid, process start) and Optuna's own `fixed_params` for queued
//! trials; study user attributes `sft:*` — and `sft_` tables for per-step metrics and workers.

mod read_extra;
pub mod schema;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::{Map, Value};

use crate::space::{Distribution, ParamSet, ParamValue, SearchSpace};
use crate::trial::{Direction, Outcome, TrialNumber, TrialRecord, TrialState};

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("database {path} was written by a newer sft-search (schema {found}, this build knows {known}); it was not touched — upgrade sft-search")]
    NewerSchema { path: PathBuf, found: i64, known: i64 },
    #[error("database {path} has Optuna schema version {found}, this build reads version {known} (Optuna ≥ 3.2); it was not touched — run `optuna storage upgrade --storage sqlite:///{path}` or use a new storage file")]
    OptunaSchema { path: PathBuf, found: i64, known: i64 },
    #[error("no database at {0} (run the study first)")]
    Missing(PathBuf),
    #[error("no study named `{name}` in {path}")]
    StudyNotFound { name: String, path: PathBuf },
    #[error("study `{name}` in {path} is a {found} study, the study file says {wanted}")]
    DirectionChanged { name: String, path: PathBuf, found: String, wanted: String },
    #[error("study `{name}`: the search space differs from the one the study was created with (stored hash {stored}, now {now}); pass --allow-space-change to continue anyway")]
    SpaceChanged { name: String, stored: String, now: String },
    #[error("trial {number}: cannot go from {from} to {to}")]
    Transition { number: TrialNumber, from: TrialState, to: TrialState },
    #[error("trial {number}: stored data is unreadable: {what}")]
    Corrupt { number: TrialNumber, what: String },
}

type Result<T> = std::result::Result<T, StoreError>;

/// The identity of the process that runs a trial, to tell a live owner from a dead one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    pub host: String,
    pub pid: u32,
    /// The process start time in clock ticks since boot (Linux), against pid reuse.
    pub start: Option<u64>,
    /// Our row in `sft_workers`.
    pub worker_id: Option<i64>,
    /// Handed out by `sft-search ask`: the user's program runs the trial and ends it with
    /// `sft-search tell`, so the asking process exiting (and the missing heartbeats) say
    /// nothing about it; it is never taken for an orphan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub asked: bool,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner { host: hostname(), pid, start: process_start(pid), worker_id: None, asked: false }
    }

    /// This process, handing out a trial that the user's program runs (`sft-search ask`).
    pub fn asking() -> Owner {
        Owner { asked: true, ..Owner::current() }
    }

    /// Whether the owner is known to be gone: it ran on this host and its process no longer
    /// exists (or the pid now belongs to another process). Owners on other hosts are judged
    /// by heartbeat age instead; an asked trial's owner is never gone.
    pub fn is_dead_here(&self) -> bool {
        if self.asked || self.host != hostname() {
            return false;
        }
        // SAFETY: signal 0 only checks that the process exists.
        let exists =
            unsafe { libc::kill(self.pid as libc::pid_t, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !exists {
            return true;
        }
        // One read of /proc/PID/stat: a zombie has exited (signal 0 still finds it until it
        // is reaped), and another start time means the pid was reused.
        let Some(stat) = proc_stat(self.pid) else { return false };
        stat_is_zombie(&stat) || matches!((self.start, stat_start(&stat)), (Some(a), Some(b)) if a != b)
    }
}

/// Whether the owner of RUNNING trial `t` is gone: dead on this host, or silent (no heartbeat,
/// else no start) for longer than `heartbeat_timeout`.
fn owner_gone(conn: &Connection, t: &TrialRecord, now: chrono::NaiveDateTime, heartbeat_timeout: Duration) -> rusqlite::Result<bool> {
    let owner = read_owner(conn, t.id)?;
    let beat_at: Option<String> =
        conn.query_row("SELECT heartbeat FROM trial_heartbeats WHERE trial_id = ?1", [t.id], |r| r.get(0)).optional()?;
    let last_sign = beat_at.as_deref().or(t.started_at.as_deref()).and_then(parse_time);
    let silent_for = last_sign.map(|l| (now - l).to_std().unwrap_or_default());
    let stale = silent_for.is_none_or(|s| s > heartbeat_timeout);
    Ok(match &owner {
        Some(o) if o.asked => false,
        Some(o) => o.is_dead_here() || stale,
        None => stale,
    })
}

/// Whether SQLite said the database is busy or locked.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// This machine's host name.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().to_string()
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces): the state
/// first (field 3).
fn proc_stat(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 1..].trim_start().to_string())
}

/// Whether the process has exited and only waits to be reaped (state `Z` or `X`): signal 0
/// still finds it, but it runs nothing any more.
fn stat_is_zombie(stat: &str) -> bool {
    matches!(stat.split_whitespace().next(), Some("Z" | "X"))
}

/// The start time in clock ticks since boot (field 22 of /proc/PID/stat).
fn stat_start(stat: &str) -> Option<u64> {
    stat.split_whitespace().nth(19)?.parse().ok()
}

/// The start time of `pid` in clock ticks since boot.
fn process_start(pid: u32) -> Option<u64> {
    stat_start(&proc_stat(pid)?)
}

/// Whether `pid` has exited and waits to be reaped.
#[cfg(test)]
fn is_zombie(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|s| stat_is_zombie(&s))
}

/// The process that runs (or ran) trial `trial_id`, as it recorded itself when it claimed it.
fn read_owner(conn: &Connection, trial_id: i64) -> rusqlite::Result<Option<Owner>> {
    let json: Option<String> = conn
        .query_row("SELECT value_json FROM trial_system_attributes WHERE trial_id = ?1 AND \"key\" = 'sft:owner'", [trial_id], |r| r.get(0))
        .optional()?;
    Ok(json.and_then(|s| serde_json::from_str(&s).ok()))
}

/// The current local time as Optuna (SQLAlchemy) writes DATETIME columns.
pub fn now_text() -> String {
    chrono::Local::now().naive_local().format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Parses a DATETIME column back.
pub fn parse_time(s: &str) -> Option<chrono::NaiveDateTime> {
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .ok()
}

/// Seconds from `a` to `b`.
pub fn seconds_between(a: &str, b: &str) -> Option<f64> {
    Some((parse_time(b)? - parse_time(a)?).num_microseconds()? as f64 / 1e6)
}

/// A study as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StudyInfo {
    pub id: i64,
    pub name: String,
    pub direction: Direction,
    pub user_attrs: Map<String, Value>,
}

/// What to do before creating or opening a study.
#[derive(Debug, Clone)]
pub struct StudySpec<'a> {
    pub name: &'a str,
    pub direction: Direction,
    pub metric: &'a str,
    pub space: &'a SearchSpace,
    pub study_text: &'a str,
    pub allow_space_change: bool,
}

/// The result of asking for the next trial to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// A trial to run now.
    Trial(ClaimedTrial),
    /// The budget is filled by trials running elsewhere; one of them may still fail.
    Wait,
    /// Enough trials have finished.
    BudgetReached,
    /// The sampler has nothing left to propose (an exhausted grid).
    Exhausted,
    /// `[study] patience` finished trials in a row have not improved the best value.
    Plateau,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedTrial {
    pub id: i64,
    pub number: TrialNumber,
    pub params: ParamSet,
    pub retry_of: Option<TrialNumber>,
}

/// How many COMPLETE or PRUNED trials end the study (None: no limit), and how long it waits
/// for an improvement (`[study] patience`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Budget {
    pub n_trials: Option<u64>,
    pub patience: Option<crate::trial::Patience>,
}

/// A RUNNING trial found without a live owner.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovered {
    pub number: TrialNumber,
    pub retry: Option<TrialNumber>,
}

/// A worker process registered for a study.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRow {
    pub id: i64,
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    pub last_seen: String,
    pub slots: String,
    pub state: String,
}

impl WorkerRow {
    /// Whether this worker is known to be gone: it ran on this host and its process no longer
    /// exists (a worker on another host is judged by `last_seen`).
    pub fn is_gone(&self) -> bool {
        let Ok(pid) = u32::try_from(self.pid) else { return false };
        Owner { host: self.host.clone(), pid, start: None, worker_id: Some(self.id), asked: false }.is_dead_here()
    }
}

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn value_type(v: f64) -> &'static str {
    if v.is_nan() {
        "NAN"
    } else if v == f64::INFINITY {
        "INF_POS"
    } else if v == f64::NEG_INFINITY {
        "INF_NEG"
    } else {
        "FINITE"
    }
}

fn from_value_type(v: Option<f64>, t: &str) -> Option<f64> {
    match t {
        "INF_POS" => Some(f64::INFINITY),
        "INF_NEG" => Some(f64::NEG_INFINITY),
        "NAN" => Some(f64::NAN),
        _ => v,
    }
}

/// Optuna stores ±inf as NULL with a type tag, and NaN likewise.
fn stored_number(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

impl Store {
    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite { path: self.path.clone(), source }
    }

    fn configure(conn: &Connection) -> rusqlite::Result<()> {
        conn.busy_timeout(Duration::from_secs(60))?;
        // Switching to WAL needs an exclusive lock; only the first opener has to do it.
        let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            conn.pragma_update(None, "journal_mode", "WAL")?;
        }
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(())
    }

    /// Opens the database, creating it (and its folder) if needed.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Sqlite {
                    path: path.to_path_buf(),
                    source: rusqlite::Error::InvalidPath(PathBuf::from(format!("{}: {e}", dir.display()))),
                })?;
            }
        }
        Self::open_inner(path)
    }

    /// Opens an existing database; a missing file is an error (nothing is created).
    pub fn open_existing(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.to_path_buf()));
        }
        Self::open_inner(path)
    }

    fn open_inner(path: &Path) -> Result<Store> {
        let sq = |source| StoreError::Sqlite { path: path.to_path_buf(), source };
        let mut conn = Connection::open(path).map_err(sq)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(sq)?;
        // Check versions before writing anything.
        match schema::check(&conn).map_err(sq)? {
            Some(schema::SchemaProblem::NewerOurs { found }) => {
                return Err(StoreError::NewerSchema { path: path.to_path_buf(), found, known: schema::SCHEMA_VERSION })
            }
            Some(schema::SchemaProblem::OtherOptuna { found }) => {
                return Err(StoreError::OptunaSchema { path: path.to_path_buf(), found, known: schema::OPTUNA_SCHEMA_VERSION })
            }
            None => {}
        }
        // Several processes may create the same new file at once: the journal-mode switch and
        // the first migration can then meet SQLITE_BUSY without the busy handler; try again.
        let started = std::time::Instant::now();
        let mut attempt: u64 = 0;
        loop {
            match Self::configure(&conn).and_then(|_| schema::migrate(&mut conn)) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < Duration::from_secs(60) => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(5 + (attempt * 7 + u64::from(std::process::id())) % 40));
                }
                Err(e) => return Err(sq(e)),
            }
        }
        Ok(Store { conn, path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `PRAGMA integrity_check` and returns its verdict (`ok` when healthy).
    pub fn integrity_check(&self) -> Result<String> {
        self.conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).map_err(|e| self.err(e))
    }

    // ----- studies -----

    /// Names of all studies in the file.
    pub fn study_names(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT study_name FROM studies ORDER BY study_id").map_err(|e| self.err(e))?;
        let rows = st.query_map([], |r| r.get(0)).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<String>>>().map_err(|e| self.err(e))
    }

    /// A stored study by name.
    pub fn find_study(&self, name: &str) -> Result<Option<StudyInfo>> {
        let row: Option<i64> = self
            .conn
            .query_row("SELECT study_id FROM studies WHERE study_name = ?1", [name], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(id) = row else { return Ok(None) };
        let dir: Option<String> = self
            .conn
            .query_row("SELECT direction FROM study_directions WHERE study_id = ?1 AND objective = 0", [id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        let direction = if dir.as_deref() == Some("MAXIMIZE") { Direction::Maximize } else { Direction::Minimize };
        let mut st =
            self.conn.prepare("SELECT \"key\", value_json FROM study_user_attributes WHERE study_id = ?1").map_err(|e| self.err(e))?;
        let attrs = st
            .query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| self.err(e))?
            .filter_map(|r| r.ok())
            .map(|(k, v)| (k, serde_json::from_str(&v).unwrap_or(Value::String(v))))
            .collect();
        Ok(Some(StudyInfo { id, name: name.to_string(), direction, user_attrs: attrs }))
    }

    /// The stored study, which must exist.
    pub fn study(&self, name: &str) -> Result<StudyInfo> {
        self.find_study(name)?.ok_or_else(|| StoreError::StudyNotFound { name: name.to_string(), path: self.path.clone() })
    }

    /// Creates the study, or opens it after checking that direction and space still match.
    pub fn create_or_open_study(&mut self, spec: &StudySpec) -> Result<StudyInfo> {
        let path = self.path.clone();
        let hash = spec.space.hash();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::Sqlite { path: path.clone(), source: e })?;
        let sq = |source| StoreError::Sqlite { path: path.clone(), source };
        let existing: Option<i64> =
            tx.query_row("SELECT study_id FROM studies WHERE study_name = ?1", [spec.name], |r| r.get(0)).optional().map_err(sq)?;
        match existing {
            None => {
                tx.execute("INSERT INTO studies (study_name) VALUES (?1)", [spec.name]).map_err(sq)?;
                let id = tx.last_insert_rowid();
                tx.execute(
                    "INSERT INTO study_directions (direction, study_id, objective) VALUES (?1, ?2, 0)",
                    params![spec.direction.as_optuna(), id],
                )
                .map_err(sq)?;
                let attrs = [
                    ("sft:space_hash", Value::String(hash.clone())),
                    ("sft:study_file", Value::String(spec.study_text.to_string())),
                    ("sft:metric", Value::String(spec.metric.to_string())),
                    ("sft:version", Value::String(env!("CARGO_PKG_VERSION").to_string())),
                ];
                for (k, v) in attrs {
                    tx.execute(
                        "INSERT INTO study_user_attributes (study_id, \"key\", value_json) VALUES (?1, ?2, ?3)",
                        params![id, k, v.to_string()],
                    )
                    .map_err(sq)?;
                }
                // Optuna's study.set_metric_names: the dashboard labels the objective with it.
                tx.execute(
                    "INSERT INTO study_system_attributes (study_id, \"key\", value_json) VALUES (?1, 'study:metric_names', ?2)",
                    params![id, serde_json::json!([spec.metric]).to_string()],
                )
                .map_err(sq)?;
            }
            Some(id) => {
                let dir: Option<String> = tx
                    .query_row("SELECT direction FROM study_directions WHERE study_id = ?1 AND objective = 0", [id], |r| r.get(0))
                    .optional()
                    .map_err(sq)?;
                if let Some(d) = dir {
                    if d != spec.direction.as_optuna() {
                        return Err(StoreError::DirectionChanged {
                            name: spec.name.to_string(),
                            path: path.clone(),
                            found: d.to_lowercase(),
                            wanted: spec.direction.as_optuna().to_lowercase(),
                        });
                    }
                }
                let stored: Option<String> = tx
                    .query_row(
                        "SELECT value_json FROM study_user_attributes WHERE study_id = ?1 AND \"key\" = 'sft:space_hash'",
                        [id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sq)?;
                let stored = stored.and_then(|s| serde_json::from_str::<String>(&s).ok());
                match stored {
                    Some(s) if s != hash && !spec.allow_space_change => {
                        return Err(StoreError::SpaceChanged { name: spec.name.to_string(), stored: s, now: hash })
                    }
                    _ => {
                        tx.execute(
                            "INSERT INTO study_user_attributes (study_id, \"key\", value_json) VALUES (?1, 'sft:space_hash', ?2)
                             ON CONFLICT (study_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
                            params![id, Value::String(hash.clone()).to_string()],
                        )
                        .map_err(sq)?;
                    }
                }
            }
        }
        tx.commit().map_err(sq)?;
        self.study(spec.name)
    }

    // ----- reading trials -----

    /// Every trial of the study, in number order, with everything stored about it.
    pub fn trials(&self, study_id: i64) -> Result<Vec<TrialRecord>> {
        read_trials(&self.conn, study_id).map_err(|e| e.into_store(&self.path))
    }

    /// Per-step metrics of one trial: step → (name → value).
    pub fn step_metrics(&self, trial_id: i64) -> Result<Vec<(i64, Map<String, Value>)>> {
        let mut st = self
            .conn
            .prepare("SELECT step, name, value FROM sft_trial_metrics WHERE trial_id = ?1 ORDER BY step, name")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([trial_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<f64>>(2)?)))
            .map_err(|e| self.err(e))?;
        let mut out: Vec<(i64, Map<String, Value>)> = Vec::new();
        for row in rows {
            let (step, name, value) = row.map_err(|e| self.err(e))?;
            if out.last().map(|l| l.0) != Some(step) {
                out.push((step, Map::new()));
            }
            if let Some(last) = out.last_mut() {
                last.1.insert(name, value.map(Value::from).unwrap_or(Value::Null));
            }
        }
        Ok(out)
    }

    // ----- claiming -----

    /// Takes the next trial to run, in one write transaction: a WAITING trial first (lowest
    /// number), else a new one with the parameters `propose` makes from the whole history.
    /// `propose` gets the history, the trial's number and, for a WAITING trial that lacks
    /// some parameters (a partly enqueued point, ours or Optuna's `fixed_params`), the
    /// parameters it has; it must return a full point that keeps them.
    pub fn claim_next<E>(
        &mut self,
        study_id: i64,
        space: &SearchSpace,
        budget: Budget,
        owner: &Owner,
        device: &str,
        propose: impl FnOnce(&[TrialRecord], TrialNumber, Option<&ParamSet>) -> std::result::Result<Option<ParamSet>, E>,
    ) -> Result<std::result::Result<Claim, E>> {
        let path = self.path.clone();
        let sq = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq)?;
        let history = read_trials(&tx, study_id).map_err(|e| e.into_store(&path))?;
        let count = |s: TrialState| history.iter().filter(|t| t.state == s).count() as u64;
        let done = count(TrialState::Complete) + count(TrialState::Pruned);
        let running = count(TrialState::Running);
        if let Some(n) = budget.n_trials {
            if done >= n {
                return Ok(Ok(Claim::BudgetReached));
            }
            if done + running >= n {
                return Ok(Ok(Claim::Wait));
            }
        }
        let now = now_text();
        let owner_json = serde_json::to_string(owner).unwrap_or_default();
        if let Some(w) = history.iter().find(|t| t.state == TrialState::Waiting) {
            let fixed = queued_params(&tx, w, space).map_err(sq)?;
            let params = if space.missing(&fixed).is_empty() {
                fixed
            } else {
                match propose(&history, w.number, Some(&fixed)) {
                    Err(e) => return Ok(Err(e)),
                    Ok(None) => return Ok(Ok(Claim::Exhausted)),
                    Ok(Some(p)) => p,
                }
            };
            let changed = tx
                .execute(
                    "UPDATE trials SET state = 'RUNNING', datetime_start = ?1 WHERE trial_id = ?2 AND state = 'WAITING'",
                    params![now, w.id],
                )
                .map_err(sq)?;
            if changed == 1 {
                let added: ParamSet =
                    params.iter().filter(|(k, _)| !w.params.contains_key(*k)).map(|(k, v)| (k.clone(), v.clone())).collect();
                insert_params(&tx, w.id, &with_distributions(space, &added)).map_err(sq)?;
                set_attr(&tx, "trial_user_attributes", w.id, "device", &Value::String(device.to_string())).map_err(sq)?;
                set_attr_raw(&tx, "trial_system_attributes", w.id, "sft:owner", &owner_json).map_err(sq)?;
                beat(&tx, w.id, &now).map_err(sq)?;
                tx.commit().map_err(sq)?;
                return Ok(Ok(Claim::Trial(ClaimedTrial { id: w.id, number: w.number, params, retry_of: w.retry_of })));
            }
            // Unreachable inside this write transaction; were it not, another process has
            // just taken the trial, and the next call looks again.
            return Ok(Ok(Claim::Wait));
        }
        // Waiting for an improvement has run out: no new sampled trial. While trials still
        // run, one of them may improve the best and restart the count, so wait for them.
        if budget.patience.is_some_and(|p| p.is_spent(&history)) {
            return Ok(Ok(if running > 0 { Claim::Wait } else { Claim::Plateau }));
        }
        let number = history.len() as TrialNumber;
        let params = match propose(&history, number, None) {
            Err(e) => return Ok(Err(e)),
            Ok(None) => return Ok(Ok(Claim::Exhausted)),
            Ok(Some(p)) => p,
        };
        let id = insert_trial(&tx, study_id, number, TrialState::Running, &now, &with_distributions(space, &params), None).map_err(sq)?;
        set_attr(&tx, "trial_user_attributes", id, "device", &Value::String(device.to_string())).map_err(sq)?;
        set_attr_raw(&tx, "trial_system_attributes", id, "sft:owner", &owner_json).map_err(sq)?;
        beat(&tx, id, &now).map_err(sq)?;
        tx.commit().map_err(sq)?;
        Ok(Ok(Claim::Trial(ClaimedTrial { id, number, params, retry_of: None })))
    }

    /// Queues a trial with the given parameters (Optuna's `enqueue_trial`: a WAITING trial
    /// with system attribute `fixed_params`). Returns its number.
    pub fn enqueue(&mut self, study_id: i64, space: &SearchSpace, params: &ParamSet) -> Result<TrialNumber> {
        let path = self.path.clone();
        let sq = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq)?;
        let number = insert_waiting(&tx, study_id, space, params).map_err(sq)?;
        tx.commit().map_err(sq)?;
        Ok(number)
    }

    /// Queues the study file's `[[enqueue]]` points, in order, except those this study has
    /// queued before (a study system attribute lists their trials, written in the same
    /// transaction), so a resumed study never runs a point twice and points added at the end
    /// of the file later are queued then. Returns (index of the point, trial number) for each
    /// point queued now.
    pub fn enqueue_study_file_points(
        &mut self,
        study_id: i64,
        space: &SearchSpace,
        points: &[ParamSet],
    ) -> Result<Vec<(usize, TrialNumber)>> {
        if points.is_empty() {
            return Ok(Vec::new());
        }
        let path = self.path.clone();
        let sq = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq)?;
        let done: Option<String> = tx
            .query_row(
                "SELECT value_json FROM study_system_attributes WHERE study_id = ?1 AND \"key\" = ?2",
                params![study_id, STUDY_FILE_ENQUEUED],
                |r| r.get(0),
            )
            .optional()
            .map_err(sq)?;
        // The mark lists the trials queued so far, one per point in file order.
        let mut numbers: Vec<TrialNumber> =
            done.as_deref().and_then(|d| serde_json::from_str::<Vec<TrialNumber>>(d).ok()).unwrap_or_default();
        if done.is_some() && numbers.is_empty() {
            return Ok(Vec::new()); // a mark this build cannot read: queue nothing twice
        }
        let first_new = numbers.len();
        if points.len() <= first_new {
            return Ok(Vec::new());
        }
        let added = points[first_new..]
            .iter()
            .map(|p| insert_waiting(&tx, study_id, space, p))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sq)?;
        numbers.extend(&added);
        tx.execute(
            "INSERT INTO study_system_attributes (study_id, \"key\", value_json) VALUES (?1, ?2, ?3)
             ON CONFLICT (study_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
            params![study_id, STUDY_FILE_ENQUEUED, Value::from(numbers).to_string()],
        )
        .map_err(sq)?;
        tx.commit().map_err(sq)?;
        Ok(added.into_iter().enumerate().map(|(i, n)| (first_new + i, n)).collect())
    }

    // ----- while running -----

    /// Records an intermediate value (and the metrics measured with it).
    pub fn report_intermediate(&self, trial_id: i64, step: i64, value: f64, metrics: &Map<String, Value>) -> Result<()> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        tx.execute(
            "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = excluded.intermediate_value, intermediate_value_type = excluded.intermediate_value_type",
            params![trial_id, step, stored_number(value), value_type(value)],
        )
        .map_err(|e| self.err(e))?;
        for (name, v) in metrics {
            if let Some(x) = v.as_f64() {
                tx.execute(
                    "INSERT INTO sft_trial_metrics (trial_id, step, name, value) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (trial_id, step, name) DO UPDATE SET value = excluded.value",
                    params![trial_id, step, name, stored_number(x)],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Merges `metrics` into the trial's `metrics` attribute.
    pub fn merge_metrics(&self, trial_id: i64, metrics: &Map<String, Value>) -> Result<()> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        let current: Option<String> = tx
            .query_row("SELECT value_json FROM trial_user_attributes WHERE trial_id = ?1 AND \"key\" = 'metrics'", [trial_id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        let mut merged: Map<String, Value> = current.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or_default();
        for (k, v) in metrics {
            merged.insert(k.clone(), v.clone());
        }
        set_attr(&tx, "trial_user_attributes", trial_id, "metrics", &Value::Object(merged)).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Sets one trial user attribute.
    pub fn set_trial_attr(&self, trial_id: i64, key: &str, value: &Value) -> Result<()> {
        set_attr(&self.conn, "trial_user_attributes", trial_id, key, value).map_err(|e| self.err(e))
    }

    /// Removes one trial user attribute (nothing when it is not there).
    pub fn remove_trial_attr(&self, trial_id: i64, key: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM trial_user_attributes WHERE trial_id = ?1 AND \"key\" = ?2", params![trial_id, key])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Sets one study user attribute.
    pub fn set_study_attr(&self, study_id: i64, key: &str, value: &Value) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO study_user_attributes (study_id, \"key\", value_json) VALUES (?1, ?2, ?3)
                 ON CONFLICT (study_id, \"key\") DO UPDATE SET value_json = excluded.value_json",
                params![study_id, key, value.to_string()],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Writes heartbeats for the given trials.
    pub fn heartbeat(&self, trial_ids: &[i64]) -> Result<()> {
        let now = now_text();
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate).map_err(|e| self.err(e))?;
        for id in trial_ids {
            beat(&tx, *id, &now).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Ends a RUNNING trial with its outcome, in one transaction; a failure may queue a retry
    /// with the same parameters (returned).
    pub fn finish(&mut self, trial_id: i64, outcome: &Outcome, retry: bool) -> Result<Option<TrialNumber>> {
        let path = self.path.clone();
        let sq = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq)?;
        let r = finish_in(&tx, trial_id, outcome, retry).map_err(|e| e.into_store(&path))?;
        tx.commit().map_err(sq)?;
        Ok(r)
    }

    /// Fails every RUNNING trial of the study whose owner is gone — dead on this host, or
    /// silent for longer than `heartbeat_timeout` — with error "interrupted", and queues
    /// retries (at most `max_retries` in a chain).
    pub fn recover_orphans(&mut self, study_id: i64, heartbeat_timeout: Duration, max_retries: usize) -> Result<Vec<Recovered>> {
        let path = self.path.clone();
        let sq = |source| StoreError::Sqlite { path: path.clone(), source };
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sq)?;
        let history = read_trials(&tx, study_id).map_err(|e| e.into_store(&path))?;
        let now = chrono::Local::now().naive_local();
        let mut out = Vec::new();
        for t in history.iter().filter(|t| t.state == TrialState::Running) {
            if !owner_gone(&tx, t, now, heartbeat_timeout).map_err(sq)? {
                continue;
            }
            let retry = max_retries > retry_depth(&history, t);
            let outcome = Outcome::Failed { reason: "interrupted".into() };
            let r = finish_in(&tx, t.id, &outcome, retry).map_err(|e| e.into_store(&path))?;
            out.push(Recovered { number: t.number, retry: r });
        }
        tx.commit().map_err(sq)?;
        Ok(out)
    }

    /// The RUNNING trials of the study whose owner is alive (`recover_orphans` would leave
    /// them): trials that other workers are running now.
    pub fn running_elsewhere(&self, study_id: i64, heartbeat_timeout: Duration) -> Result<Vec<TrialNumber>> {
        let history = self.trials(study_id)?;
        let now = chrono::Local::now().naive_local();
        let mut out = Vec::new();
        for t in history.iter().filter(|t| t.state == TrialState::Running) {
            if !owner_gone(&self.conn, t, now, heartbeat_timeout).map_err(|e| self.err(e))? {
                out.push(t.number);
            }
        }
        Ok(out)
    }

    // ----- workers -----

    /// Registers this process as a worker of the study.
    pub fn register_worker(&self, study_id: i64, owner: &Owner, slots: &[String]) -> Result<i64> {
        let now = now_text();
        self.conn
            .execute(
                "INSERT INTO sft_workers (study_id, host, pid, started_at, last_seen, slots, state) VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'running')",
                params![study_id, owner.host, owner.pid, now, slots.join(",")],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Marks the worker alive now, or with a final state (`finished`, `cancelled`).
    pub fn touch_worker(&self, worker_id: i64, state: &str) -> Result<()> {
        self.conn
            .execute("UPDATE sft_workers SET last_seen = ?1, state = ?2 WHERE worker_id = ?3", params![now_text(), state, worker_id])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The process that runs (or ran) a trial, as it recorded itself when it claimed it.
    pub fn trial_owner(&self, trial_id: i64) -> Result<Option<Owner>> {
        read_owner(&self.conn, trial_id).map_err(|e| self.err(e))
    }

    /// The workers of a study, newest first.
    pub fn workers(&self, study_id: i64) -> Result<Vec<WorkerRow>> {
        let mut st = self
            .conn
            .prepare("SELECT worker_id, host, pid, started_at, last_seen, slots, state FROM sft_workers WHERE study_id = ?1 ORDER BY worker_id DESC")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([study_id], |r| {
                Ok(WorkerRow {
                    id: r.get(0)?,
                    host: r.get(1)?,
                    pid: r.get(2)?,
                    started_at: r.get(3)?,
                    last_seen: r.get(4)?,
                    slots: r.get(5)?,
                    state: r.get(6)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }
}

/// How many retries led to this trial.
pub fn retry_depth(history: &[TrialRecord], t: &TrialRecord) -> usize {
    retried_attempts(history, t.retry_of).len()
}

/// The earlier attempts of a trial whose `retry_of` is given, newest first: that trial, the
/// one it retried, and so on back to the first (a chain broken or looping in a damaged store
/// ends where it breaks).
pub fn retried_attempts(history: &[TrialRecord], retry_of: Option<TrialNumber>) -> Vec<TrialNumber> {
    let mut chain = Vec::new();
    let mut cur = retry_of;
    while let Some(n) = cur {
        if chain.contains(&n) || chain.len() > history.len() {
            break;
        }
        chain.push(n);
        cur = history.iter().find(|h| h.number == n).and_then(|h| h.retry_of);
    }
    chain
}

fn next_number(conn: &Connection, study_id: i64) -> rusqlite::Result<TrialNumber> {
    conn.query_row("SELECT COUNT(*) FROM trials WHERE study_id = ?1", [study_id], |r| r.get::<_, i64>(0)).map(|n| n as TrialNumber)
}

/// Parameters with the distribution each is stored under.
type ParamsWithDists = Vec<(String, ParamValue, Distribution)>;

fn with_distributions(space: &SearchSpace, params: &ParamSet) -> ParamsWithDists {
    params.iter().filter_map(|(k, v)| space.get(k).map(|d| (k.clone(), v.clone(), d.clone()))).collect()
}

fn insert_trial(
    conn: &Connection,
    study_id: i64,
    number: TrialNumber,
    state: TrialState,
    now: &str,
    params: &ParamsWithDists,
    retry_of: Option<TrialNumber>,
) -> rusqlite::Result<i64> {
    let start: Option<&str> = if state == TrialState::Running { Some(now) } else { None };
    conn.execute(
        "INSERT INTO trials (number, study_id, state, datetime_start) VALUES (?1, ?2, ?3, ?4)",
        params![number as i64, study_id, state.as_str(), start],
    )?;
    let id = conn.last_insert_rowid();
    insert_params(conn, id, params)?;
    if let Some(r) = retry_of {
        set_attr(conn, "trial_user_attributes", id, "retry_of", &Value::from(r))?;
    }
    Ok(id)
}

fn insert_params(conn: &Connection, trial_id: i64, params: &ParamsWithDists) -> rusqlite::Result<()> {
    for (name, value, dist) in params {
        conn.execute(
            "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES (?1, ?2, ?3, ?4)",
            params![trial_id, name, dist.to_internal(value), dist.to_optuna_json().to_string()],
        )?;
    }
    Ok(())
}

/// The parameters a WAITING trial was queued with: its recorded parameters, plus those of
/// its `fixed_params` attribute (how Optuna's `enqueue_trial` queues them, without
/// parameter rows) that the space accepts.
fn queued_params(conn: &Connection, trial: &TrialRecord, space: &SearchSpace) -> rusqlite::Result<ParamSet> {
    let mut params = trial.params.clone();
    let fixed: Option<String> = conn
        .query_row(
            "SELECT value_json FROM trial_system_attributes WHERE trial_id = ?1 AND \"key\" = 'fixed_params'",
            params![trial.id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(Value::Object(map)) = fixed.and_then(|j| serde_json::from_str::<Value>(&j).ok()) {
        for (name, v) in map {
            let (false, Some(dist), Some(value)) = (params.contains_key(&name), space.get(&name), ParamValue::from_json(&v)) else {
                continue;
            };
            if let Ok(value) = dist.coerce(&name, &value) {
                params.insert(name, value);
            }
        }
    }
    Ok(params)
}

/// The study system attribute that records which trials the study file's `[[enqueue]]`
/// points became (so they are queued once).
const STUDY_FILE_ENQUEUED: &str = "sft:study_file_enqueued";

/// Inserts a WAITING trial with fixed parameters (Optuna's `enqueue_trial` layout: the
/// parameters plus the `fixed_params` system attribute); returns its number.
fn insert_waiting(tx: &Connection, study_id: i64, space: &SearchSpace, params: &ParamSet) -> rusqlite::Result<TrialNumber> {
    let number = next_number(tx, study_id)?;
    let with_dists = with_distributions(space, params);
    let id = insert_trial(tx, study_id, number, TrialState::Waiting, "", &with_dists, None)?;
    let fixed: Map<String, Value> = params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
    set_attr(tx, "trial_system_attributes", id, "fixed_params", &Value::Object(fixed))?;
    Ok(number)
}

fn set_attr(conn: &Connection, table: &str, trial_id: i64, key: &str, value: &Value) -> rusqlite::Result<()> {
    set_attr_raw(conn, table, trial_id, key, &value.to_string())
}

fn set_attr_raw(conn: &Connection, table: &str, trial_id: i64, key: &str, json: &str) -> rusqlite::Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO {table} (trial_id, \"key\", value_json) VALUES (?1, ?2, ?3)
             ON CONFLICT (trial_id, \"key\") DO UPDATE SET value_json = excluded.value_json"
        ),
        params![trial_id, key, json],
    )?;
    Ok(())
}

fn beat(conn: &Connection, trial_id: i64, now: &str) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?1, ?2)
         ON CONFLICT (trial_id) DO UPDATE SET heartbeat = excluded.heartbeat",
        params![trial_id, now],
    )?;
    Ok(())
}

enum FinishError {
    Sql(rusqlite::Error),
    Transition(TrialNumber, TrialState, TrialState),
}

impl FinishError {
    fn into_store(self, path: &Path) -> StoreError {
        match self {
            FinishError::Sql(source) => StoreError::Sqlite { path: path.to_path_buf(), source },
            FinishError::Transition(number, from, to) => StoreError::Transition { number, from, to },
        }
    }
}

impl From<rusqlite::Error> for FinishError {
    fn from(e: rusqlite::Error) -> Self {
        FinishError::Sql(e)
    }
}

fn finish_in(tx: &Transaction, trial_id: i64, outcome: &Outcome, retry: bool) -> std::result::Result<Option<TrialNumber>, FinishError> {
    let (number, study_id, state): (i64, i64, String) =
        tx.query_row("SELECT number, study_id, state FROM trials WHERE trial_id = ?1", [trial_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let from: TrialState = state.parse().unwrap_or(TrialState::Fail);
    let to = outcome.state();
    if !from.can_become(to) {
        return Err(FinishError::Transition(number as TrialNumber, from, to));
    }
    let now = now_text();
    tx.execute("UPDATE trials SET state = ?1, datetime_complete = ?2 WHERE trial_id = ?3", params![to.as_str(), now, trial_id])?;
    let value = match outcome {
        Outcome::Complete { value } => Some(*value),
        Outcome::Pruned { value, .. } => *value,
        Outcome::Failed { .. } => None,
    };
    if let Some(v) = value {
        tx.execute(
            "INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?1, 0, ?2, ?3)
             ON CONFLICT (trial_id, objective) DO UPDATE SET value = excluded.value, value_type = excluded.value_type",
            params![trial_id, stored_number(v), value_type(v)],
        )?;
    }
    if let Outcome::Pruned { step, .. } = outcome {
        set_attr(tx, "trial_user_attributes", trial_id, "pruned_at_step", &Value::from(*step))?;
    }
    let mut retry_number = None;
    if let Outcome::Failed { reason } = outcome {
        set_attr(tx, "trial_user_attributes", trial_id, "error", &Value::String(reason.clone()))?;
        if retry {
            let n = next_number(tx, study_id)?;
            // Same parameters, same distributions, as stored.
            let mut st = tx.prepare("SELECT param_name, param_value, distribution_json FROM trial_params WHERE trial_id = ?1")?;
            let rows: Vec<(String, f64, String)> =
                st.query_map([trial_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<rusqlite::Result<_>>()?;
            let params: ParamsWithDists = rows
                .into_iter()
                .filter_map(|(name, x, dj)| {
                    let d = Distribution::from_optuna_json(&dj)?;
                    let v = d.from_internal(x)?;
                    Some((name, v, d))
                })
                .collect();
            let id = insert_trial(tx, study_id, n, TrialState::Waiting, &now, &params, Some(number as TrialNumber))?;
            let fixed: Map<String, Value> = params.iter().map(|(k, v, _)| (k.clone(), v.to_json())).collect();
            set_attr(tx, "trial_system_attributes", id, "fixed_params", &Value::Object(fixed))?;
            retry_number = Some(n);
        }
    }
    tx.execute("DELETE FROM trial_heartbeats WHERE trial_id = ?1", [trial_id])?;
    Ok(retry_number)
}

enum ReadError {
    Sql(rusqlite::Error),
    Corrupt(TrialNumber, String),
}

impl ReadError {
    fn into_store(self, path: &Path) -> StoreError {
        match self {
            ReadError::Sql(source) => StoreError::Sqlite { path: path.to_path_buf(), source },
            ReadError::Corrupt(number, what) => StoreError::Corrupt { number, what },
        }
    }
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Sql(e)
    }
}

fn read_trials(conn: &Connection, study_id: i64) -> std::result::Result<Vec<TrialRecord>, ReadError> {
    let mut st = conn.prepare(
        "SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials WHERE study_id = ?1 ORDER BY number, trial_id",
    )?;
    let mut trials: Vec<TrialRecord> = Vec::new();
    let mut index: HashMap<i64, usize> = HashMap::new();
    let rows = st.query_map([study_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
        ))
    })?;
    for row in rows {
        let (id, number, state, start, end) = row?;
        let number = number.unwrap_or(0).max(0) as TrialNumber;
        let state: TrialState = state.parse().map_err(|e: String| ReadError::Corrupt(number, e))?;
        let mut t = TrialRecord::new(number, state, ParamSet::new(), None);
        t.id = id;
        t.started_at = start;
        t.finished_at = end;
        index.insert(id, trials.len());
        trials.push(t);
    }
    let sub = "(SELECT trial_id FROM trials WHERE study_id = ?1)";
    let mut st = conn.prepare(&format!(
        "SELECT trial_id, param_name, param_value, distribution_json FROM trial_params WHERE trial_id IN {sub} ORDER BY param_id"
    ))?;
    let rows =
        st.query_map([study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, f64>(2)?, r.get::<_, String>(3)?)))?;
    for row in rows {
        let (id, name, x, dj) = row?;
        let Some(&i) = index.get(&id) else { continue };
        let value = Distribution::from_optuna_json(&dj)
            .and_then(|d| d.from_internal(x))
            .ok_or_else(|| ReadError::Corrupt(trials[i].number, format!("parameter `{name}` has distribution {dj}")))?;
        trials[i].params.insert(name, value);
    }
    let mut st =
        conn.prepare(&format!("SELECT trial_id, value, value_type FROM trial_values WHERE objective = 0 AND trial_id IN {sub}"))?;
    let rows = st.query_map([study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<f64>>(1)?, r.get::<_, String>(2)?)))?;
    for row in rows {
        let (id, v, t) = row?;
        if let Some(&i) = index.get(&id) {
            trials[i].value = from_value_type(v, &t);
        }
    }
    let mut st = conn.prepare(&format!(
        "SELECT trial_id, step, intermediate_value, intermediate_value_type FROM trial_intermediate_values WHERE trial_id IN {sub} ORDER BY trial_id, step"
    ))?;
    let rows =
        st.query_map([study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<f64>>(2)?, r.get::<_, String>(3)?)))?;
    for row in rows {
        let (id, step, v, t) = row?;
        if let (Some(&i), Some(v)) = (index.get(&id), from_value_type(v, &t)) {
            trials[i].intermediate.push((step, v));
        }
    }
    let mut st = conn.prepare(&format!("SELECT trial_id, \"key\", value_json FROM trial_user_attributes WHERE trial_id IN {sub}"))?;
    let rows = st.query_map([study_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    for row in rows {
        let (id, key, json) = row?;
        let Some(&i) = index.get(&id) else { continue };
        let v: Value = serde_json::from_str(&json).unwrap_or(Value::String(json));
        let t = &mut trials[i];
        match key.as_str() {
            "device" => t.device = v.as_str().map(str::to_string),
            "error" => t.error = v.as_str().map(str::to_string),
            "retry_of" => t.retry_of = v.as_u64(),
            "checkpoint" => t.checkpoint = v.as_str().map(str::to_string),
            "progress" => t.progress = Some(v),
            "pruned_at_step" => t.pruning.pruned_at_step = v.as_i64(),
            "bracket" => t.pruning.bracket = v.as_u64().and_then(|b| u32::try_from(b).ok()),
            "rungs" => t.pruning.rungs = serde_json::from_value(v).unwrap_or_default(),
            "metrics" => {
                if let Value::Object(m) = v {
                    t.metrics = m;
                }
            }
            _ => {}
        }
    }
    Ok(trials)
}

#[cfg(test)]
mod tests;
