//! Reading a sweep folder (`cells.csv`, `cells/<id>/metrics.csv`) and aggregating every
//! (axis values, scenario, protocol, ε, metric) across seeds into `summary.csv`,
//! `summary.h5` and the paper-style `tables.md`.

use super::stats::Stats;
use crate::error::{Error, Result};
use crate::metrics::METRIC_NAMES;
use crate::results::{h5, write_atomic, Protocol, Scenario};
use hdf5::types::VarLenUnicode;
use ndarray::Array1;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One cell of a sweep as listed in `cells.csv`.
#[derive(Clone, Debug)]
pub struct Cell {
    pub id: String,
    pub index: usize,
    /// Values of the sweep axes (columns between `index` and `seed`), as written.
    pub axis_values: Vec<String>,
    pub seed: String,
    /// `cells/<id>/result.h5` exists.
    pub done: bool,
    pub dir: PathBuf,
}

/// The cells of a sweep folder.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub dir: PathBuf,
    pub axes: Vec<String>,
    pub cells: Vec<Cell>,
}

/// One aggregated row of `summary.csv`.
#[derive(Clone, Debug)]
pub struct SummaryRow {
    pub axis_values: Vec<String>,
    pub scenario: Scenario,
    pub protocol: Protocol,
    pub eps: f64,
    pub metric: String,
    pub stats: Stats,
}

/// The aggregate of a (possibly partial) sweep.
#[derive(Clone, Debug)]
pub struct Summary {
    pub sweep: Sweep,
    pub rows: Vec<SummaryRow>,
    /// Ids of cells without `result.h5`.
    pub missing: Vec<String>,
    /// Certified cells' `certify.csv` across seeds ([`super::aggregate_certify`]).
    pub certify: Vec<super::aggregate_certify::CertSummaryRow>,
}

