//! `sft-search trials`: every trial as a table, CSV or JSON.

use std::process::ExitCode;

use serde_json::{json, Map, Value};

use super::common::{open_existing, print_out};
use crate::cli::{TableFormat, TrialsArgs};
use crate::scheduler::display::format_value;
use crate::storage::seconds_between;
use crate::trial::TrialRecord;

/// One trial as the JSON output shows it.
pub fn trial_json(t: &TrialRecord, with_checkpoint: bool) -> Value {
    let mut m = Map::new();
    m.insert("number".into(), json!(t.number));
    m.insert("state".into(), json!(t.state.as_str()));
    m.insert("params".into(), Value::Object(t.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect()));
    m.insert("value".into(), t.value.and_then(|v| serde_json::Number::from_f64(v).map(Value::Number)).unwrap_or(Value::Null));
    m.insert("metrics".into(), Value::Object(t.metrics.clone()));
    m.insert(
        "intermediate".into(),
        Value::Array(
            t.intermediate
                .iter()
                .map(|(s, v)| json!([s, serde_json::Number::from_f64(*v).map(Value::Number).unwrap_or(Value::Null)]))
                .collect(),
        ),
    );
    m.insert("device".into(), json!(t.device));
    m.insert("started_at".into(), json!(t.started_at));
    m.insert("finished_at".into(), json!(t.finished_at));
    m.insert("error".into(), json!(t.error));
    m.insert("retry_of".into(), json!(t.retry_of));
    if with_checkpoint {
        m.insert("checkpoint".into(), json!(t.checkpoint));
    }
    if !t.pruning.is_empty() {
        let p = &t.pruning;
        m.insert(
            "pruning".into(),
            json!({"bracket": p.bracket, "pruned_at_step": p.pruned_at_step, "rungs": p.rungs.iter().map(|r| json!({"rung": r.rung, "step": r.step, "value": serde_json::Number::from_f64(r.value).map(Value::Number).unwrap_or(Value::Null)})).collect::<Vec<_>>()}),
        );
    }
    Value::Object(m)
}

