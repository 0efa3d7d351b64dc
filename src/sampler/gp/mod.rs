//! Bayesian optimisation with a Gaussian process (`kind = "gp"`).
//!
//! Each suggestion is a pure function of the space, the history and the seed:
//! 1. the first `n_startup` trials are points of a seed-shifted Sobol sequence (indexed by the
//!    trial number, so parallel workers never get the same one);
//! 2. afterwards completed trials (minimised values, see [`Direction::to_minimize`]) are
//!    standardised and a GP with an ARD Matérn-5/2 kernel is fitted by MAP ([`fit`]);
//! 3. trials still running are added as Kriging-believer fantasies (their posterior mean), so
//!    the acquisition around them collapses and parallel suggestions differ;
//! 4. log expected improvement is maximised over the space ([`optimize`]).
//!
//! Failed trials are ignored. Pruned trials with a reported value count as observations
//! whose value is that last report but at least the median of completed values: a pruned
//! trial was stopped for looking bad, and its early value must neither pose as an incumbent
//! nor be thrown away (the region it probed is known to be mediocre).

pub mod acquisition;
pub mod encoding;
pub mod fit;
pub mod kernel;
pub mod linalg;
pub mod optimize;
pub mod posterior;
pub mod quasi;
pub mod warp;

use std::collections::hash_map::DefaultHasher;
use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use self::encoding::Encoding;
use self::fit::{default_theta, FitData};
use self::kernel::KernelParams;
use self::optimize::{Acquisition, SearchEffort};
use self::posterior::Posterior;
use self::warp::{median, transform, transform_each, OutputWarp};
use super::{splitmix64, Sampler, SamplerError, SuggestContext};
use crate::space::{ParamSet, SearchSpace};
use crate::trial::TrialState;

/// Settings of the GP sampler.
#[derive(Debug, Clone)]
pub struct GpOptions {
    /// Quasi-random trials before the GP takes over; `None`: [`default_n_startup`].
    pub n_startup: Option<usize>,
    /// At most this many observations are used to fit the kernel hyperparameters (the
    /// best half and an even spread of the rest); the posterior always uses all of them.
    pub max_fit_points: usize,
    /// L-BFGS iterations per hyperparameter start.
    pub fit_iters: u64,
    /// Effort spent maximising the acquisition.
    pub effort: SearchEffort,
    /// Budget of the candidate screening in multiply-adds (`candidates · n²/2`): with many
    /// observations fewer Sobol candidates are screened, so a suggestion stays cheap.
    pub screen_budget: f64,
}

impl Default for GpOptions {
    fn default() -> Self {
        GpOptions {
            n_startup: None,
            max_fit_points: 100,
            fit_iters: 50,
            effort: SearchEffort { n_sobol: 512, n_local: 128, n_polish: 3, polish_iters: 25 },
            screen_budget: 1.5e7,
        }
    }
}

/// The default number of start-up trials for a space of `dims` parameters.
pub fn default_n_startup(dims: usize) -> usize {
    (2 * dims).max(5)
}

/// Whether the hyperparameters are refitted when the history holds `a` observations: at
/// every one of the first 20, then every `⌊a/10⌋`-th, so their amortised cost falls as the
/// history grows. Between two such points the last fit is reused.
pub fn is_fit_anchor(a: usize) -> bool {
    a <= 20 || a % (a / 10) == 0
}

/// The observation count whose fit serves a history of `n` observations.
pub fn fit_anchor(n: usize) -> usize {
    (1..=n).rev().find(|&a| is_fit_anchor(a)).unwrap_or(n)
}

/// Remembers recent hyperparameter fits keyed by a hash of exactly the data they were fitted
/// to. A fit is a pure function of that data, so the memo changes no suggestion: a resumed
/// study or another worker recomputes the same fit; it only saves the time to redo it.
#[derive(Default)]
struct FitMemo(Mutex<VecDeque<(u64, OutputWarp, Vec<f64>)>>);

const FIT_MEMO_LEN: usize = 16;

