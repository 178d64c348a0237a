//! NNMF rows of the bench: exact MU fit, accelerated fit to the same objective, transform,
//! and the data-size scaling of NNMF (and the CNN epoch, via [`super::nets`]).

use super::{images, nets, time_it, Ctx, Result};
use crate::nmf::accel::{accel_fit, AccelParams};
use crate::nmf::exact::exact_fit;
use crate::nmf::{init_factors, NmfInit, NmfLoss, NmfModel};
use crate::rng::{stream, tag};
use ndarray::{Array2, ArrayView2, Axis};
use rand::Rng as _;

/// Iterations of the fit rows (quick mode: fewer).
fn iters(ctx: &Ctx) -> usize {
    if ctx.quick {
        20
    } else {
        200
    }
}

/// FLOPs of one exact MU iteration (the six GEMMs of `mu.rs`).
pub fn mu_flops(n: usize, p: usize, k: usize) -> f64 {
    let (n, p, k) = (n as f64, p as f64, k as f64);
    4.0 * n * p * k + 4.0 * p * k * k + 4.0 * n * k * k
}

/// The training images (quick: the first 500 of them).
fn train_images(ctx: &Ctx) -> Array2<f32> {
    let (mut tr, _, _) = ctx.split();
    if ctx.quick {
        tr.truncate(500);
    }
    images(&ctx.data, &tr)
}

/// Exact MU from NNDSVDa on `v`: pushes the init and iteration rows; returns (objective
/// after the last iteration, median seconds).
fn mu_rows(
    ctx: &mut Ctx,
    stage: &str,
    v: ArrayView2<f32>,
    k: usize,
    repeats: usize,
) -> Result<(f64, f64)> {
    let (n, p) = v.dim();
    let it = iters(ctx);
    let (ti, (h0, w0)) = time_it(usize::from(repeats > 1), repeats, || {
        Ok(init_factors(v, k, NmfInit::Nndsvda, 0)?)
    })?;
    ctx.push(
        &format!("{stage}_init"),
        format!("{n}×{p}, k={k}"),
        ti,
        None,
    )
    .note = if v.len() < 1 << 20 {
        "NNDSVDa (exact f64 thin SVD below 2²⁰ entries)".into()
    } else {
        "NNDSVDa (randomised SVD)".into()
    };
    let fit = |h0: &Array2<f32>, w0: &Array2<f32>| -> Result<f64> {
        let (mut h, mut w) = (h0.clone(), w0.clone());
        let hist = exact_fit(v, &mut h, &mut w, it, 0.0, None)?;
        Ok(*hist.objective.last().expect("iterations ran"))
    };
    let (t, obj) = time_it(usize::from(repeats > 1), repeats, || fit(&h0, &w0))?;
    let (te, (he, we)) = time_it(usize::from(repeats > 1), repeats, || {
        Ok(crate::nmf::init::nndsvda_exact(v, k)?)
    })?;
    let exact_obj = fit(&he, &we)?;
    ctx.push(
        &format!("{stage}_init_exact"),
        format!("{n}×{p}, k={k}"),
        te,
        None,
    )
    .note = format!(
        "NNDSVDa from the exact f64 thin SVD (reference); {it}-it MU objective from it {exact_obj:.6e}, from the init above {obj:.6e}: rel. {:.1e}",
        (obj - exact_obj).abs() / exact_obj
    );
    let flops = mu_flops(n, p, k) * it as f64;
    let floor = flops / ctx.peak;
    ctx.push(stage, format!("{n}×{p}, k={k}, {it} it"), t, Some(flops))
        .note = format!(
        "exact MU (fused pass, sparse products; dense-equivalent FLOPs); objective {obj:.6e}; {:.2}× the dense-GEMM floor",
        t.median / floor
    );
    Ok((obj, t.median))
}

/// Accelerated MU from NNDSVDa until the objective reaches `target`.
fn accel_row(
    ctx: &mut Ctx,
    stage: &str,
    v: ArrayView2<f32>,
    k: usize,
    target: f64,
    mu_s: f64,
    repeats: usize,
) -> Result<()> {
    let (n, p) = v.dim();
    let (h0, w0) = init_factors(v, k, NmfInit::Nndsvda, 0)?;
    let params = AccelParams {
        target: Some(target),
        ..AccelParams::default()
    };
    let it = iters(ctx);
    let (t, hist) = time_it(usize::from(repeats > 1), repeats, || {
        let (mut h, mut w) = (h0.clone(), w0.clone());
        Ok(accel_fit(v, &mut h, &mut w, 4 * it, 0.0, &params, None)?)
    })?;
    let last = hist.objective.last().copied().unwrap_or(f64::NAN);
    let reached = if hist.converged {
        "reached"
    } else {
        "NOT reached"
    };
    let density = crate::nmf::sparse::Csr::from_dense(v).density();
    ctx.push(stage, format!("{n}×{p}, k={k}"), t, None).note = format!(
        "to exact-MU {it}-it objective {target:.6e} ({reached}: {last:.6e}) in {} outer it; {:.1}× faster than exact MU; data density {:.0} %",
        hist.iterations,
        mu_s / t.median,
        100.0 * density
    );
    Ok(())
}

