//! Adversarial attacks: APGD-CE / APGD-DLR (L∞) per `shared/specs/APGD.md`, the model
//! interface they attack, and the worst-case cascade (AutoAttack's `rand` version).
//!
//! OWNER: attack helper. Contract used by the pipeline (keep these names/signatures):
//! - [`AttackModel`]: anything differentiable the attack can query; deterministic models
//!   ignore `draws`/`key`; stochastic ones (the defended pipeline) draw `draws` independent
//!   passes keyed by `(key, ids[i], draw)`.
//! - `loss::{ce, dlr}` and [`loss::loss_and_grad`] on logits, generic over `Scalar`.
//! - [`apgd::apgd`] runs one APGD attack; [`apgd::attack_suite`] the CE→DLR cascade.

pub mod apgd;
pub mod loss;

use ndarray::{Array1, Array2, ArrayView2};

/// Attack loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    Ce,
    Dlr,
}

impl LossKind {
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Ce => "apgd-ce",
            LossKind::Dlr => "apgd-dlr",
        }
    }
}

/// The valid set besides the ε-ball (APGD.md §14).
#[derive(Clone, Debug, PartialEq)]
pub enum BoxConstraint {
    /// Only the ε-ball.
    None,
    /// `[0,1]^d` (pixel space).
    Unit,
    /// Per-dimension `[lo, hi]` (e.g. the range seen on training features).
    Range { lo: Array1<f32>, hi: Array1<f32> },
}

/// One batched model evaluation.
#[derive(Clone, Debug)]
pub struct ModelEval {
    /// Per-sample attack loss of the **last** draw (APGD.md Q1).
    pub loss: Array1<f32>,
    /// Logits of the last draw.
    pub logits: Array2<f32>,
    /// Prediction from the probabilities averaged over all draws (the defended model's
    /// decision rule; equals argmax of `logits` for deterministic models).
    pub pred: Vec<usize>,
    /// Input gradient of the loss averaged over draws (when requested).
    pub grad: Option<Array2<f32>>,
}

/// A classifier the attacks can query, on batches of row vectors.
pub trait AttackModel: Sync {
    fn num_classes(&self) -> usize;
    /// Whether repeated evaluations with different keys differ.
    fn stochastic(&self) -> bool;
    /// Evaluate `x` (rows = points, `ids` = stable sample ids used to key randomness)
    /// with `draws` independent random passes (ignored by deterministic models).
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: LossKind,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> ModelEval;
}
