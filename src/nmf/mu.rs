//! Lee–Seung multiplicative updates of both factors (the fitting loop), generic over the
//! float type: the reference implementation (f64 fixtures and gradient-free checks) and the
//! KL path. Fitting with the Frobenius loss in f32 runs [`super::exact`], which computes the
//! same iteration with fused sparse products and is tested against this one.
//!
//! Owns the iteration for `V ≈ H·W` (`V`: `n × p`, `H`: `n × K`, `W`: `K × p`) for the
//! Frobenius objective `½‖V − HW‖²_F` and the generalised Kullback–Leibler divergence
//! `Σ v·ln(v/(HW)) − v + HW`. One iteration updates the basis `W` first, then the
//! coefficients `H` (each from the other's latest value), then records the objective.
//!
//! Every denominator gets [`EPS`] added (as in Lee & Seung's reference code), so a zero
//! denominator cannot produce NaN; numerators and denominators are non-negative, so the
//! factors stay ≥ 0; results below the smallest normal float are set to 0 (`flush`).
//! The KL ratio `V ⊘ (HW + EPS)` and its objective use the same floor.
//!
//! Memory: all products are written into buffers allocated once before the loop with
//! `general_mat_mul`; each factor update fuses numerator, denominator, floor and product in
//! one parallel pass (`Zip::par_for_each`). The Frobenius objective is computed without
//! forming `V − HW`: `½(‖V‖² − 2⟨H, VWᵀ⟩ + ⟨HᵀH, WWᵀ⟩)`, reusing `VWᵀ` and `WWᵀ` from the
//! `H` update and `HᵀH`, which the next `W` update needs anyway. Reductions are in f64.

use super::NmfLoss;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::Scalar;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};
use rayon::prelude::*;

/// Floor added to every multiplicative-update denominator (and to `HW` in the KL ratio).
pub const EPS: f64 = 1e-10;

/// The `tol` criterion is evaluated every this many iterations (like scikit-learn).
pub const CHECK_EVERY: usize = 10;

/// Outcome of a run of multiplicative updates.
#[derive(Clone, Debug)]
pub struct MuHistory {
    /// Objective at the initial factors.
    pub initial: f64,
    /// Objective after each iteration.
    pub objective: Vec<f64>,
    /// Iterations performed.
    pub iterations: usize,
    /// Whether the `tol` criterion stopped the run before `max_iter`.
    pub converged: bool,
}

#[inline]
pub(crate) fn f<T: Scalar>(x: T) -> f64 {
    x.to_f64().unwrap_or(f64::NAN)
}

/// Rows per block of the f64 reductions below. Blocks are summed in order, so the result
/// does not depend on the thread count or on scheduling.
const RED_ROWS: usize = 64;

/// `Σ_blocks f(block)` over fixed row blocks of `a` and `b` (same shape), in block order.
fn block_sum<T: Scalar>(
    a: ArrayView2<T>,
    b: ArrayView2<T>,
    f: impl Fn(ArrayView2<T>, ArrayView2<T>) -> f64 + Sync,
) -> f64 {
    let parts: Vec<f64> = a
        .axis_chunks_iter(Axis(0), RED_ROWS)
        .into_par_iter()
        .zip(b.axis_chunks_iter(Axis(0), RED_ROWS))
        .map(|(x, y)| f(x, y))
        .collect();
    parts.iter().sum()
}

/// `Σ a∘b` in f64 (deterministic).
pub(crate) fn dot64<T: Scalar>(a: ArrayView2<T>, b: ArrayView2<T>) -> f64 {
    block_sum(a, b, |x, y| {
        Zip::from(x)
            .and(y)
            .fold(0.0f64, |s, &x, &y| s + f(x) * f(y))
    })
}

/// `Σ v·ln v − v` over the entries (the constant part of the KL divergence).
pub(crate) fn kl_const<T: Scalar>(v: ArrayView2<T>) -> f64 {
    block_sum(v, v, |x, _| {
        x.fold(0.0f64, |s, &x| {
            let x = f(x);
            if x > 0.0 {
                s + x * x.ln() - x
            } else {
                s
            }
        })
    })
}

/// `Σ −v·ln(hw + EPS) + hw` (the variable part of the KL divergence).
pub(crate) fn kl_var<T: Scalar>(v: ArrayView2<T>, hw: ArrayView2<T>) -> f64 {
    block_sum(v, hw, |v, hw| {
        Zip::from(v).and(hw).fold(0.0f64, |s, &x, &y| {
            let (x, y) = (f(x), f(y));
            let t = if x > 0.0 { -x * (y + EPS).ln() } else { 0.0 };
            s + t + y
        })
    })
}

