//! APGD tests (`docs/apgd.md` §13 list and more) on the toy models of `tests_models`.
#![allow(clippy::needless_range_loop)]

use super::tests_models::{blobs, ids, naive, normal, two_layer, Recorder, Toy};
use super::*;

use ndarray::{s, Array1, Array2};
use std::sync::Mutex;

fn params(eps: f32, loss: LossKind, n_iter: usize) -> ApgdParams {
    ApgdParams {
        eps,
        n_iter,
        loss,
        eot: 1,
        restarts: 1,
        rho: 0.75,
        bounds: BoxConstraint::None,
        seed: 11,
        early_stop: true,
        confirm: 4,
    }
}

fn robust(out: &[bool]) -> usize {
    out.iter().filter(|f| !**f).count()
}

#[test]
fn matches_naive_reference_loop() {
    let (x, y, m) = two_layer(5, 6, 16, 40);
    let n = x.nrows();
    for (loss, eps) in [
        (LossKind::Ce, 0.15),
        (LossKind::Dlr, 0.15),
        (LossKind::Ce, 0.02),
    ] {
        let p = params(eps, loss, 30);
        let x0 = &x + &(normal(5, x.dim(), 1.0).mapv(|v| v.signum() * eps));
        let out = single_run(&m, x.view(), &y, &ids(n), &p, 0, Some(x0.view())).unwrap();
        let mut n_fooled = 0;
        for i in 0..n {
            let xi = x.row(i).to_vec();
            let (adv, xb, lb) = naive(&m, &xi, y[i], &x0.row(i).to_vec(), &p);
            assert_eq!(out.fooled[i], adv.is_some(), "{loss:?} row {i}");
            if let Some(a) = adv {
                n_fooled += 1;
                assert_eq!(out.x_best_adv.row(i).to_vec(), a, "row {i}");
            }
            assert_eq!(out.x_best.row(i).to_vec(), xb, "{loss:?} row {i}");
            assert_eq!(out.l_best[i], lb, "{loss:?} row {i}");
        }
        // The comparison covers both fooled and never-fooled rows.
        if eps > 0.1 {
            assert!(
                n_fooled > 0 && n_fooled < n,
                "{loss:?}: {n_fooled}/{n} fooled"
            );
        }
    }
}

#[test]
fn linear_model_reaches_the_box_corner() {
    // True class 0; w_j − w_0 has the sign pattern s for every j, so the CE gradient has
    // sign s everywhere and the loss maximum over ball ∩ [0,1] is the corner x + ε s
    // (clipped to the box).
    let d = 6;
    let s: Vec<f32> = (0..d)
        .map(|j| if j % 3 == 0 { -1.0 } else { 1.0 })
        .collect();
    let sv = Array1::from(s.clone());
    let mut w = Array2::zeros((3, d));
    w.row_mut(0).assign(&(-&sv));
    w.row_mut(1).assign(&(&sv * 0.8));
    w.row_mut(2).assign(&(&sv * 0.5));
    let x = Array2::from_shape_vec((1, d), vec![0.5, 0.02, 0.4, 0.97, 0.6, 0.5]).unwrap();
    let eps = 0.1f32;
    let corner: Vec<f32> = (0..d)
        .map(|j| (x[[0, j]] + eps * s[j]).clamp(0.0, 1.0))
        .collect();
    let mut p = params(eps, LossKind::Ce, 20);
    p.bounds = BoxConstraint::Unit;

    // Unfoolable (bias 5 > any reachable logit gap, small enough that f32 still resolves
    // the loss): the best point must be the corner.
    let m = Toy::linear(w.clone(), Array1::from(vec![5.0, 0.0, 0.0]));
    let out = single_run(&m, x.view(), &[0], &[3], &p, 0, None).unwrap();
    assert!(!out.fooled[0]);
    for j in 0..d {
        assert!(
            (out.x_best[[0, j]] - corner[j]).abs() < 1e-6,
            "dim {j}: {} vs {}",
            out.x_best[[0, j]],
            corner[j]
        );
    }

    // Fooled only within a sliver of the corner: bias so that the margin is −0.01 there.
    let c = Array2::from_shape_vec((1, d), corner.clone()).unwrap();
    let z = c.dot(&w.t());
    let b0 = z[[0, 1]].max(z[[0, 2]]) - z[[0, 0]] - 0.01;
    let m = Toy::linear(w, Array1::from(vec![b0, 0.0, 0.0]));
    assert_eq!(m.predict(x.view()), vec![0], "clean point is correct");
    let out = apgd(&m, x.view(), &[0], &[3], &p).unwrap();
    assert!(out.fooled[0], "APGD-CE must reach the corner region");
    assert_eq!(m.predict(out.adv.view()), vec![1]);
}

