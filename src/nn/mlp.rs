//! Dense layers and multi-layer perceptrons with cached forward and exact backward.
//!
//! Layout: rows are samples, `w` is `in × out`, so a layer is one GEMM `x·w` plus a bias row.
//! `backward` always returns the input gradient (used by the attacks and by backpropagation
//! through chains of denoiser steps); parameter gradients are only formed when asked for.

use crate::linalg::{par_gemm, par_gemm_tn};
use crate::rng::{fill_uniform, Rng};
use crate::Scalar;
use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};

/// Hidden-layer activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Silu,
}

impl Activation {
    /// `act(z)`.
    #[inline]
    pub fn apply<F: Scalar>(self, z: F) -> F {
        match self {
            Activation::Relu => z.max(F::zero()),
            Activation::Silu => z * sigmoid(z),
        }
    }
    /// `act'(z)`.
    #[inline]
    pub fn derivative<F: Scalar>(self, z: F) -> F {
        match self {
            Activation::Relu => {
                if z > F::zero() {
                    F::one()
                } else {
                    F::zero()
                }
            }
            Activation::Silu => {
                let s = sigmoid(z);
                s * (F::one() + z * (F::one() - s))
            }
        }
    }
}

/// Numerically safe logistic function.
#[inline]
pub fn sigmoid<F: Scalar>(z: F) -> F {
    if z >= F::zero() {
        F::one() / (F::one() + (-z).exp())
    } else {
        let e = z.exp();
        e / (F::one() + e)
    }
}

/// `y = x·w + b` with `w: in × out`.
#[derive(Clone, Debug)]
pub struct Dense<F> {
    pub w: Array2<F>,
    pub b: Array1<F>,
}

impl<F: Scalar> Dense<F> {
    /// Uniform weights in `±bound`, zero bias.
    pub fn uniform(fan_in: usize, fan_out: usize, bound: f64, rng: &mut Rng) -> Self {
        let mut w = Array2::<F>::zeros((fan_in, fan_out));
        fill_uniform(rng, w.as_slice_mut().expect("fresh array"), -bound, bound);
        Dense {
            w,
            b: Array1::zeros(fan_out),
        }
    }
    /// He-uniform (`bound = √(6/fan_in)`) weights for layers followed by ReLU/SiLU.
    pub fn he_uniform(fan_in: usize, fan_out: usize, rng: &mut Rng) -> Self {
        Self::uniform(fan_in, fan_out, (6.0 / fan_in.max(1) as f64).sqrt(), rng)
    }
    /// `x·w + b`.
    pub fn forward(&self, x: ArrayView2<F>) -> Array2<F> {
        let mut y = par_gemm(x, self.w.view());
        y += &self.b;
        y
    }
    /// Gradients `(dw, db)` from the layer input `x` and the output gradient `g`.
    pub fn param_grads(&self, x: ArrayView2<F>, g: ArrayView2<F>) -> (Array2<F>, Array1<F>) {
        (par_gemm_tn(x, g), g.sum_axis(Axis(0)))
    }
    /// Input gradient `g·wᵀ`.
    pub fn input_grad(&self, g: ArrayView2<F>) -> Array2<F> {
        par_gemm(g, self.w.t())
    }
    pub fn cast<G: Scalar>(&self) -> Dense<G> {
        Dense {
            w: self.w.mapv(|v| G::c(v.to_f64().unwrap_or(f64::NAN))),
            b: self.b.mapv(|v| G::c(v.to_f64().unwrap_or(f64::NAN))),
        }
    }
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
    /// Input of every layer (`inputs[0]` is the network input).
    inputs: Vec<Array2<F>>,
    /// Pre-activation of every hidden layer (`pre[l]` = output of layer `l` before `act`).
    pre: Vec<Array2<F>>,
}

/// Parameter gradients, one entry per layer.
#[derive(Clone, Debug)]
pub struct MlpGrads<F> {
    pub w: Vec<Array2<F>>,
    pub b: Vec<Array1<F>>,
}

impl<F: Scalar> MlpGrads<F> {
    /// Zero gradients shaped like `mlp`.
    pub fn zeros_like(mlp: &Mlp<F>) -> Self {
        MlpGrads {
            w: mlp
                .layers
                .iter()
                .map(|l| Array2::zeros(l.w.raw_dim()))
                .collect(),
            b: mlp
                .layers
                .iter()
                .map(|l| Array1::zeros(l.b.len()))
                .collect(),
        }
    }
}

impl<F: Scalar> Mlp<F> {
    /// An MLP of stored `layers` (from a cache entry or a model file), checked: at least
    /// one layer, each bias as wide as its layer, each layer's input as wide as the previous
    /// layer's output. `what` names the source in the error.
    pub fn from_layers(
        layers: Vec<Dense<F>>,
        act: Activation,
        what: &str,
    ) -> crate::error::Result<Self> {
        let bad = |msg: String| {
            crate::error::Error::data(what, format!("a stored MLP does not fit together: {msg}"))
        };
        if layers.is_empty() {
            return Err(bad("no layers".into()));
        }
        for (i, l) in layers.iter().enumerate() {
            if l.b.len() != l.w.ncols() {
                return Err(bad(format!(
                    "layer {i}: bias of length {} for {} outputs",
                    l.b.len(),
                    l.w.ncols()
                )));
            }
            if i > 0 && layers[i - 1].w.ncols() != l.w.nrows() {
                return Err(bad(format!(
                    "layer {i} takes {} inputs but layer {} gives {}",
                    l.w.nrows(),
                    i - 1,
                    layers[i - 1].w.ncols()
                )));
            }
        }
        Ok(Mlp { layers, act })
    }

