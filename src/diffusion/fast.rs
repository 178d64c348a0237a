//! The optimised CPU evaluator of the defended pipeline used by the attacks and scoring:
//! the same computation as [`super::chain::Chain`] + classifier (the f64-checked reference),
//! restructured for speed. Rows are processed in chunks, one rayon task per chunk with
//! single-threaded GEMMs inside (no nested threading, results independent of the thread
//! count); the timestep embedding is folded into a per-step bias of the first denoiser layer
//! (`[x, emb(s)]·W₁ = x·W₁ₓ + emb(s)·W₁ₑ`), so no concatenation is needed; the backward pass
//! computes only the input gradient, reusing activation derivatives stored in the forward.

use super::Schedule;
use crate::attack::{loss::loss_and_grad, Loss};
use crate::config::Prediction;
use crate::linalg::{gemm_seq, simd_level, Simd};
use crate::nn::mlp::{Activation, Mlp};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};

/// One dense layer in f32 (`w: in × out`).
#[derive(Clone, Debug)]
struct Layer {
    w: Array2<f32>,
    b: Array1<f32>,
}

/// Coefficients of one reverse step: `x ← a·x + b·D(x) + σ·z`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepCoef {
    pub(crate) a: f32,
    pub(crate) b: f32,
    pub(crate) sigma: f32,
}

/// The reverse steps `s = t*, …, 1` of a defence: their coefficients and the first denoiser
/// layer's bias with the timestep embedding folded in (`b₁ + emb(s)·W₁ₑ`, since
/// `[x, emb(s)]·W₁ = x·W₁ₓ + emb(s)·W₁ₑ`). Shared by the CPU and CUDA evaluators.
pub(crate) fn reverse_steps(
    den: &Mlp<f32>,
    sched: &Schedule,
    emb: &Array2<f32>,
    t_star: usize,
    predict: Prediction,
) -> (Vec<StepCoef>, Vec<Array1<f32>>) {
    let d = den.output_dim();
    let first = &den.layers[0];
    let w1e = first.w.slice(s![d.., ..]);
    (1..=t_star)
        .rev()
        .map(|s_| {
            let (a, b) = crate::diffusion::chain::step_coefs(sched, predict, s_);
            let coef = StepCoef {
                a: a as f32,
                b: b as f32,
                sigma: if s_ > 1 { sched.sigma[s_] as f32 } else { 0.0 },
            };
            (coef, &first.b + &emb.row(s_).dot(&w1e))
        })
        .unzip()
}

/// Precomputed weights and coefficients of a defence.
#[derive(Clone, Debug)]
pub struct FastDefended {
    d: usize,
    t_star: usize,
    sqrt_ab: f32,
    sqrt_1mab: f32,
    /// Step `j = 0…t*−1` runs `s = t* − j`.
    steps: Vec<StepCoef>,
    w1x: Array2<f32>,
    b1: Vec<Array1<f32>>,
    den_rest: Vec<Layer>,
    den_act: Activation,
    clf: Vec<Layer>,
    clf_act: Activation,
}

/// Result of one chunk.
pub struct ChunkOut {
    pub logits: Array2<f32>,
    pub loss: Array1<f32>,
    pub grad: Option<Array2<f32>>,
}

/// `exp(x)` for `x ∈ [-80, 80]` (clamped), relative error < 2e-7: range reduction by
/// `ln 2` with round-to-nearest through the 1.5·2²³ trick and a degree-6 polynomial.
/// Branch-free so that loops over slices vectorise with plain SSE2.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0;
    // max/min rather than clamp: measured to vectorise (clamp's NaN semantics differ).
    #[allow(clippy::manual_clamp)]
    let x = x.max(-80.0).min(80.0);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // SAFETY: |n| ≤ 116 after the clamp, so the conversion is exact and in range.
    let ni: i32 = unsafe { n.to_int_unchecked() };
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

