//! `sft-search bench pruning`: what a pruner saves and what it costs.
//!
//! For each seed, runs real studies (random sampler, same seed, so trial `n` has the same
//! parameters in every study) of a synthetic function with a learning curve, once without
//! pruning and once per pruner, each to the same number of completed-or-pruned trials. It
//! reports the best COMPLETE value found and the total compute (the sum over trials of the
//! steps each one ran), one JSON line per (seed, pruner), and a table of medians.

use std::process::ExitCode;

use serde_json::json;

use super::bench_scheduler::{run_study_file, TempFolder};
use super::common::print_out;
use super::trials::render_table;
use super::UsageError;
use crate::cli::{BenchPruningArgs, TextOrJson};
use crate::objective::SyntheticFunction;
use crate::space::Distribution;
use crate::trial::{best_trial, Direction, TrialRecord, TrialState};

/// One study's result.
#[derive(Debug, Clone)]
struct Outcome {
    best: f64,
    steps: i64,
    complete: usize,
    pruned: usize,
    wall: f64,
}

/// Sum of the steps each trial ran (its last reported step).
fn total_steps(trials: &[TrialRecord]) -> i64 {
    trials.iter().filter_map(|t| t.intermediate.iter().map(|(s, _)| *s).max()).sum()
}

fn pruner_table(kind: &str, args: &BenchPruningArgs, max_resource: i64) -> Result<String, UsageError> {
    let min = args.min_resource.unwrap_or(i64::from(args.steps));
    let eta = args.reduction_factor;
    Ok(match kind {
        "none" => "kind = \"none\"".into(),
        "median" => format!("kind = \"median\"\nn_startup_trials = 5\nn_warmup_steps = {min}"),
        "asha" => format!("kind = \"asha\"\nmin_resource = {min}\nreduction_factor = {eta}"),
        "hyperband" => format!("kind = \"hyperband\"\nmin_resource = {min}\nmax_resource = {max_resource}\nreduction_factor = {eta}"),
        other => return Err(UsageError(format!("--pruner: unknown pruner `{other}` (expected none, median, asha or hyperband)"))),
    })
}

