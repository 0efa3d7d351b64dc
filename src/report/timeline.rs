//! Device timeline: a Gantt chart of trials per device over wall time (from each trial's
//! start and finish), showing how busy the devices were kept. A device running several
//! trials at once gets one lane per concurrent trial, so bars in a lane never overlap.
//! A trial still running is drawn up to the latest time stored in the study.

use chrono::NaiveDateTime;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axis::short_number;
use super::render::{row_label, state_color, DrawResult};
use super::study::StudyData;
use super::NotEnoughData;
use crate::storage::parse_time;
use crate::trial::{TrialNumber, TrialState};

/// One lane of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub device: String,
    /// 0 for the first lane of the device.
    pub lane: usize,
}

/// One trial's bar, in seconds from the study's first start.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub number: TrialNumber,
    pub state: TrialState,
    /// Index into [`DeviceTimeline::lanes`].
    pub lane: usize,
    pub start: f64,
    pub end: f64,
}

/// The timeline's data.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTimeline {
    /// The first trial start.
    pub origin: NaiveDateTime,
    /// Seconds from the first start to the last finish.
    pub span: f64,
    pub lanes: Vec<Lane>,
    pub bars: Vec<Bar>,
    /// Per device: the fraction of the span it ran at least one trial.
    pub busy: Vec<(String, f64)>,
}

impl DeviceTimeline {
    /// Needs one trial with a start time, and some time passed.
    pub fn compute(data: &StudyData) -> Result<DeviceTimeline, NotEnoughData> {
        let times: Vec<(&crate::trial::TrialRecord, NaiveDateTime, Option<NaiveDateTime>)> = data
            .trials
            .iter()
            .filter(|t| t.state != TrialState::Waiting)
            .filter_map(|t| Some((t, parse_time(t.started_at.as_deref()?)?, t.finished_at.as_deref().and_then(parse_time))))
            .collect();
        let Some(origin) = times.iter().map(|x| x.1).min() else {
            return Err(NotEnoughData::new("no trial has a start time"));
        };
        let latest = times.iter().flat_map(|x| [Some(x.1), x.2]).flatten().max().unwrap_or(origin);
        let span = secs(origin, latest);
        if span <= 0.0 {
            return Err(NotEnoughData::new("no time has passed between the first start and the last finish"));
        }
        let mut devices: Vec<String> = times.iter().map(|x| device_of(x.0)).collect();
        devices.sort();
        devices.dedup();
        let mut lanes: Vec<Lane> = Vec::new();
        let mut bars: Vec<Bar> = Vec::new();
        let mut busy = Vec::new();
        for d in &devices {
            let mut mine: Vec<(TrialNumber, TrialState, f64, f64)> = times
                .iter()
                .filter(|x| device_of(x.0) == *d)
                .map(|x| {
                    let end = x.2.unwrap_or(latest);
                    (x.0.number, x.0.state, secs(origin, x.1), secs(origin, end).max(secs(origin, x.1)))
                })
                .collect();
            mine.sort_by(|a, b| a.2.total_cmp(&b.2).then(a.0.cmp(&b.0)));
            // Greedy interval partitioning: the first lane free at the bar's start.
            let mut lane_ends: Vec<f64> = Vec::new();
            let first = lanes.len();
            for (number, state, start, end) in &mine {
                let k = match lane_ends.iter().position(|&e| e <= *start) {
                    Some(k) => k,
                    None => {
                        lane_ends.push(f64::NEG_INFINITY);
                        lanes.push(Lane { device: d.clone(), lane: lane_ends.len() - 1 });
                        lane_ends.len() - 1
                    }
                };
                lane_ends[k] = *end;
                bars.push(Bar { number: *number, state: *state, lane: first + k, start: *start, end: *end });
            }
            // Union of the intervals.
            let (mut covered, mut cur): (f64, Option<(f64, f64)>) = (0.0, None);
            for &(_, _, s, e) in &mine {
                cur = match cur {
                    Some((a, b)) if s <= b => Some((a, b.max(e))),
                    Some((a, b)) => {
                        covered += b - a;
                        Some((s, e))
                    }
                    None => Some((s, e)),
                };
            }
            if let Some((a, b)) = cur {
                covered += b - a;
            }
            busy.push((d.clone(), (covered / span).clamp(0.0, 1.0)));
        }
        Ok(DeviceTimeline { origin, span, lanes, bars, busy })
    }

    /// The time unit for the x axis: seconds, minutes or hours, and its length in seconds.
    fn unit(&self) -> (&'static str, f64) {
        if self.span > 2.0 * 3600.0 {
            ("hours", 3600.0)
        } else if self.span > 120.0 {
            ("minutes", 60.0)
        } else {
            ("seconds", 1.0)
        }
    }

    pub fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (unit, per) = self.unit();
        let n = self.lanes.len();
        let xmax = self.span / per;
        let busy_total: f64 = self.busy.iter().map(|b| b.1).sum::<f64>() / self.busy.len().max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Device timeline (devices busy {:.0} % of the time on average)", busy_total * 100.0), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(170)
            .build_cartesian_2d(0f64..xmax * 1.02, -0.5f64..n as f64 - 0.5)?;
        let row = |k: usize| (n - 1 - k) as f64;
        let labels: Vec<String> = self
            .lanes
            .iter()
            .map(|l| {
                let b = self.busy.iter().find(|b| b.0 == l.device).map(|b| b.1).unwrap_or(0.0);
                if l.lane == 0 {
                    format!("{} ({:.0} % busy)", l.device, b * 100.0)
                } else {
                    format!("{} #{}", l.device, l.lane + 1)
                }
            })
            .collect();
        let yf = |v: &f64| row_label(&labels, *v);
        let xf = |v: &f64| short_number(*v);
        chart
            .configure_mesh()
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .disable_y_mesh()
            .y_labels(n + 2)
            .y_label_formatter(&yf)
            .x_label_formatter(&xf)
            .x_desc(format!("{unit} since the first trial started"))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        chart.draw_series(self.bars.iter().map(|b| {
            Rectangle::new(
                [(b.start / per, row(b.lane) - 0.35), (b.end / per, row(b.lane) + 0.35)],
                state_color(b.state).mix(0.85).filled(),
            )
        }))?;
        chart.draw_series(
            self.bars
                .iter()
                .map(|b| Rectangle::new([(b.start / per, row(b.lane) - 0.35), (b.end / per, row(b.lane) + 0.35)], WHITE.stroke_width(1))),
        )?;
        let font = ("sans-serif", 12).into_font().color(&WHITE).pos(Pos::new(HPos::Center, VPos::Center));
        for b in &self.bars {
            let (x0, _) = chart.backend_coord(&(b.start / per, 0.0));
            let (x1, _) = chart.backend_coord(&(b.end / per, 0.0));
            if x1 - x0 >= 22 {
                chart.draw_series(std::iter::once(Text::new(
                    format!("{}", b.number),
                    ((b.start + b.end) / 2.0 / per, row(b.lane)),
                    font.clone(),
                )))?;
            }
        }
        Ok(())
    }
}

fn device_of(t: &crate::trial::TrialRecord) -> String {
    t.device.clone().unwrap_or_else(|| "unknown device".to_string())
}

fn secs(a: NaiveDateTime, b: NaiveDateTime) -> f64 {
    (b - a).num_milliseconds() as f64 / 1000.0
}
