//! Dense linear algebra for the Gaussian process: Cholesky factorisation of a symmetric
//! positive-definite matrix with a jitter that grows until the factorisation succeeds,
//! triangular solves (one or many right-hand sides) and the inverse from the factor.
//!
//! Matrices are row-major `Vec<f64>` of `n * n`. Nothing here panics on bad numbers: a
//! matrix with NaN or infinite entries, or one that stays indefinite under the largest
//! jitter, is an error.

/// Why a matrix could not be factorised.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinalgError {
    #[error("the matrix has a non-finite entry")]
    NonFinite,
    #[error("the matrix is not positive definite even with jitter {0:e}")]
    NotPositiveDefinite(f64),
}

/// The lower-triangular factor `L` of `A + jitter * I = L Lᵀ`.
#[derive(Debug, Clone)]
pub struct Cholesky {
    n: usize,
    /// Row-major, only the lower triangle is meaningful (the rest is zero).
    l: Vec<f64>,
    /// The jitter that had to be added to the diagonal (0 when none).
    pub jitter: f64,
}

/// Dot product of two equal-length slices, with four accumulators so the loop is not one
/// long dependency chain.
#[inline]
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut s = [0.0f64; 4];
    let chunks = n / 4;
    for c in 0..chunks {
        let i = 4 * c;
        s[0] += a[i] * b[i];
        s[1] += a[i + 1] * b[i + 1];
        s[2] += a[i + 2] * b[i + 2];
        s[3] += a[i + 3] * b[i + 3];
    }
    let mut tail = 0.0;
    for i in 4 * chunks..n {
        tail += a[i] * b[i];
    }
    (s[0] + s[1]) + (s[2] + s[3]) + tail
}

/// `y += alpha * x`.
#[inline]
fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

impl Cholesky {
    /// Factorises the symmetric `n x n` matrix `a` (row-major; only the lower triangle is
    /// read). When it is not numerically positive definite, adds a jitter to the diagonal
    /// that starts at 1e-10 of the mean diagonal and grows tenfold, up to ten tries.
    pub fn new(a: &[f64], n: usize) -> Result<Cholesky, LinalgError> {
        if a.len() != n * n || a.iter().any(|v| !v.is_finite()) {
            return Err(LinalgError::NonFinite);
        }
        let mean_diag = if n == 0 { 1.0 } else { (0..n).map(|i| a[i * n + i].abs()).sum::<f64>() / n as f64 };
        let scale = if mean_diag > 0.0 { mean_diag } else { 1.0 };
        let mut l = vec![0.0; n * n];
        if Self::factor_into(a, n, 0.0, &mut l) {
            return Ok(Cholesky { n, l, jitter: 0.0 });
        }
        let mut jitter = 1e-10 * scale;
        for _ in 0..10 {
            if Self::factor_into(a, n, jitter, &mut l) {
                return Ok(Cholesky { n, l, jitter });
            }
            jitter *= 10.0;
        }
        Err(LinalgError::NotPositiveDefinite(jitter / 10.0))
    }

    /// The factor of a matrix whose leading `self.dim()` block is the one `self` factors
    /// (without jitter): only the new rows are computed, with exactly the arithmetic a
    /// factorisation from scratch would use, so the result is bit-identical to
    /// [`Cholesky::new`] whenever that needs no jitter. Only rows `self.dim()..n` of `a` are
    /// read. `None` when `self` needed jitter or a new pivot is not positive.
    pub fn extended(&self, a: &[f64], n: usize) -> Option<Cholesky> {
        let n0 = self.n;
        if self.jitter != 0.0 || n0 > n || a.len() != n * n {
            return None;
        }
        if a[n0 * n..].iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut l = vec![0.0; n * n];
        for i in 0..n0 {
            l[i * n..i * n + i + 1].copy_from_slice(&self.l[i * n0..i * n0 + i + 1]);
        }
        Self::factor_rows(a, n, 0.0, &mut l, n0).then_some(Cholesky { n, l, jitter: 0.0 })
    }

    /// Cholesky–Banachiewicz, row by row. False when a pivot is not positive.
    fn factor_into(a: &[f64], n: usize, jitter: f64, l: &mut [f64]) -> bool {
        Self::factor_rows(a, n, jitter, l, 0)
    }

    /// Rows `from..n` of the factor, given rows `..from` already in `l`.
    fn factor_rows(a: &[f64], n: usize, jitter: f64, l: &mut [f64], from: usize) -> bool {
        for i in from..n {
            let (head, rest) = l.split_at_mut(i * n);
            let row_i = &mut rest[..n];
            for j in 0..i {
                let s = a[i * n + j] - dot(&row_i[..j], &head[j * n..j * n + j]);
                row_i[j] = s / head[j * n + j];
            }
            let d = a[i * n + i] + jitter - dot(&row_i[..i], &row_i[..i]);
            if d.is_nan() || d <= 0.0 || d.is_infinite() {
                return false;
            }
            row_i[i] = d.sqrt();
            for v in &mut row_i[i + 1..] {
                *v = 0.0;
            }
        }
        true
    }

    pub fn dim(&self) -> usize {
        self.n
    }

