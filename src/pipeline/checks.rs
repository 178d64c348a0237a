//! The evaluation's sanity checks (`docs/evaluation.md`), each able to fail, stored
//! in `/checks` of `result.h5` with the numbers behind them:
//! * `convergence[ε]`: 2× iterations and 2.5× EOT on a stratified subset lower worst-case
//!   robust accuracy by ≤ 1 point;
//! * `fixed_randomness[ε]`: the attack on the defence with its noise frozen (one draw,
//!   reused), scored on the random defence, breaks no more than the adaptive attack plus
//!   noise, and on the frozen model itself breaks at least as many;
//! * `black_box_square[ε]`: Square (EOT-averaged accept test) finds ≤ 0.5 points the
//!   white-box worst case missed;
//! * `adaptive_at_least_transfer_per_sample`, `randomness_detected`,
//!   `nonzero_input_gradients`, `base_reaches_zero`, `reaches_zero[robust_def/worst]` and
//!   `monotone_fresh[…]` (on the per-ε results without carried candidates).

use super::evaluate::{params, preset_steps, square_step};
use super::worst::{score_all, Scored, Scorer, Worst};
use crate::attack::plan::{run_plan, PlanOutput, Step};
use crate::attack::{AttackModel, BoxConstraint, Loss, ModelEval};
use crate::config::{JobConfig, Threat};
use crate::error::Result;
use crate::progress::log;
use crate::results::{Check, Protocol, ScenarioResult};
use crate::rng::{key, tag};
use ndarray::{Array2, ArrayView2, Axis};

/// `mean ± sd` of a list (sample sd; `± 0` for one value).
pub fn mean_sd(v: &[f64]) -> String {
    let (m, s) = stats(v);
    format!("{m:.4} ± {s:.4}")
}

fn stats(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

/// The `fixed_randomness` test, both directions (accuracies on the check subset): the attack
/// on the frozen-noise defence, scored on the random defence (`fixed_scored`), is not
/// stronger than the adaptive attack (`adapt`) beyond the noise `tol` (else EOT is not doing
/// its job), and on the frozen, deterministic model itself (`fixed_own`) it is at least as
/// strong (else the attack is weak even without randomness).
pub fn fixed_randomness_passes(fixed_scored: f64, fixed_own: f64, adapt: f64, tol: f64) -> bool {
    fixed_scored >= adapt - tol - 1e-12 && fixed_own <= adapt + tol + 1e-12
}

/// A stratified subset of `m` points: classes in turn, each class's points in a seeded
/// order (by a hash of the sample id), so every class is represented in proportion.
pub fn stratified(y: &[usize], ids: &[u64], m: usize, seed: u64) -> Vec<usize> {
    let k = y.iter().copied().max().map_or(0, |c| c + 1);
    let mut by: Vec<Vec<usize>> = vec![vec![]; k];
    for (i, &c) in y.iter().enumerate() {
        by[c].push(i);
    }
    for v in &mut by {
        v.sort_by_key(|&i| key(seed, &[ids[i]]));
    }
    let n = y.len();
    let mut out = vec![];
    for v in &by {
        let take = ((v.len() * m.min(n)) as f64 / n.max(1) as f64).round() as usize;
        out.extend(v.iter().take(take.max(1).min(v.len())));
    }
    out.sort_unstable();
    out
}

/// The defence with its randomness frozen: every evaluation uses one draw with one fixed
/// key, i.e. a deterministic network.
pub struct FixedNoise<'a> {
    pub inner: &'a dyn AttackModel,
    pub key: u64,
}

impl AttackModel for FixedNoise<'_> {
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn stochastic(&self) -> bool {
        false
    }
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: Loss<'_>,
        _draws: usize,
        _key: u64,
        want_grad: bool,
    ) -> Result<ModelEval> {
        self.inner.evaluate(x, y, ids, loss, 1, self.key, want_grad)
    }
}

/// Candidates of a plan: (global rows, one point per row) per step.
type Cands = Vec<(Vec<usize>, Array2<f32>)>;

/// (ε, pairs broken by transfer but not adaptive, points).
pub type Masked = (f64, usize, usize);

/// State of the checks across ε.
pub struct CheckCtx<'a> {
    cfg: &'a JobConfig,
    y: &'a [usize],
    ids: &'a [u64],
    subset: Vec<usize>,
    lines: Vec<Check>,
    masked: Vec<Masked>,
}

