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
from typing import Callable, Optional

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from coarse_gpu.data import ExperimentData
from coarse_gpu.discretize import Constraint, discretize
from coarse_gpu.discretize.builders import budget_constraint, group_codes, parity_constraints
from coarse_gpu.discretize.builders import treatment_costs as discretize_treatment_costs
from coarse_gpu.discretize.constrained import assign_constrained
from coarse_gpu.discretize.exact import share_counts
from coarse_gpu.discretize.facility import dense_source, greedy
from coarse_gpu.discretize.options import default_options
from coarse_gpu.discretize.profit import profit_columns
from coarse_gpu.experiment.followers import sharded_discretize
from coarse_gpu.experiment.validate import METHODS  # the names, kept where the config check reads them without torch
from coarse_gpu.policy import (
    Policy,
    grid_search,
    kmeans_features,
    kmeans_preferences,
    kmeans_profiles,
    single_best,
)
from coarse_gpu.policy.baselines import ProfitView, feature_embedding, profile_embedding
from coarse_gpu.policy.estimates import ProfitEstimates, fold_predictors
from coarse_gpu.policy.ot_tree import ot_tree
from coarse_gpu.policy.tree import policy_tree
from coarse_gpu.utils.imports import class_path

__all__ = ["METHODS", "POLICY_METHODS", "MethodContext", "constraints_from_config", "ensemble_spread", "method_policy",
           "ot_policy", "register_method", "treatment_costs", "warm_start"]

log = logging.getLogger("coarse_gpu")

#: Customers on which the spread re-runs the discretizer per fold model (a uniform subsample).
SPREAD_ROWS = 5_000
#: Above this many scored customers the spread is measured on a uniform sample of this many: every fold
#: model predicts every customer (5x the out-of-fold predictions; 210 s of a 200,000-customer run with
#: boosting), and the share it reports is a mean whose sampling error at 50,000 rows is <= 0.0023.
SPREAD_ALL_ROWS = 50_000


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
    constraints: Optional[list] = field(default=None)  # the discretizer's side constraints (built once)


def warm_start(profit: np.ndarray, previous: Optional[list], k: int) -> Optional[list]:
    """Seed for K from the solution at a smaller K: its grid treatments plus, one at a time, the candidate
    with the largest profit gain over them (``facility.greedy``); None when there is no previous."""
    if not previous or len(previous) >= k or len(set(previous)) != len(previous):
        return None
    return greedy(dense_source(profit), k, start=previous)


def treatment_costs(d_cfg, data: ExperimentData, candidates: np.ndarray) -> np.ndarray:
    """(M,) cost per customer of each candidate treatment (M, d) (``discretize.treatment_costs``), with the
    unit costs of ``discretizer.budget_unit_cost`` or, when null, the data's profit definition
    (``data.meta["treatment_unit_cost"]``, see coarse_gpu.data.simulator / file)."""
    unit = d_cfg.get("budget_unit_cost")
    unit = data.meta.get("treatment_unit_cost") if unit is None else unit
    if unit is None:  # validate.constraint_problems names the key before any work; this guards API callers
        raise ValueError("discretizer.budget needs treatment costs: set discretizer.budget_unit_cost (one per "
                         "treatment dimension)")
    return discretize_treatment_costs(candidates, unit)


def _group_labels(column, data: ExperimentData) -> np.ndarray:
    """(N,) the raw data column ``column`` as pandas writes its values as strings (the parity groups)."""
    return data.features[column].astype(str).to_numpy()


def parity_groups(column, data: ExperimentData) -> tuple[np.ndarray, list[str]]:
    """(codes (N,) int64, sorted level names) of the raw data column ``column`` (``discretize.group_codes``)."""
    return group_codes(_group_labels(column, data))


