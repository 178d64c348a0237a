//! Finite-difference gradient checks (f64) of every layer and of the whole CNN loss.

use super::cnn::{Cnn, CnnArch};
use super::layers::{
    bn_relu_backward, bn_relu_forward, col2im3, im2col3, maxpool2, maxpool2_backward, Nhwc,
};
use super::mlp::{Activation, Mlp};
use super::train::softmax_xent;
use crate::rng::{fill_normal, fill_uniform, stream, Rng};
use crate::testutil::check_elementwise;
use ndarray::{Array1, Array2, ArrayView2};

/// [`crate::testutil::check_directional`] with directions drawn from `rng`.
fn check_directional(
    name: &str,
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    rng: &mut Rng,
    trials: usize,
) {
    use rand::Rng as _;
    let normal = || rng.sample::<f64, _>(rand_distr::StandardNormal);
    crate::testutil::check_directional(name, f, x, analytic, normal, trials)
}

/// Random values away from zero: uniform magnitude in `[lo, hi]` with random sign.
fn away_from_zero(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    use rand::Rng as _;
    (0..n)
        .map(|_| {
            let m = lo + (hi - lo) * rng.random::<f64>();
            if rng.random::<bool>() {
                m
            } else {
                -m
            }
        })
        .collect()
}

fn randn(rng: &mut Rng, shape: (usize, usize)) -> Array2<f64> {
    let mut a = Array2::zeros(shape);
    fill_normal(rng, a.as_slice_mut().unwrap());
    a
}

/// `⟨r, y⟩`: a scalar loss whose output gradient is `r`.
fn dot(r: &Array2<f64>, y: ArrayView2<f64>) -> f64 {
    (r * &y).sum()
}

fn mlp_checks(sizes: &[usize], act: Activation, seed: u64) {
    let mut rng = stream(seed, &[]);
    let mut mlp = Mlp::<f64>::new(sizes, act, &mut rng);
    for l in mlp.layers.iter_mut() {
        fill_normal(&mut rng, l.b.as_slice_mut().unwrap());
    }
    let x = randn(&mut rng, (4, sizes[0]));
    let r = randn(&mut rng, (4, *sizes.last().unwrap()));
    let (y, cache) = mlp.forward_cached(x.view());
    assert!((&y - &mlp.forward(x.view()))
        .iter()
        .all(|v| v.abs() < 1e-12));
    let (g, dx) = mlp.backward(&cache, r.view(), true);
    let g = g.unwrap();
    let name = format!("mlp {act:?} {sizes:?}");
    let f_in = |xs: &[f64]| {
        let xv = ArrayView2::from_shape(x.dim(), xs).unwrap();
        dot(&r, mlp.forward(xv).view())
    };
    check_elementwise(
        &format!("{name} input"),
        f_in,
        x.as_slice().unwrap(),
        dx.as_slice().unwrap(),
    );
    for l in 0..mlp.layers.len() {
        let fw = |ws: &[f64]| {
            let mut m = mlp.clone();
            m.layers[l].w.as_slice_mut().unwrap().copy_from_slice(ws);
            dot(&r, m.forward(x.view()).view())
        };
        let fb = |bs: &[f64]| {
            let mut m = mlp.clone();
            m.layers[l].b.as_slice_mut().unwrap().copy_from_slice(bs);
            dot(&r, m.forward(x.view()).view())
        };
        let (w, b) = (&mlp.layers[l].w, &mlp.layers[l].b);
        check_elementwise(
            &format!("{name} w{l}"),
            fw,
            w.as_slice().unwrap(),
            g.w[l].as_slice().unwrap(),
        );
        check_elementwise(
            &format!("{name} b{l}"),
            fb,
            b.as_slice().unwrap(),
            g.b[l].as_slice().unwrap(),
        );
    }
    // Input gradient alone must agree with the full backward.
    let (none, dx2) = mlp.backward(&cache, r.view(), false);
    assert!(none.is_none());
    assert_eq!(dx, dx2);
}

#[test]
fn dense_layer_gradients() {
    mlp_checks(&[5, 3], Activation::Relu, 1);
}

#[test]
fn mlp_relu_gradients() {
    mlp_checks(&[4, 7, 6, 3], Activation::Relu, 2);
}

#[test]
fn mlp_silu_gradients() {
    mlp_checks(&[4, 7, 6, 3], Activation::Silu, 3);
}

