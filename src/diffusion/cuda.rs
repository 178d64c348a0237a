//! The defended pipeline on the GPU ([`CudaDefended`], an [`AttackModel`]): the same
//! computation as [`crate::diffusion::fast::FastDefended`] (forward diffusion to t*, t*
//! reverse steps with the time embedding folded into a per-step first-layer bias, the
//! classifier, CE/DLR loss, input gradient through every step) with one fused kernel per
//! reverse step for the whole batch (`kernels/denoiser.cu`).
//!
//! **Noise**: as an `AttackModel` the CUDA defence draws, by default, the CPU defence's own
//! streams ([`NoiseSource::Host`]: `(key, id, draw)`-keyed, generated on the host and
//! uploaded), so a `device: cuda` run sees the noise of the CPU run and whole attacks can be
//! compared. With [`NoiseSource::Device`] the kernels draw Philox normals keyed the same way
//! (no upload, batch-independent, but a different stream). [`CudaDefended::chunk`] takes
//! injected noise or `None` for Philox.

use crate::attack::Loss;
use crate::backend::cuda::error::{ensure, CudaResult};
use crate::backend::cuda::{CudaBackend, KernelModule};
use crate::config::Prediction;
use crate::diffusion::fast::{reverse_steps, StepCoef};
use crate::diffusion::Schedule;
use crate::nn::mlp::{Activation, Mlp};
use cudarc::driver::{CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use ndarray::{s, Array1, Array2, ArrayView2};

/// Rows per tile of the MLP kernels (`MLP_ROWS` in denoiser.cu).
const MLP_ROWS: usize = 4;
const MAX_LAYERS: usize = 16;
const SMEM_DEFAULT: usize = 48 * 1024;
/// Rows (points × draws) per device chunk (bounds the stored activation derivatives).
pub(crate) const CHUNK_ROWS: usize = 16_384;

/// An MLP packed for the kernels: per layer `W_l` then `b_l`.
pub struct DevMlp {
    w: CudaSlice<f32>,
    wlen: usize,
    dims: CudaSlice<i32>,
    dims_host: Vec<usize>,
    maxw: usize,
    hsum: usize,
    act: i32,
}

pub(crate) fn act_code(a: Activation) -> i32 {
    match a {
        Activation::Relu => 0,
        Activation::Silu => 1,
    }
}

impl DevMlp {
    pub fn new(be: &CudaBackend, m: &Mlp<f32>) -> CudaResult<Self> {
        ensure(
            !m.layers.is_empty() && m.layers.len() <= MAX_LAYERS,
            "cuda mlp",
            || format!("{} layers (1..={MAX_LAYERS} supported)", m.layers.len()),
        )?;
        let mut dims = vec![m.layers[0].w.nrows()];
        let mut pack = Vec::new();
        for l in &m.layers {
            dims.push(l.w.ncols());
            pack.extend(l.w.as_standard_layout().iter().copied());
            pack.extend(l.b.iter().copied());
        }
        let maxw = *dims.iter().max().expect("non-empty");
        let hsum = dims[1..dims.len() - 1].iter().sum();
        let di: Vec<i32> = dims.iter().map(|&x| x as i32).collect();
        Ok(DevMlp {
            w: be.upload(&pack)?,
            wlen: pack.len(),
            dims: be.upload(&di)?,
            dims_host: dims,
            maxw,
            hsum,
            act: act_code(m.act),
        })
    }
    fn nl(&self) -> i32 {
        (self.dims_host.len() - 1) as i32
    }
    pub fn input_dim(&self) -> usize {
        self.dims_host[0]
    }
    pub fn output_dim(&self) -> usize {
        *self.dims_host.last().expect("non-empty")
    }
    /// Launch shape: weights staged in shared memory when they fit (persistent grid).
    fn cfg(&self, be: &CudaBackend, rows: usize) -> (LaunchConfig, i32) {
        let act = 2 * MLP_ROWS * self.maxw * 4;
        let with_w = act + self.wlen * 4;
        let tiles = rows.div_ceil(MLP_ROWS).max(1);
        let (use_smem, smem, grid) = if with_w <= SMEM_DEFAULT {
            (1, with_w, tiles.min(be.sm_count() as usize * 4))
        } else {
            (0, act, tiles)
        };
        (
            LaunchConfig {
                grid_dim: (grid as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: smem as u32,
            },
            use_smem,
        )
    }
}

/// The defended model on a CUDA device.
pub struct CudaDefended {
    be: CudaBackend,
    d: usize,
    t_star: usize,
    sqrt_ab: f32,
    sqrt_1mab: f32,
    steps: Vec<StepCoef>,
    /// Per-step first-layer bias, `t* × h1` (step j runs s = t* − j).
    b1: CudaSlice<f32>,
    h1: usize,
    den: DevMlp,
    clf: DevMlp,
    classes: usize,
    /// Where [`AttackModel::evaluate`](crate::attack::AttackModel::evaluate) takes its
    /// noise from.
    noise: NoiseSource,
}

/// The noise stream of the CUDA defence's evaluations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoiseSource {
    /// The CPU defence's streams (`(key, id, draw)`-keyed xoshiro, generated on the host in
    /// parallel and uploaded): a CUDA run draws exactly the CPU run's noise (the default).
    Host,
    /// Philox generated in the kernels, keyed by `(key, id, draw)`: no host work or
    /// upload, but a different stream from the CPU's.
    Device,
}

/// Output of one device chunk (rows = points × draws; the gradient per row, not averaged
/// over draws): the CPU chunk's type.
pub type CudaChunkOut = super::fast::ChunkOut;

/// The host inputs of one [`CudaDefended::chunk`] (`draws` ≥ 1).
struct HostChunk<'a> {
    x0: ArrayView2<'a, f32>,
    noise: Option<ArrayView2<'a, f32>>,
    ids: &'a [u64],
    draws: usize,
    key: u64,
    y: &'a [usize],
}

