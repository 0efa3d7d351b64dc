//! Checks a device's training kernels against the CPU's: each fused op (layer norm, bias + GELU,
//! bias + dropout + residual, dropout, masked softmax with dropout) forward and backward on
//! random inputs, three optimizer steps (AdamW, SGD), and one training forward/backward of a
//! whole model, in f32 and bf16, compared
//! with the CPU in f32 by relative L2 error (‖device − cpu‖ / ‖cpu‖). Dropout masks are a hash
//! of the element index on every device, so dropout is on in the comparison.
//! `sft-search bench kernels` prints the table; the GPU check script runs it first.

use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::ops::{self, DropMask};
use super::{BertClassifier, ModelOptions};
use crate::trainer::optim::{OptimConfig, Optimizer};
use crate::trainer::spec::OptimizerKind;

/// One compared output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckRow {
    pub case: String,
    pub dtype: &'static str,
    pub output: String,
    pub rel_err: f64,
    pub tolerance: f64,
    pub ok: bool,
}

fn row(case: &str, dtype: DType, output: String, rel_err: f64, tolerance: f64) -> CheckRow {
    CheckRow {
        case: case.to_string(),
        dtype: if dtype == DType::BF16 { "bf16" } else { "f32" },
        output,
        rel_err,
        tolerance,
        ok: rel_err.is_finite() && rel_err <= tolerance,
    }
}

fn rel_err(a: &Tensor, b: &Tensor) -> candle_core::Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?;
    let num = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let den = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(if den > 0.0 { num / den } else { num })
}

fn random(shape: &[usize], rng: &mut ChaCha8Rng, scale: f32) -> candle_core::Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0) * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// Runs `f` on `inputs` (f32 CPU tensors) on `device` with activations in `dtype`, and returns
/// the output (as f32) and the gradients of `Σ out · w` with respect to every input.
fn run_case(
    inputs: &[Tensor],
    device: &Device,
    dtype: DType,
    f: &dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>,
) -> candle_core::Result<(Tensor, Vec<Tensor>)> {
    let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(&t.to_device(device)?)).collect::<candle_core::Result<_>>()?;
    let cast: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().to_dtype(dtype)).collect::<candle_core::Result<_>>()?;
    let out = f(&cast)?.to_dtype(DType::F32)?;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let w = random(out.dims(), &mut rng, 1.0)?.to_device(device)?;
    let grads = (&out * &w)?.sum_all()?.backward()?;
    let mut gs = Vec::new();
    for v in &vars {
        match grads.get(v.as_tensor()) {
            Some(g) => gs.push(g.to_dtype(DType::F32)?),
            None => gs.push(v.as_tensor().zeros_like()?),
        }
    }
    Ok((out, gs))
}

type OpFn = Box<dyn Fn(&[Tensor]) -> candle_core::Result<Tensor>>;
/// A case: its name, its inputs' shapes with their value scales, whether bf16 applies, the op.
type OpCase = (&'static str, Vec<(Vec<usize>, f32)>, bool, OpFn);

/// The op cases.
fn cases() -> Vec<OpCase> {
    let drop = DropMask::new(0.1, 12345);
    let mut mask = vec![0f32; 2 * 24];
    for (i, m) in mask.iter_mut().enumerate() {
        // Batch row 1 pads its last 5 keys.
        if i >= 24 && i % 24 >= 19 {
            *m = -1e9;
        }
    }
    vec![
        (
            "layer_norm",
            vec![(vec![2, 24, 96], 2.0), (vec![96], 1.0), (vec![96], 0.5)],
            false,
            Box::new(|t: &[Tensor]| ops::layer_norm(&t[0], &t[1], &t[2], 1e-12)),
        ),
        ("bias_gelu", vec![(vec![2, 24, 160], 3.0), (vec![160], 1.0)], true, Box::new(|t: &[Tensor]| ops::bias_gelu(&t[0], &t[1]))),
        (
            "bias_dropout_residual",
            vec![(vec![2, 24, 96], 1.0), (vec![96], 1.0), (vec![2, 24, 96], 1.0)],
            true,
            Box::new(move |t: &[Tensor]| ops::bias_dropout_residual(&t[0], &t[1], &t[2], drop)),
        ),
        ("dropout", vec![(vec![3, 1000], 1.0)], true, Box::new(move |t: &[Tensor]| drop.apply(&t[0]))),
        (
            "masked_softmax_dropout",
            vec![(vec![2, 4, 24, 24], 4.0)],
            true,
            Box::new(move |t: &[Tensor]| {
                let m = Tensor::from_vec(mask.clone(), (2, 24), t[0].device())?;
                ops::masked_softmax_dropout(&t[0], &m, 0.25, drop)
            }),
        ),
    ]
}

/// Three optimizer steps (weight decay on the weights, not on the bias; the gradient norm
/// clipped in the first two) from fixed values and gradients, on `device` (the CPU: the host
/// path; CUDA: the flat path and its fused AdamW kernel). Returns the parameters after.
fn optimizer_steps(device: &Device, kind: OptimizerKind) -> anyhow::Result<Vec<(String, Tensor)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let shapes: [(&str, &[usize]); 3] =
        [("layer.dense.weight", &[48, 40]), ("layer.dense.bias", &[48]), ("embeddings.word.weight", &[300, 16])];
    let mut vars = Vec::new();
    for (name, shape) in shapes {
        vars.push((name.to_string(), Var::from_tensor(&random(shape, &mut rng, 1.0)?.to_device(device)?)?));
    }
    let mut opt = Optimizer::new(vars.clone(), OptimConfig::new(kind, 0.01, 0.9))?;
    for step in 0..3 {
        let mut loss = Tensor::zeros((), DType::F32, device)?;
        for (_, v) in &vars {
            let g = random(v.dims(), &mut rng, if step == 2 { 0.01 } else { 1.0 })?.to_device(device)?;
            loss = (loss + (v.as_tensor() * g)?.sum_all()?)?;
        }
        let mut grads = opt.grads();
        opt.accumulate(&mut grads, loss.backward()?)?;
        opt.step(&grads, 1e-2, 1.0)?;
    }
    vars.into_iter().map(|(n, v)| Ok((n, v.as_tensor().to_device(&Device::Cpu)?))).collect()
}