/// `r ← v ⊘ (r + EPS)` in place (the KL ratio).
pub(crate) fn kl_ratio<T: Scalar>(v: ArrayView2<T>, r: &mut Array2<T>) {
    let eps = T::c(EPS);
    Zip::from(r)
        .and(v)
        .par_for_each(|r, &x| *r = x / (*r + eps));
}

/// The `Error::Numeric` raised when the objective stops being finite.
pub(crate) fn nan_error(obj: f64, it: usize) -> Error {
    Error::Numeric {
        op: "nnmf",
        msg: format!("objective became {obj} at iteration {it}; lower k (`nnmf.k`) or check data"),
    }
}

/// The objective history of one fitting run: checks every new value (finite, clamped at 0),
/// ticks the progress bar and applies the `tol` rule ([`Stopper`]). Shared by every solver.
pub(crate) struct Trace<'a> {
    initial: f64,
    objective: Vec<f64>,
    stopper: Stopper,
    progress: Option<&'a Progress>,
}

impl<'a> Trace<'a> {
    /// Start from the objective at the initial factors (an error if it is not finite).
    pub(crate) fn start(
        initial: f64,
        tol: f64,
        max_iter: usize,
        progress: Option<&'a Progress>,
    ) -> Result<Self> {
        if !initial.is_finite() {
            return Err(nan_error(initial, 0));
        }
        let initial = initial.max(0.0);
        Ok(Trace {
            initial,
            objective: Vec::with_capacity(max_iter),
            stopper: Stopper::new(tol, initial),
            progress,
        })
    }
    /// Record the objective after the next iteration; `Ok(true)` when the `tol` rule stops.
    pub(crate) fn record(&mut self, obj: f64) -> Result<bool> {
        let it = self.objective.len() + 1;
        if !obj.is_finite() {
            return Err(nan_error(obj, it));
        }
        let obj = obj.max(0.0);
        self.objective.push(obj);
        if let Some(pb) = self.progress {
            pb.inc(1);
        }
        Ok(self.stopper.stop(it, obj))
    }
    /// The last recorded objective (the initial one before any iteration).
    pub(crate) fn last(&self) -> f64 {
        self.objective.last().copied().unwrap_or(self.initial)
    }
    pub(crate) fn finish(self, converged: bool) -> MuHistory {
        MuHistory {
            initial: self.initial,
            iterations: self.objective.len(),
            objective: self.objective,
            converged,
        }
    }
}

/// Relative-decrease stopping test, evaluated every [`CHECK_EVERY`] iterations.
pub(crate) struct Stopper {
    tol: f64,
    last: f64,
}

impl Stopper {
    pub(crate) fn new(tol: f64, initial: f64) -> Self {
        Stopper { tol, last: initial }
    }
    /// `true` when `done` iterations have run and the objective decreased by less than
    /// `tol` (relative) since the previous check. Never stops when `tol == 0`.
    pub(crate) fn stop(&mut self, done: usize, obj: f64) -> bool {
        if self.tol <= 0.0 || !done.is_multiple_of(CHECK_EVERY) {
            return false;
        }
        let rel = if self.last > 0.0 {
            (self.last - obj) / self.last
        } else {
            0.0
        };
        self.last = obj;
        rel < self.tol
    }
}

/// Run multiplicative updates of both factors in place. `v`, `h`, `w` must be
/// non-negative with agreeing shapes (checked by the caller).
pub fn mu_fit<T: Scalar>(
    v: ArrayView2<T>,
    h: &mut Array2<T>,
    w: &mut Array2<T>,
    loss: NmfLoss,
    max_iter: usize,
    tol: f64,
    progress: Option<&Progress>,
) -> Result<MuHistory> {
    match loss {
        NmfLoss::Frobenius => frobenius(v, h, w, max_iter, tol, progress),
        NmfLoss::Kl => kl(v, h, w, max_iter, tol, progress),
    }
}

/// `x ← x ⊙ num ⊘ (den + EPS)`, one fused parallel pass.
fn mu_step<T: Scalar>(x: &mut Array2<T>, num: &Array2<T>, den: &Array2<T>) {
    let eps = T::c(EPS);
    Zip::from(x)
        .and(num)
        .and(den)
        .par_for_each(|x, &a, &b| *x = flush(*x * a / (b + eps)));
}

/// `0` for values below the smallest normal number (no subnormal factor entries; see
/// [`super::exact`] for why), else the value.
#[inline]
pub(crate) fn flush<T: Scalar>(x: T) -> T {
    if x < T::min_positive_value() {
        T::zero()
    } else {
        x
    }
}

