//! Evaluation metrics from predicted probabilities (or logits) and true labels, and the
//! per-trial fit diagnosis ([`fit`]).
//!
//! Classification, following scikit-learn's definitions:
//! - `loss`: mean cross-entropy `-ln p[y]` (probabilities clipped below at `f64::EPSILON`,
//!   as scikit-learn's `log_loss`; from logits it is exact log-softmax);
//! - `accuracy`; predicted class = arg max (the first on ties);
//! - `precision_macro`, `recall_macro`, `f1_macro`: unweighted mean over the classes that
//!   occur in the true or the predicted labels (scikit-learn's `labels=None`); a class never
//!   predicted has precision 0 and one never true has recall 0 (`zero_division=0`);
//! - `f1_weighted`: per-class F1 weighted by true support;
//! - `f1`: F1 of the positive class (id 1), two classes only;
//! - `roc_auc`: binary AUC of `p[:, 1]`, or for more classes the mean one-vs-rest AUC over
//!   the classes with both positive and negative rows; ties get average ranks
//!   (Mann–Whitney U). Undefined (a single class present) → `None`, never NaN.
//! - the confusion matrix (rows = true, columns = predicted) travels beside the flat map.
//!
//! Regression: `loss` (= `mse`), `mse`, `mae`, `r2` (`None` when the targets are constant).
//!
//! Token classification: entity-level `precision`, `recall`, `f1`, `f1_macro` and word
//! `accuracy` ([`entities`]).
//!
//! Multi-label classification: exact-match `accuracy`, `hamming_loss`, micro/macro/weighted
//! F1, precision and recall, macro `roc_auc` ([`multilabel`]).

pub mod entities;
pub mod fit;
pub mod multilabel;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::data::{Problem, Target};
pub use entities::{token_scores, TokenScores, TOKEN_METRICS};
pub use fit::{diagnose_fit, EpochRecord, FitDiagnosis};
pub use multilabel::{multi_label_metrics, multi_label_metrics_from_logits, MultiLabelMetrics, MULTI_LABEL_METRICS};

/// Names a study's `metric` may take, for classification.
pub const CLASSIFICATION_METRICS: [&str; 8] =
    ["loss", "accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "f1", "roc_auc"];
/// Names a study's `metric` may take, for regression.
pub const REGRESSION_METRICS: [&str; 4] = ["loss", "mse", "mae", "r2"];

/// The names a study's `metric` may take for `problem`.
pub fn metrics_for(problem: Problem) -> &'static [&'static str] {
    match problem {
        Problem::Classification => &CLASSIFICATION_METRICS,
        Problem::Regression => &REGRESSION_METRICS,
        Problem::TokenClassification => &TOKEN_METRICS,
        Problem::MultiLabelClassification => &MULTI_LABEL_METRICS,
    }
}

/// Whether a bigger value of metric `name` is better (`None` for an unknown name).
pub fn greater_is_better(name: &str) -> Option<bool> {
    match name {
        "loss" | "mse" | "mae" | "hamming_loss" => Some(false),
        "accuracy" | "precision_macro" | "recall_macro" | "f1_macro" | "f1_weighted" | "f1" | "roc_auc" | "r2" | "precision" | "recall"
        | "f1_micro" | "precision_micro" | "recall_micro" => Some(true),
        _ => None,
    }
}

/// Inputs the metrics cannot be computed from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricsError {
    #[error("no rows to evaluate")]
    Empty,
    #[error("{what}: expected {expected} values, got {got}")]
    Length { what: &'static str, expected: usize, got: usize },
    #[error("label {label} is not below the number of classes {classes}")]
    LabelOutOfRange { label: u32, classes: usize },
    #[error("{what} of row {row} is not finite")]
    NonFinite { what: &'static str, row: usize },
    #[error("targets mix class ids and regression values")]
    MixedTargets,
}

/// Classification metrics; serialises to the flat map `loss, accuracy, precision_macro,
/// recall_macro, f1_macro, f1_weighted[, f1][, roc_auc]` (undefined ones omitted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub precision_macro: f64,
    pub recall_macro: f64,
    pub f1_macro: f64,
    pub f1_weighted: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// `[true][predicted]` counts over all classes; not in the flat map.
    #[serde(skip)]
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// Regression metrics; serialises to `loss, mse, mae[, r2]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    pub loss: f64,
    pub mse: f64,
    pub mae: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r2: Option<f64>,
}

