//! Sweeps: grid expansion (sizes, stable ids, index ↔ cell bijection), bad sweep files
//! failing before anything runs, stage-build counts through the shared cache, a local sweep
//! of `sweeps/smoke.yaml`, and `kill -9` halfway then `--resume`.

use diffnmf::sweep::expand::{cell_id, expand};
use diffnmf::sweep::spec::{load_sweep, parse_sweep};
use std::collections::HashSet;
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

/// A sweep file over jobs/smoke.yaml with the given body (axes, seeds, set …).
fn sweep_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    let base = repo("jobs/smoke.yaml");
    std::fs::write(
        &p,
        format!("name: {name}\nbase: {}\n{body}", base.display()),
    )
    .unwrap();
    p
}

/// Settings that make a smoke cell take a fraction of a second in debug builds.
mod common;

use common::CHEAP;

#[test]
fn every_repo_sweep_expands_to_the_product_of_its_axes() {
    for f in std::fs::read_dir(repo("sweeps")).unwrap() {
        let p = f.unwrap().path();
        let spec = load_sweep(&p, &[]).unwrap();
        let cells = expand(&spec).unwrap();
        let n: usize =
            spec.axes.iter().map(|a| a.values.len()).product::<usize>() * spec.seeds.len().max(1);
        assert_eq!(cells.len(), n, "{}", p.display());
        if p.ends_with("rank_eps.yaml") {
            assert_eq!(cells.len(), 16 * 5 * 5);
            assert_eq!(cells[0].job.config.nnmf.k, 8);
            assert_eq!(cells[cells.len() - 1].job.config.nnmf.k, 128);
        }
    }
}

#[test]
fn expansion_is_deterministic_and_a_bijection() {
    let d = tempfile::tempdir().unwrap();
    let p = sweep_file(
        d.path(),
        "grid",
        "axes:\n  nnmf.k: {range: [4, 10], step: 3}\n  attack.eps: {log: [0.1, 1.0], num: 3}\n  classifier.hidden: [[8], [16, 8]]\nseeds: [7, 9]\n",
    );
    let spec = load_sweep(&p, &[]).unwrap();
    let a = expand(&spec).unwrap();
    let b = expand(&load_sweep(&p, &[]).unwrap()).unwrap();
    assert_eq!(a.len(), 3 * 3 * 2 * 2);
    let ids: Vec<&str> = a.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, b.iter().map(|c| c.id.as_str()).collect::<Vec<_>>());
    let mut seen = HashSet::new();
    for (i, c) in a.iter().enumerate() {
        assert_eq!(c.index, i);
        assert_eq!(c.id, cell_id(i, &c.job.resolved_yaml));
        assert!(c.id.starts_with(&format!("c{i:04}-")) && c.id.len() == 14);
        let cfg = &c.job.config;
        assert!(seen.insert((
            cfg.nnmf.k,
            format!("{:?}", cfg.attack.eps),
            cfg.classifier.hidden.clone(),
            cfg.seed
        )));
        assert_eq!(
            cfg.attack.eps.len(),
            1,
            "a scalar ε value becomes a one-element list"
        );
    }
    // Seeds vary fastest, then the last axis, …, the first axis slowest.
    assert_eq!((a[0].seed, a[1].seed), (7, 9));
    assert_eq!(a[0].job.config.nnmf.k, 4);
    assert_eq!(a[2].job.config.classifier.hidden, vec![16, 8]);
    assert_eq!(a[4].job.config.attack.eps, vec![0.316228]);
    assert_eq!(a[12].job.config.nnmf.k, 7);
    assert_eq!(a[35].job.config.nnmf.k, 10);
}

