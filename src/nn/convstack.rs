//! The CPU conv stack of [`super::cnn::Cnn`] (per block: 3×3 convolution, BatchNorm, ReLU,
//! 2×2 max-pooling but after the last), forward and backward, fused per chunk of images.
//!
//! A chunk is a fixed run of images ([`images_per_chunk`], from the shapes alone) whose
//! im2col columns fit in cache: one task builds them, runs the chunk's GEMM, and reduces its
//! BatchNorm moments (or, backward, its gradient sums, weight-gradient part and input
//! gradient) while they are hot. Per block and direction there are two parallel regions
//! (before and after BatchNorm's batch reduction), nothing batch-sized is zero-filled, and
//! the im2col matrices are not kept: backward rebuilds a chunk's columns from the block
//! input it keeps (9× smaller).
//!
//! Determinism: batch statistics are merged from per-chunk (count, mean, M2) in chunk order
//! (Chan et al.'s pairwise update), weight-gradient parts and gradient sums are added in chunk
//! order, so results do not depend on the thread count. The unfused kernels of
//! [`super::layers`] are the reference the tests compare against.

use super::cnn::ConvBlock;
use super::layers::{
    bn_bwd_rows, bn_bwd_sums, by_channels, col2im_image, col_sums, im2col_image, pool_image,
    unpool_image, width, Nhwc, BN_EPS,
};
use crate::linalg::{gemm_seq, grow, view, view_mut};
use crate::Scalar;
use ndarray::{Array1, Array2};
use rayon::prelude::*;

/// Bytes of im2col columns a chunk may hold (about half of a typical L2 cache).
const CHUNK_BYTES: usize = 192 * 1024;

/// BatchNorm statistics a block used: batch statistics in training (`train`), else the
/// running ones.
#[derive(Clone, Debug)]
pub struct BnStats<F> {
    pub mean: Vec<F>,
    /// Biased variance.
    pub var: Vec<F>,
    pub inv_std: Vec<F>,
    pub train: bool,
}

/// What backward needs of one block, per chunk.
#[derive(Clone, Debug)]
pub struct BlockTape<F> {
    /// The block input's shape (whole batch).
    pub shape: Nhwc,
    /// The block input images (empty after [`StackTape::drop_inputs`]).
    pub input: Vec<Vec<F>>,
    /// The normalised convolution output `x̂`.
    pub xhat: Vec<Vec<F>>,
    /// Max-pool winners (empty for the last block).
    pub arg: Vec<Vec<u8>>,
    pub stats: BnStats<F>,
}

/// The forward tape of the whole stack.
#[derive(Clone, Debug)]
pub struct StackTape<F> {
    pub ipc: usize,
    pub blocks: Vec<BlockTape<F>>,
}

impl<F> StackTape<F> {
    /// Drop the block inputs, which only the weight gradients read.
    pub fn drop_inputs(&mut self) {
        for b in &mut self.blocks {
            b.input = Vec::new();
        }
    }
}

/// Weight, γ and β gradients per block.
pub type StackGrads<F> = (Vec<Array2<F>>, Vec<Array1<F>>, Vec<Array1<F>>);

/// Images per chunk: as many as keep the largest block's im2col columns within
/// [`CHUNK_BYTES`] (at least one).
pub fn images_per_chunk<F>(blocks: &[ConvBlock<F>], s0: Nhwc) -> usize {
    let (mut s, mut worst) = (s0, 1usize);
    for (i, b) in blocks.iter().enumerate() {
        worst = worst.max(s.h * s.w * 9 * s.c * std::mem::size_of::<F>());
        s = Nhwc {
            c: b.w.ncols(),
            ..s
        };
        if i + 1 < blocks.len() {
            s = s.pooled();
        }
    }
    (CHUNK_BYTES / worst).max(1)
}

/// Per-image shape of `s`.
fn one(s: Nhwc) -> Nhwc {
    Nhwc { n: 1, ..s }
}

