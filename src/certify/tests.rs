//! Certificates against independent references: SciPy's Beta / binomial / normal values
//! (`tests/golden/certify/bounds.json`), the closed-form smoothed linear classifier, and the
//! defence's votes against its own R-pass evaluation.

use super::bounds::{binomial_test_half, clopper_pearson_lower};
use super::curve::{Certification, SmoothedAtEps};
use super::*;
use crate::special::{normal_cdf, normal_quantile};
use ndarray::{array, Array2};

fn golden() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/certify/bounds.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let tol = rel * want.abs().max(1e-300);
    assert!(
        (got - want).abs() <= tol || got == want,
        "{what}: got {got:e}, SciPy {want:e}"
    );
}

#[test]
fn clopper_pearson_matches_scipy_beta_quantiles() {
    let g = golden();
    let cases = g["clopper_pearson"].as_array().unwrap();
    assert!(cases.len() > 100);
    for c in cases {
        let (k, n, a) = (
            c["k"].as_u64().unwrap(),
            c["n"].as_u64().unwrap(),
            c["alpha"].as_f64().unwrap(),
        );
        let got = clopper_pearson_lower(k, n, a);
        close(
            got,
            c["lower"].as_f64().unwrap(),
            1e-9,
            &format!("CP({k}, {n}, {a})"),
        );
    }
}

#[test]
fn binomial_test_and_normal_functions_match_scipy() {
    let g = golden();
    for c in g["binom_p"].as_array().unwrap() {
        let (k, n) = (c["k"].as_u64().unwrap(), c["n"].as_u64().unwrap());
        close(
            binomial_test_half(k, n),
            c["p"].as_f64().unwrap(),
            1e-9,
            &format!("binomtest({k}, {n})"),
        );
    }
    for c in g["normal"]["cdf"].as_array().unwrap() {
        let x = c["x"].as_f64().unwrap();
        close(
            normal_cdf(x),
            c["v"].as_f64().unwrap(),
            1e-12,
            &format!("Φ({x})"),
        );
    }
    for c in g["normal"]["ppf"].as_array().unwrap() {
        let p = c["p"].as_f64().unwrap();
        close(
            normal_quantile(p),
            c["v"].as_f64().unwrap(),
            1e-11,
            &format!("Φ⁻¹({p})"),
        );
    }
}

/// Two classes, `class 1 ⇔ w·z + b > 0`, under z = x + σn: the smoothed classifier is the
/// base one, `P(top) = Φ(|w·x + b| / (σ‖w‖))` and the exact certified radius is the
/// distance to the hyperplane, `|w·x + b| / ‖w‖` (Cohen et al., Example 1).
struct Linear {
    w: Vec<f64>,
    b: f64,
    sigma: f64,
}

impl Linear {
    fn margin(&self, x: &[f64]) -> f64 {
        let norm = self.w.iter().map(|v| v * v).sum::<f64>().sqrt();
        (self.w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>() + self.b) / norm
    }
}

impl NoisyClassifier for Linear {
    fn num_classes(&self) -> usize {
        2
    }
    fn sigma(&self) -> f64 {
        self.sigma
    }
    fn counts(
        &self,
        x: ArrayView2<f32>,
        ids: &[u64],
        key: u64,
        draws: Range<usize>,
    ) -> Result<Array2<u32>> {
        use rand::Rng as _;
        let mut out = Array2::zeros((x.nrows(), 2));
        for i in 0..x.nrows() {
            for e in draws.clone() {
                let mut rng = crate::rng::stream(key, &[ids[i], e as u64]);
                let s: f64 = self.b
                    + x.row(i)
                        .iter()
                        .zip(&self.w)
                        .map(|(&xv, &w)| {
                            let n: f64 = rng.sample(rand_distr::StandardNormal);
                            w * (f64::from(xv) + self.sigma * n)
                        })
                        .sum::<f64>();
                out[[i, usize::from(s > 0.0)]] += 1;
            }
        }
        Ok(out)
    }
}

/// Points at signed distances `m` from the hyperplane of `lin` (along its normal).
fn points_at(lin: &Linear, margins: &[f64]) -> Array2<f32> {
    let norm = lin.w.iter().map(|v| v * v).sum::<f64>().sqrt();
    Array2::from_shape_fn((margins.len(), lin.w.len()), |(i, j)| {
        // x = (m − b/‖w‖)·w/‖w‖ has w·x + b = m‖w‖.
        ((margins[i] - lin.b / norm) * lin.w[j] / norm) as f32
    })
}

#[test]
fn linear_classifier_radius_is_below_and_close_to_the_exact_one() {
    let lin = Linear {
        w: vec![0.6, -1.2, 0.9],
        b: 0.25,
        sigma: 0.5,
    };
    // Exact radii |m| from 0.2σ to 3σ on both sides, and one point on the boundary.
    let margins = [0.1, -0.2, 0.35, -0.5, 0.75, -1.0, 1.25, -1.5, 0.0];
    let x = points_at(&lin, &margins);
    let ids: Vec<u64> = (0..margins.len() as u64).collect();
    let p = Params {
        n0: 100,
        n: 100_000,
        alpha: 0.001,
    };
    let c = certify(&lin, x.view(), &ids, &p, 1, 2).unwrap();
    for (i, &m) in margins.iter().enumerate() {
        let exact = lin.margin(&x.row(i).mapv(f64::from).to_vec()).abs();
        assert!((exact - m.abs()).abs() < 1e-5, "point construction");
        if m == 0.0 {
            assert!(
                c.abstain[i] && c.radius[i] == 0.0,
                "boundary point must abstain"
            );
            continue;
        }
        assert!(!c.abstain[i], "point {i} (margin {m}) abstained");
        assert_eq!(c.class[i], usize::from(m > 0.0), "point {i}: wrong class");
        assert!(
            c.radius[i] <= exact,
            "point {i}: certified {} > exact {exact}",
            c.radius[i]
        );
        let p_exact = normal_cdf(exact / lin.sigma);
        assert!(c.p_lower[i] <= p_exact && c.p_lower[i] > p_exact - 0.01);
        if exact >= 0.2 {
            assert!(
                c.radius[i] >= 0.95 * exact,
                "point {i}: certified {} ≪ exact {exact}",
                c.radius[i]
            );
        }
    }
    // The grid's top radius: all n votes.
    let top = max_radius(&p, lin.sigma);
    assert!((top - lin.sigma * normal_quantile(0.001f64.powf(1e-5))).abs() < 1e-12);
}

