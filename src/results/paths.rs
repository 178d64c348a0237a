//! Every path pattern of the result layout in one place.

use std::path::{Path, PathBuf};

/// Per-experiment HDF5 file.
pub const RESULT_H5: &str = "result.h5";
/// Per-experiment tidy metrics.
pub const METRICS_CSV: &str = "metrics.csv";
/// Per-experiment Markdown tables.
pub const TABLES_MD: &str = "tables.md";

/// Default output folder of a job: `results/<name>`.
pub fn default_out(job_name: &str) -> PathBuf {
    Path::new("results").join(job_name)
}

/// Temporary sibling used while writing `path` (`.<name>.tmp.<pid>`).
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("out");
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

// ---- sweep layout -------------------------------------------------------------------------
// <sweep dir>/sweep.yaml, cells.csv, cells/<id>/{result.h5, metrics.csv, job.yaml, error.txt},
// cache/, slurm/{array.sbatch, order.txt, jobs.txt, resume-<n>.{txt,sbatch}, logs/%A_%a.out}.

/// Default folder of a sweep: `results/<sweep name>`.
pub fn sweep_default_dir(sweep_name: &str) -> PathBuf {
    Path::new("results").join(sweep_name)
}
/// The resolved sweep file.
pub fn sweep_yaml(dir: &Path) -> PathBuf {
    dir.join("sweep.yaml")
}
/// One row per cell: `id,index,<axis keys…>,seed,status`.
pub fn cells_csv(dir: &Path) -> PathBuf {
    dir.join("cells.csv")
}
/// Folder of one cell.
pub fn cell_dir(dir: &Path, cell_id: &str) -> PathBuf {
    dir.join("cells").join(cell_id)
}
/// A cell is done iff this file exists (it is renamed into place when complete).
pub fn cell_result(dir: &Path, cell_id: &str) -> PathBuf {
    cell_dir(dir, cell_id).join(RESULT_H5)
}
/// The resolved job of a cell.
pub fn cell_job(dir: &Path, cell_id: &str) -> PathBuf {
    cell_dir(dir, cell_id).join("job.yaml")
}
/// Written by `diffnmf cell` when the cell failed (the error chain).
pub fn cell_error(dir: &Path, cell_id: &str) -> PathBuf {
    cell_dir(dir, cell_id).join("error.txt")
}
/// Written by `diffnmf cell` when it starts (`host pid`), removed when it ends.
pub fn cell_running(dir: &Path, cell_id: &str) -> PathBuf {
    cell_dir(dir, cell_id).join("running")
}
/// Appended by the local executor: one `started`/`finished` line per cell run.
pub fn sweep_log(dir: &Path) -> PathBuf {
    dir.join("sweep.log")
}
/// Root of the shared stage cache.
pub fn sweep_cache(dir: &Path) -> PathBuf {
    dir.join("cache")
}
/// Slurm files.
pub fn slurm_dir(dir: &Path) -> PathBuf {
    dir.join("slurm")
}
/// The rendered array script of the first submission.
pub fn array_sbatch(dir: &Path) -> PathBuf {
    slurm_dir(dir).join("array.sbatch")
}
/// Array index → cell index (one cell index per line) of the first submission.
pub fn array_order(dir: &Path) -> PathBuf {
    slurm_dir(dir).join("order.txt")
}
/// Array index → cell index of the n-th resubmission.
pub fn resume_map(dir: &Path, n: usize) -> PathBuf {
    slurm_dir(dir).join(format!("resume-{n}.txt"))
}
/// Script of the n-th resubmission.
pub fn resume_sbatch(dir: &Path, n: usize) -> PathBuf {
    slurm_dir(dir).join(format!("resume-{n}.sbatch"))
}
/// Submitted jobs: `<array id> <aggregate id> <map file name>` per line.
pub fn slurm_jobs(dir: &Path) -> PathBuf {
    slurm_dir(dir).join("jobs.txt")
}
/// Folder of the task logs.
pub fn slurm_logs(dir: &Path) -> PathBuf {
    slurm_dir(dir).join("logs")
}
