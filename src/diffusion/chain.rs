//! The differentiable purification chain, generic over [`Scalar`] so that its input gradient
//! can be checked by finite differences in f64.
//!
//! Noise layout per row (`t*·d` values): columns `0..d` are the forward noise `n`; block `j`
//! (`j = 1…t*−1`) is the ancestral noise `z` of the `j`-th reverse step (`s = t*−j+1`); the
//! last step (`s = 1`) adds no noise. With the noise fixed, the chain is a deterministic,
//! differentiable map `x₀ ↦ x̂₀`, and [`Chain::backward`] is its exact vector–Jacobian product.

use super::Schedule;
use crate::config::Prediction;
use crate::nn::mlp::{Mlp, MlpCache};
use crate::Scalar;
use ndarray::{concatenate, s, Array2, ArrayView1, ArrayView2, Axis};

/// Borrowed pieces of a trained defence.
pub struct Chain<'a, F: Scalar> {
    pub den: &'a Mlp<F>,
    pub sched: &'a Schedule,
    /// Time-embedding table (`T+1 × time_dim`).
    pub emb: &'a Array2<F>,
    pub t_star: usize,
    pub predict: Prediction,
}

/// Denoiser activations of every reverse step, in execution order.
pub struct ChainCache<F> {
    steps: Vec<MlpCache<F>>,
}

/// Coefficients of one reverse step `x_{s−1} = a·x_s + b·D(x_s, s) + σ_s z`.
pub fn step_coefs(sched: &Schedule, predict: Prediction, s: usize) -> (f64, f64) {
    let (al, ab, ab_prev, beta) = (
        sched.alpha[s],
        sched.alpha_bar[s],
        sched.alpha_bar[s - 1],
        sched.beta[s],
    );
    match predict {
        Prediction::Noise => {
            let inv = 1.0 / al.sqrt();
            (inv, -inv * beta / (1.0 - ab).sqrt())
        }
        Prediction::X0 => (
            al.sqrt() * (1.0 - ab_prev) / (1.0 - ab),
            ab_prev.sqrt() * beta / (1.0 - ab),
        ),
    }
}

/// Denoiser input `[x, emb(t)]` for one shared timestep.
pub fn with_time<F: Scalar>(x: ArrayView2<F>, emb_row: ArrayView1<F>) -> Array2<F> {
    let e = emb_row
        .broadcast((x.nrows(), emb_row.len()))
        .expect("broadcast embedding");
    concatenate(Axis(1), &[x, e]).expect("same row count")
}

impl<F: Scalar> Chain<'_, F> {
    /// Noise values needed per row for inputs of width `d`.
    pub fn noise_len(&self, d: usize) -> usize {
        self.t_star * d
    }

    /// Purify `x0` with the given noise; optionally keep what [`Self::backward`] needs.
    pub fn forward(
        &self,
        x0: ArrayView2<F>,
        noise: ArrayView2<F>,
        keep: bool,
    ) -> (Array2<F>, Option<ChainCache<F>>) {
        let d = x0.ncols();
        assert_eq!(noise.ncols(), self.noise_len(d), "chain noise width");
        assert_eq!(noise.nrows(), x0.nrows(), "chain noise rows");
        let ab = self.sched.alpha_bar[self.t_star];
        let mut x = x0.mapv(|v| v * F::c(ab.sqrt()));
        x.scaled_add(F::c((1.0 - ab).sqrt()), &noise.slice(s![.., 0..d]));
        let mut caches = Vec::with_capacity(if keep { self.t_star } else { 0 });
        for (j, step) in (1..=self.t_star).rev().enumerate() {
            let input = with_time(x.view(), self.emb.row(step));
            let out = if keep {
                let (o, c) = self.den.forward_cached(input.view());
                caches.push(c);
                o
            } else {
                self.den.forward(input.view())
            };
            let (a, b) = step_coefs(self.sched, self.predict, step);
            x.mapv_inplace(|v| v * F::c(a));
            x.scaled_add(F::c(b), &out);
            if step > 1 {
                let z = noise.slice(s![.., (j + 1) * d..(j + 2) * d]);
                x.scaled_add(F::c(self.sched.sigma[step]), &z);
            }
        }
        (x, keep.then_some(ChainCache { steps: caches }))
    }

    /// Vector–Jacobian product: gradient w.r.t. `x0` given the gradient `g` w.r.t. the
    /// chain's output (noise held fixed).
    pub fn backward(&self, cache: &ChainCache<F>, mut g: Array2<F>) -> Array2<F> {
        let d = g.ncols();
        for (j, step) in (1..=self.t_star).enumerate() {
            let c = &cache.steps[self.t_star - 1 - j];
            let (a, b) = step_coefs(self.sched, self.predict, step);
            let go = g.mapv(|v| v * F::c(b));
            let (_, gin) = self.den.backward(c, go.view(), false);
            g.mapv_inplace(|v| v * F::c(a));
            g += &gin.slice(s![.., 0..d]);
        }
        let ab = self.sched.alpha_bar[self.t_star];
        g.mapv_inplace(|v| v * F::c(ab.sqrt()));
        g
    }
}
