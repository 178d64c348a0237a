//! Finite-difference gradient checks for the tests (f64, central differences, PyTorch
//! gradcheck tolerances). Failures name the worst element.

use crate::rng::{fill_normal, Rng};

pub const EPS: f64 = 1e-6;
pub const ATOL: f64 = 1e-5;
pub const RTOL: f64 = 1e-3;

/// Check every element of `analytic` against central differences of `f` around `x`.
pub fn check_elementwise(name: &str, f: impl Fn(&[f64]) -> f64, x: &[f64], analytic: &[f64]) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let mut xp = x.to_vec();
    let mut worst: Option<(usize, f64, f64, f64)> = None; // (index, numeric, analytic, excess)
    for i in 0..x.len() {
        xp[i] = x[i] + EPS;
        let lp = f(&xp);
        xp[i] = x[i] - EPS;
        let lm = f(&xp);
        xp[i] = x[i];
        let num = (lp - lm) / (2.0 * EPS);
        let excess = (num - analytic[i]).abs() - (ATOL + RTOL * num.abs());
        if worst.is_none_or(|w| excess > w.3) {
            worst = Some((i, num, analytic[i], excess));
        }
    }
    if let Some((i, num, ana, excess)) = worst {
        assert!(
            excess <= 0.0,
            "{name}: gradient mismatch at element {i}: numeric {num:.8e}, analytic {ana:.8e}"
        );
    }
}

/// Directional check: `⟨∇L, v⟩ ≈ (L(θ+εv) − L(θ−εv))/2ε` for `trials` random unit directions.
pub fn check_directional(
    name: &str,
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    rng: &mut Rng,
    trials: usize,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    let mut v = vec![0.0; x.len()];
    for t in 0..trials {
        fill_normal(rng, &mut v);
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= norm);
        let shifted = |s: f64| -> Vec<f64> { x.iter().zip(&v).map(|(a, b)| a + s * b).collect() };
        let num = (f(&shifted(EPS)) - f(&shifted(-EPS))) / (2.0 * EPS);
        let ana: f64 = analytic.iter().zip(&v).map(|(a, b)| a * b).sum();
        assert!(
            (num - ana).abs() <= ATOL + RTOL * num.abs(),
            "{name}: directional derivative mismatch in trial {t}: numeric {num:.8e}, analytic {ana:.8e}"
        );
    }
}

/// Random values away from zero: uniform magnitude in `[lo, hi]` with random sign.
pub fn away_from_zero(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
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
