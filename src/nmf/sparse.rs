//! Compressed sparse rows of the (mostly zero) data matrix and the sparse × dense product
//! the accelerated solver uses for `V·Wᵀ` and `Vᵀ·H` (digit images are ~80 % zeros).
//!
//! The product is parallel over row blocks (rayon), each output row is a sum of scaled
//! rows of the dense factor (`k` contiguous floats, an `axpy` the compiler vectorises), so
//! the work is `2·nnz·k` FLOPs instead of the dense `2·n·p·k`.

use crate::linalg::madd;
pub use crate::linalg::{simd_level, Simd};
use ndarray::{ArrayView2, ArrayViewMut2, Axis};
use rayon::prelude::*;

/// The solvers use sparse products when the fraction of non-zero data entries is below this
/// (a heuristic: the sparse products then do under 40 % of the dense FLOPs, at a lower rate).
pub const SPARSE_BELOW: f64 = 0.4;

/// Rows per parallel work unit of [`Csr::mul_dense`].
const ROW_BLOCK: usize = 64;

/// A CSR matrix of `f32` with `u32` column indices.
#[derive(Clone, Debug)]
pub struct Csr {
    pub nrows: usize,
    pub ncols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Csr {
    /// The non-zero entries of `a`, row by row.
    pub fn from_dense(a: ArrayView2<f32>) -> Self {
        let (nrows, ncols) = a.dim();
        let mut indptr = Vec::with_capacity(nrows + 1);
        let mut indices = Vec::new();
        let mut values = Vec::new();
        indptr.push(0);
        for row in a.rows() {
            for (j, &x) in row.iter().enumerate() {
                if x != 0.0 {
                    indices.push(j as u32);
                    values.push(x);
                }
            }
            indptr.push(values.len());
        }
        Csr {
            nrows,
            ncols,
            indptr,
            indices,
            values,
        }
    }

    /// The CSR form of the transpose (the CSC form of `self`).
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.ncols + 1];
        for &j in &self.indices {
            counts[j as usize + 1] += 1;
        }
        for j in 0..self.ncols {
            counts[j + 1] += counts[j];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut values = vec![0f32; self.nnz()];
        for i in 0..self.nrows {
            for q in self.indptr[i]..self.indptr[i + 1] {
                let j = self.indices[q] as usize;
                let dst = next[j];
                indices[dst] = i as u32;
                values[dst] = self.values[q];
                next[j] += 1;
            }
        }
        Csr {
            nrows: self.ncols,
            ncols: self.nrows,
            indptr,
            indices,
            values,
        }
    }

    /// Column indices and values of row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (lo, hi) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[lo..hi], &self.values[lo..hi])
    }

    /// Number of stored (non-zero) entries.
    pub fn nnz(&self) -> usize {
        self.values.len()
    }

    /// Fraction of entries that are non-zero.
    pub fn density(&self) -> f64 {
        self.nnz() as f64 / (self.nrows * self.ncols).max(1) as f64
    }

    /// `out = self · b` (`b`: `ncols × k` in standard layout, `out`: `nrows × k`).
    pub fn mul_dense(&self, b: ArrayView2<f32>, mut out: ArrayViewMut2<f32>) {
        let k = b.ncols();
        assert_eq!(b.nrows(), self.ncols, "Csr::mul_dense: inner dimensions");
        assert_eq!(out.dim(), (self.nrows, k), "Csr::mul_dense: output shape");
        let bs = b
            .as_slice()
            .expect("Csr::mul_dense: dense factor must be in standard layout");
        let simd = simd_level();
        out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)
            .into_par_iter()
            .enumerate()
            .for_each(|(blk, mut oc)| {
                let start = blk * ROW_BLOCK;
                for (r, mut orow) in oc.rows_mut().into_iter().enumerate() {
                    let i = start + r;
                    let os = orow.as_slice_mut().expect("output rows are contiguous");
                    let (lo, hi) = (self.indptr[i], self.indptr[i + 1]);
                    let (idx, val) = (&self.indices[lo..hi], &self.values[lo..hi]);
                    row_product(simd, idx, val, bs, k, os);
                }
            });
    }
}

/// `out = Σ_q val[q] · b[idx[q], :]` for one sparse row (`b` row-major with `k` columns,
/// `out` of length `k`): one row of a sparse × dense product.
pub fn gather_row(simd: Simd, idx: &[u32], val: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    row_product(simd, idx, val, b, k, out);
}

