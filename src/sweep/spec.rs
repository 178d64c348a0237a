//! Sweep files (`sweeps/*.yaml`): parsing and validation of the grid (axes, seeds, fixed
//! overrides) and of the `slurm:` block (including `signal_grace`, `requeue` and
//! `max_array_size`, rendered by [`super::slurm`]). A relative `base:` is resolved against
//! the folder of the sweep file, and only there. Every error names the sweep file and the
//! key.

use crate::error::{Error, Result};
use serde::Serialize;
use serde_yaml_ng::{Mapping, Value};
use std::path::{Path, PathBuf};

/// One axis of the grid: a dotted job key and the values it takes, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Axis {
    pub key: String,
    pub values: Vec<Value>,
}

/// The `slurm:` block. Every value is a single line (checked) and is shell-quoted when
/// rendered; `setup` lines run verbatim at the top of each task (module loads, env).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SlurmSpec {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    pub time: Option<String>,
    pub cpus_per_task: Option<String>,
    pub mem: Option<String>,
    pub gpus: Option<String>,
    /// Array parallelism `%P` (default: all tasks at once).
    pub parallelism: Option<usize>,
    /// Extra `#SBATCH` options, each `--name` or `--name=value`.
    pub extra_sbatch: Vec<String>,
    /// Shell lines run before the cell (e.g. `module load hdf5`).
    pub setup: Vec<String>,
    /// Seconds before the time limit at which Slurm sends USR2 to the task
    /// (`#SBATCH --signal=B:USR2@<grace>`; 0 = no signal). Default 120.
    pub signal_grace: u64,
    /// `#SBATCH --requeue` (true, default) or `--no-requeue`.
    pub requeue: bool,
    /// Upper bound on the tasks of one array, below the cluster's `MaxArraySize` (for
    /// clusters whose limit `scontrol show config` does not show). None = the cluster's.
    pub max_array_size: Option<usize>,
}

/// Default of `slurm.signal_grace` (seconds).
pub const DEFAULT_SIGNAL_GRACE: u64 = 120;
/// Largest signal time sbatch accepts (`--signal=…@<0..65535>`).
pub const MAX_SIGNAL_GRACE: u64 = 65535;

impl Default for SlurmSpec {
    fn default() -> Self {
        SlurmSpec {
            partition: None,
            account: None,
            qos: None,
            time: None,
            cpus_per_task: None,
            mem: None,
            gpus: None,
            parallelism: None,
            extra_sbatch: vec![],
            setup: vec![],
            signal_grace: DEFAULT_SIGNAL_GRACE,
            requeue: true,
            max_array_size: None,
        }
    }
}

/// A parsed sweep file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SweepSpec {
    pub name: String,
    /// The sweep file itself.
    pub path: PathBuf,
    /// The base job, resolved to an absolute path.
    pub base: PathBuf,
    pub axes: Vec<Axis>,
    pub seeds: Vec<u64>,
    /// Fixed overrides applied to every cell (sweep file `set:` then `--set`).
    pub set: Vec<(String, Value)>,
    pub slurm: SlurmSpec,
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

const TOP_KEYS: [&str; 6] = ["name", "base", "axes", "seeds", "set", "slurm"];

/// Read and parse a sweep file; `cli_set` are extra `key=value` overrides for every cell.
pub fn load_sweep(path: &Path, cli_set: &[String]) -> Result<SweepSpec> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_sweep(path, &text, cli_set)
}

