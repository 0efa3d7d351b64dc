//! Contour of the data for two parameters: the objective of the COMPLETE trials interpolated
//! on a 40 × 40 grid by inverse-distance weighting (power 2) in unit coordinates (log10 for
//! log-scaled parameters, choice index for categoricals), with the trials on top. It shows
//! the data, not a surrogate model; the method is named on the plot.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::{short_number, ParamAxis};
use super::render::{goodness, value_color, DrawResult};
use super::study::StudyData;
use super::NotEnoughData;
use crate::trial::{Direction, TrialState};

/// Cells per side of the interpolation grid.
pub const GRID: usize = 40;

/// The method, as printed on the plot.
pub const METHOD: &str = "inverse-distance weighting (power 2) of the observed values";

/// The contour plot's data.
#[derive(Debug, Clone, PartialEq)]
pub struct ContourPlot {
    pub metric: String,
    pub direction: Direction,
    pub x: ParamAxis,
    pub y: ParamAxis,
    pub method: &'static str,
    /// Cell centres in plot coordinates.
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// `grid[j][i]`: interpolated value at `(xs[i], ys[j])`.
    pub grid: Vec<Vec<f64>>,
    /// Observed trials: `(x, y, value)` in plot coordinates.
    pub points: Vec<(f64, f64, f64)>,
    pub value_min: f64,
    pub value_max: f64,
}

impl ContourPlot {
    /// Needs two different parameters and three COMPLETE trials having both.
    pub fn compute(data: &StudyData, xname: &str, yname: &str) -> Result<ContourPlot, NotEnoughData> {
        if xname == yname {
            return Err(NotEnoughData::new("a contour needs two different parameters"));
        }
        let done: Vec<_> = data
            .trials
            .iter()
            .filter(|t| {
                t.state == TrialState::Complete
                    && t.value.is_some_and(f64::is_finite)
                    && t.params.contains_key(xname)
                    && t.params.contains_key(yname)
            })
            .collect();
        if done.len() < 3 {
            return Err(NotEnoughData::new(format!("{} COMPLETE trial(s) with `{xname}` and `{yname}`; a contour needs 3", done.len())));
        }
        let axis = |name: &str| {
            let vals: Vec<_> = done.iter().filter_map(|t| t.params.get(name)).collect();
            ParamAxis::new(name, data.dist(name), &vals).ok_or_else(|| NotEnoughData::new(format!("`{name}` has no usable value")))
        };
        let (x, y) = (axis(xname)?, axis(yname)?);
        let mut obs: Vec<(f64, f64, f64, f64, f64)> = Vec::new(); // unit x, unit y, coord x, coord y, value
        for t in &done {
            let (Some(px), Some(py), Some(v)) = (t.params.get(xname), t.params.get(yname), t.value) else { continue };
            if let (Some(ux), Some(uy), Some(cx), Some(cy)) = (x.unit(px), y.unit(py), x.coord(px), y.coord(py)) {
                obs.push((ux, uy, cx, cy, v));
            }
        }
        if obs.len() < 3 {
            return Err(NotEnoughData::new("fewer than 3 trials have usable values for both parameters"));
        }
        let centres = |a: &ParamAxis| {
            let (lo, hi) = a.coord_range();
            (0..GRID).map(|i| lo + (i as f64 + 0.5) * (hi - lo) / GRID as f64).collect::<Vec<f64>>()
        };
        let (xs, ys) = (centres(&x), centres(&y));
        let to_unit = |a: &ParamAxis, c: f64| {
            let (lo, hi) = if a.is_log() { (a.min.log10(), a.max.log10()) } else { (a.min, a.max) };
            if hi > lo {
                (c - lo) / (hi - lo)
            } else {
                0.5
            }
        };
        let grid = ys
            .iter()
            .map(|&cy| {
                let uy = to_unit(&y, cy);
                xs.iter().map(|&cx| idw(&obs, to_unit(&x, cx), uy)).collect()
            })
            .collect();
        let points: Vec<(f64, f64, f64)> = obs.iter().map(|o| (o.2, o.3, o.4)).collect();
        let (value_min, value_max) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.2), b.max(p.2)));
        Ok(ContourPlot {
            metric: data.metric.clone(),
            direction: data.direction,
            x,
            y,
            method: METHOD,
            xs,
            ys,
            grid,
            points,
            value_min,
            value_max,
        })
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (main, bar) = root.split_horizontally(root.dim_in_pixel().0.saturating_sub(110));
        let (xlo, xhi) = self.x.coord_range();
        let (ylo, yhi) = self.y.coord_range();
        let mut chart = ChartBuilder::on(&main)
            .caption(format!("Contour of {}: {} × {}", self.metric, self.x.name, self.y.name), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(55)
            .y_label_area_size(70)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
        let xf = |v: &f64| self.x.label_at(*v);
        let yf = |v: &f64| self.y.label_at(*v);
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .disable_mesh()
            .x_desc(format!("{}   [{}]", self.x.title(), self.method))
            .y_desc(self.y.title())
            .x_labels(self.x.label_count())
            .y_labels(self.y.label_count())
            .x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .draw()?;
        // Cells overlap a little so no anti-aliasing seams show between them.
        let dx = (xhi - xlo) / GRID as f64 * 0.6;
        let dy = (yhi - ylo) / GRID as f64 * 0.6;
        let g = |v: f64| goodness(v, self.value_min, self.value_max, self.direction);
        for (j, row) in self.grid.iter().enumerate() {
            chart.draw_series(row.iter().enumerate().map(|(i, &v)| {
                let (cx, cy) = (self.xs[i], self.ys[j]);
                Rectangle::new([(cx - dx, cy - dy), (cx + dx, cy + dy)], value_color(g(v)).filled())
            }))?;
        }
        chart.draw_series(self.points.iter().map(|&(x, y, _)| Circle::new((x, y), 4, BLACK.filled())))?;
        chart.draw_series(self.points.iter().map(|&(x, y, _)| Circle::new((x, y), 4, WHITE.stroke_width(1))))?;
        draw_colorbar(&bar, self.value_min, self.value_max, self.direction)
    }
}

/// A vertical colour scale from `lo` to `hi` (best at the dark end).
pub fn draw_colorbar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, lo: f64, hi: f64, dir: Direction) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin_top(50)
        .margin_bottom(67)
        .margin_right(8)
        .y_label_area_size(0)
        .right_y_label_area_size(62)
        .build_cartesian_2d(0f64..1.0, lo..hi)?;
    let f = |v: &f64| short_number(*v);
    chart.configure_mesh().disable_mesh().disable_x_axis().label_style(("sans-serif", 13)).y_label_formatter(&f).y_labels(6).draw()?;
    let n = 60;
    chart.draw_series((0..n).map(|k| {
        let a = lo + (hi - lo) * k as f64 / n as f64;
        let b = lo + (hi - lo) * (k + 1) as f64 / n as f64;
        Rectangle::new([(0.0, a), (1.0, b)], value_color(goodness((a + b) / 2.0, lo, hi, dir)).filled())
    }))?;
    Ok(())
}

/// Inverse-distance-weighted value at `(ux, uy)` from observations `(ux, uy, _, _, value)`.
fn idw(obs: &[(f64, f64, f64, f64, f64)], ux: f64, uy: f64) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for o in obs {
        let d2 = (o.0 - ux).powi(2) + (o.1 - uy).powi(2);
        if d2 < 1e-18 {
            return o.4;
        }
        let w = 1.0 / d2;
        num += w * o.4;
        den += w;
    }
    num / den
}
