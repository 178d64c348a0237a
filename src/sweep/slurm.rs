//! The Slurm executor: the cluster's array limit, rendering of the array scripts (pure
//! functions, golden-tested), submission with `sbatch --parsable`, and the record of every
//! accepted job in `slurm/jobs.txt`.
//!
//! **Arrays at scale.** A submission of n cells (in execution order) is split into
//! consecutive arrays ("parts") of at most `MaxArraySize` tasks each — read from
//! `scontrol show config` (default [`DEFAULT_MAX_ARRAY_SIZE`] when scontrol is missing or
//! silent), lowered by `slurm.max_array_size` — so task indices stay within
//! `0..=MaxArraySize-1` (2,500 cells at 1001: parts of 1001, 1001 and 498 tasks). Each part
//! has its own map file (task i → cell index on line i) and script: part 1 of the first
//! submission is `order.txt` / `array.sbatch`, part k ≥ 2 `order-part<k>.txt` /
//! `array-part<k>.sbatch`; resubmission n uses `resume-<n>[-part<k>].{txt,sbatch}`. With
//! `slurm.parallelism` set, part k+1 is chained `afterany` on part k (and part 1 of a
//! resubmission on every earlier array still active), so the sweep never runs more than
//! `parallelism` tasks at once; without it all parts run together.
//! The aggregation job depends `afterany` on every part of the submission and on every
//! earlier array that still has tasks pending or running.
//!
//! **Record.** `slurm/jobs.txt` holds one line per accepted array,
//! `<array id> <aggregation id or -> <map file> <submission n>`, appended right after its
//! sbatch returns (before the next sbatch); the aggregation id replaces `-` once that job
//! is accepted. Older 3-field lines (`<array> <aggregation> <map>`, one submission each) are
//! still read. A refused part or aggregation job leaves what was accepted recorded, so
//! `--resume` never resubmits a cell whose task is pending or running and submits the
//! missing aggregation job. Submissions into one sweep folder are serialised by a lock on
//! `slurm/.submit.lock`.
//!
//! Quoting: `#SBATCH` lines are read by sbatch's own option parser, not by a shell; values
//! are wrapped in single quotes there (which it strips) and values containing a single
//! quote or a control character are rejected. `--output` is also a filename pattern: a `%`
//! of the sweep folder is written `%%` (a backslash, which would switch off every pattern,
//! is rejected). Shell lines (the `exec` of the cell) quote every word POSIX-style. `setup`
//! lines are the user's own shell commands and run verbatim (one line each; newlines
//! rejected).

use super::spec::{check_line, SlurmSpec};
use crate::error::{Error, Result};
use crate::results::paths;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Slurm's default `MaxArraySize`, used when `scontrol show config` does not say.
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 1001;

/// One accepted array from `slurm/jobs.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    pub array_id: String,
    /// The aggregation job chained on it (None: not submitted, or refused).
    pub aggregate_id: Option<String>,
    /// Its map file, relative to `slurm/`.
    pub map: String,
    /// Which submission (0 = the first, n = the n-th `--resume`) the array belongs to.
    pub submission: usize,
}

fn parse_jobs(text: &str) -> Vec<Submission> {
    let mut out = vec![];
    let mut old = 0;
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let agg = |a: &str| (a != "-").then(|| a.to_string());
        match f.as_slice() {
            [a, g, m] => {
                out.push(Submission {
                    array_id: a.to_string(),
                    aggregate_id: agg(g),
                    map: m.to_string(),
                    submission: old,
                });
                old += 1;
            }
            [a, g, m, n] => {
                if let Ok(n) = n.parse() {
                    out.push(Submission {
                        array_id: a.to_string(),
                        aggregate_id: agg(g),
                        map: m.to_string(),
                        submission: n,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn jobs_line(s: &Submission) -> String {
    format!(
        "{} {} {} {}\n",
        s.array_id,
        s.aggregate_id.as_deref().unwrap_or("-"),
        s.map,
        s.submission
    )
}

/// The arrays recorded for a sweep, oldest first.
pub fn submissions(dir: &Path) -> Vec<Submission> {
    parse_jobs(&std::fs::read_to_string(paths::slurm_jobs(dir)).unwrap_or_default())
}

/// Whether a recorded array has no aggregation job yet (refused, or interrupted before
/// it): `--resume` then submits one even when no cell needs to run.
pub fn aggregation_missing(dir: &Path) -> bool {
    submissions(dir).iter().any(|s| s.aggregate_id.is_none())
}

/// `MaxArraySize = N` of `scontrol show config` output.
pub fn parse_max_array_size(text: &str) -> Option<usize> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "MaxArraySize").then(|| v.trim().parse().ok())?
    })
}

/// The array size limit in force and where it came from (for messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayLimit {
    pub max: usize,
    pub source: String,
}

/// Run a command with a deadline; its stdout if it exited 0 within it.
fn output_within(cmd: &mut Command, limit: Duration) -> Option<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if t.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let text = reader.join().ok()?;
    status.filter(|s| s.success()).map(|_| text)
}

