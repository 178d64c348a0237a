# Sourced by the comparison scripts: `here` (this folder) and `root` (the repository), and
# scripts/compare/.venv created on first use with requirements.txt installed (PyPI's Linux
# torch wheel pulls ~2.5 GB of CUDA wheels; only its CPU path is used). Leaves the shell in
# the repository root.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install -q -r "$here/requirements.txt" || {
  [ "${VENV_TORCH_OPTIONAL:-0}" = 1 ] && "$here/.venv/bin/pip" install -q numpy scikit-learn
}
cd "$root"
