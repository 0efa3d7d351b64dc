//! `x Wᵀ` for a linear layer as one candle op (CPU, f32) calling gemm directly, with a backward
//! that writes `dx = dY W` and `dW = dYᵀ X` straight in their final layouts.
//!
//! Through candle's generic matmul the same product is reshape → matmul(x, Wᵀ view) → reshape,
//! and autograd then materialises a zero-filled gradient and an add for each of those nodes plus
//! a strided add for the transposed weight; this op has one node. Other devices use the
//! composed version.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::kernels::{filled_by, mm};
use super::ops::contiguous_f32;

/// `x [.., in] · wᵀ` with `w [out, in]` → `[.., out]`.
pub fn matmul_wt(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && w.dtype() == DType::F32 {
        x.contiguous()?.apply_op2(&w.contiguous()?, MatmulWt)
    } else {
        matmul_wt_composed(x, w)
    }
}

/// The same product with candle's matmul (autograd); the reference in tests.
pub fn matmul_wt_composed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let inner = *dims.last().unwrap_or(&1);
    let rows = x.elem_count() / inner.max(1);
    let y = x.reshape((rows, inner))?.matmul(&w.t()?)?;
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = w.dim(0)?;
    }
    y.reshape(out)
}

fn parallelism() -> gemm::Parallelism {
    let n = candle_core::utils::get_num_threads();
    if n > 1 {
        gemm::Parallelism::Rayon(n)
    } else {
        gemm::Parallelism::None
    }
}

struct MatmulWt;

fn dims(lx: &Layout, lw: &Layout) -> Result<(usize, usize, usize)> {
    let wd = lw.shape().dims();
    let xd = lx.shape().dims();
    if wd.len() != 2 || xd.is_empty() || xd[xd.len() - 1] != wd[1] {
        bail!("linear: x {:?} and w {:?} do not match", lx.shape(), lw.shape())
    }
    let inp = wd[1];
    Ok((lx.shape().elem_count() / inp.max(1), inp, wd[0]))
}

impl CustomOp2 for MatmulWt {
    fn name(&self) -> &'static str {
        "sft-matmul-wt"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, inp, out) = dims(l1, l2)?;
        let x = contiguous_f32(s1, l1, "linear x")?;
        let w = contiguous_f32(s2, l2, "linear w")?;
        // SAFETY: the buffers have the sizes checked above; the gemm overwrites all of `y`.
        let y = unsafe { filled_by(rows * out, |y| mm(parallelism(), rows, out, inp, y, out, x.as_ptr(), inp, 1, w.as_ptr(), 1, inp)) };
        let mut shape = l1.shape().dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out;
        }
        Ok((CpuStorage::F32(y), Shape::from(shape)))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // An input outside the graph (the first layer after a frozen block) needs no `dx`.
        let need_dx = x.track_op();
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &MatmulWtBwd { need_dx })?;
        let n = if need_dx { x.elem_count() } else { 0 };
        let dx = if need_dx { Some(packed.narrow(0, 0, n)?.reshape(x.shape())?) } else { None };
        let dw = packed.narrow(0, n, w.elem_count())?.reshape(w.shape())?;
        Ok((dx, Some(dw)))
    }
}

/// Packed `[dx = dY W (rows·in), dW = dYᵀ X (out·in)]` (`dx` left out unless `need_dx`).
struct MatmulWtBwd {
    need_dx: bool,
}

impl CustomOp3 for MatmulWtBwd {
    fn name(&self) -> &'static str {
        "sft-matmul-wt-bwd"
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
        let (rows, inp, out) = dims(l1, l2)?;
        let x = contiguous_f32(s1, l1, "linear x")?;
        let w = contiguous_f32(s2, l2, "linear w")?;
        let dy = contiguous_f32(s3, l3, "linear grad")?;
        if dy.len() != rows * out {
            bail!("linear bwd: grad {:?} for {rows} rows x {out}", l3.shape())
        }
        let n_dx = if self.need_dx { rows * inp } else { 0 };
        // SAFETY: the buffers have the sizes checked above; the two gemms overwrite `dx` (the
        // first `n_dx` values, none unless `need_dx`) and `dW` (the rest).
        let buf = unsafe {
            filled_by(n_dx + out * inp, |buf| {
                if self.need_dx {
                    mm(parallelism(), rows, inp, out, buf, inp, dy.as_ptr(), out, 1, w.as_ptr(), inp, 1);
                }
                mm(parallelism(), out, inp, rows, buf.add(n_dx), inp, dy.as_ptr(), 1, out, x.as_ptr(), inp, 1);
            })
        };
        Ok((CpuStorage::F32(buf), Shape::from(n_dx + out * inp)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn det(shape: &[usize], seed: u32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    /// Reference: candle's matmul through autograd.
    #[test]
    fn matches_candle_matmul_and_its_gradients() {
        let x = Var::from_tensor(&det(&[3, 5, 7], 1)).unwrap();
        let w = Var::from_tensor(&det(&[4, 7], 2)).unwrap();
        let g = det(&[3, 5, 4], 3);
        let a = matmul_wt(&x, &w).unwrap();
        let b = matmul_wt_composed(&x, &w).unwrap();
        let diff =
            |p: &Tensor, q: &Tensor| (p - q).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(a.dims(), &[3, 5, 4]);
        assert!(diff(&a, &b) < 1e-5);
        let ga = (&a * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (&b * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(diff(ga.get(&x).unwrap(), gb.get(&x).unwrap()) < 1e-5);
        assert!(diff(ga.get(&w).unwrap(), gb.get(&w).unwrap()) < 1e-5);
        // With an input outside the graph only the weight gets a gradient, the same one.
        let c = matmul_wt(&x.as_tensor().detach(), &w).unwrap();
        let gc = (&c * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(diff(gc.get(&w).unwrap(), gb.get(&w).unwrap()) < 1e-5);
    }
}
