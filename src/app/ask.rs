//! `sft-search ask`: hand the next trial to the user's own program. The trial is claimed in
//! the store exactly as a slot of `run` claims one (a queued trial first, else the sampler's
//! suggestion, with the running trials as its pending points), but its owner is marked
//! *asked*: nobody takes it for an orphan, and only `sft-search tell` ends it.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Map, Value};

use super::common::{load_config, print_out};
use super::UsageError;
use crate::cli::{AskArgs, TextOrJson};
use crate::config::ObjectiveConfig;
use crate::sampler::{suggest_around, SuggestContext};
use crate::scheduler::display::format_params;
use crate::storage::{Budget, Claim, Owner};
use crate::trial::TrialState;

/// The exit status of an `ask` that had no trial to hand out (the budget is done or taken,
/// or the grid is exhausted): a loop of `ask` calls ends on it.
pub const NOTHING_TO_ASK: u8 = 3;

pub fn run(args: &AskArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut cfg = load_config(&args.study)?;
    if cfg.objective == ObjectiveConfig::Finetune {
        return Err(UsageError(format!(
            "{}: study `{}` fine-tunes its trials itself (`[objective] kind = \"finetune\"`): run it with `sft-search run`; \
             `ask` hands trials to your own program (use `kind = \"external\"`)",
            args.study.display(),
            cfg.name
        ))
        .into());
    }
    super::run::override_n_trials(&mut cfg, args.n_trials)?;
    if args.device.trim().is_empty() {
        return Err(UsageError("--device must not be empty".into()).into());
    }
    let sampler = super::run::build_sampler(&cfg)?;
    let (mut store, study) = super::run::open_study(&cfg, args.allow_space_change)?;
    super::run::check_setup(&cfg, &store, &study, None, false)?;
    store.enqueue_study_file_points(study.id, &cfg.space, &cfg.enqueue)?;
    let claim = store.claim_next(
        study.id,
        &cfg.space,
        Budget { n_trials: cfg.n_trials, patience: cfg.patience },
        &Owner::asking(),
        &args.device,
        |history, number, fixed| {
            let ctx = SuggestContext { space: &cfg.space, direction: cfg.direction, history, number, seed: cfg.sampler.seed, fixed };
            suggest_around(sampler.as_ref(), &ctx)
        },
    )?;
    let claim = claim.with_context(|| format!("study `{}`: the {} sampler", cfg.name, sampler.name()))?;
    let trial = match claim {
        Claim::Trial(t) => t,
        other => {
            let history = store.trials(study.id)?;
            let count = |s: TrialState| history.iter().filter(|t| t.state == s).count();
            let done = count(TrialState::Complete) + count(TrialState::Pruned);
            let running = count(TrialState::Running);
            let budget = cfg.n_trials.unwrap_or_default();
            let (reason, text) = match other {
                Claim::BudgetReached => ("budget_reached", format!("the budget of {budget} trials is reached ({done} done)")),
                Claim::Wait => (
                    "budget_taken",
                    format!(
                        "the budget of {budget} trials is taken: {done} done and {running} running; tell their results \
                         (or fail the lost ones with `tell --state fail`), or ask with a larger --n-trials"
                    ),
                ),
                Claim::Plateau => ("plateau", cfg.patience.map(|p| p.spent_text()).unwrap_or_default()),
                _ => ("exhausted", "the sampler has no point left (the grid is exhausted)".to_string()),
            };
            if args.format == TextOrJson::Json {
                print_out(&format!("{}\n", json!({"number": Value::Null, "study": cfg.name, "reason": reason})))?;
            }
            if !quiet {
                eprintln!("study `{}`: no trial to hand out: {text}", cfg.name);
            }
            return Ok(ExitCode::from(NOTHING_TO_ASK));
        }
    };
    match args.format {
        TextOrJson::Json => {
            let params: Map<String, Value> = trial.params.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
            print_out(&format!("{}\n", json!({"number": trial.number, "params": params, "study": cfg.name})))?;
        }
        TextOrJson::Text => print_out(&format!("trial {}: {}\n", trial.number, format_params(&trial.params)))?,
    }
    Ok(ExitCode::SUCCESS)
}
