//! Initial factors for the multiplicative updates: NNDSVDa and seeded random.
//!
//! Both return `(H, W)` with `H`: `n × k` (coefficients) and `W`: `k × p` (basis), strictly
//! positive where the updates need it (an entry that starts at 0 stays 0 under MU).
//!
//! * **NNDSVDa** (Boutsidis & Gallopoulos 2008, "a" variant as in scikit-learn): from the
//!   thin SVD `V = U S Vᵀ`, component 0 is `√s₀·|u₀|`, `√s₀·|v₀|`; component `j ≥ 1` keeps
//!   the positive or the negative parts of `(u_j, v_j)`, whichever pair has the larger
//!   product of norms `σ`, normalised and scaled by `√(s_j σ)`. Entries below `1e-6` are
//!   replaced by the data mean. The SVD is faer's dense thin SVD, computed in **f64**
//!   (exact, not randomised; the result is sign-invariant, so it matches scikit-learn's
//!   randomised SVD up to that method's approximation error).
//! * **Random** (scikit-learn scale): every entry is `√(mean(V)/k)·|z|`, `z ~ N(0,1)`, with
//!   one `crate::rng` stream per row (thread-count independent).

use super::mu::f;
use crate::error::{Error, Result};
use crate::rng::{fill_normal, stream, tag};
use crate::Scalar;
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Entries of the NNDSVD factors below this are treated as zero (scikit-learn's `eps`).
const NNDSVD_EPS: f64 = 1e-6;

/// Mean of all entries, in f64.
pub(crate) fn mean<T: Scalar>(v: ArrayView2<T>) -> f64 {
    let n = v.len().max(1) as f64;
    ndarray::Zip::from(v).par_fold(|| 0.0f64, |s, &x| s + f(x), |a, b| a + b) / n
}

/// NNDSVDa initial factors of `v` with `k ≤ min(n, p)` components.
pub fn nndsvda<T: Scalar>(v: ArrayView2<T>, k: usize) -> Result<(Array2<T>, Array2<T>)> {
    let (n, p) = v.dim();
    debug_assert!(k >= 1 && k <= n.min(p));
    let a = faer::Mat::<f64>::from_fn(n, p, |i, j| f(v[[i, j]]));
    let svd = a.thin_svd().map_err(|e| Error::Numeric {
        op: "nnmf nndsvda",
        msg: format!("thin SVD did not converge ({e:?}); use `nnmf.init: random`"),
    })?;
    let (u, vr, s) = (svd.U(), svd.V(), svd.S().column_vector());
    let avg = mean(v);
    let mut h = Array2::<f64>::zeros((n, k));
    let mut w = Array2::<f64>::zeros((k, p));
    for j in 0..k {
        let sj = s[j].max(0.0);
        if j == 0 {
            let r = sj.sqrt();
            for i in 0..n {
                h[[i, 0]] = r * u[(i, 0)].abs();
            }
            for c in 0..p {
                w[[0, c]] = r * vr[(c, 0)].abs();
            }
            continue;
        }
        let norms = |get: &dyn Fn(usize) -> f64, len: usize| {
            let (mut pos, mut neg) = (0.0f64, 0.0f64);
            for i in 0..len {
                let x = get(i);
                if x > 0.0 {
                    pos += x * x;
                } else {
                    neg += x * x;
                }
            }
            (pos.sqrt(), neg.sqrt())
        };
        let (xp, xn) = norms(&|i| u[(i, j)], n);
        let (yp, yn) = norms(&|c| vr[(c, j)], p);
        let (mp, mn) = (xp * yp, xn * yn);
        // sign = +1 keeps the positive parts, −1 the (negated) negative parts.
        let (sign, xnrm, ynrm, sigma) = if mp > mn {
            (1.0, xp, yp, mp)
        } else {
            (-1.0, xn, yn, mn)
        };
        if sigma <= 0.0 {
            continue; // both parts vanish: left at 0, filled with the mean below
        }
        let lbd = (sj * sigma).sqrt();
        for i in 0..n {
            h[[i, j]] = lbd * (sign * u[(i, j)]).max(0.0) / xnrm;
        }
        for c in 0..p {
            w[[j, c]] = lbd * (sign * vr[(c, j)]).max(0.0) / ynrm;
        }
    }
    let fill = |x: &f64| T::c(if *x < NNDSVD_EPS { avg } else { *x });
    Ok((h.map(fill), w.map(fill)))
}

/// Seeded random initial factors: `√(mean(V)/k)·|N(0,1)|` entries.
pub fn random<T: Scalar>(v: ArrayView2<T>, k: usize, seed: u64) -> (Array2<T>, Array2<T>) {
    let (n, p) = v.dim();
    let scale = T::c((mean(v) / k as f64).sqrt());
    let draw = |rows: usize, cols: usize, purpose: &str| {
        let mut m = Array2::<T>::zeros((rows, cols));
        let t = tag(purpose);
        m.axis_iter_mut(Axis(0))
            .into_par_iter()
            .enumerate()
            .for_each(|(i, mut row)| {
                let mut rng = stream(seed, &[t, i as u64]);
                if let Some(sl) = row.as_slice_mut() {
                    fill_normal(&mut rng, sl);
                }
                row.mapv_inplace(|z| z.abs() * scale);
            });
        m
    };
    (draw(n, k, "nnmf.init.h"), draw(k, p, "nnmf.init.w"))
}
