//! Maximising the acquisition over the search space: many quasi-random candidates (a
//! shifted Sobol set) plus perturbations of the best observed points are screened in one
//! batched prediction; the best few are polished by alternating argmin's L-BFGS over the
//! numeric coordinates with exhaustive moves over the discrete ones (every choice of a
//! categorical, every value of a small int range), so categories and ints are always exact
//! values, never rounded ordered indices.
//!
//! L-BFGS here has no bounds, so a numeric coordinate `x ∈ [0, 1]` is optimised through a
//! reflection of the real line onto [0, 1] (a triangle wave with slope ±1), which keeps a
//! gradient on the bounds (a smooth map such as `(1 − cos πz)/2` has none there, and a
//! coordinate that touches a bound would stay stuck on it).

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use rand::Rng;
use rand_distr::StandardNormal;

use super::acquisition::{ln_norm_cdf, ln_norm_pdf, log_ei};
use super::encoding::{DimKind, Encoding};
use super::kernel::sq_distance;
use super::posterior::Posterior;
use super::quasi::shifted_sobol;
use super::LastEvaluation;

/// How hard to search.
#[derive(Debug, Clone)]
pub struct SearchEffort {
    /// Sobol candidates screened.
    pub n_sobol: usize,
    /// Perturbations of the best observed points screened.
    pub n_local: usize,
    /// Best screened candidates that get polished.
    pub n_polish: usize,
    /// L-BFGS iterations per polishing round.
    pub polish_iters: u64,
}

/// The acquisition of one point: log EI of the posterior against `best`.
pub struct Acquisition<'a> {
    pub posterior: &'a Posterior,
    pub best: f64,
    /// Variance added to the latent variance (the noise of an observation, when the
    /// improvement is measured on observations rather than on the latent function).
    pub extra_var: f64,
    /// Local penalties of running trials (empty when none run).
    pub penalties: &'a LocalPenalties,
    /// The model of which settings fail (`None` when none has failed).
    pub feasibility: Option<&'a Feasibility>,
}

/// Which settings fail: a least-squares GP classifier (labels +1 for a trial that
/// returned a value, −1 for a failed one, prior mean at their average) under the
/// objective's kernel with unit signal variance and noise variance [`Feasibility::NOISE`],
/// read as `P(success) = Φ(κ μ / √(1 + σ²))`. The acquisition gains `ln P(success)`
/// (constrained EI, as in Gelbart et al., UAI 2014). A region that keeps failing (a
/// learning rate that always diverges, a batch that never fits in memory) gets `μ ≈ −1` and
/// loses several nats; failures scattered at random leave `μ` near its prior and change
/// little. Optuna's GP sampler ignores failures and keeps proposing such regions. The noise
/// and sharpness were chosen on three cases (a third of the box failing, an optimum on the
/// edge of failure, 20% and 40% of trials failing at random; `docs/sampler-benchmark.md`).
///
/// Each failed setting also rules out a small ball around itself ([`Feasibility::ball`]):
/// a setting that failed by its own verdict fails again (a fine-tuning trial is
/// deterministic under its seed, and a crash or kill is retried by the scheduler, not
/// counted here), and one failure moves the classifier by less than a nat, so EI at a
/// high-variance corner proposed the very same failed setting three times in a row.
#[derive(Debug, Clone)]
pub struct Feasibility {
    pub posterior: Posterior,
    pub prior: f64,
    /// The settings that failed (encoded), the centres of the balls.
    pub failed: Vec<Vec<f64>>,
    /// Which dimensions are categorical (a differing choice is distance 1).
    pub is_cat: Vec<bool>,
}

impl Feasibility {
    /// Label noise variance (unit signal variance).
    pub const NOISE: f64 = 1.0;
    /// Sharpness κ of the probit.
    pub const SHARPNESS: f64 = 4.0;

    /// The probit's argument `κ μ / √(1 + σ²)` where the classifier's posterior (before its
    /// prior) has mean `mean` and variance `var`.
    fn probit_arg(&self, mean: f64, var: f64) -> f64 {
        Self::SHARPNESS * (self.prior + mean) / (1.0 + var).sqrt()
    }

    /// `ln P(success)` where the classifier's posterior (before its prior) has mean `mean`
    /// and variance `var`.
    pub fn ln_success(&self, mean: f64, var: f64) -> f64 {
        ln_norm_cdf(self.probit_arg(mean, var))
    }

