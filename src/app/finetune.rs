//! Builds the fine-tuning objective of a study (`[objective] kind = "finetune"`): reads
//! `[model]`, `[data]` and `[train]` with file:line:column errors, expands `${VAR}` in their
//! paths, checks the metric and the searched parameters, loads the data once (so a missing
//! column or a bad label stops the study before any trial), and resolves the model.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::UsageError;
use crate::config::StudyConfig;
use crate::trainer::data::{load_dataset, DataSection, Problem};
use crate::trainer::metrics::metrics_for;
use crate::trainer::runner::FinetuneRunner;
use crate::trainer::soup::{SoupKind, SoupSection};
use crate::trainer::spec::{ModelSection, TrainSection, TrainSpec, TRAIN_OPTIONS};

/// The fine-tuning tables of a study file (other tables are read elsewhere).
#[derive(Debug, Deserialize)]
struct FinetuneTables {
    model: Option<ModelSection>,
    data: Option<DataSection>,
    #[serde(default)]
    train: TrainSection,
    #[serde(default)]
    soup: SoupSection,
}

fn usage(cfg: &StudyConfig, msg: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("{}: {msg}", cfg.path.display())).into()
}

fn expand(cfg: &StudyConfig, key: &str, p: &Path) -> anyhow::Result<PathBuf> {
    cfg.resolve_path(key, &p.to_string_lossy()).map_err(|e| UsageError(e.to_string()).into())
}

/// The runner of a finetune study, after every check that can be made before a trial runs.
pub fn build(cfg: &StudyConfig, quiet: bool) -> anyhow::Result<FinetuneRunner> {
    let tables: FinetuneTables = cfg.parse_tables().map_err(|e| UsageError(e.to_string()))?;
    let mut model = tables.model.ok_or_else(|| usage(cfg, "a finetune study needs a `[model]` table (`path` or `hub`)"))?;
    let mut data =
        tables.data.ok_or_else(|| usage(cfg, "a finetune study needs a `[data]` table (`path` = a CSV, TSV or JSON Lines file)"))?;
    if let Some(p) = &model.path {
        model.path = Some(expand(cfg, "model.path", p)?);
    }
    data.path = expand(cfg, "data.path", &data.path)?;
    if let Some(p) = &data.valid_path {
        data.valid_path = Some(expand(cfg, "data.valid_path", p)?);
    }
    if let Some(p) = &data.test_path {
        data.test_path = Some(expand(cfg, "data.test_path", p)?);
    }
    // Every searched parameter must be a training option.
    for p in cfg.space.params() {
        if !TRAIN_OPTIONS.contains(&p.name.as_str()) {
            let hint = crate::config::suggest::hint(&p.name, TRAIN_OPTIONS.iter().copied());
            return Err(usage(
                cfg,
                format!("`space.{}` is not a training option (expected one of: {}){hint}", p.name, TRAIN_OPTIONS.join(", ")),
            ));
        }
    }
    // A searched option also fixed in [train]: the search wins; say so, it may be a slip.
    if let Some(fixed) = cfg.train.as_ref().filter(|_| !quiet) {
        for p in cfg.space.params() {
            if let Some(v) = fixed.get(&p.name) {
                tracing::warn!(
                    "{}: `{}` is searched ([space]) and also fixed in [train] (= {v}); each trial uses its sampled value",
                    cfg.path.display(),
                    p.name
                );
            }
        }
    }
    let fixed = TrainSpec::from_params(&tables.train, &Default::default()).map_err(|e| usage(cfg, format!("[train]: {e}")))?;
    let problem = model.problem.unwrap_or(data.problem);
    let known = metrics_for(problem);
    if !known.contains(&cfg.metric.as_str()) {
        return Err(usage(
            cfg,
            format!(
                "`study.metric` = \"{}\" is not a metric of a {} study (expected one of: {})",
                cfg.metric,
                problem.as_str(),
                known.join(", ")
            ),
        ));
    }
    if problem == Problem::TokenClassification && (fixed.augment_prob > 0.0 || cfg.space.params().iter().any(|p| p.name == "augment_prob"))
    {
        return Err(usage(
            cfg,
            "augment_prob deletes and swaps words, which would separate them from their tags: token classification does not \
             augment; remove it from [train] and [space]",
        ));
    }
    if problem != Problem::MultiLabelClassification
        && (tables.train.threshold.is_some() || cfg.space.params().iter().any(|p| p.name == "threshold"))
    {
        return Err(usage(
            cfg,
            format!(
                "`threshold` decides which labels a multi-label model predicts; a {} study has no use for it: remove it from \
                 [train] and [space], or set problem = \"multi_label_classification\"",
                problem.as_str()
            ),
        ));
    }
    // Load the data once, as the trials will (`[model] problem` decides how labels are read):
    // its errors name the file, row and column.
    data.problem = problem;
    let dataset = load_dataset(&data).map_err(|e| UsageError(format!("{}: [data]: {e}", cfg.path.display())))?;
    if !quiet {
        let targets = match problem {
            // The names in id order: for `f1` the positive class is the second of two.
            // With each label's share of the train rows: an imbalance decides `class_weights`
            // and whether accuracy is the metric to trust.
            Problem::Classification if dataset.num_labels() <= 12 => {
                let counts = dataset.class_counts(&dataset.train);
                let total = dataset.train.len().max(1) as f64;
                let shares: Vec<String> = dataset
                    .labels
                    .id2label
                    .iter()
                    .zip(&counts)
                    .map(|(name, &n)| format!("{name} {:.0}%", 100.0 * n as f64 / total))
                    .collect();
                format!("{} labels (share of train rows): {}", dataset.num_labels(), shares.join(", "))
            }
            Problem::Classification => format!("{} labels", dataset.num_labels()),
            Problem::TokenClassification => {
                let counts = dataset.class_counts(&dataset.train);
                let words: usize = counts.iter().sum();
                let shown = top_shares(&dataset.labels.id2label, &counts, words);
                format!("{words} train words, {} tags (share of train words): {shown}", dataset.num_labels())
            }
            Problem::MultiLabelClassification => {
                let counts = dataset.class_counts(&dataset.train);
                let rows = dataset.train.len().max(1) as f64;
                let none = dataset.train.iter().filter(|e| e.label.label_ids().is_empty()).count();
                format!(
                    "{} labels, {:.2} per train row, {:.1}% of rows with none (share of train rows with each): {}",
                    dataset.num_labels(),
                    counts.iter().sum::<usize>() as f64 / rows,
                    100.0 * none as f64 / rows,
                    top_shares(&dataset.labels.id2label, &counts, dataset.train.len())
                )
            }
            Problem::Regression => {
                let values: Vec<f32> = dataset.train.iter().map(|e| e.label.value()).collect();
                let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                let mean = values.iter().map(|&v| v as f64).sum::<f64>() / values.len().max(1) as f64;
                format!("regression targets {lo}..{hi} (train mean {mean:.4})")
            }
        };
        eprintln!(
            "data: {} train, {} valid, {} test rows, {targets} ({})",
            dataset.train.len(),
            dataset.valid.len(),
            dataset.test.len(),
            dataset.report
        );
    }
    if tables.soup.kind == SoupKind::Greedy && tables.soup.candidates < 2 {
        return Err(usage(cfg, "`soup.candidates` must be at least 2 (the best trial and one more)"));
    }
    let mut runner = FinetuneRunner::new(&model, data, tables.train, cfg.metric.clone(), cfg.direction)
        .map_err(|e| usage(cfg, format!("[model]: {e}")))?;
    runner.soup = tables.soup;
    if !quiet {
        report_lengths(cfg, &runner.model_dir, &dataset.train, fixed.max_length);
    }
    Ok(runner)
}