impl HostChunk<'_> {
    /// Copy to the device; `noise_len`: noise values per row (`t*·d`, also when none is
    /// injected).
    fn upload(&self, be: &CudaBackend, noise_len: usize) -> CudaResult<DevChunk> {
        let rows = self.x0.nrows();
        let x0 = be.upload(
            self.x0
                .as_standard_layout()
                .as_slice()
                .expect("standard layout"),
        )?;
        let noise = match &self.noise {
            Some(nz) => {
                Some(be.upload(nz.as_standard_layout().as_slice().expect("standard layout"))?)
            }
            None => None,
        };
        let noise_stride = noise_len as i64;
        let ids = be.upload(self.ids)?;
        let yi: Vec<i32> = self.y.iter().map(|&c| c as i32).collect();
        let y = be.upload(&yi)?;
        Ok(DevChunk {
            x0,
            noise,
            noise_stride,
            ids,
            y,
            rows,
            r64: rows as i64,
            draws: self.draws as i32,
            key: self.key,
            null: 0,
        })
    }
}

/// One chunk's inputs on the device, with the launch scalars its kernels share.
struct DevChunk {
    x0: CudaSlice<f32>,
    noise: Option<CudaSlice<f32>>,
    /// Noise values per row (`t*·d`).
    noise_stride: i64,
    ids: CudaSlice<u64>,
    y: CudaSlice<i32>,
    rows: usize,
    r64: i64,
    draws: i32,
    key: u64,
    /// Passed for an absent pointer argument.
    null: u64,
}

impl DevChunk {
    /// The noise arguments of the start and step kernels: injected noise (or null), its
    /// row stride, the Philox key, the ids and the draws per id.
    fn push_noise<'a>(&'a self, l: &mut LaunchArgs<'a>) {
        match &self.noise {
            Some(nz) => l.arg(nz),
            None => l.arg(&self.null),
        };
        l.arg(&self.noise_stride)
            .arg(&self.key)
            .arg(&self.ids)
            .arg(&self.draws);
    }
}

impl CudaDefended {
    /// The defence of a trained denoiser `den` and classifier `clf` at `t_star` on `be`.
    pub fn of(
        be: &CudaBackend,
        den: &super::denoiser::Denoiser,
        clf: &Mlp<f32>,
        t_star: usize,
    ) -> CudaResult<Self> {
        Self::new(be, &den.mlp, clf, &den.sched, &den.emb, t_star, den.predict)
    }

