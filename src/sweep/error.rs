//! The error of the sweep commands ([`SweepError`]): an error of the steps they call
//! ([`crate::Error`], passed on as it is), or what a command itself refuses or reports, with
//! the context the user needs. A context variant displays only its own text and keeps the
//! underlying error as its `source`, so the whole cause chain (`{:#}` at the command line)
//! reads `context: cause: …`.

use std::path::PathBuf;

/// Errors of `diffnmf sweep`, `cell`, `status` and `cache`.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// An error of the runner, the cache, the configuration or the sweep files.
    #[error(transparent)]
    Core(#[from] crate::Error),
    /// `std::env::current_exe` failed (the Slurm tasks run this binary).
    #[error("locating the diffnmf binary")]
    CurrentExe(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("installing the signal handlers")]
    Signals(#[source] std::io::Error),
    /// Writing the dry run to standard output failed.
    #[error(transparent)]
    Print(std::io::Error),
    /// The sweep folder already holds this sweep, started, and `--resume` was not given.
    #[error(
        "{} already holds this sweep ({counts}); pass --resume to continue it, or --out for a new folder",
        dir.display()
    )]
    AlreadyStarted { dir: PathBuf, counts: String },
    /// Cells of a local run failed (each recorded in its `error.txt`).
    #[error(
        "{} cell(s) failed (see cells/<id>/error.txt): {}; rerun with --resume",
        ids.len(),
        ids.join(", ")
    )]
    CellsFailed { ids: Vec<String> },
    /// `diffnmf cell --index` names no cell of the sweep.
    #[error("{}: no cell {index} (the sweep has {cells} cells)", dir.display())]
    NoSuchCell {
        dir: PathBuf,
        index: usize,
        cells: usize,
    },
    /// The cell run by `diffnmf cell` failed.
    #[error("cell {id} failed (written to cells/{id}/error.txt)")]
    CellFailed {
        id: String,
        #[source]
        source: crate::Error,
    },
    /// `cells.csv` of the folder given to `diffnmf status` cannot be read.
    #[error("reading {} (is this a sweep folder?)", csv.display())]
    NotASweep {
        csv: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `diffnmf cache verify` found damaged entries.
    #[error(
        "{bad} damaged cache entries in {}: the next sweep rebuilds them, or `diffnmf cache gc {}` removes them",
        cache.display(),
        dir.display()
    )]
    DamagedEntries {
        bad: usize,
        cache: PathBuf,
        dir: PathBuf,
    },
}

/// Result of the sweep commands.
pub type Result<T, E = SweepError> = std::result::Result<T, E>;
