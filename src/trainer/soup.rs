//! Greedy model soups (Wortsman et al., "Model soups: averaging weights of multiple fine-tuned
//! models improves accuracy without increasing inference time", ICML 2022): after a study,
//! the kept checkpoints of its best trials — all fine-tuned from the same pretrained weights —
//! are averaged weight by weight, greedily. Candidates are visited best value first; each is
//! added to the soup when the averaged model is better **on the valid split** than the soup
//! without it, or as good with a valid loss no higher. The test split plays no part. The result is one model of the same
//! architecture (inference costs what one trial's model costs), written as a checkpoint
//! folder that `evaluate_test` and `export` read like any trial's.
//!
//! A [`SoupJob`] runs in a worker process (`WorkerJob::Soup`), like a trial.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::checkpoint::{self, WEIGHTS};
use super::data::DataSection;
use super::model::{read_config, BertClassifier, HeadKind, ModelError, ModelOptions};
use super::train::{decide_threshold, encode_split_for, metrics_of, parse_device, predict, EvalSplit, SplitForCheckpoint, TrainError};
use crate::trial::Direction;

/// The study user attribute holding a study's soup: [`SoupResult::to_json`] plus `kind`,
/// `candidates` (the trial numbers considered, best first) and, once evaluated, `test`.
pub const STUDY_ATTR: &str = "sft:soup";

/// The stored soup of a study, when one has a checkpoint (more than one ingredient).
pub fn stored_with_checkpoint(user_attrs: &Map<String, Value>) -> Option<&Map<String, Value>> {
    let s = user_attrs.get(STUDY_ATTR)?.as_object()?;
    s.get("checkpoint").and_then(Value::as_str).map(|_| s)
}

/// `[soup]` of a study file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoupSection {
    /// `none` (the default: the best trial is the study's model) or `greedy`.
    #[serde(default)]
    pub kind: SoupKind,
    /// How many of the best COMPLETE trials are candidates (default 8).
    #[serde(default = "default_candidates")]
    pub candidates: usize,
    /// `best`: each candidate trial's best checkpoint; `all`: every checkpoint it kept (one
    /// per evaluation with `keep_checkpoints = "all"`), so epochs of one trial can be averaged.
    #[serde(default)]
    pub checkpoints: SoupCheckpoints,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SoupCheckpoints {
    #[default]
    Best,
    All,
}

