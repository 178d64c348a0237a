//! Runs and stored models: [`models_of`] collects a finished training into a
//! [`Models`] (written as `models.h5` beside `result.h5`), and [`evaluate_stored`] re-runs
//! only the evaluation on a stored set (`diffnmf evaluate MODELS.h5 [--set attack…]`).
//!
//! Re-evaluation loads the data the configuration names, checks that its content is the one
//! the models were trained on, recomputes the evaluated points' hybrid features through the
//! stored CNN, NNMF basis and z-score (the same calls, on the same device, as training did),
//! and runs [`super::evaluate::evaluate`] on the stored classifier and denoiser. With the
//! stored configuration, on the same machine and thread count, the result is bit-identical
//! to the original run's evaluation (`tests/models.rs`). `--set` may change only what does
//! not train a model (see [`EVAL_ONLY`]); anything else is a configuration mismatch.

use super::cached::nnmf_on_gpu;
use super::stages::{self, EvalPoints, Trained};
use super::{check_out_writable, evaluate, run_result, RunOptions, Timings};
use crate::backend::{self, DeviceCtx};
use crate::config::{self, EvalSplit, JobConfig};
use crate::error::{Error, Result};
use crate::features::concat;
use crate::models::{self, EvalRecord, Models, NnmfModels, Provenance};
use crate::nmf::NmfModel;
use crate::progress::log;
use crate::results::{self, RunResult};
use ndarray::{Array2, Axis};
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Configuration keys `diffnmf evaluate --set` may change: they select or score the
/// evaluation, or say where the data are, and train nothing (a key names itself and
/// everything below it).
pub const EVAL_ONLY: [&str; 10] = [
    "name",
    "device",
    "eval_split",
    "attack",
    "certify",
    "diffusion.t_star",
    "diffusion.passes",
    // Where the data lie (not what they are: `data_content` is checked against the models').
    "data.images",
    "data.labels",
    "data.root",
];

fn split_name(s: EvalSplit) -> &'static str {
    match s {
        EvalSplit::Test => "test",
        EvalSplit::Val => "val",
    }
}

/// The models of a finished training of `cfg` (resolved YAML `yaml`) on `device`.
pub fn models_of(
    cfg: &JobConfig,
    yaml: &str,
    device: &str,
    ctx_cuda: bool,
    tr: &Trained,
) -> Models {
    let mut blocks = vec![];
    if let Some(c) = &tr.cnn {
        blocks.push(("cnn".to_string(), c.arch.feature_dim));
    }
    let nnmf = tr.nnmf.as_ref().map(|n| {
        blocks.push(("nnmf".to_string(), n.basis.nrows()));
        NnmfModels {
            model: NmfModel {
                basis: n.basis.clone(),
                loss: cfg.nnmf.loss,
                max_iter: cfg.nnmf.max_iter,
                tol: cfg.nnmf.tol,
            },
            mode: cfg.nnmf.mode,
            k: cfg.nnmf.k,
            device: if nnmf_on_gpu(cfg, ctx_cuda) {
                "cuda"
            } else {
                "cpu"
            }
            .into(),
            objective: n.objective.clone(),
            iterations: n.iterations,
            converged: n.converged,
        }
    });
    Models {
        provenance: Provenance {
            job_name: cfg.name.clone(),
            config_yaml: yaml.to_string(),
            seed: cfg.seed,
            diffnmf_version: env!("CARGO_PKG_VERSION").into(),
            git_revision: super::git_revision(),
            platform: super::code::platform(),
            device: device.to_string(),
            data_content: tr.data_content.clone(),
        },
        image_shape: tr.image_shape,
        num_classes: tr.num_classes,
        cnn: tr.cnn.clone(),
        nnmf,
        blocks,
        scaler: tr.scaler.clone(),
        train_range: tr.train_range.clone(),
        classifier: tr.clf.clone(),
        denoiser: tr.den.clone(),
        t_star: cfg.diffusion.t_star,
        passes: cfg.diffusion.passes,
        curves: tr.curves.clone(),
        eval: EvalRecord {
            split: split_name(cfg.eval_split).into(),
            ids: tr.eval.ids.clone(),
            labels: tr.test_labels_u8(),
            features_sha256: models::features_sha256(tr.eval.z.view()),
        },
    }
}

