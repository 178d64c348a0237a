//! Code fingerprints of the training stages: what a stage-cache key holds so that a change
//! to a stage's training code invalidates that stage and every stage after it.
//!
//! **The rule.** At build time `build.rs` hashes the source files of each stage as listed in
//! [`stage_sources`](super::stage_sources) (`COMMON` for what every stage uses — data
//! loading, random streams, the dense kernels, the stage glue, the cache format,
//! `Cargo.lock` — and one list per stage). Every key holds the common fingerprint and its
//! stage's; the classifier and denoiser keys nest the feature keys, so a new CNN or NNMF
//! fingerprint rebuilds the classifier and the denoiser too, while a new classifier
//! fingerprint rebuilds only the classifier.
//!
//! Why this mechanism: it cannot be forgotten (no version constant to bump by hand), it is
//! per stage (a change to the attack code keeps every trained model), and it is as strict
//! as the source: an edit to a comment in `src/nn/` also rebuilds the CNN once — a cost in
//! time, never a stale model. A changed default needs no fingerprint: the resolved
//! configuration, defaults filled in, is part of every key. A test checks that every file
//! under `src/` is classified and that the fingerprints compiled in match the source tree.

use serde::Serialize;

/// Per-stage code fingerprints (16 hex digits each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CodeFingerprints {
    pub common: String,
    pub cnn: String,
    pub nnmf: String,
    pub classifier: String,
    pub denoiser: String,
    /// Architecture and SIMD level of the CPU kernels (`x86_64-avx512`): the dense kernels
    /// round differently per level, so an entry trained on an AVX-512 node of a mixed
    /// cluster is not reused on an AVX2 node (it would give that node other numbers than a
    /// fresh run there).
    pub platform: String,
}

/// `<arch>-<simd level>` of this machine.
pub fn platform() -> String {
    let simd = match crate::linalg::simd_level() {
        crate::linalg::Simd::Avx512 => "avx512",
        crate::linalg::Simd::Avx2 => "avx2",
        crate::linalg::Simd::Baseline => "baseline",
    };
    format!("{}-{simd}", std::env::consts::ARCH)
}

impl CodeFingerprints {
    /// The fingerprints of this build.
    pub fn current() -> Self {
        CodeFingerprints {
            common: env!("DIFFNMF_CODE_COMMON").into(),
            cnn: env!("DIFFNMF_CODE_CNN").into(),
            nnmf: env!("DIFFNMF_CODE_NNMF").into(),
            classifier: env!("DIFFNMF_CODE_CLASSIFIER").into(),
            denoiser: env!("DIFFNMF_CODE_DENOISER").into(),
            platform: platform(),
        }
    }

    /// The fingerprint of `stage` (`common`, `cnn`, `nnmf`, `classifier`, `denoiser`).
    pub fn get(&self, stage: &str) -> Option<&str> {
        Some(match stage {
            "common" => &self.common,
            "cnn" => &self.cnn,
            "nnmf" => &self.nnmf,
            "classifier" => &self.classifier,
            "denoiser" => &self.denoiser,
            _ => return None,
        })
    }

    /// The part of a key for `stage`: the platform, the common and the stage's own
    /// fingerprint.
    pub fn key(&self, stage: &str) -> (&str, &str, &str) {
        (
            &self.platform,
            &self.common,
            self.get(stage).expect("a known stage"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::stage_sources::{self as ss, COMMON, NOT_TRAINING, STAGES};
    use super::*;
    use std::path::{Path, PathBuf};

    fn root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn the_compiled_fingerprints_match_the_source_tree() {
        let now = CodeFingerprints::current();
        assert_eq!(now.common, ss::hash(root(), COMMON).unwrap());
        for (name, entries) in STAGES {
            let want = ss::hash(root(), entries).unwrap();
            assert_eq!(
                now.get(name),
                Some(want.as_str()),
                "stage `{name}`: the binary was built from other sources (build.rs did not rerun?)"
            );
        }
        let all = [
            &now.common,
            &now.cnn,
            &now.nnmf,
            &now.classifier,
            &now.denoiser,
        ];
        for (i, a) in all.iter().enumerate() {
            assert_eq!(a.len(), 16);
            for b in &all[i + 1..] {
                assert_ne!(a, b, "two stages share a fingerprint");
            }
        }
    }

    #[test]
    fn every_source_file_is_classified_once() {
        let training: Vec<&str> = COMMON
            .iter()
            .chain(STAGES.iter().flat_map(|(_, e)| e.iter()))
            .copied()
            .collect();
        let train_files = ss::files(root(), &training).unwrap();
        let other_files = ss::files(root(), NOT_TRAINING).unwrap();
        for f in &other_files {
            assert!(
                !train_files.contains(f),
                "{} is listed as training code and as not training code",
                f.display()
            );
        }
        let all = ss::files(root(), &["src", "kernels"]).unwrap();
        let unclassified: Vec<&PathBuf> = all
            .iter()
            .filter(|f| !train_files.contains(f) && !other_files.contains(f))
            .collect();
        assert!(
            unclassified.is_empty(),
            "classify these in src/pipeline/stage_sources.rs: {unclassified:?}"
        );
        // The CNN's own sources are in its list; the attack code is in none.
        assert!(train_files.contains(&PathBuf::from("src/nn/cnn.rs")));
        assert!(other_files.contains(&PathBuf::from("src/attack/loss.rs")));
        assert!(train_files.contains(&PathBuf::from("kernels/nmf.cu")));
        // Test-only files are left out of every list (by name, not by path suffix).
        for t in [
            "src/nn/tests_grad.rs",
            "src/cache/tests.rs",
            "src/attack/square_tests.rs",
        ] {
            assert!(root().join(t).is_file(), "{t} moved: update this test");
            assert!(!all.contains(&PathBuf::from(t)), "{t} counted as code");
        }
    }

    #[test]
    fn the_hash_covers_names_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a")).unwrap();
        std::fs::write(d.path().join("a/x.rs"), "fn x() {}").unwrap();
        std::fs::write(d.path().join("a/tests.rs"), "t").unwrap();
        let h0 = ss::hash(d.path(), &["a"]).unwrap();
        std::fs::write(d.path().join("a/tests.rs"), "changed").unwrap();
        assert_eq!(
            ss::hash(d.path(), &["a"]).unwrap(),
            h0,
            "test files do not count"
        );
        std::fs::write(d.path().join("a/x.rs"), "fn x() { }").unwrap();
        let h1 = ss::hash(d.path(), &["a"]).unwrap();
        assert_ne!(h1, h0);
        std::fs::rename(d.path().join("a/x.rs"), d.path().join("a/y.rs")).unwrap();
        assert_ne!(ss::hash(d.path(), &["a"]).unwrap(), h1);
        assert!(ss::hash(d.path(), &["missing"]).is_err());
    }
}
