#!/usr/bin/env bash
# Set up .venv if needed, then run the main job (`coarse-gpu`); extra arguments are Hydra overrides.
#   bash scripts/run_main.sh                         # built-in simulated promotions experiment
#   bash scripts/run_main.sh model=dragonnet logger=none
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$HERE/setup_env.sh"
source "$HERE/env.sh"
exec "$ROOT/.venv/bin/coarse-gpu" "$@"
