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
        .for_each(|(dst, src)| by_channels!(s.c, |C| im2col_image::<F, C>(dst, src, s)));
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
        .for_each(|(dst, src)| by_channels!(s.c, |C| col2im_image::<F, C>(dst, src, s)));
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
pub(super) use by_channels;

/// im2col of one image (`src`: `h·w·c`, `dst`: at least `h·w × 9c`), writing every entry
/// (zeros in the padding), so `dst` need not be cleared first. Per output pixel, the three
/// taps of a kernel row read three consecutive input pixels: one contiguous `3c` copy away
/// from the left and right borders.
#[inline(always)]
pub(super) fn im2col_image<F: Scalar, const C: usize>(dst: &mut [F], src: &[F], s: Nhwc) {
    let (h, w, c) = (s.h, s.w, width(C, s.c));
    let k = 9 * c;
    for (y, drow) in dst[..h * w * k].chunks_exact_mut(w * k).enumerate() {
        for ky in 0..3 {
            // input row y + ky − 1, when inside the image
            let srow = (y + ky >= 1 && y + ky <= h).then(|| &src[(y + ky - 1) * w * c..][..w * c]);
            for (xx, px) in drow.chunks_exact_mut(k).enumerate() {
                let t = &mut px[ky * 3 * c..][..3 * c];
                match srow {
                    None => t.fill(F::zero()),
                    Some(r) if xx >= 1 && xx + 1 < w => {
                        t.copy_from_slice(&r[(xx - 1) * c..][..3 * c])
                    }
                    Some(r) => {
                        for (kx, tt) in t.chunks_exact_mut(c).enumerate() {
                            // input column xx + kx − 1
                            if xx + kx >= 1 && xx + kx <= w {
                                tt.copy_from_slice(&r[(xx + kx - 1) * c..][..c]);
                            } else {
                                tt.fill(F::zero());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col_image`] for one image (scatter-add into `dst`, which holds `h·w·c`
/// values): per output pixel and kernel row, the three taps add into three consecutive input
/// pixels, one contiguous `3c` run away from the left and right borders.
#[inline(always)]
pub(super) fn col2im_image<F: Scalar, const C: usize>(dst: &mut [F], src: &[F], s: Nhwc) {
    let (h, w, c) = (s.h, s.w, width(C, s.c));
    let k = 9 * c;
    for (y, srow) in src[..h * w * k].chunks_exact(w * k).enumerate() {
        for ky in 0..3 {
            if y + ky < 1 || y + ky > h {
                continue;
            }
            let drow = &mut dst[(y + ky - 1) * w * c..][..w * c];
            for (xx, px) in srow.chunks_exact(k).enumerate() {
                let t = &px[ky * 3 * c..][..3 * c];
                if xx >= 1 && xx + 1 < w {
                    add_into(&mut drow[(xx - 1) * c..][..3 * c], t);
                    continue;
                }
                for (kx, tt) in t.chunks_exact(c).enumerate() {
                    if xx + kx >= 1 && xx + kx <= w {
                        add_into(&mut drow[(xx + kx - 1) * c..][..c], tt);
                    }
                }
            }
        }
    }
}

/// `dst += src` element-wise.
#[inline(always)]
fn add_into<F: Scalar>(dst: &mut [F], src: &[F]) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d += v;
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
        .for_each(|((dst, am), src)| pool_image(src, Nhwc { n: 1, ..s }, dst, am));
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
        .for_each(|((dst, g), am)| unpool_image(g, am, Nhwc { n: 1, ..s }, dst));
    dx
}

/// [`maxpool2`] of one image (`s.n = 1`): `dst` and `arg` hold its pooled values.
#[inline]
pub(super) fn pool_image<F: Scalar>(src: &[F], s: Nhwc, dst: &mut [F], arg: &mut [u8]) {
    let (o, c) = (s.pooled(), s.c);
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
                arg[obase + ch] = bi;
            }
        }
    }
}

/// [`maxpool2_backward`] of one image (`s.n = 1`, the unpooled shape) into `dst`, which
/// must hold zeros: only the winners are written.
#[inline]
pub(super) fn unpool_image<F: Scalar>(g: &[F], arg: &[u8], s: Nhwc, dst: &mut [F]) {
    let (o, c) = (s.pooled(), s.c);
    for oy in 0..o.h {
        for ox in 0..o.w {
            let obase = (oy * o.w + ox) * c;
            for ch in 0..c {
                let q = arg[obase + ch] as usize;
                let (ddy, ddx) = (q / 2, q % 2);
                dst[((2 * oy + ddy) * s.w + 2 * ox + ddx) * c + ch] = g[obase + ch];
            }
        }
    }
}

/// Per-channel sums over the rows of `rows × c` data: `f(block_start_row, block_rows, acc)`
/// adds one fixed block of `REDUCE_ROWS` rows into `acc` (`k·c` long, quantity-major).
/// Blocks run in parallel and are summed in block order (determinism).
pub fn col_reduce<F: Scalar>(
    rows: usize,
    c: usize,
    k: usize,
    f: impl Fn(usize, usize, &mut [F]) + Sync,
) -> Vec<F> {
    let chunks = rows.div_ceil(REDUCE_ROWS);
    let partials: Vec<Vec<F>> = (0..chunks)
        .into_par_iter()
        .map(|ch| {
            let mut acc = vec![F::zero(); k * c];
            let r0 = ch * REDUCE_ROWS;
            f(r0, REDUCE_ROWS.min(rows - r0), &mut acc);
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

// Row kernels of BatchNorm. Each takes the row width `w` (= the channel count) and is
// called through `by_channels!` with `w` a constant for the common widths, so after inlining
// the per-channel loops have a known length: no bounds checks, vector registers.

/// `acc[j] += Σ_rows x[row, j]` (`mean = None`) or `Σ_rows (x[row, j] − mean[j])²`.
#[inline(always)]
pub(super) fn col_sums<F: Scalar>(w: usize, x: &[F], mean: Option<&[F]>, acc: &mut [F]) {
    // Local accumulators (registers once `w` is a constant), added to `acc` at the end.
    let mut loc = [F::zero(); MAX_LOCAL];
    let a = if w <= MAX_LOCAL {
        &mut loc[..w]
    } else {
        &mut acc[..w]
    };
    match mean {
        None => {
            for row in x.chunks_exact(w) {
                for (a, &v) in a.iter_mut().zip(row) {
                    *a += v;
                }
            }
        }
        Some(m) => {
            let m = &m[..w];
            for row in x.chunks_exact(w) {
                for ((a, &v), &mj) in a.iter_mut().zip(row).zip(m) {
                    *a += (v - mj) * (v - mj);
                }
            }
        }
    }
    if w <= MAX_LOCAL {
        for (t, &v) in acc.iter_mut().zip(&loc[..w]) {
            *t += v;
        }
    }
}

/// Widths up to this use stack accumulators in the column sums.
const MAX_LOCAL: usize = 64;

/// `x̂ = (x − m)·is`, `out = relu(g·x̂ + b)`, row by row.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bn_fwd_rows<F: Scalar>(
    w: usize,
    x: &[F],
    xh: &mut [F],
    out: &mut [F],
    m: &[F],
    is: &[F],
    g: &[F],
    b: &[F],
) {
    let (m, is, g, b) = (&m[..w], &is[..w], &g[..w], &b[..w]);
    let rows = x.chunks_exact(w).zip(xh.chunks_exact_mut(w));
    for ((xr, hr), or) in rows.zip(out.chunks_exact_mut(w)) {
        let par = m.iter().zip(is).zip(g.iter().zip(b));
        for (((&v, h), o), ((&mj, &sj), (&gj, &bj))) in xr.iter().zip(hr).zip(or).zip(par) {
            let t = (v - mj) * sj;
            *h = t;
            *o = (gj * t + bj).max(F::zero());
        }
    }
}

/// `sb[j] += Σ g`, `sg[j] += Σ g·x̂` over rows.
#[inline(always)]
pub(super) fn bn_bwd_sums<F: Scalar>(w: usize, g: &[F], xh: &[F], sb: &mut [F], sg: &mut [F]) {
    let (mut lb, mut lg) = ([F::zero(); MAX_LOCAL], [F::zero(); MAX_LOCAL]);
    let local = w <= MAX_LOCAL;
    let (b, s) = if local {
        (&mut lb[..w], &mut lg[..w])
    } else {
        (&mut sb[..w], &mut sg[..w])
    };
    for (gr, hr) in g.chunks_exact(w).zip(xh.chunks_exact(w)) {
        for (((b, s), &gv), &hv) in b.iter_mut().zip(s.iter_mut()).zip(gr).zip(hr) {
            *b += gv;
            *s += gv * hv;
        }
    }
    if local {
        for j in 0..w {
            sb[j] += lb[j];
            sg[j] += lg[j];
        }
    }
}

/// `dx = a·(g − b − x̂·s)` row by row.
#[inline(always)]
pub(super) fn bn_bwd_rows<F: Scalar>(
    w: usize,
    d: &mut [F],
    g: &[F],
    xh: &[F],
    a: &[F],
    b: &[F],
    s: &[F],
) {
    let (a, b, s) = (&a[..w], &b[..w], &s[..w]);
    for ((dr, gr), hr) in d
        .chunks_exact_mut(w)
        .zip(g.chunks_exact(w))
        .zip(xh.chunks_exact(w))
    {
        let par = a.iter().zip(b).zip(s);
        for (((dv, &gv), &hv), ((&aj, &bj), &sj)) in dr.iter_mut().zip(gr).zip(hr).zip(par) {
            *dv = aj * (gv - bj - hv * sj);
        }
    }
}

/// The row width to pass to the kernels: the constant `C` when specialised, else `c`.
#[inline(always)]
pub(super) const fn width(c_const: usize, c: usize) -> usize {
    if c_const > 0 {
        c_const
    } else {
        c
    }
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
            let s = col_reduce(rows, c, 1, |r0, n, acc: &mut [F]| {
                let blk = &xs[r0 * c..(r0 + n) * c];
                by_channels!(c, |C| col_sums(width(C, c), blk, None, acc))
            });
            let mean: Array1<F> = s.iter().map(|&v| v / nf).collect();
            let ms = mean.as_slice().expect("contiguous");
            let q = col_reduce(rows, c, 1, |r0, n, acc: &mut [F]| {
                let blk = &xs[r0 * c..(r0 + n) * c];
                by_channels!(c, |C| col_sums(width(C, c), blk, Some(ms), acc))
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
        let blk = REDUCE_ROWS * c;
        xhat.as_slice_mut()
            .unwrap()
            .par_chunks_mut(blk)
            .zip(out.as_slice_mut().unwrap().par_chunks_mut(blk))
            .zip(xs.par_chunks(blk))
            .for_each(|((xh, o), xr)| {
                by_channels!(c, |C| bn_fwd_rows(width(C, c), xr, xh, o, ms, is, gs, bs))
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
    // ReLU mask applied to the incoming gradient.
    let mut g = vec![F::zero(); rows * c];
    let blk = REDUCE_ROWS * c.max(1);
    g.par_chunks_mut(blk)
        .zip(ds.par_chunks(blk).zip(os.par_chunks(blk)))
        .for_each(|(g, (d, o))| {
            for ((g, &d), &o) in g.iter_mut().zip(d).zip(o) {
                *g = if o > F::zero() { d } else { F::zero() };
            }
        });
    let sums = col_reduce(rows, c, 2, |r0, n, acc: &mut [F]| {
        let (gb, xb) = (&g[r0 * c..(r0 + n) * c], &xh[r0 * c..(r0 + n) * c]);
        let (sb, sg) = acc.split_at_mut(c);
        by_channels!(c, |C| bn_bwd_sums(width(C, c), gb, xb, sb, sg))
    });
    let dbeta: Array1<F> = sums[..c].iter().copied().collect();
    let dgamma: Array1<F> = sums[c..].iter().copied().collect();
    let mut dx = Array2::<F>::zeros((rows, c));
    let (gs, is) = (gamma.as_slice().unwrap(), cache.inv_std.as_slice().unwrap());
    let nf = F::c(rows.max(1) as f64);
    // dx = a_j·(g − b_j − x̂·s_j) in training (batch statistics), a_j·g in eval.
    let a: Vec<F> = (0..c).map(|j| gs[j] * is[j]).collect();
    let (b, sl): (Vec<F>, Vec<F>) = if cache.train {
        (0..c).map(|j| (sums[j] / nf, sums[c + j] / nf)).unzip()
    } else {
        (vec![F::zero(); c], vec![F::zero(); c])
    };
    if rows > 0 && c > 0 {
        dx.as_slice_mut()
            .unwrap()
            .par_chunks_mut(blk)
            .zip(g.par_chunks(blk).zip(xh.par_chunks(blk)))
            .for_each(|(d, (gv, xv))| {
                by_channels!(c, |C| bn_bwd_rows(width(C, c), d, gv, xv, &a, &b, &sl))
            });
    }
    (dx, dgamma, dbeta)
}
