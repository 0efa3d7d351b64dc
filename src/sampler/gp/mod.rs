//! Bayesian optimisation with a Gaussian process (`kind = "gp"`).
//!
//! Each suggestion is a pure function of the space, the history and the seed:
//! 1. the first `n_startup` trials (default 5 plus one per discrete parameter) are points of a seed-shifted
//!    Sobol sequence indexed by the trial number, so parallel workers never get the same one;
//! 2. afterwards the values of completed trials (minimised through
//!    [`crate::trial::Direction::to_minimize`]) are standardised, or log-warped and
//!    standardised ([`warp`]), and a GP with an ARD Matérn-5/2 kernel (Hamming distance for
//!    categoricals) is fitted by MAP ([`fit`]) under both transforms; the transform under
//!    which the raw values are most likely is kept;
//! 3. the posterior the acquisition sees puts its constant prior mean at the worst observed
//!    value (see `pessimistic`), and running trials enter it as clamped Kriging-believer
//!    fantasies and as local penalties (González et al., AISTATS 2016) that keep the next
//!    suggestion out of the ball around each of them, so parallel suggestions differ;
//! 4. log expected improvement of the next observation over the incumbent (the lowest
//!    posterior mean at a completed trial; the best observed value while trials are
//!    running) is maximised over the space ([`optimize`]):
//!    Sobol and local candidates, then L-BFGS on numeric coordinates and exhaustive moves
//!    on discrete ones. For a partly queued trial the given coordinates are held
//!    ([`encoding::DimKind::Fixed`]) and the incumbent is the lowest posterior mean of the
//!    completed trials moved onto them.
//!
//! Cost is kept in check without hidden state: hyperparameters are refitted at every one of
//! the first 20 observations and then every `⌊n/10⌋`-th ([`fit_anchor`]), on at most 64 of
//! them; between refits the fit of the anchor's data is reused. The fit and the Cholesky
//! factor of the last call are remembered keyed by a hash of exactly their inputs, so the
//! memo only saves time: a resumed study (a fresh sampler) computes the same numbers, and a
//! factor for one more observation is extended by one row (O(n²)) instead of refactorised.
//!
//! Failed trials feed a second model, of which settings fail ([`optimize::Feasibility`]):
//! the acquisition is weighted by the probability of success, so a region that keeps
//! failing stops being proposed while failures at random change little.
//! Pruned trials with a reported value count as observations whose value is that last
//! report but at least the median of completed values: a pruned
//! trial was stopped for looking bad, and its early value must neither pose as an incumbent
//! nor be thrown away (the region it probed is known to be mediocre). Pruned trials never
//! define the incumbent.

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
use self::linalg::Cholesky;
use self::optimize::{Acquisition, Feasibility, LocalPenalties, SearchEffort};
use self::posterior::Posterior;
use self::warp::{median, transform, transform_each, OutputWarp};
use super::{splitmix64, Sampler, SamplerError, SuggestContext};
use crate::space::{ParamSet, SearchSpace};
use crate::trial::TrialState;

/// The last point an argmin problem evaluated, with its cost and gradient: the solver asks
/// for the cost and the gradient at one point separately, and both come from one pass.
pub(crate) type LastEvaluation = std::cell::RefCell<Option<(Vec<f64>, f64, Vec<f64>)>>;

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
    /// Improvement is measured against the lowest posterior mean at a completed trial
    /// (`true`, the default) rather than against the best observed value (which is still
    /// used while trials are running).
    pub incumbent_mean: bool,
}

impl Default for GpOptions {
    fn default() -> Self {
        GpOptions {
            n_startup: None,
            max_fit_points: 64,
            fit_iters: 40,
            effort: SearchEffort { n_sobol: 512, n_local: 128, n_polish: 3, polish_iters: 20 },
            screen_budget: 1.5e7,
            incumbent_mean: true,
        }
    }
}

/// The default number of start-up trials: 5, plus one per discrete parameter (categorical,
/// int or stepped float). A continuous coordinate is informed by trials at nearby values; a
/// category (or an int level under the short lengthscales a fit often gives them) mostly by
/// trials at that very value, so discrete parameters need the start-up design to cover more
/// of their levels before the model can rank them. Numeric dimensions add nothing: on the
/// benchmark functions 5 start-up trials did as well as `2·dims` over seeds 0–29 on the
/// continuous ones (`docs/sampler-benchmark.md`).
pub fn default_n_startup(kinds: &[encoding::DimKind]) -> usize {
    5 + kinds.iter().filter(|k| !matches!(k, encoding::DimKind::Continuous)).count()
}

/// Whether the hyperparameters are refitted when the history holds `a` observations: at
/// every one of the first 20, then every `⌊a/10⌋`-th, so their amortised cost falls as the
/// history grows. Between two such points the last fit is reused.
pub fn is_fit_anchor(a: usize) -> bool {
    a <= 20 || a.is_multiple_of(a / 10)
}

/// The observation count whose fit serves a history of `n` observations.
pub fn fit_anchor(n: usize) -> usize {
    (1..=n).rev().find(|&a| is_fit_anchor(a)).unwrap_or(n)
}

