//! The plots of an aggregated sweep (`<sweep dir>/plots/`): per config, robust accuracy vs ε
//! with confidence bands across seeds; accuracy vs k when the sweep has an `nnmf.k` axis; and
//! from one representative cell (the first finished seed) the NNMF basis, confusion matrices
//! and training / NNMF objective curves.

use super::aggregate::{configs, Cell, Summary};
use super::plots::*;
use crate::error::{Error, Result};
use crate::results::{Protocol, Scenario};
use hdf5::types::VarLenUnicode;
use ndarray::Array2;
use std::path::{Path, PathBuf};

/// A written plot: kind, config label, PNG path (the SVG sits beside it).
#[derive(Clone, Debug)]
pub struct Plot {
    pub kind: &'static str,
    pub label: String,
    pub png: PathBuf,
}

/// File-name-safe form of a label.
pub fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|&c| c != '=')
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    out.trim_matches('_').to_string()
}

fn series(
    s: &Summary,
    cfg: &[String],
    sc: Scenario,
    pr: Protocol,
    label: &str,
    color: RGBColorAlias,
) -> Series {
    let points = s
        .eps_values(cfg)
        .into_iter()
        .filter_map(|e| {
            s.get(cfg, sc, pr, e, "accuracy")
                .map(|st| clip_band(e, st.mean, st.ci95))
        })
        .collect();
    Series {
        label: label.into(),
        color,
        points,
    }
}

type RGBColorAlias = plotters::style::RGBColor;

/// A point with its 95 % CI band clipped to the accuracy range [0, 1]; no band (NaN) when
/// the CI is undefined (one seed) — `max`/`min` would otherwise turn NaN into 0 and 1.
pub(super) fn clip_band(x: f64, mean: f64, ci: f64) -> (f64, f64, f64, f64) {
    if !ci.is_finite() {
        return (x, mean, f64::NAN, f64::NAN);
    }
    (x, mean, (mean - ci).max(0.0), (mean + ci).min(1.0))
}

/// Everything a cell's `result.h5` offers for plotting.
pub struct CellData {
    pub basis: Option<(Array2<f32>, usize, usize)>,
    /// (scenario, protocol, ε, confusion)
    pub confusions: Vec<(Scenario, Protocol, f64, Array2<u64>)>,
    /// (group, name, values)
    pub curves: Vec<(String, String, Vec<f64>)>,
    pub objective: Vec<f64>,
}

/// Read the plot inputs of `<cell>/result.h5`.
pub fn read_cell(path: &Path) -> Result<CellData> {
    let inner = || -> hdf5::Result<CellData> {
        let f = crate::results::h5::open_file(path)?;
        let n = f.group("nnmf")?;
        let basis = match n.dataset("W") {
            Ok(d) => {
                let h = n.attr("image_height")?.read_scalar::<u64>()? as usize;
                let w = n.attr("image_width")?.read_scalar::<u64>()? as usize;
                Some((d.read_2d::<f32>()?, h, w))
            }
            Err(_) => None,
        };
        let objective = n.dataset("objective")?.read_raw::<f64>()?;
        let mut confusions = vec![];
        let sg = f.group("scenarios")?;
        for name in sg.member_names()? {
            let g = sg.group(&name)?;
            let text = |a: &str| -> hdf5::Result<String> {
                Ok(g.attr(a)?.read_scalar::<VarLenUnicode>()?.to_string())
            };
            let named = |e: crate::results::names::UnknownName| {
                hdf5::Error::from(format!("/scenarios/{name}: {e}").as_str())
            };
            let s = text("scenario")?.parse().map_err(named)?;
            let p = text("protocol")?.parse().map_err(named)?;
            let e = g.attr("eps")?.read_scalar::<f64>()?;
            confusions.push((s, p, e, g.dataset("confusion")?.read_2d::<u64>()?));
        }
        let mut curves = vec![];
        let tg = f.group("training")?;
        for gname in tg.member_names()? {
            let g = tg.group(&gname)?;
            for dname in g.member_names()? {
                curves.push((
                    gname.clone(),
                    dname.clone(),
                    g.dataset(&dname)?.read_raw::<f64>()?,
                ));
            }
        }
        Ok(CellData {
            basis,
            confusions,
            curves,
            objective,
        })
    };
    inner().map_err(|e| Error::Results {
        path: path.to_path_buf(),
        msg: format!("hdf5: {e}"),
    })
}

