//! `diffnmf certify` end to end on the embedded data: the certification in every output,
//! the lower ≤ upper relation of the smoothed classifier, independence of the thread count,
//! an uncertified run leaving no stale certify.csv, and a `diffusion.t_star` sweep that
//! shares every trained model and aggregates the certificates across seeds.

mod common;
use common::{bin, text, CHEAP};
use std::collections::HashMap;
use std::path::Path;

/// `metric,unit,at` → value of a `certify.csv`.
fn read_csv(p: &Path) -> HashMap<(String, String, String), f64> {
    let t = std::fs::read_to_string(p).unwrap();
    let mut lines = t.lines();
    assert_eq!(lines.next(), Some("metric,unit,at,value"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                (f[0].into(), f[1].into(), f[2].into()),
                f[3].parse().unwrap(),
            )
        })
        .collect()
}

fn certify(out: &Path, threads: &str, extra: &[&str]) -> String {
    let o = bin()
        .args(["certify", "jobs/smoke.yaml", "--out"])
        .arg(out)
        .args(["--threads", threads, "--set", "attack.eps=[0,0.02,0.05]"])
        .args([
            "--set",
            "certify.n=400",
            "--set",
            "attack.checks.enabled=false",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

#[test]
fn certify_writes_every_output_and_the_lower_bound_stays_below_the_upper() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    let log = certify(&a, "2", &[]);
    for f in [
        "certify.csv",
        "certify.png",
        "certify.svg",
        "result.h5",
        "tables.md",
    ] {
        assert!(a.join(f).exists(), "{f} missing\n{log}");
    }
    let v = read_csv(&a.join("certify.csv"));
    let get = |m: &str, u: &str, at: &str| v[&(m.to_string(), u.to_string(), at.to_string())];
    // Lower ≤ upper for the same classifier g (each fails with probability ≤ α per point).
    for eps in ["0.02", "0.05"] {
        let lower = get("certified_accuracy_linf", "linf", eps);
        let upper = get("smoothed_adversarial_accuracy", "linf", eps);
        assert!(
            lower <= upper + 0.01,
            "ε {eps}: certified {lower} > empirical {upper}"
        );
        assert_eq!(get("consistency_violations", "linf", eps), 0.0);
    }
    assert!(
        get("certified_accuracy_linf", "linf", "0.02") > 0.1,
        "{v:?}"
    );
    assert!(
        get("certified_accuracy", "l2", "0") <= get("smoothed_clean_accuracy", "none", "0") + 0.02
    );
    // σ of the smoke schedule at t* = 4: linear β from 1e-3 to 0.1 over 20 steps.
    let ab: f64 = (1..=4)
        .map(|i| 1.0 - (1e-3 + (0.1 - 1e-3) * (i - 1) as f64 / 19.0))
        .product();
    assert!((get("sigma", "none", "0") - ((1.0 - ab) / ab).sqrt()).abs() < 1e-6);
    let tables = std::fs::read_to_string(a.join("tables.md")).unwrap();
    assert!(
        tables.contains("not of the R-pass probability average"),
        "{tables}"
    );
    assert!(
        tables.contains("| certificate_consistency[eps=0.05] | pass |"),
        "{tables}"
    );
    let f = hdf5::File::open(a.join("result.h5")).unwrap();
    let g = f.group("certify").unwrap();
    let radius = g.dataset("radius").unwrap().read_raw::<f64>().unwrap();
    let labels = f.dataset("test/labels").unwrap().read_raw::<u8>().unwrap();
    assert_eq!(radius.len(), labels.len());
    assert_eq!(g.attr("n").unwrap().read_scalar::<u64>().unwrap(), 400);
    // The same numbers with another thread count.
    certify(&b, "1", &[]);
    assert_eq!(
        std::fs::read_to_string(a.join("certify.csv")).unwrap(),
        std::fs::read_to_string(b.join("certify.csv")).unwrap()
    );
    // A run without certification into the same folder leaves no certify.csv behind.
    let o = bin()
        .args(["run", "jobs/smoke.yaml", "--out"])
        .arg(&b)
        .args(["--threads", "2", "--set", "attack.eps=[0]"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!b.join("certify.csv").exists());
    let f = hdf5::File::open(b.join("result.h5")).unwrap();
    assert!(f.group("certify").is_err());
}

#[test]
fn a_t_star_sweep_shares_the_models_and_aggregates_certificates_across_seeds() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ts.yaml");
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml");
    std::fs::write(
        &p,
        format!(
            "name: ts\nbase: {}\naxes:\n  diffusion.t_star: [2, 8]\nseeds: [1, 2]\n{CHEAP}  certify.enabled: true\n  certify.n: 200\n  attack.eps: [0.0, 0.05]\n",
            base.display()
        ),
    )
    .unwrap();
    let out = d.path().join("ts");
    let o = bin()
        .args(["sweep", p.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--jobs", "1", "--threads", "2"])
        .output()
        .unwrap();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // t* only changes the evaluation: one of each model per seed.
    assert!(
        t.contains("[cache] stage builds: cnn=2 nnmf=2 classifier=2 denoiser=2 "),
        "{t}"
    );
    let a = bin()
        .args(["aggregate", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(a.status.success(), "{}", text(&a));
    let s = std::fs::read_to_string(out.join("summary_certify.csv")).unwrap();
    let sigma = |ts: &str| -> (f64, usize) {
        let l = s
            .lines()
            .find(|l| l.starts_with(&format!("{ts},sigma,")))
            .unwrap_or_else(|| panic!("{s}"));
        let f: Vec<&str> = l.split(',').collect();
        (f[5].parse().unwrap(), f[4].parse().unwrap())
    };
    let ((s2, n2), (s8, n8)) = (sigma("2"), sigma("8"));
    assert_eq!((n2, n8), (2, 2), "averaged over both seeds");
    assert!(s8 > 2.0 * s2, "deeper t* smooths more: σ {s2} vs {s8}");
    let md = std::fs::read_to_string(out.join("tables.md")).unwrap();
    assert!(md.contains("## Certified L2 robustness"), "{md}");
    assert!(md.contains("t_star=8 — certified accuracy of g"), "{md}");
    assert!(out.join("plots/certify.png").exists() && out.join("plots/certify.svg").exists());
    let r = bin()
        .args(["report", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r));
    let rep = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        rep.contains("## Certified L2 robustness") && rep.contains("plots/certify.png"),
        "{rep}"
    );
}
