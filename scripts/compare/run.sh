#!/usr/bin/env bash
# Side-by-side CPU comparison: diffnmf bench vs scikit-learn / PyTorch on the same data.
# Usage: scripts/compare/run.sh [--threads N] [--repeats R] [--bin PATH]
# Creates scripts/compare/.venv (git-ignored) on first use and installs requirements.txt
# there (PyTorch from PyPI pulls ~2.5 GB of CUDA wheels on Linux; only its CPU path is used).
set -euo pipefail
VENV_TORCH_OPTIONAL=1  # torch optional: compare.py reports it missing
source "$(dirname "$0")/venv.sh"
exec "$here/.venv/bin/python" "$here/compare.py" "$@"
