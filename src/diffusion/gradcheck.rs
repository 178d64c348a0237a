//! Finite-difference checks (f64) of the purification chain and of the whole defended
//! pipeline's input gradient (chain + classifier + CE/DLR loss), with the noise held fixed.

use super::chain::Chain;
use super::{time_embedding, Schedule};
use crate::attack::loss::loss_and_grad;
use crate::attack::Loss;
use crate::config::Prediction;
use crate::nn::mlp::{Activation, Mlp};
use crate::rng::{fill_normal, stream};
use ndarray::Array2;

fn randn(r: usize, c: usize, seed: u64, scale: f64) -> Array2<f64> {
    let mut a = Array2::<f64>::zeros((r, c));
    fill_normal(&mut stream(seed, &[]), a.as_slice_mut().unwrap());
    a * scale
}

/// Loss of the defended pipeline (summed over rows) and its analytic input gradient.
fn pipeline_loss(
    chain: &Chain<'_, f64>,
    clf: &Mlp<f64>,
    x0: &Array2<f64>,
    noise: &Array2<f64>,
    y: &[usize],
    kind: Loss<'_>,
) -> (f64, Array2<f64>) {
    let (xh, cache) = chain.forward(x0.view(), noise.view(), true);
    let (logits, cc) = clf.forward_cached(xh.view());
    let (l, dl) = loss_and_grad(kind, logits.view(), y);
    let (_, gx) = clf.backward(&cc, dl.view(), false);
    (l.sum(), chain.backward(&cache.unwrap(), gx))
}

fn check(predict: Prediction, kind: Loss<'_>) {
    let (n, d, tdim, t_star) = (3, 5, 4, 4);
    let sched = Schedule::linear(20, 1e-3, 0.2);
    let emb = time_embedding::<f64>(20, tdim);
    let den = Mlp::<f64>::new(&[d + tdim, 7, d], Activation::Silu, &mut stream(1, &[]));
    let clf = Mlp::<f64>::new(&[d, 6, 4], Activation::Silu, &mut stream(2, &[]));
    let chain = Chain {
        den: &den,
        sched: &sched,
        emb: &emb,
        t_star,
        predict,
    };
    let x0 = randn(n, d, 3, 1.0);
    let noise = randn(n, chain.noise_len(d), 4, 1.0);
    let y = [0usize, 2, 3];
    let (_, g) = pipeline_loss(&chain, &clf, &x0, &noise, &y, kind);
    let f = |v: &[f64]| {
        let x = Array2::from_shape_vec((n, d), v.to_vec()).unwrap();
        pipeline_loss(&chain, &clf, &x, &noise, &y, kind).0
    };
    let name = format!("{predict:?}/{kind:?} input gradient");
    crate::testutil::check_elementwise(&name, f, x0.as_slice().unwrap(), g.as_slice().unwrap());
}

#[test]
fn defended_input_gradient_matches_finite_differences_ce_noise() {
    check(Prediction::Noise, Loss::Ce);
}

#[test]
fn defended_input_gradient_matches_finite_differences_dlr_noise() {
    check(Prediction::Noise, Loss::Dlr);
}

#[test]
fn defended_input_gradient_matches_finite_differences_ce_x0() {
    check(Prediction::X0, Loss::Ce);
}

#[test]
fn noiseless_chain_with_a_zero_denoiser_has_its_closed_form() {
    // A denoiser that predicts 0 and zero noise: with ε-prediction every step divides by
    // √α_s, so the chain returns √ᾱ_{t*}·x0 / Π_{s≤t*} √α_s = x0; with x0-prediction the
    // last step's coefficient √α_1(1 − ᾱ_0)/(1 − ᾱ_1) is 0 (ᾱ_0 = 1), so it returns 0.
    // Both step-coefficient sets and the noise schedule are checked against hand algebra.
    let sched = Schedule::linear(10, 1e-3, 0.05);
    let emb = time_embedding::<f64>(10, 4);
    let mut den = Mlp::<f64>::new(&[6, 5, 2], Activation::Silu, &mut stream(5, &[]));
    for l in &mut den.layers {
        l.w.fill(0.0);
        l.b.fill(0.0);
    }
    let x0 = randn(4, 2, 6, 1.0);
    for (predict, want) in [
        (Prediction::Noise, x0.clone()),
        (Prediction::X0, Array2::zeros((4, 2))),
    ] {
        let chain = Chain {
            den: &den,
            sched: &sched,
            emb: &emb,
            t_star: 3,
            predict,
        };
        let noise = Array2::<f64>::zeros((4, chain.noise_len(2)));
        let (a, _) = chain.forward(x0.view(), noise.view(), false);
        let (b, c) = chain.forward(x0.view(), noise.view(), true);
        assert_eq!(a, b, "{predict:?}: cached and plain forward agree");
        assert!(c.is_some());
        let err = (&a - &want).iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            err < 1e-12,
            "{predict:?}: max |chain − closed form| {err:e}"
        );
    }
}

