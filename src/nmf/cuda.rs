//! Frobenius NNMF on the GPU, same inputs/outputs as the CPU reference ([`crate::nmf::fit`]
//! global mode, [`crate::nmf::mu`], [`crate::nmf::project`]): products with the tiled GEMM,
//! the fused update kernels (Gram product + ratio + EPS floor in one pass), the objective
//! as f64 block reductions, and the row-independent projection entirely in one kernel.
//! Initialisation (NNDSVDa / random) runs on the CPU, as in the reference.

use crate::backend::cuda::error::{ensure, CudaResult};
use crate::backend::cuda::gemm::{gemm, Mat};
use crate::backend::cuda::{CudaBackend, KernelModule};
use crate::error::{Error, Result};
use crate::nmf::mu::{nan_error, MuHistory, Stopper};
use crate::nmf::{init_factors, NmfFitReport, NmfLoss, NmfMode, NmfModel, NmfParams};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use ndarray::{Array2, ArrayView2};

/// Shared memory available without opting in (bytes).
const SMEM_DEFAULT: usize = 48 * 1024;
const DOT_BLOCKS: usize = 256;

/// `Σ a∘b` over the first `len` elements, accumulated in f64.
pub fn dot(
    be: &CudaBackend,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    len: usize,
) -> CudaResult<f64> {
    ensure(a.len() >= len && b.len() >= len, "nmf dot", || {
        format!("buffers shorter than {len}")
    })?;
    let f = be.func(KernelModule::Nmf, "nmf_dot_partial_f32")?;
    let mut part = be.zeros::<f64>(DOT_BLOCKS)?;
    let cfg = LaunchConfig {
        grid_dim: (DOT_BLOCKS as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let l64 = len as i64;
    let mut l = be.stream().launch_builder(&f);
    l.arg(a).arg(b).arg(&l64).arg(&mut part);
    // SAFETY: a, b hold ≥ len elements (checked); `part` has DOT_BLOCKS = gridDim.x slots.
    unsafe { l.launch(cfg) }?;
    Ok(be.download(&part)?.iter().sum())
}

/// Fused multiplicative update of one factor. `rows_w`: W-update (`x`: K×p, G = HᵀH) when
/// true, else H-update (`x`: n×K, G = WWᵀ).
#[allow(clippy::too_many_arguments)]
fn update(
    be: &CudaBackend,
    w_update: bool,
    x: &CudaSlice<f32>,
    num: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    a: usize,
    b: usize,
    k: usize,
) -> CudaResult<()> {
    let len = a * b;
    ensure(
        x.len() >= len && num.len() >= len && out.len() >= len && g.len() >= k * k,
        "nmf update",
        || format!("buffers too short for {a}×{b} with K = {k}"),
    )?;
    let f = be.func(
        KernelModule::Nmf,
        if w_update {
            "nmf_update_w_f32"
        } else {
            "nmf_update_h_f32"
        },
    )?;
    let smem = k * k * 4;
    let use_smem = (smem <= SMEM_DEFAULT) as i32;
    let mut cfg = be.cfg_elems(len);
    cfg.shared_mem_bytes = if use_smem == 1 { smem as u32 } else { 0 };
    let (ai, bi) = (a as i32, b as i32);
    let mut l = be.stream().launch_builder(&f);
    l.arg(x)
        .arg(num)
        .arg(g)
        .arg(&mut *out)
        .arg(&ai)
        .arg(&bi)
        .arg(&use_smem);
    // SAFETY: x, num, out hold ≥ a·b and g ≥ K·K elements (checked); K is the inner size
    // (a for the W update, b for the H update) and shared memory holds K·K floats if used.
    unsafe { l.launch(cfg) }?;
    be.debug_sync()
}

/// Multiplicative updates (Frobenius) from explicit factors, in place, like
/// [`crate::nmf::mu::mu_fit`] with `NmfLoss::Frobenius`.
pub fn mu_frobenius(
    be: &CudaBackend,
    v: ArrayView2<f32>,
    h: &mut Array2<f32>,
    w: &mut Array2<f32>,
    max_iter: usize,
    tol: f64,
) -> Result<MuHistory> {
    let (n, p) = v.dim();
    let k = w.nrows();
    if h.dim() != (n, k) || w.ncols() != p {
        return Err(Error::ShapeMismatch {
            op: "cuda nnmf (H·W vs V)",
            lhs: vec![n, k, k, p],
            rhs: vec![h.nrows(), h.ncols(), w.nrows(), w.ncols()],
        });
    }
    let dv = be.upload(v.as_standard_layout().as_slice().expect("standard layout"))?;
    let mut dh = be.upload(h.as_standard_layout().as_slice().expect("standard layout"))?;
    let mut dw = be.upload(w.as_standard_layout().as_slice().expect("standard layout"))?;
    let mut htv = be.zeros::<f32>(k * p)?;
    let mut hth = be.zeros::<f32>(k * k)?;
    let mut wwt = be.zeros::<f32>(k * k)?;
    let mut vwt = be.zeros::<f32>(n * k)?;
    let mut tw = be.zeros::<f32>(k * p)?;
    let mut th = be.zeros::<f32>(n * k)?;
    let vv = dot(be, &dv, &dv, n * p)?;
    gemm(be, 1.0, &dh, Mat::t(n, k), &dv, Mat::n(n, p), 0.0, &mut htv)?;
    gemm(be, 1.0, &dh, Mat::t(n, k), &dh, Mat::n(n, k), 0.0, &mut hth)?;
    gemm(be, 1.0, &dw, Mat::n(k, p), &dw, Mat::t(k, p), 0.0, &mut wwt)?;
    let initial = 0.5 * (vv - 2.0 * dot(be, &htv, &dw, k * p)? + dot(be, &hth, &wwt, k * k)?);
    if !initial.is_finite() {
        return Err(nan_error(initial, 0));
    }
    let initial = initial.max(0.0);
    let mut stopper = Stopper::new(tol, initial);
    let mut objective = Vec::with_capacity(max_iter);
    let mut converged = false;
    for it in 0..max_iter {
        if it > 0 {
            gemm(be, 1.0, &dh, Mat::t(n, k), &dv, Mat::n(n, p), 0.0, &mut htv)?;
        }
        update(be, true, &dw, &htv, &hth, &mut tw, k, p, k)?;
        std::mem::swap(&mut dw, &mut tw);
        gemm(be, 1.0, &dw, Mat::n(k, p), &dw, Mat::t(k, p), 0.0, &mut wwt)?;
        gemm(be, 1.0, &dv, Mat::n(n, p), &dw, Mat::t(k, p), 0.0, &mut vwt)?;
        update(be, false, &dh, &vwt, &wwt, &mut th, n, k, k)?;
        std::mem::swap(&mut dh, &mut th);
        gemm(be, 1.0, &dh, Mat::t(n, k), &dh, Mat::n(n, k), 0.0, &mut hth)?;
        let obj = 0.5 * (vv - 2.0 * dot(be, &dh, &vwt, n * k)? + dot(be, &hth, &wwt, k * k)?);
        if !obj.is_finite() {
            return Err(nan_error(obj, it + 1));
        }
        let obj = obj.max(0.0);
        objective.push(obj);
        if stopper.stop(it + 1, obj) {
            converged = true;
            break;
        }
    }
    *h = Array2::from_shape_vec((n, k), be.download(&dh)?).expect("n·k elements");
    *w = Array2::from_shape_vec((k, p), be.download(&dw)?).expect("k·p elements");
    Ok(MuHistory {
        initial,
        iterations: objective.len(),
        objective,
        converged,
    })
}

/// [`crate::nmf::fit`] on the GPU for the Frobenius loss in global mode (other settings
/// return a typed error naming the key to change).
pub fn fit(
    be: &CudaBackend,
    v: ArrayView2<f32>,
    params: &NmfParams,
) -> Result<(NmfModel, NmfFitReport)> {
    if params.loss != NmfLoss::Frobenius || params.mode != NmfMode::Global {
        return Err(Error::param("nnmf", "the CUDA NNMF supports `loss: frobenius` with `mode: global`; use `device: cpu` for other settings"));
    }
    if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(Error::param("nnmf", "data must be finite and non-negative"));
    }
    let (mut h, mut w) = init_factors(v, params.k, params.init, params.seed)?;
    let hist = mu_frobenius(be, v, &mut h, &mut w, params.max_iter, params.tol)?;
    Ok(crate::nmf::assemble(params, h, w, hist))
}

/// [`NmfModel::transform`] on the GPU (Frobenius): one block per row runs the whole
/// per-row iteration with its own stopping rule (same rule as [`crate::nmf::project`]).
pub fn transform(be: &CudaBackend, model: &NmfModel, v: ArrayView2<f32>) -> Result<Array2<f32>> {
    let (n, p) = v.dim();
    let k = model.basis.nrows();
    if model.loss != NmfLoss::Frobenius {
        return Err(Error::param(
            "nnmf.loss",
            "the CUDA transform supports `frobenius` only; use `device: cpu`",
        ));
    }
    if p != model.basis.ncols() {
        return Err(Error::ShapeMismatch {
            op: "cuda nnmf transform",
            lhs: vec![n, p],
            rhs: vec![k, model.basis.ncols()],
        });
    }
    if k > 1024 {
        return Err(Error::param(
            "nnmf.k",
            "the CUDA transform supports K ≤ 1024 components",
        ));
    }
    let vs = v.as_standard_layout();
    let vn: Vec<f64> = vs
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&x| x as f64 * x as f64).sum())
        .collect();
    let g = model.basis.dot(&model.basis.t());
    let gsum: f64 = g.iter().map(|&x| x as f64).sum();
    let dv = be.upload(vs.as_slice().expect("standard layout"))?;
    let dw = be.upload(
        model
            .basis
            .as_standard_layout()
            .as_slice()
            .expect("standard layout"),
    )?;
    let dg = be.upload(g.as_standard_layout().as_slice().expect("standard layout"))?;
    let dvn = be.upload(&vn)?;
    let mut b = be.zeros::<f32>(n * k)?;
    gemm(be, 1.0, &dv, Mat::n(n, p), &dw, Mat::t(k, p), 0.0, &mut b)?;
    let mut out = be.zeros::<f32>(n * k)?;
    if n > 0 {
        let f = be.func(KernelModule::Nmf, "nmf_project_frob_f32")?;
        let threads = k.div_ceil(32) * 32;
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: (k * 4) as u32,
        };
        let (ni, ki, it, ce) = (
            n as i32,
            k as i32,
            model.max_iter as i32,
            crate::nmf::CHECK_EVERY as i32,
        );
        let tol = model.tol;
        let mut l = be.stream().launch_builder(&f);
        l.arg(&b)
            .arg(&dg)
            .arg(&dvn)
            .arg(&gsum)
            .arg(&mut out)
            .arg(&ni)
            .arg(&ki)
            .arg(&it)
            .arg(&tol)
            .arg(&ce);
        // SAFETY: b, out hold n·K, g K·K, vn n elements; one block per row (grid n), blockDim
        // ≥ K (multiple of 32, ≤ 1024 checked) and K floats of dynamic shared memory.
        unsafe { l.launch(cfg) }.map_err(crate::backend::cuda::CudaError::from)?;
    }
    let h = be.download(&out)?;
    let h = Array2::from_shape_vec((n, k), h[..n * k].to_vec()).expect("n·K elements");
    if h.iter().any(|x| !x.is_finite()) {
        return Err(nan_error(f64::NAN, model.max_iter));
    }
    Ok(h)
}
