//! `sft-search tell`: the user's program reports on a trial that `ask` handed out, either an
//! intermediate value (recorded, then judged by the study's pruner, which may end the trial
//! PRUNED) or how the trial ended: COMPLETE with its value, PRUNED, or FAIL with a reason.
//! A non-finite final value ends the trial FAIL, as a `command` trial's would.

use std::process::ExitCode;

use serde_json::{json, Map, Value};

use super::common::{open_existing, print_out};
use super::UsageError;
use crate::cli::{TellArgs, TextOrJson, ToldState};
use crate::scheduler::display::format_value;
use crate::scheduler::Decision;
use crate::trial::{Outcome, TrialRecord, TrialState};

/// What the call asks for, checked against the flags before the store is touched.
#[derive(Debug, Clone, PartialEq)]
enum Told {
    Intermediate { step: i64, value: f64 },
    End(Outcome),
}

/// Reads the flags into one report, or says which combination is wrong. A pruned trial's
/// value and step default to its last intermediate value (`last`).
fn told(args: &TellArgs, last: Option<(i64, f64)>) -> Result<Told, UsageError> {
    let bad = |m: &str| UsageError(format!("tell: {m}"));
    if args.error.is_some() && args.state != Some(ToldState::Fail) {
        return Err(bad("--error goes with --state fail"));
    }
    if let Some(step) = args.step {
        if args.state.is_some() {
            return Err(bad(
                "--step reports an intermediate value and keeps the trial running; end it with a second call (--value V, or --state)",
            ));
        }
        let value = args.value.ok_or_else(|| bad("--step needs --value (the intermediate value at that step)"))?;
        return Ok(Told::Intermediate { step, value });
    }
    let state = match (args.state, args.value) {
        (Some(s), _) => s,
        (None, Some(_)) => ToldState::Complete,
        (None, None) => return Err(bad("say what happened: --value V (the result), --state pruned|fail, or --step K --value V")),
    };
    Ok(Told::End(match state {
        ToldState::Complete => {
            let value = args.value.ok_or_else(|| bad("--state complete needs --value (the trial's result)"))?;
            if value.is_finite() {
                Outcome::Complete { value }
            } else {
                Outcome::Failed { reason: format!("the told value is {value}") }
            }
        }
        ToldState::Pruned => Outcome::Pruned { step: last.map_or(0, |(k, _)| k), value: args.value.or(last.map(|(_, v)| v)) },
        ToldState::Fail => {
            if args.value.is_some() {
                return Err(bad("--state fail takes no --value"));
            }
            Outcome::Failed { reason: args.error.clone().unwrap_or_else(|| "failed (told by the trial's program)".into()) }
        }
    }))
}

/// `name=value` metrics.
fn parse_metrics(items: &[String]) -> Result<Map<String, Value>, UsageError> {
    let mut out = Map::new();
    for item in items {
        let parsed = item.split_once('=').and_then(|(k, v)| {
            let k = k.trim();
            (!k.is_empty()).then_some(())?;
            v.trim().parse::<f64>().ok().filter(|x| x.is_finite()).map(|x| (k.to_string(), x))
        });
        let (k, v) = parsed.ok_or_else(|| UsageError(format!("--metric `{item}`: expected name=number, e.g. --metric f1=0.91")))?;
        out.insert(k, json!(v));
    }
    Ok(out)
}

