//! Tests of the training loop on the toy task (tiny BERT, separable sentences).

use super::*;
use crate::scheduler::RecordingReporter;
use crate::trainer::spec::TrainSpec;
use crate::trainer::toy::{write_toy_task, ToyTask};

fn job(toy: &ToyTask, arts: &Path, spec: TrainSpec) -> TrainJob {
    let mut data = DataSection::new(&toy.csv);
    data.split = vec![0.7, 0.3];
    TrainJob {
        trial: 0,
        model_dir: toy.model_dir.clone(),
        data,
        spec,
        metric: "accuracy".into(),
        direction: Direction::Maximize,
        device: "cpu".into(),
        artifacts_dir: arts.to_path_buf(),
        resume_from: None,
    }
}

fn spec(epochs: usize, lr: f64) -> TrainSpec {
    TrainSpec {
        epochs,
        learning_rate: lr,
        batch_size: 16,
        micro_batch_size: 16,
        max_length: 16,
        dropout: Some(0.0),
        ..TrainSpec::default()
    }
}

fn f(m: &Map<String, Value>, k: &str) -> f64 {
    m.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// Six epochs on the toy task (batch 8, lr 3e-3) in `precision`; asserts the train loss at
/// least halves and the valid accuracy reaches 0.9.
fn learn_toy(precision: crate::trainer::spec::Precision) -> (RecordingReporter, Map<String, Value>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 160, 1).unwrap();
    let sp = TrainSpec { batch_size: 8, micro_batch_size: 8, precision, ..spec(6, 3e-3) };
    let j = job(&toy, &tmp.path().join("arts"), sp);
    let mut rep = RecordingReporter::default();
    let fin = train(&j, &mut rep, &CancelToken::new()).unwrap();
    let Finish::Complete { value, metrics } = fin else { panic!("not complete: {fin:?}") };
    let first = f(&rep.intermediate[0].2, "train_loss");
    let last = f(&rep.intermediate[5].2, "train_loss");
    assert!(last < 0.5 * first, "train loss {first} → {last}");
    assert!(value >= 0.9, "valid accuracy {value}");
    (rep, metrics, tmp)
}

#[test]
fn bf16_mixed_precision_learns_the_toy_task_too() {
    let (rep, _, _tmp) = learn_toy(crate::trainer::spec::Precision::Bf16);
    // The checkpoint holds the f32 master weights.
    let ckpt = rep.checkpoints.last().expect("a checkpoint");
    let w = candle_core::safetensors::load(ckpt.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    assert!(w.values().all(|t| t.dtype() == candle_core::DType::F32));
}

#[test]
fn loss_falls_and_the_toy_task_is_learned() {
    let (rep, metrics, tmp) = learn_toy(crate::trainer::spec::Precision::Fp32);
    assert_eq!(rep.intermediate.len(), 6, "one evaluation per epoch");
    assert_eq!(rep.intermediate.iter().map(|e| e.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    for k in ["loss", "accuracy", "f1_macro", "roc_auc", "train_loss"] {
        assert!(metrics.contains_key(k), "missing {k} in {metrics:?}");
    }
    assert_eq!(rep.metrics.get("labels"), Some(&json!(["neg", "pos"])));
    assert!(rep.metrics.contains_key("fit") && rep.metrics.contains_key("best_epoch"));
    // One kept checkpoint (the best), complete, and no temporary folder. When the last epoch
    // did not improve, its `last` folder stays for a resume until the study records the
    // trial; then only the best remains, without its optimizer state.
    let best = rep.checkpoints.last().unwrap().clone();
    assert!(best.join("model.safetensors").is_file() && best.join("optimizer.safetensors").is_file());
    let arts = tmp.path().join("arts");
    let names = || -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&arts).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        n.sort();
        n
    };
    let last_improved =
        rep.intermediate.last().unwrap().1 > rep.intermediate.iter().rev().skip(1).map(|e| e.1).fold(f64::NEG_INFINITY, f64::max);
    let best_name = best.file_name().unwrap().to_string_lossy().into_owned();
    let expected = if last_improved { vec![best_name.clone()] } else { vec![best_name.clone(), "last".to_string()] };
    assert_eq!(names(), expected);
    checkpoint::drop_resume_files(&arts, &[]);
    assert_eq!(names(), vec![best_name]);
    assert!(best.join("model.safetensors").is_file() && !best.join("optimizer.safetensors").exists());
}

/// A learning rate of 1e6 with weight decay 0.01 (a usual setting: p *= 1 - lr·wd = -9999 each
/// step overflows f32) fails the trial with an error naming the NaN, the rate and the step.
fn assert_nan_loss_fails_the_trial() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 64, 2).unwrap();
    let mut sp = spec(3, 1e6);
    sp.weight_decay = 0.01;
    let j = job(&toy, &tmp.path().join("arts"), sp);
    let err = train(&j, &mut RecordingReporter::default(), &CancelToken::new()).unwrap_err();
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("NaN") && msg.contains("learning_rate=1e6") && msg.contains(" step "), "{msg}");
}

