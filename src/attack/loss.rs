//! Attack losses on logits (APGD.md §1): cross-entropy and untargeted DLR, with their
//! gradients w.r.t. the logits.

use super::LossKind;
use crate::Scalar;
use ndarray::{Array1, Array2, ArrayView2};

/// Per-sample loss and d(loss)/d(logits).
pub fn loss_and_grad<F: Scalar>(
    _kind: LossKind,
    _logits: ArrayView2<F>,
    _y: &[usize],
) -> (Array1<F>, Array2<F>) {
    todo!("attack helper")
}
