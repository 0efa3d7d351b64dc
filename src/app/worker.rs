//! `worker` (being built).

use std::process::ExitCode;

use crate::cli::WorkerArgs;

pub fn run(_args: &WorkerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
