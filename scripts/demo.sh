#!/usr/bin/env bash
# One command on a fresh machine: set everything up, then run the cascade on the bundled sample
# with tiny random-weight demo models. Usage: bash scripts/demo.sh [OUT.mp4]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/scripts/bootstrap.sh" | tail -n 1)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$python" -m avatar_cascade demo --out "${1:-avatar_cascade_demo.mp4}"
