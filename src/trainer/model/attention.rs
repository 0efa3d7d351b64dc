//! Fused multi-head attention core for the CPU: `softmax(Q Kᵀ · scale + mask)`, dropout, `· V`,
//! written straight into the merged `[batch, seq, heads·d]` layout, with its own backward.
//!
//! candle's batched matmul calls gemm once per (batch, head) with its thread pool, so the
//! ~200 tiny products per layer pay a thread dispatch each, and the `[batch, heads, seq, seq]`
//! scores, probabilities and their gradients are materialised as tensors. Here each
//! (batch, head) is one unit of work on the shared CPU pool (`trainer::perf::par_ranges`), its products run single-threaded
//! gemm on a per-unit scratch, and the backward recomputes the probabilities instead of storing
//! them (dropout masks are regenerated from their hash). Other devices use the composed ops.

use std::sync::Arc;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::kernels::{self, mm};
use super::ops::{masked_softmax_dropout, DropMask};
use gemm::Parallelism;

/// `[b, h, s, d]` q, k, v and an additive key mask `[b, s]` → `[b, s, h·d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64, drop: DropMask) -> Result<Tensor> {
    let (b, h, s, d) = q.dims4()?;
    if q.device().is_cpu() && q.dtype() == DType::F32 {
        let mask: Vec<f32> = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if mask.len() != b * s {
            bail!("attention: mask has {} elements, expected {}", mask.len(), b * s)
        }
        let op = AttentionOp { mask: Arc::new(mask), scale: scale as f32, drop };
        q.contiguous()?.apply_op3(&k.contiguous()?, &v.contiguous()?, op)
    } else {
        attention_composed(q, k, v, mask, scale, drop)?.reshape((b, s, h * d))
    }
}

/// The same computation with candle ops (autograd); the reference in tests.
pub fn attention_composed(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64, drop: DropMask) -> Result<Tensor> {
    let (b, h, s, d) = q.dims4()?;
    let scores = q.matmul(&k.t()?)?;
    let probs = masked_softmax_dropout(&scores, mask, scale, drop)?;
    probs.matmul(v)?.transpose(1, 2)?.contiguous()?.reshape((b, s, h * d))
}

/// Attention straight from the fused projection `xw = x [Wq; Wk; Wv]ᵀ` `[b, s, 3·h]` plus its
/// bias `[3·h]`: splits into heads, attends, merges → `[b, s, h]`. One op and one backward.
pub fn attention_qkv(xw: &Tensor, bias: &Tensor, heads: usize, mask: &Tensor, scale: f64, drop: DropMask) -> Result<Tensor> {
    let (b, s, h3) = xw.dims3()?;
    if h3 % (3 * heads) != 0 {
        bail!("attention: projection width {h3} is not 3 x heads ({heads}) x d")
    }
    if xw.device().is_cpu() && xw.dtype() == DType::F32 {
        let mask: Vec<f32> = mask.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if mask.len() != b * s {
            bail!("attention: mask has {} elements, expected {}", mask.len(), b * s)
        }
        let op = QkvAttentionOp { inner: AttentionOp { mask: Arc::new(mask), scale: scale as f32, drop }, heads };
        xw.contiguous()?.apply_op2(&bias.contiguous()?, op)
    } else {
        attention_qkv_composed(xw, bias, heads, mask, scale, drop)
    }
}

/// [`attention_qkv`] with candle ops (autograd); the reference in tests.
pub fn attention_qkv_composed(xw: &Tensor, bias: &Tensor, heads: usize, mask: &Tensor, scale: f64, drop: DropMask) -> Result<Tensor> {
    let (b, s, h3) = xw.dims3()?;
    let h = h3 / 3;
    let x = xw.broadcast_add(bias)?;
    let part = |i: usize| -> Result<Tensor> { x.narrow(2, i * h, h)?.reshape((b, s, heads, h / heads))?.transpose(1, 2)?.contiguous() };
    attention_composed(&part(0)?, &part(1)?, &part(2)?, mask, scale, drop)
}

struct QkvAttentionOp {
    inner: AttentionOp,
    heads: usize,
}

