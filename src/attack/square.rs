//! The Square attack (Andriushchenko et al. 2020, "Square Attack: a query-efficient
//! black-box adversarial attack via random search"), L∞, on feature vectors
//! (`docs/attacks.md` §2).
//!
//! OWNS: [`SquareParams`], [`SquareOutput`], the window-size schedule [`p_selection`] and
//! the random search [`square`]. The feature vector has no spatial layout, so the "square"
//! is a random contiguous coordinate window of `⌈p·d⌉` coordinates set to `x ± ε` (one sign
//! per window), clipped to the feasible set `[max(x−ε, lo), min(x+ε, hi)]` (box widened to
//! contain `x`, as in APGD). A proposal is accepted when its EOT-averaged margin
//! `z_y − max_{j≠y} z_j` is strictly lower than the current point's. On a stochastic model
//! a negative margin is only a guess until an independent evaluation with its own noise
//! key confirms it. Every random draw is keyed by the sample id, so results do not depend
//! on batching or the thread count.

use crate::attack::loss::margin;
use crate::attack::{AttackModel, BoxConstraint, Loss};
use crate::error::{Error, Result};
use crate::rng::{key, stream, tag};
use ndarray::{Array2, ArrayView1, ArrayView2, Axis, Zip};
use rand::Rng as _;

/// Settings of one Square run.
#[derive(Clone, Debug)]
pub struct SquareParams {
    /// L∞ radius.
    pub eps: f32,
    /// Query budget per point (AutoAttack: 5000). One query = one (EOT-averaged) evaluation.
    pub n_queries: usize,
    /// Initial fraction of coordinates changed (0.8 in AutoAttack).
    pub p_init: f32,
    /// Draws averaged in the accept test (1 for deterministic models).
    pub eot: usize,
    /// Passes of the independent confirmation of a success on a stochastic model.
    pub confirm: usize,
    /// The valid set besides the ε-ball.
    pub bounds: BoxConstraint,
    /// Seed of every random stream of the run.
    pub seed: u64,
}

/// Result of [`square`], per input row.
#[derive(Clone, Debug)]
pub struct SquareOutput {
    /// Candidate per point: the confirmed misclassifying point, else the lowest-margin point found.
    pub adv: Array2<f32>,
    /// The point was misclassified at `x` or a confirmed success was found.
    pub fooled: Vec<bool>,
    /// Model draws spent (points × draws summed over all queries, init and confirmations included).
    pub evals: u64,
}

impl SquareParams {
    /// Typed errors for invalid settings (keys `attack.square.*`).
    pub fn validate(&self) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            let msg = format!("must be a finite number ≥ 0, got {}", self.eps);
            return Err(Error::param("attack.square.eps", msg));
        }
        if self.n_queries == 0 {
            let msg = "must be ≥ 1 (AutoAttack uses 5000)";
            return Err(Error::param("attack.square.n_queries", msg));
        }
        if !(self.p_init > 0.0 && self.p_init <= 1.0) {
            let msg = format!("must be in (0, 1] (AutoAttack 0.8), got {}", self.p_init);
            return Err(Error::param("attack.square.p_init", msg));
        }
        if self.eot == 0 {
            return Err(Error::param("attack.square.eot", "must be ≥ 1"));
        }
        if self.confirm == 0 {
            let msg = "must be ≥ 1 (the passes that confirm a success)";
            return Err(Error::param("attack.square.confirm", msg));
        }
        Ok(())
    }
}

/// Fraction of coordinates changed at iteration `it` (0-based): AutoAttack's piecewise
/// halving schedule with the iteration rescaled to a 10 000-query budget.
pub fn p_selection(p_init: f32, it: usize, n_queries: usize) -> f32 {
    let i = (it as f64 / n_queries as f64 * 10000.0) as usize;
    let halvings = match i {
        0..=10 => 0,
        11..=50 => 1,
        51..=200 => 2,
        201..=500 => 3,
        501..=1000 => 4,
        1001..=2000 => 5,
        2001..=4000 => 6,
        4001..=6000 => 7,
        6001..=8000 => 8,
        _ => 9,
    };
    p_init / (1u32 << halvings) as f32
}

/// Times a window is re-drawn when it would not change the current point.
const REDRAWS: usize = 10;

/// Rows whose prediction (averaged over `draws` passes keyed by `k`) differs from the label.
fn misclassified<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    draws: usize,
    k: u64,
) -> Result<Vec<bool>> {
    let ev = model.evaluate(x, y, ids, Loss::Ce, draws, k, false)?;
    Ok(ev.pred.iter().zip(y).map(|(p, t)| p != t).collect())
}

