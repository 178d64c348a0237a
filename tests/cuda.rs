//! CPU-vs-CUDA parity (feature `cuda`). Every test needs a GPU: without a driver it prints
//! "skipped: no CUDA driver" and passes, unless `REQUIRE_GPU=1` (scripts/gpu-check.sh), where
//! a skip is a failure. Sizes hit the awkward cases (1, 31, 33, 257, non-square).
#![cfg(feature = "cuda")]

#[path = "../src/testutil.rs"]
mod testutil;
use diffnmf::attack::apgd::{single_run, ApgdParams};
use diffnmf::attack::{loss::loss_and_grad, BoxConstraint, LossKind};
use diffnmf::backend::cuda::{self as cu, gemm::Mat, CudaBackend};
use diffnmf::config::Prediction;
use diffnmf::diffusion::cuda::NoiseSource;
use diffnmf::diffusion::fast::FastDefended;
use diffnmf::diffusion::model::BaseModel;
use diffnmf::diffusion::{time_embedding, Schedule};
use diffnmf::nmf::{mu_from_init, NmfLoss, NmfMode, NmfModel};
use diffnmf::nn::layers::{bn_relu_forward, im2col3, maxpool2, Nhwc};
use diffnmf::nn::mlp::{Activation, Mlp};
use diffnmf::rng::{fill_normal, fill_uniform, stream};
use ndarray::{Array1, Array2};
use testutil::assert_close;

fn gpu() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var("REQUIRE_GPU").as_deref() != Ok("1"),
                "REQUIRE_GPU=1 but no usable GPU: {e}"
            );
            println!("skipped: no CUDA driver ({e})");
            None
        }
    }
}

fn rand(rows: usize, cols: usize, seed: u64, lo: f64, hi: f64) -> Array2<f32> {
    let mut v = vec![0f32; rows * cols];
    fill_uniform(
        &mut stream(seed, &[rows as u64, cols as u64]),
        &mut v,
        lo,
        hi,
    );
    Array2::from_shape_vec((rows, cols), v).unwrap()
}

#[test]
fn gemm_matches_ndarray_with_transposes_and_split_k() {
    let Some(be) = gpu() else { return };
    for &(m, n, k) in &[
        (1, 1, 1),
        (31, 33, 257),
        (257, 31, 33),
        (33, 257, 1),
        (31, 33, 5000),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let a = if ta {
                rand(k, m, 1, -1.0, 1.0)
            } else {
                rand(m, k, 1, -1.0, 1.0)
            };
            let b = if tb {
                rand(n, k, 2, -1.0, 1.0)
            } else {
                rand(k, n, 2, -1.0, 1.0)
            };
            let opa = if ta { a.t().to_owned() } else { a.clone() };
            let opb = if tb { b.t().to_owned() } else { b.clone() };
            let want = opa.dot(&opb);
            let da = be.upload(a.as_slice().unwrap()).unwrap();
            let db = be.upload(b.as_slice().unwrap()).unwrap();
            let mut dc = be.zeros::<f32>(m * n).unwrap();
            let am = Mat {
                rows: a.nrows(),
                cols: a.ncols(),
                trans: ta,
            };
            let bm = Mat {
                rows: b.nrows(),
                cols: b.ncols(),
                trans: tb,
            };
            cu::gemm::gemm(&be, 1.0, &da, am, &db, bm, 0.0, &mut dc).unwrap();
            let got = Array2::from_shape_vec((m, n), be.download(&dc).unwrap()[..m * n].to_vec())
                .unwrap();
            assert_close(
                &format!("gemm {m}×{n}×{k} ta={ta} tb={tb}"),
                got.view(),
                want.view(),
                1e-4 * (k as f32).sqrt(),
                1e-4,
            );
        }
    }
}

