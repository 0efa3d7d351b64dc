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
//! tensor (no allocation). Elsewhere (the GPU) parameters are updated as flat groups (one per
//! device and weight-decay flag): per step the group's gradients and weights are concatenated,
//! the update is a handful of tensor ops on the flat tensors (the moments are kept flat), and
//! each weight is written back with `Var::set`. There the gradient norm and the clipping factor
//! stay on the device: a step reads nothing back, and the caller gets the norm as a device
//! scalar ([`GradNorm::Device`]) to read with its other values. A step in which some parameter
//! of a group has no gradient updates that group parameter by parameter.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp1, InplaceOp2, Layout, Tensor, Var};

use super::model::ops::{contiguous_f32, contiguous_f32_mut};
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

/// Where a parameter's optimizer state lives.
#[derive(Debug)]
enum Place {
    /// The CPU fast path: host moments (AdamW: exp_avg, exp_avg_sq; SGD: momentum_buffer and
    /// an empty `v`), updated in place with the parameter.
    Host { m: Vec<f32>, v: Vec<f32> },
    /// The flat device path: elements `offset..offset + n` of `Optimizer::groups[group]`.
    Flat { group: usize, offset: usize },
}

#[derive(Debug)]
struct Slot {
    name: String,
    var: Var,
    decay: bool,
    place: Place,
}

/// Parameters updated together as flat `f32` tensors (the device path): one device, one
/// weight-decay flag. A step concatenates their gradients and values, updates the flat
/// tensors in a handful of ops and writes each parameter back.
#[derive(Debug)]
struct Group {
    device: Device,
    decay: bool,
    /// (slot index, offset in the flat tensors), in slot order.
    members: Vec<(usize, usize)>,
    /// AdamW: exp_avg; SGD: momentum_buffer. `[elements]`, f32.
    m: Tensor,
    /// AdamW: exp_avg_sq, `[elements]`, f32; SGD: none.
    v: Option<Tensor>,
}

fn host_path(var: &Var) -> bool {
    var.device().is_cpu() && var.dtype() == DType::F32 && var.as_tensor().is_contiguous()
}

#[cfg(test)]
thread_local! {
    /// Tests set this (for their thread) to put every optimizer [`Optimizer::new`] makes on the
    /// flat device path, so the training loop's device branch runs on the CPU.
    pub(crate) static FORCE_FLAT: Cell<bool> = const { Cell::new(false) };
}

