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

fn build_count(c: &StageCache, parts: &impl CacheKey) -> (Thing, StageStats) {
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

impl CacheKey for (&str, i32) {
    fn summary(&self) -> String {
        format!("{}={}", self.0, self.1)
    }
}

impl CacheKey for i32 {
    fn summary(&self) -> String {
        self.to_string()
    }
}

#[test]
fn an_entry_whose_stored_key_differs_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let c = StageCache::new(dir.path());
    build_count(&c, &("k", 8));
    // A valid entry (checksum whole) under the name of another key: a hash collision or a
    // file copied by hand. The stored key decides.
    let other = c.path("nnmf", &("k", 16));
    std::fs::copy(c.path("nnmf", &("k", 8)), &other).unwrap();
    let e = load_store(&other).unwrap();
    assert!(e.strings[KEY_FIELD].contains("8"));
    let c2 = StageCache::new(dir.path());
    let (_, st) = build_count(&c2, &("k", 16));
    assert_eq!((st.hits, st.builds, st.invalid), (0, 1, 1));
    assert!(load_store(&other).unwrap().strings[KEY_FIELD].contains("16"));
}

#[test]
fn a_hit_marks_the_entry_used() {
    let dir = tempfile::tempdir().unwrap();
    let c = StageCache::new(dir.path());
    build_count(&c, &("k", 8));
    let path = c.path("nnmf", &("k", 8));
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400 * 30);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let (_, st) = build_count(&StageCache::new(dir.path()), &("k", 8));
    assert_eq!(st.hits, 1);
    let used = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert!(
        used.duration_since(old).unwrap() > std::time::Duration::from_secs(86_400 * 29),
        "a hit did not update the last use"
    );
}
