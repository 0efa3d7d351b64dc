//! Objectives that need no training: the built-in benchmark functions and the protocol of
//! external `command` objectives. (The Candle fine-tuning objective lives in `trainer`.)

pub mod synthetic;

pub use synthetic::SyntheticFunction;
