//! [`AttackModel`] for [`CudaDefended`]: points × draws in device chunks, Philox noise keyed
//! by `(key, ids[i], draw)`, predictions from probabilities averaged over the draws, loss and
//! logits of the last draw, gradient averaged over draws (same contract as the CPU
//! [`crate::diffusion::model::Defended`]).

use super::denoiser::{CudaDefended, CHUNK_ROWS};
use crate::attack::{AttackModel, Loss, ModelEval};
use crate::diffusion::model::softmax;
use ndarray::{s, Array1, Array2, ArrayView2, Axis};

fn argmax(row: ndarray::ArrayView1<f64>) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

impl AttackModel for CudaDefended {
    fn num_classes(&self) -> usize {
        self.num_classes_()
    }
    fn stochastic(&self) -> bool {
        true
    }
    /// Panics with the CUDA error message on a device failure (the trait has no `Result`).
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: Loss<'_>,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> ModelEval {
        let (n, d, k) = (x.nrows(), x.ncols(), self.num_classes_());
        let draws = draws.max(1);
        let pp = (CHUNK_ROWS / draws).max(1);
        let mut out = ModelEval {
            loss: Array1::zeros(n),
            logits: Array2::zeros((n, k)),
            pred: vec![0; n],
            grad: want_grad.then(|| Array2::zeros((n, d))),
        };
        for start in (0..n).step_by(pp) {
            let end = (start + pp).min(n);
            let rep = crate::diffusion::model::repeat_rows(x.slice(s![start..end, ..]), draws);
            let yrep: Vec<usize> = y[start..end]
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c, draws))
                .collect();
            let trep = loss.targets_for(start..end, draws);
            let loss = loss.with_targets(trep.as_deref());
            let o = self
                .chunk(
                    rep.view(),
                    None,
                    &ids[start..end],
                    draws,
                    key,
                    &yrep,
                    loss,
                    want_grad,
                )
                .unwrap_or_else(|e| panic!("cuda defended evaluate: {e}"));
            let p = softmax(o.logits.view());
            for i in 0..end - start {
                let last = i * draws + draws - 1;
                out.loss[start + i] = o.loss[last];
                out.logits.row_mut(start + i).assign(&o.logits.row(last));
                let mean = p
                    .slice(s![i * draws..(i + 1) * draws, ..])
                    .mean_axis(Axis(0))
                    .expect("draws ≥ 1");
                out.pred[start + i] = argmax(mean.view());
            }
            if let (Some(all), Some(g)) = (out.grad.as_mut(), o.grad) {
                let gm = crate::diffusion::fast::block_mean(g.view(), draws);
                all.slice_mut(s![start..end, ..]).assign(&gm);
            }
        }
        out
    }
}
