//! Image-folder reader: `root/<class>/*.png|jpg|jpeg` (the layout of MATLAB's DigitDataset,
//! folders `0` … `9`). Class folders are sorted; when every folder name is an integer the label
//! is that integer, otherwise the label is the folder's index in sorted order. Files are sorted
//! by name. PNG (any bit depth / colour type, via `png` with `EXPAND`) and baseline/progressive
//! JPEG (via `jpeg-decoder`) are decoded to gray (ITU-R BT.601 luma for colour; alpha is
//! ignored) and resized to the requested size. Images are decoded in parallel.
//!
//! [`read_folder_checked`] (what jobs use) first checks the labels against `data.classes`
//! when set, and the whole set against the available memory; every file's header against
//! [`MAX_IMAGE_PIXELS`](super::limits::MAX_IMAGE_PIXELS) is checked before its pixels are
//! allocated, and decoding converts row by row (at most 12 bytes per pixel in flight).
//!
//! The loader and [`fingerprint`](super::fingerprint::fingerprint) share one listing
//! ([`list_images`]). Each decode task reads its file once, hashes those bytes and decodes the
//! same buffer ([`decode_gray_bytes`]), so the dataset's `content` fingerprint is of exactly
//! the bytes decoded.

use super::fingerprint::{sha256, FolderHasher};
use super::limits;
use super::resize::resize_image;
use super::Dataset;
use crate::error::{Error, Result};
use ndarray::Array2;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// BT.601 luma of an RGB triple (any scale).
#[inline]
pub fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// A decoded gray image, values in `[0,1]`, row-major.
#[derive(Clone, Debug)]
pub struct GrayImage {
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<f32>,
}

fn is_image_file(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// Convert interleaved samples (`channels` per pixel, already scaled to `[0,1]`) to gray;
/// stops early (returning fewer than `n` values) when the samples run out.
fn to_gray(mut samples: impl Iterator<Item = f32>, channels: usize, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    let mut px = [0f32; 4];
    'pixels: for _ in 0..n {
        for slot in px.iter_mut().take(channels) {
            match samples.next() {
                Some(v) => *slot = v,
                None => break 'pixels,
            }
        }
        out.push(match channels {
            1 | 2 => px[0],
            _ => luma(px[0], px[1], px[2]),
        });
    }
    out
}

fn decode_png(bytes: &[u8], path: &Path) -> Result<GrayImage> {
    let bad = |e: String| Error::data(path, format!("cannot decode PNG: {e}"));
    // IHDR is always the first chunk: width and height at bytes 16..24. Checked before the
    // decoder reads on, so that no buffer is sized from an oversized header.
    if bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let be =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        limits::check_image_size(path, be(16).into(), be(20).into())?;
    }
    let mut dec = png::Decoder::new(bytes);
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(|e| bad(e.to_string()))?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(e.to_string()))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let channels = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => return Err(bad("palette was not expanded".into())),
    };
    let row_samples = w * channels;
    let mut pixels = Vec::with_capacity(w * h);
    for row in buf.chunks_exact(info.line_size).take(h) {
        match info.bit_depth {
            png::BitDepth::Sixteen => pixels.extend(to_gray(
                row[..2 * row_samples]
                    .chunks_exact(2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) as f32 / 65535.0),
                channels,
                w,
            )),
            png::BitDepth::Eight => pixels.extend(to_gray(
                row[..row_samples].iter().map(|&b| b as f32 / 255.0),
                channels,
                w,
            )),
            d => return Err(bad(format!("unexpected bit depth {d:?} after expansion"))),
        }
    }
    Ok(GrayImage {
        height: h,
        width: w,
        pixels,
    })
}

fn decode_jpeg(bytes: &[u8], path: &Path) -> Result<GrayImage> {
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.read_info()
        .map_err(|e| Error::data(path, format!("cannot decode JPEG: {e}")))?;
    if let Some(info) = dec.info() {
        limits::check_image_size(path, info.width.into(), info.height.into())?;
    }
    let data = dec
        .decode()
        .map_err(|e| Error::data(path, format!("cannot decode JPEG: {e}")))?;
    let info = dec
        .info()
        .ok_or_else(|| Error::data(path, "cannot decode JPEG: no frame header"))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let n = w * h;
    let pixels = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => to_gray(data.iter().map(|&b| b as f32 / 255.0), 1, n),
        jpeg_decoder::PixelFormat::L16 => to_gray(
            data.chunks_exact(2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]) as f32 / 65535.0),
            1,
            n,
        ),
        jpeg_decoder::PixelFormat::RGB24 => to_gray(data.iter().map(|&b| b as f32 / 255.0), 3, n),
        jpeg_decoder::PixelFormat::CMYK32 => {
            return Err(Error::data(
                path,
                "CMYK JPEG is not supported; convert the image to grayscale or RGB",
            ))
        }
    };
    if pixels.len() != n {
        return Err(Error::data(
            path,
            "cannot decode JPEG: pixel data shorter than the header says",
        ));
    }
    Ok(GrayImage {
        height: h,
        width: w,
        pixels,
    })
}