    /// Same inputs as [`crate::diffusion::model::Defended::new`].
    pub fn new(
        be: &CudaBackend,
        den: &Mlp<f32>,
        clf: &Mlp<f32>,
        sched: &Schedule,
        emb: &Array2<f32>,
        t_star: usize,
        predict: Prediction,
    ) -> CudaResult<Self> {
        let d = den.output_dim();
        let first = &den.layers[0];
        ensure(
            first.w.nrows() == d + emb.ncols()
                && t_star >= 1
                && t_star < sched.alpha.len()
                && t_star < emb.nrows(),
            "cuda defended",
            || "denoiser input must be [x, emb(t)] and 1 ≤ t* ≤ T".into(),
        )?;
        ensure(clf.input_dim() == d, "cuda defended", || {
            format!("classifier input {} ≠ feature dim {d}", clf.input_dim())
        })?;
        let h1 = first.w.ncols();
        let (steps, b1s) = reverse_steps(den, sched, emb, t_star, predict);
        let b1: Vec<f32> = b1s.iter().flat_map(|b| b.iter().copied()).collect();
        // The denoiser kernels see only the x-part of the first layer.
        let mut den_x = den.clone();
        den_x.layers[0].w = first.w.slice(s![0..d, ..]).to_owned();
        let ab = sched.alpha_bar[t_star];
        Ok(CudaDefended {
            be: be.clone(),
            d,
            t_star,
            sqrt_ab: ab.sqrt() as f32,
            sqrt_1mab: (1.0 - ab).sqrt() as f32,
            steps,
            b1: be.upload(&b1)?,
            h1,
            den: DevMlp::new(be, &den_x)?,
            clf: DevMlp::new(be, clf)?,
            classes: clf.output_dim(),
            noise: NoiseSource::Host,
        })
    }

    /// This defence with its evaluations' noise taken from `src`.
    pub fn with_noise(self, src: NoiseSource) -> Self {
        CudaDefended { noise: src, ..self }
    }

    /// The device this defence runs on.
    pub(crate) fn backend(&self) -> &CudaBackend {
        &self.be
    }

    pub(crate) fn noise_source(&self) -> NoiseSource {
        self.noise
    }

    pub(crate) fn num_classes_(&self) -> usize {
        self.classes
    }

    /// Noise values per row when injected (`t* · d`, same layout as the CPU).
    pub fn noise_len(&self) -> usize {
        self.t_star * self.d
    }

    /// Purify and classify `x0` (rows = point i, draw e at i·draws + e). `noise`: injected
    /// (`rows × t*·d`) or `None` for Philox keyed by `(key, ids[i], e)`.
    #[allow(clippy::too_many_arguments)]
    pub fn chunk(
        &self,
        x0: ArrayView2<f32>,
        noise: Option<ArrayView2<f32>>,
        ids: &[u64],
        draws: usize,
        key: u64,
        y: &[usize],
        loss: Loss<'_>,
        grad: bool,
    ) -> CudaResult<CudaChunkOut> {
        let host = HostChunk {
            x0,
            noise,
            ids,
            draws: draws.max(1),
            key,
            y,
        };
        self.check_chunk(&host)?;
        let dev = host.upload(&self.be, self.noise_len())?;
        let mut x = self.start(&dev)?;
        let dderiv = self.reverse(&dev, &mut x, grad)?;
        let (logits, logits_h, cderiv) = self.classify(&x, dev.rows, grad)?;
        let (loss_h, dg) = self.loss(&dev, loss, &logits, &logits_h, y)?;
        let grad = if grad {
            let dd = dderiv.as_ref().expect("allocated when grad");
            Some(self.backward(&dg, cderiv.as_ref(), dd, dev.rows)?)
        } else {
            None
        };
        Ok(CudaChunkOut {
            logits: logits_h,
            loss: loss_h,
            grad,
        })
    }

    /// Shapes of one chunk's inputs agree with the model and with each other.
    fn check_chunk(&self, host: &HostChunk<'_>) -> CudaResult<()> {
        let (x0, y, ids, draws) = (host.x0, host.y, host.ids, host.draws);
        let (rows, d, k) = (x0.nrows(), self.d, self.classes);
        ensure(
            x0.ncols() == d && y.len() == rows && ids.len() * draws >= rows,
            "cuda defended chunk",
            || {
                format!(
                    "x0 {:?}, {} labels, {} ids × {draws} draws",
                    x0.dim(),
                    y.len(),
                    ids.len()
                )
            },
        )?;
        if let Some(nz) = &host.noise {
            ensure(
                nz.dim() == (rows, self.noise_len()),
                "cuda defended chunk",
                || format!("noise {:?} ≠ ({rows}, {})", nz.dim(), self.noise_len()),
            )?;
        }
        ensure(y.iter().all(|&c| c < k), "cuda defended chunk", || {
            format!("label ≥ {k} classes")
        })
    }

