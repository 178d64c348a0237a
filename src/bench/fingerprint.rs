//! Rows of the `fingerprint` stage: the content fingerprint (`data::fingerprint`, the stage
//! cache's data key) of the embedded digits (constant), of the same images as raw IDX files,
//! and of a folder of one PNG per image. The files are written once into a scratch folder
//! (not timed) and hashed from the page cache.

use super::{time_it, BenchError, Ctx, Result};
use crate::data::{self, idx, DataSource};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// A scratch folder removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An 8-bit gray PNG of `pixels` (`side × side`).
fn write_png(path: &Path, side: usize, pixels: &[u8]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| BenchError::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let png = |error| BenchError::Png {
        path: path.to_path_buf(),
        error,
    };
    let mut w = enc.write_header().map_err(png)?;
    w.write_image_data(pixels).map_err(png)?;
    w.finish().map_err(png)?;
    Ok(())
}

/// Embedded (constant), raw IDX and PNG-folder fingerprints of `n` embedded images
/// (quick: 500).
pub fn fingerprint(ctx: &mut Ctx) -> Result<()> {
    let total = ctx.data.len();
    let n = if ctx.quick { 500.min(total) } else { total };
    let side = ctx.data.height;
    if side != ctx.data.width {
        return Err(BenchError::Data(format!(
            "bench data must be square (is {side}×{})",
            ctx.data.width
        )));
    }
    // Evenly spaced rows: every class (the data is grouped by class) in proportion.
    let rows: Vec<usize> = (0..n).map(|i| i * total / n).collect();
    let pixels: Vec<u8> = rows
        .iter()
        .flat_map(|&i| ctx.data.images.row(i).to_vec())
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let labels: Vec<u8> = rows.iter().map(|&i| ctx.data.labels[i]).collect();

    let (t, fp) = time_it(1, ctx.repeats, || {
        Ok(data::fingerprint(&DataSource::Embedded)?)
    })?;
    ctx.push("fingerprint", format!("embedded, {total} images"), t, None)
        .note = format!(
        "constant: the payload digests compiled in, nothing read ({:.1} µs); {}",
        t.median * 1e6,
        fp.short()
    );

    let dir = Scratch(
        std::env::temp_dir().join(format!("diffnmf-bench-{}-fingerprint", std::process::id())),
    );
    std::fs::create_dir_all(&dir.0).map_err(|e| BenchError::io(&dir.0, e))?;
    let sample = Sample {
        side,
        rows,
        pixels,
        labels,
    };
    idx_row(ctx, &dir.0, &sample)?;
    folder_row(ctx, &dir.0, &sample)?;
    Ok(())
}

/// The fingerprinted images: `rows` of the embedded data as 8-bit `side × side` pixels.
struct Sample {
    side: usize,
    rows: Vec<usize>,
    pixels: Vec<u8>,
    labels: Vec<u8>,
}

fn mb(b: u64) -> f64 {
    b as f64 / 1e6
}

/// The raw-IDX row: the sample written as two IDX files under `dir`, fingerprinted.
fn idx_row(ctx: &mut Ctx, dir: &Path, s: &Sample) -> Result<()> {
    let (ip, lp) = (dir.join("images-idx3-ubyte"), dir.join("labels-idx1-ubyte"));
    std::fs::write(&ip, idx::encode_images(s.side, s.side, &s.pixels))
        .map_err(|e| BenchError::io(&ip, e))?;
    std::fs::write(&lp, idx::encode_labels(&s.labels)).map_err(|e| BenchError::io(&lp, e))?;
    let src = DataSource::Idx {
        images: ip,
        labels: lp,
    };
    let (t, fp) = time_it(1, ctx.repeats, || Ok(data::fingerprint(&src)?))?;
    let row = ctx.push(
        "fingerprint",
        format!("idx raw, {} images ({:.1} MB)", s.rows.len(), mb(fp.bytes)),
        t,
        None,
    );
    row.items = Some((mb(fp.bytes), "MB"));
    row.note = format!(
        "read + SHA-256 of the decoded bytes, 2 files (page cache); {}",
        fp.short()
    );
    Ok(())
}

/// The PNG-folder row: one PNG per image under `dir/folder/<label>/`, fingerprinted.
fn folder_row(ctx: &mut Ctx, dir: &Path, s: &Sample) -> Result<()> {
    let root = dir.join("folder");
    for l in s
        .labels
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<u8>>()
    {
        let d = root.join(l.to_string());
        std::fs::create_dir_all(&d).map_err(|e| BenchError::io(&d, e))?;
    }
    let px = s.side * s.side;
    s.rows.par_iter().enumerate().try_for_each(|(k, &i)| {
        let p = root
            .join(s.labels[k].to_string())
            .join(format!("{i:05}.png"));
        write_png(&p, s.side, &s.pixels[k * px..(k + 1) * px])
    })?;
    let src = DataSource::Folder { root };
    let (t, fp) = time_it(1, ctx.repeats, || Ok(data::fingerprint(&src)?))?;
    let row = ctx.push(
        "fingerprint",
        format!(
            "folder, {} PNG files ({:.1} MB)",
            s.rows.len(),
            mb(fp.bytes)
        ),
        t,
        None,
    );
    row.items = Some((fp.files as f64, "files"));
    row.note = format!(
        "listing + read + SHA-256 per file, no decoding (page cache); {:.1} MB/s; {}",
        mb(fp.bytes) / t.median,
        fp.short()
    );
    Ok(())
}
