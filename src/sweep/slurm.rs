//! The Slurm executor: renders the array script (a pure function, golden-tested), submits
//! it with `sbatch --parsable`, chains the aggregation job with
//! `--dependency=afterany:<array id>`, and records both ids in `slurm/jobs.txt`.
//!
//! Quoting: `#SBATCH` lines are read by sbatch's own option parser, not by a shell; values
//! are wrapped in single quotes there (which it strips) and values containing a single
//! quote or a control character are rejected. Shell lines (the `exec` of the cell) quote
//! every word POSIX-style. `setup` lines are the user's own shell commands and run verbatim
//! (one line each; newlines rejected).

use super::spec::{check_line, SlurmSpec};
use crate::error::{Error, Result};
use crate::results::paths;
use std::path::Path;
use std::process::Command;

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

/// The `#SBATCH` lines of the `slurm:` block common to the array and aggregation jobs.
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
        for e in &s.extra_sbatch {
            out.push(extra_line(e)?);
        }
    }
    Ok(out)
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
    if n_tasks == 0 {
        return Err(bad("cells", "nothing to submit (zero tasks)".into()));
    }
    let par = s.parallelism.map_or(String::new(), |p| format!("%{p}"));
    let logs = paths::slurm_logs(dir).join("%A_%a.out");
    let mut out = vec![
        "#!/bin/bash".to_string(),
        format!("# diffnmf sweep `{sweep_name}`: one array task per cell (rendered by `diffnmf sweep --executor slurm`)"),
        format!("#SBATCH --job-name={}", sbatch_value("name", &format!("diffnmf-{sweep_name}"))?),
        format!("#SBATCH --array=0-{}{par}", n_tasks - 1),
        format!("#SBATCH --output={}", sbatch_value("sweep dir", &logs.display().to_string())?),
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
    let log = paths::slurm_logs(dir).join("aggregate_%j.out");
    let (exe, d) = (
        sh_quote(&exe.display().to_string()),
        sh_quote(&dir.display().to_string()),
    );
    let mut out = vec![
        "#!/bin/bash".to_string(),
        format!("# diffnmf sweep `{sweep_name}`: aggregation, chained afterany on the array"),
        format!(
            "#SBATCH --job-name={}",
            sbatch_value("name", &format!("diffnmf-{sweep_name}-aggregate"))?
        ),
        format!(
            "#SBATCH --output={}",
            sbatch_value("sweep dir", &log.display().to_string())?
        ),
    ];
    out.extend(block_lines(s, false)?);
    out.extend(s.setup.iter().cloned());
    out.push(format!("{exe} status {d} --summary || true"));
    out.push(format!("exec {exe} aggregate {d}"));
    Ok(out.join("\n") + "\n")
}

/// Run `sbatch --parsable [args] script` and return the job id.
pub fn sbatch(args: &[String], script: &Path) -> Result<String> {
    let o = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script)
        .output()
        .map_err(|e| Error::Results {
            path: script.to_path_buf(),
            msg: format!("cannot run sbatch ({e}); is Slurm installed and SLURM_CONF set?"),
        })?;
    let stdout = String::from_utf8_lossy(&o.stdout);
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if !o.status.success() || id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::Results {
            path: script.to_path_buf(),
            msg: format!(
                "sbatch failed (exit {:?}): {}{}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr).trim(),
                stdout.trim()
            ),
        });
    }
    Ok(id)
}

/// Write the map and scripts of the next submission of `cells` (cell indices in execution
/// order), submit the array and the chained aggregation job, and record them in
/// `slurm/jobs.txt`. Returns `(array id, aggregate id)`.
pub fn submit(
    s: &SlurmSpec,
    sweep_name: &str,
    exe: &Path,
    dir: &Path,
    cells: &[usize],
) -> Result<(String, String)> {
    let n = super::status::submissions(dir).len();
    let (map, script) = if n == 0 {
        (paths::array_order(dir), paths::array_sbatch(dir))
    } else {
        (paths::resume_map(dir, n), paths::resume_sbatch(dir, n))
    };
    let text: String = cells.iter().map(|c| format!("{c}\n")).collect();
    crate::results::write_atomic(&map, text.as_bytes())?;
    let body = render_sbatch(s, sweep_name, exe, dir, &map, cells.len())?;
    crate::results::write_atomic(&script, body.as_bytes())?;
    let agg_script = paths::slurm_dir(dir).join("aggregate.sbatch");
    let agg = render_aggregate(s, sweep_name, exe, dir)?;
    crate::results::write_atomic(&agg_script, agg.as_bytes())?;
    let array_id = sbatch(&[], &script)?;
    let agg_id = sbatch(&[format!("--dependency=afterany:{array_id}")], &agg_script)?;
    let line = format!(
        "{array_id} {agg_id} {}\n",
        map.file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default()
    );
    use std::io::Write;
    let jobs = paths::slurm_jobs(dir);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jobs)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| Error::io(&jobs, e))?;
    Ok((array_id, agg_id))
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
