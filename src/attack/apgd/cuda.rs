//! Batched APGD-L∞ with per-sample state in device memory (`kernels/apgd.cu`): the
//! feasible set, momentum step + projection, best-point bookkeeping, success masking and
//! the checkpoint decision with step halving all run as kernels; the model is any
//! [`AttackModel`] that reports a device. [`crate::attack::apgd::single_run`] (and every
//! attack built on it) takes this path for such a model when the run stops early: fooled
//! rows are frozen by a mask instead of being compacted, only active rows are passed to
//! the model, and successes are confirmed by the host's rule, so with the same model the
//! trajectories match the host state. Also the CE/DLR losses on the device.

use super::run::{confirm, Call};
use crate::attack::apgd::{ApgdParams, RunOutput, Schedule};
use crate::attack::{AttackModel, BoxConstraint, Loss, LossKind};
use crate::backend::cuda::error::{ensure, CudaResult};
use crate::backend::cuda::{CudaBackend, KernelModule};
use crate::progress::Progress;
use crate::rng::{key, tag};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// CE or DLR loss and d loss/d logits on the device (parity helper and building block).
pub fn loss_and_grad(
    be: &CudaBackend,
    kind: LossKind,
    logits: ArrayView2<f32>,
    y: &[usize],
) -> CudaResult<(Array1<f32>, Array2<f32>)> {
    let (rows, k) = logits.dim();
    ensure(
        y.len() == rows && y.iter().all(|&c| c < k) && (kind == LossKind::Ce || k >= 3),
        "cuda loss",
        || format!("{rows} rows, {} labels, {k} classes", y.len()),
    )?;
    let dz = be.upload(
        logits
            .as_standard_layout()
            .as_slice()
            .expect("standard layout"),
    )?;
    let dy = be.upload(&y.iter().map(|&c| c as i32).collect::<Vec<_>>())?;
    let mut dl = be.zeros::<f32>(rows)?;
    let mut dg = be.zeros::<f32>(rows * k)?;
    let f = be.func(
        KernelModule::Apgd,
        if kind == LossKind::Ce {
            "loss_ce_f32"
        } else {
            "loss_dlr_f32"
        },
    )?;
    let (r64, ki) = (rows as i64, k as i32);
    let mut l = be.stream().launch_builder(&f);
    l.arg(&dz)
        .arg(&dy)
        .arg(&mut dl)
        .arg(&mut dg)
        .arg(&r64)
        .arg(&ki);
    // SAFETY: logits/grad hold rows·K, labels/loss rows entries; labels < K (checked).
    unsafe { l.launch(be.cfg_elems(rows)) }?;
    let loss = be.download(&dl)?[..rows].to_vec();
    let grad = be.download(&dg)?[..rows * k].to_vec();
    Ok((
        Array1::from(loss),
        Array2::from_shape_vec((rows, k), grad).expect("rows·K"),
    ))
}

/// Per-sample APGD state on the device (n rows × d).
pub struct ApgdState {
    be: CudaBackend,
    n: usize,
    d: usize,
    n_iter: usize,
    pub lower: CudaSlice<f32>,
    pub upper: CudaSlice<f32>,
    pub x_adv: CudaSlice<f32>,
    pub x_prev: CudaSlice<f32>,
    pub g: CudaSlice<f32>,
    pub x_best: CudaSlice<f32>,
    pub g_best: CudaSlice<f32>,
    pub x_best_adv: CudaSlice<f32>,
    pub eta: CudaSlice<f32>,
    pub l_best: CudaSlice<f32>,
    pub l_best_last: CudaSlice<f32>,
    pub reduced_last: CudaSlice<i32>,
    pub active: CudaSlice<i32>,
    pub fooled: CudaSlice<i32>,
    pub hist: CudaSlice<f32>,
    y: CudaSlice<i32>,
}

