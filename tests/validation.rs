//! Bad input is rejected before any work, on the real binary: each case exits 1 with a message
//! naming the file or key and the fix, runs no training stage, and writes no result file.
//! Covers the data (class count, label range, image size), `nnmf.k` against the pixel count,
//! the output folder, thread counts, a closed stdout pipe, and the build-time git revision.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diffnmf"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env("MATMUL_NUM_THREADS", "2");
    c.env_remove("SLURM_CPUS_PER_TASK");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Small networks and a short attack, so that a job that is (wrongly) accepted still ends in
/// seconds instead of minutes.
const CHEAP: &str = "nnmf:\n  k: 4\n  max_iter: 10\ncnn:\n  channels: [2, 2, 2]\n  feature_dim: 4\n  epochs: 1\n  batch_size: 32\nclassifier:\n  hidden: [8]\n  epochs: 2\n  patience: 0\ndiffusion:\n  steps: 10\n  beta_start: 1.0e-3\n  beta_end: 0.1\n  t_star: 2\n  passes: 2\n  hidden: [8]\n  time_dim: 4\n  epochs: 1\n  batch_size: 64\n";

/// An 8×8 gray PNG with pixels derived from `seed`.
fn png8(path: &Path, seed: u32) {
    let data: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(37).wrapping_add(seed.wrapping_mul(101)) % 256) as u8)
        .collect();
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 8, 8);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(&data).unwrap();
}

/// `root/<class>/*.png`, `per_class` images in each class folder.
fn folder_dataset(root: &Path, classes: &[&str], per_class: u32) {
    for (c, name) in classes.iter().enumerate() {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..per_class {
            png8(&d.join(format!("{i:03}.png")), c as u32 * 1000 + i);
        }
    }
}

fn folder_job(root: &Path, extra: &str) -> String {
    format!(
        "data:\n  format: folder\n  root: {}\n  size: 8\n{CHEAP}{extra}",
        root.display()
    )
}

/// What a rejected run left behind.
struct Rejected {
    text: String,
    elapsed: Duration,
}

/// Run `diffnmf run <job> --out <dir>/out [args…]` and check: exit 1, every needle in the
/// output, no training stage logged, and no file in the output folder.
fn expect_rejected(dir: &Path, job_text: &str, args: &[&str], needles: &[&str]) -> Rejected {
    let job = dir.join("job.yaml");
    std::fs::write(&job, job_text).unwrap();
    let out = dir.join("out");
    let t0 = Instant::now();
    let o = bin()
        .arg("run")
        .arg(&job)
        .arg("--out")
        .arg(&out)
        .args(args)
        .output()
        .unwrap();
    let elapsed = t0.elapsed();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for n in needles {
        assert!(t.contains(n), "expected `{n}` in:\n{t}");
    }
    assert_no_training(&t);
    assert!(!t.contains("panicked"), "{t}");
    // Not even the output folder is created.
    assert!(!out.exists(), "{} was created:\n{t}", out.display());
    Rejected { text: t, elapsed }
}

fn assert_no_training(t: &str) {
    for stage in ["cnn", "nnmf", "classifier", "denoiser"] {
        assert!(
            !t.contains(&format!("[stage] {stage}:")),
            "stage `{stage}` ran before the input was rejected:\n{t}"
        );
    }
}

#[test]
fn one_class_folder_is_rejected() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("digits");
    folder_dataset(&root, &["3"], 12);
    expect_rejected(
        d.path(),
        &folder_job(&root, ""),
        &[],
        &["digits", "1 class", "data.root"],
    );
}

