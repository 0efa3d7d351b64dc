//! Optimizers written for fine-tuning with state that can be saved and restored (issue 4's
//! resume needs the moments and the step count, which candle-nn's `AdamW` keeps private).
//!
//! - [`Optimizer`]: AdamW with decoupled weight decay and bias correction
//!   (`torch.optim.AdamW` semantics: β = (0.9, 0.999), ε = 1e-8), and SGD with momentum
//!   (`torch.optim.SGD` semantics, coupled weight decay). As in the Hugging Face Trainer,
//!   biases and LayerNorm parameters get no weight decay.
//! - Global gradient-norm clipping folded into the update (no extra pass writing memory).
//! - [`Grads`]: gradients of one optimizer step, accumulated over micro-batches.
//! - [`lr_factor`]: the learning-rate schedules of `transformers.get_scheduler`.
//!
//! On the CPU with `f32` contiguous parameters the update is one fused in-place pass per
//! tensor (no allocation); elsewhere it falls back to tensor arithmetic and `Var::set`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, InplaceOp2, Layout, Tensor, Var};

use super::spec::{OptimizerKind, ScheduleKind};

/// Hyper-parameters of the optimizer that stay fixed for a run (the learning rate is given
/// per step, from the schedule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub weight_decay: f64,
    /// SGD momentum (ignored by AdamW).
    pub momentum: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl OptimConfig {
    pub fn new(kind: OptimizerKind, weight_decay: f64, momentum: f64) -> Self {
        OptimConfig { kind, weight_decay, momentum, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// Whether a parameter of this (Hugging Face) name is decayed: not biases, not LayerNorm.
pub fn decays(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.ends_with("bias") || lower.contains("layernorm") || lower.contains("layer_norm"))
}

/// A moment buffer: a host vector on the CPU fast path, a tensor elsewhere.
#[derive(Debug)]
enum Buf {
    Host(Vec<f32>),
    Dev(Tensor),
}

impl Buf {
    fn to_tensor(&self, var: &Var) -> candle_core::Result<Tensor> {
        match self {
            Buf::Host(v) => Tensor::from_slice(v, var.shape(), &Device::Cpu),
            Buf::Dev(t) => Ok(t.clone()),
        }
    }
}

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    decay: bool,
    /// AdamW: exp_avg; SGD: momentum_buffer.
    m: Buf,
    /// AdamW: exp_avg_sq; SGD: unused.
    v: Buf,
}

fn host_path(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32 && var.as_tensor().is_contiguous()
}

/// The optimizer over a fixed list of named trainable variables.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    slots: Vec<Slot>,
    /// Optimizer steps taken (the `t` of Adam's bias correction).
    step: u64,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("optimizer state {path}: {why}")]
    State { path: String, why: String },
}

