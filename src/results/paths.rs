//! Every path pattern of the result layout in one place, plus the temporary names used
//! while writing them: [`tmp_name`] (`.<name>.tmp.<host>.<pid>`, a sibling of the final
//! file so the rename is atomic) and [`sweep_stale_tmp`], which removes the temporaries a
//! dead process of this host left behind (killed, OOM, node crash before the clean-up).

use std::path::{Path, PathBuf};

/// Per-experiment HDF5 file.
pub const RESULT_H5: &str = "result.h5";
/// Per-experiment tidy metrics.
pub const METRICS_CSV: &str = "metrics.csv";
/// Per-experiment Markdown tables.
pub const TABLES_MD: &str = "tables.md";
/// Per-experiment tidy certification values (`certify.enabled`).
pub const CERTIFY_CSV: &str = "certify.csv";
/// `diffnmf aggregate`: the certification values across seeds.
pub const SUMMARY_CERTIFY_CSV: &str = "summary_certify.csv";
/// The trained models of a run ([`crate::models`]).
pub const MODELS_H5: &str = "models.h5";
/// A sweep cell's per-ε evaluation checkpoint (removed when the cell finishes).
pub const CHECKPOINT_H5: &str = "checkpoint.h5";
/// `diffnmf aggregate`: statistics across seeds, as CSV and HDF5.
pub const SUMMARY_CSV: &str = "summary.csv";
pub const SUMMARY_H5: &str = "summary.h5";
/// `diffnmf report`: the paper-style report of a sweep.
pub const REPORT_MD: &str = "report.md";
/// `diffnmf optimize-rank`: the search trace.
pub const OPTIMIZE_CSV: &str = "optimize.csv";
pub const OPTIMIZE_H5: &str = "optimize.h5";
/// `diffnmf optimize-rank`: Table 2 and the folder of the final run at the chosen k.
pub const TABLE2_MD: &str = "table2.md";
pub const OPTIMIZE_FINAL: &str = "final";
/// `diffnmf export`: the pipeline description beside the ONNX files (`docs/onnx.md`).
pub const PIPELINE_JSON: &str = "pipeline.json";

/// Default output folder of a job: `results/<name>`.
pub fn default_out(job_name: &str) -> PathBuf {
    Path::new("results").join(job_name)
}

/// This host's name (`/proc/sys/kernel/hostname`; `unknown` where it cannot be read). Used in
/// temporary names and in the `running` markers of sweep cells.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The suffix every temporary file of this process ends with: `.tmp.<host>.<pid>`.
pub fn tmp_suffix() -> String {
    format!(".tmp.{}.{}", hostname(), std::process::id())
}

/// Remove this process's temporary files (`.<name>.tmp.…<pid>`) in `dir`.
pub fn remove_own_tmp(dir: &Path) {
    let suffix = tmp_suffix();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.filter_map(|e| e.ok()) {
            let n = e.file_name();
            let n = n.to_string_lossy();
            if n.starts_with('.') && n.ends_with(&suffix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Temporary sibling used while writing `path` (`.<name>.tmp.<host>.<pid>`): the host and
/// pid let [`sweep_stale_tmp`] tell a live writer from a dead one (on a shared file system
/// several nodes write into one folder).
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("out");
    path.with_file_name(format!(".{name}{}", tmp_suffix()))
}

/// Whether a process with this pid exists on this host.
fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid of a temporary file name of a process of this host `host`, if `name` is one:
/// `.<name>.tmp.<host>.<pid>`, or the older `.<name>.tmp.<pid>` (which did not record the
/// host). Names of other hosts give `None`: their writers may be alive.
fn tmp_pid_on_host(name: &str, host: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    let digits = |s: &str| -> Option<u32> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let ours = format!(".tmp.{host}.");
    if let Some(i) = name.rfind(&ours) {
        if let Some(pid) = digits(&name[i + ours.len()..]) {
            return Some(pid);
        }
    }
    let i = name.rfind(".tmp.")?;
    digits(&name[i + ".tmp.".len()..])
}

/// Remove the temporary files in `dir` (not recursive) left by dead processes of this host:
/// `.<name>.tmp.<this host>.<pid>` and old-style `.<name>.tmp.<pid>` whose pid does not
/// exist (`/proc/<pid>` missing). Temporaries of live processes and of other hosts are kept.
/// Returns how many files were removed; a folder that cannot be read removes nothing.
pub fn sweep_stale_tmp(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let host = hostname();
    let mut removed = 0;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = tmp_pid_on_host(name, &host) else {
            continue;
        };
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && !pid_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that is not alive on this host (the largest pid the kernel can hand out is far
    /// below `u32::MAX / 2`).
    fn dead_pid() -> u32 {
        let mut pid = 4_000_000;
        while pid_alive(pid) {
            pid += 1;
        }
        pid
    }

    #[test]
    fn tmp_names_carry_host_and_pid() {
        let t = tmp_name(Path::new("/x/result.h5"));
        let n = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            n,
            format!(".result.h5.tmp.{}.{}", hostname(), std::process::id())
        );
        assert_eq!(t.parent(), Some(Path::new("/x")));
        assert_eq!(tmp_pid_on_host(n, &hostname()), Some(std::process::id()));
    }

    #[test]
    fn sweeps_only_dead_temporaries_of_this_host() {
        let d = tempfile::tempdir().unwrap();
        let host = hostname();
        let dead = dead_pid();
        let me = std::process::id();
        let files = [
            (format!(".result.h5.tmp.{host}.{dead}"), true),
            (format!(".metrics.csv.tmp.{dead}"), true), // old style, dead
            (format!(".tables.md.tmp.{host}.{me}"), false), // alive (us)
            (format!(".result.h5.tmp.{me}"), false),    // old style, alive
            (format!(".result.h5.tmp.other-node.{dead}"), false), // another host
            (format!(".result.h5.tmp.{host}.12x"), false), // not a pid
            ("result.h5".to_string(), false),
            (format!("result.h5.tmp.{dead}"), false), // not hidden: not ours
        ];
        for (n, _) in &files {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        assert_eq!(sweep_stale_tmp(d.path()), 2);
        for (n, gone) in &files {
            assert_eq!(!d.path().join(n).exists(), *gone, "{n}");
        }
        assert_eq!(sweep_stale_tmp(d.path()), 0);
        assert_eq!(sweep_stale_tmp(&d.path().join("missing")), 0);
    }
}