def constraints_from_config(d_cfg, data: ExperimentData, candidates: np.ndarray) -> list[Constraint]:
    """The side constraints that ``discretizer.budget`` and ``discretizer.group_parity`` ask for, over the
    customers of ``data`` (the ones the discretizer assigns) and the candidates (M, d): the config read
    here, their meaning in coarse_gpu.discretize.builders (``budget_constraint`` over
    ``treatment_costs``; ``parity_constraints`` on the raw column's groups and the level of treatment
    dimension ``group_parity.treatment``, default the first).
    """
    out: list[Constraint] = []
    if d_cfg.get("budget") is not None:
        out.append(budget_constraint(treatment_costs(d_cfg, data, candidates), float(d_cfg.budget), len(data)))
    gp = d_cfg.get("group_parity") or {}
    if gp.get("column") is not None:
        names = list(data.space.names)
        j = 0 if gp.get("treatment") is None else names.index(gp["treatment"])
        level = np.asarray(candidates, dtype=np.float64)[:, j]  # (M,) the parity's treatment dimension
        out += parity_constraints(_group_labels(gp["column"], data), level, float(gp["max_gap"]),
                                  group_name=str(gp["column"]), value_name=names[j])
    return out


def constraint_spec(d_cfg, data: ExperimentData, constraints: list) -> dict:
    """What a saved policy records of its constraints: the config keys and the costs actually used."""
    spec: dict = {"n_constraints": len(constraints)}
    budget = next((c for c in constraints if c.name == "budget"), None)
    if budget is not None:
        unit = d_cfg.get("budget_unit_cost")
        spec["budget"] = float(d_cfg.budget)
        spec["budget_unit_cost"] = [float(u) for u in (data.meta.get("treatment_unit_cost") if unit is None else unit)]
        spec["budget_unit_cost_from"] = "discretizer.budget_unit_cost" if unit is not None else "data"
        spec["treatment_names"] = list(data.space.names)
        spec["candidate_cost_range"] = [float(np.min(budget.values)), float(np.max(budget.values))]
    gp = d_cfg.get("group_parity") or {}
    if gp.get("column") is not None:
        spec["group_parity"] = {"column": gp["column"], "max_gap": float(gp["max_gap"]),
                                "treatment": gp.get("treatment") or list(data.space.names)[0],
                                "groups": parity_groups(gp["column"], data)[1]}
    return spec


def _discretize(profit, candidates, k, cfg, oracle, space, device, seed, init, constraints):
    d = cfg.discretizer
    # every plain-valued option of discretize is a discretizer.<name> key (options.SolverOptions)
    options = {name: d.get(name, default) for name, default in default_options().items()}
    options.update(min_share=d.min_share, max_share=d.max_share, epsilon=d.epsilon)
    run = dict(candidates=candidates, device=str(device), seed=seed, constraints=constraints or None, init=init)
    if d.refine and oracle is not None and not constraints:  # no oracle: the model cannot leave the arms;
        # constraints: their values are per candidate, so the treatments stay on the grid
        run.update(refine_oracle=oracle, bounds=(np.asarray(space.low), np.asarray(space.high)))
        if space.kinds is not None:  # discrete / categorical dimensions stay on their observed values
            run["frozen_dims"] = space.fixed_dims.tolist()
    if cfg.get("distributed", False):  # rank 0 of a distributed job: solved with every rank (experiment/followers.py)
        return sharded_discretize(profit, k, **options, **run)
    # the node's entry point (discretize, or yours: discretizer._target_) as a partial of its options
    solve = instantiate({"_target_": d.get("_target_") or class_path(discretize), "_partial_": True, **options},
                        _convert_="all")
    return solve(profit, k, **run)


