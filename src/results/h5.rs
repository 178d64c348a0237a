//! HDF5 files of the crate: the `result.h5` writer (schema in `docs/results.md`), the reader
//! helpers, the cheap completeness check [`check_complete`], and the one way this crate
//! writes any HDF5 file, [`write_file`] / [`build_image`] (also used by the stage cache).
//!
//! # Why every HDF5 file is built in memory
//!
//! HDF5 (the bundled 2.x C library) crashes the process after a write fails on a full disk:
//! small raw data sits in the dataset's sieve buffer and reaches the disk only when the
//! dataset is closed; if that write fails (ENOSPC), `H5D_close` frees the dataset anyway but
//! returns an error, so `H5I__dec_ref` keeps the dataset's ID registered with a dangling
//! pointer (the Rust handle's `Drop` cannot report the failure). The next `H5Fflush` or
//! `H5Fclose` of *any* file walks every registered dataset (`H5D_flush_all` →
//! `H5D__flush_all_cb`) and dereferences it: SIGSEGV. Closing handles in another order does
//! not help (the close that fails is what poisons the library's ID table, for the rest of
//! the process — in a sweep, for every later cell).
//!
//! So HDF5 never performs disk I/O on write here: a file is created with the *core* driver
//! without a backing store, filled, flushed (into memory), and its file image
//! (`H5Fget_file_image`) is written with [`crate::results::write_atomic`] (temporary
//! sibling, fsync, rename). A full disk or any other I/O error is then a plain
//! `std::io::Error` from `write`/`fsync`, reported as a typed [`Error`] naming the file, and
//! no partial file becomes visible. Reading opens files from disk as before
//! ([`open_file`]). File locking stays disabled (cluster NFS without a lock daemon).

use super::{names, AdversarialImages, Protocol, RunResult, Scenario, ScenarioResult};
use crate::error::{Error, Result};
use hdf5::types::VarLenUnicode;
use hdf5::{Group, H5Type, Location};
use ndarray::{Array1, Array2, ArrayView, Dimension};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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

pub(crate) fn attr_str(loc: &Location, name: &str, v: &str) -> hdf5::Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&vstr(v))
}

pub(crate) fn attr<T: H5Type>(loc: &Location, name: &str, v: T) -> hdf5::Result<()> {
    loc.new_attr::<T>().create(name)?.write_scalar(&v)
}

/// Training curves as `<group>/<curve>/<name>` datasets under `g` (result.h5 `training/`,
/// models.h5 `curves/`).
pub(crate) fn write_curves(g: &Group, curves: &[super::Curve]) -> hdf5::Result<()> {
    for c in curves {
        let sub = match g.group(&c.group) {
            Ok(s) => s,
            Err(_) => g.create_group(&c.group)?,
        };
        ds(&sub, &c.name, &Array1::from(c.values.clone()))?;
    }
    Ok(())
}

pub(crate) fn ds<'a, T: H5Type, D: Dimension>(
    g: &Group,
    name: &str,
    a: impl Into<ArrayView<'a, T, D>>,
) -> hdf5::Result<()> {
    g.new_dataset_builder()
        .with_data(a)
        .create(name)
        .map(|_| ())
}

pub(crate) fn strings(v: &[&str]) -> Array1<VarLenUnicode> {
    v.iter().map(|s| vstr(s)).collect()
}

/// Open (create/truncate) an HDF5 file *on disk* without file locking. Prefer
/// [`write_file`]: a disk-backed HDF5 file crashes the process when a write fails on a full
/// disk (see the module doc).
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

// `H5Fget_file_image` is not wrapped by the `hdf5` crate; the symbol is in the HDF5 library
// that `hdf5-metno-sys` links statically. `hid_t` is `i64` since HDF5 1.10 (the argument
// below is `Object::id()`, so a different type would not compile).
unsafe extern "C" {
    fn H5Fget_file_image(file_id: i64, buf_ptr: *mut std::ffi::c_void, buf_len: usize) -> isize;
}

