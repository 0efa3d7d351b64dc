//! Fit diagnosis of one trial from its per-epoch records — the seed article's over/under-
//! fitting check, made automatic. Epochs are numbered from 1.
//!
//! - **underfitting**: the best train accuracy (the valid accuracy when train accuracy was not
//!   measured) stays within `min(0.05, (1 − chance)/4)` of chance, the majority-class rate;
//! - **overfitting from epoch k**: after the epoch with the lowest valid loss (k − 1), some
//!   later epoch's valid loss is above that minimum by more than
//!   `max(2 % of it, 0.005)` while its train loss is below the train loss at the minimum;
//! - otherwise **good fit**. Underfitting is checked first. Non-finite records are ignored.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What one epoch measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub train_loss: f64,
    pub valid_loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_accuracy: Option<f64>,
    /// The study's metric on the valid split.
    pub valid_metric: f64,
}

/// The verdict; serialises as its text ("good fit", "overfitting from epoch 3", …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitDiagnosis {
    GoodFit,
    Overfitting {
        from_epoch: usize,
    },
    Underfitting,
    /// No usable epoch records.
    NoEpochs,
}

impl fmt::Display for FitDiagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FitDiagnosis::GoodFit => write!(f, "good fit"),
            FitDiagnosis::Overfitting { from_epoch } => {
                write!(f, "overfitting from epoch {from_epoch}")
            }
            FitDiagnosis::Underfitting => write!(f, "underfitting"),
            FitDiagnosis::NoEpochs => write!(f, "no epochs"),
        }
    }
}

impl FromStr for FitDiagnosis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "good fit" => Ok(FitDiagnosis::GoodFit),
            "underfitting" => Ok(FitDiagnosis::Underfitting),
            "no epochs" => Ok(FitDiagnosis::NoEpochs),
            _ => s
                .strip_prefix("overfitting from epoch ")
                .and_then(|k| k.parse().ok())
                .map(|from_epoch| FitDiagnosis::Overfitting { from_epoch })
                .ok_or_else(|| format!("not a fit diagnosis: `{s}`")),
        }
    }
}

impl Serialize for FitDiagnosis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FitDiagnosis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Diagnoses a trial; `chance` is the majority-class rate (0 for regression, which then is
/// never called underfitting).
pub fn diagnose_fit(epochs: &[EpochRecord], chance: f64) -> FitDiagnosis {
    let recs: Vec<(usize, &EpochRecord)> =
        epochs.iter().enumerate().map(|(i, r)| (i + 1, r)).filter(|(_, r)| r.train_loss.is_finite() && r.valid_loss.is_finite()).collect();
    if recs.is_empty() {
        return FitDiagnosis::NoEpochs;
    }
    let accs: Option<Vec<f64>> =
        epochs.iter().map(|r| r.train_accuracy).collect::<Option<Vec<_>>>().or_else(|| epochs.iter().map(|r| r.valid_accuracy).collect());
    if let Some(accs) = accs {
        let best = accs.iter().copied().filter(|a| a.is_finite()).fold(f64::NEG_INFINITY, f64::max);
        let margin = 0.05f64.min((1.0 - chance) / 4.0);
        if chance > 0.0 && best.is_finite() && best <= chance + margin {
            return FitDiagnosis::Underfitting;
        }
    }
    let (best_pos, best) = recs
        .iter()
        .enumerate()
        .min_by(|a, b| a.1 .1.valid_loss.total_cmp(&b.1 .1.valid_loss).then(a.0.cmp(&b.0)))
        .map(|(p, (_, r))| (p, **r))
        .unwrap_or((0, *recs[0].1));
    let tol = (0.02 * best.valid_loss.abs()).max(0.005);
    let rises = recs[best_pos + 1..].iter().any(|(_, r)| r.valid_loss > best.valid_loss + tol && r.train_loss < best.train_loss);
    if rises {
        let from_epoch = recs.get(best_pos + 1).map_or(recs[best_pos].0 + 1, |(e, _)| *e);
        return FitDiagnosis::Overfitting { from_epoch };
    }
    FitDiagnosis::GoodFit
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(train_loss: f64, valid_loss: f64, train_acc: f64) -> EpochRecord {
        EpochRecord { train_loss, valid_loss, train_accuracy: Some(train_acc), valid_accuracy: None, valid_metric: 0.0 }
    }

    #[test]
    fn overfitting_from_the_epoch_after_the_best_valid_loss() {
        let e = [rec(0.6, 0.50, 0.7), rec(0.4, 0.40, 0.8), rec(0.2, 0.45, 0.9), rec(0.1, 0.60, 0.97)];
        let d = diagnose_fit(&e, 0.5);
        assert_eq!(d, FitDiagnosis::Overfitting { from_epoch: 3 });
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"overfitting from epoch 3\"");
        assert_eq!(serde_json::from_str::<FitDiagnosis>("\"overfitting from epoch 3\"").unwrap(), d);
    }

    #[test]
    fn small_rise_or_rising_train_loss_is_not_overfitting() {
        // valid loss up by 0.004 (< tolerance)
        let e = [rec(0.6, 0.50, 0.7), rec(0.4, 0.30, 0.8), rec(0.2, 0.304, 0.9)];
        assert_eq!(diagnose_fit(&e, 0.5), FitDiagnosis::GoodFit);
        // both losses rise: not the over-fitting pattern
        let e = [rec(0.6, 0.50, 0.7), rec(0.4, 0.30, 0.8), rec(0.5, 0.40, 0.8)];
        assert_eq!(diagnose_fit(&e, 0.5), FitDiagnosis::GoodFit);
    }

    #[test]
    fn near_chance_is_underfitting() {
        let e = [rec(0.69, 0.69, 0.52), rec(0.69, 0.70, 0.54)];
        assert_eq!(diagnose_fit(&e, 0.5), FitDiagnosis::Underfitting);
        assert_eq!(diagnose_fit(&e, 0.5).to_string(), "underfitting");
        // imbalanced: chance 0.9, margin 0.025
        let e = [rec(0.3, 0.3, 0.92)];
        assert_eq!(diagnose_fit(&e, 0.9), FitDiagnosis::Underfitting);
        let e = [rec(0.3, 0.3, 0.96)];
        assert_eq!(diagnose_fit(&e, 0.9), FitDiagnosis::GoodFit);
        // valid accuracy used when train accuracy is missing
        let e = [EpochRecord { train_loss: 0.6, valid_loss: 0.6, train_accuracy: None, valid_accuracy: Some(0.51), valid_metric: 0.51 }];
        assert_eq!(diagnose_fit(&e, 0.5), FitDiagnosis::Underfitting);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(diagnose_fit(&[], 0.5), FitDiagnosis::NoEpochs);
        let e = [rec(0.6, 0.5, 0.8), rec(f64::NAN, f64::NAN, 0.8)];
        assert_eq!(diagnose_fit(&e, 0.5), FitDiagnosis::GoodFit);
        assert_eq!(diagnose_fit(&[rec(0.6, 0.5, 0.8)], 0.5), FitDiagnosis::GoodFit);
        for d in [FitDiagnosis::GoodFit, FitDiagnosis::Underfitting, FitDiagnosis::NoEpochs] {
            assert_eq!(d.to_string().parse::<FitDiagnosis>().unwrap(), d);
        }
    }
}
