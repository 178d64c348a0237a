//! APGD (Croce & Hein 2020) for L∞, per `docs/apgd.md` (§2–§6, quirks Q1–Q10,
//! box modes of §14), and the AutoAttack `rand`-style cascade (§8.2).
//!
//! Owns: [`ApgdParams`] (+ validation), [`apgd`] / [`apgd_with_init`] (one attack with
//! restarts), [`single_run`] (one run, the reference's `attack_single_run`),
//! [`attack_suite`] (CE → DLR worst case), and the pure schedule functions in [`schedule`].
//!
//! Behaviour beyond the reference, all chosen so that no reported number changes for
//! deterministic models:
//! * **Success test**: for a deterministic model a point counts as fooled when the argmax
//!   of the logits differs from its label, as in the reference. On a stochastic model the
//!   attack's own EOT-averaged prediction is only a guess: a guessed success is confirmed
//!   by an independent evaluation (its own noise key, [`ApgdParams::confirm`] passes, the
//!   defence's averaged decision rule) and an unconfirmed point keeps iterating. Loss
//!   bookkeeping, best point and checkpoints use the last draw's loss (Q1).
//! * **Candidates**: every attacked point gets one — its (confirmed) fooling iterate, else
//!   its highest-loss iterate over all restarts; never the clean input unless `eps == 0`.
//! * **Skipped work**: on a deterministic model points misclassified by the clean check are
//!   returned (clean x, fooled) without being attacked (their outcome is exact); on a
//!   stochastic model there is no clean-check shortcut, every point is attacked. With
//!   `early_stop` a point is dropped from the active set once a confirmed iterate fools it
//!   (`adv` is that first fooling iterate, where the reference would keep the latest one,
//!   Q8). The model is evaluated only on active rows. `eps == 0` returns `x` unchanged
//!   without any gradient evaluation.
//! * **Randomness** is independent of batch composition and thread count: the random
//!   start of sample `ids[i]` in restart `r` comes from
//!   `stream(seed, [tag("apgd-start"), r, ids[i]])`; model call `it` (0 = start point,
//!   `i + 1` after iteration `i`) uses the noise key
//!   `key(seed, [tag("apgd-model"), loss, r, it])`, from which the model derives per-sample,
//!   per-draw streams with `(key, ids[i], draw)`. The clean check is one evaluation with
//!   `draws = eot` keyed `key(seed, [tag("apgd-clean")])`.
//! * **Box**: the box of [`BoxConstraint`] is widened per dimension to contain the clean
//!   point, so the feasible set `ball ∩ box` is never empty (a test feature outside the
//!   training range stays valid). For `Unit` inputs in `[0,1]` this is the reference.
//! * Within the cascade there is no extra re-check pass (Q11): the final judgement of an
//!   adversarial example is left to the caller (e.g. many fresh passes of the defence).

#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "cuda_off.rs"]
pub mod cuda;
mod run;
pub mod schedule;
mod suite;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_models;

pub use run::{single_run, RunOutput};
pub use schedule::{checkpoints, halve_step, Schedule};
pub use suite::{attack_suite, SuiteOutput};

use super::{AttackModel, BoxConstraint, Loss, LossKind};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::rng::{key, tag};
use ndarray::{Array2, ArrayView2, Axis};

/// AutoAttack's step-size checkpoint threshold ρ (docs/apgd.md §4.4, condition 1).
pub const RHO: f32 = 0.75;

/// Parameters of one APGD attack.
#[derive(Clone, Debug)]
pub struct ApgdParams {
    pub eps: f32,
    pub n_iter: usize,
    pub loss: LossKind,
    /// EOT draws per gradient (1 for deterministic models).
    pub eot: usize,
    pub restarts: usize,
    pub rho: f32,
    pub bounds: BoxConstraint,
    pub seed: u64,
    /// Drop a point from the active set once it is fooled (its outcome cannot change). With
    /// `false` the run goes on for all N iterations and returns the *latest* misclassified
    /// iterate, exactly as the reference (Q8) — used for the base attack whose examples are
    /// transferred to the defence, where further-in iterates transfer better.
    pub early_stop: bool,
    /// Passes of the independent confirmation of an in-attack success on a stochastic
    /// model (R, the defence's own number of passes); ignored by deterministic models.
    pub confirm: usize,
}