impl<'a> CheckCtx<'a> {
    pub fn new(cfg: &'a JobConfig, y: &'a [usize], ids: &'a [u64]) -> Self {
        let subset = stratified(
            y,
            ids,
            cfg.attack.checks.subset,
            key(cfg.seed, &[tag("check-subset")]),
        );
        CheckCtx {
            cfg,
            y,
            ids,
            subset,
            lines: vec![],
            masked: vec![],
        }
    }

    /// The records so far (check lines, masked pairs per ε), for checkpoints.
    pub fn state(&self) -> (Vec<Check>, Vec<Masked>) {
        (self.lines.clone(), self.masked.clone())
    }

    /// Restore the records of [`CheckCtx::state`].
    pub fn restore(&mut self, lines: Vec<Check>, masked: Vec<Masked>) {
        self.lines = lines;
        self.masked = masked;
    }

    pub fn subset(&self) -> &[usize] {
        &self.subset
    }

    fn wanted(&self, eps: f64, worst_acc: f64) -> bool {
        let c = &self.cfg.attack.checks;
        c.enabled
            && match &c.eps {
                Some(list) => list.contains(&eps),
                None => (0.05..=0.90).contains(&worst_acc),
            }
    }

    /// Run a plan on the subset rows `rows` and return its candidates with global rows.
    fn plan_on(
        &self,
        model: &dyn AttackModel,
        x: ArrayView2<f32>,
        rows: &[usize],
        steps: &[Step<'_>],
        p: &crate::attack::apgd::ApgdParams,
    ) -> Result<(PlanOutput, Cands)> {
        let xs = x.select(Axis(0), rows);
        let ys: Vec<usize> = rows.iter().map(|&i| self.y[i]).collect();
        let is: Vec<u64> = rows.iter().map(|&i| self.ids[i]).collect();
        let o = run_plan(model, xs.view(), &ys, &is, steps, p)?;
        let c = o
            .steps
            .iter()
            .map(|s| (s.rows.iter().map(|&j| rows[j]).collect(), s.adv.clone()))
            .collect();
        Ok((o, c))
    }

    fn offered(&self, ds: &dyn Scorer, w: &Worst, cands: &Cands) -> Result<Worst> {
        let mut w = w.clone();
        for (r, a) in cands {
            w.offer(&score_all(ds, r, a.view(), self.ids)?);
        }
        Ok(w)
    }

    /// The attack-strength checks at one ε (when selected): `adaptive_fresh` holds this
    /// ε's adaptive candidates only, `worst` the reported worst case.
    pub fn at_eps(
        &mut self,
        env: &Attacked<'_>,
        eps: f64,
        clean: &Worst,
        adaptive_fresh: &Worst,
        worst: &Worst,
    ) -> Result<()> {
        let cfg = self.cfg;
        if !self.wanted(eps, worst.repeat_accuracy()[0]) {
            return Ok(());
        }
        let s = self.subset.clone();
        let at = AtEps {
            eps,
            seed: key(cfg.seed, &[tag("checks"), eps.to_bits()]),
            robust: s.iter().copied().filter(|&i| !worst.broken(0, i)).collect(),
            main: worst.accuracy_on(&s),
            steps: preset_steps(cfg, cfg.attack.square_queries),
            s,
        };
        let (conv, strong) = self.convergence(env, &at, worst)?;
        let (fixed, fixed_scored, adapt) =
            self.fixed_randomness(env, &at, clean, adaptive_fresh)?;
        let (square, with_sq) = self.black_box_square(env, &at, worst)?;
        self.lines.extend([conv, fixed, square]);
        log(format!(
            "checks eps {eps}: convergence {:.4} → {strong:.4}, fixed noise {fixed_scored:.4} vs adaptive {adapt:.4}, square {with_sq:.4}",
            at.main
        ));
        Ok(())
    }

    /// Convergence: a stronger attack (more iterations and draws) on the points the
    /// reported attack left robust. Returns the check and the stronger attack's accuracy.
    fn convergence(
        &self,
        env: &Attacked<'_>,
        at: &AtEps<'_>,
        worst: &Worst,
    ) -> Result<(Check, f64)> {
        let (cfg, ch) = (self.cfg, &self.cfg.attack.checks);
        let mut p = params(cfg, at.eps, env.bounds, key(at.seed, &[tag("strong")]));
        p.n_iter = (p.n_iter as f64 * ch.iterations_factor).ceil() as usize;
        p.eot = (p.eot as f64 * ch.eot_factor).ceil() as usize;
        let strong = if at.robust.is_empty() {
            at.main
        } else {
            let (_, c) = self.plan_on(env.model, env.x, &at.robust, &at.steps, &p)?;
            self.offered(env.scorer, worst, &c)?.accuracy_on(&at.s)
        };
        let (main, drop) = (at.main, at.main - strong);
        let check = Check::new(
            format!("convergence[eps={}]", at.eps),
            drop <= 0.01 + 1e-12,
            format!(
                "on {} stratified points: worst-case robust accuracy {main:.4} with N = {}, EOT = {}; {strong:.4} with N = {}, EOT = {} (change {:.4}, allowed 0.01)",
                at.s.len(), cfg.attack.iterations, cfg.attack.eot, p.n_iter, p.eot, drop
            ),
        );
        Ok((check, strong))
    }

    /// Fixed randomness: attack the frozen defence on the subset, score it on the random
    /// one and on the frozen one. Returns the check, the random-defence score and the
    /// adaptive accuracy it is compared with.
    fn fixed_randomness(
        &self,
        env: &Attacked<'_>,
        at: &AtEps<'_>,
        clean: &Worst,
        adaptive_fresh: &Worst,
    ) -> Result<(Check, f64, f64)> {
        let s = &at.s;
        let fixed = FixedNoise {
            inner: env.model,
            key: key(at.seed, &[tag("fixed-noise")]),
        };
        let mut pf = params(self.cfg, at.eps, env.bounds, key(at.seed, &[tag("fixed")]));
        pf.eot = 1;
        let (of, c) = self.plan_on(&fixed, env.x, s, &at.steps, &pf)?;
        let fixed_own = 1.0 - of.fooled.iter().filter(|&&f| f).count() as f64 / s.len() as f64;
        let wf = self.offered(env.scorer, clean, &c)?;
        let fixed_scored = wf.accuracy_on(s);
        let adapt = adaptive_fresh.accuracy_on(s);
        let reps: Vec<f64> = (0..adaptive_fresh.proba.len())
            .map(|r| {
                s.iter().filter(|&&i| !adaptive_fresh.broken(r, i)).count() as f64 / s.len() as f64
            })
            .collect();
        let tol = (2.0 * stats(&reps).1).max(1.0 / s.len() as f64);
        let check = Check::new(
            format!("fixed_randomness[eps={}]", at.eps),
            fixed_randomness_passes(fixed_scored, fixed_own, adapt, tol),
            format!(
                "on {} points: attack on the frozen-noise defence, scored on the random defence {fixed_scored:.4} (must be ≥ adaptive − noise) and on the frozen model itself {fixed_own:.4} (must be ≤ adaptive + noise); adaptive (this ε only) {adapt:.4}, allowed noise {tol:.4}",
                s.len()
            ),
        );
        Ok((check, fixed_scored, adapt))
    }

    /// Black box: Square on the points the white-box worst case left robust. Returns the
    /// check and the accuracy with Square's candidates added.
    fn black_box_square(
        &self,
        env: &Attacked<'_>,
        at: &AtEps<'_>,
        worst: &Worst,
    ) -> Result<(Check, f64)> {
        let (cfg, ch) = (self.cfg, &self.cfg.attack.checks);
        let sq = [square_step(cfg, ch.square_queries)];
        let with_sq = if at.robust.is_empty() {
            at.main
        } else {
            let ps = params(
                cfg,
                at.eps,
                env.bounds,
                key(at.seed, &[tag("square-check")]),
            );
            let (_, c) = self.plan_on(env.model, env.x, &at.robust, &sq, &ps)?;
            self.offered(env.scorer, worst, &c)?.accuracy_on(&at.s)
        };
        let main = at.main;
        let check = Check::new(
            format!("black_box_square[eps={}]", at.eps),
            main - with_sq <= 0.005 + 1e-12,
            format!(
                "on {} points: white-box worst case {main:.4}, adding Square ({} queries, EOT {}) {with_sq:.4} (allowed drop 0.005)",
                at.s.len(), ch.square_queries, cfg.attack.eot
            ),
        );
        Ok((check, with_sq))
    }

    /// Remember which points transfer broke that the adaptive attack did not (repeat 0).
    pub fn record(&mut self, eps: f64, transfer: &Worst, adaptive: &Worst) {
        if eps <= 0.0 {
            return;
        }
        let m = (0..self.y.len())
            .filter(|&i| transfer.broken(0, i) && !adaptive.broken(0, i))
            .count();
        self.masked.push((eps, m, self.y.len()));
    }

    /// All check lines: the per-ε ones recorded so far, then the whole-run checks.
    /// `both`: the run attacked with both the transfer and the adaptive protocol.
    pub fn finish(
        mut self,
        out: &[ScenarioResult],
        clean: &Scored<'_>,
        grads: Option<Array2<f32>>,
        both: bool,
    ) -> Vec<Check> {
        let mut lines = std::mem::take(&mut self.lines);
        if both && !self.masked.is_empty() {
            lines.push(masked_check(&self.masked));
        }
        lines.extend(randomness_check(clean));
        lines.extend(grads.map(|g| gradient_check(&g)));
        lines.extend(reaches_zero_checks(out));
        if self.cfg.attack.threat == Threat::Pixel {
            lines.extend(pixel_budget_check(out));
        }
        lines.extend(monotone_checks(out));
        lines
    }
}

/// Everything the per-ε checks attack: the box, the test features, the attacked model and
/// the defence's scorer.
pub struct Attacked<'a> {
    pub bounds: &'a BoxConstraint,
    pub x: ArrayView2<'a, f32>,
    pub model: &'a dyn AttackModel,
    pub scorer: &'a dyn Scorer,
}

