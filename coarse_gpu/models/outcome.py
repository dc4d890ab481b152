"""The structured outcome of a declared profit structure: per customer [profit, response, value].

``stack_outcome`` packs the behaviour beside the realized profit into one (N, 3) array, so that the
cross-fitting (coarse_gpu.models.crossfit) can hand a two-part member its rows of all three through
the plain ``fit(X, t, y)`` of every learner; ``unstack_outcome`` checks and unpacks them. Here, below
both crossfit.py and twopart.py (which imports the learners that import crossfit.py), so no module
imports another in a circle.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["stack_outcome", "unstack_outcome"]


def stack_outcome(y, response, value) -> np.ndarray:
    """(N, 3) structured outcome [profit, response, value] (NaN value where there is no response)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    r = np.asarray(response, dtype=np.float64).reshape(-1)
    v = np.asarray(value, dtype=np.float64).reshape(-1)
    if not (y.shape[0] == r.shape[0] == v.shape[0]):
        raise ValueError(f"response ({r.shape[0]} rows) and value ({v.shape[0]} rows) must have y's {y.shape[0]} rows")
    return np.column_stack([y, r, np.where(r > 0, v, np.nan)])


def unstack_outcome(y, response=None, value=None, n: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """(response (N,), value (N,)) from the keyword arguments or an (N, 3) structured ``y``, validated:
    response finite and >= 0, value finite and > 0 where response > 0 (errors name the first bad row)."""
    if response is None:
        a = np.asarray(y, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != 3:
            raise ValueError("a two-part model needs the behaviour: fit(X, t, y, response=..., value=...) or y as "
                             "the (N, 3) array [profit, response, value] (coarse_gpu.models.twopart.stack_outcome)")
        r, v = a[:, 1], a[:, 2]
    else:
        if value is None:
            raise ValueError("response is given but value is not: pass both (value per response, NaN where none)")
        r = np.asarray(response, dtype=np.float64).reshape(-1)
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    if n is not None and (r.shape[0] != n or v.shape[0] != n):
        raise ValueError(f"response ({r.shape[0]} rows) and value ({v.shape[0]} rows) must have X's {n} rows")
    bad = np.flatnonzero(~np.isfinite(r) | (r < 0))
    if bad.size:
        raise ValueError(f"response must be finite and >= 0; row {int(bad[0])} has {r[bad[0]]}")
    bad = np.flatnonzero((r > 0) & ~(np.isfinite(v) & (v > 0)))
    if bad.size:
        raise ValueError(f"value must be a positive number where response > 0; row {int(bad[0])} has {v[bad[0]]}")
    return r, v
