#!/usr/bin/env bash
# cmake for the bundled HDF5 build (see .cargo/config.toml): a real cmake on PATH if there is one,
# else the PyPI `cmake` wheel installed once into target/cmake-wheel (flock-guarded).
set -euo pipefail
self="$(readlink -f "${BASH_SOURCE[0]}")"
here="$(dirname "$self")"
while IFS= read -r c; do
  if [ "$(readlink -f "$c")" != "$self" ]; then exec "$c" "$@"; fi
done < <(type -ap cmake || true)
dest="${DIFFNMF_CMAKE_DIR:-$here/../target/cmake-wheel}"
bin="$dest/cmake/data/bin/cmake"
if [ ! -x "$bin" ]; then
  mkdir -p "$dest"
  (
    flock 9
    if [ ! -x "$bin" ]; then
      echo "cmake-shim: no cmake on PATH; installing the PyPI cmake wheel into $dest" >&2
      python3 -m pip install --quiet --disable-pip-version-check --target "$dest" 'cmake>=3.20,<5' >&2
    fi
  ) 9>"$dest.lock"
fi
exec "$bin" "$@"
