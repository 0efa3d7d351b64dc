//! `sft-search bench sampler`: runs a sampler on a built-in benchmark function for several
//! seeds and prints, per seed, the noise-free value of the incumbent after every trial and
//! the time of every suggestion (one JSON line per seed), or with `--summary` the median and
//! quartiles of simple regret at 10/25/50 trials and the mean suggestion time.
//!
//! With `--parallel P`, P suggestions are outstanding at once; each trial gets a duration
//! drawn from the seed and results are told back in completion order, the running ones being
//! in the history as RUNNING trials without a value. With `--noise σ`, σ·N(0,1) is added to
//! the value the sampler sees; the incumbent is the trial with the best *observed* value and
//! is scored by its noise-free value. With `--study`, the space, direction and objective come
//! from a study file instead (see [`super::bench_target`]).

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use serde_json::json;

use super::bench_target::Target;
use super::UsageError;
use crate::cli::BenchSamplerArgs;
use crate::objective::SyntheticFunction;
use crate::sampler::{splitmix64, GpOptions, GpSampler, GridSampler, RandomSampler, Sampler, SuggestContext};
use crate::space::{ParamSet, SearchSpace};
use crate::trial::{TrialRecord, TrialState};

/// Grid points per float (7 x 7 on branin, as the Optuna anchors use).
const GRID_FLOAT_POINTS: usize = 7;

/// One seed's study.
struct Run {
    best: Vec<f64>,
    /// Wall-clock time of each suggestion.
    suggest_ms: Vec<f64>,
    /// CPU time of the suggesting thread for each suggestion: what the suggestion costs
    /// when it has a core to itself, whatever else the machine is doing.
    suggest_cpu_ms: Vec<f64>,
    /// Trials whose parameters equal those of an earlier trial of the run.
    duplicates: usize,
    /// Trials whose evaluation failed (a command objective's non-zero exit, no value, …).
    failed: usize,
}

/// CPU time consumed by the calling thread, in milliseconds (NaN where unavailable).
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 * 1e-6
    } else {
        f64::NAN
    }
}

fn make_sampler(args: &BenchSamplerArgs, target: &Target) -> anyhow::Result<Box<dyn Sampler>> {
    Ok(match args.sampler.as_str() {
        "gp" => Box::new(GpSampler::new(GpOptions { n_startup: args.n_startup.or(target.n_startup), ..GpOptions::default() })),
        "random" => Box::new(RandomSampler),
        "grid" => Box::new(GridSampler::new(GRID_FLOAT_POINTS)),
        other => return Err(UsageError(format!("unknown sampler `{other}` (expected gp, random or grid)")).into()),
    })
}

