//! Optimisation history: every finished trial's value by trial number, the best-so-far line
//! over COMPLETE trials, pruned trials (with their value, else their last intermediate value)
//! and failed trials (no value, marked on the x axis) told apart.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{pad, short_number};
use super::render::{draw_legend, DrawResult, BEST, COMPLETE, FAILED, PRUNED};
use super::study::StudyData;
use super::NotEnoughData;
use crate::trial::{Direction, TrialNumber, TrialState};

/// One trial on the history plot.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    pub number: TrialNumber,
    pub state: TrialState,
    /// `None` for failed trials.
    pub value: Option<f64>,
}

/// The history plot's data.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPlot {
    pub metric: String,
    pub direction: Direction,
    /// Finished trials (COMPLETE, PRUNED, FAIL), by number.
    pub points: Vec<HistoryPoint>,
    /// `(trial number, best COMPLETE value so far)` at each COMPLETE trial.
    pub best_so_far: Vec<(TrialNumber, f64)>,
}

impl HistoryPlot {
    /// Needs at least two finished trials with a finite value.
    pub fn compute(data: &StudyData) -> Result<HistoryPlot, NotEnoughData> {
        let mut points = Vec::new();
        let mut best_so_far: Vec<(TrialNumber, f64)> = Vec::new();
        for t in data.trials.iter().filter(|t| t.state.is_finished()) {
            // A pruned trial without a stored value is shown at its last intermediate value.
            let value = match t.state {
                TrialState::Fail => None,
                TrialState::Pruned => t.value.or(t.last_intermediate().map(|l| l.1)),
                _ => t.value,
            };
            let value = value.filter(|v| v.is_finite());
            points.push(HistoryPoint { number: t.number, state: t.state, value });
            if let (TrialState::Complete, Some(v)) = (t.state, value) {
                let best = match best_so_far.last() {
                    Some(&(_, b)) if !data.direction.is_better(v, b) => b,
                    _ => v,
                };
                best_so_far.push((t.number, best));
            }
        }
        let with_value = points.iter().filter(|p| p.value.is_some()).count();
        if with_value < 2 {
            return Err(NotEnoughData::new(format!("{with_value} finished trial(s) with a value; the history needs 2")));
        }
        Ok(HistoryPlot { metric: data.metric.clone(), direction: data.direction, points, best_so_far })
    }

    /// Numbers of the trials in a state.
    pub fn numbers_in(&self, state: TrialState) -> Vec<TrialNumber> {
        self.points.iter().filter(|p| p.state == state).map(|p| p.number).collect()
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let values: Vec<f64> = self.points.iter().filter_map(|p| p.value).collect();
        let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (ylo, yhi) = pad(lo, hi);
        let last = self.points.iter().map(|p| p.number).max().unwrap_or(0) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Optimisation history ({})", self.metric), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(-0.5f64..last + 0.5, ylo..yhi)?;
        let fmt = |v: &f64| short_number(*v);
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .x_desc("trial")
            .y_desc(self.metric.as_str())
            .y_label_formatter(&fmt)
            .x_label_formatter(&|v: &f64| if (v - v.round()).abs() < 1e-9 { format!("{}", v.round()) } else { String::new() })
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let pt =
            |state: TrialState| self.points.iter().filter(move |p| p.state == state).filter_map(|p| p.value.map(|v| (p.number as f64, v)));
        chart
            .draw_series(pt(TrialState::Complete).map(|c| Circle::new(c, 4, COMPLETE.filled())))?
            .label("complete")
            .legend(|(x, y)| Circle::new((x + 8, y), 4, COMPLETE.filled()));
        if self.points.iter().any(|p| p.state == TrialState::Pruned) {
            chart
                .draw_series(pt(TrialState::Pruned).map(|c| TriangleMarker::new(c, 5, PRUNED.filled())))?
                .label("pruned")
                .legend(|(x, y)| TriangleMarker::new((x + 8, y), 5, PRUNED.filled()));
        }
        let failed: Vec<f64> = self.points.iter().filter(|p| p.state == TrialState::Fail).map(|p| p.number as f64).collect();
        if !failed.is_empty() {
            let y = ylo + (yhi - ylo) * 0.02;
            chart
                .draw_series(failed.iter().map(|&x| Cross::new((x, y), 5, FAILED.stroke_width(2))))?
                .label("failed")
                .legend(|(x, y)| Cross::new((x + 8, y), 5, FAILED.stroke_width(2)));
        }
        if !self.best_so_far.is_empty() {
            // A step line: the best stays until a better trial comes.
            let mut steps: Vec<(f64, f64)> = Vec::new();
            for &(n, b) in &self.best_so_far {
                if let Some(&(_, prev)) = steps.last() {
                    steps.push((n as f64, prev));
                }
                steps.push((n as f64, b));
            }
            if let Some(&(_, b)) = steps.last() {
                steps.push((last, b));
            }
            chart
                .draw_series(LineSeries::new(steps, BEST.stroke_width(2)))?
                .label("best so far")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BEST.stroke_width(2)));
        }
        draw_legend(&mut chart)
    }
}
