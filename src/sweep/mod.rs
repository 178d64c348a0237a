//! Sweeps: grid files, cells, the stage cache, local and Slurm executors, status and resume
//! (OWNER: sweep helper).

/// Arguments of `diffnmf sweep`.
#[derive(clap::Args, Debug)]
pub struct SweepArgs {}
/// Arguments of `diffnmf cell` (one Slurm array task).
#[derive(clap::Args, Debug)]
pub struct CellArgs {}
/// Arguments of `diffnmf status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {}

pub fn run_sweep(_a: SweepArgs) -> anyhow::Result<()> {
    anyhow::bail!("diffnmf sweep is not available in this build yet")
}
pub fn run_cell(_a: CellArgs) -> anyhow::Result<()> {
    anyhow::bail!("diffnmf cell is not available in this build yet")
}
pub fn run_status(_a: StatusArgs) -> anyhow::Result<()> {
    anyhow::bail!("diffnmf status is not available in this build yet")
}
