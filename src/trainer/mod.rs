//! Candle fine-tuning of pretrained transformers: the data pipeline (`data`), metrics and fit
//! diagnosis (`metrics`), the trainable BERT classifier (`model`), a tiny-model writer for
//! tests (`tiny`), process-level speed settings (`perf`), the GPU memory and time a run
//! uses (`gpu_usage`), the trial's spec (`spec`), loss, the trial optimizer with saveable state
//! (`optim`), an exponential moving average of the weights (`ema`), checkpoints, the training loop (`train`), the runner that drives a worker
//! process per trial (`runner`), greedy model soups of the best trials (`soup`) and a toy task for tests (`toy`).

pub mod checkpoint;
pub mod data;
pub mod ema;
pub mod fingerprint;
pub mod gpu_usage;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod perf;
pub mod runner;
pub mod soup;
pub mod spec;
pub mod tiny;
pub mod toy;
pub mod train;