/// Read an image file's bytes (the error names the file).
fn read_image(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::data(path, format!("cannot read image: {e}")))
}

/// Decode one PNG or JPEG file (format detected from its first bytes) to gray `[0,1]`.
pub fn decode_gray(path: &Path) -> Result<GrayImage> {
    decode_gray_bytes(&read_image(path)?, path)
}

/// Decode a PNG or JPEG file already in memory (format detected from its first bytes) to gray
/// `[0,1]`; `path` is only used in errors.
pub fn decode_gray_bytes(bytes: &[u8], path: &Path) -> Result<GrayImage> {
    let img = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, path)?
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes, path)?
    } else {
        return Err(Error::data(
            path,
            "not a PNG or JPEG file (unrecognised signature)",
        ));
    };
    if img.height == 0 || img.width == 0 {
        return Err(Error::data(path, "image has zero width or height"));
    }
    Ok(img)
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd =
        std::fs::read_dir(dir).map_err(|e| Error::data(dir, format!("cannot list folder: {e}")))?;
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::data(dir, format!("cannot list folder: {e}")))?;
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// Class folders of `root`, sorted, with their labels and display names.
fn class_folders(root: &Path) -> Result<Vec<(u8, String, PathBuf)>> {
    let mut dirs: Vec<(String, PathBuf)> = vec![];
    for p in list_dir(root)?.into_iter().filter(|p| p.is_dir()) {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            return Err(Error::data(
                &p,
                "class folder name is not valid UTF-8; rename the folder (its name gives the \
                 label and is part of the data's fingerprint)",
            ));
        };
        if !name.starts_with('.') {
            dirs.push((name.to_owned(), p.clone()));
        }
    }
    if dirs.is_empty() {
        return Err(Error::data(
            root,
            "no class folders found; `data.root` must contain one sub-folder per class \
             (e.g. `0/ … 9/`) holding .png/.jpg images",
        ));
    }
    let ints: Option<Vec<u64>> = dirs.iter().map(|(n, _)| n.parse::<u64>().ok()).collect();
    let mut classes: Vec<(u8, String, PathBuf)> = Vec::with_capacity(dirs.len());
    if let Some(ints) = ints {
        let mut v: Vec<(u64, String, PathBuf)> = ints
            .into_iter()
            .zip(dirs)
            .map(|(i, (n, p))| (i, n, p))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        for w in v.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(Error::data(
                    root,
                    format!(
                        "class folders `{}` and `{}` name the same label",
                        w[0].1, w[1].1
                    ),
                ));
            }
        }
        for (i, n, p) in v {
            let label = u8::try_from(i).map_err(|_| {
                Error::data(
                    &p,
                    format!("class label {i} exceeds 255 (labels are stored as bytes)"),
                )
            })?;
            classes.push((label, n, p));
        }
    } else {
        if dirs.len() > 256 {
            return Err(Error::data(
                root,
                format!("{} class folders; at most 256 are supported", dirs.len()),
            ));
        }
        // `dirs` is already sorted by path, i.e. by name.
        for (i, (n, p)) in dirs.into_iter().enumerate() {
            classes.push((i as u8, n, p));
        }
    }
    Ok(classes)
}

/// What [`read_folder_checked`] checks before decoding.
#[derive(Clone, Debug)]
pub struct Checks<'a> {
    /// Labels must lie in `0..classes` (`data.classes`; `None`: the class folders decide).
    pub classes: Option<usize>,
    /// Bytes available (`None`: no memory check).
    pub available: Option<u64>,
    /// The fix named when the set does not fit.
    pub fix: &'a str,
}

/// Read `root/<class>/*.png|jpg|jpeg`, resizing every image to `height × width`.
pub fn read_folder(root: &Path, height: usize, width: usize) -> Result<Dataset> {
    let none = Checks {
        classes: None,
        available: None,
        fix: "",
    };
    read_folder_checked(root, height, width, &none)
}

/// One image of a folder data set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFile {
    /// The file (`root/<class>/<name>`).
    pub path: PathBuf,
    /// Its path relative to the root, `/`-separated (what the fingerprint hashes).
    pub rel: String,
    /// Its label (from the class folder).
    pub label: u8,
}

