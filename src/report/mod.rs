//! Aggregation across seeds, rank optimisation, plots and the paper-style report
//! (OWNER: report helper).

/// Arguments of `diffnmf aggregate`.
#[derive(clap::Args, Debug)]
pub struct AggregateArgs {}
/// Arguments of `diffnmf optimize-rank`.
#[derive(clap::Args, Debug)]
pub struct OptimizeArgs {}
/// Arguments of `diffnmf report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {}

pub fn run_aggregate(_a: AggregateArgs) -> anyhow::Result<()> {
    anyhow::bail!("diffnmf aggregate is not available in this build yet")
}
pub fn run_optimize(_a: OptimizeArgs) -> anyhow::Result<()> {
    anyhow::bail!("diffnmf optimize-rank is not available in this build yet")
}
pub fn run_report(_a: ReportArgs) -> anyhow::Result<()> {
    anyhow::bail!("diffnmf report is not available in this build yet")
}
