//! The GP posterior for fixed hyperparameters: factorises `K + σ²_n I` once, then predicts
//! the latent mean and variance at new points — one at a time with gradients (for polishing
//! the acquisition) or many at once (for screening candidates, where one blocked triangular
//! solve over all candidates is much faster than one solve per candidate).

use super::kernel::{matern52, matern52_grad_r2, weighted_sq_dist, KernelParams};
use super::linalg::{dot, Cholesky, LinalgError};

/// Variance floor, relative to the signal variance, so `sqrt` and `ln` stay finite.
const MIN_VAR_FRACTION: f64 = 1e-12;

/// A GP conditioned on observations.
#[derive(Debug, Clone)]
pub struct Posterior {
    xs: Vec<Vec<f64>>,
    is_cat: Vec<bool>,
    params: KernelParams,
    chol: Cholesky,
    /// `(K + σ²_n I)⁻¹ y`.
    alpha: Vec<f64>,
}

/// Mean and latent variance at one point, with their gradients over some coordinates.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub mean: f64,
    pub var: f64,
    pub d_mean: Vec<f64>,
    pub d_var: Vec<f64>,
}

impl Posterior {
    /// Conditions the GP with `params` on `(xs, ys)`.
    pub fn new(xs: Vec<Vec<f64>>, ys: &[f64], params: KernelParams, is_cat: &[bool]) -> Result<Posterior, LinalgError> {
        Self::new_reusing(xs, ys, params, is_cat, None)
    }

    /// As [`Posterior::new`], reusing `prefix` when it is the factor (with the same
    /// `params`) of the first `prefix.dim()` points: then only the new rows are factorised,
    /// O(n²) instead of O(n³), and the result is identical to a factorisation from scratch.
    pub fn new_reusing(
        xs: Vec<Vec<f64>>,
        ys: &[f64],
        params: KernelParams,
        is_cat: &[bool],
        prefix: Option<&Cholesky>,
    ) -> Result<Posterior, LinalgError> {
        let n = xs.len();
        let build = |from: usize| {
            let mut k = vec![0.0; n * n];
            for i in from..n {
                for j in 0..i {
                    k[i * n + j] = params.cov(&xs[i], &xs[j], is_cat);
                }
                k[i * n + i] = params.signal_var + params.noise_var;
            }
            k
        };
        let extended = prefix.and_then(|p| p.extended(&build(p.dim()), n));
        let chol = match extended {
            Some(c) => c,
            None => Cholesky::new(&build(0), n)?,
        };
        let alpha = chol.solve(ys);
        if alpha.iter().any(|a| !a.is_finite()) {
            return Err(LinalgError::NonFinite);
        }
        Ok(Posterior { xs, is_cat: is_cat.to_vec(), params, chol, alpha })
    }

    /// The factor of `K + σ²_n I`.
    pub fn factor(&self) -> &Cholesky {
        &self.chol
    }

    pub fn params(&self) -> &KernelParams {
        &self.params
    }

    pub fn len(&self) -> usize {
        self.xs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.xs.is_empty()
    }

    fn floor_var(&self, v: f64) -> f64 {
        v.max(MIN_VAR_FRACTION * self.params.signal_var)
    }

    /// Covariances between `x` and every observation.
    fn cross_cov(&self, x: &[f64]) -> Vec<f64> {
        self.xs.iter().map(|xi| self.params.cov(x, xi, &self.is_cat)).collect()
    }

    /// Latent mean at `x` (O(n), no variance).
    pub fn predict_mean(&self, x: &[f64]) -> f64 {
        self.xs.iter().zip(&self.alpha).map(|(xi, a)| a * self.params.cov(x, xi, &self.is_cat)).sum()
    }

    /// Latent mean and variance at `x`.
    pub fn predict(&self, x: &[f64]) -> (f64, f64) {
        let k = self.cross_cov(x);
        let mean = dot(&k, &self.alpha);
        let v = self.chol.solve_lower(&k);
        (mean, self.floor_var(self.params.signal_var - dot(&v, &v)))
    }

    /// Latent means and variances at many points.
    pub fn predict_many(&self, points: &[Vec<f64>]) -> Vec<(f64, f64)> {
        let n = self.xs.len();
        let m = points.len();
        if m == 0 {
            return Vec::new();
        }
        // Row i holds k(x_i, point_j) for every point j.
        let mut kt = vec![0.0; n * m];
        for (i, xi) in self.xs.iter().enumerate() {
            let row = &mut kt[i * m..(i + 1) * m];
            for (j, p) in points.iter().enumerate() {
                row[j] = self.params.cov(p, xi, &self.is_cat);
            }
        }
        let mut means = vec![0.0; m];
        for i in 0..n {
            let a = self.alpha[i];
            for (mj, kij) in means.iter_mut().zip(&kt[i * m..(i + 1) * m]) {
                *mj += a * kij;
            }
        }
        self.chol.solve_lower_many(&mut kt, m);
        let mut explained = vec![0.0; m];
        for i in 0..n {
            for (ej, vij) in explained.iter_mut().zip(&kt[i * m..(i + 1) * m]) {
                *ej += vij * vij;
            }
        }
        means.into_iter().zip(explained).map(|(mu, e)| (mu, self.floor_var(self.params.signal_var - e))).collect()
    }

