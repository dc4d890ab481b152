"""The stages of the GPU check (run by scripts/gpu_check.sh inside the venv it installs; see docs/cluster.md).

Each stage is a subprocess under its own time cap, and all of them under one budget, so the whole
check ends in about 8 minutes on one H100/H200 whatever happens; a stage that fails or runs out of
time is reported as such and the next one still runs. At the end ONE table, stage | figure | time s
| peak GPU MB, is printed and written to <out>/gpu_check_results.md and .json, with every stage's
log tail in <out>/gpu_check.log (at most three files, so a results folder copied back whole stays small).

  tests       the tests marked ``gpu`` (pytest -m gpu)
  lazy        scripts/bench_discretize.py ours-lazy (factored profits, KeOps on CUDA), N = 1e7, M = 1024, K = 5
  dense       the same with ours-dense, when the N x M float32 matrix fits in half the GPU's memory
  train       scripts/bench_train.py, TARNet on N = 1e6 for 3 epochs: rows per second
  main        the main job: coarse-gpu data.n_customers=1000000 device=cuda model=tarnet model.max_epochs=1
              evaluation.k_values=[1,5] logger=none

Peak GPU MB is torch.cuda.max_memory_allocated() of the stage's process (the benchmark's own per-cell
figure for the discretizer cells). ``--smoke`` (GPU_CHECK_CPU_SMOKE=1 in the shell script) runs every
stage on CPU at tiny sizes, to test the check itself on a machine without a GPU.

    python scripts/gpu_check.py --smoke --out /tmp/gc --work /tmp/gc    # what the CPU test runs
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_ORDER = ("tests", "lazy", "dense", "train", "main")
# Caps add up to the default budget; the budget also shrinks the last ones when earlier stages run long.
# A discretizer cell spends ~25 s generating the 1e7-row instance on the CPU, and the first KeOps cell
# compiles its kernels (tens of seconds), before its GPU work.
CAPS_S = {"tests": 45, "lazy": 110, "dense": 90, "train": 40, "main": 160}
BUDGET_S = 445  # all stages together; gpu_check.sh passes what is left of 8 minutes after the install
MIN_STAGE_S = 10  # a stage with less left than this is skipped, not started


def wrap(argv: list[str]) -> int:
    """``--wrap PEAKFILE (-m MODULE | SCRIPT) ARGS...``: run the target in this process and write its
    peak CUDA memory (MB) to PEAKFILE at the end, also when it raises or exits."""
    peak_file, target, rest = argv[0], argv[1], argv[2:]
    code = 0
    try:
        if target == "-m":
            sys.argv = [rest[0], *rest[1:]]
            runpy.run_module(rest[0], run_name="__main__", alter_sys=True)
        else:
            sys.argv = [target, *rest]
            sys.path.insert(0, str(Path(target).resolve().parent))
            runpy.run_path(target, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        torch = sys.modules.get("torch")
        peak = None
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            peak = torch.cuda.max_memory_allocated() / 2**20
        Path(peak_file).write_text(json.dumps({"peak_mb": peak}))
    return code


def check_node(manifest_path: str) -> int:
    """``--check-node wheelhouse.json``: every package the wheelhouse left to the node is installed
    at a version its specifiers allow, and the node's glibc is new enough for the wheels; else one
    line naming what is wrong, exit 2."""
    import importlib.metadata as md
    import platform

    try:
        from packaging.specifiers import SpecifierSet
        from packaging.version import Version
    except ImportError:
        from pip._vendor.packaging.specifiers import SpecifierSet
        from pip._vendor.packaging.version import Version
    manifest = json.loads(Path(manifest_path).read_text())
    missing, bad = [], []
    for name, specs in manifest["assumed_on_node"].items():
        try:
            have = md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        if not all(SpecifierSet(s).contains(Version(have), prereleases=True) for s in specs):
            bad.append(f"{name} {have} (needs {','.join(specs)})")
    libc, ver = platform.libc_ver()
    if libc == "glibc" and Version(ver) < Version(manifest["glibc"]):
        bad.append(f"glibc {ver} (the wheels need {manifest['glibc']}: make_wheelhouse.sh --glibc {ver})")
    if missing or bad:
        print("gpu_check: the wheelhouse leaves these to the node, which " + "; ".join(
            ([f"lacks {', '.join(missing)}"] if missing else []) + ([f"has {', '.join(bad)}"] if bad else []))
            + ": run `python3 -m pip list --format=freeze > node.txt` here and make the wheelhouse again with "
            "--node-packages node.txt", file=sys.stderr)
        return 2
    return 0


def gpu_test_files() -> list[str]:
    """The test files holding a test marked ``gpu`` (collecting only these keeps pytest quick)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                  if "pytest.mark.gpu" in p.read_text())


