//! `sft-search bench train`: times fine-tuning steps of a BERT checkpoint on random token ids
//! (seeded), padded to the full length, or with `--data` on a labelled file's rows batched as
//! a trial batches them, with dropout on: forward (with the loss), backward and
//! the trainer's optimizer step (`optim::Optimizer`: AdamW, learning rate 5e-5, weight decay
//! 0.01 except on biases and LayerNorm, gradients clipped at the trainer's default norm),
//! with `--ema-decay` followed by the weight-average update (`trainer::ema`).
//!
//! After two warm-up steps, `--steps` steps run back to back with one device synchronisation
//! (and a scalar read) at the end, as PyTorch's anchor (`torch_finetune_bench.py`) times them:
//! that gives `step_ms` and `samples_per_s`. The split into forward, backward and optimizer
//! comes from a few more steps with a synchronisation after each phase; on the CPU, where
//! nothing runs asynchronously, from the timed steps themselves. Prints ms per phase,
//! samples/s and peak RSS; the text output adds the process CPU time per step, a steadier
//! figure on a shared machine.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::cli::{BenchTrainArgs, TextOrJson};
use crate::trainer::data::{self, batch_indices, collate, epoch_seed, DataSection, Encoded, TextEncoder};
use crate::trainer::ema::WeightAverage;
use crate::trainer::model::{read_config, BertClassifier, ModelOptions};
use crate::trainer::optim::{OptimConfig, Optimizer};
use crate::trainer::perf;
use crate::trainer::spec::{OptimizerKind, TrainSpec};
use crate::trainer::train::parse_device;

const WARMUP: usize = 2;
/// Steps timed phase by phase (a synchronisation after each) on an asynchronous device.
const PHASE_STEPS: usize = 3;
const LEARNING_RATE: f64 = 5e-5;

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