#[test]
fn conv2d_gradients() {
    let mut rng = stream(4, &[]);
    let s = Nhwc {
        n: 2,
        h: 5,
        w: 5,
        c: 2,
    };
    let cout = 3;
    let x: Vec<f64> = away_from_zero(&mut rng, s.len(), 0.1, 1.0);
    let w = randn(&mut rng, (9 * s.c, cout));
    let r = randn(&mut rng, (s.rows(), cout));
    let conv = |x: &[f64], w: &Array2<f64>| dot(&r, im2col3(x, s).dot(w).view());
    let cols = im2col3(&x, s);
    let dw = cols.t().dot(&r);
    let dx = col2im3(r.dot(&w.t()).view(), s);
    check_elementwise("conv input", |xs| conv(xs, &w), &x, &dx);
    let fw = |ws: &[f64]| conv(&x, &Array2::from_shape_vec(w.dim(), ws.to_vec()).unwrap());
    check_elementwise(
        "conv weight",
        fw,
        w.as_slice().unwrap(),
        dw.as_slice().unwrap(),
    );
    // A direct (loop) convolution must agree with im2col + GEMM.
    let y = cols.dot(&w);
    for (row, out) in y.outer_iter().enumerate() {
        let (b, p) = (row / 25, row % 25);
        let (py, px) = ((p / 5) as isize, (p % 5) as isize);
        for (co, &got) in out.iter().enumerate() {
            let mut want = 0.0;
            for ky in 0..3isize {
                for kx in 0..3isize {
                    let (iy, ix) = (py + ky - 1, px + kx - 1);
                    if (0..5).contains(&iy) && (0..5).contains(&ix) {
                        for ci in 0..2 {
                            let xi = ((b * 5 + iy as usize) * 5 + ix as usize) * 2 + ci;
                            want += x[xi] * w[[(ky * 3 + kx) as usize * 2 + ci, co]];
                        }
                    }
                }
            }
            assert!(
                (got - want).abs() < 1e-12,
                "conv output {row},{co}: {got} vs {want}"
            );
        }
    }
}

#[test]
fn batchnorm_relu_gradients() {
    let mut rng = stream(5, &[]);
    let (rows, c) = (12, 3);
    let x = randn(&mut rng, (rows, c));
    let gamma = Array1::from(away_from_zero(&mut rng, c, 0.5, 1.5));
    let beta = Array1::from(away_from_zero(&mut rng, c, 0.1, 0.5));
    let r = randn(&mut rng, (rows, c));
    let rm = Array1::from(vec![0.1, -0.2, 0.3]);
    let rv = Array1::from(vec![0.5, 1.5, 2.0]);
    for train in [true, false] {
        let stats = (!train).then_some((&rm, &rv));
        let loss = |x: &Array2<f64>, g: &Array1<f64>, b: &Array1<f64>| {
            dot(&r, bn_relu_forward(x.view(), g, b, stats).0.view())
        };
        let (out, cache) = bn_relu_forward(x.view(), &gamma, &beta, stats);
        let (dx, dg, db) = bn_relu_backward(r.view(), &out, &gamma, &cache);
        let tag = if train { "train" } else { "eval" };
        let fx = |v: &[f64]| {
            loss(
                &Array2::from_shape_vec((rows, c), v.to_vec()).unwrap(),
                &gamma,
                &beta,
            )
        };
        check_elementwise(
            &format!("bn {tag} input"),
            fx,
            x.as_slice().unwrap(),
            dx.as_slice().unwrap(),
        );
        let fg = |v: &[f64]| loss(&x, &Array1::from(v.to_vec()), &beta);
        check_elementwise(
            &format!("bn {tag} gamma"),
            fg,
            gamma.as_slice().unwrap(),
            dg.as_slice().unwrap(),
        );
        let fb = |v: &[f64]| loss(&x, &gamma, &Array1::from(v.to_vec()));
        check_elementwise(
            &format!("bn {tag} beta"),
            fb,
            beta.as_slice().unwrap(),
            db.as_slice().unwrap(),
        );
    }
}

#[test]
fn maxpool_gradients() {
    let mut rng = stream(6, &[]);
    let s = Nhwc {
        n: 2,
        h: 5,
        w: 4,
        c: 3,
    };
    // Distinct values with gaps ≫ eps: a shuffled grid.
    let perm = crate::rng::permutation(&mut rng, s.len());
    let x: Vec<f64> = perm.iter().map(|&p| p as f64 * 0.01).collect();
    let o = s.pooled();
    assert_eq!((o.h, o.w), (2, 2));
    let mut r = vec![0.0; o.len()];
    fill_normal(&mut rng, &mut r);
    let loss = |xs: &[f64]| {
        maxpool2(xs, s)
            .0
            .iter()
            .zip(&r)
            .map(|(a, b)| a * b)
            .sum::<f64>()
    };
    let (_, arg) = maxpool2(&x, s);
    let dx = maxpool2_backward(&r, &arg, s);
    check_elementwise("maxpool", loss, &x, &dx);
}

#[test]
fn softmax_xent_gradient() {
    let mut rng = stream(7, &[]);
    let logits = randn(&mut rng, (5, 4)) * 3.0;
    let y = [0, 3, 1, 1, 2];
    let (loss, d) = softmax_xent(logits.view(), &y);
    let f = |v: &[f64]| softmax_xent(ArrayView2::from_shape((5, 4), v).unwrap(), &y).0;
    check_elementwise(
        "softmax xent",
        f,
        logits.as_slice().unwrap(),
        d.as_slice().unwrap(),
    );
    // Stable for huge logits, and equal to the naive formula on small ones.
    let big = Array2::from_shape_vec((1, 3), vec![1000.0, -1000.0, 0.0]).unwrap();
    let (lb, _): (f64, _) = softmax_xent(big.view(), &[1]);
    assert!((lb - 2000.0).abs() < 1e-9, "big-logit loss {lb}");
    let naive: f64 = (0..5)
        .map(|i| {
            let row = logits.row(i);
            row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[y[i]]
        })
        .sum::<f64>()
        / 5.0;
    assert!((loss - naive).abs() < 1e-12);
}