impl Optimizer {
    /// An optimizer over `params` (name, variable), with zeroed state.
    pub fn new(params: Vec<(String, Var)>, cfg: OptimConfig) -> Result<Self, OptimError> {
        let mut slots = Vec::with_capacity(params.len());
        for (name, var) in params {
            let n = var.elem_count();
            let need_v = cfg.kind == OptimizerKind::Adamw;
            let (m, v) = if host_path(&var) {
                (Buf::Host(vec![0.0; n]), Buf::Host(if need_v { vec![0.0; n] } else { Vec::new() }))
            } else {
                let z = var.as_tensor().zeros_like()?;
                (Buf::Dev(z.clone()), Buf::Dev(z))
            };
            slots.push(Slot { decay: decays(&name), name, var, m, v });
        }
        Ok(Optimizer { cfg, slots, step: 0 })
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Optimizer steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The names of the parameters it updates, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.name.as_str())
    }

    /// Number of scalars it updates.
    pub fn n_params(&self) -> usize {
        self.slots.iter().map(|s| s.var.elem_count()).sum()
    }

    /// An empty gradient accumulator for this optimizer's parameters.
    pub fn grads(&self) -> Grads {
        Grads { grads: (0..self.slots.len()).map(|_| None).collect(), owned: vec![false; self.slots.len()] }
    }

    /// Adds the gradients of one backward pass to `acc`.
    pub fn accumulate(&self, acc: &mut Grads, mut store: GradStore) -> Result<(), OptimError> {
        for (i, slot) in self.slots.iter().enumerate() {
            let Some(g) = store.remove(slot.var.as_tensor()) else { continue };
            match acc.grads[i].take() {
                None => {
                    acc.grads[i] = Some(g);
                    acc.owned[i] = false;
                }
                Some(prev) => {
                    if acc.owned[i] && host_path(&slot.var) && prev.is_contiguous() {
                        let g = g.contiguous()?;
                        prev.inplace_op2(&g, &AddAssign)?;
                        acc.grads[i] = Some(prev);
                    } else {
                        // The first sum makes a fresh buffer we own; later sums go in place.
                        acc.grads[i] = Some(prev.add(&g)?);
                        acc.owned[i] = true;
                    }
                }
            }
        }
        Ok(())
    }

    /// The global L2 norm of `grads`.
    pub fn grad_norm(&self, grads: &Grads) -> Result<f64, OptimError> {
        let mut sum = 0.0f64;
        for g in grads.grads.iter().flatten() {
            if g.device().is_cpu() && g.dtype() == DType::F32 && g.is_contiguous() {
                let op = SumSq(Cell::new(0.0));
                g.inplace_op1(&op)?;
                sum += op.0.get();
            } else {
                sum += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
            }
        }
        Ok(sum.sqrt())
    }

    /// One optimizer step at learning rate `lr`, clipping the global gradient norm to
    /// `max_grad_norm` (0 = no clipping), as `torch.nn.utils.clip_grad_norm_` does
    /// (scale = max_norm / (norm + 1e-6) when the norm exceeds it). Parameters without a
    /// gradient are left alone. A non-finite gradient norm is returned without updating.
    pub fn step(&mut self, grads: &Grads, lr: f64, max_grad_norm: f64) -> Result<StepInfo, OptimError> {
        let norm = self.grad_norm(grads)?;
        let info = StepInfo { grad_norm: norm, lr };
        if !norm.is_finite() {
            return Ok(info);
        }
        let scale = if max_grad_norm > 0.0 && norm > max_grad_norm { max_grad_norm / (norm + 1e-6) } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let cfg = self.cfg;
        for (slot, g) in self.slots.iter_mut().zip(&grads.grads) {
            let Some(g) = g else { continue };
            let wd = if slot.decay { cfg.weight_decay } else { 0.0 };
            match (&mut slot.m, &mut slot.v) {
                (Buf::Host(m), Buf::Host(v)) if g.is_contiguous() && g.dtype() == DType::F32 => {
                    let op = FusedStep {
                        kind: cfg.kind,
                        m: RefCell::new(m.as_mut_slice()),
                        v: RefCell::new(v.as_mut_slice()),
                        lr: lr as f32,
                        wd: wd as f32,
                        gscale: scale as f32,
                        beta1: cfg.beta1 as f32,
                        beta2: cfg.beta2 as f32,
                        eps: cfg.eps as f32,
                        bc1: (1.0 - cfg.beta1.powi(t)) as f32,
                        bc2: (1.0 - cfg.beta2.powi(t)) as f32,
                        momentum: cfg.momentum as f32,
                        first: t == 1,
                    };
                    slot.var.as_tensor().inplace_op2(g, &op)?;
                }
                (m, v) => {
                    // General path (GPU, or anything unusual): tensor arithmetic.
                    let mt = m.to_tensor(&slot.var)?;
                    let p = slot.var.as_tensor();
                    let g = (g.to_dtype(p.dtype())? * scale)?;
                    match cfg.kind {
                        OptimizerKind::Adamw => {
                            let vt = v.to_tensor(&slot.var)?;
                            let m2 = ((mt * cfg.beta1)? + (&g * (1.0 - cfg.beta1))?)?;
                            let v2 = ((vt * cfg.beta2)? + (g.sqr()? * (1.0 - cfg.beta2))?)?;
                            let mhat = (&m2 / (1.0 - cfg.beta1.powi(t)))?;
                            let vhat = (&v2 / (1.0 - cfg.beta2.powi(t)))?;
                            let upd = (mhat / (vhat.sqrt()? + cfg.eps)?)?;
                            let p2 = ((p * (1.0 - lr * wd))? - (upd * lr)?)?;
                            slot.var.set(&p2)?;
                            *m = Buf::Dev(m2);
                            *v = Buf::Dev(v2);
                        }
                        OptimizerKind::Sgd => {
                            let g = if wd > 0.0 { (g + (p * wd)?)? } else { g };
                            let buf = if cfg.momentum > 0.0 {
                                if t == 1 { g } else { ((mt * cfg.momentum)? + g)? }
                            } else {
                                g
                            };
                            slot.var.set(&(p - (&buf * lr)?)?)?;
                            *m = Buf::Dev(buf);
                        }
                    }
                }
            }
        }
        Ok(info)
    }

    /// Writes the moments and the step count to a safetensors file (`<name>.exp_avg`,
    /// `<name>.exp_avg_sq` or `<name>.momentum_buffer`, and `optimizer.step`).
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            match self.cfg.kind {
                OptimizerKind::Adamw => {
                    map.insert(format!("{}.exp_avg", s.name), s.m.to_tensor(&s.var)?.to_device(&Device::Cpu)?);
                    map.insert(format!("{}.exp_avg_sq", s.name), s.v.to_tensor(&s.var)?.to_device(&Device::Cpu)?);
                }
                OptimizerKind::Sgd => {
                    map.insert(format!("{}.momentum_buffer", s.name), s.m.to_tensor(&s.var)?.to_device(&Device::Cpu)?);
                }
            }
        }
        map.insert("optimizer.step".into(), Tensor::new(&[self.step as f64], &Device::Cpu)?);
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Restores what [`Optimizer::save`] wrote, for the same parameters and optimizer kind.
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let err = |why: String| OptimError::State { path: path.display().to_string(), why };
        let mut map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let step = map.remove("optimizer.step").ok_or_else(|| err("no `optimizer.step`".into()))?;
        let step = step.to_vec1::<f64>()?.first().copied().ok_or_else(|| err("empty step".into()))?;
        let keys: &[&str] = match self.cfg.kind {
            OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd => &["momentum_buffer"],
        };
        for s in &mut self.slots {
            for (i, k) in keys.iter().enumerate() {
                let key = format!("{}.{k}", s.name);
                let t = map.remove(&key).ok_or_else(|| err(format!("`{key}` is missing (another optimizer or model?)")))?;
                if t.shape() != s.var.shape() {
                    return Err(err(format!("`{key}` has shape {:?}, the parameter {:?}", t.dims(), s.var.dims())));
                }
                let buf = if host_path(&s.var) {
                    Buf::Host(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
                } else {
                    Buf::Dev(t.to_dtype(s.var.dtype())?.to_device(s.var.device())?)
                };
                if i == 0 { s.m = buf } else { s.v = buf }
            }
        }
        self.step = step as u64;
        Ok(())
    }
}

