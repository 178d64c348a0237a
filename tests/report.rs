//! Report-layer tests: aggregation equals an independent recomputation, plots render and are
//! non-trivial, report.md is complete, and the rank choice ignores test labels.

use diffnmf::config::load_job;
use diffnmf::pipeline::{run_job, RunOptions};
use diffnmf::report::{aggregate, objective::Objective, optimize, report};
use std::collections::BTreeMap;
use std::path::Path;

fn smoke() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml")
}

/// Tiny, fast settings on top of jobs/smoke.yaml.
const TINY: [&str; 7] = [
    "data.subset=500",
    "cnn.epochs=1",
    "classifier.epochs=4",
    "diffusion.epochs=2",
    "attack.iterations=4",
    "diffusion.passes=3",
    "nnmf.max_iter=15",
];

fn tiny(extra: &[String]) -> Vec<String> {
    TINY.iter()
        .map(|s| s.to_string())
        .chain(extra.iter().cloned())
        .collect()
}

/// The smallest file `aggregate` accepts as a finished cell's `result.h5` (it opens and says
/// `complete = true`); the metrics come from the cell's metrics.csv.
fn complete_stub(path: &Path) {
    let f = hdf5::File::create(path).unwrap();
    f.new_attr::<u32>()
        .create("schema_version")
        .unwrap()
        .write_scalar(&diffnmf::results::h5::SCHEMA_VERSION)
        .unwrap();
    f.new_attr::<bool>()
        .create("complete")
        .unwrap()
        .write_scalar(&true)
        .unwrap();
}