def ot_policy(profit: np.ndarray, candidates: np.ndarray, k: int, cfg: DictConfig, oracle, space,
              device: torch.device, seed: int, init: Optional[list] = None,
              constraints: Optional[list] = None, spec: Optional[dict] = None) -> tuple[Policy, dict]:
    """The OT discretizer's policy at K; ``init`` (K grid indices, e.g. ``warm_start``) seeds restart 0.

    With ``constraints`` (a list of ``Constraint``) the policy's info records each one (value, bounds,
    dual multiplier: the total estimated profit one more unit of the bound buys) under "constraints",
    and extra["discretization"] is the ``Discretization`` (ot_tree reuses it)."""
    res = _discretize(profit, candidates, k, cfg, oracle, space, device, seed, init, constraints)
    info = {"solver": res.solver, "epsilon": res.epsilon, "estimated_objective": res.objective,
            "entropic_objective": res.entropic_objective, "n_trace": len(res.trace)}
    if constraints:
        info["constraints"] = {"spec": spec or {}, "rows": res.info.get("constraints", [])}
    return Policy("ot", res.treatments, res.assignment, info), {"trace": res.trace,
                                                                 "grid_index": res.info.get("grid_index"),
                                                                 "discretization": res}


def unconstrained_ot(k: int, ctx: "MethodContext") -> Policy:
    """The OT policy at K without the side constraints and without refinement (the constrained one is on
    the grid too): the reference of the price of the constraints."""
    prev = ctx.cache.get("free_previous")
    init = warm_start(ctx.profit, prev, k) if ctx.cfg.discretizer.solver != "exact" else None
    res = _discretize(ctx.profit, ctx.candidates, k, ctx.cfg, None, ctx.scored.space, ctx.device, ctx.seed, init, None)
    ctx.cache["free_previous"] = res.info.get("grid_index")
    return Policy("ot_unconstrained", res.treatments, res.assignment, {"estimated_objective": res.objective})


def _ot_tree(k: int, ctx: "MethodContext") -> Policy:
    """ot_tree at K on the OT solution of this K (run first when ``ot`` is not among the methods): its
    grid treatments before any refinement, with the assignment under shares and constraints."""
    res = method_policy("ot", k, ctx)[1]["discretization"]  # cached when ot ran at this K
    cols = np.asarray(res.info["grid_index"], dtype=np.int64)
    if np.any(np.asarray(res.candidate_index) < 0):  # refined off the grid: back to its grid solution
        d = ctx.cfg.discretizer
        L, H = share_counts(len(ctx.scored), k, d.min_share, d.max_share)
        a, _, _ = assign_constrained(profit_columns(ctx.profit, cols), L, H, None, cols)
        res = _GridSolution(ctx.candidates[cols], a, cols, res.info)
    pol = ot_tree(ctx.scored.X, ctx.profit, ctx.candidates, k, seed=ctx.seed, discretization=res,
                  feature_names=getattr(ctx.scored, "feature_names", None))
    if ctx.constraints:
        # the tree's leaves are not priced: record what the constraints come to under its assignment
        cand_idx = np.asarray(pol.info["candidate_index"], dtype=np.int64)[pol.assignment]
        rows = []
        for c in ctx.constraints:
            v = float(np.dot(np.asarray(c.weights), np.asarray(c.values)[cand_idx]))
            ok = (c.lo is None or v >= c.lo - 1e-9 * abs(c.lo)) and (c.hi is None or v <= c.hi + 1e-9 * abs(c.hi))
            rows.append({"name": c.name, "value": v, "lo": c.lo, "hi": c.hi, "satisfied": bool(ok)})
        pol.info["constraints"] = {"spec": ctx.cache["constraint_spec"], "rows": rows, "enforced": False}
    return pol


@dataclass
class _GridSolution:
    """The fields of a ``Discretization`` that ot_tree reads."""

    treatments: np.ndarray
    assignment: np.ndarray
    candidate_index: np.ndarray
    info: dict


def _baseline_input(ctx: MethodContext, key: str):
    """What the baselines compute once per run whatever K, kept in ``ctx.cache``: "profit_view" (the
    profit, dense or factored, checked once, with its row argmax and column means), "features" (the
    standardized covariates), "profiles" (the standardized, projected profit vectors)."""
    if key not in ctx.cache:
        make = {"profit_view": lambda: ProfitView(ctx.profit),
                "features": lambda: feature_embedding(ctx.scored.X),
                "profiles": lambda: profile_embedding(_baseline_input(ctx, "profit_view"), seed=ctx.seed)}[key]
        ctx.cache[key] = make()
    return ctx.cache[key]


