//! Grid expansion: a [`SweepSpec`] becomes a deterministic list of [`Cell`]s (cartesian
//! product, axes in file order, seeds last), each with its resolved job and a stable id
//! `c{index:04}-{8 hex of sha256(resolved job YAML)}`; plus the execution order that lets
//! the cell owning an expensive shared stage go first.
//!
//! **Paths.** Every path-valued job key ([`PATH_KEYS`]: `data.images`, `data.labels`,
//! `data.root`) is made absolute at expansion, by the rule `diffnmf run` uses to open them:
//! relative to the working directory of the command (whether the path comes from the base
//! job, the sweep's `set:`, an axis or `--set`). Each cell's `job.yaml`, its id and its
//! stage-cache keys thus name the same files from any directory a task starts in.

use super::spec::SweepSpec;
use crate::cache::entry_key;
use crate::config::{self, JobConfig, LoadedJob};
use crate::error::{Error, Result};
use crate::pipeline::cached;
use crate::pipeline::code::CodeFingerprints;
use serde::Deserialize;
use serde_yaml_ng::Mapping;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

/// The path-valued keys of a job (all under `data:`), made absolute by [`absolute_paths`].
pub const PATH_KEYS: [&str; 3] = ["data.images", "data.labels", "data.root"];

/// Make every path of `cfg` absolute: a relative one is joined to `cwd` — the rule of
/// `diffnmf run`, which opens them relative to its working directory.
pub fn absolute_paths(cfg: &mut JobConfig, cwd: &Path) {
    let d = &mut cfg.data;
    for p in [&mut d.images, &mut d.labels, &mut d.root]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            let rel: PathBuf = p
                .components()
                .filter(|c| !matches!(c, Component::CurDir))
                .collect();
            *p = cwd.join(rel);
        }
    }
}

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
///
/// Speed (a 100,000-cell dry run took 27 s before, 2.1-2.5 s now on 2 shared cores; large
/// grids expand on several threads): each cell's job is deserialized from its YAML
/// tree directly and validated through [`config::parse_job`] on a *minimal* text (only the
/// leaves that differ from the schema's defaults), whose result must equal it; the minimal
/// and the resolved YAML texts are assembled from per-section texts cached by the values
/// the axes give that section. The first cell checks the shortcuts against the plain path
/// (whole text parsed, whole config emitted), which is used for every cell whenever a
/// shortcut does not apply and which produces the error messages.
pub fn expand(spec: &SweepSpec) -> Result<Vec<Cell>> {
    expand_with(spec, true)
}

/// [`expand`]; `fast = false` takes the plain path for every cell (tests compare the two).
fn expand_with(spec: &SweepSpec, fast: bool) -> Result<Vec<Cell>> {
    let base = config::load_job(&spec.base, &[])?;
    let cwd = std::env::current_dir().map_err(|e| Error::io(Path::new("."), e))?;
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
    // Large grids expand on several threads (contiguous index ranges, results in order;
    // the first error by index wins, as in a sequential loop).
    let grid = Grid {
        spec,
        tree: &tree,
        seeds: &seeds,
        cwd: &cwd,
        fast,
    };
    let parts = in_parallel(n, |r| grid.cells(r));
    let mut cells = Vec::with_capacity(n);
    for p in parts {
        cells.extend(p?);
    }
    Ok(cells)
}

/// `f` over `0..n` split into contiguous ranges, one per thread (up to the available
/// parallelism, at most 8; one thread below 4,096 items), results in range order. Plain
/// scoped threads: rayon's global pool is sized later, by the executor.
fn in_parallel<T: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
    let threads = if n < 4096 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |p| p.get().min(8))
    };
    if threads == 1 {
        return vec![f(0..n)];
    }
    let per = n.div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|i| s.spawn(move || f((i * per).min(n)..((i + 1) * per).min(n))))
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The grid of a sweep over its base tree, cell by cell.
struct Grid<'a> {
    spec: &'a SweepSpec,
    /// The base job with `set:` and the sweep name.
    tree: &'a Value,
    /// The seeds (never empty), varying fastest.
    seeds: &'a [u64],
    /// Relative paths are made absolute against it.
    cwd: &'a Path,
    /// Take the shortcuts (see [`expand`]).
    fast: bool,
}

