//! Datasets: the embedded default digits, IDX files, image folders, and the stratified split.
//!
//! OWNER: data helper. Contract used by the pipeline (keep these signatures):
//! - [`Dataset`] holds images as rows of `height*width` f32 values in `[0,1]`.
//! - [`load`] dispatches on [`DataSource`].
//! - [`stratified_split`] returns disjoint train/val/test index lists.

use crate::error::Result;
use ndarray::Array2;
use std::path::PathBuf;

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

/// Load a dataset and resize every image to `height × width` (no-op when sizes already match).
pub fn load(_src: &DataSource, _height: usize, _width: usize) -> Result<Dataset> {
    todo!("data helper")
}

/// Index lists of a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Stratified split by class with fractions `(train, val, test)` (sum to 1), seeded.
pub fn stratified_split(_labels: &[u8], _fractions: [f64; 3], _seed: u64) -> Split {
    todo!("data helper")
}