/// Either kind, serialised as its flat map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metrics {
    Classification(ClassificationMetrics),
    Regression(RegressionMetrics),
    MultiLabel(MultiLabelMetrics),
}

impl ClassificationMetrics {
    /// The metric of that name, `None` where unknown or undefined.
    pub fn metric_by_name(&self, name: &str) -> Option<f64> {
        match name {
            "loss" => Some(self.loss),
            "accuracy" => Some(self.accuracy),
            "precision_macro" => Some(self.precision_macro),
            "recall_macro" => Some(self.recall_macro),
            "f1_macro" => Some(self.f1_macro),
            "f1_weighted" => Some(self.f1_weighted),
            "f1" => self.f1,
            "roc_auc" => self.roc_auc,
            _ => None,
        }
    }
}

impl RegressionMetrics {
    pub fn metric_by_name(&self, name: &str) -> Option<f64> {
        match name {
            "loss" => Some(self.loss),
            "mse" => Some(self.mse),
            "mae" => Some(self.mae),
            "r2" => self.r2,
            _ => None,
        }
    }
}

impl Metrics {
    pub fn metric_by_name(&self, name: &str) -> Option<f64> {
        match self {
            Metrics::Classification(m) => m.metric_by_name(name),
            Metrics::Regression(m) => m.metric_by_name(name),
            Metrics::MultiLabel(m) => m.metric_by_name(name),
        }
    }

    pub fn loss(&self) -> f64 {
        match self {
            Metrics::Classification(m) => m.loss,
            Metrics::Regression(m) => m.loss,
            Metrics::MultiLabel(m) => m.loss,
        }
    }

    /// Accuracy, for classification (exact match for multi-label).
    pub fn accuracy(&self) -> Option<f64> {
        match self {
            Metrics::Classification(m) => Some(m.accuracy),
            Metrics::MultiLabel(m) => Some(m.accuracy),
            Metrics::Regression(_) => None,
        }
    }

    pub fn confusion_matrix(&self) -> Option<&Vec<Vec<u64>>> {
        match self {
            Metrics::Classification(m) => Some(&m.confusion_matrix),
            Metrics::Regression(_) | Metrics::MultiLabel(_) => None,
        }
    }

    /// The defined metrics as name → value (what the store records per epoch).
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        let names: &[&str] = match self {
            Metrics::Classification(_) => &CLASSIFICATION_METRICS,
            Metrics::Regression(_) => &REGRESSION_METRICS,
            Metrics::MultiLabel(_) => &MULTI_LABEL_METRICS,
        };
        names.iter().filter_map(|n| self.metric_by_name(n).map(|v| (n.to_string(), v))).collect()
    }
}

/// Row-wise softmax of `[n, k]` logits, in f64 (max-subtracted, so stable).
pub fn softmax_rows<T: Copy + Into<f64>>(logits: &[T], k: usize) -> Vec<f64> {
    let mut out: Vec<f64> = logits.iter().map(|&x| x.into()).collect();
    if k == 0 {
        return out;
    }
    for row in out.chunks_mut(k) {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut s = 0.0;
        for x in row.iter_mut() {
            *x = (*x - m).exp();
            s += *x;
        }
        for x in row.iter_mut() {
            *x /= s;
        }
    }
    out
}

