# Sourced by the run scripts: caches and backends that keep runs self-contained and headless.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# pykeops compiles its kernels with the C++ compiler on first use; keep them inside the checkout.
export KEOPS_CACHE_FOLDER="${KEOPS_CACHE_FOLDER:-$ROOT/.keops_cache}"
export MPLBACKEND="${MPLBACKEND:-Agg}"
# W&B: offline unless the caller says otherwise; never a login prompt.
export WANDB_SILENT="${WANDB_SILENT:-true}"
