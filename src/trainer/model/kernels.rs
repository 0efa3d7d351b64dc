//! Slice-level CPU kernels behind the fused ops (GELU, softmax, layer norm, dropout epilogues),
//! written so LLVM vectorises them (no libm calls, reductions over 16 independent lanes) and
//! compiled three times: baseline x86-64, AVX2+FMA and AVX-512, picked at run time.

/// Defines `pub fn $name(args) -> ret` that runs `$body` with the best instruction set available.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match level() {
                    // SAFETY: the CPU supports the features these variants were compiled for.
                    Level::V4 => return unsafe { v4($($arg),*) },
                    Level::V3 => return unsafe { v3($($arg),*) },
                    Level::Base => {}
                }
            }
            body($($arg),*)
        }
    };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Base,
    #[allow(dead_code)]
    V3,
    #[allow(dead_code)]
    V4,
}

fn level() -> Level {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<Level> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            let v3 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
            let v4 = v3
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vl");
            if v4 {
                return Level::V4;
            }
            if v3 {
                return Level::V3;
            }
        }
        Level::Base
    })
}

const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer in the low bits

/// `exp` for f32 without a libm call: Cody-Waite reduction `x = n ln2 + r`, `|r| <= ln2/2`,
/// degree-6 Taylor polynomial for `e^r`; relative error below 3e-7. Vectorises.
#[inline(always)]
pub fn exp_f(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = (x - n * 0.693_145_75) - n * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((ni + 127) << 23) as u32)
}

/// erf with |error| < 1.2e-7 (Numerical Recipes `erfc` Chebyshev fit), one [`exp_f`].
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07 + t * (-1.135_204 + t * (1.488_515_9 + t * (-0.822_152_2 + t * 0.170_872_77))))))));
    let r = 1.0 - t * exp_f(poly);
    r.copysign(x)
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

#[inline(always)]
pub fn gelu_f(v: f32) -> f32 {
    0.5 * v * (1.0 + erf(v * FRAC_1_SQRT_2))
}

#[inline(always)]
pub fn gelu_grad_f(v: f32) -> f32 {
    0.5 * (1.0 + erf(v * FRAC_1_SQRT_2)) + v * FRAC_1_SQRT_2PI * exp_f(-0.5 * v * v)
}

/// Sum with 16 independent accumulators (vectorises; order differs from a serial sum).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for i in 0..16 {
            acc[i] += c[i];
        }
    }
    let mut s: f32 = it.remainder().iter().sum();
    for a in acc {
        s += a;
    }
    s
}

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut ia = a.chunks_exact(16);
    let mut ib = b.chunks_exact(16);
    for (ca, cb) in (&mut ia).zip(&mut ib) {
        for i in 0..16 {
            acc[i] += ca[i] * cb[i];
        }
    }
    let mut s: f32 = ia.remainder().iter().zip(ib.remainder()).map(|(x, y)| x * y).sum();
    for v in acc {
        s += v;
    }
    s
}

#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut it = x.chunks_exact(16);
    for c in &mut it {
        for i in 0..16 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in it.remainder().iter().chain(acc.iter()) {
        m = m.max(v);
    }
    m
}