    /// Mean and variance at `x` with their derivatives along the numeric coordinates `dims`.
    pub fn predict_with_grad(&self, x: &[f64], dims: &[usize]) -> Prediction {
        let n = self.xs.len();
        let w = &self.params.inv_sq_lengthscales;
        let s2 = self.params.signal_var;
        let mut k = Vec::with_capacity(n);
        let mut dk_dr2 = Vec::with_capacity(n);
        for xi in &self.xs {
            let r2 = weighted_sq_dist(x, xi, w, &self.is_cat);
            k.push(s2 * matern52(r2));
            dk_dr2.push(s2 * matern52_grad_r2(r2));
        }
        let mean = dot(&k, &self.alpha);
        let v = self.chol.solve_lower(&k);
        let raw_var = s2 - dot(&v, &v);
        let var = self.floor_var(raw_var);
        let u = self.chol.solve_upper(&v);
        // d k_i / d x_d = dk/dr² · 2 w_d (x_d − x_id): accumulate Σ_i c_i (x_d − x_id) per
        // coordinate, one pass over the observations, then scale by 2 w_d.
        let mut d_mean = vec![0.0; dims.len()];
        let mut d_var = vec![0.0; dims.len()];
        for (i, xi) in self.xs.iter().enumerate() {
            let a = self.alpha[i] * dk_dr2[i];
            let b = u[i] * dk_dr2[i];
            for (k, &d) in dims.iter().enumerate() {
                let diff = x[d] - xi[d];
                d_mean[k] += a * diff;
                d_var[k] += b * diff;
            }
        }
        let floored = raw_var < var;
        for (k, &d) in dims.iter().enumerate() {
            d_mean[k] *= 2.0 * w[d];
            // d var = −2 kᵀ K⁻¹ dk = −2 (L⁻ᵀ v)ᵀ dk; zero where the variance is floored.
            d_var[k] = if floored { 0.0 } else { -4.0 * w[d] * d_var[k] };
        }
        Prediction { mean, var, d_mean, d_var }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two observations in one dimension, solved with the closed-form 2x2 inverse:
    /// K = [[s²+σ², c], [c, s²+σ²]] with c = s² M(√w·1), K⁻¹ = [[a, −c], [−c, a]] / (a² − c²).
    #[test]
    fn two_point_posterior_matches_the_closed_form() {
        let (w, s2, noise) = (4.0, 1.5, 0.01);
        let params = KernelParams { inv_sq_lengthscales: vec![w], signal_var: s2, noise_var: noise };
        let xs = vec![vec![0.0], vec![1.0]];
        let ys = [1.0, -0.5];
        let post = Posterior::new(xs, &ys, params, &[false]).unwrap();

        let m = |r: f64| {
            let s5 = 5f64.sqrt();
            (1.0 + s5 * r + 5.0 / 3.0 * r * r) * (-s5 * r).exp()
        };
        let a = s2 + noise;
        let c = s2 * m(w.sqrt() * 1.0);
        let det = a * a - c * c;
        let kinv = [[a / det, -c / det], [-c / det, a / det]];
        let q = 0.3;
        let k = [s2 * m(w.sqrt() * q), s2 * m(w.sqrt() * (1.0 - q))];
        let mean: f64 = (0..2).map(|i| (0..2).map(|j| k[i] * kinv[i][j] * ys[j]).sum::<f64>()).sum();
        let var = s2 - (0..2).map(|i| (0..2).map(|j| k[i] * kinv[i][j] * k[j]).sum::<f64>()).sum::<f64>();

        let (pm, pv) = post.predict(&[q]);
        assert!((pm - mean).abs() < 1e-12, "mean {pm} vs {mean}");
        assert!((post.predict_mean(&[q]) - mean).abs() < 1e-12);
        assert!((pv - var).abs() < 1e-12, "var {pv} vs {var}");
        let many = post.predict_many(&[vec![q], vec![0.9]]);
        assert!((many[0].0 - mean).abs() < 1e-12 && (many[0].1 - var).abs() < 1e-12);
        let g = post.predict_with_grad(&[q], &[0]);
        assert!((g.mean - mean).abs() < 1e-12 && (g.var - var).abs() < 1e-12);
        // Gradients against central differences.
        let h = 1e-6;
        let (mp, vp) = post.predict(&[q + h]);
        let (mm, vm) = post.predict(&[q - h]);
        assert!((g.d_mean[0] - (mp - mm) / (2.0 * h)).abs() < 1e-6);
        assert!((g.d_var[0] - (vp - vm) / (2.0 * h)).abs() < 1e-6);
    }
}
