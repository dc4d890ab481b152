#!/usr/bin/env bash
# Set up .venv if needed, then run the test suite; extra arguments go to pytest.
# W&B is disabled unless WANDB_MODE says otherwise (the W&B test turns offline mode on itself).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/setup_env.sh"
source "$HERE/env.sh"
export WANDB_MODE="${WANDB_MODE:-disabled}"
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest -q -ra "$@"
