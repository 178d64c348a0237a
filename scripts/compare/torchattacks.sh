#!/usr/bin/env bash
# Adaptive-attack gradient throughput: torchattacks APGD-EOT vs diffnmf, same defence
# architecture, points and threads (torchattacks_apgd.py says what is compared).
# Usage: scripts/compare/torchattacks.sh [--threads N] [--points P] [--bin PATH]
# Uses scripts/compare/.venv (created on first use, as run.sh; needs PyTorch + torchattacks).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q -r "$here/requirements.txt"
cd "$root"
PYTHONPATH="$here" exec "$here/.venv/bin/python" "$here/torchattacks_apgd.py" "$@"
