//! The command line as clap types, and nothing else: every subcommand's arguments are
//! converted and handed to `app`, which does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Hyperparameter search for supervised fine-tuning of pretrained transformers.
#[derive(Debug, Parser)]
#[command(name = "sft-search", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace). RUST_LOG overrides it.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// No progress bars and no informational output.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run (or resume) a study: sample trials, run them on every device slot, record them.
    Run(RunArgs),
    /// Counts per state, the best trial, and what is running where.
    Status(StatusArgs),
    /// Every trial with its parameters, value, intermediate values, device, times and error.
    Trials(TrialsArgs),
    /// The best COMPLETE trial.
    Best(BestArgs),
    /// Queue a trial with given parameters (the sampler chooses any left out when it starts); it runs before any sampled one.
    Enqueue(EnqueueArgs),
    /// Hand the next trial to your own program: the sampler's parameters, recorded as RUNNING (JSON on stdout).
    Ask(AskArgs),
    /// Report an asked trial's intermediate value (the pruner answers) or end it with its result.
    Tell(TellArgs),
    /// Write the study's plots (history, parallel coordinates, slices, contour, importance,
    /// learning curves, train vs valid loss, device timeline, confusion matrix), one file each.
    Plot(PlotArgs),
    /// Write the study report: one self-contained HTML file with summary, trials and plots.
    Report(ReportArgs),
    /// Benchmarks that print figures (samplers, training step).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Runs one trial; spoken to by `run` over stdin/stdout (JSON lines). Not for direct use.
    #[command(hide = true)]
    Worker(WorkerArgs),
    /// Write the best trial's checkpoint (or the study's model soup, or a chosen trial's) as a Hugging Face model folder.
    Export(ExportArgs),
    /// Predict labels for a CSV/TSV/JSONL file (or tag the words of a CoNLL/JSONL file) with an exported (or any compatible) model.
    Predict(PredictArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The study file (TOML).
    pub study: PathBuf,
    /// Override `[study] n_trials`.
    #[arg(long)]
    pub n_trials: Option<u64>,
    /// Override `[execution] devices`, e.g. `cpu,cpu` or `cuda:0,cuda:1` or `auto`.
    #[arg(long, value_delimiter = ',')]
    pub devices: Option<Vec<String>>,
    /// Override `[execution] trials_per_device`.
    #[arg(long)]
    pub trials_per_device: Option<usize>,
    /// Accept a search space that differs from the one the study was created with.
    #[arg(long)]
    pub allow_space_change: bool,
    /// Accept a study file whose metric, objective, `[model]`, `[data]` or `[train]` differ
    /// from those the recorded trials ran with.
    #[arg(long)]
    pub allow_setup_change: bool,
    /// Check the study file (and for fine-tuning, load and split the data and find the
    /// model) and print what would run; run nothing and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TableFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The study file (TOML), or a SQLite file made by sft-search or Optuna.
    pub study: PathBuf,
    /// Which study, when a SQLite file holds several.
    #[arg(long = "study")]
    pub study_name: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

#[derive(Debug, Args)]
pub struct TrialsArgs {
    /// The study file (TOML), or a SQLite file made by sft-search or Optuna.
    pub study: PathBuf,
    /// Which study, when a SQLite file holds several.
    #[arg(long = "study")]
    pub study_name: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: TableFormat,
}

#[derive(Debug, Args)]
pub struct BestArgs {
    /// The study file (TOML), or a SQLite file made by sft-search or Optuna.
    pub study: PathBuf,
    /// Which study, when a SQLite file holds several.
    #[arg(long = "study")]
    pub study_name: Option<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The study file (TOML)
    pub study: PathBuf,
    /// `name=value`, once per parameter to hold; parameters left out are the sampler's to choose.
    #[arg(long = "param", required = true)]
    pub params: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AskArgs {
    /// The study file (TOML).
    pub study: PathBuf,
    /// Override `[study] n_trials`: no trial is handed out once this many are done, or done
    /// and running.
    #[arg(long)]
    pub n_trials: Option<u64>,
    /// What `trials` and the report show as the trial's device.
    #[arg(long, default_value = "external")]
    pub device: String,
    /// Accept a search space that differs from the one the study was created with.
    #[arg(long)]
    pub allow_space_change: bool,
    #[arg(long, value_enum, default_value = "json")]
    pub format: TextOrJson,
}

/// How `tell` ends a trial.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ToldState {
    Complete,
    Pruned,
    Fail,
}

#[derive(Debug, Args)]
pub struct TellArgs {
    /// The study file (TOML).
    pub study: PathBuf,
    /// The trial's number, as `ask` printed it.
    #[arg(long)]
    pub trial: u64,
    /// The trial's result (the study's metric); with `--step`, an intermediate value.
    #[arg(long, allow_negative_numbers = true)]
    pub value: Option<f64>,
    /// Report `--value` as the intermediate value at this step (an epoch, say): the trial
    /// stays RUNNING unless the study's pruner stops it.
    #[arg(long)]
    pub step: Option<i64>,
    /// How the trial ended (default: complete when `--value` is given).
    #[arg(long, value_enum)]
    pub state: Option<ToldState>,
    /// Why the trial failed (with `--state fail`).
    #[arg(long)]
    pub error: Option<String>,
    /// `name=value`: a metric measured beside the value (any number of times).
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// Exit 0 without a change when the trial has already ended (a retried job telling twice).
    #[arg(long)]
    pub skip_if_finished: bool,
    #[arg(long, value_enum, default_value = "json")]
    pub format: TextOrJson,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ImageFormat {
    Svg,
    Png,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    /// The study file (TOML), or a SQLite file made by sft-search or Optuna.
    pub study: PathBuf,
    /// Which study, when a SQLite file holds several.
    #[arg(long = "study")]
    pub study_name: Option<String>,
    /// Output folder (default: `<study name>-plots/` beside the study file or database).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "svg")]
    pub format: ImageFormat,
    /// The contour's two parameters, `a,b` (default: the two most important).
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub params: Option<Vec<String>>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The study file (TOML), or a SQLite file made by sft-search or Optuna.
    pub study: PathBuf,
    /// Which study, when a SQLite file holds several.
    #[arg(long = "study")]
    pub study_name: Option<String>,
    /// The HTML file to write (default: `<study name>-report.html` beside the study file or
    /// database).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Regret and suggestion time of a sampler on a benchmark function, one JSON line per seed.
    Sampler(BenchSamplerArgs),
    /// Time of one fine-tuning step (forward, backward, optimizer) and peak memory.
    Train(BenchTrainArgs),
    /// How busy the device slots stay: a study of sleeping commands, busy fraction and gaps.
    Scheduler(BenchSchedulerArgs),
    /// Best value and total compute (steps) with and without a pruner, on a learning curve.
    Pruning(BenchPruningArgs),
    /// A device's fused training kernels (and a model's training step) against the CPU.
    Kernels(BenchKernelsArgs),
}

#[derive(Debug, Args)]
pub struct BenchKernelsArgs {
    /// cpu or cuda:k.
    #[arg(long, default_value = "cuda:0")]
    pub device: String,
    /// Also compare one training forward/backward of this Hugging Face model folder.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

#[derive(Debug, Args)]
pub struct BenchSchedulerArgs {
    /// Device slots (fake `cuda:k` devices, so each slot's trials can be told apart).
    #[arg(long, default_value_t = 4)]
    pub slots: usize,
    #[arg(long, default_value_t = 40)]
    pub trials: u64,
    /// Shortest and longest trial, in seconds (drawn uniformly per trial).
    #[arg(long, default_value_t = 0.2)]
    pub min_time: f64,
    #[arg(long, default_value_t = 2.0)]
    pub max_time: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

#[derive(Debug, Args)]
pub struct BenchPruningArgs {
    /// A built-in function (see `bench sampler --help`).
    #[arg(long, default_value = "sft-like")]
    pub function: String,
    /// Completed-or-pruned trials per study.
    #[arg(long, default_value_t = 60)]
    pub trials: u64,
    /// How many seeds; each runs one study without pruning and one with each pruner.
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// The first seed (seeds are first..first+N), to check settings on fresh seeds.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Pruners to compare with `none` (repeat or comma-separate).
    #[arg(long, value_delimiter = ',', default_value = "asha")]
    pub pruner: Vec<String>,
    /// Learning-curve steps (per epoch for sft-like).
    #[arg(long, default_value_t = 4)]
    pub steps: u32,
    /// ASHA/Hyperband: the first rung's step (default: one epoch, i.e. `--steps`).
    #[arg(long)]
    pub min_resource: Option<i64>,
    #[arg(long, default_value_t = 3)]
    pub reduction_factor: u32,
    /// Noise sigma on the final value.
    #[arg(long, default_value_t = 0.0)]
    pub noise: f64,
    /// Device slots per study (1 keeps every run reproducible).
    #[arg(long, default_value_t = 1)]
    pub slots: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

#[derive(Debug, Args)]
pub struct BenchSamplerArgs {
    /// branin, hartmann6, rosenbrock4, sft-like (the anchors' functions); hartmann3, ackley5,
    /// levy4, styblinski-tang4, six-hump-camel, goldstein-price, mixed-ft (the generality set);
    /// shekel4, michalewicz5, rastrigin4, powell4 (the second generality set).
    #[arg(long, required_unless_present = "study", conflicts_with = "study")]
    pub function: Option<String>,
    /// Instead of a built-in function: a study file whose space, direction and objective
    /// (`synthetic`, or a `command` run once per trial) are benchmarked. Nothing is stored.
    #[arg(long, value_name = "STUDY.toml")]
    pub study: Option<PathBuf>,
    /// With `--study`: the best value the objective can reach, so the summary shows regret
    /// (without it, the best values themselves).
    #[arg(long, requires = "study")]
    pub optimum: Option<f64>,
    /// gp, random or grid.
    #[arg(long, default_value = "gp")]
    pub sampler: String,
    #[arg(long, default_value_t = 50)]
    pub trials: usize,
    /// How many seeds (first..first+N).
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// The first seed, to check a setting on fresh seeds.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Suggestions outstanding at once (results told back in completion order).
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Seeds run at once, each on its own thread with its own sampler: the regret figures are
    /// the same as with 1, the times are not (keep 1 to time suggestions). Worth it where the
    /// objective is a slow `command`.
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Gaussian noise sigma added to the value the sampler sees [default: 0, or the study's
    /// `[objective] noise`].
    #[arg(long)]
    pub noise: Option<f64>,
    /// Startup trials before the model takes over (sampler default when absent).
    #[arg(long)]
    pub n_startup: Option<usize>,
    /// Print, per sampler and function, median and quartiles of regret at 10/25/50 and mean
    /// suggest time, instead of one line per seed.
    #[arg(long)]
    pub summary: bool,
    /// Time suggestions with a pre-filled history instead: for each N given, N uniform random
    /// completed trials, then `--probe` timed suggest/tell cycles (e.g. `--existing 100,500`).
    #[arg(long, value_delimiter = ',')]
    pub existing: Vec<usize>,
    /// Timed suggestions per `--existing` history.
    #[arg(long, default_value_t = 5)]
    pub probe: usize,
}

#[derive(Debug, Args)]
pub struct BenchTrainArgs {
    /// A Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 64)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    #[arg(long, default_value_t = 0)]
    pub freeze_layers: usize,
    /// cpu or cuda:k.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// fp32, or bf16 mixed precision (bf16 activations and matmuls, f32 weights and optimizer).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: crate::trainer::spec::Precision,
    /// Train on the rows of this labelled file (CSV/TSV/JSONL with `text` and `label`
    /// columns) instead of random token ids: its train split, tokenised with the model's
    /// tokenizer, truncated to --seq-len, in shuffled batches padded to their longest row, as
    /// a trial trains. Real text makes activations and gradients that random ids do not.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Also update a moving average of the weights after each step, as `[train] ema_decay`
    /// does (timed with the optimizer); 0 = off.
    #[arg(long, default_value_t = 0.0)]
    pub ema_decay: f64,
    #[arg(long, value_enum, default_value = "text")]
    pub format: TextOrJson,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The study file (TOML), or its SQLite file.
    pub study: PathBuf,
    /// The folder to write (refused when it exists and is not empty, unless --force).
    #[arg(long)]
    pub out: PathBuf,
    /// Export this trial instead of the best COMPLETE one (or the model soup, when the study kept one).
    #[arg(long)]
    pub trial: Option<u64>,
    /// Replace an existing --out folder (the old one is removed once the new one is in place).
    #[arg(long)]
    pub force: bool,
    /// Which study, when a SQLite file holds several.
    #[arg(long = "study")]
    pub study_name: Option<String>,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A Hugging Face BertForSequenceClassification folder (e.g. made by `export`), or a
    /// …ForTokenClassification one (then CoNLL or JSON Lines in and out).
    #[arg(long)]
    pub model: PathBuf,
    /// Rows to classify: .csv, .tsv or .jsonl; sentences to tag: .conll, .iob, .bio or .jsonl.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the input columns plus the predictions (.csv, .tsv or .jsonl); stdout
    /// (in the input's format) when absent.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// The column of texts (default: the column the model was trained on, from the folder's
    /// `sft_search.json`, else `text`).
    #[arg(long)]
    pub text_column: Option<String>,
    /// Second text column for sentence-pair models (default: the one the model was trained on).
    #[arg(long)]
    pub text_pair_column: Option<String>,
    /// The column of true labels to score the predictions against (default: the column the
    /// model was trained on, else `label`, when the input has it).
    #[arg(long)]
    pub label_column: Option<String>,
    /// With a label column: also write the scores (metrics, confusion matrix, rows scored) to
    /// this JSON file.
    #[arg(long, value_name = "FILE.json")]
    pub metrics: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// cpu, cuda or cuda:k.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Truncate to this many tokens (default: the model's `model_max_length`).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Multi-label: predict a label at this probability or above (default: the threshold the
    /// study chose, recorded in the export's sft_search.json; else 0.5).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// Also write the raw logits, one `logit_<label>` column per class.
    #[arg(long, hide = true)]
    pub logits: bool,
}
