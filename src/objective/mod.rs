//! Objectives that need no training: the built-in benchmark functions and external
//! `command` objectives, each a `TrialRunner`. (The Candle fine-tuning objective lives in
//! `trainer`.)

pub mod command;
pub mod synthetic;
pub mod synthetic_runner;

pub use command::CommandRunner;
pub use synthetic::SyntheticFunction;
pub use synthetic_runner::SyntheticRunner;