/// The optimised evaluator computes the same logits and input gradients as the reference
/// chain + classifier (f32, both activations, both parameterisations).
#[test]
fn fast_evaluator_matches_reference_chain() {
    use super::fast::FastDefended;
    for (predict, act) in [
        (Prediction::Noise, Activation::Silu),
        (Prediction::X0, Activation::Relu),
    ] {
        let (n, d, tdim, t_star) = (7, 6, 4, 5);
        let sched = Schedule::linear(30, 1e-3, 0.1);
        let emb = time_embedding::<f32>(30, tdim);
        let den = Mlp::<f32>::new(&[d + tdim, 9, 8, d], act, &mut stream(11, &[]));
        let clf = Mlp::<f32>::new(&[d, 5, 4], act, &mut stream(12, &[]));
        let chain = Chain {
            den: &den,
            sched: &sched,
            emb: &emb,
            t_star,
            predict,
        };
        let x0 = randn(n, d, 13, 1.0).mapv(|v| v as f32);
        let noise = randn(n, chain.noise_len(d), 14, 1.0).mapv(|v| v as f32);
        let y = [0usize, 1, 2, 3, 0, 1, 2];
        let (xh, cache) = chain.forward(x0.view(), noise.view(), true);
        let (logits, cc) = clf.forward_cached(xh.view());
        let (_, dl) = loss_and_grad(Loss::Dlr, logits.view(), &y);
        let (_, gx) = clf.backward(&cc, dl.view(), false);
        let g_ref = chain.backward(&cache.unwrap(), gx);
        let fast = FastDefended::new(&den, &clf, &sched, &emb, t_star, predict);
        let out = fast.chunk(x0.view(), noise.view(), &y, Loss::Dlr, true);
        let g = out.grad.unwrap();
        for (a, b) in out.logits.iter().zip(logits.iter()) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "logits {a} vs {b}");
        }
        for (a, b) in g.iter().zip(g_ref.iter()) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "grad {a} vs {b}");
        }
    }
}

#[test]
#[ignore = "timing probe; run with --release -- --ignored --nocapture"]
fn fast_evaluator_timing_probe() {
    use super::fast::FastDefended;
    let (n, d, tdim, t_star) = (240, 96, 16, 10);
    let sched = Schedule::linear(100, 1e-4, 0.02);
    let emb = time_embedding::<f32>(100, tdim);
    let den = Mlp::<f32>::new(
        &[d + tdim, 128, 128, d],
        Activation::Silu,
        &mut stream(11, &[]),
    );
    let clf = Mlp::<f32>::new(&[d, 64, 10], Activation::Relu, &mut stream(12, &[]));
    let fast = FastDefended::new(&den, &clf, &sched, &emb, t_star, Prediction::Noise);
    let x0 = randn(n, d, 13, 1.0).mapv(|v| v as f32);
    let noise = randn(n, fast.noise_len(), 14, 1.0).mapv(|v| v as f32);
    let y = vec![1usize; n];
    for grad in [false, true] {
        let t = std::time::Instant::now();
        for _ in 0..20 {
            std::hint::black_box(fast.chunk(x0.view(), noise.view(), &y, Loss::Ce, grad));
        }
        let s = t.elapsed().as_secs_f64() / 20.0;
        let macs =
            (n * t_star * ((d) * 128 + 128 * 128 + 128 * d)) as f64 * if grad { 2.0 } else { 1.0 };
        eprintln!(
            "grad={grad}: {:.3} ms per chunk, {:.1} GFLOP/s",
            s * 1e3,
            2.0 * macs / s / 1e9
        );
    }
}
