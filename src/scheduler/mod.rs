//! The ask → claim → run → tell loop over device slots, resume and retries, the display of
//! a running study, and the child-process driver shared by `command` objectives and
//! fine-tuning workers.

pub mod child;
pub mod display;
pub mod runner;
pub mod study_loop;

pub use child::{run_child, ChildSpec};
pub use display::{Observer, ProgressDisplay, Silent};
pub use runner::{CancelToken, Decision, Progress, RecordingReporter, Reporter, TrialAssignment, TrialRunner};
pub use study_loop::{run_study, save_pruning_record, LoopError, RunSummary, StopReason, StopSignal, StudyRun};
