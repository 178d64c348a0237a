// Shared by the unit tests (`#[cfg(test)] mod testutil` in lib.rs) and the integration
// tests (`#[path = "../src/testutil.rs"] mod testutil;`): keep it free of `crate::` paths;
// it may use only `std` and `ndarray`.

//! Test helpers used across the crate's tests: closeness of arrays ([`assert_close`],
//! [`max_abs_diff`]) and finite-difference gradient checks in f64 ([`check_elementwise`],
//! [`check_directional`]; central differences, PyTorch gradcheck tolerances by default).
//! Failures name the worst element.

#![allow(dead_code)]

use ndarray::{ArrayView, Dimension};

/// Finite-difference step.
pub const EPS: f64 = 1e-6;

/// `|numeric − analytic| ≤ atol + rtol·|numeric|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}

/// PyTorch gradcheck's tolerances.
pub const GRADCHECK: Tol = Tol {
    atol: 1e-5,
    rtol: 1e-3,
};

/// Largest `|a − b|` over all elements (shapes must agree).
pub fn max_abs_diff<D: Dimension>(a: ArrayView<f32, D>, b: ArrayView<f32, D>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "max_abs_diff: shapes");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Panics at the first element outside `atol + rtol·|b|` (`b` is the reference).
pub fn assert_close<D: Dimension>(
    what: &str,
    a: ArrayView<f32, D>,
    b: ArrayView<f32, D>,
    atol: f32,
    rtol: f32,
) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    for ((idx, &x), &y) in a.indexed_iter().zip(b.iter()) {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "{what}: at {idx:?} got {x} vs reference {y}"
        );
    }
}

/// Check every element of `analytic` against central differences of `f` around `x`
/// ([`GRADCHECK`] tolerances).
pub fn check_elementwise(name: &str, f: impl Fn(&[f64]) -> f64, x: &[f64], analytic: &[f64]) {
    check_elementwise_tol(name, f, x, analytic, GRADCHECK)
}

/// [`check_elementwise`] with explicit tolerances.
pub fn check_elementwise_tol(
    name: &str,
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    tol: Tol,
) {
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
        let excess = (num - analytic[i]).abs() - (tol.atol + tol.rtol * num.abs());
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

/// Directional check: `⟨∇L, v⟩ ≈ (L(θ+εv) − L(θ−εv))/2ε` for `trials` random unit
/// directions, each drawn coordinate by coordinate from `normal` (a standard normal source).
pub fn check_directional(
    name: &str,
    f: impl Fn(&[f64]) -> f64,
    x: &[f64],
    analytic: &[f64],
    mut normal: impl FnMut() -> f64,
    trials: usize,
) {
    assert_eq!(x.len(), analytic.len(), "{name}: gradient length");
    for t in 0..trials {
        let mut v: Vec<f64> = (0..x.len()).map(|_| normal()).collect();
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= norm);
        let shifted = |s: f64| -> Vec<f64> { x.iter().zip(&v).map(|(a, b)| a + s * b).collect() };
        let num = (f(&shifted(EPS)) - f(&shifted(-EPS))) / (2.0 * EPS);
        let ana: f64 = analytic.iter().zip(&v).map(|(a, b)| a * b).sum();
        assert!(
            (num - ana).abs() <= GRADCHECK.atol + GRADCHECK.rtol * num.abs(),
            "{name}: directional derivative mismatch in trial {t}: numeric {num:.8e}, analytic {ana:.8e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "gradient mismatch at element 1")]
    fn a_wrong_gradient_is_caught_at_its_element() {
        // f = x0² + 3·x1: true gradient (2·x0, 3); the second entry is wrong.
        check_elementwise("q", |x| x[0] * x[0] + 3.0 * x[1], &[0.5, 2.0], &[1.0, 2.9]);
    }

    #[test]
    fn a_right_gradient_passes_and_differences_are_measured() {
        check_elementwise("q", |x| x[0] * x[0] + 3.0 * x[1], &[0.5, 2.0], &[1.0, 3.0]);
        let mut s = 0u64;
        let mut n = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        check_directional(
            "q",
            |x| x[0] * x[0] + 3.0 * x[1],
            &[0.5, 2.0],
            &[1.0, 3.0],
            &mut n,
            4,
        );
        let a = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
        let b = ndarray::array![[1.0f32, 2.5], [3.0, 3.0]];
        assert_eq!(max_abs_diff(a.view(), b.view()), 1.0);
        assert_close("same", a.view(), a.view(), 0.0, 0.0);
    }

    #[test]
    #[should_panic(expected = "at (1, 1) got 4 vs reference 4.5")]
    fn assert_close_names_the_element() {
        let a = ndarray::array![[1.0f32, 2.0], [3.0, 4.0]];
        let b = ndarray::array![[1.0f32, 2.0], [3.0, 4.5]];
        assert_close("m", a.view(), b.view(), 0.1, 0.0);
    }
}
