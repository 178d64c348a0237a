//! The float trait the numeric code is generic over: `f32` for runs, `f64` for
//! finite-difference gradient checks.

use ndarray::{ArrayView2, ArrayViewMut2, LinalgScalar, ScalarOperand};
use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

/// `f32` or `f64`.
pub trait Scalar:
    num_traits::Float
    + num_traits::FromPrimitive
    + LinalgScalar
    + ScalarOperand
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Debug
    + Display
    + Default
    + Send
    + Sync
    + 'static
{
    /// Convert from f64 (exact for f64, rounded for f32).
    fn c(v: f64) -> Self {
        <Self as num_traits::NumCast>::from(v).unwrap()
    }
    /// `c = a·b` (or `c += a·b`), sequential faer GEMM; use [`crate::linalg::gemm_seq`],
    /// which checks the shapes.
    fn gemm(c: ArrayViewMut2<Self>, a: ArrayView2<Self>, b: ArrayView2<Self>, accumulate: bool);
}
impl Scalar for f32 {
    fn gemm(c: ArrayViewMut2<f32>, a: ArrayView2<f32>, b: ArrayView2<f32>, accumulate: bool) {
        crate::linalg::gemm_f32(c, a, b, accumulate)
    }
}
impl Scalar for f64 {
    fn gemm(c: ArrayViewMut2<f64>, a: ArrayView2<f64>, b: ArrayView2<f64>, accumulate: bool) {
        crate::linalg::gemm_f64(c, a, b, accumulate)
    }
}