/// The files a folder data set consists of, in loader order.
#[derive(Clone, Debug)]
pub struct Listing {
    /// Class folders in label order: (label, folder name, folder).
    pub classes: Vec<(u8, String, PathBuf)>,
    /// Images: class folders in label order, files sorted by name within each.
    pub files: Vec<ImageFile>,
}

/// `/`-separated UTF-8 path of `path` relative to `root`; an error naming the file otherwise.
fn relative(root: &Path, path: &Path) -> Result<String> {
    let rel = path
        .strip_prefix(root)
        .map_err(|_| Error::data(path, format!("not under `data.root` {}", root.display())))?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/")).ok_or_else(|| {
        Error::data(
            path,
            "file name is not valid UTF-8; rename the file (its name is part of the data's \
             fingerprint)",
        )
    })
}

/// The listing of `root/<class>/*.png|jpg|jpeg` that both [`read_folder_checked`] and
/// [`fingerprint`](super::fingerprint::fingerprint) use: checks that `root` is a folder with
/// class folders, that every label lies in `0..classes` when `classes` is set
/// (`data.classes`), and that every class folder holds an image. Files with other extensions
/// and hidden class folders are ignored.
pub fn list_images(root: &Path, classes: Option<usize>) -> Result<Listing> {
    if !root.exists() {
        return Err(Error::data(
            root,
            "image folder not found; set `data.root` to a folder with one sub-folder per class",
        ));
    }
    if !root.is_dir() {
        return Err(Error::data(
            root,
            "not a folder; `data.root` must be a folder of class folders",
        ));
    }
    let class_dirs = class_folders(root)?;
    if let Some(c) = classes {
        if let Some((l, n, dir)) = class_dirs.iter().find(|(l, _, _)| *l as usize >= c) {
            return Err(Error::data(
                dir,
                format!(
                    "class folder `{n}` has label {l}, outside `data.classes` = {c} (labels \
                     0..={}); raise `data.classes` or remove the folder",
                    c.saturating_sub(1)
                ),
            ));
        }
    }
    let mut files = Vec::new();
    for (label, _, dir) in &class_dirs {
        let imgs: Vec<PathBuf> = list_dir(dir)?
            .into_iter()
            .filter(|p| is_image_file(p))
            .collect();
        if imgs.is_empty() {
            return Err(Error::data(
                dir,
                "class folder holds no .png/.jpg/.jpeg images; add images or remove the folder",
            ));
        }
        for path in imgs {
            let rel = relative(root, &path)?;
            files.push(ImageFile {
                path,
                rel,
                label: *label,
            });
        }
    }
    Ok(Listing {
        classes: class_dirs,
        files,
    })
}

/// [`read_folder`] with the label range and memory checks of `lim` (image headers are always
/// checked against the pixel limit). Each file is read once: its bytes are hashed for the
/// `content` fingerprint and decoded from the same buffer.
pub fn read_folder_checked(
    root: &Path,
    height: usize,
    width: usize,
    lim: &Checks,
) -> Result<Dataset> {
    let Listing { classes, files } = list_images(root, lim.classes)?;
    // The decoded rows and the array each hold the whole set.
    limits::check_fits(root, files.len(), height * width, lim.available, lim.fix)?;
    // Per file: (bytes read, their SHA-256, the resized pixels).
    type Decoded = (u64, [u8; 32], Vec<f32>);
    let decoded: Vec<Result<Decoded>> = files
        .par_iter()
        .map(|f| {
            let bytes = read_image(&f.path)?;
            let (size, digest) = (bytes.len() as u64, sha256(&bytes));
            let g = decode_gray_bytes(&bytes, &f.path)?;
            drop(bytes);
            let px = resize_image(&g.pixels, g.height, g.width, height, width);
            Ok((size, digest, px))
        })
        .collect();
    let mut images = Array2::<f32>::zeros((files.len(), height * width));
    let mut content = FolderHasher::new();
    for ((mut row, r), f) in images.outer_iter_mut().zip(decoded).zip(&files) {
        let (size, digest, px) = r?;
        content.add(&f.rel, size, &digest);
        row.iter_mut()
            .zip(px)
            .for_each(|(o, v)| *o = v.clamp(0.0, 1.0));
    }
    let labels: Vec<u8> = files.iter().map(|f| f.label).collect();
    let num_classes = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    let names: Vec<String> = classes.iter().map(|(l, n, _)| format!("{l}={n}")).collect();
    Ok(Dataset {
        images,
        labels,
        height,
        width,
        num_classes,
        source: format!(
            "folder: {} ({} images; classes {})",
            root.display(),
            files.len(),
            names.join(", ")
        ),
        content: content.finish(),
    })
}

#[cfg(test)]
mod tests;
