//! Plots and the HTML study report.
//!
//! Every plot is first computed as a plain data struct from the stored study ([`StudyData`]),
//! which is what the tests check; `render` then draws it with plotters to SVG (inline in the
//! report) or PNG (with an embedded font, so no system font is needed). A plot without
//! enough data is a [`NotEnoughData`] value, shown as a placeholder, never a failure.

pub mod axis;
pub mod confusion;
pub mod contour;
pub mod history;
pub mod html;
pub mod importance;
pub mod learning;
pub mod parallel;
pub mod render;
pub mod slice;
pub mod study;
pub mod timeline;
pub mod train_valid;

use std::path::PathBuf;

pub use html::{default_report_path, write_report};
pub use render::{Plot, PlotSet};
pub use study::StudyData;

/// Why a plot could not be drawn: too little data. Shown in its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not enough data: {0}")]
pub struct NotEnoughData(pub String);

impl NotEnoughData {
    pub fn new(what: impl Into<String>) -> Self {
        NotEnoughData(what.into())
    }
}

/// What can go wrong writing plots or the report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] crate::storage::StoreError),
    #[error("drawing {plot}: {message}")]
    Draw { plot: String, message: String },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("unknown parameter `{name}` (the study has: {known}){hint}")]
    UnknownParam { name: String, known: String, hint: String },
}

#[cfg(test)]
mod tests;
