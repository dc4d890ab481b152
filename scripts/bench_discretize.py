#!/usr/bin/env python
"""Benchmark of step 2 (discretize): time, peak memory and objective, ours against POT and k-means.

The instance has the structure of the real pipeline: a CATE model predicts each customer's profit at
A experimental arms (V, N x A), and the profit at each of the M candidate treatments of a 2-D grid is
the bilinear interpolation of the arms (W, M x A), so Pi = V W^T. Customers have an ideal treatment
drawn from a mixture of Gaussian "types" and quadratic losses around it, plus idiosyncratic noise.

Methods (K treatments chosen, then every customer takes its best chosen treatment):
  ours-dense    coarse_gpu.discretize on the materialized (N, M) matrix (solver=sinkhorn)
  ours-lazy     the same on the factored Pi = V W^T (KeOps on CUDA, row-blocked torch on CPU), never
                storing N x M
  ours-lloyd    the exact Lloyd alternation (the reference), dense, the same --restarts
  lloyd-lazy    the same Lloyd alternation on the factored Pi = V W^T (the lazy path)
  lloyd-match   Lloyd with 8, 16, 32, ... 512 restarts until it reaches ours-dense's objective: the wall
                time of the first run that does (time to equal objective), "restarts" says how many
  pot-sinkhorn  the alternation with POT's log-domain ``ot.sinkhorn`` as the assignment step (column
                masses = current segment shares, the same eps schedule end point), then argmax rounding
  pot-bary      POT ``ot.lp.free_support_barycenter`` of the customers' ideal treatments (K support
                points, Wasserstein-2 k-means in treatment space), snapped to the grid
  kmeans-pref   scikit-learn k-means on the ideal treatments (segment on preferences), best treatment per segment
Constrained cells (the lazy path, solver=sinkhorn; objective = the constrained assignment's total profit):
  ours-shares   share bounds 15-25 % per treatment
  ours-budget   the same shares and a budget: mean cost per customer <= 80 % of the mean cost of the
                customers' ideal treatments, cost of (t1, t2) = t1 + t2 / 2 (weights 1/N); the row
                reports the budget's value and dual multiplier (profit per unit of budget per customer)
                and ``vs_free`` = objective / the unconstrained ours-lazy objective of the same cell
The objective is reported as a share of the best one found by any method on that instance
(``share_best``); ``gap_pct`` = 100 (1 - share_best).

Each (method, N, M) cell runs in its own subprocess so that ``peak_mb`` (max RSS on CPU, max allocated
on CUDA) belongs to that cell only; the timing excludes process start and data generation.

    python scripts/bench_discretize.py                              # N in {1e4,1e5,1e6} x M in {64,1024}
    python scripts/bench_discretize.py --n 1000000 --m 256          # the 2-core CPU target (< 10 s)
    python scripts/bench_discretize.py --repeat 3 --methods ours-lazy lloyd-lazy   # median of 3 processes
    python scripts/bench_discretize.py --device cuda --n 10000000 --m 1024 --methods ours-lazy
    python scripts/bench_discretize.py --n 100000 1000000 --m 256 --methods ours-lazy ours-shares ours-budget
(in the markdown table the constrained cells' percentage is vs_free, the others' share_best)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

K_DEFAULT = 5
CONSTRAINED = ("ours-shares", "ours-budget")


def make_instance(n: int, m: int, seed: int = 0, arms_per_axis: int = 6):
    """(V (N, A) float32, W (M, A) float32, candidates (M, 2), ideal (N, 2)) for the structure above."""
    rng = np.random.default_rng(seed)
    n_types = 12
    centers = rng.uniform(0.05, 0.95, size=(n_types, 2))
    typ = rng.integers(n_types, size=n)
    ideal = np.clip(centers[typ] + rng.normal(scale=0.08, size=(n, 2)), 0, 1)
    level = rng.lognormal(1.0, 0.3, size=n)
    curv = rng.lognormal(1.5, 0.4, size=(n, 2))
    ax = np.linspace(0, 1, arms_per_axis)
    arms = np.stack(np.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2)  # (A, 2)
    # the quadratic loss dimension by dimension: bit for bit the sum over the last axis of
    # curv * (arms - ideal) ** 2 on an (N, A, 2) array, 5x faster (N = 1e7 takes ~10 s, not ~45 s)
    quad = curv[:, 0:1] * (arms[None, :, 0] - ideal[:, 0:1]) ** 2
    quad += curv[:, 1:2] * (arms[None, :, 1] - ideal[:, 1:2]) ** 2
    V = level[:, None] - quad + rng.normal(scale=0.05, size=(n, arms.shape[0]))
    g = int(round(math.sqrt(m)))
    if g * g != m:
        raise ValueError(f"--m must be a perfect square (a g x g grid), got {m}")
    cx = np.linspace(0, 1, g)
    cand = np.stack(np.meshgrid(cx, cx, indexing="ij"), -1).reshape(-1, 2)
    # bilinear (tent) weights of each candidate on the arm grid
    h = ax[1] - ax[0]
    wx = np.clip(1 - np.abs(cand[:, None, 0] - arms[None, :, 0]) / h, 0, None)
    wy = np.clip(1 - np.abs(cand[:, None, 1] - arms[None, :, 1]) / h, 0, None)
    W = wx * wy
    return V.astype(np.float32), W.astype(np.float32), cand, ideal


def _objective(P_cols: np.ndarray) -> float:
    """Total profit when each customer takes its best of the K chosen columns."""
    return float(P_cols.max(1).sum(dtype=np.float64))


def _dense(V, W, torch, device):
    Vt = torch.as_tensor(V, device=device)
    Wt = torch.as_tensor(W, device=device)
    return Vt @ Wt.T


def _chosen_objective(V, W, cols, torch, device) -> float:
    Vt = torch.as_tensor(V, device=device, dtype=torch.float64)
    Wt = torch.as_tensor(W[np.asarray(cols)], device=device, dtype=torch.float64)
    return float((Vt @ Wt.T).max(1).values.sum())


def run_cell(method: str, n: int, m: int, k: int, device: str, seed: int, restarts: int) -> dict:
    import torch

    from coarse_gpu.discretize import discretize
    from coarse_gpu.discretize.profit import FactoredProfit

    V, W, cand, ideal = make_instance(n, m, seed)
    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        # warm the kernels (cuBLAS, KeOps compile) on a small instance, outside the timing
        Vs, Ws, cs, _ = make_instance(2048, m, seed + 1)
        if method.startswith("ours"):
            discretize(FactoredProfit(torch.as_tensor(Vs, device=dev), torch.as_tensor(Ws, device=dev)), k,
                       candidates=cs, device=device, n_restarts=restarts)
        torch.cuda.reset_peak_memory_stats()
    # Imports outside the timing: POT's first import alone takes ~4 s (its backends), sklearn ~2 s.
    import ot  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import tqdm.auto  # noqa: F401

    info: dict = {}
    t0 = time.perf_counter()
    obj = None
    if method in ("ours-shares", "ours-budget"):
        from coarse_gpu.discretize import Constraint

        kw = dict(min_share=0.15, max_share=0.25)
        if method == "ours-budget":
            cost = cand[:, 0] + 0.5 * cand[:, 1]
            budget = 0.8 * float(np.mean(ideal[:, 0] + 0.5 * ideal[:, 1]))
            kw["constraints"] = [Constraint(np.full(n, 1.0 / n), cost, hi=budget, name="budget")]
        profit = FactoredProfit(torch.as_tensor(V, device=dev), torch.as_tensor(W, device=dev))
        res = discretize(profit, k, candidates=cand, device=device, seed=seed, n_restarts=restarts, **kw)
        cols, obj = res.candidate_index, res.objective
        info["path"] = res.info.get("path")
        info["phase_s"] = {key: round(v, 3) for key, v in res.info.get("phase_s", {}).items()}
        if "constraints" in res.info:
            c = res.info["constraints"][0]
            info["budget"] = {"value": round(c["value"], 5), "hi": round(c["hi"], 5), "dual": round(c["dual"], 3)}
    elif method in ("ours-lazy", "lloyd-lazy", "ours-dense", "ours-lloyd"):
        # the dense matrix is materialized inside the timing; the factored profits never are
        profit = FactoredProfit(torch.as_tensor(V, device=dev), torch.as_tensor(W, device=dev)) \
            if method.endswith("lazy") else _dense(V, W, torch, dev)
        res = discretize(profit, k, candidates=cand, device=device, seed=seed, n_restarts=restarts,
                         solver="sinkhorn" if method in ("ours-lazy", "ours-dense") else "lloyd")
        cols = res.candidate_index
        info["path"] = res.info.get("path")
        info["phase_s"] = {key: round(v, 3) for key, v in res.info.get("phase_s", {}).items()}
    elif method == "lloyd-match":
        X = _dense(V, W, torch, dev)
        target = discretize(X, k, candidates=cand, device=device, seed=seed, n_restarts=restarts).objective
        sync()
        r = restarts
        while True:
            t0 = time.perf_counter()
            res = discretize(X, k, candidates=cand, device=device, seed=seed, n_restarts=r, solver="lloyd")
            if res.objective >= target * (1 - 1e-7) or r >= 512:
                break
            r *= 2
        cols = res.candidate_index
        info["restarts"] = r
        info["reached_target"] = bool(res.objective >= target * (1 - 1e-7))
    elif method == "pot-sinkhorn":
        cols = _pot_sinkhorn_alternation(V, W, k, seed, torch, dev)
    elif method == "pot-bary":
        cols = _pot_barycenter(ideal, cand, k, seed)
    elif method == "kmeans-pref":
        cols = _kmeans_preferences(V, W, ideal, cand, k, seed, torch, dev)
    else:
        raise ValueError(f"unknown method {method!r}")
    sync()
    wall = time.perf_counter() - t0
    if obj is None:  # unconstrained: every customer takes its best of the K chosen columns
        obj = _chosen_objective(V, W, cols, torch, dev)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"method": method, "n": n, "m": m, "k": k, "device": device, "wall_s": wall, "peak_mb": peak_mb,
            "objective": obj, "treatments": np.asarray(cand[np.asarray(cols)]).round(4).tolist(), **info}


def _location_step(X, plan, k, torch):
    """K distinct candidates maximizing the plan-weighted profit (linear assignment on (K, M) scores)."""
    from scipy.optimize import linear_sum_assignment

    S = (plan.T @ X).double().cpu().numpy()  # (K, M)
    r, c = linear_sum_assignment(S, maximize=True)
    out = np.empty(k, dtype=np.int64)
    out[r] = c
    return out


def _pot_sinkhorn_alternation(V, W, k, seed, torch, dev, n_iter=30, reg_rel=0.01):
    """The alternation with POT's log-domain Sinkhorn as the assignment (uniform customer mass,
    column masses = the current segment shares, i.e. balanced OT as a user of POT would set it up)."""
    import ot

    X = _dense(V, W, torch, dev)
    n, m = X.shape
    rng = np.random.default_rng(seed)
    cols = rng.choice(m, size=k, replace=False)
    scale = float(X[: min(n, 2048)].std(1).pow(2).mean().sqrt())
    a = torch.full((n,), 1.0 / n, dtype=torch.float64, device=dev)
    prev = None
    for _ in range(n_iter):
        U = X[:, torch.as_tensor(cols, device=dev)].double()
        share = torch.bincount(U.argmax(1), minlength=k).double() / n
        b = (share + 1e-3) / (share + 1e-3).sum()
        C = (U.max() - U) / scale
        plan = ot.sinkhorn(a, b, C, reg_rel, method="sinkhorn_log", numItermax=200, stopThr=1e-6)
        cols_new = _location_step(X, plan.to(X.dtype) * n, k, torch)
        if prev is not None and set(cols_new.tolist()) == set(prev.tolist()):
            break
        prev, cols = cols, cols_new
    return cols


def _pot_barycenter(ideal, cand, k, seed, max_n=100_000):
    """POT free-support barycenter (K support points) of the ideal treatments, snapped to the grid."""
    import ot

    rng = np.random.default_rng(seed)
    pts = ideal if ideal.shape[0] <= max_n else ideal[rng.choice(ideal.shape[0], max_n, replace=False)]
    X_init = pts[rng.choice(pts.shape[0], k, replace=False)]
    Xb = ot.lp.free_support_barycenter([pts], [np.full(pts.shape[0], 1.0 / pts.shape[0])], X_init,
                                       b=np.full(k, 1.0 / k), numItermax=50)
    d = ((Xb[:, None, :] - cand[None]) ** 2).sum(-1)
    cols = []
    for row in d:  # distinct nearest candidates
        for j in np.argsort(row):
            if j not in cols:
                cols.append(int(j))
                break
    return np.array(cols)


def _kmeans_preferences(V, W, ideal, cand, k, seed, torch, dev):
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(ideal)
    X = _dense(V, W, torch, dev)
    lab = torch.as_tensor(km.labels_, device=dev)
    S = torch.zeros(k, X.shape[1], dtype=torch.float64, device=dev).index_add_(0, lab, X.double())
    cols = []
    for row in S.cpu().numpy():  # best treatment per segment, distinct
        for j in np.argsort(-row):
            if j not in cols:
                cols.append(int(j))
                break
    return np.array(cols)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--m", type=int, nargs="+", default=[64, 1024])
    p.add_argument("--k", type=int, default=K_DEFAULT)
    p.add_argument("--methods", nargs="+",
                   default=["ours-dense", "ours-lazy", "ours-lloyd", "lloyd-lazy", "lloyd-match", "pot-sinkhorn",
                            "pot-bary", "kmeans-pref"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--restarts", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-dense-gb", type=float, default=6.0,
                   help="skip dense methods whose N x M float32 matrix exceeds this (the lazy path still runs)")
    p.add_argument("--cell-timeout", type=float, default=None,
                   help="give up on a cell after this many seconds (POT cells at N = 1e6 take ~5 min on 2 cores)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each cell this many times (a fresh process each) and report the median wall time")
    p.add_argument("--json", help="also write every row to this JSON file")
    p.add_argument("--cell", help=argparse.SUPPRESS)  # internal: run one cell, print its JSON
    args = p.parse_args(argv)

    if args.cell:
        method, n, m = args.cell.split(":")
        print(json.dumps(run_cell(method, int(n), int(m), args.k, args.device, args.seed, args.restarts)))
        return 0

    rows = []
    print(f"# discretize benchmark: K={args.k}, device={args.device}, restarts={args.restarts}", flush=True)
    header = f"{'N':>9} {'M':>5} {'method':<13} {'wall_s':>8} {'peak_mb':>9} {'objective':>14} {'share_best':>10}"
    print(header, flush=True)
    for n in args.n:
        for m in args.m:
            cell_rows = []
            for method in args.methods:
                dense = method in ("ours-dense", "ours-lloyd", "lloyd-match", "pot-sinkhorn", "kmeans-pref")
                if dense and n * m * 4 / 2**30 > args.max_dense_gb:
                    print(f"{n:>9} {m:>5} {method:<13}  skipped: N x M = {n * m * 4 / 2**30:.1f} GB float32 "
                          f"> --max-dense-gb {args.max_dense_gb}", flush=True)
                    continue
                cmd = [sys.executable, __file__, "--cell", f"{method}:{n}:{m}", "--k", str(args.k),
                       "--device", args.device, "--seed", str(args.seed), "--restarts", str(args.restarts)]
                reps = []
                for _ in range(max(1, args.repeat)):
                    try:
                        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(),
                                              timeout=args.cell_timeout)
                    except subprocess.TimeoutExpired:
                        print(f"{n:>9} {m:>5} {method:<13}  not finished within --cell-timeout {args.cell_timeout} s",
                              flush=True)
                        break
                    if proc.returncode != 0:
                        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
                        print(f"{n:>9} {m:>5} {method:<13}  FAILED: {tail[0]}", flush=True)
                        break
                    reps.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                if len(reps) < max(1, args.repeat):
                    continue
                # the run with the median wall time (same seed and instance: the objective is the same)
                row = sorted(reps, key=lambda r: r["wall_s"])[len(reps) // 2]
                row["wall_s_all"] = [round(r["wall_s"], 3) for r in reps]
                cell_rows.append(row)
                extra = f"  (restarts {row['restarts']}{'' if row['reached_target'] else ', target not reached'})" \
                    if "restarts" in row else ""
                print(f"{n:>9} {m:>5} {method:<13} {row['wall_s']:>8.2f} {row['peak_mb']:>9.0f} "
                      f"{row['objective']:>14.1f}{extra}", flush=True)
            free_rows = [r for r in cell_rows if r["method"] not in CONSTRAINED]
            best = max((r["objective"] for r in free_rows), default=float("nan"))
            free = next((r["objective"] for r in cell_rows if r["method"] == "ours-lazy"), float("nan"))
            for r in cell_rows:
                r["share_best"] = r["objective"] / best
                r["gap_pct"] = 100 * (1 - r["share_best"])
                if r["method"] in CONSTRAINED:
                    r["vs_free"] = r["objective"] / free
                    print(f"{'':>9} {'':>5} {r['method']}: objective / unconstrained ours-lazy = "
                          f"{100 * r['vs_free']:.3f}%" + (f", budget {r['budget']}" if "budget" in r else ""),
                          flush=True)
            if cell_rows:
                print(f"{'':>9} {'':>5} shares of the best objective: "
                      + ", ".join(f"{r['method']} {100 * r['share_best']:.3f}%" for r in cell_rows
                                  if r["method"] not in CONSTRAINED), flush=True)
            rows.extend(cell_rows)
    # the same rows as a markdown table (the README's), one line per (N, M), one column per method
    methods = [mt for mt in args.methods if any(r["method"] == mt for r in rows)]
    if rows:
        print("\n| N | M | " + " | ".join(methods) + " |\n| --- | --- |" + " --- |" * len(methods))
        for n in args.n:
            for m in args.m:
                cells = {r["method"]: r for r in rows if r["n"] == n and r["m"] == m}
                if not cells:
                    continue
                out = []
                for mt in methods:
                    r = cells.get(mt)
                    pct = r["vs_free"] if r is not None and "vs_free" in r else (r or {}).get("share_best", 0.0)
                    out.append("not run" if r is None else
                               f"{r['wall_s']:.2f} s / {r['peak_mb'] / 1024:.1f} GB / {100 * pct:.2f} %"
                               + (f" (R={r['restarts']})" if "restarts" in r else ""))
                print(f"| {n:,} | {m} | " + " | ".join(out) + " |")
    if args.json:
        from coarse_gpu.utils.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