#[test]
fn nmf_frobenius_trajectory_matches_cpu() {
    let Some(be) = gpu() else { return };
    for &(n, p, k) in &[(257, 33, 31), (33, 257, 1), (31, 64, 7)] {
        let v = rand(n, p, 3, 0.0, 1.0);
        let h0 = rand(n, k, 4, 0.1, 1.0);
        let w0 = rand(k, p, 5, 0.1, 1.0);
        let (mut hc, mut wc) = (h0.clone(), w0.clone());
        let cpu = mu_from_init(v.view(), &mut hc, &mut wc, NmfLoss::Frobenius, 5, 0.0).unwrap();
        let (mut hg, mut wg) = (h0, w0);
        let gpu =
            diffnmf::nmf::cuda::mu_frobenius(&be, v.view(), &mut hg, &mut wg, 5, 0.0).unwrap();
        assert!((gpu.initial - cpu.initial).abs() <= 1e-4 * cpu.initial);
        for (it, (a, b)) in gpu.objective.iter().zip(&cpu.objective).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs() + 1e-6,
                "objective {it}: gpu {a} cpu {b} ({n}×{p}, k={k})"
            );
        }
        assert_close("nmf H", hg.view(), hc.view(), 1e-5, 2e-3);
        assert_close("nmf W", wg.view(), wc.view(), 1e-5, 2e-3);
    }
}

#[test]
fn nmf_transform_matches_cpu() {
    let Some(be) = gpu() else { return };
    for &(n, p, k, tol) in &[(1, 31, 5, 0.0), (257, 33, 31, 0.0), (33, 64, 7, 1e-3)] {
        let basis = rand(k, p, 6, 0.0, 1.0);
        let model = NmfModel {
            basis,
            loss: NmfLoss::Frobenius,
            max_iter: 40,
            tol,
        };
        let v = rand(n, p, 7, 0.0, 1.0);
        let cpu = model.transform(v.view()).unwrap();
        let gpu = diffnmf::nmf::cuda::transform(&be, &model, v.view()).unwrap();
        assert_close(
            &format!("transform {n}×{p} k={k} tol={tol}"),
            gpu.view(),
            cpu.view(),
            1e-5,
            2e-3,
        );
    }
    let _ = NmfMode::Global;
}

#[test]
fn ce_and_dlr_losses_match_cpu() {
    let Some(be) = gpu() else { return };
    for &(rows, k) in &[(1, 3), (33, 10), (257, 31)] {
        let z = rand(rows, k, 8, -3.0, 3.0);
        let y: Vec<usize> = (0..rows).map(|i| (i * 7) % k).collect();
        for kind in [LossKind::Ce, LossKind::Dlr] {
            let (lc, gc) = loss_and_grad(kind.into(), z.view(), &y);
            let (lg, gg) =
                diffnmf::attack::apgd::cuda::loss_and_grad(&be, kind, z.view(), &y).unwrap();
            assert_close(
                "loss",
                lg.insert_axis(ndarray::Axis(1)).view(),
                lc.insert_axis(ndarray::Axis(1)).view(),
                1e-5,
                1e-4,
            );
            assert_close("dloss", gg.view(), gc.view(), 1e-5, 1e-4);
        }
    }
}

fn defence(
    d: usize,
    act: Activation,
    hidden: usize,
) -> (Mlp<f32>, Mlp<f32>, Schedule, Array2<f32>) {
    let mut rng = stream(11, &[d as u64, hidden as u64]);
    let den = Mlp::<f32>::new(&[d + 8, hidden, hidden, d], act, &mut rng);
    let clf = Mlp::<f32>::new(&[d, 33, 10], Activation::Relu, &mut rng);
    (
        den,
        clf,
        Schedule::linear(20, 1e-4, 0.05),
        time_embedding::<f32>(20, 8),
    )
}