pub fn run(args: &BenchTrainArgs) -> anyhow::Result<ExitCode> {
    perf::tune_for_training();
    let usage = |m: String| anyhow::Error::new(super::UsageError(m));
    if !(args.steps > 0 && args.batch_size > 0 && args.seq_len > 0) {
        return Err(usage("--steps, --batch-size and --seq-len must be positive".into()));
    }
    if !(0.0..1.0).contains(&args.ema_decay) {
        return Err(usage("--ema-decay must be in [0, 1)".into()));
    }
    let device = parse_device(&args.device).map_err(|e| usage(e.to_string()))?;
    let config = read_config(&args.model).map_err(|e| usage(format!("--model: {e}")))?;
    let (b, s) = (args.batch_size, args.seq_len);
    let needed = WARMUP + args.steps + if device.is_cpu() { 0 } else { PHASE_STEPS };
    let (batches, num_labels) = match &args.data {
        Some(path) => data_batches(path, &args.model, b, s, needed, &device)?,
        None => (vec![random_batch(config.vocab_size as u32, b, s, &device)?], 2),
    };
    // Over the batches the steps take (the step cycles through `batches`).
    let mean_tokens = (0..needed).map(|i| batches[i % batches.len()].tokens as f64).sum::<f64>() / (needed * b) as f64;
    let opts = ModelOptions {
        num_labels,
        freeze_layers: args.freeze_layers,
        seed: 0,
        compute_dtype: args.precision.dtype(),
        ..ModelOptions::default()
    };
    let model = BertClassifier::load(&args.model, &opts, &device)?;

    let mut opt = Optimizer::new(model.trainable_vars(), OptimConfig::new(OptimizerKind::Adamw, 0.01, 0.0))?;
    let mut average = if args.ema_decay > 0.0 { Some(WeightAverage::new(model.trainable_vars(), args.ema_decay)?) } else { None };
    let max_grad_norm = TrainSpec::default().max_grad_norm;

    // One step: the (detached) loss, and the seconds of each phase (meaningful with `phases`, which waits
    // for the device after each).
    let mut next = 0usize;
    let mut train_step = |phases: bool| -> anyhow::Result<(Tensor, [f64; 3])> {
        let batch = &batches[next % batches.len()];
        next += 1;
        let t0 = Instant::now();
        let logits = model.forward(&batch.ids, &batch.mask, batch.token_types.as_ref(), true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        if phases {
            device.synchronize()?;
        }
        let t1 = Instant::now();
        let mut grads = opt.grads();
        opt.accumulate(&mut grads, model.backward(&loss)?)?;
        if phases {
            device.synchronize()?;
        }
        let t2 = Instant::now();
        opt.step(&grads, LEARNING_RATE, max_grad_norm)?;
        drop(grads);
        if let Some(avg) = &mut average {
            avg.update(opt.steps_done())?;
        }
        if phases {
            device.synchronize()?;
        }
        let t3 = Instant::now();
        Ok((loss.detach(), [(t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), (t3 - t2).as_secs_f64()]))
    };

    let cpu = device.is_cpu();
    for _ in 0..WARMUP {
        train_step(false)?;
    }
    device.synchronize()?;
    let cpu_start = process_cpu_s();
    let t_start = Instant::now();
    let mut phase = [0.0f64; 3];
    let mut last = None;
    for step in 0..args.steps {
        let (loss, secs) = train_step(cpu)?;
        if cpu {
            phase.iter_mut().zip(secs).for_each(|(a, s)| *a += s);
        }
        tracing::debug!(step, "bench step");
        last = Some(loss);
    }
    device.synchronize()?;
    let last_loss = match &last {
        Some(l) => l.to_scalar::<f32>()?,
        None => f32::NAN,
    };
    let elapsed = t_start.elapsed().as_secs_f64();
    let n = args.steps as f64;
    let cpu_ms = (process_cpu_s() - cpu_start) / n * 1e3;
    let phase_steps = if cpu {
        args.steps
    } else {
        for _ in 0..PHASE_STEPS {
            let (_, secs) = train_step(true)?;
            phase.iter_mut().zip(secs).for_each(|(a, s)| *a += s);
        }
        PHASE_STEPS
    };
    let per = |s: f64| s / phase_steps as f64 * 1e3;
    let (forward_ms, backward_ms, optimizer_ms) = (per(phase[0]), per(phase[1]), per(phase[2]));
    let step_ms = elapsed / n * 1e3;
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
                "tokens_per_row": mean_tokens,
                "cpu_ms": cpu_ms,
                "last_loss": last_loss,
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
            if let Some(path) = &args.data {
                println!(
                    "data {}: {} batches, {mean_tokens:.1} tokens per row (padded to each batch's longest)",
                    path.display(),
                    batches.len()
                );
            }
            let split =
                if cpu { "of the timed steps".to_string() } else { format!("{PHASE_STEPS} more steps, synchronised after each phase") };
            println!("forward    {forward_ms:9.1} ms/step   (phases: {split})");
            println!("backward   {backward_ms:9.1} ms/step");
            println!("optimizer  {optimizer_ms:9.1} ms/step");
            println!("step       {step_ms:9.1} ms/step   ({samples_per_s:.1} samples/s, {} steps after {WARMUP} warm-up, one synchronisation at the end)", args.steps);
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

/// One step's inputs: token ids, attention mask, token types (None: all zero), labels, and
/// the tokens per batch counting padding.
struct StepBatch {
    ids: Tensor,
    mask: Tensor,
    token_types: Option<Tensor>,
    labels: Tensor,
    tokens: usize,
}

/// The one batch of random token ids (seeded; `[CLS]`-like id 101 first), full length, two
/// classes, that every step reuses.
fn random_batch(vocab: u32, b: usize, s: usize, device: &Device) -> anyhow::Result<StepBatch> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let ids: Vec<u32> = (0..b * s).map(|i| if i % s == 0 { 101.min(vocab - 1) } else { rng.random_range(1..vocab) }).collect();
    let labels: Vec<u32> = (0..b).map(|_| rng.random_range(0..2)).collect();
    Ok(StepBatch {
        ids: Tensor::from_vec(ids, (b, s), device)?,
        mask: Tensor::ones((b, s), candle_core::DType::U32, device)?,
        token_types: None,
        labels: Tensor::from_vec(labels, b, device)?,
        tokens: b * s,
    })
}

/// Up to `needed` batches of `path`'s train split (the study defaults: 70/15/15, split seed
/// 42), encoded with the model's tokenizer at `max_length`, shuffled with seed 42 and padded
/// to their longest row; the steps cycle through them when the file has fewer. Made before
/// the timing starts. Labels are read as classes (the step's loss is cross-entropy). Also returns
/// the number of classes.
fn data_batches(
    path: &Path,
    model: &Path,
    b: usize,
    max_length: usize,
    needed: usize,
    device: &Device,
) -> anyhow::Result<(Vec<StepBatch>, usize)> {
    let ds = data::load_dataset(&DataSection::new(path))?;
    let encoder = TextEncoder::from_model_dir(model, max_length)?;
    let rows = encoder.encode(&ds.train)?;
    anyhow::ensure!(rows.len() >= b, "--data {}: its train split has {} rows, fewer than one batch of {b}", path.display(), rows.len());
    let lengths: Vec<usize> = rows.iter().map(Encoded::len).collect();
    let plan: Vec<Vec<usize>> =
        batch_indices(&lengths, b, Some(epoch_seed(42, 0)), false).into_iter().filter(|idx| idx.len() == b).collect();
    let batches = plan
        .iter()
        .take(needed)
        .map(|idx| {
            let batch = collate(&rows, idx, encoder.pad_id(), device)?;
            let tokens = batch.input_ids.elem_count();
            Ok(StepBatch {
                ids: batch.input_ids,
                mask: batch.attention_mask,
                token_types: Some(batch.token_type_ids),
                labels: batch.labels,
                tokens,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((batches, ds.num_labels()))
}
