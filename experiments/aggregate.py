#!/usr/bin/env python
"""Aggregate a sweep (Hydra multirun) of coarse-gpu runs into one table, figures and a markdown report.

    python experiments/aggregate.py multirun/2026-11-23/14-00-00 --out experiments/results/paper_simulation

Reads every ``results.json`` under the sweep folder (one per seed / setting) and writes into ``--out``:
  summary.json      mean, sd and count of the oracle share of full personalization per (method, K), the
                    doubly robust agreement rate, and the headline numbers
  table.md          the mean (± sd) share table in markdown
  share_vs_k.png    mean share vs K per method, with ±1 sd bands
  report.md         the above gathered, with the per-run treatments figure of the first run
DR agreement: a (run, method, K) cell agrees when the oracle value lies inside the DR confidence interval.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from coarse_gpu.experiment.report import METHOD_LABELS  # noqa: E402
from coarse_gpu.utils.io import atomic_write_json, atomic_write_text  # noqa: E402


def load_runs(sweep: Path) -> list[dict]:
    runs = []
    for path in sorted(sweep.rglob("results.json")):
        try:
            res = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            print(f"skipping {path}: {err}", file=sys.stderr)
            continue
        if res.get("status") != "complete":
            print(f"note: {path} has status {res.get('status')!r}; its finished K are used", file=sys.stderr)
        res["_dir"] = str(path.parent)
        runs.append(res)
    if not runs:
        raise SystemExit(f"no results.json under {sweep}")
    return runs


def _cells(runs: list[dict], order: list[str], ks: list[int], key: str) -> dict:
    """{method: {K: {mean, sd, n}}} of the per-run value ``key`` (e.g. share_of_full) where present."""
    cells: dict = {}
    for m in order:
        cells[m] = {}
        for k in ks:
            c = _mean_sd([r["methods"][m][str(k)].get(key) for r in runs if str(k) in r["methods"].get(m, {})])
            if c:
                cells[m][str(k)] = c
    return cells


def summarize(runs: list[dict]) -> dict:
    methods = []
    for r in runs:
        for m in r["methods"]:
            if m not in methods:
                methods.append(m)
    order = [m for m in METHOD_LABELS if m in methods] + [m for m in methods if m not in METHOD_LABELS]
    ks = sorted({int(k) for r in runs for m in r["methods"] for k in r["methods"][m]})
    cells = _cells(runs, order, ks, "share_of_full")
    agree = total = 0
    for m in order:
        for k in ks:
            for r in runs:
                c = r["methods"].get(m, {}).get(str(k))
                if c and c.get("oracle_profit") is not None and c.get("dr_ci"):
                    total += 1
                    lo, hi = c["dr_ci"]
                    agree += int(lo <= c["oracle_profit"] <= hi)
    ot_best = {}
    for k in ks:
        ot = cells.get("ot", {}).get(str(k))
        if not ot:
            continue
        others = {m: cells[m][str(k)]["mean"] for m in order if m != "ot" and str(k) in cells[m]}
        if others:
            best_other = max(others, key=others.get)
            ot_best[str(k)] = {"ot_minus_best_baseline_pts": 100 * (ot["mean"] - others[best_other]),
                               "best_baseline": best_other}
    return {
        "n_runs": len(runs), "seeds": [r.get("seed") for r in runs], "k_values": ks, "methods": order,
        "share_of_full": cells,
        # the paper's measure: the model's estimates for the policy, no treatment and full personalization
        "expected_share_of_full": _cells(runs, order, ks, "expected_share_of_full"),
        # what the model's own per-customer best keeps of the true increment (the estimation ceiling)
        "estimated_ceiling": _mean_sd([r.get("full_personalization", {}).get("estimated_policy_share_of_full")
                                       for r in runs]),
        "dr_agreement": {"cells": total, "oracle_inside_dr_ci": agree, "rate": agree / total if total else math.nan},
        "ot_vs_best_baseline": ot_best,
        "experiment": runs[0].get("config", {}).get("experiment", {}),
        "n_customers": runs[0].get("n_customers"),
        "model": runs[0].get("config", {}).get("model", {}).get("name"),
    }


def _mean_sd(vals: list) -> Optional[dict]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"mean": float(np.mean(vals)), "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def table_md(s: dict, key: str = "share_of_full") -> str:
    ks = s["k_values"]
    lines = ["| method | " + " | ".join(f"K={k}" for k in ks) + " |", "| --- |" + " --- |" * len(ks)]
    for m in s["methods"]:
        row = []
        for k in ks:
            c = s[key].get(m, {}).get(str(k))
            row.append(f"{100 * c['mean']:.2f} ± {100 * c['sd']:.2f}" if c else "")
        lines.append(f"| {METHOD_LABELS.get(m, m)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in s["methods"]:
        ks = [k for k in s["k_values"] if str(k) in s["share_of_full"][m]]
        if not ks:  # (a method with a single K, e.g. one treatment for all, is drawn as one marker)
            continue
        mu = np.array([100 * s["share_of_full"][m][str(k)]["mean"] for k in ks])
        sd = np.array([100 * s["share_of_full"][m][str(k)]["sd"] for k in ks])
        ax.plot(ks, mu, marker="o", ms=3, lw=2 if m == "ot" else 1.2, label=METHOD_LABELS.get(m, m))
        ax.fill_between(ks, mu - sd, mu + sd, alpha=0.15)
    ax.set_xlabel("K (number of distinct treatments)")
    ax.set_ylabel("% of full personalization's incremental profit")
    ax.set_title(f"{s['experiment'].get('name', 'sweep')}: mean ± sd over {s['n_runs']} seeds", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="a multirun folder (or any folder holding results.json files)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    runs = load_runs(args.sweep)
    s = summarize(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "summary.json", s)
    md = table_md(s)
    atomic_write_text(args.out / "table.md", md + "\n")
    plot(s, args.out / "share_vs_k.png")
    first = Path(runs[0]["_dir"])
    extra = ""
    for fig in sorted(first.glob("treatments_k*.png"))[:1]:
        shutil.copyfile(fig, args.out / fig.name)
        extra = f"\n\nTreatments chosen in the first run (seed {runs[0].get('seed')}):\n\n![treatments]({fig.name})\n"
    dr = s["dr_agreement"]
    if any(s["expected_share_of_full"].get(m) for m in s["methods"]):
        extra = ("\n\nShare of *expected* incremental profit (the paper's measure: the model's estimates for the "
                 f"policy, no treatment and full personalization), mean ± sd:\n\n{table_md(s, 'expected_share_of_full')}"
                 + extra)
    if s.get("estimated_ceiling"):
        c = s["estimated_ceiling"]
        extra = (f"\n\nEstimation ceiling: the model's own per-customer best treatment keeps {100 * c['mean']:.2f} ± "
                 f"{100 * c['sd']:.2f} % of the true increment." + extra)
    report = (f"# {s['experiment'].get('name', 'sweep')}\n\n{s['experiment'].get('description', '')}\n\n"
              f"{s['n_runs']} runs (seeds {s['seeds']}), {s['n_customers']} customers each, model {s['model']}.\n\n"
              "Share of full personalization's incremental profit (true profits, held-out customers), mean ± sd:\n\n"
              f"{md}\n\n![share vs K](share_vs_k.png)\n\n"
              f"Doubly robust check: the oracle value lies inside the DR 95% CI in {dr['oracle_inside_dr_ci']} of "
              f"{dr['cells']} (run, method, K) cells ({100 * dr['rate']:.1f}%).{extra}")
    atomic_write_text(args.out / "report.md", report)
    print(md)
    print(f"DR agreement: {dr['oracle_inside_dr_ci']}/{dr['cells']} = {100 * dr['rate']:.1f}%")
    print(f"wrote {args.out}/summary.json, table.md, share_vs_k.png, report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
