//! sft-search: hyperparameter search for supervised fine-tuning of pretrained transformers.
//!
//! Layers, each depending only on those before it:
//! `config → space → trial → sampler → storage → scheduler → trainer → report`, composed by
//! `app`; `cli` holds only the clap types.

pub mod app;
pub mod cli;
pub mod config;
pub mod export;
pub mod objective;
pub mod pruner;
pub mod report;
pub mod sampler;
pub mod scheduler;
pub mod space;
pub mod storage;
pub mod trainer;
pub mod trial;
