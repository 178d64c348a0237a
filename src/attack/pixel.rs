//! The pixel-space threat model's attacked function (`attack.threat: pixel`): the map from
//! an image to the z-scored hybrid vector — CNN feature layer (eval-mode BatchNorm) ⊕ NNMF
//! coefficients of the image projected on the fixed basis (the same multiplicative-update
//! solve as the pipeline's validation and test images) → z-score — with its exact
//! vector–Jacobian product, and [`PixelModel`], any feature-space [`AttackModel`] (the base
//! classifier or the defence) behind that map, so the attacks run on images unchanged.
//!
//! The map is deterministic: [`PixelModel::evaluate`] computes it once per call and only
//! the inner model draws its `draws` passes; the image gradient is the inner model's
//! feature gradient (already averaged over draws) pulled back through the map.

use super::{AttackModel, Loss, ModelEval};
use crate::error::{Error, Result};
use crate::nmf::project_grad::{project_taped, ProjectionTape};
use crate::nmf::{NmfLoss, NmfModel};
use crate::nn::cnn::{Cnn, CnnCache};
use crate::Scalar;
use ndarray::{concatenate, s, Array1, Array2, ArrayView2, Axis};

/// The NNMF block of the map: basis `K × p` and the projection's iteration settings.
#[derive(Clone, Debug)]
pub struct Projection<F> {
    pub basis: Array2<F>,
    pub max_iter: usize,
    pub tol: f64,
}

impl Projection<f32> {
    /// The projection of a fitted model; only the Frobenius loss has an exact image
    /// gradient here (a typed error names the key otherwise).
    pub fn of(m: &NmfModel) -> Result<Self> {
        if m.loss != NmfLoss::Frobenius {
            return Err(Error::param(
                "nnmf.loss",
                "the pixel-space threat model differentiates the Frobenius projection only; \
                 use `nnmf.loss: frobenius` (or `features.nnmf: false`)",
            ));
        }
        Ok(Projection {
            basis: m.basis.clone(),
            max_iter: m.max_iter,
            tol: m.tol,
        })
    }
}

/// Image → z-scored hybrid features (CNN block first, then NNMF, as the pipeline
/// concatenates them).
#[derive(Clone, Debug)]
pub struct FeatureMap<'a, F> {
    pub cnn: Option<&'a Cnn<F>>,
    pub nnmf: Option<&'a Projection<F>>,
    pub mean: Array1<F>,
    pub std: Array1<F>,
}

/// What [`FeatureMap::forward`] keeps for the backward pass.
pub struct MapTape<F> {
    projection: Option<ProjectionTape<F>>,
    /// The CNN's forward caches ([`FeatureMap::forward_for_grad`] only).
    cnn: Option<Vec<CnnCache<F>>>,
}

impl<F: Scalar> FeatureMap<'_, F> {
    /// Width of the CNN block (0 without one).
    fn cnn_width(&self) -> usize {
        self.cnn.map_or(0, |c| c.arch.feature_dim)
    }

    /// The z-scored features of the images `x` (rows), and the tape for [`Self::vjp`]
    /// (which then recomputes the CNN's forward pass).
    pub fn forward(&self, x: ArrayView2<F>) -> Result<(Array2<F>, MapTape<F>)> {
        self.run(x, false)
    }

    /// [`Self::forward`] keeping the CNN's forward caches in the tape, so that [`Self::vjp`]
    /// needs no second forward pass (same values; more memory while the tape lives).
    pub fn forward_for_grad(&self, x: ArrayView2<F>) -> Result<(Array2<F>, MapTape<F>)> {
        self.run(x, true)
    }

    fn run(&self, x: ArrayView2<F>, keep_cnn: bool) -> Result<(Array2<F>, MapTape<F>)> {
        let mut blocks = vec![];
        let mut cnn = None;
        if let Some(c) = self.cnn {
            c.check_input(x)?;
            if keep_cnn {
                let (f, caches) = c.features_taped(x);
                blocks.push(f);
                cnn = Some(caches);
            } else {
                blocks.push(c.features(x));
            }
        }
        let mut projection = None;
        if let Some(p) = self.nnmf {
            let (h, tape) = project_taped(x, p.basis.view(), p.max_iter, p.tol)?;
            blocks.push(h);
            projection = Some(tape);
        }
        let views: Vec<_> = blocks.iter().map(|b| b.view()).collect();
        let mut z = concatenate(Axis(1), &views)
            .map_err(|e| Error::data("pixel feature map", format!("feature blocks: {e}")))?;
        if z.ncols() != self.mean.len() {
            return Err(Error::ShapeMismatch {
                op: "pixel feature map (blocks vs z-score statistics)",
                lhs: vec![z.nrows(), z.ncols()],
                rhs: vec![1, self.mean.len()],
            });
        }
        z -= &self.mean;
        z /= &self.std;
        Ok((z, MapTape { projection, cnn }))
    }

    /// The image gradient of `⟨dz, z(x)⟩` at the images `x` of `tape`'s forward pass.
    pub fn vjp(&self, x: ArrayView2<F>, tape: &MapTape<F>, dz: ArrayView2<F>) -> Array2<F> {
        let draw = &dz / &self.std;
        let kc = self.cnn_width();
        let mut dx = Array2::<F>::zeros(x.raw_dim());
        if let Some(c) = self.cnn {
            let d = draw.slice(s![.., ..kc]);
            dx += &match &tape.cnn {
                Some(caches) => c.features_vjp(caches, d),
                None => c.input_vjp(x, Some(d), None),
            };
        }
        if let (Some(p), Some(t)) = (self.nnmf, &tape.projection) {
            dx += &t.backward(p.basis.view(), draw.slice(s![.., kc..]));
        }
        dx
    }
}

/// A feature-space [`AttackModel`] attacked through the image → feature map.
pub struct PixelModel<'a, M: ?Sized> {
    pub map: FeatureMap<'a, f32>,
    pub inner: &'a M,
}

impl<M: AttackModel + ?Sized> AttackModel for PixelModel<'_, M> {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn stochastic(&self) -> bool {
        self.inner.stochastic()
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
    ) -> Result<ModelEval> {
        let (z, tape) = if want_grad {
            self.map.forward_for_grad(x)?
        } else {
            self.map.forward(x)?
        };
        let ev = self
            .inner
            .evaluate(z.view(), y, ids, loss, draws, key, want_grad)?;
        let grad = ev.grad.map(|g| self.map.vjp(x, &tape, g.view()));
        Ok(ModelEval { grad, ..ev })
    }
    fn device(&self) -> Option<&crate::backend::cuda::CudaBackend> {
        self.inner.device()
    }
}

#[cfg(test)]
#[path = "pixel_tests.rs"]
mod pixel_tests;
