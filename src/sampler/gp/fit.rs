//! Maximum a posteriori kernel hyperparameters: the log marginal likelihood of standardised
//! outputs plus weak log priors, maximised with argmin's L-BFGS on the analytic gradient. The
//! start is the lowest-cost one of a few isotropic settings (one Cholesky each), so it is
//! a function of the data alone; hyperparameters live in a clamped log-space box
//! ([`crate::sampler::gp::kernel::THETA_BOUNDS`]) where the gradient is zero outside.
//!
//! Priors (in the spirit of Optuna's GPSampler): each inverse squared lengthscale `w` gets
//! `−0.1 (w + 1/w)`, which peaks at a lengthscale of 1 in unit-cube units; the signal variance
//! a Gamma(2, 1); the noise variance a Gamma(1.1, 30), floored at [`MIN_NOISE`].

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

use super::kernel::{dim_sq_diff, matern52, matern52_grad_r2, KernelParams, MIN_NOISE};
use super::linalg::{Cholesky, LinalgError};
use super::LastEvaluation;

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// Cost returned where the likelihood cannot be evaluated, so the line search backs off.
const BAD_COST: f64 = 1e12;

/// Observations prepared for repeated likelihood evaluations: per pair and dimension, the
/// squared difference the kernel sees, computed once.
#[derive(Debug, Clone)]
pub struct FitData {
    n: usize,
    dims: usize,
    ys: Vec<f64>,
    /// For pair (i, j), j < i, at `pair_index(i, j) * dims + d`.
    sq_diffs: Vec<f64>,
}

#[inline]
fn pair_index(i: usize, j: usize) -> usize {
    i * (i - 1) / 2 + j
}

impl FitData {
    pub fn new(xs: &[Vec<f64>], ys: &[f64], is_cat: &[bool]) -> FitData {
        let n = xs.len();
        let dims = is_cat.len();
        let mut sq_diffs = Vec::with_capacity(n * n.saturating_sub(1) / 2 * dims);
        for i in 0..n {
            for j in 0..i {
                for d in 0..dims {
                    sq_diffs.push(dim_sq_diff(xs[i][d], xs[j][d], is_cat[d]));
                }
            }
        }
        FitData { n, dims, ys: ys.to_vec(), sq_diffs }
    }

    /// Number of hyperparameters (`dims` lengthscales, signal and noise variance).
    pub fn n_theta(&self) -> usize {
        self.dims + 2
    }

