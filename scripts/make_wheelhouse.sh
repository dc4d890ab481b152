#!/usr/bin/env bash
# Build .wheelhouse/ for scripts/gpu_check.sh on a machine with network (PyPI), for the GPU node's Python:
#   scripts/make_wheelhouse.sh [--python 3.12] [--dest .wheelhouse] [--node-packages FILE|none]
#                              [--glibc 2.28] [--max-mb 60]
# coarse_gpu's wheel plus its runtime deps and the keops/test extras, minus torch (and what torch
# brings) and minus the packages the node already has (scripts/gpu_node_packages.txt by default).
# Prints every wheel and the total; exits 1 when the total is over --max-mb (MB = 10^6 bytes).
# Runs with $PYTHON, else the project's .venv, else python3 (any Python >= 3.9 with pip).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
exec "$PY" "$ROOT/scripts/make_wheelhouse.py" "$@"