    /// Radius (unit cube) of the ball a failed setting rules out. Measured on 2-D cases
    /// through `bench sampler --study` (20 seeds, 30 trials; docs/sampler-benchmark.md):
    /// 0.05 and 0.1 cut failures further where a region fails but cost 3× and 10× in regret
    /// where 20% of settings fail at random; 0.02 keeps that case near no ball at all and
    /// still never proposes a failed setting again.
    pub const BALL_RADIUS: f64 = 0.02;

    /// `Σ ln(1 − exp(−d²/(2r²)))` over the failed settings at distance `d` from `x`
    /// (`r` = [`Feasibility::BALL_RADIUS`]), and its derivative along `dims`: −∞ at a failed
    /// setting, −0.93 at distance r, −0.15 at 2r, −0.011 at 3r.
    pub fn ball(&self, x: &[f64], dims: &[usize]) -> (f64, Vec<f64>) {
        let two_r2 = 2.0 * Self::BALL_RADIUS * Self::BALL_RADIUS;
        let mut total = 0.0;
        let mut grad = vec![0.0; dims.len()];
        for c in &self.failed {
            let q = sq_distance(x, c, &self.is_cat) / two_r2;
            if q > 40.0 {
                continue; // ln(1 − e^−40) is below f64's resolution of 0
            }
            total += (-(-q).exp_m1()).ln();
            // d/dx ln(1 − e^−q) = (x − c) · 2/(2r²) / (e^q − 1)
            let slope = 2.0 / two_r2 / q.exp_m1();
            for (k, &dim) in dims.iter().enumerate() {
                grad[k] += slope * (x[dim] - c[dim]);
            }
        }
        (total, grad)
    }

    /// `ln P(success)` plus the balls of the failed settings at `x`, and its derivative
    /// along `dims`.
    pub fn at(&self, x: &[f64], dims: &[usize]) -> (f64, Vec<f64>) {
        let p = self.posterior.predict_with_grad(x, dims);
        let u = self.probit_arg(p.mean, p.var);
        let value = ln_norm_cdf(u);
        // du/dx = κ (μ'/s − μ var'/(2 s³)) with s = √(1 + σ²), μ the mean after the prior.
        let (mean, sd) = (self.prior + p.mean, (1.0 + p.var).sqrt());
        let slope = (ln_norm_pdf(u) - value).exp() * Self::SHARPNESS;
        let (ball, ball_grad) = self.ball(x, dims);
        let grad = (0..dims.len()).map(|j| slope * (p.d_mean[j] / sd - mean * p.d_var[j] / (2.0 * sd * sd * sd)) + ball_grad[j]).collect();
        (value + ball, grad)
    }
}

/// Local penalization of running trials (González et al., "Batch Bayesian optimization via
/// local penalization", AISTATS 2016), for minimisation: a running trial at `c` with
/// posterior mean `μ` and sd `σ` makes a point at distance `d` from it worth
/// `Φ((M + L d − μ)/σ)` of its acquisition, the probability that the minimum is not
/// ruled out there by a Lipschitz bound `L` (`M`: the best value). The acquisition gains
/// `Σ ln Φ(…)`.
#[derive(Debug, Clone, Default)]
pub struct LocalPenalties {
    pub centres: Vec<(Vec<f64>, f64, f64)>,
    pub lipschitz: f64,
    pub best: f64,
    pub is_cat: Vec<bool>,
}

impl LocalPenalties {
    /// The log penalty at `x` and its derivative along `dims`.
    pub fn at(&self, x: &[f64], dims: &[usize]) -> (f64, Vec<f64>) {
        let mut total = 0.0;
        let mut grad = vec![0.0; dims.len()];
        for (c, mean, sd) in &self.centres {
            let d = sq_distance(x, c, &self.is_cat).sqrt();
            let u = (self.best + self.lipschitz * d - mean) / sd;
            let ln_cdf = ln_norm_cdf(u);
            total += ln_cdf;
            if d > 0.0 {
                let slope = (ln_norm_pdf(u) - ln_cdf).exp() * self.lipschitz / sd / d;
                for (k, &dim) in dims.iter().enumerate() {
                    grad[k] += slope * (x[dim] - c[dim]);
                }
            }
        }
        (total, grad)
    }
}