/// Parse sweep text; `path` locates the base job and names the file in errors.
pub fn parse_sweep(path: &Path, text: &str, cli_set: &[String]) -> Result<SweepSpec> {
    let raw: Value =
        serde_yaml_ng::from_str(text).map_err(|e| err(path, format!("invalid YAML: {e}")))?;
    let map = raw.as_mapping().ok_or_else(|| {
        err(
            path,
            "a sweep file must be a YAML mapping (base, axes, seeds, …)",
        )
    })?;
    for k in map.keys() {
        let k = k.as_str().unwrap_or("?");
        if !TOP_KEYS.contains(&k) {
            return Err(err(
                path,
                format!("unknown key `{k}`; allowed: {}", TOP_KEYS.join(", ")),
            ));
        }
    }
    let get = |k: &str| map.get(Value::String(k.into()));
    let name = parse_name(path, get("name"))?;
    let base = match get("base") {
        Some(v) => resolve_base(path, &scalar(path, "base", v)?)?,
        None => {
            return Err(err(
                path,
                "`base` is missing: name a job file, e.g. base: jobs/paper.yaml",
            ))
        }
    };
    let axes = match get("axes") {
        Some(Value::Mapping(m)) => parse_axes(path, m)?,
        Some(Value::Null) | None => vec![],
        Some(_) => {
            return Err(err(
                path,
                "`axes` must be a mapping of dotted job keys to values",
            ))
        }
    };
    let seeds = parse_seeds(path, get("seeds"))?;
    let set = parse_set(path, get("set"), cli_set)?;
    let slurm = match get("slurm") {
        None | Some(Value::Null) => SlurmSpec::default(),
        Some(Value::Mapping(m)) => parse_slurm(path, m)?,
        Some(_) => return Err(err(path, "`slurm` must be a mapping (partition, time, …)")),
    };
    Ok(SweepSpec {
        name,
        path: path.to_path_buf(),
        base,
        axes,
        seeds,
        set,
        slurm,
    })
}

/// `name` (default: the file stem), a plain folder name.
fn parse_name(path: &Path, v: Option<&Value>) -> Result<String> {
    let name = match v {
        Some(v) => scalar(path, "name", v)?,
        None => path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("sweep")
            .to_string(),
    };
    if name.is_empty() || name.contains(['/', '\\', '\n']) || name.starts_with('.') {
        return Err(err(
            path,
            format!("`name`: `{name}` must be a plain folder name"),
        ));
    }
    Ok(name)
}

/// `seeds`: a list of non-negative integers or one (absent: none, the base job's seed).
fn parse_seeds(path: &Path, v: Option<&Value>) -> Result<Vec<u64>> {
    match v {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Sequence(s)) if s.is_empty() => Err(err(
            path,
            "`seeds` is empty: list at least one seed or omit it",
        )),
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    err(
                        path,
                        format!("`seeds`: `{}` is not a non-negative integer", show(v)),
                    )
                })
            })
            .collect(),
        Some(v) => v.as_u64().map(|s| vec![s]).ok_or_else(|| {
            err(
                path,
                "`seeds` must be a list of non-negative integers, e.g. [0, 1, 2]",
            )
        }),
    }
}

/// The fixed overrides: the sweep file's `set:` mapping, then every `--set key=value`.
fn parse_set(path: &Path, v: Option<&Value>, cli_set: &[String]) -> Result<Vec<(String, Value)>> {
    let mut set = vec![];
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                set.push((key_str(path, "set", k)?, v.clone()));
            }
        }
        Some(_) => {
            return Err(err(
                path,
                "`set` must be a mapping of dotted job keys to values",
            ))
        }
    }
    for ov in cli_set {
        let (k, v) = ov
            .split_once('=')
            .ok_or_else(|| err(path, format!("--set `{ov}`: expected key=value")))?;
        let v: Value = serde_yaml_ng::from_str(v)
            .map_err(|e| err(path, format!("--set {k}: `{v}` is not valid YAML: {e}")))?;
        set.push((k.trim().to_string(), v));
    }
    Ok(set)
}

/// `base` as written, or relative to the folder of the sweep file (never to the working
/// directory: a sweep file means the same thing from wherever it is run).
fn resolve_base(path: &Path, rel: &str) -> Result<PathBuf> {
    let rel = Path::new(rel);
    let full = match path.parent() {
        Some(dir) if !rel.is_absolute() => dir.join(rel),
        _ => rel.to_path_buf(),
    };
    let full = std::path::absolute(&full).map_err(|e| Error::io(&full, e))?;
    if !full.is_file() {
        return Err(err(
            path,
            format!(
                "`base`: job file `{}` not found: {} is not a file (a relative `base` is relative to the folder of the sweep file)",
                rel.display(),
                full.display()
            ),
        ));
    }
    Ok(full)
}

