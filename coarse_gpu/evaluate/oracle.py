"""Oracle evaluation on simulated data: the TRUE expected profit of policies, control and full personalization.

``truth`` is any object with ``profit(treatments (M, d), rows=None) -> (N, M)`` giving the true
expected profit pi_i(t) (currency units per customer), e.g. the simulator's ``PromotionsTruth``.
All values are means per customer over the customers ``truth`` describes.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np

from coarse_gpu.data.treatments import TreatmentSpace, product_grid
from coarse_gpu.discretize import discretize
from coarse_gpu.policy.policy import Policy
from coarse_gpu.utils.device import usable_cpus

__all__ = [
    "oracle_best_treatments",
    "oracle_ceiling",
    "oracle_control_value",
    "oracle_customer_profit",
    "oracle_full_personalization",
    "oracle_value",
    "share_of_full",
]

# Elements per (rows x treatments) block handed to truth.profit: 500k float64 = 4 MB per array, so
# a profit formula's temporaries stay near the CPU caches (1.6x faster than 32 MB blocks on the
# simulator's full personalization, measured on 50,000 customers x 8,181 points) and small on any N.
_BLOCK_ELEMENTS = 500_000
#: Threads of the row-chunked oracle evaluations (``_argmax_on``).
_THREADS = usable_cpus(8)


def _check_truth(truth) -> None:
    if truth is None or not callable(getattr(truth, "profit", None)):
        raise ValueError(
            "truth must provide profit(treatments, rows=None) -> (N, M) true expected profits "
            f"(simulated data only), got {type(truth).__name__}"
        )


def _n_customers(truth, d: int) -> int:
    try:
        return int(len(truth))
    except TypeError:
        return int(np.asarray(truth.profit(np.zeros((1, d)))).shape[0])


def oracle_customer_profit(truth, policy: Policy) -> np.ndarray:
    """(N,) true expected profit of each customer at the treatment the policy assigns to it.

    Evaluates ``truth.profit(policy.treatments)`` (N, K) and gathers column ``assignment[i]``.
    """
    _check_truth(truth)
    if not isinstance(policy, Policy):
        raise ValueError(f"policy must be a coarse_gpu.policy.Policy, got {type(policy).__name__}")
    prof = np.asarray(truth.profit(policy.treatments), dtype=np.float64)
    if prof.shape != (policy.n, policy.k):
        raise ValueError(
            f"policy assigns {policy.n} customers but truth.profit gave shape {prof.shape} for its "
            f"{policy.k} treatments; the policy and the truth must describe the same customers"
        )
    return prof[np.arange(policy.n), policy.assignment]


def oracle_value(truth, policy: Policy) -> float:
    """Mean TRUE expected profit per customer under ``policy`` (currency units per customer)."""
    return float(oracle_customer_profit(truth, policy).mean())


def oracle_control_value(truth, space: TreatmentSpace) -> float:
    """Mean TRUE expected profit per customer when everyone gets ``space.control`` (V_0)."""
    _check_truth(truth)
    if not isinstance(space, TreatmentSpace):
        raise ValueError(f"space must be a TreatmentSpace, got {type(space).__name__}")
    return float(np.asarray(truth.profit(np.asarray(space.control, dtype=np.float64)[None, :])).mean())


def _argmax_on(truth, treatments: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best of ``treatments`` (L, d) for each customer in ``rows``: (index (n,), profit (n,)), row-chunked.

    Above a few chunks they run on one thread per core: numpy's ufuncs release the GIL, every chunk
    writes its own rows, so the result is the sequential one (a 2-core machine takes ~half the time
    on the millions of customers x 8,181 points of the full personalization)."""
    chunk = max(1, _BLOCK_ELEMENTS // max(1, treatments.shape[0]))
    idx = np.empty(rows.size, dtype=np.int64)
    val = np.empty(rows.size)

    def one(s: int) -> None:
        p = np.asarray(truth.profit(treatments, rows[s: s + chunk]), dtype=np.float64)
        j = p.argmax(axis=1)
        idx[s: s + chunk] = j
        val[s: s + chunk] = p[np.arange(p.shape[0]), j]

    starts = range(0, rows.size, chunk)
    workers = min(_THREADS, len(starts))
    if workers <= 1 or len(starts) < 8:
        for s in starts:
            one(s)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(one, starts))
    return idx, val


def oracle_full_personalization(
    truth,
    space: TreatmentSpace,
    points: int | Sequence[int] = (101, 81),
    refine: bool = True,
    zoom: Optional[int] = None,
    levels: int = 2,
) -> tuple[float, np.ndarray]:
    """Full personalization over the CONTINUOUS treatment space: each customer's own best t.

    1. Grid search: the max of pi_i over ``space.grid(points)`` for every customer (row chunks so
       that no block exceeds ~4M profit evaluations, ~32 MB per temporary, whatever N is).
    2. Local refinement (``refine``), ``levels`` rounds of zooming: customers whose current best
       treatment is the same point share one local grid of ``zoom`` points per dimension spanning
       +-1 current grid step around it (clipped to the box), evaluated for that group in one call;
       each round shrinks the step by (zoom - 1) / 2. With the default zoom (21 for d <= 2) and 2
       levels the final resolution is the grid step / 100; for a smooth profit surface the
       remaining loss is O(curvature * (step / 200)^2), i.e. negligible. The current best point
       is always on the local grid, so refinement never lowers a customer's profit.

    Parameters
    ----------
    truth : ground truth with ``profit(treatments, rows=None)``.
    space : the treatment space (box) to optimize over.
    points : grid points per dimension for step 1 (an int = the same for every dimension).
    refine, zoom, levels : local refinement (zoom default: 21 for d <= 2, 9 for d = 3, 5 beyond).

    Returns
    -------
    (value, treatments): mean true profit per customer (float, currency units) and each customer's
    best treatment (N, d) float64. The value is an upper bound (up to the refinement tolerance) on
    the true value of any policy, coarse or not.
    """
    best_val, best_t = oracle_best_treatments(truth, space, points, refine, zoom, levels)
    return float(best_val.mean()), best_t


