//! The production engine of the exact Lee–Seung iteration (Frobenius, f32): the same
//! updates as the generic reference in [`super::mu`], computed with one fused pass over the
//! data per iteration.
//!
//! One iteration (identical order and formulas to [`super::mu`]):
//! 1. `Wᵀ ← Wᵀ ⊙ (VᵀH) ⊘ (Wᵀ·HᵀH + ε)` — `VᵀH` and `HᵀH` were accumulated by the previous
//!    pass (or by the set-up pass), so this is a `p × K` elementwise step and a `K × K`
//!    product;
//! 2. `WWᵀ`;
//! 3. one parallel pass over fixed row chunks of `V` (rayon): for each chunk `c`,
//!    `B = V_c·Wᵀ` (sparse gather, or a sequential faer GEMM for dense data),
//!    `H_c ← H_c ⊙ B ⊘ (H_c·WWᵀ + ε)`, then, while `H_c` and `V_c` are in cache, the chunk's
//!    shares of the next iteration's `HᵀH` (`H_cᵀH_c`) and `VᵀH` (`V_cᵀH_c`, a sparse
//!    scatter or a GEMM) and of the objective term `⟨H, VWᵀ⟩`;
//! 4. the chunk shares are summed **in chunk order** (the chunking depends on `n` only), so
//!    results do not depend on the thread count or on scheduling.
//!
//! The objective is `½(‖V‖² − 2⟨H, VWᵀ⟩ + ⟨HᵀH, WWᵀ⟩)` as in [`super::mu`]. Digit images
//! are ~80 % zeros, so with sparse products one iteration costs about `4·nnz·K + 4·n·K²`
//! FLOPs instead of the dense `4·n·p·K`. Factor entries that fall below the smallest normal
//! f32 are flushed to zero (they would otherwise become subnormal, which slows every later
//! product that touches them by an order of magnitude on x86; a multiplicative update could
//! never bring a value below 1.2e-38 back to a visible size).

use super::mu::{dot64, MuHistory, Trace, EPS};
use super::sparse::{gather_row, scatter_row, simd_level, Csr, Simd, SPARSE_BELOW};
use crate::error::Result;
use crate::linalg::gemm_seq;
use crate::progress::Progress;
use ndarray::{s, Array2, ArrayView2, ArrayViewMut2, Axis, Zip};
use rayon::prelude::*;

/// Rows per chunk of the fused pass: at least 256, at most 64 chunks in all (bounds the
/// memory of the per-chunk `p × K` shares). Depends on `n` only (determinism).
pub fn chunk_rows(n: usize) -> usize {
    256.max(n.div_ceil(64))
}

/// `x ← x ⊙ num ⊘ (den + ε)` with subnormal results flushed to zero.
#[inline]
pub(crate) fn mu_update(x: &mut [f32], num: &[f32], den: &[f32]) {
    let eps = EPS as f32;
    for ((x, &a), &b) in x.iter_mut().zip(num).zip(den) {
        let new = *x * a / (b + eps);
        *x = if new < f32::MIN_POSITIVE { 0.0 } else { new };
    }
}

/// The data matrix in the form the chunk products need.
enum Data<'a> {
    Sparse(Csr),
    Dense(ArrayView2<'a, f32>),
}

/// Scratch and output shares of one row chunk (allocated once, reused every iteration).
struct Chunk {
    start: usize,
    rows: usize,
    /// `V_c·Wᵀ` (`rows × K`), then reused as the denominator buffer.
    b: Array2<f32>,
    den: Array2<f32>,
    /// `V_cᵀH_c` (`p × K`).
    vth: Array2<f32>,
    /// `H_cᵀH_c` (`K × K`).
    hth: Array2<f32>,
    /// `⟨H_c, V_cWᵀ⟩`.
    hb: f64,
}

