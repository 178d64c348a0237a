//! Attack losses on logits (`docs/apgd.md` §1): cross-entropy and untargeted DLR, with their
//! gradients w.r.t. the logits. Both are **maximised** by the attack.
//!
//! * CE: `−z_y + log Σ_j exp(z_j)` via log-sum-exp.
//! * DLR: `−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3 + 1e-12)` with `π` the logits sorted in
//!   decreasing order; `max_{i≠y}` is `z_π2` when `π1 == y`, else `z_π1`. Ties are broken by
//!   the lower class index first (a consistent rule, as the spec allows). DLR needs
//!   `K ≥ 3`; [`super::apgd::ApgdParams::validate`] turns that into a typed error, the
//!   functions here assert it with a clear message.

use super::Loss;
use crate::Scalar;
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// The DLR denominator constant (`docs/apgd.md` §1.2).
pub const DLR_EPS: f64 = 1e-12;

/// Cross-entropy of one row of logits `z` w.r.t. label `y`; writes d loss/d z into `grad`
/// when given (softmax − one-hot).
pub fn ce<F: Scalar>(z: &[F], y: usize, grad: Option<&mut [F]>) -> F {
    assert!(
        y < z.len(),
        "ce: label {y} out of range for {} classes",
        z.len()
    );
    let m = z.iter().copied().fold(F::neg_infinity(), F::max);
    let s: F = z.iter().map(|&v| (v - m).exp()).sum();
    let lse = m + s.ln();
    if let Some(g) = grad {
        for (gj, &zj) in g.iter_mut().zip(z) {
            *gj = (zj - lse).exp();
        }
        g[y] -= F::one();
    }
    lse - z[y]
}

/// Indices of the three largest logits, in decreasing order (ties: lower index first).
fn top3<F: Scalar>(z: &[F]) -> [usize; 3] {
    let mut t = [usize::MAX; 3];
    for (j, &v) in z.iter().enumerate() {
        // Insert j if it beats a current slot strictly (so earlier indices win ties).
        let beats = |s: usize| s == usize::MAX || v > z[s];
        if beats(t[0]) {
            t = [j, t[0], t[1]];
        } else if beats(t[1]) {
            t = [t[0], j, t[1]];
        } else if beats(t[2]) {
            t[2] = j;
        }
    }
    t
}

/// Untargeted DLR of one row of logits `z` w.r.t. label `y`; writes d loss/d z into
/// `grad` when given. Panics (clear message) if `z.len() < 3`.
pub fn dlr<F: Scalar>(z: &[F], y: usize, grad: Option<&mut [F]>) -> F {
    assert!(
        z.len() >= 3,
        "dlr: the DLR loss needs at least 3 classes, got {}; use the CE loss",
        z.len()
    );
    assert!(
        y < z.len(),
        "dlr: label {y} out of range for {} classes",
        z.len()
    );
    let [p1, p2, p3] = top3(z);
    let other = if p1 == y { p2 } else { p1 };
    let num = z[y] - z[other];
    let den = z[p1] - z[p3] + F::c(DLR_EPS);
    if let Some(g) = grad {
        g.iter_mut().for_each(|v| *v = F::zero());
        let inv = F::one() / den;
        let q = num * inv * inv;
        g[y] -= inv;
        g[other] += inv;
        g[p1] += q;
        g[p3] -= q;
    }
    -num / den
}

/// Targeted DLR (APGD-T, Croce & Hein 2020) of one row of logits `z`, label `y`, target
/// `t`: `−(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12)`; writes d loss/d z into `grad`
/// when given. Panics (clear message) if `z.len() < 4` or `t == y`.
pub fn dlr_targeted<F: Scalar>(z: &[F], y: usize, t: usize, grad: Option<&mut [F]>) -> F {
    assert!(
        z.len() >= 4,
        "dlr_targeted: the targeted DLR loss needs at least 4 classes, got {}",
        z.len()
    );
    assert!(
        y < z.len() && t < z.len() && t != y,
        "dlr_targeted: label {y} / target {t} invalid for {} classes",
        z.len()
    );
    let (p1, p3, p4) = top4(z);
    let half = F::c(0.5);
    let num = z[y] - z[t];
    let den = z[p1] - half * (z[p3] + z[p4]) + F::c(DLR_EPS);
    if let Some(g) = grad {
        g.iter_mut().for_each(|v| *v = F::zero());
        let inv = F::one() / den;
        let q = num * inv * inv;
        g[y] -= inv;
        g[t] += inv;
        g[p1] += q;
        g[p3] -= half * q;
        g[p4] -= half * q;
    }
    -num / den
}

