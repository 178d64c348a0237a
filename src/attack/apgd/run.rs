//! One APGD run (`docs/apgd.md` §4, the reference's `attack_single_run`) for L∞ on a batch of
//! still-robust points, with struct-of-arrays per-sample state that is compacted whenever
//! points get fooled, so the model only ever sees active rows.
//!
//! On a stochastic model an in-attack success (the EOT-averaged prediction at an iterate)
//! is only a guess: it is confirmed by an independent evaluation with its own noise key and
//! [`ApgdParams::confirm`] passes before the point counts as fooled; an unconfirmed point
//! keeps iterating.

use super::schedule::{halve_step, Schedule};
use super::{ApgdParams, AttackModel};
use crate::attack::Loss;
use crate::error::Result;
use crate::progress::Progress;
use crate::rng::{fill_uniform, key, stream, tag};
use ndarray::{Array1, Array2, ArrayView2, Axis, Zip};

/// Result of one run, per input row.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// An iterate fooled the model (or the start point did); on a stochastic model only
    /// after an independent confirmation.
    pub fooled: Vec<bool>,
    /// The fooling iterate for fooled rows; the start point otherwise (Q8 initialisation).
    pub x_best_adv: Array2<f32>,
    /// Highest-loss iterate (for fooled rows: as of the iteration they were dropped).
    pub x_best: Array2<f32>,
    /// Its loss (last EOT draw, Q1).
    pub l_best: Vec<f32>,
    pub grad_evals: u64,
    /// Forward passes spent confirming in-attack successes (points × passes).
    pub confirm_evals: u64,
}

impl RunOutput {
    /// The run's candidate for row `i`: its fooling iterate if it found one, else its
    /// highest-loss iterate.
    pub fn candidate(&self, i: usize) -> ndarray::ArrayView1<'_, f32> {
        if self.fooled[i] {
            self.x_best_adv.row(i)
        } else {
            self.x_best.row(i)
        }
    }
}

/// Per-sample state of the active rows (§13 layout).
struct State {
    /// Row index into the run's inputs.
    rows: Vec<usize>,
    y: Vec<usize>,
    ids: Vec<u64>,
    /// APGD-T target per row (empty for the untargeted losses).
    targets: Vec<usize>,
    lower: Array2<f32>,
    upper: Array2<f32>,
    x_adv: Array2<f32>,
    x_prev: Array2<f32>,
    g: Array2<f32>,
    x_best: Array2<f32>,
    g_best: Array2<f32>,
    eta: Array1<f32>,
    l_best: Array1<f32>,
    l_best_last: Array1<f32>,
    reduced_last: Vec<bool>,
    hist: Array2<f32>,
}

impl State {
    /// Keep only rows with `keep[r]`.
    fn retain(&mut self, keep: &[bool]) {
        let idx: Vec<usize> = (0..keep.len()).filter(|&r| keep[r]).collect();
        let pick = |v: &Vec<usize>| idx.iter().map(|&r| v[r]).collect::<Vec<_>>();
        self.rows = pick(&self.rows);
        self.y = pick(&self.y);
        self.ids = idx.iter().map(|&r| self.ids[r]).collect();
        if !self.targets.is_empty() {
            self.targets = pick(&self.targets);
        }
        self.reduced_last = idx.iter().map(|&r| self.reduced_last[r]).collect();
        for a in [
            &mut self.lower,
            &mut self.upper,
            &mut self.x_adv,
            &mut self.x_prev,
            &mut self.g,
            &mut self.x_best,
            &mut self.g_best,
            &mut self.hist,
        ] {
            *a = a.select(Axis(0), &idx);
        }
        for a in [&mut self.eta, &mut self.l_best, &mut self.l_best_last] {
            *a = a.select(Axis(0), &idx);
        }
    }
}

