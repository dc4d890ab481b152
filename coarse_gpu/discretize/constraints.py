"""Linear side constraints on the assignment, and the exact assignment of customers under them.

A ``Constraint(weights, values, lo, hi)`` bounds  sum_i weights[i] * values[c(i)]  to [lo, hi], where
c(i) is the candidate customer i is assigned to; weights (N,), values (M,) over the candidates. This
one form covers a budget (weights = 1/N, values = the cost of each candidate, hi = the budget per
customer), group parity (weights = +1/|g| on group g and -1/|h| on group h, values = the treatment
level, lo = -delta, hi = delta) and a minimum generosity per group (weights = 1/|g| on g, lo = the floor).

Experimental support (``Support``): segment k must hold at least n customers of the group that
supports its treatment. With the treatments fixed these are K more rows of the same form
(weights s_ik in {0, 1}, values e_k, lo = n), so the LP, the rounding and the certificates above
cover them unchanged; their multipliers follow the side constraints' in ``Prices.lam``.

The exact assignment under these rows (``assign_constrained``) is ``constrained.py``; the search's
profits priced by the multipliers (``PricedSource``) are ``priced.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from scipy.optimize import linprog

_FEAS_RTOL = 1e-9  # constraint values within this fraction of sum_i |w_i| max |v| of a bound count as on it


@dataclass
class Constraint:
    """sum_i weights[i] * values[c(i)] in [lo, hi]  (see the module docstring).

    weights : (N,) per-customer weights. values : (M,) one value per candidate treatment.
    lo, hi : bounds (None: unbounded on that side; at least one is required).
    name : used in error messages and reports (default "constraint <index>").
    """

    weights: Any
    values: Any
    lo: Optional[float] = None
    hi: Optional[float] = None
    name: Optional[str] = None


@dataclass
class Support:
    """Experimental support per segment: the segment served treatment m must hold at least ``n``
    customers i with ``customer_group[i] == candidate_group[m]``.

    With customer_group = the experimental arm each customer received and candidate_group = the arm
    nearest each candidate, every segment then holds >= n customers randomized to (near) its own
    treatment, so its doubly robust value is estimable from them. customer_group : (N,) int (-1: supports
    no candidate). candidate_group : (M,) int. n : int >= 1 (for a sample of the customers, the
    proportional count is required).
    """

    customer_group: Any
    candidate_group: Any
    n: float

    def matrix(self, cols) -> np.ndarray:
        """(N, K) 0/1: customer i supports the treatment in slot k (candidate cols[k])."""
        c = np.asarray(self.candidate_group)[np.asarray(cols, dtype=np.int64)]
        g = np.asarray(self.customer_group)
        return ((g[:, None] == c[None, :]) & (g[:, None] >= 0)).astype(np.float64)

    def counts(self) -> np.ndarray:
        """(M,) number of customers supporting each candidate."""
        g = np.asarray(self.customer_group)
        per_group = np.bincount(g[g >= 0], minlength=int(max(np.max(self.candidate_group), g.max(initial=-1))) + 1)
        return per_group[np.asarray(self.candidate_group)]

    def rows(self, idx: np.ndarray) -> "Support":
        """The requirement on the customers idx: n scaled by len(idx) / N."""
        N = len(self.customer_group)
        return Support(np.asarray(self.customer_group)[idx], self.candidate_group, self.n * len(idx) / max(1, N))

    def segment_counts(self, a: np.ndarray, cols) -> np.ndarray:
        """(K,) supporting customers in each segment of the assignment a (N,)."""
        S = self.matrix(cols)
        return np.bincount(a, weights=S[np.arange(S.shape[0]), a], minlength=S.shape[1])


def check_support(support, n: int, m: int, k: int, H: int) -> Optional[Support]:
    """Validate a ``Support`` for N customers, M candidates, K treatments, at most H customers per
    treatment; ValueError naming the problem (before any work). None passes through."""
    if support is None:
        return None
    if not isinstance(support, Support):
        raise ValueError(f"support must be a Support(customer_group, candidate_group, n), got {type(support).__name__}")
    g = np.asarray(support.customer_group)
    c = np.asarray(support.candidate_group)
    for name, a, size in (("customer_group", g, n), ("candidate_group", c, m)):
        if a.ndim != 1 or a.shape[0] != size or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"support: {name} must be an integer array of shape ({size},), got {a.dtype} {a.shape}")
    if np.any(c < 0):
        raise ValueError("support: candidate_group must be >= 0 (the group whose customers support a candidate)")
    if isinstance(support.n, bool) or not float(support.n) >= 1 or int(support.n) != support.n:
        raise ValueError(f"support: n must be a positive integer, got {support.n!r}")
    sup = Support(g.astype(np.int64), c.astype(np.int64), int(support.n))
    able = np.minimum(sup.counts(), H) >= sup.n
    if int(able.sum()) < k:
        raise ValueError(f"support: only {int(able.sum())} candidates have at least n={sup.n} supporting customers "
                         f"(within the largest segment, {H}); k={k} treatments need {k}")
    return sup


@dataclass
class Prices:
    """Dual prices of a constrained assignment: g (K,) per treatment, lam (C,) per side constraint."""

    g: np.ndarray
    lam: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: upper bound on how much the hard assignment is below the best one for these treatments (LP bound
    #: minus its value); 0 when certified optimal (module docstring, step 3)
    rounding_gap: float = 0.0
    #: the LP optimum (total profit) for these treatments: what the search compares sets by
    lp_value: Optional[float] = None


class SideConstraints:
    """Validated side constraints: W (N, C) weights, V (M, C) values, lo / hi (C,) (+-inf: none)."""

    def __init__(self, W: np.ndarray, V: np.ndarray, lo: np.ndarray, hi: np.ndarray, names: list[str]) -> None:
        self.W, self.V, self.lo, self.hi, self.names = W, V, lo, hi, names
        self.scale = np.abs(W).sum(0) * np.abs(V).max(0) + 1e-300  # (C,) largest possible |value|
        # multiplier that makes the constraint outweigh every customer's profit differences (phase 1)
        vr = V.max(0) - V.min(0)
        self.vrange = np.where(vr > 0, vr, 1.0)

    @property
    def n_constraints(self) -> int:
        return int(self.W.shape[1])

    @property
    def tol(self) -> np.ndarray:
        return _FEAS_RTOL * self.scale

    def at(self, cols) -> np.ndarray:
        """(C, K) values of the K chosen candidates."""
        return self.V[np.asarray(cols, dtype=np.int64)].T

    def values(self, a: np.ndarray, cols) -> np.ndarray:
        """(C,) constraint values of the assignment a (N,) to the columns cols (K,)."""
        vk = self.V[np.asarray(cols, dtype=np.int64)[a]]  # (N, C)
        return np.einsum("nc,nc->c", self.W, vk)

    def satisfied(self, vals: np.ndarray) -> np.ndarray:
        return (vals >= self.lo - self.tol) & (vals <= self.hi + self.tol)

    def rows(self, idx: np.ndarray) -> "SideConstraints":
        """The constraints on the customers idx, weights scaled by N / len(idx) (a sample's estimate)."""
        f = self.W.shape[0] / max(1, len(idx))
        return SideConstraints(self.W[idx] * f, self.V, self.lo, self.hi, self.names)

    def report(self, vals: np.ndarray, lam: np.ndarray) -> list[dict]:
        """info["constraints"]: per constraint its value, bounds, dual multiplier and which bound binds."""
        out = []
        for c, name in enumerate(self.names):
            lo = None if not np.isfinite(self.lo[c]) else float(self.lo[c])
            hi = None if not np.isfinite(self.hi[c]) else float(self.hi[c])
            lam_c = float(lam[c]) if c < len(lam) else 0.0
            binding = "hi" if lam_c > 0 else ("lo" if lam_c < 0 else None)
            out.append({"name": name, "value": float(vals[c]), "lo": lo, "hi": hi, "dual": lam_c,
                        "binding": binding, "satisfied": bool(self.satisfied(vals)[c])})
        return out


# ----------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------
def _vector(x, n: int, what: str, label: str, per: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x
    try:
        a = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{label}: {what} must be numeric, got {type(x).__name__}") from err
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{label}: {what} must have shape ({n},) (one per {per}), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{label}: {what} contains NaN or inf")
    return a


def check_constraints(constraints, n: int, m: int, k: int) -> Optional[SideConstraints]:
    """Validate ``constraints`` (a Constraint or a list of them) for N customers, M candidates, K treatments.

    Raises ValueError naming the constraint: bad shapes, non-finite entries, missing or crossed bounds,
    bounds that no assignment of the customers to the candidates can meet (each constraint alone, and
    all together when the customers fall into few weight classes). Returns None for no constraints.
    """
    if constraints is None:
        return None
    if isinstance(constraints, Constraint):
        constraints = [constraints]
    try:
        constraints = list(constraints)
    except TypeError as err:
        raise ValueError(f"constraints must be a Constraint or a list of them, got "
                         f"{type(constraints).__name__}") from err
    if not constraints:
        return None
    W, V, lo, hi, names = [], [], [], [], []
    for j, c in enumerate(constraints):
        if not isinstance(c, Constraint):
            raise ValueError(f"constraints[{j}] must be a Constraint(weights, values, lo, hi), got {type(c).__name__}")
        name = str(c.name) if c.name is not None else f"constraint {j}"
        label = f"constraints[{j}] ({name!r})"
        if name in names:
            raise ValueError(f"{label}: the name {name!r} is used twice")
        W.append(_vector(c.weights, n, "weights", label, "customer"))
        V.append(_vector(c.values, m, "values", label, "candidate"))
        b = []
        for side, val in (("lo", c.lo), ("hi", c.hi)):
            if val is None:
                b.append(-math.inf if side == "lo" else math.inf)
                continue
            try:
                f = float(val)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{label}: {side} must be a number or None, got {val!r}") from err
            if math.isnan(f) or math.isinf(f):
                raise ValueError(f"{label}: {side} must be finite or None, got {val!r}")
            b.append(f)
        if not (np.isfinite(b[0]) or np.isfinite(b[1])):
            raise ValueError(f"{label}: give lo, hi or both")
        if b[0] > b[1]:
            raise ValueError(f"{label}: lo={b[0]} exceeds hi={b[1]}")
        lo.append(b[0])
        hi.append(b[1])
        names.append(name)
    out = SideConstraints(np.stack(W, 1), np.stack(V, 1), np.asarray(lo), np.asarray(hi), names)
    _check_ranges(out, k)
    _check_jointly(out)
    return out


def _check_ranges(side: SideConstraints, k: int) -> None:
    """Each constraint alone: some assignment to the candidates (K >= 2) or one candidate (K = 1) meets it."""
    for c, name in enumerate(side.names):
        w, v, lo, hi, tol = side.W[:, c], side.V[:, c], side.lo[c], side.hi[c], side.tol[c]
        if k == 1:  # everybody gets the same candidate: value (sum_i w_i) v_m
            vals = w.sum() * v
            if not np.any((vals >= lo - tol) & (vals <= hi + tol)):
                raise ValueError(f"constraint {name!r} is infeasible with k=1: the values of single treatments "
                                 f"span [{vals.min():.6g}, {vals.max():.6g}], outside [{lo:.6g}, {hi:.6g}]")
            continue
        low = float(np.minimum(w * v.min(), w * v.max()).sum())
        high = float(np.maximum(w * v.min(), w * v.max()).sum())
        if low > hi + tol or high < lo - tol:
            raise ValueError(f"constraint {name!r} is infeasible: its value over all assignments spans "
                             f"[{low:.6g}, {high:.6g}], which misses [lo={lo:.6g}, hi={hi:.6g}]")


def _check_jointly(side: SideConstraints, max_classes: int = 2000) -> None:
    """All constraints together (no K, no shares): an LP over classes of customers with equal weight rows."""
    if side.n_constraints < 2:
        return
    classes, inv = np.unique(side.W, axis=0, return_inverse=True)
    if classes.shape[0] > max_classes:
        return  # continuous weights: the per-constraint checks are all we can afford before the search
    size = np.bincount(inv.reshape(-1), minlength=classes.shape[0]).astype(np.float64)
    Q, M, C = classes.shape[0], side.V.shape[0], side.n_constraints
    # z_qm >= 0 customers of class q on candidate m; sum_m z_qm = |q|; lo <= sum_qm w_qc v_mc z_qm <= hi
    A_eq = np.kron(np.eye(Q), np.ones((1, M)))
    coef = np.einsum("qc,mc->cqm", classes, side.V).reshape(C, Q * M)
    fin_hi, fin_lo = np.isfinite(side.hi), np.isfinite(side.lo)
    A_ub = np.concatenate([coef[fin_hi], -coef[fin_lo]])
    b_ub = np.concatenate([side.hi[fin_hi] + side.tol[fin_hi], -side.lo[fin_lo] + side.tol[fin_lo]])
    res = linprog(np.zeros(Q * M), A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=size, bounds=(0, None), method="highs")
    if res.status == 2:
        raise ValueError("constraints " + ", ".join(repr(n) for n in side.names) + " are jointly infeasible: no "
                         "assignment of the customers to the candidates satisfies them all")
