//! The pixel-space attacked function on a really trained pipeline (`jobs/smoke.yaml`): the
//! image → feature map reproduces the pipeline's evaluated features exactly, and its
//! gradient is not masked — APGD-CE in image space at the MNIST budget ε = 0.3 breaks the
//! undefended pipeline, ε = 0 keeps its clean accuracy, every iterate stays in the ball and
//! in [0, 1] (issue 14's sanity rule).

use super::stages::{prepare_data, train_all};
use super::Timings;
use crate::attack::apgd::{apgd, ApgdParams};
use crate::attack::pixel::{FeatureMap, PixelModel, Projection};
use crate::attack::{BoxConstraint, LossKind};
use crate::backend::DeviceCtx;
use crate::diffusion::model::BaseModel;
use crate::nmf::NmfModel;
use ndarray::Axis;
use std::path::Path;

#[test]
fn image_space_apgd_breaks_the_undefended_pipeline_at_the_mnist_budget() {
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml");
    let cfg = crate::config::load_job(&job, &["attack.max_points=150".into()])
        .unwrap()
        .config;
    let mut t = Timings::default();
    let tr = train_all(&cfg, &mut t, None, &DeviceCtx::cpu()).unwrap();
    let ds = prepare_data(&cfg, &mut t).unwrap().ds;
    let idx: Vec<usize> = tr.eval.ids.iter().map(|&i| i as usize).collect();
    let x = ds.images.select(Axis(0), &idx);
    let nnmf = tr.nnmf.as_ref().unwrap();
    let p = Projection::of(&NmfModel {
        basis: nnmf.basis.clone(),
        loss: cfg.nnmf.loss,
        max_iter: cfg.nnmf.max_iter,
        tol: cfg.nnmf.tol,
    })
    .unwrap();
    let map = FeatureMap {
        cnn: tr.cnn.as_ref(),
        nnmf: Some(&p),
        mean: tr.scaler.mean.clone(),
        std: tr.scaler.std.clone(),
    };
    let (z, _) = map.forward(x.view()).unwrap();
    assert_eq!(
        z, tr.eval.z,
        "the map is the pipeline's feature computation"
    );
    let base = BaseModel { clf: &tr.clf };
    let model = PixelModel { map, inner: &base };
    let (y, ids) = (&tr.eval.y, &tr.eval.ids);
    let acc = |eps: f32| {
        let p = ApgdParams {
            n_iter: 50,
            bounds: BoxConstraint::Unit,
            ..ApgdParams::rand_version(eps, LossKind::Ce, 3)
        };
        let p = ApgdParams { eot: 1, ..p };
        let o = apgd(&model, x.view(), y, ids, &p).unwrap();
        for (a, c) in o.adv.rows().into_iter().zip(x.rows()) {
            for (&v, &u) in a.iter().zip(c.iter()) {
                assert!((0.0..=1.0).contains(&v) && (v - u).abs() <= eps + 1e-6);
            }
        }
        1.0 - o.fooled.iter().filter(|&&f| f).count() as f64 / y.len() as f64
    };
    let clean = acc(0.0);
    let robust = acc(0.3);
    println!(
        "pixel-space APGD-CE on the smoke pipeline ({} points): clean {clean:.4}, ε=0.1 {:.4}, ε=0.3 {robust:.4}",
        y.len(),
        acc(0.1)
    );
    let proba = base.predict_proba(tr.eval.z.view());
    let direct = proba
        .rows()
        .into_iter()
        .zip(y)
        .filter(|(r, &c)| crate::metrics::argmax(*r) == c)
        .count() as f64
        / y.len() as f64;
    assert_eq!(clean, direct, "ε = 0 keeps the clean accuracy");
    assert!(clean > 0.3, "a trained classifier: clean accuracy {clean}");
    assert!(
        robust <= 0.02,
        "robust accuracy at ε = 0.3 in pixel space: {robust}"
    );
}

