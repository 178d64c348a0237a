//! The two attack targets: the base classifier ([`BaseModel`]) and the defended pipeline
//! ([`Defended`]: purification chain + classifier, R passes averaged). Both implement
//! [`AttackModel`]; the defended one draws its noise from streams keyed by
//! `(key, sample id, draw)`, so results do not depend on batching or thread count.

use super::chain::Chain;
use super::Schedule;
use crate::attack::{loss::loss_and_grad, AttackModel, LossKind, ModelEval};
use crate::config::Prediction;
use crate::nn::mlp::Mlp;
use crate::rng::{fill_normal, stream};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rayon::prelude::*;

/// Rows (points × draws) processed together; bounds the memory of cached activations.
const CHUNK_ROWS: usize = 4096;

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

fn argmax(row: ndarray::ArrayView1<f64>) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
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
        loss: LossKind,
        _draws: usize,
        _key: u64,
        want_grad: bool,
    ) -> ModelEval {
        let (logits, cache) = self.clf.forward_cached(x);
        let (l, dlogits) = loss_and_grad(loss, logits.view(), y);
        let grad = want_grad.then(|| self.clf.backward(&cache, dlogits.view(), false).1);
        let p = softmax(logits.view());
        let pred = p.rows().into_iter().map(argmax).collect();
        ModelEval {
            loss: l,
            logits,
            pred,
            grad,
        }
    }
}

/// The defended pipeline: purify (noise to t*, reverse to 0) then classify.
pub struct Defended<'a> {
    pub den: &'a Mlp<f32>,
    pub clf: &'a Mlp<f32>,
    pub sched: &'a Schedule,
    pub emb: &'a Array2<f32>,
    pub t_star: usize,
    pub predict: Prediction,
}

impl Defended<'_> {
    fn chain(&self) -> Chain<'_, f32> {
        Chain {
            den: self.den,
            sched: self.sched,
            emb: self.emb,
            t_star: self.t_star,
            predict: self.predict,
        }
    }

    /// Noise for rows `(point i, draw e)` at row `i·draws + e`, keyed by `(key, ids[i], e)`.
    pub fn noise(&self, ids: &[u64], draws: usize, key: u64, d: usize) -> Array2<f32> {
        let w = self.chain().noise_len(d);
        let mut out = Array2::<f32>::zeros((ids.len() * draws, w));
        out.axis_chunks_iter_mut(Axis(0), draws)
            .into_par_iter()
            .zip(ids.par_iter())
            .for_each(|(mut block, &id)| {
                for (e, mut row) in block.rows_mut().into_iter().enumerate() {
                    let mut rng = stream(key, &[id, e as u64]);
                    fill_normal(&mut rng, row.as_slice_mut().expect("contiguous"));
                }
            });
        out
    }

    /// Points per chunk so that `points × draws ≤ CHUNK_ROWS`.
    fn points_per_chunk(draws: usize) -> usize {
        (CHUNK_ROWS / draws.max(1)).max(1)
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
        let k = self.clf.output_dim();
        let mut proba = Array2::<f64>::zeros((x.nrows(), k));
        let mut single = Array2::<u16>::zeros((x.nrows(), passes));
        let step = Self::points_per_chunk(passes);
        for start in (0..x.nrows()).step_by(step) {
            let end = (start + step).min(x.nrows());
            let xs = x.slice(s![start..end, ..]);
            let rep = repeat_rows(xs, passes);
            let noise = self.noise(&ids[start..end], passes, key, x.ncols());
            let (xh, _) = self.chain().forward(rep.view(), noise.view(), false);
            let p = softmax(self.clf.forward(xh.view()).view());
            for i in 0..end - start {
                let block = p.slice(s![i * passes..(i + 1) * passes, ..]);
                proba
                    .row_mut(start + i)
                    .assign(&block.mean_axis(Axis(0)).unwrap());
                for e in 0..passes {
                    single[[start + i, e]] = argmax(block.row(e)) as u16;
                }
            }
        }
        (proba, single)
    }
}

/// Each row of `x` repeated `r` times consecutively.
pub fn repeat_rows(x: ArrayView2<f32>, r: usize) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((x.nrows() * r, x.ncols()));
    for (i, row) in x.rows().into_iter().enumerate() {
        for e in 0..r {
            out.row_mut(i * r + e).assign(&row);
        }
    }
    out
}

impl AttackModel for Defended<'_> {
    fn num_classes(&self) -> usize {
        self.clf.output_dim()
    }
    fn stochastic(&self) -> bool {
        true
    }
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: LossKind,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> ModelEval {
        let (n, d, k) = (x.nrows(), x.ncols(), self.clf.output_dim());
        let draws = draws.max(1);
        let mut out_loss = Array1::<f32>::zeros(n);
        let mut out_logits = Array2::<f32>::zeros((n, k));
        let mut pred = vec![0usize; n];
        let mut grad = want_grad.then(|| Array2::<f32>::zeros((n, d)));
        let step = Self::points_per_chunk(draws);
        for start in (0..n).step_by(step) {
            let end = (start + step).min(n);
            let m = end - start;
            let rep = repeat_rows(x.slice(s![start..end, ..]), draws);
            let yrep: Vec<usize> = y[start..end]
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c, draws))
                .collect();
            let noise = self.noise(&ids[start..end], draws, key, d);
            let chain = self.chain();
            let (xh, cache) = chain.forward(rep.view(), noise.view(), want_grad);
            let (logits, ccache) = self.clf.forward_cached(xh.view());
            let (l, dlogits) = loss_and_grad(loss, logits.view(), &yrep);
            let p = softmax(logits.view());
            for i in 0..m {
                let last = i * draws + draws - 1;
                out_loss[start + i] = l[last];
                out_logits.row_mut(start + i).assign(&logits.row(last));
                let mean = p
                    .slice(s![i * draws..(i + 1) * draws, ..])
                    .mean_axis(Axis(0))
                    .unwrap();
                pred[start + i] = argmax(mean.view());
            }
            if let (Some(g), Some(cache)) = (grad.as_mut(), cache) {
                let (_, gx) = self.clf.backward(&ccache, dlogits.view(), false);
                let g0 = chain.backward(&cache, gx);
                let inv = 1.0 / draws as f32;
                for i in 0..m {
                    let mean = g0
                        .slice(s![i * draws..(i + 1) * draws, ..])
                        .sum_axis(Axis(0));
                    g.row_mut(start + i).assign(&(mean * inv));
                }
            }
        }
        ModelEval {
            loss: out_loss,
            logits: out_logits,
            pred,
            grad,
        }
    }
}
