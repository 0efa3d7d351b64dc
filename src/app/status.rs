//! `sft-search status`: counts per state, the best trial, what runs where, and the workers.

use std::process::ExitCode;

use serde_json::json;

use super::common::{open_existing, print_out, shown};
use crate::cli::{StatusArgs, TextOrJson};
use crate::scheduler::display::{format_params, format_value};
use crate::storage::{now_text, seconds_between};
use crate::trial::{best_trial, TrialState};

/// `, epoch 1.50, step 120/400, 55.1 samples/s, loss 0.4100, GPU 812 MiB, GPU busy 31%` from
/// live progress.
fn progress_text(p: Option<&serde_json::Value>) -> String {
    let Some(p) = p else { return String::new() };
    let f = |k: &str| p.get(k).and_then(|v| v.as_f64());
    let mut parts = Vec::new();
    if let Some(e) = f("epoch") {
        parts.push(format!("epoch {e:.2}"));
    }
    match (f("step"), f("total_steps")) {
        (Some(s), Some(t)) => parts.push(format!("step {s}/{t}")),
        (Some(s), None) => parts.push(format!("step {s}")),
        _ => {}
    }
    if let Some(x) = f("samples_per_s") {
        parts.push(format!("{x:.1} samples/s"));
    }
    if let Some(l) = f("loss") {
        parts.push(format!("loss {l:.4}"));
    }
    if let Some(m) = f("gpu_memory_mb") {
        parts.push(format!("GPU {m:.0} MiB"));
    }
    if let Some(b) = f("gpu_sm_percent") {
        parts.push(format!("GPU busy {b:.0}%"));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(", {}", parts.join(", "))
    }
}

pub fn run(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let open = open_existing(&args.study, args.study_name.as_deref())?;
    let trials = open.store.trials(open.study.id)?;
    let workers = open.store.workers(open.study.id)?;
    let direction = open.study.direction;
    let now = now_text();
    let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
    let best = best_trial(&trials, direction);
    let running: Vec<_> = trials.iter().filter(|t| t.state == TrialState::Running).collect();
    // A running trial whose process is gone (killed, crashed) stays RUNNING in the store
    // until the next `run` of the study marks it interrupted and retries it.
    let owners: Vec<Option<crate::storage::Owner>> = running.iter().map(|t| open.store.trial_owner(t.id)).collect::<Result<_, _>>()?;
    let orphaned: Vec<bool> = owners.iter().map(|o| o.as_ref().is_some_and(|o| o.is_dead_here())).collect();
    // Trials handed out by `ask`: the user's program runs them and ends them with `tell`.
    let asked: Vec<bool> = owners.iter().map(|o| o.as_ref().is_some_and(|o| o.asked)).collect();
    let metric = open.study.user_attrs.get("sft:metric").and_then(|m| m.as_str()).unwrap_or("value").to_string();

    if args.format == TextOrJson::Json {
        let v = json!({
            "study": open.study.name,
            "storage": open.store.path().display().to_string(),
            "direction": format!("{direction:?}").to_lowercase(),
            "metric": metric,
            "counts": TrialState::ALL.iter().map(|s| (s.as_str().to_string(), json!(count(*s)))).collect::<serde_json::Map<_, _>>(),
            "best": best.map(|b| json!({"number": b.number, "value": b.value, "params": b.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<serde_json::Map<_, _>>()})),
            "running": running.iter().zip(&orphaned).zip(&asked).map(|((t, orphaned), asked)| json!({
                "number": t.number,
                "orphaned": orphaned,
                "asked": asked,
                "device": t.device,
                "elapsed_s": t.started_at.as_deref().and_then(|s| seconds_between(s, &now)),
                "last_intermediate": t.last_intermediate(),
                "progress": t.progress,
            })).collect::<Vec<_>>(),
            "workers": workers.iter().map(|w| json!({"host": w.host, "pid": w.pid, "slots": w.slots, "state": w.state, "started_at": w.started_at, "last_seen": w.last_seen, "gone": w.state == "running" && w.is_gone()})).collect::<Vec<_>>(),
        });
        print_out(&format!("{}\n", serde_json::to_string_pretty(&v)?))?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut s = String::new();
    s.push_str(&format!("study {} in {}\n", open.study.name, shown(open.store.path())));
    s.push_str(&format!("objective: {} {metric}\n", format!("{direction:?}").to_lowercase()));
    s.push_str(&format!(
        "trials: {} complete, {} pruned, {} failed, {} running, {} waiting ({} in all)\n",
        count(TrialState::Complete),
        count(TrialState::Pruned),
        count(TrialState::Fail),
        count(TrialState::Running),
        count(TrialState::Waiting),
        trials.len()
    ));
    match best {
        Some(b) => s.push_str(&format!(
            "best: trial {} with {metric} = {}\n  {}\n",
            b.number,
            b.value.map(format_value).unwrap_or_default(),
            format_params(&b.params)
        )),
        None => s.push_str("best: none yet (no trial has completed)\n"),
    }
    if !running.is_empty() {
        s.push_str("running:\n");
        for ((t, orphaned), asked) in running.iter().zip(&orphaned).zip(&asked) {
            let elapsed = t.started_at.as_deref().and_then(|st| seconds_between(st, &now)).map(|e| format!("{e:.0}s")).unwrap_or_default();
            // The last intermediate value, at the step the trial reported it (an epoch, or
            // the optimizer step with `eval_steps`), apart from the training progress.
            let last = t
                .last_intermediate()
                .map(|(k, v)| format!(", last {metric} {} (reported at step {k})", format_value(v)))
                .unwrap_or_default();
            let gone = if *orphaned {
                " — its process is gone (interrupted); the next `run` retries it"
            } else if *asked {
                " — asked: your program runs it and ends it with `sft-search tell`"
            } else {
                ""
            };
            s.push_str(&format!(
                "  {:<7} trial {} for {elapsed}{last}{}{gone}\n",
                t.device.as_deref().unwrap_or("?"),
                t.number,
                progress_text(t.progress.as_ref())
            ));
        }
    }
    let live: Vec<_> = workers.iter().filter(|w| w.state == "running").collect();
    if !live.is_empty() {
        s.push_str("workers:\n");
        for w in live {
            let ago = seconds_between(&w.last_seen, &now).map(|a| format!("{a:.0}s ago")).unwrap_or_default();
            let gone = if w.is_gone() { "; its process is gone" } else { "" };
            s.push_str(&format!("  {}:{} slots {} (last seen {ago}{gone})\n", w.host, w.pid, w.slots));
        }
    }
    print_out(&s)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::progress_text;

    #[test]
    fn progress_line_shows_what_the_worker_measured() {
        let p = serde_json::json!({"epoch": 1.5, "step": 120, "total_steps": 400, "samples_per_s": 55.12, "loss": 0.41, "gpu_memory_mb": 812.0, "gpu_sm_percent": 31.4});
        assert_eq!(progress_text(Some(&p)), ", epoch 1.50, step 120/400, 55.1 samples/s, loss 0.4100, GPU 812 MiB, GPU busy 31%");
        assert_eq!(progress_text(Some(&serde_json::json!({"loss": 0.5}))), ", loss 0.5000");
        assert_eq!(progress_text(None), "");
    }
}
