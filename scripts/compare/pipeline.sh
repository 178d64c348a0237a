#!/usr/bin/env bash
# Whole-experiment comparison: the PyTorch + scikit-learn port of jobs/paper.yaml
# (pipeline.py) and `diffnmf run jobs/paper.yaml`, one after the other on the same threads.
# Usage: scripts/compare/pipeline.sh [--threads N] [--bin PATH] [--smoke] [--skip-rust|--skip-python]
# Uses the venv of run.sh (scripts/compare/.venv, created on first use). Takes ~20 min at 2 threads.
set -euo pipefail
source "$(dirname "$0")/venv.sh"
exec "$here/.venv/bin/python" "$here/pipeline.py" "$@"