impl FitMemo {
    fn get(&self, key: u64) -> Option<(OutputWarp, Vec<f64>)> {
        let memo = self.0.lock().ok()?;
        memo.iter().find(|(k, _, _)| *k == key).map(|(_, w, t)| (*w, t.clone()))
    }

    fn put(&self, key: u64, warp: OutputWarp, theta: Vec<f64>) {
        if let Ok(mut memo) = self.0.lock() {
            if memo.len() >= FIT_MEMO_LEN {
                memo.pop_front();
            }
            memo.push_back((key, warp, theta));
        }
    }
}

impl Clone for FitMemo {
    fn clone(&self) -> Self {
        FitMemo::default()
    }
}

impl std::fmt::Debug for FitMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FitMemo")
    }
}

/// The Gaussian-process sampler.
#[derive(Debug, Clone, Default)]
pub struct GpSampler {
    options: GpOptions,
    memo: FitMemo,
}

impl GpSampler {
    pub fn new(options: GpOptions) -> Self {
        GpSampler { options, memo: FitMemo::default() }
    }

    pub fn options(&self) -> &GpOptions {
        &self.options
    }
}

/// One observation the model learns from.
struct Observed {
    x: Vec<f64>,
    /// Minimised value (for a pruned trial: its last report, before the median floor).
    y: f64,
    complete: bool,
}

/// The usable part of a history, encoded, in trial-number order.
struct Observations {
    points: Vec<Observed>,
    /// Running or waiting trials with parameters.
    pending: Vec<Vec<f64>>,
    /// Every parameter set the study holds, to avoid proposing one again.
    taken: Vec<ParamSet>,
    /// Parameter sets of pending trials (must never be proposed again).
    pending_sets: Vec<ParamSet>,
}

impl Observations {
    fn collect(ctx: &SuggestContext<'_>, enc: &Encoding) -> Observations {
        let mut obs = Observations { points: vec![], pending: vec![], taken: vec![], pending_sets: vec![] };
        for t in ctx.history.iter().filter(|t| t.number != ctx.number) {
            let Some(x) = enc.encode(&t.params) else { continue };
            let value = t.value.map(|v| ctx.direction.to_minimize(v)).filter(|v| v.is_finite());
            match (t.state, value) {
                (TrialState::Complete, Some(y)) => obs.points.push(Observed { x, y, complete: true }),
                (TrialState::Pruned, Some(y)) => obs.points.push(Observed { x, y, complete: false }),
                (TrialState::Running | TrialState::Waiting, _) => {
                    obs.pending.push(x);
                    obs.pending_sets.push(t.params.clone());
                }
                _ => {}
            }
            if t.state != TrialState::Fail {
                obs.taken.push(t.params.clone());
            }
        }
        obs
    }

    fn n_complete(&self) -> usize {
        self.points.iter().filter(|p| p.complete).count()
    }
}

/// The values the model learns from, before the output transform: pruned values floored
/// at the median of the completed ones.
fn raw_values(points: &[Observed]) -> Vec<f64> {
    let complete: Vec<f64> = points.iter().filter(|p| p.complete).map(|p| p.y).collect();
    let floor = median(&complete);
    points.iter().map(|p| if p.complete { p.y } else { p.y.max(floor) }).collect()
}

/// Indices of at most `cap` observations for the hyperparameter fit: all when there are
/// few, else the best `cap/2` and an even spread (by position) of the others.
fn fit_subset(ys: &[f64], cap: usize) -> Vec<usize> {
    let n = ys.len();
    if n <= cap {
        return (0..n).collect();
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| ys[a].total_cmp(&ys[b]).then(a.cmp(&b)));
    let best = cap / 2;
    let mut chosen: Vec<usize> = order[..best].to_vec();
    let mut rest: Vec<usize> = order[best..].to_vec();
    rest.sort_unstable();
    let want = cap - best;
    for k in 0..want {
        chosen.push(rest[k * rest.len() / want]);
    }
    chosen.sort_unstable();
    chosen
}

