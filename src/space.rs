//! The validated search space: what each parameter may take, and the maps the rest of the
//! tool needs from it — Optuna's internal representation (for the store), the unit cube
//! (for samplers), grid enumeration, and a stable hash (to notice a changed space on resume).
//!
//! A `SearchSpace` is only ever built through [`SearchSpace::new`], which checks every rule
//! (bounds, log scale, steps, choices), so code holding one never re-validates it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One parameter value as the user and the trial see it.
///
/// Categorical choices may be numbers, strings or booleans, so a value keeps its JSON type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl ParamValue {
    /// The value as a number, where it is one (ints widen to floats).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as a plain JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Bool(b) => serde_json::Value::Bool(*b),
            ParamValue::Int(i) => serde_json::Value::from(*i),
            ParamValue::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null),
            ParamValue::Str(s) => serde_json::Value::String(s.clone()),
        }
    }

    /// Reads a plain JSON value (as Optuna stores categorical choices).
    pub fn from_json(v: &serde_json::Value) -> Option<ParamValue> {
        match v {
            serde_json::Value::Bool(b) => Some(ParamValue::Bool(*b)),
            serde_json::Value::Number(n) => n.as_i64().map(ParamValue::Int).or_else(|| n.as_f64().map(ParamValue::Float)),
            serde_json::Value::String(s) => Some(ParamValue::Str(s.clone())),
            _ => None,
        }
    }

    /// The value as text without rounding (`3e-5`, `16`, `true`, `adamw`), for environment
    /// variables and command lines.
    pub fn to_string_exact(&self) -> String {
        match self {
            ParamValue::Float(f) => format!("{f:?}"),
            other => other.to_string(),
        }
    }

    /// The same value, compared loosely: `16` and `16.0` are one choice.
    fn same_choice(&self, other: &ParamValue) -> bool {
        match (self.as_f64(), other.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => {
                if x.abs() != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e6) {
                    write!(f, "{x:.4e}")
                } else {
                    write!(f, "{}", (x * 1e6).round() / 1e6)
                }
            }
            ParamValue::Str(s) => write!(f, "{s}"),
        }
    }
}

/// A full assignment of parameter names to values, ordered by name.
pub type ParamSet = BTreeMap<String, ParamValue>;

/// What one parameter may take.
#[derive(Debug, Clone, PartialEq)]
pub enum Distribution {
    Float { low: f64, high: f64, log: bool, step: Option<f64> },
    Int { low: i64, high: i64, step: i64, log: bool },
    Categorical { choices: Vec<ParamValue> },
}

/// A rule of the search space that a definition breaks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpaceError {
    #[error("parameter `{name}`: low ({low}) must be below high ({high})")]
    LowNotBelowHigh { name: String, low: String, high: String },
    #[error("parameter `{name}`: log scale needs low > 0 (got low = {low})")]
    LogNeedsPositive { name: String, low: String },
    #[error("parameter `{name}`: step must be > 0 (got {step})")]
    BadStep { name: String, step: String },
    #[error("parameter `{name}`: `step` and `log = true` cannot be combined")]
    StepWithLog { name: String },
    #[error("parameter `{name}`: `choices` must not be empty")]
    EmptyChoices { name: String },
    #[error("parameter `{name}`: choice {choice} appears twice")]
    DuplicateChoice { name: String, choice: String },
    #[error("parameter `{name}`: bounds must be finite")]
    NonFinite { name: String },
    #[error("the search space has no parameters")]
    Empty,
    #[error("unknown parameter `{name}` (the space has: {known}){hint}")]
    UnknownParam { name: String, known: String, hint: String },
    #[error("parameter `{name}` is missing")]
    MissingParam { name: String },
    #[error("no parameter given (give at least one of: {known})")]
    EmptyPoint { known: String },
    #[error("parameter `{name}`: {value} is not allowed ({expected})")]
    OutOfSpace { name: String, value: String, expected: String },
    #[error("`{0}` is not of the form name=value")]
    BadAssignment(String),
    #[error("parameter `{name}` applies only when {when}{fix}")]
    Inactive { name: String, when: String, fix: String },
    #[error("parameter `{name}`: `when` {problem}")]
    BadCondition { name: String, problem: String },
}

impl Distribution {
    /// Checks the definition rules for a parameter named `name`.
    pub fn validate(&self, name: &str) -> Result<(), SpaceError> {
        let n = || name.to_string();
        match self {
            Distribution::Float { low, high, log, step } => {
                if !low.is_finite() || !high.is_finite() {
                    return Err(SpaceError::NonFinite { name: n() });
                }
                if low >= high {
                    return Err(SpaceError::LowNotBelowHigh { name: n(), low: low.to_string(), high: high.to_string() });
                }
                if *log && *low <= 0.0 {
                    return Err(SpaceError::LogNeedsPositive { name: n(), low: low.to_string() });
                }
                if let Some(s) = step {
                    if *log {
                        return Err(SpaceError::StepWithLog { name: n() });
                    }
                    if !(s.is_finite() && *s > 0.0) {
                        return Err(SpaceError::BadStep { name: n(), step: s.to_string() });
                    }
                }
            }
            Distribution::Int { low, high, step, log } => {
                if low >= high {
                    return Err(SpaceError::LowNotBelowHigh { name: n(), low: low.to_string(), high: high.to_string() });
                }
                if *log && *low <= 0 {
                    return Err(SpaceError::LogNeedsPositive { name: n(), low: low.to_string() });
                }
                if *step <= 0 {
                    return Err(SpaceError::BadStep { name: n(), step: step.to_string() });
                }
                if *log && *step != 1 {
                    return Err(SpaceError::StepWithLog { name: n() });
                }
            }
            Distribution::Categorical { choices } => {
                if choices.is_empty() {
                    return Err(SpaceError::EmptyChoices { name: n() });
                }
                for (i, c) in choices.iter().enumerate() {
                    if choices[..i].iter().any(|d| d.same_choice(c)) {
                        return Err(SpaceError::DuplicateChoice { name: n(), choice: c.to_string() });
                    }
                }
            }
        }
        Ok(())
    }

