//! Study files: reading the TOML, and resolving it into a validated `StudyConfig`.
//!
//! Every mistake stops here, before anything is written, with the file, line, column and key
//! and what was expected. (This module builds the validated `SearchSpace` itself, so the
//! error for a broken rule can point at the span where the parameter was written.)

pub mod file;
pub mod setup;
pub mod suggest;

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use crate::objective::synthetic_runner::Curve;
use crate::objective::SyntheticFunction;
use crate::space::{Condition, Distribution, Param, ParamSet, SearchSpace};
use crate::trial::{Direction, Patience};
use file::{DevicesSpec, ParamDef, ParamKind, SpaceFile, SpaceSpec, StudyFile};

/// A study file that cannot be used, with where and why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    /// The dotted key, where known (`space.learning_rate`).
    pub key: Option<String>,
    pub message: String,
    /// The offending source line, for display.
    pub snippet: Option<String>,
}

impl ConfigError {
    fn render(&self) -> String {
        let mut s = self.file.display().to_string();
        if let Some((l, c)) = self.position {
            s.push_str(&format!(":{l}:{c}"));
        }
        s.push_str(": ");
        if let Some(k) = &self.key {
            s.push_str(&format!("`{k}`: "));
        }
        s.push_str(&self.message);
        if let (Some(snip), Some((l, _))) = (&self.snippet, self.position) {
            s.push_str(&format!("\n    {l} | {snip}"));
        }
        s
    }

    fn plain(file: &Path, key: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), position: None, key: key.map(str::to_string), message: message.into(), snippet: None }
    }
}

/// The source text of one file, to turn byte spans into line/column and snippets.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    fn line_text(&self, line: usize) -> Option<String> {
        self.text.lines().nth(line.saturating_sub(1)).map(|l| l.trim_end().to_string())
    }

    /// The dotted key at `line`: the nearest `[table]` header above it and the `key =` on it.
    fn key_at(&self, line: usize) -> Option<String> {
        let lines: Vec<&str> = self.text.lines().collect();
        let here = lines.get(line.checked_sub(1)?)?.trim();
        let mut table = None;
        for l in lines[..line - 1].iter().rev() {
            let t = l.trim();
            if t.starts_with('[') {
                table = Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
                break;
            }
        }
        let key = if here.starts_with('[') { None } else { here.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string()) };
        match (table, key) {
            (Some(t), Some(k)) => Some(format!("{t}.{k}")),
            (Some(t), None) => Some(t),
            (None, k) => k,
        }
    }

    fn error_at(&self, span: std::ops::Range<usize>, key: Option<String>, message: impl Into<String>) -> ConfigError {
        if span.start == 0 && span.end == 0 {
            return ConfigError::plain(self.path, key.as_deref(), message);
        }
        let (l, c) = self.line_col(span.start);
        ConfigError {
            file: self.path.to_path_buf(),
            position: Some((l, c)),
            key: key.or_else(|| self.key_at(l)),
            message: message.into(),
            snippet: self.line_text(l),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let (l, c) = self.line_col(span.start);
            let key = self.key_at(l);
            let mut message = suggest::with_suggestion(e.message().trim());
            // `space = "file.toml"` written under [study] belongs to [study] in TOML.
            if let Some((table, name)) = key.as_deref().and_then(|k| k.split_once('.')) {
                if TOP_LEVEL_KEYS.contains(&name) && !name.contains('.') && message.starts_with("unknown field") {
                    let instead = if name == "space" { "[space] with `include = \"file.toml\"`" } else { "its own [table]" };
                    message.push_str(&format!(
                        "; `{name}` is a top-level key, but a key written below a [table] header belongs to that table \
                         (here [{table}]): move it above the first header, or write {instead}"
                    ));
                }
            }
            ConfigError { file: self.path.to_path_buf(), position: Some((l, c)), key, message, snippet: self.line_text(l) }
        })
    }
}

/// The top-level keys of a study file (its tables, and `space = "file.toml"`).
const TOP_LEVEL_KEYS: &[&str] =
    &["study", "space", "sampler", "objective", "execution", "pruner", "model", "data", "train", "soup", "enqueue"];

/// Which sampler the study uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    Grid,
    Random,
    Gp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    pub kind: SamplerKind,
    pub seed: u64,
    pub grid_points: usize,
    pub n_startup: Option<usize>,
}

