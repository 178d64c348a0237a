//! AutoAttack `rand`-style cascade (APGD.md §8.2): one clean check, then each loss in turn
//! attacks only the points no earlier attack has broken (pointwise worst case).

use super::{check_inputs, clean_check, restarts, ApgdParams};
use crate::attack::{AttackModel, LossKind};
use ndarray::{Array2, ArrayView2};

/// Result of [`attack_suite`].
#[derive(Clone, Debug)]
pub struct SuiteOutput {
    /// Adversarial points (clean point where every attack failed or the point was
    /// misclassified from the start).
    pub adv: Array2<f32>,
    /// Misclassified clean, or fooled by one of the attacks.
    pub fooled: Vec<bool>,
    /// The attack that broke the point (`None`: robust, or wrong already when clean).
    pub fooled_by: Vec<Option<LossKind>>,
    /// Result of the clean check (`draws = eot` averaged prediction).
    pub clean_correct: Vec<bool>,
    /// Gradient evaluations over all attacks.
    pub grad_evals: u64,
}

/// Run APGD with each of `losses` in order (`p.loss` is ignored), every attack on the
/// points still robust after the previous ones. Panics with the validation message if
/// `p` is invalid for the model or a loss (DLR needs ≥ 3 classes).
pub fn attack_suite<M: AttackModel + ?Sized>(
    model: &M,
    x: ArrayView2<f32>,
    y: &[usize],
    ids: &[u64],
    losses: &[LossKind],
    p: &ApgdParams,
) -> SuiteOutput {
    check_inputs(model, x, y, ids, p, losses);
    let clean_correct = clean_check(model, x, y, ids, p);
    let mut fooled: Vec<bool> = clean_correct.iter().map(|&c| !c).collect();
    let mut fooled_by = vec![None; x.nrows()];
    let mut adv = x.to_owned();
    let mut grad_evals = 0;
    if p.eps > 0.0 {
        for &loss in losses {
            let before = fooled.clone();
            grad_evals += restarts(model, x, y, ids, p, loss, None, &mut fooled, &mut adv);
            for (i, by) in fooled_by.iter_mut().enumerate() {
                if fooled[i] && !before[i] {
                    *by = Some(loss);
                }
            }
        }
    }
    SuiteOutput {
        adv,
        fooled,
        fooled_by,
        clean_correct,
        grad_evals,
    }
}
