//! Network rows of the bench: one CNN / classifier / denoiser training epoch, defended
//! inference and APGD-CE on the base and the defended model, with the default sizes
//! (CNN [8,16,32]→64, classifier [96,64,10], denoiser [112,128,128,96] SiLU).
//!
//! The classifier, denoiser and attack rows use synthetic z-scored hybrid vectors of the
//! paper's width (64 CNN + 32 NNMF = 96): a class mean `N(0,1)` plus `N(0,1)` noise per
//! row, labels from the embedded data. Models attacked are trained for 2 epochs on them.

use super::{beside_peak, images, time_it, Ctx, Result};
use crate::attack::apgd::{apgd, ApgdParams};
use crate::attack::{BoxConstraint, LossKind};
use crate::config::DiffusionConfig;
use crate::diffusion::denoiser::{train_denoiser, Denoiser};
use crate::diffusion::model::{BaseModel, Defended};
use crate::nn::cnn::CnnArch;
use crate::nn::mlp::{Activation, Mlp};
use crate::nn::train::{train_classifier, train_cnn, TrainParams};
use crate::rng::{fill_normal, stream, tag};
use ndarray::Array2;

/// Width of the hybrid feature vector (CNN 64 + NNMF 32).
pub const FEATURE_DIM: usize = 96;

fn params(epochs: usize, batch: usize, lr: f64, key: &'static str) -> TrainParams {
    TrainParams {
        epochs,
        batch_size: batch,
        lr,
        weight_decay: 0.0,
        patience: 0,
        seed: 1,
        lr_key: key,
        augment_shift: 0,
        cosine_lr: false,
    }
}

/// Forward FLOPs of an MLP with these layer sizes, per row.
fn mlp_flops(sizes: &[usize]) -> f64 {
    sizes.windows(2).map(|w| 2.0 * (w[0] * w[1]) as f64).sum()
}

/// Forward FLOPs of the default CNN per 28×28 image.
fn cnn_flops(arch: &CnnArch) -> f64 {
    let (mut h, mut w, mut cin) = (arch.height, arch.width, 1usize);
    let mut total = 0.0;
    for (i, &c) in arch.channels.iter().enumerate() {
        total += 2.0 * (h * w * 9 * cin * c) as f64;
        cin = c;
        if i + 1 < arch.channels.len() {
            h /= 2;
            w /= 2;
        }
    }
    total + mlp_flops(&[h * w * cin, arch.feature_dim, arch.classes])
}

fn labels(ctx: &Ctx, idx: &[usize]) -> Vec<usize> {
    idx.iter().map(|&i| ctx.data.labels[i] as usize).collect()
}

/// Synthetic hybrid vectors for `y` (class means fixed by the seed).
pub fn features(y: &[usize], seed: u64) -> Array2<f32> {
    let mut means = Array2::<f32>::zeros((10, FEATURE_DIM));
    fill_normal(
        &mut stream(7, &[tag("bench-means")]),
        means.as_slice_mut().expect("fresh"),
    );
    let mut x = Array2::<f32>::zeros((y.len(), FEATURE_DIM));
    fill_normal(
        &mut stream(seed, &[tag("bench-features")]),
        x.as_slice_mut().expect("fresh"),
    );
    for (mut row, &c) in x.rows_mut().into_iter().zip(y) {
        row += &means.row(c % 10);
    }
    x
}

/// The (train, val, test) features and labels.
#[allow(clippy::type_complexity)]
fn feature_sets(
    ctx: &Ctx,
) -> (
    (Array2<f32>, Vec<usize>),
    (Array2<f32>, Vec<usize>),
    (Array2<f32>, Vec<usize>),
) {
    let (mut tr, va, mut te) = ctx.split();
    if ctx.quick {
        tr.truncate(400);
        te.truncate(100);
    }
    let (ytr, yva, yte) = (labels(ctx, &tr), labels(ctx, &va), labels(ctx, &te));
    (
        (features(&ytr, 1), ytr),
        (features(&yva, 2), yva),
        (features(&yte, 3), yte),
    )
}

