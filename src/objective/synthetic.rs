//! The built-in benchmark functions (float64, all minimised), with their search spaces and
//! optima. The first four are exactly those of `../shared/anchors/functions.md`, so sampler
//! benchmarks compare with Optuna's runs of them. The rest are a generality set the sampler
//! was never tuned on (standard functions from the optimisation literature and a mixed
//! fine-tuning-like space with a string categorical); `scripts/optuna_generality.py` runs
//! Optuna on the same definitions.

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
    // The generality set.
    Hartmann3,
    Ackley5,
    Levy4,
    StyblinskiTang4,
    SixHumpCamel,
    GoldsteinPrice,
    MixedFt,
    // The second generality set (added after every sampler choice above was made).
    Shekel4,
    Michalewicz5,
    Rastrigin4,
    Powell4,
}

/// The α of both Hartmann functions.
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

const H3_A: [[f64; 3]; 4] = [[3.0, 10.0, 30.0], [0.1, 10.0, 35.0], [3.0, 10.0, 30.0], [0.1, 10.0, 35.0]];
const H3_P: [[f64; 3]; 4] = [[0.3689, 0.1170, 0.2673], [0.4699, 0.4387, 0.7470], [0.1091, 0.8732, 0.5547], [0.0381, 0.5743, 0.8828]];

/// `mixed-ft`'s optimisers, with their best log10 learning rate, best log10 weight decay and
/// the excess loss at their own optimum.
const MIXED_FT_OPTIMIZERS: [(&str, f64, f64, f64); 3] =
    [("sgd", -1.7, -4.0, 0.06), ("adam", -3.4, -5.0, 0.015), ("adamw", -3.1, -2.0, 0.0)];

/// Shekel's function with m = 10: `β = c / 10` and the centres `C` (4 × 10).
const SHEKEL_BETA: [f64; 10] = [1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 3.0, 7.0, 5.0, 5.0];
const SHEKEL_C: [[f64; 10]; 4] = [
    [4.0, 1.0, 8.0, 6.0, 3.0, 2.0, 5.0, 8.0, 6.0, 7.0],
    [4.0, 1.0, 8.0, 6.0, 7.0, 9.0, 3.0, 1.0, 2.0, 3.6],
    [4.0, 1.0, 8.0, 6.0, 3.0, 2.0, 5.0, 8.0, 6.0, 7.0],
    [4.0, 1.0, 8.0, 6.0, 7.0, 9.0, 3.0, 1.0, 2.0, 3.6],
];

/// A parameter the function needs is missing or of the wrong kind (not a number; for
/// `mixed-ft`'s `optimizer`, not one of its choices).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("function `{function}` needs a parameter `{param}` of its space (`bench sampler --help` lists the functions)")]
pub struct MissingInput {
    pub function: &'static str,
    pub param: String,
}