/// Gradients for one optimizer step, in the optimizer's parameter order.
#[derive(Debug)]
pub struct Grads {
    grads: Vec<Option<Tensor>>,
    /// Whether the buffer is ours to update in place (not shared with a `GradStore`).
    owned: Vec<bool>,
}

impl Grads {
    /// How many parameters received a gradient.
    pub fn len(&self) -> usize {
        self.grads.iter().flatten().count()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The gradient of the i-th parameter (optimizer order).
    pub fn get(&self, i: usize) -> Option<&Tensor> {
        self.grads.get(i).and_then(|g| g.as_ref())
    }
}

/// Learning-rate multiplier at optimizer step `step` (0-based, the step about to be taken)
/// of `total`, with `warmup` warm-up steps: the `lr_lambda`s of Hugging Face
/// `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup` (0.5 cycles) and
/// `get_constant_schedule_with_warmup`.
pub fn lr_factor(kind: ScheduleKind, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    match kind {
        ScheduleKind::Constant => 1.0,
        ScheduleKind::Linear => (total.saturating_sub(step) as f64 / total.saturating_sub(warmup).max(1) as f64).max(0.0),
        ScheduleKind::Cosine => {
            let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
            (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
        }
    }
}

/// Warm-up steps for a ratio of the total, as `TrainingArguments.get_warmup_steps` (ceil).
pub fn warmup_steps(ratio: f64, total: usize) -> usize {
    (ratio * total as f64).ceil() as usize
}

const CHUNK: usize = 32 * 1024;

/// Runs `f(lo..hi)` over `0..n` in chunks on candle's CPU pool (inline when small).
fn par_chunks(n: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    if n <= 2 * CHUNK {
        f(0..n);
        return;
    }
    candle_core::utils::barrier_pool().execute_chunked(n.div_ceil(CHUNK), |r| {
        f(r.start * CHUNK..(r.end * CHUNK).min(n));
    });
}

/// The `r` sub-slices of three f32 buffers given by address (`0` = none: empty slice).
///
/// # Safety
/// The addresses must point to live buffers of at least `r.end` values, and no other code
/// may touch range `r` of them while the slices live.
unsafe fn chunk3<'a>(p: usize, m: usize, v: usize, r: &std::ops::Range<usize>) -> (&'a mut [f32], &'a mut [f32], &'a mut [f32]) {
    let s = |a: usize| -> &'a mut [f32] {
        if a == 0 {
            &mut []
        } else {
            std::slice::from_raw_parts_mut((a as *mut f32).add(r.start), r.len())
        }
    };
    (s(p), s(m), s(v))
}

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{what}: expected a contiguous f32 tensor"),
    }
}

