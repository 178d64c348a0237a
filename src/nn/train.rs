//! Minibatch training loops with Adam and early stopping on validation loss, and the
//! softmax cross-entropy loss they (and the attacks) use.

use super::cnn::{Cnn, CnnArch};
use super::mlp::{Activation, Mlp, MlpGrads};
use super::optim::{Adam, AdamCore};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::{permutation, stream, tag};
use crate::Scalar;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Rows per chunk when evaluating the validation set.
const VAL_CHUNK: usize = 4096;

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
    /// Random integer translation of training images by up to this many pixels in each
    /// direction (zero fill), drawn per image and epoch (CNN only; 0 = off).
    pub augment_shift: usize,
    /// Cosine learning-rate decay from `lr` to 0 over `epochs` (off = constant).
    pub cosine_lr: bool,
}

impl TrainParams {
    /// Learning rate of `epoch` under the configured schedule.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        if self.cosine_lr && self.epochs > 1 {
            self.lr * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / self.epochs as f64).cos())
        } else {
            self.lr
        }
    }
}

/// Translate each row (an `h × w` image) of `x` by a random shift in `[-s, s]²` drawn from
/// `stream(seed, [augment, epoch, index])`, filling with zeros.
pub fn augment_shift(
    x: &mut Array2<f32>,
    idx: &[usize],
    h: usize,
    w: usize,
    s: usize,
    seed: u64,
    epoch: usize,
) {
    use rand::Rng as _;
    let s = s as i64;
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .zip(idx.par_iter())
        .for_each(|(mut row, &i)| {
            let mut rng = stream(seed, &[tag("augment"), epoch as u64, i as u64]);
            let dy = rng.random_range(-s..=s);
            let dx = rng.random_range(-s..=s);
            if dx == 0 && dy == 0 {
                return;
            }
            let src = row.to_vec();
            let dst = row.as_slice_mut().expect("contiguous rows");
            for r in 0..h as i64 {
                for c in 0..w as i64 {
                    let (sr, sc) = (r - dy, c - dx);
                    dst[(r * w as i64 + c) as usize] =
                        if sr >= 0 && sr < h as i64 && sc >= 0 && sc < w as i64 {
                            src[(sr * w as i64 + sc) as usize]
                        } else {
                            0.0
                        };
                }
            }
        });
}

/// Per-epoch curves.
#[derive(Clone, Debug, Default)]
pub struct TrainHistory {
    pub train_loss: Vec<f64>,
    pub val_loss: Vec<f64>,
    pub val_accuracy: Vec<f64>,
    /// 0-based index (into the curves) of the epoch whose weights were kept.
    pub best_epoch: usize,
}

/// Mean softmax cross-entropy over the rows of `logits` (stable log-sum-exp) and its gradient
/// w.r.t. the logits, `(softmax − onehot)/n`. Labels must be `< logits.ncols()` (panics
/// otherwise; validate user labels first).
pub fn softmax_xent<F: Scalar>(logits: ArrayView2<F>, y: &[usize]) -> (F, Array2<F>) {
    let (n, k) = logits.dim();
    assert_eq!(n, y.len(), "softmax_xent: {n} rows but {} labels", y.len());
    let mut d = logits.to_owned();
    let inv_n = F::one() / F::c(n.max(1) as f64);
    let mut total = 0.0f64;
    for (i, (mut row, &label)) in d.axis_iter_mut(Axis(0)).zip(y).enumerate() {
        assert!(label < k, "softmax_xent: label {label} ≥ {k} classes");
        let m = row.fold(F::neg_infinity(), |a, &b| a.max(b));
        let mut s = F::zero();
        row.mapv_inplace(|v| {
            let e = (v - m).exp();
            s += e;
            e
        });
        let lse = m + s.ln();
        total += (lse - logits[[i, label]]).to_f64().unwrap_or(f64::NAN);
        row.mapv_inplace(|e| e / s * inv_n);
        row[label] -= inv_n;
    }
    (F::c(total / n.max(1) as f64), d)
}

