//! The paper's table as Markdown: one table per ε with rows Clean_Base, Clean_Def,
//! Robust_Base, Robust_Def (transfer), Robust_Def (adaptive) and the nine metric columns.

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
    if protocol == "none" {
        base.to_string()
    } else {
        format!("{base} ({protocol})")
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
        for s in r
            .scenarios
            .iter()
            .filter(|s| s.scenario.starts_with("robust") && s.eps == e)
        {
            out.push_str(&row(&label(s.scenario, s.protocol), s.metrics.values()));
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
