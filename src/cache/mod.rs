//! Content-addressed stage cache shared by the cells of a sweep (and safe across processes).
//!
//! An entry is identified by its stage name and a hash of its key — everything that
//! determines it: data content, configuration section, seed, code fingerprints
//! (`<root>/<stage>/<stage>-<16 hex>.h5`). Entries are built under an exclusive file lock
//! (`.lock` beside the entry; concurrent builders of the same entry wait for the first one
//! and then load its result), written to a temporary name and renamed, so a half-written
//! entry is never read. Where the file system does not support locks (some
//! NFS mounts), building proceeds without one and write-then-rename still keeps entries whole.
//!
//! Entries are built in memory and written with [`crate::results::h5::write_file`], so a full
//! disk is an ordinary error naming the entry (never an HDF5 crash; see that module's doc).
//!
//! Every entry carries a checksum: the root attribute `sha256` is [`content_hash`] of the
//! stored [`Store`] (every array's name, shape and bytes, every vector and string), checked
//! by [`load_store`]. An entry that fails to open or parse, lacks the checksum (written
//! before checksums existed) or does not match it is logged as a warning naming the file and
//! the reason, and rebuilt under the lock (counted in [`StageStats::invalid`]).
//!
//! What goes into a key (data content, configuration slice, code fingerprints) is decided
//! in [`crate::pipeline::cached`]. Each entry also stores its key (`_key`, the YAML that was
//! hashed into its name; a mismatch is invalid) and a one-line summary (`_summary`) for
//! `diffnmf cache ls`; a hit sets the entry's modification time, its *last use*.
//! Listing, verifying and collecting entries: [`crate::sweep::cache_admin`].

use crate::error::{Error, Result};
use crate::pipeline::code::CodeFingerprints;
use crate::results::h5::{open_file, write_file};
use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Open `path` (created if missing) and take an exclusive lock on it, released when the
/// returned file is dropped. Where the file system has no locks (some NFS mounts) the file
/// comes back unlocked: callers stay correct without it (write-then-rename), only
/// concurrent work is no longer serialised.
pub fn lock_file(path: &Path) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let _ = f.lock();
    Ok(f)
}

/// Named arrays, vectors and strings: the serialised form of a cached stage.
#[derive(Clone, Debug, Default)]
pub struct Store {
    pub arrays: BTreeMap<String, Array2<f32>>,
    pub vectors: BTreeMap<String, Vec<f64>>,
    pub strings: BTreeMap<String, String>,
}

impl Store {
    pub fn array(&self, name: &str) -> Result<&Array2<f32>> {
        self.arrays.get(name).ok_or_else(|| missing(name))
    }
    pub fn vector(&self, name: &str) -> Result<&Vec<f64>> {
        self.vectors.get(name).ok_or_else(|| missing(name))
    }
    pub fn string(&self, name: &str) -> Result<&String> {
        self.strings.get(name).ok_or_else(|| missing(name))
    }
}

fn missing(name: &str) -> Error {
    Error::Results {
        path: PathBuf::from("<cache entry>"),
        msg: format!("cache entry lacks `{name}`; delete the cache folder to rebuild it"),
    }
}

/// A cache key: serialised (YAML) into the entry's name, with a one-line summary for
/// listings.
pub trait CacheKey: Serialize {
    fn summary(&self) -> String;
}

/// Name of the string holding an entry's key YAML.
pub const KEY_FIELD: &str = "_key";
/// Name of the string holding an entry's key summary.
pub const SUMMARY_FIELD: &str = "_summary";

/// A stage result that can be cached.
pub trait Cacheable: Sized {
    fn to_store(&self) -> Store;
    fn from_store(s: &Store) -> Result<Self>;
}

/// Hits and builds of one stage in this process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageStats {
    pub hits: u64,
    pub builds: u64,
    /// Entries found invalid (unreadable, no checksum, checksum mismatch) and rebuilt.
    pub invalid: u64,
}

/// The cache rooted at a folder (normally `<sweep dir>/cache`).
pub struct StageCache {
    root: PathBuf,
    code: CodeFingerprints,
    stats: Mutex<BTreeMap<String, StageStats>>,
}

fn key_yaml(parts: &impl Serialize) -> String {
    serde_yaml_ng::to_string(parts).expect("cache key parts serialise")
}

/// `<stage>-<first 16 hex digits of sha256(YAML of parts)>`.
pub fn entry_key(stage: &str, parts: &impl Serialize) -> String {
    entry_name(stage, &key_yaml(parts))
}

