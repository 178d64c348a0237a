// Shared by `build.rs` (as `#[path] mod`) and by `crate::pipeline::code`: keep this file free
// of `crate::` paths and of inner attributes; it may use only `std` and `sha2`.

//! Which source files define each training stage, and the hash over them that becomes the
//! stage's *code fingerprint* (see [`crate::pipeline::code`] for the rule).
//!
//! An entry is a file or a folder (every file below it, recursively) relative to the crate
//! root. Test-only files (`tests.rs`, `tests_*.rs`, `*_tests.rs`) never count: they are not
//! in the binary. Every file under `src/` and `kernels/` must appear in [`COMMON`], in a stage's list
//! or in [`NOT_TRAINING`] (a test checks it), so a new file has to be classified.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Code every stage depends on: data loading, splitting and resizing, random streams, the
/// dense kernels, the stage glue and the cache entry format, the dependency versions.
pub const COMMON: &[&str] = &[
    "src/data",
    "src/rng.rs",
    "src/normal.rs",
    "src/scalar.rs",
    "src/linalg.rs",
    "src/backend/mod.rs",
    "src/pipeline/stages.rs",
    "src/pipeline/cached.rs",
    "src/cache/mod.rs",
    "Cargo.lock",
];

/// The stages, in pipeline order, with the code that trains each one (besides [`COMMON`]).
pub const STAGES: &[(&str, &[&str])] = &[
    ("cnn", &["src/nn"]),
    (
        "nnmf",
        &[
            "src/nmf",
            "src/backend/cuda/mod.rs",
            "src/backend/cuda/error.rs",
            "src/backend/cuda/gemm.rs",
            "src/backend/cuda/kernels.rs",
            "kernels/common.cuh",
            "kernels/gemm.cu",
            "kernels/nmf.cu",
        ],
    ),
    (
        "classifier",
        &[
            "src/nn/mlp.rs",
            "src/nn/optim.rs",
            "src/nn/train.rs",
            "src/features.rs",
        ],
    ),
    (
        "denoiser",
        &[
            "src/diffusion",
            "src/nn/mlp.rs",
            "src/nn/optim.rs",
            "src/features.rs",
        ],
    ),
];

/// Sources that never change a trained stage: evaluation, attacks, reporting, sweeps, the
/// command line, the stored models (`models.h5`) and their ONNX export, configuration parsing (a changed default changes the resolved
/// configuration, which is part of every key), errors and progress output.
pub const NOT_TRAINING: &[&str] = &[
    "src/attack",
    "src/backend/cuda_off.rs",
    "src/bench",
    "kernels/apgd.cu",
    "kernels/cnn.cu",
    "kernels/denoiser.cu",
    "src/certify",
    "src/cli",
    "src/config",
    "src/error.rs",
    "src/export",
    "src/lib.rs",
    "src/main.rs",
    "src/metrics.rs",
    "src/models",
    "src/pipeline/certified.rs",
    "src/pipeline/checkpoint.rs",
    "src/pipeline/checks.rs",
    "src/pipeline/code.rs",
    "src/pipeline/evaluate.rs",
    "src/pipeline/mod.rs",
    "src/pipeline/pixel.rs",
    "src/pipeline/stage_sources.rs",
    "src/pipeline/stored.rs",
    "src/pipeline/worst.rs",
    "src/progress.rs",
    "src/report",
    "src/results",
    "src/signals.rs",
    "src/special.rs",
    "src/sweep",
    "src/testutil.rs",
];

/// True for files compiled only into tests.
pub fn is_test_file(name: &str) -> bool {
    name == "tests.rs" || name.starts_with("tests_") || name.ends_with("_tests.rs")
}

/// The files named by `entries` (folders expanded recursively, test files left out),
/// relative to `root`, sorted, without duplicates. A missing entry is an error message.
pub fn files(root: &Path, entries: &[&str]) -> Result<Vec<PathBuf>, String> {
    fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
        let p = root.join(rel);
        if p.is_dir() {
            let rd = std::fs::read_dir(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            for e in rd {
                let e = e.map_err(|e| format!("{}: {e}", p.display()))?;
                walk(root, &rel.join(e.file_name()), out)?;
            }
        } else if p.is_file() {
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !is_test_file(name) {
                out.push(rel.to_path_buf());
            }
        } else {
            return Err(format!("{}: no such file or folder", p.display()));
        }
        Ok(())
    }
    let mut out = vec![];
    for e in entries {
        walk(root, Path::new(e), &mut out)?;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// First 16 hex digits of SHA-256 over `"diffnmf-code-v1\0"` then, per file of `entries`
/// in sorted order, `u64le(len(path)) ‖ path ‖ u64le(len(bytes)) ‖ bytes` (`path` relative
/// to `root` with `/` separators).
pub fn hash(root: &Path, entries: &[&str]) -> Result<String, String> {
    let mut h = Sha256::new();
    h.update(b"diffnmf-code-v1\0");
    for rel in files(root, entries)? {
        let name = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let p = root.join(&rel);
        let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    Ok(h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Name of the build-time environment variable holding a stage's fingerprint
/// (`"common"` for [`COMMON`]).
pub fn env_name(stage: &str) -> String {
    format!("DIFFNMF_CODE_{}", stage.to_ascii_uppercase())
}