#[test]
fn nan_loss_fails_the_trial_with_a_clear_message() {
    assert_nan_loss_fails_the_trial();
}

/// The predictions on the valid split of `data` of the checkpoint in `ckpt`, loaded from the
/// folder alone (config, weights, tokenizer, trainer state).
fn reload_valid_predictions(ckpt: &Path, data: &DataSection) -> Predictions {
    let state = checkpoint::read_state(ckpt).unwrap();
    let ds = data::load_dataset(data).unwrap();
    let enc = TextEncoder::from_model_dir(ckpt, state.spec.max_length).unwrap();
    let rows = enc.encode(&ds.valid).unwrap();
    let model = BertClassifier::load(ckpt, &ModelOptions { num_labels: 2, ..ModelOptions::default() }, &Device::Cpu).unwrap();
    predict(&model, &rows, Problem::Classification, enc.pad_id(), &Device::Cpu).unwrap()
}

/// A retry of a run that had finished training but was not yet recorded (a crash in between)
/// resumes from its newest checkpoint, trains nothing more and ends with the same result.
#[test]
fn a_run_resumed_from_its_own_end_completes_at_once_with_the_same_result() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 96, 6).unwrap();
    let first = job(&toy, &tmp.path().join("a"), spec(3, 3e-3));
    let mut rep_a = RecordingReporter::default();
    let Finish::Complete { value: va, metrics: ma } = train(&first, &mut rep_a, &CancelToken::new()).unwrap() else { panic!() };
    let mut again = job(&toy, &tmp.path().join("b"), spec(3, 3e-3));
    again.resume_from = Some(tmp.path().join("a"));
    let mut rep_b = RecordingReporter::default();
    let Finish::Complete { value: vb, metrics: mb } = train(&again, &mut rep_b, &CancelToken::new()).unwrap() else { panic!() };
    assert!(rep_b.intermediate.is_empty(), "trained again: {:?}", rep_b.intermediate);
    let steps = checkpoint::latest(&tmp.path().join("a")).unwrap().1.global_step;
    assert_eq!(rep_b.metrics.get("resumed_from_step").and_then(Value::as_u64), Some(steps));
    assert_eq!((va, f(&ma, "loss")), (vb, f(&mb, "loss")));
}

/// The kept checkpoint reloads (config, weights, tokenizer from the folder alone) to the
/// same predictions: its valid loss equals the one recorded at the best epoch.
#[test]
fn checkpoint_reloads_to_the_same_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 96, 3).unwrap();
    let j = job(&toy, &tmp.path().join("arts"), spec(2, 3e-3));
    let mut rep = RecordingReporter::default();
    let Finish::Complete { metrics, .. } = train(&j, &mut rep, &CancelToken::new()).unwrap() else { panic!() };
    let ckpt = rep.checkpoints.last().unwrap();
    let p = reload_valid_predictions(ckpt, &j.data);
    let (m, _) = metrics_of(&p, Problem::Classification, &["neg".to_string(), "pos".to_string()], 0.5).unwrap();
    assert!((f(&m, "loss") - f(&metrics, "loss")).abs() < 1e-6, "{m:?} vs {metrics:?}");
    // and the test job on that checkpoint gives a confusion matrix over all test rows
    let mut data = j.data.clone();
    data.split = vec![0.6, 0.2, 0.2];
    let t = evaluate_test(&TestJob { checkpoint: ckpt.clone(), data, device: "cpu".into() }).unwrap();
    let cm: Vec<Vec<u64>> = serde_json::from_value(t["confusion_matrix"].clone()).unwrap();
    assert_eq!(cm.iter().flatten().sum::<u64>() as usize, t["rows"].as_u64().unwrap() as usize);
}

