//! Cacheable payloads of the training stages and their cache keys: the configuration slice
//! that determines each stage (see [`crate::cache`]).

use crate::cache::{Cacheable, Store};
use crate::config::{DataConfig, JobConfig};
use crate::error::Result;
use crate::nn::mlp::{Activation, Dense, Mlp};
use crate::nn::train::TrainHistory;
use ndarray::{Array1, Array2};
use serde::Serialize;

/// Bump when a payload's meaning changes, so old cache entries are not reused.
const CACHE_VERSION: u32 = 1;

/// CNN features of the three splits and the training curves.
#[derive(Clone, Debug)]
pub struct CnnStage {
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

impl Cacheable for CnnStage {
    fn to_store(&self) -> Store {
        let mut s = Store::default();
        for (name, f) in SPLITS.iter().zip(&self.feats) {
            s.arrays.insert(format!("features_{name}"), f.clone());
        }
        hist_to(&mut s, &self.hist);
        s
    }
    fn from_store(s: &Store) -> Result<Self> {
        let f = |n: &str| s.array(&format!("features_{n}")).cloned();
        Ok(CnnStage {
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
            _ => Activation::Relu,
        };
        Ok(MlpStage {
            mlp: Mlp { layers, act },
            hist: hist_from(s)?,
        })
    }
}

/// Data + split slice of the configuration (the split seed resolved).
pub fn data_key(cfg: &JobConfig) -> DataConfig {
    let mut d = cfg.data.clone();
    d.split_seed = Some(d.split_seed.unwrap_or(cfg.seed));
    d
}

#[derive(Serialize)]
pub struct CnnKey<'a> {
    v: u32,
    data: DataConfig,
    cnn: &'a crate::config::CnnConfig,
    seed: u64,
}

#[derive(Serialize)]
pub struct NnmfKey<'a> {
    v: u32,
    /// GPU and CPU fits differ in rounding: keep their entries apart.
    device: crate::config::DevicePref,
    data: DataConfig,
    nnmf: &'a crate::config::NnmfConfig,
    seed: u64,
}

/// Keys of the feature stages that are enabled.
#[derive(Serialize)]
pub struct FeatureKey<'a> {
    v: u32,
    cnn: Option<CnnKey<'a>>,
    nnmf: Option<NnmfKey<'a>>,
}

pub fn cnn_key(cfg: &JobConfig) -> CnnKey<'_> {
    CnnKey {
        v: CACHE_VERSION,
        data: data_key(cfg),
        cnn: &cfg.cnn,
        seed: cfg.seed,
    }
}

pub fn nnmf_key(cfg: &JobConfig) -> NnmfKey<'_> {
    NnmfKey {
        v: CACHE_VERSION,
        device: cfg.device,
        data: data_key(cfg),
        nnmf: &cfg.nnmf,
        seed: cfg.seed,
    }
}

pub fn feature_key(cfg: &JobConfig) -> FeatureKey<'_> {
    FeatureKey {
        v: CACHE_VERSION,
        cnn: cfg.features.cnn.then(|| cnn_key(cfg)),
        nnmf: cfg.features.nnmf.then(|| nnmf_key(cfg)),
    }
}

/// Classifier: features + classifier parameters + seed.
pub fn classifier_key(cfg: &JobConfig) -> impl Serialize + '_ {
    (feature_key(cfg), &cfg.classifier, cfg.seed)
}

/// Denoiser: features + the training part of the diffusion parameters + seed (t* and R only
/// matter at inference, so sweeps over them reuse one denoiser).
pub fn denoiser_key(cfg: &JobConfig) -> impl Serialize + '_ {
    let d = &cfg.diffusion;
    (
        feature_key(cfg),
        (d.steps, d.beta_start, d.beta_end, d.predict, &d.hidden),
        (d.time_dim, d.epochs, d.batch_size, d.lr),
        cfg.seed,
    )
}
