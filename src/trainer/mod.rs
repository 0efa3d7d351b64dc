//! Candle fine-tuning: the trainable BERT classifier (`model`), a tiny-model writer for tests
//! (`tiny`) and process-level speed settings (`perf`).

pub mod model;
pub mod perf;
pub mod tiny;
