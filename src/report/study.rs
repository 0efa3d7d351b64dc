//! Everything the plots and the report read from a stored study, loaded once: the trials,
//! each parameter's distribution (from the study file when given, else as stored with the
//! trials), the metric's name, the sampler and budget, and the best trial's per-epoch metrics.

use serde_json::{Map, Value};

use crate::config::{SamplerKind, StudyConfig};
use crate::space::{Condition, Distribution, Param, SearchSpace, SpaceError};
use crate::storage::{Store, StoreError, StudyInfo};
use crate::trial::{best_trial, Direction, TrialRecord};

/// A study as the plots see it.
#[derive(Debug, Clone)]
pub struct StudyData {
    pub name: String,
    pub direction: Direction,
    /// The objective's name (`sft:metric`, else "value").
    pub metric: String,
    pub trials: Vec<TrialRecord>,
    /// Every searched parameter, in the study file's order (else first-stored order).
    pub params: Vec<(String, Distribution)>,
    /// The study file's conditions on parameters (`when`); empty without a study file.
    pub conditions: Vec<Condition>,
    /// The sampler, described (e.g. `gp (seed 0)`), when known.
    pub sampler: Option<String>,
    /// Whether the sampler is a Gaussian process (importance says how it was measured).
    pub sampler_is_gp: bool,
    /// `[study] n_trials`, when known.
    pub n_trials: Option<u64>,
    /// Per-epoch metrics of the best COMPLETE trial: step → (name → value).
    pub best_steps: Vec<(i64, Map<String, Value>)>,
    /// The study file's text (the given file, else the copy stored with the study).
    pub study_file: Option<String>,
    /// The model soup (`sft:soup`), when the study built one.
    pub soup: Option<Map<String, Value>>,
}

impl StudyData {
    /// Reads the study from the store; `config` (the study file) wins over what is stored.
    pub fn load(store: &Store, study: &StudyInfo, config: Option<&StudyConfig>) -> Result<StudyData, StoreError> {
        let trials = store.trials(study.id)?;
        let stored = store.param_distributions(study.id)?;
        let params = match config {
            Some(c) => {
                let mut p: Vec<(String, Distribution)> = c.space.params().iter().map(|p| (p.name.clone(), p.dist.clone())).collect();
                // Parameters stored but no longer in the file still get plotted.
                for (n, d) in stored {
                    if !p.iter().any(|(m, _)| *m == n) {
                        p.push((n, d));
                    }
                }
                p
            }
            None => stored,
        };
        let metric = match config {
            Some(c) => c.metric.clone(),
            None => study.user_attrs.get("sft:metric").and_then(Value::as_str).unwrap_or("value").to_string(),
        };
        let stored_file = study.user_attrs.get("sft:study_file").and_then(Value::as_str).and_then(|t| t.parse::<toml::Table>().ok());
        let (sampler, sampler_is_gp, n_trials) = match config {
            Some(c) => {
                let kind = match c.sampler.kind {
                    SamplerKind::Grid => "grid",
                    SamplerKind::Random => "random",
                    SamplerKind::Gp => "gp",
                };
                (Some(format!("{kind} (seed {})", c.sampler.seed)), c.sampler.kind == SamplerKind::Gp, c.n_trials)
            }
            None => match &stored_file {
                Some(t) => describe_stored(t),
                None => (None, false, None),
            },
        };
        let best_steps = match best_trial(&trials, study.direction) {
            Some(b) => store.step_metrics(b.id)?,
            None => Vec::new(),
        };
        Ok(StudyData {
            name: study.name.clone(),
            direction: study.direction,
            metric,
            trials,
            params,
            conditions: config.map(|c| c.space.conditions().to_vec()).unwrap_or_default(),
            sampler,
            sampler_is_gp,
            n_trials,
            best_steps,
            study_file: match config {
                Some(c) => Some(c.text.clone()),
                None => study.user_attrs.get("sft:study_file").and_then(Value::as_str).map(str::to_string),
            },
            soup: study.user_attrs.get(crate::trainer::soup::STUDY_ATTR).and_then(Value::as_object).cloned(),
        })
    }

    /// The plotted parameters as a search space, with the study file's conditions (an error
    /// when they do not make one, e.g. a stored distribution the space rules reject).
    pub fn space(&self) -> Result<SearchSpace, SpaceError> {
        let params: Vec<Param> = self.params.iter().map(|(n, d)| Param { name: n.clone(), dist: d.clone() }).collect();
        SearchSpace::with_conditions(params, self.conditions.clone())
    }

    /// The distribution of a parameter, when known.
    pub fn dist(&self, name: &str) -> Option<&Distribution> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    /// The parameter names, in order.
    pub fn param_names(&self) -> Vec<String> {
        self.params.iter().map(|(n, _)| n.clone()).collect()
    }

    /// The best COMPLETE trial.
    pub fn best(&self) -> Option<&TrialRecord> {
        best_trial(&self.trials, self.direction)
    }
}

/// Sampler, whether it is gp, and budget from the study file text stored with the study.
fn describe_stored(t: &toml::Table) -> (Option<String>, bool, Option<u64>) {
    let sampler = t.get("sampler").and_then(|s| s.as_table());
    let kind = sampler.and_then(|s| s.get("kind")).and_then(|k| k.as_str()).unwrap_or("random").to_string();
    let seed = sampler.and_then(|s| s.get("seed")).and_then(|k| k.as_integer());
    let desc = match seed {
        Some(s) => format!("{kind} (seed {s})"),
        None => kind.clone(),
    };
    let n_trials = t.get("study").and_then(|s| s.get("n_trials")).and_then(|n| n.as_integer()).and_then(|n| u64::try_from(n).ok());
    (Some(desc), kind == "gp", n_trials)
}