/// A per-epoch (or per-iteration) curve as points `(i + 1, value)` without a band.
fn per_step(values: &[f64]) -> Vec<(f64, f64, f64, f64)> {
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| ((i + 1) as f64, v, f64::NAN, f64::NAN))
        .collect()
}

/// A panel of the training curves, or `None` when it has no series.
fn panel(title: String, x_desc: &str, y_desc: &str, series: Vec<Series>) -> Option<LineFig> {
    (!series.is_empty()).then(|| LineFig {
        title,
        x_desc: x_desc.into(),
        y_desc: y_desc.into(),
        series,
        y_range: None,
        integer_x: false,
    })
}

/// The training-curve panels of a cell: the loss of each network, the validation
/// accuracies and the NNMF objective.
fn curve_panels(d: &CellData) -> Vec<LineFig> {
    let curve = |group: &str, name: &str| d.curves.iter().find(|c| c.0 == group && c.1 == name);
    let mut panels = vec![];
    for (group, title) in [
        ("cnn", "CNN"),
        ("classifier", "MLP classifier"),
        ("denoiser", "feature denoiser (MSE)"),
    ] {
        let ser = [("train_loss", TRANSFER), ("val_loss", BASE)]
            .into_iter()
            .filter_map(|(name, color)| {
                curve(group, name).map(|c| Series {
                    label: name.replace('_', " "),
                    color,
                    points: per_step(&c.2),
                })
            })
            .collect();
        panels.extend(panel(format!("{title} loss"), "epoch", "loss", ser));
    }
    let acc = [
        ("cnn", "CNN", ORANGE),
        ("classifier", "MLP classifier", ADAPTIVE),
    ]
    .into_iter()
    .filter_map(|(g, l, c)| {
        curve(g, "val_accuracy").map(|x| Series {
            label: l.to_string(),
            color: c,
            points: per_step(&x.2),
        })
    })
    .collect();
    panels.extend(panel(
        "validation accuracy".into(),
        "epoch",
        "accuracy",
        acc,
    ));
    if !d.objective.is_empty() {
        let ser = vec![Series {
            label: "objective".into(),
            color: CLEAN_BASE,
            points: per_step(&d.objective),
        }];
        panels.extend(panel(
            "NNMF objective".into(),
            "multiplicative-update iteration",
            "objective",
            ser,
        ));
    }
    panels
}

/// The adversarial-image grid of a pixel-space cell (none for feature-space cells).
fn adversarial_plot(dir: &Path, label: &str, who: &str, result: &Path) -> Result<Option<Plot>> {
    let Some((a, shape)) = crate::results::h5::read_adversarial(result)? else {
        return Ok(None);
    };
    let name = format!("adversarial_{}", slug(label));
    Ok(Some(Plot {
        kind: "adversarial",
        label: label.into(),
        png: super::adversarial::render_grid(dir, &name, who, &a, shape)?,
    }))
}