def _single_best(k: int, ctx: MethodContext):
    return (single_best(_baseline_input(ctx, "profit_view"), ctx.candidates), {}) if k == 1 else None


def _grid(k: int, ctx: MethodContext):
    if k > ctx.arms.shape[0]:
        log.warning("grid: K=%d exceeds the %d experimental arms; skipped", k, ctx.arms.shape[0])
        return None
    return grid_search(ctx.estimates.mu_arms, ctx.arms, k, seed=ctx.seed), {}


def _ot(k: int, ctx: MethodContext):
    if ("ot", k) in ctx.cache:  # ot_tree ran it first at this K
        return ctx.cache[("ot", k)]
    init = warm_start(ctx.profit, ctx.ot_previous, k) if ctx.cfg.discretizer.solver != "exact" else None
    if ctx.constraints is None:  # once per run: they do not depend on K
        ctx.constraints = constraints_from_config(ctx.cfg.discretizer, ctx.scored, ctx.candidates)
        ctx.cache["constraint_spec"] = constraint_spec(ctx.cfg.discretizer, ctx.scored, ctx.constraints)
    policy, extra = ot_policy(ctx.profit, ctx.candidates, k, ctx.cfg, ctx.estimates.oracle, ctx.scored.space,
                              ctx.device, ctx.seed, init, ctx.constraints, ctx.cache["constraint_spec"])
    ctx.ot_previous = extra.get("grid_index")
    if ctx.constraints:
        extra["unconstrained"] = unconstrained_ot(k, ctx)
    ctx.cache[("ot", k)] = (policy, extra)
    return policy, extra


def _kmeans_features(k: int, ctx: MethodContext):
    return kmeans_features(ctx.scored.X, _baseline_input(ctx, "profit_view"), ctx.candidates, k, seed=ctx.seed,
                           embedding=_baseline_input(ctx, "features")), {}


def _kmeans_preferences(k: int, ctx: MethodContext):
    return kmeans_preferences(_baseline_input(ctx, "profit_view"), ctx.candidates, k, seed=ctx.seed,
                              scale=ctx.scored.space.span), {}


def _kmeans_profiles(k: int, ctx: MethodContext):
    return kmeans_profiles(_baseline_input(ctx, "profit_view"), ctx.candidates, k, seed=ctx.seed,
                           embedding=_baseline_input(ctx, "profiles")), {}


def _policy_tree(k: int, ctx: MethodContext):
    return policy_tree(ctx.scored.X, _baseline_input(ctx, "profit_view"), ctx.candidates, k, seed=ctx.seed,
                       feature_names=getattr(ctx.scored, "feature_names", None)), {}


#: ``evaluation.methods`` name -> its step at one K: ``fn(k, ctx) -> (Policy, extra dict)``, or None where
#: the method does not apply at this K. ``register_method`` adds one (the config check then knows it).
POLICY_METHODS: dict[str, Callable[[int, MethodContext], Optional[tuple[Policy, dict]]]] = {
    "ot": _ot, "ot_tree": lambda k, ctx: (_ot_tree(k, ctx), {}), "kmeans_features": _kmeans_features,
    "kmeans_preferences": _kmeans_preferences, "kmeans_profiles": _kmeans_profiles, "policy_tree": _policy_tree,
    "grid": _grid, "single_best": _single_best}


def register_method(name: str, fn: Callable[[int, MethodContext], Optional[tuple[Policy, dict]]], *,
                    replace: bool = False) -> Callable:
    """Make ``name`` an ``evaluation.methods`` entry of the main job (and of ``CoarsePersonalizer.run``):
    ``fn(k, ctx)`` returns its Policy at K and an extra dict (or None where it does not apply at K), from
    ``ctx`` (MethodContext: the scored customers, their estimated profit (N, M) at the candidates (M, d),
    the arms, the config, the seed). Its policies are scored, reported and, when the Policy comes from a
    baseline estimator with a ``saved_rule``, saved like the built-ins'. Returns ``fn``."""
    if not name or not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"a method name must be an identifier, got {name!r}")
    if name in POLICY_METHODS and not replace:
        raise ValueError(f"method {name!r} is registered already; pass replace=True to replace it")
    POLICY_METHODS[name] = fn
    if name not in METHODS:
        METHODS.append(name)  # the torch-free config check's list (validate.METHODS)
    return fn


