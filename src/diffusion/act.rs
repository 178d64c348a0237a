//! Vectorised element-wise kernels of the fast defended evaluator ([`super::fast`]): the
//! bias add fused with the hidden activation and its derivative (one pass over a GEMM's
//! output instead of three), and the fast `exp` behind SiLU. Each loop is compiled for
//! AVX-512 / AVX2 and picked at run time. Both vector builds evaluate `exp`'s range
//! reduction and polynomial with fused multiply-adds (the same operations, so the same bits
//! on either level, equal to the scalar fused reference); the baseline build, without FMA,
//! differs in the last bits.

use crate::linalg::{madd, simd_level, Simd};
use crate::nn::mlp::Activation;

/// `exp(x)` for `x ∈ [-80, 80]` (clamped), relative error < 2e-7: range reduction by
/// `ln 2` with round-to-nearest through the 1.5·2²³ trick and a degree-6 polynomial;
/// branch-free so that loops over slices vectorise. With `FMA` the range reduction and the
/// polynomial use fused multiply-adds (the AVX2 / AVX-512 builds, where they are single
/// instructions).
#[inline(always)]
fn exp_poly<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0;
    // max/min rather than clamp: measured to vectorise (clamp's NaN semantics differ).
    #[allow(clippy::manual_clamp)]
    let x = x.max(-80.0).min(80.0);
    let n = madd::<FMA>(x, LOG2E, MAGIC) - MAGIC;
    let r = madd::<FMA>(-n, LN2_LO, madd::<FMA>(-n, LN2_HI, x));
    let mut p = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = madd::<FMA>(p, r, c);
    }
    // SAFETY: |n| ≤ 116 after the clamp, so the conversion is exact and in range.
    let ni: i32 = unsafe { n.to_int_unchecked() };
    let scale = f32::from_bits(((ni + 127) as u32) << 23);
    p * scale
}