/// Indices of the 1st, 3rd and 4th largest logits (ties: lower index first).
fn top4<F: Scalar>(z: &[F]) -> (usize, usize, usize) {
    let mut idx: Vec<usize> = (0..z.len()).collect();
    idx.sort_by(|&a, &b| {
        z[b].partial_cmp(&z[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    (idx[0], idx[2], idx[3])
}

/// One row's loss (and gradient) under `kind`; `row` indexes the targets.
fn row_loss<F: Scalar>(kind: &Loss<'_>, z: &[F], y: usize, row: usize, g: Option<&mut [F]>) -> F {
    match kind {
        Loss::Ce => ce(z, y, g),
        Loss::Dlr => dlr(z, y, g),
        Loss::DlrTargeted(t) => dlr_targeted(z, y, t[row], g),
    }
}

fn check_rows(kind: &Loss<'_>, rows: usize, y: &[usize], what: &str) {
    assert_eq!(
        rows,
        y.len(),
        "{what}: {rows} rows of logits but {} labels",
        y.len()
    );
    if let Loss::DlrTargeted(t) = kind {
        assert_eq!(
            t.len(),
            y.len(),
            "{what}: {} targets for {} labels",
            t.len(),
            y.len()
        );
    }
}

/// Per-sample loss and d(loss)/d(logits) for a batch (`logits`: rows = samples).
pub fn loss_and_grad<F: Scalar>(
    kind: Loss<'_>,
    logits: ArrayView2<F>,
    y: &[usize],
) -> (Array1<F>, Array2<F>) {
    check_rows(&kind, logits.nrows(), y, "loss_and_grad");
    let mut loss = Array1::zeros(y.len());
    let mut grad = Array2::zeros(logits.raw_dim());
    for (r, ((l, mut g), z)) in loss
        .iter_mut()
        .zip(grad.axis_iter_mut(Axis(0)))
        .zip(logits.axis_iter(Axis(0)))
        .enumerate()
    {
        let z = z.to_vec();
        let gs = g.as_slice_mut().expect("fresh array rows are contiguous");
        *l = row_loss(&kind, &z, y[r], r, Some(gs));
    }
    (loss, grad)
}

/// Per-sample loss only.
pub fn loss<F: Scalar>(kind: Loss<'_>, logits: ArrayView2<F>, y: &[usize]) -> Array1<F> {
    check_rows(&kind, logits.nrows(), y, "loss");
    logits
        .axis_iter(Axis(0))
        .zip(y)
        .enumerate()
        .map(|(r, (z, &yi))| row_loss(&kind, &z.to_vec(), yi, r, None))
        .collect()
}

/// The margin `z_y − max_{j≠y} z_j` of one row (negative ⇔ misclassified); the loss the
/// Square attack minimises.
pub fn margin<F: Scalar>(z: &[F], y: usize) -> F {
    let other = z
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != y)
        .map(|(_, &v)| v)
        .fold(F::neg_infinity(), F::max);
    z[y] - other
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * (1.0 + b.abs())
    }

    #[test]
    fn ce_matches_formula_and_is_stable() {
        let z = [1.0f64, 2.0, -0.5];
        let want = -1.0 + (1f64.exp() + 2f64.exp() + (-0.5f64).exp()).ln();
        assert!(close(ce(&z, 0, None), want, 1e-14));
        // Large logits must not overflow.
        let big = [1000.0f64, 0.0, -1000.0];
        assert!(close(ce(&big, 1, None), 1000.0, 1e-12));
        assert!(ce(&big, 0, None) >= 0.0 && ce(&big, 0, None) < 1e-300);
    }

    #[test]
    fn dlr_hand_made_logits() {
        // Correctly classified: y = 0 is the top class, second 3, third 1.
        let z = [5.0f64, 1.0, 3.0, 0.0];
        assert!(close(
            dlr(&z, 0, None),
            -(5.0 - 3.0) / (5.0 - 1.0 + 1e-12),
            1e-14
        ));
        // Misclassified: y = 1, top class 0 (5), third largest 1.
        assert!(close(
            dlr(&z, 1, None),
            -(1.0 - 5.0) / (5.0 - 1.0 + 1e-12),
            1e-14
        ));
        assert!(dlr(&z, 1, None) > 0.0 && dlr(&z, 0, None) < 0.0);
        // Ties: y tied with the runner-up -> numerator 0; all equal -> 0/1e-12 = 0.
        let t = [2.0f64, 2.0, 1.0];
        assert_eq!(dlr(&t, 0, None), 0.0);
        assert_eq!(dlr(&t, 1, None), 0.0);
        assert_eq!(dlr(&[1.0f64, 1.0, 1.0], 2, None), 0.0);
        // Tie at the third place: the value does not depend on which index is chosen.
        let u = [3.0f64, 1.0, 1.0, 0.0];
        assert!(close(
            dlr(&u, 0, None),
            -(3.0 - 1.0) / (3.0 - 1.0 + 1e-12),
            1e-14
        ));
    }

    #[test]
    fn top3_breaks_ties_by_index() {
        assert_eq!(top3(&[1.0f64, 3.0, 3.0, 2.0]), [1, 2, 3]);
        assert_eq!(top3(&[0.0f64, 0.0, 0.0]), [0, 1, 2]);
        assert_eq!(top3(&[-1.0f64, 4.0, 2.0, 4.0, 9.0]), [4, 1, 3]);
    }

    #[test]
    #[should_panic(expected = "at least 3 classes")]
    fn dlr_rejects_two_classes() {
        dlr(&[1.0f64, 0.0], 0, None);
    }

    /// Central finite differences of the per-row loss vs the analytic gradient.
    fn fd_check(kind: Loss<'_>, z: &[f64], y: usize) {
        let f = |v: &[f64]| row_loss(&kind, v, y, 0, None);
        let (_, g) = loss_and_grad(
            kind,
            ndarray::ArrayView2::from_shape((1, z.len()), z).unwrap(),
            &[y],
        );
        let tol = crate::testutil::Tol {
            atol: 1e-7,
            rtol: 0.0,
        };
        let name = format!("{kind:?} y={y}");
        crate::testutil::check_elementwise_tol(&name, f, z, g.as_slice().unwrap(), tol);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let rows: [&[f64]; 3] = [
            &[0.3, -1.2, 2.5, 0.9, -0.4],
            &[4.0, 1.5, 1.0, -2.0, 3.2],
            &[-0.7, 0.1, 0.6],
        ];
        for z in rows {
            for y in 0..z.len() {
                fd_check(Loss::Ce, z, y);
                fd_check(Loss::Dlr, z, y);
                for t in (0..z.len()).filter(|&t| t != y && z.len() >= 4) {
                    fd_check(Loss::DlrTargeted(&[t]), z, y);
                }
            }
        }
    }

    #[test]
    fn targeted_dlr_hand_made_logits() {
        // Sorted: z0 = 5 (π1), z2 = 3 (π2), z1 = 1 (π3), z3 = 0 (π4), z4 = -1.
        let z = [5.0f64, 1.0, 3.0, 0.0, -1.0];
        let want = -(5.0 - 1.0) / (5.0 - 0.5 * (1.0 + 0.0) + 1e-12);
        assert!(close(dlr_targeted(&z, 0, 1, None), want, 1e-14));
        // Reaching the target (z_t > z_y) makes the loss positive.
        assert!(dlr_targeted(&z, 1, 0, None) > 0.0);
        assert_eq!(margin(&z, 0), 2.0);
        assert_eq!(margin(&z, 3), -5.0);
    }

    #[test]
    fn batch_api_agrees_with_rows() {
        let l = array![[1.0f32, 0.0, 2.0], [0.5, 0.4, -3.0]];
        let y = [2, 0];
        let (v, g) = loss_and_grad(Loss::Dlr, l.view(), &y);
        let only = loss(Loss::Dlr, l.view(), &y);
        for i in 0..2 {
            let mut gr = [0.0f32; 3];
            let r = dlr(&l.row(i).to_vec(), y[i], Some(&mut gr));
            assert_eq!(v[i], r);
            assert_eq!(only[i], r);
            assert_eq!(g.row(i).to_vec(), gr.to_vec());
        }
        // CE gradient rows sum to zero (softmax minus one-hot).
        let (_, gc) = loss_and_grad(Loss::Ce, l.view(), &y);
        for r in gc.rows() {
            assert!(r.sum().abs() < 1e-6);
        }
    }
}
