//! The training stages: data, CNN features, NNMF features, hybrid vector, classifier,
//! denoiser. Each expensive stage is a function of the configuration slice and seed that
//! determines it, and goes through the [`StageCache`] when one is given (sweeps).

use super::cached::*;
use super::Timings;
use crate::backend::DeviceCtx;
use crate::cache::{Cacheable, StageCache};
use crate::config::{DataFormat, EvalSplit, JobConfig, LrSchedule};
use crate::data::{self, DataSource, Dataset};
use crate::diffusion::denoiser::{train_denoiser, Denoiser};
use crate::diffusion::{time_embedding, Schedule};
use crate::error::{Error, Result};
use crate::features::{concat, Standardizer};
use crate::nmf::{self, NmfParams};
use crate::nn::cnn::CnnArch;
use crate::nn::mlp::Mlp;
use crate::nn::train::{train_classifier, train_cnn, TrainHistory, TrainParams};
use crate::results::Curve;
use crate::rng::{key, tag};
use ndarray::{Array2, ArrayView2, Axis};
use serde::Serialize;

/// Everything the evaluation needs.
pub struct Trained {
    pub image_shape: (usize, usize),
    pub num_classes: usize,
    /// Ids (dataset indices) of the evaluated points (test split, or validation split when
    /// `eval_split: val`).
    pub test_ids: Vec<u64>,
    pub y_train: Vec<usize>,
    pub y_val: Vec<usize>,
    pub y_test: Vec<usize>,
    pub z_train: Array2<f32>,
    pub z_val: Array2<f32>,
    pub z_test: Array2<f32>,
    pub nnmf: Option<NnmfStage>,
    pub scaler: Standardizer,
    pub clf: Mlp<f32>,
    pub den: Denoiser,
    pub curves: Vec<Curve>,
}

