//! Candle fine-tuning: the trainable BERT classifier (`model`), a fused AdamW (`fused_adamw`),
//! a tiny-model writer for tests (`tiny`) and process-level speed settings (`perf`).

pub mod fused_adamw;
pub mod model;
pub mod perf;
pub mod tiny;
