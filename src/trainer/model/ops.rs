//! Differentiable fused operations for training on the CPU — layer norm, GELU (erf form, as
//! Hugging Face's `"gelu"`), scaled + masked softmax, seeded dropout, and the bias epilogues of
//! the linear layers (bias + GELU, bias + dropout + residual, bias + split into heads) — each a
//! candle custom op with a one-pass forward and its own one-pass backward over the
//! `model::kernels`, parallel on the shared CPU pool (`trainer::perf::par_ranges`).
//!
//! candle-nn's fused `layer_norm` has no backward (gradients silently stop there) and composed
//! ops allocate a tensor and a gradient per elementary step; these kernels avoid both. On CUDA
//! (the `cuda` feature) the same ops run the kernels of `model::cuda` (f32 or bf16
//! activations); on other devices or dtypes each function falls back to a composition of
//! candle ops that autograd differentiates.

use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::kernels as k;
pub use super::kernels::exp_f;

/// The f32 values of a contiguous CPU tensor; `what` names it in the error.
pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: input is not contiguous"),
    }
}

/// The f32 values of a contiguous CPU tensor to write in place, which must hold `len` of
/// them (the size of the tensor it is updated from); `what` names it in the error.
pub(crate) fn contiguous_f32_mut<'a>(s: &'a mut CpuStorage, l: &Layout, len: usize, what: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) if b - a == len => Ok(&mut v[a..b]),
        _ => bail!("{what}: expected a contiguous f32 tensor of {len} values to update in place"),
    }
}

fn fast_path(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

/// CUDA with the fused kernels: f32 or bf16 tensors, all of one dtype.
fn gpu_path(xs: &[&Tensor]) -> bool {
    cfg!(feature = "cuda")
        && xs.first().is_some_and(|x| x.device().is_cuda() && matches!(x.dtype(), DType::F32 | DType::BF16))
        && xs.iter().all(|x| x.dtype() == xs[0].dtype())
}

/// Either fused path: the CPU's (f32) or CUDA's.
fn fused(xs: &[&Tensor]) -> bool {
    xs.first().is_some_and(|x| fast_path(x)) || gpu_path(xs)
}

#[cfg(feature = "cuda")]
use super::cuda as gpu;
#[cfg(feature = "cuda")]
use candle_core::CudaStorage;

// ---------------------------------------------------------------- parallel helpers

const PAR_MIN: usize = 32 * 1024;

/// Fills `out` in parallel chunks: `f(offset, chunk)`.
fn par_elems(out: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync) {
    let n = out.len();
    if n < 2 * PAR_MIN {
        f(0, out);
        return;
    }
    let chunk = PAR_MIN / 2;
    let units = n.div_ceil(chunk);
    let ptr = out.as_mut_ptr() as usize;
    crate::trainer::perf::par_ranges(units, |r| {
        for u in r {
            let lo = u * chunk;
            let hi = n.min(lo + chunk);
            // SAFETY: units are disjoint ranges of `out`, which outlives the call.
            let o = unsafe { std::slice::from_raw_parts_mut((ptr as *mut f32).add(lo), hi - lo) };
            f(lo, o);
        }
    });
}

/// Fills `out` (rows of `k`) in parallel blocks of whole rows: `f(first_row, rows)`.
fn par_rows(out: &mut [f32], k: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let n = out.len();
    if k == 0 {
        return;
    }
    if n < 2 * PAR_MIN {
        f(0, out);
        return;
    }
    let rows = n / k;
    let rows_per_unit = (PAR_MIN / 4 / k).max(1);
    let units = rows.div_ceil(rows_per_unit);
    let ptr = out.as_mut_ptr() as usize;
    crate::trainer::perf::par_ranges(units, |r| {
        for u in r {
            let r0 = u * rows_per_unit;
            let r1 = rows.min(r0 + rows_per_unit);
            // SAFETY: units are disjoint row blocks of `out`.
            let o = unsafe { std::slice::from_raw_parts_mut((ptr as *mut f32).add(r0 * k), (r1 - r0) * k) };
            f(r0, o);
        }
    });
}

/// Splits a packed 1-D result into tensors of the given shapes.
fn unpack(packed: &Tensor, shapes: &[&Shape]) -> Result<Vec<Tensor>> {
    let mut off = 0;
    let mut out = Vec::with_capacity(shapes.len());
    for s in shapes {
        let n = s.elem_count();
        out.push(packed.narrow(0, off, n)?.reshape(*s)?);
        off += n;
    }
    Ok(out)
}

// ---------------------------------------------------------------- layer norm

/// Layer norm over the last dimension with affine weight `gamma` and bias `beta`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(&[x, gamma, beta]) && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, LayerNormOp { eps: eps as f32 })
    } else {
        layer_norm_composed(x, gamma, beta, eps)
    }
}