def oracle_best_treatments(truth, space: TreatmentSpace, points: int | Sequence[int] = (101, 81),
                           refine: bool = True, zoom: Optional[int] = None,
                           levels: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Each customer's own best treatment and its true profit: (profit (N,), treatments (N, d)), by
    ``oracle_full_personalization``'s search (its parameters). A customer's result depends on its own
    row only, so the mean over any subset of rows is that subset's full-personalization value."""
    _check_truth(truth)
    if not isinstance(space, TreatmentSpace):
        raise ValueError(f"space must be a TreatmentSpace, got {type(space).__name__}")
    d = space.dim
    pts = [int(points)] * d if np.isscalar(points) else [int(v) for v in points]
    if len(pts) != d or any(v < 2 for v in pts):
        raise ValueError(f"points must give >= 2 grid points for each of the {d} dimensions, got {points}")
    if zoom is None:
        zoom = 21 if d <= 2 else (9 if d == 3 else 5)
    if zoom < 3:
        raise ValueError(f"zoom must be >= 3 points per dimension, got {zoom}")
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")

    n = _n_customers(truth, d)
    grid = space.grid(pts)
    idx, best_val = _argmax_on(truth, grid, np.arange(n))
    best_t = grid[idx]
    if refine:
        low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
        step = space.span / (np.asarray(pts, dtype=np.float64) - 1.0)
        for _ in range(levels):
            centers, group = np.unique(best_t, axis=0, return_inverse=True)
            group = group.reshape(-1)
            order = np.argsort(group, kind="stable")
            bounds = np.searchsorted(group[order], np.arange(centers.shape[0] + 1))
            for gi, c in enumerate(centers):
                rows = order[bounds[gi]: bounds[gi + 1]]
                axes = [np.linspace(max(low[j], c[j] - step[j]), min(high[j], c[j] + step[j]), zoom) for j in range(d)]
                local = product_grid(axes)
                # make sure the current best point is a candidate (exact, no rounding in linspace)
                local = np.vstack([c[None, :], local])
                j, v = _argmax_on(truth, local, rows)
                better = v > best_val[rows]
                best_val[rows[better]] = v[better]
                best_t[rows[better]] = local[j[better]]
            step = step * 2.0 / (zoom - 1)
    return best_val, best_t


def share_of_full(value: float, control: float, full: float) -> float:
    """Share of full personalization's incremental profit: (value - control) / (full - control).

    value, control, full : mean profits per customer (same units). 1 = as good as full
    personalization, 0 = no better than the control treatment (negative = worse than control).
    Raises ValueError when full <= control (no incremental profit to share) or on non-finite input.
    """
    v, c, f = float(value), float(control), float(full)
    if not (np.isfinite(v) and np.isfinite(c) and np.isfinite(f)):
        raise ValueError(f"share_of_full needs finite values, got value={v}, control={c}, full={f}")
    if f <= c:
        raise ValueError(
            f"share_of_full: full personalization's profit ({f}) must exceed the control's ({c}); "
            "there is no incremental profit to take a share of"
        )
    return (v - c) / (f - c)


def oracle_ceiling(truth, space: TreatmentSpace, candidates: np.ndarray, k_values: Sequence[int],
                   control: float, full: float, *, profit: Optional[np.ndarray] = None, max_rows: int = 50_000,
                   seed: int = 0, device: str = "cpu") -> dict:
    """What K treatments can keep when the profits are KNOWN: the discretizer run on the TRUE profits.

    For every K the OT discretizer chooses K of the ``candidates`` (M, d) and the assignment from the
    true profits there; no model, no estimation error. Its share of full personalization's incremental
    profit separates what K costs from what the model costs. It stays on the candidate grid: refining off
    it with the true profits costs ~3x the whole computation and moved the default run's K = 5 ceiling
    by < 0.01 percentage points (98.871 % refined, 98.865 % on the 26 x 21 grid).

    ``profit`` : (N, M) true profits at the candidates when the caller has them (not recomputed).
    Above ``max_rows`` customers the ceiling is computed on a uniform sample of ``max_rows`` of them
    (with their own control and full-personalization values): a reference line whose sampling error
    is far below the gaps it is read against. Returns {"share_of_full": {K: share}, "value": {K: mean
    true profit per customer}, "n_customers": customers used}.
    """
    _check_truth(truth)
    n = _n_customers(truth, space.dim)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
        truth, profit = truth.subset(rows), None
        control = oracle_control_value(truth, space)
        full = oracle_full_personalization(truth, space)[0]
        n = max_rows
    cand = np.asarray(candidates, dtype=np.float64)
    profit = np.asarray(truth.profit(cand) if profit is None else profit, dtype=np.float64)
    shares, values = {}, {}
    for k in k_values:
        res = discretize(profit, int(k), candidates=cand, seed=seed, device=device)
        value = float(profit[np.arange(n), np.asarray(res.candidate_index)[res.assignment]].mean())
        values[str(int(k))] = value
        shares[str(int(k))] = share_of_full(value, control, full)
    return {"share_of_full": shares, "value": values, "n_customers": int(n)}
