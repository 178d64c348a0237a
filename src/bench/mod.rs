//! `diffnmf bench`: the CPU benchmark harness.
//!
//! Runs every stage of the pipeline on the embedded digits (or synthetic data of the same
//! shape) and prints one Markdown table: stage, size, threads, median time of `repeats`
//! runs after one warm-up, throughput (GFLOP/s where the FLOP count is known, else items/s)
//! and the fraction of the machine's SGEMM peak, measured first: the faster of ndarray's
//! matrixmultiply (left only in generic reference code) and faer (the GEMM of the NNMF, the
//! CNN/MLP layers and the defended evaluator) at 2048³. Stages are in `fingerprint` (the
//! data content fingerprints of the stage cache), `stages` and `nets`; the whole-pipeline run and the thread scaling re-spawn this binary
//! (`spawn`), because the global thread pool is sized once per process.
//!
//! Data split used by every stage (reproduced by `scripts/compare`): embedded image `i` is
//! training when `i % 20 < 14` (7,000 images), validation when `14 ≤ i % 20 < 17` (1,500)
//! and test otherwise (1,500).

pub mod error;
mod fingerprint;
mod nets;
mod spawn;
mod stages;
#[cfg(test)]
mod tests;

pub use error::{BenchError, Result};

use crate::data::{self, DataSource, Dataset};
use ndarray::linalg::general_mat_mul;
use ndarray::{Array2, Axis};
use std::path::PathBuf;
use std::time::Instant;

/// Every stage name, in run order.
pub const STAGES: &[&str] = &[
    "fingerprint",
    "nnmf_fit",
    "nnmf_accel",
    "nnmf_transform",
    "cnn_epoch",
    "classifier_epoch",
    "denoiser_epoch",
    "defended_inference",
    "apgd_base",
    "apgd_adaptive",
    "scaling_size",
    "scaling_threads",
    "pipeline",
];

/// What `diffnmf bench` runs (the CLI's `BenchArgs` converted).
#[derive(Debug, Clone, Default)]
pub struct BenchOptions {
    /// Small sizes and 2 repeats (CI smoke test; numbers are not meaningful).
    pub quick: bool,
    /// Timed runs per row after one warm-up (default 5; 2 with `quick`).
    pub repeats: Option<usize>,
    /// A subset of [`STAGES`] (empty: all).
    pub stages: Vec<String>,
    /// NNMF component counts for nnmf_fit / nnmf_accel (empty: 16, 32, 64).
    pub k: Vec<usize>,
    /// Attack points of apgd_adaptive (default 300, timed once; the paper size is 1500).
    pub adaptive_points: Option<usize>,
    /// Also write the rows as tab-separated values to this file (read by scripts/compare).
    pub tsv: Option<PathBuf>,
}

/// One table row.
#[derive(Clone, Debug)]
pub struct Row {
    pub stage: String,
    pub size: String,
    pub threads: usize,
    /// Median seconds.
    pub median: f64,
    pub min: f64,
    pub runs: usize,
    /// `Some(flops per run)` when the FLOP count is known.
    pub flops: Option<f64>,
    /// `Some((items per run, unit))` for items/s.
    pub items: Option<(f64, &'static str)>,
    pub note: String,
}

/// Shared state of one bench invocation.
pub struct Ctx {
    pub quick: bool,
    pub repeats: usize,
    pub threads: usize,
    /// Measured SGEMM peak in FLOP/s (the faster of matrixmultiply and faer).
    pub peak: f64,
    /// Side of the square SGEMM the peak is measured on.
    pub peak_n: usize,
    pub data: Dataset,
    pub ks: Vec<usize>,
    pub adaptive_points: usize,
    pub rows: Vec<Row>,
    /// Exact-MU results per `k` on the 7,000 training images: (200-iteration objective,
    /// median seconds of the iterations), for the accelerated solver's target and speed-up.
    pub mu_runs: std::collections::BTreeMap<usize, (f64, f64)>,
}

/// Median and minimum of timed runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub median: f64,
    pub min: f64,
    pub runs: usize,
}