def plan(smoke: bool, work: Path, gpu_gib: float) -> dict[str, dict]:
    """{stage: {"label", "cmd", "wrapped", ...}} at the check's sizes (tiny ones with ``smoke``)."""
    py, me = sys.executable, str(Path(__file__).resolve())
    dev = "cpu" if smoke else "cuda"
    n_disc, m_disc = (4000, 64) if smoke else (10_000_000, 1024)
    n_train, epochs = (4000, 1) if smoke else (1_000_000, 3)
    n_main = 3000 if smoke else 1_000_000
    bench = [py, str(ROOT / "scripts" / "bench_discretize.py"), "--device", dev, "--n", str(n_disc), "--m",
             str(m_disc), "--k", "5", "--max-dense-gb", f"{6.0 if smoke else 0.5 * gpu_gib:.1f}"]
    main_over = [f"data.n_customers={n_main}", f"device={dev}", "model=tarnet", "model.max_epochs=1",
                 "evaluation.k_values=[1,5]", "logger=none", "quiet=true", f"hydra.run.dir={work / 'main_job'}"]
    if smoke:
        main_over += ["model.n_folds=2", "model.hidden=32", "evaluation.n_boot=50"]
    train_extra = ["--hidden", "32"] if smoke else []
    return {
        "tests": {"label": "GPU tests (pytest -m gpu)", "wrapped": True,
                  "cmd": ["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *gpu_test_files()]},
        "lazy": {"label": f"discretize lazy {n_disc:,} x {m_disc} K=5", "n": n_disc, "m": m_disc,
                 "cmd": bench + ["--methods", "ours-lazy", "--json", str(work / "disc_lazy.json")]},
        "dense": {"label": f"discretize dense {n_disc:,} x {m_disc} K=5", "n": n_disc, "m": m_disc,
                  "cmd": bench + ["--methods", "ours-dense", "--json", str(work / "disc_dense.json")]},
        "train": {"label": f"train TARNet {n_train:,} rows x {epochs} epoch{'s' if epochs > 1 else ''}",
                  "wrapped": True,
                  "cmd": [str(ROOT / "scripts" / "bench_train.py"), "--n", str(n_train), "--epochs", str(epochs),
                          "--device", dev, *train_extra]},
        "main": {"label": f"main job {n_main:,} customers (tarnet, 1 epoch, K=1,5)", "wrapped": True,
                 "cmd": ["-m", "coarse_gpu.cli", *main_over], "run_dir": work / "main_job"},
    }


def run_stage(name: str, spec: dict, cap_s: float, work: Path, env: dict) -> dict:
    """Run one stage under ``cap_s``; returns {"status", "rc", "wall_s", "peak_mb", "log"}."""
    log = work / "logs" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    peak_file = work / "logs" / f"{name}.peak.json"
    peak_file.unlink(missing_ok=True)
    cmd = spec["cmd"]
    if spec.get("wrapped"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--wrap", str(peak_file), *cmd]
    if spec.get("run_dir") is not None:
        shutil.rmtree(spec["run_dir"], ignore_errors=True)  # a fresh run, never a resumed one
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # own process group: the cap also ends the benchmark's per-cell children
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=cap_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, status = None, "timeout"
    wall = time.perf_counter() - t0
    peak = json.loads(peak_file.read_text()).get("peak_mb") if peak_file.is_file() else None
    return {"status": status, "rc": rc, "wall_s": wall, "peak_mb": peak, "log": log.read_text(errors="replace")}


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            return


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:160]


def figure_tests(log: str) -> str:
    """pytest's summary, e.g. "2 passed" or "1 failed, 1 passed"."""
    found = re.findall(r"^=*\s*((?:\d+ \w+(?:, )?)+) in [\d.]+s", log, flags=re.M)
    return found[-1].rstrip(", ") if found else _last_line(log)


def figure_discretize(rows: list[dict], log: str, other: list[dict] | None = None) -> tuple[str, float | None]:
    """(figure, peak MB) of one bench_discretize cell; ``other``: the lazy cell's rows, for the dense
    cell's objective as a share of the lazy one's (100 % = the same treatments' value)."""
    if not rows:
        skipped = re.search(r"skipped: (.*)", log)
        return ("skipped: " + skipped.group(1).strip() if skipped else _last_line(log)), None
    r = rows[0]
    fig = f"solve {r['wall_s']:.2f} s, path {r.get('path') or '?'}"
    if other:
        fig += f", objective {100 * r['objective'] / other[0]['objective']:.3f} % of the lazy path's"
    return fig, (r["peak_mb"] if r.get("device", "cpu").startswith("cuda") else None)


def figure_train(log: str) -> str:
    rows = re.search(r"rows_per_s=([\d,]+)", log)
    wall = re.search(r"train_wall_s=([\d.]+)", log)
    rmse = re.search(r"effect_rmse=([\d.]+) \(constant-effect model: ([\d.]+)\)", log)
    if not rows:
        return _last_line(log)
    fig = f"{rows.group(1)} rows/s (fit {wall.group(1)} s)"
    return fig + (f", effect RMSE {rmse.group(1)} vs {rmse.group(2)} constant" if rmse else "")


def figure_main(run_dir: Path, log: str) -> str:
    """Status, total and training time, and the OT policy's share of full personalization at K=5."""
    path = run_dir / "results.json"
    if not path.is_file():
        return _last_line(log)
    res = json.loads(path.read_text())
    t = res.get("timings_s", {})
    fig = f"{res.get('status')}: total {t.get('total', float('nan')):.1f} s, train {t.get('train', float('nan')):.1f} s"
    ot5 = res.get("methods", {}).get("ot", {}).get("5")
    if ot5 and ot5.get("share_of_full") is not None:
        fig += f", OT K=5 keeps {100 * ot5['share_of_full']:.1f} % of full personalization"
    return fig


def _fmt_peak(row: dict) -> str:
    if row.get("peak_mb") is None:
        return "n/a (cpu)" if row.get("device") == "cpu" else "-"
    return f"{row['peak_mb']:,.0f}"


def build_table(rows: list[dict], header: list[str] | None = None) -> str:
    """The markdown table (stage | figure | time s | peak GPU MB), one line per row dict with keys
    stage, status (ok | failed | timeout | skipped), figure, time_s (None = not run), peak_mb, device."""
    lines = [f"{h}  " for h in header or []]
    lines += ["", "| stage | figure | time s | peak GPU MB |", "| --- | --- | ---: | ---: |"]
    for r in rows:
        fig = r["figure"].replace("|", "/")
        if r["status"] != "ok":
            fig = f"**{r['status'].upper()}**" + (f" ({r['why']})" if r.get("why") else "") + f": {fig}"
        t = "-" if r.get("time_s") is None else f"{r['time_s']:.1f}"
        lines.append(f"| {r['stage']} | {fig} | {t} | {_fmt_peak(r)} |")
    return "\n".join(lines).lstrip("\n") + "\n"


def environment(smoke: bool) -> tuple[dict, float]:
    """(facts about the machine for the table's header, total GPU memory in GiB or 0)."""
    import torch

    import coarse_gpu

    env = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "python": sys.version.split()[0],
           "torch": torch.__version__, "cuda": torch.version.cuda, "coarse_gpu": coarse_gpu.__version__,
           "coarse_gpu_from": str(Path(coarse_gpu.__file__).parent), "smoke": smoke}
    gib = 0.0
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        gib = p.total_memory / 2**30
        env["gpu"] = f"{p.name}, {gib:.0f} GiB"
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    env["commit"] = git.stdout.strip() if git.returncode == 0 else "unknown"
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True)
        env["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else "?"
    return env, gib


def _figure(name: str, spec: dict, res: dict, work: Path) -> tuple[str, float | None]:
    if name == "tests":
        return figure_tests(res["log"]), res["peak_mb"]
    if name in ("lazy", "dense"):
        rows = _read_rows(work / f"disc_{name}.json")  # dense runs second: its objective vs the lazy path's
        return figure_discretize(rows, res["log"], _read_rows(work / "disc_lazy.json") if name == "dense" else None)
    if name == "train":
        return figure_train(res["log"]), res["peak_mb"]
    return figure_main(spec["run_dir"], res["log"]), res["peak_mb"]


def _read_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text()) if path.is_file() else []