/// SiLU in place over a slice; with `deriv`, also writes `act'(z)`. Dispatches at run time
/// to a build of the loop for the widest vector unit the CPU has (the baseline x86-64 target
/// is SSE2; this loop is a fifth of an adaptive attack's time).
fn silu_slice(z: &mut [f32], deriv: Option<&mut [f32]>) {
    // SAFETY (both arms): `simd_level` returned the level only when the CPU has its features.
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        Simd::Avx512 => return unsafe { silu_512(z, deriv) },
        Simd::Avx2 => return unsafe { silu_256(z, deriv) },
        Simd::Baseline => {}
    }
    silu_body(z, deriv)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn silu_512(z: &mut [f32], deriv: Option<&mut [f32]>) {
    silu_body(z, deriv)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_256(z: &mut [f32], deriv: Option<&mut [f32]>) {
    silu_body(z, deriv)
}

#[inline(always)]
fn silu_body(z: &mut [f32], deriv: Option<&mut [f32]>) {
    match deriv {
        None => {
            for v in z.iter_mut() {
                let sg = 1.0 / (1.0 + exp_fast(-*v));
                *v *= sg;
            }
        }
        Some(d) => {
            for (v, dv) in z.iter_mut().zip(d.iter_mut()) {
                let sg = 1.0 / (1.0 + exp_fast(-*v));
                *dv = sg * (1.0 + *v * (1.0 - sg));
                *v *= sg;
            }
        }
    }
}

/// `out = act(z)` in place, returning `act'(z)` when asked.
fn activate(z: &mut Array2<f32>, act: Activation, want_deriv: bool) -> Option<Array2<f32>> {
    match (act, want_deriv) {
        (Activation::Relu, false) => {
            z.mapv_inplace(|v| v.max(0.0));
            None
        }
        (Activation::Relu, true) => {
            let d = z.mapv(|v| if v > 0.0 { 1.0 } else { 0.0 });
            z.mapv_inplace(|v| v.max(0.0));
            Some(d)
        }
        (Activation::Silu, false) => {
            silu_slice(z.as_slice_mut().expect("standard layout"), None);
            None
        }
        (Activation::Silu, true) => {
            let mut d = Array2::<f32>::zeros(z.raw_dim());
            silu_slice(
                z.as_slice_mut().expect("standard layout"),
                Some(d.as_slice_mut().expect("standard layout")),
            );
            Some(d)
        }
    }
}

/// `x·w + b` into a fresh array.
fn affine(x: ArrayView2<f32>, w: &Array2<f32>, b: &Array1<f32>) -> Array2<f32> {
    let mut z = b
        .broadcast((x.nrows(), w.ncols()))
        .expect("bias width = output width")
        .to_owned();
    gemm_seq(z.view_mut(), x, w.view(), true);
    z
}

/// `g·wᵀ`.
fn back(g: ArrayView2<f32>, w: &Array2<f32>) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((g.nrows(), w.nrows()));
    gemm_seq(out.view_mut(), g, w.t(), false);
    out
}

impl FastDefended {
    /// Precompute from a trained denoiser and classifier.
    pub fn new(
        den: &Mlp<f32>,
        clf: &Mlp<f32>,
        sched: &Schedule,
        emb: &Array2<f32>,
        t_star: usize,
        predict: Prediction,
    ) -> Self {
        let d = den.output_dim();
        let first = &den.layers[0];
        let w1x = first.w.slice(s![0..d, ..]).to_owned();
        let (steps, b1) = reverse_steps(den, sched, emb, t_star, predict);
        let to_layers = |m: &Mlp<f32>, skip: usize| -> Vec<Layer> {
            m.layers[skip..]
                .iter()
                .map(|l| Layer {
                    w: l.w.clone(),
                    b: l.b.clone(),
                })
                .collect()
        };
        let ab = sched.alpha_bar[t_star];
        FastDefended {
            d,
            t_star,
            sqrt_ab: ab.sqrt() as f32,
            sqrt_1mab: (1.0 - ab).sqrt() as f32,
            steps,
            w1x,
            b1,
            den_rest: to_layers(den, 1),
            den_act: den.act,
            clf: to_layers(clf, 0),
            clf_act: clf.act,
        }
    }

    /// Noise values per row (same layout as [`super::chain::Chain`]).
    /// The smoothing scale of the first step: `√ᾱx + √(1−ᾱ)n = √ᾱ(x + σn)` with
    /// `σ = √(1−ᾱ)/√ᾱ` at t* (from the f32 coefficients the passes use).
    pub fn smoothing_sigma(&self) -> f64 {
        f64::from(self.sqrt_1mab) / f64::from(self.sqrt_ab)
    }

    pub fn noise_len(&self) -> usize {
        self.t_star * self.d
    }

