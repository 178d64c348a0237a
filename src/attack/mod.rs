//! Adversarial attacks: APGD-CE / APGD-DLR (L∞) per `docs/apgd.md`, the model
//! interface they attack, and the worst-case cascade (AutoAttack's `rand` version).
//!
//! What the pipeline uses:
//! - [`AttackModel`]: anything differentiable the attack can query; deterministic models
//!   ignore `draws`/`key`; stochastic ones (the defended pipeline) draw `draws` independent
//!   passes keyed by `(key, ids[i], draw)`.
//! - `loss::{ce, dlr}` and [`loss::loss_and_grad`] on logits, generic over `Scalar`.
//! - [`apgd::apgd`] runs one APGD attack; [`apgd::attack_suite`] the CE→DLR cascade.

pub mod apgd;
pub mod loss;
pub mod pixel;
pub mod plan;
pub mod square;

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

/// The per-point loss a model evaluation computes (and an attack maximises): the
/// untargeted losses of [`LossKind`], or the targeted DLR of APGD-T with one target class
/// per row (aligned with the labels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss<'a> {
    Ce,
    Dlr,
    /// `−(z_y − z_t) / (z_π1 − ½(z_π3 + z_π4) + 1e-12)`, `t` = the row's target.
    DlrTargeted(&'a [usize]),
}

impl From<LossKind> for Loss<'static> {
    fn from(k: LossKind) -> Self {
        match k {
            LossKind::Ce => Loss::Ce,
            LossKind::Dlr => Loss::Dlr,
        }
    }
}

impl Loss<'_> {
    /// A stable number for keying random streams.
    pub fn code(&self) -> u64 {
        match self {
            Loss::Ce => 0,
            Loss::Dlr => 1,
            Loss::DlrTargeted(_) => 2,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Loss::Ce => "apgd-ce",
            Loss::Dlr => "apgd-dlr",
            Loss::DlrTargeted(_) => "apgd-t",
        }
    }
    /// The targets of the rows selected by `rows`, each repeated `r` times (models that
    /// repeat rows per draw); the untargeted losses are returned as they are.
    pub fn targets_for(&self, rows: std::ops::Range<usize>, r: usize) -> Option<Vec<usize>> {
        match self {
            Loss::DlrTargeted(t) => Some(
                t[rows]
                    .iter()
                    .flat_map(|&c| std::iter::repeat_n(c, r))
                    .collect(),
            ),
            _ => None,
        }
    }
    /// `self` with the targets replaced by `t` when targeted.
    pub fn with_targets<'b>(&self, t: Option<&'b [usize]>) -> Loss<'b> {
        match (self, t) {
            (Loss::Ce, _) => Loss::Ce,
            (Loss::Dlr, _) => Loss::Dlr,
            (Loss::DlrTargeted(_), Some(t)) => Loss::DlrTargeted(t),
            (Loss::DlrTargeted(_), None) => panic!("Loss::with_targets: targets missing"),
        }
    }
}

/// The valid set besides the ε-ball (`docs/apgd.md` §14).
#[derive(Clone, Debug, PartialEq)]
pub enum BoxConstraint {
    /// Only the ε-ball.
    None,
    /// `[0,1]^d` (pixel space).
    Unit,
    /// Per-dimension `[lo, hi]` (e.g. the range seen on training features).
    Range { lo: Array1<f32>, hi: Array1<f32> },
}

impl BoxConstraint {
    /// Per-dimension feasible interval `[max(x−ε, lo), min(x+ε, hi)]` of every row of `x`,
    /// with the box widened to contain `x` (so the interval is never empty): the set every
    /// attack (APGD, Square) projects onto.
    pub fn feasible(&self, x: ArrayView2<f32>, eps: f32) -> (Array2<f32>, Array2<f32>) {
        let (mut lower, mut upper) = (x.to_owned(), x.to_owned());
        ndarray::Zip::from(lower.rows_mut())
            .and(upper.rows_mut())
            .par_for_each(|mut l, mut u| {
                for j in 0..l.len() {
                    let xv = l[j];
                    let (bl, bu) = match self {
                        BoxConstraint::None => (f32::NEG_INFINITY, f32::INFINITY),
                        BoxConstraint::Unit => (0.0, 1.0),
                        BoxConstraint::Range { lo, hi } => (lo[j], hi[j]),
                    };
                    l[j] = (xv - eps).max(bl.min(xv));
                    u[j] = (xv + eps).min(bu.max(xv));
                }
            });
        (lower, upper)
    }
}

/// One batched model evaluation.
#[derive(Clone, Debug)]
pub struct ModelEval {
    /// Per-sample attack loss of the **last** draw (`docs/apgd.md` Q1).
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
    /// with `draws` independent random passes (ignored by deterministic models). An error is
    /// a device failure (a CUDA model); it ends the attack and reaches the caller.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        x: ArrayView2<f32>,
        y: &[usize],
        ids: &[u64],
        loss: Loss<'_>,
        draws: usize,
        key: u64,
        want_grad: bool,
    ) -> crate::Result<ModelEval>;
    /// The CUDA device the model evaluates on, if any: APGD then keeps its per-sample state
    /// on that device too ([`apgd::cuda`]); `None` (the default) keeps it on the host.
    fn device(&self) -> Option<&crate::backend::cuda::CudaBackend> {
        None
    }
}
