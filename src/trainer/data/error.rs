//! Errors of the data pipeline. Each names the file and, where there is one, the line
//! (1-based, the header is line 1 in CSV/TSV), the data row (1-based, header not counted)
//! and the column.

use std::path::PathBuf;

/// Anything that can go wrong between a `[data]` table and a batch of tensors.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("invalid [data] settings: {0}")]
    Config(String),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: unsupported file type (expected .csv, .tsv, .tab, .jsonl or .ndjson; .conll, .iob or .bio for token classification)")]
    UnsupportedFormat { path: PathBuf },
    #[error("{path}: the file is empty (no header or no data rows)")]
    Empty { path: PathBuf },
    #[error("{path}: no column `{column}`; columns present: {}", present.join(", "))]
    MissingColumn { path: PathBuf, column: String, present: Vec<String> },
    #[error("{path} line {line} (row {row}): column `{column}` has no value")]
    MissingValue { path: PathBuf, line: u64, row: usize, column: String },
    #[error("{path} line {line} (row {row}), column `{column}`: label `{label}` is not one of the labels [{}] ({origin})", allowed.join(", "))]
    LabelNotInSet {
        path: PathBuf,
        line: u64,
        row: usize,
        column: String,
        label: String,
        allowed: Box<[String]>,
        /// Where the label set comes from: the `[data]` table or the main file.
        origin: Box<str>,
    },
    #[error("{path} line {line} (sentence {sentence}, word {word} `{text}`): tag `{tag}` is not one of the tags [{}] ({origin})", allowed.join(", "))]
    TagNotInSet {
        path: PathBuf,
        line: u64,
        sentence: usize,
        word: usize,
        text: Box<str>,
        tag: Box<str>,
        allowed: Box<[String]>,
        origin: Box<str>,
    },
    #[error("{path} line {line} (row {row}), column `{column}`: regression target `{value}` is not a finite number")]
    BadTarget { path: PathBuf, line: u64, row: usize, column: String, value: String },
    #[error("{path} line {line}: {message}")]
    Parse { path: PathBuf, line: u64, message: String },
    #[error("{path}: no rows left after cleaning ({dropped} dropped as empty or duplicate)")]
    NoRowsLeft { path: PathBuf, dropped: usize },
    #[error("the {split} split is empty: {hint}")]
    EmptySplit { split: &'static str, hint: String },
    #[error("tokenizer in {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    #[error("tokenizing: {0}")]
    Encode(String),
    #[error("batching: {0}")]
    Batch(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
