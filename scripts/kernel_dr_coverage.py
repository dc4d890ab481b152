"""Coverage and bias of the kernel-DR policy value on the dose simulator (issue 27, must-show).

For each sample size N and replication r: draw ``DoseSimulator(n_customers=N, seed=r)`` (a discount
randomized uniformly on [0, 0.5], one purchase occasion per customer), fit a cross-fitted
gradient-boosting S-learner mu(x, t) (sklearn HistGradientBoostingRegressor on [x, t], ``--folds``
folds: each customer's predictions come from the model that did not see her), and score two fixed
policies with ``kernel_dr_scores`` using the design's known density f = 2:
  interior : discount 0.30 if recency > 0 else 0.10 (doses inside the range);
  boundary : discount 0.20 if recency > 0 else 0.00 (half its customers at the range's edge: tests the
             boundary kernel, ``--boundary``);
and their paired difference. The truth is each policy's population value E[pi(x, policy(x))], computed
from the simulator's true profits on 2,000,000 fresh customers. Reported per N and bandwidth rule:
the mean estimate's bias (with its Monte Carlo standard error), the 95 % shared-bootstrap CI's coverage
of the truth and its mean width; the plug-in (model-only, mean of mu(x, policy(x))) bias for contrast.

Usage (OMP_NUM_THREADS=1 on a shared machine: sklearn's OpenMP threads spin when oversubscribed):
  python scripts/kernel_dr_coverage.py                               # 2k/8k/32k x 50 reps
  python scripts/kernel_dr_coverage.py --sizes 2000 --reps 10        # quick look
  python scripts/kernel_dr_coverage.py --density estimated           # f from BinnedDoseDensity
  python scripts/kernel_dr_coverage.py --boundary renormalize        # the first-order boundary kernel
  python scripts/kernel_dr_coverage.py --mu truth --sizes 32000      # mu = the true profit (diagnostic)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold

from coarse_gpu.data.dose_simulator import DoseSimulator
from coarse_gpu.evaluate.gps import BinnedDoseDensity
from coarse_gpu.evaluate.bootstrap import SharedBootstrap, percentile_ci
from coarse_gpu.evaluate.kernel_dr import bandwidth_rule, kernel_dr_scores

POLICIES = {"interior": (0.30, 0.10), "boundary": (0.20, 0.00)}
RULES = ("undersmooth", "silverman")


def policy_doses(features, name: str) -> np.ndarray:
    """(N, 1) doses of a threshold policy on recency."""
    hi, lo = POLICIES[name]
    return np.where(features["recency"].to_numpy() > 0, hi, lo)[:, None]


def true_values(n: int = 2_000_000, seed: int = 10**6) -> dict:
    df, truth = DoseSimulator(n_customers=2).population(n, seed)
    vals = {p: float(truth.profit_at(policy_doses(df, p)).mean()) for p in POLICIES}
    vals["difference"] = vals["interior"] - vals["boundary"]
    return vals


def crossfit_mu(X: np.ndarray, t: np.ndarray, y: np.ndarray, doses: dict, folds: int, seed: int) -> tuple:
    """Out-of-fold mu(x_i, t_i) (N,) and mu(x_i, tau_i) (N,) for every policy's doses tau."""
    mu_obs = np.empty(len(y))
    mu_pol = {p: np.empty(len(y)) for p in doses}
    for k, (fit, out) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(X)):
        m = HistGradientBoostingRegressor(random_state=seed + k).fit(np.hstack([X[fit], t[fit]]), y[fit])
        mu_obs[out] = m.predict(np.hstack([X[out], t[out]]))
        for p, tau in doses.items():
            mu_pol[p][out] = m.predict(np.hstack([X[out], tau[out]]))
    return mu_obs, mu_pol


