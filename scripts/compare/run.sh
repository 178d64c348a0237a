#!/usr/bin/env bash
# Side-by-side CPU comparison: diffnmf bench vs scikit-learn / PyTorch on the same data.
# Usage: scripts/compare/run.sh [--threads N] [--repeats R] [--bin PATH]
# Creates scripts/compare/.venv (git-ignored) on first use and installs requirements.txt
# there (PyTorch from PyPI pulls ~2.5 GB of CUDA wheels on Linux; only its CPU path is used).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q -r "$here/requirements.txt" || \
  "$here/.venv/bin/pip" install -q numpy scikit-learn   # torch optional: compare.py reports it missing
cd "$root"
exec "$here/.venv/bin/python" "$here/compare.py" "$@"
