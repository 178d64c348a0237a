//! The attack cascade of one protocol at one ε: an ordered list of [`Step`]s — APGD-CE,
//! APGD-DLR, APGD-T (one run per target class), Square, and warm-started APGD runs — each
//! on the points no earlier step has fooled (confirmed fooled, on a stochastic model).
//! Every step yields a **candidate** for every point it attacked (its fooling point, else
//! its highest-loss point); the caller scores all of them with the defence's own decision
//! rule and keeps the worst per sample. Nothing decided inside a step on one noisy pass is
//! final: only the caller's scoring decides whether a point is broken.

use super::apgd::{clean_check, restarts_keyed, ApgdParams};
use super::square::{square, SquareParams};
use super::{AttackModel, Loss, LossKind};
use crate::error::{Error, Result};
use crate::rng::{key, tag};
use ndarray::{Array2, ArrayView2, Axis};

/// One attack of a cascade.
#[derive(Clone, Debug)]
pub enum Step<'a> {
    /// APGD with an untargeted loss (`p.restarts` random restarts).
    Apgd(LossKind),
    /// APGD-T: one APGD run with the targeted DLR loss per target; targets are the `n`
    /// classes other than the label with the highest clean logits, in decreasing order.
    Targeted { n: usize },
    /// One APGD run of `n_iter` iterations started from `init` (a row per point, projected
    /// into the current feasible set), e.g. a point's transfer candidate.
    Warm {
        name: &'static str,
        init: ArrayView2<'a, f32>,
        loss: LossKind,
        n_iter: usize,
    },
    /// The Square attack (black box; EOT-averaged accept test on a stochastic model).
    Square(SquareParams),
}

impl Step<'_> {
    /// Name used in logs and result files.
    pub fn name(&self) -> String {
        match self {
            Step::Apgd(l) => l.name().into(),
            Step::Targeted { .. } => "apgd-t".into(),
            Step::Warm { name, .. } => (*name).into(),
            Step::Square(_) => "square".into(),
        }
    }
}

/// Candidates of one step (APGD-T: of one target).
#[derive(Clone, Debug)]
pub struct StepOutput {
    pub name: String,
    /// Points (row indices of the plan's input) this step attacked.
    pub rows: Vec<usize>,
    /// One candidate per attacked point (`rows.len() × d`).
    pub adv: Array2<f32>,
    /// Whether the step fooled (confirmed) the point, aligned with `rows`.
    pub fooled: Vec<bool>,
    /// Model gradient (or, for Square, forward) evaluations of points × draws.
    pub evals: u64,
}

/// Result of [`run_plan`].
#[derive(Clone, Debug)]
pub struct PlanOutput {
    pub steps: Vec<StepOutput>,
    /// Fooled by some step, or (deterministic model) misclassified at the clean point.
    pub fooled: Vec<bool>,
    /// Clean check (always `true` on a stochastic model: there every point is attacked).
    pub clean_correct: Vec<bool>,
    pub evals: u64,
}

/// The `n` classes other than `y[i]` with the highest logits, in decreasing order (ties:
/// lower index first).
pub fn top_targets(logits: ArrayView2<f32>, y: &[usize], n: usize) -> Vec<Vec<usize>> {
    logits
        .rows()
        .into_iter()
        .zip(y)
        .map(|(z, &yi)| {
            let mut c: Vec<usize> = (0..z.len()).filter(|&j| j != yi).collect();
            c.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
            c.truncate(n);
            c
        })
        .collect()
}

/// Run `steps` in order on `x` (labels `y`, sample ids `ids`), each on the points not
/// fooled yet. `p` gives ε, iterations, EOT, restarts, box, seed and confirmation passes
/// (its `loss` is ignored). An error when `p` is invalid for the model or the model fails.
pub fn run_plan<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    steps: &[Step<'_>],
    p: &ApgdParams,
) -> Result<PlanOutput> {
    super::apgd::check_inputs(model, x, y, ids, p, &apgd_losses(steps))?;
    let clean_correct = clean_check(model, x, y, ids, p)?;
    let mut fooled: Vec<bool> = clean_correct.iter().map(|&c| !c).collect();
    let mut out = PlanOutput {
        steps: vec![],
        fooled: vec![],
        clean_correct,
        evals: 0,
    };
    if p.eps <= 0.0 || x.nrows() == 0 {
        out.fooled = fooled;
        return Ok(out);
    }
    let cascade = Cascade {
        model,
        x,
        y,
        ids,
        p,
    };
    for (si, step) in steps.iter().enumerate() {
        cascade.run_step(si, step, &mut fooled, &mut out.steps)?;
    }
    out.evals = out.steps.iter().map(|s| s.evals).sum();
    out.fooled = fooled;
    Ok(out)
}

/// The untargeted APGD losses the plan uses (validated up front).
fn apgd_losses(steps: &[Step<'_>]) -> Vec<LossKind> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Apgd(l) | Step::Warm { loss: l, .. } => Some(*l),
            _ => None,
        })
        .collect()
}

/// The model, the plan's inputs and parameters, shared by every step.
struct Cascade<'a, M: ?Sized> {
    model: &'a M,
    x: ArrayView2<'a, f32>,
    y: &'a [usize],
    ids: &'a [u64],
    p: &'a ApgdParams,
}

