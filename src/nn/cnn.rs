//! The small CNN: conv3×3(c1)-BN-ReLU-maxpool, conv3×3(c2)-BN-ReLU-maxpool,
//! conv3×3(c3)-BN-ReLU, FC(feature_dim)-ReLU (the feature layer), FC(classes).

use crate::Scalar;
use ndarray::{Array2, ArrayView2};

/// Architecture parameters.
#[derive(Clone, Debug)]
pub struct CnnArch {
    pub channels: Vec<usize>,
    pub feature_dim: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

/// A trained (or freshly initialised) CNN.
#[derive(Clone, Debug)]
pub struct Cnn<F> {
    pub arch: CnnArch,
    _p: std::marker::PhantomData<F>,
}

impl<F: Scalar> Cnn<F> {
    /// Feature-layer activations (after ReLU), eval mode. Rows of `x` are images.
    pub fn features(&self, _x: ArrayView2<F>) -> Array2<F> {
        todo!("nn helper")
    }
    /// Class logits, eval mode.
    pub fn logits(&self, _x: ArrayView2<F>) -> Array2<F> {
        todo!("nn helper")
    }
}