fn cell_plots(dir: &Path, label: &str, cell: &Cell, out: &mut Vec<Plot>) -> Result<()> {
    let result = cell.dir.join(crate::results::paths::RESULT_H5);
    let d = read_cell(&result)?;
    let tag = slug(label);
    let who = format!("{label}, seed {}", cell.seed);
    out.extend(adversarial_plot(dir, label, &who, &result)?);
    if let Some((w, h, wd)) = &d.basis {
        let fig = BasisFig {
            title: format!("NNMF basis W: {} parts of {h}×{wd} ({who})", w.nrows()),
            w: w.clone(),
            height: *h,
            width: *wd,
        };
        out.push(Plot {
            kind: "basis",
            label: label.into(),
            png: render(dir, &format!("basis_{tag}"), &fig)?,
        });
    }
    let mut pos: Vec<f64> = d
        .confusions
        .iter()
        .map(|c| c.2)
        .filter(|&e| e > 0.0)
        .collect();
    pos.sort_by(f64::total_cmp);
    pos.dedup();
    let mid = pos.get(pos.len().saturating_sub(1) / 2).copied();
    let mut panels = vec![];
    for (s, p, e) in [
        (Scenario::CleanBase, Protocol::None, None),
        (Scenario::CleanDef, Protocol::None, None),
        (Scenario::RobustBase, Protocol::None, mid),
        (Scenario::RobustDef, Protocol::Worst, mid),
        (Scenario::RobustDef, Protocol::Adaptive, mid),
        (Scenario::RobustDef, Protocol::Transfer, mid),
    ] {
        if panels.len() == 4 {
            break;
        }
        if let Some(c) = d
            .confusions
            .iter()
            .find(|c| c.0 == s && c.1 == p && e.is_none_or(|e| c.2 == e))
        {
            let name = super::aggregate::row_label(s, p);
            let title = match e {
                Some(e) => format!("{name}, ε = {e}"),
                None => name,
            };
            panels.push((title, c.3.clone()));
        }
    }
    if !panels.is_empty() {
        let fig = ConfusionFig {
            title: format!("Confusion matrices ({who})"),
            panels,
        };
        out.push(Plot {
            kind: "confusion",
            label: label.into(),
            png: render(dir, &format!("confusion_{tag}"), &fig)?,
        });
    }
    let panels = curve_panels(&d);
    if !panels.is_empty() {
        let fig = PanelsFig {
            title: format!("Training curves ({who})"),
            panels,
        };
        out.push(Plot {
            kind: "curves",
            label: label.into(),
            png: render(dir, &format!("curves_{tag}"), &fig)?,
        });
    }
    Ok(())
}

/// Write every plot of the summary into `<sweep dir>/plots/`.
pub fn sweep_plots(s: &Summary) -> Result<Vec<Plot>> {
    let dir = s.sweep.dir.join("plots");
    let mut out = vec![];
    let cfgs = configs(s);
    for cfg in &cfgs {
        let label = s.config_label(cfg);
        out.push(robust_vs_eps(s, cfg, &label, &dir)?);
        if let Some(cell) = s
            .sweep
            .cells
            .iter()
            .find(|c| c.done && &c.axis_values == cfg)
        {
            cell_plots(&dir, &label, cell, &mut out)?;
        }
    }
    out.extend(super::aggregate_certify::plot(s, &dir)?);
    // Accuracy vs k, for each combination of the other axes and each ε > 0.
    if let Some(ki) = s
        .sweep
        .axes
        .iter()
        .position(|a| a == "nnmf.k" || a.ends_with(".k"))
    {
        for (o, group) in k_groups(&cfgs, ki) {
            let mut eps: Vec<f64> = group
                .iter()
                .flat_map(|g| s.eps_values(g.1))
                .filter(|&e| e > 0.0)
                .collect();
            eps.sort_by(f64::total_cmp);
            eps.dedup();
            let rest: Vec<String> = s
                .sweep
                .axes
                .iter()
                .zip(&o)
                .filter(|(a, _)| *a != &s.sweep.axes[ki])
                .map(|(a, v)| format!("{a}={v}"))
                .collect();
            for e in eps {
                out.push(accuracy_vs_k(s, &group, &rest, e, &dir)?);
            }
        }
    }
    Ok(out)
}

/// Robust accuracy vs ε of one config, with 95 % CI bands.
fn robust_vs_eps(s: &Summary, cfg: &[String], label: &str, dir: &Path) -> Result<Plot> {
    let n = s
        .get(cfg, Scenario::CleanBase, Protocol::None, 0.0, "accuracy")
        .map_or(0, |st| st.n);
    let rows = [
        (
            Scenario::RobustDef,
            Protocol::Worst,
            "defended, worst case per sample (headline)",
            WORST,
        ),
        (
            Scenario::RobustBase,
            Protocol::None,
            "base (undefended)",
            BASE,
        ),
        (
            Scenario::RobustDef,
            Protocol::Transfer,
            "defended, transfer attack",
            TRANSFER,
        ),
        (
            Scenario::RobustDef,
            Protocol::Adaptive,
            "defended, adaptive attack (EOT)",
            ADAPTIVE,
        ),
    ];
    let fig = LineFig {
        title: format!("Robust accuracy vs ε ({label}; n = {n} seeds, band = 95% CI)"),
        x_desc: "ε (L∞ budget on the z-scored hybrid features)".into(),
        y_desc: "accuracy".into(),
        series: rows
            .into_iter()
            .map(|(sc, pr, name, color)| series(s, cfg, sc, pr, name, color))
            .filter(|x| !x.points.is_empty())
            .collect(),
        y_range: Some((0.0, 1.02)),
        integer_x: false,
    };
    Ok(Plot {
        kind: "robust_vs_eps",
        label: label.to_string(),
        png: render(dir, &format!("robust_vs_eps_{}", slug(label)), &fig)?,
    })
}

