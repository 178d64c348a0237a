//! CNN kernels on NHWC batches stored as `(n·h·w) × c` row-major matrices: 3×3 convolution
//! (stride 1, zero padding 1) by im2col + GEMM, 2×2/2 max-pooling, and batch normalisation
//! over the rows, each with its exact backward pass.
//!
//! Parallelism is over images (disjoint output rows) or over fixed row chunks whose partial
//! sums are added in chunk order, so results never depend on rayon's scheduling.

use crate::Scalar;
use ndarray::{Array1, Array2, ArrayView2};
use rayon::prelude::*;

/// Rows per chunk in column reductions (fixed: determinism).
const REDUCE_ROWS: usize = 2048;
/// BatchNorm ε (PyTorch default).
pub const BN_EPS: f64 = 1e-5;

/// Shape of an NHWC batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Nhwc {
    pub fn rows(&self) -> usize {
        self.n * self.h * self.w
    }
    pub fn len(&self) -> usize {
        self.rows() * self.c
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Shape after 2×2/2 max-pooling (floor).
    pub fn pooled(&self) -> Nhwc {
        Nhwc {
            h: self.h / 2,
            w: self.w / 2,
            ..*self
        }
    }
}

/// im2col for a 3×3 kernel with zero padding 1: `(n·h·w) × 9c`, column `(ky·3+kx)·c + ci`.
pub fn im2col3<F: Scalar>(x: &[F], s: Nhwc) -> Array2<F> {
    let k = 9 * s.c;
    let mut cols = Array2::<F>::zeros((s.rows(), k));
    if s.is_empty() {
        return cols;
    }
    let dst_all = cols.as_slice_mut().expect("fresh array");
    dst_all
        .par_chunks_mut(s.h * s.w * k)
        .zip(x.par_chunks(s.h * s.w * s.c))
        .for_each(|(dst, src)| {
            by_channels!(s.c, |C| taps(s, |row, tap, px| {
                copy::<F, C>(
                    &mut dst[row * k + tap * s.c..][..s.c],
                    &src[px * s.c..][..s.c],
                    false,
                )
            }))
        });
    cols
}

/// Adjoint of [`im2col3`]: scatter-add `(n·h·w) × 9c` columns back into an NHWC image batch.
pub fn col2im3<F: Scalar>(cols: ArrayView2<F>, s: Nhwc) -> Vec<F> {
    let k = 9 * s.c;
    let mut dx = vec![F::zero(); s.len()];
    if s.is_empty() {
        return dx;
    }
    let cols = cols.as_standard_layout();
    let src_all = cols.as_slice().expect("standard layout");
    dx.par_chunks_mut(s.h * s.w * s.c)
        .zip(src_all.par_chunks(s.h * s.w * k))
        .for_each(|(dst, src)| {
            by_channels!(s.c, |C| taps(s, |row, tap, px| {
                copy::<F, C>(
                    &mut dst[px * s.c..][..s.c],
                    &src[row * k + tap * s.c..][..s.c],
                    true,
                )
            }))
        });
    dx
}

/// Run `$body` with the const `C` = the channel count when it is one of the common widths
/// (fixed-length copies compile to a few vector moves instead of a `memcpy` call per
/// pixel), else with `C = 0` (runtime length).
macro_rules! by_channels {
    ($c:expr, |$C:ident| $body:expr) => {
        match $c {
            1 => {
                const $C: usize = 1;
                $body
            }
            8 => {
                const $C: usize = 8;
                $body
            }
            16 => {
                const $C: usize = 16;
                $body
            }
            32 => {
                const $C: usize = 32;
                $body
            }
            64 => {
                const $C: usize = 64;
                $body
            }
            _ => {
                const $C: usize = 0;
                $body
            }
        }
    };
}
use by_channels;

/// Calls `f(row, tap, px)` for every output pixel `row` of one image, every in-bounds 3×3
/// tap `ky·3+kx` and the input pixel `px` it reads.
#[inline(always)]
fn taps<G: FnMut(usize, usize, usize)>(s: Nhwc, mut f: G) {
    let (h, w) = (s.h, s.w);
    for y in 0..h {
        for ky in 0..3 {
            let iy = y + ky;
            if iy == 0 || iy > h {
                continue;
            }
            for xx in 0..w {
                for kx in 0..3 {
                    let ix = xx + kx;
                    if ix == 0 || ix > w {
                        continue;
                    }
                    f(y * w + xx, ky * 3 + kx, (iy - 1) * w + ix - 1);
                }
            }
        }
    }
}

