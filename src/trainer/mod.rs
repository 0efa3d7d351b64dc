//! Candle fine-tuning of pretrained transformers: the data pipeline (`data`), metrics and fit
//! diagnosis (`metrics`), the trainable BERT classifier (`model`), a tiny-model writer for
//! tests (`tiny`), process-level speed settings (`perf`), the trial's spec (`spec`), loss,
//! optimizer, checkpoints, the training loop (`train`) and the runner that drives a worker
//! process per trial (`runner`).

pub mod data;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod perf;
pub mod spec;
pub mod tiny;
pub mod checkpoint;
pub mod runner;
pub mod train;
pub mod toy;