/// The pruning note of the trials table: "pruned at step 12 (rung 1); bracket 0".
pub fn pruning_note(t: &TrialRecord) -> Option<String> {
    let p = &t.pruning;
    let mut parts = Vec::new();
    match (p.pruned_at_step, p.rungs.last()) {
        (Some(step), Some(r)) if r.step == step => parts.push(format!("pruned at step {step} (rung {})", r.rung)),
        (Some(step), _) => parts.push(format!("pruned at step {step}")),
        (None, Some(r)) => parts.push(format!("rungs 0..={} passed", r.rung)),
        (None, None) => {}
    }
    if let Some(b) = p.bracket {
        parts.push(format!("bracket {b}"));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// The note column of the trials table: retry, pruning, fit diagnosis, early stop, error.
fn note(t: &TrialRecord) -> String {
    let mut note = Vec::new();
    if let Some(r) = t.retry_of {
        note.push(format!("retry of {r}"));
    }
    if let Some(p) = pruning_note(t) {
        note.push(p);
    }
    if let Some(f) = t.metrics.get("fit").and_then(|f| f.as_str()) {
        note.push(f.to_string());
    }
    if t.metrics.get("stopped_early").and_then(Value::as_bool) == Some(true) {
        let at = t.metrics.get("epochs_run").and_then(Value::as_f64).map(|e| format!(" after epoch {e}")).unwrap_or_default();
        note.push(format!("stopped early{at}"));
    }
    if let Some(e) = &t.error {
        let short: String = e.chars().take(60).collect();
        note.push(if e.chars().count() > 60 { format!("{short}…") } else { short });
    }
    note.join("; ")
}

fn duration(t: &TrialRecord) -> Option<f64> {
    seconds_between(t.started_at.as_deref()?, t.finished_at.as_deref()?)
}

pub fn run(args: &TrialsArgs) -> anyhow::Result<ExitCode> {
    let open = open_existing(&args.study, args.study_name.as_deref())?;
    let trials = open.store.trials(open.study.id)?;
    let with_checkpoint = trials.iter().any(|t| t.checkpoint.is_some())
        || open.config.as_ref().is_some_and(|c| c.objective == crate::config::ObjectiveConfig::Finetune);
    let names: Vec<String> = {
        let mut n: Vec<String> = Vec::new();
        for t in &trials {
            for k in t.params.keys() {
                if !n.contains(k) {
                    n.push(k.clone());
                }
            }
        }
        n
    };
    match args.format {
        TableFormat::Json => {
            let arr: Vec<Value> = trials.iter().map(|t| trial_json(t, with_checkpoint)).collect();
            print_out(&format!("{}\n", serde_json::to_string_pretty(&arr)?))?;
        }
        TableFormat::Csv => {
            // Every number among the trials' metrics (a fine-tuning trial's: its best
            // evaluation's valid metrics, train loss, timings) and the test metrics of the
            // trial evaluated on the test split, one column each, in order of first appearance.
            let mut metric_names: Vec<String> = Vec::new();
            let mut test_names: Vec<String> = Vec::new();
            for t in &trials {
                for (k, v) in &t.metrics {
                    if v.is_number() && !metric_names.contains(k) {
                        metric_names.push(k.clone());
                    }
                }
                for (k, v) in t.metrics.get("test").and_then(Value::as_object).into_iter().flatten() {
                    if v.is_number() && !test_names.contains(k) {
                        test_names.push(k.clone());
                    }
                }
            }
            let number = |v: Option<&Value>| v.and_then(Value::as_f64).map(|x| x.to_string()).unwrap_or_default();
            let mut w = csv::Writer::from_writer(Vec::new());
            let mut header = vec!["number".to_string(), "state".into(), "value".into()];
            header.extend(names.iter().map(|n| format!("param_{n}")));
            header.extend(metric_names.iter().map(|n| format!("metric_{n}")));
            header.extend(test_names.iter().map(|n| format!("test_{n}")));
            header.extend(["device", "started_at", "finished_at", "duration_s", "retry_of", "intermediate", "error"].map(String::from));
            header.push("fit".into());
            if with_checkpoint {
                header.push("checkpoint".into());
            }
            w.write_record(&header)?;
            for t in &trials {
                let mut row = vec![t.number.to_string(), t.state.to_string(), t.value.map(|v| v.to_string()).unwrap_or_default()];
                row.extend(names.iter().map(|n| t.params.get(n).map(|v| v.to_string_exact()).unwrap_or_default()));
                row.extend(metric_names.iter().map(|n| number(t.metrics.get(n))));
                let test = t.metrics.get("test");
                row.extend(test_names.iter().map(|n| number(test.and_then(|m| m.get(n)))));
                row.push(t.device.clone().unwrap_or_default());
                row.push(t.started_at.clone().unwrap_or_default());
                row.push(t.finished_at.clone().unwrap_or_default());
                row.push(duration(t).map(|d| format!("{d:.3}")).unwrap_or_default());
                row.push(t.retry_of.map(|r| r.to_string()).unwrap_or_default());
                row.push(t.intermediate.iter().map(|(s, v)| format!("{s}:{v}")).collect::<Vec<_>>().join(" "));
                row.push(t.error.clone().unwrap_or_default());
                row.push(t.metrics.get("fit").and_then(Value::as_str).unwrap_or_default().to_string());
                if with_checkpoint {
                    row.push(t.checkpoint.clone().unwrap_or_default());
                }
                w.write_record(&row)?;
            }
            let bytes = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
            print_out(&String::from_utf8_lossy(&bytes))?;
        }
        TableFormat::Table => {
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut header = vec!["#".to_string(), "state".into(), "value".into()];
            header.extend(names.iter().cloned());
            header.extend(["device", "time", "steps", "note"].map(String::from));
            rows.push(header);
            for t in &trials {
                let mut row = vec![t.number.to_string(), t.state.to_string(), t.value.map(format_value).unwrap_or_else(|| "-".into())];
                row.extend(names.iter().map(|n| t.params.get(n).map(|v| v.to_string()).unwrap_or_else(|| "-".into())));
                row.push(t.device.clone().unwrap_or_else(|| "-".into()));
                row.push(duration(t).map(|d| format!("{d:.1}s")).unwrap_or_else(|| "-".into()));
                row.push(t.intermediate.len().to_string());
                row.push(note(t));
                rows.push(row);
            }
            print_out(&render_table(&rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Left-aligned columns separated by two spaces.
pub fn render_table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, s)| format!("{s:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::ParamSet;
    use crate::trial::{RungRecord, TrialState};

    #[test]
    fn pruned_trials_show_their_rungs() {
        let mut t = TrialRecord::new(3, TrialState::Pruned, ParamSet::new(), Some(0.9));
        assert_eq!(pruning_note(&t), None);
        assert!(trial_json(&t, false).get("pruning").is_none());
        t.pruning.rungs = vec![RungRecord { rung: 0, step: 2, value: 0.7 }, RungRecord { rung: 1, step: 6, value: 0.9 }];
        t.pruning.pruned_at_step = Some(6);
        t.pruning.bracket = Some(1);
        assert_eq!(pruning_note(&t).as_deref(), Some("pruned at step 6 (rung 1), bracket 1"));
        assert_eq!(trial_json(&t, false)["pruning"]["rungs"][1]["step"], 6);
        t.pruning.pruned_at_step = None;
        assert_eq!(pruning_note(&t).as_deref(), Some("rungs 0..=1 passed, bracket 1"));
    }

    #[test]
    fn the_note_tells_fit_early_stop_and_a_shortened_error() {
        let mut t = TrialRecord::new(3, TrialState::Complete, ParamSet::new(), Some(0.9));
        t.metrics.insert("fit".into(), json!("overfitting from epoch 3"));
        t.metrics.insert("stopped_early".into(), json!(true));
        t.metrics.insert("epochs_run".into(), json!(5.0));
        assert_eq!(note(&t), "overfitting from epoch 3; stopped early after epoch 5");
        t.metrics.clear();
        t.retry_of = Some(1);
        t.error = Some("x".repeat(70));
        assert_eq!(note(&t), format!("retry of 1; {}…", "x".repeat(60)));
    }
}
