//! The data pipeline of a fine-tuning trial: `[data]` table → rows (CSV/TSV/JSONL) →
//! cleaning → label mapping → stratified split → tokenization → padded batches.
//!
//! Typical use (once per trial; the split is the same for every trial of a study):
//! ```no_run
//! # fn main() -> Result<(), sft_search::trainer::data::DataError> {
//! use sft_search::trainer::data::*;
//! let section = DataSection::new("studies/data/sentiment.csv");
//! let ds = load_dataset(&section)?;
//! let enc = TextEncoder::from_model_dir(std::path::Path::new("/work/minilm"), 64)?;
//! let train = enc.encode(&ds.train)?;
//! let device = candle_core::Device::Cpu;
//! for epoch in 0..3 {
//!     for batch in make_batches(&train, 16, Some(epoch_seed(42, epoch)), true, enc.pad_id(), &device) {
//!         let batch = batch?; // batch.input_ids [b, L] u32, batch.labels [b] ...
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod augment;
pub mod batch;
pub mod clean;
pub mod config;
pub mod error;
pub mod labels;
pub mod lengths;
pub mod read;
pub mod split;
pub mod tokenize;

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use augment::{augment_examples, augment_text};
pub use batch::{batch_indices, collate, epoch_seed, make_batches, Batch, BatchIter};
pub use clean::CleaningReport;
pub use config::{DataSection, Problem, SplitFractions};
pub use error::DataError;
pub use labels::LabelMap;
pub use lengths::{length_summary, length_summary_of, LengthSummary};
pub use tokenize::{load_tokenizer, Encoded, TextEncoder};

/// The training target of one row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// Class id (see [`LabelMap`]).
    Class(u32),
    /// Regression value.
    Value(f32),
    /// Token classification: one tag id per word (see [`LabelMap`]). Once tokenized
    /// ([`Encoded`]), one entry per token: the word's tag on its first token, [`IGNORE_TAG`]
    /// on the others and on the special tokens.
    Tags(Vec<u32>),
    /// Multi-label classification: one flag per label, in id order (see [`LabelMap`]): whether
    /// the row has that label. All `false` is a row with none of them.
    Labels(Vec<bool>),
}

/// The tag of a token that is not scored (a word's later pieces, `[CLS]`, `[SEP]`, padding),
/// like the `-100` of Hugging Face's token classification.
pub const IGNORE_TAG: u32 = u32::MAX;

impl Target {
    /// The class id, for classification rows.
    pub fn class(&self) -> Option<u32> {
        match self {
            Target::Class(c) => Some(*c),
            Target::Value(_) | Target::Tags(_) | Target::Labels(_) => None,
        }
    }

    /// The target as a number (class id as float for classification; 0 for tags).
    pub fn value(&self) -> f32 {
        match self {
            Target::Class(c) => *c as f32,
            Target::Value(v) => *v,
            Target::Tags(_) | Target::Labels(_) => 0.0,
        }
    }

    /// The scored tags (token classification; empty otherwise).
    pub fn tags(&self) -> &[u32] {
        match self {
            Target::Tags(t) => t,
            _ => &[],
        }
    }

    /// The ids of the labels a multi-label row has (empty otherwise).
    pub fn label_ids(&self) -> Vec<u32> {
        match self {
            Target::Labels(f) => f.iter().enumerate().filter(|(_, &on)| on).map(|(i, _)| i as u32).collect(),
            _ => Vec::new(),
        }
    }
}

/// One cleaned row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub text: String,
    pub text_pair: Option<String>,
    pub label: Target,
}

/// The three splits, the label mapping and what cleaning did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub train: Vec<Example>,
    pub valid: Vec<Example>,
    /// May be empty (no `test_path` and no test fraction).
    pub test: Vec<Example>,
    /// Empty for regression.
    pub labels: LabelMap,
    pub problem: Problem,
    pub report: CleaningReport,
}

impl Dataset {
    /// Outputs of the model head: the number of classes (tags), or 1 for regression.
    pub fn num_labels(&self) -> usize {
        match self.problem {
            Problem::Classification | Problem::TokenClassification | Problem::MultiLabelClassification => self.labels.len(),
            Problem::Regression => 1,
        }
    }

    /// Rows per class id in `rows` (words per tag for token classification, rows that have
    /// each label for multi-label; length [`Dataset::num_labels`]; empty for regression).
    pub fn class_counts(&self, rows: &[Example]) -> Vec<usize> {
        if self.problem == Problem::Regression {
            return Vec::new();
        }
        let mut c = vec![0usize; self.labels.len()];
        for e in rows {
            let ids = match &e.label {
                Target::Class(id) => vec![*id],
                Target::Labels(_) => e.label.label_ids(),
                _ => e.label.tags().to_vec(),
            };
            for id in ids {
                if let Some(slot) = c.get_mut(id as usize) {
                    *slot += 1;
                }
            }
        }
        c
    }

