//! Training losses: cross-entropy with optional label smoothing and class weights (exactly
//! `torch.nn.functional.cross_entropy(logits, y, weight=w, label_smoothing=ε)` with mean
//! reduction), and mean squared error for regression.
//!
//! With weights the mean is weighted: `Σ_i w_{y_i}·nll_i / Σ_i w_{y_i}`, and the smoothing
//! term is `Σ_i Σ_k w_k·(−log p_ik) / Σ_i w_{y_i}`, mixed as `(1−ε)·nll + ε/K·smooth`.
//!
//! Multi-label: binary cross-entropy on the logits, exactly
//! `torch.nn.BCEWithLogitsLoss(pos_weight=w)` with mean reduction over every (row, label):
//! `w_k·y·softplus(−x) + (1−y)·softplus(x)`, computed stably as
//! `softplus(x) = max(x, 0) + ln(1 + e^{−|x|})`. Label smoothing moves the targets to
//! `y·(1−ε) + ε/2`.

use candle_core::{DType, Device, Result, Tensor, D};

/// The loss of one trial.
#[derive(Debug, Clone)]
pub enum Loss {
    CrossEntropy {
        label_smoothing: f64,
        /// One weight per class (`class_weights = "balanced"`), on the model's device.
        weights: Option<Tensor>,
    },
    /// Multi-label: one sigmoid per label.
    BinaryCrossEntropy {
        label_smoothing: f64,
        /// One positive weight per label (`class_weights = "balanced"`), on the model's device.
        pos_weight: Option<Tensor>,
    },
    Mse,
}

impl Loss {
    /// Cross-entropy; `weights` (per class) turn on the weighted mean.
    pub fn cross_entropy(label_smoothing: f64, weights: Option<&[f32]>, device: &Device) -> Result<Loss> {
        let weights = weights.map(|w| Tensor::from_slice(w, w.len(), device)).transpose()?;
        Ok(Loss::CrossEntropy { label_smoothing, weights })
    }

    /// Binary cross-entropy; `pos_weight` (per label) weighs the positive targets.
    pub fn binary_cross_entropy(label_smoothing: f64, pos_weight: Option<&[f32]>, device: &Device) -> Result<Loss> {
        let pos_weight = pos_weight.map(|w| Tensor::from_slice(w, w.len(), device)).transpose()?;
        Ok(Loss::BinaryCrossEntropy { label_smoothing, pos_weight })
    }