/// Run `f` `warmup` times untimed, then `repeats` times timed; the last result is returned.
pub fn time_it<R>(
    warmup: usize,
    repeats: usize,
    mut f: impl FnMut() -> Result<R>,
) -> Result<(Timing, R)> {
    for _ in 0..warmup {
        f()?;
    }
    let mut times = Vec::with_capacity(repeats.max(1));
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        let r = f()?;
        times.push(t.elapsed().as_secs_f64());
        last = Some(r);
    }
    let last = last.expect("at least one timed run");
    Ok((Timing::of(times), last))
}

impl Timing {
    /// Median (mean of the middle two for an even count) and minimum of `times` (≥ 1).
    pub fn of(mut times: Vec<f64>) -> Timing {
        assert!(!times.is_empty(), "Timing::of needs at least one time");
        times.sort_by(f64::total_cmp);
        let n = times.len();
        let median = if n % 2 == 1 {
            times[n / 2]
        } else {
            0.5 * (times[n / 2 - 1] + times[n / 2])
        };
        Timing {
            median,
            min: times[0],
            runs: n,
        }
    }
}

impl Ctx {
    /// Append a row from a timing.
    pub fn push(&mut self, stage: &str, size: String, t: Timing, flops: Option<f64>) -> &mut Row {
        self.rows.push(Row {
            stage: stage.into(),
            size,
            threads: self.threads,
            median: t.median,
            min: t.min,
            runs: t.runs,
            flops,
            items: None,
            note: String::new(),
        });
        self.rows.last_mut().expect("just pushed")
    }

    /// The fixed split of the embedded data: (train, validation, test) row indices.
    pub fn split(&self) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        split_indices(self.data.len())
    }
}

/// Train / validation / test indices by `i % 20` (see the module doc).
pub fn split_indices(n: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut a, mut b, mut c) = (vec![], vec![], vec![]);
    for i in 0..n {
        match i % 20 {
            0..=13 => a.push(i),
            14..=16 => b.push(i),
            _ => c.push(i),
        }
    }
    (a, b, c)
}

/// Rows `idx` of the images.
pub fn images(ds: &Dataset, idx: &[usize]) -> Array2<f32> {
    ds.images.select(Axis(0), idx)
}

/// SGEMM FLOP/s of matrixmultiply (`general_mat_mul`) and faer (rayon) at size `n`.
fn measure_peak(n: usize, repeats: usize, threads: usize) -> Result<(Timing, Timing)> {
    let a = peak_matrix(n);
    let b = a.t().to_owned();
    let mut c = Array2::<f32>::zeros((n, n));
    let (mm, _) = time_it(1, repeats, || {
        general_mat_mul(1.0, &a, &b, 0.0, &mut c);
        Ok(())
    })?;
    Ok((mm, faer_peak(n, repeats, threads)?))
}

fn peak_matrix(n: usize) -> Array2<f32> {
    Array2::from_shape_fn((n, n), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.1)
}

impl Ctx {
    /// faer's SGEMM rate now (FLOP/s, median of 3 runs at the peak size): measured just
    /// before and after a stage, the peak under the conditions that stage ran in (a shared
    /// or virtualised machine's speed drifts between the first measurement and a stage).
    pub fn peak_now(&self) -> Result<f64> {
        let t = faer_peak(self.peak_n, 3, self.threads)?;
        Ok(2.0 * (self.peak_n as f64).powi(3) / t.median)
    }
}

/// The efficiency of a stage running at `rate` FLOP/s against the faer peaks measured just
/// before and after it (their mean), as a note suffix.
pub fn beside_peak(rate: f64, before: f64, after: f64) -> String {
    format!(
        "; {:.0} % of the SGEMM peak measured beside it (faer, median of 3 runs just before / after: {:.1} / {:.1} GFLOP/s)",
        200.0 * rate / (before + after),
        before / 1e9,
        after / 1e9
    )
}

