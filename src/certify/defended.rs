//! The CPU defence as the base classifier of randomised smoothing: one purification pass
//! and the classifier's argmax per draw ([`Defended::vote_counts`]).

use super::NoisyClassifier;
use crate::attack::AttackModel;
use crate::diffusion::model::Defended;
use crate::error::Result;
use ndarray::{Array2, ArrayView2};
use std::ops::Range;

impl NoisyClassifier for Defended {
    fn num_classes(&self) -> usize {
        AttackModel::num_classes(self)
    }
    fn sigma(&self) -> f64 {
        self.smoothing_sigma()
    }
    fn counts(
        &self,
        x: ArrayView2<f32>,
        ids: &[u64],
        key: u64,
        draws: Range<usize>,
    ) -> Result<Array2<u32>> {
        Ok(self.vote_counts(x, ids, key, draws))
    }
}