    /// The largest value on the step lattice that is still `<= high`.
    fn float_top(low: f64, high: f64, step: f64) -> f64 {
        let k = ((high - low) / step + 1e-9).floor();
        low + k * step
    }

    fn int_top(low: i64, high: i64, step: i64) -> i64 {
        low + (high - low) / step * step
    }

    /// Whether `v` is a value this parameter may take.
    pub fn contains(&self, v: &ParamValue) -> bool {
        match self {
            Distribution::Float { low, high, step, .. } => match v.as_f64() {
                Some(x) if x.is_finite() && x >= *low && x <= *high => match step {
                    Some(s) => {
                        let k = (x - low) / s;
                        (k - k.round()).abs() < 1e-6
                    }
                    None => true,
                },
                _ => false,
            },
            Distribution::Int { low, high, step, .. } => match v {
                ParamValue::Int(i) => i >= low && i <= high && (i - low) % step == 0,
                ParamValue::Float(f) if f.fract() == 0.0 => self.contains(&ParamValue::Int(*f as i64)),
                _ => false,
            },
            Distribution::Categorical { choices } => choices.iter().any(|c| c.same_choice(v)),
        }
    }

    /// Brings a value the user typed (e.g. `16` for a float) to this parameter's own type,
    /// or says why it does not fit.
    pub fn coerce(&self, name: &str, v: &ParamValue) -> Result<ParamValue, SpaceError> {
        let out = match (self, v) {
            (Distribution::Float { .. }, _) => v.as_f64().map(ParamValue::Float),
            (Distribution::Int { .. }, ParamValue::Int(i)) => Some(ParamValue::Int(*i)),
            (Distribution::Int { .. }, ParamValue::Float(f)) if f.fract() == 0.0 => Some(ParamValue::Int(*f as i64)),
            (Distribution::Categorical { choices }, _) => choices.iter().find(|c| c.same_choice(v)).cloned(),
            _ => None,
        };
        match out {
            Some(x) if self.contains(&x) => Ok(x),
            _ => Err(SpaceError::OutOfSpace { name: name.to_string(), value: v.to_string(), expected: self.describe() }),
        }
    }

    /// A short human description, e.g. `float in [1e-5, 1e-3], log`.
    pub fn describe(&self) -> String {
        match self {
            Distribution::Float { low, high, log, step } => {
                let mut s = format!("float in [{low}, {high}]");
                if *log {
                    s.push_str(", log");
                }
                if let Some(st) = step {
                    s.push_str(&format!(", step {st}"));
                }
                s
            }
            Distribution::Int { low, high, step, log } => {
                let mut s = format!("int in [{low}, {high}]");
                if *step != 1 {
                    s.push_str(&format!(", step {step}"));
                }
                if *log {
                    s.push_str(", log");
                }
                s
            }
            Distribution::Categorical { choices } => {
                let c: Vec<String> = choices.iter().map(|c| c.to_string()).collect();
                format!("one of {{{}}}", c.join(", "))
            }
        }
    }

    /// Optuna's internal representation: the number itself for floats and ints, the index of
    /// the choice for categoricals (this is `trial_params.param_value`).
    pub fn to_internal(&self, v: &ParamValue) -> Option<f64> {
        match self {
            Distribution::Float { .. } | Distribution::Int { .. } => v.as_f64(),
            Distribution::Categorical { choices } => choices.iter().position(|c| c.same_choice(v)).map(|i| i as f64),
        }
    }

    /// The inverse of [`Distribution::to_internal`].
    pub fn from_internal(&self, x: f64) -> Option<ParamValue> {
        match self {
            Distribution::Float { .. } => Some(ParamValue::Float(x)),
            Distribution::Int { .. } => Some(ParamValue::Int(x.round() as i64)),
            Distribution::Categorical { choices } => {
                if x < 0.0 {
                    return None;
                }
                choices.get(x.round() as usize).cloned()
            }
        }
    }

    /// Whether this is a categorical parameter (which has no order and no unit-cube position).
    pub fn is_categorical(&self) -> bool {
        matches!(self, Distribution::Categorical { .. })
    }

    /// The bounds in the space where a sampler works: log10 for log parameters; ints and
    /// stepped floats widened by half a step on each side so every lattice value owns an
    /// equal cell (as Optuna does). `None` for categoricals.
    fn search_bounds(&self) -> Option<(f64, f64)> {
        match self {
            Distribution::Float { low, high, log, step } => match (log, step) {
                (true, _) => Some((low.ln(), high.ln())),
                (false, Some(s)) => Some((low - s / 2.0, Self::float_top(*low, *high, *s) + s / 2.0)),
                (false, None) => Some((*low, *high)),
            },
            Distribution::Int { low, high, step, log } => {
                if *log {
                    Some(((*low as f64 - 0.5).ln(), (*high as f64 + 0.5).ln()))
                } else {
                    let top = Self::int_top(*low, *high, *step);
                    let h = *step as f64 / 2.0;
                    Some((*low as f64 - h, top as f64 + h))
                }
            }
            Distribution::Categorical { .. } => None,
        }
    }

