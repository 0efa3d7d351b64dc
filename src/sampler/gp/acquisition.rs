//! Log expected improvement for minimisation, accurate where EI is large and finite (a
//! useful slope, not −∞) where EI itself underflows far from the incumbent.
//!
//! With `z = (best − μ)/σ`, `EI = σ h(z)` and `h(z) = φ(z) + z Φ(z)`. For `z ≥ −1` we take
//! `ln h` directly. Below, `h(z) = φ(z) (1 − |z| m(|z|))` with the Mills ratio
//! `m(a) = Φ(−a)/φ(a)`, evaluated in a form that never forms `φ` or `Φ` themselves; beyond
//! `|z| = 12` the bracket comes from its asymptotic series `1/z² − 3/z⁴ + 15/z⁶ − 105/z⁸`.
//! The normal tail uses the Chebyshev-fitted `erfc(x) = t exp(−x² + P(t))`, `t = 1/(1 + x/2)`
//! (fractional error below 1.2e-7; Numerical Recipes §6.2), so `ln Φ` is exact in form.

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
const SQRT_PI_OVER_2: f64 = 1.253_314_137_315_500_3;
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;

/// `P(t)` of the erfc fit: `ln(erfc(x)/t) + x²`.
fn erfc_poly(t: f64) -> f64 {
    -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07 + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))))
}

/// `ln erfc(x)` for `x ≥ 0`.
fn ln_erfc_nonneg(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x);
    t.ln() - x * x + erfc_poly(t)
}

/// `ln Φ(z)`, the log standard normal CDF.
pub fn ln_norm_cdf(z: f64) -> f64 {
    if z < 0.0 {
        std::f64::consts::LN_2.mul_add(-1.0, ln_erfc_nonneg(-z * FRAC_1_SQRT_2))
    } else {
        let upper = 0.5 * ln_erfc_nonneg(z * FRAC_1_SQRT_2).exp();
        (-upper).ln_1p()
    }
}

/// `Φ(z)`.
pub fn norm_cdf(z: f64) -> f64 {
    ln_norm_cdf(z).exp()
}

/// `ln φ(z)`.
pub fn ln_norm_pdf(z: f64) -> f64 {
    -0.5 * z * z - LN_SQRT_2PI
}

/// `ln h(z)`, `h(z) = φ(z) + z Φ(z)`.
pub fn ln_h(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NEG_INFINITY;
    }
    if z >= -1.0 {
        let h = ln_norm_pdf(z).exp() + z * norm_cdf(z);
        return h.ln();
    }
    let a = -z;
    let bracket = if a < 12.0 {
        // m(a) = Φ(−a)/φ(a) = ½ erfc(a/√2) √(2π) e^{a²/2} = √(π/2) t e^{P(t)}
        let t = 1.0 / (1.0 + 0.5 * a * FRAC_1_SQRT_2);
        let mills = SQRT_PI_OVER_2 * t * erfc_poly(t).exp();
        1.0 - a * mills
    } else {
        let inv = 1.0 / (a * a);
        inv * (1.0 - inv * (3.0 - inv * (15.0 - 105.0 * inv)))
    };
    ln_norm_pdf(z) + bracket.max(f64::MIN_POSITIVE).ln()
}

/// `d ln h / dz = Φ(z)/h(z)`, computed in log space.
fn d_ln_h(z: f64) -> f64 {
    (ln_norm_cdf(z) - ln_h(z)).exp()
}

/// Log EI at a point with latent mean `mean` and variance `var`, against the incumbent
/// `best` (all on the standardised scale, minimising). Also returns the derivatives with
/// respect to the mean and the variance.
pub fn log_ei(mean: f64, var: f64, best: f64) -> (f64, f64, f64) {
    let sigma = var.max(1e-300).sqrt();
    let z = (best - mean) / sigma;
    let value = sigma.ln() + ln_h(z);
    if !value.is_finite() {
        return (f64::MIN / 4.0, 0.0, 0.0);
    }
    let g = d_ln_h(z);
    // dz/dμ = −1/σ; d ln EI/dσ = 1/σ − g z/σ; dσ/dvar = 1/(2σ).
    let d_mean = -g / sigma;
    let d_sigma = (1.0 - g * z) / sigma;
    (value, d_mean, d_sigma / (2.0 * sigma))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// φ(1) = 0.24197072451914337 and Φ(1) = 0.8413447460685429 are the standard table
    /// values (e.g. scipy.stats.norm.pdf(1), .cdf(1)); h(0) = φ(0) = 1/√(2π).
    #[test]
    fn log_ei_matches_closed_form_where_ei_is_large() {
        let (pdf1, cdf1) = (0.241_970_724_519_143_37, 0.841_344_746_068_542_9);
        let cases = [(0.0, 1.0 / (2.0 * std::f64::consts::PI).sqrt()), (1.0, pdf1 + cdf1), (-1.0, pdf1 - (1.0 - cdf1))];
        for (z, h) in cases {
            assert!((ln_h(z) - f64::ln(h)).abs() < 1e-6, "z {z}: {} vs {}", ln_h(z), f64::ln(h));
        }
        // EI with σ = 2, μ = 1, best = 3 (z = 1): 2 h(1).
        let (v, _, _) = log_ei(1.0, 4.0, 3.0);
        assert!((v - (2.0 * (pdf1 + cdf1)).ln()).abs() < 1e-6);
    }

    #[test]
    fn log_ei_stays_finite_and_monotone_where_ei_underflows() {
        let mut prev = f64::INFINITY;
        for z in [-2.0, -5.0, -11.9, -12.1, -40.0, -1e3, -1e8] {
            let v = ln_h(z);
            assert!(v.is_finite() && v < prev, "z {z}: {v}");
            prev = v;
            // Leading behaviour: ln h ≈ ln φ(z) − 2 ln|z|.
            if z <= -40.0 {
                assert!((v - (ln_norm_pdf(z) - 2.0 * z.abs().ln())).abs() < 1e-2);
            }
        }
        // Both branches agree where they meet.
        assert!((ln_h(-11.999_999) - ln_h(-12.000_001)).abs() < 1e-4);
        assert!((ln_h(-0.999_999_9) - ln_h(-1.000_000_1)).abs() < 1e-5);
        assert!(f64::exp(ln_h(-40.0)) == 0.0, "EI itself underflows here");
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (m, v, b) in [(0.3, 0.2, 0.1), (2.0, 0.01, -1.0), (-0.5, 1.5, 0.0)] {
            let (_, dm, dv) = log_ei(m, v, b);
            let h = 1e-6;
            let fdm = (log_ei(m + h, v, b).0 - log_ei(m - h, v, b).0) / (2.0 * h);
            let fdv = (log_ei(m, v + h, b).0 - log_ei(m, v - h, b).0) / (2.0 * h);
            assert!((dm - fdm).abs() < 1e-4 * (1.0 + fdm.abs()), "{dm} vs {fdm}");
            assert!((dv - fdv).abs() < 1e-4 * (1.0 + fdv.abs()), "{dv} vs {fdv}");
        }
    }
}
