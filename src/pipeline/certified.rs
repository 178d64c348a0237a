//! The run's certification (`certify.enabled`, feature threat model only): CERTIFY and
//! PREDICT on the clean points before the attacks, PREDICT on every ε's worst-case
//! adversarial examples after them, the consistency check, and the per-ε records a
//! checkpoint carries. The procedures are [`crate::certify`]'s on the CPU defence.

use super::evaluate::Ctx;
use super::Timings;
use crate::cache::Store;
use crate::certify::curve::{correct_fraction, Certification, SmoothedAtEps};
use crate::certify::{self, Certificates};
use crate::error::Result;
use crate::progress::log;
use crate::results::Check;
use crate::rng::{key, tag};
use ndarray::ArrayView2;

/// Certificates and clean PREDICT votes of the evaluated points.
pub(super) struct CleanCert {
    pub cert: Certificates,
    pub pred: Vec<Option<usize>>,
}

fn stream(cfg: &crate::config::JobConfig, what: &str, eps: f64) -> u64 {
    key(cfg.seed, &[tag("certify"), tag(what), eps.to_bits()])
}

/// CERTIFY and PREDICT on the clean points (timed as `certify`), when the job asks.
pub(super) fn clean(e: &Ctx<'_>, t: &mut Timings) -> Result<Option<CleanCert>> {
    let cfg = e.cfg;
    if !cfg.certify.enabled || cfg.attack.threat != crate::config::Threat::Feature {
        return Ok(None);
    }
    let p = cfg.certify.params();
    let def = e.def.def;
    t.time("certify", || {
        let cert = certify::certify(
            def,
            e.x,
            e.ids,
            &p,
            stream(cfg, "select", 0.0),
            stream(cfg, "estimate", 0.0),
        )?;
        let pred = certify::predict(def, e.x, e.ids, &p, stream(cfg, "predict", 0.0))?;
        let c = CleanCert { cert, pred };
        log(format!(
            "certify (n0 = {}, n = {}, α = {}, σ = {:.4}): certified accuracy at radius 0 {:.4}, smoothed clean accuracy {:.4}",
            p.n0,
            p.n,
            p.alpha,
            certify::NoisyClassifier::sigma(def),
            c.cert.certified_accuracy(e.y, 0.0),
            correct_fraction(&c.pred, e.y)
        ));
        Ok(c)
    })
    .map(Some)
}

/// PREDICT on the worst-case adversarial examples `adv` at ε > 0 (timed as
/// `certify_eps<ε>`), checked against the clean certificates.
pub(super) fn at_eps(
    e: &Ctx<'_>,
    c: &CleanCert,
    eps: f64,
    adv: ArrayView2<f32>,
    t: &mut Timings,
) -> Result<SmoothedAtEps> {
    let p = e.cfg.certify.params();
    t.time(&format!("certify_eps{eps}"), || {
        let pred = certify::predict(e.def.def, adv, e.ids, &p, stream(e.cfg, "predict", eps))?;
        let s = SmoothedAtEps::new(eps, e.x, adv, e.ids, &c.cert, pred);
        log(format!(
            "eps {eps}: smoothed classifier on the worst-case examples {:.4} (abstained {:.4}); certified at ε√d {:.4}; {} of {} covered points flipped",
            s.accuracy(e.y),
            s.abstain_rate(),
            c.cert.certified_accuracy(e.y, eps * (e.x.ncols() as f64).sqrt()),
            s.violations.len(),
            s.checked
        ));
        Ok(s)
    })
}

/// The run's certification and its consistency checks (one per ε > 0).
pub(super) fn finish(
    e: &Ctx<'_>,
    c: CleanCert,
    at_eps: Vec<SmoothedAtEps>,
) -> (Certification, Vec<Check>) {
    let alpha = e.cfg.certify.alpha;
    let checks = at_eps
        .iter()
        .map(|s| {
            Check::new(
                format!("certificate_consistency[eps={}]", s.eps),
                s.consistent(alpha),
                format!(
                    "{} of {} points certified at a radius covering their worst-case example are predicted as another class by the smoothed classifier (P = {:.3} under 2α = {}); ids {:?}",
                    s.violations.len(),
                    s.checked,
                    s.violation_pvalue(alpha),
                    2.0 * alpha,
                    &s.violations[..s.violations.len().min(10)]
                ),
            )
        })
        .collect();
    let cert = Certification {
        params: e.cfg.certify.params(),
        sigma: certify::NoisyClassifier::sigma(e.def.def),
        dim: e.x.ncols(),
        cert: c.cert,
        clean_pred: c.pred,
        at_eps,
    };
    (cert, checks)
}

fn pred_code(p: Option<usize>) -> f64 {
    p.map_or(-1.0, |c| c as f64)
}

fn pred_of(v: f64) -> Option<usize> {
    (v >= 0.0).then_some(v as usize)
}

/// Put the per-ε PREDICT records into a checkpoint store.
pub(super) fn save(st: &mut Store, records: &[SmoothedAtEps]) {
    for (i, s) in records.iter().enumerate() {
        let p = format!("smoothed{i:03}");
        st.vectors
            .insert(format!("{p}.num"), vec![s.eps, s.checked as f64]);
        st.vectors.insert(
            format!("{p}.pred"),
            s.pred.iter().map(|&v| pred_code(v)).collect(),
        );
        st.vectors.insert(
            format!("{p}.violations"),
            s.violations.iter().map(|&v| v as f64).collect(),
        );
    }
}

/// The per-ε PREDICT records of a checkpoint store.
pub(super) fn load(st: &Store) -> Result<Vec<SmoothedAtEps>> {
    let mut out = vec![];
    for i in 0.. {
        let p = format!("smoothed{i:03}");
        let Ok(num) = st.vector(&format!("{p}.num")) else {
            break;
        };
        out.push(SmoothedAtEps {
            eps: num[0],
            checked: num[1] as usize,
            pred: st
                .vector(&format!("{p}.pred"))?
                .iter()
                .map(|&v| pred_of(v))
                .collect(),
            violations: st
                .vector(&format!("{p}.violations"))?
                .iter()
                .map(|&v| v as u64)
                .collect(),
        });
    }
    Ok(out)
}
