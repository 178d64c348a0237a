//! Certification across seeds: every finished cell's `certify.csv` (when the cell
//! certified) aggregated per (axis values, metric, unit, radius or ε) into
//! `summary_certify.csv`, and the Markdown section of the sweep's `tables.md` — one
//! certified-accuracy curve per configuration and the trade-off table (e.g. over
//! `diffusion.t_star`: σ, smoothed clean accuracy, average certified radius).

use super::aggregate::{csv_split, Cell, Groups, Summary, Sweep};
use super::stats::Stats;
use crate::error::{Error, Result};
use crate::results::certified::{CSV_HEADER, SCOPE};
use crate::results::{paths, Protocol, Scenario};

/// One aggregated certification value.
#[derive(Clone, Debug)]
pub struct CertSummaryRow {
    pub axis_values: Vec<String>,
    pub metric: String,
    pub unit: String,
    pub at: f64,
    pub stats: Stats,
}

type Value = (String, String, f64, f64);

/// The rows of a cell's `certify.csv`; `None` when the cell did not certify.
pub fn read_cell(cell: &Cell) -> Result<Option<Vec<Value>>> {
    let path = cell.dir.join(paths::CERTIFY_CSV);
    if !path.exists() {
        return Ok(None);
    }
    let bad = |msg: String| Error::Results {
        path: path.clone(),
        msg: format!("{msg}; recompute the cell with `diffnmf sweep <file> --resume`"),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut lines = text.lines();
    if lines.next() != Some(CSV_HEADER) {
        return Err(bad(format!("the header is not `{CSV_HEADER}`")));
    }
    let mut out = vec![];
    for (ln, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f = csv_split(line);
        let num = |s: &str| {
            s.parse::<f64>()
                .map_err(|_| bad(format!("line {}: `{s}` is not a number", ln + 2)))
        };
        if f.len() != 4 {
            return Err(bad(format!("line {}: expected 4 fields", ln + 2)));
        }
        out.push((f[0].clone(), f[1].clone(), num(&f[2])?, num(&f[3])?));
    }
    Ok(Some(out))
}

type Key = (Vec<String>, String, String, u64);

/// Aggregate the certified finished cells of `sweep` across seeds.
pub fn aggregate(sweep: &Sweep) -> Result<Vec<CertSummaryRow>> {
    let mut values = Groups::<Key>::default();
    for cell in sweep.cells.iter().filter(|c| c.done) {
        for (m, u, at, v) in read_cell(cell)?.unwrap_or_default() {
            values.push((cell.axis_values.clone(), m, u, at.to_bits()), v);
        }
    }
    Ok(values
        .stats()
        .map(|(k, stats)| CertSummaryRow {
            stats,
            axis_values: k.0,
            metric: k.1,
            unit: k.2,
            at: f64::from_bits(k.3),
        })
        .collect())
}

/// `summary_certify.csv`: `<axis keys…>,metric,unit,at,n,mean,std,ci95,min,max`.
pub fn csv(s: &Summary) -> String {
    super::aggregate::stats_csv(
        &s.sweep.axes,
        "metric,unit,at",
        s.certify.iter().map(|r| {
            (
                &r.axis_values[..],
                format!("{},{},{}", r.metric, r.unit, r.at),
                &r.stats,
            )
        }),
    )
}

fn get<'a>(s: &'a Summary, cfg: &[String], metric: &str) -> Vec<&'a CertSummaryRow> {
    s.certify
        .iter()
        .filter(|r| r.axis_values == cfg && r.metric == metric)
        .collect()
}

fn ms(st: &Stats) -> String {
    if st.n >= 2 {
        format!("{:.4} ± {:.4}", st.mean, st.std)
    } else {
        format!("{:.4}", st.mean)
    }
}

fn one(s: &Summary, cfg: &[String], metric: &str) -> String {
    get(s, cfg, metric)
        .first()
        .map_or("–".into(), |r| ms(&r.stats))
}