impl Grid<'_> {
    /// Cells `range` of the grid.
    fn cells(&self, range: std::ops::Range<usize>) -> Result<Vec<Cell>> {
        let spec = self.spec;
        // Axes on disjoint keys are written into one working tree in place (each cell sets
        // the same keys, so nothing of the previous cell survives; whether a scalar becomes
        // a one-element list is decided on the base tree, as [`set_key`] does on a fresh
        // copy). Overlapping ones (`nnmf` and `nnmf.k`), and the plain path, start every
        // cell from a fresh copy of the base tree.
        let in_place = self.fast && !overlapping_axes(spec);
        let wrap: Vec<bool> = spec
            .axes
            .iter()
            .map(|a| matches!(get_path(self.tree, &a.key), Some(Value::Sequence(_))))
            .collect();
        let mut resolver = Resolver::new(spec, self.tree, self.cwd, self.fast)?;
        let mut work = self.tree.clone();
        let mut cells = Vec::with_capacity(range.len());
        let mut picks = vec![0; spec.axes.len() + 1];
        for index in range {
            let seed = self.pick(index, &mut picks);
            let values: Vec<Value> = spec
                .axes
                .iter()
                .zip(&picks)
                .map(|(a, &p)| a.values[p].clone())
                .collect();
            if in_place {
                set_in_place(spec, &mut work, &values, &wrap)?;
            } else {
                work = self.tree.clone();
                for (a, v) in spec.axes.iter().zip(&values) {
                    set_key(spec, &mut work, "axis", &a.key, v)?;
                }
            }
            config::set_path(&mut work, "seed", Value::from(seed)).map_err(|m| err(spec, m))?;
            cells.push(self.cell(&mut resolver, &work, &picks, index, values)?);
        }
        Ok(cells)
    }

    /// The value index of every axis and of the seed of cell `index`, into `picks`; the
    /// seed. Mixed radix: the last axis varies fastest before seeds; seeds vary fastest.
    fn pick(&self, index: usize, picks: &mut [usize]) -> u64 {
        let axes = &self.spec.axes;
        let mut rest = index;
        let seed_pick = rest % self.seeds.len();
        rest /= self.seeds.len();
        for (i, a) in axes.iter().enumerate().rev() {
            picks[i] = rest % a.values.len();
            rest /= a.values.len();
        }
        picks[axes.len()] = seed_pick;
        self.seeds[seed_pick]
    }

    /// Cell `index` (axis `values`, value indices `picks`) from its job tree `work`:
    /// validated, resolved, named.
    fn cell(
        &self,
        resolver: &mut Resolver,
        work: &Value,
        picks: &[usize],
        index: usize,
        values: Vec<Value>,
    ) -> Result<Cell> {
        let spec = self.spec;
        let seed = self.seeds[picks[spec.axes.len()]];
        let (cfg, resolved_yaml) = resolver.resolve(work, picks).map_err(|e| {
            err(
                spec,
                format!("cell {index} ({}): {e}", describe(spec, &values, seed)),
            )
        })?;
        Ok(Cell {
            index,
            id: cell_id(index, &resolved_yaml),
            values,
            seed,
            job: LoadedJob {
                config: cfg,
                path: spec.base.clone(),
                resolved_yaml,
            },
        })
    }
}

/// Whether two axes set the same key or one a key inside the other's (`nnmf`, `nnmf.k`).
fn overlapping_axes(spec: &SweepSpec) -> bool {
    spec.axes.iter().enumerate().any(|(i, a)| {
        spec.axes
            .iter()
            .enumerate()
            .any(|(j, b)| i != j && (a.key == b.key || b.key.starts_with(&format!("{}.", a.key))))
    })
}

/// Write the axis `values` into `work` in place; `wrap[i]`: axis i is list-valued in the
/// base tree, so a scalar becomes a one-element list.
fn set_in_place(spec: &SweepSpec, work: &mut Value, values: &[Value], wrap: &[bool]) -> Result<()> {
    for ((a, v), &w) in spec.axes.iter().zip(values).zip(wrap) {
        let v = match v {
            Value::Sequence(_) | Value::Null => v.clone(),
            _ if w => Value::Sequence(vec![v.clone()]),
            _ => v.clone(),
        };
        config::set_path(work, &a.key, v)
            .map_err(|m| err(spec, format!("axis `{}`: {m}", a.key)))?;
    }
    Ok(())
}

