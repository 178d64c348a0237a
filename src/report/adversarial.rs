//! The adversarial-image grid of a pixel-space run: one row per stored point, three
//! columns — the clean image, its Robust_Base candidate and its robust_def/worst candidate
//! — each captioned with the prediction the reported row recorded (`/adversarial` of
//! `result.h5`, `docs/results.md`).

use super::plots::{render, Figure, BASE, CLEAN_BASE, WORST};
use crate::error::Result;
use crate::results::AdversarialImages;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

type PResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Pixels per image pixel, gaps and caption heights of the grid.
const PX: i32 = 4;
const GAP: i32 = 14;
const CAPTION: i32 = 18;
const HEADER: i32 = 64;

/// The grid of `a` (images `height × width`).
pub struct AdversarialFig<'a> {
    pub title: String,
    pub a: &'a AdversarialImages,
    pub height: usize,
    pub width: usize,
}

impl AdversarialFig<'_> {
    fn tile(&self) -> (i32, i32) {
        (self.width as i32 * PX, self.height as i32 * PX)
    }
}

impl Figure for AdversarialFig<'_> {
    fn size(&self) -> (u32, u32) {
        let (tw, th) = self.tile();
        let rows = self.a.ids.len().max(1) as i32;
        let w = 3 * (tw + GAP) + GAP;
        let h = HEADER + rows * (th + CAPTION + GAP) + GAP;
        (w.max(480) as u32, h as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> PResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let area = root.titled(&self.title, ("sans-serif", 16))?;
        let (tw, th) = self.tile();
        let a = self.a;
        let heads = ["clean", "base attack", "defence attack"];
        for (c, head) in heads.iter().enumerate() {
            let x = GAP + c as i32 * (tw + GAP);
            area.draw(&Text::new(*head, (x, 14), ("sans-serif", 14)))?;
        }
        for i in 0..a.ids.len() {
            let y = HEADER - 30 + i as i32 * (th + CAPTION + GAP);
            let cols = [
                (
                    a.clean.row(i),
                    format!(
                        "y={} b:{} d:{}",
                        a.labels[i], a.clean_base_pred[i], a.clean_def_pred[i]
                    ),
                    CLEAN_BASE,
                ),
                (a.base.row(i), format!("base: {}", a.base_pred[i]), BASE),
                (
                    a.defence.row(i),
                    format!("defence: {}", a.defence_pred[i]),
                    WORST,
                ),
            ];
            for (c, (img, caption, color)) in cols.iter().enumerate() {
                let x = GAP + c as i32 * (tw + GAP);
                self.image(&area, img.as_slice(), (x, y))?;
                area.draw(&Text::new(
                    caption.clone(),
                    (x, y + th + 3),
                    ("sans-serif", 12).into_font().color(color),
                ))?;
            }
        }
        Ok(())
    }
}

impl AdversarialFig<'_> {
    /// One image at `(x, y)`: ink (pixel value 1) black on white, a grey frame.
    fn image<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        px: Option<&[f32]>,
        (x, y): (i32, i32),
    ) -> PResult
    where
        DB::ErrorType: 'static,
    {
        let (tw, th) = self.tile();
        area.draw(&Rectangle::new(
            [(x - 1, y - 1), (x + tw, y + th)],
            RGBColor(200, 200, 200),
        ))?;
        let Some(px) = px else { return Ok(()) };
        for (j, &v) in px.iter().enumerate() {
            let t = v.clamp(0.0, 1.0);
            if t < 0.02 {
                continue;
            }
            let g = (255.0 * (1.0 - t)) as u8;
            let (cx, cy) = ((j % self.width) as i32, (j / self.width) as i32);
            area.draw(&Rectangle::new(
                [
                    (x + cx * PX, y + cy * PX),
                    (x + cx * PX + PX, y + cy * PX + PX),
                ],
                RGBColor(g, g, g).filled(),
            ))?;
        }
        Ok(())
    }
}

/// Render the grid of `a` to `<dir>/<name>.png` and `.svg`; returns the PNG path.
pub fn render_grid(
    dir: &Path,
    name: &str,
    who: &str,
    a: &AdversarialImages,
    (height, width): (usize, usize),
) -> Result<PathBuf> {
    let fig = AdversarialFig {
        title: format!("pixel-space attacks at ε = {} ({who})", a.eps),
        a,
        height,
        width,
    };
    render(dir, name, &fig)
}
