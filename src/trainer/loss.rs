//! Training losses: cross-entropy with optional label smoothing and class weights (exactly
//! `torch.nn.functional.cross_entropy(logits, y, weight=w, label_smoothing=ε)` with mean
//! reduction), and mean squared error for regression.
//!
//! With weights the mean is weighted: `Σ_i w_{y_i}·nll_i / Σ_i w_{y_i}`, and the smoothing
//! term is `Σ_i Σ_k w_k·(−log p_ik) / Σ_i w_{y_i}`, mixed as `(1−ε)·nll + ε/K·smooth`.

use candle_core::{DType, Device, Result, Tensor, D};

/// The loss of one trial.
#[derive(Debug, Clone)]
pub enum Loss {
    CrossEntropy {
        label_smoothing: f64,
        /// One weight per class (`class_weights = "balanced"`), on the model's device.
        weights: Option<Tensor>,
    },
    Mse,
}

impl Loss {
    /// Cross-entropy; `weights` (per class) turn on the weighted mean.
    pub fn cross_entropy(label_smoothing: f64, weights: Option<&[f32]>, device: &Device) -> Result<Loss> {
        let weights = weights.map(|w| Tensor::from_slice(w, w.len(), device)).transpose()?;
        Ok(Loss::CrossEntropy { label_smoothing, weights })
    }

    /// The scalar loss of `logits` `[b, k]` against `labels` (`u32 [b]` class ids, or
    /// `f32 [b]` targets for MSE with `k = 1`).
    pub fn compute(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
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

    #[test]
    fn mse_of_single_output() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1f32], [3.0]], &dev).unwrap();
        let y = Tensor::new(&[0f32, 1.0], &dev).unwrap();
        assert!((scalar(Loss::Mse.compute(&logits, &y).unwrap()) - 2.5).abs() < 1e-6);
        // (1 + 4)/2
    }
}
