//! Result files of one experiment: `result.h5` (schema in `docs/results.md`), the tidy
//! `metrics.csv`, and the Markdown tables printed to the terminal. Every file is written to
//! a temporary name in the same folder and renamed when complete, so a crash never leaves a
//! half-written result behind.

pub mod h5;
pub mod paths;
pub mod table;

use crate::error::{Error, Result};
use crate::metrics::{Metrics, METRIC_NAMES};
use ndarray::{Array1, Array2};
use std::io::Write;
use std::path::Path;

/// One evaluated scenario (a row block of the paper's table).
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    /// clean_base | clean_def | robust_base | robust_def
    pub scenario: &'static str,
    /// none | transfer | adaptive | worst (per-sample worst over transfer and adaptive)
    pub protocol: &'static str,
    pub eps: f64,
    pub metrics: Metrics,
    /// Class probabilities for every test point (`n × classes`).
    pub proba: Array2<f32>,
    /// Accuracy of each single defence pass (clean_def only; empty elsewhere).
    pub single_pass_accuracy: Vec<f64>,
    /// Accuracy in each independent scoring repeat (one entry for deterministic rows).
    pub repeat_accuracy: Vec<f64>,
    /// Fraction of points robust in every scoring repeat.
    pub strict_accuracy: f64,
    /// Accuracy at this ε without candidates carried from smaller ε (NaN for clean rows).
    pub fresh_accuracy: f64,
    /// Gradient evaluations the attack spent (0 for clean scenarios).
    pub grad_evals: u64,
    /// Points fooled by each attack loss, in cascade order (`(name, count)`).
    pub fooled_by: Vec<(String, usize)>,
}

impl ScenarioResult {
    /// Group name inside `result.h5`.
    pub fn key(&self) -> String {
        format!("{}_{}_eps{}", self.scenario, self.protocol, self.eps)
    }
}

/// A curve recorded during training.
#[derive(Clone, Debug)]
pub struct Curve {
    pub group: String,
    pub name: String,
    pub values: Vec<f64>,
}

/// Everything `result.h5` holds.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub job_name: String,
    pub config_yaml: String,
    pub seed: u64,
    pub device: String,
    pub threads: usize,
    pub git_revision: String,
    pub version: String,
    pub timings: Vec<(String, f64)>,
    pub labels: Vec<u8>,
    pub test_ids: Vec<u64>,
    pub scenarios: Vec<ScenarioResult>,
    pub nnmf_basis: Option<Array2<f32>>,
    pub nnmf_objective: Vec<f64>,
    pub nnmf_iterations: usize,
    pub nnmf_converged: bool,
    pub image_shape: (usize, usize),
    pub curves: Vec<Curve>,
    /// Named checks of `shared/specs/EVALUATION.md` with pass/fail and a detail line.
    pub checks: Vec<(String, bool, String)>,
    pub feature_dim: usize,
    pub box_kind: String,
}

impl RunResult {
    /// Tidy rows `(scenario, protocol, eps, metric, value)`.
    pub fn metric_rows(&self) -> Vec<(&str, &str, f64, &str, f64)> {
        let mut rows = vec![];
        for s in &self.scenarios {
            for (name, v) in METRIC_NAMES.iter().zip(s.metrics.values()) {
                rows.push((s.scenario, s.protocol, s.eps, *name, v));
            }
        }
        rows
    }

    /// `metrics.csv` text (header `scenario,protocol,eps,metric,value`).
    pub fn metrics_csv(&self) -> String {
        let mut out = String::from("scenario,protocol,eps,metric,value\n");
        for (s, p, e, m, v) in self.metric_rows() {
            out.push_str(&format!("{s},{p},{e},{m},{v:.10}\n"));
        }
        out
    }
}

/// Write bytes to `path` atomically (temp file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = paths::tmp_name(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Write `result.h5` and `metrics.csv` into `dir`.
pub fn write_all(dir: &Path, r: &RunResult) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join(paths::METRICS_CSV), r.metrics_csv().as_bytes())?;
    h5::write(&dir.join(paths::RESULT_H5), r)?;
    Ok(())
}

/// Convert a `Vec<f64>` to an ndarray vector.
pub fn arr1(v: &[f64]) -> Array1<f64> {
    Array1::from(v.to_vec())
}
