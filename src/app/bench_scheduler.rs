//! `sft-search bench scheduler`: how busy the device slots stay.
//!
//! Runs a real study in a temporary folder — a `command` objective that sleeps a duration
//! drawn per trial between `--min-time` and `--max-time` — over `--slots` fake `cuda:k`
//! devices, then measures from the stored trial times (`datetime_start`,
//! `datetime_complete`): the busy fraction (total trial time / (slots × wall time from the
//! first start to the last end)) and the gap between one trial ending and the next starting
//! on the same slot. Also shows how much of a trial's time was not its own sleep (process
//! start-up and recording) and how much idle time the last trials leave (the tail).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use super::common::{load_config, print_out};
use super::run::{build_runner, build_sampler};
use crate::cli::{BenchSchedulerArgs, TextOrJson};
use crate::scheduler::{run_study, RunSummary, Silent, StopSignal};
use crate::storage::{parse_time, Store};
use crate::trial::TrialRecord;

/// A folder under the system temp dir, removed when dropped.
pub struct TempFolder(pub PathBuf);

impl TempFolder {
    pub fn new(what: &str) -> anyhow::Result<TempFolder> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let p = std::env::temp_dir().join(format!("sft-search-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempFolder(p))
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the study a study file describes to its end, silently, and returns its trials.
pub fn run_study_file(path: &Path) -> anyhow::Result<(Vec<TrialRecord>, RunSummary)> {
    let cfg = load_config(path)?;
    let sampler = build_sampler(&cfg)?;
    let runner = build_runner(&cfg, true)?;
    let pruner = crate::pruner::from_config(&cfg.pruner);
    let mut store = Store::open(&cfg.storage)?;
    let study = store.create_or_open_study(&super::run::study_spec(&cfg, false))?;
    let run = super::run::study_run(&cfg, study.id, sampler.as_ref(), pruner.as_ref(), runner.as_ref(), StopSignal::new(), &Silent);
    let summary = run_study(&run)?;
    Ok((store.trials(study.id)?, summary))
}

/// What the stored times say about how busy the slots were.
#[derive(Debug, Clone, PartialEq)]
pub struct SlotUsage {
    pub busy_fraction: f64,
    /// Gaps (s) between a trial's end and the next start on the same slot.
    pub gaps: Vec<f64>,
    /// Wall time (s) from the first start to the last end.
    pub wall: f64,
    /// Summed trial time (s).
    pub busy: f64,
    /// Idle slot time (s) after each slot's last trial, until the last trial ends.
    pub tail_idle: f64,
}

/// Busy fraction and gaps from finished trials' devices and times.
pub fn slot_usage(trials: &[TrialRecord], n_slots: usize) -> Option<SlotUsage> {
    let mut per_slot: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let times: Vec<(String, chrono::NaiveDateTime, chrono::NaiveDateTime)> = trials
        .iter()
        .filter_map(|t| Some((t.device.clone()?, parse_time(t.started_at.as_deref()?)?, parse_time(t.finished_at.as_deref()?)?)))
        .collect();
    let origin = times.iter().map(|t| t.1).min()?;
    let secs = |d: chrono::NaiveDateTime| (d - origin).num_microseconds().unwrap_or(0) as f64 / 1e6;
    for (dev, s, e) in &times {
        per_slot.entry(dev.clone()).or_default().push((secs(*s), secs(*e)));
    }
    let end = per_slot.values().flatten().map(|t| t.1).fold(0.0, f64::max);
    let busy: f64 = per_slot.values().flatten().map(|(s, e)| e - s).sum();
    let mut gaps = Vec::new();
    let mut tail_idle = 0.0;
    for spans in per_slot.values_mut() {
        spans.sort_by(|a, b| a.0.total_cmp(&b.0));
        gaps.extend(spans.windows(2).map(|w| w[1].0 - w[0].1));
        tail_idle += end - spans.last().map(|s| s.1).unwrap_or(end);
    }
    let slots = n_slots.max(per_slot.len()).max(1) as f64;
    let busy_fraction = if end > 0.0 { busy / (slots * end) } else { 0.0 };
    Some(SlotUsage { busy_fraction, gaps, wall: end, busy, tail_idle })
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn run(args: &BenchSchedulerArgs) -> anyhow::Result<ExitCode> {
    if args.slots == 0 || args.trials == 0 {
        return Err(super::UsageError("--slots and --trials must be at least 1".into()).into());
    }
    if !(args.min_time >= 0.0 && args.max_time > args.min_time && args.max_time.is_finite()) {
        return Err(super::UsageError("need 0 <= --min-time < --max-time".into()).into());
    }
    let dir = TempFolder::new("bench-scheduler")?;
    let devices: Vec<String> = (0..args.slots).map(|k| format!("\"cuda:{k}\"")).collect();
    let study = format!(
        r#"[study]
name = "bench-scheduler"
direction = "minimize"
n_trials = {trials}
seed = {seed}

[space]
duration = {{ type = "float", low = {lo}, high = {hi} }}

[sampler]
kind = "random"

[objective]
kind = "command"
command = ["sh", "-c", "sleep $SFT_PARAM_DURATION; echo \"{{\\\"value\\\": $SFT_PARAM_DURATION}}\""]

[execution]
devices = [{devices}]
max_retries = 0
"#,
        trials = args.trials,
        seed = args.seed,
        lo = args.min_time,
        hi = args.max_time,
        devices = devices.join(", "),
    );
    let path = dir.0.join("study.toml");
    std::fs::write(&path, study)?;
    let (trials, summary) = run_study_file(&path)?;
    let complete = trials.iter().filter(|t| t.state == crate::trial::TrialState::Complete).count();
    if complete == 0 {
        let why = trials.iter().find_map(|t| t.error.clone()).unwrap_or_default();
        anyhow::bail!("no trial completed: {why}");
    }
    let usage = slot_usage(&trials, args.slots).context("no trial has times")?;
    // Time a trial took beyond its own sleep: process start-up and recording.
    let overheads: Vec<f64> = trials
        .iter()
        .filter_map(|t| {
            let d = t.params.get("duration")?.as_f64()?;
            let s = crate::storage::seconds_between(t.started_at.as_deref()?, t.finished_at.as_deref()?)?;
            Some(s - d)
        })
        .collect();
    let gap_max = usage.gaps.iter().copied().fold(f64::NAN, f64::max);
    let report = json!({
        "slots": args.slots,
        "trials": trials.len(),
        "complete": complete,
        "busy_fraction": usage.busy_fraction,
        "gap_ms_median": median(&usage.gaps) * 1e3,
        "gap_ms_max": gap_max * 1e3,
        "trial_overhead_ms_median": median(&overheads) * 1e3,
        "wall_s": usage.wall,
        "busy_s": usage.busy,
        "tail_idle_s": usage.tail_idle,
        "busy_fraction_without_tail": if usage.wall > 0.0 { usage.busy / (args.slots as f64 * usage.wall - usage.tail_idle) } else { f64::NAN },
        "run_wall_s": summary.wall.as_secs_f64(),
        "load_average": std::fs::read_to_string("/proc/loadavg").ok().and_then(|l| l.split_whitespace().next().map(str::to_string)),
    });
    match args.format {
        TextOrJson::Json => print_out(&format!("{report}\n"))?,
        TextOrJson::Text => {
            let f = |k: &str| report[k].as_f64().unwrap_or(f64::NAN);
            print_out(&format!(
                "{} trials on {} slots in {:.2} s (load average {})\n\
                 busy fraction        {:.3}   (target >= 0.95; {:.3} leaving out the idle tail of {:.2} slot-s)\n\
                 gap between trials   median {:.1} ms, max {:.1} ms   (target < 50 ms)\n\
                 trial overhead       median {:.1} ms beyond the trial's own sleep (process start-up, recording)\n",
                trials.len(),
                args.slots,
                f("wall_s"),
                report["load_average"].as_str().unwrap_or("?"),
                f("busy_fraction"),
                f("busy_fraction_without_tail"),
                f("tail_idle_s"),
                f("gap_ms_median"),
                f("gap_ms_max"),
                f("trial_overhead_ms_median"),
            ))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamSet;
    use crate::trial::TrialState;

    fn t(n: u64, dev: &str, start: &str, end: &str) -> TrialRecord {
        let mut r = TrialRecord::new(n, TrialState::Complete, ParamSet::new(), Some(0.0));
        r.device = Some(dev.into());
        r.started_at = Some(format!("2026-01-01 00:00:{start}"));
        r.finished_at = Some(format!("2026-01-01 00:00:{end}"));
        r
    }

    #[test]
    fn usage_from_stored_times() {
        // Slot a: 0–4, 4.01–10; slot b: 0–9 (1 s idle tail).
        let trials = vec![t(0, "a", "00.000", "04.000"), t(1, "b", "00.000", "09.000"), t(2, "a", "04.010", "10.000")];
        let u = slot_usage(&trials, 2).unwrap();
        assert!((u.wall - 10.0).abs() < 1e-9);
        assert!((u.busy - 18.99).abs() < 1e-9);
        assert!((u.busy_fraction - 0.9495).abs() < 1e-9);
        assert_eq!(u.gaps.len(), 1);
        assert!((u.gaps[0] - 0.01).abs() < 1e-9);
        assert!((u.tail_idle - 1.0).abs() < 1e-9);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(slot_usage(&[], 2).is_none());
    }
}
