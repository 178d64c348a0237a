//! Content-addressed stage cache shared by the cells of a sweep (and safe across processes).
//!
//! An entry is identified by its stage name and a hash of the configuration slice that
//! determines it (`<root>/<stage>/<stage>-<16 hex>.h5`). Entries are built under an
//! exclusive file lock (`.lock` beside the entry; concurrent builders of the same entry wait
//! for the first one and then load its result), written to a temporary name and renamed, so
//! a half-written entry is never read. Where the file system does not support locks (some
//! NFS mounts), building proceeds without one and write-then-rename still keeps entries whole.

use crate::error::{Error, Result};
use crate::results::h5::{create_file, open_file};
use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
}

/// The cache rooted at a folder (normally `<sweep dir>/cache`).
pub struct StageCache {
    root: PathBuf,
    stats: Mutex<BTreeMap<String, StageStats>>,
}

/// `<stage>-<first 16 hex digits of sha256(YAML of parts)>`.
pub fn entry_key(stage: &str, parts: &impl Serialize) -> String {
    let yaml = serde_yaml_ng::to_string(parts).expect("cache key parts serialise");
    let digest = Sha256::digest(yaml.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{stage}-{hex}")
}

impl StageCache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StageCache {
            root: root.into(),
            stats: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the entry for `(stage, parts)`.
    pub fn path(&self, stage: &str, parts: &impl Serialize) -> PathBuf {
        self.root
            .join(stage)
            .join(format!("{}.h5", entry_key(stage, parts)))
    }

    /// Load the entry if present, else build it (under the entry's lock) and store it.
    pub fn get_or_build<T: Cacheable>(
        &self,
        stage: &str,
        parts: &impl Serialize,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let path = self.path(stage, parts);
        if path.exists() {
            if let Ok(v) = load_store(&path).and_then(|s| T::from_store(&s)) {
                self.count(stage, true);
                return Ok(v);
            }
        }
        let dir = path.parent().expect("entry has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = path.with_extension("lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        let locked = lock.lock().is_ok();
        if path.exists() {
            if let Ok(v) = load_store(&path).and_then(|s| T::from_store(&s)) {
                self.count(stage, true);
                return Ok(v);
            }
        }
        let v = build()?;
        save_store(&path, &v.to_store())?;
        if locked {
            let _ = lock.unlock();
        }
        self.count(stage, false);
        crate::progress::log(format!("[cache] built {}", path.display()));
        Ok(v)
    }

    fn count(&self, stage: &str, hit: bool) {
        let mut s = self.stats.lock().unwrap();
        let e = s.entry(stage.to_string()).or_default();
        if hit {
            e.hits += 1;
        } else {
            e.builds += 1;
        }
    }

    /// Per-stage hit/build counts of this process.
    pub fn stats(&self) -> BTreeMap<String, StageStats> {
        self.stats.lock().unwrap().clone()
    }
}

fn h5err(path: &Path, e: hdf5::Error) -> Error {
    Error::Results {
        path: path.to_path_buf(),
        msg: format!("hdf5: {e}"),
    }
}

/// Write a store atomically.
pub fn save_store(path: &Path, s: &Store) -> Result<()> {
    let tmp = crate::results::paths::tmp_name(path);
    let write = || -> hdf5::Result<()> {
        let f = create_file(&tmp)?;
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
        f.flush()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(h5err(path, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Read a store.
pub fn load_store(path: &Path) -> Result<Store> {
    let read = || -> hdf5::Result<Store> {
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
        Ok(s)
    };
    read().map_err(|e| h5err(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Thing(Array2<f32>, Vec<f64>, String);
    impl Cacheable for Thing {
        fn to_store(&self) -> Store {
            let mut s = Store::default();
            s.arrays.insert("a".into(), self.0.clone());
            s.vectors.insert("v".into(), self.1.clone());
            s.strings.insert("s".into(), self.2.clone());
            s
        }
        fn from_store(s: &Store) -> Result<Self> {
            Ok(Thing(
                s.array("a")?.clone(),
                s.vector("v")?.clone(),
                s.string("s")?.clone(),
            ))
        }
    }

    #[test]
    fn builds_once_then_hits_and_keys_depend_on_parts() {
        let dir = tempfile::tempdir().unwrap();
        let c = StageCache::new(dir.path());
        let mk = || {
            Ok(Thing(
                Array2::from_elem((2, 3), 1.5),
                vec![1.0, 2.0],
                "x".into(),
            ))
        };
        let a = c.get_or_build("nnmf", &("k", 8), mk).unwrap();
        let b = c
            .get_or_build("nnmf", &("k", 8), || -> Result<Thing> {
                panic!("must not rebuild")
            })
            .unwrap();
        assert_eq!(a, b);
        c.get_or_build("nnmf", &("k", 16), mk).unwrap();
        assert_eq!(c.stats()["nnmf"], StageStats { hits: 1, builds: 2 });
        assert_ne!(entry_key("nnmf", &("k", 8)), entry_key("nnmf", &("k", 16)));
        // A second cache object (another process) sees the entries.
        let c2 = StageCache::new(dir.path());
        c2.get_or_build("nnmf", &("k", 8), || -> Result<Thing> {
            panic!("must not rebuild")
        })
        .unwrap();
        let leftovers = std::fs::read_dir(dir.path().join("nnmf"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn a_failed_build_leaves_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let c = StageCache::new(dir.path());
        let r = c.get_or_build("cnn", &1, || -> Result<Thing> {
            Err(Error::param("x", "boom"))
        });
        assert!(r.is_err());
        assert!(!c.path("cnn", &1).exists());
    }
}
