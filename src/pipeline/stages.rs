//! The training stages: data, CNN features, NNMF features, hybrid vector, classifier,
//! denoiser. Each expensive stage is a function of its key (data content, configuration
//! section, seed, code; see [`super::cached`]), and goes through the [`StageCache`] when one is given (sweeps).
//!
//! Also the checks of the job against its data, run right after loading and before any
//! training ([`check_job_against_data`]): at least two classes in the training split, the
//! attack presets' class requirements, and `nnmf.k` against the training images.

use super::cached::*;
use super::code::CodeFingerprints;
use super::Timings;
use crate::backend::DeviceCtx;
use crate::cache::{CacheKey, Cacheable, StageCache};
use crate::config::{DataFormat, EvalSplit, JobConfig, LrSchedule};
use crate::data::{self, DataSource, Dataset};
use crate::diffusion::denoiser::{train_denoiser, Denoiser};
use crate::error::{Error, Result};
use crate::features::{concat, Standardizer};
use crate::nmf::{self, NmfParams};
use crate::nn::cnn::{Cnn, CnnArch};
use crate::nn::mlp::Mlp;
use crate::nn::train::{train_classifier, train_cnn, TrainHistory, TrainParams};
use crate::results::Curve;
use crate::rng::{key, tag};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Everything the evaluation needs.
pub struct Trained {
    pub image_shape: (usize, usize),
    pub num_classes: usize,
    /// The evaluated points (test split, or validation split when `eval_split: val`).
    pub eval: EvalPoints,
    /// Content fingerprint of the loaded data ([`crate::data::Fingerprint::id`]).
    pub data_content: String,
    /// The trained CNN (when `features.cnn`).
    pub cnn: Option<Cnn<f32>>,
    pub nnmf: Option<NnmfStage>,
    pub scaler: Standardizer,
    /// Per-feature minimum and maximum of the z-scored training features (the
    /// `attack.bounds: train_range` box).
    pub train_range: (Array1<f32>, Array1<f32>),
    pub clf: Mlp<f32>,
    pub den: Denoiser,
    pub curves: Vec<Curve>,
}

/// The points an experiment evaluates: dataset indices, labels, images (rows of
/// `height·width` pixels in [0, 1], what the pixel-space threat model attacks) and their
/// z-scored hybrid features.
#[derive(Clone, Debug)]
pub struct EvalPoints {
    pub ids: Vec<u64>,
    pub y: Vec<usize>,
    pub images: Array2<f32>,
    pub z: Array2<f32>,
}

impl Trained {
    pub fn feature_dim(&self) -> usize {
        self.eval.z.ncols()
    }
    pub fn test_labels_u8(&self) -> Vec<u8> {
        self.eval.y.iter().map(|&c| c as u8).collect()
    }
}

/// The data source named by the configuration.
pub fn data_source(cfg: &JobConfig) -> DataSource {
    match cfg.data.format {
        DataFormat::Embedded => DataSource::Embedded,
        DataFormat::Idx => DataSource::Idx {
            images: cfg.data.images.clone().unwrap_or_default(),
            labels: cfg.data.labels.clone().unwrap_or_default(),
        },
        DataFormat::Folder => DataSource::Folder {
            root: cfg.data.root.clone().unwrap_or_default(),
        },
    }
}

fn curves(group: &str, h: &TrainHistory) -> Vec<Curve> {
    [
        ("train_loss", &h.train_loss),
        ("val_loss", &h.val_loss),
        ("val_accuracy", &h.val_accuracy),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(n, v)| Curve {
        group: group.into(),
        name: n.into(),
        values: v.clone(),
    })
    .collect()
}

fn check_finite(what: &str, x: ArrayView2<f32>) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Numeric {
            op: "features",
            msg: format!(
                "{what} contain NaN or infinite values; check the input data and learning rates"
            ),
        });
    }
    Ok(())
}