#[test]
fn denoiser_chain_and_gradient_match_cpu_with_injected_noise() {
    let Some(be) = gpu() else { return };
    // hidden 31 → weights in shared memory; hidden 257 → weights streamed from global.
    for &(rows, d, hidden, act, t_star) in &[
        (1, 31, 31, Activation::Silu, 3),
        (33, 33, 257, Activation::Silu, 5),
        (257, 31, 64, Activation::Relu, 4),
    ] {
        let (den, clf, sched, emb) = defence(d, act, hidden);
        for predict in [Prediction::Noise, Prediction::X0] {
            let cpu = FastDefended::new(&den, &clf, &sched, &emb, t_star, predict);
            let gpu = diffnmf::diffusion::cuda::CudaDefended::new(
                &be, &den, &clf, &sched, &emb, t_star, predict,
            )
            .unwrap();
            let x0 = rand(rows, d, 12, -1.0, 1.0);
            let mut nz = vec![0f32; rows * cpu.noise_len()];
            fill_normal(&mut stream(13, &[rows as u64]), &mut nz);
            let noise = Array2::from_shape_vec((rows, cpu.noise_len()), nz).unwrap();
            let y: Vec<usize> = (0..rows).map(|i| i % 10).collect();
            let ids: Vec<u64> = (0..rows as u64).collect();
            for loss in [LossKind::Ce, LossKind::Dlr] {
                let c = cpu.chunk(x0.view(), noise.view(), &y, loss.into(), true);
                let g = gpu
                    .chunk(
                        x0.view(),
                        Some(noise.view()),
                        &ids,
                        1,
                        0,
                        &y,
                        loss.into(),
                        true,
                    )
                    .unwrap();
                assert_close("logits", g.logits.view(), c.logits.view(), 1e-4, 1e-3);
                assert_close(
                    "loss",
                    g.loss.insert_axis(ndarray::Axis(1)).view(),
                    c.loss.insert_axis(ndarray::Axis(1)).view(),
                    1e-4,
                    1e-3,
                );
                assert_close(
                    "input grad",
                    g.grad.unwrap().view(),
                    c.grad.unwrap().view(),
                    1e-4,
                    2e-3,
                );
            }
        }
    }
}

/// The CUDA defence as an attack model draws the CPU defence's noise (the default
/// `NoiseSource::Host`): the whole evaluation (draws, reduction, gradient) matches the CPU's.
#[test]
fn cuda_defence_evaluates_like_the_cpu_defence_with_the_same_noise() {
    use diffnmf::attack::AttackModel;
    use diffnmf::diffusion::model::Defended;
    let Some(be) = gpu() else { return };
    let (den, clf, sched, emb) = defence(31, Activation::Silu, 64);
    let cpu = Defended::new(&den, &clf, &sched, &emb, 4, Prediction::Noise);
    let gpu = diffnmf::diffusion::cuda::CudaDefended::new(
        &be,
        &den,
        &clf,
        &sched,
        &emb,
        4,
        Prediction::Noise,
    )
    .unwrap();
    let x = rand(45, 31, 15, -1.0, 1.0);
    let y: Vec<usize> = (0..45).map(|i| i % 10).collect();
    let ids: Vec<u64> = (200..245).collect();
    for (loss, draws) in [(LossKind::Ce, 1), (LossKind::Ce, 5), (LossKind::Dlr, 3)] {
        let c = cpu
            .evaluate(x.view(), &y, &ids, loss.into(), draws, 9, true)
            .unwrap();
        let g = gpu
            .evaluate(x.view(), &y, &ids, loss.into(), draws, 9, true)
            .unwrap();
        let what = format!("{loss:?}, {draws} draws");
        assert_close(&what, g.logits.view(), c.logits.view(), 1e-4, 1e-3);
        assert_close(
            &what,
            g.grad.unwrap().view(),
            c.grad.unwrap().view(),
            1e-4,
            2e-3,
        );
        let same = g.pred.iter().zip(&c.pred).filter(|(a, b)| a == b).count();
        assert!(same >= 44, "{what}: predictions agree on {same}/45");
    }
}