/// One run on all rows of `x` (the reference's `attack_single_run`, L∞): random start on
/// the ball surface (or `x_init`, projected), N iterations, checkpoints. See the module
/// docs of [`super`] for the success test and the dropping of fooled rows.
pub fn single_run<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    restart: u64,
    x_init: Option<ArrayView2<f32>>,
) -> Result<RunOutput> {
    super::check_inputs(model, x, y, ids, p, &[p.loss])?;
    run(model, x, y, ids, p, p.loss.into(), restart, x_init, None)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    loss: Loss<'_>,
    restart: u64,
    x_init: Option<ArrayView2<f32>>,
    prog: Option<&Progress>,
) -> Result<RunOutput> {
    let (lower, upper) = p.bounds.feasible(x, p.eps);
    let x0 = start_point(x, ids, p, restart, x_init, &lower, &upper);
    if let (Some(be), true) = (model.device(), p.early_stop) {
        // The model lives on a CUDA device: keep the per-sample state there too.
        return super::cuda::run(be, model, x, x0.view(), y, ids, p, loss, restart, prog);
    }
    let mut runner = Runner {
        model,
        p,
        loss,
        code: loss.code(),
        restart,
        evals: 0,
    };
    let mut out = RunOutput::start(&x0);
    let (mut st, pred0) = runner.init_state(x0, y, ids, lower, upper)?;
    runner.settle(&mut st, &mut out, &pred0, 0)?;
    runner.iterate(&mut st, &mut out, prog)?;
    st.write_back(&mut out);
    out.grad_evals = runner.evals;
    Ok(out)
}

/// §4.1 start point: `x_init`, or `x + ε t / (max|t| + 1e-12)` with `t ~ U[-1,1)` drawn
/// per row from `stream(seed, [tag("apgd-start"), restart, id])`; then into the box
/// `[lower, upper]`.
fn start_point(
    x: ArrayView2<f32>,
    ids: &[u64],
    p: &ApgdParams,
    restart: u64,
    x_init: Option<ArrayView2<f32>>,
    lower: &Array2<f32>,
    upper: &Array2<f32>,
) -> Array2<f32> {
    let eps = p.eps;
    let mut x0 = match x_init {
        Some(v) => v.to_owned(),
        None => {
            let mut s = x.to_owned();
            Zip::from(s.rows_mut())
                .and(ids)
                .par_for_each(|mut row, &id| {
                    let mut rng = stream(p.seed, &[tag("apgd-start"), restart, id]);
                    let mut t = vec![0f32; row.len()];
                    fill_uniform(&mut rng, &mut t, -1.0, 1.0);
                    let m = t.iter().fold(0f32, |a, v| a.max(v.abs())) + 1e-12;
                    for (xv, tv) in row.iter_mut().zip(&t) {
                        *xv += eps * tv / m;
                    }
                });
            s
        }
    };
    Zip::from(&mut x0)
        .and(lower)
        .and(upper)
        .par_for_each(|v, &l, &u| *v = v.max(l).min(u));
    x0
}

impl RunOutput {
    /// Nothing fooled yet; every row's best iterates are the start point `x0`.
    fn start(x0: &Array2<f32>) -> Self {
        let n = x0.nrows();
        RunOutput {
            fooled: vec![false; n],
            x_best_adv: x0.clone(),
            x_best: x0.clone(),
            l_best: vec![0.0; n],
            grad_evals: 0,
            confirm_evals: 0,
        }
    }
}

/// What one run holds fixed (model, parameters, loss, restart), and its count of
/// gradient evaluations (points × draws).
struct Runner<'a, M: ?Sized> {
    model: &'a M,
    p: &'a ApgdParams,
    loss: Loss<'a>,
    /// `loss.code()`, for keying.
    code: u64,
    restart: u64,
    evals: u64,
}