/// im2col of the images in `input` into the first `rows × 9c` values of `cols` (grown when
/// needed, never cleared: every value is written); returns `rows`.
fn im2col_chunk<F: Scalar>(input: &[F], s: Nhwc, cols: &mut Vec<F>) -> usize {
    let (img, k) = (s.h * s.w * s.c, 9 * s.c);
    let rows = input.len() / img * s.h * s.w;
    grow(cols, rows * k);
    let pairs = cols
        .chunks_exact_mut(s.h * s.w * k)
        .zip(input.chunks_exact(img));
    for (dst, src) in pairs {
        by_channels!(s.c, |C| im2col_image::<F, C>(dst, src, one(s)));
    }
    rows
}

/// Per-channel (count, mean, M2) of a chunk.
type Moments<F> = (usize, Vec<F>, Vec<F>);

/// Per-channel (count, mean, M2) of a chunk's `rows × c` values.
fn moments<F: Scalar>(x: &[F], c: usize) -> Moments<F> {
    let rows = x.len() / c;
    let mut sum = vec![F::zero(); c];
    by_channels!(c, |C| col_sums(width(C, c), x, None, &mut sum));
    let nf = F::c(rows.max(1) as f64);
    let mean: Vec<F> = sum.iter().map(|&v| v / nf).collect();
    let mut m2 = vec![F::zero(); c];
    by_channels!(c, |C| col_sums(width(C, c), x, Some(&mean), &mut m2));
    (rows, mean, m2)
}

/// Merge per-chunk moments in order (Chan et al.): the batch mean and biased variance.
fn merge_moments<F: Scalar>(parts: &[Moments<F>], c: usize) -> (Vec<F>, Vec<F>) {
    let Some((first, rest)) = parts.split_first() else {
        return (vec![F::zero(); c], vec![F::zero(); c]);
    };
    let (mut n, mut mean, mut m2) = first.clone();
    for (nb, mb, m2b) in rest {
        let tot = n + nb;
        let (fa, fb, ft) = (F::c(n as f64), F::c(*nb as f64), F::c(tot as f64));
        for j in 0..mean.len() {
            let d = mb[j] - mean[j];
            mean[j] += d * fb / ft;
            m2[j] += m2b[j] + d * d * fa * fb / ft;
        }
        n = tot;
    }
    let nf = F::c(n.max(1) as f64);
    (mean, m2.into_iter().map(|v| v / nf).collect())
}

/// One block forward over all chunks; returns its tape and the next block's chunk inputs
/// (pooled) or the last block's activations.
fn block_forward<F: Scalar>(
    blk: &ConvBlock<F>,
    inputs: Vec<Vec<F>>,
    s: Nhwc,
    train: bool,
    pool: bool,
) -> (BlockTape<F>, Vec<Vec<F>>) {
    let cout = blk.w.ncols();
    let pre: Vec<(Vec<F>, Moments<F>)> = inputs
        .par_iter()
        .map_init(Vec::new, |cols, inp| {
            let rows = im2col_chunk(inp, s, cols);
            let mut out = vec![F::zero(); rows * cout];
            let a = view(cols, rows, 9 * s.c);
            gemm_seq(view_mut(&mut out, rows, cout), a, blk.w.view(), false);
            let m = if train {
                moments(&out, cout)
            } else {
                (0, vec![], vec![])
            };
            (out, m)
        })
        .collect();
    let (pre, parts): (Vec<Vec<F>>, Vec<Moments<F>>) = pre.into_iter().unzip();
    let (mean, var) = if train {
        merge_moments(&parts, cout)
    } else {
        (blk.running_mean.to_vec(), blk.running_var.to_vec())
    };
    let eps = F::c(BN_EPS);
    let inv_std: Vec<F> = var.iter().map(|&v| F::one() / (v + eps).sqrt()).collect();
    let so = Nhwc { c: cout, ..s };
    let stats = BnStats {
        mean,
        var,
        inv_std,
        train,
    };
    let done: Vec<(Vec<F>, Vec<F>, Vec<u8>)> = pre
        .into_par_iter()
        .map(|xh| normalise_pool(blk, &stats, so, xh, pool))
        .collect();
    let mut tape = BlockTape {
        shape: s,
        input: inputs,
        xhat: Vec::with_capacity(done.len()),
        arg: Vec::with_capacity(done.len()),
        stats,
    };
    let mut next = Vec::with_capacity(done.len());
    for (xh, nx, am) in done {
        tape.xhat.push(xh);
        tape.arg.push(am);
        next.push(nx);
    }
    if !pool {
        tape.arg.clear();
    }
    (tape, next)
}

