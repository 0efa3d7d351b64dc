//! Multi-label metrics: each row has a set of labels, the model one probability per label
//! (a sigmoid), and a label is predicted when its probability is at least the threshold (0.5
//! unless the study sets another, or tunes it on the valid split: [`tune_threshold`]).
//! The definitions are scikit-learn's for a multi-label indicator matrix, with
//! `zero_division=0`:
//! - `accuracy`: exact match, the share of rows whose predicted set is the true set
//!   (`accuracy_score`, "subset accuracy");
//! - `hamming_loss`: the share of (row, label) pairs predicted wrongly;
//! - `f1_micro`, `precision_micro`, `recall_micro`: over the pooled (row, label) counts;
//! - `f1_macro`, `precision_macro`, `recall_macro`: unweighted mean over all labels (a label
//!   never predicted has precision 0, one never true recall 0, and F1 0 when it is neither
//!   true nor predicted anywhere);
//! - `f1_weighted`: per-label F1 weighted by true support;
//! - `roc_auc`: mean ROC-AUC over the labels that have both positive and negative rows
//!   (scikit-learn's macro average, which refuses the input instead when a label has only
//!   one kind); `None` when no label has both;
//! - `loss`: mean binary cross-entropy over every (row, label), from the logits exactly, or
//!   from probabilities clipped to `[ε, 1−ε]` as scikit-learn's `log_loss`.
//! - `f1_<label>`: each label's own F1, beside the averages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{roc_auc_binary, MetricsError};

/// Names a study's `metric` may take, for multi-label classification.
pub const MULTI_LABEL_METRICS: [&str; 11] = [
    "loss",
    "accuracy",
    "hamming_loss",
    "f1_micro",
    "f1_macro",
    "f1_weighted",
    "precision_micro",
    "recall_micro",
    "precision_macro",
    "recall_macro",
    "roc_auc",
];

/// The probability at and above which a label is predicted, unless the study says otherwise.
pub const THRESHOLD: f64 = 0.5;

/// The thresholds [`tune_threshold`] tries: 0.05, 0.06, …, 0.95.
pub fn threshold_grid() -> impl Iterator<Item = f64> {
    (5..=95).map(|i| i as f64 / 100.0)
}

/// One label's counts over the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelCounts {
    pub tp: u64,
    pub fp: u64,
    #[serde(rename = "fn")]
    pub fn_: u64,
    pub tn: u64,
}

impl LabelCounts {
    fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Multi-label metrics (module doc); serialises to the flat map of [`MULTI_LABEL_METRICS`]
/// (`roc_auc` omitted when undefined) plus `f1_<label>` through [`MultiLabelMetrics::to_map`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub hamming_loss: f64,
    pub f1_micro: f64,
    pub f1_macro: f64,
    pub f1_weighted: f64,
    pub precision_micro: f64,
    pub recall_micro: f64,
    pub precision_macro: f64,
    pub recall_macro: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roc_auc: Option<f64>,
    /// Per label, in id order; not in the flat map.
    #[serde(skip)]
    pub per_label: Vec<LabelCounts>,
}

impl MultiLabelMetrics {
    /// The metric of that name, `None` where unknown or undefined.
    pub fn metric_by_name(&self, name: &str) -> Option<f64> {
        match name {
            "loss" => Some(self.loss),
            "accuracy" => Some(self.accuracy),
            "hamming_loss" => Some(self.hamming_loss),
            "f1_micro" => Some(self.f1_micro),
            "f1_macro" => Some(self.f1_macro),
            "f1_weighted" => Some(self.f1_weighted),
            "precision_micro" => Some(self.precision_micro),
            "recall_micro" => Some(self.recall_micro),
            "precision_macro" => Some(self.precision_macro),
            "recall_macro" => Some(self.recall_macro),
            "roc_auc" => self.roc_auc,
            _ => None,
        }
    }

    /// The defined averages, and `f1_<name>` for each label of `names` (id order).
    pub fn to_map(&self, names: &[String]) -> BTreeMap<String, f64> {
        let mut m: BTreeMap<String, f64> =
            MULTI_LABEL_METRICS.iter().filter_map(|n| self.metric_by_name(n).map(|v| (n.to_string(), v))).collect();
        for (name, c) in names.iter().zip(&self.per_label) {
            m.insert(format!("f1_{name}"), c.f1());
        }
        m
    }
}

