//! The stored robust results of a real (tiny) run, checked from `result.h5` alone with an
//! independent implementation of the nine metrics: every row's metrics equal the ones
//! recomputed from its stored probabilities, and the per-sample worst case is never better
//! than either protocol it combines.

#![allow(clippy::needless_range_loop)] // the independent metrics index classes on purpose
use std::path::Path;
use std::process::Command;

fn run_smoke(out: &Path) {
    let o = Command::new(env!("CARGO_BIN_EXE_diffnmf"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["run", "jobs/smoke.yaml", "--threads", "2", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Independent metrics: direct formulas, ROC-AUC by explicit pair counting (O(n²)).
fn nine(y: &[usize], p: &[Vec<f64>], k: usize) -> [f64; 9] {
    let n = y.len() as f64;
    let pred: Vec<usize> = p
        .iter()
        .map(|r| {
            let mut b = 0;
            for c in 1..k {
                if r[c] > r[b] {
                    b = c;
                }
            }
            b
        })
        .collect();
    let acc = y.iter().zip(&pred).filter(|(a, b)| a == b).count() as f64 / n;
    let cnt = |f: &dyn Fn(usize) -> bool| (0..y.len()).filter(|&i| f(i)).count() as f64;
    let labels: Vec<usize> = (0..k)
        .filter(|&c| y.contains(&c) || pred.contains(&c))
        .collect();
    let (mut pr, mut re, mut f1) = (0.0, 0.0, 0.0);
    for &c in &labels {
        let tp = cnt(&|i| y[i] == c && pred[i] == c);
        let np = cnt(&|i| pred[i] == c);
        let nt = cnt(&|i| y[i] == c);
        pr += if np > 0.0 { tp / np } else { 0.0 };
        re += if nt > 0.0 { tp / nt } else { 0.0 };
        f1 += if np + nt > 0.0 {
            2.0 * tp / (np + nt)
        } else {
            0.0
        };
    }
    let l = labels.len() as f64;
    let present: Vec<usize> = (0..k).filter(|&c| y.contains(&c)).collect();
    let bal = present
        .iter()
        .map(|&c| cnt(&|i| y[i] == c && pred[i] == c) / cnt(&|i| y[i] == c))
        .sum::<f64>()
        / present.len() as f64;
    // MCC (Gorodkin) as the Pearson-type ratio of the K-class confusion matrix.
    let t: Vec<f64> = (0..k).map(|c| cnt(&|i| y[i] == c)).collect();
    let q: Vec<f64> = (0..k).map(|c| cnt(&|i| pred[i] == c)).collect();
    let corr = acc * n;
    let num = corr * n - (0..k).map(|c| t[c] * q[c]).sum::<f64>();
    let den = ((n * n - q.iter().map(|v| v * v).sum::<f64>())
        * (n * n - t.iter().map(|v| v * v).sum::<f64>()))
    .sqrt();
    let mcc = if den == 0.0 { 0.0 } else { num / den };
    let mut aucs = vec![];
    for c in 0..k {
        let pos: Vec<f64> = (0..y.len())
            .filter(|&i| y[i] == c)
            .map(|i| p[i][c])
            .collect();
        let neg: Vec<f64> = (0..y.len())
            .filter(|&i| y[i] != c)
            .map(|i| p[i][c])
            .collect();
        if pos.is_empty() || neg.is_empty() {
            continue;
        }
        let mut s = 0.0;
        for a in &pos {
            for b in &neg {
                s += if a > b {
                    1.0
                } else if a == b {
                    0.5
                } else {
                    0.0
                };
            }
        }
        aucs.push(s / (pos.len() * neg.len()) as f64);
    }
    let auc = aucs.iter().sum::<f64>() / aucs.len() as f64;
    let ll = (0..y.len())
        .map(|i| -p[i][y[i]].clamp(f64::EPSILON, 1.0 - f64::EPSILON).ln())
        .sum::<f64>()
        / n;
    let brier = (0..y.len())
        .map(|i| {
            (0..k)
                .map(|c| (p[i][c] - if c == y[i] { 1.0 } else { 0.0 }).powi(2))
                .sum::<f64>()
        })
        .sum::<f64>()
        / n;
    [acc, pr / l, re / l, f1 / l, mcc, bal, auc, ll, brier]
}

#[test]
fn stored_worst_case_rows_recompute_and_bound_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run_smoke(&out);
    let h5 = out.join("result.h5");
    let f = diffnmf::results::h5::open_file(&h5).unwrap();
    let y: Vec<usize> = f
        .dataset("test/labels")
        .unwrap()
        .read_raw::<u8>()
        .unwrap()
        .into_iter()
        .map(usize::from)
        .collect();
    let rows = diffnmf::results::h5::read_metrics(&h5).unwrap();
    let proba = |key: &str| -> Vec<Vec<f64>> {
        let a = f
            .dataset(&format!("scenarios/{key}/proba"))
            .unwrap()
            .read_2d::<f32>()
            .unwrap();
        a.rows()
            .into_iter()
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect()
    };
    let names = diffnmf::metrics::METRIC_NAMES;
    let mut n_rows = 0;
    for g in f.group("scenarios").unwrap().member_names().unwrap() {
        let sc = f.group(&format!("scenarios/{g}")).unwrap();
        let s: String = sc
            .attr("scenario")
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .unwrap()
            .to_string();
        let p: String = sc
            .attr("protocol")
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .unwrap()
            .to_string();
        let e: f64 = sc.attr("eps").unwrap().read_scalar().unwrap();
        let pr = proba(&g);
        let k = pr[0].len();
        let want = nine(&y, &pr, k);
        for (m, w) in names.iter().zip(want) {
            let got = rows
                .iter()
                .find(|r| r.0.as_str() == s && r.1.as_str() == p && r.2 == e && r.3 == *m)
                .unwrap_or_else(|| panic!("{g}: no stored {m}"))
                .4;
            assert!(
                (got - w).abs() <= 1e-9 * (1.0 + w.abs()),
                "{g} {m}: stored {got} vs recomputed {w}"
            );
        }
        n_rows += 1;
    }
    assert_eq!(n_rows, 2 + 4 * 3, "clean rows + 4 robust rows per ε");
    // Per sample: the worst case is misclassified where either protocol is, and never has
    // a higher true-class probability than a protocol it combines (when both are correct).
    for e in ["0.5", "3"] {
        let w = proba(&format!("robust_def_worst_eps{e}"));
        for other in ["transfer", "adaptive"] {
            let o = proba(&format!("robust_def_{other}_eps{e}"));
            let arg = |r: &Vec<f64>| (0..r.len()).fold(0, |b, c| if r[c] > r[b] { c } else { b });
            for i in 0..y.len() {
                let (wb, ob) = (arg(&w[i]) != y[i], arg(&o[i]) != y[i]);
                assert!(
                    wb || !ob,
                    "ε {e} point {i}: broken by {other} but not in the worst case"
                );
                if !wb && !ob {
                    assert!(
                        w[i][y[i]] <= o[i][y[i]] + 1e-7,
                        "ε {e} point {i} vs {other}"
                    );
                }
            }
        }
    }
    let checks = f.group("checks").unwrap();
    let cn: Vec<String> = checks
        .dataset("name")
        .unwrap()
        .read_raw::<hdf5::types::VarLenUnicode>()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    for want in [
        "randomness_detected",
        "nonzero_input_gradients",
        "base_reaches_zero",
    ] {
        assert!(cn.iter().any(|c| c == want), "missing check {want}: {cn:?}");
    }
}
