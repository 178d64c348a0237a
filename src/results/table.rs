//! The paper's table as Markdown: one table per ε with rows Clean_Base, Clean_Def,
//! Robust_Base, Robust_Def (worst case: the headline, per sample the worst over every
//! transfer and adaptive candidate), Robust_Def (transfer), Robust_Def (adaptive) and the
//! nine metric columns; then the scoring repeats (mean ± sd, strict) and the checks.

use super::{Protocol, RunResult, Scenario};

const HEADER: &str = "| Case | Accuracy | Precision | Recall | F1 | MCC | Balanced Acc | ROC-AUC | LogLoss | Brier |\n|---|---|---|---|---|---|---|---|---|---|\n";

/// Paper row label of a (scenario, protocol): `Clean_Base`, …, `Robust_Def (adaptive)`.
pub fn label(scenario: Scenario, protocol: Protocol) -> String {
    let base = scenario.title();
    match protocol {
        Protocol::None => base.to_string(),
        Protocol::Worst => format!("{base} (worst case)"),
        p => format!("{base} ({p})"),
    }
}

/// Display order of the protocols: the headline worst case first.
pub fn protocol_rank(p: Protocol) -> usize {
    match p {
        Protocol::None => 0,
        Protocol::Worst => 1,
        Protocol::Transfer => 2,
        Protocol::Adaptive => 3,
    }
}

fn row(name: &str, v: [f64; 9]) -> String {
    let mut s = format!("| {name} ");
    for x in v {
        s.push_str(&format!("| {x:.4} "));
    }
    s.push_str("|\n");
    s
}

/// All per-ε tables of a run, with a heading each, then the scoring repeats and the checks.
pub fn markdown(r: &RunResult) -> String {
    let mut eps: Vec<f64> = r
        .scenarios
        .iter()
        .filter(|s| s.scenario.is_robust())
        .map(|s| s.eps)
        .collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();
    let mut out = String::new();
    for e in eps {
        out.push_str(&eps_table(r, e));
    }
    out.push_str(&repeats_table(r));
    out.push_str(&super::certified::markdown(r));
    if !r.checks.is_empty() {
        out.push_str(
            "\n### Evaluation sanity checks\n\n| check | result | detail |\n|---|---|---|\n",
        );
        for c in &r.checks {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                c.name,
                if c.passed { "pass" } else { "FAIL" },
                c.detail
            ));
        }
    }
    out
}

/// The paper's table at ε: the clean rows, then Robust_Base and the Robust_Def protocols.
fn eps_table(r: &RunResult, e: f64) -> String {
    let mut out = format!(
        "\n### {} — ε = {e} (L∞, {} threat model, ε in {}, box: {})\n\n{HEADER}",
        r.job_name,
        r.threat.name(),
        r.threat.eps_unit(),
        r.box_kind
    );
    for s in r.scenarios.iter().filter(|s| s.scenario.is_clean()) {
        out.push_str(&row(&label(s.scenario, s.protocol), s.metrics.values()));
    }
    let mut rows: Vec<_> = r
        .scenarios
        .iter()
        .filter(|s| s.scenario.is_robust() && s.eps == e)
        .collect();
    rows.sort_by_key(|s| {
        (
            s.scenario != Scenario::RobustBase,
            protocol_rank(s.protocol),
        )
    });
    for s in rows {
        out.push_str(&row(&label(s.scenario, s.protocol), s.metrics.values()));
    }
    out
}

/// The rows scored in more than one repeat: repeat 0, mean ± sd, strict and fresh accuracy.
fn repeats_table(r: &RunResult) -> String {
    let mut rep: Vec<_> = r
        .scenarios
        .iter()
        .filter(|s| s.repeat_accuracy.len() > 1)
        .collect();
    if rep.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n### Scoring repeats ({} independent R-pass scorings of every candidate)\n\n| Case | ε | accuracy (repeat 0) | mean ± sd over repeats | strict (robust in every repeat) | this ε only (no carried candidates) |\n|---|---|---|---|---|---|\n",
        rep[0].repeat_accuracy.len()
    );
    rep.sort_by(|a, b| {
        a.eps
            .total_cmp(&b.eps)
            .then(protocol_rank(a.protocol).cmp(&protocol_rank(b.protocol)))
    });
    for s in rep {
        let v = &s.repeat_accuracy;
        let m = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt();
        let fresh = if s.fresh_accuracy.is_finite() {
            format!("{:.4}", s.fresh_accuracy)
        } else {
            "".into()
        };
        out.push_str(&format!(
            "| {} | {} | {:.4} | {m:.4} ± {sd:.4} | {:.4} | {fresh} |\n",
            label(s.scenario, s.protocol),
            s.eps,
            s.metrics.accuracy,
            s.strict_accuracy
        ));
    }
    out
}
