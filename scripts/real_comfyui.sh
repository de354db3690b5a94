#!/usr/bin/env bash
# Prepare a real ComfyUI for the integration tests (tests/test_comfyui_integration.py) from the source
# snapshot in ../shared/comfyui/ (or $AVATAR_CASCADE_COMFYUI_TAR): extracted outside the checkout (once,
# under the cache folder), its requirements installed into the given Python (torch kept: the constraints
# pin it). Prints the ComfyUI folder on the last line, or nothing when no snapshot is found.
#   usage: bash scripts/real_comfyui.sh PYTHON
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$1"
tar="${AVATAR_CASCADE_COMFYUI_TAR:-$(ls "$root"/../shared/comfyui/ComfyUI-*.tar.gz 2>/dev/null | head -n 1 || true)}"
if [ -z "$tar" ] || [ ! -f "$tar" ]; then
  echo "no ComfyUI snapshot found (../shared/comfyui/ComfyUI-*.tar.gz): the real-ComfyUI tests will be skipped" >&2
  exit 0
fi
key="$(sha256sum "$tar" | cut -c1-12)"
dest="${XDG_CACHE_HOME:-$HOME/.cache}/avatar-cascade/comfyui-$key"
if [ ! -f "$dest/.ready" ]; then
  echo "extracting $(basename "$tar") to $dest" >&2
  rm -rf "$dest" && mkdir -p "$dest"
  tar -xzf "$tar" -C "$dest"
  touch "$dest/.ready"
fi
comfy="$dest/ComfyUI"
grep -v -E '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$comfy/requirements.txt" > "$dest/requirements-no-torch.txt"
"$python" -m pip install -q -c "$root/scripts/torch-constraints.txt" -r "$dest/requirements-no-torch.txt" >&2
echo "$comfy"
