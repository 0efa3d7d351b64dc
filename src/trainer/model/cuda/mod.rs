//! CUDA launches of the fused training kernels (`kernels.cu`, compiled to PTX by `build.rs`):
//! the GPU halves of the custom ops in [`super::ops`] — layer norm and its backward, bias + GELU,
//! bias + dropout + residual, dropout, masked softmax with dropout, and the column sums their
//! backward passes need. Each takes contiguous f32 or bf16 storages (layer norm: f32) and
//! returns a fresh storage; arithmetic is f32 inside the kernels, and the dropout masks are the
//! CPU's (the same hash of the element index), so a GPU step drops what a CPU step drops.
//!
//! Composed candle ops cost one launch, one allocation and (for broadcasts) one host-to-device
//! copy of the strides per elementary step, and autograd adds a zero-fill and an add per node;
//! a MiniLM step on an H200 was ~3,600 launches. These kernels do each fused op in one or two.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaDType, CudaStorageSlice, WrapErr};
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/sft_kernels.ptx"));
const MODULE: &str = "sft_kernels";

/// An element type the kernels are instantiated for.
pub trait Elem: CudaDType + DeviceRepr + ValidAsZeroBits + Copy {
    const SUFFIX: &'static str;
}
impl Elem for f32 {
    const SUFFIX: &'static str = "f32";
}
impl Elem for half::bf16 {
    const SUFFIX: &'static str = "bf16";
}

/// Launches kernel `$name` of our PTX module with the given arguments (references).
macro_rules! launch {
    ($dev:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let name: String = $name;
        let f = $dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        let mut b = f.builder();
        $( b.arg($arg); )+
        // SAFETY: the arguments match the kernel's parameter list in kernels.cu, and every
        // buffer is at least as long as the sizes passed with it.
        unsafe { b.launch($cfg) }.w()?;
    }};
}

/// Calls `$f::<T>(args)` with `T` the element type of storage `$st` (f32 or bf16).
macro_rules! by_dtype {
    ($st:expr, $f:ident ( $($a:expr),* )) => {
        match &$st.slice {
            CudaStorageSlice::F32(_) => $f::<f32>($($a),*),
            CudaStorageSlice::BF16(_) => $f::<half::bf16>($($a),*),
            _ => bail!("fused CUDA ops take f32 or bf16 tensors, got {:?}", $st.dtype()),
        }
    };
}

type Arg<'a> = (&'a CudaStorage, &'a Layout);

fn view<'a, T: Elem>(a: Arg<'a>, what: &str) -> Result<CudaView<'a, T>> {
    let s = a.0.as_cuda_slice::<T>()?;
    match a.1.contiguous_offsets() {
        Some((lo, hi)) => Ok(s.slice(lo..hi)),
        None => bail!("{what}: input is not contiguous"),
    }
}

/// Grid-stride launch over `n` elements.
fn elems(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// One warp per row, four rows per block.
fn warp_rows(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.div_ceil(4).max(1) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 }
}

fn wrap<T: Elem>(s: candle_core::cuda_backend::cudarc::driver::CudaSlice<T>, dev: &CudaDevice) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(s, dev.clone())
}