/// Margin of each row of `pts` averaged over `eot` copies evaluated in one model call
/// (copy `e` of id `i` has pseudo-id `key(i, [e])`, one draw, query key `q`).
fn avg_margins<M: AttackModel + ?Sized>(
    model: &M,
    pts: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    eot: usize,
    q: u64,
    seed: u64,
) -> Result<Vec<f32>> {
    let idx: Vec<usize> = (0..pts.nrows())
        .flat_map(|i| std::iter::repeat_n(i, eot))
        .collect();
    let rep = pts.select(Axis(0), &idx);
    let yr: Vec<usize> = idx.iter().map(|&i| y[i]).collect();
    let pid: Vec<u64> = (0..idx.len())
        .map(|r| key(ids[idx[r]], &[(r % eot) as u64]))
        .collect();
    let qk = key(seed, &[tag("square-query"), q]);
    let ev = model.evaluate(rep.view(), &yr, &pid, Loss::Ce, 1, qk, false)?;
    let m: Vec<f32> = ev
        .logits
        .rows()
        .into_iter()
        .zip(&yr)
        .map(|(z, &t)| margin(&z.to_vec(), t))
        .collect();
    Ok(m.chunks(eot)
        .map(|c| c.iter().sum::<f32>() / eot as f32)
        .collect())
}

/// L∞ Square attack on the rows of `x` (labels `y`, stable sample ids `ids`); see the
/// module docs. An error on invalid parameters ([`SquareParams::validate`]) or a model
/// failure; panics on mismatched lengths (a caller's bug).
pub fn square<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &SquareParams,
) -> Result<SquareOutput> {
    p.validate()?;
    let (n, d) = x.dim();
    assert!(
        y.len() == n && ids.len() == n,
        "square: {n} rows but {} labels and {} ids",
        y.len(),
        ids.len()
    );
    let mut out = SquareOutput {
        adv: x.to_owned(),
        fooled: vec![false; n],
        evals: 0,
    };
    if n == 0 {
        return Ok(out);
    }
    // Clean check of a deterministic model (exact). A stochastic model gets no clean-check
    // shortcut: every point is searched, and the caller's scoring decides.
    if !model.stochastic() {
        out.fooled = misclassified(model, x, y, ids, 1, key(p.seed, &[tag("square-clean")]))?;
        out.evals += n as u64;
    }
    let active: Vec<usize> = (0..n).filter(|&i| !out.fooled[i]).collect();
    if p.eps == 0.0 || d == 0 || active.is_empty() {
        return Ok(out);
    }
    let mut search = Search::new(model, x, y, ids, p, active);
    // Query 0 evaluates the init point (always accepted), queries 1..=n_queries proposals.
    for q in 0..=p.n_queries as u64 {
        if search.active.is_empty() {
            break;
        }
        let cand = search.candidates(q);
        search.query(q, cand, &mut out)?;
    }
    search.write_adv(&mut out);
    Ok(out)
}

/// The random search of one run: inputs and feasible set, the best point and margin of
/// every row, and the rows still searched.
struct Search<'a, M: ?Sized> {
    model: &'a M,
    x: ArrayView2<'a, f32>,
    y: &'a [usize],
    ids: &'a [u64],
    p: &'a SquareParams,
    stochastic: bool,
    /// Draws averaged per query (1 for a deterministic model).
    eot: usize,
    lower: Array2<f32>,
    upper: Array2<f32>,
    x_best: Array2<f32>,
    /// Lowest averaged margin so far (∞: row never queried).
    m_best: Vec<f32>,
    active: Vec<usize>,
}

impl<'a, M: AttackModel + ?Sized> Search<'a, M> {
    /// Feasible set and init point: a random vertex of the ε-ball per point, clipped to the
    /// feasible set.
    fn new(
        model: &'a M,
        x: ArrayView2<'a, f32>,
        y: &'a [usize],
        ids: &'a [u64],
        p: &'a SquareParams,
        active: Vec<usize>,
    ) -> Self {
        let stochastic = model.stochastic();
        let (lower, upper) = p.bounds.feasible(x, p.eps);
        let d = x.ncols();
        let mut x_best = x.to_owned();
        Zip::from(x_best.rows_mut())
            .and(lower.rows())
            .and(upper.rows())
            .and(ArrayView1::from(ids))
            .par_for_each(|mut b, lo, hi, &id| {
                let mut r = stream(p.seed, &[tag("square-init"), id]);
                for j in 0..d {
                    let s = if r.random::<bool>() { p.eps } else { -p.eps };
                    b[j] = (b[j] + s).max(lo[j]).min(hi[j]);
                }
            });
        Search {
            model,
            x,
            y,
            ids,
            p,
            stochastic,
            eot: if stochastic { p.eot } else { 1 },
            lower,
            upper,
            x_best,
            m_best: vec![f32::INFINITY; x.nrows()],
            active,
        }
    }

