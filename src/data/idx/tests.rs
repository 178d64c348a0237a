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
