//! Drawing: the embedded font (DejaVu Sans, registered once, so PNGs need no system font),
//! shared colours, the set of plots of a study, and rendering any of them to an SVG string
//! or a PNG file.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use super::axis::{pad, short_number};
use super::confusion::ConfusionMatrix;
use super::contour::ContourPlot;
use super::history::HistoryPlot;
use super::importance::ImportancePlot;
use super::learning::LearningCurves;
use super::parallel::ParallelCoordinates;
use super::slice::SlicePlot;
use super::study::StudyData;
use super::timeline::DeviceTimeline;
use super::train_valid::TrainValidLoss;
use super::{NotEnoughData, ReportError};
use crate::trial::{Direction, TrialNumber, TrialState};

/// What drawing functions return (plotters' errors, boxed).
pub type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The legend of a line chart: top right, on a translucent white box.
pub fn draw_legend<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, DB, CT>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// The frame of a chart of values against a whole-numbered step (learning curves, train
/// and valid loss by epoch): both axes padded around `points`, steps labelled on whole
/// numbers, values in short form, the report's fonts and no minor grid.
pub fn step_chart<'a, 'p, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: String,
    (x_desc, y_desc): (&str, &str),
    points: impl Iterator<Item = &'p (i64, f64)>,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let (slo, shi, vlo, vhi) = points
        .fold((i64::MAX, i64::MIN, f64::INFINITY, f64::NEG_INFINITY), |(a, b, c, d), &(s, v)| (a.min(s), b.max(s), c.min(v), d.max(v)));
    let (xlo, xhi) = pad(slo as f64, shi as f64);
    let (ylo, yhi) = pad(vlo, vhi);
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(xlo..xhi, ylo..yhi)?;
    let yf = |v: &f64| short_number(*v);
    chart
        .configure_mesh()
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&whole_number_label)
        .y_label_formatter(&yf)
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    Ok(chart)
}

/// The label of row `v` of a chart whose `labels` run top-down at rows n − 1, …, 0 (bars by
/// parameter or by device): empty between rows and outside them.
pub fn row_label(labels: &[String], v: f64) -> String {
    let (r, n) = (v.round(), labels.len());
    if (v - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < n {
        labels[n - 1 - r as usize].clone()
    } else {
        String::new()
    }
}

/// An axis label on whole numbers only (steps, epochs): none between them.
pub fn whole_number_label(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        String::new()
    }
}

/// The font every plot uses, shipped in the binary (license in `assets/fonts`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Registers the embedded font as `sans-serif` (once); an error says it is unusable.
pub fn ensure_font() -> Result<(), ReportError> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Draw { plot: "font".into(), message: "the embedded font could not be loaded".into() })
    }
}

pub const COMPLETE: RGBColor = RGBColor(31, 119, 180);
pub const PRUNED: RGBColor = RGBColor(255, 127, 14);
pub const FAILED: RGBColor = RGBColor(214, 39, 40);
pub const BEST: RGBColor = RGBColor(44, 160, 44);
pub const RUNNING: RGBColor = RGBColor(148, 103, 189);

/// The colour of a trial state.
pub fn state_color(s: TrialState) -> RGBColor {
    match s {
        TrialState::Complete => COMPLETE,
        TrialState::Pruned => PRUNED,
        TrialState::Fail => FAILED,
        TrialState::Running | TrialState::Waiting => RUNNING,
    }
}