fn show(v: &Value) -> String {
    serde_yaml_ng::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("{v:?}"))
}

fn scalar(path: &Path, key: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(err(
            path,
            format!("`{key}` must be a single value, not `{}`", show(v)),
        )),
    }
}

fn key_str(path: &Path, section: &str, k: &Value) -> Result<String> {
    k.as_str().map(str::to_string).ok_or_else(|| {
        err(
            path,
            format!(
                "`{section}`: key `{}` must be a dotted name like nnmf.k",
                show(k)
            ),
        )
    })
}

fn parse_axes(path: &Path, m: &Mapping) -> Result<Vec<Axis>> {
    let mut axes = vec![];
    for (k, v) in m {
        let key = key_str(path, "axes", k)?;
        let values = axis_values(path, &key, v)?;
        if values.is_empty() {
            return Err(err(
                path,
                format!("axis `{key}` is empty: give it at least one value"),
            ));
        }
        axes.push(Axis { key, values });
    }
    Ok(axes)
}

/// A list, `{range: [lo, hi], step: s}` (integers, inclusive) or `{log: [lo, hi], num: n}`.
fn axis_values(path: &Path, key: &str, v: &Value) -> Result<Vec<Value>> {
    let bad = |msg: String| err(path, format!("axis `{key}`: {msg}"));
    match v {
        Value::Sequence(s) => Ok(s.clone()),
        Value::Mapping(m) => {
            if let Some(other) = m
                .keys()
                .find(|k| !matches!(k.as_str(), Some("range" | "step" | "log" | "num")))
            {
                return Err(bad(format!(
                    "unknown field `{}` (use range+step or log+num)",
                    show(other)
                )));
            }
            if field(m, "range").is_some() {
                range_axis(m, &bad)
            } else if field(m, "log").is_some() {
                log_axis(m, &bad)
            } else {
                Err(bad(
                    "a mapping axis needs `range: [lo, hi]` (+ `step`) or `log: [lo, hi]` + `num`"
                        .into(),
                ))
            }
        }
        _ => Err(bad(format!(
            "`{}` is not a list of values or a range",
            show(v)
        ))),
    }
}

fn field<'m>(m: &'m Mapping, name: &str) -> Option<&'m Value> {
    m.get(Value::String(name.into()))
}

/// Field `name` of an axis mapping as a pair `[lo, hi]`.
fn pair(m: &Mapping, name: &str, bad: &dyn Fn(String) -> Error) -> Result<(Value, Value)> {
    match field(m, name) {
        Some(Value::Sequence(s)) if s.len() == 2 => Ok((s[0].clone(), s[1].clone())),
        _ => Err(bad(format!("`{name}` must be a pair [lo, hi]"))),
    }
}

/// `{range: [lo, hi], step: s}`: the integers lo, lo + s, … up to hi.
fn range_axis(m: &Mapping, bad: &dyn Fn(String) -> Error) -> Result<Vec<Value>> {
    let (lo, hi) = pair(m, "range", bad)?;
    let (lo, hi) = match (lo.as_i64(), hi.as_i64()) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(bad("`range` bounds must be integers".into())),
    };
    let step = field(m, "step").map_or(Some(1), Value::as_i64);
    let step = step.ok_or_else(|| bad("`step` must be an integer".into()))?;
    if step <= 0 {
        return Err(bad(format!("`step` = {step} must be > 0")));
    }
    if hi < lo {
        return Err(bad(format!("`range` [{lo}, {hi}] is empty (hi < lo)")));
    }
    Ok((lo..=hi).step_by(step as usize).map(Value::from).collect())
}

/// `{log: [lo, hi], num: n}`: [`log_points`].
fn log_axis(m: &Mapping, bad: &dyn Fn(String) -> Error) -> Result<Vec<Value>> {
    let (lo, hi) = pair(m, "log", bad)?;
    let (lo, hi) = match (lo.as_f64(), hi.as_f64()) {
        (Some(a), Some(b)) => (a, b),
        _ => return Err(bad("`log` bounds must be numbers".into())),
    };
    if !(lo > 0.0 && hi >= lo && hi.is_finite()) {
        return Err(bad(format!("`log` [{lo}, {hi}] needs 0 < lo <= hi")));
    }
    let num = field(m, "num")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("`num` (a positive integer) is required with `log`".into()))?;
    if num == 0 {
        return Err(bad("`num` = 0: give at least one point".into()));
    }
    Ok(log_points(lo, hi, num as usize)
        .into_iter()
        .map(Value::from)
        .collect())
}

