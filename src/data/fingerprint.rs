//! Content fingerprints of data sets, for stage-cache keys: the cache keys trained models on
//! the *content* of the data, not on its path.
//!
//! This module owns the fingerprint scheme ([`Fingerprint`],
//! [`fingerprint`]) and the helpers the loaders use to compute the same id while they load
//! ([`idx_content`], [`FolderHasher`]): every loaded [`Dataset`](super::Dataset) carries
//! `content`, computed from the very bytes that were decoded, so a file rewritten between a
//! call to [`fingerprint`] and the load can never give a key that does not match the data.
//!
//! # Scheme (version `diffnmf-data-v1`)
//!
//! `sha256` is SHA-256, `hex` lower-case hexadecimal, `||` concatenation, `\0` a zero byte,
//! `u64le(x)` the 8-byte little-endian encoding of `x`. Digests enter the outer hash as their
//! raw 32 bytes.
//!
//! **IDX files** (`DataSource::Idx`): `d_img = sha256(decoded image file)`,
//! `d_lab = sha256(decoded label file)`, where *decoded* means after gunzip when the file
//! starts with the gzip magic `1f 8b` (exactly once; otherwise the raw bytes) — the bytes the
//! IDX parser reads, header included. Then
//!
//! ```text
//! id = "idx:" + hex(sha256("diffnmf-data-v1\0idx\0" || d_img || d_lab))
//! ```
//!
//! so a raw file and its `.gz` give the same id, and the file names do not matter.
//! `files = 2`, `bytes` = the decoded lengths of both files together.
//!
//! **Embedded digits** (`DataSource::Embedded`): the IDX formula with `d_img` / `d_lab` the
//! constants [`IMAGES_SHA256`](super::embedded::IMAGES_SHA256) /
//! [`LABELS_SHA256`](super::embedded::LABELS_SHA256) (the SHA-256 of the decompressed
//! payloads, hex-decoded), so it costs nothing and equals the id of the same payloads written
//! out as IDX files; `files = 0`, `bytes = 0`.
//!
//! **Image folders** (`DataSource::Folder`): the files the loader reads, in loader order (the
//! listing of [`folder::list_images`](super::folder::list_images): class folders in label
//! order, images sorted by name within each, only `.png` / `.jpg` / `.jpeg` files). For each
//! file: `rel` = its path relative to `root`, components joined by `/`, as UTF-8 bytes (a
//! non-UTF-8 file or class-folder name is an error naming it), `size` = its length in bytes, `d` =
//! `sha256(file bytes)`. Then
//!
//! ```text
//! id = "folder:" + hex(sha256("diffnmf-data-v1\0folder\0"
//!                             || for each file: u64le(len(rel)) || rel || u64le(size) || d))
//! ```
//!
//! Moving or renaming `root` keeps the id; changing a byte of an image, adding, removing or
//! renaming an image, or renaming a class folder (the labels come from the folder names)
//! changes it; files the loader ignores (e.g. `notes.txt`) do not. `files` = the image count,
//! `bytes` = the file bytes hashed.
//!
//! The id names the *source's* content at its native size and in full: `data.size`,
//! `data.subset` and the label range are not part of it (the cache keys them separately).

use super::{embedded, folder, idx, DataSource};
use crate::error::{Error, Result};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Prefix of every preimage: names the scheme version.
pub const DOMAIN: &[u8] = b"diffnmf-data-v1\0";

/// The content fingerprint of a data source (see the module doc for the scheme).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// `idx:<64 hex>` (IDX files and the embedded digits) or `folder:<64 hex>`: what cache
    /// keys use.
    pub id: String,
    /// Files whose bytes were hashed (2 for IDX, the image count for folders, 0 for embedded).
    pub files: usize,
    /// Bytes hashed (decoded bytes for IDX; file bytes for folders; 0 for embedded).
    pub bytes: u64,
}

