//! End-to-end tests through the real `sft-search` binary: one test binary, shared helpers in
//! `util`, one module per area.

mod util;

mod ask_tell;
mod conditional;
mod config_errors;
mod export;
mod faults;
mod finetune;
mod gp;
mod interop;
mod multilabel;
mod parallel;
mod pruning;
mod report;
mod shipped;
mod study;
mod tokens;
mod worker;
