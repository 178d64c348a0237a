//! IDX reader (and a small writer) for MNIST-style files: Fashion-MNIST, EMNIST, and the
//! embedded digits. Files may be raw or gzip-compressed; compression is detected by the gzip
//! magic bytes, not by the file name. Only unsigned-byte data (type `0x08`) is accepted:
//! images have 3 dimensions (`n × rows × cols`), labels have 1.
//!
//! Note: EMNIST stores each image transposed (column-major); it is read as stored.
//!
//! [`read_idx_checked`] (what jobs use) also checks the labels against the expected class
//! range ([`check_label_range`], naming the label file) and the set's memory against the
//! available memory, right after the headers are parsed and before the pixels are converted.
//!
//! Each file is decoded once (read → gunzip if gzipped → hash → parse): the dataset's
//! [`content`](super::Dataset::content) fingerprint is the SHA-256 of exactly the bytes parsed
//! ([`super::fingerprint`]). [`parse_images`] / [`parse_labels`] take raw-or-gzip bytes;
//! [`parse_images_decoded`] / [`parse_labels_decoded`] take already decoded bytes and never
//! gunzip (so a doubly gzipped file is rejected, not decoded twice).

use super::fingerprint::{idx_content, sha256, Fingerprint};
use super::{limits, Dataset};
use crate::error::{Error, Result};
use flate2::read::GzDecoder;
use ndarray::Array2;
use std::io::{Read, Write};
use std::path::Path;

