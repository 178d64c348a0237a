//! Rank-selection objectives: the validation accuracy of one scenario (optionally at an ε
//! under a protocol), or a weighted mix of such terms.

use crate::config;
use crate::error::{Error, Result};
use crate::results::{Protocol, Scenario, ScenarioResult};

/// One scenario's validation accuracy.
#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    pub scenario: Scenario,
    pub protocol: Protocol,
    /// ε for robust scenarios (0 for clean ones).
    pub eps: f64,
}

/// `Σ weight · term` (a single term has weight 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Objective {
    pub terms: Vec<(f64, Term)>,
    /// The text it was parsed from.
    pub spec: String,
}

fn bad(spec: &str, msg: &str) -> Error {
    Error::param(
        "--objective",
        format!(
            "`{spec}`: {msg}; expected clean_def, clean_base, robust_base@EPS, \
             robust_def@EPS (the per-sample worst case), robust_def_transfer@EPS, \
             robust_def_adaptive@EPS, or weighted:W*TERM+W*TERM \
             (e.g. weighted:0.5*clean_def+0.5*robust_def@0.25)"
        ),
    )
}

fn parse_term(spec: &str, t: &str) -> Result<Term> {
    let (name, eps) = match t.split_once('@') {
        Some((n, e)) => {
            let eps: f64 = e
                .trim()
                .parse()
                .map_err(|_| bad(spec, &format!("ε `{e}` is not a number")))?;
            if !(eps.is_finite() && eps >= 0.0) {
                return Err(bad(spec, "ε must be finite and ≥ 0"));
            }
            (n.trim(), Some(eps))
        }
        None => (t.trim(), None),
    };
    let (scenario, protocol) = match name {
        "clean_base" => (Scenario::CleanBase, Protocol::None),
        "clean_def" => (Scenario::CleanDef, Protocol::None),
        "robust_base" => (Scenario::RobustBase, Protocol::None),
        "robust_def" | "robust_def_worst" => (Scenario::RobustDef, Protocol::Worst),
        "robust_def_transfer" => (Scenario::RobustDef, Protocol::Transfer),
        "robust_def_adaptive" => (Scenario::RobustDef, Protocol::Adaptive),
        _ => return Err(bad(spec, &format!("unknown term `{name}`"))),
    };
    let robust = scenario.is_robust();
    match (robust, eps) {
        (true, None) => Err(bad(spec, &format!("`{name}` needs an ε, e.g. {name}@0.25"))),
        (false, Some(_)) => Err(bad(spec, &format!("`{name}` takes no ε"))),
        _ => Ok(Term {
            scenario,
            protocol,
            eps: eps.unwrap_or(0.0),
        }),
    }
}

impl Objective {
    /// Parse `--objective`.
    pub fn parse(spec: &str) -> Result<Objective> {
        let terms = if let Some(rest) = spec.strip_prefix("weighted:") {
            let mut terms = vec![];
            for part in rest.split('+') {
                let (w, t) = part
                    .split_once('*')
                    .ok_or_else(|| bad(spec, &format!("term `{part}` lacks a weight `W*`")))?;
                let w: f64 = w
                    .trim()
                    .parse()
                    .map_err(|_| bad(spec, &format!("weight `{w}` is not a number")))?;
                if !w.is_finite() {
                    return Err(bad(spec, "weights must be finite"));
                }
                terms.push((w, parse_term(spec, t)?));
            }
            terms
        } else {
            vec![(1.0, parse_term(spec, spec)?)]
        };
        Ok(Objective {
            terms,
            spec: spec.into(),
        })
    }

    /// Robust ε values the objective reads.
    pub fn eps(&self) -> Vec<f64> {
        let mut e: Vec<f64> = self
            .terms
            .iter()
            .filter(|t| t.1.scenario.is_robust())
            .map(|t| t.1.eps)
            .collect();
        e.sort_by(f64::total_cmp);
        e.dedup();
        e
    }

    /// Defence protocols the objective reads (`transfer` when none, as the cheapest;
    /// the worst case needs both).
    pub fn protocols(&self) -> Vec<config::Protocol> {
        let mut p = vec![];
        let worst = self.terms.iter().any(|t| t.1.protocol == Protocol::Worst);
        for c in [config::Protocol::Transfer, config::Protocol::Adaptive] {
            if worst || self.terms.iter().any(|t| t.1.protocol == Protocol::from(c)) {
                p.push(c);
            }
        }
        if p.is_empty() {
            p.push(config::Protocol::Transfer);
        }
        p
    }

    /// The objective's value on evaluated scenarios (accuracy).
    pub fn value(&self, sc: &[ScenarioResult]) -> Result<f64> {
        let mut v = 0.0;
        for (w, t) in &self.terms {
            let s = sc
                .iter()
                .find(|s| {
                    s.scenario == t.scenario
                        && s.protocol == t.protocol
                        && (t.scenario.is_clean() || s.eps == t.eps)
                })
                .ok_or_else(|| {
                    bad(
                        &self.spec,
                        &format!(
                            "the run has no {}/{} at ε = {}",
                            t.scenario, t.protocol, t.eps
                        ),
                    )
                })?;
            v += w * s.metrics.accuracy;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_weighted_objectives() {
        let o = Objective::parse("robust_def_adaptive@0.25").unwrap();
        assert_eq!(o.terms.len(), 1);
        assert_eq!(
            (o.terms[0].1.protocol, o.terms[0].1.eps),
            (Protocol::Adaptive, 0.25)
        );
        assert_eq!(o.protocols(), vec![config::Protocol::Adaptive]);
        let o = Objective::parse("weighted:0.3*clean_def+0.7*robust_def_transfer@0.5").unwrap();
        assert_eq!(o.terms.len(), 2);
        assert_eq!(
            o.terms[0],
            (
                0.3,
                Term {
                    scenario: Scenario::CleanDef,
                    protocol: Protocol::None,
                    eps: 0.0
                }
            )
        );
        assert_eq!(o.eps(), vec![0.5]);
        assert_eq!(
            Objective::parse("clean_def").unwrap().protocols(),
            vec![config::Protocol::Transfer]
        );
        for badspec in [
            "clean_def@0.1",
            "robust_base",
            "robust_def_adaptive@x",
            "foo",
            "weighted:clean_def",
        ] {
            let e = Objective::parse(badspec).unwrap_err().to_string();
            assert!(e.contains("--objective"), "{badspec}: {e}");
        }
    }
}
