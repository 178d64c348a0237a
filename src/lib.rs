//! diffnmf: robust handwritten-digit classification experiments.
//!
//! NNMF parts-based features + CNN deep features → z-scored hybrid vector → MLP classifier;
//! a DDPM-style denoiser in feature space purifies inputs; robustness is measured with
//! APGD-CE/DLR under transfer and adaptive (EOT) protocols. See README.md.
//!
//! Module map: [`config`] (job YAML), [`data`], [`nmf`], [`nn`], [`features`],
//! [`diffusion`], [`attack`], [`metrics`], [`pipeline`] (one experiment end to end),
//! [`results`] (HDF5 + CSV + Markdown), [`backend`] (device selection), [`rng`],
//! [`progress`].

pub mod attack;
pub mod backend;
pub mod bench;
pub mod cache;
pub mod certify;
pub mod cli;
pub mod config;
pub mod data;
pub mod diffusion;
pub mod error;
pub mod export;
pub mod features;
pub mod linalg;
pub mod metrics;
pub mod models;
pub mod nmf;
pub mod nn;
pub mod normal;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod results;
pub mod rng;
pub mod scalar;
pub mod signals;
pub mod special;
pub mod sweep;
#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use scalar::Scalar;
