//! Per-sample worst case over attack candidates, scored by the model's own decision rule.
//!
//! A [`Scorer`] turns candidate points into class probabilities for each of its
//! independent scoring repeats (the defence: R purification passes averaged, each repeat
//! with its own noise key; a deterministic model: one exact repeat). A [`Worst`] tracker
//! keeps, per repeat and per point, the worst candidate offered so far: a misclassified one
//! beats a correct one, and among equals the lower true-class probability is worse. The
//! nine metrics of a row are computed on repeat 0's worst probabilities; every repeat's
//! accuracy and the strict accuracy (robust in every repeat) are reported beside them.

use crate::diffusion::model::{BaseModel, Defended};
use crate::error::Result;
use crate::metrics::argmax;
use crate::rng::key;
use ndarray::{Array2, ArrayView2};

/// Probabilities of candidate points, per independent scoring repeat.
pub trait Scorer: Sync {
    /// Number of independent repeats (1 for a deterministic model).
    fn repeats(&self) -> usize;
    /// Class probabilities of `x` (rows = points with sample ids `ids`) in repeat `r`.
    fn score(&self, x: ArrayView2<f32>, ids: &[u64], r: usize) -> Result<Array2<f64>>;
    /// Every repeat's probabilities of `x` (a scorer with a deterministic input map, e.g.
    /// image → features, overrides it to compute the map once for all repeats).
    fn score_repeats(&self, x: ArrayView2<f32>, ids: &[u64]) -> Result<Vec<Array2<f64>>> {
        (0..self.repeats()).map(|r| self.score(x, ids, r)).collect()
    }
}

/// The undefended classifier (deterministic, one repeat).
pub struct BaseScorer<'a>(pub &'a BaseModel<'a>);

impl Scorer for BaseScorer<'_> {
    fn repeats(&self) -> usize {
        1
    }
    fn score(&self, x: ArrayView2<f32>, _ids: &[u64], _r: usize) -> Result<Array2<f64>> {
        Ok(self.0.predict_proba(x))
    }
}

/// The defence's decision rule: `passes` purification passes averaged, repeat `r` keyed
/// `key(key, [r])` and by sample id (so a point's scoring noise does not depend on ε, the
/// batch or the candidate: ε = 0 reproduces the clean rows).
pub struct DefScorer<'a> {
    pub def: &'a Defended,
    pub passes: usize,
    pub repeats: usize,
    pub key: u64,
}

impl Scorer for DefScorer<'_> {
    fn repeats(&self) -> usize {
        self.repeats
    }
    fn score(&self, x: ArrayView2<f32>, ids: &[u64], r: usize) -> Result<Array2<f64>> {
        Ok(self
            .def
            .predict_proba(x, ids, self.passes, key(self.key, &[r as u64]))
            .0)
    }
}

/// Scores of a set of candidates (rows `rows` of the evaluated points), one matrix per
/// repeat; computed once and offered to every tracker that takes the candidates.
pub struct Scored<'a> {
    pub rows: &'a [usize],
    pub x: ArrayView2<'a, f32>,
    pub proba: Vec<Array2<f64>>,
}

/// Score `x` (candidates of points `rows`) in every repeat of `s`.
pub fn score_all<'a, S: Scorer + ?Sized>(
    s: &S,
    rows: &'a [usize],
    x: ArrayView2<'a, f32>,
    ids: &[u64],
) -> Result<Scored<'a>> {
    let is: Vec<u64> = rows.iter().map(|&i| ids[i]).collect();
    let proba = s.score_repeats(x, &is)?;
    Ok(Scored { rows, x, proba })
}

/// The per-sample worst candidate so far, per repeat.
#[derive(Clone, Debug)]
pub struct Worst {
    y: Vec<usize>,
    /// Per repeat: probabilities of the worst candidate (`n × K`).
    pub proba: Vec<Array2<f64>>,
    /// Repeat 0's worst candidate points (`n × d`).
    pub x: Array2<f32>,
    /// Candidates offered per point (the clean point included).
    pub offered: Vec<u32>,
}

/// `(misclassified, −p_true)`: larger is worse.
fn badness(p: ndarray::ArrayView1<f64>, y: usize) -> (bool, f64) {
    (argmax(p) != y, -p[y])
}

impl Worst {
    /// A tracker whose only candidate is the clean point `x` (feasible at every ε).
    pub fn new(y: &[usize], clean: &Scored<'_>) -> Self {
        assert_eq!(
            clean.rows.len(),
            y.len(),
            "Worst::new: clean scores all points"
        );
        Worst {
            y: y.to_vec(),
            proba: clean.proba.clone(),
            x: clean.x.to_owned(),
            offered: vec![1; y.len()],
        }
    }