/// The same layer norm composed of elementary candle ops (differentiated by autograd); the
/// reference for the fused kernel's tests and the path on non-CPU devices.
pub fn layer_norm_composed(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = xc.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(gamma)?.broadcast_add(beta)
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "sft-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "layer norm x")?;
        let g = contiguous_f32(s2, l2, "layer norm gamma")?;
        let b = contiguous_f32(s3, l3, "layer norm beta")?;
        let h = g.len();
        if h == 0 || b.len() != h || x.len() % h != 0 {
            bail!("layer norm: shapes {:?} {:?} {:?} do not match", l1.shape(), l2.shape(), l3.shape())
        }
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, h, |r0, o| k::layer_norm_rows(&x[r0 * h..r0 * h + o.len()], g, b, self.eps, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        Ok((gpu::layer_norm((s1, l1), (s2, l2), (s3, l3), self.eps)?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormBwdOp { eps: self.eps })?;
        let mut v = unpack(&packed, &[x.shape(), gamma.shape(), gamma.shape()])?.into_iter();
        Ok((v.next(), v.next(), v.next()))
    }
}

/// Backward of [`LayerNormOp`]: `dx` (flattened), then `dgamma`, then `dbeta`, packed in one
/// 1-D tensor so one op computes all three.
struct LayerNormBwdOp {
    eps: f32,
}

impl CustomOp3 for LayerNormBwdOp {
    fn name(&self) -> &'static str {
        "sft-layer-norm-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "layer norm bwd x")?;
        let g = contiguous_f32(s2, l2, "layer norm bwd gamma")?;
        let dy = contiguous_f32(s3, l3, "layer norm bwd grad")?;
        let h = g.len();
        let n = x.len();
        if dy.len() != n || h == 0 || n % h != 0 {
            bail!("layer norm bwd: grad shape {:?} vs x {:?}", l3.shape(), l1.shape())
        }
        let mut out = vec![0f32; n + 2 * h];
        let (dx, rest) = out.split_at_mut(n);
        let (dg, db) = rest.split_at_mut(h);
        par_rows(dx, h, |r0, o| {
            let len = o.len();
            k::layer_norm_bwd_rows(&x[r0 * h..r0 * h + len], g, &dy[r0 * h..r0 * h + len], self.eps, o)
        });
        let mut scratch = vec![0f32; h];
        k::layer_norm_param_grads(x, dy, h, self.eps, dg, db, &mut scratch);
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * h)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let n = l1.shape().elem_count() + 2 * l2.shape().elem_count();
        Ok((gpu::layer_norm_bwd((s1, l1), (s2, l2), (s3, l3), self.eps)?, Shape::from(n)))
    }
}

// ---------------------------------------------------------------- GELU

/// GELU, erf form: `0.5 x (1 + erf(x / sqrt 2))` (Hugging Face `"gelu"`).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fast_path(x) {
        x.contiguous()?.apply_op1(GeluOp)
    } else {
        x.gelu_erf()
    }
}

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "sft-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "gelu")?;
        let mut out = vec![0f32; x.len()];
        par_elems(&mut out, |off, o| k::gelu_slice(&x[off..off + o.len()], &[], o));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluBwdOp)?))
    }
}

struct GeluBwdOp;

