//! The optimised CPU evaluator of the defended pipeline used by the attacks and scoring:
//! the same computation as [`super::chain::Chain`] + classifier (the f64-checked reference),
//! restructured for speed. Rows are processed in chunks, one rayon task per chunk with
//! single-threaded GEMMs inside (no nested threading, results independent of the thread
//! count); the timestep embedding is folded into a per-step bias of the first denoiser layer
//! (`[x, emb(s)]·W₁ = x·W₁ₓ + emb(s)·W₁ₑ`), so no concatenation is needed; the backward pass
//! computes only the input gradient, reusing activation derivatives stored in the forward.
//! Between the GEMMs (which overwrite their outputs) there is one fused pass per layer (bias,
//! activation and its derivative: [`super::act`]) and one per chain step; all buffers are
//! per-thread scratch reused across chunks, so a chunk allocates only what it returns.

use super::act;
use super::Schedule;
use crate::attack::{loss::loss_and_grad, Loss};
use crate::config::Prediction;
use crate::linalg::{gemm_seq, grow, view, view_mut};
use crate::nn::mlp::{Activation, Mlp};
use ndarray::{s, Array1, Array2, ArrayView2, ArrayViewMut2, Axis, Zip};

/// One dense layer in f32 (`w: in × out`).
#[derive(Clone, Debug)]
struct Layer {
    w: Array2<f32>,
    b: Array1<f32>,
}

/// Coefficients of one reverse step: `x ← a·x + b·D(x) + σ·z`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepCoef {
    pub(crate) a: f32,
    pub(crate) b: f32,
    pub(crate) sigma: f32,
}

/// The reverse steps `s = t*, …, 1` of a defence: their coefficients and the first denoiser
/// layer's bias with the timestep embedding folded in (`b₁ + emb(s)·W₁ₑ`, since
/// `[x, emb(s)]·W₁ = x·W₁ₓ + emb(s)·W₁ₑ`). Shared by the CPU and CUDA evaluators.
pub(crate) fn reverse_steps(
    den: &Mlp<f32>,
    sched: &Schedule,
    emb: &Array2<f32>,
    t_star: usize,
    predict: Prediction,
) -> (Vec<StepCoef>, Vec<Array1<f32>>) {
    let d = den.output_dim();
    let first = &den.layers[0];
    let w1e = first.w.slice(s![d.., ..]);
    (1..=t_star)
        .rev()
        .map(|s_| {
            let (a, b) = crate::diffusion::chain::step_coefs(sched, predict, s_);
            let coef = StepCoef {
                a: a as f32,
                b: b as f32,
                sigma: if s_ > 1 { sched.sigma[s_] as f32 } else { 0.0 },
            };
            (coef, &first.b + &emb.row(s_).dot(&w1e))
        })
        .unzip()
}

/// Precomputed weights and coefficients of a defence.
#[derive(Clone, Debug)]
pub struct FastDefended {
    d: usize,
    t_star: usize,
    sqrt_ab: f32,
    sqrt_1mab: f32,
    /// Step `j = 0…t*−1` runs `s = t* − j`.
    steps: Vec<StepCoef>,
    w1x: Array2<f32>,
    b1: Vec<Array1<f32>>,
    den_rest: Vec<Layer>,
    den_act: Activation,
    clf: Vec<Layer>,
    clf_act: Activation,
}

/// Result of one chunk.
pub struct ChunkOut {
    pub logits: Array2<f32>,
    pub loss: Array1<f32>,
    pub grad: Option<Array2<f32>>,
}

/// Per-thread buffers of [`FastDefended::chunk`], grown on demand and reused across calls
/// (every buffer is written in full before it is read, so nothing is zeroed).
#[derive(Default)]
struct Scratch {
    /// Ping-pong layer outputs (forward) and gradients (backward).
    a: Vec<f32>,
    b: Vec<f32>,
    /// The gradient entering a step's denoiser (backward).
    c: Vec<f32>,
    /// Activation derivatives of every hidden layer of every step, then the classifier's.
    derivs: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// `buf[..rows·cols]` as a `rows × cols` matrix, growing `buf` when needed.
fn mat(buf: &mut Vec<f32>, rows: usize, cols: usize) -> ArrayViewMut2<'_, f32> {
    grow(buf, rows * cols);
    view_mut(buf, rows, cols)
}

