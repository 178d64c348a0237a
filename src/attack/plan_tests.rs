//! Protocol-level tests of the cascade: confirmation of noisy successes, candidates for
//! unfooled points, APGD-T against the closed-form optimum of a linear model.

use super::*;
use crate::attack::apgd::tests_models::{blobs, ids, Toy};
use crate::attack::{BoxConstraint, ModelEval};
use ndarray::Array1;

fn params(eps: f32, n_iter: usize, eot: usize, confirm: usize) -> ApgdParams {
    ApgdParams {
        eps,
        n_iter,
        loss: LossKind::Ce,
        eot,
        restarts: 1,
        rho: 0.75,
        bounds: BoxConstraint::None,
        seed: 5,
        early_stop: true,
        confirm,
    }
}

/// A "stochastic" model whose prediction is wrong whenever it is evaluated with exactly
/// `lie_draws` draws (the attack's own EOT evaluations) and honest otherwise (an
/// independent confirmation with another number of passes): every in-attack success is a
/// noisy guess that flips back.
struct Liar {
    inner: Toy,
    lie_draws: usize,
}

impl AttackModel for Liar {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn stochastic(&self) -> bool {
        true
    }
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: Loss<'_>,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> crate::Result<ModelEval> {
        Ok({
            let mut ev = self.inner.evaluate(x, y, ids, loss, 1, key, want_grad)?;
            if draws == self.lie_draws {
                let k = self.num_classes();
                ev.pred = y.iter().map(|&c| (c + 1) % k).collect();
            }
            ev
        })
    }
}

#[test]
fn noisy_success_that_flips_back_is_not_counted() {
    let (x, y, toy) = blobs(4, 6, 40, 3);
    let clean = toy.predict(x.view());
    let keep: Vec<usize> = (0..40).filter(|&i| clean[i] == y[i]).collect();
    let x = x.select(Axis(0), &keep);
    let y: Vec<usize> = keep.iter().map(|&i| y[i]).collect();
    let id = ids(y.len());
    let eps = 0.01; // far too small to really fool the linear model
    let liar = Liar {
        inner: toy,
        lie_draws: 3,
    };
    let steps = [Step::Apgd(LossKind::Ce), Step::Apgd(LossKind::Dlr)];
    // Confirmation with 5 independent passes: no success survives it.
    let o = run_plan(&liar, x.view(), &y, &id, &steps, &params(eps, 10, 3, 5)).unwrap();
    assert!(o.fooled.iter().all(|&f| !f), "noisy successes were counted");
    // ... so the later attack (DLR) still runs on every point, and each step returns a
    // candidate per point inside the ball that is not the clean input.
    assert_eq!(o.steps.len(), 2);
    for s in &o.steps {
        assert_eq!(
            s.rows.len(),
            y.len(),
            "{} did not attack every point",
            s.name
        );
        for (j, &i) in s.rows.iter().enumerate() {
            let d = (&s.adv.row(j) - &x.row(i)).mapv(f32::abs);
            assert!(d.iter().all(|&v| v <= eps + 1e-6));
            assert!(d.iter().any(|&v| v > 0.0), "candidate is the clean point");
        }
    }
    // Control: trusting the attack's own draws (confirmation with the same lying count)
    // counts every point broken at once — the bug this guards against.
    let o = run_plan(&liar, x.view(), &y, &id, &steps, &params(eps, 10, 3, 3)).unwrap();
    assert!(o.fooled.iter().all(|&f| f));
}

#[test]
fn unfooled_points_get_their_highest_loss_iterate() {
    let (x, y, toy) = blobs(4, 6, 40, 9);
    let id = ids(40);
    let eps = 0.005;
    let p = params(eps, 20, 1, 1);
    let o = run_plan(&toy, x.view(), &y, &id, &[Step::Apgd(LossKind::Ce)], &p).unwrap();
    let s = &o.steps[0];
    let mut checked = 0;
    for (j, &i) in s.rows.iter().enumerate() {
        if s.fooled[j] {
            continue;
        }
        checked += 1;
        // For a linear model CE is maximised at a vertex of the ball; the candidate must
        // have a higher loss than the clean point and than any other random feasible point.
        let ce = |v: ndarray::ArrayView1<f32>| {
            let a = v.to_owned().insert_axis(Axis(0));
            toy.evaluate(a.view(), &y[i..=i], &id[i..=i], Loss::Ce, 1, 0, false)
                .unwrap()
                .loss[0]
        };
        let lc = ce(s.adv.row(j));
        assert!(
            lc > ce(x.row(i)),
            "candidate of {i} is not better than clean"
        );
        for sgn in [1.0f32, -1.0] {
            let v = &x.row(i) + &Array1::from_elem(6, sgn * eps);
            assert!(lc >= ce(v.view()) - 1e-6);
        }
    }
    assert!(checked > 20, "{checked} robust points");
}

