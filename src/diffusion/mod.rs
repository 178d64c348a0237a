//! DDPM-style diffusion in feature space: the noise schedule, the sinusoidal timestep
//! embedding, the MLP denoiser and its training ([`denoiser`]), the differentiable
//! purification chain noise→t*→reverse ancestral steps→0 ([`chain`]), and the base and
//! defended classifiers as attack targets ([`model`]).
//!
//! Defended inference: `x_t* = √ᾱ_t* x₀ + √(1−ᾱ_t*) n`, then for `s = t*…1`
//! `x_{s−1} = μ_θ(x_s, s) + σ_s z` (no noise at `s = 1`), classify `x₀`, and average the
//! softmax probabilities over `R` passes. `σ_s² = β̃_s = (1−ᾱ_{s−1})/(1−ᾱ_s)·β_s` (the
//! posterior variance of Ho et al. 2020).

mod act;
pub mod chain;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_off.rs"]
pub mod cuda;
#[cfg(feature = "cuda")]
mod cuda_eval;
pub mod denoiser;
mod draws;
pub mod fast;
#[cfg(test)]
mod gradcheck;
pub mod model;

use crate::Scalar;
use ndarray::Array2;

/// Linear-β DDPM schedule (all in f64; index `t` runs 1..=T, index 0 is "clean").
#[derive(Clone, Debug)]
pub struct Schedule {
    pub beta: Vec<f64>,
    pub alpha: Vec<f64>,
    pub alpha_bar: Vec<f64>,
    pub sigma: Vec<f64>,
}

impl Schedule {
    /// `T` steps, `β` linear from `beta_start` to `beta_end`.
    pub fn linear(t: usize, beta_start: f64, beta_end: f64) -> Self {
        let mut beta = vec![0.0; t + 1];
        for (i, b) in beta.iter_mut().enumerate().skip(1) {
            *b = if t == 1 {
                beta_start
            } else {
                beta_start + (beta_end - beta_start) * (i - 1) as f64 / (t - 1) as f64
            };
        }
        let alpha: Vec<f64> = beta.iter().map(|b| 1.0 - b).collect();
        let mut alpha_bar = vec![1.0; t + 1];
        for i in 1..=t {
            alpha_bar[i] = alpha_bar[i - 1] * alpha[i];
        }
        let mut sigma = vec![0.0; t + 1];
        for i in 2..=t {
            sigma[i] = ((1.0 - alpha_bar[i - 1]) / (1.0 - alpha_bar[i]) * beta[i]).sqrt();
        }
        Schedule {
            beta,
            alpha,
            alpha_bar,
            sigma,
        }
    }

    pub fn steps(&self) -> usize {
        self.beta.len() - 1
    }
}

/// Sinusoidal embedding table, row `t` for `t = 0..=T` (`dim` even).
pub fn time_embedding<F: Scalar>(steps: usize, dim: usize) -> Array2<F> {
    let half = dim / 2;
    Array2::from_shape_fn((steps + 1, dim), |(t, j)| {
        let i = j % half;
        let freq = (-(10_000f64.ln()) * i as f64 / half as f64).exp();
        let a = t as f64 * freq;
        F::c(if j < half { a.sin() } else { a.cos() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_monotone_and_consistent() {
        let s = Schedule::linear(100, 1e-4, 0.02);
        assert_eq!(s.steps(), 100);
        assert!((s.beta[1] - 1e-4).abs() < 1e-15 && (s.beta[100] - 0.02).abs() < 1e-15);
        for t in 1..=100 {
            assert!(s.alpha_bar[t] < s.alpha_bar[t - 1]);
            assert!(s.sigma[t] <= s.beta[t].sqrt() + 1e-15);
        }
        assert_eq!(s.sigma[1], 0.0);
    }

    #[test]
    fn embedding_rows_differ() {
        let e = time_embedding::<f64>(10, 8);
        assert_eq!(e.dim(), (11, 8));
        assert!((e[[0, 0]]).abs() < 1e-12 && (e[[0, 4]] - 1.0).abs() < 1e-12);
        assert_ne!(e.row(3), e.row(4));
    }
}