    /// `L[i][j]`.
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.l[i * self.n + j]
    }

    /// `ln det(A + jitter I) = 2 Σ ln L_ii`.
    pub fn log_det(&self) -> f64 {
        (0..self.n).map(|i| self.l[i * self.n + i].ln()).sum::<f64>() * 2.0
    }

    /// Solves `L x = b`.
    pub fn solve_lower(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x = vec![0.0; n];
        for i in 0..n {
            let row = &self.l[i * n..i * n + i];
            x[i] = (b[i] - dot(row, &x[..i])) / self.l[i * n + i];
        }
        x
    }

    /// Solves `Lᵀ x = b`.
    pub fn solve_upper(&self, b: &[f64]) -> Vec<f64> {
        let n = self.n;
        let mut x = b.to_vec();
        for i in (0..n).rev() {
            x[i] /= self.l[i * n + i];
            let xi = x[i];
            let row = &self.l[i * n..i * n + i];
            axpy(-xi, row, &mut x[..i]);
        }
        x
    }

    /// Solves `(L Lᵀ) x = b`.
    pub fn solve(&self, b: &[f64]) -> Vec<f64> {
        self.solve_upper(&self.solve_lower(b))
    }

    /// Solves `L V = B` for `m` right-hand sides at once: `b` is `n x m` row-major (row `i`
    /// holds entry `i` of every right-hand side) and is overwritten with `V`.
    pub fn solve_lower_many(&self, b: &mut [f64], m: usize) {
        let n = self.n;
        for i in 0..n {
            let (done, rest) = b.split_at_mut(i * m);
            let row_i = &mut rest[..m];
            for k in 0..i {
                let lik = self.l[i * n + k];
                if lik != 0.0 {
                    axpy(-lik, &done[k * m..(k + 1) * m], row_i);
                }
            }
            let inv = 1.0 / self.l[i * n + i];
            for v in row_i.iter_mut() {
                *v *= inv;
            }
        }
    }

    /// `(L Lᵀ)⁻¹`, full symmetric, row-major.
    pub fn inverse(&self) -> Vec<f64> {
        let n = self.n;
        // Linv = L⁻¹ (lower triangular), row by row.
        let mut linv = vec![0.0; n * n];
        for i in 0..n {
            let (done, rest) = linv.split_at_mut(i * n);
            let row_i = &mut rest[..n];
            let inv_d = 1.0 / self.l[i * n + i];
            for k in 0..i {
                let lik = self.l[i * n + k];
                if lik != 0.0 {
                    axpy(-lik, &done[k * n..k * n + k + 1], &mut row_i[..k + 1]);
                }
            }
            for v in row_i[..i].iter_mut() {
                *v *= inv_d;
            }
            row_i[i] = inv_d;
        }
        // A⁻¹ = Linvᵀ Linv: entry (a, b) = Σ_{i ≥ max(a,b)} Linv[i][a] Linv[i][b].
        let mut inv = vec![0.0; n * n];
        for i in 0..n {
            let row = &linv[i * n..i * n + i + 1];
            for a in 0..=i {
                let ra = row[a];
                if ra != 0.0 {
                    axpy(ra, &row[..a + 1], &mut inv[a * n..a * n + a + 1]);
                }
            }
        }
        for a in 0..n {
            for b in 0..a {
                inv[b * n + a] = inv[a * n + b];
            }
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spd3() -> Vec<f64> {
        // A = M Mᵀ + I for M = [[1,2,0],[0,1,3],[2,0,1]], built by hand:
        vec![6.0, 2.0, 2.0, 2.0, 11.0, 3.0, 2.0, 3.0, 6.0]
    }

    #[test]
    fn factor_solve_and_inverse_agree_with_the_matrix() {
        let a = spd3();
        let c = Cholesky::new(&a, 3).unwrap();
        assert_eq!(c.jitter, 0.0);
        // L Lᵀ == A
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|k| c.at(i, k) * c.at(j, k)).sum();
                assert!((s - a[i * 3 + j]).abs() < 1e-12);
            }
        }
        let b = [1.0, -2.0, 0.5];
        let x = c.solve(&b);
        for i in 0..3 {
            let ax: f64 = (0..3).map(|j| a[i * 3 + j] * x[j]).sum();
            assert!((ax - b[i]).abs() < 1e-12);
        }
        let inv = c.inverse();
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        // det A = 6(66-9) - 2(12-6) + 2(6-22) = 342 - 12 - 32 = 298
        assert!((c.log_det() - 298f64.ln()).abs() < 1e-12);
        let mut many = vec![1.0, 0.0, -2.0, 1.0, 0.5, 3.0]; // columns b and (0,1,3)
        c.solve_lower_many(&mut many, 2);
        let single = c.solve_lower(&b);
        for i in 0..3 {
            assert!((many[i * 2] - single[i]).abs() < 1e-14);
        }
        // Extending the factor of the leading 2x2 block gives the very same factor.
        let lead = Cholesky::new(&[6.0, 2.0, 2.0, 11.0], 2).unwrap();
        let ext = lead.extended(&a, 3).unwrap();
        assert_eq!(ext.l, c.l);
    }

    #[test]
    fn singular_matrix_gets_jitter_and_nan_is_an_error() {
        // Rank one: [[1,1],[1,1]].
        let c = Cholesky::new(&[1.0, 1.0, 1.0, 1.0], 2).unwrap();
        assert!(c.jitter > 0.0 && c.jitter < 1e-3);
        assert_eq!(Cholesky::new(&[1.0, f64::NAN, f64::NAN, 1.0], 2).unwrap_err(), LinalgError::NonFinite);
        assert!(matches!(Cholesky::new(&[-1.0, 0.0, 0.0, -1.0], 2), Err(LinalgError::NotPositiveDefinite(_))));
    }
}
