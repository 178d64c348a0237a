//! Non-negative matrix factorisation (Lee–Seung multiplicative updates) on the CPU.
//!
//! Owns fitting a parts-based basis and projecting images onto it. Convention: data `V` is
//! `n × p` (one image per row, values ≥ 0), the model is `V ≈ H · W` with coefficients `H`
//! (`n × K`, the classifier's features) and basis `W` (`K × p`, one part-image per row).
//!
//! Algorithm ([`fit`]):
//! 1. validate (`k ≥ 1`, `k ≤ min(n, p)`, finite non-negative data);
//! 2. initialise `(H, W)` with NNDSVDa or seeded random ([`init`]);
//! 3. multiplicative updates ([`mu`]): `W ← W ⊙ (HᵀV) ⊘ (HᵀHW + ε)`, then
//!    `H ← H ⊙ (VWᵀ) ⊘ (HWWᵀ + ε)` (Frobenius, objective `½‖V − HW‖²`), or the KL
//!    updates; `ε = 1e-10` ([`EPS`]). The objective is recorded after every iteration;
//!    every [`CHECK_EVERY`] iterations the run stops when the relative decrease since the
//!    previous check is below `tol` (`tol = 0` ⇒ exactly `max_iter` iterations).
//!
//! Solvers ([`NmfSolver`]): `mu` (default, the exact iteration above; with the Frobenius
//! loss it runs the fused one-pass engine [`exact`], tested against the generic reference
//! [`mu`]) and `accelerated` ([`accel`], Frobenius only): Gillis–Glineur accelerated MU,
//! which reaches the same objective in fewer passes. Both use sparse data products
//! ([`sparse`]) when the data is mostly zeros, as digit images are.
//!
//! Variants: `global` (one basis of `k` parts, training coefficients = the fitted `H`) and
//! `per_class` ("category-aware": `k` parts fitted on each class's rows, classes in label
//! order and in parallel, concatenated to `K = k·classes`; training coefficients are then
//! [`NmfModel::transform`] of all training rows on that basis, without labels).
//! [`NmfModel::transform`] solves each row independently with the basis fixed ([`project`]).
//!
//! Precision: f32 storage and products (faer GEMMs, sparse kernels), f64 reductions summed
//! in a fixed order (results do not depend on the thread count); factor entries below the
//! smallest normal float are set to 0. The reference iteration [`mu`] is generic over
//! [`Scalar`] so tests and fixtures can run it in f64.
//!
//! References: Lee & Seung, "Algorithms for non-negative matrix factorization", NIPS 2000;
//! Boutsidis & Gallopoulos, "SVD based initialization", Pattern Recognition 41, 2008.

pub mod accel;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_off.rs"]
pub mod cuda;
mod device;
pub mod exact;
pub mod init;
pub mod mu;
pub mod project;
pub mod project_grad;
pub mod sparse;
#[cfg(test)]
mod tests;

pub use device::{fit_on, gpu_covers, transform_on};
pub use mu::{MuHistory, CHECK_EVERY, EPS};

use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::{key, tag};
use crate::Scalar;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;
use std::collections::BTreeMap;

/// Objective / update family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfLoss {
    Frobenius,
    Kl,
}

/// Initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfInit {
    Nndsvda,
    Random,
}

/// Fitting algorithm. `Mu` (default) is the exact Lee–Seung iteration the paper uses;
/// `Accelerated` is [`accel`] (Frobenius only): several cheap updates per expensive product
/// and sparse data products; it reaches a given objective in fewer, cheaper iterations
/// (`max_iter` then counts outer iterations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfSolver {
    #[default]
    Mu,
    Accelerated,
}

/// `global`: one basis of `k` parts; `per_class`: `k` parts per class, concatenated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfMode {
    Global,
    PerClass,
}

/// Validated parameters.
#[derive(Clone, Debug)]
pub struct NmfParams {
    pub k: usize,
    pub mode: NmfMode,
    pub loss: NmfLoss,
    pub init: NmfInit,
    pub max_iter: usize,
    /// Relative objective decrease below which fitting stops (0 = run all iterations).
    pub tol: f64,
    pub seed: u64,
}

/// A fitted model.
#[derive(Clone, Debug)]
pub struct NmfModel {
    /// `K × p` basis (K = k, or k·classes in per-class mode).
    pub basis: Array2<f32>,
    pub loss: NmfLoss,
    pub max_iter: usize,
    pub tol: f64,
}