fn force_flat() -> bool {
    #[cfg(test)]
    {
        FORCE_FLAT.with(Cell::get)
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// The optimizer over a fixed list of named trainable variables.
#[derive(Debug)]
pub struct Optimizer {
    cfg: OptimConfig,
    slots: Vec<Slot>,
    /// The flat groups of the parameters not on the CPU fast path.
    groups: Vec<Group>,
    /// Optimizer steps taken (the `t` of Adam's bias correction).
    step: u64,
}

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepInfo {
    /// The global gradient norm before clipping.
    pub grad_norm: GradNorm,
    pub lr: f64,
}

/// A global gradient norm.
#[derive(Debug, Clone)]
pub enum GradNorm {
    /// Computed on the host (the CPU fast path), in f64.
    Host(f64),
    /// An f32 scalar on the parameters' device, not read yet: reading it waits for the
    /// device, so a caller reads it together with its other values in one transfer.
    Device(Tensor),
}

impl GradNorm {
    /// The value (for [`GradNorm::Device`], a read that waits for the device).
    pub fn value(&self) -> Result<f64, OptimError> {
        match self {
            GradNorm::Host(x) => Ok(*x),
            GradNorm::Device(t) => Ok(t.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64),
        }
    }
}

/// The factor gradients are multiplied by to clip the global norm.
enum Clip {
    One,
    Host(f64),
    /// An f32 scalar on the device.
    Device(Tensor),
}

impl Clip {
    fn apply(&self, g: Tensor) -> candle_core::Result<Tensor> {
        match self {
            Clip::One => Ok(g),
            Clip::Host(s) if *s == 1.0 => Ok(g),
            Clip::Host(s) => g.affine(*s, 0.0),
            Clip::Device(s) => g.broadcast_mul(&s.to_device(g.device())?),
        }
    }
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
        Self::with_path(params, cfg, force_flat())
    }

    /// As [`Optimizer::new`]; `flat` puts CPU `f32` parameters on the flat device path too
    /// (tests check that path on the CPU with it).
    pub(crate) fn with_path(params: Vec<(String, Var)>, cfg: OptimConfig, flat: bool) -> Result<Self, OptimError> {
        let need_v = cfg.kind == OptimizerKind::Adamw;
        let mut slots = Vec::with_capacity(params.len());
        /// A group being formed (its tensors are made once its size is known).
        struct Plan {
            device: Device,
            decay: bool,
            members: Vec<(usize, usize)>,
            len: usize,
        }
        let mut plan: Vec<Plan> = Vec::new();
        for (name, var) in params {
            let decay = decays(&name);
            let n = var.elem_count();
            let place = if host_path(&var) && !flat {
                Place::Host { m: vec![0.0; n], v: if need_v { vec![0.0; n] } else { Vec::new() } }
            } else {
                let gi = match plan.iter().position(|p| p.decay == decay && p.device.same_device(var.device())) {
                    Some(i) => i,
                    None => {
                        plan.push(Plan { device: var.device().clone(), decay, members: Vec::new(), len: 0 });
                        plan.len() - 1
                    }
                };
                let p = &mut plan[gi];
                let offset = p.len;
                p.members.push((slots.len(), offset));
                p.len += n;
                Place::Flat { group: gi, offset }
            };
            slots.push(Slot { name, var, decay, place });
        }
        let mut groups = Vec::with_capacity(plan.len());
        for Plan { device, decay, members, len } in plan {
            let m = Tensor::zeros(len, DType::F32, &device)?;
            let v = if need_v { Some(m.zeros_like()?) } else { None };
            groups.push(Group { device, decay, members, m, v });
        }
        Ok(Optimizer { cfg, slots, groups, step: 0 })
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

    /// Σ g² (f64) over the gradients of the parameters on the CPU fast path.
    fn host_sum_sq(&self, grads: &Grads) -> Result<f64, OptimError> {
        let mut sum = 0.0f64;
        for (slot, g) in self.slots.iter().zip(&grads.grads) {
            let (Place::Host { .. }, Some(g)) = (&slot.place, g) else { continue };
            if g.device().is_cpu() && g.dtype() == DType::F32 && g.is_contiguous() {
                let op = SumSq(Cell::new(0.0));
                g.inplace_op1(&op)?;
                sum += op.0.get();
            } else {
                sum += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
            }
        }
        Ok(sum)
    }

    /// Per flat group: the concatenated f32 gradient when every member has one (`None`: the
    /// per-parameter fallback this step); and the groups' Σ g² as device scalars.
    fn flat_grads(&self, grads: &Grads) -> Result<(Vec<Option<Tensor>>, Vec<Tensor>), OptimError> {
        let mut flats = Vec::with_capacity(self.groups.len());
        let mut sums = Vec::with_capacity(self.groups.len());
        for group in &self.groups {
            let gs: Vec<Option<&Tensor>> = group.members.iter().map(|&(i, _)| grads.grads[i].as_ref()).collect();
            if gs.iter().all(Option::is_some) {
                let parts = gs.iter().flatten().map(|g| g.flatten_all()?.to_dtype(DType::F32)).collect::<candle_core::Result<Vec<_>>>()?;
                let flat = Tensor::cat(&parts, 0)?;
                sums.push(sum_sq(&flat)?);
                flats.push(Some(flat));
            } else {
                for g in gs.into_iter().flatten() {
                    sums.push(sum_sq(&g.flatten_all()?.to_dtype(DType::F32)?)?);
                }
                flats.push(None);
            }
        }
        Ok((flats, sums))
    }

    /// One optimizer step at learning rate `lr`, clipping the global gradient norm to
    /// `max_grad_norm` (0 = no clipping) as `torch.nn.utils.clip_grad_norm_` does
    /// (scale = max_norm / (norm + 1e-6) when that is below 1). Parameters without a
    /// gradient are left alone.
    ///
    /// On the CPU fast path the norm is a host value and a non-finite norm is returned without
    /// updating. On the flat device path nothing is read back (the norm and the clipping factor
    /// stay on the device, [`GradNorm::Device`]), so a non-finite gradient does update the
    /// weights (to NaN): the caller must check the returned norm and stop.
    pub fn step(&mut self, grads: &Grads, lr: f64, max_grad_norm: f64) -> Result<StepInfo, OptimError> {
        let host_sum = self.host_sum_sq(grads)?;
        let (flats, sums) = self.flat_grads(grads)?;
        let any_host = self.slots.iter().any(|s| matches!(s.place, Place::Host { .. }));
        let (grad_norm, clip, scale) = if any_host || self.groups.is_empty() {
            // Host norm (parameters on flat groups as well are an odd mix: read their part).
            let norm = match device_total(&sums)? {
                Some(t) => (host_sum + t.to_scalar::<f32>()? as f64).sqrt(),
                None => host_sum.sqrt(),
            };
            if !norm.is_finite() {
                return Ok(StepInfo { grad_norm: GradNorm::Host(norm), lr });
            }
            let scale = if max_grad_norm > 0.0 && norm > max_grad_norm { max_grad_norm / (norm + 1e-6) } else { 1.0 };
            (GradNorm::Host(norm), Clip::Host(scale), scale)
        } else {
            let total = match device_total(&sums)? {
                Some(t) => t,
                None => Tensor::zeros((), DType::F32, &self.groups[0].device)?,
            };
            let norm = total.sqrt()?;
            let clip = if max_grad_norm > 0.0 {
                // min(1, max_norm / (norm + 1e-6)), as torch's clip_grad_norm_ (clamped coefficient).
                Clip::Device(norm.affine(1.0, 1e-6)?.recip()?.affine(max_grad_norm, 0.0)?.minimum(1.0)?)
            } else {
                Clip::One
            };
            (GradNorm::Device(norm), clip, 1.0)
        };
        self.step += 1;
        let t = self.step as i32;
        let cfg = self.cfg;
        for (group, flat) in self.groups.iter_mut().zip(flats) {
            match flat {
                Some(g) => group.update_flat(&self.slots, clip.apply(g)?, &cfg, lr, t)?,
                None => group.update_each(&self.slots, grads, &clip, &cfg, lr, t)?,
            }
        }
        for (slot, g) in self.slots.iter_mut().zip(&grads.grads) {
            let (Place::Host { m, v }, Some(g)) = (&mut slot.place, g) else { continue };
            // (Gradients from candle's backward are contiguous f32 sums already.)
            let g = g.to_dtype(DType::F32)?.contiguous()?;
            let wd = if slot.decay { cfg.weight_decay } else { 0.0 };
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
            slot.var.as_tensor().inplace_op2(&g, &op)?;
        }
        Ok(StepInfo { grad_norm, lr })
    }

    /// Writes the moments and the step count to a safetensors file (`<name>.exp_avg`,
    /// `<name>.exp_avg_sq` or `<name>.momentum_buffer`, and `optimizer.step`), one tensor per
    /// parameter whichever path keeps them.
    pub fn save(&self, path: &Path) -> Result<(), OptimError> {
        // The flat moments come to the host once per group, then are split per parameter.
        let mut flat = Vec::with_capacity(self.groups.len());
        for g in &self.groups {
            flat.push((g.m.to_device(&Device::Cpu)?, g.v.as_ref().map(|v| v.to_device(&Device::Cpu)).transpose()?));
        }
        let mut map: HashMap<String, Tensor> = HashMap::new();
        for s in &self.slots {
            let shape = s.var.shape();
            let (m, v) = match &s.place {
                Place::Host { m, v } => {
                    let v = if self.cfg.kind == OptimizerKind::Adamw { Some(Tensor::from_slice(v, shape, &Device::Cpu)?) } else { None };
                    (Tensor::from_slice(m, shape, &Device::Cpu)?, v)
                }
                Place::Flat { group, offset } => {
                    let (m, v) = &flat[*group];
                    let piece = |t: &Tensor| t.narrow(0, *offset, s.var.elem_count())?.reshape(shape);
                    (piece(m)?, v.as_ref().map(piece).transpose()?)
                }
            };
            match self.cfg.kind {
                OptimizerKind::Adamw => {
                    let v = v.ok_or_else(|| OptimError::State { path: path.display().to_string(), why: "no second moment".into() })?;
                    map.insert(format!("{}.exp_avg", s.name), m);
                    map.insert(format!("{}.exp_avg_sq", s.name), v);
                }
                OptimizerKind::Sgd => {
                    map.insert(format!("{}.momentum_buffer", s.name), m);
                }
            }
        }
        map.insert("optimizer.step".into(), Tensor::new(&[self.step as f64], &Device::Cpu)?);
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Restores what [`Optimizer::save`] wrote, for the same parameters and optimizer kind
    /// (either path may have written it).
    pub fn load(&mut self, path: &Path) -> Result<(), OptimError> {
        let err = |why: String| OptimError::State { path: path.display().to_string(), why };
        let mut map = candle_core::safetensors::load(path, &Device::Cpu)?;
        let step = map.remove("optimizer.step").ok_or_else(|| err("no `optimizer.step`".into()))?;
        let step = step.to_vec1::<f64>()?.first().copied().ok_or_else(|| err("empty step".into()))?;
        let keys: &[&str] = match self.cfg.kind {
            OptimizerKind::Adamw => &["exp_avg", "exp_avg_sq"],
            OptimizerKind::Sgd => &["momentum_buffer"],
        };
        // Per group: the members' (flattened, f32) first and second moments, in member order.
        let mut parts: Vec<(Vec<Tensor>, Vec<Tensor>)> = self.groups.iter().map(|_| (Vec::new(), Vec::new())).collect();
        let mut host = Vec::new();
        for (si, s) in self.slots.iter().enumerate() {
            let mut got = Vec::with_capacity(keys.len());
            for k in keys {
                let key = format!("{}.{k}", s.name);
                let t = map.remove(&key).ok_or_else(|| err(format!("`{key}` is missing (another optimizer or model?)")))?;
                if t.shape() != s.var.shape() {
                    return Err(err(format!("`{key}` has shape {:?}, the parameter {:?}", t.dims(), s.var.dims())));
                }
                got.push(t.to_dtype(DType::F32)?.flatten_all()?);
            }
            match &s.place {
                Place::Host { .. } => {
                    let v = match got.get(1) {
                        Some(t) => t.to_vec1::<f32>()?,
                        None => Vec::new(),
                    };
                    host.push((si, got[0].to_vec1::<f32>()?, v));
                }
                Place::Flat { group, .. } => {
                    let mut got = got.into_iter();
                    parts[*group].0.extend(got.next());
                    parts[*group].1.extend(got.next());
                }
            }
        }
        let mut flat = Vec::with_capacity(self.groups.len());
        for (g, (ms, vs)) in self.groups.iter().zip(parts) {
            let m = Tensor::cat(&ms, 0)?.to_device(&g.device)?;
            let v = if g.v.is_some() { Some(Tensor::cat(&vs, 0)?.to_device(&g.device)?) } else { None };
            flat.push((m, v));
        }
        for (si, m, v) in host {
            if let Place::Host { m: hm, v: hv } = &mut self.slots[si].place {
                *hm = m;
                *hv = v;
            }
        }
        for (g, (m, v)) in self.groups.iter_mut().zip(flat) {
            g.m = m;
            g.v = v;
        }
        self.step = step as u64;
        Ok(())
    }
}

impl Group {
    /// The update of every member from the group's concatenated gradient `g` (clipped).
    fn update_flat(&mut self, slots: &[Slot], g: Tensor, cfg: &OptimConfig, lr: f64, t: i32) -> Result<(), OptimError> {
        #[cfg(feature = "cuda")]
        if self.update_fused_cuda(slots, &g, cfg, lr, t)? {
            return Ok(());
        }
        let parts = self
            .members
            .iter()
            .map(|&(i, _)| slots[i].var.as_tensor().flatten_all()?.to_dtype(DType::F32))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let p = Tensor::cat(&parts, 0)?;
        let wd = if self.decay { cfg.weight_decay } else { 0.0 };
        let (p2, m2, v2) = tensor_update(cfg, &p, &g, &self.m, self.v.as_ref(), lr, wd, t)?;
        for &(i, offset) in &self.members {
            let var = &slots[i].var;
            var.set(&p2.narrow(0, offset, var.elem_count())?.reshape(var.shape())?.to_dtype(var.dtype())?)?;
        }
        self.m = m2;
        self.v = v2;
        Ok(())
    }

    /// AdamW on CUDA as one kernel over every member (`model::cuda::adamw_multi`): the
    /// parameters and the flat moments are updated in place, with no concatenation of the
    /// parameters and no write-back copies. `false` when the group does not qualify (SGD, not
    /// CUDA, or a parameter that is not contiguous f32): the tensor-op update then runs.
    #[cfg(feature = "cuda")]
    fn update_fused_cuda(&mut self, slots: &[Slot], g: &Tensor, cfg: &OptimConfig, lr: f64, t: i32) -> Result<bool, OptimError> {
        let Some(v) = &self.v else { return Ok(false) };
        if cfg.kind != OptimizerKind::Adamw || !self.device.is_cuda() {
            return Ok(false);
        }
        let params: Vec<&Tensor> = self.members.iter().map(|&(i, _)| slots[i].var.as_tensor()).collect();
        if !params.iter().all(|p| p.dtype() == DType::F32 && p.is_contiguous()) {
            return Ok(false);
        }
        let mut offsets: Vec<u64> = self.members.iter().map(|&(_, o)| o as u64).collect();
        offsets.push(g.elem_count() as u64);
        if offsets.windows(2).zip(&params).any(|(w, p)| (w[1] - w[0]) as usize != p.elem_count()) {
            return Ok(false);
        }
        let (g, m, v) = (g.contiguous()?, self.m.contiguous()?, v.contiguous()?);
        let wd = if self.decay { cfg.weight_decay } else { 0.0 };
        let step = crate::trainer::model::cuda::AdamWStep {
            lr: lr as f32,
            beta1: cfg.beta1 as f32,
            beta2: cfg.beta2 as f32,
            eps: cfg.eps as f32,
            weight_decay: wd as f32,
            bc1: (1.0 - cfg.beta1.powi(t)) as f32,
            bc2: (1.0 - cfg.beta2.powi(t)) as f32,
        };
        crate::trainer::model::cuda::adamw_multi(&params, &offsets, &g, &m, &v, step)?;
        self.m = m;
        self.v = Some(v);
        Ok(true)
    }

    /// The fallback when some member has no gradient this step: the same update parameter by
    /// parameter; members without a gradient keep their weights and moments.
    fn update_each(&mut self, slots: &[Slot], grads: &Grads, clip: &Clip, cfg: &OptimConfig, lr: f64, t: i32) -> Result<(), OptimError> {
        let wd = if self.decay { cfg.weight_decay } else { 0.0 };
        let mut ms = Vec::with_capacity(self.members.len());
        let mut vs = Vec::with_capacity(self.members.len());
        for &(i, offset) in &self.members {
            let var = &slots[i].var;
            let n = var.elem_count();
            let m = self.m.narrow(0, offset, n)?;
            let v = self.v.as_ref().map(|v| v.narrow(0, offset, n)).transpose()?;
            let (m, v) = match &grads.grads[i] {
                None => (m, v),
                Some(g) => {
                    let g = clip.apply(g.flatten_all()?.to_dtype(DType::F32)?)?;
                    let p = var.as_tensor().flatten_all()?.to_dtype(DType::F32)?;
                    let (p2, m2, v2) = tensor_update(cfg, &p, &g, &m, v.as_ref(), lr, wd, t)?;
                    var.set(&p2.reshape(var.shape())?.to_dtype(var.dtype())?)?;
                    (m2, v2)
                }
            };
            ms.push(m);
            vs.extend(v);
        }
        self.m = Tensor::cat(&ms, 0)?;
        if self.v.is_some() {
            self.v = Some(Tensor::cat(&vs, 0)?);
        }
        Ok(())
    }
}

/// One AdamW or SGD update in tensor ops on flat f32 tensors (one parameter, or a group's
/// concatenation): the new parameter, first moment and second moment. The rule of
/// [`FusedStep`], with its constants rounded to f32 the same way (1 - β₂ in f32 is 1.3e-5 off
/// 0.001), so that both paths agree to float rounding.
#[allow(clippy::too_many_arguments)]
fn tensor_update(
    cfg: &OptimConfig,
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: Option<&Tensor>,
    lr: f64,
    wd: f64,
    t: i32,
) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
    let (lr, wd) = (lr as f32, wd as f32);
    match cfg.kind {
        OptimizerKind::Adamw => {
            let Some(v) = v else { candle_core::bail!("AdamW update without a second moment") };
            let (b1, b2, eps) = (cfg.beta1 as f32, cfg.beta2 as f32, cfg.eps as f32);
            let bc1 = (1.0 - cfg.beta1.powi(t)) as f32;
            let bc2 = (1.0 - cfg.beta2.powi(t)) as f32;
            let m2 = (m.affine(b1 as f64, 0.0)? + g.affine((1.0 - b1) as f64, 0.0)?)?;
            let v2 = (v.affine(b2 as f64, 0.0)? + g.sqr()?.affine((1.0 - b2) as f64, 0.0)?)?;
            // As torch's `_single_tensor_adamw`: denom = √v / √bc2 + ε, step size lr / bc1.
            let denom = v2.sqrt()?.affine(1.0 / bc2.sqrt() as f64, eps as f64)?;
            let decayed = if wd > 0.0 { p.affine((1.0 - lr * wd) as f64, 0.0)? } else { p.clone() };
            let p2 = (decayed - m2.div(&denom)?.affine((lr / bc1) as f64, 0.0)?)?;
            Ok((p2, m2, Some(v2)))
        }
        OptimizerKind::Sgd => {
            let d = if wd > 0.0 { (g + p.affine(wd as f64, 0.0)?)? } else { g.clone() };
            let (step, m2) = if cfg.momentum > 0.0 {
                let buf = if t == 1 { d } else { (m.affine(cfg.momentum as f32 as f64, 0.0)? + d)? };
                (buf.clone(), buf)
            } else {
                (d, m.clone())
            };
            Ok(((p - step.affine(lr as f64, 0.0)?)?, m2, None))
        }
    }
}

/// Rows of the first stage of [`sum_sq`]: one GPU block per row of this many values (a plain
/// `sum_all` runs one block over everything).
const REDUCE_ROW: usize = 4096;

/// Σ x² of a flat f32 tensor, as a scalar on its device, in two stages.
fn sum_sq(flat: &Tensor) -> candle_core::Result<Tensor> {
    let sq = flat.sqr()?;
    let n = sq.elem_count();
    let rows = n / REDUCE_ROW;
    if rows < 2 {
        return sq.sum_all();
    }
    let head = sq.narrow(0, 0, rows * REDUCE_ROW)?.reshape((rows, REDUCE_ROW))?.sum(1)?.sum_all()?;
    if rows * REDUCE_ROW == n {
        return Ok(head);
    }
    head + sq.narrow(0, rows * REDUCE_ROW, n - rows * REDUCE_ROW)?.sum_all()?
}

/// The sum of per-group Σ g² scalars, on the first one's device (`None` when there are none).
fn device_total(sums: &[Tensor]) -> candle_core::Result<Option<Tensor>> {
    let mut total: Option<Tensor> = None;
    for s in sums {
        total = Some(match total {
            None => s.clone(),
            Some(t) => (&t + s.to_device(t.device())?)?,
        });
    }
    Ok(total)
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

/// Runs `f(lo..hi)` over `0..n` in chunks on rayon's pool, the one gemm and the model's
/// kernels use (inline when small). candle's barrier pool, used here before, has no thread
/// besides the caller's by default (`trainer::perf`), so the update ran on one core.
fn par_chunks(n: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    if n <= 2 * CHUNK {
        f(0..n);
        return;
    }
    super::perf::par_ranges(n.div_ceil(CHUNK), |r| {
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
        for (d, s) in contiguous_f32_mut(s1, l1, src.len(), "add-assign")?.iter_mut().zip(src) {
            *d += s;
        }
        Ok(())
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
        let p = contiguous_f32_mut(s1, l1, g.len(), "optimizer step (parameter)")?;
        let mut m = self.m.borrow_mut();
        let mut v = self.v.borrow_mut();
        let n = g.len();
        if m.len() != n || (self.kind == OptimizerKind::Adamw && v.len() != n) {
            candle_core::bail!("optimizer step: state of {} values for a parameter of {n}", m.len());
        }
        // Disjoint chunks of p, m, v on the thread pool (addresses passed as usize).
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
            let g = Tensor::from_slice(g, v.shape(), &Device::Cpu).unwrap();
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
        assert!(matches!(info.grad_norm, GradNorm::Host(_)));
        assert!((info.grad_norm.value().unwrap() - 5.0).abs() < 1e-9);
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

    /// Parameters of both kinds (decayed weights, a bias and a LayerNorm weight without
    /// decay), one large enough for the two-stage norm reduction with a ragged tail.
    fn mixed_params() -> Vec<(String, Vec<f32>, Vec<usize>)> {
        let big = 3 * REDUCE_ROW + 77;
        let vals = |n: usize, k: f32| {
            (0..n).map(|i| (if i % 2 == 0 { 1.0 } else { -1.0 }) * (0.5 + k * ((i % 97) as f32) / 97.0)).collect::<Vec<f32>>()
        };
        vec![
            ("encoder.dense.weight".into(), vals(12, 0.3), vec![3, 4]),
            ("encoder.dense.bias".into(), vals(3, 0.7), vec![3]),
            ("encoder.LayerNorm.weight".into(), vals(4, 0.2), vec![4]),
            ("encoder.big.weight".into(), vals(big, 0.9), vec![big]),
        ]
    }

    /// Fresh variables (copies) for `mixed_params`.
    fn mixed_vars() -> Vec<(String, Var)> {
        mixed_params().into_iter().map(|(n, v, shape)| (n, Var::from_vec(v, shape, &Device::Cpu).unwrap())).collect()
    }

    /// The gradient of step `k` for parameter `j`: changes with both, differs in scale per
    /// step so that clipping to 2.0 applies in some steps and not in others.
    fn mixed_grad(k: usize, j: usize, n: usize) -> Vec<f32> {
        let amp = [0.001f32, 0.05, 0.0005, 0.08, 0.002][k % 5];
        (0..n).map(|i| amp * (((i * 7 + j * 13 + k * 31) % 23) as f32 - 11.0) / 11.0).collect()
    }

    /// Runs `steps` steps on `vars`; in step 2 the decayed `[3, 4]` weight and the bias get no
    /// gradient (the flat path's per-parameter fallback). Returns the gradient norms.
    fn run_steps(opt: &mut Optimizer, vars: &[(String, Var)], steps: std::ops::Range<usize>, max_norm: f64) -> Vec<f64> {
        let mut norms = Vec::new();
        for k in steps {
            let mut with: Vec<&Var> = Vec::new();
            let mut gs: Vec<Vec<f32>> = Vec::new();
            for (j, (_, v)) in vars.iter().enumerate() {
                if k == 2 && j < 2 {
                    continue;
                }
                with.push(v);
                gs.push(mixed_grad(k, j, v.elem_count()));
            }
            let refs: Vec<&[f32]> = gs.iter().map(|g| g.as_slice()).collect();
            let g = grads_of(opt, &with, &refs);
            let info = opt.step(&g, 0.01 * (1.0 + k as f64), max_norm).unwrap();
            norms.push(info.grad_norm.value().unwrap());
        }
        norms
    }

    fn values(vars: &[(String, Var)]) -> Vec<Vec<f32>> {
        vars.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
    }

    fn assert_close(a: &[Vec<f32>], b: &[Vec<f32>], tol: f64, what: &str) {
        for (j, (a, b)) in a.iter().zip(b).enumerate() {
            assert_eq!(a.len(), b.len());
            for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
                let rel = (x as f64 - y as f64).abs() / (x.abs().max(y.abs()) as f64).max(1e-12);
                assert!(rel <= tol, "{what}: parameter {j} element {i}: {x} vs {y} (relative {rel:e})");
            }
        }
    }

    /// The flat multi-tensor path (the GPU's), forced on CPU tensors, gives the host path's
    /// parameters: AdamW and SGD with momentum, decay and no-decay groups, clipping in some
    /// steps, and a step where two parameters have no gradient.
    #[test]
    fn flat_path_matches_host_path() {
        for cfg in [OptimConfig::new(OptimizerKind::Adamw, 0.1, 0.0), OptimConfig::new(OptimizerKind::Sgd, 0.1, 0.9)] {
            let (hv, fv) = (mixed_vars(), mixed_vars());
            let mut host = Optimizer::with_path(hv.clone(), cfg, false).unwrap();
            let mut flat = Optimizer::with_path(fv.clone(), cfg, true).unwrap();
            assert!(host.groups.is_empty());
            assert_eq!(flat.groups.len(), 2, "a decay and a no-decay group");
            let start = values(&hv);
            let hn = run_steps(&mut host, &hv, 0..5, 2.0);
            let fnorm = run_steps(&mut flat, &fv, 0..5, 2.0);
            assert!(hn.iter().any(|&n| n > 2.0) && hn.iter().any(|&n| n < 2.0), "clipping in some steps only: {hn:?}");
            for (a, b) in hn.iter().zip(&fnorm) {
                assert!((a - b).abs() <= 1e-6 * a, "norm {a} vs {b}");
            }
            assert_eq!(host.steps_done(), flat.steps_done());
            let (h, f) = (values(&hv), values(&fv));
            assert_close(&h, &f, 1e-6, &format!("{:?}", cfg.kind));
            // the skipped parameters moved in the other steps (the comparison is not vacuous)
            assert!(h.iter().zip(&start).all(|(a, b)| a != b));
        }
    }

    /// The flat path's device norm: no read inside `step`, the value on request.
    #[test]
    fn flat_path_returns_the_norm_as_a_tensor() {
        let (n1, a) = var("a", &[0.0]);
        let (n2, b) = var("b", &[0.0]);
        let mut opt =
            Optimizer::with_path(vec![(n1, a.clone()), (n2, b.clone())], OptimConfig::new(OptimizerKind::Sgd, 0.0, 0.0), true).unwrap();
        let g = grads_of(&opt, &[&a, &b], &[&[3.0], &[4.0]]);
        let info = opt.step(&g, 1.0, 1.0).unwrap();
        let GradNorm::Device(t) = &info.grad_norm else { panic!("{:?}", info.grad_norm) };
        assert!((t.to_scalar::<f32>().unwrap() - 5.0).abs() < 1e-6);
        let pa = a.as_tensor().to_vec1::<f32>().unwrap()[0];
        let pb = b.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((pa as f64 + 3.0 / (5.0 + 1e-6)).abs() < 1e-6 && (pb as f64 + 4.0 / (5.0 + 1e-6)).abs() < 1e-6, "{pa} {pb}");
    }

    /// A checkpoint of one path loads into the other (same file format), and both continue
    /// as the uninterrupted run.
    #[test]
    fn state_crosses_between_host_and_flat_paths() {
        let tmp = tempfile::tempdir().unwrap();
        for cfg in [OptimConfig::new(OptimizerKind::Adamw, 0.1, 0.0), OptimConfig::new(OptimizerKind::Sgd, 0.1, 0.9)] {
            for writer_flat in [false, true] {
                let path = tmp.path().join(format!("{:?}-{writer_flat}.safetensors", cfg.kind));
                let wv = mixed_vars();
                let mut w = Optimizer::with_path(wv.clone(), cfg, writer_flat).unwrap();
                run_steps(&mut w, &wv, 0..3, 2.0);
                w.save(&path).unwrap();
                let saved = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
                let mut keys: Vec<&String> = saved.keys().collect();
                keys.sort();
                let want_keys = match cfg.kind {
                    OptimizerKind::Adamw => 2 * 4 + 1,
                    OptimizerKind::Sgd => 4 + 1,
                };
                assert_eq!(keys.len(), want_keys, "{keys:?}");
                let first = if cfg.kind == OptimizerKind::Adamw { "exp_avg" } else { "momentum_buffer" };
                assert_eq!(saved[&format!("encoder.dense.weight.{first}")].dims(), &[3, 4]);
                // the reader: the other path, on a copy of the weights
                let rv: Vec<(String, Var)> =
                    wv.iter().map(|(n, v)| (n.clone(), Var::from_tensor(&v.as_tensor().copy().unwrap()).unwrap())).collect();
                let mut r = Optimizer::with_path(rv.clone(), cfg, !writer_flat).unwrap();
                r.load(&path).unwrap();
                assert_eq!(r.steps_done(), 3);
                run_steps(&mut w, &wv, 3..5, 2.0);
                run_steps(&mut r, &rv, 3..5, 2.0);
                assert_close(&values(&wv), &values(&rv), 1e-6, &format!("{:?}, written by flat = {writer_flat}", cfg.kind));
                // without the state it would differ
                let fresh: Vec<(String, Var)> = mixed_vars();
                let mut c = Optimizer::with_path(fresh.clone(), cfg, !writer_flat).unwrap();
                run_steps(&mut c, &fresh, 0..3, 2.0);
                let mut d = Optimizer::with_path(fresh.clone(), cfg, !writer_flat).unwrap();
                run_steps(&mut d, &fresh, 3..5, 2.0);
                assert_ne!(values(&fresh), values(&rv));
            }
        }
    }
}