impl Acquisition<'_> {
    pub fn value(&self, x: &[f64]) -> f64 {
        let (m, v) = self.posterior.predict(x);
        log_ei(m, v + self.extra_var, self.best).0 + self.extra(x)
    }

    pub fn values(&self, xs: &[Vec<f64>]) -> Vec<f64> {
        let feasible: Vec<f64> = match self.feasibility {
            Some(f) => f.posterior.predict_many(xs).into_iter().zip(xs).map(|((m, v), x)| f.ln_success(m, v) + f.ball(x, &[]).0).collect(),
            None => vec![0.0; xs.len()],
        };
        self.posterior
            .predict_many(xs)
            .into_iter()
            .zip(xs)
            .zip(feasible)
            .map(|(((m, v), x), f)| log_ei(m, v + self.extra_var, self.best).0 + self.penalties.at(x, &[]).0 + f)
            .collect()
    }

    /// The log terms added to log EI: local penalties and the feasibility model.
    fn extra(&self, x: &[f64]) -> f64 {
        self.penalties.at(x, &[]).0 + self.feasibility.map_or(0.0, |f| f.at(x, &[]).0)
    }
}

/// Reflects the real line onto [0, 1] (a triangle wave): identity on [0, 1], slope ±1
/// everywhere, so a coordinate sitting on a bound still has a gradient to leave it by.
fn reflect(z: f64) -> f64 {
    let t = z.rem_euclid(2.0);
    if t <= 1.0 {
        t
    } else {
        2.0 - t
    }
}

/// `d reflect / dz`.
fn reflect_slope(z: f64) -> f64 {
    if z.rem_euclid(2.0) <= 1.0 {
        1.0
    } else {
        -1.0
    }
}

/// argmin's view of polishing the numeric coordinates `dims` of `base`; remembers the last
/// evaluation because the solver asks for cost and gradient at the same point separately.
struct Polish<'a> {
    acq: &'a Acquisition<'a>,
    base: &'a [f64],
    dims: &'a [usize],
    last: LastEvaluation,
}

impl Polish<'_> {
    fn point(&self, z: &[f64]) -> Vec<f64> {
        let mut x = self.base.to_vec();
        for (k, &d) in self.dims.iter().enumerate() {
            x[d] = reflect(z[k]);
        }
        x
    }

    /// `−log EI` and its gradient in `z`.
    fn eval(&self, z: &[f64]) -> (f64, Vec<f64>) {
        if let Some((lz, c, g)) = self.last.borrow().as_ref() {
            if lz.as_slice() == z {
                return (*c, g.clone());
            }
        }
        let x = self.point(z);
        let p = self.acq.posterior.predict_with_grad(&x, self.dims);
        let (value, dm, dv) = log_ei(p.mean, p.var + self.acq.extra_var, self.acq.best);
        let (pen, pen_grad) = self.acq.penalties.at(&x, self.dims);
        let (feas, feas_grad) = self.acq.feasibility.map_or((0.0, vec![0.0; self.dims.len()]), |f| f.at(&x, self.dims));
        let value = value + pen + feas;
        let grad: Vec<f64> = (0..self.dims.len())
            .map(|k| {
                let g = -(dm * p.d_mean[k] + dv * p.d_var[k] + pen_grad[k] + feas_grad[k]) * reflect_slope(z[k]);
                if g.is_finite() {
                    g
                } else {
                    0.0
                }
            })
            .collect();
        let cost = if value.is_finite() { -value } else { f64::MAX / 4.0 };
        *self.last.borrow_mut() = Some((z.to_vec(), cost, grad.clone()));
        (cost, grad)
    }
}

impl CostFunction for Polish<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, z: &Vec<f64>) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(z).0)
    }
}

impl Gradient for Polish<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, z: &Vec<f64>) -> Result<Vec<f64>, argmin::core::Error> {
        Ok(self.eval(z).1)
    }
}

