//! Library-level pipeline tests: stage caching reproduces uncached results exactly and a
//! second run builds nothing.

use diffnmf::cache::StageCache;
use diffnmf::config::load_job;
use diffnmf::pipeline::{run_job, run_job_cached, RunOptions};
use std::path::Path;

#[test]
fn cached_run_equals_uncached_and_second_run_hits_every_stage() {
    diffnmf::progress::set_quiet(true);
    let job = load_job(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/smoke.yaml"),
        &["attack.eps=[0.5]".into()],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = |name: &str| RunOptions {
        out: Some(dir.path().join(name)),
        threads: 2,
        checkpoint: None,
    };
    let (plain, _) = run_job(&job, &opts("plain")).unwrap();
    let cache = StageCache::new(dir.path().join("cache"));
    let (first, _) = run_job_cached(&job, &opts("first"), Some(&cache)).unwrap();
    let builds: u64 = cache.stats().values().map(|s| s.builds).sum();
    assert_eq!(
        builds,
        4,
        "cnn, nnmf, classifier, denoiser: {:?}",
        cache.stats()
    );
    let cache2 = StageCache::new(dir.path().join("cache"));
    let (second, _) = run_job_cached(&job, &opts("second"), Some(&cache2)).unwrap();
    let stats = cache2.stats();
    assert!(
        stats.values().all(|s| s.builds == 0 && s.hits == 1),
        "{stats:?}"
    );
    assert_eq!(plain.metrics_csv(), first.metrics_csv());
    assert_eq!(first.metrics_csv(), second.metrics_csv());
}
