//! Image resizing for the data loaders: separable, per axis either area averaging (box filter)
//! when shrinking or bilinear interpolation (half-pixel centres) when growing; an axis whose
//! size does not change is copied exactly. Every output pixel is a convex combination of input
//! pixels, so values stay in the input range.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

/// The size's `(height, width)`. It lives here, with the resizing it drives, because this
/// file is part of every stage's code fingerprint and the configuration is not.
impl crate::config::ImageSize {
    pub fn hw(&self) -> (usize, usize) {
        match *self {
            crate::config::ImageSize::Square(s) => (s, s),
            crate::config::ImageSize::Rect([h, w]) => (h, w),
        }
    }
}

/// Interpolation taps of one axis: output pixel `i` is `Σ_k w[k] · src[start + k]`.
#[derive(Clone, Debug)]
struct AxisTaps {
    start: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

impl AxisTaps {
    fn new(src: usize, dst: usize) -> Self {
        assert!(src > 0 && dst > 0, "resize: sizes must be positive");
        let mut start = Vec::with_capacity(dst);
        let mut weights = Vec::with_capacity(dst);
        let scale = src as f64 / dst as f64;
        for i in 0..dst {
            if src == dst {
                start.push(i);
                weights.push(vec![1.0]);
            } else if src > dst {
                // Area average over the source interval [i·scale, (i+1)·scale).
                let (lo, hi) = (i as f64 * scale, (i + 1) as f64 * scale);
                let first = lo.floor() as usize;
                let last = (hi.ceil() as usize).min(src);
                let w = (first..last)
                    .map(|k| {
                        let overlap = hi.min(k as f64 + 1.0) - lo.max(k as f64);
                        (overlap.max(0.0) / scale) as f32
                    })
                    .collect();
                start.push(first);
                weights.push(w);
            } else {
                // Bilinear with half-pixel centres, clamped at the borders.
                let x = ((i as f64 + 0.5) * scale - 0.5).clamp(0.0, (src - 1) as f64);
                let x0 = x.floor() as usize;
                let t = (x - x0 as f64) as f32;
                if x0 + 1 < src && t > 0.0 {
                    start.push(x0);
                    weights.push(vec![1.0 - t, t]);
                } else {
                    start.push(x0);
                    weights.push(vec![1.0]);
                }
            }
        }
        AxisTaps { start, weights }
    }
}

/// A reusable resizer from `src_h × src_w` to `dst_h × dst_w` (row-major images).
#[derive(Clone, Debug)]
pub struct Resizer {
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
    rows: AxisTaps,
    cols: AxisTaps,
}

impl Resizer {
    /// Panics if any size is zero (callers validate sizes first).
    pub fn new(src_h: usize, src_w: usize, dst_h: usize, dst_w: usize) -> Self {
        Resizer {
            src_h,
            src_w,
            dst_h,
            dst_w,
            rows: AxisTaps::new(src_h, dst_h),
            cols: AxisTaps::new(src_w, dst_w),
        }
    }

    /// True when the sizes match and [`Resizer::apply`] is a copy.
    pub fn is_identity(&self) -> bool {
        self.src_h == self.dst_h && self.src_w == self.dst_w
    }