    /// Maps a value of a numeric parameter into [0, 1] (log scale where `log`).
    /// `None` for categoricals, which have no position in the unit cube.
    pub fn to_unit(&self, v: &ParamValue) -> Option<f64> {
        let (lo, hi) = self.search_bounds()?;
        let x = v.as_f64()?;
        let t = match self {
            Distribution::Float { log: true, .. } | Distribution::Int { log: true, .. } => x.ln(),
            _ => x,
        };
        Some(((t - lo) / (hi - lo)).clamp(0.0, 1.0))
    }

    /// Maps a point of [0, 1] back to a valid value (rounded onto ints and steps, clamped to
    /// the bounds). For categoricals, `u` in [0, 1) picks the choice `floor(u * n)`.
    pub fn from_unit(&self, u: f64) -> ParamValue {
        let u = if u.is_finite() { u.clamp(0.0, 1.0) } else { 0.5 };
        match self {
            Distribution::Categorical { choices } => {
                let i = ((u * choices.len() as f64) as usize).min(choices.len() - 1);
                choices[i].clone()
            }
            Distribution::Float { low, high, log, step } => {
                let (lo, hi) = self.search_bounds().unwrap_or((*low, *high));
                let t = lo + u * (hi - lo);
                let x = if *log { t.exp() } else { t };
                let x = match step {
                    Some(s) => {
                        let top = Self::float_top(*low, *high, *s);
                        (low + ((x - low) / s).round() * s).clamp(*low, top)
                    }
                    None => x.clamp(*low, *high),
                };
                ParamValue::Float(x)
            }
            Distribution::Int { low, high, step, log } => {
                let (lo, hi) = self.search_bounds().unwrap_or((*low as f64, *high as f64));
                let t = lo + u * (hi - lo);
                let x = if *log { t.exp() } else { t };
                let top = Self::int_top(*low, *high, *step);
                let k = ((x - *low as f64) / *step as f64).round() as i64;
                ParamValue::Int((low + k * step).clamp(*low, top))
            }
        }
    }

    /// The values a grid takes for this parameter: every choice, every int on its step, and
    /// `points` values of a float (log-spaced where `log`; on the step lattice where a step is
    /// set, without repeats).
    pub fn grid_values(&self, points: usize) -> Vec<ParamValue> {
        match self {
            Distribution::Categorical { choices } => choices.clone(),
            Distribution::Int { low, high, step, .. } => {
                let mut v = Vec::new();
                let mut x = *low;
                while x <= *high {
                    v.push(ParamValue::Int(x));
                    x += step;
                }
                v
            }
            Distribution::Float { low, high, log, step } => {
                let points = points.max(1);
                let mut out: Vec<ParamValue> = Vec::with_capacity(points);
                for i in 0..points {
                    let f = if points == 1 { 0.5 } else { i as f64 / (points - 1) as f64 };
                    let x = if *log { (low.ln() + f * (high.ln() - low.ln())).exp() } else { low + f * (high - low) };
                    let x = match step {
                        Some(s) => {
                            let top = Self::float_top(*low, *high, *s);
                            (low + ((x - low) / s).round() * s).clamp(*low, top)
                        }
                        None => x.clamp(*low, *high),
                    };
                    let v = ParamValue::Float(x);
                    if !out.iter().any(|o| o.same_choice(&v)) {
                        out.push(v);
                    }
                }
                out
            }
        }
    }

    /// Optuna's `distribution_json` for this parameter (`optuna.distributions.distribution_to_json`).
    pub fn to_optuna_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Distribution::Float { low, high, log, step } => json!({
                "name": "FloatDistribution",
                "attributes": {"step": step, "low": low, "high": high, "log": log}
            }),
            Distribution::Int { low, high, step, log } => json!({
                "name": "IntDistribution",
                "attributes": {"log": log, "step": step, "low": low, "high": high}
            }),
            Distribution::Categorical { choices } => json!({
                "name": "CategoricalDistribution",
                "attributes": {"choices": choices.iter().map(|c| c.to_json()).collect::<Vec<_>>()}
            }),
        }
    }

    /// Reads Optuna's `distribution_json`, including the deprecated pre-3.0 names
    /// (`UniformDistribution`, `LogUniformDistribution`, `IntUniformDistribution`, …).
    pub fn from_optuna_json(text: &str) -> Option<Distribution> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let name = v.get("name")?.as_str()?;
        let a = v.get("attributes")?;
        let f = |k: &str| a.get(k).and_then(|x| x.as_f64());
        let i = |k: &str| a.get(k).and_then(|x| x.as_f64()).map(|x| x as i64);
        let b = |k: &str| a.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
        Some(match name {
            "FloatDistribution" => {
                Distribution::Float { low: f("low")?, high: f("high")?, log: b("log"), step: a.get("step").and_then(|x| x.as_f64()) }
            }
            "UniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: false, step: None },
            "LogUniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: true, step: None },
            "DiscreteUniformDistribution" => Distribution::Float { low: f("low")?, high: f("high")?, log: false, step: f("q") },
            "IntDistribution" => Distribution::Int { low: i("low")?, high: i("high")?, step: i("step").unwrap_or(1), log: b("log") },
            "IntUniformDistribution" => Distribution::Int { low: i("low")?, high: i("high")?, step: i("step").unwrap_or(1), log: false },
            "IntLogUniformDistribution" => Distribution::Int { low: i("low")?, high: i("high")?, step: 1, log: true },
            "CategoricalDistribution" => {
                Distribution::Categorical { choices: a.get("choices")?.as_array()?.iter().filter_map(ParamValue::from_json).collect() }
            }
            _ => return None,
        })
    }
}

