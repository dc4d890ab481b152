#!/usr/bin/env python
"""Treatment kinds table (issue 27): two simulator families with known true profits, the ``ot`` policy's
TRUE share at K = 3 and 5 for the default model (``model=auto``) and a default gradient-boosting
S-learner (``model=gb_s``) fed to the same discretizer, mean +- se over replications.

Families (each replication draws new customers; every customer is cross-fitted and scored out of fold,
as the default run does):
  mixed   a mixed treatment space: a continuous discount depth randomized over 0, 0.1, 0.2, 0.3 (the
          refinement may move it anywhere in [0, 0.3]), a binary lever (declared discrete: 0 or 1) and a
          categorical creative ("bold", "calm", "retro"), fully randomized (24 arms); profit
              pi = 5 + x2 + v (20 s d - 35 d^2) - 5 d + (1.5 x2 - 0.3) l + 5 s d l + c(x, creative),
          s = sigmoid(2 x1) the price sensitivity, v = exp(0.3 x4) the basket, c = x3 (bold),
          0.2 - 0.8 x3 (calm), 0.6 1[x1 > 0] (retro); realized profit = pi + N(0, 2^2); 6 covariates (2 noise).
  dose    the continuously randomized discount (coarse_gpu.data.dose_simulator, ``data=dose``): every
          customer her own discount ~ U[0, 0.5], one purchase occasion; the job runs it without arms
          (coarse_gpu.experiment.dose).
True share = (V(policy) - V(no treatment)) / (V(full personalization) - V(no treatment)) with the true
profits of the scored customers; full personalization is each customer's best FEASIBLE treatment (a
fine depth / discount grid x the observed lever and creative values). Every policy is checked: no
treatment takes a value its dimension cannot (a lever other than 0/1, a creative code between labels,
a combination nobody received, a dose outside the observed range); a violation stops the script.

    python experiments/kinds_table.py --reps 5                 # appends cells to --out (JSON lines)
    python experiments/kinds_table.py --table                  # mean +- se table from --out
A killed run resumes: cells already in --out are skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coarse_gpu.data.dose_simulator import DoseSimulator  # noqa: E402
from coarse_gpu.data.file import FileSpec, experiment_from_frame  # noqa: E402
from coarse_gpu.data.treatments import product_grid  # noqa: E402
from coarse_gpu.evaluate import oracle_value, share_of_full  # noqa: E402
from coarse_gpu.experiment.composed import discretizer_config, model_config  # noqa: E402
from coarse_gpu.experiment.dose import dose_space, is_continuous_dose  # noqa: E402
from coarse_gpu.experiment.kinds import resolve_kinds, unseen_mask  # noqa: E402
from coarse_gpu.experiment.methods import ot_policy  # noqa: E402
from coarse_gpu.experiment.personalize import personalize  # noqa: E402
from coarse_gpu.experiment.pipeline import candidate_treatments  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "kinds_table" / "cells.jsonl"
CREATIVES = ["bold", "calm", "retro"]
DEPTHS = [0.0, 0.1, 0.2, 0.3]
MODELS = ("auto", "gb_s")
K_VALUES = (3, 5)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class MixedTruth:
    """True profit of the mixed family: covariates x (N, 6); treatments (M, 3) = (depth, lever, creative code
    over the sorted labels bold, calm, retro)."""

    x: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, rows) -> "MixedTruth":
        return MixedTruth(self.x[rows])

    def profit(self, treatments, rows: Optional[np.ndarray] = None) -> np.ndarray:
        if hasattr(treatments, "detach"):
            treatments = treatments.detach().cpu().numpy()
        t = np.asarray(treatments, dtype=np.float64).reshape(-1, 3)
        x = self.x if rows is None else self.x[rows]
        code = np.rint(t[:, 2]).astype(int)
        if np.any(np.abs(t[:, 2] - code) > 1e-9) or np.any(~np.isin(t[:, 1], [0.0, 1.0])):
            raise ValueError("mixed truth: a lever other than 0/1 or a creative code between labels was asked for")
        s, v = _sigmoid(2 * x[:, [0]]), np.exp(0.3 * x[:, [3]])
        d, lev = t[None, :, 0], t[None, :, 1]
        creative = np.stack([x[:, 2], 0.2 - 0.8 * x[:, 2], 0.6 * (x[:, 0] > 0)], axis=1)[:, code]
        return (5 + x[:, [1]] + v * (20 * s * d - 35 * d * d) - 5 * d + (1.5 * x[:, [1]] - 0.3) * lev
                + 5 * s * d * lev + creative)


def mixed_sample(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6))
    df = pd.DataFrame(x, columns=[f"x{j + 1}" for j in range(6)])
    df["depth"] = rng.choice(DEPTHS, n)
    df["lever"] = rng.choice([0, 1], n)
    df["creative"] = rng.choice(CREATIVES, n)
    truth = MixedTruth(x)
    t = np.column_stack([df.depth, df.lever, [CREATIVES.index(c) for c in df.creative]])
    y = _own_profit(truth, t, np.arange(n)) + rng.normal(0, 2.0, n)
    df["profit"] = y
    spec = FileSpec(features=[f"x{j + 1}" for j in range(6)], treatment=["depth", "lever", "creative"],
                    outcome="profit", treatment_kinds={"depth": "continuous", "lever": "discrete"},
                    control=[0.0, 0, "calm"])
    data = experiment_from_frame(df, spec, source="kinds_table mixed family")
    data.truth = truth
    return data


def _own_profit(truth: MixedTruth, t: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """(N,) each customer's true profit at her own treatment (one (N, 24) evaluation over the arms)."""
    arms, idx = np.unique(t, axis=0, return_inverse=True)
    return truth.profit(arms)[rows, idx.reshape(-1)]


