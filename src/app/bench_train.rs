//! `sft-search bench train`: times fine-tuning steps of a BERT checkpoint on random token ids
//! (seeded), padded to the full length: forward (with the loss), backward, AdamW step (`FusedAdamW`), with
//! dropout on. Two warm-up steps are not timed. Prints ms per phase, samples/s and peak RSS;
//! the text output adds the process CPU time per step, a steadier figure on a shared machine.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::{BenchTrainArgs, TextOrJson};
use crate::trainer::fused_adamw::{AdamWParams, FusedAdamW};
use crate::trainer::model::{read_config, BertClassifier, ModelOptions};
use crate::trainer::perf;

const WARMUP: usize = 2;

/// CPU time of the whole process (all threads), in seconds.
fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    } else {
        f64::NAN
    }
}

/// Parses `cpu`, `cuda` or `cuda:K`.
pub fn parse_device(s: &str) -> anyhow::Result<Device> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::new_cuda(0)?),
        _ => match s.strip_prefix("cuda:") {
            Some(k) => Ok(Device::new_cuda(k.parse().with_context(|| format!("device `{s}`"))?)?),
            None => anyhow::bail!("unknown device `{s}` (use cpu or cuda:K)"),
        },
    }
}

pub fn run(args: &BenchTrainArgs) -> anyhow::Result<ExitCode> {
    perf::tune_for_training();
    anyhow::ensure!(args.steps > 0 && args.batch_size > 0 && args.seq_len > 0, "steps, batch size and seq len must be positive");
    let device = parse_device(&args.device)?;
    let config = read_config(&args.model)?;
    let opts = ModelOptions {
        num_labels: 2,
        freeze_layers: args.freeze_layers,
        seed: 0,
        compute_dtype: args.precision.dtype(),
        ..ModelOptions::default()
    };
    let model = BertClassifier::load(&args.model, &opts, &device)?;
    let (b, s) = (args.batch_size, args.seq_len);

    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let vocab = config.vocab_size as u32;
    let ids: Vec<u32> = (0..b * s).map(|i| if i % s == 0 { 101.min(vocab - 1) } else { rng.random_range(1..vocab) }).collect();
    let ids = Tensor::from_vec(ids, (b, s), &device)?;
    let mask = Tensor::ones((b, s), candle_core::DType::U32, &device)?;
    let labels: Vec<u32> = (0..b).map(|_| rng.random_range(0..2)).collect();
    let labels = Tensor::from_vec(labels, b, &device)?;

    let hp = AdamWParams { lr: 5e-5, weight_decay: 0.01, ..AdamWParams::default() };
    let mut opt = FusedAdamW::new(model.trainable_vars(), hp, |name| !name.ends_with(".bias") && !name.contains("LayerNorm"))?;

    let (mut fwd, mut bwd, mut optim) = (0.0f64, 0.0f64, 0.0f64);
    let sync = |t: &Tensor| -> anyhow::Result<()> {
        // Reading a scalar waits for asynchronous devices.
        let _ = t.to_dtype(candle_core::DType::F32)?.sum_all()?.to_scalar::<f32>()?;
        Ok(())
    };
    let mut last_loss = f32::NAN;
    let mut cpu_start = f64::NAN;
    for step in 0..WARMUP + args.steps {
        if step == WARMUP {
            cpu_start = process_cpu_s();
        }
        let t0 = Instant::now();
        let logits = model.forward(&ids, &mask, None, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        sync(&loss)?;
        let t1 = Instant::now();
        let grads = model.backward(&loss)?;
        if !device.is_cpu() {
            device.synchronize()?;
        }
        let t2 = Instant::now();
        opt.step(&grads)?;
        if !device.is_cpu() {
            device.synchronize()?;
        }
        drop(grads);
        let t3 = Instant::now();
        last_loss = loss.to_scalar::<f32>()?;
        if step >= WARMUP {
            fwd += (t1 - t0).as_secs_f64();
            bwd += (t2 - t1).as_secs_f64();
            optim += (t3 - t2).as_secs_f64();
        }
        tracing::debug!(step, loss = last_loss, "bench step");
    }
    let n = args.steps as f64;
    let cpu_ms = (process_cpu_s() - cpu_start) / n * 1e3;
    let (forward_ms, backward_ms, optimizer_ms) = (fwd / n * 1e3, bwd / n * 1e3, optim / n * 1e3);
    let step_ms = forward_ms + backward_ms + optimizer_ms;
    let samples_per_s = b as f64 / (step_ms / 1e3);
    let peak_rss_mb = perf::peak_rss_mb();
    match args.format {
        TextOrJson::Json => {
            let out = serde_json::json!({
                "forward_ms": forward_ms,
                "backward_ms": backward_ms,
                "optimizer_ms": optimizer_ms,
                "step_ms": step_ms,
                "samples_per_s": samples_per_s,
                "peak_rss_mb": peak_rss_mb,
                "precision": args.precision,
            });
            println!("{out}");
        }
        TextOrJson::Text => {
            println!(
                "model {} | batch {b} seq {s} | freeze_layers {} | {:?} | {} trainable tensors | device {} | {} threads",
                args.model.display(),
                args.freeze_layers,
                args.precision,
                model.trainable_vars().len(),
                args.device,
                rayon::current_num_threads()
            );
            println!("forward    {forward_ms:9.1} ms/step");
            println!("backward   {backward_ms:9.1} ms/step");
            println!("optimizer  {optimizer_ms:9.1} ms/step");
            println!("step       {step_ms:9.1} ms/step   ({samples_per_s:.1} samples/s, {} timed steps after {WARMUP} warm-up)", args.steps);
            match peak_rss_mb {
                Some(m) => println!("peak RSS   {m:9.0} MiB"),
                None => println!("peak RSS   unavailable"),
            }
            println!("cpu time   {cpu_ms:9.1} ms/step (all threads; compare with step time on a busy machine)");
            println!("last loss  {last_loss:.4}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