/// Copies head `hi` of part `part` (0 q, 1 k, 2 v) of batch row `bi` from `xw [b, s, 3h]`
/// plus its bias into `dst [s, d]`.
#[allow(clippy::too_many_arguments)]
fn gather_head(xw: &[f32], bias: &[f32], bi: usize, hi: usize, part: usize, s: usize, h: usize, d: usize, dst: &mut [f32]) {
    let col = part * h + hi * d;
    let bb = &bias[col..col + d];
    for (i, row) in dst.chunks_exact_mut(d).enumerate().take(s) {
        let src = &xw[(bi * s + i) * 3 * h + col..][..d];
        for l in 0..d {
            row[l] = src[l] + bb[l];
        }
    }
}

impl CustomOp2 for QkvAttentionOp {
    fn name(&self) -> &'static str {
        "sft-attention-qkv"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let xw = contiguous(s1, l1)?;
        let bias = contiguous(s2, l2)?;
        let (b, s, h3) = l1.shape().dims3()?;
        let (h, nh) = (h3 / 3, self.heads);
        let d = h / nh;
        if bias.len() != h3 {
            bail!("attention: bias {:?} for projection {:?}", l2.shape(), l1.shape())
        }
        let mut out = vec![0f32; b * s * h];
        let out_ptr = out.as_mut_ptr() as usize;
        let att = &self.inner;
        par_units(b * nh, s * s + 3 * s * d, |u, scratch| {
            let (bi, hi) = (u / nh, u % nh);
            let (p, rest) = scratch.split_at_mut(s * s);
            let (q, rest) = rest.split_at_mut(s * d);
            let (k, v) = rest.split_at_mut(s * d);
            gather_head(xw, bias, bi, hi, 0, s, h, d, q);
            gather_head(xw, bias, bi, hi, 1, s, h, d, k);
            gather_head(xw, bias, bi, hi, 2, s, h, d, v);
            // SAFETY: scratch slices have the sizes used; each unit writes its own
            // (batch rows, head columns) block of `out`.
            unsafe {
                mm(Parallelism::None, s, s, d, p.as_mut_ptr(), s, q.as_ptr(), d, 1, k.as_ptr(), 1, d);
                att.softmax_rows(p, s, u, bi, true);
                let dst = (out_ptr as *mut f32).add(bi * s * h + hi * d);
                mm(Parallelism::None, s, d, s, dst, h, p.as_ptr(), s, 1, v.as_ptr(), d, 1);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, s, h))))
    }

    fn bwd(&self, xw: &Tensor, bias: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = QkvAttentionBwdOp {
            inner: AttentionOp { mask: self.inner.mask.clone(), scale: self.inner.scale, drop: self.inner.drop },
            heads: self.heads,
        };
        let packed = xw.apply_op3_no_bwd(bias, &grad.contiguous()?, &op)?;
        let n = xw.elem_count();
        let dxw = packed.narrow(0, 0, n)?.reshape(xw.shape())?;
        let db = packed.narrow(0, n, bias.elem_count())?.reshape(bias.shape())?;
        Ok((Some(dxw), Some(db)))
    }
}

/// Backward of [`QkvAttentionOp`]: `(xw, bias, dO)` → packed `[dxw, dbias]`.
struct QkvAttentionBwdOp {
    inner: AttentionOp,
    heads: usize,
}