/// The second half of a chunk's forward: the convolution output `xh` (shape `so` per image)
/// normalised in place, then `relu(γ·x̂ + β)`, max-pooled when `pool`. Returns `x̂`, the
/// chunk's output and the pooling winners (empty without pooling).
fn normalise_pool<F: Scalar>(
    blk: &ConvBlock<F>,
    st: &BnStats<F>,
    so: Nhwc,
    mut xh: Vec<F>,
    pool: bool,
) -> (Vec<F>, Vec<F>, Vec<u8>) {
    let (g, b) = (blk.gamma.as_slice().unwrap(), blk.beta.as_slice().unwrap());
    let cout = so.c;
    let mut out = vec![F::zero(); xh.len()];
    let p = (&st.mean[..], &st.inv_std[..], g, b);
    by_channels!(cout, |C| normalise_relu(
        width(C, cout),
        &mut xh,
        &mut out,
        p
    ));
    if !pool {
        return (xh, out, Vec::new());
    }
    let (img, po) = (so.h * so.w * cout, so.pooled());
    let pimg = po.h * po.w * cout;
    let mut next = vec![F::zero(); out.len() / img * pimg];
    let mut arg = vec![0u8; next.len()];
    for ((src, dst), am) in out
        .chunks_exact(img)
        .zip(next.chunks_exact_mut(pimg))
        .zip(arg.chunks_exact_mut(pimg))
    {
        pool_image(src, one(so), dst, am);
    }
    (xh, next, arg)
}

/// `x̂ = (x − m)·is` in place, `out = relu(g·x̂ + b)`, row by row.
#[inline(always)]
fn normalise_relu<F: Scalar>(w: usize, x: &mut [F], out: &mut [F], p: (&[F], &[F], &[F], &[F])) {
    let (m, is, g, b) = (&p.0[..w], &p.1[..w], &p.2[..w], &p.3[..w]);
    for (xr, or) in x.chunks_exact_mut(w).zip(out.chunks_exact_mut(w)) {
        let par = m.iter().zip(is).zip(g.iter().zip(b));
        for ((v, o), ((&mj, &sj), (&gj, &bj))) in xr.iter_mut().zip(or).zip(par) {
            let t = (*v - mj) * sj;
            *v = t;
            *o = (gj * t + bj).max(F::zero());
        }
    }
}

/// Forward through the conv stack: `x` holds `s0.n` images of `s0.h·s0.w·s0.c` values. Returns
/// the tape and the last block's activations (`n × h·w·c`, NHWC per image).
pub fn forward<F: Scalar>(
    blocks: &[ConvBlock<F>],
    x: &[F],
    s0: Nhwc,
    train: bool,
    ipc: usize,
) -> (StackTape<F>, Vec<F>) {
    let img = s0.h * s0.w * s0.c;
    let mut inputs: Vec<Vec<F>> = x.par_chunks(img * ipc).map(<[F]>::to_vec).collect();
    let mut s = s0;
    let mut tapes = Vec::with_capacity(blocks.len());
    for (i, blk) in blocks.iter().enumerate() {
        let pool = i + 1 < blocks.len();
        let (tape, next) = block_forward(blk, inputs, s, train, pool);
        tapes.push(tape);
        inputs = next;
        s = Nhwc {
            c: blk.w.ncols(),
            ..s
        };
        if pool {
            s = s.pooled();
        }
    }
    let flat = inputs.concat();
    let tape = StackTape { ipc, blocks: tapes };
    (tape, flat)
}