/// A hash of exactly the data and settings a hyperparameter fit sees.
fn fit_key(xs: &[Vec<f64>], ys: &[f64], is_cat: &[bool], iters: u64) -> u64 {
    let mut h = DefaultHasher::new();
    xs.len().hash(&mut h);
    is_cat.hash(&mut h);
    iters.hash(&mut h);
    for (x, y) in xs.iter().zip(ys) {
        for c in x {
            c.to_bits().hash(&mut h);
        }
        y.to_bits().hash(&mut h);
    }
    h.finish()
}

impl GpSampler {
    /// A start-up point: Sobol point number `ctx.number` under a seed-derived shift,
    /// skipping ahead past points the study already holds.
    fn startup_point(&self, ctx: &SuggestContext<'_>, enc: &Encoding, obs: &Observations) -> ParamSet {
        if std::env::var("GP_RANDSTART").is_ok() { return super::RandomSampler::draw(ctx.space, &mut ctx.rng()); }
        let dims = enc.dims();
        let mut shift_rng = ChaCha8Rng::seed_from_u64(splitmix64(ctx.seed ^ 0x50b0_1d5e_ed00_0001));
        let shift: Vec<f64> = (0..dims).map(|_| shift_rng.random::<f64>()).collect();
        let start = usize::try_from(ctx.number).unwrap_or(usize::MAX / 2).min(1 << 30);
        let mut fallback = ctx.rng();
        let mut first = None;
        for k in 0..16 {
            let u = quasi::shifted_sobol(dims, start + k * 7919, 1, &shift, &mut fallback);
            let Some(u) = u.into_iter().next() else { break };
            let set = enc.decode(&enc.from_unit_cube(&u));
            if !obs.taken.iter().any(|t| SearchSpace::same_point(t, &set)) {
                return set;
            }
            first.get_or_insert(set);
        }
        first.unwrap_or_else(|| super::RandomSampler::draw(ctx.space, &mut ctx.rng()))
    }

