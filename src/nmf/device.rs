//! Where an NNMF fit and projection run: the one dispatch between the CPU solvers and the
//! CUDA op ([`super::cuda`]). Callers pass the experiment's [`DeviceCtx`] and never name a
//! backend.

use super::{
    cuda, fit_with_solver, NmfFitReport, NmfLoss, NmfMode, NmfModel, NmfParams, NmfSolver,
};
use crate::backend::DeviceCtx;
use crate::error::{Error, Result};
use ndarray::{Array2, ArrayView2};

/// Whether the CUDA NNMF covers these settings (Frobenius loss, global mode).
pub fn gpu_covers(loss: NmfLoss, mode: NmfMode) -> bool {
    loss == NmfLoss::Frobenius && mode == NmfMode::Global
}

/// Fit on `ctx`'s device: on the GPU when one is open and [`gpu_covers`] the settings, else
/// with the CPU `solver` (saying so when a GPU was open). Returns whether the GPU fitted it;
/// project new rows with [`transform_on`] and that flag, so every split gets the same
/// features.
pub fn fit_on(
    ctx: &DeviceCtx,
    v: ArrayView2<f32>,
    labels: &[u8],
    params: &NmfParams,
    solver: NmfSolver,
) -> Result<(NmfModel, NmfFitReport, bool)> {
    if let Some(be) = ctx.cuda() {
        if gpu_covers(params.loss, params.mode) {
            let (model, report) = cuda::fit(be, v, params)?;
            return Ok((model, report, true));
        }
        crate::progress::log(
            "nnmf: the CUDA NNMF covers frobenius/global only; fitting on the CPU",
        );
    }
    let (model, report) = fit_with_solver(v, labels, params, solver)?;
    Ok((model, report, false))
}

/// NNMF coefficients of new rows on the basis of `model`: with `gpu` on `ctx`'s CUDA backend
/// (where the model was fitted on the GPU), else the CPU projection. `gpu` without an open
/// CUDA backend is an error naming the fix.
pub fn transform_on(
    ctx: &DeviceCtx,
    model: &NmfModel,
    x: ArrayView2<f32>,
    gpu: bool,
) -> Result<Array2<f32>> {
    if !gpu {
        return model.transform(x);
    }
    match ctx.cuda() {
        Some(be) => cuda::transform(be, model, x),
        None => Err(Error::param(
            "device",
            "these NNMF features were computed on the GPU; run on a CUDA build with a GPU (device: cuda)",
        )),
    }
}
