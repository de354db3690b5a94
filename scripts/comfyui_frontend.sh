#!/usr/bin/env bash
# Prepare ComfyUI's current frontend for the schema test (tests/test_frontend_schema.py): the pinned
# comfyui-frontend-package wheel from PyPI, unpacked outside the checkout (once, under the cache folder),
# and jsdom from the npm registry so Node can load the frontend's own workflow validator. Prints the
# folder on the last line, or nothing when Node or the registries are missing (the test is then skipped).
#   usage: bash scripts/comfyui_frontend.sh PYTHON
set -euo pipefail
python="$1"
version="1.58.1"
dest="${XDG_CACHE_HOME:-$HOME/.cache}/avatar-cascade/comfyui-frontend-$version"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "no node / npm: the frontend schema test will be skipped" >&2
  exit 0
fi
if [ ! -f "$dest/.ready" ]; then
  rm -rf "$dest" && mkdir -p "$dest"
  "$python" -m pip download -q --no-deps "comfyui-frontend-package==$version" -d "$dest/wheel" >&2
  "$python" -m zipfile -e "$dest"/wheel/*.whl "$dest/frontend" >&2
  (cd "$dest" && npm install --silent --no-audit --no-fund --prefix "$dest" jsdom@24 >&2)
  touch "$dest/.ready"
fi
echo "$dest"