/// One ε's check inputs: the subset `s`, its points the worst case left robust, the
/// worst-case accuracy on `s` and the preset's attacks.
struct AtEps<'a> {
    eps: f64,
    seed: u64,
    s: Vec<usize>,
    robust: Vec<usize>,
    main: f64,
    steps: Vec<Step<'a>>,
}

/// `adaptive_at_least_transfer_per_sample` over the recorded ε values.
fn masked_check(masked: &[Masked]) -> Check {
    let total: usize = masked.iter().map(|m| m.1).sum();
    let per: Vec<String> = masked
        .iter()
        .map(|(e, m, _)| format!("ε={e}: {m}"))
        .collect();
    Check::new(
        "adaptive_at_least_transfer_per_sample",
        total == 0,
        if total == 0 {
            "every point broken by transfer is broken by the adaptive attack (repeat 0)".into()
        } else {
            format!("{total} (point, ε) pairs broken by transfer but not by the adaptive attack ({}): the adaptive attack is weaker there (noisy EOT gradients or masking); the worst-case row counts them broken", per.join(", "))
        },
    )
}

/// `randomness_detected`: two independent scorings of the clean points differ.
fn randomness_check(clean: &Scored<'_>) -> Option<Check> {
    if clean.proba.len() < 2 {
        return None;
    }
    let differ = clean.proba[0]
        .iter()
        .zip(clean.proba[1].iter())
        .filter(|(a, b)| a != b)
        .count();
    Some(Check::new(
        "randomness_detected",
        differ > 0,
        format!("{differ} probabilities differ between two independent scorings of the clean points: the defence is {}", if differ > 0 { "stochastic (EOT and confirmed successes apply)" } else { "deterministic in practice" }),
    ))
}