/// Max over the L∞ ball of `z_t − z_y` for `z = W v + b` (closed form).
fn best_margin(toy: &Toy, x: ndarray::ArrayView1<f32>, y: usize, t: usize, eps: f32) -> f32 {
    let w = &toy.w;
    let dw = &w.row(t) - &w.row(y);
    dw.dot(&x) + toy.b[t] - toy.b[y] + eps * dw.mapv(f32::abs).sum()
}

#[test]
fn apgd_t_reaches_the_linear_optimum() {
    let (x, y, toy) = blobs(5, 8, 80, 4);
    let id = ids(80);
    // ε = the median over points of the smallest budget that makes some target reachable,
    // so about half of the points can be fooled and half cannot.
    let mut need: Vec<f32> = (0..80)
        .map(|i| {
            (0..5)
                .filter(|&t| t != y[i])
                .map(|t| {
                    let m0 = best_margin(&toy, x.row(i), y[i], t, 0.0);
                    let l1 = (&toy.w.row(t) - &toy.w.row(y[i])).mapv(f32::abs).sum();
                    (-m0 / l1).max(0.0)
                })
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    need.sort_by(f32::total_cmp);
    let eps = need[40];
    let p = params(eps, 40, 1, 1);
    let o = run_plan(&toy, x.view(), &y, &id, &[Step::Targeted { n: 4 }], &p).unwrap();
    assert_eq!(o.steps.len(), 4, "one run per target");
    let clean = toy.predict(x.view());
    let (mut reach, mut unreach) = (0, 0);
    for i in 0..80 {
        if clean[i] != y[i] {
            continue;
        }
        let best = (0..5)
            .filter(|&t| t != y[i])
            .map(|t| best_margin(&toy, x.row(i), y[i], t, eps))
            .fold(f32::NEG_INFINITY, f32::max);
        if best > 0.02 {
            reach += 1;
            assert!(
                o.fooled[i],
                "point {i}: optimum margin {best} > 0 but not fooled"
            );
        } else if best < -0.02 {
            unreach += 1;
            assert!(!o.fooled[i], "point {i} fooled beyond the optimum");
        }
    }
    assert!(reach > 5 && unreach > 5, "reach {reach}, unreach {unreach}");
}

/// A model that fails (like a CUDA device error) on its `fail_at`-th evaluation.
struct Failing {
    inner: Toy,
    calls: std::sync::atomic::AtomicUsize,
    fail_at: usize,
}

impl AttackModel for Failing {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn stochastic(&self) -> bool {
        true
    }
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: Loss<'_>,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> crate::Result<ModelEval> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n + 1 == self.fail_at {
            return Err(crate::Error::Cuda(format!("device lost at call {}", n + 1)));
        }
        self.inner.evaluate(x, y, ids, loss, draws, key, want_grad)
    }
}

#[test]
fn a_model_failure_ends_every_attack_with_that_error() {
    let (x, y, _) = blobs(4, 6, 12, 3);
    let id = ids(12);
    let p = params(0.3, 10, 2, 3);
    let sq = SquareParams {
        eps: 0.3,
        n_queries: 20,
        p_init: 0.8,
        eot: 2,
        confirm: 3,
        bounds: BoxConstraint::None,
        seed: 1,
    };
    let plans: [&[Step<'_>]; 3] = [
        &[Step::Apgd(LossKind::Ce)],
        &[Step::Targeted { n: 2 }],
        &[Step::Square(sq)],
    ];
    for steps in plans {
        for fail_at in [1, 2, 5] {
            let m = Failing {
                inner: blobs(4, 6, 12, 3).2,
                calls: Default::default(),
                fail_at,
            };
            let e = run_plan(&m, x.view(), &y, &id, steps, &p)
                .err()
                .unwrap_or_else(|| panic!("{:?}: call {fail_at} failed silently", steps[0]));
            assert!(
                e.to_string()
                    .contains(&format!("device lost at call {fail_at}")),
                "{e}"
            );
        }
    }
}

#[test]
fn invalid_attack_settings_are_errors_naming_the_key() {
    let (x, y, toy) = blobs(4, 6, 8, 2);
    let id = ids(8);
    // DLR on a 2-class model (folder data with two classes).
    let (x2, y2, toy2) = blobs(2, 6, 8, 2);
    let e = run_plan(
        &toy2,
        x2.view(),
        &y2,
        &id,
        &[Step::Apgd(LossKind::Dlr)],
        &params(0.1, 5, 1, 1),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("attack.loss") && e.contains("≥ 3 classes"),
        "{e}"
    );
    // APGD-T on fewer than 4 classes.
    let (x3, y3, toy3) = blobs(3, 6, 8, 2);
    let e = run_plan(
        &toy3,
        x3.view(),
        &y3,
        &id,
        &[Step::Targeted { n: 2 }],
        &params(0.1, 5, 1, 1),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("attack.version") && e.contains("4 classes"),
        "{e}"
    );
    // No iterations.
    let e = run_plan(
        &toy,
        x.view(),
        &y,
        &id,
        &[Step::Apgd(LossKind::Ce)],
        &params(0.1, 0, 1, 1),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("attack.n_iter"), "{e}");
}