#[test]
fn summary_csv_equals_independent_recomputation_on_partial_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut cells = String::from("id,index,nnmf.k,classifier.hidden,seed,status\n");
    let mut lcg = 12345u64;
    let mut next = || {
        lcg = lcg
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (lcg >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut idx = 0;
    for k in ["8", "16"] {
        for hidden in ["[32]", "[64, 32]"] {
            for seed in 0..4 {
                let id = format!("c{idx:03}");
                cells.push_str(&format!("{id},{idx},{k},\"{hidden}\",{seed},done\n"));
                idx += 1;
                // Seed 3 of (16, [64, 32]) is not finished; seed 3 of (8, [32]) has a
                // metrics.csv but no result.h5 (still running): both must be excluded.
                let cd = d.join("cells").join(&id);
                std::fs::create_dir_all(&cd).unwrap();
                if seed == 3 && k == "16" && hidden != "[32]" {
                    continue;
                }
                let mut m = String::from("scenario,protocol,eps,metric,value\n");
                for (s, p, eps) in [
                    ("clean_base", "none", "0"),
                    ("clean_def", "none", "0"),
                    ("robust_base", "none", "0.5"),
                    ("robust_def", "transfer", "0.5"),
                    ("robust_def", "adaptive", "0.5"),
                    ("robust_base", "none", "1"),
                ] {
                    for metric in ["accuracy", "f1", "log_loss"] {
                        m.push_str(&format!("{s},{p},{eps},{metric},{:.10}\n", next()));
                    }
                }
                std::fs::write(cd.join("metrics.csv"), m).unwrap();
                if !(seed == 3 && k == "8" && hidden == "[32]") {
                    complete_stub(&cd.join("result.h5"));
                }
            }
        }
    }
    std::fs::write(d.join("cells.csv"), cells).unwrap();

    let s = aggregate::aggregate(d).unwrap();
    aggregate::write_outputs(&s).unwrap();
    assert_eq!(s.missing, vec!["c003".to_string(), "c015".to_string()]);

    // Independent recomputation straight from the files.
    let t975 = |dof: usize| match dof {
        // ν = 2 in closed form: t = (2p − 1) √(2 / (4p(1 − p))); ν = 3 from scipy.stats.t.ppf.
        2 => 0.95 * (2.0f64 / (4.0 * 0.975 * 0.025)).sqrt(),
        3 => 3.1824463052837078,
        _ => panic!("unexpected dof {dof}"),
    };
    let text = std::fs::read_to_string(d.join("cells.csv")).unwrap();
    let mut groups: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in text.lines().skip(1) {
        // id,index,k,"[..]",seed,status — split off the quoted field by hand.
        let (head, rest) = line.split_once(",\"").unwrap();
        let (hidden, tail) = rest.split_once("\",").unwrap();
        let id = head.split(',').next().unwrap();
        let k = head.split(',').nth(2).unwrap();
        assert!(tail.contains(','));
        let cd = d.join("cells").join(id);
        if !cd.join("result.h5").exists() {
            continue;
        }
        for row in std::fs::read_to_string(cd.join("metrics.csv"))
            .unwrap()
            .lines()
            .skip(1)
        {
            let f: Vec<&str> = row.split(',').collect();
            let key = format!(
                "{k}|{hidden}|{}|{}|{}|{}",
                f[0],
                f[1],
                f[2].parse::<f64>().unwrap(),
                f[3]
            );
            groups.entry(key).or_default().push(f[4].parse().unwrap());
        }
    }
    // A minimal CSV splitter (quoted fields may hold commas).
    let split = |line: &str| -> Vec<String> {
        let mut out = vec![String::new()];
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => out.push(String::new()),
                _ => out.last_mut().unwrap().push(c),
            }
        }
        out
    };
    let csv = std::fs::read_to_string(d.join("summary.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "nnmf.k,classifier.hidden,scenario,protocol,eps,metric,n,mean,std,ci95,min,max"
    );
    let mut seen = 0;
    for line in lines {
        let all = split(line);
        let (k, hidden, f) = (&all[0], &all[1], &all[2..]);
        let key = format!(
            "{k}|{hidden}|{}|{}|{}|{}",
            f[0],
            f[1],
            f[2].parse::<f64>().unwrap(),
            f[3]
        );
        let v = groups
            .get(&key)
            .unwrap_or_else(|| panic!("unexpected row {key}"));
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let want = [
            n as f64,
            mean,
            sd,
            t975(n - 1) * sd / (n as f64).sqrt(),
            v.iter().cloned().fold(f64::MAX, f64::min),
            v.iter().cloned().fold(f64::MIN, f64::max),
        ];
        for (i, w) in want.iter().enumerate() {
            let got: f64 = f[4 + i].parse().unwrap();
            assert!(
                (got - w).abs() <= 1e-12 * w.abs().max(1.0),
                "{key} column {i}: {got} vs {w}"
            );
        }
        seen += 1;
    }
    assert_eq!(
        seen,
        groups.len(),
        "every group has exactly one summary row"
    );
    assert_eq!(groups.len(), 4 * 6 * 3);

    let md = std::fs::read_to_string(d.join("tables.md")).unwrap();
    assert!(
        md.contains("## Missing cells (2)") && md.contains("`c015`"),
        "{md}"
    );
    assert!(md.contains("| Robust_Def (adaptive) | "), "{md}");
    assert!(md.contains(" ± "), "{md}");
    let f = diffnmf::results::h5::open_file(&d.join("summary.h5")).unwrap();
    let n = f.dataset("summary/n").unwrap().read_raw::<u64>().unwrap();
    assert_eq!(n.len(), groups.len());
    assert!(n.iter().all(|&x| x == 3 || x == 4));
}

/// Decode a PNG; return (width, height, number of distinct colours sampled).
fn png_stats(path: &Path) -> (u32, u32, usize) {
    let dec = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).unwrap();
    let px = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    for c in buf[..info.buffer_size()].chunks(px) {
        colours.insert(c.to_vec());
    }
    (info.width, info.height, colours.len())
}

