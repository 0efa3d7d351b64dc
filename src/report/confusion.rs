//! Confusion matrix of the best trial on the test split (`metrics.test.confusion_matrix`,
//! rows = true class, columns = predicted). Class names come from `metrics.test.labels`
//! or `metrics.labels` (a list, or `{"id2label": [...]}`) when stored, else the class ids.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::render::DrawResult;
use super::study::StudyData;
use super::NotEnoughData;
use crate::trial::TrialNumber;

/// The confusion matrix's data.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    pub number: TrialNumber,
    pub labels: Vec<String>,
    /// `cells[true][predicted]`.
    pub cells: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// Needs a best COMPLETE trial with a square test confusion matrix.
    pub fn compute(data: &StudyData) -> Result<ConfusionMatrix, NotEnoughData> {
        let best = data.best().ok_or_else(|| NotEnoughData::new("no COMPLETE trial"))?;
        let missing = || NotEnoughData::new(format!("best trial {} has no test confusion matrix", best.number));
        let test = best.metrics.get("test").ok_or_else(missing)?;
        if test.get("r2").is_some() && test.get("confusion_matrix").is_none() {
            return Err(NotEnoughData::new("a regression study has no classes, so no confusion matrix"));
        }
        if test.get("hamming_loss").is_some() && test.get("confusion_matrix").is_none() {
            return Err(NotEnoughData::new(
                "a multi-label study scores each label on its own (f1_<label> in the test metrics), so no confusion matrix",
            ));
        }
        let rows = test.get("confusion_matrix").and_then(Value::as_array).ok_or_else(missing)?;
        let cells: Vec<Vec<u64>> = rows
            .iter()
            .map(|r| {
                r.as_array()
                    .map(|r| r.iter().map(|c| c.as_u64().or_else(|| c.as_f64().map(|f| f.max(0.0) as u64))).collect::<Option<Vec<u64>>>())
            })
            .collect::<Option<Option<Vec<_>>>>()
            .flatten()
            .ok_or_else(|| NotEnoughData::new("the test confusion matrix is not a matrix of counts"))?;
        let n = cells.len();
        if n == 0 || cells.iter().any(|r| r.len() != n) {
            return Err(NotEnoughData::new("the test confusion matrix is not square"));
        }
        let stored =
            [test.get("labels"), best.metrics.get("labels")].into_iter().flatten().find_map(|v| label_list(v).filter(|l| l.len() == n));
        let labels = stored.unwrap_or_else(|| (0..n).map(|i| i.to_string()).collect());
        Ok(ConfusionMatrix { number: best.number, labels, cells })
    }

    /// Correct predictions over all.
    pub fn accuracy(&self) -> Option<f64> {
        let total: u64 = self.cells.iter().flatten().sum();
        let right: u64 = self.cells.iter().enumerate().filter_map(|(i, r)| r.get(i)).sum();
        (total > 0).then(|| right as f64 / total as f64)
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let n = self.cells.len();
        let acc = self.accuracy().map(|a| format!(", accuracy {:.3}", a)).unwrap_or_default();
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Confusion matrix, best trial {} (test split{acc})", self.number), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(110)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, -0.5f64..n as f64 - 0.5)?;
        // Row 0 (true class 0) at the top.
        let row = |i: usize| (n - 1 - i) as f64;
        let lab = |v: f64, flip: bool| {
            let r = v.round();
            if (v - r).abs() < 1e-6 && r >= 0.0 && (r as usize) < n {
                let i = if flip { n - 1 - r as usize } else { r as usize };
                self.labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        };
        let xf = |v: &f64| lab(*v, false);
        let yf = |v: &f64| lab(*v, true);
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .disable_mesh()
            .x_labels(n + 2)
            .y_labels(n + 2)
            .x_label_formatter(&xf)
            .y_label_formatter(&yf)
            .x_desc("predicted")
            .y_desc("true")
            .draw()?;
        for (i, r) in self.cells.iter().enumerate() {
            let row_total: u64 = r.iter().sum::<u64>().max(1);
            for (j, &c) in r.iter().enumerate() {
                let share = c as f64 / row_total as f64;
                let fill = RGBColor(255 - (share * 205.0) as u8, 255 - (share * 160.0) as u8, 255 - (share * 60.0) as u8);
                let (x, y) = (j as f64, row(i));
                chart.draw_series(std::iter::once(Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], fill.filled())))?;
                chart.draw_series(std::iter::once(Rectangle::new([(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)], WHITE.stroke_width(2))))?;
                let color = if share > 0.55 { WHITE } else { BLACK };
                let font = ("sans-serif", 16).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(std::iter::once(Text::new(format!("{c}"), (x, y), font)))?;
            }
        }
        Ok(())
    }
}

fn label_list(v: &Value) -> Option<Vec<String>> {
    let list = match v {
        Value::Array(a) => a,
        Value::Object(m) => m.get("id2label")?.as_array()?,
        _ => return None,
    };
    Some(list.iter().map(|x| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string())).collect())
}
