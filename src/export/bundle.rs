//! `diffnmf export RUN_DIR --onnx OUT_DIR`: the ONNX files of a run's stored models
//! (`models.h5`), `pipeline.json` with everything else a re-implementation needs, and the
//! run's evaluated points as `.npy` files with the run's clean probabilities as reference
//! (`docs/onnx.md`). Every file is written atomically; `pipeline.json` is written last, so a
//! folder with it is complete.

use super::{npy, onnx};
use crate::config;
use crate::error::{Error, Result};
use crate::models::{self, Models};
use crate::pipeline::{stored, Timings};
use crate::results::{self, h5, paths, scenario_key, Protocol, Scenario};
use ndarray::Array2;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Version of the `pipeline.json` layout.
pub const PIPELINE_VERSION: u32 = 1;

#[derive(Serialize)]
struct Block {
    name: String,
    dim: usize,
    source: &'static str,
}

#[derive(Serialize)]
struct Projection {
    basis: Vec<Vec<f32>>,
    loss: String,
    mode: String,
    k: usize,
    max_iter: usize,
    tol: f64,
    check_every: usize,
    eps: f64,
    device: String,
    algorithm: &'static str,
}

#[derive(Serialize)]
struct Schedule {
    steps: usize,
    beta: Vec<f64>,
    alpha_bar: Vec<f64>,
    sigma: Vec<f64>,
    t_star: usize,
    passes: usize,
    prediction: String,
    algorithm: &'static str,
}

#[derive(Serialize)]
struct Files {
    cnn: Option<&'static str>,
    classifier: &'static str,
    denoiser: &'static str,
    eval_images: &'static str,
    eval_labels: &'static str,
    eval_ids: &'static str,
    reference_clean_base_proba: Option<&'static str>,
    reference_clean_def_proba: Option<&'static str>,
}

#[derive(Serialize)]
struct Pipeline {
    format: &'static str,
    version: u32,
    diffnmf_version: String,
    job_name: String,
    seed: u64,
    platform: String,
    data_content: String,
    image: [usize; 2],
    pixels: &'static str,
    num_classes: usize,
    files: Files,
    feature_order: Vec<Block>,
    nnmf: Option<Projection>,
    zscore_mean: Vec<f32>,
    zscore_std: Vec<f32>,
    train_min: Vec<f32>,
    train_max: Vec<f32>,
    schedule: Schedule,
    config_yaml: String,
}

const PROJECTION: &str = "Rows are projected independently with W (K x p) fixed. Init: h = alpha * ones(K) with alpha = max(0, <v, s>/|s|^2), s = W.sum(axis=0) (frobenius), or alpha = sum(v)/sum(W) (kl). For t = 0..=max_iter: the row objective, in f64 from float32 products (frobenius max(0, 0.5*(|v|^2 - 2 <h, v W^T> + <h, h W W^T>)), i.e. 0.5*|v - hW|^2 expanded; kl max(0,  sum over v>0 of v*ln(v/(hW+eps)) - v, plus sum(hW))) is recorded at t = 0; when tol > 0, at every t that is a multiple of check_every a still-active row compares it with its previous record and stops when the relative decrease is below tol; at t = max_iter, or when no row is active, stop; else update every active row: frobenius h <- h * (v W^T) / (h W W^T + eps); kl h <- h * ((v / (hW + eps)) W^T) / (W.sum(axis=1) + eps); entries below the smallest normal float32 become 0. tol = 0 gives exactly max_iter updates. Updates are float32. With device = cuda the run computed the features on the GPU (other rounding): a CPU re-implementation agrees to rounding, not bit for bit.";

const PURIFY: &str = "Defended prediction of a z-scored hybrid vector z: x = sqrt(alpha_bar[t_star]) z + sqrt(1 - alpha_bar[t_star]) n0; for s = t_star, ..., 1: out = denoiser(x, s); with alpha = 1 - beta: prediction = noise: x = (x - beta[s]/sqrt(1 - alpha_bar[s]) out)/sqrt(alpha[s]); prediction = x0: x = sqrt(alpha[s])(1 - alpha_bar[s-1])/(1 - alpha_bar[s]) x + sqrt(alpha_bar[s-1]) beta[s]/(1 - alpha_bar[s]) out; then, for s > 1, x += sigma[s] n_s (n ~ N(0, I), fresh per pass and step). Classify the final x with classifier.onnx and average softmax probabilities over `passes` independent passes.";

