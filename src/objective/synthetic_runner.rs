//! `kind = "synthetic"`: evaluates a built-in benchmark function in-process, with optional
//! Gaussian noise drawn from the trial's own seeded stream.

use rand_distr::{Distribution as _, Normal};

use super::SyntheticFunction;
use crate::sampler::trial_rng;
use crate::scheduler::{CancelToken, Reporter, TrialAssignment, TrialRunner};
use crate::trial::Outcome;

#[derive(Debug, Clone)]
pub struct SyntheticRunner {
    pub function: SyntheticFunction,
    pub noise: f64,
    pub seed: u64,
}

impl TrialRunner for SyntheticRunner {
    fn run(&self, a: &TrialAssignment, reporter: &mut dyn Reporter, _cancel: &CancelToken) -> Outcome {
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
        let mut m = serde_json::Map::new();
        m.insert("noise_free_value".into(), serde_json::Value::from(clean));
        reporter.metrics(&m);
        Outcome::Complete { value }
    }
}