impl<M: AttackModel + ?Sized> Runner<'_, M> {
    /// Loss, prediction and input gradient at `xa` for model call `it` (noise key
    /// `(seed, "apgd-model", loss, restart, it)`); `ts`: the rows' targets (empty when
    /// untargeted).
    fn eval(
        &mut self,
        xa: ArrayView2<f32>,
        ys: &[usize],
        is: &[u64],
        ts: &[usize],
        it: usize,
    ) -> Result<(Array1<f32>, Vec<usize>, Array2<f32>)> {
        let p = self.p;
        self.evals += (xa.nrows() * p.eot) as u64;
        let l = self.loss.with_targets((!ts.is_empty()).then_some(ts));
        let k = key(
            p.seed,
            &[tag("apgd-model"), self.code, self.restart, it as u64],
        );
        let ev = self.model.evaluate(xa, ys, is, l, p.eot, k, true)?;
        let g = ev
            .grad
            .expect("AttackModel::evaluate must return a gradient when asked");
        assert!(
            g.dim() == xa.dim() && ev.loss.len() == xa.nrows() && ev.pred.len() == xa.nrows(),
            "AttackModel::evaluate returned arrays of the wrong shape"
        );
        Ok((ev.loss, ev.pred, g))
    }

    /// §4.2: the initial gradient and state of all rows at the start point `x0`; also
    /// returns the prediction there.
    fn init_state(
        &mut self,
        x0: Array2<f32>,
        y: &[usize],
        ids: &[u64],
        lower: Array2<f32>,
        upper: Array2<f32>,
    ) -> Result<(State, Vec<usize>)> {
        let n = x0.nrows();
        let targets = self.loss.targets_for(0..n, 1).unwrap_or_default();
        let (l0, pred0, g0) = self.eval(x0.view(), y, ids, &targets, 0)?;
        let st = State {
            rows: (0..n).collect(),
            y: y.to_vec(),
            ids: ids.to_vec(),
            targets,
            lower,
            upper,
            x_prev: x0.clone(),
            x_best: x0.clone(),
            x_adv: x0,
            g_best: g0.clone(),
            g: g0,
            eta: Array1::from_elem(n, 2.0 * self.p.eps),
            l_best: l0.clone(),
            l_best_last: l0,
            reduced_last: vec![true; n],
            hist: Array2::zeros((n, self.p.n_iter)),
        };
        Ok((st, pred0))
    }

    /// Up to N iterations while rows are active, each followed by the §4.4 checkpoint when
    /// one is due; `prog` ticks once per iteration (the skipped ones at the end).
    fn iterate(
        &mut self,
        st: &mut State,
        out: &mut RunOutput,
        prog: Option<&Progress>,
    ) -> Result<()> {
        let n_iter = self.p.n_iter;
        let mut checkpoints = Checkpoints::new(n_iter);
        let mut done_iters = 0u64;
        for i in 0..n_iter {
            if st.rows.is_empty() {
                break;
            }
            self.step(st, out, i)?;
            // Step 8 / §4.4: checkpoint.
            if let Some(k) = checkpoints.tick() {
                checkpoint(st, i, k, self.p.rho);
            }
            done_iters += 1;
            if let Some(pr) = prog {
                pr.inc(1);
            }
        }
        if let Some(pr) = prog {
            pr.inc(n_iter as u64 - done_iters);
        }
        Ok(())
    }

    /// Iteration `i`, §4.3 steps 1–7: momentum step, evaluation at the new iterate,
    /// best-loss bookkeeping, success test.
    fn step(&mut self, st: &mut State, out: &mut RunOutput, i: usize) -> Result<()> {
        // §4.3 steps 1–4: momentum step and projections.
        let a: f32 = if i == 0 { 1.0 } else { 0.75 };
        st.momentum_step(a);
        // Step 5: gradient, loss and prediction at the new iterate.
        let (l, pred, g) = self.eval(st.x_adv.view(), &st.y, &st.ids, &st.targets, i + 1)?;
        // Step 7: best-loss bookkeeping (strict >, Q9).
        st.record_best(i, &l, &g);
        st.g = g;
        // Step 6: success (confirmed on a stochastic model) → record this iterate (and,
        // with early stopping, retire the point).
        self.settle(st, out, &pred, i + 1)
    }

    /// The success test after model call `it`: rows whose prediction `pred` differs from
    /// their label are, once [`Self::confirmed`], recorded as fooled (see
    /// [`settle_fooled`]).
    fn settle(&self, st: &mut State, out: &mut RunOutput, pred: &[usize], it: usize) -> Result<()> {
        let guess: Vec<bool> = (0..st.rows.len()).map(|r| pred[r] != st.y[r]).collect();
        let fooled = self.confirmed(st, &guess, it, out)?;
        settle_fooled(st, out, &fooled, self.p.early_stop);
        Ok(())
    }

    /// The rows of `guess` that count as fooled: all of them for a deterministic model; on
    /// a stochastic one those whose current iterate is also misclassified by an
    /// independent evaluation (`p.confirm` passes, key `(seed, "apgd-confirm", loss,
    /// restart, it)`, the defence's averaged decision rule).
    fn confirmed(
        &self,
        st: &State,
        guess: &[bool],
        it: usize,
        out: &mut RunOutput,
    ) -> Result<Vec<bool>> {
        let at = Call {
            code: self.code,
            restart: self.restart,
            it,
        };
        confirm(
            self.model,
            self.p,
            at,
            st.x_adv.view(),
            &st.y,
            &st.ids,
            guess,
            out,
        )
    }
}