    /// Accuracy of always predicting the majority class of `rows` (the fit diagnosis' chance
    /// level; for multi-label, the share of the most common set of labels, the exact-match
    /// accuracy of always predicting it); 0 for regression or no rows.
    pub fn chance_level(&self, rows: &[Example]) -> f64 {
        if self.problem == Problem::MultiLabelClassification {
            let mut sets = std::collections::HashMap::<&[bool], usize>::new();
            for e in rows {
                if let Target::Labels(f) = &e.label {
                    *sets.entry(f.as_slice()).or_default() += 1;
                }
            }
            return sets.values().copied().max().unwrap_or(0) as f64 / rows.len().max(1) as f64;
        }
        let c = self.class_counts(rows);
        let n: usize = c.iter().sum();
        if n == 0 {
            return 0.0;
        }
        c.iter().copied().max().unwrap_or(0) as f64 / n as f64
    }

    /// `class_weights = "balanced"`: `n / (k · count_c)` over the train split, like
    /// scikit-learn; a class absent from train gets weight 0 (it contributes no loss anyway).
    pub fn balanced_class_weights(&self) -> Vec<f32> {
        let c = self.class_counts(&self.train);
        let n: usize = c.iter().sum();
        let k = c.len();
        c.iter().map(|&m| if m == 0 { 0.0 } else { n as f32 / (k as f32 * m as f32) }).collect()
    }

    /// `class_weights = "balanced"` for multi-label: each label's positive weight is its
    /// negatives over its positives in the train split (torch's `pos_weight`), so a rare
    /// label's few positives weigh as much as its many negatives; 1 for a label no train row
    /// has.
    pub fn balanced_pos_weights(&self) -> Vec<f32> {
        let n = self.train.len();
        self.class_counts(&self.train).iter().map(|&p| if p == 0 { 1.0 } else { (n - p) as f32 / p as f32 }).collect()
    }
}