fn study_text(function: SyntheticFunction, args: &BenchPruningArgs, seed: u64, pruner: &str) -> String {
    let mut space = String::new();
    for p in function.space().params() {
        let line = match &p.dist {
            Distribution::Float { low, high, log, .. } => format!("{{ type = \"float\", low = {low:e}, high = {high:e}, log = {log} }}"),
            Distribution::Int { low, high, .. } => format!("{{ type = \"int\", low = {low}, high = {high} }}"),
            Distribution::Categorical { choices } => {
                let c: Vec<String> = choices.iter().map(|c| c.to_string_exact()).collect();
                format!("{{ type = \"categorical\", choices = [{}] }}", c.join(", "))
            }
        };
        space.push_str(&format!("{} = {line}\n", p.name));
    }
    let devices: Vec<&str> = vec!["\"cpu\""; args.slots.max(1)];
    format!(
        "[study]\nname = \"bench-pruning\"\ndirection = \"minimize\"\nn_trials = {}\nseed = {seed}\n\n[space]\n{space}\n[sampler]\nkind = \"random\"\n\n\
         [objective]\nkind = \"synthetic\"\nfunction = \"{}\"\nnoise = {}\nsteps = {}\n\n[execution]\ndevices = [{}]\nmax_retries = 0\n\n[pruner]\n{pruner}\n",
        args.trials,
        function.name(),
        args.noise,
        args.steps,
        devices.join(", ")
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(args: &BenchPruningArgs) -> anyhow::Result<ExitCode> {
    let function: SyntheticFunction = args.function.parse().map_err(UsageError)?;
    if args.trials == 0 || args.seeds == 0 || args.steps == 0 {
        return Err(UsageError("--trials, --seeds and --steps must be at least 1".into()).into());
    }
    if args.reduction_factor < 2 {
        return Err(UsageError("--reduction-factor must be at least 2".into()).into());
    }
    // The longest trial: 10 epochs of sft-like, else the curve's steps.
    let max_resource = match function {
        SyntheticFunction::SftLike => i64::from(args.steps) * 10,
        _ => i64::from(args.steps),
    };
    let mut kinds = vec!["none".to_string()];
    kinds.extend(args.pruner.iter().filter(|p| p.as_str() != "none").cloned());
    let tables: Vec<(String, String)> =
        kinds.iter().map(|k| pruner_table(k, args, max_resource).map(|t| (k.clone(), t))).collect::<Result<_, _>>()?;

    let mut results: Vec<(u64, String, Outcome)> = Vec::new();
    for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
        for (kind, table) in &tables {
            let dir = TempFolder::new("bench-pruning")?;
            let path = dir.0.join("study.toml");
            std::fs::write(&path, study_text(function, args, seed, table))?;
            let (trials, summary) = run_study_file(&path)?;
            let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
            let out = Outcome {
                best: best_trial(&trials, Direction::Minimize).and_then(|t| t.value).unwrap_or(f64::NAN),
                steps: total_steps(&trials),
                complete: count(TrialState::Complete),
                pruned: count(TrialState::Pruned),
                wall: summary.wall.as_secs_f64(),
            };
            let baseline = results.iter().find(|(s, k, _)| *s == seed && k == "none").map(|r| r.2.clone());
            let line = json!({
                "function": function.name(),
                "seed": seed,
                "pruner": kind,
                "trials": args.trials,
                "best": out.best,
                "total_steps": out.steps,
                "complete": out.complete,
                "pruned": out.pruned,
                "compute_saving": baseline.as_ref().map(|b| b.steps as f64 / out.steps.max(1) as f64),
                "best_minus_none": baseline.as_ref().map(|b| out.best - b.best),
                "wall_s": out.wall,
            });
            if args.format == TextOrJson::Json {
                print_out(&format!("{line}\n"))?;
            }
            results.push((seed, kind.clone(), out));
        }
    }
    if args.format == TextOrJson::Text {
        let mut rows = vec![["pruner", "best (median)", "best ≤ none", "total steps (median)", "compute saving", "complete", "pruned"]
            .map(String::from)
            .to_vec()];
        for (kind, _) in &tables {
            let mine: Vec<&(u64, String, Outcome)> = results.iter().filter(|r| &r.1 == kind).collect();
            let base = |seed: u64| results.iter().find(|r| r.0 == seed && r.1 == "none").map(|r| &r.2);
            let savings: Vec<f64> = mine.iter().filter_map(|r| base(r.0).map(|b| b.steps as f64 / r.2.steps.max(1) as f64)).collect();
            let as_good = mine.iter().filter(|r| base(r.0).is_some_and(|b| r.2.best <= b.best)).count();
            rows.push(vec![
                kind.clone(),
                format!("{:.4}", median(mine.iter().map(|r| r.2.best).collect())),
                format!("{as_good}/{}", mine.len()),
                format!("{:.0}", median(mine.iter().map(|r| r.2.steps as f64).collect())),
                format!("{:.2}×", median(savings)),
                format!("{:.0}", median(mine.iter().map(|r| r.2.complete as f64).collect())),
                format!("{:.0}", median(mine.iter().map(|r| r.2.pruned as f64).collect())),
            ]);
        }
        print_out(&format!(
            "{} with a learning curve of {} steps{}, {} completed-or-pruned trials, seeds {}..{}, {} slot(s), pruners' first rung at step {}, η = {}:\n{}",
            function.name(),
            args.steps,
            if function == SyntheticFunction::SftLike { " per epoch" } else { "" },
            args.trials,
            args.first_seed,
            args.first_seed.saturating_add(args.seeds),
            args.slots,
            args.min_resource.unwrap_or(i64::from(args.steps)),
            args.reduction_factor,
            render_table(&rows)
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}