/// Prints the token lengths of the train rows and what `max_length` (fixed, or the range
/// searched) truncates; warns when even the longest setting cuts a tenth of the rows or more.
fn report_lengths(cfg: &StudyConfig, model_dir: &std::path::Path, train: &[crate::trainer::data::Example], fixed: usize) {
    use crate::space::{Distribution, ParamValue};
    let Ok(s) = crate::trainer::data::length_summary(model_dir, train, crate::trainer::data::lengths::SAMPLE_ROWS) else { return };
    if s.rows() == 0 {
        return;
    }
    let (short, long) = match cfg.space.params().iter().find(|p| p.name == "max_length").map(|p| &p.dist) {
        Some(Distribution::Int { low, high, .. }) => (*low as usize, *high as usize),
        Some(Distribution::Categorical { choices }) => {
            let v: Vec<usize> = choices
                .iter()
                .filter_map(|c| match c {
                    ParamValue::Int(i) => usize::try_from(*i).ok(),
                    _ => None,
                })
                .collect();
            (v.iter().copied().min().unwrap_or(fixed), v.iter().copied().max().unwrap_or(fixed))
        }
        _ => (fixed, fixed),
    };
    let pct = |m: usize| match s.truncated_share(m) {
        0.0 => "none".to_string(),
        x => format!("{:.1}%", 100.0 * x),
    };
    let sample =
        if s.rows() < s.of_rows { format!("{} of {} train rows", s.rows(), s.of_rows) } else { format!("{} train rows", s.rows()) };
    let cut = if short == long {
        format!("max_length {long} truncates {}", pct(long))
    } else {
        format!("max_length {short}..{long} truncates {}..{}", pct(short), pct(long))
    };
    eprintln!(
        "tokens per row ({sample}, special tokens included): median {}, 95th percentile {}, longest {}; {cut}",
        s.quantile(0.5),
        s.quantile(0.95),
        s.longest()
    );
    if s.cuts_many(long) {
        eprintln!(
            "warning: max_length {long} cuts the end off {} of the training rows; a larger `max_length` keeps more of each text (at more time per step)",
            pct(long)
        );
    }
}

/// The `data:` line's shares: each name's count over `total` (one decimal), biggest first, the
/// first twelve.
fn top_shares(names: &[String], counts: &[usize], total: usize) -> String {
    let mut shares: Vec<(usize, String)> =
        names.iter().zip(counts).map(|(name, &n)| (n, format!("{name} {:.1}%", 100.0 * n as f64 / total.max(1) as f64))).collect();
    shares.sort_by_key(|s| std::cmp::Reverse(s.0));
    shares.into_iter().take(12).map(|(_, s)| s).collect::<Vec<_>>().join(", ")
}
