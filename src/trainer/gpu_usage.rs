//! How much of its GPU a training process uses, for the progress lines `status` shows and the
//! trial's metrics: the memory it holds (`nvidia-smi --query-compute-apps`: the CUDA context,
//! candle's buffers and the allocator's cache) and its share of the GPU's time (`nvidia-smi
//! pmon`: the percentage of time one of its kernels was running, over one-second samples),
//! summed over the trial into GPU-busy seconds. Several trials sharing a GPU each report their
//! own share. A background thread asks every [`GpuUsageProbe::EVERY`] (a `pmon` sample takes a
//! second), so the training loop never waits; only on a CUDA device. Where `nvidia-smi` is
//! missing or says nothing about this process the figures are absent, never a guess.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
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

/// Parses `nvidia-smi pmon -c 1 -s u` (columns `gpu pid type sm mem …`, `#` header lines) and
/// sums the SM percentage of `pid`'s lines (`-`, no kernel in the sample, counts as 0).
pub fn parse_pmon(text: &str, pid: u32) -> Option<f64> {
    let mut total = None;
    for line in text.lines() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 || fields[1].parse::<u32>().ok() != Some(pid) {
            continue;
        }
        let sm = if fields[3] == "-" { Some(0.0) } else { fields[3].parse::<f64>().ok() };
        if let Some(sm) = sm {
            *total.get_or_insert(0.0) += sm;
        }
    }
    total
}

fn run(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the probe has seen so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuUsage {
    /// MiB held at the last sample.
    pub memory_mib: Option<f64>,
    /// SM percentage at the last sample.
    pub sm_percent: Option<f64>,
    /// Σ SM share × seconds between samples: the seconds the GPU spent on this process.
    pub busy_s: f64,
    /// The seconds those samples cover.
    pub sampled_s: f64,
}

impl GpuUsage {
    /// The mean SM percentage over the sampled time.
    pub fn mean_sm_percent(&self) -> Option<f64> {
        (self.sampled_s > 0.0).then(|| 100.0 * self.busy_s / self.sampled_s)
    }
}

/// Samples this process's GPU usage in a background thread (stopped when dropped).
#[derive(Debug)]
pub struct GpuUsageProbe {
    shared: Option<Arc<Mutex<GpuUsage>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl GpuUsageProbe {
    /// How often `nvidia-smi` is asked.
    pub const EVERY: Duration = Duration::from_secs(10);

    /// A probe for a run on `device` (`cpu`, `cuda`, `cuda:K`): inactive unless CUDA.
    pub fn for_device(device: &str) -> Self {
        if device.starts_with("cuda") {
            Self::start(PathBuf::from("nvidia-smi"), Self::EVERY)
        } else {
            Self::inactive()
        }
    }

    /// A probe that reports nothing.
    pub fn inactive() -> Self {
        GpuUsageProbe { shared: None, stop: Arc::new(AtomicBool::new(false)), thread: None }
    }

    /// A probe asking `program` (instead of `nvidia-smi`, in tests) every `every`.
    pub fn start(program: PathBuf, every: Duration) -> Self {
        let shared = Arc::new(Mutex::new(GpuUsage::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let pid = std::process::id();
        let thread = std::thread::Builder::new()
            .name("gpu-usage".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                let mut said = false;
                while !st.load(Ordering::Relaxed) {
                    let mib = run(&program, &["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
                        .and_then(|t| parse_compute_apps(&t, pid));
                    let sm = run(&program, &["pmon", "-c", "1", "-s", "u"]).and_then(|t| parse_pmon(&t, pid));
                    if mib.is_none() && sm.is_none() && !said {
                        tracing::debug!("no GPU usage figures from {}", program.display());
                        said = true;
                    }
                    let now = Instant::now();
                    if let Ok(mut u) = s.lock() {
                        u.memory_mib = mib;
                        u.sm_percent = sm;
                        if let (Some(sm), Some(at)) = (sm, last) {
                            let dt = now.duration_since(at).as_secs_f64();
                            u.busy_s += sm / 100.0 * dt;
                            u.sampled_s += dt;
                        }
                    }
                    last = Some(now);
                    std::thread::park_timeout(every);
                }
            })
            .ok();
        GpuUsageProbe { shared: thread.as_ref().map(|_| shared), stop, thread }
    }

    /// The latest figures (all absent when inactive).
    pub fn usage(&self) -> GpuUsage {
        match &self.shared {
            Some(s) => s.lock().map(|u| *u).unwrap_or_default(),
            None => GpuUsage::default(),
        }
    }
}

impl Drop for GpuUsageProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // Wake it from its wait; it ends after the nvidia-smi call in flight, if any.
            t.thread().unpark();
        }
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
    fn reads_the_sm_share_of_this_process_from_pmon() {
        let text = "# gpu         pid   type     sm    mem    enc    dec    jpg    ofa    command\n\
                    # Idx           #    C/G      %      %      %      %      %      %    name\n\
                    \x20   0      1234     C     45     10      -      -      -      -    sft-search\n\
                    \x20   0       999     C     30      8      -      -      -      -    python3\n\
                    \x20   1      1234     C      5      1      -      -      -      -    sft-search\n\
                    \x20   0       777     C      -      -      -      -      -      -    idle\n";
        assert_eq!(parse_pmon(text, 1234), Some(50.0));
        assert_eq!(parse_pmon(text, 999), Some(30.0));
        assert_eq!(parse_pmon(text, 777), Some(0.0));
        assert_eq!(parse_pmon(text, 5), None);
    }

    #[test]
    fn samples_in_the_background_and_sums_busy_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("nvidia-smi");
        let pid = std::process::id();
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ \"$1\" = pmon ]; then\n  echo '# gpu pid type sm mem'\n  echo '    0 {pid} C 40 3 - - - - sft-search'\nelse\n  echo '{pid}, 2048'\n  echo '1, 7'\nfi\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = GpuUsageProbe::start(script, Duration::from_millis(50));
        let t0 = Instant::now();
        while probe.usage().sampled_s < 0.2 && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let u = probe.usage();
        assert_eq!(u.memory_mib, Some(2048.0));
        assert_eq!(u.sm_percent, Some(40.0));
        assert!(u.sampled_s >= 0.2, "{u:?}");
        let mean = u.mean_sm_percent().unwrap();
        assert!((mean - 40.0).abs() < 1e-9, "busy {} of {} s", u.busy_s, u.sampled_s);
    }

    #[test]
    fn cpu_runs_and_missing_programs_give_nothing() {
        assert_eq!(GpuUsageProbe::for_device("cpu").usage(), GpuUsage::default());
        let probe = GpuUsageProbe::start("/nonexistent/nvidia-smi".into(), Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(100));
        let u = probe.usage();
        assert_eq!((u.memory_mib, u.sm_percent, u.sampled_s), (None, None, 0.0));
    }
}
