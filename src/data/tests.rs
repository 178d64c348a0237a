//! Tests of `load` dispatch and the stratified split.

use super::*;

fn uneven_labels() -> Vec<u8> {
    // Class sizes 1001, 7, 1, 250 interleaved (deterministic pattern).
    let mut v = Vec::new();
    for (c, n) in [(0u8, 1001usize), (1, 7), (2, 1), (3, 250)] {
        v.extend(std::iter::repeat_n(c, n));
    }
    let n = v.len();
    (0..n).map(|i| v[(i * 7919) % n]).collect()
}

#[test]
fn split_is_disjoint_complete_and_stratified() {
    let labels = uneven_labels();
    let f = [0.70, 0.15, 0.15];
    let s = stratified_split(&labels, f, 42);
    let mut all: Vec<usize> = s
        .train
        .iter()
        .chain(&s.val)
        .chain(&s.test)
        .copied()
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..labels.len()).collect::<Vec<_>>(),
        "disjoint and complete"
    );
    for part in [&s.train, &s.val, &s.test] {
        assert!(part.windows(2).all(|w| w[0] < w[1]), "sorted");
    }
    for c in 0..4u8 {
        let n = labels.iter().filter(|&&l| l == c).count() as f64;
        for (part, frac) in [(&s.train, f[0]), (&s.val, f[1]), (&s.test, f[2])] {
            let k = part.iter().filter(|&&i| labels[i] == c).count() as f64;
            assert!(
                (k - frac * n).abs() <= 1.0,
                "class {c}: {k} vs {}",
                frac * n
            );
        }
    }
}

#[test]
fn split_depends_only_on_seed() {
    let labels = uneven_labels();
    let f = [0.70, 0.15, 0.15];
    assert_eq!(
        stratified_split(&labels, f, 7),
        stratified_split(&labels, f, 7)
    );
    assert_ne!(
        stratified_split(&labels, f, 7),
        stratified_split(&labels, f, 8)
    );
}

#[test]
fn embedded_split_sizes() {
    let ds = load(&DataSource::Embedded, 28, 28).unwrap();
    let s = stratified_split(&ds.labels, [0.70, 0.15, 0.15], 1);
    // Sum of per-class rounding: within ±1 per class (10 classes) of 7000/1500/1500.
    assert!(
        (s.train.len() as i64 - 7000).abs() <= 10,
        "{}",
        s.train.len()
    );
    assert!((s.val.len() as i64 - 1500).abs() <= 10, "{}", s.val.len());
    assert_eq!(s.train.len() + s.val.len() + s.test.len(), 10_000);
}

#[test]
fn fractions_are_validated() {
    assert!(validate_fractions([0.70, 0.15, 0.15], "data.split").is_ok());
    for bad in [
        [0.7, 0.3, 0.0],
        [0.8, 0.15, 0.15],
        [f64::NAN, 0.5, 0.5],
        [-0.1, 0.6, 0.5],
    ] {
        let msg = validate_fractions(bad, "data.split")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("data.split"), "{msg}");
    }
}

