//! The fused conv stack ([`super::convstack`]) against the unfused composition of the
//! layer kernels ([`super::layers`]: im2col + GEMM, BatchNorm with two-pass batch statistics,
//! max-pooling, and their backward passes), in f64, for several chunk sizes (including one
//! image per chunk and chunks that do not divide the batch), in training and eval mode.

use super::cnn::{Cnn, CnnArch};
use super::convstack;
use super::layers::{
    bn_relu_backward, bn_relu_forward, col2im3, im2col3, maxpool2, maxpool2_backward, Nhwc,
};
use super::tests_grad::{images, random_cnn};
use crate::rng::{fill_uniform, stream};
use ndarray::{Array1, Array2, ArrayView2};

type Grads = (Vec<Array2<f64>>, Vec<Array1<f64>>, Vec<Array1<f64>>);
/// Activations, per-block batch (mean, var), parameter gradients, input gradient.
type Reference = (Vec<f64>, Vec<(Array1<f64>, Array1<f64>)>, Grads, Vec<f64>);

/// The unfused forward and backward (what `Cnn` ran before the fused stack): the last
/// block's activations, the batch (mean, var) per block, the parameter and input gradients.
fn reference(cnn: &Cnn<f64>, x: ArrayView2<f64>, gflat: &[f64], train: bool) -> Reference {
    let (a, nb) = (&cnn.arch, cnn.blocks.len());
    let mut s = Nhwc {
        n: x.nrows(),
        h: a.height,
        w: a.width,
        c: 1,
    };
    let mut cur = x.iter().copied().collect::<Vec<_>>();
    let mut tape = vec![];
    for (i, blk) in cnn.blocks.iter().enumerate() {
        let cols = im2col3(&cur, s);
        let pre = cols.dot(&blk.w);
        let stats = (!train).then_some((&blk.running_mean, &blk.running_var));
        let (out, bn) = bn_relu_forward(pre.view(), &blk.gamma, &blk.beta, stats);
        let so = Nhwc {
            c: blk.w.ncols(),
            ..s
        };
        let pool = (i + 1 < nb).then(|| maxpool2(out.as_slice().unwrap(), so));
        tape.push((s, cols, out.clone(), bn, pool.as_ref().map(|p| p.1.clone())));
        match pool {
            Some((p, _)) => {
                cur = p;
                s = so.pooled();
            }
            None => cur = out.iter().copied().collect(),
        }
    }
    let stats = tape
        .iter()
        .map(|t| (t.3.mean.clone(), t.3.var.clone()))
        .collect();
    let mut g = gflat.to_vec();
    let (mut gw, mut gg, mut gb) = (vec![], vec![], vec![]);
    for i in (0..nb).rev() {
        let (s_in, cols, out, bn, arg) = &tape[i];
        let so = Nhwc {
            c: cnn.blocks[i].w.ncols(),
            ..*s_in
        };
        let gout = match arg {
            Some(arg) => maxpool2_backward(&g, arg, so),
            None => g.clone(),
        };
        let gout = ArrayView2::from_shape((so.rows(), so.c), &gout).unwrap();
        let (dpre, dgamma, dbeta) = bn_relu_backward(gout, out, &cnn.blocks[i].gamma, bn);
        gw.push(cols.t().dot(&dpre));
        gg.push(dgamma);
        gb.push(dbeta);
        g = col2im3(dpre.dot(&cnn.blocks[i].w.t()).view(), *s_in);
    }
    gw.reverse();
    gg.reverse();
    gb.reverse();
    (cur, stats, (gw, gg, gb), g)
}

fn close(what: &str, a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let scale = b.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-11 * scale,
            "{what}[{i}]: fused {x} vs reference {y}"
        );
    }
}

