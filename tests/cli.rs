//! End-to-end tests of the `diffnmf` binary: a tiny job runs, writes complete results, is
//! deterministic, and bad input fails with a message naming the file and field and leaves
//! no result file behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_diffnmf"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c.env("MATMUL_NUM_THREADS", "2");
    c
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("spawn diffnmf")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn smoke_job_runs_writes_results_and_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    for out in [&a, &b] {
        let o = run(&[
            "run",
            "jobs/smoke.yaml",
            "--threads",
            "2",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("Robust_Def (adaptive)"), "{}", text(&o));
    }
    let ca = std::fs::read_to_string(a.join("metrics.csv")).unwrap();
    let cb = std::fs::read_to_string(b.join("metrics.csv")).unwrap();
    assert_eq!(ca, cb, "same config + seed must give identical metrics.csv");
    let mut lines = ca.lines();
    assert_eq!(lines.next(), Some("scenario,protocol,eps,metric,value"));
    // 2 clean scenarios + 4 robust per ε (3 budgets), 9 metrics each.
    assert_eq!(lines.count(), (2 + 4 * 3) * 9);
    let rows = diffnmf::results::h5::read_metrics(&a.join("result.h5")).unwrap();
    assert_eq!(rows.len(), (2 + 4 * 3) * 9);
    // ε = 0 rows equal the clean rows.
    let get = |s: &str, p: &str, e: f64, m: &str| {
        rows.iter()
            .find(|r| r.0.as_str() == s && r.1.as_str() == p && r.2 == e && r.3 == m)
            .unwrap_or_else(|| panic!("missing {s}/{p}/{e}/{m}"))
            .4
    };
    for m in diffnmf::metrics::METRIC_NAMES {
        assert_eq!(
            get("robust_base", "none", 0.0, m),
            get("clean_base", "none", 0.0, m)
        );
        assert_eq!(
            get("robust_def", "adaptive", 0.0, m),
            get("clean_def", "none", 0.0, m)
        );
        assert_eq!(
            get("robust_def", "transfer", 0.0, m),
            get("clean_def", "none", 0.0, m)
        );
        assert_eq!(
            get("robust_def", "worst", 0.0, m),
            get("clean_def", "none", 0.0, m)
        );
    }
    // Robust accuracy is non-increasing in ε.
    for (s, p) in [
        ("robust_base", "none"),
        ("robust_def", "adaptive"),
        ("robust_def", "transfer"),
        ("robust_def", "worst"),
    ] {
        let accs: Vec<f64> = [0.0, 0.5, 3.0]
            .iter()
            .map(|&e| get(s, p, e, "accuracy"))
            .collect();
        assert!(accs.windows(2).all(|w| w[1] <= w[0]), "{s}/{p}: {accs:?}");
    }
    let w = diffnmf::results::h5::read_f32_2d(&a.join("result.h5"), "nnmf/W").unwrap();
    assert_eq!(w.dim(), (8, 784));
    assert!(a.join("tables.md").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&a)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Run a failing job and check exit code, message and that no result.h5 was written.
fn expect_failure(job_text: &str, set: &[&str], needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("bad.yaml");
    std::fs::write(&job, job_text).unwrap();
    let out = dir.path().join("out");
    let mut args = vec!["run", job.to_str().unwrap(), "--out", out.to_str().unwrap()];
    for s in set {
        args.push("--set");
        args.push(s);
    }
    let o = run(&args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    for n in needles {
        let n = n.replace("$DIR", dir.path().to_str().unwrap());
        assert!(t.contains(&n), "expected `{n}` in:\n{t}");
    }
    assert!(!out.join("result.h5").exists());
}

#[test]
fn malformed_yaml_fails_naming_the_file() {
    expect_failure("seed: [1,\n", &[], &["bad.yaml", "invalid YAML"]);
}

#[test]
fn unknown_key_fails_naming_key_and_line() {
    expect_failure("nnmf:\n  rank: 3\n", &[], &["bad.yaml", "rank", "line 2"]);
}

#[test]
fn k_zero_and_negative_eps_fail() {
    expect_failure("nnmf:\n  k: 0\n", &[], &["bad.yaml", "nnmf.k"]);
    expect_failure("", &["attack.eps=[0.1,-1]"], &["attack.eps[1]", "-1"]);
}

#[test]
fn missing_and_truncated_idx_fail() {
    expect_failure(
        "data:\n  format: idx\n  images: /nonexistent/imgs.idx\n  labels: /nonexistent/lbl.idx\n",
        &[],
        &["/nonexistent/imgs.idx", "data.images"],
    );
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs.idx");
    let lbls = dir.path().join("lbls.idx");
    // Header says 10 images of 28x28 but only 100 bytes follow.
    let mut b = vec![0u8, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 28, 0, 0, 0, 28];
    b.extend(vec![0u8; 100]);
    std::fs::write(&imgs, &b).unwrap();
    let mut l = vec![0u8, 0, 8, 1, 0, 0, 0, 10];
    l.extend(vec![1u8; 10]);
    std::fs::write(&lbls, &l).unwrap();
    let job = format!(
        "data:\n  format: idx\n  images: {}\n  labels: {}\n",
        imgs.display(),
        lbls.display()
    );
    expect_failure(&job, &[], &["imgs.idx", "truncated"]);
}

#[test]
fn label_count_mismatch_fails_naming_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = dir.path().join("imgs.idx");
    let lbls = dir.path().join("lbls.idx");
    let mut b = vec![0u8, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4];
    b.extend(vec![0u8; 32]);
    std::fs::write(&imgs, &b).unwrap();
    let mut l = vec![0u8, 0, 8, 1, 0, 0, 0, 3];
    l.extend(vec![1u8; 3]);
    std::fs::write(&lbls, &l).unwrap();
    let job = format!(
        "data:\n  format: idx\n  images: {}\n  labels: {}\n",
        imgs.display(),
        lbls.display()
    );
    expect_failure(&job, &[], &["imgs.idx", "lbls.idx"]);
}

#[test]
fn empty_class_folder_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("digits");
    std::fs::create_dir_all(root.join("0")).unwrap();
    std::fs::create_dir_all(root.join("1")).unwrap();
    let job = format!("data:\n  format: folder\n  root: {}\n", root.display());
    expect_failure(&job, &[], &["digits"]);
}