/// The cluster's `MaxArraySize` (from `scontrol show config`, waiting at most 10 s; else
/// [`DEFAULT_MAX_ARRAY_SIZE`]), lowered to `slurm.max_array_size` when that is set.
pub fn array_limit(s: &SlurmSpec) -> Result<ArrayLimit> {
    let text = output_within(
        Command::new("scontrol").args(["show", "config"]),
        Duration::from_secs(10),
    );
    let (max, source) = match text.as_deref().and_then(parse_max_array_size) {
        Some(0) => {
            return Err(bad(
                "slurm",
                "`scontrol show config` says MaxArraySize = 0: job arrays are disabled on this cluster, \
                 so a sweep cannot be submitted as arrays; ask the admins or run it with --executor local"
                    .into(),
            ))
        }
        Some(m) => (m, "MaxArraySize of `scontrol show config`".to_string()),
        None => (
            DEFAULT_MAX_ARRAY_SIZE,
            "Slurm's default MaxArraySize; `scontrol show config` did not say".to_string(),
        ),
    };
    Ok(match s.max_array_size {
        Some(m) if m < max => ArrayLimit {
            max: m,
            source: format!("slurm.max_array_size of the sweep file; {source} is {max}"),
        },
        _ => ArrayLimit { max, source },
    })
}

/// Split `n` tasks into consecutive parts of at most `max` (all full but the last).
pub fn split_sizes(n: usize, max: usize) -> Vec<std::ops::Range<usize>> {
    let max = max.max(1);
    (0..n.div_ceil(max))
        .map(|i| i * max..((i + 1) * max).min(n))
        .collect()
}

/// Map file and script of part `part` (0-based) of submission `n` (0 = the first).
pub fn part_files(dir: &Path, n: usize, part: usize) -> (PathBuf, PathBuf) {
    let sd = paths::slurm_dir(dir);
    match (n, part) {
        (0, 0) => (paths::array_order(dir), paths::array_sbatch(dir)),
        (0, p) => (
            sd.join(format!("order-part{}.txt", p + 1)),
            sd.join(format!("array-part{}.sbatch", p + 1)),
        ),
        (n, 0) => (paths::resume_map(dir, n), paths::resume_sbatch(dir, n)),
        (n, p) => (
            sd.join(format!("resume-{n}-part{}.txt", p + 1)),
            sd.join(format!("resume-{n}-part{}.sbatch", p + 1)),
        ),
    }
}

/// The aggregation script (rewritten by every submission).
pub fn aggregate_script(dir: &Path) -> PathBuf {
    paths::slurm_dir(dir).join("aggregate.sbatch")
}

/// One array of a submission: its cells (indices, in task order), map file and script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayPart {
    pub cells: Vec<usize>,
    pub map: PathBuf,
    pub script: PathBuf,
    pub body: String,
}

/// The arrays of submission `n` of `cells` (cell indices in execution order) at the array
/// limit `max`: file names and rendered scripts. Pure; golden-tested.
pub fn plan_submission(
    s: &SlurmSpec,
    sweep_name: &str,
    exe: &Path,
    dir: &Path,
    n: usize,
    cells: &[usize],
    max: usize,
) -> Result<Vec<ArrayPart>> {
    let ranges = split_sizes(cells.len(), max);
    let count = ranges.len();
    ranges
        .into_iter()
        .enumerate()
        .map(|(p, r)| {
            let (map, script) = part_files(dir, n, p);
            let part = (count > 1).then_some((p + 1, count, max));
            let body = render_array(s, sweep_name, exe, dir, &map, r.len(), part)?;
            Ok(ArrayPart {
                cells: cells[r].to_vec(),
                map,
                script,
                body,
            })
        })
        .collect()
}