/// Remembers recent hyperparameter fits, keyed by a hash of exactly the data they were
/// fitted to, and the last Cholesky factor, keyed by a hash of its hyperparameters and
/// points. Both are pure functions of their keys, so the memo changes no suggestion: a
/// resumed study or another worker recomputes the same values; it only saves the time.
#[derive(Default)]
struct Memo {
    fits: Mutex<VecDeque<(u64, OutputWarp, KernelParams)>>,
    factor: Mutex<Option<(u64, Cholesky)>>,
}

const FIT_MEMO_LEN: usize = 16;

impl Memo {
    fn get_fit(&self, key: u64) -> Option<(OutputWarp, KernelParams)> {
        let memo = self.fits.lock().ok()?;
        memo.iter().find(|(k, _, _)| *k == key).map(|(_, w, t)| (*w, t.clone()))
    }

    fn put_fit(&self, key: u64, warp: OutputWarp, params: KernelParams) {
        if let Ok(mut memo) = self.fits.lock() {
            if memo.len() >= FIT_MEMO_LEN {
                memo.pop_front();
            }
            memo.push_back((key, warp, params));
        }
    }

    /// The remembered factor if it factors a leading block of `xs` under `params`.
    fn factor_prefix(&self, params: &KernelParams, is_cat: &[bool], xs: &[Vec<f64>]) -> Option<Cholesky> {
        let memo = self.factor.lock().ok()?;
        let (key, chol) = memo.as_ref()?;
        let d = chol.dim();
        (d <= xs.len() && factor_key(params, is_cat, &xs[..d]) == *key).then(|| chol.clone())
    }