fn check_feasible(
    x: &Array2<f32>,
    ids: &[u64],
    pts: &[(u64, Vec<f32>)],
    eps: f32,
    b: &BoxConstraint,
) {
    for (id, v) in pts {
        let i = ids.iter().position(|q| q == id).unwrap();
        for (j, &vj) in v.iter().enumerate() {
            let xj = x[[i, j]];
            assert!(
                (vj - xj).abs() <= eps + 1e-7,
                "outside the ball: {vj} vs {xj}"
            );
            let (lo, hi) = match b {
                BoxConstraint::None => (f32::NEG_INFINITY, f32::INFINITY),
                BoxConstraint::Unit => (0.0, 1.0),
                BoxConstraint::Range { lo, hi } => (lo[j].min(xj), hi[j].max(xj)),
            };
            assert!(
                vj >= lo && vj <= hi,
                "outside the box: {vj} not in [{lo}, {hi}]"
            );
        }
    }
}

#[test]
fn iterates_stay_in_ball_and_box() {
    let (mut x, y, m) = blobs(4, 8, 40, 3);
    // Range: the per-dimension range of all but the last point, which lies outside it.
    let lo = x
        .slice(s![..-1, ..])
        .fold_axis(ndarray::Axis(0), f32::INFINITY, |a, &b| a.min(b));
    let hi = x
        .slice(s![..-1, ..])
        .fold_axis(ndarray::Axis(0), f32::NEG_INFINITY, |a, &b| a.max(b));
    x.row_mut(39).assign(&(&hi + 0.05).mapv(|v| v.min(1.0)));
    let id = ids(x.nrows());
    for b in [
        BoxConstraint::None,
        BoxConstraint::Unit,
        BoxConstraint::Range { lo, hi },
    ] {
        for loss in [LossKind::Ce, LossKind::Dlr] {
            let rec = Recorder {
                inner: &m,
                seen: Mutex::new(vec![]),
            };
            let mut p = params(0.2, loss, 25);
            p.bounds = b.clone();
            p.restarts = 2;
            let out = apgd(&rec, x.view(), &y, &id, &p).unwrap();
            let seen = rec.seen.into_inner().unwrap();
            assert!(seen.len() > x.nrows() * 5, "the attack ran");
            check_feasible(&x, &id, &seen, p.eps, &b);
            let adv: Vec<(u64, Vec<f32>)> = id
                .iter()
                .zip(out.adv.rows())
                .map(|(&i, r)| (i, r.to_vec()))
                .collect();
            check_feasible(&x, &id, &adv, p.eps, &b);
        }
    }
}

#[test]
fn zero_and_tiny_eps_keep_clean_accuracy() {
    let (x, mut y, m) = blobs(4, 8, 60, 5);
    y[3] = (y[3] + 1) % 4;
    y[10] = (y[10] + 2) % 4;
    let clean_wrong: Vec<bool> = m
        .predict(x.view())
        .iter()
        .zip(&y)
        .map(|(a, b)| a != b)
        .collect();
    let n_correct = robust(&clean_wrong);
    assert!(
        n_correct > 40 && n_correct <= 58,
        "blobs should be mostly separable ({n_correct})"
    );
    let out = apgd(&m, x.view(), &y, &ids(60), &params(0.0, LossKind::Ce, 20)).unwrap();
    assert_eq!(out.adv, x);
    assert_eq!(out.fooled, clean_wrong);
    assert_eq!(out.grad_evals, 0);
    let out = apgd(&m, x.view(), &y, &ids(60), &params(1e-6, LossKind::Dlr, 20)).unwrap();
    assert_eq!(out.fooled, clean_wrong);
    assert!(out.grad_evals > 0);
}

#[test]
fn large_eps_breaks_undefended_models() {
    let (x, y, m) = blobs(4, 8, 60, 7);
    let (x2, y2, m2) = two_layer(5, 6, 16, 60);
    for loss in [LossKind::Ce, LossKind::Dlr] {
        let out = apgd(&m, x.view(), &y, &ids(60), &params(0.6, loss, 50)).unwrap();
        assert!(
            robust(&out.fooled) <= 1,
            "linear {loss:?}: {} robust",
            robust(&out.fooled)
        );
        let out = apgd(&m2, x2.view(), &y2, &ids(60), &params(3.0, loss, 50)).unwrap();
        assert!(
            robust(&out.fooled) <= 1,
            "2-layer {loss:?}: {} robust",
            robust(&out.fooled)
        );
        for (i, f) in out.fooled.iter().enumerate() {
            if *f {
                assert_ne!(m2.predict(out.adv.slice(s![i..i + 1, ..])), vec![y2[i]]);
            }
        }
    }
    // Robust accuracy is non-increasing in ε on this model.
    let mut last = usize::MAX;
    for eps in [0.0, 0.05, 0.1, 0.2, 0.4] {
        let r = robust(
            &apgd(&m, x.view(), &y, &ids(60), &params(eps, LossKind::Ce, 30))
                .unwrap()
                .fooled,
        );
        assert!(r <= last, "eps {eps}: {r} > {last}");
        last = r;
    }
}