/// A decoded IDX image file: `count` images of `rows × cols` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// Undo gzip compression if `bytes` start with the gzip magic `1f 8b`.
pub fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::with_capacity(bytes.len() * 4);
        GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::data(path, format!("gzip data is corrupt or truncated: {e}")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Check the IDX header for unsigned bytes with `ndim` dimensions and an exact file size;
/// returns the dimensions.
fn parse_header(bytes: &[u8], ndim: usize, what: &str, path: &Path) -> Result<Vec<usize>> {
    let header = 4 + 4 * ndim;
    if bytes.len() < 4 {
        return Err(Error::data(
            path,
            format!(
                "too short for an IDX {what} file ({} bytes, need at least 4)",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::data(
            path,
            format!(
                "not an IDX file: magic starts with {:02x} {:02x}, expected 00 00 \
                 (is this the right file for the {what}?)",
                bytes[0], bytes[1]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(Error::data(
            path,
            format!(
                "IDX data type 0x{:02x} is not supported; only unsigned bytes (0x08)",
                bytes[2]
            ),
        ));
    }
    if bytes[3] as usize != ndim {
        return Err(Error::data(
            path,
            format!(
                "IDX file has {} dimensions; {what} files need {ndim} (magic 0x0000080{ndim}) \
                 — are `data.images` and `data.labels` swapped?",
                bytes[3]
            ),
        ));
    }
    if bytes.len() < header {
        return Err(Error::data(
            path,
            format!("truncated IDX header: {} bytes, need {header}", bytes.len()),
        ));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|payload| payload.checked_add(header))
        .ok_or_else(|| Error::data(path, format!("IDX dimensions {dims:?} overflow")))?;
    if bytes.len() != expected {
        let kind = if bytes.len() < expected {
            "truncated"
        } else {
            "has trailing bytes"
        };
        return Err(Error::data(
            path,
            format!(
                "IDX {what} file {kind}: header advertises dimensions {dims:?}, i.e. {expected} bytes, \
                 but the (decompressed) file holds {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(dims)
}

/// Parse an IDX image file already in memory (raw or gzip); `path` is only used in errors.
pub fn parse_images(bytes: Vec<u8>, path: &Path) -> Result<IdxImages> {
    parse_images_decoded(maybe_gunzip(bytes, path)?, path)
}

/// Parse a decoded (not gzipped) IDX image file; `path` is only used in errors.
pub fn parse_images_decoded(bytes: Vec<u8>, path: &Path) -> Result<IdxImages> {
    let dims = parse_header(&bytes, 3, "images", path)?;
    if dims[1] == 0 || dims[2] == 0 {
        return Err(Error::data(
            path,
            format!("IDX images have zero size {}×{}", dims[1], dims[2]),
        ));
    }
    let mut pixels = bytes;
    pixels.drain(..16);
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Parse an IDX label file already in memory (raw or gzip); `path` is only used in errors.
pub fn parse_labels(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    parse_labels_decoded(maybe_gunzip(bytes, path)?, path)
}

/// Parse a decoded (not gzipped) IDX label file; `path` is only used in errors.
pub fn parse_labels_decoded(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    parse_header(&bytes, 1, "labels", path)?;
    let mut labels = bytes;
    labels.drain(..8);
    Ok(labels)
}

fn read_file(path: &Path, key: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::data(
                path,
                format!("file not found; set `{key}` to an existing IDX file"),
            )
        } else {
            Error::data(path, format!("cannot read ({e}); check `{key}`"))
        }
    })
}

/// Read an IDX file and undo gzip compression when present: the bytes the parser reads (and
/// the fingerprint hashes). `key` is the config key named in errors.
pub fn read_decoded(path: &Path, key: &str) -> Result<Vec<u8>> {
    maybe_gunzip(read_file(path, key)?, path)
}

/// Combine decoded images and labels into a [`Dataset`] at the files' native size; `content`
/// is the fingerprint of the bytes they were parsed from.
pub fn to_dataset(
    images: IdxImages,
    labels: Vec<u8>,
    images_path: &Path,
    labels_path: &Path,
    source: String,
    content: Fingerprint,
) -> Result<Dataset> {
    if images.count != labels.len() {
        return Err(Error::data(
            images_path,
            format!(
                "holds {} images but the label file {} holds {} labels; \
                 `data.images` and `data.labels` must come from the same set",
                images.count,
                labels_path.display(),
                labels.len()
            ),
        ));
    }
    if images.count == 0 {
        return Err(Error::data(images_path, "IDX file holds no images"));
    }
    let d = images.rows * images.cols;
    let pixels: Vec<f32> = images.pixels.iter().map(|&b| b as f32 / 255.0).collect();
    let array = Array2::from_shape_vec((images.count, d), pixels)
        .map_err(|e| Error::data(images_path, format!("internal shape error: {e}")))?;
    let num_classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    Ok(Dataset {
        images: array,
        labels,
        height: images.rows,
        width: images.cols,
        num_classes,
        source,
        content,
    })
}

/// Read an IDX image/label pair from disk at native size (config keys `data.images`,
/// `data.labels`), without the label-range and memory checks of [`read_idx_checked`].
pub fn read_idx(images_path: &Path, labels_path: &Path) -> Result<Dataset> {
    let none = Checks {
        classes: None,
        pixels: 0,
        available: None,
        fix: "",
    };
    read_idx_checked(images_path, labels_path, &none)
}

/// What [`read_idx_checked`] checks before converting the pixels.
#[derive(Clone, Debug)]
pub struct Checks<'a> {
    /// Labels must lie in `0..classes` (`None`: any byte).
    pub classes: Option<usize>,
    /// Pixels per image after resizing (the memory check uses the larger of this and the
    /// native size).
    pub pixels: usize,
    /// Bytes available (`None`: no memory check).
    pub available: Option<u64>,
    /// The fix named when the set does not fit.
    pub fix: &'a str,
}

/// [`read_idx`] with the label range and memory checks of `lim`.
pub fn read_idx_checked(images_path: &Path, labels_path: &Path, lim: &Checks) -> Result<Dataset> {
    let bytes = read_decoded(images_path, "data.images")?;
    let (d_img, n_img) = (sha256(&bytes), bytes.len() as u64);
    let images = parse_images_decoded(bytes, images_path)?;
    limits::check_fits(
        images_path,
        images.count,
        (images.rows * images.cols).max(lim.pixels),
        lim.available,
        lim.fix,
    )?;
    let bytes = read_decoded(labels_path, "data.labels")?;
    let (d_lab, n_lab) = (sha256(&bytes), bytes.len() as u64);
    let labels = parse_labels_decoded(bytes, labels_path)?;
    if let Some(c) = lim.classes {
        check_label_range(&labels, c, labels_path)?;
    }
    let source = format!(
        "idx: images {} + labels {}",
        images_path.display(),
        labels_path.display()
    );
    let content = idx_content(&d_img, &d_lab, 2, n_img + n_lab);
    to_dataset(images, labels, images_path, labels_path, source, content)
}

/// Every label must be below `classes`; the error names `path`, the first offending label and
/// its index, how many are outside, and the fix (`data.classes`).
pub fn check_label_range(labels: &[u8], classes: usize, path: &Path) -> Result<()> {
    let outside = |l: &u8| *l as usize >= classes;
    let Some(first) = labels.iter().position(outside) else {
        return Ok(());
    };
    let count = labels.iter().filter(|l| outside(l)).count();
    let max = labels.iter().copied().max().unwrap_or(0);
    Err(Error::data(
        path,
        format!(
            "label {} at index {first} is outside the expected classes 0..={} \
             ({count} of {} labels are, the largest is {max}); \
             if this data set has more classes set `data.classes` to their number \
             (e.g. `data.classes: {}`), otherwise check that `data.labels` is the right file",
            labels[first],
            classes.saturating_sub(1),
            labels.len(),
            max as usize + 1
        ),
    ))
}

/// Serialise images (`count × rows × cols` bytes) as an IDX file (magic `0x00000803`).
pub fn encode_images(rows: usize, cols: usize, pixels: &[u8]) -> Vec<u8> {
    let count = pixels.len() / (rows * cols).max(1);
    let mut out = Vec::with_capacity(16 + pixels.len());
    for v in [0x0803u32, count as u32, rows as u32, cols as u32] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    out
}

/// Serialise labels as an IDX file (magic `0x00000801`).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&0x0801u32.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

/// Gzip `bytes` (for writing `.gz` IDX files).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("writing to a Vec cannot fail");
    enc.finish().expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests;
