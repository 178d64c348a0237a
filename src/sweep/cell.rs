//! Running one cell of a sweep into `cells/<id>/` (used by the local executor's workers and
//! by `diffnmf cell`, the Slurm array task). Every way a cell can end is recorded:
//! * it first *claims* the cell ([`super::claim`]; a live claim of someone else → the cell
//!   is skipped, never computed twice) and sweeps temporary files of dead processes;
//! * success: `result.h5` (the commit point), the checkpoint removed, the claim released;
//! * an error or a panic (caught here, so a local sweep goes on): `error.txt` with the whole
//!   cause chain, the claim released;
//! * SIGINT / SIGTERM ([`crate::signals`]): `error.txt` naming the signal and the stage,
//!   temporary files and the claim removed; the process exits 130 / 143;
//! * SIGUSR2 under Slurm (the time limit is near, `--signal=B:USR2@<grace>`): the claim is
//!   released, the task requeues itself with `scontrol requeue` and exits 0; the requeued
//!   task reloads the cached stages and the per-ε checkpoint (`checkpoint.h5`) and continues
//!   at the first unfinished ε. Without Slurm (or if the requeue is refused) it is recorded
//!   like SIGTERM (exit 140) and `--resume` continues from the same checkpoint.

use super::claim::{self, Claim, Marker};
use crate::cache::StageCache;
use crate::config;
use crate::error::{Error, Result};
use crate::pipeline::{self, RunOptions};
use crate::results::{paths, write_atomic};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How a cell run ended (errors are `Err`).
#[derive(Debug)]
pub enum Outcome {
    /// Finished; wall time in seconds.
    Done(f64),
    /// Another process finished it before this one got the claim.
    AlreadyDone,
    /// Someone else holds a live claim on the cell.
    Busy(Marker),
}

/// The error chain of `e`, one cause per line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!("\n  caused by: {s}"));
        src = s.source();
    }
    msg
}

/// Whether Slurm reports `job` ended (`Some(true)`), active (`Some(false)`), or unknown.
fn slurm_ended(job: &str) -> Option<bool> {
    super::status::job_state(job).map(|s| !super::status::is_active(&s))
}

