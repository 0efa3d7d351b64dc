//! What `bench sampler` optimises: one of the built-in functions, or the space and objective
//! of a study file (`--study`), so a sampler can be benchmarked on a user's own function — a
//! `kind = "command"` program run once per trial, exactly as `run` would run it — with the
//! same seeds, parallel simulation and summary as the built-in ones.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::UsageError;
use crate::config::ObjectiveConfig;
use crate::objective::{CommandRunner, SyntheticFunction};
use crate::scheduler::{CancelToken, RecordingReporter, TrialAssignment, TrialRunner};
use crate::space::{ParamSet, SearchSpace};
use crate::trial::{Direction, Outcome};

/// How a trial's value is computed.
enum Evaluator {
    Builtin(SyntheticFunction),
    Command { runner: CommandRunner, scratch: PathBuf },
}

/// The function a benchmark run optimises, with its space, direction and (when known) the
/// optimum that regret is measured against.
pub struct Target {
    pub name: String,
    pub space: SearchSpace,
    pub direction: Direction,
    /// The best value the objective can reach; without it the summary shows best values
    /// instead of regrets.
    pub optimum: Option<f64>,
    /// The noise the study's objective adds itself (`[objective] noise`), the default of
    /// `--noise`.
    pub default_noise: f64,
    /// `[sampler] n_startup` of the study file, the default of `--n-startup`.
    pub n_startup: Option<usize>,
    evaluator: Evaluator,
}

impl Target {
    /// A built-in benchmark function (always minimised, optimum known).
    pub fn builtin(function: SyntheticFunction) -> Target {
        Target {
            name: function.name().to_string(),
            space: function.space(),
            direction: Direction::Minimize,
            optimum: Some(function.optimum()),
            default_noise: 0.0,
            n_startup: None,
            evaluator: Evaluator::Builtin(function),
        }
    }

    /// The space, direction and objective of a study file. Its store is not opened: nothing
    /// of the benchmark is recorded. A fine-tuning objective is refused (each trial would be
    /// a fine-tuning run; `run` is the way to run those).
    pub fn from_study(path: &Path, optimum: Option<f64>) -> anyhow::Result<Target> {
        let cfg = super::common::load_config(path)?;
        let (evaluator, default_noise) = match &cfg.objective {
            // `StudyConfig::load` has checked that the space holds the function's parameters.
            ObjectiveConfig::Synthetic { function, noise, .. } => (Evaluator::Builtin(*function), *noise),
            ObjectiveConfig::Command { argv, cwd } => {
                let scratch = std::env::temp_dir().join(format!("sft-search-bench-{}", std::process::id()));
                let runner = CommandRunner { argv: argv.clone(), cwd: cwd.clone(), trial_timeout: cfg.execution.trial_timeout };
                (Evaluator::Command { runner, scratch }, 0.0)
            }
            ObjectiveConfig::Finetune => {
                return Err(UsageError(format!(
                    "{}: `bench sampler --study` runs synthetic and command objectives; a fine-tuning study runs with `sft-search run`",
                    path.display()
                ))
                .into())
            }
            ObjectiveConfig::External => {
                return Err(UsageError(format!(
                    "{}: `bench sampler --study` runs synthetic and command objectives; an external objective's trials are \
                     evaluated by your own program (`sft-search ask` / `tell`)",
                    path.display()
                ))
                .into())
            }
        };
        let optimum = optimum.or(match evaluator {
            Evaluator::Builtin(f) if cfg.direction == Direction::Minimize => Some(f.optimum()),
            _ => None,
        });
        Ok(Target {
            name: cfg.name.clone(),
            space: cfg.space.clone(),
            direction: cfg.direction,
            optimum,
            default_noise,
            n_startup: cfg.sampler.n_startup,
            evaluator,
        })
    }

    /// The (noise-free, for built-in functions) value at `params`, or why the trial failed.
    /// `number` and `seed` name the trial to a command (`SFT_TRIAL_NUMBER`, its folder).
    pub fn evaluate(&self, params: &ParamSet, seed: u64, number: u64) -> anyhow::Result<Result<f64, String>> {
        match &self.evaluator {
            Evaluator::Builtin(f) => Ok(Ok(f.evaluate(params)?)),
            Evaluator::Command { runner, scratch } => {
                let dir = scratch.join(format!("seed-{seed}")).join(number.to_string());
                let assignment = TrialAssignment {
                    number,
                    params: params.clone(),
                    device: "cpu".into(),
                    retry_of: None,
                    artifacts_dir: dir.clone(),
                    resume_from: Vec::new(),
                };
                let mut reporter = RecordingReporter::default();
                let outcome = runner.run(&assignment, &mut reporter, &CancelToken::new());
                // The trial's folder is only for the program's own files; none is kept.
                if dir.exists() {
                    std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
                }
                Ok(match outcome {
                    Outcome::Complete { value } => Ok(value),
                    Outcome::Pruned { .. } => Err("pruned (bench sampler runs no pruner)".into()),
                    Outcome::Failed { reason } => Err(reason),
                })
            }
        }
    }

    /// The regret of a best value (its distance from the optimum), or the value itself when
    /// no optimum is known.
    pub fn regret(&self, best: f64) -> f64 {
        match (self.optimum, self.direction) {
            (None, _) => best,
            (Some(o), Direction::Minimize) => best - o,
            (Some(o), Direction::Maximize) => o - best,
        }
    }

    /// The word for what [`Target::regret`] gives, for table headers.
    pub fn measure(&self) -> &'static str {
        if self.optimum.is_some() {
            "regret"
        } else {
            "best"
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Evaluator::Command { scratch, .. } = &self.evaluator {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}
