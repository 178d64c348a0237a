//! `diffnmf cache ls|verify|gc <sweep dir>`: the stage cache of a sweep seen by its user.
//!
//! * `ls` lists every entry: stage, name, size, last use (the entry's modification time; a
//!   cache hit sets it), how many cells of the sweep reference it, and its key summary.
//! * `verify` checks every entry's checksum and that the key stored in it is the one its
//!   name was made from; exits non-zero when one is damaged (the next sweep rebuilds it).
//! * `gc` removes the entries no cell references (for this build's keys: entries of an
//!   older diffnmf whose stage code changed, of cells removed from the sweep, of data that
//!   changed) and damaged ones; `--dry-run` only prints. An entry whose lock another process
//!   holds (it is being built or rebuilt) is left alone, and a damaged entry is checked
//!   again once its lock is held (a build may have just replaced it). Lock files are never
//!   removed: a process waiting on one would otherwise build beside a new one. `gc` refuses
//!   while a cell of the sweep is claimed by a live process, because that process may run
//!   another diffnmf build whose keys this one cannot compute.
//!
//! *References* are computed, not recorded: each cell's `job.yaml` gives its configuration,
//! the data it names is fingerprinted ([`crate::data::fingerprint()`], once per distinct
//! source, timed), and the stage keys follow ([`crate::pipeline::cached`]). `gc` refuses to
//! run when a cell's data cannot be fingerprinted (moved or deleted): it could not tell
//! that cell's entries from garbage.

use super::error::SweepError;
use crate::cache;
use crate::config;
use crate::data::fingerprint::{fingerprint, Fingerprint};
use crate::error::{Error, Result};
use crate::pipeline::cached::{self, KeyCtx};
use crate::pipeline::code::CodeFingerprints;
use crate::pipeline::stages::data_source;
use crate::results::paths;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// What `diffnmf cache` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheCommand {
    /// List the entries: stage, name, size, last use, referencing cells, key summary.
    Ls { dir: PathBuf },
    /// Check every entry's checksum and key; an error when one is damaged.
    Verify { dir: PathBuf },
    /// Remove entries no cell of the sweep references, and damaged ones (`dry_run`: print
    /// what would be removed, remove nothing).
    Gc { dir: PathBuf, dry_run: bool },
}

/// One entry file of the cache.
#[derive(Clone, Debug)]
pub struct Entry {
    pub stage: String,
    /// File stem: `<stage>-<16 hex>`.
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub last_use: SystemTime,
}