/// [`entry_key`] from the key's YAML.
pub fn entry_name(stage: &str, yaml: &str) -> String {
    let digest = Sha256::digest(yaml.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{stage}-{hex}")
}

impl StageCache {
    /// The cache at `root`, keyed with this build's code fingerprints.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_code(root, CodeFingerprints::current())
    }

    /// The cache at `root` with other code fingerprints (tests of invalidation).
    pub fn with_code(root: impl Into<PathBuf>, code: CodeFingerprints) -> Self {
        StageCache {
            root: root.into(),
            code,
            stats: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The code fingerprints its keys are built with.
    pub fn code(&self) -> &CodeFingerprints {
        &self.code
    }

    /// Path of the entry for `(stage, parts)`.
    pub fn path(&self, stage: &str, parts: &impl Serialize) -> PathBuf {
        self.entry_path(stage, &key_yaml(parts))
    }

    fn entry_path(&self, stage: &str, yaml: &str) -> PathBuf {
        self.root
            .join(stage)
            .join(format!("{}.h5", entry_name(stage, yaml)))
    }

    /// Load the entry if present and valid, else build it (under the entry's lock) and
    /// store it. An invalid entry is logged (file and reason) and rebuilt.
    pub fn get_or_build<T: Cacheable>(
        &self,
        stage: &str,
        parts: &impl CacheKey,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let yaml = key_yaml(parts);
        let path = self.entry_path(stage, &yaml);
        let mut invalid = None;
        match try_load::<T>(&path, &yaml) {
            Loaded::Valid(v) => {
                self.count(stage, Count::Hit);
                touch(&path);
                return Ok(v);
            }
            Loaded::Invalid(why) => invalid = Some(why),
            Loaded::Absent => {}
        }
        let dir = path.parent().expect("entry has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::results::paths::sweep_stale_tmp(dir);
        let _lock = lock_file(&path.with_extension("lock"))?;
        // Another process may have built (or rebuilt) it while we waited for the lock.
        match try_load::<T>(&path, &yaml) {
            Loaded::Valid(v) => {
                self.count(stage, Count::Hit);
                return Ok(v);
            }
            Loaded::Invalid(why) => invalid = Some(why),
            Loaded::Absent => {}
        }
        if let Some(why) = &invalid {
            crate::progress::warn(format!("[cache] warning: {why}; rebuilding"));
            self.count(stage, Count::Invalid);
        }
        let v = build()?;
        let mut store = v.to_store();
        store.strings.insert(KEY_FIELD.into(), yaml);
        store.strings.insert(SUMMARY_FIELD.into(), parts.summary());
        save_store(&path, &store)?;
        self.count(stage, Count::Build);
        crate::progress::log(format!("[cache] built {}", path.display()));
        Ok(v)
    }

    fn count(&self, stage: &str, what: Count) {
        let mut s = self.stats.lock().unwrap();
        let e = s.entry(stage.to_string()).or_default();
        match what {
            Count::Hit => e.hits += 1,
            Count::Build => e.builds += 1,
            Count::Invalid => e.invalid += 1,
        }
    }

    /// Per-stage hit/build counts of this process.
    pub fn stats(&self) -> BTreeMap<String, StageStats> {
        self.stats.lock().unwrap().clone()
    }
}

#[derive(Clone, Copy)]
enum Count {
    Hit,
    Build,
    Invalid,
}

/// What is at an entry's path.
enum Loaded<T> {
    Absent,
    Valid(T),
    /// Why it cannot be used (the error names the file).
    Invalid(String),
}

/// Mark an entry as used now (its modification time; best effort: a read-only cache still
/// works).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

fn try_load<T: Cacheable>(path: &Path, yaml: &str) -> Loaded<T> {
    if !path.exists() {
        return Loaded::Absent;
    }
    let bad = |msg: String| Error::Results {
        path: path.to_path_buf(),
        msg,
    };
    match load_store(path).and_then(|s| {
        match s.strings.get(KEY_FIELD) {
            Some(k) if k == yaml => {}
            Some(_) => {
                return Err(bad(
                    "holds another key (a hash collision or a renamed file)".into(),
                ))
            }
            None => {
                return Err(bad(format!(
                    "has no `{KEY_FIELD}` (written by an older diffnmf)"
                )))
            }
        }
        T::from_store(&s).map_err(|e| bad(format!("does not hold this stage's result ({e})")))
    }) {
        Ok(v) => Loaded::Valid(v),
        Err(e) => Loaded::Invalid(e.to_string()),
    }
}

fn h5err(path: &Path, e: hdf5::Error) -> Error {
    Error::Results {
        path: path.to_path_buf(),
        msg: format!("hdf5: {e}"),
    }
}

/// Root attribute holding [`content_hash`] of the stored content.
pub const CHECKSUM_ATTR: &str = "sha256";

/// SHA-256 (hex) of a canonical serialisation of `s`: a version tag, then per array
/// `A, name, ndim, shape, f32 values (row-major, little-endian)`, per vector
/// `V, name, len, f64 values`, per string `S, name, len, UTF-8 bytes` (as stored: NUL
/// replaced by a space), each name and length prefixed by its u64 little-endian length, in
/// name order.
pub fn content_hash(s: &Store) -> String {
    let mut h = Sha256::new();
    let bytes = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    h.update(b"diffnmf-store-v1\0");
    for (k, a) in &s.arrays {
        h.update(b"A");
        bytes(&mut h, k.as_bytes());
        h.update((a.ndim() as u64).to_le_bytes());
        for d in a.shape() {
            h.update((*d as u64).to_le_bytes());
        }
        let data: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes(&mut h, &data);
    }
    for (k, v) in &s.vectors {
        h.update(b"V");
        bytes(&mut h, k.as_bytes());
        let data: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        bytes(&mut h, &data);
    }
    for (k, v) in &s.strings {
        h.update(b"S");
        bytes(&mut h, k.as_bytes());
        bytes(&mut h, v.replace('\0', " ").as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Write a store atomically, with its checksum (built in memory, then temp file, fsync,
/// rename; a failed write leaves nothing behind and names `path`).
pub fn save_store(path: &Path, s: &Store) -> Result<()> {
    let sum: VarLenUnicode = content_hash(s).parse().expect("hex has no NUL");
    write_file(path, |f| {
        let ga = f.create_group("arrays")?;
        for (k, a) in &s.arrays {
            ga.new_dataset_builder().with_data(a).create(k.as_str())?;
        }
        let gv = f.create_group("vectors")?;
        for (k, v) in &s.vectors {
            gv.new_dataset_builder()
                .with_data(&Array1::from(v.clone()))
                .create(k.as_str())?;
        }
        let gs = f.create_group("strings")?;
        for (k, v) in &s.strings {
            let val: VarLenUnicode = v.replace('\0', " ").parse().expect("no NUL");
            gs.new_attr::<VarLenUnicode>()
                .create(k.as_str())?
                .write_scalar(&val)?;
        }
        f.new_attr::<VarLenUnicode>()
            .create(CHECKSUM_ATTR)?
            .write_scalar(&sum)
    })
}

/// The key summary stored in an entry (its `strings` only; the arrays are not read).
pub fn read_summary(path: &Path) -> Result<String> {
    let read = || -> hdf5::Result<Option<String>> {
        let f = open_file(path)?;
        let gs = f.group("strings")?;
        if !gs.attr_names()?.iter().any(|n| n == SUMMARY_FIELD) {
            return Ok(None);
        }
        let v: VarLenUnicode = gs.attr(SUMMARY_FIELD)?.read_scalar()?;
        Ok(Some(v.to_string()))
    };
    let s = read().map_err(|e| h5err(path, e))?;
    Ok(s.unwrap_or_else(|| "(no summary: written by an older diffnmf)".into()))
}

/// Read a store and verify its checksum: an entry without one (written by an older
/// diffnmf) or with a mismatching one is an error naming the file.
pub fn load_store(path: &Path) -> Result<Store> {
    let read = || -> hdf5::Result<(Store, Option<String>)> {
        let f = open_file(path)?;
        let mut s = Store::default();
        let ga = f.group("arrays")?;
        for name in ga.member_names()? {
            s.arrays
                .insert(name.clone(), ga.dataset(&name)?.read_2d::<f32>()?);
        }
        let gv = f.group("vectors")?;
        for name in gv.member_names()? {
            s.vectors
                .insert(name.clone(), gv.dataset(&name)?.read_raw::<f64>()?);
        }
        let gs = f.group("strings")?;
        for name in gs.attr_names()? {
            let v: VarLenUnicode = gs.attr(&name)?.read_scalar()?;
            s.strings.insert(name, v.to_string());
        }
        let stored = match f.attr(CHECKSUM_ATTR) {
            Ok(a) => Some(a.read_scalar::<VarLenUnicode>()?.to_string()),
            Err(_) => None,
        };
        Ok((s, stored))
    };
    let (s, stored) = read().map_err(|e| h5err(path, e))?;
    let bad = |msg: String| Error::Results {
        path: path.to_path_buf(),
        msg,
    };
    let Some(stored) = stored else {
        return Err(bad(format!(
            "no `{CHECKSUM_ATTR}` checksum attribute (written by an older diffnmf)"
        )));
    };
    let computed = content_hash(&s);
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch: stored {stored} computed {computed}"
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests;