pub fn run(args: &BenchSamplerArgs) -> anyhow::Result<ExitCode> {
    let target = match (&args.function, &args.study) {
        (Some(name), None) => Target::builtin(name.parse::<SyntheticFunction>().map_err(|m| {
            UsageError(format!("{m}{}", crate::config::suggest::hint(name, SyntheticFunction::ALL.iter().map(|f| f.name()))))
        })?),
        (None, Some(path)) => Target::from_study(path, args.optimum)?,
        _ => return Err(UsageError("give one of --function and --study".into()).into()),
    };
    if args.parallel == 0 {
        return Err(UsageError("--parallel must be at least 1".into()).into());
    }
    if args.trials == 0 && args.existing.is_empty() {
        return Err(UsageError("--trials must be at least 1".into()).into());
    }
    if args.jobs == 0 {
        return Err(UsageError("--jobs must be at least 1".into()).into());
    }
    let noise = args.noise.unwrap_or(target.default_noise);
    if !(noise >= 0.0 && noise.is_finite()) {
        return Err(UsageError("--noise must be a finite sigma >= 0".into()).into());
    }
    let sampler = make_sampler(args, &target)?;
    if !args.existing.is_empty() {
        return run_existing(args, &target, sampler.as_ref());
    }
    let seeds: Vec<u64> = (args.first_seed..args.first_seed.saturating_add(args.seeds)).collect();
    let mut runs = Vec::new();
    let mut print = |seed: u64, r: Run| {
        if !args.summary {
            println!(
                "{}",
                json!({
                    "function": target.name, "sampler": sampler.name(), "seed": seed,
                    "noise": noise, "parallel": args.parallel, "failed": r.failed,
                    "best": r.best, "suggest_ms": r.suggest_ms, "suggest_cpu_ms": r.suggest_cpu_ms, "duplicates": r.duplicates,
                })
            );
        }
        runs.push(r);
    };
    if args.jobs == 1 || seeds.len() < 2 {
        for &seed in &seeds {
            print(seed, run_seed(args, &target, noise, sampler.as_ref(), seed)?);
        }
    } else {
        for (seed, r) in seeds.iter().zip(run_seeds_concurrently(args, &target, noise, &seeds)?) {
            print(*seed, r);
        }
    }
    if args.summary {
        print_summary(args, &target, noise, sampler.name(), &runs);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `seeds` on `args.jobs` threads, each with a sampler of its own (a sampler's memo
/// serves one history at a time); returns the runs in the order of `seeds`, or the error of
/// the first seed (in that order) that failed.
fn run_seeds_concurrently(args: &BenchSamplerArgs, target: &Target, noise: f64, seeds: &[u64]) -> anyhow::Result<Vec<Run>> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, anyhow::Result<Run>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.jobs.min(seeds.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    let sampler = match make_sampler(args, target) {
                        Ok(s) => s,
                        Err(e) => {
                            out.push((0, Err(e)));
                            return out;
                        }
                    };
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&seed) = seeds.get(i) else { break };
                        let r = run_seed(args, target, noise, sampler.as_ref(), seed);
                        let failed = r.is_err();
                        out.push((i, r));
                        if failed {
                            // The first error ends the benchmark: hand out no more seeds.
                            next.store(seeds.len(), Ordering::SeqCst);
                        }
                    }
                    out
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|_| vec![(0, Err(anyhow::anyhow!("a benchmark thread panicked")))]))
            .collect()
    });
    // Seeds are handed out in order, so every seed before a failed one has run: in seed
    // order, the first error is met before any gap.
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

fn run_seed(args: &BenchSamplerArgs, target: &Target, noise: f64, sampler: &dyn Sampler, seed: u64) -> anyhow::Result<Run> {
    let space = &target.space;
    let mut history: Vec<TrialRecord> = Vec::with_capacity(args.trials);
    let mut noise_rng = ChaCha8Rng::seed_from_u64(seed + 10007);
    let mut duration_rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ 0xd0_7a_7e));
    // (finish time, index into history)
    let mut running: Vec<(f64, usize)> = Vec::new();
    let mut now = 0.0f64;
    let (mut best_observed, mut best_true) = (f64::NAN, f64::NAN);
    let mut run = Run {
        best: Vec::with_capacity(args.trials),
        suggest_ms: Vec::with_capacity(args.trials),
        suggest_cpu_ms: Vec::with_capacity(args.trials),
        duplicates: 0,
        failed: 0,
    };
    let mut exhausted = false;
    while run.best.len() < args.trials {
        while !exhausted && running.len() < args.parallel && history.len() < args.trials {
            let number = history.len() as u64;
            let ctx = SuggestContext { space, direction: target.direction, history: &history, number, seed, fixed: None };
            let (start, cpu_start) = (Instant::now(), thread_cpu_ms());
            let proposal = sampler.suggest(&ctx).with_context(|| format!("seed {seed}, trial {number}"))?;
            run.suggest_ms.push(start.elapsed().as_secs_f64() * 1e3);
            run.suggest_cpu_ms.push(thread_cpu_ms() - cpu_start);
            let Some(params) = proposal else {
                exhausted = true;
                break;
            };
            history.push(TrialRecord::new(number, TrialState::Running, params, None));
            running.push((now + duration_rng.random_range(0.5..1.5), history.len() - 1));
        }
        let Some(k) = (0..running.len()).min_by(|&a, &b| running[a].0.total_cmp(&running[b].0)) else {
            break;
        };
        let (finish, idx) = running.swap_remove(k);
        now = finish;
        match target.evaluate(&history[idx].params, seed, history[idx].number)? {
            Ok(value) => {
                let observed = value + noise * noise_rng.sample::<f64, _>(StandardNormal);
                history[idx].state = TrialState::Complete;
                history[idx].value = Some(observed);
                if best_observed.is_nan() || target.direction.is_better(observed, best_observed) {
                    best_observed = observed;
                    best_true = value;
                }
            }
            Err(reason) => {
                tracing::warn!("seed {seed}, trial {}: failed: {reason}", history[idx].number);
                history[idx].state = TrialState::Fail;
                run.failed += 1;
            }
        }
        run.best.push(best_true);
    }
    run.duplicates =
        (0..history.len()).filter(|&i| history[..i].iter().any(|t| SearchSpace::same_point(&t.params, &history[i].params))).count();
    Ok(run)
}