fn nnmf_json(m: &Models) -> Option<Projection> {
    m.nnmf.as_ref().map(|n| Projection {
        basis: n
            .model
            .basis
            .rows()
            .into_iter()
            .map(|r| r.to_vec())
            .collect(),
        loss: models::name_of(&n.model.loss),
        mode: models::name_of(&n.mode),
        k: n.k,
        max_iter: n.model.max_iter,
        tol: n.model.tol,
        check_every: crate::nmf::mu::CHECK_EVERY,
        eps: crate::nmf::mu::EPS,
        device: n.device.clone(),
        algorithm: PROJECTION,
    })
}

/// The `models.h5` of `run`: `run` itself when it is a file, else `run/models.h5`.
pub fn models_path(run: &Path) -> PathBuf {
    if run.is_file() {
        run.to_path_buf()
    } else {
        run.join(paths::MODELS_H5)
    }
}

/// Export the models of the run in `run` (a run folder or its `models.h5`) into `out`.
/// Returns the written files.
pub fn export(run: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let mp = models_path(run);
    if !mp.is_file() {
        return Err(Error::Results {
            path: mp.clone(),
            msg: "no models.h5 here; pass a run folder written by `diffnmf run` (or a sweep's cells/<id>) or its models.h5".into(),
        });
    }
    let m = models::file::read(&mp)?;
    let (x, y) = eval_points(&mp, &m)?;
    let mut files = Bundle {
        dir: out,
        files: vec![],
    };
    files.put_models(&m);
    files.put_eval_points(&m, &x, &y);
    let refs = files.put_references(&mp, &m);
    let json = serde_json::to_vec_pretty(&pipeline(&m, refs)).map_err(|e| Error::Results {
        path: out.join(paths::PIPELINE_JSON),
        msg: e.to_string(),
    })?;
    files.put(paths::PIPELINE_JSON, json);
    files.write()
}

/// The evaluated points, exactly those of the run (images, labels; the first
/// `eval.ids.len()` rows); an error when the data loaded now gives other points.
fn eval_points(mp: &Path, m: &Models) -> Result<(Array2<f32>, Vec<usize>)> {
    let cfg = config::parse_job(mp, &m.provenance.config_yaml, &[])?;
    let mut t = Timings::default();
    let (x, idx, y) = stored::eval_data(mp, &cfg, m, &mut t)?;
    let n = m.eval.ids.len();
    if idx.len() < n
        || idx[..n]
            .iter()
            .map(|&i| i as u64)
            .ne(m.eval.ids.iter().copied())
    {
        return Err(Error::Results {
            path: mp.to_path_buf(),
            msg: "field `eval/ids`: the split of the data loaded now does not give the run's evaluated points".into(),
        });
    }
    Ok((x, y))
}

