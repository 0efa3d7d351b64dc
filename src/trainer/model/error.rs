//! Errors of loading, running and saving the model; each names the file and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: cannot read the model config: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{path}: cannot read the weights: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` is missing (looked for `{name}` and `{prefix}.{name}`)")]
    MissingTensor { path: PathBuf, name: String, prefix: &'static str },
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("{path}: cannot write the checkpoint: {reason}")]
    Save { path: PathBuf, reason: String },
    #[error("invalid model options: {0}")]
    Options(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