/// Run `build` through the cache when there is one.
fn stage<T: Cacheable>(
    cache: Option<&StageCache>,
    t: &mut Timings,
    name: &str,
    parts: &impl CacheKey,
    build: impl FnOnce() -> Result<T>,
) -> Result<T> {
    t.time(name, || match cache {
        Some(c) => c.get_or_build(name, parts, build),
        None => build(),
    })
}

/// The loaded dataset and its split.
pub struct Prepared {
    pub ds: Dataset,
    pub split: data::Split,
    /// The distinct labels of the training split (at least two).
    pub classes: Vec<u8>,
}

/// Load the data (with the job's label range and the memory limits), take the configured
/// subset and split it; rejects a training split with fewer than two classes.
pub fn prepare_data(cfg: &JobConfig, t: &mut Timings) -> Result<Prepared> {
    let (h, w) = cfg.data.size.hw();
    let src = data_source(cfg);
    let mut ds: Dataset = t.time("data", || data::load_checked(&src, h, w, cfg.data.classes))?;
    let fp = &ds.content;
    crate::progress::log(format!(
        "data: content {} ({} files, {:.1} MB hashed while loading; the cache keys on it)",
        fp.id,
        fp.files,
        fp.bytes as f64 / 1e6
    ));
    let split_seed = cfg.data.split_seed.unwrap_or(cfg.seed);
    if cfg.data.subset > 0 && cfg.data.subset < ds.len() {
        let mut idx = crate::rng::permutation(
            &mut crate::rng::stream(split_seed, &[tag("subset")]),
            ds.len(),
        );
        idx.truncate(cfg.data.subset);
        idx.sort_unstable();
        ds = ds.subset(&idx);
    }
    let split = data::stratified_split(&ds.labels, cfg.data.split, split_seed);
    let present = ds.classes_present().len();
    crate::progress::log(format!(
        "data: {} ({} images {}x{}, {present} {}{}; split train {} / val {} / test {})",
        ds.source,
        ds.images.nrows(),
        ds.height,
        ds.width,
        if present == 1 { "class" } else { "classes" },
        if present == ds.num_classes {
            String::new()
        } else {
            format!(" (model outputs 0..={})", ds.num_classes.saturating_sub(1))
        },
        split.train.len(),
        split.val.len(),
        split.test.len()
    ));
    let classes = data::training_classes(&ds, &split.train, &src)?;
    for (name, part) in [
        ("train", &split.train),
        ("validation", &split.val),
        ("test", &split.test),
    ] {
        if part.is_empty() {
            return Err(Error::data(
                ds.source.clone(),
                format!("the {name} split is empty; use more images or change `data.split`"),
            ));
        }
    }
    Ok(Prepared { ds, split, classes })
}

