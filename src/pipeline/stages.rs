//! The training stages: data, NNMF, CNN, hybrid features, classifier, denoiser. Each is a
//! function of the configuration slice and seed that determines it.

use super::Timings;
use crate::config::{DataFormat, JobConfig, LrSchedule};
use crate::data::{self, DataSource, Dataset};
use crate::diffusion::denoiser::{train_denoiser, Denoiser};
use crate::error::{Error, Result};
use crate::features::{concat, Standardizer};
use crate::nmf::{self, NmfFitReport, NmfModel, NmfParams};
use crate::nn::cnn::{Cnn, CnnArch};
use crate::nn::mlp::Mlp;
use crate::nn::train::{train_classifier, train_cnn, TrainHistory, TrainParams};
use crate::results::Curve;
use crate::rng::{key, tag};
use ndarray::{Array2, ArrayView2, Axis};

/// Everything the evaluation needs.
pub struct Trained {
    pub image_shape: (usize, usize),
    pub num_classes: usize,
    pub test_ids: Vec<u64>,
    pub y_train: Vec<usize>,
    pub y_val: Vec<usize>,
    pub y_test: Vec<usize>,
    pub z_train: Array2<f32>,
    pub z_val: Array2<f32>,
    pub z_test: Array2<f32>,
    pub nnmf: Option<(NmfModel, NmfFitReport)>,
    pub cnn: Option<Cnn<f32>>,
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
    .map(|(n, v)| Curve {
        group: group.into(),
        name: n.into(),
        values: v.clone(),
    })
    .collect()
}

fn rows(x: &Array2<f32>, idx: &[usize]) -> Array2<f32> {
    x.select(Axis(0), idx)
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

/// Train every stage of the pipeline.
pub fn train_all(cfg: &JobConfig, t: &mut Timings) -> Result<Trained> {
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
    let mut split = data::stratified_split(&ds.labels, cfg.data.split, split_seed);
    if cfg.attack.max_points > 0 && split.test.len() > cfg.attack.max_points {
        split.test.truncate(cfg.attack.max_points);
    }
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
    let lab =
        |idx: &[usize]| -> Vec<usize> { idx.iter().map(|&i| ds.labels[i] as usize).collect() };
    let (y_train, y_val, y_test) = (lab(&split.train), lab(&split.val), lab(&split.test));
    let (x_train, x_val, x_test) = (
        rows(&ds.images, &split.train),
        rows(&ds.images, &split.val),
        rows(&ds.images, &split.test),
    );
    let mut curves_out = vec![];
    let mut cnn_out = None;
    let mut blocks: [Vec<Array2<f32>>; 3] = [vec![], vec![], vec![]];

    if cfg.features.cnn {
        let arch = CnnArch {
            channels: cfg.cnn.channels.clone(),
            feature_dim: cfg.cnn.feature_dim,
            height: h,
            width: w,
            classes: ds.num_classes,
        };
        let p = TrainParams {
            epochs: cfg.cnn.epochs,
            batch_size: cfg.cnn.batch_size,
            lr: cfg.cnn.lr,
            weight_decay: cfg.cnn.weight_decay,
            patience: cfg.cnn.patience,
            seed: key(cfg.seed, &[tag("cnn")]),
            lr_key: "cnn.lr",
            augment_shift: cfg.cnn.augment_shift,
            cosine_lr: cfg.cnn.lr_schedule == LrSchedule::Cosine,
        };
        let (cnn, hist) = t.time("cnn_train", || {
            train_cnn(&arch, &p, x_train.view(), &y_train, x_val.view(), &y_val)
        })?;
        curves_out.extend(curves("cnn", &hist));
        t.time("cnn_features", || {
            for (b, x) in blocks.iter_mut().zip([&x_train, &x_val, &x_test]) {
                b.push(cnn.features(x.view()));
            }
            Ok(())
        })?;
        cnn_out = Some(cnn);
    }

    let mut nnmf_out = None;
    if cfg.features.nnmf {
        let p = NmfParams {
            k: cfg.nnmf.k,
            mode: cfg.nnmf.mode,
            loss: cfg.nnmf.loss,
            init: cfg.nnmf.init,
            max_iter: cfg.nnmf.max_iter,
            tol: cfg.nnmf.tol,
            seed: key(cfg.seed, &[tag("nnmf")]),
        };
        let train_labels: Vec<u8> = split.train.iter().map(|&i| ds.labels[i]).collect();
        let (model, report) = t.time("nnmf_fit", || nmf::fit(x_train.view(), &train_labels, &p))?;
        let (hv, ht) = t.time("nnmf_transform", || {
            Ok((
                model.transform(x_val.view())?,
                model.transform(x_test.view())?,
            ))
        })?;
        blocks[0].push(report.coeffs.clone());
        blocks[1].push(hv);
        blocks[2].push(ht);
        nnmf_out = Some((model, report));
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

    let mut sizes = vec![z_train.ncols()];
    sizes.extend(&cfg.classifier.hidden);
    sizes.push(ds.num_classes);
    let p = TrainParams {
        epochs: cfg.classifier.epochs,
        batch_size: cfg.classifier.batch_size,
        lr: cfg.classifier.lr,
        weight_decay: cfg.classifier.weight_decay,
        patience: cfg.classifier.patience,
        seed: key(cfg.seed, &[tag("classifier")]),
        lr_key: "classifier.lr",
        augment_shift: 0,
        cosine_lr: cfg.classifier.lr_schedule == LrSchedule::Cosine,
    };
    let (clf, hist) = t.time("classifier_train", || {
        train_classifier(
            &sizes,
            cfg.classifier.activation,
            &p,
            z_train.view(),
            &y_train,
            z_val.view(),
            &y_val,
        )
    })?;
    curves_out.extend(curves("classifier", &hist));

    let (den, dh) = t.time("denoiser_train", || {
        train_denoiser(
            &cfg.diffusion,
            key(cfg.seed, &[tag("denoiser")]),
            z_train.view(),
            z_val.view(),
        )
    })?;
    curves_out.push(Curve {
        group: "denoiser".into(),
        name: "train_loss".into(),
        values: dh.train_loss,
    });
    curves_out.push(Curve {
        group: "denoiser".into(),
        name: "val_loss".into(),
        values: dh.val_loss,
    });

    Ok(Trained {
        image_shape: (h, w),
        num_classes: ds.num_classes,
        test_ids: split.test.iter().map(|&i| i as u64).collect(),
        y_train,
        y_val,
        y_test,
        z_train,
        z_val,
        z_test,
        nnmf: nnmf_out,
        cnn: cnn_out,
        scaler,
        clf,
        den,
        curves: curves_out,
    })
}
