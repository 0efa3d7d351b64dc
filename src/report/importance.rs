//! Parameter importance, by one of two methods, named on the plot:
//!
//! - **fANOVA** (Hutter et al. 2014) on a random forest fitted to the COMPLETE trials, with
//!   the `fanova` crate (the one optuna-dashboard uses). Features are the parameters' unit
//!   positions (log10 where log-scaled, choice index for categoricals); the per-parameter
//!   variance fractions are normalised to sum to 1, as Optuna reports them.
//! - **GP lengthscales**, for a study whose sampler is `gp`: the GP sampler's own model (ARD
//!   Matérn-5/2 on its encoding, MAP hyperparameters) is fitted to the COMPLETE trials
//!   (standardised, direction-adjusted values) and each parameter's relevance `1/ℓ²` is
//!   normalised to sum to 1. When that fit is not possible, fANOVA is used and the plot says so.

use std::num::NonZeroUsize;

use fanova::{FanovaOptions, RandomForestOptions};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::axis::ParamAxis;
use super::render::{row_label, DrawResult, COMPLETE};
use super::study::StudyData;
use super::NotEnoughData;
use crate::sampler::gp::encoding::Encoding;
use crate::sampler::gp::fit::{self, FitData};
use crate::sampler::gp::warp::standardise;
use crate::trial::{TrialRecord, TrialState};

/// Trees in the forest.
pub const TREES: usize = 64;
/// Fewest COMPLETE trials the forest is fitted on.
pub const MIN_TRIALS: usize = 4;

/// How importance was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportanceMethod {
    /// fANOVA on a random forest of the observed trials.
    Fanova,
    /// Relevance `1/ℓ²` of the GP sampler's fitted ARD kernel.
    GpLengthscales,
}

impl ImportanceMethod {
    pub fn describe(self) -> String {
        match self {
            ImportanceMethod::Fanova => format!("fANOVA, random forest of {TREES} trees"),
            ImportanceMethod::GpLengthscales => "GP lengthscales, 1/ℓ² of the fitted kernel".to_string(),
        }
    }
}

/// One parameter's importance.
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    pub name: String,
    /// Share of the summed single-parameter importances (all shares sum to 1).
    pub share: f64,
    /// fANOVA: the fraction of variance explained by this parameter alone (mean over trees);
    /// GP: the inverse squared lengthscale.
    pub fraction: f64,
    /// fANOVA: its standard deviation over trees; GP: 0.
    pub stddev: f64,
}

/// The importance plot's data: parameters, most important first.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportancePlot {
    pub metric: String,
    pub method: ImportanceMethod,
    /// A note on the method (e.g. that a GP study was measured with fANOVA).
    pub note: Option<String>,
    pub trials_used: usize,
    pub items: Vec<Importance>,
}