impl ApgdParams {
    /// AutoAttack `rand` settings (N = 100, E = 20, 1 restart, ρ = 0.75), no box.
    pub fn rand_version(eps: f32, loss: LossKind, seed: u64) -> Self {
        ApgdParams {
            eps,
            n_iter: 100,
            loss,
            eot: 20,
            restarts: 1,
            rho: RHO,
            bounds: BoxConstraint::None,
            early_stop: true,
            confirm: 10,
            seed,
        }
    }

    /// Check the parameters against a model with `num_classes` outputs on `dim` inputs.
    pub fn validate(&self, num_classes: usize, dim: usize) -> Result<()> {
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(Error::param(
                "attack.eps",
                format!("must be a finite number ≥ 0, got {}", self.eps),
            ));
        }
        if self.n_iter == 0 {
            return Err(Error::param(
                "attack.n_iter",
                "must be ≥ 1 (AutoAttack uses 100)",
            ));
        }
        if self.eot == 0 {
            return Err(Error::param(
                "attack.eot",
                "must be ≥ 1 (1 for deterministic models, 20 in AutoAttack `rand`)",
            ));
        }
        if self.restarts == 0 {
            return Err(Error::param("attack.restarts", "must be ≥ 1"));
        }
        if self.confirm == 0 {
            return Err(Error::param(
                "diffusion.passes",
                "must be ≥ 1 (the passes that confirm a success on the defence)",
            ));
        }
        if !(self.rho > 0.0 && self.rho <= 1.0) {
            return Err(Error::param(
                "rho",
                format!("must be in (0, 1] (reference {RHO}), got {}", self.rho),
            ));
        }
        if num_classes < 2 {
            return Err(Error::param(
                "attack",
                format!("the model has {num_classes} classes; need ≥ 2"),
            ));
        }
        if self.loss == LossKind::Dlr && num_classes < 3 {
            return Err(Error::param(
                "attack.loss",
                format!("the DLR loss needs ≥ 3 classes, the model has {num_classes}; use `ce`"),
            ));
        }
        if let BoxConstraint::Range { lo, hi } = &self.bounds {
            if lo.len() != dim || hi.len() != dim {
                return Err(Error::param(
                    "attack.box",
                    format!(
                        "range has {} / {} bounds for {dim} input dimensions",
                        lo.len(),
                        hi.len()
                    ),
                ));
            }
            if lo
                .iter()
                .zip(hi)
                .any(|(a, b)| !(a <= b && a.is_finite() && b.is_finite()))
            {
                return Err(Error::param(
                    "attack.box",
                    "range bounds must be finite with lo ≤ hi",
                ));
            }
        }
        Ok(())
    }
}

/// Result of an attack on a batch.
#[derive(Clone, Debug)]
pub struct ApgdOutput {
    /// Candidates: the fooling iterate where the attack fooled the model, else the
    /// highest-loss iterate (the clean point for points skipped by the clean check).
    pub adv: Array2<f32>,
    /// Whether the attack fooled the model on that point.
    pub fooled: Vec<bool>,
    /// Model gradient evaluations spent (for the cost report).
    pub grad_evals: u64,
}

/// Run APGD on `x` (labels `y`, sample ids `ids`). An error when `p` is invalid for the
/// model ([`ApgdParams::validate`]) or the model fails (a device error).
pub fn apgd<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
) -> Result<ApgdOutput> {
    attack(model, x, y, ids, p, None)
}

/// [`apgd`] with an injected start point for every restart (the reference's `x_init`
/// hook; it is projected onto the feasible set first). For conformance tests.
pub fn apgd_with_init<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    x_init: ArrayView2<f32>,
) -> Result<ApgdOutput> {
    assert_eq!(
        x_init.dim(),
        x.dim(),
        "apgd_with_init: x_init shape differs from x"
    );
    attack(model, x, y, ids, p, Some(x_init))
}

fn attack<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    x_init: Option<ArrayView2<f32>>,
) -> Result<ApgdOutput> {
    check_inputs(model, x, y, ids, p, &[p.loss])?;
    let mut fooled: Vec<bool> = clean_check(model, x, y, ids, p)?
        .iter()
        .map(|&c| !c)
        .collect();
    let mut adv = x.to_owned();
    let mut grad_evals = 0;
    if p.eps > 0.0 {
        grad_evals = restarts(
            model,
            x,
            y,
            ids,
            p,
            p.loss.into(),
            x_init,
            &mut fooled,
            &mut adv,
        )?;
    }
    Ok(ApgdOutput {
        adv,
        fooled,
        grad_evals,
    })
}

