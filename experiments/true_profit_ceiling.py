#!/usr/bin/env python
"""How much K treatments can keep on the simulated promotions DGP when the profits are KNOWN.

The OT discretizer run on the simulator's true profits pi_i(t) (no model, no estimation error):
the share of full personalization's incremental profit any K-treatment policy can reach on this
DGP. It separates the discretization loss (what K costs) from the estimation loss (what the model
costs) in the experiments' tables.

    python experiments/true_profit_ceiling.py                      # 50,000 customers, K = 1..6, 8, 10
    python experiments/true_profit_ceiling.py --gamma-max 0        # the 1-D setting (duration inert)

Prints one line per K and writes --out (JSON) when given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coarse_gpu.data.simulator import PromotionsSimulator  # noqa: E402
from coarse_gpu.discretize import discretize  # noqa: E402
from coarse_gpu.evaluate.oracle import (  # noqa: E402
    oracle_control_value,
    oracle_full_personalization,
    share_of_full,
)
from coarse_gpu.utils.io import atomic_write_json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=50_000, help="customers")
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 10])
    p.add_argument("--gamma-max", type=float, default=2.0, help="duration sensitivity scale (0: 1-D setting)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", type=int, nargs=2, default=[42, 13], help="candidate grid points per dimension")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)

    data = PromotionsSimulator(n_customers=args.n, gamma_max=args.gamma_max, seed=args.seed).sample()
    truth, space = data.truth, data.space
    full, _ = oracle_full_personalization(truth, space, points=(101, 81))
    control = oracle_control_value(truth, space)
    cand = space.grid(args.grid)
    profit = truth.profit(cand)  # (N, M) true profits on the candidate grid

    def oracle(t):  # true profits at any treatments, for the off-grid refinement
        t = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
        return torch.as_tensor(truth.profit(t))

    rows = []
    print(f"true-profit ceiling: {args.n} customers, gamma_max={args.gamma_max}, seed {args.seed}")
    for k in args.k:
        t0 = time.perf_counter()
        res = discretize(profit, k, candidates=cand, seed=args.seed, refine_oracle=oracle,
                         bounds=(np.asarray(space.low), np.asarray(space.high)))
        value = float(truth.profit(res.treatments)[np.arange(args.n), res.assignment].mean())
        share = share_of_full(value, control, full)
        rows.append({"k": k, "share_of_full": share, "treatments": res.treatments.round(4).tolist(),
                     "seconds": time.perf_counter() - t0})
        print(f"K={k:>2}: {100 * share:6.2f} % of full personalization ({rows[-1]['seconds']:.1f} s)", flush=True)
    if args.out:
        atomic_write_json(args.out, {"n": args.n, "gamma_max": args.gamma_max, "seed": args.seed, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
