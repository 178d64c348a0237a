//! Adam.

use super::mlp::{Mlp, MlpGrads};

/// Adam with decoupled weight decay (AdamW when `weight_decay > 0`).
pub struct Adam {}

impl Adam {
    pub fn new(_lr: f64, _weight_decay: f64, _mlp: &Mlp<f32>) -> Self {
        todo!("nn helper")
    }
    pub fn step(&mut self, _mlp: &mut Mlp<f32>, _g: &MlpGrads<f32>) {
        todo!("nn helper")
    }
}