/// One group of configs that differ only in the rank: (their other axis values, the
/// (k, config) pairs).
type KGroup<'a> = (Vec<String>, Vec<(f64, &'a Vec<String>)>);

/// The configs grouped by their values on every axis but the rank axis `ki`: per group
/// (the other values, its configs as (k, config) sorted by k); groups of fewer than two
/// numeric ranks are left out.
fn k_groups(cfgs: &[Vec<String>], ki: usize) -> Vec<KGroup<'_>> {
    let without_k = |c: &Vec<String>| {
        let mut o = c.clone();
        o.remove(ki);
        o
    };
    let mut others: Vec<Vec<String>> = vec![];
    for c in cfgs {
        let o = without_k(c);
        if !others.contains(&o) {
            others.push(o);
        }
    }
    let mut out = vec![];
    for o in others {
        let mut group: Vec<(f64, &Vec<String>)> = cfgs
            .iter()
            .filter(|c| without_k(c) == o)
            .filter_map(|c| c[ki].trim().parse::<f64>().ok().map(|k| (k, c)))
            .collect();
        group.sort_by(|a, b| a.0.total_cmp(&b.0));
        if group.len() >= 2 {
            out.push((o, group));
        }
    }
    out
}

/// Accuracy of every row vs the NNMF rank at ε, for one group of [`k_groups`]; `rest` names
/// the group's values on the other axes.
fn accuracy_vs_k(
    s: &Summary,
    group: &[(f64, &Vec<String>)],
    rest: &[String],
    e: f64,
    dir: &Path,
) -> Result<Plot> {
    let line = |(sc, pr, label, color): (Scenario, Protocol, &str, RGBColorAlias)| Series {
        label: label.into(),
        color,
        points: group
            .iter()
            .filter_map(|(k, c)| {
                s.get(c, sc, pr, e, "accuracy")
                    .map(|st| clip_band(*k, st.mean, st.ci95))
            })
            .collect(),
    };
    let rows = [
        (
            Scenario::CleanBase,
            Protocol::None,
            "Clean_Base",
            CLEAN_BASE,
        ),
        (Scenario::CleanDef, Protocol::None, "Clean_Def", CLEAN_DEF),
        (Scenario::RobustBase, Protocol::None, "Robust_Base", BASE),
        (
            Scenario::RobustDef,
            Protocol::Worst,
            "Robust_Def (worst case)",
            WORST,
        ),
        (
            Scenario::RobustDef,
            Protocol::Transfer,
            "Robust_Def (transfer)",
            TRANSFER,
        ),
        (
            Scenario::RobustDef,
            Protocol::Adaptive,
            "Robust_Def (adaptive)",
            ADAPTIVE,
        ),
    ];
    let fig = LineFig {
        title: format!(
            "Accuracy vs NNMF rank k (robust at ε = {e}{}{})",
            if rest.is_empty() { "" } else { "; " },
            rest.join(", ")
        ),
        x_desc: "NNMF rank k".into(),
        y_desc: "accuracy".into(),
        series: rows
            .into_iter()
            .map(line)
            .filter(|x| !x.points.is_empty())
            .collect(),
        y_range: Some((0.0, 1.02)),
        integer_x: true,
    };
    let name = format!(
        "accuracy_vs_k_eps{e}{}{}",
        if rest.is_empty() { "" } else { "_" },
        slug(&rest.join("_"))
    );
    Ok(Plot {
        kind: "accuracy_vs_k",
        label: format!("ε = {e}"),
        png: render(dir, &name, &fig)?,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_seed_has_no_band_and_bands_stay_in_the_unit_interval() {
        let (_, m, lo, hi) = super::clip_band(0.5, 0.9, f64::NAN);
        assert!(m == 0.9 && lo.is_nan() && hi.is_nan());
        assert_eq!(super::clip_band(0.5, 0.9, 0.2), (0.5, 0.9, 0.7, 1.0));
    }
}