/// How good a value is in [0, 1] (1 = best) between the extremes, for the direction.
pub fn goodness(v: f64, lo: f64, hi: f64, dir: Direction) -> f64 {
    let u = if hi > lo { ((v - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 };
    match dir {
        Direction::Minimize => 1.0 - u,
        Direction::Maximize => u,
    }
}

/// A sequential colour from pale yellow (0, worst) to dark blue (1, best).
pub fn value_color(g: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 4] =
        [(0.0, (255.0, 237.0, 160.0)), (0.35, (127.0, 205.0, 187.0)), (0.7, (44.0, 127.0, 184.0)), (1.0, (37.0, 52.0, 148.0))];
    let g = if g.is_finite() { g.clamp(0.0, 1.0) } else { 0.0 };
    let k = STOPS.iter().position(|s| s.0 >= g).unwrap_or(STOPS.len() - 1).max(1);
    let (a, b) = (STOPS[k - 1], STOPS[k]);
    let t = if b.0 > a.0 { (g - a.0) / (b.0 - a.0) } else { 0.0 };
    let mix = |x: f64, y: f64| (x + (y - x) * t).round().clamp(0.0, 255.0) as u8;
    RGBColor(mix(a.1 .0, b.1 .0), mix(a.1 .1, b.1 .1), mix(a.1 .2, b.1 .2))
}

/// A colour by trial number: early trials light, late trials dark.
pub fn number_color(n: TrialNumber, last: TrialNumber) -> RGBColor {
    value_color(0.15 + 0.85 * if last > 0 { n as f64 / last as f64 } else { 1.0 })
}

/// Any computed plot.
#[derive(Debug, Clone, PartialEq)]
pub enum Plot {
    History(HistoryPlot),
    Parallel(ParallelCoordinates),
    Slice(SlicePlot),
    Contour(ContourPlot),
    Importance(ImportancePlot),
    Learning(LearningCurves),
    TrainValid(TrainValidLoss),
    Timeline(DeviceTimeline),
    Confusion(ConfusionMatrix),
}

impl Plot {
    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        match self {
            Plot::Parallel(p) => ((200 + 150 * p.axes.len() as u32).clamp(700, 1250), 480),
            Plot::Contour(_) => (760, 580),
            Plot::Importance(p) => (760, (140 + 40 * p.items.len() as u32).max(260)),
            Plot::Timeline(t) => (1200, (130 + 34 * t.lanes.len() as u32).max(240)),
            Plot::Confusion(c) => {
                let s = (260 + 70 * c.labels.len() as u32).clamp(420, 1000);
                (s + 60, s)
            }
            _ => (760, 460),
        }
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        match self {
            Plot::History(p) => p.draw(root),
            Plot::Parallel(p) => p.draw(root),
            Plot::Slice(p) => p.draw(root),
            Plot::Contour(p) => p.draw(root),
            Plot::Importance(p) => p.draw(root),
            Plot::Learning(p) => p.draw(root),
            Plot::TrainValid(p) => p.draw(root),
            Plot::Timeline(p) => p.draw(root),
            Plot::Confusion(p) => p.draw(root),
        }
    }

    /// The plot as an SVG document.
    pub fn to_svg(&self, name: &str) -> Result<String, ReportError> {
        ensure_font()?;
        let mut buf = String::new();
        {
            let root = SVGBackend::with_string(&mut buf, self.size()).into_drawing_area();
            let err = |e: Box<dyn std::error::Error>| ReportError::Draw { plot: name.to_string(), message: e.to_string() };
            self.draw(&root).map_err(err)?;
            root.present().map_err(|e| err(Box::new(e)))?;
        }
        Ok(buf)
    }

    /// The plot as a PNG file.
    pub fn to_png(&self, name: &str, path: &Path) -> Result<(), ReportError> {
        ensure_font()?;
        let err = |e: Box<dyn std::error::Error>| ReportError::Draw { plot: name.to_string(), message: e.to_string() };
        let root = BitMapBackend::new(path, self.size()).into_drawing_area();
        self.draw(&root).map_err(err)?;
        root.present().map_err(|e| err(Box::new(e)))?;
        Ok(())
    }
}

/// One plot of the set: its file stem (`history`, `slice_learning_rate`, …), its title,
/// and the plot or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotItem {
    pub stem: String,
    pub title: String,
    pub plot: Result<Plot, NotEnoughData>,
}

/// Every plot of a study, in report order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotSet {
    pub items: Vec<PlotItem>,
}

impl PlotSet {
    /// Computes every plot. `contour` names the contour's two parameters (default: the two
    /// most important, else the first two); an unknown name is an error.
    pub fn compute(data: &StudyData, contour: Option<(&str, &str)>) -> Result<PlotSet, ReportError> {
        let names = data.param_names();
        if let Some((a, b)) = contour {
            for n in [a, b] {
                if !names.iter().any(|m| m == n) {
                    let hint = crate::config::suggest::hint(n, names.iter().map(String::as_str));
                    return Err(ReportError::UnknownParam { name: n.to_string(), known: names.join(", "), hint });
                }
            }
        }
        let item = |stem: &str, title: &str, plot: Result<Plot, NotEnoughData>| PlotItem { stem: stem.into(), title: title.into(), plot };
        let importance = ImportancePlot::compute(data);
        let pair: Option<(String, String)> = match (contour, &importance) {
            (Some((a, b)), _) => Some((a.to_string(), b.to_string())),
            (None, Ok(imp)) if imp.items.len() >= 2 => Some((imp.items[0].name.clone(), imp.items[1].name.clone())),
            _ => (names.len() >= 2).then(|| (names[0].clone(), names[1].clone())),
        };
        let mut items = vec![
            item("history", "Optimisation history", HistoryPlot::compute(data).map(Plot::History)),
            item("parallel", "Parallel coordinates", ParallelCoordinates::compute(data).map(Plot::Parallel)),
        ];
        if names.is_empty() {
            items.push(item("slice", "Slice", Err(NotEnoughData::new("the study has no parameters"))));
        }
        for n in &names {
            items.push(item(&format!("slice_{}", file_safe(n)), &format!("Slice: {n}"), SlicePlot::compute(data, n).map(Plot::Slice)));
        }
        let contour = match &pair {
            Some((a, b)) => ContourPlot::compute(data, a, b).map(Plot::Contour),
            None => Err(NotEnoughData::new("a contour needs two parameters")),
        };
        items.extend([
            item("contour", "Contour", contour),
            item("importance", "Parameter importance", importance.map(Plot::Importance)),
            item("learning_curves", "Learning curves", LearningCurves::compute(data).map(Plot::Learning)),
            item("train_valid_loss", "Train vs valid loss (best trial)", TrainValidLoss::compute(data).map(Plot::TrainValid)),
            item("timeline", "Device timeline", DeviceTimeline::compute(data).map(Plot::Timeline)),
            item("confusion", "Confusion matrix (best trial, test split)", ConfusionMatrix::compute(data).map(Plot::Confusion)),
        ]);
        Ok(PlotSet { items })
    }

    /// The item with this stem.
    pub fn get(&self, stem: &str) -> Option<&PlotItem> {
        self.items.iter().find(|i| i.stem == stem)
    }
}

/// A name made safe for a file name: letters, digits, `-` and `_` kept, the rest `_`.
pub fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}
