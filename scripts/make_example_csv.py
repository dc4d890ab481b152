"""Write the simulated promotions experiment as a CSV, as a user would bring their own data.

    python scripts/make_example_csv.py                       # outputs/example/promotions.csv (5,000 customers)
    python scripts/make_example_csv.py --n 20000 --out my.csv --new-customers new_customers.csv

Columns: customer_id, the 10 numeric covariates, channel/region/tier (strings), the randomized
treatment (discount, duration_weeks) and the realized profit. ``--new-customers`` also writes a
second file of fresh customers (covariates and ids only) to score with ``coarse-gpu-assign``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from coarse_gpu.data import PromotionsSimulator
from coarse_gpu.utils.io import atomic_write_text


def experiment_frame(n: int, seed: int) -> pd.DataFrame:
    data = PromotionsSimulator(n_customers=n, seed=seed).sample()
    df = data.features.copy()
    df.insert(0, "customer_id", [f"c{seed}-{i:07d}" for i in range(n)])
    df["discount"] = data.treatment[:, 0]
    df["duration_weeks"] = data.treatment[:, 1]
    df["profit"] = data.outcome
    return df


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="customers in the experiment")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="outputs/example/promotions.csv")
    ap.add_argument("--new-customers", default=None, help="also write this many-row file of new customers")
    ap.add_argument("--n-new", type=int, default=1000)
    args = ap.parse_args()
    df = experiment_frame(args.n, args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, df.to_csv(index=False))
    print(f"wrote {args.out}: {len(df)} customers, columns {list(df.columns)}")
    if args.new_customers:
        new = experiment_frame(args.n_new, args.seed + 1).drop(columns=["discount", "duration_weeks", "profit"])
        Path(args.new_customers).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.new_customers, new.to_csv(index=False))
        print(f"wrote {args.new_customers}: {len(new)} new customers")


if __name__ == "__main__":
    main()