/// What a trial evaluates.
#[derive(Debug, Clone, PartialEq)]
pub enum ObjectiveConfig {
    /// `curve`: report a per-step learning curve (`[objective] steps`), for pruning.
    Synthetic {
        function: SyntheticFunction,
        noise: f64,
        curve: Option<Curve>,
    },
    Command {
        argv: Vec<String>,
        cwd: PathBuf,
    },
    /// Candle fine-tuning; its settings are in `StudyConfig::{model, data, train}`.
    Finetune,
    /// Evaluated by the user's own program, which asks for trials (`sft-search ask`) and
    /// reports their results (`sft-search tell`); `run` has nothing to run.
    External,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionConfig {
    /// One entry per device (`cpu`, `cuda:0`, …); `auto` already expanded.
    pub devices: Vec<String>,
    pub trials_per_device: usize,
    pub max_retries: usize,
    pub trial_timeout: Option<Duration>,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub max_consecutive_failures: usize,
}

impl ExecutionConfig {
    /// Every device slot: each device repeated `trials_per_device` times.
    pub fn slots(&self) -> Vec<String> {
        self.devices.iter().flat_map(|d| std::iter::repeat_n(d.clone(), self.trials_per_device.max(1))).collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum PrunerConfig {
    None,
    Median {
        n_startup_trials: usize,
        n_warmup_steps: i64,
    },
    Asha {
        min_resource: i64,
        reduction_factor: u32,
        max_resource: Option<i64>,
        min_early_stopping_rate: u32,
        bootstrap_count: usize,
    },
    /// `study_name` salts the trial → bracket hash, as Optuna's does.
    Hyperband {
        min_resource: i64,
        max_resource: i64,
        reduction_factor: u32,
        bootstrap_count: usize,
        study_name: String,
    },
}

/// A validated study definition.
#[derive(Debug, Clone)]
pub struct StudyConfig {
    pub path: PathBuf,
    pub dir: PathBuf,
    /// The study file's text, stored with the study.
    pub text: String,
    pub name: String,
    pub direction: Direction,
    pub metric: String,
    /// `None` only for a grid study, which then runs the whole grid.
    pub n_trials: Option<u64>,
    /// `[study] patience` and `min_delta`: stop once the best has not improved for a while.
    pub patience: Option<Patience>,
    pub timeout: Option<Duration>,
    pub seed: u64,
    pub storage: PathBuf,
    pub space: SearchSpace,
    pub sampler: SamplerConfig,
    pub objective: ObjectiveConfig,
    pub execution: ExecutionConfig,
    pub pruner: PrunerConfig,
    pub model: Option<toml::Table>,
    pub data: Option<toml::Table>,
    pub train: Option<toml::Table>,
    /// `[[enqueue]]`: points to run first, validated against the space, in file order.
    pub enqueue: Vec<ParamSet>,
}

impl StudyConfig {
    /// Reads and validates a study file.
    pub fn load(path: &Path) -> Result<StudyConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::plain(path, None, format!("cannot read the study file: {e}")))?;
        let src = Source { path, text: &text };
        let file: StudyFile = src.parse()?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        // Absolute, so paths stored in the database (checkpoints) mean the same from anywhere.
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        resolve(&src, file, dir)
    }

    /// Reads tables of the study file into types defined by other layers (the fine-tuning
    /// objective's `[model]`, `[data]`, `[train]`), with the same file:line:column errors as
    /// the rest of the file. `T` should not deny unknown fields at its top level.
    pub fn parse_tables<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        Source { path: &self.path, text: &self.text }.parse()
    }

    /// Resolves a path value of the study file: `${VAR}` expanded, relative to the file.
    pub fn resolve_path(&self, key: &str, raw: &str) -> Result<PathBuf, ConfigError> {
        let src = Source { path: &self.path, text: &self.text };
        resolve_path(&src, 0..0, key, raw, &self.dir)
    }

    /// The folder where trials keep their artifacts (checkpoints): beside the database.
    pub fn artifacts_root(&self) -> PathBuf {
        let stem = self.storage.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| self.name.clone());
        self.storage.parent().unwrap_or(Path::new(".")).join(format!("{stem}.trials"))
    }
}

