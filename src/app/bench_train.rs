//! `bench_train` (being built).

use std::process::ExitCode;

use crate::cli::BenchTrainArgs;

pub fn run(_args: &BenchTrainArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
