//! `kind = "synthetic"`: evaluates a built-in benchmark function in-process, with optional
//! Gaussian noise drawn from the trial's own seeded stream.
//!
//! With a learning curve (`[objective] steps = N`, opt-in) a trial also runs step by step and
//! reports an intermediate value at each step `1..=T`, so pruners can be tried on it:
//! - `sft-like` runs `N` steps per epoch (`T = N · epochs`); its value after `t` steps is the
//!   function at the fractional epoch `epochs · t / T` (so it falls, and rises again for
//!   trials that overfit), plus a bias that makes too-high learning rates look better early
//!   and too-low ones worse, plus noise that fades as the trial ends;
//! - the other functions run `T = N` steps and approach their value exponentially.
//!
//! The last step reports exactly the trial's final value (the function's value plus the
//! configured noise, from the same stream as without a curve), so a curve changes nothing
//! about what a trial ends with. `step_time` sleeps that long per step, like a real trial.
//! A prune verdict at the last step is ignored: the work is done, and the trial completes.

use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution as _, Normal};

use super::synthetic::sft_like;
use super::SyntheticFunction;
use crate::sampler::trial_rng;
use crate::scheduler::{CancelToken, Decision, Reporter, TrialAssignment, TrialRunner};
use crate::space::ParamSet;
use crate::trial::Outcome;

/// A per-step learning curve for synthetic trials.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curve {
    /// Steps per epoch for `sft-like`; total steps for the other functions. At least 1.
    pub steps: u32,
    /// Sleep per step.
    pub step_time: Duration,
}

#[derive(Debug, Clone)]
pub struct SyntheticRunner {
    pub function: SyntheticFunction,
    pub noise: f64,
    pub seed: u64,
    pub curve: Option<Curve>,
}

impl SyntheticRunner {
    /// How many steps a trial with these parameters runs under `curve`.
    pub fn total_steps(&self, curve: &Curve, params: &ParamSet) -> i64 {
        let per = i64::from(curve.steps.max(1));
        match self.function {
            SyntheticFunction::SftLike => {
                let epochs = params.get("epochs").and_then(|v| v.as_f64()).unwrap_or(1.0).round().max(1.0) as i64;
                per * epochs
            }
            _ => per,
        }
    }

    /// The learning curve of one trial: `(step, value)` for steps `1..=T`, ending at `final_value`.
    pub fn curve_values(&self, curve: &Curve, a: &TrialAssignment, clean: f64, final_value: f64) -> Vec<(i64, f64)> {
        let total = self.total_steps(curve, &a.params);
        let mut rng = trial_rng(self.seed ^ 20011, a.number);
        let step_noise = Normal::new(0.0, 0.02).ok();
        // A per-trial speed of convergence, for the functions without an epoch structure.
        let speed = 2.0 + 2.0 * rng.random::<f64>();
        let amplitude = 0.5 * (1.0 + clean.abs());
        let get = |name: &str| a.params.get(name).and_then(|v| v.as_f64());
        (1..=total)
            .map(|t| {
                if t == total {
                    return (t, final_value);
                }
                let frac = t as f64 / total as f64;
                let eps = step_noise.map(|n| n.sample(&mut rng)).unwrap_or(0.0) * (1.0 - frac);
                let drift = (final_value - clean) * frac;
                let shape = match (self.function, get("learning_rate"), get("batch_size"), get("epochs"), get("freeze_layers")) {
                    (SyntheticFunction::SftLike, Some(lr), Some(bs), Some(ep), Some(fr)) => {
                        let ep = ep.round().max(1.0);
                        let d = lr.log10() - (-4.3 + (bs / 16.0).log10());
                        sft_like(lr, bs, ep * frac, fr) - 0.15 * (1.0 - frac) * d.tanh()
                    }
                    _ => {
                        let e = |x: f64| (-speed * x).exp();
                        clean + amplitude * (e(frac) - e(1.0)) / (1.0 - e(1.0))
                    }
                };
                (t, shape + drift + eps)
            })
            .collect()
    }
}

