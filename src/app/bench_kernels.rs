//! `sft-search bench kernels`: checks a device's fused training kernels (and, with `--model`,
//! a whole training forward/backward) against the CPU, printing the relative error of every
//! output and gradient (`trainer::model::device_check`). Exits 1 when one is over tolerance.

use std::process::ExitCode;

use crate::cli::{BenchKernelsArgs, TextOrJson};
use crate::trainer::model::device_check;
use crate::trainer::train::parse_device;

pub fn run(args: &BenchKernelsArgs) -> anyhow::Result<ExitCode> {
    let device = parse_device(&args.device)?;
    let rows = device_check::compare(&device, args.model.as_deref())?;
    match args.format {
        TextOrJson::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
        TextOrJson::Text => {
            println!("{:<24} {:<5} {:<44} {:>10} {:>9}  ok", "case", "dtype", "output", "rel err", "tolerance");
            for r in &rows {
                println!(
                    "{:<24} {:<5} {:<44} {:>10.2e} {:>9.0e}  {}",
                    r.case,
                    r.dtype,
                    r.output,
                    r.rel_err,
                    r.tolerance,
                    if r.ok { "yes" } else { "NO" }
                );
            }
        }
    }
    let bad = rows.iter().filter(|r| !r.ok).count();
    if bad > 0 {
        eprintln!("{bad} of {} outputs differ from the CPU beyond tolerance on {}", rows.len(), args.device);
        return Ok(ExitCode::from(1));
    }
    eprintln!("all {} outputs agree with the CPU on {}", rows.len(), args.device);
    Ok(ExitCode::SUCCESS)
}