/// Reads, cleans, maps labels and splits as `section` says (paths already resolved).
pub fn load_dataset(section: &DataSection) -> Result<Dataset, DataError> {
    section.validate()?;
    let cols = read::Columns { text: &section.text_column, text_pair: section.text_pair_column.as_deref(), label: &section.label_column };
    let tokens = section.problem == Problem::TokenClassification;
    let mut report = CleaningReport::default();
    let mut load_file = |path: &Path, salt: u64| -> Result<Vec<read::RawRow>, DataError> {
        let mut rows = if tokens { read::read_token_rows(path, cols)? } else { read::read_rows(path, cols)? };
        let read = rows.len();
        if let Some(max) = section.max_rows {
            if rows.len() > max {
                let mut rng = ChaCha8Rng::seed_from_u64(section.split_seed ^ salt);
                let mut keep = rand::seq::index::sample(&mut rng, rows.len(), max).into_vec();
                keep.sort_unstable();
                let mut it = keep.into_iter().peekable();
                rows = rows
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, r)| {
                        if it.peek() == Some(&i) {
                            it.next();
                            Some(r)
                        } else {
                            None
                        }
                    })
                    .collect();
            }
        }
        let sampled_out = read - rows.len();
        let (rows, mut rep) = clean::clean_rows(rows, section.dedup);
        rep.rows_read = read;
        rep.sampled_out = sampled_out;
        if rows.is_empty() {
            return Err(DataError::NoRowsLeft { path: path.to_path_buf(), dropped: rep.empty_dropped + rep.duplicates_dropped });
        }
        report.add(&rep);
        Ok(rows)
    };
    let main = load_file(&section.path, 0)?;
    let valid_rows = section.valid_path.as_deref().map(|p| load_file(p, 1)).transpose()?;
    let test_rows = section.test_path.as_deref().map(|p| load_file(p, 2)).transpose()?;

    let (labels, origin) = match (section.problem, &section.labels) {
        (Problem::Regression, _) => (LabelMap::default(), String::new()),
        (_, Some(names)) => (LabelMap::from_names(names.clone()), "declared in [data] labels".to_string()),
        (Problem::MultiLabelClassification, None) => {
            let sep = section.label_separator();
            let names: Vec<String> =
                main.iter().filter_map(|r| r.label.as_deref()).filter_map(|l| read::label_list(l, sep).ok()).flatten().collect();
            let m = LabelMap::infer(names.iter().map(String::as_str));
            if m.is_empty() {
                return Err(DataError::Config(format!(
                    "no row of {} has a label in column `{}`; multi-label classification needs at least one label name",
                    section.path.display(),
                    section.label_column
                )));
            }
            (m, format!("the labels of {}", section.path.display()))
        }
        (problem, None) => {
            let tokens = problem == Problem::TokenClassification;
            let labels = main.iter().filter_map(|r| r.label.as_deref());
            let m = if tokens { LabelMap::infer_tags(labels.flat_map(|t| t.split(' '))) } else { LabelMap::infer(labels) };
            if tokens && m.id2label.iter().all(|t| t.parse::<i64>().is_ok()) {
                return Err(DataError::Config(format!(
                    "the tags of {} are integers; list the tag names in [data] labels, in id order (e.g. labels = [\"O\", \
                     \"B-person\", \"I-person\"]), so entities can be read from their B-/I- prefixes",
                    section.path.display()
                )));
            }
            let what = if tokens { "tag" } else { "label" };
            if m.len() < 2 {
                return Err(DataError::Config(format!(
                    "{} has a single {what} ({}); {} needs at least two",
                    section.path.display(),
                    m.id2label.join(", "),
                    problem.as_str().replace('_', " ")
                )));
            }
            (m, format!("the {what}s of {}", section.path.display()))
        }
    };
    let to_examples = |path: &Path, rows: &[read::RawRow]| -> Result<Vec<Example>, DataError> {
        rows.iter()
            .map(|r| {
                let not_in_set = |raw: &str| DataError::LabelNotInSet {
                    path: path.to_path_buf(),
                    line: r.line,
                    row: r.row,
                    column: section.label_column.clone(),
                    label: raw.to_string(),
                    allowed: labels.id2label.clone().into(),
                    origin: origin.as_str().into(),
                };
                // The label cell; only multi-label reads an empty one (as a row with no label).
                let raw = || {
                    r.label.as_deref().ok_or_else(|| DataError::MissingValue {
                        path: path.to_path_buf(),
                        line: r.line,
                        row: r.row,
                        column: section.label_column.clone(),
                    })
                };
                let label = match section.problem {
                    Problem::MultiLabelClassification => {
                        let names = read::label_list(r.label.as_deref().unwrap_or(""), section.label_separator())
                            .map_err(|message| DataError::Parse { path: path.to_path_buf(), line: r.line, message })?;
                        let mut flags = vec![false; labels.len()];
                        for n in names {
                            let id = labels.tag_id(&n, section.labels.is_some()).ok_or_else(|| not_in_set(&n))?;
                            flags[id as usize] = true;
                        }
                        Target::Labels(flags)
                    }
                    Problem::TokenClassification => {
                        // A CoNLL sentence has a line per word; a JSON Lines one is one line.
                        let per_word = read::is_conll(path);
                        let tag = |(i, (t, w)): (usize, (&str, &str))| {
                            labels.tag_id(t, section.labels.is_some()).ok_or_else(|| DataError::TagNotInSet {
                                path: path.to_path_buf(),
                                line: r.line + if per_word { i as u64 } else { 0 },
                                sentence: r.row,
                                word: i + 1,
                                text: w.into(),
                                tag: t.into(),
                                allowed: labels.id2label.clone().into(),
                                origin: origin.as_str().into(),
                            })
                        };
                        Target::Tags(raw()?.split(' ').zip(r.text.split(' ')).enumerate().map(tag).collect::<Result<_, _>>()?)
                    }
                    Problem::Classification => {
                        let raw = raw()?;
                        Target::Class(labels.id(raw).ok_or_else(|| not_in_set(raw))?)
                    }
                    Problem::Regression => {
                        let raw = raw()?;
                        match raw.trim().parse::<f32>() {
                            Ok(v) if v.is_finite() => Target::Value(v),
                            _ => {
                                return Err(DataError::BadTarget {
                                    path: path.to_path_buf(),
                                    line: r.line,
                                    row: r.row,
                                    column: section.label_column.clone(),
                                    value: raw.to_string(),
                                })
                            }
                        }
                    }
                };
                Ok(Example { text: r.text.clone(), text_pair: r.text_pair.clone(), label })
            })
            .collect()
    };
    let main_ex = to_examples(&section.path, &main)?;
    let valid_ex = match (&section.valid_path, &valid_rows) {
        (Some(p), Some(rows)) => Some(to_examples(p, rows)?),
        _ => None,
    };
    let test_ex = match (&section.test_path, &test_rows) {
        (Some(p), Some(rows)) => Some(to_examples(p, rows)?),
        _ => None,
    };

    // Stratified by class; rows of other problems share one stratum (a seeded random split).
    let strata: Vec<u32> = main_ex.iter().map(|e| e.label.class().unwrap_or(0)).collect();
    let idx = split::stratified_split(&strata, section.split_fractions(), section.split_seed);
    let pick = |ix: &[usize]| ix.iter().map(|&i| main_ex[i].clone()).collect::<Vec<_>>();
    let train = pick(&idx.train);
    let valid = valid_ex.unwrap_or_else(|| pick(&idx.valid));
    let test = test_ex.unwrap_or_else(|| pick(&idx.test));
    if train.is_empty() {
        return Err(DataError::EmptySplit {
            split: "train",
            hint: format!("{} has too few rows for split {:?}", section.path.display(), section.split),
        });
    }
    if valid.is_empty() {
        return Err(DataError::EmptySplit {
            split: "valid",
            hint: format!(
                "{} has too few rows for split {:?}; add rows, raise split[1] or give valid_path",
                section.path.display(),
                section.split
            ),
        });
    }
    Ok(Dataset { train, valid, test, labels, problem: section.problem, report })
}

#[cfg(test)]
mod tests;