/// Exact MU, 200 iterations, tol 0, on the 7,000 training images for every `k`.
pub fn nnmf_fit(ctx: &mut Ctx) -> Result<()> {
    let v = train_images(ctx);
    for k in ctx.ks.clone() {
        let r = mu_rows(ctx, "nnmf_fit", v.view(), k, ctx.repeats)?;
        ctx.mu_runs.insert(k, r);
    }
    Ok(())
}

/// Time for the accelerated solver to reach the exact MU's 200-iteration objective.
pub fn nnmf_accel(ctx: &mut Ctx) -> Result<()> {
    let v = train_images(ctx);
    for k in ctx.ks.clone() {
        let (target, mu_s) = match ctx.mu_runs.get(&k) {
            Some(&r) => r,
            None => {
                let r = mu_rows(ctx, "nnmf_fit", v.view(), k, 1)?;
                ctx.mu_runs.insert(k, r);
                r
            }
        };
        accel_row(ctx, "nnmf_accel", v.view(), k, target, mu_s, ctx.repeats)?;
    }
    Ok(())
}

/// `NmfModel::transform` of the 1,500 test images (k = 32 basis, 200 iterations, tol 0).
pub fn nnmf_transform(ctx: &mut Ctx) -> Result<()> {
    let v = train_images(ctx);
    let k = if ctx.quick { 16 } else { 32 };
    let it = iters(ctx);
    let (mut h, mut w) = init_factors(v.view(), k, NmfInit::Nndsvda, 0)?;
    accel_fit(
        v.view(),
        &mut h,
        &mut w,
        it,
        0.0,
        &AccelParams::default(),
        None,
    )?;
    let model = NmfModel {
        basis: w,
        loss: NmfLoss::Frobenius,
        max_iter: it,
        tol: 0.0,
    };
    let (_, _, mut te) = ctx.split();
    if ctx.quick {
        te.truncate(200);
    }
    let x = images(&ctx.data, &te);
    let (t, _) = time_it(1, ctx.repeats, || Ok(model.transform(x.view())?))?;
    let (n, p) = x.dim();
    let (nf, pf, kf) = (n as f64, p as f64, k as f64);
    let flops = 2.0 * nf * pf * kf + it as f64 * (2.0 * nf * kf * kf + 6.0 * nf * kf);
    let row = ctx.push(
        "nnmf_transform",
        format!("{n}×{p}, k={k}, {it} it"),
        t,
        Some(flops),
    );
    row.note = format!("{:.0} rows/s; tol 0", nf / t.median);
    let fwd = t.median;
    // The exact image gradient of the same projection (pixel-space threat model): taped
    // forward + backward for a random adjoint.
    let r = Array2::from_shape_fn((n, k), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.5);
    let w = model.basis.view();
    let (t, _) = time_it(1, ctx.repeats, || {
        let (_, tape) = crate::nmf::project_grad::project_taped(x.view(), w, it, 0.0)?;
        Ok(tape.backward(w, r.view()))
    })?;
    let row = ctx.push(
        "nnmf_transform_grad",
        format!("{n}×{p}, k={k}, {it} it"),
        t,
        Some(2.0 * flops),
    );
    row.note = format!(
        "taped forward + backward: {:.1}× the forward alone",
        t.median / fwd
    );
    Ok(())
}

/// `n` synthetic MNIST-shaped images: embedded digits shifted by up to 2 pixels.
pub fn synthetic(ctx: &Ctx, n: usize) -> Array2<f32> {
    let src = &ctx.data.images;
    let (h, w) = (ctx.data.height, ctx.data.width);
    let mut out = Array2::<f32>::zeros((n, h * w));
    for (i, mut row) in out.axis_iter_mut(Axis(0)).enumerate() {
        let mut g = stream(0, &[tag("bench-synthetic"), i as u64]);
        let s = src.row(i % src.nrows());
        let (dy, dx) = (g.random_range(-2i64..=2), g.random_range(-2i64..=2));
        for r in 0..h as i64 {
            for c in 0..w as i64 {
                let (sr, sc) = (r - dy, c - dx);
                if sr >= 0 && sr < h as i64 && sc >= 0 && sc < w as i64 {
                    row[(r * w as i64 + c) as usize] = s[(sr * w as i64 + sc) as usize];
                }
            }
        }
    }
    out
}

/// NNMF (exact and accelerated, k = 32) and CNN epoch time against the number of images.
pub fn scaling_size(ctx: &mut Ctx) -> Result<()> {
    let sizes: Vec<usize> = if ctx.quick {
        vec![200, 400]
    } else {
        vec![2_500, 5_000, 10_000]
    };
    let k = if ctx.quick { 8 } else { 32 };
    let total = ctx.data.len();
    for &n in &sizes {
        // evenly spaced rows: every class (the data is grouped by class) in proportion
        let idx: Vec<usize> = (0..n).map(|i| i * total / n).collect();
        let v = images(&ctx.data, &idx);
        let (obj, s) = mu_rows(ctx, "scale_nnmf_fit", v.view(), k, ctx.repeats)?;
        accel_row(ctx, "scale_nnmf_accel", v.view(), k, obj, s, ctx.repeats)?;
        nets::cnn_epoch(ctx, Some(n))?;
    }
    let n = if ctx.quick { 1_000 } else { 60_000 };
    let v = synthetic(ctx, n);
    let (obj, s) = mu_rows(ctx, "scale_nnmf_fit_synthetic", v.view(), k, 1)?;
    accel_row(ctx, "scale_nnmf_accel_synthetic", v.view(), k, obj, s, 1)?;
    Ok(())
}
