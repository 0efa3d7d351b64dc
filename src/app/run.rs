//! `sft-search run`: create or resume a study and run it to its end.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;

use super::common::{load_config, metrics_summary, shown};
use super::UsageError;
use crate::cli::RunArgs;
use crate::config::{file::DevicesSpec, parse_devices, ObjectiveConfig, PrunerConfig, SamplerKind, StudyConfig};
use crate::objective::{CommandRunner, SyntheticRunner};
use crate::sampler::{GpOptions, GpSampler, GridSampler, RandomSampler, Sampler};
use crate::scheduler::{run_study, Observer, ProgressDisplay, Silent, StopReason, StopSignal, StudyRun, TrialRunner};
use crate::storage::{Budget, Store, StudySpec};
use crate::trial::{best_trial, TrialState};

/// The sampler a study asks for.
pub fn build_sampler(cfg: &StudyConfig) -> anyhow::Result<Box<dyn Sampler>> {
    Ok(match cfg.sampler.kind {
        SamplerKind::Grid => Box::new(GridSampler::new(cfg.sampler.grid_points)),
        SamplerKind::Random => Box::new(RandomSampler),
        SamplerKind::Gp => Box::new(GpSampler::new(GpOptions { n_startup: Some(gp_n_startup(cfg)), ..GpOptions::default() })),
    })
}

/// Start-up trials of a GP study: `[sampler] n_startup` when given, else the sampler's
/// default for the space, but with a budget of `n_trials` at most a quarter of it (and at
/// least 4), and never more than half of it (and at least 3). A small budget — 8 fine-tuning
/// trials over 4 parameters — thus gets model-guided trials instead of spending all of
/// them on quasi-random points. On the benchmark functions (100 seeds each) a quarter beat
/// the former half at 10–25 trials: median regret at 16 trials on noisy sft-like 0.034 →
/// 0.024, hartmann6 1.18 → 0.98, rosenbrock4 440 → 271, branin level (README, *GP sampler*).
pub fn gp_n_startup(cfg: &StudyConfig) -> usize {
    let default = crate::sampler::gp::default_n_startup(crate::sampler::gp::encoding::Encoding::new(&cfg.space).kinds());
    match (cfg.sampler.n_startup, cfg.n_trials) {
        (Some(n), _) => n,
        (None, Some(budget)) => {
            let budget = usize::try_from(budget).unwrap_or(usize::MAX);
            default.min(budget.div_ceil(4).max(4)).min((budget / 2).max(3))
        }
        (None, None) => default,
    }
}

/// The runner that evaluates a study's trials.
pub fn build_runner(cfg: &StudyConfig, quiet: bool) -> anyhow::Result<Box<dyn TrialRunner>> {
    Ok(match &cfg.objective {
        ObjectiveConfig::Synthetic { function, noise, curve } => {
            Box::new(SyntheticRunner { function: *function, noise: *noise, seed: cfg.seed, curve: *curve })
        }
        ObjectiveConfig::Command { argv, cwd } => {
            Box::new(CommandRunner { argv: argv.clone(), cwd: cwd.clone(), trial_timeout: cfg.execution.trial_timeout })
        }
        ObjectiveConfig::Finetune => Box::new(with_trial_timeout(cfg, super::finetune::build(cfg, quiet)?)),
        ObjectiveConfig::External => return Err(UsageError(external_objective(cfg)).into()),
    })
}

