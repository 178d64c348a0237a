//! The exact input gradient of the Frobenius projection ([`super::project`]): the
//! pixel-space threat model differentiates the NNMF features of an image through the very
//! multiplicative-update solve that computes them (same initialisation, same iterations, same
//! per-row stopping), unrolled. `W·v` is formed once per image; every step needs only the
//! `K × K` Gram matrix `G = W Wᵀ`, so the backward pass costs about what the forward did.
//!
//! Forward (per row, `b = W v`): `h₀ = α·1` with `α = max(Σb / ΣG, 0)`, then while the row is
//! active `h ← flush(h ⊙ b ⊘ (G h + ε))`. Backward, for an adjoint `ā` of the result: each
//! step, in reverse, maps `s = ā ⊙ [raw ≥ min⁺]` (flush has zero slope below the smallest
//! normal) to `ā ← s ⊙ b ⊘ q − G (s ⊙ h ⊙ b ⊘ q²)` and `b̄ += s ⊙ h ⊘ q` with `q = G h + ε`;
//! the start adds `Σā / ΣG` to every `b̄` entry where `α > 0`; finally `v̄ = b̄ W`. The stopping
//! decisions are piecewise constant in `v`, so they are taken as recorded.

use super::mu::EPS;
use super::project::{frob_chunk, CHUNK};
use crate::error::Result;
use crate::Scalar;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// What one chunk's forward pass recorded: `b = V Wᵀ`, which rows took the `α > 0` branch,
/// `ΣG`, and before every update step the coefficients and the rows it updated.
#[derive(Clone, Debug, Default)]
pub struct ChunkTape<T> {
    b: Array2<T>,
    alpha_on: Vec<bool>,
    gsum: f64,
    steps: Vec<(Array2<T>, Vec<bool>)>,
}

impl<T: Scalar> ChunkTape<T> {
    pub(super) fn start(&mut self, b: &Array2<T>, gsum: f64, rows: usize) {
        self.b = b.clone();
        self.gsum = gsum;
        self.alpha_on = (0..rows)
            .map(|i| gsum > 0.0 && b.row(i).iter().map(|&x| super::mu::f(x)).sum::<f64>() > 0.0)
            .collect();
    }

    pub(super) fn record(&mut self, h: &ArrayViewMut2<T>, updated: &[bool]) {
        self.steps.push((h.to_owned(), updated.to_vec()));
    }

    /// `b̄` of this chunk for the adjoint `a` of its result (`c × K`).
    fn backward(&self, g: &Array2<T>, mut a: Array2<T>) -> Array2<T> {
        let (c, k) = a.dim();
        let eps = T::c(EPS);
        let mut b_bar = Array2::<T>::zeros((c, k));
        let mut q = Array2::<T>::zeros((c, k));
        let mut t = Array2::<T>::zeros((c, k));
        let mut back = Array2::<T>::zeros((c, k));
        for (h, updated) in self.steps.iter().rev() {
            general_mat_mul(T::one(), h, g, T::zero(), &mut q);
            q.mapv_inplace(|x| x + eps);
            // s = ā ⊙ flush slope; t = s ⊙ h ⊙ b ⊘ q² (zero on rows not updated).
            for i in 0..c {
                for j in 0..k {
                    let (hj, bj, qj) = (h[[i, j]], self.b[[i, j]], q[[i, j]]);
                    let on = updated[i] && hj * bj / qj >= T::min_positive_value();
                    let s = if on { a[[i, j]] } else { T::zero() };
                    t[[i, j]] = s * hj * bj / (qj * qj);
                    if updated[i] {
                        b_bar[[i, j]] += s * hj / qj;
                        a[[i, j]] = s * bj / qj;
                    }
                }
            }
            general_mat_mul(T::one(), &t, g, T::zero(), &mut back);
            for i in (0..c).filter(|&i| updated[i]) {
                for j in 0..k {
                    a[[i, j]] -= back[[i, j]];
                }
            }
        }
        for i in (0..c).filter(|&i| self.alpha_on[i]) {
            let d = T::c(a.row(i).iter().map(|&x| super::mu::f(x)).sum::<f64>() / self.gsum);
            b_bar.row_mut(i).mapv_inplace(|x| x + d);
        }
        b_bar
    }
}

/// The forward pass of [`project_taped`], kept for [`ProjectionTape::backward`].
#[derive(Clone, Debug)]
pub struct ProjectionTape<T> {
    g: Array2<T>,
    chunks: Vec<ChunkTape<T>>,
}