/// The first key (dotted) where the YAML trees `a` and `b` differ outside [`EVAL_ONLY`],
/// with both values.
fn training_difference(a: &Value, b: &Value, prefix: &str) -> Option<(String, String, String)> {
    if EVAL_ONLY.contains(&prefix) {
        return None;
    }
    match (a, b) {
        (Value::Mapping(ma), Value::Mapping(mb)) => {
            for (k, va) in ma {
                let name = k.as_str().unwrap_or_default();
                let key = if prefix.is_empty() {
                    name.to_string()
                } else {
                    format!("{prefix}.{name}")
                };
                let vb = mb.get(k).unwrap_or(&Value::Null);
                if let Some(d) = training_difference(va, vb, &key) {
                    return Some(d);
                }
            }
            None
        }
        _ if a == b => None,
        _ => {
            let show = |v: &Value| {
                serde_yaml_ng::to_string(v)
                    .unwrap_or_default()
                    .trim()
                    .replace('\n', " ")
            };
            Some((prefix.to_string(), show(a), show(b)))
        }
    }
}

/// Error when `cfg` differs from the configuration that trained the stored models in
/// anything but [`EVAL_ONLY`] keys.
pub fn check_training_config(path: &Path, stored: &JobConfig, cfg: &JobConfig) -> Result<()> {
    let tree = |c: &JobConfig| serde_yaml_ng::to_value(c).unwrap_or(Value::Null);
    match training_difference(&tree(stored), &tree(cfg), "") {
        None => Ok(()),
        Some((key, was, now)) => Err(Error::Config {
            path: path.to_path_buf(),
            msg: format!(
                "configuration mismatch in `{key}`: the models were trained with {was}, the evaluation asks for {now}; `{key}` trains a model, so run `diffnmf run` with it instead (evaluate may change only {})",
                EVAL_ONLY.join(", ")
            ),
        }),
    }
}

/// The images (rows of `height·width` pixels in [0, 1]), dataset ids and labels of the
/// whole split `cfg` evaluates (before `attack.max_points`), after checking that the data
/// are the ones the models in `path` were trained on.
pub fn eval_data(
    path: &Path,
    cfg: &JobConfig,
    m: &Models,
    t: &mut Timings,
) -> Result<(Array2<f32>, Vec<usize>, Vec<usize>)> {
    let p = stages::prepare_data(cfg, t)?;
    if p.ds.content.id != m.provenance.data_content {
        return Err(Error::Config {
            path: path.to_path_buf(),
            msg: format!(
                "configuration mismatch in `data`: the data loaded now has content {}, the models were trained on content {} (field data_content); point `data.images`/`data.labels` or `data.root` at the data of the original run (e.g. `--set data.root=PATH`)",
                p.ds.content.id, m.provenance.data_content
            ),
        });
    }
    if (p.ds.height, p.ds.width) != m.image_shape {
        return Err(Error::Config {
            path: path.to_path_buf(),
            msg: format!(
                "the data has {}×{} images, the models take {}×{} (fields height/width)",
                p.ds.height, p.ds.width, m.image_shape.0, m.image_shape.1
            ),
        });
    }
    let idx = match cfg.eval_split {
        EvalSplit::Test => p.split.test.clone(),
        EvalSplit::Val => p.split.val.clone(),
    };
    let x = p.ds.images.select(Axis(0), &idx);
    let y: Vec<usize> = idx.iter().map(|&i| p.ds.labels[i] as usize).collect();
    Ok((x, idx, y))
}

/// The points `cfg` evaluates (after `attack.max_points`): dataset ids, labels, images and
/// their z-scored hybrid features through the stored models.
fn eval_features(
    path: &Path,
    cfg: &JobConfig,
    m: &Models,
    ctx: &DeviceCtx,
    t: &mut Timings,
) -> Result<EvalPoints> {
    // The whole split, as training transformed it, then truncated.
    let (x, idx, y) = eval_data(path, cfg, m, t)?;
    let mut blocks: Vec<Array2<f32>> = vec![];
    t.time("features", || {
        if let Some(c) = &m.cnn {
            blocks.push(c.features(x.view()));
        }
        if let Some(n) = &m.nnmf {
            let gpu = n.device == "cuda";
            blocks.push(crate::nmf::transform_on(ctx, &n.model, x.view(), gpu)?);
        }
        Ok(())
    })?;
    let raw = concat(&blocks.iter().map(|b| b.view()).collect::<Vec<_>>());
    if raw.ncols() != m.feature_dim() {
        return Err(Error::Config {
            path: path.to_path_buf(),
            msg: format!(
                "the stored feature blocks give {} features, features/mean has {}",
                raw.ncols(),
                m.feature_dim()
            ),
        });
    }
    let z = m.scaler.transform(raw.view());
    // `x` holds the split's rows in `idx` order: select them by position.
    let pos: Vec<usize> = (0..idx.len()).collect();
    let mut e = super::stages::eval_points(cfg, &x, &pos, y, z);
    e.ids = e.ids.iter().map(|&p| idx[p as usize] as u64).collect();
    Ok(e)
}

