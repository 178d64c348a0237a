//! The pixel-space threat model's evaluation (`attack.threat: pixel`, `docs/evaluation.md`):
//! the same protocols, candidates, worst case and checks as the feature space
//! ([`super::evaluate`]), with every model and scorer behind the image → z-scored hybrid
//! vector map of [`crate::attack::pixel`]. The attacked points are the evaluated images,
//! the L∞ ball is in pixel units and the box is always [0, 1].
//!
//! The map is the pipeline's own feature computation (CNN feature layer with eval-mode
//! BatchNorm ⊕ the NNMF projection with `nnmf.max_iter`/`nnmf.tol` → z-score), recomputed
//! on the CPU from the images: the clean rows are scored on the map of the clean images
//! (identical to the run's features on the CPU; a GPU NNMF fit's features agree to
//! rounding only).

use super::evaluate::{run_all, Ctx, Evaluation, Models};
use super::stages::Trained;
use super::worst::Scorer;
use super::Timings;
use crate::attack::pixel::{FeatureMap, PixelModel, Projection};
use crate::attack::BoxConstraint;
use crate::config::{JobConfig, Protocol};
use crate::error::Result;
use crate::nmf::NmfModel;
use ndarray::{Array2, ArrayView2};

/// A feature-space scorer behind the image → feature map.
pub(super) struct PixelScorer<'a> {
    pub map: &'a FeatureMap<'a, f32>,
    pub inner: &'a dyn Scorer,
}

impl Scorer for PixelScorer<'_> {
    fn repeats(&self) -> usize {
        self.inner.repeats()
    }
    fn score(&self, x: ArrayView2<f32>, ids: &[u64], r: usize) -> Result<Array2<f64>> {
        let (z, _) = self.map.forward(x)?;
        self.inner.score(z.view(), ids, r)
    }
    /// The map once, then every repeat of the inner scorer (the map is deterministic).
    fn score_repeats(&self, x: ArrayView2<f32>, ids: &[u64]) -> Result<Vec<Array2<f64>>> {
        let (z, _) = self.map.forward(x)?;
        self.inner.score_repeats(z.view(), ids)
    }
}

/// The NNMF block of the map (the trained basis with the job's projection settings).
pub(super) fn projection(cfg: &JobConfig, tr: &Trained) -> Result<Option<Projection<f32>>> {
    tr.nnmf
        .as_ref()
        .map(|n| {
            Projection::of(&NmfModel {
                basis: n.basis.clone(),
                loss: cfg.nnmf.loss,
                max_iter: cfg.nnmf.max_iter,
                tol: cfg.nnmf.tol,
            })
        })
        .transpose()
}

/// The image → z-scored hybrid vector map of the trained pipeline.
pub(super) fn feature_map<'a>(
    tr: &'a Trained,
    projection: Option<&'a Projection<f32>>,
) -> FeatureMap<'a, f32> {
    FeatureMap {
        cnn: tr.cnn.as_ref(),
        nnmf: projection,
        mean: tr.scaler.mean.clone(),
        std: tr.scaler.std.clone(),
    }
}

/// Every scenario of the job with the images as the attacked points.
pub(super) fn evaluate(
    cfg: &JobConfig,
    tr: &Trained,
    m: Models<'_>,
    t: &mut Timings,
    ckpt: Option<&std::path::Path>,
) -> Result<Evaluation> {
    let proj = projection(cfg, tr)?;
    let map = feature_map(tr, proj.as_ref());
    let x = tr.eval.images.view();
    let (clean_z, _) = t.time("pixel_features", || map.forward(x))?;
    let base = PixelModel {
        map: map.clone(),
        inner: m.base,
    };
    let attack_def = PixelModel {
        map: map.clone(),
        inner: m.attack_def,
    };
    let bs = PixelScorer {
        map: &map,
        inner: m.bs,
    };
    let ds = PixelScorer {
        map: &map,
        inner: m.ds,
    };
    let protocols = &cfg.attack.protocols;
    let e = Ctx {
        cfg,
        x,
        clean_z: clean_z.view(),
        y: &tr.eval.y,
        ids: &tr.eval.ids,
        base: &base,
        attack_def: &attack_def,
        bs: &bs,
        ds: &ds,
        def: m.ds,
        bounds: BoxConstraint::Unit,
        want_t: protocols.contains(&Protocol::Transfer),
        want_a: protocols.contains(&Protocol::Adaptive),
    };
    run_all(&e, t, ckpt)
}