impl Data<'_> {
    /// `out = V_c·wt` for rows `start..start+rows`.
    fn v_wt(&self, simd: Simd, start: usize, wt: &Array2<f32>, mut out: ArrayViewMut2<f32>) {
        let k = wt.ncols();
        match self {
            Data::Sparse(m) => {
                let ws = wt.as_slice().expect("Wᵀ is standard layout");
                for (r, mut orow) in out.rows_mut().into_iter().enumerate() {
                    let (idx, val) = m.row(start + r);
                    let os = orow.as_slice_mut().expect("rows are contiguous");
                    gather_row(simd, idx, val, ws, k, os);
                }
            }
            Data::Dense(v) => {
                let rows = out.nrows();
                gemm_seq(out, v.slice(s![start..start + rows, ..]), wt.view(), false);
            }
        }
    }
    /// `out = V_cᵀ·h_c` (`p × K`).
    fn vt_h(&self, simd: Simd, start: usize, h: ArrayView2<f32>, out: &mut Array2<f32>) {
        let k = h.ncols();
        match self {
            Data::Sparse(m) => {
                out.fill(0.0);
                let os = out.as_slice_mut().expect("share is standard layout");
                for (r, hrow) in h.rows().into_iter().enumerate() {
                    let (idx, val) = m.row(start + r);
                    let hs = hrow.as_slice().expect("H is standard layout");
                    scatter_row(simd, idx, val, hs, k, os);
                }
            }
            Data::Dense(v) => {
                let rows = h.nrows();
                let vc = v.slice(s![start..start + rows, ..]);
                gemm_seq(out.view_mut(), vc.t(), h, false);
            }
        }
    }
}

/// Exact multiplicative updates (Frobenius) of `h` (`n × K`) and `w` (`K × p`) in place,
/// `max_iter` iterations or until the `tol` rule of [`super::mu`] stops it. Same contract
/// as [`super::mu::mu_fit`]; inputs must be non-negative with agreeing shapes.
pub fn exact_fit(
    v: ArrayView2<f32>,
    h: &mut Array2<f32>,
    w: &mut Array2<f32>,
    max_iter: usize,
    tol: f64,
    progress: Option<&Progress>,
) -> Result<MuHistory> {
    if !h.is_standard_layout() {
        *h = h.as_standard_layout().into_owned();
    }
    let mut pass = Pass::new(v, w.nrows());
    let vv = dot64(v, v);
    let mut basis = Basis::new(w);

    // Set-up pass: VᵀH and HᵀH of the initial H.
    pass.setup(h, &mut basis);
    gemm_seq(basis.wtw.view_mut(), basis.wt.t(), basis.wt.view(), false);
    let initial = 0.5
        * (vv - 2.0 * dot64(basis.vth.view(), basis.wt.view())
            + dot64(basis.hth.view(), basis.wtw.view()));
    let mut trace = Trace::start(initial, tol, max_iter, progress)?;
    let mut converged = false;
    for _ in 0..max_iter {
        basis.update();
        let hb = pass.fused(h, &mut basis);
        let obj = 0.5 * (vv - 2.0 * hb + dot64(basis.hth.view(), basis.wtw.view()));
        if trace.record(obj)? {
            converged = true;
            break;
        }
    }
    w.assign(&basis.wt.t());
    Ok(trace.finish(converged))
}

/// The basis side of the iteration: `Wᵀ`, its Gram matrix, and the `VᵀH`, `HᵀH` summed by
/// the last pass over the chunks.
struct Basis {
    /// `Wᵀ` (`p × K`).
    wt: Array2<f32>,
    /// `WWᵀ` (`K × K`).
    wtw: Array2<f32>,
    /// Denominator buffer of the basis update (`p × K`).
    wden: Array2<f32>,
    vth: Array2<f32>,
    hth: Array2<f32>,
}

impl Basis {
    fn new(w: &Array2<f32>) -> Self {
        let (k, p) = w.dim();
        Basis {
            wt: w.t().as_standard_layout().into_owned(),
            wtw: Array2::zeros((k, k)),
            wden: Array2::zeros((p, k)),
            vth: Array2::zeros((p, k)),
            hth: Array2::zeros((k, k)),
        }
    }

    /// Steps 1–2: `Wᵀ ← Wᵀ ⊙ (VᵀH) ⊘ (Wᵀ·HᵀH + ε)`, then `WWᵀ`.
    fn update(&mut self) {
        gemm_seq(self.wden.view_mut(), self.wt.view(), self.hth.view(), false);
        mu_update(
            self.wt.as_slice_mut().expect("standard layout"),
            self.vth.as_slice().expect("standard layout"),
            self.wden.as_slice().expect("standard layout"),
        );
        gemm_seq(self.wtw.view_mut(), self.wt.t(), self.wt.view(), false);
    }
}