/// `nonzero_input_gradients`: no subset point has a zero or non-finite EOT gradient.
fn gradient_check(g: &Array2<f32>) -> Check {
    let bad = g
        .rows()
        .into_iter()
        .filter(|r| r.iter().all(|v| *v == 0.0) || r.iter().any(|v| !v.is_finite()))
        .count();
    Check::new(
        "nonzero_input_gradients",
        bad == 0,
        format!("{bad} of {} subset points have a zero or non-finite EOT input gradient through the defence", g.nrows()),
    )
}

/// `base_reaches_zero` and `reaches_zero[robust_def/worst]` at the largest ε.
fn reaches_zero_checks(out: &[ScenarioResult]) -> Vec<Check> {
    let last = |p: Protocol| {
        out.iter()
            .filter(|r| r.scenario.is_robust() && r.protocol == p)
            .max_by(|a, b| a.eps.total_cmp(&b.eps))
    };
    let mut lines = vec![];
    if let Some(r) = last(Protocol::None) {
        lines.push(Check::new(
            "base_reaches_zero",
            r.metrics.accuracy <= 0.01,
            format!("undefended robust accuracy {:.4} at the largest ε = {} (≤ 0.01 expected; otherwise add a larger ε)", r.metrics.accuracy, r.eps),
        ));
    }
    if let Some(r) = last(Protocol::Worst) {
        lines.push(Check::new(
            "reaches_zero[robust_def/worst]",
            r.metrics.accuracy <= 0.05,
            format!(
                "worst-case defended robust accuracy {:.4} at the largest ε = {}",
                r.metrics.accuracy, r.eps
            ),
        ));
    }
    lines
}

