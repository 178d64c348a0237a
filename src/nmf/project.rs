//! Projection of rows onto a fixed basis (`NmfModel::transform`): multiplicative updates of
//! the coefficients `H` only, with `W` fixed.
//!
//! Every row is solved **independently of the other rows in the batch**, so the features of
//! an image do not depend on which images it is transformed with (important when clean and
//! adversarial images are transformed in different batches):
//!
//! * init: the constant row `h_i = α_i·1` with the best scalar `α_i` for that row — least
//!   squares `α = ⟨v, s⟩/‖s‖²` (Frobenius) or `α = Σv/Σs` (KL), where `s = 1ᵀW` is the sum
//!   of the basis rows. (scikit-learn uses `√(mean(V)/K)` of the whole batch instead.)
//! * stopping: every [`CHECK_EVERY`](super::mu::CHECK_EVERY) iterations each row compares
//!   its own objective with its value at the previous check and freezes once the relative
//!   decrease is below `tol`; `tol = 0` ⇒ exactly `max_iter` updates for every row.
//!
//! Rows are processed in chunks of [`CHUNK`] in parallel (rayon); inside a chunk products
//! are GEMMs into buffers allocated once per chunk. The Frobenius update needs `VWᵀ` only
//! once per chunk, then `H·(WWᵀ)` (`K × K`) per iteration, so it is cheap.

use super::mu::{f, flush, nan_error, EPS};
use super::NmfLoss;
use crate::error::Result;
use crate::Scalar;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

/// Rows per parallel work unit.
pub const CHUNK: usize = 256;

/// Coefficients (`n × K`) of the rows of `v` (`n × p`) on the basis `w` (`K × p`).
pub fn project<T: Scalar>(
    v: ArrayView2<T>,
    w: ArrayView2<T>,
    loss: NmfLoss,
    max_iter: usize,
    tol: f64,
) -> Result<Array2<T>> {
    let (n, k) = (v.nrows(), w.nrows());
    let mut h = Array2::<T>::zeros((n, k));
    let mut g = Array2::<T>::zeros((k, k));
    general_mat_mul(T::one(), &w, &w.t(), T::zero(), &mut g);
    let row_sums: Array1<T> = w.sum_axis(Axis(1));
    v.axis_chunks_iter(Axis(0), CHUNK)
        .into_par_iter()
        .zip(h.axis_chunks_iter_mut(Axis(0), CHUNK))
        .map(|(vc, hc)| match loss {
            NmfLoss::Frobenius => frob_chunk(vc, w, &g, hc, max_iter, tol, None),
            NmfLoss::Kl => kl_chunk(vc, w, &row_sums, hc, max_iter, tol),
        })
        .collect::<Result<Vec<()>>>()?;
    Ok(h)
}

/// Per-row bookkeeping of the stopping rule.
struct RowStop {
    tol: f64,
    last: Vec<f64>,
    pub(super) active: Vec<bool>,
}

impl RowStop {
    fn new(rows: usize, tol: f64) -> Self {
        RowStop {
            tol,
            last: vec![0.0; rows],
            active: vec![true; rows],
        }
    }
    /// Record row `i`'s objective after `t` updates; deactivates converged rows.
    fn record(&mut self, i: usize, t: usize, obj: f64) -> Result<()> {
        if !obj.is_finite() {
            return Err(nan_error(obj, t));
        }
        if t == 0 {
            self.last[i] = obj;
        } else if self.tol > 0.0 && t.is_multiple_of(super::mu::CHECK_EVERY) && self.active[i] {
            let last = self.last[i];
            let rel = if last > 0.0 { (last - obj) / last } else { 0.0 };
            self.last[i] = obj;
            if rel < self.tol {
                self.active[i] = false;
            }
        }
        Ok(())
    }
    fn any_active(&self) -> bool {
        self.active.iter().any(|&a| a)
    }
}

