//! Parallel coordinates: one vertical axis for the objective and one per searched parameter
//! (log-scaled where the parameter is), one line per COMPLETE trial, coloured by value
//! (darker is better; the best trials are drawn last, on top). A trial without a parameter
//! (a conditional one that did not apply to it) has no point on that axis: its line is
//! broken there.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::{short_number, ParamAxis, Scale};
use super::render::{goodness, value_color, DrawResult};
use super::study::StudyData;
use super::NotEnoughData;
use crate::trial::{Direction, TrialNumber, TrialState};

/// One trial's line: its value and its position on each parameter axis in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelLine {
    pub number: TrialNumber,
    pub value: f64,
    /// One entry per axis of [`ParallelCoordinates::axes`]; `None` where the trial has no
    /// value of that parameter.
    pub units: Vec<Option<f64>>,
}

/// The parallel-coordinates plot's data.
#[derive(Debug, Clone, PartialEq)]
pub struct ParallelCoordinates {
    pub metric: String,
    pub direction: Direction,
    /// Range of the objective axis.
    pub value_min: f64,
    pub value_max: f64,
    pub axes: Vec<ParamAxis>,
    pub lines: Vec<ParallelLine>,
}

impl ParallelCoordinates {
    /// Needs two COMPLETE trials with a value and at least one parameter.
    pub fn compute(data: &StudyData) -> Result<ParallelCoordinates, NotEnoughData> {
        let done: Vec<_> = data.trials.iter().filter(|t| t.state == TrialState::Complete && t.value.is_some_and(f64::is_finite)).collect();
        if done.len() < 2 {
            return Err(NotEnoughData::new(format!("{} COMPLETE trial(s); parallel coordinates need 2", done.len())));
        }
        let axes: Vec<ParamAxis> = data
            .params
            .iter()
            .filter_map(|(name, dist)| {
                let vals: Vec<_> = done.iter().filter_map(|t| t.params.get(name)).collect();
                ParamAxis::new(name, Some(dist), &vals)
            })
            .collect();
        if axes.is_empty() {
            return Err(NotEnoughData::new("the trials have no parameters"));
        }
        let lines: Vec<ParallelLine> = done
            .iter()
            .filter_map(|t| {
                let units: Vec<Option<f64>> = axes.iter().map(|a| t.params.get(&a.name).and_then(|v| a.unit(v))).collect();
                units.iter().any(Option::is_some).then_some(ParallelLine { number: t.number, value: t.value?, units })
            })
            .collect();
        if lines.len() < 2 {
            return Err(NotEnoughData::new("fewer than 2 trials have a parameter value"));
        }
        let (value_min, value_max) = lines.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l.value), b.max(l.value)));
        Ok(ParallelCoordinates { metric: data.metric.clone(), direction: data.direction, value_min, value_max, axes, lines })
    }

    fn value_unit(&self, v: f64) -> f64 {
        if self.value_max > self.value_min {
            (v - self.value_min) / (self.value_max - self.value_min)
        } else {
            0.5
        }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.axes.len() + 1;
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Parallel coordinates (colour: {})", self.metric), ("sans-serif", 20))
            .margin(20)
            .margin_left(40)
            .margin_right(60)
            .x_label_area_size(50)
            .build_cartesian_2d(-0.05f64..(n - 1) as f64 + 0.05, -0.04f64..1.04)?;
        chart.configure_mesh().disable_mesh().disable_axes().draw()?;
        let mut lines: Vec<&ParallelLine> = self.lines.iter().collect();
        let g = |v: f64| goodness(v, self.value_min, self.value_max, self.direction);
        lines.sort_by(|a, b| g(a.value).total_cmp(&g(b.value)));
        for l in lines {
            // One path per run of axes the trial has a value on.
            let mut runs: Vec<Vec<(f64, f64)>> = vec![vec![(0.0, self.value_unit(l.value))]];
            for (i, u) in l.units.iter().enumerate() {
                match u {
                    Some(u) => runs.last_mut().into_iter().for_each(|r| r.push(((i + 1) as f64, *u))),
                    None => runs.push(Vec::new()),
                }
            }
            let style = value_color(g(l.value)).mix(0.8).stroke_width(2);
            for run in runs.into_iter().filter(|r| !r.is_empty()) {
                if run.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(run[0], 2, style.filled())))?;
                } else {
                    chart.draw_series(std::iter::once(PathElement::new(run, style)))?;
                }
            }
        }
        let label = ("sans-serif", 13).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        let title = ("sans-serif", 14).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
        for i in 0..n {
            let x = i as f64;
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, 0.0), (x, 1.0)], BLACK.stroke_width(1))))?;
            let (name, ticks): (String, Vec<(f64, String)>) = if i == 0 {
                let t = (0..=4)
                    .map(|k| {
                        let u = k as f64 / 4.0;
                        (u, short_number(self.value_min + u * (self.value_max - self.value_min)))
                    })
                    .collect();
                (self.metric.clone(), t)
            } else {
                let a = &self.axes[i - 1];
                let t = match &a.scale {
                    Scale::Categorical(labels) => {
                        let m = labels.len().saturating_sub(1).max(1) as f64;
                        labels.iter().enumerate().map(|(k, l)| (if labels.len() == 1 { 0.5 } else { k as f64 / m }, l.clone())).collect()
                    }
                    Scale::Log if a.max.log10() - a.min.log10() >= 1.0 => {
                        // Powers of ten, and the extremes where they are not too close to one.
                        let (lo, hi) = (a.min.log10(), a.max.log10());
                        let decades: Vec<f64> = ((lo.ceil() as i32)..=(hi.floor() as i32)).map(f64::from).collect();
                        let mut t: Vec<(f64, String)> = decades.iter().map(|&k| ((k - lo) / (hi - lo), a.label_at(k))).collect();
                        for c in [lo, hi] {
                            let u = (c - lo) / (hi - lo);
                            if t.iter().all(|(v, _)| (v - u).abs() > 0.08) {
                                t.push((u, a.label_at(c)));
                            }
                        }
                        t
                    }
                    _ => {
                        let (lo, hi) = if a.is_log() { (a.min.log10(), a.max.log10()) } else { (a.min, a.max) };
                        (0..=4)
                            .map(|k| {
                                let u = k as f64 / 4.0;
                                (u, a.label_at(lo + u * (hi - lo)))
                            })
                            .collect()
                    }
                };
                (a.title(), t)
            };
            for (u, s) in ticks {
                chart.draw_series(std::iter::once(PathElement::new(vec![(x - 0.01, u), (x, u)], BLACK)))?;
                // A pale box behind the label keeps it readable over the lines.
                let (px, py) = chart.backend_coord(&(x, u));
                let (w, h) = root.estimate_text_size(&s, &label)?;
                let (w, h) = (w as i32, h as i32);
                root.draw(&Rectangle::new([(px + 3, py - h / 2 - 2), (px + 7 + w, py + h / 2 + 2)], WHITE.mix(0.8).filled()))?;
                root.draw(&Text::new(s, (px + 5, py), label.clone()))?;
            }
            let at = chart.backend_coord(&(x, -0.04));
            root.draw(&Text::new(name, (at.0, at.1 + 8), title.clone()))?;
        }
        Ok(())
    }
}
