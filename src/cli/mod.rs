//! Command-line interface (clap): parses arguments into validated commands and runs them.

mod bench;
mod report;
mod sweep;

use crate::backend;
use crate::config;
use crate::pipeline::{self, RunOptions};
use crate::progress::log;
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// diffnmf: NNMF + CNN hybrid features, feature-space diffusion purification, APGD robustness.
#[derive(Parser, Debug)]
#[command(name = "diffnmf", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one experiment and write result.h5, models.h5, metrics.csv and tables.md.
    Run(RunArgs),
    /// Run one experiment with certified radii (`certify.enabled: true`): everything `run`
    /// writes, plus certify.csv, certify.png/.svg and the certification in result.h5 and
    /// tables.md. `--set attack.eps=[0]` certifies without attacking (no sandwich).
    Certify(RunArgs),
    /// Re-run only the evaluation on a run's stored models (models.h5): the same metrics
    /// as the run with its own configuration; --set may change attack.*, diffusion.t_star,
    /// diffusion.passes, eval_split, device, name and the data paths.
    Evaluate {
        /// A models.h5 (e.g. results/paper/models.h5).
        models: PathBuf,
        /// Override an evaluation key: --set attack.eps=[0.3] (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Output folder (default: evaluate/ beside MODELS).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Threads (default: SLURM_CPUS_PER_TASK if set, else all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Export a run's stored models as ONNX (cnn/classifier/denoiser.onnx), pipeline.json
    /// and the evaluated points as .npy (docs/onnx.md).
    Export {
        /// A run folder (e.g. results/paper or a sweep's cells/<id>) or its models.h5.
        run_dir: PathBuf,
        /// Folder to write the ONNX files into.
        #[arg(long, value_name = "OUT_DIR")]
        onnx: PathBuf,
    },
    /// Run a sweep (grid over config keys × seeds) locally or as a Slurm job array.
    Sweep(sweep::SweepArgs),
    /// Run one cell of a sweep (what each Slurm array task executes).
    Cell(sweep::CellArgs),
    /// A sweep's stage cache: list, verify or garbage-collect its entries.
    Cache(sweep::CacheArgs),
    /// Show done / running / pending / failed cells of a sweep.
    Status(sweep::StatusArgs),
    /// Aggregate a sweep across seeds: summary.h5, summary.csv, tables.md, plots/.
    Aggregate(report::AggregateArgs),
    /// Choose the NNMF rank k on validation data and report the test table at that k.
    OptimizeRank(report::OptimizeArgs),
    /// Write report.md: Table 1 (fixed k), Table 2 (chosen k), plots, sanity checks.
    Report(report::ReportArgs),
    /// Benchmark every stage on the embedded data and print one table.
    Bench(bench::BenchArgs),
    /// Check a job file (with overrides) and print the resolved configuration.
    Validate {
        job: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

/// The arguments of `run` and `certify`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Job file (e.g. jobs/paper.yaml).
    pub job: PathBuf,
    /// Override a key: --set nnmf.k=48 --set attack.eps=[0.1,0.5] (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Output folder (default results/<job name>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Threads (default: SLURM_CPUS_PER_TASK if set, else all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Execute the parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(a) => run_job(a.job, a.set, a.out, a.threads),
        Command::Certify(mut a) => {
            a.set.push("certify.enabled=true".into());
            run_job(a.job, a.set, a.out, a.threads)
        }
        Command::Evaluate {
            models,
            set,
            out,
            threads,
        } => evaluate(models, set, out, threads),
        Command::Export { run_dir, onnx } => export(run_dir, onnx),
        Command::Bench(args) => bench::run(args),
        Command::Sweep(a) => sweep::run_sweep(a),
        Command::Cell(a) => sweep::run_cell(a),
        Command::Status(a) => sweep::run_status(a),
        Command::Cache(a) => sweep::run_cache(a),
        Command::Aggregate(a) => report::run_aggregate(a),
        Command::OptimizeRank(a) => report::run_optimize(a),
        Command::Report(a) => report::run_report(a),
        Command::Validate { job, set } => validate(job, set),
    }
}