type Stack<'a> = [(&'a Array2<f32>, &'a Array1<f32>)];

/// `dv[off..]` when derivatives are wanted.
fn part(dv: &mut [f32], off: usize, on: bool) -> Option<&mut [f32]> {
    if on {
        Some(&mut dv[off..])
    } else {
        None
    }
}

/// Summed width of a stack's hidden layers (all but the last): its derivative block, per row.
fn hidden_width(stack: &Stack<'_>) -> usize {
    stack[..stack.len() - 1].iter().map(|l| l.0.ncols()).sum()
}

fn weights<'a>(stack: &Stack<'a>) -> Vec<&'a Array2<f32>> {
    stack.iter().map(|l| l.0).collect()
}

/// Runs `stack` on `input` (hidden layers activated with `act`, the last one not) through
/// the ping-pong buffers; hidden layer `i`'s derivative goes to the `i`-th block of
/// `derivs` (consecutive `rows × width` blocks) when given. Returns whether the output is
/// in the first buffer, and its width.
fn run_layers(
    stack: &Stack<'_>,
    act: Activation,
    input: ArrayView2<f32>,
    (p, q): (&mut Vec<f32>, &mut Vec<f32>),
    mut derivs: Option<&mut [f32]>,
) -> (bool, usize) {
    let rows = input.nrows();
    let mut wi = input.ncols();
    for (i, &(w, b)) in stack.iter().enumerate() {
        let (wo, hidden) = (w.ncols(), i + 1 < stack.len());
        let dv = match derivs.take() {
            Some(all) if hidden => {
                let (head, tail) = all.split_at_mut(rows * wo);
                derivs = Some(tail);
                Some(head)
            }
            other => {
                derivs = other;
                None
            }
        };
        let a = hidden.then_some(act);
        match i % 2 {
            _ if i == 0 => dense(mat(p, rows, wo), input, w, b, a, dv),
            1 => dense(mat(q, rows, wo), view(p, rows, wi), w, b, a, dv),
            _ => dense(mat(p, rows, wo), view(q, rows, wi), w, b, a, dv),
        }
        wi = wo;
    }
    (stack.len() % 2 == 1, wi)
}

/// The backward pass of `ws` from its output gradient `g` down to the gradient of the first
/// layer's pre-activation (layers `len−1 … 1`, each times the derivative stored by
/// [`run_layers`] in `derivs`). `None` for a single layer (then that is `g` itself);
/// otherwise whether the result is in the first buffer, and its width.
fn back_hidden(
    ws: &[&Array2<f32>],
    derivs: &[f32],
    g: ArrayView2<f32>,
    (p, q): (&mut Vec<f32>, &mut Vec<f32>),
) -> Option<(bool, usize)> {
    let rows = g.nrows();
    let offs: Vec<usize> = ws
        .iter()
        .scan(0, |o, w| {
            let at = *o;
            *o += rows * w.ncols();
            Some(at)
        })
        .collect();
    let mut cur: Option<bool> = None; // which buffer holds the running gradient
    for l in (1..ws.len()).rev() {
        let wo = ws[l - 1].ncols();
        let dv = Some(&derivs[offs[l - 1]..offs[l - 1] + rows * wo]);
        let into_p = cur != Some(true);
        let wi = ws[l].ncols();
        match cur {
            None => back(mat(p, rows, wo), g, ws[l], dv),
            Some(true) => back(mat(q, rows, wo), view(p, rows, wi), ws[l], dv),
            Some(false) => back(mat(p, rows, wo), view(q, rows, wi), ws[l], dv),
        }
        cur = Some(into_p);
    }
    cur.map(|in_p| (in_p, ws[0].ncols()))
}

