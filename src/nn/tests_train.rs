//! Training-loop tests: convergence on toy data, determinism, early stopping, divergence,
//! input validation, CNN shapes.

use super::cnn::{Cnn, CnnArch};
use super::mlp::{Activation, Mlp};
use super::train::{train_classifier, train_cnn, xent_and_accuracy, TrainParams};
use crate::error::Error;
use crate::rng::{fill_normal, fill_uniform, stream};
use ndarray::{Array2, Axis};

fn params(epochs: usize, lr: f64, patience: usize, seed: u64) -> TrainParams {
    TrainParams {
        epochs,
        batch_size: 16,
        lr,
        weight_decay: 0.0,
        patience,
        seed,
        lr_key: "classifier.lr",
        augment_shift: 0,
        cosine_lr: false,
    }
}

/// Three Gaussian blobs in 2-D, well separated.
fn blobs(n: usize, seed: u64) -> (Array2<f32>, Vec<usize>) {
    let centres = [[0.0f32, 3.0], [3.0, -2.0], [-3.0, -2.0]];
    let mut x = Array2::<f32>::zeros((n, 2));
    fill_normal(&mut stream(seed, &[]), x.as_slice_mut().unwrap());
    let y: Vec<usize> = (0..n).map(|i| i % 3).collect();
    for (mut row, &c) in x.axis_iter_mut(Axis(0)).zip(&y) {
        row[0] = 0.7 * row[0] + centres[c][0];
        row[1] = 0.7 * row[1] + centres[c][1];
    }
    (x, y)
}

