//! [`AttackModel`] for [`CudaDefended`]: points × draws in device chunks, with the CPU
//! defence's noise streams ([`NoiseSource::Host`], the default) or device Philox, both keyed
//! by `(key, ids[i], draw)`; the draws are reduced by the same code as the CPU defence
//! ([`super::draws`]), so both keep one contract.

use super::cuda::{CudaDefended, NoiseSource, CHUNK_ROWS};
use super::draws::{self, DrawRows};
use crate::attack::{AttackModel, Loss, ModelEval};
use ndarray::ArrayView2;

impl AttackModel for CudaDefended {
    fn num_classes(&self) -> usize {
        self.num_classes_()
    }
    fn stochastic(&self) -> bool {
        true
    }
    fn device(&self) -> Option<&crate::backend::cuda::CudaBackend> {
        Some(self.backend())
    }
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: Loss<'_>,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> crate::Result<ModelEval> {
        let (n, d, k) = (x.nrows(), x.ncols(), self.num_classes_());
        let draws = draws.max(1);
        let pp = (CHUNK_ROWS / draws).max(1);
        let mut parts = Vec::with_capacity(n.div_ceil(pp));
        for start in (0..n).step_by(pp) {
            let rows = start..(start + pp).min(n);
            let c = DrawRows::new(x, y, loss, rows.clone(), draws);
            let noise = (self.noise_source() == NoiseSource::Host)
                .then(|| draws::noise_par(&ids[rows.clone()], draws, key, self.noise_len()));
            let out = self.chunk(
                c.rep.view(),
                noise.as_ref().map(|n| n.view()),
                &ids[rows],
                draws,
                key,
                &c.y,
                c.loss(loss),
                want_grad,
            )?;
            parts.push(draws::reduce(out, draws));
        }
        Ok(draws::assemble(n, d, k, want_grad, parts))
    }
}