fn rows_block(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.max(1) as u32, 1, 1),
        block_dim: (128, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl ApgdState {
    /// Feasible set of `x` and the projected start `x0` (both n × d).
    pub fn new(
        be: &CudaBackend,
        x: ArrayView2<f32>,
        x0: ArrayView2<f32>,
        y: &[usize],
        eps: f32,
        bounds: &BoxConstraint,
        n_iter: usize,
    ) -> CudaResult<Self> {
        let (n, d) = x.dim();
        ensure(
            x0.dim() == (n, d) && y.len() == n && n_iter >= 1,
            "cuda apgd state",
            || format!("x {:?}, x0 {:?}, {} labels", x.dim(), x0.dim(), y.len()),
        )?;
        let dx = be.upload(x.as_standard_layout().as_slice().expect("standard layout"))?;
        let (mode, lo, hi) = match bounds {
            BoxConstraint::None => (0, vec![0.0f32], vec![0.0f32]),
            BoxConstraint::Unit => (1, vec![0.0], vec![0.0]),
            BoxConstraint::Range { lo, hi } => (2, lo.to_vec(), hi.to_vec()),
        };
        ensure(
            mode != 2 || (lo.len() == d && hi.len() == d),
            "cuda apgd state",
            || "box range length ≠ d".into(),
        )?;
        let (dlo, dhi) = (be.upload(&lo)?, be.upload(&hi)?);
        let mut lower = be.zeros::<f32>(n * d)?;
        let mut upper = be.zeros::<f32>(n * d)?;
        let f = be.func(KernelModule::Apgd, "apgd_feasible_f32")?;
        let (n64, di) = (n as i64, d as i32);
        let mut l = be.stream().launch_builder(&f);
        l.arg(&dx)
            .arg(&n64)
            .arg(&di)
            .arg(&eps)
            .arg(&mode)
            .arg(&dlo)
            .arg(&dhi)
            .arg(&mut lower)
            .arg(&mut upper);
        // SAFETY: x, lower, upper hold n·d; lo/hi d entries when mode 2 (checked), unread otherwise.
        unsafe { l.launch(be.cfg_elems(n * d)) }?;
        let mut x_adv = be.upload(x0.as_standard_layout().as_slice().expect("standard layout"))?;
        let f = be.func(KernelModule::Apgd, "apgd_project_f32")?;
        let len = (n * d) as i64;
        let mut l = be.stream().launch_builder(&f);
        l.arg(&mut x_adv).arg(&lower).arg(&upper).arg(&len);
        // SAFETY: all three buffers hold n·d elements.
        unsafe { l.launch(be.cfg_elems(n * d)) }?;
        let z = |len: usize| be.zeros::<f32>(len);
        Ok(ApgdState {
            be: be.clone(),
            n,
            d,
            n_iter,
            x_prev: x_adv.clone(),
            x_best: x_adv.clone(),
            x_best_adv: x_adv.clone(),
            g: z(n * d)?,
            g_best: z(n * d)?,
            eta: be.upload(&vec![2.0 * eps; n])?,
            l_best: z(n)?,
            l_best_last: z(n)?,
            reduced_last: be.upload(&vec![1i32; n])?,
            active: be.upload(&vec![1i32; n])?,
            fooled: be.zeros::<i32>(n)?,
            hist: z(n * n_iter)?,
            y: be.upload(&y.iter().map(|&c| c as i32).collect::<Vec<_>>())?,
            lower,
            upper,
            x_adv,
        })
    }

    /// §4.3 steps 1–4 with momentum weight `a` (1 at the first iteration, else 0.75).
    pub fn step(&mut self, a: f32) -> CudaResult<()> {
        let be = &self.be;
        let f = be.func(KernelModule::Apgd, "apgd_step_f32")?;
        let (n64, di) = (self.n as i64, self.d as i32);
        let mut l = be.stream().launch_builder(&f);
        l.arg(&mut self.x_adv)
            .arg(&mut self.x_prev)
            .arg(&self.g)
            .arg(&self.lower)
            .arg(&self.upper);
        l.arg(&self.eta)
            .arg(&self.active)
            .arg(&n64)
            .arg(&di)
            .arg(&a);
        // SAFETY: every n×d buffer was allocated with n·d elements, eta/active with n (new()).
        unsafe { l.launch(be.cfg_elems(self.n * self.d)) }?;
        be.debug_sync()
    }

    /// Record the model's answer at the current iterate (`it` = iteration index, −1 for the
    /// start point, which also initialises g_best/l_best): loss, prediction, gradient
    /// (all n rows; inactive rows are ignored).
    pub fn update(
        &mut self,
        loss: &[f32],
        pred: &[usize],
        grad: ArrayView2<f32>,
        it: i32,
    ) -> CudaResult<()> {
        ensure(
            loss.len() == self.n && pred.len() == self.n && grad.dim() == (self.n, self.d),
            "cuda apgd update",
            || "model output of the wrong shape".into(),
        )?;
        let be = &self.be;
        let dl = be.upload(loss)?;
        let dp = be.upload(&pred.iter().map(|&c| c as i32).collect::<Vec<_>>())?;
        let dg = be.upload(
            grad.as_standard_layout()
                .as_slice()
                .expect("standard layout"),
        )?;
        if it < 0 {
            // Start point: l_best = l_best_last = loss, g_best = g.
            be.stream().memcpy_htod(loss, &mut self.l_best)?;
            be.stream().memcpy_htod(loss, &mut self.l_best_last)?;
            be.stream().memcpy_dtod(&dg, &mut self.g_best)?;
        }
        let f = be.func(KernelModule::Apgd, "apgd_update_f32")?;
        let (ni, n64, di) = (self.n_iter as i32, self.n as i64, self.d as i32);
        let mut l = be.stream().launch_builder(&f);
        l.arg(&self.x_adv)
            .arg(&dg)
            .arg(&mut self.g)
            .arg(&dl)
            .arg(&dp)
            .arg(&self.y)
            .arg(&mut self.x_best)
            .arg(&mut self.g_best);
        l.arg(&mut self.l_best)
            .arg(&mut self.x_best_adv)
            .arg(&mut self.active)
            .arg(&mut self.fooled)
            .arg(&mut self.hist);
        l.arg(&ni).arg(&it).arg(&n64).arg(&di);
        // SAFETY: n×d buffers n·d elements, per-row buffers n, hist n·n_iter with it < n_iter;
        // one block per row (grid n).
        unsafe { l.launch(rows_block(self.n)) }?;
        be.debug_sync()
    }

    /// §4.4 checkpoint after iteration `i` with interval `k`.
    pub fn checkpoint(&mut self, i: usize, k: usize, rho: f32) -> CudaResult<()> {
        let be = &self.be;
        let f = be.func(KernelModule::Apgd, "apgd_checkpoint_f32")?;
        let (ni, ii, ki, n64, di) = (
            self.n_iter as i32,
            i as i32,
            k as i32,
            self.n as i64,
            self.d as i32,
        );
        let mut l = be.stream().launch_builder(&f);
        l.arg(&self.hist)
            .arg(&ni)
            .arg(&ii)
            .arg(&ki)
            .arg(&rho)
            .arg(&self.l_best)
            .arg(&mut self.l_best_last);
        l.arg(&mut self.reduced_last)
            .arg(&mut self.eta)
            .arg(&mut self.x_adv)
            .arg(&mut self.g)
            .arg(&self.x_best);
        l.arg(&self.g_best).arg(&self.active).arg(&n64).arg(&di);
        // SAFETY: hist n·n_iter (i < n_iter), per-row buffers n, n×d buffers n·d; grid n.
        unsafe { l.launch(rows_block(self.n)) }?;
        be.debug_sync()
    }

    pub fn download(&self, b: &CudaSlice<f32>, cols: usize) -> CudaResult<Array2<f32>> {
        let v = self.be.download(b)?;
        Ok(Array2::from_shape_vec((self.n, cols), v[..self.n * cols].to_vec()).expect("n·cols"))
    }

    fn flags(&self, b: &CudaSlice<i32>) -> CudaResult<Vec<bool>> {
        Ok(self.be.download(b)?[..self.n]
            .iter()
            .map(|&v| v != 0)
            .collect())
    }
}

/// One APGD run with the state on the device, chosen by [`crate::attack::apgd::single_run`]
/// (and the attacks built on it) when the model reports a [`AttackModel::device`] and the
/// run stops early; `x0` is the projected start point. The model sees only active rows;
/// on a stochastic model a guessed success is confirmed exactly as on the host
/// ([`super::run::confirm`], same keys), so both states give the same decisions.
#[allow(clippy::too_many_arguments)]
pub(super) fn run<M: AttackModel + ?Sized>(
    be: &CudaBackend,
    model: &M,
    x: ArrayView2<f32>,
    x0: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    loss: Loss<'_>,
    restart: u64,
    prog: Option<&Progress>,
) -> crate::Result<RunOutput> {
    let n = x.nrows();
    let mut dev = DeviceRun {
        st: ApgdState::new(be, x, x0, y, p.eps, &p.bounds, p.n_iter)?,
        model,
        y,
        ids,
        p,
        loss,
        targets: loss.targets_for(0..n, 1).unwrap_or_default(),
        restart,
        out: RunOutput {
            fooled: vec![false; n],
            x_best_adv: Array2::zeros((0, 0)),
            x_best: Array2::zeros((0, 0)),
            l_best: vec![],
            grad_evals: 0,
            confirm_evals: 0,
        },
    };
    dev.call(0, -1)?;
    let sched = Schedule::new(p.n_iter);
    let (mut k, mut counter, mut done) = (sched.first, 0usize, 0u64);
    for i in 0..p.n_iter {
        if !dev.st.flags(&dev.st.active)?.iter().any(|&a| a) {
            break;
        }
        dev.st.step(if i == 0 { 1.0 } else { 0.75 })?;
        dev.call(i + 1, i as i32)?;
        counter += 1;
        if counter == k {
            dev.st.checkpoint(i, k, p.rho)?;
            counter = 0;
            k = sched.next(k);
        }
        done += 1;
        if let Some(pr) = prog {
            pr.inc(1);
        }
    }
    if let Some(pr) = prog {
        pr.inc(p.n_iter as u64 - done);
    }
    dev.finish()
}

/// What one device run holds fixed, and its output counters.
struct DeviceRun<'a, M: ?Sized> {
    st: ApgdState,
    model: &'a M,
    y: &'a [usize],
    ids: &'a [u64],
    p: &'a ApgdParams,
    loss: Loss<'a>,
    /// APGD-T target per row (empty when untargeted).
    targets: Vec<usize>,
    restart: u64,
    out: RunOutput,
}

