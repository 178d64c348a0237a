//! `result.h5` writer (schema documented in `docs/results.md`). Files are created with HDF5
//! file locking disabled (cluster NFS without a lock daemon) under a temporary name and
//! renamed when complete.

use super::{paths, RunResult};
use crate::error::{Error, Result};
use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};
use ndarray::{Array1, Array2, ArrayView, Dimension};
use std::path::Path;

/// Schema version written as the root attribute `schema_version`.
pub const SCHEMA_VERSION: u32 = 1;

fn h5err(path: &Path, e: hdf5::Error) -> Error {
    Error::Results {
        path: path.to_path_buf(),
        msg: format!("hdf5: {e}"),
    }
}

fn vstr(s: &str) -> VarLenUnicode {
    s.replace('\0', " ").parse().expect("NUL bytes removed")
}

fn attr_str(loc: &Location, name: &str, v: &str) -> hdf5::Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&vstr(v))
}

fn attr<T: H5Type>(loc: &Location, name: &str, v: T) -> hdf5::Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&v)
}

fn ds<'a, T: H5Type, D: Dimension>(
    g: &Group,
    name: &str,
    a: impl Into<ArrayView<'a, T, D>>,
) -> hdf5::Result<()> {
    g.new_dataset_builder()
        .with_data(a)
        .create(name)
        .map(|_| ())
}

fn strings(v: &[&str]) -> Array1<VarLenUnicode> {
    v.iter().map(|s| vstr(s)).collect()
}

/// Open (create/truncate) an HDF5 file without file locking.
pub fn create_file(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .create(path)
}

/// Open an HDF5 file read-only without file locking.
pub fn open_file(path: &Path) -> hdf5::Result<hdf5::File> {
    hdf5::File::with_options()
        .with_fapl(|p| p.file_locking(false))
        .open(path)
}