/// Keep-mask hash for dropout (lowbias32 of the element index mixed with the key).
#[inline(always)]
pub fn keep_hash(i: u32, key: u32) -> u32 {
    let mut x = i.wrapping_mul(0x9e37_79b9) ^ key;
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// The dropout multiplier of element `i`: 0 or `scale`.
#[inline(always)]
pub fn drop_factor(i: usize, key: u32, threshold: u32, scale: f32) -> f32 {
    if keep_hash(i as u32, key) >= threshold {
        scale
    } else {
        0.0
    }
}

multiversion! {
    /// `row = softmax(row · scale + mask)` in place, then `· dropout` when `threshold > 0`
    /// (element indices start at `first`).
    pub fn softmax_row(row: &mut [f32], mask: &[f32], scale: f32, first: usize, key: u32, threshold: u32, dscale: f32) {
        let n = row.len().min(mask.len());
        let (row, mask) = (&mut row[..n], &mask[..n]);
        for i in 0..n {
            row[i] = row[i] * scale + mask[i];
        }
        let m = max(row);
        for v in row.iter_mut() {
            *v = exp_f(*v - m);
        }
        let inv = 1.0 / sum(row);
        if threshold > 0 {
            for (i, v) in row.iter_mut().enumerate() {
                *v *= inv * drop_factor(first + i, key, threshold, dscale);
            }
        } else {
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// `out = gelu(x + b)` over rows of `b.len()`.
    pub fn bias_gelu_rows(x: &[f32], b: &[f32], out: &mut [f32]) {
        let k = b.len();
        for (o, xr) in out.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
            for i in 0..k {
                o[i] = gelu_f(xr[i] + b[i]);
            }
        }
    }
}

multiversion! {
    /// `out = dy · gelu'(x + b)` over rows of `b.len()`.
    pub fn bias_gelu_bwd_rows(x: &[f32], b: &[f32], dy: &[f32], out: &mut [f32]) {
        let k = b.len();
        for ((o, xr), dr) in out.chunks_exact_mut(k).zip(x.chunks_exact(k)).zip(dy.chunks_exact(k)) {
            for i in 0..k {
                o[i] = dr[i] * gelu_grad_f(xr[i] + b[i]);
            }
        }
    }
}

multiversion! {
    /// `out = gelu(x)` / `out = dy · gelu'(x)` (when `dy` is non-empty).
    pub fn gelu_slice(x: &[f32], dy: &[f32], out: &mut [f32]) {
        if dy.is_empty() {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = gelu_f(v);
            }
        } else {
            for ((o, &v), &d) in out.iter_mut().zip(x).zip(dy) {
                *o = d * gelu_grad_f(v);
            }
        }
    }
}

multiversion! {
    /// `out[j] = (x[j] + b[j mod k]) · drop(first + j) + r[j]` (rows of `k`, `first` at a row start).
    pub fn bias_drop_res_rows(x: &[f32], b: &[f32], r: &[f32], out: &mut [f32], first: usize, key: u32, threshold: u32, dscale: f32) {
        let k = b.len();
        for (row, ((o, xr), rr)) in out.chunks_exact_mut(k).zip(x.chunks_exact(k)).zip(r.chunks_exact(k)).enumerate() {
            let base = first + row * k;
            if threshold > 0 {
                for i in 0..k {
                    o[i] = (xr[i] + b[i]) * drop_factor(base + i, key, threshold, dscale) + rr[i];
                }
            } else {
                for i in 0..k {
                    o[i] = xr[i] + b[i] + rr[i];
                }
            }
        }
    }
}

multiversion! {
    /// `out[j] = x[j] · drop(first + j)`.
    pub fn drop_mul(x: &[f32], out: &mut [f32], first: usize, key: u32, threshold: u32, dscale: f32) {
        for (j, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = v * drop_factor(first + j, key, threshold, dscale);
        }
    }
}

multiversion! {
    /// `x[j] *= drop(first + j)` in place.
    pub fn drop_mul_inplace(x: &mut [f32], first: usize, key: u32, threshold: u32, dscale: f32) {
        for (j, v) in x.iter_mut().enumerate() {
            *v *= drop_factor(first + j, key, threshold, dscale);
        }
    }
}

multiversion! {
    /// Layer norm forward over rows of `g.len()`.
    pub fn layer_norm_rows(x: &[f32], g: &[f32], b: &[f32], eps: f32, out: &mut [f32]) {
        let h = g.len();
        for (yr, xr) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
            let mean = sum(xr) / h as f32;
            for i in 0..h {
                yr[i] = xr[i] - mean;
            }
            let var = dot(yr, yr) / h as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for i in 0..h {
                yr[i] = yr[i] * rstd * g[i] + b[i];
            }
        }
    }
}

multiversion! {
    /// Layer norm backward `dx` over rows of `g.len()` (`out` doubles as scratch for x̂).
    pub fn layer_norm_bwd_rows(x: &[f32], g: &[f32], dy: &[f32], eps: f32, out: &mut [f32]) {
        let h = g.len();
        let inv_h = 1.0 / h as f32;
        for ((dxr, xr), dyr) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)).zip(dy.chunks_exact(h)) {
            let mean = sum(xr) * inv_h;
            for i in 0..h {
                dxr[i] = xr[i] - mean;
            }
            let rstd = 1.0 / (dot(dxr, dxr) * inv_h + eps).sqrt();
            let mut a = [0f32; 16];
            let mut c = [0f32; 16];
            for i in 0..h {
                let xh = dxr[i] * rstd;
                dxr[i] = xh;
                let gd = dyr[i] * g[i];
                a[i % 16] += gd;
                c[i % 16] += gd * xh;
            }
            let a: f32 = a.iter().sum::<f32>() * inv_h;
            let c: f32 = c.iter().sum::<f32>() * inv_h;
            for i in 0..h {
                dxr[i] = rstd * (dyr[i] * g[i] - a - dxr[i] * c);
            }
        }
    }
}