impl<M: AttackModel + ?Sized> Cascade<'_, M> {
    /// Run step `si` on the points not `fooled` yet, marking the ones it fools and
    /// appending its outputs (one per target for APGD-T) to `outs`.
    fn run_step(
        &self,
        si: usize,
        step: &Step<'_>,
        fooled: &mut [bool],
        outs: &mut Vec<StepOutput>,
    ) -> Result<()> {
        let base = (si as u64 + 1) << 20;
        let named = |o: StepOutput| StepOutput {
            name: step.name(),
            ..o
        };
        match step {
            Step::Apgd(l) => {
                let o = self.apgd(self.p, (*l).into(), base, None, fooled)?;
                outs.push(named(o));
            }
            Step::Warm {
                init, loss, n_iter, ..
            } => {
                let q = ApgdParams {
                    n_iter: *n_iter,
                    restarts: 1,
                    ..self.p.clone()
                };
                let o = self.apgd(&q, (*loss).into(), base, Some(*init), fooled)?;
                outs.push(named(o));
            }
            Step::Targeted { n } => self.targeted(*n, base, fooled, outs)?,
            Step::Square(sp) => outs.push(named(self.square(si, sp, fooled)?)),
        }
        Ok(())
    }

    /// APGD-T: one targeted run per each of the `n` top clean-logit classes (at most
    /// K − 1), named `apgd-t/1`, `apgd-t/2`, …
    fn targeted(
        &self,
        n: usize,
        base: u64,
        fooled: &mut [bool],
        outs: &mut Vec<StepOutput>,
    ) -> Result<()> {
        let (x, y, ids, p) = (self.x, self.y, self.ids, self.p);
        let k = self.model.num_classes();
        if k < 4 {
            return Err(Error::param(
                "attack.version",
                format!(
                    "APGD-T needs at least 4 classes (the model has {k}); use attack.version: rand"
                ),
            ));
        }
        let clean = self.model.evaluate(
            x,
            y,
            ids,
            Loss::Ce,
            1,
            key(p.seed, &[tag("apgd-t-targets")]),
            false,
        )?;
        let tops = top_targets(clean.logits.view(), y, n.min(k - 1));
        for j in 0..n.min(k - 1) {
            let t: Vec<usize> = tops.iter().map(|c| c[j]).collect();
            let base_j = base + ((j as u64 + 1) << 8);
            let o = self.apgd(p, Loss::DlrTargeted(&t), base_j, None, fooled)?;
            outs.push(StepOutput {
                name: format!("apgd-t/{}", j + 1),
                ..o
            });
        }
        Ok(())
    }

    /// Square (step `si`, its own seed `(seed, "square", si)`) on the points not fooled
    /// yet, with ε, box and confirmation passes taken from the plan; `name` left empty.
    fn square(&self, si: usize, sp: &SquareParams, fooled: &mut [bool]) -> Result<StepOutput> {
        let (x, p) = (self.x, self.p);
        let rows: Vec<usize> = (0..x.nrows()).filter(|&i| !fooled[i]).collect();
        let xs = x.select(Axis(0), &rows);
        let ys: Vec<usize> = rows.iter().map(|&i| self.y[i]).collect();
        let is: Vec<u64> = rows.iter().map(|&i| self.ids[i]).collect();
        let q = SquareParams {
            eps: p.eps,
            bounds: p.bounds.clone(),
            seed: key(p.seed, &[tag("square"), si as u64]),
            confirm: p.confirm,
            ..sp.clone()
        };
        let o = if rows.is_empty() {
            None
        } else {
            Some(square(self.model, xs.view(), &ys, &is, &q)?)
        };
        let (adv, f, evals) = match o {
            Some(o) => (o.adv, o.fooled, o.evals),
            None => (xs, vec![], 0),
        };
        for (j, &i) in rows.iter().enumerate() {
            fooled[i] |= f[j];
        }
        Ok(StepOutput {
            name: String::new(),
            rows,
            adv,
            fooled: f,
            evals,
        })
    }

    /// One APGD step (parameters `p`, restart keys from `base`) on the points not fooled
    /// yet; `name` left empty.
    fn apgd(
        &self,
        p: &ApgdParams,
        loss: Loss<'_>,
        base: u64,
        init: Option<ArrayView2<f32>>,
        fooled: &mut [bool],
    ) -> Result<StepOutput> {
        let (model, x, y, ids) = (self.model, self.x, self.y, self.ids);
        let before = fooled.to_vec();
        let mut adv = x.to_owned();
        let evals = restarts_keyed(model, x, y, ids, p, loss, base, init, fooled, &mut adv)?;
        let rows: Vec<usize> = (0..x.nrows()).filter(|&i| !before[i]).collect();
        Ok(StepOutput {
            name: String::new(),
            adv: adv.select(Axis(0), &rows),
            fooled: rows.iter().map(|&i| fooled[i]).collect(),
            rows,
            evals,
        })
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod plan_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn targets_skip_the_label_and_sort_by_logit() {
        let z = array![[0.1f32, 3.0, 2.0, -1.0, 2.0], [5.0, 1.0, 4.0, 0.0, 3.0]];
        let t = top_targets(z.view(), &[1, 0], 3);
        assert_eq!(t[0], vec![2, 4, 0]);
        assert_eq!(t[1], vec![2, 4, 1]);
    }
}
