//! `sft-search enqueue`: queue a trial with given parameters (validated against the space).

use std::process::ExitCode;

use super::common::load_config;
use super::UsageError;
use crate::cli::EnqueueArgs;
use crate::space::{ParamSet, SearchSpace};
use crate::storage::Store;

pub fn run(args: &EnqueueArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&args.study)?;
    let params = cfg.space.parse_assignments(&args.params).map_err(|e| UsageError(format!("--param: {e}")))?;
    let mut store = Store::open(&cfg.storage)?;
    let study = store.create_or_open_study(&super::run::study_spec(&cfg, false)).map_err(|e| UsageError(e.to_string()))?;
    let number = store.enqueue(study.id, &cfg.space, &params)?;
    if !quiet {
        println!("queued trial {number}: {}", describe_queued(&cfg.space, &params));
    }
    Ok(ExitCode::SUCCESS)
}

/// A queued point as the user reads it: its parameters, and which ones the sampler will
/// choose when the trial starts (a partial point).
pub fn describe_queued(space: &SearchSpace, params: &ParamSet) -> String {
    let given = crate::scheduler::display::format_params(params);
    let free: Vec<&str> =
        space.params().iter().map(|p| p.name.as_str()).filter(|n| !params.contains_key(*n) && space.may_apply(n, params)).collect();
    if free.is_empty() {
        given
    } else {
        format!("{given}; the sampler chooses {}", free.join(", "))
    }
}