/// `diffnmf run`: one experiment, its tables printed.
fn run_job(
    job: PathBuf,
    set: Vec<String>,
    out: Option<PathBuf>,
    threads: Option<usize>,
) -> anyhow::Result<()> {
    let threads = backend::thread_count(threads)?;
    backend::init_threads(threads);
    let loaded =
        config::load_job(&job, &set).with_context(|| format!("loading job {}", job.display()))?;
    crate::signals::install().context("installing the signal handlers")?;
    let out_dir = out
        .clone()
        .unwrap_or_else(|| crate::results::paths::default_out(&loaded.config.name));
    let _sig = crate::signals::on_signal(move |sig| {
        crate::results::paths::remove_own_tmp(&out_dir);
        eprintln!(
            "[run] interrupted by {} during stage `{}`; {} holds a complete result set (the earlier one, if the new one was not committed) and no temporary file",
            crate::signals::name(sig),
            crate::signals::stage(),
            out_dir.display()
        );
        None
    });
    let opts = RunOptions {
        out,
        threads,
        checkpoint: None,
    };
    let (result, dir) = backend::in_pool(|| pipeline::run_job(&loaded, &opts))
        .with_context(|| format!("running job `{}`", loaded.config.name))?;
    println!("{}", crate::results::table::markdown(&result));
    adversarial_grid(&result, &dir)?;
    certified_plot(&result, &dir)?;
    let total = result.timing(pipeline::TOTAL).unwrap_or(0.0);
    log(format!(
        "wrote {}/{{result.h5, models.h5, metrics.csv, tables.md}} in {total:.1}s",
        dir.display()
    ));
    Ok(())
}

/// A pixel-space run's adversarial images as `adversarial.png`/`.svg` beside its result.
fn adversarial_grid(
    result: &crate::results::RunResult,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    if let Some(a) = &result.adversarial {
        let png = crate::report::adversarial::render_grid(
            dir,
            "adversarial",
            &result.job_name,
            a,
            result.image_shape,
        )?;
        log(format!(
            "wrote {} (clean | base attack | defence attack)",
            png.display()
        ));
    }
    Ok(())
}

/// A certified run's curve and sandwich as `certify.png`/`.svg` beside its result.
fn certified_plot(result: &crate::results::RunResult, dir: &std::path::Path) -> anyhow::Result<()> {
    if let Some(png) = crate::report::certified::render_certified(dir, result)? {
        log(format!(
            "wrote {} and certify.csv (certified accuracy of the smoothed classifier)",
            png.display()
        ));
    }
    Ok(())
}

/// `diffnmf evaluate`: the evaluation again on a run's stored models.
fn evaluate(
    models: PathBuf,
    set: Vec<String>,
    out: Option<PathBuf>,
    threads: Option<usize>,
) -> anyhow::Result<()> {
    let threads = backend::thread_count(threads)?;
    backend::init_threads(threads);
    crate::signals::install().context("installing the signal handlers")?;
    let out_dir = out
        .clone()
        .unwrap_or_else(|| pipeline::stored::default_out(&models));
    let _sig = crate::signals::on_signal(move |_| {
        crate::results::paths::remove_own_tmp(&out_dir);
        None
    });
    let opts = RunOptions {
        out,
        threads,
        checkpoint: None,
    };
    let (result, dir) =
        backend::in_pool(|| pipeline::stored::evaluate_stored(&models, &set, &opts))
            .with_context(|| format!("evaluating the models in {}", models.display()))?;
    println!("{}", crate::results::table::markdown(&result));
    adversarial_grid(&result, &dir)?;
    certified_plot(&result, &dir)?;
    log(format!(
        "wrote {}/{{result.h5, metrics.csv, tables.md}}",
        dir.display()
    ));
    Ok(())
}

/// `diffnmf export --onnx`.
fn export(run_dir: PathBuf, onnx: PathBuf) -> anyhow::Result<()> {
    crate::signals::install().context("installing the signal handlers")?;
    let out_dir = onnx.clone();
    let _sig = crate::signals::on_signal(move |_| {
        crate::results::paths::remove_own_tmp(&out_dir);
        None
    });
    let files = crate::export::bundle::export(&run_dir, &onnx)
        .with_context(|| format!("exporting the models of {}", run_dir.display()))?;
    for f in &files {
        log(format!("wrote {}", f.display()));
    }
    Ok(())
}

/// `diffnmf validate`: print the resolved configuration.
fn validate(job: PathBuf, set: Vec<String>) -> anyhow::Result<()> {
    let loaded =
        config::load_job(&job, &set).with_context(|| format!("loading job {}", job.display()))?;
    print!("{}", loaded.resolved_yaml);
    Ok(())
}