#[test]
fn two_class_folder_with_dlr_is_rejected_at_validation_time() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("digits");
    folder_dataset(&root, &["0", "1"], 12);
    let r = expect_rejected(
        d.path(),
        &folder_job(&root, ""),
        &[],
        &["attack.losses", "2", "[ce]"],
    );
    // Loading 24 tiny PNGs and checking them is all the work done.
    assert!(
        r.elapsed < Duration::from_secs(3),
        "took {:?}:\n{}",
        r.elapsed,
        r.text
    );
    // The named fix works: CE only runs to the end on the same data.
    let out = d.path().join("ce");
    let job = d.path().join("job.yaml");
    let o = bin()
        .arg("run")
        .arg(&job)
        .args(["--set", "attack.losses=[ce]", "--set", "attack.eps=[0.5]"])
        .args(["--set", "attack.iterations=2", "--set", "attack.eot=1"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 classes"), "{}", text(&o));
}

#[test]
fn git_revision_is_fixed_at_build_time() {
    // build.rs sets the same variable for every target of the package, this test included.
    let want = env!("DIFFNMF_GIT_REVISION");
    let hex = want.trim_end_matches("-dirty");
    if Path::new(env!("CARGO_MANIFEST_DIR")).join(".git").exists() {
        assert!(
            hex.len() == 12 && hex.chars().all(|c| c.is_ascii_hexdigit()),
            "{want}"
        );
    } else {
        assert_eq!(want, "unknown");
    }
    // Run away from the source tree with no `git` on the PATH: the result still records it.
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("digits");
    folder_dataset(&root, &["0", "1", "2"], 8);
    let job = d.path().join("job.yaml");
    std::fs::write(
        &job,
        folder_job(&root, "attack:\n  eps: [0.5]\n  iterations: 2\n  eot: 1\n"),
    )
    .unwrap();
    let out = d.path().join("out");
    let o = bin()
        .current_dir(d.path())
        .env("PATH", "")
        .arg("run")
        .arg(&job)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let f = diffnmf::results::h5::open_file(&out.join("result.h5")).unwrap();
    let got = f
        .attr("git_revision")
        .unwrap()
        .read_scalar::<hdf5::types::VarLenUnicode>()
        .unwrap();
    assert_eq!(got.as_str(), want);
}

#[test]
fn apgd_t_presets_need_four_classes() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("digits");
    folder_dataset(&root, &["0", "1", "2"], 10);
    expect_rejected(
        d.path(),
        &folder_job(&root, ""),
        &["--set", "attack.version=standard"],
        &["attack.version", "4 classes", "rand"],
    );
}

fn write_idx(dir: &Path, labels: &[u8]) -> (PathBuf, PathBuf) {
    let n = labels.len() as u32;
    let mut img = vec![0u8, 0, 8, 3];
    for v in [n, 4, 4] {
        img.extend(v.to_be_bytes());
    }
    img.extend((0..n * 16).map(|i| (i * 13 % 256) as u8));
    let mut lab = vec![0u8, 0, 8, 1];
    lab.extend(n.to_be_bytes());
    lab.extend(labels);
    let (ip, lp) = (dir.join("imgs.idx"), dir.join("lbls.idx"));
    std::fs::write(&ip, img).unwrap();
    std::fs::write(&lp, lab).unwrap();
    (ip, lp)
}

#[test]
fn idx_label_outside_the_class_range_is_rejected_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let mut labels: Vec<u8> = (0..40).map(|i| (i % 10) as u8).collect();
    labels[17] = 200;
    let (ip, lp) = write_idx(d.path(), &labels);
    let job = format!(
        "data:\n  format: idx\n  images: {}\n  labels: {}\n  size: 4\n{CHEAP}",
        ip.display(),
        lp.display()
    );
    let r = expect_rejected(
        d.path(),
        &job,
        &[],
        &["lbls.idx", "200", "index 17", "data.classes"],
    );
    assert!(!r.text.contains("201 classes"), "{}", r.text);
}

#[test]
fn nnmf_k_above_the_pixel_count_is_rejected_before_training() {
    let d = tempfile::tempdir().unwrap();
    // The embedded digits resized to 4×4: 16 pixels.
    let job = format!("data:\n  size: 4\n  subset: 300\n{CHEAP}");
    expect_rejected(
        d.path(),
        &job,
        &["--set", "nnmf.k=17"],
        &["nnmf.k", "16 pixels", "data.size"],
    );
    // per_class: k parts per class, each fitted on that class's training images (8 here).
    let root = d.path().join("digits");
    folder_dataset(&root, &["0", "1", "2", "3"], 12);
    expect_rejected(
        d.path(),
        &folder_job(&root, ""),
        &["--set", "nnmf.mode=per_class", "--set", "nnmf.k=9"],
        &["nnmf.k", "training images", "class"],
    );
}