/// Number of the next submission: one more than the highest recorded (0 when none).
fn next_submission(subs: &[Submission]) -> usize {
    subs.iter().map(|s| s.submission + 1).max().unwrap_or(0)
}

/// POSIX shell single-quoting: `it's` → `'it'\''s'`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn bad(key: &str, msg: String) -> Error {
    Error::Param {
        key: key.into(),
        msg,
    }
}

/// A value for an `#SBATCH --name=VALUE` line, single-quoted.
fn sbatch_value(key: &str, v: &str) -> Result<String> {
    check_line(Path::new("slurm block"), key, v)?;
    if v.contains('\'') {
        return Err(bad(
            key,
            format!("value {v:?} contains a single quote, which sbatch's option parser cannot take; remove it"),
        ));
    }
    Ok(format!("'{v}'"))
}

/// An `extra_sbatch` entry `--name` or `--name=value` → its `#SBATCH` line.
fn extra_line(entry: &str) -> Result<String> {
    let (name, value) = match entry.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (entry.trim(), None),
    };
    let ok = name.strip_prefix("--").is_some_and(|n| {
        n.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    });
    if !ok {
        return Err(bad(
            "slurm.extra_sbatch",
            format!("`{entry}` must be a long option `--name` or `--name=value`, e.g. --constraint=haswell"),
        ));
    }
    Ok(match value {
        Some(v) => format!("#SBATCH {name}={}", sbatch_value("slurm.extra_sbatch", v)?),
        None => format!("#SBATCH {name}"),
    })
}

/// The `#SBATCH` lines of the `slurm:` block common to the array and aggregation jobs
/// (`with_resources`: the array's resources, signal, requeue and `extra_sbatch`, which
/// come last so they can override anything before them).
fn block_lines(s: &SlurmSpec, with_resources: bool) -> Result<Vec<String>> {
    let mut v: Vec<(&str, &Option<String>)> = vec![("account", &s.account)];
    if with_resources {
        v.push(("cpus-per-task", &s.cpus_per_task));
        v.push(("gpus", &s.gpus));
        v.push(("mem", &s.mem));
    }
    v.extend([
        ("partition", &s.partition),
        ("qos", &s.qos),
        ("time", &s.time),
    ]);
    let mut out = vec![];
    for (name, val) in v {
        if let Some(val) = val {
            let key = format!("slurm.{}", name.replace('-', "_"));
            out.push(format!("#SBATCH --{name}={}", sbatch_value(&key, val)?));
        }
    }
    if with_resources {
        // B: the batch shell `exec`s diffnmf, so diffnmf itself receives USR2.
        if s.signal_grace > 0 {
            out.push(format!("#SBATCH --signal=B:USR2@{}", s.signal_grace));
        }
        out.push(
            if s.requeue {
                "#SBATCH --requeue"
            } else {
                "#SBATCH --no-requeue"
            }
            .into(),
        );
        for e in &s.extra_sbatch {
            out.push(extra_line(e)?);
        }
    }
    Ok(out)
}

/// `--output` value: the sweep folder as a literal in sbatch's filename pattern (`%` →
/// `%%`) followed by `pattern` (e.g. `%A_%a.out`).
fn output_pattern(dir: &Path, pattern: &str) -> Result<String> {
    let logs = paths::slurm_logs(dir).display().to_string();
    if logs.contains('\\') {
        return Err(Error::Results {
            path: dir.to_path_buf(),
            msg: "the sweep folder contains a backslash, which switches off sbatch's `--output` \
                  filename patterns (%A, %a, %j); choose an --out folder without `\\`"
                .into(),
        });
    }
    let value = format!("{}/{pattern}", logs.replace('%', "%%"));
    sbatch_value("sweep dir", &value)
}