/// Stopped after epoch 1 and resumed from its checkpoint, a run ends with the same metrics
/// as an uninterrupted one (weights, optimizer moments, schedule position and RNG restored).
#[test]
fn resume_from_checkpoint_matches_an_uninterrupted_run() {
    assert_resume_matches_an_uninterrupted_run(0.0);
}

/// With a weight average, the checkpoint's model weights are the average: the trained weights
/// and the average must both come back.
#[test]
fn resume_with_a_weight_average_matches_an_uninterrupted_run() {
    assert_resume_matches_an_uninterrupted_run(0.8);
}

fn assert_resume_matches_an_uninterrupted_run(ema_decay: f64) {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 96, 4).unwrap();
    let mut s = spec(3, 2e-3);
    s.ema_decay = ema_decay;
    s.dropout = Some(0.1); // dropout RNG must be restored too
    s.keep_checkpoints = KeepCheckpoints::All;
    s.warmup_ratio = 0.2;
    let full = job(&toy, &tmp.path().join("full"), s.clone());
    let mut rep_full = RecordingReporter::default();
    train(&full, &mut rep_full, &CancelToken::new()).unwrap();
    assert_only_the_newest_and_best_keep_resume_files(&tmp.path().join("full"), rep_full.intermediate.len(), ema_decay > 0.0);

    let first = job(&toy, &tmp.path().join("a"), s.clone());
    let tok = CancelToken::new();
    let mut rep_a = RecordingReporter { cancel_after: Some((1, tok.clone())), ..Default::default() };
    let fin = train(&first, &mut rep_a, &tok).unwrap();
    assert!(matches!(fin, Finish::Stopped { pruned: false, .. }), "{fin:?}");
    let mut second = job(&toy, &tmp.path().join("b"), s);
    second.resume_from = Some(tmp.path().join("a"));
    let mut rep_b = RecordingReporter::default();
    train(&second, &mut rep_b, &CancelToken::new()).unwrap();
    // 96 rows, split 0.7 → 67 train rows → 5 steps of 16 per epoch; stopped after epoch 1
    assert_eq!(rep_b.metrics.get("resumed_from_step").and_then(Value::as_u64), Some(5));
    assert_eq!(rep_b.intermediate.len(), 2, "epochs 2 and 3 only");
    let (a, b) = (rep_full.intermediate.last().unwrap(), rep_b.intermediate.last().unwrap());
    assert_eq!(a.0, b.0);
    assert!((f(&a.2, "loss") - f(&b.2, "loss")).abs() < 1e-5, "{} vs {}", f(&a.2, "loss"), f(&b.2, "loss"));
    assert!((f(&a.2, "train_loss") - f(&b.2, "train_loss")).abs() < 1e-5);
}

/// With `keep_checkpoints = "all"`, every evaluation's folder keeps its weights, but only
/// the newest (resumed from) and the best (resumed from once `last` is gone) keep the
/// optimizer state and, with a weight average, the trained weights.
fn assert_only_the_newest_and_best_keep_resume_files(arts: &Path, evals: usize, averaged: bool) {
    let dirs: Vec<PathBuf> = std::fs::read_dir(arts).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(dirs.len(), evals, "one folder per evaluation: {dirs:?}");
    let step = |p: &Path| checkpoint::read_state(p).unwrap().global_step;
    let newest = dirs.iter().max_by_key(|p| step(p)).unwrap();
    let best = checkpoint::read_state(newest).unwrap().best_checkpoint.unwrap();
    let mut superseded = 0;
    for dir in &dirs {
        assert!(dir.join(checkpoint::WEIGHTS).is_file(), "{} lost its weights", dir.display());
        let resumable = dir == newest || *dir == best;
        assert_eq!(dir.join(checkpoint::OPTIMIZER_STATE).is_file(), resumable, "{}", dir.display());
        assert_eq!(dir.join(ema::TRAINED_WEIGHTS).is_file(), resumable && averaged, "{}", dir.display());
        superseded += usize::from(!resumable);
    }
    assert!(superseded >= 1, "the run must leave at least one superseded folder to check");
}

