//! The sweep directory on disk: the resolved `sweep.yaml`, `cells.csv`, one folder per cell
//! with its resolved `job.yaml`, and the per-cell state that can be read from files alone
//! (done = a complete `result.h5`; corrupt = one that does not open as complete; failed =
//! `error.txt`; running = a `running` claim, judged by [`super::claim`]). Paths come from [`crate::results::paths`].

use super::claim;
use super::expand::{show_value, Cell};
use super::spec::SweepSpec;
use crate::error::{Error, Result};
pub use crate::results::paths::hostname;
use crate::results::{paths, write_atomic};
use serde::Serialize;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};

/// What the files of one cell say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskState {
    Done,
    /// `result.h5` exists but is not a complete result (truncated, damaged, not HDF5).
    Corrupt(String),
    Failed(String),
    /// A `running` marker (the claim) and what can be said about its process from here.
    Running(claim::Marker, claim::Liveness),
    Missing,
}

/// The status column of `cells.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Done,
    Running,
    Pending,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Running => "running",
            Status::Pending => "pending",
            Status::Failed => "failed",
        }
    }
}

#[derive(Serialize)]
struct Resolved<'a> {
    name: &'a str,
    source: String,
    base: String,
    cells: usize,
    axes: Vec<(String, Vec<Value>)>,
    seeds: Vec<u64>,
    set: &'a [(String, Value)],
    slurm: &'a super::spec::SlurmSpec,
}

/// The resolved sweep (every range expanded, paths absolute) as YAML.
pub fn resolved_yaml(spec: &SweepSpec, cells: &[Cell]) -> String {
    let mut seen = std::collections::HashSet::new();
    let seeds: Vec<u64> = cells
        .iter()
        .map(|c| c.seed)
        .filter(|s| seen.insert(*s))
        .collect();
    let r = Resolved {
        name: &spec.name,
        source: spec.path.display().to_string(),
        base: spec.base.display().to_string(),
        cells: cells.len(),
        axes: spec
            .axes
            .iter()
            .map(|a| (a.key.clone(), a.values.clone()))
            .collect(),
        seeds,
        set: &spec.set,
        slurm: &spec.slurm,
    };
    serde_yaml_ng::to_string(&r).unwrap_or_default()
}

/// Create (or check and reuse) the sweep directory: folders, `sweep.yaml`, every cell's
/// `job.yaml`. An existing directory holding a different grid is an error.
pub fn prepare(dir: &Path, spec: &SweepSpec, cells: &[Cell]) -> Result<()> {
    if let Ok(old) = read_cell_ids(dir) {
        let new: Vec<String> = cells.iter().map(|c| c.id.clone()).collect();
        if old != new {
            return Err(Error::Config {
                path: spec.path.clone(),
                msg: format!(
                    "{} already holds a different sweep (its cells.csv lists other cells); use --out for a new folder or delete it",
                    dir.display()
                ),
            });
        }
    }
    for d in [
        dir.join("cells"),
        paths::sweep_cache(dir),
        paths::slurm_logs(dir),
    ] {
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    write_atomic(
        &paths::sweep_yaml(dir),
        resolved_yaml(spec, cells).as_bytes(),
    )?;
    for c in cells {
        let cd = paths::cell_dir(dir, &c.id);
        std::fs::create_dir_all(&cd).map_err(|e| Error::io(&cd, e))?;
        let job = paths::cell_job(dir, &c.id);
        if !job.exists() {
            write_atomic(&job, c.job.resolved_yaml.as_bytes())?;
        }
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `cells.csv` text: `id,index,<axis keys…>,seed,status`.
pub fn cells_csv(spec: &SweepSpec, cells: &[Cell], status: &[Status]) -> String {
    let mut out = String::from("id,index");
    for a in &spec.axes {
        out.push(',');
        out.push_str(&csv_field(&a.key));
    }
    out.push_str(",seed,status\n");
    for (c, s) in cells.iter().zip(status) {
        out.push_str(&format!("{},{}", c.id, c.index));
        for v in &c.values {
            out.push(',');
            out.push_str(&csv_field(&show_value(v)));
        }
        out.push_str(&format!(",{},{}\n", c.seed, s.as_str()));
    }
    out
}

/// Write `cells.csv` atomically.
pub fn write_cells_csv(
    dir: &Path,
    spec: &SweepSpec,
    cells: &[Cell],
    status: &[Status],
) -> Result<()> {
    write_atomic(
        &paths::cells_csv(dir),
        cells_csv(spec, cells, status).as_bytes(),
    )
}

/// Cell ids in index order, from `cells.csv`.
pub fn read_cell_ids(dir: &Path) -> Result<Vec<String>> {
    let p = paths::cells_csv(dir);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    let mut ids = vec![];
    for (n, line) in text.lines().skip(1).enumerate() {
        let mut f = line.split(',');
        let (id, idx) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        if idx.trim().parse::<usize>().ok() != Some(n) || id.is_empty() {
            return Err(Error::Results {
                path: p.clone(),
                msg: format!("line {}: expected `id,{n},…`; the file is damaged — rerun `diffnmf sweep` to rewrite it", n + 2),
            });
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// The state of one cell from its files alone. `result.h5` is opened and its `complete`
/// attribute checked (cheap); `status --verify` reads every metric.
pub fn disk_state(dir: &Path, id: &str) -> DiskState {
    let res = paths::cell_result(dir, id);
    let damaged = if res.exists() {
        match crate::results::h5::check_complete(&res) {
            Ok(()) => return DiskState::Done,
            Err(e) => Some(e.to_string()),
        }
    } else {
        None
    };
    // A claim comes before a damaged result: the claimant may be redoing it.
    if let Some((m, age)) = claim::read(&paths::cell_running(dir, id)) {
        let l = claim::liveness(&m, age);
        return DiskState::Running(m, l);
    }
    if let Some(e) = damaged {
        return DiskState::Corrupt(e);
    }
    match std::fs::read_to_string(paths::cell_error(dir, id)) {
        Ok(e) => DiskState::Failed(e.lines().next().unwrap_or("").to_string()),
        Err(_) => DiskState::Missing,
    }
}

/// Absolute form of the sweep directory (tasks run from other working directories).
pub fn absolute(dir: &Path) -> Result<PathBuf> {
    std::path::absolute(dir).map_err(|e| Error::io(dir, e))
}

/// Number of entries per stage in the shared cache (`cache/<stage>/*.h5`).
pub fn cache_entries(dir: &Path) -> Vec<(String, usize)> {
    let root = paths::sweep_cache(dir);
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(&root) else {
        return out;
    };
    let mut stages: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    stages.sort();
    for s in stages.into_iter().filter(|s| s.is_dir()) {
        let n = std::fs::read_dir(&s)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name();
                        let n = n.to_string_lossy();
                        n.ends_with(".h5") && !n.starts_with('.')
                    })
                    .count()
            })
            .unwrap_or(0);
        let name = s.file_name().map(|n| n.to_string_lossy().to_string());
        out.push((name.unwrap_or_default(), n));
    }
    out
}