/// `base_pixel_budget[eps=0.3]` (pixel threat model, when ε = 0.3 was evaluated): the
/// undefended pipeline falls to ≤ 2 % at MNIST's standard L∞ budget; if it does not, the
/// image gradient is wrong or masked.
fn pixel_budget_check(out: &[ScenarioResult]) -> Option<Check> {
    let r = out.iter().find(|r| {
        r.scenario == crate::results::Scenario::RobustBase && (r.eps - 0.3).abs() < 1e-9
    })?;
    Some(Check::new(
        "base_pixel_budget[eps=0.3]",
        r.metrics.accuracy <= 0.02,
        format!(
            "undefended robust accuracy {:.4} at the pixel budget ε = 0.3 (≤ 0.02 expected on MNIST-like digits; higher means a wrong or masked image gradient)",
            r.metrics.accuracy
        ),
    ))
}

/// `monotone_fresh[…]`: per protocol, the per-ε results without carried candidates do
/// not rise with ε (tolerance 0.005).
fn monotone_checks(out: &[ScenarioResult]) -> Vec<Check> {
    let mut lines = vec![];
    for p in Protocol::ALL {
        let mut v: Vec<(f64, f64)> = out
            .iter()
            .filter(|r| r.scenario.is_robust() && r.protocol == p && r.fresh_accuracy.is_finite())
            .map(|r| (r.eps, r.fresh_accuracy))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        if v.len() < 2 {
            continue;
        }
        let ok = v.windows(2).all(|w| w[1].1 <= w[0].1 + 0.005);
        let txt: Vec<String> = v.iter().map(|(e, a)| format!("{e}:{a:.4}")).collect();
        let name = if p == Protocol::None {
            "robust_base".to_string()
        } else {
            format!("robust_def/{p}")
        };
        lines.push(Check::new(
            format!("monotone_fresh[{name}]"),
            ok,
            format!(
                "per-ε results without carried candidates (tolerance 0.005): {}",
                txt.join(" ")
            ),
        ));
    }
    lines
}

/// EOT input gradients of the CE loss through the attacked model at the clean subset points.
pub fn input_gradients(
    cfg: &JobConfig,
    model: &dyn AttackModel,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    rows: &[usize],
) -> Result<Option<Array2<f32>>> {
    if rows.is_empty()
        || !cfg
            .attack
            .protocols
            .contains(&crate::config::Protocol::Adaptive)
    {
        return Ok(None);
    }
    let xs = x.select(Axis(0), rows);
    let ys: Vec<usize> = rows.iter().map(|&i| y[i]).collect();
    let is: Vec<u64> = rows.iter().map(|&i| ids[i]).collect();
    let k = key(cfg.seed, &[tag("check-grad")]);
    Ok(model
        .evaluate(xs.view(), &ys, &is, Loss::Ce, cfg.attack.eot, k, true)?
        .grad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_randomness_fails_in_either_direction() {
        // The paper run's ε = 0.25 numbers pass.
        assert!(fixed_randomness_passes(0.78, 0.755, 0.75, 0.0192));
        // The frozen-noise examples transfer better than the adaptive attack: EOT is weak.
        assert!(!fixed_randomness_passes(0.70, 0.70, 0.75, 0.0192));
        // The attack fails on the frozen (deterministic) model more than on the random one.
        assert!(!fixed_randomness_passes(0.80, 0.80, 0.75, 0.0192));
        // Exactly at the noise bound in both directions still passes.
        assert!(fixed_randomness_passes(0.73, 0.77, 0.75, 0.02));
    }

    #[test]
    fn stratified_subset_keeps_class_proportions() {
        let y: Vec<usize> = (0..1000)
            .map(|i| if i % 10 < 7 { 0 } else { 1 + i % 3 })
            .collect();
        let ids: Vec<u64> = (0..1000).map(|i| i * 3 + 1).collect();
        let s = stratified(&y, &ids, 200, 7);
        let c0 = s.iter().filter(|&&i| y[i] == 0).count();
        assert!((135..=145).contains(&c0), "{c0}");
        assert!((195..=205).contains(&s.len()));
        assert_eq!(s, stratified(&y, &ids, 200, 7));
        assert_ne!(s, stratified(&y, &ids, 200, 8));
        assert_eq!(mean_sd(&[1.0, 3.0]), "2.0000 ± 1.4142");
    }
}
