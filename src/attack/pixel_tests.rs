//! The image → feature map against independent references: the pipeline's own feature
//! assembly (bit for bit) and f64 central differences of the whole map.

use super::*;
use crate::diffusion::model::BaseModel;
use crate::features::{concat, Standardizer};
use crate::nn::cnn::CnnArch;
use crate::nn::mlp::{Activation, Mlp};
use crate::rng::{fill_uniform, stream};

fn uniform(r: usize, c: usize, seed: u64, lo: f64, hi: f64) -> Array2<f64> {
    let mut a = Array2::<f64>::zeros((r, c));
    fill_uniform(&mut stream(seed, &[]), a.as_slice_mut().unwrap(), lo, hi);
    a
}

fn cnn(seed: u64) -> Cnn<f64> {
    let arch = CnnArch {
        channels: vec![3],
        feature_dim: 5,
        height: 6,
        width: 6,
        classes: 4,
    };
    let mut c = Cnn::<f64>::new(&arch, &mut stream(seed, &[])).unwrap();
    // Non-trivial eval-mode BatchNorm statistics.
    c.blocks[0].running_mean = Array1::from(vec![0.05, -0.1, 0.02]);
    c.blocks[0].running_var = Array1::from(vec![0.5, 1.5, 0.8]);
    c
}

#[test]
fn the_map_computes_the_pipelines_features_bit_for_bit() {
    let c = cnn(1).cast::<f32>();
    let model = NmfModel {
        basis: uniform(4, 36, 2, 0.0, 1.0).mapv(|v| v as f32),
        loss: NmfLoss::Frobenius,
        max_iter: 50,
        tol: 1e-4,
    };
    let x = uniform(300, 36, 3, 0.0, 1.0).mapv(|v| v as f32);
    // The pipeline: blocks in order, concatenated, z-scored with training statistics.
    let raw = concat(&[
        c.features(x.view()).view(),
        model.transform(x.view()).unwrap().view(),
    ]);
    let sc = Standardizer::fit(raw.slice(s![..200, ..]));
    let want = sc.transform(raw.view());
    let p = Projection::of(&model).unwrap();
    let map = FeatureMap {
        cnn: Some(&c),
        nnmf: Some(&p),
        mean: sc.mean.clone(),
        std: sc.std.clone(),
    };
    let (z, _) = map.forward(x.view()).unwrap();
    assert_eq!(z, want);
}

/// Keeping the CNN's forward caches changes no bit: features and image gradient with the
/// caches kept equal the recomputing path's, over several cache chunks (600 images).
#[test]
fn kept_cnn_caches_give_the_recomputed_gradient_bit_for_bit() {
    let c = cnn(12).cast::<f32>();
    let p = Projection {
        basis: uniform(3, 36, 13, 0.0, 1.0).mapv(|v| v as f32),
        max_iter: 10,
        tol: 0.0,
    };
    let map = FeatureMap {
        cnn: Some(&c),
        nnmf: Some(&p),
        mean: Array1::zeros(8),
        std: Array1::from_elem(8, 0.7),
    };
    let x = uniform(600, 36, 14, 0.0, 1.0).mapv(|v| v as f32);
    let r = uniform(600, 8, 15, -1.0, 1.0).mapv(|v| v as f32);
    let (z0, slow) = map.forward(x.view()).unwrap();
    let (z1, fast) = map.forward_for_grad(x.view()).unwrap();
    assert!(slow.cnn.is_none() && fast.cnn.as_ref().is_some_and(|c| c.len() == 3));
    assert_eq!(z0, z1);
    assert_eq!(
        map.vjp(x.view(), &slow, r.view()),
        map.vjp(x.view(), &fast, r.view())
    );
}

/// `⟨r, z(x)⟩` differentiated through the CNN, the NNMF projection and the z-score, per
/// image, against central differences (f64); also each block alone (the ablations).
#[test]
fn the_image_gradient_matches_finite_differences() {
    let c = cnn(4);
    let p = Projection {
        basis: uniform(3, 36, 5, 0.0, 1.0),
        max_iter: 30,
        tol: 0.0,
    };
    let x = uniform(2, 36, 6, 0.05, 1.0);
    for (with_cnn, with_nnmf) in [(true, true), (true, false), (false, true)] {
        let width = 5 * with_cnn as usize + 3 * with_nnmf as usize;
        let map = FeatureMap {
            cnn: with_cnn.then_some(&c),
            nnmf: with_nnmf.then_some(&p),
            mean: Array1::from_shape_fn(width, |j| 0.1 * j as f64),
            std: Array1::from_shape_fn(width, |j| 0.5 + 0.25 * j as f64),
        };
        let r = uniform(2, width, 7, -1.0, 1.0);
        let (_, tape) = map.forward(x.view()).unwrap();
        let g = map.vjp(x.view(), &tape, r.view());
        for i in 0..2 {
            let f = |v: &[f64]| {
                let row = ArrayView2::from_shape((1, 36), v).unwrap();
                (&map.forward(row).unwrap().0.row(0) * &r.row(i)).sum()
            };
            let name = format!("pixel map (cnn {with_cnn}, nnmf {with_nnmf}), image {i}");
            crate::testutil::check_elementwise(&name, f, &x.row(i).to_vec(), &g.row(i).to_vec());
        }
    }
}

