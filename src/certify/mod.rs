//! Certified L2 radii of the noise-then-denoise defence by randomised smoothing (Cohen,
//! Rosenfeld & Kolter 2019, Theorem 1 and their CERTIFY / PREDICT procedures).
//!
//! The defence first maps a feature vector to `√ᾱ·(x + σ·n)` with `σ = √((1 − ᾱ)/ᾱ)` at
//! `t = t*`; everything after it (the reverse chain with its own noise, the classifier) is a
//! randomised base classifier `h`, and the **majority vote** `g(x) = argmax_c P(h(x + σn) = c)`
//! is a smoothed classifier: if `P(g's class) ≥ p_A > ½` then `g` is constant on the L2 ball
//! of radius `σ·Φ⁻¹(p_A)`. The certificate is for `g`, not for the R-pass probability
//! average that the paper's tables evaluate; every output says so.
//!
//! This module owns the procedures ([`certify`], [`predict`]) over any
//! [`NoisyClassifier`] (the CPU defence in [`defended`], a linear classifier in the
//! tests), the statistics ([`bounds`]) and the curves and sandwich rows ([`curve`]).
//! Noise: stream `(key, sample id, draw)` with keys of their own (`rng::tag("certify")`),
//! independent of the attacks' and the scoring's streams and of batching and threads.

pub mod bounds;
pub mod curve;
mod defended;
#[cfg(test)]
mod tests;

use crate::error::Result;
use crate::special::normal_quantile;
use ndarray::{Array2, ArrayView2};
use std::ops::Range;

/// The procedures' sample sizes and level (`certify:` in a job).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// Draws that choose the top class.
    pub n0: usize,
    /// Draws that bound its probability (CERTIFY) or vote (PREDICT).
    pub n: usize,
    /// Failure probability of each certificate / prediction.
    pub alpha: f64,
}

/// A randomised base classifier under Gaussian input noise of scale [`sigma`](Self::sigma).
pub trait NoisyClassifier: Sync {
    fn num_classes(&self) -> usize;
    /// σ of the isotropic Gaussian noise added to the input (the smoothing scale).
    fn sigma(&self) -> f64;
    /// `counts[i][c]`: how many of the draws `draws` classify point `i` (row of `x`) as `c`,
    /// draw `e` using the noise stream `(key, ids[i], e)`.
    fn counts(
        &self,
        x: ArrayView2<f32>,
        ids: &[u64],
        key: u64,
        draws: Range<usize>,
    ) -> Result<Array2<u32>>;
}

/// Per-point certificates of the smoothed classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Certificates {
    /// The top class chosen from the `n0` selection draws.
    pub class: Vec<usize>,
    /// Lower confidence bound of its probability from the `n` estimation draws.
    pub p_lower: Vec<f64>,
    /// Certified L2 radius `σ·Φ⁻¹(p_lower)`; 0 when abstaining.
    pub radius: Vec<f64>,
    /// `p_lower ≤ ½`: no certificate (CERTIFY abstains).
    pub abstain: Vec<bool>,
}

impl Certificates {
    /// Fraction of points certified correct at L2 radius `r`: not abstaining, the
    /// certified class is the label, and `R ≥ r` (at r = 0: certified correct at all).
    pub fn certified_accuracy(&self, y: &[usize], r: f64) -> f64 {
        let ok = (0..y.len())
            .filter(|&i| !self.abstain[i] && self.class[i] == y[i] && self.radius[i] >= r)
            .count();
        ok as f64 / y.len().max(1) as f64
    }
}

/// First index of the largest count.
fn top(row: ndarray::ArrayView1<u32>) -> usize {
    let mut best = 0;
    for (c, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = c;
        }
    }
    best
}

/// The largest radius any point can get: all `n` draws for the top class.
pub fn max_radius(p: &Params, sigma: f64) -> f64 {
    let pl = bounds::clopper_pearson_lower(p.n as u64, p.n as u64, p.alpha);
    if pl > 0.5 {
        sigma * normal_quantile(pl)
    } else {
        0.0
    }
}

/// CERTIFY for every row of `x`: the top class from `n0` draws of stream `select_key`, its
/// probability bounded from `n` draws of the independent stream `estimate_key`.
pub fn certify(
    model: &dyn NoisyClassifier,
    x: ArrayView2<f32>,
    ids: &[u64],
    p: &Params,
    select_key: u64,
    estimate_key: u64,
) -> Result<Certificates> {
    let sel = model.counts(x, ids, select_key, 0..p.n0)?;
    let est = model.counts(x, ids, estimate_key, 0..p.n)?;
    let sigma = model.sigma();
    let mut out = Certificates {
        class: vec![],
        p_lower: vec![],
        radius: vec![],
        abstain: vec![],
    };
    for i in 0..x.nrows() {
        let c = top(sel.row(i));
        let pl = bounds::clopper_pearson_lower(u64::from(est[[i, c]]), p.n as u64, p.alpha);
        let abstain = pl <= 0.5;
        out.class.push(c);
        out.p_lower.push(pl);
        out.radius.push(if abstain {
            0.0
        } else {
            sigma * normal_quantile(pl)
        });
        out.abstain.push(abstain);
    }
    Ok(out)
}

/// PREDICT for every row of `x`: the most frequent class of `n` draws of stream `key`, or
/// `None` (abstain) when the two-sided binomial test between the two most frequent classes
/// does not reject equality at level α. Wrong with probability ≤ α per point.
pub fn predict(
    model: &dyn NoisyClassifier,
    x: ArrayView2<f32>,
    ids: &[u64],
    p: &Params,
    key: u64,
) -> Result<Vec<Option<usize>>> {
    let counts = model.counts(x, ids, key, 0..p.n)?;
    Ok(counts
        .rows()
        .into_iter()
        .map(|row| {
            let a = top(row);
            let second = row
                .iter()
                .enumerate()
                .filter(|&(c, _)| c != a)
                .map(|(_, &v)| v)
                .max()
                .unwrap_or(0);
            let (na, nb) = (u64::from(row[a]), u64::from(second));
            (bounds::binomial_test_half(na, na + nb) <= p.alpha).then_some(a)
        })
        .collect())
}
