//! Slice plots: the objective against one parameter (log axis where log-scaled, choices as
//! positions for categoricals), one point per COMPLETE trial, coloured by trial number.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{pad, short_number, ParamAxis};
use super::render::{number_color, DrawResult};
use super::study::StudyData;
use super::NotEnoughData;
use crate::trial::{TrialNumber, TrialState};

/// One point: `(plot coordinate of the parameter, value, trial number)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SlicePoint {
    pub x: f64,
    pub value: f64,
    pub number: TrialNumber,
}

/// The slice plot of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct SlicePlot {
    pub metric: String,
    pub axis: ParamAxis,
    pub points: Vec<SlicePoint>,
    /// The highest trial number in the study (for colours).
    pub last_number: TrialNumber,
}

impl SlicePlot {
    /// Needs two COMPLETE trials with a value for this parameter.
    pub fn compute(data: &StudyData, param: &str) -> Result<SlicePlot, NotEnoughData> {
        let done: Vec<_> = data
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Complete && t.value.is_some_and(f64::is_finite) && t.params.contains_key(param))
            .collect();
        if done.len() < 2 {
            return Err(NotEnoughData::new(format!("{} COMPLETE trial(s) with `{param}`; a slice needs 2", done.len())));
        }
        let vals: Vec<_> = done.iter().filter_map(|t| t.params.get(param)).collect();
        let axis =
            ParamAxis::new(param, data.dist(param), &vals).ok_or_else(|| NotEnoughData::new(format!("`{param}` has no usable value")))?;
        let points = done
            .iter()
            .filter_map(|t| Some(SlicePoint { x: axis.coord(t.params.get(param)?)?, value: t.value?, number: t.number }))
            .collect();
        let last_number = data.trials.iter().map(|t| t.number).max().unwrap_or(0);
        Ok(SlicePlot { metric: data.metric.clone(), axis, points, last_number })
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (xlo, xhi) = self.axis.coord_range();
        let (lo, hi) = self.points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.value), b.max(p.value)));
        let (ylo, yhi) = pad(lo, hi);
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Slice: {} against {}", self.metric, self.axis.title()), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
        let xfmt = |v: &f64| self.axis.label_at(*v);
        let yfmt = |v: &f64| short_number(*v);
        let mut mesh = chart.configure_mesh();
        mesh.label_style(("sans-serif", 14)).axis_desc_style(("sans-serif", 15));
        mesh.x_desc(format!("{}   (colour: trial number, darker = later)", self.axis.title()))
            .y_desc(self.metric.as_str())
            .x_label_formatter(&xfmt)
            .y_label_formatter(&yfmt);
        mesh.x_labels(self.axis.label_count());
        mesh.light_line_style(WHITE.mix(0.0)).draw()?;
        chart.draw_series(
            self.points.iter().map(|p| Circle::new((p.x, p.value), 5, number_color(p.number, self.last_number).mix(0.85).filled())),
        )?;
        Ok(())
    }
}
