//! Learning curves: every trial's intermediate values against step; pruned trials faded,
//! failed ones dashed-grey, the best trial highlighted.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::render::{draw_legend, step_chart, DrawResult, BEST, COMPLETE, FAILED, PRUNED};
use super::study::StudyData;
use super::NotEnoughData;
use crate::trial::{TrialNumber, TrialState};

/// One trial's curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    pub number: TrialNumber,
    pub state: TrialState,
    pub is_best: bool,
    pub points: Vec<(i64, f64)>,
}

/// The learning-curves plot's data.
#[derive(Debug, Clone, PartialEq)]
pub struct LearningCurves {
    pub metric: String,
    pub curves: Vec<Curve>,
}

impl LearningCurves {
    /// Needs one trial with at least one finite intermediate value.
    pub fn compute(data: &StudyData) -> Result<LearningCurves, NotEnoughData> {
        let best = data.best().map(|b| b.number);
        let curves: Vec<Curve> = data
            .trials
            .iter()
            .map(|t| Curve {
                number: t.number,
                state: t.state,
                is_best: Some(t.number) == best,
                points: t.intermediate.iter().copied().filter(|(_, v)| v.is_finite()).collect(),
            })
            .filter(|c| !c.points.is_empty())
            .collect();
        if curves.is_empty() {
            return Err(NotEnoughData::new("no trial reported intermediate values"));
        }
        Ok(LearningCurves { metric: data.metric.clone(), curves })
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let points = self.curves.iter().flat_map(|c| c.points.iter());
        let mut chart = step_chart(root, format!("Learning curves ({} by step)", self.metric), ("step", self.metric.as_str()), points)?;
        // Faded ones first, the best last.
        let mut order: Vec<&Curve> = self.curves.iter().collect();
        order.sort_by_key(|c| (c.is_best, c.state == TrialState::Complete));
        let mut labelled = [false; 4];
        for c in order {
            let (style, k, label) = if c.is_best {
                (BEST.stroke_width(3), 0, "best")
            } else {
                match c.state {
                    TrialState::Complete => (COMPLETE.mix(0.8).stroke_width(2), 1, "complete"),
                    TrialState::Pruned => (PRUNED.mix(0.3).stroke_width(1), 2, "pruned"),
                    _ => (FAILED.mix(0.3).stroke_width(1), 3, "failed / running"),
                }
            };
            let pts: Vec<(f64, f64)> = c.points.iter().map(|&(s, v)| (s as f64, v)).collect();
            let series = chart.draw_series(LineSeries::new(pts.clone(), style).point_size(if pts.len() == 1 { 3 } else { 0 }))?;
            if !labelled[k] {
                labelled[k] = true;
                series.label(label).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            }
        }
        draw_legend(&mut chart)
    }
}
