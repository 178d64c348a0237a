//! Plots of a sweep (PNG and SVG through `plotters`, text in the embedded DejaVu Sans so no
//! system fontconfig is needed): robust accuracy vs ε, accuracy vs k, the NNMF basis as image
//! tiles, confusion matrices, training and NNMF objective curves.

use crate::error::{Error, Result};
use crate::results::write_atomic;
use ndarray::Array2;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

type PResult = std::result::Result<(), Box<dyn std::error::Error>>;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Register the embedded font under `sans-serif` (all styles); idempotent.
pub fn ensure_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for st in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            // The font is compiled in; a parse failure would show as FontUnavailable at draw time.
            let _ = plotters::style::register_font("sans-serif", st, FONT);
        }
    });
}

pub const BASE: RGBColor = RGBColor(214, 39, 40);
pub const TRANSFER: RGBColor = RGBColor(31, 119, 180);
pub const ADAPTIVE: RGBColor = RGBColor(44, 160, 44);
pub const WORST: RGBColor = RGBColor(0, 0, 0);
pub const CLEAN_BASE: RGBColor = RGBColor(30, 30, 30);
pub const CLEAN_DEF: RGBColor = RGBColor(148, 103, 189);
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);

/// Something drawable on any backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult
    where
        DB::ErrorType: 'static;
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Results {
        path: path.to_path_buf(),
        msg: format!("plotting failed: {e}"),
    }
}

/// Render `fig` to `<dir>/<name>.png` and `<dir>/<name>.svg` (atomically); returns the PNG path.
pub fn render(dir: &Path, name: &str, fig: &impl Figure) -> Result<PathBuf> {
    ensure_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (w, h) = fig.size();
    let png_path = dir.join(format!("{name}.png"));
    let mut rgb = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        fig.draw(&root).map_err(|e| plot_err(&png_path, e))?;
        root.present().map_err(|e| plot_err(&png_path, e))?;
    }
    let mut bytes = vec![];
    {
        let mut enc = png::Encoder::new(&mut bytes, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(|e| plot_err(&png_path, e))?;
        wr.write_image_data(&rgb)
            .map_err(|e| plot_err(&png_path, e))?;
    }
    write_atomic(&png_path, &bytes)?;
    let svg_path = dir.join(format!("{name}.svg"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        fig.draw(&root).map_err(|e| plot_err(&svg_path, e))?;
        root.present().map_err(|e| plot_err(&svg_path, e))?;
    }
    write_atomic(&svg_path, svg.as_bytes())?;
    Ok(png_path)
}

/// A line with an optional band: points `(x, y, lo, hi)` (band drawn when lo/hi finite).
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub color: RGBColor,
    pub points: Vec<(f64, f64, f64, f64)>,
}

/// A line chart with legend, labelled axes and optional confidence bands.
#[derive(Clone, Debug)]
pub struct LineFig {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// Fixed y range (e.g. accuracy 0..1); otherwise from the data.
    pub y_range: Option<(f64, f64)>,
    /// Ticks only at integers on the x axis (e.g. the NNMF rank k).
    pub integer_x: bool,
}

/// Compact tick label: integers without decimals, others with ≤ 4 significant decimals.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        return format!("{}", v.round());
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn range_of(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 0.0 { lo.abs() * 0.1 } else { 1.0 };
        return (lo - pad, hi + pad);
    }
    let pad = 0.05 * (hi - lo);
    (lo - pad, hi + pad)
}