pub(super) fn small_arch() -> CnnArch {
    CnnArch {
        channels: vec![2, 3],
        feature_dim: 4,
        height: 6,
        width: 5,
        classes: 3,
    }
}

pub(super) fn random_cnn(arch: &CnnArch, seed: u64) -> Cnn<f64> {
    let mut rng = stream(seed, &[1]);
    let mut cnn = Cnn::<f64>::new(arch, &mut rng).unwrap();
    for b in cnn.blocks.iter_mut() {
        fill_uniform(&mut rng, b.gamma.as_slice_mut().unwrap(), 0.5, 1.5);
        fill_uniform(&mut rng, b.beta.as_slice_mut().unwrap(), -0.3, 0.3);
        fill_uniform(&mut rng, b.running_mean.as_slice_mut().unwrap(), -0.3, 0.3);
        fill_uniform(&mut rng, b.running_var.as_slice_mut().unwrap(), 0.5, 2.0);
    }
    fill_uniform(&mut rng, cnn.fc1.b.as_slice_mut().unwrap(), 0.0, 0.3);
    cnn
}

pub(super) fn images(arch: &CnnArch, n: usize, seed: u64) -> Array2<f64> {
    let mut x = Array2::zeros((n, arch.height * arch.width));
    fill_uniform(
        &mut stream(seed, &[2]),
        x.as_slice_mut().unwrap(),
        0.05,
        0.95,
    );
    x
}

/// Whole-network training-mode loss checked w.r.t. every parameter tensor and the input.
fn cnn_loss_check(arch: &CnnArch, n: usize, elementwise: bool) {
    let cnn = random_cnn(arch, 8);
    let x = images(arch, n, 9);
    let y: Vec<usize> = (0..n).map(|i| i % arch.classes).collect();
    let loss = |m: &Cnn<f64>, x: ArrayView2<f64>| {
        softmax_xent(m.forward_cached(x, true).logits.view(), &y).0
    };
    let cache = cnn.forward_cached(x.view(), true);
    let (_, dl) = softmax_xent(cache.logits.view(), &y);
    let (g, dx) = cnn.backward(&cache, None, Some(dl.view()), true, true);
    let g = g.unwrap();
    let grads: Vec<Vec<f64>> = g.slices().iter().map(|s| s.to_vec()).collect();
    let mut base = cnn.clone();
    let params: Vec<Vec<f64>> = base.params_mut().iter().map(|s| s.to_vec()).collect();
    let mut rng = stream(10, &[]);
    for (t, (p, gr)) in params.iter().zip(&grads).enumerate() {
        let f = |v: &[f64]| {
            let mut m = cnn.clone();
            m.params_mut()[t].copy_from_slice(v);
            loss(&m, x.view())
        };
        let name = format!("cnn {:?} param tensor {t}", arch.channels);
        if elementwise {
            check_elementwise(&name, f, p, gr);
        } else {
            check_directional(&name, f, p, gr, &mut rng, 3);
        }
    }
    let fx = |v: &[f64]| loss(&cnn, ArrayView2::from_shape(x.dim(), v).unwrap());
    let (xs, dxs) = (x.as_slice().unwrap(), dx.unwrap());
    if elementwise {
        check_elementwise("cnn input", fx, xs, dxs.as_slice().unwrap());
    } else {
        check_directional("cnn input", fx, xs, dxs.as_slice().unwrap(), &mut rng, 3);
    }
}

#[test]
fn cnn_loss_gradients_small() {
    cnn_loss_check(&small_arch(), 4, true);
}

#[test]
fn cnn_loss_gradients_default_arch_directional() {
    let arch = CnnArch {
        channels: vec![8, 16, 32],
        feature_dim: 16,
        height: 28,
        width: 28,
        classes: 10,
    };
    cnn_loss_check(&arch, 3, false);
}

#[test]
fn cnn_eval_input_vjp() {
    let arch = small_arch();
    let cnn = random_cnn(&arch, 11);
    let x = images(&arch, 3, 12);
    let mut rng = stream(13, &[]);
    let rf = randn(&mut rng, (3, arch.feature_dim));
    let rl = randn(&mut rng, (3, arch.classes));
    let f = |v: &[f64]| {
        let (feat, logits) = cnn.features_and_logits(ArrayView2::from_shape(x.dim(), v).unwrap());
        dot(&rf, feat.view()) + dot(&rl, logits.view())
    };
    let dx = cnn.input_vjp(x.view(), Some(rf.view()), Some(rl.view()));
    check_elementwise(
        "cnn eval input vjp",
        f,
        x.as_slice().unwrap(),
        dx.as_slice().unwrap(),
    );
}
