//! Stand-in for the device APGD state (`cuda.rs`) in builds without the `cuda` feature:
//! the same entry point on the uninhabited [`CudaBackend`], so the host run dispatches to
//! it without a `#[cfg]` and it can never be reached.

use crate::attack::apgd::{ApgdParams, RunOutput};
use crate::attack::{AttackModel, Loss};
use crate::backend::cuda::CudaBackend;
use crate::progress::Progress;
use ndarray::ArrayView2;

/// One APGD run with the state on `be` (no value of `be` exists in this build).
#[allow(clippy::too_many_arguments)]
pub(super) fn run<M: AttackModel + ?Sized>(
    be: &CudaBackend,
    _model: &M,
    _x: ArrayView2<f32>,
    _x0: ArrayView2<f32>,
    _y: &[usize],
    _ids: &[u64],
    _p: &ApgdParams,
    _loss: Loss<'_>,
    _restart: u64,
    _prog: Option<&Progress>,
) -> crate::Result<RunOutput> {
    match *be {}
}