/// Which model call of a run an evaluation belongs to (for keying its noise).
#[derive(Clone, Copy)]
pub(super) struct Call {
    /// `loss.code()`.
    pub code: u64,
    pub restart: u64,
    /// 0 = the start point, `i + 1` after iteration `i`.
    pub it: usize,
}

/// The rows of `guess` (their prediction at `x` differs from `y`) that count as fooled:
/// all of them for a deterministic model; on a stochastic one those that an independent
/// evaluation also misclassifies (`p.confirm` passes, key `(seed, "apgd-confirm", loss,
/// restart, it)`, the defence's averaged decision rule). Shared by the host and the device
/// APGD state, so both decide successes alike.
#[allow(clippy::too_many_arguments)]
pub(super) fn confirm<M: AttackModel + ?Sized>(
    model: &M,
    p: &ApgdParams,
    at: Call,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    guess: &[bool],
    out: &mut RunOutput,
) -> Result<Vec<bool>> {
    if !model.stochastic() || !guess.iter().any(|&g| g) {
        return Ok(guess.to_vec());
    }
    let sel: Vec<usize> = (0..guess.len()).filter(|&r| guess[r]).collect();
    let xs = x.select(Axis(0), &sel);
    let ys: Vec<usize> = sel.iter().map(|&r| y[r]).collect();
    let is: Vec<u64> = sel.iter().map(|&r| ids[r]).collect();
    let k = key(
        p.seed,
        &[tag("apgd-confirm"), at.code, at.restart, at.it as u64],
    );
    let ev = model.evaluate(xs.view(), &ys, &is, Loss::Ce, p.confirm, k, false)?;
    out.confirm_evals += (sel.len() * p.confirm) as u64;
    let mut fooled = vec![false; guess.len()];
    for (j, &r) in sel.iter().enumerate() {
        fooled[r] = ev.pred[j] != ys[j];
    }
    Ok(fooled)
}

/// The iteration counter against the checkpoint schedule (§4.4).
struct Checkpoints {
    sched: Schedule,
    /// Current interval.
    k: usize,
    /// Iterations since the last checkpoint.
    counter: usize,
}

impl Checkpoints {
    fn new(n_iter: usize) -> Self {
        let sched = Schedule::new(n_iter);
        Checkpoints {
            k: sched.first,
            sched,
            counter: 0,
        }
    }

    /// Count one iteration; when it completes the current interval, the interval's length
    /// (and the next interval starts).
    fn tick(&mut self) -> Option<usize> {
        self.counter += 1;
        if self.counter != self.k {
            return None;
        }
        let k = self.k;
        self.counter = 0;
        self.k = self.sched.next(k);
        Some(k)
    }
}

