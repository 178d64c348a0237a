//! Fast standard-normal draws in f32 for the purification noise (the defended model draws
//! `t*·d` values per row per pass — ~10⁹ per adaptive attack, a tenth of its time with a
//! scalar ziggurat).
//!
//! Box–Muller on whole blocks: each 64-bit word of the generator gives two 24-bit uniforms,
//! `u₁ ∈ (0, 1]` and `u₂ ∈ [0, 1)`, and two independent N(0,1) values
//! `√(−2 ln u₁)·(cos 2πu₂, sin 2πu₂)`. `ln`, `sin` and `cos` are branch-free polynomial
//! approximations (relative error < 1e-6, tested), so the loop vectorises; it is compiled for
//! AVX-512 / AVX2 and picked at run time, with the same results on every level (no fused
//! multiply-adds are formed). The largest magnitude is `√(2·24·ln 2) ≈ 5.77`.

use crate::linalg::{simd_level, Simd};
use crate::rng::Rng;
use rand::RngCore;

/// Words drawn per block (two normals each).
const BLOCK: usize = 128;

/// Fill `out` with independent N(0, 1) draws from `rng` (deterministic given its state).
pub fn fill_normal_f32(rng: &mut Rng, out: &mut [f32]) {
    let mut at = 0;
    normal_blocks(rng, out.len(), |b| {
        out[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    });
}

/// Append `n` draws to `out`: the values [`fill_normal_f32`] would write, without first
/// zero-filling the destination.
pub fn extend_normal_f32(rng: &mut Rng, n: usize, out: &mut Vec<f32>) {
    out.reserve(n);
    normal_blocks(rng, n, |b| out.extend_from_slice(b));
}

/// `n` draws handed to `sink` in consecutive blocks of up to `2·BLOCK` values.
fn normal_blocks(rng: &mut Rng, n: usize, mut sink: impl FnMut(&[f32])) {
    let (mut hi, mut lo) = ([0u32; BLOCK], [0u32; BLOCK]);
    let mut tmp = [0f32; 2 * BLOCK];
    let mut left = n;
    while left > 0 {
        let len = left.min(2 * BLOCK);
        let pairs = len.div_ceil(2);
        for (h, l) in hi[..pairs].iter_mut().zip(&mut lo[..pairs]) {
            let w = rng.next_u64();
            (*h, *l) = ((w >> 32) as u32, w as u32);
        }
        box_muller(&hi[..pairs], &lo[..pairs], &mut tmp[..2 * pairs]);
        sink(&tmp[..len]);
        left -= len;
    }
}

/// The halves of 64-bit words, as [`fill_normal_f32`] passes them to the kernel.
#[cfg(test)]
fn split_words(words: &[u64]) -> (Vec<u32>, Vec<u32>) {
    words.iter().map(|&w| ((w >> 32) as u32, w as u32)).unzip()
}

fn box_muller(hi: &[u32], lo: &[u32], out: &mut [f32]) {
    // SAFETY (both arms): `simd_level` returned the level only when the CPU has its features.
    #[cfg(target_arch = "x86_64")]
    match simd_level() {
        Simd::Avx512 => return unsafe { box_muller_512(hi, lo, out) },
        Simd::Avx2 => return unsafe { box_muller_256(hi, lo, out) },
        Simd::Baseline => {}
    }
    box_muller_body(hi, lo, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn box_muller_512(hi: &[u32], lo: &[u32], out: &mut [f32]) {
    box_muller_body(hi, lo, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn box_muller_256(hi: &[u32], lo: &[u32], out: &mut [f32]) {
    box_muller_body(hi, lo, out)
}

/// Word `i` is `hi[i]·2³² + lo[i]`: `u₁` from its top 24 bits, `u₂` from its low 24.
#[inline(always)]
fn box_muller_body(hi: &[u32], lo: &[u32], out: &mut [f32]) {
    const SCALE: f32 = 1.0 / 16_777_216.0; // 2⁻²⁴
    let n = hi.len();
    assert!(n <= BLOCK && lo.len() == n && out.len() >= 2 * n);
    // Planar first, interleaved after: both loops vectorise over 32-bit lanes (the uniforms
    // go through i32, which converts to f32 in one instruction, exactly: they are ≤ 2²⁴).
    let (mut cs, mut sn) = ([0f32; BLOCK], [0f32; BLOCK]);
    for (((h, l), c), s) in hi.iter().zip(lo).zip(&mut cs).zip(&mut sn) {
        let u1 = (((h >> 8) as i32 + 1) as f32) * SCALE; // (0, 1]
        let u2 = ((l & 0xff_ffff) as i32 as f32) * SCALE; // [0, 1)
        let r = (-2.0 * ln_fast(u1)).sqrt();
        let (co, si) = cos_sin_turn(u2);
        *c = r * co;
        *s = r * si;
    }
    for ((o, c), s) in out.chunks_exact_mut(2).zip(&cs[..n]).zip(&sn[..n]) {
        o[0] = *c;
        o[1] = *s;
    }
}

/// `ln x` for normal positive `x`: exponent and mantissa `m ∈ [√½, √2)`, then
/// `ln m = 2·atanh(f/(2+f))` with `f = m − 1` as an odd series in `s = f/(2+f)`, `|s| < 0.172`.
#[inline(always)]
pub fn ln_fast(x: f32) -> f32 {
    const LN2: f32 = std::f32::consts::LN_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 127;
    let mut m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    let big = m > std::f32::consts::SQRT_2;
    m = if big { m * 0.5 } else { m };
    e += i32::from(big);
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let s2 = s * s;
    let p = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    e as f32 * LN2 + 2.0 * s * p
}

/// `(cos 2πt, sin 2πt)` for `t ∈ [0, 1)`: the quadrant from `4t`, then Taylor polynomials of
/// `cos` and `sin` on `θ ∈ [0, π/2)`.
#[inline(always)]
pub fn cos_sin_turn(t: f32) -> (f32, f32) {
    let q4 = t * 4.0;
    // A checked float-to-int conversion does not vectorise: clamp (a no-op for t ∈ [0, 1);
    // max/min rather than clamp, which does not vectorise either), then convert unchecked.
    #[allow(clippy::manual_clamp)]
    let qc = q4.max(0.0).min(4.0);
    // SAFETY: 0 ≤ qc ≤ 4 (max/min never return NaN here), in range of i32.
    let q: i32 = unsafe { qc.to_int_unchecked() };
    let th = (q4 - q as f32) * std::f32::consts::FRAC_PI_2;
    let t2 = th * th;
    let sin = th
        * (1.0
            - t2 / 6.0
                * (1.0 - t2 / 20.0 * (1.0 - t2 / 42.0 * (1.0 - t2 / 72.0 * (1.0 - t2 / 110.0)))));
    let cos = 1.0
        - t2 / 2.0
            * (1.0
                - t2 / 12.0
                    * (1.0
                        - t2 / 30.0 * (1.0 - t2 / 56.0 * (1.0 - t2 / 90.0 * (1.0 - t2 / 132.0)))));
    // rotate by q quarter turns: (c, s) → (−s, c)
    let (c1, s1) = if q & 1 == 1 { (-sin, cos) } else { (cos, sin) };
    if q & 2 == 2 {
        (-c1, -s1)
    } else {
        (c1, s1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::stream;

    #[test]
    fn ln_and_trig_are_accurate() {
        let mut worst: f64 = 0.0;
        for i in 1..=1 << 16 {
            let x = i as f32 / 65_536.0;
            let (a, b) = (ln_fast(x) as f64, (x as f64).ln());
            worst = worst.max((a - b).abs() / b.abs().max(1e-3));
        }
        assert!(worst < 1e-6, "ln error {worst}");
        let mut worst: f64 = 0.0;
        for i in 0..1 << 16 {
            let t = i as f32 / 65_536.0;
            let (c, s) = cos_sin_turn(t);
            let phi = std::f64::consts::TAU * t as f64;
            worst = worst.max(
                (c as f64 - phi.cos())
                    .abs()
                    .max((s as f64 - phi.sin()).abs()),
            );
        }
        assert!(worst < 1e-6, "trig error {worst}");
    }

    #[test]
    fn moments_and_tails_are_standard_normal() {
        let n = 1 << 20;
        let mut v = vec![0f32; n + 3]; // odd tail of a block too
        fill_normal_f32(&mut stream(11, &[1]), &mut v);
        let v = &v[..n];
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n as f64;
        let kurt = v.iter().map(|&x| (x as f64 - m).powi(4)).sum::<f64>() / n as f64 / var.powi(2);
        let tail = v.iter().filter(|x| x.abs() > 3.0).count() as f64 / n as f64;
        assert!(m.abs() < 0.005, "mean {m}");
        assert!((var - 1.0).abs() < 0.005, "variance {var}");
        assert!((kurt - 3.0).abs() < 0.05, "kurtosis {kurt}");
        assert!((tail - 0.0027).abs() < 0.0004, "P(|z|>3) {tail}");
        // consecutive pairs are uncorrelated (the two values of one word)
        let c = v.chunks_exact(2).map(|p| (p[0] * p[1]) as f64).sum::<f64>() / (n / 2) as f64;
        assert!(c.abs() < 0.01, "pair correlation {c}");
    }

    #[test]
    fn same_stream_same_values_and_every_simd_build_agrees_with_an_f64_reference() {
        let mut a = vec![0f32; 777];
        let mut b = vec![0f32; 777];
        fill_normal_f32(&mut stream(3, &[4]), &mut a);
        fill_normal_f32(&mut stream(3, &[4]), &mut b);
        assert_eq!(a, b);
        let mut c = vec![9f32; 5];
        extend_normal_f32(&mut stream(3, &[4]), 777, &mut c);
        assert_eq!(
            (&c[..5], &c[5..]),
            (&[9f32; 5][..], &a[..]),
            "extend = fill"
        );
        let mut g = stream(3, &[4]);
        let words: Vec<u64> = (0..389).map(|_| g.next_u64()).collect();
        let words = &words[..128];
        let (hi, lo) = split_words(words);
        // Independent reference: textbook Box–Muller in f64 with std ln/cos/sin on the same
        // uniforms; the fast f32 ln/cos/sin must stay within a few f32 ulps of it.
        let reference: Vec<f64> = words
            .iter()
            .flat_map(|w| {
                let u1 = ((w >> 40) as f64 + 1.0) / 16_777_216.0;
                let u2 = (w & 0xff_ffff) as f64 / 16_777_216.0;
                let r = (-2.0 * u1.ln()).sqrt();
                let t = std::f64::consts::TAU * u2;
                [r * t.cos(), r * t.sin()]
            })
            .collect();
        let mut base = vec![0f32; 256];
        box_muller_body(&hi, &lo, &mut base);
        let worst = base
            .iter()
            .zip(&reference)
            .map(|(&x, &y)| (x as f64 - y).abs() / y.abs().max(1.0))
            .fold(0.0, f64::max);
        assert!(worst < 4e-6, "baseline build vs f64 Box–Muller: {worst:e}");
        assert_eq!(
            &a[..256],
            &{
                let mut d = vec![0f32; 256];
                box_muller(&hi, &lo, &mut d);
                d
            }[..]
        );
        // Each vector build separately (bit-identical to the baseline), where the CPU has it.
        #[cfg(target_arch = "x86_64")]
        {
            let mut tested = vec![];
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                let mut v = vec![0f32; 256];
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                unsafe { box_muller_256(&hi, &lo, &mut v) };
                assert_eq!(base, v, "AVX2 build differs from the baseline");
                tested.push("avx2");
            }
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx2")
                && std::is_x86_feature_detected!("fma")
            {
                let mut v = vec![0f32; 256];
                // SAFETY: the CPU has AVX-512F, AVX2 and FMA (checked above).
                unsafe { box_muller_512(&hi, &lo, &mut v) };
                assert_eq!(base, v, "AVX-512 build differs from the baseline");
                tested.push("avx512");
            }
            if tested.len() < 2 {
                eprintln!("normal: vector builds tested: {tested:?} (this CPU lacks the others: not tested here)");
            }
        }
    }
}
