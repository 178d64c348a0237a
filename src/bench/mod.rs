//! `diffnmf bench`: the CPU benchmark harness (OWNER: bench helper).

/// Arguments of `diffnmf bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

/// Run the benchmarks and print the table.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("diffnmf bench is not available in this build yet")
}