/// faer's (rayon) SGEMM timing at size `n`.
fn faer_peak(n: usize, repeats: usize, threads: usize) -> Result<Timing> {
    let a = peak_matrix(n);
    let fa = faer::Mat::<f32>::from_fn(n, n, |i, j| a[[i, j]]);
    let fb = faer::Mat::<f32>::from_fn(n, n, |i, j| a[[j, i]]);
    let mut fc = faer::Mat::<f32>::zeros(n, n);
    let (fr, _) = time_it(1, repeats, || {
        faer::linalg::matmul::matmul(
            fc.as_mut(),
            faer::Accum::Replace,
            fa.as_ref(),
            fb.as_ref(),
            1.0f32,
            faer::Par::rayon(threads),
        );
        Ok(())
    })?;
    Ok(fr)
}

fn selected(args: &BenchOptions) -> Result<Vec<String>> {
    if args.stages.is_empty() {
        return Ok(STAGES.iter().map(|s| s.to_string()).collect());
    }
    for s in &args.stages {
        if !STAGES.contains(&s.as_str()) {
            return Err(BenchError::UnknownStage {
                stage: s.clone(),
                choices: STAGES.join(", "),
            });
        }
    }
    Ok(args.stages.clone())
}

/// Run the selected stages in the current process (rayon's global pool already sized) and
/// return the Markdown table (also written as TSV when asked).
pub fn bench(args: &BenchOptions, threads: usize) -> Result<String> {
    let stages = selected(args)?;
    let quick = args.quick;
    let repeats = args.repeats.unwrap_or(if quick { 2 } else { 5 }).max(1);
    let pn = if quick { 256 } else { 2048 };
    let (mm, fr) = measure_peak(pn, repeats.min(3), threads)?;
    let flops = 2.0 * (pn as f64).powi(3);
    let data = data::load(&DataSource::Embedded, 28, 28)?;
    let mut ctx = Ctx {
        quick,
        repeats,
        threads,
        peak: flops / mm.min.min(fr.min),
        peak_n: pn,
        data,
        ks: if args.k.is_empty() {
            if quick {
                vec![16]
            } else {
                vec![16, 32, 64]
            }
        } else {
            args.k.clone()
        },
        adaptive_points: args.adaptive_points.unwrap_or(if quick { 20 } else { 300 }),
        rows: vec![],
        mu_runs: Default::default(),
    };
    let size = format!("{pn}×{pn}·{pn}");
    let best = |t: &Timing, other: &Timing| {
        if t.min <= other.min {
            "; the reference peak (best run)"
        } else {
            ""
        }
    };
    let mm_note = format!(
        "ndarray's GEMM (generic reference code only){}",
        best(&mm, &fr)
    );
    let fr_note = format!(
        "faer, rayon (NNMF, CNN/MLP, defended evaluator){}",
        best(&fr, &mm)
    );
    ctx.push("peak_sgemm_matrixmultiply", size.clone(), mm, Some(flops))
        .note = mm_note;
    ctx.push("peak_sgemm_faer", size, fr, Some(flops)).note = fr_note;
    for s in &stages {
        run_stage(&mut ctx, s)?;
    }
    if let Some(path) = &args.tsv {
        write_tsv(path, &ctx.rows)?;
    }
    Ok(markdown(&ctx))
}

