#!/usr/bin/env bash
# CUDA checks that need no GPU (CI): NVRTC + ptxas from PyPI wheels (cached under
# target/cuda-tools/), clippy with the `cuda` feature, and the cuda tests (every kernel
# compiles to PTX, ptxas reports no spills, kernel names agree with the Rust side).
# GPU-only parity tests print "skipped: no CUDA driver" here.
# `--install-only`: just make sure the wheels are cached (used by gpu-check.sh --stage).
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET="${CARGO_TARGET_DIR:-target}"
TOOLS="${CUDA_TOOLS_DIR:-$TARGET/cuda-tools}"
VER=12.9.86
STAMP="$TOOLS/.installed-$VER"
if [ ! -f "$STAMP" ]; then
    echo "cuda-check: installing nvidia-cuda-nvrtc-cu12 / nvidia-cuda-nvcc-cu12 $VER into $TOOLS"
    mkdir -p "$TOOLS"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$TOOLS" "nvidia-cuda-nvrtc-cu12==$VER" "nvidia-cuda-nvcc-cu12==$VER"
    touch "$STAMP"
fi
TOOLS="$(cd "$TOOLS" && pwd)"
NVRTC_LIB="$TOOLS/nvidia/cuda_nvrtc/lib"
PTXAS="$TOOLS/nvidia/cuda_nvcc/bin/ptxas"
[ -f "$NVRTC_LIB/libnvrtc.so.12" ] || { echo "cuda-check: $NVRTC_LIB/libnvrtc.so.12 missing" >&2; exit 1; }
[ -x "$PTXAS" ] || chmod +x "$PTXAS"
export LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DIFFNMF_PTXAS="$PTXAS"
export REQUIRE_NVRTC=1
if [ "${1:-}" = "--install-only" ]; then exit 0; fi

echo "cuda-check: clippy --features cuda"
cargo clippy --quiet --all-targets --features cuda -- -D warnings
echo "cuda-check: tests (lib backend::cuda + tests/cuda.rs)"
cargo test --quiet --features cuda --lib backend::cuda -- --nocapture
cargo test --quiet --features cuda --test cuda -- --nocapture
echo "cuda-check: ok"
