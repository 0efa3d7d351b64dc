//! Train against valid loss of the best trial, per epoch (the stored per-step metrics
//! `train_loss` and `loss`), with the trial's fit diagnosis (`metrics.fit`) in the title:
//! the over/under-fitting view.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::render::{draw_legend, step_chart, DrawResult, BEST, COMPLETE};
use super::study::StudyData;
use super::NotEnoughData;
use crate::trial::TrialNumber;

/// The per-step metric names read.
pub const TRAIN_KEY: &str = "train_loss";
pub const VALID_KEY: &str = "loss";

/// The train-vs-valid plot's data.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainValidLoss {
    pub number: TrialNumber,
    pub train: Vec<(i64, f64)>,
    pub valid: Vec<(i64, f64)>,
    /// The fit diagnosis stored with the trial.
    pub diagnosis: Option<String>,
}

impl TrainValidLoss {
    /// Needs a best COMPLETE trial with per-step `train_loss` and `loss`.
    pub fn compute(data: &StudyData) -> Result<TrainValidLoss, NotEnoughData> {
        let best = data.best().ok_or_else(|| NotEnoughData::new("no COMPLETE trial"))?;
        let series = |key: &str| -> Vec<(i64, f64)> {
            data.best_steps
                .iter()
                .filter_map(|(s, m)| m.get(key).and_then(|v| v.as_f64()).filter(|v| v.is_finite()).map(|v| (*s, v)))
                .collect()
        };
        let (train, valid) = (series(TRAIN_KEY), series(VALID_KEY));
        if train.is_empty() || valid.is_empty() {
            return Err(NotEnoughData::new(format!("best trial {} recorded no per-epoch `{TRAIN_KEY}` and `{VALID_KEY}`", best.number)));
        }
        let diagnosis = best.metrics.get("fit").map(|f| match f.as_str() {
            Some(s) => s.to_string(),
            None => f.to_string(),
        });
        Ok(TrainValidLoss { number: best.number, train, valid, diagnosis })
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let title = match &self.diagnosis {
            Some(d) => format!("Train vs valid loss, best trial {} ({d})", self.number),
            None => format!("Train vs valid loss, best trial {}", self.number),
        };
        let mut chart = step_chart(root, title, ("epoch", "loss"), self.train.iter().chain(&self.valid))?;
        for (pts, color, label) in [(&self.train, COMPLETE, "train loss"), (&self.valid, BEST, "valid loss")] {
            let pts: Vec<(f64, f64)> = pts.iter().map(|&(s, v)| (s as f64, v)).collect();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)).point_size(4))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        draw_legend(&mut chart)
    }
}