/// The bytes of an open (flushed) file.
fn file_image(f: &hdf5::File) -> hdf5::Result<Vec<u8>> {
    hdf5::sync::sync(|| {
        // SAFETY: a null buffer asks for the size only; the second call writes at most
        // `buf.len()` bytes into `buf`. The library lock is held (`sync`).
        let n = hdf5::h5check(unsafe { H5Fget_file_image(f.id(), std::ptr::null_mut(), 0) })?;
        let mut buf = vec![0u8; n as usize];
        let m = hdf5::h5check(unsafe {
            H5Fget_file_image(f.id(), buf.as_mut_ptr().cast(), buf.len())
        })?;
        buf.truncate(m as usize);
        Ok(buf)
    })
}

static MEM_FILES: AtomicU64 = AtomicU64::new(0);

/// Build an HDF5 file in memory (core driver, no backing store: HDF5 touches no disk) with
/// `fill`, and return its bytes. `path` is the file the bytes are meant for; it only names
/// errors.
pub fn build_image(
    path: &Path,
    fill: impl FnOnce(&hdf5::File) -> hdf5::Result<()>,
) -> Result<Vec<u8>> {
    // A unique name per image: HDF5 refuses to create a file whose name is already open.
    let name = format!(
        "diffnmf-memory-{}-{}.h5",
        std::process::id(),
        MEM_FILES.fetch_add(1, Ordering::Relaxed)
    );
    let inner = || -> hdf5::Result<Vec<u8>> {
        let f = hdf5::File::with_options()
            .with_fapl(|p| p.core_filebacked(false).file_locking(false))
            .create(&name)?;
        fill(&f)?;
        f.flush()?;
        let bytes = file_image(&f)?;
        f.close()?;
        Ok(bytes)
    };
    inner().map_err(|e| h5err(path, e))
}

/// Build an HDF5 file in memory with `fill` and write it to `path` atomically (temporary
/// sibling, fsync, rename); a failed write removes the temporary and names `path`.
pub fn write_file(path: &Path, fill: impl FnOnce(&hdf5::File) -> hdf5::Result<()>) -> Result<()> {
    let bytes = build_image(path, fill)?;
    super::write_atomic(path, &bytes)
}

/// The bytes of `result.h5` for `r` (built in memory; `path` names errors).
pub fn result_image(path: &Path, r: &RunResult) -> Result<Vec<u8>> {
    build_image(path, |f| write_inner(f, r))
}

/// Write `r` to `path` atomically.
pub fn write(path: &Path, r: &RunResult) -> Result<()> {
    super::write_atomic(path, &result_image(path, r)?)
}

/// The 8-byte signature every HDF5 file starts with (without a user block).
const HDF5_SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Cheap completeness check of a `result.h5`: it opens as HDF5 and its root attributes say
/// `complete = true` and `schema_version` = [`SCHEMA_VERSION`]. The error names the file and
/// says what is wrong (empty, not HDF5, truncated or damaged, incomplete, other schema).
pub fn check_complete(path: &Path) -> Result<()> {
    let bad = |msg: String| Error::Results {
        path: path.to_path_buf(),
        msg,
    };
    const REDO: &str = "delete it and run again (`diffnmf sweep … --resume` redoes such cells)";
    let f = open_diagnosed(path, "a complete result", REDO)?;
    let complete = f
        .attr("complete")
        .and_then(|a| a.read_scalar::<bool>())
        .map_err(|_| {
            bad(format!(
                "incomplete result: no readable root attribute `complete`; {REDO}"
            ))
        })?;
    if !complete {
        return Err(bad(format!(
            "incomplete result: root attribute `complete` is false; {REDO}"
        )));
    }
    let version = f
        .attr("schema_version")
        .and_then(|a| a.read_scalar::<u32>())
        .map_err(|_| {
            bad(format!(
                "incomplete result: no readable root attribute `schema_version`; {REDO}"
            ))
        })?;
    if version != SCHEMA_VERSION {
        return Err(bad(format!(
            "schema_version {version}, but this diffnmf writes and reads version {SCHEMA_VERSION}; rerun the experiment with this version"
        )));
    }
    Ok(())
}