multiversion! {
    /// `dgamma += Σ dy·x̂`, `dbeta += Σ dy` over rows of `g.len()` (`scratch` holds one row).
    pub fn layer_norm_param_grads(x: &[f32], dy: &[f32], h: usize, eps: f32, dg: &mut [f32], db: &mut [f32], scratch: &mut [f32]) {
        let inv_h = 1.0 / h as f32;
        let scratch = &mut scratch[..h];
        let (dg, db) = (&mut dg[..h], &mut db[..h]);
        for (xr, dyr) in x.chunks_exact(h).zip(dy.chunks_exact(h)) {
            let mean = sum(xr) * inv_h;
            for i in 0..h {
                scratch[i] = xr[i] - mean;
            }
            let rstd = 1.0 / (dot(scratch, scratch) * inv_h + eps).sqrt();
            for i in 0..h {
                dg[i] += dyr[i] * scratch[i] * rstd;
                db[i] += dyr[i];
            }
        }
    }
}

multiversion! {
    /// Softmax backward rows: `out = scale · y · (dy − Σ dy·y)`.
    pub fn softmax_bwd_rows(y: &[f32], dy: &[f32], k: usize, scale: f32, out: &mut [f32]) {
        for ((yr, dr), or) in y.chunks_exact(k).zip(dy.chunks_exact(k)).zip(out.chunks_exact_mut(k)) {
            let d = dot(yr, dr);
            for i in 0..k {
                or[i] = scale * yr[i] * (dr[i] - d);
            }
        }
    }
}

multiversion! {
    /// Column sums of rows of `out.len()`, added into `out`.
    pub fn col_sums(x: &[f32], out: &mut [f32]) {
        let k = out.len();
        for row in x.chunks_exact(k) {
            for i in 0..k {
                out[i] += row[i];
            }
        }
    }
}

/// A buffer of `len` values that `write` fills in full through the pointer it is given, made
/// without zero-filling it first: a gemm output of tens of MiB per op is otherwise written
/// twice (glibc's `calloc` clears a reused block with memset; ~2.5% of a MiniLM step's CPU
/// time went to that).
///
/// # Safety
/// `write` must write every one of the `len` values through the pointer (as [`mm`] does: it
/// overwrites `dst`), and must not read them before writing.
pub unsafe fn filled_by(len: usize, write: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    write(v.as_mut_ptr());
    // SAFETY: the caller's `write` initialised all `len` values of the capacity.
    unsafe { v.set_len(len) };
    v
}

/// `dst[m×n] = lhs[m×k] · rhs[k×n]` with explicit (row, column) strides, through the `gemm`
/// crate (overwriting `dst`). The attention kernels run it single-threaded inside their own
/// parallel loop over heads; the linear layers give it the thread pool.
///
/// # Safety
/// Every pointer must be valid for the extents its strides and sizes imply, and `dst` must
/// not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub unsafe fn mm(
    par: gemm::Parallelism,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: std's `f32::exp` (relative error) and candle's `erf_f64` (absolute error).
    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8000..=8000 {
            let x = i as f32 / 100.0;
            let (a, b) = (exp_f(x), x.exp());
            assert!(((a - b) / b).abs() < 1e-6, "exp({x}) = {a}, std {b}");
        }
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let e = candle_core::cpu::erf::erf_f64(x as f64) as f32;
            assert!((erf(x) - e).abs() < 3e-7, "erf({x}) = {} vs {e}", erf(x));
        }
    }

    #[test]
    fn reductions_match_serial_sums() {
        let x: Vec<f32> = (0..1001).map(|i| ((i * 7919) % 113) as f32 / 17.0 - 3.0).collect();
        let y: Vec<f32> = x.iter().map(|v| v * 0.5 + 1.0).collect();
        let s: f64 = x.iter().map(|&v| v as f64).sum();
        let d: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
        assert!((sum(&x) as f64 - s).abs() < 1e-3);
        assert!((dot(&x, &y) as f64 - d).abs() < 1e-2);
        assert_eq!(max(&x), x.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
    }
}