fn check_inputs(values: &[f64], k: usize, labels: &[u32], what: &'static str) -> Result<(), MetricsError> {
    if labels.is_empty() {
        return Err(MetricsError::Empty);
    }
    if values.len() != labels.len() * k {
        return Err(MetricsError::Length { what, expected: labels.len() * k, got: values.len() });
    }
    if let Some(&label) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(MetricsError::LabelOutOfRange { label, classes: k });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite { what, row: i / k.max(1) });
    }
    Ok(())
}

/// Metrics from probabilities `probs` (`[n, k]` row-major) and true class ids.
pub fn classification_metrics<T: Copy + Into<f64>>(probs: &[T], k: usize, labels: &[u32]) -> Result<ClassificationMetrics, MetricsError> {
    let p: Vec<f64> = probs.iter().map(|&x| x.into()).collect();
    check_inputs(&p, k, labels, "probabilities")?;
    let loss =
        labels.iter().enumerate().map(|(i, &y)| -p[i * k + y as usize].clamp(f64::EPSILON, 1.0).ln()).sum::<f64>() / labels.len() as f64;
    Ok(from_scores(&p, k, labels, loss))
}

/// Metrics from logits (`[n, k]` row-major); the loss is the exact mean cross-entropy.
pub fn classification_metrics_from_logits<T: Copy + Into<f64>>(
    logits: &[T],
    k: usize,
    labels: &[u32],
) -> Result<ClassificationMetrics, MetricsError> {
    let z: Vec<f64> = logits.iter().map(|&x| x.into()).collect();
    check_inputs(&z, k, labels, "logits")?;
    let mut loss = 0.0;
    for (i, &y) in labels.iter().enumerate() {
        let row = &z[i * k..(i + 1) * k];
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        loss += lse - row[y as usize];
    }
    loss /= labels.len() as f64;
    let p = softmax_rows(&z, k);
    Ok(from_scores(&p, k, labels, loss))
}

/// The index of the largest value (the first on ties): the predicted class.
pub fn argmax<T: PartialOrd>(row: &[T]) -> usize {
    let mut best = 0;
    for (j, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = j;
        }
    }
    best
}

fn from_scores(p: &[f64], k: usize, labels: &[u32], loss: f64) -> ClassificationMetrics {
    let n = labels.len();
    let mut cm = vec![vec![0u64; k]; k];
    for (i, &y) in labels.iter().enumerate() {
        cm[y as usize][argmax(&p[i * k..(i + 1) * k])] += 1;
    }
    let correct: u64 = (0..k).map(|c| cm[c][c]).sum();
    let support: Vec<u64> = (0..k).map(|c| cm[c].iter().sum()).collect();
    let predicted: Vec<u64> = (0..k).map(|c| (0..k).map(|t| cm[t][c]).sum()).collect();
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let prec: Vec<f64> = (0..k).map(|c| ratio(cm[c][c], predicted[c])).collect();
    let rec: Vec<f64> = (0..k).map(|c| ratio(cm[c][c], support[c])).collect();
    let f1c: Vec<f64> = (0..k).map(|c| ratio(2 * cm[c][c], support[c] + predicted[c])).collect();
    let present: Vec<usize> = (0..k).filter(|&c| support[c] + predicted[c] > 0).collect();
    let macro_avg = |v: &[f64]| present.iter().map(|&c| v[c]).sum::<f64>() / present.len().max(1) as f64;
    let f1_weighted = (0..k).map(|c| f1c[c] * support[c] as f64).sum::<f64>() / n as f64;
    let (f1, roc_auc) = if k == 2 {
        let scores: Vec<f64> = (0..n).map(|i| p[i * 2 + 1]).collect();
        let pos: Vec<bool> = labels.iter().map(|&y| y == 1).collect();
        (Some(f1c[1]), roc_auc_binary(&scores, &pos))
    } else {
        let aucs: Vec<f64> = (0..k)
            .filter_map(|c| {
                let scores: Vec<f64> = (0..n).map(|i| p[i * k + c]).collect();
                let pos: Vec<bool> = labels.iter().map(|&y| y as usize == c).collect();
                roc_auc_binary(&scores, &pos)
            })
            .collect();
        let auc = if aucs.is_empty() { None } else { Some(aucs.iter().sum::<f64>() / aucs.len() as f64) };
        (None, auc)
    };
    ClassificationMetrics {
        loss,
        accuracy: correct as f64 / n as f64,
        precision_macro: macro_avg(&prec),
        recall_macro: macro_avg(&rec),
        f1_macro: macro_avg(&f1c),
        f1_weighted,
        f1,
        roc_auc,
        confusion_matrix: cm,
    }
}

