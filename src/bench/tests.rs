//! Smoke tests of the harness (no timing assertions).

use super::*;

#[test]
fn quick_nnmf_bench_prints_rows_and_reaches_target() {
    crate::progress::set_quiet(true);
    let args = BenchOptions {
        quick: true,
        repeats: Some(1),
        stages: vec!["nnmf_fit".into(), "nnmf_accel".into()],
        ..BenchOptions::default()
    };
    let table = bench(&args, 2).unwrap();
    let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| nnmf")).collect();
    assert_eq!(rows.len(), 4, "{table}"); // init, exact-SVD init, fit, accel for k = 16
    let exact = rows
        .iter()
        .find(|r| r.starts_with("| nnmf_fit_init_exact |"))
        .unwrap();
    assert!(exact.contains("rel. "), "{exact}");
    assert!(rows
        .iter()
        .any(|r| r.starts_with("| nnmf_fit |") && r.contains("GFLOP/s")));
    let accel = rows
        .iter()
        .find(|r| r.starts_with("| nnmf_accel |"))
        .unwrap();
    assert!(accel.contains("(reached"), "{accel}");
    assert!(table.contains("| peak_sgemm_matrixmultiply |"));
}

#[test]
fn unknown_stage_is_refused() {
    let args = BenchOptions {
        quick: true,
        stages: vec!["nnmf_fitt".into()],
        ..BenchOptions::default()
    };
    let e = bench(&args, 1).unwrap_err().to_string();
    assert!(e.contains("nnmf_fitt") && e.contains("nnmf_fit,"), "{e}");
}

#[test]
fn time_it_runs_warmup_and_repeats() {
    let mut calls = 0;
    let (t, last) = time_it(1, 5, || {
        calls += 1;
        Ok(calls)
    })
    .unwrap();
    assert_eq!((calls, last, t.runs), (6, 6, 5));
}

#[test]
fn timing_statistics_of_known_times() {
    let t = Timing::of(vec![5.0, 1.0, 3.0, 2.0, 4.0]);
    assert_eq!((t.median, t.min, t.runs), (3.0, 1.0, 5));
    let t = Timing::of(vec![4.0, 10.0, 2.0, 8.0]);
    assert_eq!((t.median, t.min, t.runs), (6.0, 2.0, 4));
    let t = Timing::of(vec![7.5]);
    assert_eq!((t.median, t.min), (7.5, 7.5));
}

#[test]
fn split_sizes_match_the_paper_fractions() {
    let (a, b, c) = split_indices(10_000);
    assert_eq!((a.len(), b.len(), c.len()), (7_000, 1_500, 1_500));
    assert!(a.iter().chain(&b).chain(&c).all(|&i| i < 10_000));
}

#[test]
fn quick_fingerprint_bench_prints_three_rows() {
    crate::progress::set_quiet(true);
    let args = BenchOptions {
        quick: true,
        repeats: Some(1),
        stages: vec!["fingerprint".into()],
        ..BenchOptions::default()
    };
    let table = bench(&args, 2).unwrap();
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("| fingerprint |"))
        .collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].contains("embedded, 10000 images") && rows[0].contains("idx:"));
    assert!(rows[1].contains("idx raw, 500 images") && rows[1].contains("MB/s"));
    assert!(rows[2].contains("folder, 500 PNG files") && rows[2].contains("files/s"));
    assert!(rows[2].contains("folder:"), "{}", rows[2]);
}
