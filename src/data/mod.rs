//! Datasets: the embedded default digits, IDX files, image folders, and the stratified split.
//!
//! What the pipeline uses:
//! - [`Dataset`] holds images as rows of `height*width` f32 values in `[0,1]`.
//! - [`load`] dispatches on [`DataSource`]; [`load_checked`] also applies the job's label
//!   range (`data.classes`) and the memory limits.
//! - [`stratified_split`] returns disjoint train/val/test index lists.
//! - [`training_classes`] rejects a training split with fewer than two classes.
//! - [`fingerprint()`] returns the content [`Fingerprint`] of a source without decoding it;
//!   every loaded [`Dataset`] carries the same fingerprint in [`Dataset::content`], computed
//!   while loading from the very bytes that were decoded (the scheme is documented in
//!   [`fingerprint`](mod@fingerprint)).
//!
//! **Labels.** A label names a class; the model gets `num_classes` = largest label + 1
//! outputs, while every check and report counts the classes actually present
//! ([`Dataset::classes_present`]). Expected ranges: `0..data.classes` when the job sets it,
//! else `0..=9` for the embedded digits and IDX files (MNIST-style; EMNIST/other sets set
//! `data.classes`), and the class folders themselves for folder data (integer folder names
//! are the labels, otherwise the sorted folder index). A label outside the range is an
//! error naming the file.
//!
//! **Sizes.** Before allocating, the loaders check each image's header against
//! [`limits::MAX_IMAGE_PIXELS`] and the whole set against the available memory
//! ([`limits`]); errors name the file, its dimensions and the fix.
//!
//! Submodules: [`embedded`] (the default digits), [`idx`] (IDX files), [`folder`] (image
//! folders), [`fingerprint`](mod@fingerprint) (content fingerprints for cache keys), [`resize`] (area-average / bilinear resizing), [`limits`] (size and memory
//! limits). Nothing assumes 28×28.

pub mod embedded;
pub mod fingerprint;
pub mod folder;
pub mod idx;
pub mod limits;
pub mod resize;

use crate::error::{Error, Result};
use crate::rng::{permutation, stream, tag};
pub use fingerprint::{fingerprint, Fingerprint};
use ndarray::Array2;
use std::path::{Path, PathBuf};

/// A labelled image set, one image per row (row-major pixels, values in `[0,1]`).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub images: Array2<f32>,
    pub labels: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// Human-readable description of where the data came from.
    pub source: String,
    /// The content fingerprint of the source the loader read (see
    /// [`fingerprint`](mod@fingerprint)), computed from the bytes that were decoded. It names
    /// the source's content: [`Dataset::resized`] and [`Dataset::subset`] keep it unchanged
    /// (size and subset are keyed separately by the config).
    pub content: Fingerprint,
}

/// Where to load data from (already validated by the config layer).
#[derive(Clone, Debug)]
pub enum DataSource {
    /// The 10,000 MNIST digits embedded in the binary.
    Embedded,
    /// IDX image + label files (raw or `.gz`).
    Idx { images: PathBuf, labels: PathBuf },
    /// `root/<label>/*.png|jpg` folders.
    Folder { root: PathBuf },
}

/// Labels of the IDX and embedded data when the job does not set `data.classes`: the ten
/// digits of MNIST-style files.
pub const DEFAULT_IDX_CLASSES: usize = 10;

const MEMORY_FIX: &str = "lower `data.size`, use fewer images, or ask for more memory \
                          (e.g. Slurm `--mem`)";

/// Load a dataset and resize every image to `height × width` (no-op when sizes already match).
///
/// Errors name the file or folder and the config key to fix (`data.images`, `data.labels`,
/// `data.root`); a zero size is reported against `data.height` / `data.width`. No label
/// range or memory check: see [`load_checked`].
pub fn load(src: &DataSource, height: usize, width: usize) -> Result<Dataset> {
    load_with(src, height, width, None, None)
}

/// [`load`] for a job: labels must lie in `0..classes` (`data.classes`; `None` =
/// [`DEFAULT_IDX_CLASSES`] for IDX and embedded data, the class folders for folder data),
/// every image header within [`limits::MAX_IMAGE_PIXELS`], and the set must fit in the
/// available memory — all checked before the pixels are allocated.
pub fn load_checked(
    src: &DataSource,
    height: usize,
    width: usize,
    classes: Option<usize>,
) -> Result<Dataset> {
    load_with(
        src,
        height,
        width,
        Some(classes),
        limits::available_memory(),
    )
}

/// `classes`: `None` = no label check; `Some(c)` = the job's `data.classes`.
fn load_with(
    src: &DataSource,
    height: usize,
    width: usize,
    classes: Option<Option<usize>>,
    available: Option<u64>,
) -> Result<Dataset> {
    if height == 0 {
        return Err(Error::param("data.height", "must be at least 1"));
    }
    if width == 0 {
        return Err(Error::param("data.width", "must be at least 1"));
    }
    let idx_classes = classes.map(|c| c.unwrap_or(DEFAULT_IDX_CLASSES));
    let native = match src {
        DataSource::Embedded => embedded::load_embedded()?,
        DataSource::Idx { images, labels } => {
            let lim = idx::Checks {
                classes: idx_classes,
                pixels: height * width,
                available,
                fix: MEMORY_FIX,
            };
            idx::read_idx_checked(images, labels, &lim)?
        }
        DataSource::Folder { root } => {
            let lim = folder::Checks {
                classes: classes.flatten(),
                available,
                fix: MEMORY_FIX,
            };
            return folder::read_folder_checked(root, height, width, &lim);
        }
    };
    if let DataSource::Embedded = src {
        if let Some(c) = idx_classes {
            idx::check_label_range(&native.labels, c, Path::new(embedded::LABELS_NAME))?;
        }
        // The IDX reader checked its set at the larger of the native and target sizes.
        limits::check_fits(
            Path::new(embedded::IMAGES_NAME),
            native.len(),
            height * width,
            available,
            MEMORY_FIX,
        )?;
    }
    Ok(native.resized(height, width))
}