/// Render the array script: `n_tasks` tasks, at most `slurm.parallelism` at once, task `i`
/// running cell `map[i]` of the sweep in `dir` with the binary `exe`.
pub fn render_sbatch(
    s: &SlurmSpec,
    sweep_name: &str,
    exe: &Path,
    dir: &Path,
    map: &Path,
    n_tasks: usize,
) -> Result<String> {
    render_array(s, sweep_name, exe, dir, map, n_tasks, None)
}

/// [`render_sbatch`] for part `(k, of, max)` of a submission split at `MaxArraySize` `max`
/// (None: the submission is one array).
pub fn render_array(
    s: &SlurmSpec,
    sweep_name: &str,
    exe: &Path,
    dir: &Path,
    map: &Path,
    n_tasks: usize,
    part: Option<(usize, usize, usize)>,
) -> Result<String> {
    if n_tasks == 0 {
        return Err(bad("cells", "nothing to submit (zero tasks)".into()));
    }
    let par = s.parallelism.map_or(String::new(), |p| format!("%{p}"));
    let what = match part {
        Some((k, of, max)) => {
            format!("one array task per cell, part {k} of {of} (arrays of at most {max} tasks)")
        }
        None => "one array task per cell".into(),
    };
    let mut out = vec![
        "#!/bin/bash".to_string(),
        format!(
            "# diffnmf sweep `{sweep_name}`: {what} (rendered by `diffnmf sweep --executor slurm`)"
        ),
        format!(
            "#SBATCH --job-name={}",
            sbatch_value("name", &format!("diffnmf-{sweep_name}"))?
        ),
        format!("#SBATCH --array=0-{}{par}", n_tasks - 1),
        format!("#SBATCH --output={}", output_pattern(dir, "%A_%a.out")?),
    ];
    out.extend(block_lines(s, true)?);
    out.push("set -euo pipefail".into());
    for (i, l) in s.setup.iter().enumerate() {
        check_line(Path::new("slurm block"), &format!("slurm.setup[{i}]"), l)?;
        out.push(l.clone());
    }
    out.push(format!(
        "exec {} cell {} --index \"$SLURM_ARRAY_TASK_ID\" --map {}",
        sh_quote(&exe.display().to_string()),
        sh_quote(&dir.display().to_string()),
        sh_quote(&map.display().to_string()),
    ));
    Ok(out.join("\n") + "\n")
}

/// Render the aggregation job: refresh `cells.csv` with `diffnmf status`, then run
/// `diffnmf aggregate` (its exit status is the job's).
pub fn render_aggregate(s: &SlurmSpec, sweep_name: &str, exe: &Path, dir: &Path) -> Result<String> {
    let (exe, d) = (
        sh_quote(&exe.display().to_string()),
        sh_quote(&dir.display().to_string()),
    );
    let mut out = vec![
        "#!/bin/bash".to_string(),
        format!("# diffnmf sweep `{sweep_name}`: aggregation, chained afterany on the arrays"),
        format!(
            "#SBATCH --job-name={}",
            sbatch_value("name", &format!("diffnmf-{sweep_name}-aggregate"))?
        ),
        format!(
            "#SBATCH --output={}",
            output_pattern(dir, "aggregate_%j.out")?
        ),
    ];
    out.extend(block_lines(s, false)?);
    out.extend(s.setup.iter().cloned());
    out.push(format!("{exe} status {d} --summary || true"));
    out.push(format!("exec {exe} aggregate {d}"));
    Ok(out.join("\n") + "\n")
}

/// Why sbatch refused a script (its message, stdout and exit code).
#[derive(Debug)]
struct Refusal {
    script: PathBuf,
    msg: String,
}

impl Refusal {
    fn into_error(self, extra: &str) -> Error {
        Error::Results {
            path: self.script,
            msg: format!("{}{extra}", self.msg),
        }
    }
}

