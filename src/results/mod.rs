//! Result files of one experiment: `result.h5` (schema in `docs/results.md`), the tidy
//! `metrics.csv`, the Markdown tables printed to the terminal (`tables.md`) and the trained
//! models (`models.h5`, [`crate::models`]), plus the crate's atomic file writer
//! [`write_atomic`].
//!
//! # One completeness marker
//!
//! `result.h5` is the commit point of an output folder: **when `result.h5` exists, the
//! `metrics.csv` and `tables.md` beside it are from the same run**, and a run is complete
//! iff its `result.h5` exists (and passes [`h5::check_complete`]); a `models.h5` beside it
//! is from the same run too. [`write_all`] keeps that rule:
//!
//! 1. every file is first written to its temporary sibling (`.<name>.tmp.<host>.<pid>`,
//!    [`paths::tmp_name`]) and fsynced — `metrics.csv`, `tables.md`, `models.h5`, then
//!    `result.h5` (HDF5 bytes are built in memory before any of this, see [`h5`]);
//! 2. only when all temporaries are complete, an older `result.h5` is removed (the folder
//!    is "uncommitted"), the other files are renamed into place, the folder is
//!    fsynced, and `result.h5` is renamed last.
//!
//! A full disk, an I/O error or a kill during step 1 leaves the previous output set untouched
//! (on an error the temporaries are removed; those of a killed process are removed by the
//! next run, [`paths::sweep_stale_tmp`]); one during step 2 leaves no `result.h5`, i.e. a run
//! that is not done and is redone. Nothing half-written is ever visible under a final name.

pub mod certified;
pub mod h5;
pub mod names;
pub mod paths;
pub mod table;

pub use names::{Protocol, Scenario};

use crate::error::{Error, Result};
use crate::metrics::{Metrics, METRIC_NAMES};
use ndarray::{Array1, Array2};
use std::io::Write;
use std::path::{Path, PathBuf};

/// One evaluated scenario (a row block of the paper's table).
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub protocol: Protocol,
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
        scenario_key(self.scenario, self.protocol, self.eps)
    }
}

/// The `result.h5` group of a row: `/scenarios/<scenario>_<protocol>_eps<ε>`.
pub fn scenario_key(scenario: Scenario, protocol: Protocol, eps: f64) -> String {
    format!("{scenario}_{protocol}_eps{eps}")
}

/// A curve recorded during training.
#[derive(Clone, Debug)]
pub struct Curve {
    pub group: String,
    pub name: String,
    pub values: Vec<f64>,
}

/// The NNMF stage as `result.h5` records it (`/nnmf`); empty when the run has no NNMF
/// features.
#[derive(Clone, Debug, Default)]
pub struct NnmfFit {
    pub basis: Option<Array2<f32>>,
    pub objective: Vec<f64>,
    pub iterations: usize,
    pub converged: bool,
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
    /// Content fingerprint of the data the run loaded ([`crate::data::fingerprint`]).
    pub data_content: String,
    pub timings: Vec<Timing>,
    pub labels: Vec<u8>,
    pub test_ids: Vec<u64>,
    pub scenarios: Vec<ScenarioResult>,
    pub nnmf: NnmfFit,
    pub image_shape: (usize, usize),
    pub curves: Vec<Curve>,
    /// Named checks of `docs/evaluation.md` with pass/fail and a detail line.
    pub checks: Vec<Check>,
    pub feature_dim: usize,
    pub box_kind: String,
    /// What the attacks perturbed (`attack.threat`): the feature vector or the image.
    pub threat: crate::config::Threat,
    /// Pixel threat model: adversarial images of the first evaluated points.
    pub adversarial: Option<AdversarialImages>,
    /// `certify.enabled`: certified radii and smoothed predictions (`/certify`).
    pub certification: Option<crate::certify::curve::Certification>,
}

/// The adversarial images of the first few evaluated points at the largest ε (pixel
/// threat model): each point's clean image, its Robust_Base candidate and its
/// robust_def/worst candidate (rows of `height·width` pixels), with the predictions
/// (scoring repeat 0) the reported rows recorded for them.
#[derive(Clone, Debug, PartialEq)]
pub struct AdversarialImages {
    pub eps: f64,
    pub ids: Vec<u64>,
    pub labels: Vec<u8>,
    pub clean: Array2<f32>,
    pub base: Array2<f32>,
    pub defence: Array2<f32>,
    /// Base model's prediction of the clean image.
    pub clean_base_pred: Vec<u8>,
    /// Defence's prediction of the clean image.
    pub clean_def_pred: Vec<u8>,
    /// Base model's prediction of `base`.
    pub base_pred: Vec<u8>,
    /// Defence's prediction of `defence`.
    pub defence_pred: Vec<u8>,
}

