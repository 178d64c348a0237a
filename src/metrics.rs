//! The nine classification metrics of the paper plus the confusion matrix.
//!
//! OWNER: attack helper (with sklearn-generated fixtures).

use ndarray::{Array2, ArrayView2};

/// Metric names in table order (also the `metric` column of `metrics.csv`).
pub const METRIC_NAMES: [&str; 9] = [
    "accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
    "balanced_accuracy",
    "roc_auc",
    "log_loss",
    "brier",
];

/// All metrics of one scenario.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub mcc: f64,
    pub balanced_accuracy: f64,
    pub roc_auc: f64,
    pub log_loss: f64,
    pub brier: f64,
    /// `confusion[[true, pred]]`.
    pub confusion: Array2<u64>,
}

impl Metrics {
    /// Values in [`METRIC_NAMES`] order.
    pub fn values(&self) -> [f64; 9] {
        [
            self.accuracy,
            self.precision,
            self.recall,
            self.f1,
            self.mcc,
            self.balanced_accuracy,
            self.roc_auc,
            self.log_loss,
            self.brier,
        ]
    }
}

/// Compute all metrics from labels and class probabilities (`n × classes`, rows sum to 1);
/// the prediction is the argmax of each row.
pub fn compute(_y: &[usize], _proba: ArrayView2<f64>) -> Metrics {
    todo!("attack helper")
}