/// numpy's default (linear interpolation) percentile of `v`, `q` in [0, 100].
pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (s.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x != 0.0 && (x.abs() < 1e-3 || x.abs() >= 1e4) {
        format!("{x:.2e}")
    } else {
        format!("{x:.4}")
    }
}

/// Mean of the suggestion times of trials `from..=to` (1-based) over runs; NaN when no run
/// reached them.
fn mean_ms(runs: &[Run], from: usize, to: usize, times: fn(&Run) -> &[f64]) -> f64 {
    let v: Vec<f64> = runs.iter().filter(|r| times(r).len() >= to).flat_map(|r| times(r)[from - 1..to].iter().copied()).collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn print_summary(args: &BenchSamplerArgs, target: &Target, noise: f64, sampler: &str, runs: &[Run]) {
    let m = target.measure();
    println!(
        "| function | noise | sampler | parallel | seeds | trials | {m}@10 | {m}@25 | {m}@50 | {m}@100 | ms@50 | ms@100 | mean ms (all) | cpu ms@50 | cpu ms@100 | duplicates | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let at = |n: usize| {
        let v: Vec<f64> = runs.iter().filter(|r| r.best.len() >= n).map(|r| target.regret(r.best[n - 1])).collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            format!("{} [{}, {}]", fmt_num(percentile(&v, 50.0)), fmt_num(percentile(&v, 25.0)), fmt_num(percentile(&v, 75.0)))
        }
    };
    let all: Vec<f64> = runs.iter().flat_map(|r| r.suggest_ms.iter().copied()).collect();
    let mean_all = if all.is_empty() { f64::NAN } else { all.iter().sum::<f64>() / all.len() as f64 };
    let ms = |x: f64| if x.is_nan() { "-".to_string() } else { format!("{x:.2}") };
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        target.name,
        noise,
        sampler,
        args.parallel,
        runs.len(),
        args.trials,
        at(10),
        at(25),
        at(50),
        at(100),
        ms(mean_ms(runs, 41, 50, |r| &r.suggest_ms)),
        ms(mean_ms(runs, 91, 100, |r| &r.suggest_ms)),
        ms(mean_all),
        ms(mean_ms(runs, 41, 50, |r| &r.suggest_cpu_ms)),
        ms(mean_ms(runs, 91, 100, |r| &r.suggest_cpu_ms)),
        runs.iter().map(|r| r.duplicates).sum::<usize>(),
        runs.iter().map(|r| r.failed).sum::<usize>(),
    );
    if let Some(line) = block_spread(runs, target) {
        println!("{line}");
    }
}

/// Seeds per block in [`block_spread`].
const BLOCK: usize = 10;

/// With at least two blocks of ten seeds: the lowest and highest median regret of a block at
/// 25 and 50 trials. A ten-seed median (the protocol) swings by several times between
/// blocks on some functions, so a change that moves it within that range is not shown to be
/// better or worse.
fn block_spread(runs: &[Run], target: &Target) -> Option<String> {
    let blocks = runs.len() / BLOCK;
    if blocks < 2 {
        return None;
    }
    let range = |n: usize| -> Option<String> {
        let medians: Vec<f64> = runs
            .chunks_exact(BLOCK)
            .map(|b| b.iter().filter(|r| r.best.len() >= n).map(|r| target.regret(r.best[n - 1])).collect::<Vec<f64>>())
            .filter(|v| v.len() == BLOCK)
            .map(|v| percentile(&v, 50.0))
            .collect();
        let lo = medians.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = medians.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (medians.len() >= 2).then(|| format!("@{n} {} – {}", fmt_num(lo), fmt_num(hi)))
    };
    let parts: Vec<String> = [25, 50].into_iter().filter_map(range).collect();
    (!parts.is_empty())
        .then(|| format!("median {} of each block of {BLOCK} seeds ({blocks} blocks): {}", target.measure(), parts.join(", ")))
}