    /// Resize one image `src` (`src_h*src_w` values) into `out` (`dst_h*dst_w` values);
    /// `tmp` is scratch space reused between calls.
    pub fn apply_into(&self, src: &[f32], out: &mut [f32], tmp: &mut Vec<f32>) {
        assert_eq!(src.len(), self.src_h * self.src_w, "resize: input size");
        assert_eq!(out.len(), self.dst_h * self.dst_w, "resize: output size");
        if self.is_identity() {
            out.copy_from_slice(src);
            return;
        }
        // Horizontal pass: src_h × dst_w.
        tmp.clear();
        tmp.resize(self.src_h * self.dst_w, 0.0);
        for (r, trow) in tmp.chunks_exact_mut(self.dst_w).enumerate() {
            let srow = &src[r * self.src_w..(r + 1) * self.src_w];
            for (j, t) in trow.iter_mut().enumerate() {
                let s = self.cols.start[j];
                let w = &self.cols.weights[j];
                *t = w
                    .iter()
                    .zip(&srow[s..s + w.len()])
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
        // Vertical pass: dst_h × dst_w.
        for (i, orow) in out.chunks_exact_mut(self.dst_w).enumerate() {
            orow.fill(0.0);
            let s = self.rows.start[i];
            for (k, &w) in self.rows.weights[i].iter().enumerate() {
                let trow = &tmp[(s + k) * self.dst_w..(s + k + 1) * self.dst_w];
                for (o, &t) in orow.iter_mut().zip(trow) {
                    *o += w * t;
                }
            }
        }
    }

    /// Resize one image and return the result.
    pub fn apply(&self, src: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; self.dst_h * self.dst_w];
        self.apply_into(src, &mut out, &mut Vec::new());
        out
    }
}

/// Resize a single row-major image from `src_h × src_w` to `dst_h × dst_w`.
pub fn resize_image(
    src: &[f32],
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
) -> Vec<f32> {
    Resizer::new(src_h, src_w, dst_h, dst_w).apply(src)
}

/// Resize every row (one image each) of `images`; returns the input unchanged (cloned) when
/// the sizes match. Runs in parallel over rows.
pub fn resize_rows(
    images: ArrayView2<f32>,
    src_h: usize,
    src_w: usize,
    dst_h: usize,
    dst_w: usize,
) -> Array2<f32> {
    assert_eq!(images.ncols(), src_h * src_w, "resize_rows: column count");
    let rz = Resizer::new(src_h, src_w, dst_h, dst_w);
    if rz.is_identity() {
        return images.to_owned();
    }
    let mut out = Array2::<f32>::zeros((images.nrows(), dst_h * dst_w));
    out.outer_iter_mut()
        .into_par_iter()
        .zip(images.outer_iter().into_par_iter())
        .for_each_init(Vec::new, |tmp, (mut o, s)| {
            let src = s.to_vec();
            let dst = o.as_slice_mut().expect("fresh array rows are contiguous");
            rz.apply_into(&src, dst, tmp);
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Vec<f32> {
        (0..h * w)
            .map(|i| ((i * 37) % 101) as f32 / 100.0)
            .collect()
    }

    #[test]
    fn identity_is_exact() {
        let src = ramp(7, 5);
        assert_eq!(resize_image(&src, 7, 5, 7, 5), src);
        let a = Array2::from_shape_vec((1, 35), src.clone()).unwrap();
        assert_eq!(resize_rows(a.view(), 7, 5, 7, 5), a);
    }

    #[test]
    fn halving_is_two_by_two_block_average() {
        let src = ramp(4, 6);
        let out = resize_image(&src, 4, 6, 2, 3);
        for i in 0..2 {
            for j in 0..3 {
                let (r, c) = (2 * i, 2 * j);
                let avg = (src[r * 6 + c]
                    + src[r * 6 + c + 1]
                    + src[(r + 1) * 6 + c]
                    + src[(r + 1) * 6 + c + 1])
                    / 4.0;
                assert!(
                    (out[i * 3 + j] - avg).abs() < 1e-6,
                    "({i},{j}): {} vs {avg}",
                    out[i * 3 + j]
                );
            }
        }
    }

    #[test]
    fn non_integer_downscale_preserves_mean_and_constants() {
        // Area averaging over a whole image keeps the mean when the ratio divides evenly in area.
        let src = ramp(28, 28);
        let out = resize_image(&src, 28, 28, 20, 20);
        let m_in: f32 = src.iter().sum::<f32>() / src.len() as f32;
        let m_out: f32 = out.iter().sum::<f32>() / out.len() as f32;
        assert!((m_in - m_out).abs() < 1e-4, "{m_in} vs {m_out}");
        let c = resize_image(&vec![0.3; 28 * 28], 28, 28, 13, 9);
        assert!(c.iter().all(|v| (v - 0.3).abs() < 1e-6));
    }

    #[test]
    fn upscale_is_bilinear_and_bounded() {
        // 1×2 → 1×4: half-pixel centres give 0, 0.25, 0.75, 1 of the way between the pixels.
        let out = resize_image(&[0.0, 1.0], 1, 2, 1, 4);
        let want = [0.0, 0.25, 0.75, 1.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
        let src = ramp(5, 3);
        let big = resize_image(&src, 5, 3, 32, 17);
        assert!(big.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // Mixed: shrink rows, grow columns.
        let mixed = resize_image(&src, 5, 3, 2, 8);
        assert_eq!(mixed.len(), 16);
        assert!(mixed.iter().all(|&v| (0.0..=1.0).contains(&v)));
    }

    #[test]
    fn resize_rows_matches_single_image() {
        let a = Array2::from_shape_fn((3, 30), |(r, c)| ((r * 30 + c) % 7) as f32 / 6.0);
        let out = resize_rows(a.view(), 5, 6, 4, 9);
        for r in 0..3 {
            let one = resize_image(a.row(r).as_slice().unwrap(), 5, 6, 4, 9);
            assert_eq!(out.row(r).to_vec(), one);
        }
    }
}