/// L-BFGS over the numeric coordinates `dims` of `x`; returns the improved point (snapped)
/// and its value, or `x` itself when nothing better is found.
fn polish_numeric(acq: &Acquisition<'_>, enc: &Encoding, x: &[f64], value: f64, dims: &[usize], iters: u64) -> (Vec<f64>, f64) {
    if dims.is_empty() {
        return (x.to_vec(), value);
    }
    let problem = Polish { acq, base: x, dims, last: RefCell::new(None) };
    let z0: Vec<f64> = dims.iter().map(|&d| x[d]).collect();
    let Ok(solver) = LBFGS::new(MoreThuenteLineSearch::new(), 5).with_tolerance_grad(1e-6) else {
        return (x.to_vec(), value);
    };
    let Ok(res) = Executor::new(problem, solver).configure(|s| s.param(z0).max_iters(iters)).run() else {
        return (x.to_vec(), value);
    };
    let Some(z) = res.state().get_best_param() else {
        return (x.to_vec(), value);
    };
    let mut cand = Polish { acq, base: x, dims, last: RefCell::new(None) }.point(z);
    enc.snap(&mut cand);
    let v = acq.value(&cand);
    if v > value {
        (cand, v)
    } else {
        (x.to_vec(), value)
    }
}

/// One sweep of exhaustive moves: each discrete coordinate in turn takes the value that
/// maximises the acquisition with the others fixed.
fn sweep_discrete(acq: &Acquisition<'_>, enc: &Encoding, x: &mut Vec<f64>, value: &mut f64) -> bool {
    let mut improved = false;
    for (d, kind) in enc.kinds().iter().enumerate() {
        let options: Vec<f64> = match kind {
            DimKind::Categorical { n, .. } => (0..*n).map(|i| i as f64).collect(),
            DimKind::Lattice { units: Some(u) } => u.clone(),
            _ => continue,
        };
        // A parameter that does not apply has nothing to move.
        if !enc.is_active_dim(d, x) {
            continue;
        }
        let current = x[d];
        let trials: Vec<Vec<f64>> = options
            .iter()
            .filter(|&&o| o != current)
            .map(|&o| {
                let mut y = x.clone();
                y[d] = o;
                // A new choice of a parent may make its children apply, or not: they start
                // where the constant or the current value puts them.
                if enc.has_conditions() {
                    enc.snap(&mut y);
                }
                y
            })
            .collect();
        for (y, v) in trials.iter().zip(acq.values(&trials)) {
            if v > *value + 1e-12 {
                *value = v;
                *x = y.clone();
                improved = true;
            }
        }
    }
    improved
}

/// Coordinates L-BFGS moves: floats, and ints too many to enumerate.
fn numeric_dims(enc: &Encoding) -> Vec<usize> {
    enc.kinds()
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k, DimKind::Continuous | DimKind::Lattice { units: None }))
        .map(|(d, _)| d)
        .collect()
}

/// Random perturbations of `centre`: numeric coordinates moved by a normal step of `scale`,
/// each discrete coordinate redrawn with probability 1/dims.
fn perturb<R: Rng>(enc: &Encoding, centre: &[f64], scale: f64, rng: &mut R) -> Vec<f64> {
    let dims = enc.dims().max(1);
    let mut x = centre.to_vec();
    for (d, kind) in enc.kinds().iter().enumerate() {
        match kind {
            DimKind::Categorical { n, .. } => {
                if rng.random::<f64>() < 1.0 / dims as f64 {
                    x[d] = rng.random_range(0..*n) as f64;
                }
            }
            _ => x[d] = reflect(x[d] + scale * rng.sample::<f64, _>(StandardNormal)),
        }
    }
    enc.snap(&mut x);
    x
}

/// At most this many extra polishing starts for the choices of nominal categoricals.
const MAX_CHOICE_STARTS: usize = 6;

/// Extra polishing starts for nominal categoricals: for every choice that no start holds,
/// the best screened candidate with that choice (best first, at most
/// [`MAX_CHOICE_STARTS`]). Each choice of a nominal parameter (an optimiser, a scheduler)
/// tends to have its own optimum in the other parameters (AdamW's best weight decay is
/// decades above Adam's), and a choice whose screened candidates all sit away from that
/// optimum never reaches the few starts taken from the top of the ranking, so the sampler
/// refines one choice and never the others. Numeric choices (batch sizes) are left to the
/// shared starts (`docs/sampler-benchmark.md` has the measurements behind both rules).
fn choice_starts(enc: &Encoding, ranked: &[(f64, Vec<f64>)], starts: &[(f64, Vec<f64>)]) -> Vec<(f64, Vec<f64>)> {
    let mut extra: Vec<(f64, Vec<f64>)> = Vec::new();
    for (d, kind) in enc.kinds().iter().enumerate() {
        let DimKind::Categorical { n, nominal: true } = kind else { continue };
        for choice in 0..*n {
            let c = choice as f64;
            if starts.iter().chain(&extra).any(|(_, x)| x[d] == c) {
                continue;
            }
            if let Some(best) = ranked.iter().find(|(_, x)| x[d] == c) {
                extra.push(best.clone());
            }
        }
    }
    extra.sort_by(|a, b| b.0.total_cmp(&a.0));
    extra.truncate(MAX_CHOICE_STARTS);
    extra
}