    /// `−(ln p(y | θ) + ln prior(θ))` alone (no inverse, no gradient).
    pub fn neg_log_posterior_value(&self, theta: &[f64]) -> Result<f64, LinalgError> {
        let (n, dims) = (self.n, self.dims);
        let p = KernelParams::from_theta(theta);
        let w = &p.inv_sq_lengthscales;
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..i {
                let pi = pair_index(i, j);
                let sd = &self.sq_diffs[pi * dims..(pi + 1) * dims];
                let r2: f64 = sd.iter().zip(w).map(|(a, b)| a * b).sum();
                k[i * n + j] = p.signal_var * matern52(r2);
            }
            k[i * n + i] = p.signal_var + p.noise_var;
        }
        let chol = Cholesky::new(&k, n)?;
        let alpha = chol.solve(&self.ys);
        let data_fit: f64 = alpha.iter().zip(&self.ys).map(|(a, y)| a * y).sum();
        let lml = -0.5 * data_fit - 0.5 * chol.log_det() - 0.5 * n as f64 * LN_2PI;
        let log_prior = w.iter().map(|wd| -0.1 * (wd + 1.0 / wd)).sum::<f64>() + p.signal_var.ln() - p.signal_var + 0.1 * p.noise_var.ln()
            - 30.0 * p.noise_var;
        let cost = -(lml + log_prior);
        if cost.is_finite() {
            Ok(cost)
        } else {
            Err(LinalgError::NonFinite)
        }
    }

    /// `−(ln p(y | θ) + ln prior(θ))` and its gradient with respect to `θ`.
    pub fn neg_log_posterior(&self, theta: &[f64]) -> Result<(f64, Vec<f64>), LinalgError> {
        let (n, dims) = (self.n, self.dims);
        let p = KernelParams::from_theta(theta);
        let w = &p.inv_sq_lengthscales;
        let s2 = p.signal_var;
        // Kernel matrix and dk/dr² per pair.
        let mut k = vec![0.0; n * n];
        let mut dk_dr2 = vec![0.0; n * n.saturating_sub(1) / 2];
        for i in 0..n {
            for j in 0..i {
                let pi = pair_index(i, j);
                let sd = &self.sq_diffs[pi * dims..(pi + 1) * dims];
                let r2: f64 = sd.iter().zip(w).map(|(a, b)| a * b).sum();
                let v = s2 * matern52(r2);
                k[i * n + j] = v;
                k[j * n + i] = v;
                dk_dr2[pi] = s2 * matern52_grad_r2(r2);
            }
            k[i * n + i] = s2 + p.noise_var;
        }
        let chol = Cholesky::new(&k, n)?;
        let alpha = chol.solve(&self.ys);
        let data_fit: f64 = alpha.iter().zip(&self.ys).map(|(a, y)| a * y).sum();
        let lml = -0.5 * data_fit - 0.5 * chol.log_det() - 0.5 * n as f64 * LN_2PI;

        // d lml / dθ = ½ Σ_ij W_ij dK_ij/dθ with W = ααᵀ − K⁻¹.
        let kinv = chol.inverse();
        let mut grad = vec![0.0; dims + 2];
        let mut trace_w = 0.0;
        let mut signal_term = 0.0;
        for i in 0..n {
            let wii = alpha[i] * alpha[i] - kinv[i * n + i];
            trace_w += wii;
            signal_term += wii * s2;
            for j in 0..i {
                let wij = alpha[i] * alpha[j] - kinv[i * n + j];
                // Off-diagonal pairs count twice (W and dK are symmetric).
                signal_term += 2.0 * wij * k[i * n + j];
                let pi = pair_index(i, j);
                let c = 2.0 * wij * dk_dr2[pi];
                let sd = &self.sq_diffs[pi * dims..(pi + 1) * dims];
                for d in 0..dims {
                    grad[d] += c * sd[d];
                }
            }
        }
        for d in 0..dims {
            grad[d] *= 0.5 * w[d];
        }
        grad[dims] = 0.5 * signal_term;
        let noise_excess = p.noise_var - MIN_NOISE;
        grad[dims + 1] = 0.5 * trace_w * noise_excess;

        // Log priors and their gradients in θ.
        let mut log_prior = 0.0;
        for d in 0..dims {
            log_prior += -0.1 * (w[d] + 1.0 / w[d]);
            grad[d] += -0.1 * w[d] + 0.1 / w[d];
        }
        log_prior += s2.ln() - s2;
        grad[dims] += 1.0 - s2;
        log_prior += 0.1 * p.noise_var.ln() - 30.0 * p.noise_var;
        grad[dims + 1] += (0.1 / p.noise_var - 30.0) * noise_excess;

        let cost = -(lml + log_prior);
        if !cost.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            return Err(LinalgError::NonFinite);
        }
        // Where θ is clamped the cost is flat, so the gradient is zero there too.
        Ok((
            cost,
            grad.into_iter()
                .enumerate()
                .map(|(k, g)| {
                    let (lo, hi) = KernelParams::theta_bounds(k, theta.len());
                    if (lo..=hi).contains(&theta[k]) {
                        -g
                    } else {
                        0.0
                    }
                })
                .collect(),
        ))
    }
}

/// argmin's view of the hyperparameter problem; remembers the last evaluation because the
/// solver asks for cost and gradient at the same point separately.
struct Problem<'a> {
    data: &'a FitData,
    last: LastEvaluation,
}

impl Problem<'_> {
    fn eval(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        if let Some((t, c, g)) = self.last.borrow().as_ref() {
            if t.as_slice() == theta {
                return (*c, g.clone());
            }
        }
        let (c, g) = self.data.neg_log_posterior(theta).unwrap_or_else(|_| (BAD_COST, vec![0.0; theta.len()]));
        *self.last.borrow_mut() = Some((theta.to_vec(), c, g.clone()));
        (c, g)
    }
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, theta: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(theta).0)
    }
}

impl Gradient for Problem<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, theta: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(theta).1)
    }
}

/// Runs L-BFGS from `start` for at most `max_iters` iterations; returns the best point seen
/// and its cost (the start itself if the solver gives up at once).
fn lbfgs(data: &FitData, start: &[f64], max_iters: u64) -> (Vec<f64>, f64) {
    let problem = Problem { data, last: RefCell::new(None) };
    let start_cost = problem.eval(start).0;
    let fallback = (start.to_vec(), start_cost);
    let solver = match LBFGS::new(MoreThuenteLineSearch::new(), 7).with_tolerance_grad(1e-4).and_then(|s| s.with_tolerance_cost(1e-7)) {
        Ok(s) => s,
        Err(_) => return fallback,
    };
    let result = Executor::new(problem, solver).configure(|state| state.param(start.to_vec()).max_iters(max_iters)).run();
    match result {
        Ok(res) => {
            let state = res.state();
            match state.get_best_param() {
                Some(best) if state.get_best_cost() < start_cost => (best.clone(), state.get_best_cost()),
                _ => fallback,
            }
        }
        Err(_) => fallback,
    }
}