/// The metrics of `probs` (`[n, k]` row-major, each a label's probability) against `truth`
/// (`n` rows of `k` flags), a label predicted at probability ≥ `threshold`. The loss is from
/// the clipped probabilities.
pub fn multi_label_metrics(probs: &[f64], k: usize, truth: &[Vec<bool>], threshold: f64) -> Result<MultiLabelMetrics, MetricsError> {
    check_shape(probs.len(), k, truth)?;
    let eps = 1e-15;
    let loss = mean(truth.iter().flatten().zip(probs).map(|(&y, &p)| {
        let p = p.clamp(eps, 1.0 - eps);
        if y {
            -p.ln()
        } else {
            -(1.0 - p).ln()
        }
    }));
    score(probs, k, truth, loss, threshold)
}

/// The same from logits: probabilities by the sigmoid, the loss exactly
/// (`y·softplus(−x) + (1−y)·softplus(x)`).
pub fn multi_label_metrics_from_logits<T: Copy + Into<f64>>(
    logits: &[T],
    k: usize,
    truth: &[Vec<bool>],
    threshold: f64,
) -> Result<MultiLabelMetrics, MetricsError> {
    check_shape(logits.len(), k, truth)?;
    let x: Vec<f64> = logits.iter().map(|&v| v.into()).collect();
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    let loss = mean(truth.iter().flatten().zip(&x).map(|(&y, &x)| if y { softplus(-x) } else { softplus(x) }));
    let probs: Vec<f64> = x.iter().map(|&x| sigmoid(x)).collect();
    score(&probs, k, truth, loss, threshold)
}

/// The threshold of [`threshold_grid`] under which `probs` score best against `truth` on
/// `metric` (bigger or smaller as the metric is better; among equals the nearest to 0.5). 0.5
/// for a metric no threshold changes (`loss`, `roc_auc`) or an unknown one.
pub fn tune_threshold(probs: &[f64], k: usize, truth: &[Vec<bool>], metric: &str) -> Result<f64, MetricsError> {
    check_shape(probs.len(), k, truth)?;
    let Some(bigger) = super::greater_is_better(metric) else { return Ok(THRESHOLD) };
    if matches!(metric, "loss" | "roc_auc") {
        return Ok(THRESHOLD);
    }
    let mut best: Option<(f64, f64)> = None; // (threshold, value)
    for t in threshold_grid() {
        let (per_label, exact) = counts_at(probs, k, truth, t);
        let Some(v) = averages(&per_label, exact, truth.len(), k, 0.0, None).metric_by_name(metric) else { return Ok(THRESHOLD) };
        let better = match best {
            None => true,
            Some((bt, bv)) => (if bigger { v > bv } else { v < bv }) || (v == bv && (t - THRESHOLD).abs() < (bt - THRESHOLD).abs()),
        };
        if better {
            best = Some((t, v));
        }
    }
    Ok(best.map_or(THRESHOLD, |(t, _)| t))
}

/// The logistic function, stable at both ends.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let (s, n) = it.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    s / n.max(1) as f64
}

fn check_shape(len: usize, k: usize, truth: &[Vec<bool>]) -> Result<(), MetricsError> {
    if truth.is_empty() {
        return Err(MetricsError::Empty);
    }
    if len != truth.len() * k {
        return Err(MetricsError::Length { what: "label probabilities", expected: truth.len() * k, got: len });
    }
    if let Some(bad) = truth.iter().position(|t| t.len() != k) {
        return Err(MetricsError::Length { what: "label flags of a row", expected: k, got: truth[bad].len() });
    }
    Ok(())
}

fn score(probs: &[f64], k: usize, truth: &[Vec<bool>], loss: f64, threshold: f64) -> Result<MultiLabelMetrics, MetricsError> {
    if let Some(i) = probs.iter().position(|p| !p.is_finite()) {
        return Err(MetricsError::NonFinite { what: "label probability", row: i / k.max(1) });
    }
    let n = truth.len();
    let (per_label, exact) = counts_at(probs, k, truth, threshold);
    let aucs: Vec<f64> = (0..k)
        .filter_map(|j| {
            let scores: Vec<f64> = (0..n).map(|i| probs[i * k + j]).collect();
            let positive: Vec<bool> = truth.iter().map(|t| t[j]).collect();
            roc_auc_binary(&scores, &positive)
        })
        .collect();
    let roc_auc = (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64);
    Ok(averages(&per_label, exact, n, k, loss, roc_auc))
}