#[test]
fn plots_and_report_from_real_runs() {
    diffnmf::progress::set_quiet(true);
    let dir = tempfile::tempdir().unwrap();
    // DIFFNMF_REPORT_TEST_DIR=/some/dir keeps the sweep and its plots for a look.
    let keep = std::env::var_os("DIFFNMF_REPORT_TEST_DIR").map(std::path::PathBuf::from);
    let d = keep.as_deref().unwrap_or(dir.path());
    let mut cells = String::from("id,index,nnmf.k,seed,status\n");
    let mut idx = 0;
    for k in [4, 8] {
        for seed in [1, 2] {
            let id = format!("k{k}_s{seed}");
            cells.push_str(&format!("{id},{idx},{k},{seed},done\n"));
            idx += 1;
            let job = load_job(
                &smoke(),
                &tiny(&[format!("nnmf.k={k}"), format!("seed={seed}")]),
            )
            .unwrap();
            run_job(
                &job,
                &RunOptions {
                    out: Some(d.join("cells").join(&id)),
                    threads: 2,
                    checkpoint: None,
                },
            )
            .unwrap();
        }
    }
    cells.push_str(&format!("k8_s3,{idx},8,3,pending\n"));
    std::fs::write(d.join("cells.csv"), cells).unwrap();

    let path = report::write_report(d, Some("8"), None).unwrap();
    let md = std::fs::read_to_string(&path).unwrap();
    for want in [
        "## Table 1 — fixed k",
        "**Ours, k=8, ε = 0.5 (z-scored feature units)**",
        "| Clean_Base (paper) | 0.992 |",
        "| Robust_Def (paper) | 0.582 |",
        "## Sanity checks",
        "ε = 0 reproduces clean accuracy exactly (seed means) | pass",
        "randomness_detected | ",
        "monotone_fresh[robust_def/worst]",
        "adaptive_at_least_transfer_per_sample",
        "## Missing cells (1)",
        "![Robust accuracy vs ε, k=8](plots/robust_vs_eps_k8.png)",
    ] {
        assert!(md.contains(want), "report.md lacks `{want}`:\n{md}");
    }
    assert!(!md.contains("**Ours, k=4"), "Table 1 is for k = 8 only");
    // Every embedded plot exists, as PNG and SVG, and is non-trivial.
    let mut n = 0;
    for part in md.split("](plots/").skip(1) {
        let file = part.split(')').next().unwrap();
        let p = d.join("plots").join(file);
        assert!(p.exists(), "{}", p.display());
        if file.ends_with(".png") {
            let (w, h, colours) = png_stats(&p);
            assert!(w >= 400 && h >= 300, "{file}: {w}x{h}");
            assert!(colours >= 8, "{file}: only {colours} colours");
            let svg = std::fs::read_to_string(p.with_extension("svg")).unwrap();
            assert!(svg.len() > 2000 && svg.contains("<text"), "{file}.svg");
            n += 1;
        }
    }
    // robust_vs_eps ×2, basis ×2, confusion ×2, curves ×2, accuracy_vs_k ×2 (ε = 0.5, 3).
    assert_eq!(n, 10, "{md}");
    let svg = std::fs::read_to_string(d.join("plots/robust_vs_eps_k4.svg")).unwrap();
    for label in ["accuracy", "ε (L∞ budget", "defended, adaptive attack"] {
        assert!(svg.contains(label), "axis/legend text `{label}` missing");
    }
}

/// Write an IDX pair of `n` embedded digits with `labels`.
fn write_idx(dir: &Path, name: &str, images: &[u8], labels: &[u8]) -> (String, String) {
    let (ip, lp) = (
        dir.join(format!("{name}-images.idx")),
        dir.join(format!("{name}-labels.idx")),
    );
    std::fs::write(&ip, diffnmf::data::idx::encode_images(28, 28, images)).unwrap();
    std::fs::write(&lp, diffnmf::data::idx::encode_labels(labels)).unwrap();
    (ip.display().to_string(), lp.display().to_string())
}