def run_all(stages: list[str], smoke: bool, work: Path, budget_s: float, gpu_gib: float) -> list[dict]:
    """Every stage in order under the shared budget; one table row each."""
    specs = plan(smoke, work, gpu_gib)
    for name in ("lazy", "dense"):
        (work / f"disc_{name}.json").unlink(missing_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "WANDB_MODE": "disabled",
           "COARSE_GPU_CONFIG_DIR": os.environ.get("COARSE_GPU_CONFIG_DIR", str(ROOT / "configs")),
           "KEOPS_CACHE_FOLDER": os.environ.get("KEOPS_CACHE_FOLDER", str(work / "keops_cache"))}
    rows, t_start = [], time.perf_counter()
    device = "cpu" if smoke else "cuda"
    for name in stages:
        spec = specs[name]
        left = budget_s - (time.perf_counter() - t_start)
        cap = min(CAPS_S[name], left)
        row = {"stage": spec["label"], "key": name, "device": device, "cap_s": round(cap, 1)}
        if cap < MIN_STAGE_S:
            rows.append({**row, "status": "skipped", "why": "budget spent", "figure": "not started", "time_s": None,
                         "peak_mb": None})
            continue
        print(f"[gpu_check] {name}: {spec['label']} (cap {cap:.0f} s)", file=sys.stderr, flush=True)
        res = run_stage(name, spec, cap, work, env)
        fig, peak = _figure(name, spec, res, work)
        status = res["status"]
        if status == "ok" and fig.startswith("skipped: "):
            status, fig = "skipped", fig[len("skipped: "):]
        why = f"rc {res['rc']}" if status == "failed" else f"cap {cap:.0f} s" if status == "timeout" else None
        rows.append({**row, "status": status, "why": why, "figure": fig, "time_s": res["wall_s"], "peak_mb": peak,
                     "log_tail": "\n".join(res["log"].strip().splitlines()[-40:])})
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--wrap"]:
        return wrap(argv[1:])
    if argv[:1] == ["--check-node"]:
        return check_node(argv[1])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / ".gpu_check" / "results"), help="where the table and log go")
    ap.add_argument("--work", default=str(ROOT / ".gpu_check"), help="run folder: logs, main job, KeOps cache")
    ap.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_CHECK_CPU_SMOKE") == "1",
                    help="every stage on CPU at tiny sizes (default: $GPU_CHECK_CPU_SMOKE=1)")
    ap.add_argument("--stages", default=",".join(STAGE_ORDER), help=f"comma list out of {','.join(STAGE_ORDER)}")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="all stages together")
    ap.add_argument("--install-s", type=float, help="(from gpu_check.sh) seconds the venv and install took")
    ap.add_argument("--install-figure", default="", help="(from gpu_check.sh) what was installed")
    args = ap.parse_args(argv)
    stages = [s for s in args.stages.split(",") if s]
    bad = [s for s in stages if s not in STAGE_ORDER]
    if bad or not stages:
        raise SystemExit(f"gpu_check: --stages must be a comma list out of {','.join(STAGE_ORDER)}, "
                         f"got {args.stages!r}")
    if args.budget_s <= 0:
        raise SystemExit(f"gpu_check: --budget-s must be positive, got {args.budget_s}")
    env, gib = environment(args.smoke)
    if not args.smoke and "gpu" not in env:
        print(f"gpu_check: no CUDA device visible to torch {env['torch']} (this check needs a GPU; "
              "GPU_CHECK_CPU_SMOKE=1 runs it on CPU at tiny sizes)", file=sys.stderr)
        return 3
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    if args.install_s is not None:
        rows.append({"stage": "install from the wheelhouse", "key": "install", "status": "ok", "device": None,
                     "figure": args.install_figure or "installed", "time_s": args.install_s, "peak_mb": None})
    rows += run_all(stages, args.smoke, work, args.budget_s, gib)
    write_results(rows, env, out)
    return 0 if all(r["status"] in ("ok", "skipped") and r.get("why") != "budget spent" for r in rows) else 1


def write_results(rows: list[dict], env: dict, out: Path) -> None:
    """Print the table; write it (.md), the rows and environment (.json) and the log tails to ``out``."""
    header = [f"GPU check, {'CPU SMOKE RUN (tiny sizes, not GPU figures)' if env['smoke'] else env.get('gpu')}",
              ", ".join(f"{k} {env[k]}" for k in ("date", "commit", "python", "torch", "cuda", "driver") if k in env)]
    table = build_table(rows, header)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check_results.md").write_text(table)
    (out / "gpu_check_results.json").write_text(json.dumps(
        {"environment": env, "stages": [{k: v for k, v in r.items() if k != "log_tail"} for r in rows]}, indent=1))
    (out / "gpu_check.log").write_text("".join(f"===== {r['key']}: {r['stage']} ({r['status']})\n"
                                               f"{r.get('log_tail', '')}\n" for r in rows))
    print("\n" + table + f"\n(written to {out}/gpu_check_results.md, .json and gpu_check.log)")


if __name__ == "__main__":
    sys.exit(main())
