//! Rows of the `fingerprint` stage: the content fingerprint (`data::fingerprint`, the stage
//! cache's data key) of the embedded digits (constant), of the same images as raw IDX files,
//! and of a folder of one PNG per image. The files are written once into a scratch folder
//! (not timed) and hashed from the page cache.

use super::{time_it, Ctx};
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
fn write_png(path: &Path, side: usize, pixels: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(pixels)?;
    w.finish()?;
    Ok(())
}

/// Embedded (constant), raw IDX and PNG-folder fingerprints of `n` embedded images
/// (quick: 500).
pub fn fingerprint(ctx: &mut Ctx) -> anyhow::Result<()> {
    let total = ctx.data.len();
    let n = if ctx.quick { 500.min(total) } else { total };
    let side = ctx.data.height;
    anyhow::ensure!(side == ctx.data.width, "bench data must be square");
    // Evenly spaced rows: every class (the data is grouped by class) in proportion.
    let rows: Vec<usize> = (0..n).map(|i| i * total / n).collect();
    let pixels: Vec<u8> = rows
        .iter()
        .flat_map(|&i| ctx.data.images.row(i).to_vec())
        .map(|v| (v * 255.0).round() as u8)
        .collect();
    let labels: Vec<u8> = rows.iter().map(|&i| ctx.data.labels[i]).collect();
    let mb = |b: u64| b as f64 / 1e6;

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
    std::fs::create_dir_all(&dir.0)?;
    let (ip, lp) = (
        dir.0.join("images-idx3-ubyte"),
        dir.0.join("labels-idx1-ubyte"),
    );
    std::fs::write(&ip, idx::encode_images(side, side, &pixels))?;
    std::fs::write(&lp, idx::encode_labels(&labels))?;
    let src = DataSource::Idx {
        images: ip,
        labels: lp,
    };
    let (t, fp) = time_it(1, ctx.repeats, || Ok(data::fingerprint(&src)?))?;
    let row = ctx.push(
        "fingerprint",
        format!("idx raw, {n} images ({:.1} MB)", mb(fp.bytes)),
        t,
        None,
    );
    row.items = Some((mb(fp.bytes), "MB"));
    row.note = format!(
        "read + SHA-256 of the decoded bytes, 2 files (page cache); {}",
        fp.short()
    );

    let root = dir.0.join("folder");
    for l in labels
        .iter()
        .copied()
        .collect::<std::collections::BTreeSet<u8>>()
    {
        std::fs::create_dir_all(root.join(l.to_string()))?;
    }
    let px = side * side;
    rows.par_iter().enumerate().try_for_each(|(k, &i)| {
        let p = root.join(labels[k].to_string()).join(format!("{i:05}.png"));
        write_png(&p, side, &pixels[k * px..(k + 1) * px])
    })?;
    let src = DataSource::Folder { root };
    let (t, fp) = time_it(1, ctx.repeats, || Ok(data::fingerprint(&src)?))?;
    let row = ctx.push(
        "fingerprint",
        format!("folder, {n} PNG files ({:.1} MB)", mb(fp.bytes)),
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
