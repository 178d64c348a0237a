//! Full disks on the real binary (issue 11): `run` and a local `sweep` on a small tmpfs that
//! fills up mid-write exit non-zero with a message naming the file and "No space left" —
//! never a crash (HDF5 used to segfault in `H5D__flush_all_cb ← H5Fflush` after the first
//! failed write) —, leave nothing partial visible (no result file, no temporary), keep an
//! earlier output set untouched, and complete once space is freed (a rerun, `--resume`).
//!
//! Mounting needs root; where `mount -t tmpfs` is not permitted each test prints
//! `SKIPPED: <reason>` to stderr (bypassing the test harness's capture) and returns. Every
//! test mounts its own tmpfs under its own temporary folder, so they run in parallel, and a
//! guard unmounts it however the test ends.

use diffnmf::results::h5::check_complete;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diffnmf"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Print past the harness's output capture (a skip is never silent).
fn skipped(reason: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// Settings that make a smoke run take a fraction of a second (as in tests/sweep.rs).
const CHEAP: [(&str, &str); 13] = [
    ("data.subset", "200"),
    ("nnmf.max_iter", "5"),
    ("cnn.channels", "[2, 2, 2]"),
    ("cnn.feature_dim", "4"),
    ("cnn.epochs", "1"),
    ("classifier.hidden", "[8]"),
    ("classifier.epochs", "2"),
    ("diffusion.epochs", "1"),
    ("diffusion.hidden", "[8]"),
    ("diffusion.passes", "2"),
    ("attack.iterations", "2"),
    ("attack.eot", "1"),
    ("attack.score_repeats", "2"),
];

fn cheap_args() -> Vec<String> {
    CHEAP
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// A mounted tmpfs; unmounted (and its temporary folder, if any, removed) on drop.
struct Tmpfs {
    _dir: Option<tempfile::TempDir>,
    mnt: PathBuf,
}

impl Tmpfs {
    /// A tmpfs on a fresh temporary folder.
    fn mount(size_kib: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
        let mut fs = Tmpfs::mount_on(&dir.path().join("mnt"), size_kib)?;
        fs._dir = Some(dir);
        Ok(fs)
    }

    /// A tmpfs on `mnt` (created if missing).
    fn mount_on(mnt: &Path, size_kib: u64) -> Result<Tmpfs, String> {
        let mnt = mnt.to_path_buf();
        std::fs::create_dir_all(&mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(&mnt)
            .output()
            .map_err(|e| format!("cannot run `mount`: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "`mount -t tmpfs` is not permitted here ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
            ));
        }
        Ok(Tmpfs { _dir: None, mnt })
    }

    fn avail_kib(&self) -> u64 {
        let o = Command::new("df")
            .args(["-k", "--output=avail"])
            .arg(&self.mnt)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    /// Fill the file system with `filler` until `left_kib` KiB are free.
    ///
    /// Space freed just before (removed folders, an exited process's files) can show up in
    /// `df` a moment late, so the filler is topped up until the free space holds still at
    /// the target instead of trusting one measurement.
    fn fill_leaving(&self, left_kib: u64) -> PathBuf {
        use std::io::Write;
        let filler = self.mnt.join("filler");
        let _ = std::fs::remove_file(&filler);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .unwrap();
        let mut settled = 0;
        for _ in 0..50 {
            let n = self.avail_kib().saturating_sub(left_kib);
            if n == 0 {
                settled += 1;
                if settled == 3 {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            settled = 0;
            f.write_all(&vec![0u8; (n * 1024) as usize]).unwrap();
            f.sync_all().unwrap();
        }
        let left = self.avail_kib();
        assert!(
            left <= left_kib + 4,
            "tmpfs has {left} KiB left, wanted {left_kib}"
        );
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

/// Every file under `dir` (recursive), as paths relative to `dir`.
fn files(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn temporaries(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|f| f.contains(".tmp."))
        .collect()
}

/// The failure contract on a full disk: an exit code (no signal), non-zero, and a message
/// naming a file under `under` and saying "No space left".
fn assert_clean_enospc(o: &Output, under: &Path, what: &str) {
    let t = text(o);
    assert!(
        o.status.code().is_some(),
        "{what}: killed by a signal ({}):\n{t}",
        o.status
    );
    assert!(
        !o.status.success(),
        "{what}: succeeded on a full disk:\n{t}"
    );
    assert!(
        t.contains("No space left"),
        "{what}: no ENOSPC message:\n{t}"
    );
    assert!(
        t.contains(&under.display().to_string()),
        "{what}: the message names no file under {}:\n{t}",
        under.display()
    );
}

const OUTPUTS: [&str; 4] = ["result.h5", "models.h5", "metrics.csv", "tables.md"];

fn run(out: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["run", "jobs/smoke.yaml", "--out", out.to_str().unwrap()])
        .args(cheap_args())
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn run_on_a_full_disk_fails_cleanly_and_succeeds_once_space_is_freed() {
    let fs = match Tmpfs::mount(4096) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    // How much a run writes (the failing runs below stop at different files).
    let probe = fs.mnt.join("probe");
    let o = run(&probe, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let need: u64 = OUTPUTS
        .iter()
        .map(|n| std::fs::metadata(probe.join(n)).unwrap().len())
        .sum::<u64>()
        .div_ceil(1024);
    std::fs::remove_dir_all(&probe).unwrap();

    // Space for none of the files, for the text files only (models.h5 fails), and for all
    // but the last few KiB.
    for left in [4, 24, need.saturating_sub(8).max(28)] {
        let out = fs.mnt.join(format!("r{left}"));
        let filler = fs.fill_leaving(left);
        let o = run(&out, &[]);
        assert_clean_enospc(&o, &out, &format!("run with {left} KiB left"));
        for n in OUTPUTS {
            assert!(!out.join(n).exists(), "{left} KiB left: {n} is visible");
        }
        assert_eq!(
            temporaries(&fs.mnt),
            Vec::<String>::new(),
            "{left} KiB left"
        );
        std::fs::remove_file(&filler).unwrap();
        let o = run(&out, &[]);
        assert!(
            o.status.success(),
            "rerun after freeing space: {}",
            text(&o)
        );
        check_complete(&out.join("result.h5")).unwrap();
        assert_eq!(
            files(&out),
            ["metrics.csv", "models.h5", "result.h5", "tables.md"]
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn a_full_disk_leaves_the_previous_output_set_untouched() {
    let fs = match Tmpfs::mount(4096) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    let out = fs.mnt.join("r");
    let o = run(&out, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let before: Vec<Vec<u8>> = OUTPUTS
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    // Room for the new metrics.csv and tables.md, not for the new models.h5 and result.h5.
    let filler = fs.fill_leaving(24);
    let o = run(&out, &["--set", "seed=2"]);
    assert_clean_enospc(&o, &out, "second run");
    let after: Vec<Vec<u8>> = OUTPUTS
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    assert!(before == after, "the earlier output set was modified");
    assert_eq!(
        files(&out),
        ["metrics.csv", "models.h5", "result.h5", "tables.md"]
    );
    std::fs::remove_file(&filler).unwrap();
    let o = run(&out, &["--set", "seed=2"]);
    assert!(o.status.success(), "{}", text(&o));
    let f = diffnmf::results::h5::open_file(&out.join("result.h5")).unwrap();
    assert_eq!(f.attr("seed").unwrap().read_scalar::<u64>().unwrap(), 2);
}

/// A 2-cell sweep over jobs/smoke.yaml (shared CNN stage) with the cheap settings.
fn sweep_file(dir: &Path) -> PathBuf {
    let p = dir.join("full.yaml");
    let set: String = CHEAP.iter().map(|(k, v)| format!("  {k}: {v}\n")).collect();
    std::fs::write(
        &p,
        format!(
            "name: full\nbase: {}\naxes:\n  nnmf.k: [4, 8]\nseeds: [1]\nset:\n{set}",
            repo("jobs/smoke.yaml").display()
        ),
    )
    .unwrap();
    p
}

fn sweep(file: &Path, out: &Path, resume: bool) -> Output {
    let mut c = bin();
    c.args([
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .args(["--jobs", "1"]);
    if resume {
        c.arg("--resume");
    }
    c.output().unwrap()
}

#[test]
fn sweep_on_a_full_disk_fails_cleanly_and_resume_completes() {
    let fs = match Tmpfs::mount(8192) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    let spec_dir = tempfile::tempdir().unwrap();
    let file = sweep_file(spec_dir.path());
    // Sizes of a complete sweep: its folder without the stage cache, and the cache.
    let probe = fs.mnt.join("probe");
    let o = sweep(&file, &probe, false);
    assert!(o.status.success(), "{}", text(&o));
    let kib = |fs: &[String], root: &Path| -> u64 {
        fs.iter()
            .map(|f| {
                std::fs::metadata(root.join(f))
                    .unwrap()
                    .len()
                    .div_ceil(4096)
                    * 4
            })
            .sum()
    };
    let all = files(&probe);
    let (cache, rest): (Vec<String>, Vec<String>) =
        all.into_iter().partition(|f| f.starts_with("cache/"));
    let (cache_kib, rest_kib) = (kib(&cache, &probe), kib(&rest, &probe));
    std::fs::remove_dir_all(&probe).unwrap();

    // From too little for the sweep's own files, through stage-cache writes, to the cells'
    // result files: every one fails cleanly and `--resume` completes.
    let lefts = [
        8,
        rest_kib / 2,
        rest_kib + cache_kib / 3,
        rest_kib + cache_kib / 2,
    ];
    for (i, left) in lefts.into_iter().enumerate() {
        let out = fs.mnt.join(format!("s{i}"));
        let filler = fs.fill_leaving(left);
        let o = sweep(&file, &out, false);
        let what = format!("sweep with {left} KiB left");
        assert_clean_enospc(&o, &out, &what);
        assert_eq!(temporaries(&out), Vec::<String>::new(), "{what}");
        for f in files(&out).iter().filter(|f| f.ends_with("result.h5")) {
            check_complete(&out.join(f)).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        std::fs::remove_file(&filler).unwrap();
        let o = sweep(&file, &out, true);
        assert!(o.status.success(), "{what}, then --resume: {}", text(&o));
        let results: Vec<String> = files(&out)
            .into_iter()
            .filter(|f| f.starts_with("cells/") && f.ends_with("/result.h5"))
            .collect();
        assert_eq!(results.len(), 2, "{what}, then --resume: {results:?}");
        for f in &results {
            check_complete(&out.join(f)).unwrap();
        }
        assert_eq!(temporaries(&out), Vec::<String>::new(), "{what}");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn a_stage_cache_write_on_a_full_disk_fails_cleanly_and_resume_completes() {
    let fs = match Tmpfs::mount(8192) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    let spec_dir = tempfile::tempdir().unwrap();
    let file = sweep_file(spec_dir.path());
    // The stage cache on its own, nearly full tmpfs: the first entry write (the CNN's,
    // about 12 KiB) hits ENOSPC, whatever the sizes of the sweep's other files.
    let out = fs.mnt.join("s");
    let cache = Tmpfs::mount_on(&out.join("cache"), 1024).unwrap();
    let filler = cache.fill_leaving(4);
    let o = sweep(&file, &out, false);
    assert_clean_enospc(&o, &out.join("cache"), "sweep with a full stage cache");
    let t = text(&o);
    assert!(t.contains(".h5: writing failed"), "{t}");
    assert_eq!(temporaries(&out), Vec::<String>::new());
    let entries: Vec<String> = files(&out.join("cache"))
        .into_iter()
        .filter(|f| f.ends_with(".h5"))
        .collect();
    assert_eq!(
        entries,
        Vec::<String>::new(),
        "a failed entry write left an entry"
    );
    assert!(files(&out).iter().all(|f| !f.ends_with("result.h5")));
    std::fs::remove_file(&filler).unwrap();
    let o = sweep(&file, &out, true);
    assert!(
        o.status.success(),
        "--resume after freeing space: {}",
        text(&o)
    );
    for id in files(&out).iter().filter(|f| f.ends_with("/job.yaml")) {
        check_complete(&out.join(id.replace("job.yaml", "result.h5"))).unwrap();
    }
    assert_eq!(temporaries(&out), Vec::<String>::new());
}

#[test]
fn a_cell_on_a_full_disk_fails_cleanly_and_succeeds_once_space_is_freed() {
    let fs = match Tmpfs::mount(8192) {
        Ok(fs) => fs,
        Err(why) => return skipped(&why),
    };
    let spec_dir = tempfile::tempdir().unwrap();
    let file = sweep_file(spec_dir.path());
    let out = fs.mnt.join("c");
    let o = sweep(&file, &out, false);
    assert!(o.status.success(), "{}", text(&o));
    let cell0 = files(&out)
        .into_iter()
        .find(|f| f.starts_with("cells/") && f.ends_with("/result.h5"))
        .map(|f| out.join(f).parent().unwrap().to_path_buf())
        .unwrap();
    let undo = |with_cache: bool| {
        for f in OUTPUTS {
            let _ = std::fs::remove_file(cell0.join(f));
        }
        if with_cache {
            std::fs::remove_dir_all(out.join("cache")).unwrap();
        }
    };
    let index = |d: &Path| -> String {
        let id = d.file_name().unwrap().to_string_lossy().to_string();
        let csv = std::fs::read_to_string(out.join("cells.csv")).unwrap();
        csv.lines()
            .find(|l| l.starts_with(&id))
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_string()
    };
    let i = index(&cell0);
    let cell = || {
        bin()
            .args(["cell", out.to_str().unwrap(), "--index", &i])
            .output()
            .unwrap()
    };
    // Nothing left for the claim, then for the stage cache (the cell must rebuild it), then
    // for the result files only (stages cached).
    for (left, with_cache) in [(0, true), (16, true), (8, false)] {
        undo(with_cache);
        let what = format!("cell with {left} KiB left (cache removed: {with_cache})");
        let filler = fs.fill_leaving(left);
        let o = cell();
        assert_clean_enospc(&o, &out, &what);
        assert!(!cell0.join("result.h5").exists(), "{what}");
        assert!(!cell0.join("running").exists(), "{what}: claim left behind");
        assert_eq!(temporaries(&out), Vec::<String>::new(), "{what}");
        std::fs::remove_file(&filler).unwrap();
        let o = cell();
        assert!(o.status.success(), "{what}, then again: {}", text(&o));
        check_complete(&cell0.join("result.h5")).unwrap();
    }
}
