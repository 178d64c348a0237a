//! Initial factors for the multiplicative updates: NNDSVDa and seeded random.
//!
//! Both return `(H, W)` with `H`: `n × k` (coefficients) and `W`: `k × p` (basis), strictly
//! positive where the updates need it (an entry that starts at 0 stays 0 under MU).
//!
//! * **NNDSVDa** (Boutsidis & Gallopoulos 2008, "a" variant as in scikit-learn): from the
//!   thin SVD `V = U S Vᵀ`, component 0 is `√s₀·|u₀|`, `√s₀·|v₀|`; component `j ≥ 1` keeps
//!   the positive or the negative parts of `(u_j, v_j)`, whichever pair has the larger
//!   product of norms `σ`, normalised and scaled by `√(s_j σ)`. Entries below `1e-6` are
//!   replaced by the data mean. The leading singular triplets come from a randomised SVD as
//!   in scikit-learn ([`randomized_svd`]: f32 products with the data, f64 QR and small SVD),
//!   or from faer's exact f64 thin SVD for small matrices (below 2²⁰ entries). The result is
//!   sign-invariant. The exact path stays the reference the randomised one is tested
//!   against (the 200-iteration MU objective from both agrees within 1e-3 on 2,000 digits,
//!   tested, and within 4.1e-4 on the paper's 7,000; BENCHMARKS.md has sizes where it does not).
//! * **Random** (scikit-learn scale): every entry is `√(mean(V)/k)·|z|`, `z ~ N(0,1)`, with
//!   one `crate::rng` stream per row (thread-count independent).

use super::mu::f;
use crate::error::{Error, Result};
use crate::linalg::{par_gemm, par_gemm_tn};
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

/// Extra random directions of the randomised SVD beyond `k`: at least this (scikit-learn's
/// default), and `k/2` for larger `k` (with 10 at k = 64 the 200-iteration MU objective on
/// the digits ended 2.6 % above the exact init's; with 32, 3e-4).
const OVERSAMPLE: usize = 10;

/// Matrices with fewer entries than this get the exact thin SVD (it costs milliseconds
/// there, and the result is then exact, not approximate).
const EXACT_BELOW: usize = 1 << 20;

/// The leading `k` singular triplets: `u` (`n × k`), `s` (descending), `v` (`p × k`).
pub(crate) struct TopSvd {
    pub u: Array2<f64>,
    pub s: Vec<f64>,
    pub v: Array2<f64>,
}

/// Exact thin SVD (faer, f64) of `v`, truncated to `k`.
pub(crate) fn exact_svd<T: Scalar>(v: ArrayView2<T>, k: usize) -> Result<TopSvd> {
    let (n, p) = v.dim();
    let a = faer::Mat::<f64>::from_fn(n, p, |i, j| f(v[[i, j]]));
    let svd = a.thin_svd().map_err(|e| Error::Numeric {
        op: "nnmf nndsvda",
        msg: format!("thin SVD did not converge ({e:?}); use `nnmf.init: random`"),
    })?;
    let (u, vr, s) = (svd.U(), svd.V(), svd.S().column_vector());
    Ok(TopSvd {
        u: Array2::from_shape_fn((n, k), |(i, j)| u[(i, j)]),
        s: (0..k).map(|j| s[j]).collect(),
        v: Array2::from_shape_fn((p, k), |(c, j)| vr[(c, j)]),
    })
}