/// The whole evaluation with `attack.threat: pixel` on one trained smoke pipeline: the
/// clean rows equal the feature-space run's (the map is the pipeline's own feature
/// computation), the undefended pipeline falls to ≤ 2 % at ε = 0.3 (and the run's own
/// `base_pixel_budget` check says so), every protocol's row exists, and the stored
/// adversarial images are valid images in the ε-ball of their clean originals.
#[test]
fn a_pixel_space_evaluation_runs_every_protocol_on_images() {
    use crate::config::Threat;
    use crate::results::{Protocol, Scenario};
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml");
    let sets = [
        "attack.max_points=60",
        "attack.eps=[0.0,0.3]",
        "attack.iterations=20",
        "attack.warm_iterations=5",
        "attack.checks.enabled=false",
    ]
    .map(String::from);
    let mut cfg = crate::config::load_job(&job, &sets).unwrap().config;
    let mut t = Timings::default();
    let ctx = DeviceCtx::cpu();
    let tr = train_all(&cfg, &mut t, None, &ctx).unwrap();
    let feature = super::evaluate::evaluate(&cfg, &tr, &mut t, &ctx, None).unwrap();
    cfg.attack.threat = Threat::Pixel;
    let pixel = super::evaluate::evaluate(&cfg, &tr, &mut t, &ctx, None).unwrap();
    let find = |rows: &[crate::results::ScenarioResult], s: Scenario, p: Protocol, e: f64| {
        rows.iter()
            .find(|r| r.scenario == s && r.protocol == p && r.eps == e)
            .unwrap_or_else(|| panic!("no {s:?}/{p:?} row at ε = {e}"))
            .clone()
    };
    for s in [Scenario::CleanBase, Scenario::CleanDef] {
        let (f, p) = (
            find(&feature.scenarios, s, Protocol::None, 0.0),
            find(&pixel.scenarios, s, Protocol::None, 0.0),
        );
        assert_eq!(f.proba, p.proba, "{s:?}: same clean probabilities");
    }
    let base = find(&pixel.scenarios, Scenario::RobustBase, Protocol::None, 0.3);
    assert!(
        base.metrics.accuracy <= 0.02,
        "Robust_Base at pixel ε = 0.3: {}",
        base.metrics.accuracy
    );
    for p in [Protocol::Transfer, Protocol::Adaptive, Protocol::Worst] {
        let r = find(&pixel.scenarios, Scenario::RobustDef, p, 0.3);
        assert!(r.metrics.accuracy <= 1.0 && r.metrics.accuracy.is_finite());
    }
    let check = pixel
        .checks
        .iter()
        .find(|c| c.name == "base_pixel_budget[eps=0.3]")
        .expect("the pixel budget check runs");
    assert!(check.passed, "{}", check.detail);
    assert!(
        feature.adversarial.is_none()
            && feature
                .checks
                .iter()
                .all(|c| !c.name.starts_with("base_pixel"))
    );
    let a = pixel
        .adversarial
        .expect("pixel runs keep adversarial images");
    assert_eq!((a.eps, a.ids.len()), (0.3, 8));
    // One point per class first (in evaluation order), then the earliest other points.
    let rows: Vec<usize> = a
        .ids
        .iter()
        .map(|id| tr.eval.ids.iter().position(|e| e == id).unwrap())
        .collect();
    let mut classes: Vec<u8> = a.labels.clone();
    classes.sort();
    classes.dedup();
    let mut present = tr.eval.y.clone();
    present.sort();
    present.dedup();
    let n_classes = present.len().min(8);
    assert_eq!(classes.len(), n_classes, "classes shown: {:?}", a.labels);
    let firsts = &rows[..n_classes];
    assert!(firsts.windows(2).all(|w| w[0] < w[1]), "{rows:?}");
    for (&r, &c) in firsts.iter().zip(&a.labels) {
        assert_eq!(tr.eval.y[r], c as usize);
        assert!(
            tr.eval.y[..r].iter().all(|&p| p != c as usize),
            "first of class {c}"
        );
    }
    let rest: Vec<usize> = (0..tr.eval.y.len())
        .filter(|i| !firsts.contains(i))
        .take(8 - n_classes)
        .collect();
    assert_eq!(rows[n_classes..], rest[..]);
    for adv in [&a.base, &a.defence] {
        for (r, c) in adv.rows().into_iter().zip(a.clean.rows()) {
            for (&v, &u) in r.iter().zip(c.iter()) {
                assert!((0.0..=1.0).contains(&v) && (v - u).abs() <= 0.3 + 1e-6);
            }
        }
    }
    assert_eq!(a.clean, tr.eval.images.select(Axis(0), &rows));
    let fooled = (0..8).filter(|&i| a.base_pred[i] != a.labels[i]).count();
    assert!(
        fooled >= 7,
        "the base attack fooled {fooled} of the first 8 points at ε = 0.3"
    );
}

/// The ablations work in pixel space too: with only the NNMF block or only the CNN block
/// the map has that block alone, reproduces the run's features, and the undefended
/// pipeline still falls at ε = 0.3 (each part alone is attackable through its exact
/// gradient).
#[test]
fn pixel_space_ablations_attack_each_feature_block_alone() {
    use crate::config::Threat;
    use crate::results::{Protocol, Scenario};
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml");
    for (cnn, nnmf) in [(false, true), (true, false)] {
        let sets = [
            format!("features.cnn={cnn}"),
            format!("features.nnmf={nnmf}"),
            "attack.max_points=40".into(),
            "attack.eps=[0.0,0.3]".into(),
            "attack.iterations=20".into(),
            "attack.checks.enabled=false".into(),
            "attack.threat=pixel".into(),
        ];
        let cfg = crate::config::load_job(&job, &sets).unwrap().config;
        assert_eq!(cfg.attack.threat, Threat::Pixel);
        let mut t = Timings::default();
        let ctx = DeviceCtx::cpu();
        let tr = train_all(&cfg, &mut t, None, &ctx).unwrap();
        let proj = super::pixel::projection(&cfg, &tr).unwrap();
        let map = super::pixel::feature_map(&tr, proj.as_ref());
        assert_eq!((map.cnn.is_some(), map.nnmf.is_some()), (cnn, nnmf));
        assert_eq!(map.forward(tr.eval.images.view()).unwrap().0, tr.eval.z);
        let ev = super::evaluate::evaluate(&cfg, &tr, &mut t, &ctx, None).unwrap();
        let acc = |s: Scenario, e: f64| {
            ev.scenarios
                .iter()
                .find(|r| r.scenario == s && r.protocol == Protocol::None && r.eps == e)
                .unwrap()
                .metrics
                .accuracy
        };
        let (clean, robust) = (
            acc(Scenario::CleanBase, 0.0),
            acc(Scenario::RobustBase, 0.3),
        );
        assert!(clean > 0.2, "cnn {cnn}, nnmf {nnmf}: clean {clean}");
        assert!(
            robust <= 0.05,
            "cnn {cnn}, nnmf {nnmf}: robust {robust} at ε = 0.3"
        );
    }
}