fn err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Results {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Split one CSV line into fields (double-quoted fields may contain commas and `""`).
pub fn csv_split(line: &str) -> Vec<String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Quote a CSV field when needed.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Read `<dir>/cells.csv` (header `id,index,<axis keys…>,seed,status`).
pub fn read_sweep(dir: &Path) -> Result<Sweep> {
    let path = crate::results::paths::cells_csv(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = csv_split(lines.next().ok_or_else(|| err(&path, "empty file"))?);
    let n = header.len();
    if n < 4 || header[0] != "id" || header[1] != "index" || header[n - 2] != "seed" {
        return Err(err(
            &path,
            format!(
                "header must be `id,index,<axis keys…>,seed,status`, found `{}`",
                header.join(",")
            ),
        ));
    }
    let axes = header[2..n - 2].to_vec();
    let mut cells = vec![];
    for (ln, line) in lines.enumerate() {
        let f = csv_split(line);
        if f.len() != n {
            return Err(err(
                &path,
                format!("line {}: {} fields, header has {n}", ln + 2, f.len()),
            ));
        }
        let index = f[1].trim().parse().map_err(|_| {
            err(
                &path,
                format!("line {}: index `{}` is not an integer", ln + 2, f[1]),
            )
        })?;
        let cdir = dir.join("cells").join(&f[0]);
        cells.push(Cell {
            id: f[0].clone(),
            index,
            axis_values: f[2..n - 2].to_vec(),
            seed: f[n - 2].clone(),
            done: cdir.join(crate::results::paths::RESULT_H5).exists(),
            dir: cdir,
        });
    }
    Ok(Sweep {
        dir: dir.to_path_buf(),
        axes,
        cells,
    })
}

pub use crate::results::h5::MetricRow;

/// Tidy metric rows of a finished cell: `metrics.csv`, or `result.h5` when the CSV is absent.
pub fn cell_metrics(cell: &Cell) -> Result<Vec<MetricRow>> {
    let csv = cell.dir.join(crate::results::paths::METRICS_CSV);
    if !csv.exists() {
        return h5::read_metrics(&cell.dir.join(crate::results::paths::RESULT_H5));
    }
    let text = std::fs::read_to_string(&csv).map_err(|e| Error::io(&csv, e))?;
    let mut rows = vec![];
    for (ln, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f = csv_split(line);
        let num = |s: &str| {
            s.trim()
                .parse::<f64>()
                .map_err(|_| err(&csv, format!("line {}: `{s}` is not a number", ln + 1)))
        };
        if f.len() != 5 {
            return Err(err(&csv, format!("line {}: expected 5 fields", ln + 1)));
        }
        let name =
            |e: crate::results::names::UnknownName| err(&csv, format!("line {}: {e}", ln + 1));
        rows.push((
            f[0].parse().map_err(name)?,
            f[1].parse().map_err(name)?,
            num(&f[2])?,
            f[3].clone(),
            num(&f[4])?,
        ));
    }
    Ok(rows)
}

type Key = (Vec<String>, Scenario, Protocol, u64, String);

/// Values grouped by key, the keys in first-seen order (the row order of a summary).
pub struct Groups<K> {
    order: Vec<K>,
    values: HashMap<K, Vec<f64>>,
}

impl<K> Default for Groups<K> {
    fn default() -> Self {
        Groups {
            order: vec![],
            values: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Groups<K> {
    /// Add `v` to the group of `key`.
    pub fn push(&mut self, key: K, v: f64) {
        let order = &mut self.order;
        self.values
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                vec![]
            })
            .push(v);
    }

    /// Each key with the statistics of its values, in first-seen order.
    pub fn stats(self) -> impl Iterator<Item = (K, Stats)> {
        let values = self.values;
        self.order.into_iter().map(move |k| {
            let st = Stats::of(&values[&k]);
            (k, st)
        })
    }
}

/// Aggregate the finished cells of the sweep in `dir` across seeds.
pub fn aggregate(dir: &Path) -> Result<Summary> {
    let sweep = read_sweep(dir)?;
    let mut values = Groups::<Key>::default();
    let mut missing = vec![];
    for cell in &sweep.cells {
        if !cell.done {
            missing.push(cell.id.clone());
            continue;
        }
        // A damaged result is an error (never silently aggregated or skipped).
        let res = cell.dir.join(crate::results::paths::RESULT_H5);
        crate::results::h5::check_complete(&res).map_err(|e| {
            err(
                &res,
                format!("{e}; recompute it with `diffnmf sweep <file> --resume` (status reports it failed)"),
            )
        })?;
        for (s, p, e, m, v) in cell_metrics(cell)? {
            values.push((cell.axis_values.clone(), s, p, e.to_bits(), m), v);
        }
    }
    let rows = values
        .stats()
        .map(|(k, stats)| SummaryRow {
            axis_values: k.0,
            scenario: k.1,
            protocol: k.2,
            eps: f64::from_bits(k.3),
            metric: k.4,
            stats,
        })
        .collect();
    let certify = super::aggregate_certify::aggregate(&sweep)?;
    Ok(Summary {
        sweep,
        rows,
        missing,
        certify,
    })
}

/// Distinct axis-value combinations in first-seen order.
pub fn configs(s: &Summary) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![];
    for r in &s.rows {
        if !out.contains(&r.axis_values) {
            out.push(r.axis_values.clone());
        }
    }
    out
}

impl Summary {
    /// The row for one (config, scenario, protocol, ε, metric); clean rows match any ε.
    pub fn get(
        &self,
        cfg: &[String],
        s: Scenario,
        p: Protocol,
        eps: f64,
        m: &str,
    ) -> Option<&Stats> {
        self.rows
            .iter()
            .find(|r| {
                r.axis_values == cfg
                    && r.scenario == s
                    && r.protocol == p
                    && r.metric == m
                    && (s.is_clean() || r.eps == eps)
            })
            .map(|r| &r.stats)
    }

    /// Robust ε values of a config, ascending.
    pub fn eps_values(&self, cfg: &[String]) -> Vec<f64> {
        let mut e: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.axis_values == cfg && r.scenario.is_robust())
            .map(|r| r.eps)
            .collect();
        e.sort_by(f64::total_cmp);
        e.dedup();
        e
    }

    /// `k=8, lr=0.1`-style label of a config (last component of each axis key).
    pub fn config_label(&self, cfg: &[String]) -> String {
        if cfg.is_empty() {
            return "all cells".into();
        }
        self.sweep
            .axes
            .iter()
            .zip(cfg)
            .map(|(a, v)| format!("{}={v}", a.rsplit('.').next().unwrap_or(a)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The unit of ε of a config: its threat model (`threat_model` of the first finished
    /// cell's `result.h5`), e.g. "pixel units, images in [0, 1]"; "unknown unit" when no
    /// cell of the config has finished or the file predates the attribute.
    pub fn eps_unit(&self, cfg: &[String]) -> &'static str {
        self.sweep
            .cells
            .iter()
            .find(|c| c.done && c.axis_values == cfg)
            .and_then(|c| {
                crate::results::h5::read_threat(&c.dir.join(crate::results::paths::RESULT_H5))
            })
            .map_or("unknown unit", crate::config::Threat::eps_unit)
    }
}

/// A summary CSV: `<axis keys…>,<key columns>,n,mean,std,ci95,min,max`, one line per
/// `(axis values, key fields, statistics)` row (`summary.csv`, `summary_certify.csv`).
pub fn stats_csv<'a>(
    axes: &[String],
    key_columns: &str,
    rows: impl Iterator<Item = (&'a [String], String, &'a Stats)>,
) -> String {
    let mut out = String::new();
    for a in axes {
        out.push_str(&csv_field(a));
        out.push(',');
    }
    out.push_str(&format!("{key_columns},n,mean,std,ci95,min,max\n"));
    for (axis_values, key, st) in rows {
        for v in axis_values {
            out.push_str(&csv_field(v));
            out.push(',');
        }
        out.push_str(&format!(
            "{key},{},{},{},{},{},{}\n",
            st.n, st.mean, st.std, st.ci95, st.min, st.max
        ));
    }
    out
}

/// `summary.csv`: `<axis keys…>,scenario,protocol,eps,metric,n,mean,std,ci95,min,max`.
pub fn summary_csv(s: &Summary) -> String {
    stats_csv(
        &s.sweep.axes,
        "scenario,protocol,eps,metric",
        s.rows.iter().map(|r| {
            (
                &r.axis_values[..],
                format!("{},{},{},{}", r.scenario, r.protocol, r.eps, r.metric),
                &r.stats,
            )
        }),
    )
}

fn vstr(s: &str) -> VarLenUnicode {
    s.replace('\0', " ").parse().expect("NUL bytes removed")
}

fn strs<'a>(it: impl Iterator<Item = &'a str>) -> Array1<VarLenUnicode> {
    it.map(vstr).collect()
}

/// `summary.h5`: `/summary/{scenario,protocol,eps,metric,n,mean,std,ci95,min,max}`,
/// `/summary/axis/<key>` (strings), `/cells/{id,done}`, attrs `axes`, `missing`.
pub fn write_summary_h5(path: &Path, s: &Summary) -> Result<()> {
    // Built in memory and written atomically (`results::h5::write_file`): a full disk is
    // an error naming the file, never a crash inside HDF5.
    let inner = |f: &hdf5::File| -> hdf5::Result<()> {
        f.new_attr::<VarLenUnicode>()
            .create("sweep_dir")?
            .write_scalar(&vstr(&s.sweep.dir.display().to_string()))?;
        f.new_attr::<u64>()
            .create("cells_total")?
            .write_scalar(&(s.sweep.cells.len() as u64))?;
        f.new_attr::<u64>()
            .create("cells_missing")?
            .write_scalar(&(s.missing.len() as u64))?;
        let g = f.create_group("summary")?;
        let col = |name: &str, v: Array1<VarLenUnicode>| -> hdf5::Result<()> {
            g.new_dataset_builder()
                .with_data(&v)
                .create(name)
                .map(|_| ())
        };
        col("scenario", strs(s.rows.iter().map(|r| r.scenario.as_str())))?;
        col("protocol", strs(s.rows.iter().map(|r| r.protocol.as_str())))?;
        col("metric", strs(s.rows.iter().map(|r| r.metric.as_str())))?;
        let num = |name: &str, f: &dyn Fn(&SummaryRow) -> f64| -> hdf5::Result<()> {
            let v: Array1<f64> = s.rows.iter().map(f).collect();
            g.new_dataset_builder()
                .with_data(&v)
                .create(name)
                .map(|_| ())
        };
        num("eps", &|r| r.eps)?;
        num("mean", &|r| r.stats.mean)?;
        num("std", &|r| r.stats.std)?;
        num("ci95", &|r| r.stats.ci95)?;
        num("min", &|r| r.stats.min)?;
        num("max", &|r| r.stats.max)?;
        let n: Array1<u64> = s.rows.iter().map(|r| r.stats.n as u64).collect();
        g.new_dataset_builder().with_data(&n).create("n")?;
        let ag = g.create_group("axis")?;
        for (i, a) in s.sweep.axes.iter().enumerate() {
            let v = strs(s.rows.iter().map(|r| r.axis_values[i].as_str()));
            ag.new_dataset_builder().with_data(&v).create(a.as_str())?;
        }
        let cg = f.create_group("cells")?;
        let ids = strs(s.sweep.cells.iter().map(|c| c.id.as_str()));
        cg.new_dataset_builder().with_data(&ids).create("id")?;
        let done: Array1<bool> = s.sweep.cells.iter().map(|c| c.done).collect();
        cg.new_dataset_builder().with_data(&done).create("done")?;
        Ok(())
    };
    h5::write_file(path, inner)
}

pub use crate::results::table::label as row_label;

/// The paper's header row.
pub const TABLE_HEADER: &str = "| Case | Accuracy | Precision | Recall | F1 | MCC | Balanced Acc | ROC-AUC | LogLoss | Brier |\n|---|---|---|---|---|---|---|---|---|---|\n";

/// Rows of the paper's table in order.
pub const ROWS: [(Scenario, Protocol); 6] = [
    (Scenario::CleanBase, Protocol::None),
    (Scenario::CleanDef, Protocol::None),
    (Scenario::RobustBase, Protocol::None),
    (Scenario::RobustDef, Protocol::Worst),
    (Scenario::RobustDef, Protocol::Transfer),
    (Scenario::RobustDef, Protocol::Adaptive),
];

/// One paper-style table (`mean ± std`) of a config at ε.
pub fn table_at(s: &Summary, cfg: &[String], eps: f64) -> String {
    let mut out = String::from(TABLE_HEADER);
    for (sc, pr) in ROWS {
        if s.get(cfg, sc, pr, eps, "accuracy").is_none() {
            continue;
        }
        out.push_str(&format!("| {} ", row_label(sc, pr)));
        for m in METRIC_NAMES {
            match s.get(cfg, sc, pr, eps, m) {
                Some(st) if st.n >= 2 => {
                    out.push_str(&format!("| {:.4} ± {:.4} ", st.mean, st.std))
                }
                Some(st) => out.push_str(&format!("| {:.4} ", st.mean)),
                None => out.push_str("| – "),
            }
        }
        out.push_str("|\n");
    }
    out
}

/// `tables.md`: one table per (config, ε), plus the list of missing cells.
pub fn tables_md(s: &Summary) -> String {
    let done = s.sweep.cells.len() - s.missing.len();
    let mut out = format!(
        "# Sweep summary: {}\n\n{done} of {} cells finished; values are mean ± sample std across seeds.\n",
        s.sweep.dir.display(),
        s.sweep.cells.len()
    );
    for cfg in configs(s) {
        let n = s
            .get(&cfg, Scenario::CleanBase, Protocol::None, 0.0, "accuracy")
            .map_or(0, |st| st.n);
        for e in s.eps_values(&cfg) {
            out.push_str(&format!(
                "\n### {} — ε = {e} ({}; n = {n} seeds)\n\n{}",
                s.config_label(&cfg),
                s.eps_unit(&cfg),
                table_at(s, &cfg, e)
            ));
        }
    }
    out.push_str(&super::aggregate_certify::markdown(s));
    out.push_str(&missing_md(s));
    out
}

/// Markdown list of the missing cells (empty string when complete).
pub fn missing_md(s: &Summary) -> String {
    if s.missing.is_empty() {
        return String::new();
    }
    let mut out = format!("\n## Missing cells ({})\n\n", s.missing.len());
    for c in s.sweep.cells.iter().filter(|c| !c.done) {
        out.push_str(&format!(
            "- `{}` ({}, seed {})\n",
            c.id,
            s.config_label(&c.axis_values),
            c.seed
        ));
    }
    out
}

/// Write `summary.csv`, `summary.h5` and `tables.md` into the sweep folder.
pub fn write_outputs(s: &Summary) -> Result<()> {
    let dir = &s.sweep.dir;
    use crate::results::paths::{SUMMARY_CSV, SUMMARY_H5, TABLES_MD};
    write_atomic(&dir.join(SUMMARY_CSV), summary_csv(s).as_bytes())?;
    write_summary_h5(&dir.join(SUMMARY_H5), s)?;
    write_atomic(&dir.join(TABLES_MD), tables_md(s).as_bytes())?;
    let cert = dir.join(crate::results::paths::SUMMARY_CERTIFY_CSV);
    if s.certify.is_empty() {
        let _ = std::fs::remove_file(&cert);
    } else {
        write_atomic(&cert, super::aggregate_certify::csv(s).as_bytes())?;
    }
    Ok(())
}