#[test]
fn validate_prints_resolved_config() {
    let o = run(&[
        "validate",
        repo("jobs/paper.yaml").to_str().unwrap(),
        "--set",
        "nnmf.k=48",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("k: 48"));
}

#[test]
fn standard_preset_runs_apgd_t_and_square() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("std");
    let o = run(&[
        "run",
        "jobs/smoke.yaml",
        "--set",
        "attack.version=standard",
        "--set",
        "attack.square_queries=40",
        "--set",
        "attack.targets=3",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let f = diffnmf::results::h5::open_file(&out.join("result.h5")).unwrap();
    let names: Vec<String> = f
        .dataset("scenarios/robust_def_adaptive_eps0.5/fooled_by_attack")
        .unwrap()
        .read_raw::<hdf5::types::VarLenUnicode>()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for want in ["apgd-ce", "apgd-t/1", "apgd-t/3", "square", "warm-transfer"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing in {names:?}"
        );
    }
    // An unknown preset is rejected, naming the choices.
    let o = run(&[
        "validate",
        "jobs/smoke.yaml",
        "--set",
        "attack.version=strong",
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("`rand`, `standard`, `plus`"),
        "{}",
        text(&o)
    );
}

#[test]
fn checks_never_change_a_reported_row() {
    // optimize-rank skips the attack-strength checks; this proves that cannot change a row.
    let dir = tempfile::tempdir().unwrap();
    let mut csv = vec![];
    for (name, set) in [
        ("on", "attack.checks.eps=[0.5]"),
        ("off", "attack.checks.enabled=false"),
    ] {
        let out = dir.path().join(name);
        let o = run(&[
            "run",
            "jobs/smoke.yaml",
            "--set",
            set,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        let md = std::fs::read_to_string(out.join("tables.md")).unwrap();
        assert_eq!(md.contains("convergence[eps=0.5]"), name == "on", "{md}");
        csv.push(std::fs::read_to_string(out.join("metrics.csv")).unwrap());
    }
    assert_eq!(csv[0], csv[1]);
}
