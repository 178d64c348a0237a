#!/usr/bin/env bash
# Whole-experiment comparison: the PyTorch + scikit-learn port of jobs/paper.yaml
# (pipeline.py) and `diffnmf run jobs/paper.yaml`, one after the other on the same threads.
# Usage: scripts/compare/pipeline.sh [--threads N] [--bin PATH] [--smoke] [--skip-rust|--skip-python]
# Uses the venv of run.sh (scripts/compare/.venv, created on first use). Takes ~20 min at 2 threads.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q -r "$here/requirements.txt"
cd "$root"
exec "$here/.venv/bin/python" "$here/pipeline.py" "$@"