/// Reads a tensor's sum of squares (in f64) without writing it.
struct SumSq(Cell<f64>);

impl InplaceOp1 for SumSq {
    fn name(&self) -> &'static str {
        "sum-sq"
    }
    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let x = contiguous_f32(s, l, "sum-sq")?;
        // Four partial sums keep the loop vectorisable and the rounding small.
        let mut acc = [0f64; 4];
        let chunks = x.chunks_exact(4);
        let rest = chunks.remainder();
        for c in chunks {
            for k in 0..4 {
                acc[k] += (c[k] as f64) * (c[k] as f64);
            }
        }
        let mut sum: f64 = acc.iter().sum();
        for &r in rest {
            sum += (r as f64) * (r as f64);
        }
        self.0.set(sum);
        Ok(())
    }
}

/// `dst += src` in place.
struct AddAssign;

impl InplaceOp2 for AddAssign {
    fn name(&self) -> &'static str {
        "add-assign"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let src = contiguous_f32(s2, l2, "add-assign")?;
        match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) if b - a == src.len() => {
                for (d, s) in d[a..b].iter_mut().zip(src) {
                    *d += s;
                }
                Ok(())
            }
            _ => candle_core::bail!("add-assign: expected contiguous f32 tensors of one size"),
        }
    }
}

/// One AdamW or SGD update of a parameter (dst) from its gradient (src), with the moment
/// buffers updated in the same pass.
struct FusedStep<'a> {
    kind: OptimizerKind,
    m: RefCell<&'a mut [f32]>,
    v: RefCell<&'a mut [f32]>,
    lr: f32,
    wd: f32,
    gscale: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    bc1: f32,
    bc2: f32,
    momentum: f32,
    first: bool,
}