/// Ask Slurm to requeue the job this process runs in.
fn requeue_self() -> std::result::Result<String, String> {
    let job = std::env::var("SLURM_JOB_ID").map_err(|_| "SLURM_JOB_ID is not set".to_string())?;
    let o = std::process::Command::new("scontrol")
        .args(["requeue", &job])
        .output()
        .map_err(|e| format!("cannot run scontrol: {e}"))?;
    if o.status.success() {
        Ok(job)
    } else {
        Err(format!(
            "scontrol requeue {job} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// The signal action of a running cell (see the module doc).
fn on_signal(sig: i32, dir: &Path, id: &str, marker: &Path) -> Option<i32> {
    let cell_dir = paths::cell_dir(dir, id);
    if crate::results::h5::check_complete(&paths::cell_result(dir, id)).is_ok() {
        claim::release(marker); // it finished just before the signal
        return None;
    }
    paths::remove_own_tmp(&cell_dir);
    let stage = crate::signals::stage();
    let name = crate::signals::name(sig);
    if sig == libc::SIGUSR2 && claim::slurm_job().is_some() {
        claim::release(marker);
        match requeue_self() {
            Ok(job) => {
                eprintln!("[cell] {id}: {name} during `{stage}`: requeued Slurm job {job}; it continues from its last finished stage/ε");
                return Some(0);
            }
            Err(why) => {
                let msg = format!("interrupted by {name} during stage `{stage}` (Slurm time limit near) and not requeued: {why}; `diffnmf sweep … --resume` continues from the finished stages and ε values\n");
                let _ = write_atomic(&paths::cell_error(dir, id), msg.as_bytes());
                eprintln!("[cell] {id}: {}", msg.trim());
                return None;
            }
        }
    }
    let msg = format!("interrupted by {name} during stage `{stage}` (scancel, a time limit, or Ctrl-C); finished stages and ε values are kept — `diffnmf sweep … --resume` continues\n");
    let _ = write_atomic(&paths::cell_error(dir, id), msg.as_bytes());
    claim::release(marker);
    eprintln!("[cell] {id}: {}", msg.trim());
    None
}

/// Run cell `id` of the sweep in `dir` with `threads` threads.
pub fn run_one(dir: &Path, id: &str, cache: &StageCache, threads: usize) -> Result<Outcome> {
    let t = Instant::now();
    let cell_dir = paths::cell_dir(dir, id);
    let marker = paths::cell_running(dir, id);
    if crate::signals::cleaning() {
        return Err(Error::Interrupted);
    }
    let guard = match claim::claim(&marker, &slurm_ended)? {
        Claim::Got(g) => g,
        Claim::Busy(m) => return Ok(Outcome::Busy(m)),
    };
    // Claimed: finished meanwhile by whoever held the claim before? Then nothing to do.
    let result = paths::cell_result(dir, id);
    if result.exists() {
        if crate::results::h5::check_complete(&result).is_ok() {
            return Ok(Outcome::AlreadyDone);
        }
        let _ = std::fs::remove_file(&result); // damaged: redone now
    }
    // Whatever a dead process left here is stale.
    paths::sweep_stale_tmp(&cell_dir);
    let _ = std::fs::remove_file(paths::cell_error(dir, id));
    let ckpt = cell_dir.join(CHECKPOINT);
    let (d, i, m) = (dir.to_path_buf(), id.to_string(), marker.clone());
    let sig = crate::signals::on_signal(move |s| on_signal(s, &d, &i, &m));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
        let job = config::load_job(&paths::cell_job(dir, id), &[])?;
        let opts = RunOptions {
            out: Some(cell_dir.clone()),
            threads,
            checkpoint: Some(ckpt.clone()),
        };
        pipeline::run_job_cached(&job, &opts, Some(cache))?;
        Ok(())
    }))
    .unwrap_or_else(|p| {
        Err(Error::Panicked {
            what: format!("cell {id}"),
            msg: crate::signals::panic_message(p.as_ref()),
        })
    });
    match &res {
        Ok(()) => {
            let _ = std::fs::remove_file(&ckpt);
        }
        Err(e) => {
            let msg = format!("{}\n", chain(e));
            if let Err(w) = write_atomic(&paths::cell_error(dir, id), msg.as_bytes()) {
                crate::progress::log(format!("[cell] {id}: could not record the error: {w}"));
            }
        }
    }
    drop(sig);
    drop(guard);
    res.map(|_| Outcome::Done(t.elapsed().as_secs_f64()))
}

pub use paths::CHECKPOINT_H5 as CHECKPOINT;

/// Path of a cell's checkpoint.
pub fn checkpoint_path(dir: &Path, id: &str) -> PathBuf {
    paths::cell_dir(dir, id).join(CHECKPOINT)
}

/// Map an array task index to a cell index through a map file (one cell index per line).
pub fn map_index(map: &Path, task: usize) -> Result<usize> {
    let text = std::fs::read_to_string(map).map_err(|e| Error::io(map, e))?;
    let line = text.lines().nth(task).ok_or_else(|| Error::Results {
        path: map.to_path_buf(),
        msg: format!("has no line for array index {task}"),
    })?;
    line.trim().parse().map_err(|_| Error::Results {
        path: map.to_path_buf(),
        msg: format!("line {}: `{line}` is not a cell index", task + 1),
    })
}

/// `a=1 b=2` summary of per-stage cache builds (and hits) for the log.
pub fn stats_line(cache: &StageCache) -> String {
    let st = cache.stats();
    let order = ["cnn", "nnmf", "classifier", "denoiser"];
    let mut names: Vec<&String> = st.keys().collect();
    names.sort_by_key(|n| {
        (
            order.iter().position(|o| o == n).unwrap_or(9),
            n.to_string(),
        )
    });
    let builds: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={}", st[*n].builds))
        .collect();
    let hits: Vec<String> = names
        .iter()
        .map(|n| format!("{n}={}", st[*n].hits))
        .collect();
    let invalid: Vec<String> = names
        .iter()
        .filter(|n| st[**n].invalid > 0)
        .map(|n| format!("{n}={}", st[*n].invalid))
        .collect();
    let mut line = format!(
        "[cache] stage builds: {} (hits: {})",
        builds.join(" "),
        hits.join(" ")
    );
    if !invalid.is_empty() {
        line.push_str(&format!("; invalid entries rebuilt: {}", invalid.join(" ")));
    }
    line
}
