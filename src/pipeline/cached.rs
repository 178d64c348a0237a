//! Cacheable payloads of the training stages and their cache keys (see [`crate::cache`]).
//!
//! A key holds exactly what determines a stage: the content fingerprint of the data
//! ([`crate::data::fingerprint`]; never a path — moving a folder keeps its entries, changing
//! one pixel rebuilds them), the data slice of the configuration that shapes it (label range,
//! image size, split and split seed, subset), the stage's configuration section and seed, and
//! the code fingerprints ([`super::code`]). The classifier and denoiser keys nest the feature
//! keys, so anything that changes a feature stage changes every key after it.

use super::code::CodeFingerprints;
use crate::cache::CacheKey;
use crate::cache::{Cacheable, Store};
use crate::config::{DataFormat, ImageSize, JobConfig};
use crate::error::Result;
use crate::nn::cnn::{Cnn, CnnArch, ConvBlock};
use crate::nn::mlp::{Activation, Dense, Mlp};
use crate::nn::train::TrainHistory;
use ndarray::{Array1, Array2};
use serde::Serialize;

/// The trained CNN, its features of the three splits and the training curves.
#[derive(Clone, Debug)]
pub struct CnnStage {
    pub cnn: Cnn<f32>,
    pub feats: [Array2<f32>; 3],
    pub hist: TrainHistory,
}