/// What fitting produced besides the model.
#[derive(Clone, Debug)]
pub struct NmfFitReport {
    /// Coefficients of the training rows (`n × K`).
    pub coeffs: Array2<f32>,
    /// Objective after each iteration (per-class: summed over classes at each iteration).
    pub objective: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

/// Fit on `v` (`n × p`, non-negative). `labels` is required in per-class mode (one per
/// row); it is ignored in global mode.
pub fn fit(
    v: ArrayView2<f32>,
    labels: &[u8],
    params: &NmfParams,
) -> Result<(NmfModel, NmfFitReport)> {
    fit_with_solver(v, labels, params, NmfSolver::Mu)
}

/// [`fit`] with an explicit solver. [`NmfSolver::Accelerated`] needs the Frobenius loss.
pub fn fit_with_solver(
    v: ArrayView2<f32>,
    labels: &[u8],
    params: &NmfParams,
    solver: NmfSolver,
) -> Result<(NmfModel, NmfFitReport)> {
    check_params(params)?;
    if solver == NmfSolver::Accelerated && params.loss != NmfLoss::Frobenius {
        return Err(Error::param(
            "nnmf.solver",
            "the accelerated solver supports `nnmf.loss: frobenius` only; use `nnmf.solver: mu` for KL",
        ));
    }
    check_data(v, false)?;
    match params.mode {
        NmfMode::Global => fit_global(v, params, solver),
        NmfMode::PerClass => fit_per_class(v, labels, params, solver),
    }
}

/// One factorisation with the chosen solver (Frobenius checked for `Accelerated`).
fn solve(
    v: ArrayView2<f32>,
    h: &mut Array2<f32>,
    w: &mut Array2<f32>,
    params: &NmfParams,
    solver: NmfSolver,
    pb: Option<&Progress>,
) -> Result<MuHistory> {
    match solver {
        NmfSolver::Mu if params.loss == NmfLoss::Frobenius => {
            exact::exact_fit(v, h, w, params.max_iter, params.tol, pb)
        }
        NmfSolver::Mu => mu::mu_fit(v, h, w, params.loss, params.max_iter, params.tol, pb),
        NmfSolver::Accelerated => accel::accel_fit(
            v,
            h,
            w,
            params.max_iter,
            params.tol,
            &accel::AccelParams::default(),
            pb,
        ),
    }
}

impl NmfModel {
    /// Coefficients of new rows with the basis fixed (`n × K`). Uses no labels; each row's
    /// result is independent of the other rows (see [`project`]).
    pub fn transform(&self, v: ArrayView2<f32>) -> Result<Array2<f32>> {
        if v.ncols() != self.basis.ncols() {
            return Err(Error::ShapeMismatch {
                op: "nnmf transform (pixels of data vs basis)",
                lhs: vec![v.nrows(), v.ncols()],
                rhs: vec![self.basis.nrows(), self.basis.ncols()],
            });
        }
        check_data(v, true)?;
        project::project(v, self.basis.view(), self.loss, self.max_iter, self.tol)
    }

    /// Number of components `K` (rows of the basis).
    pub fn components(&self) -> usize {
        self.basis.nrows()
    }
}

/// Initial factors `(H, W)` of `v` for `k` components.
pub fn init_factors<T: Scalar>(
    v: ArrayView2<T>,
    k: usize,
    init: NmfInit,
    seed: u64,
) -> Result<(Array2<T>, Array2<T>)> {
    check_k(k, v.nrows(), v.ncols(), "")?;
    match init {
        NmfInit::Nndsvda => init::nndsvda(v, k),
        NmfInit::Random => Ok(init::random(v, k, seed)),
    }
}

/// Multiplicative updates from explicit initial factors (`h`: `n × K`, `w`: `K × p`),
/// updated in place. Used by the fixture tests; no progress output.
#[doc(hidden)]
pub fn mu_from_init<T: Scalar>(
    v: ArrayView2<T>,
    h: &mut Array2<T>,
    w: &mut Array2<T>,
    loss: NmfLoss,
    max_iter: usize,
    tol: f64,
) -> Result<MuHistory> {
    if h.nrows() != v.nrows() || w.ncols() != v.ncols() || h.ncols() != w.nrows() {
        return Err(Error::ShapeMismatch {
            op: "nnmf mu_from_init (H·W vs V)",
            lhs: vec![h.nrows(), h.ncols(), w.nrows(), w.ncols()],
            rhs: vec![v.nrows(), v.ncols()],
        });
    }
    mu::mu_fit(v, h, w, loss, max_iter, tol, None)
}

fn fit_global(
    v: ArrayView2<f32>,
    params: &NmfParams,
    solver: NmfSolver,
) -> Result<(NmfModel, NmfFitReport)> {
    let (mut h, mut w) = init_factors(v, params.k, params.init, params.seed)?;
    let pb = Progress::new("nnmf fit", params.max_iter as u64);
    let hist = solve(v, &mut h, &mut w, params, solver, Some(&pb))?;
    pb.finish(summary(&hist.objective, hist.converged));
    Ok(assemble(params, h, w, hist))
}

/// The model and report of one global factorisation (`h`: coefficients, `w`: basis).
pub(crate) fn assemble(
    params: &NmfParams,
    h: Array2<f32>,
    w: Array2<f32>,
    hist: MuHistory,
) -> (NmfModel, NmfFitReport) {
    let model = NmfModel {
        basis: w,
        loss: params.loss,
        max_iter: params.max_iter,
        tol: params.tol,
    };
    let report = NmfFitReport {
        coeffs: h,
        objective: hist.objective,
        iterations: hist.iterations,
        converged: hist.converged,
    };
    (model, report)
}

fn fit_per_class(
    v: ArrayView2<f32>,
    labels: &[u8],
    params: &NmfParams,
    solver: NmfSolver,
) -> Result<(NmfModel, NmfFitReport)> {
    let (n, p) = v.dim();
    if labels.len() != n {
        return Err(Error::ShapeMismatch {
            op: "nnmf per_class (rows vs labels)",
            lhs: vec![n],
            rhs: vec![labels.len()],
        });
    }
    let mut classes: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, &c) in labels.iter().enumerate() {
        classes.entry(c).or_default().push(i);
    }
    for (c, rows) in &classes {
        check_k(params.k, rows.len(), p, &format!(" (class {c})"))?;
    }
    let classes: Vec<(u8, Vec<usize>)> = classes.into_iter().collect();
    let pb = Progress::new("nnmf fit", (params.max_iter * classes.len()) as u64);
    let fits = classes
        .par_iter()
        .map(|(c, rows)| {
            let vc = v.select(Axis(0), rows);
            let seed = key(params.seed, &[tag("nnmf.class"), *c as u64]);
            let (mut h, mut w) = init_factors(vc.view(), params.k, params.init, seed)?;
            let hist = solve(vc.view(), &mut h, &mut w, params, solver, Some(&pb))?;
            Ok((w, hist))
        })
        .collect::<Result<Vec<_>>>()?;
    let iterations = fits.iter().map(|(_, h)| h.iterations).max().unwrap_or(0);
    let objective: Vec<f64> = (0..iterations)
        .map(|t| {
            fits.iter()
                .map(|(_, h)| {
                    h.objective
                        .get(t)
                        .or(h.objective.last())
                        .copied()
                        .unwrap_or(h.initial)
                })
                .sum()
        })
        .collect();
    let converged = fits.iter().all(|(_, h)| h.converged);
    let views: Vec<_> = fits.iter().map(|(w, _)| w.view()).collect();
    let basis = ndarray::concatenate(Axis(0), &views).map_err(|e| Error::Numeric {
        op: "nnmf per_class",
        msg: format!("concatenating class bases failed: {e}"),
    })?;
    pb.finish(format!(
        "{} classes, {}",
        classes.len(),
        summary(&objective, converged)
    ));
    let model = NmfModel {
        basis,
        loss: params.loss,
        max_iter: params.max_iter,
        tol: params.tol,
    };
    let coeffs = model.transform(v)?;
    let report = NmfFitReport {
        coeffs,
        objective,
        iterations,
        converged,
    };
    Ok((model, report))
}

