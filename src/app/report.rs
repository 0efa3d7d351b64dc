//! `sft-search report`: the self-contained HTML report of a study.

use std::process::ExitCode;

use super::common::{open_existing, print_out, shown};
use super::plot::default_dir;
use crate::cli::ReportArgs;
use crate::report::write_report;

pub fn run(args: &ReportArgs, quiet: bool) -> anyhow::Result<ExitCode> {
    let open = open_existing(&args.study, args.study_name.as_deref())?;
    let out = match &args.out {
        Some(o) => o.clone(),
        None => default_dir(&open, &args.study).join(format!("{}-report.html", open.study.name)),
    };
    let written = write_report(&open.store, &open.study, open.config.as_ref(), &out)?;
    if !quiet {
        print_out(&format!("{}\n", shown(&written)))?;
    }
    Ok(ExitCode::SUCCESS)
}