/// Compares `device` with the CPU on every op case and, when `model_dir` is given, on one
/// training step's logits and gradients of that model (batch 4, 32 tokens, dropout on).
pub fn compare(device: &Device, model_dir: Option<&Path>) -> anyhow::Result<Vec<CheckRow>> {
    let mut rows = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let push = |rows: &mut Vec<CheckRow>, case: &str, dtype: DType, output: String, err: f64| {
        let tolerance = if dtype == DType::BF16 { 2e-2 } else { 1e-4 };
        rows.push(row(case, dtype, output, err, tolerance));
    };
    for (name, shapes, bf16, f) in cases() {
        let inputs: Vec<Tensor> = shapes.iter().map(|(s, sc)| random(s, &mut rng, *sc)).collect::<candle_core::Result<_>>()?;
        let (ref_out, ref_grads) = run_case(&inputs, &Device::Cpu, DType::F32, &*f)?;
        let dtypes: &[DType] = if bf16 { &[DType::F32, DType::BF16] } else { &[DType::F32] };
        for &dt in dtypes {
            let (out, grads) = run_case(&inputs, device, dt, &*f)?;
            push(&mut rows, name, dt, "output".into(), rel_err(&out, &ref_out)?);
            for (i, (g, r)) in grads.iter().zip(&ref_grads).enumerate() {
                push(&mut rows, name, dt, format!("grad of input {i}"), rel_err(g, r)?);
            }
        }
    }
    for kind in [OptimizerKind::Adamw, OptimizerKind::Sgd] {
        let reference = optimizer_steps(&Device::Cpu, kind)?;
        let on_device = optimizer_steps(device, kind)?;
        let name = if kind == OptimizerKind::Adamw { "adamw, 3 steps" } else { "sgd momentum, 3 steps" };
        for ((pname, a), (_, b)) in on_device.iter().zip(&reference) {
            rows.push(row(name, DType::F32, format!("parameter {pname}"), rel_err(a, b)?, 1e-5));
        }
    }
    if let Some(dir) = model_dir {
        let (b, s) = (4usize, 32usize);
        let config = super::read_config(dir)?;
        let ids: Vec<u32> = (0..b * s).map(|i| if i % s == 0 { 101 } else { rng.random_range(1..config.vocab_size as u32) }).collect();
        let mut mask = vec![1u32; b * s];
        for m in mask.iter_mut().skip(s + 20).take(s - 20) {
            *m = 0; // row 1 is padded after 20 tokens
        }
        let labels: Vec<u32> = (0..b as u32).map(|i| i % 2).collect();
        let step = |dev: &Device, dtype: DType| -> anyhow::Result<(Tensor, Vec<(String, Tensor)>)> {
            let opts = ModelOptions { num_labels: 2, seed: 3, compute_dtype: dtype, ..ModelOptions::default() };
            let model = BertClassifier::load(dir, &opts, dev)?;
            let ids = Tensor::from_vec(ids.clone(), (b, s), dev)?;
            let mask = Tensor::from_vec(mask.clone(), (b, s), dev)?;
            let labels = Tensor::from_vec(labels.clone(), b, dev)?;
            model.reseed_dropout(11);
            let logits = model.forward(&ids, &mask, None, true)?;
            let loss = candle_nn::loss::cross_entropy(&logits.to_dtype(DType::F32)?, &labels)?;
            let grads = model.backward(&loss)?;
            let mut gs = Vec::new();
            for (name, v) in model.trainable_vars() {
                if let Some(g) = grads.get(v.as_tensor()) {
                    gs.push((name, g.to_dtype(DType::F32)?));
                }
            }
            Ok((logits.to_dtype(DType::F32)?, gs))
        };
        let (ref_logits, ref_grads) = step(&Device::Cpu, DType::F32)?;
        for dt in [DType::F32, DType::BF16] {
            let (logits, grads) = step(device, dt)?;
            // bf16 through a whole model drifts more than one op; 5e-2 still catches a wrong kernel.
            let tol = if dt == DType::BF16 { 5e-2 } else { 1e-4 };
            rows.push(row("model", dt, "logits".into(), rel_err(&logits, &ref_logits)?, tol));
            if grads.len() != ref_grads.len() {
                anyhow::bail!("model check: {} gradients on the device, {} on the CPU", grads.len(), ref_grads.len());
            }
            let all_d: Vec<Tensor> =
                grads.iter().map(|(_, g)| g.to_device(&Device::Cpu)?.flatten_all()).collect::<candle_core::Result<_>>()?;
            let all_r: Vec<Tensor> = ref_grads.iter().map(|(_, r)| r.flatten_all()).collect::<candle_core::Result<_>>()?;
            let (all_d, all_r) = (Tensor::cat(&all_d, 0)?, Tensor::cat(&all_r, 0)?);
            rows.push(row("model", dt, "all gradients".into(), rel_err(&all_d, &all_r)?, tol));
            if dt == DType::BF16 {
                // Single bf16 gradients that nearly cancel (a classifier bias over 4 rows) are
                // noise relative to themselves; the set above is the bf16 measure.
                continue;
            }
            // The worst single gradient, relative to its own norm but at least 1e-3 of the
            // whole set's (some are zero in exact arithmetic: a key bias moves no softmax).
            let floor = 1e-3 * all_r.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
            let mut worst = (String::new(), 0.0f64);
            for ((name, g), (_, r)) in grads.iter().zip(&ref_grads) {
                let diff = (g.to_device(&Device::Cpu)? - r)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
                let norm = r.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64;
                let e = diff / norm.max(floor).max(1e-30);
                if e > worst.1 || !e.is_finite() {
                    worst = (name.clone(), e);
                }
            }
            rows.push(row("model", dt, format!("worst gradient ({})", worst.0), worst.1, 1e-3));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_agrees_with_itself_and_a_broken_kernel_would_show() {
        let rows = compare(&Device::Cpu, None).unwrap();
        assert!(rows.len() >= 20, "{} rows", rows.len());
        for r in &rows {
            assert!(r.ok, "{r:?}");
            // On the CPU, f32 is the same code: exact; bf16 goes through the composed ops.
            if r.dtype == "f32" {
                assert!(r.rel_err < 1e-6, "{r:?}");
            }
        }
        assert!(rows.iter().any(|r| r.dtype == "bf16" && r.rel_err > 0.0), "bf16 rows must differ from f32");
        // The measure itself: a 1 % perturbation is seen as ~1e-2.
        let a = random(&[100], &mut ChaCha8Rng::seed_from_u64(1), 1.0).unwrap();
        let e = rel_err(&(&a * 1.01).unwrap(), &a).unwrap();
        assert!((e - 0.01).abs() < 1e-6, "{e}");
    }

    /// The same check on the GPU (a CUDA build on a machine with one; the GPU check script runs
    /// it as `sft-search bench kernels`, since that machine has no Rust toolchain).
    #[cfg(feature = "cuda")]
    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn cuda_kernels_match_the_cpu() {
        let device = crate::trainer::model::open_cuda(0).unwrap();
        let rows = compare(&device, None).unwrap();
        let bad: Vec<&CheckRow> = rows.iter().filter(|r| !r.ok).collect();
        assert!(bad.is_empty(), "{bad:?}");
    }
}