/// The checkpoints a trial kept beside its best one (`checkpoint-*` folders with weights and
/// a trainer state, as `keep_checkpoints = "all"` leaves them), each with the valid value of
/// the evaluation it was written at; the best one is always included.
pub fn kept_checkpoints(best: &Path) -> Vec<(PathBuf, f64)> {
    let value_of = |dir: &Path| checkpoint::read_state(dir).ok().and_then(|s| s.history.last().map(|r| r.value));
    let mut out: Vec<(PathBuf, f64)> = match best.parent().and_then(|p| std::fs::read_dir(p).ok()) {
        Some(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-")))
            .filter(|p| p.join(WEIGHTS).is_file())
            .filter_map(|p| value_of(&p).filter(|v| v.is_finite()).map(|v| (p, v)))
            .collect(),
        None => Vec::new(),
    };
    if !out.iter().any(|(p, _)| p == best) {
        if let Some(v) = value_of(best) {
            out.push((best.to_path_buf(), v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn default_candidates() -> usize {
    8
}

impl Default for SoupSection {
    fn default() -> Self {
        SoupSection { kind: SoupKind::None, candidates: default_candidates(), checkpoints: SoupCheckpoints::Best }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SoupKind {
    #[default]
    None,
    Greedy,
}

/// One candidate: a trial's kept checkpoint and its recorded value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoupCandidate {
    pub trial: u64,
    pub checkpoint: PathBuf,
}

/// Build a greedy soup from `candidates` (best first) and write it to `out_dir` when it has
/// more than one ingredient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoupJob {
    pub candidates: Vec<SoupCandidate>,
    pub data: DataSection,
    pub metric: String,
    pub direction: Direction,
    pub device: String,
    pub out_dir: PathBuf,
}

/// What a soup job found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoupResult {
    /// Trials in the soup, in the order they were added (the first is the best trial; with
    /// `checkpoints = "all"` a trial can appear once per checkpoint of it that joined).
    pub ingredients: Vec<u64>,
    /// The checkpoint folder of each ingredient.
    pub ingredient_checkpoints: Vec<PathBuf>,
    /// Every candidate tried after the first, in order.
    pub tried: Vec<Tried>,
    /// Candidates skipped (and why): a different architecture or label set, an unreadable file.
    pub skipped: Vec<Skipped>,
    /// The valid value and loss of the best trial alone, re-evaluated.
    pub best_single: f64,
    pub best_single_loss: f64,
    /// The valid value of the soup, and all its valid metrics.
    pub value: f64,
    pub metrics: Map<String, Value>,
    /// The soup's checkpoint folder; `None` when no candidate joined (the best trial stays
    /// the study's model).
    pub checkpoint: Option<PathBuf>,
}

impl SoupResult {
    /// The result as the JSON object stored under [`STUDY_ATTR`] (a non-finite number is null).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A candidate left out before it was tried, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skipped {
    pub trial: u64,
    pub why: String,
}

/// One candidate tried: the valid value and loss of the soup with it, and whether it joined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tried {
    pub trial: u64,
    pub checkpoint: PathBuf,
    pub value: f64,
    pub loss: f64,
    pub kept: bool,
}

/// Named f32 tensors on the CPU.
type Weights = HashMap<String, Tensor>;

fn read_weights(dir: &Path) -> Result<Weights, TrainError> {
    let path = dir.join(WEIGHTS);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)
        .map_err(|e| TrainError::Model(ModelError::Weights { path: path.clone(), reason: e.to_string() }))?;
    tensors.into_iter().map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?))).collect::<candle_core::Result<Weights>>().map_err(TrainError::from)
}

/// Why `w` cannot be averaged with `reference` (other names or shapes), if it cannot.
fn mismatch(reference: &Weights, w: &Weights) -> Option<String> {
    if reference.len() != w.len() {
        return Some(format!("{} tensors instead of {}", w.len(), reference.len()));
    }
    for (k, t) in reference {
        match w.get(k) {
            None => return Some(format!("no tensor `{k}`")),
            Some(u) if u.dims() != t.dims() => return Some(format!("`{k}` has shape {:?}, not {:?}", u.dims(), t.dims())),
            Some(_) => {}
        }
    }
    None
}

/// `(sum + extra) / n`, tensor by tensor (`extra` absent: `sum / n`).
fn average(sum: &Weights, extra: Option<&Weights>, n: usize) -> Result<Weights, TrainError> {
    let scale = 1.0 / n as f64;
    let mut out = Weights::with_capacity(sum.len());
    for (k, s) in sum {
        let t = match extra.and_then(|e| e.get(k)) {
            Some(e) => (s + e)?,
            None => s.clone(),
        };
        out.insert(k.clone(), t.affine(scale, 0.0)?);
    }
    Ok(out)
}

fn add_into(sum: &mut Weights, w: &Weights) -> Result<(), TrainError> {
    for (k, s) in sum.iter_mut() {
        if let Some(t) = w.get(k) {
            *s = (&*s + t)?;
        }
    }
    Ok(())
}

