//! GEMM on ndarray views through faer's kernels: [`gemm_seq`] single-threaded, for code that
//! parallelises at a coarser level with rayon (one row chunk per task) and must not nest
//! threaded GEMMs inside rayon tasks; [`par_gemm`] and [`par_gemm_tn`] split fixed row
//! chunks over rayon (no second thread pool next to rayon's, results independent of the
//! thread count). Generic over [`Scalar`] (f32 runs, f64 gradient checks).

use crate::Scalar;
use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// Rows per task of [`par_gemm`] / [`par_gemm_tn`] (fixed: determinism).
pub const PAR_ROWS: usize = 512;

macro_rules! faer_gemm {
    ($name:ident, $t:ty) => {
        /// `c = a·b` (or `c += a·b`), sequential, shapes checked by the caller.
        pub(crate) fn $name(
            mut c: ArrayViewMut2<$t>,
            a: ArrayView2<$t>,
            b: ArrayView2<$t>,
            accumulate: bool,
        ) {
            let view = |x: &ArrayView2<$t>| {
                let s = x.strides();
                // SAFETY: pointer, shape and strides come from a live ndarray view that
                // outlives the returned reference.
                unsafe { MatRef::from_raw_parts(x.as_ptr(), x.nrows(), x.ncols(), s[0], s[1]) }
            };
            let s = c.strides().to_vec();
            let (m, n) = (c.nrows(), c.ncols());
            // SAFETY: as above, for a mutable view that is exclusively borrowed here.
            let cm = unsafe { MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, n, s[0], s[1]) };
            let acc = if accumulate {
                Accum::Add
            } else {
                Accum::Replace
            };
            faer::linalg::matmul::matmul(cm, acc, view(&a), view(&b), 1.0 as $t, Par::Seq);
            clear_upper_simd_state();
        }
    };
}
faer_gemm!(gemm_f32, f32);
faer_gemm!(gemm_f64, f64);

/// `c = a·b` (or `c += a·b` when `accumulate`), sequential. Shapes must agree.
pub fn gemm_seq<F: Scalar>(
    c: ArrayViewMut2<F>,
    a: ArrayView2<F>,
    b: ArrayView2<F>,
    accumulate: bool,
) {
    assert_eq!(a.ncols(), b.nrows(), "gemm_seq: inner dimensions");
    assert_eq!(
        (c.nrows(), c.ncols()),
        (a.nrows(), b.ncols()),
        "gemm_seq: output shape"
    );
    F::gemm(c, a, b, accumulate);
}

/// `a·b`, rows of `a` in fixed chunks of [`PAR_ROWS`] in parallel.
pub fn par_gemm<F: Scalar>(a: ArrayView2<F>, b: ArrayView2<F>) -> Array2<F> {
    assert_eq!(a.ncols(), b.nrows(), "par_gemm: inner dimensions");
    let mut c = Array2::<F>::zeros((a.nrows(), b.ncols()));
    c.axis_chunks_iter_mut(Axis(0), PAR_ROWS)
        .into_par_iter()
        .zip(a.axis_chunks_iter(Axis(0), PAR_ROWS))
        .for_each(|(cc, ac)| F::gemm(cc, ac, b, false));
    c
}

/// `aᵀ·b` (a reduction over the rows of `a` and `b`): one partial product per fixed chunk of
/// [`PAR_ROWS`] rows in parallel, summed in chunk order.
pub fn par_gemm_tn<F: Scalar>(a: ArrayView2<F>, b: ArrayView2<F>) -> Array2<F> {
    assert_eq!(a.nrows(), b.nrows(), "par_gemm_tn: shared rows");
    let (m, n) = (a.ncols(), b.ncols());
    let parts: Vec<Array2<F>> = a
        .axis_chunks_iter(Axis(0), PAR_ROWS)
        .into_par_iter()
        .zip(b.axis_chunks_iter(Axis(0), PAR_ROWS))
        .map(|(ac, bc)| {
            let mut p = Array2::<F>::zeros((m, n));
            F::gemm(p.view_mut(), ac.t(), bc, false);
            p
        })
        .collect();
    let mut it = parts.into_iter();
    let mut c = it.next().unwrap_or_else(|| Array2::zeros((m, n)));
    for p in it {
        c += &p;
    }
    c
}

/// `a·b + c`, fused (one rounding) when `FMA` — only where the target has FMA instructions;
/// without them `mul_add` would be a slow library call.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Grow `buf` to at least `len` values (new ones zero, existing ones kept): scratch that is
/// reused without clearing because every use writes what it reads.
pub(crate) fn grow<F: Scalar>(buf: &mut Vec<F>, len: usize) {
    if buf.len() < len {
        buf.resize(len, F::zero());
    }
}

