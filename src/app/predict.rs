//! `sft-search predict`: batch inference with a Hugging Face classification folder over a
//! CSV/TSV/JSONL file; writes the input columns plus `predicted_label` and one
//! `prob_<label>` column per class (multi-label: `predicted_labels`, the labels whose
//! probability reaches the study's threshold, joined by its separator, and each label's own
//! probability; regression: `prediction`), to a file or stdout.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::common::{metrics_summary, shown};
use super::UsageError;
use crate::cli::PredictArgs;
use crate::export::predict::{argmax, softmax, Predictor, TextInput};
use crate::export::table::{read_table, Format, TableWriter};
use crate::export::PROVENANCE;
use crate::trainer::data::Problem;
use crate::trainer::metrics::multilabel::{sigmoid, THRESHOLD};
use crate::trainer::train::parse_device;

fn usage(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(e.to_string()))
}

fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map(Value::Number).unwrap_or(Value::Null)
}

/// The columns the model was trained on, from the `sft_search.json` that `export` writes.
struct TrainedColumns {
    text: String,
    pair: Option<String>,
    /// Absent from exports made before it was recorded.
    label: Option<String>,
    /// Multi-label: what separates a row's labels (`None`: the default).
    separator: Option<String>,
    /// Multi-label: the decision threshold the study chose.
    threshold: Option<f64>,
}

/// The columns the model was trained on; `None` for a folder without `sft_search.json` (any
/// other Hugging Face model).
fn trained_columns(model: &std::path::Path) -> Option<TrainedColumns> {
    let v = crate::export::hf::read_json_object(&model.join(PROVENANCE)).ok()?;
    let text = v.get("text_column")?.as_str()?.to_string();
    let column = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(TrainedColumns {
        text,
        pair: column("text_pair_column"),
        label: column("label_column"),
        separator: column("label_separator"),
        threshold: v.get("threshold").and_then(Value::as_f64),
    })
}

fn provenance_of(model: &std::path::Path) -> String {
    shown(&model.join(PROVENANCE))
}

