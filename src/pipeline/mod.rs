//! One experiment end to end: data → NNMF and CNN features → z-scored hybrid vector → MLP
//! classifier → feature-space denoiser → clean and robust evaluation (four scenarios, two
//! protocols for the defence) → metrics and result files.
//!
//! Stages are plain functions of the configuration and the seed (see [`stages`]), so that a
//! sweep engine can cache each by what determines it (data content, configuration section, seed and
//! code; see [`cached`]).

#[cfg(test)]
mod cache_tests;
pub mod cached;
mod certified;
pub mod checkpoint;
pub mod checks;
pub mod code;
pub mod evaluate;
pub mod pixel;
#[cfg(test)]
mod pixel_tests;
pub mod stage_sources;
pub mod stages;
pub mod stored;
pub mod worst;

use crate::backend;
use crate::config::LoadedJob;
use crate::error::Result;
use crate::progress::log;
use crate::results::{self, RunResult, Timing};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options from the command line that are not part of the job configuration.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub out: Option<PathBuf>,
    pub threads: usize,
    /// Per-ε evaluation checkpoint (sweep cells): resumed from when it matches the job,
    /// rewritten after every finished ε, removed by the caller once the result is written.
    pub checkpoint: Option<PathBuf>,
}

/// Wall-clock timings of named stages, in the order they ran.
#[derive(Default)]
pub struct Timings(pub Vec<Timing>);

/// The stage name of a run's whole wall-clock time.
pub const TOTAL: &str = "total";

impl Timings {
    /// Run `f`, recording its duration under `name`.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        crate::signals::set_stage(name);
        crate::signals::fault(name);
        let t = Instant::now();
        let out = f()?;
        let s = t.elapsed().as_secs_f64();
        log(format!("[stage] {name}: {s:.2}s"));
        self.push(name, s);
        Ok(out)
    }

    /// Record `seconds` under `stage`.
    pub fn push(&mut self, stage: &str, seconds: f64) {
        self.0.push(Timing {
            stage: stage.to_string(),
            seconds,
        });
    }
}

/// The git revision this binary was built from (`git rev-parse --short=12 HEAD`, with
/// `-dirty` when tracked files that go into the binary differed from it), fixed at build time
/// by `build.rs`; "unknown" when built outside a git checkout (e.g. from a crate tarball).
pub fn git_revision() -> String {
    env!("DIFFNMF_GIT_REVISION").to_string()
}

/// Check that the output folder `out` can be written before any work: `out`, or its nearest
/// existing ancestor when `out` does not exist yet, must be a folder in which a probe file
/// can be created (and is removed at once). Nothing is left behind, not even `out` itself.
/// `explicit`: `out` came from `--out` (else it is the default `results/<job name>`).
fn check_out_writable(out: &Path, explicit: bool) -> Result<()> {
    let fix = if explicit {
        "pass `--out` a folder you can write to"
    } else {
        "this is the default results/<job name> below the current directory: run from a \
         writable directory or pass `--out DIR`"
    };
    let err = |msg: String| crate::error::Error::Results {
        path: out.to_path_buf(),
        msg: format!("{msg}; {fix}"),
    };
    let mut dir = out;
    while !dir.exists() {
        dir = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    if !dir.is_dir() {
        return Err(err(if dir == out {
            "exists and is not a folder".into()
        } else {
            format!(
                "cannot create the output folder: {} is not a folder",
                dir.display()
            )
        }));
    }
    let probe = dir.join(format!(".diffnmf-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| err(format!("cannot create files in {} ({e})", dir.display())))?;
    std::fs::remove_file(&probe)
        .map_err(|e| err(format!("cannot remove files in {} ({e})", dir.display())))?;
    Ok(())
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
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| results::paths::default_out(&cfg.name));
    check_out_writable(&out, opts.out.is_some())?;
    let device = backend::select(cfg.device)?;
    let ctx = backend::DeviceCtx::open(device.clone())?;
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
    let eval = evaluate::evaluate(
        cfg,
        &trained,
        &mut timings,
        &ctx,
        opts.checkpoint.as_deref(),
    )?;
    timings.push(TOTAL, total.elapsed().as_secs_f64());
    let result = run_result(
        cfg,
        &job.resolved_yaml,
        &device.name(),
        opts.threads,
        &trained,
        eval,
        timings,
    );
    let cuda = ctx.is_cuda();
    let models = stored::models_of(cfg, &job.resolved_yaml, &device.name(), cuda, &trained);
    let models_path = out.join(results::paths::MODELS_H5);
    let models_image = crate::models::file::image(&models_path, &models)?;
    // Temporaries of a killed earlier run in this folder, then the three files with
    // `result.h5` as the commit point (`results` module doc).
    results::paths::sweep_stale_tmp(&out);
    results::write_all(&out, &result, Some(models_image))?;
    Ok((result, out))
}

/// The [`RunResult`] of an evaluation `eval` of the models `tr`.
fn run_result(
    cfg: &crate::config::JobConfig,
    yaml: &str,
    device: &str,
    threads: usize,
    tr: &stages::Trained,
    eval: evaluate::Evaluation,
    timings: Timings,
) -> RunResult {
    RunResult {
        job_name: cfg.name.clone(),
        config_yaml: yaml.to_string(),
        seed: cfg.seed,
        device: device.to_string(),
        threads,
        git_revision: git_revision(),
        data_content: tr.data_content.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        timings: timings.0,
        labels: tr.test_labels_u8(),
        test_ids: tr.eval.ids.clone(),
        scenarios: eval.scenarios,
        nnmf: tr
            .nnmf
            .as_ref()
            .map(|n| results::NnmfFit {
                basis: Some(n.basis.clone()),
                objective: n.objective.clone(),
                iterations: n.iterations,
                converged: n.converged,
            })
            .unwrap_or_default(),
        image_shape: tr.image_shape,
        curves: tr.curves.clone(),
        checks: eval.checks,
        adversarial: eval.adversarial,
        certification: eval.certification,
        feature_dim: tr.feature_dim(),
        // The YAML spelling (`train_range`), as everywhere else in the outputs; images
        // are always boxed to [0, 1].
        box_kind: match cfg.attack.threat {
            crate::config::Threat::Feature => crate::models::name_of(&cfg.attack.bounds),
            crate::config::Threat::Pixel => crate::models::name_of(&crate::config::BoxKind::Unit),
        },
        threat: cfg.attack.threat,
    }
}
