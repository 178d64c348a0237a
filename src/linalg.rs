//! Single-threaded GEMM on ndarray views (through faer's kernels with `Par::Seq`), for code
//! that parallelises at a coarser level with rayon (one row chunk per task) and must not
//! nest threaded GEMMs inside rayon tasks.

use faer::{Accum, MatMut, MatRef, Par};
use ndarray::{ArrayView2, ArrayViewMut2};

fn as_faer<'a>(a: &ArrayView2<'a, f32>) -> MatRef<'a, f32> {
    let s = a.strides();
    // SAFETY: the pointer, shape and strides come from a live ndarray view of f32 that
    // outlives the returned reference.
    unsafe { MatRef::from_raw_parts(a.as_ptr(), a.nrows(), a.ncols(), s[0], s[1]) }
}

/// `c = a·b` (or `c += a·b` when `accumulate`), sequential. Shapes must agree.
pub fn gemm_seq(
    mut c: ArrayViewMut2<f32>,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    accumulate: bool,
) {
    assert_eq!(a.ncols(), b.nrows(), "gemm_seq: inner dimensions");
    assert_eq!(
        (c.nrows(), c.ncols()),
        (a.nrows(), b.ncols()),
        "gemm_seq: output shape"
    );
    let s = c.strides().to_vec();
    let (m, n) = (c.nrows(), c.ncols());
    // SAFETY: as above, for a mutable view that is exclusively borrowed here.
    let cm = unsafe { MatMut::from_raw_parts_mut(c.as_mut_ptr(), m, n, s[0], s[1]) };
    let acc = if accumulate {
        Accum::Add
    } else {
        Accum::Replace
    };
    faer::linalg::matmul::matmul(cm, acc, as_faer(&a), as_faer(&b), 1.0f32, Par::Seq);
    clear_upper_simd_state();
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
    fn matches_ndarray_dot_including_transposed_views() {
        let a = Array2::from_shape_fn((7, 5), |(i, j)| (i * 5 + j) as f32 * 0.1 - 1.0);
        let b = Array2::from_shape_fn((6, 5), |(i, j)| (i + 2 * j) as f32 * 0.05);
        let mut c = Array2::<f32>::zeros((7, 6));
        gemm_seq(c.view_mut(), a.view(), b.t(), false);
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
