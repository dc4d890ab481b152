"""The baselines at scale (docs/evaluation.md, "Baselines as estimators"): N customers x 546 candidates as a
FactoredProfit (A = 15), every baseline at K = 1, 2, 3, 4, 5, 8 as the main job runs them (one profit view
and the embeddings shared across K), with the seconds per baseline and the peak memory.

    python experiments/baselines_scale.py [N=2000000] [--trees]
"""
from __future__ import annotations

import resource
import sys
import time

import numpy as np

from coarse_gpu.discretize import FactoredProfit
from coarse_gpu.policy import (FullPersonalization, GridSearch, KMeansFeatures, KMeansPreferences, KMeansProfiles,
                               ProfitView, SingleBest)
from coarse_gpu.policy.baselines import feature_embedding, profile_embedding

KS = (1, 2, 3, 4, 5, 8)


def problem(n: int, seed: int = 0):
    """Six latent customer types seen noisily in 20 covariates; per-arm profits V (n, 15), W (546, 15)."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 6, n)
    V = rng.normal(size=(6, 15))[types] + 0.5 * rng.normal(size=(n, 15))
    W = np.abs(rng.normal(size=(546, 15))) / 15
    X = np.hstack([np.eye(6)[types] + rng.normal(size=(n, 6)), rng.normal(size=(n, 14))])
    cand = np.stack([np.repeat(np.linspace(0, 0.5, 21), 26), np.tile(np.linspace(0, 4, 26), 21)], 1)
    return X, V, W, cand


def main(n: int, trees: bool) -> dict:
    X, V, W, cand = problem(n)
    arms = np.linspace(0, 545, 15).astype(int)
    seconds: dict = {}

    def timed(name, f):
        t0 = time.perf_counter()
        out = f()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
        return out

    view = ProfitView(FactoredProfit(V, W))
    mu_arms = V @ W[arms].T  # what the grid baseline reads: each customer's profit at the 15 arms
    timed("single_best", lambda: SingleBest().fit(view, cand))
    timed("full_personalization", lambda: FullPersonalization().fit(view, cand))
    feats = timed("kmeans_features", lambda: feature_embedding(X))
    profs = timed("kmeans_profiles", lambda: profile_embedding(view))
    for k in KS:
        timed("kmeans_features", lambda: KMeansFeatures(k=k).fit(view, cand, X, embedding=feats))
        timed("kmeans_preferences", lambda: KMeansPreferences(k=k).fit(view, cand))
        timed("kmeans_profiles", lambda: KMeansProfiles(k=k).fit(view, cand, embedding=profs))
        timed("grid", lambda: GridSearch(k=k).fit(mu_arms, cand[arms]))
        if trees:
            from coarse_gpu.policy.tree import PolicyTree

            timed("policy_tree", lambda: PolicyTree(k=k).fit(view, cand, X))
    seconds["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return seconds


if __name__ == "__main__":  # pragma: no cover - the measurement behind the docs
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = main(int(args[0]) if args else 2_000_000, "--trees" in sys.argv)
    print(" ".join(f"{k}={v:.1f}" for k, v in out.items()))
