//! CNN pieces on the device (`kernels/cnn.cu`), mirroring [`crate::nn::layers`] (NHWC):
//! im2col for 3×3/pad 1 (the convolution is then [`crate::backend::cuda::gemm::gemm`]), BatchNorm + ReLU
//! with batch or given statistics, and 2×2/2 max pooling. Host-array wrappers for parity
//! tests and for a future device CNN; backward kernels are not written yet.

use crate::backend::cuda::error::{ensure, CudaResult};
use crate::backend::cuda::{CudaBackend, KernelModule};
use crate::nn::layers::{Nhwc, BN_EPS};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use ndarray::{Array1, Array2, ArrayView2};

/// [`crate::nn::layers::im2col3`] on the device.
pub fn im2col3(be: &CudaBackend, x: &[f32], s: Nhwc) -> CudaResult<Array2<f32>> {
    ensure(x.len() == s.len(), "cuda im2col3", || {
        format!("{} values for {s:?}", x.len())
    })?;
    let rows = s.n * s.h * s.w;
    let len = rows * 9 * s.c;
    let dx = be.upload(if x.is_empty() { &[0.0f32][..] } else { x })?;
    let mut cols = be.zeros::<f32>(len)?;
    let f = be.func(KernelModule::Cnn, "cnn_im2col3_f32")?;
    let (n, h, w, c) = (s.n as i32, s.h as i32, s.w as i32, s.c as i32);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&dx).arg(&mut cols).arg(&n).arg(&h).arg(&w).arg(&c);
    // SAFETY: x holds n·h·w·c values (checked), cols n·h·w·9c; the kernel writes exactly those.
    unsafe { l.launch(be.cfg_elems(len)) }?;
    let v = be.download(&cols)?;
    Ok(Array2::from_shape_vec((rows, 9 * s.c), v[..len].to_vec()).expect("rows·9c"))
}

/// BatchNorm (batch statistics when `stats` is `None`) fused with ReLU; returns the output
/// and the (mean, var) used, like [`crate::nn::layers::bn_relu_forward`].
pub fn bn_relu(
    be: &CudaBackend,
    x: ArrayView2<f32>,
    gamma: &Array1<f32>,
    beta: &Array1<f32>,
    stats: Option<(&Array1<f32>, &Array1<f32>)>,
) -> CudaResult<(Array2<f32>, Array1<f32>, Array1<f32>)> {
    let (rows, c) = x.dim();
    ensure(gamma.len() == c && beta.len() == c, "cuda bn_relu", || {
        format!(
            "γ/β lengths {} / {} for {c} channels",
            gamma.len(),
            beta.len()
        )
    })?;
    let dx = be.upload(x.as_standard_layout().as_slice().expect("standard layout"))?;
    let (r64, ci) = (rows as i64, c as i32);
    let (mut mean, mut var) = (be.zeros::<f32>(c)?, be.zeros::<f32>(c)?);
    match stats {
        Some((m, v)) => {
            ensure(m.len() == c && v.len() == c, "cuda bn_relu", || {
                "stats length ≠ channels".into()
            })?;
            be.stream()
                .memcpy_htod(m.as_slice().expect("contiguous"), &mut mean)?;
            be.stream()
                .memcpy_htod(v.as_slice().expect("contiguous"), &mut var)?;
        }
        None => {
            let f = be.func(KernelModule::Cnn, "cnn_bn_stats_f32")?;
            let cfg = LaunchConfig {
                grid_dim: (c.max(1) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut l = be.stream().launch_builder(&f);
            l.arg(&dx).arg(&r64).arg(&ci).arg(&mut mean).arg(&mut var);
            // SAFETY: x holds rows·c, mean/var c entries; one block per channel.
            unsafe { l.launch(cfg) }?;
        }
    }
    let (dg, db) = (
        be.upload(gamma.as_slice().expect("contiguous"))?,
        be.upload(beta.as_slice().expect("contiguous"))?,
    );
    let mut out = be.zeros::<f32>(rows * c)?;
    let f = be.func(KernelModule::Cnn, "cnn_bn_relu_fwd_f32")?;
    let (eps, null) = (BN_EPS as f32, 0u64);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&dx)
        .arg(&mean)
        .arg(&var)
        .arg(&dg)
        .arg(&db)
        .arg(&eps)
        .arg(&r64)
        .arg(&ci)
        .arg(&null)
        .arg(&mut out);
    // SAFETY: x/out rows·c, per-channel buffers c entries; xhat not written (null).
    unsafe { l.launch(be.cfg_elems(rows * c)) }?;
    let o = be.download(&out)?;
    let (m, v) = (be.download(&mean)?, be.download(&var)?);
    Ok((
        Array2::from_shape_vec((rows, c), o[..rows * c].to_vec()).expect("rows·c"),
        Array1::from(m[..c].to_vec()),
        Array1::from(v[..c].to_vec()),
    ))
}

/// [`crate::nn::layers::maxpool2`] on the device.
pub fn maxpool2(be: &CudaBackend, x: &[f32], s: Nhwc) -> CudaResult<(Vec<f32>, Vec<u8>)> {
    ensure(x.len() == s.len(), "cuda maxpool2", || {
        format!("{} values for {s:?}", x.len())
    })?;
    let o = s.pooled();
    let len = o.len();
    let dx = be.upload(if x.is_empty() { &[0.0f32][..] } else { x })?;
    let mut out = be.zeros::<f32>(len)?;
    let mut arg = be.zeros::<u8>(len)?;
    let f = be.func(KernelModule::Cnn, "cnn_maxpool2_fwd_f32")?;
    let (n, h, w, c) = (s.n as i32, s.h as i32, s.w as i32, s.c as i32);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&dx)
        .arg(&mut out)
        .arg(&mut arg)
        .arg(&n)
        .arg(&h)
        .arg(&w)
        .arg(&c);
    // SAFETY: x holds n·h·w·c (checked); out/arg hold n·(h/2)·(w/2)·c = pooled().len().
    unsafe { l.launch(be.cfg_elems(len)) }?;
    Ok((
        be.download(&out)?[..len].to_vec(),
        be.download(&arg)?[..len].to_vec(),
    ))
}
