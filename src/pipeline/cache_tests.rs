//! A new code fingerprint of one stage rebuilds that stage and the stages after it, and
//! nothing else (issue 17), through the real [`train_all`](super::stages::train_all).

use super::code::CodeFingerprints;
use super::stages::train_all;
use super::Timings;
use crate::backend::DeviceCtx;
use crate::cache::{StageCache, StageStats};
use std::collections::BTreeMap;
use std::path::Path;

fn cheap() -> crate::config::JobConfig {
    let set: Vec<String> = [
        "data.subset=200",
        "nnmf.k=4",
        "nnmf.max_iter=3",
        "cnn.channels=[2,2,2]",
        "cnn.feature_dim=4",
        "cnn.epochs=1",
        "classifier.hidden=[8]",
        "classifier.epochs=1",
        "diffusion.epochs=1",
        "diffusion.hidden=[8]",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let job = Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml");
    crate::config::load_job(&job, &set).unwrap().config
}

/// Per stage `(hits, builds)` of one training run with `code`.
fn train(root: &Path, code: CodeFingerprints) -> BTreeMap<String, (u64, u64)> {
    let cache = StageCache::with_code(root, code);
    let cfg = cheap();
    train_all(
        &cfg,
        &mut Timings::default(),
        Some(&cache),
        &DeviceCtx::cpu(),
    )
    .unwrap();
    let st: BTreeMap<String, StageStats> = cache.stats();
    st.into_iter()
        .map(|(k, v)| (k, (v.hits, v.builds)))
        .collect()
}

fn want(built: &[&str]) -> BTreeMap<String, (u64, u64)> {
    ["cnn", "nnmf", "classifier", "denoiser"]
        .iter()
        .map(|s| {
            let b = built.contains(s) as u64;
            (s.to_string(), (1 - b, b))
        })
        .collect()
}

#[test]
fn a_stage_code_change_rebuilds_that_stage_and_the_later_ones_only() {
    let dir = tempfile::tempdir().unwrap();
    let base = CodeFingerprints::current();
    let all = ["cnn", "nnmf", "classifier", "denoiser"];
    assert_eq!(train(dir.path(), base.clone()), want(&all));
    assert_eq!(train(dir.path(), base.clone()), want(&[]));
    let with = |stage: &str| {
        let mut c = base.clone();
        let f = match stage {
            "common" => &mut c.common,
            "cnn" => &mut c.cnn,
            "nnmf" => &mut c.nnmf,
            "classifier" => &mut c.classifier,
            _ => &mut c.denoiser,
        };
        *f = format!("{stage}-changed");
        c
    };
    let cases: [(&str, &[&str]); 5] = [
        ("cnn", &["cnn", "classifier", "denoiser"]),
        ("nnmf", &["nnmf", "classifier", "denoiser"]),
        ("classifier", &["classifier"]),
        ("denoiser", &["denoiser"]),
        ("common", &all),
    ];
    for (stage, rebuilt) in cases {
        assert_eq!(
            train(dir.path(), with(stage)),
            want(rebuilt),
            "new `{stage}` fingerprint"
        );
        // Built once, then found.
        assert_eq!(train(dir.path(), with(stage)), want(&[]), "`{stage}` again");
    }
}
