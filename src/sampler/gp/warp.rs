//! Output transforms: what the GP models instead of the raw (minimised) values.
//!
//! Objectives such as losses often span orders of magnitude, with a few terrible trials
//! (diverged runs, far corners) that would otherwise dominate a standardised GP and flatten
//! everything near the optimum. Besides plain standardisation we offer a log warp
//! `ln(y − min + δ)`, `δ` a fraction of the spread between the best and the median value. The
//! sampler fits the GP under both and keeps the one with the higher likelihood of the *raw*
//! values (the log posterior plus the log Jacobian of the transform), so noisy or
//! already-well-behaved objectives stay untransformed.

/// Fraction of `median − min` added before the log.
const LOG_OFFSET_FRACTION: f64 = 0.3;

/// Which transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputWarp {
    /// Standardisation only.
    Identity,
    /// `ln(y − min + δ)`, then standardisation.
    Log,
}

/// The transformed, standardised values and `Σ ln |dz_i/dy_i|`.
pub fn transform(raw: &[f64], warp: OutputWarp) -> (Vec<f64>, f64) {
    let (z, jac) = transform_each(raw, warp);
    (z, jac.iter().sum())
}

/// The transformed, standardised values and each point's `ln |dz_i/dy_i|`.
pub fn transform_each(raw: &[f64], warp: OutputWarp) -> (Vec<f64>, Vec<f64>) {
    match warp {
        OutputWarp::Identity => {
            let (z, sd) = standardise(raw);
            (z, vec![-sd.ln(); raw.len()])
        }
        OutputWarp::Log => {
            let min = raw.iter().copied().fold(f64::INFINITY, f64::min);
            let med = median(raw);
            let spread = med - min;
            let delta = if spread > 0.0 && spread.is_finite() { LOG_OFFSET_FRACTION * spread } else { 1.0 };
            let logs: Vec<f64> = raw.iter().map(|y| (y - min + delta).ln()).collect();
            let (z, sd) = standardise(&logs);
            let jac = logs.iter().map(|l| -l - sd.ln()).collect();
            (z, jac)
        }
    }
}

/// The median (mean of the middle two for an even count; 0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// `(y − mean)/sd` and the sd used (1 when the values are all equal).
pub fn standardise(ys: &[f64]) -> (Vec<f64>, f64) {
    let n = ys.len().max(1) as f64;
    let mean = ys.iter().sum::<f64>() / n;
    let var = ys.iter().map(|y| (y - mean) * (y - mean)).sum::<f64>() / n;
    let sd = if var > 1e-300 && var.is_finite() { var.sqrt() } else { 1.0 };
    (ys.iter().map(|y| (y - mean) / sd).collect(), sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_keep_order_and_jacobian_matches_finite_differences() {
        let raw = [3.0, 0.5, 120.0, 7.0, 1.0];
        for warp in [OutputWarp::Identity, OutputWarp::Log] {
            let (z, jac) = transform(&raw, warp);
            for i in 0..raw.len() {
                for j in 0..raw.len() {
                    assert_eq!(raw[i] < raw[j], z[i] < z[j]);
                }
            }
            // Jacobian of point i with the transform's constants (min, δ, mean, sd) frozen.
            let h = 1e-7;
            let mut fd_sum = 0.0;
            for i in 0..raw.len() {
                let mut up = raw;
                up[i] += h;
                // Recompute with constants frozen: apply the same affine/log map by hand.
                let (zi_up, zi) = match warp {
                    OutputWarp::Identity => {
                        let sd = standardise(&raw).1;
                        ((up[i] - raw[i]) / sd + z[i], z[i])
                    }
                    OutputWarp::Log => {
                        let min = 0.5;
                        let delta = LOG_OFFSET_FRACTION * (median(&raw) - min);
                        let logs: Vec<f64> = raw.iter().map(|y| (y - min + delta).ln()).collect();
                        let sd = standardise(&logs).1;
                        (z[i] + ((up[i] - min + delta).ln() - logs[i]) / sd, z[i])
                    }
                };
                fd_sum += ((zi_up - zi) / h).ln();
            }
            assert!((fd_sum - jac).abs() < 1e-4, "{warp:?}: {fd_sum} vs {jac}");
        }
    }
}