impl DataSource {
    /// The file or folder that defines the labels (used in error messages).
    pub fn path(&self) -> PathBuf {
        match self {
            DataSource::Embedded => PathBuf::from(embedded::LABELS_NAME),
            DataSource::Idx { labels, .. } => labels.clone(),
            DataSource::Folder { root } => root.clone(),
        }
    }
}

/// The distinct labels of `indices` in the training split (sorted), after checking that
/// there are at least two: a classifier cannot be trained on one class. The error names
/// the data's label file or folder (`src`) and the key to fix.
pub fn training_classes(ds: &Dataset, train: &[usize], src: &DataSource) -> Result<Vec<u8>> {
    let mut seen = [false; 256];
    for &i in train {
        seen[ds.labels[i] as usize] = true;
    }
    let present: Vec<u8> = (0..=255u8).filter(|&l| seen[l as usize]).collect();
    if present.len() < 2 {
        let which = match present.first() {
            Some(l) => format!("1 class (label {l})"),
            None => "no class".into(),
        };
        let fix = match src {
            DataSource::Folder { .. } => {
                "add at least one more class folder of images under `data.root`"
            }
            DataSource::Idx { .. } => {
                "point `data.images`/`data.labels` at a set with at least two labels"
            }
            DataSource::Embedded => "use more of the embedded digits (`data.subset`)",
        };
        return Err(Error::data(
            src.path(),
            format!(
                "the training split holds {which}; a classifier needs at least 2 classes: {fix}"
            ),
        ));
    }
    Ok(present)
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The distinct labels present (sorted); their count is the number of classes.
    pub fn classes_present(&self) -> Vec<u8> {
        let mut seen = [false; 256];
        for &l in &self.labels {
            seen[l as usize] = true;
        }
        (0..=255u8).filter(|&l| seen[l as usize]).collect()
    }

    /// Images per class (index = label), length `num_classes`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes];
        for &l in &self.labels {
            c[l as usize] += 1;
        }
        c
    }

    /// This set with every image resized to `height × width` (moved through unchanged when the
    /// size already matches); `content` is kept.
    pub fn resized(self, height: usize, width: usize) -> Dataset {
        if (height, width) == (self.height, self.width) {
            return self;
        }
        let images =
            resize::resize_rows(self.images.view(), self.height, self.width, height, width);
        let source = format!(
            "{} (resized {}×{} → {height}×{width})",
            self.source, self.height, self.width
        );
        Dataset {
            images,
            height,
            width,
            source,
            ..self
        }
    }

    /// The rows (and labels) at `indices`, in that order; `content` is kept.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        Dataset {
            images: self.images.select(ndarray::Axis(0), indices),
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            height: self.height,
            width: self.width,
            num_classes: self.num_classes,
            source: self.source.clone(),
            content: self.content.clone(),
        }
    }
}

/// Index lists of a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Stratified split by class with fractions `(train, val, test)` (sum to 1), seeded.
///
/// Per class `c` (with `n_c` images, in index order) the indices are shuffled with
/// `stream(seed, [tag("split"), c])`; the first `round(f_train·n_c)` go to train, the next
/// `round(f_val·n_c)` to val (capped so the total never exceeds `n_c`), the rest to test. Each
/// list is returned sorted. Call [`validate_fractions`] first on user input; here invalid
/// fractions are a programming error (debug assertion).
pub fn stratified_split(labels: &[u8], fractions: [f64; 3], seed: u64) -> Split {
    debug_assert!(
        validate_fractions(fractions, "split").is_ok(),
        "bad fractions {fractions:?}"
    );
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); 256];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i);
    }
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (c, idx) in by_class.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
        let n = idx.len();
        let perm = permutation(&mut stream(seed, &[tag("split"), c as u64]), n);
        let n_train = ((fractions[0] * n as f64).round() as usize).min(n);
        let n_val = ((fractions[1] * n as f64).round() as usize).min(n - n_train);
        for (k, &p) in perm.iter().enumerate() {
            let dst = if k < n_train {
                &mut split.train
            } else if k < n_train + n_val {
                &mut split.val
            } else {
                &mut split.test
            };
            dst.push(idx[p]);
        }
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    split.test.sort_unstable();
    split
}

/// Check split fractions: each strictly positive and finite, summing to 1 within 1e-6.
/// `key` is the config key reported in the error (e.g. `data.split`).
pub fn validate_fractions(fractions: [f64; 3], key: &str) -> Result<()> {
    if let Some(f) = fractions.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
        return Err(Error::param(
            key,
            format!("fractions {fractions:?} must all be > 0 (got {f}); e.g. [0.70, 0.15, 0.15]"),
        ));
    }
    let sum: f64 = fractions.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        return Err(Error::param(
            key,
            format!(
                "fractions {fractions:?} sum to {sum}, must sum to 1 (e.g. [0.70, 0.15, 0.15])"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
