//! Grid expansion: a [`SweepSpec`] becomes a deterministic list of [`Cell`]s (cartesian
//! product, axes in file order, seeds last), each with its resolved job and a stable id
//! `c{index:04}-{8 hex of sha256(resolved job YAML)}`; plus the execution order that lets
//! the cell owning an expensive shared stage go first.

use super::spec::SweepSpec;
use crate::cache::entry_key;
use crate::config::{self, LoadedJob};
use crate::error::{Error, Result};
use crate::pipeline::cached;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// One point of the grid.
#[derive(Clone, Debug)]
pub struct Cell {
    pub index: usize,
    pub id: String,
    /// One value per axis, in axis order.
    pub values: Vec<Value>,
    pub seed: u64,
    pub job: LoadedJob,
}

fn err(spec: &SweepSpec, msg: impl Into<String>) -> Error {
    Error::Config {
        path: spec.path.clone(),
        msg: msg.into(),
    }
}

/// Value at a dotted key (None if absent).
fn get_path<'a>(tree: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(tree, |cur, part| cur.get(part))
}

/// Set `key` (must exist in the job schema); a scalar given for a list-valued key becomes a
/// one-element list, so `attack.eps: [0.1, 0.5]` as an axis means one budget per cell.
fn set_key(spec: &SweepSpec, tree: &mut Value, what: &str, key: &str, v: &Value) -> Result<()> {
    if key == "seed" {
        return Err(err(
            spec,
            format!("{what} `seed`: list seeds under `seeds:` instead"),
        ));
    }
    let v = match get_path(tree, key) {
        Some(Value::Sequence(_)) if !matches!(v, Value::Sequence(_) | Value::Null) => {
            Value::Sequence(vec![v.clone()])
        }
        _ => v.clone(),
    };
    config::set_path(tree, key, v).map_err(|m| err(spec, format!("{what} `{key}`: {m}")))
}

/// Short text of an axis value (cells.csv, status lines).
pub fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => serde_yaml_ng::to_string(other)
            .map(|s| s.trim().replace('\n', " "))
            .unwrap_or_default(),
    }
}

/// Expand the grid. Fails before anything runs on an unknown key, an invalid value (the
/// message names the axis values of the offending cell) or an empty grid.
pub fn expand(spec: &SweepSpec) -> Result<Vec<Cell>> {
    let base = config::load_job(&spec.base, &[])?;
    let mut tree = serde_yaml_ng::to_value(&base.config).map_err(|e| err(spec, e.to_string()))?;
    for (k, v) in &spec.set {
        set_key(spec, &mut tree, "set", k, v)?;
    }
    for a in &spec.axes {
        if a.values.is_empty() {
            return Err(err(spec, format!("axis `{}` is empty", a.key)));
        }
        // Validates the key against the base job before any cell is built.
        set_key(spec, &mut tree.clone(), "axis", &a.key, &a.values[0])?;
    }
    config::set_path(&mut tree, "name", Value::String(spec.name.clone()))
        .map_err(|m| err(spec, m))?;
    let seeds = if spec.seeds.is_empty() {
        vec![base.config.seed]
    } else {
        spec.seeds.clone()
    };
    let n: usize = spec.axes.iter().map(|a| a.values.len()).product::<usize>() * seeds.len();
    if n == 0 {
        return Err(err(spec, "the grid has zero cells"));
    }
    let mut cells = Vec::with_capacity(n);
    for index in 0..n {
        // Mixed radix: the last axis varies fastest before seeds; seeds vary fastest.
        let mut rest = index;
        let seed = seeds[rest % seeds.len()];
        rest /= seeds.len();
        let mut picks = vec![0; spec.axes.len()];
        for (i, a) in spec.axes.iter().enumerate().rev() {
            picks[i] = rest % a.values.len();
            rest /= a.values.len();
        }
        let mut t = tree.clone();
        let values: Vec<Value> = spec
            .axes
            .iter()
            .zip(&picks)
            .map(|(a, &p)| a.values[p].clone())
            .collect();
        for (a, v) in spec.axes.iter().zip(&values) {
            set_key(spec, &mut t, "axis", &a.key, v)?;
        }
        config::set_path(&mut t, "seed", Value::from(seed)).map_err(|m| err(spec, m))?;
        let text = serde_yaml_ng::to_string(&t).map_err(|e| err(spec, e.to_string()))?;
        let what = describe(spec, &values, seed);
        let cfg = config::parse_job(&spec.path, &text, &[]).map_err(|e| {
            err(
                spec,
                format!("cell {index} ({what}): {}", strip_path(&e, spec)),
            )
        })?;
        let resolved_yaml = serde_yaml_ng::to_string(&cfg).map_err(|e| err(spec, e.to_string()))?;
        let id = cell_id(index, &resolved_yaml);
        cells.push(Cell {
            index,
            id,
            values,
            seed,
            job: LoadedJob {
                config: cfg,
                path: spec.base.clone(),
                resolved_yaml,
            },
        });
    }
    Ok(cells)
}

fn strip_path(e: &Error, spec: &SweepSpec) -> String {
    let s = e.to_string();
    let prefix = format!("{}: ", spec.path.display());
    s.strip_prefix(&prefix).map(str::to_string).unwrap_or(s)
}

/// `k=8 attack.eps=0.1 seed=0` for messages and status lines.
pub fn describe(spec: &SweepSpec, values: &[Value], seed: u64) -> String {
    let mut parts: Vec<String> = spec
        .axes
        .iter()
        .zip(values)
        .map(|(a, v)| format!("{}={}", a.key, show_value(v)))
        .collect();
    parts.push(format!("seed={seed}"));
    parts.join(" ")
}

/// `c{index:04}-{first 8 hex digits of sha256(resolved job YAML)}`.
pub fn cell_id(index: usize, resolved_yaml: &str) -> String {
    let d = Sha256::digest(resolved_yaml.as_bytes());
    let hex: String = d.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("c{index:04}-{hex}")
}

/// Execution order of `cells` (positions into the slice): first one cell per distinct CNN
/// stage, then one per remaining distinct training group (NNMF + classifier + denoiser),
/// then everything else, each part in index order. Owners of shared stages thus start
/// first, and the cells that reuse them mostly find them built instead of waiting on the
/// stage lock (see docs in `sweep/mod.rs`).
pub fn owners_first(cells: &[Cell]) -> Vec<usize> {
    let mut cnn_seen = HashSet::new();
    let mut group_seen = HashSet::new();
    let mut tier = vec![2u8; cells.len()];
    for (i, c) in cells.iter().enumerate() {
        let cfg = &c.job.config;
        let cnn = entry_key("cnn", &cached::cnn_key(cfg));
        let group = training_group(c);
        let new_cnn = cfg.features.cnn && cnn_seen.insert(cnn);
        let new_group = group_seen.insert(group);
        tier[i] = if new_cnn {
            0
        } else if new_group {
            1
        } else {
            2
        };
    }
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|&i| (tier[i], i));
    order
}

/// Key of every trained stage of a cell: cells with equal keys differ only at evaluation.
pub fn training_group(c: &Cell) -> String {
    let cfg = &c.job.config;
    entry_key(
        "group",
        &(cached::classifier_key(cfg), cached::denoiser_key(cfg)),
    )
}
