//! Toy [`AttackModel`]s for the APGD tests: a linear / 2-layer ReLU classifier with
//! optional Gaussian input noise keyed by `(key, id, draw)`, and a recorder that keeps
//! every point the attack queries; data generators; a naive per-sample APGD loop.

use super::{halve_step, ApgdParams, Schedule};
use crate::attack::loss::loss_and_grad;
use crate::attack::{AttackModel, Loss, ModelEval};
use crate::rng::{fill_normal, stream};
use ndarray::{Array1, Array2, ArrayView2, Axis};
use std::sync::Mutex;

/// `z = relu(v W1ᵀ + b1) W2ᵀ + b2` (or `v Wᵀ + b` without a hidden layer), evaluated on
/// `v + σ n` with `n ~ N(0, I)` drawn from `stream(key, [id, draw])`.
pub struct Toy {
    pub hidden: Option<(Array2<f32>, Array1<f32>)>,
    pub w: Array2<f32>,
    pub b: Array1<f32>,
    pub sigma: f32,
}

impl Toy {
    pub fn linear(w: Array2<f32>, b: Array1<f32>) -> Self {
        Toy {
            hidden: None,
            w,
            b,
            sigma: 0.0,
        }
    }

    /// Logits and (for the backward pass) the hidden pre-activations.
    fn forward(&self, v: ArrayView2<f32>) -> (Array2<f32>, Option<Array2<f32>>) {
        match &self.hidden {
            None => (v.dot(&self.w.t()) + &self.b, None),
            Some((w1, b1)) => {
                let pre = v.dot(&w1.t()) + b1;
                let h = pre.mapv(|a| a.max(0.0));
                (h.dot(&self.w.t()) + &self.b, Some(pre))
            }
        }
    }

    fn backward(&self, dz: &Array2<f32>, pre: &Option<Array2<f32>>) -> Array2<f32> {
        match (&self.hidden, pre) {
            (Some((w1, _)), Some(pre)) => {
                let mut dh = dz.dot(&self.w);
                dh.zip_mut_with(pre, |g, &p| {
                    if p <= 0.0 {
                        *g = 0.0
                    }
                });
                dh.dot(w1)
            }
            _ => dz.dot(&self.w),
        }
    }

    pub fn predict(&self, v: ArrayView2<f32>) -> Vec<usize> {
        argmax_rows(&self.forward(v).0)
    }
}

pub fn argmax_rows(a: &Array2<f32>) -> Vec<usize> {
    a.rows()
        .into_iter()
        .map(|r| {
            let mut best = 0;
            for j in 1..r.len() {
                if r[j] > r[best] {
                    best = j;
                }
            }
            best
        })
        .collect()
}

fn softmax_rows(z: &Array2<f32>) -> Array2<f32> {
    let mut p = z.clone();
    for mut r in p.rows_mut() {
        let m = r.fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        r.mapv_inplace(|v| (v - m).exp());
        let s = r.sum();
        r /= s;
    }
    p
}

impl AttackModel for Toy {
    fn num_classes(&self) -> usize {
        self.w.nrows()
    }
    fn stochastic(&self) -> bool {
        self.sigma > 0.0
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
        Ok({
            let draws = if self.stochastic() { draws } else { 1 };
            let mut grad = Array2::<f32>::zeros(x.raw_dim());
            let mut proba = Array2::<f32>::zeros((x.nrows(), self.num_classes()));
            let mut last = None;
            for draw in 0..draws {
                let mut v = x.to_owned();
                if self.sigma > 0.0 {
                    for (mut row, &id) in v.axis_iter_mut(Axis(0)).zip(ids) {
                        let mut n = vec![0f32; row.len()];
                        fill_normal(&mut stream(key, &[id, draw as u64]), &mut n);
                        row.zip_mut_with(&Array1::from(n), |a, b| *a += self.sigma * b);
                    }
                }
                let (z, pre) = self.forward(v.view());
                let (l, dz) = loss_and_grad(loss, z.view(), y);
                if want_grad {
                    grad += &self.backward(&dz, &pre);
                }
                proba += &softmax_rows(&z);
                last = Some((l, z));
            }
            let (loss, logits) = last.expect("at least one draw");
            ModelEval {
                loss,
                logits,
                pred: argmax_rows(&proba),
                grad: want_grad.then(|| grad / draws as f32),
            }
        })
    }
}

/// Records `(id, point)` for every row the attack evaluates.
pub struct Recorder<'a> {
    pub inner: &'a Toy,
    pub seen: Mutex<Vec<(u64, Vec<f32>)>>,
}

impl AttackModel for Recorder<'_> {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn stochastic(&self) -> bool {
        self.inner.stochastic()
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
        let mut s = self.seen.lock().unwrap();
        for (r, &id) in x.rows().into_iter().zip(ids) {
            s.push((id, r.to_vec()));
        }
        drop(s);
        self.inner.evaluate(x, y, ids, loss, draws, key, want_grad)
    }
}