pub fn run(args: &PredictArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    if args.batch_size == 0 {
        return Err(usage("--batch-size must be at least 1"));
    }
    if super::predict_tokens::is_token_model(&args.model) {
        return super::predict_tokens::run(args, quiet);
    }
    let table = read_table(&args.input).map_err(usage)?;
    let trained = trained_columns(&args.model);
    let ti = match (&args.text_column, &trained) {
        (Some(c), _) => table.column(c).map_err(usage)?,
        (None, Some(TrainedColumns { text: c, .. })) => table.column(c).map_err(|e| {
            usage(format!("{e}; the model was trained on column `{c}` ({}): give --text-column", provenance_of(&args.model)))
        })?,
        (None, None) => table.column("text").map_err(|e| usage(format!("{e}; give --text-column")))?,
    };
    let pi = match (&args.text_pair_column, &trained) {
        (Some(c), _) => Some(table.column(c).map_err(usage)?),
        (None, Some(TrainedColumns { pair: Some(c), .. })) => Some(table.column(c).map_err(|e| {
            usage(format!(
                "{e}; the model was trained on sentence pairs, the second text in column `{c}` ({}): give \
                 --text-pair-column",
                provenance_of(&args.model)
            ))
        })?),
        _ => None,
    };
    // The true labels, when there are any to score against.
    let li = match (&args.label_column, trained.as_ref().and_then(|t| t.label.as_deref())) {
        (Some(c), _) => Some(table.column(c).map_err(usage)?),
        (None, Some(c)) => table.column(c).ok(),
        (None, None) => table.column("label").ok(),
    };
    if li.is_none() && args.metrics.is_some() {
        return Err(usage(format!(
            "--metrics needs true labels, and {} has no label column (its columns: {}): give --label-column",
            shown(&args.input),
            table.columns.join(", ")
        )));
    }
    let out_format = match &args.output {
        Some(p) => Format::of(p).map_err(usage)?,
        None => table.format,
    };
    let device = parse_device(&args.device).map_err(usage)?;
    let predictor = Predictor::load(&args.model, &device, args.max_length)
        .with_context(|| format!("loading the model folder {}", shown(&args.model)))?;
    let head = predictor.head().clone();
    let rows: Vec<TextInput> =
        (0..table.rows.len()).map(|r| TextInput { text: table.text(r, ti), pair: pi.map(|c| table.text(r, c)) }).collect();
    // Rows without a text still get a prediction (the output keeps every input row), but
    // that prediction says nothing about them: tell which.
    let empty: Vec<usize> = rows.iter().enumerate().filter(|(_, r)| r.text.trim().is_empty()).map(|(i, _)| i + 1).collect();
    if !empty.is_empty() && !quiet {
        eprintln!(
            "warning: {} of {} rows of {} have no text in column `{}` (rows {}); their predictions are the model's guess for an empty text",
            empty.len(),
            rows.len(),
            shown(&args.input),
            table.columns[ti],
            first_five(empty.iter().map(usize::to_string).collect())
        );
    }

    // Texts longer than the model's length lose their ends, as in training; say so when that
    // is a tenth of the rows or more (a sample of them, as `run` measures).
    if !quiet {
        use crate::trainer::data::{length_summary_of, lengths::SAMPLE_ROWS};
        let max = predictor.max_length();
        let measured = length_summary_of(&args.model, &rows, SAMPLE_ROWS, |r| (r.text.as_str(), r.pair.as_deref()));
        if let Some(s) = measured.ok().filter(|s| s.cuts_many(max)) {
            eprintln!(
                "warning: {:.1}% of the rows of {} are longer than {max} tokens, the length the model reads, and lose their ends \
                 (95th percentile {} tokens); --max-length reads more of each, beyond what an export was trained on",
                100.0 * s.truncated_share(max),
                shown(&args.input),
                s.quantile(0.95)
            );
        }
    }
    let pb = progress_bar(quiet, rows.len(), "predicting", "rows");
    let logits = predictor.logits(&rows, args.batch_size, &mut |done| pb.set_position(done as u64));
    pb.finish_and_clear();
    let logits = logits.context("running the model")?;

    let separator = trained
        .as_ref()
        .and_then(|t| t.separator.clone())
        .unwrap_or_else(|| crate::trainer::data::config::DEFAULT_LABEL_SEPARATOR.to_string());
    let threshold = args.threshold.or(trained.as_ref().and_then(|t| t.threshold)).unwrap_or(THRESHOLD);
    if !(threshold > 0.0 && threshold < 1.0) {
        return Err(usage(format!("--threshold {threshold} must be in (0, 1)")));
    }
    let mut columns = table.columns.clone();
    match head.problem {
        Problem::Classification | Problem::TokenClassification => {
            columns.push("predicted_label".into());
            columns.extend(head.labels.iter().map(|l| format!("prob_{l}")));
        }
        Problem::MultiLabelClassification => {
            columns.push("predicted_labels".into());
            columns.extend(head.labels.iter().map(|l| format!("prob_{l}")));
        }
        Problem::Regression => columns.push("prediction".into()),
    }
    let with_logits = args.logits && matches!(head.problem, Problem::Classification | Problem::MultiLabelClassification);
    if with_logits {
        columns.extend(head.labels.iter().map(|l| format!("logit_{l}")));
    }

    let (sink, tmp): (Box<dyn Write>, Option<std::path::PathBuf>) = match &args.output {
        Some(p) => {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = p.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
            let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            (Box::new(std::io::BufWriter::new(f)), Some(tmp))
        }
        None => (Box::new(std::io::BufWriter::new(std::io::stdout().lock())), None),
    };
    let written = (|| -> anyhow::Result<()> {
        let mut w = TableWriter::new(sink, out_format, columns)?;
        for (row, l) in table.rows.iter().zip(&logits) {
            let mut cells = row.clone();
            match head.problem {
                Problem::Classification | Problem::TokenClassification => {
                    let label = head.labels.get(argmax(l)).cloned().unwrap_or_default();
                    cells.push(Value::String(label));
                    cells.extend(softmax(l).into_iter().map(num));
                }
                Problem::MultiLabelClassification => {
                    let probs: Vec<f64> = l.iter().map(|&x| sigmoid(x as f64)).collect();
                    let on: Vec<&str> = head.labels.iter().zip(&probs).filter(|(_, &p)| p >= threshold).map(|(n, _)| n.as_str()).collect();
                    cells.push(Value::String(on.join(&separator)));
                    cells.extend(probs.into_iter().map(num));
                }
                Problem::Regression => cells.push(num(l.first().copied().unwrap_or(f32::NAN) as f64)),
            }
            if with_logits {
                cells.extend(l.iter().map(|&x| num(x as f64)));
            }
            w.write_row(&cells)?;
        }
        w.finish()?.flush()?;
        Ok(())
    })();
    match (&args.output, tmp) {
        (Some(out), Some(tmp)) => {
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.context(format!("writing {}", out.display())));
            }
            std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
            if !quiet {
                eprintln!("wrote {} predictions to {}", logits.len(), shown(out));
            }
        }
        _ => match written {
            Err(e) if e.chain().any(|c| c.to_string().contains("Broken pipe")) => {}
            other => other.context("writing to stdout")?,
        },
    }
    if let Some(li) = li {
        let scores = score(&table, li, &head, &logits, &separator, threshold);
        if !quiet {
            for line in scores.warnings(&table.columns[li], &head) {
                eprintln!("warning: {line}");
            }
        }
        if let Some(m) = &scores.metrics {
            let mut map = match serde_json::to_value(m) {
                Ok(Value::Object(map)) => map,
                _ => serde_json::Map::new(),
            };
            if !quiet {
                eprintln!(
                    "scored against column `{}` ({} of {} rows): {}",
                    table.columns[li],
                    scores.scored,
                    table.rows.len(),
                    metrics_summary(&map, "accuracy")
                );
                if let Some(cm) = m.confusion_matrix() {
                    eprintln!(
                        "confusion matrix (rows: true {}; columns: predicted): {}",
                        head.labels.join(", "),
                        serde_json::to_string(cm).unwrap_or_default()
                    );
                }
            }
            if let Some(path) = &args.metrics {
                map.insert("label_column".into(), Value::from(table.columns[li].clone()));
                map.insert("rows_scored".into(), Value::from(scores.scored));
                map.insert("rows_not_scored".into(), Value::from(scores.unknown.len() + scores.missing.len()));
                if let Some(cm) = m.confusion_matrix() {
                    map.insert("confusion_matrix".into(), serde_json::json!(cm));
                    map.insert("labels".into(), serde_json::json!(head.labels));
                }
                let text = serde_json::to_string_pretty(&Value::Object(map)).unwrap_or_default() + "\n";
                std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
            }
        } else if args.metrics.is_some() {
            return Err(anyhow::anyhow!("no row of {} has a label the model knows: nothing to score", shown(&args.input)));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The bar `predict` shows on stderr while it runs the model (hidden with `--quiet`).
pub(super) fn progress_bar(quiet: bool, len: usize, doing: &str, unit: &str) -> ProgressBar {
    let pb = if quiet { ProgressBar::hidden() } else { ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stderr()) };
    pb.set_style(
        ProgressStyle::with_template(&format!("{doing} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{per_sec}}  eta {{eta}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb
}

/// The first five items, joined, with `, …` when there are more.
fn first_five(items: Vec<String>) -> String {
    let more = if items.len() > 5 { ", …" } else { "" };
    format!("{}{more}", items.into_iter().take(5).collect::<Vec<_>>().join(", "))
}

/// Predictions scored against the input's own labels.
struct Scores {
    metrics: Option<crate::trainer::metrics::Metrics>,
    scored: usize,
    /// Rows (1-based) whose label the model does not know, with that label.
    unknown: Vec<(usize, String)>,
    /// Rows (1-based) without a label.
    missing: Vec<usize>,
}

impl Scores {
    fn warnings(&self, column: &str, head: &crate::export::hf::HeadConfig) -> Vec<String> {
        let mut out = Vec::new();
        if !self.unknown.is_empty() {
            let listed = first_five(self.unknown.iter().map(|(r, l)| format!("row {r}: `{l}`")).collect());
            let known = match head.problem {
                Problem::Classification | Problem::TokenClassification | Problem::MultiLabelClassification => head.labels.join(", "),
                Problem::Regression => "numbers".to_string(),
            };
            let n = self.unknown.len();
            let (rows_have, they) = if n == 1 { ("row has", "it is") } else { ("rows have", "they are") };
            out.push(format!(
                "{n} {rows_have} a label in column `{column}` the model does not know ({listed}; it knows {known}); {they} not scored"
            ));
        }
        if !self.missing.is_empty() {
            let n = self.missing.len();
            let listed = first_five(self.missing.iter().map(usize::to_string).collect());
            let (rows_have, rows, they) = if n == 1 { ("row has", "row", "it is") } else { ("rows have", "rows", "they are") };
            out.push(format!("{n} {rows_have} no label in column `{column}` ({rows} {listed}); {they} not scored"));
        }
        out
    }
}

/// Scores the predictions of the rows whose label in column `li` the model knows (a class name
/// of its `id2label`, or a number for regression; for multi-label, names split by `separator`
/// or a JSON list, every one known, an empty cell being a row with no label).
fn score(
    table: &crate::export::table::Table,
    li: usize,
    head: &crate::export::hf::HeadConfig,
    logits: &[Vec<f32>],
    separator: &str,
    threshold: f64,
) -> Scores {
    use crate::trainer::data::{LabelMap, Target};
    let names = LabelMap::from_names(head.labels.clone());
    let (mut outputs, mut targets) = (Vec::new(), Vec::new());
    let (mut unknown, mut missing) = (Vec::new(), Vec::new());
    for (r, l) in logits.iter().enumerate() {
        let cell = table.text(r, li);
        let label = cell.trim();
        if head.problem == Problem::MultiLabelClassification {
            let ids: Option<Vec<u32>> =
                crate::trainer::data::read::label_list(label, separator).ok().and_then(|n| n.iter().map(|n| names.id(n)).collect());
            match ids {
                Some(ids) => {
                    let mut flags = vec![false; head.labels.len()];
                    for i in ids {
                        flags[i as usize] = true;
                    }
                    targets.push(Target::Labels(flags));
                    outputs.extend_from_slice(l);
                }
                None => unknown.push((r + 1, label.to_string())),
            }
            continue;
        }
        if label.is_empty() {
            missing.push(r + 1);
            continue;
        }
        let target = match head.problem {
            Problem::Classification | Problem::TokenClassification | Problem::MultiLabelClassification => {
                names.id(label).map(Target::Class)
            }
            Problem::Regression => label.parse::<f32>().ok().filter(|v| v.is_finite()).map(Target::Value),
        };
        match target {
            Some(t) => {
                targets.push(t);
                outputs.extend_from_slice(l);
            }
            None => unknown.push((r + 1, label.to_string())),
        }
    }
    let k = logits.first().map_or(0, Vec::len);
    let metrics = crate::trainer::metrics::evaluate_outputs(&outputs, k, &targets, threshold).ok();
    Scores { metrics, scored: targets.len(), unknown, missing }
}
