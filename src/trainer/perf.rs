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
//! * Subnormal floats flushed to zero (x86-64: the FTZ and DAZ bits of MXCSR) on the calling
//!   thread, on every thread of that pool and of candle's barrier pool (which has threads only
//!   when the user sets `CANDLE_NUM_THREADS` above 1), as TensorFlow does in its pools. On Intel CPUs
//!   an SSE/AVX operation that reads or makes a subnormal takes a microcode assist of ~100
//!   cycles. Fine-tuning all-MiniLM-L6-v2 on real SST-2 text makes such values (`bench train`'s
//!   random tokens do not), and on a 2-core Intel Xeon a `bench train --data` step took 17 s
//!   instead of 0.8 s (a study trial: 0.95 samples/s against ~25), 97% of the time in gemm's
//!   microkernel. Values
//!   below 1.2e-38 become 0, which changes no result that matters (transformers' parity tests
//!   pass unchanged). AMD Zen CPUs handle subnormals without the assist, which is why
//!   it went unseen there.

/// Applies the process-wide settings once, and flushes subnormals on the calling thread at
/// every call. Call it at the start of a process that trains (the `bench train` and `worker`
/// commands do; so does [`crate::trainer::model::BertClassifier::load`]), after
/// `RAYON_NUM_THREADS` is set: it starts rayon's global pool.
pub fn tune_for_training() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tune_malloc();
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            // Runs before any candle op creates its pool (the pools read this lazily). Done once,
            // through std's environment lock, which candle's own reads also take.
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        // The pools' threads live as long as the process, so once is enough for them.
        rayon::broadcast(|_| flush_subnormals_on_this_thread());
        // candle's barrier pool runs its element-wise ops. It has no thread of its own unless
        // the user set `CANDLE_NUM_THREADS` above 1. New threads inherit their creator's
        // MXCSR, so a pool made after this point is flushed already; one made before (a candle
        // op run before this call) is not. `execute` runs the closure once on every worker and
        // on the caller.
        candle_core::utils::barrier_pool().execute(|_| flush_subnormals_on_this_thread());
    });
    flush_subnormals_on_this_thread();
}

/// Makes this thread's floating-point operations treat subnormal inputs as zero (DAZ) and
/// round subnormal results to zero (FTZ). A per-thread setting; a no-op off x86-64.
pub fn flush_subnormals_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    {
        // Bit 15 is flush-to-zero, bit 6 denormals-are-zero (Intel SDM, vol. 1, 10.2.3).
        const FTZ_DAZ: u32 = 0x8040;
        // SAFETY: reading and writing MXCSR only changes how this thread rounds subnormals; the
        // exception masks and rounding mode are kept. (`_mm_getcsr`/`_mm_setcsr` are deprecated
        // in favour of inline assembly, which would do the same two instructions.)
        #[allow(deprecated)]
        unsafe {
            let csr = std::arch::x86_64::_mm_getcsr();
            if csr & FTZ_DAZ != FTZ_DAZ {
                std::arch::x86_64::_mm_setcsr(csr | FTZ_DAZ);
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Halving the smallest normal f32 gives a subnormal, or 0 once the flush is on.
    fn halved_min_normal() -> f32 {
        std::hint::black_box(f32::MIN_POSITIVE) * std::hint::black_box(0.5f32)
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn subnormals_are_flushed_on_the_caller_and_on_every_pool_thread() {
        // A fresh thread starts with the default MXCSR, so the check before is meaningful
        // even when another test of this process has already tuned the pool.
        std::thread::spawn(|| {
            let before = halved_min_normal();
            assert!(before > 0.0 && before.is_subnormal(), "expected a subnormal before, got {before:e}");
            tune_for_training();
            assert_eq!(halved_min_normal().to_bits(), 0, "the calling thread still makes subnormals");
            // DAZ: a subnormal input counts as zero. The sum is a normal number, so FTZ alone
            // would leave it one bit above the smallest normal.
            let sub = std::hint::black_box(f32::from_bits(1));
            assert_eq!((sub + std::hint::black_box(f32::MIN_POSITIVE)).to_bits(), f32::MIN_POSITIVE.to_bits());
        })
        .join()
        .expect("the test thread panicked");
        let per_thread: Vec<f32> = rayon::broadcast(|_| halved_min_normal());
        assert_eq!(per_thread.len(), rayon::current_num_threads());
        // Bits, not `== 0.0`: with DAZ on this thread a subnormal would compare equal to 0.
        assert!(per_thread.iter().all(|&x| x.to_bits() == 0), "a pool thread still makes subnormals: {per_thread:?}");
    }

    /// Run by [`candles_barrier_pool_threads_are_flushed_when_the_user_sizes_it`] in a child
    /// process of this test binary, with `CANDLE_NUM_THREADS=3`: candle's barrier pool is
    /// created once per process, so only a fresh process can give it worker threads, and
    /// make them before the flush.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[ignore = "run in a child process by the test below"]
    fn child_barrier_pool_threads_make_no_subnormals() {
        // Threads inherit their creator's MXCSR, so a pool made after the flush would pass
        // without it: make the pool first, as a candle op run before the flush would.
        let pool = candle_core::utils::barrier_pool();
        tune_for_training();
        assert_eq!(pool.n_workers(), 2, "CANDLE_NUM_THREADS=3 should give the pool 2 workers besides the caller");
        let seen = std::sync::Mutex::new(Vec::new());
        pool.execute(|tid| seen.lock().unwrap_or_else(|e| e.into_inner()).push((tid, halved_min_normal())));
        let seen = seen.into_inner().unwrap_or_else(|e| e.into_inner());
        assert_eq!(seen.len(), 3, "{seen:?}");
        // Bits, not `== 0.0`: with DAZ on this thread a subnormal compares equal to 0.
        assert!(seen.iter().all(|&(_, x)| x.to_bits() == 0), "a barrier-pool thread still makes subnormals: {seen:?}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn candles_barrier_pool_threads_are_flushed_when_the_user_sizes_it() {
        let exe = std::env::current_exe().expect("the test binary's path");
        let out = std::process::Command::new(exe)
            .args(["--exact", "trainer::perf::tests::child_barrier_pool_threads_make_no_subnormals", "--ignored", "--nocapture"])
            .env("CANDLE_NUM_THREADS", "3")
            .output()
            .expect("running the test binary again");
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && text.contains("1 passed"), "the child test failed:\n{text}");
    }
}
