//! Process-level settings that make CPU training fast without user-set environment variables,
//! and the one parallel loop the training kernels share.
//!
//! * glibc malloc tuning: candle allocates and frees large buffers every op; without this glibc
//!   maps and unmaps them each time (page faults, kernel zeroing).
//! * One thread pool: gemm and our kernels run on rayon's global pool (`RAYON_NUM_THREADS`,
//!   default one thread per core); candle's own spinning barrier pool for element-wise ops is
//!   sized to the calling thread only (`CANDLE_NUM_THREADS=1` unless the user set it), because
//!   two pools spinning on 2 cores take the cores from each other. Measured on the 2-core dev
//!   box (busy, so indicative): MiniLM, batch 16, seq 64, 2 threads: 2.5 s/step with our kernels
//!   on candle's barrier pool beside gemm's rayon pool, 1.0 s with everything on rayon.

/// Applies the settings once; later calls do nothing. Call it at the start of a process that
/// trains (the `bench train` and `worker` commands do).
pub fn tune_for_training() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tune_malloc();
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            // Runs before any candle op creates its pool (the pools read this lazily). Done once,
            // through std's environment lock, which candle's own reads also take.
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
    });
}

/// Runs `f` over `0..units` split into contiguous ranges on rayon's global pool (inline when
/// there is one thread or one unit).
pub fn par_ranges(units: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    if units <= 1 || threads <= 1 {
        f(0..units);
        return;
    }
    let pieces = (threads * 4).min(units);
    let per = units.div_ceil(pieces);
    (0..pieces).into_par_iter().for_each(|i| {
        let lo = i * per;
        let hi = units.min(lo + per);
        if lo < hi {
            f(lo..hi);
        }
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    // Keep blocks up to 32 MiB (glibc's maximum threshold on 64-bit) on the heap instead of a
    // fresh mmap (page faults + kernel zeroing) per tensor, and do not hand freed memory back to
    // the kernel after every op. Measured: ~12% of CPU time was `clear_page` before this.
    // SAFETY: mallopt only changes allocator parameters; called before the heavy allocations.
    unsafe {
        let ok = libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
            && libc::mallopt(libc::M_TOP_PAD, 64 << 20) == 1;
        if !ok {
            tracing::debug!("mallopt tuning was refused");
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// Peak resident memory of this process in MiB (VmHWM), when /proc is available.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