/// The record of trial `number` at `params` once the target has evaluated it.
fn told(target: &Target, seed: u64, number: u64, params: ParamSet) -> anyhow::Result<TrialRecord> {
    Ok(match target.evaluate(&params, seed, number)? {
        Ok(v) => TrialRecord::new(number, TrialState::Complete, params, Some(v)),
        Err(_) => TrialRecord::new(number, TrialState::Fail, params, None),
    })
}

/// `--existing`: time suggestions after N uniform random completed trials.
fn run_existing(args: &BenchSamplerArgs, target: &Target, sampler: &dyn Sampler) -> anyhow::Result<ExitCode> {
    let space = &target.space;
    for &n in &args.existing {
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        for seed in args.first_seed..args.first_seed.saturating_add(args.seeds) {
            let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ 0xe815_7111));
            let mut history: Vec<TrialRecord> = Vec::with_capacity(n + args.probe);
            for number in 0..n as u64 {
                let params = RandomSampler::draw(space, &mut rng);
                history.push(told(target, seed, number, params)?);
            }
            let mut seed_times = Vec::new();
            let mut seed_cpu = Vec::new();
            for _ in 0..args.probe {
                let number = history.len() as u64;
                let ctx = SuggestContext { space, direction: target.direction, history: &history, number, seed, fixed: None };
                let (start, cpu_start) = (Instant::now(), thread_cpu_ms());
                let Some(params) = sampler.suggest(&ctx)? else { break };
                seed_times.push(start.elapsed().as_secs_f64() * 1e3);
                seed_cpu.push(thread_cpu_ms() - cpu_start);
                history.push(told(target, seed, number, params)?);
            }
            if !args.summary {
                println!(
                    "{}",
                    json!({"mode": "existing", "function": target.name, "sampler": sampler.name(), "seed": seed, "existing": n, "suggest_ms": seed_times, "suggest_cpu_ms": seed_cpu})
                );
            }
            times.extend(seed_times);
            cpu.extend(seed_cpu);
        }
        if args.summary && !times.is_empty() {
            let mean = times.iter().sum::<f64>() / times.len() as f64;
            println!(
                "| {} | {} | existing {} | probes {} | mean {:.2} ms | median {:.2} ms | min {:.2} ms | max {:.2} ms | cpu mean {:.2} ms |",
                target.name,
                sampler.name(),
                n,
                times.len(),
                mean,
                percentile(&times, 50.0),
                percentile(&times, 0.0),
                percentile(&times, 100.0),
                cpu.iter().sum::<f64>() / cpu.len().max(1) as f64
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with_best(best: Vec<f64>) -> Run {
        Run { best, suggest_ms: vec![], suggest_cpu_ms: vec![], duplicates: 0, failed: 0 }
    }

    #[test]
    fn block_spread_gives_the_range_of_ten_seed_medians() {
        // Two blocks: regrets 0..9 at every trial in the first (median 4.5), 10..19 in the
        // second (median 14.5); 25 trials only, so no @50 part.
        let runs: Vec<Run> = (0..20).map(|k| run_with_best(vec![k as f64; 25])).collect();
        let target = Target::builtin(SyntheticFunction::Rosenbrock4); // optimum 0
        assert_eq!(
            block_spread(&runs, &target).as_deref(),
            Some("median regret of each block of 10 seeds (2 blocks): @25 4.5000 – 14.5000")
        );
        // One block is no spread; nor are runs too short for @25.
        assert_eq!(block_spread(&runs[..15], &target), None);
        let short: Vec<Run> = (0..20).map(|k| run_with_best(vec![k as f64; 10])).collect();
        assert_eq!(block_spread(&short, &target), None);
    }

    /// numpy.percentile([1, 2, 3, 4], [25, 50, 75]) = [1.75, 2.5, 3.25].
    #[test]
    fn percentiles_follow_numpy_linear_interpolation() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 25.0), 1.75);
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 75.0), 3.25);
    }
}
