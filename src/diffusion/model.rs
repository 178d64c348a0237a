//! The two attack targets: the base classifier ([`BaseModel`]) and the defended pipeline
//! ([`Defended`]: purification chain + classifier, R passes averaged). Both implement
//! [`AttackModel`]; the defended one draws its noise from streams keyed by
//! `(key, sample id, draw)`, so results do not depend on batching or thread count.

use super::draws::{self, repeat_rows, DrawRows};
use super::fast::FastDefended;
use super::Schedule;
use crate::attack::{loss::loss_and_grad, AttackModel, Loss, ModelEval};
use crate::config::Prediction;
use crate::metrics::argmax;
use crate::nn::mlp::Mlp;
use ndarray::{s, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Row-wise softmax in f64.
pub fn softmax(logits: ArrayView2<f32>) -> Array2<f64> {
    let mut p = logits.mapv(|v| v as f64);
    for mut row in p.rows_mut() {
        let m = row.fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        row.mapv_inplace(|v| (v - m).exp());
        let s = row.sum();
        row /= s;
    }
    p
}

/// The undefended classifier on feature vectors.
pub struct BaseModel<'a> {
    pub clf: &'a Mlp<f32>,
}

impl BaseModel<'_> {
    pub fn predict_proba(&self, x: ArrayView2<f32>) -> Array2<f64> {
        softmax(self.clf.forward(x).view())
    }
}

impl AttackModel for BaseModel<'_> {
    fn num_classes(&self) -> usize {
        self.clf.output_dim()
    }
    fn stochastic(&self) -> bool {
        false
    }
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        _ids: &[u64],
        loss: Loss<'_>,
        _draws: usize,
        _key: u64,
        want_grad: bool,
    ) -> crate::Result<ModelEval> {
        let (logits, cache) = self.clf.forward_cached(x);
        let (l, dlogits) = loss_and_grad(loss, logits.view(), y);
        let grad = want_grad.then(|| self.clf.backward(&cache, dlogits.view(), false).1);
        let p = softmax(logits.view());
        let pred = p.rows().into_iter().map(argmax).collect();
        Ok(ModelEval {
            loss: l,
            logits,
            pred,
            grad,
        })
    }
}

/// The defended pipeline: purify (noise to t*, reverse to 0) then classify. Evaluated with
/// [`FastDefended`] in row chunks, one rayon task per chunk.
pub struct Defended {
    fast: FastDefended,
    classes: usize,
}

/// Rows (points × draws) per rayon task.
const TASK_ROWS: usize = 240;

impl Defended {
    pub fn new(
        den: &Mlp<f32>,
        clf: &Mlp<f32>,
        sched: &Schedule,
        emb: &Array2<f32>,
        t_star: usize,
        predict: Prediction,
    ) -> Self {
        Defended {
            fast: FastDefended::new(den, clf, sched, emb, t_star, predict),
            classes: clf.output_dim(),
        }
    }

    /// The defence of a trained denoiser `den` and classifier `clf` at `t_star` (the same
    /// constructor as the CUDA defence's `CudaDefended::of`).
    pub fn of(den: &super::denoiser::Denoiser, clf: &Mlp<f32>, t_star: usize) -> Self {
        Self::new(&den.mlp, clf, &den.sched, &den.emb, t_star, den.predict)
    }

    /// Noise for rows `(point i, draw e)` at row `i·draws + e`, keyed by `(key, ids[i], e)`
    /// ([`draws::noise`], shared with the CUDA defence).
    pub fn noise(&self, ids: &[u64], draws: usize, key: u64) -> Array2<f32> {
        draws::noise(ids, draws, key, self.fast.noise_len())
    }

    /// Start indices of the point chunks for `draws` rows per point.
    fn chunks(n: usize, draws: usize) -> (Vec<usize>, usize) {
        let pp = (TASK_ROWS / draws.max(1)).max(1);
        ((0..n).step_by(pp).collect(), pp)
    }

