//! AutoAttack `rand`-style cascade (`docs/apgd.md` §8.2) over untargeted APGD losses: one clean
//! check, then each loss in turn attacks only the points no earlier attack has broken
//! (pointwise worst case). A thin view of [`crate::attack::plan::run_plan`].

use super::ApgdParams;
use crate::attack::plan::{run_plan, Step};
use crate::attack::{AttackModel, LossKind};
use ndarray::{Array2, ArrayView2};

/// Result of [`attack_suite`].
#[derive(Clone, Debug)]
pub struct SuiteOutput {
    /// One point per input: the fooling point of the attack that broke it, else the first
    /// attack's candidate (its highest-loss iterate); the clean point where the model was
    /// wrong from the start (deterministic models).
    pub adv: Array2<f32>,
    /// Misclassified clean, or fooled by one of the attacks.
    pub fooled: Vec<bool>,
    /// The attack that broke the point (`None`: robust, or wrong already when clean).
    pub fooled_by: Vec<Option<LossKind>>,
    /// Result of the clean check (`true` everywhere on a stochastic model).
    pub clean_correct: Vec<bool>,
    /// Gradient evaluations over all attacks.
    pub grad_evals: u64,
}

/// Run APGD with each of `losses` in order (`p.loss` is ignored), every attack on the
/// points still robust after the previous ones. An error when `p` is invalid for the model
/// or a loss (DLR needs ≥ 3 classes), or when the model fails.
pub fn attack_suite<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    losses: &[LossKind],
    p: &ApgdParams,
) -> crate::Result<SuiteOutput> {
    let steps: Vec<Step> = losses.iter().map(|&l| Step::Apgd(l)).collect();
    let out = run_plan(model, x, y, ids, &steps, p)?;
    let mut adv = x.to_owned();
    let mut fooled_by = vec![None; x.nrows()];
    let mut set = vec![false; x.nrows()];
    for (s, &loss) in out.steps.iter().zip(losses) {
        for (j, &i) in s.rows.iter().enumerate() {
            if s.fooled[j] {
                fooled_by[i] = Some(loss);
                adv.row_mut(i).assign(&s.adv.row(j));
                set[i] = true;
            } else if !set[i] {
                adv.row_mut(i).assign(&s.adv.row(j));
                set[i] = true;
            }
        }
    }
    Ok(SuiteOutput {
        adv,
        fooled: out.fooled,
        fooled_by,
        clean_correct: out.clean_correct,
        grad_evals: out.evals,
    })
}