/// Each label's counts, and the rows predicted exactly, at `threshold`.
fn counts_at(probs: &[f64], k: usize, truth: &[Vec<bool>], threshold: f64) -> (Vec<LabelCounts>, usize) {
    let mut per_label = vec![LabelCounts::default(); k];
    let mut exact = 0usize;
    for (row, flags) in probs.chunks(k.max(1)).zip(truth) {
        let mut all_right = true;
        for ((&p, &y), c) in row.iter().zip(flags).zip(per_label.iter_mut()) {
            let pred = p >= threshold;
            match (y, pred) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
            all_right &= y == pred;
        }
        exact += usize::from(all_right);
    }
    (per_label, exact)
}

/// The averages of the counts (scikit-learn's definitions, module doc).
fn averages(per_label: &[LabelCounts], exact: usize, n: usize, k: usize, loss: f64, roc_auc: Option<f64>) -> MultiLabelMetrics {
    let pooled = per_label.iter().fold(LabelCounts::default(), |a, c| LabelCounts {
        tp: a.tp + c.tp,
        fp: a.fp + c.fp,
        fn_: a.fn_ + c.fn_,
        tn: a.tn + c.tn,
    });
    let macro_of = |f: fn(&LabelCounts) -> f64| per_label.iter().map(f).sum::<f64>() / k.max(1) as f64;
    let support: u64 = per_label.iter().map(|c| c.tp + c.fn_).sum();
    let f1_weighted =
        if support == 0 { 0.0 } else { per_label.iter().map(|c| c.f1() * (c.tp + c.fn_) as f64).sum::<f64>() / support as f64 };
    MultiLabelMetrics {
        loss,
        accuracy: exact as f64 / n.max(1) as f64,
        hamming_loss: (pooled.fp + pooled.fn_) as f64 / (n * k).max(1) as f64,
        f1_micro: pooled.f1(),
        f1_macro: macro_of(LabelCounts::f1),
        f1_weighted,
        precision_micro: pooled.precision(),
        recall_micro: pooled.recall(),
        precision_macro: macro_of(LabelCounts::precision),
        recall_macro: macro_of(LabelCounts::recall),
        roc_auc,
        per_label: per_label.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four rows, three labels. Truth / predicted (p ≥ 0.5):
    /// row 0: {a, c} / {a, c}      (exact)
    /// row 1: {b}    / {a, b}
    /// row 2: {}     / {}          (exact)
    /// row 3: {a, b} / {b}
    /// Label a: tp 1, fp 1, fn 1, tn 1 → P 1/2, R 1/2, F1 1/2.
    /// Label b: tp 2, fp 0, fn 0 → P 1, R 1, F1 1.
    /// Label c: tp 1 → F1 1.
    /// Micro: tp 4, fp 1, fn 1 → P 4/5, R 4/5, F1 4/5. Hamming 2/12. Exact 2/4.
    /// Weighted F1: supports a 2, b 2, c 1 → (2·0.5 + 2·1 + 1·1)/5 = 0.8.
    /// scikit-learn 1.x gives the same for these matrices (`f1_score(Y, P, average=…)`,
    /// `hamming_loss`, `accuracy_score`).
    fn case() -> (Vec<f64>, Vec<Vec<bool>>) {
        let probs = vec![
            0.9, 0.2, 0.7, //
            0.6, 0.8, 0.1, //
            0.3, 0.4, 0.2, //
            0.4, 0.55, 0.05,
        ];
        let t = |a: bool, b: bool, c: bool| vec![a, b, c];
        (probs, vec![t(true, false, true), t(false, true, false), t(false, false, false), t(true, true, false)])
    }

    #[test]
    fn matches_hand_computed_scikit_learn_definitions() {
        let (p, y) = case();
        let m = multi_label_metrics(&p, 3, &y, THRESHOLD).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(close(m.accuracy, 0.5));
        assert!(close(m.hamming_loss, 2.0 / 12.0));
        assert!(close(m.f1_micro, 0.8) && close(m.precision_micro, 0.8) && close(m.recall_micro, 0.8));
        assert!(close(m.f1_macro, (0.5 + 1.0 + 1.0) / 3.0));
        assert!(close(m.precision_macro, (0.5 + 1.0 + 1.0) / 3.0));
        assert!(close(m.f1_weighted, 0.8));
        // AUC per label: a: positives {0.9, 0.4} vs negatives {0.6, 0.3} → pairs won 3 of 4;
        // b: {0.8, 0.55} vs {0.2, 0.4} → 1; c: {0.7} vs {0.1, 0.2, 0.05} → 1.
        assert!(close(m.roc_auc.unwrap(), (0.75 + 1.0 + 1.0) / 3.0));
        let map = m.to_map(&["a".into(), "b".into(), "c".into()]);
        assert!(close(map["f1_a"], 0.5) && close(map["f1_b"], 1.0));
        assert!(map.contains_key("hamming_loss") && map.len() == MULTI_LABEL_METRICS.len() + 3);
    }

    #[test]
    fn logits_give_the_same_scores_and_the_exact_loss() {
        let (p, y) = case();
        let logits: Vec<f64> = p.iter().map(|&p| (p / (1.0 - p)).ln()).collect();
        let a = multi_label_metrics(&p, 3, &y, THRESHOLD).unwrap();
        let b = multi_label_metrics_from_logits(&logits, 3, &y, THRESHOLD).unwrap();
        assert!((a.loss - b.loss).abs() < 1e-12, "{} vs {}", a.loss, b.loss);
        assert_eq!((a.accuracy, a.f1_micro, a.f1_macro), (b.accuracy, b.f1_micro, b.f1_macro));
        // A far logit on the wrong side: the exact loss is the logit itself, not a clip.
        let far = multi_label_metrics_from_logits(&[-80.0f64], 1, &[vec![true]], THRESHOLD).unwrap();
        assert!((far.loss - 80.0).abs() < 1e-9, "{}", far.loss);
    }

    #[test]
    fn undefined_and_bad_inputs() {
        // Every row has the one label: no negatives, so no AUC; a label never true or
        // predicted scores 0 in the macro average (zero_division = 0).
        let m = multi_label_metrics(&[0.9, 0.1, 0.8, 0.2], 2, &[vec![true, false], vec![true, false]], THRESHOLD).unwrap();
        assert_eq!(m.roc_auc, None);
        assert_eq!((m.f1_micro, m.f1_macro, m.accuracy), (1.0, 0.5, 1.0));
        assert_eq!(multi_label_metrics(&[], 2, &[], THRESHOLD), Err(MetricsError::Empty));
        assert!(matches!(multi_label_metrics(&[0.5], 2, &[vec![true, false]], THRESHOLD), Err(MetricsError::Length { .. })));
        assert!(matches!(multi_label_metrics(&[f64::NAN, 0.1], 2, &[vec![true, false]], THRESHOLD), Err(MetricsError::NonFinite { .. })));
    }

    #[test]
    fn a_tuned_threshold_is_the_best_of_the_grid_on_the_metric() {
        // Positives at 0.3 and 0.35, negatives at 0.1 and 0.2: every threshold in (0.2, 0.3]
        // is perfect on F1; the one nearest 0.5 among them is 0.3.
        let probs = [0.3, 0.1, 0.35, 0.2];
        let truth = [vec![true], vec![false], vec![true], vec![false]];
        assert_eq!(tune_threshold(&probs, 1, &truth, "f1_micro").unwrap(), 0.3);
        let at = multi_label_metrics(&probs, 1, &truth, 0.3).unwrap();
        assert_eq!((at.f1_micro, at.accuracy, at.hamming_loss), (1.0, 1.0, 0.0));
        let at_half = multi_label_metrics(&probs, 1, &truth, THRESHOLD).unwrap();
        assert_eq!(at_half.f1_micro, 0.0, "nothing reaches 0.5");
        // Minimised metrics pick the smallest; threshold-free metrics keep 0.5.
        assert_eq!(tune_threshold(&probs, 1, &truth, "hamming_loss").unwrap(), 0.3);
        assert_eq!(tune_threshold(&probs, 1, &truth, "roc_auc").unwrap(), THRESHOLD);
        assert_eq!(tune_threshold(&probs, 1, &truth, "loss").unwrap(), THRESHOLD);
    }
}