/// What `run --dry-run` prints: the study as the file was read, with nothing run or written.
pub fn dry_run_plan(cfg: &StudyConfig, sampler: &str) -> String {
    let mut s = format!("study `{}` ({}): the study file is valid; nothing was run or written\n", cfg.name, shown(&cfg.path));
    let store = if cfg.storage.exists() { "exists: trials already recorded there are resumed" } else { "new" };
    s.push_str(&format!("  storage: {} ({store})\n", shown(&cfg.storage)));
    let objective = match &cfg.objective {
        ObjectiveConfig::Synthetic { function, noise, .. } => format!("synthetic `{}` (noise {noise})", function.name()),
        ObjectiveConfig::Command { argv, .. } => format!("command `{}`", argv.join(" ")),
        ObjectiveConfig::Finetune => "finetune".to_string(),
        ObjectiveConfig::External => "external: trials are asked for with `sft-search ask` and told with `sft-search tell`".to_string(),
    };
    s.push_str(&format!("  objective: {objective}; {} `{}`\n", format!("{:?}", cfg.direction).to_lowercase(), cfg.metric));
    let mut budget = match cfg.n_trials {
        Some(n) => format!("{n} trials"),
        None => format!("the whole grid ({} points)", cfg.space.grid_size(cfg.sampler.grid_points)),
    };
    if let Some(p) = cfg.patience {
        budget.push_str(&format!(", or until {} finished trials in a row do not improve the best by more than {}", p.trials, p.min_delta));
    }
    if let Some(t) = cfg.timeout {
        budget.push_str(&format!(", or {} s", t.as_secs()));
    }
    s.push_str(&format!("  budget: {budget}\n"));
    let startup = if cfg.sampler.kind == SamplerKind::Gp { format!(", {} start-up trials", gp_n_startup(cfg)) } else { String::new() };
    let pruner = match &cfg.pruner {
        PrunerConfig::None => "none".to_string(),
        PrunerConfig::Median { n_startup_trials, n_warmup_steps } => {
            format!("median (after {n_startup_trials} complete trials, from step {n_warmup_steps})")
        }
        PrunerConfig::Asha { min_resource, reduction_factor, .. } => {
            format!("asha (first rung at step {min_resource}, η = {reduction_factor})")
        }
        PrunerConfig::Hyperband { min_resource, max_resource, reduction_factor, .. } => {
            format!("hyperband (steps {min_resource}–{max_resource}, η = {reduction_factor})")
        }
    };
    s.push_str(&format!("  sampler: {sampler} (seed {}{startup}); pruner: {pruner}\n", cfg.sampler.seed));
    let slots = cfg.execution.slots();
    s.push_str(&format!("  devices: {} slot(s): {}\n", slots.len(), slots.join(", ")));
    s.push_str(&format!("  space: {} parameter(s)\n", cfg.space.len()));
    for p in cfg.space.params() {
        let when: Vec<String> = cfg.space.conditions().iter().filter(|c| c.param == p.name).map(|c| c.describe()).collect();
        let when = if when.is_empty() { String::new() } else { format!(", when {}", when.join(" and ")) };
        s.push_str(&format!("    {}: {}{when}\n", p.name, p.dist.describe()));
    }
    s
}

/// Why `run` has nothing to run for a study whose trials the user's program evaluates.
pub fn external_objective(cfg: &StudyConfig) -> String {
    format!(
        "{}: study `{}` has `[objective] kind = \"external\"`: its trials are run by your own program, which gets each \
         one with `sft-search ask` and reports its result with `sft-search tell` (README, Ask and tell)",
        cfg.path.display(),
        cfg.name
    )
}

/// The fine-tuning runner that runs trials: `[execution] trial_timeout` kills a silent worker
/// (the test evaluation and the soup keep the runner's own limit).
fn with_trial_timeout(cfg: &StudyConfig, mut runner: crate::trainer::runner::FinetuneRunner) -> crate::trainer::runner::FinetuneRunner {
    if let Some(t) = cfg.execution.trial_timeout {
        runner.idle_timeout = Some(t);
    }
    runner
}