impl TrialRunner for SyntheticRunner {
    fn run(&self, a: &TrialAssignment, reporter: &mut dyn Reporter, cancel: &CancelToken) -> Outcome {
        let clean = match self.function.evaluate(&a.params) {
            Ok(v) => v,
            Err(e) => return Outcome::Failed { reason: e.to_string() },
        };
        let mut value = clean;
        if self.noise > 0.0 {
            if let Ok(n) = Normal::new(0.0, self.noise) {
                value += n.sample(&mut trial_rng(self.seed ^ 10007, a.number));
            }
        }
        if let Some(curve) = &self.curve {
            let none = serde_json::Map::new();
            let values = self.curve_values(curve, a, clean, value);
            let last = values.last().map(|v| v.0);
            for (step, v) in values {
                if !curve.step_time.is_zero() {
                    std::thread::sleep(curve.step_time);
                }
                if cancel.is_cancelled() {
                    return Outcome::Failed { reason: "cancelled".into() };
                }
                // A prune at the last step comes too late to save anything: the trial is done.
                if reporter.intermediate(step, v, &none) == Decision::Prune && Some(step) != last {
                    return Outcome::Pruned { step, value: Some(v) };
                }
            }
        }
        let mut m = serde_json::Map::new();
        m.insert("noise_free_value".into(), serde_json::Value::from(clean));
        reporter.metrics(&m);
        Outcome::Complete { value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::RecordingReporter;
    use crate::space::ParamValue;

    fn sft(number: u64, lr: f64, epochs: i64) -> TrialAssignment {
        let params: ParamSet = [
            ("learning_rate".to_string(), ParamValue::Float(lr)),
            ("batch_size".to_string(), ParamValue::Int(16)),
            ("epochs".to_string(), ParamValue::Int(epochs)),
            ("freeze_layers".to_string(), ParamValue::Int(4)),
        ]
        .into_iter()
        .collect();
        TrialAssignment {
            number,
            params,
            device: "cpu".into(),
            retry_of: None,
            artifacts_dir: "/nonexistent".into(),
            resume_from: Vec::new(),
        }
    }

    fn runner(curve: Option<Curve>, noise: f64) -> SyntheticRunner {
        SyntheticRunner { function: SyntheticFunction::SftLike, noise, seed: 7, curve }
    }

    #[test]
    fn a_curve_ends_exactly_at_the_value_without_one() {
        let curve = Curve { steps: 5, step_time: Duration::ZERO };
        for (n, lr, ep) in [(0, 5e-5, 4), (1, 1e-3, 10), (2, 1e-6, 1)] {
            let a = sft(n, lr, ep);
            let plain = runner(None, 0.1).run(&a, &mut RecordingReporter::default(), &CancelToken::new());
            let mut rec = RecordingReporter::default();
            let curved = runner(Some(curve), 0.1).run(&a, &mut rec, &CancelToken::new());
            assert_eq!(plain, curved);
            assert_eq!(rec.steps().len() as i64, 5 * ep);
            assert_eq!(rec.steps().iter().map(|v| v.0).collect::<Vec<_>>(), (1..=5 * ep).collect::<Vec<_>>());
            let Outcome::Complete { value } = curved else { panic!("{curved:?}") };
            assert_eq!(rec.steps().last().map(|v| v.1), Some(value));
        }
    }

    #[test]
    fn the_curve_falls_and_good_trials_look_good_early() {
        let curve = Curve { steps: 10, step_time: Duration::ZERO };
        let r = runner(Some(curve), 0.0);
        let mut good = RecordingReporter::default();
        r.run(&sft(0, 5e-5, 4), &mut good, &CancelToken::new());
        let mut bad = RecordingReporter::default();
        r.run(&sft(1, 1e-6, 4), &mut bad, &CancelToken::new());
        assert!(good.steps()[0].1 > good.steps()[39].1 + 0.5, "falls: {:?}", good.steps());
        // At one epoch the good learning rate is already ahead.
        assert!(good.steps()[9].1 < bad.steps()[9].1, "{} vs {}", good.steps()[9].1, bad.steps()[9].1);
    }

    #[test]
    fn pruning_stops_the_trial_with_its_last_value() {
        let curve = Curve { steps: 3, step_time: Duration::ZERO };
        let mut rec = RecordingReporter { prune_at: Some(4), ..Default::default() };
        let out = runner(Some(curve), 0.0).run(&sft(0, 5e-5, 4), &mut rec, &CancelToken::new());
        assert_eq!(out, Outcome::Pruned { step: 4, value: Some(rec.steps()[3].1) });
        assert_eq!(rec.steps().len(), 4);
        let mut rec = RecordingReporter { prune_at: Some(12), ..Default::default() };
        let out = runner(Some(curve), 0.0).run(&sft(0, 5e-5, 4), &mut rec, &CancelToken::new());
        assert!(matches!(out, Outcome::Complete { .. }), "a prune at the last step is too late: {out:?}");
        let other = SyntheticRunner { function: SyntheticFunction::Branin, noise: 0.0, seed: 1, curve: Some(curve) };
        assert_eq!(other.total_steps(&curve, &ParamSet::new()), 3);
    }
}
