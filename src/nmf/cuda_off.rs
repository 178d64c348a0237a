//! Stand-in for the CUDA NNMF (`cuda.rs`) in builds without the `cuda` feature: the same
//! signatures on an uninhabited [`CudaBackend`], so the dispatch in `device.rs` compiles
//! unchanged and these bodies can never run.

use super::{NmfFitReport, NmfModel, NmfParams};
use crate::backend::cuda::CudaBackend;
use crate::error::Result;
use ndarray::{Array2, ArrayView2};

/// [`crate::nmf::fit`] on the GPU (no value of `be` exists in this build).
pub fn fit(
    be: &CudaBackend,
    _v: ArrayView2<f32>,
    _params: &NmfParams,
) -> Result<(NmfModel, NmfFitReport)> {
    match *be {}
}

/// [`NmfModel::transform`] on the GPU (no value of `be` exists in this build).
pub fn transform(be: &CudaBackend, _model: &NmfModel, _v: ArrayView2<f32>) -> Result<Array2<f32>> {
    match *be {}
}