/// The certification section of the sweep's `tables.md` (empty when no cell certified).
pub fn markdown(s: &Summary) -> String {
    let cfgs: Vec<Vec<String>> = super::aggregate::configs(s)
        .into_iter()
        .filter(|c| !get(s, c, "sigma").is_empty())
        .collect();
    if cfgs.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "\n## Certified L2 robustness (mean ± sd across seeds)\n\n_{SCOPE}._\n\n| configuration | σ | smoothed g clean accuracy | certified at radius 0 | average certified radius | R-pass Clean_Def accuracy |\n|---|---|---|---|---|---|\n"
    );
    for c in &cfgs {
        let def = s
            .get(c, Scenario::CleanDef, Protocol::None, 0.0, "accuracy")
            .map_or("–".into(), ms);
        let at0 = get(s, c, "certified_accuracy")
            .into_iter()
            .find(|r| r.at == 0.0)
            .map_or("–".into(), |r| ms(&r.stats));
        out.push_str(&format!(
            "| {} | {} | {} | {at0} | {} | {def} |\n",
            s.config_label(c),
            one(s, c, "sigma"),
            one(s, c, "smoothed_clean_accuracy"),
            one(s, c, "average_certified_radius"),
        ));
    }
    for c in &cfgs {
        out.push_str(&format!(
            "\n### {} — certified accuracy of g over the L2 radius (z-scored feature units)\n\n| L2 radius | certified accuracy |\n|---|---|\n",
            s.config_label(c)
        ));
        for r in get(s, c, "certified_accuracy") {
            out.push_str(&format!("| {:.4} | {} |\n", r.at, ms(&r.stats)));
        }
    }
    out
}

/// `plots/certify.png`: the mean certified-accuracy curve of every certified
/// configuration over the L2 radius, with 95 % CI bands across seeds.
pub fn plot(s: &Summary, dir: &std::path::Path) -> Result<Option<super::sweep_plots::Plot>> {
    use super::plots::{render, LineFig, Series};
    const COLORS: [plotters::style::RGBColor; 6] = [
        plotters::style::RGBColor(31, 119, 180),
        plotters::style::RGBColor(255, 127, 14),
        plotters::style::RGBColor(44, 160, 44),
        plotters::style::RGBColor(214, 39, 40),
        plotters::style::RGBColor(148, 103, 189),
        plotters::style::RGBColor(140, 86, 75),
    ];
    let series: Vec<Series> = super::aggregate::configs(s)
        .iter()
        .map(|c| (c, get(s, c, "certified_accuracy")))
        .filter(|(_, rows)| !rows.is_empty())
        .enumerate()
        .map(|(i, (c, rows))| Series {
            label: s.config_label(c),
            color: COLORS[i % COLORS.len()],
            points: rows
                .iter()
                .map(|r| super::sweep_plots::clip_band(r.at, r.stats.mean, r.stats.ci95))
                .collect(),
        })
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    let fig = LineFig {
        title: "Certified accuracy of the smoothed classifier g (not the R-pass average)".into(),
        x_desc: "L2 radius (z-scored feature units)".into(),
        y_desc: "certified accuracy (mean, 95 % CI)".into(),
        series,
        y_range: Some((0.0, 1.0)),
        integer_x: false,
    };
    Ok(Some(super::sweep_plots::Plot {
        kind: "certify",
        label: "all certified configurations".into(),
        png: render(dir, "certify", &fig)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(dir: &std::path::Path) -> Cell {
        Cell {
            id: "c0".into(),
            index: 0,
            axis_values: vec![],
            seed: "1".into(),
            done: true,
            dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn a_cell_without_certify_csv_has_none_and_a_damaged_one_names_the_file() {
        let d = tempfile::tempdir().unwrap();
        let c = cell(d.path());
        assert!(read_cell(&c).unwrap().is_none());
        let p = d.path().join(paths::CERTIFY_CSV);
        std::fs::write(
            &p,
            format!("{CSV_HEADER}\nsigma,none,0,0.25\ncertified_accuracy,l2,0.1,0.5\n"),
        )
        .unwrap();
        let rows = read_cell(&c).unwrap().unwrap();
        assert_eq!(
            rows[1],
            ("certified_accuracy".into(), "l2".into(), 0.1, 0.5)
        );
        std::fs::write(&p, format!("{CSV_HEADER}\nsigma,none,0\n")).unwrap();
        let e = read_cell(&c).unwrap_err().to_string();
        assert!(
            e.contains("certify.csv") && e.contains("line 2") && e.contains("--resume"),
            "{e}"
        );
        std::fs::write(&p, "metric,value\n").unwrap();
        assert!(read_cell(&c).unwrap_err().to_string().contains("header"));
    }
}
