//! The fine-tuning trainer: data pipeline, metrics, model and training loop.

pub mod data;
pub mod metrics;
