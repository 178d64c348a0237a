//! Neural-network building blocks on the CPU, generic over [`crate::Scalar`] (f32 for
//! training/inference, f64 for gradient checks): dense layers and MLPs, the small CNN,
//! Adam, and the minibatch training loops with early stopping.
//!
//! What the pipeline and the diffusion module use:
//! - `mlp::{Activation, Dense, Mlp, MlpCache, MlpGrads}` with
//!   `Mlp::new(sizes: &[usize], act: Activation, rng: &mut Rng) -> Mlp<F>` (sizes = [in, h1, …, out];
//!   activation between layers, none after the last),
//!   `forward(&self, x: ArrayView2<F>) -> Array2<F>`,
//!   `forward_cached(&self, x: ArrayView2<F>) -> (Array2<F>, MlpCache<F>)`,
//!   `backward(&self, cache: &MlpCache<F>, grad_out: ArrayView2<F>, param_grads: bool) -> (Option<MlpGrads<F>>, Array2<F>)`
//!   (second element = gradient w.r.t. the input), `cast<G: Scalar>(&self) -> Mlp<G>`.
//! - `optim::Adam`: `Adam::new(lr: f64, weight_decay: f64, mlp: &Mlp<f32>)`, `step(&mut self, mlp: &mut Mlp<f32>, g: &MlpGrads<f32>)`.
//!   `optim::AdamCore` is the same optimiser over any list of flat `f32` tensors (used for the CNN).
//! - `cnn::{CnnArch, Cnn}`: `Cnn::features(&self, x: ArrayView2<F>) -> Array2<F>` (eval mode; rows are
//!   images of `height*width` pixels), `Cnn::logits`, `Cnn::features_and_logits`,
//!   `Cnn::input_vjp` (eval-mode input gradient for attacks), and the training-level
//!   `forward_cached` / `backward` / `update_running_stats`.
//! - `train::{TrainParams, TrainHistory, train_cnn, train_classifier, softmax_xent}`.
//!
//! Kernels (im2col convolution, max-pooling, BatchNorm) live in [`layers`]; the CNN runs
//! them fused per chunk of images through [`convstack`] (the unfused kernels are its test
//! reference and the CUDA kernels' parity reference). All reductions use fixed chunking, so
//! the same seed gives bit-identical weights for any thread count.

pub mod cnn;
pub mod convstack;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod layers;
pub mod mlp;
pub mod optim;
pub mod train;

#[cfg(test)]
mod tests_convstack;
#[cfg(test)]
mod tests_grad;
#[cfg(test)]
mod tests_train;
