#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv and install coarse_gpu into it.
#
# Idempotent: a stamp file records the hash of pyproject.toml, so a second call is instant.
# torch is pinned to 2.13.0 first: on a CPU machine that resolves to the CPU wheel; a looser pin
# can pull a multi-GB CUDA build. Override with TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0" plus
# PIP_EXTRA_INDEX_URL for a CUDA wheel on a GPU cluster).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${COARSE_GPU_VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.coarse_gpu_installed"
WANT="$( (cat "$ROOT/pyproject.toml"; echo "$TORCH_SPEC") | sha256sum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$VENV/bin/coarse-gpu" ]]; then
  exit 0
fi

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3.12 python3.10 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
[[ -n "$PY" ]] || { echo "setup_env: no python3 found; set PYTHON=/path/to/python3.10+" >&2; exit 1; }

echo "[setup] virtual environment: $VENV (python: $("$PY" --version 2>&1))" >&2
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
echo "[setup] installing $TORCH_SPEC" >&2
"${PIP[@]}" install "$TORCH_SPEC"
echo "[setup] installing coarse_gpu with extras [all] (pykeops, wandb, pytest, ruff, import-linter, mypy, econml, ...)" >&2
"${PIP[@]}" install -e "$ROOT[all]"
echo "$WANT" > "$STAMP"
echo "[setup] done" >&2