/// The parameters validated for the model (a typed error naming the key); panics on
/// inconsistent shapes (a caller's bug, never user input).
pub(super) fn check_inputs<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    losses: &[LossKind],
) -> Result<()> {
    let k = model.num_classes();
    for &loss in losses {
        let q = ApgdParams { loss, ..p.clone() };
        q.validate(k, x.ncols())?;
    }
    assert!(
        y.len() == x.nrows() && ids.len() == x.nrows(),
        "apgd: {} points but {} labels and {} ids",
        x.nrows(),
        y.len(),
        ids.len()
    );
    assert!(
        y.iter().all(|&c| c < k),
        "apgd: a label is ≥ the model's {k} classes"
    );
    Ok(())
}

/// Clean check of a deterministic model: `true` where correctly classified. A stochastic
/// model has no clean-check shortcut (`true` everywhere: every point is attacked).
pub(crate) fn clean_check<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
) -> Result<Vec<bool>> {
    if x.nrows() == 0 {
        return Ok(vec![]);
    }
    if model.stochastic() {
        return Ok(vec![true; x.nrows()]);
    }
    let ev = model.evaluate(
        x,
        y,
        ids,
        p.loss.into(),
        1,
        key(p.seed, &[tag("apgd-clean")]),
        false,
    )?;
    assert_eq!(
        ev.pred.len(),
        x.nrows(),
        "AttackModel::evaluate returned a wrong number of predictions"
    );
    Ok(ev.pred.iter().zip(y).map(|(a, b)| a == b).collect())
}

/// §6: `p.restarts` runs of `loss`, each on the points not fooled yet; fooled points get
/// their adversarial example written into `adv`, the others their highest-loss iterate over
/// all restarts (rows of `adv` of points already fooled on entry are left as they are).
/// `loss` targets, if any, are aligned with the rows of `x`. Returns the gradient
/// evaluations.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restarts<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    loss: Loss<'_>,
    x_init: Option<ArrayView2<f32>>,
    fooled: &mut [bool],
    adv: &mut Array2<f32>,
) -> Result<u64> {
    restarts_keyed(model, x, y, ids, p, loss, 0, x_init, fooled, adv)
}

/// [`restarts`] with restart numbers offset by `base` (distinct random starts and noise
/// keys for separate runs of the same loss, e.g. one APGD-T run per target).
#[allow(clippy::too_many_arguments)]
pub(crate) fn restarts_keyed<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    p: &ApgdParams,
    loss: Loss<'_>,
    base: u64,
    x_init: Option<ArrayView2<f32>>,
    fooled: &mut [bool],
    adv: &mut Array2<f32>,
) -> Result<u64> {
    let n_attacked = fooled.iter().filter(|f| !**f).count();
    let prog = Progress::new(loss.name(), (p.n_iter * p.restarts) as u64);
    let mut evals = 0;
    let mut best_loss = vec![f32::NEG_INFINITY; x.nrows()];
    for r in 0..p.restarts {
        let sel: Vec<usize> = (0..x.nrows()).filter(|&i| !fooled[i]).collect();
        if sel.is_empty() {
            prog.inc(p.n_iter as u64);
            continue;
        }
        let xs = x.select(Axis(0), &sel);
        let ys: Vec<usize> = sel.iter().map(|&i| y[i]).collect();
        let is: Vec<u64> = sel.iter().map(|&i| ids[i]).collect();
        let init = x_init.map(|v| v.select(Axis(0), &sel));
        let ts = loss
            .targets_for(0..x.nrows(), 1)
            .map(|t| sel.iter().map(|&i| t[i]).collect::<Vec<usize>>());
        let out = run::run(
            model,
            xs.view(),
            &ys,
            &is,
            p,
            loss.with_targets(ts.as_deref()),
            base + r as u64,
            init.as_ref().map(|a| a.view()),
            Some(&prog),
        )?;
        evals += out.grad_evals;
        for (j, &i) in sel.iter().enumerate() {
            if out.fooled[j] {
                fooled[i] = true;
                adv.row_mut(i).assign(&out.x_best_adv.row(j));
            } else if out.l_best[j] > best_loss[i] {
                best_loss[i] = out.l_best[j];
                adv.row_mut(i).assign(&out.x_best.row(j));
            }
        }
    }
    let left = sel_count(fooled);
    prog.finish(format!(
        "robust {left}/{n_attacked} attacked points, {evals} gradient evaluations"
    ));
    Ok(evals)
}

fn sel_count(fooled: &[bool]) -> usize {
    fooled.iter().filter(|f| !**f).count()
}