#[test]
fn the_pixel_model_pulls_the_inner_gradient_back_and_keeps_its_decisions() {
    let c = cnn(8).cast::<f32>();
    let p = Projection {
        basis: uniform(3, 36, 9, 0.0, 1.0).mapv(|v| v as f32),
        max_iter: 20,
        tol: 0.0,
    };
    let map = FeatureMap {
        cnn: Some(&c),
        nnmf: Some(&p),
        mean: Array1::zeros(8),
        std: Array1::ones(8),
    };
    let clf = Mlp::<f32>::new(&[8, 6, 4], Activation::Relu, &mut stream(10, &[]));
    let base = BaseModel { clf: &clf };
    let pm = PixelModel {
        map: map.clone(),
        inner: &base,
    };
    let x = uniform(5, 36, 11, 0.0, 1.0).mapv(|v| v as f32);
    let y = [0, 1, 2, 3, 0];
    let ids = [1, 2, 3, 4, 5];
    let ev = pm
        .evaluate(x.view(), &y, &ids, Loss::Ce, 1, 0, true)
        .unwrap();
    let (z, tape) = map.forward(x.view()).unwrap();
    let inner = base
        .evaluate(z.view(), &y, &ids, Loss::Ce, 1, 0, true)
        .unwrap();
    assert_eq!(ev.pred, inner.pred);
    assert_eq!(ev.loss, inner.loss);
    let want = map.vjp(x.view(), &tape, inner.grad.unwrap().view());
    assert_eq!(ev.grad.unwrap(), want);
    assert_eq!(pm.num_classes(), 4);
    assert!(!pm.stochastic());
}

#[test]
fn a_kl_nnmf_and_a_wrong_image_size_are_errors() {
    let m = NmfModel {
        basis: Array2::ones((2, 36)),
        loss: NmfLoss::Kl,
        max_iter: 5,
        tol: 0.0,
    };
    let e = Projection::of(&m).unwrap_err().to_string();
    assert!(e.contains("nnmf.loss"), "{e}");
    let c = cnn(12).cast::<f32>();
    let map = FeatureMap {
        cnn: Some(&c),
        nnmf: None,
        mean: Array1::zeros(5),
        std: Array1::ones(5),
    };
    let e = map.forward(Array2::zeros((2, 30)).view()).err().unwrap();
    assert!(e.to_string().contains("cnn input"), "{e}");
}

/// The whole defended pipeline from the image, in f64 with the purification noise held
/// fixed: image → CNN ⊕ NNMF projection → z-score → noise to t*, t* reverse steps →
/// classifier → CE and DLR. The image gradient (the map's VJP of the chain's and the
/// classifier's backward passes, as `PixelModel` composes them) against central differences.
#[test]
fn the_defended_pipeline_image_gradient_matches_finite_differences() {
    use crate::attack::loss::loss_and_grad;
    use crate::config::Prediction;
    use crate::diffusion::chain::Chain;
    use crate::diffusion::{time_embedding, Schedule};
    let c = cnn(13);
    let p = Projection {
        basis: uniform(3, 36, 14, 0.0, 1.0),
        max_iter: 25,
        tol: 0.0,
    };
    let map = FeatureMap {
        cnn: Some(&c),
        nnmf: Some(&p),
        mean: Array1::from_shape_fn(8, |j| 0.05 * j as f64),
        std: Array1::from_shape_fn(8, |j| 0.4 + 0.1 * j as f64),
    };
    let sched = Schedule::linear(20, 1e-3, 0.2);
    let emb = time_embedding::<f64>(20, 4);
    let den = Mlp::<f64>::new(&[8 + 4, 9, 8], Activation::Silu, &mut stream(15, &[]));
    let clf = Mlp::<f64>::new(&[8, 6, 4], Activation::Silu, &mut stream(16, &[]));
    let chain = Chain {
        den: &den,
        sched: &sched,
        emb: &emb,
        t_star: 3,
        predict: Prediction::Noise,
    };
    let x = uniform(2, 36, 17, 0.05, 1.0);
    let noise = uniform(2, chain.noise_len(8), 18, -1.5, 1.5);
    let y = [1usize, 3];
    for kind in [Loss::Ce, Loss::Dlr] {
        let loss = |x: ArrayView2<f64>| -> (f64, Array2<f64>) {
            let (z, tape) = map.forward(x).unwrap();
            let (xh, cache) = chain.forward(z.view(), noise.view(), true);
            let (logits, cc) = clf.forward_cached(xh.view());
            let (l, dl) = loss_and_grad(kind, logits.view(), &y);
            let (_, gz) = clf.backward(&cc, dl.view(), false);
            let gz = chain.backward(&cache.unwrap(), gz);
            (l.sum(), map.vjp(x, &tape, gz.view()))
        };
        let (_, g) = loss(x.view());
        let f = |v: &[f64]| loss(ArrayView2::from_shape((2, 36), v).unwrap()).0;
        let name = format!("defended pipeline from pixels, {kind:?}");
        crate::testutil::check_elementwise(&name, f, x.as_slice().unwrap(), g.as_slice().unwrap());
    }
}