    /// Forward diffusion to t*: `x = √ᾱ x0 + √(1−ᾱ) n` on the device.
    fn start(&self, dev: &DevChunk) -> CudaResult<CudaSlice<f32>> {
        let be = &self.be;
        let (rows, d) = (dev.rows, self.d);
        let di = d as i32;
        let mut x = be.zeros::<f32>(rows * d)?;
        let f = be.func(KernelModule::Denoiser, "denoise_start_f32")?;
        let (sab, s1m) = (self.sqrt_ab, self.sqrt_1mab);
        let mut l = be.stream().launch_builder(&f);
        l.arg(&dev.x0)
            .arg(&mut x)
            .arg(&dev.r64)
            .arg(&di)
            .arg(&sab)
            .arg(&s1m);
        dev.push_noise(&mut l);
        // SAFETY: x0 and x hold rows·d elements, injected noise rows·t*·d (checked above),
        // ids ≥ rows/draws entries; the kernel indexes rows·d elements, noise columns < d.
        unsafe { l.launch(be.cfg_elems(rows * d)) }?;
        Ok(x)
    }

    /// The t* reverse steps on `x`, one fused launch each; with `grad` the activation
    /// derivatives of every step (`t* × rows × hsum`) are kept for the backward pass.
    fn reverse(
        &self,
        dev: &DevChunk,
        x: &mut CudaSlice<f32>,
        grad: bool,
    ) -> CudaResult<Option<CudaSlice<f32>>> {
        let be = &self.be;
        let (rows, dhs) = (dev.rows, self.den.hsum);
        let null = 0u64;
        let mut dderiv = if grad {
            Some(be.zeros::<f32>(self.t_star * rows * dhs)?)
        } else {
            None
        };
        let step_f = be.func(KernelModule::Denoiser, "denoise_step_fwd_f32")?;
        let (cfg, use_smem) = self.den.cfg(be, rows);
        let (wlen, nl, maxw, act, hs) = (
            self.den.wlen as i64,
            self.den.nl(),
            self.den.maxw as i32,
            self.den.act,
            dhs as i32,
        );
        for (j, c) in self.steps.iter().enumerate() {
            let b1 = self.b1.slice(j * self.h1..(j + 1) * self.h1);
            let ji = j as i32;
            let mut l = be.stream().launch_builder(&step_f);
            l.arg(&mut *x)
                .arg(&dev.r64)
                .arg(&self.den.w)
                .arg(&wlen)
                .arg(&self.den.dims)
                .arg(&nl)
                .arg(&maxw)
                .arg(&use_smem);
            l.arg(&b1)
                .arg(&act)
                .arg(&c.a)
                .arg(&c.b)
                .arg(&c.sigma)
                .arg(&ji);
            dev.push_noise(&mut l);
            let mut dv = dderiv
                .as_mut()
                .map(|dd| dd.slice_mut(j * rows * dhs..(j + 1) * rows * dhs));
            match dv.as_mut() {
                Some(v) => l.arg(v),
                None => l.arg(&null),
            };
            l.arg(&hs);
            // SAFETY: x holds rows·d; weights wlen and dims nl+1 entries as packed by DevMlp
            // (widths ≤ maxw, shared memory sized by DevMlp::cfg); b1 slice h1 entries;
            // derivative slice rows·hsum; noise/ids as for the start kernel.
            unsafe { l.launch(cfg) }?;
            be.debug_sync()?;
        }
        Ok(dderiv)
    }