#[test]
fn philox_noise_is_keyed_by_id_and_draw_not_by_batch() {
    use diffnmf::attack::AttackModel;
    let Some(be) = gpu() else { return };
    let (den, clf, sched, emb) = defence(31, Activation::Silu, 64);
    let gpu = diffnmf::diffusion::cuda::CudaDefended::new(
        &be,
        &den,
        &clf,
        &sched,
        &emb,
        4,
        Prediction::Noise,
    )
    .unwrap()
    .with_noise(NoiseSource::Device);
    let x = rand(33, 31, 14, -1.0, 1.0);
    let y: Vec<usize> = (0..33).map(|i| i % 10).collect();
    let ids: Vec<u64> = (100..133).collect();
    let all = gpu
        .evaluate(x.view(), &y, &ids, LossKind::Ce.into(), 3, 7, true)
        .unwrap();
    let tail = gpu
        .evaluate(
            x.slice(ndarray::s![1.., ..]),
            &y[1..],
            &ids[1..],
            LossKind::Ce.into(),
            3,
            7,
            true,
        )
        .unwrap();
    assert_close(
        "batch independence",
        tail.logits.view(),
        all.logits.slice(ndarray::s![1.., ..]),
        0.0,
        0.0,
    );
    let other = gpu
        .evaluate(x.view(), &y, &ids, LossKind::Ce.into(), 3, 8, false)
        .unwrap();
    assert!(
        other.logits != all.logits,
        "a different key must give different noise"
    );
    assert!(all.grad.unwrap().iter().all(|v| v.is_finite()));
}

/// A host model that reports a device: APGD then keeps its state on that device
/// (`attack::apgd::cuda`) while the model itself still evaluates on the host, so the two
/// states can be compared on one model.
struct OnDevice<'a, M: ?Sized> {
    inner: &'a M,
    be: &'a CudaBackend,
}

impl<M: diffnmf::attack::AttackModel + ?Sized> diffnmf::attack::AttackModel for OnDevice<'_, M> {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn stochastic(&self) -> bool {
        self.inner.stochastic()
    }
    fn evaluate(
        &self,
        x: ndarray::ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: diffnmf::attack::Loss<'_>,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> diffnmf::Result<diffnmf::attack::ModelEval> {
        self.inner.evaluate(x, y, ids, loss, draws, key, want_grad)
    }
    fn device(&self) -> Option<&CudaBackend> {
        Some(self.be)
    }
}

/// On a stochastic model the device state confirms guessed successes by the host's rule
/// (same keys, same passes): fooled set, adversarial points and every counter agree.
#[test]
fn apgd_on_the_device_confirms_successes_like_the_host() {
    use diffnmf::diffusion::model::Defended;
    let Some(be) = gpu() else { return };
    let (den, clf, sched, emb) = defence(31, Activation::Silu, 64);
    let def = Defended::new(&den, &clf, &sched, &emb, 4, Prediction::Noise);
    let x = rand(40, 31, 16, -1.0, 1.0);
    let y: Vec<usize> = (0..40).map(|i| i % 10).collect();
    let ids: Vec<u64> = (300..340).collect();
    for loss in [LossKind::Ce, LossKind::Dlr] {
        let mut p = ApgdParams::rand_version(0.3, loss, 5);
        p.n_iter = 15;
        p.eot = 3;
        p.confirm = 4;
        let c = single_run(&def, x.view(), &y, &ids, &p, 0, None).unwrap();
        let on_device = OnDevice {
            inner: &def,
            be: &be,
        };
        let g = single_run(&on_device, x.view(), &y, &ids, &p, 0, None).unwrap();
        assert!(
            c.confirm_evals > 0,
            "{loss:?}: no success was ever confirmed"
        );
        assert_eq!(g.fooled, c.fooled, "{loss:?}: fooled");
        assert_eq!(
            (g.grad_evals, g.confirm_evals),
            (c.grad_evals, c.confirm_evals)
        );
        assert_close(
            "x_best_adv",
            g.x_best_adv.view(),
            c.x_best_adv.view(),
            1e-6,
            0.0,
        );
    }
}