fn sbatch_raw(args: &[String], script: &Path) -> std::result::Result<String, Refusal> {
    let refused = |msg: String| Refusal {
        script: script.to_path_buf(),
        msg,
    };
    let o = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            refused(format!(
                "cannot run sbatch ({e}); is Slurm installed and SLURM_CONF set?"
            ))
        })?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if !o.status.success() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        let err = String::from_utf8_lossy(&o.stderr);
        return Err(refused(format!(
            "sbatch failed (exit {:?}): {}",
            o.status.code(),
            [err.trim(), stdout.trim()]
                .iter()
                .filter(|t| !t.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" / ")
        )));
    }
    Ok(id)
}

/// Run `sbatch --parsable [args] script` and return the job id.
pub fn sbatch(args: &[String], script: &Path) -> Result<String> {
    sbatch_raw(args, script).map_err(|r| r.into_error(""))
}

fn append_line(jobs: &Path, line: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(jobs)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// What [`submit`] got accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    /// Submission number (0 = the first).
    pub n: usize,
    /// `(array id, tasks)` per part.
    pub arrays: Vec<(String, usize)>,
    pub aggregate_id: String,
    /// Every job the aggregation waits for (`afterany`).
    pub waits_for: Vec<String>,
    pub limit: ArrayLimit,
}

/// Earlier arrays that still have a task pending or running.
fn active_arrays(subs: &[Submission]) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for s in subs {
        if out.contains(&s.array_id) {
            continue;
        }
        let st = super::status::array_states(&s.array_id);
        if st.values().any(|v| super::status::is_active(v)) {
            out.push(s.array_id.clone());
        }
    }
    out
}

/// Submit `cells` (cell indices in execution order) as the next submission: write its map
/// files and scripts, submit its arrays (each split at the array limit, each recorded in
/// `slurm/jobs.txt` as soon as sbatch accepts it) and the aggregation job chained
/// `afterany` on them and on earlier arrays still active. With no cells, only the
/// aggregation job is submitted (for arrays recorded without one). An error after some
/// array was accepted says what was submitted and that `resume` (the command line that
/// continues, for messages) does.
pub fn submit(
    s: &SlurmSpec,
    sweep_name: &str,
    exe: &Path,
    dir: &Path,
    cells: &[usize],
    resume: &str,
) -> Result<Submitted> {
    let sd = paths::slurm_dir(dir);
    std::fs::create_dir_all(&sd).map_err(|e| Error::io(&sd, e))?;
    // Submissions into one folder are serialised (where the file system has locks).
    let _lock = crate::cache::lock_file(&sd.join(".submit.lock"))?;
    submit_locked(s, sweep_name, exe, dir, cells, resume)
}

fn submit_locked(
    s: &SlurmSpec,
    sweep_name: &str,
    exe: &Path,
    dir: &Path,
    cells: &[usize],
    resume: &str,
) -> Result<Submitted> {
    let subs = submissions(dir);
    let n = next_submission(&subs);
    let limit = array_limit(s)?;
    let parts = plan_submission(s, sweep_name, exe, dir, n, cells, limit.max)?;
    for p in &parts {
        let text: String = p.cells.iter().map(|c| format!("{c}\n")).collect();
        crate::results::write_atomic(&p.map, text.as_bytes())?;
        crate::results::write_atomic(&p.script, p.body.as_bytes())?;
    }
    let agg_script = aggregate_script(dir);
    let agg = render_aggregate(s, sweep_name, exe, dir)?;
    crate::results::write_atomic(&agg_script, agg.as_bytes())?;
    let mut run = Submitting {
        s,
        dir,
        jobs: paths::slurm_jobs(dir),
        n,
        limit,
        resume,
        arrays: vec![],
        waits_for: active_arrays(&subs),
    };
    for (k, p) in parts.iter().enumerate() {
        run.submit_part(k, parts.len(), p)?;
    }
    let aggregate_id = run.submit_aggregation(&agg_script)?;
    run.record_aggregation(&aggregate_id)?;
    Ok(Submitted {
        n,
        arrays: run.arrays,
        aggregate_id,
        waits_for: run.waits_for,
        limit: run.limit,
    })
}

/// A submission in progress: where it is recorded and what sbatch accepted so far.
struct Submitting<'a> {
    s: &'a SlurmSpec,
    dir: &'a Path,
    /// `slurm/jobs.txt`.
    jobs: PathBuf,
    /// Submission number.
    n: usize,
    limit: ArrayLimit,
    /// The command line that continues the submission (for messages).
    resume: &'a str,
    /// `(array id, tasks)` of every accepted part.
    arrays: Vec<(String, usize)>,
    /// Every job the aggregation waits for: earlier active arrays, then the accepted parts.
    waits_for: Vec<String>,
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_default()
}

