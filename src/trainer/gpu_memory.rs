//! GPU memory a training process holds, for the progress lines `status` shows: asked of
//! `nvidia-smi` (per process, as the driver counts it: the CUDA context, candle's buffers and
//! the allocator's cache), at most every [`GpuMemoryProbe::EVERY`], and only on a CUDA device.
//! Where `nvidia-smi` is missing or says nothing about this process the figure is absent,
//! never a guess.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Parses `nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits`
/// and sums the MiB held by `pid` (a process on several GPUs has one line per GPU).
pub fn parse_compute_apps(text: &str, pid: u32) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        let mut fields = line.split(',').map(str::trim);
        let (Some(p), Some(mib)) = (fields.next(), fields.next()) else { continue };
        if p.parse::<u32>().ok() != Some(pid) {
            continue;
        }
        if let Ok(m) = mib.parse::<f64>() {
            *total.get_or_insert(0.0) += m;
        }
    }
    total
}

/// Asks `nvidia-smi` now for the MiB `pid` holds.
pub fn query(program: &std::path::Path, pid: u32) -> Option<f64> {
    let out = Command::new(program)
        .args(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_compute_apps(&String::from_utf8_lossy(&out.stdout), pid)
}

/// A throttled probe for this process.
#[derive(Debug)]
pub struct GpuMemoryProbe {
    program: Option<PathBuf>,
    last: Option<(Instant, Option<f64>)>,
}

impl GpuMemoryProbe {
    /// How often `nvidia-smi` is asked at most (it takes tens of milliseconds).
    pub const EVERY: Duration = Duration::from_secs(10);

    /// A probe for a run on `device` (`cpu`, `cuda`, `cuda:K`): inactive unless CUDA.
    pub fn for_device(device: &str) -> Self {
        let program = device.starts_with("cuda").then(|| PathBuf::from("nvidia-smi"));
        GpuMemoryProbe { program, last: None }
    }

    /// A probe asking `program` instead of `nvidia-smi` (tests).
    pub fn with_program(program: PathBuf) -> Self {
        GpuMemoryProbe { program: Some(program), last: None }
    }

    /// The MiB this process holds on its GPU, refreshed at most every [`Self::EVERY`].
    pub fn mib(&mut self) -> Option<f64> {
        let program = self.program.as_ref()?;
        if let Some((at, v)) = self.last {
            if at.elapsed() < Self::EVERY {
                return v;
            }
        }
        let v = query(program, std::process::id());
        if v.is_none() && self.last.is_none() {
            // No nvidia-smi, or it does not list this process: said once; asked again later.
            tracing::debug!("no GPU memory figure from {}", program.display());
        }
        self.last = Some((Instant::now(), v));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_this_process_lines_only() {
        let text = "1234, 812\n999, 4000\n1234, 100\nnot a line\n";
        assert_eq!(parse_compute_apps(text, 1234), Some(912.0));
        assert_eq!(parse_compute_apps(text, 999), Some(4000.0));
        assert_eq!(parse_compute_apps(text, 5), None);
        assert_eq!(parse_compute_apps("", 5), None);
    }

    #[test]
    fn asks_the_program_and_throttles() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = dir.path().join("nvidia-smi");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho x >> {}\necho \"{}, 2048\"\necho \"1, 7\"\n", count.display(), std::process::id()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut probe = GpuMemoryProbe::with_program(script);
        assert_eq!(probe.mib(), Some(2048.0));
        assert_eq!(probe.mib(), Some(2048.0));
        let calls = std::fs::read_to_string(&count).unwrap().lines().count();
        assert_eq!(calls, 1, "a second ask within {:?} reuses the figure", GpuMemoryProbe::EVERY);
    }

    #[test]
    fn cpu_runs_and_missing_programs_give_nothing() {
        assert_eq!(GpuMemoryProbe::for_device("cpu").mib(), None);
        assert_eq!(GpuMemoryProbe::with_program("/nonexistent/nvidia-smi".into()).mib(), None);
    }
}
