//! Row-major SGEMM on the device with the hand-written tiled kernel (`kernels/gemm.cu`):
//! `C = α·op(A)·op(B) + β·C`, split over the reduction dimension when the output has too few
//! tiles to fill the card (tall-skinny products of NNMF such as `HᵀV`, `HᵀH`).

use super::error::{ensure, CudaResult};
use super::{CudaBackend, KernelModule};
use cudarc::driver::{CudaFunction, CudaSlice, LaunchConfig, PushKernelArg};

/// Shape of one GEMM operand: `rows × cols` as stored (before the transpose flag).
#[derive(Clone, Copy, Debug)]
pub struct Mat {
    pub rows: usize,
    pub cols: usize,
    pub trans: bool,
}

impl Mat {
    pub fn n(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            trans: false,
        }
    }
    pub fn t(rows: usize, cols: usize) -> Self {
        Mat {
            rows,
            cols,
            trans: true,
        }
    }
    fn op_dims(self) -> (usize, usize) {
        if self.trans {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }
}

const TILE: usize = 64;

/// `c (M × N) = alpha·op(a)·op(b) + beta·c`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    be: &CudaBackend,
    alpha: f32,
    a: &CudaSlice<f32>,
    am: Mat,
    b: &CudaSlice<f32>,
    bm: Mat,
    beta: f32,
    c: &mut CudaSlice<f32>,
) -> CudaResult<()> {
    let op = Gemm {
        alpha,
        a,
        am,
        b,
        bm,
        beta,
    };
    let (m, k, n) = op.check(c)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let (splits, k_per) = split_k(be, m, n, k, beta);
    let f = be.func(KernelModule::Gemm, "gemm_tiled_f32")?;
    let cfg = LaunchConfig {
        grid_dim: (
            n.div_ceil(TILE) as u32,
            m.div_ceil(TILE) as u32,
            splits as u32,
        ),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    if splits == 1 {
        // SAFETY: A holds ≥ rows·cols of its stored shape, B likewise and C ≥ M·N (checked
        // above); the kernel reads/writes only inside those bounds (one split, stride 0).
        unsafe { op.launch(be, &f, cfg, k_per, c, 0) }?;
    } else {
        let len = m * n;
        let mut parts = be.zeros::<f32>(splits * len)?;
        // SAFETY: as above; `parts` holds splits·M·N elements, split z writes z·M·N + [0, M·N).
        unsafe { op.launch(be, &f, cfg, k_per, &mut parts, len as i64) }?;
        let g = be.func(KernelModule::Gemm, "gemm_sum_splits_f32")?;
        let (sp, ln) = (splits as i32, len as i64);
        let mut l = be.stream().launch_builder(&g);
        l.arg(&parts).arg(&sp).arg(&ln).arg(&mut *c);
        // SAFETY: parts has splits·len elements, c ≥ len (checked above).
        unsafe { l.launch(be.cfg_elems(len)) }?;
    }
    be.debug_sync()
}

/// The operands and scalars of one [`gemm`].
struct Gemm<'a> {
    alpha: f32,
    a: &'a CudaSlice<f32>,
    am: Mat,
    b: &'a CudaSlice<f32>,
    bm: Mat,
    beta: f32,
}

impl Gemm<'_> {
    /// `(M, K, N)` after checking that the inner dimensions agree and every buffer is
    /// large enough (`c` for `M × N`).
    fn check(&self, c: &CudaSlice<f32>) -> CudaResult<(usize, usize, usize)> {
        let (a, am, b, bm) = (self.a, self.am, self.b, self.bm);
        let (m, k) = am.op_dims();
        let (k2, n) = bm.op_dims();
        ensure(k == k2, "gemm", || {
            format!("inner dimensions differ: {k} vs {k2}")
        })?;
        ensure(a.len() >= am.rows * am.cols, "gemm", || {
            format!("A has {} < {} elements", a.len(), am.rows * am.cols)
        })?;
        ensure(b.len() >= bm.rows * bm.cols, "gemm", || {
            format!("B has {} < {} elements", b.len(), bm.rows * bm.cols)
        })?;
        ensure(c.len() >= m * n, "gemm", || {
            format!("C has {} < {m}×{n} elements", c.len())
        })?;
        Ok((m, k, n))
    }

    /// Launch the tiled kernel `f` (`k_per` reduction entries per split) writing split `z`
    /// at `out + z·stride`.
    ///
    /// # Safety
    /// [`Self::check`] passed, and `out` holds `grid.z · stride + M·N` elements (`stride`
    /// ≥ M·N when there are several splits).
    unsafe fn launch(
        &self,
        be: &CudaBackend,
        f: &CudaFunction,
        cfg: LaunchConfig,
        k_per: usize,
        out: &mut CudaSlice<f32>,
        stride: i64,
    ) -> CudaResult<()> {
        let (am, bm) = (self.am, self.bm);
        let ((m, k), (_, n)) = (am.op_dims(), bm.op_dims());
        let (mi, ni, ki) = (m as i32, n as i32, k as i32);
        let (lda, ldb, ldc) = (am.cols as i32, bm.cols as i32, n as i32);
        let (ta, tb) = (am.trans as i32, bm.trans as i32);
        let kps = k_per as i32;
        let mut l = be.stream().launch_builder(f);
        l.arg(&mi)
            .arg(&ni)
            .arg(&ki)
            .arg(self.a)
            .arg(&lda)
            .arg(&ta)
            .arg(self.b)
            .arg(&ldb)
            .arg(&tb);
        l.arg(out)
            .arg(&ldc)
            .arg(&self.alpha)
            .arg(&self.beta)
            .arg(&kps)
            .arg(&stride);
        // SAFETY: the caller guarantees the buffer sizes the kernel indexes.
        unsafe { l.launch(cfg) }?;
        Ok(())
    }
}

/// Split of the reduction dimension: `(splits, k_per)`. Only when `beta == 0` (the
/// partial products are summed afterwards) and the `M × N` output has fewer tiles than
/// twice the SM count; each split covers `k_per` entries, a multiple of 16.
fn split_k(be: &CudaBackend, m: usize, n: usize, k: usize, beta: f32) -> (usize, usize) {
    let tiles = m.div_ceil(TILE) * n.div_ceil(TILE);
    let target = 2 * be.sm_count() as usize;
    let mut splits = if beta == 0.0 && tiles < target {
        (target / tiles).min(k.div_ceil(256))
    } else {
        1
    };
    splits = splits.clamp(1, 64);
    let k_per = k.div_ceil(splits).div_ceil(16) * 16;
    let splits = k.div_ceil(k_per.max(1)).max(1);
    (splits, k_per)
}
