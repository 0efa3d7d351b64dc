//! The ask → claim → run → tell loop over device slots, resume and retries, and the child
//! process driver shared by `command` objectives and fine-tuning workers.

pub mod child;
pub mod runner;

pub use child::{run_child, ChildSpec};
pub use runner::{CancelToken, Decision, Progress, Reporter, TrialAssignment, TrialRunner};
