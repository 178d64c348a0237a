//! Helpers shared by the integration tests that drive the real binary: the command with a
//! clean environment, its whole output, cheap cell settings, synthetic folder datasets.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A path inside the repository.
pub fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// The `diffnmf` binary, run from the repository root, without fault switches or a Slurm
/// environment inherited from the caller.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diffnmf"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env_remove("DIFFNMF_FAULT");
    for k in ["SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"] {
        c.env_remove(k);
    }
    c
}

/// stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run `c`, asserting success (the message shows the whole output).
pub fn ok(c: &mut Command) -> String {
    let o = c.output().expect("the binary runs");
    let t = text(&o);
    assert!(o.status.success(), "{c:?} failed:\n{t}");
    t
}

/// Cheap settings for `diffnmf run jobs/paper.yaml` (about a second).
pub const CHEAP_RUN: [&str; 13] = [
    "data.subset=300",
    "nnmf.max_iter=5",
    "cnn.channels=[2,2,2]",
    "cnn.feature_dim=4",
    "cnn.epochs=1",
    "classifier.hidden=[8]",
    "classifier.epochs=2",
    "diffusion.epochs=1",
    "diffusion.hidden=[8]",
    "diffusion.passes=2",
    "attack.iterations=2",
    "attack.eot=1",
    "attack.score_repeats=2",
];

/// `diffnmf run jobs/paper.yaml --out OUT` with [`CHEAP_RUN`], asserting success.
pub fn run_cheap(out: &Path) {
    let mut c = bin();
    c.args(["run", "jobs/paper.yaml", "--out"]).arg(out);
    for s in CHEAP_RUN {
        c.args(["--set", s]);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// Settings that make a smoke cell take about a second in debug builds.
pub const CHEAP: &str = "set:
  data.subset: 200
  nnmf.max_iter: 5
  cnn.channels: [2, 2, 2]
  cnn.feature_dim: 4
  cnn.epochs: 1
  classifier.hidden: [8]
  classifier.epochs: 2
  diffusion.epochs: 1
  diffusion.hidden: [8]
  diffusion.passes: 2
  attack.iterations: 2
  attack.eot: 1
  attack.score_repeats: 2
";

/// Pixels of synthetic image `i` of class `c` (28×28 gray): a class-specific bar plus
/// seeded noise, so classes are learnable and every image differs.
pub fn synthetic_image(c: usize, i: usize) -> Vec<u8> {
    let mut s = (c as u64 * 7919 + i as u64 * 104_729) | 1;
    let mut px = vec![0u8; 28 * 28];
    for (j, p) in px.iter_mut().enumerate() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        let (y, x) = (j / 28, j % 28);
        let bar = (y / 7 == c % 4) || (x / 7 == c / 4 % 4);
        *p = if bar { 200 } else { 0 } + (s % 50) as u8;
    }
    px
}

/// Write a gray 28×28 PNG.
pub fn write_png(path: &Path, px: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut e = png::Encoder::new(std::io::BufWriter::new(f), 28, 28);
    e.set_color(png::ColorType::Grayscale);
    e.set_depth(png::BitDepth::Eight);
    e.write_header().unwrap().write_image_data(px).unwrap();
}

/// `root/<class>/<i>.png` for `classes` classes of `per_class` synthetic images.
pub fn folder_dataset(root: &Path, classes: usize, per_class: usize) {
    for c in 0..classes {
        let d = root.join(c.to_string());
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            write_png(&d.join(format!("{i:03}.png")), &synthetic_image(c, i));
        }
    }
}