impl CustomOp2 for GeluBwdOp {
    fn name(&self) -> &'static str {
        "sft-gelu-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "gelu bwd x")?;
        let dy = contiguous_f32(s2, l2, "gelu bwd grad")?;
        if x.len() != dy.len() {
            bail!("gelu bwd: shapes {:?} {:?}", l1.shape(), l2.shape())
        }
        let mut out = vec![0f32; x.len()];
        par_elems(&mut out, |off, o| {
            let len = o.len();
            k::gelu_slice(&x[off..off + len], &dy[off..off + len], o)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------- masked softmax

/// `softmax(scores * scale + mask)` over the last dimension, for attention scores
/// `[batch, heads, q, k]` and an additive key mask `[batch, k]` (0 keep, large negative drop).
pub fn masked_softmax(scores: &Tensor, mask: &Tensor, scale: f64) -> Result<Tensor> {
    if fast_path(scores) {
        scores.contiguous()?.apply_op2(&mask.contiguous()?, MaskedSoftmaxOp { scale: scale as f32 })
    } else {
        // In f32 whatever the scores' dtype (bf16 softmax loses the small probabilities).
        let (b, _, _, k) = scores.dims4()?;
        let mask = mask.to_dtype(DType::F32)?.reshape((b, 1, 1, k))?;
        let x = (scores.to_dtype(DType::F32)? * scale)?.broadcast_add(&mask)?;
        candle_nn::ops::softmax(&x, D::Minus1)?.to_dtype(scores.dtype())
    }
}

/// `dropout(softmax(scores * scale + mask))`: attention probabilities with their dropout. On
/// CUDA one kernel, and one for the backward (which recomputes the probabilities from the
/// scores instead of keeping them); elsewhere [`masked_softmax`] then [`DropMask::apply`].
pub fn masked_softmax_dropout(scores: &Tensor, mask: &Tensor, scale: f64, drop: DropMask) -> Result<Tensor> {
    if gpu_path(&[scores]) {
        masked_softmax_dropout_fused(scores, mask, scale, drop)
    } else {
        drop.apply(&masked_softmax(scores, mask, scale)?)
    }
}

/// [`masked_softmax_dropout`] as one custom op on any device (the CPU's version is the
/// reference of the CUDA kernel's tests).
pub(crate) fn masked_softmax_dropout_fused(scores: &Tensor, mask: &Tensor, scale: f64, drop: DropMask) -> Result<Tensor> {
    let (b, _, _, k) = scores.dims4()?;
    let mask = mask.to_dtype(DType::F32)?.reshape((b, k))?.contiguous()?;
    scores.contiguous()?.apply_op2(&mask, MaskedSoftmaxDropOp { scale: scale as f32, drop })
}

struct MaskedSoftmaxDropOp {
    scale: f32,
    drop: DropMask,
}

/// Rows of `[b, h, q, k]` scores: (rows, k, rows per batch), checking the mask is `[b, k]`.
fn softmax_dims(scores: &Shape, mask_len: usize) -> Result<(usize, usize, usize)> {
    let dims = scores.dims();
    if dims.len() != 4 {
        bail!("masked softmax: scores must be 4-D, got {scores:?}")
    }
    let (b, kk) = (dims[0], dims[3]);
    if mask_len != b * kk {
        bail!("masked softmax: a mask of {mask_len} elements does not match scores {scores:?}")
    }
    Ok((b * dims[1] * dims[2], kk, dims[1] * dims[2]))
}

impl CustomOp2 for MaskedSoftmaxDropOp {
    fn name(&self) -> &'static str {
        "sft-masked-softmax-dropout"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "softmax scores")?;
        let m = contiguous_f32(s2, l2, "softmax mask")?;
        let (_, kk, rows_per_batch) = softmax_dims(l1.shape(), m.len())?;
        let d = self.drop;
        let mut out = x.to_vec();
        for (r, row) in out.chunks_exact_mut(kk.max(1)).enumerate() {
            let mr = &m[(r / rows_per_batch) * kk..][..kk];
            k::softmax_row(row, mr, self.scale, r * kk, d.key, d.threshold, d.scale);
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        let d = self.drop;
        Ok((gpu::masked_softmax_drop((s1, l1), (s2, l2), self.scale, d.key, d.threshold, d.scale)?, l1.shape().clone()))
    }

    fn bwd(&self, scores: &Tensor, mask: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = MaskedSoftmaxDropBwdOp { scale: self.scale, drop: self.drop };
        Ok((Some(scores.apply_op3_no_bwd(mask, &grad.contiguous()?, &op)?), None))
    }
}

/// `dx = scale * y * (dy·mask - Σ(dy·mask * y))` with `y` the softmax recomputed from the scores.
struct MaskedSoftmaxDropBwdOp {
    scale: f32,
    drop: DropMask,
}

impl CustomOp3 for MaskedSoftmaxDropBwdOp {
    fn name(&self) -> &'static str {
        "sft-masked-softmax-dropout-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "softmax bwd scores")?;
        let m = contiguous_f32(s2, l2, "softmax bwd mask")?;
        let dy = contiguous_f32(s3, l3, "softmax bwd grad")?;
        let (_, kk, rows_per_batch) = softmax_dims(l1.shape(), m.len())?;
        if dy.len() != x.len() {
            bail!("masked softmax bwd: grad {:?} vs scores {:?}", l3.shape(), l1.shape())
        }
        let d = self.drop;
        let mut out = x.to_vec();
        for (r, row) in out.chunks_exact_mut(kk.max(1)).enumerate() {
            let mr = &m[(r / rows_per_batch) * kk..][..kk];
            k::softmax_row(row, mr, self.scale, 0, 0, 0, 1.0);
            let g = &dy[r * kk..][..kk];
            let dot: f32 = (0..kk).map(|j| g[j] * d.factor(r * kk + j) * row[j]).sum();
            for j in 0..kk {
                row[j] = self.scale * row[j] * (g[j] * d.factor(r * kk + j) - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let d = self.drop;
        let dx = gpu::masked_softmax_drop_bwd((s1, l1), (s2, l2), (s3, l3), self.scale, d.key, d.threshold, d.scale)?;
        Ok((dx, l1.shape().clone()))
    }
}

struct MaskedSoftmaxOp {
    scale: f32,
}

impl CustomOp2 for MaskedSoftmaxOp {
    fn name(&self) -> &'static str {
        "sft-masked-softmax"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "softmax scores")?;
        let m = contiguous_f32(s2, l2, "softmax mask")?;
        let dims = l1.shape().dims();
        if dims.len() != 4 {
            bail!("masked softmax: scores must be 4-D, got {:?}", l1.shape())
        }
        let (b, kk) = (dims[0], dims[3]);
        if m.len() != b * kk {
            bail!("masked softmax: mask {:?} does not match scores {:?}", l2.shape(), l1.shape())
        }
        let rows_per_batch = dims[1] * dims[2];
        let mut out = x.to_vec();
        par_rows(&mut out, kk, |r0, o| {
            for (j, row) in o.chunks_exact_mut(kk).enumerate() {
                let r = r0 + j;
                let mr = &m[(r / rows_per_batch) * kk..][..kk];
                k::softmax_row(row, mr, self.scale, 0, 0, 0, 1.0);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _m: &Tensor, res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBwdOp { scale: self.scale })?;
        Ok((Some(dx), None))
    }
}

/// `dx = scale * y * (dy - sum(dy * y))` row by row.
struct SoftmaxBwdOp {
    scale: f32,
}

impl CustomOp2 for SoftmaxBwdOp {
    fn name(&self) -> &'static str {
        "sft-softmax-bwd"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, "softmax bwd y")?;
        let dy = contiguous_f32(s2, l2, "softmax bwd grad")?;
        let kk = *l1.shape().dims().last().unwrap_or(&1);
        if y.len() != dy.len() || kk == 0 {
            bail!("softmax bwd: shapes {:?} {:?}", l1.shape(), l2.shape())
        }
        let mut out = vec![0f32; y.len()];
        par_rows(&mut out, kk, |r0, o| {
            let len = o.len();
            k::softmax_bwd_rows(&y[r0 * kk..r0 * kk + len], &dy[r0 * kk..r0 * kk + len], kk, self.scale, o)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------- dropout

/// Seeded dropout. Each call draws a fresh 32-bit key from a ChaCha8 stream; the keep mask is
/// a hash of (key, element index), so the backward pass regenerates it instead of storing it.
/// Elements are zeroed with probability `p`, the rest scaled by `1 / (1 - p)`.
pub struct Dropout {
    rng: Mutex<ChaCha8Rng>,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Self { rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)) }
    }

    /// A fresh mask for one tensor (identity when `p == 0`).
    pub fn mask(&self, p: f64) -> DropMask {
        if p <= 0.0 {
            return DropMask::none();
        }
        let mut rng = match self.rng.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        DropMask::new(p, rng.next_u32())
    }

    /// Applies dropout with probability `p` (identity when `p == 0`).
    pub fn apply(&self, xs: &Tensor, p: f64) -> Result<Tensor> {
        self.mask(p).apply(xs)
    }

    /// Restarts the stream from `seed`.
    pub fn reseed(&self, seed: u64) {
        let mut rng = match self.rng.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        *rng = ChaCha8Rng::seed_from_u64(seed);
    }
}

/// One dropout mask: element `i` is kept iff `hash(i, key) >= threshold`.
#[derive(Debug, Clone, Copy)]
pub struct DropMask {
    pub(crate) threshold: u32,
    pub(crate) key: u32,
    pub(crate) scale: f32,
}

impl DropMask {
    pub fn none() -> Self {
        Self { threshold: 0, key: 0, scale: 1.0 }
    }

    pub fn new(p: f64, key: u32) -> Self {
        let threshold = (p.min(1.0) * 4_294_967_296.0).min(4_294_967_295.0) as u32;
        if p <= 0.0 || threshold == 0 {
            return Self::none();
        }
        let scale = if p >= 1.0 { 0.0 } else { (1.0 / (1.0 - p)) as f32 };
        Self { threshold, key: k::keep_hash(key, 0x2545_f491), scale }
    }

    pub fn is_identity(&self) -> bool {
        self.threshold == 0
    }

    /// The multiplier of element `i` (0 or `1 / (1 - p)`).
    #[inline(always)]
    pub fn factor(&self, i: usize) -> f32 {
        if self.threshold == 0 {
            1.0
        } else {
            k::drop_factor(i, self.key, self.threshold, self.scale)
        }
    }

    /// `xs * mask`, differentiable (the backward multiplies by the same mask).
    pub fn apply(&self, xs: &Tensor) -> Result<Tensor> {
        if self.is_identity() {
            return Ok(xs.clone());
        }
        if fused(&[xs]) {
            xs.contiguous()?.apply_op1(DropoutOp { mask: *self })
        } else if !xs.device().is_cpu() {
            // Other GPUs: the mask is drawn there (the device's generator): building it on the
            // host and copying it over would cost more than the layer. Autograd keeps it for
            // the backward.
            let keep_p = 1.0 - self.threshold as f64 / 4_294_967_296.0;
            let u = Tensor::rand(0f32, 1f32, xs.shape(), xs.device())?;
            let m = (u.lt(keep_p)?.to_dtype(DType::F32)? * self.scale as f64)?.to_dtype(xs.dtype())?;
            xs.mul(&m)
        } else {
            let n = xs.elem_count();
            let m: Vec<f32> = (0..n).map(|i| self.factor(i)).collect();
            let m = Tensor::from_vec(m, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
            xs.mul(&m)
        }
    }
}

struct DropoutOp {
    mask: DropMask,
}

impl CustomOp1 for DropoutOp {
    fn name(&self) -> &'static str {
        "sft-dropout"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "dropout")?;
        let mut out = vec![0f32; x.len()];
        let m = self.mask;
        par_elems(&mut out, |off, o| k::drop_mul(&x[off..off + o.len()], o, off, m.key, m.threshold, m.scale));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let m = self.mask;
        Ok((gpu::drop_mul((s, l), m.key, m.threshold, m.scale)?, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&DropoutOp { mask: self.mask })?))
    }
}

// ---------------------------------------------------------------- fused bias epilogues

/// `gelu(xw + b)` for the feed-forward intermediate; `xw` = `x Wᵀ` `[.., n]`, `b` `[n]`.
pub fn bias_gelu(xw: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused(&[xw, b]) {
        xw.contiguous()?.apply_op2(&b.contiguous()?, BiasGeluOp)
    } else {
        gelu(&xw.broadcast_add(b)?)
    }
}

/// `dropout(xw + b) + residual` (attention output and feed-forward output, before LayerNorm).
pub fn bias_dropout_residual(xw: &Tensor, b: &Tensor, residual: &Tensor, mask: DropMask) -> Result<Tensor> {
    if fused(&[xw, b, residual]) {
        xw.contiguous()?.apply_op3(&b.contiguous()?, &residual.contiguous()?, BiasDropResOp { mask })
    } else {
        mask.apply(&xw.broadcast_add(b)?)? + residual
    }
}

/// `(xw + b)` `[batch, seq, heads*d]` rearranged to `[batch, heads, seq, d]` (contiguous).
pub fn bias_split_heads(xw: &Tensor, b: &Tensor, heads: usize) -> Result<Tensor> {
    let (bs, s, h) = xw.dims3()?;
    if fast_path(xw) {
        xw.contiguous()?.apply_op2(b, SplitHeadsOp { heads })
    } else {
        xw.broadcast_add(b)?.reshape((bs, s, heads, h / heads))?.transpose(1, 2)?.contiguous()
    }
}

struct BiasGeluOp;

impl CustomOp2 for BiasGeluOp {
    fn name(&self) -> &'static str {
        "sft-bias-gelu"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "bias gelu x")?;
        let b = contiguous_f32(s2, l2, "bias gelu b")?;
        let kk = b.len();
        if kk == 0 || x.len() % kk != 0 {
            bail!("bias gelu: shapes {:?} {:?}", l1.shape(), l2.shape())
        }
        let mut out = vec![0f32; x.len()];
        par_rows(&mut out, kk, |r0, o| k::bias_gelu_rows(&x[r0 * kk..r0 * kk + o.len()], b, o));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s1: &CudaStorage, l1: &Layout, s2: &CudaStorage, l2: &Layout) -> Result<(CudaStorage, Shape)> {
        Ok((gpu::bias_gelu((s1, l1), (s2, l2))?, l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = x.apply_op3_no_bwd(b, &grad.contiguous()?, &BiasGeluBwdOp)?;
        let mut v = unpack(&packed, &[x.shape(), b.shape()])?.into_iter();
        Ok((v.next(), v.next()))
    }
}

/// Packed `[dx (n), db (k)]`.
struct BiasGeluBwdOp;

impl CustomOp3 for BiasGeluBwdOp {
    fn name(&self) -> &'static str {
        "sft-bias-gelu-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "bias gelu bwd x")?;
        let b = contiguous_f32(s2, l2, "bias gelu bwd b")?;
        let dy = contiguous_f32(s3, l3, "bias gelu bwd grad")?;
        let (n, kk) = (x.len(), b.len());
        if dy.len() != n || kk == 0 || n % kk != 0 {
            bail!("bias gelu bwd: shapes {:?} {:?}", l1.shape(), l3.shape())
        }
        let mut out = vec![0f32; n + kk];
        let (dx, db) = out.split_at_mut(n);
        par_rows(dx, kk, |r0, o| {
            let len = o.len();
            k::bias_gelu_bwd_rows(&x[r0 * kk..r0 * kk + len], b, &dy[r0 * kk..r0 * kk + len], o)
        });
        k::col_sums(dx, db);
        Ok((CpuStorage::F32(out), Shape::from(n + kk)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let n = l1.shape().elem_count() + l2.shape().elem_count();
        Ok((gpu::bias_gelu_bwd((s1, l1), (s2, l2), (s3, l3))?, Shape::from(n)))
    }
}

struct BiasDropResOp {
    mask: DropMask,
}

impl CustomOp3 for BiasDropResOp {
    fn name(&self) -> &'static str {
        "sft-bias-dropout-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "bias dropout x")?;
        let b = contiguous_f32(s2, l2, "bias dropout b")?;
        let r = contiguous_f32(s3, l3, "bias dropout residual")?;
        let kk = b.len();
        if kk == 0 || x.len() % kk != 0 || r.len() != x.len() {
            bail!("bias dropout residual: shapes {:?} {:?} {:?}", l1.shape(), l2.shape(), l3.shape())
        }
        let mut out = vec![0f32; x.len()];
        let m = self.mask;
        par_rows(&mut out, kk, |r0, o| {
            let (lo, hi) = (r0 * kk, r0 * kk + o.len());
            k::bias_drop_res_rows(&x[lo..hi], b, &r[lo..hi], o, lo, m.key, m.threshold, m.scale)
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &CudaStorage,
        l1: &Layout,
        s2: &CudaStorage,
        l2: &Layout,
        s3: &CudaStorage,
        l3: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let m = self.mask;
        Ok((gpu::bias_drop_res((s1, l1), (s2, l2), (s3, l3), m.key, m.threshold, m.scale)?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        b: &Tensor,
        _r: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let packed = grad.contiguous()?.apply_op1_no_bwd(&MaskColSumOp { mask: self.mask, k: b.elem_count() })?;
        let mut v = unpack(&packed, &[x.shape(), b.shape()])?.into_iter();
        Ok((v.next(), v.next(), Some(grad.clone())))
    }
}

/// Packed `[dy * mask (n), column sums of it (k)]`.
struct MaskColSumOp {
    mask: DropMask,
    k: usize,
}

impl CustomOp1 for MaskColSumOp {
    fn name(&self) -> &'static str {
        "sft-mask-colsum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let dy = contiguous_f32(s, l, "mask colsum")?;
        let (n, kk) = (dy.len(), self.k);
        if kk == 0 || n % kk != 0 {
            bail!("mask colsum: {:?} is not a multiple of {kk}", l.shape())
        }
        let mut out = vec![0f32; n + kk];
        let (dx, db) = out.split_at_mut(n);
        let m = self.mask;
        if m.is_identity() {
            dx.copy_from_slice(dy);
        } else {
            par_elems(dx, |off, o| k::drop_mul(&dy[off..off + o.len()], o, off, m.key, m.threshold, m.scale));
        }
        k::col_sums(dx, db);
        Ok((CpuStorage::F32(out), Shape::from(n + kk)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let m = self.mask;
        let n = l.shape().elem_count() + self.k;
        Ok((gpu::mask_colsum((s, l), self.k, m.key, m.threshold, m.scale)?, Shape::from(n)))
    }
}

struct SplitHeadsOp {
    heads: usize,
}

impl CustomOp2 for SplitHeadsOp {
    fn name(&self) -> &'static str {
        "sft-bias-split-heads"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "split heads x")?;
        let b = contiguous_f32(s2, l2, "split heads b")?;
        let dims = l1.shape().dims();
        if dims.len() != 3 || b.len() != dims[2] || !dims[2].is_multiple_of(self.heads) {
            bail!("split heads: shapes {:?} {:?}", l1.shape(), l2.shape())
        }
        let (bs, s, h) = (dims[0], dims[1], dims[2]);
        let nh = self.heads;
        let d = h / nh;
        let mut out = vec![0f32; x.len()];
        // out[bi, hi, si, :] = x[bi, si, hi*d..] + b[hi*d..]; rows of out are (bi, hi, si).
        par_rows(&mut out, d, |r0, o| {
            for (j, orow) in o.chunks_exact_mut(d).enumerate() {
                let row = r0 + j;
                let si = row % s;
                let hi = (row / s) % nh;
                let bi = row / (s * nh);
                let src = &x[(bi * s + si) * h + hi * d..][..d];
                let bb = &b[hi * d..][..d];
                for i in 0..d {
                    orow[i] = src[i] + bb[i];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((bs, nh, s, d))))
    }

    fn bwd(&self, x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = grad.contiguous()?.apply_op1_no_bwd(&MergeHeadsColSumOp)?;
        let mut v = unpack(&packed, &[x.shape(), b.shape()])?.into_iter();
        Ok((v.next(), v.next()))
    }
}

/// `[b, nh, s, d]` → packed `[merged [b, s, nh*d] (n), column sums (nh*d)]`.
struct MergeHeadsColSumOp;

impl CustomOp1 for MergeHeadsColSumOp {
    fn name(&self) -> &'static str {
        "sft-merge-heads-colsum"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(st, l, "merge heads")?;
        let (_bs, nh, s, d) = l.shape().dims4()?;
        let h = nh * d;
        let n = g.len();
        let mut out = vec![0f32; n + h];
        let (dx, db) = out.split_at_mut(n);
        // dx rows are (bi, si) of length h.
        par_rows(dx, h, |r0, o| {
            for (j, orow) in o.chunks_exact_mut(h).enumerate() {
                let row = r0 + j;
                let (bi, si) = (row / s, row % s);
                for hi in 0..nh {
                    let src = &g[((bi * nh + hi) * s + si) * d..][..d];
                    orow[hi * d..(hi + 1) * d].copy_from_slice(src);
                }
            }
        });
        k::col_sums(dx, db);
        Ok((CpuStorage::F32(out), Shape::from(n + h)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| (rng.next_u32() as f32 / u32::MAX as f32) * 4.0 - 2.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Reference: autograd through `layer_norm_composed` (elementary candle ops).
    #[test]
    fn layer_norm_forward_and_backward_match_composed_autograd() {
        let x = Var::from_tensor(&randn(&[3, 5, 16], 1)).unwrap();
        let g = Var::from_tensor(&(randn(&[16], 2) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&randn(&[16], 3)).unwrap();
        let w = randn(&[3, 5, 16], 4); // weights of the scalar loss sum(w * y)
        let y1 = layer_norm(&x, &g, &b, 1e-5).unwrap();
        let y2 = layer_norm_composed(&x, &g, &b, 1e-5).unwrap();
        assert!(max_abs_diff(&y1, &y2) < 1e-5);
        let g1 = (&y1 * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&y2 * &w).unwrap().sum_all().unwrap().backward().unwrap();
        for v in [&x, &g, &b] {
            let a = g1.get(v).expect("fused grad");
            let r = g2.get(v).expect("composed grad");
            assert!(max_abs_diff(a, r) < 1e-4, "grad mismatch {}", max_abs_diff(a, r));
        }
    }

    /// Reference: central finite differences of the GELU forward, and candle's `gelu_erf`.
    #[test]
    fn gelu_matches_candle_and_finite_differences() {
        let x = Var::from_tensor(&randn(&[257], 5)).unwrap();
        let y = gelu(&x).unwrap();
        assert!(max_abs_diff(&y, &x.gelu_erf().unwrap()) < 1e-6);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let dx = grads.get(&x).unwrap().to_vec1::<f32>().unwrap();
        let xs = x.to_vec1::<f32>().unwrap();
        let h = 1e-2f64;
        for (i, &v) in xs.iter().enumerate() {
            let f = |z: f64| 0.5 * z * (1.0 + candle_core::cpu::erf::erf_f64(z / 2f64.sqrt()));
            let fd = (f(v as f64 + h) - f(v as f64 - h)) / (2.0 * h);
            assert!((fd - dx[i] as f64).abs() < 1e-3, "x={v} fd={fd} got={}", dx[i]);
        }
    }

    /// Reference: candle-nn's composed softmax after scaling and masking, through autograd.
    #[test]
    fn masked_softmax_matches_composed_autograd() {
        let s = Var::from_tensor(&randn(&[2, 3, 4, 6], 6)).unwrap();
        let mask = Tensor::new(&[[0f32, 0., 0., 0., -1e4, -1e4], [0., 0., 0., 0., 0., -1e4]], &Device::Cpu).unwrap();
        let w = randn(&[2, 3, 4, 6], 7);
        let y1 = masked_softmax(&s, &mask, 0.5).unwrap();
        let x = (s.as_tensor() * 0.5).unwrap().broadcast_add(&mask.reshape((2, 1, 1, 6)).unwrap()).unwrap();
        let y2 = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        assert!(max_abs_diff(&y1, &y2) < 1e-6);
        let g1 = (&y1 * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&y2 * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_abs_diff(g1.get(&s).unwrap(), g2.get(&s).unwrap()) < 1e-5);
    }

    #[test]
    fn dropout_zeroes_about_p_and_rescales() {
        let d = Dropout::new(0);
        let x = Tensor::ones(100_000, DType::F32, &Device::Cpu).unwrap();
        let y = d.apply(&x, 0.25).unwrap().to_vec1::<f32>().unwrap();
        let zeros = y.iter().filter(|&&v| v == 0.0).count();
        assert!((24_000..26_000).contains(&zeros), "{zeros} zeros");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        let y2 = d.apply(&x, 0.25).unwrap().to_vec1::<f32>().unwrap();
        assert_ne!(y, y2, "each call draws a new mask");
        assert_eq!(d.apply(&x, 0.0).unwrap().to_vec1::<f32>().unwrap(), vec![1f32; 100_000]);
    }

    /// The backward of dropout multiplies by the same mask (gradient zero exactly where dropped).
    #[test]
    fn dropout_backward_uses_the_forward_mask() {
        let x = Var::from_tensor(&randn(&[70_000], 8)).unwrap();
        let m = DropMask::new(0.3, 99);
        let y = m.apply(&x).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        let g = g.get(&x).unwrap().to_vec1::<f32>().unwrap();
        let (yv, xv) = (y.to_vec1::<f32>().unwrap(), x.to_vec1::<f32>().unwrap());
        for i in 0..yv.len() {
            assert!((yv[i] - xv[i] * g[i]).abs() < 1e-5, "element {i}");
        }
    }

    /// Reference: the same computation composed of candle ops, through autograd.
    #[test]
    fn fused_bias_epilogues_match_composed_autograd() {
        let dev = Device::Cpu;
        let xw = Var::from_tensor(&randn(&[2, 40, 24], 10)).unwrap();
        let b = Var::from_tensor(&randn(&[24], 11)).unwrap();
        let r = Var::from_tensor(&randn(&[2, 40, 24], 12)).unwrap();
        let w = randn(&[2, 40, 24], 13);
        let w4 = randn(&[2, 4, 40, 6], 14);
        let mask = DropMask::new(0.2, 5);
        let mvals: Vec<f32> = (0..2 * 40 * 24).map(|i| mask.factor(i)).collect();
        let mt = Tensor::from_vec(mvals, (2, 40, 24), &dev).unwrap();
        let composed = [
            (gelu(&xw.broadcast_add(&b).unwrap()).unwrap() * &w).unwrap().sum_all().unwrap(),
            (((xw.broadcast_add(&b).unwrap() * &mt).unwrap() + r.as_tensor()).unwrap() * &w).unwrap().sum_all().unwrap(),
            (xw.broadcast_add(&b).unwrap().reshape((2, 40, 4, 6)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap() * &w4)
                .unwrap()
                .sum_all()
                .unwrap(),
        ];
        let fused = [
            (bias_gelu(&xw, &b).unwrap() * &w).unwrap().sum_all().unwrap(),
            (bias_dropout_residual(&xw, &b, &r, mask).unwrap() * &w).unwrap().sum_all().unwrap(),
            (bias_split_heads(&xw, &b, 4).unwrap() * &w4).unwrap().sum_all().unwrap(),
        ];
        for (i, (c, f)) in composed.iter().zip(&fused).enumerate() {
            let (cv, fv) = (c.to_scalar::<f32>().unwrap(), f.to_scalar::<f32>().unwrap());
            assert!((cv - fv).abs() < 1e-3, "op {i}: forward {cv} vs {fv}");
            let (gc, gf) = (c.backward().unwrap(), f.backward().unwrap());
            for v in [&xw, &b, &r] {
                match (gc.get(v), gf.get(v)) {
                    (Some(a), Some(bb)) => assert!(max_abs_diff(a, bb) < 1e-4, "op {i}: grad differs"),
                    (None, None) => {}
                    _ => panic!("op {i}: gradient present in one version only"),
                }
            }
        }
    }
}