impl Submitting<'_> {
    /// `id (t tasks), …` of the accepted arrays.
    fn accepted(&self) -> String {
        self.arrays
            .iter()
            .map(|(id, t)| format!("{id} ({t} tasks)"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Submit part `k` of `count` and record it in `slurm/jobs.txt`.
    fn submit_part(&mut self, k: usize, count: usize, p: &ArrayPart) -> Result<()> {
        // With a parallelism cap only one array runs at a time: each part waits for the
        // previous one, the first for every earlier array still active.
        let before: Vec<String> = match self.arrays.last() {
            Some((prev, _)) => vec![prev.clone()],
            None => self.waits_for.clone(),
        };
        let mut args = vec![];
        if self.s.parallelism.is_some() && !before.is_empty() {
            args.push(format!("--dependency=afterany:{}", before.join(":")));
        }
        let id = sbatch_raw(&args, &p.script).map_err(|r| self.part_refused(r, k, count, p))?;
        let line = jobs_line(&Submission {
            array_id: id.clone(),
            aggregate_id: None,
            map: file_name(&p.map),
            submission: self.n,
        });
        append_line(&self.jobs, &line).map_err(|e| Error::Results {
            path: self.jobs.clone(),
            msg: format!(
                "array job {id} was submitted but could not be recorded ({e}); free the space or fix \
                 the permissions, then add the line `{}` to this file, or cancel it with `scancel {id}`",
                line.trim_end()
            ),
        })?;
        self.arrays.push((id.clone(), p.cells.len()));
        self.waits_for.push(id);
        Ok(())
    }

    /// The error of a refused part `k` of `count`: sbatch's message, a hint when it
    /// concerns the array size, and what was already submitted.
    fn part_refused(&self, r: Refusal, k: usize, count: usize, p: &ArrayPart) -> Error {
        let refused_array = r.msg.to_ascii_lowercase().contains("array");
        let hint = if refused_array {
            format!(
                "; the array had {} tasks (--array=0-{}); the array limit used was {} ({}): \
                 if this cluster allows fewer tasks per array, set `slurm.max_array_size` in the sweep file",
                p.cells.len(),
                p.cells.len() - 1,
                self.limit.max,
                self.limit.source
            )
        } else {
            String::new()
        };
        let done = if self.arrays.is_empty() {
            String::new()
        } else {
            format!(
                "; already submitted and recorded in {}: array job(s) {} ({k} of {count} parts); \
                 no aggregation job was submitted; `{}` submits the remaining cells and the \
                 aggregation (tasks pending or running are not resubmitted)",
                self.jobs.display(),
                self.accepted(),
                self.resume
            )
        };
        r.into_error(&format!("{hint}{done}"))
    }

    /// Submit the aggregation job, chained `afterany` on every job it waits for.
    fn submit_aggregation(&self, script: &Path) -> Result<String> {
        let mut args = vec![];
        if !self.waits_for.is_empty() {
            args.push(format!(
                "--dependency=afterany:{}",
                self.waits_for.join(":")
            ));
        }
        sbatch_raw(&args, script).map_err(|r| {
            let done = if self.arrays.is_empty() {
                String::new()
            } else {
                format!(
                    "; the array job(s) {} were submitted and are recorded in {}, but no aggregation job \
                     was; `{}` submits it (tasks pending or running are not resubmitted), or run \
                     `diffnmf aggregate {}` when they finish",
                    self.accepted(),
                    self.jobs.display(),
                    self.resume,
                    sh_quote(&self.dir.display().to_string())
                )
            };
            r.into_error(&format!("; sbatch refused the aggregation job{done}"))
        })
    }

    /// Every recorded array without an aggregation job now has `agg_id`.
    fn record_aggregation(&self, agg_id: &str) -> Result<()> {
        let all: String = submissions(self.dir)
            .into_iter()
            .map(|mut sub| {
                if sub.aggregate_id.is_none() {
                    sub.aggregate_id = Some(agg_id.to_string());
                }
                jobs_line(&sub)
            })
            .collect();
        crate::results::write_atomic(&self.jobs, all.as_bytes()).map_err(|e| Error::Results {
            path: self.jobs.clone(),
            msg: format!(
                "aggregation job {agg_id} was submitted but could not be recorded ({e}); the arrays are \
                 recorded, so `{}` would submit a second one: cancel this one with `scancel {agg_id}` first",
                self.resume
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_sh() {
        for s in ["plain", "a b", "it's", "$(touch x)", "`id`", "a;b", "\"q\""] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn max_array_size_is_read_from_scontrol_output() {
        let t = "Configuration data as of 2026-01-01T00:00:00\nMaxArraySize            = 40001\nMaxJobCount = 10000\n";
        assert_eq!(parse_max_array_size(t), Some(40001));
        assert_eq!(parse_max_array_size("MaxJobCount = 10000\n"), None);
        assert_eq!(parse_max_array_size("MaxArraySize = x\n"), None);
        assert_eq!(parse_max_array_size("MaxArraySizeX = 3\n"), None);
    }

    #[test]
    fn splits_keep_task_indices_below_max_array_size() {
        let sizes = |n, m| {
            split_sizes(n, m)
                .iter()
                .map(|r| r.len())
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(2500, 1001), [1001, 1001, 498]);
        assert_eq!(sizes(1001, 1001), [1001]);
        assert_eq!(sizes(1002, 1001), [1001, 1]);
        assert_eq!(sizes(3, 1), [1, 1, 1]);
        assert!(sizes(0, 1001).is_empty());
        let r = split_sizes(2500, 1001);
        assert_eq!((r[0].start, r[2].end), (0, 2500));
        assert!(r.windows(2).all(|w| w[0].end == w[1].start));
    }

    #[test]
    fn jobs_file_reads_old_and_new_lines() {
        // Two old 3-field lines (one submission each), then a 2-part resubmission whose
        // aggregation job is still missing.
        let t = "10 11 order.txt\n12 13 resume-1.txt\n20 - resume-2.txt 2\n21 - resume-2-part2.txt 2\ngarbage\n";
        let subs = parse_jobs(t);
        assert_eq!(subs.len(), 4);
        assert_eq!(
            subs[1],
            Submission {
                array_id: "12".into(),
                aggregate_id: Some("13".into()),
                map: "resume-1.txt".into(),
                submission: 1
            }
        );
        assert_eq!(
            (subs[3].submission, subs[3].aggregate_id.as_deref()),
            (2, None)
        );
        assert_eq!(next_submission(&subs), 3);
        assert_eq!(next_submission(&parse_jobs(t.lines().next().unwrap())), 1);
        assert_eq!(next_submission(&[]), 0);
        for s in &subs[2..] {
            assert_eq!(parse_jobs(&jobs_line(s)), std::slice::from_ref(s));
        }
    }

    #[test]
    fn part_files_keep_the_first_names() {
        let d = Path::new("/s");
        let name = |n, p| {
            let (m, s) = part_files(d, n, p);
            format!("{} {}", m.display(), s.display())
        };
        assert_eq!(name(0, 0), "/s/slurm/order.txt /s/slurm/array.sbatch");
        assert_eq!(
            name(0, 1),
            "/s/slurm/order-part2.txt /s/slurm/array-part2.sbatch"
        );
        assert_eq!(name(3, 0), "/s/slurm/resume-3.txt /s/slurm/resume-3.sbatch");
        assert_eq!(
            name(3, 2),
            "/s/slurm/resume-3-part3.txt /s/slurm/resume-3-part3.sbatch"
        );
    }

    #[test]
    fn extra_lines_are_validated() {
        assert_eq!(extra_line("--exclusive").unwrap(), "#SBATCH --exclusive");
        assert_eq!(
            extra_line("--constraint=a&b").unwrap(),
            "#SBATCH --constraint='a&b'"
        );
        for badx in ["-C x", "--x;rm=1", "constraint=x", "--c=a'b", "--c=a\nb"] {
            assert!(extra_line(badx).is_err(), "{badx}");
        }
    }
}
