//! How a parameter is laid out on a plot axis: linear, log-scaled (drawn on log10 of the
//! value, labelled with the value), or categorical (choices at positions 0, 1, …).
//! Numeric ranges are those of the observed values (as Optuna's plots do).

use crate::space::{Distribution, ParamValue};

/// The kind of axis.
#[derive(Debug, Clone, PartialEq)]
pub enum Scale {
    Linear,
    Log,
    /// Choice labels, in the distribution's order.
    Categorical(Vec<String>),
}

/// One parameter as an axis.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamAxis {
    pub name: String,
    pub scale: Scale,
    /// Smallest and largest observed value (raw, not log); for categoricals 0 and n − 1.
    pub min: f64,
    pub max: f64,
}

impl ParamAxis {
    /// The axis of `name` from its distribution (if known) and the values observed.
    /// `None` when no value is observed.
    pub fn new(name: &str, dist: Option<&Distribution>, values: &[&ParamValue]) -> Option<ParamAxis> {
        if values.is_empty() {
            return None;
        }
        let all_numeric = values.iter().all(|v| v.as_f64().is_some());
        let scale = match dist {
            Some(Distribution::Categorical { choices }) => Scale::Categorical(choices.iter().map(|c| c.to_string()).collect()),
            Some(Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. }) => Scale::Log,
            _ if !all_numeric => {
                let mut labels: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                labels.sort();
                labels.dedup();
                Scale::Categorical(labels)
            }
            _ => Scale::Linear,
        };
        let (min, max) = match &scale {
            Scale::Categorical(labels) => (0.0, labels.len().saturating_sub(1) as f64),
            _ => {
                let xs = values.iter().filter_map(|v| v.as_f64()).filter(|x| x.is_finite());
                xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)))
            }
        };
        if !min.is_finite() || !max.is_finite() || (scale == Scale::Log && min <= 0.0) {
            return None;
        }
        Some(ParamAxis { name: name.to_string(), scale, min, max })
    }

    pub fn is_log(&self) -> bool {
        self.scale == Scale::Log
    }

    /// Where a value sits in plot coordinates: the value (linear), its log10 (log), or the
    /// index of the choice (categorical).
    pub fn coord(&self, v: &ParamValue) -> Option<f64> {
        match &self.scale {
            Scale::Linear => v.as_f64().filter(|x| x.is_finite()),
            Scale::Log => v.as_f64().filter(|x| *x > 0.0 && x.is_finite()).map(f64::log10),
            Scale::Categorical(labels) => {
                let s = v.to_string();
                labels.iter().position(|l| *l == s).map(|i| i as f64)
            }
        }
    }

    /// The plot-coordinate range, padded so single values and end choices are visible.
    pub fn coord_range(&self) -> (f64, f64) {
        let (lo, hi) = match self.scale {
            Scale::Log => (self.min.log10(), self.max.log10()),
            _ => (self.min, self.max),
        };
        match &self.scale {
            Scale::Categorical(_) => (lo - 0.5, hi + 0.5),
            _ => pad(lo, hi),
        }
    }

    /// A value's position in [0, 1] between the observed extremes (log where log-scaled).
    pub fn unit(&self, v: &ParamValue) -> Option<f64> {
        let c = self.coord(v)?;
        let (lo, hi) = match self.scale {
            Scale::Log => (self.min.log10(), self.max.log10()),
            _ => (self.min, self.max),
        };
        Some(if hi > lo { ((c - lo) / (hi - lo)).clamp(0.0, 1.0) } else { 0.5 })
    }

    /// The value at a plot coordinate, for tick labels.
    pub fn label_at(&self, c: f64) -> String {
        match &self.scale {
            Scale::Linear => short_number(c),
            Scale::Log => short_number(10f64.powf(c)),
            Scale::Categorical(labels) => {
                let i = c.round();
                if (c - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            }
        }
    }

    /// How many tick labels to ask plotters for: one per decade on a log axis spanning two
    /// or more (so ticks land on powers of ten), one per choice on a categorical axis.
    pub fn label_count(&self) -> usize {
        match &self.scale {
            Scale::Log => {
                let decades = self.max.log10() - self.min.log10();
                if decades >= 2.0 {
                    (decades.ceil() as usize + 1).clamp(2, 12)
                } else {
                    6
                }
            }
            Scale::Categorical(labels) => labels.len() + 2,
            Scale::Linear => 10,
        }
    }

    /// The axis title: the name, with "(log)" where log-scaled.
    pub fn title(&self) -> String {
        if self.is_log() {
            format!("{} (log)", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// A range widened by 5 % on each side (or by 1 / 10 % of the value when empty).
pub fn pad(lo: f64, hi: f64) -> (f64, f64) {
    if hi > lo {
        let d = (hi - lo) * 0.05;
        (lo - d, hi + d)
    } else {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo - d, hi + d)
    }
}

/// A number in at most 4 significant digits, in exponent form when very small or large.
pub fn short_number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        let s = format!("{x:.2e}");
        // 1.00e-5 → 1e-5
        s.replace(".00e", "e").replace("0e", "e")
    } else {
        let s = format!("{:.4}", x);
        let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
        if s == "-0" {
            "0".into()
        } else {
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_and_categorical_axes() {
        let d = Distribution::Float { low: 1e-6, high: 1e-2, log: true, step: None };
        let vals = [ParamValue::Float(1e-5), ParamValue::Float(1e-3)];
        let refs: Vec<&ParamValue> = vals.iter().collect();
        let a = ParamAxis::new("lr", Some(&d), &refs).expect("axis");
        assert!(a.is_log());
        assert_eq!((a.min, a.max), (1e-5, 1e-3));
        assert!((a.coord(&vals[0]).unwrap_or(0.0) + 5.0).abs() < 1e-9);
        assert!((a.unit(&ParamValue::Float(1e-4)).unwrap_or(0.0) - 0.5).abs() < 1e-9);
        assert_eq!(a.label_at(-4.0), "1e-4");

        let d = Distribution::Categorical { choices: vec![ParamValue::Int(8), ParamValue::Int(16), ParamValue::Int(32)] };
        let vals = [ParamValue::Int(16)];
        let refs: Vec<&ParamValue> = vals.iter().collect();
        let a = ParamAxis::new("bs", Some(&d), &refs).expect("axis");
        assert_eq!(a.scale, Scale::Categorical(vec!["8".into(), "16".into(), "32".into()]));
        assert_eq!(a.coord(&vals[0]), Some(1.0));
        assert_eq!(a.label_at(2.0), "32");
        assert_eq!(a.label_at(1.5), "");
        assert_eq!(a.coord_range(), (-0.5, 2.5));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(3.0), "3");
        assert_eq!(short_number(2.5e-5), "2.5e-5");
        assert_eq!(short_number(1e-5), "1e-5");
    }
}