/// Metrics of a model's outputs against the rows' targets: `outputs` are `[n, k]` logits for
/// classification (one per label for multi-label, a label predicted at probability ≥
/// `threshold`), or `[n, 1]` predictions for regression (the kind follows the targets).
pub fn evaluate_outputs<T: Copy + Into<f64>>(outputs: &[T], k: usize, targets: &[Target], threshold: f64) -> Result<Metrics, MetricsError> {
    match targets.first() {
        None => Err(MetricsError::Empty),
        Some(Target::Tags(_)) => Err(MetricsError::MixedTargets),
        Some(Target::Labels(_)) => {
            let truth: Vec<Vec<bool>> = targets
                .iter()
                .map(|t| match t {
                    Target::Labels(f) => Ok(f.clone()),
                    _ => Err(MetricsError::MixedTargets),
                })
                .collect::<Result<_, _>>()?;
            multi_label_metrics_from_logits(outputs, k, &truth, threshold).map(Metrics::MultiLabel)
        }
        Some(Target::Class(_)) => {
            let labels: Vec<u32> = targets.iter().map(|t| t.class().ok_or(MetricsError::MixedTargets)).collect::<Result<_, _>>()?;
            classification_metrics_from_logits(outputs, k, &labels).map(Metrics::Classification)
        }
        Some(Target::Value(_)) => {
            let values: Vec<f32> = targets
                .iter()
                .map(|t| match t {
                    Target::Value(v) => Ok(*v),
                    _ => Err(MetricsError::MixedTargets),
                })
                .collect::<Result<_, _>>()?;
            if k != 1 {
                return Err(MetricsError::Length { what: "outputs per row", expected: 1, got: k });
            }
            regression_metrics(outputs, &values).map(Metrics::Regression)
        }
    }
}

