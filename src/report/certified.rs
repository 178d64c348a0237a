//! The figure of a certified run (`certify.png` / `.svg`): the certified-accuracy curve of
//! the smoothed classifier over L2 radii, and the sandwich at the attack budgets — the
//! implied L∞ lower bound beside the empirical upper bounds (the smoothed classifier and
//! the R-pass defence on the worst-case adversarial examples).

use super::plots::{render, LineFig, PanelsFig, Series};
use crate::certify::curve::Certification;
use crate::error::Result;
use crate::results::{Protocol, RunResult, Scenario};
use plotters::style::RGBColor;
use std::path::{Path, PathBuf};

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);

fn pt(x: f64, y: f64) -> (f64, f64, f64, f64) {
    (x, y, f64::NAN, f64::NAN)
}

/// Write `certify.png` and `certify.svg` into `dir`; `None` when `r` did not certify.
pub fn render_certified(dir: &Path, r: &RunResult) -> Result<Option<PathBuf>> {
    let Some(c) = &r.certification else {
        return Ok(None);
    };
    let y = r.label_indices();
    let fig = PanelsFig {
        title: format!(
            "{}: smoothed majority-vote classifier g (not the R-pass average)",
            r.job_name
        ),
        panels: vec![radius_panel(c, &y), sandwich_panel(r, c, &y)],
    };
    render(dir, "certify", &fig).map(Some)
}

/// Certified accuracy over the L2 radius.
fn radius_panel(c: &Certification, y: &[usize]) -> LineFig {
    let top = c.curve_radii().last().copied().unwrap_or(0.0);
    // 15 % beyond the largest certifiable radius, to show the ceiling set by n and α.
    let curve: Vec<_> = (0..=115)
        .map(|j| {
            let rad = top * j as f64 / 100.0;
            pt(rad, c.certified_accuracy(y, rad))
        })
        .collect();
    LineFig {
        title: format!(
            "Certified accuracy of g (σ = {:.3}, n = {})",
            c.sigma, c.params.n
        ),
        x_desc: "L2 radius (z-scored feature units)".into(),
        y_desc: "certified accuracy".into(),
        series: vec![Series {
            label: "smoothed g (CERTIFY)".into(),
            color: BLUE,
            points: curve,
        }],
        y_range: Some((0.0, 1.0)),
        integer_x: false,
    }
}

/// The sandwich over the L∞ budget: certified (lower) and the two empirical upper bounds.
fn sandwich_panel(r: &RunResult, c: &Certification, y: &[usize]) -> LineFig {
    let def_acc = |s: Scenario, p: Protocol, e: f64| {
        r.scenarios
            .iter()
            .find(|x| x.scenario == s && x.protocol == p && x.eps == e)
            .map(|x| x.metrics.accuracy)
    };
    // The implied L∞ lower bound is a curve in ε (radius ε√d): drawn finely, so its fall
    // to 0 between the attack budgets shows.
    let eps_max = c.at_eps.iter().map(|s| s.eps).fold(0.0, f64::max);
    let sqrt_d = (c.dim as f64).sqrt();
    let mut lower: Vec<_> = (0..=200)
        .map(|j| eps_max * j as f64 / 200.0)
        .chain(c.at_eps.iter().map(|s| s.eps))
        .map(|e| (e, c.certified_accuracy(y, e * sqrt_d)))
        .collect();
    lower.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut lower: Vec<_> = lower.into_iter().map(|(e, a)| pt(e, a)).collect();
    let mut upper = vec![pt(0.0, c.smoothed_clean_accuracy(y))];
    let mut rpass: Vec<_> = def_acc(Scenario::CleanDef, Protocol::None, 0.0)
        .map(|a| pt(0.0, a))
        .into_iter()
        .collect();
    lower.dedup_by(|a, b| a.0 == b.0);
    for s in &c.at_eps {
        upper.push(pt(s.eps, s.accuracy(y)));
        if let Some(a) = def_acc(Scenario::RobustDef, Protocol::Worst, s.eps) {
            rpass.push(pt(s.eps, a));
        }
    }
    LineFig {
        title: "Lower ≤ robust accuracy ≤ upper".into(),
        x_desc: "ε (L∞, z-scored feature units)".into(),
        y_desc: "accuracy".into(),
        series: vec![
            Series {
                label: "certified, g (lower bound)".into(),
                color: BLUE,
                points: lower,
            },
            Series {
                label: "g on worst-case examples (upper)".into(),
                color: ORANGE,
                points: upper,
            },
            Series {
                label: "R-pass defence, worst case (upper)".into(),
                color: GREEN,
                points: rpass,
            },
        ],
        y_range: Some((0.0, 1.0)),
        integer_x: false,
    }
}