/// NNMF basis, coefficients of the three splits and the objective history.
#[derive(Clone, Debug)]
pub struct NnmfStage {
    pub basis: Array2<f32>,
    pub coeffs: [Array2<f32>; 3],
    pub objective: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

/// A trained MLP (classifier or denoiser) with its curves.
#[derive(Clone, Debug)]
pub struct MlpStage {
    pub mlp: Mlp<f32>,
    pub hist: TrainHistory,
}

const SPLITS: [&str; 3] = ["train", "val", "test"];

fn hist_to(s: &mut Store, h: &TrainHistory) {
    s.vectors.insert("train_loss".into(), h.train_loss.clone());
    s.vectors.insert("val_loss".into(), h.val_loss.clone());
    s.vectors
        .insert("val_accuracy".into(), h.val_accuracy.clone());
    s.vectors
        .insert("best_epoch".into(), vec![h.best_epoch as f64]);
}

fn hist_from(s: &Store) -> Result<TrainHistory> {
    Ok(TrainHistory {
        train_loss: s.vector("train_loss")?.clone(),
        val_loss: s.vector("val_loss")?.clone(),
        val_accuracy: s.vector("val_accuracy")?.clone(),
        best_epoch: s.vector("best_epoch")?.first().copied().unwrap_or(0.0) as usize,
    })
}

fn row(v: &Array1<f32>) -> Array2<f32> {
    v.clone().insert_axis(ndarray::Axis(0))
}

fn dense_to(s: &mut Store, name: &str, d: &Dense<f32>) {
    s.arrays.insert(format!("{name}.w"), d.w.clone());
    s.arrays.insert(format!("{name}.b"), row(&d.b));
}

fn dense_from(s: &Store, name: &str) -> Result<Dense<f32>> {
    Ok(Dense {
        w: s.array(&format!("{name}.w"))?.clone(),
        b: s.array(&format!("{name}.b"))?.row(0).to_owned(),
    })
}

fn cnn_to(s: &mut Store, c: &Cnn<f32>) {
    let a = &c.arch;
    s.vectors.insert(
        "cnn.channels".into(),
        a.channels.iter().map(|&v| v as f64).collect(),
    );
    s.vectors.insert(
        "cnn.shape".into(),
        [a.feature_dim, a.height, a.width, a.classes]
            .iter()
            .map(|&v| v as f64)
            .collect(),
    );
    for (i, b) in c.blocks.iter().enumerate() {
        s.arrays.insert(format!("cnn.block{i}.w"), b.w.clone());
        for (n, v) in [
            ("gamma", &b.gamma),
            ("beta", &b.beta),
            ("running_mean", &b.running_mean),
            ("running_var", &b.running_var),
        ] {
            s.arrays.insert(format!("cnn.block{i}.{n}"), row(v));
        }
    }
    dense_to(s, "cnn.fc1", &c.fc1);
    dense_to(s, "cnn.fc2", &c.fc2);
}

fn cnn_from(s: &Store) -> Result<Cnn<f32>> {
    let channels: Vec<usize> = s
        .vector("cnn.channels")?
        .iter()
        .map(|&v| v as usize)
        .collect();
    let sh: Vec<usize> = s.vector("cnn.shape")?.iter().map(|&v| v as usize).collect();
    let [feature_dim, height, width, classes] = sh[..] else {
        return Err(crate::error::Error::param(
            "cnn.shape",
            "a cached CNN needs 4 shape entries; delete the cache folder to rebuild it",
        ));
    };
    let mut blocks = vec![];
    for i in 0..channels.len() {
        let v = |n: &str| -> Result<Array1<f32>> {
            Ok(s.array(&format!("cnn.block{i}.{n}"))?.row(0).to_owned())
        };
        blocks.push(ConvBlock {
            w: s.array(&format!("cnn.block{i}.w"))?.clone(),
            gamma: v("gamma")?,
            beta: v("beta")?,
            running_mean: v("running_mean")?,
            running_var: v("running_var")?,
        });
    }
    Ok(Cnn {
        arch: CnnArch {
            channels,
            feature_dim,
            height,
            width,
            classes,
        },
        blocks,
        fc1: dense_from(s, "cnn.fc1")?,
        fc2: dense_from(s, "cnn.fc2")?,
    })
}

impl Cacheable for CnnStage {
    fn to_store(&self) -> Store {
        let mut s = Store::default();
        for (name, f) in SPLITS.iter().zip(&self.feats) {
            s.arrays.insert(format!("features_{name}"), f.clone());
        }
        cnn_to(&mut s, &self.cnn);
        hist_to(&mut s, &self.hist);
        s
    }
    fn from_store(s: &Store) -> Result<Self> {
        let f = |n: &str| s.array(&format!("features_{n}")).cloned();
        Ok(CnnStage {
            cnn: cnn_from(s)?,
            feats: [f("train")?, f("val")?, f("test")?],
            hist: hist_from(s)?,
        })
    }
}

impl Cacheable for NnmfStage {
    fn to_store(&self) -> Store {
        let mut s = Store::default();
        s.arrays.insert("basis".into(), self.basis.clone());
        for (name, c) in SPLITS.iter().zip(&self.coeffs) {
            s.arrays.insert(format!("coeffs_{name}"), c.clone());
        }
        s.vectors.insert("objective".into(), self.objective.clone());
        s.vectors.insert(
            "status".into(),
            vec![self.iterations as f64, self.converged as u8 as f64],
        );
        s
    }
    fn from_store(s: &Store) -> Result<Self> {
        let c = |n: &str| s.array(&format!("coeffs_{n}")).cloned();
        let st = s.vector("status")?;
        Ok(NnmfStage {
            basis: s.array("basis")?.clone(),
            coeffs: [c("train")?, c("val")?, c("test")?],
            objective: s.vector("objective")?.clone(),
            iterations: st.first().copied().unwrap_or(0.0) as usize,
            converged: st.get(1).copied().unwrap_or(0.0) > 0.5,
        })
    }
}

impl Cacheable for MlpStage {
    fn to_store(&self) -> Store {
        let mut s = Store::default();
        for (i, l) in self.mlp.layers.iter().enumerate() {
            s.arrays.insert(format!("w{i:02}"), l.w.clone());
            s.arrays.insert(
                format!("b{i:02}"),
                l.b.clone().insert_axis(ndarray::Axis(0)),
            );
        }
        let act = match self.mlp.act {
            Activation::Relu => "relu",
            Activation::Silu => "silu",
        };
        s.strings.insert("activation".into(), act.into());
        hist_to(&mut s, &self.hist);
        s
    }
    fn from_store(s: &Store) -> Result<Self> {
        let n = s.arrays.keys().filter(|k| k.starts_with('w')).count();
        let mut layers = vec![];
        for i in 0..n {
            let b: Array1<f32> = s.array(&format!("b{i:02}"))?.row(0).to_owned();
            layers.push(Dense {
                w: s.array(&format!("w{i:02}"))?.clone(),
                b,
            });
        }
        let act = match s.string("activation")?.as_str() {
            "silu" => Activation::Silu,
            "relu" => Activation::Relu,
            other => {
                return Err(crate::error::Error::param(
                    "activation",
                    format!("unknown activation `{other}` in a cached MLP; delete the cache folder to rebuild it"),
                ))
            }
        };
        Ok(MlpStage {
            mlp: Mlp::from_layers(
                layers,
                act,
                "a cached MLP stage (delete the cache folder to rebuild it)",
            )?,
            hist: hist_from(s)?,
        })
    }
}

/// What a key needs besides the configuration: the data's content and the code.
#[derive(Clone, Copy)]
pub struct KeyCtx<'a> {
    /// [`crate::data::Fingerprint::id`] of the loaded data (or [`configured_source`] where
    /// only the configuration is known).
    pub data: &'a str,
    pub code: &'a CodeFingerprints,
    /// Whether a CUDA backend is open for the run: the NNMF fit then takes the GPU path
    /// where it has one, and its entry is kept apart (GPU and CPU fits differ in rounding).
    pub cuda: bool,
}