impl SyntheticFunction {
    pub const ALL: [SyntheticFunction; 15] = [
        SyntheticFunction::Branin,
        SyntheticFunction::Hartmann6,
        SyntheticFunction::Rosenbrock4,
        SyntheticFunction::SftLike,
        SyntheticFunction::Hartmann3,
        SyntheticFunction::Ackley5,
        SyntheticFunction::Levy4,
        SyntheticFunction::StyblinskiTang4,
        SyntheticFunction::SixHumpCamel,
        SyntheticFunction::GoldsteinPrice,
        SyntheticFunction::MixedFt,
        SyntheticFunction::Shekel4,
        SyntheticFunction::Michalewicz5,
        SyntheticFunction::Rastrigin4,
        SyntheticFunction::Powell4,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SyntheticFunction::Branin => "branin",
            SyntheticFunction::Hartmann6 => "hartmann6",
            SyntheticFunction::Rosenbrock4 => "rosenbrock4",
            SyntheticFunction::SftLike => "sft-like",
            SyntheticFunction::Hartmann3 => "hartmann3",
            SyntheticFunction::Ackley5 => "ackley5",
            SyntheticFunction::Levy4 => "levy4",
            SyntheticFunction::StyblinskiTang4 => "styblinski-tang4",
            SyntheticFunction::SixHumpCamel => "six-hump-camel",
            SyntheticFunction::GoldsteinPrice => "goldstein-price",
            SyntheticFunction::MixedFt => "mixed-ft",
            SyntheticFunction::Shekel4 => "shekel4",
            SyntheticFunction::Michalewicz5 => "michalewicz5",
            SyntheticFunction::Rastrigin4 => "rastrigin4",
            SyntheticFunction::Powell4 => "powell4",
        }
    }

    /// The global minimum f*.
    pub fn optimum(self) -> f64 {
        match self {
            SyntheticFunction::Branin => 0.397887357729738,
            SyntheticFunction::Hartmann6 => -3.32236801141551,
            SyntheticFunction::Rosenbrock4 => 0.0,
            SyntheticFunction::SftLike => 0.35,
            SyntheticFunction::Hartmann3 => -3.862779787332663,
            SyntheticFunction::Ackley5 => 0.0,
            SyntheticFunction::Levy4 => 0.0,
            SyntheticFunction::StyblinskiTang4 => -156.66466281508568,
            SyntheticFunction::SixHumpCamel => -1.0316284534898774,
            SyntheticFunction::GoldsteinPrice => 3.0,
            SyntheticFunction::MixedFt => 0.1,
            SyntheticFunction::Shekel4 => -10.53644315348353,
            SyntheticFunction::Michalewicz5 => -4.687658179088149,
            SyntheticFunction::Rastrigin4 => 0.0,
            SyntheticFunction::Powell4 => 0.0,
        }
    }

    /// The function's own search space (the one the anchors use).
    pub fn space(self) -> SearchSpace {
        let float = |name: String, low: f64, high: f64| Param { name, dist: Distribution::Float { low, high, log: false, step: None } };
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
            SyntheticFunction::Hartmann3 => (0..3).map(|j| float(format!("x{j}"), 0.0, 1.0)).collect(),
            SyntheticFunction::Ackley5 => (0..5).map(|j| float(format!("x{j}"), -32.768, 32.768)).collect(),
            SyntheticFunction::Levy4 => (0..4).map(|j| float(format!("x{j}"), -10.0, 10.0)).collect(),
            SyntheticFunction::StyblinskiTang4 => (0..4).map(|j| float(format!("x{j}"), -5.0, 5.0)).collect(),
            SyntheticFunction::SixHumpCamel => vec![float("x1".into(), -3.0, 3.0), float("x2".into(), -2.0, 2.0)],
            SyntheticFunction::GoldsteinPrice => vec![float("x1".into(), -2.0, 2.0), float("x2".into(), -2.0, 2.0)],
            SyntheticFunction::MixedFt => vec![
                Param {
                    name: "optimizer".into(),
                    dist: Distribution::Categorical { choices: MIXED_FT_OPTIMIZERS.iter().map(|o| ParamValue::Str(o.0.into())).collect() },
                },
                Param { name: "learning_rate".into(), dist: Distribution::Float { low: 1e-5, high: 1e-1, log: true, step: None } },
                Param { name: "weight_decay".into(), dist: Distribution::Float { low: 1e-6, high: 1e-1, log: true, step: None } },
                float("warmup_ratio".into(), 0.0, 0.3),
                Param { name: "epochs".into(), dist: Distribution::Int { low: 1, high: 20, step: 1, log: false } },
                float("dropout".into(), 0.0, 0.5),
            ],
            SyntheticFunction::Shekel4 => (0..4).map(|j| float(format!("x{j}"), 0.0, 10.0)).collect(),
            SyntheticFunction::Michalewicz5 => (0..5).map(|j| float(format!("x{j}"), 0.0, PI)).collect(),
            SyntheticFunction::Rastrigin4 => (0..4).map(|j| float(format!("x{j}"), -5.12, 5.12)).collect(),
            SyntheticFunction::Powell4 => (0..4).map(|j| float(format!("x{j}"), -4.0, 5.0)).collect(),
        };
        // The definitions above are valid by construction.
        SearchSpace::new(params).expect("built-in space is valid")
    }

    fn get(self, p: &ParamSet, name: &str) -> Result<f64, MissingInput> {
        p.get(name).and_then(|v| v.as_f64()).ok_or(MissingInput { function: self.name(), param: name.to_string() })
    }

    fn get_vec<const D: usize>(self, p: &ParamSet) -> Result<[f64; D], MissingInput> {
        let mut x = [0.0; D];
        for (j, xj) in x.iter_mut().enumerate() {
            *xj = self.get(p, &format!("x{j}"))?;
        }
        Ok(x)
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
            SyntheticFunction::Hartmann6 => hartmann(&self.get_vec::<6>(p)?, &H6_A, &H6_P),
            SyntheticFunction::Rosenbrock4 => {
                let x = self.get_vec::<4>(p)?;
                (0..3).map(|i| 100.0 * (x[i + 1] - x[i] * x[i]).powi(2) + (1.0 - x[i]).powi(2)).sum()
            }
            SyntheticFunction::SftLike => {
                let lr = self.get(p, "learning_rate")?;
                let bs = self.get(p, "batch_size")?;
                let ep = self.get(p, "epochs")?;
                let fr = self.get(p, "freeze_layers")?;
                sft_like(lr, bs, ep, fr)
            }
            SyntheticFunction::Hartmann3 => hartmann(&self.get_vec::<3>(p)?, &H3_A, &H3_P),
            SyntheticFunction::Ackley5 => {
                let x = self.get_vec::<5>(p)?;
                let n = x.len() as f64;
                let sq = x.iter().map(|v| v * v).sum::<f64>() / n;
                let cos = x.iter().map(|v| (2.0 * PI * v).cos()).sum::<f64>() / n;
                -20.0 * (-0.2 * sq.sqrt()).exp() - cos.exp() + 20.0 + std::f64::consts::E
            }
            SyntheticFunction::Levy4 => {
                let x = self.get_vec::<4>(p)?;
                let w = x.map(|v| 1.0 + (v - 1.0) / 4.0);
                let last = w[3];
                let middle: f64 = w[..3].iter().map(|wi| (wi - 1.0).powi(2) * (1.0 + 10.0 * (PI * wi + 1.0).sin().powi(2))).sum();
                (PI * w[0]).sin().powi(2) + middle + (last - 1.0).powi(2) * (1.0 + (2.0 * PI * last).sin().powi(2))
            }
            SyntheticFunction::StyblinskiTang4 => {
                let x = self.get_vec::<4>(p)?;
                0.5 * x.iter().map(|v| v.powi(4) - 16.0 * v * v + 5.0 * v).sum::<f64>()
            }
            SyntheticFunction::SixHumpCamel => {
                let (x1, x2) = (self.get(p, "x1")?, self.get(p, "x2")?);
                (4.0 - 2.1 * x1 * x1 + x1.powi(4) / 3.0) * x1 * x1 + x1 * x2 + (-4.0 + 4.0 * x2 * x2) * x2 * x2
            }
            SyntheticFunction::GoldsteinPrice => {
                let (x1, x2) = (self.get(p, "x1")?, self.get(p, "x2")?);
                let a = 1.0 + (x1 + x2 + 1.0).powi(2) * (19.0 - 14.0 * x1 + 3.0 * x1 * x1 - 14.0 * x2 + 6.0 * x1 * x2 + 3.0 * x2 * x2);
                let b = 30.0
                    + (2.0 * x1 - 3.0 * x2).powi(2) * (18.0 - 32.0 * x1 + 12.0 * x1 * x1 + 48.0 * x2 - 36.0 * x1 * x2 + 27.0 * x2 * x2);
                a * b
            }
            SyntheticFunction::MixedFt => {
                let optimizer = p.get("optimizer").and_then(|v| match v {
                    ParamValue::Str(s) => MIXED_FT_OPTIMIZERS.iter().find(|o| o.0 == s.as_str()),
                    _ => None,
                });
                let (_, lr_opt, wd_opt, excess) = *optimizer.ok_or(MissingInput { function: self.name(), param: "optimizer".into() })?;
                let d = self.get(p, "learning_rate")?.log10() - lr_opt;
                let l_lr = 0.25 * d * d + 0.1 * d.max(0.0).powi(3);
                let l_wd = 0.02 * (self.get(p, "weight_decay")?.log10() - wd_opt).powi(2);
                let l_wu = 0.4 * (self.get(p, "warmup_ratio")? - 0.06 - 0.05 * d.max(0.0)).powi(2);
                let ep = self.get(p, "epochs")?;
                let l_ep = 0.4 * ((-0.4 * (ep - 1.0)).exp() - (-0.4f64 * 7.0).exp()) + 0.01 * (ep - 8.0).max(0.0).powi(2);
                let l_do = 0.5 * (self.get(p, "dropout")? - 0.1).powi(2);
                0.1 + excess + l_lr + l_wd + l_wu + l_ep + l_do
            }
            SyntheticFunction::Shekel4 => {
                let x = self.get_vec::<4>(p)?;
                -(0..10).map(|i| 1.0 / ((0..4).map(|j| (x[j] - SHEKEL_C[j][i]).powi(2)).sum::<f64>() + SHEKEL_BETA[i] / 10.0)).sum::<f64>()
            }
            SyntheticFunction::Michalewicz5 => {
                let x = self.get_vec::<5>(p)?;
                -x.iter().enumerate().map(|(i, v)| v.sin() * ((i + 1) as f64 * v * v / PI).sin().powi(20)).sum::<f64>()
            }
            SyntheticFunction::Rastrigin4 => {
                let x = self.get_vec::<4>(p)?;
                40.0 + x.iter().map(|v| v * v - 10.0 * (2.0 * PI * v).cos()).sum::<f64>()
            }
            SyntheticFunction::Powell4 => {
                let [a, b, c, d] = self.get_vec::<4>(p)?;
                (a + 10.0 * b).powi(2) + 5.0 * (c - d).powi(2) + (b - 2.0 * c).powi(4) + 10.0 * (a - d).powi(4)
            }
        })
    }
}

