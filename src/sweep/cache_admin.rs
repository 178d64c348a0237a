//! `diffnmf cache ls|verify|gc <sweep dir>`: the stage cache of a sweep seen by its user.
//!
//! * `ls` lists every entry: stage, name, size, last use (the entry's modification time; a
//!   cache hit sets it), how many cells of the sweep reference it, and its key summary.
//! * `verify` checks every entry's checksum and that the key stored in it is the one its
//!   name was made from; exits non-zero when one is damaged (the next sweep rebuilds it).
//! * `gc` removes the entries no cell references (for this build's keys: entries of an
//!   older diffnmf whose stage code changed, of cells removed from the sweep, of data that
//!   changed) and damaged ones; `--dry-run` only prints. An entry whose lock another process
//!   holds (it is being built or rebuilt) is left alone.
//!
//! *References* are computed, not recorded: each cell's `job.yaml` gives its configuration,
//! the data it names is fingerprinted ([`crate::data::fingerprint`], once per distinct
//! source, timed), and the stage keys follow ([`crate::pipeline::cached`]). `gc` refuses to
//! run when a cell's data cannot be fingerprinted (moved or deleted): it could not tell
//! that cell's entries from garbage.

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

/// Arguments of `diffnmf cache`.
#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(clap::Subcommand, Debug)]
pub enum CacheAction {
    /// List the entries: stage, name, size, last use, referencing cells, key summary.
    Ls {
        /// Sweep folder.
        dir: PathBuf,
    },
    /// Check every entry's checksum and key; exit 1 when one is damaged.
    Verify {
        /// Sweep folder.
        dir: PathBuf,
    },
    /// Remove entries no cell of the sweep references, and damaged ones.
    Gc {
        /// Sweep folder.
        dir: PathBuf,
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
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
    for stage in rd.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()) {
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
            let meta = f.metadata().map_err(|e| Error::io(f.path(), e))?;
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

/// Entry names (`<stage>-<hex>`) referenced by the cells of the sweep at `dir`, with the
/// number of cells referencing each.
pub fn references(dir: &Path, code: &CodeFingerprints) -> Result<BTreeMap<String, usize>> {
    let ids = super::layout::read_cell_ids(dir)?;
    let mut prints: HashMap<String, Fingerprint> = HashMap::new();
    let mut refs = BTreeMap::new();
    for id in &ids {
        let job_path = paths::cell_job(dir, id);
        let job = config::load_job(&job_path, &[])?;
        let cfg = &job.config;
        let source = cached::configured_source(cfg);
        if !prints.contains_key(&source) {
            let t = Instant::now();
            let fp = fingerprint(&data_source(cfg)).map_err(|e| Error::Results {
                path: job_path.clone(),
                msg: format!(
                    "cannot fingerprint the data of cell {id} ({e}); restore the data so the \
                     cache can tell which entries the cell uses"
                ),
            })?;
            crate::progress::log(format!(
                "[cache] data {} → {} ({} files, {:.1} MB) in {:.2}s",
                source,
                fp.short(),
                fp.files,
                fp.bytes as f64 / 1e6,
                t.elapsed().as_secs_f64()
            ));
            prints.insert(source.clone(), fp);
        }
        let k = KeyCtx {
            data: &prints[&source].id,
            code,
        };
        let mut names = vec![];
        if cfg.features.cnn {
            names.push(cache::entry_key("cnn", &cached::cnn_key(cfg, &k)));
        }
        if cfg.features.nnmf {
            names.push(cache::entry_key("nnmf", &cached::nnmf_key(cfg, &k)));
        }
        names.push(cache::entry_key(
            "classifier",
            &cached::classifier_key(cfg, &k),
        ));
        names.push(cache::entry_key("denoiser", &cached::denoiser_key(cfg, &k)));
        for n in names {
            *refs.entry(n).or_insert(0) += 1;
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
pub fn run(a: CacheArgs) -> anyhow::Result<()> {
    let code = CodeFingerprints::current();
    match a.action {
        CacheAction::Ls { dir } => {
            let list = entries(&paths::sweep_cache(&dir))?;
            let refs = references(&dir, &code)?;
            println!(
                "{:<10} {:<28} {:>10} {:>12} {:>5}  summary",
                "stage", "entry", "size", "last use", "cells"
            );
            for e in &list {
                let summary =
                    cache::read_summary(&e.path).unwrap_or_else(|x| format!("(unreadable: {x})"));
                println!(
                    "{:<10} {:<28} {:>10} {:>12} {:>5}  {summary}",
                    e.stage,
                    e.name,
                    size(e.size),
                    age(e.last_use),
                    refs.get(&e.name).copied().unwrap_or(0)
                );
            }
            let total: u64 = list.iter().map(|e| e.size).sum();
            let unref = list.iter().filter(|e| !refs.contains_key(&e.name)).count();
            println!(
                "{}: {} entries, {}; {unref} referenced by no cell (`diffnmf cache gc` removes them)",
                paths::sweep_cache(&dir).display(),
                list.len(),
                size(total)
            );
            Ok(())
        }
        CacheAction::Verify { dir } => {
            let list = entries(&paths::sweep_cache(&dir))?;
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
                anyhow::bail!(
                    "{bad} damaged cache entries in {}: the next sweep rebuilds them, or \
                     `diffnmf cache gc {}` removes them",
                    paths::sweep_cache(&dir).display(),
                    dir.display()
                );
            }
            Ok(())
        }
        CacheAction::Gc { dir, dry_run } => {
            let g = gc(&dir, &code, dry_run)?;
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
    }
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

/// Remove the entries of `<dir>/cache` that no cell references, and damaged ones.
pub fn gc(dir: &Path, code: &CodeFingerprints, dry_run: bool) -> Result<GcReport> {
    let root = paths::sweep_cache(dir);
    let refs = references(dir, code)?;
    let mut r = GcReport {
        removed: vec![],
        busy: vec![],
        kept: 0,
    };
    for e in entries(&root)? {
        let why = if !refs.contains_key(&e.name) {
            "referenced by no cell"
        } else if check(&e).is_err() {
            "damaged"
        } else {
            r.kept += 1;
            continue;
        };
        if dry_run {
            r.removed.push((e, why));
            continue;
        }
        let lock_path = e.path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|x| Error::io(&lock_path, x))?;
        if let Err(std::fs::TryLockError::WouldBlock) = lock.try_lock() {
            r.busy.push(e);
            continue;
        }
        std::fs::remove_file(&e.path).map_err(|x| Error::io(&e.path, x))?;
        let _ = std::fs::remove_file(&lock_path);
        r.removed.push((e, why));
    }
    if !dry_run {
        for stage in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            paths::sweep_stale_tmp(&stage.path());
        }
    }
    Ok(r)
}
