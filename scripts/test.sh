#!/usr/bin/env bash
# One command: set up (if needed) and run the test suite. Extra arguments go to pytest.
# The whole suite runs by default, slow tests included (@pytest.mark.slow: end-to-end runs,
# subprocesses, long hypothesis searches). For a quick run without them:
#   bash scripts/test.sh -m "not slow"
# and for only those: bash scripts/test.sh -m slow. --durations=20 shows what is slow.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$(bash "$root/scripts/bootstrap.sh" | tail -n 1)"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
cd "$root"
exec "$python" -m pytest -q "$@"
