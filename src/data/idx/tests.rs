//! Tests of the IDX reader: round trips (raw and gzip), and every validation error.

use super::*;
use crate::error::Error;
use std::path::PathBuf;

fn tiny() -> (usize, usize, Vec<u8>, Vec<u8>) {
    // 5 images of 3×4 with distinct bytes; labels 0..=3 with label 3 the maximum.
    let pixels: Vec<u8> = (0..5 * 12).map(|i| (i * 7 % 256) as u8).collect();
    (3, 4, pixels, vec![2, 0, 3, 1, 0])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn err_text(e: Error) -> String {
    e.to_string()
}

#[test]
fn round_trip_raw_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, pixels, labels) = tiny();
    let img = encode_images(rows, cols, &pixels);
    let lab = encode_labels(&labels);
    // Gzip detection is by content: the gzipped files deliberately carry no `.gz` suffix, and a
    // raw file carries one.
    let cases = [
        (
            write(dir.path(), "raw-img", &img),
            write(dir.path(), "raw-lab", &lab),
        ),
        (
            write(dir.path(), "gz-img", &gzip(&img)),
            write(dir.path(), "gz-lab", &gzip(&lab)),
        ),
        (
            write(dir.path(), "mixed-img.gz", &img),
            write(dir.path(), "mixed-lab", &gzip(&lab)),
        ),
    ];
    for (ip, lp) in cases {
        let ds = read_idx(&ip, &lp).unwrap();
        assert_eq!((ds.height, ds.width), (rows, cols));
        assert_eq!(ds.images.dim(), (5, 12));
        assert_eq!(ds.labels, labels);
        assert_eq!(ds.num_classes, 4);
        let back: Vec<u8> = ds
            .images
            .iter()
            .map(|&v| (v * 255.0).round() as u8)
            .collect();
        assert_eq!(back, pixels);
        assert!(
            ds.source.contains("raw-img")
                || ds.source.contains("gz-img")
                || ds.source.contains("mixed-img")
        );
    }
}

#[test]
fn truncated_file_names_path_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, pixels, labels) = tiny();
    let mut img = encode_images(rows, cols, &pixels);
    let full = img.len();
    img.truncate(full - 5);
    for (name, bytes) in [("trunc-img", img.clone()), ("trunc-img-gz", gzip(&img))] {
        let ip = write(dir.path(), name, &bytes);
        let lp = write(dir.path(), "lab", &encode_labels(&labels));
        let msg = err_text(read_idx(&ip, &lp).unwrap_err());
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains("truncated"), "{msg}");
        assert!(
            msg.contains(&full.to_string()) && msg.contains(&(full - 5).to_string()),
            "{msg}"
        );
    }
    // Trailing garbage is also a size mismatch.
    let mut long = encode_labels(&labels);
    long.push(9);
    let lp = write(dir.path(), "long-lab", &long);
    let ip = write(dir.path(), "img", &encode_images(rows, cols, &pixels));
    let msg = err_text(read_idx(&ip, &lp).unwrap_err());
    assert!(
        msg.contains("long-lab") && msg.contains("trailing"),
        "{msg}"
    );
    // A gzip stream cut short is reported against the file too.
    let gz = gzip(&encode_images(rows, cols, &pixels));
    let cut = write(dir.path(), "cut-gz", &gz[..gz.len() / 2]);
    let msg = err_text(read_idx(&cut, &lp).unwrap_err());
    assert!(msg.contains("cut-gz") && msg.contains("gzip"), "{msg}");
}

