//! An exponential moving average of the trainable weights (`[train] ema_decay`, Polyak
//! averaging): what a trial evaluates, checkpoints and hands to the test split, the soup and
//! `export` when the option is on, while the optimizer keeps updating the trained weights.
//!
//! The average is bias-corrected like Adam's moments, so it is a true weighted mean of the
//! weights after steps 1..t, with weight ∝ decay^(t−i), from the first step on (no pull
//! towards the pretrained or randomly initialised weights): after step t,
//! `avg += a_t · (w − avg)` with `a_t = (1 − decay) / (1 − decay^t)` (`a_1 = 1`).
//!
//! Evaluation swaps the average into the model's variables and puts the trained weights back
//! afterwards ([`WeightAverage::swap_in`], [`WeightAverage::restore`]). A checkpoint then holds
//! the average as `model.safetensors` (a plain Hugging Face model) and the trained weights in
//! [`TRAINED_WEIGHTS`], so a resumed run continues exactly where it stopped.

use std::path::Path;

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor, Var};
use rayon::prelude::*;

use super::model::ops::{contiguous_f32, contiguous_f32_mut};

/// The trained (not averaged) weights of the trainable parameters, in a checkpoint written
/// with `ema_decay > 0`; only a resumed run reads them.
pub const TRAINED_WEIGHTS: &str = "trained_weights.safetensors";

/// Values per rayon task of the in-place CPU update (below two of these it runs inline).
const CHUNK: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum EmaError {
    #[error("tensor error in the weight average: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {why}")]
    State { path: String, why: String },
}

/// The running average of a model's trainable variables.
pub struct WeightAverage {
    decay: f64,
    vars: Vec<(String, Var)>,
    /// One tensor per variable, with its own storage (never a variable's).
    avg: Vec<Tensor>,
}

/// The trained weights, held aside while the average is in the model.
pub struct Trained(Vec<Tensor>);

fn own_copy(var: &Var) -> candle_core::Result<Tensor> {
    Ok(var.as_tensor().copy()?.detach())
}

impl WeightAverage {
    /// Starts the average at the variables' current values (the first update replaces them,
    /// since `a_1 = 1`). `decay` must be in (0, 1).
    pub fn new(vars: Vec<(String, Var)>, decay: f64) -> Result<Self, EmaError> {
        let avg = vars.iter().map(|(_, v)| own_copy(v)).collect::<candle_core::Result<Vec<_>>>()?;
        Ok(WeightAverage { decay, vars, avg })
    }

    /// The step size of the update after optimizer step `t` (1-based).
    pub fn rate(decay: f64, t: u64) -> f64 {
        let t = t.clamp(1, i32::MAX as u64) as i32;
        (1.0 - decay) / (1.0 - decay.powi(t))
    }

    /// Folds the variables' values after optimizer step `t` (1-based) into the average.
    pub fn update(&mut self, t: u64) -> Result<(), EmaError> {
        let a = Self::rate(self.decay, t);
        for ((_, var), avg) in self.vars.iter().zip(self.avg.iter_mut()) {
            let w = var.as_tensor();
            if w.device().is_cpu() && w.dtype() == DType::F32 && avg.dtype() == DType::F32 {
                avg.inplace_op2(w, &Blend { a: a as f32 })?;
            } else {
                *avg = ((w.detach() - &*avg)?.affine(a, 0.0)? + &*avg)?.detach();
            }
        }
        Ok(())
    }

    /// Puts the average into the model's variables; the trained weights come back with
    /// [`Self::restore`].
    pub fn swap_in(&self) -> Result<Trained, EmaError> {
        let mut trained = Vec::with_capacity(self.vars.len());
        for ((_, var), avg) in self.vars.iter().zip(&self.avg) {
            trained.push(own_copy(var)?);
            var.set(avg)?;
        }
        Ok(Trained(trained))
    }

    /// Puts the trained weights back.
    pub fn restore(&self, trained: Trained) -> Result<(), EmaError> {
        for ((_, var), w) in self.vars.iter().zip(&trained.0) {
            var.set(w)?;
        }
        Ok(())
    }

    /// Writes `trained` (from [`Self::swap_in`]) under the variables' names.
    pub fn save_trained(&self, trained: &Trained, path: &Path) -> Result<(), EmaError> {
        let map: std::collections::HashMap<String, Tensor> = self
            .vars
            .iter()
            .zip(&trained.0)
            .map(|((name, _), t)| t.to_device(&Device::Cpu).map(|t| (name.clone(), t)))
            .collect::<candle_core::Result<_>>()?;
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Resumes from a checkpoint whose averaged weights are already in the variables (its
    /// `model.safetensors`): they become the average, and the trained weights of `path`
    /// ([`TRAINED_WEIGHTS`]) go into the variables.
    pub fn resume(&mut self, path: &Path) -> Result<(), EmaError> {
        let err = |why: String| EmaError::State { path: path.display().to_string(), why };
        if !path.is_file() {
            return Err(err("missing: the checkpoint was written without `ema_decay`, or is incomplete".into()));
        }
        let device = self.vars.first().map_or(Device::Cpu, |(_, v)| v.device().clone());
        let map = candle_core::safetensors::load(path, &device)?;
        let mut trained = Vec::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            let t = map.get(name).ok_or_else(|| err(format!("`{name}` is missing")))?;
            if t.shape() != var.shape() {
                return Err(err(format!("`{name}` has shape {:?}, the model {:?}", t.dims(), var.dims())));
            }
            trained.push(t.to_dtype(var.dtype())?);
        }
        self.avg = self.vars.iter().map(|(_, v)| own_copy(v)).collect::<candle_core::Result<Vec<_>>>()?;
        for ((_, var), t) in self.vars.iter().zip(&trained) {
            var.set(t)?;
        }
        Ok(())
    }
}

/// `dst += a · (src − dst)` in place, over rayon's pool in chunks.
struct Blend {
    a: f32,
}

impl InplaceOp2 for Blend {
    fn name(&self) -> &'static str {
        "ema-blend"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let src = contiguous_f32(s2, l2, "ema-blend source")?;
        let dst = contiguous_f32_mut(s1, l1, src.len(), "ema-blend (average)")?;
        let a = self.a;
        let blend = |d: &mut [f32], s: &[f32]| {
            for (d, s) in d.iter_mut().zip(s) {
                *d += a * (s - *d);
            }
        };
        if dst.len() < 2 * CHUNK {
            blend(dst, src);
        } else {
            dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| blend(d, s));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(values: &[f32]) -> Var {
        Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_vec1::<f32>().unwrap()
    }