    /// The scalar loss of `logits` `[b, k]` against `labels` (`u32 [b]` class ids, `f32
    /// [b, k]` 0/1 targets for binary cross-entropy, or `f32 [b]` targets for MSE with `k = 1`).
    pub fn compute(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
            Loss::BinaryCrossEntropy { label_smoothing, pos_weight } => {
                let x = logits;
                let mut y = labels.to_dtype(x.dtype())?;
                if *label_smoothing > 0.0 {
                    y = y.affine(1.0 - label_smoothing, label_smoothing / 2.0)?;
                }
                // softplus(x) = max(x, 0) + ln(1 + e^{−|x|}); softplus(−x) = softplus(x) − x.
                let sp = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
                let sp_neg = (&sp - x)?;
                let neg_part = ((1.0 - &y)? * &sp)?;
                let pos_part = (y * sp_neg)?;
                let pos_part = match pos_weight {
                    Some(w) => pos_part.broadcast_mul(&w.to_dtype(x.dtype())?.unsqueeze(0)?)?,
                    None => pos_part,
                };
                (pos_part + neg_part)?.mean_all()
            }
            Loss::Mse => {
                let pred = logits.flatten_all()?;
                let target = labels.to_dtype(pred.dtype())?;
                (pred - target)?.sqr()?.mean_all()
            }
            Loss::CrossEntropy { label_smoothing, weights } => {
                let (_b, k) = logits.dims2()?;
                let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
                let labels = labels.to_dtype(DType::U32)?;
                let picked = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?; // [b]
                let eps = *label_smoothing;
                match weights {
                    None => {
                        let nll = picked.neg()?.mean_all()?;
                        if eps == 0.0 {
                            return Ok(nll);
                        }
                        let smooth = logp.neg()?.sum(1)?.mean_all()?;
                        (nll * (1.0 - eps))? + (smooth * (eps / k as f64))?
                    }
                    Some(w) => {
                        let wy = w.index_select(&labels, 0)?; // [b]
                        let norm = wy.sum_all()?;
                        let nll = (picked.neg()? * &wy)?.sum_all()?.div(&norm)?;
                        if eps == 0.0 {
                            return Ok(nll);
                        }
                        let smooth = logp.neg()?.broadcast_mul(&w.unsqueeze(0)?)?.sum_all()?.div(&norm)?;
                        (nll * (1.0 - eps))? + (smooth * (eps / k as f64))?
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    /// Reference: logits [[2, 0], [0, 1]] → log p = [[-0.126928, -2.126928], [-1.313262, -0.313262]]
    /// (log-sum-exp by hand: ln(e²+1) = 2.126928, ln(1+e) = 1.313262); labels [0, 1].
    /// Plain CE = (0.126928 + 0.313262)/2 = 0.220095. These match what
    /// `torch.nn.functional.cross_entropy` gives for the same inputs by its documented formula.
    #[test]
    fn cross_entropy_smoothing_and_weights_follow_torch_formulas() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let labels = Tensor::new(&[0u32, 1], &dev).unwrap();
        let lp = [[-0.126928f64, -2.126928], [-1.313262, -0.313262]];
        let plain = scalar(Loss::cross_entropy(0.0, None, &dev).unwrap().compute(&logits, &labels).unwrap());
        assert!((plain - 0.220095).abs() < 1e-5, "{plain}");
        // ε = 0.1: 0.9·nll + 0.1/2·mean_i Σ_k −log p_ik
        let smooth = (-(lp[0][0] + lp[0][1]) - (lp[1][0] + lp[1][1])) / 2.0;
        let want = 0.9 * 0.220095 + 0.05 * smooth;
        let got = scalar(Loss::cross_entropy(0.1, None, &dev).unwrap().compute(&logits, &labels).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // weights [1, 3]: (1·0.126928 + 3·0.313262) / 4
        let want = (0.126928 + 3.0 * 0.313262) / 4.0;
        let got = scalar(Loss::cross_entropy(0.0, Some(&[1.0, 3.0]), &dev).unwrap().compute(&logits, &labels).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // weights and smoothing: smooth = Σ_i Σ_k w_k(−log p_ik) / Σ w_y
        let s = -(lp[0][0] + 3.0 * lp[0][1] + lp[1][0] + 3.0 * lp[1][1]) / 4.0;
        let want = 0.9 * want + 0.05 * s;
        let got = scalar(Loss::cross_entropy(0.1, Some(&[1.0, 3.0]), &dev).unwrap().compute(&logits, &labels).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }

    /// Reference by hand: logits [[2, −1], [0, 3]], targets [[1, 0], [0, 1]].
    /// softplus(2) = 2.126928, softplus(−1) = 0.313262, softplus(0) = ln 2 = 0.693147,
    /// softplus(3) = 3.048587. Terms: y=1,x=2 → softplus(−2) = 0.126928; y=0,x=−1 → softplus(−1)
    /// = 0.313262; y=0,x=0 → 0.693147; y=1,x=3 → softplus(−3) = 0.048587. Mean = 0.295481,
    /// which is what `torch.nn.BCEWithLogitsLoss()` gives for these inputs.
    #[test]
    fn binary_cross_entropy_follows_torch_formulas() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2f32, -1.0], [0.0, 3.0]], &dev).unwrap();
        let y = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let terms = [0.126928f64, 0.313262, std::f64::consts::LN_2, 0.048587];
        let plain = scalar(Loss::binary_cross_entropy(0.0, None, &dev).unwrap().compute(&logits, &y).unwrap());
        assert!((plain - terms.iter().sum::<f64>() / 4.0).abs() < 1e-5, "{plain}");
        // pos_weight [2, 5]: the positive terms (row 0 label 0, row 1 label 1) are scaled.
        let want = (2.0 * terms[0] + terms[1] + terms[2] + 5.0 * terms[3]) / 4.0;
        let got = scalar(Loss::binary_cross_entropy(0.0, Some(&[2.0, 5.0]), &dev).unwrap().compute(&logits, &y).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // ε = 0.2: targets 0.9 / 0.1; the loss is y·softplus(−x) + (1−y)·softplus(x).
        let sp = |x: f64| x.max(0.0) + (1.0 + (-x.abs()).exp()).ln();
        let want =
            [(2.0, 0.9), (-1.0, 0.1), (0.0, 0.1), (3.0, 0.9)].iter().map(|&(x, t)| t * sp(-x) + (1.0 - t) * sp(x)).sum::<f64>() / 4.0;
        let got = scalar(Loss::binary_cross_entropy(0.2, None, &dev).unwrap().compute(&logits, &y).unwrap());
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Far logits stay finite (no overflow in e^x).
        let far = Tensor::new(&[[200f32, -200.0]], &dev).unwrap();
        let got = scalar(
            Loss::binary_cross_entropy(0.0, None, &dev).unwrap().compute(&far, &Tensor::new(&[[0f32, 1.0]], &dev).unwrap()).unwrap(),
        );
        assert!((got - 200.0).abs() < 1e-3, "{got}");
    }

    /// d/dx of the mean BCE is (σ(x) − y)/N for every element (N = rows × labels).
    #[test]
    fn binary_cross_entropy_gradient_is_sigmoid_minus_target() {
        let dev = Device::Cpu;
        let x = candle_core::Var::new(&[[2f32, -1.0, 0.5], [0.0, 3.0, -4.0]], &dev).unwrap();
        let y = Tensor::new(&[[1f32, 0.0, 1.0], [0.0, 1.0, 1.0]], &dev).unwrap();
        let loss = Loss::binary_cross_entropy(0.0, None, &dev).unwrap().compute(x.as_tensor(), &y).unwrap();
        let g = loss.backward().unwrap();
        let got: Vec<Vec<f32>> = g.get(x.as_tensor()).unwrap().to_vec2().unwrap();
        let xs = [[2f64, -1.0, 0.5], [0.0, 3.0, -4.0]];
        let ys = [[1f64, 0.0, 1.0], [0.0, 1.0, 1.0]];
        for i in 0..2 {
            for j in 0..3 {
                let want = (1.0 / (1.0 + (-xs[i][j]).exp()) - ys[i][j]) / 6.0;
                assert!((got[i][j] as f64 - want).abs() < 1e-6, "[{i}][{j}]: {} vs {want}", got[i][j]);
            }
        }
    }

    #[test]
    fn mse_of_single_output() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1f32], [3.0]], &dev).unwrap();
        let y = Tensor::new(&[0f32, 1.0], &dev).unwrap();
        assert!((scalar(Loss::Mse.compute(&logits, &y).unwrap()) - 2.5).abs() < 1e-6);
        // (1 + 4)/2
    }
}