#[test]
fn predict_returns_the_side_far_from_the_boundary_and_abstains_on_it() {
    let lin = Linear {
        w: vec![1.0, 1.0],
        b: 0.0,
        sigma: 1.0,
    };
    let margins = [2.0, -2.0, 0.0, 0.0, 0.0];
    let x = points_at(&lin, &margins);
    let p = Params {
        n0: 10,
        n: 2_000,
        alpha: 0.001,
    };
    let pred = predict(&lin, x.view(), &[1, 2, 3, 4, 5], &p, 9).unwrap();
    assert_eq!(&pred[..2], &[Some(1), Some(0)]);
    assert_eq!(
        &pred[2..],
        &[None, None, None],
        "p = ½ must abstain (wrong w.p. ≤ α)"
    );
}

#[test]
fn defence_votes_are_its_single_passes() {
    use crate::config::Prediction;
    use crate::diffusion::{model::Defended, time_embedding, Schedule};
    use crate::nn::mlp::{Activation, Mlp};
    use crate::rng::stream;
    let (d, tdim, t_star, k) = (6, 4, 5, 3);
    let sched = Schedule::linear(30, 1e-3, 0.1);
    let emb = time_embedding::<f32>(30, tdim);
    let den = Mlp::<f32>::new(&[d + tdim, 9, d], Activation::Silu, &mut stream(11, &[]));
    let clf = Mlp::<f32>::new(&[d, 7, k], Activation::Relu, &mut stream(12, &[]));
    let def = Defended::new(&den, &clf, &sched, &emb, t_star, Prediction::Noise);
    let x = Array2::from_shape_fn((4, d), |(i, j)| ((i * 7 + j * 3) % 5) as f32 * 0.4 - 0.8);
    let ids = [5u64, 17, 2, 40];
    let passes = 300; // more than one task of passes per point
    let (_, single) = def.predict_proba(x.view(), &ids, passes, 77);
    let votes = def.vote_counts(x.view(), &ids, 77, 0..passes);
    let split = &def.vote_counts(x.view(), &ids, 77, 0..123)
        + &def.vote_counts(x.view(), &ids, 77, 123..passes);
    assert_eq!(
        votes, split,
        "votes must not depend on how the draws are split"
    );
    for i in 0..ids.len() {
        let mut hist = vec![0u32; k];
        for e in 0..passes {
            hist[single[[i, e]] as usize] += 1;
        }
        assert_eq!(votes.row(i).to_vec(), hist, "point {i}");
    }
    // σ of the first step: √(1 − ᾱ)/√ᾱ at t*.
    let ab = sched.alpha_bar[t_star];
    assert!((def.smoothing_sigma() - ((1.0 - ab) / ab).sqrt()).abs() < 1e-6);
}

#[test]
fn consistency_counts_only_covered_points_and_flags_a_flip() {
    let cert = Certificates {
        class: vec![0, 1, 1, 0],
        p_lower: vec![0.9, 0.9, 0.4, 0.9],
        radius: vec![1.0, 1.0, 0.0, 0.1],
        abstain: vec![false, false, true, false],
    };
    let clean = array![[0.0f32, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]];
    // ‖δ‖₂ = 0.5 for every point: covered by radius 1 (points 0, 1), not by 0.1 (point 3).
    let adv = array![[0.3f32, 0.4], [0.3, 0.4], [0.3, 0.4], [0.3, 0.4]];
    let pred = vec![Some(1), None, Some(0), Some(1)];
    let s = SmoothedAtEps::new(
        0.5,
        clean.view(),
        adv.view(),
        &[10, 11, 12, 13],
        &cert,
        pred,
    );
    assert_eq!((s.checked, s.violations.clone()), (2, vec![10]));
    assert!(
        !s.consistent(1e-4),
        "1 violation in 2 at 2α = 2e-4 is too many"
    );
    assert!(s.consistent(0.25));
    assert_eq!(s.accuracy(&[1, 1, 0, 0]), 0.5);
    let full = Certification {
        params: Params {
            n0: 1,
            n: 10,
            alpha: 0.01,
        },
        sigma: 0.5,
        dim: 4,
        cert,
        clean_pred: vec![Some(0), Some(1), None, Some(1)],
        at_eps: vec![s],
    };
    let y = [0, 1, 1, 0];
    assert_eq!(full.certified_accuracy(&y, 0.0), 0.75);
    assert_eq!(full.certified_accuracy(&y, 0.5), 0.5);
    assert_eq!(full.certified_accuracy_linf(&y, 0.25), 0.5); // radius 0.25·2 = 0.5
    assert!((full.average_radius(&y) - 2.1 / 4.0).abs() < 1e-12);
    assert_eq!(full.smoothed_clean_accuracy(&y), 0.5);
    assert_eq!(full.curve_radii().len(), curve::CURVE_STEPS + 1);
}