def feasible_grid(data) -> np.ndarray:
    """Every treatment a policy may offer, finely: continuous dimensions on 121 points of the box, the fixed
    ones on their observed values, restricted to observed combinations."""
    axes = [np.unique(data.arms[:, j]) if data.space.fixed_dims[j] else
            np.linspace(data.space.low[j], data.space.high[j], 121) for j in range(data.space.dim)]
    grid = product_grid(axes)
    return grid[~unseen_mask(grid, data.arms, data.space.fixed_dims)] if data.n_arms else grid


def invalid(treatments: np.ndarray, data) -> list[str]:
    """Why a policy's treatments (K, d) are not all offerable (empty when they are)."""
    t = np.asarray(treatments, dtype=np.float64)
    out = []
    low, high = np.asarray(data.space.low), np.asarray(data.space.high)
    if np.any(t < low - 1e-9) or np.any(t > high + 1e-9):
        out.append(f"outside the box [{low.tolist()}, {high.tolist()}]: {t.tolist()}")
    for j in np.flatnonzero(data.space.fixed_dims):
        bad = ~np.isin(t[:, j], np.unique(data.arms[:, j]))
        if bad.any():
            out.append(f"{data.space.names[j]} takes {t[bad, j].tolist()}, not an observed value")
    if data.n_arms and unseen_mask(t, data.arms, data.space.fixed_dims).any():
        out.append("a combination no customer received")
    return out


def sample(family: str, n: int, seed: int):
    if family == "mixed":
        data = mixed_sample(n, seed)
    else:
        data = dose_space(DoseSimulator(n_customers=n, seed=seed).sample())
    return resolve_kinds(data)


def run_cell(family: str, model: str, rep: int, n: int, n_folds: int, device: torch.device) -> list[dict]:
    """The ot K=3, 5 policies of ``model`` on one draw of ``family``: true share, validity, timings."""
    t0 = time.perf_counter()
    data = sample(family, n, 1000 * rep + 7)
    cands = candidate_treatments(data, OmegaConf.create({"candidate_points": None}), keep_integer_dims=True)
    cfg = model_config(model)
    cfg.n_folds, cfg.checkpoint = n_folds, False
    fitted, est, sel = personalize(cfg, data, data, True, device, rep, False)
    profit = est.at_candidates(cands)
    truth = data.truth
    control = float(truth.profit(np.asarray(data.space.control)[None, :]).mean())
    full = float(truth.profit(feasible_grid(data)).max(1).mean())
    run_cfg = OmegaConf.create({"discretizer": discretizer_config("sinkhorn"), "distributed": False})
    rows = []
    for k in K_VALUES:
        policy, _ = ot_policy(profit, cands, k, run_cfg, est.oracle, data.space, device, rep)
        bad = invalid(policy.treatments, data)
        if bad:
            raise SystemExit(f"{family}/{model} rep {rep} K={k}: the policy offers what cannot be offered: {bad}")
        value = oracle_value(truth, policy)
        # the true-profit ceiling: the same discretizer on the TRUE profits (no model behind it)
        best, _ = ot_policy(truth.profit(cands), cands, k, run_cfg,
                            lambda T: torch.as_tensor(truth.profit(T), dtype=torch.float64), data.space, device, rep)
        rows.append({"ceiling_share": share_of_full(oracle_value(truth, best), control, full),"family": family, "model": model, "rep": rep, "k": k, "n": n, "n_folds": n_folds,
                     "selected": sel.get("winner"), "true_share": share_of_full(value, control, full),
                     "true_value": value, "control": control, "full": full,
                     "treatments": data.space.to_user(policy.treatments), "valid": True,
                     "seconds": time.perf_counter() - t0})
    return rows


def table(path: Path) -> str:
    cells = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    df = pd.DataFrame(cells)
    lines = ["| family | model | K | true share (mean +- se) | true-profit ceiling | reps | all policies valid |",
             "|---|---|---|---|---|---|---|"]
    for (fam, model, k), g in df.groupby(["family", "model", "k"], sort=False):
        s = g.true_share.to_numpy()
        se = s.std(ddof=1) / np.sqrt(len(s)) if len(s) > 1 else float("nan")
        ceil = g.ceiling_share.dropna().to_numpy() if "ceiling_share" in g else np.empty(0)
        lines.append(f"| {fam} | {model} | {k} | {100 * s.mean():.1f} % +- {100 * se:.1f} | "
                     f"{f'{100 * ceil.mean():.1f} %' if ceil.size else '-'} | {len(s)} | "
                     f"{'yes' if g.valid.all() else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=["mixed", "dose"], choices=["mixed", "dose"])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=12_000, help="customers per draw")
    ap.add_argument("--folds", type=int, default=5, help="cross-fitting folds (the default run's 5)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--table", action="store_true", help="print the table from --out and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.out))
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {(c["family"], c["model"], c["rep"]) for c in map(json.loads, args.out.read_text().splitlines()) if c}
    device = torch.device("cpu")
    for rep in range(args.reps):
        for fam in args.families:
            for model in args.models:
                if (fam, model, rep) in done:
                    continue
                rows = run_cell(fam, model, rep, args.n, args.folds, device)
                with args.out.open("a") as fh:
                    fh.writelines(json.dumps(r) + "\n" for r in rows)
                print(f"{fam} {model} rep {rep}: " + ", ".join(f"K={r['k']} {100 * r['true_share']:.1f}%"
                                                              for r in rows) + f" ({rows[-1]['seconds']:.0f}s)",
                      flush=True)
    print(table(args.out))


if __name__ == "__main__":
    main()