/// With `ema_decay`, the kept checkpoint is the weight average: it reloads to the recorded
/// valid loss, it differs from the trained weights saved beside it, and its valid loss differs
/// from that of a run without the average.
#[test]
fn the_weight_average_is_what_is_evaluated_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 96, 5).unwrap();
    let run = |ema_decay: f64, dir: &str| {
        let mut s = spec(4, 3e-3);
        s.ema_decay = ema_decay;
        let j = job(&toy, &tmp.path().join(dir), s);
        let mut rep = RecordingReporter::default();
        let Finish::Complete { metrics, .. } = train(&j, &mut rep, &CancelToken::new()).unwrap() else { panic!() };
        (j, rep, metrics)
    };
    let (j, rep, metrics) = run(0.9, "ema");
    let ckpt = rep.checkpoints.last().unwrap();
    let avg = candle_core::safetensors::load(ckpt.join(checkpoint::WEIGHTS), &Device::Cpu).unwrap();
    let trained = candle_core::safetensors::load(ckpt.join(ema::TRAINED_WEIGHTS), &Device::Cpu).unwrap();
    assert!(!trained.is_empty());
    let mut differ = 0;
    for (name, t) in &trained {
        let a = avg.get(name).unwrap_or_else(|| panic!("{name} not in the checkpoint"));
        let gap = (a - t).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        differ += usize::from(gap > 0.0);
    }
    assert!(differ * 2 > trained.len(), "only {differ} of {} tensors differ from the trained weights", trained.len());
    // what was evaluated is what was kept
    let p = reload_valid_predictions(ckpt, &j.data);
    assert!((p.loss - f(&metrics, "loss")).abs() < 1e-6, "{} vs {}", p.loss, f(&metrics, "loss"));
    // and it is not the plain run's model
    let (_, rep_plain, plain) = run(0.0, "plain");
    assert!(!rep_plain.checkpoints.last().unwrap().join(ema::TRAINED_WEIGHTS).exists());
    assert_ne!(f(&metrics, "loss"), f(&plain, "loss"));
}

#[test]
fn micro_batches_accumulate_to_the_full_batch_gradient() {
    // Same run with micro-batches of 4 and of 16 (dropout off): same result up to float noise.
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 64, 5).unwrap();
    let run = |micro: usize, dir: &str| {
        let mut s = spec(1, 1e-3);
        s.micro_batch_size = micro;
        s.keep_checkpoints = KeepCheckpoints::None;
        let mut rep = RecordingReporter::default();
        train(&job(&toy, &tmp.path().join(dir), s), &mut rep, &CancelToken::new()).unwrap();
        f(&rep.intermediate[0].2, "loss")
    };
    let (a, b) = (run(16, "a"), run(4, "b"));
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
    assert!(!tmp.path().join("a").exists(), "keep_checkpoints = none writes nothing");
}

#[test]
fn eval_steps_report_global_steps_and_epoch_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 96, 6).unwrap();
    let mut s = spec(2, 1e-3);
    s.eval_steps = Some(2);
    s.keep_checkpoints = KeepCheckpoints::None;
    let mut rep = RecordingReporter::default();
    train(&job(&toy, &tmp.path().join("a"), s), &mut rep, &CancelToken::new()).unwrap();
    // 67 train rows / 16 = 5 steps per epoch: every 2nd step, plus each epoch's end
    assert_eq!(rep.intermediate.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 4, 5, 6, 8, 10]);
    assert_eq!(f(&rep.intermediate[2].2, "epoch"), 1.0);
    assert!((f(&rep.intermediate[0].2, "epoch") - 0.4).abs() < 1e-9);
}

#[test]
fn early_stopping_ends_a_run_that_stopped_improving() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 64, 7).unwrap();
    // learning rate so small nothing changes: the metric never improves after epoch 1
    let mut s = spec(6, 1e-12);
    s.early_stopping_patience = Some(2);
    s.keep_checkpoints = KeepCheckpoints::None;
    let mut rep = RecordingReporter::default();
    let fin = train(&job(&toy, &tmp.path().join("a"), s), &mut rep, &CancelToken::new()).unwrap();
    assert!(matches!(fin, Finish::Complete { .. }));
    assert_eq!(rep.intermediate.len(), 3, "best at 1, then 2 without improvement");
    assert_eq!(rep.metrics.get("stopped_early"), Some(&json!(true)));
}

/// While alive, optimizers made on this thread use the flat device path (the GPU's) on the CPU.
struct ForceFlat;

impl ForceFlat {
    fn on() -> Self {
        crate::trainer::optim::FORCE_FLAT.with(|f| f.set(true));
        ForceFlat
    }
}