/// Backward through the conv stack from the gradient `gflat` of the last block's activations
/// (`n × h·w·c`): the parameter gradients (when `param_grads`) and the input gradient (when
/// `input_grad`, `n × h·w·c₀`).
pub fn backward<F: Scalar>(
    blocks: &[ConvBlock<F>],
    tape: &StackTape<F>,
    gflat: &[F],
    param_grads: bool,
    input_grad: bool,
) -> (Option<StackGrads<F>>, Option<Vec<F>>) {
    let last = tape.blocks.last().expect("at least one block");
    let per = last.shape.h * last.shape.w * blocks[blocks.len() - 1].w.ncols();
    let mut gin: Vec<Vec<F>> = gflat
        .par_chunks(per * tape.ipc)
        .map(<[F]>::to_vec)
        .collect();
    let (mut gw, mut gg, mut gb) = (vec![], vec![], vec![]);
    for i in (0..blocks.len()).rev() {
        let need_in = i > 0 || input_grad;
        let (g, dw, dgamma, dbeta) =
            block_backward(&blocks[i], &tape.blocks[i], gin, param_grads, need_in);
        gin = g;
        if param_grads {
            gw.push(dw.expect("weight gradient"));
            gg.push(dgamma);
            gb.push(dbeta);
        }
    }
    let grads = param_grads.then(|| {
        gw.reverse();
        gg.reverse();
        gb.reverse();
        (gw, gg, gb)
    });
    (grads, input_grad.then(|| gin.concat()))
}

/// The gradient w.r.t. a block's pre-activation output, per chunk: the incoming gradient
/// routed back through the pooling (when the block pools) and masked by the ReLU.
fn masked_grad<F: Scalar>(blk: &ConvBlock<F>, t: &BlockTape<F>, c: usize, gin: &[F]) -> Vec<F> {
    let cout = blk.w.ncols();
    let so = Nhwc { c: cout, ..t.shape };
    let mut g = if t.arg.is_empty() {
        gin.to_vec()
    } else {
        let (img, pimg) = (so.h * so.w * cout, so.pooled().h * so.pooled().w * cout);
        let mut g = vec![F::zero(); t.xhat[c].len()];
        for ((dst, src), am) in g
            .chunks_exact_mut(img)
            .zip(gin.chunks_exact(pimg))
            .zip(t.arg[c].chunks_exact(pimg))
        {
            unpool_image(src, am, one(so), dst);
        }
        g
    };
    let (gm, bt) = (blk.gamma.as_slice().unwrap(), blk.beta.as_slice().unwrap());
    by_channels!(cout, |C| relu_mask(
        width(C, cout),
        &mut g,
        &t.xhat[c],
        gm,
        bt
    ));
    g
}

/// `g ← 0` where the block's output `relu(γ·x̂ + β)` is zero, row by row.
#[inline(always)]
fn relu_mask<F: Scalar>(w: usize, g: &mut [F], xh: &[F], gm: &[F], bt: &[F]) {
    let (gm, bt) = (&gm[..w], &bt[..w]);
    for (gr, hr) in g.chunks_exact_mut(w).zip(xh.chunks_exact(w)) {
        for (((gv, &h), &gj), &bj) in gr.iter_mut().zip(hr).zip(gm).zip(bt) {
            let off = (gj * h + bj).max(F::zero()) <= F::zero();
            *gv = if off { F::zero() } else { *gv };
        }
    }
}

