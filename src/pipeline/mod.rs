//! One experiment end to end: data → NNMF and CNN features → z-scored hybrid vector → MLP
//! classifier → feature-space denoiser → clean and robust evaluation (four scenarios, two
//! protocols for the defence) → metrics and result files.
//!
//! Stages are plain functions of the configuration and the seed (see [`stages`]), so that a
//! sweep engine can cache them by the configuration slice that determines each one.

pub mod cached;
pub mod checks;
pub mod evaluate;
pub mod stages;
pub mod worst;

use crate::backend;
use crate::config::LoadedJob;
use crate::error::Result;
use crate::progress::log;
use crate::results::{self, RunResult};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options from the command line that are not part of the job configuration.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub threads: usize,
}

/// Wall-clock timings of named stages.
#[derive(Default)]
pub struct Timings(pub Vec<(String, f64)>);

impl Timings {
    /// Run `f`, recording its duration under `name`.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let out = f()?;
        let s = t.elapsed().as_secs_f64();
        log(format!("[stage] {name}: {s:.2}s"));
        self.0.push((name.to_string(), s));
        Ok(out)
    }
}

/// The git revision of the source tree this binary was built from, if known at run time.
pub fn git_revision() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Run one job and write `result.h5`, `metrics.csv` and `tables.md` into the output folder.
/// Returns the result and the folder.
pub fn run_job(job: &LoadedJob, opts: &RunOptions) -> Result<(RunResult, PathBuf)> {
    run_job_cached(job, opts, None)
}

/// [`run_job`] with training stages taken from / stored in `cache` (sweeps).
pub fn run_job_cached(
    job: &LoadedJob,
    opts: &RunOptions,
    cache: Option<&crate::cache::StageCache>,
) -> Result<(RunResult, PathBuf)> {
    let cfg = &job.config;
    let device = backend::select(cfg.device)?;
    let ctx = backend::DeviceCtx::open(device.clone())?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| results::paths::default_out(&cfg.name));
    log(format!(
        "diffnmf {}: job `{}` from {}, seed {}, device {}, {} threads, output {}",
        env!("CARGO_PKG_VERSION"),
        cfg.name,
        job.path.display(),
        cfg.seed,
        device.name(),
        opts.threads,
        out.display()
    ));
    let total = Instant::now();
    let mut timings = Timings::default();
    let trained = stages::train_all(cfg, &mut timings, cache, &ctx)?;
    let eval = evaluate::evaluate(cfg, &trained, &mut timings, &ctx)?;
    timings
        .0
        .push(("total".into(), total.elapsed().as_secs_f64()));
    let result = RunResult {
        job_name: cfg.name.clone(),
        config_yaml: job.resolved_yaml.clone(),
        seed: cfg.seed,
        device: device.name(),
        threads: opts.threads,
        git_revision: git_revision(),
        version: env!("CARGO_PKG_VERSION").into(),
        timings: timings.0,
        labels: trained.test_labels_u8(),
        test_ids: trained.test_ids.clone(),
        scenarios: eval.scenarios,
        nnmf_basis: trained.nnmf.as_ref().map(|n| n.basis.clone()),
        nnmf_objective: trained
            .nnmf
            .as_ref()
            .map(|n| n.objective.clone())
            .unwrap_or_default(),
        nnmf_iterations: trained.nnmf.as_ref().map_or(0, |n| n.iterations),
        nnmf_converged: trained.nnmf.as_ref().is_some_and(|n| n.converged),
        image_shape: trained.image_shape,
        curves: trained.curves.clone(),
        checks: eval.checks,
        feature_dim: trained.feature_dim(),
        box_kind: format!("{:?}", cfg.attack.bounds).to_lowercase(),
    };
    results::write_all(&out, &result)?;
    let md = results::table::markdown(&result);
    results::write_atomic(&out.join(results::paths::TABLES_MD), md.as_bytes())?;
    Ok((result, out))
}
