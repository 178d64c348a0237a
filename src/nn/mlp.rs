//! Dense layers and multi-layer perceptrons with cached forward and exact backward.

use crate::rng::Rng;
use crate::Scalar;
use ndarray::{Array1, Array2, ArrayView2};

/// Hidden-layer activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Silu,
}

/// `y = x·w + b` with `w: in × out`.
#[derive(Clone, Debug)]
pub struct Dense<F> {
    pub w: Array2<F>,
    pub b: Array1<F>,
}

/// A stack of dense layers with `act` between them (not after the last).
#[derive(Clone, Debug)]
pub struct Mlp<F> {
    pub layers: Vec<Dense<F>>,
    pub act: Activation,
}

/// Activations saved by `forward_cached` for `backward`.
#[derive(Clone, Debug)]
pub struct MlpCache<F> {
    _p: std::marker::PhantomData<F>,
}

/// Parameter gradients, one entry per layer.
#[derive(Clone, Debug)]
pub struct MlpGrads<F> {
    pub w: Vec<Array2<F>>,
    pub b: Vec<Array1<F>>,
}

impl<F: Scalar> Mlp<F> {
    pub fn new(_sizes: &[usize], _act: Activation, _rng: &mut Rng) -> Self {
        todo!("nn helper")
    }
    pub fn forward(&self, _x: ArrayView2<F>) -> Array2<F> {
        todo!("nn helper")
    }
    pub fn forward_cached(&self, _x: ArrayView2<F>) -> (Array2<F>, MlpCache<F>) {
        todo!("nn helper")
    }
    pub fn backward(
        &self,
        _cache: &MlpCache<F>,
        _grad_out: ArrayView2<F>,
        _param_grads: bool,
    ) -> (Option<MlpGrads<F>>, Array2<F>) {
        todo!("nn helper")
    }
    pub fn cast<G: Scalar>(&self) -> Mlp<G> {
        todo!("nn helper")
    }
    pub fn input_dim(&self) -> usize {
        self.layers[0].w.nrows()
    }
    pub fn output_dim(&self) -> usize {
        self.layers.last().unwrap().w.ncols()
    }
}