fn frobenius<T: Scalar>(
    v: ArrayView2<T>,
    h: &mut Array2<T>,
    w: &mut Array2<T>,
    max_iter: usize,
    tol: f64,
    progress: Option<&Progress>,
) -> Result<MuHistory> {
    let (n, p) = v.dim();
    let k = w.nrows();
    let (one, zero) = (T::one(), T::zero());
    let vv = dot64(v, v);
    let mut htv = Array2::<T>::zeros((k, p));
    let mut hth = Array2::<T>::zeros((k, k));
    let mut hthw = Array2::<T>::zeros((k, p));
    let mut wwt = Array2::<T>::zeros((k, k));
    let mut vwt = Array2::<T>::zeros((n, k));
    let mut hwwt = Array2::<T>::zeros((n, k));

    // Initial objective: ⟨HᵀV, W⟩ and ⟨HᵀH, WWᵀ⟩ at the starting point.
    general_mat_mul(one, &h.t(), &v, zero, &mut htv);
    general_mat_mul(one, &h.t(), &*h, zero, &mut hth);
    general_mat_mul(one, &*w, &w.t(), zero, &mut wwt);
    let initial = 0.5 * (vv - 2.0 * dot64(htv.view(), w.view()) + dot64(hth.view(), wwt.view()));
    let mut trace = Trace::start(initial, tol, max_iter, progress)?;
    let mut converged = false;
    for it in 0..max_iter {
        if it > 0 {
            general_mat_mul(one, &h.t(), &v, zero, &mut htv);
        }
        // W ← W ⊙ (HᵀV) ⊘ (HᵀH·W + ε); HᵀH is from the end of the previous iteration.
        general_mat_mul(one, &hth, &*w, zero, &mut hthw);
        mu_step(w, &htv, &hthw);
        // H ← H ⊙ (VWᵀ) ⊘ (H·WWᵀ + ε).
        general_mat_mul(one, &*w, &w.t(), zero, &mut wwt);
        general_mat_mul(one, &v, &w.t(), zero, &mut vwt);
        general_mat_mul(one, &*h, &wwt, zero, &mut hwwt);
        mu_step(h, &vwt, &hwwt);
        general_mat_mul(one, &h.t(), &*h, zero, &mut hth);
        let obj = 0.5 * (vv - 2.0 * dot64(h.view(), vwt.view()) + dot64(hth.view(), wwt.view()));
        if trace.record(obj)? {
            converged = true;
            break;
        }
    }
    Ok(trace.finish(converged))
}

fn kl<T: Scalar>(
    v: ArrayView2<T>,
    h: &mut Array2<T>,
    w: &mut Array2<T>,
    max_iter: usize,
    tol: f64,
    progress: Option<&Progress>,
) -> Result<MuHistory> {
    let (n, p) = v.dim();
    let k = w.nrows();
    let (one, zero) = (T::one(), T::zero());
    let c = kl_const(v);
    let mut buf = Array2::<T>::zeros((n, p)); // HW, then the ratio V ⊘ (HW + ε)
    let mut num_w = Array2::<T>::zeros((k, p));
    let mut num_h = Array2::<T>::zeros((n, k));
    let mut sum_h = Array1::<T>::zeros(k); // Σ_i H_ik
    let mut sum_w = Array1::<T>::zeros(k); // Σ_j W_kj
    let eps = T::c(EPS);

    general_mat_mul(one, &*h, &*w, zero, &mut buf);
    let initial = c + kl_var(v, buf.view());
    let mut trace = Trace::start(initial, tol, max_iter, progress)?;
    let mut converged = false;
    for _ in 0..max_iter {
        // buf holds HW for the current factors.
        kl_ratio(v, &mut buf);
        general_mat_mul(one, &h.t(), &buf, zero, &mut num_w);
        sum_h.fill(zero);
        for row in h.rows() {
            sum_h += &row;
        }
        Zip::from(w.rows_mut())
            .and(num_w.rows())
            .and(&sum_h)
            .par_for_each(|mut wr, nr, &s| {
                let d = s + eps;
                Zip::from(&mut wr)
                    .and(&nr)
                    .for_each(|x, &a| *x = flush(*x * a / d));
            });
        general_mat_mul(one, &*h, &*w, zero, &mut buf);
        kl_ratio(v, &mut buf);
        general_mat_mul(one, &buf, &w.t(), zero, &mut num_h);
        Zip::from(&mut sum_w)
            .and(w.rows())
            .for_each(|s, r| *s = r.sum());
        Zip::from(h.rows_mut())
            .and(num_h.rows())
            .par_for_each(|mut hr, nr| {
                Zip::from(&mut hr)
                    .and(&nr)
                    .and(&sum_w)
                    .for_each(|x, &a, &s| *x = flush(*x * a / (s + eps)));
            });
        general_mat_mul(one, &*h, &*w, zero, &mut buf);
        let obj = c + kl_var(v, buf.view());
        if trace.record(obj)? {
            converged = true;
            break;
        }
    }
    Ok(trace.finish(converged))
}