/// `num` geometrically spaced points from `lo` to `hi` inclusive, rounded to 6 significant
/// digits so that the values print (and hash) the same everywhere.
pub fn log_points(lo: f64, hi: f64, num: usize) -> Vec<f64> {
    (0..num)
        .map(|i| {
            let t = if num == 1 {
                0.0
            } else {
                i as f64 / (num - 1) as f64
            };
            let x = (lo.ln() + t * (hi.ln() - lo.ln())).exp();
            let s = 10f64.powi(5 - x.log10().floor() as i32);
            (x * s).round() / s
        })
        .collect()
}

const SLURM_KEYS: [&str; 13] = [
    "partition",
    "account",
    "qos",
    "time",
    "cpus_per_task",
    "mem",
    "gpus",
    "parallelism",
    "extra_sbatch",
    "setup",
    "signal_grace",
    "requeue",
    "max_array_size",
];

fn parse_slurm(path: &Path, m: &Mapping) -> Result<SlurmSpec> {
    let mut s = SlurmSpec::default();
    for (k, v) in m {
        let key = key_str(path, "slurm", k)?;
        if !v.is_null() {
            slurm_field(&mut s, path, &key, v)?;
        }
    }
    check_signal_grace(path, &s)?;
    Ok(s)
}

/// Set field `key` of the `slurm:` block from `v` (not null).
fn slurm_field(s: &mut SlurmSpec, path: &Path, key: &str, v: &Value) -> Result<()> {
    let full = format!("slurm.{key}");
    let one = || one_line(path, &full, v).map(Some);
    let positive = |what: &str| {
        v.as_u64()
            .filter(|&p| p > 0)
            .map(|p| p as usize)
            .ok_or_else(|| err(path, what))
    };
    match key {
        "partition" => s.partition = one()?,
        "account" => s.account = one()?,
        "qos" => s.qos = one()?,
        "time" => s.time = one()?,
        "cpus_per_task" => s.cpus_per_task = one()?,
        "mem" => s.mem = one()?,
        "gpus" => s.gpus = one()?,
        "parallelism" => {
            s.parallelism = Some(positive(&format!(
                "`{full}` must be a positive integer (tasks running at once)"
            ))?);
        }
        "extra_sbatch" => s.extra_sbatch = line_list(path, &full, v)?,
        "setup" => s.setup = line_list(path, &full, v)?,
        "signal_grace" => {
            s.signal_grace = v.as_u64().filter(|&g| g <= MAX_SIGNAL_GRACE).ok_or_else(|| {
                err(
                    path,
                    format!(
                        "`{full}` = {} must be a whole number of seconds in [0, {MAX_SIGNAL_GRACE}] \
                         (USR2 that long before the time limit; 0 = no signal)",
                        show(v)
                    ),
                )
            })?;
        }
        "requeue" => {
            s.requeue = v.as_bool().ok_or_else(|| {
                err(
                    path,
                    format!("`{full}` = {} must be true or false", show(v)),
                )
            })?;
        }
        "max_array_size" => {
            s.max_array_size = Some(positive(&format!(
                "`{full}` = {} must be a positive integer (tasks per array)",
                show(v)
            ))?);
        }
        _ => {
            return Err(err(
                path,
                format!("unknown key `{full}`; allowed: {}", SLURM_KEYS.join(", ")),
            ))
        }
    }
    Ok(())
}

/// A single-line scalar value of key `full`.
fn one_line(path: &Path, full: &str, v: &Value) -> Result<String> {
    let val = scalar(path, full, v)?;
    check_line(path, full, &val)?;
    Ok(val)
}

