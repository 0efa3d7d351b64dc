//! The study file's `[data]` table: where the rows are, which columns hold text and label,
//! and how the rows are split.
//!
//! Paths are relative to the study file ([`DataSection::resolve_paths`]); `${VAR}` expansion
//! is the config loader's job and has already happened when this struct is built.
//!
//! Split rules (the same for every trial of a study, since they only depend on these fields):
//! - neither `valid_path` nor `test_path`: the main file is split train/valid/test by
//!   `split` (stratified by label, seeded by `split_seed`);
//! - only `test_path`: the main file is split train/valid in the ratio of the first two
//!   `split` numbers, normalised (so `[0.85, 0.15]` and the default `[0.7, 0.15, 0.15]` both work);
//! - only `valid_path`: the main file is split train/test in the ratio `split[0] : split[2]`
//!   (no test split when `split` has two numbers);
//! - both: no split; the main file is all training rows.
//!
//! `split` has two numbers (train, valid: no test split) or three (train, valid, test); each
//! is in `[0, 1]` and they sum to 1.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use super::error::DataError;

/// Classification (one label per row), multi-label classification (a set of labels per row),
/// regression (one number per row) or token classification (one tag per word: named
/// entities, BIO tags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    #[default]
    Classification,
    Regression,
    /// Rows are sentences of words with one tag each (CoNLL files, or JSON Lines with a
    /// list of words and a list of tags); the model tags every word.
    TokenClassification,
    /// Each row has any number of labels of a set (none, one or several): one independent
    /// yes/no output per label (sigmoid and binary cross-entropy, as Hugging Face's
    /// `problem_type = "multi_label_classification"`).
    MultiLabelClassification,
}

impl Problem {
    /// The study-file spelling (`problem = "…"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Problem::Classification => "classification",
            Problem::Regression => "regression",
            Problem::TokenClassification => "token_classification",
            Problem::MultiLabelClassification => "multi_label_classification",
        }
    }

    /// Whether the model predicts labels of a set (sequence, multi-label or token
    /// classification).
    pub fn has_labels(self) -> bool {
        self != Problem::Regression
    }
}

/// The `[data]` table of a study file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// The main data file: `.csv`, `.tsv`/`.tab` or `.jsonl`/`.ndjson` (by extension).
    pub path: PathBuf,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Second text column for sentence-pair tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_pair_column: Option<String>,
    #[serde(default = "default_label_column")]
    pub label_column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_path: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// Train/valid(/test) fractions; see the module doc for how they combine with the paths.
    #[serde(default = "default_split")]
    pub split: Vec<f64>,
    #[serde(default = "default_split_seed")]
    pub split_seed: u64,
    /// Drop rows whose (text, text pair) repeats an earlier row of the same file.
    #[serde(default)]
    pub dedup: bool,
    /// Keep at most this many rows of each file (a seeded sample, kept in file order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rows: Option<usize>,
    #[serde(default)]
    pub problem: Problem,
    /// Explicit label order (ids are positions in this list); labels outside it are refused.
    /// Strings or integers are accepted and compared as text.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "de_labels")]
    pub labels: Option<Vec<String>>,
    /// Multi-label classification: what separates the labels of a row in a CSV/TSV cell
    /// (default `,`). A cell that is a JSON list (`["a", "b"]`), and a JSON Lines list, need none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_separator: Option<String>,
}

/// What separates a multi-label cell's labels when `label_separator` is not set.
pub const DEFAULT_LABEL_SEPARATOR: &str = ",";

pub(crate) fn default_text_column() -> String {
    "text".into()
}
pub(crate) fn default_label_column() -> String {
    "label".into()
}
fn default_split() -> Vec<f64> {
    vec![0.7, 0.15, 0.15]
}
pub(crate) fn default_split_seed() -> u64 {
    42
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LabelName {
    Int(i64),
    Str(String),
}

fn de_labels<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v: Option<Vec<LabelName>> = Option::deserialize(d)?;
    Ok(v.map(|v| {
        v.into_iter()
            .map(|l| match l {
                LabelName::Int(i) => i.to_string(),
                LabelName::Str(s) => s,
            })
            .collect()
    }))
}

/// Fractions of the main file that go to each split, after the path rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitFractions {
    pub train: f64,
    pub valid: f64,
    pub test: f64,
}

