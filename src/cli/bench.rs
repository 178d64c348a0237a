//! `diffnmf bench`: its arguments and the handler that sizes the thread pool and prints
//! the table of [`crate::bench`].

use crate::backend;
use crate::bench::{self, BenchOptions};
use std::path::PathBuf;

/// Arguments of `diffnmf bench`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BenchArgs {
    /// Small sizes and 2 repeats (CI smoke test; numbers are not meaningful).
    #[arg(long)]
    pub quick: bool,
    /// Timed runs per row after one warm-up (default 5; 2 with --quick).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Threads (default: SLURM_CPUS_PER_TASK if set, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Comma-separated subset of: fingerprint, nnmf_fit, nnmf_accel, nnmf_transform,
    /// cnn_epoch, classifier_epoch, denoiser_epoch, defended_inference, apgd_base,
    /// apgd_adaptive, scaling_size, scaling_threads, pipeline (default: all).
    #[arg(long, value_delimiter = ',')]
    pub stages: Vec<String>,
    /// NNMF component counts for nnmf_fit / nnmf_accel (default 16,32,64).
    #[arg(long, value_delimiter = ',')]
    pub k: Vec<usize>,
    /// Attack points of apgd_adaptive (default 300, timed once; the paper size is 1500).
    #[arg(long)]
    pub adaptive_points: Option<usize>,
    /// Also write the rows as tab-separated values to this file (read by scripts/compare).
    #[arg(long)]
    pub tsv: Option<PathBuf>,
}

/// Run the benchmarks and print the table.
pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let threads = backend::thread_count(a.threads)?;
    backend::init_threads(threads);
    crate::progress::set_quiet(true);
    let opts = BenchOptions {
        quick: a.quick,
        repeats: a.repeats,
        stages: a.stages,
        k: a.k,
        adaptive_points: a.adaptive_points,
        tsv: a.tsv,
    };
    let table = backend::in_pool(|| bench::bench(&opts, threads))?;
    println!("{table}");
    Ok(())
}
