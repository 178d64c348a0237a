//! The transfer protocol attacks every ε afresh: a point the base model breaks at a small ε
//! with an example that does not transfer is broken at a larger ε by the fresh attack
//! (the old protocol reused the stale small-ε example forever).

use super::*;
use crate::attack::apgd::tests_models::{blobs, ids, normal, Toy};
use crate::attack::Loss;
use crate::diffusion::model::softmax;
use ndarray::{Array1, Array2};

/// A deterministic "defence" scored as a plain linear model.
struct ToyScorer<'a>(&'a Toy);

impl Scorer for ToyScorer<'_> {
    fn repeats(&self) -> usize {
        1
    }
    fn score(&self, x: ArrayView2<f32>, ids: &[u64], _r: usize) -> Result<Array2<f64>> {
        let y = vec![0; x.nrows()];
        Ok(softmax(
            self.0
                .evaluate(x, &y, ids, Loss::Ce, 1, 0, false)?
                .logits
                .view(),
        ))
    }
}

fn pb(eps: f32) -> ApgdParams {
    ApgdParams {
        eps,
        n_iter: 30,
        loss: LossKind::Ce,
        eot: 1,
        restarts: 1,
        rho: 0.75,
        bounds: BoxConstraint::None,
        seed: 3,
        early_stop: false,
        confirm: 1,
    }
}

#[test]
fn transfer_is_attacked_afresh_at_every_eps() {
    let (x, y, base) = blobs(4, 10, 120, 21);
    // The "defence": the same class means, pulled 40 % towards their centroid, with a
    // different bias — similar enough that large-ε examples transfer, different enough
    // that small-ε ones often do not.
    // The "defence": the class means perturbed — similar enough that large-ε examples
    // transfer, different enough that small-ε ones often do not.
    let w2 = &base.w + &(normal(77, base.w.dim(), 0.08));
    let b2: Array1<f32> = w2.rows().into_iter().map(|m| -0.5 * m.dot(&m)).collect();
    let def_model = Toy::linear(w2, b2);
    let def = ToyScorer(&def_model);
    let bs = ToyScorer(&base);
    let id = ids(120);
    let all: Vec<usize> = (0..120).collect();
    let cb = score_all(&bs, &all, x.view(), &id).unwrap();
    let cd = score_all(&def, &all, x.view(), &id).unwrap();
    let (mut base_c, mut def_c) = (Worst::new(&y, &cb), Worst::new(&y, &cd));
    let steps = [Step::Apgd(LossKind::Ce), Step::Apgd(LossKind::Dlr)];
    let run_at = |eps: f32, base_c: &mut Worst, def_c: &mut Worst| {
        let mut base_f = Worst::new(&y, &cb);
        let mut def_f = Worst::new(&y, &cd);
        transfer_eps(
            &base,
            &steps,
            (x.view(), &y, &id),
            &pb(eps),
            (&bs, &mut [base_c, &mut base_f]),
            (&def, &mut [def_c, &mut def_f]),
        )
        .unwrap();
    };
    run_at(0.2, &mut base_c, &mut def_c);
    let small_base = base_c.broken0();
    let small_def = def_c.broken0();
    let stale: Vec<usize> = (0..120)
        .filter(|&i| small_base[i] && !small_def[i])
        .collect();
    assert!(
        stale.len() >= 3,
        "{} points broken on the base model without transferring",
        stale.len()
    );
    run_at(2.0, &mut base_c, &mut def_c);
    let big_def = def_c.broken0();
    let rescued = stale.iter().filter(|&&i| big_def[i]).count();
    assert_eq!(rescued, stale.len(), "stale small-ε examples were reused");
    assert!(
        def_c.repeat_accuracy()[0] <= 0.01,
        "{}",
        def_c.repeat_accuracy()[0]
    );
}