/// One CNN training epoch (batch 64, Adam, no augmentation) on `n` images (default: the
/// 7,000 training images), validation on 100 images included.
pub fn cnn_epoch(ctx: &mut Ctx, n: Option<usize>) -> Result<()> {
    let (tr, va, _) = ctx.split();
    let default_n = if ctx.quick { 300 } else { tr.len() };
    let n = n.unwrap_or(default_n);
    let total = ctx.data.len();
    let idx: Vec<usize> = if n == tr.len() {
        tr
    } else {
        (0..n).map(|i| i * total / n).collect()
    };
    let (x, y) = (images(&ctx.data, &idx), labels(ctx, &idx));
    let vidx = &va[..100];
    let (xv, yv) = (images(&ctx.data, vidx), labels(ctx, vidx));
    let arch = CnnArch {
        channels: vec![8, 16, 32],
        feature_dim: 64,
        height: 28,
        width: 28,
        classes: 10,
    };
    let p = params(1, 64, 2e-3, "cnn.lr");
    let (t, _) = time_it(1, ctx.repeats, || {
        Ok(train_cnn(&arch, &p, x.view(), &y, xv.view(), &yv)?)
    })?;
    let flops = 3.0 * cnn_flops(&arch) * n as f64;
    let stage = if n == default_n {
        "cnn_epoch"
    } else {
        "scale_cnn_epoch"
    };
    let row = ctx.push(stage, format!("{n} images, batch 64"), t, Some(flops));
    row.note = format!("{:.0} images/s; FLOPs ≈ 3× forward", n as f64 / t.median);
    Ok(())
}

/// One classifier epoch: MLP [96, 64, 10] ReLU, batch 64, Adam.
pub fn classifier_epoch(ctx: &mut Ctx) -> Result<()> {
    let ((x, y), (xv, yv), _) = feature_sets(ctx);
    let sizes = [FEATURE_DIM, 64, 10];
    let p = params(1, 64, 1e-3, "classifier.lr");
    let (t, _) = time_it(1, ctx.repeats, || {
        Ok(train_classifier(
            &sizes,
            Activation::Relu,
            &p,
            x.view(),
            &y,
            xv.view(),
            &yv,
        )?)
    })?;
    let n = x.nrows() as f64;
    let row = ctx.push(
        "classifier_epoch",
        format!("{} × {FEATURE_DIM}, batch 64", x.nrows()),
        t,
        Some(3.0 * mlp_flops(&sizes) * n),
    );
    row.note = format!("{:.0} samples/s", n / t.median);
    Ok(())
}

fn diffusion_cfg(epochs: usize) -> DiffusionConfig {
    DiffusionConfig {
        epochs,
        ..DiffusionConfig::default()
    }
}

/// One denoiser epoch: MLP [96+16, 128, 128, 96] SiLU, batch 128, Adam.
pub fn denoiser_epoch(ctx: &mut Ctx) -> Result<()> {
    let ((x, _), (xv, _), _) = feature_sets(ctx);
    let cfg = diffusion_cfg(1);
    let (t, _) = time_it(1, ctx.repeats, || {
        Ok(train_denoiser(&cfg, 1, x.view(), xv.view())?)
    })?;
    let sizes = [FEATURE_DIM + cfg.time_dim, 128, 128, FEATURE_DIM];
    let n = x.nrows() as f64;
    let row = ctx.push(
        "denoiser_epoch",
        format!("{} × {FEATURE_DIM}, batch 128", x.nrows()),
        t,
        Some(3.0 * mlp_flops(&sizes) * n),
    );
    row.note = format!("{:.0} samples/s", n / t.median);
    Ok(())
}

/// Classifier and denoiser trained for 2 epochs on the synthetic features.
fn trained(ctx: &Ctx) -> Result<(Mlp<f32>, Denoiser)> {
    let ((x, y), (xv, yv), _) = feature_sets(ctx);
    let p = params(2, 64, 1e-3, "classifier.lr");
    let (clf, _) = train_classifier(
        &[FEATURE_DIM, 64, 10],
        Activation::Relu,
        &p,
        x.view(),
        &y,
        xv.view(),
        &yv,
    )?;
    let (den, _) = train_denoiser(&diffusion_cfg(2), 1, x.view(), xv.view())?;
    Ok((clf, den))
}

fn defended(clf: &Mlp<f32>, den: &Denoiser) -> Defended {
    Defended::of(den, clf, 10)
}