/// Run the bench stage `name` (one of [`STAGES`]), pushing its rows.
fn run_stage(ctx: &mut Ctx, name: &str) -> Result<()> {
    match name {
        "fingerprint" => fingerprint::fingerprint(ctx)?,
        "nnmf_fit" => stages::nnmf_fit(ctx)?,
        "nnmf_accel" => stages::nnmf_accel(ctx)?,
        "nnmf_transform" => stages::nnmf_transform(ctx)?,
        "cnn_epoch" => nets::cnn_epoch(ctx, None)?,
        "classifier_epoch" => nets::classifier_epoch(ctx)?,
        "denoiser_epoch" => nets::denoiser_epoch(ctx)?,
        "defended_inference" => nets::defended_inference(ctx)?,
        "apgd_base" => nets::apgd_base(ctx)?,
        "apgd_adaptive" => nets::apgd_adaptive(ctx)?,
        "scaling_size" => stages::scaling_size(ctx)?,
        "scaling_threads" => spawn::scaling_threads(ctx)?,
        "pipeline" => spawn::pipeline(ctx)?,
        other => {
            return Err(BenchError::UnknownStage {
                stage: other.to_string(),
                choices: STAGES.join(", "),
            })
        }
    }
    Ok(())
}

/// The rows as tab-separated values (read by scripts/compare).
fn write_tsv(path: &std::path::Path, rows: &[Row]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        use std::fmt::Write as _;
        let _ = writeln!(
            text,
            "{}\t{}\t{}\t{:.6}\t{:.6}\t{}\t{}",
            r.stage,
            r.size,
            r.threads,
            r.median,
            r.min,
            r.runs,
            r.note.replace('\t', " ")
        );
    }
    std::fs::write(path, text).map_err(|e| BenchError::io(path, e))?;
    Ok(())
}

/// The CPU's model name (`/proc/cpuinfo`; "unknown CPU" elsewhere).
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find_map(|l| {
            let (key, val) = l.split_once(':')?;
            (key.trim() == "model name").then(|| val.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The vector unit the kernels dispatch to, and the AVX-512 extensions that matter here.
pub fn simd_description() -> String {
    use crate::linalg::{simd_level, Simd};
    let base = match simd_level() {
        Simd::Avx512 => "AVX-512F + FMA (512-bit kernels)",
        Simd::Avx2 => "AVX2 + FMA (256-bit kernels; no AVX-512)",
        Simd::Baseline => "baseline (no AVX2/FMA: scalar/SSE2 kernels)",
    };
    // Extensions read from the kernel's flags (AMX detection is not stable in std).
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = info
        .lines()
        .find_map(|l| l.strip_prefix("flags").and_then(|r| r.split_once(':')))
        .map_or(vec![], |(_, f)| f.split_whitespace().collect());
    let extra: Vec<&str> = ["avx512_bf16", "amx_tile", "amx_bf16"]
        .into_iter()
        .filter(|e| flags.contains(e))
        .collect();
    if !extra.is_empty() {
        return format!("{base}; also {}", extra.join(", "));
    }
    base.into()
}

/// The table.
pub fn markdown(ctx: &Ctx) -> String {
    let mut s = format!(
        "CPU: {} ({} logical CPUs visible); SIMD: {}\n\nSGEMM peak (best of matrixmultiply and faer, {} threads): {:.1} GFLOP/s\n\n",
        cpu_model(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        simd_description(),
        ctx.threads,
        ctx.peak / 1e9
    );
    s.push_str(
        "| stage | size | threads | median s | min s | runs | throughput | % of peak | note |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in &ctx.rows {
        let (thr, frac) = match (r.flops, r.items) {
            (Some(f), _) if r.median > 0.0 => {
                let rate = f / r.median;
                (
                    format!("{:.1} GFLOP/s", rate / 1e9),
                    format!("{:.0} %", 100.0 * rate / ctx.peak),
                )
            }
            (_, Some((n, unit))) if r.median > 0.0 => {
                (format!("{:.0} {unit}/s", n / r.median), "–".into())
            }
            _ => ("–".into(), "–".into()),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.3} | {:.3} | {} | {} | {} | {} |\n",
            r.stage, r.size, r.threads, r.median, r.min, r.runs, thr, frac, r.note
        ));
    }
    s
}