    /// The points of query `q` for the active rows: their best points, for `q > 0` with one
    /// random window of `⌈p(q−1)·d⌉` coordinates set to `x ± ε` (re-drawn up to
    /// [`REDRAWS`] times while it would not change the point).
    fn candidates(&self, q: u64) -> Array2<f32> {
        let mut cand = self.x_best.select(Axis(0), &self.active);
        if q == 0 {
            return cand;
        }
        let (x, ids, p) = (self.x, self.ids, self.p);
        let (lower, upper) = (&self.lower, &self.upper);
        let d = x.ncols();
        let s = ((p_selection(p.p_init, q as usize - 1, p.n_queries) * d as f32).ceil() as usize)
            .clamp(1, d);
        Zip::from(cand.rows_mut())
            .and(ArrayView1::from(&self.active[..]))
            .par_for_each(|mut c, &i| {
                let mut r = stream(p.seed, &[tag("square-window"), ids[i], q]);
                for _ in 0..REDRAWS {
                    let start = r.random_range(0..=d - s);
                    let delta = if r.random::<bool>() { p.eps } else { -p.eps };
                    let mut changed = false;
                    for j in start..start + s {
                        let v = (x[[i, j]] + delta).max(lower[[i, j]]).min(upper[[i, j]]);
                        changed |= v != c[j];
                        c[j] = v;
                    }
                    // An unchanged window equals the current point: nothing to undo.
                    if changed {
                        break;
                    }
                }
            });
        cand
    }

    /// Query `q`: evaluate `cand` (one row per active row), accept strict margin
    /// improvements, and retire the rows with a (confirmed) negative margin.
    fn query(&mut self, q: u64, cand: Array2<f32>, out: &mut SquareOutput) -> Result<()> {
        let ya: Vec<usize> = self.active.iter().map(|&i| self.y[i]).collect();
        let ia: Vec<u64> = self.active.iter().map(|&i| self.ids[i]).collect();
        let m = avg_margins(self.model, cand.view(), &ya, &ia, self.eot, q, self.p.seed)?;
        out.evals += (self.active.len() * self.eot) as u64;
        let guess = self.accept(&cand, &m);
        let confirmed = self.confirm(q, guess, out)?;
        for &i in &confirmed {
            out.fooled[i] = true;
        }
        self.active.retain(|&i| !out.fooled[i]);
        Ok(())
    }

    /// Keep each candidate whose margin `m` is lower than its row's best; the rows among
    /// them with a negative margin (guessed successes).
    fn accept(&mut self, cand: &Array2<f32>, m: &[f32]) -> Vec<usize> {
        let mut guess = Vec::new();
        for (r, &i) in self.active.iter().enumerate() {
            if m[r] < self.m_best[i] {
                self.m_best[i] = m[r];
                self.x_best.row_mut(i).assign(&cand.row(r));
                if m[r] < 0.0 {
                    guess.push(i);
                }
            }
        }
        guess
    }

    /// The rows of `guess` that count as fooled: all of them on a deterministic model; on a
    /// stochastic one those misclassified by `p.confirm` independent passes (key
    /// `(seed, "square-confirm", q)`).
    fn confirm(&self, q: u64, guess: Vec<usize>, out: &mut SquareOutput) -> Result<Vec<usize>> {
        if !self.stochastic || guess.is_empty() {
            return Ok(guess);
        }
        let p = self.p;
        let pts = self.x_best.select(Axis(0), &guess);
        let yg: Vec<usize> = guess.iter().map(|&i| self.y[i]).collect();
        let ig: Vec<u64> = guess.iter().map(|&i| self.ids[i]).collect();
        let k = key(p.seed, &[tag("square-confirm"), q]);
        out.evals += (guess.len() * p.confirm) as u64;
        let ok = misclassified(self.model, pts.view(), &yg, &ig, p.confirm, k)?;
        Ok(guess.iter().zip(ok).filter(|g| g.1).map(|g| *g.0).collect())
    }

    /// Attacked rows (a finite stored margin): the confirmed point if fooled (`x_best` is
    /// frozen once retired), else the lowest-margin point found; the others stay at `x`.
    fn write_adv(&self, out: &mut SquareOutput) {
        for (i, &m) in self.m_best.iter().enumerate() {
            if m < f32::INFINITY {
                out.adv.row_mut(i).assign(&self.x_best.row(i));
            }
        }
    }
}

#[cfg(test)]
#[path = "square_tests.rs"]
mod tests;