/// Expands `${VAR}` from the environment; an unset variable is an error naming it.
pub fn expand_env(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in `{s}`"))?;
        let name = &after[..end];
        let val = std::env::var(name).map_err(|_| format!("environment variable `{name}` is not set (used in `{s}`)"))?;
        out.push_str(&val);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Resolves a path written in a study file: `${VAR}` expanded, relative to `base`.
fn resolve_path(src: &Source, span: std::ops::Range<usize>, key: &str, raw: &str, base: &Path) -> Result<PathBuf, ConfigError> {
    let expanded = expand_env(raw).map_err(|m| src.error_at(span, Some(key.into()), m))?;
    let p = PathBuf::from(expanded);
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

/// Parses "2h", "30m", "1h30m", "90s", "500ms", "1.5h" or a plain number of seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphabetic() {
                unit.push(n);
                chars.next();
            } else {
                break;
            }
        }
        let v: f64 = num.parse().ok()?;
        num.clear();
        let mult = match unit.as_str() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => return None,
        };
        total += v * mult;
        any = true;
    }
    if !num.is_empty() || !any {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

fn duration_field(src: &Source, field: &Option<Spanned<String>>, key: &str) -> Result<Option<Duration>, ConfigError> {
    match field {
        None => Ok(None),
        Some(s) => parse_duration(s.get_ref()).map(Some).ok_or_else(|| {
            src.error_at(
                s.span(),
                Some(key.into()),
                format!("`{}` is not a duration (expected e.g. \"90s\", \"30m\", \"2h\", \"1h30m\")", s.get_ref()),
            )
        }),
    }
}

fn param_to_dist(def: &ParamDef) -> Distribution {
    match &def.kind {
        ParamKind::Float { low, high, log, step } => Distribution::Float { low: *low, high: *high, log: *log, step: *step },
        ParamKind::Int { low, high, step, log } => Distribution::Int { low: *low, high: *high, step: step.unwrap_or(1), log: *log },
        ParamKind::Categorical { choices } => Distribution::Categorical { choices: choices.clone() },
    }
}

/// Reads a search-space file.
fn load_space_file(path: &Path) -> Result<(String, IndexMap<String, Spanned<ParamDef>>), ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::plain(path, None, format!("cannot read the search-space file: {e}")))?;
    let src = Source { path, text: &text };
    let f: SpaceFile = src.parse()?;
    Ok((text, f))
}

fn resolve_space(src: &Source, spec: Option<&Spanned<SpaceSpec>>, dir: &Path) -> Result<SearchSpace, ConfigError> {
    let spec =
        spec.ok_or_else(|| ConfigError::plain(src.path, Some("space"), "the study has no `[space]` (or `space = \"file.toml\"`)"))?;
    // Definitions, each with the file they were written in (for error positions).
    let mut defs: IndexMap<String, (Spanned<ParamDef>, PathBuf, String)> = IndexMap::new();
    let (include, inline) = match spec.get_ref() {
        SpaceSpec::File(f) => (Some(f.clone()), IndexMap::new()),
        SpaceSpec::Table { include, params } => (include.clone(), params.clone()),
    };
    if let Some(inc) = include {
        let path = resolve_path(src, spec.span(), "space", &inc, dir)?;
        if !path.is_file() {
            return Err(src.error_at(spec.span(), Some("space".into()), format!("search-space file `{}` not found", path.display())));
        }
        let (text, params) = load_space_file(&path)?;
        for (k, v) in params {
            defs.insert(k, (v, path.clone(), text.clone()));
        }
    }
    for (k, v) in inline {
        defs.insert(k, (v, src.path.to_path_buf(), src.text.to_string()));
    }
    if defs.is_empty() {
        return Err(src.error_at(spec.span(), Some("space".into()), "the search space has no parameters"));
    }
    let mut params = Vec::new();
    let mut conditions = Vec::new();
    for (name, (def, file, text)) in &defs {
        let dist = param_to_dist(def.get_ref());
        let fsrc = Source { path: file, text };
        dist.validate(name).map_err(|e| fsrc.error_at(def.span(), Some(format!("space.{name}")), e.to_string()))?;
        params.push(Param { name: name.clone(), dist });
        for (parent, values) in def.get_ref().when.iter().flatten() {
            conditions.push(Condition { param: name.clone(), parent: parent.clone(), values: values.values() });
        }
    }
    // A condition's mistake is reported at the parameter that has it.
    let at = |e: crate::space::SpaceError| {
        if let crate::space::SpaceError::BadCondition { name, .. } = &e {
            if let Some((def, file, text)) = defs.get(name) {
                return Source { path: file, text }.error_at(def.span(), Some(format!("space.{name}.when")), e.to_string());
            }
        }
        src.error_at(spec.span(), Some("space".into()), e.to_string())
    };
    SearchSpace::with_conditions(params, conditions).map_err(at)
}