impl LineFig {
    fn draw_on<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, small: bool) -> PResult
    where
        DB::ErrorType: 'static,
    {
        let pts = || self.series.iter().flat_map(|s| s.points.iter());
        let (x0, x1) = range_of(pts().map(|p| p.0));
        let (y0, y1) = self
            .y_range
            .unwrap_or_else(|| range_of(pts().flat_map(|p| [p.1, p.2, p.3])));
        let fs = if small { 15 } else { 18 };
        let mut chart = ChartBuilder::on(area)
            .caption(&self.title, ("sans-serif", fs + 4))
            .margin(12)
            .x_label_area_size(if small { 40 } else { 48 })
            .y_label_area_size(if small { 62 } else { 70 })
            .build_cartesian_2d(x0..x1, y0..y1)?;
        let int_x = self.integer_x;
        let x_fmt = move |v: &f64| {
            if int_x && (v - v.round()).abs() > 1e-9 {
                String::new()
            } else {
                tick(*v)
            }
        };
        let n_int = ((x1.floor() - x0.ceil()) as usize + 1).clamp(2, 12);
        chart
            .configure_mesh()
            .x_labels(if int_x { n_int } else { 10 })
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| tick(*v))
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .label_style(("sans-serif", fs - 2))
            .axis_desc_style(("sans-serif", fs))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for s in &self.series {
            let band: Vec<_> = s
                .points
                .iter()
                .filter(|p| p.2.is_finite() && p.3.is_finite())
                .collect();
            if band.len() >= 2 {
                let mut poly: Vec<(f64, f64)> = band.iter().map(|p| (p.0, p.3.min(y1))).collect();
                poly.extend(band.iter().rev().map(|p| (p.0, p.2.max(y0))));
                chart.draw_series(std::iter::once(Polygon::new(
                    poly,
                    s.color.mix(0.15).filled(),
                )))?;
            }
            let line: Vec<(f64, f64)> = s.points.iter().map(|p| (p.0, p.1)).collect();
            let c = s.color;
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))?
                .label(s.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], c.stroke_width(2))
                });
            if line.len() <= 40 {
                chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
        }
        if !self.series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", fs - 2))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()?;
        }
        Ok(())
    }
}

impl Figure for LineFig {
    fn size(&self) -> (u32, u32) {
        (900, 600)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        self.draw_on(root, false)
    }
}

/// Several line charts in a grid (training curves).
pub struct PanelsFig {
    pub title: String,
    pub panels: Vec<LineFig>,
}

impl PanelsFig {
    fn grid(&self) -> (usize, usize) {
        let cols = if self.panels.len() <= 1 { 1 } else { 2 };
        (self.panels.len().div_ceil(cols).max(1), cols)
    }
}

impl Figure for PanelsFig {
    fn size(&self) -> (u32, u32) {
        let (r, c) = self.grid();
        (c as u32 * 640, r as u32 * 420 + 50)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, ("sans-serif", 24))?;
        let (r, c) = self.grid();
        for (p, a) in self.panels.iter().zip(area.split_evenly((r, c))) {
            p.draw_on(&a, true)?;
        }
        Ok(())
    }
}

/// The NNMF basis: one tile per component (row of W reshaped to h × w), each scaled to its max.
pub struct BasisFig {
    pub title: String,
    pub w: Array2<f32>,
    pub height: usize,
    pub width: usize,
}

impl BasisFig {
    fn layout(&self) -> (usize, usize, u32) {
        let k = self.w.nrows().max(1);
        let cols = (k as f64).sqrt().ceil() as usize;
        let rows = k.div_ceil(cols);
        let px = (720 / (cols * self.width.max(1))).clamp(1, 8) as u32;
        (rows, cols, px)
    }
}

