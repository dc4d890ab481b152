"""The side constraints a firm states most, built from arrays: a budget and parity between customer groups.

Both are ``Constraint`` rows (constraints.py) over N customers and M candidate treatments (M, d):

* budget B: weights 1/N, values = the cost per customer of each candidate, hi = B, so the mean cost per
  customer of the assigned treatments is at most B. ``treatment_costs`` gives linear costs
  sum_j unit_cost_j t_j (currency units per customer).
* group parity (groups (N,), values (M,), max_gap): for every pair of groups g < h (sorted by their labels
  as strings), weights +1/|g| on g and -1/|h| on h, in [-max_gap, max_gap]; together the pairwise bands
  say max_g mean_g - min_g mean_g <= max_gap, mean_g = group g's mean value of its assigned treatments.

The main job builds them from ``discretizer.budget`` / ``discretizer.group_parity``
(coarse_gpu.experiment.methods.constraints_from_config reads the config and calls these); a Python caller
passes them to ``discretize(constraints=...)`` or ``CoarsePersonalizer(constraints=lambda cand: ...)``.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import numpy as np

from coarse_gpu.discretize.constraints import Constraint

__all__ = ["budget_constraint", "group_codes", "parity_constraints", "treatment_costs"]


def _number(x, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not math.isfinite(float(x)):
        raise ValueError(f"{what} must be a finite number, got {x!r}")
    return float(x)


def treatment_costs(candidates, unit_cost) -> np.ndarray:
    """(M,) cost per customer of each candidate treatment: candidates (M, d) @ unit_cost (d,).

    unit_cost : the cost of one unit of each treatment dimension (currency units per customer)."""
    cand = np.asarray(candidates, dtype=np.float64)
    unit = np.asarray(list(unit_cost), dtype=np.float64)
    if cand.ndim != 2:
        raise ValueError(f"candidates must be (M, d) treatments, got shape {cand.shape}")
    if unit.shape != (cand.shape[1],):
        raise ValueError(f"unit_cost must hold one cost per treatment dimension ({cand.shape[1]}), "
                         f"got {unit.tolist()}")
    if not np.all(np.isfinite(unit)):
        raise ValueError(f"unit_cost must be finite, got {unit.tolist()}")
    return cand @ unit


def budget_constraint(costs, budget: float, n: int, name: str = "budget") -> Constraint:
    """Mean cost per customer of the assigned treatments <= ``budget``, over ``n`` customers.

    costs : (M,) cost per customer of each candidate (e.g. ``treatment_costs``)."""
    values = np.asarray(costs, dtype=np.float64)
    if values.ndim != 1 or not np.all(np.isfinite(values)):
        raise ValueError(f"costs must be a finite (M,) vector, one cost per candidate, got shape {values.shape}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be the number of customers, an integer >= 1, got {n!r}")
    return Constraint(np.full(int(n), 1.0 / n), values, hi=_number(budget, "budget"), name=name)


def group_codes(groups) -> tuple[np.ndarray, list[str]]:
    """(codes (N,) int64, levels): each customer's group as an index into the sorted group labels
    (compared as strings, so 1 and "1" are one group)."""
    vals = np.asarray(groups).astype(str)
    if vals.ndim != 1:
        raise ValueError(f"groups must be one label per customer (N,), got shape {vals.shape}")
    levels = sorted(set(vals.tolist()))
    return np.searchsorted(np.asarray(levels, dtype=object), vals).astype(np.int64), levels


def parity_constraints(groups, values, max_gap: float, *, group_name: str = "group",
                       value_name: Optional[str] = None) -> list[Constraint]:
    """The pairwise bands that keep every group's mean treatment value within ``max_gap`` of every other's.

    groups : (N,) each customer's group label. values : (M,) the value of each candidate the parity is
    about (e.g. one treatment dimension, candidates[:, j]). One constraint per pair of groups g < h,
    named "parity <group_name>=<g> vs <h> (<value_name>)"; [] for a single group."""
    codes, levels = group_codes(groups)
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim != 1 or not np.all(np.isfinite(vals)):
        raise ValueError(f"values must be a finite (M,) vector, one per candidate, got shape {vals.shape}")
    gap = _number(max_gap, "max_gap")
    if gap < 0:
        raise ValueError(f"max_gap must be >= 0, got {max_gap!r}")
    size = np.bincount(codes, minlength=len(levels)).astype(np.float64)
    label = "" if value_name is None else f" ({value_name})"
    out = []
    for g in range(len(levels)):
        for h in range(g + 1, len(levels)):
            w = np.where(codes == g, 1.0 / size[g], 0.0) - np.where(codes == h, 1.0 / size[h], 0.0)
            name = f"parity {group_name}={levels[g]} vs {levels[h]}{label}"
            out.append(Constraint(w, vals, lo=-gap, hi=gap, name=name))
    return out