impl State {
    /// §4.3 steps 1–4 with momentum weight `a`: `z = P(x + η sign(g))`, then
    /// `x ← P(x + a(z − x) + (1 − a)(x − x_prev))`, `x_prev ← x`.
    fn momentum_step(&mut self, a: f32) {
        Zip::from(self.x_adv.rows_mut())
            .and(self.x_prev.rows_mut())
            .and(self.g.rows())
            .and(self.lower.rows())
            .and(self.upper.rows())
            .and(&self.eta)
            .par_for_each(|mut xa, mut xp, g, lo, up, &eta| {
                for j in 0..xa.len() {
                    let xi = xa[j];
                    let m = xi - xp[j];
                    xp[j] = xi;
                    let gs = if g[j] > 0.0 {
                        1.0
                    } else if g[j] < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    let z = (xi + eta * gs).max(lo[j]).min(up[j]);
                    let v = xi + (z - xi) * a + m * (1.0 - a);
                    xa[j] = v.max(lo[j]).min(up[j]);
                }
            });
    }

    /// Step 7 of iteration `i`: store the losses `l` in the history and keep iterate and
    /// gradient `g` of rows whose loss strictly improved (Q9).
    fn record_best(&mut self, i: usize, l: &Array1<f32>, g: &Array2<f32>) {
        self.hist.column_mut(i).assign(l);
        Zip::from(self.x_best.rows_mut())
            .and(self.g_best.rows_mut())
            .and(&mut self.l_best)
            .and(self.x_adv.rows())
            .and(g.rows())
            .and(l)
            .par_for_each(|mut xb, mut gb, lb, xa, gr, &lv| {
                if lv > *lb {
                    xb.assign(&xa);
                    gb.assign(&gr);
                    *lb = lv;
                }
            });
    }

    /// Write the best iterates and losses of the rows still active into `out`.
    fn write_back(&self, out: &mut RunOutput) {
        for (r, &row) in self.rows.iter().enumerate() {
            out.x_best.row_mut(row).assign(&self.x_best.row(r));
            out.l_best[row] = self.l_best[r];
        }
    }
}

/// Record the rows flagged in `fooled` (their current iterate is the adversarial example);
/// with `early_stop` also remove them from the active set.
fn settle_fooled(st: &mut State, out: &mut RunOutput, fooled: &[bool], early_stop: bool) {
    if early_stop {
        drop_fooled(st, out, fooled);
        return;
    }
    for (r, &row) in st.rows.iter().enumerate() {
        if fooled[r] {
            out.fooled[row] = true;
            out.x_best_adv.row_mut(row).assign(&st.x_adv.row(r));
        }
    }
}

/// Write out and remove the rows flagged in `fooled` (their current iterate is the
/// adversarial example).
fn drop_fooled(st: &mut State, out: &mut RunOutput, fooled: &[bool]) {
    if !fooled.iter().any(|&f| f) {
        return;
    }
    for (r, &row) in st.rows.iter().enumerate() {
        if fooled[r] {
            out.fooled[row] = true;
            out.x_best_adv.row_mut(row).assign(&st.x_adv.row(r));
            out.x_best.row_mut(row).assign(&st.x_best.row(r));
            out.l_best[row] = st.l_best[r];
        }
    }
    let keep: Vec<bool> = fooled.iter().map(|f| !f).collect();
    st.retain(&keep);
}

/// §4.4: decide per sample, then halve η and restore `x_best`, `g_best` where flagged
/// (`x_prev` untouched, Q4; stored gradient, Q5).
fn checkpoint(st: &mut State, i: usize, k: usize, rho: f32) {
    let n = st.rows.len();
    let flags: Vec<bool> = (0..n)
        .map(|r| {
            let h = st.hist.row(r);
            let hist = h.as_slice().expect("hist rows are contiguous");
            halve_step(
                hist,
                i,
                k,
                rho,
                st.l_best[r],
                st.l_best_last[r],
                st.reduced_last[r],
            )
        })
        .collect();
    st.reduced_last.copy_from_slice(&flags);
    st.l_best_last.assign(&st.l_best);
    Zip::from(st.x_adv.rows_mut())
        .and(st.g.rows_mut())
        .and(st.x_best.rows())
        .and(st.g_best.rows())
        .and(&mut st.eta)
        .and(&flags)
        .par_for_each(|mut xa, mut g, xb, gb, eta, &f| {
            if f {
                *eta /= 2.0;
                xa.assign(&xb);
                g.assign(&gb);
            }
        });
}