/// The data and its fixed row chunks, for the passes over `V` and `H`.
struct Pass<'a> {
    data: Data<'a>,
    simd: Simd,
    /// Rows per chunk ([`chunk_rows`]).
    ch: usize,
    chunks: Vec<Chunk>,
}

impl<'a> Pass<'a> {
    /// Sparse form when `v` is sparse enough, and zeroed chunk buffers for `K` components.
    fn new(v: ArrayView2<'a, f32>, k: usize) -> Self {
        let (n, p) = v.dim();
        let simd = simd_level();
        let csr = Csr::from_dense(v);
        let data = if csr.density() < SPARSE_BELOW {
            Data::Sparse(csr)
        } else {
            Data::Dense(v)
        };
        let ch = chunk_rows(n);
        let chunks: Vec<Chunk> = (0..n.div_ceil(ch))
            .map(|c| {
                let rows = ch.min(n - c * ch);
                Chunk {
                    start: c * ch,
                    rows,
                    b: Array2::zeros((rows, k)),
                    den: Array2::zeros((rows, k)),
                    vth: Array2::zeros((p, k)),
                    hth: Array2::zeros((k, k)),
                    hb: 0.0,
                }
            })
            .collect();
        Pass {
            data,
            simd,
            ch,
            chunks,
        }
    }

    /// `VᵀH` and `HᵀH` of `h` into `basis` (chunk shares, then [`reduce`]).
    fn setup(&mut self, h: &Array2<f32>, basis: &mut Basis) {
        let (data, simd) = (&self.data, self.simd);
        self.chunks
            .par_iter_mut()
            .zip(h.axis_chunks_iter(Axis(0), self.ch))
            .for_each(|(c, hc)| {
                data.vt_h(simd, c.start, hc, &mut c.vth);
                gemm_seq(c.hth.view_mut(), hc.t(), hc, false);
            });
        reduce(&self.chunks, &mut basis.vth, &mut basis.hth);
    }

    /// Steps 3–4: update `h` chunk by chunk against `basis.wt` / `basis.wtw`, sum the
    /// chunks' `VᵀH`, `HᵀH` into `basis`; returns `⟨H, VWᵀ⟩` (summed in chunk order).
    fn fused(&mut self, h: &mut Array2<f32>, basis: &mut Basis) -> f64 {
        let (data, simd) = (&self.data, self.simd);
        let (wt, wtw) = (&basis.wt, &basis.wtw);
        self.chunks
            .par_iter_mut()
            .zip(h.axis_chunks_iter_mut(Axis(0), self.ch))
            .for_each(|(c, hc)| c.fused(data, simd, hc, wt, wtw));
        reduce(&self.chunks, &mut basis.vth, &mut basis.hth);
        self.chunks.iter().map(|c| c.hb).sum()
    }
}

impl Chunk {
    /// The chunk's share of step 3: `B = V_c·Wᵀ`, `H_c ← H_c ⊙ B ⊘ (H_c·WWᵀ + ε)`, then
    /// `⟨H_c, B⟩`, `H_cᵀH_c` and `V_cᵀH_c` of the updated `H_c`.
    fn fused(
        &mut self,
        data: &Data<'_>,
        simd: Simd,
        mut hc: ArrayViewMut2<f32>,
        wt: &Array2<f32>,
        wtw: &Array2<f32>,
    ) {
        debug_assert_eq!(hc.nrows(), self.rows);
        let k = wt.ncols();
        data.v_wt(simd, self.start, wt, self.b.view_mut());
        gemm_seq(self.den.view_mut(), hc.view(), wtw.view(), false);
        let hs = hc.as_slice_mut().expect("H is standard layout");
        let bs = self.b.as_slice().expect("standard layout");
        mu_update(hs, bs, self.den.as_slice().expect("standard layout"));
        self.hb = hs
            .chunks(k)
            .zip(bs.chunks(k))
            .map(|(x, y)| x.iter().zip(y).map(|(&x, &y)| x * y).sum::<f32>() as f64)
            .sum();
        gemm_seq(self.hth.view_mut(), hc.t(), hc.view(), false);
        data.vt_h(simd, self.start, hc.view(), &mut self.vth);
    }
}