impl CustomOp3 for QkvAttentionBwdOp {
    fn name(&self) -> &'static str {
        "sft-attention-qkv-bwd"
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
        let xw = contiguous(s1, l1)?;
        let bias = contiguous(s2, l2)?;
        let go = contiguous(s3, l3)?;
        let (b, s, h3) = l1.shape().dims3()?;
        let (h, nh) = (h3 / 3, self.heads);
        let d = h / nh;
        let n = xw.len();
        if bias.len() != h3 || go.len() != b * s * h {
            bail!("attention bwd: shapes {:?} {:?} {:?}", l1.shape(), l2.shape(), l3.shape())
        }
        let mut out = vec![0f32; n + h3];
        let out_ptr = out.as_mut_ptr() as usize;
        let att = &self.inner;
        par_units(b * nh, 3 * s * s + 3 * s * d, |u, scratch| {
            let (bi, hi) = (u / nh, u % nh);
            let (p, rest) = scratch.split_at_mut(s * s);
            let (pd, rest) = rest.split_at_mut(s * s);
            let (dp, rest) = rest.split_at_mut(s * s);
            let (q, rest) = rest.split_at_mut(s * d);
            let (k, v) = rest.split_at_mut(s * d);
            gather_head(xw, bias, bi, hi, 0, s, h, d, q);
            gather_head(xw, bias, bi, hi, 1, s, h, d, k);
            gather_head(xw, bias, bi, hi, 2, s, h, d, v);
            let go_u = go[bi * s * h + hi * d..].as_ptr();
            // SAFETY: scratch slices have the sizes used; each unit writes only its own
            // (batch rows, head columns) blocks of dxw.
            unsafe {
                let row0 = (out_ptr as *mut f32).add(bi * s * h3 + hi * d);
                let (dq, dk, dv) = (row0, row0.add(h), row0.add(2 * h));
                mm(Parallelism::None, s, s, d, p.as_mut_ptr(), s, q.as_ptr(), d, 1, k.as_ptr(), 1, d);
                att.softmax_rows(p, s, u, bi, false);
                let base = u * s * s;
                let dr = att.drop;
                if dr.is_identity() {
                    pd.copy_from_slice(p);
                } else {
                    kernels::drop_mul(p, pd, base, dr.key, dr.threshold, dr.scale);
                }
                mm(Parallelism::None, s, d, s, dv, h3, pd.as_ptr(), 1, s, go_u, h, 1);
                mm(Parallelism::None, s, s, d, dp.as_mut_ptr(), s, go_u, h, 1, v.as_ptr(), 1, d);
                if !dr.is_identity() {
                    kernels::drop_mul_inplace(dp, base, dr.key, dr.threshold, dr.scale);
                }
                kernels::softmax_bwd_rows(p, dp, s, att.scale, pd);
                mm(Parallelism::None, s, d, s, dq, h3, pd.as_ptr(), s, 1, k.as_ptr(), d, 1);
                mm(Parallelism::None, s, d, s, dk, h3, pd.as_ptr(), 1, s, q.as_ptr(), d, 1);
            }
        });
        let (dx, db) = out.split_at_mut(n);
        kernels::col_sums(dx, db);
        Ok((CpuStorage::F32(out), Shape::from(n + h3)))
    }
}

struct AttentionOp {
    mask: Arc<Vec<f32>>,
    scale: f32,
    drop: DropMask,
}

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => bail!("attention: non-contiguous input"),
    }
}

/// Runs `f(unit, scratch)` for every unit in `0..units` on the shared CPU pool (`trainer::perf::par_ranges`); each worker gets
/// its own zeroed scratch of `scratch_len` floats.
fn par_units(units: usize, scratch_len: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    crate::trainer::perf::par_ranges(units, |r| {
        let mut scratch = vec![0f32; scratch_len];
        for u in r {
            f(u, &mut scratch);
        }
    });
}

impl AttentionOp {
    /// Softmax of the scores `p` `[s×s]` of unit `u` in place, with scale and key mask, and the
    /// dropout mask applied when `with_dropout`.
    fn softmax_rows(&self, p: &mut [f32], s: usize, u: usize, bi: usize, with_dropout: bool) {
        let m = &self.mask[bi * s..(bi + 1) * s];
        let (key, threshold, dscale) = if with_dropout { (self.drop.key, self.drop.threshold, self.drop.scale) } else { (0, 0, 1.0) };
        for (i, row) in p.chunks_exact_mut(s).enumerate() {
            kernels::softmax_row(row, m, self.scale, (u * s + i) * s, key, threshold, dscale);
        }
    }
}