    /// Probabilities averaged over `passes` purification passes, and the argmax of every
    /// single pass (`n × passes`, for the spread of single-pass accuracy).
    pub fn predict_proba(
        &self,
        x: ArrayView2<f32>,
        ids: &[u64],
        passes: usize,
        key: u64,
    ) -> (Array2<f64>, Array2<u16>) {
        let n = x.nrows();
        let (starts, pp) = Self::chunks(n, passes);
        let parts: Vec<(Array2<f64>, Array2<u16>)> = starts
            .par_iter()
            .map(|&start| {
                let end = (start + pp).min(n);
                let rep = repeat_rows(x.slice(s![start..end, ..]), passes);
                let noise = self.noise(&ids[start..end], passes, key);
                let p = softmax(self.fast.logits(rep.view(), noise.view()).view());
                let mut proba = Array2::<f64>::zeros((end - start, self.classes));
                let mut single = Array2::<u16>::zeros((end - start, passes));
                for i in 0..end - start {
                    let block = p.slice(s![i * passes..(i + 1) * passes, ..]);
                    proba.row_mut(i).assign(&block.mean_axis(Axis(0)).unwrap());
                    for e in 0..passes {
                        single[[i, e]] = argmax(block.row(e)) as u16;
                    }
                }
                (proba, single)
            })
            .collect();
        let proba = ndarray::concatenate(
            Axis(0),
            &parts.iter().map(|p| p.0.view()).collect::<Vec<_>>(),
        );
        let single = ndarray::concatenate(
            Axis(0),
            &parts.iter().map(|p| p.1.view()).collect::<Vec<_>>(),
        );
        (
            proba.unwrap_or_else(|_| Array2::zeros((0, self.classes))),
            single.unwrap_or_else(|_| Array2::zeros((0, passes))),
        )
    }
}

impl Defended {
    /// The smoothing scale σ of the defence's first noise step.
    pub fn smoothing_sigma(&self) -> f64 {
        self.fast.smoothing_sigma()
    }

    /// Single-pass votes: `counts[i][c]` = how many of the passes `draws` of point `i` (noise
    /// stream `(key, ids[i], e)` for pass `e`) have `c` as their argmax, as in the `single`
    /// output of [`Self::predict_proba`]. Integer sums over tasks of one point × up to
    /// [`TASK_ROWS`] passes: independent of chunking and thread count.
    pub fn vote_counts(
        &self,
        x: ArrayView2<f32>,
        ids: &[u64],
        key: u64,
        draws: std::ops::Range<usize>,
    ) -> Array2<u32> {
        let tasks: Vec<(usize, usize)> = (0..x.nrows())
            .flat_map(|i| draws.clone().step_by(TASK_ROWS).map(move |e| (i, e)))
            .collect();
        let parts: Vec<(usize, Vec<u32>)> = tasks
            .par_iter()
            .map(|&(i, e0)| {
                let e1 = (e0 + TASK_ROWS).min(draws.end);
                let rep = repeat_rows(x.slice(s![i..i + 1, ..]), e1 - e0);
                let noise = draws::noise_range(ids[i], e0..e1, key, self.fast.noise_len());
                let p = softmax(self.fast.logits(rep.view(), noise.view()).view());
                let mut c = vec![0u32; self.classes];
                for row in p.rows() {
                    c[argmax(row)] += 1;
                }
                (i, c)
            })
            .collect();
        let mut out = Array2::<u32>::zeros((x.nrows(), self.classes));
        for (i, c) in parts {
            for (o, v) in out.row_mut(i).iter_mut().zip(c) {
                *o += v;
            }
        }
        out
    }
}

impl AttackModel for Defended {
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn stochastic(&self) -> bool {
        true
    }
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: Loss<'_>,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> crate::Result<ModelEval> {
        let (n, d, k) = (x.nrows(), x.ncols(), self.classes);
        let draws = draws.max(1);
        let (starts, pp) = Self::chunks(n, draws);
        let parts: Vec<draws::PointsOut> = starts
            .par_iter()
            .map(|&start| {
                let rows = start..(start + pp).min(n);
                let c = DrawRows::new(x, y, loss, rows.clone(), draws);
                let noise = self.noise(&ids[rows], draws, key);
                let out =
                    self.fast
                        .chunk(c.rep.view(), noise.view(), &c.y, c.loss(loss), want_grad);
                draws::reduce(out, draws)
            })
            .collect();
        Ok(draws::assemble(n, d, k, want_grad, parts))
    }
}
