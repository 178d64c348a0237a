#!/usr/bin/env bash
# Every check of the project, as CI runs it (.ci/run calls exactly this script):
# formatting, clippy with warnings denied, and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export CMAKE="${CMAKE:-$PWD/scripts/cmake-shim.sh}"
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
echo "== slurm suite (real one-node cluster: sweeps/smoke.yaml as a job array, scancel + --resume)"
bash scripts/slurm-suite.sh
echo "== CUDA checks without a GPU (NVRTC compile + ptxas spills + clippy --features cuda)"
bash scripts/cuda-check.sh