fn noisy() -> (Array2<f32>, Vec<usize>, Toy) {
    let (x, y, mut m) = blobs(4, 8, 48, 9);
    m.sigma = 0.15;
    (x, y, m)
}

#[test]
fn deterministic_and_batch_and_thread_independent() {
    let (x, y, m) = noisy();
    let id = ids(x.nrows());
    let mut p = params(0.1, LossKind::Ce, 20);
    p.eot = 4;
    p.restarts = 2;
    let full = attack_suite(&m, x.view(), &y, &id, &[LossKind::Ce, LossKind::Dlr], &p).unwrap();
    let again = attack_suite(&m, x.view(), &y, &id, &[LossKind::Ce, LossKind::Dlr], &p).unwrap();
    assert_eq!(full.adv, again.adv);
    assert_eq!(full.fooled_by, again.fooled_by);
    let n_f = full.fooled.iter().filter(|f| **f).count();
    assert!(
        n_f > 5 && n_f < x.nrows(),
        "a mix of fooled and robust points ({n_f})"
    );
    // A subset, in another order, on one thread.
    let sub: Vec<usize> = (0..x.nrows()).rev().filter(|i| i % 3 != 1).collect();
    let xs = x.select(ndarray::Axis(0), &sub);
    let ys: Vec<usize> = sub.iter().map(|&i| y[i]).collect();
    let is: Vec<u64> = sub.iter().map(|&i| id[i]).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let part = pool.install(|| {
        attack_suite(&m, xs.view(), &ys, &is, &[LossKind::Ce, LossKind::Dlr], &p).unwrap()
    });
    for (j, &i) in sub.iter().enumerate() {
        assert_eq!(part.adv.row(j), full.adv.row(i), "row {i}");
        assert_eq!(part.fooled_by[j], full.fooled_by[i]);
        assert_eq!(part.clean_correct[j], full.clean_correct[i]);
    }
    // Another seed gives other start points.
    p.seed += 1;
    let other = attack_suite(&m, x.view(), &y, &id, &[LossKind::Ce], &p).unwrap();
    assert_ne!(other.adv, full.adv);
}

#[test]
fn grad_evals_count_rows_times_draws() {
    let (x, y, mut m) = noisy();
    // ε tiny on clean-correct points: none changes class, every row runs all iterations
    // of both restarts.
    let correct: Vec<usize> = (0..x.nrows())
        .filter(|&i| m.predict(x.slice(s![i..i + 1, ..]))[0] == y[i])
        .collect();
    let xs = x.select(ndarray::Axis(0), &correct);
    let ys: Vec<usize> = correct.iter().map(|&i| y[i]).collect();
    m.sigma = 1e-4;
    let mut p = params(1e-5, LossKind::Ce, 10);
    p.eot = 3;
    p.restarts = 2;
    let out = apgd(&m, xs.view(), &ys, &ids(xs.nrows()), &p).unwrap();
    assert!(out.fooled.iter().all(|f| !f));
    assert_eq!(out.grad_evals, (xs.nrows() * 3 * 11 * 2) as u64);
}

#[test]
fn confirmation_passes_decide_noisy_successes() {
    // Heavy noise: single draws are often wrong, the 64-pass average rarely. On a
    // stochastic model there is no clean-check shortcut; an in-attack success only counts
    // once an independent evaluation with `confirm` passes agrees.
    let (x, y, mut m) = noisy();
    m.sigma = 0.6;
    let mut p = params(1e-4, LossKind::Ce, 3);
    p.confirm = 1;
    let one = apgd(&m, x.view(), &y, &ids(48), &p).unwrap();
    assert!(one.fooled.iter().any(|&f| f));
    p.confirm = 64;
    let avg = apgd(&m, x.view(), &y, &ids(48), &p).unwrap();
    let (f1, f64_) = (48 - robust(&one.fooled), 48 - robust(&avg.fooled));
    assert!(
        f64_ + 5 < f1,
        "confirmed with 64 passes: {f64_} fooled; with one pass: {f1}"
    );
}