/// Candidate points ranked by acquisition, best first: the polished ones and the best
/// screened ones (so a caller can skip a point it must not repeat).
pub fn maximize<R: Rng>(
    acq: &Acquisition<'_>,
    enc: &Encoding,
    near: &[Vec<f64>],
    effort: &SearchEffort,
    rng: &mut R,
) -> Vec<(f64, Vec<f64>)> {
    let dims = enc.dims();
    // Held coordinates (a partly queued point) are set on the observed points too, so the
    // polishing start at the incumbent respects them.
    let held: Vec<Vec<f64>>;
    let near = if enc.has_fixed() {
        held = near.iter().map(|x| enc.held(x)).collect();
        &held[..]
    } else {
        near
    };
    let shift: Vec<f64> = (0..dims).map(|_| rng.random::<f64>()).collect();
    let mut cands: Vec<Vec<f64>> =
        shifted_sobol(dims, 0, effort.n_sobol, &shift, rng).into_iter().map(|u| enc.from_unit_cube(&u)).collect();
    if !near.is_empty() {
        for k in 0..effort.n_local {
            let centre = &near[k % near.len()];
            let scale = if k % 2 == 0 { 0.02 } else { 0.1 };
            cands.push(perturb(enc, centre, scale, rng));
        }
    }
    let values = acq.values(&cands);
    let mut ranked: Vec<(f64, Vec<f64>)> = values.into_iter().zip(cands).filter(|(v, _)| v.is_finite()).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.dedup_by(|a, b| a.1 == b.1);

    let num_dims = numeric_dims(enc);
    let mut out: Vec<(f64, Vec<f64>)> = Vec::new();
    // Polish the best screened candidates and the best observed point (EI near the
    // incumbent is where the fine-tuning steps come from).
    let mut starts: Vec<(f64, Vec<f64>)> = ranked.iter().take(effort.n_polish).cloned().collect();
    if let Some(x) = near.first() {
        starts.push((acq.value(x), x.clone()));
    }
    starts.extend(choice_starts(enc, &ranked, &starts));
    for (v0, x0) in starts.iter().filter(|(v, _)| v.is_finite()) {
        let (mut x, mut v) = (x0.clone(), *v0);
        // Alternate: numeric polish, then discrete moves; another round only when a
        // discrete coordinate changed (the numeric optimum may have moved with it).
        for _round in 0..3 {
            let active: Vec<usize>;
            let dims = if enc.has_conditions() {
                active = num_dims.iter().copied().filter(|&d| enc.is_active_dim(d, &x)).collect();
                &active
            } else {
                &num_dims
            };
            (x, v) = polish_numeric(acq, enc, &x, v, dims, effort.polish_iters);
            if !sweep_discrete(acq, enc, &mut x, &mut v) {
                break;
            }
        }
        out.push((v, x));
    }
    out.extend(ranked.into_iter().take(effort.n_polish.max(8) * 2));
    out.sort_by(|a, b| b.0.total_cmp(&a.0));
    out.dedup_by(|a, b| a.1 == b.1);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn penalties() -> LocalPenalties {
        // Two running trials: a bad one (mean 1 above the best, sd 0.01) and one as good as
        // the best; a categorical third coordinate.
        LocalPenalties {
            centres: vec![(vec![0.2, 0.3, 0.0], 1.0, 0.01), (vec![0.7, 0.7, 1.0], 0.0, 0.1)],
            lipschitz: 4.0,
            best: 0.0,
            is_cat: vec![false, false, true],
        }
    }

    fn space_with(choices: Vec<crate::space::ParamValue>) -> Encoding {
        use crate::space::{Distribution, Param, SearchSpace};
        let x = Param { name: "x".into(), dist: Distribution::Float { low: 0.0, high: 1.0, log: false, step: None } };
        let c = Param { name: "c".into(), dist: Distribution::Categorical { choices } };
        Encoding::new(&SearchSpace::new(vec![x, c]).unwrap())
    }

    #[test]
    fn every_choice_of_a_nominal_categorical_gets_a_polishing_start() {
        use crate::space::ParamValue::{Int, Str};
        let nominal = space_with(vec![Str("sgd".into()), Str("adam".into()), Str("adamw".into())]);
        // Ranked best first; the starts hold choice 0 only.
        let ranked =
            vec![(-1.0, vec![0.1, 0.0]), (-2.0, vec![0.2, 0.0]), (-3.0, vec![0.3, 2.0]), (-4.0, vec![0.4, 1.0]), (-5.0, vec![0.5, 2.0])];
        let starts = vec![ranked[0].clone(), ranked[1].clone()];
        // The best candidate of each missing choice, best first.
        assert_eq!(choice_starts(&nominal, &ranked, &starts), vec![(-3.0, vec![0.3, 2.0]), (-4.0, vec![0.4, 1.0])]);
        // A choice the starts already hold gets no other start.
        let starts = vec![ranked[0].clone(), ranked[3].clone()];
        assert_eq!(choice_starts(&nominal, &ranked, &starts), vec![(-3.0, vec![0.3, 2.0])]);
        // Numeric choices (batch sizes) are left to the shared starts.
        let numeric = space_with(vec![Int(8), Int(16), Int(32)]);
        assert!(choice_starts(&numeric, &ranked, &starts[..1]).is_empty());
        // Many choices: at most MAX_CHOICE_STARTS extra starts, the best ones.
        let many = space_with((0..20).map(|i| Str(format!("o{i}"))).collect());
        let ranked: Vec<(f64, Vec<f64>)> = (0..20).map(|i| (-(i as f64), vec![0.5, i as f64])).collect();
        let extra = choice_starts(&many, &ranked, &ranked[..1]);
        assert_eq!(extra.len(), MAX_CHOICE_STARTS);
        assert_eq!(extra.iter().map(|(_, x)| x[1]).collect::<Vec<_>>(), (1..=MAX_CHOICE_STARTS).map(|i| i as f64).collect::<Vec<_>>());
    }

    #[test]
    fn a_running_trial_rules_out_the_ball_its_bound_gives() {
        let p = penalties();
        // The bad trial's ball has radius (1 − 0)/4 = 0.25: deep inside, the point is ruled
        // out; well outside both balls nothing is lost.
        assert!(p.at(&[0.2, 0.3, 0.0], &[]).0 < -1000.0);
        assert!(p.at(&[0.2, 0.4, 0.0], &[]).0 < -100.0);
        assert!(p.at(&[0.2, 0.6, 0.0], &[]).0.abs() < 1e-3);
        // A running trial expected to match the best halves the acquisition at its own
        // point (Φ(0)) and no more.
        let at_good = p.at(&[0.7, 0.7, 1.0], &[]).0;
        assert!((at_good - 0.5f64.ln()).abs() < 1e-3, "{at_good}");
        // Another category is at distance 1 and outside both balls.
        assert!(p.at(&[0.7, 0.7, 0.0], &[]).0.abs() < 1e-3);
        // Nothing running: no penalty.
        assert_eq!(LocalPenalties::default().at(&[0.5, 0.5, 0.0], &[0, 1]), (0.0, vec![0.0, 0.0]));
    }

    /// Checks `term(x, [0, 1]).1` (the derivative along the first two coordinates) against
    /// central differences of `term(x, []).0`.
    fn assert_gradient(term: impl Fn(&[f64], &[usize]) -> (f64, Vec<f64>), x: &[f64]) {
        let (_, g) = term(x, &[0, 1]);
        for d in 0..2 {
            let h = 1e-6;
            let (mut up, mut down) = (x.to_vec(), x.to_vec());
            up[d] += h;
            down[d] -= h;
            let fd = (term(&up, &[]).0 - term(&down, &[]).0) / (2.0 * h);
            assert!((g[d] - fd).abs() < 1e-4 * (1.0 + fd.abs()), "x {x:?} dim {d}: {} vs {fd}", g[d]);
        }
    }

    #[test]
    fn penalty_gradient_matches_finite_differences() {
        let p = penalties();
        for x in [[0.35, 0.42, 0.0], [0.6, 0.75, 1.0], [0.45, 0.3, 1.0]] {
            assert_gradient(|x, dims| p.at(x, dims), &x);
        }
    }

    #[test]
    fn feasibility_is_low_where_trials_failed_and_its_gradient_is_exact() {
        use super::super::kernel::KernelParams;
        // Successes at x < 0.5, failures above.
        let xs: Vec<Vec<f64>> = [0.1, 0.2, 0.3, 0.4, 0.7, 0.8, 0.9].iter().map(|&x| vec![x, 0.5]).collect();
        let labels = [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0];
        let prior = labels.iter().sum::<f64>() / 7.0;
        let centred: Vec<f64> = labels.iter().map(|l| l - prior).collect();
        let kernel = KernelParams { inv_sq_lengthscales: vec![25.0, 25.0], signal_var: 1.0, noise_var: Feasibility::NOISE };
        let feas = Feasibility {
            posterior: Posterior::new(xs, &centred, kernel, &[false, false]).unwrap(),
            prior,
            failed: vec![],
            is_cat: vec![false, false],
        };
        let (ok, _) = feas.at(&[0.25, 0.5], &[]);
        let (bad, _) = feas.at(&[0.8, 0.5], &[]);
        assert!(ok > -0.1 && bad < -3.0, "ln P(success): {ok} among successes, {bad} among failures");
        let (m, v) = feas.posterior.predict(&[0.8, 0.5]);
        assert!((feas.ln_success(m, v) - bad).abs() < 1e-12, "the batched form agrees");
        for x in [[0.45, 0.5], [0.6, 0.3], [0.2, 0.9]] {
            assert_gradient(|x, dims| feas.at(x, dims), &x);
        }
    }

    #[test]
    fn a_failed_setting_rules_out_a_small_ball_around_itself() {
        use super::super::kernel::KernelParams;
        // One success and one failure at (0.9, 0.9, choice 1); the third dimension categorical.
        let xs = vec![vec![0.2, 0.3, 0.0], vec![0.9, 0.9, 1.0]];
        let centred = vec![1.0, -1.0];
        let kernel = KernelParams { inv_sq_lengthscales: vec![4.0, 4.0, 1.0], signal_var: 1.0, noise_var: Feasibility::NOISE };
        let is_cat = vec![false, false, true];
        let feas = Feasibility {
            posterior: Posterior::new(xs, &centred, kernel, &is_cat).unwrap(),
            prior: 0.0,
            failed: vec![vec![0.9, 0.9, 1.0]],
            is_cat,
        };
        let r = Feasibility::BALL_RADIUS;
        assert_eq!(feas.ball(&[0.9, 0.9, 1.0], &[]).0, f64::NEG_INFINITY, "the failed setting itself");
        let at = |d: f64| feas.ball(&[0.9 - d, 0.9, 1.0], &[]).0;
        assert!((at(r) - (1.0 - (-0.5f64).exp()).ln()).abs() < 1e-12, "{}", at(r));
        assert!(at(r) < -0.9 && at(2.0 * r) > -0.15 && at(3.0 * r) > -0.012 && at(0.5) == 0.0);
        // Another choice of the categorical is distance 1 away: untouched.
        assert_eq!(feas.ball(&[0.9, 0.9, 0.0], &[]).0, 0.0);
        // Without failures, nothing; the batched form agrees with the pointwise one.
        let none = Feasibility { failed: vec![], ..feas.clone() };
        assert_eq!(none.ball(&[0.9, 0.9, 1.0], &[]), (0.0, vec![]));
        let x = [0.86, 0.93, 1.0];
        let (m, v) = feas.posterior.predict(&x);
        assert!((feas.ln_success(m, v) + feas.ball(&x, &[]).0 - feas.at(&x, &[]).0).abs() < 1e-12);
        for x in [[0.87, 0.9, 1.0], [0.95, 0.8, 1.0], [0.7, 0.95, 1.0]] {
            assert_gradient(|x, dims| feas.at(x, dims), &x);
        }
    }
}