    /// After steps 1..3 with weights w1, w2, w3 the average is the bias-corrected weighted
    /// mean Σ d^(3−i) (1 − d) w_i / (1 − d³), computed here by hand, on both update paths.
    #[test]
    fn the_average_is_the_bias_corrected_weighted_mean_of_the_iterates() {
        let d = 0.5;
        let ws = [[1.0f32, -2.0], [3.0, 0.0], [-1.0, 4.0]];
        let norm = 1.0 - d * d * d;
        let want: Vec<f64> =
            (0..2).map(|j| (0.25 * 0.5 * ws[0][j] as f64 + 0.5 * 0.5 * ws[1][j] as f64 + 0.5 * ws[2][j] as f64) / norm).collect();
        // f32 on the CPU takes the in-place op; f64 the tensor-op path other devices take
        for dtype in [DType::F32, DType::F64] {
            let v = Var::from_tensor(&Tensor::new(&[9.0f32, 9.0], &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
            let mut ema = WeightAverage::new(vec![("w".into(), v.clone())], d).unwrap();
            for (t, w) in ws.iter().enumerate() {
                v.set(&Tensor::new(w, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
                ema.update(t as u64 + 1).unwrap();
            }
            let got: Vec<f64> = ema.avg[0].to_dtype(DType::F64).unwrap().to_vec1().unwrap();
            for j in 0..2 {
                assert!((got[j] - want[j]).abs() < 1e-6, "{dtype:?}: {got:?} vs {want:?}");
            }
        }
        // step 1 replaces the starting value whatever it was
        assert_eq!(WeightAverage::rate(d, 1), 1.0);
        assert!((WeightAverage::rate(0.998, 1_000_000) - 0.002).abs() < 1e-12);
    }

    #[test]
    fn the_parallel_in_place_update_equals_the_tensor_op_update() {
        let n = 5 * CHUNK + 17;
        let w0: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let w1: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
        let v = var(&w0);
        let mut ema = WeightAverage::new(vec![("w".into(), v.clone())], 0.9).unwrap();
        ema.update(1).unwrap();
        v.set(&Tensor::new(w1.as_slice(), &Device::Cpu).unwrap()).unwrap();
        ema.update(2).unwrap();
        let a = WeightAverage::rate(0.9, 2) as f32;
        let got = values(&ema.avg[0]);
        for i in [0, 1, CHUNK - 1, CHUNK, 3 * CHUNK + 5, n - 1] {
            let want = w0[i] + a * (w1[i] - w0[i]);
            assert!((got[i] - want).abs() < 1e-6, "at {i}: {} vs {want}", got[i]);
        }
    }

    /// swap_in puts the average into the variable and restore the trained values back; a
    /// resume from the saved trained weights rebuilds both.
    #[test]
    fn swap_restore_and_resume_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let v = var(&[1.0, 2.0]);
        let mut ema = WeightAverage::new(vec![("layer.weight".into(), v.clone())], 0.5).unwrap();
        ema.update(1).unwrap();
        v.set(&Tensor::new(&[3.0f32, 6.0], &Device::Cpu).unwrap()).unwrap();
        ema.update(2).unwrap(); // a_2 = 1/3: avg = 1 + (3-1)/3, 2 + (6-2)/3
        let avg = values(&ema.avg[0]);
        let trained = ema.swap_in().unwrap();
        assert_eq!(values(v.as_tensor()), avg);
        let path = tmp.path().join(TRAINED_WEIGHTS);
        ema.save_trained(&trained, &path).unwrap();
        ema.restore(trained).unwrap();
        assert_eq!(values(v.as_tensor()), vec![3.0, 6.0]);

        // a fresh run: the model was loaded with the checkpoint's (averaged) weights
        let v2 = var(&avg);
        let mut ema2 = WeightAverage::new(vec![("layer.weight".into(), v2.clone())], 0.5).unwrap();
        ema2.resume(&path).unwrap();
        assert_eq!(values(v2.as_tensor()), vec![3.0, 6.0]);
        assert_eq!(values(&ema2.avg[0]), avg);

        let missing = ema2.resume(&tmp.path().join("nope.safetensors")).unwrap_err().to_string();
        assert!(missing.contains("nope.safetensors") && missing.contains("missing"), "{missing}");
        let other = WeightAverage::new(vec![("other.weight".into(), var(&[0.0, 0.0]))], 0.5).unwrap().resume(&path);
        assert!(other.unwrap_err().to_string().contains("`other.weight` is missing"));
    }
}