    /// Purify and classify one chunk; with `grad`, also the input gradient of the summed
    /// loss (noise fixed).
    pub fn chunk(
        &self,
        x0: ArrayView2<f32>,
        noise: ArrayView2<f32>,
        y: &[usize],
        loss: Loss<'_>,
        grad: bool,
    ) -> ChunkOut {
        let d = self.d;
        let mut x = x0.mapv(|v| v * self.sqrt_ab);
        x.scaled_add(self.sqrt_1mab, &noise.slice(s![.., 0..d]));
        // Per step: activation derivatives of each hidden layer.
        let mut derivs: Vec<Vec<Array2<f32>>> =
            Vec::with_capacity(if grad { self.t_star } else { 0 });
        for (j, c) in self.steps.iter().enumerate() {
            let mut h = affine(x.view(), &self.w1x, &self.b1[j]);
            let mut dj = vec![];
            if let Some(dv) = activate(&mut h, self.den_act, grad) {
                dj.push(dv);
            }
            let last = self.den_rest.len() - 1;
            for (l, layer) in self.den_rest.iter().enumerate() {
                let mut z = affine(h.view(), &layer.w, &layer.b);
                if l < last {
                    if let Some(dv) = activate(&mut z, self.den_act, grad) {
                        dj.push(dv);
                    }
                }
                h = z;
            }
            x.mapv_inplace(|v| v * c.a);
            x.scaled_add(c.b, &h);
            if c.sigma > 0.0 {
                x.scaled_add(c.sigma, &noise.slice(s![.., (j + 1) * d..(j + 2) * d]));
            }
            if grad {
                derivs.push(dj);
            }
        }
        let mut cderiv = vec![];
        let mut h = x;
        let last = self.clf.len() - 1;
        for (l, layer) in self.clf.iter().enumerate() {
            let mut z = affine(h.view(), &layer.w, &layer.b);
            if l < last {
                if let Some(dv) = activate(&mut z, self.clf_act, grad) {
                    cderiv.push(dv);
                }
            }
            h = z;
        }
        let logits = h;
        let (l, dlogits) = loss_and_grad(loss, logits.view(), y);
        let grad = grad.then(|| {
            let mut g = dlogits;
            for l in (0..self.clf.len()).rev() {
                g = back(g.view(), &self.clf[l].w);
                if l > 0 {
                    g *= &cderiv[l - 1];
                }
            }
            for (j, c) in self.steps.iter().enumerate().rev() {
                let mut go = g.mapv(|v| v * c.b);
                for l in (0..self.den_rest.len()).rev() {
                    go = back(go.view(), &self.den_rest[l].w);
                    go *= &derivs[j][l];
                }
                let gin = back(go.view(), &self.w1x);
                g.mapv_inplace(|v| v * c.a);
                g += &gin;
            }
            g.mapv_inplace(|v| v * self.sqrt_ab);
            g
        });
        ChunkOut {
            logits,
            loss: l,
            grad,
        }
    }

    /// Logits only (scoring).
    pub fn logits(&self, x0: ArrayView2<f32>, noise: ArrayView2<f32>) -> Array2<f32> {
        let y = vec![0usize; x0.nrows()];
        self.chunk(x0, noise, &y, Loss::Ce, false).logits
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_fast_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x <= 80.0 {
            let (a, b) = (super::exp_fast(x) as f64, (x as f64).exp());
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(super::exp_fast(-1000.0) > 0.0 && super::exp_fast(1000.0).is_finite());
    }
}

/// Mean over consecutive blocks of `r` rows.
pub fn block_mean(a: ArrayView2<f32>, r: usize) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((a.nrows() / r, a.ncols()));
    for (i, blk) in a.axis_chunks_iter(Axis(0), r).enumerate() {
        out.row_mut(i).assign(&blk.sum_axis(Axis(0)));
    }
    out / r as f32
}

#[cfg(test)]
mod probe {
    #[test]
    #[ignore = "timing probe"]
    fn silu_fast_vs_std() {
        let mut z: Vec<f32> = (0..30720)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let z0 = z.clone();
        for round in 0..3 {
            let t = std::time::Instant::now();
            for _ in 0..200 {
                z.copy_from_slice(&z0);
                super::silu_slice(&mut z, None);
            }
            let fast = t.elapsed().as_secs_f64();
            let t = std::time::Instant::now();
            for _ in 0..200 {
                z.copy_from_slice(&z0);
                for v in z.iter_mut() {
                    *v *= crate::nn::mlp::sigmoid(*v);
                }
            }
            let std_ = t.elapsed().as_secs_f64();
            eprintln!(
                "round {round}: fast {:.1} us, std {:.1} us",
                fast / 200.0 * 1e6,
                std_ / 200.0 * 1e6
            );
        }
    }
}
