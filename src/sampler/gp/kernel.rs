//! The covariance function: ARD Matérn-5/2 times a signal variance, over encoded points whose
//! numeric coordinates live in [0, 1] and whose categorical coordinates hold a choice index.
//! A categorical dimension adds its weight to the squared distance when the two choices
//! differ (a Hamming distance), so choices are never treated as ordered numbers.
//!
//! Hyperparameters travel to the optimiser as `θ = [ln w_1 … ln w_D, ln s², ln(σ²_n − σ²_min)]`
//! where `w_d = 1/ℓ_d²` are inverse squared lengthscales, `s²` the signal variance and `σ²_n`
//! the noise variance (on standardised outputs), floored at [`MIN_NOISE`].

/// The smallest noise variance the model may use (on standardised outputs).
pub const MIN_NOISE: f64 = 1e-8;

const SQRT5: f64 = 2.236_067_977_499_79;

/// Kernel hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelParams {
    /// `1/ℓ_d²`, one per encoded dimension.
    pub inv_sq_lengthscales: Vec<f64>,
    pub signal_var: f64,
    pub noise_var: f64,
}

/// The box each log-space hyperparameter is clamped to: lengthscale, signal and noise
/// entries. Below the noise bound the noise excess is a tenth of [`MIN_NOISE`], where the
/// likelihood is flat anyway.
pub const THETA_BOUNDS: [(f64, f64); 3] = [(-12.0, 14.0), (-12.0, 12.0), (-20.7, 5.0)];

impl KernelParams {
    /// Where entry `k` of a `len`-long θ is clamped.
    pub fn theta_bounds(k: usize, len: usize) -> (f64, f64) {
        let d = len.saturating_sub(2);
        THETA_BOUNDS[if k < d { 0 } else { 1 + (k - d).min(1) }]
    }

    /// Reads the optimiser's log-space vector (see the module docs), clamped to
    /// [`THETA_BOUNDS`].
    pub fn from_theta(theta: &[f64]) -> KernelParams {
        let len = theta.len();
        let d = len.saturating_sub(2);
        let at = |k: usize, default: f64| {
            let (lo, hi) = Self::theta_bounds(k, len);
            theta.get(k).copied().unwrap_or(default).clamp(lo, hi)
        };
        KernelParams {
            inv_sq_lengthscales: (0..d).map(|k| at(k, 0.0).exp()).collect(),
            signal_var: at(d, 0.0).exp(),
            noise_var: MIN_NOISE + at(d + 1, -10.0).exp(),
        }
    }

    /// The log-space vector of these hyperparameters.
    pub fn to_theta(&self) -> Vec<f64> {
        let mut t: Vec<f64> = self.inv_sq_lengthscales.iter().map(|w| w.ln()).collect();
        t.push(self.signal_var.ln());
        t.push((self.noise_var - MIN_NOISE).max(1e-13).ln());
        t
    }

    /// Signal covariance between two encoded points (no noise term).
    pub fn cov(&self, a: &[f64], b: &[f64], is_cat: &[bool]) -> f64 {
        self.signal_var * matern52(weighted_sq_dist(a, b, &self.inv_sq_lengthscales, is_cat))
    }
}

/// Matérn-5/2 correlation as a function of the squared scaled distance `r²`:
/// `(1 + √5 r + 5r²/3) exp(−√5 r)`.
#[inline]
pub fn matern52(r2: f64) -> f64 {
    let r = r2.max(0.0).sqrt();
    (1.0 + SQRT5 * r + 5.0 / 3.0 * r2) * (-SQRT5 * r).exp()
}

/// `d matern52 / d(r²) = −(5/6)(1 + √5 r) exp(−√5 r)` (finite at r = 0).
#[inline]
pub fn matern52_grad_r2(r2: f64) -> f64 {
    let r = r2.max(0.0).sqrt();
    -5.0 / 6.0 * (1.0 + SQRT5 * r) * (-SQRT5 * r).exp()
}

/// The squared per-dimension difference the kernel sees: `(a−b)²` for a numeric
/// coordinate, 1 or 0 (choices differ or not) for a categorical one.
#[inline]
pub fn dim_sq_diff(a: f64, b: f64, categorical: bool) -> f64 {
    if categorical {
        if (a - b).abs() > 0.5 {
            1.0
        } else {
            0.0
        }
    } else {
        (a - b) * (a - b)
    }
}

/// The unweighted squared distance `Σ_d dim_sq_diff(a_d, b_d)` in the unit cube (1 per
/// differing choice of a categorical).
pub fn sq_distance(a: &[f64], b: &[f64], is_cat: &[bool]) -> f64 {
    a.iter().zip(b).zip(is_cat).map(|((&x, &y), &cat)| dim_sq_diff(x, y, cat)).sum()
}

/// `r² = Σ_d w_d · dim_sq_diff(a_d, b_d)`.
#[inline]
pub fn weighted_sq_dist(a: &[f64], b: &[f64], w: &[f64], is_cat: &[bool]) -> f64 {
    let mut s = 0.0;
    for d in 0..w.len() {
        s += w[d] * dim_sq_diff(a[d], b[d], is_cat[d]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matern_values_and_derivative() {
        assert_eq!(matern52(0.0), 1.0);
        // r = 1: (1 + √5 + 5/3) e^{−√5} (evaluated with Python's math module) = 0.5239941088
        assert!((matern52(1.0) - 0.523_994_108_8).abs() < 1e-9, "{}", matern52(1.0));
        for r2 in [0.0, 0.01, 0.3, 2.0] {
            let h = 1e-6;
            let fd = (matern52(r2 + h) - matern52((r2 - h).max(0.0))) / (r2 + h - (r2 - h).max(0.0));
            assert!((fd - matern52_grad_r2(r2)).abs() < 1e-4, "r2 {r2}: {fd} vs {}", matern52_grad_r2(r2));
        }
    }

    #[test]
    fn categorical_distance_is_hamming() {
        let w = [4.0, 2.0];
        let cat = [false, true];
        assert_eq!(weighted_sq_dist(&[0.5, 1.0], &[0.0, 3.0], &w, &cat), 4.0 * 0.25 + 2.0);
        assert_eq!(weighted_sq_dist(&[0.5, 3.0], &[0.0, 3.0], &w, &cat), 1.0);
    }

    #[test]
    fn theta_round_trips() {
        let p = KernelParams { inv_sq_lengthscales: vec![0.5, 20.0], signal_var: 1.3, noise_var: 1e-3 };
        let q = KernelParams::from_theta(&p.to_theta());
        assert!((q.noise_var - p.noise_var).abs() < 1e-15);
        assert!((q.signal_var - 1.3).abs() < 1e-12 && (q.inv_sq_lengthscales[1] - 20.0).abs() < 1e-9);
    }
}
