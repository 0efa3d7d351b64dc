//! The built-in benchmark functions, exactly as `../shared/anchors/functions.md` defines them
//! (float64, all minimised), with their search spaces and optima, so sampler benchmarks
//! compare with Optuna's runs of the same functions.

use std::f64::consts::PI;
use std::str::FromStr;

use crate::space::{Distribution, Param, ParamSet, ParamValue, SearchSpace};

/// One of the built-in benchmark functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyntheticFunction {
    Branin,
    Hartmann6,
    Rosenbrock4,
    SftLike,
}

const H6_ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
const H6_A: [[f64; 6]; 4] = [
    [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
    [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
    [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
    [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
];
const H6_P: [[f64; 6]; 4] = [
    [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
    [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
    [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
    [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
];

/// A parameter the function needs is missing or not a number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("function `{function}` needs a numeric parameter `{param}`")]
pub struct MissingInput {
    pub function: &'static str,
    pub param: String,
}

impl SyntheticFunction {
    pub const ALL: [SyntheticFunction; 4] =
        [SyntheticFunction::Branin, SyntheticFunction::Hartmann6, SyntheticFunction::Rosenbrock4, SyntheticFunction::SftLike];

    pub fn name(self) -> &'static str {
        match self {
            SyntheticFunction::Branin => "branin",
            SyntheticFunction::Hartmann6 => "hartmann6",
            SyntheticFunction::Rosenbrock4 => "rosenbrock4",
            SyntheticFunction::SftLike => "sft-like",
        }
    }

    /// The global minimum f*.
    pub fn optimum(self) -> f64 {
        match self {
            SyntheticFunction::Branin => 0.397887357729738,
            SyntheticFunction::Hartmann6 => -3.32236801141551,
            SyntheticFunction::Rosenbrock4 => 0.0,
            SyntheticFunction::SftLike => 0.35,
        }
    }

    /// The function's own search space (the one the anchors use).
    pub fn space(self) -> SearchSpace {
        let float = |name: String, low: f64, high: f64| Param {
            name,
            dist: Distribution::Float { low, high, log: false, step: None },
        };
        let params = match self {
            SyntheticFunction::Branin => vec![float("x1".into(), -5.0, 10.0), float("x2".into(), 0.0, 15.0)],
            SyntheticFunction::Hartmann6 => (0..6).map(|j| float(format!("x{j}"), 0.0, 1.0)).collect(),
            SyntheticFunction::Rosenbrock4 => (0..4).map(|j| float(format!("x{j}"), -5.0, 10.0)).collect(),
            SyntheticFunction::SftLike => vec![
                Param { name: "learning_rate".into(), dist: Distribution::Float { low: 1e-6, high: 1e-2, log: true, step: None } },
                Param {
                    name: "batch_size".into(),
                    dist: Distribution::Categorical { choices: [8, 16, 32, 64].map(ParamValue::Int).to_vec() },
                },
                Param { name: "epochs".into(), dist: Distribution::Int { low: 1, high: 10, step: 1, log: false } },
                Param { name: "freeze_layers".into(), dist: Distribution::Int { low: 0, high: 12, step: 1, log: false } },
            ],
        };
        // The definitions above are valid by construction.
        SearchSpace::new(params).expect("built-in space is valid")
    }

    fn get(self, p: &ParamSet, name: &str) -> Result<f64, MissingInput> {
        p.get(name)
            .and_then(|v| v.as_f64())
            .ok_or(MissingInput { function: self.name(), param: name.to_string() })
    }

    /// The noise-free value at `p`.
    pub fn evaluate(self, p: &ParamSet) -> Result<f64, MissingInput> {
        Ok(match self {
            SyntheticFunction::Branin => {
                let (x1, x2) = (self.get(p, "x1")?, self.get(p, "x2")?);
                let (a, b, c) = (1.0, 5.1 / (4.0 * PI * PI), 5.0 / PI);
                let (r, s, t) = (6.0, 10.0, 1.0 / (8.0 * PI));
                a * (x2 - b * x1 * x1 + c * x1 - r).powi(2) + s * (1.0 - t) * x1.cos() + s
            }
            SyntheticFunction::Hartmann6 => {
                let mut x = [0.0; 6];
                for (j, xj) in x.iter_mut().enumerate() {
                    *xj = self.get(p, &format!("x{j}"))?;
                }
                let mut total = 0.0;
                for i in 0..4 {
                    let inner: f64 = (0..6).map(|j| H6_A[i][j] * (x[j] - H6_P[i][j]).powi(2)).sum();
                    total += H6_ALPHA[i] * (-inner).exp();
                }
                -total
            }
            SyntheticFunction::Rosenbrock4 => {
                let mut x = [0.0; 4];
                for (j, xj) in x.iter_mut().enumerate() {
                    *xj = self.get(p, &format!("x{j}"))?;
                }
                (0..3).map(|i| 100.0 * (x[i + 1] - x[i] * x[i]).powi(2) + (1.0 - x[i]).powi(2)).sum()
            }
            SyntheticFunction::SftLike => {
                let lr = self.get(p, "learning_rate")?;
                let bs = self.get(p, "batch_size")?;
                let ep = self.get(p, "epochs")?;
                let fr = self.get(p, "freeze_layers")?;
                sft_like(lr, bs, ep, fr)
            }
        })
    }
}

/// `sft-like` at a learning rate, batch size, number of epochs (fractional ones allowed: the
/// loss after part of the training, which is how its learning curve is drawn) and frozen layers.
pub fn sft_like(lr: f64, bs: f64, ep: f64, fr: f64) -> f64 {
    let u = lr.log10();
    let u_opt = -4.3 + (bs / 16.0).log10();
    let d = u - u_opt;
    let l_lr = 0.30 * d * d + 0.05 * d.max(0.0).powi(3);
    let l_bs = 0.02 * (bs / 16.0).log2().powi(2);
    let l_ep = 0.60 * ((-0.75 * (ep - 1.0)).exp() - (-0.75f64 * 3.0).exp()) + 0.05 * (ep - 4.0).max(0.0).powi(2);
    let l_fr = 0.004 * (fr - 4.0).powi(2);
    0.35 + l_lr + l_bs + l_ep + l_fr
}

impl FromStr for SyntheticFunction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "branin" => Ok(SyntheticFunction::Branin),
            "hartmann6" => Ok(SyntheticFunction::Hartmann6),
            "rosenbrock4" | "rosenbrock" => Ok(SyntheticFunction::Rosenbrock4),
            "sft-like" | "sft" => Ok(SyntheticFunction::SftLike),
            _ => Err(format!("unknown function `{s}` (expected one of: branin, hartmann6, rosenbrock4, sft-like)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, ParamValue)]) -> ParamSet {
        items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn optima_match_the_anchor_definitions() {
        // Reference points and values from ../shared/anchors/functions.md.
        let b = set(&[("x1", ParamValue::Float(PI)), ("x2", ParamValue::Float(2.275))]);
        assert!((SyntheticFunction::Branin.evaluate(&b).unwrap() - 0.397887357729738).abs() < 1e-12);
        let h: ParamSet = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]
            .iter()
            .enumerate()
            .map(|(j, x)| (format!("x{j}"), ParamValue::Float(*x)))
            .collect();
        assert!((SyntheticFunction::Hartmann6.evaluate(&h).unwrap() + 3.32236801141551).abs() < 1e-5);
        let r: ParamSet = (0..4).map(|j| (format!("x{j}"), ParamValue::Float(1.0))).collect();
        assert_eq!(SyntheticFunction::Rosenbrock4.evaluate(&r).unwrap(), 0.0);
        let s = set(&[
            ("learning_rate", ParamValue::Float(5.011872336272725e-05)),
            ("batch_size", ParamValue::Int(16)),
            ("epochs", ParamValue::Int(4)),
            ("freeze_layers", ParamValue::Int(4)),
        ]);
        assert!((SyntheticFunction::SftLike.evaluate(&s).unwrap() - 0.35).abs() < 1e-15);
        let worst = set(&[
            ("learning_rate", ParamValue::Float(1e-2)),
            ("batch_size", ParamValue::Int(8)),
            ("epochs", ParamValue::Int(10)),
            ("freeze_layers", ParamValue::Int(12)),
        ]);
        assert!((SyntheticFunction::SftLike.evaluate(&worst).unwrap() - 5.2729).abs() < 1e-3);
    }

    #[test]
    fn missing_parameter_is_an_error() {
        assert!(SyntheticFunction::Branin.evaluate(&ParamSet::new()).is_err());
    }
}