impl Fingerprint {
    /// The kind and the first 12 hex digits, e.g. `folder:1a2b3c4d5e6f` (for messages).
    pub fn short(&self) -> String {
        match self.id.split_once(':') {
            Some((kind, hex)) => format!("{kind}:{}", &hex[..hex.len().min(12)]),
            None => self.id.clone(),
        }
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Decode 64 hex digits (a constant's digest); `None` when `s` is not exactly that.
pub fn from_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

/// The IDX fingerprint from the digests of the decoded image and label files.
pub fn idx_content(d_img: &[u8; 32], d_lab: &[u8; 32], files: usize, bytes: u64) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(b"idx\0");
    h.update(d_img);
    h.update(d_lab);
    Fingerprint {
        id: format!("idx:{}", hex(&h.finalize())),
        files,
        bytes,
    }
}

/// Builds a folder fingerprint from the files in loader order.
#[derive(Clone, Debug)]
pub struct FolderHasher {
    hasher: Sha256,
    files: usize,
    bytes: u64,
}

impl Default for FolderHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl FolderHasher {
    /// An empty folder fingerprint.
    pub fn new() -> Self {
        let mut hasher = Sha256::new();
        hasher.update(DOMAIN);
        hasher.update(b"folder\0");
        FolderHasher {
            hasher,
            files: 0,
            bytes: 0,
        }
    }

    /// Add the next file: its `/`-separated path relative to the root, its size in bytes and
    /// the SHA-256 of its bytes.
    pub fn add(&mut self, rel: &str, size: u64, digest: &[u8; 32]) {
        self.hasher.update((rel.len() as u64).to_le_bytes());
        self.hasher.update(rel.as_bytes());
        self.hasher.update(size.to_le_bytes());
        self.hasher.update(digest);
        self.files += 1;
        self.bytes += size;
    }

    /// The fingerprint of the files added.
    pub fn finish(self) -> Fingerprint {
        Fingerprint {
            id: format!("folder:{}", hex(&self.hasher.finalize())),
            files: self.files,
            bytes: self.bytes,
        }
    }
}

/// The fingerprint of the embedded digits (from the payload digests compiled in).
pub fn embedded_content() -> Fingerprint {
    let digest = |s: &str| from_hex32(s).expect("embedded digest constants are 64 hex digits");
    idx_content(
        &digest(embedded::IMAGES_SHA256),
        &digest(embedded::LABELS_SHA256),
        0,
        0,
    )
}

/// SHA-256 and length of one file, read in a streaming fashion.
fn hash_file(path: &Path) -> Result<([u8; 32], u64)> {
    let bad = |e: std::io::Error| Error::data(path, format!("cannot read image: {e}"));
    let mut f = std::fs::File::open(path).map_err(bad)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(e)),
        };
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((h.finalize().into(), size))
}

/// The fingerprint of what [`load`](super::load) would read from `src`, computed without
/// decoding images (files read and hashed in parallel with rayon). Errors (missing files,
/// corrupt gzip, a folder without class folders, a non-UTF-8 file name) name the file and the
/// config key as the loaders do; IDX headers and image contents are not validated.
pub fn fingerprint(src: &DataSource) -> Result<Fingerprint> {
    match src {
        DataSource::Embedded => Ok(embedded_content()),
        DataSource::Idx { images, labels } => {
            let hash = |p: &Path, key: &str| -> Result<([u8; 32], u64)> {
                let bytes = idx::read_decoded(p, key)?;
                Ok((sha256(&bytes), bytes.len() as u64))
            };
            let (img, lab) = rayon::join(
                || hash(images, "data.images"),
                || hash(labels, "data.labels"),
            );
            let ((d_img, n_img), (d_lab, n_lab)) = (img?, lab?);
            Ok(idx_content(&d_img, &d_lab, 2, n_img + n_lab))
        }
        DataSource::Folder { root } => {
            let listing = folder::list_images(root, None)?;
            let digests: Vec<Result<([u8; 32], u64)>> = listing
                .files
                .par_iter()
                .map(|f| hash_file(&f.path))
                .collect();
            let mut h = FolderHasher::new();
            for (f, d) in listing.files.iter().zip(digests) {
                let (digest, size) = d?;
                h.add(&f.rel, size, &digest);
            }
            Ok(h.finish())
        }
    }
}
