//! Training the feature-space denoiser: DDPM forward noising of hybrid vectors at a random
//! step `t ~ U{1…T}`, an MLP on `[x_t, emb(t)]` predicting the noise (or `x₀`), MSE loss,
//! Adam. Validation loss uses a fixed noise draw so curves are comparable across epochs.

use super::{time_embedding, Schedule};
use crate::config::{DiffusionConfig, Prediction};
use crate::error::{Error, Result};
use crate::nn::mlp::{Activation, Mlp};
use crate::nn::optim::Adam;
use crate::progress::Progress;
use crate::rng::{fill_normal, permutation, stream, tag, Rng};
use ndarray::{concatenate, Array2, ArrayView2, Axis};
use rand::Rng as _;

/// Loss curves of the denoiser.
#[derive(Clone, Debug, Default)]
pub struct DenoiserHistory {
    pub train_loss: Vec<f64>,
    pub val_loss: Vec<f64>,
}

/// A trained denoiser with its schedule and embedding table.
#[derive(Clone, Debug)]
pub struct Denoiser {
    pub mlp: Mlp<f32>,
    pub sched: Schedule,
    pub emb: Array2<f32>,
    pub predict: Prediction,
}

impl Denoiser {
    /// The denoiser network `mlp` with the linear schedule, time embedding and prediction
    /// target of `cfg` (`diffusion.*`).
    pub fn new(mlp: Mlp<f32>, cfg: &DiffusionConfig) -> Self {
        Denoiser {
            mlp,
            sched: Schedule::linear(cfg.steps, cfg.beta_start, cfg.beta_end),
            emb: time_embedding::<f32>(cfg.steps, cfg.time_dim),
            predict: cfg.predict,
        }
    }
}

/// One noised batch: denoiser inputs and regression targets.
fn make_batch(
    x0: ArrayView2<f32>,
    sched: &Schedule,
    emb: &Array2<f32>,
    predict: Prediction,
    rng: &mut Rng,
) -> (Array2<f32>, Array2<f32>) {
    let (n, d) = x0.dim();
    let mut noise = Array2::<f32>::zeros((n, d));
    fill_normal(rng, noise.as_slice_mut().unwrap());
    let mut xt = Array2::<f32>::zeros((n, d));
    let mut e = Array2::<f32>::zeros((n, emb.ncols()));
    for i in 0..n {
        let t = rng.random_range(1..=sched.steps());
        let ab = sched.alpha_bar[t];
        let (a, b) = (ab.sqrt() as f32, (1.0 - ab).sqrt() as f32);
        for j in 0..d {
            xt[[i, j]] = a * x0[[i, j]] + b * noise[[i, j]];
        }
        e.row_mut(i).assign(&emb.row(t));
    }
    let input = concatenate(Axis(1), &[xt.view(), e.view()]).unwrap();
    let target = match predict {
        Prediction::Noise => noise,
        Prediction::X0 => x0.to_owned(),
    };
    (input, target)
}

fn mse(out: &Array2<f32>, target: &Array2<f32>) -> (f64, Array2<f32>) {
    let n = out.len() as f64;
    let diff = out - target;
    let loss = diff.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / n;
    (loss, diff * (2.0 / n as f32))
}

/// Train the denoiser on (z-scored) training features.
pub fn train_denoiser(
    cfg: &DiffusionConfig,
    seed: u64,
    x_train: ArrayView2<f32>,
    x_val: ArrayView2<f32>,
) -> Result<(Denoiser, DenoiserHistory)> {
    let d = x_train.ncols();
    if x_train.nrows() == 0 {
        return Err(Error::param(
            "diffusion",
            "no training rows for the denoiser",
        ));
    }
    let sched = Schedule::linear(cfg.steps, cfg.beta_start, cfg.beta_end);
    let emb = time_embedding::<f32>(cfg.steps, cfg.time_dim);
    let mut sizes = vec![d + cfg.time_dim];
    sizes.extend(&cfg.hidden);
    sizes.push(d);
    let mut init_rng = stream(seed, &[tag("denoiser-init")]);
    let mut mlp = Mlp::<f32>::new(&sizes, Activation::Silu, &mut init_rng);
    let mut opt = Adam::new(cfg.lr, 0.0, &mlp);
    let mut hist = DenoiserHistory::default();
    let (val_in, val_target) = make_batch(
        x_val,
        &sched,
        &emb,
        cfg.predict,
        &mut stream(seed, &[tag("denoiser-val")]),
    );
    let progress = Progress::new("denoiser train", cfg.epochs as u64);
    for epoch in 0..cfg.epochs {
        let mut rng = stream(seed, &[tag("denoiser-epoch"), epoch as u64]);
        let perm = permutation(&mut rng, x_train.nrows());
        let (mut sum, mut count) = (0.0, 0usize);
        for idx in perm.chunks(cfg.batch_size) {
            let xb = x_train.select(Axis(0), idx);
            let (input, target) = make_batch(xb.view(), &sched, &emb, cfg.predict, &mut rng);
            let (out, cache) = mlp.forward_cached(input.view());
            let (loss, g) = mse(&out, &target);
            if !loss.is_finite() {
                return Err(Error::Diverged {
                    stage: "denoiser",
                    epoch,
                    loss,
                    lr_key: "diffusion.lr",
                });
            }
            let (grads, _) = mlp.backward(&cache, g.view(), true);
            opt.step(&mut mlp, &grads.expect("param grads requested"));
            sum += loss * idx.len() as f64;
            count += idx.len();
        }
        let train = sum / count as f64;
        let val = if x_val.nrows() > 0 {
            mse(&mlp.forward(val_in.view()), &val_target).0
        } else {
            f64::NAN
        };
        hist.train_loss.push(train);
        hist.val_loss.push(val);
        progress.set_message(format!("mse {train:.4} val {val:.4}"));
        progress.inc(1);
    }
    progress.finish(format!(
        "final mse {:.4} (val {:.4})",
        hist.train_loss.last().unwrap_or(&f64::NAN),
        hist.val_loss.last().unwrap_or(&f64::NAN)
    ));
    Ok((
        Denoiser {
            mlp,
            sched,
            emb,
            predict: cfg.predict,
        },
        hist,
    ))
}