impl<M: AttackModel + ?Sized> DeviceRun<'_, M> {
    /// Model call `it` at the current iterate of the active rows (noise key
    /// `(seed, "apgd-model", loss, restart, it)`), guessed successes confirmed, then the
    /// state's update for iteration `hist_it` (−1: the start point).
    fn call(&mut self, it: usize, hist_it: i32) -> crate::Result<()> {
        let (st, p) = (&self.st, self.p);
        let (n, d) = (st.n, st.d);
        let active = st.flags(&st.active)?;
        let idx: Vec<usize> = (0..n).filter(|&r| active[r]).collect();
        let xa = st.download(&st.x_adv, d)?.select(Axis(0), &idx);
        let ys: Vec<usize> = idx.iter().map(|&r| self.y[r]).collect();
        let is: Vec<u64> = idx.iter().map(|&r| self.ids[r]).collect();
        let ts: Vec<usize> = idx
            .iter()
            .filter_map(|&r| self.targets.get(r))
            .copied()
            .collect();
        let l = self.loss.with_targets((!ts.is_empty()).then_some(&ts[..]));
        let code = self.loss.code();
        let k = key(p.seed, &[tag("apgd-model"), code, self.restart, it as u64]);
        self.out.grad_evals += (idx.len() * p.eot) as u64;
        let ev = self
            .model
            .evaluate(xa.view(), &ys, &is, l, p.eot, k, true)?;
        let guess: Vec<bool> = (0..idx.len()).map(|q| ev.pred[q] != ys[q]).collect();
        let at = Call {
            code,
            restart: self.restart,
            it,
        };
        let fooled = confirm(
            self.model,
            p,
            at,
            xa.view(),
            &ys,
            &is,
            &guess,
            &mut self.out,
        )?;
        let g = ev
            .grad
            .expect("AttackModel::evaluate must return a gradient when asked");
        let (mut lv, mut pr, mut gf) = (vec![0f32; n], self.y.to_vec(), Array2::zeros((n, d)));
        for (q, &r) in idx.iter().enumerate() {
            lv[r] = ev.loss[q];
            // An unconfirmed guess is reported as the label: the row keeps iterating.
            pr[r] = if fooled[q] { ev.pred[q] } else { self.y[r] };
            gf.row_mut(r).assign(&g.row(q));
        }
        self.st.update(&lv, &pr, gf.view(), hist_it)?;
        Ok(())
    }

    /// The run's output, downloaded.
    fn finish(mut self) -> crate::Result<RunOutput> {
        let (st, d) = (&self.st, self.st.d);
        self.out.fooled = st.flags(&st.fooled)?;
        self.out.x_best_adv = st.download(&st.x_best_adv, d)?;
        self.out.x_best = st.download(&st.x_best, d)?;
        self.out.l_best = st.be.download(&st.l_best)?[..st.n].to_vec();
        Ok(self.out)
    }
}