/// `run jobs/smoke.yaml` from `cwd` (with `--out` when given) must fail at once.
fn expect_bad_out(out: Option<&Path>, cwd: &Path, needles: &[&str]) {
    let mut c = bin();
    c.current_dir(cwd)
        .arg("run")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml"));
    if let Some(out) = out {
        c.arg("--out").arg(out);
    }
    let t0 = Instant::now();
    let o = c.output().unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for n in needles {
        assert!(t.contains(n), "expected `{n}` in:\n{t}");
    }
    assert!(!t.contains("[stage]"), "work was done first:\n{t}");
    if let Some(out) = out.filter(|o| !o.starts_with("/proc")) {
        assert!(
            !out.is_dir() || out.read_dir().unwrap().next().is_none(),
            "{t}"
        );
    }
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

#[test]
fn unwritable_or_file_typed_out_is_rejected_before_work() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("plain-file");
    std::fs::write(&file, "not a folder").unwrap();
    // `--out` is a regular file.
    let here = d.path();
    expect_bad_out(Some(&file), here, &["plain-file", "--out"]);
    // `--out` lies below a regular file (mkdir fails even for root).
    let below = file.join("sub");
    expect_bad_out(Some(&below), here, &["plain-file/sub", "--out"]);
    // An existing folder where no file can be created, even by root.
    expect_bad_out(
        Some(Path::new("/proc/self")),
        here,
        &["/proc/self", "--out"],
    );
    // The default results/<name> when `results` is a regular file.
    let cwd = d.path().join("cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    std::fs::write(cwd.join("results"), "x").unwrap();
    expect_bad_out(None, &cwd, &["results/smoke", "--out"]);
}

#[test]
fn zero_or_garbage_thread_counts_are_rejected() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("out");
    let run = |threads: Option<&str>, env: Option<&str>| {
        let mut c = bin();
        c.args(["run", "jobs/smoke.yaml", "--out"]).arg(&out);
        if let Some(t) = threads {
            c.args(["--threads", t]);
        }
        if let Some(e) = env {
            c.env("SLURM_CPUS_PER_TASK", e);
        }
        c.output().unwrap()
    };
    for (threads, env, needle) in [
        (Some("0"), None, "--threads"),
        (None, Some("abc"), "SLURM_CPUS_PER_TASK=abc"),
        (None, Some("0"), "SLURM_CPUS_PER_TASK=0"),
    ] {
        let o = run(threads, env);
        let t = text(&o);
        assert_eq!(o.status.code(), Some(1), "{t}");
        assert!(t.contains(needle) && t.contains("positive"), "{t}");
        assert!(!t.contains("[stage]"), "{t}");
        assert!(!out.exists(), "{t}");
    }
    // `cell` (what every Slurm array task runs) checks the variable before anything else.
    let o = bin()
        .args(["cell", d.path().to_str().unwrap(), "--index", "0"])
        .env("SLURM_CPUS_PER_TASK", "abc")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("SLURM_CPUS_PER_TASK=abc"), "{}", text(&o));
}

#[test]
fn status_into_a_closed_pipe_ends_quietly() {
    let d = tempfile::tempdir().unwrap();
    // A sweep folder with enough cells that the listing overflows a pipe buffer.
    let mut csv = String::from("id,index,seed,status\n");
    for i in 0..3000 {
        csv.push_str(&format!("c{i:05},{i},1,pending\n"));
    }
    std::fs::write(d.path().join("cells.csv"), csv).unwrap();
    let mut child = bin()
        .arg("status")
        .arg(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The read end is closed here (like `| head -1`).
    assert!(first.starts_with("c00000"), "{first}");
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    assert_ne!(o.status.code(), Some(101), "{err}");
    // Same through a shell pipeline, as a user types it.
    let o = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" status \"$1\" | head -1")
        .arg(env!("CARGO_BIN_EXE_diffnmf"))
        .arg(d.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    assert!(err.is_empty(), "{err}");
}

/// A PNG that claims `w × h` RGBA 16-bit pixels in its header but holds only one small IDAT
/// chunk (enough for a decoder to size its output buffer from the header).
fn png_header_only(path: &Path, w: u32, h: u32) {
    use std::io::Write;
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Sixteen);
    let mut wr = enc.write_header().unwrap();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&[0; 64]).unwrap();
    wr.write_chunk(png::chunk::IDAT, &z.finish().unwrap())
        .unwrap();
    drop(wr);
}

#[test]
fn huge_png_is_rejected_naming_the_file_and_its_size() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("digits");
    folder_dataset(&root, &["0", "1", "2", "3"], 10);
    let huge = root.join("2").join("huge.png");
    png_header_only(&huge, 20000, 20000);
    let job = d.path().join("job.yaml");
    std::fs::write(&job, folder_job(&root, "attack:\n  losses: [ce]\n")).unwrap();
    // 20000×20000 RGBA16 would take 3.2 GB just for the decoder's buffer: under a 2 GB
    // address-space limit the old reader aborted with an allocation failure naming no file.
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 2000000 && exec \"$0\" run \"$1\" --threads 2 --out \"$2\"")
        .arg(env!("CARGO_BIN_EXE_diffnmf"))
        .arg(&job)
        .arg(d.path().join("out"))
        .env("MATMUL_NUM_THREADS", "2")
        .output()
        .unwrap();
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for n in ["huge.png", "20000×20000", "pixels"] {
        assert!(t.contains(n), "expected `{n}` in:\n{t}");
    }
    assert_no_training(&t);
}
