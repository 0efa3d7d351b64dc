//! Candle fine-tuning of pretrained transformers: the trial's spec, the optimizer, the
//! training loop, and the runner that drives a worker process per trial.

pub mod spec;
pub mod optim;
pub mod loss;
