//! The study file exactly as the user wrote it: serde types with `deny_unknown_fields`,
//! defaults, and spans on the parts whose errors are found after parsing.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::space::ParamValue;

/// The whole study file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyFile {
    pub study: StudySection,
    /// Either a path to a search-space file, or a `[space]` table of parameters (which may
    /// `include` a file and override single parameters of it).
    pub space: Option<Spanned<SpaceSpec>>,
    #[serde(default)]
    pub sampler: SamplerSection,
    pub objective: ObjectiveSection,
    #[serde(default)]
    pub execution: ExecutionSection,
    #[serde(default)]
    pub pruner: PrunerSection,
    /// `[model]`, `[data]` and `[train]` are read by the fine-tuning objective.
    pub model: Option<Spanned<toml::Table>>,
    pub data: Option<Spanned<toml::Table>>,
    pub train: Option<Spanned<toml::Table>>,
    /// `[soup]`, read by the fine-tuning objective (`trainer::soup::SoupSection`).
    pub soup: Option<Spanned<toml::Table>>,
    /// `[[enqueue]]` tables: points the study runs first, in file order (one value per
    /// parameter; parameters left out are the sampler's to choose), queued once when the
    /// study is first run.
    #[serde(default)]
    pub enqueue: Vec<Spanned<IndexMap<String, ParamValue>>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudySection {
    pub name: Spanned<String>,
    pub direction: Option<Spanned<String>>,
    /// The name of the value being optimised (a validation metric for fine-tuning).
    pub metric: Option<Spanned<String>>,
    pub n_trials: Option<Spanned<u64>>,
    /// Stop sampling new trials after this many finished trials in a row without improving
    /// the best value (by more than `min_delta`).
    pub patience: Option<Spanned<u64>>,
    pub min_delta: Option<Spanned<f64>>,
    /// e.g. "2h", "30m", "1h30m", "90s".
    pub timeout: Option<Spanned<String>>,
    #[serde(default)]
    pub seed: u64,
    /// The SQLite file; default `<name>.db` beside the study file.
    pub storage: Option<Spanned<String>>,
}

/// `space = "file.toml"`, or a `[space]` table of parameters that may `include = "file.toml"`
/// and override single parameters of it.
#[derive(Debug, Clone)]
pub enum SpaceSpec {
    File(String),
    Table { include: Option<String>, params: IndexMap<String, Spanned<ParamDef>> },
}

impl<'de> Deserialize<'de> for SpaceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SpaceSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a search-space file path or a table of parameters")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SpaceSpec, E> {
                Ok(SpaceSpec::File(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SpaceSpec, A::Error> {
                let mut include = None;
                let mut params = IndexMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "include" {
                        include = Some(map.next_value::<String>()?);
                    } else {
                        let def = map.next_value::<Spanned<ParamDef>>()?;
                        params.insert(key, def);
                    }
                }
                Ok(SpaceSpec::Table { include, params })
            }
        }
        d.deserialize_any(V)
    }
}

/// A file of parameter definitions (what `search_spaces/*.toml` hold).
pub type SpaceFile = IndexMap<String, Spanned<ParamDef>>;

/// One parameter as written: a table with `type` (`float`, `int`, `categorical`), or without
/// it where the rest says which (`choices` is categorical; bounds of which one is written
/// with a decimal point or exponent are a float range), or a bare list of choices.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ParamDef {
    #[serde(flatten)]
    pub kind: ParamKind,
    /// `when = { optimizer = "sgd" }`: the parameter applies only when each named (earlier,
    /// categorical) parameter takes the value, or one of the list of values, given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<IndexMap<String, WhenValues>>,
}

/// The value, or values, a parent parameter must take for a conditional one to apply.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum WhenValues {
    Many(Vec<ParamValue>),
    One(ParamValue),
}

impl WhenValues {
    pub fn values(&self) -> Vec<ParamValue> {
        match self {
            WhenValues::Many(v) => v.clone(),
            WhenValues::One(v) => vec![v.clone()],
        }
    }
}