pub fn run(args: &TellArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let metrics = parse_metrics(&args.metrics)?;
    // Check the flags before opening anything (a pruned trial's defaults come later).
    told(args, None)?;
    let mut open = open_existing(&args.study, None)?;
    let Some(cfg) = open.config.take() else {
        return Err(UsageError(format!("{}: `tell` needs the study file (TOML)", args.study.display())).into());
    };
    let history = open.store.trials(open.study.id)?;
    let Some(trial) = history.iter().find(|t| t.number == args.trial) else {
        return Err(UsageError(format!("study `{}` has no trial {}", cfg.name, args.trial)).into());
    };
    if trial.state != TrialState::Running {
        if args.skip_if_finished && trial.state.is_finished() {
            if !quiet {
                eprintln!("trial {} has already ended {}: nothing told", trial.number, trial.state.as_str());
            }
            print_result(args.format, trial.number, trial.state, trial.value, None)?;
            return Ok(ExitCode::SUCCESS);
        }
        let value = trial.value.map(|v| format!(" with value {}", format_value(v))).unwrap_or_default();
        return Err(UsageError(format!(
            "trial {} of study `{}` is {}{value}: only a running trial can be told{}",
            trial.number,
            cfg.name,
            trial.state.as_str(),
            if trial.state.is_finished() { " (--skip-if-finished makes this a no-op)" } else { "" }
        ))
        .into());
    }
    match open.store.trial_owner(trial.id)? {
        Some(owner) if owner.asked => {}
        owner => {
            let by = owner.map(|o| format!(" (process {} on {})", o.pid, o.host)).unwrap_or_default();
            return Err(UsageError(format!(
                "trial {} of study `{}` is run by `sft-search run`{by}: only trials handed out by `sft-search ask` are told",
                trial.number, cfg.name
            ))
            .into());
        }
    }
    let store = &mut open.store;
    match told(args, trial.last_intermediate())? {
        Told::Intermediate { step, value } => {
            store.report_intermediate(trial.id, step, value, &metrics)?;
            let mut values: Vec<(i64, f64)> = trial.intermediate.iter().copied().filter(|(k, _)| *k != step).collect();
            values.push((step, value));
            let pruner = crate::pruner::from_config(&cfg.pruner);
            let others: Vec<TrialRecord> = history.iter().filter(|t| t.id != trial.id).cloned().collect();
            let decision = pruner.decide(trial.number, &values, &others, cfg.direction);
            crate::scheduler::save_pruning_record(store, trial.id, &trial.pruning, &pruner.record(trial.number, &values))?;
            let state = if decision == Decision::Prune {
                store.finish(trial.id, &Outcome::Pruned { step, value: Some(value) }, false)?;
                TrialState::Pruned
            } else {
                TrialState::Running
            };
            print_result(args.format, trial.number, state, Some(value), Some(step))?;
        }
        Told::End(outcome) => {
            if !metrics.is_empty() {
                store.merge_metrics(trial.id, &metrics)?;
            }
            store.finish(trial.id, &outcome, false)?;
            let value = match &outcome {
                Outcome::Complete { value } => Some(*value),
                Outcome::Pruned { value, .. } => *value,
                Outcome::Failed { reason } => {
                    if !quiet {
                        eprintln!("trial {} FAIL: {reason}", trial.number);
                    }
                    None
                }
            };
            print_result(args.format, trial.number, outcome.state(), value, None)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The trial's state after the call: `{"number", "state", "value"}`, plus `"step"` and
/// `"pruned"` for an intermediate value.
fn print_result(format: TextOrJson, number: u64, state: TrialState, value: Option<f64>, step: Option<i64>) -> anyhow::Result<()> {
    let text = match format {
        TextOrJson::Json => {
            let mut v = json!({"number": number, "state": state.as_str(), "value": value});
            if let Some(k) = step {
                v["step"] = json!(k);
                v["pruned"] = json!(state == TrialState::Pruned);
            }
            v.to_string()
        }
        TextOrJson::Text => match step {
            Some(k) if state == TrialState::Pruned => format!("trial {number} pruned at step {k}: stop it"),
            Some(k) => format!("trial {number} step {k} recorded: continue"),
            None => format!(
                "trial {number} {}{}",
                state.as_str(),
                value.map(|v| format!(" with value {}", format_value(v))).unwrap_or_default()
            ),
        },
    };
    print_out(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(line: &str) -> TellArgs {
        let argv = format!("sft-search tell s.toml --trial 3 {line}");
        match Cli::try_parse_from(argv.split_whitespace()).expect("parses").command {
            Command::Tell(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_read_into_one_report() {
        assert_eq!(told(&args("--value 0.9"), None).unwrap(), Told::End(Outcome::Complete { value: 0.9 }));
        assert_eq!(told(&args("--value -1.5"), None).unwrap(), Told::End(Outcome::Complete { value: -1.5 }));
        assert_eq!(told(&args("--step 2 --value 0.7"), None).unwrap(), Told::Intermediate { step: 2, value: 0.7 });
        // A pruned trial keeps its last intermediate value and step unless told otherwise.
        assert_eq!(told(&args("--state pruned"), Some((4, 0.6))).unwrap(), Told::End(Outcome::Pruned { step: 4, value: Some(0.6) }));
        assert_eq!(told(&args("--state pruned --value 0.5"), None).unwrap(), Told::End(Outcome::Pruned { step: 0, value: Some(0.5) }));
        assert_eq!(told(&args("--state fail --error oom"), None).unwrap(), Told::End(Outcome::Failed { reason: "oom".into() }));
        // NaN ends the trial FAIL, saying why.
        assert_eq!(told(&args("--value NaN"), None).unwrap(), Told::End(Outcome::Failed { reason: "the told value is NaN".into() }));
    }

    #[test]
    fn wrong_combinations_say_what_is_wrong() {
        let msg = |line: &str| told(&args(line), None).unwrap_err().to_string();
        assert!(msg("").contains("--value V (the result)"), "{}", msg(""));
        assert!(msg("--step 1").contains("--step needs --value"));
        assert!(msg("--step 1 --value 2 --state pruned").contains("second call"));
        assert!(msg("--state complete").contains("needs --value"));
        assert!(msg("--state fail --value 1").contains("takes no --value"));
        assert!(msg("--value 1 --error x").contains("--error goes with --state fail"));
    }

    #[test]
    fn metrics_are_name_number_pairs() {
        let m = parse_metrics(&["f1=0.5".into(), " loss = 2 ".into()]).unwrap();
        assert_eq!(m.get("f1"), Some(&json!(0.5)));
        assert_eq!(m.get("loss"), Some(&json!(2.0)));
        for bad in ["f1", "=1", "f1=x", "f1=inf"] {
            assert!(parse_metrics(&[bad.into()]).unwrap_err().to_string().contains("expected name=number"), "{bad}");
        }
    }
}