/// Whether a run of `cfg` on this machine opens a CUDA backend (`device: cuda`, or `auto`
/// in a CUDA build with a usable GPU): what the keys of cells not yet run assume.
pub fn plans_cuda(cfg: &JobConfig) -> bool {
    match cfg.device {
        crate::config::DevicePref::Cpu => false,
        crate::config::DevicePref::Cuda => true,
        crate::config::DevicePref::Auto => crate::backend::cuda_available(),
    }
}

/// The device the NNMF stage of `cfg` is fitted on: the GPU path covers the global
/// Frobenius fit only.
fn nnmf_device(cfg: &JobConfig, k: &KeyCtx) -> &'static str {
    if nnmf_on_gpu(cfg, k.cuda) {
        "cuda"
    } else {
        "cpu"
    }
}

/// Whether the NNMF stage of `cfg` runs on the GPU when a CUDA backend is open (`cuda`).
pub fn nnmf_on_gpu(cfg: &JobConfig, cuda: bool) -> bool {
    cuda && crate::nmf::gpu_covers(cfg.nnmf.loss, cfg.nnmf.mode)
}

/// A stand-in for the data's content where only the configuration is known (ordering
/// cells before anything is loaded): the configured source. Never part of a cache key.
pub fn configured_source(cfg: &JobConfig) -> String {
    let d = &cfg.data;
    let p = |x: &Option<std::path::PathBuf>| x.as_deref().map(|p| p.display().to_string());
    match d.format {
        DataFormat::Embedded => "embedded".into(),
        DataFormat::Idx => format!("idx:{:?}|{:?}", p(&d.images), p(&d.labels)),
        DataFormat::Folder => format!("folder:{:?}", p(&d.root)),
    }
}

/// The data part of the feature keys: content, not location.
#[derive(Serialize)]
pub struct DataKey<'a> {
    content: &'a str,
    classes: Option<usize>,
    size: &'a ImageSize,
    split: [f64; 3],
    split_seed: u64,
    subset: usize,
}

fn data_key<'a>(cfg: &'a JobConfig, k: &KeyCtx<'a>) -> DataKey<'a> {
    let d = &cfg.data;
    DataKey {
        content: k.data,
        classes: d.classes,
        size: &d.size,
        split: d.split,
        split_seed: d.split_seed.unwrap_or(cfg.seed),
        subset: d.subset,
    }
}

fn short(id: &str) -> &str {
    // `kind:` and 12 hex digits.
    let end = id.find(':').map_or(0, |c| c + 1) + 12;
    &id[..end.min(id.len())]
}

#[derive(Serialize)]
pub struct CnnKey<'a> {
    code: (&'a str, &'a str, &'a str),
    data: DataKey<'a>,
    cnn: &'a crate::config::CnnConfig,
    seed: u64,
}

#[derive(Serialize)]
pub struct NnmfKey<'a> {
    code: (&'a str, &'a str, &'a str),
    /// The device actually fitted on (`auto` resolved): GPU and CPU fits differ in rounding.
    device: &'static str,
    data: DataKey<'a>,
    nnmf: &'a crate::config::NnmfConfig,
    seed: u64,
}

/// Keys of the feature stages that are enabled.
#[derive(Serialize)]
pub struct FeatureKey<'a> {
    cnn: Option<CnnKey<'a>>,
    nnmf: Option<NnmfKey<'a>>,
}

#[derive(Serialize)]
pub struct ClassifierKey<'a> {
    code: (&'a str, &'a str, &'a str),
    features: FeatureKey<'a>,
    classifier: &'a crate::config::ClassifierConfig,
    seed: u64,
}

/// The training part of the diffusion parameters (t* and R only matter at inference, so
/// sweeps over them reuse one denoiser).
#[derive(Serialize)]
pub struct DenoiserKey<'a> {
    code: (&'a str, &'a str, &'a str),
    features: FeatureKey<'a>,
    steps: usize,
    beta: (f64, f64),
    predict: crate::config::Prediction,
    hidden: &'a [usize],
    time_dim: usize,
    training: (usize, usize, f64),
    seed: u64,
}