    /// Seeded initialisation: He-uniform for layers followed by the activation, LeCun-uniform
    /// (`±1/√fan_in`) for the output layer; zero biases. Panics if `sizes.len() < 2`.
    pub fn new(sizes: &[usize], act: Activation, rng: &mut Rng) -> Self {
        assert!(sizes.len() >= 2, "Mlp::new needs at least [in, out] sizes");
        let n = sizes.len() - 1;
        let layers = (0..n)
            .map(|l| {
                let (fi, fo) = (sizes[l], sizes[l + 1]);
                if l + 1 < n {
                    Dense::he_uniform(fi, fo, rng)
                } else {
                    Dense::uniform(fi, fo, 1.0 / (fi.max(1) as f64).sqrt(), rng)
                }
            })
            .collect();
        Mlp { layers, act }
    }

    pub fn forward(&self, x: ArrayView2<F>) -> Array2<F> {
        let act = self.act;
        let n = self.layers.len();
        let mut h = self.layers[0].forward(x);
        for l in 1..n {
            h.mapv_inplace(|v| act.apply(v));
            h = self.layers[l].forward(h.view());
        }
        h
    }

    pub fn forward_cached(&self, x: ArrayView2<F>) -> (Array2<F>, MlpCache<F>) {
        let act = self.act;
        let n = self.layers.len();
        let mut inputs = Vec::with_capacity(n);
        let mut pre = Vec::with_capacity(n - 1);
        inputs.push(x.to_owned());
        let mut z = self.layers[0].forward(x);
        for l in 1..n {
            let a = z.mapv(|v| act.apply(v));
            pre.push(z);
            z = self.layers[l].forward(a.view());
            inputs.push(a);
        }
        (z, MlpCache { inputs, pre })
    }

    /// Backpropagate `grad_out` (gradient of the loss w.r.t. the output); returns the parameter
    /// gradients when `param_grads` and always the gradient w.r.t. the input.
    pub fn backward(
        &self,
        cache: &MlpCache<F>,
        grad_out: ArrayView2<F>,
        param_grads: bool,
    ) -> (Option<MlpGrads<F>>, Array2<F>) {
        let act = self.act;
        let n = self.layers.len();
        let mut gw = Vec::new();
        let mut gb = Vec::new();
        let mut g = grad_out.to_owned();
        for l in (0..n).rev() {
            let layer = &self.layers[l];
            if param_grads {
                let (dw, db) = layer.param_grads(cache.inputs[l].view(), g.view());
                gw.push(dw);
                gb.push(db);
            }
            let mut gi = layer.input_grad(g.view());
            if l > 0 {
                Zip::from(&mut gi)
                    .and(&cache.pre[l - 1])
                    .for_each(|d, &z| *d *= act.derivative(z));
            }
            g = gi;
        }
        let grads = param_grads.then(|| {
            gw.reverse();
            gb.reverse();
            MlpGrads { w: gw, b: gb }
        });
        (grads, g)
    }

    pub fn cast<G: Scalar>(&self) -> Mlp<G> {
        Mlp {
            layers: self.layers.iter().map(Dense::cast).collect(),
            act: self.act,
        }
    }
    pub fn input_dim(&self) -> usize {
        self.layers[0].w.nrows()
    }
    pub fn output_dim(&self) -> usize {
        self.layers.last().unwrap().w.ncols()
    }
    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(|l| l.w.len() + l.b.len()).sum()
    }
    /// True when every weight and bias is finite.
    pub fn is_finite(&self) -> bool {
        self.layers
            .iter()
            .all(|l| l.w.iter().chain(l.b.iter()).all(|v| v.is_finite()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(i: usize, o: usize, b: usize) -> Dense<f32> {
        Dense {
            w: Array2::zeros((i, o)),
            b: Array1::zeros(b),
        }
    }

    #[test]
    fn from_layers_rejects_layers_that_do_not_fit() {
        let ok = Mlp::from_layers(vec![dense(4, 3, 3), dense(3, 2, 2)], Activation::Relu, "t");
        assert_eq!(ok.unwrap().output_dim(), 2);
        let e = Mlp::from_layers(vec![dense(4, 3, 3), dense(5, 2, 2)], Activation::Relu, "t")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("layer 1 takes 5 inputs but layer 0 gives 3"),
            "{e}"
        );
        let e = Mlp::from_layers(vec![dense(4, 3, 2)], Activation::Silu, "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bias of length 2 for 3 outputs"), "{e}");
        assert!(Mlp::<f32>::from_layers(vec![], Activation::Relu, "t").is_err());
    }
}
