#!/usr/bin/env bash
# The GPU check, in one call on a GPU node without network (docs/cluster.md, "GPU check on an air-gapped node"):
#   scripts/gpu_check.sh [--wheelhouse DIR] [--work DIR] [--out DIR] [--python PY] [--stages LIST] [--install-only]
# 1. a venv in the run folder (--work, default .gpu_check/) that sees the node's Python packages (torch with
#    CUDA above all): --system-site-packages, plus a .pth for the packages of a node Python that is itself a venv;
# 2. pip install --no-index --find-links .wheelhouse coarse_gpu[keops,test] (the wheelhouse comes from
#    scripts/make_wheelhouse.sh on a machine with network);
# 3. scripts/gpu_check.py: GPU tests, discretizer at N=1e7 (lazy/KeOps and dense), training at N=1e6, the
#    main job at 1e6 customers, each under a time cap, ~8 minutes in all on one H100/H200; ONE table at the
#    end, also in --out (default .gpu_check/results/): gpu_check_results.md, .json, gpu_check.log.
# No GPU: says so in one line and exits 3, unless GPU_CHECK_CPU_SMOKE=1 (every stage on CPU at tiny sizes).
# The node's Python: --python, else $PYTHON, else python3. KeOps compiles its kernels at first use (nvcc/g++)
# into <work>/keops_cache, so a second run starts warm.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"; WH="$ROOT/.wheelhouse"; WORK="$ROOT/.gpu_check"; RESULTS=""; STAGES=""; INSTALL_ONLY=0
die() { echo "gpu_check: $1" >&2; exit "${2:-2}"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheelhouse) WH="$2"; shift 2;;
    --work) WORK="$2"; shift 2;;
    --out) RESULTS="$2"; shift 2;;
    --python) PY="$2"; shift 2;;
    --stages) STAGES="$2"; shift 2;;
    --install-only) INSTALL_ONLY=1; shift;;
    *) die "unknown argument $1 (see the comment at the top of $0)";;
  esac
done
T0=$(date +%s)
shopt -s nullglob
OWN=("$WH"/coarse_gpu-*.whl)
[[ ${#OWN[@]} -ge 1 && -f "$WH/wheelhouse.json" ]] || die "no wheelhouse at $WH (coarse_gpu-*.whl and wheelhouse.json): \
make it on a machine with network with scripts/make_wheelhouse.sh --python X.Y (the node's Python) and copy .wheelhouse/ here"
command -v "$PY" >/dev/null 2>&1 || die "no Python at '$PY': pass --python /path/to/the/python/with/torch"
"$PY" -c "import torch" 2>/dev/null || die "$PY cannot import torch: pass --python with the node's PyTorch"
if [[ "${GPU_CHECK_CPU_SMOKE:-0}" != 1 ]]; then
  TV="$("$PY" -c 'import torch; print(torch.__version__)')"
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" || die "no CUDA device visible \
to $PY (torch $TV): this check needs a GPU; GPU_CHECK_CPU_SMOKE=1 runs it on CPU at tiny sizes" 3
fi
WANT="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["python"])' "$WH/wheelhouse.json")"
HAVE="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
[[ "$WANT" == "$HAVE" ]] || die "the wheelhouse is for Python $WANT, $PY is $HAVE: scripts/make_wheelhouse.sh --python $HAVE"

VENV="$WORK/venv"
mkdir -p "$WORK"
echo "[gpu_check] venv $VENV (python $HAVE, sees the packages of $PY)" >&2
"$PY" -m venv --clear --system-site-packages "$VENV" 2>/dev/null || "$PY" -m venv --clear --without-pip \
  --system-site-packages "$VENV" || die "cannot create a venv with $PY -m venv"
VPY="$VENV/bin/python"
# A node Python that is a venv itself: --system-site-packages reaches its base, not its packages; add them.
"$VPY" - "$PY" <<'PYEOF'
import json, subprocess, sys, sysconfig
from pathlib import Path
node = json.loads(subprocess.run([sys.argv[1], "-c", "import json, site, sys; print(json.dumps([sys.prefix != "
                                  "sys.base_prefix, site.getsitepackages()]))"], capture_output=True, text=True,
                                 check=True).stdout)
if node[0]:
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in node[1])
    Path(sysconfig.get_paths()["purelib"], "_gpu_check_node_site.pth").write_text(lines)
PYEOF
PIP=("$VPY" -m pip)
"$VPY" -m pip --version >/dev/null 2>&1 || PIP=("$PY" -m pip --python "$VPY")
# Hermetic: only the wheelhouse and what is installed, whatever pip.conf or PIP_* say.
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_NO_INDEX PIP_CONSTRAINT PIP_REQUIRE_VIRTUALENV || true
# An old setuptools of the venv's own (Python < 3.12) would shadow the one torch brings.
if "$VPY" -c "import sys; sys.exit(0 if sys.version_info < (3, 12) else 1)" && "$PY" -c "import setuptools" 2>/dev/null; then
  "${PIP[@]}" uninstall -q -y setuptools >/dev/null 2>&1 || true
fi
"$VPY" "$ROOT/scripts/gpu_check.py" --check-node "$WH/wheelhouse.json" || exit 2
echo "[gpu_check] pip install --no-index --find-links $WH coarse_gpu[keops,test]" >&2
"${PIP[@]}" install -q --no-index --find-links "$WH" "coarse_gpu[keops,test]" \
  || die "pip could not install coarse_gpu from $WH (above: what is missing); remake the wheelhouse for this node"
# the same version may already be visible from the node (an editable checkout): make the venv's own copy win
"${PIP[@]}" install -q --no-index --no-deps --force-reinstall "${OWN[0]}" || die "pip could not install ${OWN[0]}"
(cd "$WORK" && "$VPY" -c "import coarse_gpu, pykeops, hydra; from coarse_gpu import CoarsePersonalizer") \
  || die "the installed coarse_gpu does not import (above)"
N_WHEELS=$("$VPY" -c 'import json, sys; m = json.load(open(sys.argv[1])); print(len(m["wheels"]), "wheels,", \
round(m["total_bytes"] / 1e6, 1), "MB")' "$WH/wheelhouse.json")
INSTALL_S=$(( $(date +%s) - T0 ))
echo "[gpu_check] installed in ${INSTALL_S} s ($N_WHEELS in the wheelhouse)" >&2
[[ $INSTALL_ONLY == 1 ]] && exit 0

export KEOPS_CACHE_FOLDER="${KEOPS_CACHE_FOLDER:-$WORK/keops_cache}" COARSE_GPU_CONFIG_DIR="$ROOT/configs"
export MPLBACKEND=Agg WANDB_MODE=disabled
ARGS=(--work "$WORK" --out "${RESULTS:-$WORK/results}" --install-s "$INSTALL_S"
      --install-figure "coarse_gpu[keops,test] from $N_WHEELS, the rest from the node"
      --budget-s "$(( 470 - INSTALL_S > 60 ? 470 - INSTALL_S : 60 ))")
[[ -n "$STAGES" ]] && ARGS+=(--stages "$STAGES")
[[ "${GPU_CHECK_CPU_SMOKE:-0}" == 1 ]] && ARGS+=(--smoke)
cd "$ROOT"
exec "$VPY" "$ROOT/scripts/gpu_check.py" "${ARGS[@]}"