pub fn cnn_key<'a>(cfg: &'a JobConfig, k: &KeyCtx<'a>) -> CnnKey<'a> {
    CnnKey {
        code: k.code.key("cnn"),
        data: data_key(cfg, k),
        cnn: &cfg.cnn,
        seed: cfg.seed,
    }
}

pub fn nnmf_key<'a>(cfg: &'a JobConfig, k: &KeyCtx<'a>) -> NnmfKey<'a> {
    NnmfKey {
        code: k.code.key("nnmf"),
        device: nnmf_device(cfg, k),
        data: data_key(cfg, k),
        nnmf: &cfg.nnmf,
        seed: cfg.seed,
    }
}

pub fn feature_key<'a>(cfg: &'a JobConfig, k: &KeyCtx<'a>) -> FeatureKey<'a> {
    FeatureKey {
        cnn: cfg.features.cnn.then(|| cnn_key(cfg, k)),
        nnmf: cfg.features.nnmf.then(|| nnmf_key(cfg, k)),
    }
}

/// Classifier: features + classifier parameters + seed.
pub fn classifier_key<'a>(cfg: &'a JobConfig, k: &KeyCtx<'a>) -> ClassifierKey<'a> {
    ClassifierKey {
        code: k.code.key("classifier"),
        features: feature_key(cfg, k),
        classifier: &cfg.classifier,
        seed: cfg.seed,
    }
}

/// Denoiser: features + the training part of the diffusion parameters + seed.
pub fn denoiser_key<'a>(cfg: &'a JobConfig, k: &KeyCtx<'a>) -> DenoiserKey<'a> {
    let d = &cfg.diffusion;
    DenoiserKey {
        code: k.code.key("denoiser"),
        features: feature_key(cfg, k),
        steps: d.steps,
        beta: (d.beta_start, d.beta_end),
        predict: d.predict,
        hidden: &d.hidden,
        time_dim: d.time_dim,
        training: (d.epochs, d.batch_size, d.lr),
        seed: cfg.seed,
    }
}

impl FeatureKey<'_> {
    fn summary(&self) -> String {
        let mut parts = vec![];
        if let Some(c) = &self.cnn {
            parts.push(format!("cnn(dim {})", c.cnn.feature_dim));
        }
        if let Some(n) = &self.nnmf {
            parts.push(format!("nnmf(k {})", n.nnmf.k));
        }
        let data = self
            .cnn
            .as_ref()
            .map(|c| &c.data)
            .or(self.nnmf.as_ref().map(|n| &n.data));
        let data = data.map_or(String::new(), |d| format!(" data={}", short(d.content)));
        format!("features={}{data}", parts.join("+"))
    }
}

impl DataKey<'_> {
    fn summary(&self) -> String {
        let (h, w) = self.size.hw();
        let subset = if self.subset > 0 {
            format!(" subset={}", self.subset)
        } else {
            String::new()
        };
        format!(
            "data={} {h}x{w} split_seed={}{subset}",
            short(self.content),
            self.split_seed
        )
    }
}

impl CacheKey for CnnKey<'_> {
    fn summary(&self) -> String {
        let c = self.cnn;
        format!(
            "seed={} {} channels={:?} dim={} epochs={} lr={}",
            self.seed,
            self.data.summary(),
            c.channels,
            c.feature_dim,
            c.epochs,
            c.lr
        )
    }
}

/// A short YAML rendering of a configuration value (enums: their snake_case name).
trait ToYaml {
    fn yaml(&self) -> String;
}

impl<T: Serialize> ToYaml for T {
    fn yaml(&self) -> String {
        serde_yaml_ng::to_string(self)
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

impl CacheKey for NnmfKey<'_> {
    fn summary(&self) -> String {
        let n = self.nnmf;
        let s = |v: &dyn ToYaml| v.yaml();
        format!(
            "seed={} {} k={} mode={} loss={} init={} max_iter={}",
            self.seed,
            self.data.summary(),
            n.k,
            s(&n.mode),
            s(&n.loss),
            s(&n.init),
            n.max_iter
        )
    }
}

impl CacheKey for ClassifierKey<'_> {
    fn summary(&self) -> String {
        let c = self.classifier;
        format!(
            "seed={} {} hidden={:?} epochs={} lr={}",
            self.seed,
            self.features.summary(),
            c.hidden,
            c.epochs,
            c.lr
        )
    }
}

impl CacheKey for DenoiserKey<'_> {
    fn summary(&self) -> String {
        format!(
            "seed={} {} steps={} hidden={:?} epochs={} lr={}",
            self.seed,
            self.features.summary(),
            self.steps,
            self.hidden,
            self.training.0,
            self.training.2
        )
    }
}