/// `vth = Σ_c V_cᵀH_c`, `hth = Σ_c H_cᵀH_c`, summed in chunk order (blocks of rows of `vth`
/// in parallel; every entry's order of addition is fixed).
fn reduce(chunks: &[Chunk], vth: &mut Array2<f32>, hth: &mut Array2<f32>) {
    vth.axis_chunks_iter_mut(Axis(0), 64)
        .into_par_iter()
        .enumerate()
        .for_each(|(b, mut out)| {
            let r0 = b * 64;
            let rows = out.nrows();
            out.assign(&chunks[0].vth.slice(s![r0..r0 + rows, ..]));
            for c in &chunks[1..] {
                Zip::from(&mut out)
                    .and(&c.vth.slice(s![r0..r0 + rows, ..]))
                    .for_each(|o, &x| *o += x);
            }
        });
    hth.assign(&chunks[0].hth);
    for c in &chunks[1..] {
        *hth += &c.hth;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nmf::{init_factors, mu_from_init, NmfInit, NmfLoss};

    use crate::nmf::tests::lowrank_data as data;

    /// The fused engine follows the generic reference iteration by iteration (f32 both;
    /// only the summation order differs), with several chunks (n > 256).
    fn agrees_with_reference(v: &Array2<f32>, k: usize, want_sparse: bool) {
        let density = Csr::from_dense(v.view()).density();
        assert_eq!(density < SPARSE_BELOW, want_sparse, "density {density}");
        assert!(v.nrows() > chunk_rows(v.nrows()), "needs several chunks");
        let (h0, w0) = init_factors(v.view(), k, NmfInit::Nndsvda, 0).unwrap();
        let (mut hr, mut wr) = (h0.clone(), w0.clone());
        let refr = mu_from_init(v.view(), &mut hr, &mut wr, NmfLoss::Frobenius, 60, 0.0).unwrap();
        let (mut h, mut w) = (h0, w0);
        let fast = exact_fit(v.view(), &mut h, &mut w, 60, 0.0, None).unwrap();
        assert_eq!(fast.iterations, 60);
        let rel = |a: f64, b: f64| (a - b).abs() / b.abs().max(1e-12);
        assert!(rel(fast.initial, refr.initial) < 1e-5);
        for (t, (a, b)) in fast.objective.iter().zip(&refr.objective).enumerate() {
            assert!(rel(*a, *b) < 1e-5, "iteration {t}: {a} vs {b}");
        }
        let scale = wr.iter().fold(0.0f32, |m, &x| m.max(x));
        let dw = (&w - &wr).iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        assert!(dw <= 1e-3 * scale, "basis differs by {dw} (scale {scale})");
        let r = v - &h.dot(&w);
        let direct = 0.5 * r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>();
        assert!(rel(*fast.objective.last().unwrap(), direct) < 1e-3);
        assert!(h.iter().chain(w.iter()).all(|&x| x >= 0.0 && x.is_finite()));
    }

    #[test]
    fn sparse_engine_matches_reference_mu() {
        agrees_with_reference(&data(700, 120, 6, 0.55, 1), 8, true);
    }

    #[test]
    fn dense_engine_matches_reference_mu() {
        agrees_with_reference(&data(600, 90, 5, 0.0, 2), 6, false);
    }

    #[test]
    fn odd_k_uses_the_remainder_columns() {
        // K = 19: one 16-column block plus 3 remainder columns in both sparse kernels.
        agrees_with_reference(&data(520, 64, 8, 0.5, 4), 19, true);
    }

    #[test]
    fn same_numbers_for_any_thread_count() {
        let v = data(900, 80, 5, 0.5, 5);
        let (h0, w0) = init_factors(v.view(), 7, NmfInit::Nndsvda, 0).unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let (mut h, mut w) = (h0.clone(), w0.clone());
                let hist = exact_fit(v.view(), &mut h, &mut w, 25, 0.0, None).unwrap();
                (h, w, hist.objective)
            })
        };
        let (h1, w1, o1) = run(1);
        let (h3, w3, o3) = run(3);
        assert_eq!(o1, o3);
        assert_eq!(h1, h3);
        assert_eq!(w1, w3);
    }

    #[test]
    fn tiny_values_are_flushed_not_subnormal() {
        let mut x = [1.0f32, 1e-30, 2.0];
        mu_update(&mut x, &[1.0, 1e-12, 0.0], &[1.0, 1.0, 1.0]);
        assert_eq!(x, [1.0 / (1.0 + EPS as f32), 0.0, 0.0]);
        assert!(x.iter().all(|v| !v.is_subnormal()));
    }
}