/// Defended inference with R = 10 passes (t* = 10) on the 1,500 test vectors.
pub fn defended_inference(ctx: &mut Ctx) -> Result<()> {
    let (clf, den) = trained(ctx)?;
    let model = defended(&clf, &den);
    let (_, _, (x, _)) = feature_sets(ctx);
    let ids: Vec<u64> = (0..x.nrows() as u64).collect();
    let before = ctx.peak_now()?;
    let (t, _) = time_it(1, ctx.repeats, || {
        Ok(model.predict_proba(x.view(), &ids, 10, 5))
    })?;
    let after = ctx.peak_now()?;
    let n = x.nrows() as f64;
    let per = 10.0 * (10.0 * mlp_flops(&[112, 128, 128, 96]) + mlp_flops(&[96, 64, 10]));
    let beside = beside_peak(per * n / t.median, before, after);
    let row = ctx.push(
        "defended_inference",
        format!("{} vectors, R=10, t*=10", x.nrows()),
        t,
        Some(per * n),
    );
    row.note = format!("{:.0} vectors/s{beside}", n / t.median);
    Ok(())
}

fn attack_params(eot: usize) -> ApgdParams {
    ApgdParams {
        eps: 0.1,
        n_iter: 100,
        loss: LossKind::Ce,
        eot,
        restarts: 1,
        rho: crate::attack::apgd::RHO,
        bounds: BoxConstraint::None,
        seed: 0,
        early_stop: true,
        confirm: 10,
    }
}

/// APGD-CE, 100 iterations, ε = 0.1, on the base classifier (1,500 test vectors).
pub fn apgd_base(ctx: &mut Ctx) -> Result<()> {
    let (clf, _) = trained(ctx)?;
    let (_, _, (x, y)) = feature_sets(ctx);
    let ids: Vec<u64> = (0..x.nrows() as u64).collect();
    let model = BaseModel { clf: &clf };
    let p = attack_params(1);
    let (t, out) = time_it(1, ctx.repeats, || Ok(apgd(&model, x.view(), &y, &ids, &p)?))?;
    let fooled = out.fooled.iter().filter(|&&f| f).count();
    let evals = out.grad_evals as f64;
    let row = ctx.push(
        "apgd_base",
        format!("{} vectors, 100 it, ε=0.1", x.nrows()),
        t,
        None,
    );
    row.items = Some((evals, "point-grads"));
    row.note = format!(
        "classifier trained 2 epochs on synthetic features; {fooled} fooled (incl. clean errors), {evals:.0} point-gradients"
    );
    Ok(())
}

/// Adaptive APGD-CE (EOT E = 20) on the defended model, timed once.
pub fn apgd_adaptive(ctx: &mut Ctx) -> Result<()> {
    let (clf, den) = trained(ctx)?;
    let model = defended(&clf, &den);
    let (_, _, (x, y)) = feature_sets(ctx);
    let m = ctx.adaptive_points.min(x.nrows());
    let x = x.slice(ndarray::s![..m, ..]).to_owned();
    let y = &y[..m];
    let ids: Vec<u64> = (0..m as u64).collect();
    let p = attack_params(20);
    let before = ctx.peak_now()?;
    let (t, out) = time_it(0, 1, || Ok(apgd(&model, x.view(), y, &ids, &p)?))?;
    let after = ctx.peak_now()?;
    let fooled = out.fooled.iter().filter(|&&f| f).count();
    let evals = out.grad_evals as f64;
    // grad_evals counts point × draw gradients; input-gradient backward ≈ 1× forward
    let per = 2.0 * (10.0 * mlp_flops(&[112, 128, 128, 96]) + mlp_flops(&[96, 64, 10]));
    let beside = beside_peak(per * evals / t.median, before, after);
    let row = ctx.push(
        "apgd_adaptive",
        format!("{m} vectors, 100 it, E=20, ε=0.1"),
        t,
        Some(per * evals),
    );
    row.note = format!(
        "defended (denoiser+classifier trained 2 epochs), single run; {fooled} fooled, {evals:.0} point×draw gradients; FLOPs ≈ 2× forward (input gradient only){beside}"
    );
    Ok(())
}
