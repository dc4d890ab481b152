"""Benchmark: TARNet / DragonNet training throughput on synthetic data of a chosen size, and the
cost of ``model=auto`` against one model.

    python scripts/bench_train.py --n 1000000 --features 20 --epochs 10 --device cuda
    python scripts/bench_train.py --auto --n 50000 --arms 15      # auto vs one model vs one cross-fitted model
    python scripts/bench_train.py --batched --sizes 50000 1000000 --repeats 2   # sequential vs batched folds

Trains for exactly ``--epochs`` epochs (no early stopping: val_fraction=0) on N customers with p
features randomized over A arms, and prints wall time, epochs/s and rows/s, plus the device and
versions. The outcome has a known heterogeneous effect so the printed held-out RMSE of the
estimated effect (vs. the truth) shows the run learned something.

``--batched`` times the default ``model=auto`` neural ensemble (5 folds of TARNet, default
hyperparameters, the simulated promotions experiment) fitted one fold at a time (``batched=False``:
worker processes, one thread each) against the batched ensemble trainer (coarse_gpu.models.ensemble),
each run in a fresh subprocess, alternating A/B ``--repeats`` times so that load from other processes
hits both; it prints wall time, peak RSS and every fold model's held-out loss (the MSE of its
out-of-fold predictions on its own held-out fold, standardized by the outcome's variance, +- one
standard error) and its validation loss.
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
    mu = 1.0 + X[:, 3, None] + slope[:, None] * arms[None, :] - 3.0 * arms[None, :] ** 2
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
    ap.add_argument("--batched", action="store_true",
                    help="sequential vs batched training of the default model=auto neural ensemble (5 TARNet folds)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 1_000_000], help="--batched: customers N")
    ap.add_argument("--repeats", type=int, default=1, help="--batched: A/B pairs per size")
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="--batched: cap the epochs (default: the adaptive default, early stopping on)")
    ap.add_argument("--bf16", action="store_true", help="--batched: bf16 autocast in the batched trainer")
    ap.add_argument("--compile", action="store_true", help="--batched: torch.compile the batched loss")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one run, JSON on stdout
    args = ap.parse_args()
    if args.one:
        return one_crossfit(args)
    if args.batched:
        return compare_batched(args)
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


def one_crossfit(args) -> None:
    """One cross-fitted TARNet (``--one seq|batched``) on the promotions data of size ``--n``; a JSON line."""
    import json
    import resource

    from coarse_gpu.data.simulator import PromotionsSimulator
    from coarse_gpu.models import CrossFitted
    from coarse_gpu.models import ensemble

    data = PromotionsSimulator(n_customers=args.n, seed=0).sample()
    if args.bf16 or args.compile:  # the options under measurement, on the batched trainer only
        fit = ensemble.fit_batched
        ensemble_fit = lambda m, d: fit(m, d, compile=args.compile,  # noqa: E731
                                        autocast=torch.bfloat16 if args.bf16 else None)
        import coarse_gpu.models.crossfit as crossfit
        crossfit.fit_batched = ensemble_fit
    base = TARNet(seed=0, device=args.device, max_epochs=args.max_epochs)
    cf = CrossFitted(base, n_folds=5, seed=0, batched=args.one == "batched")
    t0 = time.perf_counter()
    cf.fit(data.X, data.treatment, data.outcome, propensity=data.propensity)
    wall = time.perf_counter() - t0
    oof = cf.predict_arms_oof()
    y = data.outcome
    err = ((oof[np.arange(len(y)), data.arm] - y) ** 2) / y.var()
    folds = []
    for k, (m,) in enumerate(cf.models_):
        e = err[cf.fold_ == k]
        folds.append({"oof_mse": float(e.mean()), "se": float(e.std(ddof=1) / np.sqrt(e.shape[0])),
                      "val_loss": float(m.best_val_loss_), "best_epoch": int(m.best_epoch_),
                      "epochs": len(m.history_)})
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "peak_mib": own, "worker_peak_mib": kids, "folds": folds,
                      "threads": torch.get_num_threads()}))


def compare_batched(args) -> None:
    """A/B: ``--one seq`` and ``--one batched`` in fresh subprocesses, alternating, for every size."""
    import json
    import os
    import subprocess
    import sys

    extra = (["--max-epochs", str(args.max_epochs)] if args.max_epochs else []) + (["--bf16"] if args.bf16 else []) \
        + (["--compile"] if args.compile else []) + ["--device", args.device]
    print(f"torch={torch.__version__} cpus={len(os.sched_getaffinity(0))} load={os.getloadavg()[0]:.2f} "
          f"(other processes share the cores: compare A/B pairs, not runs across tables)")
    for n in args.sizes:
        runs = {"seq": [], "batched": []}
        for r in range(args.repeats):
            for mode in (("seq", "batched") if r % 2 == 0 else ("batched", "seq")):
                out = subprocess.run([sys.executable, __file__, "--one", mode, "--n", str(n)] + extra,
                                     check=True, capture_output=True, text=True).stdout
                runs[mode].append(json.loads(out.strip().splitlines()[-1]))
                print(f"  N={n:,} {mode:<8} run {r + 1}: {runs[mode][-1]['wall_s']:.1f} s", flush=True)
        _print_batched_table(n, runs, args)


def _print_batched_table(n: int, runs: dict, args) -> None:
    seq = np.median([r["wall_s"] for r in runs["seq"]])
    bat = np.median([r["wall_s"] for r in runs["batched"]])
    print(f"N={n:,} TARNet x 5 folds, max_epochs={args.max_epochs or 'default'}, bf16={args.bf16}, "
          f"compile={args.compile}: median wall seq {seq:.1f} s, batched {bat:.1f} s, speed-up {seq / bat:.2f}x")
    print(f"{'mode':<8} {'wall s':>7} {'peak MiB':>9} {'worker MiB':>10}  per fold: held-out MSE/Var(y) +- se "
          f"(val loss, best epoch / epochs)")
    for mode in ("seq", "batched"):
        for r in runs[mode]:
            folds = "  ".join(f"{f['oof_mse']:.4f}+-{f['se']:.4f} ({f['val_loss']:.4f}, {f['best_epoch']}/{f['epochs']})"
                              for f in r["folds"])
            print(f"{mode:<8} {r['wall_s']:7.1f} {r['peak_mib']:9.0f} {r['worker_peak_mib']:10.0f}  {folds}")


if __name__ == "__main__":
    main()