/// Output folder of `diffnmf evaluate MODELS` without `--out`: `evaluate/` beside it.
pub fn default_out(models: &Path) -> PathBuf {
    models
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("evaluate")
}

/// The [`Trained`] view of stored models `m`, evaluating `eval`.
fn trained_of(m: &Models, eval: EvalPoints) -> Trained {
    Trained {
        image_shape: m.image_shape,
        num_classes: m.num_classes,
        eval,
        data_content: m.provenance.data_content.clone(),
        cnn: m.cnn.clone(),
        nnmf: m.nnmf.as_ref().map(|n| super::cached::NnmfStage {
            basis: n.model.basis.clone(),
            coeffs: Default::default(),
            objective: n.objective.clone(),
            iterations: n.iterations,
            converged: n.converged,
        }),
        scaler: m.scaler.clone(),
        train_range: m.train_range.clone(),
        clf: m.classifier.clone(),
        den: m.denoiser.clone(),
        curves: m.curves.clone(),
    }
}

/// Re-run the evaluation of the models in `path` (a `models.h5`) with `overrides`, and
/// write `result.h5`, `metrics.csv` and `tables.md` into `opts.out` (default: the folder
/// `evaluate/` beside `path`).
pub fn evaluate_stored(
    path: &Path,
    overrides: &[String],
    opts: &RunOptions,
) -> Result<(RunResult, PathBuf)> {
    let m = models::file::read(path)?;
    let stored = config::parse_job(path, &m.provenance.config_yaml, &[])?;
    let cfg = config::parse_job(path, &m.provenance.config_yaml, overrides)?;
    check_training_config(path, &stored, &cfg)?;
    let yaml = serde_yaml_ng::to_string(&cfg).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    let out = opts.out.clone().unwrap_or_else(|| default_out(path));
    if out.join(results::paths::MODELS_H5).exists() {
        return Err(Error::Results {
            path: out.join(results::paths::MODELS_H5),
            msg: "the output folder holds a run's models.h5; an evaluation's result.h5 beside it would look like that run's. Pass another `--out` (default: evaluate/ beside MODELS.h5)".into(),
        });
    }
    check_out_writable(&out, true)?;
    let device = backend::select(cfg.device)?;
    let ctx = DeviceCtx::open(device.clone())?;
    log(format!(
        "diffnmf {}: evaluating the models of `{}` ({}, trained by diffnmf {} on {}), device {}, {} threads, output {}",
        env!("CARGO_PKG_VERSION"),
        m.provenance.job_name,
        path.display(),
        m.provenance.diffnmf_version,
        m.provenance.platform,
        device.name(),
        opts.threads,
        out.display()
    ));
    let total = Instant::now();
    let mut timings = Timings::default();
    let points = eval_features(path, &cfg, &m, &ctx, &mut timings)?;
    let same_points = split_name(cfg.eval_split) == m.eval.split && points.ids == m.eval.ids;
    if same_points && models::features_sha256(points.z.view()) != m.eval.features_sha256 {
        log(format!(
            "warning: the recomputed features differ from the original run's (trained on {}, now {}): this evaluation is not bit-identical to it",
            m.provenance.platform,
            super::code::platform()
        ));
    }
    let tr = trained_of(&m, points);
    let eval = evaluate::evaluate(&cfg, &tr, &mut timings, &ctx, None)?;
    timings.push(super::TOTAL, total.elapsed().as_secs_f64());
    let result = run_result(
        &cfg,
        &yaml,
        &device.name(),
        opts.threads,
        &tr,
        eval,
        timings,
    );
    results::paths::sweep_stale_tmp(&out);
    results::write_all(&out, &result, None)?;
    Ok((result, out))
}
