//! Outputs of `optimize-rank` besides the trace: the objective(k) plot and `table2.md`.

use super::optimize::{OptimizeOptions, Outcome};
use super::plots::{self, LineFig, Series};
use crate::error::Result;
use crate::results::RunResult;

/// `<out>/plots/objective_vs_k.{png,svg}`: one line per budget rung.
pub fn objective_plot(opts: &OptimizeOptions, o: &Outcome) -> Result<()> {
    let mut budgets: Vec<f64> = o.trace.iter().map(|e| e.budget).collect();
    budgets.sort_by(f64::total_cmp);
    budgets.dedup();
    let colors = [plots::ORANGE, plots::TRANSFER, plots::ADAPTIVE, plots::BASE];
    let series = budgets
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &b)| {
            let mut pts: Vec<(f64, f64, f64, f64)> = o
                .trace
                .iter()
                .filter(|e| e.budget == b)
                .map(|e| (e.k as f64, e.objective, f64::NAN, f64::NAN))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: if b >= 1.0 {
                    "full budget".into()
                } else {
                    format!("budget {b:.3}")
                },
                color: colors[i % colors.len()],
                points: pts,
            }
        })
        .collect();
    let fig = LineFig {
        title: format!(
            "Validation objective vs NNMF rank ({} search; chosen k = {})",
            opts.search.name(),
            o.chosen_k
        ),
        x_desc: "NNMF rank k".into(),
        y_desc: format!("validation {}", opts.objective.spec),
        series,
        y_range: None,
        integer_x: true,
    };
    plots::render(&opts.out.join("plots"), "objective_vs_k", &fig)?;
    Ok(())
}

/// `table2.md`: the search trace and the test-set table at the chosen k.
pub fn table2_md(opts: &OptimizeOptions, o: &Outcome, res: &RunResult) -> String {
    let mut s = format!(
        "# Table 2 — test set at the optimised NNMF rank k = {}\n\n\
         k chosen on the **validation split only** by `{}` search over {:?} with objective \
         `{}` (validation value {:.4}); {} fits. Trace: `optimize.csv` / `optimize.h5`; \
         curve: `plots/objective_vs_k.png`.\n\n\
         | order | k | budget | validation objective |\n|---|---|---|---|\n",
        o.chosen_k,
        opts.search.name(),
        opts.ks,
        opts.objective.spec,
        o.chosen_objective,
        o.trace.len()
    );
    for e in &o.trace {
        s.push_str(&format!(
            "| {} | {} | {:.3} | {:.4} |\n",
            e.order, e.k, e.budget, e.objective
        ));
    }
    s.push_str("\n## Test-set results at the chosen k\n");
    s.push_str(&crate::results::table::markdown(res));
    s
}