/// `dst = src` or `dst += src` for `C` values (`C = 0`: the slices' length).
#[inline(always)]
fn copy<F: Scalar, const C: usize>(dst: &mut [F], src: &[F], add: bool) {
    if C > 0 {
        let d: &mut [F; C] = dst.try_into().expect("C values");
        let s: &[F; C] = src.try_into().expect("C values");
        for i in 0..C {
            d[i] = if add { d[i] + s[i] } else { s[i] };
        }
    } else if add {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d += v;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// 2×2/2 max-pooling (floor). Returns the pooled batch and, per output value, which of the
/// four window positions won (first maximum on ties).
pub fn maxpool2<F: Scalar>(x: &[F], s: Nhwc) -> (Vec<F>, Vec<u8>) {
    let o = s.pooled();
    let c = s.c;
    let mut out = vec![F::zero(); o.len()];
    let mut arg = vec![0u8; o.len()];
    if o.is_empty() {
        return (out, arg);
    }
    out.par_chunks_mut(o.h * o.w * c)
        .zip(arg.par_chunks_mut(o.h * o.w * c))
        .zip(x.par_chunks(s.h * s.w * c))
        .for_each(|((dst, am), src)| {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let obase = (oy * o.w + ox) * c;
                    for ch in 0..c {
                        let mut best = F::neg_infinity();
                        let mut bi = 0u8;
                        for (q, (dy, dx)) in [(0, 0), (0, 1), (1, 0), (1, 1)].iter().enumerate() {
                            let v = src[((2 * oy + dy) * s.w + 2 * ox + dx) * c + ch];
                            if v > best || q == 0 {
                                best = v;
                                bi = q as u8;
                            }
                        }
                        dst[obase + ch] = best;
                        am[obase + ch] = bi;
                    }
                }
            }
        });
    (out, arg)
}

/// Backward of [`maxpool2`]: route each output gradient to its winning input.
pub fn maxpool2_backward<F: Scalar>(dy: &[F], arg: &[u8], s: Nhwc) -> Vec<F> {
    let o = s.pooled();
    let c = s.c;
    let mut dx = vec![F::zero(); s.len()];
    if o.is_empty() {
        return dx;
    }
    dx.par_chunks_mut(s.h * s.w * c)
        .zip(dy.par_chunks(o.h * o.w * c))
        .zip(arg.par_chunks(o.h * o.w * c))
        .for_each(|((dst, g), am)| {
            for oy in 0..o.h {
                for ox in 0..o.w {
                    let obase = (oy * o.w + ox) * c;
                    for ch in 0..c {
                        let q = am[obase + ch] as usize;
                        let (ddy, ddx) = (q / 2, q % 2);
                        dst[((2 * oy + ddy) * s.w + 2 * ox + ddx) * c + ch] = g[obase + ch];
                    }
                }
            }
        });
    dx
}