/// One top-level key of the job tree with the texts of its values seen so far.
struct Section {
    key: Value,
    /// Positions in the picks vector (axes, then the seed) that determine its value.
    inputs: Vec<usize>,
    /// Minimal text (None: equal to the default, omitted) and resolved text by inputs.
    texts: HashMap<Vec<usize>, (Option<String>, String)>,
}

/// Turns a cell's YAML tree into its validated job (paths absolute) and resolved YAML; see
/// [`expand`] for the shortcuts and their checks.
struct Resolver<'a> {
    spec: &'a SweepSpec,
    cwd: &'a Path,
    /// What serde fills in for omitted keys, per depth (see [`diff`]).
    defaults: Vec<Value>,
    sections: Vec<Section>,
    /// Cells resolved so far; false once a shortcut disagreed (plain path from then on).
    done: usize,
    fast: bool,
}

impl<'a> Resolver<'a> {
    fn new(spec: &'a SweepSpec, tree: &Value, cwd: &'a Path, fast: bool) -> Result<Self> {
        let defaults: Option<Vec<Value>> = (0..=depth(tree))
            .map(|d| {
                let text = serde_yaml_ng::to_string(&skeleton(tree, d)).ok()?;
                let cfg = serde_yaml_ng::from_str::<JobConfig>(&text).ok()?;
                serde_yaml_ng::to_value(cfg).ok()
            })
            .collect();
        let n_axes = spec.axes.len();
        let sections = tree
            .as_mapping()
            .map(|m| {
                m.keys()
                    .map(|k| {
                        let name = k.as_str().unwrap_or("");
                        let mut inputs: Vec<usize> = spec
                            .axes
                            .iter()
                            .enumerate()
                            .filter(|(_, a)| a.key.split('.').next() == Some(name))
                            .map(|(i, _)| i)
                            .collect();
                        if name == "seed" {
                            inputs.push(n_axes);
                        }
                        Section {
                            key: k.clone(),
                            inputs,
                            texts: HashMap::new(),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Resolver {
            spec,
            cwd,
            fast: fast && defaults.is_some() && tree.is_mapping(),
            defaults: defaults.unwrap_or_default(),
            sections,
            done: 0,
        })
    }

    /// The plain path: the whole tree as text through [`config::parse_job`], the whole
    /// config emitted. Its errors are the ones reported.
    fn plain(&self, t: &Value) -> std::result::Result<(JobConfig, String), String> {
        let text = serde_yaml_ng::to_string(t).map_err(|e| e.to_string())?;
        let mut cfg = config::parse_job(&self.spec.path, &text, &[])
            .map_err(|e| strip_path(&e, self.spec))?;
        absolute_paths(&mut cfg, self.cwd);
        let yaml = serde_yaml_ng::to_string(&cfg).map_err(|e| e.to_string())?;
        Ok((cfg, yaml))
    }

    /// `picks`: the value index of every axis, then of the seed.
    fn resolve(
        &mut self,
        t: &Value,
        picks: &[usize],
    ) -> std::result::Result<(JobConfig, String), String> {
        self.done += 1;
        if !self.fast {
            return self.plain(t);
        }
        match self.fast_path(t, picks) {
            Some(got) if self.done > 1 => Ok(got),
            Some(got) => {
                // The first cell checks both shortcuts against the plain path.
                let want = self.plain(t)?;
                if got != want {
                    self.fast = false;
                }
                Ok(want)
            }
            None => self.plain(t),
        }
    }

    /// None when a shortcut does not apply to this cell (the plain path decides).
    fn fast_path(&mut self, t: &Value, picks: &[usize]) -> Option<(JobConfig, String)> {
        let mut cfg = JobConfig::deserialize(t).ok()?;
        absolute_paths(&mut cfg, self.cwd);
        let mut full: Option<Value> = None;
        let (mut minimal, mut yaml) = (String::new(), String::new());
        for sec in &mut self.sections {
            let key: Vec<usize> = sec.inputs.iter().map(|&i| picks[i]).collect();
            if !sec.texts.contains_key(&key) {
                let v = t.get(&sec.key)?;
                // `name` always: without it parse_job would name the job after the file.
                let top = self.defaults.first()?.get(&sec.key);
                let small = match (v, top) {
                    _ if sec.key.as_str() == Some("name") => Some(v.clone()),
                    (_, Some(d)) if d == v => None,
                    (Value::Mapping(m), Some(Value::Mapping(_))) => {
                        Some(Value::Mapping(diff(m, &[&sec.key], &self.defaults)))
                    }
                    _ => Some(v.clone()),
                };
                let min_text = match small {
                    Some(sv) => Some(section_text(&sec.key, sv)?),
                    None => None,
                };
                if full.is_none() {
                    full = Some(serde_yaml_ng::to_value(&cfg).ok()?);
                }
                let resolved = section_text(&sec.key, full.as_ref()?.get(&sec.key)?.clone())?;
                sec.texts.insert(key.clone(), (min_text, resolved));
            }
            let (m, r) = sec.texts.get(&key)?;
            if let Some(m) = m {
                minimal.push_str(m);
            }
            yaml.push_str(r);
        }
        let mut checked = config::parse_job(&self.spec.path, &minimal, &[]).ok()?;
        absolute_paths(&mut checked, self.cwd);
        (checked == cfg).then_some((cfg, yaml))
    }
}

/// `key: value` as a one-entry YAML document (sections concatenate into the whole job).
fn section_text(key: &Value, value: Value) -> Option<String> {
    let mut one = Mapping::new();
    one.insert(key.clone(), value);
    serde_yaml_ng::to_string(&one).ok()
}

/// `tree` reduced to its mappings down to `depth` levels (all leaves removed): deserialized,
/// every mapping down to that depth takes its own type's `Default`.
fn skeleton(tree: &Value, depth: usize) -> Value {
    match tree {
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .filter(|(_, v)| depth > 0 && v.is_mapping())
                .map(|(k, v)| (k.clone(), skeleton(v, depth - 1)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Levels of mappings in `tree` (a leaf: 0).
fn depth(tree: &Value) -> usize {
    match tree {
        Value::Mapping(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The entries of mapping `t` at `path` that deserialize differently when left out:
/// `defaults[d]` is the job deserialized from its skeleton of depth `d`, so at depth
/// `path.len()` it holds what serde fills in for a key missing from a present mapping.
/// A mapping that differs is kept (possibly empty) and reduced the same way one level down.
fn diff(t: &Mapping, path: &[&Value], defaults: &[Value]) -> Mapping {
    let here = defaults
        .get(path.len())
        .and_then(|root| path.iter().try_fold(root, |cur, k| cur.get(*k)));
    t.iter()
        .filter_map(|(k, v)| {
            let dv = here.and_then(|m| m.get(k));
            if dv == Some(v) {
                return None;
            }
            match (v, dv) {
                (Value::Mapping(sub), Some(Value::Mapping(_))) => {
                    let mut p = path.to_vec();
                    p.push(k);
                    Some((k.clone(), Value::Mapping(diff(sub, &p, defaults))))
                }
                _ => Some((k.clone(), v.clone())),
            }
        })
        .collect()
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
    let code = CodeFingerprints::current();
    let keys: Vec<(Option<[u8; 32]>, [u8; 32])> = in_parallel(cells.len(), |r| {
        cells[r]
            .iter()
            .map(|c| {
                let cfg = &c.job.config;
                let data = cached::configured_source(cfg);
                let k = cached::KeyCtx {
                    data: &data,
                    code: &code,
                    cuda: cached::plans_cuda(cfg),
                };
                let cnn = cfg
                    .features
                    .cnn
                    .then(|| fingerprint::of(&cached::cnn_key(cfg, &k)));
                let group = fingerprint::of(&(
                    cached::classifier_key(cfg, &k),
                    cached::denoiser_key(cfg, &k),
                ));
                (cnn, group)
            })
            .collect::<Vec<_>>()
    })
    .into_iter()
    .flatten()
    .collect();
    let mut cnn_seen = HashSet::new();
    let mut group_seen = HashSet::new();
    let tier: Vec<u8> = keys
        .iter()
        .map(|(cnn, group)| {
            let new_cnn = cnn.is_some_and(|k| cnn_seen.insert(k));
            let new_group = group_seen.insert(*group);
            if new_cnn {
                0
            } else if new_group {
                1
            } else {
                2
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.sort_by_key(|&i| (tier[i], i));
    order
}

/// SHA-256 of a value's serde data model (every item tagged, compounds delimited, so
/// equal digests ⇔ equal values up to SHA-256 collisions). The same equivalence as
/// [`entry_key`] (which hashes emitted YAML) at a fraction of the cost: `owners_first` of
/// 100,000 cells takes milliseconds instead of seconds.
mod fingerprint {
    use serde::ser::{self, Serialize};
    use sha2::{Digest, Sha256};

    pub fn of<T: Serialize + ?Sized>(v: &T) -> [u8; 32] {
        let mut h = Sha256::new();
        // Only `Err` of a Serialize impl can fail here; then the digest covers the prefix.
        let _ = v.serialize(&mut Fp(&mut h));
        h.finalize().into()
    }

    pub struct Fp<'a>(&'a mut Sha256);

    #[derive(Debug)]
    pub struct Never(String);
    impl std::fmt::Display for Never {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Never {}
    impl ser::Error for Never {
        fn custom<T: std::fmt::Display>(msg: T) -> Self {
            Never(msg.to_string())
        }
    }

    type R = Result<(), Never>;

    impl Fp<'_> {
        fn tag(&mut self, t: u8) {
            self.0.update([t]);
        }
        fn bytes(&mut self, t: u8, b: &[u8]) {
            self.0.update([t]);
            self.0.update((b.len() as u64).to_le_bytes());
            self.0.update(b);
        }
    }

    macro_rules! num {
        ($($f:ident $t:ty => $tag:expr),*) => {$(
            fn $f(self, v: $t) -> R {
                self.bytes($tag, &v.to_le_bytes());
                Ok(())
            }
        )*};
    }

    impl<'a, 'b> ser::Serializer for &'a mut Fp<'b> {
        type Ok = ();
        type Error = Never;
        type SerializeSeq = Self;
        type SerializeTuple = Self;
        type SerializeTupleStruct = Self;
        type SerializeTupleVariant = Self;
        type SerializeMap = Self;
        type SerializeStruct = Self;
        type SerializeStructVariant = Self;

        num!(serialize_i8 i8 => 1, serialize_i16 i16 => 2, serialize_i32 i32 => 3,
             serialize_i64 i64 => 4, serialize_u8 u8 => 5, serialize_u16 u16 => 6,
             serialize_u32 u32 => 7, serialize_u64 u64 => 8, serialize_f32 f32 => 9,
             serialize_f64 f64 => 10, serialize_i128 i128 => 11, serialize_u128 u128 => 12);

        fn serialize_bool(self, v: bool) -> R {
            self.bytes(13, &[v as u8]);
            Ok(())
        }
        fn serialize_char(self, v: char) -> R {
            self.bytes(14, &(v as u32).to_le_bytes());
            Ok(())
        }
        fn serialize_str(self, v: &str) -> R {
            self.bytes(15, v.as_bytes());
            Ok(())
        }
        fn serialize_bytes(self, v: &[u8]) -> R {
            self.bytes(16, v);
            Ok(())
        }
        fn serialize_none(self) -> R {
            self.tag(17);
            Ok(())
        }
        fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> R {
            self.tag(18);
            v.serialize(self)
        }
        fn serialize_unit(self) -> R {
            self.tag(19);
            Ok(())
        }
        fn serialize_unit_struct(self, name: &'static str) -> R {
            self.bytes(20, name.as_bytes());
            Ok(())
        }
        fn serialize_unit_variant(self, _: &'static str, i: u32, v: &'static str) -> R {
            self.bytes(21, &i.to_le_bytes());
            self.bytes(15, v.as_bytes());
            Ok(())
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, v: &T) -> R {
            self.tag(22);
            v.serialize(self)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            i: u32,
            n: &'static str,
            v: &T,
        ) -> R {
            self.bytes(23, &i.to_le_bytes());
            self.bytes(15, n.as_bytes());
            v.serialize(self)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
            self.tag(24);
            Ok(self)
        }
        fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
            self.tag(24);
            Ok(self)
        }
        fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
            self.tag(24);
            Ok(self)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            i: u32,
            n: &'static str,
            _: usize,
        ) -> Result<Self, Never> {
            self.bytes(23, &i.to_le_bytes());
            self.bytes(15, n.as_bytes());
            self.tag(24);
            Ok(self)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
            self.tag(25);
            Ok(self)
        }
        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
            self.tag(25);
            Ok(self)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            i: u32,
            n: &'static str,
            _: usize,
        ) -> Result<Self, Never> {
            self.bytes(23, &i.to_le_bytes());
            self.bytes(15, n.as_bytes());
            self.tag(25);
            Ok(self)
        }
    }

    macro_rules! compound {
        ($($tr:ident :: $m:ident),*) => {$(
            impl ser::$tr for &mut Fp<'_> {
                type Ok = ();
                type Error = Never;
                fn $m<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
                    v.serialize(&mut **self)
                }
                fn end(self) -> R {
                    self.tag(26);
                    Ok(())
                }
            }
        )*};
    }
    compound!(
        SerializeSeq::serialize_element,
        SerializeTuple::serialize_element,
        SerializeTupleStruct::serialize_field,
        SerializeTupleVariant::serialize_field
    );

    impl ser::SerializeMap for &mut Fp<'_> {
        type Ok = ();
        type Error = Never;
        fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> R {
            k.serialize(&mut **self)
        }
        fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> R {
            v.serialize(&mut **self)
        }
        fn end(self) -> R {
            self.tag(26);
            Ok(())
        }
    }

    macro_rules! fields {
        ($($tr:ident),*) => {$(
            impl ser::$tr for &mut Fp<'_> {
                type Ok = ();
                type Error = Never;
                fn serialize_field<T: Serialize + ?Sized>(&mut self, k: &'static str, v: &T) -> R {
                    self.bytes(15, k.as_bytes());
                    v.serialize(&mut **self)
                }
                fn skip_field(&mut self, k: &'static str) -> R {
                    self.bytes(27, k.as_bytes());
                    Ok(())
                }
                fn end(self) -> R {
                    self.tag(26);
                    Ok(())
                }
            }
        )*};
    }
    fields!(SerializeStruct, SerializeStructVariant);
}

/// Key of every trained stage of a cell (its data named by the configured source): cells
/// with equal keys differ only at evaluation.
pub fn training_group(c: &Cell) -> String {
    let cfg = &c.job.config;
    let data = cached::configured_source(cfg);
    let code = CodeFingerprints::current();
    let k = cached::KeyCtx {
        data: &data,
        code: &code,
        cuda: cached::plans_cuda(cfg),
    };
    entry_key(
        "group",
        &(
            cached::classifier_key(cfg, &k),
            cached::denoiser_key(cfg, &k),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::spec::parse_sweep;

    fn spec(dir: &Path, text: &str) -> SweepSpec {
        parse_sweep(&dir.join("s.yaml"), text, &[]).unwrap()
    }

    /// Sweeps of every shape the shortcuts must reproduce exactly.
    const SWEEPS: [&str; 6] = [
        "base: jobs/paper.yaml\naxes:\n  nnmf.k: {range: [8, 24], step: 8}\n  attack.eps: [0.0, 0.1, [0.2, 0.3]]\nseeds: [0, 1]\n",
        "base: jobs/smoke.yaml\naxes:\n  nnmf.mode: [global, per_class]\n  data.size: [28, [32, 20]]\n  attack.checks.eps: [[0.5], null]\nset:\n  classifier.hidden: [8]\n  attack.iterations: 3\n",
        "base: jobs/smoke.yaml\naxes:\n  nnmf: [{k: 4, max_iter: 3}, {k: 6, loss: kl, max_iter: 3}]\n  nnmf.max_iter: [5, 7]\n",
        "base: jobs/smoke.yaml\naxes:\n  diffusion.lr: {log: [0.0001, 0.01], num: 3}\n  cnn.epochs: [1, 2]\n  features.cnn: [true, false]\nseeds: [3]\n",
        "base: jobs/paper.yaml\naxes:\n  data.subset: [0, 100]\nset:\n  data.format: folder\n  data.root: ./some/digits\n",
        "base: jobs/paper.yaml\n",
    ];

    #[test]
    fn shortcuts_reproduce_the_plain_path_exactly() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for text in SWEEPS {
            let s = spec(root, text);
            let fast = expand(&s).unwrap();
            let plain = expand_with(&s, false).unwrap();
            assert_eq!(fast.len(), plain.len(), "{text}");
            for (f, p) in fast.iter().zip(&plain) {
                assert_eq!(f.id, p.id, "{text}");
                assert_eq!(f.job.config, p.job.config, "{text}");
                assert_eq!(f.job.resolved_yaml, p.job.resolved_yaml, "{text}");
                assert_eq!((&f.values, f.seed), (&p.values, p.seed), "{text}");
            }
            // ... and the shortcuts are what ran (not a silent fallback).
            let tree = serde_yaml_ng::to_value(&fast[0].job.config).unwrap();
            let cwd = std::env::current_dir().unwrap();
            let mut r = Resolver::new(&s, &tree, &cwd, true).unwrap();
            let picks = vec![0; s.axes.len() + 1];
            r.resolve(&tree, &picks).unwrap();
            assert!(r.fast && r.fast_path(&tree, &picks).is_some(), "{text}");
        }
    }

    #[test]
    fn an_invalid_cell_names_its_values_through_either_path() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let s = spec(
            root,
            "base: jobs/smoke.yaml\naxes:\n  nnmf.k: [4, 0]\n  attack.eps: [0.5]\n",
        );
        let fast = expand(&s).map(|_| ()).unwrap_err().to_string();
        let plain = expand_with(&s, false).map(|_| ()).unwrap_err().to_string();
        assert_eq!(fast, plain);
        assert!(
            fast.contains("cell 1 (nnmf.k=0 attack.eps=0.5 seed=1)") && fast.contains("nnmf.k"),
            "{fast}"
        );
    }

    #[test]
    fn relative_data_paths_become_absolute_against_the_working_directory() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cwd = std::env::current_dir().unwrap();
        let s = spec(
            root,
            "base: jobs/smoke.yaml\naxes:\n  data.images: [./a/imgs.idx, /abs/imgs.idx]\nset:\n  data.format: idx\n  data.labels: a/../b/lbls.idx\n",
        );
        let cells = expand(&s).unwrap();
        let d = &cells[0].job.config.data;
        assert_eq!(d.images.as_deref(), Some(cwd.join("a/imgs.idx").as_path()));
        assert_eq!(
            d.labels.as_deref(),
            Some(cwd.join("a/../b/lbls.idx").as_path())
        );
        assert_eq!(
            cells[1].job.config.data.images.as_deref(),
            Some(Path::new("/abs/imgs.idx"))
        );
        for c in &cells {
            assert!(
                c.job.resolved_yaml.contains(&format!(
                    "labels: {}",
                    cwd.join("a/../b/lbls.idx").display()
                )),
                "{}",
                c.job.resolved_yaml
            );
        }
        // The cell id covers the resolved path: another working directory, another cell.
        let mut cfg = cells[0].job.config.clone();
        cfg.data.root = Some(PathBuf::from("r"));
        absolute_paths(&mut cfg, Path::new("/elsewhere"));
        assert_eq!(cfg.data.root.as_deref(), Some(Path::new("/elsewhere/r")));
        assert_eq!(PATH_KEYS.len(), 3);
    }

    #[test]
    fn owners_first_matches_the_cache_keys() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let s = spec(root, SWEEPS[0]);
        let cells = expand(&s).unwrap();
        // Reference: the same tiers from the cache's own keys (`entry_key`).
        let mut cnn = HashSet::new();
        let mut group = HashSet::new();
        let mut tier = vec![];
        let code = CodeFingerprints::current();
        for c in &cells {
            let cfg = &c.job.config;
            let data = cached::configured_source(cfg);
            let k = cached::KeyCtx {
                data: &data,
                code: &code,
                cuda: cached::plans_cuda(cfg),
            };
            let a = cfg.features.cnn && cnn.insert(entry_key("cnn", &cached::cnn_key(cfg, &k)));
            let b = group.insert(training_group(c));
            tier.push(if a {
                0
            } else if b {
                1
            } else {
                2
            });
        }
        let mut want: Vec<usize> = (0..cells.len()).collect();
        want.sort_by_key(|&i| (tier[i], i));
        assert_eq!(owners_first(&cells), want);
        // 3 k × 2 seeds: 2 CNNs (per seed) first, then the 4 other training groups.
        assert_eq!(want[..6], [0, 1, 6, 7, 12, 13]);
        assert_ne!(
            fingerprint::of(&(1u64, 2.0f64)),
            fingerprint::of(&(1u64, 2.5f64))
        );
        assert_ne!(fingerprint::of(&("ab", "c")), fingerprint::of(&("a", "bc")));
        assert_ne!(
            fingerprint::of(&Some(0u8)),
            fingerprint::of(&Option::<u8>::None)
        );
    }
}
