"""Benchmark: TARNet / DragonNet training throughput on synthetic data of a chosen size, and the
cost of ``model=auto`` against one model.

    python scripts/bench_train.py --n 1000000 --features 20 --epochs 10 --device cuda
    python scripts/bench_train.py --auto --n 50000 --arms 15      # auto vs one model vs one cross-fitted model

Trains for exactly ``--epochs`` epochs (no early stopping: val_fraction=0) on N customers with p
features randomized over A arms, and prints wall time, epochs/s and rows/s, plus the device and
versions. The outcome has a known heterogeneous effect so the printed held-out RMSE of the
estimated effect (vs. the truth) shows the run learned something.
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from coarse_gpu.models import DragonNet, TARNet
from coarse_gpu.utils import resolve_device


def synthetic(n: int, p: int, n_arms: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p)).astype(np.float32)
    arms = np.linspace(0.0, 0.4, n_arms)
    arm = rng.integers(0, n_arms, n)
    slope = 2.0 * np.tanh(X[:, 0]) + X[:, 1] * X[:, 2]          # heterogeneous dose response
    mu = 1.0 + X[:, 3] + slope[:, None] * arms[None, :] - 3.0 * arms[None, :] ** 2
    y = mu[np.arange(n), arm] + rng.standard_normal(n)
    return X, arms[arm], y.astype(np.float32), mu, arms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--arms", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--model", choices=["tarnet", "dragonnet"], default="tarnet")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--auto", action="store_true",
                    help="time AutoCATE (5 folds x tarnet, gb_s, gb_t) against one TARNet and one cross-fitted "
                         "TARNet with their adaptive defaults (early stopping on), on the same data")
    args = ap.parse_args()
    if args.auto:
        return compare_auto(args)

    device = resolve_device(args.device)
    X, t, y, mu, arms = synthetic(args.n, args.features, args.arms, seed=0)
    cls = TARNet if args.model == "tarnet" else DragonNet
    model = cls(hidden=args.hidden, batch_size=args.batch_size, max_epochs=args.epochs, patience=args.epochs + 1,
                val_fraction=0.0, device=str(device), seed=0, verbose=False)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.fit(X, t, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    m = min(args.n, 20_000)
    pred = model.predict_profit(X[:m], arms)
    eff_hat = pred - pred[:, :1]
    eff = mu[:m] - mu[:m, :1]
    rmse = float(np.sqrt(np.mean((eff_hat - eff) ** 2)))
    rmse_const = float(np.sqrt(np.mean((eff - eff.mean(0)) ** 2)))
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device={device} ({dev}) torch={torch.__version__} threads={torch.get_num_threads()}")
    print(f"model={args.model} N={args.n} p={args.features} arms={args.arms} epochs={args.epochs} "
          f"batch={args.batch_size} hidden={args.hidden}")
    print(f"train_wall_s={wall:.2f} epochs_per_s={args.epochs / wall:.3f} rows_per_s={args.n * args.epochs / wall:,.0f}")
    print(f"effect_rmse={rmse:.4f} (constant-effect model: {rmse_const:.4f})")


def compare_auto(args) -> None:
    """Wall time and held-out effect RMSE of: one model, one model cross-fitted on 5 folds, AutoCATE."""
    from coarse_gpu.models import AutoCATE, CrossFitted

    device = resolve_device(args.device)
    X, t, y, mu, arms = synthetic(args.n, args.features, args.arms, seed=0)
    Xn, _, _, mu_n, _ = synthetic(20_000, args.features, args.arms, seed=1)
    eff = mu_n - mu_n[:, :1]
    rows = []
    for label, make in (("tarnet (one fit)", lambda: TARNet(device=str(device), seed=0)),
                        ("tarnet x 5 folds", lambda: CrossFitted(TARNet(device=str(device), seed=0), n_folds=5)),
                        ("auto (5 folds x 3)", lambda: AutoCATE(device=str(device), seed=0))):
        model = make()
        t0 = time.perf_counter()
        model.fit(X, t, y)
        wall = time.perf_counter() - t0
        pred = model.predict_profit(Xn, arms)
        rmse = float(np.sqrt(np.mean(((pred - pred[:, :1]) - eff) ** 2)))
        rows.append((label, wall, rmse, getattr(model, "selected_", "")))
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} N={args.n} p={args.features} "
          f"arms={args.arms}")
    print(f"{'model':<22} {'fit s':>8} {'x one fit':>10} {'effect RMSE':>12}  chosen")
    for label, wall, rmse, chosen in rows:
        print(f"{label:<22} {wall:8.1f} {wall / rows[0][1]:10.2f} {rmse:12.4f}  {chosen}")


if __name__ == "__main__":
    main()