impl ImportancePlot {
    /// Needs two parameters and [`MIN_TRIALS`] COMPLETE trials whose values are not all equal.
    pub fn compute(data: &StudyData) -> Result<ImportancePlot, NotEnoughData> {
        // A trial must have every parameter that applies to it (with conditions, those its
        // parents' choices make apply; a missing one counts at its range's middle).
        let space = data.space().ok().filter(|s| !s.conditions().is_empty());
        let done: Vec<_> = data
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Complete && t.value.is_some_and(f64::is_finite))
            .filter(|t| match &space {
                Some(s) => s.missing(&t.params).is_empty(),
                None => data.params.iter().all(|(n, _)| t.params.contains_key(n)),
            })
            .collect();
        if data.params.len() < 2 {
            return Err(NotEnoughData::new(format!("{} parameter(s); importance needs 2", data.params.len())));
        }
        if done.len() < MIN_TRIALS {
            return Err(NotEnoughData::new(format!(
                "{} COMPLETE trial(s) with every parameter that applies; importance needs {MIN_TRIALS}",
                done.len()
            )));
        }
        let mut axes: Vec<ParamAxis> = Vec::new();
        for (name, dist) in &data.params {
            let vals: Vec<_> = done.iter().filter_map(|t| t.params.get(name)).collect();
            axes.push(ParamAxis::new(name, Some(dist), &vals).ok_or_else(|| NotEnoughData::new(format!("`{name}` has no usable value")))?);
        }
        let columns: Vec<Vec<f64>> =
            axes.iter().map(|a| done.iter().map(|t| t.params.get(&a.name).and_then(|v| a.unit(v)).unwrap_or(0.5)).collect()).collect();
        let target: Vec<f64> = done.iter().filter_map(|t| t.value).collect();
        let (lo, hi) = target.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        if hi <= lo {
            return Err(NotEnoughData::new("every COMPLETE trial has the same value"));
        }
        let mut note = None;
        if data.sampler_is_gp {
            match gp_relevance(data, &done) {
                Ok(items) => {
                    return Ok(ImportancePlot {
                        metric: data.metric.clone(),
                        method: ImportanceMethod::GpLengthscales,
                        note: None,
                        trials_used: done.len(),
                        items,
                    })
                }
                Err(why) => note = Some(format!("gp study, but {why}; fANOVA instead")),
            }
        }
        let trees = NonZeroUsize::new(TREES).ok_or_else(|| NotEnoughData::new("no trees"))?;
        let mut fanova = FanovaOptions::new()
            .random_forest(RandomForestOptions::new().seed(0).trees(trees))
            .fit(columns.iter().map(Vec::as_slice).collect(), &target)
            .map_err(|e| NotEnoughData::new(format!("fANOVA could not fit: {e}")))?;
        let raw: Vec<fanova::Importance> = (0..axes.len()).map(|i| fanova.quantify_importance(&[i])).collect();
        let total: f64 = raw.iter().map(|r| r.mean).filter(|m| m.is_finite()).sum();
        if total.is_nan() || total <= 0.0 {
            return Err(NotEnoughData::new("the forest explains none of the variance"));
        }
        let mut items: Vec<Importance> = axes
            .iter()
            .zip(&raw)
            .map(|(a, r)| Importance {
                name: a.name.clone(),
                share: if r.mean.is_finite() { r.mean / total } else { 0.0 },
                fraction: r.mean,
                stddev: r.stddev,
            })
            .collect();
        items.sort_by(|a, b| b.share.total_cmp(&a.share));
        Ok(ImportancePlot { metric: data.metric.clone(), method: ImportanceMethod::Fanova, note, trials_used: done.len(), items })
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.items.len();
        let top = self.items.iter().map(|i| i.share).fold(0.0, f64::max).max(0.05) * 1.15;
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Parameter importance ({}; {} trials)", self.method.describe(), self.trials_used), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..top, -0.5f64..n as f64 - 0.5)?;
        // Most important at the top.
        let row = |k: usize| (n - 1 - k) as f64;
        let names: Vec<String> = self.items.iter().map(|i| i.name.clone()).collect();
        let yf = |v: &f64| row_label(&names, *v);
        let desc = match &self.note {
            Some(note) => format!("share of importance  ({note})"),
            None => "share of importance (sums to 1)".to_string(),
        };
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .disable_y_mesh()
            .y_labels(n + 2)
            .y_label_formatter(&yf)
            .x_desc(desc)
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(
            self.items
                .iter()
                .enumerate()
                .map(|(k, it)| Rectangle::new([(0.0, row(k) - 0.35), (it.share, row(k) + 0.35)], COMPLETE.filled())),
        )?;
        let font = ("sans-serif", 13).into_font().color(&BLACK);
        chart.draw_series(
            self.items
                .iter()
                .enumerate()
                .map(|(k, it)| Text::new(format!("{:.2}", it.share), (it.share + top * 0.01, row(k) + 0.15), font.clone())),
        )?;
        Ok(())
    }
}

/// Per-parameter relevance from the GP sampler's model fitted to `done` (most relevant
/// first), or why it could not be fitted.
fn gp_relevance(data: &StudyData, done: &[&TrialRecord]) -> Result<Vec<Importance>, String> {
    let space = data.space().map_err(|e| format!("its space is unusable ({e})"))?;
    let enc = Encoding::new(&space);
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for t in done {
        if let (Some(x), Some(v)) = (enc.encode(&t.params), t.value) {
            xs.push(x);
            ys.push(data.direction.to_minimize(v));
        }
    }
    if xs.len() < MIN_TRIALS || enc.dims() != data.params.len() {
        return Err("too few trials fit its encoding".into());
    }
    let (z, _) = standardise(&ys);
    let fit_data = FitData::new(&xs, &z, enc.is_categorical());
    let (kernel, cost) = fit::fit(&fit_data, &fit::screened_start(&fit_data), 200);
    let total: f64 = kernel.inv_sq_lengthscales.iter().sum();
    if !cost.is_finite() || !total.is_finite() || total <= 0.0 {
        return Err("its kernel could not be fitted".into());
    }
    let mut items: Vec<Importance> = space
        .params()
        .iter()
        .zip(&kernel.inv_sq_lengthscales)
        .map(|(p, &w)| Importance { name: p.name.clone(), share: w / total, fraction: w, stddev: 0.0 })
        .collect();
    items.sort_by(|a, b| b.share.total_cmp(&a.share));
    Ok(items)
}