/// Randomised SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4, as scikit-learn's
/// `randomized_svd`): a Gaussian test matrix with `k + max(10, k/2)` columns (fixed stream: the init is
/// deterministic), power iterations (7 when `k < 0.1·min(n, p)`, else 4) re-orthonormalised
/// by QR each half step, then the exact SVD of the small projected matrix. The products with
/// the data are f32 GEMMs (row chunks in parallel, fixed order); QR and SVD are f64.
pub(crate) fn randomized_svd<T: Scalar>(v: ArrayView2<T>, k: usize) -> Result<TopSvd> {
    let (n, p) = v.dim();
    let l = (k + OVERSAMPLE.max(k / 2)).min(n.min(p));
    let x: Array2<f32> = v.mapv(|t| f(t) as f32);
    let mut omega = Array2::<f32>::zeros((p, l));
    let mut rng = stream(0, &[tag("nnmf.init.rsvd")]);
    fill_normal(&mut rng, omega.as_slice_mut().expect("standard layout"));
    let iters = if (k as f64) < 0.1 * n.min(p) as f64 {
        7
    } else {
        4
    };
    let mut y = par_gemm(x.view(), omega.view());
    for _ in 0..iters {
        let q = orthonormal(y.view())?;
        let z = orthonormal(par_gemm_tn(x.view(), q.view()).view())?;
        y = par_gemm(x.view(), z.view());
    }
    let q = orthonormal(y.view())?;
    let b = par_gemm_tn(q.view(), x.view()); // l × p = Qᵀ·X
    let bm = faer::Mat::<f64>::from_fn(l, p, |i, j| f64::from(b[[i, j]]));
    let svd = bm.thin_svd().map_err(|e| Error::Numeric {
        op: "nnmf nndsvda",
        msg: format!(
            "SVD of the randomised projection did not converge ({e:?}); use `nnmf.init: random`"
        ),
    })?;
    let (ub, vb, s) = (svd.U(), svd.V(), svd.S().column_vector());
    let ub = Array2::from_shape_fn((l, k), |(i, j)| ub[(i, j)]);
    Ok(TopSvd {
        u: q.mapv(f64::from).dot(&ub),
        s: (0..k).map(|j| s[j]).collect(),
        v: Array2::from_shape_fn((p, k), |(c, j)| vb[(c, j)]),
    })
}

/// An orthonormal basis of the columns of `y`: Cholesky QR applied twice in f64 (two small
/// GEMMs each; the second pass restores orthogonality to rounding level), or faer's
/// Householder QR where the Gram matrix is not numerically positive definite (rank-deficient
/// data).
fn orthonormal(y: ArrayView2<f32>) -> Result<Array2<f32>> {
    let y = y.mapv(f64::from);
    let q = match cholesky_qr(y.view()).and_then(|q| cholesky_qr(q.view())) {
        Some(q) => q,
        None => {
            let (n, l) = y.dim();
            let q = faer::Mat::<f64>::from_fn(n, l, |i, j| y[[i, j]])
                .qr()
                .compute_thin_Q();
            Array2::from_shape_fn((n, l), |(i, j)| q[(i, j)])
        }
    };
    if q.iter().all(|x| x.is_finite()) {
        Ok(q.mapv(|x| x as f32))
    } else {
        Err(Error::Numeric {
            op: "nnmf nndsvda",
            msg: "randomised SVD produced non-finite values; use `nnmf.init: random`".into(),
        })
    }
}

/// `y·R⁻¹` with `RᵀR = yᵀy` (Cholesky), or `None` when a pivot is not clearly positive.
fn cholesky_qr(y: ArrayView2<f64>) -> Option<Array2<f64>> {
    let g = par_gemm_tn(y, y);
    let l = g.nrows();
    let scale = g.diag().iter().cloned().fold(0.0, f64::max);
    let mut c = Array2::<f64>::zeros((l, l)); // lower factor: g = c·cᵀ
    for j in 0..l {
        let d = g[[j, j]] - (0..j).map(|t| c[[j, t]] * c[[j, t]]).sum::<f64>();
        if d.is_nan() || d <= 1e-13 * scale {
            return None;
        }
        c[[j, j]] = d.sqrt();
        for i in j + 1..l {
            let o = g[[i, j]] - (0..j).map(|t| c[[i, t]] * c[[j, t]]).sum::<f64>();
            c[[i, j]] = o / c[[j, j]];
        }
    }
    // inv = c⁻¹ (lower), by forward substitution column by column; y·R⁻¹ = y·c⁻ᵀ.
    let mut inv = Array2::<f64>::zeros((l, l));
    for col in 0..l {
        for i in col..l {
            let rhs = if i == col { 1.0 } else { 0.0 };
            let acc = (col..i).map(|t| c[[i, t]] * inv[[t, col]]).sum::<f64>();
            inv[[i, col]] = (rhs - acc) / c[[i, i]];
        }
    }
    Some(par_gemm(y, inv.t()))
}

