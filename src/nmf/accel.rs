//! Accelerated multiplicative updates for the Frobenius objective (Gillis & Glineur,
//! "Accelerated multiplicative updates and hierarchical ALS algorithms for nonnegative
//! matrix factorization", Neural Computation 24, 2012), with sparse data products.
//!
//! One outer iteration computes the expensive products once — `VᵀH` and `HᵀH` for the basis,
//! `V·Wᵀ` and `WWᵀ` for the coefficients — and then applies several cheap Lee–Seung updates
//! of that factor with them (`W ← W ⊙ (HᵀV) ⊘ (HᵀH·W + ε)`, each a `K×K` product). Every
//! inner update is an exact MU step for the fixed other factor, so the objective never
//! increases. Inner updates of a factor stop after `1 + ⌊α·ρ⌋` steps, where `ρ` is the cost
//! of the outer products relative to one inner step, or as soon as the change of the factor
//! falls below `δ` times the change of its first inner step.
//!
//! Products with `V` use [`Csr`] (`2·nnz·K` FLOPs) when the data is sparse (density below
//! [`SPARSE_BELOW`]), else dense GEMMs. The basis is kept transposed (`p × K`) inside the
//! loop so both sparse products write contiguous rows. The objective after every outer
//! iteration uses the same identity as [`super::mu`]:
//! `½(‖V‖² − 2⟨H, VWᵀ⟩ + ⟨HᵀH, WWᵀ⟩)`.

use super::mu::{dot64, MuHistory, Trace, EPS};
use super::sparse::{Csr, SPARSE_BELOW};
use crate::error::Result;
use crate::linalg::gemm_seq;
use crate::progress::Progress;
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, ArrayView2, Axis, Zip};
use rayon::prelude::*;

/// Tuning of the accelerated solver.
#[derive(Clone, Debug)]
pub struct AccelParams {
    /// Inner-update budget factor `α` (inner steps ≤ `1 + ⌊α·ρ⌋`).
    pub alpha: f64,
    /// Inner updates stop when `‖ΔX‖ ≤ δ·‖ΔX₁‖` (the first inner step's change).
    pub delta: f64,
    /// Stop as soon as the objective is at or below this value (for time-to-objective
    /// measurements); `None` runs to `max_iter` or `tol`.
    pub target: Option<f64>,
}

impl Default for AccelParams {
    fn default() -> Self {
        AccelParams {
            alpha: 0.5,
            delta: 0.1,
            target: None,
        }
    }
}

/// The data in the form the products need.
enum Data<'a> {
    Sparse { rows: Csr, cols: Csr },
    Dense(ArrayView2<'a, f32>),
}

impl Data<'_> {
    /// `out (n×K) = V · wt` with `wt` = `Wᵀ` (`p × K`).
    fn v_wt(&self, wt: &Array2<f32>, out: &mut Array2<f32>) {
        match self {
            Data::Sparse { rows, .. } => rows.mul_dense(wt.view(), out.view_mut()),
            Data::Dense(v) => general_mat_mul(1.0, v, wt, 0.0, out),
        }
    }
    /// `out (p×K) = Vᵀ · h`.
    fn vt_h(&self, h: &Array2<f32>, out: &mut Array2<f32>) {
        match self {
            Data::Sparse { cols, .. } => cols.mul_dense(h.view(), out.view_mut()),
            Data::Dense(v) => general_mat_mul(1.0, &v.t(), h, 0.0, out),
        }
    }
}

/// Rows per rayon task in the inner updates and Gram products.
const CHUNK: usize = 256;

/// `x ← x ⊙ num ⊘ (x·g + ε)` fused per row chunk (a sequential GEMM into a chunk-sized
/// buffer, then the update while it is in cache); returns `‖Δx‖²`.
fn mu_step_fused(x: &mut Array2<f32>, num: &Array2<f32>, g: &Array2<f32>) -> f64 {
    let eps = EPS as f32;
    let k = x.ncols();
    x.axis_chunks_iter_mut(Axis(0), CHUNK)
        .into_par_iter()
        .zip(num.axis_chunks_iter(Axis(0), CHUNK))
        .map(|(mut xc, nc)| {
            let mut den = Array2::<f32>::zeros((xc.nrows(), k));
            gemm_seq(den.view_mut(), xc.view(), g.view(), false);
            let mut s = 0.0f64;
            Zip::from(&mut xc).and(&nc).and(&den).for_each(|x, &a, &b| {
                let mut new = *x * a / (b + eps);
                if new < f32::MIN_POSITIVE {
                    new = 0.0;
                }
                let d = (new - *x) as f64;
                *x = new;
                s += d * d;
            });
            s
        })
        .sum()
}