/// What kind of range a parameter is, with its bounds or choices.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ParamKind {
    Float {
        low: f64,
        high: f64,
        #[serde(default)]
        log: bool,
        step: Option<f64>,
    },
    Int {
        low: i64,
        high: i64,
        step: Option<i64>,
        #[serde(default)]
        log: bool,
    },
    Categorical {
        choices: Vec<ParamValue>,
    },
}

impl<'de> Deserialize<'de> for ParamDef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ParamDef;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a parameter table such as { type = \"float\", low = 1e-5, high = 1e-3, log = true }, or a list of choices")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<ParamDef, E> {
                Err(single_value(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ParamDef, E> {
                Err(single_value(v))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<ParamDef, E> {
                Err(single_value(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ParamDef, E> {
                Err(single_value(format!("{v:?}")))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<ParamDef, A::Error> {
                let mut choices = Vec::new();
                while let Some(v) = seq.next_element::<ParamValue>()? {
                    choices.push(v);
                }
                Ok(ParamDef { kind: ParamKind::Categorical { choices }, when: None })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<ParamDef, A::Error> {
                let raw = RawParamDef::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                raw.resolve().map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A parameter given one value, which leaves nothing to search.
fn single_value<E: serde::de::Error>(v: impl std::fmt::Display) -> E {
    E::custom(format!(
        "`{v}` is one value, not a range to search: write {{ type = \"float\", low = …, high = … }} or a list of \
         choices (a fixed training option goes under [train])"
    ))
}

/// A parameter table's fields before its type is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParamDef {
    #[serde(rename = "type")]
    kind: Option<String>,
    low: Option<ParamValue>,
    high: Option<ParamValue>,
    step: Option<ParamValue>,
    log: Option<bool>,
    choices: Option<Vec<ParamValue>>,
    when: Option<IndexMap<String, WhenValues>>,
}

impl RawParamDef {
    fn resolve(mut self) -> Result<ParamDef, String> {
        let when = self.when.take();
        Ok(ParamDef { kind: self.kind()?, when })
    }

    fn kind(self) -> Result<ParamKind, String> {
        let kind = match self.kind.as_deref() {
            Some(k @ ("float" | "int" | "categorical")) => k,
            Some(other) => return Err(format!("unknown variant `{other}`, expected one of `float`, `int`, `categorical`")),
            None if self.choices.is_some() => "categorical",
            None => match (&self.low, &self.high) {
                (Some(low), Some(high)) => {
                    let written_as_float = |v: &Option<ParamValue>| matches!(v, Some(ParamValue::Float(_)));
                    if written_as_float(&self.low) || written_as_float(&self.high) || written_as_float(&self.step) {
                        "float"
                    } else {
                        return Err(format!(
                            "missing field `type`: bounds {low} and {high} may mean integers or any number between; \
                             add `type = \"int\"` or `type = \"float\"` (or write them as {low}.0 and {high}.0)"
                        ));
                    }
                }
                _ => {
                    return Err("missing field `type` (`float` or `int` with `low` and `high`, or `categorical` with `choices`)".to_string())
                }
            },
        };
        let not_for = |field: &str, present: bool| -> Result<(), String> {
            if present {
                Err(format!("`{field}` does not apply to a {kind} parameter"))
            } else {
                Ok(())
            }
        };
        match kind {
            "categorical" => {
                not_for("low", self.low.is_some())?;
                not_for("high", self.high.is_some())?;
                not_for("step", self.step.is_some())?;
                not_for("log", self.log.is_some())?;
                Ok(ParamKind::Categorical { choices: self.choices.ok_or("missing field `choices`")? })
            }
            "float" => {
                not_for("choices", self.choices.is_some())?;
                let number = |name: &str, v: Option<ParamValue>| -> Result<Option<f64>, String> {
                    v.map(|v| v.as_f64().ok_or_else(|| format!("`{name}` must be a number, not {}", v.to_json()))).transpose()
                };
                Ok(ParamKind::Float {
                    low: number("low", self.low)?.ok_or("missing field `low`")?,
                    high: number("high", self.high)?.ok_or("missing field `high`")?,
                    log: self.log.unwrap_or(false),
                    step: number("step", self.step)?,
                })
            }
            _ => {
                not_for("choices", self.choices.is_some())?;
                let integer = |name: &str, v: Option<ParamValue>| -> Result<Option<i64>, String> {
                    v.map(|v| match v {
                        ParamValue::Int(i) => Ok(i),
                        other => Err(format!("`{name}` of an int parameter must be an integer, not {}", other.to_json())),
                    })
                    .transpose()
                };
                Ok(ParamKind::Int {
                    low: integer("low", self.low)?.ok_or("missing field `low`")?,
                    high: integer("high", self.high)?.ok_or("missing field `high`")?,
                    step: integer("step", self.step)?,
                    log: self.log.unwrap_or(false),
                })
            }
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSection {
    #[serde(default = "default_sampler_kind")]
    pub kind: Spanned<String>,
    /// Defaults to the study seed.
    pub seed: Option<u64>,
    /// How many values a float parameter takes in a grid.
    #[serde(default = "default_grid_points")]
    pub grid_points: usize,
    /// Quasi-random trials before the GP takes over.
    pub n_startup: Option<usize>,
}

fn default_sampler_kind() -> Spanned<String> {
    Spanned::new(0..0, "random".to_string())
}
fn default_grid_points() -> usize {
    5
}

impl Default for SamplerSection {
    fn default() -> Self {
        SamplerSection { kind: default_sampler_kind(), seed: None, grid_points: default_grid_points(), n_startup: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSection {
    pub kind: Spanned<String>,
    /// For `synthetic`: one of the built-in functions ([`crate::objective::SyntheticFunction`]).
    pub function: Option<Spanned<String>>,
    /// For `synthetic`: Gaussian noise sigma added to each value.
    #[serde(default)]
    pub noise: f64,
    /// For `command`: the program and its arguments.
    pub command: Option<Spanned<Vec<String>>>,
    /// For `command`: the working directory (default: the study file's folder).
    pub cwd: Option<String>,
    /// For `synthetic`: report a learning curve of this many steps (per epoch for
    /// `sft-like`, in all for the others), so pruners have intermediate values to work on.
    pub steps: Option<Spanned<i64>>,
    /// For `synthetic` with `steps`: how long each step sleeps, e.g. "10ms".
    pub step_time: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DevicesSpec {
    Word(String),
    List(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionSection {
    pub devices: Option<Spanned<DevicesSpec>>,
    #[serde(default = "one")]
    pub trials_per_device: usize,
    #[serde(default = "one")]
    pub max_retries: usize,
    /// A trial that prints nothing for this long is killed ("timeout").
    pub trial_timeout: Option<Spanned<String>>,
    /// How often a running trial's heartbeat is written.
    pub heartbeat_interval: Option<Spanned<String>>,
    /// A RUNNING trial on another host whose heartbeat is older than this is taken as dead.
    pub heartbeat_timeout: Option<Spanned<String>>,
    /// Stop starting trials after this many failures in a row (a broken objective).
    #[serde(default = "ten")]
    pub max_consecutive_failures: usize,
}

fn ten() -> usize {
    10
}

fn one() -> usize {
    1
}

impl Default for ExecutionSection {
    fn default() -> Self {
        ExecutionSection {
            devices: None,
            trials_per_device: 1,
            max_retries: 1,
            trial_timeout: None,
            heartbeat_interval: None,
            heartbeat_timeout: None,
            max_consecutive_failures: ten(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PrunerSection {
    pub kind: Option<Spanned<String>>,
    /// median: trials that must finish before pruning starts.
    pub n_startup_trials: Option<Spanned<usize>>,
    /// median: steps of a trial before it may be pruned.
    pub n_warmup_steps: Option<Spanned<i64>>,
    /// asha, hyperband: the step of the first rung.
    pub min_resource: Option<Spanned<i64>>,
    /// asha, hyperband: η, one trial in η goes on at each rung (default 3).
    pub reduction_factor: Option<Spanned<i64>>,
    /// asha: no rung at or past this step (optional); hyperband: a full trial's steps (required).
    pub max_resource: Option<Spanned<i64>>,
    /// asha: shift the rungs up by this many powers of η (default 0).
    pub min_early_stopping_rate: Option<Spanned<i64>>,
    /// asha, hyperband: prune at a rung until more than this many trials have reached it (default 0).
    pub bootstrap_count: Option<Spanned<usize>>,
}