    /// The classifier on the purified `x`: logits on the device and on the host, and (with
    /// `grad`) its activation derivatives.
    #[allow(clippy::type_complexity)]
    fn classify(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        grad: bool,
    ) -> CudaResult<(CudaSlice<f32>, Array2<f32>, Option<CudaSlice<f32>>)> {
        let (be, k) = (&self.be, self.classes);
        let chs = self.clf.hsum;
        let mut cderiv = if grad {
            Some(be.zeros::<f32>(rows * chs)?)
        } else {
            None
        };
        let mut logits = be.zeros::<f32>(rows * k)?;
        self.mlp_fwd(x, &mut logits, rows, cderiv.as_mut())?;
        let logits_h =
            Array2::from_shape_vec((rows, k), be.download(&logits)?[..rows * k].to_vec())
                .expect("rows·K");
        Ok((logits, logits_h, cderiv))
    }

    /// Per-row loss (host) and its logit gradient (device): CE / DLR on the device,
    /// the targeted DLR of APGD-T on the host.
    fn loss(
        &self,
        dev: &DevChunk,
        loss: Loss<'_>,
        logits: &CudaSlice<f32>,
        logits_h: &Array2<f32>,
        y: &[usize],
    ) -> CudaResult<(Array1<f32>, CudaSlice<f32>)> {
        let (be, rows, k) = (&self.be, dev.rows, self.classes);
        match loss {
            Loss::Ce | Loss::Dlr => {
                let mut dl = be.zeros::<f32>(rows)?;
                let mut dg = be.zeros::<f32>(rows * k)?;
                let lf = be.func(
                    KernelModule::Apgd,
                    if loss == Loss::Ce {
                        "loss_ce_f32"
                    } else {
                        "loss_dlr_f32"
                    },
                )?;
                let ki = k as i32;
                let mut l = be.stream().launch_builder(&lf);
                l.arg(logits)
                    .arg(&dev.y)
                    .arg(&mut dl)
                    .arg(&mut dg)
                    .arg(&dev.r64)
                    .arg(&ki);
                // SAFETY: logits and dg hold rows·K, dy and dl rows entries; labels < K
                // (checked).
                unsafe { l.launch(be.cfg_elems(rows)) }?;
                Ok((Array1::from(be.download(&dl)?[..rows].to_vec()), dg))
            }
            Loss::DlrTargeted(_) => {
                // APGD-T: the targeted DLR on the host (K values per row), its logit
                // gradient uploaded for the device backward pass.
                let (lh, gh) = crate::attack::loss::loss_and_grad(loss, logits_h.view(), y);
                let dg = be.upload(gh.as_slice().expect("fresh array"))?;
                Ok((lh, dg))
            }
        }
    }

    /// Input gradient per row from the logit gradient `dg`: back through the classifier
    /// (derivatives `cderiv`), then every reverse step in reverse order (`dderiv`), times
    /// `√ᾱ` of the forward diffusion.
    fn backward(
        &self,
        dg: &CudaSlice<f32>,
        cderiv: Option<&CudaSlice<f32>>,
        dderiv: &CudaSlice<f32>,
        rows: usize,
    ) -> CudaResult<Array2<f32>> {
        let (be, d, dhs) = (&self.be, self.d, self.den.hsum);
        let mut ga = be.zeros::<f32>(rows * d)?;
        self.mlp_bwd(&self.clf, dg, &mut ga, rows, cderiv, 0.0, 1.0)?;
        let mut gb = be.zeros::<f32>(rows * d)?;
        for (j, c) in self.steps.iter().enumerate().rev() {
            let dj = dderiv.slice(j * rows * dhs..(j + 1) * rows * dhs);
            self.mlp_bwd_view(&ga, &mut gb, rows, &dj, c.a, c.b)?;
            std::mem::swap(&mut ga, &mut gb);
        }
        let g = be.download(&ga)?;
        let mut g = Array2::from_shape_vec((rows, d), g[..rows * d].to_vec()).expect("rows·d");
        g.mapv_inplace(|v| v * self.sqrt_ab);
        Ok(g)
    }