#[test]
fn bad_sweep_files_fail_naming_the_key_and_file() {
    let d = tempfile::tempdir().unwrap();
    let cases = [
        ("unknown", "axes:\n  nnmf.kk: [4, 8]\n", "nnmf.kk"),
        ("empty", "axes:\n  nnmf.k: []\n", "nnmf.k"),
        (
            "zero",
            "axes:\n  nnmf.k: {range: [8, 4], step: 1}\n",
            "nnmf.k",
        ),
        ("noseeds", "axes:\n  nnmf.k: [4]\nseeds: []\n", "seeds"),
        (
            "step0",
            "axes:\n  nnmf.k: {range: [4, 8], step: 0}\n",
            "step",
        ),
        (
            "stepneg",
            "axes:\n  nnmf.k: {range: [4, 8], step: -2}\n",
            "nnmf.k",
        ),
        ("badval", "axes:\n  nnmf.k: [4, -1]\n", "nnmf.k"),
        ("setkey", "set:\n  cnn.nope: 1\n", "cnn.nope"),
        (
            "newline",
            "slurm:\n  partition: \"a\\nb\"\n",
            "slurm.partition",
        ),
        ("slurmkey", "slurm:\n  partitoin: x\n", "slurm.partitoin"),
    ];
    for (name, body, key) in cases {
        let p = sweep_file(d.path(), name, body);
        let r = load_sweep(&p, &[]).and_then(|s| expand(&s));
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{name}: expected an error"))
            .to_string();
        assert!(
            e.contains(key) && e.contains(&format!("{name}.yaml")),
            "{name}: {e}"
        );
        // The CLI fails the same way and creates nothing.
        let out = d.path().join(format!("out-{name}"));
        let o = bin()
            .args(["sweep", p.to_str().unwrap(), "--out", out.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            !o.status.success() && text(&o).contains(key),
            "{name}: {}",
            text(&o)
        );
        assert!(!out.exists(), "{name}: nothing may be written");
    }
    let e = parse_sweep(Path::new("x.yaml"), "base: nope.yaml\n", &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("base") && e.contains("nope.yaml"), "{e}");
}

#[test]
fn a_4k_4eps_3seed_sweep_trains_3_cnns_and_12_nnmf_models() {
    let d = tempfile::tempdir().unwrap();
    let body = format!("axes:\n  nnmf.k: [2, 3, 4, 5]\n  attack.eps: [0.1, 0.5, 1.0, 3.0]\nseeds: [1, 2, 3]\n{CHEAP}");
    let p = sweep_file(d.path(), "counts", &body);
    let out = d.path().join("counts");
    let o = bin()
        .args([
            "sweep",
            p.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "2",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("[cache] stage builds: cnn=3 nnmf=12 classifier=12 denoiser=12 "),
        "{t}"
    );
    let csv = std::fs::read_to_string(out.join("cells.csv")).unwrap();
    assert_eq!(
        csv.lines().next().unwrap(),
        "id,index,nnmf.k,attack.eps,seed,status"
    );
    assert_eq!(csv.lines().filter(|l| l.ends_with(",done")).count(), 48);
    let entries = |s: &str| {
        std::fs::read_dir(out.join("cache").join(s))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "h5")
            })
            .count()
    };
    assert_eq!((entries("cnn"), entries("nnmf")), (3, 12));
}