/// Per-column sums of `k` quantities over the rows of an `rows × c` matrix: `f(row, acc)`
/// adds the row's contributions into `acc` (`k·c` long, quantity-major). Fixed chunking.
pub fn col_reduce<F: Scalar>(
    rows: usize,
    c: usize,
    k: usize,
    f: impl Fn(usize, &mut [F]) + Sync,
) -> Vec<F> {
    let chunks = rows.div_ceil(REDUCE_ROWS);
    let partials: Vec<Vec<F>> = (0..chunks)
        .into_par_iter()
        .map(|ch| {
            let mut acc = vec![F::zero(); k * c];
            for r in ch * REDUCE_ROWS..((ch + 1) * REDUCE_ROWS).min(rows) {
                f(r, &mut acc);
            }
            acc
        })
        .collect();
    let mut total = vec![F::zero(); k * c];
    for p in partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// What BatchNorm's forward keeps for backward.
#[derive(Clone, Debug)]
pub struct BnCache<F> {
    /// Normalised input `(x − μ)/σ`.
    pub xhat: Array2<F>,
    /// `1/σ` per channel (batch statistics in training, running ones in eval).
    pub inv_std: Array1<F>,
    /// True when batch statistics were used.
    pub train: bool,
    /// Batch mean and biased variance (training only; for the running-stat update).
    pub mean: Array1<F>,
    pub var: Array1<F>,
}

/// BatchNorm forward fused with ReLU: returns `relu(γ·x̂ + β)` and the cache. With `stats =
/// None` the batch statistics are used (training), otherwise the given (mean, var).
pub fn bn_relu_forward<F: Scalar>(
    x: ArrayView2<F>,
    gamma: &Array1<F>,
    beta: &Array1<F>,
    stats: Option<(&Array1<F>, &Array1<F>)>,
) -> (Array2<F>, BnCache<F>) {
    let (rows, c) = x.dim();
    let x = x.as_standard_layout();
    let xs = x.as_slice().expect("standard layout");
    let eps = F::c(BN_EPS);
    let (mean, var, train) = match stats {
        Some((m, v)) => (m.clone(), v.clone(), false),
        None => {
            let nf = F::c(rows.max(1) as f64);
            let s = col_reduce(rows, c, 1, |r, acc: &mut [F]| {
                for (a, &v) in acc.iter_mut().zip(&xs[r * c..(r + 1) * c]) {
                    *a += v;
                }
            });
            let mean: Array1<F> = s.iter().map(|&v| v / nf).collect();
            let ms = mean.as_slice().expect("contiguous");
            let q = col_reduce(rows, c, 1, |r, acc: &mut [F]| {
                for ((a, &v), &m) in acc.iter_mut().zip(&xs[r * c..(r + 1) * c]).zip(ms) {
                    *a += (v - m) * (v - m);
                }
            });
            let var: Array1<F> = q.iter().map(|&v| v / nf).collect();
            (mean, var, true)
        }
    };
    let inv_std: Array1<F> = var.mapv(|v| F::one() / (v + eps).sqrt());
    let mut xhat = Array2::<F>::zeros((rows, c));
    let mut out = Array2::<F>::zeros((rows, c));
    let (ms, is) = (mean.as_slice().unwrap(), inv_std.as_slice().unwrap());
    let (gs, bs) = (gamma.as_slice().unwrap(), beta.as_slice().unwrap());
    if rows > 0 && c > 0 {
        xhat.as_slice_mut()
            .unwrap()
            .par_chunks_mut(c)
            .zip(out.as_slice_mut().unwrap().par_chunks_mut(c))
            .zip(xs.par_chunks(c))
            .with_min_len(256)
            .for_each(|((xh, o), xr)| {
                for j in 0..c {
                    let v = (xr[j] - ms[j]) * is[j];
                    xh[j] = v;
                    o[j] = (gs[j] * v + bs[j]).max(F::zero());
                }
            });
    }
    let cache = BnCache {
        xhat,
        inv_std,
        train,
        mean,
        var,
    };
    (out, cache)
}

/// Backward of [`bn_relu_forward`] given the gradient `dout` w.r.t. its output and the output
/// itself (for the ReLU mask). Returns `(dx, dγ, dβ)`.
pub fn bn_relu_backward<F: Scalar>(
    dout: ArrayView2<F>,
    out: &Array2<F>,
    gamma: &Array1<F>,
    cache: &BnCache<F>,
) -> (Array2<F>, Array1<F>, Array1<F>) {
    let (rows, c) = out.dim();
    let dout = dout.as_standard_layout();
    let ds = dout.as_slice().expect("standard layout");
    let os = out.as_slice().expect("standard layout");
    let xh = cache.xhat.as_slice().expect("standard layout");
    let relu_grad = |i: usize| if os[i] > F::zero() { ds[i] } else { F::zero() };
    let sums = col_reduce(rows, c, 2, |r, acc: &mut [F]| {
        for j in 0..c {
            let i = r * c + j;
            let g = relu_grad(i);
            acc[j] += g;
            acc[c + j] += g * xh[i];
        }
    });
    let dbeta: Array1<F> = sums[..c].iter().copied().collect();
    let dgamma: Array1<F> = sums[c..].iter().copied().collect();
    let mut dx = Array2::<F>::zeros((rows, c));
    let (gs, is) = (gamma.as_slice().unwrap(), cache.inv_std.as_slice().unwrap());
    let nf = F::c(rows.max(1) as f64);
    let (sb, sg) = (&sums[..c], &sums[c..]);
    let train = cache.train;
    if rows > 0 && c > 0 {
        dx.as_slice_mut()
            .unwrap()
            .par_chunks_mut(c)
            .enumerate()
            .with_min_len(256)
            .for_each(|(r, d)| {
                for j in 0..c {
                    let i = r * c + j;
                    let g = relu_grad(i);
                    d[j] = if train {
                        gs[j] * is[j] * (g - (sb[j] + xh[i] * sg[j]) / nf)
                    } else {
                        gs[j] * is[j] * g
                    };
                }
            });
    }
    (dx, dgamma, dbeta)
}