/// Refuses to add trials to a study whose recorded trials ran with another metric, objective,
/// model, data or training options, or other data or model files under the same names
/// (`inputs`: their fingerprints), since their values would not compare, unless allowed;
/// then keeps the study file and fingerprints as they are now with the study (what `export`,
/// `report` and the next check read).
pub(crate) fn check_setup(
    cfg: &StudyConfig,
    store: &Store,
    study: &crate::storage::StudyInfo,
    inputs: Option<&serde_json::Value>,
    allow: bool,
) -> anyhow::Result<()> {
    const INPUTS: &str = "sft:inputs_fingerprint";
    let stored = study.user_attrs.get("sft:study_file").and_then(serde_json::Value::as_str);
    let stored_inputs = study.user_attrs.get(INPUTS);
    if stored == Some(cfg.text.as_str()) && stored_inputs == inputs {
        return Ok(());
    }
    let ran = store.trials(study.id)?.iter().filter(|t| t.state != TrialState::Waiting).count();
    // A study another tool made (Optuna) has no study file to compare with.
    let mut changes = stored.map(|s| crate::config::setup::setup_differences(s, &cfg.text)).unwrap_or_default();
    if let (Some(old), Some(new)) = (stored_inputs, inputs) {
        for role in crate::trainer::fingerprint::changed_files(old, new) {
            changes.push(if role == "model" {
                "`[model]`: the pretrained folder's weights, config or tokenizer changed (its fingerprint differs)".to_string()
            } else {
                format!("`[data] {role}`: the file's content changed (its fingerprint differs)")
            });
        }
    }
    if ran > 0 && !changes.is_empty() {
        if !allow {
            return Err(UsageError(format!(
                "{}: study `{}` has {ran} trial(s) run with another setup, so new values would not compare with theirs:\n  \
                 {}\nStart a new study (another [study] name or storage) or pass --allow-setup-change to go on anyway",
                cfg.path.display(),
                cfg.name,
                changes.join("\n  ")
            ))
            .into());
        }
        tracing::warn!("study `{}`: going on with a changed setup ({})", cfg.name, changes.join("; "));
    }
    store.set_study_attr(study.id, "sft:study_file", &serde_json::Value::String(cfg.text.clone()))?;
    if let Some(f) = inputs {
        store.set_study_attr(study.id, INPUTS, f)?;
    }
    Ok(())
}

/// The study's description as the store keeps it.
pub fn study_spec(cfg: &StudyConfig, allow_space_change: bool) -> StudySpec<'_> {
    StudySpec {
        name: &cfg.name,
        direction: cfg.direction,
        metric: &cfg.metric,
        space: &cfg.space,
        study_text: &cfg.text,
        allow_space_change,
    }
}

/// `--n-trials`: replaces `[study] n_trials` when given (at least 1).
pub fn override_n_trials(cfg: &mut StudyConfig, n_trials: Option<u64>) -> Result<(), UsageError> {
    match n_trials {
        Some(0) => Err(UsageError("--n-trials must be at least 1".into())),
        Some(n) => {
            cfg.n_trials = Some(n);
            Ok(())
        }
        None => Ok(()),
    }
}

/// Opens the study's store and the study in it, creating either when new. A space or
/// direction that differs from the recorded one is the user's mistake (exit status 2).
pub fn open_study(cfg: &StudyConfig, allow_space_change: bool) -> anyhow::Result<(Store, crate::storage::StudyInfo)> {
    let mut store = Store::open(&cfg.storage).with_context(|| format!("opening the store of study `{}`", cfg.name))?;
    let study = store.create_or_open_study(&study_spec(cfg, allow_space_change)).map_err(|e| match e {
        crate::storage::StoreError::SpaceChanged { .. } | crate::storage::StoreError::DirectionChanged { .. } => {
            anyhow::Error::new(UsageError(e.to_string()))
        }
        other => anyhow::Error::new(other),
    })?;
    Ok((store, study))
}