/// `attack.threat` is an ordinary axis, and feature- and pixel-space cells of one
/// (k, seed) share every trained model through the stage cache: 2 threats × 2 k train one
/// CNN and two of everything else; each cell's result.h5 names its threat model.
#[test]
fn a_threat_axis_shares_every_trained_model_between_feature_and_pixel_cells() {
    let d = tempfile::tempdir().unwrap();
    let body = format!(
        "axes:\n  attack.threat: [feature, pixel]\n  nnmf.k: [4, 6]\n  attack.eps: [0.3]\nseeds: [1]\n{CHEAP}"
    );
    let p = sweep_file(d.path(), "threats", &body);
    let out = d.path().join("threats");
    let o = bin()
        .args(["sweep", p.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--jobs", "1", "--threads", "2"])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("[cache] stage builds: cnn=1 nnmf=2 classifier=2 denoiser=2 "),
        "{t}"
    );
    let ids = diffnmf::sweep::layout::read_cell_ids(&out).unwrap();
    assert_eq!(ids.len(), 4);
    let mut threats = vec![];
    for id in &ids {
        let cd = out.join("cells").join(id);
        let f = hdf5::File::open(cd.join("result.h5")).unwrap();
        let a: hdf5::types::VarLenUnicode = f.attr("threat_model").unwrap().read_scalar().unwrap();
        let job = std::fs::read_to_string(cd.join("job.yaml")).unwrap();
        assert!(
            job.contains(&format!("threat: {}", a.as_str())),
            "{id}: {a}"
        );
        threats.push(a.to_string());
    }
    threats.sort();
    assert_eq!(threats, ["feature", "feature", "pixel", "pixel"]);
}

fn result_opens(p: &Path) -> bool {
    diffnmf::results::h5::read_metrics(p).is_ok_and(|m| !m.is_empty())
}

#[test]
fn local_smoke_sweep_produces_every_cell() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("smoke");
    let o = bin()
        .args([
            "sweep",
            "sweeps/smoke.yaml",
            "--out",
            out.to_str().unwrap(),
            "--set",
            "attack.iterations=3",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("cnn=2 nnmf=4"), "{}", text(&o));
    let ids = diffnmf::sweep::layout::read_cell_ids(&out).unwrap();
    assert_eq!(ids.len(), 8);
    for id in &ids {
        let cd = out.join("cells").join(id);
        assert!(result_opens(&cd.join("result.h5")), "{id}");
        assert!(cd.join("metrics.csv").exists() && cd.join("job.yaml").exists());
        // Every cell keeps its models, also when its stages came from the cache.
        let m = diffnmf::models::file::read(&cd.join("models.h5"))
            .unwrap_or_else(|e| panic!("{id}: models.h5 reads back: {e}"));
        assert!(!m.eval.ids.is_empty(), "{id}");
    }
    assert!(std::fs::read_to_string(out.join("sweep.yaml"))
        .unwrap()
        .contains("cells: 8"));
    let s = bin()
        .args(["status", out.to_str().unwrap(), "--verify"])
        .output()
        .unwrap();
    assert!(
        text(&s).contains("done 8, running 0, pending 0, failed 0 (of 8)"),
        "{}",
        text(&s)
    );
    // Without --resume a finished sweep is not overwritten.
    let again = bin()
        .args([
            "sweep",
            "sweeps/smoke.yaml",
            "--out",
            out.to_str().unwrap(),
            "--set",
            "attack.iterations=3",
        ])
        .output()
        .unwrap();
    assert!(!again.status.success() && text(&again).contains("--resume"));
}

#[test]
fn kill_9_halfway_then_resume_completes_without_recomputing() {
    let d = tempfile::tempdir().unwrap();
    // Each cell does real work (a few seconds in debug), one at a time.
    let body = "axes:\n  nnmf.k: [4, 8]\n  attack.eps: [0.5, 3.0]\nseeds: [1, 2]\nset:\n  cnn.epochs: 3\n  attack.iterations: 20\n";
    let p = sweep_file(d.path(), "killme", body);
    let out = d.path().join("killme");
    let args = [
        "sweep",
        p.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "1",
        "--threads",
        "2",
    ];
    let mut child = bin()
        .args(args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let results = |out: &Path| -> Vec<PathBuf> {
        let Ok(rd) = std::fs::read_dir(out.join("cells")) else {
            return vec![];
        };
        rd.map(|e| e.unwrap().path().join("result.h5"))
            .filter(|p| p.exists())
            .collect()
    };
    let t = std::time::Instant::now();
    while results(&out).len() < 2 {
        assert!(t.elapsed().as_secs() < 120, "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed; make cells slower"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before: Vec<(PathBuf, std::time::SystemTime)> = results(&out)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, m)
        })
        .collect();
    assert!(
        done_before.len() < 8,
        "killed too late: {}",
        done_before.len()
    );
    let o = bin().args(args).arg("--resume").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("{} to run", 8 - done_before.len())),
        "{}",
        text(&o)
    );
    let all = results(&out);
    assert_eq!(all.len(), 8);
    for p in &all {
        assert!(result_opens(p), "{}", p.display());
    }
    for (p, m) in &done_before {
        assert_eq!(
            std::fs::metadata(p).unwrap().modified().unwrap(),
            *m,
            "{} was recomputed",
            p.display()
        );
    }
    // The log shows each finished cell started exactly once.
    let log = std::fs::read_to_string(out.join("sweep.log")).unwrap();
    for (p, _) in &done_before {
        let id = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
        assert_eq!(
            log.matches(&format!("started {id} ")).count(),
            1,
            "{id}\n{log}"
        );
    }
}