def method_policy(method: str, k: int, ctx: MethodContext) -> Optional[tuple[Policy, dict]]:
    """(policy, extra) of ``method`` at K, or None where the method does not apply at this K."""
    step = POLICY_METHODS.get(method)
    if step is None:
        raise ValueError(f"unknown method {method!r}; available: {list(POLICY_METHODS)}")
    return step(k, ctx)


def _shift(a: np.ndarray, b: np.ndarray, span: np.ndarray) -> float:
    """Mean over the rows of a (K, d) of the distance to the nearest row of b, in units of ``span``."""
    d = np.abs((a[:, None, :] - b[None, :, :]) / span).max(-1)
    return float(d.min(1).mean())


def ensemble_spread(model, ctx: MethodContext, policy: Policy, k: int) -> Optional[dict]:
    """How the fold models of a cross-fitted ensemble disagree about ``policy`` (module docstring).

    assignment_changed_share : mean over fold models of the share of scored customers whose best of the
        K treatments under that fold model's estimates is not their segment (above ``SPREAD_ALL_ROWS``
        customers: of a uniform sample of that many).
    treatment_shift : mean over fold models of the mean distance from each of the K treatments to the
        nearest treatment the discretizer picks on that fold model's estimates (``SPREAD_ROWS``
        customers), in units of the treatment space's span per dimension (max over dimensions).
    None for a single model and for the dose-response models.
    """
    if ctx.fold_arms is None:  # once per run: every fold model's per-arm estimates of the customers
        n = len(ctx.scored)
        # above SPREAD_ALL_ROWS customers a uniform sample of them stands in (see the constant)
        ctx.cache["spread_rows"] = None if n <= SPREAD_ALL_ROWS else \
            np.sort(np.random.default_rng(ctx.seed + 1).choice(n, SPREAD_ALL_ROWS, replace=False))
        X_rows = ctx.scored.X if ctx.cache["spread_rows"] is None else ctx.scored.X[ctx.cache["spread_rows"]]
        ctx.fold_arms = [predict(X_rows) for predict in fold_predictors(model)]
    if len(ctx.fold_arms) < 2 or ctx.estimates.weights is None:
        return None
    rows = ctx.cache.get("spread_rows")
    assignment = policy.assignment if rows is None else policy.assignment[rows]
    n_rows = assignment.shape[0]
    W_k, W_c = ctx.estimates.weights(policy.treatments), ctx.estimates.weights(ctx.candidates)
    rng = np.random.default_rng(ctx.seed)
    sub = np.sort(rng.choice(n_rows, SPREAD_ROWS, replace=False)) if n_rows > SPREAD_ROWS else np.arange(n_rows)
    span = np.where(ctx.scored.space.span > 0, ctx.scored.space.span, 1.0)
    changed, shifts = [], []
    for V in ctx.fold_arms:
        own = (V @ W_k.T).argmax(1)
        changed.append(float(np.mean(own != assignment)))
        res = discretize(V[sub] @ W_c.T, k, candidates=ctx.candidates, solver="lloyd", seed=ctx.seed,
                         device=str(ctx.device))
        shifts.append(_shift(np.asarray(policy.treatments, dtype=np.float64), res.treatments, span))
    return {"n_fold_models": len(ctx.fold_arms), "assignment_changed_share": float(np.mean(changed)),
            "treatment_shift": float(np.mean(shifts)), "assignment_changed_share_per_fold": changed,
            "treatment_shift_per_fold": shifts}
