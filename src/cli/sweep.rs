//! The arguments of `diffnmf sweep`, `cell`, `status` and `cache` (clap), turned into the
//! plain options of [`crate::sweep`] and run there.

use crate::sweep::cache_admin::{self, CacheCommand};
use crate::sweep::{CellOptions, Executor, Order, StatusOptions, SweepOptions};
use std::path::PathBuf;

/// `--executor` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorArg {
    Local,
    Slurm,
}

impl From<ExecutorArg> for Executor {
    fn from(e: ExecutorArg) -> Self {
        match e {
            ExecutorArg::Local => Executor::Local,
            ExecutorArg::Slurm => Executor::Slurm,
        }
    }
}

/// `--order` values.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderArg {
    /// Owners of shared stages first (default).
    Owners,
    /// Plain index order (for comparison).
    Index,
}

impl From<OrderArg> for Order {
    fn from(o: OrderArg) -> Self {
        match o {
            OrderArg::Owners => Order::Owners,
            OrderArg::Index => Order::Index,
        }
    }
}

/// Arguments of `diffnmf sweep`.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {
    /// Sweep file (e.g. sweeps/rank_eps.yaml).
    pub file: PathBuf,
    /// local (this machine) or slurm (render and submit an sbatch job array).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: ExecutorArg,
    /// Run (or resubmit) only the cells that are missing or failed.
    #[arg(long)]
    pub resume: bool,
    /// Print the cells and the sbatch script; run nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sweep folder (default results/<sweep name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override a job key in every cell: --set attack.iterations=20 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Cells run at once by the local executor (default: min(threads, cells)).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Thread budget of the local executor (default: SLURM_CPUS_PER_TASK, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Execution order of the cells.
    #[arg(long, value_enum, default_value = "owners")]
    pub order: OrderArg,
    /// Show every stage log line of every cell (interleaved).
    #[arg(long)]
    pub verbose: bool,
}

impl From<SweepArgs> for SweepOptions {
    fn from(a: SweepArgs) -> Self {
        SweepOptions {
            file: a.file,
            executor: a.executor.into(),
            resume: a.resume,
            dry_run: a.dry_run,
            out: a.out,
            set: a.set,
            jobs: a.jobs,
            threads: a.threads,
            order: a.order.into(),
            verbose: a.verbose,
        }
    }
}

/// Arguments of `diffnmf cell` (one Slurm array task).
#[derive(clap::Args, Debug)]
pub struct CellArgs {
    /// Sweep folder.
    pub dir: PathBuf,
    /// Cell index (or array task index when --map is given).
    #[arg(long)]
    pub index: usize,
    /// Map file: line i holds the cell index of array task i.
    #[arg(long)]
    pub map: Option<PathBuf>,
    /// Threads (default: SLURM_CPUS_PER_TASK if set, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

impl From<CellArgs> for CellOptions {
    fn from(a: CellArgs) -> Self {
        CellOptions {
            dir: a.dir,
            index: a.index,
            map: a.map,
            threads: a.threads,
        }
    }
}

/// Arguments of `diffnmf status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Sweep folder.
    pub dir: PathBuf,
    /// Print only the counts.
    #[arg(long)]
    pub summary: bool,
    /// Also open every done cell's result.h5 and read its metrics (unreadable → failed).
    #[arg(long)]
    pub verify: bool,
}

impl From<StatusArgs> for StatusOptions {
    fn from(a: StatusArgs) -> Self {
        StatusOptions {
            dir: a.dir,
            summary: a.summary,
            verify: a.verify,
        }
    }
}

/// Arguments of `diffnmf cache`.
#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(clap::Subcommand, Debug)]
pub enum CacheAction {
    /// List the entries: stage, name, size, last use, referencing cells, key summary.
    Ls {
        /// Sweep folder.
        dir: PathBuf,
    },
    /// Check every entry's checksum and key; exit 1 when one is damaged.
    Verify {
        /// Sweep folder.
        dir: PathBuf,
    },
    /// Remove entries no cell of the sweep references, and damaged ones.
    Gc {
        /// Sweep folder.
        dir: PathBuf,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

impl From<CacheArgs> for CacheCommand {
    fn from(a: CacheArgs) -> Self {
        match a.action {
            CacheAction::Ls { dir } => CacheCommand::Ls { dir },
            CacheAction::Verify { dir } => CacheCommand::Verify { dir },
            CacheAction::Gc { dir, dry_run } => CacheCommand::Gc { dir, dry_run },
        }
    }
}

/// `diffnmf sweep`.
pub fn run_sweep(a: SweepArgs) -> anyhow::Result<()> {
    Ok(crate::sweep::run_sweep(&a.into())?)
}

/// `diffnmf cell`.
pub fn run_cell(a: CellArgs) -> anyhow::Result<()> {
    Ok(crate::sweep::run_cell(&a.into())?)
}

/// `diffnmf status`.
pub fn run_status(a: StatusArgs) -> anyhow::Result<()> {
    Ok(crate::sweep::run_status(&a.into())?)
}

/// `diffnmf cache`.
pub fn run_cache(a: CacheArgs) -> anyhow::Result<()> {
    Ok(cache_admin::run(&a.into())?)
}