#[test]
fn injected_start_is_used() {
    let (x, y, m) = blobs(4, 8, 20, 13);
    // Start every point at the mean of the next class: already fooled there.
    let x0 = Array2::from_shape_fn(x.dim(), |(i, j)| m.w[[(y[i] + 1) % 4, j]]);
    let mut p = params(10.0, LossKind::Dlr, 20);
    p.eot = 2;
    let correct = robust(
        &apgd(&m, x.view(), &y, &ids(20), &params(0.0, LossKind::Ce, 1))
            .unwrap()
            .fooled,
    );
    let out = apgd_with_init(&m, x.view(), &y, &ids(20), &p, x0.view()).unwrap();
    assert_eq!(
        out.grad_evals,
        (correct * 2) as u64,
        "only the start point is evaluated"
    );
    for i in 0..20 {
        assert!(out.fooled[i]);
        if m.predict(x.slice(s![i..i + 1, ..]))[0] == y[i] {
            assert_eq!(out.adv.row(i), x0.row(i));
        } else {
            assert_eq!(out.adv.row(i), x.row(i), "clean errors are not attacked");
        }
    }
}

#[test]
fn suite_is_a_cascade() {
    let (x, y, m) = two_layer(5, 6, 16, 60);
    let mut yb = y.clone();
    yb[0] = (y[0] + 1) % 5; // a clean error
    let p = params(0.25, LossKind::Dlr, 30);
    let id = ids(60);
    let suite = attack_suite(&m, x.view(), &yb, &id, &[LossKind::Ce, LossKind::Dlr], &p).unwrap();
    // The cascade's first step alone (same keys): its CE candidates.
    let ce = crate::attack::plan::run_plan(
        &m,
        x.view(),
        &yb,
        &id,
        &[crate::attack::plan::Step::Apgd(LossKind::Ce)],
        &p,
    )
    .unwrap();
    let ce_adv = {
        let mut a = x.to_owned();
        for (j, &i) in ce.steps[0].rows.iter().enumerate() {
            a.row_mut(i).assign(&ce.steps[0].adv.row(j));
        }
        a
    };
    assert!(suite.fooled[0] && suite.fooled_by[0].is_none() && !suite.clean_correct[0]);
    assert_eq!(suite.adv.row(0), x.row(0));
    let mut n_dlr = 0;
    for i in 0..60 {
        match suite.fooled_by[i] {
            Some(LossKind::Ce) => assert_eq!(suite.adv.row(i), ce_adv.row(i)),
            Some(LossKind::Dlr) => {
                n_dlr += 1;
                assert!(!ce.fooled[i], "DLR only attacks CE survivors");
            }
            None => assert!(i == 0 || !suite.fooled[i]),
        }
        assert_eq!(suite.fooled[i], suite.fooled_by[i].is_some() || i == 0);
    }
    assert!(suite.grad_evals > ce.evals || n_dlr == 0 && robust(&ce.fooled) == 0);
    assert!(robust(&suite.fooled) <= robust(&ce.fooled));
}

#[test]
fn dlr_needs_three_classes() {
    let m = Toy::linear(Array2::zeros((2, 3)), Array1::zeros(2));
    let p = params(0.1, LossKind::Dlr, 10);
    assert!(p.validate(2, 3).is_err());
    assert!(params(0.1, LossKind::Ce, 10).validate(2, 3).is_ok());
    let r = std::panic::catch_unwind(|| {
        apgd(&m, Array2::zeros((1, 3)).view(), &[0], &[0], &p).unwrap()
    });
    assert!(r.is_err());
    let mut q = params(0.1, LossKind::Ce, 10);
    q.bounds = BoxConstraint::Range {
        lo: Array1::zeros(2),
        hi: Array1::ones(2),
    };
    assert!(q.validate(3, 3).is_err());
}

#[test]
fn without_early_stop_same_outcome_and_latest_fooling_iterate() {
    let (x, y, m) = two_layer(5, 6, 16, 60);
    let stop = apgd(&m, x.view(), &y, &ids(60), &params(0.8, LossKind::Ce, 30)).unwrap();
    let mut p = params(0.8, LossKind::Ce, 30);
    p.early_stop = false;
    let full = apgd(&m, x.view(), &y, &ids(60), &p).unwrap();
    assert_eq!(
        stop.fooled, full.fooled,
        "early stopping changed who is fooled"
    );
    assert!(full.grad_evals > stop.grad_evals);
    let mut moved = 0;
    for i in 0..60 {
        let row = full.adv.slice(s![i..i + 1, ..]);
        if full.fooled[i] {
            assert_ne!(m.predict(row), vec![y[i]]);
            moved += (full.adv.row(i) != stop.adv.row(i)) as usize;
        }
        for j in 0..x.ncols() {
            assert!((full.adv[[i, j]] - x[[i, j]]).abs() <= 0.8 + 1e-6);
        }
    }
    assert!(
        moved > 0,
        "the latest fooling iterate should differ from the first for some points"
    );
}