/// One named sanity check of `docs/evaluation.md`: pass/fail and a detail line.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            passed,
            detail: detail.into(),
        }
    }
}

/// Wall-clock seconds of one named stage of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub stage: String,
    pub seconds: f64,
}

impl RunResult {
    /// Seconds of the stage `name`, if it was timed.
    /// The evaluated points' labels as class indices.
    pub fn label_indices(&self) -> Vec<usize> {
        self.labels.iter().map(|&l| usize::from(l)).collect()
    }

    pub fn timing(&self, name: &str) -> Option<f64> {
        self.timings
            .iter()
            .find(|t| t.stage == name)
            .map(|t| t.seconds)
    }

    /// Tidy rows `(scenario, protocol, eps, metric, value)`.
    pub fn metric_rows(&self) -> Vec<(Scenario, Protocol, f64, &str, f64)> {
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

/// The error of a failed write of `path`: a full disk (ENOSPC, EDQUOT) says what to do;
/// other I/O errors are [`Error::Io`].
pub fn write_error(path: &Path, e: std::io::Error) -> Error {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    if matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT)) {
        Error::Results {
            path: path.to_path_buf(),
            msg: format!(
                "writing failed: {e}; nothing partial was kept — free space on that file system (or write elsewhere with --out) and run again (a sweep continues with --resume)"
            ),
        }
    } else {
        Error::io(path, e)
    }
}

/// Write `bytes` to the temporary sibling of `path` ([`paths::tmp_name`]) and fsync it.
/// Returns the temporary's path; on an error the temporary is removed and the error names
/// `path`.
pub fn write_tmp(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = paths::tmp_name(path);
    let res = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    match res {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(write_error(path, e))
        }
    }
}

/// Rename the temporary `tmp` to `path`; on an error the temporary is removed.
fn commit(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        write_error(path, e)
    })
}