/// `dst[col] = Σ_rows src[row, col]` (`src` `[rows, k]`), deterministic: per-chunk partial
/// sums in f32, then one pass over the chunks.
fn colsum_into<T: Elem>(dev: &CudaDevice, src: &CudaView<'_, T>, rows: u64, k: u64, dst: &mut CudaViewMut<'_, T>) -> Result<()> {
    if k == 0 {
        return Ok(());
    }
    let per_chunk: u64 = 64;
    let chunks = rows.div_ceil(per_chunk).max(1);
    // SAFETY: every element is written by the partial kernel before it is read.
    let partial = unsafe { dev.alloc::<f32>((chunks * k) as usize)? };
    let cfg = LaunchConfig { grid_dim: (k.div_ceil(128) as u32, chunks as u32, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    launch!(dev, format!("sft_colsum_partial_{}", T::SUFFIX), cfg, src, &partial, &rows, &k, &per_chunk);
    let cfg = LaunchConfig { grid_dim: (k.div_ceil(128) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
    launch!(dev, format!("sft_colsum_finish_{}", T::SUFFIX), cfg, &partial, dst, &chunks, &k);
    Ok(())
}

// ---------------------------------------------------------------- element-wise epilogues

/// `gelu(x + b)`, `b` broadcast over rows.
pub fn bias_gelu(x: Arg, b: Arg) -> Result<CudaStorage> {
    by_dtype!(x.0, bias_gelu_t(x, b))
}

fn bias_gelu_t<T: Elem>(x: Arg, b: Arg) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let (xv, bv) = (view::<T>(x, "bias gelu x")?, view::<T>(b, "bias gelu b")?);
    let (n, k) = (xv.len() as u64, bv.len() as u64);
    if k == 0 || n % k != 0 {
        bail!("bias gelu: {n} elements are not rows of {k}")
    }
    // SAFETY: the kernel writes all n elements.
    let out = unsafe { dev.alloc::<T>(n as usize)? };
    launch!(dev, format!("sft_bias_gelu_{}", T::SUFFIX), elems(n as usize), &xv, &bv, &out, &n, &k);
    Ok(wrap(out, dev))
}

/// Packed `[dx (n), db (k)]` for `gelu(x + b)` given `dy`.
pub fn bias_gelu_bwd(x: Arg, b: Arg, dy: Arg) -> Result<CudaStorage> {
    by_dtype!(x.0, bias_gelu_bwd_t(x, b, dy))
}

fn bias_gelu_bwd_t<T: Elem>(x: Arg, b: Arg, dy: Arg) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let (xv, bv, gv) = (view::<T>(x, "bias gelu bwd x")?, view::<T>(b, "bias gelu bwd b")?, view::<T>(dy, "bias gelu bwd grad")?);
    let (n, k) = (xv.len() as u64, bv.len() as u64);
    if k == 0 || n % k != 0 || gv.len() as u64 != n {
        bail!("bias gelu bwd: {n} elements, bias {k}, grad {}", gv.len())
    }
    // SAFETY: the kernels write dx (n) and db (k).
    let mut out = unsafe { dev.alloc::<T>((n + k) as usize)? };
    {
        let mut dx = out.slice_mut(0..n as usize);
        launch!(dev, format!("sft_bias_gelu_bwd_{}", T::SUFFIX), elems(n as usize), &xv, &bv, &gv, &mut dx, &n, &k);
    }
    col_sums_of_head(dev, &mut out, n, k)?;
    Ok(wrap(out, dev))
}

/// For a packed `[dx (n), db (k)]` buffer whose `dx` is written: `db = column sums of dx`.
fn col_sums_of_head<T: Elem>(
    dev: &CudaDevice,
    out: &mut candle_core::cuda_backend::cudarc::driver::CudaSlice<T>,
    n: u64,
    k: u64,
) -> Result<()> {
    // dx (read by the partial pass) and db (written by the finish pass) are disjoint ranges
    // of the one buffer.
    let (head, mut tail) = out.split_at_mut(n as usize);
    let head = head.slice(0..n as usize);
    colsum_into(dev, &head, n / k.max(1), k, &mut tail)
}

/// `(x + b) * drop + r`.
pub fn bias_drop_res(x: Arg, b: Arg, r: Arg, key: u32, threshold: u32, scale: f32) -> Result<CudaStorage> {
    by_dtype!(x.0, bias_drop_res_t(x, b, r, key, threshold, scale))
}

fn bias_drop_res_t<T: Elem>(x: Arg, b: Arg, r: Arg, key: u32, threshold: u32, scale: f32) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let (xv, bv, rv) = (view::<T>(x, "bias dropout x")?, view::<T>(b, "bias dropout b")?, view::<T>(r, "bias dropout residual")?);
    let (n, k) = (xv.len() as u64, bv.len() as u64);
    if k == 0 || n % k != 0 || rv.len() as u64 != n {
        bail!("bias dropout residual: {n} elements, bias {k}, residual {}", rv.len())
    }
    // SAFETY: the kernel writes all n elements.
    let out = unsafe { dev.alloc::<T>(n as usize)? };
    launch!(dev, format!("sft_bias_drop_res_{}", T::SUFFIX), elems(n as usize), &xv, &bv, &rv, &out, &n, &k, &key, &threshold, &scale);
    Ok(wrap(out, dev))
}

/// `x * drop`.
pub fn drop_mul(x: Arg, key: u32, threshold: u32, scale: f32) -> Result<CudaStorage> {
    by_dtype!(x.0, drop_mul_t(x, key, threshold, scale))
}

fn drop_mul_t<T: Elem>(x: Arg, key: u32, threshold: u32, scale: f32) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let xv = view::<T>(x, "dropout x")?;
    let n = xv.len() as u64;
    // SAFETY: the kernel writes all n elements.
    let out = unsafe { dev.alloc::<T>(n as usize)? };
    launch!(dev, format!("sft_drop_mul_{}", T::SUFFIX), elems(n as usize), &xv, &out, &n, &key, &threshold, &scale);
    Ok(wrap(out, dev))
}