#[test]
fn bad_magic_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, pixels, labels) = tiny();
    let lp = write(dir.path(), "lab", &encode_labels(&labels));
    let good = encode_images(rows, cols, &pixels);
    let mut wrong_type = good.clone();
    wrong_type[2] = 0x0D; // float data
    let mut garbage = good.clone();
    garbage[0] = 0x50;
    for (name, bytes, needle) in [
        ("float-img", wrong_type, "0x0d"),
        ("garbage-img", garbage, "not an IDX"),
    ] {
        let ip = write(dir.path(), name, &bytes);
        let msg = err_text(read_idx(&ip, &lp).unwrap_err());
        assert!(msg.contains(name) && msg.contains(needle), "{msg}");
    }
    // Images and labels swapped: dimension count mismatch.
    let ip = write(dir.path(), "img", &good);
    let msg = err_text(read_idx(&lp, &ip).unwrap_err());
    assert!(
        msg.contains("dimensions") && msg.contains("swapped"),
        "{msg}"
    );
}

#[test]
fn count_mismatch_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, pixels, labels) = tiny();
    let ip = write(dir.path(), "five-img", &encode_images(rows, cols, &pixels));
    let lp = write(dir.path(), "four-lab", &encode_labels(&labels[..4]));
    let msg = err_text(read_idx(&ip, &lp).unwrap_err());
    assert!(
        msg.contains("five-img") && msg.contains("four-lab"),
        "{msg}"
    );
    assert!(
        msg.contains("5 images") && msg.contains("4 labels"),
        "{msg}"
    );
}

#[test]
fn missing_file_names_path_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, pixels, labels) = tiny();
    let ip = write(dir.path(), "img", &encode_images(rows, cols, &pixels));
    let lp = write(dir.path(), "lab", &encode_labels(&labels));
    let nope = dir.path().join("nope-idx3");
    let msg = err_text(read_idx(&nope, &lp).unwrap_err());
    assert!(
        msg.contains("nope-idx3") && msg.contains("data.images"),
        "{msg}"
    );
    let msg = err_text(read_idx(&ip, &nope).unwrap_err());
    assert!(
        msg.contains("nope-idx3") && msg.contains("data.labels"),
        "{msg}"
    );
}

#[test]
fn labels_outside_the_class_range_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols, pixels, mut labels) = tiny();
    labels[3] = 200;
    let ip = write(dir.path(), "img", &encode_images(rows, cols, &pixels));
    let lp = write(dir.path(), "bad-labels", &encode_labels(&labels));
    let lim = |classes| Checks {
        classes,
        pixels: 0,
        available: None,
        fix: "",
    };
    let msg = err_text(read_idx_checked(&ip, &lp, &lim(Some(10))).unwrap_err());
    for needle in [
        "bad-labels",
        "label 200 at index 3",
        "0..=9",
        "data.classes: 201",
    ] {
        assert!(msg.contains(needle), "`{needle}` in {msg}");
    }
    // Unchecked and with a large enough range the file loads.
    assert_eq!(read_idx(&ip, &lp).unwrap().num_classes, 201);
    assert!(read_idx_checked(&ip, &lp, &lim(Some(256))).is_ok());
    // The memory check uses the larger of the native and the target size.
    let small = Checks {
        classes: None,
        pixels: 100,
        available: Some(2 * 5 * 100 * 4 - 1),
        fix: "lower it",
    };
    let msg = err_text(read_idx_checked(&ip, &lp, &small).unwrap_err());
    assert!(msg.contains("img") && msg.contains("lower it"), "{msg}");
}

/// The IDX fingerprint computed independently of the crate: the raw files are built byte by
/// byte and the id follows the documented formula with `sha2` directly.
fn reference_idx_id(img: &[u8], lab: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut pre = b"diffnmf-data-v1\0idx\0".to_vec();
    pre.extend_from_slice(&Sha256::digest(img));
    pre.extend_from_slice(&Sha256::digest(lab));
    let hex: String = Sha256::digest(&pre)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("idx:{hex}")
}