/// `out = xᵀx` (`K × K`), summed over row chunks in parallel.
fn gram(x: &Array2<f32>, out: &mut Array2<f32>) {
    let k = x.ncols();
    let parts: Vec<Array2<f32>> = x
        .axis_chunks_iter(Axis(0), 4 * CHUNK)
        .into_par_iter()
        .map(|c| {
            let mut o = Array2::<f32>::zeros((k, k));
            gemm_seq(o.view_mut(), c.t(), c, false);
            o
        })
        .collect();
    out.fill(0.0);
    for p in &parts {
        *out += p;
    }
}

/// Up to `max_inner` MU steps of `x` for the fixed `num` and Gram matrix `g` (`x·g` is the
/// denominator). Returns the number of steps taken.
fn inner_updates(
    x: &mut Array2<f32>,
    num: &Array2<f32>,
    g: &Array2<f32>,
    max_inner: usize,
    delta: f64,
) -> usize {
    let mut first = 0.0;
    for t in 0..max_inner {
        let change = mu_step_fused(x, num, g);
        if t == 0 {
            first = change;
        } else if change <= delta * delta * first {
            return t + 1;
        }
    }
    max_inner
}

/// Accelerated MU on `v ≈ h·w` (`h`: `n × K`, `w`: `K × p`), updated in place. `v`, `h`
/// and `w` must be non-negative with agreeing shapes (checked by the caller). `max_iter`
/// counts outer iterations; `tol` is the same relative-decrease rule as [`super::mu`].
pub fn accel_fit(
    v: ArrayView2<f32>,
    h: &mut Array2<f32>,
    w: &mut Array2<f32>,
    max_iter: usize,
    tol: f64,
    params: &AccelParams,
    progress: Option<&Progress>,
) -> Result<MuHistory> {
    let (n, p) = v.dim();
    let k = w.nrows();
    if !h.is_standard_layout() {
        *h = h.as_standard_layout().into_owned();
    }
    let rows = Csr::from_dense(v);
    let nnz = rows.nnz() as f64;
    let data = if rows.density() < SPARSE_BELOW {
        let cols = rows.transpose();
        Data::Sparse { rows, cols }
    } else {
        Data::Dense(v)
    };
    let prod = match data {
        Data::Sparse { .. } => nnz,
        Data::Dense(_) => (n * p) as f64,
    };
    let (nf, pf, kf) = (n as f64, p as f64, k as f64);
    // Outer-product cost relative to one inner step (multiply-adds, elementwise work ~ 3 per entry).
    let rho_w = (prod * kf + nf * kf * kf) / (pf * kf * kf + 3.0 * pf * kf);
    let rho_h = (prod * kf + pf * kf * kf) / (nf * kf * kf + 3.0 * nf * kf);
    let inner_w = 1 + (params.alpha * rho_w).floor() as usize;
    let inner_h = 1 + (params.alpha * rho_h).floor() as usize;

    let vv = dot64(v, v);
    let mut wt = w.t().as_standard_layout().into_owned(); // p × K
    let mut vth = Array2::<f32>::zeros((p, k));
    let mut vwt = Array2::<f32>::zeros((n, k));
    let mut hth = Array2::<f32>::zeros((k, k));
    let mut wtw = Array2::<f32>::zeros((k, k));

    data.vt_h(h, &mut vth);
    gram(h, &mut hth);
    gram(&wt, &mut wtw);
    let initial = 0.5 * (vv - 2.0 * dot64(vth.view(), wt.view()) + dot64(hth.view(), wtw.view()));
    let mut trace = Trace::start(initial, tol, max_iter, progress)?;
    let mut converged = false;
    for it in 0..max_iter {
        if it > 0 {
            data.vt_h(h, &mut vth);
        }
        // Basis: Wᵀ ← Wᵀ ⊙ (VᵀH) ⊘ (Wᵀ·HᵀH + ε), repeated with the same VᵀH and HᵀH.
        inner_updates(&mut wt, &vth, &hth, inner_w, params.delta);
        gram(&wt, &mut wtw);
        data.v_wt(&wt, &mut vwt);
        // Coefficients: H ← H ⊙ (VWᵀ) ⊘ (H·WWᵀ + ε), repeated.
        inner_updates(h, &vwt, &wtw, inner_h, params.delta);
        gram(h, &mut hth);
        let obj = 0.5 * (vv - 2.0 * dot64(h.view(), vwt.view()) + dot64(hth.view(), wtw.view()));
        let stop = trace.record(obj)?;
        if stop || params.target.is_some_and(|t| trace.last() <= t) {
            converged = true;
            break;
        }
    }
    w.assign(&wt.t());
    Ok(trace.finish(converged))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::nmf::{
        fit_with_solver, init_factors, mu_from_init, NmfInit, NmfLoss, NmfMode, NmfParams,
        NmfSolver,
    };

    use crate::nmf::tests::lowrank_data as data;

    fn check(v: &Array2<f32>, k: usize, want_sparse: bool) {
        let density = Csr::from_dense(v.view()).density();
        assert_eq!(density < SPARSE_BELOW, want_sparse, "density {density}");
        let (h0, w0) = init_factors(v.view(), k, NmfInit::Nndsvda, 0).unwrap();
        let (mut h, mut w) = (h0.clone(), w0.clone());
        let exact = mu_from_init(v.view(), &mut h, &mut w, NmfLoss::Frobenius, 200, 0.0).unwrap();
        let goal = exact.objective[199];
        let (mut h, mut w) = (h0, w0);
        let params = AccelParams {
            target: Some(goal),
            ..AccelParams::default()
        };
        let acc = accel_fit(v.view(), &mut h, &mut w, 200, 0.0, &params, None).unwrap();
        // never increases (f32 rounding slack), starts from the same point
        assert!((acc.initial - exact.initial).abs() <= 1e-4 * exact.initial);
        assert!(acc.objective[0] <= acc.initial * (1.0 + 1e-6));
        for pair in acc.objective.windows(2) {
            assert!(pair[1] <= pair[0] * (1.0 + 1e-6), "rose: {pair:?}");
        }
        // reaches the exact MU's 200-iteration objective in fewer outer iterations
        assert!(
            acc.converged,
            "never reached {goal}: {:?}",
            acc.objective.last()
        );
        assert!(*acc.objective.last().unwrap() <= goal);
        assert!(acc.iterations < 200, "{} outer iterations", acc.iterations);
        assert!(h.iter().chain(w.iter()).all(|&x| x >= 0.0 && x.is_finite()));
        // the tracked objective is the true residual
        let r = v - &h.dot(&w);
        let direct = 0.5 * r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
        let last = *acc.objective.last().unwrap();
        assert!((direct - last).abs() <= 1e-3 * direct, "{direct} vs {last}");
    }

    #[test]
    fn sparse_data_reaches_exact_objective_monotonically() {
        check(&data(300, 120, 6, 0.55, 1), 8, true);
    }

    #[test]
    fn dense_data_reaches_exact_objective_monotonically() {
        check(&data(200, 90, 5, 0.0, 2), 6, false);
    }

    #[test]
    fn fit_with_accelerated_solver_and_kl_is_refused() {
        crate::progress::set_quiet(true);
        let v = data(90, 40, 4, 0.5, 3);
        let labels: Vec<u8> = (0..90).map(|i| (i % 3) as u8).collect();
        let mut p = NmfParams {
            k: 3,
            mode: NmfMode::PerClass,
            loss: NmfLoss::Frobenius,
            init: NmfInit::Nndsvda,
            max_iter: 30,
            tol: 0.0,
            seed: 1,
        };
        let (m, r) = fit_with_solver(v.view(), &labels, &p, NmfSolver::Accelerated).unwrap();
        assert_eq!(m.basis.dim(), (9, 40));
        assert_eq!(r.iterations, 30);
        assert!(m.basis.iter().all(|&x| x >= 0.0));
        p.mode = NmfMode::Global;
        let (_, exact) = fit_with_solver(v.view(), &[], &p, NmfSolver::Mu).unwrap();
        let (_, fast) = fit_with_solver(v.view(), &[], &p, NmfSolver::Accelerated).unwrap();
        // both have converged on this small problem: equal up to f32 rounding, or accel lower
        let (f, e) = (fast.objective[29], exact.objective[29]);
        assert!(f <= e * (1.0 + 1e-6), "{f} vs {e}");
        p.loss = NmfLoss::Kl;
        match fit_with_solver(v.view(), &[], &p, NmfSolver::Accelerated) {
            Err(Error::Param { key, .. }) => assert_eq!(key, "nnmf.solver"),
            other => panic!("expected a Param error, got {other:?}"),
        }
    }
}
