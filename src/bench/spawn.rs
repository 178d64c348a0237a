//! Rows that re-spawn this binary: thread scaling (rayon's global pool is sized once per
//! process, so each thread setting needs its own process) and the whole
//! `run jobs/paper.yaml` with wall time and peak RSS (`/usr/bin/time -v` when present,
//! else the child's `VmHWM` polled from `/proc/<pid>/status`).

use super::{BenchError, Ctx, Result, Row};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(|e| BenchError::io("<this executable>", e))
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("diffnmf-bench-{}-{name}", std::process::id()))
}

/// NNMF (k = 32, exact and accelerated) and the CNN epoch with 1 and 2 threads, each in a
/// fresh process (`diffnmf bench --threads n`).
pub fn scaling_threads(ctx: &mut Ctx) -> Result<()> {
    let k = if ctx.quick { "16" } else { "32" };
    for t in [1usize, 2] {
        let tsv = scratch(&format!("threads{t}.tsv"));
        let mut cmd = Command::new(exe()?);
        cmd.args([
            "bench",
            "--stages",
            "nnmf_fit,nnmf_accel,cnn_epoch",
            "--k",
            k,
        ])
        .args([
            "--threads",
            &t.to_string(),
            "--repeats",
            &ctx.repeats.to_string(),
        ])
        .arg("--tsv")
        .arg(&tsv)
        .stdout(Stdio::null());
        if ctx.quick {
            cmd.arg("--quick");
        }
        let status = cmd
            .status()
            .map_err(|e| BenchError::Child(format!("starting the thread-scaling child: {e}")))?;
        if !status.success() {
            return Err(BenchError::Child(format!(
                "thread-scaling child (--threads {t}) failed: {status}"
            )));
        }
        let text = std::fs::read_to_string(&tsv).map_err(|e| BenchError::io(&tsv, e))?;
        let _ = std::fs::remove_file(&tsv);
        for line in text.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 7 || f[0].ends_with("_init") || f[0] == "peak_sgemm_faer" {
                continue;
            }
            let bad = |what: &str| {
                BenchError::Child(format!(
                    "{}: the {what} of line `{line}` is not a number",
                    tsv.display()
                ))
            };
            ctx.rows.push(Row {
                stage: format!("threads_{}", f[0]),
                size: f[1].into(),
                threads: f[2].parse().map_err(|_| bad("thread count"))?,
                median: f[3].parse().map_err(|_| bad("median"))?,
                min: f[4].parse().map_err(|_| bad("minimum"))?,
                runs: f[5].parse().map_err(|_| bad("run count"))?,
                flops: None,
                items: None,
                note: f[6].into(),
            });
        }
    }
    Ok(())
}

/// Peak resident set size (KiB) of a running child, read from `/proc/<pid>/status`.
fn vm_hwm(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Wall seconds and peak RSS (KiB) of `exe args…`.
fn measure(args: &[String], log: &Path) -> Result<(f64, Option<u64>)> {
    let time_v = Path::new("/usr/bin/time");
    let err = std::fs::File::create(log).map_err(|e| BenchError::io(log, e))?;
    let mut cmd = if time_v.exists() {
        let mut c = Command::new(time_v);
        c.arg("-v").arg(exe()?);
        c
    } else {
        Command::new(exe()?)
    };
    cmd.args(args).stdout(Stdio::null()).stderr(err);
    let start = Instant::now();
    let failed =
        |e: std::io::Error| BenchError::Child(format!("`diffnmf {}`: {e}", args.join(" ")));
    let mut child = cmd.spawn().map_err(failed)?;
    let mut polled: Option<u64> = None;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(failed)? {
            break s;
        }
        if let Some(k) = vm_hwm(child.id()) {
            polled = Some(polled.map_or(k, |p| p.max(k)));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = start.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if !status.success() {
        let tail: String = text.lines().rev().take(15).collect::<Vec<_>>().join("\n");
        return Err(BenchError::Child(format!(
            "`diffnmf {}` failed ({status}); last log lines (reversed):\n{tail}",
            args.join(" ")
        )));
    }
    let from_time = text
        .lines()
        .find(|l| l.contains("Maximum resident set size"))
        .and_then(|l| l.rsplit(':').next())
        .and_then(|v| v.trim().parse::<u64>().ok());
    Ok((wall, from_time.or(polled)))
}

/// The whole `diffnmf run jobs/paper.yaml` (quick: a tiny override of it), timed once.
pub fn pipeline(ctx: &mut Ctx) -> Result<()> {
    let job = Path::new("jobs/paper.yaml");
    let job = if job.exists() {
        job.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/paper.yaml")
    };
    let out = scratch("run");
    let mut args: Vec<String> = vec!["run".into(), job.display().to_string(), "--out".into()];
    args.push(out.display().to_string());
    args.extend(["--threads".into(), ctx.threads.to_string()]);
    if ctx.quick {
        for s in [
            "data.subset=600",
            "cnn.epochs=1",
            "classifier.epochs=1",
            "diffusion.epochs=1",
            "nnmf.max_iter=10",
            "attack.iterations=5",
            "attack.eot=2",
            "attack.max_points=20",
            "diffusion.passes=2",
            "attack.score_repeats=2",
        ] {
            args.extend(["--set".into(), s.into()]);
        }
    }
    let log = scratch("run.log");
    let (wall, rss) = measure(&args, &log)?;
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&log);
    let t = super::Timing {
        median: wall,
        min: wall,
        runs: 1,
    };
    let size = if ctx.quick {
        "jobs/paper.yaml (tiny overrides)"
    } else {
        "jobs/paper.yaml"
    };
    let row = ctx.push("pipeline", size.into(), t, None);
    row.note = match rss {
        Some(k) => format!("single run; peak RSS {:.0} MiB", k as f64 / 1024.0),
        None => "single run; peak RSS unknown".into(),
    };
    Ok(())
}
