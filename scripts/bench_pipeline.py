#!/usr/bin/env python
"""Per-stage time and peak memory of the main job as the number of customers grows.

Runs ``coarse-gpu`` once per size in a fresh process (so each peak RSS is that run's own), on the
built-in simulator with one training epoch and K in {1, 5} (the scale target of issue 16), and prints
one table: wall time and peak RSS of the whole process, then every stage of results.json's
``timings_s`` (seconds, and the stage's own peak RSS from ``timings_s.peak_host_mb``). The last columns
give each stage's seconds per 100,000 customers at the largest size over the smallest: a stage whose
cost grows linearly in N stays near 1x.

    python scripts/bench_pipeline.py                       # N = 1e5, 1e6, 2e6 (about 15 min on 2 cores)
    python scripts/bench_pipeline.py --sizes 20000,100000 --out /tmp/bench
    python scripts/bench_pipeline.py --default             # also the default run (50,000 customers, all K)
    python scripts/bench_pipeline.py -- device=cuda        # extra Hydra overrides after --
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCALE_OVERRIDES = ["model.max_epochs=1", "evaluation.k_values=[1,5]"]


def run_once(n: int | None, out: Path, extra: list[str]) -> dict:
    """One main-job run in a child process; returns wall seconds, peak RSS (MiB) and its timings_s."""
    run_dir = out / (f"n{n}" if n is not None else "default")
    args = [sys.executable, "-m", "coarse_gpu.cli", "logger=none", f"hydra.run.dir={run_dir}"]
    if n is not None:
        args += [f"data.n_customers={n}", *SCALE_OVERRIDES]
    args += extra
    env = {**os.environ, "CI": "1"}  # no progress bars in the captured log
    t0 = time.perf_counter()
    with open(out / f"{run_dir.name}.log", "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS, not a running max
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"run with n={n} failed (exit {code}); see {out / (run_dir.name + '.log')}")
    timings = json.loads((run_dir / "results.json").read_text())["timings_s"]
    return {"n": n, "wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024.0, "timings": timings}  # kB on Linux


STAGES = ("data", "simulator_checks", "true_ceiling", "train", "predict", "discretize", "baselines", "evaluate",
          "ensemble_spread", "save_policies", "total")


def table(rows: list[dict]) -> str:
    head = f"{'stage':<18}" + "".join(f"{'N=' + format(r['n'] or 50000, ','):>24}" for r in rows)
    scaled = [r for r in rows if r["n"] is not None]
    ratio = len(scaled) >= 2
    if ratio:
        head += f"{'s per 1e5, last/first':>24}"
    lines = [head, f"{'(seconds, own peak RSS MiB)':<18}"]
    for s in STAGES:
        cells = []
        for r in rows:
            t = r["timings"].get(s)
            mem = r["timings"].get("peak_host_mb", {}).get(s)
            cells.append("-" if t is None else f"{t:8.1f} s" + (f" {mem:7.0f} MB" if mem is not None else " " * 10))
        line = f"{s:<18}" + "".join(f"{c:>24}" for c in cells)
        if ratio and s != "total":
            a, b = scaled[0], scaled[-1]
            ta, tb = a["timings"].get(s), b["timings"].get(s)
            if ta and tb and ta > 0.5:  # sub-second stages are noise
                line += f"{(tb / b['n']) / (ta / a['n']):>23.2f}x"
        lines.append(line)
    lines.append(f"{'wall (process)':<18}" + "".join(f"{r['wall_s']:>22.1f} s" for r in rows))
    lines.append(f"{'peak RSS (process)':<18}" + "".join(
        f"{(format(r['peak_rss_mb'] / 1024, '.2f') + ' GB') if r['peak_rss_mb'] else 'n/a':>24}" for r in rows))
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,2000000", help="comma-separated numbers of customers")
    ap.add_argument("--default", action="store_true", help="also run the default job (50,000 customers, all K)")
    ap.add_argument("--out", default="bench_pipeline_out", help="folder for the run directories and logs")
    ap.add_argument("extra", nargs="*", help="Hydra overrides passed to every run (after --)")
    a = ap.parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sizes = sorted(int(float(s)) for s in a.sizes.split(",") if s.strip())
    rows = []
    if a.default:
        rows.append(run_once(None, out, a.extra))
        print(f"default run: {rows[-1]['wall_s']:.1f} s wall, {rows[-1]['timings']['total']:.1f} s in-run", flush=True)
    for n in sizes:
        rows.append(run_once(n, out, a.extra))
        print(f"N={n:,}: {rows[-1]['wall_s']:.1f} s wall", flush=True)
    text = table(rows)
    print(text)
    (out / "bench_pipeline.txt").write_text(text + "\n")
    (out / "bench_pipeline.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
