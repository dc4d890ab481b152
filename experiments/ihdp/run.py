"""IHDP (Hill 2011, response surface B) with TARNet and DragonNet: out-of-sample sqrt(PEHE) and ATE error.

Data: ``econml.data.dgps.ihdp_surface_B(random_state=r)`` (747 children, 25 covariates + econml's
intercept column, binary treatment, shipped with econml: no download). Each replication r draws a new
response surface and noise; the children are split at random into 90 % for fitting (of which
``val_fraction`` = 30 % is the early-stopping split: 63 / 27 / 10 train / validation / test, the protocol
of Shalit et al. 2017's out-of-sample figures) and 10 % held out (``--test-fraction``). On the held-out
children:

    sqrt(PEHE) = sqrt(mean_i (tau_hat(x_i) - tau(x_i))^2),   ATE error = |mean_i tau_hat(x_i) - mean_i tau(x_i)|

with tau the true conditional effect returned by econml and tau_hat(x) = the difference of the two
columns of ``predict_profit(X, [0, 1])``. The reference point is TARNet's published out-of-sample
sqrt(PEHE) of about 0.95 on IHDP (Shalit, Johansson & Sontag 2017; Shi, Blei & Veitch 2019 report
similar figures for DragonNet). A constant-effect model (tau_hat = difference of the training means)
is printed as a floor.

    .venv/bin/python experiments/ihdp/run.py                    # 10 replications -> results.json
    .venv/bin/python experiments/ihdp/run.py --reps 3 --max-epochs 100 --out /tmp/ihdp.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from coarse_gpu.models import DragonNet, TARNet

#: Architecture and training close to the papers (200-unit representation, 100-unit heads, ELU),
#: one separate head per arm as in TARNet / DragonNet for a binary treatment.
PARAMS = dict(hidden=200, n_repr_layers=3, n_head_layers=2, head_hidden=100, arm_heads="separate", lr=1e-3,
              weight_decay=1e-3, batch_size=64, max_epochs=300, patience=30, val_fraction=0.3, device="cpu")


def load(rep: int):
    from econml.data.dgps import ihdp_surface_B

    Y, T, X, tau = ihdp_surface_B(random_state=rep)
    return np.asarray(X, dtype=np.float64), np.asarray(T).reshape(-1).astype(np.int64), \
        np.asarray(Y, dtype=np.float64).reshape(-1), np.asarray(tau, dtype=np.float64).reshape(-1)


def replicate(rep: int, max_epochs: int, test_fraction: float = 0.1, models=("tarnet", "dragonnet")) -> dict:
    X, T, Y, tau = load(rep)
    rng = np.random.default_rng(1000 + rep)
    perm = rng.permutation(len(Y))
    n_test = int(round(test_fraction * len(Y)))
    test, train = perm[:n_test], perm[n_test:]
    out = {"rep": rep, "n_train": int(train.size), "n_test": int(test.size)}
    const = Y[train][T[train] == 1].mean() - Y[train][T[train] == 0].mean()
    out["constant"] = {"sqrt_pehe": float(np.sqrt(np.mean((const - tau[test]) ** 2))),
                       "ate_error": float(abs(const - tau[test].mean()))}
    for name in models:
        cls = {"tarnet": TARNet, "dragonnet": DragonNet}[name]
        m = cls(**dict(PARAMS, max_epochs=max_epochs, seed=rep))
        t0 = time.perf_counter()
        m.fit(X[train], T[train], Y[train], propensity=None)
        p = m.predict_profit(X[test], [0, 1])
        tau_hat = p[:, 1] - p[:, 0]
        out[name] = {"sqrt_pehe": float(np.sqrt(np.mean((tau_hat - tau[test]) ** 2))),
                     "ate_error": float(abs(tau_hat.mean() - tau[test].mean())),
                     "best_epoch": int(m.best_epoch_), "fit_s": round(time.perf_counter() - t0, 2)}
    return out


def summarize(reps: list[dict], models=("constant", "tarnet", "dragonnet")) -> dict:
    summary = {}
    for name in models:
        if name not in reps[0]:
            continue
        pehe = np.array([r[name]["sqrt_pehe"] for r in reps])
        ate = np.array([r[name]["ate_error"] for r in reps])
        summary[name] = {"sqrt_pehe_mean": float(pehe.mean()), "sqrt_pehe_se": float(pehe.std(ddof=1) / np.sqrt(len(pehe)))
                         if len(pehe) > 1 else 0.0, "ate_error_mean": float(ate.mean()),
                         "ate_error_se": float(ate.std(ddof=1) / np.sqrt(len(ate))) if len(ate) > 1 else 0.0}
    return summary


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--max-epochs", type=int, default=PARAMS["max_epochs"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    reps, t0 = [], time.perf_counter()
    for r in range(args.reps):
        reps.append(replicate(r, args.max_epochs, args.test_fraction))
        line = "  ".join(f"{k}: sqrt(PEHE) {reps[-1][k]['sqrt_pehe']:.3f} ATE err {reps[-1][k]['ate_error']:.3f}"
                         for k in ("constant", "tarnet", "dragonnet"))
        print(f"rep {r}: {line}", flush=True)
    summary = summarize(reps)
    result = {"dataset": "econml.data.dgps.ihdp_surface_B", "replications": args.reps, "test_fraction": args.test_fraction,
              "params": dict(PARAMS, max_epochs=args.max_epochs), "summary": summary, "per_replication": reps,
              "wall_s": round(time.perf_counter() - t0, 1), "torch": torch.__version__}
    for k, v in summary.items():
        print(f"{k:10s} sqrt(PEHE) {v['sqrt_pehe_mean']:.3f} +- {v['sqrt_pehe_se']:.3f}   "
              f"ATE error {v['ate_error_mean']:.3f} +- {v['ate_error_se']:.3f}")
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