/// Checks of the job against the loaded data, before any training: the attack presets'
/// class requirements (DLR ≥ 3 classes, APGD-T ≥ 4, counted in the training split), and
/// `nnmf.k` against the training images (global: all of them; `per_class`: each class's).
/// `nnmf.k` against the pixel count is a config check (every image is resized to
/// `data.size`).
pub fn check_job_against_data(cfg: &JobConfig, p: &Prepared) -> Result<()> {
    super::evaluate::check_classes(cfg, p.classes.len())?;
    if !cfg.features.nnmf {
        return Ok(());
    }
    let k = cfg.nnmf.k;
    let pixels = p.ds.height * p.ds.width;
    let too_many = |n: usize, whose: String| {
        Error::param(
            "nnmf.k",
            format!(
                "k = {k} exceeds the {n} training images of {whose} (NNMF needs k ≤ \
                 min(training images, {pixels} pixels)); lower `nnmf.k` to at most {n} or \
                 use more images"
            ),
        )
    };
    match cfg.nnmf.mode {
        nmf::NmfMode::Global => {
            if k > p.split.train.len() {
                return Err(too_many(p.split.train.len(), "the data set".into()));
            }
        }
        nmf::NmfMode::PerClass => {
            let mut counts = [0usize; 256];
            for &i in &p.split.train {
                counts[p.ds.labels[i] as usize] += 1;
            }
            for &c in &p.classes {
                let n = counts[c as usize];
                if k > n {
                    return Err(too_many(
                        n,
                        format!("class {c} (`nnmf.mode: per_class` fits k parts per class)"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Training parameters of the CNN (`cnn.*`).
fn cnn_train_params(cfg: &JobConfig) -> TrainParams {
    let c = &cfg.cnn;
    TrainParams {
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        weight_decay: c.weight_decay,
        patience: c.patience,
        seed: key(cfg.seed, &[tag("cnn")]),
        lr_key: "cnn.lr",
        augment_shift: c.augment_shift,
        cosine_lr: c.lr_schedule == LrSchedule::Cosine,
    }
}

/// Training parameters of the classifier (`classifier.*`; no augmentation).
fn classifier_train_params(cfg: &JobConfig) -> TrainParams {
    let c = &cfg.classifier;
    TrainParams {
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        weight_decay: c.weight_decay,
        patience: c.patience,
        seed: key(cfg.seed, &[tag("classifier")]),
        lr_key: "classifier.lr",
        augment_shift: 0,
        cosine_lr: c.lr_schedule == LrSchedule::Cosine,
    }
}

/// What every training stage reads: the job, the cache, the device, the cache-key
/// context, and the data with its split and labels per split (train, val, test).
struct StageCtx<'a> {
    cfg: &'a JobConfig,
    cache: Option<&'a StageCache>,
    ctx: &'a DeviceCtx,
    keys: KeyCtx<'a>,
    ds: &'a Dataset,
    split: &'a data::Split,
    y: [Vec<usize>; 3],
}

impl StageCtx<'_> {
    /// The images of the training, validation and test splits.
    fn images(&self) -> [Array2<f32>; 3] {
        let s = self.split;
        [&s.train, &s.val, &s.test].map(|idx| self.ds.images.select(Axis(0), idx))
    }
}

/// Train every stage of the pipeline (through `cache` when given).
pub fn train_all(
    cfg: &JobConfig,
    t: &mut Timings,
    cache: Option<&StageCache>,
    ctx: &DeviceCtx,
) -> Result<Trained> {
    let prepared = prepare_data(cfg, t)?;
    check_job_against_data(cfg, &prepared)?;
    let Prepared { ds, split, .. } = prepared;
    let code = cache.map_or_else(CodeFingerprints::current, |c| c.code().clone());
    let cuda = ctx.is_cuda();
    let lab =
        |idx: &[usize]| -> Vec<usize> { idx.iter().map(|&i| ds.labels[i] as usize).collect() };
    let sc = StageCtx {
        cfg,
        cache,
        ctx,
        keys: KeyCtx {
            data: &ds.content.id,
            code: &code,
            cuda,
        },
        ds: &ds,
        split: &split,
        y: [lab(&split.train), lab(&split.val), lab(&split.test)],
    };
    let mut curves_out = vec![];
    let (cnn_out, nnmf_out, blocks) = feature_blocks(&sc, t, &mut curves_out)?;
    let (scaler, [z_train, z_val, z_test]) = hybrid(&blocks)?;
    let train_range = (
        z_train.fold_axis(Axis(0), f32::INFINITY, |a, &b| a.min(b)),
        z_train.fold_axis(Axis(0), f32::NEG_INFINITY, |a, &b| a.max(b)),
    );
    let clf = classifier_stage(&sc, t, &z_train, &z_val)?;
    curves_out.extend(curves("classifier", &clf.hist));
    let den = denoiser_stage(&sc, t, &z_train, &z_val)?;
    curves_out.extend(curves("denoiser", &den.hist));
    let den = Denoiser::new(den.mlp, &cfg.diffusion);
    let [_, y_val, y_test] = sc.y;
    // The evaluated points: the test split, or the validation split for model selection.
    let eval = match cfg.eval_split {
        EvalSplit::Test => eval_points(cfg, &ds.images, &split.test, y_test, z_test),
        EvalSplit::Val => eval_points(cfg, &ds.images, &split.val, y_val, z_val),
    };
    Ok(Trained {
        image_shape: (ds.height, ds.width),
        num_classes: ds.num_classes,
        eval,
        data_content: ds.content.id.clone(),
        cnn: cnn_out,
        nnmf: nnmf_out,
        scaler,
        train_range,
        clf: clf.mlp,
        den,
        curves: curves_out,
    })
}

/// The trained CNN, the NNMF stage and the feature blocks of every split.
type FeatureStages = (Option<Cnn<f32>>, Option<NnmfStage>, [Vec<Array2<f32>>; 3]);

/// The CNN and NNMF stages the job enables, and their feature blocks per split (CNN
/// features first); the CNN's training curves go to `curves_out`.
fn feature_blocks(
    sc: &StageCtx<'_>,
    t: &mut Timings,
    curves_out: &mut Vec<Curve>,
) -> Result<FeatureStages> {
    let mut blocks: [Vec<Array2<f32>>; 3] = [vec![], vec![], vec![]];
    let cnn_out = if sc.cfg.features.cnn {
        let cnn = cnn_stage(sc, t)?;
        curves_out.extend(curves("cnn", &cnn.hist));
        for (b, f) in blocks.iter_mut().zip(cnn.feats) {
            b.push(f);
        }
        Some(cnn.cnn)
    } else {
        None
    };
    let nnmf_out = if sc.cfg.features.nnmf {
        let st = nnmf_stage(sc, t)?;
        for (b, c) in blocks.iter_mut().zip(&st.coeffs) {
            b.push(c.clone());
        }
        Some(st)
    } else {
        None
    };
    Ok((cnn_out, nnmf_out, blocks))
}

/// The first `attack.max_points` (0: all) of the evaluated split (dataset rows `idx` of
/// `images`): ids, labels, images, features.
pub(super) fn eval_points(
    cfg: &JobConfig,
    images: &Array2<f32>,
    idx: &[usize],
    mut y: Vec<usize>,
    mut z: Array2<f32>,
) -> EvalPoints {
    let mut ids = idx.to_vec();
    if cfg.attack.max_points > 0 && ids.len() > cfg.attack.max_points {
        let n = cfg.attack.max_points;
        ids.truncate(n);
        y.truncate(n);
        z = z.slice(ndarray::s![0..n, ..]).to_owned();
    }
    EvalPoints {
        images: images.select(Axis(0), &ids),
        ids: ids.iter().map(|&i| i as u64).collect(),
        y,
        z,
    }
}

/// The CNN trained on the training split, and its features of every split.
fn cnn_stage(sc: &StageCtx<'_>, t: &mut Timings) -> Result<CnnStage> {
    let (cfg, ds) = (sc.cfg, sc.ds);
    stage(sc.cache, t, "cnn", &cnn_key(cfg, &sc.keys), || {
        let arch = CnnArch {
            channels: cfg.cnn.channels.clone(),
            feature_dim: cfg.cnn.feature_dim,
            height: ds.height,
            width: ds.width,
            classes: ds.num_classes,
        };
        let [xt, xv, xe] = sc.images();
        let params = cnn_train_params(cfg);
        let (cnn, hist) = train_cnn(&arch, &params, xt.view(), &sc.y[0], xv.view(), &sc.y[1])?;
        Ok(CnnStage {
            feats: [
                cnn.features(xt.view()),
                cnn.features(xv.view()),
                cnn.features(xe.view()),
            ],
            cnn,
            hist,
        })
    })
}

/// The NNMF basis fitted on the training split and the coefficients of every split (on the
/// GPU for frobenius/global when a CUDA device is selected).
fn nnmf_stage(sc: &StageCtx<'_>, t: &mut Timings) -> Result<NnmfStage> {
    let cfg = sc.cfg;
    stage(sc.cache, t, "nnmf", &nnmf_key(cfg, &sc.keys), || {
        let p = NmfParams {
            k: cfg.nnmf.k,
            mode: cfg.nnmf.mode,
            loss: cfg.nnmf.loss,
            init: cfg.nnmf.init,
            max_iter: cfg.nnmf.max_iter,
            tol: cfg.nnmf.tol,
            seed: key(cfg.seed, &[tag("nnmf")]),
        };
        let [xt, xv, xe] = sc.images();
        let train_labels: Vec<u8> = sc.split.train.iter().map(|&i| sc.ds.labels[i]).collect();
        let (model, report, gpu) =
            nmf::fit_on(sc.ctx, xt.view(), &train_labels, &p, cfg.nnmf.solver)?;
        Ok(NnmfStage {
            coeffs: [
                report.coeffs,
                nmf::transform_on(sc.ctx, &model, xv.view(), gpu)?,
                nmf::transform_on(sc.ctx, &model, xe.view(), gpu)?,
            ],
            basis: model.basis,
            objective: report.objective,
            iterations: report.iterations,
            converged: report.converged,
        })
    })
}

/// The hybrid vector of every split: the feature blocks concatenated and z-scored with the
/// training split's statistics (checked finite).
fn hybrid(blocks: &[Vec<Array2<f32>>; 3]) -> Result<(Standardizer, [Array2<f32>; 3])> {
    let raw: Vec<Array2<f32>> = blocks
        .iter()
        .map(|b| concat(&b.iter().map(|a| a.view()).collect::<Vec<_>>()))
        .collect();
    let scaler = Standardizer::fit(raw[0].view());
    let z = [0, 1, 2].map(|i| scaler.transform(raw[i].view()));
    for (name, zz) in ["training features", "validation features", "test features"]
        .iter()
        .zip(&z)
    {
        check_finite(name, zz.view())?;
    }
    Ok((scaler, z))
}

/// The MLP classifier trained on the hybrid vectors.
fn classifier_stage(
    sc: &StageCtx<'_>,
    t: &mut Timings,
    z_train: &Array2<f32>,
    z_val: &Array2<f32>,
) -> Result<MlpStage> {
    let cfg = sc.cfg;
    stage(
        sc.cache,
        t,
        "classifier",
        &classifier_key(cfg, &sc.keys),
        || {
            let mut sizes = vec![z_train.ncols()];
            sizes.extend(&cfg.classifier.hidden);
            sizes.push(sc.ds.num_classes);
            let (mlp, hist) = train_classifier(
                &sizes,
                cfg.classifier.activation,
                &classifier_train_params(cfg),
                z_train.view(),
                &sc.y[0],
                z_val.view(),
                &sc.y[1],
            )?;
            Ok(MlpStage { mlp, hist })
        },
    )
}

/// The feature-space denoiser (its network and loss curves).
fn denoiser_stage(
    sc: &StageCtx<'_>,
    t: &mut Timings,
    z_train: &Array2<f32>,
    z_val: &Array2<f32>,
) -> Result<MlpStage> {
    let cfg = sc.cfg;
    stage(
        sc.cache,
        t,
        "denoiser",
        &denoiser_key(cfg, &sc.keys),
        || {
            let (d, dh) = train_denoiser(
                &cfg.diffusion,
                key(cfg.seed, &[tag("denoiser")]),
                z_train.view(),
                z_val.view(),
            )?;
            Ok(MlpStage {
                mlp: d.mlp,
                hist: TrainHistory {
                    train_loss: dh.train_loss,
                    val_loss: dh.val_loss,
                    ..Default::default()
                },
            })
        },
    )
}
