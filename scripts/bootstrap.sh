#!/usr/bin/env bash
# Create (once) and update the project's Python environment; prints its python path on the last line.
# The environment is cached outside the checkout, keyed on the torch constraints and the Python version,
# so fresh clones reuse it; `pip install -e .[test]` then brings the pack's own dependencies up to date.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
key="$( (cat "$root/scripts/torch-constraints.txt"; "$py" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-12)"
venv="${AVATAR_CASCADE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/avatar-cascade/venv-$key}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -f "$venv/.ready" ]; then
  echo "setting up $venv (first time: torch + dependencies, a few minutes)" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -r "$root/scripts/torch-constraints.txt" >&2
  touch "$venv/.ready"
fi
"$venv/bin/python" -m pip install -q -c "$root/scripts/torch-constraints.txt" -e "$root[test]" >&2
echo "$venv/bin/python"
