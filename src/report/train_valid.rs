//! Train against valid loss of the best trial, per epoch (the stored per-step metrics
//! `train_loss` and `loss`), with the trial's fit diagnosis (`metrics.fit`) in the title:
//! the over/under-fitting view.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{pad, short_number};
use super::render::{draw_legend, whole_number_label, DrawResult, BEST, COMPLETE};
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
        let all = self.train.iter().chain(&self.valid);
        let (slo, shi, vlo, vhi) = all
            .fold((i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(s, v)| (a.min(s), b.max(s), c.min(v), d.max(v)));
        let (xlo, xhi) = pad(slo as f64, shi as f64);
        let (ylo, yhi) = pad(vlo, vhi);
        let title = match &self.diagnosis {
            Some(d) => format!("Train vs valid loss, best trial {} ({d})", self.number),
            None => format!("Train vs valid loss, best trial {}", self.number),
        };
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
        let yf = |v: &f64| short_number(*v);
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("epoch")
            .y_desc("loss")
            .x_label_formatter(&whole_number_label)
            .y_label_formatter(&yf)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
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