def one_replication(n: int, rep: int, args) -> dict:
    """{(rule, target): (estimate, lo, hi)} plus {("plugin", policy): estimate} for one draw."""
    data = DoseSimulator(n_customers=n, seed=rep).sample()
    doses = {p: policy_doses(data.features, p) for p in POLICIES}
    if args.mu == "gbm":
        mu_obs, mu_pol = crossfit_mu(data.X, data.treatment, data.outcome, doses, args.folds, rep)
    else:  # the diagnostics: the true profit as the model, or no model at all (kernel IPW)
        scale = 1.0 if args.mu == "truth" else 0.0
        mu_obs = scale * data.truth.profit_at(data.treatment)
        mu_pol = {p: scale * data.truth.profit_at(tau) for p, tau in doses.items()}
    if args.density == "known":
        f = data.propensity
    else:
        f = BinnedDoseDensity().fit(data.X, data.treatment).predict_density(data.X, data.treatment)
    support = (data.space.low, data.space.high)
    out = {("plugin", p): float(mu_pol[p].mean()) for p in POLICIES}
    columns, keys = [], []
    for rule in RULES:
        h = bandwidth_rule(data.treatment, kernel=args.kernel, rule=rule)
        s = {p: kernel_dr_scores(data.outcome, data.treatment, doses[p], mu_obs, mu_pol[p], f, h,
                                 kernel=args.kernel, support=support, boundary=args.boundary,
                                 overlap="warn") for p in POLICIES}
        s["difference"] = s["interior"] - s["boundary"]  # paired_difference's scores
        columns += list(s.values())
        keys += [(rule, target) for target in s]
        out[(rule, "h")] = float(h[0])
    # one set of shared resamples for the six score columns: the same CIs as dr_value / paired_difference
    # with seed=rep column by column (they draw these very resamples), generated once instead of six times
    draws = SharedBootstrap(n, args.n_boot, rep).means(np.stack(columns, axis=1))
    for j, key in enumerate(keys):
        out[key] = (float(columns[j].mean()), *percentile_ci(draws[:, j], 0.05))
    return out


def summarize(n: int, results: list, truth: dict) -> list[str]:
    lines = []
    for rule in RULES:
        h = np.mean([r[(rule, "h")] for r in results])
        for target in (*POLICIES, "difference"):
            est, lo, hi = (np.array([r[(rule, target)][j] for r in results]) for j in range(3))
            v = truth[target]
            bias, mc = est.mean() - v, est.std(ddof=1) / np.sqrt(len(est))
            cover = np.mean((lo <= v) & (v <= hi))
            plug = "" if target == "difference" else \
                f"{np.mean([r[('plugin', target)] for r in results]) - v:+.3f}"
            lines.append(f"| {n:>6} | {rule:<11} | {h:.4f} | {target:<10} | {v:7.3f} | {bias:+.3f} ± {mc:.3f} "
                         f"| {est.std(ddof=1):.3f} | {np.mean(hi - lo):.3f} | {100 * cover:5.1f} % | {plug:>7} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 32000])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=500)
    ap.add_argument("--kernel", default="epanechnikov")
    ap.add_argument("--density", choices=("known", "estimated"), default="known")
    ap.add_argument("--boundary", choices=("linear", "renormalize"), default="linear")
    ap.add_argument("--mu", choices=("gbm", "truth", "zero"), default="gbm",
                    help="the outcome model: the cross-fitted S-learner, the true profit, or 0 (kernel IPW)")
    args = ap.parse_args()
    t0 = time.time()
    truth = true_values()
    print("true values (2M customers): " + ", ".join(f"{k} {v:.4f}" for k, v in truth.items()))
    print(f"kernel={args.kernel} boundary={args.boundary} density={args.density} mu={args.mu} folds={args.folds} "
          f"n_boot={args.n_boot} reps={args.reps}\n")
    print("| N | rule | mean h | target | truth | bias ± MC se | sd of est. | mean CI width | coverage "
          "| plug-in bias |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.sizes:
        results = [one_replication(n, rep, args) for rep in range(args.reps)]
        print("\n".join(summarize(n, results, truth)), flush=True)
        print(f"<!-- N={n}: {time.time() - t0:.0f} s so far -->", flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