/// `out[idx[q], :] += val[q] · x` for every stored entry of one sparse row `i` (`x` = row
/// `i` of a dense factor, length `k`; `out` row-major with `k` columns): row `i`'s share of
/// `Sᵀ·X`, so `Sᵀ·X` is built in one pass over the rows of `S` without transposing it.
pub fn scatter_row(simd: Simd, idx: &[u32], val: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    // SAFETY (both arms): `simd_level` returned the level only when the CPU has its features.
    #[cfg(target_arch = "x86_64")]
    match simd {
        Simd::Avx512 => return unsafe { scatter_512(idx, val, x, k, out) },
        Simd::Avx2 => return unsafe { scatter_256(idx, val, x, k, out) },
        Simd::Baseline => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    scatter_body::<false>(idx, val, x, k, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn scatter_512(idx: &[u32], val: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    scatter_body::<true>(idx, val, x, k, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scatter_256(idx: &[u32], val: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    scatter_body::<true>(idx, val, x, k, out);
}

/// Column blocks of 16 (the block of `x` stays in a register across the non-zeros), then
/// the remainder columns.
#[inline(always)]
fn scatter_body<const F: bool>(idx: &[u32], val: &[f32], x: &[f32], k: usize, out: &mut [f32]) {
    const L: usize = 16;
    let mut c0 = 0;
    while k - c0 >= L {
        let xb: [f32; L] = x[c0..c0 + L].try_into().expect("L columns");
        for (&j, &a) in idx.iter().zip(val) {
            let base = j as usize * k + c0;
            let o: &mut [f32; L] = (&mut out[base..base + L]).try_into().expect("L columns");
            for l in 0..L {
                o[l] = madd::<F>(a, xb[l], o[l]);
            }
        }
        c0 += L;
    }
    if c0 < k {
        for (&j, &a) in idx.iter().zip(val) {
            let base = j as usize * k;
            for c in c0..k {
                out[base + c] = madd::<F>(a, x[c], out[base + c]);
            }
        }
    }
}

/// `out = Σ_q val[q] · b[idx[q], :]` for one output row (`b` row-major with `k` columns).
fn row_product(simd: Simd, idx: &[u32], val: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    // SAFETY (both arms): `simd_level` returned the level only when the CPU has its features.
    #[cfg(target_arch = "x86_64")]
    match simd {
        Simd::Avx512 => return unsafe { row_product_512(idx, val, b, k, out) },
        Simd::Avx2 => return unsafe { row_product_256(idx, val, b, k, out) },
        Simd::Baseline => {}
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    row_product_body::<false>(idx, val, b, k, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn row_product_512(idx: &[u32], val: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    row_product_body::<true>(idx, val, b, k, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_product_256(idx: &[u32], val: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    row_product_body::<true>(idx, val, b, k, out);
}

/// The kernel: column blocks of 32, 16, 8 (accumulated in local arrays that stay in vector
/// registers, two independent accumulators over alternate non-zeros to hide the add
/// latency), then the remainder columns one by one.
#[inline(always)]
fn row_product_body<const F: bool>(idx: &[u32], val: &[f32], b: &[f32], k: usize, out: &mut [f32]) {
    let mut c0 = 0;
    while k - c0 >= 32 {
        block::<32, F>(idx, val, b, k, c0, out);
        c0 += 32;
    }
    if k - c0 >= 16 {
        block::<16, F>(idx, val, b, k, c0, out);
        c0 += 16;
    }
    if k - c0 >= 8 {
        block::<8, F>(idx, val, b, k, c0, out);
        c0 += 8;
    }
    for c in c0..k {
        let mut acc = 0.0f32;
        for (&j, &x) in idx.iter().zip(val) {
            acc = madd::<F>(x, b[j as usize * k + c], acc);
        }
        out[c] = acc;
    }
}

/// Columns `c0..c0+L` of one output row.
#[inline(always)]
fn block<const L: usize, const F: bool>(
    idx: &[u32],
    val: &[f32],
    b: &[f32],
    k: usize,
    c0: usize,
    out: &mut [f32],
) {
    let mut a0 = [0.0f32; L];
    let mut a1 = [0.0f32; L];
    let row = |j: u32| -> &[f32; L] {
        let base = j as usize * k + c0;
        b[base..base + L].try_into().expect("L columns")
    };
    let pairs = idx.len() / 2;
    for q in 0..pairs {
        let (r0, r1) = (row(idx[2 * q]), row(idx[2 * q + 1]));
        let (x0, x1) = (val[2 * q], val[2 * q + 1]);
        for l in 0..L {
            a0[l] = madd::<F>(x0, r0[l], a0[l]);
            a1[l] = madd::<F>(x1, r1[l], a1[l]);
        }
    }
    if idx.len() % 2 == 1 {
        let q = idx.len() - 1;
        let (r, x) = (row(idx[q]), val[q]);
        for l in 0..L {
            a0[l] = madd::<F>(x, r[l], a0[l]);
        }
    }
    for l in 0..L {
        out[c0 + l] = a0[l] + a1[l];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn csr_products_match_dense() {
        let a = Array2::from_shape_fn((37, 23), |(i, j)| {
            if (i * 7 + j * 3) % 5 == 0 {
                (i + j) as f32 * 0.1
            } else {
                0.0
            }
        });
        let b = Array2::from_shape_fn((23, 37), |(i, j)| (i as f32 - j as f32) * 0.3);
        let c = Array2::from_shape_fn((37, 37), |(i, j)| (i * j) as f32 * 0.01);
        let csr = Csr::from_dense(a.view());
        assert!(csr.density() > 0.1 && csr.density() < 0.3);
        let mut out = Array2::<f32>::from_elem((37, 37), 9.0);
        csr.mul_dense(b.view(), out.view_mut());
        let want = a.dot(&b);
        assert!(out.iter().zip(&want).all(|(x, y)| (x - y).abs() < 1e-3));
        let t = csr.transpose();
        assert_eq!((t.nrows, t.ncols, t.nnz()), (23, 37, csr.nnz()));
        let mut out_t = Array2::<f32>::zeros((23, 37));
        t.mul_dense(c.view(), out_t.view_mut());
        let want_t = a.t().dot(&c);
        assert!(out_t.iter().zip(&want_t).all(|(x, y)| (x - y).abs() < 1e-3));
    }
}
