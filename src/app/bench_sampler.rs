//! `bench_sampler` (being built).

use std::process::ExitCode;

use crate::cli::BenchSamplerArgs;

pub fn run(_args: &BenchSamplerArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