impl CustomOp3 for AttentionOp {
    fn name(&self) -> &'static str {
        "sft-attention"
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
        let (q, k, v) = (contiguous(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?);
        let dims = l1.shape().dims();
        if dims.len() != 4 || l2.shape() != l1.shape() || l3.shape() != l1.shape() {
            bail!("attention: q {:?}, k {:?}, v {:?} must be equal [b, h, s, d]", l1.shape(), l2.shape(), l3.shape())
        }
        let (b, h, s, d) = (dims[0], dims[1], dims[2], dims[3]);
        let hd = h * d;
        let mut out = vec![0f32; b * s * hd];
        let out_ptr = out.as_mut_ptr() as usize;
        par_units(b * h, s * s, |u, p| {
            let (bi, hi) = (u / h, u % h);
            let off = u * s * d;
            // SAFETY: q/k/v slices are in bounds; each unit writes its own (batch, head) block
            // of `out` (rows bi·s.., columns hi·d..).
            unsafe {
                mm(Parallelism::None, s, s, d, p.as_mut_ptr(), s, q[off..].as_ptr(), d, 1, k[off..].as_ptr(), 1, d);
                self.softmax_rows(p, s, u, bi, true);
                let dst = (out_ptr as *mut f32).add(bi * s * hd + hi * d);
                mm(Parallelism::None, s, d, s, dst, hd, p.as_ptr(), s, 1, v[off..].as_ptr(), d, 1);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((b, s, hd))))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = q.elem_count();
        let op =
            AttentionBwdOp { fwd: AttentionOp { mask: self.mask.clone(), scale: self.scale, drop: self.drop }, grad: grad.contiguous()? };
        let packed = q.apply_op3_no_bwd(k, v, &op)?;
        let dq = packed.narrow(0, 0, n)?.reshape(q.shape())?;
        let dk = packed.narrow(0, n, n)?.reshape(q.shape())?;
        let dv = packed.narrow(0, 2 * n, n)?.reshape(q.shape())?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}

/// Backward: `(q, k, v)` with `dO` `[b, s, h·d]` held in the op → `[dq; dk; dv]` flattened.
struct AttentionBwdOp {
    fwd: AttentionOp,
    grad: Tensor,
}

impl CustomOp3 for AttentionBwdOp {
    fn name(&self) -> &'static str {
        "sft-attention-bwd"
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
        let (q, k, v) = (contiguous(s1, l1)?, contiguous(s2, l2)?, contiguous(s3, l3)?);
        let (gs, gl) = self.grad.storage_and_layout();
        let go = match &*gs {
            candle_core::Storage::Cpu(c) => contiguous(c, gl)?,
            _ => bail!("attention bwd: gradient is not on the CPU"),
        };
        let (b, h, s, d) = l1.shape().dims4()?;
        let n = b * h * s * d;
        let hd = h * d;
        if q.len() != n || k.len() != n || v.len() != n || go.len() != n {
            bail!("attention bwd: sizes {}/{}/{}/{} for shape {:?}", q.len(), k.len(), v.len(), go.len(), l1.shape())
        }
        let fwd = &self.fwd;
        let mut out = vec![0f32; 3 * n];
        let out_ptr = out.as_mut_ptr() as usize;
        par_units(b * h, 3 * s * s, |u, scratch| {
            let (bi, hi) = (u / h, u % h);
            let off = u * s * d;
            let (p, rest) = scratch.split_at_mut(s * s);
            let (pd, dp) = rest.split_at_mut(s * s);
            let go_u = go[bi * s * hd + hi * d..].as_ptr();
            // SAFETY: all slices are in bounds; each unit writes only its own (batch, head)
            // blocks of dq, dk, dv.
            unsafe {
                let dq = (out_ptr as *mut f32).add(off);
                let dk = (out_ptr as *mut f32).add(n + off);
                let dv = (out_ptr as *mut f32).add(2 * n + off);
                // P = softmax(Q Kᵀ · scale + mask); Pd = P ∘ dropout.
                mm(Parallelism::None, s, s, d, p.as_mut_ptr(), s, q[off..].as_ptr(), d, 1, k[off..].as_ptr(), 1, d);
                fwd.softmax_rows(p, s, u, bi, false);
                let base = u * s * s;
                let dr = fwd.drop;
                if dr.is_identity() {
                    pd.copy_from_slice(p);
                } else {
                    kernels::drop_mul(p, pd, base, dr.key, dr.threshold, dr.scale);
                }
                // dV = Pdᵀ dO
                mm(Parallelism::None, s, d, s, dv, d, pd.as_ptr(), 1, s, go_u, hd, 1);
                // dPd = dO Vᵀ; dP = dPd ∘ dropout
                mm(Parallelism::None, s, s, d, dp.as_mut_ptr(), s, go_u, hd, 1, v[off..].as_ptr(), 1, d);
                if !dr.is_identity() {
                    kernels::drop_mul_inplace(dp, base, dr.key, dr.threshold, dr.scale);
                }
                // dS = scale · P ∘ (dP − rowsum(dP ∘ P)), into `pd` (no longer needed)
                kernels::softmax_bwd_rows(p, dp, s, fwd.scale, pd);
                // dQ = dS K; dK = dSᵀ Q
                mm(Parallelism::None, s, d, s, dq, d, pd.as_ptr(), s, 1, k[off..].as_ptr(), d, 1);
                mm(Parallelism::None, s, d, s, dk, d, pd.as_ptr(), 1, s, q[off..].as_ptr(), d, 1);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(3 * n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn randn(shape: &[usize], seed: u32) -> Tensor {
        let n: usize = shape.iter().product();
        let mut st = seed.wrapping_mul(747_796_405).wrapping_add(1);
        let v: Vec<f32> = (0..n)
            .map(|_| {
                st ^= st << 13;
                st ^= st >> 17;
                st ^= st << 5;
                (st as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Reference: `attention_composed` (candle matmuls + the masked softmax + dropout ops)
    /// through autograd, with padding and dropout.
    #[test]
    fn fused_attention_matches_composed_autograd() {
        let shape = [2, 3, 9, 4];
        let q = Var::from_tensor(&randn(&shape, 1)).unwrap();
        let k = Var::from_tensor(&randn(&shape, 2)).unwrap();
        let v = Var::from_tensor(&randn(&shape, 3)).unwrap();
        let mut m = vec![0f32; 18];
        m[7] = -1e9;
        m[8] = -1e9;
        m[17] = -1e9;
        let mask = Tensor::from_vec(m, (2, 9), &Device::Cpu).unwrap();
        let w = randn(&[2, 9, 12], 4);
        for drop in [DropMask::none(), DropMask::new(0.3, 77)] {
            let a = attention(&q, &k, &v, &mask, 0.5, drop).unwrap();
            let b = attention_composed(&q, &k, &v, &mask, 0.5, drop).unwrap();
            assert!(max_abs_diff(&a, &b) < 1e-5, "forward differs by {}", max_abs_diff(&a, &b));
            let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for t in [&q, &k, &v] {
                let d = max_abs_diff(ga.get(t).unwrap(), gb.get(t).unwrap());
                assert!(d < 1e-5, "gradient differs by {d}");
            }
        }
    }

    /// Reference: `attention_qkv_composed` (bias add, split into heads with candle ops, then the
    /// composed attention) through autograd.
    #[test]
    fn fused_qkv_attention_matches_composed_autograd() {
        let xw = Var::from_tensor(&randn(&[2, 9, 36], 5)).unwrap();
        let bias = Var::from_tensor(&randn(&[36], 6)).unwrap();
        let mut m = vec![0f32; 18];
        m[8] = -1e9;
        m[16] = -1e9;
        m[17] = -1e9;
        let mask = Tensor::from_vec(m, (2, 9), &Device::Cpu).unwrap();
        let w = randn(&[2, 9, 12], 7);
        for drop in [DropMask::none(), DropMask::new(0.25, 3)] {
            let a = attention_qkv(&xw, &bias, 3, &mask, 0.4, drop).unwrap();
            let b = attention_qkv_composed(&xw, &bias, 3, &mask, 0.4, drop).unwrap();
            assert_eq!(a.dims(), &[2, 9, 12]);
            assert!(max_abs_diff(&a, &b) < 1e-5, "forward differs by {}", max_abs_diff(&a, &b));
            let ga = (&a * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (&b * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for t in [&xw, &bias] {
                let d = max_abs_diff(ga.get(t).unwrap(), gb.get(t).unwrap());
                assert!(d < 1e-5, "gradient differs by {d}");
            }
        }
    }
}
