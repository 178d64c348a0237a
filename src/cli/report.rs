//! `diffnmf aggregate`, `optimize-rank` and `report`: their arguments and the handlers
//! that call [`crate::report`] and print what was written.

use crate::progress::log;
use crate::report::{aggregate, objective, optimize, report, sweep_plots};
use anyhow::Context;
use std::path::PathBuf;

/// `--search` of `diffnmf optimize-rank` ([`optimize::Search`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SearchArg {
    Grid,
    Halving,
    Golden,
}

impl From<SearchArg> for optimize::Search {
    fn from(s: SearchArg) -> Self {
        match s {
            SearchArg::Grid => optimize::Search::Grid,
            SearchArg::Halving => optimize::Search::Halving,
            SearchArg::Golden => optimize::Search::Golden,
        }
    }
}

/// Arguments of `diffnmf aggregate`.
#[derive(clap::Args, Debug)]
pub struct AggregateArgs {
    /// Sweep folder (holds cells.csv and cells/<id>/).
    pub dir: PathBuf,
    /// Skip the plots (tables only).
    #[arg(long)]
    pub no_plots: bool,
    /// Write a partial summary when cells are missing (they are listed in tables.md);
    /// without it, missing cells are an error and nothing is written.
    #[arg(long)]
    pub allow_missing: bool,
}

/// Arguments of `diffnmf optimize-rank`.
#[derive(clap::Args, Debug)]
pub struct OptimizeArgs {
    /// Job file (e.g. jobs/paper.yaml).
    pub job: PathBuf,
    /// Candidate ranks: `8..128` (step 8), `8..128:16`, or `8,16,32`.
    #[arg(long)]
    pub k: String,
    /// clean_def | clean_base | robust_base@EPS | robust_def@EPS (per-sample worst case
    /// over transfer and adaptive) | robust_def_transfer@EPS | robust_def_adaptive@EPS |
    /// weighted:W*TERM+W*TERM (validation accuracy).
    #[arg(long, default_value = "robust_def@0.25")]
    pub objective: String,
    /// grid (every k), golden (golden-section, assumes a unimodal curve), halving
    /// (successive halving over training budgets).
    #[arg(long, value_enum, default_value = "grid")]
    pub search: SearchArg,
    /// Override a job key (repeatable), e.g. --set attack.iterations=50.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output folder (default results/<job name>_optimize).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Threads (default: SLURM_CPUS_PER_TASK if set, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Arguments of `diffnmf report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Sweep folder.
    pub dir: PathBuf,
    /// The k of Table 1 (a value of the sweep's nnmf.k axis; default: the first one).
    #[arg(long)]
    pub k_fixed: Option<String>,
    /// Output folder of `diffnmf optimize-rank` (Table 2).
    #[arg(long)]
    pub optimize: Option<PathBuf>,
}

pub fn run_aggregate(a: AggregateArgs) -> anyhow::Result<()> {
    let s =
        aggregate::aggregate(&a.dir).with_context(|| format!("aggregating {}", a.dir.display()))?;
    if !s.missing.is_empty() && !a.allow_missing {
        anyhow::bail!(
            "{}: {} of {} cells have no result ({}); finish them with `diffnmf sweep <file> --resume` (see `diffnmf status {}`), or pass --allow-missing for a partial summary. Nothing was written.",
            a.dir.display(),
            s.missing.len(),
            s.sweep.cells.len(),
            s.missing.join(", "),
            a.dir.display()
        );
    }
    aggregate::write_outputs(&s)?;
    let mut n_plots = 0;
    if !a.no_plots {
        n_plots = sweep_plots::sweep_plots(&s)?.len();
    }
    if !s.missing.is_empty() {
        log(format!(
            "aggregate: {} of {} cells missing: {}",
            s.missing.len(),
            s.sweep.cells.len(),
            s.missing.join(", ")
        ));
    }
    log(format!(
        "aggregate: {} rows from {} finished cells → {}/{{summary.csv, summary.h5, tables.md}}, {n_plots} plots in plots/",
        s.rows.len(),
        s.sweep.cells.len() - s.missing.len(),
        a.dir.display()
    ));
    Ok(())
}

pub fn run_optimize(a: OptimizeArgs) -> anyhow::Result<()> {
    let threads = crate::backend::thread_count(a.threads)?;
    crate::backend::init_threads(threads);
    let name = crate::config::load_job(&a.job, &a.set)
        .with_context(|| format!("loading job {}", a.job.display()))?
        .config
        .name;
    let opts = optimize::OptimizeOptions {
        ks: optimize::parse_k(&a.k)?,
        objective: objective::Objective::parse(&a.objective)?,
        search: a.search.into(),
        overrides: a.set,
        out: a
            .out
            .unwrap_or_else(|| crate::results::paths::default_out(&format!("{name}_optimize"))),
        threads,
        final_run: true,
    };
    let o =
        crate::backend::in_pool(|| optimize::optimize(&a.job, &opts)).context("optimize-rank")?;
    println!(
        "chosen k = {} (validation {} = {:.4}, {} fits); Table 2: {}",
        o.chosen_k,
        opts.objective.spec,
        o.chosen_objective,
        o.trace.len(),
        opts.out.join(crate::results::paths::TABLE2_MD).display()
    );
    Ok(())
}

pub fn run_report(a: ReportArgs) -> anyhow::Result<()> {
    let p = report::write_report(&a.dir, a.k_fixed.as_deref(), a.optimize.as_deref())
        .with_context(|| format!("report for {}", a.dir.display()))?;
    log(format!("wrote {}", p.display()));
    Ok(())
}