/// A Hartmann function: `−Σᵢ αᵢ exp(−Σⱼ Aᵢⱼ (xⱼ − Pᵢⱼ)²)` with the standard α (the same for
/// the 3- and 6-dimensional ones).
fn hartmann<const D: usize>(x: &[f64; D], a: &[[f64; D]; 4], p: &[[f64; D]; 4]) -> f64 {
    let mut total = 0.0;
    for i in 0..4 {
        let inner: f64 = (0..D).map(|j| a[i][j] * (x[j] - p[i][j]).powi(2)).sum();
        total += H6_ALPHA[i] * (-inner).exp();
    }
    -total
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
            _ => SyntheticFunction::ALL.into_iter().find(|f| f.name() == s).ok_or_else(|| {
                let names: Vec<&str> = SyntheticFunction::ALL.iter().map(|f| f.name()).collect();
                format!("unknown function `{s}` (expected one of: {})", names.join(", "))
            }),
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

    fn xs(values: &[f64]) -> ParamSet {
        values.iter().enumerate().map(|(j, x)| (format!("x{j}"), ParamValue::Float(*x))).collect()
    }

    #[test]
    fn the_generality_set_takes_its_optimum_at_the_known_minimiser() {
        use SyntheticFunction as F;
        let camel = set(&[("x1", ParamValue::Float(0.08984201)), ("x2", ParamValue::Float(-0.7126564))]);
        let gp = set(&[("x1", ParamValue::Float(0.0)), ("x2", ParamValue::Float(-1.0))]);
        let mixed = set(&[
            ("optimizer", ParamValue::Str("adamw".into())),
            ("learning_rate", ParamValue::Float(10f64.powf(-3.1))),
            ("weight_decay", ParamValue::Float(1e-2)),
            ("warmup_ratio", ParamValue::Float(0.06)),
            ("epochs", ParamValue::Int(8)),
            ("dropout", ParamValue::Float(0.1)),
        ]);
        let cases = [
            (F::Hartmann3, xs(&[0.11458888, 0.5556489, 0.85254699])),
            (F::Ackley5, xs(&[0.0; 5])),
            (F::Levy4, xs(&[1.0; 4])),
            (F::StyblinskiTang4, xs(&[-2.9035340379651355; 4])),
            (F::SixHumpCamel, camel),
            (F::GoldsteinPrice, gp),
            (F::MixedFt, mixed.clone()),
            (F::Shekel4, xs(&[4.000746867869747, 3.9995094850576276, 4.000746868809279, 3.999509480017675])),
            (F::Michalewicz5, xs(&[2.2029055212257687, 1.5707963248226275, 1.2849915686521876, 1.9230584703941669, 1.7204697716599155])),
            (F::Rastrigin4, xs(&[0.0; 4])),
            (F::Powell4, xs(&[0.0; 4])),
        ];
        for (f, at) in cases {
            let v = f.evaluate(&at).unwrap();
            assert!((v - f.optimum()).abs() < 1e-9, "{}: {v} at the minimiser, optimum {}", f.name(), f.optimum());
            // Every point of the space is at or above the optimum (a coarse random check).
            let space = f.space();
            let mut rng = crate::sampler::trial_rng(3, 0);
            for _ in 0..2000 {
                let q = crate::sampler::RandomSampler::draw(&space, &mut rng);
                assert!(f.evaluate(&q).unwrap() >= f.optimum() - 1e-9, "{} below its optimum at {q:?}", f.name());
            }
            assert_eq!(f.name().parse::<SyntheticFunction>(), Ok(f));
        }
        // Another optimiser, or a learning rate off its optimum, costs loss.
        let mut sgd = mixed.clone();
        sgd.insert("optimizer".into(), ParamValue::Str("sgd".into()));
        assert!((F::MixedFt.evaluate(&sgd).unwrap() - 0.1).abs() > 0.01);
        let mut unknown = mixed;
        unknown.insert("optimizer".into(), ParamValue::Str("lion".into()));
        assert!(F::MixedFt.evaluate(&unknown).is_err());
    }

    #[test]
    fn the_generality_set_gives_the_values_of_the_python_definitions() {
        // Values printed by scripts/optuna_generality.py at the same points, so the Optuna runs
        // of that script and our benchmark optimise the same functions.
        use SyntheticFunction as F;
        let camel = set(&[("x1", ParamValue::Float(-1.2)), ("x2", ParamValue::Float(0.7))]);
        let gp = set(&[("x1", ParamValue::Float(0.5)), ("x2", ParamValue::Float(-1.5))]);
        let mixed = set(&[
            ("optimizer", ParamValue::Str("sgd".into())),
            ("learning_rate", ParamValue::Float(0.003)),
            ("weight_decay", ParamValue::Float(2e-5)),
            ("warmup_ratio", ParamValue::Float(0.2)),
            ("epochs", ParamValue::Int(13)),
            ("dropout", ParamValue::Float(0.35)),
        ]);
        let cases = [
            (F::Hartmann3, xs(&[0.3, 0.7, 0.2]), -0.07449765061154319),
            (F::Ackley5, xs(&[1.5, -3.2, 7.7, 0.1, -20.0]), 18.67649790816573),
            (F::Levy4, xs(&[2.5, -7.0, 0.3, 9.1]), 38.55502043367956),
            (F::StyblinskiTang4, xs(&[1.0, -2.0, 3.5, -4.9]), 35.69130000000007),
            (F::SixHumpCamel, camel, 0.561168),
            (F::GoldsteinPrice, gp, 657.6875),
            (F::MixedFt, mixed, 0.6071114124672863),
            (F::Shekel4, xs(&[1.5, 7.2, 3.3, 9.0]), -0.43628416587056673),
            (F::Michalewicz5, xs(&[0.5, 1.1, 2.9, 2.0, 1.7]), -1.2542124495544678),
            (F::Rastrigin4, xs(&[1.2, -3.4, 0.05, 4.9]), 64.41176489329897),
            (F::Powell4, xs(&[1.0, -2.0, 3.5, -0.5]), 7052.625),
        ];
        for (f, at, want) in cases {
            let got = f.evaluate(&at).unwrap();
            assert!((got - want).abs() <= 1e-12 * want.abs().max(1.0), "{}: {got} != {want}", f.name());
        }
    }

    #[test]
    fn missing_parameter_is_an_error() {
        assert!(SyntheticFunction::Branin.evaluate(&ParamSet::new()).is_err());
    }
}