#[test]
fn chosen_k_ignores_test_labels() {
    diffnmf::progress::set_quiet(true);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = diffnmf::data::load(&diffnmf::data::DataSource::Embedded, 28, 28).unwrap();
    let n = 500.min(ds.len());
    // The embedded digits are grouped by class: interleave them with a fixed permutation.
    let order: Vec<usize> = (0..n).map(|i| (i * 7919) % ds.len()).collect();
    let images: Vec<u8> = order
        .iter()
        .flat_map(|&i| {
            ds.images
                .row(i)
                .iter()
                .map(|&v| (v * 255.0).round() as u8)
                .collect::<Vec<_>>()
        })
        .collect();
    let labels: Vec<u8> = order.iter().map(|&i| ds.labels[i]).collect();
    let fractions = [0.7, 0.15, 0.15];
    let split = diffnmf::data::stratified_split(&labels, fractions, 7);
    // Swap the labels of test points i < j (different classes) when no point of either
    // class lies between them: each class keeps its sorted ranks, so the stratified split
    // (train / val / test membership) is unchanged and only test labels differ.
    let is_test: Vec<bool> = (0..n)
        .map(|i| split.test.binary_search(&i).is_ok())
        .collect();
    let mut shuffled = labels.clone();
    let mut used = vec![false; n];
    for i in 0..n {
        if !is_test[i] || used[i] {
            continue;
        }
        let mut between = std::collections::HashSet::new();
        for j in i + 1..n {
            if labels[j] == labels[i] {
                break;
            }
            if is_test[j] && !used[j] && !between.contains(&labels[j]) {
                shuffled.swap(i, j);
                used[i] = true;
                used[j] = true;
                break;
            }
            between.insert(labels[j]);
        }
    }
    let changed = (0..n).filter(|&i| shuffled[i] != labels[i]).count();
    assert!(
        changed >= split.test.len() / 2,
        "only {changed} of {} test labels changed",
        split.test.len()
    );
    assert!((0..n).all(|i| is_test[i] || shuffled[i] == labels[i]));
    assert_eq!(
        diffnmf::data::stratified_split(&shuffled, fractions, 7),
        split
    );

    let run = |name: &str, labs: &[u8]| {
        let (ip, lp) = write_idx(d, name, &images, labs);
        let ov = tiny(&[
            "data.format=idx".into(),
            format!("data.images={ip}"),
            format!("data.labels={lp}"),
            "data.subset=0".into(),
            "data.split_seed=7".into(),
            "attack.eps=[0.0,0.5,3.0]".into(),
        ]);
        let opts = optimize::OptimizeOptions {
            ks: vec![2, 6, 12],
            objective: Objective::parse("weighted:0.5*clean_def+0.5*robust_def_transfer@0.5")
                .unwrap(),
            search: optimize::Search::Grid,
            overrides: ov,
            out: d.join(name),
            threads: 2,
            final_run: true,
        };
        optimize::optimize(&smoke(), &opts).unwrap()
    };
    let a = run("original", &labels);
    let b = run("shuffled", &shuffled);
    assert_eq!(
        a.trace, b.trace,
        "validation trace must not depend on test labels"
    );
    assert_eq!(a.chosen_k, b.chosen_k);
    assert_eq!(a.trace.len(), 3);
    // The trace is stored in HDF5 and reads back identically.
    let (k, spec, trace) = optimize::read_trace(&d.join("original")).unwrap();
    assert_eq!((k, trace), (a.chosen_k, a.trace.clone()));
    assert!(spec.starts_with("weighted:"));
    // The final test-set runs do see the test labels: their metrics differ.
    let m = |x: &optimize::Outcome| {
        std::fs::read_to_string(x.final_dir.as_ref().unwrap().join("metrics.csv")).unwrap()
    };
    assert_ne!(
        m(&a),
        m(&b),
        "test labels differ, so the test-set tables must differ"
    );
    let t2 = std::fs::read_to_string(d.join("original/table2.md")).unwrap();
    assert!(
        t2.contains(&format!("k = {}", a.chosen_k)) && t2.contains("validation split only"),
        "{t2}"
    );
    assert!(d.join("original/plots/objective_vs_k.png").exists());
    // The search never evaluated the test split: every search run has eval_split val.
    for k in [2, 6, 12] {
        let yaml =
            std::fs::read_to_string(d.join(format!("original/search/k{k}/metrics.csv"))).unwrap();
        assert!(yaml.contains("clean_def"));
        let f = diffnmf::results::h5::open_file(&d.join(format!("original/search/k{k}/result.h5")))
            .unwrap();
        let cfg: String = f
            .attr("config_yaml")
            .unwrap()
            .read_scalar::<hdf5::types::VarLenUnicode>()
            .unwrap()
            .to_string();
        assert!(cfg.contains("eval_split: val"), "{cfg}");
    }
}