/// A list of single-line values of key `full` (a scalar is a list of one).
fn line_list(path: &Path, full: &str, v: &Value) -> Result<Vec<String>> {
    match v {
        Value::Sequence(items) => items.iter().map(|x| one_line(path, full, x)).collect(),
        other => Ok(vec![one_line(path, full, other)?]),
    }
}

/// `slurm.signal_grace` must be shorter than `slurm.time` (when both are set and the time
/// is in a known form), or the checkpoint signal would come at once.
fn check_signal_grace(path: &Path, s: &SlurmSpec) -> Result<()> {
    let (Some(t), g) = (&s.time, s.signal_grace) else {
        return Ok(());
    };
    if let Some(limit) = slurm_time_seconds(t) {
        if g > 0 && g >= limit {
            return Err(err(
                path,
                format!(
                    "`slurm.signal_grace` = {g} s is not shorter than `slurm.time` = {t} ({limit} s): \
                     the USR2 checkpoint signal would come as soon as the task starts; lower it or set 0"
                ),
            ));
        }
    }
    Ok(())
}

/// Seconds of a Slurm time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`); None for `UNLIMITED`/`INFINITE` or anything else not in these forms.
pub fn slurm_time_seconds(t: &str) -> Option<u64> {
    let t = t.trim();
    let num = |x: &str| -> Option<u64> {
        (!x.is_empty() && x.chars().all(|c| c.is_ascii_digit()))
            .then(|| x.parse().ok())
            .flatten()
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, t),
    };
    let f: Vec<u64> = rest.split(':').map(num).collect::<Option<_>>()?;
    let secs = match (days, f.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86400 + h * 3600,
        (Some(d), [h, m]) => d * 86400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86400 + h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(secs)
}

/// Values end up on one `#SBATCH` or shell line: no newlines, NULs or other control
/// characters.
pub fn check_line(path: &Path, key: &str, v: &str) -> Result<()> {
    if v.chars().any(|c| c.is_control()) {
        return Err(err(
            path,
            format!("`{key}`: value {v:?} contains a newline or control character; give one line"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_times_in_every_form() {
        for (t, s) in [
            ("90", 5400),
            ("5:30", 330),
            ("02:00:00", 7200),
            ("1-0", 86400),
            ("2-03", 2 * 86400 + 3 * 3600),
            ("1-00:10", 86400 + 600),
            ("1-00:00:05", 86405),
        ] {
            assert_eq!(slurm_time_seconds(t), Some(s), "{t}");
        }
        for t in ["UNLIMITED", "infinite", "", "1:2:3:4", "-5", "1h", "a-1"] {
            assert_eq!(slurm_time_seconds(t), None, "{t}");
        }
    }

    #[test]
    fn base_is_relative_to_the_sweep_file_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sweeps")).unwrap();
        std::fs::write(d.path().join("job.yaml"), "name: j\n").unwrap();
        let sweep = d.path().join("sweeps/s.yaml");
        let spec = parse_sweep(&sweep, "base: ../job.yaml\n", &[]).unwrap();
        assert!(
            spec.base.is_absolute() && spec.base.is_file(),
            "{:?}",
            spec.base
        );
        // jobs/smoke.yaml exists relative to the working directory (the crate root under
        // cargo test) but not next to the sweep file: not found, and the message says where
        // it looked.
        assert!(Path::new("jobs/smoke.yaml").is_file());
        let e = parse_sweep(&sweep, "base: jobs/smoke.yaml\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("jobs/smoke.yaml")
                && e.contains(
                    &d.path()
                        .join("sweeps/jobs/smoke.yaml")
                        .display()
                        .to_string()
                )
                && e.contains("relative to the folder of the sweep file"),
            "{e}"
        );
        // A relative sweep path: its folder is relative to the working directory.
        let spec = parse_sweep(
            Path::new("sweeps/x.yaml"),
            "base: ../jobs/smoke.yaml\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            spec.base,
            std::path::absolute("sweeps/../jobs/smoke.yaml").unwrap()
        );
        // Absolute stays as it is.
        let abs = d.path().join("job.yaml");
        let spec = parse_sweep(&sweep, &format!("base: {}\n", abs.display()), &[]).unwrap();
        assert_eq!(spec.base, abs);
    }
}