    fn put_factor(&self, key: u64, chol: &Cholesky) {
        if let Ok(mut memo) = self.factor.lock() {
            *memo = Some((key, chol.clone()));
        }
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

/// A hash of the hyperparameters and points a kernel matrix is built from.
fn factor_key(params: &KernelParams, is_cat: &[bool], xs: &[Vec<f64>]) -> u64 {
    let mut h = DefaultHasher::new();
    xs.len().hash(&mut h);
    is_cat.hash(&mut h);
    for v in params.to_theta() {
        v.to_bits().hash(&mut h);
    }
    for x in xs {
        for c in x {
            c.to_bits().hash(&mut h);
        }
    }
    h.finish()
}

/// The Gaussian-process sampler.
#[derive(Debug, Clone, Default)]
pub struct GpSampler {
    options: GpOptions,
    memo: Memo,
}

impl GpSampler {
    pub fn new(options: GpOptions) -> Self {
        GpSampler { options, memo: Memo::default() }
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
    /// Trials that failed by their own verdict (for the model of which settings fail).
    failed: Vec<Vec<f64>>,
}

impl Observations {
    fn collect(ctx: &SuggestContext<'_>, enc: &Encoding) -> Observations {
        let mut obs = Observations { points: vec![], pending: vec![], taken: vec![], pending_sets: vec![], failed: vec![] };
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
                // Only a trial's own verdict says something about its settings; a trial that
                // was interrupted, killed or timed out says nothing (and is retried).
                (TrialState::Fail, _) if !t.error.as_deref().is_some_and(crate::trial::is_external_failure) => obs.failed.push(x),
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

/// Values shifted so the GP's zero prior mean sits at the worst observed value: regions far
/// from every trial are expected to be as bad as the worst trial so far, not average. With a
/// mean-level prior, log EI keeps spending trials on corners and edges of the box, where the
/// variance is largest (a fifth of all trials on hartmann6 in our runs); with this one the
/// benchmark regret at 50 trials improved on all four functions.
fn pessimistic(ys: &[f64]) -> Vec<f64> {
    let worst = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if worst.is_finite() {
        ys.iter().map(|y| y - worst).collect()
    } else {
        ys.to_vec()
    }
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
        let dims = enc.dims();
        let mut shift_rng = ChaCha8Rng::seed_from_u64(splitmix64(ctx.seed ^ 0x50b0_1d5e_ed00_0001));
        let shift: Vec<f64> = (0..dims).map(|_| shift_rng.random::<f64>()).collect();
        // Skipping through the sequence costs O(index); far beyond any start-up phase the index
        // wraps (points then repeat only up to the duplicate check below).
        let start = usize::try_from(ctx.number % (1 << 20)).unwrap_or(0);
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
        if let Some(found) = self.memo.get_fit(key) {
            return found;
        }
        let dims = is_cat.len();
        let mut best: Option<(f64, OutputWarp, KernelParams)> = None;
        for warp in [OutputWarp::Identity, OutputWarp::Log] {
            let (z, log_jac) = transform_each(&raw, warp);
            let sub_z: Vec<f64> = subset.iter().map(|&i| z[i]).collect();
            let data = FitData::new(&sub_x, &sub_z, is_cat);
            let (params, cost) = fit::fit(&data, &fit::screened_start(&data), self.options.fit_iters);
            let score = -cost + subset.iter().map(|&i| log_jac[i]).sum::<f64>();
            if best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, warp, params));
            }
        }
        let (warp, params) = match best {
            Some((_, w, p)) => (w, p),
            None => (OutputWarp::Identity, KernelParams::from_theta(&default_theta(dims, 1.0))),
        };
        self.memo.put_fit(key, warp, params.clone());
        (warp, params)
    }

    /// The GP conditioned on the observations `(xs, ys)` and on the pending trials, with the
    /// incumbent (the lowest posterior mean at a completed point).
    fn conditioned(
        &self,
        obs: &Observations,
        xs: &[Vec<f64>],
        ys: &[f64],
        params: &KernelParams,
        is_cat: &[bool],
    ) -> Option<(Posterior, f64)> {
        let prefix = self.memo.factor_prefix(params, is_cat, xs);
        let posterior = Posterior::new_reusing(xs.to_vec(), ys, params.clone(), is_cat, prefix.as_ref())
            .or_else(|_| Posterior::new(xs.to_vec(), ys, KernelParams { noise_var: 1e-2, ..params.clone() }, is_cat))
            .ok()?;
        self.memo.put_factor(factor_key(posterior.params(), is_cat, xs), posterior.factor());
        let best = (0..xs.len()).filter(|&i| obs.points[i].complete).map(|i| posterior.predict_mean(&xs[i])).fold(f64::INFINITY, f64::min);
        if obs.pending.is_empty() {
            return Some((posterior, best));
        }
        // Kriging believer: running trials are believed to return their posterior mean, but
        // never better than the incumbent (believing a running trial improves on the best
        // would make the next suggestion chase that fantasy; in the `--parallel 4` benchmark
        // this clamp cut regret at 50 trials about 4x on branin and noise-free sft-like).
        // The fantasy collapses the variance around a running trial, so the next suggestion
        // goes elsewhere.
        let mut fx = xs.to_vec();
        let mut fy = ys.to_vec();
        for x in &obs.pending {
            fx.push(x.clone());
            fy.push(posterior.predict_mean(x).max(best));
        }
        let posterior = Posterior::new_reusing(fx, &fy, posterior.params().clone(), is_cat, Some(posterior.factor())).ok()?;
        Some((posterior, best))
    }

    /// Candidates ranked by log EI under `posterior`, best first: the expected improvement of
    /// the next *observation* (latent variance plus noise variance) over `best`, the lowest
    /// posterior mean at a completed trial. With noise this also values re-measuring near
    /// the optimum, which plain EI on the latent function does not (over seeds 0–29 this cut
    /// regret at 50 trials on every row but rosenbrock4, by up to 10× on noise-free
    /// sft-like). Against the best *observed* value, a lucky noisy observation sets a bar
    /// the model does not believe in, and EI then undervalues the region around it.
    #[allow(clippy::too_many_arguments)]
    fn rank(
        &self,
        ctx: &SuggestContext<'_>,
        enc: &Encoding,
        posterior: &Posterior,
        best: f64,
        near: &[Vec<f64>],
        penalties: &LocalPenalties,
        feasibility: Option<&Feasibility>,
    ) -> Vec<(f64, Vec<f64>)> {
        let acq = Acquisition { posterior, best, extra_var: posterior.params().noise_var, penalties, feasibility };
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
        optimize::maximize(&acq, enc, near, &effort, &mut rng)
    }

    /// The model-based suggestion; `None` when the model cannot be built (the caller falls
    /// back to a start-up point).
    fn model_point(&self, ctx: &SuggestContext<'_>, enc: &Encoding, obs: &Observations) -> Option<ParamSet> {
        let is_cat = enc.is_categorical();
        let xs: Vec<Vec<f64>> = obs.points.iter().map(|p| p.x.clone()).collect();
        let (warp, params) = self.hyperparameters(obs, is_cat);
        let centred = transform(&raw_values(&obs.points), warp).0;
        let mut order: Vec<usize> = (0..xs.len()).filter(|&i| obs.points[i].complete).collect();
        order.sort_by(|&a, &b| centred[a].total_cmp(&centred[b]));
        let near: Vec<Vec<f64>> = order.iter().take(5).map(|&i| xs[i].clone()).collect();

        // The posterior's constant prior mean sits at the worst observed value (see
        // `pessimistic`); the hyperparameters were fitted with it at the mean.
        let ys = pessimistic(&centred);
        let (posterior, best_mean) = self.conditioned(obs, &xs, &ys, &params, is_cat)?;
        // The incumbent EI improves on: the lowest posterior mean at a completed trial (the
        // model's estimate of the best value found). While trials are running it stays the
        // best observed value: the fantasies are clamped at the lowest posterior mean, and
        // with the bar at that same level `--parallel 4` regret at 50 trials got worse
        // (rosenbrock4 5.2 → 7.3, noisy sft-like 0.0039 → 0.0138, seeds 0–9).
        let best_observed = order.first().map_or(f64::INFINITY, |&i| ys[i]);
        let incumbent =
            if self.options.incumbent_mean && best_mean.is_finite() && obs.pending.is_empty() { best_mean } else { best_observed };
        // With parameters held (a partly queued trial), the bar is the best the model expects
        // inside that slice of the space: each completed point moved onto the held values.
        // Against the study's incumbent, a held choice that cannot beat it (SGD where AdamW
        // leads) would make EI chase variance instead of that choice's own optimum.
        let incumbent = if enc.has_fixed() {
            (0..xs.len())
                .filter(|&i| obs.points[i].complete)
                .map(|i| posterior.predict_mean(&enc.held(&xs[i])))
                .fold(f64::INFINITY, f64::min)
        } else {
            incumbent
        };
        let penalties = local_penalties(&posterior, &xs, &obs.pending, best_observed, is_cat);
        let feasibility = feasibility(obs, &params, is_cat);
        let ranked = self.rank(ctx, enc, &posterior, incumbent, &near, &penalties, feasibility.as_ref());
        let sets: Vec<ParamSet> = ranked.iter().map(|(_, x)| enc.decode(x)).collect();
        // Prefer a point the study has not seen; never one that is running now.
        sets.iter()
            .find(|s| !obs.taken.iter().any(|t| SearchSpace::same_point(t, s)))
            .or_else(|| sets.iter().find(|s| !obs.pending_sets.iter().any(|t| SearchSpace::same_point(t, s))))
            .cloned()
    }
}

/// The model of which settings fail, when some trial has failed and some has not: the
/// classifier of [`Feasibility`] over the successful (complete or pruned) and failed
/// trials, with the objective's lengthscales.
fn feasibility(obs: &Observations, params: &KernelParams, is_cat: &[bool]) -> Option<Feasibility> {
    if obs.failed.is_empty() || obs.points.is_empty() {
        return None;
    }
    let xs: Vec<Vec<f64>> = obs.points.iter().map(|p| p.x.clone()).chain(obs.failed.iter().cloned()).collect();
    let labels: Vec<f64> = obs.points.iter().map(|_| 1.0).chain(obs.failed.iter().map(|_| -1.0)).collect();
    let prior = labels.iter().sum::<f64>() / labels.len() as f64;
    let centred: Vec<f64> = labels.iter().map(|l| l - prior).collect();
    let kernel = KernelParams { inv_sq_lengthscales: params.inv_sq_lengthscales.clone(), signal_var: 1.0, noise_var: Feasibility::NOISE };
    let posterior = Posterior::new(xs, &centred, kernel, is_cat).ok()?;
    Some(Feasibility { posterior, prior, failed: obs.failed.clone(), is_cat: is_cat.to_vec() })
}

/// The local penalties of the running trials `pending` (none when nothing runs) under the
/// posterior that already holds their Kriging-believer fantasies: each running trial rules
/// out the ball around it where, by a Lipschitz bound, nothing can beat `best` (the best
/// observed value) if it returns its fantasy. The bound is the largest gradient norm of the
/// posterior mean at the observed and running points. The fantasy alone only shrinks the
/// variance near a running trial, and EI near the incumbent stays high there, so four
/// parallel suggestions crowded one spot; with the balls, `--parallel 4` regret at 50
/// trials over seeds 0–29 fell on hartmann6 (0.0169 → 0.0075), rosenbrock4 (9.54 → 5.03),
/// noisy sft-like (0.0051 → 0.0046) and sft-like (3.0e-8 → 7.8e-9), with branin level
/// (3.2e-6 → 3.4e-6). Sequential suggestions are unchanged.
fn local_penalties(posterior: &Posterior, xs: &[Vec<f64>], pending: &[Vec<f64>], best: f64, is_cat: &[bool]) -> LocalPenalties {
    if pending.is_empty() {
        return LocalPenalties::default();
    }
    let dims: Vec<usize> = (0..is_cat.len()).filter(|&d| !is_cat[d]).collect();
    let lipschitz = xs
        .iter()
        .chain(pending)
        .map(|x| posterior.predict_with_grad(x, &dims).d_mean.iter().map(|g| g * g).sum::<f64>().sqrt())
        .fold(1e-7, f64::max);
    let centres = pending
        .iter()
        .map(|c| {
            let (m, v) = posterior.predict(c);
            (c.clone(), m, v.max(1e-12).sqrt())
        })
        .collect();
    LocalPenalties { centres, lipschitz, best, is_cat: is_cat.to_vec() }
}

impl Sampler for GpSampler {
    fn name(&self) -> &'static str {
        "gp"
    }