/// `out = act(x·w + b)` (GEMM, then one fused pass), the derivative into `deriv` when given.
fn dense(
    mut out: ArrayViewMut2<f32>,
    x: ArrayView2<f32>,
    w: &Array2<f32>,
    b: &Array1<f32>,
    act: Option<Activation>,
    deriv: Option<&mut [f32]>,
) {
    gemm_seq(out.view_mut(), x, w.view(), false);
    let bias = b.as_slice().expect("contiguous bias");
    act::bias_act(out.as_slice_mut().expect("contiguous"), bias, act, deriv);
}

/// `out = g·wᵀ` (the input gradient of a layer), then `⊙ deriv` when given.
fn back(mut out: ArrayViewMut2<f32>, g: ArrayView2<f32>, w: &Array2<f32>, deriv: Option<&[f32]>) {
    gemm_seq(out.view_mut(), g, w.t(), false);
    if let Some(d) = deriv {
        act::mul_assign(out.as_slice_mut().expect("contiguous"), d);
    }
}

impl FastDefended {
    /// Precompute from a trained denoiser and classifier.
    pub fn new(
        den: &Mlp<f32>,
        clf: &Mlp<f32>,
        sched: &Schedule,
        emb: &Array2<f32>,
        t_star: usize,
        predict: Prediction,
    ) -> Self {
        let d = den.output_dim();
        let first = &den.layers[0];
        let w1x = first.w.slice(s![0..d, ..]).to_owned();
        let (steps, b1) = reverse_steps(den, sched, emb, t_star, predict);
        let to_layers = |m: &Mlp<f32>, skip: usize| -> Vec<Layer> {
            m.layers[skip..]
                .iter()
                .map(|l| Layer {
                    w: l.w.clone(),
                    b: l.b.clone(),
                })
                .collect()
        };
        let ab = sched.alpha_bar[t_star];
        FastDefended {
            d,
            t_star,
            sqrt_ab: ab.sqrt() as f32,
            sqrt_1mab: (1.0 - ab).sqrt() as f32,
            steps,
            w1x,
            b1,
            den_rest: to_layers(den, 1),
            den_act: den.act,
            clf: to_layers(clf, 0),
            clf_act: clf.act,
        }
    }

    /// Noise values per row (same layout as [`super::chain::Chain`]).
    /// The smoothing scale of the first step: `√ᾱx + √(1−ᾱ)n = √ᾱ(x + σn)` with
    /// `σ = √(1−ᾱ)/√ᾱ` at t* (from the f32 coefficients the passes use).
    pub fn smoothing_sigma(&self) -> f64 {
        f64::from(self.sqrt_1mab) / f64::from(self.sqrt_ab)
    }

    pub fn noise_len(&self) -> usize {
        self.t_star * self.d
    }

    /// Purify and classify one chunk; with `grad`, also the input gradient of the summed
    /// loss (noise fixed).
    pub fn chunk(
        &self,
        x0: ArrayView2<f32>,
        noise: ArrayView2<f32>,
        y: &[usize],
        loss: Loss<'_>,
        grad: bool,
    ) -> ChunkOut {
        SCRATCH.with(|s| self.chunk_in(&mut s.borrow_mut(), x0, noise, y, loss, grad))
    }

    /// The denoiser's layers at step `j` (first layer with the step's folded bias).
    fn den_stack(&self, j: usize) -> Vec<(&Array2<f32>, &Array1<f32>)> {
        let rest = self.den_rest.iter().map(|l| (&l.w, &l.b));
        std::iter::once((&self.w1x, &self.b1[j]))
            .chain(rest)
            .collect()
    }

