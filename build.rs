//! Fixes the git revision into the binary at build time: `DIFFNMF_GIT_REVISION` =
//! `git rev-parse --short=12 HEAD`, plus `-dirty` when tracked files that go into the binary
//! (`src/`, `kernels/`, `data/`, `Cargo.toml`, `Cargo.lock`, `build.rs`) differ from HEAD;
//! "unknown" when git or the checkout is missing (a crate tarball, or a tarball unpacked
//! inside some other repository). A `DIFFNMF_GIT_REVISION` set in the build environment wins
//! (for packagers). Reruns only when HEAD, the branch it points to, the index or those
//! inputs change, so an unchanged tree does not rebuild. Two git calls.
//!
//! Also fixes the *code fingerprint* of every training stage (`DIFFNMF_CODE_COMMON`,
//! `DIFFNMF_CODE_CNN`, …): a hash over the stage's source files as listed in
//! `src/pipeline/stage_sources.rs`, which the stage cache puts into its keys (see
//! `src/pipeline/code.rs`). Build dependency: `sha2`.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/pipeline/stage_sources.rs"]
#[allow(dead_code)]
mod stage_sources;

/// The tracked inputs of the binary whose edits make the revision `-dirty`.
const INPUTS: [&str; 6] = [
    "src",
    "kernels",
    "data",
    "Cargo.toml",
    "Cargo.lock",
    "build.rs",
];

/// Watch `p` when it exists (a missing path would rerun this script on every build).
fn watch(p: &Path) {
    if p.exists() {
        println!("cargo:rerun-if-changed={}", p.display());
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Never write the index (a refresh would change it and rerun this script).
        .env("GIT_OPTIONAL_LOCKS", "0")
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn revision(dir: &Path) -> Option<String> {
    // Only this crate's own checkout counts, not an enclosing repository.
    let top = PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let git_dir = PathBuf::from(git(dir, &["rev-parse", "--absolute-git-dir"])?);
    let common = PathBuf::from(git(dir, &["rev-parse", "--git-common-dir"])?);
    let common = if common.is_absolute() {
        common
    } else {
        dir.join(common)
    };
    watch(&git_dir.join("HEAD"));
    watch(&git_dir.join("index"));
    if let Some(r) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        // The branch's loose ref, or packed-refs when it is packed.
        watch(&common.join(r));
        watch(&common.join("packed-refs"));
    }
    let rev = git(dir, &["rev-parse", "--short=12", "HEAD"])?;
    let mut args = vec!["status", "--porcelain", "--untracked-files=no", "--"];
    args.extend(INPUTS);
    let dirty = git(dir, &args).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

fn main() {
    println!("cargo:rerun-if-env-changed=DIFFNMF_GIT_REVISION");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    for p in INPUTS {
        watch(&dir.join(p));
    }
    let rev = match std::env::var("DIFFNMF_GIT_REVISION") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => revision(&dir).unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=DIFFNMF_GIT_REVISION={rev}");
    let code = |name: &str, entries: &[&str]| {
        let h = stage_sources::hash(&dir, entries)
            .unwrap_or_else(|e| panic!("code fingerprint of `{name}`: {e}"));
        println!("cargo:rustc-env={}={h}", stage_sources::env_name(name));
    };
    code("common", stage_sources::COMMON);
    for (name, entries) in stage_sources::STAGES {
        code(name, entries);
    }
}