/// The second half of a chunk's backward: `dpre = a·(g − b − x̂·s)`, the chunk's part of
/// the weight gradient (im2col rebuilt from the kept input) and its input gradient.
fn chunk_backward<F: Scalar>(
    blk: &ConvBlock<F>,
    t: &BlockTape<F>,
    c: usize,
    g: &[F],
    (a, b, sl): (&[F], &[F], &[F]),
    (cols, dcols): &mut (Vec<F>, Vec<F>),
    (param_grads, need_in): (bool, bool),
) -> (Option<Array2<F>>, Vec<F>) {
    let (cout, s) = (blk.w.ncols(), t.shape);
    let (k, n_rows) = (9 * s.c, g.len() / cout);
    let mut dpre = vec![F::zero(); g.len()];
    let xh = &t.xhat[c];
    by_channels!(cout, |C| bn_bwd_rows(
        width(C, cout),
        &mut dpre,
        g,
        xh,
        a,
        b,
        sl
    ));
    let dv = view(&dpre, n_rows, cout);
    let dw = param_grads.then(|| {
        let rows = im2col_chunk(&t.input[c], s, cols);
        debug_assert_eq!(rows, n_rows);
        let mut dw = Array2::<F>::zeros((k, cout));
        gemm_seq(dw.view_mut(), view(cols, n_rows, k).t(), dv, false);
        dw
    });
    let mut gprev = Vec::new();
    if need_in {
        grow(dcols, n_rows * k);
        gemm_seq(view_mut(dcols, n_rows, k), dv, blk.w.t(), false);
        gprev = vec![F::zero(); n_rows * s.c];
        let img = s.h * s.w;
        let pairs = gprev
            .chunks_exact_mut(img * s.c)
            .zip(dcols.chunks_exact(img * k));
        for (dst, src) in pairs {
            by_channels!(s.c, |C| col2im_image::<F, C>(dst, src, one(s)));
        }
    }
    (dw, gprev)
}

type BlockGrads<F> = (Vec<Vec<F>>, Option<Array2<F>>, Array1<F>, Array1<F>);

/// One block backward over all chunks: the gradient w.r.t. its input per chunk (when
/// `need_in`), its weight gradient (when `param_grads`), dγ and dβ.
fn block_backward<F: Scalar>(
    blk: &ConvBlock<F>,
    t: &BlockTape<F>,
    gin: Vec<Vec<F>>,
    param_grads: bool,
    need_in: bool,
) -> BlockGrads<F> {
    let (cout, s) = (blk.w.ncols(), t.shape);
    let k = 9 * s.c;
    let train = t.stats.train;
    let gs: Vec<(Vec<F>, Vec<F>)> = gin
        .par_iter()
        .enumerate()
        .map(|(c, gi)| {
            let g = masked_grad(blk, t, c, gi);
            let mut sums = vec![F::zero(); 2 * cout];
            if train || param_grads {
                let (sb, sg) = sums.split_at_mut(cout);
                by_channels!(cout, |C| bn_bwd_sums(
                    width(C, cout),
                    &g,
                    &t.xhat[c],
                    sb,
                    sg
                ));
            }
            (g, sums)
        })
        .collect();
    let mut sums = vec![F::zero(); 2 * cout];
    for (_, p) in &gs {
        for (acc, &v) in sums.iter_mut().zip(p) {
            *acc += v;
        }
    }
    let rows = F::c(s.rows().max(1) as f64);
    let st = &t.stats;
    let a: Vec<F> = (0..cout).map(|j| blk.gamma[j] * st.inv_std[j]).collect();
    let (b, sl): (Vec<F>, Vec<F>) = if train {
        (0..cout)
            .map(|j| (sums[j] / rows, sums[cout + j] / rows))
            .unzip()
    } else {
        (vec![F::zero(); cout], vec![F::zero(); cout])
    };
    let coef = (&a[..], &b[..], &sl[..]);
    let parts: Vec<(Option<Array2<F>>, Vec<F>)> = gs
        .into_par_iter()
        .enumerate()
        .map_init(
            || (Vec::new(), Vec::new()),
            |scratch, (c, (g, _))| {
                chunk_backward(blk, t, c, &g, coef, scratch, (param_grads, need_in))
            },
        )
        .collect();
    let mut dw: Option<Array2<F>> = None;
    let mut gout = Vec::with_capacity(parts.len());
    for (p, g) in parts {
        if let Some(p) = p {
            match &mut dw {
                Some(acc) => *acc += &p,
                None => dw = Some(p),
            }
        }
        gout.push(g);
    }
    let dw = dw.or_else(|| param_grads.then(|| Array2::zeros((k, cout))));
    let dbeta = Array1::from(sums[..cout].to_vec());
    let dgamma = Array1::from(sums[cout..].to_vec());
    (gout, dw, dgamma, dbeta)
}