/// fsync a folder so that the renames in it are durable (best effort: some file systems
/// do not support it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write bytes to `path` atomically (temp file in the same folder, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_tmp(path, bytes)?;
    commit(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Write `metrics.csv`, `tables.md`, `models.h5` (the bytes of `models`, when given) and
/// `result.h5` into `dir` with `result.h5` as the commit point (the rule and its steps are
/// in the module doc).
pub fn write_all(dir: &Path, r: &RunResult, models: Option<Vec<u8>>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let h5_path = dir.join(paths::RESULT_H5);
    let image = h5::result_image(&h5_path, r)?;
    let mut files: Vec<(PathBuf, Vec<u8>)> = vec![
        (dir.join(paths::METRICS_CSV), r.metrics_csv().into_bytes()),
        (dir.join(paths::TABLES_MD), table::markdown(r).into_bytes()),
    ];
    let certify_csv = dir.join(paths::CERTIFY_CSV);
    if let Some(c) = certified::csv(r) {
        files.push((certify_csv.clone(), c.into_bytes()));
    }
    if let Some(m) = models {
        files.push((dir.join(paths::MODELS_H5), m));
    }
    files.push((h5_path.clone(), image));
    // 1. every temporary, complete and fsynced, before any final name changes.
    let mut tmps: Vec<PathBuf> = vec![];
    let remove = |tmps: &[PathBuf]| {
        for t in tmps {
            let _ = std::fs::remove_file(t);
        }
    };
    for (path, bytes) in &files {
        match write_tmp(path, bytes) {
            Ok(t) => tmps.push(t),
            Err(e) => {
                remove(&tmps);
                return Err(e);
            }
        }
    }
    // 2. uncommit, rename the others, commit — never interrupted by a signal's clean-up
    // (it waits for this lock; if it holds it already, this waits until the process ends).
    let _commit = crate::signals::commit_lock();
    match std::fs::remove_file(&h5_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            remove(&tmps);
            return Err(Error::io(&h5_path, e));
        }
    }
    // An uncertified run leaves no certify.csv of an earlier certified one beside it.
    if r.certification.is_none() {
        let _ = std::fs::remove_file(&certify_csv);
    }
    for (i, ((path, _), tmp)) in files.iter().zip(&tmps).enumerate() {
        if path == &h5_path {
            sync_dir(dir);
        }
        if let Err(e) = commit(tmp, path) {
            remove(&tmps[i + 1..]);
            return Err(e);
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Convert a `Vec<f64>` to an ndarray vector.
pub fn arr1(v: &[f64]) -> Array1<f64> {
    Array1::from(v.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn result(seed: u64) -> RunResult {
        let proba = array![[0.9f32, 0.1], [0.2, 0.8], [0.6, 0.4]];
        let y = [0usize, 1, 1];
        let metrics = crate::metrics::compute(&y, proba.mapv(f64::from).view());
        let sc = |scenario, protocol, eps| ScenarioResult {
            scenario,
            protocol,
            eps,
            metrics: metrics.clone(),
            proba: proba.clone(),
            single_pass_accuracy: vec![],
            repeat_accuracy: vec![metrics.accuracy],
            strict_accuracy: metrics.accuracy,
            fresh_accuracy: f64::NAN,
            grad_evals: 0,
            fooled_by: vec![("apgd-ce".into(), 1)],
        };
        RunResult {
            job_name: "unit".into(),
            config_yaml: format!("seed: {seed}\n"),
            seed,
            device: "cpu".into(),
            threads: 1,
            git_revision: "test".into(),
            data_content: "idx:test".into(),
            version: "0".into(),
            timings: vec![Timing {
                stage: "total".into(),
                seconds: 0.1,
            }],
            labels: vec![0, 1, 1],
            test_ids: vec![3, 4, 5],
            scenarios: vec![
                sc(Scenario::CleanBase, Protocol::None, 0.0),
                sc(Scenario::RobustBase, Protocol::None, 0.5),
                sc(Scenario::RobustDef, Protocol::Worst, 0.5),
            ],
            nnmf: NnmfFit {
                basis: Some(Array2::from_elem((2, 4), 0.25)),
                objective: vec![2.0, 1.0],
                iterations: 2,
                converged: true,
            },
            image_shape: (2, 2),
            curves: vec![Curve {
                group: "cnn".into(),
                name: "train_loss".into(),
                values: vec![1.0, 0.5],
            }],
            checks: vec![Check::new("base_reaches_zero", true, "ok")],
            feature_dim: 4,
            box_kind: "none".into(),
            threat: crate::config::Threat::Feature,
            adversarial: None,
            certification: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_all_writes_the_three_files_and_replaces_a_set_whole() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("r");
        write_all(&out, &result(1), None).unwrap();
        assert_eq!(names(&out), ["metrics.csv", "result.h5", "tables.md"]);
        h5::check_complete(&out.join(paths::RESULT_H5)).unwrap();
        let csv = std::fs::read_to_string(out.join(paths::METRICS_CSV)).unwrap();
        assert_eq!(csv, result(1).metrics_csv());
        let md = std::fs::read_to_string(out.join(paths::TABLES_MD)).unwrap();
        assert_eq!(md, table::markdown(&result(1)));
        let rows = h5::read_metrics(&out.join(paths::RESULT_H5)).unwrap();
        assert_eq!(rows.len(), result(1).metric_rows().len());
        write_all(&out, &result(2), None).unwrap();
        assert_eq!(names(&out), ["metrics.csv", "result.h5", "tables.md"]);
        let f = h5::open_file(&out.join(paths::RESULT_H5)).unwrap();
        assert_eq!(f.attr("seed").unwrap().read_scalar::<u64>().unwrap(), 2);
    }

    #[test]
    fn a_failed_write_leaves_the_previous_set_and_no_temporary() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("r");
        write_all(&out, &result(1), None).unwrap();
        let before: Vec<Vec<u8>> = ["metrics.csv", "result.h5", "tables.md"]
            .iter()
            .map(|n| std::fs::read(out.join(n)).unwrap())
            .collect();
        // The temporary of result.h5 (the last one) cannot be created — a folder is in its
        // way —, so the write fails after the temporaries of metrics.csv and tables.md were
        // written: nothing final may have changed and those temporaries must be gone.
        let blocker = paths::tmp_name(&out.join(paths::RESULT_H5));
        std::fs::create_dir(&blocker).unwrap();
        let e = write_all(&out, &result(2), None).unwrap_err().to_string();
        assert!(e.contains("result.h5"), "{e}");
        std::fs::remove_dir(&blocker).unwrap();
        assert_eq!(names(&out), ["metrics.csv", "result.h5", "tables.md"]);
        let after: Vec<Vec<u8>> = ["metrics.csv", "result.h5", "tables.md"]
            .iter()
            .map(|n| std::fs::read(out.join(n)).unwrap())
            .collect();
        assert!(before == after, "the previous output set was changed");
    }

    #[test]
    fn a_full_disk_error_says_what_to_do() {
        let e = write_error(
            Path::new("/x/result.h5"),
            std::io::Error::from_raw_os_error(28),
        )
        .to_string();
        assert!(
            e.contains("/x/result.h5") && e.contains("No space left"),
            "{e}"
        );
        assert!(e.contains("free space"), "{e}");
    }
}