fn summary(objective: &[f64], converged: bool) -> String {
    format!(
        "{} iterations, objective {:.6e}{}",
        objective.len(),
        objective.last().copied().unwrap_or(f64::NAN),
        if converged { " (converged)" } else { "" }
    )
}

fn check_params(params: &NmfParams) -> Result<()> {
    if params.k == 0 {
        return Err(Error::param(
            "nnmf.k",
            "must be ≥ 1 (number of NNMF components per basis)",
        ));
    }
    if params.max_iter == 0 {
        return Err(Error::param("nnmf.max_iter", "must be ≥ 1"));
    }
    if !(params.tol.is_finite() && params.tol >= 0.0) {
        return Err(Error::param(
            "nnmf.tol",
            format!(
                "must be a finite number ≥ 0 (0 = run all iterations), got {}",
                params.tol
            ),
        ));
    }
    Ok(())
}

fn check_k(k: usize, n: usize, p: usize, what: &str) -> Result<()> {
    if k == 0 {
        return Err(Error::param(
            "nnmf.k",
            "must be ≥ 1 (number of NNMF components per basis)",
        ));
    }
    if k > n.min(p) {
        return Err(Error::param(
            "nnmf.k",
            format!(
                "k = {k} exceeds min(rows, pixels) = min({n}, {p}) of the training data{what}; lower `nnmf.k`"
            ),
        ));
    }
    Ok(())
}

/// Finite, non-negative, not empty (unless `allow_empty`), not all zero (fitting only).
fn check_data(v: ArrayView2<f32>, allow_empty: bool) -> Result<()> {
    let (n, p) = v.dim();
    if n == 0 || p == 0 {
        if allow_empty && p > 0 {
            return Ok(());
        }
        return Err(Error::Numeric {
            op: "nnmf",
            msg: format!("input is empty ({n} × {p}); check the data split"),
        });
    }
    if let Some(((i, j), x)) = v.indexed_iter().find(|(_, x)| !x.is_finite() || **x < 0.0) {
        let what = if x.is_finite() {
            "a negative value"
        } else {
            "a non-finite value"
        };
        return Err(Error::Numeric {
            op: "nnmf",
            msg: format!(
                "input has {what} ({x}) at row {i}, column {j}; NNMF needs finite values ≥ 0 (scale images to [0, 1])"
            ),
        });
    }
    if !allow_empty && v.iter().all(|&x| x == 0.0) {
        return Err(Error::Numeric {
            op: "nnmf",
            msg: "all training values are zero; check the data".into(),
        });
    }
    Ok(())
}
