#!/usr/bin/env bash
# Adaptive-attack gradient throughput: torchattacks APGD-EOT vs diffnmf, same defence
# architecture, points and threads (torchattacks_apgd.py says what is compared).
# Usage: scripts/compare/torchattacks.sh [--threads N] [--points P] [--bin PATH]
# Uses scripts/compare/.venv (created on first use, as run.sh; needs PyTorch + torchattacks).
set -euo pipefail
source "$(dirname "$0")/venv.sh"
PYTHONPATH="$here" exec "$here/.venv/bin/python" "$here/torchattacks_apgd.py" "$@"