    fn mlp_fwd(
        &self,
        x: &CudaSlice<f32>,
        y: &mut CudaSlice<f32>,
        rows: usize,
        deriv: Option<&mut CudaSlice<f32>>,
    ) -> CudaResult<()> {
        let (be, m) = (&self.be, &self.clf);
        ensure(
            x.len() >= rows * m.input_dim() && y.len() >= rows * m.output_dim(),
            "cuda mlp fwd",
            || "buffers too short".into(),
        )?;
        let f = be.func(KernelModule::Denoiser, "mlp_fwd_f32")?;
        let (cfg, use_smem) = m.cfg(be, rows);
        let (r64, wlen, nl, maxw, act, hs, null) = (
            rows as i64,
            m.wlen as i64,
            m.nl(),
            m.maxw as i32,
            m.act,
            m.hsum as i32,
            0u64,
        );
        let mut l = be.stream().launch_builder(&f);
        l.arg(x)
            .arg(&mut *y)
            .arg(&r64)
            .arg(&m.w)
            .arg(&wlen)
            .arg(&m.dims)
            .arg(&nl)
            .arg(&maxw)
            .arg(&use_smem)
            .arg(&act);
        match deriv {
            Some(dv) => l.arg(dv),
            None => l.arg(&null),
        };
        l.arg(&hs);
        // SAFETY: x ≥ rows·in, y ≥ rows·out (checked); deriv (when given) rows·hsum as
        // allocated by the caller; weights/dims/shared memory as packed by DevMlp.
        unsafe { l.launch(cfg) }?;
        be.debug_sync()
    }

    #[allow(clippy::too_many_arguments)]
    fn mlp_bwd(
        &self,
        m: &DevMlp,
        gy: &CudaSlice<f32>,
        gx: &mut CudaSlice<f32>,
        rows: usize,
        deriv: Option<&CudaSlice<f32>>,
        ca: f32,
        cb: f32,
    ) -> CudaResult<()> {
        let be = &self.be;
        ensure(
            gy.len() >= rows * m.output_dim() && gx.len() >= rows * m.input_dim(),
            "cuda mlp bwd",
            || "buffers too short".into(),
        )?;
        let f = be.func(KernelModule::Denoiser, "mlp_bwd_f32")?;
        let (cfg, use_smem) = m.cfg(be, rows);
        let (r64, wlen, nl, maxw, hs, null) = (
            rows as i64,
            m.wlen as i64,
            m.nl(),
            m.maxw as i32,
            m.hsum as i32,
            0u64,
        );
        let mut l = be.stream().launch_builder(&f);
        l.arg(gy)
            .arg(&mut *gx)
            .arg(&r64)
            .arg(&m.w)
            .arg(&wlen)
            .arg(&m.dims)
            .arg(&nl)
            .arg(&maxw)
            .arg(&use_smem);
        match deriv {
            Some(dv) => l.arg(dv),
            None => l.arg(&null),
        };
        l.arg(&hs).arg(&ca).arg(&cb);
        // SAFETY: gy ≥ rows·out, gx ≥ rows·in (checked); deriv rows·hsum (allocated by the
        // forward with the same rows); weights/dims/shared memory as packed by DevMlp.
        unsafe { l.launch(cfg) }?;
        be.debug_sync()
    }

    fn mlp_bwd_view(
        &self,
        gy: &CudaSlice<f32>,
        gx: &mut CudaSlice<f32>,
        rows: usize,
        deriv: &cudarc::driver::CudaView<'_, f32>,
        ca: f32,
        cb: f32,
    ) -> CudaResult<()> {
        let (be, m) = (&self.be, &self.den);
        ensure(
            gy.len() >= rows * self.d && gx.len() >= rows * self.d && deriv.len() >= rows * m.hsum,
            "cuda denoiser bwd",
            || "buffers too short".into(),
        )?;
        let f = be.func(KernelModule::Denoiser, "mlp_bwd_f32")?;
        let (cfg, use_smem) = m.cfg(be, rows);
        let (r64, wlen, nl, maxw, hs) = (
            rows as i64,
            m.wlen as i64,
            m.nl(),
            m.maxw as i32,
            m.hsum as i32,
        );
        let mut l = be.stream().launch_builder(&f);
        l.arg(gy)
            .arg(&mut *gx)
            .arg(&r64)
            .arg(&m.w)
            .arg(&wlen)
            .arg(&m.dims)
            .arg(&nl)
            .arg(&maxw)
            .arg(&use_smem);
        l.arg(deriv).arg(&hs).arg(&ca).arg(&cb);
        // SAFETY: gy, gx ≥ rows·d and deriv ≥ rows·hsum (checked); denoiser in = out = d.
        unsafe { l.launch(cfg) }?;
        be.debug_sync()
    }
}