impl Trained {
    pub fn feature_dim(&self) -> usize {
        self.z_train.ncols()
    }
    pub fn test_labels_u8(&self) -> Vec<u8> {
        self.y_test.iter().map(|&c| c as u8).collect()
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
    parts: &impl Serialize,
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
}

/// Load the data, take the configured subset and split it.
pub fn prepare_data(cfg: &JobConfig, t: &mut Timings) -> Result<Prepared> {
    let (h, w) = cfg.data.size.hw();
    let mut ds: Dataset = t.time("data", || data::load(&data_source(cfg), h, w))?;
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
    crate::progress::log(format!(
        "data: {} ({} images {}x{}, {} classes; split train {} / val {} / test {})",
        ds.source,
        ds.images.nrows(),
        ds.height,
        ds.width,
        ds.num_classes,
        split.train.len(),
        split.val.len(),
        split.test.len()
    ));
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
    Ok(Prepared { ds, split })
}

fn train_params(cfg: &JobConfig, which: &str) -> TrainParams {
    let (c, lr_key) = match which {
        "cnn" => (&cfg.cnn, "cnn.lr"),
        _ => unreachable!(),
    };
    TrainParams {
        epochs: c.epochs,
        batch_size: c.batch_size,
        lr: c.lr,
        weight_decay: c.weight_decay,
        patience: c.patience,
        seed: key(cfg.seed, &[tag("cnn")]),
        lr_key,
        augment_shift: c.augment_shift,
        cosine_lr: c.lr_schedule == LrSchedule::Cosine,
    }
}

/// Train every stage of the pipeline (through `cache` when given).
pub fn train_all(
    cfg: &JobConfig,
    t: &mut Timings,
    cache: Option<&StageCache>,
    ctx: &DeviceCtx,
) -> Result<Trained> {
    let _ = ctx;
    let Prepared { ds, split } = prepare_data(cfg, t)?;
    let (h, w) = (ds.height, ds.width);
    let lab =
        |idx: &[usize]| -> Vec<usize> { idx.iter().map(|&i| ds.labels[i] as usize).collect() };
    let (y_train, y_val, y_test) = (lab(&split.train), lab(&split.val), lab(&split.test));
    let xs = || {
        [
            ds.images.select(Axis(0), &split.train),
            ds.images.select(Axis(0), &split.val),
            ds.images.select(Axis(0), &split.test),
        ]
    };
    let mut curves_out = vec![];
    let mut blocks: [Vec<Array2<f32>>; 3] = [vec![], vec![], vec![]];

    if cfg.features.cnn {
        let cnn = stage(cache, t, "cnn", &cnn_key(cfg), || {
            let arch = CnnArch {
                channels: cfg.cnn.channels.clone(),
                feature_dim: cfg.cnn.feature_dim,
                height: h,
                width: w,
                classes: ds.num_classes,
            };
            let [xt, xv, xe] = xs();
            let (cnn, hist) = train_cnn(
                &arch,
                &train_params(cfg, "cnn"),
                xt.view(),
                &y_train,
                xv.view(),
                &y_val,
            )?;
            Ok(CnnStage {
                feats: [
                    cnn.features(xt.view()),
                    cnn.features(xv.view()),
                    cnn.features(xe.view()),
                ],
                hist,
            })
        })?;
        curves_out.extend(curves("cnn", &cnn.hist));
        for (b, f) in blocks.iter_mut().zip(cnn.feats) {
            b.push(f);
        }
    }

    let mut nnmf_out = None;
    if cfg.features.nnmf {
        let st = stage(cache, t, "nnmf", &nnmf_key(cfg), || {
            let p = NmfParams {
                k: cfg.nnmf.k,
                mode: cfg.nnmf.mode,
                loss: cfg.nnmf.loss,
                init: cfg.nnmf.init,
                max_iter: cfg.nnmf.max_iter,
                tol: cfg.nnmf.tol,
                seed: key(cfg.seed, &[tag("nnmf")]),
            };
            let [xt, xv, xe] = xs();
            let train_labels: Vec<u8> = split.train.iter().map(|&i| ds.labels[i]).collect();
            #[cfg(feature = "cuda")]
            if let Some(be) = &ctx.cuda {
                use crate::nmf::{NmfLoss, NmfMode};
                if p.loss == NmfLoss::Frobenius && p.mode == NmfMode::Global {
                    let cu = crate::backend::cuda::nmf::fit(be, xt.view(), &p)?;
                    let (model, report) = cu;
                    let tv = crate::backend::cuda::nmf::transform(be, &model, xv.view())?;
                    let te = crate::backend::cuda::nmf::transform(be, &model, xe.view())?;
                    return Ok(NnmfStage {
                        coeffs: [report.coeffs, tv, te],
                        basis: model.basis,
                        objective: report.objective,
                        iterations: report.iterations,
                        converged: report.converged,
                    });
                }
                crate::progress::log(
                    "nnmf: the CUDA NNMF covers frobenius/global only; fitting on the CPU",
                );
            }
            let (model, report) =
                nmf::fit_with_solver(xt.view(), &train_labels, &p, cfg.nnmf.solver)?;
            Ok(NnmfStage {
                coeffs: [
                    report.coeffs,
                    model.transform(xv.view())?,
                    model.transform(xe.view())?,
                ],
                basis: model.basis,
                objective: report.objective,
                iterations: report.iterations,
                converged: report.converged,
            })
        })?;
        for (b, c) in blocks.iter_mut().zip(&st.coeffs) {
            b.push(c.clone());
        }
        nnmf_out = Some(st);
    }

    let raw: Vec<Array2<f32>> = blocks
        .iter()
        .map(|b| concat(&b.iter().map(|a| a.view()).collect::<Vec<_>>()))
        .collect();
    let scaler = Standardizer::fit(raw[0].view());
    let z: Vec<Array2<f32>> = raw.iter().map(|r| scaler.transform(r.view())).collect();
    for (name, zz) in ["training features", "validation features", "test features"]
        .iter()
        .zip(&z)
    {
        check_finite(name, zz.view())?;
    }
    let [z_train, z_val, z_test]: [Array2<f32>; 3] = z.try_into().expect("three splits");

    let clf = stage(cache, t, "classifier", &classifier_key(cfg), || {
        let mut sizes = vec![z_train.ncols()];
        sizes.extend(&cfg.classifier.hidden);
        sizes.push(ds.num_classes);
        let c = &cfg.classifier;
        let p = TrainParams {
            epochs: c.epochs,
            batch_size: c.batch_size,
            lr: c.lr,
            weight_decay: c.weight_decay,
            patience: c.patience,
            seed: key(cfg.seed, &[tag("classifier")]),
            lr_key: "classifier.lr",
            augment_shift: 0,
            cosine_lr: c.lr_schedule == LrSchedule::Cosine,
        };
        let (mlp, hist) = train_classifier(
            &sizes,
            c.activation,
            &p,
            z_train.view(),
            &y_train,
            z_val.view(),
            &y_val,
        )?;
        Ok(MlpStage { mlp, hist })
    })?;
    curves_out.extend(curves("classifier", &clf.hist));

    let den = stage(cache, t, "denoiser", &denoiser_key(cfg), || {
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
    })?;
    curves_out.extend(curves("denoiser", &den.hist));
    let d = &cfg.diffusion;
    let den = Denoiser {
        mlp: den.mlp,
        sched: Schedule::linear(d.steps, d.beta_start, d.beta_end),
        emb: time_embedding::<f32>(d.steps, d.time_dim),
        predict: d.predict,
    };

    // The evaluated points: the test split, or the validation split for model selection.
    let (mut ids, mut y_eval, mut z_eval) = match cfg.eval_split {
        EvalSplit::Test => (split.test.clone(), y_test, z_test),
        EvalSplit::Val => (split.val.clone(), y_val.clone(), z_val.clone()),
    };
    if cfg.attack.max_points > 0 && ids.len() > cfg.attack.max_points {
        let n = cfg.attack.max_points;
        ids.truncate(n);
        y_eval.truncate(n);
        z_eval = z_eval.slice(ndarray::s![0..n, ..]).to_owned();
    }

    Ok(Trained {
        image_shape: (h, w),
        num_classes: ds.num_classes,
        test_ids: ids.iter().map(|&i| i as u64).collect(),
        y_train,
        y_val,
        y_test: y_eval,
        z_train,
        z_val,
        z_test: z_eval,
        nnmf: nnmf_out,
        scaler,
        clf: clf.mlp,
        den,
        curves: curves_out,
    })
}