    /// Output transform and kernel hyperparameters for a history: the MAP fit to the first
    /// `fit_anchor(n)` observations (at most `max_fit_points` of them), from two fixed
    /// starting points, under each output transform; the transform under which the raw
    /// values are most likely wins.
    fn hyperparameters(&self, obs: &Observations, is_cat: &[bool]) -> (OutputWarp, KernelParams) {
        let anchor = fit_anchor(obs.points.len());
        let head = &obs.points[..anchor];
        let raw = raw_values(head);
        let subset = fit_subset(&raw, self.options.max_fit_points);
        let sub_x: Vec<Vec<f64>> = subset.iter().map(|&i| head[i].x.clone()).collect();
        let sub_raw: Vec<f64> = subset.iter().map(|&i| raw[i]).collect();
        let key = fit_key(&sub_x, &sub_raw, is_cat, self.options.fit_iters);
        if let Some((warp, theta)) = self.memo.get(key) {
            return (warp, KernelParams::from_theta(&theta));
        }
        let dims = is_cat.len();
        let starts = [default_theta(dims, 1.0), default_theta(dims, 16.0)];
        let mut best: Option<(f64, OutputWarp, KernelParams)> = None;
        for warp in [OutputWarp::Identity, OutputWarp::Log] {
            let (z, log_jac) = transform_each(&raw, warp);
            let sub_z: Vec<f64> = subset.iter().map(|&i| z[i]).collect();
            let data = FitData::new(&sub_x, &sub_z, is_cat);
            let (params, cost) = fit::fit(&data, &starts, self.options.fit_iters);
            let score = -cost + subset.iter().map(|&i| log_jac[i]).sum::<f64>();
            if std::env::var("GP_DEBUG2").is_ok() { eprintln!("n={} {warp:?} cost={cost:.2} score={score:.2} noise={:.1e}", raw.len(), params.noise_var); }
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, warp, params));
            }
        }
        let (warp, params) = match best {
            Some((_, w, p)) => (w, p),
            None => (OutputWarp::Identity, KernelParams::from_theta(&default_theta(dims, 1.0))),
        };
        self.memo.put(key, warp, params.to_theta());
        (warp, params)
    }

    /// The model-based suggestion; `None` when the model cannot be built (the caller falls
    /// back to a start-up point).
    fn model_point(&self, ctx: &SuggestContext<'_>, enc: &Encoding, obs: &Observations) -> Option<ParamSet> {
        let is_cat = enc.is_categorical();
        let xs: Vec<Vec<f64>> = obs.points.iter().map(|p| p.x.clone()).collect();
        let (warp, params) = self.hyperparameters(obs, is_cat);
        let ys = transform(&raw_values(&obs.points), warp).0;
        let params_dbg = params.clone();

        let posterior = Posterior::new(xs.clone(), &ys, params.clone(), is_cat)
            .or_else(|_| Posterior::new(xs.clone(), &ys, KernelParams { noise_var: 1e-2, ..params.clone() }, is_cat))
            .ok()?;
        let complete: Vec<usize> = (0..xs.len()).filter(|&i| obs.points[i].complete).collect();
        // The incumbent: the lowest posterior mean at a completed point.
        let best = complete.iter().map(|&i| posterior.predict(&xs[i]).0).fold(f64::INFINITY, f64::min);
        let posterior = if obs.pending.is_empty() {
            posterior
        } else {
            // Kriging believer: running trials return their posterior mean.
            let mut fx = xs.clone();
            let mut fy = ys.clone();
            for x in &obs.pending {
                fx.push(x.clone());
                fy.push(posterior.predict(x).0);
            }
            Posterior::new(fx, &fy, params, is_cat).ok()?
        };

        let mut order = complete.clone();
        order.sort_by(|&a, &b| ys[a].total_cmp(&ys[b]));
        let near: Vec<Vec<f64>> = order.iter().take(5).map(|&i| xs[i].clone()).collect();
        let acq = Acquisition { posterior: &posterior, best };
        let n = posterior.len() as f64;
        let mut effort = self.options.effort.clone();
        let affordable = (self.options.screen_budget / (0.5 * n * n).max(1.0)) as usize;
        let total = effort.n_sobol + effort.n_local;
        if affordable < total {
            let keep = affordable.max(64) as f64 / total as f64;
            effort.n_sobol = ((effort.n_sobol as f64 * keep) as usize).max(32);
            effort.n_local = ((effort.n_local as f64 * keep) as usize).max(32);
        }
        let mut rng = ctx.rng();
        let ranked = optimize::maximize(&acq, enc, &near, &effort, &mut rng);
        let sets: Vec<ParamSet> = ranked.iter().map(|(_, x)| enc.decode(x)).collect();
        if std::env::var("GP_DEBUG").is_ok() {
            let (m, v) = posterior.predict(&ranked[0].1);
            eprintln!("n={} w={:?} s2={:.3} noise={:.1e} | best={best:.3} acq={:.3} mean={m:.3} sd={:.3} x={:?}", xs.len(), params_dbg.inv_sq_lengthscales.iter().map(|w| (w * 100.0).round() / 100.0).collect::<Vec<_>>(), params_dbg.signal_var, params_dbg.noise_var, ranked[0].0, v.sqrt(), ranked[0].1.iter().map(|c| (c * 1000.0).round() / 1000.0).collect::<Vec<_>>());
        }
        // Prefer a point the study has not seen; never one that is running now.
        sets.iter()
            .find(|s| !obs.taken.iter().any(|t| SearchSpace::same_point(t, s)))
            .or_else(|| sets.iter().find(|s| !obs.pending_sets.iter().any(|t| SearchSpace::same_point(t, s))))
            .cloned()
    }
}

impl Sampler for GpSampler {
    fn name(&self) -> &'static str {
        "gp"
    }

    fn suggest(&self, ctx: &SuggestContext<'_>) -> Result<Option<ParamSet>, SamplerError> {
        let enc = Encoding::new(ctx.space);
        let obs = Observations::collect(ctx, &enc);
        let n_startup = self.options.n_startup.unwrap_or_else(|| default_n_startup(enc.dims()));
        let seen = obs.points.len() + obs.pending.len();
        if seen < n_startup || obs.n_complete() < 2 {
            return Ok(Some(self.startup_point(ctx, &enc, &obs)));
        }
        match self.model_point(ctx, &enc, &obs) {
            Some(p) => Ok(Some(p)),
            None => Ok(Some(self.startup_point(ctx, &enc, &obs))),
        }
    }
}