/// NNDSVDa initial factors of `v` with `k ≤ min(n, p)` components, from the randomised SVD
/// (the exact one below [`EXACT_BELOW`] entries).
pub fn nndsvda<T: Scalar>(v: ArrayView2<T>, k: usize) -> Result<(Array2<T>, Array2<T>)> {
    let svd = if v.len() < EXACT_BELOW {
        exact_svd(v, k)?
    } else {
        randomized_svd(v, k)?
    };
    nndsvda_from(v, k, &svd)
}

/// NNDSVDa from the exact thin SVD at every size: the reference the randomised path is
/// tested and benchmarked against.
pub fn nndsvda_exact<T: Scalar>(v: ArrayView2<T>, k: usize) -> Result<(Array2<T>, Array2<T>)> {
    nndsvda_from(v, k, &exact_svd(v, k)?)
}

/// NNDSVDa from given leading singular triplets.
pub(crate) fn nndsvda_from<T: Scalar>(
    v: ArrayView2<T>,
    k: usize,
    svd: &TopSvd,
) -> Result<(Array2<T>, Array2<T>)> {
    let (n, p) = v.dim();
    debug_assert!(k >= 1 && k <= n.min(p));
    let (u, vr, s) = (&svd.u, &svd.v, &svd.s);
    let avg = mean(v);
    let mut h = Array2::<f64>::zeros((n, k));
    let mut w = Array2::<f64>::zeros((k, p));
    for j in 0..k {
        let sj = s[j].max(0.0);
        if j == 0 {
            let r = sj.sqrt();
            for i in 0..n {
                h[[i, 0]] = r * u[[i, 0]].abs();
            }
            for c in 0..p {
                w[[0, c]] = r * vr[[c, 0]].abs();
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
        let (xp, xn) = norms(&|i| u[[i, j]], n);
        let (yp, yn) = norms(&|c| vr[[c, j]], p);
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
            h[[i, j]] = lbd * (sign * u[[i, j]]).max(0.0) / xnrm;
        }
        for c in 0..p {
            w[[j, c]] = lbd * (sign * vr[[c, j]]).max(0.0) / ynrm;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gram_error(q: &Array2<f32>) -> f64 {
        let q = q.mapv(f64::from);
        let g = q.t().dot(&q);
        let eye = Array2::<f64>::eye(g.nrows());
        (&g - &eye).iter().fold(0.0f64, |m, x| m.max(x.abs()))
    }

    /// Both orthonormalisation paths give an orthonormal basis of the same column space:
    /// Cholesky QR on a well-conditioned block, Householder QR when a column repeats (the
    /// Gram matrix is singular and Cholesky QR refuses it).
    #[test]
    fn orthonormal_bases_on_both_paths() {
        let mut g = stream(5, &[1]);
        let mut y = Array2::<f32>::zeros((300, 6));
        fill_normal(&mut g, y.as_slice_mut().unwrap());
        let q = orthonormal(y.view()).unwrap();
        assert!(gram_error(&q) < 1e-5, "Cholesky QR: {}", gram_error(&q));
        // same span: y = q·(qᵀy)
        let back = q.dot(&q.t().dot(&y));
        assert!((&back - &y).iter().all(|d| d.abs() < 1e-4));
        assert!(cholesky_qr(y.mapv(f64::from).view()).is_some());
        let col = y.column(0).to_owned();
        y.column_mut(3).assign(&col);
        assert!(cholesky_qr(y.mapv(f64::from).view()).is_none());
        let q = orthonormal(y.view()).unwrap();
        assert!(gram_error(&q) < 1e-5, "Householder QR: {}", gram_error(&q));
    }
}