#[test]
fn load_resizes_embedded_and_rejects_zero_size() {
    let native = load(&DataSource::Embedded, 28, 28).unwrap();
    let small = load(&DataSource::Embedded, 14, 14).unwrap();
    assert_eq!(small.images.dim(), (10_000, 196));
    assert_eq!((small.height, small.width), (14, 14));
    assert_eq!(small.labels, native.labels);
    // 28→14 is an exact 2×2 block average.
    let (a, b) = (native.images.row(123), small.images.row(123));
    let want = (a[2 * 28 * 5 + 2 * 6]
        + a[2 * 28 * 5 + 2 * 6 + 1]
        + a[(2 * 5 + 1) * 28 + 2 * 6]
        + a[(2 * 5 + 1) * 28 + 2 * 6 + 1])
        / 4.0;
    assert!((b[5 * 14 + 6] - want).abs() < 1e-6);
    assert!(small.source.contains("resized"));
    let big = load(&DataSource::Embedded, 32, 30).unwrap();
    assert_eq!(big.images.ncols(), 32 * 30);
    assert!(big.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
    let e = load(&DataSource::Embedded, 0, 28).unwrap_err().to_string();
    assert!(e.contains("data.height"), "{e}");
}

#[test]
fn load_dispatches_idx_and_folder_errors() {
    let dir = tempfile::tempdir().unwrap();
    let src = DataSource::Idx {
        images: dir.path().join("missing-images"),
        labels: dir.path().join("missing-labels"),
    };
    let e = load(&src, 28, 28).unwrap_err().to_string();
    assert!(
        e.contains("missing-images") && e.contains("data.images"),
        "{e}"
    );
    let src = DataSource::Folder {
        root: dir.path().join("missing-root"),
    };
    let e = load(&src, 28, 28).unwrap_err().to_string();
    assert!(e.contains("missing-root") && e.contains("data.root"), "{e}");
}

#[test]
fn subset_and_class_counts() {
    let ds = load(&DataSource::Embedded, 28, 28).unwrap();
    assert_eq!(ds.class_counts(), embedded::CLASS_COUNTS.to_vec());
    let sub = ds.subset(&[5, 9000, 1]);
    assert_eq!(sub.len(), 3);
    assert_eq!(
        sub.labels,
        vec![ds.labels[5], ds.labels[9000], ds.labels[1]]
    );
    assert_eq!(sub.images.row(1), ds.images.row(9000));
}

#[test]
fn checked_load_and_training_classes() {
    // The embedded digits pass the default 0..=9 range; fewer classes do not.
    let ds = load_checked(&DataSource::Embedded, 8, 8, None).unwrap();
    assert_eq!(ds.classes_present(), (0..10).collect::<Vec<u8>>());
    let e = load_checked(&DataSource::Embedded, 8, 8, Some(5))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("<embedded>") && e.contains("data.classes"),
        "{e}"
    );
    let split = stratified_split(&ds.labels, [0.7, 0.15, 0.15], 0);
    let src = DataSource::Folder {
        root: PathBuf::from("some/root"),
    };
    assert_eq!(training_classes(&ds, &split.train, &src).unwrap().len(), 10);
    // A training split of one class (label 3) is rejected naming the folder and the fix.
    let threes: Vec<usize> = (0..ds.len()).filter(|&i| ds.labels[i] == 3).collect();
    let e = training_classes(&ds, &threes, &src)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("some/root") && e.contains("1 class (label 3)") && e.contains("data.root"),
        "{e}"
    );
    let e = training_classes(&ds, &[], &DataSource::Embedded)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no class"), "{e}");
}

#[test]
fn content_survives_resize_and_subset_and_short_names_it() {
    let ds = load(&DataSource::Embedded, 28, 28).unwrap();
    let fp = fingerprint(&DataSource::Embedded).unwrap();
    assert_eq!(ds.content, fp);
    assert_eq!(load(&DataSource::Embedded, 14, 14).unwrap().content, fp);
    assert_eq!(ds.subset(&[3, 1, 4]).content, fp);
    assert_eq!(ds.clone().resized(10, 12).content, fp);
    let short = fp.short();
    assert_eq!(short.len(), "idx:".len() + 12, "{short}");
    assert!(fp.id.starts_with(&short), "{short} vs {}", fp.id);
    let other = Fingerprint {
        id: format!("folder:{}", "ab".repeat(32)),
        files: 1,
        bytes: 1,
    };
    assert_eq!(other.short(), "folder:abababababab");
}

#[test]
fn folder_hasher_encodes_lengths_unambiguously() {
    // Moving bytes between the relative path and the next field must change the id.
    use fingerprint::FolderHasher;
    let d = fingerprint::sha256(b"x");
    let id = |rels: &[&str]| {
        let mut h = FolderHasher::new();
        for r in rels {
            h.add(r, 1, &d);
        }
        h.finish().id
    };
    assert_ne!(id(&["0/a.png"]), id(&["0/a.pn"]));
    assert_ne!(id(&["0/a.png", "0/b.png"]), id(&["0/b.png", "0/a.png"]));
    assert_eq!(id(&["0/a.png"]), id(&["0/a.png"]));
    assert_eq!(
        fingerprint::from_hex32(&fingerprint::hex(&d)),
        Some(d),
        "hex round trip"
    );
    assert_eq!(fingerprint::from_hex32("zz"), None);
    assert_eq!(fingerprint::from_hex32(&"g".repeat(64)), None);
}
