//! Minibatch training loops with Adam and early stopping on validation loss.

use super::cnn::{Cnn, CnnArch};
use super::mlp::{Activation, Mlp};
use crate::error::Result;
use ndarray::ArrayView2;

/// Optimisation parameters shared by the CNN and the classifier.
#[derive(Clone, Debug)]
pub struct TrainParams {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Stop after this many epochs without validation-loss improvement (0 = never); the best
    /// epoch's weights are kept.
    pub patience: usize,
    pub seed: u64,
    /// Dotted config key of the learning rate (named in divergence errors).
    pub lr_key: &'static str,
}

/// Per-epoch curves.
#[derive(Clone, Debug, Default)]
pub struct TrainHistory {
    pub train_loss: Vec<f64>,
    pub val_loss: Vec<f64>,
    pub val_accuracy: Vec<f64>,
    pub best_epoch: usize,
}

/// Train the CNN on images (rows of `height*width`).
pub fn train_cnn(
    _arch: &CnnArch,
    _p: &TrainParams,
    _x_train: ArrayView2<f32>,
    _y_train: &[usize],
    _x_val: ArrayView2<f32>,
    _y_val: &[usize],
) -> Result<(Cnn<f32>, TrainHistory)> {
    todo!("nn helper")
}

/// Train an MLP classifier (`sizes = [in, hidden…, classes]`) with softmax cross-entropy.
pub fn train_classifier(
    _sizes: &[usize],
    _act: Activation,
    _p: &TrainParams,
    _x_train: ArrayView2<f32>,
    _y_train: &[usize],
    _x_val: ArrayView2<f32>,
    _y_val: &[usize],
) -> Result<(Mlp<f32>, TrainHistory)> {
    todo!("nn helper")
}
