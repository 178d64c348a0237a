//! What a run reports about the smoothed classifier: its certificates on the clean points,
//! its PREDICT votes on the clean points and on each ε's worst-case adversarial examples,
//! the certified-accuracy curve over L2 radii, the implied L∞ guarantee (`ε√d ≤ R`) and the
//! consistency check (no point certified at radius R may be flipped inside that ball).

use super::{bounds, max_radius, Certificates, Params};
use ndarray::ArrayView2;

/// Radii of the certified-accuracy curve: 0 and [`CURVE_STEPS`] even steps up to the
/// largest radius the procedure can certify (a function of σ, n and α only, so every seed
/// of a configuration shares the grid).
pub const CURVE_STEPS: usize = 20;

/// Significance below which the consistency check fails: the violations would be too many
/// for certificates and predictions that each fail with probability ≤ α.
pub const CONSISTENCY_LEVEL: f64 = 1e-3;

/// PREDICT on the worst-case adversarial examples of one ε.
#[derive(Clone, Debug, PartialEq)]
pub struct SmoothedAtEps {
    pub eps: f64,
    /// Per point: the smoothed prediction, `None` when PREDICT abstained.
    pub pred: Vec<Option<usize>>,
    /// Points whose certificate covers their adversarial example (`‖δ‖₂ < R`).
    pub checked: usize,
    /// Sample ids of the checked points predicted (not abstaining) as another class than
    /// the certified one.
    pub violations: Vec<u64>,
}

impl SmoothedAtEps {
    /// PREDICT's votes `pred` on `adv` (the worst-case examples of the clean points
    /// `clean` at ε) against the certificates `cert`.
    pub fn new(
        eps: f64,
        clean: ArrayView2<f32>,
        adv: ArrayView2<f32>,
        ids: &[u64],
        cert: &Certificates,
        pred: Vec<Option<usize>>,
    ) -> Self {
        let mut checked = 0;
        let mut violations = vec![];
        for i in 0..clean.nrows() {
            let dist = clean
                .row(i)
                .iter()
                .zip(adv.row(i))
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum::<f64>()
                .sqrt();
            if cert.abstain[i] || dist >= cert.radius[i] {
                continue;
            }
            checked += 1;
            if matches!(pred[i], Some(c) if c != cert.class[i]) {
                violations.push(ids[i]);
            }
        }
        SmoothedAtEps {
            eps,
            pred,
            checked,
            violations,
        }
    }

    /// Fraction of points predicted (not abstaining) as their label: an empirical upper
    /// bound of the smoothed classifier's robust accuracy at ε.
    pub fn accuracy(&self, y: &[usize]) -> f64 {
        correct_fraction(&self.pred, y)
    }

    /// Fraction of points PREDICT abstained on.
    pub fn abstain_rate(&self) -> f64 {
        abstain_fraction(&self.pred)
    }

    /// P(at least this many violations) if each checked point failed independently with
    /// probability 2α (one certificate and one prediction, each wrong with prob. ≤ α).
    pub fn violation_pvalue(&self, alpha: f64) -> f64 {
        bounds::binomial_upper_tail(
            self.violations.len() as u64,
            self.checked as u64,
            (2.0 * alpha).min(1.0),
        )
    }

    /// The violations are consistent with the procedures' guarantees.
    pub fn consistent(&self, alpha: f64) -> bool {
        self.violations.is_empty() || self.violation_pvalue(alpha) >= CONSISTENCY_LEVEL
    }
}

/// Fraction of PREDICT votes `pred` equal to the labels `y` (abstentions count as wrong).
pub fn correct_fraction(pred: &[Option<usize>], y: &[usize]) -> f64 {
    let ok = pred.iter().zip(y).filter(|(p, &c)| **p == Some(c)).count();
    ok as f64 / y.len().max(1) as f64
}

/// Fraction of PREDICT votes that abstained.
pub fn abstain_fraction(pred: &[Option<usize>]) -> f64 {
    pred.iter().filter(|p| p.is_none()).count() as f64 / pred.len().max(1) as f64
}

/// Everything a run certified: parameters, the per-point certificates and predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct Certification {
    pub params: Params,
    /// Smoothing scale σ of the defence at t*.
    pub sigma: f64,
    /// Dimension d of the certified input (the hybrid feature vector).
    pub dim: usize,
    pub cert: Certificates,
    /// PREDICT on the clean points.
    pub clean_pred: Vec<Option<usize>>,
    /// PREDICT on the worst-case adversarial examples, ascending ε (ε > 0).
    pub at_eps: Vec<SmoothedAtEps>,
}

impl Certification {
    /// Fraction of points certified correct at L2 radius `r`: not abstaining, the certified
    /// class is the label, and `R ≥ r` (at r = 0: certified correct at all).
    pub fn certified_accuracy(&self, y: &[usize], r: f64) -> f64 {
        self.cert.certified_accuracy(y, r)
    }

    /// The implied L∞ guarantee: certified accuracy at radius `ε√d` (the L∞ ball of radius
    /// ε lies in the L2 ball of radius ε√d).
    pub fn certified_accuracy_linf(&self, y: &[usize], eps: f64) -> f64 {
        self.certified_accuracy(y, eps * (self.dim as f64).sqrt())
    }

    /// Average certified radius (ACR): the radius of each certified-correct point, 0 for
    /// the others, averaged over all points.
    pub fn average_radius(&self, y: &[usize]) -> f64 {
        let c = &self.cert;
        let s: f64 = (0..y.len())
            .filter(|&i| !c.abstain[i] && c.class[i] == y[i])
            .map(|i| c.radius[i])
            .sum();
        s / y.len().max(1) as f64
    }

    /// Fraction of points CERTIFY abstained on.
    pub fn certify_abstain_rate(&self) -> f64 {
        let n = self.cert.abstain.len().max(1);
        self.cert.abstain.iter().filter(|&&a| a).count() as f64 / n as f64
    }

    /// PREDICT's clean accuracy (abstentions count as wrong).
    pub fn smoothed_clean_accuracy(&self, y: &[usize]) -> f64 {
        correct_fraction(&self.clean_pred, y)
    }

    /// PREDICT's abstention rate on the clean points.
    pub fn smoothed_clean_abstain(&self) -> f64 {
        abstain_fraction(&self.clean_pred)
    }

    /// The curve's radii ([`CURVE_STEPS`] + 1 values from 0).
    pub fn curve_radii(&self) -> Vec<f64> {
        let top = max_radius(&self.params, self.sigma);
        (0..=CURVE_STEPS)
            .map(|j| top * j as f64 / CURVE_STEPS as f64)
            .collect()
    }

    /// `(radius, certified accuracy)` on [`Self::curve_radii`].
    pub fn curve(&self, y: &[usize]) -> Vec<(f64, f64)> {
        self.curve_radii()
            .into_iter()
            .map(|r| (r, self.certified_accuracy(y, r)))
            .collect()
    }
}