impl DataSection {
    /// A section with every default and the given main file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        DataSection {
            path: path.into(),
            text_column: default_text_column(),
            text_pair_column: None,
            label_column: default_label_column(),
            valid_path: None,
            test_path: None,
            split: default_split(),
            split_seed: default_split_seed(),
            dedup: false,
            max_rows: None,
            problem: Problem::Classification,
            labels: None,
            label_separator: None,
        }
    }

    /// Makes relative paths relative to `base_dir` (the study file's folder).
    pub fn resolve_paths(&mut self, base_dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        };
        fix(&mut self.path);
        if let Some(p) = self.valid_path.as_mut() {
            fix(p);
        }
        if let Some(p) = self.test_path.as_mut() {
            fix(p);
        }
    }

    /// Checks the settings that need no file: split numbers, labels, column names.
    pub fn validate(&self) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::Config(m));
        if self.split.len() != 2 && self.split.len() != 3 {
            return bad(format!("split must have 2 (train, valid) or 3 (train, valid, test) numbers, got {}", self.split.len()));
        }
        if self.split.iter().any(|f| !(0.0..=1.0).contains(f)) {
            return bad(format!("split numbers must be in [0, 1], got {:?}", self.split));
        }
        let sum: f64 = self.split.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return bad(format!("split numbers must sum to 1, got {:?} (sum {sum})", self.split));
        }
        if self.split[0] <= 0.0 {
            return bad("the train fraction (split[0]) must be above 0".into());
        }
        let f = self.split_fractions();
        if self.valid_path.is_none() && f.valid <= 0.0 {
            return bad("no validation rows: give valid_path or a valid fraction (split[1]) above 0".into());
        }
        if self.text_column.is_empty() || self.label_column.is_empty() {
            return bad("text_column and label_column must not be empty".into());
        }
        if let Some(labels) = &self.labels {
            if self.problem == Problem::Regression {
                return bad("labels is for classification; remove it or set problem = \"classification\"".into());
            }
            if labels.is_empty() {
                return bad("labels must list at least one label".into());
            }
            let mut seen = std::collections::HashSet::new();
            for l in labels {
                if !seen.insert(l) {
                    return bad(format!("label `{l}` is listed twice in labels"));
                }
            }
        }
        if self.problem == Problem::TokenClassification && self.text_pair_column.is_some() {
            return bad("text_pair_column is for sentence pairs; token classification tags the words of one text".into());
        }
        match &self.label_separator {
            Some(_) if self.problem != Problem::MultiLabelClassification => {
                return bad("label_separator is for problem = \"multi_label_classification\" (several labels in one cell)".into());
            }
            Some(s) if s.is_empty() => return bad("label_separator must not be empty".into()),
            _ => {}
        }
        if self.max_rows == Some(0) {
            return bad("max_rows must be at least 1".into());
        }
        Ok(())
    }

    /// What separates the labels of a multi-label cell (`label_separator`, default `,`).
    pub fn label_separator(&self) -> &str {
        self.label_separator.as_deref().unwrap_or(DEFAULT_LABEL_SEPARATOR)
    }

    /// How the main file is divided, after the `valid_path`/`test_path` rules (module doc).
    pub fn split_fractions(&self) -> SplitFractions {
        let tr = self.split.first().copied().unwrap_or(1.0);
        let va = self.split.get(1).copied().unwrap_or(0.0);
        let te = self.split.get(2).copied().unwrap_or(0.0);
        let norm = |a: f64, b: f64| {
            let s = a + b;
            if s > 0.0 {
                (a / s, b / s)
            } else {
                (1.0, 0.0)
            }
        };
        match (self.valid_path.is_some(), self.test_path.is_some()) {
            (false, false) => SplitFractions { train: tr, valid: va, test: te },
            (false, true) => {
                let (a, b) = norm(tr, va);
                SplitFractions { train: a, valid: b, test: 0.0 }
            }
            (true, false) => {
                let (a, b) = norm(tr, te);
                SplitFractions { train: a, valid: 0.0, test: b }
            }
            (true, true) => SplitFractions { train: 1.0, valid: 0.0, test: 0.0 },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_fields() {
        let d: DataSection = toml::from_str("path = \"a.csv\"").unwrap();
        assert_eq!(d, DataSection::new("a.csv"));
        assert_eq!(d.split, vec![0.7, 0.15, 0.15]);
        assert_eq!(d.split_seed, 42);
        let e = toml::from_str::<DataSection>("path = \"a.csv\"\ntext_colum = \"x\"");
        assert!(e.is_err());
        let d: DataSection = toml::from_str("path = \"a.csv\"\nlabels = [0, 1]\nproblem = \"classification\"").unwrap();
        assert_eq!(d.labels, Some(vec!["0".to_string(), "1".to_string()]));
        let d: DataSection = toml::from_str("path = \"a.csv\"\nsplit = [1, 0]").unwrap();
        assert_eq!(d.split, vec![1.0, 0.0]);
    }

    #[test]
    fn split_rules() {
        let mut d = DataSection::new("a.csv");
        assert!(d.validate().is_ok());
        d.test_path = Some("t.csv".into());
        let f = d.split_fractions();
        assert!((f.train - 0.7 / 0.85).abs() < 1e-12 && (f.valid - 0.15 / 0.85).abs() < 1e-12);
        assert_eq!(f.test, 0.0);
        d.split = vec![0.85, 0.15];
        assert!(d.validate().is_ok());
        assert!((d.split_fractions().train - 0.85).abs() < 1e-12);
        d.valid_path = Some("v.csv".into());
        assert_eq!(d.split_fractions().train, 1.0);
        let mut d = DataSection::new("a.csv");
        d.split = vec![0.7, 0.2, 0.2];
        assert!(matches!(d.validate(), Err(DataError::Config(_))));
        d.split = vec![1.0, 0.0];
        assert!(d.validate().is_err(), "no valid rows and no valid_path");
    }

    #[test]
    fn resolve_paths_joins_relative_only() {
        let mut d = DataSection::new("data/a.csv");
        d.test_path = Some("/abs/t.csv".into());
        d.resolve_paths(Path::new("/studies"));
        assert_eq!(d.path, PathBuf::from("/studies/data/a.csv"));
        assert_eq!(d.test_path, Some(PathBuf::from("/abs/t.csv")));
    }
}
