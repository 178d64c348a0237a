//! The small CNN: conv3×3(c1)-BN-ReLU-maxpool, conv3×3(c2)-BN-ReLU-maxpool,
//! conv3×3(c3)-BN-ReLU, FC(feature_dim)-ReLU (the feature layer), FC(classes).
//!
//! `channels` may have any length ≥ 1: every conv block but the last is followed by 2×2/2
//! max-pooling (floor). Activations are NHWC batches stored as `(n·h·w) × c` matrices (see
//! [`super::layers`]); convolutions have no bias (BatchNorm's β plays that role).

use super::convstack::{self, StackTape};
use super::layers::Nhwc;
use super::mlp::Dense;
use crate::error::{Error, Result};
use crate::rng::{fill_uniform, Rng};
use crate::Scalar;
use ndarray::{concatenate, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Rows per chunk in the batched eval-mode paths.
const EVAL_CHUNK: usize = 256;
/// BatchNorm running-statistics momentum (PyTorch convention).
pub const BN_MOMENTUM: f64 = 0.1;

/// Architecture parameters.
#[derive(Clone, Debug)]
pub struct CnnArch {
    pub channels: Vec<usize>,
    pub feature_dim: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl CnnArch {
    /// Spatial size `(h, w)` of the last conv block's output; errors if any size is zero or
    /// the pooling would shrink the map to nothing.
    pub fn final_hw(&self) -> Result<(usize, usize)> {
        let bad = |k: &str, m: String| Err(Error::param(format!("cnn.{k}"), m));
        if self.channels.is_empty() || self.channels.contains(&0) {
            return bad(
                "channels",
                "need at least one conv block, all with ≥ 1 channel".into(),
            );
        }
        if self.feature_dim == 0 {
            return bad("feature_dim", "must be ≥ 1".into());
        }
        if self.classes < 2 {
            return bad("classes", "need at least 2 classes".into());
        }
        let (mut h, mut w) = (self.height, self.width);
        if h == 0 || w == 0 {
            return bad("height", format!("image size {h}×{w} is empty"));
        }
        for _ in 1..self.channels.len() {
            h /= 2;
            w /= 2;
        }
        if h == 0 || w == 0 {
            return bad(
                "channels",
                format!(
                    "{} conv blocks pool a {}×{} image down to {h}×{w}; use fewer blocks or larger images",
                    self.channels.len(),
                    self.height,
                    self.width
                ),
            );
        }
        Ok((h, w))
    }
    /// Input length of the feature layer.
    pub fn flat_dim(&self) -> Result<usize> {
        let (h, w) = self.final_hw()?;
        Ok(h * w * self.channels.last().copied().unwrap_or(0))
    }
}

/// One conv3×3 → BatchNorm → ReLU block.
#[derive(Clone, Debug)]
pub struct ConvBlock<F> {
    /// Kernel as a `9·c_in × c_out` matrix (row `(ky·3+kx)·c_in + ci`).
    pub w: Array2<F>,
    pub gamma: Array1<F>,
    pub beta: Array1<F>,
    pub running_mean: Array1<F>,
    pub running_var: Array1<F>,
}

/// A trained (or freshly initialised) CNN.
#[derive(Clone, Debug)]
pub struct Cnn<F> {
    pub arch: CnnArch,
    pub blocks: Vec<ConvBlock<F>>,
    /// Feature layer (followed by ReLU).
    pub fc1: Dense<F>,
    /// Output layer.
    pub fc2: Dense<F>,
}

/// Parameter gradients, same structure as [`Cnn`].
#[derive(Clone, Debug)]
pub struct CnnGrads<F> {
    pub w: Vec<Array2<F>>,
    pub gamma: Vec<Array1<F>>,
    pub beta: Vec<Array1<F>>,
    pub fc1: (Array2<F>, Array1<F>),
    pub fc2: (Array2<F>, Array1<F>),
}

impl<F: Scalar> CnnGrads<F> {
    /// Flat views in the order of [`Cnn::params_mut`].
    pub fn slices(&self) -> Vec<&[F]> {
        let mut v: Vec<&[F]> = Vec::new();
        for i in 0..self.w.len() {
            v.push(self.w[i].as_slice().expect("standard layout"));
            v.push(self.gamma[i].as_slice().expect("contiguous"));
            v.push(self.beta[i].as_slice().expect("contiguous"));
        }
        for (w, b) in [&self.fc1, &self.fc2] {
            v.push(w.as_slice().expect("standard layout"));
            v.push(b.as_slice().expect("contiguous"));
        }
        v
    }
}

/// Everything `forward_cached` keeps for [`Cnn::backward`].
pub struct CnnCache<F> {
    stack: StackTape<F>,
    flat: Array2<F>,
    /// Feature-layer activations (after ReLU).
    pub features: Array2<F>,
    /// Class logits.
    pub logits: Array2<F>,
}

impl<F: Scalar> Cnn<F> {
    /// Seeded initialisation: He-uniform convs and feature layer, LeCun-uniform output layer,
    /// γ = 1, β = 0, running mean 0 and variance 1.
    pub fn new(arch: &CnnArch, rng: &mut Rng) -> Result<Self> {
        let flat = arch.flat_dim()?;
        let mut cin = 1;
        let mut blocks = Vec::with_capacity(arch.channels.len());
        for &cout in &arch.channels {
            let mut w = Array2::<F>::zeros((9 * cin, cout));
            let bound = (6.0 / (9 * cin) as f64).sqrt();
            fill_uniform(rng, w.as_slice_mut().expect("fresh"), -bound, bound);
            blocks.push(ConvBlock {
                w,
                gamma: Array1::ones(cout),
                beta: Array1::zeros(cout),
                running_mean: Array1::zeros(cout),
                running_var: Array1::ones(cout),
            });
            cin = cout;
        }
        let fc1 = Dense::he_uniform(flat, arch.feature_dim, rng);
        let fc2 = Dense::uniform(
            arch.feature_dim,
            arch.classes,
            1.0 / (arch.feature_dim as f64).sqrt(),
            rng,
        );
        Ok(Cnn {
            arch: arch.clone(),
            blocks,
            fc1,
            fc2,
        })
    }

    /// Error unless `x` has `height·width` columns.
    pub fn check_input(&self, x: ArrayView2<F>) -> Result<()> {
        let d = self.arch.height * self.arch.width;
        if x.ncols() != d {
            return Err(Error::ShapeMismatch {
                op: "cnn input (rows are height·width images)",
                lhs: vec![x.nrows(), x.ncols()],
                rhs: vec![x.nrows(), d],
            });
        }
        Ok(())
    }

    /// Forward pass keeping what backward needs. `train` selects batch statistics in
    /// BatchNorm (running statistics are not updated here; see [`Cnn::update_running_stats`]).
    /// Panics if `x` has the wrong number of columns (use [`Cnn::check_input`] first).
    pub fn forward_cached(&self, x: ArrayView2<F>, train: bool) -> CnnCache<F> {
        if let Err(e) = self.check_input(x) {
            panic!("{e}");
        }
        let n = x.nrows();
        let s = Nhwc {
            n,
            h: self.arch.height,
            w: self.arch.width,
            c: 1,
        };
        let x = x.as_standard_layout();
        let xs = x.as_slice().expect("standard layout");
        let ipc = convstack::images_per_chunk(&self.blocks, s);
        let (stack, flat) = convstack::forward(&self.blocks, xs, s, train, ipc);
        let flat = Array2::from_shape_vec((n, self.fc1.w.nrows()), flat).expect("flatten");
        let mut features = self.fc1.forward(flat.view());
        features.mapv_inplace(|v| v.max(F::zero()));
        let logits = self.fc2.forward(features.view());
        CnnCache {
            stack,
            flat,
            features,
            logits,
        }
    }

    /// Backpropagate gradients w.r.t. the features and/or the logits. Returns the parameter
    /// gradients (if `param_grads`) and the input gradient (if `input_grad`).
    pub fn backward(
        &self,
        cache: &CnnCache<F>,
        d_features: Option<ArrayView2<F>>,
        d_logits: Option<ArrayView2<F>>,
        param_grads: bool,
        input_grad: bool,
    ) -> (Option<CnnGrads<F>>, Option<Array2<F>>) {
        let n = cache.features.nrows();
        let mut g = match d_features {
            Some(d) => d.to_owned(),
            None => Array2::zeros(cache.features.raw_dim()),
        };
        let mut fc2 = None;
        if let Some(dl) = d_logits {
            if param_grads {
                fc2 = Some(self.fc2.param_grads(cache.features.view(), dl));
            }
            g += &self.fc2.input_grad(dl);
        }
        ndarray::Zip::from(&mut g)
            .and(&cache.features)
            .for_each(|d, &f| {
                if f <= F::zero() {
                    *d = F::zero()
                }
            });
        let fc1 = param_grads.then(|| self.fc1.param_grads(cache.flat.view(), g.view()));
        let gflat = self.fc1.input_grad(g.view());
        let gflat = gflat.as_slice().expect("standard layout");
        let (conv, dx) =
            convstack::backward(&self.blocks, &cache.stack, gflat, param_grads, input_grad);
        let dx = dx.map(|v| {
            Array2::from_shape_vec((n, self.arch.height * self.arch.width), v)
                .expect("input grad shape")
        });
        let grads = conv.map(|(gw, gg, gb)| {
            let (fw, fb) = self.fc2.w.dim();
            CnnGrads {
                w: gw,
                gamma: gg,
                beta: gb,
                fc1: fc1.expect("fc1 grads"),
                fc2: fc2.unwrap_or_else(|| (Array2::zeros((fw, fb)), Array1::zeros(fb))),
            }
        });
        (grads, dx)
    }

    /// Fold a training batch's statistics into the running mean/variance (momentum 0.1,
    /// unbiased variance, as PyTorch).
    pub fn update_running_stats(&mut self, cache: &CnnCache<F>) {
        let mom = F::c(BN_MOMENTUM);
        for (blk, bc) in self.blocks.iter_mut().zip(&cache.stack.blocks) {
            if !bc.stats.train {
                continue;
            }
            let m = bc.shape.rows();
            let unbias = if m > 1 {
                F::c(m as f64 / (m - 1) as f64)
            } else {
                F::one()
            };
            for (r, &v) in blk.running_mean.iter_mut().zip(&bc.stats.mean) {
                *r = (F::one() - mom) * *r + mom * v;
            }
            for (r, &v) in blk.running_var.iter_mut().zip(&bc.stats.var) {
                *r = (F::one() - mom) * *r + mom * v * unbias;
            }
        }
    }

    /// Flat mutable views of all trainable parameters (order of [`CnnGrads::slices`]).
    pub fn params_mut(&mut self) -> Vec<&mut [F]> {
        let mut v: Vec<&mut [F]> = Vec::new();
        for b in self.blocks.iter_mut() {
            v.push(b.w.as_slice_mut().expect("standard layout"));
            v.push(b.gamma.as_slice_mut().expect("contiguous"));
            v.push(b.beta.as_slice_mut().expect("contiguous"));
        }
        for d in [&mut self.fc1, &mut self.fc2] {
            v.push(d.w.as_slice_mut().expect("standard layout"));
            v.push(d.b.as_slice_mut().expect("contiguous"));
        }
        v
    }

    /// True when all parameters and running statistics are finite.
    pub fn is_finite(&self) -> bool {
        let ok = |a: &[F]| a.iter().all(|v| v.is_finite());
        self.blocks.iter().all(|b| {
            [&b.gamma, &b.beta, &b.running_mean, &b.running_var]
                .iter()
                .all(|a| ok(a.as_slice().unwrap()))
                && ok(b.w.as_slice().unwrap())
        }) && [&self.fc1, &self.fc2]
            .iter()
            .all(|d| ok(d.w.as_slice().unwrap()) && ok(d.b.as_slice().unwrap()))
    }

    /// Eval-mode `(features, logits)`, in parallel chunks of 256 images.
    pub fn features_and_logits(&self, x: ArrayView2<F>) -> (Array2<F>, Array2<F>) {
        if x.nrows() <= EVAL_CHUNK {
            let c = self.forward_cached(x, false);
            return (c.features, c.logits);
        }
        let parts: Vec<(Array2<F>, Array2<F>)> = x
            .axis_chunks_iter(Axis(0), EVAL_CHUNK)
            .into_par_iter()
            .map(|xc| {
                let c = self.forward_cached(xc, false);
                (c.features, c.logits)
            })
            .collect();
        let f: Vec<_> = parts.iter().map(|p| p.0.view()).collect();
        let l: Vec<_> = parts.iter().map(|p| p.1.view()).collect();
        (
            concatenate(Axis(0), &f).expect("same widths"),
            concatenate(Axis(0), &l).expect("same widths"),
        )
    }

    /// Feature-layer activations (after ReLU), eval mode. Rows of `x` are images.
    pub fn features(&self, x: ArrayView2<F>) -> Array2<F> {
        self.features_and_logits(x).0
    }
    /// Class logits, eval mode.
    pub fn logits(&self, x: ArrayView2<F>) -> Array2<F> {
        self.features_and_logits(x).1
    }

    /// Eval-mode vector–Jacobian product: gradient w.r.t. the input images of
    /// `⟨d_features, features(x)⟩ + ⟨d_logits, logits(x)⟩`.
    pub fn input_vjp(
        &self,
        x: ArrayView2<F>,
        d_features: Option<ArrayView2<F>>,
        d_logits: Option<ArrayView2<F>>,
    ) -> Array2<F> {
        let c = self.forward_cached(x, false);
        self.backward(&c, d_features, d_logits, false, true)
            .1
            .expect("input grad requested")
    }

    /// Eval-mode features of `x` with what their input gradient needs
    /// ([`Self::features_vjp`]): the forward caches of chunks of [`EVAL_CHUNK`] rows (the
    /// chunks [`Self::features`] uses, so the features are the same bits), without the
    /// block inputs, which only the weight gradients read.
    pub fn features_taped(&self, x: ArrayView2<F>) -> (Array2<F>, Vec<CnnCache<F>>) {
        let caches: Vec<CnnCache<F>> = x
            .axis_chunks_iter(Axis(0), EVAL_CHUNK)
            .into_par_iter()
            .map(|xc| {
                let mut c = self.forward_cached(xc, false);
                c.stack.drop_inputs();
                c
            })
            .collect();
        let f: Vec<_> = caches.iter().map(|c| c.features.view()).collect();
        let features =
            concatenate(Axis(0), &f).unwrap_or_else(|_| Array2::zeros((0, self.arch.feature_dim)));
        (features, caches)
    }

    /// The input gradient of `⟨d_features, features(x)⟩` from the caches of
    /// [`Self::features_taped`] (rows of `d_features` in the order of `x`): the same values as
    /// [`Self::input_vjp`] without recomputing the forward pass.
    pub fn features_vjp(&self, caches: &[CnnCache<F>], d_features: ArrayView2<F>) -> Array2<F> {
        let starts: Vec<usize> = caches
            .iter()
            .scan(0, |at, c| {
                let s0 = *at;
                *at += c.features.nrows();
                Some(s0)
            })
            .collect();
        let parts: Vec<Array2<F>> = caches
            .par_iter()
            .zip(starts)
            .map(|(c, s0)| {
                let d = d_features.slice(ndarray::s![s0..s0 + c.features.nrows(), ..]);
                self.backward(c, Some(d), None, false, true)
                    .1
                    .expect("input grad requested")
            })
            .collect();
        let v: Vec<_> = parts.iter().map(|p| p.view()).collect();
        concatenate(Axis(0), &v)
            .unwrap_or_else(|_| Array2::zeros((0, self.arch.height * self.arch.width)))
    }

    /// Convert the parameters to another float type.
    pub fn cast<G: Scalar>(&self) -> Cnn<G> {
        let cv1 = |a: &Array1<F>| a.mapv(|v| G::c(v.to_f64().unwrap_or(f64::NAN)));
        Cnn {
            arch: self.arch.clone(),
            blocks: self
                .blocks
                .iter()
                .map(|b| ConvBlock {
                    w: b.w.mapv(|v| G::c(v.to_f64().unwrap_or(f64::NAN))),
                    gamma: cv1(&b.gamma),
                    beta: cv1(&b.beta),
                    running_mean: cv1(&b.running_mean),
                    running_var: cv1(&b.running_var),
                })
                .collect(),
            fc1: self.fc1.cast(),
            fc2: self.fc2.cast(),
        }
    }
}