fn weights(m: &Mlp<f32>) -> Vec<u32> {
    m.layers
        .iter()
        .flat_map(|l| {
            l.w.iter()
                .chain(l.b.iter())
                .map(|v| v.to_bits())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn classifier_learns_separable_blobs() {
    crate::progress::set_quiet(true);
    let (xt, yt) = blobs(300, 1);
    let (xv, yv) = blobs(150, 2);
    for act in [Activation::Relu, Activation::Silu] {
        let p = TrainParams {
            weight_decay: 1e-4,
            ..params(20, 1e-2, 0, 3)
        };
        let (m, h) =
            train_classifier(&[2, 16, 3], act, &p, xt.view(), &yt, xv.view(), &yv).unwrap();
        let (_, acc) = xent_and_accuracy(m.forward(xv.view()).view(), &yv);
        assert!(acc > 0.95, "{act:?}: val accuracy {acc}");
        assert_eq!(h.train_loss.len(), 20);
        assert!(h.train_loss[19] < h.train_loss[0]);
    }
}

#[test]
fn classifier_training_is_deterministic() {
    crate::progress::set_quiet(true);
    let (xt, yt) = blobs(120, 4);
    let (xv, yv) = blobs(60, 5);
    let run = |seed| {
        let p = params(3, 1e-2, 0, seed);
        train_classifier(
            &[2, 8, 8, 3],
            Activation::Silu,
            &p,
            xt.view(),
            &yt,
            xv.view(),
            &yv,
        )
        .unwrap()
    };
    let (a, ha) = run(7);
    let (b, hb) = run(7);
    let (c, _) = run(8);
    assert_eq!(weights(&a), weights(&b));
    assert_eq!(ha.val_loss, hb.val_loss);
    assert_ne!(weights(&a), weights(&c));
}

#[test]
fn early_stopping_restores_best_epoch() {
    crate::progress::set_quiet(true);
    // Random labels: validation loss gets worse as the big net memorises the training set.
    let mut xt = Array2::<f32>::zeros((64, 6));
    let mut xv = Array2::<f32>::zeros((64, 6));
    fill_normal(&mut stream(9, &[0]), xt.as_slice_mut().unwrap());
    fill_normal(&mut stream(9, &[1]), xv.as_slice_mut().unwrap());
    let yt: Vec<usize> = (0..64).map(|i| (i * 7 + i / 3) % 2).collect();
    let yv: Vec<usize> = (0..64).map(|i| (i * 5 + i / 2) % 2).collect();
    let p = params(60, 1e-2, 3, 10);
    let (m, h) = train_classifier(
        &[6, 64, 64, 2],
        Activation::Relu,
        &p,
        xt.view(),
        &yt,
        xv.view(),
        &yv,
    )
    .unwrap();
    let n = h.val_loss.len();
    assert!(n < 60, "early stopping never triggered");
    assert_eq!(
        n,
        h.best_epoch + 1 + 3,
        "stopped {n} epochs in, best {}",
        h.best_epoch
    );
    let best = h.val_loss.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(h.val_loss[h.best_epoch], best);
    let (vl, _) = xent_and_accuracy(m.forward(xv.view()).view(), &yv);
    assert!(
        (vl - best).abs() < 1e-9,
        "returned model val loss {vl}, best {best}"
    );
    assert!(
        (vl - h.val_loss[n - 1]).abs() > 1e-9,
        "the last epoch's model was returned"
    );
}

#[test]
fn huge_learning_rate_diverges() {
    crate::progress::set_quiet(true);
    let (xt, yt) = blobs(60, 11);
    let p = params(5, 1e30, 0, 12);
    let err = train_classifier(
        &[2, 8, 3],
        Activation::Relu,
        &p,
        xt.view(),
        &yt,
        xt.view(),
        &yt,
    )
    .unwrap_err();
    match err {
        Error::Diverged {
            stage,
            lr_key,
            loss,
            ..
        } => {
            assert_eq!(stage, "classifier");
            assert_eq!(lr_key, "classifier.lr");
            assert!(!loss.is_finite());
        }
        e => panic!("expected Diverged, got {e}"),
    }
}

#[test]
fn bad_inputs_give_typed_errors() {
    let (xt, yt) = blobs(30, 13);
    let p = params(1, 1e-2, 0, 1);
    let empty = Array2::<f32>::zeros((0, 2));
    let cases = [
        train_classifier(
            &[2, 3],
            Activation::Relu,
            &p,
            empty.view(),
            &[],
            xt.view(),
            &yt,
        ),
        train_classifier(
            &[2, 3],
            Activation::Relu,
            &p,
            xt.view(),
            &yt[1..],
            xt.view(),
            &yt,
        ),
        train_classifier(
            &[3, 3],
            Activation::Relu,
            &p,
            xt.view(),
            &yt,
            xt.view(),
            &yt,
        ),
        train_classifier(
            &[2, 2],
            Activation::Relu,
            &p,
            xt.view(),
            &yt,
            xt.view(),
            &yt,
        ),
        train_classifier(
            &[2, 3],
            Activation::Relu,
            &params(1, -1.0, 0, 1),
            xt.view(),
            &yt,
            xt.view(),
            &yt,
        ),
    ];
    for (i, r) in cases.into_iter().enumerate() {
        let e = r.err().unwrap_or_else(|| panic!("case {i} accepted"));
        assert!(
            matches!(e, Error::Param { .. } | Error::ShapeMismatch { .. }),
            "case {i}: {e}"
        );
    }
    let deep = CnnArch {
        channels: vec![2, 2, 2, 2],
        feature_dim: 3,
        height: 6,
        width: 6,
        classes: 2,
    };
    assert!(matches!(
        Cnn::<f32>::new(&deep, &mut stream(1, &[])),
        Err(Error::Param { .. })
    ));
}

#[test]
fn cnn_shapes_on_non_square_images() {
    let arch = CnnArch {
        channels: vec![8, 16, 32],
        feature_dim: 24,
        height: 20,
        width: 24,
        classes: 7,
    };
    assert_eq!(arch.final_hw().unwrap(), (5, 6));
    let cnn = Cnn::<f32>::new(&arch, &mut stream(3, &[])).unwrap();
    let mut x = Array2::<f32>::zeros((300, 480));
    fill_uniform(&mut stream(4, &[]), x.as_slice_mut().unwrap(), 0.0, 1.0);
    let (f, l) = cnn.features_and_logits(x.view());
    assert_eq!(f.dim(), (300, 24));
    assert_eq!(l.dim(), (300, 7));
    assert!(f.iter().all(|&v| v >= 0.0));
    // The chunked eval path agrees with one pass over the whole batch.
    let whole = cnn.forward_cached(x.view(), false);
    let diff = (&whole.logits - &l)
        .iter()
        .fold(0.0f32, |a, v| a.max(v.abs()));
    assert!(diff < 1e-5, "chunked vs whole logits differ by {diff}");
    assert!(cnn.check_input(x.slice(ndarray::s![.., ..400])).is_err());
}

#[test]
fn cnn_learns_toy_images() {
    crate::progress::set_quiet(true);
    // Class = which half (left/right) of an 8×10 image holds a bright blob.
    let arch = CnnArch {
        channels: vec![4, 8],
        feature_dim: 8,
        height: 8,
        width: 10,
        classes: 2,
    };
    let make = |n: usize, seed: u64| {
        let mut x = Array2::<f32>::zeros((n, 80));
        fill_uniform(&mut stream(seed, &[]), x.as_slice_mut().unwrap(), 0.0, 0.3);
        let y: Vec<usize> = (0..n).map(|i| i % 2).collect();
        for (i, mut row) in x.axis_iter_mut(Axis(0)).enumerate() {
            let (r0, c0) = (1 + (i * 3) % 5, if y[i] == 0 { 1 } else { 6 });
            for r in r0..r0 + 2 {
                for c in c0..c0 + 3 {
                    row[r * 10 + c] = 1.0;
                }
            }
        }
        (x, y)
    };
    let (xt, yt) = make(200, 1);
    let (xv, yv) = make(100, 2);
    let p = TrainParams {
        lr_key: "cnn.lr",
        augment_shift: 0,
        cosine_lr: false,
        ..params(6, 1e-2, 0, 5)
    };
    let (cnn, h) = train_cnn(&arch, &p, xt.view(), &yt, xv.view(), &yv).unwrap();
    assert!(
        h.val_accuracy[h.best_epoch] > 0.95,
        "cnn val acc {:?}",
        h.val_accuracy
    );
    let (again, _) = train_cnn(&arch, &p, xt.view(), &yt, xv.view(), &yv).unwrap();
    assert_eq!(cnn.fc2.w, again.fc2.w);
    assert_eq!(cnn.blocks[0].running_var, again.blocks[0].running_var);
    // Running statistics moved away from their initial values.
    assert!(cnn.blocks[0].running_mean.iter().any(|&v| v != 0.0));
}

/// One epoch on 7000 random 28×28 images at batch 64 (release: `cargo test --release --lib
/// nn::tests_train::cnn_epoch_timing -- --ignored --nocapture`).
#[test]
#[ignore]
fn cnn_epoch_timing() {
    let arch = CnnArch {
        channels: vec![8, 16, 32],
        feature_dim: 64,
        height: 28,
        width: 28,
        classes: 10,
    };
    let mut x = Array2::<f32>::zeros((7000, 784));
    fill_uniform(&mut stream(1, &[]), x.as_slice_mut().unwrap(), 0.0, 1.0);
    let y: Vec<usize> = (0..7000).map(|i| i % 10).collect();
    let p = TrainParams {
        batch_size: 64,
        lr_key: "cnn.lr",
        augment_shift: 0,
        cosine_lr: false,
        ..params(1, 1e-3, 0, 1)
    };
    let t = std::time::Instant::now();
    let (cnn, _) = train_cnn(
        &arch,
        &p,
        x.view(),
        &y,
        x.slice(ndarray::s![..1000, ..]),
        &y[..1000],
    )
    .unwrap();
    eprintln!(
        "one epoch (+1000-image eval): {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let t = std::time::Instant::now();
    let f = cnn.features(x.view());
    eprintln!(
        "features of 7000 images: {:.2}s ({:?})",
        t.elapsed().as_secs_f64(),
        f.dim()
    );
}