/// The raw IDX bytes of `tiny()`, written out by hand (not with `encode_*`).
fn tiny_raw() -> (Vec<u8>, Vec<u8>) {
    let (rows, cols, pixels, labels) = tiny();
    let mut img = vec![
        0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, rows as u8, 0, 0, 0, cols as u8,
    ];
    img.extend_from_slice(&pixels);
    let mut lab = vec![0, 0, 8, 1, 0, 0, 0, 5];
    lab.extend_from_slice(&labels);
    (img, lab)
}

#[test]
fn idx_fingerprint_matches_reference_raw_and_gzip() {
    use crate::data::{fingerprint, DataSource};
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = tiny_raw();
    let want = reference_idx_id(&img, &lab);
    let bytes = (img.len() + lab.len()) as u64;
    let cases = [
        (
            write(dir.path(), "r-img", &img),
            write(dir.path(), "r-lab", &lab),
        ),
        (
            write(dir.path(), "g-img.gz", &gzip(&img)),
            write(dir.path(), "g-lab.gz", &gzip(&lab)),
        ),
        (
            write(dir.path(), "m-img", &gzip(&img)),
            write(dir.path(), "m-lab", &lab),
        ),
    ];
    for (ip, lp) in cases {
        let src = DataSource::Idx {
            images: ip.clone(),
            labels: lp.clone(),
        };
        let fp = fingerprint(&src).unwrap();
        assert_eq!(fp.id, want, "{}", ip.display());
        assert_eq!((fp.files, fp.bytes), (2, bytes));
        assert_eq!(read_idx(&ip, &lp).unwrap().content, fp);
        assert_eq!(crate::data::load(&src, 7, 2).unwrap().content, fp);
    }
    // Content changes change the id: one pixel, one label, or images and labels swapped in
    // the preimage order.
    let (mut img2, mut lab2) = (img.clone(), lab.clone());
    img2[16 + 7] ^= 1;
    lab2[8] = 3;
    let p1 = write(dir.path(), "img2", &img2);
    let p2 = write(dir.path(), "lab2", &lab2);
    let (pi, pl) = (
        write(dir.path(), "img", &img),
        write(dir.path(), "lab", &lab),
    );
    let fp = |i: &Path, l: &Path| read_idx(i, l).unwrap().content.id;
    assert_ne!(fp(&p1, &pl), want);
    assert_ne!(fp(&pi, &p2), want);
    assert_eq!(fp(&pi, &pl), want);
    assert_ne!(reference_idx_id(&lab, &img), want);
}

#[test]
fn a_doubly_gzipped_file_is_decoded_once_and_rejected() {
    // Decoding once means the parser sees the inner gzip stream, not IDX bytes: the file is
    // rejected (as before fingerprints), and never silently decoded twice.
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = tiny_raw();
    let ip = write(dir.path(), "double-img", &gzip(&gzip(&img)));
    let lp = write(dir.path(), "lab", &lab);
    let msg = err_text(read_idx(&ip, &lp).unwrap_err());
    assert!(
        msg.contains("double-img") && msg.contains("not an IDX file"),
        "{msg}"
    );
    // The `_decoded` parsers do not gunzip at all.
    assert!(parse_images_decoded(gzip(&img), &ip).is_err());
    assert!(parse_labels_decoded(gzip(&lab), &lp).is_err());
    assert_eq!(parse_images_decoded(img.clone(), &ip).unwrap().count, 5);
    assert_eq!(parse_labels_decoded(lab.clone(), &lp).unwrap().len(), 5);
}

#[test]
fn idx_fingerprint_errors_name_the_file_and_key() {
    use crate::data::{fingerprint, DataSource};
    let dir = tempfile::tempdir().unwrap();
    let (_, lab) = tiny_raw();
    let lp = write(dir.path(), "lab", &lab);
    let src = DataSource::Idx {
        images: dir.path().join("gone-img"),
        labels: lp,
    };
    let msg = err_text(fingerprint(&src).unwrap_err());
    assert!(
        msg.contains("gone-img") && msg.contains("data.images"),
        "{msg}"
    );
}