/// For every row of `z` (row-major, `bias.len()` columns): `z ← act(z + bias)`, and with
/// `deriv` (same shape) `deriv ← act'(z + bias)`; `act = None` only adds the bias.
pub fn bias_act(z: &mut [f32], bias: &[f32], act: Option<Activation>, deriv: Option<&mut [f32]>) {
    assert!(
        !bias.is_empty() && z.len().is_multiple_of(bias.len()),
        "bias_act: shape"
    );
    if let Some(d) = &deriv {
        assert_eq!(d.len(), z.len(), "bias_act: derivative shape");
    }
    // SAFETY (both arms): `simd_level` returned the level only when the CPU has its features.
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        Simd::Avx512 => return unsafe { bias_act_512(z, bias, act, deriv) },
        Simd::Avx2 => return unsafe { bias_act_256(z, bias, act, deriv) },
        Simd::Baseline => {}
    }
    bias_act_body::<false>(z, bias, act, deriv)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn bias_act_512(z: &mut [f32], b: &[f32], act: Option<Activation>, d: Option<&mut [f32]>) {
    bias_act_body::<true>(z, b, act, d)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bias_act_256(z: &mut [f32], b: &[f32], act: Option<Activation>, d: Option<&mut [f32]>) {
    bias_act_body::<true>(z, b, act, d)
}

#[inline(always)]
fn bias_act_body<const FMA: bool>(
    z: &mut [f32],
    b: &[f32],
    act: Option<Activation>,
    deriv: Option<&mut [f32]>,
) {
    let w = b.len();
    match (act, deriv) {
        (None, _) => z.chunks_exact_mut(w).for_each(|r| add_row(r, b)),
        (Some(Activation::Silu), None) => z.chunks_exact_mut(w).for_each(|r| {
            for (v, &bb) in r.iter_mut().zip(b) {
                let x = *v + bb;
                *v = x * (1.0 / (1.0 + exp_poly::<FMA>(-x)));
            }
        }),
        (Some(Activation::Silu), Some(d)) => {
            for (r, dr) in z.chunks_exact_mut(w).zip(d.chunks_exact_mut(w)) {
                for ((v, dv), &bb) in r.iter_mut().zip(dr.iter_mut()).zip(b) {
                    let x = *v + bb;
                    let sg = 1.0 / (1.0 + exp_poly::<FMA>(-x));
                    *dv = sg * (1.0 + x * (1.0 - sg));
                    *v = x * sg;
                }
            }
        }
        (Some(Activation::Relu), d) => {
            z.chunks_exact_mut(w).for_each(|r| add_row(r, b));
            if let Some(d) = d {
                for (dv, v) in d.iter_mut().zip(z.iter()) {
                    *dv = if *v > 0.0 { 1.0 } else { 0.0 };
                }
            }
            z.iter_mut().for_each(|v| *v = v.max(0.0));
        }
    }
}

#[inline(always)]
fn add_row(r: &mut [f32], b: &[f32]) {
    for (v, &bb) in r.iter_mut().zip(b) {
        *v += bb;
    }
}

/// `a ⊙= b` element-wise (the backward pass's activation derivative).
pub fn mul_assign(a: &mut [f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "mul_assign: shape");
    // SAFETY (both arms): as in `bias_act`.
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        Simd::Avx512 => return unsafe { mul_512(a, b) },
        Simd::Avx2 => return unsafe { mul_256(a, b) },
        Simd::Baseline => {}
    }
    a.iter_mut().zip(b).for_each(|(x, y)| *x *= y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn mul_512(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x *= y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mul_256(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x *= y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_is_accurate() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x <= 80.0 {
            let b = (x as f64).exp();
            for a in [exp_poly::<false>(x), exp_poly::<true>(x)] {
                worst = worst.max(((a as f64 - b) / b).abs());
            }
            x += 0.0137;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert!(exp_poly::<false>(-1000.0) > 0.0 && exp_poly::<true>(1000.0).is_finite());
    }

    /// The fused kernel against `Activation::apply`/`derivative` in f64 (an independent
    /// reference: std `exp`, no fusion), for both activations, with and without derivative,
    /// and every vector build bit-identical to the baseline loop.
    #[test]
    fn fused_bias_activation_matches_the_reference_on_every_simd_level() {
        let (rows, w) = (7, 37); // odd width: vector tails
        let z0: Vec<f32> = (0..rows * w)
            .map(|i| ((i * 7919) % 1000) as f32 / 60.0 - 8.0)
            .collect();
        let b: Vec<f32> = (0..w).map(|j| j as f32 * 0.05 - 0.9).collect();
        for act in [None, Some(Activation::Silu), Some(Activation::Relu)] {
            let (mut z, mut d) = (z0.clone(), vec![0f32; z0.len()]);
            bias_act(&mut z, &b, act, Some(&mut d));
            for (i, (&zv, &dv)) in z.iter().zip(&d).enumerate() {
                let x = f64::from(z0[i]) + f64::from(b[i % w]);
                let (want, dwant) = match act {
                    None => (x, dv as f64),
                    Some(a) => (a.apply(x), a.derivative(x)),
                };
                assert!(
                    (f64::from(zv) - want).abs() < 1e-5 * want.abs().max(1.0),
                    "{act:?}"
                );
                assert!((f64::from(dv) - dwant).abs() < 1e-5, "{act:?} derivative");
            }
            let mut z2 = z0.clone();
            bias_act(&mut z2, &b, act, None);
            assert_eq!(z, z2, "{act:?}: with and without derivative");
            // the vector builds (FMA) against the scalar fused body, bit for bit
            let (mut zb, mut db) = (z0.clone(), vec![0f32; z0.len()]);
            let vector = simd_level() != Simd::Baseline;
            if vector {
                bias_act_body::<true>(&mut zb, &b, act, Some(&mut db));
            } else {
                bias_act_body::<false>(&mut zb, &b, act, Some(&mut db));
            }
            assert_eq!((&z, &d), (&zb, &db), "{act:?}: dispatched build vs scalar");
            // fused and unfused exp agree to the last bits
            let (mut zu, mut du) = (z0.clone(), vec![0f32; z0.len()]);
            bias_act_body::<false>(&mut zu, &b, act, Some(&mut du));
            for (u, f) in zu.iter().chain(&du).zip(z.iter().chain(&d)) {
                assert!(
                    (u - f).abs() <= 4.0 * f32::EPSILON * u.abs().max(1.0),
                    "{act:?}"
                );
            }
        }
        let mut a: Vec<f32> = z0.clone();
        mul_assign(&mut a, &b.repeat(rows));
        let want: Vec<f32> = z0.iter().enumerate().map(|(i, v)| v * b[i % w]).collect();
        assert_eq!(a, want);
    }
}