impl Figure for BasisFig {
    fn size(&self) -> (u32, u32) {
        let (r, c, px) = self.layout();
        let gap = 6;
        let w = c as u32 * (self.width as u32 * px + gap) + gap;
        let h = r as u32 * (self.height as u32 * px + gap) + gap + 50;
        (w.max(420), h)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, ("sans-serif", 20))?;
        let (_, cols, px) = self.layout();
        let gap = 6i32;
        let (tw, th) = (
            self.width as i32 * px as i32,
            self.height as i32 * px as i32,
        );
        for (i, row) in self.w.rows().into_iter().enumerate() {
            let (gx, gy) = ((i % cols) as i32, (i / cols) as i32);
            let (ox, oy) = (gap + gx * (tw + gap), gap + gy * (th + gap));
            area.draw(&Rectangle::new(
                [(ox - 1, oy - 1), (ox + tw, oy + th)],
                RGBColor(200, 200, 200),
            ))?;
            let max = row.iter().copied().fold(0f32, f32::max);
            if max <= 0.0 || row.len() != self.height * self.width {
                continue;
            }
            for (j, &v) in row.iter().enumerate() {
                let t = (v / max).clamp(0.0, 1.0);
                if t < 0.03 {
                    continue; // white background; keeps the SVG small for sparse parts
                }
                let g = (255.0 * (1.0 - t)) as u8;
                let (x, y) = ((j % self.width) as i32, (j / self.width) as i32);
                let p = px as i32;
                area.draw(&Rectangle::new(
                    [(ox + x * p, oy + y * p), (ox + x * p + p, oy + y * p + p)],
                    RGBColor(g, g, g).filled(),
                ))?;
            }
        }
        Ok(())
    }
}

/// Confusion matrices (rows = true class, columns = predicted), colour by row-normalised rate.
pub struct ConfusionFig {
    pub title: String,
    pub panels: Vec<(String, Array2<u64>)>,
}

impl Figure for ConfusionFig {
    fn size(&self) -> (u32, u32) {
        let n = self.panels.len().max(1) as u32;
        let cols = n.min(2);
        (cols * 520, n.div_ceil(cols) * 520 + 50)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, ("sans-serif", 24))?;
        let n = self.panels.len().max(1);
        let cols = n.min(2);
        for ((title, m), a) in self
            .panels
            .iter()
            .zip(area.split_evenly((n.div_ceil(cols), cols)))
        {
            let c = m.nrows() as i32;
            let mut chart = ChartBuilder::on(&a)
                .caption(title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(50)
                .build_cartesian_2d(-0.5..c as f64 - 0.5, -0.5..c as f64 - 0.5)?;
            // Integer ticks only; the y axis shows true class 0 at the top.
            let int = move |v: f64| {
                let r = v.round();
                ((v - r).abs() < 1e-6 && r >= 0.0 && r < c as f64).then_some(r as i32)
            };
            let lab = move |v: &f64| int(*v).map_or(String::new(), |i| i.to_string());
            let rev = move |v: &f64| int(*v).map_or(String::new(), |i| (c - 1 - i).to_string());
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("predicted class")
                .y_desc("true class")
                .x_labels(c as usize + 1)
                .y_labels(c as usize + 1)
                .x_label_formatter(&lab)
                .y_label_formatter(&rev)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .draw()?;
            for t in 0..c {
                let total: u64 = m.row(t as usize).sum();
                for p in 0..c {
                    let v = m[[t as usize, p as usize]];
                    let rate = if total > 0 {
                        v as f64 / total as f64
                    } else {
                        0.0
                    };
                    let shade = |a: u8| (255.0 - rate * (255.0 - a as f64)) as u8;
                    let (x, y) = (p as f64, (c - 1 - t) as f64);
                    let fill = RGBColor(shade(8), shade(48), shade(107));
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x - 0.5, y - 0.5), (x + 0.5, y + 0.5)],
                        fill.filled(),
                    )))?;
                    if v > 0 {
                        let color = if rate > 0.5 { WHITE } else { BLACK };
                        chart.draw_series(std::iter::once(Text::new(
                            v.to_string(),
                            (x, y),
                            ("sans-serif", 12)
                                .into_font()
                                .color(&color)
                                .pos(Pos::new(HPos::Center, VPos::Center)),
                        )))?;
                    }
                }
            }
            chart.draw_series(std::iter::once(Rectangle::new(
                [(-0.5, -0.5), (c as f64 - 0.5, c as f64 - 0.5)],
                RGBColor(120, 120, 120),
            )))?;
        }
        Ok(())
    }
}
