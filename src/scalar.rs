//! The float trait the numeric code is generic over: `f32` for runs, `f64` for
//! finite-difference gradient checks.

use ndarray::{LinalgScalar, ScalarOperand};
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
}
impl Scalar for f32 {}
impl Scalar for f64 {}