/// ROC-AUC of `scores` for the rows marked positive, by the Mann–Whitney U statistic with
/// average ranks for ties. `None` when there are no positives or no negatives, or a score is
/// NaN.
pub fn roc_auc_binary(scores: &[f64], positive: &[bool]) -> Option<f64> {
    if scores.len() != positive.len() || scores.iter().any(|s| s.is_nan()) {
        return None;
    }
    let n_pos = positive.iter().filter(|&&b| b).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        // ranks i+1 ..= j+1 share their mean
        let avg = (i + j + 2) as f64 / 2.0;
        rank_sum_pos += avg * order[i..=j].iter().filter(|&&r| positive[r]).count() as f64;
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Regression metrics from predictions and targets.
pub fn regression_metrics<T: Copy + Into<f64>, U: Copy + Into<f64>>(pred: &[T], target: &[U]) -> Result<RegressionMetrics, MetricsError> {
    if target.is_empty() {
        return Err(MetricsError::Empty);
    }
    if pred.len() != target.len() {
        return Err(MetricsError::Length { what: "predictions", expected: target.len(), got: pred.len() });
    }
    let p: Vec<f64> = pred.iter().map(|&x| x.into()).collect();
    let t: Vec<f64> = target.iter().map(|&x| x.into()).collect();
    if let Some(row) = p.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite { what: "prediction", row });
    }
    if let Some(row) = t.iter().position(|v| !v.is_finite()) {
        return Err(MetricsError::NonFinite { what: "target", row });
    }
    let n = t.len() as f64;
    let sse: f64 = p.iter().zip(&t).map(|(a, b)| (a - b) * (a - b)).sum();
    let mae = p.iter().zip(&t).map(|(a, b)| (a - b).abs()).sum::<f64>() / n;
    let mean = t.iter().sum::<f64>() / n;
    let sst: f64 = t.iter().map(|b| (b - mean) * (b - mean)).sum();
    let mse = sse / n;
    Ok(RegressionMetrics { loss: mse, mse, mae, r2: (sst > 0.0).then(|| 1.0 - sse / sst) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    // References: scikit-learn 1.9.1 (log_loss, accuracy_score, precision/recall/f1_score with
    // zero_division=0, roc_auc_score, confusion_matrix) on the same arrays; the binary AUC is
    // also checked by hand: positives 0.9, 0.8, 0.6, 0.4 vs negatives 0.8, 0.4, 0.3, 0.1 win
    // 4 + 3.5 + 3 + 2.5 = 13 of 16 pairs (a tie counts ½) → 0.8125.
    fn binary() -> (Vec<f64>, Vec<u32>) {
        let p1 = [0.9, 0.8, 0.8, 0.6, 0.4, 0.4, 0.3, 0.1];
        (p1.iter().flat_map(|&p| [1.0 - p, p]).collect(), vec![1, 1, 0, 1, 0, 1, 0, 0])
    }

    #[test]
    fn binary_matches_sklearn_with_ties() {
        let (p, y) = binary();
        let m = classification_metrics(&p, 2, &y).unwrap();
        close(m.loss, 0.5422399273011039);
        close(m.accuracy, 0.75);
        close(m.precision_macro, 0.75);
        close(m.recall_macro, 0.75);
        close(m.f1_macro, 0.75);
        close(m.f1_weighted, 0.75);
        close(m.f1.unwrap(), 0.75);
        close(m.roc_auc.unwrap(), 0.8125);
        assert_eq!(m.confusion_matrix, vec![vec![3, 1], vec![1, 3]]);
    }

    #[test]
    fn three_classes_one_never_predicted() {
        let p = [
            0.7, 0.2, 0.1, 0.5, 0.4, 0.1, 0.4, 0.5, 0.1, 0.2, 0.7, 0.1, 0.3, 0.6, 0.1, 0.6, 0.3, 0.1, 0.4, 0.3, 0.3, 0.2, 0.5, 0.3, 0.5,
            0.2, 0.3f32,
        ];
        let y = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        let m = classification_metrics(&p, 3, &y).unwrap();
        let t = 1e-6; // f32 inputs
        assert!((m.loss - 0.8499449601534779).abs() < t, "{}", m.loss);
        close(m.accuracy, 4.0 / 9.0);
        close(m.precision_macro, 0.3);
        close(m.recall_macro, 0.4444444444444444);
        close(m.f1_macro, 0.35714285714285715);
        close(m.f1_weighted, 0.35714285714285715);
        assert_eq!(m.f1, None);
        assert!((m.roc_auc.unwrap() - 0.8611111111111112).abs() < t);
        assert_eq!(m.confusion_matrix, vec![vec![2, 1, 0], vec![1, 2, 0], vec![2, 1, 0]]);
    }

    #[test]
    fn flat_json_keys_and_lookup() {
        let (p, y) = binary();
        let m = classification_metrics(&p, 2, &y).unwrap();
        let v = serde_json::to_value(&m).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = CLASSIFICATION_METRICS.to_vec();
        want.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort_unstable();
        assert_eq!(keys_sorted, want);
        let all = Metrics::Classification(m.clone());
        assert_eq!(all.metric_by_name("roc_auc"), Some(0.8125));
        assert_eq!(all.metric_by_name("nope"), None);
        assert_eq!(all.to_map().len(), 8);
        assert_eq!(greater_is_better("loss"), Some(false));
        assert_eq!(greater_is_better("f1_macro"), Some(true));
        assert_eq!(greater_is_better("bogus"), None);
        assert!(CLASSIFICATION_METRICS
            .iter()
            .chain(&REGRESSION_METRICS)
            .chain(&TOKEN_METRICS)
            .chain(&MULTI_LABEL_METRICS)
            .all(|n| greater_is_better(n).is_some()));
    }

    #[test]
    fn single_class_auc_is_none_not_nan() {
        let m = classification_metrics(&[0.3, 0.7, 0.6, 0.4], 2, &[1, 1]).unwrap();
        assert_eq!(m.roc_auc, None);
        assert!(m.precision_macro.is_finite() && m.f1_macro.is_finite());
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("roc_auc") && !json.contains("NaN"), "{json}");
        assert_eq!(m.metric_by_name("roc_auc"), None);
    }

    #[test]
    fn logits_give_the_same_metrics_and_exact_loss() {
        let logits = [2.0f32, -1.0, 0.0, 0.0, -3.0, 1.0];
        let y = [0, 1, 1];
        let a = classification_metrics_from_logits(&logits, 2, &y).unwrap();
        let p = softmax_rows(&logits, 2);
        let b = classification_metrics(&p, 2, &y).unwrap();
        // -ln softmax: ln(1+e^-3), ln 2, ln(1+e^-4)
        let want = ((1.0 + (-3.0f64).exp()).ln() + 2f64.ln() + (1.0 + (-4.0f64).exp()).ln()) / 3.0;
        close(a.loss, want);
        close(b.loss, want);
        assert_eq!(a.confusion_matrix, b.confusion_matrix);
        assert_eq!(a.roc_auc, b.roc_auc);
    }

    #[test]
    fn evaluate_outputs_follows_the_targets() {
        let logits = [2.0f32, -1.0, 0.0, 0.0, -3.0, 1.0];
        let t = [Target::Class(0), Target::Class(1), Target::Class(1)];
        let m = evaluate_outputs(&logits, 2, &t, 0.5).unwrap();
        assert_eq!(Metrics::Classification(classification_metrics_from_logits(&logits, 2, &[0, 1, 1]).unwrap()), m);
        assert_eq!(m.accuracy(), Some(2.0 / 3.0));
        let r = evaluate_outputs(&[1.0f32, 2.0], 1, &[Target::Value(1.0), Target::Value(3.0)], 0.5).unwrap();
        assert_eq!(r.metric_by_name("mae"), Some(0.5));
        assert_eq!(evaluate_outputs(&[1.0f32, 2.0], 1, &[Target::Value(1.0), Target::Class(0)], 0.5), Err(MetricsError::MixedTargets));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(classification_metrics::<f64>(&[], 2, &[]), Err(MetricsError::Empty));
        assert!(matches!(classification_metrics(&[0.5, 0.5], 2, &[2]), Err(MetricsError::LabelOutOfRange { .. })));
        assert!(matches!(classification_metrics(&[0.5, 0.5, 0.1], 2, &[0]), Err(MetricsError::Length { .. })));
        assert!(matches!(classification_metrics(&[f64::NAN, 0.5], 2, &[0]), Err(MetricsError::NonFinite { .. })));
    }

    #[test]
    fn regression_matches_sklearn() {
        // sklearn: mean_squared_error 0.375, mean_absolute_error 0.5, r2_score 0.9486081370449679
        let m = regression_metrics(&[2.5, 0.0, 2.0, 8.0], &[3.0f32, -0.5, 2.0, 7.0]).unwrap();
        close(m.mse, 0.375);
        close(m.loss, 0.375);
        close(m.mae, 0.5);
        close(m.r2.unwrap(), 0.9486081370449679);
        assert_eq!(regression_metrics(&[1.0, 2.0], &[1.0, 1.0]).unwrap().r2, None);
        let r = Metrics::Regression(m);
        assert_eq!(r.metric_by_name("f1"), None);
        assert_eq!(r.to_map().keys().cloned().collect::<Vec<_>>(), vec!["loss", "mae", "mse", "r2"]);
    }
}
