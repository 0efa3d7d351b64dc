//! The composition root: turns parsed arguments into work by wiring config, store, samplers,
//! runners and reports together. One file per subcommand; each converts its arguments and
//! calls the library. Errors carry context here (anyhow); library layers use thiserror.

pub mod ask;
pub mod bench_kernels;
pub mod bench_pruning;
pub mod bench_sampler;
pub mod bench_scheduler;
pub mod bench_target;
pub mod bench_train;
pub mod best;
pub mod common;
pub mod enqueue;
pub mod export;
pub mod finetune;
pub mod plot;
pub mod predict;
pub mod predict_tokens;
pub mod report;
pub mod run;
pub mod status;
pub mod tell;
pub mod trials;
pub mod worker;

use std::process::ExitCode;

use crate::cli::{BenchCommand, Cli, Command};

/// An error the user made in what they asked for (a bad study file, a bad argument):
/// exits with status 2 instead of 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Runs the command and turns the result into an exit code: 0 ok, 2 usage or study-file
/// error, 1 anything else (including a study that failed).
pub fn main(cli: Cli) -> ExitCode {
    quiet_library_backtraces();
    init_logging(cli.verbose, cli.quiet);
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", chain_text(&err));
            if is_usage_error(&err) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The error and its causes, joined by ": ", leaving out a cause whose text the messages
/// before it already hold (our errors often quote their source, as in "path: os error").
fn chain_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for e in err.chain() {
        let s = e.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

/// Candle attaches a captured backtrace to the text of its errors whenever `RUST_BACKTRACE` is
/// set, so with it set a trial's recorded error became its message plus dozens of frame lines
/// (seen on an H200: "out of memory twice ...: DriverError(CUDA_ERROR_OUT_OF_MEMORY) 0: <unknown>
/// 1: <unknown> ..."). `RUST_LIB_BACKTRACE=0` turns off backtraces in error values alone; panics
/// keep following `RUST_BACKTRACE`, and a user who sets `RUST_LIB_BACKTRACE` keeps their choice.
/// Runs first in `main`, before any thread starts; worker processes inherit it.
fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

fn is_usage_error(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.is::<UsageError>())
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,sft_search=info",
        (false, 1) => "info,sft_search=debug",
        (false, _) => "debug,sft_search=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Run(args) => run::run(&args, quiet),
        Command::Status(args) => status::run(&args),
        Command::Trials(args) => trials::run(&args),
        Command::Best(args) => best::run(&args),
        Command::Enqueue(args) => enqueue::run(&args, quiet),
        Command::Ask(args) => ask::run(&args, quiet),
        Command::Tell(args) => tell::run(&args, quiet),
        Command::Plot(args) => plot::run(&args, quiet),
        Command::Report(args) => report::run(&args, quiet),
        Command::Bench(BenchCommand::Sampler(args)) => bench_sampler::run(&args),
        Command::Bench(BenchCommand::Train(args)) => bench_train::run(&args),
        Command::Bench(BenchCommand::Scheduler(args)) => bench_scheduler::run(&args),
        Command::Bench(BenchCommand::Pruning(args)) => bench_pruning::run(&args),
        Command::Bench(BenchCommand::Kernels(args)) => bench_kernels::run(&args),
        Command::Worker(args) => worker::run(&args),
        Command::Export(args) => export::run(&args, quiet),
        Command::Predict(args) => predict::run(&args, quiet),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_the_message_already_quotes_is_not_printed_twice() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let quoted = crate::export::folder::FolderError::Io { path: "/proc/x".into(), source: io };
        let err = anyhow::Error::new(quoted).context("exporting trial 3");
        assert_eq!(chain_text(&err), "exporting trial 3: /proc/x: No such file or directory (os error 2)");
        let plain = anyhow::anyhow!("disk full").context("writing a.csv");
        assert_eq!(chain_text(&plain), "writing a.csv: disk full");
    }
}
