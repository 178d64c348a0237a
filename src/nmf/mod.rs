//! Non-negative matrix factorisation (Lee–Seung multiplicative updates).
//!
//! OWNER: nmf helper. Convention: data `V` is `n × p` (one image per row), the model is
//! `V ≈ H · W` with coefficients `H` (`n × K`, the features) and basis `W` (`K × p`, one
//! part-image per row).

use crate::error::Result;
use ndarray::{Array2, ArrayView2};

/// Objective / update family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfLoss {
    Frobenius,
    Kl,
}

/// Initialisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfInit {
    Nndsvda,
    Random,
}

/// `global`: one basis of `k` parts; `per_class`: `k` parts per class, concatenated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NmfMode {
    Global,
    PerClass,
}

/// Validated parameters.
#[derive(Clone, Debug)]
pub struct NmfParams {
    pub k: usize,
    pub mode: NmfMode,
    pub loss: NmfLoss,
    pub init: NmfInit,
    pub max_iter: usize,
    /// Relative objective decrease below which fitting stops (0 = run all iterations).
    pub tol: f64,
    pub seed: u64,
}

/// A fitted model.
#[derive(Clone, Debug)]
pub struct NmfModel {
    /// `K × p` basis (K = k, or k·classes in per-class mode).
    pub basis: Array2<f32>,
    pub loss: NmfLoss,
    pub max_iter: usize,
    pub tol: f64,
}

/// What fitting produced besides the model.
#[derive(Clone, Debug)]
pub struct NmfFitReport {
    /// Coefficients of the training rows (`n × K`).
    pub coeffs: Array2<f32>,
    /// Objective after each iteration (per-class: summed over classes at each iteration).
    pub objective: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
}

/// Fit on `v` (`n × p`, non-negative). `labels` is required in per-class mode.
pub fn fit(_v: ArrayView2<f32>, _labels: &[u8], _params: &NmfParams) -> Result<(NmfModel, NmfFitReport)> {
    todo!("nmf helper")
}

impl NmfModel {
    /// Coefficients of new rows with the basis fixed (`n × K`). Uses no labels.
    pub fn transform(&self, _v: ArrayView2<f32>) -> Result<Array2<f32>> {
        todo!("nmf helper")
    }
}
