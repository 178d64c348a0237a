//! Running one cell of a sweep into `cells/<id>/` (used by the local executor's workers and
//! by `diffnmf cell`, the Slurm array task): a `running` marker while it runs, the pipeline
//! with the shared stage cache, and `error.txt` with the error chain if it fails.

use super::layout;
use crate::cache::StageCache;
use crate::config;
use crate::error::{Error, Result};
use crate::pipeline::{self, RunOptions};
use crate::results::{paths, write_atomic};
use std::path::Path;
use std::time::Instant;

/// Run cell `id` of the sweep in `dir` with `threads` threads; returns its wall time.
pub fn run_one(dir: &Path, id: &str, cache: &StageCache, threads: usize) -> Result<f64> {
    let t = Instant::now();
    let cell_dir = paths::cell_dir(dir, id);
    let marker = paths::cell_running(dir, id);
    let _ = std::fs::remove_file(paths::cell_error(dir, id));
    write_atomic(
        &marker,
        format!("{} {}\n", layout::hostname(), std::process::id()).as_bytes(),
    )?;
    let res = (|| -> Result<()> {
        let job = config::load_job(&paths::cell_job(dir, id), &[])?;
        let opts = RunOptions {
            out: Some(cell_dir.clone()),
            threads,
        };
        pipeline::run_job_cached(&job, &opts, Some(cache))?;
        Ok(())
    })();
    if let Err(e) = &res {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            msg.push_str(&format!("\n  caused by: {s}"));
            src = s.source();
        }
        let _ = write_atomic(&paths::cell_error(dir, id), format!("{msg}\n").as_bytes());
    }
    let _ = std::fs::remove_file(&marker);
    res.map(|_| t.elapsed().as_secs_f64())
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
    format!(
        "[cache] stage builds: {} (hits: {})",
        builds.join(" "),
        hits.join(" ")
    )
}
