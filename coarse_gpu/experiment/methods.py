"""Step 2 of the main job, per K: the OT discretizer and the paper's baselines, each as a ``Policy``.

``MethodContext`` holds what every method reads (the scored customers, their estimated profit at
the candidates, the arms, the config); ``method_policy(method, k, ctx)`` returns that method's
policy at K, or None where the method does not apply (``single_best`` beyond K = 1, ``grid`` with
more treatments than arms). The OT discretizer at K starts from its solution at the previous K
(``warm_start``): the K-subset search is the same facility-location problem at every K.

``ensemble_spread`` measures how much the fold models of a cross-fitted ensemble disagree about a
policy: the share of customers a single fold model would put in another of the K segments, and how
far the K treatments move when the discretizer is re-run on one fold model's estimates.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from coarse_gpu.data import ExperimentData
from coarse_gpu.discretize import discretize
from coarse_gpu.experiment.personalize import ProfitEstimates, fold_predictors
from coarse_gpu.policy import (
    Policy,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    kmeans_profiles,
    single_best,
)
from coarse_gpu.policy.baselines import profile_embedding
from coarse_gpu.policy.tree import policy_tree

__all__ = ["METHODS", "MethodContext", "ensemble_spread", "method_policy", "ot_policy", "warm_start"]

log = logging.getLogger("coarse_gpu")

METHODS = ("ot", "kmeans_features", "kmeans_preferences", "kmeans_profiles", "policy_tree", "grid", "single_best")
#: Customers on which the spread re-runs the discretizer per fold model (a uniform subsample).
SPREAD_ROWS = 5_000


@dataclass
class MethodContext:
    """What the methods read at every K.

    scored : the scored customers; estimates : their ProfitEstimates; profit : (N, M) estimated profit
    at the candidates (M, d); arms : (A, d) the model's arms; cfg : the run config.
    """

    scored: ExperimentData
    estimates: ProfitEstimates
    profit: np.ndarray
    candidates: np.ndarray
    arms: np.ndarray
    cfg: DictConfig
    device: torch.device
    seed: int
    ot_previous: Optional[list] = field(default=None)  # the ot grid solution at the previous K
    fold_arms: Optional[list] = field(default=None)  # per fold model: (N, A) estimates (ensemble_spread)
    cache: dict = field(default_factory=dict)  # work that does not depend on K (baselines' embeddings)


def warm_start(profit: np.ndarray, previous: Optional[list], k: int) -> Optional[list]:
    """Seed for K from the solution at a smaller K: its grid treatments plus, one at a time, the candidate
    with the largest profit gain over them (greedy facility location); None when there is no previous."""
    if not previous or len(previous) >= k or len(set(previous)) != len(previous):
        return None
    chosen = list(previous)
    best = profit[:, chosen].max(1)
    while len(chosen) < k:
        gain = np.maximum(profit - best[:, None], 0.0).sum(0)
        gain[chosen] = -np.inf
        m = int(gain.argmax())
        chosen.append(m)
        best = np.maximum(best, profit[:, m])
    return chosen


def ot_policy(profit: np.ndarray, candidates: np.ndarray, k: int, cfg: DictConfig, oracle, space,
              device: torch.device, seed: int, init: Optional[list] = None) -> tuple[Policy, dict]:
    """The OT discretizer's policy at K; ``init`` (K grid indices, e.g. ``warm_start``) seeds restart 0."""
    d = cfg.discretizer
    options = dict(solver=d.solver, n_restarts=d.n_restarts, dtype=d.dtype, init=init)
    if d.refine and oracle is not None:  # no oracle: the model cannot leave the arms
        options.update(refine_oracle=oracle, bounds=(np.asarray(space.low), np.asarray(space.high)))
    res = discretize(
        profit, k, candidates=candidates, min_share=d.min_share, max_share=d.max_share,
        epsilon=d.epsilon, device=str(device), seed=seed, **options,
    )
    info = {"solver": res.solver, "epsilon": res.epsilon, "estimated_objective": res.objective,
            "entropic_objective": res.entropic_objective, "n_trace": len(res.trace)}
    return Policy("ot", res.treatments, res.assignment, info), {"trace": res.trace,
                                                                 "grid_index": res.info.get("grid_index")}


