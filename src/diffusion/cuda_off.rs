//! Stand-in for the CUDA defence (`cuda.rs`) in builds without the `cuda` feature: an
//! uninhabited [`CudaDefended`] with the constructor callers use, so they compile unchanged
//! and nothing here can run.

use crate::attack::{AttackModel, Loss, ModelEval};
use crate::backend::cuda::CudaBackend;
use crate::nn::mlp::Mlp;
use ndarray::ArrayView2;

/// The defended model on a CUDA device; no value exists in this build.
pub enum CudaDefended {}

impl CudaDefended {
    /// The defence of `den` and `clf` at `t_star` on `be` (no value of `be` exists here).
    pub fn of(
        be: &CudaBackend,
        _den: &super::denoiser::Denoiser,
        _clf: &Mlp<f32>,
        _t_star: usize,
    ) -> crate::Result<Self> {
        match *be {}
    }
}

impl AttackModel for CudaDefended {
    fn num_classes(&self) -> usize {
        match *self {}
    }
    fn stochastic(&self) -> bool {
        match *self {}
    }
    fn device(&self) -> Option<&CudaBackend> {
        match *self {}
    }
    fn evaluate(
        &self,
        _x: ArrayView2<f32>,
        _y: &[usize],
        _ids: &[u64],
        _loss: Loss<'_>,
        _draws: usize,
        _key: u64,
        _want_grad: bool,
    ) -> crate::Result<ModelEval> {
        match *self {}
    }
}
