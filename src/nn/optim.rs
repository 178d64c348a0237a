//! Adam with bias correction and decoupled weight decay (AdamW when `weight_decay > 0`),
//! β = (0.9, 0.999), ε = 1e-8. [`AdamCore`] works on any list of flat parameter tensors;
//! [`Adam`] wraps it for [`Mlp`]s, and the CNN uses the core directly.

use super::mlp::{Mlp, MlpGrads};

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// Adam state for a fixed list of parameter tensors, each seen as a flat `f32` slice.
#[derive(Clone, Debug)]
pub struct AdamCore {
    pub lr: f64,
    pub weight_decay: f64,
    t: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl AdamCore {
    /// State for tensors of the given lengths.
    pub fn new(lr: f64, weight_decay: f64, lens: &[usize]) -> Self {
        AdamCore {
            lr,
            weight_decay,
            t: 0,
            m: lens.iter().map(|&n| vec![0.0; n]).collect(),
            v: lens.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// Number of steps taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One update of every tensor; `params[i]` and `grads[i]` must have the lengths given to
    /// [`AdamCore::new`] (panics otherwise: a programming error, not a user error).
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) {
        assert_eq!(params.len(), self.m.len(), "Adam: tensor count changed");
        assert_eq!(grads.len(), self.m.len(), "Adam: gradient count mismatch");
        self.t += 1;
        let t = self.t as i32;
        let bc1 = 1.0 - BETA1.powi(t);
        let bc2 = 1.0 - BETA2.powi(t);
        // Fold the bias corrections into the step size and epsilon:
        // p -= lr/bc1 · m / (√v/√bc2 + ε)  ⇔  p -= (lr·√bc2/bc1) · m / (√v + ε·√bc2).
        let step = (self.lr * bc2.sqrt() / bc1) as f32;
        let eps = (EPS * bc2.sqrt()) as f32;
        let decay = (1.0 - self.lr * self.weight_decay) as f32;
        let (b1, b2) = (BETA1 as f32, BETA2 as f32);
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            assert_eq!(p.len(), m.len(), "Adam: tensor {i} changed length");
            assert_eq!(g.len(), m.len(), "Adam: gradient {i} has the wrong length");
            let apply_decay = self.weight_decay > 0.0;
            for (((pj, &gj), mj), vj) in p.iter_mut().zip(g.iter()).zip(m.iter_mut()).zip(v) {
                *mj = b1 * *mj + (1.0 - b1) * gj;
                *vj = b2 * *vj + (1.0 - b2) * gj * gj;
                if apply_decay {
                    *pj *= decay;
                }
                *pj -= step * *mj / (vj.sqrt() + eps);
            }
        }
    }
}

/// Adam with decoupled weight decay (AdamW when `weight_decay > 0`) for an [`Mlp`].
#[derive(Clone, Debug)]
pub struct Adam {
    core: AdamCore,
}

impl Adam {
    pub fn new(lr: f64, weight_decay: f64, mlp: &Mlp<f32>) -> Self {
        let lens: Vec<usize> = mlp
            .layers
            .iter()
            .flat_map(|l| [l.w.len(), l.b.len()])
            .collect();
        Adam {
            core: AdamCore::new(lr, weight_decay, &lens),
        }
    }

    pub fn step(&mut self, mlp: &mut Mlp<f32>, g: &MlpGrads<f32>) {
        let mut params: Vec<&mut [f32]> = Vec::with_capacity(2 * mlp.layers.len());
        for l in mlp.layers.iter_mut() {
            params.push(l.w.as_slice_mut().expect("standard layout weights"));
            params.push(l.b.as_slice_mut().expect("contiguous bias"));
        }
        let mut grads: Vec<&[f32]> = Vec::with_capacity(params.len());
        for (w, b) in g.w.iter().zip(&g.b) {
            grads.push(w.as_slice().expect("standard layout gradient"));
            grads.push(b.as_slice().expect("contiguous gradient"));
        }
        self.core.step(&mut params, &grads);
    }

    /// Current learning rate.
    pub fn lr(&self) -> f64 {
        self.core.lr
    }
    /// Change the learning rate (schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.core.lr = lr;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference Adam written literally from the paper's update rule.
    fn reference(p0: f64, grads: &[f64], lr: f64, wd: f64) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (k, &g) in grads.iter().enumerate() {
            let t = (k + 1) as i32;
            m = BETA1 * m + (1.0 - BETA1) * g;
            v = BETA2 * v + (1.0 - BETA2) * g * g;
            let mh = m / (1.0 - BETA1.powi(t));
            let vh = v / (1.0 - BETA2.powi(t));
            p -= lr * wd * p;
            p -= lr * mh / (vh.sqrt() + EPS);
        }
        p
    }

    #[test]
    fn matches_reference_update() {
        let grads = [0.5, -1.0, 0.25, 2.0, 0.0, -0.3];
        for wd in [0.0, 0.1] {
            let mut core = AdamCore::new(0.01, wd, &[1]);
            let mut p = [1.5f32];
            for &g in &grads {
                core.step(&mut [&mut p[..]], &[&[g as f32][..]]);
            }
            let r = reference(1.5, &grads, 0.01, wd);
            assert!((p[0] as f64 - r).abs() < 1e-5, "adam {} vs ref {r}", p[0]);
        }
    }
}
