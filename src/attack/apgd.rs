//! APGD (Croce & Hein 2020) for L∞, exactly per `shared/specs/APGD.md`.

use super::{AttackModel, BoxConstraint, LossKind};
use ndarray::{Array2, ArrayView2};

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
}

/// Result of an attack on a batch.
#[derive(Clone, Debug)]
pub struct ApgdOutput {
    /// Adversarial points (the clean point where the attack failed).
    pub adv: Array2<f32>,
    /// Whether the attack fooled the model on that point.
    pub fooled: Vec<bool>,
    /// Model gradient evaluations spent (for the cost report).
    pub grad_evals: u64,
}

/// Run APGD on `x` (labels `y`, sample ids `ids`).
pub fn apgd<M: AttackModel + ?Sized>(
    _model: &M,
    _x: ArrayView2<f32>,
    _y: &[usize],
    _ids: &[u64],
    _p: &ApgdParams,
) -> ApgdOutput {
    todo!("attack helper")
}

/// Result of the CE→DLR cascade.
#[derive(Clone, Debug)]
pub struct SuiteOutput {
    pub adv: Array2<f32>,
    pub fooled: Vec<bool>,
    pub fooled_by: Vec<Option<LossKind>>,
    pub grad_evals: u64,
}

/// AutoAttack `rand`-style cascade (worst case per sample).
pub fn attack_suite<M: AttackModel + ?Sized>(
    _model: &M,
    _x: ArrayView2<f32>,
    _y: &[usize],
    _ids: &[u64],
    _losses: &[LossKind],
    _p: &ApgdParams,
) -> SuiteOutput {
    todo!("attack helper")
}