impl InplaceOp2 for FusedStep<'_> {
    fn name(&self) -> &'static str {
        "fused-optimizer-step"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> candle_core::Result<()> {
        let g = contiguous_f32(s2, l2, "optimizer step")?;
        let p = match (s1, l1.contiguous_offsets()) {
            (CpuStorage::F32(d), Some((a, b))) if b - a == g.len() => &mut d[a..b],
            _ => candle_core::bail!("optimizer step: expected a contiguous f32 parameter of its gradient's size"),
        };
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        let n = g.len();
        if m.len() != n || (self.kind == OptimizerKind::Adamw && v.len() != n) {
            candle_core::bail!("optimizer step: state of {} values for a parameter of {n}", m.len());
        }
        // Disjoint chunks of p, m, v on candle's CPU pool (addresses passed as usize).
        let (pp, mp, vp) = (p.as_mut_ptr() as usize, m.as_mut_ptr() as usize, v.as_mut_ptr() as usize);
        let (lr, gs) = (self.lr, self.gscale);
        match self.kind {
            OptimizerKind::Adamw => {
                let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
                let decay = 1.0 - lr * self.wd;
                // step_size and denominator as torch's `_single_tensor_adamw`.
                let step_size = lr / self.bc1;
                let bc2_sqrt = self.bc2.sqrt();
                par_chunks(n, |r| {
                    // SAFETY: chunks are disjoint ranges of p, m and v, which outlive the call.
                    let (p, m, v) = unsafe { chunk3(pp, mp, vp, &r) };
                    for (((p, g), m), v) in p.iter_mut().zip(&g[r]).zip(m.iter_mut()).zip(v.iter_mut()) {
                        let g = g * gs;
                        *m = b1 * *m + (1.0 - b1) * g;
                        *v = b2 * *v + (1.0 - b2) * g * g;
                        let denom = v.sqrt() / bc2_sqrt + eps;
                        *p = *p * decay - step_size * *m / denom;
                    }
                });
            }
            OptimizerKind::Sgd => {
                let (mu, wd, first) = (self.momentum, self.wd, self.first);
                par_chunks(n, |r| {
                    // SAFETY: as above (v is not touched by SGD).
                    let (p, m, _) = unsafe { chunk3(pp, mp, 0, &r) };
                    for ((p, g), b) in p.iter_mut().zip(&g[r]).zip(m.iter_mut()) {
                        let d = g * gs + wd * *p;
                        let step = if mu > 0.0 {
                            *b = if first { d } else { mu * *b + d };
                            *b
                        } else {
                            d
                        };
                        *p -= lr * step;
                    }
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Reference values from the `lr_lambda` formulas of transformers' `optimization.py`
    /// (computed by hand): total 100, warm-up 10.
    #[test]
    fn schedules_match_hugging_face_formulas() {
        use ScheduleKind::*;
        assert!(close(lr_factor(Linear, 0, 10, 100), 0.0));
        assert!(close(lr_factor(Linear, 5, 10, 100), 0.5));
        assert!(close(lr_factor(Linear, 10, 10, 100), 1.0));
        assert!(close(lr_factor(Linear, 55, 10, 100), 0.5)); // (100-55)/90
        assert!(close(lr_factor(Linear, 100, 10, 100), 0.0));
        assert!(close(lr_factor(Linear, 0, 0, 4), 1.0));
        assert!(close(lr_factor(Cosine, 55, 10, 100), 0.5)); // progress 0.5 → 0.5(1+cos(π/2))
        assert!(close(lr_factor(Cosine, 10, 10, 100), 1.0));
        assert!(close(lr_factor(Cosine, 40, 10, 100), 0.75)); // progress 1/3 → 0.5(1+cos(π/3))
        assert!(close(lr_factor(Constant, 3, 10, 100), 0.3));
        assert!(close(lr_factor(Constant, 70, 10, 100), 1.0));
        assert_eq!(warmup_steps(0.1, 95), 10);
        assert_eq!(warmup_steps(0.0, 95), 0);
    }

    fn var(name: &str, vals: &[f32]) -> (String, Var) {
        (name.to_string(), Var::from_slice(vals, vals.len(), &Device::Cpu).unwrap())
    }

    /// A gradient store where each var's gradient is the given vector: the gradient of
    /// Σ_v Σ_i v_i·g_i.
    fn store_with(vars: &[&Var], gs: &[&[f32]]) -> GradStore {
        let mut loss = Tensor::new(0f32, &Device::Cpu).unwrap();
        for (v, g) in vars.iter().zip(gs) {
            let g = Tensor::from_slice(g, g.len(), &Device::Cpu).unwrap();
            loss = (loss + (v.as_tensor() * g).unwrap().sum_all().unwrap()).unwrap();
        }
        loss.backward().unwrap()
    }

    fn grads_of(opt: &Optimizer, vars: &[&Var], gs: &[&[f32]]) -> Grads {
        let mut acc = opt.grads();
        let store = store_with(vars, gs);
        opt.accumulate(&mut acc, store).unwrap();
        acc
    }

    /// Reference: torch.optim.AdamW(lr=0.1, weight_decay=0.5), two steps on p = [1, -2] with
    /// gradient [0.5, -1] then [0.1, 0.2], worked by hand from the update rule:
    /// step 1: p *= 1 - 0.05; m̂ = g, v̂ = g² → p -= 0.1·sign(g) (ε negligible):
    ///   [0.95 - 0.1, -1.9 + 0.1] = [0.85, -1.8].
    #[test]
    fn adamw_matches_torch_update_rule() {
        let (n, w) = var("encoder.dense.weight", &[1.0, -2.0]);
        let cfg = OptimConfig::new(OptimizerKind::Adamw, 0.5, 0.0);
        let mut opt = Optimizer::new(vec![(n, w.clone())], cfg).unwrap();
        let g = grads_of(&opt, &[&w], &[&[0.5, -1.0]]);
        opt.step(&g, 0.1, 0.0).unwrap();
        let p = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!((p[0] - 0.85).abs() < 1e-6 && (p[1] + 1.8).abs() < 1e-6, "{p:?}");
        // step 2, by the same formulas in f64
        let g2 = [0.1f64, 0.2];
        let g1 = [0.5f64, -1.0];
        let mut want = [0.85f64, -1.8];
        for i in 0..2 {
            let m = 0.9 * 0.1 * g1[i] + 0.1 * g2[i];
            let v = 0.999 * 0.001 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
            let mhat = m / (1.0 - 0.81);
            let vhat = v / (1.0 - 0.999f64.powi(2));
            want[i] = want[i] * (1.0 - 0.05) - 0.1 * mhat / (vhat.sqrt() + 1e-8);
        }
        let g = grads_of(&opt, &[&w], &[&[0.1, 0.2]]);
        opt.step(&g, 0.1, 0.0).unwrap();
        let p = w.as_tensor().to_vec1::<f32>().unwrap();
        assert!((p[0] as f64 - want[0]).abs() < 1e-5 && (p[1] as f64 - want[1]).abs() < 1e-5, "{p:?} vs {want:?}");
    }

    /// A tensor big enough for the parallel chunked path (and a ragged last chunk): the first
    /// AdamW step moves each weight by lr·g/(|g|+ε) ≈ lr·sign(g) after the decay factor.
    #[test]
    fn parallel_update_covers_every_element() {
        let n = 5 * CHUNK + 123;
        let g: Vec<f32> = (0..n).map(|i| if i % 3 == 0 { -0.5 } else { 0.25 }).collect();
        let (name, w) = var("big.weight", &vec![1.0; n]);
        let mut opt = Optimizer::new(vec![(name, w.clone())], OptimConfig::new(OptimizerKind::Adamw, 0.1, 0.0)).unwrap();
        let gr = grads_of(&opt, &[&w], &[&g]);
        opt.step(&gr, 0.01, 0.0).unwrap();
        let p = w.as_tensor().to_vec1::<f32>().unwrap();
        for (i, (&p, &g)) in p.iter().zip(&g).enumerate() {
            let want = 1.0 * (1.0 - 0.01 * 0.1) - 0.01 * g.signum();
            assert!((p - want).abs() < 1e-6, "element {i}: {p} vs {want}");
        }
    }

    #[test]
    fn no_decay_on_bias_and_layer_norm() {
        assert!(decays("bert.encoder.layer.0.attention.self.query.weight"));
        assert!(!decays("bert.encoder.layer.0.attention.output.LayerNorm.weight"));
        assert!(!decays("classifier.bias"));
        let (n, b) = var("classifier.bias", &[1.0]);
        let mut opt = Optimizer::new(vec![(n, b.clone())], OptimConfig::new(OptimizerKind::Adamw, 0.5, 0.0)).unwrap();
        let g = grads_of(&opt, &[&b], &[&[0.0]]);
        opt.step(&g, 0.1, 0.0).unwrap();
        assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap(), vec![1.0], "zero gradient, no decay: unchanged");
    }

    /// SGD with momentum 0.9, lr 0.1: buf1 = g1 = 1 → p = 1 - 0.1 = 0.9;
    /// buf2 = 0.9·1 + 1 = 1.9 → p = 0.9 - 0.19 = 0.71 (torch.optim.SGD rule).
    #[test]
    fn sgd_momentum_matches_torch_rule() {
        let (n, w) = var("w", &[1.0]);
        let mut opt = Optimizer::new(vec![(n, w.clone())], OptimConfig::new(OptimizerKind::Sgd, 0.0, 0.9)).unwrap();
        for _ in 0..2 {
            let g = grads_of(&opt, &[&w], &[&[1.0]]);
            opt.step(&g, 0.1, 0.0).unwrap();
        }
        let p = w.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((p - 0.71).abs() < 1e-6, "{p}");
    }

    /// Norm of [3, 4] is 5; clipped to 1 the AdamW first step is unchanged in direction, so
    /// check with SGD: p -= lr · g · 1/(5 + 1e-6).
    #[test]
    fn clipping_scales_by_global_norm() {
        let (n1, a) = var("a", &[0.0]);
        let (n2, b) = var("b", &[0.0]);
        let mut opt = Optimizer::new(vec![(n1, a.clone()), (n2, b.clone())], OptimConfig::new(OptimizerKind::Sgd, 0.0, 0.0)).unwrap();
        let g = grads_of(&opt, &[&a, &b], &[&[3.0], &[4.0]]);
        let info = opt.step(&g, 1.0, 1.0).unwrap();
        assert!((info.grad_norm - 5.0).abs() < 1e-9);
        let pa = a.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((pa as f64 + 3.0 / (5.0 + 1e-6)).abs() < 1e-6, "{pa}");
    }

    #[test]
    fn accumulation_sums_micro_batches() {
        let (n, w) = var("w", &[0.0, 0.0]);
        let opt = Optimizer::new(vec![(n, w.clone())], OptimConfig::new(OptimizerKind::Sgd, 0.0, 0.0)).unwrap();
        let mut acc = opt.grads();
        for g in [[1.0f32, 2.0], [0.5, 0.5], [0.25, 0.0]] {
            let store = store_with(&[&w], &[&g]);
            opt.accumulate(&mut acc, store).unwrap();
        }
        assert_eq!(acc.get(0).unwrap().to_vec1::<f32>().unwrap(), vec![1.75, 2.5]);
    }

    #[test]
    fn state_round_trips_through_safetensors() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("optimizer.safetensors");
        let run = |opt: &mut Optimizer, w: &Var, g: &[f32]| {
            let gr = grads_of(opt, &[w], &[g]);
            opt.step(&gr, 0.01, 1.0).unwrap();
        };
        let cfg = OptimConfig::new(OptimizerKind::Adamw, 0.01, 0.0);
        let (n, w) = var("w", &[1.0, 2.0, 3.0]);
        let mut a = Optimizer::new(vec![(n.clone(), w.clone())], cfg).unwrap();
        run(&mut a, &w, &[0.1, -0.2, 0.3]);
        a.save(&path).unwrap();
        // a fresh optimizer on a copy of the weights, restored, continues identically
        let w2 = Var::from_tensor(&w.as_tensor().copy().unwrap()).unwrap();
        let mut b = Optimizer::new(vec![(n, w2.clone())], cfg).unwrap();
        b.load(&path).unwrap();
        assert_eq!(b.steps_done(), 1);
        run(&mut a, &w, &[0.3, 0.1, -0.5]);
        run(&mut b, &w2, &[0.3, 0.1, -0.5]);
        assert_eq!(w.as_tensor().to_vec1::<f32>().unwrap(), w2.as_tensor().to_vec1::<f32>().unwrap());
        // a fresh, unrestored one differs (so the test can fail)
        let (n3, w3) = var("w", &[1.0, 2.0, 3.0]);
        let mut c = Optimizer::new(vec![(n3, w3.clone())], cfg).unwrap();
        run(&mut c, &w3, &[0.1, -0.2, 0.3]);
        let w3b = Var::from_tensor(&w3.as_tensor().copy().unwrap()).unwrap();
        let mut d = Optimizer::new(vec![("w".into(), w3b.clone())], cfg).unwrap();
        run(&mut d, &w3b, &[0.3, 0.1, -0.5]);
        assert_ne!(w2.as_tensor().to_vec1::<f32>().unwrap(), w3b.as_tensor().to_vec1::<f32>().unwrap());
        // wrong kind refuses
        let mut e = Optimizer::new(vec![("w".into(), w3b)], OptimConfig::new(OptimizerKind::Sgd, 0.0, 0.9)).unwrap();
        assert!(e.load(&path).unwrap_err().to_string().contains("momentum_buffer"));
    }
}