impl Drop for ForceFlat {
    fn drop(&mut self) {
        crate::trainer::optim::FORCE_FLAT.with(|f| f.set(false));
    }
}

/// The loop with the optimizer's flat device path (gradient norm a device scalar, read with
/// the micro-batch losses and correct counts once per step) trains as the CPU path does, and
/// a checkpoint written on one path resumes on the other.
#[test]
fn flat_optimizer_path_trains_and_resumes_like_the_host_path() {
    let tmp = tempfile::tempdir().unwrap();
    let toy = write_toy_task(tmp.path(), 160, 8).unwrap();
    let mut s = spec(3, 3e-3);
    s.batch_size = 8;
    s.micro_batch_size = 4; // two micro-batches per step
    s.weight_decay = 0.01;
    s.max_grad_norm = 0.5;
    s.keep_checkpoints = KeepCheckpoints::All;
    let run = |flat: bool, dir: &str, cancel_after: Option<usize>, resume: Option<&str>| {
        let _force = flat.then(ForceFlat::on);
        let mut j = job(&toy, &tmp.path().join(dir), s.clone());
        j.resume_from = resume.map(|r| tmp.path().join(r));
        let tok = CancelToken::new();
        let mut rep = RecordingReporter { cancel_after: cancel_after.map(|n| (n, tok.clone())), ..Default::default() };
        train(&j, &mut rep, &tok).unwrap();
        rep
    };
    let close = |a: &RecordingReporter, b: &RecordingReporter, what: &str| {
        let (a, b) = (a.intermediate.last().unwrap(), b.intermediate.last().unwrap());
        assert_eq!(a.0, b.0, "{what}");
        for k in ["loss", "train_loss"] {
            let (x, y) = (f(&a.2, k), f(&b.2, k));
            assert!(x.is_finite() && (x - y).abs() < 1e-5, "{what}: {k} {x} vs {y}");
        }
    };
    let host = run(false, "host", None, None);
    let flat = run(true, "flat", None, None);
    assert_eq!(host.intermediate.len(), 3);
    close(&host, &flat, "flat vs host");
    assert!(f(&flat.intermediate[0].2, "train_accuracy") > 0.0);
    // a flat-path checkpoint after epoch 1, resumed on the host path, and the other way
    run(true, "flat-a", Some(1), None);
    close(&host, &run(false, "host-b", None, Some("flat-a")), "flat checkpoint resumed on the host path");
    run(false, "host-a", Some(1), None);
    close(&host, &run(true, "flat-b", None, Some("host-a")), "host checkpoint resumed on the flat path");
}

#[test]
fn nan_loss_fails_the_trial_on_the_flat_path_too() {
    let _force = ForceFlat::on();
    assert_nan_loss_fails_the_trial();
}

/// Asking a build without the `cuda` feature for a GPU says which device and how to build one.
#[cfg(not(feature = "cuda"))]
#[test]
fn a_cuda_device_in_a_cpu_build_says_how_to_build_for_gpus() {
    let err = parse_device("cuda:1").unwrap_err().to_string();
    assert!(err.contains("`cuda:1`") && err.contains("--features cuda"), "{err}");
    assert!(parse_device("cpu").is_ok());
    assert!(parse_device("tpu").unwrap_err().to_string().contains("expected cpu, cuda or cuda:K"));
}

/// A study's `cuda:k` slot runs its worker with `CUDA_VISIBLE_DEVICES=k`, where the GPU is
/// `cuda:0`: a device error names `cuda:k`, as the study file does (on an H200 machine, slot
/// `cuda:1` said "device `cuda:0`: ... no CUDA-capable device is detected").
#[test]
fn a_device_error_names_the_slot_the_study_file_gave() {
    assert_eq!(device_label(0, Some("1")), "cuda:1 (CUDA_VISIBLE_DEVICES=1)");
    assert_eq!(device_label(0, None), "cuda:0");
    assert_eq!(device_label(2, Some("")), "cuda:2");
    assert_eq!(device_label(1, Some("2,3")), "cuda:1 of CUDA_VISIBLE_DEVICES=2,3");
    assert_eq!(device_label(1, Some("3")), "cuda:1 of CUDA_VISIBLE_DEVICES=3");
    assert_eq!(device_label(0, Some("GPU-58648fc4")), "cuda:0 of CUDA_VISIBLE_DEVICES=GPU-58648fc4");
}