/// The study loop's settings, all taken from the study file (after command-line overrides).
pub fn study_run<'a>(
    cfg: &'a StudyConfig,
    study_id: i64,
    sampler: &'a dyn Sampler,
    pruner: &'a dyn crate::pruner::Pruner,
    runner: &'a dyn TrialRunner,
    stop: StopSignal,
    observer: &'a dyn Observer,
) -> StudyRun<'a> {
    StudyRun {
        store_path: cfg.storage.clone(),
        study_id,
        space: &cfg.space,
        direction: cfg.direction,
        sampler,
        sampler_seed: cfg.sampler.seed,
        pruner,
        runner,
        slots: cfg.execution.slots(),
        budget: Budget { n_trials: cfg.n_trials, patience: cfg.patience },
        timeout: cfg.timeout,
        max_retries: cfg.execution.max_retries,
        heartbeat_interval: cfg.execution.heartbeat_interval,
        heartbeat_timeout: cfg.execution.heartbeat_timeout,
        max_consecutive_failures: cfg.execution.max_consecutive_failures,
        artifacts_root: cfg.artifacts_root(),
        stop,
        observer,
    }
}

pub fn run(args: &RunArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let mut cfg = load_config(&args.study)?;
    override_n_trials(&mut cfg, args.n_trials)?;
    if let Some(d) = &args.devices {
        cfg.execution.devices = parse_devices(&DevicesSpec::List(d.clone())).map_err(|m| UsageError(format!("--devices: {m}")))?;
    }
    if let Some(k) = args.trials_per_device {
        if k == 0 {
            return Err(UsageError("--trials-per-device must be at least 1".into()).into());
        }
        cfg.execution.trials_per_device = k;
    }
    if cfg.objective == ObjectiveConfig::External && !args.dry_run {
        return Err(UsageError(external_objective(&cfg)).into());
    }
    // A fine-tuning study on a GPU needs a CUDA build: say so before anything is recorded,
    // rather than fail every trial. (A `command` objective runs its own program, which may
    // well use the GPU it is given.)
    if cfg.objective == ObjectiveConfig::Finetune && !cfg!(feature = "cuda") {
        if let Some(gpu) = cfg.execution.slots().into_iter().find(|s| s.starts_with("cuda")) {
            return Err(UsageError(format!(
                "{}: device `{gpu}`: this sft-search was built without CUDA; build it with `cargo build --release --features cuda` \
                 (README, GPUs), or run on `--devices cpu`",
                args.study.display()
            ))
            .into());
        }
    }
    let sampler = build_sampler(&cfg)?;
    // A fine-tuning study's runner is built once (it loads and checks the data): typed, for
    // the test evaluation and the soup at the end, and as the trials' runner.
    let finetune = match cfg.objective {
        ObjectiveConfig::Finetune => Some(super::finetune::build(&cfg, quiet)?),
        _ => None,
    };
    if args.dry_run {
        print!("{}", dry_run_plan(&cfg, sampler.name()));
        return Ok(ExitCode::SUCCESS);
    }
    let runner: Box<dyn TrialRunner> = match &finetune {
        Some(ft) => Box::new(with_trial_timeout(&cfg, ft.clone())),
        None => build_runner(&cfg, quiet)?,
    };
    let pruner = crate::pruner::from_config(&cfg.pruner);

    let (mut store, study) = open_study(&cfg, args.allow_space_change)?;
    // What the trials read, to tell when it changes under the same names.
    let inputs = match &finetune {
        Some(ft) => {
            let mut f = crate::trainer::fingerprint::data_files(&ft.data)
                .map_err(|e| UsageError(format!("{}: [data]: {e}", cfg.path.display())))?;
            let model = crate::trainer::fingerprint::model_folder(&ft.model_dir)
                .with_context(|| format!("reading the model folder {}", ft.model_dir.display()))?;
            if let Some(m) = f.as_object_mut() {
                m.insert("model".into(), model);
            }
            Some(f)
        }
        None => None,
    };
    check_setup(&cfg, &store, &study, inputs.as_ref(), args.allow_setup_change)?;
    let queued = store.enqueue_study_file_points(study.id, &cfg.space, &cfg.enqueue)?;
    if !quiet {
        for &(i, number) in &queued {
            eprintln!(
                "queued trial {number} from [[enqueue]] #{}: {}",
                i + 1,
                super::enqueue::describe_queued(&cfg.space, &cfg.enqueue[i])
            );
        }
    }
    let history = store.trials(study.id)?;
    let slots = cfg.execution.slots();
    if !quiet {
        let done = history.iter().filter(|t| t.state.is_finished()).count();
        let elsewhere = store.running_elsewhere(study.id, cfg.execution.heartbeat_timeout)?.len();
        let (verb, others) = match elsewhere {
            0 if history.iter().all(|t| t.state == TrialState::Waiting) => ("starting", String::new()),
            0 => ("resuming", String::new()),
            1 => ("joining", ", 1 running in another worker".to_string()),
            n => ("joining", format!(", {n} running in other workers")),
        };
        eprintln!(
            "{verb} study `{}` ({} trials recorded{others}) in {} — {} sampler, {} slot(s): {}",
            cfg.name,
            done,
            shown(&cfg.storage),
            sampler.name(),
            slots.len(),
            slots.join(", ")
        );
    }

    let stop = StopSignal::new();
    install_interrupt_handler(&stop, quiet);
    let display: Box<dyn Observer> = if quiet {
        Box::new(Silent)
    } else {
        Box::new(ProgressDisplay::new(
            &slots,
            cfg.n_trials.or_else(|| Some(cfg.space.grid_size(cfg.sampler.grid_points) as u64)),
            cfg.direction,
            &history,
        ))
    };
    let run = study_run(&cfg, study.id, sampler.as_ref(), pruner.as_ref(), runner.as_ref(), stop.clone(), display.as_ref());
    let summary = run_study(&run);
    drop(display);
    let summary = summary?;

    let trials = store.trials(study.id)?;
    let count = |s: TrialState| trials.iter().filter(|t| t.state == s).count();
    if !quiet {
        let why = match summary.reason {
            StopReason::BudgetReached => "the budget is reached",
            StopReason::Exhausted => "the grid is exhausted",
            StopReason::Plateau => &cfg.patience.map(|p| p.spent_text()).unwrap_or_default(),
            StopReason::Timeout => "the timeout passed",
            StopReason::Stopped => "it was stopped (running trials finished)",
            StopReason::Cancelled => "it was cancelled",
            StopReason::Failing => "too many trials failed in a row",
            StopReason::NoDevice => "no slot could open its device",
        };
        eprintln!(
            "study `{}` ended because {why}: {} complete, {} pruned, {} failed, {} waiting ({:.1}s)",
            cfg.name,
            count(TrialState::Complete),
            count(TrialState::Pruned),
            count(TrialState::Fail),
            count(TrialState::Waiting),
            summary.wall.as_secs_f64()
        );
        match best_trial(&trials, cfg.direction) {
            Some(b) => eprintln!(
                "best: trial {} with {} = {}  ({})",
                b.number,
                cfg.metric,
                b.value.map(crate::scheduler::display::format_value).unwrap_or_default(),
                crate::scheduler::display::format_params(&b.params)
            ),
            None => eprintln!("no trial has completed yet"),
        }
    }
    if summary.reason == StopReason::Cancelled {
        return Ok(ExitCode::from(130));
    }
    if let Some(ft) = &finetune {
        // With several workers on the study, the last one to finish evaluates the winner and
        // makes the soup: a worker that ends while others still run trials would test a best
        // trial that may not stay the best. Two that end together take turns (the lock), and
        // the second finds the work done.
        let elsewhere = store.running_elsewhere(study.id, cfg.execution.heartbeat_timeout)?;
        if elsewhere.is_empty() {
            let _turn = PostStudyLock::acquire(&cfg.artifacts_root())?;
            evaluate_best_on_test(&cfg, &store, study.id, ft, quiet)?;
            make_soup(&cfg, &store, study.id, ft, quiet)?;
        } else if !quiet {
            eprintln!(
                "trial(s) {} still run in other workers: the last worker to finish evaluates the best trial on the test split{}",
                join(&elsewhere),
                if ft.soup.kind == crate::trainer::soup::SoupKind::Greedy { " and makes the model soup" } else { "" }
            );
        }
    }
    // The HTML report is refreshed at the end of every run; a failure to write it is
    // reported but does not fail the study.
    let study_now = store.study(&cfg.name)?;
    match crate::report::write_report(&store, &study_now, Some(&cfg), &crate::report::default_report_path(&cfg)) {
        Ok(path) => {
            if !quiet {
                eprintln!("report: {}", shown(&path));
            }
        }
        Err(e) => eprintln!("warning: the report could not be written: {e}"),
    }
    if count(TrialState::Complete) == 0 && count(TrialState::Fail) > 0 {
        anyhow::bail!("study `{}` failed: no trial completed (see `sft-search trials {}`)", cfg.name, args.study.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// The post-study work's turn (test evaluation, soup) among the processes of one study: an
/// exclusive `flock` on `.post-study.lock` in the study's artifacts folder, held until dropped
/// (the kernel releases it if the process dies).
struct PostStudyLock {
    _file: std::fs::File,
}

impl PostStudyLock {
    fn acquire(dir: &std::path::Path) -> anyhow::Result<PostStudyLock> {
        use std::os::fd::AsRawFd;
        let path = dir.join(".post-study.lock");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        loop {
            // SAFETY: flock on the descriptor of a file this function owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(PostStudyLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(anyhow::Error::new(e).context(format!("locking {}", path.display())));
            }
        }
    }
}

/// The slot the post-study evaluations (test split, model soup) run on: the first device.
fn evaluation_device(cfg: &StudyConfig) -> String {
    cfg.execution.devices.first().cloned().unwrap_or_else(|| "cpu".into())
}

/// Evaluates the best trial's checkpoint once on the test split (never used for selection)
/// and stores the test metrics and confusion matrix in its `metrics.test`.
fn evaluate_best_on_test(
    cfg: &StudyConfig,
    store: &Store,
    study_id: i64,
    ft: &crate::trainer::runner::FinetuneRunner,
    quiet: bool,
) -> anyhow::Result<()> {
    let trials = store.trials(study_id)?;
    let Some(best) = best_trial(&trials, cfg.direction) else { return Ok(()) };
    if let Some(serde_json::Value::Object(test)) = best.metrics.get("test") {
        // Evaluated by an earlier run, or by another worker of the study.
        if !quiet {
            eprintln!("test split (trial {}, evaluated once, earlier): {}", best.number, metrics_summary(test, &cfg.metric));
        }
        return Ok(());
    }
    let Some(ckpt) = &best.checkpoint else {
        if !quiet {
            eprintln!("trial {} kept no checkpoint (keep_checkpoints = \"none\"): no test evaluation", best.number);
        }
        return Ok(());
    };
    let device = evaluation_device(cfg);
    match ft.run_test(std::path::Path::new(ckpt), &device) {
        Ok(test) => {
            let mut m = serde_json::Map::new();
            m.insert("test".into(), serde_json::Value::Object(test.clone()));
            store.merge_metrics(best.id, &m)?;
            if !quiet {
                eprintln!("test split (trial {}, evaluated once): {}", best.number, metrics_summary(&test, &cfg.metric));
                eprintln!("checkpoint: {ckpt}");
            }
        }
        Err(e) => eprintln!("warning: the test evaluation of trial {} failed: {e}", best.number),
    }
    Ok(())
}

/// With `[soup] kind = "greedy"`: the greedy soup of the best COMPLETE trials' checkpoints,
/// chosen on the valid split (in a worker), stored under `trainer::soup::STUDY_ATTR`, and — when more than
/// the best trial joined — evaluated once on the test split. A soup already built from the
/// same candidates is kept as it is (a resumed or re-run study does not redo it).
fn make_soup(
    cfg: &StudyConfig,
    store: &Store,
    study_id: i64,
    ft: &crate::trainer::runner::FinetuneRunner,
    quiet: bool,
) -> anyhow::Result<()> {
    use crate::trainer::soup::{kept_checkpoints, SoupCandidate, SoupCheckpoints, SoupKind, STUDY_ATTR as SOUP_ATTR};
    use serde_json::{json, Value};
    if ft.soup.kind != SoupKind::Greedy {
        return Ok(());
    }
    let device = evaluation_device(cfg);
    // Best value first (the direction's way); ties keep their order.
    let best_first =
        |a: f64, b: f64| cfg.direction.to_minimize(a).partial_cmp(&cfg.direction.to_minimize(b)).unwrap_or(std::cmp::Ordering::Equal);
    let trials = store.trials(study_id)?;
    let mut done: Vec<_> = trials
        .iter()
        .filter(|t| t.state == TrialState::Complete && t.checkpoint.is_some())
        .filter_map(|t| t.value.filter(|v| v.is_finite()).map(|v| (t, v)))
        .collect();
    // Best first; ties keep trial order, so the first is `best_trial`.
    done.sort_by(|a, b| best_first(a.1, b.1));
    done.truncate(ft.soup.candidates);
    if done.len() < 2 {
        if !quiet {
            eprintln!(
                "model soup: needs two COMPLETE trials with kept checkpoints ({} here); the best trial is the study's model",
                done.len()
            );
        }
        return Ok(());
    }
    // The candidates: each trial's best checkpoint, or with `checkpoints = "all"` every
    // checkpoint it kept, best valid value first (a trial's best before its other epochs, so
    // the first candidate is the best trial's best checkpoint).
    let mut candidates: Vec<(SoupCandidate, f64, bool)> = Vec::new();
    for (t, v) in &done {
        let Some(best) = t.checkpoint.as_ref().map(std::path::PathBuf::from) else { continue };
        let kept = match ft.soup.checkpoints {
            SoupCheckpoints::Best => vec![(best.clone(), *v)],
            SoupCheckpoints::All => kept_checkpoints(&best),
        };
        for (dir, value) in kept {
            let is_best = dir == best;
            candidates.push((SoupCandidate { trial: t.number, checkpoint: dir }, if is_best { *v } else { value }, is_best));
        }
    }
    candidates.sort_by(|a, b| best_first(a.1, b.1).then(b.2.cmp(&a.2)));
    let numbers: Vec<u64> = candidates.iter().map(|(c, _, _)| c.trial).collect();
    let paths: Vec<String> = candidates.iter().map(|(c, _, _)| c.checkpoint.display().to_string()).collect();
    let study = store.study(&cfg.name)?;
    let mut soup = match study.user_attrs.get(SOUP_ATTR) {
        Some(Value::Object(old)) if old.get("candidate_checkpoints") == Some(&json!(paths)) && soup_checkpoint_present(old) => old.clone(),
        _ => {
            let candidates = candidates.into_iter().map(|(c, _, _)| c).collect();
            if !quiet {
                let mut trials: Vec<u64> = Vec::new();
                for n in &numbers {
                    if !trials.contains(n) {
                        trials.push(*n);
                    }
                }
                eprintln!(
                    "model soup: averaging the best of {} checkpoints of trials {} where the valid split says so…",
                    numbers.len(),
                    join(&trials)
                );
            }
            let mut m = match ft.run_soup(candidates, &cfg.artifacts_root().join("soup"), &device) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("warning: the model soup failed (the best trial stays the study's model): {e}");
                    return Ok(());
                }
            };
            m.insert("kind".into(), json!("greedy"));
            m.insert("candidates".into(), json!(numbers));
            m.insert("candidate_checkpoints".into(), json!(paths));
            store.set_study_attr(study_id, SOUP_ATTR, &Value::Object(m.clone()))?;
            m
        }
    };
    let ingredients: Vec<u64> =
        soup.get("ingredients").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
    let fmt = |k: &str| soup.get(k).and_then(Value::as_f64).map(crate::scheduler::display::format_value).unwrap_or_default();
    let Some(ckpt) = soup.get("checkpoint").and_then(Value::as_str).map(str::to_string) else {
        if !quiet {
            eprintln!(
                "model soup: no other trial improved on trial {} alone on the valid split ({} = {}); the best trial stays the study's model",
                numbers[0],
                cfg.metric,
                fmt("best_single")
            );
        }
        return Ok(());
    };
    if !quiet {
        eprintln!(
            "model soup of trials {}: valid {} = {} (trial {} alone: {})",
            join(&ingredients),
            cfg.metric,
            fmt("value"),
            numbers[0],
            fmt("best_single")
        );
    }
    if let Some(Value::Object(test)) = soup.get("test") {
        if !quiet {
            eprintln!("test split (model soup, evaluated once, earlier): {}", metrics_summary(test, &cfg.metric));
        }
        return Ok(());
    }
    match ft.run_test(std::path::Path::new(&ckpt), &device) {
        Ok(test) => {
            if !quiet {
                eprintln!("test split (model soup, evaluated once): {}", metrics_summary(&test, &cfg.metric));
                eprintln!("soup checkpoint: {ckpt} (what `export` writes)");
            }
            soup.insert("test".into(), Value::Object(test));
            store.set_study_attr(study_id, SOUP_ATTR, &Value::Object(soup))?;
        }
        Err(e) => eprintln!("warning: the test evaluation of the model soup failed: {e}"),
    }
    Ok(())
}