/// Every entry under `root` (`<root>/<stage>/<name>.h5`; temporaries and locks left out),
/// sorted by stage and name.
pub fn entries(root: &Path) -> Result<Vec<Entry>> {
    let mut out = vec![];
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(root, e)),
    };
    for stage in rd {
        let stage = stage.map_err(|e| Error::io(root, e))?;
        if !stage.path().is_dir() {
            continue;
        }
        let stage_name = stage.file_name().to_string_lossy().to_string();
        let dir = stage.path();
        for f in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let f = f.map_err(|e| Error::io(&dir, e))?;
            let file = f.file_name().to_string_lossy().to_string();
            let Some(name) = file.strip_suffix(".h5") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            let meta = match f.metadata() {
                Ok(m) => m,
                // Removed between listing and stat (a concurrent gc or rebuild).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(f.path(), e)),
            };
            out.push(Entry {
                stage: stage_name.clone(),
                name: name.to_string(),
                path: f.path(),
                size: meta.len(),
                last_use: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
    }
    out.sort_by(|a, b| (&a.stage, &a.name).cmp(&(&b.stage, &b.name)));
    Ok(out)
}

/// The references of a sweep's cells to cache entries.
#[derive(Debug, Default)]
pub struct Refs {
    /// Entry name (`<stage>-<hex>`) → number of cells referencing it.
    pub counts: BTreeMap<String, usize>,
    /// Cells whose data could not be fingerprinted (moved or deleted), with the reason:
    /// their references are unknown.
    pub unresolved: Vec<String>,
}

/// The entries referenced by the cells of the sweep at `dir`.
pub fn references(dir: &Path, code: &CodeFingerprints) -> Result<Refs> {
    let ids = super::layout::read_cell_ids(dir)?;
    let mut prints: HashMap<String, std::result::Result<Fingerprint, String>> = HashMap::new();
    let mut refs = Refs::default();
    for id in &ids {
        let job_path = paths::cell_job(dir, id);
        let job = config::load_job(&job_path, &[])?;
        let cfg = &job.config;
        let source = cached::configured_source(cfg);
        if !prints.contains_key(&source) {
            let t = Instant::now();
            let fp = fingerprint(&data_source(cfg)).map_err(|e| e.to_string());
            if let Ok(fp) = &fp {
                crate::progress::log(format!(
                    "[cache] data {} → {} ({} files, {:.1} MB) in {:.2}s",
                    source,
                    fp.short(),
                    fp.files,
                    fp.bytes as f64 / 1e6,
                    t.elapsed().as_secs_f64()
                ));
            }
            prints.insert(source.clone(), fp);
        }
        let data = match &prints[&source] {
            Ok(fp) => fp.id.clone(),
            Err(e) => {
                refs.unresolved.push(format!(
                    "cannot fingerprint the data of cell {id} ({}): {e}",
                    job_path.display()
                ));
                continue;
            }
        };
        // A cell may have run with or without a GPU (`device: auto` on mixed nodes): both
        // NNMF variants and everything after them count as referenced.
        let mut names = std::collections::BTreeSet::new();
        for cuda in [false, true] {
            let k = KeyCtx {
                data: &data,
                code,
                cuda,
            };
            if cfg.features.cnn {
                names.insert(cache::entry_key("cnn", &cached::cnn_key(cfg, &k)));
            }
            if cfg.features.nnmf {
                names.insert(cache::entry_key("nnmf", &cached::nnmf_key(cfg, &k)));
            }
            names.insert(cache::entry_key(
                "classifier",
                &cached::classifier_key(cfg, &k),
            ));
            names.insert(cache::entry_key("denoiser", &cached::denoiser_key(cfg, &k)));
        }
        for n in names {
            *refs.counts.entry(n).or_insert(0) += 1;
        }
    }
    Ok(refs)
}

/// Whether `e` is whole: its checksum holds and its stored key is the one its name was made
/// from. `Err` says why not.
pub fn check(e: &Entry) -> std::result::Result<(), String> {
    let s = cache::load_store(&e.path).map_err(|x| x.to_string())?;
    let Some(key) = s.strings.get(cache::KEY_FIELD) else {
        return Err(format!(
            "{}: no `{}` (written by an older diffnmf)",
            e.path.display(),
            cache::KEY_FIELD
        ));
    };
    let want = cache::entry_name(&e.stage, key);
    if want != e.name {
        return Err(format!(
            "{}: its key hashes to {want}, not to its name",
            e.path.display()
        ));
    }
    Ok(())
}

fn size(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn age(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .map_or(0, |d| d.as_secs());
    match s {
        s if s < 120 => format!("{s} s ago"),
        s if s < 7200 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// `diffnmf cache …`.
pub fn run(cmd: &CacheCommand) -> std::result::Result<(), SweepError> {
    let code = CodeFingerprints::current();
    match cmd {
        CacheCommand::Ls { dir } => Ok(print_ls(dir, &code)?),
        CacheCommand::Verify { dir } => print_verify(dir),
        CacheCommand::Gc { dir, dry_run } => Ok(print_gc(dir, &code, *dry_run)?),
    }
}

/// `cache ls`: one line per entry, the unresolved cells, the totals.
fn print_ls(dir: &Path, code: &CodeFingerprints) -> Result<()> {
    let list = entries(&paths::sweep_cache(dir))?;
    let refs = references(dir, code)?;
    println!(
        "{:<10} {:<28} {:>10} {:>12} {:>5}  summary",
        "stage", "entry", "size", "last use", "cells"
    );
    // With cells whose data is missing, a count is a lower bound and 0 is unknown.
    let partial = !refs.unresolved.is_empty();
    for e in &list {
        let summary = cache::read_summary(&e.path).unwrap_or_else(|x| format!("(unreadable: {x})"));
        let cells = match refs.counts.get(&e.name) {
            Some(n) if partial => format!("{n}+"),
            Some(n) => n.to_string(),
            None if partial => "?".into(),
            None => "0".into(),
        };
        println!(
            "{:<10} {:<28} {:>10} {:>12} {:>5}  {summary}",
            e.stage,
            e.name,
            size(e.size),
            age(e.last_use),
            cells
        );
    }
    for u in &refs.unresolved {
        println!("? {u}");
    }
    let total: u64 = list.iter().map(|e| e.size).sum();
    let unref = list
        .iter()
        .filter(|e| !refs.counts.contains_key(&e.name))
        .count();
    println!(
        "{}: {} entries, {}; {unref} referenced by no cell (`diffnmf cache gc` removes them)",
        paths::sweep_cache(dir).display(),
        list.len(),
        size(total)
    );
    Ok(())
}

/// `cache verify`: one line per entry; damaged entries make it an error.
fn print_verify(dir: &Path) -> std::result::Result<(), SweepError> {
    let list = entries(&paths::sweep_cache(dir))?;
    let mut bad = 0;
    for e in &list {
        match check(e) {
            Ok(()) => println!("ok      {}/{}", e.stage, e.name),
            Err(why) => {
                bad += 1;
                println!("DAMAGED {}/{}: {why}", e.stage, e.name);
            }
        }
    }
    println!("{} entries, {bad} damaged", list.len());
    if bad > 0 {
        return Err(SweepError::DamagedEntries {
            bad,
            cache: paths::sweep_cache(dir),
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

/// `cache gc`: what was (or would be) removed, and what was kept.
fn print_gc(dir: &Path, code: &CodeFingerprints, dry_run: bool) -> Result<()> {
    let g = gc(dir, code, dry_run)?;
    let verb = if dry_run { "would remove" } else { "removed" };
    for (e, why) in &g.removed {
        println!("{verb} {}/{} ({why}, {})", e.stage, e.name, size(e.size));
    }
    for e in &g.busy {
        println!("kept {}/{} (locked by a running build)", e.stage, e.name);
    }
    let freed: u64 = g.removed.iter().map(|(e, _)| e.size).sum();
    println!(
        "{verb} {} entries ({}); kept {} referenced{}",
        g.removed.len(),
        size(freed),
        g.kept,
        if g.busy.is_empty() {
            String::new()
        } else {
            format!(" and {} locked", g.busy.len())
        }
    );
    Ok(())
}

/// What [`gc`] did.
pub struct GcReport {
    /// Removed (or, dry run, to be removed) entries with the reason.
    pub removed: Vec<(Entry, &'static str)>,
    /// Unreferenced or damaged entries left because another process holds their lock.
    pub busy: Vec<Entry>,
    /// Referenced, valid entries kept.
    pub kept: usize,
}

/// Cells of the sweep at `dir` claimed by a process that is (or may be) alive.
pub fn live_claims(dir: &Path) -> Result<Vec<String>> {
    let mut out = vec![];
    for id in super::layout::read_cell_ids(dir)? {
        if let Some((m, age)) = super::claim::read(&paths::cell_running(dir, &id)) {
            if !matches!(
                super::claim::liveness(&m, age),
                super::claim::Liveness::Stale(_)
            ) {
                out.push(format!("{id} ({})", m.describe()));
            }
        }
    }
    Ok(out)
}

/// Remove the entries of `<dir>/cache` that no cell references, and damaged ones.
pub fn gc(dir: &Path, code: &CodeFingerprints, dry_run: bool) -> Result<GcReport> {
    let root = paths::sweep_cache(dir);
    let refs = gc_references(dir, code, dry_run)?;
    let mut r = GcReport {
        removed: vec![],
        busy: vec![],
        kept: 0,
    };
    for e in entries(&root)? {
        let referenced = refs.contains_key(&e.name);
        let why = if !referenced {
            "referenced by no cell"
        } else if check(&e).is_err() {
            "damaged"
        } else {
            r.kept += 1;
            continue;
        };
        if dry_run {
            r.removed.push((e, why));
        } else {
            remove_locked(e, why, referenced, &mut r)?;
        }
    }
    if !dry_run {
        for stage in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            paths::sweep_stale_tmp(&stage.path());
        }
    }
    Ok(r)
}

/// The references `gc` goes by (entry name → cells); an error when it could not tell a
/// referenced entry from garbage: a cell claimed by a live process (unless `dry_run`), or a
/// cell whose data cannot be fingerprinted.
fn gc_references(
    dir: &Path,
    code: &CodeFingerprints,
    dry_run: bool,
) -> Result<BTreeMap<String, usize>> {
    let live = live_claims(dir)?;
    if !live.is_empty() && !dry_run {
        return Err(Error::Results {
            path: dir.to_path_buf(),
            msg: format!(
                "{} cell(s) are being run ({}{}); a running diffnmf may be another build whose \
                 cache keys this one cannot compute, so gc could remove entries it uses. Run \
                 `diffnmf cache gc` once the sweep has finished (`--dry-run` works now)",
                live.len(),
                live[..live.len().min(3)].join(", "),
                if live.len() > 3 { ", …" } else { "" }
            ),
        });
    }
    let refs = references(dir, code)?;
    if let Some(first) = refs.unresolved.first() {
        return Err(Error::Results {
            path: dir.to_path_buf(),
            msg: format!(
                "{first}{}; gc could not tell that cell's entries from garbage: restore the \
                 data (or remove the cell from the sweep) and run gc again",
                if refs.unresolved.len() > 1 {
                    format!(" (and {} more cells)", refs.unresolved.len() - 1)
                } else {
                    String::new()
                }
            ),
        });
    }
    Ok(refs.counts)
}

/// Remove entry `e` (`why`: the reason) under its lock, into `r`: left (busy) while another
/// process holds the lock; kept when, `referenced` and found damaged before, it is whole
/// now (a build replaced it meanwhile).
fn remove_locked(e: Entry, why: &'static str, referenced: bool, r: &mut GcReport) -> Result<()> {
    let lock_path = e.path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|x| Error::io(&lock_path, x))?;
    if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
        r.busy.push(e);
        return Ok(());
    }
    if referenced && check(&e).is_ok() {
        r.kept += 1;
        return Ok(());
    }
    match std::fs::remove_file(&e.path) {
        Ok(()) => r.removed.push((e, why)),
        Err(x) if x.kind() == std::io::ErrorKind::NotFound => {}
        Err(x) => return Err(Error::io(&e.path, x)),
    }
    // The lock file stays: removing it would let a waiter and a newcomer lock two
    // different files for the same entry.
    drop(lock);
    Ok(())
}