/// One named parameter of the space.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub dist: Distribution,
}

/// A parameter that applies only when an earlier categorical parameter takes one of some
/// values (`momentum` only when `optimizer = "sgd"`). A point holds only the parameters that
/// apply to it, as an Optuna trial of a define-by-run space does.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub param: String,
    pub parent: String,
    pub values: Vec<ParamValue>,
}

impl Condition {
    /// `optimizer = "sgd"`, or `optimizer` in ["sgd", "adam"].
    pub fn describe(&self) -> String {
        match self.values.as_slice() {
            [one] => format!("`{}` = {}", self.parent, one.to_json()),
            many => format!("`{}` is one of {}", self.parent, many.iter().map(|v| v.to_json().to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

/// A validated, non-empty set of parameters, kept in the order the study file declares them,
/// with the conditions under which some of them apply.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchSpace {
    params: Vec<Param>,
    conditions: Vec<Condition>,
}

impl SearchSpace {
    /// Validates every parameter and builds the space.
    pub fn new(params: Vec<Param>) -> Result<Self, SpaceError> {
        if params.is_empty() {
            return Err(SpaceError::Empty);
        }
        for p in &params {
            p.dist.validate(&p.name)?;
        }
        Ok(SearchSpace { params, conditions: Vec::new() })
    }

    /// A space whose parameters may apply only under conditions: each condition's parent must
    /// be a categorical parameter declared before the parameter it governs (so a point can be
    /// read in declaration order, and conditions chain), and its values must be choices of it.
    pub fn with_conditions(params: Vec<Param>, conditions: Vec<Condition>) -> Result<Self, SpaceError> {
        let mut space = Self::new(params)?;
        let mut checked = Vec::with_capacity(conditions.len());
        for c in conditions {
            let bad = |problem: String| SpaceError::BadCondition { name: c.param.clone(), problem };
            let child = space.params.iter().position(|p| p.name == c.param).ok_or_else(|| space.unknown(&c.param))?;
            let Some(parent) = space.params.iter().position(|p| p.name == c.parent) else {
                let hint = crate::config::suggest::hint(&c.parent, space.params.iter().map(|p| p.name.as_str()));
                return Err(bad(format!("names `{}`, which is not a parameter of the space (it has: {}){hint}", c.parent, space.known())));
            };
            if parent >= child {
                return Err(bad(format!("names `{}`, which must be declared before `{}`", c.parent, c.param)));
            }
            let dist = &space.params[parent].dist;
            if !matches!(dist, Distribution::Categorical { .. }) {
                return Err(bad(format!(
                    "names `{}`, which is not categorical (a condition picks choices of a categorical parameter)",
                    c.parent
                )));
            }
            if c.values.is_empty() {
                return Err(bad(format!("gives no value of `{}`", c.parent)));
            }
            let values = c
                .values
                .iter()
                .map(|v| {
                    dist.coerce(&c.parent, v).map_err(|_| {
                        bad(format!("gives {} for `{}`, which is not one of its choices ({})", v.to_json(), c.parent, dist.describe()))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            checked.push(Condition { values, ..c });
        }
        space.conditions = checked;
        Ok(space)
    }

    /// The conditions under which parameters apply (empty: every parameter always applies).
    pub fn conditions(&self) -> &[Condition] {
        &self.conditions
    }

    /// Whether parameter `name` applies to the point `set`: each of its conditions' parents is
    /// in `set` with one of the condition's values.
    pub fn is_active(&self, name: &str, set: &ParamSet) -> bool {
        self.conditions
            .iter()
            .filter(|c| c.param == name)
            .all(|c| set.get(&c.parent).is_some_and(|v| c.values.iter().any(|w| w.same_choice(v))))
    }

    /// `set` without the parameters that do not apply to it (a parameter whose parent was
    /// dropped is dropped too: parents come first).
    pub fn without_inactive(&self, set: &ParamSet) -> ParamSet {
        let mut out = set.clone();
        for p in &self.params {
            if out.contains_key(&p.name) && !self.is_active(&p.name, &out) {
                out.remove(&p.name);
            }
        }
        out
    }

    /// Whether parameter `name` can still apply to the partial point `set`: no condition of
    /// it has its parent given with another value, or a parent that cannot apply either.
    pub fn may_apply(&self, name: &str, set: &ParamSet) -> bool {
        self.conditions.iter().filter(|c| c.param == name).all(|c| match set.get(&c.parent) {
            Some(v) => c.values.iter().any(|w| w.same_choice(v)),
            None => self.may_apply(&c.parent, set),
        })
    }

    /// The parameters of the space that apply to `set` and that it lacks, in order.
    pub fn missing(&self, set: &ParamSet) -> Vec<&str> {
        self.params.iter().map(|p| p.name.as_str()).filter(|n| !set.contains_key(*n) && self.is_active(n, set)).collect()
    }

    /// The error for a parameter given where it does not apply.
    fn inactive(&self, name: &str, given_parent: bool) -> SpaceError {
        let when = self.conditions.iter().filter(|c| c.param == name).map(Condition::describe).collect::<Vec<_>>().join(" and ");
        let fix = if given_parent { String::new() } else { " (give that parameter too)".to_string() };
        SpaceError::Inactive { name: name.to_string(), when, fix }
    }

    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn get(&self, name: &str) -> Option<&Distribution> {
        self.params.iter().find(|p| p.name == name).map(|p| &p.dist)
    }

    fn known(&self) -> String {
        self.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// The error for a parameter name the space does not have, with the closest name it has
    /// when that looks like what was meant.
    fn unknown(&self, name: &str) -> SpaceError {
        let hint = crate::config::suggest::hint(name, self.params.iter().map(|p| p.name.as_str()));
        SpaceError::UnknownParam { name: name.to_string(), known: self.known(), hint }
    }

    /// Checks that `set` names exactly the space's parameters with allowed values, and brings
    /// each value to its parameter's type.
    pub fn validate(&self, set: &ParamSet) -> Result<ParamSet, SpaceError> {
        self.checked(set, true)
    }

    /// Validates a partial point (an enqueued one): every name must be a parameter of the
    /// space and every value allowed; parameters left out are for the sampler to choose. At
    /// least one parameter must be given.
    pub fn validate_partial(&self, set: &ParamSet) -> Result<ParamSet, SpaceError> {
        if set.is_empty() {
            return Err(SpaceError::EmptyPoint { known: self.known() });
        }
        self.checked(set, false)
    }

    /// `set` with every value brought to its parameter's type, in the space's order: an
    /// unknown name is an error, and a missing one too when `require_all`.
    fn checked(&self, set: &ParamSet, require_all: bool) -> Result<ParamSet, SpaceError> {
        if let Some(name) = set.keys().find(|name| self.get(name).is_none()) {
            return Err(self.unknown(name));
        }
        let mut out = ParamSet::new();
        for p in &self.params {
            match set.get(&p.name) {
                Some(v) if self.is_active(&p.name, &out) => {
                    out.insert(p.name.clone(), p.dist.coerce(&p.name, v)?);
                }
                Some(_) => {
                    let parents_given = self.conditions.iter().filter(|c| c.param == p.name).all(|c| out.contains_key(&c.parent));
                    return Err(self.inactive(&p.name, parents_given));
                }
                None if require_all && self.is_active(&p.name, &out) => return Err(SpaceError::MissingParam { name: p.name.clone() }),
                None => {}
            }
        }
        Ok(out)
    }

    /// Parses `name=value` assignments (as given to `enqueue --param`); values are read as
    /// TOML scalars, so `3e-5`, `16`, `true` and `adamw` all work. Parameters not given are
    /// left to the sampler ([`SearchSpace::validate_partial`]).
    pub fn parse_assignments(&self, items: &[String]) -> Result<ParamSet, SpaceError> {
        let mut set = ParamSet::new();
        for item in items {
            let (name, raw) = item.split_once('=').ok_or_else(|| SpaceError::BadAssignment(item.clone()))?;
            let name = name.trim();
            let raw = raw.trim();
            let dist = self.get(name).ok_or_else(|| self.unknown(name))?;
            let value = parse_scalar(raw);
            set.insert(name.to_string(), dist.coerce(name, &value)?);
        }
        self.validate_partial(&set)
    }

    /// Every point of the full factorial grid, in a fixed order (the declaration order of
    /// parameters, the first varying slowest); with conditions, each point without the
    /// parameters that do not apply to it, and each such point once.
    pub fn grid(&self, float_points: usize) -> Vec<ParamSet> {
        let full = self.full_grid(float_points);
        if self.conditions.is_empty() {
            return full;
        }
        let mut seen = std::collections::BTreeSet::new();
        full.into_iter().map(|p| self.without_inactive(&p)).filter(|p| seen.insert(format!("{p:?}"))).collect()
    }

    fn full_grid(&self, float_points: usize) -> Vec<ParamSet> {
        let axes: Vec<Vec<ParamValue>> = self.params.iter().map(|p| p.dist.grid_values(float_points)).collect();
        let total: usize = axes.iter().map(|a| a.len()).product();
        let mut out = Vec::with_capacity(total);
        for mut idx in 0..total {
            let mut set = ParamSet::new();
            for (p, axis) in self.params.iter().zip(&axes).rev() {
                set.insert(p.name.clone(), axis[idx % axis.len()].clone());
                idx /= axis.len();
            }
            out.push(set);
        }
        out
    }

    /// Number of points of the grid (saturating; with conditions, counted when the full
    /// product has at most a million points).
    pub fn grid_size(&self, float_points: usize) -> usize {
        let full = self.params.iter().map(|p| p.dist.grid_values(float_points).len()).fold(1usize, |a, b| a.saturating_mul(b));
        if self.conditions.is_empty() || full > 1_000_000 {
            full
        } else {
            self.grid(float_points).len()
        }
    }

    /// A stable fingerprint of the space (names, types, bounds, choices), independent of the
    /// order parameters are declared in.
    pub fn hash(&self) -> String {
        let mut items: Vec<(String, serde_json::Value)> = self.params.iter().map(|p| (p.name.clone(), p.dist.to_optuna_json())).collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        let mut text = serde_json::to_string(&items).unwrap_or_default();
        // Conditions change which points exist; a space without any hashes as before.
        if !self.conditions.is_empty() {
            let mut conds: Vec<(String, String, Vec<serde_json::Value>)> = self
                .conditions
                .iter()
                .map(|c| (c.param.clone(), c.parent.clone(), c.values.iter().map(ParamValue::to_json).collect()))
                .collect();
            conds.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            text.push_str(&serde_json::to_string(&conds).unwrap_or_default());
        }
        let digest = Sha256::digest(text.as_bytes());
        hex::encode(&digest[..12])
    }

    /// Whether two param sets are the same point (loose number comparison).
    pub fn same_point(a: &ParamSet, b: &ParamSet) -> bool {
        a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.same_choice(w) || close(v, w)))
    }
}

fn close(a: &ParamValue, b: &ParamValue) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300),
        _ => false,
    }
}

/// Reads a scalar the way TOML would (`16` int, `3e-5` float, `true` bool), else a string.
pub fn parse_scalar(raw: &str) -> ParamValue {
    let raw = raw.trim();
    if let Ok(i) = raw.parse::<i64>() {
        return ParamValue::Int(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        return ParamValue::Float(f);
    }
    match raw {
        "true" => ParamValue::Bool(true),
        "false" => ParamValue::Bool(false),
        _ => ParamValue::Str(raw.trim_matches('"').to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn float(low: f64, high: f64, log: bool, step: Option<f64>) -> Distribution {
        Distribution::Float { low, high, log, step }
    }

    #[test]
    fn rules_are_enforced() {
        assert!(matches!(float(1.0, 1.0, false, None).validate("x"), Err(SpaceError::LowNotBelowHigh { .. })));
        assert!(matches!(float(0.0, 1.0, true, None).validate("x"), Err(SpaceError::LogNeedsPositive { .. })));
        assert!(matches!(float(0.1, 1.0, true, Some(0.1)).validate("x"), Err(SpaceError::StepWithLog { .. })));
        assert!(matches!(Distribution::Int { low: 0, high: 3, step: 0, log: false }.validate("x"), Err(SpaceError::BadStep { .. })));
        assert!(matches!(Distribution::Categorical { choices: vec![] }.validate("x"), Err(SpaceError::EmptyChoices { .. })));
        assert!(matches!(
            Distribution::Categorical { choices: vec![ParamValue::Int(16), ParamValue::Float(16.0)] }.validate("x"),
            Err(SpaceError::DuplicateChoice { .. })
        ));
    }

    fn cond(param: &str, parent: &str, values: &[&str]) -> Condition {
        Condition { param: param.into(), parent: parent.into(), values: values.iter().map(|v| ParamValue::Str(v.to_string())).collect() }
    }

    fn strs(v: &[&str]) -> Vec<ParamValue> {
        v.iter().map(|s| ParamValue::Str(s.to_string())).collect()
    }

    /// lr; optimizer in {adamw, sgd, adam}; momentum (sgd), beta2 (adamw or adam), and
    /// nesterov (under momentum's condition too: a chain through sgd).
    fn optimizer_space() -> SearchSpace {
        SearchSpace::with_conditions(
            vec![
                Param { name: "lr".into(), dist: float(1e-5, 1e-1, true, None) },
                Param { name: "optimizer".into(), dist: Distribution::Categorical { choices: strs(&["adamw", "sgd", "adam"]) } },
                Param { name: "momentum".into(), dist: float(0.0, 0.99, false, None) },
                Param {
                    name: "beta2".into(),
                    dist: Distribution::Categorical { choices: vec![ParamValue::Float(0.98), ParamValue::Float(0.999)] },
                },
                Param { name: "nesterov".into(), dist: Distribution::Categorical { choices: strs(&["yes", "no"]) } },
            ],
            vec![
                cond("momentum", "optimizer", &["sgd"]),
                cond("beta2", "optimizer", &["adamw", "adam"]),
                cond("nesterov", "optimizer", &["sgd"]),
            ],
        )
        .unwrap()
    }

    fn point(items: &[(&str, ParamValue)]) -> ParamSet {
        items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn a_conditional_parameter_applies_only_under_its_condition() {
        let space = optimizer_space();
        let sgd =
            point(&[("lr", ParamValue::Float(1e-3)), ("optimizer", ParamValue::Str("sgd".into())), ("momentum", ParamValue::Float(0.9))]);
        assert!(space.is_active("momentum", &sgd) && !space.is_active("beta2", &sgd));
        assert_eq!(space.missing(&sgd), vec!["nesterov"]);
        let full = point(&[
            ("lr", ParamValue::Float(1e-3)),
            ("optimizer", ParamValue::Str("sgd".into())),
            ("momentum", ParamValue::Float(0.9)),
            ("nesterov", ParamValue::Str("no".into())),
            ("beta2", ParamValue::Float(0.98)),
        ]);
        // beta2 does not apply to SGD: dropped from a point, refused in a full one.
        assert!(!space.without_inactive(&full).contains_key("beta2"));
        let err = space.validate(&full).unwrap_err().to_string();
        assert!(err.contains("`beta2` applies only when `optimizer` is one of \"adamw\", \"adam\""), "{err}");
        assert!(space.validate(&space.without_inactive(&full)).is_ok());
        // A point without a parameter that applies is incomplete.
        assert!(matches!(space.validate(&sgd), Err(SpaceError::MissingParam { name }) if name == "nesterov"));
        // A partial (queued) point may not give a child without the parent that makes it apply.
        let alone = point(&[("momentum", ParamValue::Float(0.9))]);
        let err = space.validate_partial(&alone).unwrap_err().to_string();
        assert_eq!(err, "parameter `momentum` applies only when `optimizer` = \"sgd\" (give that parameter too)");
        assert!(space
            .validate_partial(&point(&[("optimizer", ParamValue::Str("sgd".into())), ("momentum", ParamValue::Float(0.9))]))
            .is_ok());
    }

    #[test]
    fn conditions_chain_and_several_keys_must_all_hold() {
        // variant applies under SGD; dampening under the plain variant (so under SGD too);
        // lr_scale needs both SGD and the nesterov variant, written as two keys.
        let space = SearchSpace::with_conditions(
            vec![
                Param { name: "optimizer".into(), dist: Distribution::Categorical { choices: strs(&["adamw", "sgd"]) } },
                Param { name: "variant".into(), dist: Distribution::Categorical { choices: strs(&["plain", "nesterov"]) } },
                Param { name: "dampening".into(), dist: float(0.0, 0.5, false, None) },
                Param { name: "lr_scale".into(), dist: float(0.5, 2.0, false, None) },
            ],
            vec![
                cond("variant", "optimizer", &["sgd"]),
                cond("dampening", "variant", &["plain"]),
                cond("lr_scale", "optimizer", &["sgd"]),
                cond("lr_scale", "variant", &["nesterov"]),
            ],
        )
        .unwrap();
        let every = |opt: &str, variant: &str| {
            point(&[
                ("optimizer", ParamValue::Str(opt.into())),
                ("variant", ParamValue::Str(variant.into())),
                ("dampening", ParamValue::Float(0.1)),
                ("lr_scale", ParamValue::Float(1.0)),
            ])
        };
        let keys = |p: ParamSet| p.into_keys().collect::<Vec<_>>();
        assert_eq!(keys(space.without_inactive(&every("adamw", "plain"))), vec!["optimizer"]);
        assert_eq!(keys(space.without_inactive(&every("sgd", "plain"))), vec!["dampening", "optimizer", "variant"]);
        assert_eq!(keys(space.without_inactive(&every("sgd", "nesterov"))), vec!["lr_scale", "optimizer", "variant"]);
        // Which of them a partial (queued) point may still get: not a child of a ruled-out parent.
        let opt = |o: &str| point(&[("optimizer", ParamValue::Str(o.into()))]);
        assert!(!space.may_apply("dampening", &opt("adamw")) && !space.may_apply("lr_scale", &opt("adamw")));
        assert!(space.may_apply("dampening", &opt("sgd")) && space.may_apply("dampening", &ParamSet::new()));
        // The grid: AdamW once, SGD plain × 3 dampening values, SGD nesterov × 3 scales.
        assert_eq!(space.grid(3).len(), 1 + 3 + 3);
        // The GP's encoding agrees: under AdamW the chain's end sits at its constant.
        let enc = crate::sampler::gp::encoding::Encoding::new(&space);
        let x = enc.encode(&space.without_inactive(&every("adamw", "plain"))).unwrap();
        use crate::sampler::gp::encoding::{INACTIVE_CHOICE, INACTIVE_NUMERIC};
        assert_eq!(x, vec![0.0, INACTIVE_CHOICE, INACTIVE_NUMERIC, INACTIVE_NUMERIC]);
        let y = enc.encode(&space.without_inactive(&every("sgd", "nesterov"))).unwrap();
        assert_eq!((y[2], enc.decode(&y).len()), (INACTIVE_NUMERIC, 3));
    }

    #[test]
    fn conditions_are_checked() {
        let params = || optimizer_space().params().to_vec();
        let bad = |c: Condition| SearchSpace::with_conditions(params(), vec![c]).unwrap_err().to_string();
        assert!(bad(cond("momentum", "optimiser", &["sgd"])).contains("names `optimiser`, which is not a parameter of the space"));
        assert!(
            bad(cond("momentum", "optimiser", &["sgd"])).contains("did you mean `optimizer`?"),
            "{}",
            bad(cond("momentum", "optimiser", &["sgd"]))
        );
        assert!(bad(cond("optimizer", "nesterov", &["yes"])).contains("which must be declared before `optimizer`"));
        assert!(bad(cond("momentum", "lr", &["x"])).contains("not categorical"));
        assert!(bad(cond("momentum", "optimizer", &["rmsprop"])).contains("rmsprop"));
        assert!(bad(cond("momentum", "optimizer", &[])).contains("gives no value"));
        assert!(matches!(
            SearchSpace::with_conditions(params(), vec![cond("nope", "optimizer", &["sgd"])]),
            Err(SpaceError::UnknownParam { .. })
        ));
    }

    #[test]
    fn a_conditional_grid_holds_each_point_once_and_the_hash_sees_conditions() {
        let space = optimizer_space();
        // Floats take 3 values: adamw and adam 3 (lr) × 2 (beta2) each, sgd 3 × 3 (momentum) ×
        // 2 (nesterov); the full product would be 3 × 3 × 3 × 2 × 2 = 108.
        let g = space.grid(3);
        assert_eq!(g.len(), 3 * 2 + 3 * 2 + 3 * 3 * 2);
        assert_eq!(space.grid_size(3), g.len());
        for p in &g {
            assert!(space.validate(p).is_ok(), "{p:?}");
        }
        let plain = SearchSpace::new(space.params().to_vec()).unwrap();
        assert_ne!(plain.hash(), space.hash());
        assert_eq!(plain.hash(), SearchSpace::with_conditions(space.params().to_vec(), vec![]).unwrap().hash());
    }

    #[test]
    fn grid_is_the_full_product() {
        let space = SearchSpace::new(vec![
            Param { name: "lr".into(), dist: float(1e-5, 1e-3, true, None) },
            Param { name: "bs".into(), dist: Distribution::Categorical { choices: vec![ParamValue::Int(16), ParamValue::Int(32)] } },
            Param { name: "ep".into(), dist: Distribution::Int { low: 1, high: 3, step: 1, log: false } },
        ])
        .unwrap();
        let g = space.grid(3);
        assert_eq!(g.len(), 18);
        assert_eq!(space.grid_size(3), 18);
        for (i, a) in g.iter().enumerate() {
            for b in &g[i + 1..] {
                assert!(!SearchSpace::same_point(a, b));
            }
        }
        let lrs: Vec<f64> = space.get("lr").unwrap().grid_values(3).iter().map(|v| v.as_f64().unwrap()).collect();
        assert!((lrs[1] - 1e-4).abs() < 1e-12, "log-spaced midpoint, got {lrs:?}");
    }

    #[test]
    fn optuna_json_round_trips() {
        for d in [
            float(1e-5, 1e-3, true, None),
            float(0.0, 1.0, false, Some(0.25)),
            Distribution::Int { low: 1, high: 9, step: 2, log: false },
            Distribution::Categorical { choices: vec![ParamValue::Int(8), ParamValue::Str("a".into()), ParamValue::Bool(true)] },
        ] {
            let text = d.to_optuna_json().to_string();
            assert_eq!(Distribution::from_optuna_json(&text), Some(d));
        }
    }

    #[test]
    fn assignments_are_parsed_and_checked() {
        let space = SearchSpace::new(vec![
            Param { name: "learning_rate".into(), dist: float(1e-5, 1e-3, true, None) },
            Param {
                name: "batch_size".into(),
                dist: Distribution::Categorical { choices: vec![ParamValue::Int(16), ParamValue::Int(32)] },
            },
        ])
        .unwrap();
        let s = space.parse_assignments(&["learning_rate=3e-5".into(), "batch_size=16".into()]).unwrap();
        assert_eq!(s["learning_rate"], ParamValue::Float(3e-5));
        assert_eq!(s["batch_size"], ParamValue::Int(16));
        assert!(matches!(space.parse_assignments(&["learning_rate=1".into(), "batch_size=16".into()]), Err(SpaceError::OutOfSpace { .. })));
        // A partial point leaves the rest to the sampler; an empty one is refused.
        let partial = space.parse_assignments(&["learning_rate=3e-5".into()]).unwrap();
        assert_eq!(partial.len(), 1);
        assert!(matches!(space.parse_assignments(&[]), Err(SpaceError::EmptyPoint { .. })));
        assert!(matches!(space.validate(&partial), Err(SpaceError::MissingParam { .. })), "full points stay full");
        assert!(matches!(space.parse_assignments(&["lr=3e-5".into()]), Err(SpaceError::UnknownParam { .. })));
        // A misspelt name is told the one it most likely meant; a far one is not.
        let typo = space.parse_assignments(&["learnig_rate=3e-5".into()]).unwrap_err().to_string();
        assert!(typo.ends_with("; did you mean `learning_rate`?"), "{typo}");
        let far = space.parse_assignments(&["momentum=0.9".into()]).unwrap_err().to_string();
        assert!(!far.contains("did you mean"), "{far}");
    }

    fn any_numeric() -> impl Strategy<Value = Distribution> {
        prop_oneof![
            (-100.0f64..100.0, 0.001f64..100.0).prop_map(|(l, w)| float(l, l + w, false, None)),
            (1e-8f64..10.0, 1.001f64..1e4).prop_map(|(l, r)| float(l, l * r, true, None)),
            (-50.0f64..50.0, 1usize..30, 0.01f64..3.0).prop_map(|(l, k, s)| float(l, l + k as f64 * s + s * 0.3, false, Some(s))),
            (-50i64..50, 1i64..100, 1i64..7).prop_map(|(l, w, s)| Distribution::Int { low: l, high: l + w, step: s, log: false }),
            (1i64..50, 1i64..1000).prop_map(|(l, w)| Distribution::Int { low: l, high: l + w, step: 1, log: true }),
        ]
    }

    proptest! {
        #[test]
        fn from_unit_stays_in_bounds_and_on_step(d in any_numeric(), u in 0.0f64..=1.0) {
            let v = d.from_unit(u);
            prop_assert!(d.contains(&v), "{:?} not in {:?}", v, d);
            let back = d.to_unit(&v).unwrap();
            prop_assert!((0.0..=1.0).contains(&back));
        }

        #[test]
        fn unit_map_round_trips_continuous_floats(l in -10.0f64..10.0, w in 0.1f64..10.0, u in 0.0f64..=1.0) {
            let d = float(l, l + w, false, None);
            let v = d.from_unit(u);
            prop_assert!((d.to_unit(&v).unwrap() - u).abs() < 1e-9);
        }

        #[test]
        fn a_random_point_holds_exactly_the_parameters_that_apply(seed in any::<u64>()) {
            use rand::SeedableRng;
            let space = optimizer_space();
            let p = crate::sampler::RandomSampler::draw(&space, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            prop_assert!(space.validate(&p).is_ok(), "{:?}", p);
            let sgd = p["optimizer"] == ParamValue::Str("sgd".into());
            prop_assert_eq!(p.contains_key("momentum"), sgd);
            prop_assert_eq!(p.contains_key("nesterov"), sgd && p["momentum"].as_f64().is_some());
            prop_assert_eq!(p.contains_key("beta2"), !sgd);
        }

        #[test]
        fn grid_values_are_valid_and_distinct(d in any_numeric(), n in 1usize..12) {
            let g = d.grid_values(n);
            prop_assert!(!g.is_empty());
            for (i, v) in g.iter().enumerate() {
                prop_assert!(d.contains(v));
                for w in &g[i + 1..] { prop_assert!(!v.same_choice(w)); }
            }
        }
    }
}