/// The Frobenius projection of one chunk; with `tape`, what its backward pass needs is
/// recorded as it runs ([`super::project_grad`]), without changing a single operation.
pub(super) fn frob_chunk<T: Scalar>(
    v: ArrayView2<T>,
    w: ArrayView2<T>,
    g: &Array2<T>,
    mut h: ArrayViewMut2<T>,
    max_iter: usize,
    tol: f64,
    mut tape: Option<&mut super::project_grad::ChunkTape<T>>,
) -> Result<()> {
    let (c, k) = h.dim();
    let (one, zero, eps) = (T::one(), T::zero(), T::c(EPS));
    let mut b = Array2::<T>::zeros((c, k));
    general_mat_mul(one, &v, &w.t(), zero, &mut b);
    let mut hg = Array2::<T>::zeros((c, k));
    let vn: Vec<f64> = v
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&x| f(x) * f(x)).sum())
        .collect();
    let gsum: f64 = g.iter().map(|&x| f(x)).sum();
    for (mut hr, br) in h.rows_mut().into_iter().zip(b.rows()) {
        let vs: f64 = br.iter().map(|&x| f(x)).sum();
        let alpha = if gsum > 0.0 {
            (vs / gsum).max(0.0)
        } else {
            0.0
        };
        hr.fill(T::c(alpha));
    }
    if let Some(tp) = tape.as_deref_mut() {
        tp.start(&b, gsum, c);
    }
    let mut stop = RowStop::new(c, tol);
    for t in 0..=max_iter {
        general_mat_mul(one, &h, g, zero, &mut hg);
        // The per-row objective is needed only where the stopping rule looks at it (and
        // at the end, to catch a non-finite result).
        let check = t == 0 || t == max_iter || t.is_multiple_of(super::mu::CHECK_EVERY);
        let rows = h.rows().into_iter().zip(b.rows()).zip(hg.rows());
        for (i, ((hr, br), gr)) in rows.enumerate().filter(|_| check) {
            let (mut hb, mut hgh) = (0.0f64, 0.0f64);
            for ((&x, &y), &z) in hr.iter().zip(br.iter()).zip(gr.iter()) {
                hb += f(x) * f(y);
                hgh += f(x) * f(z);
            }
            stop.record(i, t, (0.5 * (vn[i] - 2.0 * hb + hgh)).max(0.0))?;
        }
        if t == max_iter || !stop.any_active() {
            break;
        }
        if let Some(tp) = tape.as_deref_mut() {
            tp.record(&h, &stop.active);
        }
        for (i, ((mut hr, br), gr)) in h
            .rows_mut()
            .into_iter()
            .zip(b.rows())
            .zip(hg.rows())
            .enumerate()
        {
            if stop.active[i] {
                Zip::from(&mut hr)
                    .and(&br)
                    .and(&gr)
                    .for_each(|x, &a, &d| *x = flush(*x * a / (d + eps)));
            }
        }
    }
    Ok(())
}

fn kl_chunk<T: Scalar>(
    v: ArrayView2<T>,
    w: ArrayView2<T>,
    row_sums: &Array1<T>,
    mut h: ArrayViewMut2<T>,
    max_iter: usize,
    tol: f64,
) -> Result<()> {
    let (c, k) = h.dim();
    let (one, zero, eps) = (T::one(), T::zero(), T::c(EPS));
    let p = v.ncols();
    let mut buf = Array2::<T>::zeros((c, p));
    let mut num = Array2::<T>::zeros((c, k));
    let stot: f64 = row_sums.iter().map(|&x| f(x)).sum();
    for (mut hr, vr) in h.rows_mut().into_iter().zip(v.rows()) {
        let vs: f64 = vr.iter().map(|&x| f(x)).sum();
        hr.fill(T::c(if stot > 0.0 { vs / stot } else { 0.0 }));
    }
    let mut stop = RowStop::new(c, tol);
    for t in 0..=max_iter {
        general_mat_mul(one, &h, &w, zero, &mut buf);
        for (i, (vr, br)) in v.rows().into_iter().zip(buf.rows()).enumerate() {
            let mut obj = 0.0f64;
            for (&x, &y) in vr.iter().zip(br.iter()) {
                let (x, y) = (f(x), f(y));
                if x > 0.0 {
                    obj += x * (x / (y + EPS)).ln() - x;
                }
                obj += y;
            }
            stop.record(i, t, obj.max(0.0))?;
        }
        if t == max_iter || !stop.any_active() {
            break;
        }
        Zip::from(&mut buf)
            .and(v)
            .for_each(|r, &x| *r = x / (*r + eps));
        general_mat_mul(one, &buf, &w.t(), zero, &mut num);
        for (i, (mut hr, nr)) in h.rows_mut().into_iter().zip(num.rows()).enumerate() {
            if stop.active[i] {
                Zip::from(&mut hr)
                    .and(&nr)
                    .and(row_sums)
                    .for_each(|x, &a, &s| *x = flush(*x * a / (s + eps)));
            }
        }
    }
    Ok(())
}