fn soup_checkpoint_present(soup: &serde_json::Map<String, serde_json::Value>) -> bool {
    match soup.get("checkpoint").and_then(|c| c.as_str()) {
        Some(c) => std::path::Path::new(c).join(crate::trainer::checkpoint::WEIGHTS).is_file(),
        None => true,
    }
}

fn join(xs: &[u64]) -> String {
    xs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}

/// Ctrl-C / SIGTERM once: start no new trials; twice: cancel the running ones.
fn install_interrupt_handler(stop: &StopSignal, quiet: bool) {
    let presses = Arc::new(AtomicUsize::new(0));
    let stop = stop.clone();
    let result = ctrlc::set_handler(move || {
        let n = presses.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            stop.stop_new();
            if !quiet {
                eprintln!("\nstopping: no new trials; running trials will finish and be recorded (press Ctrl-C again to cancel them)");
            }
        } else {
            stop.cancel_running();
            if !quiet {
                eprintln!("\ncancelling running trials…");
            }
        }
    });
    if let Err(e) = result {
        tracing::warn!("cannot install the Ctrl-C handler: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(sampler: &str, n_trials: &str) -> StudyConfig {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        let text = format!(
            "[study]\nname = \"s\"\ndirection = \"minimize\"\nmetric = \"v\"\n{n_trials}\n\n[space]\na = {{ type = \"float\", low = 0, high = 1 }}\nb = {{ type = \"float\", low = 0, high = 1 }}\nc = {{ type = \"int\", low = 0, high = 6 }}\nd = {{ type = \"categorical\", choices = [16, 32] }}\n\n[sampler]\nkind = \"gp\"\n{sampler}\n\n[objective]\nkind = \"command\"\ncommand = [\"true\"]\n"
        );
        std::fs::write(&p, text).unwrap();
        StudyConfig::load(&p).unwrap()
    }

    #[test]
    fn gp_start_up_is_capped_by_a_quarter_of_the_budget() {
        // 2 discrete parameters (c, d): the sampler's default is 5 + 2 = 7.
        assert_eq!(gp_n_startup(&config("", "n_trials = 100")), 7);
        assert_eq!(gp_n_startup(&config("", "n_trials = 25")), 7);
        assert_eq!(gp_n_startup(&config("", "n_trials = 20")), 5);
        assert_eq!(gp_n_startup(&config("", "n_trials = 16")), 4);
        assert_eq!(gp_n_startup(&config("", "n_trials = 8")), 4);
        assert_eq!(gp_n_startup(&config("", "n_trials = 6")), 3);
        assert_eq!(gp_n_startup(&config("", "n_trials = 4")), 3);
        assert_eq!(gp_n_startup(&config("n_startup = 6", "n_trials = 8")), 6);
    }
}
