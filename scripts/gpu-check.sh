#!/usr/bin/env bash
# GPU parity checks from prebuilt binaries. Two steps:
#
#   1. on a build machine (has cargo; no GPU needed):
#        scripts/gpu-check.sh --stage [DIR]      # default DIR = target/gpu-bundle
#      builds `cargo test --features cuda --no-run` and copies the two test binaries
#      (tests/cuda.rs and the lib tests) plus libnvrtc.so.12 (from scripts/cuda-check.sh's
#      wheel cache) into DIR. Copy DIR to the GPU node.
#   2. on the GPU node (needs only the NVIDIA driver; builds nothing):
#        scripts/gpu-check.sh [DIR]
#      runs the parity tests with REQUIRE_GPU=1 (a skip is a failure) and prints one table.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

if [ "${1:-}" = "--stage" ]; then
    DIR="${2:-$ROOT/target/gpu-bundle}"
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    "$ROOT/scripts/cuda-check.sh" --install-only   # ensures the nvrtc wheel is cached
    mkdir -p "$DIR/lib"
    cd "$ROOT"
    bins=$(cargo test --features cuda --no-run --message-format=json 2>/dev/null |
        python3 -c 'import sys, json
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in ("cuda", "diffnmf") and m["target"]["kind"] in (["test"], ["lib"]):
        print(m["target"]["name"] + "\t" + m["executable"])')
    echo "$bins" | while IFS=$'\t' read -r name exe; do
        [ -n "$exe" ] && cp "$exe" "$DIR/test-$name"
    done
    cp -L "${CUDA_TOOLS_DIR:-$TARGET/cuda-tools}/nvidia/cuda_nvrtc/lib/"libnvrtc*.so* "$DIR/lib/" 2>/dev/null || true
    cp "$0" "$DIR/gpu-check.sh"
    echo "staged into $DIR:"; ls -1 "$DIR" "$DIR/lib"
    exit 0
fi

DIR="${1:-$ROOT/target/gpu-bundle}"
[ -x "$DIR/test-cuda" ] || { echo "gpu-check: $DIR/test-cuda missing; run 'scripts/gpu-check.sh --stage' on a build machine first" >&2; exit 2; }
export LD_LIBRARY_PATH="$DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export REQUIRE_GPU=1 REQUIRE_NVRTC=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /' || echo "gpu: nvidia-smi not available"

LOG="$(mktemp)"
status=0
"$DIR/test-cuda" --test-threads=1 >"$LOG" 2>&1 || status=1
if [ -x "$DIR/test-diffnmf" ]; then
    "$DIR/test-diffnmf" --test-threads=1 backend::cuda >>"$LOG" 2>&1 || status=1
fi
printf '\n%-62s %s\n' "check" "result"
printf '%-62s %s\n' "--------------------------------------------------------------" "------"
grep -E '^test .* \.\.\. ' "$LOG" | sed -E 's/^test (.*) \.\.\. (.*)$/\1\t\2/' |
    while IFS=$'\t' read -r name res; do printf '%-62s %s\n' "$name" "$res"; done
if [ $status -ne 0 ]; then
    echo; echo "gpu-check: FAILED — details:"; grep -v -E '^test .* \.\.\. ok$' "$LOG" | tail -80
    exit 1
fi
echo; echo "gpu-check: all parity tests passed"