/// Open an HDF5 file read-only; when that fails, the error names the file and says whether
/// it is empty, not HDF5 at all, or truncated/damaged, followed by `what` (e.g. "a complete
/// result") and the fix `redo`.
pub fn open_diagnosed(path: &Path, what: &str, redo: &str) -> Result<hdf5::File> {
    let e = match open_file(path) {
        Ok(f) => return Ok(f),
        Err(e) => e,
    };
    use std::io::Read;
    let mut head = [0u8; 8];
    let got = std::fs::File::open(path)
        .and_then(|mut h| h.read(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Err(Error::Results {
        path: path.to_path_buf(),
        msg: if len == 0 {
            format!("empty file (0 bytes), not {what}; {redo}")
        } else if got < 8 || &head != HDF5_SIGNATURE {
            format!("not an HDF5 file (no HDF5 signature, {len} bytes); {redo}")
        } else {
            format!("truncated or damaged HDF5 file ({len} bytes; hdf5: {e}); {redo}")
        },
    })
}

/// Fill an (in-memory) file with the `result.h5` schema (group handles are kept open to the
/// end).
fn write_inner(f: &hdf5::File, r: &RunResult) -> hdf5::Result<()> {
    write_root(f, r)?;
    let timings = f.create_group("timings")?;
    write_timings(&timings, r)?;
    let metrics = f.create_group("metrics")?;
    write_metrics(&metrics, r)?;

    let test = f.create_group("test")?;
    ds(&test, "labels", &Array1::from(r.labels.clone()))?;
    ds(&test, "ids", &Array1::from(r.test_ids.clone()))?;

    let sg = f.create_group("scenarios")?;
    for s in &r.scenarios {
        let g = sg.create_group(&s.key())?;
        write_scenario(&g, s)?;
    }

    let nnmf = f.create_group("nnmf")?;
    write_nnmf(&nnmf, r)?;
    write_curves(&f.create_group("training")?, &r.curves)?;
    let checks = f.create_group("checks")?;
    write_checks(&checks, r)?;
    if let Some(a) = &r.adversarial {
        write_adversarial(&f.create_group("adversarial")?, a, r.image_shape)?;
    }
    if let Some(c) = &r.certification {
        super::certified::write_h5(&f.create_group("certify")?, c, &r.label_indices())?;
    }
    Ok(())
}

/// `/adversarial` (pixel threat model): images as `n × height × width`.
fn write_adversarial(
    g: &Group,
    a: &super::AdversarialImages,
    (h, w): (usize, usize),
) -> hdf5::Result<()> {
    attr(g, "eps", a.eps)?;
    attr(g, "image_height", h as u64)?;
    attr(g, "image_width", w as u64)?;
    ds(g, "ids", &Array1::from(a.ids.clone()))?;
    ds(g, "labels", &Array1::from(a.labels.clone()))?;
    for (name, x) in [
        ("clean", &a.clean),
        ("images", &a.defence),
        ("base_images", &a.base),
    ] {
        let img = x
            .to_shape((x.nrows(), h, w))
            .map_err(|e| hdf5::Error::from(e.to_string().as_str()))?;
        ds(g, name, img.view())?;
    }
    for (name, p) in [
        ("clean_base_pred", &a.clean_base_pred),
        ("clean_def_pred", &a.clean_def_pred),
        ("base_pred", &a.base_pred),
        ("defence_pred", &a.defence_pred),
    ] {
        ds(g, name, &Array1::from(p.clone()))?;
    }
    Ok(())
}

/// Root attributes: schema version, provenance, threat model, box and feature width.
fn write_root(f: &hdf5::File, r: &RunResult) -> hdf5::Result<()> {
    attr(f, "schema_version", SCHEMA_VERSION)?;
    attr_str(f, "job_name", &r.job_name)?;
    attr_str(f, "config_yaml", &r.config_yaml)?;
    attr(f, "seed", r.seed)?;
    attr_str(f, "device", &r.device)?;
    attr(f, "threads", r.threads as u64)?;
    attr_str(f, "git_revision", &r.git_revision)?;
    attr_str(f, "diffnmf_version", &r.version)?;
    attr_str(f, "data_content", &r.data_content)?;
    attr_str(f, "threat_model", r.threat.name())?;
    attr_str(f, "box", &r.box_kind)?;
    attr(f, "feature_dim", r.feature_dim as u64)?;
    attr(f, "complete", true)
}

/// `/timings`: stage names and seconds.
fn write_timings(g: &Group, r: &RunResult) -> hdf5::Result<()> {
    let names: Vec<&str> = r.timings.iter().map(|t| t.stage.as_str()).collect();
    ds(g, "stage", &strings(&names))?;
    ds(
        g,
        "seconds",
        &Array1::from_iter(r.timings.iter().map(|t| t.seconds)),
    )
}

/// `/metrics`: the tidy table, one column per dataset.
fn write_metrics(g: &Group, r: &RunResult) -> hdf5::Result<()> {
    let rows = r.metric_rows();
    ds(
        g,
        "scenario",
        &strings(&rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>()),
    )?;
    ds(
        g,
        "protocol",
        &strings(&rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>()),
    )?;
    ds(g, "eps", &Array1::from_iter(rows.iter().map(|r| r.2)))?;
    ds(
        g,
        "metric",
        &strings(&rows.iter().map(|r| r.3).collect::<Vec<_>>()),
    )?;
    ds(g, "value", &Array1::from_iter(rows.iter().map(|r| r.4)))
}

/// `/scenarios/<key>`: one scenario's probabilities, predictions, confusion matrix,
/// accuracies and attack tallies.
fn write_scenario(g: &Group, s: &ScenarioResult) -> hdf5::Result<()> {
    attr_str(g, "scenario", s.scenario.as_str())?;
    attr_str(g, "protocol", s.protocol.as_str())?;
    attr(g, "eps", s.eps)?;
    attr(g, "grad_evals", s.grad_evals)?;
    ds(g, "proba", &s.proba)?;
    let pred: Array1<u8> = s
        .proba
        .rows()
        .into_iter()
        .map(|row| crate::metrics::argmax(row.mapv(f64::from).view()) as u8)
        .collect();
    ds(g, "pred", &pred)?;
    ds(g, "confusion", &s.metrics.confusion)?;
    ds(
        g,
        "single_pass_accuracy",
        &Array1::from(s.single_pass_accuracy.clone()),
    )?;
    ds(
        g,
        "repeat_accuracy",
        &Array1::from(s.repeat_accuracy.clone()),
    )?;
    attr(g, "strict_accuracy", s.strict_accuracy)?;
    attr(g, "fresh_accuracy", s.fresh_accuracy)?;
    let names: Vec<&str> = s.fooled_by.iter().map(|(n, _)| n.as_str()).collect();
    ds(g, "fooled_by_attack", &strings(&names))?;
    ds(
        g,
        "fooled_count",
        &Array1::from_iter(s.fooled_by.iter().map(|x| x.1 as u64)),
    )
}

/// `/nnmf`: the basis (when the run has one), image shape and fit history.
fn write_nnmf(g: &Group, r: &RunResult) -> hdf5::Result<()> {
    if let Some(w) = &r.nnmf.basis {
        ds(g, "W", w)?;
    }
    attr(g, "image_height", r.image_shape.0 as u64)?;
    attr(g, "image_width", r.image_shape.1 as u64)?;
    attr(g, "iterations", r.nnmf.iterations as u64)?;
    attr(g, "converged", r.nnmf.converged)?;
    ds(g, "objective", &Array1::from(r.nnmf.objective.clone()))
}

/// `/checks`: name, pass flag and detail of every self-check.
fn write_checks(g: &Group, r: &RunResult) -> hdf5::Result<()> {
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    let details: Vec<&str> = r.checks.iter().map(|c| c.detail.as_str()).collect();
    ds(g, "name", &strings(&names))?;
    ds(
        g,
        "passed",
        &Array1::from_iter(r.checks.iter().map(|c| c.passed)),
    )?;
    ds(g, "detail", &strings(&details))
}

/// One tidy metrics row: `(scenario, protocol, eps, metric, value)`.
pub type MetricRow = (Scenario, Protocol, f64, String, f64);

/// Read back the tidy metrics table of a `result.h5` (used by tests and aggregation).
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>> {
    type Columns = (Vec<String>, Vec<String>, Vec<f64>, Vec<String>, Vec<f64>);
    let inner = || -> hdf5::Result<Columns> {
        let f = open_file(path)?;
        let g = f.group("metrics")?;
        let text = |name: &str| -> hdf5::Result<Vec<String>> {
            let v = g.dataset(name)?.read_1d::<VarLenUnicode>()?;
            Ok(v.iter().map(|s| s.to_string()).collect())
        };
        let num = |name: &str| -> hdf5::Result<Vec<f64>> {
            Ok(g.dataset(name)?.read_1d::<f64>()?.to_vec())
        };
        Ok((
            text("scenario")?,
            text("protocol")?,
            num("eps")?,
            text("metric")?,
            num("value")?,
        ))
    };
    let (sc, pr, ep, me, va) = inner().map_err(|e| h5err(path, e))?;
    let bad = |e: names::UnknownName| Error::Results {
        path: path.to_path_buf(),
        msg: format!("/metrics: {e}; the file was not written by this version of diffnmf"),
    };
    if [sc.len(), pr.len(), ep.len(), me.len()]
        .iter()
        .any(|&n| n != va.len())
    {
        return Err(Error::Results {
            path: path.to_path_buf(),
            msg: "/metrics: the columns have different lengths (a corrupt file); rerun the cell"
                .into(),
        });
    }
    (0..va.len())
        .map(|i| {
            Ok((
                sc[i].parse().map_err(bad)?,
                pr[i].parse().map_err(bad)?,
                ep[i],
                me[i].clone(),
                va[i],
            ))
        })
        .collect()
}

/// `/adversarial` of a pixel-space `result.h5` with the image shape (`None` when the run
/// stored none: the feature threat model, or no ε > 0).
pub fn read_adversarial(path: &Path) -> Result<Option<(AdversarialImages, (usize, usize))>> {
    let inner = || -> hdf5::Result<Option<(AdversarialImages, (usize, usize))>> {
        let f = open_file(path)?;
        let Ok(g) = f.group("adversarial") else {
            return Ok(None);
        };
        let dim =
            |a: &str| -> hdf5::Result<usize> { Ok(g.attr(a)?.read_scalar::<u64>()? as usize) };
        let (h, w) = (dim("image_height")?, dim("image_width")?);
        let img = |n: &str| -> hdf5::Result<Array2<f32>> {
            let v = g.dataset(n)?.read_raw::<f32>()?;
            let rows = v.len() / (h * w).max(1);
            Array2::from_shape_vec((rows, h * w), v).map_err(|e| e.to_string().as_str().into())
        };
        let u8s = |n: &str| g.dataset(n)?.read_raw::<u8>();
        let a = AdversarialImages {
            eps: g.attr("eps")?.read_scalar::<f64>()?,
            ids: g.dataset("ids")?.read_raw::<u64>()?,
            labels: u8s("labels")?,
            clean: img("clean")?,
            base: img("base_images")?,
            defence: img("images")?,
            clean_base_pred: u8s("clean_base_pred")?,
            clean_def_pred: u8s("clean_def_pred")?,
            base_pred: u8s("base_pred")?,
            defence_pred: u8s("defence_pred")?,
        };
        let n = a.ids.len();
        let same = [
            a.labels.len(),
            a.clean.nrows(),
            a.base.nrows(),
            a.defence.nrows(),
        ]
        .iter()
        .chain(
            [
                &a.clean_base_pred,
                &a.clean_def_pred,
                &a.base_pred,
                &a.defence_pred,
            ]
            .map(|v| v.len())
            .iter(),
        )
        .all(|&m| m == n);
        if !same {
            return Err("/adversarial: datasets of different lengths (a corrupt file)".into());
        }
        Ok(Some((a, (h, w))))
    };
    inner().map_err(|e| h5err(path, e))
}

/// The `threat_model` root attribute of a `result.h5` (`None` if unreadable or unknown).
pub fn read_threat(path: &Path) -> Option<crate::config::Threat> {
    let f = open_file(path).ok()?;
    let v = f
        .attr("threat_model")
        .ok()?
        .read_scalar::<VarLenUnicode>()
        .ok()?;
    crate::config::Threat::try_from(v.to_string()).ok()
}

/// Read a 1-D u64 dataset (e.g. `test/ids`).
pub fn read_u64_1d(path: &Path, name: &str) -> Result<Vec<u64>> {
    let inner = || -> hdf5::Result<Vec<u64>> { open_file(path)?.dataset(name)?.read_raw::<u64>() };
    inner().map_err(|e| h5err(path, e))
}

/// Read a 2-D f32 dataset (e.g. `nnmf/W`).
pub fn read_f32_2d(path: &Path, name: &str) -> Result<Array2<f32>> {
    let inner =
        || -> hdf5::Result<Array2<f32>> { open_file(path)?.dataset(name)?.read_2d::<f32>() };
    inner().map_err(|e| h5err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal file with the completeness attributes.
    fn marker_file(path: &Path, complete: bool, version: u32) {
        write_file(path, |f| {
            attr(f, "schema_version", version)?;
            attr(f, "complete", complete)?;
            let g = f.create_group("metrics")?;
            ds(&g, "value", &Array1::from(vec![0.5f64; 64]))
        })
        .unwrap();
    }

    fn err(path: &Path) -> String {
        check_complete(path).unwrap_err().to_string()
    }

    #[test]
    fn images_are_built_in_memory_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.h5");
        marker_file(&p, true, SCHEMA_VERSION);
        check_complete(&p).unwrap();
        let v = open_file(&p)
            .unwrap()
            .dataset("metrics/value")
            .unwrap()
            .read_raw::<f64>()
            .unwrap();
        assert_eq!(v, vec![0.5; 64]);
        // Nothing but the file itself: no temporary, no disk file for the in-memory image.
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["x.h5".to_string()]);
        let cwd_leftovers = std::fs::read_dir(".")
            .unwrap()
            .filter(|e| {
                let n = e.as_ref().unwrap().file_name();
                n.to_string_lossy().starts_with("diffnmf-memory-")
            })
            .count();
        assert_eq!(cwd_leftovers, 0);
    }

    #[test]
    fn check_complete_names_what_is_wrong() {
        let d = tempfile::tempdir().unwrap();
        let good = d.path().join("good.h5");
        marker_file(&good, true, SCHEMA_VERSION);
        let bytes = std::fs::read(&good).unwrap();

        let truncated = d.path().join("truncated.h5");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let e = err(&truncated);
        assert!(e.contains("truncated.h5") && e.contains("truncated"), "{e}");

        let garbage = d.path().join("garbage.h5");
        std::fs::write(
            &garbage,
            b"this is not an HDF5 file at all, just text\n".repeat(20),
        )
        .unwrap();
        let e = err(&garbage);
        assert!(
            e.contains("garbage.h5") && e.contains("not an HDF5 file"),
            "{e}"
        );

        let empty = d.path().join("empty.h5");
        std::fs::write(&empty, b"").unwrap();
        let e = err(&empty);
        assert!(e.contains("empty.h5") && e.contains("empty file"), "{e}");

        let incomplete = d.path().join("incomplete.h5");
        marker_file(&incomplete, false, SCHEMA_VERSION);
        let e = err(&incomplete);
        assert!(
            e.contains("incomplete.h5") && e.contains("`complete` is false"),
            "{e}"
        );

        let other = d.path().join("other.h5");
        marker_file(&other, true, SCHEMA_VERSION + 1);
        let e = err(&other);
        assert!(
            e.contains("other.h5") && e.contains("schema_version"),
            "{e}"
        );

        let none = d.path().join("none.h5");
        write_file(&none, |f| attr(f, "schema_version", SCHEMA_VERSION)).unwrap();
        let e = err(&none);
        assert!(
            e.contains("none.h5") && e.contains("no readable root attribute `complete`"),
            "{e}"
        );

        assert!(err(&d.path().join("missing.h5")).contains("missing.h5"));
    }
}
