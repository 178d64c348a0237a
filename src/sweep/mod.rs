//! Sweeps: grid files, cells, the stage cache, local and Slurm executors, status and resume.
//!
//! The commands `diffnmf sweep|cell|status` ([`command`]) and `diffnmf cache`
//! ([`cache_admin`]) take the plain option structs below (the command line builds them from
//! its arguments) and return [`SweepError`].
//!
//! Layout (paths in [`crate::results::paths`]): `<sweep dir>/sweep.yaml` (resolved),
//! `cells.csv` (`id,index,<axis keys…>,seed,status`), `cells/<id>/{result.h5, metrics.csv,
//! job.yaml}`, `cache/` (the shared [`crate::cache::StageCache`]),
//! `slurm/{array.sbatch, order.txt, array-part<k>.sbatch, order-part<k>.txt, aggregate.sbatch,
//! jobs.txt, resume-<n>[-part<k>].{txt,sbatch}, logs/%A_%a.out}` (arrays split at
//! `MaxArraySize`: [`slurm`]).
//! A cell is done iff `cells/<id>/result.h5` exists.
//!
//! **Grouping.** Every cell shares `<sweep dir>/cache`: a stage entry is built under a file
//! lock, so concurrent builders of one entry wait and at most one builds it (4 k × 4 ε × 3
//! seeds trains exactly 3 CNNs and 12 NNMF models). On top of that, cells execute in
//! *owners-first* order ([`expand::owners_first`]): one cell per distinct CNN first, then
//! one per remaining training group (NNMF + classifier + denoiser), then the cells that
//! only evaluate (e.g. the other ε values). Waiting on a lock holds a worker (or a Slurm
//! allocation) idle, so the cells that build shared stages start first; the cheaper cells
//! that reuse them follow and mostly hit the cache. One array task per cell (not one per
//! (k, seed)) keeps the expensive per-ε attacks parallel. Measured (debug build, 2 shared
//! cores, 3 k × 3 ε on jobs/smoke.yaml with heavier training, `--jobs 2`): index order
//! 6.4 / 6.7 s, owners-first 6.4 / 5.7 s: within noise on a tiny grid, and the stage counts
//! are identical (locks guarantee them); the order matters where a waiting task holds a
//! Slurm allocation. The real one-node cluster runs the 8-cell smoke array in ~6 s.

pub mod cache_admin;
pub mod cell;
pub mod claim;
pub mod command;
pub mod error;
pub mod expand;
pub mod layout;
pub mod local;
pub mod slurm;
pub mod spec;
pub mod status;

pub use command::{run_cell, run_status, run_sweep};
pub use error::SweepError;

use std::path::PathBuf;

/// Where a sweep runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    /// This machine ([`local`]).
    Local,
    /// An sbatch job array ([`slurm`]).
    Slurm,
}

/// Order in which cells execute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Owners of shared stages first (default).
    Owners,
    /// Plain index order (for comparison).
    Index,
}

/// Options of [`run_sweep`] (`diffnmf sweep`).
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The sweep file.
    pub file: PathBuf,
    pub executor: Executor,
    /// Run (or resubmit) only the cells that are missing or failed.
    pub resume: bool,
    /// Print the cells and the sbatch scripts; run nothing, write nothing.
    pub dry_run: bool,
    /// Sweep folder (None: `results/<sweep name>`).
    pub out: Option<PathBuf>,
    /// `key=value` overrides of every cell.
    pub set: Vec<String>,
    /// Cells run at once by the local executor (None: min(threads, cells)).
    pub jobs: Option<usize>,
    /// Thread budget of the local executor (None: `SLURM_CPUS_PER_TASK`, else all cores).
    pub threads: Option<usize>,
    pub order: Order,
    /// Show every stage log line of every cell.
    pub verbose: bool,
}

/// Options of [`run_cell`] (`diffnmf cell`, one Slurm array task).
#[derive(Clone, Debug)]
pub struct CellOptions {
    /// Sweep folder.
    pub dir: PathBuf,
    /// Cell index, or array task index when `map` is given.
    pub index: usize,
    /// Map file: line i holds the cell index of array task i.
    pub map: Option<PathBuf>,
    /// Threads (None: `SLURM_CPUS_PER_TASK` if set, else all cores).
    pub threads: Option<usize>,
}

/// Options of [`run_status`] (`diffnmf status`).
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// Sweep folder.
    pub dir: PathBuf,
    /// Print only the counts.
    pub summary: bool,
    /// Also read every done cell's metrics (unreadable → failed).
    pub verify: bool,
}