def method_policy(method: str, k: int, ctx: MethodContext) -> Optional[tuple[Policy, dict]]:
    """(policy, extra) of ``method`` at K, or None where the method does not apply at this K."""
    p, cand, seed = ctx.profit, ctx.candidates, ctx.seed
    if method == "single_best":
        return (single_best(p, cand), {}) if k == 1 else None
    if method == "grid":
        if k > ctx.arms.shape[0]:
            log.warning("grid: K=%d exceeds the %d experimental arms; skipped", k, ctx.arms.shape[0])
            return None
        return grid_search(ctx.estimates.mu_arms, ctx.arms, k, seed=seed), {}
    if method == "ot":
        init = warm_start(p, ctx.ot_previous, k) if ctx.cfg.discretizer.solver != "exact" else None
        policy, extra = ot_policy(p, cand, k, ctx.cfg, ctx.estimates.oracle, ctx.scored.space, ctx.device, seed, init)
        ctx.ot_previous = extra.get("grid_index")
        return policy, extra
    if method == "kmeans_features":
        return kmeans_features(ctx.scored.X, p, cand, k, seed=seed), {}
    if method == "kmeans_preferences":
        return kmeans_preferences(p, cand, k, seed=seed, scale=ctx.scored.space.span), {}
    if method == "kmeans_profiles":
        if "profiles" not in ctx.cache:  # the projection does not depend on K: once per run
            ctx.cache["profiles"] = profile_embedding(p, seed=seed)
        return kmeans_profiles(p, cand, k, seed=seed, embedding=ctx.cache["profiles"]), {}
    if method == "policy_tree":
        return policy_tree(ctx.scored.X, p, cand, k, seed=seed,
                           feature_names=getattr(ctx.scored, "feature_names", None)), {}
    raise ValueError(f"unknown method {method!r}; available: {list(METHODS)}")


def _shift(a: np.ndarray, b: np.ndarray, span: np.ndarray) -> float:
    """Mean over the rows of a (K, d) of the distance to the nearest row of b, in units of ``span``."""
    d = np.abs((a[:, None, :] - b[None, :, :]) / span).max(-1)
    return float(d.min(1).mean())


def ensemble_spread(model, ctx: MethodContext, policy: Policy, k: int) -> Optional[dict]:
    """How the fold models of a cross-fitted ensemble disagree about ``policy`` (module docstring).

    assignment_changed_share : mean over fold models of the share of scored customers whose best of the
        K treatments under that fold model's estimates is not their segment.
    treatment_shift : mean over fold models of the mean distance from each of the K treatments to the
        nearest treatment the discretizer picks on that fold model's estimates (``SPREAD_ROWS``
        customers), in units of the treatment space's span per dimension (max over dimensions).
    None for a single model and for the dose-response models.
    """
    if ctx.fold_arms is None:  # once per run: every fold model's per-arm estimates of the customers
        ctx.fold_arms = [predict(ctx.scored.X) for predict in fold_predictors(model)]
    if len(ctx.fold_arms) < 2 or ctx.estimates.weights is None:
        return None
    X = ctx.scored.X
    W_k, W_c = ctx.estimates.weights(policy.treatments), ctx.estimates.weights(ctx.candidates)
    rng = np.random.default_rng(ctx.seed)
    sub = np.sort(rng.choice(X.shape[0], SPREAD_ROWS, replace=False)) if X.shape[0] > SPREAD_ROWS else \
        np.arange(X.shape[0])
    span = np.where(ctx.scored.space.span > 0, ctx.scored.space.span, 1.0)
    changed, shifts = [], []
    for V in ctx.fold_arms:
        own = (V @ W_k.T).argmax(1)
        changed.append(float(np.mean(own != policy.assignment)))
        res = discretize(V[sub] @ W_c.T, k, candidates=ctx.candidates, solver="lloyd", seed=ctx.seed,
                         device=str(ctx.device))
        shifts.append(_shift(np.asarray(policy.treatments, dtype=np.float64), res.treatments, span))
    return {"n_fold_models": len(ctx.fold_arms), "assignment_changed_share": float(np.mean(changed)),
            "treatment_shift": float(np.mean(shifts)), "assignment_changed_share_per_fold": changed,
            "treatment_shift_per_fold": shifts}