fn check(arch: &CnnArch, n: usize) {
    let cnn = random_cnn(arch, 21);
    let x = images(arch, n, 22);
    let s0 = Nhwc {
        n,
        h: arch.height,
        w: arch.width,
        c: 1,
    };
    let d = cnn.fc1.w.nrows();
    let mut gflat = vec![0.0; n * d];
    fill_uniform(&mut stream(23, &[]), &mut gflat, -1.0, 1.0);
    for train in [true, false] {
        let (want, stats, wg, wdx) = reference(&cnn, x.view(), &gflat, train);
        for ipc in [1, 2, 3, n, convstack::images_per_chunk(&cnn.blocks, s0)] {
            let ctx = format!("train {train}, {ipc} images per chunk");
            let (tape, got) =
                convstack::forward(&cnn.blocks, x.as_slice().unwrap(), s0, train, ipc);
            close(&format!("activations, {ctx}"), &got, &want);
            for (b, (m, v)) in tape.blocks.iter().zip(&stats) {
                close(
                    &format!("mean, {ctx}"),
                    &b.stats.mean,
                    m.as_slice().unwrap(),
                );
                close(&format!("var, {ctx}"), &b.stats.var, v.as_slice().unwrap());
            }
            let (g, dx) = convstack::backward(&cnn.blocks, &tape, &gflat, true, true);
            let (gw, gg, gb) = g.unwrap();
            close(&format!("input gradient, {ctx}"), &dx.unwrap(), &wdx);
            for i in 0..gw.len() {
                close(
                    &format!("dW{i}, {ctx}"),
                    gw[i].as_slice().unwrap(),
                    wg.0[i].as_slice().unwrap(),
                );
                close(
                    &format!("dγ{i}, {ctx}"),
                    gg[i].as_slice().unwrap(),
                    wg.1[i].as_slice().unwrap(),
                );
                close(
                    &format!("dβ{i}, {ctx}"),
                    gb[i].as_slice().unwrap(),
                    wg.2[i].as_slice().unwrap(),
                );
            }
        }
    }
}

#[test]
fn fused_conv_stack_matches_the_unfused_layers() {
    // odd sizes: pooling floors, chunks that do not divide the batch
    let arch = CnnArch {
        channels: vec![3, 4, 2],
        feature_dim: 5,
        height: 9,
        width: 7,
        classes: 3,
    };
    check(&arch, 7);
    let one = CnnArch {
        channels: vec![2],
        feature_dim: 3,
        height: 5,
        width: 6,
        classes: 2,
    };
    check(&one, 4);
}

/// The kept tape without its block inputs still gives the input gradient (eval mode).
#[test]
fn dropping_the_inputs_keeps_the_input_gradient() {
    let arch = super::tests_grad::small_arch();
    let cnn = random_cnn(&arch, 31);
    let x = images(&arch, 5, 32);
    let s0 = Nhwc {
        n: 5,
        h: arch.height,
        w: arch.width,
        c: 1,
    };
    let (mut tape, flat) = convstack::forward(&cnn.blocks, x.as_slice().unwrap(), s0, false, 2);
    let g: Vec<f64> = flat.iter().map(|v| v.sin()).collect();
    let (_, full) = convstack::backward(&cnn.blocks, &tape, &g, false, true);
    tape.drop_inputs();
    let (_, dropped) = convstack::backward(&cnn.blocks, &tape, &g, false, true);
    assert_eq!(full, dropped);
    assert!(full.unwrap().iter().any(|v| *v != 0.0));
}

/// Same batch, 1 and 3 worker threads: bit-identical training-mode activations, statistics
/// and gradients (f32, the training type; several chunks per block).
#[test]
fn results_do_not_depend_on_the_thread_count() {
    let arch = CnnArch {
        channels: vec![4, 8],
        feature_dim: 6,
        height: 12,
        width: 10,
        classes: 3,
    };
    let cnn: Cnn<f32> = random_cnn(&arch, 41).cast();
    let x = images(&arch, 9, 42).mapv(|v| v as f32);
    let s0 = Nhwc {
        n: 9,
        h: arch.height,
        w: arch.width,
        c: 1,
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (tape, flat) = convstack::forward(&cnn.blocks, x.as_slice().unwrap(), s0, true, 2);
            let g: Vec<f32> = flat.iter().map(|v| (v * 3.0).sin()).collect();
            let (grads, dx) = convstack::backward(&cnn.blocks, &tape, &g, true, true);
            let means: Vec<Vec<f32>> = tape.blocks.iter().map(|b| b.stats.var.clone()).collect();
            (flat, means, grads.unwrap(), dx.unwrap())
        })
    };
    let (a, b) = (run(1), run(3));
    assert_eq!(a.0, b.0, "activations");
    assert_eq!(a.1, b.1, "batch variances");
    assert_eq!(
        (a.2 .0, a.2 .1, a.2 .2),
        (b.2 .0, b.2 .1, b.2 .2),
        "parameter gradients"
    );
    assert_eq!(a.3, b.3, "input gradient");
}