    fn suggest(&self, ctx: &SuggestContext<'_>) -> Result<Option<ParamSet>, SamplerError> {
        let enc = Encoding::new(ctx.space);
        let obs = Observations::collect(ctx, &enc);
        let n_startup = self.options.n_startup.unwrap_or_else(|| default_n_startup(enc.kinds()));
        let seen = obs.points.len() + obs.pending.len();
        if seen < n_startup || obs.n_complete() < 2 {
            return Ok(Some(self.startup_point(ctx, &enc, &obs)));
        }
        let held;
        let search = match ctx.fixed {
            Some(fixed) => {
                held = enc.fixing(fixed);
                &held
            }
            None => &enc,
        };
        match self.model_point(ctx, search, &obs) {
            Some(p) => Ok(Some(p)),
            None => Ok(Some(self.startup_point(ctx, &enc, &obs))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::suggest_around;
    use crate::space::{Distribution, Param, ParamValue};
    use crate::trial::{Direction, TrialRecord};

    fn float(name: &str, low: f64, high: f64) -> Param {
        Param { name: name.into(), dist: Distribution::Float { low, high, log: false, step: None } }
    }

    fn num(p: &ParamSet, k: &str) -> f64 {
        p[k].as_f64().unwrap_or(f64::NAN)
    }

    /// Runs `trials` trials of `f`, where `None` means the trial failed; returns the history.
    fn run_trials(
        sampler: &GpSampler,
        space: &SearchSpace,
        f: &dyn Fn(&ParamSet) -> Option<f64>,
        trials: u64,
        seed: u64,
        direction: Direction,
    ) -> Vec<TrialRecord> {
        let mut history = Vec::new();
        for number in 0..trials {
            let ctx = SuggestContext { space, direction, history: &history, number, seed, fixed: None };
            let p = sampler.suggest(&ctx).unwrap().unwrap();
            assert!(space.validate(&p).is_ok(), "invalid point {p:?}");
            let record = match f(&p) {
                Some(v) => TrialRecord::new(number, TrialState::Complete, p, Some(v)),
                None => TrialRecord::new(number, TrialState::Fail, p, None),
            };
            history.push(record);
        }
        history
    }

    /// Runs `trials` trials of `f`, all of which complete; returns the history.
    fn run_study(
        sampler: &GpSampler,
        space: &SearchSpace,
        f: &dyn Fn(&ParamSet) -> f64,
        trials: u64,
        seed: u64,
        direction: Direction,
    ) -> Vec<TrialRecord> {
        run_trials(sampler, space, &|p| Some(f(p)), trials, seed, direction)
    }

    #[test]
    fn one_dimensional_quadratic_is_solved_in_15_trials() {
        // f(x) = (x − 0.7)² + 1 on [−2, 3]: optimum 1 at x = 0.7.
        let space = SearchSpace::new(vec![float("x", -2.0, 3.0)]).unwrap();
        let f = |p: &ParamSet| (num(p, "x") - 0.7).powi(2) + 1.0;
        for seed in [0, 1, 2] {
            let h = run_study(&GpSampler::default(), &space, &f, 15, seed, Direction::Minimize);
            let best = h.iter().filter_map(|t| t.value).fold(f64::INFINITY, f64::min);
            assert!(best <= 1.0 * 1.01, "seed {seed}: best {best}");
        }
    }

    #[test]
    fn a_partly_queued_point_gets_the_best_rest_for_its_held_values() {
        // f(x, c) = (x − t_c)² with t = 0.2 for "sgd" and 0.8 for "adamw": both choices
        // reach 0, each at its own x (an optimiser and its learning rate). Holding the
        // choice must bring the x of that choice's valley, not the other's.
        let space = SearchSpace::new(vec![
            float("x", 0.0, 1.0),
            Param {
                name: "c".into(),
                dist: Distribution::Categorical { choices: vec![ParamValue::Str("sgd".into()), ParamValue::Str("adamw".into())] },
            },
        ])
        .unwrap();
        let target = |c: &ParamValue| if *c == ParamValue::Str("sgd".into()) { 0.2 } else { 0.8 };
        let f = |p: &ParamSet| (num(p, "x") - target(&p["c"])).powi(2);
        for seed in [3, 4] {
            let h = run_study(&GpSampler::default(), &space, &f, 16, seed, Direction::Minimize);
            for choice in ["sgd", "adamw"] {
                let held: ParamSet = [("c".to_string(), ParamValue::Str(choice.into()))].into_iter().collect();
                let ctx =
                    SuggestContext { space: &space, direction: Direction::Minimize, history: &h, number: 16, seed, fixed: Some(&held) };
                let p = suggest_around(&GpSampler::default(), &ctx).unwrap().unwrap();
                assert_eq!(p["c"], held["c"], "{p:?}");
                assert!((num(&p, "x") - target(&p["c"])).abs() < 0.1, "seed {seed}, {choice} held: {p:?}");
            }
        }
    }

    #[test]
    fn maximisation_follows_the_direction() {
        let space = SearchSpace::new(vec![float("x", -2.0, 3.0)]).unwrap();
        let f = |p: &ParamSet| -(num(p, "x") - 0.7).powi(2);
        let h = run_study(&GpSampler::default(), &space, &f, 15, 4, Direction::Maximize);
        let best = h.iter().filter_map(|t| t.value).fold(f64::NEG_INFINITY, f64::max);
        assert!(best > -0.01, "best {best}");
    }

    #[test]
    fn same_history_and_seed_give_the_same_suggestion_without_any_memo() {
        // A resumed study (fresh sampler, same history) proposes exactly what the
        // uninterrupted one (warm memo) did.
        let space = SearchSpace::new(vec![float("a", 0.0, 1.0), float("b", -1.0, 1.0)]).unwrap();
        let f = |p: &ParamSet| (3.0 * num(p, "a")).sin() + num(p, "b").powi(2);
        let warm = GpSampler::default();
        let h = run_study(&warm, &space, &f, 26, 9, Direction::Minimize);
        for n in [8usize, 15, 22, 25] {
            let ctx =
                SuggestContext { space: &space, direction: Direction::Minimize, history: &h[..n], number: n as u64, seed: 9, fixed: None };
            let fresh = GpSampler::default().suggest(&ctx).unwrap().unwrap();
            assert_eq!(fresh, h[n].params, "trial {n}");
        }
    }

    #[test]
    fn categorical_choices_are_always_valid() {
        let space = SearchSpace::new(vec![
            float("x", 0.0, 1.0),
            Param {
                name: "kind".into(),
                dist: Distribution::Categorical {
                    choices: vec![ParamValue::Str("a".into()), ParamValue::Str("b".into()), ParamValue::Str("c".into())],
                },
            },
        ])
        .unwrap();
        let f = |p: &ParamSet| {
            let off = match &p["kind"] {
                ParamValue::Str(s) if s == "b" => 0.0,
                ParamValue::Str(s) if s == "a" => 0.5,
                _ => 1.0,
            };
            (num(p, "x") - 0.3).powi(2) + off
        };
        let h = run_study(&GpSampler::default(), &space, &f, 25, 3, Direction::Minimize);
        let mut b_count = 0;
        for t in &h {
            match &t.params["kind"] {
                ParamValue::Str(s) if ["a", "b", "c"].contains(&s.as_str()) => b_count += (s == "b") as usize,
                other => panic!("invalid category {other:?}"),
            }
        }
        assert!(b_count >= 8, "the model should favour the best category, got {b_count} of 25");
    }

    /// lr in [1e-5, 1] (log), optimizer in {adamw, sgd}, momentum only for SGD, amsgrad only
    /// for AdamW; and a function where SGD at lr 0.03 with momentum 0.9 is best (0), AdamW
    /// at lr 3e-4 reaches 0.3, and amsgrad costs 0.05.
    fn optimizer_space_and_function() -> (SearchSpace, impl Fn(&ParamSet) -> f64) {
        let s = |v: &str| ParamValue::Str(v.into());
        let space = SearchSpace::with_conditions(
            vec![
                Param { name: "lr".into(), dist: Distribution::Float { low: 1e-5, high: 1.0, log: true, step: None } },
                Param { name: "optimizer".into(), dist: Distribution::Categorical { choices: vec![s("adamw"), s("sgd")] } },
                float("momentum", 0.0, 0.99),
                Param { name: "amsgrad".into(), dist: Distribution::Categorical { choices: vec![s("yes"), s("no")] } },
            ],
            vec![
                crate::space::Condition { param: "momentum".into(), parent: "optimizer".into(), values: vec![s("sgd")] },
                crate::space::Condition { param: "amsgrad".into(), parent: "optimizer".into(), values: vec![s("adamw")] },
            ],
        )
        .unwrap();
        let f = move |p: &ParamSet| {
            let lr = num(p, "lr").log10();
            if p["optimizer"] == s("sgd") {
                (lr + 1.5).powi(2) + 4.0 * (num(p, "momentum") - 0.9).powi(2)
            } else {
                (lr + 3.5).powi(2) + 0.3 + if p["amsgrad"] == s("yes") { 0.05 } else { 0.0 }
            }
        };
        (space, f)
    }

    #[test]
    fn a_conditional_space_gets_valid_points_and_its_optimum() {
        // `run_trials` asserts that every suggestion holds exactly the parameters that apply.
        let (space, f) = optimizer_space_and_function();
        for seed in [0, 1, 2] {
            let h = run_study(&GpSampler::default(), &space, &f, 30, seed, Direction::Minimize);
            let best = h.iter().filter(|t| t.value.is_some()).min_by(|a, b| a.value.unwrap().total_cmp(&b.value.unwrap())).unwrap();
            assert!(best.value.unwrap() < 0.01, "seed {seed}: best {:?}", best);
            assert_eq!(best.params["optimizer"], ParamValue::Str("sgd".into()));
        }
        // A point's encoding puts what does not apply at the constants, and decodes back.
        let enc = Encoding::new(&space);
        let first = &run_study(&GpSampler::default(), &space, &f, 1, 0, Direction::Minimize)[0].params;
        let x = enc.encode(first).unwrap();
        assert!(SearchSpace::same_point(&enc.decode(&x), first));
        // SGD has no amsgrad (coordinate 3), AdamW no momentum (coordinate 2).
        let off = if first["optimizer"] == ParamValue::Str("sgd".into()) { 3 } else { 2 };
        assert!(x[off] == encoding::INACTIVE_NUMERIC || x[off] == encoding::INACTIVE_CHOICE, "{x:?}");
    }

    #[test]
    fn a_held_parent_gets_its_children_and_pending_conditional_points_differ() {
        let (space, f) = optimizer_space_and_function();
        let mut h = run_study(&GpSampler::default(), &space, &f, 14, 5, Direction::Minimize);
        // A queued trial holding the optimizer: the sampler completes it with the children
        // that optimizer has, whatever it would have proposed itself.
        for choice in ["sgd", "adamw"] {
            let held: ParamSet = [("optimizer".to_string(), ParamValue::Str(choice.into()))].into_iter().collect();
            let ctx =
                SuggestContext { space: &space, direction: Direction::Minimize, history: &h, number: 14, seed: 5, fixed: Some(&held) };
            let p = suggest_around(&GpSampler::default(), &ctx).unwrap().unwrap();
            assert!(space.validate(&p).is_ok() && p["optimizer"] == held["optimizer"], "{choice}: {p:?}");
        }
        let sampler = GpSampler::default();
        for _ in 0..4 {
            let number = h.len() as u64;
            let ctx = SuggestContext { space: &space, direction: Direction::Minimize, history: &h, number, seed: 5, fixed: None };
            let p = sampler.suggest(&ctx).unwrap().unwrap();
            assert!(space.validate(&p).is_ok(), "{p:?}");
            assert!(!h[14..].iter().any(|t| t.params == p), "a running trial's point again: {p:?}");
            h.push(TrialRecord::new(number, TrialState::Running, p, None));
        }
    }

    #[test]
    fn pending_trials_get_distinct_suggestions() {
        let space = SearchSpace::new(vec![float("a", 0.0, 1.0), float("b", 0.0, 1.0)]).unwrap();
        let f = |p: &ParamSet| (num(p, "a") - 0.2).powi(2) + (num(p, "b") - 0.6).powi(2);
        let mut h = run_study(&GpSampler::default(), &space, &f, 12, 5, Direction::Minimize);
        let sampler = GpSampler::default();
        for _ in 0..4 {
            let number = h.len() as u64;
            let ctx = SuggestContext { space: &space, direction: Direction::Minimize, history: &h, number, seed: 5, fixed: None };
            let p = sampler.suggest(&ctx).unwrap().unwrap();
            h.push(TrialRecord::new(number, TrialState::Running, p, None));
        }
        let pending: Vec<&ParamSet> = h[12..].iter().map(|t| &t.params).collect();
        for i in 0..pending.len() {
            for j in 0..i {
                let d = (num(pending[i], "a") - num(pending[j], "a")).hypot(num(pending[i], "b") - num(pending[j], "b"));
                // Near the optimum of a noise-free bowl a batch legitimately clusters (all four
                // exploit the same minimum), so this asks for distinct points, not far-apart
                // ones.
                assert!(d > 1e-4, "suggestions {i} and {j} nearly coincide: {:?} {:?}", pending[i], pending[j]);
            }
        }
    }

    fn run_with_failures(space: &SearchSpace, f: &dyn Fn(&ParamSet) -> Option<f64>, trials: u64, seed: u64) -> Vec<TrialRecord> {
        run_trials(&GpSampler::default(), space, f, trials, seed, Direction::Minimize)
    }

    #[test]
    fn a_region_that_always_fails_stops_being_proposed() {
        // A third of the box always fails (x > 2/3, like a learning rate that always
        // diverges); the optimum (0.3, 0.5) is elsewhere. Ignoring failures, the model never
        // learns anything there, its variance stays high and EI keeps returning to it.
        let space = SearchSpace::new(vec![float("x", 0.0, 1.0), float("y", 0.0, 1.0)]).unwrap();
        let f = |p: &ParamSet| (num(p, "x") <= 2.0 / 3.0).then(|| (num(p, "x") - 0.3).powi(2) + (num(p, "y") - 0.5).powi(2));
        // Ignoring failures, 222 of these 280 model-guided trials failed (24–32 a seed) and
        // the best value of seed 7 was 0.034; with the model of failures, 33 failed.
        let mut failed = 0;
        for seed in 0..8 {
            let h = run_with_failures(&space, &f, 40, seed);
            failed += h[5..].iter().filter(|t| t.state == TrialState::Fail).count();
            let best = h.iter().filter_map(|t| t.value).fold(f64::INFINITY, f64::min);
            assert!(best < 1e-6, "seed {seed}: best {best}");
        }
        assert!(failed <= 60, "{failed} of 280 model-guided trials failed");
    }

    #[test]
    fn a_setting_that_failed_is_not_proposed_again() {
        // A bowl at (0.3, 0.7) failing for x > 0.9. Once the incumbent has converged, EI at a
        // high-variance corner wins; before the failed settings ruled out a ball around
        // themselves, seed 2 proposed the failed corner (1, 1) three times in a row (one
        // failure moves the classifier by less than a nat).
        let space = SearchSpace::new(vec![float("x", 0.0, 1.0), float("y", 0.0, 1.0)]).unwrap();
        let f = |p: &ParamSet| (num(p, "x") <= 0.9).then(|| (num(p, "x") - 0.3).powi(2) + (num(p, "y") - 0.7).powi(2));
        let mut failed_in_all = 0;
        for seed in 0..6 {
            let h = run_with_failures(&space, &f, 24, seed);
            let failed: Vec<(f64, f64)> =
                h.iter().filter(|t| t.state == TrialState::Fail).map(|t| (num(&t.params, "x"), num(&t.params, "y"))).collect();
            failed_in_all += failed.len();
            for (i, a) in failed.iter().enumerate() {
                for b in &failed[..i] {
                    let d = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
                    assert!(d > 0.01, "seed {seed}: failed settings {b:?} and {a:?} are {d:.1e} apart");
                }
            }
        }
        assert!(failed_in_all <= 15, "{failed_in_all} failed trials");
    }

    #[test]
    fn an_optimum_on_the_edge_of_failure_is_approached() {
        // The unconstrained optimum (x = 0.9) lies where every trial fails (x > 0.6); the
        // best feasible point is (0.6, 0.5) with value 0.09. Trials probe the edge from
        // both sides.
        let space = SearchSpace::new(vec![float("x", 0.0, 1.0), float("y", 0.0, 1.0)]).unwrap();
        let f = |p: &ParamSet| (num(p, "x") <= 0.6).then(|| (num(p, "x") - 0.9).powi(2) + (num(p, "y") - 0.5).powi(2));
        // Ignoring failures the best values were 0.111, 0.138, 0.161 and 0.180.
        for seed in 0..4 {
            let h = run_with_failures(&space, &f, 30, seed);
            let best = h.iter().filter_map(|t| t.value).fold(f64::INFINITY, f64::min);
            assert!(best < 0.105, "seed {seed}: best {best} (feasible optimum 0.09)");
        }
    }

    #[test]
    fn failed_trials_are_collected_and_pruned_ones_floored() {
        let space = SearchSpace::new(vec![float("x", 0.0, 1.0)]).unwrap();
        let enc = Encoding::new(&space);
        let p = |x: f64| -> ParamSet { [("x".to_string(), ParamValue::Float(x))].into_iter().collect() };
        let history = vec![
            TrialRecord::new(0, TrialState::Complete, p(0.1), Some(3.0)),
            TrialRecord::new(1, TrialState::Fail, p(0.2), None),
            TrialRecord { error: Some("interrupted (its owner is gone)".into()), ..TrialRecord::new(7, TrialState::Fail, p(0.6), None) },
            TrialRecord { error: Some("diverged: loss is NaN at step 3".into()), ..TrialRecord::new(8, TrialState::Fail, p(0.7), None) },
            TrialRecord::new(2, TrialState::Pruned, p(0.3), Some(0.5)),
            TrialRecord::new(3, TrialState::Complete, p(0.4), Some(1.0)),
            TrialRecord::new(4, TrialState::Running, p(0.5), None),
        ];
        let ctx = SuggestContext { space: &space, direction: Direction::Minimize, history: &history, number: 9, seed: 0, fixed: None };
        let obs = Observations::collect(&ctx, &enc);
        assert_eq!(obs.points.len(), 3);
        assert_eq!(obs.pending.len(), 1);
        // The interrupted trial says nothing about its settings; the diverged one does.
        assert_eq!(obs.failed, vec![vec![0.2], vec![0.7]]);
        // Median of completed values is 2.0, so the pruned 0.5 counts as 2.0.
        assert_eq!(raw_values(&obs.points), vec![3.0, 2.0, 1.0]);
    }

    #[test]
    fn odd_spaces_and_bad_values_never_break_it() {
        // Only discrete parameters (nothing for L-BFGS), a wide int (not enumerated), a log
        // int, a stepped float; values that are NaN, infinite or all equal.
        let space = SearchSpace::new(vec![
            Param { name: "c".into(), dist: Distribution::Categorical { choices: vec![ParamValue::Bool(true), ParamValue::Bool(false)] } },
            Param { name: "wide".into(), dist: Distribution::Int { low: -1000, high: 1000, step: 1, log: false } },
            Param { name: "logi".into(), dist: Distribution::Int { low: 1, high: 4096, step: 1, log: true } },
            Param { name: "st".into(), dist: Distribution::Float { low: 0.0, high: 1.0, log: false, step: Some(0.25) } },
        ])
        .unwrap();
        let only_discrete = SearchSpace::new(vec![
            Param { name: "c".into(), dist: Distribution::Categorical { choices: vec![ParamValue::Int(1), ParamValue::Int(2)] } },
            Param { name: "i".into(), dist: Distribution::Int { low: 0, high: 2, step: 1, log: false } },
        ])
        .unwrap();
        type ValueOf<'a> = &'a dyn Fn(u64, &ParamSet) -> f64;
        let values: [ValueOf; 3] = [
            &|n, _| {
                if n % 3 == 0 {
                    f64::NAN
                } else if n % 5 == 0 {
                    f64::INFINITY
                } else {
                    n as f64
                }
            },
            &|_, _| 1.0,
            &|_, p| p.values().filter_map(|v| v.as_f64()).sum::<f64>(),
        ];
        for (space, trials) in [(&space, 20u64), (&only_discrete, 8)] {
            for f in values {
                let sampler = GpSampler::default();
                let mut history: Vec<TrialRecord> = Vec::new();
                for number in 0..trials {
                    let ctx = SuggestContext { space, direction: Direction::Minimize, history: &history, number, seed: 1, fixed: None };
                    let p = sampler.suggest(&ctx).unwrap().unwrap();
                    assert!(space.validate(&p).is_ok(), "invalid point {p:?}");
                    let v = f(number, &p);
                    history.push(TrialRecord::new(number, TrialState::Complete, p, Some(v)));
                }
                // The 6-point discrete space is fully explored before any repeat.
                if space.grid_size(1) == 6 {
                    for i in 0..6 {
                        for j in 0..i {
                            assert!(!SearchSpace::same_point(&history[i].params, &history[j].params));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fit_anchors_thin_out() {
        assert_eq!(fit_anchor(17), 17);
        assert_eq!(fit_anchor(57), 55);
        assert_eq!(fit_anchor(104), 100);
        // The first 20, then every ⌊a/10⌋-th: 82 refits in 500 observations (counted by hand).
        let anchors = (1..=500).filter(|&a| is_fit_anchor(a)).count();
        assert_eq!(anchors, 82);
    }
}
