//! Content-addressed stage cache shared by the cells of a sweep (and safe across processes).
//!
//! An entry is identified by its stage name and a hash of the configuration slice that
//! determines it (`<root>/<stage>/<stage>-<16 hex>.h5`). Entries are built under an
//! exclusive file lock (`.lock` beside the entry; concurrent builders of the same entry wait
//! for the first one and then load its result), written to a temporary name and renamed, so
//! a half-written entry is never read. Where the file system does not support locks (some
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

use crate::error::{Error, Result};
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

    /// Load the entry if present and valid, else build it (under the entry's lock) and
    /// store it. An invalid entry is logged (file and reason) and rebuilt.
    pub fn get_or_build<T: Cacheable>(
        &self,
        stage: &str,
        parts: &impl Serialize,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let path = self.path(stage, parts);
        let mut invalid = None;
        match try_load::<T>(&path) {
            Loaded::Valid(v) => {
                self.count(stage, Count::Hit);
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
        match try_load::<T>(&path) {
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
        save_store(&path, &v.to_store())?;
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

fn try_load<T: Cacheable>(path: &Path) -> Loaded<T> {
    if !path.exists() {
        return Loaded::Absent;
    }
    match load_store(path).and_then(|s| {
        T::from_store(&s).map_err(|e| Error::Results {
            path: path.to_path_buf(),
            msg: format!("does not hold this stage's result ({e})"),
        })
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
        assert_eq!(
            c.stats()["nnmf"],
            StageStats {
                hits: 1,
                builds: 2,
                invalid: 0
            }
        );
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

    fn thing() -> Thing {
        // A distinctive array whose raw bytes can be found in the file.
        let a = Array2::from_shape_fn((4, 8), |(i, j)| 1234.5 + (i * 8 + j) as f32 * 0.25);
        Thing(a, vec![3.0, 4.0], "hello".into())
    }

    fn build_count(c: &StageCache, parts: &impl Serialize) -> (Thing, StageStats) {
        let v = c.get_or_build("nnmf", parts, || Ok(thing())).unwrap();
        (v, c.stats()["nnmf"])
    }

    #[test]
    fn flipped_bytes_are_detected_and_the_entry_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let c = StageCache::new(dir.path());
        build_count(&c, &("k", 8));
        let path = c.path("nnmf", &("k", 8));
        let mut bytes = std::fs::read(&path).unwrap();
        let needle: Vec<u8> = thing()
            .0
            .iter()
            .take(4)
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_slice())
            .expect("the array's raw data is in the file");
        for b in &mut bytes[at + 9..at + 12] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        let e = load_store(&path).unwrap_err().to_string();
        assert!(
            e.contains(path.to_str().unwrap()) && e.contains("checksum mismatch: stored "),
            "{e}"
        );
        assert!(e.contains(" computed "), "{e}");
        let c2 = StageCache::new(dir.path());
        let (v, st) = build_count(&c2, &("k", 8));
        assert_eq!(v, thing());
        assert_eq!(
            st,
            StageStats {
                hits: 0,
                builds: 1,
                invalid: 1
            }
        );
        // The rebuilt entry is valid again.
        let c3 = StageCache::new(dir.path());
        let (_, st) = build_count(&c3, &("k", 8));
        assert_eq!((st.hits, st.builds, st.invalid), (1, 0, 0));
    }

    #[test]
    fn truncated_garbage_and_unchecksummed_entries_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let c = StageCache::new(dir.path());
        build_count(&c, &("k", 8));
        let path = c.path("nnmf", &("k", 8));
        let good = std::fs::read(&path).unwrap();
        let old_style = |p: &Path| {
            // As written before checksums: the same groups, no `sha256` attribute.
            write_file(p, |f| {
                let ga = f.create_group("arrays")?;
                ga.new_dataset_builder().with_data(&thing().0).create("a")?;
                let gv = f.create_group("vectors")?;
                gv.new_dataset_builder()
                    .with_data(&Array1::from(thing().1))
                    .create("v")?;
                let gs = f.create_group("strings")?;
                let val: VarLenUnicode = "hello".parse().unwrap();
                gs.new_attr::<VarLenUnicode>()
                    .create("s")?
                    .write_scalar(&val)
            })
            .unwrap()
        };
        type Damage<'a> = Box<dyn Fn(&Path) + 'a>;
        let cases: [(&str, Damage, &str); 3] = [
            (
                "truncated",
                Box::new(|p: &Path| std::fs::write(p, &good[..good.len() / 2]).unwrap()),
                "hdf5:",
            ),
            (
                "garbage",
                Box::new(|p: &Path| std::fs::write(p, b"not hdf5\n".repeat(50)).unwrap()),
                "hdf5:",
            ),
            ("unchecksummed", Box::new(old_style), "no `sha256` checksum"),
        ];
        for (what, damage, reason) in cases {
            damage(&path);
            let e = load_store(&path).unwrap_err().to_string();
            assert!(
                e.contains(path.to_str().unwrap()) && e.contains(reason),
                "{what}: {e}"
            );
            let c2 = StageCache::new(dir.path());
            let (v, st) = build_count(&c2, &("k", 8));
            assert_eq!(v, thing(), "{what}");
            assert_eq!((st.hits, st.builds, st.invalid), (0, 1, 1), "{what}");
            load_store(&path).unwrap();
        }
    }

    #[test]
    fn the_hash_covers_names_shapes_and_values() {
        let t = thing();
        let base = content_hash(&t.to_store());
        let mut s = t.to_store();
        s.arrays.insert(
            "a".into(),
            t.0.clone().into_shape_with_order((8, 4)).unwrap(),
        );
        assert_ne!(content_hash(&s), base, "shape");
        let mut s = t.to_store();
        s.arrays.get_mut("a").unwrap()[[0, 0]] += 1.0;
        assert_ne!(content_hash(&s), base, "value");
        let mut s = t.to_store();
        let a = s.arrays.remove("a").unwrap();
        s.arrays.insert("b".into(), a);
        assert_ne!(content_hash(&s), base, "name");
        let mut s = t.to_store();
        s.strings.insert("s".into(), "hellp".into());
        assert_ne!(content_hash(&s), base, "string");
        let mut s = t.to_store();
        s.vectors.insert("v".into(), vec![3.0, 4.5]);
        assert_ne!(content_hash(&s), base, "vector");
        assert_eq!(content_hash(&t.to_store()), base);
    }

    #[test]
    fn stale_temporaries_in_the_entry_folder_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let c = StageCache::new(dir.path());
        let stage_dir = dir.path().join("nnmf");
        std::fs::create_dir_all(&stage_dir).unwrap();
        let mut pid = 4_000_000u32;
        while Path::new(&format!("/proc/{pid}")).exists() {
            pid += 1;
        }
        let stale = stage_dir.join(format!(
            ".nnmf-0000000000000000.h5.tmp.{}.{pid}",
            crate::results::paths::hostname()
        ));
        std::fs::write(&stale, b"half").unwrap();
        build_count(&c, &("k", 8));
        assert!(!stale.exists());
    }
}
