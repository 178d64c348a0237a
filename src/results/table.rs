//! The paper's table as Markdown: one table per ε with rows Clean_Base, Clean_Def,
//! Robust_Base, Robust_Def (worst case: the headline, per sample the worst over every
//! transfer and adaptive candidate), Robust_Def (transfer), Robust_Def (adaptive) and the
//! nine metric columns; then the scoring repeats (mean ± sd, strict) and the checks.

use super::RunResult;

const HEADER: &str = "| Case | Accuracy | Precision | Recall | F1 | MCC | Balanced Acc | ROC-AUC | LogLoss | Brier |\n|---|---|---|---|---|---|---|---|---|---|\n";

/// Paper row label of a (scenario, protocol): `Clean_Base`, …, `Robust_Def (adaptive)`.
pub fn label(scenario: &str, protocol: &str) -> String {
    let base = match scenario {
        "clean_base" => "Clean_Base",
        "clean_def" => "Clean_Def",
        "robust_base" => "Robust_Base",
        "robust_def" => "Robust_Def",
        other => other,
    };
    match protocol {
        "none" => base.to_string(),
        "worst" => format!("{base} (worst case)"),
        p => format!("{base} ({p})"),
    }
}

/// Display order of the protocols: the headline worst case first.
pub fn protocol_rank(p: &str) -> usize {
    match p {
        "none" => 0,
        "worst" => 1,
        "transfer" => 2,
        "adaptive" => 3,
        _ => 4,
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

/// All per-ε tables of a run, with a heading each.
pub fn markdown(r: &RunResult) -> String {
    let mut eps: Vec<f64> = r
        .scenarios
        .iter()
        .filter(|s| s.scenario.starts_with("robust"))
        .map(|s| s.eps)
        .collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();
    let clean: Vec<_> = r
        .scenarios
        .iter()
        .filter(|s| s.scenario.starts_with("clean"))
        .collect();
    let mut out = String::new();
    for e in eps {
        out.push_str(&format!(
            "\n### {} — ε = {e} (L∞, feature space, box: {})\n\n{HEADER}",
            r.job_name, r.box_kind
        ));
        for s in &clean {
            out.push_str(&row(&label(s.scenario, s.protocol), s.metrics.values()));
        }
        let mut rows: Vec<_> = r
            .scenarios
            .iter()
            .filter(|s| s.scenario.starts_with("robust") && s.eps == e)
            .collect();
        rows.sort_by_key(|s| (s.scenario != "robust_base", protocol_rank(s.protocol)));
        for s in rows {
            out.push_str(&row(&label(s.scenario, s.protocol), s.metrics.values()));
        }
    }
    let rep: Vec<_> = r
        .scenarios
        .iter()
        .filter(|s| s.repeat_accuracy.len() > 1)
        .collect();
    if !rep.is_empty() {
        out.push_str(&format!(
            "\n### Scoring repeats ({} independent R-pass scorings of every candidate)\n\n| Case | ε | accuracy (repeat 0) | mean ± sd over repeats | strict (robust in every repeat) | this ε only (no carried candidates) |\n|---|---|---|---|---|---|\n",
            rep[0].repeat_accuracy.len()
        ));
        let mut rep = rep;
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
    }
    if !r.checks.is_empty() {
        out.push_str(
            "\n### Evaluation sanity checks\n\n| check | result | detail |\n|---|---|---|\n",
        );
        for (name, ok, detail) in &r.checks {
            out.push_str(&format!(
                "| {name} | {} | {detail} |\n",
                if *ok { "pass" } else { "FAIL" }
            ));
        }
    }
    out
}