/// Write `r` to `path` atomically.
pub fn write(path: &Path, r: &RunResult) -> Result<()> {
    let tmp = paths::tmp_name(path);
    let res = write_inner(&tmp, r);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(h5err(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn write_inner(path: &Path, r: &RunResult) -> hdf5::Result<()> {
    let f = create_file(path)?;
    attr(&f, "schema_version", SCHEMA_VERSION)?;
    attr_str(&f, "job_name", &r.job_name)?;
    attr_str(&f, "config_yaml", &r.config_yaml)?;
    attr(&f, "seed", r.seed)?;
    attr_str(&f, "device", &r.device)?;
    attr(&f, "threads", r.threads as u64)?;
    attr_str(&f, "git_revision", &r.git_revision)?;
    attr_str(&f, "diffnmf_version", &r.version)?;
    attr_str(&f, "threat_model", "feature")?;
    attr_str(&f, "box", &r.box_kind)?;
    attr(&f, "feature_dim", r.feature_dim as u64)?;
    attr(&f, "complete", true)?;

    let g = f.create_group("timings")?;
    let names: Vec<&str> = r.timings.iter().map(|(n, _)| n.as_str()).collect();
    ds(&g, "stage", &strings(&names))?;
    ds(
        &g,
        "seconds",
        &Array1::from_iter(r.timings.iter().map(|t| t.1)),
    )?;

    let rows = r.metric_rows();
    let g = f.create_group("metrics")?;
    ds(
        &g,
        "scenario",
        &strings(&rows.iter().map(|r| r.0).collect::<Vec<_>>()),
    )?;
    ds(
        &g,
        "protocol",
        &strings(&rows.iter().map(|r| r.1).collect::<Vec<_>>()),
    )?;
    ds(&g, "eps", &Array1::from_iter(rows.iter().map(|r| r.2)))?;
    ds(
        &g,
        "metric",
        &strings(&rows.iter().map(|r| r.3).collect::<Vec<_>>()),
    )?;
    ds(&g, "value", &Array1::from_iter(rows.iter().map(|r| r.4)))?;

    let g = f.create_group("test")?;
    ds(&g, "labels", &Array1::from(r.labels.clone()))?;
    ds(&g, "ids", &Array1::from(r.test_ids.clone()))?;

    let sg = f.create_group("scenarios")?;
    for s in &r.scenarios {
        let g = sg.create_group(&s.key())?;
        attr_str(&g, "scenario", s.scenario)?;
        attr_str(&g, "protocol", s.protocol)?;
        attr(&g, "eps", s.eps)?;
        attr(&g, "grad_evals", s.grad_evals)?;
        ds(&g, "proba", &s.proba)?;
        let pred: Array1<u8> = s
            .proba
            .rows()
            .into_iter()
            .map(|row| crate::metrics::argmax(row.mapv(f64::from).view()) as u8)
            .collect();
        ds(&g, "pred", &pred)?;
        ds(&g, "confusion", &s.metrics.confusion)?;
        ds(
            &g,
            "single_pass_accuracy",
            &Array1::from(s.single_pass_accuracy.clone()),
        )?;
        ds(
            &g,
            "repeat_accuracy",
            &Array1::from(s.repeat_accuracy.clone()),
        )?;
        attr(&g, "strict_accuracy", s.strict_accuracy)?;
        attr(&g, "fresh_accuracy", s.fresh_accuracy)?;
        let names: Vec<&str> = s.fooled_by.iter().map(|(n, _)| n.as_str()).collect();
        ds(&g, "fooled_by_attack", &strings(&names))?;
        ds(
            &g,
            "fooled_count",
            &Array1::from_iter(s.fooled_by.iter().map(|x| x.1 as u64)),
        )?;
    }

    let g = f.create_group("nnmf")?;
    if let Some(w) = &r.nnmf_basis {
        ds(&g, "W", w)?;
    }
    attr(&g, "image_height", r.image_shape.0 as u64)?;
    attr(&g, "image_width", r.image_shape.1 as u64)?;
    attr(&g, "iterations", r.nnmf_iterations as u64)?;
    attr(&g, "converged", r.nnmf_converged)?;
    ds(&g, "objective", &Array1::from(r.nnmf_objective.clone()))?;

    let tg = f.create_group("training")?;
    for c in &r.curves {
        let g = match tg.group(&c.group) {
            Ok(g) => g,
            Err(_) => tg.create_group(&c.group)?,
        };
        ds(&g, &c.name, &Array1::from(c.values.clone()))?;
    }

    let g = f.create_group("checks")?;
    let names: Vec<&str> = r.checks.iter().map(|c| c.0.as_str()).collect();
    let details: Vec<&str> = r.checks.iter().map(|c| c.2.as_str()).collect();
    ds(&g, "name", &strings(&names))?;
    ds(
        &g,
        "passed",
        &Array1::from_iter(r.checks.iter().map(|c| c.1)),
    )?;
    ds(&g, "detail", &strings(&details))?;
    f.flush()?;
    Ok(())
}

/// One tidy metrics row: `(scenario, protocol, eps, metric, value)`.
pub type MetricRow = (String, String, f64, String, f64);

/// Read back the tidy metrics table of a `result.h5` (used by tests and aggregation).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>> {
    let inner = || -> hdf5::Result<Vec<MetricRow>> {
        let f = open_file(path)?;
        let g = f.group("metrics")?;
        let sc = g.dataset("scenario")?.read_1d::<VarLenUnicode>()?;
        let pr = g.dataset("protocol")?.read_1d::<VarLenUnicode>()?;
        let ep = g.dataset("eps")?.read_1d::<f64>()?;
        let me = g.dataset("metric")?.read_1d::<VarLenUnicode>()?;
        let va = g.dataset("value")?.read_1d::<f64>()?;
        Ok((0..va.len())
            .map(|i| {
                (
                    sc[i].to_string(),
                    pr[i].to_string(),
                    ep[i],
                    me[i].to_string(),
                    va[i],
                )
            })
            .collect())
    };
    inner().map_err(|e| h5err(path, e))
}

/// Read a 2-D f32 dataset (e.g. `nnmf/W`).
pub fn read_f32_2d(path: &Path, name: &str) -> Result<Array2<f32>> {
    let inner =
        || -> hdf5::Result<Array2<f32>> { open_file(path)?.dataset(name)?.read_2d::<f32>() };
    inner().map_err(|e| h5err(path, e))
}