#[test]
fn apgd_iterations_match_cpu_from_a_fixed_start() {
    let Some(be) = gpu() else { return };
    let mut rng = stream(15, &[]);
    let clf = Mlp::<f32>::new(&[33, 31, 10], Activation::Relu, &mut rng);
    let model = BaseModel { clf: &clf };
    for &(n, bounds) in &[(1usize, 0u8), (31, 1), (257, 2)] {
        let x = rand(n, 33, 16, 0.0, 1.0);
        let y: Vec<usize> = model
            .clf
            .forward(x.view())
            .rows()
            .into_iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .fold(0, |b, (j, &v)| if v > r[b] { j } else { b })
            })
            .collect();
        let ids: Vec<u64> = (0..n as u64).collect();
        let x0 = &x + &rand(n, 33, 17, -0.05, 0.05);
        let bounds = match bounds {
            0 => BoxConstraint::None,
            1 => BoxConstraint::Unit,
            _ => BoxConstraint::Range {
                lo: Array1::from_elem(33, 0.1),
                hi: Array1::from_elem(33, 0.9),
            },
        };
        for loss in [LossKind::Ce, LossKind::Dlr] {
            let p = ApgdParams {
                eps: 0.05,
                n_iter: 20,
                loss,
                eot: 1,
                restarts: 1,
                rho: 0.75,
                bounds: bounds.clone(),
                seed: 3,
                early_stop: true,
                confirm: 1,
            };
            let c = single_run(&model, x.view(), &y, &ids, &p, 0, Some(x0.view())).unwrap();
            let on_device = OnDevice {
                inner: &model,
                be: &be,
            };
            let g = single_run(&on_device, x.view(), &y, &ids, &p, 0, Some(x0.view())).unwrap();
            assert_eq!(g.fooled, c.fooled, "fooled (n={n}, {loss:?})");
            assert_close(
                "x_best_adv",
                g.x_best_adv.view(),
                c.x_best_adv.view(),
                1e-6,
                0.0,
            );
            assert_close("x_best", g.x_best.view(), c.x_best.view(), 1e-6, 0.0);
            assert_eq!(g.grad_evals, c.grad_evals);
        }
    }
}

#[test]
fn cnn_pieces_match_cpu() {
    let Some(be) = gpu() else { return };
    for s in [
        Nhwc {
            n: 1,
            h: 1,
            w: 1,
            c: 1,
        },
        Nhwc {
            n: 2,
            h: 5,
            w: 7,
            c: 3,
        },
        Nhwc {
            n: 3,
            h: 8,
            w: 6,
            c: 33,
        },
    ] {
        let x: Vec<f32> = rand(1, s.len(), 18, -1.0, 1.0).into_raw_vec_and_offset().0;
        let want = im2col3(&x, s);
        assert_close(
            "im2col3",
            diffnmf::nn::cuda::im2col3(&be, &x, s).unwrap().view(),
            want.view(),
            0.0,
            0.0,
        );
        let (po, pa) = maxpool2(&x, s);
        let (go, ga) = diffnmf::nn::cuda::maxpool2(&be, &x, s).unwrap();
        assert_eq!((go, ga), (po, pa), "maxpool2 {s:?}");
        let rows = s.n * s.h * s.w;
        let xm = Array2::from_shape_vec((rows, s.c), x.clone()).unwrap();
        let gamma = Array1::from_elem(s.c, 1.3f32);
        let beta = Array1::from_elem(s.c, 0.1f32);
        let (want, cache) = bn_relu_forward(xm.view(), &gamma, &beta, None);
        let (got, m, v) = diffnmf::nn::cuda::bn_relu(&be, xm.view(), &gamma, &beta, None).unwrap();
        assert_close("bn_relu", got.view(), want.view(), 1e-4, 1e-4);
        assert_close(
            "bn mean",
            m.insert_axis(ndarray::Axis(0)).view(),
            cache.mean.insert_axis(ndarray::Axis(0)).view(),
            1e-5,
            1e-4,
        );
        assert_close(
            "bn var",
            v.insert_axis(ndarray::Axis(0)).view(),
            cache.var.insert_axis(ndarray::Axis(0)).view(),
            1e-5,
            1e-4,
        );
    }
}

#[test]
fn missing_driver_is_a_typed_error_not_a_panic() {
    // Runs everywhere: with no driver the constructor returns NoDriver; with one it works.
    match CudaBackend::new(0) {
        Ok(be) => assert!(!be.name().is_empty()),
        Err(e) => assert!(e.to_string().contains("no CUDA driver"), "{e}"),
    }
    let e: diffnmf::Error = cu::CudaError::NoDriver.into();
    assert!(e.to_string().starts_with("cuda: "));
}