/// Packed `[dy * drop (n), its column sums (k)]`.
pub fn mask_colsum(dy: Arg, k: usize, key: u32, threshold: u32, scale: f32) -> Result<CudaStorage> {
    by_dtype!(dy.0, mask_colsum_t(dy, k, key, threshold, scale))
}

fn mask_colsum_t<T: Elem>(dy: Arg, k: usize, key: u32, threshold: u32, scale: f32) -> Result<CudaStorage> {
    let dev = &dy.0.device;
    let gv = view::<T>(dy, "mask colsum grad")?;
    let (n, k) = (gv.len() as u64, k as u64);
    if k == 0 || n % k != 0 {
        bail!("mask colsum: {n} elements are not rows of {k}")
    }
    // SAFETY: the kernels write dx (n) and db (k).
    let mut out = unsafe { dev.alloc::<T>((n + k) as usize)? };
    {
        let mut dx = out.slice_mut(0..n as usize);
        launch!(dev, format!("sft_drop_mul_{}", T::SUFFIX), elems(n as usize), &gv, &mut dx, &n, &key, &threshold, &scale);
    }
    col_sums_of_head(dev, &mut out, n, k)?;
    Ok(wrap(out, dev))
}

// ---------------------------------------------------------------- masked softmax + dropout

/// `softmax(scores * scale + mask) * drop` over the last dim of `scores` `[b, h, q, k]`, with
/// the additive key mask `[b, k]` (f32).
pub fn masked_softmax_drop(s: Arg, mask: Arg, scale: f32, key: u32, threshold: u32, dscale: f32) -> Result<CudaStorage> {
    by_dtype!(s.0, masked_softmax_drop_t(s, mask, None, scale, key, threshold, dscale))
}

/// Its backward: `dx` for upstream `dy`, recomputing the probabilities from the scores.
pub fn masked_softmax_drop_bwd(s: Arg, mask: Arg, dy: Arg, scale: f32, key: u32, threshold: u32, dscale: f32) -> Result<CudaStorage> {
    by_dtype!(s.0, masked_softmax_drop_t(s, mask, Some(dy), scale, key, threshold, dscale))
}