/// The MAP hyperparameters: L-BFGS from each of `starts`, keeping the best end point, with
/// its cost (the negative log posterior; infinite when nothing could be evaluated, in which
/// case the default start is returned).
pub fn fit(data: &FitData, starts: &[Vec<f64>], max_iters: u64) -> (KernelParams, f64) {
    let mut best: Option<(Vec<f64>, f64)> = None;
    for s in starts {
        let (t, c) = lbfgs(data, s, max_iters);
        if best.as_ref().is_none_or(|(_, bc)| c < *bc) {
            best = Some((t, c));
        }
    }
    match best {
        Some((t, c)) if c < BAD_COST => (KernelParams::from_theta(&t), c),
        _ => (KernelParams::from_theta(&default_theta(data.dims, 1.0)), f64::INFINITY),
    }
}

/// The starting point for L-BFGS: the best, by cost alone (one Cholesky each, no gradient),
/// of a few isotropic settings from long to short lengthscales.
pub fn screened_start(data: &FitData) -> Vec<Vec<f64>> {
    let mut best: Option<(f64, Vec<f64>)> = None;
    for w in [0.25, 1.0, 4.0, 16.0, 64.0] {
        let t = default_theta(data.dims, w);
        if let Ok(c) = data.neg_log_posterior_value(&t) {
            if best.as_ref().is_none_or(|(bc, _)| c < *bc) {
                best = Some((c, t));
            }
        }
    }
    vec![best.map(|(_, t)| t).unwrap_or_else(|| default_theta(data.dims, 1.0))]
}

/// A starting point: every inverse squared lengthscale `w`, unit signal variance, noise 1e-3.
pub fn default_theta(dims: usize, w: f64) -> Vec<f64> {
    let mut t = vec![w.ln(); dims];
    t.push(0.0);
    t.push((1e-3f64).ln());
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn toy(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>, Vec<bool>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let xs: Vec<Vec<f64>> = (0..n).map(|_| vec![rng.random::<f64>(), rng.random::<f64>(), rng.random_range(0..3) as f64]).collect();
        let ys: Vec<f64> = xs.iter().map(|x| (6.0 * x[0]).sin() + x[1] * x[1] + 0.3 * x[2]).collect();
        let mean = ys.iter().sum::<f64>() / n as f64;
        (xs, ys.iter().map(|y| y - mean).collect(), vec![false, false, true])
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (xs, ys, cat) = toy(25, 3);
        let data = FitData::new(&xs, &ys, &cat);
        let theta = vec![0.7, -0.4, 1.1, 0.2, (0.05f64).ln()];
        let (c, g) = data.neg_log_posterior(&theta).unwrap();
        assert!((c - data.neg_log_posterior_value(&theta).unwrap()).abs() < 1e-10);
        for k in 0..theta.len() {
            let h = 1e-5;
            let mut tp = theta.clone();
            tp[k] += h;
            let mut tm = theta.clone();
            tm[k] -= h;
            let fd = (data.neg_log_posterior(&tp).unwrap().0 - data.neg_log_posterior(&tm).unwrap().0) / (2.0 * h);
            assert!((fd - g[k]).abs() < 1e-5 * (1.0 + fd.abs()), "θ[{k}]: analytic {} vs fd {fd}", g[k]);
        }
    }

    #[test]
    fn fit_improves_on_its_start_and_finds_the_relevant_dimension() {
        let (xs, ys, cat) = toy(30, 5);
        let data = FitData::new(&xs, &ys, &cat);
        let start = default_theta(3, 1.0);
        let start_cost = data.neg_log_posterior(&start).unwrap().0;
        let (p, _) = fit(&data, &[start], 60);
        let end_cost = data.neg_log_posterior(&p.to_theta()).unwrap().0;
        assert!(end_cost < start_cost - 1.0, "{end_cost} vs {start_cost}");
        // sin(6 x0) varies much faster than x1²: x0 needs the shorter lengthscale.
        assert!(p.inv_sq_lengthscales[0] > p.inv_sq_lengthscales[1], "{p:?}");
    }
}
