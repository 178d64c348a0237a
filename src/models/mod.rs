//! The trained models of one run, kept as `models.h5` beside `result.h5` (schema in
//! `docs/results.md`, section "models.h5"): CNN weights with BatchNorm statistics, the NNMF
//! basis with its projection settings, the z-score statistics and the training box, the
//! classifier, the denoiser with its time embedding, the diffusion schedule with t* and R,
//! the configuration that trained them and a schema version.
//!
//! [`Models`] is the in-memory form; [`file`] writes and reads it. `diffnmf evaluate` re-runs
//! the evaluation on a stored set ([`crate::pipeline::reevaluate`]), `diffnmf export` turns
//! it into ONNX files ([`crate::export`]).

pub mod file;

use crate::diffusion::denoiser::Denoiser;
use crate::features::Standardizer;
use crate::nmf::{NmfMode, NmfModel};
use crate::nn::cnn::Cnn;
use crate::nn::mlp::Mlp;
use crate::results::Curve;
use ndarray::{Array1, ArrayView2};
use sha2::{Digest, Sha256};

/// Value of the root attribute `schema` of every `models.h5`.
pub const SCHEMA: &str = "diffnmf-models";
/// Version of the `models.h5` layout this diffnmf writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// The NNMF stage as stored: the model used for new rows and the record of its fit.
#[derive(Clone, Debug)]
pub struct NnmfModels {
    /// Basis (`K × pixels`), loss, and the projection's `max_iter`/`tol`.
    pub model: NmfModel,
    pub mode: NmfMode,
    /// `nnmf.k` (K = k, or k·classes in per-class mode).
    pub k: usize,
    /// Where the features were computed: `cpu` or `cuda` (the GPU transform differs from
    /// the CPU projection in rounding; `evaluate` uses the same one).
    pub device: String,
    pub objective: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

/// Provenance of a stored set.
#[derive(Clone, Debug)]
pub struct Provenance {
    pub job_name: String,
    /// The resolved configuration that trained the models (YAML).
    pub config_yaml: String,
    pub seed: u64,
    pub diffnmf_version: String,
    pub git_revision: String,
    /// [`crate::pipeline::code::platform`] of the machine that trained them.
    pub platform: String,
    /// Device of the run (`cpu`, `cuda:0`, …).
    pub device: String,
    /// Content fingerprint of the training data ([`crate::data::Fingerprint::id`]).
    pub data_content: String,
}

/// What the original run evaluated, to check that `evaluate` sees the same inputs.
#[derive(Clone, Debug)]
pub struct EvalRecord {
    /// `test` or `val`.
    pub split: String,
    /// Dataset indices of the evaluated points (after `attack.max_points`).
    pub ids: Vec<u64>,
    pub labels: Vec<u8>,
    /// [`features_sha256`] of the z-scored features of those points.
    pub features_sha256: String,
}

/// Every trained model of one run.
#[derive(Clone, Debug)]
pub struct Models {
    pub provenance: Provenance,
    /// `(height, width)` of the images the models take.
    pub image_shape: (usize, usize),
    pub num_classes: usize,
    pub cnn: Option<Cnn<f32>>,
    pub nnmf: Option<NnmfModels>,
    /// Feature blocks of the hybrid vector in order, with their widths (`cnn`, `nnmf`).
    pub blocks: Vec<(String, usize)>,
    pub scaler: Standardizer,
    /// Per-feature (min, max) of the z-scored training features (`train_range` box).
    pub train_range: (Array1<f32>, Array1<f32>),
    pub classifier: Mlp<f32>,
    pub denoiser: Denoiser,
    /// Diffusion step t* the purification starts from.
    pub t_star: usize,
    /// Purification passes R whose probabilities are averaged.
    pub passes: usize,
    /// Training curves (as in `result.h5`).
    pub curves: Vec<Curve>,
    pub eval: EvalRecord,
}

impl Models {
    /// Width of the hybrid feature vector.
    pub fn feature_dim(&self) -> usize {
        self.scaler.mean.len()
    }
}

/// The serde (YAML) name of a configuration enum value, e.g. `frobenius`.
pub fn name_of<T: serde::Serialize>(v: &T) -> String {
    serde_yaml_ng::to_string(v)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// SHA-256 (hex) of a feature matrix: its shape and every value's bits, row-major.
pub fn features_sha256(z: ArrayView2<f32>) -> String {
    let mut h = Sha256::new();
    h.update((z.nrows() as u64).to_le_bytes());
    h.update((z.ncols() as u64).to_le_bytes());
    for v in z.iter() {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::name_of;
    use crate::config::{BoxKind, Prediction};
    use crate::nmf::NmfLoss;

    #[test]
    fn names_are_the_yaml_spellings() {
        // result.h5's `box` attribute, models.h5's enum attributes and pipeline.json use
        // these; the Debug spelling would say `TrainRange` / `trainrange`.
        assert_eq!(name_of(&BoxKind::TrainRange), "train_range");
        assert_eq!(name_of(&NmfLoss::Frobenius), "frobenius");
        assert_eq!(name_of(&Prediction::X0), "x0");
    }
}