/// `buf[..rows·cols]` as a read-only `rows × cols` matrix.
pub(crate) fn view<F>(buf: &[F], rows: usize, cols: usize) -> ArrayView2<'_, F> {
    ArrayView2::from_shape((rows, cols), &buf[..rows * cols]).expect("buffer holds the matrix")
}

/// `buf[..rows·cols]` as a `rows × cols` matrix.
pub(crate) fn view_mut<F>(buf: &mut [F], rows: usize, cols: usize) -> ArrayViewMut2<'_, F> {
    ArrayViewMut2::from_shape((rows, cols), &mut buf[..rows * cols])
        .expect("buffer holds the matrix")
}

/// The vector instruction set the kernels are compiled for at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Simd {
    /// AVX-512F + FMA (512-bit registers).
    Avx512,
    /// AVX2 + FMA (256-bit registers).
    Avx2,
    /// Whatever the build's baseline target allows.
    Baseline,
}

/// The widest kernel this CPU can run.
pub fn simd_level() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") && has!("avx2") && has!("fma") {
            return Simd::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::Baseline
}

/// faer's AVX kernels can return with the upper halves of the vector registers dirty; the
/// scalar (SSE-encoded) code that follows then pays a state-transition penalty on every
/// instruction (measured: 60× slower activation functions). `vzeroupper` clears it.
#[inline]
fn clear_upper_simd_state() {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx") {
            // SAFETY: the CPU supports AVX (checked above), and vzeroupper only zeroes the
            // upper halves of the vector registers, which hold no live values between
            // Rust statements.
            unsafe { zeroupper() }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn zeroupper() {
    std::arch::x86_64::_mm256_zeroupper();
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, ShapeBuilder};

    #[test]
    fn parallel_gemms_match_ndarray_over_several_chunks() {
        let a = Array2::from_shape_fn((1300, 9), |(i, j)| ((i * 3 + j * 5) % 17) as f64 * 0.1);
        let b = Array2::from_shape_fn((9, 4), |(i, j)| (i as f64 - j as f64) * 0.2);
        let c = Array2::from_shape_fn((1300, 4), |(i, j)| ((i + 2 * j) % 7) as f64 * 0.3);
        let ab = par_gemm(a.view(), b.view());
        assert!(ab
            .iter()
            .zip(a.dot(&b).iter())
            .all(|(x, y)| (x - y).abs() < 1e-9));
        let atc = par_gemm_tn(a.view(), c.view());
        let want = a.t().dot(&c);
        assert!(atc
            .iter()
            .zip(want.iter())
            .all(|(x, y)| (x - y).abs() < 1e-9));
        let empty = par_gemm_tn(a.slice(ndarray::s![..0, ..]), c.slice(ndarray::s![..0, ..]));
        assert_eq!(empty, Array2::<f64>::zeros((9, 4)));
    }

    #[test]
    fn matches_ndarray_dot_including_transposed_views() {
        let a = Array2::from_shape_fn((7, 5), |(i, j)| (i * 5 + j) as f32 * 0.1 - 1.0);
        let b = Array2::from_shape_fn((6, 5), |(i, j)| (i + 2 * j) as f32 * 0.05);
        let mut c = Array2::<f32>::zeros((7, 6));
        gemm_seq(c.view_mut(), a.view(), b.t(), false);
        let a64 = a.mapv(f64::from);
        let b64 = b.mapv(f64::from);
        let mut c64 = Array2::<f64>::zeros((7, 6));
        gemm_seq(c64.view_mut(), a64.view(), b64.t(), false);
        assert!(c64
            .iter()
            .zip(a64.dot(&b64.t()).iter())
            .all(|(x, y)| (x - y).abs() < 1e-12));
        let want = a.dot(&b.t());
        for (x, y) in c.iter().zip(want.iter()) {
            assert!((x - y).abs() < 1e-5);
        }
        gemm_seq(c.view_mut(), a.view(), b.t(), true);
        for (x, y) in c.iter().zip(want.iter()) {
            assert!((x - 2.0 * y).abs() < 1e-5);
        }
        let mut f = Array2::<f32>::zeros((7, 6).f());
        gemm_seq(f.view_mut(), a.view(), b.t(), false);
        for (x, y) in f.iter().zip(want.iter()) {
            assert!((x - y).abs() < 1e-5);
        }
    }
}