    /// A tracker from its stored parts (checkpoints); `None` if the shapes disagree.
    pub fn from_parts(
        y: &[usize],
        proba: Vec<Array2<f64>>,
        x: Array2<f32>,
        offered: Vec<u32>,
    ) -> Option<Self> {
        let n = y.len();
        let ok = !proba.is_empty()
            && proba.iter().all(|p| p.nrows() == n)
            && x.nrows() == n
            && offered.len() == n;
        ok.then(|| Worst {
            y: y.to_vec(),
            proba,
            x,
            offered,
        })
    }

    /// Offer scored candidates; each repeat keeps the worse of its current and new one.
    pub fn offer(&mut self, c: &Scored<'_>) {
        for (r, p) in c.proba.iter().enumerate() {
            for (j, &i) in c.rows.iter().enumerate() {
                let new = badness(p.row(j), self.y[i]);
                let old = badness(self.proba[r].row(i), self.y[i]);
                if new.partial_cmp(&old) == Some(std::cmp::Ordering::Greater) {
                    self.proba[r].row_mut(i).assign(&p.row(j));
                    if r == 0 {
                        self.x.row_mut(i).assign(&c.x.row(j));
                    }
                }
            }
        }
        for &i in c.rows {
            self.offered[i] += 1;
        }
    }

    /// Whether point `i` is broken in repeat `r`.
    pub fn broken(&self, r: usize, i: usize) -> bool {
        argmax(self.proba[r].row(i)) != self.y[i]
    }

    /// Points broken in repeat 0.
    pub fn broken0(&self) -> Vec<bool> {
        (0..self.y.len()).map(|i| self.broken(0, i)).collect()
    }

    /// Accuracy of every repeat.
    pub fn repeat_accuracy(&self) -> Vec<f64> {
        let n = self.y.len().max(1) as f64;
        (0..self.proba.len())
            .map(|r| (0..self.y.len()).filter(|&i| !self.broken(r, i)).count() as f64 / n)
            .collect()
    }

    /// Fraction of points robust in every repeat (broken in any repeat counts as broken).
    pub fn strict_accuracy(&self) -> f64 {
        let n = self.y.len().max(1) as f64;
        (0..self.y.len())
            .filter(|&i| (0..self.proba.len()).all(|r| !self.broken(r, i)))
            .count() as f64
            / n
    }

    /// Accuracy of repeat 0 on the points `rows`.
    pub fn accuracy_on(&self, rows: &[usize]) -> f64 {
        rows.iter().filter(|&&i| !self.broken(0, i)).count() as f64 / rows.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn scored<'a>(rows: &'a [usize], x: ArrayView2<'a, f32>, p: Vec<Array2<f64>>) -> Scored<'a> {
        Scored { rows, x, proba: p }
    }

    #[test]
    fn misclassified_beats_lower_true_probability_and_repeats_are_separate() {
        let y = [0usize, 1];
        let x0 = array![[0.0f32], [0.0]];
        let all = [0usize, 1];
        let clean = scored(
            &all,
            x0.view(),
            vec![
                array![[0.9, 0.1], [0.2, 0.8]],
                array![[0.9, 0.1], [0.2, 0.8]],
            ],
        );
        let mut w = Worst::new(&y, &clean);
        assert_eq!(w.repeat_accuracy(), vec![1.0, 1.0]);
        // Point 0: candidate a is correct but with lower p_true in repeat 0; broken in repeat 1.
        let xa = array![[1.0f32]];
        let r0 = [0usize];
        w.offer(&scored(
            &r0,
            xa.view(),
            vec![array![[0.6, 0.4]], array![[0.45, 0.55]]],
        ));
        assert_eq!(w.proba[0].row(0).to_vec(), vec![0.6, 0.4]);
        assert_eq!(w.x.row(0).to_vec(), vec![1.0]);
        assert_eq!(w.repeat_accuracy(), vec![1.0, 0.5]);
        assert_eq!(w.strict_accuracy(), 0.5);
        // A misclassified candidate with a higher p_true than a correct one still wins:
        // 3 classes, p_true 0.4 but class 2 at 0.5.
        let y3 = [0usize];
        let x1 = array![[0.0f32]];
        let c = scored(&r0, x1.view(), vec![array![[0.35, 0.33, 0.32]]]);
        let mut w3 = Worst::new(&y3, &c);
        let x2 = array![[2.0f32]];
        w3.offer(&scored(&r0, x2.view(), vec![array![[0.4, 0.1, 0.5]]]));
        assert!(w3.broken(0, 0));
        // A later correct candidate with a lower p_true does not replace it.
        w3.offer(&scored(&r0, x1.view(), vec![array![[0.38, 0.31, 0.31]]]));
        assert_eq!(w3.proba[0].row(0).to_vec(), vec![0.4, 0.1, 0.5]);
        assert_eq!(w3.offered, vec![3]);
    }
}