/// Mean cross-entropy and accuracy of `logits` against `y` (no gradient).
pub fn xent_and_accuracy<F: Scalar>(logits: ArrayView2<F>, y: &[usize]) -> (f64, f64) {
    let mut loss = 0.0;
    let mut correct = 0usize;
    for (row, &label) in logits.axis_iter(Axis(0)).zip(y) {
        let r: Vec<f64> = row.iter().map(|v| v.to_f64().unwrap_or(f64::NAN)).collect();
        let m = r.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + r.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        loss += lse - r[label];
        let arg = (0..r.len()).fold(0, |b, j| if r[j] > r[b] { j } else { b });
        correct += usize::from(arg == label);
    }
    let n = y.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

/// Config key next to the learning rate's (`cnn.lr` → `cnn.batch_size`).
fn sibling_key(lr_key: &str, name: &str) -> String {
    match lr_key.rsplit_once('.') {
        Some((prefix, _)) => format!("{prefix}.{name}"),
        None => name.to_string(),
    }
}

fn validate(
    p: &TrainParams,
    x_train: ArrayView2<f32>,
    y_train: &[usize],
    x_val: ArrayView2<f32>,
    y_val: &[usize],
    dim: usize,
    classes: usize,
) -> Result<()> {
    if p.epochs == 0 {
        return Err(Error::param(sibling_key(p.lr_key, "epochs"), "must be ≥ 1"));
    }
    if p.batch_size == 0 {
        return Err(Error::param(
            sibling_key(p.lr_key, "batch_size"),
            "must be ≥ 1",
        ));
    }
    if !(p.lr.is_finite() && p.lr > 0.0) {
        return Err(Error::param(
            p.lr_key,
            format!("must be a positive number, got {}", p.lr),
        ));
    }
    if !(p.weight_decay.is_finite() && p.weight_decay >= 0.0) {
        return Err(Error::param(
            sibling_key(p.lr_key, "weight_decay"),
            format!("must be ≥ 0, got {}", p.weight_decay),
        ));
    }
    for (name, x, y) in [("training", x_train, y_train), ("validation", x_val, y_val)] {
        if x.nrows() == 0 {
            return Err(Error::param(
                "data",
                format!("the {name} set is empty; provide at least one {name} sample"),
            ));
        }
        if x.nrows() != y.len() {
            return Err(Error::ShapeMismatch {
                op: "training data: rows vs labels",
                lhs: vec![x.nrows(), x.ncols()],
                rhs: vec![y.len()],
            });
        }
        if x.ncols() != dim {
            return Err(Error::ShapeMismatch {
                op: "training data: feature dimension",
                lhs: vec![x.nrows(), x.ncols()],
                rhs: vec![x.nrows(), dim],
            });
        }
        if let Some(&bad) = y.iter().find(|&&c| c >= classes) {
            return Err(Error::param(
                "data",
                format!("{name} label {bad} is out of range for {classes} classes"),
            ));
        }
    }
    Ok(())
}

/// The shared epoch loop: seeded shuffles, minibatches (`step` returns the batch loss),
/// validation (`eval` returns loss and accuracy), divergence checks and early stopping.
fn fit<M: Clone>(
    stage: &'static str,
    label: &str,
    p: &TrainParams,
    n_train: usize,
    mut model: M,
    mut step: impl FnMut(&mut M, &[usize], usize) -> f64,
    eval: impl Fn(&M) -> (f64, f64),
) -> Result<(M, TrainHistory)> {
    let progress = Progress::new(label, p.epochs as u64);
    let mut hist = TrainHistory::default();
    let mut best: Option<(f64, M)> = None;
    let diverged = |epoch: usize, loss: f64| Error::Diverged {
        stage,
        epoch: epoch + 1,
        loss,
        lr_key: p.lr_key,
    };
    for epoch in 0..p.epochs {
        let perm = permutation(
            &mut stream(p.seed, &[tag("shuffle"), epoch as u64]),
            n_train,
        );
        let mut sum = 0.0;
        for idx in perm.chunks(p.batch_size) {
            let loss = step(&mut model, idx, epoch);
            if !loss.is_finite() {
                return Err(diverged(epoch, loss));
            }
            sum += loss * idx.len() as f64;
        }
        let train_loss = sum / n_train as f64;
        let (val_loss, val_acc) = eval(&model);
        if !val_loss.is_finite() {
            return Err(diverged(epoch, val_loss));
        }
        hist.train_loss.push(train_loss);
        hist.val_loss.push(val_loss);
        hist.val_accuracy.push(val_acc);
        progress.inc(1);
        progress.set_message(format!("loss {train_loss:.4} val_acc {val_acc:.4}"));
        if best.as_ref().is_none_or(|(b, _)| val_loss < *b) {
            best = Some((val_loss, model.clone()));
            hist.best_epoch = epoch;
        } else if p.patience > 0 && epoch - hist.best_epoch >= p.patience {
            break;
        }
    }
    let (bl, model) = best.expect("at least one epoch ran");
    progress.finish(format!(
        "best epoch {} val_loss {bl:.4} val_acc {:.4}",
        hist.best_epoch + 1,
        hist.val_accuracy[hist.best_epoch]
    ));
    Ok((model, hist))
}

/// Train the CNN on images (rows of `height*width`).
pub fn train_cnn(
    arch: &CnnArch,
    p: &TrainParams,
    x_train: ArrayView2<f32>,
    y_train: &[usize],
    x_val: ArrayView2<f32>,
    y_val: &[usize],
) -> Result<(Cnn<f32>, TrainHistory)> {
    arch.final_hw()?;
    let dim = arch.height * arch.width;
    validate(p, x_train, y_train, x_val, y_val, dim, arch.classes)?;
    let mut cnn = Cnn::<f32>::new(arch, &mut stream(p.seed, &[tag("cnn init")]))?;
    let lens: Vec<usize> = cnn.params_mut().iter().map(|s| s.len()).collect();
    let mut adam = AdamCore::new(p.lr, p.weight_decay, &lens);
    let step = |m: &mut Cnn<f32>, idx: &[usize], epoch: usize| {
        let mut xb = x_train.select(Axis(0), idx);
        if p.augment_shift > 0 {
            augment_shift(
                &mut xb,
                idx,
                arch.height,
                arch.width,
                p.augment_shift,
                p.seed,
                epoch,
            );
        }
        adam.lr = p.lr_at(epoch);
        let yb: Vec<usize> = idx.iter().map(|&i| y_train[i]).collect();
        let cache = m.forward_cached(xb.view(), true);
        let (loss, dl) = softmax_xent(cache.logits.view(), &yb);
        let (g, _) = m.backward(&cache, None, Some(dl.view()), true, false);
        let g = g.expect("param grads requested");
        m.update_running_stats(&cache);
        adam.step(&mut m.params_mut(), &g.slices());
        loss as f64
    };
    let eval = |m: &Cnn<f32>| {
        let logits = m.logits(x_val);
        xent_and_accuracy(logits.view(), y_val)
    };
    fit("cnn", "cnn train", p, x_train.nrows(), cnn, step, eval)
}

/// Train an MLP classifier (`sizes = [in, hidden…, classes]`) with softmax cross-entropy.
pub fn train_classifier(
    sizes: &[usize],
    act: Activation,
    p: &TrainParams,
    x_train: ArrayView2<f32>,
    y_train: &[usize],
    x_val: ArrayView2<f32>,
    y_val: &[usize],
) -> Result<(Mlp<f32>, TrainHistory)> {
    if sizes.len() < 2 || sizes.contains(&0) {
        return Err(Error::param(
            sibling_key(p.lr_key, "hidden"),
            format!("layer sizes {sizes:?} need an input and an output size, all ≥ 1"),
        ));
    }
    let classes = *sizes.last().expect("checked");
    validate(p, x_train, y_train, x_val, y_val, sizes[0], classes)?;
    let mlp = Mlp::<f32>::new(sizes, act, &mut stream(p.seed, &[tag("classifier init")]));
    let mut adam = Adam::new(p.lr, p.weight_decay, &mlp);
    let step = |m: &mut Mlp<f32>, idx: &[usize], epoch: usize| {
        adam.set_lr(p.lr_at(epoch));
        let xb = x_train.select(Axis(0), idx);
        let yb: Vec<usize> = idx.iter().map(|&i| y_train[i]).collect();
        let (logits, cache) = m.forward_cached(xb.view());
        let (loss, dl) = softmax_xent(logits.view(), &yb);
        let (g, _): (Option<MlpGrads<f32>>, _) = m.backward(&cache, dl.view(), true);
        adam.step(m, &g.expect("param grads requested"));
        loss as f64
    };
    let eval = |m: &Mlp<f32>| {
        let mut loss = 0.0;
        let mut acc = 0.0;
        for (xc, yc) in x_val
            .axis_chunks_iter(Axis(0), VAL_CHUNK)
            .zip(y_val.chunks(VAL_CHUNK))
        {
            let (l, a) = xent_and_accuracy(m.forward(xc).view(), yc);
            loss += l * yc.len() as f64;
            acc += a * yc.len() as f64;
        }
        let n = y_val.len() as f64;
        (loss / n, acc / n)
    };
    fit(
        "classifier",
        "classifier train",
        p,
        x_train.nrows(),
        mlp,
        step,
        eval,
    )
}