/// [`super::project::project`] with the Frobenius loss (the same coefficients, operation for
/// operation), recording what the exact backward pass needs.
pub fn project_taped<T: Scalar>(
    v: ArrayView2<T>,
    w: ArrayView2<T>,
    max_iter: usize,
    tol: f64,
) -> Result<(Array2<T>, ProjectionTape<T>)> {
    let (n, k) = (v.nrows(), w.nrows());
    let mut h = Array2::<T>::zeros((n, k));
    let mut g = Array2::<T>::zeros((k, k));
    general_mat_mul(T::one(), &w, &w.t(), T::zero(), &mut g);
    let chunks = v
        .axis_chunks_iter(Axis(0), CHUNK)
        .into_par_iter()
        .zip(h.axis_chunks_iter_mut(Axis(0), CHUNK))
        .map(|(vc, hc)| {
            let mut tape = ChunkTape::default();
            frob_chunk(vc, w, &g, hc, max_iter, tol, Some(&mut tape))?;
            Ok(tape)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((h, ProjectionTape { g, chunks }))
}

impl<T: Scalar> ProjectionTape<T> {
    /// `v̄ = (∂h/∂v)ᵀ h̄` (`n × p`) for the adjoint `h_bar` (`n × K`) of the coefficients;
    /// `w` is the basis the forward pass used.
    pub fn backward(&self, w: ArrayView2<T>, h_bar: ArrayView2<T>) -> Array2<T> {
        let n = h_bar.nrows();
        let mut v_bar = Array2::<T>::zeros((n, w.ncols()));
        self.chunks
            .par_iter()
            .zip(h_bar.axis_chunks_iter(Axis(0), CHUNK))
            .zip(v_bar.axis_chunks_iter_mut(Axis(0), CHUNK))
            .for_each(|((tape, hb), mut vb)| {
                let b_bar = tape.backward(&self.g, hb.to_owned());
                general_mat_mul(T::one(), &b_bar, &w, T::zero(), &mut vb);
            });
        v_bar
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nmf::project::project;
    use crate::nmf::NmfLoss;
    use crate::rng::{fill_uniform, stream};

    fn uniform(r: usize, c: usize, seed: u64, lo: f64, hi: f64) -> Array2<f64> {
        let mut a = Array2::<f64>::zeros((r, c));
        fill_uniform(&mut stream(seed, &[]), a.as_slice_mut().unwrap(), lo, hi);
        a
    }

    #[test]
    fn the_taped_projection_is_the_projection() {
        let w = uniform(5, 12, 1, 0.0, 1.0);
        let v = uniform(300, 12, 2, 0.0, 1.0);
        for (max_iter, tol) in [(0, 0.0), (7, 0.0), (200, 1e-4)] {
            let want = project(v.view(), w.view(), NmfLoss::Frobenius, max_iter, tol).unwrap();
            let (got, _) = project_taped(v.view(), w.view(), max_iter, tol).unwrap();
            assert_eq!(got, want, "f64, {max_iter} iterations, tol {tol}");
            let (v32, w32) = (v.mapv(|x| x as f32), w.mapv(|x| x as f32));
            let want = project(v32.view(), w32.view(), NmfLoss::Frobenius, max_iter, tol).unwrap();
            let (got, _) = project_taped(v32.view(), w32.view(), max_iter, tol).unwrap();
            assert_eq!(got, want, "f32, {max_iter} iterations, tol {tol}");
        }
    }

    /// `L(v) = Σ r ⊙ h(v)` for a fixed random `r`: its gradient is `backward(r)`, checked
    /// against central differences of the forward projection itself (f64).
    #[test]
    fn the_image_gradient_matches_finite_differences() {
        let (k, p) = (4, 9);
        let w = uniform(k, p, 3, 0.0, 1.0);
        // Rows: generic, one with a zero pixel, one all-zero image (α = 0 branch).
        let mut v = uniform(3, p, 4, 0.05, 1.0);
        v[[1, 2]] = 0.0;
        v.row_mut(2).fill(0.0);
        let r = uniform(3, k, 5, -1.0, 1.0);
        for max_iter in [0, 1, 5, 40] {
            let (_, tape) = project_taped(v.view(), w.view(), max_iter, 0.0).unwrap();
            let g = tape.backward(w.view(), r.view());
            for i in 0..2 {
                let f = |x: &[f64]| {
                    let row = ArrayView2::from_shape((1, p), x).unwrap();
                    let h = project(row, w.view(), NmfLoss::Frobenius, max_iter, 0.0).unwrap();
                    (&h.row(0) * &r.row(i)).sum()
                };
                let name = format!("projection gradient, row {i}, {max_iter} iterations");
                let x = v.row(i).to_vec();
                crate::testutil::check_elementwise(&name, f, &x, &g.row(i).to_vec());
            }
        }
    }

    #[test]
    fn a_wrong_step_adjoint_would_be_caught() {
        // The same check on a perturbed gradient must fail: the test can see an error of
        // 1e-3 in one pixel.
        let w = uniform(3, 6, 7, 0.0, 1.0);
        let v = uniform(1, 6, 8, 0.1, 1.0);
        let r = uniform(1, 3, 9, -1.0, 1.0);
        let (_, tape) = project_taped(v.view(), w.view(), 10, 0.0).unwrap();
        let mut g = tape.backward(w.view(), r.view()).row(0).to_vec();
        g[3] += 1e-3;
        let f = |x: &[f64]| {
            let row = ArrayView2::from_shape((1, 6), x).unwrap();
            let h = project(row, w.view(), NmfLoss::Frobenius, 10, 0.0).unwrap();
            (&h.row(0) * &r.row(0)).sum()
        };
        let caught = std::panic::catch_unwind(|| {
            crate::testutil::check_elementwise("perturbed", f, &v.row(0).to_vec(), &g)
        });
        assert!(caught.is_err());
    }
}