fn resolve(src: &Source, f: StudyFile, dir: PathBuf) -> Result<StudyConfig, ConfigError> {
    let name = f.study.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(src.error_at(f.study.name.span(), Some("study.name".into()), "the study name must not be empty"));
    }
    let space = resolve_space(src, f.space.as_ref(), &dir)?;
    let enqueue = f
        .enqueue
        .iter()
        .enumerate()
        .map(|(i, point)| {
            let set: ParamSet = point.get_ref().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            space
                .validate_partial(&set)
                .map_err(|e| src.error_at(point.span(), Some(format!("enqueue[{i}]")), format!("point {} of `[[enqueue]]`: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Objective.
    let kind = f.objective.kind.get_ref().as_str();
    let objective = match kind {
        "synthetic" => {
            let func = f.objective.function.as_ref().ok_or_else(|| {
                let names: Vec<&str> = SyntheticFunction::ALL.iter().map(|f| f.name()).collect();
                src.error_at(
                    f.objective.kind.span(),
                    Some("objective.function".into()),
                    format!("a synthetic objective needs `function` (one of: {})", names.join(", ")),
                )
            })?;
            let function: SyntheticFunction = func.get_ref().parse().map_err(|m: String| {
                let hint = suggest::hint(func.get_ref(), SyntheticFunction::ALL.iter().map(|f| f.name()));
                src.error_at(func.span(), Some("objective.function".into()), format!("{m}{hint}"))
            })?;
            if !(f.objective.noise >= 0.0 && f.objective.noise.is_finite()) {
                return Err(src.error_at(func.span(), Some("objective.noise".into()), "noise must be a finite sigma >= 0"));
            }
            // Every parameter the function needs must be in the space.
            for p in function.space().params() {
                if space.get(&p.name).is_none() {
                    return Err(src.error_at(
                        func.span(),
                        Some("space".into()),
                        format!("function `{}` needs parameter `{}` ({}) in the space", function.name(), p.name, p.dist.describe()),
                    ));
                }
            }
            let step_time = duration_field(src, &f.objective.step_time, "objective.step_time")?;
            let curve = match &f.objective.steps {
                None if step_time.is_some() => {
                    let span = f.objective.step_time.as_ref().map(|s| s.span()).unwrap_or(0..0);
                    return Err(src.error_at(
                        span,
                        Some("objective.step_time".into()),
                        "`step_time` needs `steps` (the learning curve's length)",
                    ));
                }
                None => None,
                Some(n) => match u32::try_from(*n.get_ref()) {
                    Ok(steps) if steps >= 1 => Some(Curve { steps, step_time: step_time.unwrap_or_default() }),
                    _ => {
                        return Err(src.error_at(
                            n.span(),
                            Some("objective.steps".into()),
                            format!("steps must be between 1 and {} (got {})", u32::MAX, n.get_ref()),
                        ))
                    }
                },
            };
            ObjectiveConfig::Synthetic { function, noise: f.objective.noise, curve }
        }
        "command" => {
            let cmd = f.objective.command.as_ref().ok_or_else(|| {
                src.error_at(
                    f.objective.kind.span(),
                    Some("objective.command".into()),
                    "a command objective needs `command = [\"program\", \"arg\", ...]`",
                )
            })?;
            if cmd.get_ref().is_empty() || cmd.get_ref()[0].trim().is_empty() {
                return Err(src.error_at(cmd.span(), Some("objective.command".into()), "`command` must name a program"));
            }
            let argv = cmd
                .get_ref()
                .iter()
                .map(|a| expand_env(a).map_err(|m| src.error_at(cmd.span(), Some("objective.command".into()), m)))
                .collect::<Result<Vec<_>, _>>()?;
            let cwd = match &f.objective.cwd {
                Some(c) => resolve_path(src, f.objective.kind.span(), "objective.cwd", c, &dir)?,
                None => dir.clone(),
            };
            ObjectiveConfig::Command { argv, cwd }
        }
        "finetune" => ObjectiveConfig::Finetune,
        "external" => ObjectiveConfig::External,
        other => {
            return Err(src.error_at(
                f.objective.kind.span(),
                Some("objective.kind".into()),
                format!("unknown objective kind `{other}` (expected synthetic, command, finetune or external)"),
            ))
        }
    };
    if objective == ObjectiveConfig::Finetune && (f.model.is_none() || f.data.is_none()) {
        return Err(src.error_at(
            f.objective.kind.span(),
            Some("objective.kind".into()),
            "a finetune objective needs `[model]` and `[data]` tables",
        ));
    }
    if let (Some(soup), false) = (&f.soup, objective == ObjectiveConfig::Finetune) {
        return Err(src.error_at(
            soup.span(),
            Some("soup".into()),
            "`[soup]` averages fine-tuned checkpoints: it needs `[objective] kind = \"finetune\"`",
        ));
    }

    // Metric and direction.
    let metric = f.study.metric.as_ref().map(|m| m.get_ref().clone()).unwrap_or_else(|| "value".to_string());
    let direction = match &f.study.direction {
        Some(d) => match d.get_ref().to_ascii_lowercase().as_str() {
            "minimize" | "min" => Direction::Minimize,
            "maximize" | "max" => Direction::Maximize,
            other => {
                return Err(src.error_at(
                    d.span(),
                    Some("study.direction".into()),
                    format!("`{other}` is not a direction (expected \"maximize\" or \"minimize\")"),
                ))
            }
        },
        None => match (&objective, metric.as_str()) {
            (ObjectiveConfig::Synthetic { .. }, _) | (_, "loss") => Direction::Minimize,
            (ObjectiveConfig::Finetune, _) => Direction::Maximize,
            _ => {
                return Err(src.error_at(
                    f.study.name.span(),
                    Some("study.direction".into()),
                    "`direction` is required (\"maximize\" or \"minimize\")",
                ))
            }
        },
    };

    // Sampler.
    let sampler_kind = match f.sampler.kind.get_ref().as_str() {
        "grid" => SamplerKind::Grid,
        "random" => SamplerKind::Random,
        "gp" => SamplerKind::Gp,
        other => {
            return Err(src.error_at(
                f.sampler.kind.span(),
                Some("sampler.kind".into()),
                format!("unknown sampler `{other}` (expected grid, random or gp)"),
            ))
        }
    };
    if f.sampler.grid_points == 0 {
        return Err(ConfigError::plain(src.path, Some("sampler.grid_points"), "grid_points must be at least 1"));
    }
    let sampler = SamplerConfig {
        kind: sampler_kind,
        seed: f.sampler.seed.unwrap_or(f.study.seed),
        grid_points: f.sampler.grid_points,
        n_startup: f.sampler.n_startup,
    };

    // Budget.
    let n_trials = match &f.study.n_trials {
        Some(n) if *n.get_ref() == 0 => return Err(src.error_at(n.span(), Some("study.n_trials".into()), "n_trials must be at least 1")),
        Some(n) => Some(*n.get_ref()),
        None if sampler_kind == SamplerKind::Grid => None,
        None => {
            return Err(src.error_at(
                f.study.name.span(),
                Some("study.n_trials".into()),
                "`n_trials` is required (only a grid study may leave it out, to run the whole grid)",
            ))
        }
    };
    let patience = match (&f.study.patience, &f.study.min_delta) {
        (Some(p), _) if *p.get_ref() == 0 => {
            return Err(src.error_at(p.span(), Some("study.patience".into()), "patience must be at least 1 (trials without improvement)"))
        }
        (_, Some(d)) if !(d.get_ref().is_finite() && *d.get_ref() >= 0.0) => {
            return Err(src.error_at(d.span(), Some("study.min_delta".into()), "min_delta must be a finite number >= 0"))
        }
        (None, Some(d)) => {
            return Err(src.error_at(
                d.span(),
                Some("study.min_delta".into()),
                "`min_delta` is the least improvement `patience` counts: set `patience` (trials) too",
            ))
        }
        (Some(p), d) => Some(Patience { trials: *p.get_ref(), min_delta: d.as_ref().map_or(0.0, |d| *d.get_ref()), direction }),
        (None, None) => None,
    };
    let timeout = duration_field(src, &f.study.timeout, "study.timeout")?;
    let storage = match &f.study.storage {
        Some(s) => resolve_path(src, s.span(), "study.storage", s.get_ref(), &dir)?,
        None => dir.join(format!("{name}.db")),
    };

    // Execution.
    let e = &f.execution;
    let devices = match &e.devices {
        None => vec!["cpu".to_string()],
        Some(d) => parse_devices(d.get_ref()).map_err(|m| src.error_at(d.span(), Some("execution.devices".into()), m))?,
    };
    if e.trials_per_device == 0 {
        return Err(ConfigError::plain(src.path, Some("execution.trials_per_device"), "trials_per_device must be at least 1"));
    }
    let heartbeat_interval = duration_field(src, &e.heartbeat_interval, "execution.heartbeat_interval")?.unwrap_or(Duration::from_secs(5));
    let heartbeat_timeout = duration_field(src, &e.heartbeat_timeout, "execution.heartbeat_timeout")?
        .unwrap_or_else(|| (heartbeat_interval * 12).max(Duration::from_secs(60)));
    let execution = ExecutionConfig {
        devices,
        trials_per_device: e.trials_per_device,
        max_retries: e.max_retries,
        trial_timeout: duration_field(src, &e.trial_timeout, "execution.trial_timeout")?,
        heartbeat_interval,
        heartbeat_timeout,
        max_consecutive_failures: e.max_consecutive_failures.max(1),
    };

    let pruner = resolve_pruner(src, &f.pruner, &name)?;

    Ok(StudyConfig {
        path: src.path.to_path_buf(),
        dir,
        text: src.text.to_string(),
        name,
        direction,
        metric,
        n_trials,
        patience,
        timeout,
        seed: f.study.seed,
        storage,
        space,
        sampler,
        objective,
        execution,
        pruner,
        model: f.model.map(|m| m.into_inner()),
        data: f.data.map(|m| m.into_inner()),
        train: f.train.map(|m| m.into_inner()),
        enqueue,
    })
}

/// The `[pruner]` table: its kind, and the keys that kind takes (a key meant for another kind
/// is an error rather than silently ignored).
fn resolve_pruner(src: &Source, p: &file::PrunerSection, study_name: &str) -> Result<PrunerConfig, ConfigError> {
    let kind = p.kind.as_ref().map(|k| k.get_ref().as_str()).unwrap_or("none");
    let kind_span = p.kind.as_ref().map(|k| k.span()).unwrap_or(0..0);
    let given: [(&str, Option<std::ops::Range<usize>>); 7] = [
        ("n_startup_trials", p.n_startup_trials.as_ref().map(|v| v.span())),
        ("n_warmup_steps", p.n_warmup_steps.as_ref().map(|v| v.span())),
        ("min_resource", p.min_resource.as_ref().map(|v| v.span())),
        ("reduction_factor", p.reduction_factor.as_ref().map(|v| v.span())),
        ("max_resource", p.max_resource.as_ref().map(|v| v.span())),
        ("min_early_stopping_rate", p.min_early_stopping_rate.as_ref().map(|v| v.span())),
        ("bootstrap_count", p.bootstrap_count.as_ref().map(|v| v.span())),
    ];
    let allowed: &[&str] = match kind {
        "none" => &[],
        "median" => &["n_startup_trials", "n_warmup_steps"],
        "asha" => &["min_resource", "reduction_factor", "max_resource", "min_early_stopping_rate", "bootstrap_count"],
        "hyperband" => &["min_resource", "reduction_factor", "max_resource", "bootstrap_count"],
        other => {
            return Err(src.error_at(
                kind_span,
                Some("pruner.kind".into()),
                format!("unknown pruner `{other}` (expected none, median, asha or hyperband)"),
            ))
        }
    };
    for (key, span) in &given {
        if let Some(span) = span {
            if !allowed.contains(key) {
                return Err(src.error_at(
                    span.clone(),
                    Some(format!("pruner.{key}")),
                    format!("`{key}` does not apply to pruner `{kind}`"),
                ));
            }
        }
    }
    let int = |v: &Option<Spanned<i64>>, key: &str, min: i64, default: Option<i64>| -> Result<Option<i64>, ConfigError> {
        match v {
            None => Ok(default),
            Some(x) if *x.get_ref() < min => {
                Err(src.error_at(x.span(), Some(format!("pruner.{key}")), format!("{key} must be at least {min} (got {})", x.get_ref())))
            }
            Some(x) => Ok(Some(*x.get_ref())),
        }
    };
    let eta = |v: &Option<Spanned<i64>>| -> Result<u32, ConfigError> {
        let e = int(v, "reduction_factor", 2, Some(3))?.unwrap_or(3);
        u32::try_from(e).map_err(|_| ConfigError::plain(src.path, Some("pruner.reduction_factor"), "reduction_factor is too large"))
    };
    Ok(match kind {
        "median" => PrunerConfig::Median {
            n_startup_trials: p.n_startup_trials.as_ref().map(|v| *v.get_ref()).unwrap_or(5),
            n_warmup_steps: p.n_warmup_steps.as_ref().map(|v| *v.get_ref()).unwrap_or(0),
        },
        "asha" => {
            let min_resource = int(&p.min_resource, "min_resource", 1, Some(1))?.unwrap_or(1);
            let max_resource = int(&p.max_resource, "max_resource", min_resource.saturating_add(1), None)?;
            let rate = int(&p.min_early_stopping_rate, "min_early_stopping_rate", 0, Some(0))?.unwrap_or(0);
            PrunerConfig::Asha {
                min_resource,
                reduction_factor: eta(&p.reduction_factor)?,
                max_resource,
                min_early_stopping_rate: u32::try_from(rate).unwrap_or(u32::MAX),
                bootstrap_count: p.bootstrap_count.as_ref().map(|v| *v.get_ref()).unwrap_or(0),
            }
        }
        "hyperband" => {
            let min_resource = int(&p.min_resource, "min_resource", 1, Some(1))?.unwrap_or(1);
            let max_resource = int(&p.max_resource, "max_resource", min_resource.saturating_add(1), None)?.ok_or_else(|| {
                src.error_at(
                    kind_span.clone(),
                    Some("pruner.max_resource".into()),
                    "a hyperband pruner needs `max_resource` (the steps of a full trial)",
                )
            })?;
            PrunerConfig::Hyperband {
                min_resource,
                max_resource,
                reduction_factor: eta(&p.reduction_factor)?,
                bootstrap_count: p.bootstrap_count.as_ref().map(|v| *v.get_ref()).unwrap_or(0),
                study_name: study_name.to_string(),
            }
        }
        _ => PrunerConfig::None,
    })
}

/// Expands a devices setting into one entry per device.
pub fn parse_devices(spec: &DevicesSpec) -> Result<Vec<String>, String> {
    let list = match spec {
        DevicesSpec::Word(w) if w == "auto" => return Ok(auto_devices()),
        DevicesSpec::Word(w) => w.split(',').map(|s| s.trim().to_string()).collect::<Vec<_>>(),
        DevicesSpec::List(l) => l.clone(),
    };
    if list.is_empty() {
        return Err("`devices` must name at least one device".into());
    }
    let mut out = Vec::new();
    for d in list {
        if d == "auto" {
            out.extend(auto_devices());
        } else if d == "cpu" {
            out.push(d);
        } else if let Some(k) = d.strip_prefix("cuda:") {
            if k.parse::<u32>().is_err() {
                return Err(format!("`{d}` is not a device (expected \"cpu\", \"cuda:N\" or \"auto\")"));
            }
            out.push(d);
        } else {
            return Err(format!("`{d}` is not a device (expected \"cpu\", \"cuda:N\" or \"auto\")"));
        }
    }
    Ok(out)
}

/// `auto`: every visible CUDA device in a CUDA build (respecting `CUDA_VISIBLE_DEVICES`),
/// else one CPU slot.
pub fn auto_devices() -> Vec<String> {
    #[cfg(feature = "cuda")]
    {
        let n = cuda_device_count();
        if n > 0 {
            return (0..n).map(|i| format!("cuda:{i}")).collect();
        }
    }
    vec!["cpu".to_string()]
}

/// How many CUDA devices this process can use: the entries of `CUDA_VISIBLE_DEVICES` where it
/// is set, else as many as the driver opens.
#[cfg(feature = "cuda")]
fn cuda_device_count() -> usize {
    if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
        let n = v.split(',').filter(|s| !s.trim().is_empty() && s.trim() != "-1").count();
        return n;
    }
    (0..64).take_while(|i| candle_core::Device::new_cuda(*i).is_ok()).count()
}

#[cfg(test)]
mod tests;