pub fn normal(seed: u64, shape: (usize, usize), scale: f32) -> Array2<f32> {
    let mut v = vec![0f32; shape.0 * shape.1];
    fill_normal(&mut stream(seed, &[]), &mut v);
    Array2::from_shape_vec(shape, v).unwrap() * scale
}

/// Gaussian blobs (K classes, d dims) in roughly [0,1], and the nearest-mean linear
/// classifier `W = means, b = −|μ|²/2` ("trained by hand").
pub fn blobs(k: usize, d: usize, n: usize, seed: u64) -> (Array2<f32>, Vec<usize>, Toy) {
    let means = normal(seed, (k, d), 0.25) + 0.5;
    let y: Vec<usize> = (0..n).map(|i| i % k).collect();
    let mut x = normal(seed + 1, (n, d), 0.08);
    for (i, &c) in y.iter().enumerate() {
        let mut r = x.row_mut(i);
        r += &means.row(c);
        r.mapv_inplace(|v| v.clamp(0.0, 1.0));
    }
    let b = means.rows().into_iter().map(|m| -0.5 * m.dot(&m)).collect();
    (x, y, Toy::linear(means, b))
}

/// A random 2-layer ReLU net; labels are its own predictions on Gaussian inputs.
pub fn two_layer(k: usize, d: usize, h: usize, n: usize) -> (Array2<f32>, Vec<usize>, Toy) {
    let toy = Toy {
        hidden: Some((
            normal(21, (h, d), 0.7),
            normal(22, (1, h), 0.1).row(0).to_owned(),
        )),
        w: normal(23, (k, h), 0.7),
        b: Array1::zeros(k),
        sigma: 0.0,
    };
    let x = normal(24, (n, d), 1.0);
    let y = toy.predict(x.view());
    (x, y, toy)
}

pub fn ids(n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| 1000 + 7 * i).collect()
}

/// Reference-style loop for one sample of a deterministic model (no dropping, scalar
/// code straight from §4), returning (first fooling iterate, x_best and l_best at that
/// time or at the end).
pub fn naive(
    m: &Toy,
    x: &[f32],
    y: usize,
    x0: &[f32],
    p: &ApgdParams,
) -> (Option<Vec<f32>>, Vec<f32>, f32) {
    let d = x.len();
    let (lo, hi): (Vec<f32>, Vec<f32>) = x.iter().map(|&v| (v - p.eps, v + p.eps)).unzip();
    let proj = |v: f32, j: usize| v.max(lo[j]).min(hi[j]);
    let ev = |v: &[f32]| {
        let a = Array2::from_shape_vec((1, d), v.to_vec()).unwrap();
        let e = m
            .evaluate(a.view(), &[y], &[0], p.loss.into(), 1, 0, true)
            .unwrap();
        (e.loss[0], e.pred[0] != y, e.grad.unwrap().row(0).to_vec())
    };
    let mut xa: Vec<f32> = x0.iter().enumerate().map(|(j, &v)| proj(v, j)).collect();
    let (l0, f0, mut g) = ev(&xa);
    if f0 {
        return (Some(xa.clone()), xa, l0);
    }
    let (mut xb, mut gb, mut lb, mut lb_last, mut red) = (xa.clone(), g.clone(), l0, l0, true);
    let mut xp = xa.clone();
    let mut eta = 2.0 * p.eps;
    let mut hist = vec![0f32; p.n_iter];
    let sch = Schedule::new(p.n_iter);
    let (mut k, mut c) = (sch.first, 0);
    for i in 0..p.n_iter {
        let a: f32 = if i == 0 { 1.0 } else { 0.75 };
        for j in 0..d {
            let m = xa[j] - xp[j];
            xp[j] = xa[j];
            let sg = if g[j] > 0.0 {
                1.0
            } else if g[j] < 0.0 {
                -1.0
            } else {
                0.0
            };
            let z = proj(xa[j] + eta * sg, j);
            xa[j] = proj(xa[j] + (z - xa[j]) * a + m * (1.0 - a), j);
        }
        let (l, fooled, gn) = ev(&xa);
        g = gn;
        hist[i] = l;
        if l > lb {
            (xb, gb, lb) = (xa.clone(), g.clone(), l);
        }
        if fooled {
            return (Some(xa), xb, lb);
        }
        c += 1;
        if c == k {
            let fl = halve_step(&hist, i, k, p.rho, lb, lb_last, red);
            (red, lb_last) = (fl, lb);
            if fl {
                eta /= 2.0;
                xa = xb.clone();
                g = gb.clone();
            }
            c = 0;
            k = sch.next(k);
        }
    }
    (None, xb, lb)
}