fn loss_of(m: &Map<String, Value>) -> f64 {
    m.get("loss").and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The greedy loop's result: the sum of the ingredients' weights and what `SoupResult` reports.
struct Greedy {
    sum: Weights,
    ingredients: Vec<u64>,
    tried: Vec<Tried>,
    skipped: Vec<Skipped>,
    best_single: f64,
    best_single_loss: f64,
    value: f64,
    metrics: Map<String, Value>,
}

/// The greedy rule: starting from the first candidate's weights, each further candidate (in
/// order; `u64` ids) joins when the average with it is better on `evaluate` (the valid split)
/// than the average without it, or as good with a valid `loss` no higher. A candidate that
/// failed to load, or whose names or shapes differ, is skipped with the reason.
fn greedy(
    first_id: u64,
    first: Weights,
    rest: impl Iterator<Item = (u64, Result<Weights, String>)>,
    direction: Direction,
    evaluate: impl Fn(&Weights) -> Result<(f64, Map<String, Value>), TrainError>,
    on_step: &mut impl FnMut(u64, f64, bool),
) -> Result<Greedy, TrainError> {
    let (best_single, mut metrics) = evaluate(&first)?;
    let best_single_loss = loss_of(&metrics);
    let mut sum = first;
    let mut value = best_single;
    let mut ingredients = vec![first_id];
    let mut tried = Vec::new();
    let mut skipped = Vec::new();
    for (trial, loaded) in rest {
        let w = match loaded.and_then(|w| match mismatch(&sum, &w) {
            Some(why) => Err(why),
            None => Ok(w),
        }) {
            Ok(w) => w,
            Err(why) => {
                skipped.push(Skipped { trial, why });
                continue;
            }
        };
        let candidate = average(&sum, Some(&w), ingredients.len() + 1)?;
        let (v, m) = evaluate(&candidate)?;
        // Kept when better on valid, or equal and with no higher valid loss (the paper keeps
        // every tie; with a saturated metric that would average in trials that only make the
        // model less sure).
        // (a missing or NaN loss does not block a tie)
        let no_higher_loss = loss_of(&m).partial_cmp(&loss_of(&metrics)) != Some(std::cmp::Ordering::Greater);
        let keep = v.is_finite() && (direction.is_better(v, value) || (v == value && no_higher_loss));
        tried.push(Tried { trial, checkpoint: PathBuf::new(), value: v, loss: loss_of(&m), kept: keep });
        on_step(trial, v, keep);
        if keep {
            add_into(&mut sum, &w)?;
            ingredients.push(trial);
            value = v;
            metrics = m;
        }
    }
    Ok(Greedy { sum, ingredients, tried, skipped, best_single, best_single_loss, value, metrics })
}

/// Builds the greedy soup. `on_step` hears each candidate's result as it is known.
pub fn greedy_soup(job: &SoupJob, mut on_step: impl FnMut(u64, f64, bool)) -> Result<SoupResult, TrainError> {
    let Some(first) = job.candidates.first() else {
        return Err(TrainError::Setup("a soup needs at least one candidate checkpoint".into()));
    };
    let device = parse_device(&job.device)?;
    let SplitForCheckpoint { state, problem, rows, pad_id } = encode_split_for(&first.checkpoint, &job.data, EvalSplit::Valid)
        .map_err(|e| TrainError::Setup(format!("a model soup is chosen on the valid split: trial {}: {e}", first.trial)))?;
    let config = read_config(&first.checkpoint)?;
    let opts = ModelOptions { num_labels: state.num_labels, head: HeadKind::for_problem(problem), ..ModelOptions::default() };
    let evaluate = |w: &Weights| -> Result<(f64, Map<String, Value>), TrainError> {
        let model = BertClassifier::from_tensors(config.clone(), w.clone(), first.checkpoint.join(WEIGHTS), &opts, &device)?;
        let p = predict(&model, &rows, problem, pad_id, &device)?;
        let threshold = decide_threshold(&p, problem, state.spec.threshold, &job.metric)?;
        let (m, _) = metrics_of(&p, problem, &state.labels, threshold)?;
        let v = m
            .get(&job.metric)
            .and_then(Value::as_f64)
            .ok_or_else(|| TrainError::Setup(format!("the valid metrics have no `{}`", job.metric)))?;
        Ok((v, m))
    };

    let first_weights = read_weights(&first.checkpoint)?;
    // The loop works on candidate indices; they become trial numbers and folders below.
    let rest = job.candidates[1..].iter().enumerate().map(|(i, c)| {
        let loaded = read_weights(&c.checkpoint).map_err(|e| e.to_string()).and_then(|w| match checkpoint::read_state(&c.checkpoint) {
            Ok(s) if s.labels != state.labels => Err(format!("labels {:?}, not {:?}", s.labels, state.labels)),
            Ok(_) => Ok(w),
            Err(e) => Err(e.to_string()),
        });
        (i as u64 + 1, loaded)
    });
    let trial_of = |i: u64| job.candidates[i as usize].trial;
    let g = greedy(0, first_weights, rest, job.direction, evaluate, &mut |i, v, keep| on_step(trial_of(i), v, keep))?;
    let Greedy { sum, ingredients, mut tried, mut skipped, best_single, best_single_loss, value, metrics } = g;
    let cand = |i: u64| &job.candidates[i as usize];
    let ingredient_checkpoints: Vec<PathBuf> = ingredients.iter().map(|&i| cand(i).checkpoint.clone()).collect();
    let ingredients: Vec<u64> = ingredients.iter().map(|&i| cand(i).trial).collect();
    for t in tried.iter_mut() {
        t.checkpoint = cand(t.trial).checkpoint.clone();
        t.trial = cand(t.trial).trial;
    }
    for s in skipped.iter_mut() {
        s.trial = cand(s.trial).trial;
    }

    let checkpoint = if ingredients.len() > 1 {
        let soup = average(&sum, None, ingredients.len())?;
        let mut soup_state = state.clone();
        soup_state.best_checkpoint = Some(job.out_dir.clone());
        // Multi-label: the soup predicts with the threshold chosen for it on the valid split.
        if problem == crate::trainer::data::Problem::MultiLabelClassification {
            soup_state.threshold = metrics.get("threshold").and_then(Value::as_f64);
        }
        let config_src = first.checkpoint.join("config.json");
        checkpoint::write_atomic(&job.out_dir, &first.checkpoint, &soup_state, |tmp| {
            std::fs::copy(&config_src, tmp.join("config.json")).map_err(|e| format!("{}: {e}", config_src.display()))?;
            candle_core::safetensors::save(&soup, tmp.join(WEIGHTS)).map_err(|e| e.to_string())
        })?;
        Some(job.out_dir.clone())
    } else {
        None
    };
    Ok(SoupResult { ingredients, ingredient_checkpoints, tried, skipped, best_single, best_single_loss, value, metrics, checkpoint })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn w(pairs: &[(&str, &[f32])]) -> Weights {
        pairs.iter().map(|(k, v)| (k.to_string(), Tensor::new(*v, &Device::Cpu).unwrap())).collect()
    }

    #[test]
    fn averages_tensor_by_tensor() {
        let mut sum = w(&[("a", &[1.0, 2.0]), ("b", &[4.0])]);
        let x = w(&[("a", &[3.0, 6.0]), ("b", &[8.0])]);
        let avg = average(&sum, Some(&x), 2).unwrap();
        assert_eq!(avg["a"].to_vec1::<f32>().unwrap(), vec![2.0, 4.0]);
        assert_eq!(avg["b"].to_vec1::<f32>().unwrap(), vec![6.0]);
        add_into(&mut sum, &x).unwrap();
        let y = w(&[("a", &[5.0, 1.0]), ("b", &[0.0])]);
        let avg3 = average(&sum, Some(&y), 3).unwrap();
        assert_eq!(avg3["a"].to_vec1::<f32>().unwrap(), vec![3.0, 3.0]);
        assert_eq!(avg3["b"].to_vec1::<f32>().unwrap(), vec![4.0]);
        assert_eq!(average(&sum, None, 2).unwrap()["b"].to_vec1::<f32>().unwrap(), vec![6.0]);
    }

    #[test]
    fn a_candidate_joins_unless_it_makes_the_valid_value_worse() {
        // Valid value = minus the distance of the averaged `a` from 2 (maximised): the best
        // trial has a = 1 (value -1); averaging in 3 gives 2 (value 0, joins); then 8 would
        // give 4 (value -2, left out); then 2 keeps 2 (a tie, joins); a wrong shape is skipped.
        let eval = |w: &Weights| -> Result<(f64, Map<String, Value>), TrainError> {
            let a = w["a"].to_vec1::<f32>()?[0] as f64;
            let mut m = Map::new();
            m.insert("a".into(), json!(a));
            m.insert("loss".into(), json!(w.get("b").map_or(0.0, |b| b.to_vec1::<f32>().unwrap()[0] as f64)));
            Ok((-(a - 2.0).abs(), m))
        };
        let rest = vec![
            (7, Ok(w(&[("a", &[3.0])]))),
            (4, Ok(w(&[("a", &[8.0])]))),
            (5, Err("unreadable".to_string())),
            (6, Ok(w(&[("a", &[1.0, 1.0])]))),
            (2, Ok(w(&[("a", &[2.0])]))),
        ];
        let mut heard = Vec::new();
        let g = greedy(3, w(&[("a", &[1.0])]), rest.into_iter(), Direction::Maximize, eval, &mut |t, v, keep| heard.push((t, v, keep)))
            .unwrap();
        assert_eq!(g.ingredients, vec![3, 7, 2]);
        assert_eq!(
            g.tried.iter().map(|t| (t.trial, t.value, t.kept)).collect::<Vec<_>>(),
            vec![(7, 0.0, true), (4, -2.0, false), (2, 0.0, true)]
        );
        assert_eq!(heard, vec![(7, 0.0, true), (4, -2.0, false), (2, 0.0, true)]);
        assert_eq!(g.skipped.iter().map(|s| s.trial).collect::<Vec<_>>(), vec![5, 6]);
        assert!(g.skipped[1].why.contains("shape"), "{:?}", g.skipped);
        assert_eq!((g.best_single, g.value), (-1.0, 0.0));
        assert_eq!(g.metrics["a"], json!(2.0));
        assert_eq!(average(&g.sum, None, 3).unwrap()["a"].to_vec1::<f32>().unwrap(), vec![2.0]);
        // A tie joins only when the valid loss (here the averaged `b`) does not rise.
        let first = w(&[("a", &[2.0]), ("b", &[1.0])]);
        let rest = vec![(1, Ok(w(&[("a", &[2.0]), ("b", &[3.0])]))), (2, Ok(w(&[("a", &[2.0]), ("b", &[0.0])])))];
        let g = greedy(0, first, rest.into_iter(), Direction::Maximize, eval, &mut |_, _, _| {}).unwrap();
        assert_eq!(g.ingredients, vec![0, 2], "{:?}", g.tried);
        // Minimising the same distance: the first candidate makes it worse and stays out.
        let g =
            greedy(3, w(&[("a", &[1.0])]), vec![(7, Ok(w(&[("a", &[3.0])])))].into_iter(), Direction::Minimize, eval, &mut |_, _, _| {})
                .unwrap();
        assert_eq!(g.ingredients, vec![3]);
    }

    #[test]
    fn mismatched_names_or_shapes_are_refused() {
        let a = w(&[("a", &[1.0, 2.0])]);
        assert_eq!(mismatch(&a, &w(&[("a", &[0.0, 0.0])])), None);
        assert!(mismatch(&a, &w(&[("b", &[0.0, 0.0])])).unwrap().contains("no tensor `a`"));
        assert!(mismatch(&a, &w(&[("a", &[0.0])])).unwrap().contains("shape"));
        assert!(mismatch(&a, &w(&[("a", &[0.0, 0.0]), ("c", &[1.0])])).unwrap().contains("2 tensors"));
    }

    #[test]
    fn the_section_defaults_to_no_soup_and_refuses_unknown_keys() {
        let s: SoupSection = toml::from_str("").unwrap();
        assert_eq!(s, SoupSection::default());
        let s: SoupSection = toml::from_str("kind = \"greedy\"\ncandidates = 4").unwrap();
        assert_eq!((s.kind, s.candidates), (SoupKind::Greedy, 4));
        assert!(toml::from_str::<SoupSection>("kind = \"uniform\"").is_err());
        let s: SoupSection = toml::from_str("kind = \"greedy\"\ncheckpoints = \"all\"").unwrap();
        assert_eq!(s.checkpoints, SoupCheckpoints::All);
        assert!(toml::from_str::<SoupSection>("size = 3").is_err());
    }
}
