//! Differentiable fused operations for training on the CPU: layer norm, GELU (erf form, as
//! Hugging Face's `"gelu"`), and scaled + masked softmax, each a candle custom op with a single
//! pass forward and its own single pass backward, plus seeded dropout.
//!
//! candle-nn's fused `layer_norm` has no backward (gradients silently stop there) and its
//! composed ops allocate a tensor per elementary step; these kernels avoid both. On other
//! devices (CUDA) or dtypes each function falls back to a composition of candle ops that
//! autograd differentiates.

use std::sync::Mutex;

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor, D,
};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{what}: input is not contiguous"),
    }
}

fn fast_path(xs: &Tensor) -> bool {
    xs.device().is_cpu() && xs.dtype() == DType::F32
}

// ---------------------------------------------------------------- layer norm

/// Layer norm over the last dimension with affine weight `gamma` and bias `beta`.
pub fn layer_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    if fast_path(x) {
        x.contiguous()?.apply_op3(gamma, beta, LayerNormOp { eps: eps as f32 })
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
        for (xr, yr) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
            let (mean, rstd) = row_stats(xr, self.eps);
            for i in 0..h {
                yr[i] = (xr[i] - mean) * rstd * g[i] + b[i];
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let h = gamma.elem_count();
        let n = x.elem_count();
        let packed = x.apply_op3_no_bwd(gamma, &grad.contiguous()?, &LayerNormBwdOp { eps: self.eps })?;
        let dx = packed.narrow(0, 0, n)?.reshape(x.shape())?;
        let dg = packed.narrow(0, n, h)?.reshape(gamma.shape())?;
        let db = packed.narrow(0, n + h, h)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

#[inline]
fn row_stats(xr: &[f32], eps: f32) -> (f32, f32) {
    let h = xr.len() as f32;
    let mean = xr.iter().sum::<f32>() / h;
    let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Backward of [`LayerNormOp`]: returns `dx` (flattened), then `dgamma`, then `dbeta`, packed
/// in one 1-D tensor so one pass computes all three.
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
        if dy.len() != n {
            bail!("layer norm bwd: grad shape {:?} vs x {:?}", l3.shape(), l1.shape())
        }
        let mut out = vec![0f32; n + 2 * h];
        let (dx, rest) = out.split_at_mut(n);
        let (dg, db) = rest.split_at_mut(h);
        let mut xhat = vec![0f32; h];
        let mut gdy = vec![0f32; h];
        let inv_h = 1.0 / h as f32;
        for ((xr, dyr), dxr) in x.chunks_exact(h).zip(dy.chunks_exact(h)).zip(dx.chunks_exact_mut(h)) {
            let (mean, rstd) = row_stats(xr, self.eps);
            let mut a = 0f32;
            let mut c = 0f32;
            for i in 0..h {
                let xh = (xr[i] - mean) * rstd;
                let gd = dyr[i] * g[i];
                xhat[i] = xh;
                gdy[i] = gd;
                a += gd;
                c += gd * xh;
                dg[i] += dyr[i] * xh;
                db[i] += dyr[i];
            }
            a *= inv_h;
            c *= inv_h;
            for i in 0..h {
                dxr[i] = rstd * (gdy[i] - a - xhat[i] * c);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(n + 2 * h)))
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

/// erf with |error| < 1.2e-7 (Numerical Recipes `erfc` Chebyshev fit), one `exp` per call.
#[inline]
fn erf(x: f32) -> f32 {
    let z = x.abs() as f64;
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let erfc = t * poly.exp();
    let r = (1.0 - erfc) as f32;
    if x >= 0.0 {
        r
    } else {
        -r
    }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

struct GeluOp;

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "sft-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "gelu")?;
        let out: Vec<f32> = x.iter().map(|&v| 0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2))).collect();
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
        let out: Vec<f32> = x
            .iter()
            .zip(dy)
            .map(|(&v, &d)| {
                let cdf = 0.5 * (1.0 + erf(v * FRAC_1_SQRT_2));
                let pdf = FRAC_1_SQRT_2PI * (-0.5 * v * v).exp();
                d * (cdf + v * pdf)
            })
            .collect();
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
        let (b, _, _, k) = scores.dims4()?;
        let x = (scores * scale)?.broadcast_add(&mask.reshape((b, 1, 1, k))?)?;
        candle_nn::ops::softmax(&x, D::Minus1)
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
        let (b, k) = (dims[0], dims[3]);
        if m.len() != b * k {
            bail!("masked softmax: mask {:?} does not match scores {:?}", l2.shape(), l1.shape())
        }
        let rows_per_batch = dims[1] * dims[2];
        let mut out = vec![0f32; x.len()];
        for (r, (xr, yr)) in x.chunks_exact(k).zip(out.chunks_exact_mut(k)).enumerate() {
            let mr = &m[(r / rows_per_batch) * k..][..k];
            let mut max = f32::NEG_INFINITY;
            for i in 0..k {
                let v = xr[i] * self.scale + mr[i];
                yr[i] = v;
                max = max.max(v);
            }
            let mut sum = 0f32;
            for y in yr.iter_mut() {
                *y = (*y - max).exp();
                sum += *y;
            }
            let inv = 1.0 / sum;
            for y in yr.iter_mut() {
                *y *= inv;
            }
        }
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
        let k = *l1.shape().dims().last().unwrap_or(&1);
        if y.len() != dy.len() || k == 0 {
            bail!("softmax bwd: shapes {:?} {:?}", l1.shape(), l2.shape())
        }
        let mut out = vec![0f32; y.len()];
        for ((yr, dr), or) in y.chunks_exact(k).zip(dy.chunks_exact(k)).zip(out.chunks_exact_mut(k)) {
            let dot: f32 = yr.iter().zip(dr).map(|(a, b)| a * b).sum();
            for i in 0..k {
                or[i] = self.scale * yr[i] * (dr[i] - dot);
            }
        }
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------- dropout

/// Seeded dropout: zeroes each element with probability `p` and scales the rest by
/// `1 / (1 - p)`; the mask comes from a ChaCha8 stream so runs with the same seed repeat.
pub struct Dropout {
    rng: Mutex<ChaCha8Rng>,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Self { rng: Mutex::new(ChaCha8Rng::seed_from_u64(seed)) }
    }

    /// Applies dropout with probability `p` (identity when `p == 0`).
    pub fn apply(&self, xs: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(xs.clone());
        }
        if p >= 1.0 {
            return xs.zeros_like();
        }
        let n = xs.elem_count();
        let threshold = (p * 4_294_967_296.0) as u64;
        let scale = (1.0 / (1.0 - p)) as f32;
        let mut mask = vec![0f32; n];
        {
            let mut rng = match self.rng.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            for m in mask.iter_mut() {
                if rng.next_u32() as u64 >= threshold {
                    *m = scale;
                }
            }
        }
        let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
        xs.mul(&mask)
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
            let f = |z: f64| 0.5 * z * (1.0 + erf((z / 2f64.sqrt()) as f32) as f64);
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
        let x = Tensor::ones(10_000, DType::F32, &Device::Cpu).unwrap();
        let y = d.apply(&x, 0.25).unwrap().to_vec1::<f32>().unwrap();
        let zeros = y.iter().filter(|&&v| v == 0.0).count();
        assert!((2300..2700).contains(&zeros), "{zeros} zeros");
        assert!(y.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
        assert_eq!(d.apply(&x, 0.0).unwrap().to_vec1::<f32>().unwrap(), vec![1f32; 10_000]);
    }
}