    fn chunk_in(
        &self,
        sc: &mut Scratch,
        x0: ArrayView2<f32>,
        noise: ArrayView2<f32>,
        y: &[usize],
        loss: Loss<'_>,
        grad: bool,
    ) -> ChunkOut {
        let (d, rows) = (self.d, x0.nrows());
        let Scratch { a, b, c, derivs } = sc;
        let clf: Vec<_> = self.clf.iter().map(|l| (&l.w, &l.b)).collect();
        let per_step = rows * hidden_width(&self.den_stack(0));
        let clf_off = self.t_star * per_step;
        if grad {
            grow(derivs, clf_off + rows * hidden_width(&clf));
        }
        let n0 = noise.slice(s![.., 0..d]);
        let mut x = Zip::from(x0)
            .and(&n0)
            .map_collect(|&v, &n| v * self.sqrt_ab + self.sqrt_1mab * n);
        for (j, st) in self.steps.iter().enumerate() {
            let (in_a, _) = run_layers(
                &self.den_stack(j),
                self.den_act,
                x.view(),
                (a, b),
                part(derivs, j * per_step, grad),
            );
            let h = view(if in_a { a } else { b }, rows, d);
            if st.sigma > 0.0 {
                let z = noise.slice(s![.., (j + 1) * d..(j + 2) * d]);
                Zip::from(&mut x)
                    .and(&h)
                    .and(&z)
                    .for_each(|x, &h, &z| *x = *x * st.a + st.b * h + st.sigma * z);
            } else {
                Zip::from(&mut x)
                    .and(&h)
                    .for_each(|x, &h| *x = *x * st.a + st.b * h);
            }
        }
        let (in_a, k) = run_layers(
            &clf,
            self.clf_act,
            x.view(),
            (a, b),
            part(derivs, clf_off, grad),
        );
        let logits = view(if in_a { a } else { b }, rows, k).to_owned();
        let (l, dlogits) = loss_and_grad(loss, logits.view(), y);
        let grad = grad.then(|| self.input_grad((a, b, c), derivs, dlogits.view(), &clf, per_step));
        ChunkOut {
            logits,
            loss: l,
            grad,
        }
    }

    /// The backward pass of [`Self::chunk_in`]: the input gradient from the logits' gradient,
    /// through the classifier and the reverse steps, using the stored derivatives.
    fn input_grad(
        &self,
        (a, b, c): (&mut Vec<f32>, &mut Vec<f32>, &mut Vec<f32>),
        derivs: &[f32],
        dlogits: ArrayView2<f32>,
        clf: &Stack<'_>,
        per_step: usize,
    ) -> Array2<f32> {
        let (d, rows) = (self.d, dlogits.nrows());
        let clf_off = self.t_star * per_step;
        let cw = weights(clf);
        let mut g = Array2::<f32>::zeros((rows, d));
        let top = back_hidden(&cw, &derivs[clf_off..], dlogits, (a, b));
        let top = top.map_or(dlogits, |(in_a, w)| view(if in_a { a } else { b }, rows, w));
        back(g.view_mut(), top, cw[0], None);
        for (j, st) in self.steps.iter().enumerate().rev() {
            // one pass: the denoiser's output gradient b·g, and the skip path's a·g
            Zip::from(mat(c, rows, d)).and(&mut g).for_each(|o, v| {
                *o = *v * st.b;
                *v *= st.a;
            });
            let gs = view(c, rows, d);
            let dw = weights(&self.den_stack(j));
            let dv = &derivs[j * per_step..];
            let (in_a, w) = back_hidden(&dw, dv, gs, (a, b)).expect("≥ 2 denoiser layers");
            let gin = view(if in_a { a } else { b }, rows, w);
            gemm_seq(g.view_mut(), gin, dw[0].t(), true);
        }
        g.mapv_inplace(|v| v * self.sqrt_ab);
        g
    }

    /// Logits only (scoring).
    pub fn logits(&self, x0: ArrayView2<f32>, noise: ArrayView2<f32>) -> Array2<f32> {
        let y = vec![0usize; x0.nrows()];
        self.chunk(x0, noise, &y, Loss::Ce, false).logits
    }
}

/// Mean over consecutive blocks of `r` rows.
pub fn block_mean(a: ArrayView2<f32>, r: usize) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((a.nrows() / r, a.ncols()));
    for (i, blk) in a.axis_chunks_iter(Axis(0), r).enumerate() {
        out.row_mut(i).assign(&blk.sum_axis(Axis(0)));
    }
    out / r as f32
}