#[allow(clippy::too_many_arguments)]
fn masked_softmax_drop_t<T: Elem>(
    s: Arg,
    mask: Arg,
    dy: Option<Arg>,
    scale: f32,
    key: u32,
    threshold: u32,
    dscale: f32,
) -> Result<CudaStorage> {
    let dev = &s.0.device;
    let dims = s.1.shape().dims();
    if dims.len() != 4 {
        bail!("masked softmax: scores must be 4-D, got {:?}", s.1.shape())
    }
    let (b, rows_per_batch, kk) = (dims[0] as u64, (dims[1] * dims[2]) as u64, dims[3] as u64);
    let rows = b * rows_per_batch;
    let sv = view::<T>(s, "masked softmax scores")?;
    let mv = view::<f32>(mask, "masked softmax mask")?;
    if mv.len() as u64 != b * kk {
        bail!("masked softmax: mask {:?} does not match scores {:?}", mask.1.shape(), s.1.shape())
    }
    let n = rows * kk;
    // SAFETY: the kernel writes every element of every row.
    let out = unsafe { dev.alloc::<T>(n as usize)? };
    match dy {
        None => launch!(
            dev,
            format!("sft_masked_softmax_drop_{}", T::SUFFIX),
            warp_rows(rows as usize),
            &sv,
            &mv,
            &out,
            &rows,
            &kk,
            &rows_per_batch,
            &scale,
            &key,
            &threshold,
            &dscale
        ),
        Some(dy) => {
            let gv = view::<T>(dy, "masked softmax grad")?;
            if gv.len() as u64 != n {
                bail!("masked softmax bwd: grad {:?} vs scores {:?}", dy.1.shape(), s.1.shape())
            }
            launch!(
                dev,
                format!("sft_masked_softmax_drop_bwd_{}", T::SUFFIX),
                warp_rows(rows as usize),
                &sv,
                &mv,
                &gv,
                &out,
                &rows,
                &kk,
                &rows_per_batch,
                &scale,
                &key,
                &threshold,
                &dscale
            )
        }
    }
    Ok(wrap(out, dev))
}

// ---------------------------------------------------------------- layer norm (f32)

/// Layer norm of the rows of `x` with `gamma`, `beta` (all f32).
pub fn layer_norm(x: Arg, g: Arg, b: Arg, eps: f32) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let (xv, gv, bv) = (view::<f32>(x, "layer norm x")?, view::<f32>(g, "layer norm gamma")?, view::<f32>(b, "layer norm beta")?);
    let (n, h) = (xv.len() as u64, gv.len() as u64);
    if h == 0 || n % h != 0 || bv.len() as u64 != h {
        bail!("layer norm: shapes {:?} {:?} {:?} do not match", x.1.shape(), g.1.shape(), b.1.shape())
    }
    let rows = n / h;
    // SAFETY: the kernel writes every row.
    let out = unsafe { dev.alloc::<f32>(n as usize)? };
    launch!(dev, "sft_layer_norm_f32".to_string(), warp_rows(rows as usize), &xv, &gv, &bv, &out, &rows, &h, &eps);
    Ok(wrap(out, dev))
}

/// Packed `[dx (n), dgamma (h), dbeta (h)]` of layer norm given `dy`.
pub fn layer_norm_bwd(x: Arg, g: Arg, dy: Arg, eps: f32) -> Result<CudaStorage> {
    let dev = &x.0.device;
    let (xv, gv, dv) =
        (view::<f32>(x, "layer norm bwd x")?, view::<f32>(g, "layer norm bwd gamma")?, view::<f32>(dy, "layer norm bwd grad")?);
    let (n, h) = (xv.len() as u64, gv.len() as u64);
    if h == 0 || n % h != 0 || dv.len() as u64 != n {
        bail!("layer norm bwd: grad {:?} vs x {:?}", dy.1.shape(), x.1.shape())
    }
    let rows = n / h;
    // SAFETY: the kernels write dx, dgamma and dbeta; dyx is written before it is read.
    let mut out = unsafe { dev.alloc::<f32>((n + 2 * h) as usize)? };
    let dyx = unsafe { dev.alloc::<f32>(n as usize)? };
    {
        let mut dx = out.slice_mut(0..n as usize);
        launch!(dev, "sft_layer_norm_bwd_f32".to_string(), warp_rows(rows as usize), &xv, &gv, &dv, &mut dx, &dyx, &rows, &h, &eps);
    }
    {
        let mut dg = out.slice_mut(n as usize..(n + h) as usize);
        colsum_into(dev, &dyx.slice(..), rows, h, &mut dg)?;
    }
    {
        let mut db = out.slice_mut((n + h) as usize..(n + 2 * h) as usize);
        colsum_into(dev, &dv, rows, h, &mut db)?;
    }
    Ok(wrap(out, dev))
}

