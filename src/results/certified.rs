//! The certification of a run in its result files: the `/certify` group of `result.h5`, the
//! tidy `certify.csv` (one value per metric and radius, aggregated across seeds by
//! `diffnmf aggregate`) and its Markdown section of `tables.md`. Every heading says that the
//! certificate is the smoothed majority-vote classifier's, not the R-pass average's.

use super::h5::{attr, attr_str, ds};
use super::{Protocol, RunResult, Scenario};
use crate::certify::curve::Certification;
use hdf5::Group;
use ndarray::Array1;

/// Header of `certify.csv`.
pub const CSV_HEADER: &str = "metric,unit,at,value";

/// What a certificate is for, written beside every certified number.
pub const SCOPE: &str = "certificate of the smoothed majority-vote classifier g (Cohen et al. 2019), not of the R-pass probability average of the other tables";

/// One tidy value: `metric` at `at` in `unit` (`l2` radius, `linf` ε, or `none`).
#[derive(Clone, Debug, PartialEq)]
pub struct CertRow {
    pub metric: &'static str,
    pub unit: &'static str,
    pub at: f64,
    pub value: f64,
}

fn one(metric: &'static str, value: f64) -> CertRow {
    CertRow {
        metric,
        unit: "none",
        at: 0.0,
        value,
    }
}

/// The tidy rows of a certification with labels `y`.
pub fn rows(c: &Certification, y: &[usize]) -> Vec<CertRow> {
    let mut out = vec![
        one("sigma", c.sigma),
        one("smoothed_clean_accuracy", c.smoothed_clean_accuracy(y)),
        one("smoothed_clean_abstain", c.smoothed_clean_abstain()),
        one("certify_abstain", c.certify_abstain_rate()),
        one("average_certified_radius", c.average_radius(y)),
    ];
    for (r, a) in c.curve(y) {
        out.push(CertRow {
            metric: "certified_accuracy",
            unit: "l2",
            at: r,
            value: a,
        });
    }
    for s in &c.at_eps {
        let at = |metric, value| CertRow {
            metric,
            unit: "linf",
            at: s.eps,
            value,
        };
        out.push(at(
            "certified_accuracy_linf",
            c.certified_accuracy_linf(y, s.eps),
        ));
        out.push(at("smoothed_adversarial_accuracy", s.accuracy(y)));
        out.push(at("smoothed_adversarial_abstain", s.abstain_rate()));
        out.push(at("consistency_checked", s.checked as f64));
        out.push(at("consistency_violations", s.violations.len() as f64));
    }
    out
}

/// `certify.csv` of a certified run.
pub fn csv(r: &RunResult) -> Option<String> {
    let c = r.certification.as_ref()?;
    let mut s = format!("{CSV_HEADER}\n");
    for row in rows(c, &r.label_indices()) {
        s.push_str(&format!(
            "{},{},{},{}\n",
            row.metric, row.unit, row.at, row.value
        ));
    }
    Some(s)
}

fn code(p: Option<usize>) -> i64 {
    p.map_or(-1, |c| c as i64)
}

/// `/certify` (schema in `docs/results.md`).
pub(crate) fn write_h5(g: &Group, c: &Certification, y: &[usize]) -> hdf5::Result<()> {
    attr(g, "n0", c.params.n0 as u64)?;
    attr(g, "n", c.params.n as u64)?;
    attr(g, "alpha", c.params.alpha)?;
    attr(g, "sigma", c.sigma)?;
    attr(g, "dim", c.dim as u64)?;
    attr_str(g, "scope", SCOPE)?;
    let k = &c.cert;
    ds(
        g,
        "class",
        &Array1::from_iter(k.class.iter().map(|&v| v as i64)),
    )?;
    ds(g, "p_lower", &Array1::from(k.p_lower.clone()))?;
    ds(g, "radius", &Array1::from(k.radius.clone()))?;
    ds(
        g,
        "abstain",
        &Array1::from_iter(k.abstain.iter().map(|&a| u8::from(a))),
    )?;
    ds(
        g,
        "clean_pred",
        &Array1::from_iter(c.clean_pred.iter().map(|&p| code(p))),
    )?;
    let (radii, acc): (Vec<f64>, Vec<f64>) = c.curve(y).into_iter().unzip();
    ds(g, "curve_radius", &Array1::from(radii))?;
    ds(g, "curve_accuracy", &Array1::from(acc))?;
    let eps = g.create_group("eps")?;
    for s in &c.at_eps {
        let e = eps.create_group(&format!("eps{}", s.eps))?;
        attr(&e, "eps", s.eps)?;
        attr(&e, "checked", s.checked as u64)?;
        ds(
            &e,
            "pred",
            &Array1::from_iter(s.pred.iter().map(|&p| code(p))),
        )?;
        ds(&e, "violation_ids", &Array1::from(s.violations.clone()))?;
    }
    Ok(())
}

fn accuracy_of(r: &RunResult, scenario: Scenario, protocol: Protocol, eps: f64) -> String {
    r.scenarios
        .iter()
        .find(|s| s.scenario == scenario && s.protocol == protocol && s.eps == eps)
        .map_or("–".into(), |s| format!("{:.4}", s.metrics.accuracy))
}

/// The Markdown section of `tables.md` (empty when the run did not certify).
pub fn markdown(r: &RunResult) -> String {
    let Some(c) = &r.certification else {
        return String::new();
    };
    let y = r.label_indices();
    let p = &c.params;
    let mut out = format!(
        "\n### {} — certified L2 robustness of the smoothed classifier (n₀ = {}, n = {}, α = {}, σ = {:.4}, d = {})\n\n_{SCOPE}._\n\n",
        r.job_name, p.n0, p.n, p.alpha, c.sigma, c.dim
    );
    out.push_str(&format!(
        "Clean accuracy: smoothed g (PREDICT, abstentions count as wrong) {:.4}, abstained {:.4}; R-pass defence (Clean_Def) {}. Certified correct at radius 0: {:.4} (CERTIFY abstained on {:.4}); average certified radius {:.4}.\n\n",
        c.smoothed_clean_accuracy(&y),
        c.smoothed_clean_abstain(),
        accuracy_of(r, Scenario::CleanDef, Protocol::None, 0.0),
        c.certified_accuracy(&y, 0.0),
        c.certify_abstain_rate(),
        c.average_radius(&y)
    ));
    out.push_str("| L2 radius (z-scored feature units) | certified accuracy of g |\n|---|---|\n");
    for (rad, a) in c.curve(&y) {
        out.push_str(&format!("| {rad:.4} | {a:.4} |\n"));
    }
    if c.at_eps.is_empty() {
        return out;
    }
    out.push_str(&format!(
        "\n**Sandwich at the attack budgets** (L∞ ε in z-scored feature units; the L∞ ball lies in the L2 ball of radius ε√d, d = {}): certified ≤ true robust accuracy of g ≤ g on the worst-case examples.\n\n| ε (L∞) | ε√d (L2) | certified accuracy of g (lower bound) | g on the worst-case examples (upper bound) | g abstained | Robust_Def worst case (R-pass average) | covered / flipped |\n|---|---|---|---|---|---|---|\n",
        c.dim
    ));
    for s in &c.at_eps {
        out.push_str(&format!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} / {} |\n",
            s.eps,
            s.eps * (c.dim as f64).sqrt(),
            c.certified_accuracy_linf(&y, s.eps),
            s.accuracy(&y),
            s.abstain_rate(),
            accuracy_of(r, Scenario::RobustDef, Protocol::Worst, s.eps),
            s.checked,
            s.violations.len()
        ));
    }
    out
}