/// The files of one export, in memory until [`Bundle::write`].
struct Bundle<'a> {
    dir: &'a Path,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Bundle<'_> {
    fn put(&mut self, name: &str, bytes: Vec<u8>) {
        self.files.push((self.dir.join(name), bytes));
    }

    /// The ONNX models: the CNN (when the run has one), classifier and denoiser.
    fn put_models(&mut self, m: &Models) {
        if let Some(c) = &m.cnn {
            self.put("cnn.onnx", onnx::cnn_model(c));
        }
        self.put("classifier.onnx", onnx::classifier_model(&m.classifier));
        self.put("denoiser.onnx", onnx::denoiser_model(&m.denoiser));
    }

    /// The evaluated points `x` (images) with labels `y` and the run's ids, as `.npy`.
    fn put_eval_points(&mut self, m: &Models, x: &Array2<f32>, y: &[usize]) {
        let n = m.eval.ids.len();
        let (h, w) = m.image_shape;
        let px: Vec<f32> = x.rows().into_iter().take(n).flatten().copied().collect();
        self.put("eval_images.npy", npy::encode(&[n, 1, h, w], &px));
        let labels: Vec<i64> = y[..n].iter().map(|&v| v as i64).collect();
        self.put("eval_labels.npy", npy::encode(&[n], &labels));
        let ids: Vec<i64> = m.eval.ids.iter().map(|&v| v as i64).collect();
        self.put("eval_ids.npy", npy::encode(&[n], &ids));
    }

    /// The run's clean probabilities, when its result.h5 is beside models.h5 and evaluated
    /// exactly these points; the names of the files put (clean base, clean defended).
    fn put_references(&mut self, mp: &Path, m: &Models) -> [Option<&'static str>; 2] {
        let n = m.eval.ids.len();
        let result = mp.with_file_name(paths::RESULT_H5);
        let mut refs = [None, None];
        let same_points = h5::check_complete(&result).is_ok()
            && h5::read_u64_1d(&result, "test/ids").is_ok_and(|ids| ids == m.eval.ids);
        if !same_points {
            return refs;
        }
        for (i, (sc, file)) in [
            (Scenario::CleanBase, "reference_clean_base_proba.npy"),
            (Scenario::CleanDef, "reference_clean_def_proba.npy"),
        ]
        .into_iter()
        .enumerate()
        {
            let key = scenario_key(sc, Protocol::None, 0.0);
            let Ok(p) = h5::read_f32_2d(&result, &format!("scenarios/{key}/proba")) else {
                continue;
            };
            if p.nrows() == n {
                let v: Vec<f32> = p.iter().copied().collect();
                self.put(file, npy::encode(&[n, p.ncols()], &v));
                refs[i] = Some(file);
            }
        }
        refs
    }

    /// Write every file atomically into the folder (created if needed).
    fn write(self) -> Result<Vec<PathBuf>> {
        let out = self.dir;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        // An older export's pipeline.json goes first, so the folder is never a
        // complete-looking mix; files this export does not write (e.g. cnn.onnx of an
        // earlier run) are removed.
        for old in [
            paths::PIPELINE_JSON,
            "cnn.onnx",
            "reference_clean_base_proba.npy",
            "reference_clean_def_proba.npy",
        ] {
            match std::fs::remove_file(out.join(old)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(out.join(old), e))
                }
                _ => {}
            }
        }
        for (p, b) in &self.files {
            results::write_atomic(p, b)?;
        }
        Ok(self.files.into_iter().map(|f| f.0).collect())
    }
}

/// `pipeline.json` of `m`; `refs`: the reference probability files written (clean base,
/// clean defended).
fn pipeline(m: &Models, refs: [Option<&'static str>; 2]) -> Pipeline {
    let (h, w) = m.image_shape;
    Pipeline {
        format: "diffnmf-onnx-pipeline",
        version: PIPELINE_VERSION,
        diffnmf_version: m.provenance.diffnmf_version.clone(),
        job_name: m.provenance.job_name.clone(),
        seed: m.provenance.seed,
        platform: m.provenance.platform.clone(),
        data_content: m.provenance.data_content.clone(),
        image: [h, w],
        pixels: "gray values / 255 in [0, 1], row-major height x width; cnn.onnx takes [batch, 1, height, width], the NNMF projection the flattened row",
        num_classes: m.num_classes,
        files: Files {
            cnn: m.cnn.as_ref().map(|_| "cnn.onnx"),
            classifier: "classifier.onnx",
            denoiser: "denoiser.onnx",
            eval_images: "eval_images.npy",
            eval_labels: "eval_labels.npy",
            eval_ids: "eval_ids.npy",
            reference_clean_base_proba: refs[0],
            reference_clean_def_proba: refs[1],
        },
        feature_order: feature_order(m),
        nnmf: nnmf_json(m),
        zscore_mean: m.scaler.mean.to_vec(),
        zscore_std: m.scaler.std.to_vec(),
        train_min: m.train_range.0.to_vec(),
        train_max: m.train_range.1.to_vec(),
        schedule: schedule_json(m),
        config_yaml: m.provenance.config_yaml.clone(),
    }
}

fn feature_order(m: &Models) -> Vec<Block> {
    m.blocks
        .iter()
        .map(|(name, dim)| Block {
            name: name.clone(),
            dim: *dim,
            source: if name == "cnn" {
                "cnn.onnx output `features`"
            } else {
                "NNMF projection of the flattened image on nnmf.basis"
            },
        })
        .collect()
}

fn schedule_json(m: &Models) -> Schedule {
    let sched = &m.denoiser.sched;
    Schedule {
        steps: sched.steps(),
        beta: sched.beta.clone(),
        alpha_bar: sched.alpha_bar.clone(),
        sigma: sched.sigma.clone(),
        t_star: m.t_star,
        passes: m.passes,
        prediction: models::name_of(&m.denoiser.predict),
        algorithm: PURIFY,
    }
}