/// Opens CUDA device `ordinal` for training: one stream, so cudarc's per-allocation event
/// tracking (two events created and destroyed with every tensor) is turned off.
pub fn open_device(ordinal: usize) -> Result<candle_core::Device> {
    let device = candle_core::Device::new_cuda(ordinal)?;
    if let candle_core::Device::Cuda(d) = &device {
        // SAFETY: candle runs every op of this device on its one stream, so no tensor is
        // used on a stream other than the one that allocated it.
        unsafe { d.disable_event_tracking() };
    }
    Ok(device)
}

// ---------------------------------------------------------------- optimizer

/// The device address of `t`'s first element (f32, contiguous, on CUDA).
fn f32_ptr(t: &candle_core::Tensor, what: &str) -> Result<u64> {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;
    if t.dtype() != candle_core::DType::F32 || !t.is_contiguous() {
        bail!("{what}: AdamW kernel needs contiguous f32, got {:?}", t.dtype())
    }
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cuda(cs) => {
            let s = cs.as_cuda_slice::<f32>()?;
            let stream = cs.device.cuda_stream();
            let (ptr, _sync) = s.device_ptr(&stream);
            Ok(ptr + (layout.start_offset() * std::mem::size_of::<f32>()) as u64)
        }
        _ => bail!("{what}: not on a CUDA device"),
    }
}

/// Scalars of one AdamW step (f32, rounded as `optim::tensor_update` rounds them).
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// 1 − β₁ᵗ and 1 − β₂ᵗ.
    pub bc1: f32,
    pub bc2: f32,
}

/// One AdamW step of every tensor in `params` (f32, updated in place) from the flat, clipped
/// gradient `g` (their gradients concatenated in order, `offsets[i]..offsets[i+1]` for tensor
/// i) and the flat moments `m`, `v` (updated in place).
pub fn adamw_multi(
    params: &[&candle_core::Tensor],
    offsets: &[u64],
    g: &candle_core::Tensor,
    m: &candle_core::Tensor,
    v: &candle_core::Tensor,
    s: AdamWStep,
) -> Result<()> {
    if params.is_empty() {
        return Ok(());
    }
    if offsets.len() != params.len() + 1 {
        bail!("adamw: {} offsets for {} tensors", offsets.len(), params.len())
    }
    let total = offsets[params.len()] as usize;
    for (what, t) in [("gradient", g), ("first moment", m), ("second moment", v)] {
        if t.elem_count() != total {
            bail!("adamw: the flat {what} has {} elements, the parameters {total}", t.elem_count())
        }
    }
    let dev = match g.device() {
        candle_core::Device::Cuda(d) => d.clone(),
        _ => bail!("adamw: the gradient is not on a CUDA device"),
    };
    let ptrs: Vec<u64> = params.iter().map(|p| f32_ptr(p, "parameter")).collect::<Result<_>>()?;
    let ptrs = dev.clone_htod(&ptrs)?;
    let offs = dev.clone_htod(offsets)?;
    let (gp, mp, vp) = (f32_ptr(g, "gradient")?, f32_ptr(m, "first moment")?, f32_ptr(v, "second moment")?);
    let longest = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0);
    let cfg = LaunchConfig {
        grid_dim: (longest.div_ceil(256).clamp(1, 1024) as u32, params.len() as u32, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let (one_minus_b1, one_minus_b2) = (1.0f32 - s.beta1, 1.0f32 - s.beta2);
    let decay = 1.0f32 - s.lr * s.weight_decay;
    let step_size = s.lr / s.bc1;
    let inv_sqrt_bc2 = 1.0f32 / s.bc2.sqrt();
    launch!(
        dev,
        "sft_adamw_multi_f32".to_string(),
        cfg,
        &ptrs,
        &offs,
        &gp,
        &mp,
        &vp,
        &s.beta1,
        &one_minus_b1,
        &s.beta2,
        &one_minus_b2,
        &s.eps,
        &decay,
        &step_size,
        &inv_sqrt_bc2
    );
    Ok(())
}
